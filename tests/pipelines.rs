//! `pipelines/agent.toml` runs against a (simulated) Freqtrade bot, its ratios converted
//! to percent exactly once, the bot's log file tailed (`tests/default_config.rs` checks that every shipped file validates).

mod common;

use common::{free_port, Collector};
use std::time::Duration;

#[test]
fn the_agent_pipeline_polls_a_bot_and_converts_ratios_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_, sim) = rt
        .block_on(tradewatch::demo::sim::spawn(
            tradewatch::demo::sim::SimConfig::default(),
        ))
        .expect("the simulated bot starts");
    let text = std::fs::read_to_string(common::repo_root().join("pipelines/agent.toml")).unwrap();
    // The bot's log file: there (empty) before the agent starts, written to after.
    let logs = tempfile::tempdir().unwrap();
    let log_file = logs.path().join("freqtrade.log");
    std::fs::write(&log_file, "").unwrap();
    let (grpc, http, service, upstream, prom) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let env = [
        ("FT_URL", sim.url(0)),
        ("FT_USER", "freqtrader".to_owned()),
        ("FT_PASS", "demo".to_owned()),
        ("FT_INTERVAL", "1s".to_owned()),
        ("TRADEWATCH_OTLP_GRPC", format!("127.0.0.1:{grpc}")),
        ("TRADEWATCH_OTLP_HTTP", format!("127.0.0.1:{http}")),
        ("TRADEWATCH_SERVICE_HTTP", format!("127.0.0.1:{service}")),
        ("TRADEWATCH_PROMETHEUS", format!("127.0.0.1:{prom}")),
        ("FT_LOG", log_file.display().to_string()),
        // Nobody listens upstream: the local copy must not depend on it.
        ("UPSTREAM_OTLP", format!("http://127.0.0.1:{upstream}")),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let c = Collector::start_with_env(&text, service, &env);
    let out = c.path("out/agent.jsonl");
    let mut seen = String::new();
    common::eventually(
        Duration::from_secs(30),
        "freqtrade metrics in percent in the agent's file",
        || {
            seen = std::fs::read_to_string(&out).unwrap_or_default();
            seen.contains("\"freqtrade.drawdown.current.pct\"")
                && seen.contains("\"freqtrade.profit.all.pct\"")
        },
    );
    assert!(
        !seen.contains("\"freqtrade.profit.all.ratio\""),
        "every ratio is converted"
    );
    assert!(seen.contains("\"unit\":\"%\""), "percent units");
    assert!(
        seen.contains("\"deployment.environment\""),
        "the resource processor stamped it"
    );
    // The bot's metrics, in percent, on the agent's Prometheus endpoint; the risk state too.
    let prom_addr = std::net::SocketAddr::from(([127, 0, 0, 1], prom));
    common::eventually(
        Duration::from_secs(30),
        "freqtrade and risk metrics on /metrics",
        || {
            common::http_get(prom_addr, "/metrics").is_ok_and(|(code, body)| {
                code == 200
                    && body.contains("freqtrade_drawdown_current_pct{")
                    && body.contains("tradewatch_risk_limit{")
            })
        },
    );
    // The bot's JSON log lines reach the same file as records, trace id lifted.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log_file)
            .unwrap();
        writeln!(
            f,
            r#"{{"timestamp": "2026-11-30T12:00:00Z", "level": "INFO", "message": "Bot heartbeat", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}}"#
        )
        .unwrap();
    }
    let mut heartbeat = serde_json::Value::Null;
    common::eventually(
        Duration::from_secs(30),
        "the bot's log line in the agent's file",
        || {
            let records = common::logs_in(&common::read_jsonl(&out));
            if let Some((_, r)) = records
                .into_iter()
                .find(|(_, r)| r.to_string().contains("Bot heartbeat"))
            {
                heartbeat = r;
            }
            !heartbeat.is_null()
        },
    );
    assert_eq!(
        heartbeat["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "trace_enrich lifted the trace id: {heartbeat}"
    );
    assert!(!c.logs().contains("\"demo\""), "no password in the logs");
    rt.block_on(sim.shutdown());
}

/// `pipelines/cloudwatch.toml` publishes seed 000's namespaces and seed 003's risk metrics
/// as valid EMF (here to a file), from a (simulated) bot and a health check of it.
#[test]
fn the_cloudwatch_pipeline_publishes_the_seed_namespaces_as_emf() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_, sim) = rt
        .block_on(tradewatch::demo::sim::spawn(
            tradewatch::demo::sim::SimConfig::default(),
        ))
        .expect("the simulated bot starts");
    let text =
        std::fs::read_to_string(common::repo_root().join("pipelines/cloudwatch.toml")).unwrap();
    let service = free_port();
    let env = [
        ("FT_URL", sim.url(0)),
        ("FT_USER", "freqtrader".to_owned()),
        ("FT_PASS", "demo".to_owned()),
        ("FT_INTERVAL", "1s".to_owned()),
        ("HEALTH_INTERVAL", "1s".to_owned()),
        ("TRADEWATCH_EMF_DESTINATION", "file".to_owned()),
        ("TRADEWATCH_SERVICE_HTTP", format!("127.0.0.1:{service}")),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let c = Collector::start_with_env(&text, service, &env);
    let out = c.path("out/emf.jsonl");
    let mut metrics: std::collections::BTreeMap<(String, String), serde_json::Value> =
        Default::default();
    common::eventually(
        Duration::from_secs(30),
        "every seed metric in the EMF file",
        || {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            // Complete lines only: a poll can catch the exporter in the middle of a write.
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            for line in complete.lines() {
                let e = common::emf::check_event(line, 262_144)
                    .unwrap_or_else(|err| panic!("invalid EMF ({err}): {line}"));
                let d = &e["_aws"]["CloudWatchMetrics"][0];
                for m in d["Metrics"].as_array().unwrap() {
                    let name = m["Name"].as_str().unwrap().to_string();
                    let ns = d["Namespace"].as_str().unwrap().to_string();
                    metrics.insert((ns, name.clone()), e.clone());
                }
            }
            [
                ("tradai/ServiceHealth", "ServiceHealthy"),
                ("tradai/ServiceHealth", "HealthCheckLatency"),
                ("tradai/ServiceHealth", "ConsecutiveFailures"),
                ("tradai/TradingHealth", "ActiveStrategies"),
                ("tradai/TradingHealth", "HealthyHeartbeats"),
                ("tradai/TradingHealth", "StaleHeartbeats"),
                ("tradai/Risk", "Drawdown"),
                ("tradai/Risk", "KillSwitchTriggers"),
            ]
            .iter()
            .all(|(ns, n)| metrics.contains_key(&(ns.to_string(), n.to_string())))
        },
    );
    let get = |ns: &str, n: &str| metrics[&(ns.to_string(), n.to_string())].clone();
    let healthy = get("tradai/TradingHealth", "HealthyHeartbeats");
    assert_eq!(healthy["HealthyHeartbeats"], 1);
    let stale = get("tradai/TradingHealth", "StaleHeartbeats");
    assert_eq!(stale["StaleHeartbeats"], 0);
    let up = get("tradai/ServiceHealth", "ServiceHealthy");
    assert_eq!(up["ServiceHealthy"], 1);
    assert_eq!(up["check"], "freqtrade");
    let latency = get("tradai/ServiceHealth", "HealthCheckLatency");
    let def = latency["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Name"] == "HealthCheckLatency")
        .cloned()
        .unwrap();
    assert_eq!(def["Unit"], "Milliseconds");
    assert!(latency["HealthCheckLatency"].as_f64().unwrap() > 0.0);
    // Nothing undeclared leaves.
    assert!(metrics.keys().all(|(ns, _)| ns.starts_with("tradai/")));
    assert!(!c.logs().contains("\"demo\""), "no password in the logs");
    rt.block_on(sim.shutdown());
}

/// `pipelines/gateway.toml`: OTLP in; traces to the Jaeger endpoint and logs to the log
/// store (here a second tradewatch writing a file), metrics on its Prometheus endpoint and
/// as valid EMF (to a file, its default).
#[test]
fn the_gateway_pipeline_routes_traces_metrics_and_logs() {
    let (_upstream, up_grpc, up_out) = common::otlp_file_sink(&["traces", "logs"]);
    let text = std::fs::read_to_string(common::repo_root().join("pipelines/gateway.toml")).unwrap();
    let (grpc, http, service, prom) = (free_port(), free_port(), free_port(), free_port());
    let env = [
        ("TRADEWATCH_OTLP_GRPC", format!("127.0.0.1:{grpc}")),
        ("TRADEWATCH_OTLP_HTTP", format!("127.0.0.1:{http}")),
        ("TRADEWATCH_SERVICE_HTTP", format!("127.0.0.1:{service}")),
        ("TRADEWATCH_PROMETHEUS", format!("127.0.0.1:{prom}")),
        ("JAEGER_OTLP", format!("http://127.0.0.1:{up_grpc}")),
        ("LOGS_OTLP", format!("http://127.0.0.1:{up_grpc}")),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gw = Collector::start_with_env(&text, service, &env);
    let resource = r#"{"attributes":[{"key":"service.name","value":{"stringValue":"strategy"}}]}"#;
    let span = format!(
        r#"{{"resourceSpans":[{{"resource":{resource},"scopeSpans":[{{"spans":[{{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"decide","kind":1,"startTimeUnixNano":"1","endTimeUnixNano":"2"}}]}}]}}]}}"#
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let metric = format!(
        r#"{{"resourceMetrics":[{{"resource":{resource},"scopeMetrics":[{{"metrics":[{{"name":"strategy.equity","unit":"{{USDT}}","gauge":{{"dataPoints":[{{"timeUnixNano":"{now}","asDouble":1234.5,"attributes":[{{"key":"bot","value":{{"stringValue":"main"}}}}]}}]}}}}]}}]}}]}}"#
    );
    let log = format!(
        r#"{{"resourceLogs":[{{"resource":{resource},"scopeLogs":[{{"logRecords":[{{"timeUnixNano":"{now}","body":{{"stringValue":"order filled"}}}}]}}]}}]}}"#
    );
    for (signal, body) in [("traces", span), ("metrics", metric), ("logs", log)] {
        assert_eq!(
            common::post_otlp(http, signal, "application/json", body),
            200,
            "{signal}"
        );
    }
    common::eventually(
        Duration::from_secs(30),
        "the span and the log record at the upstream",
        || {
            let lines = common::read_jsonl(&up_out);
            common::spans_in(&lines).len() == 1 && common::logs_in(&lines).len() == 1
        },
    );
    let prom_addr = std::net::SocketAddr::from(([127, 0, 0, 1], prom));
    common::eventually(Duration::from_secs(30), "the gauge on /metrics", || {
        common::http_get(prom_addr, "/metrics").is_ok_and(|(code, body)| {
            code == 200
                && body.lines().any(|l| {
                    l.starts_with("strategy_equity{")
                        && l.contains("bot=\"main\"")
                        && l.contains("deployment_environment=\"production\"")
                        && l.ends_with(" 1234.5")
                })
        })
    });
    let emf = gw.path("out/emf.jsonl");
    let mut event = serde_json::Value::Null;
    common::eventually(Duration::from_secs(30), "the gauge as EMF", || {
        let text = std::fs::read_to_string(&emf).unwrap_or_default();
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        if let Some(line) = complete.lines().find(|l| l.contains("strategy.equity")) {
            event = common::emf::check_event(line, 262_144)
                .unwrap_or_else(|err| panic!("invalid EMF ({err}): {line}"));
        }
        !event.is_null()
    });
    assert_eq!(event["strategy.equity"], 1234.5, "{event}");
    assert_eq!(event["service.name"], "strategy", "{event}");
}
