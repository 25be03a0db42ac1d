//! The OTLP/HTTP JSON path (`tradewatch::otlp::json::from_slice` into the request
//! types, as the HTTP receiver does): never a panic; every accepted body re-encodes
//! (`json::to_vec`) to JSON that reads back to the same request; whatever plain
//! serde_json accepts is read the same (unless it holds a non-finite double); and the output is serde_json's byte for byte
//! unless a double is non-finite (which serde_json would write as `null`).
//! The first byte picks the signal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde::{de::DeserializeOwned, Serialize};
use tradewatch::otlp::json;

fn check<M: Message + Default + Serialize + DeserializeOwned>(body: &[u8]) {
    let ours = json::from_slice::<M>(body);
    // Plain serde_json reads a non-finite double's string as no value at all (or fails).
    let nonfinite = [&b"NaN"[..], b"Infinity", b"\\u"]
        .iter()
        .any(|s| body.windows(s.len()).any(|w| w == *s));
    if let (false, Ok(plain)) = (nonfinite, serde_json::from_slice::<M>(body)) {
        let ours = ours
            .as_ref()
            .expect("serde_json accepts a body json::from_slice refuses");
        assert_eq!(
            plain.encode_to_vec(),
            ours.encode_to_vec(),
            "read differently"
        );
    }
    let Ok(m) = ours else { return };
    let out = json::to_vec(&m).expect("an accepted request must encode");
    let back: M = json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "re-encoded body refused: {e}: {}",
            String::from_utf8_lossy(&out)
        )
    });
    assert_eq!(
        m.encode_to_vec(),
        back.encode_to_vec(),
        "round trip changed the request"
    );
    assert_eq!(
        json::to_vec(&back).unwrap(),
        out,
        "encoding is not a fixed point"
    );
    let plain = serde_json::to_vec(&m).unwrap();
    if plain != out {
        // The only difference allowed: serde_json's null for a non-finite double.
        assert!(
            String::from_utf8_lossy(&plain).contains("null"),
            "differs from serde_json without a non-finite double"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => check::<ExportTraceServiceRequest>(body),
        1 => check::<ExportMetricsServiceRequest>(body),
        _ => check::<ExportLogsServiceRequest>(body),
    }
});
