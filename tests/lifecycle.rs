//! The real binary's life cycle around signals: SIGHUP (sent by log rotation scripts,
//! or by an operator) reloads the configuration and the collector keeps serving (the
//! reload itself is tested in `tests/reload.rs`); SIGTERM still drains and exits 0.

mod common;

use common::{eventually, free_port, http_get, Collector};
use std::time::Duration;

#[test]
fn sighup_reloads_and_the_collector_keeps_serving() {
    let (otlp, service) = (free_port(), free_port());
    let config = format!(
        r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{otlp}"
[exporters.file]
path = "out.jsonl"
[service]
http = "127.0.0.1:{service}"
[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["file"]
"#
    );
    let mut c = Collector::start(&config, service);
    common::signal(c.child.as_ref().unwrap(), "HUP");
    eventually(Duration::from_secs(20), "SIGHUP is logged", || {
        c.logs().contains("SIGHUP received")
    });
    eventually(Duration::from_secs(20), "the reload is done", || {
        c.logs().contains("configuration reloaded")
    });
    // A second one is no different.
    common::signal(c.child.as_ref().unwrap(), "HUP");
    eventually(
        Duration::from_secs(20),
        "the second SIGHUP's reload is done",
        || c.logs().matches("configuration reloaded").count() == 2,
    );
    assert!(
        c.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "still running after SIGHUP:\n{}",
        c.logs()
    );
    assert_eq!(http_get(c.service, "/health").unwrap().0, 200);
    assert_eq!(post_span(otlp), 200, "the OTLP receiver still accepts");
    eventually(Duration::from_secs(20), "the span is written", || {
        common::spans_in(&common::read_jsonl(&c.path("out.jsonl"))).len() == 1
    });
    let status = c.terminate(Duration::from_secs(30));
    assert!(status.success(), "SIGTERM exits 0: {status}\n{}", c.logs());
}

fn post_span(port: u16) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"after-hup"}]}]}]}"#;
    rt.block_on(
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/v1/traces"))
            .header("content-type", "application/json")
            .body(body)
            .send(),
    )
    .expect("POST /v1/traces")
    .status()
    .as_u16()
}
