//! Start-up replay of the journal segments a crash left behind.

use std::path::Path;

use rusqlite::Connection;

use super::writer::copy_entry;
use crate::store::StoreError;
use crate::store::journal;

/// Re-applies the journal segments left in `dir` by a process that did not
/// shut down cleanly, in one transaction. Returns the segments replayed, in
/// order.
pub(super) fn replay(conn: &Connection, dir: &Path) -> Result<Vec<u64>, StoreError> {
    let seqs = journal::segments(dir).map_err(|e| {
        StoreError::unavailable(format!("cannot list the journal in {}: {e}", dir.display()))
    })?;
    if seqs.is_empty() {
        return Ok(seqs);
    }
    let tx = conn.unchecked_transaction()?;
    let mut count = 0usize;
    for &seq in &seqs {
        let path = journal::segment_path(dir, seq);
        let bytes = std::fs::read(&path)
            .map_err(|e| StoreError::unavailable(format!("cannot read {}: {e}", path.display())))?;
        let segment = journal::read_segment(&bytes);
        if let Some(why) = segment.stopped {
            tracing::warn!(path = %path.display(), why, "journal segment ends in a torn write (a crash mid-append; nothing after it was acknowledged)");
        }
        for e in &segment.entries {
            if let Err(err) = copy_entry(&tx, e, true) {
                tracing::error!(entry = ?e, error = %err, "a journaled invocation record could not be replayed");
            }
        }
        count += segment.entries.len();
    }
    tx.commit()?;
    tracing::info!(
        segments = seqs.len(),
        entries = count,
        "replayed the invocation journal"
    );
    Ok(seqs)
}
