//! The `prometheus` exporter against real peers: the Python OpenTelemetry SDK's metrics
//! (counter, up-down counter, histogram, gauge, with units) and a (simulated) Freqtrade
//! bot's metrics through the risk processor reach `/metrics`; `promtool check metrics`
//! finds nothing to report; a real Prometheus 2.42 (Debian's package) scrapes the
//! endpoint and answers `/api/v1/query` with the values the SDK sent. Series expire after
//! `metric_expiration` without anyone scraping.

mod common;

use common::prometheus::Prometheus;
use common::{eventually, free_port, python, Collector};
use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

fn scrape(addr: SocketAddr, accept: &str) -> (String, String) {
    common::get_accepting(addr, "/metrics", accept)
}

fn run_sdk(endpoint: &str, dir: &std::path::Path) -> Value {
    let out = dir.join("manifest.json");
    let r = Command::new(python())
        .arg(common::repo_root().join("tests/peers/otel_client.py"))
        .args(["--protocol", "http", "--endpoint", endpoint, "--metrics"])
        .args(["--spans", "2", "--logs", "2", "--service-name", "prom-peer"])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run the Python OpenTelemetry client");
    assert!(
        r.status.success(),
        "the SDK client failed:\n{}\n{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

/// The SDK's value for metric `name` (summed over its points; histograms: the count).
fn sent(manifest: &Value, name: &str) -> f64 {
    let m = manifest["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("the SDK sent no {name}"));
    m["datapoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p.get("count")
                .and_then(Value::as_f64)
                .or_else(|| p["value"].as_f64())
                .unwrap_or(0.0)
        })
        .sum()
}

#[test]
fn sdk_and_freqtrade_metrics_pass_promtool_and_a_real_prometheus_scrapes_them() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_, sim) = rt
        .block_on(tradewatch::demo::sim::spawn(
            tradewatch::demo::sim::SimConfig::default(),
        ))
        .expect("the simulated bot starts");
    let (http, service, prom) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"

[receivers."freqtrade/main"]
bot = "main"
url = "{bot}"
username = "freqtrader"
password = "demo"
interval = "1s"

[processors.risk]
action_on_breach = "alert_only"
[processors.ratio_to_percent]
metrics = ["freqtrade.*.ratio"]

[exporters.prometheus]
endpoint = "127.0.0.1:{prom}"
const_labels = {{ deployment = "e2e" }}
[exporters.nop]

[service]
http = "127.0.0.1:{service}"

[service.pipelines.metrics]
receivers = ["otlp"]
exporters = ["prometheus"]
[service.pipelines."metrics/bots"]
receivers = ["freqtrade/main"]
processors = ["risk", "ratio_to_percent"]
exporters = ["prometheus"]
[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["nop"]
[service.pipelines.logs]
receivers = ["otlp"]
exporters = ["nop"]
"#,
        bot = sim.url(0)
    );
    let c = Collector::start(&config, service);
    let dir = tempfile::tempdir().unwrap();
    let manifest = run_sdk(&format!("http://127.0.0.1:{http}"), dir.path());
    let target = SocketAddr::from(([127, 0, 0, 1], prom));
    let wanted = [
        "tradewatch_test_orders_total{",
        "tradewatch_test_order_latency_seconds_bucket{",
        "freqtrade_drawdown_current_pct{",
        "freqtrade_profit_all{",
        "tradewatch_risk_limit{",
        "target_info{",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = scrape(target, "text/plain").1;
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|m| !text.contains(**m))
            .copied()
            .collect();
        if missing.is_empty() {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "missing on /metrics after 30 s: {missing:?}\n{text}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // promtool's lint: nothing to report.
    let mut lint = Command::new(common::promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}\n{text}"
    );
    assert!(text.contains(r#"deployment="e2e""#), "const labels");
    assert!(text.contains(r#"job="prom-peer""#), "job from service.name");

    // OpenMetrics by content negotiation.
    let (ct, om) = scrape(target, "application/openmetrics-text; version=1.0.0");
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(om.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");

    // A real Prometheus scrapes it and answers with what the SDK sent.
    let p = Prometheus::start(target);
    for (query, metric) in [
        ("tradewatch_test_orders_total", "tradewatch.test.orders"),
        (
            "tradewatch_test_open_positions",
            "tradewatch.test.open_positions",
        ),
        (
            "tradewatch_test_order_latency_seconds_count",
            "tradewatch.test.order_latency",
        ),
    ] {
        let want = sent(&manifest, metric);
        let q = format!("sum({query}{{job=\"prom-peer\"}})");
        let mut got = Vec::new();
        eventually(
            Duration::from_secs(60),
            &format!("Prometheus answers {q}"),
            || {
                got = p.query(&q);
                !got.is_empty()
            },
        );
        assert_eq!(got[0].1, want, "{q}: {got:?}\n{}", p.log());
    }
    let dd = p.query(r#"freqtrade_drawdown_current_pct{bot="main"}"#);
    assert_eq!(dd.len(), 1, "{dd:?}");
    assert!((0.0..=100.0).contains(&dd[0].1), "{dd:?}");
    drop(c);
    rt.block_on(sim.shutdown());
}

#[test]
fn series_expire_without_any_scrape() {
    let (http, service, prom) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"
[exporters.prometheus]
endpoint = "127.0.0.1:{prom}"
metric_expiration = "1s"
[service]
http = "127.0.0.1:{service}"
[service.pipelines.metrics]
receivers = ["otlp"]
exporters = ["prometheus"]
"#
    );
    let c = Collector::start(&config, service);
    let body = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"exp"}}]},"scopeMetrics":[{"metrics":[{"name":"short.lived","gauge":{"dataPoints":[{"asDouble":1.5,"timeUnixNano":"1"}]}}]}]}]}"#;
    let status = common::post_otlp(http, "metrics", "application/json", body);
    assert_eq!(status, 200);
    // Watched through tradewatch's own telemetry: the exporter is never scraped.
    let series = |c: &Collector| -> f64 {
        c.metrics()
            .lines()
            .find(|l| l.starts_with("tradewatch_exporter_series{") && l.contains("prometheus"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    eventually(Duration::from_secs(10), "the series held", || {
        series(&c) >= 1.0
    });
    eventually(Duration::from_secs(10), "the series expired", || {
        series(&c) == 0.0
    });
    let expired = c
        .metrics()
        .lines()
        .find(|l| l.starts_with("tradewatch_exporter_expired_series_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        expired >= 2.0,
        "the gauge and target_info expired: {expired}"
    );
    let text = scrape(SocketAddr::from(([127, 0, 0, 1], prom)), "text/plain").1;
    assert!(!text.contains("short_lived"), "{text}");
}
