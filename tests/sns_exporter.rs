//! The `sns` exporter against a real moto server on loopback: alert records sent to the
//! collector as OTLP/JSON over HTTP go through a logs pipeline to SNS, and are read back
//! through an SQS queue subscribed to the topic (the SNS envelope: Subject, Message,
//! MessageAttributes).
#![cfg(feature = "aws")]

mod common;

use common::moto::{self, Moto};
use common::{eventually, free_port, Collector};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;
use tradewatch::config::{Config, Source};

/// A secret key the collector is given; it must never appear in what it prints.
const SECRET: &str = "tw-secret-9f3c1d77e0b2";

fn config(http: u16, service: u16, endpoint: &str, extra: &str) -> String {
    format!(
        r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"

[exporters.sns]
topic_arn = "${{ALERT_TOPIC_ARN}}"
region = "us-east-1"
endpoint_url = "{endpoint}"
min_severity = "warning"
send_resolved = true
subject_prefix = "[tradewatch]"
timeout = "2s"
{extra}
[exporters.sns.retry_on_failure]
initial_interval = "200ms"
max_interval = "500ms"

[service]
http = "127.0.0.1:{service}"
shutdown_timeout = "2s"

[service.pipelines.logs]
receivers = ["otlp"]
exporters = ["sns"]
"#
    )
}

fn env(topic_arn: &str) -> Vec<(&str, &str)> {
    let mut env: Vec<(&str, &str)> = moto::Moto::env()
        .into_iter()
        .filter(|(k, _)| *k != "AWS_SECRET_ACCESS_KEY")
        .collect();
    env.push(("AWS_SECRET_ACCESS_KEY", SECRET));
    env.push(("ALERT_TOPIC_ARN", topic_arn));
    // The SDK's own debug lines too: none may show the secret.
    env.push(("TRADEWATCH_LOG", "debug"));
    env
}

/// One alert record as `pipeline::alerts` shapes it, as OTLP/JSON.
fn record(
    name: &str,
    state: &str,
    severity: &str,
    fingerprint: &str,
    time_ns: u64,
    extra: &[(&str, &str)],
) -> Value {
    let mut attrs = vec![
        ("event.name", "alert"),
        ("alert.name", name),
        ("alert.state", state),
        ("alert.severity", severity),
        ("alert.fingerprint", fingerprint),
        ("alert.source", "risk"),
        ("bot", "main"),
        ("strategy", "SampleStrategy"),
    ];
    attrs.extend_from_slice(extra);
    json!({
        "timeUnixNano": time_ns.to_string(),
        "observedTimeUnixNano": time_ns.to_string(),
        "eventName": "alert",
        "severityNumber": match severity { "critical" => 17, "warning" => 13, _ => 9 },
        "severityText": severity.to_uppercase(),
        "body": {"stringValue": format!("{name} is {state}")},
        "traceId": "5b8efff798038103d269b633813fc60c",
        "attributes": attrs.iter().map(|(k, v)| json!({"key": k, "value": {"stringValue": v}})).collect::<Vec<_>>(),
    })
}

fn post(http: u16, records: &[Value]) {
    let body = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "tradewatch"}}]},
        "scopeLogs": [{"scope": {"name": "tradewatch.alerts"}, "logRecords": records}],
    }]});
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{http}/v1/logs"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("OTLP/HTTP request")
            .status()
    });
    assert_eq!(status.as_u16(), 200, "the collector took the records");
}

fn sent(c: &Collector) -> f64 {
    common::metric_value(
        &c.metrics(),
        "tradewatch_exporter_sent_items_total{exporter=\"sns\",signal=\"logs\"}",
    )
    .unwrap_or(0.0)
}

fn exporter_status(c: &Collector) -> Value {
    let st = c.status();
    st["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["kind"] == "exporter" && x["id"] == "sns")
        .cloned()
        .unwrap_or_else(|| panic!("no exporter sns in /status: {st}"))
}

/// Waits until `queue` holds `n` messages (polling it, keeping what it read), then
/// checks that no more arrive for a moment.
fn receive_n(moto: &Moto, queue: &str, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    eventually(
        Duration::from_secs(20),
        &format!("{n} messages in {queue}"),
        || {
            got.extend(moto.receive_all(queue));
            got.len() >= n
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    got.extend(moto.receive_all(queue));
    assert_eq!(got.len(), n, "exactly {n} messages: {got:#?}");
    got
}

fn attr(envelope: &Value, name: &str) -> Option<String> {
    envelope["MessageAttributes"][name]["Value"]
        .as_str()
        .map(str::to_owned)
}

fn assert_no_secret(c: &Collector) {
    let logs = c.logs();
    assert!(!logs.is_empty());
    assert!(
        !logs.contains(SECRET),
        "the AWS secret key appears in the collector's output"
    );
}

#[test]
fn alerts_reach_a_standard_topic_one_message_each_filtered_by_severity() {
    let moto = Moto::start();
    let (topic, queue) = moto.sns_topic_with_queue("alerts");
    let (http, service) = (free_port(), free_port());
    let c = Collector::start_with_env(
        &config(http, service, &moto.url(), ""),
        service,
        &env(&topic),
    );
    let long_name = format!("Drawdown\nline two\r\n{}", "x".repeat(300));
    let t = 1_700_000_000_000_000_000u64;
    post(
        http,
        &[
            record(&long_name, "firing", "critical", "fp-crit", t, &[]),
            record("OpenTradesHigh", "firing", "warning", "fp-warn", t + 1, &[]),
            // Below min_severity: not sent.
            record("HeartbeatLate", "firing", "info", "fp-info", t + 2, &[]),
            // The recovery of the critical alert: sent (its alert was).
            record(
                &long_name,
                "resolved",
                "info",
                "fp-crit",
                t + 3,
                &[("alert.resolves_severity", "critical")],
            ),
            // The recovery of the info alert: not sent.
            record("HeartbeatLate", "resolved", "info", "fp-info", t + 4, &[]),
        ],
    );
    let got = receive_n(&moto, &queue, 3);
    for m in &got {
        assert_eq!(m["TopicArn"], topic.as_str());
        let subject = m["Subject"].as_str().expect("a Subject");
        assert!(subject.chars().count() <= 99, "{subject}");
        assert!(!subject.chars().any(char::is_control), "{subject:?}");
        assert!(subject.starts_with("[tradewatch] "), "{subject}");
        assert!(attr(m, "severity").is_some(), "{m}");
        assert_eq!(attr(m, "bot").as_deref(), Some("main"));
        assert!(m["SqsAttributes"].get("MessageGroupId").is_none(), "{m}");
    }
    let by_state_name = |state: &str, prefix: &str| {
        got.iter()
            .find(|m| {
                attr(m, "state").as_deref() == Some(state)
                    && attr(m, "alert_name").is_some_and(|n| n.starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("a {state} {prefix} message in {got:#?}"))
    };
    let crit = by_state_name("firing", "Drawdown");
    let subject = crit["Subject"].as_str().unwrap();
    assert_eq!(subject.chars().count(), 99, "cut to the limit: {subject}");
    assert!(subject.starts_with("[tradewatch] FIRING critical: Drawdown line two xxx"));
    assert!(subject.ends_with('…'));
    assert_eq!(attr(crit, "severity").as_deref(), Some("critical"));
    let message = crit["Message"].as_str().unwrap();
    assert!(
        message.starts_with("FIRING critical: Drawdown"),
        "{message}"
    );
    assert!(message.contains(&format!("{} is firing", "x".repeat(300))));
    assert!(message.contains("strategy: SampleStrategy"), "{message}");
    assert!(message.contains("trace_id: 5b8efff798038103d269b633813fc60c"));
    assert!(message.contains("fingerprint: fp-crit"));
    let warn = by_state_name("firing", "OpenTradesHigh");
    assert_eq!(attr(warn, "severity").as_deref(), Some("warning"));
    assert_eq!(
        warn["Subject"],
        "[tradewatch] FIRING warning: OpenTradesHigh (bot main)"
    );
    let resolved = by_state_name("resolved", "Drawdown");
    assert!(resolved["Subject"]
        .as_str()
        .unwrap()
        .starts_with("[tradewatch] RESOLVED info: Drawdown"));
    assert!(!got
        .iter()
        .any(|m| attr(m, "alert_name").as_deref() == Some("HeartbeatLate")));
    eventually(Duration::from_secs(5), "the batch counted as sent", || {
        sent(&c) == 5.0
    });
    assert_no_secret(&c);
}

#[test]
fn a_fifo_topic_gets_group_and_dedup_ids_and_a_republished_record_arrives_once() {
    let moto = Moto::start();
    let (topic, queue) = moto.sns_fifo_topic_with_queue("alerts");
    assert!(topic.ends_with(".fifo"));
    let t = 1_700_000_100_000_000_000u64;
    let a = record("MaxDrawdownExceeded", "firing", "critical", "fp-dd", t, &[]);
    let b = record(
        "MaxDrawdownExceeded",
        "resolved",
        "info",
        "fp-dd",
        t + 5,
        &[("alert.resolves_severity", "critical")],
    );
    // The first collector publishes A.
    let (http, service) = (free_port(), free_port());
    let mut c = Collector::start_with_env(
        &config(http, service, &moto.url(), ""),
        service,
        &env(&topic),
    );
    post(http, std::slice::from_ref(&a));
    eventually(Duration::from_secs(20), "A published", || sent(&c) >= 1.0);
    assert_no_secret(&c);
    c.terminate(Duration::from_secs(10));
    // A second one (nothing remembered) is given A again, and B: SNS's deduplication
    // drops A's second copy, by its deduplication id alone.
    let (http, service) = (free_port(), free_port());
    let c = Collector::start_with_env(
        &config(http, service, &moto.url(), ""),
        service,
        &env(&topic),
    );
    post(http, &[a, b]);
    eventually(Duration::from_secs(20), "A and B published", || {
        sent(&c) >= 2.0
    });
    let got = receive_n(&moto, &queue, 2);
    let states: Vec<String> = got.iter().filter_map(|m| attr(m, "state")).collect();
    assert_eq!(states, ["firing", "resolved"], "in order, A once: {got:#?}");
    for m in &got {
        let sqs = &m["SqsAttributes"];
        assert_eq!(sqs["MessageGroupId"], "fp-dd", "the fingerprint: {m}");
        let dedup = sqs["MessageDeduplicationId"].as_str().expect("a dedup id");
        assert!(!dedup.is_empty() && dedup.len() <= 128, "{dedup}");
    }
    assert_ne!(
        got[0]["SqsAttributes"]["MessageDeduplicationId"],
        got[1]["SqsAttributes"]["MessageDeduplicationId"]
    );
    assert_no_secret(&c);
}

/// Forwards every connection on `listener` to `to`, both ways, until the process ends.
fn forward(listener: TcpListener, to: u16) {
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            };
            pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
            pipe(upstream, client);
        }
    });
}

#[test]
fn an_alert_sent_while_sns_is_unreachable_is_retried_and_delivered_once() {
    let moto = Moto::start();
    let (topic, queue) = moto.sns_topic_with_queue("outage");
    // The collector's endpoint: nothing listens there yet.
    let front = free_port();
    let (http, service) = (free_port(), free_port());
    let c = Collector::start_with_env(
        &config(http, service, &format!("http://127.0.0.1:{front}"), ""),
        service,
        &env(&topic),
    );
    post(
        http,
        &[record(
            "BotUnreachable",
            "firing",
            "critical",
            "fp-down",
            1_700_000_200_000_000_000,
            &[],
        )],
    );
    eventually(Duration::from_secs(20), "publish retried", || {
        common::metric_value(
            &c.metrics(),
            "tradewatch_exporter_retries_total{exporter=\"sns\"}",
        )
        .unwrap_or(0.0)
            >= 2.0
    });
    let st = exporter_status(&c);
    let err = st["last_error"]["message"].as_str().unwrap_or_default();
    assert!(err.contains("sns Publish"), "{st}");
    assert!(!err.contains(SECRET));
    assert_eq!(sent(&c), 0.0);
    // SNS comes back.
    forward(
        TcpListener::bind(("127.0.0.1", front)).expect("bind the front port"),
        moto.port,
    );
    let got = receive_n(&moto, &queue, 1);
    assert_eq!(
        attr(&got[0], "alert_name").as_deref(),
        Some("BotUnreachable")
    );
    eventually(Duration::from_secs(5), "counted as sent", || {
        sent(&c) == 1.0
    });
    assert_no_secret(&c);
}

#[test]
fn a_missing_topic_is_a_permanent_error_with_the_sns_error_code() {
    let moto = Moto::start();
    let topic = format!("arn:aws:sns:us-east-1:{}:no-such-topic", moto::ACCOUNT);
    let (http, service) = (free_port(), free_port());
    let c = Collector::start_with_env(
        &config(http, service, &moto.url(), ""),
        service,
        &env(&topic),
    );
    post(
        http,
        &[record(
            "X",
            "firing",
            "critical",
            "fp-x",
            1_700_000_300_000_000_000,
            &[],
        )],
    );
    eventually(Duration::from_secs(20), "given up", || {
        common::metric_value(
            &c.metrics(),
            "tradewatch_exporter_send_failed_items_total{exporter=\"sns\",signal=\"logs\"}",
        ) == Some(1.0)
    });
    let st = exporter_status(&c);
    let err = st["last_error"]["message"].as_str().unwrap_or_default();
    assert!(err.contains("NotFound"), "{st}");
    assert_eq!(
        common::metric_value(
            &c.metrics(),
            "tradewatch_exporter_retries_total{exporter=\"sns\"}"
        ),
        Some(0.0),
        "not retried"
    );
    // An alert channel is not critical: the service is degraded, not unhealthy.
    assert_ne!(c.status()["status"], "UNHEALTHY");
    assert_no_secret(&c);
}

fn validate(text: &str, env: &[(&str, &str)]) -> String {
    let lookup = |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    let src = Source::from_text("sns.toml".into(), text, &lookup).expect("TOML parses");
    match Config::from_source(&src, &tradewatch::registry::builtin()) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no line {key}"))
        + 1
}

#[test]
fn configuration_mistakes_are_refused_with_their_location() {
    let text = config(1, 2, "http://127.0.0.1:4566", "");
    let arn = "arn:aws:sns:us-east-1:123456789012:alerts";
    assert_eq!(validate(&text, &[("ALERT_TOPIC_ARN", arn)]), "");

    let err = validate(&text, &[("ALERT_TOPIC_ARN", "")]);
    assert!(
        err.contains("topic_arn is empty: set ALERT_TOPIC_ARN"),
        "{err}"
    );
    assert!(
        err.contains(&format!("sns.toml:{}:", line_of(&text, "topic_arn"))),
        "{err}"
    );
    let err = validate(
        &text,
        &[("ALERT_TOPIC_ARN", "arn:aws:sqs:us-east-1:123456789012:q")],
    );
    assert!(err.contains("not an SNS topic ARN"), "{err}");
    let err = validate(
        &text,
        &[("ALERT_TOPIC_ARN", "arn:aws:sns:eu-west-1:123456789012:a")],
    );
    assert!(err.contains("eu-west-1"), "{err}");

    let bad_url = config(1, 2, "ftp://x", "");
    let err = validate(&bad_url, &[("ALERT_TOPIC_ARN", arn)]);
    assert!(
        err.contains(&format!("sns.toml:{}:", line_of(&bad_url, "endpoint_url")))
            && err.contains("endpoint_url"),
        "{err}"
    );
    let no_region = text.replace("region = \"us-east-1\"", "region = \"\"");
    let err = validate(&no_region, &[("ALERT_TOPIC_ARN", arn)]);
    assert!(err.contains("region is empty"), "{err}");
    let unknown = config(1, 2, "", "topic = \"x\"\n");
    let err = validate(&unknown, &[("ALERT_TOPIC_ARN", arn)]);
    assert!(
        err.contains("unknown field"),
        "unknown keys are refused: {err}"
    );
    let group = config(1, 2, "", "message_group_id = \"a b\"\n");
    let err = validate(&group, &[("ALERT_TOPIC_ARN", arn)]);
    assert!(err.contains("message_group_id"), "{err}");
}
