//! Gateway load benchmarks (a load tool, not criterion):
//!
//! * the raw request→reply rate: an in-process requester sends RRPC calls
//!   through the gateway to simulated devices on loopback TCP, QoS 0 and
//!   QoS 1, with 1 and 16 calls in flight — the "physical limit" the
//!   end-to-end benchmark is compared with;
//! * memory: the gateway's RSS per idle connection with 10,000 devices,
//!   measured in a child process so the clients' memory is not counted.
//!
//! `cargo bench -p thingcall-gateway --bench gateway` runs both; add
//! `-- --seconds N` to change the duration of each rate run (default 5) and
//! `-- --idle N` to change the idle-connection count.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)] // bench code

/// The allocator the `thingcall` binary uses, so the numbers are the binary's,
/// wrapped to count the bytes allocated and not freed (the live heap).
#[global_allocator]
static GLOBAL: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thingcall_core::{
    AlinkRequest, DeviceName, Identifier, ManualClock, MessageId, ProductKey, Qos, Secret,
    UnixMillis,
};
use thingcall_gateway::simulator::{self, SimulatorConfig};
use thingcall_gateway::{Gateway, GatewayConfig, MapRegistry, client};
use thingcall_transport::{Delivery, DeliveryKind, DeviceKey, RrpcForm, Transport, TransportEvent};
use thingcall_tsl::CompiledModel;
use tokio::sync::oneshot;

const SECRET: &str = "bench-secret";

fn device(i: usize) -> DeviceKey {
    DeviceKey::new(
        ProductKey::new("a1BenchPk01").unwrap(),
        DeviceName::new(format!("dev-{i}")).unwrap(),
    )
}

fn model() -> Arc<CompiledModel> {
    let path = format!("{}/tests/compat/model.json", env!("CARGO_MANIFEST_DIR"));
    Arc::new(
        CompiledModel::compile(
            thingcall_tsl::check_str(&std::fs::read_to_string(path).unwrap()).unwrap(),
        )
        .unwrap(),
    )
}

async fn start_gateway(devices: usize) -> (Gateway, String) {
    let registry = Arc::new(MapRegistry::new());
    for i in 0..devices {
        registry.insert(device(i), Secret::new(SECRET));
    }
    let gw = Gateway::new(
        GatewayConfig::default(),
        registry,
        Arc::new(ManualClock::new(UnixMillis::new(0))),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let g = gw.clone();
    tokio::spawn(async move { g.serve(listener, std::future::pending()).await });
    (gw, addr)
}

type Pending = Arc<Mutex<HashMap<MessageId, oneshot::Sender<()>>>>;

async fn rate(
    gw: &Gateway,
    pending: &Pending,
    devices: usize,
    in_flight: usize,
    qos: Qos,
    seconds: u64,
) -> (f64, usize) {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(
        1 + (in_flight as u64) * 1_000_000_000 + qos.level() as u64 * 100_000_000_000,
    ));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    let identifier = Identifier::new("Calibrate").unwrap();
    for w in 0..in_flight {
        let (gw, pending, next, identifier) = (
            gw.clone(),
            Arc::clone(pending),
            Arc::clone(&next),
            identifier.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut done = 0usize;
            let mut n = w;
            while Instant::now() < deadline {
                let id =
                    MessageId::from_u64(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
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
                    device: device(n % devices),
                    message_id: id,
                    kind,
                    qos,
                    payload,
                })
                .await
                .unwrap();
                tokio::time::timeout(Duration::from_secs(5), rx)
                    .await
                    .expect("reply timed out")
                    .unwrap();
                done += 1;
                n += in_flight;
            }
            done
        }));
    }
    let started = Instant::now();
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    (total as f64 / started.elapsed().as_secs_f64(), total)
}

fn rate_benchmark(seconds: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let devices = 16;
        let (gw, addr) = start_gateway(devices).await;
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let mut events = gw.subscribe();
        let p = Arc::clone(&pending);
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if let TransportEvent::Reply(r) = e
                    && let Some(tx) = r.message_id.and_then(|id| p.lock().unwrap().remove(&id))
                {
                    let _ = tx.send(());
                }
            }
        });
        let (calls, _keep) = tokio::sync::mpsc::unbounded_channel();
        let model = model();
        for i in 0..devices {
            let cfg = SimulatorConfig {
                seed: i as u64,
                ..SimulatorConfig::new(
                    addr.clone(),
                    device(i),
                    Secret::new(SECRET),
                    Arc::clone(&model),
                )
            };
            let calls = calls.clone();
            tokio::spawn(async move { simulator::run(cfg, calls, std::future::pending()).await });
        }
        while gw.online_count() < devices {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("raw request->reply through the gateway ({devices} simulated devices on loopback TCP, {seconds} s per run)");
        println!("{:<8} {:>10} {:>14} {:>10}", "qos", "in flight", "calls/s", "calls");
        for qos in [Qos::AtMostOnce, Qos::AtLeastOnce] {
            for in_flight in [1, 16] {
                let (per_sec, total) = rate(&gw, &pending, devices, in_flight, qos, seconds).await;
                println!("{:<8} {:>10} {:>14.0} {:>10}", qos.level(), in_flight, per_sec, total);
            }
        }
    });
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Child mode: run only the gateway (over TLS with a demo certificate made
/// in `tls_dir`), print its address, wait for stdin EOF.
fn serve_idle(devices: usize, tls_dir: Option<&str>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (gw, addr) = start_gateway(devices).await;
        let addr = match tls_dir {
            None => addr,
            Some(dir) => {
                let made = thingcall_tls::demo::ensure(std::path::Path::new(dir)).unwrap();
                let tls = thingcall_tls::ServerTls::load(made.files).unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config(&[]));
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap().to_string();
                tokio::spawn(async move {
                    gw.accept_on(
                        listener,
                        thingcall_gateway::listen::Listen::Mqtts(acceptor),
                        std::future::pending(),
                    )
                    .await
                });
                addr
            }
        };
        println!("{addr}");
        // Each line asks for the live heap; the end of input ends the child.
        tokio::task::spawn_blocking(|| {
            use std::io::Write as _;
            let mut s = String::new();
            while std::io::stdin().read_line(&mut s).is_ok_and(|n| n > 0) {
                println!("{}", GLOBAL.allocated());
                let _ = std::io::stdout().flush();
                s.clear();
            }
        })
        .await
        .unwrap();
    });
}

fn memory_benchmark(idle: usize, tls: bool) {
    use std::io::{BufRead, Write};
    let exe = std::env::current_exe().unwrap();
    let dir = std::env::temp_dir().join(format!("thingcall-gw-bench-tls-{}", std::process::id()));
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--serve-idle", &idle.to_string()]);
    if tls {
        cmd.args(["--tls", dir.to_str().unwrap()]);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let mut addr = String::new();
    out.read_line(&mut addr).unwrap();
    let addr = addr.trim().to_owned();
    let pid = child.id();
    let mut live = || -> u64 {
        stdin.write_all(b"live\n").unwrap();
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        line.trim().parse().unwrap()
    };
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid);
    let live_before = live();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let transport = client::Transport {
        tls: tls.then(|| client::tls_trusting(&dir.join("tls/ca.pem")).unwrap()),
        websocket: false,
    };
    let connected = rt.block_on(async {
        let mut conns = Vec::with_capacity(idle);
        let started = Instant::now();
        for i in 0..idle {
            let creds =
                client::credentials(&device(i), SECRET, client::CredentialOptions::default());
            match client::connect_over(
                &addr,
                &transport,
                client::connect_packet(&creds, 1200, true),
            )
            .await
            {
                Ok((ack, r, w))
                    if ack.code == rumqttc::mqttbytes::v4::ConnectReturnCode::Success =>
                {
                    conns.push((r, w))
                }
                Ok((ack, ..)) => panic!("device {i} refused: {:?}", ack.code),
                Err(e) => {
                    eprintln!("stopped at {i} connections: {e}");
                    break;
                }
            }
        }
        let n = conns.len();
        eprintln!("{n} connections in {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss_kib(pid);
        (n, after, conns)
    });
    let (n, after, conns) = connected;
    let live_after = live();
    drop(conns);
    drop(stdin);
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "idle connections ({}): {n}; gateway RSS {before} KiB -> {after} KiB; {:.1} KiB per connection ({:.1} KiB of live heap)",
        if tls { "MQTT over TLS" } else { "plain MQTT" },
        (after.saturating_sub(before)) as f64 / n.max(1) as f64,
        (live_after.saturating_sub(live_before)) as f64 / 1024.0 / n.max(1) as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    if let Some(n) = value("--serve-idle") {
        let tls = args
            .iter()
            .position(|a| a == "--tls")
            .and_then(|i| args.get(i + 1));
        serve_idle(n as usize, tls.map(String::as_str));
        return;
    }
    // `cargo test --benches` runs bench targets with `--test`: keep it quick.
    if args.iter().any(|a| a == "--test") {
        rate_benchmark(1);
        return;
    }
    if !args.iter().any(|a| a == "--memory-only") {
        rate_benchmark(value("--seconds").unwrap_or(5));
    }
    let idle = value("--idle").unwrap_or(10_000) as usize;
    memory_benchmark(idle, false);
    memory_benchmark(idle, true);
}
