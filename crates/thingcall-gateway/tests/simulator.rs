//! The simulated device answers every service of its thing model through
//! the gateway, in both RRPC forms and asynchronously.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::Arc;
use std::time::Duration;

use thingcall_core::{
    AlinkRequest, DeviceName, Identifier, ManualClock, MessageId, ProductKey, Qos, Secret,
    UnixMillis,
};
use thingcall_gateway::simulator::{self, SimulatorConfig};
use thingcall_gateway::{Gateway, GatewayConfig, MapRegistry};
use thingcall_transport::{
    Delivery, DeliveryKind, DeviceKey, DeviceReply, ReplyVia, RrpcForm, Transport, TransportEvent,
};
use thingcall_tsl::CompiledModel;
use tokio::sync::mpsc;

fn model() -> Arc<CompiledModel> {
    let path = format!(
        "{}/../thingcall-tsl/test-models/calibrator-all-types.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let model = thingcall_tsl::check_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    Arc::new(CompiledModel::compile(model).unwrap())
}

fn dev(name: &str) -> DeviceKey {
    DeviceKey::new(
        ProductKey::new("a1TestPk001").unwrap(),
        DeviceName::new(name).unwrap(),
    )
}

async fn gateway() -> (Gateway, String) {
    let registry = Arc::new(MapRegistry::new());
    for name in ["dev1", "dev2", "dev3"] {
        registry.insert(dev(name), Secret::new("secret"));
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

fn sim(addr: &str, name: &str, ext: bool, auto_subscribe: bool, fail_rate: f64) -> SimulatorConfig {
    SimulatorConfig {
        latency: Duration::from_millis(5),
        fail_rate,
        ext,
        auto_subscribe,
        seed: 7,
        ..SimulatorConfig::new(addr, dev(name), Secret::new("secret"), model())
    }
}

async fn wait_online(gw: &Gateway, name: &str) {
    for _ in 0..200 {
        if gw.is_online(&dev(name)) {
            // Give the simulator time to have its SUBSCRIBE processed.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name} never came online");
}

async fn call(
    gw: &Gateway,
    name: &str,
    id: u64,
    identifier: &str,
    sync: bool,
    params: serde_json::Value,
) {
    let identifier = Identifier::new(identifier).unwrap();
    let request = AlinkRequest::for_service(MessageId::from_u64(id), &identifier, params);
    let kind = if sync {
        DeliveryKind::Rrpc {
            identifier,
            form: RrpcForm::Auto,
        }
    } else {
        DeliveryKind::Async { identifier }
    };
    gw.deliver(Delivery {
        device: dev(name),
        message_id: MessageId::from_u64(id),
        kind,
        qos: Qos::AtLeastOnce,
        payload: request.to_vec(),
    })
    .await
    .unwrap();
}

async fn reply(events: &mut mpsc::Receiver<TransportEvent>) -> DeviceReply {
    loop {
        if let TransportEvent::Reply(r) =
            tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .unwrap()
                .unwrap()
        {
            return r;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_sync_and_async_calls_with_valid_data() {
    let (gw, addr) = gateway().await;
    let mut events = gw.subscribe();
    let (calls_tx, mut calls) = mpsc::unbounded_channel();
    for (name, ext, ss) in [("dev1", true, true), ("dev2", false, false)] {
        let cfg = sim(&addr, name, ext, ss, 0.0);
        let tx = calls_tx.clone();
        tokio::spawn(async move { simulator::run(cfg, tx, std::future::pending()).await });
        wait_online(&gw, name).await;
    }
    let calibrate = model().service("Calibrate").unwrap().clone();
    for (i, name) in ["dev1", "dev2"].iter().enumerate() {
        let id = 100 + i as u64;
        call(
            &gw,
            name,
            id,
            "Calibrate",
            true,
            serde_json::json!({"Offset": 1.5}),
        )
        .await;
        let r = reply(&mut events).await;
        assert_eq!(
            (r.device.clone(), r.message_id, r.via.clone()),
            (dev(name), Some(MessageId::from_u64(id)), ReplyVia::Rrpc)
        );
        assert_eq!(r.reply.code, 200);
        assert!(
            calibrate.validate_output(&r.reply.data).is_empty(),
            "{}",
            r.reply.data
        );
        let record = calls.recv().await.unwrap();
        assert_eq!(
            record.via,
            if *name == "dev1" { "ext-rrpc" } else { "rrpc" }
        );
        assert_eq!(record.identifier, "Calibrate");
    }
    call(
        &gw,
        "dev2",
        200,
        "set",
        false,
        serde_json::json!({"Brightness": 10}),
    )
    .await;
    let r = reply(&mut events).await;
    assert_eq!(
        r.via,
        ReplyVia::Async {
            identifier: "set".into()
        }
    );
    assert_eq!(r.message_id, Some(MessageId::from_u64(200)));
    call(
        &gw,
        "dev1",
        201,
        "get",
        false,
        serde_json::json!(["Temperature"]),
    )
    .await;
    let r = reply(&mut events).await;
    assert_eq!(
        r.via,
        ReplyVia::Async {
            identifier: "get".into()
        }
    );
    let get = model().service("get").unwrap().clone();
    assert!(get.validate_output(&r.reply.data).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_failures_and_unknown_services() {
    let (gw, addr) = gateway().await;
    let mut events = gw.subscribe();
    let (tx, _calls) = mpsc::unbounded_channel();
    let cfg = sim(&addr, "dev3", true, true, 1.0);
    tokio::spawn(async move { simulator::run(cfg, tx, std::future::pending()).await });
    wait_online(&gw, "dev3").await;
    call(&gw, "dev3", 1, "Calibrate", true, serde_json::json!({})).await;
    assert_eq!(reply(&mut events).await.reply.code, 400);
    call(&gw, "dev3", 2, "NoSuchService", true, serde_json::json!({})).await;
    assert_eq!(reply(&mut events).await.reply.code, 460);
}

#[tokio::test]
async fn refused_credentials_stop_the_simulator() {
    let (_gw, addr) = gateway().await;
    let mut cfg = sim(&addr, "dev1", false, false, 0.0);
    cfg.device_secret = Secret::new("wrong");
    let (tx, _calls) = mpsc::unbounded_channel();
    let err = simulator::run(cfg, tx, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("BadUserNamePassword"), "{err}");
}
