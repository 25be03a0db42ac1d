//! What validating a request costs: the wire scanner (`scan_traces`) against a full prost
//! decode of the same request, 100 spans with 10 attributes each, on one thread.
//!
//! `cargo bench --bench wire_scan` prints ns per span for both, best of several rounds.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::hint::black_box;
use std::time::Instant;
use tradewatch::otlp::wire::scan_traces;

const SPANS: usize = 100;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn request() -> Vec<u8> {
    let spans = (0..SPANS)
        .map(|i| Span {
            trace_id: vec![(i / 10) as u8 + 1; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            parent_span_id: if i % 10 == 0 {
                Vec::new()
            } else {
                ((i - i % 10) as u64 + 1).to_be_bytes().to_vec()
            },
            name: format!("order.place.{i}"),
            kind: 3,
            start_time_unix_nano: 1_790_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_790_000_000_000_500_000 + i as u64,
            attributes: vec![
                kv("bot", Value::StringValue("freqtrade-main".into())),
                kv("strategy", Value::StringValue("SampleStrategy".into())),
                kv("pair", Value::StringValue("BTC/USDT:USDT".into())),
                kv("exchange", Value::StringValue("binance".into())),
                kv(
                    "order.side",
                    Value::StringValue(if i % 2 == 0 { "buy" } else { "sell" }.into()),
                ),
                kv("order.id", Value::StringValue(format!("o-{i:08}"))),
                kv("order.amount", Value::DoubleValue(0.0125 * i as f64)),
                kv("order.price", Value::DoubleValue(97_000.5 + i as f64)),
                kv("trade.id", Value::IntValue(1000 + i as i64)),
                kv("is_short", Value::BoolValue(i % 3 == 0)),
            ],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue("trader".into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Best-of-`rounds` nanoseconds per span for `f` over `iters` requests.
fn ns_per_span(rounds: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / (iters * SPANS) as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("wire_scan: not run without --bench (use `cargo bench --bench wire_scan`)");
        return;
    }
    let buf = request();
    assert_eq!(
        scan_traces(&buf).expect("valid request").items,
        SPANS as u64
    );
    let scan = ns_per_span(10, 2000, || {
        black_box(scan_traces(black_box(&buf)).ok());
    });
    let decode = ns_per_span(10, 500, || {
        black_box(ExportTraceServiceRequest::decode(black_box(&buf[..])).ok());
    });
    println!(
        "wire_scan: request of {SPANS} spans, 10 attributes each, {} bytes",
        buf.len()
    );
    println!("wire_scan: scan_traces   {scan:8.1} ns/span");
    println!("wire_scan: prost decode  {decode:8.1} ns/span (system allocator)");
    println!("wire_scan: decode / scan = {:.1}x", decode / scan);
}
