//! End-to-end load: signed v1 `InvokeThingService` requests over HTTP
//! keep-alive against simulated devices on TCP, sync and async, reported as
//! throughput and p50/p99 latency, next to the gateway's raw request→reply
//! baseline measured in the same run.
//!
//! `cargo bench -p thingcall-server --bench e2e` (add `-- --seconds N`,
//! `--devices N`, `--connections N`).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)] // bench code

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thingcall_core::{
    AlinkRequest, Clock, DeviceName, Identifier, MessageId, ProductKey, Qos, Secret, UnixMillis,
};
use thingcall_gateway::simulator::{self, SimulatorConfig};
use thingcall_gateway::{Gateway, GatewayConfig, MapRegistry};
use thingcall_server::{Server, ServerConfig, ServerOptions, SystemClock};
use thingcall_sign::v1;
use thingcall_transport::{Delivery, DeliveryKind, DeviceKey, RrpcForm, Transport, TransportEvent};
use thingcall_tsl::CompiledModel;
use thingcall_wire::form::encode_pairs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// The allocator the `thingcall` binary uses, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MODEL: &str = include_str!("../demo/model.json");
const KEY_ID: &str = "benchid";
const KEY_SECRET: &str = "benchsecret";

fn model() -> Arc<CompiledModel> {
    Arc::new(CompiledModel::compile(thingcall_tsl::check_str(MODEL).unwrap()).unwrap())
}

fn sim(server: &str, device: DeviceKey, secret: &str) -> SimulatorConfig {
    SimulatorConfig {
        seed: 1,
        ..SimulatorConfig::new(server, device, Secret::new(secret), model())
    }
}

struct Stats {
    calls: usize,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    /// Process CPU time (all threads, user + system) per call: steadier
    /// than throughput on a machine whose neighbours come and go.
    cpu_per_call: Duration,
}

/// The process's CPU time so far (Linux: `/proc/self/stat`, in the fixed
/// 100 Hz ticks the kernel reports there).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command name come the state (field 3) and the numbers;
    // utime and stime are fields 14 and 15 of the line.
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|f| f.parse().ok()).unwrap_or(0) };
    let ticks = field(14) + field(15);
    Duration::from_millis(ticks * 10)
}

/// Runs `phase` and sets the CPU time per call it used.
async fn measured(phase: impl std::future::Future<Output = Stats>) -> Stats {
    let before = cpu_time();
    let mut stats = phase.await;
    let used = cpu_time().saturating_sub(before);
    stats.cpu_per_call = used / u32::try_from(stats.calls.max(1)).unwrap_or(u32::MAX);
    stats
}

fn stats(mut lat: Vec<Duration>, elapsed: Duration) -> Stats {
    lat.sort_unstable();
    let pick = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Stats {
        calls: lat.len(),
        per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
        cpu_per_call: Duration::ZERO,
    }
}

fn print(label: &str, s: &Stats) {
    println!(
        "{label:<44} {:>9.0} calls/s {:>8} calls   p50 {:>8.3} ms   p99 {:>8.3} ms   cpu {:>6.1} us/call",
        s.per_sec,
        s.calls,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        s.cpu_per_call.as_secs_f64() * 1e6
    );
}

/// The gateway alone: an in-process requester and RRPC to simulated devices.
async fn raw_baseline(devices: usize, in_flight: usize, seconds: u64) -> Stats {
    let registry = Arc::new(MapRegistry::new());
    let keys: Vec<DeviceKey> = (0..devices)
        .map(|i| {
            DeviceKey::new(
                ProductKey::new("a1RawBench1").unwrap(),
                DeviceName::new(format!("raw-{i}")).unwrap(),
            )
        })
        .collect();
    for k in &keys {
        registry.insert(k.clone(), Secret::new("raw"));
    }
    let gw = Gateway::new(GatewayConfig::default(), registry, Arc::new(SystemClock));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let g = gw.clone();
    let mut s = stop_rx.clone();
    tokio::spawn(async move {
        g.serve(listener, async move {
            let _ = s.wait_for(|v| *v).await;
        })
        .await
    });
    let pending: Arc<Mutex<HashMap<MessageId, oneshot::Sender<()>>>> = Arc::default();
    let mut events = gw.subscribe();
    let p = Arc::clone(&pending);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let TransportEvent::Reply(r) = event
                && let Some(tx) = r.message_id.and_then(|id| p.lock().unwrap().remove(&id))
            {
                let _ = tx.send(());
            }
        }
    });
    let (calls, _keep) = tokio::sync::mpsc::unbounded_channel();
    for k in &keys {
        let (cfg, calls, mut s) = (sim(&addr, k.clone(), "raw"), calls.clone(), stop_rx.clone());
        tokio::spawn(async move {
            simulator::run(cfg, calls, async move {
                let _ = s.wait_for(|v| *v).await;
            })
            .await
        });
    }
    while gw.online_count() < devices {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let next = Arc::new(AtomicU64::new(1));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let identifier = Identifier::new("Calibrate").unwrap();
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..in_flight {
        let (gw, pending, next, identifier, keys) = (
            gw.clone(),
            Arc::clone(&pending),
            Arc::clone(&next),
            identifier.clone(),
            keys.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = w;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let id = MessageId::from_u64(next.fetch_add(1, Ordering::Relaxed));
                let (tx, rx) = oneshot::channel();
                pending.lock().unwrap().insert(id, tx);
                let payload =
                    AlinkRequest::for_service(id, &identifier, serde_json::json!({"Offset": 1.5}))
                        .to_vec();
                let kind = DeliveryKind::Rrpc {
                    identifier: identifier.clone(),
                    form: RrpcForm::Auto,
                };
                gw.deliver(Delivery {
                    device: keys[n % keys.len()].clone(),
                    message_id: id,
                    kind,
                    qos: Qos::AtMostOnce,
                    payload,
                })
                .await
                .unwrap();
                rx.await.unwrap();
                lat.push(t0.elapsed());
                n += in_flight;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    let _ = stop_tx.send(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stats(all, elapsed)
}

/// The HTTP floor: the same load generator (signed v1 GETs over keep-alive
/// connections) against a hyper server, configured as thingcall's, that
/// answers every request with a canned `InvokeThingService` body without
/// looking at it. No signature check, no device, no store: what the HTTP
/// leg alone costs on this machine.
async fn http_floor(connections: usize, seconds: u64) -> Stats {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioIo, TokioTimer};
    const BODY: &str = r#"{"RequestId":"7E1DE5CF-21A4-4C8B-9E45-0E1D8C1E3E44","Success":true,"Data":{"Result":"{\"Result\":1}","MessageId":"1700000000000000001"}}"#;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let service = service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(
                    hyper::Response::builder()
                        .header("content-type", "application/json;charset=utf-8")
                        .body(http_body_util::Full::new(bytes::Bytes::from_static(
                            BODY.as_bytes(),
                        )))
                        .unwrap(),
                )
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service);
            tokio::spawn(conn);
        }
    });
    let stats = measured(http_load(
        &addr,
        "a1FloorBnch",
        16,
        "Calibrate",
        connections,
        seconds,
        None,
    ))
    .await;
    server.abort();
    stats
}

/// A keep-alive HTTP/1.1 connection that sends signed v1 GETs.
struct Http {
    stream: tokio::net::TcpStream,
    host: String,
    buf: Vec<u8>,
}

static NONCE: AtomicU64 = AtomicU64::new(0);

impl Http {
    async fn connect(addr: &str) -> Http {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Http {
            stream,
            host: addr.to_owned(),
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends one signed GET; returns whether the answer says `Success`.
    async fn call(&mut self, extra: &[(&str, &str)]) -> bool {
        let query = signed_form("GET", "InvokeThingService", extra);
        let req = format!("GET /?{query} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.stream.write_all(req.as_bytes()).await.unwrap();
        // Read one response (Content-Length framed), straight into the
        // connection's buffer: the generator's own cost is shared by every
        // phase, so it is kept small.
        self.buf.clear();
        loop {
            let n = self.stream.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "server closed the connection");
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let len = content_length(&self.buf[..end]);
                if self.buf.len() >= end + 4 + len {
                    let body = &self.buf[end + 4..end + 4 + len];
                    return find(body, b"\"Success\":true").is_some();
                }
            }
        }
    }

    /// The last response's bytes, for a failure message.
    fn last(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// The `Content-Length` of a response head (0 when absent).
fn content_length(head: &[u8]) -> usize {
    head.split(|&b| b == b'\n')
        .find_map(|line| {
            let name = b"content-length:";
            (line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name))
                .then(|| &line[name.len()..])
        })
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Runs `connections` clients for `seconds`; `rate` caps total calls/s.
async fn http_load(
    addr: &str,
    pk: &str,
    devices: usize,
    identifier: &'static str,
    connections: usize,
    seconds: u64,
    rate: Option<f64>,
) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for c in 0..connections {
        let (addr, pk) = (addr.to_owned(), pk.to_owned());
        workers.push(tokio::spawn(async move {
            let mut http = Http::connect(&addr).await;
            let mut lat = Vec::new();
            let mut n = c;
            let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
            let mut next_at = Instant::now();
            while Instant::now() < deadline {
                if let Some(i) = interval {
                    tokio::time::sleep_until(next_at.into()).await;
                    next_at += i;
                }
                let dn = format!("bench-{}", n % devices);
                let args = if identifier == "Calibrate" {
                    r#"{"Offset":1.5}"#
                } else {
                    r#"{"Delay":1}"#
                };
                let t0 = Instant::now();
                let success = http
                    .call(&[
                        ("ProductKey", &pk),
                        ("DeviceName", &dn),
                        ("Identifier", identifier),
                        ("Args", args),
                    ])
                    .await;
                lat.push(t0.elapsed());
                assert!(success, "{identifier}: {}", http.last());
                n += connections;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    stats(all, started.elapsed())
}

async fn e2e(devices: usize, connections: usize, seconds: u64) -> (Stats, Stats, Stats) {
    let dir = std::env::temp_dir().join(format!(
        "thingcall-bench-{}-{}",
        std::process::id(),
        SystemClock.now().get()
    ));
    let options = ServerOptions {
        config: ServerConfig::default(),
        gateway: GatewayConfig::default(),
        data_dir: dir.clone(),
        access_key: Some((KEY_ID.to_owned(), Secret::new(KEY_SECRET))),
    };
    let server = Server::open(options, Arc::new(SystemClock)).await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mqtt = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (h, m) = (
        http.local_addr().unwrap().to_string(),
        mqtt.local_addr().unwrap().to_string(),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut s = stop_rx.clone();
    let served = tokio::spawn(server.serve(http, mqtt, async move {
        let _ = s.wait_for(|v| *v).await;
    }));

    // Provision through the API itself.
    let provision = |action: &'static str, extra: Vec<(String, String)>| {
        let h = h.clone();
        async move { raw_call(&h, action, &extra).await }
    };
    let created = provision(
        "CreateProduct",
        vec![
            ("ProductName".into(), "Bench_1".into()),
            ("NodeType".into(), "0".into()),
            ("AliyunCommodityCode".into(), "iothub_senior".into()),
            ("DataFormat".into(), "1".into()),
        ],
    )
    .await;
    let pk = created["ProductKey"].as_str().unwrap().to_owned();
    provision(
        "ImportThingModelTsl",
        vec![
            ("ProductKey".into(), pk.clone()),
            ("TslStr".into(), MODEL.into()),
        ],
    )
    .await;
    provision("PublishThingModel", vec![("ProductKey".into(), pk.clone())]).await;
    let (calls, _keep) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..devices {
        let r = provision(
            "RegisterDevice",
            vec![
                ("ProductKey".into(), pk.clone()),
                ("DeviceName".into(), format!("bench-{i}")),
            ],
        )
        .await;
        let secret = r["Data"]["DeviceSecret"].as_str().unwrap().to_owned();
        let key = DeviceKey::new(
            ProductKey::new(pk.as_str()).unwrap(),
            DeviceName::new(format!("bench-{i}")).unwrap(),
        );
        let (cfg, calls, mut s) = (sim(&m, key, &secret), calls.clone(), stop_rx.clone());
        tokio::spawn(async move {
            simulator::run(cfg, calls, async move {
                let _ = s.wait_for(|v| *v).await;
            })
            .await
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let phase = |identifier: &'static str, rate: Option<f64>| {
        measured(http_load(
            &h,
            &pk,
            devices,
            identifier,
            connections,
            seconds,
            rate,
        ))
    };
    let sync = phase("Calibrate", None).await;
    let asyn = phase("Reboot", None).await;
    // Async calls return before the devices answer: let their replies drain.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let half = phase("Calibrate", Some(sync.per_sec / 2.0)).await;
    let _ = stop_tx.send(true);
    let _ = served.await;
    let _ = std::fs::remove_dir_all(dir);
    (sync, asyn, half)
}

/// A signed v1 request's form: the common parameters with a fresh nonce
/// and timestamp, then `extra`, then the signature.
fn signed_form(method: &str, action: &str, extra: &[(&str, &str)]) -> String {
    let nonce = NONCE.fetch_add(1, Ordering::Relaxed).to_string();
    let ts = UnixMillis::new(SystemClock.now().get()).to_iso8601_seconds();
    let mut params: Vec<(&str, &str)> = vec![
        ("Action", action),
        ("Version", "2018-01-20"),
        ("Format", "JSON"),
        ("AccessKeyId", KEY_ID),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", &nonce),
        ("Timestamp", &ts),
    ];
    params.extend_from_slice(extra);
    let sig = v1::sign(method, &params, KEY_SECRET);
    params.push(("Signature", &sig));
    encode_pairs(params.iter().copied())
}

async fn raw_call(addr: &str, action: &str, extra: &[(String, String)]) -> serde_json::Value {
    let extra: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let body = signed_form("POST", action, &extra);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let json = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["Success"], true, "{action}: {v}");
    v
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str, default: u64| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let quick = args.iter().any(|a| a == "--test");
    let seconds = if quick { 1 } else { value("--seconds", 5) };
    let devices = value("--devices", 16) as usize;
    let connections = value("--connections", 32) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("machine: {} cores; {devices} simulated devices on loopback TCP; {connections} HTTP keep-alive connections; {seconds} s per run", std::thread::available_parallelism().map_or(0, |n| n.get()));
        let raw1 = measured(raw_baseline(devices, 1, seconds)).await;
        print("gateway raw RRPC, 1 in flight", &raw1);
        let raw = measured(raw_baseline(devices, connections, seconds)).await;
        print(&format!("gateway raw RRPC, {connections} in flight"), &raw);
        let floor = http_floor(connections, seconds).await;
        print(&format!("HTTP floor (canned answer), {connections} conns"), &floor);
        let (sync, asyn, half) = e2e(devices, connections, seconds).await;
        print("e2e InvokeThingService sync", &sync);
        print("e2e InvokeThingService async", &asyn);
        print("e2e sync at half the sync throughput", &half);
        println!("sync / raw baseline = {:.2}", sync.per_sec / raw.per_sec);
        // A sync call costs at least one HTTP exchange plus one RRPC round
        // trip; with both legs on the same two cores their costs add up.
        let bound = 1.0 / (1.0 / raw.per_sec + 1.0 / floor.per_sec);
        println!(
            "bound for one HTTP exchange + one RRPC round trip = {bound:.0} calls/s ({:.2} x raw); sync / bound = {:.2}",
            bound / raw.per_sec,
            sync.per_sec / bound
        );
    });
}
