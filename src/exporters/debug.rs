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
        let verbosity = self.verbosity;
        let id = self.id.clone();
        // Encoding a batch as JSON and waiting for the stderr lock (held by whoever is
        // writing a log line, or by a blocked pipe) are blocking work: done on the
        // blocking pool. One export at a time (`num_consumers` 1) keeps the lines in order.
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let line = match verbosity {
                    Verbosity::Basic => format!(
                        "{id}: {} {} ({} bytes)\n",
                        payload.items(),
                        payload.signal().item_name(),
                        payload.encoded_len()
                    )
                    .into_bytes(),
                    Verbosity::Detailed => {
                        super::file::json_line(&payload).map_err(ExportError::permanent)?
                    }
                };
                let _ = std::io::stderr().lock().write_all(&line);
                Ok(())
            })
            .await
            .map_err(|e| ExportError::permanent(format!("debug writer task failed: {e}")))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::Signal;

    /// While something else holds stderr (a log line being written to a blocked pipe),
    /// an export must not block the async worker it was called on.
    #[test]
    fn a_held_stderr_does_not_block_the_async_worker() {
        let exporter = DebugExporter {
            verbosity: Verbosity::Basic,
            id: "debug".into(),
        };
        let payload = Arc::new(Payload::from_encoded(Signal::Traces, bytes::Bytes::new()).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let held = std::io::stderr().lock();
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async move {
                let export = tokio::spawn(exporter.export(payload));
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
                tx.send(()).unwrap();
                export.await.unwrap()
            })
        });
        let worker_free = rx.recv_timeout(Duration::from_secs(20)).is_ok();
        drop(held);
        assert!(runtime.join().unwrap().is_ok());
        assert!(
            worker_free,
            "the export blocked the runtime's only worker while stderr was held"
        );
    }
}
