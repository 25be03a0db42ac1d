//! A failed channel never blocks the others: a logs pipeline fans out to a dead alert
//! channel (a peer that accepts connections and never answers) and a healthy one. With
//! `sending_queue.on_full = "drop_oldest"` on the dead one, every record reaches the
//! healthy channel while the dead one is still dead, and the dead one counts what it
//! dropped; with the default `"block"` the pipeline stalls behind it and the receiver
//! pushes back (HTTP 503).

mod common;

use common::{eventually, free_port, logs_in, read_jsonl, BlackHole, Collector};
use std::collections::BTreeSet;
use std::time::Duration;
use tradewatch::config::{Config, Source};

const RECORDS: usize = 5;

fn config(http: u16, service: u16, hole: u16, on_full: &str) -> String {
    format!(
        r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"
pushback_wait = "100ms"

[processors.batch]
send_batch_size = 10
timeout = "100ms"

[exporters."otlp/dead"]
endpoint = "http://127.0.0.1:{hole}"
protocol = "http"
timeout = "120s"
[exporters."otlp/dead".sending_queue]
queue_size = 2
num_consumers = 1
on_full = "{on_full}"

[exporters."file/healthy"]
path = "healthy.jsonl"

[service]
http = "127.0.0.1:{service}"
shutdown_timeout = "1s"

[service.pipelines.logs]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["otlp/dead", "file/healthy"]
capacity = 2
"#
    )
}

fn request(i: usize) -> String {
    let records: Vec<String> = (0..RECORDS)
        .map(|j| format!(r#"{{"body":{{"stringValue":"r{i}.{j}"}}}}"#))
        .collect();
    format!(
        r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{}]}}]}}]}}"#,
        records.join(",")
    )
}

fn post(rt: &tokio::runtime::Runtime, client: &reqwest::Client, port: u16, body: String) -> u16 {
    rt.block_on(async {
        client
            .post(format!("http://127.0.0.1:{port}/v1/logs"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("OTLP/HTTP request")
            .status()
            .as_u16()
    })
}

fn healthy(c: &Collector) -> BTreeSet<String> {
    logs_in(&read_jsonl(&c.path("healthy.jsonl")))
        .iter()
        .filter_map(|(_, r)| r["body"]["stringValue"].as_str().map(str::to_owned))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_dead_channel_with_drop_oldest_never_delays_the_healthy_one() {
    let hole = BlackHole::start();
    let (http, service) = (free_port(), free_port());
    let c = Collector::start(&config(http, service, hole.port, "drop_oldest"), service);
    let (rt, client) = (runtime(), reqwest::Client::new());
    for i in 0..30 {
        assert_eq!(post(&rt, &client, http, request(i)), 200, "request {i}");
        // Each request's records reach the healthy channel, one batch timeout later,
        // however full the dead channel's queue is.
        eventually(
            Duration::from_secs(10),
            &format!("request {i} reached the healthy channel"),
            || {
                let got = healthy(&c);
                (0..RECORDS).all(|j| got.contains(&format!("r{i}.{j}")))
            },
        );
    }
    assert!(hole.accepted() >= 1, "the dead channel is connected");
    let dropped =
        c.metric("tradewatch_exporter_dropped_items_total{exporter=\"otlp/dead\",signal=\"logs\"}");
    // 30 batches: at most one in flight and two queued; the rest were dropped, oldest first.
    assert!(dropped >= (27 * RECORDS) as f64, "{dropped} dropped");
    assert_eq!(
        c.metric("tradewatch_exporter_sent_items_total{exporter=\"file/healthy\",signal=\"logs\"}"),
        (30 * RECORDS) as f64
    );
}

#[test]
fn a_dead_channel_with_block_makes_the_pipeline_push_back() {
    let hole = BlackHole::start();
    let (http, service) = (free_port(), free_port());
    let c = Collector::start(&config(http, service, hole.port, "block"), service);
    let (rt, client) = (runtime(), reqwest::Client::new());
    let mut pushed_back = None;
    for i in 0..500 {
        match post(&rt, &client, http, request(i)) {
            200 => {}
            503 => {
                pushed_back = Some(i);
                break;
            }
            other => panic!("request {i}: unexpected status {other}"),
        }
    }
    let i = pushed_back.expect("the receiver pushed back once the dead channel's queue filled");
    assert!(
        i >= 3,
        "pushed back only once the queue was full (request {i})"
    );
    assert!(
        c.metric("tradewatch_receiver_refused_items_total{receiver=\"otlp\",signal=\"logs\"}")
            >= RECORDS as f64
    );
}

#[test]
fn an_unknown_on_full_is_refused_with_its_location() {
    let text = config(free_port(), free_port(), free_port(), "sometimes");
    let src = Source::from_text("alerts.toml".into(), &text, &|_| None).expect("TOML parses");
    let Err(err) = Config::from_source(&src, &tradewatch::registry::builtin()) else {
        panic!("on_full = \"sometimes\" is refused");
    };
    let err = err.to_string();
    let line = text
        .lines()
        .position(|l| l.starts_with("on_full"))
        .expect("on_full line")
        + 1;
    assert!(err.contains(&format!("alerts.toml:{line}:")), "{err}");
    assert!(err.contains("on_full"), "{err}");
    assert!(
        err.contains("drop_oldest"),
        "the message lists the choices: {err}"
    );
}
