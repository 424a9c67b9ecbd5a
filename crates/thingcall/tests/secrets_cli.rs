//! The secrets key on the command line: `thingcall store new-key` makes a
//! private key file once; `serve` takes the key from `--secrets-key-file`
//! or `THINGCALL_SECRETS_KEY` (not both), refuses a store sealed with
//! another key in one line that names no key, and a PostgreSQL store
//! without a key.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code
#![allow(clippy::zombie_processes)] // the server child is killed and waited for

mod common;

use std::process::{Command, Stdio};

use common::*;

fn thingcall() -> Command {
    Command::new(env!("CARGO_BIN_EXE_thingcall"))
}

/// `serve` once, with ports 0 and nothing listening long: the output of a
/// start that is refused.
fn serve_refused(dir: &std::path::Path, args: &[&str], key: Option<&str>) -> (i32, String) {
    let mut c = thingcall();
    c.args([
        "serve",
        "--http",
        "127.0.0.1:0",
        "--mqtt",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(dir.join("data"))
    .args(args)
    .env_remove("THINGCALL_SECRETS_KEY")
    .env_remove("THINGCALL_SECRETS_KEY_FILE")
    .env_remove("THINGCALL_STORE")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(k) = key {
        c.env("THINGCALL_SECRETS_KEY", k);
    }
    let mut child = c.spawn().unwrap();
    // A start that is not refused would serve on: it is stopped, and the
    // test fails on its exit code.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn new_key(path: &std::path::Path) -> std::process::Output {
    thingcall()
        .args(["store", "new-key"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn new_key_makes_a_private_file_once() {
    let dir = temp_dir("newkey");
    let path = dir.join("k.key");
    let out = new_key(&path);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim().len(), 44, "32 bytes in base64: {text}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(text.trim()),
        "the key is not printed"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = new_key(&path);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "kept");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_refuses_a_store_sealed_with_another_key() {
    let dir = temp_dir("wrongkey");
    // The first start makes DATA_DIR/secrets.key and seals the store.
    let s = start(&dir, &["--store", ""]);
    let mut child = s.child;
    let _ = child.kill();
    let _ = child.wait();
    assert!(dir.join("data/secrets.key").exists());
    let other = dir.join("other.key");
    assert!(new_key(&other).status.success());
    let other_text = std::fs::read_to_string(&other).unwrap();
    let (code, stderr) =
        serve_refused(&dir, &["--secrets-key-file", other.to_str().unwrap()], None);
    assert_eq!(code, 1, "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("sealed with key"), "{stderr}");
    assert!(
        !stderr.contains(other_text.trim()),
        "the key leaked: {stderr}"
    );
    // The same from the environment.
    let (code, stderr) = serve_refused(&dir, &[], Some(other_text.trim()));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("THINGCALL_SECRETS_KEY"), "{stderr}");
    // Both at once is a usage error.
    let (code, stderr) = serve_refused(
        &dir,
        &["--secrets-key-file", other.to_str().unwrap()],
        Some(other_text.trim()),
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("give the secrets key once"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_postgres_store_without_a_key_is_refused() {
    let Some(_) = test_postgres() else {
        eprintln!(
            "THINGCALL_TEST_POSTGRES is not set: a PostgreSQL store without a key is not tested"
        );
        return;
    };
    let dir = temp_dir("pgnokey");
    let store = store_args(&dir);
    let (code, stderr) = serve_refused(&dir, &["--store", &store[1]], None);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("needs a secrets key"), "{stderr}");
    assert!(stderr.contains("thingcall store new-key"), "{stderr}");
    assert!(!dir.join("data/secrets.key").exists(), "no key is made");
    finish(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}
