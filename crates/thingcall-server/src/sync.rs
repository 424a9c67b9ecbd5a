//! Lock helpers shared by every module.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, taking the data back if a panicking thread poisoned it:
/// every critical section in this crate leaves its data consistent, so one
/// failed request must not stop the server.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
