//! End to end: with a tiny queue and a blocked exporter, the OTLP receiver answers with a
//! retryable status (gRPC `UNAVAILABLE`, HTTP 503 + `Retry-After`) and counts what it
//! refused; once the exporter is unblocked, every item the receiver accepted arrives,
//! exactly once, and nothing it refused does.
//!
//! The blocked exporter points at a "black hole" this test runs: a TCP listener that
//! accepts connections and never answers. Unblocking closes the black hole (listener and
//! every accepted socket) and starts tradewatch B on the same port.

mod common;

use common::{free_port, BlackHole, Collector};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use prost::Message;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

const GIVE_UP: Duration = Duration::from_secs(30);
const SPANS_PER_REQUEST: usize = 3;

/// Request `n`: `SPANS_PER_REQUEST` spans with unique ids and `seq` attributes.
fn request(salt: u8, n: usize) -> ExportTraceServiceRequest {
    common::seq_request("pushback", salt, n, SPANS_PER_REQUEST)
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

/// `google.rpc.Status`, the body of an OTLP/HTTP error.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    Grpc,
    Http,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Grpc => "grpc",
            Proto::Http => "http",
        }
    }
}

struct Ports {
    grpc: u16,
    http: u16,
    service: u16,
}

/// A: OTLP in; traces out through `otlp/b` (`proto`) to `b_port`, with a one-batch queue,
/// one consumer, a one-batch pipeline and a long per-request timeout.
fn start_a(p: &Ports, proto: Proto, b_port: u16) -> Collector {
    let cfg = format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{g}"
http = "127.0.0.1:{h}"
pushback_wait = "100ms"

[exporters."otlp/b"]
endpoint = "http://127.0.0.1:{b_port}"
protocol = "{proto}"
timeout = "60s"

[exporters."otlp/b".retry_on_failure]
initial_interval = "100ms"
max_interval = "1s"

[exporters."otlp/b".sending_queue]
queue_size = 1
num_consumers = 1

[service]
http = "127.0.0.1:{s}"
shutdown_timeout = "10s"

[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["otlp/b"]
capacity = 1
"#,
        g = p.grpc,
        h = p.http,
        s = p.service,
        proto = proto.name(),
    );
    Collector::start(&cfg, p.service)
}

/// B: OTLP in on the given ports, traces to `out.jsonl`.
fn start_b(grpc: u16, http: u16, service: u16) -> Collector {
    let cfg = format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "127.0.0.1:{http}"

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

fn metric(c: &Collector, sample: &str) -> u64 {
    c.metric(sample) as u64
}

const ACCEPTED: &str =
    r#"tradewatch_receiver_accepted_items_total{receiver="otlp",signal="traces"}"#;
const REFUSED: &str = r#"tradewatch_receiver_refused_items_total{receiver="otlp",signal="traces"}"#;
const SENT: &str = r#"tradewatch_exporter_sent_items_total{exporter="otlp/b",signal="traces"}"#;
const FAILED: &str =
    r#"tradewatch_exporter_send_failed_items_total{exporter="otlp/b",signal="traces"}"#;
const DROPPED: &str =
    r#"tradewatch_exporter_dropped_items_total{exporter="otlp/b",signal="traces"}"#;
const RETRIES: &str = r#"tradewatch_exporter_retries_total{exporter="otlp/b"}"#;
const QUEUE_SIZE: &str = r#"tradewatch_exporter_queue_size{exporter="otlp/b"}"#;
const QUEUE_CAPACITY: &str = r#"tradewatch_exporter_queue_capacity{exporter="otlp/b"}"#;

/// One request's outcome as the client saw it.
#[derive(Debug)]
enum Outcome {
    Accepted,
    Refused(String),
}

struct Sender {
    rt: tokio::runtime::Runtime,
    grpc: Channel,
    http: reqwest::Client,
    http_url: String,
}

impl Sender {
    fn new(p: &Ports) -> Sender {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let grpc = {
            let _g = rt.enter();
            Endpoint::from_shared(format!("http://127.0.0.1:{}", p.grpc))
                .expect("endpoint")
                .connect_lazy()
        };
        Sender {
            rt,
            grpc,
            http: reqwest::Client::builder()
                .timeout(GIVE_UP)
                .build()
                .expect("reqwest"),
            http_url: format!("http://127.0.0.1:{}/v1/traces", p.http),
        }
    }

    /// Sends one request; anything but OK or the retryable refusal fails the test.
    fn send(&self, proto: Proto, req: &ExportTraceServiceRequest) -> Outcome {
        match proto {
            Proto::Grpc => {
                let mut c = TraceServiceClient::new(self.grpc.clone());
                let r = self
                    .rt
                    .block_on(async { tokio::time::timeout(GIVE_UP, c.export(req.clone())).await })
                    .expect("the receiver answers within the bound");
                match r {
                    Ok(_) => Outcome::Accepted,
                    Err(s) if s.code() == tonic::Code::Unavailable => {
                        Outcome::Refused(s.message().to_owned())
                    }
                    Err(s) => panic!("expected OK or UNAVAILABLE, got {s:?}"),
                }
            }
            Proto::Http => {
                let resp = self
                    .rt
                    .block_on(async {
                        self.http
                            .post(&self.http_url)
                            .header("content-type", "application/x-protobuf")
                            .body(req.encode_to_vec())
                            .send()
                            .await
                    })
                    .expect("POST /v1/traces");
                let code = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap_or_default().to_owned());
                let body = self
                    .rt
                    .block_on(async { resp.bytes().await })
                    .expect("response body");
                match code {
                    200 => Outcome::Accepted,
                    503 => {
                        let secs: u64 = retry_after
                            .as_deref()
                            .expect("a 503 carries Retry-After")
                            .trim()
                            .parse()
                            .expect("Retry-After is a number of seconds");
                        assert!(secs >= 1, "Retry-After: {secs}");
                        let st = RpcStatus::decode(body.as_ref())
                            .expect("the 503 body is a google.rpc.Status");
                        assert_eq!(st.code, tonic::Code::Unavailable as i32, "{st:?}");
                        Outcome::Refused(st.message)
                    }
                    other => panic!(
                        "expected 200 or 503, got {other}: {}",
                        String::from_utf8_lossy(&body)
                    ),
                }
            }
        }
    }
}

fn pushback_then_delivery(proto: Proto) {
    let salt = match proto {
        Proto::Grpc => 0x51,
        Proto::Http => 0x52,
    };
    let mut hole = BlackHole::start();
    let pa = Ports {
        grpc: free_port(),
        http: free_port(),
        service: free_port(),
    };
    let mut a = start_a(&pa, proto, hole.port);
    let sender = Sender::new(&pa);

    // Fill A up, one request at a time, until it pushes back.
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    let mut n = 0;
    while refused.is_empty() {
        assert!(n < 50, "A accepted 50 requests without pushing back");
        let req = request(salt, n);
        match sender.send(proto, &req) {
            Outcome::Accepted => accepted.push(req),
            Outcome::Refused(msg) => {
                assert!(msg.contains("full"), "refusal says why: {msg}");
                refused.push(req)
            }
        }
        n += 1;
        if n == 1 {
            // The first request is the one the exporter sends into the black hole.
            common::eventually(GIVE_UP, "the exporter connects to the black hole", || {
                hole.accepted() >= 1
            });
        }
    }
    // Nothing moves while the exporter is blocked: more requests are refused too.
    for _ in 0..3 {
        let req = request(salt, n);
        n += 1;
        match sender.send(proto, &req) {
            Outcome::Accepted => panic!("request {} accepted while A is full", n - 1),
            Outcome::Refused(_) => refused.push(req),
        }
    }
    let accepted_spans = (accepted.len() * SPANS_PER_REQUEST) as u64;
    let refused_spans = (refused.len() * SPANS_PER_REQUEST) as u64;
    eprintln!(
        "{proto:?}: {} requests accepted, {} refused",
        accepted.len(),
        refused.len()
    );
    // queue (1) + the batch the sending loop holds while its one consumer is busy + the one
    // in flight + the pipeline's channel (1): at least two requests fit.
    assert!(accepted.len() >= 2, "accepted: {}", accepted.len());
    common::eventually_eq(GIVE_UP, "accepted spans", accepted_spans, || {
        metric(&a, ACCEPTED)
    });
    common::eventually_eq(GIVE_UP, "refused spans", refused_spans, || {
        metric(&a, REFUSED)
    });
    assert_eq!(metric(&a, SENT), 0);
    assert_eq!(metric(&a, QUEUE_CAPACITY), 1);
    let queued = metric(&a, QUEUE_SIZE);
    eprintln!("{proto:?}: queue_size while blocked = {queued} (capacity 1)");

    // Unblock: the black hole goes away, B takes its port.
    let b_port = hole.port;
    hole.close();
    let (bg, bh) = match proto {
        Proto::Grpc => (b_port, free_port()),
        Proto::Http => (free_port(), b_port),
    };
    let mut b = start_b(bg, bh, free_port());
    let out = b.path("out.jsonl");
    common::eventually(GIVE_UP, "A delivers everything it accepted", || {
        metric(&a, SENT) + metric(&a, FAILED) + metric(&a, DROPPED) >= accepted_spans
    });
    assert_eq!(
        metric(&a, FAILED),
        0,
        "A gave up on data it had accepted:\n{}",
        plain_logs(&a)
    );
    assert_eq!(metric(&a, DROPPED), 0);
    assert_eq!(metric(&a, SENT), accepted_spans);
    assert!(
        metric(&a, RETRIES) >= 1,
        "the request caught in the black hole was retried"
    );
    common::eventually(GIVE_UP, "B has written every accepted span", || {
        spans_in_file(&out).len() as u64 >= accepted_spans
    });

    let sa = a.terminate(GIVE_UP);
    assert!(sa.success(), "A: {sa}\n{}", plain_logs(&a));
    let sb = b.terminate(GIVE_UP);
    assert!(sb.success(), "B: {sb}\n{}", plain_logs(&b));

    let got = spans_in_file(&out);
    let want: Vec<String> = common::span_ids(&accepted);
    let missing: Vec<&String> = want.iter().filter(|id| !got.contains_key(*id)).collect();
    assert!(missing.is_empty(), "accepted spans lost: {missing:?}");
    let first: Vec<String> = common::span_ids(std::slice::from_ref(&accepted[0]));
    assert!(
        first.iter().all(|id| got.contains_key(id)),
        "the request that was in the black hole arrived"
    );
    let leaked: Vec<String> = common::span_ids(&refused)
        .into_iter()
        .filter(|id| got.contains_key(id))
        .collect();
    assert!(
        leaked.is_empty(),
        "refused spans were delivered: {leaked:?}"
    );
    let twice: Vec<(&String, &usize)> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "nothing reached a server twice, yet B has duplicates: {twice:?}"
    );
    assert_eq!(got.len(), want.len(), "B has exactly the accepted spans");
}

#[test]
fn grpc_pushback_refuses_with_unavailable_and_delivers_what_it_accepted() {
    pushback_then_delivery(Proto::Grpc);
}

#[test]
fn http_pushback_refuses_with_503_and_delivers_what_it_accepted() {
    pushback_then_delivery(Proto::Http);
}
