//! The storage seam: what the engine and the action handlers need from a
//! store, as two traits. The SQLite store implements both; another backend
//! (PostgreSQL) implements them without touching the engine.

use async_trait::async_trait;

use crate::catalog::{AccessKey, Device, ModelVersion, Product};
pub(crate) use crate::store::{Invocation, Pending, Snapshot, StoreError};

/// Products, devices, thing models and AccessKeys. Each method returns once
/// the change is durable.
#[async_trait]
pub(crate) trait Registry: Send + Sync {
    /// Everything, for the in-memory catalog at start-up.
    async fn load(&self) -> Result<Snapshot, StoreError>;
    /// Creates or replaces an AccessKey.
    async fn put_access_key(&self, key: AccessKey, now: i64) -> Result<(), StoreError>;
    /// Creates a product (with its initial versions).
    async fn insert_product(&self, product: Product) -> Result<(), StoreError>;
    /// Deletes a product, its models and its devices (which are tombstoned).
    async fn delete_product(&self, product_key: String, now: i64) -> Result<(), StoreError>;
    /// Replaces the draft of the default module, or of `(block id, name)`.
    async fn set_draft(
        &self,
        product_key: String,
        block: Option<(String, String)>,
        tsl: String,
    ) -> Result<(), StoreError>;
    /// Adds a published version and keeps only the newest `keep`.
    async fn publish(
        &self,
        product_key: String,
        version: ModelVersion,
        keep: usize,
    ) -> Result<(), StoreError>;
    /// Registers a device.
    async fn insert_device(&self, device: Device) -> Result<(), StoreError>;
    /// Deletes a device (and tombstones its name).
    async fn delete_device(&self, device: Device, now: i64) -> Result<(), StoreError>;
    /// Saves a device's state (enabled, activation, presence).
    async fn update_device(&self, device: Device) -> Result<(), StoreError>;
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
