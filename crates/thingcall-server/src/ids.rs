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

/// A fresh request id.
pub(crate) fn request_id() -> RequestId {
    RequestId::from_bytes(random_bytes::<16>())
}

/// Message ids: decimal, increasing, unique across restarts (they start
/// from the wall clock in microsecond-like units).
#[derive(Debug, Default)]
pub(crate) struct MessageIds {
    last: Mutex<u64>,
}

impl MessageIds {
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
    }
}
