//! What a caller without credentials can make the server hold, in numbers
//! that every connection shares: the byte budget of request bodies read
//! before their signature is verified (`http.rs`), counted in `/metrics`;
//! docs/security/strangers.md has the whole list.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
