//! The request gate of a cluster node, held only while a request reads the
//! mirror.
//!
//! A node that lost its registry listener's connection catches up holding
//! the gate alone (`cluster/mod.rs`), so that no request is answered from a
//! mirror that is catching up. A request holds it shared while it verifies
//! its signature, resolves its device and model and reads the registry,
//! and lets it go while it waits on anything else: another node's nonce
//! table, a device that has a sync call, the delivery of an async one.
//! Held for a whole action, a sync call waiting 5 s for its device would
//! hold a catch-up back for those 5 s, and every request queued behind the
//! catch-up with it. On one node there is no gate and this does nothing.

use std::sync::Arc;

use tokio::sync::{OwnedRwLockReadGuard, RwLock};

/// One request's hold on the gate: taken and let go as the request goes.
#[derive(Default)]
pub(crate) struct MirrorGate {
    gate: Option<Arc<RwLock<()>>>,
    held: Option<OwnedRwLockReadGuard<()>>,
}

impl MirrorGate {
    /// A hold on `gate` (none: a single node, or a caller that needs none),
    /// not yet taken.
    pub(crate) fn new(gate: Option<Arc<RwLock<()>>>) -> MirrorGate {
        MirrorGate { gate, held: None }
    }

    /// Takes the gate (shared) unless this request already holds it: waits
    /// while a catch-up holds it.
    pub(crate) async fn hold(&mut self) {
        if self.held.is_none()
            && let Some(gate) = &self.gate
        {
            self.held = Some(Arc::clone(gate).read_owned().await);
        }
    }

    /// Lets the gate go, before the request waits on anything but the
    /// mirror.
    pub(crate) fn release(&mut self) {
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_catch_up_waits_only_while_a_request_reads_the_mirror() {
        let lock = Arc::new(RwLock::new(()));
        let mut request = MirrorGate::new(Some(Arc::clone(&lock)));
        request.hold().await;
        request.hold().await; // a second hold is the same hold
        assert!(lock.try_write().is_err(), "held while reading the mirror");
        request.release();
        let catching_up = lock.try_write().expect("free once let go");
        // While the catch-up holds it, the request waits to read again.
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), request.hold());
        assert!(again.await.is_err());
        drop(catching_up);
        request.hold().await;
        assert!(lock.try_write().is_err());
    }

    #[tokio::test]
    async fn without_a_gate_nothing_waits() {
        let mut request = MirrorGate::new(None);
        request.hold().await;
        request.release();
        request.hold().await;
    }
}
