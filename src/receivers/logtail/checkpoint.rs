//! What is known about one file across restarts: its fingerprint, and which of its bytes
//! were delivered.
//!
//! Delivery is tracked as ranges of whole records, not as one offset, because batches
//! are acknowledged out of order and an exporter may give up on one batch while a later
//! one is delivered. `committed` is the end of the delivered prefix; `done` holds the
//! delivered ranges beyond it. A restart re-reads from `committed` and skips the `done`
//! ranges, so nothing undelivered is lost and nothing delivered is repeated.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A hash of a file's first `len` bytes (FNV-1a, stable across versions and platforms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u32,
    pub hash: u64,
}

impl Fingerprint {
    pub fn of(prefix: &[u8]) -> Fingerprint {
        Fingerprint {
            len: prefix.len() as u32,
            hash: fnv1a(prefix),
        }
    }

    /// Whether a file starting with `prefix` is the file this fingerprint was taken of
    /// (possibly grown since).
    pub fn matches(&self, prefix: &[u8]) -> bool {
        self.len > 0
            && prefix.len() >= self.len as usize
            && fnv1a(&prefix[..self.len as usize]) == self.hash
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeState {
    InFlight,
    Done,
}

/// Record ranges of one file that were sent: in flight or delivered.
#[derive(Debug, Clone, Default)]
pub struct Ranges {
    /// Everything before this offset was delivered.
    pub committed: u64,
    /// start → (end, state), all at or after `committed`.
    map: BTreeMap<u64, (u64, RangeState)>,
}

impl Ranges {
    pub fn starting_at(committed: u64, done: &[(u64, u64)]) -> Ranges {
        let mut r = Ranges {
            committed,
            map: BTreeMap::new(),
        };
        for &(s, e) in done {
            if s >= committed && e > s {
                r.map.insert(s, (e, RangeState::Done));
            }
        }
        r.advance();
        r
    }

    pub fn sent(&mut self, start: u64, end: u64) {
        if end > start {
            self.map.insert(start, (end, RangeState::InFlight));
        }
    }

    /// Marks a sent range delivered; returns whether `committed` moved.
    pub fn delivered(&mut self, start: u64) -> bool {
        if let Some(r) = self.map.get_mut(&start) {
            r.1 = RangeState::Done;
        }
        self.advance()
    }

    /// Forgets a sent range that was not delivered: it will be read again.
    pub fn gave_up(&mut self, start: u64) {
        self.map.remove(&start);
    }

    fn advance(&mut self) -> bool {
        let before = self.committed;
        while let Some(e) = self.map.first_entry() {
            let (&s, &(end, state)) = (e.key(), e.get());
            if s <= self.committed && state == RangeState::Done {
                self.committed = self.committed.max(end);
                e.remove();
            } else {
                break;
            }
        }
        self.committed != before
    }

    /// Where a reader at `pos` must jump to, if `pos` starts a range already sent.
    pub fn skip_at(&self, pos: u64) -> Option<u64> {
        self.map.get(&pos).map(|r| r.0)
    }

    /// The first sent range starting after `pos`: a reader must stop there to skip it.
    pub fn next_start_after(&self, pos: u64) -> Option<u64> {
        self.map.range(pos + 1..).next().map(|(s, _)| *s)
    }

    pub fn in_flight(&self) -> bool {
        self.map.values().any(|r| r.1 == RangeState::InFlight)
    }

    pub fn done(&self) -> Vec<(u64, u64)> {
        self.map
            .iter()
            .filter(|(_, r)| r.1 == RangeState::Done)
            .map(|(s, r)| (*s, r.0))
            .collect()
    }
}

/// One file in the checkpoint file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileCheckpoint {
    /// The file's id in `log.record.uid` (0 in checkpoints from before ids).
    #[serde(default)]
    pub id: u64,
    pub fingerprint: Fingerprint,
    /// Where it was last seen; informational (files are found by fingerprint).
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    pub committed: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub files: Vec<FileCheckpoint>,
}

pub const FILE_NAME: &str = "checkpoints.json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_moves_only_over_a_delivered_prefix() {
        let mut r = Ranges::starting_at(0, &[]);
        r.sent(0, 10);
        r.sent(10, 20);
        r.sent(20, 30);
        assert!(!r.delivered(10));
        assert_eq!(r.committed, 0);
        r.gave_up(20);
        assert!(r.delivered(0));
        assert_eq!(r.committed, 20);
        assert_eq!(r.skip_at(20), None, "the range given up is read again");
        assert!(!r.in_flight());
    }

    #[test]
    fn delivered_ranges_beyond_a_gap_survive_a_restart() {
        let mut r = Ranges::starting_at(0, &[]);
        r.sent(0, 10);
        r.sent(10, 20);
        r.delivered(10);
        let saved = (r.committed, r.done());
        assert_eq!(saved, (0, vec![(10, 20)]));
        let again = Ranges::starting_at(saved.0, &saved.1);
        assert_eq!(again.skip_at(10), Some(20));
        assert_eq!(again.next_start_after(0), Some(10));
    }

    #[test]
    fn fingerprints_match_grown_files_only() {
        let fp = Fingerprint::of(b"{\"n\":1}\n");
        assert!(fp.matches(b"{\"n\":1}\n{\"n\":2}\n"));
        assert!(!fp.matches(b"{\"n\":1}"));
        assert!(!fp.matches(b"{\"n\":3}\n{\"n\":2}\n"));
        assert!(!Fingerprint::of(b"").matches(b"x"));
    }
}
