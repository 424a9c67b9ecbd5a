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

/// Random low bits in every message id: a device that wants to answer a
/// call meant for another device cannot guess its id (it would also have to
/// be that device: replies are matched by device and id).
pub(crate) const MESSAGE_ID_RANDOM_BITS: u32 = 20;

/// Bits that name the node that made a message id, so two nodes of a
/// cluster never make the same one: at most 8 nodes.
pub(crate) const MESSAGE_ID_NODE_BITS: u32 = 3;

/// The node numbers there are room for.
pub(crate) const MAX_NODES: u8 = 1 << MESSAGE_ID_NODE_BITS;

/// Where message-id ticks start: 2020-01-01T00:00:00Z, in milliseconds.
const TICK_EPOCH_MS: u64 = 1_577_836_800_000;

/// Message ids: decimal `u64`s, increasing within the process, unique
/// across restarts and across the nodes of a cluster, with
/// [`MESSAGE_ID_RANDOM_BITS`] random low bits.
///
/// From the top: 41 bits of tick, 3 bits of node number, 20 random bits.
/// The tick is the wall clock in milliseconds since 2020, or one more than
/// the last tick when calls come faster than one per millisecond (it then
/// runs ahead of the clock and waits for it when the load drops); 41 bits
/// last until 2089 at no load. A restart continues above the highest id
/// recorded, so a clock set back cannot repeat one.
#[derive(Debug, Default)]
pub(crate) struct MessageIds {
    node: u64,
    state: Mutex<IdState>,
}

#[derive(Debug, Default)]
struct IdState {
    last_tick: u64,
    /// Random bytes drawn from the OS in bulk (one system call per 1,365
    /// ids), used three at a time.
    pool: Vec<u8>,
}

/// The bits below the tick.
const BELOW_TICK: u32 = MESSAGE_ID_NODE_BITS + MESSAGE_ID_RANDOM_BITS;

impl MessageIds {
    /// Ids of node `node` (0 for a single node) that start above `last`
    /// (the highest one recorded, by any node).
    pub(crate) fn after(node: u8, last: Option<u64>) -> MessageIds {
        MessageIds {
            node: u64::from(node % MAX_NODES),
            state: Mutex::new(IdState {
                last_tick: last.unwrap_or(0) >> BELOW_TICK,
                pool: Vec::new(),
            }),
        }
    }

    pub(crate) fn next(&self, now: UnixMillis) -> MessageId {
        let ms = u64::try_from(now.get())
            .unwrap_or(0)
            .saturating_sub(TICK_EPOCH_MS);
        let mut state = crate::sync::lock(&self.state);
        let tick = (state.last_tick + 1).max(ms);
        state.last_tick = tick;
        if state.pool.len() < 3 {
            state.pool = random_bytes::<4095>().to_vec();
        }
        let mut low = [0u8; 4];
        for b in low.iter_mut().take(3) {
            *b = state.pool.pop().unwrap_or(0);
        }
        let random = u64::from(u32::from_le_bytes(low)) & ((1 << MESSAGE_ID_RANDOM_BITS) - 1);
        MessageId::from_u64((tick << BELOW_TICK) | (self.node << MESSAGE_ID_RANDOM_BITS) | random)
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
        assert_eq!(a.get() >> BELOW_TICK, 1_700_000_000_000 - TICK_EPOCH_MS);
        let restarted = MessageIds::after(0, Some(c.get()));
        assert!(
            restarted.next(UnixMillis::new(1_500_000_000_000)) > c,
            "a restart with the clock set back continues above the last id"
        );
        // Ids of earlier layouts (milliseconds x 10^6, then milliseconds
        // shifted by 20) stay below new ones.
        for old in [
            1_700_000_000_000u64 * 1_000_000,
            1_700_000_000_000u64 << MESSAGE_ID_RANDOM_BITS,
        ] {
            let next = MessageIds::after(0, Some(old)).next(UnixMillis::new(1_700_000_000_000));
            assert!(next.get() > old);
        }
    }

    /// Many ids in one millisecond: still increasing, and their low bits
    /// are not a counter (they spread over the whole random range).
    #[test]
    fn message_ids_carry_random_low_bits() {
        let ids = MessageIds::default();
        let now = UnixMillis::new(1_700_000_000_000);
        let all: Vec<u64> = (0..4096).map(|_| ids.next(now).get()).collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        let mask = (1u64 << MESSAGE_ID_RANDOM_BITS) - 1;
        let lows: std::collections::HashSet<u64> = all.iter().map(|id| id & mask).collect();
        assert!(lows.len() > 4000, "{} distinct low parts", lows.len());
        let high_half = all.iter().filter(|id| *id & mask > mask / 2).count();
        assert!(
            (1500..2600).contains(&high_half),
            "{high_half} of 4096 in the upper half"
        );
        let consecutive = all
            .windows(2)
            .filter(|w| (w[1] & mask) == (w[0] & mask) + 1)
            .count();
        assert!(
            consecutive < 10,
            "{consecutive} ids follow their predecessor"
        );
    }

    /// Two nodes in the same millisecond, with the same random draw, still
    /// make different ids: the node number sits between tick and random.
    #[test]
    fn nodes_never_share_an_id() {
        let now = UnixMillis::new(1_700_000_000_000);
        let ids: std::collections::HashSet<u64> = (0..MAX_NODES)
            .flat_map(|n| {
                let ids = MessageIds::after(n, None);
                (0..1000)
                    .map(move |_| ids.next(now).get())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(ids.len(), 8000);
        let node = |id: u64| (id >> MESSAGE_ID_RANDOM_BITS) & u64::from(MAX_NODES - 1);
        assert_eq!(node(MessageIds::after(5, None).next(now).get()), 5);
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
