//! `/health` (liveness), `/status` (readiness, per component) and `/metrics`
//! (self-telemetry in the OpenMetrics text format).

use super::health::{Overall, Telemetry};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({ "status": "alive" })) }),
        )
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(telemetry)
}

async fn status(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    let report = t.status();
    // Load balancers read the code; people read the body.
    let code = match report.status {
        Overall::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    (code, Json(report))
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        t.encode_metrics(),
    )
}

/// Binds the service endpoint; the returned future serves until `shutdown`.
pub async fn serve(
    addr: std::net::SocketAddr,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "service endpoint listening (/health, /status, /metrics)");
    Ok(async move {
        if let Err(e) = axum::serve(listener, router(telemetry))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "service endpoint stopped");
        }
    })
}
