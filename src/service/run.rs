//! Runs a configuration until SIGINT/SIGTERM, then shuts down in order. SIGHUP is
//! logged and ignored (configuration reload does not exist yet).

use super::health::{Phase, Telemetry};
use crate::config::Config;
use crate::pipeline::topology::Topology;
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
    let service = match cfg.service.http {
        Some(addr) => {
            let serve = super::http::serve(
                addr,
                cfg.service.tls.clone(),
                telemetry.clone(),
                cfg.service.ui_token.clone(),
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
    let topology = match Topology::start(&cfg, telemetry.clone()).await {
        Ok(t) => t,
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

    tokio::select! {
        _ = stop.cancelled() => {}
        _ = signals.wait() => {}
    }
    telemetry.set_phase(Phase::Draining);
    tracing::info!(deadline = ?cfg.service.shutdown_timeout, "shutting down: no new data accepted; draining");
    let report = topology.shutdown(cfg.service.shutdown_timeout).await;
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

/// SIGINT and SIGTERM stop the service. SIGHUP (sent by log rotation scripts) is logged
/// and otherwise ignored until configuration reload exists.
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

    async fn wait(&mut self) {
        #[cfg(unix)]
        if let Some([term, int, hup]) = &mut self.unix {
            loop {
                tokio::select! {
                    _ = term.recv() => return tracing::info!("SIGTERM received"),
                    _ = int.recv() => return tracing::info!("SIGINT received"),
                    _ = hup.recv() => tracing::warn!("SIGHUP received: configuration reload is not supported yet; still running with the configuration loaded at start"),
                }
            }
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
