//! `/health` (liveness), `/status` (readiness, per component) and `/metrics`
//! (self-telemetry in the OpenMetrics text format).

use super::health::{Overall, Telemetry};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Asks the run loop to reload the configuration; the answer says how it went.
pub type ReloadRequests =
    tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<String, String>>>;

pub fn router(
    telemetry: Arc<Telemetry>,
    ui_token: Option<crate::config::Secret>,
    reload: Option<ReloadRequests>,
    shutdown: CancellationToken,
) -> Router {
    let mut r = Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(telemetry.clone());
    if let Some(tx) = reload {
        r = r.route(
            "/reload",
            axum::routing::post(move || reload_config(tx.clone())),
        );
    }
    r.merge(super::ui::router(telemetry, ui_token, shutdown))
}

/// `POST /reload`: 200 once the new configuration runs, 400 with the errors when it is
/// refused (the old one keeps running), 503 when no reload can be taken now.
async fn reload_config(tx: ReloadRequests) -> impl IntoResponse {
    let (reply, answer) = tokio::sync::oneshot::channel();
    if tx.send(reply).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"reloaded": false, "error": "the collector is shutting down"})),
        );
    }
    match answer.await {
        Ok(Ok(msg)) => (
            StatusCode::OK,
            Json(serde_json::json!({"reloaded": true, "message": msg})),
        ),
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"reloaded": false, "error": e})),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"reloaded": false, "error": "the collector is shutting down"})),
        ),
    }
}

/// Liveness: 200 from the moment the endpoint is bound, with the phase (`starting`,
/// `running`, `draining`) so a caller can wait for start-up to finish.
async fn health(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    Json(serde_json::json!({ "status": "alive", "phase": t.phase() }))
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

async fn metrics(State(t): State<Arc<Telemetry>>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let text = t.encode_metrics();
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            to_prometheus_text(&text),
        )
    }
}

/// OpenMetrics → Prometheus text format 0.0.4, for scrapers (and `promtool`) that do
/// not ask for OpenMetrics: counter families are named with their `_total` suffix, and
/// the `# EOF` / `# UNIT` lines go.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{kind}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Binds the service endpoint; the returned future serves until `shutdown`. With `tls`,
/// HTTPS only, the files re-read as they change (a bad change is logged and refused).
pub async fn serve(
    addr: std::net::SocketAddr,
    tls: Option<crate::net::tls::ServerTlsFiles>,
    telemetry: Arc<Telemetry>,
    ui_token: Option<crate::config::Secret>,
    reload: Option<ReloadRequests>,
    shutdown: CancellationToken,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    use crate::net::listener::{ConnectionsConfig, Listener, ListenerStats};
    use crate::net::tls::{Reload, ServerTls};
    let tls = match tls {
        Some(files) => {
            let tls = ServerTls::load(files).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
            })?;
            tls.spawn_watch(shutdown.clone(), |r| match r {
                Reload::Unchanged | Reload::Restored => {}
                Reload::Reloaded => tracing::info!(
                    "service endpoint: TLS certificate files changed: new connections use them"
                ),
                Reload::Refused(m) => tracing::error!("service endpoint: {m}"),
            });
            Some(tls)
        }
        None => None,
    };
    let tcp = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, tls = tls.is_some(), "service endpoint listening (/health, /status, /metrics, /ui)");
    let listener = Listener {
        name: "service",
        tcp,
        tls,
        limits: ConnectionsConfig {
            max_connections: 256,
            ..ConnectionsConfig::default()
        },
        stats: Arc::new(ListenerStats::unregistered()),
        http2_only: false,
    };
    Ok(crate::net::listener::serve(
        listener,
        router(telemetry, ui_token, reload, shutdown.clone()),
        shutdown,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_counters_to_the_text_format() {
        let om = "# HELP a_items Items.\n# TYPE a_items counter\na_items_total{x=\"1\"} 3\n# HELP g Gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_items_total Items.\n# TYPE a_items_total counter\na_items_total{x=\"1\"} 3\n# HELP g Gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
