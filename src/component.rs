//! What a component is to the core: its identity (signals, kinds, ids), the traits a
//! receiver, processor or exporter implements, what it gets when it is built, and the
//! [`Registry`] that maps configuration type names to components.
//!
//! This is a core module: it names no concrete component. `crate::registry` is the one
//! place that lists them all.

use crate::config::{quote_key, ConfigError, Source};
use crate::pipeline::alerts::{AlertQueue, AlertSink};
use crate::pipeline::controls::{Controls, SharedState};
use crate::pipeline::memory::MemoryBudget;
use crate::pipeline::sending::SendingSettings;
use crate::pipeline::{Batch, Consumer, Payload};
use crate::service::health::{ComponentHealth, Telemetry};
use crate::state::StateDir;
use futures_util::future::BoxFuture;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The three OTLP signals. Alerts are log records, so they travel as `Logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        match s {
            "traces" => Some(Signal::Traces),
            "metrics" => Some(Signal::Metrics),
            "logs" => Some(Signal::Logs),
            _ => None,
        }
    }

    /// What one item of this signal is called in counters and messages.
    pub fn item_name(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "metric_points",
            Signal::Logs => "log_records",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Receiver,
    Processor,
    Exporter,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Receiver => "receiver",
            Kind::Processor => "processor",
            Kind::Exporter => "exporter",
        }
    }

    /// The config table that declares components of this kind.
    pub fn table(self) -> &'static str {
        match self {
            Kind::Receiver => "receivers",
            Kind::Processor => "processors",
            Kind::Exporter => "exporters",
        }
    }
}

/// `TYPE` or `TYPE/NAME`, as written in the configuration (`otlp`, `otlp/jaeger`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    full: String,
    type_len: usize,
}

impl ComponentId {
    pub fn parse(s: &str) -> Result<ComponentId, String> {
        let (ty, name) = match s.split_once('/') {
            Some((ty, name)) => (ty, Some(name)),
            None => (s, None),
        };
        let valid = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        if !valid(ty) {
            return Err(format!(
                "invalid component id {s:?}: the type must be letters, digits, '_', '-' or '.'"
            ));
        }
        if let Some(name) = name {
            if name.is_empty() || name.contains('/') {
                return Err(format!(
                    "invalid component id {s:?}: write TYPE or TYPE/NAME with a non-empty NAME"
                ));
            }
        }
        Ok(ComponentId {
            full: s.to_owned(),
            type_len: ty.len(),
        })
    }

    pub fn type_name(&self) -> &str {
        &self.full[..self.type_len]
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// `traces`, `metrics`, `logs`, or one of those with `/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineId {
    pub signal: Signal,
    pub full: String,
}

impl PipelineId {
    pub fn parse(s: &str) -> Result<PipelineId, String> {
        let sig = s.split_once('/').map(|(a, _)| a).unwrap_or(s);
        let signal = Signal::parse(sig).ok_or_else(|| {
            format!("invalid pipeline name {s:?}: it must start with traces, metrics or logs (optionally /NAME)")
        })?;
        if s.ends_with('/') {
            return Err(format!("invalid pipeline name {s:?}: empty NAME after '/'"));
        }
        Ok(PipelineId {
            signal,
            full: s.to_owned(),
        })
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

// ---------------------------------------------------------------------------------------
// The contracts between the core and every component

/// What every component gets when it is built.
#[derive(Clone)]
pub struct BuildContext {
    pub id: ComponentId,
    pub health: Arc<ComponentHealth>,
    pub telemetry: Arc<Telemetry>,
    pub state: StateDir,
    pub controls: Controls,
    /// Backs [`BuildContext::shared`].
    pub shared_state: SharedState,
    pub alerts: AlertSink,
    /// The receiving end of the alert queue, for the one receiver that routes alerts.
    pub alert_queue: AlertQueue,
    /// Cancelled when the service begins to shut down.
    pub shutdown: CancellationToken,
    /// The service's memory budget (`[service] memory_limit`). Receivers' consumers
    /// reserve in it; a component that reads data itself (a log tail) can reserve before
    /// reading and put the lease on its batch.
    pub memory: Arc<MemoryBudget>,
}

impl BuildContext {
    /// State shared by every instance of this component: a processor named in several
    /// pipelines is built once per pipeline, and each instance gets the same `Arc<T>`
    /// here (created by `init` for the first). Keep per-pipeline data (held batches) in
    /// the instance and per-component data (per-bot state) here.
    pub fn shared<T: std::any::Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Arc<T> {
        let key = format!("{} {}", self.health.kind.as_str(), self.id);
        self.shared_state.get_or_init(&key, init)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{component}: {message}")]
pub struct BuildError {
    /// The component's id, or the config key the error comes from (`receivers.otlp.grpc`).
    pub component: String,
    pub message: String,
}

impl BuildError {
    pub fn new(id: &ComponentId, message: impl Into<String>) -> BuildError {
        BuildError {
            component: id.to_string(),
            message: message.into(),
        }
    }

    /// An error caused by the value of `key` in the component's table, named as the
    /// config key so the user knows what to change: `receivers.otlp.grpc: cannot listen ...`.
    pub fn at_key(
        id: &ComponentId,
        kind: Kind,
        key: &str,
        message: impl Into<String>,
    ) -> BuildError {
        BuildError {
            component: format!("{}.{}.{key}", kind.table(), quote_key(id.as_str())),
            message: message.into(),
        }
    }
}

/// A component's configuration naming another component (`control = "freqtrade/main"`).
/// [`crate::config::Config::from_source`] checks each one, so a dangling name is refused
/// by `validate` with the file, line and key rather than at build time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Where the name is written inside the component's table, e.g. `["control"]`.
    pub key: Vec<String>,
    /// The kind of component it must name.
    pub kind: Kind,
    /// The id as written (`TYPE` or `TYPE/NAME`).
    pub id: String,
    /// The component types it may name; empty: any type of that kind.
    pub types: Vec<&'static str>,
}

impl Reference {
    pub fn new(key: &[&str], kind: Kind, id: impl Into<String>) -> Reference {
        Reference {
            key: key.iter().map(|k| k.to_string()).collect(),
            kind,
            id: id.into(),
            types: Vec::new(),
        }
    }

    /// Only components of these types may be named.
    pub fn of_types(mut self, types: &[&'static str]) -> Reference {
        self.types = types.to_vec();
        self
    }
}

/// A receiver's checked configuration.
pub trait ReceiverConfig: Send + Sync {
    /// The signals this receiver produces.
    fn signals(&self) -> Vec<Signal>;
    /// Other components this one names in its table; checked when the config is loaded.
    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError>;
}

/// A processor's checked configuration.
pub trait ProcessorConfig: Send + Sync {
    fn signals(&self) -> Vec<Signal> {
        Signal::ALL.to_vec()
    }
    /// Other components this one names in its table; checked when the config is loaded.
    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
    /// One instance per pipeline that lists the processor; instances of one id share
    /// state only through [`BuildContext::shared`].
    fn build(&self, signal: Signal, ctx: &BuildContext) -> Result<Box<dyn Processor>, BuildError>;
}

/// An exporter's checked configuration.
pub trait ExporterConfig: Send + Sync {
    fn signals(&self) -> Vec<Signal>;
    fn sending(&self) -> SendingSettings;
    /// Whether a failure of this exporter makes the service UNHEALTHY.
    fn critical(&self) -> bool {
        true
    }
    /// Other components this one names in its table; checked when the config is loaded.
    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Exporter>, BuildError>;
}

/// The running part of a started receiver.
pub type Running = BoxFuture<'static, ()>;

/// Where data enters tradewatch.
///
/// A receiver is built from its configuration, then started with the [`Outputs`] of the
/// pipelines that list it. Starting binds what it listens on, so a busy port fails
/// start-up before anything serves; the returned future runs until shutdown. If it ends
/// before shutdown began, or panics, the receiver is `failed` in `/status` (with the
/// panic message) and counted in `failures`; the rest of the service keeps running.
pub trait Receiver: Send {
    /// Binds sockets or opens files, then returns the future that serves until
    /// `shutdown` is cancelled. Dropping the outputs when done is what lets the
    /// pipelines downstream drain and end.
    fn start(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<Running, BuildError>>;
}

/// The consumers a receiver sends to, one per signal that some pipeline takes from it.
#[derive(Clone, Default)]
pub struct Outputs {
    by_signal: [Option<Consumer>; 3],
}

impl Outputs {
    pub fn set(&mut self, c: Consumer) {
        let i = c.signal().index();
        self.by_signal[i] = Some(c);
    }

    pub fn get(&self, s: Signal) -> Option<&Consumer> {
        self.by_signal[s.index()].as_ref()
    }
}

/// Transforms batches between receivers and exporters.
///
/// A processor runs inside its pipeline's task, so `process` is synchronous and must
/// not block; a processor that needs I/O spawns it. A processor that holds data back
/// (batching) reports when it next wants to run through [`Processor::deadline`].
///
/// A panic in `process` or `flush` is caught: the processor is `failed` for good, the
/// batch in hand and what it held are lost (their acks resolve `GaveUp`), and later data
/// reaching it is dropped the same way rather than passed on unprocessed.
pub trait Processor: Send {
    /// Takes one batch and pushes what should continue down the pipeline into `out`.
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>);

    /// When [`Processor::flush`] should next be called, if the processor holds data.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Emits held data that is due, or all of it when `force` (at shutdown).
    fn flush(&mut self, _force: bool, _out: &mut Vec<Batch>) {}
}

/// Why one export attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExportError {
    /// Worth trying again, after `retry_after` when the peer said how long to wait.
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help (the peer rejected the data).
    #[error("{message}")]
    Permanent { message: String },
}

impl ExportError {
    pub fn retryable(message: impl Into<String>) -> ExportError {
        ExportError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> ExportError {
        ExportError::Permanent {
            message: message.into(),
        }
    }
}

/// Turns pipeline data into requests to the outside world. The shared sending machinery
/// ([`crate::pipeline::sending`]) gives every exporter the same bounded queue,
/// concurrency, per-request timeout, retry with backoff and counters.
pub trait Exporter: Send + Sync + 'static {
    /// Delivers one payload. The future must be `'static`: clone what it needs.
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>>;

    /// Starts what lives beside the export path, such as a listener of its own (a
    /// scrape endpoint), after the exporter is built and before any receiver listens.
    /// An error (a port in use) fails start-up; the core names the component in it.
    /// What this starts is stopped by [`Exporter::shutdown`].
    fn start(&self) -> BoxFuture<'static, Result<(), BuildError>> {
        Box::pin(async { Ok(()) })
    }

    /// Flushes and closes, after the last export finished: every pipeline feeding this
    /// exporter has drained and its queue is empty (or was cut off at the deadline).
    fn shutdown(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// Reads one component's table (`[receivers.X]`, ...) into its checked configuration.
pub type ParseFn<T> = fn(&Source, &ComponentId) -> Result<Arc<T>, ConfigError>;

/// The table from configuration type names to components. The built-in one is
/// [`crate::registry::builtin`]; tests may add their own components to it.
#[derive(Clone, Default)]
pub struct Registry {
    pub receivers: Vec<(&'static str, ParseFn<dyn ReceiverConfig>)>,
    pub processors: Vec<(&'static str, ParseFn<dyn ProcessorConfig>)>,
    pub exporters: Vec<(&'static str, ParseFn<dyn ExporterConfig>)>,
}

impl Registry {
    pub fn receiver(&self, ty: &str) -> Option<ParseFn<dyn ReceiverConfig>> {
        self.receivers
            .iter()
            .find(|(n, _)| *n == ty)
            .map(|(_, f)| *f)
    }

    pub fn processor(&self, ty: &str) -> Option<ParseFn<dyn ProcessorConfig>> {
        self.processors
            .iter()
            .find(|(n, _)| *n == ty)
            .map(|(_, f)| *f)
    }

    pub fn exporter(&self, ty: &str) -> Option<ParseFn<dyn ExporterConfig>> {
        self.exporters
            .iter()
            .find(|(n, _)| *n == ty)
            .map(|(_, f)| *f)
    }

    pub fn known_types(&self, kind: Kind) -> Vec<&'static str> {
        match kind {
            Kind::Receiver => self.receivers.iter().map(|(n, _)| *n).collect(),
            Kind::Processor => self.processors.iter().map(|(n, _)| *n).collect(),
            Kind::Exporter => self.exporters.iter().map(|(n, _)| *n).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_ids() {
        let id = ComponentId::parse("otlp/jaeger").unwrap();
        assert_eq!(id.type_name(), "otlp");
        assert_eq!(id.as_str(), "otlp/jaeger");
        assert!(ComponentId::parse("otlp/").is_err());
        assert!(ComponentId::parse("").is_err());
        assert!(ComponentId::parse("a b").is_err());
        assert!(ComponentId::parse("x/y/z").is_err());
    }

    #[test]
    fn pipeline_ids() {
        assert_eq!(
            PipelineId::parse("logs/alerts").unwrap().signal,
            Signal::Logs
        );
        assert!(PipelineId::parse("spans").is_err());
        assert!(PipelineId::parse("logs/").is_err());
    }
}
