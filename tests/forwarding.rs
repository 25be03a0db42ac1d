//! End to end: tradewatch A → OTLP exporter → tradewatch B (a stand-in for Jaeger or a
//! central collector), over gRPC and over HTTP/protobuf.
//!
//! * Happy path: traces, metrics and logs sent to A (several requests, several resources,
//!   varied attributes) reach B's file exporter exactly as sent, record for record, and
//!   A's exporter counters say so.
//! * Outage: B is down for 10 s; A keeps retrying (its counters and `/status` say so)
//!   and, once B is up, everything arrives exactly once.

mod common;

use common::{free_port, Collector};
use opentelemetry_proto::tonic::collector::logs::v1::{
    logs_service_client::LogsServiceClient, ExportLogsServiceRequest,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::Event, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

// ---------------------------------------------------------------------------------------
// OTLP client

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

/// Sends OTLP to one collector, over gRPC (tonic) or HTTP/protobuf (reqwest).
struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    grpc: Channel,
    http_base: String,
}

const GIVE_UP: Duration = Duration::from_secs(30);

impl Client {
    fn new(grpc_port: u16, http_port: u16) -> Client {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let grpc = {
            let _guard = rt.enter();
            Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))
                .expect("endpoint")
                .connect_lazy()
        };
        Client {
            rt,
            http: reqwest::Client::builder()
                .timeout(GIVE_UP)
                .build()
                .expect("reqwest client"),
            grpc,
            http_base: format!("http://127.0.0.1:{http_port}"),
        }
    }

    fn block_on<T>(&self, what: &str, f: impl std::future::Future<Output = T>) -> T {
        self.rt
            .block_on(async { tokio::time::timeout(GIVE_UP, f).await })
            .unwrap_or_else(|_| panic!("{what}: no answer within {GIVE_UP:?}"))
    }

    fn grpc_traces(&self, req: ExportTraceServiceRequest) -> Result<(), tonic::Status> {
        let mut c = TraceServiceClient::new(self.grpc.clone());
        self.block_on("gRPC traces export", c.export(req))
            .map(|_| ())
    }

    fn grpc_metrics(&self, req: ExportMetricsServiceRequest) -> Result<(), tonic::Status> {
        let mut c = MetricsServiceClient::new(self.grpc.clone());
        self.block_on("gRPC metrics export", c.export(req))
            .map(|_| ())
    }

    fn grpc_logs(&self, req: ExportLogsServiceRequest) -> Result<(), tonic::Status> {
        let mut c = LogsServiceClient::new(self.grpc.clone());
        self.block_on("gRPC logs export", c.export(req)).map(|_| ())
    }

    /// POSTs a protobuf body; returns the HTTP status code.
    fn http_post(&self, signal: &str, body: Vec<u8>) -> u16 {
        let url = format!("{}/v1/{signal}", self.http_base);
        let resp = self
            .block_on("HTTP export", async {
                self.http
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
            })
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        resp.status().as_u16()
    }

    fn traces(&self, proto: Proto, req: &ExportTraceServiceRequest) {
        match proto {
            Proto::Grpc => self
                .grpc_traces(req.clone())
                .unwrap_or_else(|s| panic!("gRPC traces export refused: {s:?}")),
            Proto::Http => assert_eq!(
                self.http_post("traces", req.encode_to_vec()),
                200,
                "HTTP traces export refused"
            ),
        }
    }

    fn metrics(&self, proto: Proto, req: &ExportMetricsServiceRequest) {
        match proto {
            Proto::Grpc => self
                .grpc_metrics(req.clone())
                .unwrap_or_else(|s| panic!("gRPC metrics export refused: {s:?}")),
            Proto::Http => assert_eq!(
                self.http_post("metrics", req.encode_to_vec()),
                200,
                "HTTP metrics export refused"
            ),
        }
    }

    fn logs(&self, proto: Proto, req: &ExportLogsServiceRequest) {
        match proto {
            Proto::Grpc => self
                .grpc_logs(req.clone())
                .unwrap_or_else(|s| panic!("gRPC logs export refused: {s:?}")),
            Proto::Http => assert_eq!(
                self.http_post("logs", req.encode_to_vec()),
                200,
                "HTTP logs export refused"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Test data: every span, metric and log record is unique and carries a `seq` attribute.

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: impl Into<String>) -> Value {
    Value::StringValue(v.into())
}

const SYMBOLS: [&str; 4] = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/EUR"];

fn resource(tag: &str, req: usize, k: usize) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", s(format!("bot-{tag}-{k}"))),
            kv("host.id", Value::IntValue((req * 10 + k) as i64)),
            kv("deploy.canary", Value::BoolValue(k % 2 == 1)),
            kv("exchange", s(if k == 0 { "binance" } else { "kraken" })),
        ],
        ..Default::default()
    }
}

fn scope(j: usize) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: format!("tradewatch.test.scope{j}"),
        version: format!("1.{j}.0"),
        attributes: vec![kv("scope.index", Value::IntValue(j as i64))],
        ..Default::default()
    })
}

fn id_bytes(salt: u8, seq: u64, len: usize) -> Vec<u8> {
    let mut v = vec![salt; len];
    v[len - 8..].copy_from_slice(&seq.to_be_bytes());
    v
}

/// `requests` trace requests; each has two resources, the second with two scopes, and a
/// request-dependent number of spans per scope.
fn trace_requests(tag: &str, salt: u8, requests: usize) -> Vec<ExportTraceServiceRequest> {
    let mut seq = 0u64;
    let base = 1_700_000_000_000_000_000u64;
    (0..requests)
        .map(|r| ExportTraceServiceRequest {
            resource_spans: (0..2)
                .map(|k| ResourceSpans {
                    resource: Some(resource(tag, r, k)),
                    scope_spans: (0..=k)
                        .map(|j| ScopeSpans {
                            scope: scope(j),
                            spans: (0..2 + (r % 3))
                                .map(|_| {
                                    seq += 1;
                                    let symbol = SYMBOLS[(seq % 4) as usize];
                                    Span {
                                        trace_id: id_bytes(salt, seq / 3, 16),
                                        span_id: id_bytes(salt, seq, 8),
                                        parent_span_id: if seq.is_multiple_of(3) {
                                            id_bytes(salt, seq - 1, 8)
                                        } else {
                                            Vec::new()
                                        },
                                        name: format!("order.place {seq}"),
                                        kind: (seq % 6) as i32,
                                        start_time_unix_nano: base + seq * 1_000,
                                        end_time_unix_nano: base + seq * 1_000 + 750,
                                        attributes: vec![
                                            kv("seq", Value::IntValue(seq as i64)),
                                            kv("symbol", s(symbol)),
                                            kv("price", Value::DoubleValue(seq as f64 * 1.25)),
                                            kv("filled", Value::BoolValue(seq.is_multiple_of(2))),
                                            kv(
                                                "legs",
                                                Value::ArrayValue(ArrayValue {
                                                    values: vec![
                                                        AnyValue {
                                                            value: Some(s("buy")),
                                                        },
                                                        AnyValue {
                                                            value: Some(Value::IntValue(
                                                                seq as i64 * 2,
                                                            )),
                                                        },
                                                    ],
                                                }),
                                            ),
                                        ],
                                        events: if seq % 2 == 1 {
                                            vec![Event {
                                                time_unix_nano: base + seq * 1_000 + 100,
                                                name: "fill".into(),
                                                attributes: vec![kv(
                                                    "qty",
                                                    Value::DoubleValue(0.5),
                                                )],
                                                dropped_attributes_count: 0,
                                            }]
                                        } else {
                                            Vec::new()
                                        },
                                        status: Some(Status {
                                            message: if seq.is_multiple_of(5) {
                                                "rejected by exchange".into()
                                            } else {
                                                String::new()
                                            },
                                            code: if seq.is_multiple_of(5) {
                                                StatusCode::Error as i32
                                            } else {
                                                StatusCode::Ok as i32
                                            },
                                        }),
                                        ..Default::default()
                                    }
                                })
                                .collect(),
                            schema_url: String::new(),
                        })
                        .collect(),
                    schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
                })
                .collect(),
        })
        .collect()
}

fn number_point(seq: u64, v: number_data_point::Value) -> NumberDataPoint {
    NumberDataPoint {
        attributes: vec![
            kv("seq", Value::IntValue(seq as i64)),
            kv("symbol", s(SYMBOLS[(seq % 4) as usize])),
        ],
        start_time_unix_nano: 1_700_000_000_000_000_000,
        time_unix_nano: 1_700_000_000_000_000_000 + seq,
        value: Some(v),
        ..Default::default()
    }
}

/// Each request: two resources, each with a gauge (2 points), a monotonic sum (3 points)
/// and a histogram (1 point); metric names are unique.
fn metric_requests(tag: &str, requests: usize) -> Vec<ExportMetricsServiceRequest> {
    let mut seq = 0u64;
    let mut next = || {
        seq += 1;
        seq
    };
    (0..requests)
        .map(|r| ExportMetricsServiceRequest {
            resource_metrics: (0..2)
                .map(|k| ResourceMetrics {
                    resource: Some(resource(tag, r, k)),
                    scope_metrics: vec![ScopeMetrics {
                        scope: scope(k),
                        metrics: vec![
                            Metric {
                                name: format!("tw.position.{r}.{k}"),
                                description: "open position".into(),
                                unit: "{contracts}".into(),
                                data: Some(Data::Gauge(Gauge {
                                    data_points: (0..2)
                                        .map(|i| {
                                            number_point(
                                                next(),
                                                number_data_point::Value::AsDouble(i as f64 + 0.25),
                                            )
                                        })
                                        .collect(),
                                })),
                                ..Default::default()
                            },
                            Metric {
                                name: format!("tw.orders.{r}.{k}"),
                                unit: "{orders}".into(),
                                data: Some(Data::Sum(Sum {
                                    data_points: (0..3)
                                        .map(|i| {
                                            number_point(
                                                next(),
                                                number_data_point::Value::AsInt(100 + i),
                                            )
                                        })
                                        .collect(),
                                    aggregation_temporality: 2,
                                    is_monotonic: true,
                                })),
                                ..Default::default()
                            },
                            Metric {
                                name: format!("tw.latency.{r}.{k}"),
                                unit: "ms".into(),
                                data: Some(Data::Histogram(Histogram {
                                    data_points: vec![HistogramDataPoint {
                                        attributes: vec![kv("seq", Value::IntValue(next() as i64))],
                                        start_time_unix_nano: 1_700_000_000_000_000_000,
                                        time_unix_nano: 1_700_000_001_000_000_000,
                                        count: 6,
                                        sum: Some(42.5),
                                        bucket_counts: vec![1, 2, 3],
                                        explicit_bounds: vec![5.0, 10.0],
                                        min: Some(0.5),
                                        max: Some(12.0),
                                        ..Default::default()
                                    }],
                                    aggregation_temporality: 2,
                                })),
                                ..Default::default()
                            },
                        ],
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                })
                .collect(),
        })
        .collect()
}

/// Each request: two resources with three log records each; bodies vary in kind.
fn log_requests(tag: &str, salt: u8, requests: usize) -> Vec<ExportLogsServiceRequest> {
    let mut seq = 0u64;
    (0..requests)
        .map(|r| ExportLogsServiceRequest {
            resource_logs: (0..2)
                .map(|k| ResourceLogs {
                    resource: Some(resource(tag, r, k)),
                    scope_logs: vec![ScopeLogs {
                        scope: scope(k),
                        log_records: (0..3)
                            .map(|_| {
                                seq += 1;
                                let body = if seq.is_multiple_of(3) {
                                    Value::KvlistValue(KeyValueList {
                                        values: vec![
                                            kv("event", s("order_rejected")),
                                            kv("code", Value::IntValue(seq as i64)),
                                        ],
                                    })
                                } else {
                                    s(format!(
                                        "order {seq} filled on {}",
                                        SYMBOLS[(seq % 4) as usize]
                                    ))
                                };
                                LogRecord {
                                    time_unix_nano: 1_700_000_000_000_000_000 + seq,
                                    observed_time_unix_nano: 1_700_000_000_000_000_100 + seq,
                                    severity_number: if seq.is_multiple_of(3) { 17 } else { 9 },
                                    severity_text: if seq.is_multiple_of(3) {
                                        "ERROR"
                                    } else {
                                        "INFO"
                                    }
                                    .into(),
                                    body: Some(AnyValue { value: Some(body) }),
                                    attributes: vec![
                                        kv("seq", Value::IntValue(seq as i64)),
                                        kv("pair", s(SYMBOLS[(seq % 4) as usize])),
                                    ],
                                    trace_id: id_bytes(salt, seq, 16),
                                    span_id: id_bytes(salt, seq, 8),
                                    ..Default::default()
                                }
                            })
                            .collect(),
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                })
                .collect(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Flattening and comparing

/// One record with everything around it that a receiver must keep.
#[derive(Debug, Clone, PartialEq)]
struct Rec<T> {
    resource: Option<Resource>,
    resource_schema: String,
    scope: Option<InstrumentationScope>,
    item: T,
}

fn seq_of(attrs: &[KeyValue]) -> i64 {
    attrs
        .iter()
        .find(|kv| kv.key == "seq")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match v.value {
            Some(Value::IntValue(i)) => Some(i),
            _ => None,
        })
        .expect("every test record has an integer seq attribute")
}

fn flat_spans(reqs: &[ExportTraceServiceRequest]) -> Vec<(Vec<u8>, Rec<Span>)> {
    let mut out = Vec::new();
    for r in reqs {
        for rs in &r.resource_spans {
            for ss in &rs.scope_spans {
                for sp in &ss.spans {
                    out.push((
                        sp.span_id.clone(),
                        Rec {
                            resource: rs.resource.clone(),
                            resource_schema: rs.schema_url.clone(),
                            scope: ss.scope.clone(),
                            item: sp.clone(),
                        },
                    ));
                }
            }
        }
    }
    out
}

fn flat_metrics(reqs: &[ExportMetricsServiceRequest]) -> Vec<(String, Rec<Metric>)> {
    let mut out = Vec::new();
    for r in reqs {
        for rm in &r.resource_metrics {
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    out.push((
                        m.name.clone(),
                        Rec {
                            resource: rm.resource.clone(),
                            resource_schema: rm.schema_url.clone(),
                            scope: sm.scope.clone(),
                            item: m.clone(),
                        },
                    ));
                }
            }
        }
    }
    out
}

fn flat_logs(reqs: &[ExportLogsServiceRequest]) -> Vec<(i64, Rec<LogRecord>)> {
    let mut out = Vec::new();
    for r in reqs {
        for rl in &r.resource_logs {
            for sl in &rl.scope_logs {
                for l in &sl.log_records {
                    out.push((
                        seq_of(&l.attributes),
                        Rec {
                            resource: rl.resource.clone(),
                            resource_schema: rl.schema_url.clone(),
                            scope: sl.scope.clone(),
                            item: l.clone(),
                        },
                    ));
                }
            }
        }
    }
    out
}

fn points(reqs: &[ExportMetricsServiceRequest]) -> u64 {
    flat_metrics(reqs)
        .iter()
        .map(|(_, m)| match &m.item.data {
            Some(Data::Gauge(g)) => g.data_points.len() as u64,
            Some(Data::Sum(s)) => s.data_points.len() as u64,
            Some(Data::Histogram(h)) => h.data_points.len() as u64,
            _ => panic!("unexpected metric kind in test data"),
        })
        .sum()
}

/// Asserts that `got` holds exactly the records of `sent`: none missing, none extra, none
/// twice, each equal to what was sent.
fn assert_same<K: Ord + Clone + Debug, V: PartialEq + Debug>(
    what: &str,
    sent: Vec<(K, V)>,
    got: Vec<(K, V)>,
) {
    let mut want = BTreeMap::new();
    for (k, v) in sent {
        assert!(
            want.insert(k.clone(), v).is_none(),
            "test data repeats {what} key {k:?}"
        );
    }
    let mut have: BTreeMap<K, Vec<V>> = BTreeMap::new();
    for (k, v) in got {
        have.entry(k).or_default().push(v);
    }
    let missing: Vec<&K> = want.keys().filter(|k| !have.contains_key(k)).collect();
    let extra: Vec<&K> = have.keys().filter(|k| !want.contains_key(k)).collect();
    let twice: Vec<(&K, usize)> = have
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, v)| (k, v.len()))
        .collect();
    let differ: Vec<&K> = have
        .iter()
        .filter(|(k, v)| want.get(*k).is_some_and(|w| v.iter().any(|x| x != w)))
        .map(|(k, _)| k)
        .collect();
    let first_diff = differ
        .first()
        .map(|k| format!("\n  sent: {:?}\n  got:  {:?}", want[*k], have[*k]))
        .unwrap_or_default();
    assert!(
        missing.is_empty() && extra.is_empty() && twice.is_empty() && differ.is_empty(),
        "{what}: {} sent; {} missing {missing:?}; {} unexpected {extra:?}; {} received more than once {twice:?}; {} differ {differ:?}{first_diff}",
        want.len(),
        missing.len(),
        extra.len(),
        twice.len(),
        differ.len(),
    );
}

/// What a file exporter wrote, decoded back into OTLP requests.
struct FileOutput {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
    logs: Vec<ExportLogsServiceRequest>,
    /// The raw lines, for checks independent of the proto types' serde.
    lines: Vec<serde_json::Value>,
}

fn read_output(path: &std::path::Path) -> FileOutput {
    let lines = common::read_jsonl(path);
    let mut out = FileOutput {
        traces: Vec::new(),
        metrics: Vec::new(),
        logs: Vec::new(),
        lines: lines.clone(),
    };
    for l in lines {
        let text = l.to_string();
        if l.get("resourceSpans").is_some() {
            out.traces.push(
                serde_json::from_value(l)
                    .unwrap_or_else(|e| panic!("trace line does not decode: {e}: {text}")),
            );
        } else if l.get("resourceMetrics").is_some() {
            out.metrics.push(
                serde_json::from_value(l)
                    .unwrap_or_else(|e| panic!("metric line does not decode: {e}: {text}")),
            );
        } else if l.get("resourceLogs").is_some() {
            out.logs.push(
                serde_json::from_value(l)
                    .unwrap_or_else(|e| panic!("log line does not decode: {e}: {text}")),
            );
        } else {
            panic!("unexpected line in {}: {text}", path.display());
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// Collectors

struct Ports {
    grpc: u16,
    http: u16,
    service: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            grpc: free_port(),
            http: free_port(),
            service: free_port(),
        }
    }

    fn of(&self, proto: Proto) -> u16 {
        match proto {
            Proto::Grpc => self.grpc,
            Proto::Http => self.http,
        }
    }
}

/// B: OTLP in (both protocols), every signal to `out.jsonl`.
fn start_b(p: &Ports) -> Collector {
    let cfg = format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{g}"
http = "127.0.0.1:{h}"

[exporters.file]
path = "out.jsonl"

[service]
http = "127.0.0.1:{s}"

[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["file"]

[service.pipelines.metrics]
receivers = ["otlp"]
exporters = ["file"]

[service.pipelines.logs]
receivers = ["otlp"]
exporters = ["file"]
"#,
        g = p.grpc,
        h = p.http,
        s = p.service
    );
    Collector::start(&cfg, p.service)
}

/// A: OTLP in, every signal out through `otlp/b` to B's `b_port` over `proto`.
fn start_a(p: &Ports, proto: Proto, b_port: u16) -> Collector {
    let cfg = format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{g}"
http = "127.0.0.1:{h}"

[exporters."otlp/b"]
endpoint = "http://127.0.0.1:{b_port}"
protocol = "{proto}"
timeout = "2s"

[exporters."otlp/b".retry_on_failure]
initial_interval = "100ms"
max_interval = "1s"

[exporters."otlp/b".sending_queue]
queue_size = 64
num_consumers = 4

[service]
http = "127.0.0.1:{s}"
shutdown_timeout = "10s"

[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["otlp/b"]

[service.pipelines.metrics]
receivers = ["otlp"]
exporters = ["otlp/b"]

[service.pipelines.logs]
receivers = ["otlp"]
exporters = ["otlp/b"]
"#,
        g = p.grpc,
        h = p.http,
        s = p.service,
        proto = proto.name(),
    );
    Collector::start(&cfg, p.service)
}

fn exporter_metric(c: &Collector, name: &str, signal: &str) -> u64 {
    c.metric(&format!(
        r#"tradewatch_exporter_{name}_total{{exporter="otlp/b",signal="{signal}"}}"#
    )) as u64
}

fn retries(c: &Collector) -> u64 {
    c.metric(r#"tradewatch_exporter_retries_total{exporter="otlp/b"}"#) as u64
}

fn accepted(c: &Collector, signal: &str) -> u64 {
    c.metric(&format!(
        r#"tradewatch_receiver_accepted_items_total{{receiver="otlp",signal="{signal}"}}"#
    )) as u64
}

/// The `/status` entry of exporter `otlp/b`.
fn exporter_status(c: &Collector) -> serde_json::Value {
    let st = c.status();
    st["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["kind"] == "exporter" && x["id"] == "otlp/b")
        .cloned()
        .unwrap_or_else(|| panic!("no exporter otlp/b in /status: {st}"))
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

fn span_count(path: &std::path::Path) -> usize {
    common::spans_in(&common::read_jsonl(path)).len()
}

// ---------------------------------------------------------------------------------------
// Happy path

fn forwards_everything(proto: Proto) {
    let pb = Ports::new();
    let pa = Ports::new();
    let mut b = start_b(&pb);
    let mut a = start_a(&pa, proto, pb.of(proto));

    let tag = proto.name();
    let traces = trace_requests(tag, 0xa1, 6);
    let metrics = metric_requests(tag, 4);
    let logs = log_requests(tag, 0xb2, 5);
    let n_spans = flat_spans(&traces).len() as u64;
    let n_points = points(&metrics);
    let n_logs = flat_logs(&logs).len() as u64;

    // Interleave the signals, and send in the protocol under test.
    let client = Client::new(pa.grpc, pa.http);
    for i in 0..traces.len().max(metrics.len()).max(logs.len()) {
        if let Some(r) = traces.get(i) {
            client.traces(proto, r);
        }
        if let Some(r) = metrics.get(i) {
            client.metrics(proto, r);
        }
        if let Some(r) = logs.get(i) {
            client.logs(proto, r);
        }
    }
    for (signal, n) in [("traces", n_spans), ("metrics", n_points), ("logs", n_logs)] {
        common::eventually_eq(GIVE_UP, &format!("accepted {signal}"), n, || {
            accepted(&a, signal)
        });
    }

    let out = b.path("out.jsonl");
    common::eventually(GIVE_UP, "A reports every item sent", || {
        exporter_metric(&a, "sent_items", "traces") >= n_spans
            && exporter_metric(&a, "sent_items", "metrics") >= n_points
            && exporter_metric(&a, "sent_items", "logs") >= n_logs
    });
    common::eventually(GIVE_UP, "B has written every span", || {
        span_count(&out) as u64 >= n_spans
    });

    for (signal, n) in [("traces", n_spans), ("metrics", n_points), ("logs", n_logs)] {
        assert_eq!(exporter_metric(&a, "sent_items", signal), n, "{signal}");
        assert_eq!(
            exporter_metric(&a, "send_failed_items", signal),
            0,
            "{signal}"
        );
        assert_eq!(exporter_metric(&a, "dropped_items", signal), 0, "{signal}");
    }
    assert_eq!(retries(&a), 0, "B was up all along: nothing to retry");
    common::eventually_eq(GIVE_UP, "otlp/b's state", "ok".to_owned(), || {
        exporter_status(&a)["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });

    // Both drain and stop cleanly; B's file is then final.
    let sa = a.terminate(GIVE_UP);
    assert!(sa.success(), "A: {sa}\n{}", plain_logs(&a));
    let sb = b.terminate(GIVE_UP);
    assert!(sb.success(), "B: {sb}\n{}", plain_logs(&b));

    let got = read_output(&out);
    assert_same("spans", flat_spans(&traces), flat_spans(&got.traces));
    assert_same(
        "metrics",
        flat_metrics(&metrics),
        flat_metrics(&got.metrics),
    );
    assert_same("log records", flat_logs(&logs), flat_logs(&got.logs));

    // The same, read straight from the JSON (independent of the proto types' serde).
    let json_spans = common::spans_in(&got.lines);
    let sent_spans = flat_spans(&traces);
    assert_eq!(json_spans.len(), sent_spans.len());
    let by_id: BTreeMap<String, &Rec<Span>> = sent_spans.iter().map(|(k, v)| (hex(k), v)).collect();
    for (res, span) in &json_spans {
        let id = span["spanId"].as_str().expect("spanId is a string");
        let sent = by_id
            .get(&id.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("unexpected span {id}"));
        let attrs = common::attrs(&span["attributes"]);
        assert_eq!(attrs["seq"], seq_of(&sent.item.attributes), "span {id}");
        assert_eq!(span["name"], sent.item.name.as_str(), "span {id}");
        let rattrs = common::attrs(&res["attributes"]);
        let Some(Value::StringValue(svc)) = sent
            .resource
            .as_ref()
            .and_then(|r| r.attributes[0].value.as_ref())
            .and_then(|v| v.value.clone())
        else {
            panic!("test resources start with service.name")
        };
        assert_eq!(rattrs["service.name"], svc.as_str(), "span {id}");
    }
    let json_logs = common::logs_in(&got.lines);
    assert_eq!(json_logs.len() as u64, n_logs);
    assert!(json_logs.iter().any(|(_, l)| l["body"]["stringValue"]
        .as_str()
        .is_some_and(|b| b.starts_with("order "))));
}

#[test]
fn grpc_forwarding_delivers_exactly_what_was_received() {
    forwards_everything(Proto::Grpc);
}

#[test]
fn http_forwarding_delivers_exactly_what_was_received() {
    forwards_everything(Proto::Http);
}

// ---------------------------------------------------------------------------------------
// Outage: B down for 10 s, then up

fn survives_outage(proto: Proto) {
    let pb = Ports::new();
    let pa = Ports::new();
    let mut a = start_a(&pa, proto, pb.of(proto));

    const K: usize = 12;
    let traces = trace_requests(proto.name(), 0xc3, K);
    let total = flat_spans(&traces).len() as u64;
    let client = Client::new(pa.grpc, pa.http);
    for r in &traces {
        client.traces(proto, r);
    }
    common::eventually_eq(GIVE_UP, "A took every request", total, || {
        accepted(&a, "traces")
    });

    // Ten seconds with B down: A retries, delivers nothing, and says it is degraded.
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(500));
        let r = retries(&a);
        assert_eq!(exporter_metric(&a, "sent_items", "traces"), 0, "B is down");
        assert_eq!(exporter_metric(&a, "send_failed_items", "traces"), 0);
        assert_eq!(exporter_metric(&a, "dropped_items", "traces"), 0);
        if r > 0 {
            let st = exporter_status(&a);
            assert_eq!(st["state"], "degraded", "while B is down: {st}");
            let msg = st["last_error"]["message"].as_str().unwrap_or_default();
            assert!(!msg.is_empty(), "a last_error while B is down: {st}");
            assert_eq!(a.status()["status"], "DEGRADED");
        }
        seen.push(r);
    }
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "retries_total never goes down: {seen:?}"
    );
    let half = seen.len() / 2;
    assert!(
        seen[0] < seen[half] && seen[half] < seen[seen.len() - 1],
        "retries_total keeps growing while B is down: {seen:?}"
    );
    let before = exporter_status(&a);
    eprintln!(
        "{proto:?} outage: retries over 10 s: {seen:?}; last_error: {}",
        before["last_error"]["message"]
    );

    // B comes up on the port A has been trying.
    let mut b = start_b(&pb);
    let out = b.path("out.jsonl");
    common::eventually(GIVE_UP, "B has every span", || {
        span_count(&out) as u64 >= total
    });
    common::eventually(GIVE_UP, "A counts every span sent", || {
        exporter_metric(&a, "sent_items", "traces") >= total
    });
    assert_eq!(exporter_metric(&a, "sent_items", "traces"), total);
    assert_eq!(exporter_metric(&a, "send_failed_items", "traces"), 0);
    assert_eq!(exporter_metric(&a, "dropped_items", "traces"), 0);
    assert!(retries(&a) > 0);
    common::eventually(Duration::from_secs(10), "otlp/b back to ok", || {
        exporter_status(&a)["state"] == "ok"
    });
    assert!(
        !plain_logs(&a).contains("data dropped"),
        "nothing given up:\n{}",
        plain_logs(&a)
    );

    let sa = a.terminate(GIVE_UP);
    assert!(sa.success(), "A: {sa}\n{}", plain_logs(&a));
    let sb = b.terminate(GIVE_UP);
    assert!(sb.success(), "B: {sb}\n{}", plain_logs(&b));
    let got = read_output(&out);
    assert_same("spans", flat_spans(&traces), flat_spans(&got.traces));
}

#[test]
fn grpc_forwarding_survives_a_10s_outage() {
    survives_outage(Proto::Grpc);
}

#[test]
fn http_forwarding_survives_a_10s_outage() {
    survives_outage(Proto::Http);
}
