//! The writer thread: every SQLite write goes through it, grouped into
//! transactions (group commit), with the journal's entries copied in the
//! same transactions; and the checkpoint thread beside it.

use std::sync::Arc;

use rusqlite::Connection;

use super::queries::{complete_invocation, insert_invocation};
use crate::store::StoreError;
use crate::store::journal::{Entry, Journal, Queued};

/// What a job does once its transaction is over: told whether it committed.
pub(super) type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write: runs on the writer's connection inside the group transaction
/// and says whether it succeeded (a failed job is rolled back alone) and
/// what to do after the commit.
pub(super) type Job = Box<dyn FnOnce(&Connection) -> (bool, Done) + Send>;

/// What the writer thread is sent.
pub(super) enum Msg {
    /// A write to run and commit.
    Job(Job),
    /// The journal has entries to copy (sent when its queue stops being
    /// empty, not per entry).
    Copy,
}

/// What the writer reports about its copies of the journal.
#[derive(Debug, Default)]
pub(super) struct CopyState {
    pub(super) retrying: std::sync::atomic::AtomicUsize,
    pub(super) failures: std::sync::atomic::AtomicU64,
}

/// How long the writer lets journal entries gather before copying them:
/// nobody waits on the copy, and a bigger transaction costs less per row.
const COPY_DELAY: std::time::Duration = std::time::Duration::from_millis(5);

/// Most jobs grouped into one transaction.
const MAX_BATCH: usize = 512;

/// How often the checkpoint thread copies the WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The WAL file is cut back to this size when it restarts after a burst.
pub(super) const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

pub(super) fn run_checkpoints(
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
pub(super) fn run_writer(
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
            found.push(copy_entry(conn, &q.entry, false).map_err(StoreError::from));
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
        Ok(()) => exec(conn, "COMMIT").map_err(StoreError::from),
        Err(e) => Err(StoreError::from(e)),
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
            done.resolve(result);
        }
    }
    true
}

/// Applies one journal entry; for an outcome, whether its record exists.
/// `replay` is set when start-up re-applies the segments of a crash, where
/// finding a record already stored is expected.
pub(super) fn copy_entry(conn: &Connection, entry: &Entry, replay: bool) -> rusqlite::Result<bool> {
    match entry {
        Entry::Insert(i) => {
            let inserted = insert_invocation(conn, i)?;
            if !inserted && !replay {
                tracing::warn!(message_id = %i.message_id, "a record with this message id exists; the new one was not stored");
            }
            Ok(inserted)
        }
        Entry::Complete(c) => complete_invocation(conn, c),
    }
}
