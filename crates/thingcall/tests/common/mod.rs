//! Starting `thingcall serve` as a child process for the CLI tests.

#![allow(dead_code, unreachable_pub)] // each test file uses part of this

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thingcall_core::Clock;
use thingcall_server::SystemClock;

pub const ID: &str = "serveid";
pub const SECRET: &str = "servesecret";

pub fn temp_dir(tag: &str) -> PathBuf {
    let n = SystemClock.now().get();
    let dir =
        std::env::temp_dir().join(format!("thingcall-serve-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The PostgreSQL server the tests run against, if any
/// (`THINGCALL_TEST_POSTGRES`; required when `THINGCALL_REQUIRE_POSTGRES=1`).
pub fn test_postgres() -> Option<thingcall_server::PostgresUrl> {
    match std::env::var("THINGCALL_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(thingcall_server::PostgresUrl::parse(&url).unwrap()),
        _ => {
            assert!(
                std::env::var("THINGCALL_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "THINGCALL_REQUIRE_POSTGRES=1 but THINGCALL_TEST_POSTGRES names no server"
            );
            None
        }
    }
}

/// The database a test directory's servers use on the test server.
pub fn database_name(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    format!("thingcall_cli_{:016x}", h.finish())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `--store URL` for a test directory when the tests run on PostgreSQL
/// (its database is created if missing), else nothing.
pub fn store_args(dir: &Path) -> Vec<String> {
    let Some(server) = test_postgres() else {
        return Vec::new();
    };
    let name = database_name(dir);
    block_on(server.create_database(&name)).unwrap();
    // The test server's URL (with its password, if any: `PostgresUrl`
    // never prints one) with the directory's database.
    let raw = std::env::var("THINGCALL_TEST_POSTGRES").unwrap();
    let base = raw.rsplit_once('/').map_or(raw.as_str(), |(b, _)| b);
    // A PostgreSQL store needs a secrets key; every server of the
    // directory (the nodes of a cluster) gets the same file.
    let key = dir.join("secrets.key");
    if !key.exists() {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&key, "dGhpbmdjYWxsLXRlc3Qtc2VjcmV0cy1rZXktMzJieSE=\n").unwrap();
    }
    vec![
        "--store".to_owned(),
        format!("{base}/{name}"),
        "--secrets-key-file".to_owned(),
        key.to_string_lossy().into_owned(),
    ]
}

/// Drops a test directory's database, if the tests run on PostgreSQL.
pub fn finish(dir: &Path) {
    if let Some(server) = test_postgres() {
        block_on(server.drop_database(&database_name(dir))).unwrap();
    }
}

pub struct Running {
    pub child: Child,
    pub http: String,
    pub mqtt: String,
}

pub fn start(dir: &Path, extra: &[&str]) -> Running {
    let ready = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let child = Command::new(env!("CARGO_BIN_EXE_thingcall"))
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--mqtt",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .args([
            "--access-key-id",
            ID,
            "--access-key-secret",
            SECRET,
            "--ready-file",
        ])
        .arg(&ready)
        .args(if extra.contains(&"--store") {
            Vec::new()
        } else {
            store_args(dir)
        })
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            return Running {
                child,
                http: v["http"].as_str().unwrap().to_owned(),
                mqtt: v["mqtt"].as_str().unwrap().to_owned(),
            };
        }
        assert!(
            Instant::now() < deadline,
            "thingcall serve never became ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The demo product's key, from the "demo device PK/DN" line that
/// `serve --demo` prints. The rest of the output is read on (and thrown
/// away) by a thread of its own.
pub fn demo_product(child: &mut Child) -> String {
    let out = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    let line = lines
        .find(|l| l.as_ref().is_ok_and(|l| l.contains("demo device")))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    line.split_whitespace()
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

/// A command's standard output as JSON, after checking it succeeded.
pub fn ok_json(o: &std::process::Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}
