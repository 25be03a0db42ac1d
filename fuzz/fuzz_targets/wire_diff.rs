//! The zero-copy wire scanner against prost, differentially: for every input and each
//! of the three export requests, the scanner accepts exactly when prost decodes, and
//! then counts the same resources and items.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
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

fn traces(m: &ExportTraceServiceRequest) -> Counts {
    Counts {
        resources: m.resource_spans.len() as u32,
        items: m
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum(),
    }
}

fn metrics(m: &ExportMetricsServiceRequest) -> Counts {
    Counts {
        resources: m.resource_metrics.len() as u32,
        items: m
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| match &m.data {
                None => 0,
                Some(Data::Gauge(g)) => g.data_points.len() as u64,
                Some(Data::Sum(s)) => s.data_points.len() as u64,
                Some(Data::Histogram(h)) => h.data_points.len() as u64,
                Some(Data::ExponentialHistogram(e)) => e.data_points.len() as u64,
                Some(Data::Summary(s)) => s.data_points.len() as u64,
            })
            .sum(),
    }
}

fn logs(m: &ExportLogsServiceRequest) -> Counts {
    Counts {
        resources: m.resource_logs.len() as u32,
        items: m
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len() as u64)
            .sum(),
    }
}

fuzz_target!(|data: &[u8]| {
    agree("traces", data, wire::scan_traces, traces);
    agree("metrics", data, wire::scan_metrics, metrics);
    agree("logs", data, wire::scan_logs, logs);
});
