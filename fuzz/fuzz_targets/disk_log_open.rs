//! The disk queue's recovery: whatever bytes a crash, a bad disk or a stray process
//! left in a segment file and the marks file, opening the log never panics and never
//! fails, and every batch it reports as pending reads back intact (its checksum holds);
//! the log then takes new batches after them.
//!
//! The first byte says how much of the rest is the marks file (in 16-byte marks); the
//! remainder is the segment file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use tradewatch::component::Signal;
use tradewatch::pipeline::disk_log::DiskLog;

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("tradewatch-fuzz-disk-log-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let marks_len = (first as usize * 16).min(rest.len());
    let (marks, segment) = rest.split_at(marks_len);
    let d = dir();
    for e in std::fs::read_dir(d).expect("read dir") {
        let _ = std::fs::remove_file(e.expect("entry").path());
    }
    std::fs::write(d.join("00000000000000000001.seg"), segment).expect("write segment");
    std::fs::write(d.join("marks"), marks).expect("write marks");

    let (mut log, rec) = DiskLog::open(d, 1 << 20, 1 << 30).expect("open never fails on bad bytes");
    let mut last = 0;
    for e in &rec.pending {
        assert!(e.seq > last, "pending batches in order");
        last = e.seq;
        log.read(e).expect("a pending batch reads back intact");
    }
    let next = log.append(Signal::Logs, 1, b"after").expect("append after recovery");
    assert!(next.seq > last, "new batches follow the old");
    assert_eq!(&log.read(&next).expect("read back")[..], b"after");
});
