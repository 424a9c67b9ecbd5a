//! The storage seam: what the engine and the action handlers need from a
//! store, as two traits. The SQLite store implements both; another backend
//! (PostgreSQL) implements them without touching the engine.

use async_trait::async_trait;

use crate::catalog::{AccessKey, Device, ModelVersion, Product};
pub(crate) use crate::store::{Invocation, Pending, Snapshot, StoreError};

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

/// Runs once a change is committed, before its handle resolves. Changes'
/// callbacks run one at a time, in commit order.
pub(crate) type OnCommit = Box<dyn FnOnce(&Change) + Send>;

/// Products, devices, thing models and AccessKeys.
#[async_trait]
pub(crate) trait Registry: Send + Sync {
    /// Everything, for the in-memory catalog at start-up.
    async fn load(&self) -> Result<Snapshot, StoreError>;
    /// Queues a change. Changes commit in the order they are queued; after
    /// each commit the store calls its `on_commit`, in the same order, and
    /// then resolves the handle. A change that fails calls nothing and
    /// resolves with the error.
    fn apply(&self, change: Change, on_commit: OnCommit) -> Result<Pending<()>, StoreError>;
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
    /// Records and outcomes durable in the journal, not yet copied into the
    /// queryable store.
    pub(crate) waiting: usize,
    /// Copies into the queryable store that failed to commit (each is tried
    /// again; a growing count means the disk or database needs attention).
    pub(crate) failed_copies: u64,
}

/// Invocation records. Writes are durable when `record`/`complete` return
/// `Ok` and are applied in the order they were made; `query` sees every
/// write made before it.
#[async_trait]
pub(crate) trait Records: Send + Sync {
    /// Stores a new record; the handle resolves once it is durable.
    fn record(&self, invocation: Invocation) -> Result<Pending<()>, StoreError>;
    /// Stores an outcome for the record of device `iot_id` with this
    /// message id; the handle resolves once it is applied, with false when
    /// that device has no such record (a reply completes only the call of
    /// the device that sent it).
    fn complete(
        &self,
        message_id: String,
        iot_id: String,
        output: Option<String>,
        code: String,
    ) -> Result<Pending<bool>, StoreError>;
    /// Reads records.
    async fn query(&self, query: RecordQuery) -> Result<Vec<Invocation>, StoreError>;
    /// The store's backlog and failures.
    fn stats(&self) -> RecordStats;
    /// Finishes queued writes and releases the store.
    fn close(&self);
}
