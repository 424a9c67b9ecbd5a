//! Signature nonces shared by the nodes: claims are batched, so a busy node
//! makes one statement per batch, not one per request.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::store::postgres::Store as PgStore;
use crate::store::{SharedNonces, StoreError};

/// Largest batch claimed in one statement.
const MAX_BATCH: usize = 512;

struct Claim {
    digest: u128,
    now_ms: i64,
    expires_ms: i64,
    answer: oneshot::Sender<Result<bool, StoreError>>,
}

/// Claims nonces in the store, batching what arrives together.
pub(crate) struct BatchedNonces {
    tx: mpsc::UnboundedSender<Claim>,
}

impl BatchedNonces {
    /// Starts the batching task (it ends when the value is dropped).
    pub(crate) fn start(store: Arc<PgStore>) -> BatchedNonces {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        BatchedNonces { tx }
    }
}

async fn run(store: Arc<PgStore>, mut rx: mpsc::UnboundedReceiver<Claim>) {
    let mut claims = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut claims, MAX_BATCH).await > 0 {
        // A digest twice in one batch: the second is a replay, refused
        // here (one statement cannot touch a row twice).
        let mut seen = HashSet::with_capacity(claims.len());
        let mut batch = Vec::with_capacity(claims.len());
        let mut waiting = Vec::with_capacity(claims.len());
        let mut now_ms = i64::MIN;
        for c in claims.drain(..) {
            if seen.insert(c.digest) {
                now_ms = now_ms.max(c.now_ms);
                batch.push((c.digest, c.expires_ms));
                waiting.push(c.answer);
            } else {
                let _ = c.answer.send(Ok(false));
            }
        }
        match store.claim_nonces(&batch, now_ms).await {
            Ok(fresh) => {
                for (answer, fresh) in waiting.into_iter().zip(fresh) {
                    let _ = answer.send(Ok(fresh));
                }
            }
            Err(e) => {
                for answer in waiting {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }
}

#[async_trait]
impl SharedNonces for BatchedNonces {
    async fn claim(&self, digest: u128, now_ms: i64, expires_ms: i64) -> Result<bool, StoreError> {
        let (answer, rx) = oneshot::channel();
        self.tx
            .send(Claim {
                digest,
                now_ms,
                expires_ms,
                answer,
            })
            .map_err(|_| StoreError::unavailable("the nonce store is closed"))?;
        rx.await
            .map_err(|_| StoreError::unavailable("the nonce store is closed"))?
    }
}
