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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{Client, Config, NoTls};

use super::error::from_pg;
use super::queries;
use crate::store::{Change, Completion, Invocation, OnCommit, Resolver, StoreError};

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

/// Opens one connection and runs its connection task.
pub(super) async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Runs the writer until every sender is gone and the queue is drained.
pub(super) async fn run(
    config: Config,
    mut client: Option<Client>,
    mut queue: mpsc::UnboundedReceiver<Op>,
    state: Arc<WriterState>,
) {
    let mut kept: VecDeque<Op> = VecDeque::new();
    let mut delay = Duration::from_millis(100);
    loop {
        // Kept presence changes go first, in their order.
        let mut batch: Vec<Op> = kept.drain(..).collect();
        if batch.is_empty() {
            match queue.recv().await {
                Some(op) => batch.push(op),
                None => break,
            }
        }
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let connected = match client.take() {
            Some(c) if !c.is_closed() => Some(c),
            _ => match connect(&config).await {
                Ok(c) => {
                    tracing::info!("the PostgreSQL writer is connected");
                    delay = Duration::from_millis(100);
                    Some(c)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the PostgreSQL writer cannot connect");
                    None
                }
            },
        };
        let Some(mut c) = connected else {
            let error = StoreError::unavailable("PostgreSQL is unreachable");
            let failed = settle_unavailable(batch, &mut kept, &error);
            state.waiting.fetch_sub(failed, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
            continue;
        };
        let count = batch.len();
        match commit(&mut c, batch).await {
            Ok(()) => {
                state.waiting.fetch_sub(count, Ordering::Relaxed);
                client = Some(c);
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
                client = (!c.is_closed()).then_some(c);
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

/// Writes a batch in one transaction and tells everyone after the commit.
/// On a failure of the transaction as a whole, the operations come back
/// with the error (nothing was written).
async fn commit(client: &mut Client, batch: Vec<Op>) -> Result<(), (Vec<Op>, StoreError)> {
    let mut results: Vec<Result<(), StoreError>> = Vec::with_capacity(batch.len());
    // Per outcome, in queue order: whether it found its device's record.
    let mut found: Vec<bool> = Vec::new();
    let outcome: Result<(), StoreError> = async {
        let mut tx = client.transaction().await.map_err(from_pg)?;
        // Registry changes one at a time, each in a savepoint.
        for op in &batch {
            let Op::Change { change, .. } = op else {
                results.push(Ok(()));
                continue;
            };
            let sp = tx.savepoint("change").await.map_err(from_pg)?;
            match queries::apply_change(&sp, change).await {
                Ok(()) => {
                    sp.commit().await.map_err(from_pg)?;
                    results.push(Ok(()));
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
        // Records, then outcomes: an outcome always follows its record.
        let inserts: Vec<&Invocation> = batch
            .iter()
            .filter_map(|op| match op {
                Op::Insert { invocation, .. } => Some(invocation),
                _ => None,
            })
            .collect();
        queries::insert_invocations(&tx, &inserts)
            .await
            .map_err(from_pg)?;
        // Outcomes in runs of distinct message ids, in queue order (two
        // outcomes of one call must apply in their order).
        let mut run: Vec<&Completion> = Vec::new();
        let mut ids: HashSet<u64> = HashSet::new();
        for op in &batch {
            let Op::Complete { completion, .. } = op else {
                continue;
            };
            if !ids.insert(completion.message_id.get()) {
                found.extend(complete_run(&tx, &run).await?);
                run.clear();
                ids.clear();
                ids.insert(completion.message_id.get());
            }
            run.push(completion);
        }
        found.extend(complete_run(&tx, &run).await?);
        tx.commit().await.map_err(from_pg)
    }
    .await;
    if let Err(e) = outcome {
        return Err((batch, e));
    }
    let mut found = found.into_iter();
    for (op, result) in batch.into_iter().zip(results) {
        match op {
            Op::Change {
                change,
                on_commit,
                done,
            } => {
                if result.is_ok() {
                    on_commit(&change);
                }
                done.resolve(result);
            }
            Op::Insert { done, .. } => done.resolve(Ok(())),
            Op::Complete { done, .. } => done.resolve(Ok(found.next().unwrap_or(false))),
        }
    }
    Ok(())
}

/// Applies one run of outcomes (distinct message ids) and says, for each,
/// whether it found its device's record.
async fn complete_run(
    tx: &tokio_postgres::Transaction<'_>,
    run: &[&Completion],
) -> Result<Vec<bool>, StoreError> {
    let matched: HashSet<i64> = queries::complete_invocations(tx, run)
        .await
        .map_err(from_pg)?
        .into_iter()
        .collect();
    Ok(run
        .iter()
        .map(|c| i64::try_from(c.message_id.get()).is_ok_and(|k| matched.contains(&k)))
        .collect())
}
