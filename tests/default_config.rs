//! Acceptance: the shipped `config.toml` starts with nothing else running and answers
//! `/health`; `validate` accepts every shipped configuration.

mod common;

use common::{eventually, http_get, read_jsonl, spans_in, Collector};
use std::time::Duration;

#[test]
fn shipped_config_starts_serves_and_exits_cleanly() {
    let (grpc, http, service, prom) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    // The shipped file, unchanged; only its ${VAR:-default} ports are moved so parallel
    // tests cannot collide with it.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::copy(common::repo_root().join("config.toml"), &cfg).unwrap();
    let env = [
        ("TRADEWATCH_OTLP_GRPC", format!("127.0.0.1:{grpc}")),
        ("TRADEWATCH_OTLP_HTTP", format!("127.0.0.1:{http}")),
        ("TRADEWATCH_SERVICE_HTTP", format!("127.0.0.1:{service}")),
        ("TRADEWATCH_PROMETHEUS", format!("127.0.0.1:{prom}")),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut c = Collector::spawn(dir, cfg, service, &env);
    c.wait_healthy();

    let (code, body) = http_get(c.service, "/health").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("alive"), "{body}");
    // The container HEALTHCHECK's probe agrees.
    let health_url = format!("http://{}/health", c.service);
    let probe = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tradewatch"))
            .args(["healthcheck", "--timeout", "2s", "--url", &health_url])
            .output()
            .unwrap()
    };
    let ok = probe();
    assert!(ok.status.success(), "{ok:?}");
    let status = c.status();
    assert_eq!(status["status"], "HEALTHY", "{status}");
    let ids: Vec<&str> = status["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    for id in [
        "otlp",
        "batch",
        "debug",
        "file",
        "freqtrade/demo",
        "risk",
        "prometheus",
    ] {
        assert!(ids.contains(&id), "/status lists {id}: {ids:?}");
    }
    assert!(c.metrics().contains(
        "tradewatch_receiver_accepted_items_total{receiver=\"otlp\",signal=\"traces\"} 0"
    ));

    // Data sent to the default OTLP/HTTP port lands in out/telemetry.jsonl.
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"smoke"}}]},"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"smoke","kind":1,"startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;
    let code = common::post_otlp(http, "traces", "application/json", body);
    assert_eq!(code, 200);
    let out = c.path("out/telemetry.jsonl");
    eventually(
        Duration::from_secs(10),
        "the span in out/telemetry.jsonl",
        || spans_in(&read_jsonl(&out)).len() == 1,
    );
    let spans = spans_in(&read_jsonl(&out));
    assert_eq!(spans[0].1["traceId"], "0102030405060708090a0b0c0d0e0f10");

    // The trading pipeline against the built-in simulated bot (the README's first command):
    // its metrics in percent on the Prometheus endpoint, the live page, and an alert once
    // the simulated drawdown run passes a limit (about 45 s in).
    let prom_addr = std::net::SocketAddr::from(([127, 0, 0, 1], prom));
    eventually(
        Duration::from_secs(30),
        "the simulated bot's metrics on the Prometheus endpoint",
        || {
            http_get(prom_addr, "/metrics").is_ok_and(|(code, body)| {
                code == 200
                    && body.contains("freqtrade_drawdown_current_pct")
                    && body.contains("bot=\"demo\"")
            })
        },
    );
    let (code, page) = http_get(c.service, "/ui").unwrap();
    assert_eq!(code, 200, "{page}");
    eventually(
        Duration::from_secs(120),
        "a firing alert that paused the simulated bot, in out/telemetry.jsonl",
        || {
            common::logs_in(&read_jsonl(&out)).iter().any(|(_, r)| {
                let a = common::attrs(&r["attributes"]);
                a.get("alert.state").and_then(|v| v.as_str()) == Some("firing")
                    && a.get("action").and_then(|v| v.as_str()) == Some("pause")
            })
        },
    );

    let status = c.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}:\n{}", c.logs());
    let down = probe();
    assert!(!down.status.success(), "nothing listens now: {down:?}");
    assert!(
        String::from_utf8_lossy(&down.stderr).starts_with("unhealthy:"),
        "{down:?}"
    );
}

#[test]
fn every_shipped_config_validates() {
    let mut files = vec![common::repo_root().join("config.toml")];
    if let Ok(dir) = std::fs::read_dir(common::repo_root().join("pipelines")) {
        files.extend(
            dir.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml")),
        );
    }
    for f in files {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradewatch"))
            .args(["validate", "--config"])
            .arg(&f)
            .env("JAEGER_API_KEY", "unused")
            // The agent's bot credentials: secrets come only from the environment.
            .env("FT_USER", "freqtrader")
            .env("FT_PASS", "unused")
            // The alert channels' secrets (pipelines/risk-alerts.toml).
            .env(
                "SLACK_WEBHOOK_URL",
                "https://hooks.slack.com/services/T0/B0/x",
            )
            .env("TELEGRAM_BOT_TOKEN", "123:abc")
            .env("TELEGRAM_CHAT_ID", "-100123")
            .env(
                "ALERT_TOPIC_ARN",
                "arn:aws:sns:us-east-1:123456789012:tradewatch-alerts",
            )
            // pipelines/ais.toml's Slack channel.
            .env(
                "AIS_SLACK_WEBHOOK_URL",
                "https://hooks.slack.com/services/T0/B0/y",
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not validate:\n{}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn version_help_and_json_logs() {
    let bin = env!("CARGO_BIN_EXE_tradewatch");
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("tradewatch {}", env!("CARGO_PKG_VERSION"))
    );
    for (args, says) in [
        (&["--help"][..], "validate"),
        (&["run", "--help"], "--config"),
        (&["validate", "--help"], "--config"),
    ] {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(says), "{args:?} mentions {says}: {text}");
    }

    // A config with an unused exporter makes `validate` log one warning: as JSON when asked.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[receivers.otlp]\n[exporters.nop]\n[exporters.debug]\n[service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"nop\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .args(["--log-format", "json", "validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().next().expect("one log line");
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["level"], "WARN");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("exporters.debug is declared but no pipeline uses it"),
        "{v}"
    );
}

#[test]
fn self_telemetry_passes_promtool_and_speaks_openmetrics_when_asked() {
    let (grpc, service) = (common::free_port(), common::free_port());
    let cfg = format!(
        "[receivers.otlp]\ngrpc = \"127.0.0.1:{grpc}\"\nhttp = \"off\"\n[processors.batch]\n[exporters.nop]\n[service]\nhttp = \"127.0.0.1:{service}\"\n[service.pipelines.traces]\nreceivers = [\"otlp\"]\nprocessors = [\"batch\"]\nexporters = [\"nop\"]\n"
    );
    let c = Collector::start(&cfg, service);
    let get = |accept: &str| common::get_accepting(c.service, "/metrics", accept);
    let (ct, text) = get("text/plain");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(!text.contains("# EOF"));
    assert!(
        text.contains("# TYPE tradewatch_receiver_accepted_items_total counter"),
        "{text}"
    );
    let (ct, om) = get("application/openmetrics-text; version=1.0.0,text/plain;q=0.5");
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(om.trim_end().ends_with("# EOF"));
    assert!(
        om.contains("# TYPE tradewatch_receiver_accepted_items counter"),
        "{om}"
    );
    // promtool lints the Prometheus text format (what it gets without asking for OpenMetrics).
    {
        let (what, body) = ("text", &text);
        let mut child = std::process::Command::new(common::promtool())
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics ({what}) failed:\n{}{}\n{body}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
