//! The OTLP exporter against downstreams that answer with more than "ok":
//!
//! * a partial success (gRPC: in the `ExportTraceServiceResponse`; HTTP: in the protobuf
//!   response body) is counted in `rejected_items`, its message is the exporter's last
//!   error in `/status` while the exporter stays ok, and it is logged once, not per batch;
//! * an error response with a 64 MiB body is read no further than 64 KiB, and the error
//!   message says it was cut.

mod common;

use common::{eventually, free_port, Collector};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient,
    trace_service_server::{TraceService, TraceServiceServer},
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn spans(n: usize, tag: &str) -> ExportTraceServiceRequest {
    padded_spans(n, tag, 0)
}

fn padded_spans(n: usize, tag: &str, pad: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: vec![7; 16],
                        span_id: vec![i as u8 + 1; 8],
                        name: format!("{tag}-{i}"),
                        attributes: vec![KeyValue {
                            key: "pad".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue("p".repeat(pad))),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A TraceService that takes everything and says it rejected two spans of each request.
struct PartialGrpc {
    requests: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl TraceService for PartialGrpc {
    async fn export(
        &self,
        _req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 2,
                error_message: "grpc side: span names must be lowercase".into(),
            }),
        }))
    }
}

fn exporter_status(c: &Collector, id: &str) -> serde_json::Value {
    let st = c.status();
    st["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["kind"] == "exporter" && x["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no exporter {id} in /status: {st}"))
}

fn exporter_counter(c: &Collector, name: &str, id: &str) -> Option<f64> {
    common::metric_value(
        &c.metrics(),
        &format!(r#"tradewatch_exporter_{name}_total{{exporter="{id}",signal="traces"}}"#),
    )
}

fn collector(grpc: u16, exporters: &[(&str, &str, u16)]) -> Collector {
    let service = free_port();
    let mut cfg = format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "off"

[service]
http = "127.0.0.1:{service}"

[service.pipelines.traces]
receivers = ["otlp"]
exporters = [{}]
"#,
        exporters
            .iter()
            .map(|(id, _, _)| format!("\"{id}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (id, protocol, port) in exporters {
        cfg.push_str(&format!(
            r#"
[exporters."{id}"]
endpoint = "http://127.0.0.1:{port}"
protocol = "{protocol}"
compression = "gzip"
timeout = "5s"
[exporters."{id}".retry_on_failure]
initial_interval = "100ms"
max_elapsed_time = "2s"
"#
        ));
    }
    Collector::start(&cfg, service)
}

fn send(rt: &tokio::runtime::Runtime, grpc: u16, req: ExportTraceServiceRequest) {
    rt.block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .expect("connect to tradewatch");
        client
            .export(req)
            .await
            .expect("tradewatch takes the spans");
    });
}

#[test]
fn partial_success_is_counted_shown_and_logged_once_over_grpc_and_http() {
    let rt = runtime();
    // The gRPC downstream.
    let grpc_requests = Arc::new(AtomicUsize::new(0));
    let grpc_down = free_port();
    let service = TraceServiceServer::new(PartialGrpc {
        requests: grpc_requests.clone(),
    })
    .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let grpc_listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", grpc_down)))
        .expect("bind the gRPC downstream");
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc_listener)),
    );
    // The HTTP downstream: a protobuf ExportTraceServiceResponse with a partial success.
    // It counts the spans in the gzip bodies it is sent.
    let http_requests = Arc::new(AtomicUsize::new(0));
    let http_spans = Arc::new(AtomicUsize::new(0));
    let http_down = free_port();
    let (counted, spans_counted) = (http_requests.clone(), http_spans.clone());
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (counted, spans_counted) = (counted.clone(), spans_counted.clone());
                async move {
                    assert_eq!(headers["content-encoding"], "gzip");
                    let mut raw = Vec::new();
                    flate2::read::GzDecoder::new(&body[..])
                        .read_to_end(&mut raw)
                        .expect("a gzip body");
                    let req = ExportTraceServiceRequest::decode(&raw[..]).expect("a trace request");
                    spans_counted.fetch_add(
                        req.resource_spans[0].scope_spans[0].spans.len(),
                        Ordering::SeqCst,
                    );
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = ExportTraceServiceResponse {
                        partial_success: Some(ExportTracePartialSuccess {
                            rejected_spans: 3,
                            error_message: "http side: too many attributes".into(),
                        }),
                    }
                    .encode_to_vec();
                    ([("content-type", "application/x-protobuf")], body)
                }
            },
        ),
    );
    let http_listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", http_down)))
        .expect("bind the HTTP downstream");
    rt.spawn(async move { axum::serve(http_listener, app).await });

    let grpc = free_port();
    let c = collector(
        grpc,
        &[
            ("otlp/grpcdown", "grpc", grpc_down),
            ("otlp/httpdown", "http", http_down),
        ],
    );
    // The last request is over 64 KiB: compressed on the blocking pool.
    for (i, pad) in [0, 10, 20_000].into_iter().enumerate() {
        send(&rt, grpc, padded_spans(5, &format!("batch{i}"), pad));
    }
    eventually(WAIT, "both downstreams got three requests", || {
        grpc_requests.load(Ordering::SeqCst) >= 3 && http_requests.load(Ordering::SeqCst) >= 3
    });
    assert_eq!(http_spans.load(Ordering::SeqCst), 15);
    for (id, rejected, per_request, message) in [
        (
            "otlp/grpcdown",
            6.0,
            2,
            "grpc side: span names must be lowercase",
        ),
        ("otlp/httpdown", 9.0, 3, "http side: too many attributes"),
    ] {
        eventually(
            WAIT,
            &format!("{id} counts {rejected} rejected spans"),
            || exporter_counter(&c, "rejected_items", id) == Some(rejected),
        );
        // The request itself was taken: sent, not failed, not retried.
        assert_eq!(exporter_counter(&c, "sent_items", id), Some(15.0), "{id}");
        assert_eq!(
            exporter_counter(&c, "send_failed_items", id),
            Some(0.0),
            "{id}"
        );
        let st = exporter_status(&c, id);
        assert_eq!(st["state"], "ok", "{id}: {st}");
        let last = st["last_error"]["message"].as_str().unwrap_or_default();
        assert!(
            last.contains(message) && last.contains(&format!("rejected {per_request} of 5 spans")),
            "{id}: the last error should quote the server: {st}"
        );
    }
    // One warning per exporter, not one per batch.
    let logs = c.logs();
    for message in [
        "grpc side: span names must be lowercase",
        "http side: too many attributes",
    ] {
        let lines = logs.lines().filter(|l| l.contains(message)).count();
        assert_eq!(lines, 1, "one warning for {message:?}:\n{logs}");
    }
    assert!(
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains("partial success")),
        "{logs}"
    );
}

/// A downstream answering 400 with a 64 MiB body; returns the bytes it managed to
/// write before the client hung up, once it is done.
fn huge_error_server(port: u16, written: Arc<AtomicUsize>, done: Arc<AtomicBool>) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        // Read the request head and its body.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        let _ = s.read_exact(&mut body);
        const SIZE: usize = 64 << 20;
        let _ = write!(
            s,
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/html\r\ncontent-length: {SIZE}\r\n\r\n"
        );
        let chunk = vec![b'x'; 64 * 1024];
        while written.load(Ordering::SeqCst) < SIZE {
            match s.write(&chunk) {
                Ok(n) if n > 0 => {
                    written.fetch_add(n, Ordering::SeqCst);
                }
                _ => break,
            }
        }
        done.store(true, Ordering::SeqCst);
    });
}

#[test]
fn a_huge_error_body_is_read_no_further_than_64_kib_and_the_message_says_so() {
    let rt = runtime();
    let down = free_port();
    let written = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    huge_error_server(down, written.clone(), done.clone());
    let grpc = free_port();
    let c = collector(grpc, &[("otlp/down", "http", down)]);
    send(&rt, grpc, spans(4, "doomed"));
    eventually(WAIT, "the 400 is counted as a failed send", || {
        exporter_counter(&c, "send_failed_items", "otlp/down") == Some(4.0)
    });
    let st = exporter_status(&c, "otlp/down");
    let last = st["last_error"]["message"].as_str().unwrap_or_default();
    assert!(last.contains("HTTP 400 Bad Request: xxx"), "{st}");
    assert!(
        last.contains("truncated"),
        "the message should say it was cut: {st}"
    );
    assert!(
        last.len() < 1024,
        "the message is bounded: {} bytes",
        last.len()
    );
    // The exporter hung up instead of reading 64 MiB.
    eventually(WAIT, "the downstream stops writing", || {
        done.load(Ordering::SeqCst)
    });
    let sent = written.load(Ordering::SeqCst);
    assert!(
        sent < 32 << 20,
        "the exporter read {sent} bytes of the error body"
    );
    // Nor did its memory grow by the body's size.
    let pid = c.child.as_ref().expect("running").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    assert!(
        peak_kib < 48 * 1024,
        "peak RSS {peak_kib} KiB: the error body was held in memory"
    );
}
