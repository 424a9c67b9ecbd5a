//! The PostgreSQL store under faults: its connections killed during load
//! (`pg_terminate_backend`), and the database server restarted. Requests
//! answer `ServiceUnavailable` (HTTP 503) meanwhile, never anything worse;
//! the server recovers by itself within 5 s of the database coming back;
//! and nothing it acknowledged is lost.
//!
//! The first test uses the server `THINGCALL_TEST_POSTGRES` names; the
//! second starts a PostgreSQL of its own (initdb, as user `postgres`) on a
//! free port, so it can restart it. Both are skipped without
//! `THINGCALL_TEST_POSTGRES` unless `THINGCALL_REQUIRE_POSTGRES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use thingcall_core::Secret;
use thingcall_server::{
    PostgresUrl, Server, ServerConfig, ServerOptions, StoreConfig, SystemClock,
};

/// A server on the given database, with the harness's AccessKey.
async fn serve(
    url: &PostgresUrl,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let options = ServerOptions {
        config: ServerConfig::default(),
        gateway: Default::default(),
        data_dir: temp_dir("pgfault"),
        store: StoreConfig::Postgres(url.clone()),
        secrets_key: test_secrets_key(),
        access_key: Some((KEY_ID.to_owned(), Secret::new(KEY_SECRET))),
        cluster: None,
    };
    let server = Server::open(options, Arc::new(SystemClock)).await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mqtt = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = http.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(http, mqtt, async move {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

/// Registers devices in a loop until `stop`; returns the outcomes by code
/// and the names of the devices acknowledged.
async fn load(
    http: String,
    pk: String,
    stop: Arc<AtomicBool>,
) -> (BTreeMap<String, u64>, Vec<String>) {
    let mut outcomes = BTreeMap::new();
    let mut acknowledged = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let name = format!("load-{n}");
        let (status, body) = call(
            &http,
            "RegisterDevice",
            &[("ProductKey", &pk), ("DeviceName", &name)],
        )
        .await;
        let code = if body["Success"] == true {
            acknowledged.push(name);
            "Success".to_owned()
        } else {
            let code = body["Code"].as_str().unwrap_or("?").to_owned();
            assert_eq!(
                (status, code.as_str()),
                (503, "ServiceUnavailable"),
                "{body}"
            );
            code
        };
        *outcomes.entry(code).or_default() += 1;
        // Reads keep going as well.
        let (status, body) = call(
            &http,
            "QueryDeviceServiceData",
            &[
                ("ProductKey", &pk),
                ("DeviceName", "load-1"),
                ("StartTime", "0"),
                ("EndTime", "9999999999999"),
            ],
        )
        .await;
        assert!(
            body["Success"] == true
                || (status, body["Code"].as_str()) == (503, Some("ServiceUnavailable"))
                || body["Code"] == "iot.device.NotExistedDevice",
            "{status} {body}"
        );
    }
    (outcomes, acknowledged)
}

/// Waits until a registration succeeds; returns how long that took.
async fn recovered(http: &str, pk: &str) -> Duration {
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let (_, body) = call(
            http,
            "RegisterDevice",
            &[("ProductKey", pk), ("DeviceName", &format!("after-{n}"))],
        )
        .await;
        if body["Success"] == true {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never recovered: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every acknowledged device is in the store: a new server on the same
/// database finds each one.
async fn all_there(url: &PostgresUrl, names: &[String], pk: &str) {
    let (http, stop, task) = serve(url).await;
    for name in names {
        let (_, body) = call(
            &http,
            "QueryDeviceDetail",
            &[("ProductKey", pk), ("DeviceName", name)],
        )
        .await;
        assert_eq!(body["Success"], true, "acknowledged {name} is lost: {body}");
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_answer_503_and_recover() {
    let Some(server) = test_postgres() else {
        eprintln!("THINGCALL_TEST_POSTGRES is not set: PostgreSQL faults are not tested");
        return;
    };
    let name = format!("thingcall_faults_{}", std::process::id());
    server.drop_database(&name).await.unwrap();
    server.create_database(&name).await.unwrap();
    let url = server.with_database(&name);
    let (http, stop_server, task) = serve(&url).await;
    let pk = product(&http, "Faults_1").await;
    let stop = Arc::new(AtomicBool::new(false));
    let loader = tokio::spawn(load(http.clone(), pk.clone(), Arc::clone(&stop)));
    // Kill every connection of the server's database, again and again.
    let admin = server.with_database("postgres");
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        terminate(&admin, &name).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (outcomes, acknowledged) = loader.await.unwrap();
    assert!(
        outcomes.get("Success").copied().unwrap_or(0) > 0,
        "{outcomes:?}"
    );
    let took = recovered(&http, &pk).await;
    assert!(took < Duration::from_secs(5), "recovered after {took:?}");
    let _ = stop_server.send(());
    task.await.unwrap().unwrap();
    all_there(&url, &acknowledged, &pk).await;
    server.drop_database(&name).await.unwrap();
    eprintln!("outcomes while connections were killed: {outcomes:?}");
}

/// `pg_terminate_backend` on every connection to `db` but this one.
async fn terminate(admin: &PostgresUrl, db: &str) {
    let sql = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    );
    let out = tokio::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-p"])
        .arg(admin.target().rsplit(':').next().unwrap())
        .args(["-U", "postgres", "-d", "postgres", "-Atqc", &sql])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL cluster of the test's own, on a free port.
struct OwnPostgres {
    dir: std::path::PathBuf,
    port: u16,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(args: &[&str]) -> std::process::Output {
    std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .unwrap()
}

impl OwnPostgres {
    fn start() -> Option<OwnPostgres> {
        if !std::path::Path::new(PG_BIN).join("initdb").exists() {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::path::PathBuf::from(format!("/tmp/thingcall-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let chown = std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(chown.success());
        let d = dir.to_str().unwrap();
        let init = as_postgres(&[
            &format!("{PG_BIN}/initdb"),
            "-D",
            &format!("{d}/data"),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ]);
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        let pg = OwnPostgres { dir, port };
        pg.pg_ctl("start");
        Some(pg)
    }

    fn pg_ctl(&self, action: &str) {
        let d = self.dir.to_str().unwrap();
        let opts = format!("-p {} -c listen_addresses=127.0.0.1 -k {d}", self.port);
        let out = as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            &format!("{d}/data"),
            "-l",
            &format!("{d}/server.log"),
            "-w",
            "-m",
            "fast",
            "-o",
            &opts,
            action,
        ]);
        assert!(
            out.status.success(),
            "pg_ctl {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> PostgresUrl {
        PostgresUrl::parse(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.port
        ))
        .unwrap()
    }
}

impl Drop for OwnPostgres {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_database_answers_503_then_recovers() {
    if test_postgres().is_none() {
        eprintln!("THINGCALL_TEST_POSTGRES is not set: a database restart is not tested");
        return;
    }
    let pg = OwnPostgres::start().expect("PostgreSQL 15's initdb is needed for this test");
    let url = pg.url();
    let (http, stop_server, task) = serve(&url).await;
    let pk = product(&http, "Restart_1").await;
    let stop = Arc::new(AtomicBool::new(false));
    let loader = tokio::spawn(load(http.clone(), pk.clone(), Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pg = tokio::task::spawn_blocking(move || {
        pg.pg_ctl("stop");
        std::thread::sleep(Duration::from_secs(1));
        pg.pg_ctl("start");
        pg
    })
    .await
    .unwrap();
    let back = Instant::now();
    let took = recovered(&http, &pk).await;
    assert!(
        took < Duration::from_secs(5),
        "recovered {took:?} after the restart"
    );
    stop.store(true, Ordering::Relaxed);
    let (outcomes, acknowledged) = loader.await.unwrap();
    assert!(
        outcomes.get("ServiceUnavailable").copied().unwrap_or(0) > 0,
        "the outage was seen: {outcomes:?}"
    );
    let _ = back;
    let _ = stop_server.send(());
    task.await.unwrap().unwrap();
    all_there(&url, &acknowledged, &pk).await;
    drop(pg);
    eprintln!("outcomes across the restart: {outcomes:?}");
}
