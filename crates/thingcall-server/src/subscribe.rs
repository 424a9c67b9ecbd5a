//! Server-side subscription: the consumer groups and subscriptions the
//! management actions edit (stored, mirrored in memory), the messages the
//! engine forwards to them (queued in each subscribed group's backlog in
//! the store), and the AMQP broker that delivers the backlogs.
//!
//! One task writes the backlogs: it takes whatever messages and accepts
//! are waiting and writes them in one transaction, in the order their
//! positions were given, so a group's reader never passes a position that
//! has not committed yet. A write that fails is tried again; nothing
//! queued is dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use thingcall_amqp::message::{About, Forward};
use thingcall_amqp::{Backlog, Broker, BrokerConfig, Queued};
use thingcall_core::{Clock, Secret};
use tokio::sync::mpsc;

use crate::catalog::SharedCatalog;
use crate::store::{BacklogRow, ConsumerGroup, StoreError, Subscription, Subscriptions};

/// The group every account has; it cannot be renamed or deleted.
pub(crate) const DEFAULT_GROUP: &str = "DEFAULT_GROUP";

/// The subscription type AMQP consumers use.
pub(crate) const AMQP: &str = "AMQP";

/// Most messages and accepts written in one transaction.
const WRITE_BATCH: usize = 2048;

/// New messages waiting for the backlog writer, at most.
const QUEUE: usize = 16 * 1024;

enum Op {
    Insert(BacklogRow),
    Ack(String, u64),
}

#[derive(Default)]
struct Mirror {
    groups: BTreeMap<String, ConsumerGroup>,
    /// By (product key, type).
    subscriptions: HashMap<(String, String), Subscription>,
}

/// Consumer groups, subscriptions, backlogs and the broker.
pub(crate) struct Subscribe {
    store: Arc<dyn Subscriptions>,
    mirror: RwLock<Mirror>,
    /// The next backlog position, and the writer's queue of new messages:
    /// taken together, so positions reach the writer in increasing order.
    /// The queue is bounded: when the store falls behind, the event loop
    /// that forwards waits, and the devices with it (TCP backpressure),
    /// instead of memory growing.
    queue: tokio::sync::Mutex<(u64, mpsc::Sender<Op>)>,
    pub(crate) broker: Arc<Broker>,
    retention: Duration,
}

impl std::fmt::Debug for Subscribe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscribe").finish_non_exhaustive()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The broker's view of the store.
struct StoreBacklog {
    store: Arc<dyn Subscriptions>,
    acks: mpsc::UnboundedSender<Op>,
}

#[async_trait]
impl Backlog for StoreBacklog {
    async fn read(&self, group: &str, after: u64, limit: usize) -> Result<Vec<Queued>, String> {
        self.store
            .read_backlog(group.to_owned(), after, limit)
            .await
            .map_err(|e| e.to_string())
    }

    fn ack(&self, group: &str, seq: u64) {
        let _ = self.acks.send(Op::Ack(group.to_owned(), seq));
    }
}

impl Subscribe {
    /// Loads groups and subscriptions and starts the backlog writer and
    /// the expiry of old messages.
    pub(crate) async fn start(
        store: Arc<dyn Subscriptions>,
        config: BrokerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Subscribe>, StoreError> {
        let snapshot = store.load_subscriptions().await?;
        let mut mirror = Mirror::default();
        mirror.groups.insert(
            DEFAULT_GROUP.to_owned(),
            ConsumerGroup {
                group_id: DEFAULT_GROUP.to_owned(),
                name: DEFAULT_GROUP.to_owned(),
                created_ms: 0,
            },
        );
        for g in snapshot.groups {
            mirror.groups.insert(g.group_id.clone(), g);
        }
        for s in snapshot.subscriptions {
            mirror
                .subscriptions
                .insert((s.product_key.clone(), s.kind.clone()), s);
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let now = Arc::clone(&clock);
        let retention = config.retention;
        let broker = Broker::new(
            config,
            Arc::new(StoreBacklog {
                store: Arc::clone(&store),
                acks: acks_tx,
            }),
            Arc::new(move || now.now().get()),
        );
        let subscribe = Arc::new(Subscribe {
            store: Arc::clone(&store),
            mirror: RwLock::new(mirror),
            queue: tokio::sync::Mutex::new((snapshot.last_seq + 1, tx)),
            broker: Arc::clone(&broker),
            retention,
        });
        tokio::spawn(write_backlogs(
            Arc::clone(&store),
            Arc::clone(&broker),
            rx,
            acks_rx,
        ));
        let expiry = Arc::downgrade(&subscribe);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(s) = expiry.upgrade() else { return };
                let before =
                    clock.now().get() - i64::try_from(s.retention.as_millis()).unwrap_or(i64::MAX);
                match s.store.purge_backlog(None, before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(messages = n, "expired backlog messages removed"),
                    Err(e) => tracing::warn!(error = %e, "cannot expire backlog messages"),
                }
            }
        });
        Ok(subscribe)
    }

    /// The groups, oldest first.
    pub(crate) fn groups(&self) -> Vec<ConsumerGroup> {
        let mut all: Vec<ConsumerGroup> = read(&self.mirror).groups.values().cloned().collect();
        all.sort_by(|a, b| (a.created_ms, &a.group_id).cmp(&(b.created_ms, &b.group_id)));
        all
    }

    /// One group.
    pub(crate) fn group(&self, group_id: &str) -> Option<ConsumerGroup> {
        read(&self.mirror).groups.get(group_id).cloned()
    }

    /// Creates a group.
    pub(crate) async fn create_group(&self, group: ConsumerGroup) -> Result<(), StoreError> {
        self.store.put_group(group.clone(), true).await?;
        write(&self.mirror)
            .groups
            .insert(group.group_id.clone(), group);
        Ok(())
    }

    /// Renames a group.
    pub(crate) async fn rename_group(&self, group: ConsumerGroup) -> Result<(), StoreError> {
        self.store.put_group(group.clone(), false).await?;
        write(&self.mirror)
            .groups
            .insert(group.group_id.clone(), group);
        Ok(())
    }

    /// Deletes a group, its backlog and its place in every subscription;
    /// its consumers are closed.
    pub(crate) async fn delete_group(&self, group_id: &str) -> Result<(), StoreError> {
        let touched: Vec<Subscription> = read(&self.mirror)
            .subscriptions
            .values()
            .filter(|s| s.group_ids.iter().any(|g| g == group_id))
            .cloned()
            .collect();
        for mut s in touched {
            s.group_ids.retain(|g| g != group_id);
            self.put_subscription(s).await?;
        }
        self.store.delete_group(group_id.to_owned()).await?;
        write(&self.mirror).groups.remove(group_id);
        self.broker.drop_group(group_id);
        Ok(())
    }

    /// Clears a group's backlog.
    pub(crate) async fn reset_group(&self, group_id: &str) -> Result<u64, StoreError> {
        let n = self
            .store
            .purge_backlog(Some(group_id.to_owned()), 0)
            .await?;
        self.broker.reset(group_id);
        Ok(n)
    }

    /// How many messages the group has waiting.
    pub(crate) async fn backlog_len(&self, group_id: &str) -> Result<u64, StoreError> {
        self.store.backlog_len(group_id.to_owned()).await
    }

    /// A product's subscription of `kind`.
    pub(crate) fn subscription(&self, product_key: &str, kind: &str) -> Option<Subscription> {
        read(&self.mirror)
            .subscriptions
            .get(&(product_key.to_owned(), kind.to_owned()))
            .cloned()
    }

    /// Creates or replaces a subscription.
    pub(crate) async fn put_subscription(&self, s: Subscription) -> Result<(), StoreError> {
        self.store.put_subscription(s.clone()).await?;
        write(&self.mirror)
            .subscriptions
            .insert((s.product_key.clone(), s.kind.clone()), s);
        Ok(())
    }

    /// Deletes a subscription.
    pub(crate) async fn delete_subscription(
        &self,
        product_key: &str,
        kind: &str,
    ) -> Result<(), StoreError> {
        self.store
            .delete_subscription(product_key.to_owned(), kind.to_owned())
            .await?;
        write(&self.mirror)
            .subscriptions
            .remove(&(product_key.to_owned(), kind.to_owned()));
        Ok(())
    }

    /// Queues `forward` for every group whose AMQP subscription of the
    /// device's product has `flag`; a group gets one device's messages in
    /// the order they are queued.
    pub(crate) async fn publish(
        &self,
        about: About<'_>,
        flag: &str,
        forward: Forward,
        message_id: u64,
        now_ms: i64,
    ) {
        let product_key = about.product_key;
        let groups: Vec<String> = {
            let m = read(&self.mirror);
            match m
                .subscriptions
                .get(&(product_key.to_owned(), AMQP.to_owned()))
            {
                Some(s) if s.flags.iter().any(|f| f == flag) => s
                    .group_ids
                    .iter()
                    .filter(|g| m.groups.contains_key(g.as_str()))
                    .cloned()
                    .collect(),
                _ => return,
            }
        };
        let key = format!("{}/{}", about.product_key, about.device_name);
        let mut q = self.queue.lock().await;
        for group_id in groups {
            let seq = q.0;
            q.0 += 1;
            let row = BacklogRow {
                group_id,
                message: Queued {
                    seq,
                    key: key.clone(),
                    topic: forward.topic.clone(),
                    message_id,
                    generate_ms: now_ms,
                    body: forward.body.clone(),
                },
            };
            if q.1.send(Op::Insert(row)).await.is_err() {
                tracing::error!("the backlog writer stopped; a forwarded message was not queued");
            }
        }
    }
}

impl Subscribe {
    /// The Prometheus series of server-side subscription: each group's
    /// backlog (counted in the store now) and clients, and the broker's
    /// delivery counters.
    pub(crate) async fn render_metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        out.push_str(
            "# HELP thingcall_amqp_backlog Messages waiting in a consumer group's backlog.\n",
        );
        out.push_str("# TYPE thingcall_amqp_backlog gauge\n");
        let groups = self.groups();
        for g in &groups {
            match self.backlog_len(&g.group_id).await {
                Ok(n) => {
                    let _ = writeln!(
                        out,
                        "thingcall_amqp_backlog{{group=\"{}\"}} {n}",
                        g.group_id
                    );
                }
                Err(e) => tracing::warn!(group = %g.group_id, error = %e, "cannot count a backlog"),
            }
        }
        out.push_str(
            "# HELP thingcall_amqp_clients AMQP consumers attached to a consumer group.\n",
        );
        out.push_str("# TYPE thingcall_amqp_clients gauge\n");
        for g in &groups {
            let n = self.broker.status(&g.group_id).clients.len();
            let _ = writeln!(
                out,
                "thingcall_amqp_clients{{group=\"{}\"}} {n}",
                g.group_id
            );
        }
        out.push_str("# HELP thingcall_amqp_deliveries_total AMQP deliveries by event.\n");
        out.push_str("# TYPE thingcall_amqp_deliveries_total counter\n");
        let st = &self.broker.stats;
        for (event, n) in [
            ("sent", &st.sent),
            ("accepted", &st.accepted),
            ("redelivered", &st.redelivered),
            ("expired", &st.expired),
            ("backlog_read_failures", &st.read_failures),
        ] {
            let _ = writeln!(
                out,
                "thingcall_amqp_deliveries_total{{event=\"{event}\"}} {}",
                n.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        out
    }
}

/// The backlog writer: batches, writes in order, retries failures, then
/// tells the broker which groups have new messages.
async fn write_backlogs(
    store: Arc<dyn Subscriptions>,
    broker: Arc<Broker>,
    mut rx: mpsc::Receiver<Op>,
    mut acks_rx: mpsc::UnboundedReceiver<Op>,
) {
    loop {
        let first = tokio::select! {
            op = rx.recv() => op,
            op = acks_rx.recv() => op,
        };
        let Some(first) = first else { return };
        let mut rows = Vec::new();
        let mut acks = Vec::new();
        let mut take = |op: Op| match op {
            Op::Insert(r) => rows.push(r),
            Op::Ack(g, s) => acks.push((g, s)),
        };
        take(first);
        for _ in 1..WRITE_BATCH {
            match rx.try_recv() {
                Ok(op) => take(op),
                Err(_) => break,
            }
        }
        for _ in 1..WRITE_BATCH {
            match acks_rx.try_recv() {
                Ok(op) => take(op),
                Err(_) => break,
            }
        }

        let mut delay = Duration::from_millis(50);
        loop {
            match store.write_backlog(rows.clone(), acks.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, messages = rows.len(), "cannot write the subscription backlog; trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Handed to the dispatchers as written: a consumer that is keeping
        // up gets them without a read of the store.
        let mut by_group: std::collections::BTreeMap<String, Vec<Queued>> = Default::default();
        for r in rows {
            by_group.entry(r.group_id).or_default().push(r.message);
        }
        for (g, messages) in by_group {
            broker.notify_new(&g, messages);
        }
    }
}

/// What the AMQP endpoint looks up: AccessKeys in the registry mirror,
/// groups in the subscription mirror.
pub(crate) struct AmqpDirectory {
    pub(crate) catalog: SharedCatalog,
    pub(crate) subscribe: Arc<Subscribe>,
}

impl thingcall_amqp::Directory for AmqpDirectory {
    fn access_key_secret(&self, access_key_id: &str) -> Option<Secret> {
        crate::catalog::read(&self.catalog)
            .access_keys
            .get(access_key_id)
            .filter(|k| k.enabled)
            .map(|k| k.secret.clone())
    }

    fn group_exists(&self, group_id: &str) -> bool {
        self.subscribe.group(group_id).is_some()
    }
}
