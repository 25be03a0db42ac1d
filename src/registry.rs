//! The one table that maps a configuration type name to its component, and the traits
//! a component's configuration implements to be built.

use crate::component::{ComponentId, Kind, Signal};
use crate::config::{ConfigError, Source};
use crate::exporters::sending::SendingSettings;
use crate::exporters::Exporter;
use crate::pipeline::controls::Controls;
use crate::processors::Processor;
use crate::receivers::alerts::{AlertQueue, AlertSink};
use crate::receivers::Receiver;
use crate::service::health::{ComponentHealth, Telemetry};
use crate::state::StateDir;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What every component gets when it is built.
#[derive(Clone)]
pub struct BuildContext {
    pub id: ComponentId,
    pub health: Arc<ComponentHealth>,
    pub telemetry: Arc<Telemetry>,
    pub state: StateDir,
    pub controls: Controls,
    pub alerts: AlertSink,
    /// The receiving end of the alert queue, for the `alerts` receiver.
    pub alert_queue: AlertQueue,
    /// Cancelled when the service begins to shut down.
    pub shutdown: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
#[error("{component}: {message}")]
pub struct BuildError {
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
}

pub trait ReceiverConfig: Send + Sync {
    /// The signals this receiver produces.
    fn signals(&self) -> Vec<Signal>;
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError>;
}

pub trait ProcessorConfig: Send + Sync {
    fn signals(&self) -> Vec<Signal> {
        Signal::ALL.to_vec()
    }
    /// One instance per pipeline that lists the processor.
    fn build(&self, signal: Signal, ctx: &BuildContext) -> Result<Box<dyn Processor>, BuildError>;
}

pub trait ExporterConfig: Send + Sync {
    fn signals(&self) -> Vec<Signal>;
    fn sending(&self) -> SendingSettings;
    /// Whether a failure of this exporter makes the service UNHEALTHY.
    fn critical(&self) -> bool {
        true
    }
    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Exporter>, BuildError>;
}

pub type ParseFn<T> = fn(&Source, &ComponentId) -> Result<Arc<T>, ConfigError>;

const RECEIVERS: &[(&str, ParseFn<dyn ReceiverConfig>)] = &[
    ("otlp", crate::receivers::otlp::parse),
    ("alerts", crate::receivers::alerts::parse),
];

const PROCESSORS: &[(&str, ParseFn<dyn ProcessorConfig>)] =
    &[("batch", crate::processors::batch::parse)];

const EXPORTERS: &[(&str, ParseFn<dyn ExporterConfig>)] = &[
    ("otlp", crate::exporters::otlp::parse),
    ("file", crate::exporters::file::parse),
    ("debug", crate::exporters::debug::parse),
    ("nop", crate::exporters::nop::parse),
];

pub fn receiver(ty: &str) -> Option<ParseFn<dyn ReceiverConfig>> {
    RECEIVERS.iter().find(|(n, _)| *n == ty).map(|(_, f)| *f)
}

pub fn processor(ty: &str) -> Option<ParseFn<dyn ProcessorConfig>> {
    PROCESSORS.iter().find(|(n, _)| *n == ty).map(|(_, f)| *f)
}

pub fn exporter(ty: &str) -> Option<ParseFn<dyn ExporterConfig>> {
    EXPORTERS.iter().find(|(n, _)| *n == ty).map(|(_, f)| *f)
}

pub fn known_types(kind: Kind) -> Vec<&'static str> {
    match kind {
        Kind::Receiver => RECEIVERS.iter().map(|(n, _)| *n).collect(),
        Kind::Processor => PROCESSORS.iter().map(|(n, _)| *n).collect(),
        Kind::Exporter => EXPORTERS.iter().map(|(n, _)| *n).collect(),
    }
}
