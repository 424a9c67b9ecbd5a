//! What a caller without credentials can make the server hold, in numbers
//! that every connection shares: the byte budget of request bodies read
//! before their signature is verified (`http.rs`), and, on a cluster node,
//! the store checks of device logins (`cluster/logins.rs`). Both are
//! counted in `/metrics`; docs/security/strangers.md has the whole list.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit, watch};

/// The bytes of request bodies held before their signature is verified,
/// over every connection. A body takes its bytes as they arrive and gives
/// them back once its request is verified or answered; a body that finds
/// the budget spent is refused at once rather than queued.
pub(crate) struct BodyBudget {
    permits: Arc<Semaphore>,
    size: usize,
    peak: AtomicUsize,
}

/// The bytes one body holds of the budget, given back when dropped.
#[derive(Default)]
pub(crate) struct HeldBytes(Option<OwnedSemaphorePermit>);

impl BodyBudget {
    /// A budget of `size` bytes.
    pub(crate) fn new(size: usize) -> BodyBudget {
        let size = size.min(Semaphore::MAX_PERMITS);
        BodyBudget {
            permits: Arc::new(Semaphore::new(size)),
            size,
            peak: AtomicUsize::new(0),
        }
    }

    /// Adds `n` bytes to what `held` holds; false when the budget cannot
    /// spare them now.
    pub(crate) fn take(&self, held: &mut HeldBytes, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let Ok(n) = u32::try_from(n) else {
            return false;
        };
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_many_owned(n) else {
            return false;
        };
        match &mut held.0 {
            Some(p) => p.merge(permit),
            None => held.0 = Some(permit),
        }
        self.peak.fetch_max(self.in_use(), Ordering::Relaxed);
        true
    }

    /// Bytes held now.
    pub(crate) fn in_use(&self) -> usize {
        self.size.saturating_sub(self.permits.available_permits())
    }

    /// Prometheus text: bytes held now, the most held at once, the budget.
    pub(crate) fn render(&self, out: &mut String) {
        out.push_str("# HELP thingcall_http_unverified_body_bytes Bytes of request bodies held before their signature was verified: now (held), the most at once since start (peak), and the budget.\n");
        out.push_str("# TYPE thingcall_http_unverified_body_bytes gauge\n");
        for (kind, n) in [
            ("held", self.in_use()),
            ("peak", self.peak.load(Ordering::Relaxed)),
            ("budget", self.size),
        ] {
            let _ = writeln!(
                out,
                "thingcall_http_unverified_body_bytes{{kind=\"{kind}\"}} {n}"
            );
        }
    }
}

/// Store checks of device logins that one cluster node runs at once. A
/// login reaches the store only after its password verified against the
/// mirror, so only a caller that holds a device secret can spend these;
/// four keep logins to a quarter of the store's pool of 16 connections.
pub(crate) const LOGIN_STORE_CHECKS: usize = 4;

/// How a login on a cluster node was checked, one counter each.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LoginCheck {
    /// Refused from the mirror, without a query: a wrong password, or a
    /// device the mirror does not know (after waiting for it to catch up).
    RefusedByMirror,
    /// A device the mirror did not know, waited for until the mirror heard
    /// of it or the wait ran out.
    WaitedForMirror,
    /// Verified against the mirror, then read from the store.
    Store,
    /// Verified against the mirror; every store check was busy for the
    /// whole wait, so the mirror answered.
    StoreBusy,
    /// Verified against the mirror; the store failed, so the mirror
    /// answered.
    StoreFailed,
}

const LOGIN_CHECK_NAMES: [&str; 5] = [
    "refused_by_mirror",
    "waited_for_mirror",
    "store",
    "store_busy",
    "store_failed",
];

/// The login checks of one cluster node: the bound on store checks, what
/// each login cost, and a signal that the mirror applied changes it read
/// from the registry log (a login for a device the mirror does not know
/// waits for it, instead of asking the store).
pub(crate) struct LoginChecks {
    store_checks: Semaphore,
    counts: [AtomicU64; 5],
    mirror_moved: watch::Sender<u64>,
}

impl LoginChecks {
    /// No login checked yet.
    pub(crate) fn new() -> LoginChecks {
        LoginChecks {
            store_checks: Semaphore::new(LOGIN_STORE_CHECKS),
            counts: Default::default(),
            mirror_moved: watch::channel(0).0,
        }
    }

    /// Counts one login check.
    pub(crate) fn count(&self, check: LoginCheck) {
        self.counts[check as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A store check's permit, waiting at most `wait` for one.
    pub(crate) async fn store_check(
        &self,
        wait: std::time::Duration,
    ) -> Option<SemaphorePermit<'_>> {
        tokio::time::timeout(wait, self.store_checks.acquire())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Says that the mirror applied changes read from the registry log.
    pub(crate) fn mirror_moved(&self) {
        self.mirror_moved.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Hears every [`LoginChecks::mirror_moved`] from now on.
    pub(crate) fn watch_mirror(&self) -> watch::Receiver<u64> {
        self.mirror_moved.subscribe()
    }

    /// Prometheus text.
    pub(crate) fn render(&self, out: &mut String) {
        out.push_str("# HELP thingcall_login_checks_total Device logins on this cluster node, by how they were checked (only logins whose password verified against the mirror reach the store).\n");
        out.push_str("# TYPE thingcall_login_checks_total counter\n");
        for (name, n) in LOGIN_CHECK_NAMES.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "thingcall_login_checks_total{{check=\"{name}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP thingcall_login_store_checks_in_flight Store checks of device logins running now (at most 4).\n");
        out.push_str("# TYPE thingcall_login_store_checks_in_flight gauge\n");
        let _ = writeln!(
            out,
            "thingcall_login_store_checks_in_flight {}",
            LOGIN_STORE_CHECKS.saturating_sub(self.store_checks.available_permits())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_budget_never_lends_more_than_it_has() {
        let budget = BodyBudget::new(100);
        let (mut a, mut b) = (HeldBytes::default(), HeldBytes::default());
        assert!(budget.take(&mut a, 60));
        assert!(budget.take(&mut a, 30));
        assert!(!budget.take(&mut b, 20), "only 10 bytes are left");
        assert!(budget.take(&mut b, 10));
        assert_eq!(budget.in_use(), 100);
        drop(a);
        assert_eq!(budget.in_use(), 10);
        assert!(budget.take(&mut b, 90));
        let mut text = String::new();
        budget.render(&mut text);
        assert!(text.contains("{kind=\"peak\"} 100\n"), "{text}");
        assert!(text.contains("{kind=\"held\"} 100\n"), "{text}");
    }

    #[test]
    fn a_body_larger_than_four_gibibytes_is_refused_not_truncated() {
        let budget = BodyBudget::new(usize::MAX);
        let mut held = HeldBytes::default();
        assert!(!budget.take(&mut held, usize::MAX));
        assert_eq!(budget.in_use(), 0);
    }
}
