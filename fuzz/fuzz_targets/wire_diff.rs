//! The zero-copy wire scanner against prost, differentially: for every input and each
//! of the three export requests, the scanner accepts exactly when prost decodes, and
//! then counts the same resources and items.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tradewatch::otlp::wire::{self, Counts, WireError};

fn agree<M: Message + Default>(
    what: &str,
    buf: &[u8],
    scan: fn(&[u8]) -> Result<Counts, WireError>,
    count: fn(&M) -> Counts,
) {
    match (M::decode(buf), scan(buf)) {
        (Ok(m), Ok(c)) => assert_eq!(count(&m), c, "{what}: counts differ"),
        (Err(_), Err(_)) => {}
        (p, s) => panic!("{what}: prost {:?} but scanner {s:?}", p.map(|_| ())),
    }
}

fuzz_target!(|data: &[u8]| {
    agree("traces", data, wire::scan_traces, Counts::of_traces);
    agree("metrics", data, wire::scan_metrics, Counts::of_metrics);
    agree("logs", data, wire::scan_logs, Counts::of_logs);
});
