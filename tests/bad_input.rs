//! Bad input on both OTLP protocols: garbage protobuf, invalid JSON, wrong content type,
//! broken compression, bodies over `max_request_size`, unknown methods and missing or
//! wrong bearer tokens. Each gets the right status and message, is counted in
//! `/metrics`, never reaches an exporter, and the process keeps serving.

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
    content_type: String,
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
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.bytes().await.expect("response body");
    HttpReply {
        status,
        content_type,
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
    let mut req = http::Request::builder().method("POST").uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(tonic::body::Body::new(http_body_util::Full::new(
            Bytes::from(body),
        )))
        .expect("request");
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

/// A client that opens a new connection per request. The collector closes an HTTP/1.1
/// connection whose body it did not read (the 413 by `Content-Length`) without saying
/// `Connection: close`, so a pooled connection can be dead on reuse (see the report).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("reqwest client")
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
    let (code, message) = match c.error_body {
        ErrorBody::Protobuf => {
            let s = r.rpc_status();
            (s.code, s.message)
        }
        ErrorBody::Json => {
            let v = r.json();
            let obj = v
                .as_object()
                .unwrap_or_else(|| panic!("{}: error body is not an object: {v}", c.name));
            assert_eq!(
                obj.len(),
                2,
                "{}: error body has exactly code and message: {v}",
                c.name
            );
            (
                v["code"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("{}: no numeric code: {v}", c.name))
                    as i32,
                v["message"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{}: no message: {v}", c.name))
                    .to_owned(),
            )
        }
    };
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

struct GrpcCase {
    name: &'static str,
    path: &'static str,
    /// Headers besides `content-type: application/grpc` and `te: trailers`.
    headers: &'static [(&'static str, &'static str)],
    body: Vec<u8>,
    code: i32,
    message: &'static [&'static str],
    counted: Option<Counted>,
    /// A defect in src/ (reported): the request should be counted as this, but is not.
    not_counted_today: Option<Counted>,
}

fn grpc_cases() -> Vec<GrpcCase> {
    use Counted::*;
    let gz: &'static [(&'static str, &'static str)] = &[("grpc-encoding", "gzip")];
    let mut short = frame(
        false,
        &trace_request(96, "short-frame", 100).encode_to_vec(),
    );
    short.truncate(short.len() / 2);
    let mut declared_huge = Vec::from([0u8]);
    declared_huge.extend_from_slice(&(4u32 * 1024 * 1024).to_be_bytes());
    declared_huge.extend_from_slice(&[0u8; 16]);
    vec![
        GrpcCase {
            name: "garbage protobuf to TraceService",
            path: TRACE_EXPORT,
            headers: &[],
            body: frame(false, &[0xff, 0xff, 0xff, 0xff]),
            code: INVALID_ARGUMENT,
            message: &["invalid protobuf"],
            counted: Some(BadRequest),
            not_counted_today: None,
        },
        GrpcCase {
            name: "truncated protobuf to MetricsService",
            path: METRICS_EXPORT,
            headers: &[],
            body: frame(false, &[0x0a, 0x05, 0x01]),
            code: INVALID_ARGUMENT,
            message: &["invalid protobuf"],
            counted: Some(BadRequest),
            not_counted_today: None,
        },
        GrpcCase {
            name: "garbage protobuf to LogsService",
            path: LOGS_EXPORT,
            headers: &[],
            body: frame(false, &[0xff, 0xff, 0xff, 0xff]),
            code: INVALID_ARGUMENT,
            message: &["invalid protobuf"],
            counted: Some(BadRequest),
            not_counted_today: None,
        },
        GrpcCase {
            name: "valid request over the limit",
            path: TRACE_EXPORT,
            headers: &[],
            body: frame(
                false,
                &trace_request(97, "too-large", LIMIT).encode_to_vec(),
            ),
            code: RESOURCE_EXHAUSTED,
            message: &["max_request_size", "65536 bytes"],
            counted: Some(TooLarge),
            not_counted_today: None,
        },
        GrpcCase {
            name: "frame header declaring 4 MiB",
            path: TRACE_EXPORT,
            headers: &[],
            body: declared_huge,
            code: RESOURCE_EXHAUSTED,
            message: &["max_request_size", "65536 bytes"],
            counted: Some(TooLarge),
            not_counted_today: None,
        },
        GrpcCase {
            // tonic answers before the OTLP handler runs. INTERNAL is what grpc-go and
            // tonic give for a message that does not decompress.
            name: "truncated gzip message",
            path: TRACE_EXPORT,
            headers: gz,
            body: frame(true, &truncated_gzip()),
            code: INTERNAL,
            message: &["Error decompressing"],
            counted: None,
            not_counted_today: Some(BadRequest),
        },
        GrpcCase {
            // tonic's own limit check while inflating: right code, but its message does
            // not name max_request_size and the OTLP counters never see it.
            name: "gzip bomb",
            path: TRACE_EXPORT,
            headers: gz,
            body: frame(true, &gzip_bomb()),
            code: RESOURCE_EXHAUSTED,
            message: &["65536 bytes"],
            counted: None,
            not_counted_today: Some(TooLarge),
        },
        GrpcCase {
            name: "unsupported grpc-encoding br",
            path: TRACE_EXPORT,
            headers: &[("grpc-encoding", "br")],
            body: frame(true, &[1, 2, 3]),
            code: UNIMPLEMENTED,
            message: &["br", "isn't supported"],
            counted: None,
            not_counted_today: Some(BadRequest),
        },
        GrpcCase {
            name: "compressed flag without grpc-encoding",
            path: TRACE_EXPORT,
            headers: &[],
            body: frame(true, &trace_request(98, "flag", 10).encode_to_vec()),
            code: INTERNAL,
            message: &["compressed-flag but no grpc-encoding"],
            counted: None,
            not_counted_today: Some(BadRequest),
        },
        GrpcCase {
            name: "frame cut short",
            path: TRACE_EXPORT,
            headers: &[],
            body: short,
            code: INTERNAL,
            message: &["Unexpected EOF"],
            counted: None,
            not_counted_today: Some(BadRequest),
        },
        GrpcCase {
            name: "unknown method of TraceService",
            path: "/opentelemetry.proto.collector.trace.v1.TraceService/Nope",
            headers: &[],
            body: frame(
                false,
                &trace_request(99, "unknown-method", 10).encode_to_vec(),
            ),
            code: UNIMPLEMENTED,
            message: &["unknown method", "/Nope"],
            counted: None,
            not_counted_today: None,
        },
        GrpcCase {
            name: "unknown service",
            path: "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
            headers: &[],
            body: frame(false, &[]),
            code: UNIMPLEMENTED,
            message: &[],
            counted: None,
            not_counted_today: None,
        },
    ]
}

async fn check_grpc_case(ch: &tonic::transport::Channel, c: &GrpcCase) {
    let r = grpc_export(ch, c.path, c.headers, c.body.clone()).await;
    assert_eq!(
        r.http_status, 200,
        "{}: gRPC errors travel in a 200 response",
        c.name
    );
    assert_eq!(
        r.code,
        Some(c.code),
        "{}: grpc-status (message {:?})",
        c.name,
        r.message
    );
    for m in c.message {
        assert!(
            r.message.contains(m),
            "{}: grpc-message {:?} should contain {m:?}",
            c.name,
            r.message
        );
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

fn tally(c: Option<Counted>, bad: &mut u32, too_large: &mut u32) {
    match c {
        Some(Counted::BadRequest) => *bad += 1,
        Some(Counted::TooLarge) => *too_large += 1,
        None => {}
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
    let (mut bad_uncounted, mut too_large_uncounted) = (0u32, 0u32);

    // OTLP/HTTP.
    for case in http_cases() {
        check_http_case(&client, http_port, &case).await;
        tally(Some(case.counted), &mut bad, &mut too_large);
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
        tally(
            case.not_counted_today,
            &mut bad_uncounted,
            &mut too_large_uncounted,
        );
    }
    // A JSON body sent with a JSON content type to the gRPC port (HTTP/2): tonic does not
    // look at the content type and reads `{"re` as a frame header with flag 123.
    let r = grpc_raw(
        &channel,
        TRACE_EXPORT,
        &[("content-type", "application/json"), ("te", "trailers")],
        json_trace_request(89).into_bytes(),
    )
    .await;
    assert_eq!(r.http_status, 200, "JSON to the gRPC port");
    assert_eq!(
        r.code,
        Some(INTERNAL),
        "JSON to the gRPC port: {:?}",
        r.message
    );
    assert!(
        r.message.contains("invalid compression flag: 123"),
        "JSON to the gRPC port: {:?}",
        r.message
    );
    bad_uncounted += 1;
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
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (200, "application/json"),
        "valid JSON: {:?}",
        r.body
    );
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
    assert_eq!(r.status, 200, "valid protobuf: {:?}", r.body);
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
    assert_eq!(r.status, 200, "valid gzip logs: {:?}", r.body);
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
    drop(channel);

    // Every rejection counted once, by kind; only the valid items accepted.
    let bad_now = metric(
        &collector,
        r#"tradewatch_receiver_bad_requests_total{receiver="otlp"}"#,
    );
    let large_now = metric(
        &collector,
        r#"tradewatch_receiver_too_large_requests_total{receiver="otlp"}"#,
    );
    assert_eq!(
        bad_now,
        f64::from(bad),
        "bad_requests_total: {bad} counted kinds sent (and {bad_uncounted} that tonic rejects before \
         the OTLP handler, which are not counted today: if they are now, move them to `counted`)"
    );
    assert_eq!(
        large_now,
        f64::from(too_large),
        "too_large_requests_total: {too_large} counted (and {too_large_uncounted} gRPC gzip bomb not \
         counted today: if it is now, move it to `counted`)"
    );
    assert_eq!(
        metric(
            &collector,
            r#"tradewatch_receiver_unauthorized_requests_total{receiver="otlp"}"#
        ),
        0.0
    );
    let accepted = |s: &str| {
        metric(
            &collector,
            &format!(r#"tradewatch_receiver_accepted_items_total{{receiver="otlp",signal="{s}"}}"#),
        )
    };
    assert_eq!(accepted("traces"), 4.0, "accepted spans");
    assert_eq!(accepted("logs"), 2.0, "accepted log records");
    assert_eq!(accepted("metrics"), 0.0, "accepted metric points");

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
    let body = |n: u8| trace_request(n, "auth", 10).encode_to_vec();

    let wrong: [(&str, Option<&str>); 4] = [
        ("no token", None),
        ("wrong token", Some("Bearer not-the-token")),
        ("token without Bearer", Some(TOKEN)),
        (
            "token with a suffix",
            Some("Bearer tw-test-token-5f2c9e71d4a8b6030"),
        ),
    ];
    for (n, (what, auth)) in wrong.iter().enumerate() {
        let r = post(
            &client,
            http_port,
            "/v1/traces",
            proto,
            None,
            *auth,
            body(10 + n as u8),
        )
        .await;
        assert_eq!(r.status, 401, "HTTP, {what}");
        let s = r.rpc_status();
        assert_eq!(s.code, UNAUTHENTICATED, "HTTP, {what}: {s:?}");
        assert!(s.message.contains("bearer token"), "HTTP, {what}: {s:?}");
    }
    let r = post(
        &client,
        http_port,
        "/v1/logs",
        Some("application/json"),
        None,
        None,
        r#"{"resourceLogs":[]}"#,
    )
    .await;
    assert_eq!(r.status, 401, "HTTP JSON, no token");
    assert_eq!(r.json()["code"], serde_json::json!(UNAUTHENTICATED));

    let channel = grpc_channel(grpc_port).await;
    let wrong_grpc: [(&str, &[(&str, &str)]); 2] = [
        ("no token", &[]),
        ("wrong token", &[("authorization", "Bearer not-the-token")]),
    ];
    for (n, (what, headers)) in wrong_grpc.iter().enumerate() {
        let r = grpc_export(
            &channel,
            TRACE_EXPORT,
            headers,
            frame(false, &body(20 + n as u8)),
        )
        .await;
        assert_eq!(r.code, Some(UNAUTHENTICATED), "gRPC, {what}: {}", r.message);
        assert!(
            r.message.contains("bearer token"),
            "gRPC, {what}: {}",
            r.message
        );
    }

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
    assert_eq!(r.status, 200, "HTTP, right token: {:?}", r.body);
    let auth = [("authorization", right.as_str())];
    let r = grpc_export(&channel, TRACE_EXPORT, &auth, frame(false, &body(2))).await;
    assert_eq!(r.code, Some(OK), "gRPC, right token: {}", r.message);
    drop(channel);

    assert_eq!(
        metric(
            &collector,
            r#"tradewatch_receiver_unauthorized_requests_total{receiver="otlp"}"#
        ),
        7.0,
        "every refused token counted"
    );
    assert_eq!(
        metric(
            &collector,
            r#"tradewatch_receiver_bad_requests_total{receiver="otlp"}"#
        ),
        0.0
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
}
