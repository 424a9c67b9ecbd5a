//! Fresh ids and secrets: the only randomness in thingcall lives here.

use std::sync::Mutex;

use thingcall_core::{MessageId, RequestId, UnixMillis};

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if getrandom::fill(&mut buf).is_err() {
        // The OS source failing is not something to limp on with weak ids.
        tracing::error!("the operating system's random source failed");
        std::process::abort();
    }
    buf
}

/// `len` random letters and digits (rejection sampling, no modulo bias).
pub(crate) fn alnum(len: usize) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes::<32>() {
            // 248 = 62 * 4: bytes at or above it would bias the result.
            if b < 248 && out.len() < len {
                out.push(char::from(ALNUM[usize::from(b % 62)]));
            }
        }
    }
    out
}

/// A fresh request id: a random per-process prefix and a counter passed
/// through a bijective mixer, so ids are unique within the process, differ
/// across restarts, and cost no system call each.
pub(crate) fn request_id() -> RequestId {
    static KEY: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let key = KEY.get_or_init(random_bytes::<16>);
    let (head, tail) = key.split_at(8);
    let mut salt = [0u8; 8];
    salt.copy_from_slice(tail);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) ^ u64::from_le_bytes(salt);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&mix(n).to_le_bytes());
    bytes[8..].copy_from_slice(head);
    RequestId::from_bytes(bytes)
}

/// The splitmix64 finaliser: a bijection on `u64` that scatters counters.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Message ids: decimal, increasing, unique across restarts (they start
/// from the wall clock in microsecond-like units, and above the highest id
/// already recorded, so a clock set back cannot repeat one).
#[derive(Debug, Default)]
pub(crate) struct MessageIds {
    last: Mutex<u64>,
}

impl MessageIds {
    /// Ids that start above `last` (the highest one recorded).
    pub(crate) fn after(last: Option<u64>) -> MessageIds {
        MessageIds {
            last: Mutex::new(last.unwrap_or(0)),
        }
    }

    pub(crate) fn next(&self, now: UnixMillis) -> MessageId {
        let base = u64::try_from(now.get())
            .unwrap_or(0)
            .saturating_mul(1_000_000);
        let mut last = crate::lock(&self.last);
        *last = (*last + 1).max(base);
        MessageId::from_u64(*last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_well_formed() {
        let s = alnum(20);
        assert_eq!(s.len(), 20);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(alnum(20), s);
        let ids = MessageIds::default();
        let a = ids.next(UnixMillis::new(1_700_000_000_000));
        let b = ids.next(UnixMillis::new(1_700_000_000_000));
        let c = ids.next(UnixMillis::new(1_600_000_000_000));
        assert!(a < b && b < c, "monotonic even when the clock steps back");
        assert_eq!(a.to_string(), "1700000000000000000");
        let restarted = MessageIds::after(Some(c.get()));
        assert!(
            restarted.next(UnixMillis::new(1_500_000_000_000)) > c,
            "a restart with the clock set back continues above the last id"
        );
    }

    #[test]
    fn request_ids_do_not_repeat() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| request_id().to_string()).collect();
        assert_eq!(ids.len(), 10_000);
        let one = request_id().to_string();
        assert_eq!(one.len(), 36, "{one}");
    }
}
