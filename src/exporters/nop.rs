//! `nop`: accepts and discards everything. Its `sent_items` counter says how much; it
//! exists for benchmarks and for pipelines whose only purpose is a side effect.

use crate::component::{BuildContext, BuildError, ExporterConfig};
use crate::component::{ComponentId, Kind, Signal};
use crate::component::{ExportError, Exporter};
use crate::config::{component_config, ConfigError, Source};
use crate::pipeline::sending::{QueueConfig, SendingSettings};
use crate::pipeline::Payload;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NopConfig {
    /// The sending queue (e.g. `storage = "disk"`, to measure what a disk queue costs);
    /// by default 1024 batches in memory, 16 at a time.
    sending_queue: Option<QueueConfig>,
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let c: NopConfig = component_config(src, Kind::Exporter, id)?;
    if let Err((keys, m)) = c.sending().validate() {
        return Err(src.component_error(Kind::Exporter, id, keys, m));
    }
    Ok(Arc::new(c))
}

impl ExporterConfig for NopConfig {
    fn signals(&self) -> Vec<Signal> {
        Signal::ALL.to_vec()
    }
    fn sending(&self) -> SendingSettings {
        let mut s = SendingSettings::in_process(1024, 16, Duration::from_secs(5));
        if let Some(q) = &self.sending_queue {
            s.queue = q.clone();
        }
        s
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
