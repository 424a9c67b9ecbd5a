//! The embedded SQLite store.
//!
//! One file in the data directory, in WAL mode, with versioned migrations
//! (`PRAGMA user_version`). Writes go through one writer thread that groups
//! whatever is waiting into one transaction and answers each caller only
//! after the commit: a response never acknowledges something a `kill -9`
//! could lose. Invocation records, the one write on the hot path, are made
//! durable by an append to the [`journal`](crate::journal) instead, and the
//! writer copies them in large transactions. Reads use a separate
//! connection (WAL lets them run beside the writer).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use crate::catalog::{AccessKey, Device, ModelVersion, Product};
use crate::journal::{self, Entry, Journal, Queued};
use crate::lock;
use crate::repo::{Change, OnCommit};

/// The versioned schema. Entry `n` upgrades `user_version` `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE access_keys (
    id          TEXT PRIMARY KEY,
    secret      TEXT NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_ms  INTEGER NOT NULL
);
CREATE TABLE products (
    product_key     TEXT PRIMARY KEY,
    product_name    TEXT NOT NULL UNIQUE,
    product_secret  TEXT NOT NULL,
    description     TEXT,
    node_type       INTEGER NOT NULL,
    data_format     INTEGER,
    commodity_code  TEXT,
    auth_type       TEXT NOT NULL,
    protocol_type   TEXT,
    net_type        TEXT,
    category_key    TEXT,
    validate_type   INTEGER NOT NULL,
    created_ms      INTEGER NOT NULL,
    draft_tsl       TEXT NOT NULL
);
CREATE TABLE model_versions (
    product_key  TEXT NOT NULL REFERENCES products(product_key) ON DELETE CASCADE,
    version      TEXT NOT NULL,
    description  TEXT,
    tsl          TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    PRIMARY KEY (product_key, version)
);
CREATE TABLE devices (
    iot_id        TEXT PRIMARY KEY,
    product_key   TEXT NOT NULL REFERENCES products(product_key) ON DELETE CASCADE,
    device_name   TEXT NOT NULL,
    device_secret TEXT NOT NULL,
    nickname      TEXT,
    enabled       INTEGER NOT NULL DEFAULT 1,
    created_ms    INTEGER NOT NULL,
    activated_ms  INTEGER,
    online_ms     INTEGER,
    status_ms     INTEGER NOT NULL,
    ip_address    TEXT,
    UNIQUE (product_key, device_name)
);
CREATE TABLE tombstones (
    product_key  TEXT NOT NULL,
    device_name  TEXT NOT NULL,
    deleted_ms   INTEGER NOT NULL,
    PRIMARY KEY (product_key, device_name)
);
CREATE TABLE invocations (
    message_id  TEXT PRIMARY KEY,
    iot_id      TEXT NOT NULL,
    identifier  TEXT NOT NULL,
    name        TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    mode        TEXT NOT NULL,
    input       TEXT NOT NULL,
    output      TEXT,
    code        TEXT NOT NULL
);
CREATE INDEX invocations_by_device ON invocations (iot_id, time_ms);
"#,
    r#"
CREATE TABLE modules (
    product_key  TEXT NOT NULL REFERENCES products(product_key) ON DELETE CASCADE,
    block_id     TEXT NOT NULL,
    block_name   TEXT NOT NULL,
    draft_tsl    TEXT NOT NULL,
    PRIMARY KEY (product_key, block_id)
);
CREATE TABLE module_versions (
    product_key  TEXT NOT NULL,
    version      TEXT NOT NULL,
    block_id     TEXT NOT NULL,
    tsl          TEXT NOT NULL,
    PRIMARY KEY (product_key, version, block_id),
    FOREIGN KEY (product_key, version) REFERENCES model_versions(product_key, version) ON DELETE CASCADE
);
"#,
    // Message ids are increasing integers: keyed by them, the table is
    // appended at its right edge and needs no separate key index, so a
    // record costs one B-tree fewer.
    r#"
CREATE TABLE invocations_v3 (
    message_id  INTEGER PRIMARY KEY,
    iot_id      TEXT NOT NULL,
    identifier  TEXT NOT NULL,
    name        TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    mode        TEXT NOT NULL,
    input       TEXT NOT NULL,
    output      TEXT,
    code        TEXT NOT NULL
);
INSERT INTO invocations_v3
    SELECT CAST(message_id AS INTEGER), iot_id, identifier, name, time_ms, mode, input, output, code
    FROM invocations;
DROP TABLE invocations;
ALTER TABLE invocations_v3 RENAME TO invocations;
CREATE INDEX invocations_by_device ON invocations (iot_id, time_ms);
"#,
];

/// A store failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError(e.to_string())
    }
}

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

/// What the writer thread is sent.
enum Msg {
    /// A write to run and commit.
    Job(Job),
    /// The journal has entries to copy (sent when its queue stops being
    /// empty, not per entry).
    Copy,
}

/// What the writer reports about its copies of the journal.
#[derive(Debug, Default)]
struct CopyState {
    retrying: std::sync::atomic::AtomicUsize,
    failures: std::sync::atomic::AtomicU64,
}

/// How long the writer lets journal entries gather before copying them:
/// nobody waits on the copy, and a bigger transaction costs less per row.
const COPY_DELAY: std::time::Duration = std::time::Duration::from_millis(5);

/// Most jobs grouped into one transaction.
const MAX_BATCH: usize = 512;

/// A submitted write, resolved after its commit.
pub(crate) struct Pending<T>(oneshot::Receiver<Result<T, String>>);

impl<T> Pending<T> {
    /// Waits for the commit.
    pub(crate) async fn wait(self) -> Result<T, StoreError> {
        self.0
            .await
            .map_err(|_| StoreError("the store writer stopped".into()))?
            .map_err(StoreError)
    }
}

/// The SQLite store.
pub(crate) struct Store {
    writer: Mutex<Option<std::sync::mpsc::Sender<Msg>>>,
    journal: Arc<Journal>,
    /// Held until `close`: one process per data directory (a second one
    /// would replay, and delete, the first one's live journal).
    lock: Mutex<Option<std::fs::File>>,
    /// Shared with the writer: entries held for another copy attempt, and
    /// copies that failed to commit.
    copy_state: Arc<CopyState>,
    thread: Mutex<Option<JoinHandle<()>>>,
    reader: Arc<Mutex<Connection>>,
    checkpoint: Mutex<Option<(Arc<std::sync::atomic::AtomicBool>, JoinHandle<()>)>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL in WAL mode: a committed transaction survives a process crash;
    // only an OS crash or power loss can take the last ones.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let current =
        usize::try_from(current).map_err(|_| StoreError("negative schema version".into()))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError(format!(
            "the database is at schema version {current}, newer than this thingcall ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "store migrated");
    }
    Ok(())
}

/// How often the checkpoint thread copies the WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The WAL file is cut back to this size when it restarts after a burst.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

fn run_checkpoints(
    conn: Connection,
    stop: Arc<std::sync::atomic::AtomicBool>,
    catch_up: Arc<std::sync::atomic::AtomicBool>,
) {
    let tick = std::time::Duration::from_millis(50);
    let mut waited = std::time::Duration::ZERO;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(tick);
        waited += tick;
        if waited >= CHECKPOINT_EVERY {
            waited = std::time::Duration::ZERO;
            match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                // The bulk of the WAL is copied here, beside the writer; the
                // frames committed meanwhile are left for the writer to copy
                // between two batches (see `run_writer`).
                Ok(()) => catch_up.store(true, std::sync::atomic::Ordering::Relaxed),
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
            }
        }
    }
    // A last, complete checkpoint leaves a tidy database file behind.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

/// Runs one statement through the connection's statement cache, so the
/// writer's per-job transaction control is parsed once, not per job.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The writer loop: group commit, then, when the checkpoint thread asks,
/// a catch-up checkpoint.
///
/// Under a steady stream of commits a checkpoint running beside the writer
/// never finds the WAL fully copied, and SQLite restarts the WAL only when
/// it is; the file would grow without bound (measured: 1 GiB in 8 s of
/// load). So after each pass of the checkpoint thread the writer copies the
/// few frames committed during that pass itself, while nothing else writes;
/// its next commit then starts the WAL again from the beginning.
fn run_writer(
    conn: Connection,
    messages: std::sync::mpsc::Receiver<Msg>,
    journal: Arc<Journal>,
    catch_up: Arc<std::sync::atomic::AtomicBool>,
    report: Arc<CopyState>,
) {
    // Segments below this one may still hold entries not yet copied.
    let mut oldest = journal.current();
    // Entries whose copy did not commit, tried again first.
    let mut retry: Vec<Queued> = Vec::new();
    loop {
        let mut batch = Vec::new();
        let closing = match messages.recv() {
            Ok(Msg::Job(job)) => {
                batch.push(job);
                false
            }
            Ok(Msg::Copy) => {
                std::thread::sleep(COPY_DELAY);
                false
            }
            Err(_) => true,
        };
        while batch.len() < MAX_BATCH {
            match messages.try_recv() {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Copy) => {}
                Err(_) => break,
            }
        }
        let (taken, current) = journal.take();
        let mut entries = std::mem::take(&mut retry);
        report
            .retrying
            .store(0, std::sync::atomic::Ordering::Relaxed);
        entries.extend(taken);
        let committed = commit_batch(&conn, &mut entries, batch);
        if committed {
            journal.release(oldest..current);
            oldest = current;
        } else {
            report
                .failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            retry = entries;
            report
                .retrying
                .store(retry.len(), std::sync::atomic::Ordering::Relaxed);
            // A failing disk is not helped by a tight loop.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if closing {
            if committed {
                journal.remove_current();
            }
            break;
        }
        if catch_up.swap(false, std::sync::atomic::Ordering::Relaxed)
            && let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "WAL catch-up checkpoint failed");
        }
    }
}

/// Copies journal entries and runs jobs in one transaction; answers the
/// jobs, and the entries' waiters once committed. Returns whether it
/// committed (on failure the entries stay queued for another try).
fn commit_batch(conn: &Connection, entries: &mut Vec<Queued>, batch: Vec<Job>) -> bool {
    if entries.is_empty() && batch.is_empty() {
        return true;
    }
    let began = exec(conn, "BEGIN IMMEDIATE");
    let mut found = Vec::with_capacity(entries.len());
    let mut completions = Vec::with_capacity(batch.len());
    if began.is_ok() {
        for q in entries.iter() {
            found.push(copy_entry(conn, &q.entry, false).map_err(|e| e.to_string()));
        }
    }
    for job in batch {
        if began.is_err() {
            // Nothing runs; dropping the job tells its caller the write failed.
            drop(job);
            continue;
        }
        let _ = exec(conn, "SAVEPOINT job");
        let (ok, done) = job(conn);
        if !ok {
            let _ = exec(conn, "ROLLBACK TO job");
        }
        let _ = exec(conn, "RELEASE job");
        completions.push(done);
    }
    let committed = match began {
        Ok(()) => exec(conn, "COMMIT").map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
        tracing::error!(error = ?committed, "store commit failed");
    }
    for done in completions {
        done(committed.clone());
    }
    if committed.is_err() {
        return false;
    }
    for (q, result) in entries.drain(..).zip(found) {
        if let Err(e) = &result {
            tracing::error!(entry = ?q.entry, error = %e, "an invocation record could not be stored");
        }
        if let Some(done) = q.done {
            let _ = done.send(result);
        }
    }
    true
}

/// Applies one journal entry; for an outcome, whether its record exists.
/// `replay` is set when start-up re-applies the segments of a crash, where
/// finding a record already stored is expected.
fn copy_entry(conn: &Connection, entry: &Entry, replay: bool) -> rusqlite::Result<bool> {
    match entry {
        Entry::Insert(i) => {
            let inserted = insert_invocation(conn, i)?;
            if !inserted && !replay {
                tracing::warn!(message_id = %i.message_id, "a record with this message id exists; the new one was not stored");
            }
            Ok(inserted)
        }
        Entry::Complete {
            message_id,
            iot_id,
            output,
            code,
        } => complete_invocation(conn, message_id, iot_id.as_deref(), output.as_deref(), code),
    }
}

/// Re-applies the journal segments left in `dir` by a process that did not
/// shut down cleanly, in one transaction. Returns the segments replayed, in
/// order.
fn replay(conn: &Connection, dir: &Path) -> Result<Vec<u64>, StoreError> {
    let seqs = journal::segments(dir)
        .map_err(|e| StoreError(format!("cannot list the journal in {}: {e}", dir.display())))?;
    if seqs.is_empty() {
        return Ok(seqs);
    }
    let tx = conn.unchecked_transaction()?;
    let mut count = 0usize;
    for &seq in &seqs {
        let path = journal::segment_path(dir, seq);
        let bytes = std::fs::read(&path)
            .map_err(|e| StoreError(format!("cannot read {}: {e}", path.display())))?;
        let segment = journal::read_segment(&bytes);
        if let Some(why) = segment.stopped {
            tracing::warn!(path = %path.display(), why, "journal segment ends in a torn write (a crash mid-append; nothing after it was acknowledged)");
        }
        for e in &segment.entries {
            if let Err(err) = copy_entry(&tx, e, true) {
                tracing::error!(entry = ?e, error = %err, "a journaled invocation record could not be replayed");
            }
        }
        count += segment.entries.len();
    }
    tx.commit()?;
    tracing::info!(
        segments = seqs.len(),
        entries = count,
        "replayed the invocation journal"
    );
    Ok(seqs)
}

impl Store {
    /// Opens (creating if needed) `thingcall.db` in `dir` and migrates it.
    pub(crate) fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let lock_path = dir.join("thingcall.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError(format!(
                    "another thingcall process is using {}",
                    dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )));
            }
        }
        let path = dir.join("thingcall.db");
        let mut writer = open(&path)?;
        migrate(&mut writer)?;
        // Checkpoints copy the WAL into the database file and sync it; they
        // run on their own thread so no commit on the request path waits.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        // Room for every statement the writer runs, so none is re-parsed.
        writer.set_prepared_statement_cache_capacity(64);
        let reader = open(&path)?;
        let checkpointer = open(&path)?;
        writer.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        let replayed = replay(&writer, dir)?;
        let journal = Arc::new(Journal::create(dir, replayed.last().copied()).map_err(|e| {
            StoreError(format!(
                "cannot start the journal in {}: {e}",
                dir.display()
            ))
        })?);
        // The replayed segments are in the database now.
        journal.release(replayed);
        let catch_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let asked = Arc::clone(&catch_up);
        let copier = Arc::clone(&journal);
        let copy_state = Arc::new(CopyState::default());
        let report = Arc::clone(&copy_state);
        let thread = std::thread::Builder::new()
            .name("thingcall-store".into())
            .spawn(move || run_writer(writer, rx, copier, asked, report))
            .map_err(|e| StoreError(e.to_string()))?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let checkpoint = std::thread::Builder::new()
            .name("thingcall-checkpoint".into())
            .spawn(move || run_checkpoints(checkpointer, stop_flag, catch_up))
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(Store {
            writer: Mutex::new(Some(tx)),
            journal,
            lock: Mutex::new(Some(lock)),
            copy_state,
            thread: Mutex::new(Some(thread)),
            reader: Arc::new(Mutex::new(reader)),
            checkpoint: Mutex::new(Some((stop, checkpoint))),
        })
    }

    /// Runs `f` in the writer's transaction; resolves after the commit.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.submit(f)?.wait().await
    }

    /// Queues `f` now and returns a handle that resolves after its commit.
    /// Jobs run in the order they are submitted, so a later job's commit
    /// implies every earlier job's.
    pub(crate) fn submit<T, F>(&self, f: F) -> Result<Pending<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, String>>();
        let job: Job = Box::new(move |conn| match f(conn) {
            Ok(v) => (
                true,
                Box::new(move |committed: Result<(), String>| {
                    let _ = tx.send(committed.map(|()| v));
                }),
            ),
            Err(e) => {
                let message = e.to_string();
                (
                    false,
                    Box::new(move |_| {
                        let _ = tx.send(Err(message));
                    }),
                )
            }
        });
        self.send_job(job)?;
        Ok(Pending(rx))
    }

    /// Hands a job to the writer thread.
    fn send_job(&self, job: Job) -> Result<(), StoreError> {
        let sender = lock(&self.writer)
            .clone()
            .ok_or_else(|| StoreError("the store is closed".into()))?;
        sender
            .send(Msg::Job(job))
            .map_err(|_| StoreError("the store writer stopped".into()))
    }

    /// Appends an invocation change to the journal: durable when this
    /// returns `Ok`; copied into SQLite by the writer shortly after.
    fn append(
        &self,
        entry: Entry,
        done: Option<oneshot::Sender<Result<bool, String>>>,
    ) -> Result<(), StoreError> {
        // The writer's handle stays locked across the append, so nothing is
        // appended once `close` has taken it (the writer's last copy).
        let writer = lock(&self.writer);
        let sender = writer
            .as_ref()
            .ok_or_else(|| StoreError("the store is closed".into()))?;
        let nudge = self
            .journal
            .append(Queued { entry, done })
            .map_err(|e| StoreError(format!("cannot append to the journal: {e}")))?;
        if nudge {
            sender
                .send(Msg::Copy)
                .map_err(|_| StoreError("the store writer stopped".into()))?;
        }
        Ok(())
    }

    /// Runs `f` on the read connection, off the async threads.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || f(&lock(&reader)).map_err(StoreError::from))
            .await
            .map_err(|e| StoreError(e.to_string()))?
    }

    /// Finishes every queued write, stops the writer thread,
    /// checkpoints the WAL into the database file and lets the data
    /// directory go.
    pub(crate) fn close(&self) {
        drop(lock(&self.writer).take());
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        if let Some((stop, t)) = lock(&self.checkpoint).take() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = t.join();
        }
        drop(lock(&self.lock).take());
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

// ------------------------------------------------------------------ queries

/// Everything the catalog mirrors, read at start-up.
pub(crate) struct Snapshot {
    pub(crate) access_keys: Vec<AccessKey>,
    pub(crate) products: Vec<Product>,
    pub(crate) devices: Vec<Device>,
    pub(crate) tombstones: Vec<(String, String)>,
    /// The highest message id recorded: new ids start above it.
    pub(crate) last_message_id: Option<u64>,
}

/// Runs a query without parameters and maps every row.
fn all<T>(
    conn: &Connection,
    sql: &str,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    conn.prepare(sql)?.query_map([], row)?.collect()
}

pub(crate) fn load(conn: &Connection) -> rusqlite::Result<Snapshot> {
    let access_keys = all(conn, "SELECT id, secret, enabled FROM access_keys", |r| {
        Ok(AccessKey {
            id: r.get(0)?,
            secret: r.get::<_, String>(1)?.into(),
            enabled: r.get(2)?,
        })
    })?;
    let sql = "SELECT product_key, product_name, product_secret, description, node_type, data_format, commodity_code,
                auth_type, protocol_type, net_type, category_key, validate_type, created_ms, draft_tsl FROM products";
    let mut products = all(conn, sql, |r| {
        Ok(Product {
            product_key: r.get(0)?,
            product_name: r.get(1)?,
            product_secret: r.get::<_, String>(2)?.into(),
            description: r.get(3)?,
            node_type: r.get(4)?,
            data_format: r.get(5)?,
            commodity_code: r.get(6)?,
            auth_type: r.get(7)?,
            protocol_type: r.get(8)?,
            net_type: r.get(9)?,
            category_key: r.get(10)?,
            validate_type: r.get(11)?,
            created_ms: r.get(12)?,
            draft_tsl: r.get(13)?,
            versions: Vec::new(),
            modules: Default::default(),
        })
    })?;
    let versions = all(
        conn,
        "SELECT product_key, version, description, tsl, created_ms, seq FROM model_versions ORDER BY seq",
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                ModelVersion {
                    version: r.get(1)?,
                    description: r.get(2)?,
                    tsl: r.get(3)?,
                    created_ms: r.get(4)?,
                    seq: r.get(5)?,
                    modules: Default::default(),
                },
            ))
        },
    )?;
    // Rows are attached to their product through an index, so start-up
    // stays linear in the number of products.
    let by_key: HashMap<String, usize> = products
        .iter()
        .enumerate()
        .map(|(i, p)| (p.product_key.clone(), i))
        .collect();
    for (pk, v) in versions {
        if let Some(&i) = by_key.get(&pk) {
            products[i].versions.push(v);
        }
    }
    let modules = all(
        conn,
        "SELECT product_key, block_id, draft_tsl FROM modules",
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        },
    )?;
    for (pk, block, m) in modules {
        if let Some(&i) = by_key.get(&pk) {
            products[i].modules.insert(block, m);
        }
    }
    let module_versions = all(
        conn,
        "SELECT product_key, version, block_id, tsl FROM module_versions",
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        },
    )?;
    for (pk, version, block, tsl) in module_versions {
        if let Some(v) = by_key.get(&pk).and_then(|&i| {
            products[i]
                .versions
                .iter_mut()
                .find(|v| v.version == version)
        }) {
            v.modules.insert(block, tsl);
        }
    }
    let sql = "SELECT iot_id, product_key, device_name, device_secret, nickname, enabled, created_ms, activated_ms,
                online_ms, status_ms, ip_address FROM devices";
    let devices = all(conn, sql, |r| {
        Ok(Device {
            iot_id: r.get(0)?,
            product_key: r.get(1)?,
            device_name: r.get(2)?,
            device_secret: r.get::<_, String>(3)?.into(),
            nickname: r.get(4)?,
            enabled: r.get(5)?,
            created_ms: r.get(6)?,
            activated_ms: r.get(7)?,
            online_ms: r.get(8)?,
            status_ms: r.get(9)?,
            ip_address: r.get(10)?,
            online: false,
        })
    })?;
    let tombstones = all(
        conn,
        "SELECT product_key, device_name FROM tombstones",
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let last_message_id = conn
        .query_row("SELECT MAX(message_id) FROM invocations", [], |r| {
            r.get::<_, Option<i64>>(0)
        })?
        .and_then(|id| u64::try_from(id).ok());
    Ok(Snapshot {
        access_keys,
        products,
        devices,
        tombstones,
        last_message_id,
    })
}

pub(crate) fn insert_access_key(
    conn: &Connection,
    k: &AccessKey,
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO access_keys (id, secret, enabled, created_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET secret = excluded.secret, enabled = excluded.enabled",
        params![k.id, k.secret.expose(), k.enabled, now],
    )?;
    Ok(())
}

pub(crate) fn insert_product(conn: &Connection, p: &Product) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO products (product_key, product_name, product_secret, description, node_type, data_format,
             commodity_code, auth_type, protocol_type, net_type, category_key, validate_type, created_ms, draft_tsl)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            p.product_key,
            p.product_name,
            p.product_secret.expose(),
            p.description,
            p.node_type,
            p.data_format,
            p.commodity_code,
            p.auth_type,
            p.protocol_type,
            p.net_type,
            p.category_key,
            p.validate_type,
            p.created_ms,
            p.draft_tsl
        ],
    )?;
    for v in &p.versions {
        insert_version(conn, &p.product_key, v)?;
    }
    Ok(())
}

pub(crate) fn delete_product(
    conn: &Connection,
    product_key: &str,
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO tombstones (product_key, device_name, deleted_ms)
         SELECT product_key, device_name, ?2 FROM devices WHERE product_key = ?1",
        params![product_key, now],
    )?;
    conn.execute(
        "DELETE FROM products WHERE product_key = ?1",
        params![product_key],
    )?;
    Ok(())
}

pub(crate) fn set_draft(conn: &Connection, product_key: &str, tsl: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE products SET draft_tsl = ?2 WHERE product_key = ?1",
        params![product_key, tsl],
    )?;
    Ok(())
}

pub(crate) fn insert_version(
    conn: &Connection,
    product_key: &str,
    v: &ModelVersion,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO model_versions (product_key, version, description, tsl, created_ms, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![product_key, v.version, v.description, v.tsl, v.created_ms, v.seq],
    )?;
    for (block, tsl) in &v.modules {
        conn.execute(
            "INSERT INTO module_versions (product_key, version, block_id, tsl) VALUES (?1, ?2, ?3, ?4)",
            params![product_key, v.version, block, tsl],
        )?;
    }
    Ok(())
}

/// Creates or replaces a custom module's draft.
pub(crate) fn set_module_draft(
    conn: &Connection,
    product_key: &str,
    block_id: &str,
    name: &str,
    tsl: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO modules (product_key, block_id, block_name, draft_tsl) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(product_key, block_id) DO UPDATE SET block_name = excluded.block_name, draft_tsl = excluded.draft_tsl",
        params![product_key, block_id, name, tsl],
    )?;
    Ok(())
}

pub(crate) fn prune_versions(
    conn: &Connection,
    product_key: &str,
    keep: usize,
) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM model_versions WHERE product_key = ?1 AND seq NOT IN
            (SELECT seq FROM model_versions WHERE product_key = ?1 ORDER BY seq DESC LIMIT ?2)",
        params![product_key, keep as i64],
    )?;
    Ok(())
}

pub(crate) fn insert_device(conn: &Connection, d: &Device) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM tombstones WHERE product_key = ?1 AND device_name = ?2",
        params![d.product_key, d.device_name],
    )?;
    conn.execute(
        "INSERT INTO devices (iot_id, product_key, device_name, device_secret, nickname, enabled, created_ms,
             activated_ms, online_ms, status_ms, ip_address)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            d.iot_id,
            d.product_key,
            d.device_name,
            d.device_secret.expose(),
            d.nickname,
            d.enabled,
            d.created_ms,
            d.activated_ms,
            d.online_ms,
            d.status_ms,
            d.ip_address
        ],
    )?;
    Ok(())
}

pub(crate) fn delete_device(
    conn: &Connection,
    iot_id: &str,
    product_key: &str,
    device_name: &str,
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM devices WHERE iot_id = ?1", params![iot_id])?;
    conn.execute(
        "INSERT OR REPLACE INTO tombstones (product_key, device_name, deleted_ms) VALUES (?1, ?2, ?3)",
        params![product_key, device_name, now],
    )?;
    Ok(())
}

/// Enables or disables a device: `enabled` and the status time only.
pub(crate) fn set_enabled(
    conn: &Connection,
    iot_id: &str,
    enabled: bool,
    at: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE devices SET enabled = ?2, status_ms = ?3 WHERE iot_id = ?1")?
        .execute(params![iot_id, enabled, at])?;
    Ok(())
}

/// A presence change: the status time, and for a login the first
/// activation, the last online time and the address. Never `enabled`.
pub(crate) fn set_presence(
    conn: &Connection,
    iot_id: &str,
    online: bool,
    at: i64,
    ip_address: Option<&str>,
) -> rusqlite::Result<()> {
    if online {
        conn.prepare_cached(
            "UPDATE devices SET activated_ms = COALESCE(activated_ms, ?2), online_ms = ?2,
                 status_ms = ?2, ip_address = ?3 WHERE iot_id = ?1",
        )?
        .execute(params![iot_id, at, ip_address])?;
    } else {
        conn.prepare_cached("UPDATE devices SET status_ms = ?2 WHERE iot_id = ?1")?
            .execute(params![iot_id, at])?;
    }
    Ok(())
}

/// One recorded invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Invocation {
    pub(crate) message_id: String,
    pub(crate) iot_id: String,
    pub(crate) identifier: String,
    pub(crate) name: String,
    pub(crate) time_ms: i64,
    pub(crate) mode: &'static str,
    pub(crate) input: String,
    pub(crate) output: Option<String>,
    pub(crate) code: String,
}

/// A message id as the integer key it is stored under.
fn message_key(message_id: &str) -> rusqlite::Result<i64> {
    message_id
        .parse::<i64>()
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Stores a record unless one with its message id exists (returns whether
/// it was stored).
pub(crate) fn insert_invocation(conn: &Connection, i: &Invocation) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO invocations (message_id, iot_id, identifier, name, time_ms, mode, input, output, code)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    stmt.execute(params![
        message_key(&i.message_id)?,
        i.iot_id,
        i.identifier,
        i.name,
        i.time_ms,
        i.mode,
        i.input,
        i.output,
        i.code
    ])
    .map(|n| n > 0)
}

/// Sets the outcome of an invocation of device `iot_id`; false when that
/// device has no record with this message id (an id of another device's
/// call completes nothing). `None` matches any device: only outcomes
/// journaled before replies were bound to devices carry none.
pub(crate) fn complete_invocation(
    conn: &Connection,
    message_id: &str,
    iot_id: Option<&str>,
    output: Option<&str>,
    code: &str,
) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare_cached(
        "UPDATE invocations SET output = COALESCE(?2, output), code = ?3
         WHERE message_id = ?1 AND (?4 IS NULL OR iot_id = ?4)",
    )?;
    // An id that is no integer key (a device can send any digits) names
    // no record.
    let Ok(key) = message_key(message_id) else {
        return Ok(false);
    };
    Ok(stmt.execute(params![key, output, code, iot_id])? > 0)
}

fn row_to_invocation(r: &rusqlite::Row<'_>) -> rusqlite::Result<Invocation> {
    let mode: String = r.get(5)?;
    Ok(Invocation {
        message_id: r.get::<_, i64>(0)?.to_string(),
        iot_id: r.get(1)?,
        identifier: r.get(2)?,
        name: r.get(3)?,
        time_ms: r.get(4)?,
        mode: if mode == "sync" { "sync" } else { "async" },
        input: r.get(6)?,
        output: r.get(7)?,
        code: r.get(8)?,
    })
}

/// Invocations of one device in `[from, to]`, ordered, at most `limit`.
pub(crate) fn invocations(
    conn: &Connection,
    iot_id: &str,
    from: i64,
    to: i64,
    identifier: Option<&str>,
    ascending: bool,
    limit: usize,
) -> rusqlite::Result<Vec<Invocation>> {
    let order = if ascending { "ASC" } else { "DESC" };
    let sql = format!(
        "SELECT message_id, iot_id, identifier, name, time_ms, mode, input, output, code FROM invocations
         WHERE iot_id = ?1 AND time_ms BETWEEN ?2 AND ?3 AND (?4 IS NULL OR identifier = ?4)
         ORDER BY time_ms {order}, message_id {order} LIMIT ?5"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![iot_id, from, to, identifier, limit as i64],
        row_to_invocation,
    )?;
    rows.collect()
}

/// Runs one registry change's statements.
fn apply_change(conn: &Connection, change: &Change) -> rusqlite::Result<()> {
    match change {
        Change::PutAccessKey { key, at } => insert_access_key(conn, key, *at),
        Change::InsertProduct(p) => insert_product(conn, p),
        Change::DeleteProduct { product_key, at } => delete_product(conn, product_key, *at),
        Change::SetDraft {
            product_key,
            module,
            tsl,
        } => match module {
            Some((id, name)) => set_module_draft(conn, product_key, id, name, tsl),
            None => set_draft(conn, product_key, tsl),
        },
        Change::Publish {
            product_key,
            version,
            keep,
        } => {
            insert_version(conn, product_key, version)?;
            prune_versions(conn, product_key, *keep)
        }
        Change::InsertDevice(d) => insert_device(conn, d),
        Change::DeleteDevice {
            iot_id,
            product_key,
            device_name,
            at,
        } => delete_device(conn, iot_id, product_key, device_name, *at),
        Change::SetEnabled {
            iot_id,
            enabled,
            at,
        } => set_enabled(conn, iot_id, *enabled, *at),
        Change::Presence {
            iot_id,
            online,
            at,
            ip_address,
        } => set_presence(conn, iot_id, *online, *at, ip_address.as_deref()),
    }
}

#[async_trait::async_trait]
impl crate::repo::Registry for Store {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        self.read(load).await
    }

    fn apply(&self, change: Change, on_commit: OnCommit) -> Result<Pending<()>, StoreError> {
        let (tx, rx) = oneshot::channel::<Result<(), String>>();
        // The writer runs jobs in the order they are sent and calls their
        // completions in that order after the commit: the mirror follows
        // the store's commit order.
        let job: Job = Box::new(move |conn| match apply_change(conn, &change) {
            Ok(()) => (
                true,
                Box::new(move |committed: Result<(), String>| {
                    if committed.is_ok() {
                        on_commit(&change);
                    }
                    let _ = tx.send(committed);
                }),
            ),
            Err(e) => {
                let message = e.to_string();
                (
                    false,
                    Box::new(move |_| {
                        let _ = tx.send(Err(message));
                    }),
                )
            }
        });
        self.send_job(job)?;
        Ok(Pending(rx))
    }
}

#[async_trait::async_trait]
impl crate::repo::Records for Store {
    fn record(&self, invocation: Invocation) -> Result<Pending<()>, StoreError> {
        self.append(Entry::Insert(invocation), None)?;
        // Durable already: the handle resolves at once.
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(()));
        Ok(Pending(rx))
    }

    fn complete(
        &self,
        message_id: String,
        iot_id: String,
        output: Option<String>,
        code: String,
    ) -> Result<Pending<bool>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let entry = Entry::Complete {
            message_id,
            iot_id: Some(iot_id),
            output,
            code,
        };
        self.append(entry, Some(tx))?;
        Ok(Pending(rx))
    }

    async fn query(&self, q: crate::repo::RecordQuery) -> Result<Vec<Invocation>, StoreError> {
        // Everything journaled before this query is copied first, so a
        // caller reads every record it was answered about.
        self.write(|_| Ok(())).await?;
        self.read(move |conn| {
            invocations(
                conn,
                &q.iot_id,
                q.from,
                q.to,
                q.identifier.as_deref(),
                q.ascending,
                q.limit,
            )
        })
        .await
    }

    fn stats(&self) -> crate::repo::RecordStats {
        let retrying = self
            .copy_state
            .retrying
            .load(std::sync::atomic::Ordering::Relaxed);
        crate::repo::RecordStats {
            waiting: self.journal.waiting() + retrying,
            failed_copies: self
                .copy_state
                .failures
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn close(&self) {
        Store::close(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::{RecordQuery, Records};

    fn invocation(id: &str, code: &str) -> Invocation {
        Invocation {
            message_id: id.to_owned(),
            iot_id: "dev".to_owned(),
            identifier: "Calibrate".to_owned(),
            name: "Calibrate".to_owned(),
            time_ms: 1_000,
            mode: "sync",
            input: "{}".to_owned(),
            output: None,
            code: code.to_owned(),
        }
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("thingcall-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Under a steady stream of commits the WAL restarts instead of growing
    /// with every commit (without the writer's catch-up it only grows).
    #[tokio::test]
    async fn the_wal_restarts_under_steady_writes() {
        let dir = temp_dir("wal");
        let store = Store::open(&dir).unwrap();
        let started = std::time::Instant::now();
        let mut commits = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(1200) {
            // One write awaited at a time: every write is its own commit,
            // and every commit appends at least one page to the WAL.
            let row = invocation(&(commits + 1).to_string(), "200");
            store
                .write(move |conn| insert_invocation(conn, &row))
                .await
                .unwrap();
            commits += 1;
        }
        // The frames in the WAL now: those since its last restart.
        let probe = Connection::open(dir.join("thingcall.db")).unwrap();
        let frames: i64 = probe
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap();
        drop(probe);
        assert!(
            frames < i64::try_from(commits / 2).unwrap(),
            "the WAL holds {frames} frames after {commits} commits"
        );
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Records written under schema 2 (text message ids) survive the move
    /// to integer keys.
    #[tokio::test]
    async fn text_message_ids_migrate_to_integer_keys() {
        let dir = temp_dir("migrate");
        std::fs::create_dir_all(&dir).unwrap();
        {
            let conn = Connection::open(dir.join("thingcall.db")).unwrap();
            for sql in &MIGRATIONS[..2] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute(
                "INSERT INTO invocations VALUES ('1700000000000000001', 'dev', 'Calibrate', 'Calibrate', 5, 'sync', '{}', '{\"ok\":1}', '200')",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&dir).unwrap();
        let rows = store.query(device_query()).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].message_id, "1700000000000000001");
        assert_eq!(rows[0].output.as_deref(), Some("{\"ok\":1}"));
        let done = store
            .complete(
                "1700000000000000001".to_owned(),
                "dev".to_owned(),
                None,
                "500".to_owned(),
            )
            .unwrap();
        assert!(
            done.wait().await.unwrap(),
            "the migrated row is found by its id"
        );
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn device_query() -> RecordQuery {
        RecordQuery {
            iot_id: "dev".to_owned(),
            from: 0,
            to: 2_000,
            identifier: None,
            ascending: true,
            limit: 100,
        }
    }

    fn summary(rows: &[Invocation]) -> Vec<(String, String, Option<String>)> {
        rows.iter()
            .map(|r| (r.message_id.clone(), r.code.clone(), r.output.clone()))
            .collect()
    }

    /// A job that fails rolls back alone: the jobs and journal entries
    /// queued beside it, in the same group commit, still commit, and each
    /// caller hears its own result.
    #[tokio::test]
    async fn a_failed_job_does_not_sink_its_batch() {
        let dir = temp_dir("batch");
        let store = Store::open(&dir).unwrap();
        let first = store.record(invocation("1", "200")).unwrap();
        let good = store
            .submit(|conn| {
                conn.execute(
                    "UPDATE invocations SET name = 'renamed' WHERE message_id = 1",
                    [],
                )
            })
            .unwrap();
        let bad = store
            .submit(|conn| conn.execute("INSERT INTO no_such_table VALUES (1)", []))
            .unwrap();
        let second = store.record(invocation("2", "pending")).unwrap();
        let update = store
            .complete(
                "2".to_owned(),
                "dev".to_owned(),
                Some("{\"x\":1}".to_owned()),
                "201".to_owned(),
            )
            .unwrap();
        let missing = store
            .complete("3".to_owned(), "dev".to_owned(), None, "200".to_owned())
            .unwrap();
        // Record 1 exists, but it is not this device's.
        let foreign = store
            .complete("1".to_owned(), "other".to_owned(), None, "500".to_owned())
            .unwrap();
        let huge = store
            .complete(
                "99999999999999999999".to_owned(),
                "dev".to_owned(),
                None,
                "200".to_owned(),
            )
            .unwrap();
        assert!(first.wait().await.is_ok());
        assert_eq!(good.wait().await.unwrap(), 1);
        let e = bad.wait().await.unwrap_err();
        assert!(e.0.contains("no_such_table"), "{e}");
        assert!(second.wait().await.is_ok());
        assert!(update.wait().await.unwrap());
        assert!(!missing.wait().await.unwrap());
        assert!(
            !foreign.wait().await.unwrap(),
            "another device's outcome completes nothing"
        );
        assert!(
            !huge.wait().await.unwrap(),
            "an id beyond i64 names no record"
        );
        let rows = store.query(device_query()).await.unwrap();
        assert_eq!(
            summary(&rows),
            [
                ("1".into(), "200".into(), None),
                ("2".into(), "201".into(), Some("{\"x\":1}".into()))
            ]
        );
        assert_eq!(rows[0].name, "renamed");
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A data directory serves one process: a second store on it is refused
    /// while the first is open, and allowed once it is dropped.
    #[tokio::test]
    async fn one_store_per_data_directory() {
        let dir = temp_dir("lock");
        let first = Store::open(&dir).unwrap();
        let e = Store::open(&dir).err().unwrap();
        assert!(e.0.contains("another thingcall process"), "{e}");
        drop(first);
        let again = Store::open(&dir).unwrap();
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A record is readable as soon as it is acknowledged, and a clean
    /// close copies the journal and deletes it.
    #[tokio::test]
    async fn journaled_records_are_read_back_and_survive_a_close() {
        let dir = temp_dir("close");
        let store = Store::open(&dir).unwrap();
        for i in 1..=50 {
            store
                .record(invocation(&i.to_string(), "200"))
                .unwrap()
                .wait()
                .await
                .unwrap();
        }
        assert_eq!(store.query(device_query()).await.unwrap().len(), 50);
        assert_eq!(
            store.stats(),
            crate::repo::RecordStats::default(),
            "a query copies first: nothing waits, nothing failed"
        );
        store.record(invocation("51", "TIMEOUT")).unwrap();
        store.close();
        assert!(journal::segments(&dir).unwrap().is_empty());
        let store = Store::open(&dir).unwrap();
        let rows = store.query(device_query()).await.unwrap();
        assert_eq!(rows.len(), 51);
        assert_eq!(rows[50].code, "TIMEOUT");
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Segments left by a crash are replayed at start-up, including ones
    /// already partly copied (replay is idempotent) and one cut short by
    /// the crash; then they are deleted.
    #[tokio::test]
    async fn a_crashed_journal_is_replayed_once() {
        let dir = temp_dir("replay");
        // Record 1 was copied before the crash, its outcome was not.
        let store = Store::open(&dir).unwrap();
        store
            .write(|conn| insert_invocation(conn, &invocation("1", "TIMEOUT")))
            .await
            .unwrap();
        store.close();
        let late = Entry::Complete {
            message_id: "1".to_owned(),
            iot_id: Some("dev".to_owned()),
            output: Some("{\"code\":200}".to_owned()),
            code: "200 (late)".to_owned(),
        };
        let mut older = Vec::new();
        Entry::Insert(invocation("1", "TIMEOUT")).encode(&mut older);
        Entry::Insert(invocation("2", "pending")).encode(&mut older);
        let mut newer = Vec::new();
        late.encode(&mut newer);
        Entry::Insert(invocation("3", "200")).encode(&mut newer);
        let whole = newer.len();
        Entry::Insert(invocation("4", "200")).encode(&mut newer);
        newer.truncate(whole + 5); // the crash cut the last append
        std::fs::write(dir.join("journal-00000000000000000007.log"), &older).unwrap();
        std::fs::write(dir.join("journal-00000000000000000008.log"), &newer).unwrap();

        let store = Store::open(&dir).unwrap();
        assert_eq!(
            journal::segments(&dir).unwrap(),
            [9],
            "replayed segments are gone"
        );
        let rows = store.query(device_query()).await.unwrap();
        assert_eq!(
            summary(&rows),
            [
                (
                    "1".into(),
                    "200 (late)".into(),
                    Some("{\"code\":200}".into())
                ),
                ("2".into(), "pending".into(), None),
                ("3".into(), "200".into(), None),
            ]
        );
        store.close();
        // Opening again replays nothing and changes nothing.
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.query(device_query()).await.unwrap().len(), 3);
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
