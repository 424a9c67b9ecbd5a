//! Many connected devices spread over a two-node cluster: `thingcall serve`
//! nodes A and B (processes) on PostgreSQL and NATS, half the devices
//! simulated on each (one `thingcall device simulate` process per node).
//! Reports how long the devices took to connect, each node's memory and
//! descriptors, whether `GetDeviceStatus` tells the truth for a sample
//! asked through the *other* node, sync calls across nodes, and how soon
//! the other node sees a node's devices go offline.
//!
//! `cargo bench -p thingcall --bench cluster_scale -- --devices 20000`
//! (PostgreSQL: `THINGCALL_BENCH_POSTGRES`, by default the local server;
//! NATS: `THINGCALL_BENCH_NATS`, by default `nats://127.0.0.1:4222`).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    clippy::print_stdout,
    clippy::zombie_processes
)] // bench code; children are killed and waited for by their owners

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thingcall_core::{Clock, UnixMillis};
use thingcall_server::{PostgresUrl, SystemClock};
use thingcall_sign::v1;
use thingcall_wire::form::encode_pairs;

const ID: &str = "scaleid";
const SECRET: &str = "scalesecret";

fn thingcall() -> Command {
    Command::new(env!("CARGO_BIN_EXE_thingcall"))
}

struct Node {
    child: Child,
    http: String,
    mqtt: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(dir: &Path, id: &str, store: &str, nats: &str) -> Node {
    let ready = dir.join(format!("{id}.ready"));
    let child = thingcall()
        .args(["serve", "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join(id))
        .args(["--store", store, "--cluster", nats, "--node-id", id])
        .args(["--access-key-id", ID, "--access-key-secret", SECRET])
        .arg("--ready-file")
        .arg(&ready)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{id}.log"))).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            return Node {
                child,
                http: v["http"].as_str().unwrap().to_owned(),
                mqtt: v["mqtt"].as_str().unwrap().to_owned(),
            };
        }
        assert!(Instant::now() < deadline, "node {id} never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// A v1-signed GET; the JSON answer.
async fn api(http: &str, action: &str, extra: &[(&str, &str)]) -> serde_json::Value {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    static N: AtomicU64 = AtomicU64::new(0);
    let now = SystemClock.now();
    let nonce = format!("s{}-{}", now.get(), N.fetch_add(1, Ordering::Relaxed));
    let timestamp = UnixMillis::new(now.get()).to_iso8601_seconds();
    let mut params: Vec<(String, String)> = [
        ("Action", action),
        ("Version", "2018-01-20"),
        ("Format", "JSON"),
        ("AccessKeyId", ID),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", nonce.as_str()),
        ("Timestamp", timestamp.as_str()),
    ]
    .iter()
    .chain(extra.iter())
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let sig = v1::sign("GET", &params, SECRET);
    params.push(("Signature".into(), sig));
    let query = encode_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    s.write_all(
        format!("GET /?{query} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {out}"))
}

fn online(http: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(http).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .find(|l| l.starts_with("thingcall_devices_online{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn register(dir: &Path, node: &Node, pk: &str, prefix: &str, count: usize) -> PathBuf {
    let path = dir.join(format!("{prefix}.json"));
    let out = thingcall()
        .args([
            "device",
            "register",
            "--endpoint",
            &format!("http://{}", node.http),
        ])
        .args([
            "--access-key-id",
            ID,
            "--access-key-secret",
            SECRET,
            "--output",
            "json",
        ])
        .args([
            "--product-key",
            pk,
            "--device-name",
            prefix,
            "--count",
            &count.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

fn simulate(node: &Node, pk: &str, secrets: &Path, model: &Path) -> Child {
    thingcall()
        .args([
            "device",
            "simulate",
            "--mqtt",
            &node.mqtt,
            "--product-key",
            pk,
        ])
        .arg("--secrets-file")
        .arg(secrets)
        .arg("--tsl")
        .arg(model)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let quick = args.iter().any(|a| a == "--test");
    let devices = if quick {
        200
    } else {
        value("--devices", 20_000)
    };
    let sample = value("--sample", 500).min(devices);
    let half = devices / 2;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let server = PostgresUrl::parse(
            &std::env::var("THINGCALL_BENCH_POSTGRES")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
        )
        .unwrap();
        let nats = std::env::var("THINGCALL_BENCH_NATS")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
        let name = format!("thingcall_bench_scale_{}", std::process::id());
        server.drop_database(&name).await.unwrap();
        server.create_database(&name).await.unwrap();
        let store = server.with_database(&name).to_string();
        let dir = std::env::temp_dir().join(format!("thingcall-bench-scale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../thingcall-server/demo/model.json");

        let a = start_node(&dir, "scale-a", &store, &nats);
        let b = start_node(&dir, "scale-b", &store, &nats);
        let created = api(&a.http, "CreateProduct", &[("ProductName", "Scale"), ("NodeType", "0"), ("AliyunCommodityCode", "iothub_senior"), ("DataFormat", "1")]).await;
        let pk = created["ProductKey"].as_str().unwrap().to_owned();
        let tsl = std::fs::read_to_string(&model).unwrap();
        assert_eq!(api(&a.http, "ImportThingModelTsl", &[("ProductKey", &pk), ("TslStr", &tsl)]).await["Success"], true);
        assert_eq!(api(&a.http, "PublishThingModel", &[("ProductKey", &pk), ("ModelVersion", "v1")]).await["Success"], true);

        let started = Instant::now();
        let on_a = register(&dir, &a, &pk, "on-a", half);
        let on_b = register(&dir, &b, &pk, "on-b", devices - half);
        println!("registered {devices} devices through the API in {:.1} s", started.elapsed().as_secs_f64());

        let (rss_a0, rss_b0) = (proc_status(a.child.id(), "VmRSS:"), proc_status(b.child.id(), "VmRSS:"));
        let started = Instant::now();
        let sim_a = simulate(&a, &pk, &on_a, &model);
        let mut sim_b = simulate(&b, &pk, &on_b, &model);
        let deadline = Instant::now() + Duration::from_secs(300);
        while online(&a.http) < half as u64 || online(&b.http) < (devices - half) as u64 {
            assert!(Instant::now() < deadline, "the devices never all connected: A {} B {}", online(&a.http), online(&b.http));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("{devices} devices connected ({half} on A, {} on B) in {:.1} s", devices - half, started.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(2)).await;
        for (label, node, before) in [("A", &a, rss_a0), ("B", &b, rss_b0)] {
            let pid = node.child.id();
            let rss = proc_status(pid, "VmRSS:");
            println!(
                "node {label}: RSS {} MiB ({} MiB before the devices: {:.1} KiB per connected device), {} descriptors",
                rss / 1024,
                before / 1024,
                (rss.saturating_sub(before)) as f64 / (devices / 2) as f64,
                fds(pid)
            );
        }

        // GetDeviceStatus through the node that does not hold the device.
        let step = (half / (sample / 2).max(1)).max(1);
        let mut asked = 0;
        let mut right = 0;
        let timer = Instant::now();
        for i in (1..=half).step_by(step).take(sample / 2) {
            for (prefix, other) in [("on-a", &b), ("on-b", &a)] {
                let r = api(&other.http, "GetDeviceStatus", &[("ProductKey", &pk), ("DeviceName", &format!("{prefix}-{i}"))]).await;
                asked += 1;
                if r["Data"]["Status"] == "ONLINE" {
                    right += 1;
                }
            }
        }
        println!("GetDeviceStatus through the other node: {right}/{asked} ONLINE as they are ({:.2} ms per call)", timer.elapsed().as_secs_f64() * 1e3 / asked as f64);

        // Sync calls across nodes, one at a time.
        let mut lat = Vec::new();
        for i in (1..=half).step_by(step).take(sample / 2) {
            let t = Instant::now();
            let r = api(&a.http, "InvokeThingService", &[("ProductKey", &pk), ("DeviceName", &format!("on-b-{i}")), ("Identifier", "Calibrate"), ("Args", r#"{"Offset":1.5}"#)]).await;
            lat.push(t.elapsed());
            assert_eq!(r["Success"], true, "{r}");
        }
        lat.sort_unstable();
        println!(
            "{} sync calls through A to devices on B: p50 {:.2} ms, p99 {:.2} ms",
            lat.len(),
            lat[lat.len() / 2].as_secs_f64() * 1e3,
            lat[(lat.len() * 99 / 100).min(lat.len() - 1)].as_secs_f64() * 1e3
        );

        // B's devices all go away: how soon A shows them offline.
        let _ = sim_b.kill();
        let _ = sim_b.wait();
        let gone = Instant::now();
        let mut left = sample / 2;
        while left > 0 {
            left = 0;
            for i in (1..=half).step_by(step).take(sample / 2) {
                let r = api(&a.http, "GetDeviceStatus", &[("ProductKey", &pk), ("DeviceName", &format!("on-b-{i}"))]).await;
                if r["Data"]["Status"] != "OFFLINE" {
                    left += 1;
                }
            }
            assert!(gone.elapsed() < Duration::from_secs(60), "{left} still ONLINE on A");
        }
        println!(
            "B's {} devices disconnected: all {} of the sample OFFLINE on A after {:.2} s",
            devices - half,
            sample / 2,
            gone.elapsed().as_secs_f64()
        );
        let mut sim_a = sim_a;
        let _ = sim_a.kill();
        let _ = sim_a.wait();
        drop(a);
        drop(b);
        server.drop_database(&name).await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    });
}
