//! Consumer groups: who is attached, which stored message each one holds,
//! and the dispatcher that hands the backlog out.
//!
//! Messages live in the store (the [`Backlog`]); a group's dispatcher
//! reads a bounded window of them in order (`seq`), gives each to one
//! attached consumer that has room, and removes it from the store once the
//! consumer accepts it. A message that is released, rejected, modified,
//! held by a consumer that goes away, or not settled within the ack
//! timeout is handed out again. Memory per group is bounded by the window
//! and each consumer's pipeline, whatever the backlog's size: a consumer
//! that grants no credit leaves its messages in the store.
//!
//! Order: with `per_device_order` (the default) a device's next message is
//! handed out only once its previous one is settled, so a group receives
//! each device's messages in the order they happened, redeliveries
//! included.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// One stored message of a group's backlog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    /// The store's position: increasing in the order messages were queued.
    pub seq: u64,
    /// What orders messages (`productKey/deviceName`).
    pub key: String,
    /// The forwarded topic (application property `topic`).
    pub topic: String,
    /// The message id (application property `messageId`), the same on
    /// every redelivery.
    pub message_id: u64,
    /// When the message was made, epoch ms (`generateTime`).
    pub generate_ms: i64,
    /// The payload (one `data` section).
    pub body: Vec<u8>,
}

/// Where a group's messages wait: the server's store.
#[async_trait]
pub trait Backlog: Send + Sync + 'static {
    /// Up to `limit` messages of `group` with `seq > after`, oldest first.
    async fn read(&self, group: &str, after: u64, limit: usize) -> Result<Vec<Queued>, String>;
    /// Removes an accepted message (queued; the store logs a failure).
    fn ack(&self, group: &str, seq: u64);
}

/// Dispatch settings.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// A delivery not settled within this is handed out again (Alibaba: 30 s).
    pub ack_timeout: Duration,
    /// A released or rejected message waits this long before it is handed
    /// out again (a consumer that releases everything must not spin).
    pub retry_delay: Duration,
    /// Unsettled deliveries per consumer.
    pub consumer_window: usize,
    /// Messages read from the store at a time (the window is twice this).
    pub read_batch: usize,
    /// Hand out a device's next message only after its previous one is
    /// settled.
    pub per_device_order: bool,
    /// Messages older than this are dropped instead of delivered.
    pub retention: Duration,
    /// Connections per client id (Alibaba: 128).
    pub max_connections_per_client: usize,
    /// Client ids per group (Alibaba: 64).
    pub max_clients_per_group: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            ack_timeout: Duration::from_secs(30),
            retry_delay: Duration::from_secs(1),
            consumer_window: 256,
            read_batch: 1024,
            per_device_order: true,
            retention: Duration::from_secs(24 * 3600),
            max_connections_per_client: 128,
            max_clients_per_group: 64,
        }
    }
}

/// How a consumer settled a delivery (or failed to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// `accepted`: done.
    Accepted,
    /// `released`, `modified` or `rejected`: hand it out again.
    Returned,
    /// The link or connection went away first.
    Lost,
    /// The consumer no longer held it (handed to another after a timeout)
    /// and did not send it.
    Skipped,
}

/// A connected consumer as `QueryConsumerGroupStatus` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientStatus {
    /// The client id of its username.
    pub client_id: String,
    /// Its address.
    pub addr: Option<SocketAddr>,
    /// When it attached, epoch ms.
    pub online_ms: i64,
    /// Messages it accepted in the last minute.
    pub accepted_last_minute: u64,
}

/// A group's state for `QueryConsumerGroupStatus`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStatus {
    /// Attached consumers.
    pub clients: Vec<ClientStatus>,
    /// Messages accepted in the last minute, by every consumer.
    pub accepted_last_minute: u64,
    /// When a message was last accepted, epoch ms.
    pub last_accepted_ms: Option<i64>,
    /// Deliveries not yet settled.
    pub unsettled: usize,
}

/// Why an attach is refused, with the limit that was reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// More than `max_connections_per_client` for this client id.
    TooManyConnections(usize),
    /// More than `max_clients_per_group` client ids in the group.
    TooManyClients(usize),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooManyConnections(n) => {
                write!(f, "this client id has the most connections allowed ({n})")
            }
            Refusal::TooManyClients(n) => {
                write!(f, "the consumer group has the most clients allowed ({n})")
            }
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// Deliveries sent (first and again).
    pub sent: AtomicU64,
    /// Deliveries accepted.
    pub accepted: AtomicU64,
    /// Deliveries handed out again (returned, lost, timed out).
    pub redelivered: AtomicU64,
    /// Messages dropped for their age.
    pub expired: AtomicU64,
    /// Store reads that failed.
    pub read_failures: AtomicU64,
}

/// A message handed to a consumer.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The message.
    pub message: Arc<Queued>,
    /// Earlier deliveries of it (AMQP `delivery-count`).
    pub attempts: u32,
}

/// The consumer groups of one server.
pub struct Broker {
    config: BrokerConfig,
    backlog: Arc<dyn Backlog>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    next_consumer: AtomicU64,
    /// Counters.
    pub stats: Arc<BrokerStats>,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Entry {
    message: Arc<Queued>,
    attempts: u32,
    not_before: Option<Instant>,
}

struct InFlight {
    message: Arc<Queued>,
    attempts: u32,
    consumer: u64,
    deadline: Instant,
}

struct Slot {
    id: u64,
    client_id: String,
    addr: Option<SocketAddr>,
    online_ms: i64,
    tx: mpsc::UnboundedSender<Delivery>,
    outstanding: usize,
    /// A delivery of this consumer timed out: it gets nothing more until it
    /// settles something (it may have stopped granting credit).
    stalled: bool,
    accepted: Vec<i64>,
}

impl Slot {
    fn has_room(&self, window: usize) -> bool {
        !self.stalled && self.outstanding < window
    }
}

#[derive(Default)]
struct GroupState {
    consumers: Vec<Slot>,
    next: usize,
    cursor: u64,
    /// Bumped by every notice of new messages: a read that started before
    /// one does not conclude that the store is empty.
    generation: u64,
    exhausted: bool,
    reading: bool,
    running: bool,
    ready: BTreeMap<u64, Entry>,
    in_flight: HashMap<u64, InFlight>,
    busy: HashSet<String>,
    accepted: Vec<i64>,
    last_accepted_ms: Option<i64>,
}

impl GroupState {
    /// Puts a delivery in flight back among the ready messages, to be
    /// handed out again (not before `not_before`); its device may go on.
    fn hand_back(&mut self, seq: u64, stats: &BrokerStats, not_before: Option<Instant>) -> bool {
        let Some(f) = self.in_flight.remove(&seq) else {
            return false;
        };
        self.busy.remove(&f.message.key);
        stats.redelivered.fetch_add(1, Ordering::Relaxed);
        self.ready.insert(
            seq,
            Entry {
                message: f.message,
                attempts: f.attempts + 1,
                not_before,
            },
        );
        true
    }

    /// Takes a message read from, or just written to, the store: the
    /// position moves past it, and it waits to be handed out unless it is
    /// out already.
    fn admit(&mut self, m: Queued) {
        self.cursor = self.cursor.max(m.seq);
        if !self.in_flight.contains_key(&m.seq) {
            self.ready.entry(m.seq).or_insert(Entry {
                message: Arc::new(m),
                attempts: 0,
                not_before: None,
            });
        }
    }

    /// The store has what was not read: the next pass reads it, and a
    /// read under way does not conclude the store is empty.
    fn read_again(&mut self) {
        self.generation += 1;
        self.exhausted = false;
    }

    /// Forgets what was read and every delivery in flight.
    fn forget(&mut self) {
        self.ready.clear();
        self.in_flight.clear();
        self.busy.clear();
    }
}

struct Group {
    name: String,
    state: Mutex<GroupState>,
    wake: Notify,
}

/// A consumer's hold on its group: deliveries arrive on `deliveries`; each
/// is reported back with [`Consumer::settle`]. Dropping it hands back
/// whatever it still holds.
pub struct Consumer {
    broker: Arc<Broker>,
    group: Arc<Group>,
    id: u64,
    /// Messages to send, in order.
    pub deliveries: mpsc::UnboundedReceiver<Delivery>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.group.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker over `backlog`; `clock` gives epoch ms.
    pub fn new(
        config: BrokerConfig,
        backlog: Arc<dyn Backlog>,
        clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    ) -> Arc<Broker> {
        Arc::new(Broker {
            config,
            backlog,
            groups: Mutex::new(HashMap::new()),
            next_consumer: AtomicU64::new(1),
            stats: Arc::new(BrokerStats::default()),
            clock,
        })
    }

    fn group(&self, name: &str) -> Arc<Group> {
        lock(&self.groups)
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Group {
                    name: name.to_owned(),
                    state: Mutex::new(GroupState::default()),
                    wake: Notify::new(),
                })
            })
            .clone()
    }

    /// New messages of `group` are in the store.
    pub fn notify(&self, group: &str) {
        self.notify_new(group, Vec::new());
    }

    /// New messages of `group` were committed to the store, in position
    /// order, right after every earlier one. A dispatcher that had read the
    /// store to its end takes them as they are, without reading them back;
    /// otherwise it reads them from the store with the rest.
    pub fn notify_new(&self, group: &str, messages: Vec<Queued>) {
        let g = lock(&self.groups).get(group).cloned();
        let Some(g) = g else { return };
        let mut st = lock(&g.state);
        let room = 2 * self.config.read_batch.max(1);
        let follows = messages.first().is_some_and(|m| m.seq > st.cursor);
        if st.running
            && st.exhausted
            && !st.reading
            && follows
            && st.ready.len() + messages.len() <= room
        {
            for m in messages {
                st.admit(m);
            }
        } else {
            st.read_again();
        }
        drop(st);
        g.wake.notify_one();
    }

    /// The group's backlog was cleared (`ResetConsumerGroupPosition`, or
    /// the group was deleted): forget what was read, and every delivery in
    /// flight (a late accept of one is harmless).
    pub fn reset(&self, group: &str) {
        let g = lock(&self.groups).get(group).cloned();
        if let Some(g) = g {
            let mut st = lock(&g.state);
            st.forget();
            for c in &mut st.consumers {
                c.outstanding = 0;
            }
            st.read_again();
            drop(st);
            g.wake.notify_one();
        }
    }

    /// What `QueryConsumerGroupStatus` shows.
    pub fn status(&self, group: &str) -> GroupStatus {
        let now = (self.clock)();
        let Some(g) = lock(&self.groups).get(group).cloned() else {
            return GroupStatus::default();
        };
        let mut st = lock(&g.state);
        let minute_ago = now - 60_000;
        st.accepted.retain(|t| *t > minute_ago);
        let clients = st
            .consumers
            .iter_mut()
            .map(|c| {
                c.accepted.retain(|t| *t > minute_ago);
                ClientStatus {
                    client_id: c.client_id.clone(),
                    addr: c.addr,
                    online_ms: c.online_ms,
                    accepted_last_minute: c.accepted.len() as u64,
                }
            })
            .collect();
        GroupStatus {
            clients,
            accepted_last_minute: st.accepted.len() as u64,
            last_accepted_ms: st.last_accepted_ms,
            unsettled: st.in_flight.len(),
        }
    }

    /// Closes every consumer of `group` (the group was deleted): their
    /// delivery streams end.
    pub fn drop_group(&self, group: &str) {
        let g = lock(&self.groups).get(group).cloned();
        if let Some(g) = g {
            let mut st = lock(&g.state);
            st.consumers.clear();
            st.forget();
            drop(st);
            g.wake.notify_one();
        }
    }

    /// Attaches a consumer of `group` for `client_id`, within the limits.
    pub fn attach(
        self: &Arc<Self>,
        group: &str,
        client_id: &str,
        addr: Option<SocketAddr>,
    ) -> Result<Consumer, Refusal> {
        let g = self.group(group);
        let id = self.next_consumer.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let start = {
            let mut st = lock(&g.state);
            let same = st
                .consumers
                .iter()
                .filter(|c| c.client_id == client_id)
                .count();
            if same >= self.config.max_connections_per_client {
                return Err(Refusal::TooManyConnections(
                    self.config.max_connections_per_client,
                ));
            }
            if same == 0 {
                let clients: HashSet<&str> =
                    st.consumers.iter().map(|c| c.client_id.as_str()).collect();
                if clients.len() >= self.config.max_clients_per_group {
                    return Err(Refusal::TooManyClients(self.config.max_clients_per_group));
                }
            }
            st.consumers.push(Slot {
                id,
                client_id: client_id.to_owned(),
                addr,
                online_ms: (self.clock)(),
                tx,
                outstanding: 0,
                stalled: false,
                accepted: Vec::new(),
            });
            !std::mem::replace(&mut st.running, true)
        };
        if start {
            let broker = Arc::clone(self);
            let group = Arc::clone(&g);
            tokio::spawn(async move { broker.dispatch(group).await });
        } else {
            g.wake.notify_one();
        }
        Ok(Consumer {
            broker: Arc::clone(self),
            group: g,
            id,
            deliveries: rx,
        })
    }

    /// The group's dispatcher: runs while the group has consumers.
    async fn dispatch(self: Arc<Self>, g: Arc<Group>) {
        let batch = self.config.read_batch.max(1);
        loop {
            // Read more when the window runs low.
            let read_from = {
                let mut st = lock(&g.state);
                if st.consumers.is_empty() {
                    // Everything read goes back to the store's keeping; the
                    // next consumer starts from the oldest message again.
                    *st = GroupState::default();
                    return;
                }
                if !st.exhausted && !st.reading && st.ready.len() < batch {
                    st.reading = true;
                    Some((st.cursor, st.generation))
                } else {
                    None
                }
            };
            if let Some((cursor, generation)) = read_from {
                let read = self.backlog.read(&g.name, cursor, batch).await;
                let failed = {
                    let mut st = lock(&g.state);
                    st.reading = false;
                    match read {
                        Ok(messages) => {
                            let full = messages.len() >= batch;
                            for m in messages {
                                // A reset while reading emptied the store:
                                // what the read returned is gone.
                                if st.generation != generation && m.seq <= st.cursor {
                                    continue;
                                }
                                st.admit(m);
                            }
                            if !full && st.generation == generation {
                                st.exhausted = true;
                            }
                            None
                        }
                        Err(e) => Some(e),
                    }
                };
                if let Some(e) = failed {
                    self.stats.read_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(group = %g.name, error = %e, "cannot read the consumer group's backlog");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            let next = self.assign(&g);
            let more = {
                let st = lock(&g.state);
                !st.exhausted && st.ready.len() < batch
            };
            if more {
                tokio::task::yield_now().await;
                continue;
            }
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = g.wake.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => g.wake.notified().await,
            }
        }
    }

    /// Expires overdue deliveries and hands ready messages to consumers
    /// with room. Returns when something next falls due.
    fn assign(&self, g: &Group) -> Option<Instant> {
        let now = Instant::now();
        let now_ms = (self.clock)();
        let oldest_ms =
            now_ms - i64::try_from(self.config.retention.as_millis()).unwrap_or(i64::MAX);
        let mut st = lock(&g.state);
        let st = &mut *st;
        // Deliveries not settled in time go back to the ready set; the
        // consumer keeps its slot until it reports the delivery's fate (it
        // may be stuck without credit).
        let overdue: Vec<u64> = st
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in overdue {
            let holder = st.in_flight.get(&seq).map(|f| f.consumer);
            if let Some(c) = st.consumers.iter_mut().find(|c| Some(c.id) == holder) {
                c.stalled = true;
            }
            st.hand_back(seq, &self.stats, None);
        }
        let mut next_due: Option<Instant> = None;
        let window = self.config.consumer_window.max(1);
        let mut handed = Vec::new();
        let mut expired = Vec::new();
        for (seq, entry) in st.ready.iter() {
            if !st.consumers.iter().any(|c| c.has_room(window)) {
                break;
            }
            if entry.message.generate_ms < oldest_ms {
                expired.push(*seq);
                continue;
            }
            if let Some(at) = entry.not_before
                && at > now
            {
                next_due = Some(next_due.map_or(at, |n| n.min(at)));
                continue;
            }
            if self.config.per_device_order && st.busy.contains(&entry.message.key) {
                continue;
            }
            // Round robin over the consumers with room.
            let n = st.consumers.len();
            let mut chosen = None;
            for i in 0..n {
                let idx = (st.next + i) % n;
                if st.consumers[idx].has_room(window) {
                    chosen = Some(idx);
                    break;
                }
            }
            let Some(idx) = chosen else { break };
            st.next = (idx + 1) % n;
            let c = &mut st.consumers[idx];
            let delivery = Delivery {
                message: Arc::clone(&entry.message),
                attempts: entry.attempts,
            };
            if c.tx.send(delivery).is_err() {
                continue;
            }
            c.outstanding += 1;
            handed.push((*seq, c.id));
            if self.config.per_device_order {
                st.busy.insert(entry.message.key.clone());
            }
        }
        for seq in expired {
            st.ready.remove(&seq);
            self.stats.expired.fetch_add(1, Ordering::Relaxed);
            self.backlog.ack(&g.name, seq);
        }
        for (seq, consumer) in handed {
            if let Some(entry) = st.ready.remove(&seq) {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                st.in_flight.insert(
                    seq,
                    InFlight {
                        message: entry.message,
                        attempts: entry.attempts,
                        consumer,
                        deadline: now + self.config.ack_timeout,
                    },
                );
            }
        }
        for f in st.in_flight.values() {
            next_due = Some(next_due.map_or(f.deadline, |n| n.min(f.deadline)));
        }
        next_due
    }
}

impl Consumer {
    /// Whether this consumer still holds `seq` (it may have been handed to
    /// another after the ack timeout): a delivery it no longer holds is
    /// not sent.
    pub fn holds(&self, seq: u64) -> bool {
        lock(&self.group.state)
            .in_flight
            .get(&seq)
            .is_some_and(|f| f.consumer == self.id)
    }

    /// Reports a delivery's fate.
    pub fn settle(&self, seq: u64, settled: Settled) {
        let broker = &self.broker;
        let now_ms = (broker.clock)();
        let mut st = lock(&self.group.state);
        let st = &mut *st;
        if let Some(c) = st.consumers.iter_mut().find(|c| c.id == self.id) {
            c.outstanding = c.outstanding.saturating_sub(1);
            if settled != Settled::Skipped {
                c.stalled = false;
            }
            if settled == Settled::Accepted {
                c.accepted.push(now_ms);
            }
        }
        let held = st
            .in_flight
            .get(&seq)
            .is_some_and(|f| f.consumer == self.id);
        match settled {
            Settled::Accepted => {
                // Accepted by whoever held it last: done, even if it was
                // handed to another consumer meanwhile.
                if let Some(f) = st.in_flight.remove(&seq) {
                    st.busy.remove(&f.message.key);
                } else if let Some(e) = st.ready.remove(&seq) {
                    st.busy.remove(&e.message.key);
                }
                broker.stats.accepted.fetch_add(1, Ordering::Relaxed);
                st.accepted.push(now_ms);
                st.last_accepted_ms = Some(now_ms);
                broker.backlog.ack(&self.group.name, seq);
            }
            Settled::Returned | Settled::Lost if held => {
                let delay = match settled {
                    Settled::Returned => Some(Instant::now() + broker.config.retry_delay),
                    _ => None,
                };
                st.hand_back(seq, &broker.stats, delay);
            }
            _ => {}
        }
        self.group.wake.notify_one();
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let mut st = lock(&self.group.state);
        st.consumers.retain(|c| c.id != self.id);
        // Whatever it held is handed out again at once.
        let held: Vec<u64> = st
            .in_flight
            .iter()
            .filter(|(_, f)| f.consumer == self.id)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in held {
            st.hand_back(seq, &self.broker.stats, None);
        }
        drop(st);
        self.group.wake.notify_one();
    }
}

#[cfg(test)]
mod tests;
