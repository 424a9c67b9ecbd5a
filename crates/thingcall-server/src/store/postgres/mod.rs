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

mod error;
mod queries;
mod schema;
mod writer;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::mpsc;
use tokio_postgres::Config;
use tokio_postgres::config::Host;

use self::error::{from_pg, from_pool};
use self::writer::{Op, WriterState};
use crate::store::{
    Change, Completion, Invocation, OnCommit, Pending, RecordQuery, RecordStats, Records, Registry,
    Snapshot, StoreError,
};
use crate::sync::lock;

/// A PostgreSQL connection URL, `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`.
/// Its password never prints: `Display` and `Debug` leave it out.
#[derive(Clone)]
pub struct PostgresUrl {
    config: Arc<Config>,
}

impl PostgresUrl {
    /// Parses a URL (`postgres://` or `postgresql://`).
    pub fn parse(url: &str) -> Result<PostgresUrl, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(
                "a PostgreSQL store is a postgres://USER[:PASSWORD]@HOST[:PORT]/DB URL".into(),
            );
        }
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
        })
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
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
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
        write!(f, "postgres://{user}{password}@{}/{db}", self.target())
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

/// Reads wait at most this long for a pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// The PostgreSQL store.
pub(crate) struct Store {
    pool: Pool,
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
    /// Connects, migrates the schema and starts the writer. An unreachable
    /// database is one error that names the host.
    pub(crate) async fn connect(url: &PostgresUrl) -> Result<Store, StoreError> {
        let mut config = (*url.config).clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A dead server is noticed by TCP keepalives, not after hours.
        config.keepalives_idle(Duration::from_secs(10));
        config.application_name("thingcall");
        let mut client = writer::connect(&config).await.map_err(|e| {
            StoreError::unavailable(format!(
                "cannot connect to PostgreSQL at {}: {}",
                url.target(),
                error::describe(&e)
            ))
        })?;
        schema::migrate(&mut client).await?;
        drop(client);
        let writer_conn = writer::Conn::open(&config).await.map_err(|e| {
            StoreError::unavailable(format!(
                "cannot connect to PostgreSQL at {}: {}",
                url.target(),
                error::describe(&e)
            ))
        })?;
        let manager = Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
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
            config,
            Some(writer_conn),
            rx,
            Arc::clone(&state),
        ));
        Ok(Store {
            pool,
            queue: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            state,
        })
    }

    /// Whether the store holds anything: AccessKeys, products, devices,
    /// tombstones or records.
    pub(crate) async fn is_empty(&self) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        let row = client
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM access_keys) AND NOT EXISTS (SELECT 1 FROM products)
                    AND NOT EXISTS (SELECT 1 FROM devices) AND NOT EXISTS (SELECT 1 FROM tombstones)
                    AND NOT EXISTS (SELECT 1 FROM invocations)",
                &[],
            )
            .await
            .map_err(from_pg)?;
        Ok(row.get(0))
    }

    /// Deletes everything the store holds (`store copy --force`).
    pub(crate) async fn clear(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        client
            .batch_execute(
                "TRUNCATE access_keys, products, model_versions, modules, module_versions, devices,
                          tombstones, invocations",
            )
            .await
            .map_err(from_pg)
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
        queries::load(&**client).await
    }

    fn apply(&self, change: Change, on_commit: OnCommit) -> Result<Pending<()>, StoreError> {
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
        writer::connect(self.with_database("postgres").config())
            .await
            .map_err(|e| {
                StoreError::unavailable(format!(
                    "cannot connect to PostgreSQL at {}: {}",
                    self.target(),
                    error::describe(&e)
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
