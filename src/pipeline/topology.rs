//! Builds the running graph from a checked configuration, and takes it down in order.
//!
//! Start-up: receivers are built first (they may offer control handles), then
//! exporters (each started: [`crate::component::Exporter::start`] binds what it serves
//! itself) with their sending loops, then processors (which may use control handles)
//! and each pipeline's task, and last the receivers are started, so nothing listens
//! before everything downstream is ready. Shutdown runs the other way: receivers stop
//! accepting, pipelines drain and flush, exporters empty their queues and then shut
//! down (closing what `start` opened), all within one deadline.

use crate::component::{BuildContext, BuildError, Outputs, Receiver, Running};
use crate::component::{ComponentId, Kind, Signal};
use crate::config::Config;
use crate::pipeline::alerts::AlertSink;
use crate::pipeline::controls::{Controls, SharedState};
use crate::pipeline::memory::MemoryBudget;
use crate::pipeline::sending::{self, ExporterHandle};
use crate::pipeline::{Batch, Consumer, PipelineRunner, Stage};
use crate::service::health::{panic_message, ComponentHealth, State, Telemetry};
use crate::state::StateDir;
use futures_util::FutureExt;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a receiver waits for room in a full pipeline before refusing.
pub const DEFAULT_PUSHBACK_WAIT: Duration = Duration::from_millis(500);

pub struct Topology {
    receivers: Vec<(ComponentId, JoinHandle<()>)>,
    pipelines: Vec<JoinHandle<()>>,
    exporters: Vec<(ComponentId, JoinHandle<()>)>,
    stop_receiving: CancellationToken,
    hard_stop: CancellationToken,
    pub telemetry: Arc<Telemetry>,
    pub controls: Controls,
}

/// What shutdown achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Everything accepted was handed to exporters and they finished.
    pub drained: bool,
    /// Items abandoned at the deadline, over all exporters.
    pub dropped_items: u64,
}

/// Runs a receiver's future and tells `/status` how it ended: `stopped` after shutdown
/// began, `failed` (with the panic message, or because it ended early) otherwise. A
/// panic is caught here, so it takes down this receiver only.
async fn supervise(run: Running, health: Arc<ComponentHealth>, shutdown: CancellationToken) {
    match AssertUnwindSafe(run).catch_unwind().await {
        Ok(()) if shutdown.is_cancelled() => health.set_state(State::Stopped),
        Ok(()) => health.report_failure("the receiver stopped before shutdown"),
        Err(panic) => health.report_failure(panic_message(&*panic)),
    }
}

/// Waits (up to 10 s) for the tasks of a start-up that failed to end, after their
/// tokens were cancelled and their inputs dropped.
async fn wind_down(
    receivers: Vec<(ComponentId, JoinHandle<()>)>,
    pipelines: Vec<JoinHandle<()>>,
    exporters: Vec<(ComponentId, JoinHandle<()>)>,
) {
    let all = async {
        for (_, r) in receivers {
            let _ = r.await;
        }
        for p in pipelines {
            let _ = p.await;
        }
        for (_, e) in exporters {
            let _ = e.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .is_err()
    {
        tracing::warn!("components of a failed start-up did not stop within 10 s");
    }
}

impl Topology {
    pub async fn start(cfg: &Config, telemetry: Arc<Telemetry>) -> Result<Topology, BuildError> {
        let stop_receiving = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        let controls = Controls::default();
        let shared_state = SharedState::default();
        // Alerts are counted under the `alerts` receiver, declared or not.
        let service_health = telemetry.component(
            Kind::Receiver,
            &ComponentId::parse("alerts").expect("static id is valid"),
            false,
        );
        let lost = service_health.counter(
            "alerts_unrouted",
            "Alerts raised while no alerts receiver could take them (logged instead)",
            &[],
        );
        service_health.set_state(State::Ok);
        let (alert_sink, alert_rx) = AlertSink::new(4096, lost);
        let alert_sink = alert_sink.with_board(telemetry.board());
        let alert_queue = Arc::new(Mutex::new(Some(alert_rx)));

        let memory = MemoryBudget::new(
            cfg.service.memory_limit,
            telemetry.service_gauge(
                "memory_used_bytes",
                "Bytes of data held in pipelines and sending queues",
            ),
        );
        telemetry
            .service_gauge(
                "memory_limit_bytes",
                "The memory_limit: past it, receivers push back",
            )
            .set(i64::try_from(cfg.service.memory_limit).unwrap_or(i64::MAX));
        let ctx = |kind: Kind, id: &ComponentId, critical: bool| BuildContext {
            id: id.clone(),
            health: telemetry.component(kind, id, critical),
            telemetry: telemetry.clone(),
            state: StateDir::new(&cfg.service.data_dir, kind.as_str(), id.as_str()),
            controls: controls.clone(),
            shared_state: shared_state.clone(),
            alerts: alert_sink.clone(),
            alert_queue: alert_queue.clone(),
            shutdown: stop_receiving.clone(),
            memory: memory.clone(),
        };

        // 1. Receivers (built, not started).
        let mut receivers: BTreeMap<ComponentId, Box<dyn Receiver>> = BTreeMap::new();
        for (id, rc) in &cfg.receivers {
            if !cfg.pipelines.iter().any(|p| p.receivers.contains(id)) {
                continue;
            }
            receivers.insert(
                id.clone(),
                rc.build(&ctx(
                    Kind::Receiver,
                    id,
                    cfg.is_critical(Kind::Receiver, id),
                ))?,
            );
        }

        // Nobody took the alert queue (no pipeline routes alerts): log each alert so none
        // is lost silently.
        if let Some(mut rx) = alert_queue.lock().ok().and_then(|mut g| g.take()) {
            tokio::spawn(async move {
                while let Some(a) = rx.recv().await {
                    tracing::warn!(alert = %a.name, severity = a.severity.as_str(), state = ?a.state, summary = %a.summary, "alert raised (no pipeline routes alerts)");
                }
            });
        }

        // 2. Exporters' sending loops.
        let mut exporter_handles: BTreeMap<ComponentId, ExporterHandle> = BTreeMap::new();
        let mut exporters = Vec::new();
        for (id, ec) in &cfg.exporters {
            if !cfg.pipelines.iter().any(|p| p.exporters.contains(id)) {
                continue;
            }
            let c = ctx(Kind::Exporter, id, cfg.is_critical(Kind::Exporter, id));
            let exporter = ec.build(&c)?;
            // Long-lived parts (a scrape endpoint) start before any data can flow; a
            // failure here fails start-up, naming the component.
            if let Err(e) = exporter.start().await {
                let e = BuildError::new(id, e.message);
                c.health.report_error(State::Failed, e.message.clone());
                stop_receiving.cancel();
                hard_stop.cancel();
                drop(exporter_handles);
                wind_down(Vec::new(), Vec::new(), exporters).await;
                return Err(e);
            }
            let settings = ec.sending();
            let (handle, task) = match settings.queue.storage {
                sending::Storage::Memory => {
                    sending::spawn(exporter, &settings, c.health.clone(), hard_stop.clone())
                }
                sending::Storage::Disk => {
                    let dir = c.state.path().join("queue");
                    match sending::spawn_disk(
                        exporter,
                        &settings,
                        dir,
                        c.health.clone(),
                        hard_stop.clone(),
                    )
                    .await
                    {
                        Ok(started) => started,
                        Err(message) => {
                            c.health.report_error(State::Failed, message.clone());
                            stop_receiving.cancel();
                            hard_stop.cancel();
                            drop(exporter_handles);
                            wind_down(Vec::new(), Vec::new(), exporters).await;
                            return Err(BuildError::new(id, message));
                        }
                    }
                }
            };
            exporter_handles.insert(id.clone(), handle);
            exporters.push((id.clone(), task));
        }

        // 3. Pipelines, each with its own processor instances.
        let mut inputs: BTreeMap<ComponentId, Vec<(Signal, mpsc::Sender<Batch>)>> = BTreeMap::new();
        let mut pipelines = Vec::new();
        for p in &cfg.pipelines {
            let mut processors = Vec::new();
            for pid in &p.processors {
                let pc = &cfg.processors[pid];
                let c = ctx(Kind::Processor, pid, cfg.is_critical(Kind::Processor, pid));
                let processor = pc.build(p.id.signal, &c)?;
                c.health.failures();
                c.health.set_state(State::Ok);
                processors.push(Stage::new(processor, c.health, p.id.signal));
            }
            let (tx, rx) = mpsc::channel(p.capacity);
            for r in &p.receivers {
                inputs
                    .entry(r.clone())
                    .or_default()
                    .push((p.id.signal, tx.clone()));
            }
            drop(tx);
            let runner = PipelineRunner {
                id: p.id.clone(),
                rx,
                processors,
                exporters: p
                    .exporters
                    .iter()
                    .map(|e| exporter_handles[e].clone())
                    .collect(),
            };
            pipelines.push(tokio::spawn(runner.run()));
        }
        drop(exporter_handles);
        drop(alert_sink);

        // 4. Receivers start last.
        let mut running = Vec::new();
        for (id, receiver) in receivers {
            let health =
                telemetry.component(Kind::Receiver, &id, cfg.is_critical(Kind::Receiver, &id));
            let mut outputs = Outputs::default();
            let mut by_signal: BTreeMap<Signal, Vec<mpsc::Sender<Batch>>> = BTreeMap::new();
            for (s, tx) in inputs.remove(&id).unwrap_or_default() {
                by_signal.entry(s).or_default().push(tx);
            }
            for (s, txs) in by_signal {
                let accepted = health.counter(
                    "accepted_items",
                    "Items the receiver accepted into its pipelines",
                    &[("signal", s.as_str())],
                );
                let refused = health.counter(
                    "refused_items",
                    "Items the receiver refused because its pipelines were full or closing (the client was told to retry)",
                    &[("signal", s.as_str())],
                );
                outputs.set(Consumer::new(
                    s,
                    txs,
                    memory.clone(),
                    DEFAULT_PUSHBACK_WAIT,
                    accepted,
                    refused,
                ));
            }
            let run = match receiver.start(outputs, stop_receiving.clone()).await {
                Ok(run) => run,
                Err(e) => {
                    health.report_error(State::Failed, e.message.clone());
                    // Take down what already started before reporting the failure, and
                    // wait for it: whoever starts next (a reload falling back to the
                    // previous configuration) may need the same ports and files.
                    stop_receiving.cancel();
                    hard_stop.cancel();
                    drop(inputs);
                    wind_down(running, pipelines, exporters).await;
                    return Err(e);
                }
            };
            health.failures();
            health.set_state(State::Ok);
            running.push((
                id,
                tokio::spawn(supervise(run, health, stop_receiving.clone())),
            ));
        }

        Ok(Topology {
            receivers: running,
            pipelines,
            exporters,
            stop_receiving,
            hard_stop,
            telemetry,
            controls,
        })
    }

    /// Stops receiving, drains pipelines and exporter queues, and waits at most `deadline`.
    pub async fn shutdown(self, deadline: Duration) -> ShutdownReport {
        let until = tokio::time::Instant::now() + deadline;
        self.stop_receiving.cancel();
        let drain = async {
            for (id, r) in self.receivers {
                if let Err(e) = r.await {
                    tracing::error!(receiver = %id, error = %e, "receiver task failed");
                }
            }
            tracing::info!("receivers stopped; draining pipelines");
            for p in self.pipelines {
                let _ = p.await;
            }
            tracing::info!("pipelines drained; flushing exporters");
        };
        let drained = tokio::time::timeout_at(until, drain).await.is_ok();
        if !drained {
            tracing::error!(
                ?deadline,
                "shutdown deadline reached before everything drained"
            );
        }
        // Exporters: wait for their queues, or cut them off at the deadline (what is cut
        // off is counted as dropped).
        let mut exporters = self.exporters;
        let wait_exporters = async {
            for (_, t) in exporters.iter_mut() {
                let _ = t.await;
            }
        };
        let exporters_done = tokio::time::timeout_at(until, wait_exporters).await.is_ok();
        if !exporters_done {
            self.hard_stop.cancel();
            for (id, t) in exporters {
                if tokio::time::timeout(Duration::from_secs(2), t)
                    .await
                    .is_err()
                {
                    tracing::error!(exporter = %id, "exporter did not stop after the deadline");
                }
            }
        }
        let dropped = self
            .telemetry
            .status()
            .components
            .iter()
            .flat_map(|c| c.counters.iter())
            .filter(|(k, _)| k.starts_with("dropped_items"))
            .map(|(_, v)| *v as u64)
            .sum();
        ShutdownReport {
            drained: drained && exporters_done,
            dropped_items: dropped,
        }
    }
}
