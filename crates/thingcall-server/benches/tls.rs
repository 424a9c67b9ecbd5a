//! TLS against plaintext, in one run:
//!
//! 1. e2e sync calls over HTTP and over HTTPS keep-alive (devices on plain
//!    MQTT), and over HTTP to devices on MQTT over TLS: throughput, p50/p99,
//!    and p99 at half of each one's throughput;
//! 2. new device connections per second (TCP or TLS, then a CONNECT the
//!    gateway refuses at once, then the close), with full TLS handshakes and
//!    with resumed ones, counting how many did resume;
//! 3. resident memory per idle logged-in device at `--idle N` (10,000)
//!    connections, plain MQTT and MQTT over TLS, each in a fresh server in a
//!    child process (this binary, re-executed), so its memory is its own.
//!
//! `cargo bench -p thingcall-server --bench tls` (add `-- --seconds N`,
//! `--idle N`; `--test` runs a one-second smoke version).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)] // bench code

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use thingcall_core::{DeviceName, ProductKey, Secret};
use thingcall_gateway::GatewayConfig;
use thingcall_gateway::client::{self, CredentialOptions, Transport};
use thingcall_gateway::mqttbytes::v4::ConnectReturnCode;
use thingcall_gateway::simulator;
use thingcall_server::{Listeners, Server, ServerConfig, ServerOptions, SystemClock};
use thingcall_transport::DeviceKey;
use tokio_rustls::rustls;

mod support;

use support::*;

/// The allocator the `thingcall` binary uses, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn temp(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "thingcall-bench-tls-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ))
}

struct Running {
    http: String,
    https: String,
    mqtt: String,
    mqtts: String,
    ca: std::path::PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A server with HTTP, HTTPS, MQTT and MQTTS listeners and a demo CA.
async fn start(dir: &std::path::Path) -> Running {
    let made = thingcall_tls::demo::ensure(dir).unwrap();
    let tls = thingcall_tls::ServerTls::load(made.files).unwrap();
    let options = ServerOptions {
        config: ServerConfig::default(),
        gateway: GatewayConfig::default(),
        data_dir: dir.to_owned(),
        store: Default::default(),
        secrets_key: Default::default(),
        access_key: Some((KEY_ID.to_owned(), Secret::new(KEY_SECRET))),
        cluster: None,
    };
    let server = Server::open(options, Arc::new(SystemClock)).await.unwrap();
    let bind = || async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap().to_string();
        (l, a)
    };
    let ((http, h), (https, hs), (mqtt, m), (mqtts, ms)) =
        (bind().await, bind().await, bind().await, bind().await);
    let listeners = Listeners {
        https: Some(https),
        mqtts: Some(mqtts),
        tls: Some(tls),
        ..Listeners::plain(http, mqtt)
    };
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(server.serve_on(listeners, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    Running {
        http: h,
        https: hs,
        mqtt: m,
        mqtts: ms,
        ca: made.ca,
        stop,
        task,
    }
}

fn key(pk: &str, dn: &str) -> DeviceKey {
    DeviceKey::new(ProductKey::new(pk).unwrap(), DeviceName::new(dn).unwrap())
}

fn connector(ca: &std::path::Path, resume: bool) -> tokio_rustls::TlsConnector {
    let mut config = (*client::tls_trusting(ca).unwrap()).clone();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Phase 1: HTTP and HTTPS to plain devices, HTTP to devices on MQTTS.
async fn calls(seconds: u64, devices: usize, connections: usize) {
    let dir = temp("calls");
    let s = start(&dir).await;
    let pk = provision_product(&s.http, "BenchTls_1").await;
    let (calls, _keep) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for (prefix, mqtt, tls) in [("plain-", &s.mqtt, false), ("tls-", &s.mqtts, true)] {
        for i in 0..devices {
            let name = format!("{prefix}{i}");
            let secret = register(&s.http, &pk, &name).await;
            let cfg = simulator::SimulatorConfig {
                transport: Transport {
                    tls: tls.then(|| client::tls_trusting(&s.ca).unwrap()),
                    websocket: false,
                },
                ..sim(mqtt, key(&pk, &name), &secret)
            };
            let (calls, mut stop) = (calls.clone(), stop_rx.clone());
            tokio::spawn(async move {
                simulator::run(cfg, calls, async move {
                    let _ = stop.wait_for(|v| *v).await;
                })
                .await
            });
        }
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let https = connector(&s.ca, true);
    let cases: [(&str, &str, Option<tokio_rustls::TlsConnector>, &str); 3] = [
        ("HTTP, devices on MQTT", &s.http, None, "plain-"),
        ("HTTPS, devices on MQTT", &s.https, Some(https), "plain-"),
        ("HTTP, devices on MQTTS", &s.http, None, "tls-"),
    ];
    // Every case at full load, then every case at half its own rate.
    let mut full: Vec<Stats> = Vec::new();
    for half in [false, true] {
        for (i, (label, addr, tls, prefix)) in cases.iter().enumerate() {
            let rate = half.then(|| full[i].per_sec / 2.0);
            let st = measured(http_load_over(
                addr,
                tls.clone(),
                &pk,
                prefix,
                devices,
                "Calibrate",
                connections,
                seconds,
                rate,
            ))
            .await;
            if half {
                print(&format!("sync at half load, {label}"), &st);
            } else {
                print(&format!("sync, {label}"), &st);
                full.push(st);
            }
        }
    }
    println!(
        "HTTPS / HTTP: throughput {:.2}, CPU per call {:.2}",
        full[1].per_sec / full[0].per_sec,
        full[1].cpu_per_call.as_secs_f64() / full[0].cpu_per_call.as_secs_f64()
    );
    println!(
        "devices on MQTTS / on MQTT: throughput {:.2}, CPU per call {:.2}",
        full[2].per_sec / full[0].per_sec,
        full[2].cpu_per_call.as_secs_f64() / full[0].cpu_per_call.as_secs_f64()
    );
    let _ = stop_tx.send(true);
    let _ = s.stop.send(true);
    let _ = s.task.await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Phase 2: connections per second. Each one: TCP (and TLS), a CONNECT
/// with a wrong password, the CONNACK, the close.
async fn connection_rate(seconds: u64, concurrency: usize) {
    let dir = temp("rate");
    let s = start(&dir).await;
    let pk = provision_product(&s.http, "BenchTls_2").await;
    let creds = client::credentials(&key(&pk, "nobody"), "x", CredentialOptions::default());
    let resumed = Arc::new(AtomicU64::new(0));
    for (label, tls) in [
        ("plain TCP", None),
        ("TLS, full handshakes", Some(connector(&s.ca, false))),
        ("TLS, resumed sessions", Some(connector(&s.ca, true))),
    ] {
        resumed.store(0, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let (addr, tls, creds, resumed) = (
                if tls.is_some() {
                    s.mqtts.clone()
                } else {
                    s.mqtt.clone()
                },
                tls.clone(),
                creds.clone(),
                Arc::clone(&resumed),
            );
            workers.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let code = one_connection(&addr, tls.as_ref(), &creds, &resumed).await;
                    lat.push(t0.elapsed());
                    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
                }
                lat
            }));
        }
        let before = cpu_time();
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.unwrap());
        }
        let mut st = stats(all, started.elapsed());
        st.cpu_per_call =
            cpu_time().saturating_sub(before) / u32::try_from(st.calls.max(1)).unwrap();
        print(&format!("new connections, {label}"), &st);
        if tls.is_some() {
            println!(
                "  resumed: {} of {}",
                resumed.load(Ordering::Relaxed),
                st.calls
            );
        }
    }
    let _ = s.stop.send(true);
    let _ = s.task.await;
    let _ = std::fs::remove_dir_all(dir);
}

async fn one_connection(
    addr: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
    creds: &client::Credentials,
    resumed: &AtomicU64,
) -> ConnectReturnCode {
    use thingcall_gateway::mqttbytes::v4::Packet;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut connect = bytes::BytesMut::new();
    Packet::Connect(client::connect_packet(creds, 60, true))
        .write(&mut connect, usize::MAX)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut stream: Box<dyn Stream> = match tls {
        None => Box::new(tcp),
        Some(c) => {
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let t = c.connect(name, tcp).await.unwrap();
            if t.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                resumed.fetch_add(1, Ordering::Relaxed);
            }
            Box::new(t)
        }
    };
    stream.write_all(&connect).await.unwrap();
    stream.flush().await.unwrap();
    // CONNACK: 0x20 0x02 flags code. Reading it also takes in the session
    // tickets sent after a TLS 1.3 handshake, which the next one resumes.
    let mut ack = [0u8; 4];
    stream.read_exact(&mut ack).await.unwrap();
    match ack[3] {
        4 => ConnectReturnCode::BadUserNamePassword,
        0 => ConnectReturnCode::Success,
        _ => ConnectReturnCode::NotAuthorized,
    }
}

/// The child: a server on the given data directory; prints its HTTP,
/// MQTT and MQTTS addresses and the CA, serves until stdin closes.
fn serve_child(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = start(std::path::Path::new(dir)).await;
        println!("{} {} {} {}", s.http, s.mqtt, s.mqtts, s.ca.display());
        std::io::stdout().flush().unwrap();
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await;
        let _ = s.stop.send(true);
        let _ = s.task.await;
    });
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Phase 3: RSS per idle logged-in device, `n` of them, over plain MQTT or
/// MQTT over TLS, in a fresh child server. Returns KiB per connection.
async fn idle_memory(n: usize, tls: bool) -> f64 {
    let dir = temp(if tls { "idle-tls" } else { "idle-plain" });
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--serve-child", dir.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let parts: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    let (http, mqtt, mqtts, ca) = (&parts[0], &parts[1], &parts[2], &parts[3]);
    let pk = provision_product(http, if tls { "Idle_Tls" } else { "Idle_Plain" }).await;
    // Register in parallel: 16 keep-alive connections.
    let names: Vec<String> = (0..n).map(|i| format!("idle-{i}")).collect();
    let mut tasks = Vec::new();
    for chunk in names.chunks(n.div_ceil(16).max(1)) {
        let (http, pk, chunk) = (http.clone(), pk.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for name in chunk {
                let secret = register(&http, &pk, &name).await;
                out.push((name, secret));
            }
            out
        }));
    }
    let mut devices = Vec::new();
    for t in tasks {
        devices.extend(t.await.unwrap());
    }
    // Settle: the store's batches, the allocator's first arenas.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(child.id());
    let transport = Transport {
        tls: tls.then(|| client::tls_trusting(std::path::Path::new(ca)).unwrap()),
        websocket: false,
    };
    let addr = if tls { mqtts.clone() } else { mqtt.clone() };
    let started = Instant::now();
    let mut held = Vec::with_capacity(n);
    let mut pending = Vec::new();
    for (name, secret) in devices {
        let creds = client::credentials(&key(&pk, &name), &secret, CredentialOptions::default());
        let (addr, transport) = (addr.clone(), transport.clone());
        pending.push(tokio::spawn(async move {
            let (ack, r, w) = client::connect_over(
                &addr,
                &transport,
                client::connect_packet(&creds, 1200, true),
            )
            .await
            .unwrap();
            assert_eq!(ack.code, ConnectReturnCode::Success);
            (r, w)
        }));
        if pending.len() == 64 {
            for p in pending.drain(..) {
                held.push(p.await.unwrap());
            }
        }
    }
    for p in pending {
        held.push(p.await.unwrap());
    }
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(child.id());
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "idle {} devices over {}: connected in {:.1} s; server RSS {} -> {} MiB; {:.1} KiB per connection",
        n,
        if tls { "MQTT over TLS" } else { "plain MQTT" },
        connect_time.as_secs_f64(),
        before / 1024,
        after / 1024,
        per
    );
    drop(held);
    drop(child.stdin.take());
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
    per
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-child") {
        serve_child(&args[i + 1]);
        return;
    }
    let quick = args.iter().any(|a| a == "--test");
    let seconds = if quick { 1 } else { arg(&args, "--seconds", 5) };
    let idle = if quick {
        200
    } else {
        arg(&args, "--idle", 10_000)
    } as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "machine: {} cores; 16 devices per kind, 32 HTTP keep-alive connections; {seconds} s per phase",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        calls(seconds, 16, 32).await;
        connection_rate(seconds, 16).await;
        let plain = idle_memory(idle, false).await;
        let tls = idle_memory(idle, true).await;
        println!("idle memory per connection: TLS {tls:.1} KiB, plain {plain:.1} KiB");
    });
}
