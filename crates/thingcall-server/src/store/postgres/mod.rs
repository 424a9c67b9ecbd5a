//! The PostgreSQL store: `serve --store postgres://...`.
//!
//! Writes go through one writer task on a connection of its own
//! (`writer.rs`): it commits them in the order they were queued, many to a
//! transaction, and answers each caller only after the commit, so nothing
//! acknowledged is lost when thingcall is killed. Invocation records are
//! written straight to the database, in bulk statements, without the
//! journal the SQLite store uses: a PostgreSQL commit is already one
//! sequential write-ahead-log append, shared by every record of the batch,
//! and records in the database are what every node of a cluster reads.
//! Reads (start-up, `QueryDeviceServiceData`) use a pool
//! (`deadpool-postgres`). `queries.rs` has the SQL, `schema.rs` the
//! migrations.
//!
//! Every connection goes through one [`connect::Connector`]: TLS as the
//! URL's `sslmode` and `sslrootcert` say. Secrets are sealed with the
//! store's key before a change is queued and opened when read
//! (`store/sealed.rs`); the key is checked at connect (`schema::seal`).

mod connect;
mod error;
mod queries;
mod schema;
mod subscriptions;
mod writer;

pub(crate) use self::connect::Connector;
pub use self::connect::SslMode;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::mpsc;
use tokio_postgres::Config;
use tokio_postgres::config::Host;

use self::connect::TlsSettings;
use self::error::{from_pg, from_pool};
use self::writer::{Op, WriterState};
use crate::store::sealed::SecretsKey;
use crate::store::{
    Change, Completion, Invocation, LoggedChange, OnCommit, Pending, RecordQuery, RecordStats,
    Records, Registry, Snapshot, StoreError, Stored,
};
use crate::sync::lock;

/// A PostgreSQL connection URL,
/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=...&sslrootcert=...]`.
/// Its password never prints: `Display` and `Debug` leave it out.
#[derive(Clone)]
pub struct PostgresUrl {
    config: Arc<Config>,
    tls: Arc<TlsSettings>,
}

impl PostgresUrl {
    /// Parses a URL (`postgres://` or `postgresql://`), with libpq's
    /// `sslmode` (`disable`, `prefer` (the default), `require`,
    /// `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file of CAs, or
    /// `system`).
    pub fn parse(url: &str) -> Result<PostgresUrl, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(
                "a PostgreSQL store is a postgres://USER[:PASSWORD]@HOST[:PORT]/DB URL".into(),
            );
        }
        let (url, tls) =
            connect::split_url(url).map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        let config: Config = url
            .parse()
            // The parser's messages name the part that is wrong, never the
            // password's value.
            .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        if config.get_hosts().is_empty() {
            return Err("the PostgreSQL URL names no host".into());
        }
        Ok(PostgresUrl {
            config: Arc::new(config),
            tls: Arc::new(tls),
        })
    }

    /// How connections use TLS.
    pub fn ssl_mode(&self) -> SslMode {
        self.tls.mode
    }

    /// `HOST:PORT` of the first server, for messages.
    pub fn target(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "?".to_owned(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    /// The database name.
    pub fn database(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    /// The same server and credentials, another database (tests create
    /// and drop their own).
    pub fn with_database(&self, name: &str) -> PostgresUrl {
        let mut config = (*self.config).clone();
        config.dbname(name);
        PostgresUrl {
            config: Arc::new(config),
            tls: Arc::clone(&self.tls),
        }
    }

    /// The connector for this URL (its root certificates read now).
    pub(crate) fn connector(&self) -> Result<Connector, StoreError> {
        Connector::new((*self.config).clone(), &self.tls)
    }
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self.config.get_user().unwrap_or("");
        let password = if self.config.get_password().is_some() {
            ":***"
        } else {
            ""
        };
        let db = self.config.get_dbname().unwrap_or("");
        write!(f, "postgres://{user}{password}@{}/{db}", self.target())?;
        if self.tls.explicit {
            write!(f, "?sslmode={}", self.tls.mode.as_str())?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

/// Reads wait at most this long for a pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// The advisory lock that orders node-number claims.
const NODE_NUMBER_LOCK: i64 = 0x7468_696e_676e_6f64;

/// The PostgreSQL store.
pub(crate) struct Store {
    connector: Connector,
    pool: Pool,
    /// Seals secrets before they are written, opens them when read.
    key: SecretsKey,
    queue: Mutex<Option<mpsc::UnboundedSender<Op>>>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    state: Arc<WriterState>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl Store {
    /// Connects, migrates the schema, checks the secrets key (sealing the
    /// secrets of a store an earlier release kept in plaintext) and starts
    /// the writer. An unreachable database is one error that names the
    /// host. Without a key it refuses (a PostgreSQL store never makes one:
    /// every node must be given the same); `data_dir` is named in the
    /// message, as where a key file would be looked for.
    pub(crate) async fn connect(
        url: &PostgresUrl,
        key: Option<SecretsKey>,
        data_dir: &std::path::Path,
    ) -> Result<Store, StoreError> {
        let mut config = (*url.config).clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A dead server is noticed by TCP keepalives, not after hours.
        config.keepalives_idle(Duration::from_secs(10));
        config.application_name("thingcall");
        // From here on, every connection's settings come from the
        // connector: its copy of the settings carries the TLS mode.
        let connector = url.connector()?.with_config(config);
        let unreachable = |e: tokio_postgres::Error| {
            StoreError::unavailable(format!(
                "cannot connect to PostgreSQL at {}: {}",
                url.target(),
                connector.explain(&e)
            ))
        };
        let mut client = writer::connect(&connector).await.map_err(unreachable)?;
        schema::migrate(&mut client).await?;
        let key = schema::seal(&mut client, key, data_dir).await?;
        drop(client);
        let writer_conn = writer::Conn::open(&connector).await.map_err(unreachable)?;
        let manager = Manager::from_config(
            connector.config().clone(),
            connector.tls(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::internal(format!("cannot build the PostgreSQL pool: {e}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(WriterState::default());
        let writer = tokio::spawn(writer::run(
            connector.clone(),
            Some(writer_conn),
            rx,
            Arc::clone(&state),
        ));
        Ok(Store {
            connector,
            pool,
            key,
            queue: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            state,
        })
    }

    /// Makes the database `url` names ready to be a `store copy` target:
    /// one that holds anything (AccessKeys, products, devices, tombstones,
    /// records, or secrets sealed with some key) is refused, unless
    /// `force`, which empties it, the key its secrets were sealed with
    /// included (so the copy can seal them with another).
    pub(crate) async fn prepare_target(url: &PostgresUrl, force: bool) -> Result<(), StoreError> {
        let connector = url.connector()?;
        let mut client = writer::connect(&connector).await.map_err(|e| {
            StoreError::unavailable(format!(
                "cannot connect to PostgreSQL at {}: {}",
                url.target(),
                connector.explain(&e)
            ))
        })?;
        let exists: bool = client
            .query_one("SELECT to_regclass('access_keys') IS NOT NULL", &[])
            .await
            .map_err(from_pg)?
            .get(0);
        if !exists {
            return Ok(());
        }
        schema::migrate(&mut client).await?;
        let empty: bool = client
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM access_keys) AND NOT EXISTS (SELECT 1 FROM products)
                    AND NOT EXISTS (SELECT 1 FROM devices) AND NOT EXISTS (SELECT 1 FROM tombstones)
                    AND NOT EXISTS (SELECT 1 FROM invocations) AND NOT EXISTS (SELECT 1 FROM secret_keys)",
                &[],
            )
            .await
            .map_err(from_pg)?
            .get(0);
        if empty {
            return Ok(());
        }
        if !force {
            return Err(StoreError::new(
                crate::store::StoreErrorKind::Conflict,
                format!("{url} is not empty; add --force to replace what it holds"),
            ));
        }
        client
            .batch_execute(
                "TRUNCATE access_keys, products, model_versions, modules, module_versions, devices,
                          tombstones, invocations, consumer_groups, subscriptions, amqp_backlog,
                          secret_keys",
            )
            .await
            .map_err(from_pg)
    }

    /// The registry changes logged after `seq`, in order (at most 10,000
    /// at a time).
    pub(crate) async fn registry_changes_after(
        &self,
        seq: i64,
    ) -> Result<Vec<LoggedChange>, StoreError> {
        let mut client = self.pool.get().await.map_err(from_pool)?;
        // One snapshot for the log and every entity read: what an entity
        // is now, and the log entry it is as of, agree.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(from_pg)?;
        let rows = queries::registry_log_after(&*tx, seq).await?;
        // Each entity once, at its last entry: it is read as it is now.
        let mut last_of: std::collections::HashMap<(String, String), usize> =
            std::collections::HashMap::new();
        for (i, (_, entity, key, _, _)) in rows.iter().enumerate() {
            last_of.insert((entity.clone(), key.clone()), i);
        }
        let mut out = Vec::with_capacity(last_of.len());
        for (i, (seq, entity, key, product_key, device_name)) in rows.into_iter().enumerate() {
            if last_of.get(&(entity.clone(), key.clone())) != Some(&i) {
                continue;
            }
            let as_of = queries::entity_log_last(&*tx, &entity, &key).await?;
            let now = match entity.as_str() {
                "device" => {
                    let mut device = queries::device(&*tx, &key).await?;
                    if let Some(d) = device.as_mut() {
                        self.key.open_device(d)?;
                    }
                    let tombstoned = match (&product_key, &device_name) {
                        (Some(pk), Some(dn)) if device.is_none() => {
                            queries::tombstoned(&*tx, pk, dn).await?
                        }
                        _ => false,
                    };
                    Stored::Device {
                        iot_id: key,
                        device,
                        tombstone: tombstoned.then(|| product_key.zip(device_name)).flatten(),
                    }
                }
                "product" => {
                    let (mut product, tombstones) = queries::product(&*tx, &key).await?;
                    if let Some(p) = product.as_mut() {
                        self.key.open_product(p)?;
                    }
                    Stored::Product {
                        product_key: key,
                        product,
                        tombstones,
                    }
                }
                "access_key" => {
                    let mut access_key = queries::access_key(&*tx, &key).await?;
                    if let Some(k) = access_key.as_mut() {
                        self.key.open_access_key(k)?;
                    }
                    Stored::AccessKey {
                        access_key,
                        id: key,
                    }
                }
                other => {
                    tracing::warn!(
                        entity = other,
                        "an unknown entity in the registry log; skipped"
                    );
                    continue;
                }
            };
            out.push(LoggedChange { seq, now, as_of });
        }
        // The log's last entry is always kept (it is its entity's last), so
        // the batch ends where the log read ended.
        tx.commit().await.map_err(from_pg)?;
        Ok(out)
    }

    /// A device as stored now (`None`: unknown), and whether its name is
    /// tombstoned: what a cluster node checks a login against, so that a
    /// change made through another node a moment ago already holds.
    pub(crate) async fn device_now(
        &self,
        product_key: &str,
        device_name: &str,
    ) -> Result<(Option<crate::store::Device>, bool), StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        let mut device = queries::device_by_name(&**client, product_key, device_name).await?;
        if let Some(d) = device.as_mut() {
            self.key.open_device(d)?;
        }
        let tombstoned = match device {
            Some(_) => false,
            None => queries::tombstoned(&**client, product_key, device_name).await?,
        };
        Ok((device, tombstoned))
    }

    /// The newest logged registry change's number.
    pub(crate) async fn registry_last(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        queries::registry_log_last(&**client).await
    }

    /// Forgets the nonces whose timestamps can no longer be accepted.
    pub(crate) async fn expire_nonces(&self, now_ms: i64) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        client
            .execute("DELETE FROM nonces WHERE expires_ms <= $1", &[&now_ms])
            .await
            .map_err(from_pg)
    }

    /// This node's number among the nodes (0 to `max - 1`), kept from an
    /// earlier run or the smallest one no node seen within `stale_ms` holds.
    pub(crate) async fn claim_node_number(
        &self,
        node_id: &str,
        now_ms: i64,
        stale_ms: i64,
        max: u8,
    ) -> Result<u8, StoreError> {
        let mut client = self.pool.get().await.map_err(from_pool)?;
        let tx = client.transaction().await.map_err(from_pg)?;
        // One claim at a time, across the nodes.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&NODE_NUMBER_LOCK])
            .await
            .map_err(from_pg)?;
        tx.execute(
            "DELETE FROM nodes WHERE seen_ms < $1 AND node_id <> $2",
            &[&(now_ms - stale_ms), &node_id],
        )
        .await
        .map_err(from_pg)?;
        let mine: Option<i16> = tx
            .query_opt("SELECT number FROM nodes WHERE node_id = $1", &[&node_id])
            .await
            .map_err(from_pg)?
            .map(|r| r.get(0));
        let number = match mine {
            Some(n) => n,
            None => {
                let taken: Vec<i16> = tx
                    .query("SELECT number FROM nodes", &[])
                    .await
                    .map_err(from_pg)?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let Some(free) = (0..i16::from(max)).find(|n| !taken.contains(n)) else {
                    return Err(StoreError::unavailable(format!(
                        "{max} nodes are alive already; a cluster has at most {max}"
                    )));
                };
                free
            }
        };
        tx.execute(
            "INSERT INTO nodes (node_id, number, seen_ms) VALUES ($1, $2, $3)
             ON CONFLICT (node_id) DO UPDATE SET seen_ms = EXCLUDED.seen_ms",
            &[&node_id, &number, &now_ms],
        )
        .await
        .map_err(from_pg)?;
        tx.commit().await.map_err(from_pg)?;
        u8::try_from(number).map_err(|_| StoreError::corrupt("a node number out of range"))
    }

    /// Tells the other nodes this one is alive (keeps its number).
    pub(crate) async fn touch_node(&self, node_id: &str, now_ms: i64) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        client
            .execute(
                "UPDATE nodes SET seen_ms = $2 WHERE node_id = $1",
                &[&node_id, &now_ms],
            )
            .await
            .map_err(from_pg)
            .map(|_| ())
    }

    /// The connector of this store's connections, for a node's own
    /// listening connection.
    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        let queue = lock(&self.queue);
        let Some(tx) = queue.as_ref() else {
            return Err(StoreError::unavailable("the store is closed"));
        };
        self.state.waiting.fetch_add(1, Ordering::Relaxed);
        tx.send(op).map_err(|_| {
            self.state.waiting.fetch_sub(1, Ordering::Relaxed);
            StoreError::unavailable("the PostgreSQL writer stopped")
        })
    }
}

#[async_trait::async_trait]
impl Registry for Store {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        let mut snapshot = queries::load(&**client).await?;
        drop(client);
        self.key.open_snapshot(&mut snapshot)?;
        Ok(snapshot)
    }

    fn apply(&self, change: Change, on_commit: OnCommit) -> Result<Pending<()>, StoreError> {
        // The writer writes the sealed change; the mirror gets the change
        // as it was.
        let (change, original) = self.key.seal_change(change);
        let on_commit: OnCommit = match original {
            Some(original) => Box::new(move |_, position| on_commit(&original, position)),
            None => on_commit,
        };
        let (done, pending) = Pending::new();
        self.send(Op::Change {
            change,
            on_commit,
            done,
        })?;
        Ok(pending)
    }
}

#[async_trait::async_trait]
impl Records for Store {
    fn record(&self, invocation: Invocation) -> Result<Pending<()>, StoreError> {
        let (done, pending) = Pending::new();
        self.send(Op::Insert { invocation, done })?;
        Ok(pending)
    }

    fn complete(&self, completion: Completion) -> Result<Pending<bool>, StoreError> {
        let (done, pending) = Pending::new();
        self.send(Op::Complete { completion, done })?;
        Ok(pending)
    }

    async fn query(&self, query: RecordQuery) -> Result<Vec<Invocation>, StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        queries::invocations(&**client, &query).await
    }

    fn stats(&self) -> RecordStats {
        RecordStats {
            waiting: self.state.waiting.load(Ordering::Relaxed),
            failed_copies: self.state.failures.load(Ordering::Relaxed),
        }
    }

    async fn close(&self) {
        // The writer drains the queue, then stops.
        drop(lock(&self.queue).take());
        let writer = lock(&self.writer).take();
        if let Some(w) = writer {
            let _ = w.await;
        }
        self.pool.close();
    }
}

impl PostgresUrl {
    /// A connection to this server's `postgres` database, for
    /// administration.
    async fn maintenance(&self) -> Result<tokio_postgres::Client, StoreError> {
        let connector = self.with_database("postgres").connector()?;
        writer::connect(&connector).await.map_err(|e| {
            StoreError::unavailable(format!(
                "cannot connect to PostgreSQL at {}: {}",
                self.target(),
                connector.explain(&e)
            ))
        })
    }

    /// Creates database `name` on this server (for tests and `store copy`
    /// targets); `Ok(false)` when it exists already.
    pub async fn create_database(&self, name: &str) -> Result<bool, StoreError> {
        let client = self.maintenance().await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .map_err(from_pg)?
            .is_some();
        if exists {
            return Ok(false);
        }
        let quoted = name.replace('"', "\"\"");
        client
            .batch_execute(&format!("CREATE DATABASE \"{quoted}\""))
            .await
            .map_err(from_pg)?;
        Ok(true)
    }

    /// Drops database `name` on this server, closing its connections.
    pub async fn drop_database(&self, name: &str) -> Result<(), StoreError> {
        let client = self.maintenance().await?;
        let quoted = name.replace('"', "\"\"");
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{quoted}\" WITH (FORCE)"
            ))
            .await
            .map_err(from_pg)
    }
}

impl Store {
    /// Records signature nonces (digest, expiry) for every node, in one
    /// statement: for each, false when a node recorded it before and it
    /// has not expired. The digests must be distinct. A nonce is worth
    /// less than a record: it is written without waiting for the disk
    /// (`synchronous_commit` off), so a database crash may forget the last
    /// moments' nonces, never a record.
    pub(crate) async fn claim_nonces(
        &self,
        batch: &[(u128, i64)],
        now_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        let statement = client
            .prepare_cached(
                "INSERT INTO nonces (digest, expires_ms)
                 SELECT * FROM UNNEST($1::bytea[], $2::bigint[])
                 ON CONFLICT (digest) DO UPDATE SET expires_ms = EXCLUDED.expires_ms
                 WHERE nonces.expires_ms <= $3 RETURNING digest",
            )
            .await
            .map_err(from_pg)?;
        let digests: Vec<Vec<u8>> = batch
            .iter()
            .map(|(d, _)| d.to_le_bytes().to_vec())
            .collect();
        let expiries: Vec<i64> = batch.iter().map(|(_, e)| *e).collect();
        // One round trip: the setting (for this pooled connection's session)
        // and the statement travel together.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&digests, &expiries, &now_ms];
        let (set, rows) = tokio::join!(
            client.batch_execute("SET synchronous_commit TO OFF"),
            client.query(&statement, &params)
        );
        set.map_err(from_pg)?;
        let rows = rows.map_err(from_pg)?;
        let claimed: std::collections::HashSet<Vec<u8>> =
            rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect();
        Ok(digests.iter().map(|d| claimed.contains(d)).collect())
    }
}
