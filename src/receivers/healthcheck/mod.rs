//! `healthcheck`: probes the services a trading system depends on. Every `interval` all
//! checks run at once, each bounded by its own timeout, so a round lasts about as long as
//! the slowest check (at most the longest timeout), however many checks there are.
//!
//! Each round emits, per check, `healthcheck.up` (1/0), `healthcheck.latency` (seconds)
//! and `healthcheck.consecutive_failures`, with the attributes `check`, `type`,
//! `critical` and `healthcheck` (this receiver's id); and `healthcheck.state`, the
//! aggregate: 0 HEALTHY (every check passes), 1 DEGRADED (only non-critical checks
//! fail), 2 UNHEALTHY (a critical check fails).
//!
//! The aggregate is also this receiver's state in `/status` (`ok`, `degraded`, `failed`),
//! with one line per check in its detail. After `alert_after` consecutive failures of a
//! check, one `HealthCheckFailing` alert is raised for the failure run (severity critical
//! for a critical check, else warning), and a resolved record when the check passes again.
//!
//! Credentials in URLs never leave the check: `/status`, logs, alerts and errors show
//! URLs with their user info as `***`, and every error text is scrubbed of the passwords.

#[cfg(feature = "aws")]
mod aws;
mod config;
pub mod probe;

use crate::component::{
    BuildContext, BuildError, ComponentId, Outputs, Receiver, ReceiverConfig, Running, Signal,
};
use crate::config::{ConfigError, Source};
use crate::otlp::{attr, MetricsBuilder, Timestamp};
use crate::pipeline::alerts::{Alert, AlertSink, AlertState, Severity};
use crate::pipeline::{Batch, Payload};
use crate::service::health::{ComponentHealth, State};
use config::{CheckSpec, HealthcheckConfig, ProbeSpec};
use futures_util::future::BoxFuture;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use probe::Failure;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::redact_url;

/// The alert raised after `alert_after` consecutive failures of a check.
pub const ALERT_NAME: &str = "HealthCheckFailing";

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ReceiverConfig>, ConfigError> {
    Ok(Arc::new(config::parse_config(src, id)?))
}

/// The aggregate of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Aggregate {
    Healthy = 0,
    Degraded = 1,
    Unhealthy = 2,
}

impl Aggregate {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Healthy => "HEALTHY",
            Aggregate::Degraded => "DEGRADED",
            Aggregate::Unhealthy => "UNHEALTHY",
        }
    }

    /// HEALTHY if every check passes, DEGRADED if only non-critical ones fail, UNHEALTHY
    /// if a critical one fails. `(critical, up)` per check.
    pub fn of(checks: impl IntoIterator<Item = (bool, bool)>) -> Aggregate {
        let mut out = Aggregate::Healthy;
        for (critical, up) in checks {
            if !up {
                if critical {
                    return Aggregate::Unhealthy;
                }
                out = Aggregate::Degraded;
            }
        }
        out
    }
}

enum Probe {
    Http(probe::HttpProbe),
    Tcp(String),
    Redis(probe::RedisProbe),
    Postgres(probe::PostgresProbe),
    Freqtrade(probe::FreqtradeProbe),
    #[cfg(feature = "aws")]
    Aws(aws::AwsProbe),
}

#[derive(Default)]
struct CheckStatus {
    /// `None` before the first round.
    up: Option<bool>,
    latency: Option<Duration>,
    consecutive_failures: u32,
    last_error: Option<String>,
    last_success: Option<SystemTime>,
    /// An alert fired for the current failure run.
    alerting: bool,
}

struct Check {
    spec: CheckSpec,
    probe: Probe,
    status: Mutex<CheckStatus>,
    up_gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Check {
    fn status(&self) -> std::sync::MutexGuard<'_, CheckStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the probe within the check's timeout; the outcome and its wall time.
    async fn run(&self, http: &reqwest::Client) -> (Result<(), Failure>, Duration) {
        let started = Instant::now();
        let timeout = self.spec.timeout;
        let probe = async {
            match &self.probe {
                Probe::Http(p) => p.run(http).await,
                Probe::Tcp(address) => probe::tcp(address).await,
                Probe::Redis(p) => p.run().await,
                Probe::Postgres(p) => p.run(timeout).await,
                Probe::Freqtrade(p) => p.run().await,
                #[cfg(feature = "aws")]
                Probe::Aws(p) => p.run().await,
            }
        };
        let result = match tokio::time::timeout(timeout, probe).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                "timeout",
                format!(
                    "timeout: no answer within {}",
                    humantime::format_duration(timeout)
                ),
            )),
        };
        let result = result.map_err(|f| Failure {
            reason: f.reason,
            message: self.spec.scrub(&f.message),
        });
        (result, started.elapsed())
    }
}

impl ReceiverConfig for HealthcheckConfig {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Metrics]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError> {
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| BuildError::new(&ctx.id, format!("HTTP client: {e}")))?;
        let checks = self
            .checks
            .iter()
            .map(|spec| {
                let probe = match &spec.probe {
                    ProbeSpec::Http(p) => Probe::Http(p.clone()),
                    ProbeSpec::Tcp(a) => Probe::Tcp(a.clone()),
                    ProbeSpec::Redis(p) => Probe::Redis(p.clone()),
                    ProbeSpec::Postgres(p) => Probe::Postgres(p.clone()),
                    ProbeSpec::Freqtrade { url, login, states } => {
                        Probe::Freqtrade(probe::FreqtradeProbe::new(
                            http.clone(),
                            url,
                            login.clone(),
                            states.clone(),
                            spec.timeout,
                        ))
                    }
                    #[cfg(feature = "aws")]
                    ProbeSpec::Aws {
                        resource,
                        region,
                        endpoint_url,
                    } => Probe::Aws(aws::AwsProbe::new(
                        resource.clone(),
                        region.clone(),
                        endpoint_url.clone(),
                        spec.timeout,
                    )),
                };
                Arc::new(Check {
                    up_gauge: ctx.health.gauge(
                        "check_up",
                        "1 when the health check's last run passed",
                        &[("check", spec.name.as_str())],
                    ),
                    spec: spec.clone(),
                    probe,
                    status: Mutex::default(),
                })
            })
            .collect();
        let round = Arc::new(Mutex::new(RoundStatus::default()));
        Ok(Box::new(HealthcheckReceiver {
            id: ctx.id.clone(),
            health: ctx.health.clone(),
            alerts: ctx.alerts.clone(),
            http,
            checks,
            interval: self.interval,
            alert_after: self.alert_after,
            round,
            state_gauge: ctx.health.gauge(
                "healthcheck_state",
                "Aggregate of the health checks: 0 HEALTHY, 1 DEGRADED, 2 UNHEALTHY",
                &[],
            ),
        }))
    }
}

#[derive(Default)]
struct RoundStatus {
    aggregate: Option<Aggregate>,
    duration: Option<Duration>,
    rounds: u64,
}

struct HealthcheckReceiver {
    id: ComponentId,
    health: Arc<ComponentHealth>,
    alerts: AlertSink,
    http: reqwest::Client,
    checks: Vec<Arc<Check>>,
    interval: Duration,
    alert_after: u32,
    round: Arc<Mutex<RoundStatus>>,
    state_gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Receiver for HealthcheckReceiver {
    fn start(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<Running, BuildError>> {
        Box::pin(async move {
            let Some(consumer) = outputs.get(Signal::Metrics).cloned() else {
                return Err(BuildError::new(
                    &self.id,
                    "no metrics pipeline takes from this receiver",
                ));
            };
            let (checks, round) = (self.checks.clone(), self.round.clone());
            self.health
                .set_detail_with(move || detail(&round_snapshot(&round), &checks));
            let run: Running = Box::pin(async move {
                let mut ticker = tokio::time::interval(self.interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = ticker.tick() => {}
                    }
                    let req = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = self.run_round() => r,
                    };
                    // Dropped (and counted as refused) when the service shuts down before
                    // the pipelines had room for it.
                    let _ = consumer
                        .deliver(Batch::new(Payload::Metrics(req)), Some(&shutdown))
                        .await;
                }
            });
            Ok(run)
        })
    }
}

fn round_snapshot(round: &Mutex<RoundStatus>) -> (Option<Aggregate>, Option<Duration>, u64) {
    let r = round.lock().unwrap_or_else(|e| e.into_inner());
    (r.aggregate, r.duration, r.rounds)
}

impl HealthcheckReceiver {
    /// Runs every check at once, records the outcomes, raises alerts, and returns the
    /// round's metrics.
    async fn run_round(&self) -> ExportMetricsServiceRequest {
        let started = Instant::now();
        let outcomes =
            futures_util::future::join_all(self.checks.iter().map(|c| c.run(&self.http))).await;
        let duration = started.elapsed();
        let now = Timestamp::now();
        let mut failing = Vec::new();
        for (check, (result, latency)) in self.checks.iter().zip(&outcomes) {
            self.record(check, result, *latency);
            if let Err(f) = result {
                failing.push((check.spec.critical, check.spec.name.as_str(), f));
            }
        }
        let aggregate = Aggregate::of(
            self.checks
                .iter()
                .zip(&outcomes)
                .map(|(c, (r, _))| (c.spec.critical, r.is_ok())),
        );
        {
            let mut r = self.round.lock().unwrap_or_else(|e| e.into_inner());
            r.aggregate = Some(aggregate);
            r.duration = Some(duration);
            r.rounds += 1;
        }
        self.state_gauge.set(aggregate as i64);
        let summary = |critical: bool| {
            failing
                .iter()
                .filter(|(c, _, _)| *c == critical)
                .map(|(_, name, f)| format!("{name}: {f}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        match aggregate {
            Aggregate::Healthy => self.health.report_ok(),
            Aggregate::Degraded => self.health.report_error(
                State::Degraded,
                format!("DEGRADED: non-critical checks failing: {}", summary(false)),
            ),
            Aggregate::Unhealthy => self.health.report_error(
                State::Failed,
                format!("UNHEALTHY: critical checks failing: {}", summary(true)),
            ),
        }
        self.metrics(&outcomes, aggregate, now)
    }

    fn record(&self, check: &Check, result: &Result<(), Failure>, latency: Duration) {
        let spec = &check.spec;
        let mut st = check.status();
        st.latency = Some(latency);
        st.up = Some(result.is_ok());
        check.up_gauge.set(i64::from(result.is_ok()));
        match result {
            Ok(()) => {
                let failures = st.consecutive_failures;
                st.consecutive_failures = 0;
                st.last_success = Some(SystemTime::now());
                if std::mem::take(&mut st.alerting) {
                    tracing::info!(check = %spec.name, kind = spec.kind, after_failures = failures, "health check passes again");
                    self.alerts.emit(self.alert(
                        spec,
                        AlertState::Resolved,
                        format!(
                            "health check {} ({}) passes again after {failures} failures",
                            spec.name, spec.kind
                        ),
                        failures,
                    ));
                }
            }
            Err(f) => {
                st.consecutive_failures = st.consecutive_failures.saturating_add(1);
                st.last_error = Some(f.message.clone());
                let n = st.consecutive_failures;
                tracing::warn!(check = %spec.name, kind = spec.kind, critical = spec.critical, reason = f.reason, error = %f.message, latency_ms = latency.as_millis() as u64, consecutive_failures = n, "health check failed");
                if n >= self.alert_after && !st.alerting {
                    st.alerting = true;
                    self.alerts.emit(self.alert(
                        spec,
                        AlertState::Firing,
                        format!(
                            "health check {} ({}, {}) failed {n} times in a row: {}",
                            spec.name,
                            spec.kind,
                            if spec.critical {
                                "critical"
                            } else {
                                "non-critical"
                            },
                            f.message
                        ),
                        n,
                    ));
                }
            }
        }
    }

    fn alert(&self, spec: &CheckSpec, state: AlertState, summary: String, failures: u32) -> Alert {
        let severity = if spec.critical {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let mut attributes = vec![
            attr("check", spec.name.as_str()),
            attr("type", spec.kind),
            attr("critical", if spec.critical { "true" } else { "false" }),
            attr("healthcheck", self.id.as_str()),
            attr("target", spec.target.as_str()),
            attr("consecutive_failures", i64::from(failures)),
        ];
        let severity = match state {
            AlertState::Firing => severity,
            AlertState::Resolved => {
                attributes.push(attr("alert.resolves_severity", severity.as_str()));
                Severity::Info
            }
        };
        Alert {
            name: ALERT_NAME.into(),
            state,
            severity,
            summary,
            fingerprint: fingerprint(self.id.as_str(), &spec.name),
            attributes,
            trace_id: None,
            source: self.id.to_string(),
        }
    }

    fn metrics(
        &self,
        outcomes: &[(Result<(), Failure>, Duration)],
        aggregate: Aggregate,
        t: Timestamp,
    ) -> ExportMetricsServiceRequest {
        let mut b = MetricsBuilder::new();
        b.resource([attr("service.name", "tradewatch")])
            .scope("tradewatch.healthcheck", env!("CARGO_PKG_VERSION"));
        let labels = |c: &Check| {
            vec![
                attr("check", c.spec.name.as_str()),
                attr("type", c.spec.kind),
                attr("critical", c.spec.critical),
                attr("healthcheck", self.id.as_str()),
            ]
        };
        b.gauge(
            "healthcheck.up",
            "",
            "1 when the check's last run passed, else 0",
        );
        for (c, (r, _)) in self.checks.iter().zip(outcomes) {
            b.point(i64::from(r.is_ok()), labels(c), t);
        }
        b.gauge(
            "healthcheck.latency",
            "s",
            "Wall time of the check's last run (up to its timeout)",
        );
        for (c, (_, latency)) in self.checks.iter().zip(outcomes) {
            b.point(latency.as_secs_f64(), labels(c), t);
        }
        b.gauge(
            "healthcheck.consecutive_failures",
            "{failure}",
            "Runs of the check failed in a row (0 after a pass)",
        );
        for c in &self.checks {
            b.point(i64::from(c.status().consecutive_failures), labels(c), t);
        }
        b.gauge(
            "healthcheck.state",
            "",
            "Aggregate of the checks: 0 HEALTHY, 1 DEGRADED (only non-critical checks fail), 2 UNHEALTHY (a critical check fails)",
        )
        .point(
            aggregate as i64,
            vec![attr("healthcheck", self.id.as_str())],
            t,
        );
        b.build()
    }
}

/// Stable per (receiver, check): a failure run's firing and resolved records share it,
/// whatever the error said.
fn fingerprint(receiver: &str, check: &str) -> String {
    crate::pipeline::alerts::fingerprint(ALERT_NAME, [("healthcheck", receiver), ("check", check)])
}

/// `/status` detail: the aggregate, then one line per check.
fn detail(round: &(Option<Aggregate>, Option<Duration>, u64), checks: &[Arc<Check>]) -> String {
    let (aggregate, duration, rounds) = round;
    let mut lines = Vec::with_capacity(checks.len() + 1);
    lines.push(match (aggregate, duration) {
        (Some(a), Some(d)) => format!(
            "{} ({} checks, round {rounds} took {}ms)",
            a.as_str(),
            checks.len(),
            d.as_millis()
        ),
        _ => format!("PENDING ({} checks, no round finished yet)", checks.len()),
    });
    for c in checks {
        let st = c.status();
        let state = match st.up {
            None => "pending",
            Some(true) => "up",
            Some(false) => "down",
        };
        let latency = st
            .latency
            .map(|d| format!("{}ms", d.as_millis()))
            .unwrap_or_else(|| "-".into());
        let mut line = format!(
            "{}: {state} type={} critical={} target={} latency={latency} consecutive_failures={}",
            c.spec.name, c.spec.kind, c.spec.critical, c.spec.target, st.consecutive_failures
        );
        if let Some(t) = st.last_success {
            line.push_str(&format!(
                " last_success={}",
                humantime::format_rfc3339_millis(t)
            ));
        }
        if let Some(e) = &st.last_error {
            line.push_str(&format!(" last_error=\"{e}\""));
        }
        lines.push(line);
    }
    lines.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_states() {
        assert_eq!(Aggregate::of([]), Aggregate::Healthy);
        assert_eq!(
            Aggregate::of([(true, true), (false, true)]),
            Aggregate::Healthy
        );
        assert_eq!(
            Aggregate::of([(true, true), (false, false)]),
            Aggregate::Degraded
        );
        assert_eq!(
            Aggregate::of([(false, false), (true, false)]),
            Aggregate::Unhealthy
        );
    }

    #[test]
    fn fingerprint_is_per_check() {
        assert_eq!(
            fingerprint("healthcheck", "redis"),
            fingerprint("healthcheck", "redis")
        );
        assert_ne!(
            fingerprint("healthcheck", "redis"),
            fingerprint("healthcheck", "db")
        );
        assert_ne!(
            fingerprint("healthcheck/a", "redis"),
            fingerprint("healthcheck/b", "redis")
        );
    }
}
