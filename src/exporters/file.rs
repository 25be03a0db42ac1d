//! `file`: writes each export request as one OTLP/JSON line, for inspection and tests.
//!
//! Log records carrying `log.record.uid` (OpenTelemetry's record id, which `logtail` sets
//! to file id and offset) are written once: at start the exporter reads the uids in the
//! last [`DEDUP_TAIL`] bytes of its file, and drops records whose uid is already there.
//! That closes the one gap a log tail cannot close alone: a batch written just before a
//! `kill -9`, whose delivery the tail's checkpoint had not yet recorded, is read and sent
//! again after the restart, and lands here as a repeat.

use crate::component::{BuildContext, BuildError, ExporterConfig};
use crate::component::{ComponentId, Kind, Signal};
use crate::component::{ExportError, Exporter};
use crate::config::{component_config, ConfigError, Source};
use crate::otlp::json;
use crate::pipeline::data::Decoded;
use crate::pipeline::sending::SendingSettings;
use crate::pipeline::Payload;
use futures_util::future::BoxFuture;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use serde::Deserialize;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How much of the end of an existing file is read at start for record uids.
pub const DEDUP_TAIL: u64 = 16 << 20;
/// The record id attribute sinks may de-duplicate on.
pub const RECORD_UID: &str = "log.record.uid";

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
        let written = recent_uids(&self.path);
        Ok(Arc::new(FileExporter {
            out: Arc::new(Mutex::new(BufWriter::new(f))),
            path: self.path.clone(),
            written: Arc::new(written),
            repeats: ctx.health.counter(
                "repeated_records",
                "Log records whose log.record.uid the file already held (a source's repeat after a crash), not written again.",
                &[],
            ),
        }))
    }
}

struct FileExporter {
    out: Arc<Mutex<BufWriter<File>>>,
    path: PathBuf,
    /// Uids of the records at the end of the file when the exporter started.
    written: Arc<HashSet<String>>,
    repeats: prometheus_client::metrics::counter::Counter,
}

/// The `log.record.uid`s of the log records in the last [`DEDUP_TAIL`] bytes of `path`.
fn recent_uids(path: &Path) -> HashSet<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut uids = HashSet::new();
    let Ok(mut f) = File::open(path) else {
        return uids;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(DEDUP_TAIL);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return uids;
    }
    let mut lines = buf.split(|b| *b == b'\n');
    if start > 0 {
        lines.next(); // cut by the window
    }
    for line in lines.filter(|l| !l.is_empty()) {
        let Ok(req) = json::from_slice::<ExportLogsServiceRequest>(line) else {
            continue;
        };
        for r in req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
        {
            if let Some(uid) = crate::otlp::get_str(&r.attributes, RECORD_UID) {
                uids.insert(uid.to_string());
            }
        }
    }
    uids
}

/// `req` without the log records whose uid is in `written`, and how many were left
/// out; `None` when none is.
fn without_repeats(
    req: &ExportLogsServiceRequest,
    written: &HashSet<String>,
) -> Option<(ExportLogsServiceRequest, u64)> {
    let repeated = |r: &opentelemetry_proto::tonic::logs::v1::LogRecord| {
        crate::otlp::get_str(&r.attributes, RECORD_UID).is_some_and(|u| written.contains(u))
    };
    let n = req
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .filter(|r| repeated(r))
        .count() as u64;
    if n == 0 {
        return None;
    }
    let mut req = req.clone();
    for rl in &mut req.resource_logs {
        for sl in &mut rl.scope_logs {
            sl.log_records.retain(|r| !repeated(r));
        }
        rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
    }
    req.resource_logs.retain(|rl| !rl.scope_logs.is_empty());
    Some((req, n))
}

/// One OTLP/JSON line for a payload; NaN and infinities are written as the proto3 JSON
/// strings `"NaN"`, `"Infinity"`, `"-Infinity"` (serde_json alone would write `null`).
pub fn json_line(p: &Payload) -> Result<Vec<u8>, String> {
    let decoded = p
        .decoded()
        .map_err(|e| format!("payload does not decode: {e}"))?;
    decoded_line(&decoded)
}

fn decoded_line(d: &Decoded<'_>) -> Result<Vec<u8>, String> {
    let mut line = match d {
        Decoded::Traces(r) => json::to_vec(&**r),
        Decoded::Metrics(r) => json::to_vec(&**r),
        Decoded::Logs(r) => json::to_vec(&**r),
    }
    .map_err(|e| format!("cannot write OTLP/JSON: {e}"))?;
    line.push(b'\n');
    Ok(line)
}

/// The line for `payload` without the log records whose uid is in `written` (decoded
/// once), and how many were left out; `None` when nothing is left to write.
fn line_without_repeats(
    payload: &Payload,
    written: &HashSet<String>,
) -> Result<(Option<Vec<u8>>, u64), String> {
    let decoded = payload
        .decoded()
        .map_err(|e| format!("payload does not decode: {e}"))?;
    if let Decoded::Logs(req) = &decoded {
        if let Some((rest, n)) = without_repeats(req, written) {
            if rest.resource_logs.is_empty() {
                return Ok((None, n));
            }
            return decoded_line(&Decoded::Logs(std::borrow::Cow::Owned(rest)))
                .map(|l| (Some(l), n));
        }
    }
    decoded_line(&decoded).map(|l| (Some(l), 0))
}

impl Exporter for FileExporter {
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        let out = self.out.clone();
        let path = self.path.clone();
        let (written, repeats) = (self.written.clone(), self.repeats.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let line = if written.is_empty() {
                    json_line(&payload).map_err(ExportError::permanent)?
                } else {
                    let (line, n) =
                        line_without_repeats(&payload, &written).map_err(ExportError::permanent)?;
                    repeats.inc_by(n);
                    match line {
                        Some(line) => line,
                        None => return Ok(()),
                    }
                };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{attr, LogsBuilder};
    use opentelemetry_proto::tonic::logs::v1::SeverityNumber;

    fn logs(uids: &[&str]) -> Payload {
        let mut b = LogsBuilder::new();
        b.resource(&[("service.name", "t")]);
        for u in uids {
            b.log(
                1u64,
                SeverityNumber::Info,
                format!("line {u}"),
                [attr(RECORD_UID, *u)],
            );
        }
        Payload::Logs(b.build())
    }

    #[test]
    fn records_already_in_the_file_are_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut text = Vec::new();
        for p in [logs(&["f:0", "f:10"]), logs(&["f:20"])] {
            text.extend(json_line(&p).unwrap());
        }
        // A torn last line (a crash mid-write) is ignored.
        text.extend_from_slice(b"{\"resourceLogs\":[{\"scopeLo");
        std::fs::write(&path, &text).unwrap();
        let written = recent_uids(&path);
        let want: HashSet<String> = ["f:0", "f:10", "f:20"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(written, want);
        // A repeat of the last batch plus a new record: only the new one is written.
        let (line, n) = line_without_repeats(&logs(&["f:10", "f:20", "f:30"]), &written).unwrap();
        assert_eq!(n, 2);
        let req: ExportLogsServiceRequest = json::from_slice(&line.unwrap()).unwrap();
        let left: Vec<&str> = req.resource_logs[0].scope_logs[0]
            .log_records
            .iter()
            .filter_map(|r| crate::otlp::get_str(&r.attributes, RECORD_UID))
            .collect();
        assert_eq!(left, ["f:30"]);
        // Nothing repeated: the payload is written as it is.
        let fresh = logs(&["g:0"]);
        let (line, n) = line_without_repeats(&fresh, &written).unwrap();
        assert_eq!((line.unwrap(), n), (json_line(&fresh).unwrap(), 0));
        // A whole repeat leaves nothing to write.
        let (line, n) = line_without_repeats(&logs(&["f:0"]), &written).unwrap();
        assert_eq!((line, n), (None, 1));
    }
}
