//! `logtail`: tails log files matched by globs and turns each line (or multiline record)
//! into an OTLP log record, without losing or repeating a line across rotations,
//! restarts and crashes.
//!
//! ```toml
//! [receivers."logtail/bots"]
//! include = ["logs/*.jsonl", "logs/*.jsonl.*"]   # rotated names too: see below
//! exclude = ["logs/*.gz"]
//! start_at = "end"                 # or "beginning"; only on the first start
//! checkpoint_dir = "data/checkpoints"
//! poll_interval = "250ms"
//! multiline_start = '^\S'          # optional: lines not matching join the previous record
//! ```
//!
//! How (see [`tail`] and [`checkpoint`]):
//! - A file is known by a fingerprint of its first bytes (`fingerprint_bytes`), with its
//!   device and inode as a hint, not by its path: a renamed file is read on to its end
//!   under its new name; a file truncated in place (copy-truncate) no longer matches its
//!   fingerprint and is read again from 0, while the copy, found by the old fingerprint,
//!   is read on from where the original stopped; a copy of a file already being read is
//!   not read twice.
//! - Each batch carries an acknowledgement; the checkpoint (written atomically, synced)
//!   records only ranges the pipelines delivered. An exporter that gives up makes the
//!   range be read again. After `kill -9`, a restart re-reads what was not delivered.
//! - Memory is bounded: a line longer than `max_line_bytes` keeps its beginning (the
//!   record gets `log.truncated = true`, counted in `lines_truncated`), and at most
//!   `max_in_flight` batches wait for delivery.
//! - Secrets are redacted while parsing ([`parse`]), before any record exists.

pub mod checkpoint;
pub mod parse;
pub mod tail;

use crate::component::{
    BuildContext, BuildError, ComponentId, Kind, Outputs, Receiver, ReceiverConfig, Running, Signal,
};
use crate::config::{component_config, ConfigError, HumanDuration, HumanSize, Source};
use crate::otlp::Timestamp;
use crate::pipeline::{Ack, Batch, Delivery, Payload};
use crate::service::health::ComponentHealth;
use crate::state::StateDir;
use checkpoint::Checkpoint;
use futures_util::future::BoxFuture;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use parse::Redactor;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tail::{Outbox, Segment, Settings, Tailer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default = "default_start_at")]
    start_at: String,
    checkpoint_dir: Option<PathBuf>,
    #[serde(default = "default_poll")]
    poll_interval: HumanDuration,
    multiline_start: Option<String>,
    #[serde(default = "default_max_line")]
    max_line_bytes: HumanSize,
    #[serde(default = "default_fingerprint")]
    fingerprint_bytes: usize,
    redact_keys: Option<Vec<String>>,
    #[serde(default)]
    redact_patterns: Vec<String>,
    #[serde(default = "default_in_flight")]
    max_in_flight: usize,
    #[serde(default = "default_batch")]
    max_batch_bytes: HumanSize,
}

fn default_start_at() -> String {
    "end".into()
}
fn default_poll() -> HumanDuration {
    HumanDuration::from_millis(250)
}
fn default_max_line() -> HumanSize {
    HumanSize::mib(1)
}
fn default_fingerprint() -> usize {
    1024
}
fn default_in_flight() -> usize {
    8
}
fn default_batch() -> HumanSize {
    HumanSize::mib(1)
}

#[derive(Clone)]
struct Checked {
    include: Vec<glob::Pattern>,
    exclude: Vec<glob::Pattern>,
    start_at_end: bool,
    checkpoint_dir: Option<PathBuf>,
    poll_interval: Duration,
    multiline_start: Option<regex_lite::Regex>,
    max_line_bytes: usize,
    fingerprint_bytes: usize,
    redactor: Redactor,
    max_in_flight: usize,
    max_batch_bytes: usize,
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ReceiverConfig>, ConfigError> {
    let c: RawConfig = component_config(src, Kind::Receiver, id)?;
    let err = |key: &str, msg: String| src.component_error(Kind::Receiver, id, &[key], msg);
    let globs = |key: &str, list: &[String]| -> Result<Vec<glob::Pattern>, ConfigError> {
        list.iter()
            .map(|g| {
                let full = src.resolve_path(std::path::Path::new(g));
                glob::Pattern::new(&full.to_string_lossy())
                    .map_err(|e| err(key, format!("invalid glob {g:?}: {e}")))
            })
            .collect()
    };
    if c.include.is_empty() {
        return Err(err(
            "include",
            "name at least one glob, e.g. [\"logs/*.jsonl\"]".into(),
        ));
    }
    let start_at_end = match c.start_at.as_str() {
        "end" => true,
        "beginning" => false,
        other => {
            return Err(err(
                "start_at",
                format!("start_at must be \"end\" or \"beginning\", not {other:?}"),
            ))
        }
    };
    let multiline_start = match &c.multiline_start {
        Some(p) => Some(regex_lite::Regex::new(p).map_err(|e| {
            err(
                "multiline_start",
                format!("invalid regular expression: {e}"),
            )
        })?),
        None => None,
    };
    if c.max_line_bytes.bytes() < 64 {
        return Err(err(
            "max_line_bytes",
            "max_line_bytes must be at least 64B".into(),
        ));
    }
    if !(16..=65536).contains(&c.fingerprint_bytes) {
        return Err(err(
            "fingerprint_bytes",
            "fingerprint_bytes must be between 16 and 65536".into(),
        ));
    }
    if c.max_in_flight == 0 {
        return Err(err(
            "max_in_flight",
            "max_in_flight must be at least 1".into(),
        ));
    }
    if c.poll_interval.get() < Duration::from_millis(10) {
        return Err(err(
            "poll_interval",
            "poll_interval must be at least 10ms".into(),
        ));
    }
    let keys = c.redact_keys.clone().unwrap_or_else(|| {
        parse::DEFAULT_SECRET_KEYS
            .iter()
            .map(|k| k.to_string())
            .collect()
    });
    let redactor = Redactor::new(&keys, &c.redact_patterns)
        .map_err(|e| err("redact_patterns", e.to_string()))?;
    Ok(Arc::new(Checked {
        include: globs("include", &c.include)?,
        exclude: globs("exclude", &c.exclude)?,
        start_at_end,
        checkpoint_dir: c.checkpoint_dir.map(|d| src.resolve_path(&d)),
        poll_interval: c.poll_interval.get(),
        multiline_start,
        max_line_bytes: c.max_line_bytes.bytes(),
        fingerprint_bytes: c.fingerprint_bytes,
        redactor,
        max_in_flight: c.max_in_flight,
        max_batch_bytes: c.max_batch_bytes.bytes().max(1),
    }))
}

impl ReceiverConfig for Checked {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Logs]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError> {
        let state = match &self.checkpoint_dir {
            Some(dir) => StateDir::new(dir, "receiver", ctx.id.as_str()),
            None => ctx.state.clone(),
        };
        Ok(Box::new(LogtailReceiver {
            cfg: self.clone(),
            id: ctx.id.clone(),
            health: ctx.health.clone(),
            state,
        }))
    }
}

struct LogtailReceiver {
    cfg: Checked,
    id: ComponentId,
    health: Arc<ComponentHealth>,
    state: StateDir,
}

/// A batch on its way from the reading thread to the pipelines.
struct Outgoing {
    request: ExportLogsServiceRequest,
    segments: Vec<Segment>,
}

impl Receiver for LogtailReceiver {
    fn start(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<Running, BuildError>> {
        let LogtailReceiver {
            cfg,
            id,
            health,
            state,
        } = *self;
        Box::pin(async move {
            let Some(consumer) = outputs.get(Signal::Logs).cloned() else {
                return Err(BuildError::new(
                    &id,
                    "no logs pipeline takes from this receiver",
                ));
            };
            let restored = match state.read(checkpoint::FILE_NAME).await {
                Ok(None) => None,
                Ok(Some(bytes)) => {
                    Some(serde_json::from_slice::<Checkpoint>(&bytes).map_err(|e| {
                        BuildError::new(
                            &id,
                            format!(
                                "the checkpoint {} is unreadable ({e}); move it away to start over",
                                state.path().join(checkpoint::FILE_NAME).display()
                            ),
                        )
                    })?)
                }
                Err(e) => {
                    return Err(BuildError::new(
                        &id,
                        format!(
                            "cannot read the checkpoint in {}: {e}",
                            state.path().display()
                        ),
                    ))
                }
            };
            let first_start = restored.is_none();
            let tailer = Tailer::new(
                Settings {
                    include: cfg.include.clone(),
                    exclude: cfg.exclude.clone(),
                    start_at_end: cfg.start_at_end,
                    fingerprint_bytes: cfg.fingerprint_bytes,
                    max_line_bytes: cfg.max_line_bytes,
                    multiline_start: cfg.multiline_start.clone(),
                    redactor: cfg.redactor.clone(),
                    close_after_idle: (cfg.poll_interval * 4).max(Duration::from_secs(1)),
                    forget_after: Duration::from_secs(600),
                },
                restored,
            );
            let (batch_tx, mut batch_rx) = mpsc::channel::<Outgoing>(cfg.max_in_flight);
            let (settle_tx, settle_rx) = std_mpsc::channel::<(Vec<Segment>, bool)>();
            let reader = Reader {
                tailer,
                state,
                batch_tx,
                settle_rx,
                shutdown: shutdown.clone(),
                cfg,
                counters: Counters::new(&health),
                health: health.clone(),
                id: id.clone(),
            };
            let thread = std::thread::Builder::new()
                .name("logtail".into())
                .spawn(move || reader.run(first_start))
                .map_err(|e| BuildError::new(&id, format!("cannot start its thread: {e}")))?;
            let run: Running = Box::pin(async move {
                while let Some(out) = batch_rx.recv().await {
                    let (ack, waiter) = Ack::new();
                    let batch = Batch::with_ack(Payload::Logs(out.request), ack);
                    // Given back at shutdown: its ack fails and the lines are read again
                    // on the next start.
                    let _ = consumer.deliver(batch, Some(&shutdown)).await;
                    let tx = settle_tx.clone();
                    tokio::spawn(async move {
                        let delivered = waiter.wait().await == Delivery::Delivered;
                        let _ = tx.send((out.segments, delivered));
                    });
                }
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            });
            Ok(run)
        })
    }
}

struct Counters {
    records: prometheus_client::metrics::counter::Counter,
    bytes: prometheus_client::metrics::counter::Counter,
    truncated: prometheus_client::metrics::counter::Counter,
    not_delivered: prometheus_client::metrics::counter::Counter,
    file_truncations: prometheus_client::metrics::counter::Counter,
    open_files: prometheus_client::metrics::gauge::Gauge,
    known_files: prometheus_client::metrics::gauge::Gauge,
}

impl Counters {
    fn new(h: &ComponentHealth) -> Counters {
        Counters {
            records: h.counter("log_records_read", "Log records read from files", &[]),
            bytes: h.counter("bytes_read", "Bytes of log files turned into records", &[]),
            truncated: h.counter(
                "lines_truncated",
                "Lines longer than max_line_bytes (their beginning was kept)",
                &[],
            ),
            not_delivered: h.counter(
                "batches_not_delivered",
                "Batches an exporter gave up on (their lines are read again)",
                &[],
            ),
            file_truncations: h.counter(
                "file_truncations",
                "Files found truncated or replaced in place (read again from 0)",
                &[],
            ),
            open_files: h.gauge("open_files", "Files held open", &[]),
            known_files: h.gauge("known_files", "Files in the checkpoint", &[]),
        }
    }
}

/// The reading thread: polls, reads, sends batches, applies their outcomes and writes the
/// checkpoint.
struct Reader {
    tailer: Tailer,
    state: StateDir,
    batch_tx: mpsc::Sender<Outgoing>,
    settle_rx: std_mpsc::Receiver<(Vec<Segment>, bool)>,
    shutdown: CancellationToken,
    cfg: Checked,
    counters: Counters,
    health: Arc<ComponentHealth>,
    id: ComponentId,
}

impl Reader {
    fn run(mut self, first_start: bool) {
        let mut in_flight = 0usize;
        let mut next_poll = Instant::now();
        let mut first = first_start;
        let mut truncations_seen = 0;
        let mut gave_up: Vec<Vec<Segment>> = Vec::new();
        let mut settled = 0usize;
        loop {
            in_flight -= settled;
            settled = 0;
            for segs in std::mem::take(&mut gave_up) {
                self.settle(&segs, false);
            }
            while let Ok((segs, ok)) = self.settle_rx.try_recv() {
                self.settle(&segs, ok);
                in_flight -= 1;
            }
            self.save();
            if self.shutdown.is_cancelled() {
                break;
            }
            let mut out = Outbox::default();
            let now = Instant::now();
            if now >= next_poll {
                self.tailer.poll(first);
                first = false;
                next_poll = now + self.cfg.poll_interval;
                self.tailer.flush_idle(&mut out, Timestamp::now().0);
                self.counters
                    .open_files
                    .set(self.tailer.open_files() as i64);
                self.counters
                    .known_files
                    .set(self.tailer.known_files() as i64);
                let t = self.tailer.stats.truncations;
                self.counters.file_truncations.inc_by(t - truncations_seen);
                truncations_seen = t;
                self.save();
            }
            if in_flight < self.cfg.max_in_flight {
                // Deliveries are recorded (and the checkpoint saved) between chunks, so
                // the checkpoint trails the exporters by as little as possible; a batch
                // given up on is applied at the top of the loop, where rewinding is safe.
                let settle_rx = &self.settle_rx;
                let state = &self.state;
                let gave_up = &mut gave_up;
                let settled = &mut settled;
                let mut between = |t: &mut Tailer| {
                    while let Ok((segs, ok)) = settle_rx.try_recv() {
                        *settled += 1;
                        if ok {
                            t.delivered(&segs);
                        } else {
                            gave_up.push(segs);
                        }
                    }
                    if t.dirty {
                        // An error is reported by the next save at the loop's top.
                        let _ = save(t, state);
                    }
                };
                self.tailer.read(
                    &mut out,
                    self.cfg.max_batch_bytes,
                    Timestamp::now().0,
                    &mut between,
                );
            }
            if !out.records.is_empty() {
                self.counters.records.inc_by(out.records.len() as u64);
                self.counters.bytes.inc_by(out.bytes as u64);
                self.counters.truncated.inc_by(out.truncated_lines);
                self.tailer.sent(&out.segments);
                in_flight += 1;
                let segments = out.segments.clone();
                let outgoing = Outgoing {
                    request: request(out.records),
                    segments: out.segments,
                };
                if self.batch_tx.blocking_send(outgoing).is_err() {
                    self.tailer.settle(&segments, false);
                    in_flight -= 1;
                    break;
                }
                continue;
            }
            if in_flight < self.cfg.max_in_flight && self.tailer.has_work() {
                continue;
            }
            let wait = next_poll
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            match self.settle_rx.recv_timeout(wait) {
                Ok((segs, ok)) => {
                    self.settle(&segs, ok);
                    in_flight -= 1;
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        in_flight -= settled;
        for segs in gave_up {
            self.settle(&segs, false);
        }
        // Shutting down: what is in the pipelines may still be delivered; wait a while
        // for it so the checkpoint says so, then save what is known.
        drop(self.batch_tx.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.settle_rx.recv_timeout(left) {
                Ok((segs, ok)) => {
                    self.settle(&segs, ok);
                    in_flight -= 1;
                }
                Err(_) => break,
            }
        }
        self.tailer.dirty = true;
        self.save();
    }

    fn settle(&mut self, segs: &[Segment], delivered: bool) {
        if !delivered {
            self.counters.not_delivered.inc();
        }
        self.tailer.settle(segs, delivered);
    }

    fn save(&mut self) {
        if !self.tailer.dirty {
            return;
        }
        if let Err(e) = save(&mut self.tailer, &self.state) {
            self.health.report_error(
                crate::service::health::State::Degraded,
                format!("cannot write the checkpoint: {e}"),
            );
            tracing::warn!(receiver = %self.id, "cannot write the checkpoint: {e}");
        }
    }
}

/// Writes the checkpoint (atomically, synced). A failure is not fatal: the next save
/// tries again; until then a restart would repeat more.
fn save(t: &mut Tailer, state: &StateDir) -> std::io::Result<()> {
    let cp = t.checkpoint();
    let bytes = serde_json::to_vec(&cp).map_err(std::io::Error::other)?;
    let r = state.write_blocking(checkpoint::FILE_NAME, &bytes);
    match r {
        Ok(()) => t.saved(),
        Err(_) => t.dirty = true,
    }
    r
}

fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "tradewatch.logtail".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
