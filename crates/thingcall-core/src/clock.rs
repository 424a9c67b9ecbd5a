//! The injected clock.
//!
//! Protocol code never reads the system clock: it asks a [`Clock`]. Servers
//! pass a real clock; tests pass a [`ManualClock`] and move it by hand, so
//! timeouts and signature windows are tested without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::time::UnixMillis;

/// A source of wall-clock time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> UnixMillis;
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: UnixMillis) -> ManualClock {
        ManualClock {
            millis: AtomicI64::new(start.get()),
        }
    }

    /// Moves the clock forward (or backward, for a negative step).
    pub fn advance_millis(&self, step: i64) {
        self.millis.fetch_add(step, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, at: UnixMillis) {
        self.millis.store(at.get(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis::new(self.millis.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(UnixMillis::new(1_000));
        assert_eq!(clock.now().get(), 1_000);
        clock.advance_millis(500);
        assert_eq!(clock.now().get(), 1_500);
        clock.set(UnixMillis::new(7));
        assert_eq!(clock.now().get(), 7);
    }
}
