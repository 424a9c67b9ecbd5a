//! One conformance suite for every backend: every `Registry` change and
//! `Records` operation, the conflict cases, the order of commits and
//! callbacks, and a restart. It runs on SQLite in a temporary directory,
//! and on PostgreSQL in a database of its own when
//! `THINGCALL_TEST_POSTGRES` names a server (`postgres://USER@HOST/DB`);
//! with `THINGCALL_REQUIRE_POSTGRES=1` (CI) a missing server fails the
//! suite instead of skipping it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use thingcall_core::MessageId;

use super::postgres::PostgresUrl;
use super::*;

/// Where a backend under test keeps its data, to open it again.
enum Backend {
    Sqlite(std::path::PathBuf),
    Postgres(PostgresUrl),
}

struct Opened {
    registry: Arc<dyn Registry>,
    records: Arc<dyn Records>,
}

impl Backend {
    async fn open(&self) -> Opened {
        match self {
            Backend::Sqlite(dir) => {
                let s = Arc::new(sqlite::Store::open(dir).unwrap());
                Opened {
                    registry: s.clone(),
                    records: s,
                }
            }
            Backend::Postgres(url) => {
                let key = Some(sealed::test_key());
                let s = Arc::new(
                    postgres::Store::connect(url, key, std::path::Path::new("."))
                        .await
                        .unwrap(),
                );
                Opened {
                    registry: s.clone(),
                    records: s,
                }
            }
        }
    }
}

/// The PostgreSQL server the tests may use, per the environment.
pub(crate) fn test_postgres() -> Option<PostgresUrl> {
    match std::env::var("THINGCALL_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(PostgresUrl::parse(&url).unwrap()),
        _ => {
            assert!(
                std::env::var("THINGCALL_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "THINGCALL_REQUIRE_POSTGRES=1 but THINGCALL_TEST_POSTGRES names no server"
            );
            None
        }
    }
}

/// A fresh database on the test server, named after the test and process.
pub(crate) async fn fresh_database(server: &PostgresUrl, tag: &str) -> PostgresUrl {
    let name = format!("thingcall_{tag}_{}", std::process::id());
    server.drop_database(&name).await.unwrap();
    server.create_database(&name).await.unwrap();
    server.with_database(&name)
}

fn product(pk: &str, name: &str) -> Product {
    let mut modules = BTreeMap::new();
    modules.insert("blk".to_owned(), "{\"m\":1}".to_owned());
    Product {
        product_key: pk.to_owned(),
        product_name: name.to_owned(),
        product_secret: "ps".into(),
        description: Some("d".to_owned()),
        node_type: 0,
        data_format: Some(1),
        commodity_code: Some("iothub_senior".to_owned()),
        auth_type: "secret".to_owned(),
        protocol_type: Some("MQTT".to_owned()),
        net_type: Some("WIFI".to_owned()),
        category_key: None,
        validate_type: 1,
        created_ms: 10,
        draft_tsl: "{\"draft\":1}".to_owned(),
        versions: vec![ModelVersion {
            version: "V1.0.0".to_owned(),
            description: None,
            tsl: "{\"v\":1}".to_owned(),
            created_ms: 11,
            seq: 1,
            modules,
        }],
        modules: BTreeMap::new(),
    }
}

fn device(pk: &str, dn: &str, iot: &str) -> Device {
    Device {
        iot_id: iot.to_owned(),
        product_key: pk.to_owned(),
        device_name: dn.to_owned(),
        device_secret: "ds".into(),
        nickname: Some("nick".to_owned()),
        enabled: true,
        created_ms: 20,
        activated_ms: None,
        online_ms: None,
        status_ms: 20,
        ip_address: None,
        online: false,
    }
}

fn record(id: u64, iot: &str, identifier: &str, time_ms: i64) -> Invocation {
    Invocation {
        message_id: MessageId::from_u64(id),
        iot_id: iot.to_owned(),
        identifier: identifier.to_owned(),
        name: identifier.to_owned(),
        time_ms,
        mode: CallMode::Async,
        input: "{\"a\":\"\\u00e9\"}".to_owned(),
        output: None,
        outcome: Outcome::Pending,
    }
}

fn completion(id: u64, iot: &str, code: i64) -> Completion {
    Completion {
        message_id: MessageId::from_u64(id),
        iot_id: Some(iot.to_owned()),
        output: Some(format!("{{\"code\":{code}}}")),
        outcome: Outcome::Replied(code),
    }
}

/// Applies a change; returns the result and whether its callback ran.
async fn apply(reg: &dyn Registry, change: Change) -> (Result<(), StoreError>, bool) {
    let ran = Arc::new(Mutex::new(false));
    let flag = Arc::clone(&ran);
    let result = match reg.apply(
        change,
        Box::new(move |_, _| *crate::sync::lock(&flag) = true),
    ) {
        Ok(p) => p.wait().await,
        Err(e) => Err(e),
    };
    let ran = *crate::sync::lock(&ran);
    (result, ran)
}

async fn ok(reg: &dyn Registry, change: Change) {
    let (result, ran) = apply(reg, change).await;
    result.unwrap();
    assert!(ran, "a committed change runs its callback");
}

fn query(iot: &str, ascending: bool) -> RecordQuery {
    RecordQuery {
        iot_id: iot.to_owned(),
        from: 0,
        to: i64::MAX,
        identifier: None,
        ascending,
        limit: 100,
    }
}

async fn suite(backend: Backend) {
    let s = backend.open().await;
    let (reg, rec) = (s.registry.as_ref(), s.records.as_ref());

    // An empty store.
    let empty = reg.load().await.unwrap();
    assert!(empty.products.is_empty() && empty.devices.is_empty());
    assert_eq!(empty.last_message_id, None);

    // AccessKeys: created, then replaced.
    for secret in ["first", "second"] {
        let key = AccessKey {
            id: "LTAIkey".to_owned(),
            secret: secret.into(),
            enabled: true,
        };
        ok(reg, Change::PutAccessKey { key, at: 1 }).await;
    }

    // Products, with a conflict on the name.
    ok(reg, Change::InsertProduct(product("pk1", "Name_1"))).await;
    let (dup, ran) = apply(reg, Change::InsertProduct(product("pk2", "Name_1"))).await;
    assert!(dup.unwrap_err().is_conflict(), "a product name is unique");
    assert!(!ran, "a failed change runs no callback");
    ok(reg, Change::InsertProduct(product("pk2", "Name_2"))).await;

    // Drafts of the default module and of a custom one.
    ok(
        reg,
        Change::SetDraft {
            product_key: "pk1".to_owned(),
            module: None,
            tsl: "{\"draft\":2}".to_owned(),
        },
    )
    .await;
    ok(
        reg,
        Change::SetDraft {
            product_key: "pk1".to_owned(),
            module: Some(("blk".to_owned(), "Block".to_owned())),
            tsl: "{\"block\":1}".to_owned(),
        },
    )
    .await;

    // Publishing keeps the newest versions.
    for seq in 2..=4 {
        let mut modules = BTreeMap::new();
        modules.insert("blk".to_owned(), format!("{{\"block\":{seq}}}"));
        let version = ModelVersion {
            version: format!("V{seq}.0.0"),
            description: Some(format!("v{seq}")),
            tsl: format!("{{\"v\":{seq}}}"),
            created_ms: 100 + seq,
            seq,
            modules,
        };
        ok(
            reg,
            Change::Publish {
                product_key: "pk1".to_owned(),
                version,
                keep: 2,
            },
        )
        .await;
    }

    // Devices: conflicts on the name and on the id, and an unknown product.
    ok(reg, Change::InsertDevice(device("pk1", "dev1", "iot1"))).await;
    let (dup, _) = apply(reg, Change::InsertDevice(device("pk1", "dev1", "iot9"))).await;
    assert!(
        dup.unwrap_err().is_conflict(),
        "a device name is unique per product"
    );
    let (dup, _) = apply(reg, Change::InsertDevice(device("pk2", "other", "iot1"))).await;
    assert!(dup.unwrap_err().is_conflict(), "an IotId is unique");
    let (orphan, _) = apply(reg, Change::InsertDevice(device("nope", "dev", "iot8"))).await;
    assert_eq!(orphan.unwrap_err().kind(), StoreErrorKind::NotFound);
    ok(reg, Change::InsertDevice(device("pk1", "dev2", "iot2"))).await;
    ok(reg, Change::InsertDevice(device("pk2", "dev3", "iot3"))).await;

    // Presence and enabled write their own columns only.
    ok(
        reg,
        Change::SetEnabled {
            iot_id: "iot1".to_owned(),
            enabled: false,
            at: 30,
        },
    )
    .await;
    ok(
        reg,
        Change::Presence {
            iot_id: "iot1".to_owned(),
            online: true,
            at: 31,
            ip_address: Some("10.0.0.1".to_owned()),
        },
    )
    .await;
    ok(
        reg,
        Change::Presence {
            iot_id: "iot1".to_owned(),
            online: true,
            at: 32,
            ip_address: Some("10.0.0.2".to_owned()),
        },
    )
    .await;
    ok(
        reg,
        Change::Presence {
            iot_id: "iot1".to_owned(),
            online: false,
            at: 33,
            ip_address: None,
        },
    )
    .await;

    // A deleted device leaves a tombstone; registering it again clears it.
    ok(
        reg,
        Change::DeleteDevice {
            iot_id: "iot2".to_owned(),
            product_key: "pk1".to_owned(),
            device_name: "dev2".to_owned(),
            at: 40,
        },
    )
    .await;
    ok(
        reg,
        Change::DeleteDevice {
            iot_id: "iot3".to_owned(),
            product_key: "pk2".to_owned(),
            device_name: "dev3".to_owned(),
            at: 41,
        },
    )
    .await;
    ok(reg, Change::InsertDevice(device("pk2", "dev3", "iot4"))).await;
    // A deleted product takes its devices (tombstoned) and models.
    ok(
        reg,
        Change::DeleteProduct {
            product_key: "pk2".to_owned(),
            at: 50,
        },
    )
    .await;

    // Callbacks run in commit order.
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut pendings = Vec::new();
    for i in 0..50 {
        let seen = Arc::clone(&order);
        let change = Change::SetEnabled {
            iot_id: "iot1".to_owned(),
            enabled: i % 2 == 0,
            at: 60 + i,
        };
        pendings.push(
            reg.apply(
                change,
                Box::new(move |_, _| crate::sync::lock(&seen).push(i)),
            )
            .unwrap(),
        );
    }
    for p in pendings {
        p.wait().await.unwrap();
    }
    assert_eq!(*crate::sync::lock(&order), (0..50).collect::<Vec<_>>());

    // Records: written in order, an outcome after its record, the last
    // outcome winning, and only for its device.
    let mut waits = Vec::new();
    for i in 1..=20u64 {
        let identifier = if i % 2 == 0 { "Even" } else { "Odd" };
        waits.push(
            rec.record(record(i, "iot1", identifier, 1_000 + i as i64))
                .unwrap(),
        );
    }
    let mut completions = Vec::new();
    for i in 1..=20u64 {
        completions.push(rec.complete(completion(i, "iot1", 100)).unwrap());
        completions.push(rec.complete(completion(i, "iot1", 200 + i as i64)).unwrap());
    }
    let foreign = rec.complete(completion(3, "iot9", 999)).unwrap();
    let unknown = rec.complete(completion(77, "iot1", 200)).unwrap();
    let beyond = rec
        .complete(Completion {
            message_id: MessageId::from_u64(u64::MAX),
            ..completion(1, "iot1", 200)
        })
        .unwrap();
    // A duplicate record is ignored.
    let duplicate = rec.record(record(5, "iot1", "Dup", 1)).unwrap();
    for w in waits {
        w.wait().await.unwrap();
    }
    for c in completions {
        assert!(c.wait().await.unwrap());
    }
    assert!(
        !foreign.wait().await.unwrap(),
        "another device's outcome applies nowhere"
    );
    assert!(!unknown.wait().await.unwrap());
    assert!(!beyond.wait().await.unwrap());
    duplicate.wait().await.unwrap();

    let rows = rec.query(query("iot1", true)).await.unwrap();
    assert_eq!(rows.len(), 20);
    for (i, r) in rows.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(r.message_id.get(), n);
        assert_eq!(r.outcome, Outcome::Replied(200 + n as i64), "record {n}");
        assert_eq!(
            r.output.as_deref(),
            Some(format!("{{\"code\":{}}}", 200 + n).as_str())
        );
        assert_eq!(r.input, "{\"a\":\"\\u00e9\"}");
        assert_eq!(r.mode, CallMode::Async);
    }
    assert_eq!(
        rows[4].identifier, "Odd",
        "the duplicate did not replace record 5"
    );
    let desc = rec.query(query("iot1", false)).await.unwrap();
    assert_eq!(desc.first().map(|r| r.message_id.get()), Some(20));
    let even = rec
        .query(RecordQuery {
            identifier: Some("Even".to_owned()),
            from: 1_005,
            to: 1_014,
            limit: 3,
            ..query("iot1", true)
        })
        .await
        .unwrap();
    let ids: Vec<u64> = even.iter().map(|r| r.message_id.get()).collect();
    assert_eq!(ids, [6, 8, 10]);
    assert!(rec.query(query("iot9", true)).await.unwrap().is_empty());

    // Every outcome kind reads back as written.
    let kinds = [
        Outcome::Pending,
        Outcome::Late(460),
        Outcome::Timeout,
        Outcome::Offline,
        Outcome::HalfConn,
        Outcome::RateLimit,
        Outcome::RrpcFailed,
        Outcome::NotDelivered,
        Outcome::QueueFull,
    ];
    for (i, outcome) in kinds.iter().enumerate() {
        let id = 100 + i as u64;
        let row = Invocation {
            outcome: *outcome,
            mode: CallMode::Sync,
            ..record(id, "iotK", "K", 5_000)
        };
        rec.record(row).unwrap().wait().await.unwrap();
    }
    let back: Vec<Outcome> = rec
        .query(query("iotK", true))
        .await
        .unwrap()
        .iter()
        .map(|r| r.outcome)
        .collect();
    assert_eq!(back, kinds);

    // Everything survives a restart.
    rec.close().await;
    drop(s);
    let s = backend.open().await;
    let snap = s.registry.load().await.unwrap();
    assert_eq!(snap.access_keys.len(), 1);
    assert_eq!(snap.access_keys[0].secret.expose(), "second");
    assert_eq!(snap.products.len(), 1, "pk2 was deleted");
    let p = &snap.products[0];
    assert_eq!(p.product_key, "pk1");
    assert_eq!(p.draft_tsl, "{\"draft\":2}");
    assert_eq!(
        p.modules.get("blk").map(String::as_str),
        Some("{\"block\":1}")
    );
    assert_eq!(p.net_type.as_deref(), Some("WIFI"));
    let seqs: Vec<i64> = p.versions.iter().map(|v| v.seq).collect();
    assert_eq!(seqs, [3, 4], "two versions kept, oldest first");
    assert_eq!(
        p.versions[1].modules.get("blk").map(String::as_str),
        Some("{\"block\":4}")
    );
    assert_eq!(p.versions[1].description.as_deref(), Some("v4"));
    assert_eq!(snap.devices.len(), 1);
    let d = &snap.devices[0];
    assert_eq!(d.iot_id, "iot1");
    assert!(
        !d.enabled,
        "the last of the 50 changes disabled it (i = 49)"
    );
    assert_eq!(d.activated_ms, Some(31), "activation is the first login");
    assert_eq!(d.online_ms, Some(32));
    assert_eq!(d.ip_address.as_deref(), Some("10.0.0.2"));
    assert_eq!(d.status_ms, 60 + 49);
    assert_eq!(d.nickname.as_deref(), Some("nick"));
    let mut tombstones = snap.tombstones.clone();
    tombstones.sort();
    assert_eq!(
        tombstones,
        [
            ("pk1".to_owned(), "dev2".to_owned()),
            ("pk2".to_owned(), "dev3".to_owned())
        ]
    );
    assert_eq!(snap.last_message_id, Some(108));
    assert_eq!(
        s.records.query(query("iot1", true)).await.unwrap().len(),
        20
    );
    s.records.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_conforms() {
    let dir = std::env::temp_dir().join(format!("thingcall-conformance-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    suite(Backend::Sqlite(dir.clone())).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_conforms() {
    let Some(server) = test_postgres() else {
        eprintln!("THINGCALL_TEST_POSTGRES is not set: the PostgreSQL store is not tested");
        return;
    };
    let url = fresh_database(&server, "conformance").await;
    suite(Backend::Postgres(url.clone())).await;
    server.drop_database(url.database().unwrap()).await.unwrap();
}
