//! End-to-end load: signed v1 `InvokeThingService` requests over HTTP
//! keep-alive against simulated devices on TCP, sync and async, reported as
//! throughput and p50/p99 latency, next to the gateway's raw request→reply
//! baseline measured in the same run.
//!
//! A cluster phase runs two nodes in this process on PostgreSQL and NATS
//! (`THINGCALL_BENCH_NATS`, by default `nats://127.0.0.1:4222`; `none`
//! skips it), with the devices on node B, and compares calls through B
//! (same node) with calls through A (cross node).
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
    AlinkRequest, Clock, DeviceName, Identifier, MessageId, ProductKey, Qos, Secret,
};
use thingcall_gateway::simulator;
use thingcall_gateway::{Gateway, GatewayConfig, MapRegistry};
use thingcall_server::{
    ClusterConfig, PostgresUrl, Server, ServerConfig, ServerOptions, StoreConfig, SystemClock,
};
use thingcall_transport::{Delivery, DeliveryKind, DeviceKey, RrpcForm, Transport, TransportEvent};
use tokio::sync::oneshot;

mod support;

use support::*;

/// The allocator the `thingcall` binary uses, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        "bench-",
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

/// Runs a simulated device `name` of `pk` against the gateway at `mqtt`
/// until `stop` turns true.
fn spawn_device(
    mqtt: &str,
    pk: &str,
    name: String,
    secret: &str,
    calls: &tokio::sync::mpsc::UnboundedSender<simulator::CallRecord>,
    stop: &tokio::sync::watch::Receiver<bool>,
) {
    let key = DeviceKey::new(ProductKey::new(pk).unwrap(), DeviceName::new(name).unwrap());
    let (cfg, calls, mut s) = (sim(mqtt, key, secret), calls.clone(), stop.clone());
    tokio::spawn(async move {
        simulator::run(cfg, calls, async move {
            let _ = s.wait_for(|v| *v).await;
        })
        .await
    });
}

async fn e2e(
    store: StoreConfig,
    devices: usize,
    connections: usize,
    seconds: u64,
) -> (Stats, Stats, Stats) {
    let dir = std::env::temp_dir().join(format!(
        "thingcall-bench-{}-{}",
        std::process::id(),
        SystemClock.now().get()
    ));
    let options = ServerOptions {
        config: ServerConfig::default(),
        gateway: GatewayConfig::default(),
        data_dir: dir.clone(),
        store,
        // A fixed key: the bench makes a store of its own every run.
        secrets_key: thingcall_server::SecretsKeySource::Value(Secret::new(
            "dGhpbmdjYWxsLWJlbmNoLXNlY3JldHMta2V5LTMyYiE=",
        )),
        access_key: Some((KEY_ID.to_owned(), Secret::new(KEY_SECRET))),
        cluster: None,
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
    let pk = provision_product(&h, "Bench_1").await;
    let (calls, _keep) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..devices {
        let name = format!("bench-{i}");
        let secret = register(&h, &pk, &name).await;
        spawn_device(&m, &pk, name, &secret, &calls, &stop_rx);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let phase = |identifier: &'static str, rate: Option<f64>| {
        measured(http_load(
            &h,
            &pk,
            "bench-",
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

/// A node of a cluster in this process: (HTTP address, MQTT address, its
/// serving task).
async fn node(
    url: &PostgresUrl,
    nats: &str,
    id: &str,
    dir: &std::path::Path,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (String, String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let options = ServerOptions {
        config: ServerConfig::default(),
        gateway: GatewayConfig::default(),
        data_dir: dir.join(id),
        store: StoreConfig::Postgres(url.clone()),
        secrets_key: thingcall_server::SecretsKeySource::Value(Secret::new(
            "dGhpbmdjYWxsLWJlbmNoLXNlY3JldHMta2V5LTMyYiE=",
        )),
        access_key: Some((KEY_ID.to_owned(), Secret::new(KEY_SECRET))),
        cluster: Some(ClusterConfig {
            nats: vec![nats.to_owned()],
            node_id: Some(id.to_owned()),
        }),
    };
    let server = Server::open(options, Arc::new(SystemClock)).await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mqtt = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (h, m) = (
        http.local_addr().unwrap().to_string(),
        mqtt.local_addr().unwrap().to_string(),
    );
    let mut s = stop;
    let served = tokio::spawn(server.serve(http, mqtt, async move {
        let _ = s.wait_for(|v| *v).await;
    }));
    (h, m, served)
}

/// Same-node and cross-node phases of a two-node cluster: (same, cross,
/// same at half load, cross at half load). CPU per call counts this
/// process, PostgreSQL and the NATS server.
async fn cluster(
    url: &PostgresUrl,
    nats: &str,
    devices: usize,
    connections: usize,
    seconds: u64,
) -> [Stats; 4] {
    let dir = std::env::temp_dir().join(format!(
        "thingcall-bench-cluster-{}-{}",
        std::process::id(),
        SystemClock.now().get()
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (a_http, _, a) = node(url, nats, "bench-a", &dir, stop_rx.clone()).await;
    let (b_http, b_mqtt, b) = node(url, nats, "bench-b", &dir, stop_rx.clone()).await;
    let pk = provision_product(&a_http, "Bench_cluster").await;
    let (calls, _keep) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..devices {
        let name = format!("bench-{i}");
        let secret = register(&a_http, &pk, &name).await;
        // Registered through A: B learns of it within milliseconds; a
        // device that logged in on B before that would be refused.
        loop {
            let known = raw_answer(
                &b_http,
                "GetDeviceStatus",
                &[
                    ("ProductKey".into(), pk.clone()),
                    ("DeviceName".into(), name.clone()),
                ],
            )
            .await;
            if known["Success"] == true {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        spawn_device(&b_mqtt, &pk, name, &secret, &calls, &stop_rx);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let outside = ["postgres", "nats-server"];
    let phase = |http: String, rate: Option<f64>| {
        let pk = pk.clone();
        async move {
            let before = external_cpu(&outside);
            let nats_before = external_cpu(&["nats-server"]);
            let mut stats = measured(async {
                http_load(
                    &http,
                    &pk,
                    "bench-",
                    devices,
                    "Calibrate",
                    connections,
                    seconds,
                    rate,
                )
                .await
            })
            .await;
            let extra = external_cpu(&outside).saturating_sub(before);
            let nats_used = external_cpu(&["nats-server"]).saturating_sub(nats_before);
            println!(
                "  (of which PostgreSQL and NATS: {:.1} us/call; NATS {:.1})",
                extra.as_secs_f64() * 1e6 / stats.calls.max(1) as f64,
                nats_used.as_secs_f64() * 1e6 / stats.calls.max(1) as f64
            );
            stats.cpu_per_call += extra / u32::try_from(stats.calls.max(1)).unwrap_or(u32::MAX);
            stats
        }
    };
    let same = phase(b_http.clone(), None).await;
    let cross = phase(a_http.clone(), None).await;
    let same_half = phase(b_http, Some(same.per_sec / 2.0)).await;
    let cross_half = phase(a_http, Some(cross.per_sec / 2.0)).await;
    let _ = stop_tx.send(true);
    let _ = a.await;
    let _ = b.await;
    let _ = std::fs::remove_dir_all(dir);
    [same, cross, same_half, cross_half]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str, default: u64| arg(&args, flag, default);
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
        let (sync, asyn, half) = e2e(StoreConfig::Sqlite, devices, connections, seconds).await;
        print("e2e InvokeThingService sync", &sync);
        print("e2e InvokeThingService async", &asyn);
        print("e2e sync at half the sync throughput", &half);
        // The same phases on PostgreSQL, in a database of the run's own
        // (THINGCALL_BENCH_POSTGRES names the server; "none" skips).
        let server = std::env::var("THINGCALL_BENCH_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        if server != "none" {
            let server = PostgresUrl::parse(&server).unwrap();
            let name = format!("thingcall_bench_{}", std::process::id());
            server.drop_database(&name).await.unwrap();
            server.create_database(&name).await.unwrap();
            let url = server.with_database(&name);
            let (pg_sync, pg_async, pg_half) =
                e2e(StoreConfig::Postgres(url), devices, connections, seconds).await;
            server.drop_database(&name).await.unwrap();
            print("e2e sync, PostgreSQL store", &pg_sync);
            print("e2e async, PostgreSQL store", &pg_async);
            print("e2e sync at half load, PostgreSQL store", &pg_half);
            println!(
                "PostgreSQL / SQLite: sync {:.2}, async {:.2}",
                pg_sync.per_sec / sync.per_sec,
                pg_async.per_sec / asyn.per_sec
            );
            let nats = std::env::var("THINGCALL_BENCH_NATS")
                .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
            if nats != "none" {
                let name = format!("thingcall_bench_cluster_{}", std::process::id());
                server.drop_database(&name).await.unwrap();
                server.create_database(&name).await.unwrap();
                let url = server.with_database(&name);
                let [same, cross, same_half, cross_half] =
                    cluster(&url, &nats, devices, connections, seconds).await;
                server.drop_database(&name).await.unwrap();
                print("cluster sync, same node (devices on B, via B)", &same);
                print("cluster sync, cross node (devices on B, via A)", &cross);
                print("cluster same node at half load", &same_half);
                print("cluster cross node at half load", &cross_half);
                println!(
                    "cluster cross / same node: throughput {:.2}, CPU per call {:.2}",
                    cross.per_sec / same.per_sec,
                    cross.cpu_per_call.as_secs_f64() / same.cpu_per_call.as_secs_f64()
                );
            }
        }
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
