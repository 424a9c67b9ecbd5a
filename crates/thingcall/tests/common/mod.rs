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
