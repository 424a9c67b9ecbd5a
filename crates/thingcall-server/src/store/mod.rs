//! Storage: every type the engine and the action handlers exchange with a
//! store, the two traits a backend implements, and the backends beneath.
//!
//! * [`Registry`]: products, devices, thing models and AccessKeys. Every
//!   mutation is one [`Change`]; a backend commits changes in the order
//!   they are queued and calls each one's [`OnCommit`] in that order, so
//!   the in-memory mirror (`catalog.rs`) follows the store's commit order.
//! * [`Records`]: invocation records and their outcomes.
//! * [`Subscriptions`]: consumer groups, products' subscriptions and each
//!   group's backlog of messages for server-side subscription.
//! * [`Pending`]: the handle a write returns, resolved once it is durable;
//!   any backend builds one with [`Pending::new`].
//! * [`StoreError`]: what went wrong, by kind, so callers can tell a
//!   conflict from an outage without reading the message.
//!
//! Backends: [`sqlite`] (the embedded default: one file, a writer thread,
//! and the invocation [`journal`] in front of it) and [`postgres`]. Nothing
//! here knows either.

#[cfg(test)]
mod conformance;
pub(crate) mod journal;
pub(crate) mod postgres;
pub(crate) mod sealed;
pub(crate) mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;
use thingcall_core::{MessageId, Secret};
use tokio::sync::oneshot;

// ------------------------------------------------------------------- rows

/// An AccessKey pair.
#[derive(Clone, Debug)]
pub(crate) struct AccessKey {
    pub(crate) id: String,
    pub(crate) secret: Secret,
    pub(crate) enabled: bool,
}

/// A published thing-model version: the default module and every custom
/// module as they were when it was published.
#[derive(Clone, Debug)]
pub(crate) struct ModelVersion {
    pub(crate) version: String,
    pub(crate) description: Option<String>,
    pub(crate) tsl: String,
    pub(crate) created_ms: i64,
    /// The product's publication sequence number: never reused, so it
    /// names this text for as long as the product exists.
    pub(crate) seq: i64,
    /// Custom modules: block id → TSL.
    pub(crate) modules: BTreeMap<String, String>,
}

/// A product.
#[derive(Clone, Debug)]
pub(crate) struct Product {
    pub(crate) product_key: String,
    pub(crate) product_name: String,
    pub(crate) product_secret: Secret,
    pub(crate) description: Option<String>,
    pub(crate) node_type: i64,
    pub(crate) data_format: Option<i64>,
    pub(crate) commodity_code: Option<String>,
    pub(crate) auth_type: String,
    pub(crate) protocol_type: Option<String>,
    pub(crate) net_type: Option<String>,
    pub(crate) category_key: Option<String>,
    pub(crate) validate_type: i64,
    pub(crate) created_ms: i64,
    pub(crate) draft_tsl: String,
    /// Oldest first; the last is the one in use.
    pub(crate) versions: Vec<ModelVersion>,
    /// Custom modules' draft TSLs, by block id (each names itself in its
    /// profile).
    pub(crate) modules: BTreeMap<String, String>,
}

impl Product {
    /// The version in use.
    pub(crate) fn published(&self) -> Option<&ModelVersion> {
        self.versions.last()
    }

    /// Whether the product has thing models (`iothub_senior`).
    pub(crate) fn is_senior(&self) -> bool {
        self.commodity_code.as_deref() == Some("iothub_senior")
    }
}

/// A device.
#[derive(Clone, Debug)]
pub(crate) struct Device {
    pub(crate) iot_id: String,
    pub(crate) product_key: String,
    pub(crate) device_name: String,
    pub(crate) device_secret: Secret,
    pub(crate) nickname: Option<String>,
    pub(crate) enabled: bool,
    pub(crate) created_ms: i64,
    pub(crate) activated_ms: Option<i64>,
    pub(crate) online_ms: Option<i64>,
    pub(crate) status_ms: i64,
    pub(crate) ip_address: Option<String>,
    /// Connected now (not stored: every device is offline after a restart).
    pub(crate) online: bool,
}

/// Everything the mirror holds, read at start-up.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) access_keys: Vec<AccessKey>,
    pub(crate) products: Vec<Product>,
    pub(crate) devices: Vec<Device>,
    pub(crate) tombstones: Vec<(String, String)>,
    /// The highest message id recorded: new ids start above it.
    pub(crate) last_message_id: Option<u64>,
}

// ------------------------------------------------------------- invocations

/// How a service is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallMode {
    /// The caller waits for the device's reply (RRPC).
    Sync,
    /// The caller gets a message id; the reply completes the record later.
    Async,
}

impl CallMode {
    /// The stored form.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CallMode::Sync => "sync",
            CallMode::Async => "async",
        }
    }

    /// Reads the stored form.
    pub(crate) fn parse(s: &str) -> Result<CallMode, StoreError> {
        match s {
            "sync" => Ok(CallMode::Sync),
            "async" => Ok(CallMode::Async),
            other => Err(StoreError::corrupt(format!("unknown call mode {other:?}"))),
        }
    }
}

/// How an invocation ended, or that it has not yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Delivered (async), no reply yet.
    Pending,
    /// The device replied with this code.
    Replied(i64),
    /// The device replied with this code after its sync call timed out.
    Late(i64),
    /// A sync call the device did not answer in time.
    Timeout,
    /// The device was offline.
    Offline,
    /// The device was online but subscribed to no topic the call uses.
    HalfConn,
    /// A sync call refused because the device's queue was full.
    RateLimit,
    /// A sync call the transport could not send.
    RrpcFailed,
    /// An async call that could not be delivered (Alibaba's 9201).
    NotDelivered,
    /// An async call refused because the device's queue was full (429).
    QueueFull,
}

impl Outcome {
    /// The stored form: a device's code as its number, the platform's
    /// outcomes by name.
    pub(crate) fn to_stored(self) -> String {
        match self {
            Outcome::Pending => "pending".to_owned(),
            Outcome::Replied(code) => code.to_string(),
            Outcome::Late(code) => format!("{code} (late)"),
            Outcome::Timeout => "TIMEOUT".to_owned(),
            Outcome::Offline => "OFFLINE".to_owned(),
            Outcome::HalfConn => "HALFCONN".to_owned(),
            Outcome::RateLimit => "RateLimit".to_owned(),
            Outcome::RrpcFailed => "RrpcFailed".to_owned(),
            Outcome::NotDelivered => "NOT_DELIVERED".to_owned(),
            Outcome::QueueFull => "QUEUE_FULL".to_owned(),
        }
    }

    /// Reads the stored form. Releases before outcomes were typed stored an
    /// undelivered async call as `9201` and a full queue as `429`; with no
    /// output (a device reply always has one) those are read as the
    /// platform's outcomes, not as device codes.
    pub(crate) fn parse(s: &str, has_output: bool) -> Result<Outcome, StoreError> {
        Ok(match s {
            "pending" => Outcome::Pending,
            "TIMEOUT" => Outcome::Timeout,
            "OFFLINE" => Outcome::Offline,
            "HALFCONN" => Outcome::HalfConn,
            "RateLimit" => Outcome::RateLimit,
            "RrpcFailed" => Outcome::RrpcFailed,
            "NOT_DELIVERED" => Outcome::NotDelivered,
            "QUEUE_FULL" => Outcome::QueueFull,
            "9201" if !has_output => Outcome::NotDelivered,
            "429" if !has_output => Outcome::QueueFull,
            other => {
                let (digits, late) = match other.strip_suffix(" (late)") {
                    Some(d) => (d, true),
                    None => (other, false),
                };
                let code = digits.parse::<i64>().map_err(|_| {
                    StoreError::corrupt(format!("unknown invocation outcome {other:?}"))
                })?;
                if late {
                    Outcome::Late(code)
                } else {
                    Outcome::Replied(code)
                }
            }
        })
    }
}

/// One recorded invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Invocation {
    pub(crate) message_id: MessageId,
    pub(crate) iot_id: String,
    /// The API identifier (`Calibrate`, `block:Calibrate`).
    pub(crate) identifier: String,
    /// The service's display name.
    pub(crate) name: String,
    pub(crate) time_ms: i64,
    pub(crate) mode: CallMode,
    /// The `Args` text as sent.
    pub(crate) input: String,
    /// The device's whole Alink reply, once it answered.
    pub(crate) output: Option<String>,
    pub(crate) outcome: Outcome,
}

/// An outcome for the record of device `iot_id` with `message_id`: a
/// reply completes only the call of the device that sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Completion {
    pub(crate) message_id: MessageId,
    /// `None` only in outcomes journaled before replies were bound to
    /// their device (read back from an old journal).
    pub(crate) iot_id: Option<String>,
    pub(crate) output: Option<String>,
    pub(crate) outcome: Outcome,
}

/// Which invocation records to read.
#[derive(Clone, Debug)]
pub(crate) struct RecordQuery {
    pub(crate) iot_id: String,
    pub(crate) from: i64,
    pub(crate) to: i64,
    pub(crate) identifier: Option<String>,
    pub(crate) ascending: bool,
    pub(crate) limit: usize,
}

/// The record store's state, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RecordStats {
    /// Records and outcomes durable (in a journal) but not yet queryable.
    pub(crate) waiting: usize,
    /// Copies into the queryable store that failed to commit (each is tried
    /// again; a growing count means the disk or database needs attention).
    pub(crate) failed_copies: u64,
}

// ----------------------------------------------------------------- changes

/// One change to the registry. Each writes only what it changes (a
/// presence change never rewrites `enabled`, and the reverse), and each is
/// applied to the in-memory mirror only after the store committed it, in
/// the store's commit order: so the mirror and the store see every change
/// in the same order, and the mirror never shows what the store may lose.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    /// Creates or replaces an AccessKey.
    PutAccessKey { key: AccessKey, at: i64 },
    /// Creates a product (with its initial versions).
    InsertProduct(Product),
    /// Deletes a product, its models and its devices (which are tombstoned).
    DeleteProduct { product_key: String, at: i64 },
    /// Replaces the draft of the default module, or of `(block id, name)`.
    SetDraft {
        product_key: String,
        module: Option<(String, String)>,
        tsl: String,
    },
    /// Adds a published version and keeps only the newest `keep`.
    Publish {
        product_key: String,
        version: ModelVersion,
        keep: usize,
    },
    /// Registers a device.
    InsertDevice(Device),
    /// Deletes a device (and tombstones its name).
    DeleteDevice {
        iot_id: String,
        product_key: String,
        device_name: String,
        at: i64,
    },
    /// Enables or disables a device.
    SetEnabled {
        iot_id: String,
        enabled: bool,
        at: i64,
    },
    /// A device came online (first activation, last online time, address)
    /// or went offline.
    Presence {
        iot_id: String,
        online: bool,
        at: i64,
        ip_address: Option<String>,
    },
}

/// Where a committed change sits in the registry log that the nodes of a
/// cluster share (PostgreSQL only): its entry, and the entry before it for
/// the same entity (0 for none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogPosition {
    pub(crate) previous: i64,
    pub(crate) seq: i64,
}

/// Runs once a change is committed, before its handle resolves. Changes'
/// callbacks run one at a time, in commit order.
pub(crate) type OnCommit = Box<dyn FnOnce(&Change, Option<LogPosition>) + Send + Sync>;

/// The registry-log entity a change is about: (`device` | `product` |
/// `access_key`, its key). Presence is not logged (it travels as events).
pub(crate) fn logged_entity(change: &Change) -> Option<(&'static str, &str)> {
    match change {
        Change::PutAccessKey { key, .. } => Some(("access_key", key.id.as_str())),
        Change::InsertProduct(p) => Some(("product", p.product_key.as_str())),
        Change::DeleteProduct { product_key, .. }
        | Change::SetDraft { product_key, .. }
        | Change::Publish { product_key, .. } => Some(("product", product_key.as_str())),
        Change::InsertDevice(d) => Some(("device", d.iot_id.as_str())),
        Change::DeleteDevice { iot_id, .. } | Change::SetEnabled { iot_id, .. } => {
            Some(("device", iot_id.as_str()))
        }
        Change::Presence { .. } => None,
    }
}

// ------------------------------------------------------------------ traits

/// Products, devices, thing models and AccessKeys.
#[async_trait]
pub(crate) trait Registry: Send + Sync {
    /// Everything, for the in-memory mirror at start-up.
    async fn load(&self) -> Result<Snapshot, StoreError>;
    /// Queues a change. Changes commit in the order they are queued; after
    /// each commit the store calls its `on_commit`, in the same order, and
    /// then resolves the handle. A change that fails calls nothing and
    /// resolves with the error.
    fn apply(&self, change: Change, on_commit: OnCommit) -> Result<Pending<()>, StoreError>;
}

/// Invocation records. Writes are applied in the order they are made, and
/// `query` sees every write whose handle has resolved.
#[async_trait]
pub(crate) trait Records: Send + Sync {
    /// Stores a new record; the handle resolves once it is durable.
    fn record(&self, invocation: Invocation) -> Result<Pending<()>, StoreError>;
    /// Stores an outcome; the handle resolves once it is applied, with
    /// false when the device has no record with that message id.
    fn complete(&self, completion: Completion) -> Result<Pending<bool>, StoreError>;
    /// Reads records.
    async fn query(&self, query: RecordQuery) -> Result<Vec<Invocation>, StoreError>;
    /// The store's backlog and failures.
    fn stats(&self) -> RecordStats;
    /// Finishes queued writes and releases the store.
    async fn close(&self);
}

// ----------------------------------------------------------- subscription

/// A consumer group of server-side subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConsumerGroup {
    pub(crate) group_id: String,
    pub(crate) name: String,
    pub(crate) created_ms: i64,
}

/// A product's subscription of one type (`AMQP` or `MNS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Subscription {
    pub(crate) product_key: String,
    pub(crate) kind: String,
    /// The flags that are set.
    pub(crate) flags: Vec<String>,
    pub(crate) group_ids: Vec<String>,
    pub(crate) mns: Option<String>,
    pub(crate) subscribe_flags: Option<String>,
    pub(crate) created_ms: i64,
}

/// A message waiting in a group's backlog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BacklogRow {
    pub(crate) group_id: String,
    pub(crate) message: thingcall_amqp::Queued,
}

/// What the subscription tables hold, read at start-up.
#[derive(Clone, Debug, Default)]
pub(crate) struct SubscriptionSnapshot {
    pub(crate) groups: Vec<ConsumerGroup>,
    pub(crate) subscriptions: Vec<Subscription>,
    /// The highest backlog position: new messages are queued above it.
    pub(crate) last_seq: u64,
}

/// Consumer groups, subscriptions and backlogs. Backlog writes are made by
/// one writer at a time, in order, so positions commit in increasing order.
#[async_trait]
pub(crate) trait Subscriptions: Send + Sync {
    /// Everything but the backlogs.
    async fn load_subscriptions(&self) -> Result<SubscriptionSnapshot, StoreError>;
    /// Creates (`create`) or renames a group.
    async fn put_group(&self, group: ConsumerGroup, create: bool) -> Result<(), StoreError>;
    /// Deletes a group and its backlog.
    async fn delete_group(&self, group_id: String) -> Result<(), StoreError>;
    /// Creates or replaces a subscription.
    async fn put_subscription(&self, subscription: Subscription) -> Result<(), StoreError>;
    /// Deletes a subscription.
    async fn delete_subscription(
        &self,
        product_key: String,
        kind: String,
    ) -> Result<(), StoreError>;
    /// Queues messages and removes accepted ones, in one transaction.
    async fn write_backlog(
        &self,
        rows: Vec<BacklogRow>,
        acks: Vec<(String, u64)>,
    ) -> Result<(), StoreError>;
    /// Up to `limit` messages of a group after `after`, oldest first.
    async fn read_backlog(
        &self,
        group_id: String,
        after: u64,
        limit: usize,
    ) -> Result<Vec<thingcall_amqp::Queued>, StoreError>;
    /// How many messages a group has waiting.
    async fn backlog_len(&self, group_id: String) -> Result<u64, StoreError>;
    /// Removes a group's whole backlog (`Some`), or every message made
    /// before `before_ms` (`None`, expiry); returns how many.
    async fn purge_backlog(
        &self,
        group_id: Option<String>,
        before_ms: i64,
    ) -> Result<u64, StoreError>;
}

/// The stored form of a list of names.
pub(crate) fn names_to_json(names: &[String]) -> String {
    serde_json::Value::from(names.to_vec()).to_string()
}

/// Reads the stored form of a list of names.
pub(crate) fn names_from_json(s: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::corrupt(format!("a stored name list: {e}")))
}

// ------------------------------------------------------------------ shared

/// A registry change another node logged, with what is stored now.
#[derive(Debug)]
pub(crate) struct LoggedChange {
    pub(crate) seq: i64,
    pub(crate) now: Stored,
    /// The newest log entry of this entity that `now` includes (read in
    /// the same snapshot): a mirror that holds this entity as of a later
    /// entry already has it.
    pub(crate) as_of: i64,
}

/// What a logged entity is now.
#[derive(Debug)]
pub(crate) enum Stored {
    /// A device (`None`: deleted; then its tombstone, when it has one).
    Device {
        iot_id: String,
        device: Option<Device>,
        tombstone: Option<(String, String)>,
    },
    /// A product with its versions and modules (`None`: deleted), and its
    /// tombstoned device names.
    Product {
        product_key: String,
        product: Option<Product>,
        tombstones: Vec<String>,
    },
    /// An AccessKey.
    AccessKey {
        id: String,
        access_key: Option<AccessKey>,
    },
}

/// Signature nonces that the nodes of a cluster share: a nonce used on one
/// node is refused on every other.
#[async_trait]
pub(crate) trait SharedNonces: Send + Sync {
    /// Records the nonce's digest until `expires_ms`; false when some node
    /// recorded it before and it has not expired.
    async fn claim(&self, digest: u128, now_ms: i64, expires_ms: i64) -> Result<bool, StoreError>;
}

// ----------------------------------------------------------------- handles

/// A write in progress, resolved once it is durable (or failed).
#[derive(Debug)]
pub(crate) struct Pending<T>(oneshot::Receiver<Result<T, StoreError>>);

/// The other end of a [`Pending`]: whoever performs the write resolves it.
#[derive(Debug)]
pub(crate) struct Resolver<T>(oneshot::Sender<Result<T, StoreError>>);

impl<T> Pending<T> {
    /// A handle and the resolver that completes it.
    pub(crate) fn new() -> (Resolver<T>, Pending<T>) {
        let (tx, rx) = oneshot::channel();
        (Resolver(tx), Pending(rx))
    }

    /// A handle that is resolved already.
    pub(crate) fn ready(result: Result<T, StoreError>) -> Pending<T> {
        let (resolver, pending) = Pending::new();
        resolver.resolve(result);
        pending
    }

    /// Waits for the write.
    pub(crate) async fn wait(self) -> Result<T, StoreError> {
        self.0
            .await
            .map_err(|_| StoreError::unavailable("the store stopped before the write finished"))?
    }
}

impl<T> Resolver<T> {
    /// Tells the waiter how the write ended (a waiter that went away is
    /// not an error: the write happened all the same).
    pub(crate) fn resolve(self, result: Result<T, StoreError>) {
        let _ = self.0.send(result);
    }
}

// ------------------------------------------------------------------ errors

/// What kind of store failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// A unique name or key is taken.
    Conflict,
    /// What the change refers to does not exist.
    NotFound,
    /// The store cannot be reached or written now (connection lost,
    /// database restarting, disk full, store closed); trying later may work.
    Unavailable,
    /// What the store holds cannot be read (a newer schema, a damaged row).
    Corrupt,
    /// Anything else.
    Internal,
}

/// A store failure: a kind to act on and a message for humans (which never
/// carries a password).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
}

impl StoreError {
    /// A failure of `kind`.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> StoreError {
        StoreError {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> StoreError {
        StoreError::new(StoreErrorKind::Unavailable, message)
    }

    pub(crate) fn corrupt(message: impl Into<String>) -> StoreError {
        StoreError::new(StoreErrorKind::Corrupt, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> StoreError {
        StoreError::new(StoreErrorKind::Internal, message)
    }

    /// The kind.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A unique name or key is taken.
    pub fn is_conflict(&self) -> bool {
        self.kind == StoreErrorKind::Conflict
    }

    /// The store cannot be reached now.
    pub fn is_unavailable(&self) -> bool {
        self.kind == StoreErrorKind::Unavailable
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "store: {}", self.message)
    }
}

impl std::error::Error for StoreError {}

/// Maps a failure of the migration runner (both backends use refinery): a
/// schema this build does not know is the store of a newer thingcall.
pub(crate) fn migration_error(e: refinery::Error) -> StoreError {
    match e.kind() {
        refinery::error::Kind::MissingVersion(m) => StoreError::corrupt(format!(
            "the database was migrated by a newer thingcall (schema {m} is unknown here)"
        )),
        refinery::error::Kind::DivergentVersion(applied, ours) => StoreError::corrupt(format!(
            "the database's schema {applied} differs from this thingcall's {ours}"
        )),
        _ => StoreError::unavailable(format!("cannot migrate the store: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_back_as_stored() {
        let all = [
            Outcome::Pending,
            Outcome::Replied(200),
            Outcome::Replied(-1),
            Outcome::Late(460),
            Outcome::Timeout,
            Outcome::Offline,
            Outcome::HalfConn,
            Outcome::RateLimit,
            Outcome::RrpcFailed,
            Outcome::NotDelivered,
            Outcome::QueueFull,
        ];
        for o in all {
            assert_eq!(Outcome::parse(&o.to_stored(), true), Ok(o));
        }
        // The old stored forms of the platform's async outcomes.
        assert_eq!(Outcome::parse("9201", false), Ok(Outcome::NotDelivered));
        assert_eq!(Outcome::parse("429", false), Ok(Outcome::QueueFull));
        assert_eq!(Outcome::parse("9201", true), Ok(Outcome::Replied(9201)));
        assert!(Outcome::parse("maybe", true).is_err());
        assert!(Outcome::parse(" (late)", true).is_err());
    }
}
