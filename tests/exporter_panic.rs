//! An exporter that panics on a batch: the batch's acknowledgement resolves `GaveUp`, so
//! an OTLP client with `wait_for_delivery` is told to retry (HTTP 503, gRPC
//! `UNAVAILABLE`); `/status` shows the exporter `failed` with the panic message; and the
//! service keeps serving, other pipelines and the same exporter's later batches alike.
//!
//! The panicking exporter exists only here: the test registers it in an extended
//! registry and runs the configuration in-process.

mod common;

use common::free_port;
use futures_util::future::BoxFuture;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tradewatch::component::{
    BuildContext, BuildError, ComponentId, ExportError, Exporter, ExporterConfig, Kind, Signal,
};
use tradewatch::config::{component_config, Config, ConfigError, Source};
use tradewatch::pipeline::sending::SendingSettings;
use tradewatch::pipeline::Payload;

/// `[exporters.panicky]`: panics on a batch of exactly one item, delivers the rest.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PanickyConfig {}

fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let c: PanickyConfig = component_config(src, Kind::Exporter, id)?;
    Ok(Arc::new(c))
}

impl ExporterConfig for PanickyConfig {
    fn signals(&self) -> Vec<Signal> {
        Signal::ALL.to_vec()
    }
    fn sending(&self) -> SendingSettings {
        SendingSettings::in_process(16, 2, Duration::from_secs(5))
    }
    fn build(&self, _ctx: &BuildContext) -> Result<Arc<dyn Exporter>, BuildError> {
        Ok(Arc::new(Panicky))
    }
}

struct Panicky;

impl Exporter for Panicky {
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        Box::pin(async move {
            if payload.items() == 1 {
                panic!("poison batch: a lone span");
            }
            Ok(())
        })
    }
}

fn spans(n: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: vec![7; 16],
                        span_id: vec![i as u8 + 1; 8],
                        name: format!("span-{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn logs() -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default()],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn post(http: &reqwest::Client, port: u16, path: &str, body: Vec<u8>) -> u16 {
    http.post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("OTLP/HTTP request")
        .status()
        .as_u16()
}

async fn status(http: &reqwest::Client, port: u16) -> serde_json::Value {
    let body = http
        .get(format!("http://127.0.0.1:{port}/status"))
        .send()
        .await
        .expect("GET /status")
        .bytes()
        .await
        .expect("/status body");
    serde_json::from_slice(&body).expect("/status is JSON")
}

fn component<'a>(status: &'a serde_json::Value, kind: &str, id: &str) -> &'a serde_json::Value {
    status["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c["kind"] == kind && c["id"] == id)
        .unwrap_or_else(|| panic!("{kind} {id} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_exporter_fails_its_batch_and_the_service_keeps_serving() {
    let (grpc, otlp_http, service) = (free_port(), free_port(), free_port());
    let text = format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "127.0.0.1:{otlp_http}"
wait_for_delivery = true

[exporters.panicky]
[exporters.nop]

[service]
http = "127.0.0.1:{service}"

[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["panicky"]

[service.pipelines.logs]
receivers = ["otlp"]
exporters = ["nop"]
"#
    );
    let mut registry = tradewatch::registry::builtin();
    registry.exporters.push(("panicky", parse));
    let src = Source::from_text("panic.toml".into(), &text, &|_| None).expect("config parses");
    let cfg = Config::from_source(&src, &registry).expect("config is valid");
    let stop = CancellationToken::new();
    let run = tokio::spawn(tradewatch::service::run::run(cfg, stop.clone()));

    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // The service port answers from the start of start-up; data waits for "running"
    // (every receiver listening).
    loop {
        let running = match http
            .get(format!("http://127.0.0.1:{service}/health"))
            .send()
            .await
        {
            Ok(r) => r
                .text()
                .await
                .unwrap_or_default()
                .contains(r#""phase":"running""#),
            Err(_) => false,
        };
        if running {
            break;
        }
        assert!(Instant::now() < deadline, "the service never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A lone span makes the exporter panic: the client is told to retry, over HTTP...
    let code = post(&http, otlp_http, "/v1/traces", spans(1).encode_to_vec()).await;
    assert_eq!(code, 503, "a batch lost to a panic is not acknowledged");
    // ...and over gRPC.
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("gRPC connect");
    let err = client
        .export(spans(1))
        .await
        .expect_err("a batch lost to a panic is not acknowledged");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");

    let st = status(&http, service).await;
    let exporter = component(&st, "exporter", "panicky");
    assert_eq!(exporter["state"], "failed", "{exporter}");
    let message = exporter["last_error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("poison batch: a lone span"), "{message}");
    assert_eq!(exporter["counters"]["panics"], 2, "{exporter}");
    assert_eq!(
        exporter["counters"]["send_failed_items{signal=\"traces\"}"], 2,
        "{exporter}"
    );
    assert_eq!(st["status"], "UNHEALTHY", "a critical exporter failed");

    // The service keeps serving: another pipeline...
    let code = post(&http, otlp_http, "/v1/logs", logs().encode_to_vec()).await;
    assert_eq!(code, 200);
    // ...and the same exporter, for a batch it can take.
    let code = post(&http, otlp_http, "/v1/traces", spans(3).encode_to_vec()).await;
    assert_eq!(code, 200);
    client.export(spans(2)).await.expect("delivered over gRPC");
    let st = status(&http, service).await;
    let exporter = component(&st, "exporter", "panicky");
    assert_eq!(exporter["state"], "ok", "{exporter}");
    assert_eq!(exporter["counters"]["sent_items{signal=\"traces\"}"], 5);
    assert_eq!(exporter["counters"]["panics"], 2);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the service stops")
        .expect("the run task did not panic")
        .expect("shutdown drained");
}
