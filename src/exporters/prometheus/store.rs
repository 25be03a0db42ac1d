//! The series a scrape shows: OTLP points converted to Prometheus families, kept until
//! they expire, rendered as Prometheus text or OpenMetrics.
//!
//! Each family has its own lock; a scrape copies a family's samples under it (a clone of
//! `Arc`ed label strings and numbers) and renders outside it, so ingestion waits at most
//! for one family's copy, never for a whole scrape.

use super::names::{base_factor, label_name, metric_name, unit_suffix, with_suffix};
use crate::otlp::{for_each_metric_point, value_text, MetricKind, PointRef};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::exemplar;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
            Type::Summary => "summary",
        }
    }
}

/// The settings that shape names and labels.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    pub namespace: String,
    pub const_labels: Vec<(String, String)>,
    /// Resource attributes copied onto every series (besides `target_info`).
    pub resource_labels: Vec<String>,
    pub max_series_per_metric: usize,
}

#[derive(Debug, Clone)]
struct Exemplar {
    labels: String,
    value: f64,
    time: f64,
}

#[derive(Debug, Clone)]
enum Value {
    Number(f64),
    Histogram {
        bounds: Vec<f64>,
        /// Per bucket (not cumulative), `bounds.len() + 1` of them.
        counts: Vec<u64>,
        sum: f64,
        count: u64,
        exemplars: Vec<Option<Exemplar>>,
    },
    Summary {
        quantiles: Vec<(f64, f64)>,
        sum: f64,
        count: u64,
    },
}

#[derive(Debug)]
struct Series {
    /// `{a="b",c="d"}` (or empty), rendered once.
    labels: Arc<str>,
    value: Value,
    exemplar: Option<Exemplar>,
    updated: Instant,
    /// Delta accumulation: the end time of the last point added.
    last_time: u64,
}

#[derive(Debug)]
struct Family {
    kind: Type,
    help: String,
    series: HashMap<Vec<(String, String)>, Series>,
}

/// What a conversion did that someone should know about.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub points: u64,
    /// New series refused by the per-metric limit.
    pub refused_series: u64,
    /// Points whose metric name is already used with another type.
    pub conflicts: u64,
    /// Exponential histograms (no Prometheus equivalent here).
    pub unsupported: u64,
    /// Delta points older than what was already added.
    pub out_of_order: u64,
}

#[derive(Default)]
pub struct Store {
    families: RwLock<BTreeMap<String, Arc<Mutex<Family>>>>,
}

fn text(v: &Option<AnyValue>) -> String {
    v.as_ref().map(value_text).unwrap_or_default()
}

/// Sanitised label pairs; colliding names are joined with `;` as the spec says.
fn labels_of(kvs: &[KeyValue], out: &mut Vec<(String, String)>) {
    for kv in kvs {
        let name = label_name(&kv.key);
        let value = text(&kv.value);
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push(';');
                v.push_str(&value);
            }
            None => out.push((name, value)),
        }
    }
}

fn escape_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn render_labels(labels: &[(String, String)]) -> Arc<str> {
    if labels.is_empty() {
        return Arc::from("");
    }
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        escape_value(v, &mut s);
        s.push('"');
    }
    s.push('}');
    Arc::from(s)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn exemplar_of(e: &opentelemetry_proto::tonic::metrics::v1::Exemplar) -> Option<Exemplar> {
    let value = match e.value? {
        exemplar::Value::AsDouble(d) => d,
        exemplar::Value::AsInt(i) => i as f64,
    };
    let mut labels = Vec::new();
    if e.trace_id.len() == 16 {
        labels.push(("trace_id".to_string(), hex(&e.trace_id)));
    }
    if e.span_id.len() == 8 {
        labels.push(("span_id".to_string(), hex(&e.span_id)));
    }
    if labels.is_empty() {
        return None;
    }
    Some(Exemplar {
        labels: render_labels(&labels).to_string(),
        value,
        time: e.time_unix_nano as f64 / 1e9,
    })
}

impl Store {
    fn family(&self, name: &str, kind: Type, help: &str) -> Arc<Mutex<Family>> {
        if let Some(f) = self
            .families
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return f.clone();
        }
        let mut w = self.families.write().unwrap_or_else(|e| e.into_inner());
        w.entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Family {
                    kind,
                    help: help.to_owned(),
                    series: HashMap::new(),
                }))
            })
            .clone()
    }

    /// Converts and keeps every point of `req`.
    pub fn ingest(&self, req: &ExportMetricsServiceRequest, shape: &Shape) -> Outcome {
        let now = Instant::now();
        let mut out = Outcome::default();
        let mut target_infos: Vec<Vec<(String, String)>> = Vec::new();
        let mut last_resource: *const () = std::ptr::null();
        let mut resource_labels: Vec<(String, String)> = Vec::new();
        for_each_metric_point(req, |m, p| {
            let res_ptr = m
                .resource
                .map_or(std::ptr::null(), |r| r as *const _ as *const ());
            if res_ptr != last_resource || resource_labels.is_empty() {
                last_resource = res_ptr;
                resource_labels.clear();
                let attrs = m.resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
                let get = |k: &str| {
                    attrs
                        .iter()
                        .find(|kv| kv.key == k)
                        .map(|kv| text(&kv.value))
                };
                let job = match (get("service.namespace"), get("service.name")) {
                    (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
                    (None, Some(n)) => Some(n),
                    _ => None,
                };
                let instance = get("service.instance.id");
                let mut info = Vec::new();
                if let Some(j) = &job {
                    info.push(("job".to_string(), j.clone()));
                    resource_labels.push(("job".to_string(), j.clone()));
                }
                if let Some(i) = &instance {
                    info.push(("instance".to_string(), i.clone()));
                    resource_labels.push(("instance".to_string(), i.clone()));
                }
                let rest: Vec<KeyValue> = attrs
                    .iter()
                    .filter(|kv| {
                        !matches!(
                            kv.key.as_str(),
                            "service.name" | "service.namespace" | "service.instance.id"
                        )
                    })
                    .cloned()
                    .collect();
                labels_of(&rest, &mut info);
                for want in &shape.resource_labels {
                    if let Some(kv) = attrs.iter().find(|kv| &kv.key == want) {
                        labels_of(std::slice::from_ref(kv), &mut resource_labels);
                    }
                }
                if !info.is_empty() && !target_infos.contains(&info) {
                    target_infos.push(info);
                }
            }
            out.points += 1;
            let metric = m.metric;
            let base = metric_name(&metric.name);
            if base.is_empty() {
                return;
            }
            let (kind, delta) = match m.kind {
                MetricKind::Gauge => (Type::Gauge, false),
                MetricKind::Sum {
                    temporality,
                    monotonic,
                } => (
                    if monotonic {
                        Type::Counter
                    } else {
                        Type::Gauge
                    },
                    temporality == 1,
                ),
                MetricKind::Histogram { temporality } => (Type::Histogram, temporality == 1),
                MetricKind::Summary => (Type::Summary, false),
                MetricKind::ExponentialHistogram { .. } => {
                    out.unsupported += 1;
                    return;
                }
            };
            let mut name = base;
            // Only a plain unit scales (`ms`, not `ms/s`).
            let factor = if metric.unit.contains('/') {
                1.0
            } else {
                base_factor(&metric.unit)
            };
            match unit_suffix(&metric.unit) {
                Some(u) => name = with_suffix(&name, &u),
                None if metric.unit.trim() == "1" && kind == Type::Gauge => {
                    name = with_suffix(&name, "ratio")
                }
                None => {}
            }
            if kind == Type::Counter {
                name = with_suffix(&name, "total");
            }
            if !shape.namespace.is_empty() {
                name = format!("{}_{name}", metric_name(&shape.namespace));
            }
            let help = if metric.description.is_empty() {
                metric.name.clone()
            } else {
                metric.description.clone()
            };
            let family = self.family(&name, kind, &help);
            let mut family = family.lock().unwrap_or_else(|e| e.into_inner());
            if family.kind != kind {
                out.conflicts += 1;
                return;
            }
            let mut labels = Vec::new();
            labels_of(p.attributes(), &mut labels);
            for (k, v) in resource_labels.iter().chain(&shape.const_labels) {
                if !labels.iter().any(|(n, _)| n == k) {
                    labels.push((k.clone(), v.clone()));
                }
            }
            if let Some(scope) = m.scope {
                if !scope.name.is_empty() {
                    labels.push(("otel_scope_name".into(), scope.name.clone()));
                }
                if !scope.version.is_empty() {
                    labels.push(("otel_scope_version".into(), scope.version.clone()));
                }
            }
            labels.sort();
            let limit = shape.max_series_per_metric;
            let len = family.series.len();
            let series = match family.series.get_mut(&labels) {
                Some(s) => s,
                None => {
                    if limit > 0 && len >= limit {
                        out.refused_series += 1;
                        return;
                    }
                    let rendered = render_labels(&labels);
                    family.series.entry(labels).or_insert(Series {
                        labels: rendered,
                        value: Value::Number(0.0),
                        exemplar: None,
                        updated: now,
                        last_time: 0,
                    })
                }
            };
            if !update(series, p, delta, factor) {
                out.out_of_order += 1;
                return;
            }
            series.updated = now;
        });
        if !target_infos.is_empty() {
            let family = self.family(
                "target_info",
                Type::Gauge,
                "Target metadata: the resource attributes of what sent the metrics",
            );
            let mut family = family.lock().unwrap_or_else(|e| e.into_inner());
            for mut info in target_infos {
                info.sort();
                let rendered = render_labels(&info);
                let s = family.series.entry(info).or_insert(Series {
                    labels: rendered,
                    value: Value::Number(1.0),
                    exemplar: None,
                    updated: now,
                    last_time: 0,
                });
                s.updated = now;
            }
        }
        out
    }

    /// Drops series not updated for `max_age`; families left empty go too.
    pub fn expire(&self, max_age: Duration) -> usize {
        let now = Instant::now();
        let mut removed = 0;
        let families: Vec<(String, Arc<Mutex<Family>>)> = self
            .families
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut empty = Vec::new();
        for (name, f) in families {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            let before = f.series.len();
            f.series
                .retain(|_, s| now.saturating_duration_since(s.updated) < max_age);
            removed += before - f.series.len();
            if f.series.is_empty() {
                empty.push(name);
            }
        }
        if !empty.is_empty() {
            let mut w = self.families.write().unwrap_or_else(|e| e.into_inner());
            for name in empty {
                let gone = w.get(&name).is_some_and(|f| {
                    f.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .series
                        .is_empty()
                });
                if gone {
                    w.remove(&name);
                }
            }
        }
        removed
    }

    pub fn series_count(&self) -> usize {
        self.families
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|f| f.lock().unwrap_or_else(|e| e.into_inner()).series.len())
            .sum()
    }

    /// The exposition: Prometheus text 0.0.4, or OpenMetrics 1.0 (with exemplars).
    pub fn render(&self, openmetrics: bool) -> String {
        let families: Vec<(String, Arc<Mutex<Family>>)> = self
            .families
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out = String::with_capacity(64 * 1024);
        for (name, f) in families {
            // Copy under the lock, render outside it.
            let (kind, help, mut samples) = {
                let f = f.lock().unwrap_or_else(|e| e.into_inner());
                let samples: Vec<(Arc<str>, Value, Option<Exemplar>)> = f
                    .series
                    .values()
                    .map(|s| (s.labels.clone(), s.value.clone(), s.exemplar.clone()))
                    .collect();
                (f.kind, f.help.clone(), samples)
            };
            if samples.is_empty() {
                continue;
            }
            samples.sort_by(|a, b| a.0.cmp(&b.0));
            let family_name = if openmetrics && kind == Type::Counter {
                name.strip_suffix("_total").unwrap_or(&name).to_owned()
            } else {
                name.clone()
            };
            let _ = writeln!(out, "# HELP {family_name} {}", escape_help(&help));
            let _ = writeln!(out, "# TYPE {family_name} {}", kind.as_str());
            for (labels, value, exemplar) in samples {
                match value {
                    Value::Number(v) => {
                        let _ = write!(out, "{name}{labels} {}", num(v));
                        if openmetrics && kind == Type::Counter {
                            if let Some(e) = exemplar {
                                let _ = write!(out, " # {} {} {}", e.labels, num(e.value), e.time);
                            }
                        }
                        out.push('\n');
                    }
                    Value::Histogram {
                        bounds,
                        counts,
                        sum,
                        count,
                        exemplars,
                    } => {
                        let mut cumulative = 0u64;
                        for (i, c) in counts.iter().enumerate() {
                            cumulative += c;
                            let le = bounds.get(i).map_or("+Inf".to_string(), |b| num(*b));
                            let _ = write!(
                                out,
                                "{name}_bucket{} {cumulative}",
                                with_label(&labels, "le", &le)
                            );
                            if openmetrics {
                                if let Some(Some(e)) = exemplars.get(i) {
                                    let _ =
                                        write!(out, " # {} {} {}", e.labels, num(e.value), e.time);
                                }
                            }
                            out.push('\n');
                        }
                        let _ = writeln!(out, "{name}_sum{labels} {}", num(sum));
                        let _ = writeln!(out, "{name}_count{labels} {count}");
                    }
                    Value::Summary {
                        quantiles,
                        sum,
                        count,
                    } => {
                        for (q, v) in quantiles {
                            let _ = writeln!(
                                out,
                                "{name}{} {}",
                                with_label(&labels, "quantile", &num(q)),
                                num(v)
                            );
                        }
                        let _ = writeln!(out, "{name}_sum{labels} {}", num(sum));
                        let _ = writeln!(out, "{name}_count{labels} {count}");
                    }
                }
            }
        }
        if openmetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

fn escape_help(h: &str) -> String {
    h.replace('\\', "\\\\").replace('\n', "\\n")
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// `{a="b"}` plus one more label (`le`, `quantile`).
fn with_label(labels: &str, k: &str, v: &str) -> String {
    if labels.is_empty() {
        format!("{{{k}=\"{v}\"}}")
    } else {
        format!("{},{k}=\"{v}\"}}", &labels[..labels.len() - 1])
    }
}

/// Applies one point to its series: cumulative points replace, delta points add (a delta
/// that starts before the last one ended is a restarted producer: the sum starts over,
/// which Prometheus sees as a counter reset). Returns false for a delta point already
/// covered.
fn update(s: &mut Series, p: PointRef<'_>, delta: bool, factor: f64) -> bool {
    match p {
        PointRef::Number(n) => {
            let Some(v) = p.value() else { return true };
            let v = v * factor;
            if delta {
                if n.time_unix_nano != 0 && n.time_unix_nano <= s.last_time {
                    return false;
                }
                let restarted = n.start_time_unix_nano != 0 && n.start_time_unix_nano < s.last_time;
                let base = match (&s.value, restarted) {
                    (Value::Number(old), false) => *old,
                    _ => 0.0,
                };
                s.value = Value::Number(base + v);
                s.last_time = n.time_unix_nano;
            } else {
                s.value = Value::Number(v);
            }
            if let Some(mut e) = n.exemplars.last().and_then(exemplar_of) {
                e.value *= factor;
                s.exemplar = Some(e);
            }
        }
        PointRef::Histogram(h) => {
            let mut exemplars: Vec<Option<Exemplar>> = vec![None; h.explicit_bounds.len() + 1];
            let bounds: Vec<f64> = h.explicit_bounds.iter().map(|b| b * factor).collect();
            for e in &h.exemplars {
                if let Some(mut x) = exemplar_of(e) {
                    x.value *= factor;
                    let i = bounds
                        .iter()
                        .position(|b| x.value <= *b)
                        .unwrap_or(bounds.len());
                    exemplars[i] = Some(x);
                }
            }
            let mut counts = h.bucket_counts.clone();
            counts.resize(h.explicit_bounds.len() + 1, 0);
            let sum = h.sum.unwrap_or(0.0) * factor;
            if delta {
                if h.time_unix_nano != 0 && h.time_unix_nano <= s.last_time {
                    return false;
                }
                let restarted = h.start_time_unix_nano != 0 && h.start_time_unix_nano < s.last_time;
                if let (
                    Value::Histogram {
                        bounds: old_bounds,
                        counts: old,
                        sum: old_sum,
                        count: old_count,
                        ..
                    },
                    false,
                ) = (&s.value, restarted)
                {
                    if *old_bounds == bounds {
                        let merged: Vec<u64> =
                            old.iter().zip(&counts).map(|(a, b)| a + b).collect();
                        s.value = Value::Histogram {
                            bounds,
                            counts: merged,
                            sum: old_sum + sum,
                            count: old_count + h.count,
                            exemplars,
                        };
                        s.last_time = h.time_unix_nano;
                        return true;
                    }
                }
                s.last_time = h.time_unix_nano;
            }
            s.value = Value::Histogram {
                bounds,
                counts,
                sum,
                count: h.count,
                exemplars,
            };
        }
        PointRef::Summary(q) => {
            s.value = Value::Summary {
                quantiles: q
                    .quantile_values
                    .iter()
                    .map(|v| (v.quantile, v.value))
                    .collect(),
                sum: q.sum,
                count: q.count,
            };
        }
        PointRef::ExponentialHistogram(_) => {}
    }
    true
}
