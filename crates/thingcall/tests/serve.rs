//! `thingcall serve` as a process: ready file, port errors, graceful
//! shutdown on SIGTERM, and no acknowledged write lost to `kill -9`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code
#![allow(clippy::zombie_processes)] // children are waited for by the tests that start them

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thingcall_core::{Clock, UnixMillis};
use thingcall_server::SystemClock;
use thingcall_sign::v1;
use thingcall_wire::form::encode_pairs;

mod common;

use common::{ID, SECRET, demo_product, finish, start, temp_dir};

fn call(http: &str, action: &str, extra: &[(&str, &str)]) -> serde_json::Value {
    use std::io::{Read, Write};
    let now = SystemClock.now();
    let nonce = format!("n{}-{}", now.get(), rand());
    let mut params: Vec<(String, String)> = [
        ("Action", action),
        ("Version", "2018-01-20"),
        ("Format", "JSON"),
        ("AccessKeyId", ID),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", &nonce),
        (
            "Timestamp",
            &UnixMillis::new(now.get()).to_iso8601_seconds(),
        ),
    ]
    .iter()
    .chain(extra.iter())
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let sig = v1::sign("GET", &params, SECRET);
    params.push(("Signature".into(), sig));
    let query = encode_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut s = std::net::TcpStream::connect(http).unwrap();
    write!(
        s,
        "GET /?{query} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {out}"))
}

/// Runs `thingcall serve ARGS --data-dir DIR/data` expecting it to stop on
/// its own (a start-up error), and returns what it printed.
fn serve_once(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_thingcall"))
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .unwrap()
}

fn rand() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[cfg(unix)]
fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn nothing_acknowledged_is_lost_to_kill_9() {
    let dir = temp_dir("kill9");
    let mut s = start(&dir, &["--demo"]);
    let created = call(
        &s.http,
        "CreateProduct",
        &[
            ("ProductName", "Durable_1"),
            ("NodeType", "0"),
            ("AliyunCommodityCode", "iothub_senior"),
            ("DataFormat", "1"),
        ],
    );
    assert_eq!(created["Success"], true, "{created}");
    let pk = created["ProductKey"].as_str().unwrap().to_owned();
    let mut iot_ids = Vec::new();
    for i in 0..20 {
        let r = call(
            &s.http,
            "RegisterDevice",
            &[("ProductKey", &pk), ("DeviceName", &format!("durable-{i}"))],
        );
        assert_eq!(r["Success"], true, "{r}");
        iot_ids.push(r["Data"]["IotId"].as_str().unwrap().to_owned());
    }
    // Invocations are acknowledged only after they are recorded.
    let demo_pk = demo_product(&mut s.child);
    // Async calls (recorded before the answer) and sync calls (recorded
    // with the device's reply before the answer), then SIGKILL at once:
    // the records are then only in the journal, not yet in SQLite.
    let mut message_ids = Vec::new();
    let mut sync_ids = Vec::new();
    for i in 0..20 {
        let (identifier, args) = if i % 2 == 0 {
            ("Reboot", "{}")
        } else {
            ("Calibrate", r#"{"Offset":1.5}"#)
        };
        let r = call(
            &s.http,
            "InvokeThingService",
            &[
                ("ProductKey", &demo_pk),
                ("DeviceName", "demo-device-1"),
                ("Identifier", identifier),
                ("Args", args),
            ],
        );
        if r["Success"] == true {
            let id = r["Data"]["MessageId"].as_str().unwrap().to_owned();
            if identifier == "Calibrate" {
                sync_ids.push(id.clone());
            }
            message_ids.push(id);
        } else {
            // The demo device may not have connected yet.
            assert!(
                r["Code"] == "iot.device.InactiveDevice"
                    || r["Code"] == "iot.messagebroker.OFFLINE",
                "{r}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(!sync_ids.is_empty());
    assert!(!message_ids.is_empty());
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();

    let s = start(&dir, &[]);
    for id in &iot_ids {
        let r = call(&s.http, "QueryDeviceDetail", &[("IotId", id)]);
        assert_eq!(r["Success"], true, "{id} lost: {r}");
    }
    let demo_iot = call(
        &s.http,
        "QueryDeviceDetail",
        &[("ProductKey", &demo_pk), ("DeviceName", "demo-device-1")],
    );
    let demo_iot = demo_iot["Data"]["IotId"].as_str().unwrap().to_owned();
    let records = call(
        &s.http,
        "QueryDeviceServiceData",
        &[
            ("IotId", &demo_iot),
            ("StartTime", "0"),
            ("EndTime", "9999999999999"),
            ("PageSize", "50"),
        ],
    );
    let recorded = records["Data"]["List"]["ServiceInfo"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(
        recorded >= message_ids.len(),
        "{recorded} records for {} acknowledged calls",
        message_ids.len()
    );
    // Each sync call's record holds the device's reply, which names it.
    let outputs: Vec<&str> = records["Data"]["List"]["ServiceInfo"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["OutputData"].as_str())
        .collect();
    for id in &sync_ids {
        let needle = format!("\"id\":\"{id}\"");
        assert!(
            outputs.iter().any(|o| o.contains(&needle)),
            "sync call {id} lost its record: {outputs:?}"
        );
    }
    let mut child = s.child;
    let _ = child.kill();
    let _ = child.wait();
    finish(&dir);
}

#[cfg(unix)]
#[test]
fn sigterm_finishes_in_flight_calls_and_exits_0() {
    let dir = temp_dir("term");
    let mut s = start(&dir, &["--demo", "--sync-timeout", "3s"]);
    let demo_pk = demo_product(&mut s.child);
    // Wait for the in-process demo device.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = call(
            &s.http,
            "GetDeviceStatus",
            &[("ProductKey", &demo_pk), ("DeviceName", "demo-device-1")],
        );
        if r["Data"]["Status"] == "ONLINE" {
            break;
        }
        assert!(Instant::now() < deadline, "{r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let http = s.http.clone();
    let pk = demo_pk.clone();
    let in_flight = std::thread::spawn(move || {
        call(
            &http,
            "InvokeThingService",
            &[
                ("ProductKey", &pk),
                ("DeviceName", "demo-device-1"),
                ("Identifier", "Calibrate"),
                ("Args", "{}"),
            ],
        )
    });
    std::thread::sleep(Duration::from_millis(1));
    signal(&s.child, "-TERM");
    let answer = in_flight.join().unwrap();
    assert!(
        answer["RequestId"].is_string(),
        "the in-flight call got an answer: {answer}"
    );
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let _ = s.mqtt;
    finish(&dir);
}

#[test]
fn a_taken_port_names_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let dir = temp_dir("port");
    for (flag, args) in [
        (
            "--http",
            vec!["--http", port.as_str(), "--mqtt", "127.0.0.1:0"],
        ),
        (
            "--mqtt",
            vec!["--http", "127.0.0.1:0", "--mqtt", port.as_str()],
        ),
    ] {
        let out = serve_once(&dir, &args);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect::<Vec<_>>();
        assert_eq!(last.len(), 1, "{stderr}");
        assert!(
            last[0].contains(flag) && last[0].contains("already in use"),
            "{stderr}"
        );
        // Every listener is bound before anything is written: the failed
        // start left no store (and no AccessKey shown once and lost).
        assert!(
            !dir.join("data").exists(),
            "a start that failed on {flag} wrote the data directory"
        );
    }
}

/// Reads a child's standard output until a line contains `until`; returns
/// the lines so far. The rest is read on (and dropped) by a thread.
fn lines_until(child: &mut Child, until: &str) -> Vec<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line with {until:?} in: {seen:#?}"));
        let done = line.contains(until);
        seen.push(line);
        if done {
            std::thread::spawn(move || rx.iter().for_each(drop));
            return seen;
        }
    }
}

/// Runs the `curl -s 'http://...'` line the demo printed, as curl would.
fn run_curl_line(line: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let url = line
        .trim()
        .strip_prefix("curl -s '")
        .and_then(|r| r.strip_suffix('\''))
        .unwrap_or_else(|| panic!("not a curl line: {line}"));
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {out}"))
}

/// A newcomer's first two starts on a machine where the default ports are
/// taken (here by the test; on CI, 1883 is Mosquitto's): `serve --demo`
/// with no address flags moves to free ports and says so, and every start,
/// not only the first, prints the AccessKey and a signed example that
/// works.
#[test]
fn a_demo_on_taken_default_ports_starts_and_prints_a_working_example_each_time() {
    // Holding the ports, or finding them held by another process: either
    // way they are taken while the demo starts.
    let _held: Vec<std::net::TcpListener> = ["127.0.0.1:8080", "127.0.0.1:1883"]
        .iter()
        .filter_map(|a| std::net::TcpListener::bind(a).ok())
        .collect();
    let dir = temp_dir("newcomer");
    let start_demo = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_thingcall"))
            .args(["serve", "--demo", "--data-dir"])
            .arg(dir.join("data"))
            .env_remove("THINGCALL_ACCESS_KEY_ID")
            .env_remove("THINGCALL_ACCESS_KEY_SECRET")
            .env_remove("THINGCALL_STORE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = lines_until(&mut child, "curl -s");
        (child, lines)
    };
    let mut secrets = Vec::new();
    for round in 1..=2 {
        let (mut child, lines) = start_demo();
        let text = lines.join("\n");
        for port in [8080, 1883] {
            assert!(
                text.contains(&format!("(port {port} is taken: a free one instead)")),
                "round {round}: the banner does not say {port} moved:\n{text}"
            );
        }
        let secret = lines
            .iter()
            .find_map(|l| l.trim().strip_prefix("AccessKeySecret "))
            .unwrap_or_else(|| panic!("round {round}: no AccessKey shown:\n{text}"))
            .trim()
            .to_owned();
        secrets.push(secret);
        let reply = run_curl_line(lines.last().unwrap());
        assert_eq!(reply["Success"], true, "round {round}: {reply}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert_eq!(
        secrets[0], secrets[1],
        "the stored key is the one shown first"
    );
}

/// Every command ends quietly, with status 0, when its reader went away
/// (`thingcall device status ... | head -1`), where `println!` panicked
/// with a stack trace.
#[test]
fn commands_end_quietly_on_a_closed_pipe() {
    let dir = temp_dir("pipe");
    let mut s = start(&dir, &["--demo"]);
    let pk = demo_product(&mut s.child);
    let endpoint = format!("--endpoint=http://{}", s.http);
    let runs: Vec<Vec<&str>> = vec![
        vec![
            "device",
            "status",
            &endpoint,
            "--product-key",
            &pk,
            "--device-name",
            "demo-device-1",
        ],
        vec![
            "device",
            "detail",
            &endpoint,
            "--product-key",
            &pk,
            "--device-name",
            "demo-device-1",
            "--output",
            "json",
        ],
        vec![
            "device",
            "credentials",
            "--product-key",
            "a1B2c3D4e5F",
            "--device-name",
            "dev1",
            "--device-secret",
            "s",
        ],
        vec![
            "sign",
            "v1",
            "--method",
            "GET",
            "--secret",
            "s",
            "--query",
            "Action=X",
            "--explain",
        ],
    ];
    for args in runs {
        // A pipe whose reading end is closed before the command starts:
        // its first write fails, whatever the timing.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_thingcall"))
            .args(&args)
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", common::ID)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", common::SECRET)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "{args:?}: {:?}, stderr: {stderr}",
            out.status
        );
    }
    let mut child = s.child;
    let _ = child.kill();
    let _ = child.wait();
    finish(&dir);
}

#[test]
fn a_fresh_store_generates_and_prints_a_key_once() {
    let dir = temp_dir("keys");
    let run = || {
        let ready = dir.join("r.json");
        let _ = std::fs::remove_file(&ready);
        let mut child = Command::new(env!("CARGO_BIN_EXE_thingcall"))
            .args([
                "serve",
                "--http",
                "127.0.0.1:0",
                "--mqtt",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.join("data"))
            .arg("--ready-file")
            .arg(&ready)
            .env_remove("THINGCALL_ACCESS_KEY_ID")
            .env_remove("THINGCALL_ACCESS_KEY_SECRET")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while !ready.exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run();
    assert!(first.contains("AccessKeyId     LTAI"), "{first}");
    assert!(first.contains("AccessKeySecret "));
    let second = run();
    assert!(!second.contains("AccessKeySecret"), "{second}");
}

#[test]
fn a_second_server_on_one_data_dir_is_refused() {
    let dir = temp_dir("twice");
    // The data directory's lock guards the SQLite store and its journal.
    let s = start(&dir, &["--store", ""]);
    let out = serve_once(&dir, &["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another thingcall process is using"),
        "{stderr}"
    );
    // The first one still serves.
    let r = call(&s.http, "QueryProduct", &[("ProductKey", "a1NoSuchPk1")]);
    assert_eq!(r["Code"], "iot.prod.NotExistedProduct", "{r}");
    let mut child = s.child;
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_unreachable_database_is_one_line_naming_the_host_and_exit_1() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = temp_dir("nodb");
    let url = format!("postgres://someone:pa55w0rd-secret@127.0.0.1:{port}/db");
    let out = serve_once(
        &dir,
        &[
            "--http",
            "127.0.0.1:0",
            "--mqtt",
            "127.0.0.1:0",
            "--store",
            &url,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(&format!("127.0.0.1:{port}")), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stderr.contains("pa55w0rd") && !stdout.contains("pa55w0rd"),
        "the password leaked: {stderr}{stdout}"
    );
}

/// `thingcall store copy` moves a SQLite deployment into PostgreSQL:
/// devices, models and records come back from a server on PostgreSQL; a
/// second copy into the now non-empty target is refused unless --force.
#[test]
fn store_copy_moves_a_deployment_into_postgres() {
    let Some(server) = common::test_postgres() else {
        eprintln!("THINGCALL_TEST_POSTGRES is not set: store copy is not tested");
        return;
    };
    let dir = temp_dir("copy");
    let s = start(&dir, &["--store", "", "--demo"]);
    let created = call(
        &s.http,
        "CreateProduct",
        &[
            ("ProductName", "Moving_1"),
            ("NodeType", "0"),
            ("AliyunCommodityCode", "iothub_senior"),
            ("DataFormat", "1"),
        ],
    );
    let pk = created["ProductKey"].as_str().unwrap().to_owned();
    let dev = call(
        &s.http,
        "RegisterDevice",
        &[("ProductKey", &pk), ("DeviceName", "mover")],
    );
    let iot_id = dev["Data"]["IotId"].as_str().unwrap().to_owned();
    call(&s.http, "DisableThing", &[("IotId", &iot_id)]);
    // A record, from the demo device once it is online.
    let mut s = s;
    let demo_pk = demo_product(&mut s.child);
    let demo_dev = [
        ("ProductKey", demo_pk.as_str()),
        ("DeviceName", "demo-device-1"),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&s.http, "GetDeviceStatus", &demo_dev)["Data"]["Status"] != "ONLINE" {
        assert!(Instant::now() < deadline, "the demo device never connected");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut invoke = demo_dev.to_vec();
    invoke.extend([("Identifier", "Reboot"), ("Args", "{}")]);
    let message_id = call(&s.http, "InvokeThingService", &invoke)["Data"]["MessageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut child = s.child;
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());

    let name = common::database_name(&dir);
    let target_args = common::store_args(&dir);
    let target = &target_args[1];
    let copy = |force: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_thingcall"));
        c.args(["store", "copy", "--from"])
            .arg(dir.join("data"))
            .args(["--to", target]);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let first = copy(false);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout.contains("2 products, 2 devices and 1 records"),
        "{stdout}"
    );
    let again = copy(false);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(copy(true).status.success());

    let s = start(&dir, &["--store", target]);
    let detail = call(&s.http, "QueryDeviceDetail", &[("IotId", &iot_id)]);
    assert_eq!(detail["Data"]["Status"], "DISABLE", "{detail}");
    let tsl = call(&s.http, "GetThingModelTslPublished", &[("ProductKey", &pk)]);
    assert_eq!(tsl["Success"], true, "{tsl}");
    let demo_iot = call(&s.http, "QueryDeviceDetail", &demo_dev)["Data"]["IotId"]
        .as_str()
        .unwrap()
        .to_owned();
    let records = call(
        &s.http,
        "QueryDeviceServiceData",
        &[
            ("IotId", &demo_iot),
            ("StartTime", "0"),
            ("EndTime", "9999999999999"),
        ],
    );
    let listed = records["Data"]["List"]["ServiceInfo"].to_string();
    assert!(
        listed.contains("Reboot"),
        "the record of {message_id} was not copied: {records}"
    );
    let mut child = s.child;
    let _ = child.kill();
    let _ = child.wait();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(server.drop_database(&name)).unwrap();
}

/// A server whose standard output closes (piped into `head`, a supervisor
/// gone) keeps serving: the banner's later lines are dropped, not fatal.
#[test]
fn a_closed_stdout_does_not_stop_the_server() {
    let dir = temp_dir("stdout");
    let mut s = start(&dir, &["--demo"]);
    drop(s.child.stdout.take());
    // The demo's own lines come after the ready file: give them time to
    // meet the closed pipe.
    std::thread::sleep(Duration::from_millis(300));
    let r = call(&s.http, "QueryProduct", &[("ProductKey", "a1NoSuchPk1")]);
    assert_eq!(r["Code"], "iot.prod.NotExistedProduct", "{r}");
    assert!(s.child.try_wait().unwrap().is_none(), "the server exited");
    let mut child = s.child;
    let _ = child.kill();
    let _ = child.wait();
    finish(&dir);
}
