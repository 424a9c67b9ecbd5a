//! The engine in memory: `MemoryTransport`, a real SQLite store in a
//! temporary directory, and the store's registry changes.

use super::*;
use crate::store::Product;
use thingcall_transport::{MemoryTransport, PresenceEvent};
use thingcall_wire::actions::{DisableThing, EnableThing};
use thingcall_wire::{Action, ApiRequest, Format, Params};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "thingcall-state-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn engine(
    dir: &std::path::Path,
) -> (
    Arc<Engine>,
    Arc<MemoryTransport>,
    Arc<crate::store::sqlite::Store>,
) {
    let store = Arc::new(crate::store::sqlite::Store::open(dir).unwrap());
    let (catalog, last) = load_catalog(store.as_ref()).await.unwrap();
    let transport = Arc::new(MemoryTransport::new());
    let state = Arc::new(Engine::assemble(
        ServerConfig::default(),
        store.clone(),
        store.clone(),
        catalog,
        last,
        transport.clone(),
        Arc::new(crate::SystemClock),
        None,
    ));
    (state, transport, store)
}

fn product(pk: &str) -> Product {
    Product {
        product_key: pk.to_owned(),
        product_name: format!("name_{pk}"),
        product_secret: "s".into(),
        description: None,
        node_type: 0,
        data_format: None,
        commodity_code: None,
        auth_type: "secret".to_owned(),
        protocol_type: None,
        net_type: None,
        category_key: None,
        validate_type: 1,
        created_ms: 1,
        draft_tsl: "{}".to_owned(),
        versions: Vec::new(),
        modules: Default::default(),
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
    let (state, transport, store) = engine(&dir).await;
    let events = tokio::spawn(Arc::clone(&state).run_events(transport.subscribe()));
    state
        .change(Change::InsertProduct(product("a1Race")))
        .await
        .unwrap();
    let d = device("a1Race", "racer");
    state.change(Change::InsertDevice(d.clone())).await.unwrap();
    let key = device_key(&d).unwrap();
    let mut enabled = true;
    let mut mismatches = Vec::new();
    for round in 0..400u32 {
        let presence = PresenceEvent {
            device: key.clone(),
            online: round % 2 == 0,
            at: UnixMillis::new(1_000 + i64::from(round)),
            client_addr: Some(([127, 0, 0, 1], 1000).into()),
            reason: "test".to_owned(),
        };
        enabled = !enabled;
        let t = Arc::clone(&transport);
        let injected = tokio::spawn(async move { t.inject_presence(presence).await });
        set_enabled(&state, &d.iot_id, enabled).await;
        injected.await.unwrap();
        // Let the presence write reach the store.
        for _ in 0..100 {
            let activated = read(&state.catalog)
                .devices
                .get(&d.iot_id)
                .is_some_and(|m| m.status_ms >= 1_000 + i64::from(round));
            if activated {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        let in_store = stored_enabled(&dir, &d.iot_id);
        let in_mirror = read(&state.catalog).devices[&d.iot_id].enabled;
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
    events.abort();
    store.close();
    drop(state);
    drop(store);
    let (again, _, store) = engine(&dir).await;
    assert_eq!(read(&again.catalog).devices[&d.iot_id].enabled, enabled);
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}
