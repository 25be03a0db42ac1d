//! What the two CloudWatch exporters share: the OpenTelemetry → CloudWatch conversion of
//! metric points into [`Sample`]s (namespaces, metric declarations, dimension sets, units,
//! cumulative → delta), the AWS target settings, and [`Prepared`], which makes a payload's
//! conversion happen once however often its export is retried.
//!
//! - `cloudwatch_emf` ([`emf`]): Embedded Metric Format JSON to stdout, a file or
//!   CloudWatch Logs (`PutLogEvents`, [`logs`]).
//! - `cloudwatch` ([`metric_data`]): `PutMetricData`.
//!
//! CloudWatch aggregates what it is sent per period, so a counter must reach it as the
//! increase since the last sample: delta sums are sent as they are; a cumulative
//! monotonic sum is sent as its increase since the previous point of the same series. The
//! first point of a series is not dropped: when it carries a start time its whole value is
//! the increase since that start; only a first point with no start time (unknowable
//! increase) is held as the baseline. A value below the previous one, or a later start
//! time, is a counter reset: the new value is the increase since the reset. Non-monotonic
//! sums and gauges are sent as values. Histograms become a statistic set (count, sum,
//! min, max) of the interval.

pub mod emf;
pub mod logs;
#[cfg(feature = "aws")]
pub mod metric_data;

use crate::component::{ComponentId, Kind};
use crate::config::{component_config, ConfigError, Source};
use crate::otlp::edit::{for_each_metric_point, MetricKind, PointRef};
use crate::otlp::value_text;
use crate::pipeline::Payload;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// CloudWatch: at most 30 dimensions per metric (EMF dimension set, PutMetricData datum).
pub const MAX_DIMENSIONS: usize = 30;
/// PutMetricData: a dimension value is 1 to 1024 characters; EMF keeps the same bound.
pub const MAX_DIMENSION_VALUE: usize = 1024;
/// CloudWatch accepts data at most two weeks old ...
pub const MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
/// ... and at most two hours ahead.
pub const MAX_AHEAD: Duration = Duration::from_secs(2 * 3600);
/// An export (several AWS calls, when a payload is split) may take this many times the
/// per-call `timeout`: cutting it short would leave a delivered call unrecorded and send
/// it again.
pub const CALLS_PER_EXPORT_TIMEOUT: u32 = 10;
/// Series of cumulative sums whose last value is remembered for deltas, at most.
const MAX_TRACKED_SERIES: usize = 200_000;
/// A tracked series not seen for this long is forgotten.
const SERIES_TTL: Duration = Duration::from_secs(3600);

/// The CloudWatch units (the EMF schema's list, which PutMetricData shares).
pub const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// The CloudWatch unit for an OpenTelemetry (UCUM) unit, and the factor that turns a value
/// into it (nanoseconds have no CloudWatch unit: they become microseconds).
pub fn cloudwatch_unit(otel: &str) -> (&'static str, f64) {
    let u = otel.trim();
    let plain = match u {
        "s" => "Seconds",
        "ms" => "Milliseconds",
        "us" | "µs" => "Microseconds",
        "ns" => return ("Microseconds", 0.001),
        "min" => return ("Seconds", 60.0),
        "h" => return ("Seconds", 3600.0),
        "By" => "Bytes",
        "kBy" | "KBy" | "KiBy" => "Kilobytes",
        "MBy" | "MiBy" => "Megabytes",
        "GBy" | "GiBy" => "Gigabytes",
        "TBy" | "TiBy" => "Terabytes",
        "bit" => "Bits",
        "kbit" | "Kibit" => "Kilobits",
        "Mbit" | "Mibit" => "Megabits",
        "Gbit" | "Gibit" => "Gigabits",
        "By/s" => "Bytes/Second",
        "kBy/s" | "KiBy/s" => "Kilobytes/Second",
        "MBy/s" | "MiBy/s" => "Megabytes/Second",
        "bit/s" => "Bits/Second",
        "%" => "Percent",
        "1" | "" => "None",
        _ if u.starts_with('{') && u.ends_with("}/s") => "Count/Second",
        _ if u.starts_with('{') && u.ends_with('}') => "Count",
        _ => "None",
    };
    (plain, 1.0)
}

/// `region` and `endpoint_url`, as both AWS destinations take them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsTarget {
    /// Empty: the environment's region (`AWS_REGION`, profile).
    #[serde(default)]
    pub region: String,
    /// Another endpoint than AWS's (moto, a VPC endpoint); empty: AWS.
    #[serde(default)]
    pub endpoint_url: String,
}

impl AwsTarget {
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !self.endpoint_url.is_empty() {
            let ok =
                self.endpoint_url.parse::<::http::Uri>().ok().filter(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                });
            if ok.is_none() {
                return Err((
                    "endpoint_url",
                    format!(
                        "invalid endpoint_url {:?}: write it as http(s)://HOST[:PORT], or leave it empty for AWS",
                        self.endpoint_url
                    ),
                ));
            }
        }
        if self.region.chars().any(|c| c.is_whitespace()) {
            return Err(("region", format!("invalid region {:?}", self.region)));
        }
        Ok(())
    }

    #[cfg(feature = "aws")]
    pub async fn sdk_config(&self, attempt_timeout: Duration) -> aws_config::SdkConfig {
        crate::aws::sdk_config(crate::aws::SdkSettings {
            region: (!self.region.is_empty()).then_some(self.region.as_str()),
            endpoint_url: (!self.endpoint_url.is_empty()).then_some(self.endpoint_url.as_str()),
            attempt_timeout,
            connect_timeout: Some(Duration::from_secs(5)),
        })
        .await
    }
}

/// The conversion settings both exporters take:
///
/// ```toml
/// namespace = "tradewatch"              # the resource's service.namespace wins, if set
/// namespace_from_resource = true
/// dimensions = [["service.name", "bot"], ["service.name"]]   # default: every attribute
/// resource_to_dimensions = ["service.name"]
/// storage_resolution = 60               # or 1 (high resolution)
/// drop_unmatched = false                # true: only metrics a declaration matches
/// [[exporters.X.metrics]]               # declarations; each one that matches a point
/// match = "healthcheck.*"               # gives it a form: a name, or a prefix ending in `*`
/// attributes = { check = "api" }        # optional: only points with these values
/// rename = "ServiceHealthy"             # optional
/// namespace = "tradai/ServiceHealth"    # optional
/// dimensions = [["check"]]              # optional; [[]] is a rollup without dimensions
/// unit = "Milliseconds"                 # optional CloudWatch unit
/// scale = 1000.0                        # optional: value × scale + offset
/// offset = 0.0
/// drop = false                          # a matching `drop` drops the point
/// ```
/// The keys of [`Shape`], which an exporter's table holds beside its own.
pub const SHAPE_KEYS: &[&str] = &[
    "namespace",
    "namespace_from_resource",
    "dimensions",
    "resource_to_dimensions",
    "storage_resolution",
    "drop_unmatched",
    "metrics",
];

#[derive(Debug, Clone, Deserialize)]
pub struct Shape {
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default = "yes")]
    pub namespace_from_resource: bool,
    /// `None`: one dimension set of every point attribute (and the resource attributes
    /// of `resource_to_dimensions`), at most 30 of them.
    #[serde(default)]
    pub dimensions: Option<Vec<Vec<String>>>,
    #[serde(default = "default_resource_dims")]
    pub resource_to_dimensions: Vec<String>,
    #[serde(default = "default_resolution")]
    pub storage_resolution: u8,
    #[serde(default)]
    pub drop_unmatched: bool,
    #[serde(default)]
    pub metrics: Vec<Declaration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    #[serde(rename = "match")]
    pub pattern: String,
    #[serde(default)]
    pub rename: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub dimensions: Option<Vec<Vec<String>>>,
    #[serde(default)]
    pub unit: Option<String>,
    /// Only points whose attributes have these values.
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
    /// `value × scale + offset` (a unit change, or `1 − up` for "down").
    #[serde(default)]
    pub scale: Option<f64>,
    #[serde(default)]
    pub offset: Option<f64>,
    #[serde(default)]
    pub drop: bool,
}

impl Declaration {
    fn matches(&self, name: &str, attrs: &[KeyValue]) -> bool {
        let named = match self.pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => self.pattern == name,
        };
        named
            && self.attributes.iter().all(|(k, v)| {
                attrs
                    .iter()
                    .any(|kv| &kv.key == k && kv.value.as_ref().map(value_text).as_ref() == Some(v))
            })
    }

    fn transform(&self, v: Value) -> Value {
        let (a, b) = (self.scale.unwrap_or(1.0), self.offset.unwrap_or(0.0));
        if a == 1.0 && b == 0.0 {
            return v;
        }
        match v {
            Value::One(x) => Value::One(x * a + b),
            Value::Stats {
                count,
                sum,
                min,
                max,
            } => {
                let (lo, hi) = if a < 0.0 { (max, min) } else { (min, max) };
                Value::Stats {
                    count,
                    sum: sum * a + b * count,
                    min: lo * a + b,
                    max: hi * a + b,
                }
            }
        }
    }
}

fn yes() -> bool {
    true
}
fn default_namespace() -> String {
    "tradewatch".into()
}
fn default_resource_dims() -> Vec<String> {
    vec!["service.name".into()]
}
fn default_resolution() -> u8 {
    60
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            namespace: default_namespace(),
            namespace_from_resource: true,
            dimensions: None,
            resource_to_dimensions: default_resource_dims(),
            storage_resolution: 60,
            drop_unmatched: false,
            metrics: Vec::new(),
        }
    }
}

/// A namespace CloudWatch accepts: 1 to 255 characters, not starting with `AWS/`.
pub fn namespace_ok(ns: &str) -> Result<(), String> {
    if ns.is_empty() || ns.len() > 255 {
        return Err(format!("namespace {ns:?} must be 1 to 255 characters"));
    }
    if ns.starts_with("AWS/") {
        return Err(format!(
            "namespace {ns:?} starts with AWS/, which CloudWatch reserves for AWS services"
        ));
    }
    if ns.chars().any(|c| c.is_control()) {
        return Err(format!("namespace {ns:?} holds a control character"));
    }
    Ok(())
}

fn dimension_sets_ok(sets: &[Vec<String>]) -> Result<(), String> {
    for set in sets {
        if set.len() > MAX_DIMENSIONS {
            return Err(format!(
                "a dimension set has {} keys; CloudWatch allows at most {MAX_DIMENSIONS}",
                set.len()
            ));
        }
        for k in set {
            if k.is_empty() || k.len() > 255 || k.starts_with(':') {
                return Err(format!(
                    "dimension name {k:?} must be 1 to 255 characters and not start with ':'"
                ));
            }
        }
    }
    Ok(())
}

impl Shape {
    /// Checks the settings; errors are located at the offending key of the exporter `id`.
    pub fn check(&self, src: &Source, id: &ComponentId) -> Result<(), ConfigError> {
        let err = |keys: &[&str], m: String| src.component_error(Kind::Exporter, id, keys, m);
        namespace_ok(&self.namespace).map_err(|m| err(&["namespace"], m))?;
        if let Some(sets) = &self.dimensions {
            dimension_sets_ok(sets).map_err(|m| err(&["dimensions"], m))?;
        }
        if !matches!(self.storage_resolution, 1 | 60) {
            return Err(err(
                &["storage_resolution"],
                format!(
                    "storage_resolution is {}: CloudWatch takes 1 (high resolution) or 60",
                    self.storage_resolution
                ),
            ));
        }
        for (i, d) in self.metrics.iter().enumerate() {
            // Array elements have no key path: the error points at `metrics` and names
            // the element.
            let at = |key: &str, m: String| {
                src.component_error(
                    Kind::Exporter,
                    id,
                    &["metrics"],
                    format!("metrics[{i}].{key}: {m}"),
                )
            };
            if d.pattern.is_empty() || d.pattern[..d.pattern.len() - 1].contains('*') {
                return Err(at(
                    "match",
                    format!(
                        "match {:?}: write a metric name, or a prefix ending in '*'",
                        d.pattern
                    ),
                ));
            }
            if let Some(ns) = &d.namespace {
                namespace_ok(ns).map_err(|m| at("namespace", m))?;
            }
            if let Some(sets) = &d.dimensions {
                dimension_sets_ok(sets).map_err(|m| at("dimensions", m))?;
            }
            if let Some(u) = &d.unit {
                if !UNITS.contains(&u.as_str()) {
                    return Err(at(
                        "unit",
                        format!("unit {u:?} is not a CloudWatch unit ({})", UNITS.join(", ")),
                    ));
                }
            }
            for (key, v) in [("scale", d.scale), ("offset", d.offset)] {
                if v.is_some_and(|v| !v.is_finite() || (key == "scale" && v == 0.0)) {
                    return Err(at(
                        key,
                        format!("{key} must be a finite number (scale not 0)"),
                    ));
                }
            }
            if let Some(r) = &d.rename {
                if r.is_empty() || r.len() > 255 {
                    return Err(at("rename", "a metric name is 1 to 255 characters".into()));
                }
            }
        }
        Ok(())
    }
}

/// Reads a table that holds both `Own`'s keys and the shared [`Shape`] keys: each is
/// read on its own (serde's `flatten` would lose the file positions of errors), and a
/// key neither knows is refused with its position.
pub fn own_and_shape<Own: serde::de::DeserializeOwned>(
    src: &Source,
    id: &ComponentId,
    own_keys: &[&str],
) -> Result<(Own, Shape), ConfigError> {
    let keys: BTreeMap<String, serde::de::IgnoredAny> = component_config(src, Kind::Exporter, id)?;
    for k in keys.keys() {
        if !own_keys.contains(&k.as_str()) && !SHAPE_KEYS.contains(&k.as_str()) {
            let mut known: Vec<&str> = own_keys.iter().chain(SHAPE_KEYS).copied().collect();
            known.sort_unstable();
            return Err(src.component_error(
                Kind::Exporter,
                id,
                &[k],
                format!("unknown key {k:?} (known keys: {})", known.join(", ")),
            ));
        }
    }
    let own: Own = component_config(src, Kind::Exporter, id)?;
    let shape: Shape = component_config(src, Kind::Exporter, id)?;
    shape.check(src, id)?;
    Ok((own, shape))
}

/// Counters of the conversion, shared by both CloudWatch exporters.
pub struct Counters {
    pub non_finite: Counter,
    pub out_of_window: Counter,
    pub baselines: Counter,
    pub no_dimensions: Counter,
    pub dropped: Counter,
    pub dimensions_capped: Counter,
    pub unsupported: Counter,
    pub oversized: Counter,
    pub conflicts: Counter,
}

impl Counters {
    pub fn new(h: &crate::service::health::ComponentHealth) -> Counters {
        Counters {
            non_finite: h.counter("non_finite_points", "NaN or infinite values, which CloudWatch refuses (dropped).", &[]),
            out_of_window: h.counter("out_of_window_points", "Points older than two weeks or more than two hours ahead (dropped).", &[]),
            baselines: h.counter("baseline_points", "Cumulative points held as the baseline of a delta (no start time, or older than the last point).", &[]),
            no_dimensions: h.counter("undimensioned_points", "Points lacking an attribute every declared dimension set needs (dropped).", &[]),
            dropped: h.counter("declined_points", "Points dropped by a metric declaration or drop_unmatched.", &[]),
            dimensions_capped: h.counter("dimensions_capped_points", "Points with more than 30 attributes whose default dimension set was cut to 30 (the rest stay members).", &[]),
            unsupported: h.counter("unconverted_points", "Exponential histograms (not converted).", &[]),
            oversized: h.counter("oversized_points", "Values that fit no event or request even alone (dropped).", &[]),
            conflicts: h.counter("name_conflict_points", "Metrics named like one of their dimensions (dropped).", &[]),
        }
    }

    pub fn add(&self, c: &Converted) {
        self.non_finite.inc_by(c.non_finite);
        self.out_of_window.inc_by(c.out_of_window);
        self.baselines.inc_by(c.baselines);
        self.no_dimensions.inc_by(c.no_dimensions);
        self.dropped.inc_by(c.dropped);
        self.dimensions_capped.inc_by(c.dimensions_capped);
        self.unsupported.inc_by(c.unsupported);
    }
}

/// The sending settings of a CloudWatch exporter: one request at a time unless
/// `sending_queue` says otherwise (cumulative sums become deltas in arrival order), and an
/// export bounded by [`CALLS_PER_EXPORT_TIMEOUT`] × the per-call `timeout` (a payload split
/// into several calls must not be cut short after AWS accepted some of them).
pub fn sending_settings(
    queue: &Option<crate::pipeline::sending::QueueConfig>,
    retry: &Option<crate::pipeline::sending::RetryConfig>,
    timeout: crate::config::HumanDuration,
) -> crate::pipeline::sending::SendingSettings {
    let mut q = queue.clone().unwrap_or_default();
    if queue.is_none() {
        q.num_consumers = 1;
    }
    crate::pipeline::sending::SendingSettings {
        queue: q,
        retry: retry.clone().unwrap_or_default(),
        timeout: timeout.get() * CALLS_PER_EXPORT_TIMEOUT,
    }
}

/// The samples of a metrics payload (none for another signal), with the conversion's
/// counts added to `counters`.
pub fn samples_of(
    payload: &Payload,
    shape: &Shape,
    state: &Mutex<DeltaState>,
    counters: &Counters,
) -> Result<Vec<Sample>, crate::component::ExportError> {
    let req = match payload.decoded() {
        Ok(crate::pipeline::data::Decoded::Metrics(req)) => req,
        Ok(_) => return Ok(Vec::new()),
        Err(e) => {
            return Err(crate::component::ExportError::permanent(format!(
                "undecodable metrics: {e}"
            )))
        }
    };
    let mut samples = Vec::new();
    let converted = {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        convert(&req, shape, &mut state, &mut samples)
    };
    counters.add(&converted);
    Ok(samples)
}

/// What one sample carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    One(f64),
    /// A histogram's (or summary's) interval: count, sum, min and max.
    Stats {
        count: f64,
        sum: f64,
        min: f64,
        max: f64,
    },
}

/// One converted point: what CloudWatch will store, before it is laid out as EMF or a
/// `PutMetricData` datum.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub namespace: Arc<str>,
    pub name: String,
    pub unit: &'static str,
    pub resolution: u8,
    /// The dimension sets, as keys into `members`.
    pub sets: Arc<Vec<Vec<String>>>,
    /// Every attribute of the point (and the resource's offered ones), sorted by key:
    /// the dimensions' values and, for EMF, extra members for Logs Insights.
    pub members: Arc<Vec<(String, String)>>,
    pub time_ms: i64,
    pub value: Value,
}

/// Counts from one conversion.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Converted {
    pub points: u64,
    /// NaN or infinite values (CloudWatch refuses them).
    pub non_finite: u64,
    /// Older than two weeks or more than two hours ahead.
    pub out_of_window: u64,
    /// Cumulative points held as a baseline (no start time) or older than the last one.
    pub baselines: u64,
    /// Points no dimension set fits (a declared set names an attribute they lack).
    pub no_dimensions: u64,
    /// Dropped by a declaration, or unmatched with `drop_unmatched`.
    pub dropped: u64,
    /// Default dimension sets cut to 30 keys (the rest stay members, not dimensions).
    pub dimensions_capped: u64,
    /// Exponential histograms (not converted).
    pub unsupported: u64,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    start: u64,
    time: u64,
    /// Sum value, or histogram count.
    a: f64,
    /// Histogram sum.
    b: f64,
    seen: std::time::Instant,
}

/// The last value of every cumulative series, for deltas.
#[derive(Default)]
pub struct DeltaState {
    series: HashMap<u64, Last>,
    last_sweep: Option<std::time::Instant>,
}

impl DeltaState {
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    fn sweep(&mut self, now: std::time::Instant) {
        let due = self
            .last_sweep
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(60));
        if due || self.series.len() >= MAX_TRACKED_SERIES {
            self.last_sweep = Some(now);
            self.series
                .retain(|_, l| now.duration_since(l.seen) < SERIES_TTL);
            if self.series.len() >= MAX_TRACKED_SERIES {
                // Still full of live series: forget the oldest half rather than grow.
                let mut ages: Vec<_> = self.series.values().map(|l| l.seen).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                self.series.retain(|_, l| l.seen > cut);
            }
        }
    }

    /// The increase of a cumulative series since its last point: `(a, b)` deltas, or
    /// `None` when the point only sets the baseline (or is older than the last one).
    fn delta(&mut self, key: u64, start: u64, time: u64, a: f64, b: f64) -> Option<(f64, f64)> {
        let now = std::time::Instant::now();
        let entry = self.series.get(&key).copied();
        let out = match entry {
            None if start > 0 && start <= time => Some((a, b)),
            None => None,
            Some(l) if time < l.time || (time == l.time && start == l.start) => return None,
            Some(l) if start > l.start || a < l.a => Some((a, b)),
            Some(l) => Some((a - l.a, b - l.b)),
        };
        if entry.is_none() {
            self.sweep(now);
        }
        self.series.insert(
            key,
            Last {
                start,
                time,
                a,
                b,
                seen: now,
            },
        );
        out
    }
}

fn hash_attrs(h: &mut impl std::hash::Hasher, attrs: &[KeyValue]) {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    use std::hash::Hash;
    for kv in attrs {
        kv.key.hash(h);
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(V::StringValue(s)) => (0u8, s).hash(h),
            Some(V::IntValue(i)) => (1u8, i).hash(h),
            Some(V::DoubleValue(d)) => (2u8, d.to_bits()).hash(h),
            Some(V::BoolValue(b)) => (3u8, b).hash(h),
            Some(_) => (4u8, kv.value.as_ref().map(value_text)).hash(h),
            None => 5u8.hash(h),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn attr_text(kv: &KeyValue) -> String {
    kv.value.as_ref().map(value_text).unwrap_or_default()
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut i = max;
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        s.truncate(i);
    }
    s
}

/// Converts every metric point of `req` into samples, in order. `state` holds the last
/// value of cumulative series across calls.
pub fn convert(
    req: &ExportMetricsServiceRequest,
    shape: &Shape,
    state: &mut DeltaState,
    out: &mut Vec<Sample>,
) -> Converted {
    let mut c = Converted::default();
    let now = now_ms();
    let oldest = now - MAX_AGE.as_millis() as i64;
    let newest = now + MAX_AHEAD.as_millis() as i64;
    let default_ns: Arc<str> = Arc::from(shape.namespace.as_str());
    let default_sets: Option<Arc<Vec<Vec<String>>>> = shape.dimensions.clone().map(Arc::new);
    let mut ns_cache: HashMap<String, Arc<str>> = HashMap::new();
    let mut decl_sets: HashMap<usize, Arc<Vec<Vec<String>>>> = HashMap::new();
    let mut members_cache: HashMap<u64, Arc<Vec<(String, String)>>> = HashMap::new();
    let mut default_sets_cache: HashMap<usize, Arc<Vec<Vec<String>>>> = HashMap::new();
    let mut last_resource: *const () = std::ptr::null();
    let mut resource_members: Vec<(String, String)> = Vec::new();
    let mut resource_ns = default_ns.clone();
    let mut resource_hash = 0u64;
    for_each_metric_point(req, |m, p| {
        c.points += 1;
        let res_ptr = m
            .resource
            .map_or(std::ptr::null(), |r| r as *const _ as *const ());
        if res_ptr != last_resource {
            last_resource = res_ptr;
            let attrs = m.resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
            resource_members = shape
                .resource_to_dimensions
                .iter()
                .filter_map(|k| attrs.iter().find(|kv| &kv.key == k))
                .map(|kv| (kv.key.clone(), attr_text(kv)))
                .filter(|(_, v)| !v.is_empty())
                .collect();
            resource_ns = default_ns.clone();
            if shape.namespace_from_resource {
                if let Some(ns) = crate::otlp::get_str(attrs, "service.namespace") {
                    if namespace_ok(ns).is_ok() {
                        resource_ns = ns_cache
                            .entry(ns.to_string())
                            .or_insert_with(|| Arc::from(ns))
                            .clone();
                    }
                }
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            hash_attrs(&mut h, attrs);
            resource_hash = std::hash::Hasher::finish(&h);
        }
        let metric = m.metric;
        // Every declaration that matches gives the point a form of its own (one metric
        // can feed several CloudWatch metrics); none: the default form.
        let decls: Vec<(usize, &Declaration)> = shape
            .metrics
            .iter()
            .enumerate()
            .filter(|(_, d)| d.matches(&metric.name, p.attributes()))
            .collect();
        if decls.iter().any(|(_, d)| d.drop) || (decls.is_empty() && shape.drop_unmatched) {
            c.dropped += 1;
            return;
        }
        // Values.
        let (unit, scale) = cloudwatch_unit(&metric.unit);
        // The point's (resource, attributes), hashed once: it keys the shared members, and
        // with the metric's name the cumulative series.
        let attrs_key = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&resource_hash, &mut h);
            hash_attrs(&mut h, p.attributes());
            std::hash::Hasher::finish(&h)
        };
        let series_key = || {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            attrs_key.hash(&mut h);
            metric.name.hash(&mut h);
            h.finish()
        };
        let time = p.time_unix_nano();
        let value: Value = match (m.kind, p) {
            (MetricKind::Gauge, _)
            | (
                MetricKind::Sum {
                    monotonic: false, ..
                },
                _,
            ) => match p.value() {
                Some(v) => Value::One(v * scale),
                None => return,
            },
            (MetricKind::Sum { temporality, .. }, _) => {
                let Some(v) = p.value() else { return };
                if !v.is_finite() {
                    c.non_finite += 1;
                    return;
                }
                if temporality == 1 {
                    Value::One(v * scale)
                } else {
                    let PointRef::Number(n) = p else { return };
                    match state.delta(series_key(), n.start_time_unix_nano, time, v, 0.0) {
                        Some((d, _)) => Value::One(d * scale),
                        None => {
                            c.baselines += 1;
                            return;
                        }
                    }
                }
            }
            (MetricKind::Histogram { temporality }, PointRef::Histogram(h)) => {
                let sum = h.sum.unwrap_or(f64::NAN);
                let (count, sum, exact) = if temporality == 1 {
                    (h.count as f64, sum, true)
                } else {
                    match state.delta(
                        series_key(),
                        h.start_time_unix_nano,
                        time,
                        h.count as f64,
                        sum,
                    ) {
                        Some((dc, ds)) => (dc, ds, dc == h.count as f64),
                        None => {
                            c.baselines += 1;
                            return;
                        }
                    }
                };
                if count <= 0.0 {
                    return;
                }
                // min/max of the interval: exact for deltas (and a first interval),
                // otherwise the bounds of the populated buckets.
                let (lo, hi) = bucket_range(&h.bucket_counts, &h.explicit_bounds);
                let (min, max) = match (exact, h.min, h.max) {
                    (true, Some(a), Some(b)) => (a, b),
                    _ => (lo.unwrap_or(sum / count), hi.unwrap_or(sum / count)),
                };
                Value::Stats {
                    count,
                    sum: sum * scale,
                    min: min * scale,
                    max: max * scale,
                }
            }
            (MetricKind::Summary, PointRef::Summary(s)) => {
                if s.count == 0 {
                    return;
                }
                let q = |want: f64| {
                    s.quantile_values
                        .iter()
                        .find(|q| q.quantile == want)
                        .map(|q| q.value)
                };
                let avg = s.sum / s.count as f64;
                Value::Stats {
                    count: s.count as f64,
                    sum: s.sum * scale,
                    min: q(0.0).unwrap_or(avg) * scale,
                    max: q(1.0).unwrap_or(avg) * scale,
                }
            }
            _ => {
                c.unsupported += 1;
                return;
            }
        };
        // Time.
        let time_ms = if time == 0 {
            now
        } else {
            (time / 1_000_000) as i64
        };
        if time_ms < oldest || time_ms > newest {
            c.out_of_window += 1;
            return;
        }
        // Dimensions and members: one shared list per (resource, attribute set), so that
        // the points of one series share it (EMF groups them by it).
        let members = members_cache
            .entry(attrs_key)
            .or_insert_with(|| {
                let mut members: Vec<(String, String)> = resource_members.clone();
                for kv in p.attributes().iter().filter(|kv| kv.key != "_aws") {
                    let v = cut(attr_text(kv), MAX_DIMENSION_VALUE);
                    match members.iter_mut().find(|(k, _)| *k == kv.key) {
                        Some(slot) => slot.1 = v,
                        None => members.push((kv.key.clone(), v)),
                    }
                }
                members.sort_by(|a, b| a.0.cmp(&b.0));
                Arc::new(members)
            })
            .clone();
        let finite = match value {
            Value::One(x) => x.is_finite(),
            Value::Stats {
                count,
                sum,
                min,
                max,
            } => [count, sum, min, max].iter().all(|x| x.is_finite()),
        };
        if !finite {
            c.non_finite += 1;
            return;
        }
        // Each matching declaration's form, or the default form when none matches.
        for k in 0..decls.len().max(1) {
            let decl = decls.get(k).copied();
            let declared = decl.and_then(|(i, d)| d.dimensions.as_ref().map(|s| (i, s)));
            let sets: Arc<Vec<Vec<String>>> = match (declared, &default_sets) {
                (Some((i, s)), _) => decl_sets
                    .entry(i)
                    .or_insert_with(|| Arc::new(s.clone()))
                    .clone(),
                (None, Some(s)) => s.clone(),
                (None, None) => {
                    let keys = || members.iter().filter(|(_, v)| !v.is_empty());
                    if keys().count() > MAX_DIMENSIONS {
                        c.dimensions_capped += 1;
                    }
                    default_sets_cache
                        .entry(Arc::as_ptr(&members) as usize)
                        .or_insert_with(|| {
                            Arc::new(vec![keys()
                                .take(MAX_DIMENSIONS)
                                .map(|(k, _)| k.clone())
                                .collect()])
                        })
                        .clone()
                }
            };
            // Only the sets whose every key the point has (with a value).
            let has = |k: &String| members.iter().any(|(mk, v)| mk == k && !v.is_empty());
            let sets = if sets.iter().all(|s| s.iter().all(has)) {
                sets
            } else {
                let fit: Vec<Vec<String>> =
                    sets.iter().filter(|s| s.iter().all(has)).cloned().collect();
                if fit.is_empty() {
                    c.no_dimensions += 1;
                    continue;
                }
                Arc::new(fit)
            };
            let namespace = match decl.and_then(|(_, d)| d.namespace.as_deref()) {
                Some(ns) => ns_cache
                    .entry(ns.to_string())
                    .or_insert_with(|| Arc::from(ns))
                    .clone(),
                None => resource_ns.clone(),
            };
            let (unit, value) = match decl {
                Some((_, d)) => (
                    d.unit
                        .as_deref()
                        .and_then(|u| UNITS.iter().find(|x| **x == u).copied())
                        .unwrap_or(unit),
                    d.transform(value),
                ),
                None => (unit, value),
            };
            out.push(Sample {
                namespace,
                name: decl
                    .and_then(|(_, d)| d.rename.clone())
                    .unwrap_or_else(|| metric.name.clone()),
                unit,
                resolution: shape.storage_resolution,
                sets,
                members: members.clone(),
                time_ms,
                value,
            });
        }
    });
    c
}

/// A failed AWS call as an export result: throttling, server errors, timeouts and
/// connection failures are retried; what the service refused (bad parameters, access
/// denied, unknown credentials) is permanent. The message has the service's error code
/// and text, never credentials.
#[cfg(feature = "aws")]
pub fn classify_sdk<E>(
    op: &str,
    e: &aws_sdk_cloudwatchlogs::error::SdkError<
        E,
        aws_sdk_cloudwatchlogs::config::http::HttpResponse,
    >,
) -> crate::component::ExportError
where
    E: aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    // The SDK crates share these types (aws-smithy-*); any client's errors fit.
    use crate::component::ExportError;
    use aws_sdk_cloudwatchlogs::error::{DisplayErrorContext, SdkError};
    match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("unknown error");
            let text = err.message().unwrap_or("");
            let message = format!("{op} refused: {code}: {text}");
            let retry = code.contains("Throttl")
                || matches!(
                    code,
                    "RequestThrottled"
                        | "TooManyRequestsException"
                        | "LimitExceeded"
                        | "InternalFailure"
                        | "InternalError"
                        | "InternalServiceError"
                        | "InternalServiceFault"
                        | "ServiceUnavailable"
                        | "ServiceUnavailableException"
                        | "RequestTimeout"
                        | "RequestTimeoutException"
                );
            let status = se.raw().status().as_u16();
            if retry || status >= 500 || status == 429 {
                ExportError::retryable(message)
            } else {
                ExportError::permanent(message)
            }
        }
        SdkError::TimeoutError(_) => ExportError::retryable(format!("{op} timed out")),
        SdkError::DispatchFailure(d) if d.is_user() => {
            ExportError::permanent(format!("{op}: {}", DisplayErrorContext(e)))
        }
        // Connection failures, credentials not (yet) available, unreadable answers.
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ExportError::retryable(format!("{op}: {}", DisplayErrorContext(e)))
        }
        _ => ExportError::permanent(format!("{op}: {}", DisplayErrorContext(e))),
    }
}

/// The lowest and highest bound of the populated buckets (finite ones only).
fn bucket_range(counts: &[u64], bounds: &[f64]) -> (Option<f64>, Option<f64>) {
    let populated: Vec<usize> = counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, _)| i)
        .collect();
    let (Some(&first), Some(&last)) = (populated.first(), populated.last()) else {
        return (None, None);
    };
    // Bucket i holds (bounds[i-1], bounds[i]].
    let lo = if first == 0 {
        bounds.first().copied()
    } else {
        bounds.get(first - 1).copied()
    };
    let hi = bounds.get(last).copied().or(bounds.last().copied());
    (lo, hi)
}

/// Converted data of payloads in retry, so that each payload is converted once (the
/// cumulative state advances once) and a retry resumes after the parts already delivered.
///
/// Entries are keyed by the payload's address and hold a `Weak` to it, which keeps the
/// allocation (not the data) alive: an address cannot be reused by a new payload while
/// its entry exists, so a hit is always the same payload.
pub struct Prepared<T> {
    entries: Mutex<Vec<Entry<T>>>,
}

struct Entry<T> {
    payload: Weak<Payload>,
    prepared: Arc<T>,
    done: usize,
}

impl<T> Default for Prepared<T> {
    fn default() -> Self {
        Prepared {
            entries: Mutex::new(Vec::new()),
        }
    }
}

impl<T> Prepared<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry<T>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The prepared form of `payload` and how many of its parts were delivered,
    /// preparing it with `prepare` the first time; a preparation that fails keeps nothing.
    pub fn get(
        &self,
        payload: &Arc<Payload>,
        prepare: impl FnOnce() -> Result<T, crate::component::ExportError>,
    ) -> Result<(Arc<T>, usize), crate::component::ExportError> {
        let weak = Arc::downgrade(payload);
        if let Some(e) = self.lock().iter().find(|e| Weak::ptr_eq(&e.payload, &weak)) {
            return Ok((e.prepared.clone(), e.done));
        }
        let prepared = Arc::new(prepare()?);
        let mut entries = self.lock();
        // Payloads given up (or dropped from a full queue) are gone: forget them.
        entries.retain(|e| e.payload.strong_count() > 0);
        entries.push(Entry {
            payload: weak,
            prepared: prepared.clone(),
            done: 0,
        });
        Ok((prepared, 0))
    }

    /// Records that the first `done` parts of `payload` were delivered.
    pub fn advance(&self, payload: &Arc<Payload>, done: usize) {
        let weak = Arc::downgrade(payload);
        if let Some(e) = self
            .lock()
            .iter_mut()
            .find(|e| Weak::ptr_eq(&e.payload, &weak))
        {
            e.done = done;
        }
    }

    /// Forgets `payload` (delivered, or refused for good).
    pub fn finish(&self, payload: &Arc<Payload>) {
        let weak = Arc::downgrade(payload);
        self.lock().retain(|e| !Weak::ptr_eq(&e.payload, &weak));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests;
