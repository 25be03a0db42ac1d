//! Visiting and editing decoded metric points and log records.
//!
//! ```
//! use tradewatch::otlp::{for_each_metric_point_mut, set_attr, MetricsBuilder};
//! let mut req = MetricsBuilder::new()
//!     .gauge("freqtrade.profit.ratio", "1", "")
//!     .point(0.12, (), 0)
//!     .build();
//! // ratio → percent: rename, change the unit, scale every value.
//! for_each_metric_point_mut(&mut req, |m, mut p| {
//!     if m.name.ends_with(".ratio") {
//!         *m.name = m.name.replace(".ratio", ".percent");
//!         *m.unit = "%".into();
//!         p.scale(100.0);
//!         set_attr(p.attributes_mut(), "converted", true);
//!     }
//! });
//! ```
//!
//! The visitors hand out the metric's name, unit and description mutably next to each
//! point (split borrows of one `Metric`), and the resource and scope read-only, so one
//! closure can match on any of them and edit the point.

use super::build::Number;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
    NumberDataPoint, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// The kind of a metric, as its points come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    /// With the sum's `aggregation_temporality` (as in the proto) and monotonicity.
    Sum {
        temporality: i32,
        monotonic: bool,
    },
    Histogram {
        temporality: i32,
    },
    ExponentialHistogram {
        temporality: i32,
    },
    Summary,
}

/// Where a visited point belongs, with the metric's descriptive fields editable.
pub struct MetricMut<'a> {
    pub resource: Option<&'a Resource>,
    pub scope: Option<&'a InstrumentationScope>,
    pub name: &'a mut String,
    pub unit: &'a mut String,
    pub description: &'a mut String,
    pub kind: MetricKind,
}

/// One data point of any kind, mutably.
pub enum PointMut<'a> {
    /// A gauge or sum point (see [`MetricMut::kind`]).
    Number(&'a mut NumberDataPoint),
    Histogram(&'a mut HistogramDataPoint),
    ExponentialHistogram(&'a mut ExponentialHistogramDataPoint),
    Summary(&'a mut SummaryDataPoint),
}

/// One data point of any kind.
#[derive(Clone, Copy)]
pub enum PointRef<'a> {
    /// A gauge or sum point (see [`MetricRef::kind`]).
    Number(&'a NumberDataPoint),
    Histogram(&'a HistogramDataPoint),
    ExponentialHistogram(&'a ExponentialHistogramDataPoint),
    Summary(&'a SummaryDataPoint),
}

/// Where a visited point belongs.
#[derive(Clone, Copy)]
pub struct MetricRef<'a> {
    pub resource: Option<&'a Resource>,
    pub scope: Option<&'a InstrumentationScope>,
    pub metric: &'a Metric,
    pub kind: MetricKind,
}

fn kind(data: &Data) -> MetricKind {
    match data {
        Data::Gauge(_) => MetricKind::Gauge,
        Data::Sum(s) => MetricKind::Sum {
            temporality: s.aggregation_temporality,
            monotonic: s.is_monotonic,
        },
        Data::Histogram(h) => MetricKind::Histogram {
            temporality: h.aggregation_temporality,
        },
        Data::ExponentialHistogram(h) => MetricKind::ExponentialHistogram {
            temporality: h.aggregation_temporality,
        },
        Data::Summary(_) => MetricKind::Summary,
    }
}

impl PointRef<'_> {
    pub fn attributes(&self) -> &[KeyValue] {
        match self {
            PointRef::Number(p) => &p.attributes,
            PointRef::Histogram(p) => &p.attributes,
            PointRef::ExponentialHistogram(p) => &p.attributes,
            PointRef::Summary(p) => &p.attributes,
        }
    }

    pub fn time_unix_nano(&self) -> u64 {
        match self {
            PointRef::Number(p) => p.time_unix_nano,
            PointRef::Histogram(p) => p.time_unix_nano,
            PointRef::ExponentialHistogram(p) => p.time_unix_nano,
            PointRef::Summary(p) => p.time_unix_nano,
        }
    }

    /// A gauge or sum point's value as `f64`; `None` for other kinds or no value.
    pub fn value(&self) -> Option<f64> {
        match self {
            PointRef::Number(p) => match p.value? {
                number_data_point::Value::AsDouble(v) => Some(v),
                number_data_point::Value::AsInt(v) => Some(v as f64),
            },
            _ => None,
        }
    }
}

impl PointMut<'_> {
    /// A read-only view of this point.
    pub fn as_ref(&self) -> PointRef<'_> {
        match self {
            PointMut::Number(p) => PointRef::Number(p),
            PointMut::Histogram(p) => PointRef::Histogram(p),
            PointMut::ExponentialHistogram(p) => PointRef::ExponentialHistogram(p),
            PointMut::Summary(p) => PointRef::Summary(p),
        }
    }

    pub fn attributes_mut(&mut self) -> &mut Vec<KeyValue> {
        match self {
            PointMut::Number(p) => &mut p.attributes,
            PointMut::Histogram(p) => &mut p.attributes,
            PointMut::ExponentialHistogram(p) => &mut p.attributes,
            PointMut::Summary(p) => &mut p.attributes,
        }
    }

    /// Sets a gauge or sum point's value (an `f64` or an `i64`); returns false (and
    /// changes nothing) for other kinds.
    pub fn set_value(&mut self, v: impl Into<Number>) -> bool {
        match self {
            PointMut::Number(p) => {
                p.value = Some(v.into().into());
                true
            }
            _ => false,
        }
    }

    /// Multiplies every value the point holds by `factor` (a unit change): number
    /// values (an integer becomes a double unless `factor` is a whole number that keeps
    /// it exact), histogram sums, bounds, min and max, summary sums and quantile values.
    /// Returns false (and changes nothing) for exponential histograms, whose buckets
    /// cannot be rescaled exactly, and for histograms when `factor` is not positive.
    pub fn scale(&mut self, factor: f64) -> bool {
        match self {
            PointMut::Number(p) => {
                p.value = p.value.map(|v| match v {
                    number_data_point::Value::AsInt(i)
                        if factor.fract() == 0.0 && (i as f64 * factor).abs() < 9.0e15 =>
                    {
                        number_data_point::Value::AsInt(i * factor as i64)
                    }
                    number_data_point::Value::AsInt(i) => {
                        number_data_point::Value::AsDouble(i as f64 * factor)
                    }
                    number_data_point::Value::AsDouble(d) => {
                        number_data_point::Value::AsDouble(d * factor)
                    }
                });
            }
            PointMut::Histogram(_) if factor.is_nan() || factor <= 0.0 => return false,
            PointMut::Histogram(p) => {
                for v in p.sum.iter_mut().chain(&mut p.min).chain(&mut p.max) {
                    *v *= factor;
                }
                for b in &mut p.explicit_bounds {
                    *b *= factor;
                }
            }
            PointMut::Summary(p) => {
                p.sum *= factor;
                for q in &mut p.quantile_values {
                    q.value *= factor;
                }
            }
            PointMut::ExponentialHistogram(_) => return false,
        }
        true
    }
}

/// Calls `f` with every data point of every metric, whatever its kind.
pub fn for_each_metric_point<'a>(
    req: &'a ExportMetricsServiceRequest,
    mut f: impl FnMut(MetricRef<'a>, PointRef<'a>),
) {
    for rm in &req.resource_metrics {
        for sm in &rm.scope_metrics {
            for metric in &sm.metrics {
                let Some(data) = &metric.data else { continue };
                let ctx = MetricRef {
                    resource: rm.resource.as_ref(),
                    scope: sm.scope.as_ref(),
                    metric,
                    kind: kind(data),
                };
                match data {
                    Data::Gauge(g) => g
                        .data_points
                        .iter()
                        .for_each(|p| f(ctx, PointRef::Number(p))),
                    Data::Sum(s) => s
                        .data_points
                        .iter()
                        .for_each(|p| f(ctx, PointRef::Number(p))),
                    Data::Histogram(h) => h
                        .data_points
                        .iter()
                        .for_each(|p| f(ctx, PointRef::Histogram(p))),
                    Data::ExponentialHistogram(h) => h
                        .data_points
                        .iter()
                        .for_each(|p| f(ctx, PointRef::ExponentialHistogram(p))),
                    Data::Summary(s) => s
                        .data_points
                        .iter()
                        .for_each(|p| f(ctx, PointRef::Summary(p))),
                }
            }
        }
    }
}

/// Calls `f` with every data point of every metric, with the metric's name, unit and
/// description editable.
pub fn for_each_metric_point_mut(
    req: &mut ExportMetricsServiceRequest,
    mut f: impl FnMut(&mut MetricMut<'_>, PointMut<'_>),
) {
    for rm in &mut req.resource_metrics {
        let resource = rm.resource.as_ref();
        for sm in &mut rm.scope_metrics {
            let scope = sm.scope.as_ref();
            for metric in &mut sm.metrics {
                let Metric {
                    name,
                    description,
                    unit,
                    data,
                    ..
                } = metric;
                let Some(data) = data else { continue };
                let mut ctx = MetricMut {
                    resource,
                    scope,
                    name,
                    unit,
                    description,
                    kind: kind(data),
                };
                match data {
                    Data::Gauge(g) => g
                        .data_points
                        .iter_mut()
                        .for_each(|p| f(&mut ctx, PointMut::Number(p))),
                    Data::Sum(s) => s
                        .data_points
                        .iter_mut()
                        .for_each(|p| f(&mut ctx, PointMut::Number(p))),
                    Data::Histogram(h) => h
                        .data_points
                        .iter_mut()
                        .for_each(|p| f(&mut ctx, PointMut::Histogram(p))),
                    Data::ExponentialHistogram(h) => h
                        .data_points
                        .iter_mut()
                        .for_each(|p| f(&mut ctx, PointMut::ExponentialHistogram(p))),
                    Data::Summary(s) => s
                        .data_points
                        .iter_mut()
                        .for_each(|p| f(&mut ctx, PointMut::Summary(p))),
                }
            }
        }
    }
}

/// Where a visited log record belongs.
#[derive(Clone, Copy)]
pub struct LogCtx<'a> {
    pub resource: Option<&'a Resource>,
    pub scope: Option<&'a InstrumentationScope>,
}

/// Calls `f` with every log record.
pub fn for_each_log_record<'a>(
    req: &'a ExportLogsServiceRequest,
    mut f: impl FnMut(LogCtx<'a>, &'a LogRecord),
) {
    for rl in &req.resource_logs {
        for sl in &rl.scope_logs {
            let ctx = LogCtx {
                resource: rl.resource.as_ref(),
                scope: sl.scope.as_ref(),
            };
            sl.log_records.iter().for_each(|r| f(ctx, r));
        }
    }
}

/// Calls `f` with every log record, mutably.
pub fn for_each_log_record_mut(
    req: &mut ExportLogsServiceRequest,
    mut f: impl FnMut(LogCtx<'_>, &mut LogRecord),
) {
    for rl in &mut req.resource_logs {
        let resource = rl.resource.as_ref();
        for sl in &mut rl.scope_logs {
            let ctx = LogCtx {
                resource,
                scope: sl.scope.as_ref(),
            };
            sl.log_records.iter_mut().for_each(|r| f(ctx, r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{attr, get_str, set_attr, wire, LogsBuilder, MetricsBuilder, Temporality};
    use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
    use opentelemetry_proto::tonic::metrics::v1::{
        exponential_histogram_data_point::Buckets, summary_data_point::ValueAtQuantile,
        ExponentialHistogram, Summary,
    };
    use prost::Message;

    /// One metric of every kind, two points each.
    fn every_kind() -> ExportMetricsServiceRequest {
        let exp = ExponentialHistogramDataPoint {
            count: 3,
            sum: Some(3.0),
            scale: 1,
            positive: Some(Buckets {
                offset: 0,
                bucket_counts: vec![1, 2],
            }),
            ..Default::default()
        };
        let summary = SummaryDataPoint {
            count: 2,
            sum: 0.5,
            quantile_values: vec![ValueAtQuantile {
                quantile: 0.5,
                value: 0.2,
            }],
            ..Default::default()
        };
        let metric = |name: &str, data| Metric {
            name: name.into(),
            unit: "1".into(),
            data: Some(data),
            ..Default::default()
        };
        MetricsBuilder::new()
            .resource(&[("service.name", "x")])
            .scope("s", "1")
            .gauge("g.ratio", "1", "")
            .point(0.5, [attr("bot", "a")], 1u64)
            .point(2, [attr("bot", "b")], 1u64)
            .sum("s.ratio", "1", "", Temporality::Cumulative, false)
            .point(0.25, [attr("bot", "a")], 1u64)
            .point(0.75, [attr("bot", "b")], 1u64)
            .histogram("h.ratio", "1", "", Temporality::Delta)
            .histogram_point(&[0.1, 0.5], &[1, 1, 0], 0.4, [attr("bot", "a")], 1u64)
            .histogram_point(&[0.1, 0.5], &[0, 0, 1], 0.9, [attr("bot", "b")], 1u64)
            .metric(metric(
                "e.ratio",
                Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![exp.clone(), exp],
                    aggregation_temporality: Temporality::Delta.into(),
                }),
            ))
            .metric(metric(
                "q.ratio",
                Data::Summary(Summary {
                    data_points: vec![summary.clone(), summary],
                }),
            ))
            .build()
    }

    #[test]
    fn visits_every_point_kind() {
        let req = every_kind();
        assert_eq!(wire::scan_metrics(&req.encode_to_vec()).unwrap().items, 10);
        let mut seen = Vec::new();
        for_each_metric_point(&req, |m, p| {
            assert_eq!(m.resource.unwrap().attributes[0].key, "service.name");
            assert_eq!(m.scope.unwrap().name, "s");
            seen.push((m.metric.name.clone(), m.kind, p.value()));
            assert_eq!(
                p.time_unix_nano(),
                if m.metric.name.starts_with(['e', 'q']) {
                    0
                } else {
                    1
                }
            );
        });
        assert_eq!(seen.len(), 10);
        assert_eq!(seen[0], ("g.ratio".into(), MetricKind::Gauge, Some(0.5)));
        assert_eq!(seen[1].2, Some(2.0));
        assert!(matches!(
            seen[2].1,
            MetricKind::Sum {
                monotonic: false,
                ..
            }
        ));
        assert!(matches!(seen[4].1, MetricKind::Histogram { .. }));
        assert!(matches!(seen[6].1, MetricKind::ExponentialHistogram { .. }));
        assert_eq!(seen[9].1, MetricKind::Summary);
        assert_eq!(seen[9].2, None);
    }

    #[test]
    fn edits_every_point_kind_and_round_trips() {
        let mut req = every_kind();
        let mut scaled = Vec::new();
        for_each_metric_point_mut(&mut req, |m, mut p| {
            if let Some(base) = m.name.strip_suffix(".ratio") {
                *m.name = format!("{base}.percent");
            }
            *m.unit = "%".into();
            *m.description = "converted".into();
            scaled.push(p.scale(100.0));
            if get_str(p.as_ref().attributes(), "bot") == Some("b") {
                set_attr(p.attributes_mut(), "bot", "B");
            }
            set_attr(p.attributes_mut(), "edited", true);
        });
        assert!(!PointMut::Summary(&mut SummaryDataPoint::default()).set_value(1));
        // Exponential histograms cannot be rescaled exactly.
        assert_eq!(
            scaled,
            [true, true, true, true, true, true, false, false, true, true]
        );

        let bytes = req.encode_to_vec();
        assert_eq!(wire::scan_metrics(&bytes).unwrap().items, 10);
        let back = ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, req);
        let metrics = &back.resource_metrics[0].scope_metrics[0].metrics;
        let names: Vec<_> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "g.percent",
                "s.percent",
                "h.percent",
                "e.percent",
                "q.percent"
            ]
        );
        assert!(metrics
            .iter()
            .all(|m| m.unit == "%" && m.description == "converted"));
        let mut values = Vec::new();
        for_each_metric_point(&back, |_, p| {
            assert_eq!(get_attr_bool(p.attributes()), Some(true));
            match p {
                PointRef::Number(_) => values.push(p.value().unwrap()),
                PointRef::Histogram(h) => {
                    values.push(h.sum.unwrap());
                    assert_eq!(h.explicit_bounds, [10.0, 50.0]);
                }
                PointRef::ExponentialHistogram(e) => values.push(e.sum.unwrap()),
                PointRef::Summary(s) => {
                    values.push(s.sum);
                    assert_eq!(s.quantile_values[0].value, 20.0);
                }
            }
        });
        assert_eq!(
            values,
            [50.0, 200.0, 25.0, 75.0, 40.0, 90.0, 3.0, 3.0, 50.0, 50.0]
        );
        // An integer scaled by a whole factor stays an integer.
        let Some(Data::Gauge(g)) = &metrics[0].data else {
            panic!("gauge")
        };
        assert_eq!(
            g.data_points[1].value,
            Some(number_data_point::Value::AsInt(200))
        );
        assert_eq!(get_str(&g.data_points[1].attributes, "bot"), Some("B"));
    }

    #[test]
    fn sets_number_values() {
        let mut req = every_kind();
        let mut set = 0;
        for_each_metric_point_mut(&mut req, |m, mut p| {
            if m.kind == MetricKind::Gauge {
                set += usize::from(p.set_value(7));
            } else if p.set_value(0.25) {
                set += 1;
            }
        });
        assert_eq!(set, 4);
        let mut values = Vec::new();
        for_each_metric_point(&req, |_, p| values.extend(p.value()));
        assert_eq!(values, [7.0, 7.0, 0.25, 0.25]);
    }

    fn get_attr_bool(attrs: &[KeyValue]) -> Option<bool> {
        match crate::otlp::get_attr(attrs, "edited")? {
            opentelemetry_proto::tonic::common::v1::any_value::Value::BoolValue(b) => Some(*b),
            _ => None,
        }
    }

    #[test]
    fn edits_log_records() {
        let mut req = LogsBuilder::new()
            .resource(&[("service.name", "x")])
            .scope("s", "1")
            .log(1u64, SeverityNumber::Info, "a", [attr("secret", "p")])
            .log(2u64, SeverityNumber::Error, "b", ())
            .build();
        for_each_log_record_mut(&mut req, |ctx, r| {
            assert_eq!(ctx.scope.unwrap().name, "s");
            crate::otlp::remove_attr(&mut r.attributes, "secret");
            set_attr(&mut r.attributes, "seen", 1);
            r.severity_text = "X".into();
        });
        let back = ExportLogsServiceRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        let mut n = 0;
        for_each_log_record(&back, |ctx, r| {
            n += 1;
            assert_eq!(ctx.resource.unwrap().attributes[0].key, "service.name");
            assert_eq!(r.attributes, [attr("seen", 1)]);
            assert_eq!(r.severity_text, "X");
        });
        assert_eq!(n, 2);
    }
}
