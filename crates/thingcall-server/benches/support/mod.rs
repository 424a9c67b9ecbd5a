//! What the server's benchmarks share: the model and credentials, the
//! simulated devices' settings, a signed-request HTTP client, provisioning
//! through the API, and latency statistics.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)] // bench code; each bench uses part of this

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use thingcall_core::{Clock, Secret, UnixMillis};
use thingcall_gateway::simulator::SimulatorConfig;
use thingcall_server::SystemClock;
use thingcall_sign::v1;
use thingcall_transport::DeviceKey;
use thingcall_tsl::CompiledModel;
use thingcall_wire::form::encode_pairs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const MODEL: &str = include_str!("../../demo/model.json");
pub const KEY_ID: &str = "benchid";
pub const KEY_SECRET: &str = "benchsecret";

/// The number after `flag` on the command line, or `default`.
pub fn arg(args: &[String], flag: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn model() -> Arc<CompiledModel> {
    Arc::new(CompiledModel::compile(thingcall_tsl::check_str(MODEL).unwrap()).unwrap())
}

pub fn sim(server: &str, device: DeviceKey, secret: &str) -> SimulatorConfig {
    SimulatorConfig {
        seed: 1,
        ..SimulatorConfig::new(server, device, Secret::new(secret), model())
    }
}

pub struct Stats {
    pub calls: usize,
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Process CPU time (all threads, user + system) per call: steadier
    /// than throughput on a machine whose neighbours come and go.
    pub cpu_per_call: Duration,
}

/// The process's CPU time so far (Linux: `/proc/self/stat`, in the fixed
/// 100 Hz ticks the kernel reports there).
pub fn cpu_time() -> Duration {
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
pub async fn measured(phase: impl std::future::Future<Output = Stats>) -> Stats {
    let before = cpu_time();
    let mut stats = phase.await;
    let used = cpu_time().saturating_sub(before);
    stats.cpu_per_call = used / u32::try_from(stats.calls.max(1)).unwrap_or(u32::MAX);
    stats
}

pub fn stats(mut lat: Vec<Duration>, elapsed: Duration) -> Stats {
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

pub fn print(label: &str, s: &Stats) {
    println!(
        "{label:<44} {:>9.0} calls/s {:>8} calls   p50 {:>8.3} ms   p99 {:>8.3} ms   cpu {:>6.1} us/call",
        s.per_sec,
        s.calls,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        s.cpu_per_call.as_secs_f64() * 1e6
    );
}

/// A byte stream: TCP, or TLS over TCP.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// A keep-alive HTTP/1.1 connection that sends signed v1 GETs.
pub struct Http {
    stream: Box<dyn Stream>,
    host: String,
    buf: Vec<u8>,
}

static NONCE: AtomicU64 = AtomicU64::new(0);

impl Http {
    pub async fn connect(addr: &str) -> Http {
        Http::connect_over(addr, None).await
    }

    /// Over TLS when `tls` is given (the server name is the address's IP).
    pub async fn connect_over(addr: &str, tls: Option<&tokio_rustls::TlsConnector>) -> Http {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(c) => {
                let ip = addr.rsplit_once(':').unwrap().0.to_owned();
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(ip).unwrap();
                Box::new(c.connect(name, tcp).await.unwrap())
            }
        };
        Http {
            stream,
            host: addr.to_owned(),
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends one signed GET; returns whether the answer says `Success`.
    pub async fn call(&mut self, extra: &[(&str, &str)]) -> bool {
        self.try_call(extra).await.unwrap()
    }

    /// Like `call`, but a connection the server closed (an idle keep-alive
    /// connection times out after 30 s) is an error, not a panic.
    pub async fn try_call(&mut self, extra: &[(&str, &str)]) -> std::io::Result<bool> {
        let query = signed_form("GET", "InvokeThingService", extra);
        let req = format!("GET /?{query} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.stream.write_all(req.as_bytes()).await?;
        self.stream.flush().await?;
        // Read one response (Content-Length framed), straight into the
        // connection's buffer: the generator's own cost is shared by every
        // phase, so it is kept small.
        self.buf.clear();
        loop {
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let len = content_length(&self.buf[..end]);
                if self.buf.len() >= end + 4 + len {
                    let body = &self.buf[end + 4..end + 4 + len];
                    return Ok(find(body, b"\"Success\":true").is_some());
                }
            }
        }
    }

    /// The last response's bytes, for a failure message.
    pub fn last(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// The `Content-Length` of a response head (0 when absent).
pub fn content_length(head: &[u8]) -> usize {
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

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A signed v1 request's form: the common parameters with a fresh nonce
/// and timestamp, then `extra`, then the signature.
pub fn signed_form(method: &str, action: &str, extra: &[(&str, &str)]) -> String {
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

pub async fn raw_call(addr: &str, action: &str, extra: &[(String, String)]) -> serde_json::Value {
    let v = raw_answer(addr, action, extra).await;
    assert_eq!(v["Success"], true, "{action}: {v}");
    v
}

/// One signed call over its own connection; the answer, success or not.
pub async fn raw_answer(addr: &str, action: &str, extra: &[(String, String)]) -> serde_json::Value {
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
    serde_json::from_str(json).unwrap()
}

/// Creates a thing-model product through the API, with the demo model
/// imported and published; returns its ProductKey.
pub async fn provision_product(http: &str, name: &str) -> String {
    let pairs = |items: &[(&str, &str)]| -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let created = raw_call(
        http,
        "CreateProduct",
        &pairs(&[
            ("ProductName", name),
            ("NodeType", "0"),
            ("AliyunCommodityCode", "iothub_senior"),
            ("DataFormat", "1"),
        ]),
    )
    .await;
    let pk = created["ProductKey"].as_str().unwrap().to_owned();
    raw_call(
        http,
        "ImportThingModelTsl",
        &pairs(&[("ProductKey", &pk), ("TslStr", MODEL)]),
    )
    .await;
    raw_call(http, "PublishThingModel", &pairs(&[("ProductKey", &pk)])).await;
    pk
}

/// Registers a device through the API; returns its secret.
pub async fn register(http: &str, pk: &str, name: &str) -> String {
    let extra = [
        ("ProductKey".to_owned(), pk.to_owned()),
        ("DeviceName".to_owned(), name.to_owned()),
    ];
    let r = raw_call(http, "RegisterDevice", &extra).await;
    r["Data"]["DeviceSecret"].as_str().unwrap().to_owned()
}

/// Runs `connections` clients for `seconds`, each calling `identifier` on
/// devices `{prefix}0` .. `{prefix}{devices - 1}` in turn; `rate` caps the
/// total calls/s.
#[allow(clippy::too_many_arguments)] // one load's settings, each once
pub async fn http_load(
    addr: &str,
    pk: &str,
    prefix: &str,
    devices: usize,
    identifier: &'static str,
    connections: usize,
    seconds: u64,
    rate: Option<f64>,
) -> Stats {
    http_load_over(
        addr,
        None,
        pk,
        prefix,
        devices,
        identifier,
        connections,
        seconds,
        rate,
    )
    .await
}

/// [`http_load`] over TLS when `tls` is given.
#[allow(clippy::too_many_arguments)] // one load's settings, each once
pub async fn http_load_over(
    addr: &str,
    tls: Option<tokio_rustls::TlsConnector>,
    pk: &str,
    prefix: &str,
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
        let (addr, pk, prefix) = (addr.to_owned(), pk.to_owned(), prefix.to_owned());
        let tls = tls.clone();
        workers.push(tokio::spawn(async move {
            let mut http = Http::connect_over(&addr, tls.as_ref()).await;
            let mut lat = Vec::new();
            let mut n = c;
            let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
            let mut next_at = Instant::now();
            while Instant::now() < deadline {
                if let Some(i) = interval {
                    tokio::time::sleep_until(next_at.into()).await;
                    next_at += i;
                }
                let dn = format!("{prefix}{}", n % devices);
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

/// CPU time (user + system) of every process whose command name is one of
/// `names` (PostgreSQL's backends, `nats-server`): the work a call makes
/// outside this process.
pub fn external_cpu(names: &[&str]) -> Duration {
    let mut ticks = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        if !names.contains(&comm) {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field =
            |n: usize| -> u64 { fields.get(n - 3).and_then(|f| f.parse().ok()).unwrap_or(0) };
        ticks += field(14) + field(15);
    }
    Duration::from_millis(ticks * 10)
}
