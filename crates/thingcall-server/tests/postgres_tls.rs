//! TLS to PostgreSQL: a PostgreSQL of the test's own (initdb, `ssl = on`,
//! a certificate for localhost from a CA made for the test, SCRAM
//! passwords, and `hostssl`-only rules in `pg_hba.conf`), and thingcall on
//! it with each `sslmode`:
//!
//! - `verify-full` with the CA connects, and thingcall works end to end (a
//!   device logs in, a call is answered and recorded); every one of its
//!   connections to the database is encrypted (`pg_stat_ssl`), a cluster
//!   node's listening connection too;
//! - `verify-full` with another CA, or a host name the certificate does not
//!   name, is refused, and the error says why (never the password);
//!   `verify-ca` takes the certificate whatever the name;
//! - `require` (no root) and the default `prefer` connect over TLS;
//! - `disable` is refused by the server, and the error says so;
//! - a man in the middle who answers "no TLS" (as a server with `ssl = off`
//!   does) is refused by `require`, and taken in plaintext by `prefer`, as
//!   libpq does.
//!
//! Skipped without `THINGCALL_TEST_POSTGRES` unless
//! `THINGCALL_REQUIRE_POSTGRES=1`, like every PostgreSQL test; it needs
//! PostgreSQL 15's `initdb`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use thingcall_core::Secret;
use thingcall_server::{
    ClusterConfig, PostgresUrl, Server, ServerConfig, ServerOptions, StoreConfig, SystemClock,
};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PASSWORD: &str = "pa55-tls-Secret";

fn as_postgres(args: &[&str]) -> std::process::Output {
    std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .unwrap()
}

fn chown_postgres(path: &Path) {
    let ok = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// A PostgreSQL with TLS on a free port: its CA, and one other CA.
struct TlsPostgres {
    dir: PathBuf,
    port: u16,
    ca: PathBuf,
    other_ca: PathBuf,
}

impl TlsPostgres {
    fn start() -> TlsPostgres {
        assert!(
            Path::new(PG_BIN).join("initdb").exists(),
            "PostgreSQL 15's initdb is needed for this test"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = PathBuf::from(format!(
            "/tmp/thingcall-pgtls-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The server's certificate (localhost, 127.0.0.1) and its CA, and a
        // CA that signed nothing of this server's.
        let made = thingcall_tls::demo::ensure(&dir.join("certs")).unwrap();
        let other = thingcall_tls::demo::ensure(&dir.join("other")).unwrap();
        chown_postgres(&dir);
        let d = dir.to_str().unwrap().to_owned();
        let init = as_postgres(&[
            &format!("{PG_BIN}/initdb"),
            "-D",
            &format!("{d}/data"),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
        ]);
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        // Only TLS connections over TCP; the test's own administration
        // uses the socket.
        std::fs::write(
            dir.join("data/pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostssl all all ::1/128 scram-sha-256\n",
        )
        .unwrap();
        let conf = format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n\
             password_encryption = 'scram-sha-256'\nmax_connections = 100\n",
            made.files.cert.display(),
            made.files.key.display()
        );
        let mut text = std::fs::read_to_string(dir.join("data/postgresql.conf")).unwrap();
        text.push_str(&conf);
        std::fs::write(dir.join("data/postgresql.conf"), text).unwrap();
        chown_postgres(&dir);
        let pg = TlsPostgres {
            dir,
            port,
            ca: made.ca,
            other_ca: other.ca,
        };
        let opts = format!("-p {port} -c listen_addresses=127.0.0.1 -k {d}");
        let out = as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            &format!("{d}/data"),
            "-l",
            &format!("{d}/server.log"),
            "-w",
            "-o",
            &opts,
            "start",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(pg.dir.join("server.log")).unwrap_or_default()
        );
        pg.sql(&format!("ALTER ROLE postgres PASSWORD '{PASSWORD}'"));
        pg
    }

    /// Runs SQL over the server's socket (no TLS, no password); returns
    /// the output, one row a line.
    fn sql(&self, sql: &str) -> String {
        let out = std::process::Command::new("psql")
            .arg("-h")
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-Atqc", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A URL to database `db` as `host` (the TCP connection goes to
    /// 127.0.0.1 whatever the name), with the given parameters.
    fn url(&self, host: &str, db: &str, params: &str) -> PostgresUrl {
        let url = format!(
            "postgres://postgres:{PASSWORD}@{host}:{}/{db}?hostaddr=127.0.0.1&{params}",
            self.port
        );
        PostgresUrl::parse(&url).unwrap()
    }

    /// `verify-full` with the server's CA.
    fn verified(&self, db: &str) -> PostgresUrl {
        self.url(
            "localhost",
            db,
            &format!("sslmode=verify-full&sslrootcert={}", self.ca.display()),
        )
    }

    /// (connections, of which encrypted) of thingcall (its application
    /// name), and those running `query_like`.
    fn ssl_of_thingcall(&self, query_like: &str) -> (u32, u32) {
        let row = self.sql(&format!(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a
             JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = 'thingcall' AND a.query ILIKE '{query_like}'"
        ));
        let (n, ssl) = row.trim().split_once('|').unwrap();
        (n.parse().unwrap(), ssl.parse().unwrap())
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let d = self.dir.to_str().unwrap_or_default().to_owned();
        let _ = as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            &format!("{d}/data"),
            "-m",
            "immediate",
            "stop",
        ]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn options(url: &PostgresUrl, tag: &str) -> ServerOptions {
    ServerOptions {
        config: ServerConfig::default(),
        gateway: Default::default(),
        data_dir: temp_dir(tag),
        store: StoreConfig::Postgres(url.clone()),
        secrets_key: test_secrets_key(),
        access_key: Some((KEY_ID.to_owned(), Secret::new(KEY_SECRET))),
        cluster: None,
    }
}

/// The error a server start on `url` ends with.
async fn refused(url: &PostgresUrl) -> String {
    match Server::open(options(url, "pgtls-refused"), Arc::new(SystemClock)).await {
        Ok(_) => panic!("{url} was accepted"),
        Err(e) => {
            eprintln!("refused: {}", e.message());
            e.message().to_owned()
        }
    }
}

/// Serves on `options` until the returned sender fires.
async fn serve(
    options: ServerOptions,
) -> (
    String,
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
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
    (h, m, stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_to_postgres_honours_sslmode() {
    if test_postgres().is_none() {
        eprintln!("THINGCALL_TEST_POSTGRES is not set: TLS to PostgreSQL is not tested");
        return;
    }
    let pg = TlsPostgres::start();

    // The administration the tests use (create and drop a database) goes
    // through the same connector.
    let admin = pg.verified("postgres");
    assert!(admin.create_database("tc_full").await.unwrap());

    // verify-full with the server's CA: thingcall works end to end.
    let url = pg.verified("tc_full");
    let (http, mqtt, stop, task) = serve(options(&url, "pgtls-full")).await;
    let pk = product(&http, "Tls_1").await;
    let (iot_id, secret) = device(&http, &pk, "over-tls").await;
    let _device = simulate(&mqtt, &pk, "over-tls", &secret).await;
    wait_status(&http, &iot_id, "ONLINE").await;
    let body = ok(
        &http,
        "InvokeThingService",
        &[
            ("IotId", &iot_id),
            ("Identifier", "Calibrate"),
            ("Args", r#"{"Offset":1.5}"#),
        ],
    )
    .await;
    assert!(body["Data"]["Result"].is_string(), "{body}");
    let records = ok(
        &http,
        "QueryDeviceServiceData",
        &[
            ("IotId", &iot_id),
            ("StartTime", "0"),
            ("EndTime", "9999999999999"),
        ],
    )
    .await;
    assert!(records.to_string().contains("Calibrate"), "{records}");
    // The writer's and the pool's connections: every one encrypted.
    let (n, ssl) = pg.ssl_of_thingcall("%");
    assert!(n >= 2, "thingcall holds {n} connections");
    assert_eq!(ssl, n, "{ssl} of thingcall's {n} connections use TLS");
    let _ = stop.send(());
    task.await.unwrap().unwrap();

    // A cluster node's listening connection too (NATS on 127.0.0.1:4222,
    // as the cluster tests use).
    if tokio::net::TcpStream::connect("127.0.0.1:4222")
        .await
        .is_ok()
    {
        assert!(admin.create_database("tc_node").await.unwrap());
        let mut node = options(&pg.verified("tc_node"), "pgtls-node");
        node.cluster = Some(ClusterConfig {
            nats: vec!["nats://127.0.0.1:4222".to_owned()],
            node_id: Some(format!("tls-{}", std::process::id())),
        });
        let (http, _, stop, task) = serve(node).await;
        product(&http, "Tls_node_1").await;
        let mut listening = (0, 0);
        for _ in 0..100 {
            listening = pg.ssl_of_thingcall("LISTEN%");
            if listening.0 > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(listening, (1, 1), "the node listens over TLS");
        let (n, ssl) = pg.ssl_of_thingcall("%");
        assert_eq!(ssl, n, "{ssl} of the node's {n} connections use TLS");
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    } else {
        assert!(
            std::env::var("THINGCALL_REQUIRE_CLUSTER").as_deref() != Ok("1"),
            "THINGCALL_REQUIRE_CLUSTER=1 but no NATS on 127.0.0.1:4222"
        );
        eprintln!("no NATS on 127.0.0.1:4222: a node's listener over TLS is not tested");
    }

    // verify-full with a CA that did not sign the server's certificate.
    let e = refused(&pg.url(
        "localhost",
        "tc_full",
        &format!("sslmode=verify-full&sslrootcert={}", pg.other_ca.display()),
    ))
    .await;
    assert!(e.contains(&format!("localhost:{}", pg.port)), "{e}");
    assert!(e.contains("not signed by a CA"), "{e}");
    assert!(!e.contains(PASSWORD), "the password leaked: {e}");

    // verify-full with a name the certificate does not hold; verify-ca
    // does not check the name.
    let e = refused(&pg.url(
        "db.thingcall.invalid",
        "tc_full",
        &format!("sslmode=verify-full&sslrootcert={}", pg.ca.display()),
    ))
    .await;
    assert!(e.contains("not valid for the host"), "{e}");
    assert!(!e.contains(PASSWORD), "the password leaked: {e}");
    let ca_only = pg.url(
        "db.thingcall.invalid",
        "tc_full",
        &format!("sslmode=verify-ca&sslrootcert={}", pg.ca.display()),
    );
    let (_, _, stop, task) = serve(options(&ca_only, "pgtls-ca")).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let e = refused(&pg.url(
        "localhost",
        "tc_full",
        &format!("sslmode=verify-ca&sslrootcert={}", pg.other_ca.display()),
    ))
    .await;
    assert!(e.contains("not signed by a CA"), "{e}");

    // require (nothing checked) and the default prefer: over TLS.
    for params in ["sslmode=require", "application_name=x"] {
        let url = pg.url("localhost", "tc_full", params);
        let (http, _, stop, task) = serve(options(&url, "pgtls-require")).await;
        ok(&http, "QueryProduct", &[("ProductKey", &pk)]).await;
        let (n, ssl) = pg.ssl_of_thingcall("%");
        assert!(n >= 2 && ssl == n, "{params}: {ssl} of {n} over TLS");
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    }

    // disable: the server takes TLS connections only.
    let e = refused(&pg.url("localhost", "tc_full", "sslmode=disable")).await;
    assert!(e.contains("no encryption"), "{e}");
    assert!(e.contains("sslmode=disable"), "{e}");
    assert!(!e.contains(PASSWORD), "the password leaked: {e}");

    admin.drop_database("tc_full").await.unwrap();
}

/// A proxy in front of `upstream` that answers every SSLRequest with
/// "no" (as a server with `ssl = off` does, or an attacker stripping TLS)
/// and relays the rest.
async fn tls_stripper(upstream: String) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 8];
                if client.read_exact(&mut first).await.is_err() {
                    return;
                }
                let mut server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                // SSLRequest: length 8, code 80877103.
                if first == [0, 0, 0, 8, 4, 210, 22, 47] {
                    let _ = client.write_all(b"N").await;
                } else {
                    let _ = server.write_all(&first).await;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripped_tls_offer_is_refused_by_require() {
    let Some(server) = test_postgres() else {
        eprintln!("THINGCALL_TEST_POSTGRES is not set: TLS stripping is not tested");
        return;
    };
    let port = tls_stripper(server.target()).await;
    let name = format!("thingcall_tls_strip_{}", std::process::id());
    server.drop_database(&name).await.unwrap();
    server.create_database(&name).await.unwrap();
    let raw = std::env::var("THINGCALL_TEST_POSTGRES").unwrap();
    let user = raw
        .strip_prefix("postgres://")
        .and_then(|r| r.split_once('@'))
        .map_or("postgres", |(u, _)| u)
        .to_owned();
    let through = |params: &str| {
        PostgresUrl::parse(&format!(
            "postgres://{user}@127.0.0.1:{port}/{name}?{params}"
        ))
        .unwrap()
    };
    let e = refused(&through("sslmode=require")).await;
    assert!(e.contains("refuses plaintext"), "{e}");
    let e = refused(&through(
        "sslmode=verify-full&sslrootcert=/etc/ssl/certs/ca-certificates.crt",
    ))
    .await;
    assert!(e.contains("refuses plaintext"), "{e}");
    // prefer takes what it is given: plaintext (DEPLOYMENT.md says never
    // to use it across a network).
    let (_, _, stop, task) = serve(options(&through("sslmode=prefer"), "pgtls-prefer")).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    server.drop_database(&name).await.unwrap();
}
