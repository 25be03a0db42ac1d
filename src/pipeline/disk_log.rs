//! The write-ahead log behind `sending_queue.storage = "disk"`: one per exporter, a
//! first-in first-out log of encoded batches in segment files, plus a log of marks that
//! says which batches were taken for sending and which are done.
//!
//! Layout of `<data_dir>/exporter/<id>/queue/`:
//! - `<first seq, 20 digits>.seg`: records appended one after another. A record is a
//!   40-byte header (magic, header CRC-32, sequence number, items, payload length,
//!   payload CRC-32, signal) and the payload (the OTLP export request as protobuf).
//!   A new segment is started when the current one passes `segment_size`, and at every
//!   start, so nothing is ever appended after a torn tail.
//! - `marks`: 16-byte marks (sequence number, kind, CRC-32): `started` when a batch is
//!   taken for sending, `done` when it was delivered or given up on. Marks are written
//!   without fsync: a process crash keeps them (they are in the page cache), a power
//!   loss can only forget some, which resends batches (duplicates), never loses one.
//!
//! A segment whose records are all done is deleted. On open, every segment is read and
//! checked: a record whose header or payload fails its checksum is skipped and reported
//! (`corrupt`), the scan resynchronises on the next valid header; an incomplete record
//! at the end of the newest segment is a write cut short by a crash (`torn`). Records not
//! marked done are pending, in sequence order; those marked `started` may have reached
//! the destination before the crash (`replayed`: possible duplicates).
//!
//! This type is synchronous and does no locking; [`crate::pipeline::sending`] owns it
//! behind a mutex and calls it from the blocking pool.

use crate::component::Signal;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: [u8; 4] = *b"TWQ1";
pub const HEADER: usize = 40;
const MARK: usize = 16;
const MARK_STARTED: u32 = 1;
const MARK_DONE: u32 = 2;
/// Rewrite the marks file once it holds this many bytes.
const MARKS_COMPACT_AT: u64 = 1 << 20;

/// Where one pending record lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub signal: Signal,
    pub items: u64,
    segment: u64,
    offset: u64,
    len: u32,
}

impl Entry {
    /// Bytes the record takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        HEADER as u64 + self.len as u64
    }
}

/// What opening the log found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Records left to send, oldest first.
    pub pending: Vec<Entry>,
    /// Of those, records that were taken for sending before: possibly delivered already.
    pub replayed: u64,
    /// The items in those records.
    pub replayed_items: u64,
    pub corrupt_records: u64,
    pub torn_records: u64,
    /// One line per skipped record or region, for the log and `/status`.
    pub problems: Vec<String>,
}

#[derive(Debug)]
pub enum AppendError {
    /// The log holds `max_size` bytes; it has room again once records are done.
    Full {
        used: u64,
        max: u64,
    },
    Io(io::Error),
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendError::Full { used, max } => write!(
                f,
                "disk queue full ({} of max_size {}); receivers push back until the exporter delivers",
                bytesize::ByteSize(*used),
                bytesize::ByteSize(*max)
            ),
            AppendError::Io(e) => write!(f, "writing the disk queue failed: {e}"),
        }
    }
}

#[derive(Debug)]
pub enum ReadError {
    /// The record changed on disk since it was written (a flipped bit).
    Corrupt(String),
    Io(io::Error),
}

struct Segment {
    path: PathBuf,
    bytes: u64,
    /// Records not yet done.
    live: u64,
    reader: Option<File>,
}

pub struct DiskLog {
    /// Held (flock) while the log is open.
    _lock: File,
    dir: PathBuf,
    segment_size: u64,
    max_size: u64,
    /// By first sequence number.
    segments: BTreeMap<u64, Segment>,
    /// The segment being appended to: its id and file.
    active: Option<(u64, File)>,
    next_seq: u64,
    total_bytes: u64,
    /// Bytes of records not yet done.
    live_bytes: u64,
    marks: File,
    marks_len: u64,
    /// The marks file is rewritten when it reaches this size: twice what the last
    /// rewrite kept, at least [`MARKS_COMPACT_AT`], so rewrites stay rare.
    compact_at: u64,
    /// Marks that must survive a compaction: started but not done, and done records in
    /// segments still on disk.
    started: BTreeSet<u64>,
    done: BTreeSet<u64>,
}

fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

fn signal_code(s: Signal) -> u8 {
    s.index() as u8
}

fn signal_of(code: u8) -> Option<Signal> {
    Signal::ALL.get(code as usize).copied()
}

fn segment_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// Encodes a record header for `payload`.
fn header(seq: u64, signal: Signal, items: u64, payload: &[u8]) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&MAGIC);
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..24].copy_from_slice(&items.to_le_bytes());
    h[24..28].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[28..32].copy_from_slice(&crc(&[payload]).to_le_bytes());
    h[32] = signal_code(signal);
    let hc = crc(&[&h[8..]]);
    h[4..8].copy_from_slice(&hc.to_le_bytes());
    h
}

struct Parsed {
    seq: u64,
    items: u64,
    len: u32,
    payload_crc: u32,
    signal: Signal,
}

/// A header at the start of `b`, if its magic and checksum hold.
fn parse_header(b: &[u8]) -> Option<Parsed> {
    if b.len() < HEADER || b[0..4] != MAGIC {
        return None;
    }
    let le32 = |r: std::ops::Range<usize>| u32::from_le_bytes(b[r].try_into().unwrap());
    let le64 = |r: std::ops::Range<usize>| u64::from_le_bytes(b[r].try_into().unwrap());
    if le32(4..8) != crc(&[&b[8..HEADER]]) {
        return None;
    }
    Some(Parsed {
        seq: le64(8..16),
        items: le64(16..24),
        len: le32(24..28),
        payload_crc: le32(28..32),
        signal: signal_of(b[32])?,
    })
}

fn mark(seq: u64, kind: u32) -> [u8; MARK] {
    let mut m = [0u8; MARK];
    m[0..8].copy_from_slice(&seq.to_le_bytes());
    m[8..12].copy_from_slice(&kind.to_le_bytes());
    let c = crc(&[&m[0..12]]);
    m[12..16].copy_from_slice(&c.to_le_bytes());
    m
}

impl DiskLog {
    /// Opens (creating) the log in `dir` and reads what a previous run left. Fails if
    /// another process has it open.
    pub fn open(dir: &Path, segment_size: u64, max_size: u64) -> io::Result<(DiskLog, Recovery)> {
        std::fs::create_dir_all(dir)?;
        let lock = lock(dir)?;
        let mut rec = Recovery::default();

        // Marks first: they say which records are done.
        let marks_path = dir.join("marks");
        let mut started = BTreeSet::new();
        let mut done = BTreeSet::new();
        let mut max_seq = 0u64;
        match std::fs::read(&marks_path) {
            Ok(b) => {
                for m in b.chunks(MARK) {
                    if m.len() < MARK {
                        break; // a mark cut short by a crash: its batch is simply not marked
                    }
                    let c = u32::from_le_bytes(m[12..16].try_into().unwrap());
                    if c != crc(&[&m[0..12]]) {
                        continue; // unreadable: the batch may be sent again, never lost
                    }
                    let seq = u64::from_le_bytes(m[0..8].try_into().unwrap());
                    match u32::from_le_bytes(m[8..12].try_into().unwrap()) {
                        MARK_STARTED => {
                            started.insert(seq);
                        }
                        MARK_DONE => {
                            done.insert(seq);
                        }
                        _ => {}
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }

        let mut ids: Vec<(u64, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
                continue;
            };
            if let Ok(id) = stem.parse::<u64>() {
                ids.push((id, e.path()));
            }
        }
        ids.sort();

        let mut segments = BTreeMap::new();
        let mut total_bytes = 0;
        let newest = ids.last().map(|(id, _)| *id);
        for (id, path) in ids {
            let buf = std::fs::read(&path)?;
            let name = segment_name(id);
            let mut live = 0;
            let mut pos = 0usize;
            while pos < buf.len() {
                let Some(h) = parse_header(&buf[pos..]) else {
                    // Resynchronise on the next header whose checksum holds.
                    let next = (pos + 1..buf.len().saturating_sub(HEADER - 1))
                        .find(|&p| buf[p..p + 4] == MAGIC && parse_header(&buf[p..]).is_some());
                    let end = next.unwrap_or(buf.len());
                    if next.is_none() && Some(id) == newest {
                        rec.torn_records += 1;
                        rec.problems.push(format!(
                            "skipped an incomplete record at the end of {name} ({} bytes at offset {pos}): a write cut short by a crash",
                            end - pos
                        ));
                    } else {
                        rec.corrupt_records += 1;
                        rec.problems.push(format!(
                            "skipped {} unreadable bytes in {name} at offset {pos} (header checksum mismatch)",
                            end - pos
                        ));
                    }
                    pos = end;
                    continue;
                };
                let start = pos + HEADER;
                let end = start + h.len as usize;
                if end > buf.len() {
                    if Some(id) == newest {
                        rec.torn_records += 1;
                        rec.problems.push(format!(
                            "skipped an incomplete record at the end of {name} (seq {}, {} of {} bytes): a write cut short by a crash",
                            h.seq,
                            buf.len() - pos,
                            HEADER + h.len as usize
                        ));
                    } else {
                        rec.corrupt_records += 1;
                        rec.problems.push(format!(
                            "skipped a truncated record in {name} (seq {})",
                            h.seq
                        ));
                    }
                    break;
                }
                if crc(&[&buf[start..end]]) != h.payload_crc {
                    rec.corrupt_records += 1;
                    rec.problems.push(format!(
                        "skipped a corrupted record in {name} (seq {}, {} items, offset {pos}): payload checksum mismatch",
                        h.seq, h.items
                    ));
                } else if h.seq <= max_seq {
                    // Records are written in sequence; one out of it was not written here.
                    rec.corrupt_records += 1;
                    rec.problems.push(format!(
                        "skipped a record out of sequence in {name} (seq {} after {max_seq})",
                        h.seq
                    ));
                } else if done.contains(&h.seq) {
                    max_seq = h.seq;
                } else {
                    max_seq = h.seq;
                    live += 1;
                    if started.contains(&h.seq) {
                        rec.replayed += 1;
                        rec.replayed_items += h.items;
                    }
                    rec.pending.push(Entry {
                        seq: h.seq,
                        signal: h.signal,
                        items: h.items,
                        segment: id,
                        offset: pos as u64,
                        len: h.len,
                    });
                }
                pos = end;
            }
            if live == 0 {
                std::fs::remove_file(&path)?;
                continue;
            }
            total_bytes += buf.len() as u64;
            segments.insert(
                id,
                Segment {
                    path,
                    bytes: buf.len() as u64,
                    live,
                    reader: None,
                },
            );
        }
        rec.pending.sort_by_key(|e| e.seq);

        // Keep only the marks of records still on disk, in a fresh file.
        let on_disk = |seq: &u64| {
            segments.range(..=*seq).next_back().is_some_and(|(id, _)| {
                segment_end(&segments, *id, max_seq.saturating_add(1)) > *seq
            })
        };
        let done: BTreeSet<u64> = done.iter().copied().filter(on_disk).collect();
        let started: BTreeSet<u64> = started
            .iter()
            .copied()
            .filter(|s| on_disk(s) && !done.contains(s))
            .collect();
        let (marks, marks_len) = write_marks(dir, &started, &done)?;
        let live_bytes = rec.pending.iter().map(Entry::disk_bytes).sum();
        let log = DiskLog {
            _lock: lock,
            dir: dir.to_owned(),
            segment_size: segment_size.max(1),
            max_size,
            segments,
            active: None,
            next_seq: max_seq.saturating_add(1),
            total_bytes,
            live_bytes,
            marks,
            marks_len,
            compact_at: (2 * marks_len).max(MARKS_COMPACT_AT),
            started,
            done,
        };
        Ok((log, rec))
    }

    /// Bytes of segments on disk.
    pub fn used_bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// Bytes of records waiting to be sent (or in flight).
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Appends a record; it is in the page cache when this returns (see [`Self::sync`]).
    /// Past `max_size` it is refused, unless the log is empty (so a record larger than
    /// the whole bound is never refused forever).
    pub fn append(
        &mut self,
        signal: Signal,
        items: u64,
        payload: &[u8],
    ) -> Result<Entry, AppendError> {
        let need = (HEADER + payload.len()) as u64;
        if self.total_bytes > 0 && self.total_bytes + need > self.max_size {
            return Err(AppendError::Full {
                used: self.total_bytes,
                max: self.max_size,
            });
        }
        if payload.len() > u32::MAX as usize {
            return Err(AppendError::Io(io::Error::other("batch larger than 4 GiB")));
        }
        let seq = self.next_seq;
        if seq == u64::MAX {
            return Err(AppendError::Io(io::Error::other(
                "sequence numbers exhausted",
            )));
        }
        let id = match &self.active {
            Some((id, _)) if self.segments[id].bytes < self.segment_size => *id,
            _ => self.roll(seq).map_err(AppendError::Io)?,
        };
        let seg = self
            .segments
            .get_mut(&id)
            .expect("active segment is listed");
        let (_, file) = self.active.as_mut().expect("rolled");
        let offset = seg.bytes;
        let h = header(seq, signal, items, payload);
        let written = file
            .write_all(&h)
            .and_then(|_| file.write_all(payload))
            .and_then(|_| file.flush());
        if let Err(e) = written {
            // Cut what got written, so the next append starts on a record boundary.
            let _ = file.set_len(offset);
            return Err(AppendError::Io(e));
        }
        seg.bytes += need;
        seg.live += 1;
        self.total_bytes += need;
        self.live_bytes += need;
        self.next_seq += 1;
        Ok(Entry {
            seq,
            signal,
            items,
            segment: id,
            offset,
            len: payload.len() as u32,
        })
    }

    /// Starts a new segment whose first record is `seq`; the previous one is synced.
    fn roll(&mut self, seq: u64) -> io::Result<u64> {
        if let Some((old, f)) = self.active.take() {
            f.sync_data()?;
            self.drop_if_done(old);
        }
        let path = self.dir.join(segment_name(seq));
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        // Make the new file's name durable.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.segments.insert(
            seq,
            Segment {
                path,
                bytes: 0,
                live: 0,
                reader: None,
            },
        );
        self.active = Some((seq, f));
        Ok(seq)
    }

    /// A handle on the segment being written, to fsync without holding the log.
    pub fn sync_handle(&self) -> Option<io::Result<File>> {
        self.active.as_ref().map(|(_, f)| f.try_clone())
    }

    /// Reads a pending record back, checking it again.
    pub fn read(&mut self, e: &Entry) -> Result<Bytes, ReadError> {
        let seg = self
            .segments
            .get_mut(&e.segment)
            .ok_or_else(|| ReadError::Io(io::Error::other("segment already removed")))?;
        if seg.reader.is_none() {
            seg.reader = Some(File::open(&seg.path).map_err(ReadError::Io)?);
        }
        let f = seg.reader.as_ref().expect("opened");
        let mut buf = vec![0u8; HEADER + e.len as usize];
        f.read_exact_at(&mut buf, e.offset).map_err(ReadError::Io)?;
        let ok = parse_header(&buf).is_some_and(|h| {
            h.seq == e.seq && h.len == e.len && crc(&[&buf[HEADER..]]) == h.payload_crc
        });
        if !ok {
            return Err(ReadError::Corrupt(format!(
                "record {} in {} no longer matches its checksum",
                e.seq,
                segment_name(e.segment)
            )));
        }
        let mut b = Bytes::from(buf);
        Ok(b.split_off(HEADER))
    }

    /// The record was taken for sending.
    pub fn mark_started(&mut self, seq: u64) -> io::Result<()> {
        self.started.insert(seq);
        self.write_mark(seq, MARK_STARTED)
    }

    /// The record was delivered or given up on: it will not be sent again. Its segment
    /// is deleted once all of its records are done. True when a segment was deleted.
    pub fn mark_done(&mut self, e: &Entry) -> io::Result<bool> {
        self.started.remove(&e.seq);
        self.done.insert(e.seq);
        self.write_mark(e.seq, MARK_DONE)?;
        if let Some(seg) = self.segments.get_mut(&e.segment) {
            seg.live = seg.live.saturating_sub(1);
            self.live_bytes = self.live_bytes.saturating_sub(e.disk_bytes());
        }
        Ok(self.drop_if_done(e.segment))
    }

    fn drop_if_done(&mut self, id: u64) -> bool {
        let Some(seg) = self.segments.get(&id) else {
            return false;
        };
        // The segment being written stays until it is full, even when all of it is
        // done: deleting and creating a file per batch would cost a sync each.
        if seg.live > 0 || self.active.as_ref().is_some_and(|(a, _)| *a == id) {
            return false;
        }
        let end = segment_end(&self.segments, id, self.next_seq);
        let seg = self.segments.remove(&id).expect("present");
        if let Err(e) = std::fs::remove_file(&seg.path) {
            tracing::warn!(path = %seg.path.display(), error = %e, "could not delete a delivered disk queue segment");
        }
        self.total_bytes -= seg.bytes;
        // Its records' marks are of no more use.
        let mut above = self.done.split_off(&id);
        let mut rest = above.split_off(&end);
        self.done.append(&mut rest);
        above.clear();
        true
    }

    fn write_mark(&mut self, seq: u64, kind: u32) -> io::Result<()> {
        if self.marks_len >= self.compact_at {
            let (f, len) = write_marks(&self.dir, &self.started, &self.done)?;
            self.marks = f;
            self.marks_len = len;
            self.compact_at = (2 * len).max(MARKS_COMPACT_AT);
        }
        self.marks.write_all(&mark(seq, kind))?;
        self.marks_len += MARK as u64;
        Ok(())
    }

    /// Makes everything appended so far durable (fdatasync of the active segment).
    pub fn sync(&self) -> io::Result<()> {
        match &self.active {
            Some((_, f)) => f.sync_data(),
            None => Ok(()),
        }
    }
}

/// Takes the log's lock file, so that two processes never write one log.
fn lock(dir: &Path) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)?;
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(io::Error::other(format!(
            "it is in use by another process (pid {}); each collector needs its own data_dir",
            holder.trim()
        )));
    }
    f.set_len(0)?;
    write!(f, "{}", std::process::id())?;
    Ok(f)
}

/// One past the last sequence number segment `id` can hold: the next segment's first.
fn segment_end(segments: &BTreeMap<u64, Segment>, id: u64, next_seq: u64) -> u64 {
    segments
        .range(id + 1..)
        .next()
        .map_or(next_seq, |(next, _)| *next)
}

/// Writes a marks file holding exactly `started` and `done`, replacing the old one
/// atomically, and returns it opened for appending.
fn write_marks(
    dir: &Path,
    started: &BTreeSet<u64>,
    done: &BTreeSet<u64>,
) -> io::Result<(File, u64)> {
    let tmp = dir.join("marks.tmp");
    let mut buf = Vec::with_capacity((started.len() + done.len()) * MARK);
    for s in started {
        buf.extend_from_slice(&mark(*s, MARK_STARTED));
    }
    for s in done {
        buf.extend_from_slice(&mark(*s, MARK_DONE));
    }
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_data()?;
    }
    let path = dir.join("marks");
    std::fs::rename(&tmp, &path)?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    let f = OpenOptions::new().append(true).open(&path)?;
    Ok((f, buf.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn payload(i: u64) -> Vec<u8> {
        format!("batch number {i} ").repeat(10).into_bytes()
    }

    fn fill(log: &mut DiskLog, n: u64) -> Vec<Entry> {
        (0..n)
            .map(|i| log.append(Signal::Traces, i + 1, &payload(i)).unwrap())
            .collect()
    }

    #[test]
    fn records_come_back_in_order_across_reopen_and_done_ones_stay_done() {
        let d = dir();
        let (mut log, rec) = DiskLog::open(d.path(), 1000, 1 << 30).unwrap();
        assert!(rec.pending.is_empty());
        let entries = fill(&mut log, 20);
        for e in &entries[..5] {
            log.mark_started(e.seq).unwrap();
            log.mark_done(e).unwrap();
        }
        log.mark_started(entries[5].seq).unwrap();
        assert_eq!(log.read(&entries[7]).unwrap(), payload(7));
        drop(log);
        let (mut log, rec) = DiskLog::open(d.path(), 1000, 1 << 30).unwrap();
        let seqs: Vec<u64> = rec.pending.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (6..=20).collect::<Vec<_>>());
        assert_eq!(
            rec.replayed, 1,
            "the one taken for sending may be a duplicate"
        );
        assert_eq!((rec.corrupt_records, rec.torn_records), (0, 0));
        for (i, e) in rec.pending.iter().enumerate() {
            assert_eq!(log.read(e).unwrap(), payload(i as u64 + 5));
            assert_eq!(e.items, i as u64 + 6);
        }
        // New records follow the old ones.
        let next = log.append(Signal::Logs, 1, b"new").unwrap();
        assert_eq!(next.seq, 21);
    }

    #[test]
    fn a_log_is_opened_by_one_owner_at_a_time() {
        let d = dir();
        let (log, _) = DiskLog::open(d.path(), 1000, 1 << 30).unwrap();
        // flock locks belong to the open file description: a second open is refused
        // even in the same process.
        let err = DiskLog::open(d.path(), 1000, 1 << 30)
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
        drop(log);
        DiskLog::open(d.path(), 1000, 1 << 30).unwrap();
    }

    #[test]
    fn done_segments_are_deleted_and_free_their_bytes() {
        let d = dir();
        let (mut log, _) = DiskLog::open(d.path(), 500, 1 << 30).unwrap();
        let entries = fill(&mut log, 30);
        let files = || std::fs::read_dir(d.path()).unwrap().count();
        let before = files();
        assert!(before > 3, "{before} files");
        let used = log.used_bytes();
        for e in &entries {
            log.mark_done(e).unwrap();
        }
        // Only the active segment, the marks and the lock remain.
        assert_eq!(files(), 3);
        assert!(log.used_bytes() < used / 3);
        assert_eq!(log.live_bytes(), 0);
        drop(log);
        let (log, rec) = DiskLog::open(d.path(), 500, 1 << 30).unwrap();
        assert!(rec.pending.is_empty());
        assert_eq!(log.used_bytes(), 0);
        assert_eq!(log.next_seq, 31, "sequence numbers are never reused");
    }

    #[test]
    fn max_size_refuses_until_records_are_done() {
        let d = dir();
        let (mut log, _) = DiskLog::open(d.path(), 400, 2000).unwrap();
        let mut entries = Vec::new();
        let err = loop {
            match log.append(Signal::Traces, 1, &payload(1)) {
                Ok(e) => entries.push(e),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, AppendError::Full { .. }), "{err}");
        assert!(err.to_string().contains("max_size"), "{err}");
        assert!(log.used_bytes() <= 2000);
        for e in &entries[..entries.len() / 2] {
            log.mark_done(e).unwrap();
        }
        log.append(Signal::Traces, 1, &payload(1)).unwrap();
        // A record larger than the bound goes in when the log is empty.
        let d2 = dir();
        let (mut small, _) = DiskLog::open(d2.path(), 400, 100).unwrap();
        small.append(Signal::Traces, 1, &[7u8; 1000]).unwrap();
        assert!(small.append(Signal::Traces, 1, b"x").is_err());
    }

    #[test]
    fn a_torn_tail_and_a_flipped_bit_are_skipped_and_reported() {
        let d = dir();
        let (mut log, _) = DiskLog::open(d.path(), 1 << 20, 1 << 30).unwrap();
        let entries = fill(&mut log, 10);
        drop(log);
        let seg = d.path().join(segment_name(1));
        let mut bytes = std::fs::read(&seg).unwrap();
        // A bit flipped in record 4's payload and one in record 7's header.
        let e4 = entries[3];
        bytes[(e4.offset as usize) + HEADER + 5] ^= 0x10;
        let e7 = entries[6];
        bytes[(e7.offset as usize) + 20] ^= 0x01;
        // The last record cut short.
        let e10 = entries[9];
        bytes.truncate(e10.offset as usize + HEADER + 3);
        std::fs::write(&seg, &bytes).unwrap();

        let (mut log, rec) = DiskLog::open(d.path(), 1 << 20, 1 << 30).unwrap();
        let seqs: Vec<u64> = rec.pending.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 5, 6, 8, 9]);
        assert_eq!(rec.corrupt_records, 2, "{:?}", rec.problems);
        assert_eq!(rec.torn_records, 1, "{:?}", rec.problems);
        assert!(
            rec.problems.iter().any(|p| p.contains("seq 4")),
            "{:?}",
            rec.problems
        );
        for e in &rec.pending {
            assert_eq!(log.read(e).unwrap(), payload(e.seq - 1));
        }
        // The log goes on from a new segment.
        let next = log.append(Signal::Traces, 1, b"after").unwrap();
        assert_eq!(next.seq, 10, "the torn record never counted");
        assert_eq!(log.read(&next).unwrap(), &b"after"[..]);
    }

    #[test]
    fn a_record_corrupted_after_start_is_refused_on_read() {
        let d = dir();
        let (mut log, _) = DiskLog::open(d.path(), 1 << 20, 1 << 30).unwrap();
        let entries = fill(&mut log, 3);
        log.sync().unwrap();
        let seg = d.path().join(segment_name(1));
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[entries[1].offset as usize + HEADER] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        assert!(matches!(log.read(&entries[1]), Err(ReadError::Corrupt(_))));
        assert_eq!(log.read(&entries[2]).unwrap(), payload(2));
    }

    #[test]
    fn marks_are_compacted_without_losing_state() {
        let d = dir();
        let (mut log, _) = DiskLog::open(d.path(), 4096, 1 << 40).unwrap();
        let n = 2 * MARKS_COMPACT_AT / MARK as u64 + 10;
        let mut keep = Vec::new();
        for i in 0..n {
            let e = log.append(Signal::Logs, 1, b"x").unwrap();
            log.mark_started(e.seq).unwrap();
            if i % 1000 == 0 {
                keep.push(e.seq);
            } else {
                log.mark_done(&e).unwrap();
            }
        }
        // Rewritten along the way: well under the 2 marks written per record.
        let on_disk = std::fs::metadata(d.path().join("marks")).unwrap().len();
        assert!(
            on_disk <= MARKS_COMPACT_AT + MARK as u64,
            "{on_disk} bytes of marks"
        );
        drop(log);
        let (_, rec) = DiskLog::open(d.path(), 4096, 1 << 40).unwrap();
        let seqs: Vec<u64> = rec.pending.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, keep);
        assert_eq!(rec.replayed, keep.len() as u64);
    }
}
