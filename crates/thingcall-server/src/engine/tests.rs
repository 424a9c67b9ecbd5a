//! The engine in memory, as quinn tests `quinn-proto`: a server made from
//! parts, on `MemoryTransport` and a manual clock, with a real SQLite store
//! in a temporary directory. Each test runs in milliseconds.

use std::collections::BTreeMap;

use thingcall_core::{AlinkId, AlinkReply, ManualClock};
use thingcall_transport::{MemoryTransport, PresenceEvent, ReplyVia, TransportError};
use thingcall_wire::actions::{DisableThing, EnableThing};
use thingcall_wire::{Action, ApiRequest, Format, Params};

use super::*;
use crate::store::sqlite::Store;
use crate::store::{ModelVersion, Product, RecordQuery};

const MODEL: &str = include_str!("../../demo/model.json");
const PK: &str = "a1EngineTst";
const START: i64 = 1_700_000_000_000;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "thingcall-engine-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn product(pk: &str) -> Product {
    Product {
        product_key: pk.to_owned(),
        product_name: format!("name_{pk}"),
        product_secret: "s".into(),
        description: None,
        node_type: 0,
        data_format: Some(1),
        commodity_code: Some("iothub_senior".to_owned()),
        auth_type: "secret".to_owned(),
        protocol_type: None,
        net_type: None,
        category_key: None,
        validate_type: 1,
        created_ms: 1,
        draft_tsl: MODEL.to_owned(),
        versions: vec![ModelVersion {
            version: "v1".to_owned(),
            description: None,
            tsl: MODEL.to_owned(),
            created_ms: 1,
            seq: 1,
            modules: BTreeMap::new(),
        }],
        modules: BTreeMap::new(),
    }
}

fn device(pk: &str, dn: &str) -> Device {
    Device {
        iot_id: format!("{dn}000100"),
        product_key: pk.to_owned(),
        device_name: dn.to_owned(),
        device_secret: "secret".into(),
        nickname: None,
        enabled: true,
        created_ms: 1,
        activated_ms: None,
        online_ms: None,
        status_ms: 1,
        ip_address: None,
        online: false,
    }
}

/// A running engine: its event loop and sweeper, the memory transport,
/// the manual clock, and a registered device that has connected.
struct Fixture {
    server: crate::Server,
    transport: Arc<MemoryTransport>,
    clock: Arc<ManualClock>,
    dir: std::path::PathBuf,
    device: Device,
    key: DeviceKey,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fixture {
    async fn start(name: &str) -> Fixture {
        Fixture::start_in(temp_dir(name), true).await
    }

    async fn start_in(dir: std::path::PathBuf, provision: bool) -> Fixture {
        let store = Arc::new(Store::open(&dir).unwrap());
        let transport = Arc::new(MemoryTransport::new());
        let clock = Arc::new(ManualClock::new(UnixMillis::new(START)));
        let server = crate::Server::from_parts(
            ServerConfig {
                sync_timeout: Duration::from_secs(5),
                ..ServerConfig::default()
            },
            transport.clone(),
            store.clone(),
            store.clone(),
            clock.clone(),
        )
        .await
        .unwrap();
        let engine = Arc::clone(server.engine());
        let tasks = vec![
            tokio::spawn(Arc::clone(&engine).run_events(transport.subscribe())),
            tokio::spawn(Arc::clone(&engine).run_sweeper()),
        ];
        let d = device(PK, "dev1");
        let key = device_key(&d).unwrap();
        if provision {
            engine
                .change(Change::InsertProduct(product(PK)))
                .await
                .unwrap();
            engine
                .change(Change::InsertDevice(d.clone()))
                .await
                .unwrap();
        }
        let f = Fixture {
            server,
            transport,
            clock,
            dir,
            device: d,
            key,
            tasks,
        };
        f.connect().await;
        f
    }

    fn engine(&self) -> &Arc<Engine> {
        self.server.engine()
    }

    /// The device connects (presence through the event loop).
    async fn connect(&self) {
        self.transport.set_online(&self.key, false);
        self.transport
            .inject_presence(PresenceEvent {
                device: self.key.clone(),
                online: true,
                at: self.clock.now(),
                client_addr: None,
                reason: "test".to_owned(),
            })
            .await;
        for _ in 0..500 {
            if read(&self.engine().catalog).devices[&self.device.iot_id].online {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the device never came online");
    }

    /// The device as the mirror has it now.
    fn current(&self) -> Device {
        read(&self.engine().catalog).devices[&self.device.iot_id].clone()
    }

    async fn invoke(&self, identifier: &str, args: &str) -> Result<Invoked, ApiError> {
        self.engine()
            .invoke(
                &self.current(),
                &Identifier::new(identifier).unwrap(),
                args,
                Qos::AtMostOnce,
            )
            .await
    }

    /// Starts a call on its own task and returns it with the message id the
    /// transport saw.
    async fn start_call(
        &self,
        identifier: &'static str,
    ) -> (
        tokio::task::JoinHandle<Result<Invoked, ApiError>>,
        MessageId,
    ) {
        let before = self.transport.deliveries().len();
        let engine = Arc::clone(self.engine());
        let device = self.current();
        let call = tokio::spawn(async move {
            engine
                .invoke(
                    &device,
                    &Identifier::new(identifier).unwrap(),
                    "{}",
                    Qos::AtMostOnce,
                )
                .await
        });
        for _ in 0..500 {
            if let Some((d, _)) = self.transport.deliveries().get(before) {
                return (call, d.message_id);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the call was never delivered");
    }

    async fn reply(&self, id: MessageId, via: ReplyVia, code: i64) {
        let reply = AlinkReply {
            id: AlinkId::new(id.to_string()),
            code,
            data: serde_json::json!({"Result": 1}),
            message: None,
        };
        self.transport
            .inject_reply(&self.key, Some(id), via, reply, self.clock.now())
            .await;
    }

    async fn records(&self) -> Vec<Invocation> {
        self.engine()
            .records
            .query(RecordQuery {
                iot_id: self.device.iot_id.clone(),
                from: 0,
                to: i64::MAX,
                identifier: None,
                ascending: true,
                limit: 100,
            })
            .await
            .unwrap()
    }

    /// The record of `id` once its outcome is `want` (outcomes of replies
    /// are written off the event loop).
    async fn outcome(&self, id: MessageId, want: Outcome) -> Invocation {
        let mut last = None;
        for _ in 0..500 {
            last = self
                .records()
                .await
                .into_iter()
                .find(|r| r.message_id == id);
            if last.as_ref().is_some_and(|r| r.outcome == want) {
                return last.unwrap_or_else(|| unreachable!());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("record {id} never became {want:?}: {last:?}");
    }

    async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.engine().records.close().await;
    }
}

#[tokio::test]
async fn a_sync_call_is_answered_by_its_device_and_recorded() {
    let f = Fixture::start("sync").await;
    let (call, id) = f.start_call("Calibrate").await;
    f.reply(id, ReplyVia::Rrpc, 200).await;
    let done = call.await.unwrap().unwrap();
    assert_eq!(done.message_id, id);
    assert_eq!(done.result.as_deref(), Some(r#"{"Result":1}"#));
    let r = f.outcome(id, Outcome::Replied(200)).await;
    assert_eq!(r.mode, CallMode::Sync);
    assert!(r.output.is_some());
    f.stop().await;
}

#[tokio::test]
async fn a_sync_call_times_out_by_the_injected_clock_and_a_late_reply_completes_it() {
    let f = Fixture::start("timeout").await;
    let (call, id) = f.start_call("Calibrate").await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!call.is_finished(), "the call waits while the clock stands");
    f.clock.advance_millis(5_001);
    let e = call.await.unwrap().err().unwrap();
    assert_eq!(e.code(), ErrorCode::Timeout);
    f.outcome(id, Outcome::Timeout).await;
    // The device answers after all: the record keeps the answer.
    f.reply(id, ReplyVia::Rrpc, 200).await;
    let r = f.outcome(id, Outcome::Late(200)).await;
    assert!(r.output.unwrap().contains("Result"));
    f.stop().await;
}

#[tokio::test]
async fn an_offline_device_is_refused_for_sync_and_recorded_for_async() {
    let f = Fixture::start("offline").await;
    f.transport.set_offline(&f.key);
    let e = f.invoke("Calibrate", "{}").await.err().unwrap();
    assert_eq!(e.code(), ErrorCode::Offline);
    let done = f.invoke("Reboot", "{}").await.unwrap();
    f.outcome(done.message_id, Outcome::NotDelivered).await;
    assert_eq!(
        f.records().await.len(),
        1,
        "the refused sync call is not recorded"
    );
    f.stop().await;
}

#[tokio::test]
async fn a_full_queue_is_rate_limit_for_sync_and_recorded_for_async() {
    let f = Fixture::start("queue").await;
    f.transport
        .set_refusal(&f.key, Some(TransportError::QueueFull));
    let e = f.invoke("Calibrate", "{}").await.err().unwrap();
    assert_eq!(e.code(), ErrorCode::RateLimit);
    let done = f.invoke("Reboot", "{}").await.unwrap();
    f.outcome(done.message_id, Outcome::QueueFull).await;
    let outcomes: Vec<Outcome> = f.records().await.iter().map(|r| r.outcome).collect();
    assert!(outcomes.contains(&Outcome::RateLimit), "{outcomes:?}");
    f.transport.set_refusal(&f.key, None);
    f.stop().await;
}

#[tokio::test]
async fn a_device_subscribed_to_nothing_is_half_connected() {
    let f = Fixture::start("halfconn").await;
    f.transport.set_subscribed(&f.key, false);
    let e = f.invoke("Calibrate", "{}").await.err().unwrap();
    assert_eq!(e.code(), ErrorCode::HalfConn);
    let done = f.invoke("Reboot", "{}").await.unwrap();
    f.outcome(done.message_id, Outcome::HalfConn).await;
    f.stop().await;
}

#[tokio::test]
async fn an_async_call_is_recorded_first_and_completed_by_its_reply() {
    let f = Fixture::start("async").await;
    let done = f.invoke("Reboot", r#"{"Delay":1}"#).await.unwrap();
    assert!(done.result.is_none());
    let r = f.outcome(done.message_id, Outcome::Pending).await;
    assert_eq!(r.mode, CallMode::Async);
    assert_eq!(r.input, r#"{"Delay":1}"#);
    let identifier = "Reboot".to_owned();
    f.reply(done.message_id, ReplyVia::Async { identifier }, 200)
        .await;
    f.outcome(done.message_id, Outcome::Replied(200)).await;
    f.stop().await;
}

#[tokio::test]
async fn records_and_message_ids_survive_a_restart() {
    let dir = temp_dir("restart");
    let f = Fixture::start_in(dir.clone(), true).await;
    let first = f.invoke("Reboot", "{}").await.unwrap().message_id;
    let (call, second) = f.start_call("Calibrate").await;
    f.reply(second, ReplyVia::Rrpc, 200).await;
    call.await.unwrap().unwrap();
    f.stop().await;
    // Open the same directory again, with the clock set back an hour.
    let f = Fixture::start_in(dir, false).await;
    f.clock.set(UnixMillis::new(START - 3_600_000));
    let ids: Vec<MessageId> = f.records().await.iter().map(|r| r.message_id).collect();
    assert_eq!(ids, [first, second]);
    let third = f.invoke("Reboot", "{}").await.unwrap().message_id;
    assert!(third > second, "ids continue above the last recorded one");
    let dir = f.dir.clone();
    f.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn set_enabled(state: &Engine, iot_id: &str, enabled: bool) {
    let action = if enabled {
        EnableThing::NAME
    } else {
        DisableThing::NAME
    };
    let params = Params::from_pairs(vec![("IotId".to_owned(), iot_id.to_owned())]).unwrap();
    let request = ApiRequest::parse(action, &params).unwrap();
    crate::actions::dispatch(state, request, Format::Json, &crate::ids::request_id())
        .await
        .unwrap();
}

fn stored_enabled(dir: &std::path::Path, iot_id: &str) -> bool {
    let conn = rusqlite::Connection::open(dir.join("thingcall.db")).unwrap();
    conn.query_row(
        "SELECT enabled FROM devices WHERE iot_id = ?1",
        [iot_id],
        |r| r.get(0),
    )
    .unwrap()
}

/// Presence changes race with DisableThing/EnableThing, hundreds of
/// times: after each round the store, the mirror and the last API call
/// agree on `enabled`, and so does the store after a restart. (Before
/// presence and `enabled` were written as separate columns, a presence
/// write carrying a stale copy of the whole row could land last and
/// bring a disabled device back.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_never_undoes_an_enable_or_disable() {
    let dir = temp_dir("presence-race");
    let f = Fixture::start_in(dir.clone(), true).await;
    let d = f.device.clone();
    let mut enabled = true;
    let mut mismatches = Vec::new();
    for round in 0..400u32 {
        let presence = PresenceEvent {
            device: f.key.clone(),
            online: round % 2 == 0,
            at: UnixMillis::new(START + 1_000 + i64::from(round)),
            client_addr: Some(([127, 0, 0, 1], 1000).into()),
            reason: "test".to_owned(),
        };
        enabled = !enabled;
        let t = Arc::clone(&f.transport);
        let injected = tokio::spawn(async move { t.inject_presence(presence).await });
        set_enabled(f.engine(), &d.iot_id, enabled).await;
        injected.await.unwrap();
        // Let the presence write reach the store (the mirror shows it only
        // after its commit).
        for _ in 0..100 {
            if f.current().online == (round % 2 == 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        let in_store = stored_enabled(&dir, &d.iot_id);
        let in_mirror = f.current().enabled;
        if in_store != enabled || in_mirror != enabled {
            mismatches.push((round, enabled, in_store, in_mirror));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of 400 rounds disagree; the first (round, api, store, mirror): {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(10)]
    );
    f.stop().await;
    let again = Fixture::start_in(dir.clone(), false).await;
    assert_eq!(again.current().enabled, enabled);
    again.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `dispatch` reaches a handler for every action the wire model parses:
/// each action name, with parameters every action accepts, is answered by
/// something other than `InvalidAction.NotFound`.
#[tokio::test]
async fn every_action_has_a_handler() {
    let f = Fixture::start("actions").await;
    let pairs: Vec<(String, String)> = [
        ("ProductKey", PK),
        ("DeviceName", "dev1"),
        ("DeviceName.1", "dev1"),
        ("Identifier", "Reboot"),
        ("Args", "{}"),
        ("ProductName", "Walk_1"),
        ("NodeType", "0"),
        ("TslStr", "{}"),
        ("StartTime", "0"),
        ("EndTime", "1"),
        ("GroupName", "group_1"),
        ("NewGroupName", "group_2"),
        ("GroupId", "DEFAULT_GROUP"),
        ("ConsumerGroupId", "DEFAULT_GROUP"),
        ("ConsumerGroupIds.1", "DEFAULT_GROUP"),
        ("Type", "AMQP"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let params = Params::from_pairs(pairs).unwrap();
    assert_eq!(thingcall_wire::ACTION_NAMES.len(), 29);
    for action in thingcall_wire::ACTION_NAMES {
        let request = ApiRequest::parse(action, &params)
            .unwrap_or_else(|e| panic!("{action} does not parse: {e}"));
        let answer =
            crate::actions::dispatch(f.engine(), request, Format::Json, &crate::ids::request_id())
                .await;
        if let Err(e) = answer {
            assert_ne!(e.code(), ErrorCode::InvalidActionNotFound, "{action}");
        }
    }
    f.stop().await;
}
