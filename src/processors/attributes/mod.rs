//! `attributes`: edits the attributes of log records, spans and metric data points, and
//! drops those that match simple rules.
//!
//! ```toml
//! [processors."attributes/scrub"]
//! actions = [
//!   { key = "user.email", action = "hash" },                  # SHA-256, lowercase hex
//!   { key = "deployment.environment", value = "prod", action = "insert" },  # when absent
//!   { key = "bot", value = "main", action = "update" },       # only when present
//!   { key = "region", value = "eu-west-1", action = "upsert" },  # either way
//!   { key = "password", action = "delete" },
//! ]
//! drop = [
//!   { key = "level", equals = "debug" },                      # the value, as text
//!   { key = "healthcheck", exists = true },
//!   { key = "http.target", matches = '^/(health|ready)' },     # a regular expression
//! ]
//! ```
//!
//! Actions run in order on each item's own attributes (not its resource's). An item
//! (log record, span, data point) that any `drop` rule matches is removed, after the
//! actions ran; metrics, scopes and resources left empty go too, and a batch left with
//! nothing is settled as delivered (filtered on purpose), so a log tail's checkpoint
//! moves past it. Rules compare an attribute's value as text: strings as they are,
//! numbers as written (`3`, `0.5`), booleans `true`/`false`. With neither `actions` nor
//! `drop` the processor passes everything on untouched.

use crate::component::{BuildContext, BuildError, ComponentId, Kind, Signal};
use crate::component::{Processor, ProcessorConfig};
use crate::config::{component_config, quote_key, ConfigError, Source};
use crate::otlp::{insert_attr, remove_attr, set_attr, value_text, AttrValue};
use crate::pipeline::{Batch, Payload};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use toml::Spanned;

#[cfg(test)]
mod tests;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    actions: Vec<Spanned<RawAction>>,
    #[serde(default)]
    drop: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    key: String,
    #[serde(default)]
    value: Option<RawValue>,
    action: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    key: String,
    equals: Option<RawValue>,
    exists: Option<bool>,
    matches: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawValue {
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
}

impl RawValue {
    fn into_value(self) -> any_value::Value {
        match self {
            RawValue::Bool(b) => AttrValue::from(b).0,
            RawValue::Int(n) => AttrValue::from(n).0,
            RawValue::Double(d) => AttrValue::from(d).0,
            RawValue::Str(s) => AttrValue::from(s).0,
        }
    }
}

/// One edit of an item's attributes.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Insert {
        key: String,
        value: any_value::Value,
    },
    Update {
        key: String,
        value: any_value::Value,
    },
    Upsert {
        key: String,
        value: any_value::Value,
    },
    Delete {
        key: String,
    },
    /// Replaces the value by the SHA-256 of its text, in lowercase hex.
    Hash {
        key: String,
    },
}

/// When an item is dropped.
#[derive(Debug, Clone)]
pub enum Rule {
    Equals { key: String, text: String },
    Exists { key: String, exists: bool },
    Matches { key: String, re: regex_lite::Regex },
}

impl Rule {
    fn matches(&self, attrs: &[KeyValue]) -> bool {
        let find = |key: &str| attrs.iter().find(|kv| kv.key == key);
        match self {
            Rule::Exists { key, exists } => find(key).is_some() == *exists,
            Rule::Equals { key, text } => find(key)
                .and_then(|kv| kv.value.as_ref())
                .is_some_and(|v| value_text(v) == *text),
            Rule::Matches { key, re } => find(key)
                .and_then(|kv| kv.value.as_ref())
                .is_some_and(|v| re.is_match(&value_text(v))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub actions: Arc<[Action]>,
    pub drop: Arc<[Rule]>,
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ProcessorConfig>, ConfigError> {
    let raw: RawConfig = component_config(src, Kind::Processor, id)?;
    let located = |list: &str, i: usize, field: &str, span: std::ops::Range<usize>, m: String| {
        let key = format!(
            "{}.{}.{list}[{i}].{field}",
            Kind::Processor.table(),
            quote_key(id.as_str())
        );
        src.error_span_key(span, key, m)
    };
    let mut actions = Vec::with_capacity(raw.actions.len());
    for (i, a) in raw.actions.into_iter().enumerate() {
        let span = a.span();
        let a = a.into_inner();
        let err = |field: &str, m: String| located("actions", i, field, span.clone(), m);
        if a.key.is_empty() {
            return Err(err("key", "key is empty: name the attribute".into()));
        }
        let value = a.value.map(RawValue::into_value);
        let key = a.key;
        actions.push(match (a.action.as_str(), value) {
            ("delete" | "hash", Some(_)) => {
                return Err(err(
                    "value",
                    format!("{} takes no value: remove `value`", a.action),
                ))
            }
            ("delete", None) => Action::Delete { key },
            ("hash", None) => Action::Hash { key },
            ("insert" | "update" | "upsert", None) => {
                return Err(err(
                    "value",
                    format!("{} needs a value: add `value = ...`", a.action),
                ))
            }
            ("insert", Some(value)) => Action::Insert { key, value },
            ("update", Some(value)) => Action::Update { key, value },
            ("upsert", Some(value)) => Action::Upsert { key, value },
            (other, _) => {
                return Err(err(
                    "action",
                    format!(
                        "unknown action {other:?} (known actions: insert, update, upsert, delete, hash)"
                    ),
                ))
            }
        });
    }
    let mut rules = Vec::with_capacity(raw.drop.len());
    for (i, r) in raw.drop.into_iter().enumerate() {
        let span = r.span();
        let r = r.into_inner();
        let err = |field: &str, m: String| located("drop", i, field, span.clone(), m);
        if r.key.is_empty() {
            return Err(err("key", "key is empty: name the attribute".into()));
        }
        let key = r.key;
        rules.push(match (r.equals, r.exists, r.matches) {
            (Some(v), None, None) => Rule::Equals {
                key,
                text: value_text(&AttrValue::from(v.into_value()).into()),
            },
            (None, Some(exists), None) => Rule::Exists { key, exists },
            (None, None, Some(p)) => Rule::Matches {
                key,
                re: regex_lite::Regex::new(&p)
                    .map_err(|e| err("matches", format!("invalid regular expression: {e}")))?,
            },
            _ => {
                return Err(err(
                    "key",
                    "give exactly one of `equals`, `exists`, `matches`".into(),
                ))
            }
        });
    }
    Ok(Arc::new(Settings {
        actions: actions.into(),
        drop: rules.into(),
    }))
}

impl ProcessorConfig for Settings {
    fn build(&self, _signal: Signal, ctx: &BuildContext) -> Result<Box<dyn Processor>, BuildError> {
        Ok(Box::new(Attributes {
            s: self.clone(),
            dropped: ctx.health.counter(
                "dropped_items",
                "Log records, spans and data points dropped by a rule",
                &[],
            ),
            undecodable: ctx.health.counter(
                "undecodable_batches",
                "Batches passed on unchanged because they did not decode",
                &[],
            ),
        }))
    }
}

pub struct Attributes {
    s: Settings,
    dropped: Counter,
    undecodable: Counter,
}

/// SHA-256 of `text`, lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Settings {
    /// Runs the actions on one attribute list.
    pub fn edit(&self, attrs: &mut Vec<KeyValue>) {
        for a in self.actions.iter() {
            match a {
                Action::Insert { key, value } => {
                    insert_attr(attrs, key, value.clone());
                }
                Action::Update { key, value } => {
                    if attrs.iter().any(|kv| kv.key == *key) {
                        set_attr(attrs, key, value.clone());
                    }
                }
                Action::Upsert { key, value } => set_attr(attrs, key, value.clone()),
                Action::Delete { key } => {
                    remove_attr(attrs, key);
                }
                Action::Hash { key } => {
                    for kv in attrs.iter_mut().filter(|kv| kv.key == *key) {
                        let text = kv.value.as_ref().map(value_text).unwrap_or_default();
                        kv.value = Some(AttrValue::from(sha256_hex(&text)).into());
                    }
                }
            }
        }
    }

    /// Edits, then says whether the item stays.
    pub fn keep(&self, attrs: &mut Vec<KeyValue>) -> bool {
        self.edit(attrs);
        !self.drop.iter().any(|r| r.matches(attrs))
    }

    /// Edits and filters a payload in place; returns the items dropped.
    pub fn apply(&self, payload: &mut Payload) -> u64 {
        let before = payload.items();
        match payload {
            Payload::Encoded { .. } => return 0,
            Payload::Logs(r) => {
                for rl in &mut r.resource_logs {
                    for sl in &mut rl.scope_logs {
                        sl.log_records
                            .retain_mut(|rec| self.keep(&mut rec.attributes));
                    }
                    rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
                }
                r.resource_logs.retain(|rl| !rl.scope_logs.is_empty());
            }
            Payload::Traces(r) => {
                for rs in &mut r.resource_spans {
                    for ss in &mut rs.scope_spans {
                        ss.spans.retain_mut(|sp| self.keep(&mut sp.attributes));
                    }
                    rs.scope_spans.retain(|ss| !ss.spans.is_empty());
                }
                r.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
            }
            Payload::Metrics(r) => {
                for rm in &mut r.resource_metrics {
                    for sm in &mut rm.scope_metrics {
                        for m in &mut sm.metrics {
                            let left = match &mut m.data {
                                Some(Data::Gauge(g)) => {
                                    g.data_points.retain_mut(|p| self.keep(&mut p.attributes));
                                    g.data_points.len()
                                }
                                Some(Data::Sum(s)) => {
                                    s.data_points.retain_mut(|p| self.keep(&mut p.attributes));
                                    s.data_points.len()
                                }
                                Some(Data::Histogram(h)) => {
                                    h.data_points.retain_mut(|p| self.keep(&mut p.attributes));
                                    h.data_points.len()
                                }
                                Some(Data::ExponentialHistogram(h)) => {
                                    h.data_points.retain_mut(|p| self.keep(&mut p.attributes));
                                    h.data_points.len()
                                }
                                Some(Data::Summary(s)) => {
                                    s.data_points.retain_mut(|p| self.keep(&mut p.attributes));
                                    s.data_points.len()
                                }
                                None => 0,
                            };
                            if left == 0 {
                                m.data = None;
                            }
                        }
                        sm.metrics.retain(|m| m.data.is_some());
                    }
                    rm.scope_metrics.retain(|sm| !sm.metrics.is_empty());
                }
                r.resource_metrics.retain(|rm| !rm.scope_metrics.is_empty());
            }
        }
        before - payload.items()
    }
}

impl Processor for Attributes {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        if self.s.actions.is_empty() && self.s.drop.is_empty() {
            out.push(batch);
            return;
        }
        if batch.payload.make_decoded().is_err() {
            self.undecodable.inc();
            out.push(batch);
            return;
        }
        self.dropped.inc_by(self.s.apply(&mut batch.payload));
        if batch.payload.is_empty() {
            batch.filtered();
        } else {
            out.push(batch);
        }
    }
}
