//! Memory is bounded in bytes: with a stuck downstream and far more offered than
//! `[service] memory_limit`, the receiver pushes back (HTTP 503 + `Retry-After`) instead
//! of queueing without end; nothing it accepted is lost once the downstream returns; and
//! the process's peak RSS (`VmHWM`) stays within the limit plus a fixed overhead.
//!
//! A relays logs to B through an OTLP exporter whose default queue (256 batches) would
//! hold 512 MB of these 2 MB requests; the 128 MiB limit is what stops it.

mod common;

use common::{free_port, BlackHole, Collector};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LIMIT_MIB: u64 = 128;
const REQUESTS: usize = 300;
const RECORDS: usize = 1000;
/// What the process holds besides the accounted data: the binary and runtime, request
/// bodies being read (each connection's up to `max_request_size`), buffers of requests
/// in flight, and the allocator's slack. Measured (debug build, 4 client connections):
/// see the README.
const OVERHEAD_MIB: u64 = 96;

/// Request `n`: `RECORDS` records of about 2 KB, each with a unique `seq`.
fn request(n: usize, filler: &str) -> Vec<u8> {
    let records = (0..RECORDS)
        .map(|i| LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000 + (n * RECORDS + i) as u64,
            body: Some(AnyValue {
                value: Some(Value::StringValue(format!("{n}.{i} {filler}"))),
            }),
            attributes: vec![common::kv("seq", Value::IntValue((n * RECORDS + i) as i64))],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Peak resident set size of a process, from `/proc/<pid>/status`.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

fn start_b(http: u16, service: u16) -> Collector {
    let grpc = free_port();
    let cfg = format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "127.0.0.1:{http}"

[exporters.nop]

[service]
http = "127.0.0.1:{service}"

[service.pipelines.logs]
receivers = ["otlp"]
exporters = ["nop"]
"#
    );
    Collector::start(&cfg, service)
}

#[test]
fn a_stuck_downstream_makes_the_receiver_push_back_within_the_memory_limit() {
    let mut hole = BlackHole::start();
    let (a_grpc, a_http, a_service, b_service) =
        (free_port(), free_port(), free_port(), free_port());
    let a = Collector::start(
        &format!(
            r#"
[receivers.otlp]
grpc = "127.0.0.1:{a_grpc}"
http = "127.0.0.1:{a_http}"
pushback_wait = "200ms"

[exporters."otlp/b"]
endpoint = "http://127.0.0.1:{b}"
protocol = "http"
timeout = "20s"

[exporters."otlp/b".retry_on_failure]
initial_interval = "100ms"
max_interval = "1s"

[service]
http = "127.0.0.1:{a_service}"
memory_limit = "{LIMIT_MIB}MiB"

[service.pipelines.logs]
receivers = ["otlp"]
exporters = ["otlp/b"]
"#,
            b = hole.port
        ),
        a_service,
    );
    let pid = a.child.as_ref().expect("A runs").id();
    assert_eq!(
        a.metric("tradewatch_memory_limit_bytes"),
        (LIMIT_MIB << 20) as f64
    );

    // Offer 600 MB over 4 connections; count what A accepted and what it pushed back.
    let filler = "x".repeat(2000);
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (client, filler) = (client.clone(), filler.clone());
                let (accepted, refused, next) = (accepted.clone(), refused.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::AcqRel);
                        if n >= REQUESTS {
                            break;
                        }
                        let body = request(n, &filler);
                        let resp = client
                            .post(format!("http://127.0.0.1:{a_http}/v1/logs"))
                            .header("content-type", "application/x-protobuf")
                            .body(body)
                            .send()
                            .await
                            .expect("A answers");
                        match resp.status().as_u16() {
                            200 => accepted.fetch_add(RECORDS as u64, Ordering::AcqRel),
                            503 => {
                                assert!(
                                    resp.headers().contains_key("retry-after"),
                                    "a 503 tells the client when to retry"
                                );
                                refused.fetch_add(RECORDS as u64, Ordering::AcqRel)
                            }
                            other => panic!("unexpected status {other}"),
                        };
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("client task");
        }
    });
    let (accepted, refused) = (
        accepted.load(Ordering::Acquire),
        refused.load(Ordering::Acquire),
    );
    eprintln!("accepted {accepted} records, refused {refused}");
    assert!(refused > 0, "the receiver pushed back");
    assert!(accepted > 0, "the receiver took what fit");
    let used = a.metric("tradewatch_memory_used_bytes");
    assert!(used <= (LIMIT_MIB << 20) as f64, "{used} bytes held");
    assert_eq!(
        a.metric("tradewatch_receiver_refused_items_total{receiver=\"otlp\",signal=\"logs\"}"),
        refused as f64
    );
    let status = a.status();
    assert_eq!(status["service"]["memory_limit_bytes"], LIMIT_MIB << 20);
    assert!(status["service"]["memory_used_bytes"].as_u64() <= Some(LIMIT_MIB << 20));
    let peak_stuck = vm_hwm_kib(pid);

    // The downstream returns: everything accepted arrives, and the memory is released.
    hole.close();
    let b = start_b(hole.port, b_service);
    common::eventually(
        Duration::from_secs(60),
        "A delivered all it accepted",
        || {
            a.metric("tradewatch_exporter_sent_items_total{exporter=\"otlp/b\",signal=\"logs\"}")
                >= accepted as f64
        },
    );
    assert_eq!(
        b.metric("tradewatch_receiver_accepted_items_total{receiver=\"otlp\",signal=\"logs\"}"),
        accepted as f64,
        "B received exactly what A accepted"
    );
    common::eventually(Duration::from_secs(10), "A's memory is released", || {
        a.metric("tradewatch_memory_used_bytes") == 0.0
    });

    let peak = vm_hwm_kib(pid);
    eprintln!(
        "A's peak RSS: {} MiB while stuck, {} MiB overall (limit {LIMIT_MIB} MiB)",
        peak_stuck / 1024,
        peak / 1024
    );
    assert!(
        peak / 1024 <= LIMIT_MIB + OVERHEAD_MIB,
        "peak RSS {} MiB exceeds {LIMIT_MIB} MiB + {OVERHEAD_MIB} MiB",
        peak / 1024
    );
}
