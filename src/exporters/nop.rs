//! `nop`: accepts and discards everything. Its `sent_items` counter says how much; it
//! exists for benchmarks and for pipelines whose only purpose is a side effect.

use crate::component::{BuildContext, BuildError, ExporterConfig};
use crate::component::{ComponentId, Kind, Signal};
use crate::component::{ExportError, Exporter};
use crate::config::{component_config, ConfigError, Source};
use crate::pipeline::sending::SendingSettings;
use crate::pipeline::Payload;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NopConfig {}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let c: NopConfig = component_config(src, Kind::Exporter, id)?;
    Ok(Arc::new(c))
}

impl ExporterConfig for NopConfig {
    fn signals(&self) -> Vec<Signal> {
        Signal::ALL.to_vec()
    }
    fn sending(&self) -> SendingSettings {
        SendingSettings::in_process(1024, 16, Duration::from_secs(5))
    }
    fn build(&self, _ctx: &BuildContext) -> Result<Arc<dyn Exporter>, BuildError> {
        Ok(Arc::new(Nop))
    }
}

struct Nop;

impl Exporter for Nop {
    fn export(&self, _payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}
