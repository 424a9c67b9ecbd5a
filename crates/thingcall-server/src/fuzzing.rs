//! Entry points for the fuzz targets in `fuzz/` (see `docs/TESTING.md`).
//! Not part of the API: they reach internals that have no public use.

use crate::store::journal::{Entry, read_segment};

/// Reads `bytes` as a journal segment, as start-up replay does, and checks
/// what it found: every entry read encodes and reads back the same, and a
/// segment written from those entries reads back whole.
pub fn journal_segment_round_trip(bytes: &[u8]) {
    let segment = read_segment(bytes);
    let mut rewritten = Vec::new();
    for entry in &segment.entries {
        entry.encode(&mut rewritten);
    }
    let again = read_segment(&rewritten);
    assert!(
        again.stopped.is_none(),
        "a segment we wrote reads as torn: {:?}",
        again.stopped
    );
    assert_eq!(again.entries, segment.entries);
    for entry in &segment.entries {
        let mut one = Vec::new();
        entry.encode(&mut one);
        let payload = one.get(8..).unwrap_or_default();
        assert_eq!(Entry::decode(payload).as_ref(), Ok(entry));
    }
}
