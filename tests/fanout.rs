//! Fan-out: one receiver into several pipelines, one pipeline into several exporters.
//! A stuck exporter stalls nobody until its own queue is full, and a receiver feeding
//! several pipelines delivers to all of them or to none.

mod common;

use common::{eventually, eventually_eq, read_jsonl, spans_in, BlackHole, Collector};
use std::collections::BTreeSet;
use std::time::Duration;

const QUEUE: usize = 4;

fn config(http: u16, service: u16, hole: u16) -> String {
    format!(
        r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"
pushback_wait = "100ms"

[exporters."file/fast"]
path = "fast.jsonl"
[exporters."file/copy"]
path = "copy.jsonl"
[exporters."otlp/stuck"]
endpoint = "http://127.0.0.1:{hole}"
protocol = "http"
timeout = "60s"
[exporters."otlp/stuck".sending_queue]
queue_size = {QUEUE}
num_consumers = 1

[service]
http = "127.0.0.1:{service}"
shutdown_timeout = "1s"

[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["file/fast", "otlp/stuck"]
capacity = 1

[service.pipelines."traces/copy"]
receivers = ["otlp"]
exporters = ["file/copy"]
capacity = 1
"#
    )
}

fn request(i: usize) -> String {
    format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"{i:032x}","spanId":"{:016x}","name":"r{i}"}},{{"traceId":"{i:032x}","spanId":"{:016x}","name":"r{i}b"}}]}}]}}]}}"#,
        2 * i + 1,
        2 * i + 2
    )
}

fn span_names(path: &std::path::Path) -> BTreeSet<String> {
    spans_in(&read_jsonl(path))
        .iter()
        .map(|(_, s)| s["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_stuck_exporter_stalls_no_one_until_its_queue_is_full() {
    let hole = BlackHole::start();
    let (http, service) = (common::free_port(), common::free_port());
    let mut c = Collector::start(&config(http, service, hole.port), service);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let send = |i: usize| {
        rt.block_on(
            client
                .post(format!("http://127.0.0.1:{http}/v1/traces"))
                .header("content-type", "application/json")
                .body(request(i))
                .send(),
        )
        .unwrap()
        .status()
        .as_u16()
    };

    // Fewer requests than the stuck exporter can hold: all accepted, and both other
    // exporters deliver them while it is stuck.
    for i in 0..QUEUE {
        assert_eq!(send(i), 200, "request {i}");
    }
    let want: BTreeSet<String> = (0..QUEUE)
        .flat_map(|i| [format!("r{i}"), format!("r{i}b")])
        .collect();
    eventually(
        Duration::from_secs(10),
        "file/fast and file/copy deliver",
        || span_names(&c.path("fast.jsonl")) == want && span_names(&c.path("copy.jsonl")) == want,
    );
    eventually(
        Duration::from_secs(10),
        "the stuck exporter connects",
        || hole.accepted() >= 1,
    );
    assert_eq!(
        c.metric(r#"tradewatch_exporter_sent_items_total{exporter="otlp/stuck",signal="traces"}"#),
        0.0
    );
    // One request is in flight; the rest wait in the queue (the sending loop takes an
    // item only when a sender is free).
    eventually(
        Duration::from_secs(10),
        "the stuck exporter's queue holds the rest",
        || {
            c.metric(r#"tradewatch_exporter_queue_size{exporter="otlp/stuck"}"#)
                == (QUEUE - 1) as f64
        },
    );

    // Now keep sending: once the stuck queue and the pipeline are full, requests are
    // refused — and a refused request reaches neither pipeline.
    let mut accepted: Vec<usize> = (0..QUEUE).collect();
    let mut refused = 0;
    for i in QUEUE..QUEUE + 20 {
        match send(i) {
            200 => accepted.push(i),
            503 => refused += 1,
            other => panic!("request {i}: unexpected status {other}"),
        }
        if refused == 3 {
            break;
        }
    }
    assert_eq!(
        refused, 3,
        "requests are refused once the stuck exporter's queue is full"
    );
    assert!(
        accepted.len() <= QUEUE + 4,
        "accepted {} before pushing back",
        accepted.len()
    );
    let want: BTreeSet<String> = accepted
        .iter()
        .flat_map(|i| [format!("r{i}"), format!("r{i}b")])
        .collect();
    // The copy pipeline got exactly the accepted requests: all of them, none refused.
    eventually(
        Duration::from_secs(10),
        "file/copy has every accepted request",
        || span_names(&c.path("copy.jsonl")) == want,
    );
    eventually_eq(Duration::from_secs(10), "refused items", 6.0, || {
        c.metric(r#"tradewatch_receiver_refused_items_total{receiver="otlp",signal="traces"}"#)
    });
    eventually_eq(
        Duration::from_secs(10),
        "accepted items",
        (accepted.len() * 2) as f64,
        || c.metric(r#"tradewatch_receiver_accepted_items_total{receiver="otlp",signal="traces"}"#),
    );
    c.kill();
}
