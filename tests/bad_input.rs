//! Bad input on both OTLP protocols: garbage protobuf, invalid JSON, wrong content type,
//! broken compression, bodies over `max_request_size`, unknown methods and missing or
//! wrong bearer tokens. Each gets the right status and message, is counted in
//! `/metrics`, never reaches an exporter, and the process keeps serving — including
//! HTTP/1.1 keep-alive clients whose request was refused before its body was read.

mod common;

use bytes::Bytes;
use common::{metric_value, Collector};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::io::Write;
use std::time::Duration;
use tower::ServiceExt;

const LIMIT: usize = 64 * 1024;
const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const METRICS_EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
const LOGS_EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// `google.rpc.Status`, the body of OTLP/HTTP protobuf error responses.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

// gRPC status codes used below.
const OK: i32 = 0;
const INVALID_ARGUMENT: i32 = 3;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNIMPLEMENTED: i32 = 12;
const INTERNAL: i32 = 13;
const UNAUTHENTICATED: i32 = 16;

// ---------------------------------------------------------------------------------------
// Requests

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A valid trace export request with one span whose ids are derived from `n`, and an
/// attribute `padding` of `pad` bytes to make it as large as needed.
fn trace_request(n: u8, name: &str, pad: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue("bad-input-test".into()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "bad_input".into(),
                    ..Default::default()
                }),
                spans: vec![Span {
                    trace_id: trace_id(n).to_vec(),
                    span_id: span_id(n).to_vec(),
                    name: name.into(),
                    kind: 2,
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_000_500_000_000,
                    attributes: vec![
                        kv("order.qty", any_value::Value::IntValue(100 + i64::from(n))),
                        kv("padding", any_value::Value::StringValue("x".repeat(pad))),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn trace_id(n: u8) -> [u8; 16] {
    let mut id = [0xab; 16];
    id[15] = n;
    id
}

fn span_id(n: u8) -> [u8; 8] {
    let mut id = [0xcd; 8];
    id[7] = n;
    id
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn logs_request(body: &str) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 1_700_000_000_000_000_000,
                    severity_text: "INFO".into(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(body.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// An OTLP/JSON trace request written by hand, as a non-Rust SDK would send it:
/// hex ids, an `intValue` as a string, enum as a number, times as strings.
fn json_trace_request(n: u8) -> String {
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"bad-input-test"}}}}]}},"scopeSpans":[{{"scope":{{"name":"bad_input"}},"spans":[{{"traceId":"{}","spanId":"{}","name":"json-span","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000500000000","attributes":[{{"key":"order.qty","value":{{"intValue":"{}"}}}},{{"key":"venue","value":{{"stringValue":"XNAS"}}}}]}}]}}]}}]}}"#,
        hex(&trace_id(n)),
        hex(&span_id(n)),
        100 + u32::from(n)
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// A small gzip body that inflates to more than the limit: a valid trace request whose
/// padding is a long run of one byte.
fn gzip_bomb() -> Vec<u8> {
    let inflated = trace_request(200, "bomb", LIMIT + 1024).encode_to_vec();
    let z = gzip(&inflated);
    assert!(
        z.len() < 4096,
        "the bomb should be small: {} bytes",
        z.len()
    );
    z
}

fn truncated_gzip() -> Vec<u8> {
    let z = gzip(&trace_request(201, "truncated-gzip", 2000).encode_to_vec());
    z[..z.len() / 2].to_vec()
}

/// A valid request cut in the middle of a length-delimited field.
fn truncated_protobuf() -> Vec<u8> {
    let b = trace_request(202, "truncated", 100).encode_to_vec();
    b[..b.len() / 2].to_vec()
}

// ---------------------------------------------------------------------------------------
// OTLP/HTTP

struct HttpReply {
    status: u16,
    version: reqwest::Version,
    content_type: String,
    /// The `Connection` header, if any.
    connection: Option<String>,
    body: Bytes,
}

impl HttpReply {
    fn rpc_status(&self) -> RpcStatus {
        assert_eq!(
            self.content_type, "application/x-protobuf",
            "error body type"
        );
        RpcStatus::decode(self.body.as_ref()).unwrap_or_else(|e| {
            panic!(
                "error body is not a google.rpc.Status: {e}: {:?}",
                self.body
            )
        })
    }

    fn json(&self) -> serde_json::Value {
        assert_eq!(self.content_type, "application/json", "error body type");
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON: {e}: {:?}", self.body))
    }

    /// The (code, message) of an error body, which must be in `encoding`.
    fn error(&self, encoding: ErrorBody, what: &str) -> (i32, String) {
        match encoding {
            ErrorBody::Protobuf => {
                let s = self.rpc_status();
                (s.code, s.message)
            }
            ErrorBody::Json => {
                let v = self.json();
                let obj = v
                    .as_object()
                    .unwrap_or_else(|| panic!("{what}: error body is not an object: {v}"));
                assert_eq!(
                    obj.len(),
                    2,
                    "{what}: error body has exactly code and message: {v}"
                );
                (
                    v["code"]
                        .as_i64()
                        .unwrap_or_else(|| panic!("{what}: no numeric code: {v}"))
                        as i32,
                    v["message"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{what}: no message: {v}"))
                        .to_owned(),
                )
            }
        }
    }
}

async fn post(
    client: &reqwest::Client,
    port: u16,
    path: &str,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    auth: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> HttpReply {
    let mut req = client
        .post(format!("http://127.0.0.1:{port}{path}"))
        .body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(ce) = content_encoding {
        req = req.header("content-encoding", ce);
    }
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e:?}"));
    let status = resp.status().as_u16();
    let version = resp.version();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_owned())
    };
    let content_type = header("content-type").unwrap_or_default();
    let connection = header("connection");
    let body = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: response body: {e:?}"));
    HttpReply {
        status,
        version,
        content_type,
        connection,
        body,
    }
}

// ---------------------------------------------------------------------------------------
// OTLP/gRPC, with hand-built frames

struct GrpcReply {
    http_status: u16,
    code: Option<i32>,
    message: String,
}

fn frame(compressed: bool, message: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(message.len() + 5);
    f.push(u8::from(compressed));
    f.extend_from_slice(&(message.len() as u32).to_be_bytes());
    f.extend_from_slice(message);
    f
}

async fn grpc_channel(port: u16) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the OTLP/gRPC port")
}

/// Sends one HTTP/2 request with exactly `body` and reads `grpc-status` / `grpc-message`
/// from the headers (trailers-only replies) or the trailers.
async fn grpc_raw(
    channel: &tonic::transport::Channel,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> GrpcReply {
    let body = tonic::body::Body::new(http_body_util::Full::new(Bytes::from(body)));
    grpc_send(channel, path, headers, body).await
}

/// Like `grpc_raw`, but the request body is `first` and then never ends: a reply can only
/// come from a server that answers without reading the body.
async fn grpc_unfinished(
    channel: &tonic::transport::Channel,
    path: &str,
    headers: &[(&str, &str)],
    first: Vec<u8>,
) -> GrpcReply {
    use futures_util::StreamExt;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
        .chain(futures_util::stream::pending());
    let body = tonic::body::Body::new(axum::body::Body::from_stream(stream));
    tokio::time::timeout(
        Duration::from_secs(10),
        grpc_send(channel, path, headers, body),
    )
    .await
    .unwrap_or_else(|_| panic!("gRPC {path}: no answer within 10 s to a request still being sent"))
}

async fn grpc_send(
    channel: &tonic::transport::Channel,
    path: &str,
    headers: &[(&str, &str)],
    body: tonic::body::Body,
) -> GrpcReply {
    let mut req = http::Request::builder().method("POST").uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body).expect("request");
    let resp = channel
        .clone()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| panic!("gRPC {path}: {e:?}"));
    let http_status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let from_headers = tonic::Status::from_header_map(&parts.headers);
    let collected = http_body_util::BodyExt::collect(body).await;
    let status = from_headers.or_else(|| {
        collected
            .ok()
            .and_then(|c| c.trailers().cloned())
            .and_then(|t| tonic::Status::from_header_map(&t))
    });
    GrpcReply {
        http_status,
        code: status.as_ref().map(|s| s.code() as i32),
        message: status.map(|s| s.message().to_owned()).unwrap_or_default(),
    }
}

async fn grpc_export(
    channel: &tonic::transport::Channel,
    path: &str,
    extra: &[(&str, &str)],
    body: Vec<u8>,
) -> GrpcReply {
    let mut headers = vec![("content-type", "application/grpc"), ("te", "trailers")];
    headers.extend_from_slice(extra);
    grpc_raw(channel, path, &headers, body).await
}

// ---------------------------------------------------------------------------------------

fn config(grpc: u16, http: u16, service: u16, extra: &str) -> String {
    let mut c = format!(
        r#"[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "127.0.0.1:{http}"
max_request_size = "64KiB"
{extra}
[exporters.file]
path = "out.jsonl"

[service]
http = "127.0.0.1:{service}"
"#
    );
    for signal in ["traces", "metrics", "logs"] {
        c.push_str(&format!(
            "\n[service.pipelines.{signal}]\nreceivers = [\"otlp\"]\nexporters = [\"file\"]\n"
        ));
    }
    c
}

fn start(extra: &str, env: &[(&str, &str)]) -> (Collector, u16, u16) {
    let (g, h, s) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let c = Collector::start_with_env(&config(g, h, s, extra), s, env);
    (c, g, h)
}

/// An HTTP/1.1 client that keeps connections alive and reuses them, as SDKs do. A refused
/// request whose body the collector did not read (a 413 by `Content-Length`, a 401) must
/// not leave a dead connection in its pool: every 4xx says `Connection: close`.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("reqwest client")
}

/// An HTTP/1.1 refusal: the status, and the connection is closed, saying so.
fn assert_http1_refusal_closes(r: &HttpReply, what: &str) {
    assert_eq!(r.version, reqwest::Version::HTTP_11, "{what}: HTTP version");
    assert!(
        (400..500).contains(&r.status),
        "{what}: status {}",
        r.status
    );
    assert_eq!(
        r.connection.as_deref(),
        Some("close"),
        "{what}: a 4xx on HTTP/1.1 says `Connection: close`"
    );
}

/// An HTTP/1.1 success keeps the connection alive.
fn assert_http1_ok_keeps_alive(r: &HttpReply, what: &str) {
    assert_eq!(
        (r.status, r.version),
        (200, reqwest::Version::HTTP_11),
        "{what}: {:?}",
        r.body
    );
    assert_eq!(
        r.connection, None,
        "{what}: a success does not close the connection"
    );
}

/// How a rejected request must be counted in `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counted {
    BadRequest,
    TooLarge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorBody {
    /// `application/x-protobuf` `google.rpc.Status`.
    Protobuf,
    /// `application/json` `{"code":..,"message":..}`.
    Json,
}

struct HttpCase {
    name: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    content_encoding: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: i32,
    /// Every one of these must be in the message.
    message: &'static [&'static str],
    error_body: ErrorBody,
    counted: Counted,
}

fn http_cases() -> Vec<HttpCase> {
    use Counted::*;
    use ErrorBody::*;
    let proto = Some("application/x-protobuf");
    let json = Some("application/json");
    let mut big_json = json_trace_request(90);
    big_json = big_json.replace("XNAS", &"X".repeat(LIMIT));
    vec![
        HttpCase {
            name: "garbage protobuf on /v1/traces",
            path: "/v1/traces",
            content_type: proto,
            content_encoding: None,
            body: vec![0xff, 0xff, 0xff, 0xff],
            status: 400,
            code: INVALID_ARGUMENT,
            message: &["invalid protobuf"],
            error_body: Protobuf,
            counted: BadRequest,
        },
        HttpCase {
            name: "truncated protobuf on /v1/traces",
            path: "/v1/traces",
            content_type: proto,
            content_encoding: None,
            body: truncated_protobuf(),
            status: 400,
            code: INVALID_ARGUMENT,
            message: &["invalid protobuf"],
            error_body: Protobuf,
            counted: BadRequest,
        },
        HttpCase {
            name: "garbage protobuf (application/protobuf) on /v1/metrics",
            path: "/v1/metrics",
            content_type: Some("application/protobuf"),
            content_encoding: None,
            // Field 1, length-delimited, says 5 bytes, has 1.
            body: vec![0x0a, 0x05, 0x01],
            status: 400,
            code: INVALID_ARGUMENT,
            message: &["invalid protobuf"],
            error_body: Protobuf,
            counted: BadRequest,
        },
        HttpCase {
            name: "garbage protobuf on /v1/logs",
            path: "/v1/logs",
            content_type: proto,
            content_encoding: None,
            body: vec![0xff, 0xff, 0xff, 0xff],
            status: 400,
            code: INVALID_ARGUMENT,
            message: &["invalid protobuf"],
            error_body: Protobuf,
            counted: BadRequest,
        },
        HttpCase {
            name: "unterminated JSON on /v1/traces",
            path: "/v1/traces",
            content_type: json,
            content_encoding: None,
            body: br#"{"resourceSpans": ["#.to_vec(),
            status: 400,
            code: INVALID_ARGUMENT,
            message: &["invalid OTLP/JSON traces request"],
            error_body: Json,
            counted: BadRequest,
        },
        HttpCase {
            name: "JSON of the wrong shape on /v1/traces",
            path: "/v1/traces",
            content_type: Some("application/json; charset=utf-8"),
            content_encoding: None,
            body: br#"{"resourceSpans": 5}"#.to_vec(),
            status: 400,
            code: INVALID_ARGUMENT,
            message: &["invalid OTLP/JSON traces request", "invalid type"],
            error_body: Json,
            counted: BadRequest,
        },
        HttpCase {
            name: "invalid JSON on /v1/metrics",
            path: "/v1/metrics",
            content_type: json,
            content_encoding: None,
            body: br#"{"resourceMetrics": [{]}"#.to_vec(),
            status: 400,
            code: INVALID_ARGUMENT,
            message: &["invalid OTLP/JSON metrics request"],
            error_body: Json,
            counted: BadRequest,
        },
        HttpCase {
            name: "not JSON at all on /v1/logs",
            path: "/v1/logs",
            content_type: json,
            content_encoding: None,
            body: b"resourceLogs=1".to_vec(),
            status: 400,
            code: INVALID_ARGUMENT,
            message: &["invalid OTLP/JSON logs request"],
            error_body: Json,
            counted: BadRequest,
        },
        HttpCase {
            name: "text/plain on /v1/traces",
            path: "/v1/traces",
            content_type: Some("text/plain"),
            content_encoding: None,
            body: json_trace_request(91).into_bytes(),
            status: 415,
            code: INVALID_ARGUMENT,
            message: &[
                "\"text/plain\"",
                "application/x-protobuf",
                "application/json",
            ],
            error_body: Json,
            counted: BadRequest,
        },
        HttpCase {
            name: "no content-type on /v1/traces",
            path: "/v1/traces",
            content_type: None,
            content_encoding: None,
            body: trace_request(92, "no-content-type", 10).encode_to_vec(),
            status: 415,
            code: INVALID_ARGUMENT,
            message: &["(none)", "application/x-protobuf", "application/json"],
            error_body: Json,
            counted: BadRequest,
        },
        HttpCase {
            name: "application/xml on /v1/metrics",
            path: "/v1/metrics",
            content_type: Some("application/xml"),
            content_encoding: None,
            body: b"<resourceMetrics/>".to_vec(),
            status: 415,
            code: INVALID_ARGUMENT,
            message: &[
                "\"application/xml\"",
                "application/x-protobuf",
                "application/json",
            ],
            error_body: Json,
            counted: BadRequest,
        },
        HttpCase {
            name: "truncated gzip (protobuf) on /v1/traces",
            path: "/v1/traces",
            content_type: proto,
            content_encoding: Some("gzip"),
            body: truncated_gzip(),
            status: 400,
            code: INVALID_ARGUMENT,
            message: &["invalid gzip body"],
            error_body: Protobuf,
            counted: BadRequest,
        },
        HttpCase {
            name: "truncated gzip (JSON) on /v1/logs",
            path: "/v1/logs",
            content_type: json,
            content_encoding: Some("gzip"),
            body: {
                let z = gzip(br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"never"}}]}]}]}"#);
                z[..z.len() / 2].to_vec()
            },
            status: 400,
            code: INVALID_ARGUMENT,
            message: &["invalid gzip body"],
            error_body: Json,
            counted: BadRequest,
        },
        HttpCase {
            name: "truncated zstd on /v1/traces",
            path: "/v1/traces",
            content_type: proto,
            content_encoding: Some("zstd"),
            body: {
                let z = zstd::encode_all(
                    &trace_request(93, "truncated-zstd", 2000).encode_to_vec()[..],
                    3,
                )
                .expect("zstd");
                z[..z.len() / 2].to_vec()
            },
            status: 400,
            code: INVALID_ARGUMENT,
            message: &["invalid zstd body"],
            error_body: Protobuf,
            counted: BadRequest,
        },
        HttpCase {
            name: "unsupported content-encoding br on /v1/traces",
            path: "/v1/traces",
            content_type: proto,
            content_encoding: Some("br"),
            body: trace_request(94, "brotli", 10).encode_to_vec(),
            status: 400,
            code: INVALID_ARGUMENT,
            message: &["unsupported content-encoding \"br\""],
            error_body: Protobuf,
            counted: BadRequest,
        },
        HttpCase {
            name: "valid protobuf over the limit (Content-Length) on /v1/traces",
            path: "/v1/traces",
            content_type: proto,
            content_encoding: None,
            body: trace_request(95, "too-large", LIMIT).encode_to_vec(),
            status: 413,
            code: RESOURCE_EXHAUSTED,
            message: &["max_request_size", "65536 bytes"],
            error_body: Protobuf,
            counted: TooLarge,
        },
        HttpCase {
            name: "valid JSON over the limit (Content-Length) on /v1/traces",
            path: "/v1/traces",
            content_type: json,
            content_encoding: None,
            body: big_json.into_bytes(),
            status: 413,
            code: RESOURCE_EXHAUSTED,
            message: &["max_request_size", "65536 bytes"],
            error_body: Json,
            counted: TooLarge,
        },
        HttpCase {
            name: "gzip bomb (small body, inflates past the limit) on /v1/traces",
            path: "/v1/traces",
            content_type: proto,
            content_encoding: Some("gzip"),
            body: gzip_bomb(),
            status: 413,
            code: RESOURCE_EXHAUSTED,
            message: &["decompressed", "max_request_size", "65536 bytes"],
            error_body: Protobuf,
            counted: TooLarge,
        },
    ]
}

async fn check_http_case(client: &reqwest::Client, port: u16, c: &HttpCase) {
    let r = post(
        client,
        port,
        c.path,
        c.content_type,
        c.content_encoding,
        None,
        c.body.clone(),
    )
    .await;
    assert_eq!(
        r.status,
        c.status,
        "{}: status (body {:?})",
        c.name,
        String::from_utf8_lossy(&r.body)
    );
    assert_http1_refusal_closes(&r, c.name);
    let (code, message) = r.error(c.error_body, c.name);
    assert_eq!(
        code, c.code,
        "{}: google.rpc.Status code (message {message:?})",
        c.name
    );
    for m in c.message {
        assert!(
            message.contains(m),
            "{}: message {message:?} should contain {m:?}",
            c.name
        );
    }
}

/// A chunked body (no `Content-Length`) one byte over the limit, written by hand over
/// HTTP/1.1 so the size is only discovered while reading.
async fn chunked_over_limit(port: u16) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut req = head.into_bytes();
    let chunk = vec![0u8; 16 * 1024];
    let mut left = LIMIT + 1;
    while left > 0 {
        let n = left.min(chunk.len());
        req.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        req.extend_from_slice(&chunk[..n]);
        req.extend_from_slice(b"\r\n");
        left -= n;
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The server may answer before it has read everything; a failed write is not the test.
    let _ = s.write_all(&req).await;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers")
        + 4;
    (status, resp[split..].to_vec())
}

/// One HTTP/1.1 response read off a raw connection.
struct H1Reply {
    status: u16,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl H1Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn rpc_status(&self) -> RpcStatus {
        assert_eq!(
            self.header("content-type"),
            Some("application/x-protobuf"),
            "error body type"
        );
        RpcStatus::decode(&self.body[..]).expect("error body is a google.rpc.Status")
    }
}

/// Writes a `POST` head declaring `content_length` and then `body`, which may be shorter:
/// the rest of the body is then never sent.
async fn h1_send(
    s: &mut tokio::net::TcpStream,
    path: &str,
    content_type: &str,
    auth: Option<&str>,
    content_length: usize,
    body: &[u8],
) {
    use tokio::io::AsyncWriteExt;
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {content_length}\r\n"
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).await.expect("write request");
}

/// Reads exactly one response (its body by `Content-Length`) within 10 s.
async fn h1_read(s: &mut tokio::net::TcpStream, what: &str) -> H1Reply {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let read = async {
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.expect("read response");
            assert!(
                n > 0,
                "{what}: connection closed before a response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..end].to_vec()).expect("ASCII head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        assert!(
            status_line.starts_with("HTTP/1.1 "),
            "{what}: {status_line:?}"
        );
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no status in {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no Content-Length in {head:?}"));
        while buf.len() < end + len {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.expect("read response body");
            assert!(n > 0, "{what}: connection closed inside the response body");
            buf.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(
            buf.len(),
            end + len,
            "{what}: bytes after the response: {:?}",
            String::from_utf8_lossy(&buf[end + len..])
        );
        H1Reply {
            status,
            headers,
            body: buf[end..].to_vec(),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| panic!("{what}: no response within 10 s"))
}

/// Does the server close the connection (within 5 s) without sending anything more?
async fn h1_closed_by_server(s: &mut tokio::net::TcpStream, what: &str) -> bool {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 1024];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
        Err(_) => false,
        Ok(Ok(0)) => true,
        Ok(Ok(n)) => panic!(
            "{what}: unexpected bytes after the response: {:?}",
            String::from_utf8_lossy(&chunk[..n])
        ),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        Ok(Err(e)) => panic!("{what}: reading: {e}"),
    }
}

struct GrpcCase {
    name: &'static str,
    path: &'static str,
    /// The `content-type` sent (`None`: no such header).
    content_type: Option<&'static str>,
    /// Headers besides `content-type` and `te: trailers`.
    headers: Headers,
    body: Vec<u8>,
    /// 200 for every gRPC answer; a plain HTTP status for a request that is not gRPC.
    http_status: u16,
    /// `grpc-status`; `None`: none at all (a plain HTTP answer).
    code: Option<i32>,
    /// `grpc-message` starts with this...
    prefix: &'static str,
    /// ...and holds every one of these.
    message: &'static [&'static str],
    counted: Counted,
}

const GRPC: Option<&str> = Some("application/grpc");

type Headers = &'static [(&'static str, &'static str)];

fn grpc_cases() -> Vec<GrpcCase> {
    use Counted::*;
    let gz: Headers = &[("grpc-encoding", "gzip")];
    let zst: Headers = &[("grpc-encoding", "zstd")];
    let mut short = frame(
        false,
        &trace_request(96, "short-frame", 100).encode_to_vec(),
    );
    short.truncate(short.len() / 2);
    let mut declared_huge = Vec::from([0u8]);
    declared_huge.extend_from_slice(&(4u32 * 1024 * 1024).to_be_bytes());
    declared_huge.extend_from_slice(&[0u8; 16]);
    let truncated_zstd = {
        let z = zstd::encode_all(
            &trace_request(87, "truncated-zstd", 2000).encode_to_vec()[..],
            3,
        )
        .expect("zstd");
        z[..z.len() / 2].to_vec()
    };
    let zstd_bomb = {
        let z = zstd::encode_all(
            &trace_request(86, "zstd-bomb", LIMIT + 1024).encode_to_vec()[..],
            3,
        )
        .expect("zstd");
        assert!(z.len() < 4096, "the zstd bomb should be small: {}", z.len());
        z
    };
    // Everything tonic refuses before the OTLP handler runs is the client's mistake:
    // INVALID_ARGUMENT "invalid request: <why>", never INTERNAL; too large is
    // RESOURCE_EXHAUSTED naming max_request_size. All of it is counted.
    let invalid = Some(INVALID_ARGUMENT);
    let too_large = Some(RESOURCE_EXHAUSTED);
    let limit_msg: &'static [&'static str] = &["max_request_size", "65536 bytes"];
    vec![
        GrpcCase {
            name: "garbage protobuf to TraceService",
            path: TRACE_EXPORT,
            content_type: GRPC,
            headers: &[],
            body: frame(false, &[0xff, 0xff, 0xff, 0xff]),
            http_status: 200,
            code: invalid,
            prefix: "",
            message: &["invalid protobuf"],
            counted: BadRequest,
        },
        GrpcCase {
            name: "truncated protobuf to MetricsService",
            path: METRICS_EXPORT,
            content_type: GRPC,
            headers: &[],
            body: frame(false, &[0x0a, 0x05, 0x01]),
            http_status: 200,
            code: invalid,
            prefix: "",
            message: &["invalid protobuf"],
            counted: BadRequest,
        },
        GrpcCase {
            name: "garbage protobuf to LogsService",
            path: LOGS_EXPORT,
            content_type: GRPC,
            headers: &[],
            body: frame(false, &[0xff, 0xff, 0xff, 0xff]),
            http_status: 200,
            code: invalid,
            prefix: "",
            message: &["invalid protobuf"],
            counted: BadRequest,
        },
        GrpcCase {
            name: "valid request over the limit",
            path: TRACE_EXPORT,
            content_type: GRPC,
            headers: &[],
            body: frame(
                false,
                &trace_request(97, "too-large", LIMIT).encode_to_vec(),
            ),
            http_status: 200,
            code: too_large,
            prefix: "",
            message: limit_msg,
            counted: TooLarge,
        },
        GrpcCase {
            name: "frame header declaring 4 MiB",
            path: TRACE_EXPORT,
            content_type: GRPC,
            headers: &[],
            body: declared_huge,
            http_status: 200,
            code: too_large,
            prefix: "",
            message: limit_msg,
            counted: TooLarge,
        },
        GrpcCase {
            name: "truncated gzip message",
            path: TRACE_EXPORT,
            content_type: GRPC,
            headers: gz,
            body: frame(true, &truncated_gzip()),
            http_status: 200,
            code: invalid,
            prefix: "invalid request: ",
            message: &["Error decompressing"],
            counted: BadRequest,
        },
        GrpcCase {
            name: "truncated zstd message",
            path: TRACE_EXPORT,
            content_type: GRPC,
            headers: zst,
            body: frame(true, &truncated_zstd),
            http_status: 200,
            code: invalid,
            prefix: "invalid request: ",
            message: &["Error decompressing"],
            counted: BadRequest,
        },
        GrpcCase {
            // tonic's own limit check while inflating (RESOURCE_EXHAUSTED in its words).
            name: "gzip bomb",
            path: TRACE_EXPORT,
            content_type: GRPC,
            headers: gz,
            body: frame(true, &gzip_bomb()),
            http_status: 200,
            code: too_large,
            prefix: "",
            message: limit_msg,
            counted: TooLarge,
        },
        GrpcCase {
            name: "zstd bomb",
            path: TRACE_EXPORT,
            content_type: GRPC,
            headers: zst,
            body: frame(true, &zstd_bomb),
            http_status: 200,
            code: too_large,
            prefix: "",
            message: limit_msg,
            counted: TooLarge,
        },
        GrpcCase {
            // The gRPC spec's code for an encoding the server does not take.
            name: "unsupported grpc-encoding br",
            path: TRACE_EXPORT,
            content_type: GRPC,
            headers: &[("grpc-encoding", "br")],
            body: frame(true, &[1, 2, 3]),
            http_status: 200,
            code: Some(UNIMPLEMENTED),
            prefix: "",
            message: &["br", "isn't supported"],
            counted: BadRequest,
        },
        GrpcCase {
            name: "compressed flag without grpc-encoding",
            path: TRACE_EXPORT,
            content_type: GRPC,
            headers: &[],
            body: frame(true, &trace_request(98, "flag", 10).encode_to_vec()),
            http_status: 200,
            code: invalid,
            prefix: "invalid request: ",
            message: &["compressed-flag but no grpc-encoding"],
            counted: BadRequest,
        },
        GrpcCase {
            name: "frame cut short",
            path: TRACE_EXPORT,
            content_type: GRPC,
            headers: &[],
            body: short,
            http_status: 200,
            code: invalid,
            prefix: "invalid request: ",
            message: &["Unexpected EOF"],
            counted: BadRequest,
        },
        GrpcCase {
            // A JSON body with a JSON content type: not gRPC at all (before, tonic read
            // `{"re` as a frame header with flag 123 and answered INTERNAL).
            name: "application/json to the gRPC port",
            path: TRACE_EXPORT,
            content_type: Some("application/json"),
            headers: &[],
            body: json_trace_request(89).into_bytes(),
            http_status: 415,
            code: None,
            prefix: "",
            message: &[],
            counted: BadRequest,
        },
        GrpcCase {
            name: "application/x-protobuf to the gRPC port",
            path: LOGS_EXPORT,
            content_type: Some("application/x-protobuf"),
            headers: &[],
            body: logs_request("protobuf-to-grpc").encode_to_vec(),
            http_status: 415,
            code: None,
            prefix: "",
            message: &[],
            counted: BadRequest,
        },
        GrpcCase {
            name: "no content-type to the gRPC port",
            path: METRICS_EXPORT,
            content_type: None,
            headers: &[],
            body: frame(false, &[]),
            http_status: 415,
            code: None,
            prefix: "",
            message: &[],
            counted: BadRequest,
        },
        GrpcCase {
            name: "unknown method of TraceService",
            path: "/opentelemetry.proto.collector.trace.v1.TraceService/Nope",
            content_type: GRPC,
            headers: &[],
            body: frame(
                false,
                &trace_request(99, "unknown-method", 10).encode_to_vec(),
            ),
            http_status: 200,
            code: Some(UNIMPLEMENTED),
            prefix: "",
            message: &["unknown method", "/Nope"],
            counted: BadRequest,
        },
        GrpcCase {
            // Answered by the router's fallback, which counts it like an unknown method.
            name: "unknown service",
            path: "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
            content_type: GRPC,
            headers: &[],
            body: frame(false, &[]),
            http_status: 200,
            code: Some(UNIMPLEMENTED),
            prefix: "",
            message: &[],
            counted: BadRequest,
        },
    ]
}

async fn check_grpc_case(ch: &tonic::transport::Channel, c: &GrpcCase) {
    let mut headers: Vec<(&str, &str)> = vec![("te", "trailers")];
    headers.extend(c.content_type.map(|ct| ("content-type", ct)));
    headers.extend_from_slice(c.headers);
    let r = grpc_raw(ch, c.path, &headers, c.body.clone()).await;
    assert_eq!(
        (r.http_status, r.code),
        (c.http_status, c.code),
        "{}: HTTP status and grpc-status (message {:?})",
        c.name,
        r.message
    );
    assert_ne!(
        r.code,
        Some(INTERNAL),
        "{}: a bad request is not a server error",
        c.name
    );
    assert!(
        r.message.starts_with(c.prefix),
        "{}: grpc-message {:?} should start with {:?}",
        c.name,
        r.message,
        c.prefix
    );
    for m in c.message {
        assert!(
            r.message.contains(m),
            "{}: grpc-message {:?} should contain {m:?}",
            c.name,
            r.message
        );
    }
    if c.code.is_none() {
        assert!(r.message.is_empty(), "{}: {:?}", c.name, r.message);
    }
}

/// The spans of the file exporter's output as (traceId, spanId, name).
fn spans_written(c: &Collector) -> Vec<(String, String, String, serde_json::Value)> {
    let lines = common::read_jsonl(&c.path("out.jsonl"));
    let mut out: Vec<_> = common::spans_in(&lines)
        .into_iter()
        .map(|(_, s)| {
            (
                s["traceId"].as_str().unwrap_or_default().to_owned(),
                s["spanId"].as_str().unwrap_or_default().to_owned(),
                s["name"].as_str().unwrap_or_default().to_owned(),
                s,
            )
        })
        .collect();
    out.sort_by(|a, b| a.2.cmp(&b.2));
    out
}

fn tally(c: Counted, bad: &mut u32, too_large: &mut u32) {
    match c {
        Counted::BadRequest => *bad += 1,
        Counted::TooLarge => *too_large += 1,
    }
}

fn metric(c: &Collector, sample: &str) -> f64 {
    let text = c.metrics();
    metric_value(&text, sample).unwrap_or_else(|| panic!("no sample {sample} in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_both_protocols_is_rejected_counted_and_the_collector_keeps_serving() {
    let (mut collector, grpc_port, http_port) = start("", &[]);
    let client = http_client();
    let (mut bad, mut too_large) = (0u32, 0u32);

    // OTLP/HTTP.
    for case in http_cases() {
        check_http_case(&client, http_port, &case).await;
        tally(case.counted, &mut bad, &mut too_large);
    }
    let (status, body) = chunked_over_limit(http_port).await;
    assert_eq!(
        status,
        413,
        "chunked body over the limit: {:?}",
        String::from_utf8_lossy(&body)
    );
    let s = RpcStatus::decode(&body[..]).expect("chunked 413 body is a google.rpc.Status");
    assert_eq!(
        s.code, RESOURCE_EXHAUSTED,
        "chunked body over the limit: {s:?}"
    );
    assert!(
        s.message.contains("max_request_size"),
        "chunked body over the limit: {s:?}"
    );
    too_large += 1;

    // OTLP/gRPC.
    let channel = grpc_channel(grpc_port).await;
    for case in grpc_cases() {
        check_grpc_case(&channel, &case).await;
        tally(case.counted, &mut bad, &mut too_large);
    }
    // HTTP/1.1 to the gRPC port is not served at all.
    let h1 = client
        .post(format!("http://127.0.0.1:{grpc_port}{TRACE_EXPORT}"))
        .header("content-type", "application/grpc")
        .body(frame(
            false,
            &trace_request(88, "http1-to-grpc", 10).encode_to_vec(),
        ))
        .send()
        .await;
    assert!(
        h1.is_err(),
        "HTTP/1.1 to the gRPC port should fail, got {:?}",
        h1.map(|r| r.status())
    );

    // Still serving: health, and a valid request on each protocol and signal.
    assert_eq!(
        common::http_get(collector.service, "/health")
            .expect("GET /health")
            .0,
        200
    );
    let r = post(
        &client,
        http_port,
        "/v1/traces",
        Some("application/json"),
        None,
        None,
        json_trace_request(1),
    )
    .await;
    assert_http1_ok_keeps_alive(&r, "valid JSON");
    assert_eq!(
        r.json(),
        serde_json::json!({}),
        "valid JSON: an empty ExportTraceServiceResponse"
    );
    let body = trace_request(2, "http-protobuf", 10).encode_to_vec();
    let r = post(
        &client,
        http_port,
        "/v1/traces",
        Some("application/x-protobuf"),
        None,
        None,
        body,
    )
    .await;
    assert_http1_ok_keeps_alive(&r, "valid protobuf");
    assert_eq!(r.content_type, "application/x-protobuf", "valid protobuf");
    assert!(
        r.body.is_empty(),
        "valid protobuf: an empty ExportTraceServiceResponse"
    );
    let body = gzip(&logs_request("http-gzip-log").encode_to_vec());
    let r = post(
        &client,
        http_port,
        "/v1/logs",
        Some("application/x-protobuf"),
        Some("gzip"),
        None,
        body,
    )
    .await;
    assert_http1_ok_keeps_alive(&r, "valid gzip logs");
    let r = grpc_export(
        &channel,
        TRACE_EXPORT,
        &[],
        frame(false, &trace_request(3, "grpc", 10).encode_to_vec()),
    )
    .await;
    assert_eq!(r.code, Some(OK), "valid gRPC: {}", r.message);
    let z = gzip(&trace_request(4, "grpc-gzip", 10).encode_to_vec());
    let r = grpc_export(
        &channel,
        TRACE_EXPORT,
        &[("grpc-encoding", "gzip")],
        frame(true, &z),
    )
    .await;
    assert_eq!(r.code, Some(OK), "valid gzip gRPC: {}", r.message);
    let r = grpc_export(
        &channel,
        LOGS_EXPORT,
        &[],
        frame(false, &logs_request("grpc-log").encode_to_vec()),
    )
    .await;
    assert_eq!(r.code, Some(OK), "valid gRPC logs: {}", r.message);
    // `application/grpc+proto` is gRPC too.
    let r = grpc_raw(
        &channel,
        TRACE_EXPORT,
        &[
            ("content-type", "application/grpc+proto"),
            ("te", "trailers"),
        ],
        frame(false, &trace_request(5, "grpc-proto", 10).encode_to_vec()),
    )
    .await;
    assert_eq!(
        (r.http_status, r.code),
        (200, Some(OK)),
        "valid gRPC as application/grpc+proto: {}",
        r.message
    );
    let z =
        zstd::encode_all(&trace_request(6, "grpc-zstd", 10).encode_to_vec()[..], 3).expect("zstd");
    let r = grpc_export(
        &channel,
        TRACE_EXPORT,
        &[("grpc-encoding", "zstd")],
        frame(true, &z),
    )
    .await;
    assert_eq!(r.code, Some(OK), "valid zstd gRPC: {}", r.message);
    drop(channel);

    // Every rejection counted once, by kind; only the valid items accepted.
    let counter = |name: &str| {
        metric(
            &collector,
            &format!(r#"tradewatch_receiver_{name}_requests_total{{receiver="otlp"}}"#),
        )
    };
    let accepted = |s: &str| {
        metric(
            &collector,
            &format!(r#"tradewatch_receiver_accepted_items_total{{receiver="otlp",signal="{s}"}}"#),
        )
    };
    common::eventually_eq(
        Duration::from_secs(10),
        "(bad, too_large, unauthorized) requests: every refused request counted once, \
         including those tonic refuses before the OTLP handler; then accepted (spans, log \
         records, metric points)",
        ((f64::from(bad), f64::from(too_large), 0.0), (6.0, 2.0, 0.0)),
        || {
            (
                (
                    counter("bad"),
                    counter("too_large"),
                    counter("unauthorized"),
                ),
                (accepted("traces"), accepted("logs"), accepted("metrics")),
            )
        },
    );

    // Drain to the file and look at exactly what was written.
    let status = collector.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "clean shutdown: {status}\n{}",
        collector.logs()
    );
    let spans = spans_written(&collector);
    let ids: Vec<(String, String, String)> = spans
        .iter()
        .map(|(t, s, n, _)| (t.clone(), s.clone(), n.clone()))
        .collect();
    let expect: Vec<(String, String, String)> = [
        (3, "grpc"),
        (4, "grpc-gzip"),
        (5, "grpc-proto"),
        (6, "grpc-zstd"),
        (2, "http-protobuf"),
        (1, "json-span"),
    ]
    .iter()
    .map(|(n, name)| (hex(&trace_id(*n)), hex(&span_id(*n)), (*name).to_owned()))
    .collect();
    assert_eq!(
        ids, expect,
        "exactly the valid spans, ids intact, nothing malformed"
    );
    let json_span = &spans
        .iter()
        .find(|s| s.2 == "json-span")
        .expect("json span")
        .3;
    let attrs = common::attrs(&json_span["attributes"]);
    assert_eq!(
        attrs["order.qty"],
        serde_json::json!(101),
        "intValue sent as a string: {json_span}"
    );
    assert_eq!(attrs["venue"], serde_json::json!("XNAS"));
    assert_eq!(
        json_span["startTimeUnixNano"],
        serde_json::json!("1700000000000000000"),
        "{json_span}"
    );
    let lines = common::read_jsonl(&collector.path("out.jsonl"));
    let mut logs: Vec<String> = common::logs_in(&lines)
        .iter()
        .map(|(_, r)| {
            r["body"]["stringValue"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    logs.sort();
    assert_eq!(
        logs,
        ["grpc-log", "http-gzip-log"],
        "exactly the valid log records"
    );
    assert!(
        common::metrics_in(&lines).is_empty(),
        "no metrics were valid"
    );
}

/// A request refused for its missing or wrong token.
struct Unauthenticated {
    what: String,
    content_type: Option<&'static str>,
    auth: Option<&'static str>,
    body: Vec<u8>,
    /// The encoding of the error body.
    error_body: ErrorBody,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_required_on_both_protocols_and_never_shown() {
    const TOKEN: &str = "tw-test-token-5f2c9e71d4a8b603";
    // debug, so that anything logging requests or configuration would show the token.
    let (mut collector, grpc_port, http_port) = start(
        r#"auth_token = "${TW_TEST_TOKEN}""#,
        &[("TW_TEST_TOKEN", TOKEN), ("TRADEWATCH_LOG", "debug")],
    );
    let client = http_client();
    let right = format!("Bearer {TOKEN}");
    let proto = Some("application/x-protobuf");
    let json = Some("application/json");
    let body = |n: u8| trace_request(n, "auth", 10).encode_to_vec();
    let oversized = trace_request(30, "auth-too-large", LIMIT).encode_to_vec();
    let (mut unauthorized, mut bad, mut too_large) = (0u32, 0u32, 0u32);

    // OTLP/HTTP. Authentication comes first: an unauthenticated client learns nothing
    // about its content type or size. The error body is in the request's encoding when
    // that is protobuf or JSON, JSON otherwise.
    let wrong: [(&str, Option<&str>); 4] = [
        ("no token", None),
        ("wrong token", Some("Bearer not-the-token")),
        ("token without Bearer", Some(TOKEN)),
        (
            "token with a suffix",
            Some("Bearer tw-test-token-5f2c9e71d4a8b6030"),
        ),
    ];
    let mut refused: Vec<Unauthenticated> = wrong
        .iter()
        .enumerate()
        .map(|(n, (what, auth))| Unauthenticated {
            what: format!("protobuf, {what}"),
            content_type: proto,
            auth: *auth,
            body: body(10 + n as u8),
            error_body: ErrorBody::Protobuf,
        })
        .collect();
    let json_logs = br#"{"resourceLogs":[]}"#.to_vec();
    refused.extend([
        Unauthenticated {
            what: "JSON, no token".to_owned(),
            content_type: json,
            auth: None,
            body: json_logs.clone(),
            error_body: ErrorBody::Json,
        },
        Unauthenticated {
            what: "JSON with a charset, wrong token".to_owned(),
            content_type: Some("application/json; charset=utf-8"),
            auth: Some("Bearer not-the-token"),
            body: json_logs,
            error_body: ErrorBody::Json,
        },
        Unauthenticated {
            what: "application/protobuf, no token".to_owned(),
            content_type: Some("application/protobuf"),
            auth: None,
            body: body(14),
            error_body: ErrorBody::Protobuf,
        },
        Unauthenticated {
            what: "text/plain, no token (401, not 415)".to_owned(),
            content_type: Some("text/plain"),
            auth: None,
            body: b"hello".to_vec(),
            error_body: ErrorBody::Json,
        },
        Unauthenticated {
            what: "no content-type, no token (401, not 415)".to_owned(),
            content_type: None,
            auth: None,
            body: body(15),
            error_body: ErrorBody::Json,
        },
        Unauthenticated {
            what: "garbage protobuf, no token (401, not 400)".to_owned(),
            content_type: proto,
            auth: None,
            body: vec![0xff, 0xff, 0xff, 0xff],
            error_body: ErrorBody::Protobuf,
        },
        Unauthenticated {
            what: "over the limit, no token (401, not 413)".to_owned(),
            content_type: proto,
            auth: None,
            body: oversized.clone(),
            error_body: ErrorBody::Protobuf,
        },
        Unauthenticated {
            what: "JSON over the limit, wrong token (401, not 413)".to_owned(),
            content_type: json,
            auth: Some("Bearer not-the-token"),
            body: json_trace_request(31)
                .replace("XNAS", &"X".repeat(LIMIT))
                .into_bytes(),
            error_body: ErrorBody::Json,
        },
    ]);
    for u in refused {
        let what = u.what.as_str();
        let r = post(
            &client,
            http_port,
            "/v1/logs",
            u.content_type,
            None,
            u.auth,
            u.body,
        )
        .await;
        assert_eq!(
            r.status,
            401,
            "HTTP, {what}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        assert_http1_refusal_closes(&r, &format!("HTTP, {what}"));
        let (code, message) = r.error(u.error_body, what);
        assert_eq!(code, UNAUTHENTICATED, "HTTP, {what}: {message:?}");
        assert!(
            message.contains("bearer token"),
            "HTTP, {what}: {message:?}"
        );
        unauthorized += 1;
    }
    // Refused while the body is still on its way: nothing of it is read.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http_port))
        .await
        .expect("connect");
    h1_send(
        &mut s,
        "/v1/traces",
        "application/x-protobuf",
        Some("Bearer not-the-token"),
        16 * LIMIT,
        &oversized[..1024],
    )
    .await;
    let r = h1_read(&mut s, "HTTP, unfinished body, wrong token").await;
    assert_eq!(
        (r.status, r.header("connection")),
        (401, Some("close")),
        "HTTP, unfinished body, wrong token: {:?}",
        r.headers
    );
    assert_eq!(r.rpc_status().code, UNAUTHENTICATED);
    assert!(
        h1_closed_by_server(&mut s, "HTTP, unfinished body, wrong token").await,
        "HTTP, unfinished body, wrong token: the server closes the connection"
    );
    unauthorized += 1;
    // With the right token, content type and size are checked as usual.
    let r = post(
        &client,
        http_port,
        "/v1/traces",
        Some("text/plain"),
        None,
        Some(&right),
        body(16),
    )
    .await;
    assert_eq!(r.status, 415, "HTTP, right token, text/plain");
    assert_http1_refusal_closes(&r, "HTTP, right token, text/plain");
    bad += 1;
    let r = post(
        &client,
        http_port,
        "/v1/traces",
        proto,
        None,
        Some(&right),
        oversized.clone(),
    )
    .await;
    assert_eq!(r.status, 413, "HTTP, right token, over the limit");
    assert_http1_refusal_closes(&r, "HTTP, right token, over the limit");
    assert_eq!(r.rpc_status().code, RESOURCE_EXHAUSTED);
    too_large += 1;

    // OTLP/gRPC. The token is checked before the body is read or decompressed.
    let channel = grpc_channel(grpc_port).await;
    let bomb = frame(true, &gzip_bomb());
    let mut declared_huge = Vec::from([0u8]);
    declared_huge.extend_from_slice(&(4u32 * 1024 * 1024).to_be_bytes());
    let wrong_grpc: [(&str, Headers, Vec<u8>); 7] = [
        ("no token", &[], frame(false, &body(20))),
        (
            "wrong token",
            &[("authorization", "Bearer not-the-token")],
            frame(false, &body(21)),
        ),
        (
            "token without Bearer",
            &[("authorization", TOKEN)],
            frame(false, &body(22)),
        ),
        (
            "token with a suffix",
            &[("authorization", "Bearer tw-test-token-5f2c9e71d4a8b6030")],
            frame(false, &body(23)),
        ),
        (
            "over the limit, no token (16, not 8)",
            &[],
            frame(false, &oversized),
        ),
        (
            "gzip bomb, wrong token (16, not 8)",
            &[
                ("authorization", "Bearer not-the-token"),
                ("grpc-encoding", "gzip"),
            ],
            bomb.clone(),
        ),
        (
            "garbage, no token (16, not 3)",
            &[],
            frame(false, &[0xff, 0xff, 0xff, 0xff]),
        ),
    ];
    for (what, headers, b) in wrong_grpc {
        let r = grpc_export(&channel, TRACE_EXPORT, headers, b).await;
        assert_eq!(
            (r.http_status, r.code),
            (200, Some(UNAUTHENTICATED)),
            "gRPC, {what}: {}",
            r.message
        );
        assert!(
            r.message.contains("bearer token"),
            "gRPC, {what}: {}",
            r.message
        );
        unauthorized += 1;
    }
    // A frame header declaring 4 MiB and then nothing: answered without waiting for it.
    let r = grpc_unfinished(
        &channel,
        LOGS_EXPORT,
        &[("content-type", "application/grpc"), ("te", "trailers")],
        declared_huge,
    )
    .await;
    assert_eq!(
        r.code,
        Some(UNAUTHENTICATED),
        "gRPC, unfinished body, no token: {}",
        r.message
    );
    unauthorized += 1;
    // Not gRPC at all: the gRPC spec's HTTP 415, before anything else.
    let r = grpc_raw(
        &channel,
        TRACE_EXPORT,
        &[("content-type", "application/json"), ("te", "trailers")],
        json_trace_request(24).into_bytes(),
    )
    .await;
    assert_eq!(
        (r.http_status, r.code),
        (415, None),
        "gRPC port, JSON, no token: {}",
        r.message
    );
    bad += 1;
    // With the right token, size and content are checked as usual.
    let auth = [("authorization", right.as_str())];
    let r = grpc_export(&channel, TRACE_EXPORT, &auth, frame(false, &oversized)).await;
    assert_eq!(
        r.code,
        Some(RESOURCE_EXHAUSTED),
        "gRPC, right token, over the limit: {}",
        r.message
    );
    too_large += 1;
    let auth_gz = [("authorization", right.as_str()), ("grpc-encoding", "gzip")];
    let r = grpc_export(&channel, TRACE_EXPORT, &auth_gz, bomb).await;
    assert_eq!(
        r.code,
        Some(RESOURCE_EXHAUSTED),
        "gRPC, right token, gzip bomb: {}",
        r.message
    );
    too_large += 1;
    let r = grpc_export(
        &channel,
        TRACE_EXPORT,
        &auth,
        frame(false, &[0xff, 0xff, 0xff, 0xff]),
    )
    .await;
    assert_eq!(
        r.code,
        Some(INVALID_ARGUMENT),
        "gRPC, right token, garbage: {}",
        r.message
    );
    bad += 1;

    let r = post(
        &client,
        http_port,
        "/v1/traces",
        proto,
        None,
        Some(&right),
        body(1),
    )
    .await;
    assert_http1_ok_keeps_alive(&r, "HTTP, right token");
    let r = grpc_export(&channel, TRACE_EXPORT, &auth, frame(false, &body(2))).await;
    assert_eq!(r.code, Some(OK), "gRPC, right token: {}", r.message);
    drop(channel);

    let counter = |name: &str| {
        metric(
            &collector,
            &format!(r#"tradewatch_receiver_{name}_requests_total{{receiver="otlp"}}"#),
        )
    };
    common::eventually_eq(
        Duration::from_secs(10),
        "(unauthorized, bad, too_large): every refusal counted once, as what was checked first",
        (
            f64::from(unauthorized),
            f64::from(bad),
            f64::from(too_large),
        ),
        || {
            (
                counter("unauthorized"),
                counter("bad"),
                counter("too_large"),
            )
        },
    );
    let (code, status_body) = common::http_get(collector.service, "/status").expect("GET /status");
    assert_eq!(code, 200);
    assert!(
        !status_body.contains(TOKEN),
        "/status shows the token:\n{status_body}"
    );
    assert!(
        !collector.metrics().contains(TOKEN),
        "/metrics shows the token"
    );

    let status = collector.terminate(Duration::from_secs(30));
    assert!(status.success(), "clean shutdown: {status}");
    let logs = collector.logs();
    assert!(
        logs.contains("OTLP/HTTP listening"),
        "the collector's logs were captured:\n{logs}"
    );
    assert!(!logs.contains(TOKEN), "the token is in the logs:\n{logs}");
    let ids: Vec<String> = spans_written(&collector)
        .into_iter()
        .map(|(t, ..)| t)
        .collect();
    let mut expect = vec![hex(&trace_id(1)), hex(&trace_id(2))];
    expect.sort();
    let mut ids_sorted = ids.clone();
    ids_sorted.sort();
    assert_eq!(
        ids_sorted, expect,
        "only the requests with the right token were delivered"
    );
    assert!(
        common::logs_in(&common::read_jsonl(&collector.path("out.jsonl"))).is_empty(),
        "no log record was delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keep_alive_clients_survive_refused_requests() {
    let (mut collector, _grpc_port, http_port) = start("", &[]);
    let client = http_client();
    let proto = Some("application/x-protobuf");
    let (mut bad, mut too_large) = (0u32, 0u32);
    let mut delivered: Vec<u8> = Vec::new();
    let valid = |n: u8| trace_request(n, "keep-alive", 10).encode_to_vec();

    // A pooled HTTP/1.1 client: after each refusal — most of them before the body was
    // read — a valid request on the same client must find a live connection.
    let big_json = json_trace_request(0)
        .replace("XNAS", &"X".repeat(LIMIT))
        .into_bytes();
    let big_text = vec![b't'; 2 * LIMIT];
    for round in 0..6u8 {
        let refusals = [
            (
                "protobuf over the limit",
                proto,
                None,
                trace_request(0, "too-large", LIMIT).encode_to_vec(),
                413,
            ),
            (
                "JSON over the limit",
                Some("application/json"),
                None,
                big_json.clone(),
                413,
            ),
            ("gzip bomb", proto, Some("gzip"), gzip_bomb(), 413),
            (
                "garbage protobuf",
                proto,
                None,
                vec![0xff, 0xff, 0xff, 0xff],
                400,
            ),
            (
                "large text/plain",
                Some("text/plain"),
                None,
                big_text.clone(),
                415,
            ),
        ];
        for (i, (what, ct, ce, body, status)) in refusals.into_iter().enumerate() {
            let what = format!("round {round}, {what}");
            let r = post(&client, http_port, "/v1/traces", ct, ce, None, body).await;
            assert_eq!(
                r.status,
                status,
                "{what}: {:?}",
                String::from_utf8_lossy(&r.body)
            );
            assert_http1_refusal_closes(&r, &what);
            if status == 413 {
                too_large += 1;
            } else {
                bad += 1;
            }
            let n = 100 + round * 10 + i as u8;
            let r = post(
                &client,
                http_port,
                "/v1/traces",
                proto,
                None,
                None,
                valid(n),
            )
            .await;
            assert_http1_ok_keeps_alive(&r, &format!("valid request after {what}"));
            delivered.push(n);
        }
    }

    // By hand on one connection: successes keep it alive...
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http_port))
        .await
        .expect("connect");
    for n in [200u8, 201] {
        let b = valid(n);
        h1_send(
            &mut s,
            "/v1/traces",
            "application/x-protobuf",
            None,
            b.len(),
            &b,
        )
        .await;
        let r = h1_read(&mut s, "valid request on a kept-alive connection").await;
        assert_eq!(
            (r.status, r.header("connection")),
            (200, None),
            "valid request {n} on a kept-alive connection: {:?}",
            r.headers
        );
        delivered.push(n);
    }
    // ...and a refusal with most of the body still unsent says so and closes it.
    h1_send(
        &mut s,
        "/v1/traces",
        "application/x-protobuf",
        None,
        16 * LIMIT,
        &[0u8; 1024],
    )
    .await;
    let r = h1_read(&mut s, "over the limit, body unsent").await;
    assert_eq!(
        (r.status, r.header("connection")),
        (413, Some("close")),
        "over the limit, body unsent: {:?}",
        r.headers
    );
    let st = r.rpc_status();
    assert_eq!(st.code, RESOURCE_EXHAUSTED, "{st:?}");
    assert!(st.message.contains("max_request_size"), "{st:?}");
    too_large += 1;
    assert!(
        h1_closed_by_server(&mut s, "over the limit, body unsent").await,
        "over the limit, body unsent: the server closes the connection"
    );
    // A refusal of a body read whole closes the connection too.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http_port))
        .await
        .expect("connect");
    h1_send(&mut s, "/v1/metrics", "application/json", None, 2, b"{]").await;
    let r = h1_read(&mut s, "invalid JSON, read whole").await;
    assert_eq!(
        (r.status, r.header("connection")),
        (400, Some("close")),
        "invalid JSON, read whole: {:?}",
        r.headers
    );
    bad += 1;
    assert!(
        h1_closed_by_server(&mut s, "invalid JSON, read whole").await,
        "invalid JSON, read whole: the server closes the connection"
    );

    // HTTP/2 (prior knowledge) needs no `Connection` header: the stream ends, the
    // connection goes on.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("reqwest HTTP/2 client");
    let r = post(
        &h2,
        http_port,
        "/v1/traces",
        proto,
        None,
        None,
        trace_request(0, "too-large", LIMIT).encode_to_vec(),
    )
    .await;
    assert_eq!(
        (r.status, r.version, r.connection.as_deref()),
        (413, reqwest::Version::HTTP_2, None),
        "HTTP/2, over the limit"
    );
    too_large += 1;
    let r = post(&h2, http_port, "/v1/traces", proto, None, None, valid(210)).await;
    assert_eq!(
        (r.status, r.version),
        (200, reqwest::Version::HTTP_2),
        "HTTP/2, valid request after a refusal: {:?}",
        r.body
    );
    delivered.push(210);

    let counter = |name: &str| {
        metric(
            &collector,
            &format!(r#"tradewatch_receiver_{name}_requests_total{{receiver="otlp"}}"#),
        )
    };
    common::eventually_eq(
        Duration::from_secs(10),
        "(bad, too_large, unauthorized) requests, accepted spans",
        (
            f64::from(bad),
            f64::from(too_large),
            0.0,
            delivered.len() as f64,
        ),
        || {
            (
                counter("bad"),
                counter("too_large"),
                counter("unauthorized"),
                metric(
                    &collector,
                    r#"tradewatch_receiver_accepted_items_total{receiver="otlp",signal="traces"}"#,
                ),
            )
        },
    );

    // Known defect (reported with this test): a 4xx that is not the OTLP handler's — the
    // router's 404 for an unknown path — has no `Connection: close`, although the server
    // then closes the connection under a keep-alive client (its body was never read).
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http_port))
        .await
        .expect("connect");
    h1_send(
        &mut s,
        "/v1/profiles",
        "application/x-protobuf",
        None,
        16 * LIMIT,
        &[0u8; 1024],
    )
    .await;
    let r = h1_read(&mut s, "unknown path, body unsent").await;
    assert_eq!(r.status, 404, "unknown path: {:?}", r.headers);
    assert!(
        h1_closed_by_server(&mut s, "unknown path, body unsent").await,
        "unknown path, body unsent: the server closes the connection"
    );
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "a 404 on HTTP/1 says `Connection: close`"
    );

    let status = collector.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "clean shutdown: {status}\n{}",
        collector.logs()
    );
    let mut ids: Vec<String> = spans_written(&collector)
        .into_iter()
        .map(|(t, ..)| t)
        .collect();
    ids.sort();
    let mut expect: Vec<String> = delivered.iter().map(|n| hex(&trace_id(*n))).collect();
    expect.sort();
    assert_eq!(ids, expect, "exactly the valid requests were delivered");
}

// ---------------------------------------------------------------------------------------
// Rejections in the log (edges)

/// A client stuck sending bad requests shows in the log at the default level, once per
/// reason per 10 s rather than once per request, and the log never holds a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_requests_are_logged_once_per_reason_and_without_the_token() {
    const TOKEN: &str = "s3cr3t-Token-for-the-log-test";
    const WRONG: &str = "Bearer wr0ng-Token-for-the-log-test";
    let (collector, grpc_port, http_port) = start(
        "auth_token = \"${OTLP_TOKEN}\"\n",
        &[("OTLP_TOKEN", TOKEN), ("TRADEWATCH_LOG", "warn")],
    );
    let client = http_client();
    let good = format!("Bearer {TOKEN}");
    let channel = grpc_channel(grpc_port).await;
    let started = std::time::Instant::now();
    for _ in 0..50 {
        let r = post(
            &client,
            http_port,
            "/v1/traces",
            Some("application/x-protobuf"),
            None,
            Some(&good),
            truncated_protobuf(),
        )
        .await;
        assert_eq!(r.status, 400);
        let r = grpc_export(
            &channel,
            TRACE_EXPORT,
            &[("authorization", good.as_str())],
            frame(false, &[0xff, 0xff, 0xff, 0xff]),
        )
        .await;
        assert_eq!(r.code, Some(INVALID_ARGUMENT));
        let r = post(
            &client,
            http_port,
            "/v1/logs",
            Some("application/json"),
            None,
            Some(WRONG),
            "{}",
        )
        .await;
        assert_eq!(r.status, 401);
        let r = grpc_export(
            &channel,
            LOGS_EXPORT,
            &[("authorization", WRONG)],
            frame(false, &[]),
        )
        .await;
        assert_eq!(r.code, Some(UNAUTHENTICATED));
        let r = post(
            &client,
            http_port,
            "/v1/traces",
            Some("application/x-protobuf"),
            Some("gzip"),
            Some(&good),
            gzip_bomb(),
        )
        .await;
        assert_eq!(r.status, 413);
    }
    assert_eq!(
        metric(
            &collector,
            r#"tradewatch_receiver_bad_requests_total{receiver="otlp"}"#
        ),
        100.0
    );
    let logs = collector.logs();
    let lines = |reason: &str| {
        logs.lines()
            .filter(|l| l.contains("WARN") && l.contains(&format!("request ({reason})")))
            .count()
    };
    // One line per reason per 10 s (the 250 requests normally take well under 10 s).
    let allowed = 1 + started.elapsed().as_secs() as usize / 10;
    for reason in ["bad request", "unauthorized", "too large"] {
        let n = lines(reason);
        assert!(
            (1..=allowed).contains(&n),
            "{n} warnings for {reason:?}, expected 1..={allowed}:\n{logs}"
        );
    }
    assert!(
        logs.contains("invalid protobuf") || logs.contains("invalid request"),
        "the reason is given:\n{logs}"
    );
    assert!(logs.contains("receiver=otlp"), "{logs}");
    assert!(!logs.contains(TOKEN), "the token is in the log:\n{logs}");
    assert!(
        !logs.contains("wr0ng-Token"),
        "a sent token is in the log:\n{logs}"
    );
}

/// Compressed bodies too large to inflate inline (over 64 KiB compressed) are inflated
/// on the blocking pool, on both protocols, with the same limits and answers: a valid
/// one is delivered, a bomb is refused as too large, a broken one as invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_compressed_bodies_are_inflated_within_the_limit_on_both_protocols() {
    let (g, h, s) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let cfg = config(g, h, s, "").replace(
        "max_request_size = \"64KiB\"",
        "max_request_size = \"4MiB\"",
    );
    let collector = Collector::start(&cfg, s);
    // Padding that does not compress much: the gzip body is well over 64 KiB.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: String = (0..600_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    let big = |n: u8, name: &str| {
        let mut r = trace_request(n, name, 0);
        r.resource_spans[0].scope_spans[0].spans[0].attributes[1] =
            kv("padding", any_value::Value::StringValue(noise.clone()));
        r.encode_to_vec()
    };
    // Noise (so that it takes the large path), then 8 MiB of one byte: over the limit.
    let bomb = {
        let mut r = trace_request(120, "big-bomb", 0);
        let padding = format!("{}{}", &noise[..200_000], "x".repeat(8 << 20));
        r.resource_spans[0].scope_spans[0].spans[0].attributes[1] =
            kv("padding", any_value::Value::StringValue(padding));
        r.encode_to_vec()
    };
    let bomb_gz = gzip(&bomb);
    let bomb_zstd = zstd::encode_all(&bomb[..], 1).expect("zstd");
    drop(bomb);
    for b in [&bomb_gz, &bomb_zstd] {
        assert!(
            b.len() > LIMIT,
            "the bomb must take the large path: {}",
            b.len()
        );
    }
    let http_gz = gzip(&big(121, "big-http-gzip"));
    let grpc_zstd = zstd::encode_all(&big(122, "big-grpc-zstd")[..], 3).expect("zstd");
    let grpc_gz = gzip(&big(123, "big-grpc-gzip"));
    for b in [&http_gz, &grpc_zstd, &grpc_gz] {
        assert!(b.len() > LIMIT, "must take the large path: {}", b.len());
    }

    let client = http_client();
    let r = post(
        &client,
        h,
        "/v1/traces",
        Some("application/x-protobuf"),
        Some("gzip"),
        None,
        http_gz.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = post(
        &client,
        h,
        "/v1/traces",
        Some("application/x-protobuf"),
        Some("gzip"),
        None,
        bomb_gz.clone(),
    )
    .await;
    assert_eq!(r.status, 413);
    assert!(r.rpc_status().message.contains("max_request_size"));
    let r = post(
        &client,
        h,
        "/v1/traces",
        Some("application/x-protobuf"),
        Some("zstd"),
        None,
        bomb_zstd.clone(),
    )
    .await;
    assert_eq!(r.status, 413);
    let r = post(
        &client,
        h,
        "/v1/traces",
        Some("application/x-protobuf"),
        Some("gzip"),
        None,
        http_gz[..http_gz.len() / 2].to_vec(),
    )
    .await;
    assert_eq!(r.status, 400);

    let channel = grpc_channel(g).await;
    for (encoding, body, want) in [
        ("zstd", grpc_zstd.clone(), OK),
        ("gzip", grpc_gz.clone(), OK),
        ("gzip", bomb_gz.clone(), RESOURCE_EXHAUSTED),
        ("zstd", bomb_zstd.clone(), RESOURCE_EXHAUSTED),
        (
            "gzip",
            grpc_gz[..grpc_gz.len() / 2].to_vec(),
            INVALID_ARGUMENT,
        ),
    ] {
        let r = grpc_export(
            &channel,
            TRACE_EXPORT,
            &[("grpc-encoding", encoding)],
            frame(true, &body),
        )
        .await;
        assert_eq!(r.code.unwrap_or(OK), want, "{encoding}: {:?}", r.message);
        if want == RESOURCE_EXHAUSTED {
            assert!(r.message.contains("max_request_size"), "{:?}", r.message);
        }
        if want == INVALID_ARGUMENT {
            assert!(
                r.message
                    .starts_with("invalid request: Error decompressing"),
                "{:?}",
                r.message
            );
        }
    }
    common::eventually(
        Duration::from_secs(30),
        "the three valid requests are written",
        // Whole lines only: a 600 KB line may be read while it is being written.
        || {
            std::fs::read_to_string(collector.path("out.jsonl"))
                .is_ok_and(|t| t.ends_with('\n') && t.lines().count() == 3)
        },
    );
    let names: Vec<String> = spans_written(&collector)
        .into_iter()
        .map(|(_, _, n, _)| n)
        .collect();
    assert_eq!(names, ["big-grpc-gzip", "big-grpc-zstd", "big-http-gzip"]);
    assert_eq!(
        metric(
            &collector,
            r#"tradewatch_receiver_too_large_requests_total{receiver="otlp"}"#
        ),
        4.0
    );
}
