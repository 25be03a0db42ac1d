//! The conversion table: units, cumulative → delta, declarations and dimension sets,
//! EMF layout limits, PutMetricData request limits, PutLogEvents batches, and
//! [`Prepared`]'s once-per-payload preparation.

use super::emf::{layout, Event, MAX_METRICS, MAX_VALUES};
use super::logs::{batches, MAX_BATCH_BYTES, MAX_BATCH_EVENTS};
use super::*;
use crate::otlp::{attr, MetricsBuilder, Temporality};
use std::time::{Duration, SystemTime};

fn convert_all(
    req: &ExportMetricsServiceRequest,
    shape: &Shape,
    st: &mut DeltaState,
) -> (Vec<Sample>, Converted) {
    let mut out = Vec::new();
    let c = convert(req, shape, st, &mut out);
    (out, c)
}

fn one(s: &Sample) -> f64 {
    match s.value {
        Value::One(v) => v,
        v => panic!("not a single value: {v:?}"),
    }
}

#[test]
fn units_map_to_cloudwatch_units() {
    let table = [
        ("s", "Seconds", 1.0),
        ("ms", "Milliseconds", 1.0),
        ("us", "Microseconds", 1.0),
        ("ns", "Microseconds", 0.001),
        ("By", "Bytes", 1.0),
        ("KiBy", "Kilobytes", 1.0),
        ("MiBy", "Megabytes", 1.0),
        ("By/s", "Bytes/Second", 1.0),
        ("%", "Percent", 1.0),
        ("1", "None", 1.0),
        ("", "None", 1.0),
        ("{trade}", "Count", 1.0),
        ("{request}/s", "Count/Second", 1.0),
        ("furlong", "None", 1.0),
    ];
    for (otel, cw, scale) in table {
        assert_eq!(cloudwatch_unit(otel), (cw, scale), "unit {otel:?}");
        assert!(UNITS.contains(&cw));
    }
}

#[test]
fn cumulative_sums_become_deltas_without_losing_the_first_sample() {
    let t0 = SystemTime::now() - Duration::from_secs(60);
    let at = |s: u64| t0 + Duration::from_secs(s);
    let shape = Shape::default();
    let mut st = DeltaState::default();
    let req = |v: i64, start: SystemTime, t: SystemTime| {
        MetricsBuilder::new()
            .resource(&[("service.name", "bot")])
            .start_time(start)
            .sum("orders", "{order}", "", Temporality::Cumulative, true)
            .point(v, [attr("pair", "BTC")], t)
            .build()
    };
    // First point with a start time: the whole count is the increase since then.
    let (s, _) = convert_all(&req(5, t0, at(10)), &shape, &mut st);
    assert_eq!(one(&s[0]), 5.0);
    assert_eq!(s[0].unit, "Count");
    let (s, _) = convert_all(&req(8, t0, at(20)), &shape, &mut st);
    assert_eq!(one(&s[0]), 3.0);
    // The same point again (a replay): nothing.
    let (s, c) = convert_all(&req(8, t0, at(20)), &shape, &mut st);
    assert!(s.is_empty());
    assert_eq!(c.baselines, 1);
    // A reset (value drops, later start): the new value is the increase.
    let (s, _) = convert_all(&req(2, at(25), at(30)), &shape, &mut st);
    assert_eq!(one(&s[0]), 2.0);
    let (s, _) = convert_all(&req(6, at(25), at(40)), &shape, &mut st);
    assert_eq!(one(&s[0]), 4.0);
    // An older point than the last one: dropped, not taken for a reset.
    let (s, c) = convert_all(&req(1, at(25), at(35)), &shape, &mut st);
    assert!(s.is_empty());
    assert_eq!(c.baselines, 1);

    // Without a start time the first point can only be the baseline.
    let mut st = DeltaState::default();
    let req0 = |v: i64, t: SystemTime| {
        MetricsBuilder::new()
            .sum("orders", "", "", Temporality::Cumulative, true)
            .point(v, [attr("pair", "BTC")], t)
            .build()
    };
    let (s, c) = convert_all(&req0(5, at(10)), &shape, &mut st);
    assert!(s.is_empty());
    assert_eq!(c.baselines, 1);
    let (s, _) = convert_all(&req0(9, at(20)), &shape, &mut st);
    assert_eq!(one(&s[0]), 4.0);
}

#[test]
fn deltas_gauges_and_updown_sums_pass_as_values() {
    let t = SystemTime::now();
    let req = MetricsBuilder::new()
        .sum("fills", "", "", Temporality::Delta, true)
        .point(4, [attr("a", "1")], t)
        .sum("open", "", "", Temporality::Cumulative, false)
        .point(-3, [attr("a", "1")], t)
        .gauge("latency", "ms", "")
        .point(12.5, [attr("a", "1")], t)
        .gauge("bad", "", "")
        .point(f64::NAN, [attr("a", "1")], t)
        .point(f64::INFINITY, [attr("a", "1")], t)
        .build();
    let (s, c) = convert_all(&req, &Shape::default(), &mut DeltaState::default());
    let got: Vec<(&str, f64, &str)> = s
        .iter()
        .map(|s| (s.name.as_str(), one(s), s.unit))
        .collect();
    assert_eq!(
        got,
        [
            ("fills", 4.0, "None"),
            ("open", -3.0, "None"),
            ("latency", 12.5, "Milliseconds")
        ]
    );
    assert_eq!(c.non_finite, 2);
    assert_eq!(c.points, 5);
}

#[test]
fn histograms_become_interval_statistics() {
    let t0 = SystemTime::now() - Duration::from_secs(60);
    let mut st = DeltaState::default();
    let shape = Shape::default();
    let h = |counts: &[u64], sum: f64, t: SystemTime| {
        MetricsBuilder::new()
            .start_time(t0)
            .histogram("rtt", "s", "", Temporality::Cumulative)
            .histogram_point(&[0.1, 1.0], counts, sum, [attr("a", "1")], t)
            .build()
    };
    let (s, _) = convert_all(
        &h(&[1, 1, 0], 0.6, t0 + Duration::from_secs(10)),
        &shape,
        &mut st,
    );
    assert_eq!(
        s[0].value,
        Value::Stats {
            count: 2.0,
            sum: 0.6,
            min: 0.1,
            max: 1.0
        }
    );
    // The next interval: 3 more values, in the second and third buckets.
    let (s, _) = convert_all(
        &h(&[1, 2, 2], 5.6, t0 + Duration::from_secs(20)),
        &shape,
        &mut st,
    );
    let Value::Stats {
        count,
        sum,
        min,
        max,
    } = s[0].value
    else {
        panic!()
    };
    assert_eq!(count, 3.0);
    assert!((sum - 5.0).abs() < 1e-9);
    // Estimated from the populated buckets of the whole histogram.
    assert_eq!((min, max), (0.1, 1.0));
}

#[test]
fn declarations_rename_route_and_choose_dimensions() {
    let t = SystemTime::now();
    let shape: Shape = toml::from_str(
        r#"
        namespace = "tradewatch"
        [[metrics]]
        match = "healthcheck.up"
        rename = "ServiceHealthy"
        namespace = "tradai/ServiceHealth"
        dimensions = [["check"], []]
        [[metrics]]
        match = "debug.*"
        drop = true
        "#,
    )
    .unwrap();
    let req = MetricsBuilder::new()
        .resource(&[("service.name", "tw"), ("service.namespace", "ops")])
        .gauge("healthcheck.up", "", "")
        .point(1, [attr("check", "redis"), attr("type", "redis")], t)
        .point(0, [attr("type", "tcp")], t)
        .gauge("debug.x", "", "")
        .point(1, [attr("a", "1")], t)
        .gauge("other", "", "")
        .point(7, [attr("a", "1")], t)
        .build();
    let (s, c) = convert_all(&req, &shape, &mut DeltaState::default());
    // The point without `check` keeps only the empty (rollup) set.
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].name, "ServiceHealthy");
    assert_eq!(&*s[0].namespace, "tradai/ServiceHealth");
    assert_eq!(*s[0].sets, vec![vec!["check".to_string()], vec![]]);
    assert_eq!(*s[1].sets, vec![Vec::<String>::new()]);
    assert_eq!(c.dropped, 1);
    // Undeclared: the resource's service.namespace, every attribute and service.name.
    assert_eq!(&*s[2].namespace, "ops");
    assert_eq!(
        *s[2].sets,
        vec![vec!["a".to_string(), "service.name".to_string()]]
    );
    assert_eq!(
        *s[2].members,
        vec![
            ("a".into(), "1".into()),
            ("service.name".into(), "tw".into())
        ]
    );
}

fn wide_samples(metrics: usize, attrs: usize) -> Vec<Sample> {
    let t = SystemTime::now();
    let attrs: Vec<_> = (0..attrs)
        .map(|i| attr(format!("attr{i:02}"), format!("value-{i}")))
        .collect();
    let mut b = MetricsBuilder::new();
    for m in 0..metrics {
        b.gauge(&format!("metric.{m:03}"), "By", "")
            .point(m as f64, attrs.clone(), t);
    }
    let (s, c) = convert_all(&b.build(), &Shape::default(), &mut DeltaState::default());
    assert_eq!(c.dimensions_capped, metrics as u64);
    s
}

#[test]
fn emf_splits_250_metrics_of_40_attributes() {
    let samples = wide_samples(250, 40);
    let laid = layout(&samples, emf::DEFAULT_MAX_EVENT_BYTES);
    assert_eq!(laid.events.len(), 3);
    let mut seen = Vec::new();
    for e in &laid.events {
        let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
        let d = &v["_aws"]["CloudWatchMetrics"][0];
        let metrics = d["Metrics"].as_array().unwrap();
        assert!(metrics.len() <= MAX_METRICS);
        let set = d["Dimensions"][0].as_array().unwrap();
        assert_eq!(set.len(), MAX_DIMENSIONS);
        // All 40 attributes are members, 30 of them dimensions.
        for i in 0..40 {
            assert_eq!(v[format!("attr{i:02}")], format!("value-{i}"));
        }
        for m in metrics {
            let name = m["Name"].as_str().unwrap().to_string();
            assert_eq!(m["Unit"], "Bytes");
            assert!(v[&name].is_number());
            seen.push(name);
        }
    }
    seen.sort();
    let want: Vec<String> = (0..250).map(|m| format!("metric.{m:03}")).collect();
    assert_eq!(seen, want);
}

#[test]
fn emf_splits_values_and_oversized_events() {
    // 250 values of one metric, one series, one time: arrays of at most 100.
    let t = SystemTime::now();
    let mut b = MetricsBuilder::new();
    b.gauge("v", "", "");
    for i in 0..250 {
        b.point(i as f64, [attr("a", "1")], t);
    }
    let (s, _) = convert_all(&b.build(), &Shape::default(), &mut DeltaState::default());
    let laid = layout(&s, emf::DEFAULT_MAX_EVENT_BYTES);
    let arrays: Vec<usize> = laid
        .events
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
            v["v"].as_array().map_or(1, |a| a.len())
        })
        .collect();
    assert_eq!(arrays, [MAX_VALUES, MAX_VALUES, 50]);
    // Events over the size bound split until they fit; nothing is lost.
    let wide = wide_samples(250, 40);
    let laid = layout(&wide, 4096);
    assert!(laid.events.iter().all(|e| e.json.len() <= 4096));
    let total: usize = laid
        .events
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(total, 250);
    assert_eq!(laid.oversized, 0);
    // A value that cannot fit even alone is counted, not emitted.
    let laid = layout(&wide[..1], 1024);
    assert_eq!((laid.events.len(), laid.oversized), (0, 1));
}

#[test]
fn put_log_events_batches_stay_within_limits() {
    let base = 1_700_000_000_000i64;
    let ev = |t: i64, n: usize| Event {
        time_ms: t,
        json: "x".repeat(n),
    };
    // Count limit.
    let events: Vec<Event> = (0..25_000).map(|i| ev(base + i, 10)).collect();
    let (sorted, ranges) = batches(&events);
    assert_eq!(
        ranges.iter().map(|r| r.len()).collect::<Vec<_>>(),
        [10_000, 10_000, 5_000]
    );
    assert_eq!(sorted.len(), 25_000);
    // Byte limit, 26 bytes per event included.
    let events: Vec<Event> = (0..40).map(|i| ev(base + i, 100_000)).collect();
    let (sorted, ranges) = batches(&events);
    for r in &ranges {
        let bytes: usize = sorted[r.clone()].iter().map(|e| e.json.len() + 26).sum();
        assert!(bytes <= MAX_BATCH_BYTES, "{bytes}");
        assert!(r.len() <= MAX_BATCH_EVENTS);
    }
    assert_eq!(ranges.iter().map(|r| r.len()).sum::<usize>(), 40);
    // Time order and the 24-hour span.
    let day = 24 * 3600 * 1000;
    let events = vec![
        ev(base + 2 * day, 5),
        ev(base, 5),
        ev(base + day, 5),
        ev(base + day + 1, 5),
    ];
    let (sorted, ranges) = batches(&events);
    let times: Vec<i64> = sorted.iter().map(|e| e.time_ms).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    for r in &ranges {
        let s = &sorted[r.clone()];
        assert!(s.last().unwrap().time_ms - s[0].time_ms <= day);
    }
    assert_eq!(ranges.len(), 2);
}

#[test]
fn put_metric_data_requests_stay_within_limits() {
    let t = SystemTime::now();
    let mut b = MetricsBuilder::new();
    b.gauge("g", "", "");
    for i in 0..5000 {
        b.point(i as f64, [attr("series", format!("s{i}"))], t);
    }
    let (s, _) = convert_all(&b.build(), &Shape::default(), &mut DeltaState::default());
    let reqs = metric_data_requests(&s);
    assert_eq!(reqs.len(), 5);
    assert!(reqs.iter().all(|n| *n <= 1000));
    assert_eq!(reqs.iter().sum::<usize>(), 5000);
}

#[cfg(feature = "aws")]
fn metric_data_requests(s: &[Sample]) -> Vec<usize> {
    metric_data::requests(s)
        .iter()
        .map(|r| r.datums.len())
        .collect()
}

#[cfg(not(feature = "aws"))]
fn metric_data_requests(s: &[Sample]) -> Vec<usize> {
    s.chunks(1000).map(|c| c.len()).collect()
}

#[cfg(feature = "aws")]
#[test]
fn repeated_values_travel_as_values_and_counts() {
    use metric_data::{requests, DatumData};
    let t = SystemTime::now();
    let mut b = MetricsBuilder::new();
    b.gauge("fill", "", "");
    for v in [1.0, 2.0, 1.0, 1.0, 3.0] {
        b.point(v, [attr("pair", "BTC")], t);
    }
    for i in 0..200 {
        b.point(100.0 + i as f64, [attr("pair", "ETH")], t);
    }
    let (s, _) = convert_all(&b.build(), &Shape::default(), &mut DeltaState::default());
    let reqs = requests(&s);
    assert_eq!(reqs.len(), 1);
    let d = &reqs[0].datums;
    assert_eq!(
        d[0].data,
        DatumData::Values(vec![(1.0, 3.0), (2.0, 1.0), (3.0, 1.0)])
    );
    // 200 distinct values: 150 + 50.
    let eth: Vec<usize> = d[1..]
        .iter()
        .map(|d| match &d.data {
            DatumData::Values(v) => v.len(),
            _ => 0,
        })
        .collect();
    assert_eq!(eth, [150, 50]);
}

#[test]
fn prepared_once_per_payload_and_resumed() {
    use crate::component::Signal;
    use crate::pipeline::Payload;
    let prepared: Prepared<Vec<u32>> = Prepared::default();
    let mk = || Arc::new(Payload::from_encoded(Signal::Metrics, bytes::Bytes::new()).unwrap());
    let a = mk();
    let mut calls = 0;
    let (v, done) = prepared
        .get(&a, || {
            calls += 1;
            Ok(vec![1, 2, 3])
        })
        .unwrap();
    assert_eq!((v.len(), done), (3, 0));
    prepared.advance(&a, 2);
    let (_, done) = prepared
        .get(&a, || {
            calls += 1;
            Ok(vec![])
        })
        .unwrap();
    assert_eq!((done, calls), (2, 1));
    // Another payload is prepared on its own, even at a reused address.
    drop(a);
    let b = mk();
    // A preparation that fails keeps nothing.
    assert!(prepared
        .get(&b, || Err(crate::component::ExportError::permanent("bad")))
        .is_err());
    let (v, done) = prepared.get(&b, || Ok(vec![9])).unwrap();
    assert_eq!((v.as_slice(), done), (&[9][..], 0));
    prepared.finish(&b);
    assert!(prepared.is_empty());
}

#[test]
fn one_metric_feeds_several_declarations_with_filters_and_transforms() {
    let t = SystemTime::now();
    let shape: Shape = toml::from_str(
        r#"
        drop_unmatched = true
        [[metrics]]
        match = "bot.up"
        rename = "HealthyHeartbeats"
        dimensions = [["bot"], []]
        [[metrics]]
        match = "bot.up"
        rename = "StaleHeartbeats"
        scale = -1.0
        offset = 1.0
        dimensions = [["bot"], []]
        [[metrics]]
        match = "bot.state"
        attributes = { state = "running" }
        rename = "ActiveStrategies"
        dimensions = [[]]
        [[metrics]]
        match = "check.latency"
        scale = 1000.0
        unit = "Milliseconds"
        "#,
    )
    .unwrap();
    let req = MetricsBuilder::new()
        .gauge("bot.up", "", "")
        .point(1, [attr("bot", "a")], t)
        .point(0, [attr("bot", "b")], t)
        .gauge("bot.state", "", "")
        .point(1, [attr("bot", "a"), attr("state", "running")], t)
        .point(0, [attr("bot", "a"), attr("state", "paused")], t)
        .gauge("check.latency", "s", "")
        .point(0.25, [attr("check", "api")], t)
        .gauge("other", "", "")
        .point(1, [attr("x", "y")], t)
        .build();
    let (s, c) = convert_all(&req, &shape, &mut DeltaState::default());
    let got: Vec<(&str, f64, &str)> = s
        .iter()
        .map(|s| (s.name.as_str(), one(s), s.unit))
        .collect();
    assert_eq!(
        got,
        [
            ("HealthyHeartbeats", 1.0, "None"),
            ("StaleHeartbeats", 0.0, "None"),
            ("HealthyHeartbeats", 0.0, "None"),
            ("StaleHeartbeats", 1.0, "None"),
            ("ActiveStrategies", 1.0, "None"),
            ("check.latency", 250.0, "Milliseconds"),
        ]
    );
    // The paused state and the undeclared metric are dropped.
    assert_eq!(c.dropped, 2);
}
