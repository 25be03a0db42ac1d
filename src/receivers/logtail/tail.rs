//! The tailer: finds files by glob, knows them by fingerprint, reads whole records from
//! them and keeps track of what was sent and delivered. Synchronous and single-threaded:
//! the receiver runs it on a thread of its own.

use super::checkpoint::{Checkpoint, FileCheckpoint, Fingerprint, Ranges};
use super::parse::{parse_record, Redactor};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use regex_lite::Regex;
use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Settings {
    pub include: Vec<glob::Pattern>,
    pub exclude: Vec<glob::Pattern>,
    pub start_at_end: bool,
    pub fingerprint_bytes: usize,
    pub max_line_bytes: usize,
    pub multiline_start: Option<Regex>,
    pub redactor: Redactor,
    /// A file gone from the globs is closed once it has been idle this long.
    pub close_after_idle: Duration,
    /// A closed file's checkpoint is kept this long, in case it comes back.
    pub forget_after: Duration,
}

/// Part of a batch: the records of `file` between `start` and `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub file: u64,
    pub start: u64,
    pub end: u64,
}

/// Records read in one pass, waiting to be sent as one batch.
#[derive(Default)]
pub struct Outbox {
    pub records: Vec<LogRecord>,
    pub segments: Vec<Segment>,
    /// Bytes of the files these records came from.
    pub bytes: usize,
    pub truncated_lines: u64,
}

impl Outbox {
    fn push(&mut self, rec: LogRecord, seg: Segment) {
        self.records.push(rec);
        self.bytes += (seg.end - seg.start) as usize;
        match self.segments.last_mut() {
            Some(last) if last.file == seg.file && last.end == seg.start => last.end = seg.end,
            _ => self.segments.push(seg),
        }
    }
}

struct PendingRecord {
    start: u64,
    end: u64,
    bytes: Vec<u8>,
    truncated: bool,
}

struct Tracked {
    key: u64,
    /// The file's stable identity in record ids (`log.record.uid`): chosen when the
    /// file is first seen, kept in the checkpoint, which is saved before the file is read.
    id: u64,
    /// Whether the checkpoint on disk knows this file (and its `id`): only then is it read.
    saved: bool,
    fp: Fingerprint,
    /// The bytes `fp` was taken of (not kept across restarts): a file that is still
    /// a strict beginning of them is a copy in progress, not a new file.
    head: Vec<u8>,
    path: PathBuf,
    name: String,
    dev: u64,
    ino: u64,
    file: Option<File>,
    ranges: Ranges,
    /// Next byte to read.
    read_at: u64,
    /// Start of the line being read (everything before it was emitted or is pending).
    line_start: u64,
    /// The beginning of a line not yet complete, at most `max_line_bytes`.
    carry: Vec<u8>,
    /// The line in `carry` is longer than the limit; the rest is skipped to its newline.
    overflow: bool,
    pending: Option<PendingRecord>,
    eof: bool,
    seen: bool,
    last_seen: Instant,
    idle_since: Option<Instant>,
    size_at_poll: u64,
}

impl Tracked {
    fn new(
        key: u64,
        fp: Fingerprint,
        path: PathBuf,
        md: &std::fs::Metadata,
        f: File,
        at: u64,
    ) -> Tracked {
        Tracked {
            key,
            id: new_file_id(key, &fp),
            saved: false,
            fp,
            head: Vec::new(),
            name: file_name(&path),
            path,
            dev: md.dev(),
            ino: md.ino(),
            file: Some(f),
            ranges: Ranges::starting_at(at, &[]),
            read_at: at,
            line_start: at,
            carry: Vec::new(),
            overflow: false,
            pending: None,
            eof: false,
            seen: true,
            last_seen: Instant::now(),
            idle_since: None,
            size_at_poll: md.len(),
        }
    }

    /// Reading starts again at `pos`, a record boundary; what was half read is dropped.
    fn rewind(&mut self, pos: u64) {
        self.read_at = pos;
        self.line_start = pos;
        self.carry.clear();
        self.overflow = false;
        self.pending = None;
        self.eof = false;
    }

    /// The file at our descriptor no longer holds what we were reading (truncated or
    /// replaced): let go of it; its rest may turn up under another name (a copy).
    fn detach(&mut self) {
        let pos = self.pending.as_ref().map_or(self.line_start, |p| p.start);
        self.rewind(pos);
        self.file = None;
    }
}

/// An id no other file of this receiver has had: the fingerprint mixed with the clock.
fn new_file_id(key: u64, fp: &Fingerprint) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let mut x = fp.hash ^ nanos.rotate_left(17) ^ key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64's finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Counts for health and self-telemetry.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub truncations: u64,
    pub opened: u64,
    pub closed: u64,
}

pub struct Tailer {
    s: Settings,
    files: Vec<Tracked>,
    next_key: u64,
    buf: Vec<u8>,
    /// Whether the checkpoint changed since it was last taken.
    pub dirty: bool,
    pub stats: Stats,
}

const CHUNK: usize = 256 * 1024;

impl Tailer {
    pub fn new(s: Settings, restored: Option<Checkpoint>) -> Tailer {
        let mut t = Tailer {
            s,
            files: Vec::new(),
            next_key: 1,
            buf: vec![0; CHUNK],
            dirty: false,
            stats: Stats::default(),
        };
        for c in restored.map(|c| c.files).unwrap_or_default() {
            let key = t.next_key;
            t.next_key += 1;
            let path = PathBuf::from(&c.path);
            t.files.push(Tracked {
                key,
                // Checkpoints written before ids existed: the fingerprint stands in.
                id: if c.id != 0 { c.id } else { c.fingerprint.hash },
                saved: true,
                fp: c.fingerprint,
                head: Vec::new(),
                name: file_name(&path),
                path,
                dev: c.dev,
                ino: c.ino,
                file: None,
                ranges: Ranges::starting_at(c.committed, &c.done),
                read_at: c.committed,
                line_start: c.committed,
                carry: Vec::new(),
                overflow: false,
                pending: None,
                eof: false,
                seen: false,
                last_seen: Instant::now(),
                idle_since: None,
                size_at_poll: 0,
            });
        }
        t
    }

    pub fn open_files(&self) -> usize {
        self.files.iter().filter(|t| t.file.is_some()).count()
    }

    pub fn known_files(&self) -> usize {
        self.files.len()
    }

    pub fn checkpoint(&mut self) -> Checkpoint {
        self.dirty = false;
        Checkpoint {
            version: 1,
            files: self
                .files
                .iter()
                .map(|t| FileCheckpoint {
                    id: t.id,
                    fingerprint: t.fp,
                    path: t.path.to_string_lossy().into_owned(),
                    dev: t.dev,
                    ino: t.ino,
                    committed: t.ranges.committed,
                    done: t.ranges.done(),
                })
                .collect(),
        }
    }

    /// The checkpoint last taken is on disk: every file in it may be read.
    pub fn saved(&mut self) {
        for t in &mut self.files {
            t.saved = true;
        }
    }

    fn list(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for p in &self.s.include {
            let Ok(paths) = glob::glob(p.as_str()) else {
                continue;
            };
            for path in paths.flatten() {
                if self.s.exclude.iter().any(|x| x.matches_path(&path)) {
                    continue;
                }
                if !out.contains(&path) {
                    out.push(path);
                }
            }
        }
        out
    }

    fn prefix(&self, f: &File, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        let mut n = 0;
        while n < len {
            match f.read_at(&mut b[n..], n as u64) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        b.truncate(n);
        b
    }

    /// Finds new, rotated, truncated and vanished files. `first`: the very first poll
    /// of a receiver that has no checkpoint yet (where `start_at = "end"` applies).
    pub fn poll(&mut self, first: bool) {
        let now = Instant::now();
        for t in &mut self.files {
            t.seen = false;
        }
        let fp_len = self.s.fingerprint_bytes;
        let mut unmatched = Vec::new();
        for path in self.list() {
            let Ok(md) = std::fs::metadata(&path) else {
                continue;
            };
            if !md.is_file() || md.len() == 0 {
                continue;
            }
            // The same inode still open: confirm by content (it may have been truncated).
            let same_inode = self.files.iter().position(|t| {
                t.file.is_some() && !t.seen && t.dev == md.dev() && t.ino == md.ino()
            });
            if let Some(i) = same_inode {
                let prefix = self.prefix(self.files[i].file.as_ref().expect("open"), fp_len);
                let t = &mut self.files[i];
                if t.fp.matches(&prefix) && md.len() >= t.line_start {
                    t.seen = true;
                    t.last_seen = now;
                    if t.path != path {
                        t.name = file_name(&path);
                        t.path = path;
                        self.dirty = true;
                    }
                    if prefix.len() > t.fp.len as usize {
                        t.fp = Fingerprint::of(&prefix);
                        self.dirty = true;
                    }
                    if prefix.len() > t.head.len() {
                        t.head = prefix;
                    }
                    continue;
                }
                tracing::debug!(path = %t.path.display(), "logtail: file truncated or replaced");
                t.detach();
                self.stats.truncations += 1;
                self.stats.closed += 1;
            }
            unmatched.push((path, md));
        }
        for (path, _) in unmatched {
            let Ok(f) = File::open(&path) else {
                continue;
            };
            let Ok(md) = f.metadata() else {
                continue;
            };
            let prefix = self.prefix(&f, fp_len);
            if prefix.is_empty() {
                continue;
            }
            // A known file under a new name (renamed while we were down, or the copy a
            // copy-truncate rotation made): prefer the one the inode hints at.
            let candidates: Vec<usize> = (0..self.files.len())
                .filter(|&i| self.files[i].fp.matches(&prefix))
                .collect();
            if candidates.is_empty()
                && self
                    .files
                    .iter()
                    .any(|t| prefix.len() < t.fp.len as usize && t.head.starts_with(&prefix))
            {
                // Still a strict beginning of a known file: a copy being written.
                // Decide when it has grown past the fingerprint.
                continue;
            }
            if candidates
                .iter()
                .any(|&i| self.files[i].seen || self.files[i].file.is_some())
            {
                // A copy of a file we are reading under its own name: read it once.
                continue;
            }
            let pick = candidates
                .iter()
                .copied()
                .find(|&i| self.files[i].dev == md.dev() && self.files[i].ino == md.ino())
                .or_else(|| {
                    candidates
                        .iter()
                        .copied()
                        .max_by_key(|&i| self.files[i].ranges.committed)
                });
            if let Some(i) = pick {
                let t = &mut self.files[i];
                if md.len() >= t.line_start {
                    t.file = Some(f);
                    t.dev = md.dev();
                    t.ino = md.ino();
                    t.name = file_name(&path);
                    t.path = path;
                    t.seen = true;
                    t.last_seen = now;
                    t.eof = false;
                    t.idle_since = None;
                    if prefix.len() > t.fp.len as usize {
                        t.fp = Fingerprint::of(&prefix);
                    }
                    if prefix.len() > t.head.len() {
                        t.head = prefix;
                    }
                    tracing::debug!(path = %t.path.display(), at = t.line_start, "logtail: known file under a new name");
                    self.stats.opened += 1;
                    self.dirty = true;
                    continue;
                }
            }
            let at = if first && self.s.start_at_end {
                md.len()
            } else {
                0
            };
            let key = self.next_key;
            self.next_key += 1;
            tracing::debug!(path = %path.display(), at, "logtail: new file");
            let mut t = Tracked::new(key, Fingerprint::of(&prefix), path, &md, f, at);
            t.head = prefix;
            self.files.push(t);
            self.stats.opened += 1;
            self.dirty = true;
        }
        // Files gone from the globs (renamed away, deleted) are read to their end, then
        // closed once idle and settled; their checkpoints are kept a while in case they
        // come back, then forgotten.
        let close_after = self.s.close_after_idle;
        let mut closed = 0;
        for t in &mut self.files {
            let Some(f) = &t.file else {
                continue;
            };
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            let grew = size != t.size_at_poll;
            t.size_at_poll = size;
            if grew || !t.eof {
                t.idle_since = None;
                t.eof = false;
                continue;
            }
            let idle = *t.idle_since.get_or_insert(now);
            if t.seen || now.duration_since(idle) < close_after {
                continue;
            }
            if !t.ranges.in_flight() && t.carry.is_empty() && t.pending.is_none() {
                t.file = None;
                closed += 1;
            }
        }
        self.stats.closed += closed;
        let forget = self.s.forget_after;
        let before = self.files.len();
        self.files
            .retain(|t| t.file.is_some() || now.duration_since(t.last_seen) < forget);
        if self.files.len() != before {
            self.dirty = true;
        }
    }

    /// Whether some open file may have data not read yet.
    pub fn has_work(&self) -> bool {
        self.files
            .iter()
            .any(|t| t.file.is_some() && !t.eof && t.saved)
    }

    /// Reads from every open file until each is at its end or `out` holds `max_bytes`,
    /// calling `between` after every chunk (to record deliveries while it reads).
    pub fn read(
        &mut self,
        out: &mut Outbox,
        max_bytes: usize,
        observed: u64,
        between: &mut dyn FnMut(&mut Tailer),
    ) {
        let mut buf = std::mem::take(&mut self.buf);
        for i in 0..self.files.len() {
            loop {
                if out.bytes >= max_bytes || i >= self.files.len() {
                    break;
                }
                let t = &self.files[i];
                if t.file.is_none() || t.eof || !t.saved {
                    break;
                }
                self.read_file(i, &mut buf, out, max_bytes, observed);
                between(self);
            }
        }
        self.buf = buf;
    }

    /// Emits what waits at the end of an idle file: a multiline record (its continuation
    /// would have come by now), and in a file gone from the globs a last line without
    /// its newline (its writer is done with it).
    pub fn flush_idle(&mut self, out: &mut Outbox, observed: u64) {
        for t in &mut self.files {
            if t.file.is_none() || !t.eof || t.idle_since.is_none() {
                continue;
            }
            if let Some(p) = t.pending.take() {
                emit(&self.s, t.key, t.id, &t.name, p, out, observed);
            }
            if !t.seen && !t.carry.is_empty() && t.read_at > t.line_start {
                let rec = PendingRecord {
                    start: t.line_start,
                    end: t.read_at,
                    bytes: std::mem::take(&mut t.carry),
                    truncated: t.overflow,
                };
                t.overflow = false;
                t.line_start = t.read_at;
                emit(&self.s, t.key, t.id, &t.name, rec, out, observed);
            }
        }
    }

    fn read_file(
        &mut self,
        i: usize,
        buf: &mut [u8],
        out: &mut Outbox,
        max_bytes: usize,
        observed: u64,
    ) {
        let s = &self.s;
        let t = &mut self.files[i];
        loop {
            if out.bytes >= max_bytes {
                return;
            }
            if t.carry.is_empty() && !t.overflow {
                if let Some(end) = t.ranges.skip_at(t.line_start) {
                    // Sent before (in flight, or delivered beyond a gap): not again.
                    if let Some(p) = t.pending.take() {
                        emit(s, t.key, t.id, &t.name, p, out, observed);
                    }
                    t.line_start = end;
                    t.read_at = end;
                    continue;
                }
            }
            let mut want = buf.len();
            if let Some(next) = t.ranges.next_start_after(t.line_start) {
                want = want.min(next.saturating_sub(t.read_at) as usize);
            }
            if want == 0 {
                // A sent range starts inside the line in hand: the file changed under us.
                t.carry.clear();
                t.overflow = false;
                t.line_start = t.read_at;
                continue;
            }
            let Some(f) = &t.file else { return };
            let n = f.read_at(&mut buf[..want], t.read_at).unwrap_or_default();
            if n == 0 {
                t.eof = true;
                return;
            }
            // Check the file is still the one we know: truncated and rewritten since the
            // last poll, these bytes would belong to a different file.
            let mut head = vec![0; t.fp.len as usize];
            let ok = f.read_exact_at(&mut head, 0).is_ok() && t.fp.matches(&head);
            if !ok {
                t.detach();
                self.stats.truncations += 1;
                self.stats.closed += 1;
                return;
            }
            let chunk_start = t.read_at;
            t.read_at += n as u64;
            let chunk = &buf[..n];
            let mut pos = 0;
            let one_chunk = true;
            while let Some(j) = memchr::memchr(b'\n', &chunk[pos..]) {
                let end = chunk_start + (pos + j + 1) as u64;
                let piece = &chunk[pos..pos + j + 1];
                // Borrowed from the chunk unless it began in an earlier one.
                let (line, truncated): (Cow<[u8]>, bool) = if t.carry.is_empty() && !t.overflow {
                    if piece.len() > s.max_line_bytes {
                        (Cow::Borrowed(&piece[..s.max_line_bytes]), true)
                    } else {
                        (Cow::Borrowed(piece), false)
                    }
                } else {
                    let room = s.max_line_bytes.saturating_sub(t.carry.len());
                    let over = t.overflow || piece.len() > room;
                    t.carry.extend_from_slice(&piece[..piece.len().min(room)]);
                    (Cow::Owned(std::mem::take(&mut t.carry)), over)
                };
                if truncated {
                    out.truncated_lines += 1;
                }
                line_done(s, t, line, truncated, end, out, observed);
                t.overflow = false;
                t.line_start = end;
                pos += j + 1;
            }
            let rest = &chunk[pos..];
            let room = s.max_line_bytes.saturating_sub(t.carry.len());
            if rest.len() > room {
                t.overflow = true;
            }
            t.carry.extend_from_slice(&rest[..rest.len().min(room)]);
            if one_chunk {
                return;
            }
        }
    }

    /// Applies the outcome of a batch.
    pub fn settle(&mut self, segments: &[Segment], delivered: bool) {
        for seg in segments {
            let Some(t) = self.files.iter_mut().find(|t| t.key == seg.file) else {
                continue;
            };
            if delivered {
                if t.ranges.delivered(seg.start) {
                    self.dirty = true;
                }
                if !t.ranges.done().is_empty() {
                    self.dirty = true;
                }
            } else {
                t.ranges.gave_up(seg.start);
                if seg.start < t.line_start
                    || t.pending.as_ref().is_some_and(|p| seg.start < p.start)
                {
                    t.rewind(seg.start);
                }
            }
        }
    }

    /// Records a delivery; unlike [`Tailer::settle`] it never moves a reading position,
    /// so it may run while a batch is being put together.
    pub fn delivered(&mut self, segments: &[Segment]) {
        self.settle(segments, true);
    }

    /// Registers the segments of a batch about to be sent.
    pub fn sent(&mut self, segments: &[Segment]) {
        for seg in segments {
            if let Some(t) = self.files.iter_mut().find(|t| t.key == seg.file) {
                t.ranges.sent(seg.start, seg.end);
            }
        }
    }

    pub fn in_flight(&self) -> bool {
        self.files.iter().any(|t| t.ranges.in_flight())
    }
}

/// A complete line: a record of its own, or part of a multiline record.
fn line_done(
    s: &Settings,
    t: &mut Tracked,
    line: Cow<[u8]>,
    truncated: bool,
    end: u64,
    out: &mut Outbox,
    observed: u64,
) {
    let start = t.line_start;
    let Some(re) = &s.multiline_start else {
        let seg = Segment {
            file: t.key,
            start,
            end,
        };
        emit_bytes(s, seg, t.id, &t.name, &line, truncated, out, observed);
        return;
    };
    let head = &line[..line.len().min(4096)];
    let is_start = re.is_match(&String::from_utf8_lossy(super::parse::strip_line_end(head)));
    match &mut t.pending {
        Some(p) if !is_start => {
            let room = s.max_line_bytes.saturating_sub(p.bytes.len());
            if line.len() > room {
                p.truncated = true;
            }
            let take = line.len().min(room);
            p.bytes.extend_from_slice(&line[..take]);
            p.truncated |= truncated;
            p.end = end;
        }
        _ => {
            if let Some(p) = t.pending.take() {
                emit(s, t.key, t.id, &t.name, p, out, observed);
            }
            t.pending = Some(PendingRecord {
                start,
                end,
                bytes: line.into_owned(),
                truncated,
            });
        }
    }
}

fn emit(
    s: &Settings,
    key: u64,
    id: u64,
    name: &str,
    p: PendingRecord,
    out: &mut Outbox,
    observed: u64,
) {
    let seg = Segment {
        file: key,
        start: p.start,
        end: p.end,
    };
    emit_bytes(s, seg, id, name, &p.bytes, p.truncated, out, observed);
}

#[allow(clippy::too_many_arguments)]
fn emit_bytes(
    s: &Settings,
    seg: Segment,
    id: u64,
    name: &str,
    bytes: &[u8],
    truncated: bool,
    out: &mut Outbox,
    observed: u64,
) {
    let mut rec = parse_record(bytes, truncated, observed, &s.redactor);
    let text = |v: String| {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        })
    };
    rec.attributes.push(KeyValue {
        key: "log.file.name".into(),
        value: text(name.to_owned()),
        ..Default::default()
    });
    rec.attributes.push(KeyValue {
        key: "log.record.uid".into(),
        value: text(record_uid(id, seg.start)),
        ..Default::default()
    });
    out.push(rec, seg);
}

/// A record's id (`log.record.uid`): its file's id and the offset it starts at, the same
/// however often the record is read, so a sink can drop a repeat.
pub fn record_uid(file_id: u64, offset: u64) -> String {
    format!("{file_id:016x}:{offset}")
}
