//! Soak: sync and async calls at half the measured capacity for many
//! minutes, while some devices connect and disconnect all the time and 1 %
//! of the calls go to devices that never answer. Every minute it reports
//! the server's resident memory, open file descriptors, journal backlog,
//! p99 latency and the outcomes.
//!
//! `cargo bench -p thingcall-server --bench soak -- --minutes 10`
//!
//! The server runs in a child process (this binary, re-executed with
//! `--serve DIR`), so its memory and descriptors are its own; the devices
//! and the load generator run here.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)] // bench code

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use thingcall_core::{DeviceName, ProductKey, Secret};
use thingcall_gateway::GatewayConfig;
use thingcall_gateway::client::{self, CredentialOptions};
use thingcall_gateway::simulator;
use thingcall_server::{Server, ServerConfig, ServerOptions, SystemClock};
use thingcall_transport::DeviceKey;

/// The allocator the `thingcall` binary uses, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Devices that answer every call.
const STEADY: usize = 16;
/// Devices that connect for 1-3 s, leave for 0.2-1 s, and come back.
const CHURNING: usize = 16;
/// Devices that subscribe and never answer.
const SILENT: usize = 4;

/// The server alone, in the child process: prints its addresses, then
/// serves until its standard input closes.
fn serve(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let options = ServerOptions {
            config: ServerConfig::default(),
            gateway: GatewayConfig::default(),
            data_dir: dir.into(),
            store: Default::default(),
            secrets_key: Default::default(),
            access_key: Some((KEY_ID.to_owned(), Secret::new(KEY_SECRET))),
            cluster: None,
        };
        let server = Server::open(options, Arc::new(SystemClock)).await.unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mqtt = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!(
            "{} {}",
            http.local_addr().unwrap(),
            mqtt.local_addr().unwrap()
        );
        std::io::stdout().flush().unwrap();
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        });
        server
            .serve(http, mqtt, async move {
                let _ = stdin_closed.await;
            })
            .await
            .unwrap();
    });
}

/// Resident memory (KiB) and open descriptors of a process.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

async fn metric(http: &str, name: &str) -> u64 {
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn key(pk: &str, name: &str) -> DeviceKey {
    DeviceKey::new(
        ProductKey::new(pk).unwrap(),
        DeviceName::new(name.to_owned()).unwrap(),
    )
}

/// One call's kind, and where the outcome is tallied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Sync,
    Async,
    Churning,
    Silent,
}

#[derive(Default)]
struct Minute {
    latencies: Vec<Duration>,
    outcomes: BTreeMap<(Kind, String), u64>,
}

/// The outcome of a call: `Success`, or the error code.
fn outcome(body: &str) -> String {
    if body.contains("\"Success\":true") {
        return "Success".to_owned();
    }
    body.split("\"Code\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("?")
        .to_owned()
}

/// A pool of keep-alive connections that grows as calls wait (a silent
/// device holds its connection for the whole sync timeout).
struct Pool {
    addr: String,
    idle: Mutex<Vec<Http>>,
}

impl Pool {
    async fn call(&self, extra: &[(&str, &str)]) -> (Duration, String) {
        loop {
            let taken = self.idle.lock().unwrap().pop();
            let mut http = match taken {
                Some(h) => h,
                None => Http::connect(&self.addr).await,
            };
            let t0 = Instant::now();
            // A pooled connection the server closed while idle: try another.
            if http.try_call(extra).await.is_err() {
                continue;
            }
            let took = t0.elapsed();
            let body = http.last();
            let result = outcome(body.split_once("\r\n\r\n").map_or("", |(_, b)| b));
            self.idle.lock().unwrap().push(http);
            return (took, result);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        serve(&args[i + 1]);
        return;
    }
    let value = |flag: &str, default: u64| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    // `cargo test --benches` passes --test: one short minute, as a smoke test.
    let quick = args.iter().any(|a| a == "--test");
    let minutes = if quick { 1 } else { value("--minutes", 10) };
    let minute = if quick {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(60)
    };
    let dir = std::env::temp_dir().join(format!("thingcall-soak-{}", std::process::id()));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--serve")
        .arg(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut addrs = line.split_whitespace();
    let (h, m) = (
        addrs.next().unwrap().to_owned(),
        addrs.next().unwrap().to_owned(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pk = provision_product(&h, "Soak_1").await;
        let stop = Arc::new(AtomicBool::new(false));
        let (calls, _keep) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        for i in 0..STEADY {
            let name = format!("steady-{i}");
            let secret = register(&h, &pk, &name).await;
            let (cfg, calls, mut s) = (sim(&m, key(&pk, &name), &secret), calls.clone(), stop_rx.clone());
            tokio::spawn(async move {
                simulator::run(cfg, calls, async move {
                    let _ = s.wait_for(|v| *v).await;
                })
                .await
            });
        }
        for i in 0..CHURNING {
            let name = format!("churn-{i}");
            let secret = register(&h, &pk, &name).await;
            let (m, k, calls, stop) = (m.clone(), key(&pk, &name), calls.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut round = i as u64;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let stay = Duration::from_millis(1000 + (round * 7919) % 2000);
                    let away = Duration::from_millis(200 + (round * 104_729) % 800);
                    let _ = simulator::run(sim(&m, k.clone(), &secret), calls.clone(), tokio::time::sleep(stay)).await;
                    tokio::time::sleep(away).await;
                }
            });
        }
        for i in 0..SILENT {
            let name = format!("silent-{i}");
            let secret = register(&h, &pk, &name).await;
            let creds = client::credentials(
                &key(&pk, &name),
                &secret,
                CredentialOptions {
                    auto_subscribe: true,
                    ..Default::default()
                },
            );
            let (_ack, mut reader, writer) =
                client::connect(&m, client::connect_packet(&creds, 60, true)).await.unwrap();
            // Reads (so the socket never fills) and never answers; pings
            // keep the session alive.
            tokio::spawn(async move { while reader.recv().await.is_ok() {} });
            tokio::spawn(async move {
                let mut writer = writer;
                loop {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    let ping = thingcall_gateway::mqttbytes::v4::Packet::PingReq;
                    if writer.send(&ping).await.is_err() {
                        break;
                    }
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;

        // Capacity: closed-loop sync calls on 32 connections.
        let capacity_secs = if quick { 2 } else { 10 };
        // Closed-loop sync calls to the steady devices.
        let capacity = measured(http_load(
            &h,
            &pk,
            "steady-",
            STEADY,
            "Calibrate",
            32,
            capacity_secs,
            None,
        ))
        .await;
        let rate = capacity.per_sec / 2.0;
        println!(
            "capacity {:.0} sync calls/s (p99 {:.2} ms); soak at {rate:.0} calls/s for {minutes} min: 49.5 % sync, 49.5 % async to {STEADY} steady devices (2 % of those to {CHURNING} churning ones), 1 % sync to {SILENT} silent devices",
            capacity.per_sec,
            capacity.p99.as_secs_f64() * 1e3
        );
        println!("minute   calls/s   p99 ms (steady)   RSS KiB   fds   journal backlog   outcomes");
        let current = Arc::new(Mutex::new(Minute::default()));
        let pool = Arc::new(Pool {
            addr: h.clone(),
            idle: Mutex::new(Vec::new()),
        });
        let total = minute * u32::try_from(minutes).unwrap();
        let started = Instant::now();
        let deadline = started + total;
        // 99 % of the calls: 32 keep-alive connections, each paced at an
        // even share of the rate (an open loop: a slow answer does not
        // lower the offered load).
        let connections = 32u32;
        let per_connection = Duration::from_secs_f64(f64::from(connections) / (rate * 0.99));
        let mut workers = Vec::new();
        for c in 0..connections {
            let (h, pk, current) = (h.clone(), pk.clone(), Arc::clone(&current));
            workers.push(tokio::spawn(async move {
                let mut http = Http::connect(&h).await;
                let mut next = started + per_connection * c / connections;
                let mut n = u64::from(c);
                while next < deadline {
                    tokio::time::sleep_until(next.into()).await;
                    next += per_connection;
                    n += u64::from(connections);
                    let (kind, device, identifier, args) = if n % 50 == 7 {
                        (Kind::Churning, format!("churn-{}", n % CHURNING as u64), "Reboot", r#"{"Delay":1}"#)
                    } else if n % 2 == 0 {
                        (Kind::Sync, format!("steady-{}", n % STEADY as u64), "Calibrate", r#"{"Offset":1.5}"#)
                    } else {
                        (Kind::Async, format!("steady-{}", n % STEADY as u64), "Reboot", r#"{"Delay":1}"#)
                    };
                    let t0 = Instant::now();
                    http.call(&[
                        ("ProductKey", &pk),
                        ("DeviceName", &device),
                        ("Identifier", identifier),
                        ("Args", args),
                    ])
                    .await;
                    let took = t0.elapsed();
                    let body = http.last();
                    let result = outcome(body.split_once("\r\n\r\n").map_or("", |(_, b)| b));
                    let mut m = current.lock().unwrap();
                    if kind != Kind::Churning {
                        m.latencies.push(took);
                    }
                    *m.outcomes.entry((kind, result)).or_default() += 1;
                }
            }));
        }
        // 1 %: sync calls to silent devices, each holding a connection for
        // the whole sync timeout.
        {
            let (pool, pk, current) = (Arc::clone(&pool), pk.clone(), Arc::clone(&current));
            let every = Duration::from_secs_f64(1.0 / (rate * 0.01));
            workers.push(tokio::spawn(async move {
                let mut next = started;
                let mut n = 0u64;
                while next < deadline {
                    tokio::time::sleep_until(next.into()).await;
                    next += every;
                    n += 1;
                    let (pool, pk, current) = (Arc::clone(&pool), pk.clone(), Arc::clone(&current));
                    tokio::spawn(async move {
                        let device = format!("silent-{}", n % SILENT as u64);
                        let (_, result) = pool
                            .call(&[
                                ("ProductKey", &pk),
                                ("DeviceName", &device),
                                ("Identifier", "Calibrate"),
                                ("Args", r#"{"Offset":1.5}"#),
                            ])
                            .await;
                        *current.lock().unwrap().outcomes.entry((Kind::Silent, result)).or_default() += 1;
                    });
                }
            }));
        }
        for min in 1..=minutes {
            tokio::time::sleep_until((started + minute * u32::try_from(min).unwrap()).into()).await;
            let (rss, fds) = rss_and_fds(pid);
            let backlog = metric(&h, "thingcall_records_waiting").await;
            let m = std::mem::take(&mut *current.lock().unwrap());
            let calls: u64 = m.outcomes.values().sum();
            let s = stats(m.latencies, minute);
            let outcomes: Vec<String> = m
                .outcomes
                .iter()
                .map(|((k, o), c)| format!("{k:?}:{o}={c}"))
                .collect();
            println!(
                "{min:>6} {:>9.0} {:>17.2} {rss:>9} {fds:>5} {backlog:>17}   {}",
                calls as f64 / minute.as_secs_f64(),
                s.p99.as_secs_f64() * 1e3,
                outcomes.join(" ")
            );
        }
        for w in workers {
            let _ = w.await;
        }
        stop.store(true, Ordering::Relaxed);
        let _ = stop_tx.send(true);
        // Let silent calls still waiting time out before the server stops.
        tokio::time::sleep(Duration::from_secs(6)).await;
    });
    drop(child.stdin.take());
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}
