//! `trace_enrich`: puts a trace id on every record that can have one, so that one id
//! finds a job's spans, logs, metrics and alerts.
//!
//! ```toml
//! [processors.trace_enrich]
//! trace_id_keys = ["trace_id", "traceId", "otel.trace_id"]  # the default
//! span_id_keys = ["span_id", "spanId", "otel.span_id"]      # the default
//! from_body = true                 # also `trace_id=<hex>` in a text body
//! correlation_keys = ["job_id", "session_id", "run_id", "mlflow_run_id"]  # the default
//! max_entries = 100000             # correlations remembered (least recently used go)
//! ttl = "6h"                       # a correlation not seen for this long is forgotten
//! max_key_bytes = 256              # longer correlation values are not remembered
//! resource_attributes = { "deployment.environment" = "${ENV:-dev}", trace_id = "${TRACE_ID:-}" }
//! ```
//!
//! In order, on every batch:
//! 1. **Resource attributes** from `resource_attributes` are added to every resource
//!    that lacks them (an empty value, such as an unset `${TRACE_ID:-}`, adds nothing).
//! 2. **Lifting** (logs): a record without a trace id gets the first valid hex id (32
//!    digits, or a UUID; not all zeros) found under `trace_id_keys` in its attributes, in
//!    its text body (`trace_id=…`, `"traceId": "…"`), or in its resource's attributes
//!    (so a container started with `TRACE_ID` stamps every record it sends); the same
//!    for the span id (16 digits). The attributes are kept.
//! 3. **Learning**: a span, or a log record or metric point with a trace id (in its
//!    fields, or a `trace_id_keys` attribute on a point), that carries a correlation key
//!    (`job_id = "j-42"`, on itself or on its resource) teaches `job_id=j-42 → trace id`.
//! 4. **Stamping**: a log record that still has no trace id but carries a learned key
//!    gets that trace id; a metric point gets a `trace_id` attribute and its exemplars
//!    without a trace id get it. Alert records are log records, stamped the same way
//!    (the alert channels show the record's trace id).
//!
//! One table of correlations per component id, shared by every pipeline the processor
//! is in: a traces pipeline teaches what a logs pipeline stamps. The table is an LRU
//! bounded by `max_entries` (each entry at most `max_key_bytes` of key plus a 16-byte id),
//! so memory stays bounded however many jobs come and go. Records and spans arrive in
//! any order: a log line read before its job's first span reached the collector is not
//! stamped afterwards.

use crate::component::{BuildContext, BuildError, ComponentId, Kind, Signal};
use crate::component::{Processor, ProcessorConfig};
use crate::config::{component_config, ConfigError, HumanDuration, Source};
use crate::otlp::{hex_id, insert_attr, PointMut};
use crate::pipeline::alerts::hex;
use crate::pipeline::{Batch, Payload};
use lru::LruCache;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_trace_keys")]
    trace_id_keys: Vec<String>,
    #[serde(default = "default_span_keys")]
    span_id_keys: Vec<String>,
    #[serde(default = "default_true")]
    from_body: bool,
    #[serde(default = "default_correlation_keys")]
    correlation_keys: Vec<String>,
    #[serde(default = "default_max_entries")]
    max_entries: usize,
    #[serde(default = "default_ttl")]
    ttl: HumanDuration,
    #[serde(default = "default_max_key_bytes")]
    max_key_bytes: usize,
    #[serde(default)]
    resource_attributes: BTreeMap<String, String>,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
fn default_trace_keys() -> Vec<String> {
    strings(&["trace_id", "traceId", "otel.trace_id"])
}
fn default_span_keys() -> Vec<String> {
    strings(&["span_id", "spanId", "otel.span_id"])
}
fn default_correlation_keys() -> Vec<String> {
    strings(&["job_id", "session_id", "run_id", "mlflow_run_id"])
}
fn default_true() -> bool {
    true
}
fn default_max_entries() -> usize {
    100_000
}
fn default_ttl() -> HumanDuration {
    HumanDuration::from_secs(6 * 3600)
}
fn default_max_key_bytes() -> usize {
    256
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub trace_id_keys: Vec<String>,
    pub span_id_keys: Vec<String>,
    pub from_body: bool,
    pub correlation_keys: Vec<String>,
    pub max_entries: usize,
    pub ttl: Duration,
    pub max_key_bytes: usize,
    pub resource_attributes: Vec<(String, String)>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            trace_id_keys: default_trace_keys(),
            span_id_keys: default_span_keys(),
            from_body: true,
            correlation_keys: default_correlation_keys(),
            max_entries: default_max_entries(),
            ttl: default_ttl().get(),
            max_key_bytes: default_max_key_bytes(),
            resource_attributes: Vec::new(),
        }
    }
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ProcessorConfig>, ConfigError> {
    let c: RawConfig = component_config(src, Kind::Processor, id)?;
    let err = |key: &str, msg: String| src.component_error(Kind::Processor, id, &[key], msg);
    for (key, list) in [
        ("trace_id_keys", &c.trace_id_keys),
        ("span_id_keys", &c.span_id_keys),
        ("correlation_keys", &c.correlation_keys),
    ] {
        if list.iter().any(|k| k.is_empty()) {
            return Err(err(key, "an empty attribute key".into()));
        }
    }
    if !(1..=10_000_000).contains(&c.max_entries) {
        return Err(err(
            "max_entries",
            "max_entries must be between 1 and 10000000".into(),
        ));
    }
    if c.ttl.get().is_zero() {
        return Err(err("ttl", "ttl must be more than 0s".into()));
    }
    if !(1..=65536).contains(&c.max_key_bytes) {
        return Err(err(
            "max_key_bytes",
            "max_key_bytes must be between 1 and 65536".into(),
        ));
    }
    let mut resource_attributes = Vec::new();
    for (k, v) in c.resource_attributes {
        if k.is_empty() {
            return Err(err("resource_attributes", "an empty attribute key".into()));
        }
        let is_trace_key = c.trace_id_keys.contains(&k);
        if is_trace_key && !v.is_empty() && hex_id(&v, 16).is_none() {
            // Never echo the value: it came from the environment.
            return Err(src.component_error(
                Kind::Processor,
                id,
                &["resource_attributes", &k],
                "not a trace id: write 32 hex digits (or a UUID), or leave it empty".into(),
            ));
        }
        if !v.is_empty() {
            resource_attributes.push((k, v));
        }
    }
    Ok(Arc::new(Settings {
        trace_id_keys: c.trace_id_keys,
        span_id_keys: c.span_id_keys,
        from_body: c.from_body,
        correlation_keys: c.correlation_keys,
        max_entries: c.max_entries,
        ttl: c.ttl.get(),
        max_key_bytes: c.max_key_bytes,
        resource_attributes,
    }))
}

impl ProcessorConfig for Settings {
    fn build(&self, _signal: Signal, ctx: &BuildContext) -> Result<Box<dyn Processor>, BuildError> {
        let max = self.max_entries;
        let table = ctx.shared(|| Mutex::new(Correlations::new(max)));
        Ok(Box::new(TraceEnrich {
            s: Arc::new(self.clone()),
            table,
            counters: Counters {
                lifted: ctx.health.counter(
                    "trace_ids_lifted",
                    "Log records given a trace id found in their attributes, body or resource",
                    &[],
                ),
                stamped: ctx.health.counter(
                    "trace_ids_stamped",
                    "Log records and metric points given a trace id learned from a correlation key",
                    &[],
                ),
                learned: ctx.health.counter(
                    "correlations_learned",
                    "Correlation key values learned or refreshed",
                    &[],
                ),
                undecodable: ctx.health.counter(
                    "undecodable_batches",
                    "Batches passed on unchanged because they did not decode",
                    &[],
                ),
            },
        }))
    }
}

struct Counters {
    lifted: Counter,
    stamped: Counter,
    learned: Counter,
    undecodable: Counter,
}

/// Correlation key value (`job_id=j-42`) → trace id, least recently used first out,
/// entries older than the TTL ignored (and replaced when learned again).
pub struct Correlations {
    lru: LruCache<String, ([u8; 16], Instant)>,
}

impl Correlations {
    pub fn new(max_entries: usize) -> Correlations {
        Correlations {
            lru: LruCache::new(NonZeroUsize::new(max_entries.max(1)).expect("at least 1")),
        }
    }

    pub fn learn(&mut self, key: String, trace: [u8; 16], now: Instant) -> bool {
        match self.lru.get_mut(&key) {
            Some(e) if e.0 == trace => {
                e.1 = now;
                false
            }
            _ => {
                self.lru.put(key, (trace, now));
                true
            }
        }
    }

    pub fn lookup(&mut self, key: &str, ttl: Duration, now: Instant) -> Option<[u8; 16]> {
        let (trace, at) = *self.lru.get(key)?;
        if now.saturating_duration_since(at) > ttl {
            self.lru.pop(key);
            return None;
        }
        Some(trace)
    }

    pub fn len(&self) -> usize {
        self.lru.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }

    pub fn cap(&self) -> usize {
        self.lru.cap().get()
    }
}

pub struct TraceEnrich {
    s: Arc<Settings>,
    table: Arc<Mutex<Correlations>>,
    counters: Counters,
}

/// What one batch did, for the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub lifted: u64,
    pub stamped: u64,
    pub learned: u64,
}

impl TraceEnrich {
    pub fn new(s: Settings) -> TraceEnrich {
        let table = Arc::new(Mutex::new(Correlations::new(s.max_entries)));
        TraceEnrich {
            s: Arc::new(s),
            table,
            counters: Counters {
                lifted: Counter::default(),
                stamped: Counter::default(),
                learned: Counter::default(),
                undecodable: Counter::default(),
            },
        }
    }

    pub fn table(&self) -> Arc<Mutex<Correlations>> {
        self.table.clone()
    }

    /// Enriches a payload in place (decoding it).
    pub fn enrich(&self, payload: &mut Payload) -> Done {
        let mut done = Done::default();
        if let Payload::Encoded { bytes, .. } = payload {
            // Keys are stored as plain bytes: a request naming none of them has nothing
            // to lift, learn or stamp, and goes on as it came, undecoded.
            let s = &self.s;
            let any = s
                .correlation_keys
                .iter()
                .chain(&s.trace_id_keys)
                .any(|k| memchr::memmem::find(bytes, k.as_bytes()).is_some());
            if !any && s.resource_attributes.is_empty() {
                return done;
            }
        }
        if payload.make_decoded().is_err() {
            self.counters.undecodable.inc();
            return done;
        }
        let now = Instant::now();
        let s = &*self.s;
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut cx = Cx {
            s,
            table: &mut table,
            now,
            done: &mut done,
        };
        match payload {
            Payload::Encoded { .. } => {}
            Payload::Traces(r) => {
                for rs in &mut r.resource_spans {
                    cx.add_resource_attributes(&mut rs.resource);
                    let res = attrs_of(&rs.resource);
                    for ss in &mut rs.scope_spans {
                        for span in &ss.spans {
                            if let Some(t) = id16(&span.trace_id) {
                                cx.learn(&span.attributes, res, t);
                            }
                        }
                    }
                }
            }
            Payload::Logs(r) => {
                for rl in &mut r.resource_logs {
                    cx.add_resource_attributes(&mut rl.resource);
                    let res = attrs_of(&rl.resource);
                    for sl in &mut rl.scope_logs {
                        for rec in &mut sl.log_records {
                            cx.log_record(rec, res);
                        }
                    }
                }
            }
            Payload::Metrics(r) => {
                for rm in &mut r.resource_metrics {
                    cx.add_resource_attributes(&mut rm.resource);
                }
                crate::otlp::for_each_metric_point_mut(r, |m, p| {
                    cx.metric_point(attrs_of_ref(m.resource), p)
                });
            }
        }
        drop(table);
        self.counters.lifted.inc_by(done.lifted);
        self.counters.stamped.inc_by(done.stamped);
        self.counters.learned.inc_by(done.learned);
        done
    }
}

impl Processor for TraceEnrich {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        self.enrich(&mut batch.payload);
        out.push(batch);
    }
}

fn attrs_of(r: &Option<Resource>) -> &[KeyValue] {
    r.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[])
}

fn attrs_of_ref(r: Option<&Resource>) -> &[KeyValue] {
    r.map(|r| r.attributes.as_slice()).unwrap_or(&[])
}

/// A valid (16-byte, not all zero) trace id.
fn id16(b: &[u8]) -> Option<[u8; 16]> {
    let a: [u8; 16] = b.try_into().ok()?;
    a.iter().any(|x| *x != 0).then_some(a)
}

struct Cx<'a> {
    s: &'a Settings,
    table: &'a mut Correlations,
    now: Instant,
    done: &'a mut Done,
}

impl Cx<'_> {
    fn add_resource_attributes(&self, r: &mut Option<Resource>) {
        if self.s.resource_attributes.is_empty() {
            return;
        }
        let attrs = &mut r.get_or_insert_with(Resource::default).attributes;
        for (k, v) in &self.s.resource_attributes {
            insert_attr(attrs, k, v.as_str());
        }
    }

    /// The correlation keys an item carries (its own attributes first, then its
    /// resource's), as `key=value` table keys.
    fn keys(&self, own: &[KeyValue], res: &[KeyValue]) -> Vec<String> {
        let mut out = Vec::new();
        for k in &self.s.correlation_keys {
            for attrs in [own, res] {
                if let Some(v) = attrs.iter().find(|kv| kv.key == *k) {
                    if let Some(text) = key_text(v.value.as_ref()) {
                        if k.len() + 1 + text.len() <= self.s.max_key_bytes {
                            out.push(format!("{k}={text}"));
                        }
                        break;
                    }
                }
            }
        }
        out
    }

    fn learn(&mut self, own: &[KeyValue], res: &[KeyValue], trace: [u8; 16]) {
        for key in self.keys(own, res) {
            if self.table.learn(key, trace, self.now) {
                self.done.learned += 1;
            }
        }
    }

    fn lookup(&mut self, own: &[KeyValue], res: &[KeyValue]) -> Option<[u8; 16]> {
        self.keys(own, res)
            .iter()
            .find_map(|k| self.table.lookup(k, self.s.ttl, self.now))
    }

    fn find_id(&self, keys: &[String], attrs: &[KeyValue], n: usize) -> Option<Vec<u8>> {
        keys.iter().find_map(|k| {
            attrs.iter().filter(|kv| kv.key == *k).find_map(|kv| {
                match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(s) => hex_id(s, n),
                    any_value::Value::BytesValue(b) if b.len() == n => {
                        b.iter().any(|x| *x != 0).then(|| b.clone())
                    }
                    _ => None,
                }
            })
        })
    }

    fn log_record(
        &mut self,
        rec: &mut opentelemetry_proto::tonic::logs::v1::LogRecord,
        res: &[KeyValue],
    ) {
        let s = self.s;
        if id16(&rec.trace_id).is_none() {
            let body = match rec.body.as_ref().and_then(|b| b.value.as_ref()) {
                Some(any_value::Value::StringValue(t)) if s.from_body => Some(t.as_str()),
                _ => None,
            };
            let found = self
                .find_id(&s.trace_id_keys, &rec.attributes, 16)
                .or_else(|| body.and_then(|b| id_in_text(b, &s.trace_id_keys, 16)))
                .or_else(|| self.find_id(&s.trace_id_keys, res, 16));
            if let Some(t) = found {
                rec.trace_id = t;
                self.done.lifted += 1;
                if rec.span_id.len() != 8 || rec.span_id.iter().all(|b| *b == 0) {
                    if let Some(sp) = self
                        .find_id(&s.span_id_keys, &rec.attributes, 8)
                        .or_else(|| body.and_then(|b| id_in_text(b, &s.span_id_keys, 8)))
                    {
                        rec.span_id = sp;
                    }
                }
            }
        }
        match id16(&rec.trace_id) {
            Some(t) => self.learn(&rec.attributes, res, t),
            None => {
                if let Some(t) = self.lookup(&rec.attributes, res) {
                    rec.trace_id = t.to_vec();
                    self.done.stamped += 1;
                }
            }
        }
    }

    fn metric_point(&mut self, res: &[KeyValue], mut p: PointMut<'_>) {
        let s = self.s;
        let (found, keys) = {
            let r = p.as_ref();
            let own = r.attributes();
            (self.find_id(&s.trace_id_keys, own, 16), self.keys(own, res))
        };
        if let Some(t) = found.as_deref().and_then(id16) {
            for key in keys {
                if self.table.learn(key, t, self.now) {
                    self.done.learned += 1;
                }
            }
            return;
        }
        if found.is_some() {
            return;
        }
        let Some(t) = keys
            .iter()
            .find_map(|k| self.table.lookup(k, s.ttl, self.now))
        else {
            return;
        };
        insert_attr(p.attributes_mut(), "trace_id", hex(&t));
        let exemplars = match &mut p {
            PointMut::Number(p) => Some(&mut p.exemplars),
            PointMut::Histogram(p) => Some(&mut p.exemplars),
            PointMut::ExponentialHistogram(p) => Some(&mut p.exemplars),
            PointMut::Summary(_) => None,
        };
        for e in exemplars.into_iter().flatten() {
            if id16(&e.trace_id).is_none() {
                e.trace_id = t.to_vec();
            }
        }
        self.done.stamped += 1;
    }
}

/// A correlation value as text: strings and integers (a job id may be either).
fn key_text(v: Option<&AnyValue>) -> Option<String> {
    match v?.value.as_ref()? {
        any_value::Value::StringValue(s) if !s.is_empty() => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

/// An id written in text after one of `keys`: `trace_id=4bf9…`, `"traceId": "4bf9…"`,
/// `trace_id: 4bf9…`.
fn id_in_text(text: &str, keys: &[String], n: usize) -> Option<Vec<u8>> {
    for k in keys {
        let mut from = 0;
        while let Some(i) = text[from..].find(k.as_str()) {
            let at = from + i;
            from = at + k.len();
            // A whole key: not the tail of a longer word.
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                continue;
            }
            let rest = text[from..].trim_start_matches(['"', '\'']);
            let rest = rest.trim_start();
            let Some(rest) = rest.strip_prefix(['=', ':']) else {
                continue;
            };
            let rest = rest.trim_start().trim_start_matches(['"', '\'']);
            let len = if n == 16 && rest.get(..36).is_some_and(|u| u.matches('-').count() == 4) {
                36
            } else {
                2 * n
            };
            let Some(cand) = rest.get(..len) else {
                continue;
            };
            // The id must end there.
            if rest[len..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_hexdigit())
            {
                continue;
            }
            if let Some(id) = hex_id(cand, n) {
                return Some(id);
            }
        }
    }
    None
}
