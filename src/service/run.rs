//! Runs a configuration until SIGINT/SIGTERM, then shuts down in order. SIGHUP (or
//! `POST /reload` on the service endpoint) reloads the configuration file: the new one is
//! checked first and refused as a whole if anything is wrong (the old one keeps running,
//! the errors are logged and counted); otherwise the running pipelines are drained as at
//! shutdown (nothing accepted is dropped unless the deadline cuts it off, counted as
//! ever) and the new ones started. The service endpoint itself is kept: a change to
//! `[service] http`, `tls` or `ui_token` needs a restart (logged).

use super::health::{Phase, Telemetry};
use crate::config::Config;
use crate::pipeline::topology::Topology;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Build(#[from] crate::component::BuildError),
    #[error("cannot serve the service endpoint on {addr}: {source}")]
    ServiceEndpoint {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("shutdown deadline reached with data still queued: {dropped_items} items dropped")]
    NotDrained { dropped_items: u64 },
    #[error(
        "after a configuration reload neither the new nor the previous configuration could start"
    )]
    Reload,
}

/// Reloads `cfg`'s file: checks it, drains the running pipelines, starts the new ones.
/// When the new ones fail to start, the previous configuration is started again (and the
/// reload refused); `topology` is `None` only if that fails too.
async fn reload(
    cfg: &mut Config,
    topology: &mut Option<Topology>,
    telemetry: &Arc<Telemetry>,
) -> Result<String, String> {
    let path = std::path::PathBuf::from(&cfg.file);
    let new = Config::load(&path, &cfg.registry).map_err(|e| e.to_string())?;
    if new.service.telemetry.traces_endpoint != cfg.service.telemetry.traces_endpoint
        || new.service.telemetry.traces_sample_ratio != cfg.service.telemetry.traces_sample_ratio
    {
        tracing::warn!("[service.telemetry] changed: tradewatch's own spans keep their endpoint and ratio until a restart");
    }
    if new.service.http != cfg.service.http {
        tracing::warn!(
            "[service] http changed: the service endpoint keeps its address until a restart"
        );
    }
    let Some(old) = topology.take() else {
        return Err("no pipelines are running".into());
    };
    tracing::info!(deadline = ?cfg.service.shutdown_timeout, "configuration reload: draining the running pipelines");
    let report = old.shutdown(cfg.service.shutdown_timeout).await;
    if !report.drained {
        tracing::error!(
            dropped_items = report.dropped_items,
            "configuration reload: the drain deadline cut data off (counted in dropped_items)"
        );
    }
    match Topology::start(&new, telemetry.clone()).await {
        Ok(t) => {
            *topology = Some(t);
            *cfg = new;
            telemetry.set_phase(Phase::Running);
            Ok(format!("configuration reloaded from {}", cfg.file))
        }
        Err(e) => {
            let why = format!("the new configuration did not start: {e}");
            tracing::error!("{why}; starting the previous configuration again");
            match Topology::start(cfg, telemetry.clone()).await {
                Ok(t) => *topology = Some(t),
                Err(e2) => {
                    tracing::error!(error = %e2, "the previous configuration did not start again")
                }
            }
            telemetry.set_phase(Phase::Running);
            Err(why)
        }
    }
}

/// Starts everything, waits for `stop` (or a signal), then drains within the configured deadline.
///
/// The service endpoint is bound first, so a busy port fails before any receiver listens
/// and `/health` answers during start-up (phase `starting`, components `starting` in
/// `/status`); the phase is `running` once every receiver listens.
pub async fn run(cfg: Config, stop: CancellationToken) -> Result<(), RunError> {
    // Installed first: from here on SIGHUP cannot kill the process, even during start-up.
    let mut signals = Signals::install();
    let telemetry = Telemetry::new();
    let service_stop = CancellationToken::new();
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel(4);
    let reloads = |result: &str| {
        telemetry.service_counter(
            "config_reloads",
            "Configuration reloads (SIGHUP or POST /reload) by result: ok, or refused (the file had errors or the new pipelines did not start; the previous configuration kept running)",
            &[("result", result)],
        )
    };
    let (reloads_ok, reloads_refused) = (reloads("ok"), reloads("refused"));
    let spans = |result: &str| {
        telemetry.service_counter(
            "self_spans",
            "tradewatch's own spans sent to [service.telemetry] traces_endpoint, by result: exported, or failed (the endpoint refused them or could not be reached; they are not retried)",
            &[("result", result)],
        )
    };
    let self_spans = super::self_trace::Counters {
        exported: spans("exported"),
        failed: spans("failed"),
    };
    if let Err(e) = super::self_trace::start(&cfg.service.telemetry, self_spans) {
        tracing::error!("tradewatch's own spans are off: {e}");
    }
    let service = match cfg.service.http {
        Some(addr) => {
            let serve = super::http::serve(
                addr,
                cfg.service.tls.clone(),
                telemetry.clone(),
                cfg.service.ui_token.clone(),
                Some(reload_tx),
                service_stop.clone(),
            )
            .await
            .map_err(|source| RunError::ServiceEndpoint { addr, source })?;
            tokio::spawn(super::ui::sample_collector(
                telemetry.clone(),
                service_stop.clone(),
            ));
            Some(tokio::spawn(serve))
        }
        None => None,
    };
    let mut topology = match Topology::start(&cfg, telemetry.clone()).await {
        Ok(t) => Some(t),
        Err(e) => {
            service_stop.cancel();
            if let Some(s) = service {
                let _ = s.await;
            }
            return Err(e.into());
        }
    };
    telemetry.set_phase(Phase::Running);
    tracing::info!(config = %cfg.file, "tradewatch started");

    let mut cfg = cfg;
    loop {
        let reply = tokio::select! {
            _ = stop.cancelled() => break,
            e = signals.wait() => match e {
                Event::Stop => break,
                Event::Reload => None,
            },
            Some(reply) = reload_rx.recv() => Some(reply),
        };
        let outcome = reload(&mut cfg, &mut topology, &telemetry).await;
        match &outcome {
            Ok(m) => {
                reloads_ok.inc();
                tracing::info!(config = %cfg.file, "{m}");
            }
            Err(e) => {
                reloads_refused.inc();
                tracing::error!(config = %cfg.file, "configuration reload refused; still running the previous configuration:\n{e}");
            }
        }
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
        if topology.is_none() {
            // Neither the new nor the old configuration could start again.
            service_stop.cancel();
            if let Some(s) = service {
                let _ = s.await;
            }
            return Err(RunError::Reload);
        }
    }
    let Some(topology) = topology.take() else {
        return Err(RunError::Reload);
    };
    telemetry.set_phase(Phase::Draining);
    tracing::info!(deadline = ?cfg.service.shutdown_timeout, "shutting down: no new data accepted; draining");
    let report = topology.shutdown(cfg.service.shutdown_timeout).await;
    // The last spans (the drain's own) go out before the runtime does.
    let _ = tokio::task::spawn_blocking(super::self_trace::flush).await;
    // The service endpoint stays up while draining, so /status shows it; now it goes.
    service_stop.cancel();
    if let Some(s) = service {
        let _ = s.await;
    }
    if report.drained {
        tracing::info!("shutdown complete; everything accepted was delivered or accounted for");
        Ok(())
    } else {
        Err(RunError::NotDrained {
            dropped_items: report.dropped_items,
        })
    }
}

enum Event {
    Stop,
    Reload,
}

/// SIGINT and SIGTERM stop the service; SIGHUP reloads the configuration.
struct Signals {
    #[cfg(unix)]
    unix: Option<[tokio::signal::unix::Signal; 3]>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let all = (|| {
                Ok::<_, std::io::Error>([
                    signal(SignalKind::terminate())?,
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::hangup())?,
                ])
            })();
            if let Err(e) = &all {
                tracing::warn!(error = %e, "cannot install signal handlers; only Ctrl-C stops the service");
            }
            Signals { unix: all.ok() }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn wait(&mut self) -> Event {
        #[cfg(unix)]
        if let Some([term, int, hup]) = &mut self.unix {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received"); return Event::Stop }
                _ = int.recv() => { tracing::info!("SIGINT received"); return Event::Stop }
                _ = hup.recv() => { tracing::info!("SIGHUP received: reloading the configuration"); return Event::Reload }
            }
        }
        let _ = tokio::signal::ctrl_c().await;
        Event::Stop
    }
}
