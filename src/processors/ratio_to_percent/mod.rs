//! `ratio_to_percent`: turns ratios (0.05) into percentages (5) for dashboards and
//! alert texts, e.g. Freqtrade's profit and drawdown ratios.
//!
//! ```toml
//! [processors.ratio_to_percent]
//! metrics = ["freqtrade.*.ratio", "freqtrade.winrate"]  # globs over metric names
//! attributes = ["profit_ratio"]                         # numeric point attributes, on any metric
//! rename = true                                         # default true
//! suffixes = { ".ratio" = ".pct", "_ratio" = "_pct" }   # the default renames
//! ```
//!
//! Globs (the `glob` crate's patterns): `*` is any run of characters, dots included,
//! `?` one character, `[abc]` / `[!abc]` a class; matching is case-sensitive.
//!
//! A metric whose name matches a glob has every value multiplied by 100 (gauge and sum
//! points, histogram sums, min, max and bucket bounds, summary sums and quantile values),
//! its name's suffix renamed (the longest configured suffix that matches), its unit set
//! to `%`, and the marker `tradewatch.converted = "ratio_to_percent"` added to its
//! `metadata`. A listed attribute key with an int or double value is multiplied by 100
//! on the points of every metric and renamed by the same suffixes; the keys converted
//! (old and new names) are recorded in the metric's metadata as
//! `tradewatch.converted.attributes` (a list of strings).
//!
//! **Converted once.** The markers live in `Metric.metadata`, which OTLP carries (gRPC,
//! HTTP protobuf and JSON), so data converted by one tradewatch and forwarded to another
//! that converts again is left alone there; the same holds for two instances in one
//! pipeline. A metric whose unit is already `%` but has no marker is a percentage
//! already and is left as it is. The markers do not survive a format without metric
//! metadata (Prometheus); re-importing from such a format relies on the `%` unit and
//! the renamed name alone.
//!
//! Exponential histograms cannot be rescaled exactly (their buckets are powers of a
//! base): a matching one is left unchanged, and its points are counted in
//! `tradewatch_processor_unconverted_points_total`.
//!
//! Requests that arrived encoded are first read at the wire level for a matching
//! metric name or the bytes of a listed attribute key; only those that may hold one
//! are decoded, and they go on decoded only when something was converted, otherwise
//! as their original bytes.

use crate::component::{BuildContext, BuildError, ComponentId, Kind, Signal};
use crate::component::{Processor, ProcessorConfig};
use crate::config::{component_config, quote_key, ConfigError, Source};
use crate::otlp::{get_attr, get_str, set_attr, PointMut};
use crate::pipeline::{Batch, Payload};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, Metric};
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use toml::Spanned;

mod prefilter;
#[cfg(test)]
mod tests;

/// Metadata key marking a metric whose values this processor converted.
pub const MARKER_KEY: &str = "tradewatch.converted";
/// The marker's value.
pub const MARKER_VALUE: &str = "ratio_to_percent";
/// Metadata key listing the attribute keys converted on a metric's points.
pub const ATTRIBUTES_MARKER_KEY: &str = "tradewatch.converted.attributes";

const FACTOR: f64 = 100.0;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    metrics: Option<Spanned<Vec<Spanned<String>>>>,
    attributes: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default = "yes")]
    rename: bool,
    suffixes: Option<Spanned<BTreeMap<String, String>>>,
}

fn yes() -> bool {
    true
}

/// What to convert, checked.
#[derive(Debug)]
struct Rules {
    metrics: Vec<glob::Pattern>,
    attributes: Vec<String>,
    /// `(from, to)`, longest `from` first, so that the most specific suffix wins; empty
    /// when `rename = false`.
    suffixes: Vec<(String, String)>,
}

impl Rules {
    fn matches(&self, name: &str) -> bool {
        self.metrics.iter().any(|p| p.matches(name))
    }

    fn renamed(&self, name: &str) -> Option<String> {
        self.suffixes.iter().find_map(|(from, to)| {
            name.strip_suffix(from.as_str())
                .map(|base| format!("{base}{to}"))
        })
    }
}

pub struct RatioToPercentConfig {
    rules: Arc<Rules>,
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ProcessorConfig>, ConfigError> {
    Ok(Arc::new(RatioToPercentConfig {
        rules: Arc::new(parse_rules(src, id)?),
    }))
}

fn parse_rules(src: &Source, id: &ComponentId) -> Result<Rules, ConfigError> {
    let raw: RawConfig = component_config(src, Kind::Processor, id)?;
    let key = |path: String| {
        format!(
            "{}.{}.{path}",
            Kind::Processor.table(),
            quote_key(id.as_str())
        )
    };
    if raw.metrics.is_none() && raw.attributes.is_none() {
        return Err(src.component_error(
            Kind::Processor,
            id,
            &[],
            "nothing to convert: list metric name globs in `metrics` or attribute keys in `attributes`"
                .into(),
        ));
    }
    let mut metrics = Vec::new();
    if let Some(list) = raw.metrics {
        let span = list.span();
        let list = list.into_inner();
        if list.is_empty() {
            return Err(src.error_span_key(
                span,
                key("metrics".into()),
                "metrics is empty: list metric name globs (e.g. \"freqtrade.*.ratio\") or leave the key out"
                    .into(),
            ));
        }
        for (i, g) in list.into_iter().enumerate() {
            let span = g.span();
            let g = g.into_inner();
            let err =
                |message| src.error_span_key(span.clone(), key(format!("metrics[{i}]")), message);
            if g.is_empty() {
                return Err(err(
                    "empty glob: name metrics, e.g. \"freqtrade.*.ratio\"".into()
                ));
            }
            let pattern = glob::Pattern::new(&g)
                .map_err(|e| err(format!("bad glob {g:?}: {} at character {}", e.msg, e.pos)))?;
            metrics.push(pattern);
        }
    }
    let mut attributes = Vec::new();
    if let Some(list) = raw.attributes {
        let span = list.span();
        let list = list.into_inner();
        if list.is_empty() {
            return Err(src.error_span_key(
                span,
                key("attributes".into()),
                "attributes is empty: list attribute keys (e.g. \"profit_ratio\") or leave the key out"
                    .into(),
            ));
        }
        for (i, a) in list.into_iter().enumerate() {
            if a.get_ref().is_empty() {
                return Err(src.error_span_key(
                    a.span(),
                    key(format!("attributes[{i}]")),
                    "empty attribute key".into(),
                ));
            }
            attributes.push(a.into_inner());
        }
    }
    let suffixes = match raw.suffixes {
        Some(s) if !raw.rename => {
            return Err(src.error_span_key(
                s.span(),
                key("suffixes".into()),
                "suffixes are renames, but rename = false: remove one of them".into(),
            ))
        }
        _ if !raw.rename => Vec::new(),
        None => vec![
            (".ratio".to_owned(), ".pct".to_owned()),
            ("_ratio".to_owned(), "_pct".to_owned()),
        ],
        Some(s) => {
            let span = s.span();
            let s = s.into_inner();
            if s.is_empty() {
                return Err(src.error_span_key(
                    span,
                    key("suffixes".into()),
                    "suffixes is empty: map suffixes to their replacement (e.g. { \".ratio\" = \".pct\" }) or set rename = false"
                        .into(),
                ));
            }
            if s.contains_key("") {
                return Err(src.error_span_key(
                    span,
                    key("suffixes".into()),
                    "an empty suffix would rename every metric: name the suffix to replace".into(),
                ));
            }
            let mut s: Vec<_> = s.into_iter().collect();
            s.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
            s
        }
    };
    Ok(Rules {
        metrics,
        attributes,
        suffixes,
    })
}

impl ProcessorConfig for RatioToPercentConfig {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Metrics]
    }

    fn build(&self, _signal: Signal, ctx: &BuildContext) -> Result<Box<dyn Processor>, BuildError> {
        Ok(Box::new(RatioToPercent {
            rules: self.rules.clone(),
            converted: ctx.health.counter(
                "converted_points",
                "Data points of matching metrics multiplied by 100.",
                &[],
            ),
            unconverted: ctx.health.counter(
                "unconverted_points",
                "Points of matching exponential histograms left unchanged (their buckets cannot be rescaled exactly).",
                &[],
            ),
        }))
    }
}

pub struct RatioToPercent {
    rules: Arc<Rules>,
    converted: Counter,
    unconverted: Counter,
}

/// What one request's conversion did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Converted {
    /// Points whose values were multiplied.
    points: u64,
    /// Points of matching exponential histograms, left unchanged.
    unconverted_points: u64,
    /// Whether anything in the request changed.
    changed: bool,
}

impl RatioToPercent {
    /// Converts a request in place.
    fn convert(rules: &Rules, req: &mut ExportMetricsServiceRequest) -> Converted {
        let mut done = Converted::default();
        for rm in &mut req.resource_metrics {
            for sm in &mut rm.scope_metrics {
                for m in &mut sm.metrics {
                    convert_metric(rules, m, &mut done);
                }
            }
        }
        done
    }

    fn edit(&self, payload: &mut Payload) {
        let done = match payload {
            Payload::Metrics(req) => Self::convert(&self.rules, req),
            Payload::Encoded {
                signal: Signal::Metrics,
                bytes,
                ..
            } if !prefilter::may_convert(&self.rules, bytes) => return,
            Payload::Encoded {
                signal: Signal::Metrics,
                bytes,
                ..
            } => match ExportMetricsServiceRequest::decode(bytes.as_ref()) {
                Ok(mut req) => {
                    let done = Self::convert(&self.rules, &mut req);
                    // Unchanged requests go on as the bytes they came in.
                    if done.changed {
                        *payload = Payload::Metrics(req);
                    }
                    done
                }
                Err(e) => {
                    // Unreachable for bytes that passed the wire scanner.
                    tracing::warn!(error = %e, "ratio_to_percent: the request does not decode; passing it on unchanged");
                    return;
                }
            },
            _ => return,
        };
        self.converted.inc_by(done.points);
        self.unconverted.inc_by(done.unconverted_points);
    }
}

impl Processor for RatioToPercent {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        self.edit(&mut batch.payload);
        out.push(batch);
    }
}

fn convert_metric(rules: &Rules, m: &mut Metric, done: &mut Converted) {
    let already = get_str(&m.metadata, MARKER_KEY) == Some(MARKER_VALUE) || m.unit == "%";
    let mut values = !already && rules.matches(&m.name);
    let done_keys = converted_attribute_keys(&m.metadata);
    let keys: Vec<&str> = rules
        .attributes
        .iter()
        .map(String::as_str)
        .filter(|k| !done_keys.iter().any(|d| d == k))
        .collect();
    if !values && keys.is_empty() {
        return;
    }
    if values {
        if let Some(Data::ExponentialHistogram(h)) = &m.data {
            done.unconverted_points += h.data_points.len() as u64;
            values = false;
        }
    }
    // The keys converted, under their old and new names: a later instance listing
    // either finds it done.
    let mut converted_keys: Vec<String> = Vec::new();
    for_each_point(m.data.as_mut(), |mut p| {
        if values && p.scale(FACTOR) {
            done.points += 1;
        }
        for key in &keys {
            if scale_attribute(rules, p.attributes_mut(), key)
                && !converted_keys.iter().any(|k| k == key)
            {
                converted_keys.push((*key).to_owned());
                converted_keys.extend(rules.renamed(key));
            }
        }
    });
    if values {
        if let Some(name) = rules.renamed(&m.name) {
            m.name = name;
        }
        m.unit = "%".into();
        set_attr(&mut m.metadata, MARKER_KEY, MARKER_VALUE);
        done.changed = true;
    }
    if !converted_keys.is_empty() {
        let all: Vec<AnyValue> = done_keys
            .into_iter()
            .chain(converted_keys)
            .map(|k| AnyValue {
                value: Some(any_value::Value::StringValue(k)),
            })
            .collect();
        set_attr(
            &mut m.metadata,
            ATTRIBUTES_MARKER_KEY,
            any_value::Value::ArrayValue(ArrayValue { values: all }),
        );
        done.changed = true;
    }
}

/// The attribute keys an earlier conversion recorded on a metric.
fn converted_attribute_keys(metadata: &[KeyValue]) -> Vec<String> {
    match get_attr(metadata, ATTRIBUTES_MARKER_KEY) {
        Some(any_value::Value::ArrayValue(a)) => a
            .values
            .iter()
            .filter_map(|v| match v.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Multiplies a numeric attribute by 100 and renames its key; false when the point has
/// no such attribute or it is not a number (a string is left as it is).
fn scale_attribute(rules: &Rules, attrs: &mut Vec<KeyValue>, key: &str) -> bool {
    let Some(i) = attrs.iter().position(|kv| kv.key == key) else {
        return false;
    };
    let value = match attrs[i].value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::IntValue(n)) => match n.checked_mul(FACTOR as i64) {
            Some(n) => any_value::Value::IntValue(n),
            None => any_value::Value::DoubleValue(*n as f64 * FACTOR),
        },
        Some(any_value::Value::DoubleValue(d)) => any_value::Value::DoubleValue(d * FACTOR),
        _ => return false,
    };
    let new_key = rules.renamed(key).unwrap_or_else(|| key.to_owned());
    attrs.remove(i);
    set_attr(attrs, &new_key, value);
    true
}

fn for_each_point(data: Option<&mut Data>, mut f: impl FnMut(PointMut<'_>)) {
    match data {
        None => {}
        Some(Data::Gauge(g)) => g
            .data_points
            .iter_mut()
            .for_each(|p| f(PointMut::Number(p))),
        Some(Data::Sum(s)) => s
            .data_points
            .iter_mut()
            .for_each(|p| f(PointMut::Number(p))),
        Some(Data::Histogram(h)) => h
            .data_points
            .iter_mut()
            .for_each(|p| f(PointMut::Histogram(p))),
        Some(Data::ExponentialHistogram(h)) => h
            .data_points
            .iter_mut()
            .for_each(|p| f(PointMut::ExponentialHistogram(p))),
        Some(Data::Summary(s)) => s
            .data_points
            .iter_mut()
            .for_each(|p| f(PointMut::Summary(p))),
    }
}
