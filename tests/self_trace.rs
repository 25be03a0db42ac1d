//! tradewatch's own spans (`[service.telemetry] traces_endpoint`): collector A polls a
//! simulated bot whose drawdown passes the limit and sends its spans to collector B.
//! The risk action (pausing the bot) is a span at B, and the breach alert at A carries
//! that span's trace id; polls, pipeline batches and exporter requests are spans too.

mod common;

use common::{free_port, Collector};
use serde_json::Value;
use std::time::Duration;

fn hex_trace(v: &Value) -> Option<String> {
    v.as_str().filter(|s| s.len() == 32).map(str::to_lowercase)
}

#[test]
fn a_risk_action_is_a_span_whose_trace_id_is_in_the_alert() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_, sim) = rt
        .block_on(tradewatch::demo::sim::spawn(
            tradewatch::demo::sim::SimConfig {
                step: Duration::from_millis(200),
                drawdown_ramp: Duration::from_secs(4),
                ..Default::default()
            },
        ))
        .expect("the simulated bot starts");

    // B: takes OTLP, writes every span to a file.
    let (_b, b_grpc, spans_file) = common::otlp_file_sink(&["traces"]);

    // A: the agent shape, its own spans to B.
    let a_service = free_port();
    let a = Collector::start(
        &format!(
            r#"
[receivers."freqtrade/main"]
url = "{url}"
username = "freqtrader"
password = "demo"
interval = "500ms"
bot = "sim"

[receivers.alerts]

[processors.risk]
max_drawdown_pct = 20
action_on_breach = "pause"
control = "freqtrade/main"

[exporters.nop]

[exporters.file]
path = "out/alerts.jsonl"

[service]
http = "127.0.0.1:{a_service}"

[service.telemetry]
traces_endpoint = "http://127.0.0.1:{b_grpc}"

[service.pipelines.metrics]
receivers = ["freqtrade/main"]
processors = ["risk"]
exporters = ["nop"]

[service.pipelines."logs/alerts"]
receivers = ["alerts"]
exporters = ["file"]
"#,
            url = sim.url(0),
        ),
        a_service,
    );

    // The breach alert at A, with a trace id.
    let alerts = a.path("out/alerts.jsonl");
    let mut alert = None;
    common::eventually(
        Duration::from_secs(60),
        "the alert of the breach that paused the bot, in A's file",
        || {
            let lines = common::read_jsonl(&alerts);
            alert = common::logs_in(&lines).into_iter().find_map(|(_, r)| {
                let a = common::attrs(&r["attributes"]);
                let firing = a.get("alert.state").and_then(|v| v.as_str()) == Some("firing");
                // The breach that started the run (later ones say "breach run in progress").
                let started = a.get("action").and_then(|v| v.as_str()) == Some("pause");
                (firing && started).then_some(r)
            });
            alert.is_some()
        },
    );
    let alert = alert.unwrap();
    let attrs = common::attrs(&alert["attributes"]);
    let trace_id = hex_trace(&alert["traceId"])
        .unwrap_or_else(|| panic!("the alert record has a trace id: {alert}"));
    assert_eq!(
        attrs.get("trace_id").and_then(|v| v.as_str()),
        Some(trace_id.as_str()),
        "the attribute alert channels read names the same trace"
    );

    // At B: the risk action's span in that trace, done (the bot was paused), and spans of
    // the other kinds.
    let mut action = None;
    let mut names = std::collections::BTreeSet::new();
    common::eventually(
        Duration::from_secs(30),
        "A's risk.action span (outcome done) and its poll, batch and export spans at B",
        || {
            let lines = common::read_jsonl(&spans_file);
            names.clear();
            for (resource, span) in common::spans_in(&lines) {
                let service = common::attrs(&resource["attributes"])
                    .get("service.name")
                    .and_then(|v| v.as_str().map(str::to_owned));
                if service.as_deref() != Some("tradewatch") {
                    continue;
                }
                let name = span["name"].as_str().unwrap_or_default().to_owned();
                if name == "risk.action"
                    && hex_trace(&span["traceId"]).as_deref() == Some(trace_id.as_str())
                    && common::attrs(&span["attributes"])
                        .get("outcome")
                        .and_then(|v| v.as_str())
                        == Some("done")
                {
                    action = Some(span.clone());
                }
                names.insert(name);
            }
            action.is_some()
                && [
                    "freqtrade.poll",
                    "pipeline.batch",
                    "exporter.send",
                    "freqtrade.control",
                ]
                .iter()
                .all(|n| names.contains(*n))
        },
    );
    let action = action.unwrap();
    let span_attrs = common::attrs(&action["attributes"]);
    assert_eq!(span_attrs.get("bot").and_then(|v| v.as_str()), Some("sim"));
    assert_eq!(
        span_attrs.get("action").and_then(|v| v.as_str()),
        Some("pause")
    );
    // The bot really was paused: the span's outcome is what the bot answered.
    common::eventually(Duration::from_secs(10), "the simulated bot paused", || {
        sim.bot_state(0) == Some("paused")
    });
    assert!(
        a.metric("tradewatch_self_spans_total{result=\"exported\"}") > 0.0,
        "exported spans are counted"
    );
}

#[test]
fn a_bad_telemetry_section_is_refused_naming_its_key() {
    let root = common::repo_root();
    let dir = std::env::temp_dir().join(format!("tw-self-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (value, key) in [
        ("traces_endpoint = \"127.0.0.1:4317\"", "traces_endpoint"),
        ("traces_sample_ratio = 1.5", "traces_sample_ratio"),
        ("colour = \"blue\"", "colour"),
    ] {
        let file = dir.join("bad.toml");
        std::fs::write(
            &file,
            format!(
                "[receivers.otlp]\n[exporters.nop]\n[service.telemetry]\n{value}\n\
                 [service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"nop\"]\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradewatch"))
            .args(["validate", "--config"])
            .arg(&file)
            .current_dir(&root)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{value} is refused");
        assert!(
            err.contains(&format!("service.telemetry.{key}")),
            "the error names the key: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
