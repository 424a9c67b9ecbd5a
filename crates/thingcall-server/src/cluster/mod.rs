//! The cluster: several identical nodes on one PostgreSQL store and a NATS
//! cluster. Any device may connect to any node; any call may arrive at any
//! node, and behaves as on one node.
//!
//! * **Routing.** A node subscribes `thingcall.dev.<pk>.<dn>` while it holds
//!   the device's session (or keeps its persistent session), so NATS
//!   interest *is* presence: a call for a device held elsewhere is a NATS
//!   request on that subject, answered by the node that holds it after it
//!   delivered; "no responders" means the device is offline everywhere; no
//!   answer within 2 s (a node that hangs) is a timeout. Nothing about
//!   where a device is can be stale, because nothing else is consulted.
//! * **Replies.** A sync call's request is answered once the device
//!   replied (or the call's budget ran out): the reply rides back on the
//!   NATS answer, two messages per call. Replies to async calls and late
//!   replies complete the record in the shared store, by device, on
//!   whichever node receives them.
//! * **Duplicate logins.** A node that accepts a login publishes a kick;
//!   the node that held the device closes that session as replaced.
//! * **Registry changes.** The PostgreSQL store logs every registry change
//!   in the transaction that makes it and sends a `NOTIFY`; every node
//!   listens, and re-reads what the log names after the last entry it
//!   applied (on start-up, on every notice, after a lost connection), in
//!   order. Requests that read the mirror wait while a node catches up
//!   after a lost connection (`gate.rs`); one that waits for its device
//!   has let the gate go. Device logins are checked against the mirror
//!   first and, once the password verified, against the store
//!   (`logins.rs`).
//! * **Presence for status.** Nodes publish their devices' presence and a
//!   heartbeat; `GetDeviceStatus` on any node tells the truth, and a node
//!   unheard for 6 s has its devices shown offline.
//! * **Shared state.** Signature nonces are claimed in the store (a nonce
//!   used on one node is refused on every other); message ids carry the
//!   node's number (claimed in the store), so nodes never make the same.

mod codec;
mod logins;
mod nonces;
#[cfg(test)]
mod tests;

pub(crate) use self::nonces::BatchedNonces;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use thingcall_core::{Clock, MessageId};
use thingcall_gateway::Gateway;
use thingcall_transport::{
    Delivered, Delivery, DeliveryKind, DeviceKey, DeviceReply, EventHub, EventStream,
    PresenceEvent, Transport, TransportError, TransportEvent,
};
use thingcall_tsl::ModelCache;
use tokio::sync::oneshot;

use self::codec::NodeEvent;
pub(crate) use self::logins::StoreCheckedRegistry;
use crate::catalog::{SharedCatalog, read, write};
use crate::store::postgres::Store as PgStore;
use crate::store::{Change, StoreError};
use crate::sync::lock;

/// How a node joins a cluster (`serve --cluster ... [--node-id ...]`).
/// Its `Debug` output hides any password in the NATS URLs.
#[derive(Clone)]
pub struct ClusterConfig {
    /// NATS servers (`nats://HOST:PORT`); the client learns the others
    /// from any one of them.
    pub nats: Vec<String>,
    /// This node's id; `None`: the one kept in the data directory, made up
    /// on first start.
    pub node_id: Option<String>,
}

impl ClusterConfig {
    /// The NATS servers, comma-separated, with any user and password in
    /// them replaced by `***` (for banners, logs and errors).
    pub fn servers_shown(&self) -> String {
        self.nats
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("nats", &self.servers_shown())
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// A URL's user or password, percent-decoded.
fn decode_url_part(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `nats://user:pass@host:4222` → `nats://***@host:4222`.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}***@{host}"),
        None => url.to_owned(),
    }
}

/// How long an async call (or a probe) waits for the node that holds its
/// device to answer.
const DELIVER_TIMEOUT: Duration = Duration::from_secs(2);
/// How much longer than the sync budget a sync call waits for the holding
/// node's answer (which comes at the latest when the budget runs out there).
const ANSWER_GRACE: Duration = Duration::from_millis(200);
/// How often a node says it is alive.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// A node unheard for this long is taken for gone.
const NODE_SILENCE: Duration = Duration::from_secs(6);
/// A node not seen in the store for this long gives up its number.
const NODE_NUMBER_LEASE_MS: i64 = 30_000;
/// How long the answers to "which devices do you hold?" are collected.
const HELLO_WINDOW: Duration = Duration::from_millis(300);

/// The node id kept in `data_dir/node-id`, made up on first start; or
/// the given one (which is not kept: the operator gives it each time).
pub(crate) fn node_id(data_dir: &Path, given: Option<&str>) -> Result<String, String> {
    let path = data_dir.join("node-id");
    if let Some(id) = given {
        check_node_id(id)?;
        return Ok(id.to_owned());
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim().to_owned();
            check_node_id(&id).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = format!("node-{}", crate::ids::alnum(8).to_lowercase());
            std::fs::create_dir_all(data_dir)
                .and_then(|()| std::fs::write(&path, format!("{id}\n")))
                .map_err(|e| format!("cannot keep the node id in {}: {e}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn check_node_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a node id: 1-64 letters, digits, - or _"
        ))
    }
}

/// Claims this node's number among the live nodes.
pub(crate) async fn claim_number(
    store: &PgStore,
    node_id: &str,
    now_ms: i64,
) -> Result<u8, StoreError> {
    store
        .claim_node_number(node_id, now_ms, NODE_NUMBER_LEASE_MS, crate::ids::MAX_NODES)
        .await
}

/// Connects to the NATS cluster: pings every 2 s (a server that hangs is
/// left within seconds, not minutes), reconnects for ever.
pub(crate) async fn connect_nats(
    config: &ClusterConfig,
    node_id: &str,
    reconnected: tokio::sync::mpsc::UnboundedSender<()>,
) -> Result<async_nats::Client, String> {
    let mut addrs = Vec::new();
    for url in &config.nats {
        let addr: async_nats::ServerAddr = url
            .parse()
            .map_err(|e| format!("--cluster: {} is not a NATS URL: {e}", redact_url(url)))?;
        addrs.push(addr);
    }
    if addrs.is_empty() {
        return Err("--cluster names no NATS server".into());
    }
    let shown = config.servers_shown();
    // async-nats does not log in with what a URL carries: a user and a
    // password (nats://user:pass@host), or a token (nats://token@host).
    let mut options = async_nats::ConnectOptions::new();
    if let Some(addr) = addrs.iter().find(|a| a.username().is_some()) {
        let user = addr.username().unwrap_or_default();
        options = match addr.password() {
            Some(pass) => options.user_and_password(decode_url_part(user), decode_url_part(pass)),
            None => options.token(decode_url_part(user)),
        };
    }
    options
        .name(format!("thingcall {node_id}"))
        .ping_interval(Duration::from_secs(2))
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(DELIVER_TIMEOUT))
        .max_reconnects(None)
        .event_callback(move |event| {
            let reconnected = reconnected.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("connected to NATS");
                        let _ = reconnected.send(());
                    }
                    async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                    other => tracing::info!(event = %other, "NATS"),
                }
            }
        })
        .connect(addrs)
        .await
        .map_err(|e| format!("cannot connect to NATS at {shown}: {e}"))
}

/// One node's part in the cluster.
pub(crate) struct Cluster {
    pub(crate) node_id: String,
    nats: async_nats::Client,
    store: Arc<PgStore>,
    gateway: Gateway,
    catalog: SharedCatalog,
    models: Arc<ModelCache>,
    clock: Arc<dyn Clock>,
    /// What the engine hears: the gateway's events, and replies other
    /// nodes forward.
    hub: EventHub,
    gateway_events: Mutex<Option<EventStream>>,
    reconnects: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<()>>>,
    /// Sync calls this node delivered for another, waiting for their
    /// device's reply: message id → (the device called, where its reply
    /// goes).
    forwards: Mutex<HashMap<MessageId, (DeviceKey, oneshot::Sender<DeviceReply>)>>,
    /// A sync call's budget: how long a node waits for the device of a
    /// call made elsewhere, and (a little longer) for the node it asked.
    sync_timeout: Duration,
    /// Devices online on other nodes, by node.
    remote: Mutex<HashMap<DeviceKey, String>>,
    /// Other nodes, by when they were last heard.
    heard: Mutex<HashMap<String, Instant>>,
    /// Devices of nodes that went silent, by node. A frozen node keeps
    /// its NATS subscriptions (the server keeps writing to its socket, so
    /// it never sees the node idle and never pings it out): its devices
    /// are refused as offline at once, instead of timing out.
    orphans: Mutex<HashMap<DeviceKey, String>>,
    /// The device subjects this node answers.
    served: Mutex<HashMap<DeviceKey, tokio::task::AbortHandle>>,
    /// The registry log's last entry applied here; held while catching up.
    applied: tokio::sync::Mutex<i64>,
    /// Requests hold it shared while they read the mirror (`gate.rs`); a
    /// catch-up after a lost connection holds it alone, so no request is
    /// answered from a stale mirror.
    pub(crate) gate: Arc<tokio::sync::RwLock<()>>,
    /// Held from start-up until the registry listener's first catch-up:
    /// changes made between loading the registry and listening are applied
    /// before the first request is answered.
    starting: Mutex<Option<tokio::sync::OwnedRwLockWriteGuard<()>>>,
    /// Device logins' checks: told each time a catch-up applied changes.
    pub(crate) logins: Arc<crate::limits::LoginChecks>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    #[allow(clippy::too_many_arguments)] // the node's parts, each once
    pub(crate) fn new(
        node_id: String,
        nats: async_nats::Client,
        reconnects: tokio::sync::mpsc::UnboundedReceiver<()>,
        store: Arc<PgStore>,
        gateway: Gateway,
        catalog: SharedCatalog,
        models: Arc<ModelCache>,
        clock: Arc<dyn Clock>,
        applied: i64,
        sync_timeout: Duration,
        logins: Arc<crate::limits::LoginChecks>,
    ) -> Arc<Cluster> {
        // Subscribed now, before the gateway accepts anyone: no event lost.
        let gateway_events = gateway.subscribe();
        let gate = Arc::new(tokio::sync::RwLock::new(()));
        let starting = Arc::clone(&gate).try_write_owned().ok();
        Arc::new(Cluster {
            node_id,
            nats,
            store,
            gateway,
            catalog,
            models,
            clock,
            hub: EventHub::new(),
            gateway_events: Mutex::new(Some(gateway_events)),
            reconnects: Mutex::new(Some(reconnects)),
            forwards: Mutex::new(HashMap::new()),
            sync_timeout,
            remote: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
            orphans: Mutex::new(HashMap::new()),
            served: Mutex::new(HashMap::new()),
            applied: tokio::sync::Mutex::new(applied),
            gate,
            starting: Mutex::new(starting),
            logins,
        })
    }

    /// The engine's transport.
    pub(crate) fn transport(self: &Arc<Cluster>) -> Arc<dyn Transport> {
        Arc::new(ClusterTransport(Arc::clone(self)))
    }

    /// Starts the node's work in the cluster; it runs until the tasks are
    /// aborted (the server stops).
    pub(crate) async fn start(
        self: &Arc<Cluster>,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
        let sub = |subject: String| {
            let nats = self.nats.clone();
            async move {
                nats.subscribe(subject.clone())
                    .await
                    .map_err(|e| format!("cannot subscribe {subject}: {e}"))
            }
        };
        let presence = sub(codec::PRESENCE.to_owned()).await?;
        let kicks = sub(codec::KICKS.to_owned()).await?;
        let heartbeats = sub(codec::HEARTBEAT.to_owned()).await?;
        let hellos = sub(codec::HELLO.to_owned()).await?;
        let _ = self.nats.flush().await;
        let mut tasks = Vec::new();
        // The registry listener first: requests wait for its first
        // catch-up (changes made while this node was starting).
        let me = Arc::clone(self);
        tasks.push(tokio::spawn(async move { me.listen_registry().await }));
        // Who holds what, asked while the node already serves.
        let me = Arc::clone(self);
        tasks.push(tokio::spawn(async move { me.hello().await }));
        let me = Arc::clone(self);
        if let Some(events) = lock(&self.gateway_events).take() {
            tasks.push(tokio::spawn(async move { me.pump(events).await }));
        }
        let me = Arc::clone(self);
        tasks.push(tokio::spawn(async move { me.presence(presence).await }));
        let me = Arc::clone(self);
        tasks.push(tokio::spawn(async move { me.kicks(kicks).await }));
        let me = Arc::clone(self);
        tasks.push(tokio::spawn(async move { me.heartbeats(heartbeats).await }));
        let me = Arc::clone(self);
        tasks.push(tokio::spawn(async move { me.answer_hellos(hellos).await }));
        let me = Arc::clone(self);
        tasks.push(tokio::spawn(async move { me.housekeeping().await }));
        if let Some(mut reconnects) = lock(&self.reconnects).take() {
            let me = Arc::clone(self);
            tasks.push(tokio::spawn(async move {
                // The first "connected" is the initial connection.
                let _ = reconnects.recv().await;
                while reconnects.recv().await.is_some() {
                    // Presence events and kicks may have been missed
                    // meanwhile, both ways.
                    me.announce_holdings().await;
                    me.hello().await;
                }
            }));
        }
        Ok(tasks)
    }

    /// Waits (at most `limit`) until every sync call this node delivered
    /// for another node has its reply forwarded: a draining node lets its
    /// devices go only after answering what other nodes asked of them.
    pub(crate) async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let waiting = lock(&self.forwards).len();
            if waiting == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    calls = waiting,
                    "stopping with calls of other nodes unanswered"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().get()
    }

    async fn publish(&self, subject: String, payload: Vec<u8>) {
        if let Err(e) = self.nats.publish(subject, payload.into()).await {
            tracing::warn!(error = %e, "cannot publish to NATS");
        }
    }

    /// The gateway's events: presence is announced (and the device's
    /// subject answered or left), replies to calls made for other nodes
    /// are forwarded, and everything else goes to the engine.
    async fn pump(self: Arc<Self>, mut events: EventStream) {
        while let Some(event) = events.recv().await {
            match event {
                TransportEvent::Presence(p) => {
                    // A login is checked against the store, so a device
                    // registered through another node a moment ago can be
                    // here before its registration is: read the registry
                    // first, so that its presence is recorded.
                    let known = read(&self.catalog)
                        .device_by_name(
                            p.device.product_key.as_str(),
                            p.device.device_name.as_str(),
                        )
                        .is_some();
                    if !known && let Err(e) = self.catch_up().await {
                        tracing::warn!(device = %p.device, error = %e, "cannot read the registry for a device's presence");
                    }
                    self.local_presence(&p).await;
                    self.hub.publish(TransportEvent::Presence(p)).await;
                }
                TransportEvent::Post(p) => self.hub.publish(TransportEvent::Post(p)).await,
                TransportEvent::Reply(r) => {
                    // The reply to a call another node made goes back on
                    // that call's answer, if it is this device's call.
                    let waiting = r.message_id.and_then(|id| {
                        let mut forwards = lock(&self.forwards);
                        match forwards.get(&id) {
                            Some((device, _)) if *device == r.device => {
                                forwards.remove(&id).map(|(_, tx)| tx)
                            }
                            _ => None,
                        }
                    });
                    match waiting {
                        Some(tx) => {
                            if let Err(r) = tx.send(r) {
                                // The wait ended meanwhile: a late reply,
                                // recorded like one.
                                self.hub.publish(TransportEvent::Reply(r)).await;
                            }
                        }
                        None => self.hub.publish(TransportEvent::Reply(r)).await,
                    }
                }
            }
        }
    }

    async fn local_presence(self: &Arc<Self>, p: &PresenceEvent) {
        let event = NodeEvent {
            node: self.node_id.clone(),
            device: p.device.clone(),
            online: p.online,
            at: p.at.get(),
            ip: p.client_addr.map(|a| a.ip().to_string()),
            reason: p.reason.clone(),
        };
        if p.online {
            self.serve_device(&p.device).await;
            lock(&self.remote).remove(&p.device);
            lock(&self.orphans).remove(&p.device);
            // Whoever held the device before lets it go.
            let kick = NodeEvent {
                reason: "replaced".to_owned(),
                ..event.clone()
            };
            self.publish(codec::kick_subject(&p.device), codec::encode_event(&kick))
                .await;
        } else if !self.gateway.has_stored_session(&p.device) {
            self.leave_device(&p.device);
        }
        self.publish(codec::PRESENCE.to_owned(), codec::encode_event(&event))
            .await;
    }

    /// Answers the device's subject: delivers what other nodes send it.
    /// Returns once NATS has the subscription, so the presence announced
    /// next never precedes the interest that routes calls here.
    async fn serve_device(self: &Arc<Self>, device: &DeviceKey) {
        if lock(&self.served).contains_key(device) {
            return;
        }
        let subject = codec::device_subject(device);
        let mut sub = match self.nats.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%subject, error = %e, "cannot answer a device's subject");
                return;
            }
        };
        if let Err(e) = self.nats.flush().await {
            tracing::warn!(error = %e, "cannot flush a subscription to NATS");
        }
        let me = Arc::clone(self);
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(reply_to) = msg.reply.clone() else {
                    continue;
                };
                // Each delivery on its own task: a device whose queue is
                // full must not hold up the next call's answer.
                if msg.payload.as_ref() == codec::PROBE {
                    let answer = format!("{}{}", codec::PROBE_ANSWER, me.node_id);
                    let _ = me.nats.publish(reply_to, answer.into()).await;
                    continue;
                }
                let me = Arc::clone(&me);
                tokio::spawn(async move {
                    let (outcome, reply) = match codec::decode_delivery(&msg.payload) {
                        Ok((delivery, origin, wait)) => {
                            let (id, wait) = (delivery.message_id, wait.min(me.sync_timeout));
                            let (outcome, reply) = me.deliver_for(delivery, wait).await;
                            if let Err(e) = &outcome {
                                tracing::debug!(%origin, message_id = %id, error = %e, "a call of another node not delivered");
                            }
                            (outcome, reply)
                        }
                        Err(e) => (
                            Err(TransportError::Failed(format!("a malformed delivery: {e}"))),
                            None,
                        ),
                    };
                    let answer = codec::encode_answer(&outcome, reply.as_ref());
                    if let Err(e) = me.nats.publish(reply_to, answer.into()).await {
                        tracing::warn!(error = %e, "cannot answer a delivery");
                    }
                });
            }
        });
        let mut served = lock(&self.served);
        if let Some(old) = served.insert(device.clone(), task.abort_handle()) {
            // Another login raced this one here; one subscription is enough.
            old.abort();
        }
    }

    /// Stops answering the device's subject.
    fn leave_device(&self, device: &DeviceKey) {
        if let Some(task) = lock(&self.served).remove(device) {
            task.abort();
        }
    }

    /// Delivers a call another node made; for a sync call, also waits (at
    /// most `wait`) for the device's reply, which goes back on the answer.
    async fn deliver_for(
        &self,
        delivery: Delivery,
        wait: Duration,
    ) -> (Result<Delivered, TransportError>, Option<DeviceReply>) {
        let id = delivery.message_id;
        if !matches!(delivery.kind, DeliveryKind::Rrpc { .. }) {
            return (self.gateway.deliver(delivery).await, None);
        }
        // Noted before the delivery: the reply can come back before the
        // deliver call returns.
        let (tx, rx) = oneshot::channel();
        lock(&self.forwards).insert(id, (delivery.device.clone(), tx));
        let outcome = self.gateway.deliver(delivery).await;
        let expecting = matches!(
            &outcome,
            Ok(d) if d.outcome != thingcall_transport::DeliveryOutcome::NoSubscriber
        );
        if !expecting {
            lock(&self.forwards).remove(&id);
            return (outcome, None);
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(reply)) => (outcome, Some(reply)),
            _ => {
                // No reply in time: the caller's budget is spent too. A
                // reply after this is late, and recorded as such here.
                lock(&self.forwards).remove(&id);
                (outcome, None)
            }
        }
    }

    /// Other nodes' presence: the mirror shows it (the node that holds the
    /// device writes it to the store).
    async fn presence(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(msg) = sub.next().await {
            let Ok(e) = codec::decode_event(&msg.payload) else {
                continue;
            };
            if e.node == self.node_id {
                continue;
            }
            lock(&self.heard).insert(e.node.clone(), Instant::now());
            self.remote_presence_caught_up(&e).await;
        }
    }

    /// [`Self::remote_presence`], for a device this node may not know yet:
    /// its registration is committed before it can log in anywhere, but
    /// the change notice can come after the other node's presence. Then
    /// the registry is read first, and the presence shown after it.
    async fn remote_presence_caught_up(&self, e: &NodeEvent) {
        if self.remote_presence(e) {
            return;
        }
        if let Err(err) = self.catch_up().await {
            tracing::warn!(device = %e.device, error = %err, "cannot read the registry for a device's presence");
        }
        if !self.mirror_presence(&e.device, e.online, e.at, e.ip.clone()) {
            tracing::debug!(device = %e.device, node = %e.node, "presence of a device not in the registry");
        }
    }

    /// Shows another node's presence event; false when the mirror does not
    /// know the device (yet), so that nothing was shown.
    fn remote_presence(&self, e: &NodeEvent) -> bool {
        if self.gateway.is_connected(&e.device) {
            // Held here too (a kick was lost while a node was cut off from
            // NATS): the later login wins, as on one node.
            if e.online && e.at > self.local_login(&e.device) {
                if self.gateway.replace(&e.device) {
                    tracing::info!(device = %e.device, node = %e.node, "the device logged in later on another node");
                }
                self.leave_device(&e.device);
            } else {
                if e.online {
                    // The other session is the older one: tell its node
                    // again to let it go.
                    let kick = NodeEvent {
                        node: self.node_id.clone(),
                        device: e.device.clone(),
                        online: true,
                        at: self.local_login(&e.device),
                        ip: None,
                        reason: "replaced".to_owned(),
                    };
                    let nats = self.nats.clone();
                    tokio::spawn(async move {
                        let _ = nats
                            .publish(
                                codec::kick_subject(&kick.device),
                                codec::encode_event(&kick).into(),
                            )
                            .await;
                    });
                }
                return true;
            }
        }
        {
            let mut remote = lock(&self.remote);
            if e.online {
                lock(&self.orphans).remove(&e.device);
                remote.insert(e.device.clone(), e.node.clone());
            } else if remote.get(&e.device) == Some(&e.node) {
                remote.remove(&e.device);
            } else {
                // An old session's end, after the device moved on.
                return true;
            }
        }
        self.mirror_presence(&e.device, e.online, e.at, e.ip.clone())
    }

    /// When the device's session here began (as the mirror knows it).
    fn local_login(&self, device: &DeviceKey) -> i64 {
        read(&self.catalog)
            .device_by_name(device.product_key.as_str(), device.device_name.as_str())
            .and_then(|d| d.online_ms)
            .unwrap_or(0)
    }

    /// Tells every node again which devices this one holds (after a lost
    /// NATS connection): a node that took one of them meanwhile keeps it
    /// if its login is the later one, else lets it go.
    async fn announce_holdings(&self) {
        for device in self.gateway.connected() {
            let (at, ip) = {
                let catalog = read(&self.catalog);
                let known = catalog
                    .device_by_name(device.product_key.as_str(), device.device_name.as_str());
                (
                    known.and_then(|k| k.online_ms).unwrap_or(0),
                    known.and_then(|k| k.ip_address.clone()),
                )
            };
            let event = NodeEvent {
                node: self.node_id.clone(),
                device,
                online: true,
                at,
                ip,
                reason: "reconnected".to_owned(),
            };
            self.publish(codec::PRESENCE.to_owned(), codec::encode_event(&event))
                .await;
        }
    }

    /// Shows a presence change in the mirror; false when the mirror does
    /// not know the device.
    fn mirror_presence(
        &self,
        device: &DeviceKey,
        online: bool,
        at: i64,
        ip: Option<String>,
    ) -> bool {
        let mut catalog = write(&self.catalog);
        let Some(iot_id) = catalog
            .device_by_name(device.product_key.as_str(), device.device_name.as_str())
            .map(|d| d.iot_id.clone())
        else {
            return false;
        };
        catalog.apply(&Change::Presence {
            iot_id,
            online,
            at,
            ip_address: ip,
        });
        true
    }

    /// Kicks from other nodes: a device that logged in there, or that was
    /// disabled or deleted there.
    async fn kicks(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(msg) = sub.next().await {
            let Ok(e) = codec::decode_event(&msg.payload) else {
                continue;
            };
            if e.node == self.node_id {
                continue;
            }
            if e.reason == "replaced" {
                if self.gateway.is_connected(&e.device) && self.local_login(&e.device) > e.at {
                    // A kick older than this node's session (it arrived
                    // late): the later login stays.
                    continue;
                }
                if self.gateway.replace(&e.device) {
                    tracing::info!(device = %e.device, node = %e.node, "the device logged in on another node");
                }
                self.leave_device(&e.device);
            } else {
                // Disabled or deleted there: see it here first, so the
                // device's next login is refused.
                if let Err(err) = self.catch_up().await {
                    tracing::error!(error = %err, "cannot read the registry's recent changes");
                }
                self.gateway.disconnect(&e.device, &e.reason).await;
                self.leave_device(&e.device);
            }
        }
    }

    /// Says this node is alive, and forgets nodes that went silent.
    async fn heartbeats(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        let beat = codec::NodeEvent {
            node: self.node_id.clone(),
            device: DeviceKey::new(
                thingcall_core::ProductKey::new("heartbeat").unwrap_or_else(|_| unreachable!()),
                thingcall_core::DeviceName::new("node").unwrap_or_else(|_| unreachable!()),
            ),
            online: true,
            at: 0,
            ip: None,
            reason: String::new(),
        };
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.publish(codec::HEARTBEAT.to_owned(), codec::encode_event(&beat)).await;
                    self.forget_silent_nodes();
                }
                msg = sub.next() => {
                    let Some(msg) = msg else { break };
                    if let Ok(e) = codec::decode_event(&msg.payload)
                        && e.node != self.node_id
                    {
                        let known = lock(&self.heard).insert(e.node.clone(), Instant::now()).is_some();
                        if !known {
                            lock(&self.orphans).retain(|_, node| *node != e.node);
                            // A node that starts, or that comes back after
                            // a silence (frozen, cut off; or this one was):
                            // both sides say again what they hold.
                            let me = Arc::clone(&self);
                            tokio::spawn(async move {
                                me.announce_holdings().await;
                                me.hello().await;
                            });
                        }
                    }
                }
            }
        }
    }

    fn forget_silent_nodes(&self) {
        let silent: Vec<String> = {
            let mut heard = lock(&self.heard);
            let gone: Vec<String> = heard
                .iter()
                .filter(|(_, at)| at.elapsed() > NODE_SILENCE)
                .map(|(n, _)| n.clone())
                .collect();
            for n in &gone {
                heard.remove(n);
            }
            gone
        };
        if silent.is_empty() {
            return;
        }
        let orphans: Vec<DeviceKey> = {
            let mut remote = lock(&self.remote);
            let gone: Vec<DeviceKey> = remote
                .iter()
                .filter(|(_, node)| silent.contains(node))
                .map(|(d, _)| d.clone())
                .collect();
            for d in &gone {
                if let Some(node) = remote.remove(d) {
                    lock(&self.orphans).insert(d.clone(), node);
                }
            }
            gone
        };
        tracing::warn!(nodes = ?silent, devices = orphans.len(), "nodes went silent; their devices are shown offline");
        let at = self.now_ms();
        for d in orphans {
            self.mirror_presence(&d, false, at, None);
        }
    }

    /// Asks every node which devices it holds (start-up, reconnection).
    async fn hello(&self) {
        let inbox = self.nats.new_inbox();
        let mut answers = match self.nats.subscribe(inbox.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask the other nodes for their devices");
                return;
            }
        };
        if let Err(e) = self
            .nats
            .publish_with_reply(
                codec::HELLO,
                inbox,
                self.node_id.clone().into_bytes().into(),
            )
            .await
        {
            tracing::warn!(error = %e, "cannot ask the other nodes for their devices");
            return;
        }
        let deadline = tokio::time::Instant::now() + HELLO_WINDOW;
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, answers.next()).await {
            let Ok((node, devices)) = codec::decode_holdings(&msg.payload) else {
                continue;
            };
            if node == self.node_id {
                continue;
            }
            lock(&self.heard).insert(node.clone(), Instant::now());
            for (device, at, ip) in devices {
                self.remote_presence_caught_up(&NodeEvent {
                    node: node.clone(),
                    device,
                    online: true,
                    at,
                    ip,
                    reason: "hello".to_owned(),
                })
                .await;
            }
        }
    }

    async fn answer_hellos(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(msg) = sub.next().await {
            let Some(reply_to) = msg.reply else { continue };
            let held: Vec<(DeviceKey, i64, Option<String>)> = {
                let catalog = read(&self.catalog);
                self.gateway
                    .connected()
                    .into_iter()
                    .map(|d| {
                        let known =
                            catalog.device_by_name(d.product_key.as_str(), d.device_name.as_str());
                        let at = known.map_or(0, |k| k.online_ms.unwrap_or(k.status_ms));
                        let ip = known.and_then(|k| k.ip_address.clone());
                        (d, at, ip)
                    })
                    .collect()
            };
            let answer = codec::encode_holdings(&self.node_id, &held);
            if let Err(e) = self.nats.publish(reply_to, answer.into()).await {
                tracing::warn!(error = %e, "cannot answer a hello");
            }
        }
    }

    /// Re-reads every registry change logged after the last one applied
    /// here, in order, into the mirror.
    pub(crate) async fn catch_up(&self) -> Result<(), StoreError> {
        let mut applied = self.applied.lock().await;
        loop {
            let changes = self.store.registry_changes_after(*applied).await?;
            let Some(last) = changes.last().map(|c| c.seq) else {
                return Ok(());
            };
            let mut evict = Vec::new();
            let mut removed = Vec::new();
            {
                let mut catalog = write(&self.catalog);
                for c in &changes {
                    let applied = catalog.refresh_logged(c);
                    evict.extend(applied.versions);
                    removed.extend(applied.removed);
                }
            }
            for (product, kept) in evict {
                let kept: Vec<u64> = kept.iter().filter_map(|s| u64::try_from(*s).ok()).collect();
                self.models.retain(&product, |seq| kept.contains(&seq));
            }
            for d in removed {
                if let Ok(key) = crate::engine::device_key(&d) {
                    self.gateway.disconnect(&key, "device deleted").await;
                }
            }
            tracing::debug!(changes = changes.len(), last, "registry changes applied");
            *applied = last;
            // A login waiting for a device the mirror did not know looks
            // again.
            self.logins.mirror_moved();
        }
    }

    /// Listens for registry changes on a connection of its own: catches
    /// up on every notice, and after a lost connection (holding requests
    /// back meanwhile).
    async fn listen_registry(self: Arc<Self>) {
        let mut delay = Duration::from_millis(100);
        loop {
            // The store's connector: the URL's TLS, as every connection.
            let connector = self.store.connector();
            let connected = connector.connect_raw().await;
            let (client, mut connection) = match connected {
                Ok(pair) => pair,
                Err(e) => {
                    let error = connector.explain(&e);
                    tracing::warn!(%error, "cannot listen for registry changes; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            let (notices_tx, mut notices) = tokio::sync::mpsc::unbounded_channel();
            let driver = tokio::spawn(async move {
                let mut stream =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = stream.next().await {
                    match message {
                        Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                            let _ = notices_tx.send(());
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "the registry listener's connection failed");
                            break;
                        }
                    }
                }
            });
            if let Err(e) = client.batch_execute("LISTEN thingcall_registry").await {
                tracing::warn!(error = %e, "cannot listen for registry changes; retrying");
                driver.abort();
                tokio::time::sleep(delay).await;
                continue;
            }
            delay = Duration::from_millis(100);
            // Whatever changed while nobody listened, before any request.
            {
                let starting = lock(&self.starting).take();
                let _closed = match starting {
                    Some(guard) => guard,
                    None => Arc::clone(&self.gate).write_owned().await,
                };
                if let Err(e) = self.catch_up().await {
                    tracing::error!(error = %e, "cannot read the registry's recent changes");
                }
            }
            while notices.recv().await.is_some() {
                tracing::debug!("registry change notice");
                // Several notices at once need one catch-up.
                while notices.try_recv().is_ok() {}
                if let Err(e) = self.catch_up().await {
                    tracing::error!(error = %e, "cannot read the registry's recent changes");
                }
            }
            driver.abort();
            tracing::warn!("lost the registry listener's connection; reconnecting");
        }
    }

    /// The node's lease on its number, expired nonces.
    async fn housekeeping(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let mut round = 0u64;
        loop {
            tick.tick().await;
            round += 1;
            let now = self.now_ms();
            if let Err(e) = self.store.touch_node(&self.node_id, now).await {
                tracing::warn!(error = %e, "cannot renew the node's lease");
            }
            if round.is_multiple_of(12)
                && let Err(e) = self.store.expire_nonces(now).await
            {
                tracing::warn!(error = %e, "cannot forget expired nonces");
            }
        }
    }
}

/// The engine's transport in a cluster: the local gateway for devices held
/// here, NATS for every other.
struct ClusterTransport(Arc<Cluster>);

#[async_trait]
impl Transport for ClusterTransport {
    async fn deliver(&self, delivery: Delivery) -> Result<Delivered, TransportError> {
        let c = &self.0;
        if c.gateway.is_connected(&delivery.device)
            || c.gateway.has_stored_session(&delivery.device)
        {
            return c.gateway.deliver(delivery).await;
        }
        if lock(&c.orphans).contains_key(&delivery.device) {
            return Err(TransportError::Offline);
        }
        // A sync call's request is answered when the device replied (or
        // its budget ran out on the holding node); an async one at once.
        let sync = matches!(delivery.kind, DeliveryKind::Rrpc { .. });
        let (wait, timeout) = if sync {
            (c.sync_timeout, c.sync_timeout + ANSWER_GRACE)
        } else {
            (Duration::ZERO, DELIVER_TIMEOUT)
        };
        let payload =
            codec::encode_delivery(&delivery, &c.node_id, wait).map_err(TransportError::Failed)?;
        let subject = codec::device_subject(&delivery.device);
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(timeout));
        match c.nats.send_request(subject, request).await {
            Ok(answer) => {
                let (outcome, reply) = codec::decode_answer(&answer.payload);
                if let Some(reply) = reply {
                    // Settles the call, which the engine noted before
                    // delivering it.
                    c.hub.publish(TransportEvent::Reply(reply)).await;
                }
                outcome
            }
            Err(e) => match e.kind() {
                async_nats::client::RequestErrorKind::NoResponders => Err(TransportError::Offline),
                async_nats::client::RequestErrorKind::TimedOut => Err(TransportError::TimedOut),
                _ => Err(TransportError::Failed(e.to_string())),
            },
        }
    }

    fn is_online(&self, device: &DeviceKey) -> bool {
        self.0.gateway.is_connected(device) || lock(&self.0.remote).contains_key(device)
    }

    /// Known online: yes at once. Otherwise the device's subject is asked:
    /// a node that holds it answers (and this node learns where it is);
    /// no responders means offline everywhere; a node that does not answer
    /// is left to the delivery to time out within the call's budget.
    async fn reachable(&self, device: &DeviceKey) -> bool {
        let c = &self.0;
        if self.is_online(device) || c.gateway.has_stored_session(device) {
            return true;
        }
        if lock(&c.orphans).contains_key(device) {
            return false;
        }
        let subject = codec::device_subject(device);
        match c.nats.request(subject, codec::PROBE.into()).await {
            Ok(answer) => {
                if let Ok(node) = std::str::from_utf8(&answer.payload)
                    && let Some(node) = node.strip_prefix(codec::PROBE_ANSWER)
                    && node != c.node_id
                {
                    let at = c.now_ms();
                    c.remote_presence(&NodeEvent {
                        node: node.to_owned(),
                        device: device.clone(),
                        online: true,
                        at,
                        ip: None,
                        reason: "probe".to_owned(),
                    });
                }
                true
            }
            Err(e) => !matches!(e.kind(), async_nats::client::RequestErrorKind::NoResponders),
        }
    }

    async fn disconnect(&self, device: &DeviceKey, reason: &str) -> bool {
        let c = &self.0;
        let here = c.gateway.disconnect(device, reason).await;
        c.leave_device(device);
        let kick = NodeEvent {
            node: c.node_id.clone(),
            device: device.clone(),
            online: false,
            at: c.now_ms(),
            ip: None,
            reason: reason.to_owned(),
        };
        c.publish(codec::kick_subject(device), codec::encode_event(&kick))
            .await;
        here || lock(&c.remote).contains_key(device)
    }

    fn subscribe(&self) -> EventStream {
        self.0.hub.subscribe()
    }
}
