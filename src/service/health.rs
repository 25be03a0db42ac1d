//! Per-component health and counters, the same for every kind of component.
//!
//! Every component is registered once in [`Telemetry`]; it gets a [`ComponentHealth`]
//! to report its state and last error, and creates its counters through it. `/status`
//! and `/metrics` read the same handles, so a new component shows up in both simply by
//! being built.

use crate::component::{ComponentId, Kind};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Starting,
    Ok,
    /// Working, but something is wrong (an exporter retrying, a poll failing).
    Degraded,
    /// Not doing its job.
    Failed,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Overall {
    Healthy,
    Degraded,
    Unhealthy,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub message: String,
    #[serde(with = "humantime_serde_compat")]
    pub at: SystemTime,
}

mod humantime_serde_compat {
    use serde::Serializer;
    use std::time::SystemTime;
    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
    }
}

#[derive(Debug)]
struct HealthInner {
    state: State,
    since: Instant,
    last_error: Option<LastError>,
    detail: Detail,
}

/// What `/status` shows as a component's `detail`.
#[derive(Clone, Default)]
enum Detail {
    #[default]
    None,
    Text(String),
    /// Rendered when `/status` is read: for a detail that changes with every poll of many
    /// targets, where rebuilding it on each change would cost more than reading it.
    Live(Arc<dyn Fn() -> String + Send + Sync>),
}

impl std::fmt::Debug for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Detail::None => f.write_str("None"),
            Detail::Text(t) => write!(f, "Text({t:?})"),
            Detail::Live(_) => f.write_str("Live(..)"),
        }
    }
}

enum Metric {
    Counter(Counter),
    Gauge(Gauge),
}

impl Metric {
    fn value(&self) -> i64 {
        match self {
            Metric::Counter(c) => c.get() as i64,
            Metric::Gauge(g) => g.get(),
        }
    }
}

pub struct ComponentHealth {
    pub id: ComponentId,
    pub kind: Kind,
    /// A failed critical component makes the whole service UNHEALTHY.
    pub critical: bool,
    inner: Mutex<HealthInner>,
    /// Mirrors `inner.state == Ok`, so the hot success path needs no lock.
    is_ok: AtomicBool,
    metrics: Mutex<Vec<(String, Metric)>>,
    telemetry: Arc<TelemetryInner>,
}

impl std::fmt::Debug for ComponentHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ComponentHealth({} {})", self.kind.as_str(), self.id)
    }
}

impl ComponentHealth {
    pub fn set_state(&self, state: State) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.transition(&mut g, state);
    }

    pub fn state(&self) -> State {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).state
    }

    /// Records an error and the state it leaves the component in. The message must not
    /// contain secrets: callers pass errors already redacted.
    pub fn report_error(&self, state: State, message: impl Into<String>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.last_error = Some(LastError {
            message: message.into(),
            at: SystemTime::now(),
        });
        self.transition(&mut g, state);
    }

    /// Back to `Ok` after errors; the last error stays visible for diagnosis. Called
    /// after every successful export, so it costs an atomic load while already `Ok`.
    pub fn report_ok(&self) {
        if self.is_ok.load(Ordering::Acquire) {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.state != State::Stopped {
            self.transition(&mut g, State::Ok);
        }
    }

    fn transition(&self, g: &mut HealthInner, state: State) {
        if g.state != state {
            g.state = state;
            g.since = Instant::now();
        }
        self.is_ok.store(state == State::Ok, Ordering::Release);
    }

    /// The counter of this component's failures (`tradewatch_<kind>_failures_total`);
    /// registering it at start-up makes a zero visible before anything fails.
    pub fn failures(&self) -> Counter {
        self.counter(
            "failures",
            "Times the component failed: it panicked, or its task ended before shutdown",
            &[],
        )
    }

    /// Marks the component `failed` for good, with the reason in `/status`, and counts it.
    pub fn report_failure(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::error!(component = %self.id, kind = self.kind.as_str(), reason = %message, "component failed");
        self.failures().inc();
        self.report_error(State::Failed, message);
    }

    pub fn set_detail(&self, detail: Option<String>) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).detail =
            detail.map_or(Detail::None, Detail::Text);
    }

    /// A detail rendered by `render` each time `/status` is read (it must not call back
    /// into this component's health).
    pub fn set_detail_with(&self, render: impl Fn() -> String + Send + Sync + 'static) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).detail =
            Detail::Live(Arc::new(render));
    }

    /// A counter named `tradewatch_<kind>_<name>_total`, labelled with this component's id
    /// and `labels`.
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        let family = self.telemetry.counter_family(&self.metric_name(name), help);
        let c = family.get_or_create(&self.labels(labels)).clone();
        self.remember(name, labels, Metric::Counter(c.clone()));
        c
    }

    /// A gauge named `tradewatch_<kind>_<name>`.
    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        let family = self.telemetry.gauge_family(&self.metric_name(name), help);
        let g = family.get_or_create(&self.labels(labels)).clone();
        self.remember(name, labels, Metric::Gauge(g.clone()));
        g
    }

    fn metric_name(&self, name: &str) -> String {
        format!("tradewatch_{}_{}", self.kind.as_str(), name)
    }

    fn labels(&self, extra: &[(&str, &str)]) -> Labels {
        let mut l = Vec::with_capacity(extra.len() + 1);
        l.push((self.kind.as_str().to_owned(), self.id.to_string()));
        l.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        l
    }

    fn remember(&self, name: &str, labels: &[(&str, &str)], m: Metric) {
        let key = if labels.is_empty() {
            name.to_owned()
        } else {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", l.join(","))
        };
        let mut g = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        if !g.iter().any(|(k, _)| *k == key) {
            g.push((key, m));
        }
    }

    /// Every counter and gauge of this component, keyed as in `/status`.
    pub fn counter_values(&self) -> Vec<(String, i64)> {
        let metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        metrics
            .iter()
            .map(|(k, m)| (k.clone(), m.value()))
            .collect()
    }

    fn snapshot(&self) -> ComponentStatus {
        // Rendered outside the lock: the renderer takes the component's own locks.
        let detail = match self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .detail
            .clone()
        {
            Detail::None => None,
            Detail::Text(t) => Some(t),
            Detail::Live(render) => Some(render()),
        };
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        ComponentStatus {
            id: self.id.to_string(),
            kind: self.kind.as_str(),
            critical: self.critical,
            state: g.state,
            state_for_seconds: g.since.elapsed().as_secs_f64(),
            last_error: g.last_error.clone(),
            detail,
            counters: metrics
                .iter()
                .map(|(k, m)| (k.clone(), m.value()))
                .collect(),
        }
    }
}

/// The message of a caught panic (`panic!("...")` payloads are `&str` or `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    format!("panicked: {text}")
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentStatus {
    pub id: String,
    pub kind: &'static str,
    pub critical: bool,
    pub state: State,
    pub state_for_seconds: f64,
    pub last_error: Option<LastError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub counters: std::collections::BTreeMap<String, i64>,
}

/// Where the service is in its life: `starting` while components are built and
/// receivers start (the service endpoint already answers), `running`, then `draining`
/// once shutdown began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    Running,
    Draining,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub status: Overall,
    pub phase: Phase,
    pub version: &'static str,
    pub uptime_seconds: f64,
    /// Service-wide gauges (`memory_used_bytes`, `memory_limit_bytes`).
    pub service: std::collections::BTreeMap<String, i64>,
    pub components: Vec<ComponentStatus>,
}

#[derive(Default)]
struct TelemetryInner {
    registry: Mutex<Registry>,
    counters: Mutex<HashMap<String, Family<Labels, Counter>>>,
    gauges: Mutex<HashMap<String, Family<Labels, Gauge>>>,
}

impl TelemetryInner {
    fn counter_family(&self, name: &str, help: &str) -> Family<Labels, Counter> {
        let mut map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_owned())
            .or_insert_with(|| {
                let f = Family::<Labels, Counter>::default();
                self.registry
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .register(name, help, f.clone());
                f
            })
            .clone()
    }

    fn gauge_family(&self, name: &str, help: &str) -> Family<Labels, Gauge> {
        let mut map = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_owned())
            .or_insert_with(|| {
                let f = Family::<Labels, Gauge>::default();
                self.registry
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .register(name, help, f.clone());
                f
            })
            .clone()
    }
}

/// The registry of components and their metrics behind `/status` and `/metrics`.
pub struct Telemetry {
    inner: Arc<TelemetryInner>,
    phase: Mutex<Phase>,
    components: Mutex<Vec<Arc<ComponentHealth>>>,
    service: Mutex<Vec<(String, Gauge)>>,
    started: Instant,
    board: Arc<super::board::Board>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            inner: Arc::default(),
            phase: Mutex::new(Phase::Starting),
            components: Mutex::default(),
            service: Mutex::default(),
            started: Instant::now(),
            board: Arc::default(),
        }
    }
}

impl Telemetry {
    pub fn new() -> Arc<Telemetry> {
        Arc::new(Telemetry::default())
    }

    /// Registers a component (or returns the one already registered under that kind and id).
    pub fn component(&self, kind: Kind, id: &ComponentId, critical: bool) -> Arc<ComponentHealth> {
        let mut list = self.components.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = list.iter().find(|c| c.kind == kind && &c.id == id) {
            return c.clone();
        }
        let c = Arc::new(ComponentHealth {
            id: id.clone(),
            kind,
            critical,
            inner: Mutex::new(HealthInner {
                state: State::Starting,
                since: Instant::now(),
                last_error: None,
                detail: Detail::None,
            }),
            is_ok: AtomicBool::new(false),
            metrics: Mutex::default(),
            telemetry: self.inner.clone(),
        });
        list.push(c.clone());
        c
    }

    /// A service-wide gauge `tradewatch_<name>` without labels, also under `service` in
    /// `/status`.
    pub fn service_gauge(&self, name: &str, help: &str) -> Gauge {
        let mut list = self.service.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, g)) = list.iter().find(|(n, _)| n == name) {
            return g.clone();
        }
        let g = Gauge::default();
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(format!("tradewatch_{name}"), help, g.clone());
        list.push((name.to_owned(), g.clone()));
        g
    }

    /// What `/ui` shows: components publish panels here, alerts land in its timeline.
    pub fn board(&self) -> Arc<super::board::Board> {
        self.board.clone()
    }

    /// A service-wide counter `tradewatch_<name>_total` with `labels` (not tied to a
    /// component: the service endpoint's own, such as refused `/ui` actions).
    pub fn service_counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        let family = self
            .inner
            .counter_family(&format!("tradewatch_{name}"), help);
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let counter = family.get_or_create(&labels).clone();
        counter
    }

    /// The service-wide gauges (`memory_used_bytes`, `memory_limit_bytes`).
    pub fn service_values(&self) -> Vec<(String, i64)> {
        self.service
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, g)| (n.clone(), g.get()))
            .collect()
    }

    pub fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_phase(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
    }

    pub fn components(&self) -> Vec<Arc<ComponentHealth>> {
        self.components
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Prometheus/OpenMetrics text of every registered metric.
    pub fn encode_metrics(&self) -> String {
        let mut out = String::new();
        let reg = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &reg);
        out
    }

    pub fn status(&self) -> StatusReport {
        let components: Vec<ComponentStatus> =
            self.components().iter().map(|c| c.snapshot()).collect();
        let status = overall(&components);
        StatusReport {
            status,
            phase: self.phase(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            service: self
                .service
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(n, g)| (n.clone(), g.get()))
                .collect(),
            components,
        }
    }
}

/// UNHEALTHY when a critical component failed (or stopped while the service runs),
/// DEGRADED when any component is degraded or a non-critical one failed, else HEALTHY.
fn overall(components: &[ComponentStatus]) -> Overall {
    let mut out = Overall::Healthy;
    for c in components {
        match c.state {
            State::Failed if c.critical => return Overall::Unhealthy,
            State::Failed | State::Degraded | State::Starting => out = Overall::Degraded,
            State::Ok | State::Stopped => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_state_follows_critical_flags() {
        let t = Telemetry::default();
        let a = t.component(Kind::Exporter, &ComponentId::parse("otlp/a").unwrap(), true);
        let b = t.component(Kind::Exporter, &ComponentId::parse("file").unwrap(), false);
        a.set_state(State::Ok);
        b.set_state(State::Ok);
        assert_eq!(t.status().status, Overall::Healthy);
        b.report_error(State::Failed, "disk full");
        assert_eq!(t.status().status, Overall::Degraded);
        a.report_error(State::Failed, "unreachable");
        assert_eq!(t.status().status, Overall::Unhealthy);
        a.report_ok();
        b.report_ok();
        assert_eq!(t.status().status, Overall::Healthy);
        assert_eq!(
            t.status().components[0]
                .last_error
                .as_ref()
                .unwrap()
                .message,
            "unreachable"
        );
    }

    #[test]
    fn counters_reach_status_and_metrics() {
        let t = Telemetry::default();
        let r = t.component(Kind::Receiver, &ComponentId::parse("otlp").unwrap(), true);
        let c = r.counter("accepted_items", "Items accepted.", &[("signal", "traces")]);
        c.inc_by(7);
        let text = t.encode_metrics();
        assert!(
            text.contains(
                "tradewatch_receiver_accepted_items_total{receiver=\"otlp\",signal=\"traces\"} 7"
            ),
            "{text}"
        );
        let st = t.status();
        assert_eq!(
            st.components[0].counters["accepted_items{signal=\"traces\"}"],
            7
        );
    }
}
