//! End to end: the `resource` processor in the real binary. Traces over OTLP/gRPC,
//! metrics and logs over OTLP/HTTP protobuf, several resources per request (with
//! attributes to upsert, insert and delete, without a resource, with an empty one); the
//! file exporter's output has exactly the configured edits and is otherwise what was
//! sent, item for item. `validate` points at a bad action with file:line.

mod common;

use common::{free_port, Collector};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::process::Command;
use std::time::Duration;
use tradewatch::otlp::{attr, LogsBuilder, MetricsBuilder, Temporality};

const GIVE_UP: Duration = Duration::from_secs(30);

fn config(grpc: u16, http: u16, service: u16) -> String {
    let mut cfg = format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "127.0.0.1:{http}"

[processors.resource]
attributes = [
  {{ key = "deployment.environment", value = "${{TW_TEST_ENV:-prod}}", action = "upsert" }},
  {{ key = "service.namespace", value = "trading", action = "insert" }},
  {{ key = "internal.debug", action = "delete" }},
  {{ key = "replicas", value = 3, action = "upsert" }},
]

[exporters.file]
path = "out.jsonl"

[service]
http = "127.0.0.1:{service}"
"#
    );
    for signal in ["traces", "metrics", "logs"] {
        cfg.push_str(&format!(
            "\n[service.pipelines.{signal}]\nreceivers = [\"otlp\"]\nprocessors = [\"resource\"]\nexporters = [\"file\"]\n"
        ));
    }
    cfg
}

/// The resources each request carries: every case the actions distinguish.
fn resources(tag: &str) -> Vec<Option<Resource>> {
    let r = |attrs: Vec<KeyValue>| {
        Some(Resource {
            attributes: attrs,
            ..Default::default()
        })
    };
    vec![
        // Everything to edit: replaced, kept (insert only when absent), deleted.
        r(vec![
            attr("service.name", format!("{tag}-a")),
            attr("deployment.environment", "dev"),
            attr("service.namespace", "risk"),
            attr("internal.debug", true),
            attr("host.name", "h1"),
        ]),
        // Nothing of it: all added.
        r(vec![attr("service.name", format!("{tag}-b"))]),
        None,
        r(Vec::new()),
    ]
}

/// What the processor should make of a resource, written out independently of it.
fn expected(r: &Option<Resource>) -> Option<Resource> {
    let mut attrs: Vec<KeyValue> = r.as_ref().map(|r| r.attributes.clone()).unwrap_or_default();
    match attrs
        .iter_mut()
        .find(|kv| kv.key == "deployment.environment")
    {
        Some(kv) => *kv = attr("deployment.environment", "staging"),
        None => attrs.push(attr("deployment.environment", "staging")),
    }
    if !attrs.iter().any(|kv| kv.key == "service.namespace") {
        attrs.push(attr("service.namespace", "trading"));
    }
    attrs.retain(|kv| kv.key != "internal.debug");
    attrs.push(attr("replicas", 3));
    Some(Resource {
        attributes: attrs,
        ..r.clone().unwrap_or_default()
    })
}

fn traces(n: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: resources("traces")
            .into_iter()
            .enumerate()
            .map(|(i, resource)| ResourceSpans {
                resource,
                scope_spans: vec![ScopeSpans {
                    spans: (0..3)
                        .map(|j| Span {
                            trace_id: vec![n as u8 + 1; 16],
                            span_id: [i as u8, j as u8, 1, 2, 3, 4, 5, 6].to_vec(),
                            name: format!("op{n}.{i}.{j}"),
                            attributes: vec![attr("seq", (n * 100 + i * 10 + j) as i64)],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            })
            .collect(),
    }
}

fn metrics() -> ExportMetricsServiceRequest {
    let mut b = MetricsBuilder::new();
    for (i, r) in resources("metrics").into_iter().enumerate() {
        b.resource(r.map(|r| r.attributes).unwrap_or_default())
            .scope("tradewatch.test", "1")
            .gauge("freqtrade.profit.ratio", "1", "profit")
            .point(
                0.5 + i as f64,
                [attr("bot", "main")],
                1_700_000_000_000_000_000u64,
            )
            .sum("trades", "{trade}", "", Temporality::Cumulative, true)
            .point(i as i64, (), 1_700_000_000_000_000_000u64);
    }
    let mut req = b.build();
    // The builder always writes a resource; the cases need none and an empty one too.
    req.resource_metrics[2].resource = None;
    req
}

fn logs() -> ExportLogsServiceRequest {
    let mut b = LogsBuilder::new();
    for (i, r) in resources("logs").into_iter().enumerate() {
        b.resource(r.map(|r| r.attributes).unwrap_or_default())
            .scope("tradewatch.test", "1")
            .log(
                1_700_000_000_000_000_000u64 + i as u64,
                SeverityNumber::Warn,
                format!("order {i} filled"),
                [attr("seq", i as i64)],
            );
    }
    let mut req = b.build();
    req.resource_logs[2].resource = None;
    req
}

fn post(rt: &tokio::runtime::Runtime, port: u16, signal: &str, body: Vec<u8>) {
    let url = format!("http://127.0.0.1:{port}/v1/{signal}");
    let status = rt
        .block_on(async {
            reqwest::Client::new()
                .post(&url)
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .await
        })
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .status();
    assert_eq!(status, 200, "POST {url}");
}

fn sorted<T: std::fmt::Debug>(mut v: Vec<T>) -> Vec<T> {
    v.sort_by_key(|x| format!("{x:?}"));
    v
}

#[test]
fn resource_attributes_are_edited_on_every_signal_and_nothing_else() {
    let (grpc, http, service) = (free_port(), free_port(), free_port());
    let mut c = Collector::start_with_env(
        &config(grpc, http, service),
        service,
        &[("TW_TEST_ENV", "staging")],
    );
    // Worker threads keep the client's connections answering the server's shutdown.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    let sent_traces: Vec<_> = (0..3).map(traces).collect();
    let channel = rt.block_on(async {
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc}"))
            .unwrap()
            .connect()
            .await
            .expect("connect over gRPC")
    });
    for req in &sent_traces {
        let mut client = TraceServiceClient::new(channel.clone());
        rt.block_on(client.export(req.clone()))
            .expect("gRPC export accepted");
    }
    let (sent_metrics, sent_logs) = (metrics(), logs());
    post(&rt, http, "metrics", sent_metrics.encode_to_vec());
    post(&rt, http, "logs", sent_logs.encode_to_vec());

    let out = c.path("out.jsonl");
    common::eventually(GIVE_UP, "every request is in the file", || {
        common::read_jsonl(&out).len() >= 5
    });
    drop(channel);
    let status = c.terminate(GIVE_UP);
    assert!(status.success(), "{status}\n{}", c.logs());

    let (mut got_spans, mut got_metrics, mut got_logs) = (Vec::new(), Vec::new(), Vec::new());
    for line in common::read_jsonl(&out) {
        let text = line.to_string();
        if line.get("resourceSpans").is_some() {
            let r: ExportTraceServiceRequest = serde_json::from_value(line).expect(&text);
            got_spans.extend(r.resource_spans);
        } else if line.get("resourceMetrics").is_some() {
            let r: ExportMetricsServiceRequest = serde_json::from_value(line).expect(&text);
            got_metrics.extend(r.resource_metrics);
        } else {
            let r: ExportLogsServiceRequest = serde_json::from_value(line).expect(&text);
            got_logs.extend(r.resource_logs);
        }
    }

    let mut want_spans: Vec<ResourceSpans> = sent_traces
        .into_iter()
        .flat_map(|r| r.resource_spans)
        .collect();
    want_spans
        .iter_mut()
        .for_each(|r| r.resource = expected(&r.resource));
    let mut want_metrics = sent_metrics.resource_metrics;
    want_metrics
        .iter_mut()
        .for_each(|r| r.resource = expected(&r.resource));
    let mut want_logs = sent_logs.resource_logs;
    want_logs
        .iter_mut()
        .for_each(|r| r.resource = expected(&r.resource));
    assert_eq!(want_spans.len(), 12);
    assert_eq!(sorted(got_spans), sorted(want_spans));
    assert_eq!(sorted(got_metrics), sorted(want_metrics));
    assert_eq!(sorted(got_logs), sorted(want_logs));
}

#[test]
fn validate_points_at_a_bad_action() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let cfg = config(free_port(), free_port(), free_port()).replace(
        r#"{ key = "internal.debug", action = "delete" }"#,
        r#"{ key = "internal.debug", action = "remove" }"#,
    );
    let line = cfg
        .lines()
        .position(|l| l.contains("\"remove\""))
        .expect("the bad line")
        + 1;
    std::fs::write(&path, &cfg).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tradewatch"))
        .arg("validate")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let want = format!(
        "{}:{line}:3: processors.resource.attributes[2].action: unknown action \"remove\"",
        path.display()
    );
    assert!(stderr.contains(&want), "want {want}\ngot {stderr}");
}
