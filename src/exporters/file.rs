//! `file`: writes each export request as one OTLP/JSON line, for inspection and tests.

use crate::component::{BuildContext, BuildError, ExporterConfig};
use crate::component::{ComponentId, Kind, Signal};
use crate::component::{ExportError, Exporter};
use crate::config::{component_config, ConfigError, Source};
use crate::otlp::json;
use crate::pipeline::data::Decoded;
use crate::pipeline::sending::SendingSettings;
use crate::pipeline::Payload;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// File to append to; its directory is created if missing.
    pub path: PathBuf,
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let mut c: FileConfig = component_config(src, Kind::Exporter, id)?;
    if c.path.as_os_str().is_empty() {
        return Err(src.component_error(
            Kind::Exporter,
            id,
            &["path"],
            "path must not be empty".into(),
        ));
    }
    c.path = src.resolve_path(&c.path);
    Ok(Arc::new(c))
}

impl ExporterConfig for FileConfig {
    fn signals(&self) -> Vec<Signal> {
        Signal::ALL.to_vec()
    }
    fn sending(&self) -> SendingSettings {
        // One writer keeps lines in arrival order.
        SendingSettings::in_process(256, 1, Duration::from_secs(30))
    }
    fn critical(&self) -> bool {
        false
    }
    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Exporter>, BuildError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
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
            .open(&self.path)
            .map_err(|e| {
                BuildError::at_key(
                    &ctx.id,
                    Kind::Exporter,
                    "path",
                    format!("cannot open {}: {e}", self.path.display()),
                )
            })?;
        Ok(Arc::new(FileExporter {
            out: Arc::new(Mutex::new(BufWriter::new(f))),
            path: self.path.clone(),
        }))
    }
}

struct FileExporter {
    out: Arc<Mutex<BufWriter<File>>>,
    path: PathBuf,
}

/// One OTLP/JSON line for a payload; NaN and infinities are written as the proto3 JSON
/// strings `"NaN"`, `"Infinity"`, `"-Infinity"` (serde_json alone would write `null`).
pub fn json_line(p: &Payload) -> Result<Vec<u8>, String> {
    let decoded = p
        .decoded()
        .map_err(|e| format!("payload does not decode: {e}"))?;
    let mut line = match decoded {
        Decoded::Traces(r) => json::to_vec(&*r),
        Decoded::Metrics(r) => json::to_vec(&*r),
        Decoded::Logs(r) => json::to_vec(&*r),
    }
    .map_err(|e| format!("cannot write OTLP/JSON: {e}"))?;
    line.push(b'\n');
    Ok(line)
}

impl Exporter for FileExporter {
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        let out = self.out.clone();
        let path = self.path.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let line = json_line(&payload).map_err(ExportError::permanent)?;
                let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
                w.write_all(&line)
                    .and_then(|_| w.flush())
                    .map_err(|e| ExportError::retryable(format!("writing {}: {e}", path.display())))
            })
            .await
            .map_err(|e| ExportError::permanent(format!("file writer task failed: {e}")))?
        })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let out = self.out.clone();
        Box::pin(async move {
            // fsync can take long on a busy disk: not on an async worker.
            let _ = tokio::task::spawn_blocking(move || {
                let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
                let _ = w.flush();
                let _ = w.get_ref().sync_all();
            })
            .await;
        })
    }
}
