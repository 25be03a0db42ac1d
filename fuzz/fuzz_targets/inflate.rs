//! Decompression with the size limit (the OTLP receivers' `inflate`): never a panic,
//! never an output over the limit, and the Rust heap held while inflating never exceeds
//! the limit plus the decoders' fixed buffers. The first byte picks gzip or zstd, the
//! next two the limit (16 B to 1 MiB); the rest is the body.
//!
//! zstd's own (C) allocations are not seen by the counting allocator: its window is
//! sized from the frame header, which `inflate` caps at max(limit, 8 MiB) (it was 128
//! MiB for any limit; check with `strace -e trace=mmap` on a replay).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use tradewatch::receivers::otlp::{inflate_bounded, Compression, InflateError};

struct Counting;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = NOW.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(now, Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        NOW.fetch_sub(l.size(), Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > l.size() {
            let now = NOW.fetch_add(new - l.size(), Relaxed) + new - l.size();
            PEAK.fetch_max(now, Relaxed);
        } else {
            NOW.fetch_sub(l.size() - new, Relaxed);
        }
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// The decoders' own state and the 64 KiB read chunk: the gzip inflater (~45 KiB),
/// its 32 KiB input buffer, zstd's Rust-side buffer.
const FIXED: usize = 512 * 1024;

fuzz_target!(|data: &[u8]| {
    let [algo, l0, l1, body @ ..] = data else {
        return;
    };
    let compression = if algo & 1 == 0 {
        Compression::Gzip
    } else {
        Compression::Zstd
    };
    let limit = (u16::from_le_bytes([*l0, *l1]) as usize + 1) * 16;
    let before = NOW.load(Relaxed);
    PEAK.store(before, Relaxed);
    let out = inflate_bounded(compression, body, limit);
    let peak = PEAK.load(Relaxed) - before;
    assert!(
        peak <= limit + FIXED,
        "held {peak} bytes for a limit of {limit}"
    );
    match out {
        Ok(out) => assert!(out.len() <= limit),
        Err(InflateError::TooLarge | InflateError::Invalid(_)) => {}
    }
});
