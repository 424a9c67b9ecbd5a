//! The registry's size at start-up: how long `Server::open` takes with N
//! registered devices (1,000,000 by default) on each store, and the
//! resident memory the in-memory mirror costs.
//!
//! `cargo bench -p thingcall-server --bench registry -- --devices 1000000`
//!
//! The devices are written straight into each store with SQL (a bulk
//! insert, not the API: the API's rate is not what is measured here). Each
//! start-up runs in a child process (this binary, re-executed), so its
//! memory is its own.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)] // bench code

use std::sync::Arc;
use std::time::Instant;

use thingcall_core::Secret;
use thingcall_server::{
    PostgresUrl, Server, ServerConfig, ServerOptions, StoreConfig, SystemClock,
};

/// The allocator the `thingcall` binary uses, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn options(dir: &std::path::Path, store: StoreConfig) -> ServerOptions {
    ServerOptions {
        config: ServerConfig::default(),
        gateway: Default::default(),
        data_dir: dir.to_owned(),
        store,
        // A fixed key: the filled store is opened again by the child.
        secrets_key: thingcall_server::SecretsKeySource::Value(Secret::new(
            "dGhpbmdjYWxsLWJlbmNoLXNlY3JldHMta2V5LTMyYiE=",
        )),
        access_key: Some(("benchid".to_owned(), Secret::new("benchsecret"))),
        cluster: None,
    }
}

/// The child: opens the server and reports the time and memory it took.
fn open_and_report(dir: &str, store: Option<&str>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = match store {
        Some(url) => StoreConfig::Postgres(PostgresUrl::parse(url).unwrap()),
        None => StoreConfig::Sqlite,
    };
    rt.block_on(async {
        let before = rss_kib();
        let started = Instant::now();
        let server = Server::open(
            options(std::path::Path::new(dir), store),
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        let took = started.elapsed();
        let after = rss_kib();
        println!("{} {before} {after}", took.as_millis());
        drop(server);
    });
}

fn child(dir: &std::path::Path, store: Option<&str>) -> (u128, u64, u64) {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.arg("--open").arg(dir);
    if let Some(url) = store {
        cmd.arg("--store").arg(url);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<u128> = text
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    assert_eq!(
        fields.len(),
        3,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (fields[0], fields[1] as u64, fields[2] as u64)
}

fn report(label: &str, devices: u64, (ms, before, after): (u128, u64, u64)) {
    let per = (after.saturating_sub(before) as f64 * 1024.0) / devices.max(1) as f64;
    println!(
        "{label:<12} {devices:>9} devices   start-up {ms:>6} ms   RSS {before} KiB -> {after} KiB   {per:.0} bytes per device"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--open") {
        let store = args
            .iter()
            .position(|a| a == "--store")
            .map(|j| args[j + 1].as_str());
        open_and_report(&args[i + 1], store);
        return;
    }
    let quick = args.iter().any(|a| a == "--test");
    let devices: u64 = if quick {
        1_000
    } else {
        args.iter()
            .position(|a| a == "--devices")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    // SQLite.
    let dir = std::env::temp_dir().join(format!("thingcall-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The schema: an empty server start, in a child (which lets the data
    // directory go when it exits).
    child(&dir, None);
    let filled = Instant::now();
    {
        let conn = rusqlite::Connection::open(dir.join("thingcall.db")).unwrap();
        conn.execute_batch(
            "INSERT INTO products (product_key, product_name, product_secret, node_type, auth_type,
                 validate_type, created_ms, draft_tsl)
             VALUES ('a1Registry1', 'Registry_1', 'secretsecret1234', 0, 'secret', 1, 1, '{}');
             -- The rows are plaintext, as a release before sealed secrets
             -- left them: the first start seals them.
             DELETE FROM secret_keys;",
        )
        .unwrap();
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO devices (iot_id, product_key, device_name, device_secret, enabled, created_ms,
                 activated_ms, online_ms, status_ms, ip_address)
             SELECT printf('%020d000100', i), 'a1Registry1', printf('device-%d', i),
                    printf('%032d', i), 1, 1700000000000, 1700000000000, 1700000000000,
                    1700000000000, '10.1.2.3' FROM n",
            [devices as i64],
        )
        .unwrap();
    }
    eprintln!(
        "SQLite filled with {devices} devices in {:?}",
        filled.elapsed()
    );
    report("SQLite seal", devices, child(&dir, None));
    report("SQLite", devices, child(&dir, None));
    let _ = std::fs::remove_dir_all(&dir);

    // PostgreSQL (THINGCALL_BENCH_POSTGRES names the server; "none" skips).
    let server = std::env::var("THINGCALL_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    if server == "none" {
        return;
    }
    let server_url = PostgresUrl::parse(&server).unwrap();
    let name = format!("thingcall_registry_{}", std::process::id());
    // The URL's parameters (sslmode) are kept for the bench's database.
    let (path, query) = server.split_once('?').unwrap_or((server.as_str(), ""));
    let base = path.rsplit_once('/').map_or(path, |(b, _)| b);
    let url = if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    };
    rt.block_on(async {
        server_url.drop_database(&name).await.unwrap();
        server_url.create_database(&name).await.unwrap();
    });
    let dir = std::env::temp_dir().join(format!("thingcall-registry-pg-{}", std::process::id()));
    child(&dir, Some(&url));
    let filled = Instant::now();
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "INSERT INTO products (product_key, product_name, product_secret, node_type, auth_type,
                     validate_type, created_ms, draft_tsl)
                 VALUES ('a1Registry1', 'Registry_1', 'secretsecret1234', 0, 'secret', 1, 1, '{{}}');
                 DELETE FROM secret_keys;
                 INSERT INTO devices (iot_id, product_key, device_name, device_secret, enabled, created_ms,
                     activated_ms, online_ms, status_ms, ip_address)
                 SELECT lpad(i::text, 20, '0') || '000100', 'a1Registry1', 'device-' || i,
                        lpad(i::text, 32, '0'), true, 1700000000000, 1700000000000, 1700000000000,
                        1700000000000, '10.1.2.3' FROM generate_series(1, {devices}) AS i"
            ))
            .await
            .unwrap();
    });
    eprintln!(
        "PostgreSQL filled with {devices} devices in {:?}",
        filled.elapsed()
    );
    report("PG seal", devices, child(&dir, Some(&url)));
    report("PostgreSQL", devices, child(&dir, Some(&url)));
    rt.block_on(server_url.drop_database(&name)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
