//! End to end: SIGTERM while data is in flight.
//!
//! * Data held by the batch processor (10 s timeout) is flushed at shutdown to both a
//!   file exporter and an OTLP exporter to tradewatch B, and the process exits 0 long
//!   before the batch timeout.
//! * An exporter stuck on a peer that never answers cannot drain: the process gives up at
//!   `shutdown_timeout`, says in its logs what it dropped, and exits with status 1
//!   (`RunError::NotDrained`, see src/service/run.rs).
//! * While shutting down (held open by that stuck exporter), new requests are refused.

mod common;

use common::{free_port, BlackHole, Collector};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use prost::Message;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

const GIVE_UP: Duration = Duration::from_secs(30);
const SPANS_PER_REQUEST: usize = 4;

/// Request `n`: `SPANS_PER_REQUEST` spans with unique ids and `seq` attributes.
fn request(salt: u8, n: usize) -> ExportTraceServiceRequest {
    common::seq_request("shutdown", salt, n, SPANS_PER_REQUEST)
}

/// Span id (hex) → how many times it is in a file exporter's output.
fn spans_in_file(path: &std::path::Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (_, s) in common::spans_in(&common::read_jsonl(path)) {
        let id = s["spanId"]
            .as_str()
            .expect("spanId is a string")
            .to_ascii_lowercase();
        *m.entry(id).or_default() += 1;
    }
    m
}

/// Asserts the file holds every span of `sent` exactly once, and nothing else.
fn assert_exactly(what: &str, path: &std::path::Path, sent: &[ExportTraceServiceRequest]) {
    let got = spans_in_file(path);
    let want = common::span_ids(sent);
    let missing: Vec<&String> = want.iter().filter(|id| !got.contains_key(*id)).collect();
    let extra: Vec<&String> = got.keys().filter(|id| !want.contains(id)).collect();
    let twice: Vec<(&String, &usize)> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && twice.is_empty(),
        "{what}: {} spans sent; missing {missing:?}; unexpected {extra:?}; more than once {twice:?}",
        want.len()
    );
}

struct Grpc {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    port: u16,
}

impl Grpc {
    fn new(port: u16) -> Grpc {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let channel = Grpc::channel(&rt, port);
        Grpc { rt, channel, port }
    }

    fn channel(rt: &tokio::runtime::Runtime, port: u16) -> Channel {
        let _g = rt.enter();
        Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect_lazy()
    }

    fn export_on(
        &self,
        channel: &Channel,
        req: &ExportTraceServiceRequest,
    ) -> Result<(), tonic::Status> {
        let mut c = TraceServiceClient::new(channel.clone());
        self.rt
            .block_on(async { tokio::time::timeout(GIVE_UP, c.export(req.clone())).await })
            .expect("an answer within the bound")
            .map(|_| ())
    }

    fn export(&self, req: &ExportTraceServiceRequest) -> Result<(), tonic::Status> {
        self.export_on(&self.channel, req)
    }

    /// The same, on a brand-new connection.
    fn export_fresh(&self, req: &ExportTraceServiceRequest) -> Result<(), tonic::Status> {
        let ch = Grpc::channel(&self.rt, self.port);
        self.export_on(&ch, req)
    }
}

/// tradewatch's own log text without terminal colour codes.
fn plain_logs(c: &Collector) -> String {
    let raw = c.logs();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// The value of `key=` on a log line, if present.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// B: OTLP/gRPC in, traces to `out.jsonl`.
fn start_b(grpc: u16, service: u16) -> Collector {
    let cfg = format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "off"

[exporters.file]
path = "out.jsonl"

[service]
http = "127.0.0.1:{service}"

[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["file"]
"#
    );
    Collector::start(&cfg, service)
}

#[test]
fn sigterm_flushes_batches_to_every_exporter_and_exits_0() {
    let (bg, bs) = (free_port(), free_port());
    let mut b = start_b(bg, bs);
    let (ag, as_) = (free_port(), free_port());
    let cfg = format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{ag}"
http = "off"

[processors.batch]
send_batch_size = 100000
timeout = "10s"

[exporters.file]
path = "out.jsonl"

[exporters."otlp/b"]
endpoint = "http://127.0.0.1:{bg}"
protocol = "grpc"
timeout = "2s"

[exporters."otlp/b".retry_on_failure]
initial_interval = "100ms"
max_interval = "1s"

[service]
http = "127.0.0.1:{as_}"
shutdown_timeout = "15s"

[service.pipelines.traces]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["file", "otlp/b"]
"#
    );
    let mut a = Collector::start(&cfg, as_);
    let client = Grpc::new(ag);
    const N: usize = 10;
    let sent: Vec<ExportTraceServiceRequest> = (0..N).map(|n| request(0x71, n)).collect();
    for r in &sent {
        client.export(r).expect("A accepts");
    }
    let total = (N * SPANS_PER_REQUEST) as u64;
    common::eventually_eq(Duration::from_secs(10), "accepted spans", total, || {
        a.metric(r#"tradewatch_receiver_accepted_items_total{receiver="otlp",signal="traces"}"#)
            as u64
    });
    // The data sits in the batcher (its timeout is 10 s): nothing has gone out yet.
    assert_eq!(
        a.metric(r#"tradewatch_exporter_sent_items_total{exporter="otlp/b",signal="traces"}"#),
        0.0
    );
    assert_eq!(
        a.metric(r#"tradewatch_exporter_sent_items_total{exporter="file",signal="traces"}"#),
        0.0
    );
    assert!(spans_in_file(&a.path("out.jsonl")).is_empty());

    // SIGTERM right away. Waiting for the batch timeout would take ~10 s; give up at 8.
    let status = a.terminate(Duration::from_secs(8));
    let logs = plain_logs(&a);
    assert!(status.success(), "A exited with {status}:\n{logs}");
    assert!(logs.contains("SIGTERM received"), "{logs}");
    assert!(logs.contains("shutdown complete"), "{logs}");
    assert!(!logs.contains("dropping queued data"), "{logs}");

    assert_exactly("A's file", &a.path("out.jsonl"), &sent);
    // A exits only once B answered, but B writes its file asynchronously.
    let out_b = b.path("out.jsonl");
    common::eventually(GIVE_UP, "B has every span", || {
        spans_in_file(&out_b).len() as u64 >= total
    });
    let sb = b.terminate(GIVE_UP);
    assert!(sb.success(), "B: {sb}");
    assert_exactly("B's file", &out_b, &sent);
}

/// A: OTLP in, traces to `otlp/b` pointed at a black hole (per-request timeout 60 s).
fn start_a_into_black_hole(hole: &BlackHole, shutdown_timeout: &str) -> (Collector, u16, u16) {
    let (ag, ah, as_) = (free_port(), free_port(), free_port());
    let cfg = format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{ag}"
http = "127.0.0.1:{ah}"

[exporters."otlp/b"]
endpoint = "http://127.0.0.1:{port}"
protocol = "grpc"
timeout = "60s"

[exporters."otlp/b".retry_on_failure]
initial_interval = "100ms"
max_interval = "1s"

[exporters."otlp/b".sending_queue]
queue_size = 16
num_consumers = 8

[service]
http = "127.0.0.1:{as_}"
shutdown_timeout = "{shutdown_timeout}"

[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["otlp/b"]
"#,
        port = hole.port
    );
    (Collector::start(&cfg, as_), ag, ah)
}

#[test]
fn sigterm_with_an_undrainable_exporter_gives_up_at_the_deadline_and_exits_1() {
    let hole = BlackHole::start();
    let (mut a, ag, _) = start_a_into_black_hole(&hole, "2s");
    let client = Grpc::new(ag);
    const N: usize = 12;
    let sent: Vec<ExportTraceServiceRequest> = (0..N).map(|n| request(0x72, n)).collect();
    for r in &sent {
        client.export(r).expect("A accepts (its queue has room)");
    }
    common::eventually(GIVE_UP, "the exporter is stuck on the black hole", || {
        hole.accepted() >= 1
    });

    let started = Instant::now();
    let status = a.terminate(Duration::from_secs(2 + 6));
    let took = started.elapsed();
    let logs = plain_logs(&a);
    // run.rs: a shutdown that could not drain is RunError::NotDrained, and main turns
    // every error into ExitCode::FAILURE (1).
    assert_eq!(
        status.code(),
        Some(1),
        "A exited with {status} after {took:?}:\n{logs}"
    );
    // A lower bound, not a timing expectation: the exporter can never finish, so A must
    // have waited for its whole deadline before giving up.
    assert!(
        took >= Duration::from_millis(1900),
        "A gave up before its 2 s deadline ({took:?}):\n{logs}"
    );
    assert!(
        logs.contains("shutdown deadline reached with data still queued"),
        "{logs}"
    );
    assert!(
        !logs.contains("did not stop after the deadline"),
        "the exporter stopped when told to:\n{logs}"
    );
    // Every accepted span is accounted for as dropped in the logs.
    let dropped: u64 = logs
        .lines()
        .filter(|l| l.contains("dropping queued data"))
        .map(|l| {
            field(l, "items")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no items= on: {l}"))
        })
        .sum();
    assert_eq!(
        dropped,
        (N * SPANS_PER_REQUEST) as u64,
        "every accepted span must be logged (and counted) as dropped; a shortfall means \
         an in-flight request was torn down with the runtime before it could account \
         for its data:\n{logs}"
    );
}

#[test]
fn while_draining_new_requests_are_refused() {
    let hole = BlackHole::start();
    // A long deadline: A stays in its draining phase for the whole test.
    let (mut a, ag, ah) = start_a_into_black_hole(&hole, "60s");
    let client = Grpc::new(ag);
    client
        .export(&request(0x73, 0))
        .expect("A accepts before shutdown");
    common::eventually(GIVE_UP, "the exporter is stuck on the black hole", || {
        hole.accepted() >= 1
    });

    common::signal(a.child.as_ref().expect("A runs"), "TERM");
    common::eventually(GIVE_UP, "A has stopped its receivers", || {
        plain_logs(&a).contains("receivers stopped; draining pipelines")
    });

    // gRPC, on the connection used before and on a new one: UNAVAILABLE.
    for (what, r) in [
        ("existing channel", client.export(&request(0x73, 1))),
        ("new channel", client.export_fresh(&request(0x73, 2))),
    ] {
        let s = r.expect_err(what);
        assert_eq!(s.code(), tonic::Code::Unavailable, "{what}: {s:?}");
    }
    // HTTP: nobody listens any more.
    let http = reqwest::Client::new();
    let r = client.rt.block_on(async {
        http.post(format!("http://127.0.0.1:{ah}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(request(0x73, 3).encode_to_vec())
            .timeout(GIVE_UP)
            .send()
            .await
    });
    match r {
        Err(e) => assert!(e.is_connect(), "HTTP while draining: {e}"),
        Ok(resp) => panic!("HTTP while draining answered {}", resp.status()),
    }

    // Still draining (the exporter holds it), and it says so.
    assert!(
        a.child
            .as_mut()
            .expect("A runs")
            .try_wait()
            .expect("wait")
            .is_none(),
        "A is still draining:\n{}",
        plain_logs(&a)
    );
    let st = a.status();
    let receiver = st["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["kind"] == "receiver" && c["id"] == "otlp")
        .cloned()
        .unwrap_or_else(|| panic!("no receiver otlp in {st}"));
    assert_eq!(receiver["state"], "stopped", "{st}");
    common::eventually_eq(
        Duration::from_secs(10),
        "accepted spans: only the request sent before SIGTERM was taken",
        SPANS_PER_REQUEST as u64,
        || {
            a.metric(r#"tradewatch_receiver_accepted_items_total{receiver="otlp",signal="traces"}"#)
                as u64
        },
    );
    a.kill();
}
