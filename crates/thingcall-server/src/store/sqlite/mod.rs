//! The embedded SQLite store, the default.
//!
//! One file in the data directory, in WAL mode, with versioned migrations
//! (`schema.rs`). Writes go through one writer thread (`writer.rs`) that
//! groups whatever is waiting into one transaction and answers each caller
//! only after the commit: a response never acknowledges something a
//! `kill -9` could lose. Invocation records, the one write on the hot
//! path, are made durable by an append to the [`journal`] instead, and the
//! writer copies them in large transactions; start-up replays what a crash
//! left (`replay.rs`). Reads use a separate connection (WAL lets them run
//! beside the writer). `queries.rs` has the SQL.
//!
//! Secrets are sealed with the store's key (`store/sealed.rs`) before a
//! change is queued and opened when the registry is read; the key is
//! checked at open (`schema::seal`). The data directory is kept to its
//! owner (0700) and so is every file of the store (0600): the database and
//! its WAL (SQLite gives them the database file's mode), the lock, the
//! journal's segments.

mod queries;
mod replay;
mod schema;
mod subscriptions;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;

use self::writer::{CopyState, Job, Msg, WAL_SIZE_LIMIT, run_checkpoints, run_writer};
use crate::store::journal::{Entry, Journal, Queued};
use crate::store::sealed::{SecretsKey, SecretsKeySource};
use crate::store::{
    Change, Completion, Invocation, OnCommit, Pending, RecordQuery, RecordStats, Records, Registry,
    Resolver, Snapshot, StoreError, StoreErrorKind,
};
use crate::sync::lock;

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
    /// Seals secrets before they are written, opens them when read.
    key: SecretsKey,
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

impl Store {
    /// Opens (creating if needed) `thingcall.db` in `dir` and migrates it,
    /// with the key in `dir/secrets.key` (made on first start).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, &SecretsKeySource::DataDir)
    }

    /// Opens (creating if needed) `thingcall.db` in `dir` and migrates it;
    /// its secrets are sealed with the key `key` names.
    pub(crate) fn open_with(dir: &Path, key: &SecretsKeySource) -> Result<Store, StoreError> {
        crate::data_dir::prepare(dir)?;
        let lock_path = dir.join("thingcall.lock");
        let lock = crate::data_dir::open_private(&lock_path).map_err(|e| {
            StoreError::unavailable(format!("cannot open {}: {e}", lock_path.display()))
        })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::unavailable(format!(
                    "another thingcall process is using {}",
                    dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::unavailable(format!(
                    "cannot lock {}: {e}",
                    lock_path.display()
                )));
            }
        }
        let path = dir.join("thingcall.db");
        // SQLite gives the WAL and the shared-memory file the database
        // file's mode: made 0600 here, they are too. Files of an earlier
        // release are tightened.
        let private = |p: &Path| {
            crate::data_dir::private_file(p).map_err(|e| {
                StoreError::unavailable(format!("cannot protect {}: {e}", p.display()))
            })
        };
        if !path.exists() {
            drop(crate::data_dir::open_private(&path).map_err(|e| {
                StoreError::unavailable(format!("cannot create {}: {e}", path.display()))
            })?);
        }
        for file in ["thingcall.db", "thingcall.db-wal", "thingcall.db-shm"] {
            private(&dir.join(file))?;
        }
        let mut writer = open(&path)?;
        schema::migrate(&mut writer)?;
        let key = schema::seal(&mut writer, key, dir)?;
        // Checkpoints copy the WAL into the database file and sync it; they
        // run on their own thread so no commit on the request path waits.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        // Room for every statement the writer runs, so none is re-parsed.
        writer.set_prepared_statement_cache_capacity(64);
        let reader = open(&path)?;
        let checkpointer = open(&path)?;
        writer.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        let replayed = replay::replay(&writer, dir)?;
        let journal = Arc::new(Journal::create(dir, replayed.last().copied()).map_err(|e| {
            StoreError::unavailable(format!(
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
            .map_err(|e| StoreError::internal(e.to_string()))?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let checkpoint = std::thread::Builder::new()
            .name("thingcall-checkpoint".into())
            .spawn(move || run_checkpoints(checkpointer, stop_flag, catch_up))
            .map_err(|e| StoreError::internal(e.to_string()))?;
        Ok(Store {
            writer: Mutex::new(Some(tx)),
            journal,
            lock: Mutex::new(Some(lock)),
            copy_state,
            thread: Mutex::new(Some(thread)),
            reader: Arc::new(Mutex::new(reader)),
            checkpoint: Mutex::new(Some((stop, checkpoint))),
            key,
        })
    }

    /// The key the store's secrets are sealed with.
    pub(crate) fn key(&self) -> &SecretsKey {
        &self.key
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
        let (resolver, pending) = Pending::new();
        let job: Job = Box::new(move |conn| match f(conn) {
            Ok(v) => (
                true,
                Box::new(move |committed: Result<(), StoreError>| {
                    resolver.resolve(committed.map(|()| v));
                }),
            ),
            Err(e) => {
                let error = StoreError::from(e);
                (false, Box::new(move |_| resolver.resolve(Err(error))))
            }
        });
        self.send_job(job)?;
        Ok(pending)
    }

    /// Hands a job to the writer thread.
    fn send_job(&self, job: Job) -> Result<(), StoreError> {
        let sender = lock(&self.writer)
            .clone()
            .ok_or_else(|| StoreError::unavailable("the store is closed"))?;
        sender
            .send(Msg::Job(job))
            .map_err(|_| StoreError::unavailable("the store writer stopped"))
    }

    /// Appends an invocation change to the journal: durable when this
    /// returns `Ok`; copied into SQLite by the writer shortly after.
    fn append(&self, entry: Entry, done: Option<Resolver<bool>>) -> Result<(), StoreError> {
        // The writer's handle stays locked across the append, so nothing is
        // appended once `close` has taken it (the writer's last copy).
        let writer = lock(&self.writer);
        let sender = writer
            .as_ref()
            .ok_or_else(|| StoreError::unavailable("the store is closed"))?;
        let nudge = self
            .journal
            .append(Queued { entry, done })
            .map_err(|e| StoreError::unavailable(format!("cannot append to the journal: {e}")))?;
        if nudge {
            sender
                .send(Msg::Copy)
                .map_err(|_| StoreError::unavailable("the store writer stopped"))?;
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
            .map_err(|e| StoreError::internal(e.to_string()))?
    }

    /// Records in message-id order after `after` (for copying the store).
    pub(crate) async fn records_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Invocation>, StoreError> {
        self.write(|_| Ok(())).await?;
        self.read(move |conn| queries::invocations_after(conn, after, limit))
            .await
    }

    /// How many records the store holds.
    pub(crate) async fn count_records(&self) -> Result<u64, StoreError> {
        self.write(|_| Ok(())).await?;
        self.read(|conn| {
            conn.query_row("SELECT count(*) FROM invocations", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| u64::try_from(n).unwrap_or(0))
        })
        .await
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

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        use rusqlite::ffi::ErrorCode as C;
        let kind = match &e {
            rusqlite::Error::SqliteFailure(f, _) => match (f.code, f.extended_code) {
                (C::ConstraintViolation, rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => {
                    StoreErrorKind::NotFound
                }
                (C::ConstraintViolation, _) => StoreErrorKind::Conflict,
                (
                    C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::DiskFull
                    | C::CannotOpen
                    | C::ReadOnly
                    | C::SystemIoFailure
                    | C::OutOfMemory,
                    _,
                ) => StoreErrorKind::Unavailable,
                (C::DatabaseCorrupt | C::NotADatabase, _) => StoreErrorKind::Corrupt,
                _ => StoreErrorKind::Internal,
            },
            rusqlite::Error::FromSqlConversionFailure(_, _, inner) => {
                match inner.downcast_ref::<StoreError>() {
                    Some(store) => return store.clone(),
                    None => StoreErrorKind::Corrupt,
                }
            }
            _ => StoreErrorKind::Internal,
        };
        StoreError::new(kind, e.to_string())
    }
}

#[async_trait::async_trait]
impl Registry for Store {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        let key = self.key.clone();
        let reader = Arc::clone(&self.reader);
        // Opening every secret is work in proportion to the registry: it
        // runs on the blocking thread with the read.
        tokio::task::spawn_blocking(move || {
            let mut snapshot = queries::load(&lock(&reader))?;
            key.open_snapshot(&mut snapshot)?;
            Ok(snapshot)
        })
        .await
        .map_err(|e| StoreError::internal(e.to_string()))?
    }

    fn apply(&self, change: Change, on_commit: OnCommit) -> Result<Pending<()>, StoreError> {
        // The store writes the sealed change; the mirror gets the change
        // as it was.
        let (change, original) = self.key.seal_change(change);
        let on_commit: OnCommit = match original {
            Some(original) => Box::new(move |_, position| on_commit(&original, position)),
            None => on_commit,
        };
        let (resolver, pending) = Pending::new();
        // The writer runs jobs in the order they are sent and calls their
        // completions in that order after the commit: the mirror follows
        // the store's commit order.
        let job: Job = Box::new(move |conn| match queries::apply_change(conn, &change) {
            Ok(()) => (
                true,
                Box::new(move |committed: Result<(), StoreError>| {
                    if committed.is_ok() {
                        on_commit(&change, None);
                    }
                    resolver.resolve(committed);
                }),
            ),
            Err(e) => {
                let error = StoreError::from(e);
                (false, Box::new(move |_| resolver.resolve(Err(error))))
            }
        });
        self.send_job(job)?;
        Ok(pending)
    }
}

#[async_trait::async_trait]
impl Records for Store {
    fn record(&self, invocation: Invocation) -> Result<Pending<()>, StoreError> {
        self.append(Entry::Insert(invocation), None)?;
        // Durable already: the handle resolves at once.
        Ok(Pending::ready(Ok(())))
    }

    fn complete(&self, completion: Completion) -> Result<Pending<bool>, StoreError> {
        let (resolver, pending) = Pending::new();
        self.append(Entry::Complete(completion), Some(resolver))?;
        Ok(pending)
    }

    async fn query(&self, q: RecordQuery) -> Result<Vec<Invocation>, StoreError> {
        // Everything journaled before this query is copied first, so a
        // caller reads every record it was answered about.
        self.write(|_| Ok(())).await?;
        self.read(move |conn| {
            queries::invocations(
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

    fn stats(&self) -> RecordStats {
        let retrying = self
            .copy_state
            .retrying
            .load(std::sync::atomic::Ordering::Relaxed);
        RecordStats {
            waiting: self.journal.waiting() + retrying,
            failed_copies: self
                .copy_state
                .failures
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    async fn close(&self) {
        Store::close(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::journal;
    use crate::store::{CallMode, Outcome};
    use thingcall_core::MessageId;

    fn invocation(id: u64, outcome: Outcome) -> Invocation {
        Invocation {
            message_id: MessageId::from_u64(id),
            iot_id: "dev".to_owned(),
            identifier: "Calibrate".to_owned(),
            name: "Calibrate".to_owned(),
            time_ms: 1_000,
            mode: CallMode::Sync,
            input: "{}".to_owned(),
            output: None,
            outcome,
        }
    }

    fn completion(id: u64, device: &str, output: Option<&str>, outcome: Outcome) -> Completion {
        Completion {
            message_id: MessageId::from_u64(id),
            iot_id: Some(device.to_owned()),
            output: output.map(str::to_owned),
            outcome,
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
            let row = invocation(commits + 1, Outcome::Replied(200));
            store
                .write(move |conn| queries::insert_invocation(conn, &row))
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

    /// A store of an earlier release (schema 2, counted in user_version,
    /// text message ids, the old stored form of an undelivered call) is
    /// brought up to date: its history is recorded, the rest migrated.
    #[tokio::test]
    async fn an_earlier_schema_is_migrated() {
        let dir = temp_dir("migrate");
        std::fs::create_dir_all(&dir).unwrap();
        {
            let conn = Connection::open(dir.join("thingcall.db")).unwrap();
            for sql in [
                include_str!("migrations/V1__initial.sql"),
                include_str!("migrations/V2__custom_modules.sql"),
            ] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute(
                "INSERT INTO invocations VALUES ('1700000000000000001', 'dev', 'Calibrate', 'Calibrate', 5, 'sync', '{}', '{\"ok\":1}', '200')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO invocations VALUES ('1700000000000000002', 'dev', 'Reboot', 'Reboot', 6, 'async', '{}', NULL, '9201')",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&dir).unwrap();
        let rows = store.query(device_query()).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].message_id.get(), 1_700_000_000_000_000_001);
        assert_eq!(rows[0].output.as_deref(), Some("{\"ok\":1}"));
        assert_eq!(rows[0].outcome, Outcome::Replied(200));
        assert_eq!(rows[1].outcome, Outcome::NotDelivered);
        let done = store
            .complete(completion(
                1_700_000_000_000_000_001,
                "dev",
                None,
                Outcome::Replied(500),
            ))
            .unwrap();
        assert!(
            done.wait().await.unwrap(),
            "the migrated row is found by its id"
        );
        store.close();
        // Opening again migrates nothing more.
        let store = Store::open(&dir).unwrap();
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store migrated by a newer thingcall is refused, not damaged.
    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = temp_dir("newer");
        Store::open(&dir).unwrap().close();
        {
            let conn = Connection::open(dir.join("thingcall.db")).unwrap();
            conn.execute(
                "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (99, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
                [],
            )
            .unwrap();
        }
        let e = Store::open(&dir).err().unwrap();
        assert_eq!(e.kind(), StoreErrorKind::Corrupt, "{e}");
        assert!(e.message().contains("newer thingcall"), "{e}");
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

    fn summary(rows: &[Invocation]) -> Vec<(u64, Outcome, Option<String>)> {
        rows.iter()
            .map(|r| (r.message_id.get(), r.outcome, r.output.clone()))
            .collect()
    }

    /// A job that fails rolls back alone: the jobs and journal entries
    /// queued beside it, in the same group commit, still commit, and each
    /// caller hears its own result.
    #[tokio::test]
    async fn a_failed_job_does_not_sink_its_batch() {
        let dir = temp_dir("batch");
        let store = Store::open(&dir).unwrap();
        let first = store.record(invocation(1, Outcome::Replied(200))).unwrap();
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
        let second = store.record(invocation(2, Outcome::Pending)).unwrap();
        let update = store
            .complete(completion(
                2,
                "dev",
                Some("{\"x\":1}"),
                Outcome::Replied(201),
            ))
            .unwrap();
        let missing = store
            .complete(completion(3, "dev", None, Outcome::Replied(200)))
            .unwrap();
        // Record 1 exists, but it is not this device's.
        let foreign = store
            .complete(completion(1, "other", None, Outcome::Replied(500)))
            .unwrap();
        let huge = store
            .complete(completion(u64::MAX, "dev", None, Outcome::Replied(200)))
            .unwrap();
        assert!(first.wait().await.is_ok());
        assert_eq!(good.wait().await.unwrap(), 1);
        let e = bad.wait().await.unwrap_err();
        assert!(e.message().contains("no_such_table"), "{e}");
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
                (1, Outcome::Replied(200), None),
                (2, Outcome::Replied(201), Some("{\"x\":1}".into()))
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
        assert!(e.message().contains("another thingcall process"), "{e}");
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
                .record(invocation(i, Outcome::Replied(200)))
                .unwrap()
                .wait()
                .await
                .unwrap();
        }
        assert_eq!(store.query(device_query()).await.unwrap().len(), 50);
        assert_eq!(
            store.stats(),
            RecordStats::default(),
            "a query copies first: nothing waits, nothing failed"
        );
        store.record(invocation(51, Outcome::Timeout)).unwrap();
        store.close();
        assert!(journal::segments(&dir).unwrap().is_empty());
        let store = Store::open(&dir).unwrap();
        let rows = store.query(device_query()).await.unwrap();
        assert_eq!(rows.len(), 51);
        assert_eq!(rows[50].outcome, Outcome::Timeout);
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
            .write(|conn| queries::insert_invocation(conn, &invocation(1, Outcome::Timeout)))
            .await
            .unwrap();
        store.close();
        let late = Entry::Complete(completion(
            1,
            "dev",
            Some("{\"code\":200}"),
            Outcome::Late(200),
        ));
        let mut older = Vec::new();
        Entry::Insert(invocation(1, Outcome::Timeout)).encode(&mut older);
        Entry::Insert(invocation(2, Outcome::Pending)).encode(&mut older);
        let mut newer = Vec::new();
        late.encode(&mut newer);
        Entry::Insert(invocation(3, Outcome::Replied(200))).encode(&mut newer);
        let whole = newer.len();
        Entry::Insert(invocation(4, Outcome::Replied(200))).encode(&mut newer);
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
                (1, Outcome::Late(200), Some("{\"code\":200}".into())),
                (2, Outcome::Pending, None),
                (3, Outcome::Replied(200), None),
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
