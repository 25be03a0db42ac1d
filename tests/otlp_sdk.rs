//! Acceptance: a real OpenTelemetry SDK (Python, 1.45) sends spans, metrics and logs over
//! gRPC and over HTTP to the running binary, and the file exporter's output holds every
//! span, point and record with ids, attributes and resource intact.

mod common;

use common::{attrs, eventually, logs_in, metrics_in, read_jsonl, spans_in, Collector};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn config(grpc: u16, http: u16, service: u16) -> String {
    let mut c = format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "127.0.0.1:{http}"

[processors.batch]
send_batch_size = 100
timeout = "100ms"

[exporters.file]
path = "out/telemetry.jsonl"

[service]
http = "127.0.0.1:{service}"
"#
    );
    for signal in ["traces", "metrics", "logs"] {
        c.push_str(&format!(
            "\n[service.pipelines.{signal}]\nreceivers = [\"otlp\"]\nprocessors = [\"batch\"]\nexporters = [\"file\"]\n"
        ));
    }
    c
}

/// Runs the SDK client; returns its manifest of what it exported.
fn run_client(protocol: &str, endpoint: &str, run_id: &str, dir: &Path) -> Value {
    let out = dir.join(format!("manifest-{protocol}.json"));
    let script = common::repo_root().join("tests/peers/otel_client.py");
    let result = Command::new(common::python())
        .arg(&script)
        .args([
            "--protocol",
            protocol,
            "--endpoint",
            endpoint,
            "--metrics",
            "--spans",
            "25",
            "--logs",
            "12",
        ])
        .args([
            "--run-id",
            run_id,
            "--service-name",
            &format!("peer-{protocol}"),
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run the Python OpenTelemetry client");
    assert!(
        result.status.success(),
        "the SDK client reported failed exports ({}):\nstdout: {}\nstderr: {}",
        result.status,
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    serde_json::from_slice(&std::fs::read(&out).expect("manifest written"))
        .expect("manifest is JSON")
}

fn run_id_of(resource: &Value) -> Option<String> {
    attrs(&resource["attributes"])
        .get("tradewatch.test.run_id")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

fn hex_or_null(v: &Value) -> Value {
    match v.as_str() {
        Some("") | None => Value::Null,
        Some(s) => json!(s),
    }
}

fn num(v: &Value) -> Value {
    // OTLP/JSON writes 64-bit integers as strings.
    match v {
        Value::String(s) => s
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| v.clone()),
        other => other.clone(),
    }
}

fn check_spans(manifest: &Value, lines: &[Value], run_id: &str) {
    let got: BTreeMap<(String, String), (Value, Value)> = spans_in(lines)
        .into_iter()
        .filter(|(r, _)| run_id_of(r).as_deref() == Some(run_id))
        .map(|(r, s)| {
            let key = (
                s["traceId"].as_str().unwrap().to_owned(),
                s["spanId"].as_str().unwrap().to_owned(),
            );
            (key, (r, s))
        })
        .collect();
    let sent = manifest["spans"].as_array().unwrap();
    assert_eq!(got.len(), sent.len(), "every span arrives exactly once");
    let want_resource = Value::Object(manifest["resource"].as_object().unwrap().clone());
    for m in sent {
        let key = (
            m["trace_id"].as_str().unwrap().to_owned(),
            m["span_id"].as_str().unwrap().to_owned(),
        );
        let (resource, s) = got
            .get(&key)
            .unwrap_or_else(|| panic!("span {key:?} missing from the file output"));
        assert_eq!(
            Value::Object(attrs(&resource["attributes"])),
            want_resource,
            "resource of span {key:?}"
        );
        assert_eq!(s["name"], m["name"]);
        assert_eq!(s["kind"], m["kind"]);
        assert_eq!(hex_or_null(&s["parentSpanId"]), m["parent_span_id"]);
        assert_eq!(num(&s["startTimeUnixNano"]), m["start_time_unix_nano"]);
        assert_eq!(num(&s["endTimeUnixNano"]), m["end_time_unix_nano"]);
        assert_eq!(
            Value::Object(attrs(&s["attributes"])),
            m["attributes"],
            "attributes of span {}",
            m["name"]
        );
        assert_eq!(
            s["status"]["code"].as_i64().unwrap_or(0),
            m["status_code"].as_i64().unwrap()
        );
        assert_eq!(
            s["status"]["message"].as_str().unwrap_or(""),
            m["status_message"].as_str().unwrap_or("")
        );
        let events: Vec<Value> = s["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| json!({ "name": e["name"], "time_unix_nano": num(&e["timeUnixNano"]), "attributes": Value::Object(attrs(&e["attributes"])) }))
            .collect();
        assert_eq!(
            Value::Array(events),
            m["events"],
            "events of span {}",
            m["name"]
        );
    }
}

fn check_logs(manifest: &Value, lines: &[Value], run_id: &str) {
    let got: Vec<(Value, Value)> = logs_in(lines)
        .into_iter()
        .filter(|(r, _)| run_id_of(r).as_deref() == Some(run_id))
        .collect();
    let sent = manifest["logs"].as_array().unwrap();
    assert_eq!(
        got.len(),
        sent.len(),
        "every log record arrives exactly once"
    );
    for m in sent {
        let found = got
            .iter()
            .find(|(_, r)| r["body"]["stringValue"] == m["body"])
            .unwrap_or_else(|| panic!("log {} missing", m["body"]));
        let r = &found.1;
        assert_eq!(r["severityNumber"], m["severity_number"]);
        assert_eq!(r["severityText"], m["severity_text"]);
        assert_eq!(Value::Object(attrs(&r["attributes"])), m["attributes"]);
        assert_eq!(
            hex_or_null(&r["traceId"]),
            m["trace_id"],
            "trace id of log {}",
            m["body"]
        );
        assert_eq!(
            hex_or_null(&r["spanId"]),
            m["span_id"],
            "span id of log {}",
            m["body"]
        );
        assert_eq!(num(&r["timeUnixNano"]), m["time_unix_nano"]);
        assert_eq!(
            Value::Object(attrs(&found.0["attributes"])),
            Value::Object(manifest["resource"].as_object().unwrap().clone())
        );
    }
}

fn point_value(p: &Value) -> Value {
    if let Some(v) = p.get("asDouble") {
        return v.clone();
    }
    if let Some(v) = p.get("asInt") {
        return num(v);
    }
    Value::Null
}

fn check_metrics(manifest: &Value, lines: &[Value], run_id: &str) {
    let got: Vec<Value> = metrics_in(lines)
        .into_iter()
        .filter(|(r, _)| run_id_of(r).as_deref() == Some(run_id))
        .map(|(_, m)| m)
        .collect();
    let sent = manifest["metrics"].as_array().unwrap();
    assert_eq!(got.len(), sent.len(), "every metric arrives exactly once");
    for m in sent {
        let g = got
            .iter()
            .find(|g| g["name"] == m["name"])
            .unwrap_or_else(|| panic!("metric {} missing", m["name"]));
        assert_eq!(g["unit"], m["unit"]);
        assert_eq!(g["description"], m["description"]);
        let (kind, points) = ["sum", "gauge", "histogram"]
            .iter()
            .find_map(|k| {
                g.get(*k)
                    .map(|d| (*k, d["dataPoints"].as_array().cloned().unwrap_or_default()))
            })
            .unwrap_or_else(|| panic!("metric {} has no sum/gauge/histogram data", m["name"]));
        assert_eq!(kind, m["data_type"].as_str().unwrap());
        let want = m["datapoints"].as_array().unwrap();
        assert_eq!(points.len(), want.len(), "points of {}", m["name"]);
        for w in want {
            let p = points
                .iter()
                .find(|p| Value::Object(attrs(&p["attributes"])) == w["attributes"])
                .unwrap_or_else(|| panic!("point {} of {} missing", w["attributes"], m["name"]));
            if kind == "histogram" {
                assert_eq!(num(&p["count"]), w["count"]);
                assert_eq!(p["sum"], w["sum"]);
                let buckets: Vec<Value> = p["bucketCounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(num)
                    .collect();
                assert_eq!(Value::Array(buckets), w["bucket_counts"]);
                assert_eq!(p["explicitBounds"], w["explicit_bounds"]);
            } else {
                assert_eq!(
                    point_value(p),
                    w["value"],
                    "value of {} {}",
                    m["name"],
                    w["attributes"]
                );
            }
        }
    }
}

#[test]
fn python_sdk_over_grpc_and_http_arrives_intact() {
    let (grpc, http, service) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let collector = Collector::start(&config(grpc, http, service), service);
    let work = tempfile::tempdir().unwrap();
    let runs = [
        ("grpc", format!("127.0.0.1:{grpc}"), "run-grpc"),
        ("http", format!("http://127.0.0.1:{http}"), "run-http"),
    ];
    let manifests: Vec<Value> = runs
        .iter()
        .map(|(p, e, id)| run_client(p, e, id, work.path()))
        .collect();

    let out = collector.path("out/telemetry.jsonl");
    let expected_spans: usize = manifests
        .iter()
        .map(|m| m["spans"].as_array().unwrap().len())
        .sum();
    let expected_logs: usize = manifests
        .iter()
        .map(|m| m["logs"].as_array().unwrap().len())
        .sum();
    eventually(
        Duration::from_secs(20),
        "all spans and logs in the file output",
        || {
            let lines = read_jsonl(&out);
            spans_in(&lines).len() >= expected_spans && logs_in(&lines).len() >= expected_logs
        },
    );
    // Metrics come last in each client run; give the batch timeout a moment as well.
    eventually(
        Duration::from_secs(20),
        "all metrics in the file output",
        || {
            let lines = read_jsonl(&out);
            manifests.iter().zip(&runs).all(|(m, (_, _, id))| {
                metrics_in(&lines)
                    .iter()
                    .filter(|(r, _)| run_id_of(r).as_deref() == Some(*id))
                    .count()
                    >= m["metrics"].as_array().unwrap().len()
            })
        },
    );
    let lines = read_jsonl(&out);
    for (m, (_, _, id)) in manifests.iter().zip(&runs) {
        assert!(m["spans"].as_array().unwrap().len() >= 25);
        check_spans(m, &lines, id);
        check_logs(m, &lines, id);
        check_metrics(m, &lines, id);
    }

    // The receiver's counters agree with what the SDK sent.
    // The file exporter counts a batch after writing it: poll.
    for (what, sample, want) in [
        (
            "accepted spans",
            r#"tradewatch_receiver_accepted_items_total{receiver="otlp",signal="traces"}"#,
            expected_spans,
        ),
        (
            "accepted log records",
            r#"tradewatch_receiver_accepted_items_total{receiver="otlp",signal="logs"}"#,
            expected_logs,
        ),
        (
            "spans sent by the file exporter",
            r#"tradewatch_exporter_sent_items_total{exporter="file",signal="traces"}"#,
            expected_spans,
        ),
    ] {
        common::eventually_eq(Duration::from_secs(20), what, want, || {
            collector.metric(sample) as usize
        });
    }
}
