//! The writer task: every write of the PostgreSQL store goes through one
//! connection, in the order it was queued, grouped into transactions (a
//! group commit): registry changes one by one inside savepoints (a change
//! that fails is rolled back alone), records and outcomes in one statement
//! each. After the commit each waiter is told, in queue order, and each
//! committed change's `OnCommit` runs, in that order.
//!
//! The connection is the writer's own: when it breaks (the database
//! restarts, a backend is terminated) the batch in hand fails as
//! `Unavailable`, except presence changes, which nobody waits for and
//! which are kept and written once the database is back; the writer
//! reconnects with a growing delay (100 ms to 1 s).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::mpsc;
use tokio_postgres::{Client, Statement};

use super::Connector;
use super::error::from_pg;
use super::queries;
use crate::store::{Change, Completion, Invocation, LogPosition, OnCommit, Resolver, StoreError};

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 1024;

/// One queued write.
pub(super) enum Op {
    Change {
        change: Change,
        on_commit: OnCommit,
        done: Resolver<()>,
    },
    Insert {
        invocation: Invocation,
        done: Resolver<()>,
    },
    Complete {
        completion: Completion,
        done: Resolver<bool>,
    },
}

impl Op {
    /// Presence changes are kept across an outage; every other write has a
    /// caller waiting, who is told at once.
    fn kept_while_unavailable(&self) -> bool {
        matches!(
            self,
            Op::Change {
                change: Change::Presence { .. },
                ..
            }
        )
    }

    fn fail(self, e: StoreError) {
        match self {
            Op::Change { done, .. } | Op::Insert { done, .. } => done.resolve(Err(e)),
            Op::Complete { done, .. } => done.resolve(Err(e)),
        }
    }
}

/// What the writer reports for `/metrics`.
#[derive(Debug, Default)]
pub(super) struct WriterState {
    /// Queued and not yet committed (or failed).
    pub(super) waiting: AtomicUsize,
    /// Transactions that failed to commit.
    pub(super) failures: AtomicU64,
}

/// Opens one connection (with the URL's TLS) and runs its connection task.
pub(super) async fn connect(connector: &Connector) -> Result<Client, tokio_postgres::Error> {
    connector.connect().await
}

/// Batches of records sent and not yet answered, at most: their round
/// trips overlap on the one connection (PostgreSQL answers them in order).
const MAX_IN_FLIGHT: usize = 2;

/// A batch of records and outcomes on its way, with how it ended.
type InFlight = Pin<Box<dyn Future<Output = (Vec<Op>, Result<Vec<bool>, StoreError>)> + Send>>;

/// Runs the writer until every sender is gone and the queue is drained.
pub(super) async fn run(
    connector: Connector,
    client: Option<Conn>,
    mut queue: mpsc::UnboundedReceiver<Op>,
    state: Arc<WriterState>,
) {
    let mut conn: Option<Arc<Conn>> = client.map(Arc::new);
    let mut kept: VecDeque<Op> = VecDeque::new();
    let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
    let mut delay = Duration::from_millis(100);
    let mut closing = false;
    loop {
        // Answers of batches in flight come first, in order.
        let next = if in_flight.is_empty() {
            None
        } else if closing || in_flight.len() >= MAX_IN_FLIGHT {
            in_flight.next().await
        } else {
            tokio::select! {
                biased;
                done = in_flight.next() => done,
                op = queue.recv() => {
                    match op {
                        Some(op) => kept.push_back(op),
                        None => closing = true,
                    }
                    None
                }
            }
        };
        if let Some((ops, outcome)) = next {
            match outcome {
                Ok(found) => {
                    state.waiting.fetch_sub(ops.len(), Ordering::Relaxed);
                    finish(ops, found);
                }
                Err(error) => {
                    state.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %error, "a PostgreSQL write failed");
                    let failed = settle_unavailable(ops, &mut kept, &error);
                    state.waiting.fetch_sub(failed, Ordering::Relaxed);
                }
            }
            continue;
        }
        // Kept presence changes (and an op taken above) go first.
        let mut batch: Vec<Op> = kept.drain(..).collect();
        if batch.is_empty() {
            if closing {
                if in_flight.is_empty() {
                    break;
                }
                continue;
            }
            match queue.recv().await {
                Some(op) => batch.push(op),
                None => {
                    closing = true;
                    continue;
                }
            }
        }
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let has_changes = batch.iter().any(|op| matches!(op, Op::Change { .. }));
        // A transaction needs the connection alone: let the batches in
        // flight land first.
        if has_changes {
            while let Some((ops, outcome)) = in_flight.next().await {
                match outcome {
                    Ok(found) => {
                        state.waiting.fetch_sub(ops.len(), Ordering::Relaxed);
                        finish(ops, found);
                    }
                    Err(error) => {
                        state.failures.fetch_add(1, Ordering::Relaxed);
                        let failed = settle_unavailable(ops, &mut kept, &error);
                        state.waiting.fetch_sub(failed, Ordering::Relaxed);
                    }
                }
            }
        }
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            conn = match Conn::open(&connector).await {
                Ok(c) => {
                    tracing::info!("the PostgreSQL writer is connected");
                    delay = Duration::from_millis(100);
                    Some(Arc::new(c))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the PostgreSQL writer cannot connect");
                    None
                }
            };
        }
        let Some(c) = conn.as_mut() else {
            let error = StoreError::unavailable("PostgreSQL is unreachable");
            let failed = settle_unavailable(batch, &mut kept, &error);
            state.waiting.fetch_sub(failed, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
            continue;
        };
        if !has_changes {
            let c = Arc::clone(c);
            in_flight.push_back(Box::pin(async move {
                let outcome = commit_records(&c, &batch).await;
                (batch, outcome)
            }));
            continue;
        }
        let Some(exclusive) = Arc::get_mut(c) else {
            // Nothing else holds the connection once the batches in flight
            // have landed; this cannot happen.
            let error = StoreError::internal("the writer's connection is shared");
            let failed = settle_unavailable(batch, &mut kept, &error);
            state.waiting.fetch_sub(failed, Ordering::Relaxed);
            continue;
        };
        let count = batch.len();
        match commit_changes(exclusive, batch).await {
            Ok(()) => {
                state.waiting.fetch_sub(count, Ordering::Relaxed);
            }
            Err((ops, error)) => {
                state.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %error, "a PostgreSQL commit failed");
                let failed = settle_unavailable(ops, &mut kept, &error);
                state.waiting.fetch_sub(failed, Ordering::Relaxed);
                if !kept.is_empty() {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
    for op in kept {
        op.fail(StoreError::unavailable(
            "the store closed before PostgreSQL came back",
        ));
    }
}

/// Fails a batch that could not be written: presence changes go back to
/// the head of the queue while the database is unavailable, every other
/// waiter is told. Returns how many were told.
fn settle_unavailable(ops: Vec<Op>, kept: &mut VecDeque<Op>, error: &StoreError) -> usize {
    let mut failed = 0usize;
    for op in ops {
        if op.kept_while_unavailable() && error.is_unavailable() {
            kept.push_back(op);
        } else {
            failed += 1;
            op.fail(error.clone());
        }
    }
    failed
}

/// The writer's connection with its prepared statements.
pub(super) struct Conn {
    client: Client,
    insert: Statement,
    complete: Statement,
}

impl Conn {
    /// Opens the writer's connection: records commit without waiting for
    /// the WAL flush (see the module documentation), registry changes
    /// wait for it.
    pub(super) async fn open(connector: &Connector) -> Result<Conn, tokio_postgres::Error> {
        let client = connect(connector).await?;
        client
            .batch_execute("SET synchronous_commit TO OFF")
            .await?;
        let insert = client.prepare(queries::INSERT_INVOCATIONS).await?;
        let complete = client.prepare(queries::COMPLETE_INVOCATIONS).await?;
        Ok(Conn {
            client,
            insert,
            complete,
        })
    }

    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// The outcomes of a batch, in queue order, in runs of distinct message
/// ids (two outcomes of one call must apply in their order).
fn completion_runs(batch: &[Op]) -> Vec<Vec<&Completion>> {
    let mut runs: Vec<Vec<&Completion>> = vec![Vec::new()];
    let mut ids: HashSet<u64> = HashSet::new();
    for op in batch {
        let Op::Complete { completion, .. } = op else {
            continue;
        };
        if !ids.insert(completion.message_id.get()) {
            runs.push(Vec::new());
            ids.clear();
            ids.insert(completion.message_id.get());
        }
        if let Some(run) = runs.last_mut() {
            run.push(completion);
        }
    }
    runs.retain(|r| !r.is_empty());
    runs
}

/// Whether each outcome of a run found its device's record.
fn matched(run: &[&Completion], found: &[i64]) -> Vec<bool> {
    let found: HashSet<i64> = found.iter().copied().collect();
    run.iter()
        .map(|c| i64::try_from(c.message_id.get()).is_ok_and(|k| found.contains(&k)))
        .collect()
}

/// Writes a batch of records and outcomes only, in one pipelined round
/// trip: one statement for the records, one per run of outcomes, each its
/// own transaction, sent in order on the connection (so an outcome always
/// follows its record). Returns, per outcome in queue order, whether it
/// found its device's record.
async fn commit_records(conn: &Conn, batch: &[Op]) -> Result<Vec<bool>, StoreError> {
    let inserts = records_of(batch);
    let insert_params = queries::InsertParams::new(&inserts);
    let runs = completion_runs(batch);
    let run_params: Vec<queries::CompleteParams<'_>> = runs
        .iter()
        .map(|r| queries::CompleteParams::new(r))
        .collect();
    let insert = queries::insert_invocations(&conn.client, &conn.insert, &insert_params);
    let completes = futures_util::future::try_join_all(
        run_params
            .iter()
            .map(|p| queries::complete_invocations(&conn.client, &conn.complete, p)),
    );
    let ((), ids) = futures_util::future::try_join(insert, completes)
        .await
        .map_err(from_pg)?;
    let mut found = Vec::new();
    for (run, ids) in runs.iter().zip(&ids) {
        found.extend(matched(run, ids));
    }
    Ok(found)
}

/// Writes a batch with registry changes in one transaction, a savepoint
/// per change (a change that fails is rolled back alone), then tells
/// everyone. On a failure of the transaction as a whole the operations
/// come back with the error.
async fn commit_changes(conn: &mut Conn, batch: Vec<Op>) -> Result<(), (Vec<Op>, StoreError)> {
    let mut results: Vec<Result<Option<LogPosition>, StoreError>> = Vec::with_capacity(batch.len());
    let mut found: Vec<bool> = Vec::new();
    let outcome: Result<(), StoreError> = async {
        let inserts = records_of(&batch);
        let insert_params = queries::InsertParams::new(&inserts);
        let runs = completion_runs(&batch);
        let mut tx = conn.client.transaction().await.map_err(from_pg)?;
        tx.batch_execute("SET LOCAL synchronous_commit TO ON")
            .await
            .map_err(from_pg)?;
        for op in &batch {
            let Op::Change { change, .. } = op else {
                results.push(Ok(None));
                continue;
            };
            let sp = tx.savepoint("change").await.map_err(from_pg)?;
            match queries::apply_change(&sp, change).await {
                Ok(position) => {
                    sp.commit().await.map_err(from_pg)?;
                    results.push(Ok(position));
                }
                Err(e) => {
                    let error = from_pg(e);
                    if error.is_unavailable() {
                        return Err(error);
                    }
                    sp.rollback().await.map_err(from_pg)?;
                    results.push(Err(error));
                }
            }
        }
        queries::insert_invocations(&tx, &conn.insert, &insert_params)
            .await
            .map_err(from_pg)?;
        for run in &runs {
            let params = queries::CompleteParams::new(run);
            let ids = queries::complete_invocations(&tx, &conn.complete, &params)
                .await
                .map_err(from_pg)?;
            found.extend(matched(run, &ids));
        }
        // Nodes that listen re-read what changed once this commits.
        let registry_changed = batch.iter().zip(&results).any(|(op, result)| {
            result.is_ok()
                && matches!(op, Op::Change { change, .. } if !matches!(change, Change::Presence { .. }))
        });
        if registry_changed {
            tx.batch_execute("NOTIFY thingcall_registry")
                .await
                .map_err(from_pg)?;
        }
        tx.commit().await.map_err(from_pg)
    }
    .await;
    if let Err(e) = outcome {
        return Err((batch, e));
    }
    tell(batch, results, found);
    Ok(())
}

/// The records a batch stores.
fn records_of(batch: &[Op]) -> Vec<&Invocation> {
    batch
        .iter()
        .filter_map(|op| match op {
            Op::Insert { invocation, .. } => Some(invocation),
            _ => None,
        })
        .collect()
}

/// Tells the waiters of a committed batch, in queue order: each change its
/// own result (after its callback, when it committed), each outcome whether
/// it found its record.
fn tell(batch: Vec<Op>, results: Vec<Result<Option<LogPosition>, StoreError>>, found: Vec<bool>) {
    let mut found = found.into_iter();
    for (op, result) in batch.into_iter().zip(results) {
        match op {
            Op::Change {
                change,
                on_commit,
                done,
            } => match result {
                Ok(position) => {
                    on_commit(&change, position);
                    done.resolve(Ok(()));
                }
                Err(e) => done.resolve(Err(e)),
            },
            Op::Insert { done, .. } => done.resolve(Ok(())),
            Op::Complete { done, .. } => done.resolve(Ok(found.next().unwrap_or(false))),
        }
    }
}

/// Tells the waiters of a committed batch of records and outcomes.
fn finish(batch: Vec<Op>, found: Vec<bool>) {
    let results = batch.iter().map(|_| Ok(None)).collect();
    tell(batch, results, found);
}
