//! Secrets at rest: no AccessKey secret, product secret or device secret is
//! in the store's files (the SQLite database, its WAL, the journal's
//! segments), in the PostgreSQL tables (a `pg_dump` of the database), or in
//! a `store copy` target; a store opens only with the key it was sealed
//! with; a store of a release that kept secrets in plaintext is sealed at
//! start-up and keeps none; a sealed secret moved to another row does not
//! open; the data directory is 0700 and its files 0600.
//!
//! The PostgreSQL cases run when `THINGCALL_TEST_POSTGRES` names a server
//! (mandatory with `THINGCALL_REQUIRE_POSTGRES=1`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use thingcall_core::Secret;
use thingcall_server::{
    CopyKeys, PostgresUrl, SecretsKeySource, Server, ServerConfig, ServerOptions, StoreConfig,
    SystemClock,
};

/// An AccessKey secret no generator makes, to look for.
const AK_SECRET: &str = "AkSecretAtRest7hq2Lw9ZpXc4Vb";

struct Running {
    http: String,
    mqtt: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

fn options(dir: &Path, store: StoreConfig, key: SecretsKeySource) -> ServerOptions {
    ServerOptions {
        config: ServerConfig::default(),
        gateway: Default::default(),
        data_dir: dir.to_owned(),
        store,
        secrets_key: key,
        access_key: Some((KEY_ID.to_owned(), Secret::new(AK_SECRET))),
        cluster: None,
    }
}

async fn serve(options: ServerOptions) -> Running {
    let server = Server::open(options, Arc::new(SystemClock)).await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mqtt = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (h, m) = (
        http.local_addr().unwrap().to_string(),
        mqtt.local_addr().unwrap().to_string(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(http, mqtt, async move {
        let _ = stopped.await;
    }));
    Running {
        http: h,
        mqtt: m,
        stop,
        task,
    }
}

async fn refused(options: ServerOptions) -> String {
    match Server::open(options, Arc::new(SystemClock)).await {
        Ok(_) => panic!("the server opened"),
        Err(e) => {
            eprintln!("refused: {}", e.message());
            e.message().to_owned()
        }
    }
}

/// Signed with the AccessKey the tests plant (`AK_SECRET`).
async fn ak_call(http: &str, action: &str, extra: &[(&str, &str)]) -> serde_json::Value {
    let mut params = common::common(action);
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let signature = thingcall_sign::v1::sign("GET", &params, AK_SECRET);
    params.push(("Signature".to_owned(), signature));
    let query =
        thingcall_wire::form::encode_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let (status, _, body) = raw(http, "GET", &format!("/?{query}"), &[], b"").await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200, "{action}: {body}");
    assert_eq!(body["Success"], true, "{action}: {body}");
    body
}

/// What one server run made: a product and a device, their secrets, a
/// device that logged in and a recorded call.
struct Made {
    pk: String,
    product_secret: String,
    dn: String,
    iot_id: String,
    device_secret: String,
}

/// A product with the demo model published; its key.
async fn ak_product(s: &Running, name: &str) -> String {
    let created = ak_call(
        &s.http,
        "CreateProduct",
        &[
            ("ProductName", name),
            ("NodeType", "0"),
            ("AliyunCommodityCode", "iothub_senior"),
            ("DataFormat", "1"),
        ],
    )
    .await;
    let pk = created["ProductKey"].as_str().unwrap().to_owned();
    ak_call(
        &s.http,
        "ImportThingModelTsl",
        &[("ProductKey", &pk), ("TslStr", MODEL)],
    )
    .await;
    ak_call(&s.http, "PublishThingModel", &[("ProductKey", &pk)]).await;
    pk
}

async fn make(s: &Running, name: &str) -> Made {
    let pk = ak_product(s, name).await;
    let product = ak_call(&s.http, "QueryProduct", &[("ProductKey", &pk)]).await;
    let product_secret = product["Data"]["ProductSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    let dn = format!("{name}-dev");
    let registered = ak_call(
        &s.http,
        "RegisterDevice",
        &[("ProductKey", &pk), ("DeviceName", &dn)],
    )
    .await;
    let iot_id = registered["Data"]["IotId"].as_str().unwrap().to_owned();
    let device_secret = registered["Data"]["DeviceSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    let made = Made {
        pk,
        product_secret,
        dn,
        iot_id,
        device_secret,
    };
    logs_in_and_answers(s, &made).await;
    made
}

/// The device logs in with its secret and answers an async call (a
/// journal entry on SQLite).
async fn logs_in_and_answers(s: &Running, m: &Made) {
    let stop = simulate(&s.mqtt, &m.pk, &m.dn, &m.device_secret).await;
    for _ in 0..200 {
        let body = ak_call(&s.http, "GetDeviceStatus", &[("IotId", &m.iot_id)]).await;
        if body["Data"]["Status"] == "ONLINE" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let body = ak_call(
        &s.http,
        "InvokeThingService",
        &[
            ("IotId", &m.iot_id),
            ("Identifier", "Reboot"),
            ("Args", r#"{"Delay":1}"#),
        ],
    )
    .await;
    assert!(body["Data"]["MessageId"].is_string(), "{body}");
    let _ = stop.send(());
}

/// Every file under `dir` (recursively) that contains one of `secrets`:
/// (file, which).
fn files_holding(dir: &Path, secrets: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            for (what, secret) in secrets {
                if contains(&bytes, secret.as_bytes()) {
                    found.push((path.clone(), (*what).to_owned()));
                }
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn secrets_of(m: &Made) -> Vec<(&'static str, String)> {
    vec![
        ("AccessKey secret", AK_SECRET.to_owned()),
        ("product secret", m.product_secret.clone()),
        ("device secret", m.device_secret.clone()),
    ]
}

fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(w, s)| (*w, s.as_str())).collect()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn other_key() -> SecretsKeySource {
    SecretsKeySource::Value(thingcall_server::new_secrets_key())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_holds_no_secret_and_opens_only_with_its_key() {
    // An existing directory open to everyone (the test's temp_dir is 0755).
    let dir = temp_dir("secrets-sqlite");
    let s = serve(options(
        &dir,
        StoreConfig::Sqlite,
        SecretsKeySource::DataDir,
    ))
    .await;
    let made = make(&s, "AtRest_1").await;
    let secrets = secrets_of(&made);
    // While the server runs: the database, its WAL and the journal.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "thingcall.db-wal"),
        "a WAL to look in: {names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("journal-")),
        "a journal segment to look in: {names:?}"
    );
    assert_eq!(files_holding(&dir, &as_refs(&secrets)), []);
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir), 0o700, "the data directory");
        for name in &names {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
    }
    s.stop().await;
    assert_eq!(files_holding(&dir, &as_refs(&secrets)), []);

    // Opened again with its key (made in the data directory on first
    // start): the device logs in with its secret.
    let s = serve(options(
        &dir,
        StoreConfig::Sqlite,
        SecretsKeySource::DataDir,
    ))
    .await;
    logs_in_and_answers(&s, &made).await;
    s.stop().await;

    // With another key: refused, naming both keys' ids, never a key.
    let other = other_key();
    let SecretsKeySource::Value(other_text) = &other else {
        unreachable!()
    };
    let e = refused(options(&dir, StoreConfig::Sqlite, other.clone())).await;
    assert!(e.contains("sealed with key"), "{e}");
    assert!(!e.contains(other_text.expose()), "{e}");
    let key_text = std::fs::read_to_string(dir.join("secrets.key")).unwrap();
    assert!(!e.contains(key_text.trim()), "{e}");

    // Without the key file: refused, and no new key is made.
    std::fs::rename(dir.join("secrets.key"), dir.join("moved.key")).unwrap();
    let e = refused(options(
        &dir,
        StoreConfig::Sqlite,
        SecretsKeySource::DataDir,
    ))
    .await;
    assert!(e.contains("has no key"), "{e}");
    assert!(!dir.join("secrets.key").exists(), "a key was made");
    // The key given as a file works as well.
    let s = serve(options(
        &dir,
        StoreConfig::Sqlite,
        SecretsKeySource::File(dir.join("moved.key")),
    ))
    .await;
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Makes `dir` a store as a release before sealed secrets left it: schema
/// 5, no `secret_keys`, plaintext secrets (the planted AccessKey, and a
/// product and device whose secrets were changed once, so an older
/// plaintext may linger in free space).
fn plant_plaintext_sqlite(dir: &Path) {
    let conn = rusqlite::Connection::open(dir.join("thingcall.db")).unwrap();
    conn.execute_batch(&format!(
        "DROP TABLE secret_keys;
         DELETE FROM refinery_schema_history WHERE version = 6;
         DELETE FROM access_keys;
         INSERT INTO access_keys (id, secret, enabled, created_ms) VALUES ('{KEY_ID}', '{AK_SECRET}', 1, 1);
         INSERT INTO products (product_key, product_name, product_secret, node_type, auth_type,
             validate_type, created_ms, draft_tsl, commodity_code, data_format)
         VALUES ('a1Plaintext', 'Plaintext_1', 'OldProductSecretXq81', 0, 'secret', 1, 1, '{{}}',
             'iothub_senior', 1);
         INSERT INTO devices (iot_id, product_key, device_name, device_secret, enabled, created_ms, status_ms)
         VALUES ('plainiot00000000000000000', 'a1Plaintext', 'plain-dev', 'OldDeviceSecretQz5r7TgB0k', 1, 1, 1);
         UPDATE products SET product_secret = 'ProductSecretPlainMv3' WHERE product_key = 'a1Plaintext';
         UPDATE devices SET device_secret = 'DeviceSecretPlainHs9Wd2Lx4n' WHERE device_name = 'plain-dev';"
    ))
    .unwrap();
}

const PLANTED: [(&str, &str); 5] = [
    ("AccessKey secret", AK_SECRET),
    ("product secret", "ProductSecretPlainMv3"),
    ("old product secret", "OldProductSecretXq81"),
    ("device secret", "DeviceSecretPlainHs9Wd2Lx4n"),
    ("old device secret", "OldDeviceSecretQz5r7TgB0k"),
];

fn planted() -> Made {
    Made {
        pk: "a1Plaintext".into(),
        product_secret: "ProductSecretPlainMv3".into(),
        dn: "plain-dev".into(),
        iot_id: "plainiot00000000000000000".into(),
        device_secret: "DeviceSecretPlainHs9Wd2Lx4n".into(),
    }
}

/// The planted device needs a published model to answer a call.
async fn publish_planted(s: &Running) {
    ak_call(
        &s.http,
        "ImportThingModelTsl",
        &[("ProductKey", "a1Plaintext"), ("TslStr", MODEL)],
    )
    .await;
    ak_call(
        &s.http,
        "PublishThingModel",
        &[("ProductKey", "a1Plaintext")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_sqlite_store_is_sealed_at_start_up() {
    let dir = temp_dir("secrets-migrate");
    // A store made by today's code, then taken back to the plaintext
    // schema of the release before.
    serve(options(
        &dir,
        StoreConfig::Sqlite,
        SecretsKeySource::DataDir,
    ))
    .await
    .stop()
    .await;
    std::fs::remove_file(dir.join("secrets.key")).unwrap();
    plant_plaintext_sqlite(&dir);
    assert!(
        !files_holding(&dir, &PLANTED).is_empty(),
        "the plaintext is there to begin with"
    );
    let mut opts = options(&dir, StoreConfig::Sqlite, SecretsKeySource::DataDir);
    // The planted AccessKey signs (it is not replaced by the option).
    opts.access_key = None;
    let s = serve(opts).await;
    assert!(dir.join("secrets.key").exists(), "the key was made");
    publish_planted(&s).await;
    logs_in_and_answers(&s, &planted()).await;
    assert_eq!(files_holding(&dir, &PLANTED), []);
    s.stop().await;
    assert_eq!(files_holding(&dir, &PLANTED), []);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sealed secret copied into another device's row does not open: the
/// store refuses to start, naming the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_moved_to_another_row_is_refused() {
    let dir = temp_dir("secrets-moved");
    let s = serve(options(
        &dir,
        StoreConfig::Sqlite,
        SecretsKeySource::DataDir,
    ))
    .await;
    let pk = ak_product(&s, "Moved_1").await;
    ak_call(
        &s.http,
        "RegisterDevice",
        &[("ProductKey", &pk), ("DeviceName", "thief")],
    )
    .await;
    ak_call(
        &s.http,
        "RegisterDevice",
        &[("ProductKey", &pk), ("DeviceName", "victim")],
    )
    .await;
    s.stop().await;
    {
        let conn = rusqlite::Connection::open(dir.join("thingcall.db")).unwrap();
        conn.execute(
            "UPDATE devices SET device_secret =
                 (SELECT device_secret FROM devices WHERE device_name = 'thief')
             WHERE device_name = 'victim'",
            [],
        )
        .unwrap();
    }
    let e = refused(options(
        &dir,
        StoreConfig::Sqlite,
        SecretsKeySource::DataDir,
    ))
    .await;
    assert!(e.contains("victim") && e.contains("does not open"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------- PostgreSQL

async fn fresh_database(server: &PostgresUrl, tag: &str) -> PostgresUrl {
    let name = format!("thingcall_{tag}_{}", std::process::id());
    server.drop_database(&name).await.unwrap();
    server.create_database(&name).await.unwrap();
    server.with_database(&name)
}

/// `pg_dump` of the database: every row of every table, as text.
fn dump(url: &PostgresUrl) -> String {
    let target = url.target();
    let (host, port) = target.rsplit_once(':').unwrap();
    let out = std::process::Command::new("pg_dump")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-U",
            "postgres",
            "--data-only",
            "-d",
        ])
        .arg(url.database().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn dump_holding(url: &PostgresUrl, secrets: &[(&str, &str)]) -> Vec<String> {
    let text = dump(url);
    assert!(text.contains("access_keys"), "the dump has the tables");
    secrets
        .iter()
        .filter(|(_, s)| text.contains(s))
        .map(|(w, _)| (*w).to_owned())
        .collect()
}

async fn sql(url: &PostgresUrl, sql: &str) {
    let target = url.target();
    let (host, port) = target.rsplit_once(':').unwrap();
    let out = tokio::process::Command::new("psql")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
        ])
        .arg(url.database().unwrap())
        .args(["-Atqc", sql])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tables_hold_no_secret_and_open_only_with_the_key() {
    let Some(server) = test_postgres() else {
        eprintln!("THINGCALL_TEST_POSTGRES is not set: secrets in PostgreSQL are not tested");
        return;
    };
    let url = fresh_database(&server, "secrets_pg").await;
    let dir = temp_dir("secrets-pg");
    let store = StoreConfig::Postgres(url.clone());

    // No key: refused before anything is written.
    let e = refused(options(&dir, store.clone(), SecretsKeySource::DataDir)).await;
    assert!(e.contains("needs a secrets key"), "{e}");

    let s = serve(options(&dir, store.clone(), test_secrets_key())).await;
    let made = make(&s, "AtRestPg_1").await;
    let secrets = secrets_of(&made);
    assert_eq!(dump_holding(&url, &as_refs(&secrets)), Vec::<String>::new());
    s.stop().await;

    // Another key, or none: refused.
    let e = refused(options(&dir, store.clone(), other_key())).await;
    assert!(e.contains("sealed with key"), "{e}");
    let e = refused(options(&dir, store.clone(), SecretsKeySource::DataDir)).await;
    assert!(e.contains("has no key"), "{e}");

    // With its key: the device logs in.
    let s = serve(options(&dir, store.clone(), test_secrets_key())).await;
    logs_in_and_answers(&s, &made).await;
    s.stop().await;
    server.drop_database(url.database().unwrap()).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_postgres_store_is_sealed_at_start_up() {
    let Some(server) = test_postgres() else {
        eprintln!("THINGCALL_TEST_POSTGRES is not set: sealing a PostgreSQL store is not tested");
        return;
    };
    let url = fresh_database(&server, "secrets_pgmig").await;
    let dir = temp_dir("secrets-pgmig");
    let store = StoreConfig::Postgres(url.clone());
    serve(options(&dir, store.clone(), test_secrets_key()))
        .await
        .stop()
        .await;
    // Back to the schema and the plaintext of the release before.
    sql(
        &url,
        &format!(
            "DROP TABLE secret_keys;
             DELETE FROM refinery_schema_history WHERE version = 6;
             DELETE FROM access_keys;
             INSERT INTO access_keys (id, secret, enabled, created_ms) VALUES ('{KEY_ID}', '{AK_SECRET}', true, 1);
             INSERT INTO products (product_key, product_name, product_secret, node_type, auth_type,
                 validate_type, created_ms, draft_tsl, commodity_code, data_format)
             VALUES ('a1Plaintext', 'Plaintext_1', 'ProductSecretPlainMv3', 0, 'secret', 1, 1, '{{}}',
                 'iothub_senior', 1);
             INSERT INTO devices (iot_id, product_key, device_name, device_secret, enabled, created_ms, status_ms)
             VALUES ('plainiot00000000000000000', 'a1Plaintext', 'plain-dev', 'DeviceSecretPlainHs9Wd2Lx4n', true, 1, 1);"
        ),
    )
    .await;
    let planted_now = [PLANTED[0], PLANTED[1], PLANTED[3]];
    assert_eq!(dump_holding(&url, &planted_now).len(), 3, "planted");
    let mut opts = options(&dir, store.clone(), test_secrets_key());
    opts.access_key = None;
    let s = serve(opts).await;
    publish_planted(&s).await;
    logs_in_and_answers(&s, &planted()).await;
    assert_eq!(dump_holding(&url, &planted_now), Vec::<String>::new());
    s.stop().await;
    server.drop_database(url.database().unwrap()).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `store copy` ships secrets sealed with the target's key: the target's
/// dump holds none; a server with the target's key serves them, one with
/// the source's key is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_carries_secrets_only_sealed_again() {
    let Some(server) = test_postgres() else {
        eprintln!("THINGCALL_TEST_POSTGRES is not set: store copy is not tested");
        return;
    };
    let dir = temp_dir("secrets-copy");
    let s = serve(options(
        &dir,
        StoreConfig::Sqlite,
        SecretsKeySource::DataDir,
    ))
    .await;
    let made = make(&s, "Copied_1").await;
    s.stop().await;
    let url = fresh_database(&server, "secrets_copy").await;
    let target_key = thingcall_server::new_secrets_key();
    let keys = CopyKeys {
        from: SecretsKeySource::DataDir,
        to: Some(SecretsKeySource::Value(target_key.clone())),
    };
    let summary = thingcall_server::copy_store(&dir, &keys, &url, false, |_| {})
        .await
        .unwrap();
    assert_eq!(summary.devices, 1);
    let secrets = secrets_of(&made);
    assert_eq!(dump_holding(&url, &as_refs(&secrets)), Vec::<String>::new());

    let node = temp_dir("secrets-copy-node");
    let store = StoreConfig::Postgres(url.clone());
    let e = refused(options(
        &node,
        store.clone(),
        SecretsKeySource::File(dir.join("secrets.key")),
    ))
    .await;
    assert!(e.contains("sealed with key"), "{e}");
    let s = serve(options(
        &node,
        store.clone(),
        SecretsKeySource::Value(target_key.clone()),
    ))
    .await;
    logs_in_and_answers(&s, &made).await;
    s.stop().await;

    // A second copy: refused without force; with force, sealed with the
    // source's key this time (the target's old key id goes too).
    let e = thingcall_server::copy_store(&dir, &CopyKeys::default(), &url, false, |_| {})
        .await
        .unwrap_err();
    assert!(e.message().contains("--force"), "{e}");
    thingcall_server::copy_store(&dir, &CopyKeys::default(), &url, true, |_| {})
        .await
        .unwrap();
    let s = serve(options(
        &node,
        store,
        SecretsKeySource::File(dir.join("secrets.key")),
    ))
    .await;
    logs_in_and_answers(&s, &made).await;
    s.stop().await;
    assert_eq!(dump_holding(&url, &as_refs(&secrets)), Vec::<String>::new());
    server.drop_database(url.database().unwrap()).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&node);
}
