//! `cloudwatch_emf`: metrics as CloudWatch Embedded Metric Format (EMF) JSON objects, one
//! per line, to stdout (a Lambda or a container whose logs ship to CloudWatch), a file, or
//! CloudWatch Logs itself (`PutLogEvents`, see [`super::logs`]).
//!
//! ```toml
//! [exporters.cloudwatch_emf]
//! destination = "cloudwatch_logs"       # "stdout" (default), "file", "cloudwatch_logs"
//! path = "data/emf.jsonl"               # file
//! log_group = "/tradewatch/metrics"     # cloudwatch_logs: created if missing
//! log_stream = "tradewatch"             #   (the stream too)
//! region = "us-east-1"                  # empty: the environment's
//! endpoint_url = ""                     # moto, a VPC endpoint
//! max_event_bytes = 262144              # an event larger than this is split
//! namespace = "tradewatch"              # and the rest of the shared conversion settings
//! ```
//!
//! One event per (namespace, dimension sets, attribute values, timestamp): the metrics of
//! one resource and attribute set taken at one time share an event. Limits are kept by
//! splitting, never by cutting: at most 100 metrics per directive, at most 100 values per
//! metric (repeated values of one metric become an array), at most 30 keys per dimension
//! set, and events no larger than `max_event_bytes` (256 KiB by default, the older and
//! smaller of the two event size limits documented). Dimension values are strings; every
//! other attribute is kept as a member, for Logs Insights. Histograms and summaries become
//! `<name>.count` (Count), `<name>.sum`, `<name>.min` and `<name>.max` of the interval.

use super::{
    own_and_shape, samples_of, AwsTarget, Counters, DeltaState, Prepared, Sample, Shape, Value,
};
use crate::component::{BuildContext, BuildError, ComponentId, ExportError, Exporter};
use crate::component::{ExporterConfig, Kind, Signal};
use crate::config::{ConfigError, HumanDuration, Source};
use crate::pipeline::sending::{QueueConfig, RetryConfig, SendingSettings};
use crate::pipeline::Payload;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// EMF: at most 100 metric definitions per directive.
pub const MAX_METRICS: usize = 100;
/// EMF: a metric's value array holds at most 100 numbers.
pub const MAX_VALUES: usize = 100;
/// The default event size bound: 256 KiB, the smaller of the two documented limits.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 256 * 1024;
/// The largest event CloudWatch Logs takes (1 MB, less its 26 bytes of overhead).
pub const MAX_EVENT_BYTES: usize = 1_048_576 - 26;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    #[default]
    Stdout,
    File,
    CloudwatchLogs,
}

/// The exporter's own keys (the conversion keys are [`Shape`]'s).
#[derive(Debug, Clone, Deserialize)]
pub struct EmfOwn {
    #[serde(default)]
    pub destination: Destination,
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub log_group: String,
    #[serde(default = "default_stream")]
    pub log_stream: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub endpoint_url: String,
    #[serde(default = "default_max_event")]
    pub max_event_bytes: usize,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub sending_queue: Option<QueueConfig>,
    #[serde(default)]
    pub retry_on_failure: Option<RetryConfig>,
}

const OWN_KEYS: &[&str] = &[
    "destination",
    "path",
    "log_group",
    "log_stream",
    "region",
    "endpoint_url",
    "max_event_bytes",
    "timeout",
    "sending_queue",
    "retry_on_failure",
];

fn default_stream() -> String {
    "tradewatch".into()
}
fn default_max_event() -> usize {
    DEFAULT_MAX_EVENT_BYTES
}
fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

pub struct EmfConfig {
    own: EmfOwn,
    shape: Shape,
    path: Option<PathBuf>,
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let (own, shape): (EmfOwn, Shape) = own_and_shape(src, id, OWN_KEYS)?;
    let err = |key: &str, m: String| src.component_error(Kind::Exporter, id, &[key], m);
    let mut path = None;
    match own.destination {
        Destination::Stdout => {}
        Destination::File => match &own.path {
            Some(p) if !p.as_os_str().is_empty() => path = Some(src.resolve_path(p)),
            _ => {
                return Err(err(
                    "path",
                    "destination = \"file\" needs path = \"FILE\"".into(),
                ))
            }
        },
        Destination::CloudwatchLogs => {
            if !cfg!(feature = "aws") {
                return Err(err(
                    "destination",
                    "this build has no AWS support (cargo feature `aws`)".into(),
                ));
            }
            super::logs::check_names(&own.log_group, &own.log_stream)
                .map_err(|(k, m)| err(k, m))?;
            let target = AwsTarget {
                region: own.region.clone(),
                endpoint_url: own.endpoint_url.clone(),
            };
            target.check().map_err(|(k, m)| err(k, m))?;
        }
    }
    if !(1024..=MAX_EVENT_BYTES).contains(&own.max_event_bytes) {
        return Err(err(
            "max_event_bytes",
            format!(
                "max_event_bytes must be 1024 to {MAX_EVENT_BYTES} (CloudWatch Logs' event limit)"
            ),
        ));
    }
    let c = EmfConfig { own, shape, path };
    if let Err((keys, m)) = c.sending().validate() {
        return Err(src.component_error(Kind::Exporter, id, keys, m));
    }
    Ok(Arc::new(c))
}

impl ExporterConfig for EmfConfig {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Metrics]
    }

    fn sending(&self) -> SendingSettings {
        super::sending_settings(
            &self.own.sending_queue,
            &self.own.retry_on_failure,
            self.own.timeout,
        )
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Exporter>, BuildError> {
        let sink = match self.own.destination {
            Destination::Stdout => Sink::Stdout,
            Destination::File => {
                let path = self.path.clone().unwrap_or_default();
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        BuildError::at_key(
                            &ctx.id,
                            Kind::Exporter,
                            "path",
                            format!("cannot create {}: {e}", dir.display()),
                        )
                    })?;
                }
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| {
                        BuildError::at_key(
                            &ctx.id,
                            Kind::Exporter,
                            "path",
                            format!("cannot open {}: {e}", path.display()),
                        )
                    })?;
                Sink::File(Arc::new(Mutex::new(BufWriter::new(f))), path)
            }
            #[cfg(feature = "aws")]
            Destination::CloudwatchLogs => Sink::Logs(Arc::new(super::logs::LogsClient::new(
                super::logs::LogsTarget {
                    aws: AwsTarget {
                        region: self.own.region.clone(),
                        endpoint_url: self.own.endpoint_url.clone(),
                    },
                    log_group: self.own.log_group.clone(),
                    log_stream: self.own.log_stream.clone(),
                    timeout: self.own.timeout.get(),
                    emf_header: true,
                },
                &ctx.health,
            ))),
            #[cfg(not(feature = "aws"))]
            Destination::CloudwatchLogs => {
                return Err(BuildError::new(&ctx.id, "this build has no AWS support"))
            }
        };
        let h = &ctx.health;
        Ok(Arc::new(EmfExporter {
            inner: Arc::new(Inner {
                shape: self.shape.clone(),
                max_event_bytes: self.own.max_event_bytes,
                state: Mutex::new(DeltaState::default()),
                prepared: Prepared::default(),
                sink,
                counters: Counters::new(h),
            }),
        }))
    }
}

enum Sink {
    Stdout,
    File(Arc<Mutex<BufWriter<File>>>, PathBuf),
    #[cfg(feature = "aws")]
    Logs(Arc<super::logs::LogsClient>),
}

struct EmfExporter {
    inner: Arc<Inner>,
}

struct Inner {
    shape: Shape,
    max_event_bytes: usize,
    state: Mutex<DeltaState>,
    prepared: Prepared<Vec<Event>>,
    sink: Sink,
    counters: Counters,
}

impl Exporter for EmfExporter {
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let result = inner.export(&payload).await;
            if !matches!(result, Err(ExportError::Retryable { .. })) {
                inner.prepared.finish(&payload);
            }
            result
        })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let inner = self.inner.clone();
        Box::pin(async move {
            if let Sink::File(out, _) = &inner.sink {
                let out = out.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = w.flush();
                    let _ = w.get_ref().sync_all();
                })
                .await;
            }
        })
    }
}

impl Inner {
    fn prepare(&self, payload: &Payload) -> Result<Vec<Event>, ExportError> {
        let samples = samples_of(payload, &self.shape, &self.state, &self.counters)?;
        let mut laid = layout(&samples, self.max_event_bytes);
        self.counters.oversized.inc_by(laid.oversized);
        self.counters.conflicts.inc_by(laid.conflicts);
        // In time order (PutLogEvents needs it; a retry resumes by position in it).
        laid.events.sort_by_key(|e| e.time_ms);
        Ok(laid.events)
    }

    async fn export(&self, payload: &Arc<Payload>) -> Result<(), ExportError> {
        let (events, done) = self.prepared.get(payload, || self.prepare(payload))?;
        if events.len() <= done {
            return Ok(());
        }
        match &self.sink {
            Sink::Stdout => {
                let events = events.clone();
                tokio::task::spawn_blocking(move || {
                    let mut out = std::io::stdout().lock();
                    write_lines(&mut out, &events[done..])
                        .map_err(|e| ExportError::retryable(format!("writing to stdout: {e}")))
                })
                .await
                .map_err(|e| ExportError::permanent(format!("stdout writer failed: {e}")))??;
            }
            Sink::File(out, path) => {
                let (events, out, path) = (events.clone(), out.clone(), path.clone());
                tokio::task::spawn_blocking(move || {
                    let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
                    write_lines(&mut *w, &events[done..]).map_err(|e| {
                        ExportError::retryable(format!("writing {}: {e}", path.display()))
                    })
                })
                .await
                .map_err(|e| ExportError::permanent(format!("file writer failed: {e}")))??;
            }
            #[cfg(feature = "aws")]
            Sink::Logs(client) => {
                let mut sent = done;
                let result = client
                    .put(&events[done..], |n| {
                        sent += n;
                        self.prepared.advance(payload, sent);
                    })
                    .await;
                result?;
            }
        }
        Ok(())
    }
}

fn write_lines(w: &mut impl Write, events: &[Event]) -> std::io::Result<()> {
    for e in events {
        w.write_all(e.json.as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// One EMF log event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time_ms: i64,
    pub json: String,
}

/// Events laid out from samples, and what could not be placed.
#[derive(Debug, Default)]
pub struct Layout {
    pub events: Vec<Event>,
    /// A value that fits no event of `max_event_bytes` even alone.
    pub oversized: u64,
    /// Metrics named like one of their dimensions.
    pub conflicts: u64,
}

type GroupKey = (Arc<str>, Arc<Vec<Vec<String>>>, Members, i64);

/// A point's members, compared by identity: [`super::convert`] gives the points of one
/// resource and attribute set the same list, so identity is equality there (two equal
/// lists from elsewhere only make two events where one would do).
#[derive(Clone)]
struct Members(Arc<Vec<(String, String)>>);

impl PartialEq for Members {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Members {}
impl std::hash::Hash for Members {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (Arc::as_ptr(&self.0) as usize).hash(h)
    }
}

struct Metric {
    name: String,
    unit: &'static str,
    resolution: u8,
    values: Vec<f64>,
}

/// Groups samples into events, within EMF's limits: splits metrics over events of at
/// most [`MAX_METRICS`], values over events of at most [`MAX_VALUES`] per metric, and
/// events over `max_event_bytes`.
pub fn layout(samples: &[Sample], max_event_bytes: usize) -> Layout {
    let mut out = Layout::default();
    let mut index: HashMap<GroupKey, usize> = HashMap::new();
    let mut groups: Vec<(GroupKey, Vec<Metric>)> = Vec::new();
    for s in samples {
        let key: GroupKey = (
            s.namespace.clone(),
            s.sets.clone(),
            Members(s.members.clone()),
            s.time_ms,
        );
        let gi = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        let metrics = &mut groups[gi].1;
        let mut put = |name: String, unit: &'static str, v: f64| match metrics
            .iter_mut()
            .find(|m| m.name == name)
        {
            Some(m) => m.values.push(v),
            None => metrics.push(Metric {
                name,
                unit,
                resolution: s.resolution,
                values: vec![v],
            }),
        };
        match s.value {
            Value::One(v) => put(s.name.clone(), s.unit, v),
            Value::Stats {
                count,
                sum,
                min,
                max,
            } => {
                put(format!("{}.count", s.name), "Count", count);
                put(format!("{}.sum", s.name), s.unit, sum);
                put(format!("{}.min", s.name), s.unit, min);
                put(format!("{}.max", s.name), s.unit, max);
            }
        }
    }
    for ((ns, sets, Members(members), time), mut metrics) in groups {
        let dims: Vec<&str> = {
            let mut d: Vec<&str> = sets.iter().flatten().map(String::as_str).collect();
            d.sort_unstable();
            d.dedup();
            d
        };
        let before = metrics.len();
        metrics.retain(|m| !dims.contains(&m.name.as_str()));
        out.conflicts += (before - metrics.len()) as u64;
        // Members that are not dimensions and share a metric's name are left out.
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        let extra: Vec<&(String, String)> = members
            .iter()
            .filter(|(k, _)| !dims.contains(&k.as_str()) && !names.contains(&k.as_str()))
            .collect();
        let dim_members: Vec<&(String, String)> = members
            .iter()
            .filter(|(k, _)| dims.contains(&k.as_str()))
            .collect();
        // Rounds of at most MAX_VALUES values per metric.
        let rounds = metrics
            .iter()
            .map(|m| m.values.len().div_ceil(MAX_VALUES))
            .max()
            .unwrap_or(0);
        for r in 0..rounds {
            let part: Vec<(&Metric, &[f64])> = metrics
                .iter()
                .filter_map(|m| {
                    let lo = r * MAX_VALUES;
                    (lo < m.values.len())
                        .then(|| (m, &m.values[lo..(lo + MAX_VALUES).min(m.values.len())]))
                })
                .collect();
            for chunk in part.chunks(MAX_METRICS) {
                emit(
                    &ns,
                    &sets,
                    &dim_members,
                    &extra,
                    time,
                    chunk,
                    max_event_bytes,
                    &mut out,
                );
            }
        }
    }
    out
}

/// Renders `metrics` as one event, or splits them (then their values, then leaves out
/// the extra members) until each event fits.
#[allow(clippy::too_many_arguments)]
fn emit(
    ns: &str,
    sets: &[Vec<String>],
    dims: &[&(String, String)],
    extra: &[&(String, String)],
    time: i64,
    metrics: &[(&Metric, &[f64])],
    max: usize,
    out: &mut Layout,
) {
    let json = render(ns, sets, dims, extra, time, metrics);
    if json.len() <= max {
        out.events.push(Event {
            time_ms: time,
            json,
        });
        return;
    }
    if metrics.len() > 1 {
        let (a, b) = metrics.split_at(metrics.len() / 2);
        emit(ns, sets, dims, extra, time, a, max, out);
        emit(ns, sets, dims, extra, time, b, max, out);
        return;
    }
    let (m, values) = metrics[0];
    if values.len() > 1 {
        let (a, b) = values.split_at(values.len() / 2);
        emit(ns, sets, dims, extra, time, &[(m, a)], max, out);
        emit(ns, sets, dims, extra, time, &[(m, b)], max, out);
        return;
    }
    if !extra.is_empty() {
        emit(ns, sets, dims, &[], time, metrics, max, out);
        return;
    }
    out.oversized += 1;
}

fn push_str(buf: &mut String, s: &str) {
    // serde_json's escaping of a str never fails.
    buf.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

fn push_num(buf: &mut String, v: f64) {
    use std::fmt::Write as _;
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(buf, "{}", v as i64);
    } else {
        // Finite here (non-finite values never become samples): ryu's shortest form.
        match serde_json::Number::from_f64(v) {
            Some(n) => buf.push_str(&n.to_string()),
            None => buf.push('0'),
        }
    }
}

fn render(
    ns: &str,
    sets: &[Vec<String>],
    dims: &[&(String, String)],
    extra: &[&(String, String)],
    time: i64,
    metrics: &[(&Metric, &[f64])],
) -> String {
    use std::fmt::Write as _;
    let mut b = String::with_capacity(256 + metrics.len() * 64);
    let _ = write!(
        b,
        "{{\"_aws\":{{\"Timestamp\":{time},\"CloudWatchMetrics\":[{{\"Namespace\":"
    );
    push_str(&mut b, ns);
    b.push_str(",\"Dimensions\":[");
    for (i, set) in sets.iter().enumerate() {
        if i > 0 {
            b.push(',');
        }
        b.push('[');
        for (j, k) in set.iter().enumerate() {
            if j > 0 {
                b.push(',');
            }
            push_str(&mut b, k);
        }
        b.push(']');
    }
    b.push_str("],\"Metrics\":[");
    for (i, (m, _)) in metrics.iter().enumerate() {
        if i > 0 {
            b.push(',');
        }
        b.push_str("{\"Name\":");
        push_str(&mut b, &m.name);
        if m.unit != "None" {
            b.push_str(",\"Unit\":");
            push_str(&mut b, m.unit);
        }
        if m.resolution == 1 {
            b.push_str(",\"StorageResolution\":1");
        }
        b.push('}');
    }
    b.push_str("]}]}");
    for (k, v) in dims.iter().chain(extra) {
        b.push(',');
        push_str(&mut b, k);
        b.push(':');
        push_str(&mut b, v);
    }
    for (m, values) in metrics {
        b.push(',');
        push_str(&mut b, &m.name);
        b.push(':');
        if values.len() == 1 {
            push_num(&mut b, values[0]);
        } else {
            b.push('[');
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    b.push(',');
                }
                push_num(&mut b, *v);
            }
            b.push(']');
        }
    }
    b.push('}');
    b
}
