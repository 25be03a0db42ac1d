//! `wait_for_delivery`: the OTLP receiver answers only once every exporter delivered
//! the data (end-to-end acknowledgements), and tells the client to retry when one gave up.

mod common;

use common::{read_jsonl, spans_in, Collector};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use std::collections::BTreeSet;
use std::time::Duration;

/// A collector whose OTLP receiver waits for delivery, batching into `exporter` (declared
/// by `exporter_toml`).
fn collector(grpc: u16, http: u16, service: u16, exporter: &str, exporter_toml: &str) -> String {
    format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "127.0.0.1:{http}"
wait_for_delivery = true

[processors.batch]
send_batch_size = 1000
timeout = "50ms"

{exporter_toml}

[service]
http = "127.0.0.1:{service}"

[service.pipelines.traces]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["{exporter}"]
"#
    )
}

fn request(name: &str, n: u8) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..3)
                    .map(|i| Span {
                        trace_id: vec![n; 16],
                        span_id: vec![n, i, 1, 1, 1, 1, 1, 1],
                        name: format!("{name}-{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn names(c: &Collector) -> BTreeSet<String> {
    spans_in(&read_jsonl(&c.path("out.jsonl")))
        .iter()
        .map(|(_, s)| s["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn answers_after_delivery_and_asks_for_a_retry_when_an_exporter_gave_up() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (b_grpc, b_http, b_service) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let (a_grpc, a_http, a_service) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let forward = format!(
        r#"[exporters."otlp/out"]
endpoint = "http://127.0.0.1:{b_grpc}"
[exporters."otlp/out".retry_on_failure]
initial_interval = "100ms"
max_interval = "200ms"
max_elapsed_time = "1s""#
    );
    let a = Collector::start(
        &collector(a_grpc, a_http, a_service, "otlp/out", &forward),
        a_service,
    );
    let grpc_send = |req: ExportTraceServiceRequest| {
        rt.block_on(async {
            let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{a_grpc}"))
                .await
                .unwrap();
            client.export(req).await
        })
    };

    // B is down: A retries for up to 1 s, gives up, and only then answers — UNAVAILABLE,
    // so the client knows to send again. "Only then" is read off A's counters at the
    // moment of the answer (the give-up is counted before the acknowledgement fails),
    // not off a clock: jitter may end the retries a little before the second is up.
    let err = grpc_send(request("lost", 1)).expect_err("not delivered, so not OK");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("gave up"), "{}", err.message());
    assert!(
        a.metric(
            r#"tradewatch_exporter_send_failed_items_total{exporter="otlp/out",signal="traces"}"#
        ) >= 1.0,
        "answered only after the exporter gave up"
    );
    assert!(
        a.metric(r#"tradewatch_exporter_retries_total{exporter="otlp/out"}"#) >= 2.0,
        "answered only after retrying"
    );
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{a_http}/v1/traces"))
            .header("content-type", "application/json")
            .body(r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"02020202020202020202020202020202","spanId":"0202020202020202","name":"lost-http"}]}]}]}"#)
            .send()
            .await
            .unwrap()
    });
    assert_eq!(status.status(), 503);
    assert!(status.headers().contains_key("retry-after"));

    // B is up and also waits for its own file exporter: when A says OK, the spans are
    // already on B's disk.
    let to_file = "[exporters.file]\npath = \"out.jsonl\"";
    let b = Collector::start(
        &collector(b_grpc, b_http, b_service, "file", to_file),
        b_service,
    );
    for n in 0..3u8 {
        grpc_send(request(&format!("kept{n}"), 10 + n)).expect("delivered");
        let got = names(&b);
        for i in 0..3 {
            assert!(
                got.contains(&format!("kept{n}-{i}")),
                "OK came before delivery: {got:?}"
            );
        }
    }
    assert!(
        !names(&b).iter().any(|n| n.starts_with("lost")),
        "nothing given up on arrives later"
    );
    common::eventually_eq(Duration::from_secs(10), "items sent", 9.0, || {
        a.metric(r#"tradewatch_exporter_sent_items_total{exporter="otlp/out",signal="traces"}"#)
    });
    common::eventually_eq(Duration::from_secs(10), "items given up on", 4.0, || {
        a.metric(
            r#"tradewatch_exporter_send_failed_items_total{exporter="otlp/out",signal="traces"}"#,
        )
    });
}
