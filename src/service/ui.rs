//! `/ui`: the live page. Its assets are compiled in (no CDN: it works offline); its data
//! come from the [`Board`] by server-sent events: a full snapshot on every (re)connect,
//! then what changed. Operator actions are off unless `[service] ui_token` is set.
//!
//! Security model of the actions: the token travels only in an `Authorization: Bearer`
//! header (never in a URL, so never in a log or a history), checked in constant time;
//! every action must also carry `X-Tradewatch-UI: 1` (a custom header a cross-site form or
//! image cannot send, and which a cross-site script cannot send without a CORS preflight
//! this server never grants) and, when the browser sends `Origin`, come from the page's
//! own origin. Without the token: 401; with actions off: 403.

use super::board::{now_ms, Board, Tone};
use super::health::{State as CState, Telemetry};
use crate::component::Kind;
use crate::config::Secret;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

/// How often the collector panel samples its counters, and how many samples it keeps
/// (one hour).
pub const COLLECTOR_SAMPLE: Duration = Duration::from_secs(2);
const COLLECTOR_HISTORY: usize = 1800;

/// The header every action must carry (CSRF protection, with the Origin check).
pub const ACTION_HEADER: &str = "x-tradewatch-ui";

/// Updates are sent at most this often (changes in between are coalesced).
const COALESCE: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct Ui {
    telemetry: Arc<Telemetry>,
    board: Arc<Board>,
    token: Option<Secret>,
    /// Ends the event streams (so the endpoint's graceful close need not wait for them).
    shutdown: tokio_util::sync::CancellationToken,
}

/// The routes of `/ui`, to merge into the service endpoint's router.
pub fn router(
    telemetry: Arc<Telemetry>,
    token: Option<Secret>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Router {
    let ui = Ui {
        board: telemetry.board(),
        telemetry,
        token: token.filter(|t| !t.is_empty()),
        shutdown,
    };
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/app.js", get(app_js))
        .route("/ui/app.css", get(app_css))
        .route("/ui/events", get(events))
        .route("/ui/api/state", get(state))
        .route("/ui/api/alerts/{id}/ack", post(acknowledge))
        .route("/ui/api/panels/{panel}/actions/{action}", post(run_action))
        .with_state(ui)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    let mut r = asset("text/html; charset=utf-8", INDEX);
    let h = r.headers_mut();
    // Nothing but this origin: no CDN, no inline script, no framing.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

impl Ui {
    /// Everything the page shows, with history points newer than `since`.
    fn message(&self, since: u64) -> (serde_json::Value, u64) {
        let (mut v, seq) = self.board.view_json(since);
        let mut worst = "HEALTHY";
        let components: Vec<serde_json::Value> = self
            .telemetry
            .components()
            .iter()
            .map(|c| {
                let state = c.state();
                match state {
                    CState::Failed if c.critical => worst = "UNHEALTHY",
                    CState::Failed | CState::Degraded | CState::Starting if worst == "HEALTHY" => {
                        worst = "DEGRADED"
                    }
                    _ => {}
                }
                json!({ "id": c.id.as_str(), "kind": c.kind.as_str(), "state": state, "critical": c.critical })
            })
            .collect();
        v["status"] = json!(worst);
        v["phase"] = json!(self.telemetry.phase());
        v["components"] = json!(components);
        v["actions_enabled"] = json!(self.token.is_some());
        v["now_ms"] = json!(now_ms());
        (v, seq)
    }
}

async fn state(State(ui): State<Ui>) -> impl IntoResponse {
    let mut r = Json(ui.message(0).0).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A snapshot on connect (EventSource reconnects by itself, after `retry`), then an
/// update after each change.
async fn events(State(ui): State<Ui>) -> impl IntoResponse {
    let rx = ui.board.subscribe();
    let stream =
        futures_util::stream::unfold((ui, rx, None::<u64>), |(ui, mut rx, last)| async move {
            let event = match last {
                None => {
                    let (v, seq) = ui.message(0);
                    rx.mark_unchanged();
                    let e = Event::default()
                        .event("snapshot")
                        .retry(Duration::from_secs(1))
                        .data(v.to_string());
                    return Some((Ok::<_, Infallible>(e), (ui, rx, Some(seq))));
                }
                Some(since) => {
                    // A change, or every few seconds anyway (component states and the
                    // clock move without a board change).
                    tokio::select! {
                        _ = ui.shutdown.cancelled() => return None,
                        _ = tokio::time::timeout(Duration::from_secs(5), rx.changed()) => {}
                    }
                    tokio::time::sleep(COALESCE).await;
                    rx.mark_unchanged();
                    let (v, seq) = ui.message(since);
                    (Event::default().event("update").data(v.to_string()), seq)
                }
            };
            Some((Ok(event.0), (ui, rx, Some(event.1))))
        });
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl Ui {
    /// Counts a refused action (`tradewatch_ui_refused_actions_total{code}`).
    fn refused(&self, code: StatusCode) {
        self.telemetry
            .service_counter(
                "ui_refused_actions",
                "/ui operator actions refused: 401 no or a wrong token, 403 actions off, no CSRF header or another origin",
                &[("code", code.as_str())],
            )
            .inc();
    }
}

/// Why an action request was refused.
fn refuse(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

impl Ui {
    /// Checks an action request: actions on, the CSRF header, same origin, the token.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
        let Some(token) = &self.token else {
            return Err((
                StatusCode::FORBIDDEN,
                "operator actions are off: set [service] ui_token (from the environment) to enable them",
            ));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
            tracing::warn!("/ui action refused: missing or wrong token");
            return Err((StatusCode::UNAUTHORIZED, "a valid ui_token is required"));
        }
        if headers.get(ACTION_HEADER).and_then(|v| v.to_str().ok()) != Some("1") {
            tracing::warn!("/ui action refused: no {ACTION_HEADER} header");
            return Err((
                StatusCode::FORBIDDEN,
                "actions must carry the X-Tradewatch-UI: 1 header",
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let origin = origin.to_str().unwrap_or("");
            let same = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|o| !host.is_empty() && o == host);
            if !same {
                tracing::warn!(origin, "/ui action refused: cross-origin request");
                return Err((StatusCode::FORBIDDEN, "cross-origin action refused"));
            }
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    // Hashing first makes the comparison independent of the lengths too.
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

async fn acknowledge(State(ui): State<Ui>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err((code, why)) = ui.authorize(&headers) {
        ui.refused(code);
        return refuse(code, why);
    }
    let Ok(id) = id.parse::<u64>() else {
        return refuse(StatusCode::BAD_REQUEST, "the alert id must be a number");
    };
    if ui.board.acknowledge(id) {
        tracing::info!(alert_id = id, "alert acknowledged from /ui");
        Json(json!({ "acknowledged": id })).into_response()
    } else {
        refuse(StatusCode::NOT_FOUND, "no such alert in the timeline")
    }
}

async fn run_action(
    State(ui): State<Ui>,
    Path((panel, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err((code, why)) = ui.authorize(&headers) {
        ui.refused(code);
        return refuse(code, why);
    }
    let Some(run) = ui.board.action(&panel, &action) else {
        return refuse(StatusCode::NOT_FOUND, "no such action on that panel");
    };
    tracing::info!(panel, action, "operator action from /ui");
    match run().await {
        Ok(msg) => Json(json!({ "ok": true, "result": msg })).into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({ "ok": false, "error": e })),
        )
            .into_response(),
    }
}

/// Samples the collector's own counters into the `collector` panel every
/// [`COLLECTOR_SAMPLE`], until `stop`.
pub async fn sample_collector(
    telemetry: Arc<Telemetry>,
    stop: tokio_util::sync::CancellationToken,
) {
    let board = telemetry.board();
    let mut tick = tokio::time::interval(COLLECTOR_SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(tokio::time::Instant, [i64; 3])> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut totals = [0i64; 3];
        let (mut queued, mut capacity) = (0i64, 0i64);
        let mut states = [0usize; 3];
        for c in telemetry.components() {
            match c.state() {
                CState::Ok | CState::Stopped => states[0] += 1,
                CState::Degraded | CState::Starting => states[1] += 1,
                CState::Failed => states[2] += 1,
            }
            for (k, v) in c.counter_values() {
                let name = k.split('{').next().unwrap_or("");
                match (c.kind, name) {
                    (Kind::Receiver, "accepted_items") => totals[0] += v,
                    (Kind::Receiver, "refused_items") => totals[1] += v,
                    (Kind::Exporter, "sent_items") => totals[2] += v,
                    (Kind::Exporter, "queue_size") => queued += v,
                    (Kind::Exporter, "queue_capacity") => capacity += v,
                    _ => {}
                }
            }
        }
        let service = telemetry.service_values();
        let get = |k: &str| {
            service
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| *v as f64)
                .unwrap_or(0.0)
        };
        let (used, limit) = (get("memory_used_bytes"), get("memory_limit_bytes"));
        let now = tokio::time::Instant::now();
        let rates = last.map(|(t, prev)| {
            let dt = now.duration_since(t).as_secs_f64().max(1e-3);
            [0, 1, 2].map(|i| (totals[i] - prev[i]).max(0) as f64 / dt)
        });
        last = Some((now, totals));
        let fill = if capacity > 0 {
            queued as f64 / capacity as f64 * 100.0
        } else {
            0.0
        };
        let mem_pct = if limit > 0.0 {
            used / limit * 100.0
        } else {
            0.0
        };
        let (health, tone) = match states {
            [_, _, f] if f > 0 => ("failing", Tone::Bad),
            [_, d, _] if d > 0 => ("degraded", Tone::Warn),
            _ => ("healthy", Tone::Ok),
        };
        board.update("collector", "collector", |e| {
            use super::board::{Badge, Field};
            e.title("Collector").badge(Some(Badge {
                text: health.into(),
                tone,
            }));
            let names = [
                ("accepted_per_s", "Accepted /s"),
                ("refused_per_s", "Refused /s"),
                ("sent_per_s", "Sent /s"),
            ];
            if rates.is_none() {
                // First sample: the rates need a second one; keep their place.
                for (key, label) in names {
                    e.field(Field::text(key, label, "…"));
                }
            }
            if let Some(r) = rates {
                for (i, (key, label)) in names.iter().enumerate() {
                    let mut f = Field::number(key, label, r[i], 1, "");
                    if i == 1 && r[i] > 0.0 {
                        f = f.tone(Tone::Warn);
                    }
                    e.field(f);
                    e.point(key, label, "/s", COLLECTOR_HISTORY, r[i]);
                }
            }
            e.field(
                Field::number("queue_fill_pct", "Queue fill", fill, 1, "%").tone(if fill >= 80.0 {
                    Tone::Bad
                } else if fill >= 50.0 {
                    Tone::Warn
                } else {
                    Tone::Neutral
                }),
            );
            e.field(
                Field::number("memory_mib", "Memory", used / 1048576.0, 1, " MiB").tone(
                    if mem_pct >= 90.0 {
                        Tone::Bad
                    } else if mem_pct >= 70.0 {
                        Tone::Warn
                    } else {
                        Tone::Neutral
                    },
                ),
            );
            e.field(Field::number(
                "memory_limit_mib",
                "memory_limit",
                limit / 1048576.0,
                0,
                " MiB",
            ));
            e.field(Field::text(
                "components",
                "Components",
                format!(
                    "{} ok, {} degraded, {} failed",
                    states[0], states[1], states[2]
                ),
            ));
            e.point(
                "memory_pct",
                "Memory (% of memory_limit)",
                "%",
                COLLECTOR_HISTORY,
                mem_pct,
            )
            .limit("memory_pct", Some(100.0));
            e.point("queue_fill_pct", "Queue fill", "%", COLLECTOR_HISTORY, fill);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"abc"));
    }

    #[test]
    fn assets_are_small_and_local() {
        let total = INDEX.len() + APP_JS.len() + APP_CSS.len();
        assert!(total < 250 * 1024, "{total} bytes");
        for a in [INDEX, APP_JS, APP_CSS] {
            // The SVG namespace is a name, not a request.
            let a = a.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !a.contains("http://") && !a.contains("https://"),
                "no remote URL in the assets"
            );
        }
    }
}
