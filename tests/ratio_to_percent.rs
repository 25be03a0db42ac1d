//! End to end: the `ratio_to_percent` processor in the real binary. Collector A takes
//! Freqtrade-style ratio metrics over OTLP/HTTP, converts them and writes them to a file
//! and forwards them over OTLP/gRPC to collector B, which applies a second
//! `ratio_to_percent` whose globs match the converted names too. Both files hold each
//! value multiplied by 100 exactly once: the metadata marker travels through OTLP.
//! `validate` points at a bad glob with file:line.

mod common;

use common::{free_port, Collector};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point, Metric};
use prost::Message;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tradewatch::otlp::{attr, get_str, MetricsBuilder, Temporality};

const GIVE_UP: Duration = Duration::from_secs(30);
const T: u64 = 1_700_000_000_000_000_000;

fn collector_a(http: u16, service: u16, b_grpc: u16) -> String {
    format!(
        r#"
[receivers.otlp]
http = "127.0.0.1:{http}"

[processors.ratio_to_percent]
metrics = ["freqtrade.*.ratio", "freqtrade.winrate"]
attributes = ["profit_ratio"]

[exporters.file]
path = "out.jsonl"

[exporters.otlp]
endpoint = "http://127.0.0.1:{b_grpc}"
timeout = "2s"

[service]
http = "127.0.0.1:{service}"

[service.pipelines.metrics]
receivers = ["otlp"]
processors = ["ratio_to_percent"]
exporters = ["file", "otlp"]
"#
    )
}

/// Its globs match the names A produced as well as the original ones.
fn collector_b(grpc: u16, service: u16) -> String {
    format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"

[processors."ratio_to_percent/again"]
metrics = ["freqtrade.*.ratio", "freqtrade.*.pct", "freqtrade.winrate"]
attributes = ["profit_ratio", "profit_pct"]
rename = false

[exporters.file]
path = "out.jsonl"

[service]
http = "127.0.0.1:{service}"

[service.pipelines.metrics]
receivers = ["otlp"]
processors = ["ratio_to_percent/again"]
exporters = ["file"]
"#
    )
}

fn sent() -> ExportMetricsServiceRequest {
    MetricsBuilder::new()
        .resource(&[("service.name", "freqtrade")])
        .scope("tradewatch.test", "1")
        .gauge("freqtrade.drawdown.current.ratio", "1", "current drawdown")
        .point(0.0525, [attr("bot", "main")], T)
        .gauge("freqtrade.winrate", "1", "")
        .point(0.6, [attr("bot", "main")], T)
        .sum(
            "freqtrade.trades.closed",
            "{trade}",
            "",
            Temporality::Cumulative,
            true,
        )
        .point(7, [attr("bot", "main"), attr("profit_ratio", 0.03)], T)
        .gauge("freqtrade.balance.total", "USDT", "")
        .point(1000.5, [attr("bot", "main")], T)
        .build()
}

/// (name, unit, value, marker, the point's profit attribute) of every metric in a
/// file exporter's output.
type Seen = (String, String, f64, Option<String>, Option<f64>);

fn seen(path: &Path) -> Vec<Seen> {
    let mut out = Vec::new();
    for line in common::read_jsonl(path) {
        let req: ExportMetricsServiceRequest =
            serde_json::from_value(line.clone()).unwrap_or_else(|e| panic!("{e}: {line}"));
        for rm in req.resource_metrics {
            for sm in rm.scope_metrics {
                out.extend(sm.metrics.iter().map(summarise));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn summarise(m: &Metric) -> Seen {
    let p = match &m.data {
        Some(Data::Gauge(g)) => &g.data_points[0],
        Some(Data::Sum(s)) => &s.data_points[0],
        other => panic!("unexpected {other:?}"),
    };
    let value = match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => f64::NAN,
    };
    (
        m.name.clone(),
        m.unit.clone(),
        value,
        get_str(&m.metadata, "tradewatch.converted").map(str::to_owned),
        tradewatch::otlp::get_f64(&p.attributes, "profit_pct"),
    )
}

#[test]
fn ratios_become_percent_once_even_through_a_second_collector() {
    let (a_http, a_service) = (free_port(), free_port());
    let (b_grpc, b_service) = (free_port(), free_port());
    let mut b = Collector::start(&collector_b(b_grpc, b_service), b_service);
    let mut a = Collector::start(&collector_a(a_http, a_service, b_grpc), a_service);

    let url = format!("http://127.0.0.1:{a_http}/v1/metrics");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt
        .block_on(
            reqwest::Client::new()
                .post(&url)
                .header("content-type", "application/x-protobuf")
                .body(sent().encode_to_vec())
                .send(),
        )
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .status();
    assert_eq!(status, 200);

    let marker = Some("ratio_to_percent".to_owned());
    let want: Vec<Seen> = vec![
        (
            "freqtrade.balance.total".into(),
            "USDT".into(),
            1000.5,
            None,
            None,
        ),
        (
            "freqtrade.drawdown.current.pct".into(),
            "%".into(),
            0.0525 * 100.0,
            marker.clone(),
            None,
        ),
        (
            "freqtrade.trades.closed".into(),
            "{trade}".into(),
            7.0,
            None,
            Some(3.0),
        ),
        ("freqtrade.winrate".into(), "%".into(), 60.0, marker, None),
    ];
    let (a_out, b_out) = (a.path("out.jsonl"), b.path("out.jsonl"));
    common::eventually(GIVE_UP, "A wrote the request", || {
        !common::read_jsonl(&a_out).is_empty()
    });
    common::eventually(GIVE_UP, "B wrote the forwarded request", || {
        !common::read_jsonl(&b_out).is_empty()
    });
    assert_eq!(seen(&a_out), want, "collector A");
    assert_eq!(
        seen(&b_out),
        want,
        "collector B, after a second ratio_to_percent"
    );

    assert_eq!(
        a.metric(r#"tradewatch_processor_converted_points_total{processor="ratio_to_percent"}"#),
        2.0
    );
    assert_eq!(
        b.metric(
            r#"tradewatch_processor_converted_points_total{processor="ratio_to_percent/again"}"#
        ),
        0.0
    );
    for c in [&mut a, &mut b] {
        let status = c.terminate(GIVE_UP);
        assert!(status.success(), "{status}\n{}", c.logs());
    }
}

#[test]
fn validate_points_at_a_bad_glob() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let cfg = collector_a(free_port(), free_port(), free_port())
        .replace(r#""freqtrade.winrate"]"#, r#""freqtrade.[winrate"]"#);
    let line = cfg
        .lines()
        .position(|l| l.contains("[winrate"))
        .expect("the bad line")
        + 1;
    std::fs::write(&path, &cfg).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tradewatch"))
        .arg("validate")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let want = format!(
        "{}:{line}:33: processors.ratio_to_percent.metrics[1]: bad glob \"freqtrade.[winrate\"",
        path.display()
    );
    assert!(stderr.contains(&want), "want {want}\ngot {stderr}");
}

#[test]
fn validate_refuses_it_in_a_traces_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.toml");
    let cfg = collector_a(free_port(), free_port(), free_port())
        .replace("pipelines.metrics", "pipelines.traces");
    std::fs::write(&path, &cfg).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tradewatch"))
        .arg("validate")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("processor \"ratio_to_percent\" cannot take traces (it handles: metrics)"),
        "{stderr}"
    );
}
