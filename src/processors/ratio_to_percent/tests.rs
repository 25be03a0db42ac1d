use super::*;
use crate::otlp::attr;
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, number_data_point, summary_data_point,
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};

fn rules(toml_table: &str) -> Arc<Rules> {
    let raw = format!("[processors.ratio_to_percent]\n{toml_table}\n");
    let src = Source::from_text("t.toml".into(), &raw, &|_| None).expect("toml");
    let id = ComponentId::parse("ratio_to_percent").unwrap();
    Arc::new(parse_rules(&src, &id).unwrap_or_else(|e| panic!("{e}")))
}

fn parse_error(toml_table: &str) -> String {
    let raw = format!("[processors.ratio_to_percent]\n{toml_table}\n");
    let src = Source::from_text("t.toml".into(), &raw, &|_| None).expect("toml");
    let id = ComponentId::parse("ratio_to_percent").unwrap();
    match parse_rules(&src, &id) {
        Ok(_) => panic!("{toml_table} was accepted"),
        Err(e) => e.to_string(),
    }
}

const DEFAULT: &str = r#"metrics = ["freqtrade.*.ratio", "freqtrade.winrate", "*_ratio"]
attributes = ["profit_ratio", "fee_ratio"]"#;

fn double(v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        value: Some(number_data_point::Value::AsDouble(v)),
        attributes: attrs,
        time_unix_nano: 1,
        ..Default::default()
    }
}

fn int(v: i64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        value: Some(number_data_point::Value::AsInt(v)),
        attributes: attrs,
        time_unix_nano: 1,
        ..Default::default()
    }
}

fn gauge(points: Vec<NumberDataPoint>) -> Data {
    Data::Gauge(Gauge {
        data_points: points,
    })
}

fn sum(points: Vec<NumberDataPoint>) -> Data {
    Data::Sum(Sum {
        data_points: points,
        aggregation_temporality: 2,
        is_monotonic: false,
    })
}

fn histogram(bounds: &[f64], sum: f64, min: f64, max: f64) -> Data {
    Data::Histogram(Histogram {
        data_points: vec![HistogramDataPoint {
            count: 3,
            sum: Some(sum),
            min: Some(min),
            max: Some(max),
            bucket_counts: vec![1, 1, 1],
            explicit_bounds: bounds.to_vec(),
            time_unix_nano: 1,
            ..Default::default()
        }],
        aggregation_temporality: 1,
    })
}

fn summary(sum: f64, quantiles: &[(f64, f64)]) -> Data {
    Data::Summary(Summary {
        data_points: vec![SummaryDataPoint {
            count: 2,
            sum,
            quantile_values: quantiles
                .iter()
                .map(|&(quantile, value)| summary_data_point::ValueAtQuantile { quantile, value })
                .collect(),
            time_unix_nano: 1,
            ..Default::default()
        }],
    })
}

fn exponential() -> Data {
    Data::ExponentialHistogram(ExponentialHistogram {
        data_points: vec![ExponentialHistogramDataPoint {
            count: 3,
            sum: Some(0.3),
            scale: 1,
            positive: Some(Buckets {
                offset: -3,
                bucket_counts: vec![1, 2],
            }),
            time_unix_nano: 1,
            ..Default::default()
        }],
        aggregation_temporality: 1,
    })
}

fn metric(name: &str, unit: &str, data: Data, metadata: Vec<KeyValue>) -> Metric {
    Metric {
        name: name.into(),
        description: "d".into(),
        unit: unit.into(),
        metadata,
        data: Some(data),
    }
}

fn marker() -> Vec<KeyValue> {
    vec![attr(MARKER_KEY, MARKER_VALUE)]
}

fn attributes_marker(keys: &[&str]) -> KeyValue {
    attr(
        ATTRIBUTES_MARKER_KEY,
        any_value::Value::ArrayValue(ArrayValue {
            values: keys
                .iter()
                .map(|k| AnyValue {
                    value: Some(any_value::Value::StringValue((*k).into())),
                })
                .collect(),
        }),
    )
}

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn convert_one(rules: &Rules, m: Metric) -> (Metric, Converted) {
    let mut req = request(vec![m]);
    let done = RatioToPercent::convert(rules, &mut req);
    (
        req.resource_metrics[0].scope_metrics[0].metrics[0].clone(),
        done,
    )
}

/// (case, config, input, expected output, points converted, points left unconverted)
type Case = (&'static str, &'static str, Metric, Metric, u64, u64);

fn cases() -> Vec<Case> {
    let profit = |v: f64| vec![attr("bot", "main"), attr("profit_ratio", v)];
    vec![
        (
            "double gauge, .ratio suffix",
            DEFAULT,
            metric(
                "freqtrade.profit.realized.ratio",
                "1",
                gauge(vec![double(0.0523, vec![attr("bot", "a")]), double(-0.5, vec![])]),
                vec![],
            ),
            metric(
                "freqtrade.profit.realized.pct",
                "%",
                gauge(vec![double(0.0523 * 100.0, vec![attr("bot", "a")]), double(-50.0, vec![])]),
                marker(),
            ),
            2,
            0,
        ),
        (
            "int sum, _ratio suffix, stays an int",
            DEFAULT,
            metric("trades_won_ratio", "1", sum(vec![int(1, vec![]), int(0, vec![])]), vec![]),
            metric("trades_won_pct", "%", sum(vec![int(100, vec![]), int(0, vec![])]), marker()),
            2,
            0,
        ),
        (
            "histogram: sum, min, max and bounds",
            DEFAULT,
            metric("freqtrade.trade.profit.ratio", "1", histogram(&[-0.1, 0.0, 0.25], 0.4, -0.2, 0.5), vec![]),
            metric("freqtrade.trade.profit.pct", "%", histogram(&[-10.0, 0.0, 25.0], 40.0, -20.0, 50.0), marker()),
            1,
            0,
        ),
        (
            "summary: sum and quantile values, not the quantiles",
            DEFAULT,
            metric("freqtrade.latency.ratio", "1", summary(0.75, &[(0.5, 0.25), (0.99, 0.5)]), vec![]),
            metric("freqtrade.latency.pct", "%", summary(75.0, &[(0.5, 25.0), (0.99, 50.0)]), marker()),
            1,
            0,
        ),
        (
            "matching name without a suffix: scaled, not renamed",
            DEFAULT,
            metric("freqtrade.winrate", "1", gauge(vec![double(0.625, vec![])]), vec![]),
            metric("freqtrade.winrate", "%", gauge(vec![double(62.5, vec![])]), marker()),
            1,
            0,
        ),
        (
            "not matching: untouched",
            DEFAULT,
            metric("freqtrade.balance.total", "USDT", gauge(vec![double(0.5, vec![])]), vec![]),
            metric("freqtrade.balance.total", "USDT", gauge(vec![double(0.5, vec![])]), vec![]),
            0,
            0,
        ),
        (
            "unit % without the marker: a percentage already",
            DEFAULT,
            metric("freqtrade.drawdown.current.ratio", "%", gauge(vec![double(5.0, vec![])]), vec![]),
            metric("freqtrade.drawdown.current.ratio", "%", gauge(vec![double(5.0, vec![])]), vec![]),
            0,
            0,
        ),
        (
            "the marker alone (unit and name changed since): not converted again",
            DEFAULT,
            metric("freqtrade.drawdown.current.ratio", "1", gauge(vec![double(5.0, vec![])]), marker()),
            metric("freqtrade.drawdown.current.ratio", "1", gauge(vec![double(5.0, vec![])]), marker()),
            0,
            0,
        ),
        (
            "exponential histogram: left unchanged, counted",
            DEFAULT,
            metric("freqtrade.trade.profit.ratio", "1", exponential(), vec![]),
            metric("freqtrade.trade.profit.ratio", "1", exponential(), vec![]),
            0,
            1,
        ),
        (
            "attributes on a metric that does not match: double and int scaled and renamed, text kept",
            DEFAULT,
            metric(
                "freqtrade.trades.closed",
                "{trade}",
                sum(vec![
                    int(3, profit(0.02)),
                    int(4, vec![attr("profit_ratio", 1), attr("fee_ratio", "0.001")]),
                    int(5, vec![]),
                ]),
                vec![],
            ),
            metric(
                "freqtrade.trades.closed",
                "{trade}",
                sum(vec![
                    int(3, vec![attr("bot", "main"), attr("profit_pct", 2.0)]),
                    int(4, vec![attr("fee_ratio", "0.001"), attr("profit_pct", 100)]),
                    int(5, vec![]),
                ]),
                vec![attributes_marker(&["profit_ratio", "profit_pct"])],
            ),
            0,
            0,
        ),
        (
            "attributes and values of one metric",
            DEFAULT,
            metric("freqtrade.trade.profit.ratio", "1", gauge(vec![double(0.1, profit(0.1))]), vec![]),
            metric(
                "freqtrade.trade.profit.pct",
                "%",
                gauge(vec![double(10.0, vec![attr("bot", "main"), attr("profit_pct", 10.0)])]),
                vec![attr(MARKER_KEY, MARKER_VALUE), attributes_marker(&["profit_ratio", "profit_pct"])],
            ),
            1,
            0,
        ),
        (
            "attributes already converted (rename off): left alone",
            DEFAULT,
            metric(
                "freqtrade.trades.closed",
                "{trade}",
                gauge(vec![int(3, profit(2.0))]),
                vec![attributes_marker(&["profit_ratio"])],
            ),
            metric(
                "freqtrade.trades.closed",
                "{trade}",
                gauge(vec![int(3, profit(2.0))]),
                vec![attributes_marker(&["profit_ratio"])],
            ),
            0,
            0,
        ),
        (
            "an attribute listed under its new name after conversion: left alone",
            "attributes = [\"profit_pct\"]",
            metric(
                "freqtrade.trades.closed",
                "{trade}",
                gauge(vec![int(3, vec![attr("profit_pct", 2.0)])]),
                vec![attributes_marker(&["profit_ratio", "profit_pct"])],
            ),
            metric(
                "freqtrade.trades.closed",
                "{trade}",
                gauge(vec![int(3, vec![attr("profit_pct", 2.0)])]),
                vec![attributes_marker(&["profit_ratio", "profit_pct"])],
            ),
            0,
            0,
        ),
        (
            "rename = false: scaled, names kept",
            "metrics = [\"*.ratio\"]\nattributes = [\"profit_ratio\"]\nrename = false",
            metric("freqtrade.drawdown.max.ratio", "1", gauge(vec![double(0.25, profit(0.5))]), vec![]),
            metric(
                "freqtrade.drawdown.max.ratio",
                "%",
                gauge(vec![double(25.0, profit(50.0))]),
                vec![attr(MARKER_KEY, MARKER_VALUE), attributes_marker(&["profit_ratio"])],
            ),
            1,
            0,
        ),
        (
            "custom suffixes: the longest that matches wins",
            "metrics = [\"*\"]\nsuffixes = { \"ratio\" = \"percent\", \".drawdown.ratio\" = \".drawdown_percent\" }",
            metric("freqtrade.drawdown.ratio", "1", gauge(vec![double(0.25, vec![])]), vec![]),
            metric("freqtrade.drawdown_percent", "%", gauge(vec![double(25.0, vec![])]), marker()),
            1,
            0,
        ),
        (
            "custom suffixes: the defaults are replaced",
            "metrics = [\"*\"]\nsuffixes = { \"ratio\" = \"percent\" }",
            metric("freqtrade.winrate_ratio", "1", gauge(vec![double(0.5, vec![])]), vec![]),
            metric("freqtrade.winrate_percent", "%", gauge(vec![double(50.0, vec![])]), marker()),
            1,
            0,
        ),
        (
            "glob with a character class",
            "metrics = [\"freqtrade.[dp]*.ratio\"]",
            metric("freqtrade.balance.ratio", "1", gauge(vec![double(0.5, vec![])]), vec![]),
            metric("freqtrade.balance.ratio", "1", gauge(vec![double(0.5, vec![])]), vec![]),
            0,
            0,
        ),
    ]
}

#[test]
fn converts_each_kind_of_input_as_the_table_says() {
    for (case, config, input, want, points, unconverted) in cases() {
        let rules = rules(config);
        let (got, done) = convert_one(&rules, input.clone());
        assert_eq!(got, want, "{case}");
        assert_eq!(done.points, points, "{case}: points converted");
        assert_eq!(done.unconverted_points, unconverted, "{case}: points left");
        assert_eq!(done.changed, got != input, "{case}: changed");
    }
}

#[test]
fn applying_it_twice_converts_once() {
    for (case, config, input, want, _, _) in cases() {
        let rules = rules(config);
        let (once, _) = convert_one(&rules, input);
        let (twice, done) = convert_one(&rules, once.clone());
        assert_eq!(once, want, "{case}");
        assert_eq!(twice, once, "{case}: the second application changed it");
        assert_eq!(done.points, 0, "{case}");
        assert!(!done.changed, "{case}");
    }
}

#[test]
fn two_different_instances_in_a_row_convert_each_value_once() {
    let first = rules("metrics = [\"freqtrade.*.ratio\"]");
    // Matches everything the first one converted, under the new names too.
    let second =
        rules("metrics = [\"freqtrade.*\"]\nattributes = [\"profit_ratio\"]\nrename = false");
    let mut req = request(vec![
        metric(
            "freqtrade.profit.total.ratio",
            "1",
            gauge(vec![double(0.5, profit_attr(0.25))]),
            vec![],
        ),
        metric(
            "freqtrade.winrate",
            "1",
            gauge(vec![double(0.75, vec![])]),
            vec![],
        ),
    ]);
    RatioToPercent::convert(&first, &mut req);
    RatioToPercent::convert(&second, &mut req);
    let after_two = req.clone();
    RatioToPercent::convert(&first, &mut req);
    RatioToPercent::convert(&second, &mut req);
    assert_eq!(req, after_two, "a second round changed something");
    let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(
        metrics[0],
        metric(
            "freqtrade.profit.total.pct",
            "%",
            gauge(vec![double(50.0, profit_attr(25.0))]),
            vec![
                attr(MARKER_KEY, MARKER_VALUE),
                attributes_marker(&["profit_ratio"])
            ],
        )
    );
    assert_eq!(
        metrics[1],
        metric(
            "freqtrade.winrate",
            "%",
            gauge(vec![double(75.0, vec![])]),
            marker()
        )
    );
}

fn profit_attr(v: f64) -> Vec<KeyValue> {
    vec![attr("profit_ratio", v)]
}

#[test]
fn encoded_requests_are_decoded_only_when_something_matches() {
    let mut p = RatioToPercent {
        rules: rules("metrics = [\"*.ratio\"]"),
        converted: Counter::default(),
        unconverted: Counter::default(),
    };
    let encoded = |m: Metric| {
        let bytes = request(vec![m]).encode_to_vec();
        Payload::from_encoded(Signal::Metrics, bytes.into()).unwrap()
    };

    let untouched = encoded(metric(
        "freqtrade.balance",
        "USDT",
        gauge(vec![double(1.0, vec![])]),
        vec![],
    ));
    let mut out = Vec::new();
    p.process(Batch::new(untouched.clone()), &mut out);
    assert_eq!(out.pop().unwrap().payload, untouched);

    let input = metric(
        "a.ratio",
        "1",
        gauge(vec![double(0.5, vec![]), double(0.25, vec![])]),
        vec![],
    );
    p.process(Batch::new(encoded(input)), &mut out);
    let Payload::Metrics(req) = &out[0].payload else {
        panic!("not decoded: {:?}", out[0].payload)
    };
    assert_eq!(
        req.resource_metrics[0].scope_metrics[0].metrics[0],
        metric(
            "a.pct",
            "%",
            gauge(vec![double(50.0, vec![]), double(25.0, vec![])]),
            marker()
        )
    );
    assert_eq!(p.converted.get(), 2);
}

#[test]
fn config_mistakes_are_located() {
    for (table, want) in [
        ("", "t.toml:1:13: processors.ratio_to_percent: nothing to convert"),
        ("metrics = []", "t.toml:2:11: processors.ratio_to_percent.metrics: metrics is empty"),
        (
            "metrics = [\"ok.*\", \"bad[\"]",
            "t.toml:2:20: processors.ratio_to_percent.metrics[1]: bad glob \"bad[\"",
        ),
        ("metrics = [\"\"]", "t.toml:2:12: processors.ratio_to_percent.metrics[0]: empty glob"),
        ("attributes = []", "t.toml:2:14: processors.ratio_to_percent.attributes: attributes is empty"),
        (
            "attributes = [\"a\", \"\"]",
            "t.toml:2:20: processors.ratio_to_percent.attributes[1]: empty attribute key",
        ),
        (
            "metrics = [\"*\"]\nsuffixes = {}",
            "t.toml:3:12: processors.ratio_to_percent.suffixes: suffixes is empty",
        ),
        (
            "metrics = [\"*\"]\nsuffixes = { \"\" = \"x\" }",
            "t.toml:3:12: processors.ratio_to_percent.suffixes: an empty suffix",
        ),
        (
            "metrics = [\"*\"]\nrename = false\nsuffixes = { \".r\" = \".p\" }",
            "t.toml:4:12: processors.ratio_to_percent.suffixes: suffixes are renames, but rename = false",
        ),
        ("metrics = [\"*\"]\nunit = \"%\"", "unknown field `unit`"),
    ] {
        let got = parse_error(table);
        assert!(got.contains(want), "{table:?}:\nwant {want}\ngot  {got}");
    }
}

#[test]
fn the_wire_prefilter_never_hides_something_to_convert() {
    for (case, config, input, _, _, _) in cases() {
        let rules = rules(config);
        let mut req = request(vec![
            input.clone(),
            metric("other", "1", gauge(vec![]), vec![]),
        ]);
        let bytes = req.encode_to_vec();
        let changed = RatioToPercent::convert(&rules, &mut req).changed;
        assert!(
            prefilter::may_convert(&rules, &bytes) || !changed,
            "{case}: the prefilter said no, but it converts"
        );
    }
    let rules = rules("metrics = [\"*.ratio\"]\nattributes = [\"profit_ratio\"]");
    let says =
        |metrics: Vec<Metric>| prefilter::may_convert(&rules, &request(metrics).encode_to_vec());
    let plain = |name: &str, attrs| metric(name, "1", gauge(vec![double(1.0, attrs)]), vec![]);
    assert!(!says(vec![]));
    assert!(!says(vec![
        plain("a.total", vec![attr("bot", "x")]),
        plain("b", vec![])
    ]));
    assert!(says(vec![
        plain("a.total", vec![]),
        plain("b.ratio", vec![])
    ]));
    assert!(says(vec![plain(
        "a.total",
        vec![attr("profit_ratio", 0.5)]
    )]));
    // Unreadable bytes: decoding judges.
    assert!(prefilter::may_convert(&rules, &[0x0a, 0x05, 0x12]));
}
