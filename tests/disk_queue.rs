//! `sending_queue.storage = "disk"`: what a collector acknowledged survives SIGKILL,
//! corruption is skipped and reported, a full disk queue pushes back, and batches leave
//! in the order they were queued, across restarts.
//!
//! Collector A takes OTLP and forwards it with a disk-queued `otlp` exporter to B, which
//! writes what it receives to a file. B is started only when the test wants delivery.

mod common;

use common::{read_jsonl, spans_in, Collector};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

struct Ports {
    a_grpc: u16,
    a_http: u16,
    a_service: u16,
    b_grpc: u16,
    b_http: u16,
    b_service: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            a_grpc: common::free_port(),
            a_http: common::free_port(),
            a_service: common::free_port(),
            b_grpc: common::free_port(),
            b_http: common::free_port(),
            b_service: common::free_port(),
        }
    }
}

/// A: OTLP in (answering once queued), optionally a batch processor, a disk-queued
/// exporter to B. `queue` is extra keys of `sending_queue`.
fn relay(p: &Ports, batch: bool, queue: &str, extra_service: &str) -> String {
    relay_with(p, batch, queue, extra_service, 64)
}

fn relay_with(p: &Ports, batch: bool, queue: &str, extra_service: &str, capacity: usize) -> String {
    let (processors, batch_toml) = if batch {
        (
            r#"processors = ["batch"]"#,
            "[processors.batch]\nsend_batch_size = 200\ntimeout = \"50ms\"\n",
        )
    } else {
        ("", "")
    };
    format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{a_grpc}"
http = "127.0.0.1:{a_http}"
wait_for_delivery = "queued"

{batch_toml}
[exporters."otlp/out"]
endpoint = "http://127.0.0.1:{b_grpc}"
timeout = "2s"
[exporters."otlp/out".sending_queue]
storage = "disk"
num_consumers = 1
{queue}
[exporters."otlp/out".retry_on_failure]
initial_interval = "50ms"
max_interval = "300ms"
max_elapsed_time = "10m"

[service]
http = "127.0.0.1:{a_service}"
data_dir = "data"
shutdown_timeout = "2s"
{extra_service}

[service.pipelines.traces]
receivers = ["otlp"]
{processors}
exporters = ["otlp/out"]
capacity = {capacity}
"#,
        a_grpc = p.a_grpc,
        a_http = p.a_http,
        b_grpc = p.b_grpc,
        a_service = p.a_service,
    )
}

/// B: OTLP in, every span to `out.jsonl`.
fn sink(p: &Ports) -> Collector {
    Collector::start(
        &format!(
            r#"
[receivers.otlp]
grpc = "127.0.0.1:{}"
http = "127.0.0.1:{}"
wait_for_delivery = true

[exporters.file]
path = "out.jsonl"

[service]
http = "127.0.0.1:{}"

[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["file"]
"#,
            p.b_grpc, p.b_http, p.b_service
        ),
        p.b_service,
    )
}

/// Span names in B's file, in the order written (complete lines only).
fn received(b: &Collector) -> Vec<String> {
    spans_in(&read_jsonl(&b.path("out.jsonl")))
        .iter()
        .map(|(_, s)| s["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Request `n`: `spans` spans named `r<n>-<i>`, with a payload of `pad` bytes each.
fn request(n: usize, spans: usize, pad: usize) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: vec![7; 16],
                        span_id: ((n * 1000 + i) as u64 + 1).to_be_bytes().to_vec(),
                        name: format!("r{n}-{i}"),
                        attributes: vec![common::kv("pad", Value::StringValue("x".repeat(pad)))],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Sends requests `range` to A over gRPC, each waiting for A's answer; returns the
/// numbers A answered OK.
fn send(
    rt: &tokio::runtime::Runtime,
    port: u16,
    range: std::ops::Range<usize>,
    spans: usize,
    pad: usize,
) -> Vec<usize> {
    rt.block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect to A");
        let mut ok = Vec::new();
        for n in range {
            let mut req = tonic::Request::new(request(n, spans, pad));
            req.set_timeout(Duration::from_secs(3));
            if client.export(req).await.is_ok() {
                ok.push(n);
            }
        }
        ok
    })
}

/// The segment files of A's disk queue.
fn segments(a: &Collector) -> Vec<PathBuf> {
    let dir = a.path("data/exporter/otlp%2Fout/queue");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// Offsets of the record headers in a segment file.
fn record_offsets(seg: &Path) -> Vec<usize> {
    let b = std::fs::read(seg).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 40 <= b.len() {
        assert_eq!(&b[pos..pos + 4], b"TWQ1", "record header at {pos}");
        out.push(pos);
        let len = u32::from_le_bytes(b[pos + 24..pos + 28].try_into().unwrap()) as usize;
        pos += 40 + len;
    }
    out
}

fn exporter_status(a: &Collector) -> serde_json::Value {
    a.status()["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "otlp/out")
        .cloned()
        .expect("otlp/out in /status")
}

fn metric_or_zero(c: &Collector, sample: &str) -> f64 {
    common::metric_value(&c.metrics(), sample).unwrap_or(0.0)
}

/// Acceptance 1: the Python SDK sends batch after batch to A (answering once queued on
/// disk) while B is down; A is killed with SIGKILL three times; when B comes up, every
/// batch the SDK saw acknowledged arrives. Duplicates come only from batches the SDK sent
/// again because a kill cut off A's answer, and from batches A had in flight.
#[test]
fn acknowledged_spans_survive_three_sigkills() {
    let p = Ports::new();
    let mut a = Collector::start(&relay(&p, true, "", ""), p.a_service);
    let acked_path = a.path("acked.txt");
    let batches = 60;
    let per_batch = 10;
    let mut sender = Command::new(common::python())
        .arg(common::repo_root().join("tests/peers/acked_sender.py"))
        .args(["--endpoint", &format!("127.0.0.1:{}", p.a_grpc)])
        .args(["--batches", &batches.to_string()])
        .args(["--spans-per-batch", &per_batch.to_string()])
        .arg("--out")
        .arg(&acked_path)
        .args(["--deadline", "150"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python SDK sender");
    let acked = || {
        std::fs::read_to_string(&acked_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .count()
    };
    let mut replayed = 0.0;
    for kill in 0..3 {
        let before = acked();
        common::eventually(
            Duration::from_secs(60),
            "the SDK to get 5 more batches acknowledged",
            || acked() >= before + 5 || acked() == batches,
        );
        assert!(
            acked() < batches,
            "kill {kill}: the sender finished too early"
        );
        a.kill();
        a.start_again(&[]);
        replayed += metric_or_zero(
            &a,
            r#"tradewatch_exporter_replayed_items_total{exporter="otlp/out"}"#,
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    let status = loop {
        if let Some(s) = sender.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sender did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(sender.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "sender failed: {err}");
    assert_eq!(acked(), batches);
    // Everything is on A's disk, nothing delivered yet.
    assert!(!segments(&a).is_empty());

    let b = sink(&p);
    let want: Vec<String> = (0..batches)
        .flat_map(|i| (0..per_batch).map(move |j| format!("b{i}-s{j}")))
        .collect();
    common::eventually(
        Duration::from_secs(60),
        "every acknowledged span to reach B",
        || {
            let got: std::collections::BTreeSet<String> = received(&b).into_iter().collect();
            want.iter().all(|w| got.contains(w))
        },
    );
    let got = received(&b);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &got {
        *counts.entry(n.as_str()).or_default() += 1;
    }
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    // At most one batch per kill was sent again by the SDK after a cut-off answer, plus
    // what A had in flight (counted by A as replayed).
    let bound = 3 * per_batch + replayed as usize;
    assert!(
        duplicates <= bound,
        "{duplicates} duplicate spans, more than {bound}"
    );
    assert_eq!(got.len(), want.len() + duplicates);
    // A's queue empties once B has everything.
    common::eventually(Duration::from_secs(20), "A's disk queue to drain", || {
        metric_or_zero(
            &a,
            r#"tradewatch_exporter_queue_bytes{exporter="otlp/out"}"#,
        ) == 0.0
    });
}

/// Acceptance 2: a record with a flipped bit in the middle of the log and a torn write at
/// its end are reported at start and skipped; every other batch is delivered, once.
#[test]
fn a_torn_tail_and_a_corrupted_record_are_reported_and_skipped() {
    let rt = rt();
    let p = Ports::new();
    let mut a = Collector::start(&relay(&p, false, "", ""), p.a_service);
    let ok = send(&rt, p.a_grpc, 0..20, 5, 50);
    assert_eq!(ok.len(), 20, "every request was queued");
    a.kill();

    let segs = segments(&a);
    let seg = segs.last().unwrap();
    let offsets = record_offsets(seg);
    assert_eq!(offsets.len(), 20, "one record per request");
    let mut bytes = std::fs::read(seg).unwrap();
    // A bit flipped inside request 7's payload.
    bytes[offsets[7] + 40 + 30] ^= 0x04;
    // A write cut short: request 3's record copied to the end, half of it.
    let torn: Vec<u8> = bytes[offsets[3]..offsets[3] + 60].to_vec();
    bytes.extend_from_slice(&torn);
    std::fs::write(seg, &bytes).unwrap();

    let b = sink(&p);
    a.start_again(&[]);
    let st = exporter_status(&a);
    let msg = st["last_error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("corrupted record"), "{st}");
    assert!(msg.contains("incomplete record at the end"), "{st}");
    assert_eq!(
        a.metric(r#"tradewatch_exporter_queue_corrupt_records_total{exporter="otlp/out"}"#),
        1.0
    );
    assert_eq!(
        a.metric(r#"tradewatch_exporter_queue_torn_records_total{exporter="otlp/out"}"#),
        1.0
    );
    let want: Vec<String> = (0..20)
        .filter(|n| *n != 7)
        .flat_map(|n| (0..5).map(move |i| format!("r{n}-{i}")))
        .collect();
    common::eventually(Duration::from_secs(30), "the good records at B", || {
        received(&b).len() >= want.len()
    });
    let mut got = received(&b);
    got.sort();
    let mut want = want;
    want.sort();
    assert_eq!(got, want, "everything but the corrupted record, once");
    // And the collector goes on: new data flows.
    assert_eq!(send(&rt, p.a_grpc, 100..101, 5, 10), vec![100]);
    common::eventually(Duration::from_secs(30), "new data at B", || {
        received(&b).iter().any(|n| n == "r100-0")
    });
}

/// Acceptance 3: with B down, the disk queue fills to max_size; then A pushes back
/// (clients are told to retry) and `/status` says why; nothing it accepted is lost.
#[test]
fn a_full_disk_queue_pushes_back_and_loses_nothing() {
    let rt = rt();
    let p = Ports::new();
    let queue = "max_size = \"64KiB\"\nsegment_size = \"16KiB\"\nqueue_size = 2";
    // Little memory and a short pipeline, so that requests waiting for the disk queue
    // are few: each of them waits for its answer until the client gives up.
    let a = Collector::start(
        &relay_with(&p, false, queue, "memory_limit = \"16KiB\"", 1),
        p.a_service,
    );
    // Each request is about 4.5 KB: 64 KiB holds 14 of them.
    let ok = send(&rt, p.a_grpc, 0..30, 4, 1000);
    assert!(ok.len() >= 10, "only {} requests queued", ok.len());
    assert!(ok.len() < 30, "nothing was pushed back");
    // Why, in /status: the exporter's detail names the full queue for as long as it is
    // (its last error may be the latest failed retry to B instead).
    let st = exporter_status(&a);
    assert_eq!(st["state"], "degraded", "{st}");
    let detail = st["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("disk queue full"), "{st}");
    assert!(detail.contains("max_size"), "{st}");
    let refused =
        a.metric(r#"tradewatch_receiver_refused_items_total{receiver="otlp",signal="traces"}"#);
    assert!(refused > 0.0, "the receiver refused data");
    let accepted =
        a.metric(r#"tradewatch_receiver_accepted_items_total{receiver="otlp",signal="traces"}"#);
    assert!(
        metric_or_zero(
            &a,
            r#"tradewatch_exporter_queue_bytes{exporter="otlp/out"}"#
        ) <= 64.0 * 1024.0
    );

    // B comes: everything A accepted arrives, the acknowledged requests among it.
    let b = sink(&p);
    common::eventually(Duration::from_secs(60), "all accepted spans at B", || {
        received(&b).len() as f64 >= accepted
    });
    let got = received(&b);
    assert_eq!(got.len() as f64, accepted, "no more, no less than accepted");
    for n in &ok {
        assert!(
            got.contains(&format!("r{n}-0")),
            "acknowledged request {n} lost"
        );
    }
    common::eventually(Duration::from_secs(10), "A healthy again", || {
        let st = exporter_status(&a);
        st["state"] == "ok" && !st["detail"].as_str().unwrap_or_default().contains("full")
    });
}

/// Acceptance 4: per exporter, batches leave in the order they were queued, across a
/// SIGKILL and a graceful restart (with `fsync = "always"`).
#[test]
fn batches_are_delivered_in_queue_order_across_restarts() {
    let rt = rt();
    let p = Ports::new();
    let mut a = Collector::start(&relay(&p, false, "fsync = \"always\"", ""), p.a_service);
    assert_eq!(send(&rt, p.a_grpc, 0..25, 3, 10).len(), 25);
    a.kill();
    a.start_again(&[]);
    assert_eq!(send(&rt, p.a_grpc, 25..50, 3, 10).len(), 25);
    // Graceful: the request in flight is cut off at the shutdown deadline and stays.
    a.restart(&[]);
    assert_eq!(send(&rt, p.a_grpc, 50..75, 3, 10).len(), 25);
    let b = sink(&p);
    common::eventually(Duration::from_secs(60), "all 75 requests at B", || {
        received(&b).len() >= 75 * 3
    });
    let order: Vec<usize> = received(&b)
        .iter()
        .map(|n| n[1..n.find('-').unwrap()].parse().unwrap())
        .collect();
    // First occurrences in request order (a batch in flight at a kill may come twice).
    let mut seen = std::collections::BTreeSet::new();
    let firsts: Vec<usize> = order.into_iter().filter(|n| seen.insert(*n)).collect();
    assert_eq!(firsts, (0..75).collect::<Vec<_>>());
}

/// Acceptance 3 with a real full disk: the queue's next segment is `/dev/full`, so every
/// write fails with ENOSPC. A holds what it accepted (nothing is answered as queued),
/// `/status` says why, and once the disk has room again everything accepted arrives.
#[test]
fn a_disk_that_is_full_holds_what_was_accepted_until_there_is_room() {
    let rt = rt();
    let p = Ports::new();
    let a = Collector::start(&relay(&p, false, "", ""), p.a_service);
    let dir = a.path("data/exporter/otlp%2Fout/queue");
    let seg = dir.join("00000000000000000001.seg");
    std::os::unix::fs::symlink("/dev/full", &seg).expect("symlink to /dev/full");
    let ok = send(&rt, p.a_grpc, 0..2, 3, 10);
    assert!(
        ok.is_empty(),
        "nothing can be queued on a full disk: {ok:?}"
    );
    common::eventually(
        Duration::from_secs(20),
        "/status to say the disk is full",
        || {
            let st = exporter_status(&a);
            st["state"] == "degraded"
                && st["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("No space left on device")
        },
    );
    assert!(
        a.metric(r#"tradewatch_exporter_queue_write_errors_total{exporter="otlp/out"}"#) >= 1.0
    );
    let accepted =
        a.metric(r#"tradewatch_receiver_accepted_items_total{receiver="otlp",signal="traces"}"#);
    assert!(accepted >= 3.0, "the first request got into the pipeline");
    // Room again.
    std::fs::remove_file(&seg).unwrap();
    let b = sink(&p);
    common::eventually(Duration::from_secs(30), "everything accepted at B", || {
        received(&b).len() as f64 >= accepted
    });
    assert_eq!(received(&b).len() as f64, accepted);
    common::eventually(Duration::from_secs(10), "the write error cleared", || {
        !exporter_status(&a)["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("No space")
    });
}
