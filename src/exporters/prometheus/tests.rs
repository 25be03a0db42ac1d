//! The conversion rules, one table row each, rendered and read back line by line.

use super::store::{Shape, Store};
use crate::otlp::{attr, MetricsBuilder, Temporality, Timestamp};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{exemplar, metric::Data, Exemplar};
use std::time::Duration;

fn shape() -> Shape {
    Shape {
        max_series_per_metric: 100,
        ..Default::default()
    }
}

fn base() -> MetricsBuilder {
    let mut b = MetricsBuilder::new();
    b.resource([
        attr("service.name", "bot"),
        attr("service.namespace", "trading"),
        attr("service.instance.id", "i-1"),
        attr("deployment.environment", "prod"),
    ])
    .scope("lib", "1.2");
    b
}

fn render(reqs: &[ExportMetricsServiceRequest], shape: &Shape) -> String {
    let s = Store::default();
    for r in reqs {
        s.ingest(r, shape);
    }
    s.render(false)
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

const L: &str = r#"instance="i-1",job="trading/bot""#;
const S: &str = r#"otel_scope_name="lib",otel_scope_version="1.2""#;

#[test]
fn conversion_table() {
    let t = Timestamp(1_000);
    let mut b = base();
    b.gauge("http.server.duration", "s", "Latency")
        .point(0.25, [attr("route", "/a")], t);
    b.gauge("memory.utilization", "1", "")
        .point(0.5, [attr("k", "v")], t);
    b.gauge("open_trades", "{trade}", "")
        .point(3, [attr("k", "v")], t);
    b.gauge("cpu", "%", "").point(12.5, [attr("k", "v")], t);
    b.sum("requests", "", "Requests", Temporality::Cumulative, true)
        .point(7, [attr("k", "v")], t);
    b.sum("queue.size", "By", "", Temporality::Cumulative, false)
        .point(4096, [attr("k", "v")], t);
    b.histogram("latency", "ms", "", Temporality::Cumulative)
        .histogram_point(&[10.0, 100.0], &[1, 2, 3], 1234.0, [attr("k", "v")], t);
    let text = render(&[b.build()], &shape());
    for (line, why) in [
        (
            format!("http_server_duration_seconds{{{L},{S},route=\"/a\"}} 0.25"),
            "unit suffix s → seconds",
        ),
        (
            format!("memory_utilization_ratio{{{L},k=\"v\",{S}}} 0.5"),
            "unit 1 on a gauge → ratio",
        ),
        (
            format!("open_trades{{{L},k=\"v\",{S}}} 3"),
            "annotation units are dropped",
        ),
        (
            format!("cpu_percent{{{L},k=\"v\",{S}}} 12.5"),
            "% → percent",
        ),
        (
            format!("requests_total{{{L},k=\"v\",{S}}} 7"),
            "monotonic sum → counter with _total",
        ),
        (
            format!("queue_size_bytes{{{L},k=\"v\",{S}}} 4096"),
            "non-monotonic sum → gauge",
        ),
        (
            format!("latency_seconds_bucket{{{L},k=\"v\",{S},le=\"0.01\"}} 1"),
            "histogram buckets are cumulative",
        ),
        (
            format!("latency_seconds_bucket{{{L},k=\"v\",{S},le=\"0.1\"}} 3"),
            "histogram buckets are cumulative",
        ),
        (
            format!("latency_seconds_bucket{{{L},k=\"v\",{S},le=\"+Inf\"}} 6"),
            "+Inf bucket",
        ),
        (
            format!("latency_seconds_sum{{{L},k=\"v\",{S}}} 1.234"),
            "histogram sum",
        ),
        (
            format!("latency_seconds_count{{{L},k=\"v\",{S}}} 6"),
            "histogram count",
        ),
        ("# TYPE requests_total counter".to_string(), "counter type"),
        (
            "# TYPE queue_size_bytes gauge".to_string(),
            "non-monotonic sum type",
        ),
        (
            "# TYPE latency_seconds histogram".to_string(),
            "histogram type",
        ),
        (
            "# HELP http_server_duration_seconds Latency".to_string(),
            "description is the help",
        ),
        (
            r#"target_info{deployment_environment="prod",instance="i-1",job="trading/bot"} 1"#
                .to_string(),
            "resource in target_info",
        ),
    ] {
        assert!(has(&text, &line), "{why}: no line\n{line}\nin\n{text}");
    }
}

#[test]
fn deltas_add_up_and_a_restart_resets() {
    let point = |start: u64, end: u64, v: i64| {
        let mut b = base();
        b.sum("orders", "", "", Temporality::Delta, true)
            .start_time(Timestamp(start))
            .point(v, [attr("k", "v")], Timestamp(end));
        b.build()
    };
    let s = Store::default();
    let value = |s: &Store| -> String {
        s.render(false)
            .lines()
            .find(|l| l.starts_with("orders_total{"))
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    s.ingest(&point(0, 10, 5), &shape());
    s.ingest(&point(10, 20, 3), &shape());
    assert_eq!(value(&s), "8", "deltas accumulate into a counter");
    // The same interval again (a retried export) is not counted twice.
    let out = s.ingest(&point(10, 20, 3), &shape());
    assert_eq!((value(&s), out.out_of_order), ("8".into(), 1));
    // A producer restart: its delta starts before the last one ended.
    s.ingest(&point(5, 30, 2), &shape());
    assert_eq!(value(&s), "2", "a restarted stream starts the counter over");
    // Delta histograms add bucket by bucket.
    let h = |start: u64, end: u64, counts: &[u64]| {
        let mut b = base();
        b.histogram("wait", "s", "", Temporality::Delta)
            .start_time(Timestamp(start))
            .histogram_point(
                &[1.0],
                counts,
                counts.iter().sum::<u64>() as f64,
                [attr("k", "v")],
                Timestamp(end),
            );
        b.build()
    };
    s.ingest(&h(0, 10, &[1, 1]), &shape());
    s.ingest(&h(10, 20, &[2, 0]), &shape());
    let text = s.render(false);
    assert!(
        has(
            &text,
            &format!("wait_seconds_bucket{{{L},k=\"v\",{S},le=\"1\"}} 3")
        ),
        "{text}"
    );
    assert!(
        has(&text, &format!("wait_seconds_count{{{L},k=\"v\",{S}}} 4")),
        "{text}"
    );
}

#[test]
fn labels_namespace_const_labels_and_promoted_resource_attributes() {
    let mut b = base();
    b.gauge("x", "", "").point(
        1,
        [attr("bad.key-name", "a\"b\\c\nd"), attr("9lives", 1)],
        Timestamp(1),
    );
    let shape = Shape {
        namespace: "tw".into(),
        const_labels: vec![("region".into(), "eu".into())],
        resource_labels: vec!["deployment.environment".into()],
        max_series_per_metric: 10,
    };
    let text = render(&[b.build()], &shape);
    let line = text
        .lines()
        .find(|l| l.starts_with("tw_x{"))
        .expect("namespaced");
    assert!(line.contains(r#"bad_key_name="a\"b\\c\nd""#), "{line}");
    assert!(line.contains(r#"key_9lives="1""#), "{line}");
    assert!(line.contains(r#"region="eu""#), "{line}");
    assert!(line.contains(r#"deployment_environment="prod""#), "{line}");
}

#[test]
fn the_series_limit_refuses_new_series_and_expiry_frees_them() {
    let s = Store::default();
    let shape = Shape {
        max_series_per_metric: 3,
        ..Default::default()
    };
    let mut b = base();
    b.gauge("g", "", "");
    for i in 0..5 {
        b.point(i, [attr("i", i)], Timestamp(1));
    }
    let out = s.ingest(&b.build(), &shape);
    assert_eq!(out.refused_series, 2);
    assert_eq!(
        s.render(false)
            .lines()
            .filter(|l| l.starts_with("g{"))
            .count(),
        3
    );
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        s.expire(Duration::from_millis(20)),
        4,
        "3 series and target_info"
    );
    assert_eq!(s.series_count(), 0);
    assert!(
        !s.render(false).contains("# TYPE g"),
        "an empty family is gone"
    );
}

#[test]
fn openmetrics_has_exemplars_and_eof() {
    let mut b = base();
    b.sum("fills", "", "", Temporality::Cumulative, true).point(
        5,
        [attr("k", "v")],
        Timestamp(2_000_000_000),
    );
    let mut req = b.build();
    let m = &mut req.resource_metrics[0].scope_metrics[0].metrics[0];
    if let Some(Data::Sum(s)) = &mut m.data {
        s.data_points[0].exemplars.push(Exemplar {
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 8],
            value: Some(exemplar::Value::AsInt(1)),
            time_unix_nano: 1_500_000_000,
            ..Default::default()
        });
    }
    let s = Store::default();
    s.ingest(&req, &shape());
    let om = s.render(true);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE fills counter"), "{om}");
    let ab = "ab".repeat(16);
    let cd = "cd".repeat(8);
    assert!(
        om.contains(&format!(
            "fills_total{{{L},k=\"v\",{S}}} 5 # {{trace_id=\"{ab}\",span_id=\"{cd}\"}} 1 1.5"
        )),
        "{om}"
    );
    assert!(
        !s.render(false).contains(" # {"),
        "no exemplars in the text format"
    );
}

#[test]
fn a_name_used_with_two_types_keeps_the_first() {
    let mut b = base();
    b.gauge("dup", "", "")
        .point(1, [attr("k", "v")], Timestamp(1));
    b.sum("dup", "", "", Temporality::Cumulative, false)
        .point(2, [attr("k", "w")], Timestamp(1));
    let s = Store::default();
    let out = s.ingest(&b.build(), &shape());
    assert_eq!(out.conflicts, 0, "a non-monotonic sum is a gauge too");
    let mut b = base();
    b.histogram("dup", "", "", Temporality::Cumulative)
        .histogram_point(&[1.0], &[1, 0], 0.5, [attr("k", "x")], Timestamp(1));
    assert_eq!(s.ingest(&b.build(), &shape()).conflicts, 1);
}
