//! `debug`: prints what passes to stderr — a one-line summary per batch, or every
//! record as OTLP/JSON with `verbosity = "detailed"`.

use crate::component::{BuildContext, BuildError, ExporterConfig};
use crate::component::{ComponentId, Kind, Signal};
use crate::component::{ExportError, Exporter};
use crate::config::{component_config, ConfigError, Source};
use crate::pipeline::sending::SendingSettings;
use crate::pipeline::Payload;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    #[default]
    Basic,
    Detailed,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    pub verbosity: Verbosity,
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let c: DebugConfig = component_config(src, Kind::Exporter, id)?;
    Ok(Arc::new(c))
}

impl ExporterConfig for DebugConfig {
    fn signals(&self) -> Vec<Signal> {
        Signal::ALL.to_vec()
    }
    fn sending(&self) -> SendingSettings {
        SendingSettings::in_process(256, 1, Duration::from_secs(10))
    }
    fn critical(&self) -> bool {
        false
    }
    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Exporter>, BuildError> {
        Ok(Arc::new(DebugExporter {
            verbosity: self.verbosity,
            id: ctx.id.to_string(),
        }))
    }
}

struct DebugExporter {
    verbosity: Verbosity,
    id: String,
}

impl Exporter for DebugExporter {
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        let line = match self.verbosity {
            Verbosity::Basic => Ok(format!(
                "{}: {} {} ({} bytes)\n",
                self.id,
                payload.items(),
                payload.signal().item_name(),
                payload.encoded_len()
            )
            .into_bytes()),
            Verbosity::Detailed => super::file::json_line(&payload),
        };
        Box::pin(async move {
            let line = line.map_err(ExportError::permanent)?;
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&line);
            Ok(())
        })
    }
}
