//! The official SDKs as test peers: where their scripts are, finding a
//! Python or Node that has them (a missing one skips the test, unless
//! `THINGCALL_REQUIRE_SDK=1`, as in CI), and running a script that must
//! print OK last.

use std::path::PathBuf;
use std::time::Duration;

/// `tests/compat`, where the SDK scripts and their `node_modules` live.
pub fn compat() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/compat")
}

/// Whether a missing SDK is a failure (`THINGCALL_REQUIRE_SDK=1`).
pub fn required() -> bool {
    std::env::var("THINGCALL_REQUIRE_SDK").is_ok_and(|v| v == "1")
}

/// The Python of `THINGCALL_SDK_PYTHON` (or the workspace's `.venv`) when it
/// can import `modules` (comma-separated).
pub fn python_with(modules: &str) -> Option<PathBuf> {
    let python = match std::env::var("THINGCALL_SDK_PYTHON") {
        Ok(p) => PathBuf::from(p),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
    };
    let ok = std::process::Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        !required(),
        "THINGCALL_REQUIRE_SDK=1 but {} cannot import {modules}",
        python.display()
    );
    eprintln!("skipped: no Python with {modules}");
    None
}

/// `node` when it runs and `tests/compat/node_modules/{package}` exists.
pub fn node_with(package: &str) -> Option<PathBuf> {
    let node = PathBuf::from("node");
    let runs = std::process::Command::new(&node)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if runs && compat().join("node_modules").join(package).exists() {
        return Some(node);
    }
    assert!(
        !required(),
        "THINGCALL_REQUIRE_SDK=1 but node or {package} is missing"
    );
    eprintln!("skipped: no node with {package}");
    None
}

/// Runs a script with `env` added; it must exit 0 and print OK last.
pub async fn run_script(program: &PathBuf, args: &[String], env: &[(&str, String)]) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the SDK script timed out")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}
