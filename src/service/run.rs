//! Runs a configuration until SIGINT/SIGTERM, then shuts down in order.

use super::health::Telemetry;
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
pub async fn run(cfg: Config, stop: CancellationToken) -> Result<(), RunError> {
    let telemetry = Telemetry::new();
    let topology = Topology::start(&cfg, telemetry.clone()).await?;
    let service_stop = CancellationToken::new();
    let service = match cfg.service.http {
        Some(addr) => {
            let fut = super::http::serve(addr, telemetry.clone(), service_stop.clone())
                .await
                .map_err(|source| RunError::ServiceEndpoint { addr, source });
            match fut {
                Ok(f) => Some(tokio::spawn(f)),
                Err(e) => {
                    topology.shutdown(cfg.service.shutdown_timeout).await;
                    return Err(e);
                }
            }
        }
        None => None,
    };
    tracing::info!(config = %cfg.file, "tradewatch started");

    tokio::select! {
        _ = stop.cancelled() => {}
        _ = shutdown_signal() => {}
    }
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

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
