//! Builders for OTLP metrics and logs export requests.
//!
//! ```
//! use tradewatch::otlp::{attr, MetricsBuilder, Temporality};
//! let t = std::time::SystemTime::now();
//! let req = MetricsBuilder::new()
//!     .resource(&[("service.name", "freqtrade")])
//!     .scope("tradewatch.freqtrade", "0.1.0")
//!     .gauge("freqtrade.profit.ratio", "1", "Closed-trade profit")
//!     .point(0.12, [attr("bot", "main")], t)
//!     .point(-0.03, [attr("bot", "scalper")], t)
//!     .sum("freqtrade.trades", "{trade}", "Closed trades", Temporality::Cumulative, true)
//!     .point(42, [attr("bot", "main")], t)
//!     .build();
//! assert_eq!(req.resource_metrics[0].scope_metrics[0].metrics.len(), 2);
//! ```
//!
//! Each call adds to the most recent resource, scope and metric, creating an empty one
//! when there is none yet; the methods take `&mut self`, so a builder can also be filled
//! in a loop and finished with [`MetricsBuilder::build`].

use super::attrs::{AttrValue, IntoAttributes, Timestamp};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// How a sum or histogram accumulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporality {
    /// Each point covers the time since the previous point.
    Delta,
    /// Each point covers the time since the start time (a counter that never resets).
    Cumulative,
}

impl From<Temporality> for i32 {
    fn from(t: Temporality) -> i32 {
        match t {
            Temporality::Delta => AggregationTemporality::Delta as i32,
            Temporality::Cumulative => AggregationTemporality::Cumulative as i32,
        }
    }
}

/// The value of a gauge or sum point: an integer or a double.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    Double(f64),
}

impl From<f64> for Number {
    fn from(v: f64) -> Self {
        Number::Double(v)
    }
}
impl From<i64> for Number {
    fn from(v: i64) -> Self {
        Number::Int(v)
    }
}
impl From<i32> for Number {
    fn from(v: i32) -> Self {
        Number::Int(v.into())
    }
}
impl From<u32> for Number {
    fn from(v: u32) -> Self {
        Number::Int(v.into())
    }
}
impl From<Number> for number_data_point::Value {
    fn from(n: Number) -> Self {
        match n {
            Number::Int(v) => number_data_point::Value::AsInt(v),
            Number::Double(v) => number_data_point::Value::AsDouble(v),
        }
    }
}

fn resource(attrs: impl IntoAttributes) -> Option<Resource> {
    Some(Resource {
        attributes: attrs.into_attributes(),
        ..Default::default()
    })
}

fn scope(name: impl Into<String>, version: impl Into<String>) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: name.into(),
        version: version.into(),
        ..Default::default()
    })
}

/// Builds an `ExportMetricsServiceRequest`; see the module documentation.
#[derive(Debug, Default)]
pub struct MetricsBuilder {
    resources: Vec<ResourceMetrics>,
    start: u64,
}

impl MetricsBuilder {
    pub fn new() -> MetricsBuilder {
        MetricsBuilder::default()
    }

    /// Starts a new resource with these attributes.
    pub fn resource(&mut self, attrs: impl IntoAttributes) -> &mut Self {
        self.resources.push(ResourceMetrics {
            resource: resource(attrs),
            ..Default::default()
        });
        self
    }

    /// Starts a new instrumentation scope in the current resource.
    pub fn scope(&mut self, name: impl Into<String>, version: impl Into<String>) -> &mut Self {
        self.current_resource().scope_metrics.push(ScopeMetrics {
            scope: scope(name, version),
            ..Default::default()
        });
        self
    }

    /// Adds a gauge; [`MetricsBuilder::point`] adds its points.
    pub fn gauge(&mut self, name: &str, unit: &str, description: &str) -> &mut Self {
        self.metric(new_metric(
            name,
            unit,
            description,
            Data::Gauge(Gauge::default()),
        ))
    }

    /// Adds a sum (a counter when `monotonic`); [`MetricsBuilder::point`] adds its points.
    pub fn sum(
        &mut self,
        name: &str,
        unit: &str,
        description: &str,
        temporality: Temporality,
        monotonic: bool,
    ) -> &mut Self {
        let sum = Sum {
            data_points: Vec::new(),
            aggregation_temporality: temporality.into(),
            is_monotonic: monotonic,
        };
        self.metric(new_metric(name, unit, description, Data::Sum(sum)))
    }

    /// Adds an explicit-bucket histogram; [`MetricsBuilder::histogram_point`] adds its points.
    pub fn histogram(
        &mut self,
        name: &str,
        unit: &str,
        description: &str,
        temporality: Temporality,
    ) -> &mut Self {
        let h = Histogram {
            data_points: Vec::new(),
            aggregation_temporality: temporality.into(),
        };
        self.metric(new_metric(name, unit, description, Data::Histogram(h)))
    }

    /// Adds a metric built by hand (exponential histograms, summaries, metadata).
    pub fn metric(&mut self, metric: Metric) -> &mut Self {
        let scope = self.current_scope();
        scope.metrics.push(metric);
        self
    }

    /// The start time of the points added after this call (cumulative sums and
    /// histograms: when counting began); 0 ("unknown") until set.
    pub fn start_time(&mut self, t: impl Into<Timestamp>) -> &mut Self {
        self.start = t.into().0;
        self
    }

    /// Adds a point to the current gauge or sum.
    ///
    /// # Panics
    /// When the current metric is not a gauge or a sum (a programming error).
    pub fn point(
        &mut self,
        value: impl Into<Number>,
        attrs: impl IntoAttributes,
        t: impl Into<Timestamp>,
    ) -> &mut Self {
        let p = NumberDataPoint {
            attributes: attrs.into_attributes(),
            start_time_unix_nano: self.start,
            time_unix_nano: t.into().0,
            value: Some(value.into().into()),
            ..Default::default()
        };
        match self.current_data() {
            Some(Data::Gauge(g)) => g.data_points.push(p),
            Some(Data::Sum(s)) => s.data_points.push(p),
            _ => panic!("MetricsBuilder::point needs a gauge or a sum first"),
        }
        self
    }

    /// Adds a point to the current histogram: `counts[i]` values fell at or below
    /// `bounds[i]` (and above the previous bound); the last count is above every bound.
    ///
    /// # Panics
    /// When the current metric is not a histogram, or `counts` does not have one more
    /// entry than `bounds` (programming errors).
    pub fn histogram_point(
        &mut self,
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
        attrs: impl IntoAttributes,
        t: impl Into<Timestamp>,
    ) -> &mut Self {
        assert_eq!(
            counts.len(),
            bounds.len() + 1,
            "a histogram has one more bucket count than bounds"
        );
        let p = HistogramDataPoint {
            attributes: attrs.into_attributes(),
            start_time_unix_nano: self.start,
            time_unix_nano: t.into().0,
            count: counts.iter().sum(),
            sum: Some(sum),
            bucket_counts: counts.to_vec(),
            explicit_bounds: bounds.to_vec(),
            ..Default::default()
        };
        match self.current_data() {
            Some(Data::Histogram(h)) => h.data_points.push(p),
            _ => panic!("MetricsBuilder::histogram_point needs a histogram first"),
        }
        self
    }

    /// The request; the builder is left empty.
    pub fn build(&mut self) -> ExportMetricsServiceRequest {
        self.start = 0;
        ExportMetricsServiceRequest {
            resource_metrics: std::mem::take(&mut self.resources),
        }
    }

    fn current_resource(&mut self) -> &mut ResourceMetrics {
        if self.resources.is_empty() {
            self.resources.push(ResourceMetrics::default());
        }
        self.resources.last_mut().expect("one resource")
    }

    fn current_scope(&mut self) -> &mut ScopeMetrics {
        let r = self.current_resource();
        if r.scope_metrics.is_empty() {
            r.scope_metrics.push(ScopeMetrics::default());
        }
        r.scope_metrics.last_mut().expect("one scope")
    }

    fn current_data(&mut self) -> Option<&mut Data> {
        self.resources
            .last_mut()?
            .scope_metrics
            .last_mut()?
            .metrics
            .last_mut()?
            .data
            .as_mut()
    }
}

fn new_metric(name: &str, unit: &str, description: &str, data: Data) -> Metric {
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        unit: unit.to_owned(),
        metadata: Vec::new(),
        data: Some(data),
    }
}

/// Builds an `ExportLogsServiceRequest`: `.resource(..).scope(..).log(..)` or
/// `.record(..)` for a record built by hand.
#[derive(Debug, Default)]
pub struct LogsBuilder {
    resources: Vec<ResourceLogs>,
}

impl LogsBuilder {
    pub fn new() -> LogsBuilder {
        LogsBuilder::default()
    }

    /// Starts a new resource with these attributes.
    pub fn resource(&mut self, attrs: impl IntoAttributes) -> &mut Self {
        self.resources.push(ResourceLogs {
            resource: resource(attrs),
            ..Default::default()
        });
        self
    }

    /// Starts a new instrumentation scope in the current resource.
    pub fn scope(&mut self, name: impl Into<String>, version: impl Into<String>) -> &mut Self {
        self.current_resource().scope_logs.push(ScopeLogs {
            scope: scope(name, version),
            ..Default::default()
        });
        self
    }

    /// Adds a record to the current scope.
    pub fn record(&mut self, record: LogRecord) -> &mut Self {
        let r = self.current_resource();
        if r.scope_logs.is_empty() {
            r.scope_logs.push(ScopeLogs::default());
        }
        r.scope_logs
            .last_mut()
            .expect("one scope")
            .log_records
            .push(record);
        self
    }

    /// Adds a record observed now that happened at `t`.
    pub fn log(
        &mut self,
        t: impl Into<Timestamp>,
        severity: SeverityNumber,
        body: impl Into<AttrValue>,
        attrs: impl IntoAttributes,
    ) -> &mut Self {
        self.record(log_record(t, severity, body, attrs))
    }

    /// The request; the builder is left empty.
    pub fn build(&mut self) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: std::mem::take(&mut self.resources),
        }
    }

    fn current_resource(&mut self) -> &mut ResourceLogs {
        if self.resources.is_empty() {
            self.resources.push(ResourceLogs::default());
        }
        self.resources.last_mut().expect("one resource")
    }
}

/// A log record that happened at `t`, observed now, with the severity's short name
/// (`INFO`, `WARN`, ...) as its text.
pub fn log_record(
    t: impl Into<Timestamp>,
    severity: SeverityNumber,
    body: impl Into<AttrValue>,
    attrs: impl IntoAttributes,
) -> LogRecord {
    let text = severity.as_str_name();
    LogRecord {
        time_unix_nano: t.into().0,
        observed_time_unix_nano: Timestamp::now().0,
        severity_number: severity as i32,
        severity_text: match severity {
            SeverityNumber::Unspecified => String::new(),
            _ => text.strip_prefix("SEVERITY_NUMBER_").unwrap_or(text).into(),
        },
        body: Some(AnyValue::from(body.into())),
        attributes: attrs.into_attributes(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::attrs::attr;
    use crate::otlp::wire;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use prost::Message;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn metrics_build_encode_scan_decode() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let req = MetricsBuilder::new()
            .resource(&[("service.name", "freqtrade"), ("bot", "main")])
            .scope("tradewatch.freqtrade", "0.1.0")
            .gauge("freqtrade.profit.ratio", "1", "profit")
            .point(0.12, [attr("bot", "main"), attr("dry_run", true)], t)
            .point(-0.5, &[("bot", "scalper")], 5u64)
            .start_time(1u64)
            .sum(
                "freqtrade.trades",
                "{trade}",
                "",
                Temporality::Cumulative,
                true,
            )
            .point(42, [attr("open", 3i64), attr("ratio", 0.25)], t)
            .sum("freqtrade.pnl", "USDT", "", Temporality::Delta, false)
            .point(1.5, (), t)
            .histogram("freqtrade.latency", "s", "", Temporality::Delta)
            .histogram_point(&[0.1, 1.0], &[3, 2, 1], 4.2, (), t)
            .resource(&[("service.name", "other")])
            .gauge("up", "1", "")
            .point(1, (), t)
            .build();
        let bytes = req.encode_to_vec();
        let counts = wire::scan_metrics(&bytes).unwrap();
        assert_eq!(counts.resources, 2);
        assert_eq!(counts.items, 6);
        let back = ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, req);

        let rm = &back.resource_metrics[0];
        assert_eq!(
            rm.scope_metrics[0].scope.as_ref().unwrap().name,
            "tradewatch.freqtrade"
        );
        let m = &rm.scope_metrics[0].metrics;
        let Some(Data::Gauge(g)) = &m[0].data else {
            panic!("gauge")
        };
        assert_eq!(g.data_points[0].time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(g.data_points[0].start_time_unix_nano, 0);
        assert_eq!(g.data_points[1].time_unix_nano, 5);
        let Some(Data::Sum(s)) = &m[1].data else {
            panic!("sum")
        };
        assert!(s.is_monotonic);
        assert_eq!(
            s.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(s.data_points[0].start_time_unix_nano, 1);
        assert_eq!(
            s.data_points[0].value,
            Some(number_data_point::Value::AsInt(42))
        );
        let Some(Data::Histogram(h)) = &m[3].data else {
            panic!("histogram")
        };
        assert_eq!(h.data_points[0].count, 6);
        // The second resource starts its own scope.
        assert!(back.resource_metrics[1].scope_metrics[0].scope.is_none());
    }

    #[test]
    fn logs_build_encode_scan_decode() {
        let req = LogsBuilder::new()
            .resource([attr("service.name", "tradewatch")])
            .scope("tradewatch.logtail", "1")
            .log(
                7u64,
                SeverityNumber::Warn,
                "disk slow",
                [attr("disk", "sda")],
            )
            .log(8u64, SeverityNumber::Info, 12i64, ())
            .scope("other", "")
            .record(LogRecord::default())
            .build();
        let bytes = req.encode_to_vec();
        let counts = wire::scan_logs(&bytes).unwrap();
        assert_eq!((counts.resources, counts.items), (1, 3));
        let back = ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, req);
        let r = &back.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(r.severity_text, "WARN");
        assert_eq!(r.time_unix_nano, 7);
        assert!(r.observed_time_unix_nano > 0);
        assert_eq!(
            r.body.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("disk slow".into()))
        );
    }

    #[test]
    #[should_panic(expected = "needs a gauge or a sum")]
    fn a_point_needs_a_number_metric() {
        MetricsBuilder::new()
            .histogram("h", "s", "", Temporality::Delta)
            .point(1, (), 0u64);
    }
}
