//! The invocation journal.
//!
//! An invocation record is durable once it is appended to a segment file:
//! one `write` of a few hundred bytes, no B-tree and no transaction on the
//! request path. The store's writer thread copies the journal into SQLite
//! in large transactions and deletes the segments it has copied; at start-up
//! the segments left by a crash are replayed. Replay is idempotent: an
//! insert that finds its row already there is skipped, and outcomes are
//! re-applied in their original order, so replaying a segment that was
//! partly or wholly copied before the crash ends in the same rows.
//!
//! A frame is the payload's length (`u32`, little-endian), its CRC-32
//! (`u32`, little-endian) and the payload, one JSON object. Reading stops at
//! the first frame that is cut short or fails its checksum: that is where a
//! crash interrupted the last write, and nothing after it was acknowledged.
//! Segments are `journal-<seq>.log` (`seq` in 20 digits) in the data
//! directory.
//!
//! The append is not followed by `fsync`: an acknowledged record survives
//! the process being killed (it is in the kernel's page cache), while an OS
//! crash or power loss can take the last moments of records, the same
//! promise SQLite's `synchronous=NORMAL` makes for the rest of the store.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;
use thingcall_core::MessageId;

use super::{CallMode, Completion, Invocation, Outcome, Resolver};
use crate::sync::lock;

/// A segment is closed and a new one started past this size.
const SEGMENT_LIMIT: u64 = 8 * 1024 * 1024;

/// Frames larger than this are corrupt (a record's input and output are
/// bounded by the request body limit and the gateway's packet limit).
const FRAME_LIMIT: usize = 64 * 1024 * 1024;

/// One journaled change to the invocation records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A new record.
    Insert(Invocation),
    /// An outcome for a record (for the record of its device only).
    Complete(Completion),
}

impl Entry {
    /// Writes the payload, one JSON object, straight into `out` (this runs
    /// once per call on the request path, so no `Value` is built).
    fn write_payload(&self, out: &mut Vec<u8>) {
        fn field(out: &mut Vec<u8>, name: &str, value: Option<&str>) {
            out.push(b',');
            text(out, name);
            out.push(b':');
            match value {
                Some(v) => text(out, v),
                None => out.extend_from_slice(b"null"),
            }
        }
        fn text(out: &mut Vec<u8>, s: &str) {
            // Serialising a `str` into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, s);
        }
        match self {
            Entry::Insert(i) => {
                out.extend_from_slice(br#"{"op":"insert""#);
                field(out, "messageId", Some(&i.message_id.to_string()));
                field(out, "iotId", Some(&i.iot_id));
                field(out, "identifier", Some(&i.identifier));
                field(out, "name", Some(&i.name));
                out.extend_from_slice(br#","timeMs":"#);
                out.extend_from_slice(i.time_ms.to_string().as_bytes());
                field(out, "mode", Some(i.mode.as_str()));
                field(out, "input", Some(&i.input));
                field(out, "output", i.output.as_deref());
                field(out, "code", Some(&i.outcome.to_stored()));
            }
            Entry::Complete(c) => {
                out.extend_from_slice(br#"{"op":"complete""#);
                field(out, "messageId", Some(&c.message_id.to_string()));
                field(out, "iotId", c.iot_id.as_deref());
                field(out, "output", c.output.as_deref());
                field(out, "code", Some(&c.outcome.to_stored()));
            }
        }
        out.push(b'}');
    }

    /// Appends this entry's frame to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; 8]);
        self.write_payload(out);
        let payload = &out[start + 8..];
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(payload);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Parses one frame's payload.
    pub(crate) fn decode(payload: &[u8]) -> Result<Entry, String> {
        let v: Value = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        let text = |k: &str| -> Result<String, String> {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("no text field {k}"))
        };
        let optional = |k: &str| -> Result<Option<String>, String> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("field {k} is neither text nor null")),
            }
        };
        let message_id = || -> Result<MessageId, String> {
            text("messageId")?
                .parse::<u64>()
                .map(MessageId::from_u64)
                .map_err(|_| "messageId is not a decimal u64".to_owned())
        };
        let outcome = |output: &Option<String>| -> Result<Outcome, String> {
            Outcome::parse(&text("code")?, output.is_some()).map_err(|e| e.to_string())
        };
        match v.get("op").and_then(Value::as_str) {
            Some("insert") => {
                let output = optional("output")?;
                Ok(Entry::Insert(Invocation {
                    message_id: message_id()?,
                    iot_id: text("iotId")?,
                    identifier: text("identifier")?,
                    name: text("name")?,
                    time_ms: v
                        .get("timeMs")
                        .and_then(Value::as_i64)
                        .ok_or("no integer field timeMs")?,
                    mode: CallMode::parse(&text("mode")?).map_err(|e| e.to_string())?,
                    input: text("input")?,
                    outcome: outcome(&output)?,
                    output,
                }))
            }
            Some("complete") => {
                let output = optional("output")?;
                Ok(Entry::Complete(Completion {
                    message_id: message_id()?,
                    iot_id: optional("iotId")?,
                    outcome: outcome(&output)?,
                    output,
                }))
            }
            _ => Err("unknown op".into()),
        }
    }
}

/// What reading a segment found.
#[derive(Debug, Default)]
pub(crate) struct Segment {
    /// The entries, in order, up to the first bad frame.
    pub(crate) entries: Vec<Entry>,
    /// Why reading stopped early: a cut-short or corrupt frame at an offset.
    pub(crate) stopped: Option<String>,
}

/// Reads the frames of one segment's bytes.
pub(crate) fn read_segment(bytes: &[u8]) -> Segment {
    let mut out = Segment::default();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 8) else {
            out.stopped = Some(format!("frame header cut short at byte {at}"));
            break;
        };
        let mut word = [0u8; 4];
        word.copy_from_slice(&head[..4]);
        let len = u32::from_le_bytes(word) as usize;
        word.copy_from_slice(&head[4..]);
        let crc = u32::from_le_bytes(word);
        if len > FRAME_LIMIT {
            out.stopped = Some(format!("impossible frame length {len} at byte {at}"));
            break;
        }
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            out.stopped = Some(format!("frame cut short at byte {at}"));
            break;
        };
        if crc32fast::hash(payload) != crc {
            out.stopped = Some(format!("checksum mismatch at byte {at}"));
            break;
        }
        match Entry::decode(payload) {
            Ok(e) => out.entries.push(e),
            // The checksum held, so the frame is whole but not ours to
            // read; skip it rather than lose what follows.
            Err(e) => tracing::error!(offset = at, error = %e, "unreadable journal entry skipped"),
        }
        at += 8 + len;
    }
    out
}

/// An entry waiting to be copied into SQLite, with whoever waits for it.
pub(crate) struct Queued {
    pub(crate) entry: Entry,
    /// Told, after the copy commits, whether the entry found its record.
    pub(crate) done: Option<Resolver<bool>>,
}

/// The journal's appending side and its queue of uncopied entries.
pub(crate) struct Journal {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    seq: u64,
    len: u64,
    /// A failed write may have left part of a frame past `len`; it must be
    /// cut off (or the segment left) before anything else is appended.
    torn: bool,
    queued: Vec<Queued>,
    scratch: Vec<u8>,
}

/// The file of segment `seq` in `dir`.
pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("journal-{seq:020}.log"))
}

fn create_segment(dir: &Path, seq: u64) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create_new(true).append(true);
    // Readable by the owner only, as every file of the store.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(segment_path(dir, seq))
}

/// The sequence numbers of the segments in `dir`, ascending.
pub(crate) fn segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(seq) = name
            .strip_prefix("journal-")
            .and_then(|s| s.strip_suffix(".log"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

impl Journal {
    /// Starts a new segment after every existing one (`after` is the
    /// highest existing sequence number).
    pub(crate) fn create(dir: &Path, after: Option<u64>) -> std::io::Result<Journal> {
        let seq = after.map_or(0, |s| s + 1);
        let file = create_segment(dir, seq)?;
        Ok(Journal {
            dir: dir.to_owned(),
            inner: Mutex::new(Inner {
                file,
                seq,
                len: 0,
                torn: false,
                queued: Vec::new(),
                scratch: Vec::with_capacity(1024),
            }),
        })
    }

    /// Appends an entry; once this returns `Ok` the entry survives the
    /// process being killed. Returns whether the queue was empty before
    /// (the writer then needs a nudge).
    pub(crate) fn append(&self, queued: Queued) -> std::io::Result<bool> {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        if inner.torn && inner.file.set_len(inner.len).is_ok() {
            inner.torn = false;
        }
        if inner.torn || inner.len >= SEGMENT_LIMIT {
            // A fresh segment: past the limit, or past a tail that could
            // not be cut (recovery stops reading a segment at a torn frame).
            inner.file = create_segment(&self.dir, inner.seq + 1)?;
            inner.seq += 1;
            inner.len = 0;
            inner.torn = false;
        }
        inner.scratch.clear();
        queued.entry.encode(&mut inner.scratch);
        if let Err(e) = inner.file.write_all(&inner.scratch) {
            // A partial frame would hide every later frame from recovery:
            // cut it off now, or before the next append.
            inner.torn = inner.file.set_len(inner.len).is_err();
            return Err(e);
        }
        inner.len += inner.scratch.len() as u64;
        let was_empty = inner.queued.is_empty();
        inner.queued.push(queued);
        Ok(was_empty)
    }

    /// Entries appended and not yet taken for copying.
    pub(crate) fn waiting(&self) -> usize {
        lock(&self.inner).queued.len()
    }

    /// The segment being appended now.
    pub(crate) fn current(&self) -> u64 {
        lock(&self.inner).seq
    }

    /// Takes every queued entry, with the segment being appended now:
    /// once the taken entries are copied, every earlier segment is.
    pub(crate) fn take(&self) -> (Vec<Queued>, u64) {
        let mut inner = lock(&self.inner);
        (std::mem::take(&mut inner.queued), inner.seq)
    }

    /// Deletes the segments `seqs` (all copied already).
    pub(crate) fn release(&self, seqs: impl IntoIterator<Item = u64>) {
        for seq in seqs {
            match std::fs::remove_file(segment_path(&self.dir, seq)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(seq, error = %e, "cannot delete a copied journal segment"),
            }
        }
    }

    /// Deletes the segment being appended, once everything is copied and
    /// nothing more will be appended (a clean shutdown).
    pub(crate) fn remove_current(&self) {
        let seq = lock(&self.inner).seq;
        self.release([seq]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(id: u64) -> Entry {
        Entry::Insert(Invocation {
            message_id: MessageId::from_u64(id),
            iot_id: "dev\u{e9}".to_owned(),
            identifier: "Calibrate".to_owned(),
            name: "Calibrate \"x\"".to_owned(),
            time_ms: 17,
            mode: CallMode::Sync,
            input: "{\"Offset\":1.5}".to_owned(),
            output: None,
            outcome: Outcome::Timeout,
        })
    }

    fn complete(id: u64) -> Entry {
        Entry::Complete(Completion {
            message_id: MessageId::from_u64(id),
            iot_id: Some("dev\u{e9}".to_owned()),
            output: Some("{\"code\":200}".to_owned()),
            outcome: Outcome::Late(200),
        })
    }

    #[test]
    fn frames_round_trip() {
        let awkward = Entry::Insert(Invocation {
            message_id: MessageId::from_u64(u64::MAX),
            iot_id: "\\\"\u{0}\u{1f}\u{7f}".to_owned(),
            identifier: "block:svc".to_owned(),
            name: "\u{1F680} \u{2028}".to_owned(),
            time_ms: -1,
            mode: CallMode::Async,
            input: "{\"s\":\"\\n\"}\n\t".to_owned(),
            output: Some(String::new()),
            outcome: Outcome::Replied(9201),
        });
        let entries = [insert(1), complete(1), insert(2), awkward];
        let mut bytes = Vec::new();
        for e in &entries {
            e.encode(&mut bytes);
        }
        let read = read_segment(&bytes);
        assert_eq!(read.entries, entries);
        assert!(read.stopped.is_none());
    }

    /// A crash can cut the last write anywhere: every whole frame before the
    /// cut is read back, and the cut is reported, never a panic.
    #[test]
    fn a_torn_tail_keeps_every_whole_frame() {
        let mut bytes = Vec::new();
        insert(1).encode(&mut bytes);
        complete(1).encode(&mut bytes);
        let whole = bytes.len();
        insert(2).encode(&mut bytes);
        for cut in whole + 1..bytes.len() {
            let read = read_segment(&bytes[..cut]);
            assert_eq!(read.entries, [insert(1), complete(1)], "cut at {cut}");
            assert!(read.stopped.is_some(), "cut at {cut}");
        }
        assert_eq!(read_segment(&bytes[..whole]).entries.len(), 2);
    }

    #[test]
    fn a_flipped_bit_stops_reading_at_its_frame() {
        let mut bytes = Vec::new();
        insert(1).encode(&mut bytes);
        let second = bytes.len();
        insert(2).encode(&mut bytes);
        insert(3).encode(&mut bytes);
        bytes[second + 20] ^= 0x01;
        let read = read_segment(&bytes);
        assert_eq!(read.entries, [insert(1)]);
        assert!(read.stopped.unwrap().contains("checksum"));
    }

    #[test]
    fn garbage_never_panics() {
        for bytes in [
            &b""[..],
            b"\xff\xff\xff\xff\0\0\0\0",
            b"\x02\0\0\0\0\0\0\0{}",
            b"\x01",
            &[0u8; 64],
        ] {
            let _ = read_segment(bytes);
        }
        // A whole frame whose JSON is not an entry is skipped, not fatal.
        let payload = br#"{"op":"upsert"}"#;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        bytes.extend_from_slice(payload);
        insert(9).encode(&mut bytes);
        assert_eq!(read_segment(&bytes).entries, [insert(9)]);
    }

    /// A write that fails (here: `/dev/full`, ENOSPC) is reported, and when
    /// its partial frame cannot be cut off the next append moves to a new
    /// segment, so recovery never stops in front of later entries.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_write_never_hides_later_entries() {
        let dir =
            std::env::temp_dir().join(format!("thingcall-journal-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let j = Journal::create(&dir, None).unwrap();
        lock(&j.inner).file = OpenOptions::new().append(true).open("/dev/full").unwrap();
        let e = j
            .append(Queued {
                entry: insert(1),
                done: None,
            })
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28), "{e}"); // ENOSPC
        assert!(lock(&j.inner).torn, "/dev/full cannot be truncated");
        assert!(j.take().0.is_empty(), "a failed entry is not queued");
        j.append(Queued {
            entry: insert(2),
            done: None,
        })
        .unwrap();
        assert_eq!(segments(&dir).unwrap(), [0, 1]);
        let read = read_segment(&std::fs::read(segment_path(&dir, 1)).unwrap());
        assert_eq!(read.entries, [insert(2)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn segments_rotate_and_release() {
        let dir = std::env::temp_dir().join(format!("thingcall-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let j = Journal::create(&dir, Some(4)).unwrap();
        assert_eq!(segments(&dir).unwrap(), [5]);
        assert!(
            j.append(Queued {
                entry: insert(1),
                done: None
            })
            .unwrap()
        );
        assert!(
            !j.append(Queued {
                entry: complete(1),
                done: None
            })
            .unwrap()
        );
        lock(&j.inner).len = SEGMENT_LIMIT;
        j.append(Queued {
            entry: insert(2),
            done: None,
        })
        .unwrap();
        assert_eq!(segments(&dir).unwrap(), [5, 6]);
        let (taken, seq) = j.take();
        assert_eq!(taken.len(), 3);
        assert_eq!(seq, 6);
        let first = read_segment(&std::fs::read(segment_path(&dir, 5)).unwrap());
        assert_eq!(first.entries, [insert(1), complete(1)]);
        j.release(5..seq);
        assert_eq!(segments(&dir).unwrap(), [6]);
        j.remove_current();
        assert!(segments(&dir).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Entries journaled by earlier releases: an outcome without a device,
    /// and the old stored forms of the platform's outcomes.
    #[test]
    fn entries_of_earlier_releases_decode() {
        let old =
            br#"{"op":"complete","messageId":"1700000000000000001","output":null,"code":"9201"}"#;
        assert_eq!(
            Entry::decode(old),
            Ok(Entry::Complete(Completion {
                message_id: MessageId::from_u64(1_700_000_000_000_000_001),
                iot_id: None,
                output: None,
                outcome: Outcome::NotDelivered,
            }))
        );
        let bad_id = br#"{"op":"complete","messageId":"12a","output":null,"code":"200"}"#;
        assert!(Entry::decode(bad_id).is_err());
    }
}
