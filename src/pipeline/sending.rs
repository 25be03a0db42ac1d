//! The sending machinery every exporter shares: a bounded queue, a number of concurrent
//! senders, and per request a timeout and retries with exponential backoff (tower's
//! `Retry` and `Timeout` layers), honouring the peer's own pushback (`Retry-After`).
//!
//! Counters (per exporter and signal): `sent_items`, `send_failed_items` (given up after
//! a permanent error or when retries ran out), `dropped_items` (abandoned at the shutdown
//! deadline), `retries` (attempts that were retried), plus `queue_size` and
//! `queue_capacity` gauges.

use crate::component::{ExportError, Exporter, Signal};
use crate::config::HumanDuration;
use crate::pipeline::ack::{fail_all, Ack};
use crate::pipeline::Payload;
use crate::service::health::{ComponentHealth, State};
use futures_util::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::retry::backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::util::rng::HasherRng;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// `[exporters.X.sending_queue]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Batches held while the exporter is busy; a full queue pushes back on pipelines.
    pub queue_size: usize,
    /// Requests in flight at once.
    pub num_consumers: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            queue_size: 256,
            num_consumers: 4,
        }
    }
}

/// `[exporters.X.retry_on_failure]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub enabled: bool,
    pub initial_interval: HumanDuration,
    pub max_interval: HumanDuration,
    /// Give up on a batch after retrying it this long.
    pub max_elapsed_time: HumanDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: HumanDuration::from_secs(1),
            max_interval: HumanDuration::from_secs(30),
            max_elapsed_time: HumanDuration::from_secs(300),
        }
    }
}

/// Sending settings as one exporter's config gives them.
#[derive(Debug, Clone)]
pub struct SendingSettings {
    pub queue: QueueConfig,
    pub retry: RetryConfig,
    pub timeout: Duration,
}

impl SendingSettings {
    /// For exporters that work inside the process (file, stderr, nothing): a queue of
    /// `queue_size` batches, `num_consumers` at a time, default retries.
    pub fn in_process(
        queue_size: usize,
        num_consumers: usize,
        timeout: Duration,
    ) -> SendingSettings {
        SendingSettings {
            queue: QueueConfig {
                queue_size,
                num_consumers,
            },
            retry: RetryConfig::default(),
            timeout,
        }
    }

    /// Checks the settings; an error names the offending key (as path segments) and why.
    pub fn validate(&self) -> Result<(), (&'static [&'static str], String)> {
        if self.queue.queue_size == 0 {
            return Err((
                &["sending_queue", "queue_size"],
                "queue_size must be at least 1".into(),
            ));
        }
        if self.queue.num_consumers == 0 {
            return Err((
                &["sending_queue", "num_consumers"],
                "num_consumers must be at least 1".into(),
            ));
        }
        if self.retry.initial_interval.get() > self.retry.max_interval.get() {
            return Err((
                &["retry_on_failure", "initial_interval"],
                "initial_interval is larger than max_interval".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err((&["timeout"], "timeout must be more than 0s".into()));
        }
        Ok(())
    }
}

/// One copy of a batch on its way to one exporter.
pub struct ExportItem {
    pub payload: Arc<Payload>,
    pub acks: Vec<Ack>,
}

#[derive(Clone)]
struct SignalCounters {
    sent: Counter,
    failed: Counter,
    dropped: Counter,
}

#[derive(Clone)]
struct Counters {
    by_signal: [SignalCounters; 3],
    retries: Counter,
    queue_size: Gauge,
}

impl Counters {
    fn new(health: &ComponentHealth, queue_capacity: usize) -> Counters {
        let mk = |s: Signal| SignalCounters {
            sent: health.counter(
                "sent_items",
                "Items delivered by the exporter",
                &[("signal", s.as_str())],
            ),
            failed: health.counter(
                "send_failed_items",
                "Items the exporter gave up on after a permanent error or exhausted retries",
                &[("signal", s.as_str())],
            ),
            dropped: health.counter(
                "dropped_items",
                "Items abandoned in the exporter's queue at the shutdown deadline",
                &[("signal", s.as_str())],
            ),
        };
        let cap = health.gauge("queue_capacity", "Batches the sending queue can hold", &[]);
        cap.set(queue_capacity as i64);
        Counters {
            by_signal: [mk(Signal::Traces), mk(Signal::Metrics), mk(Signal::Logs)],
            retries: health.counter(
                "retries",
                "Export requests that failed and were retried",
                &[],
            ),
            queue_size: health.gauge("queue_size", "Batches waiting in the sending queue", &[]),
        }
    }

    fn of(&self, s: Signal) -> &SignalCounters {
        &self.by_signal[s.index()]
    }
}

/// Where a pipeline hands data to one exporter.
#[derive(Clone)]
pub struct ExporterHandle {
    tx: mpsc::Sender<ExportItem>,
    counters: Counters,
}

impl ExporterHandle {
    /// Queues an item, waiting while the queue is full (that wait is the back-pressure).
    pub async fn send(&self, item: ExportItem) {
        match self.tx.reserve().await {
            Ok(permit) => {
                // Counted before it can be taken out, so the gauge never goes below zero.
                self.counters.queue_size.inc();
                permit.send(item);
            }
            Err(_) => {
                // Only happens when the exporter was torn down at the shutdown deadline.
                self.counters
                    .of(item.payload.signal())
                    .dropped
                    .inc_by(item.payload.items());
                fail_all(&item.acks);
            }
        }
    }
}

/// The exporter as a tower service: one call, one attempt.
#[derive(Clone)]
struct Attempt(Arc<dyn Exporter>);

impl Service<Arc<Payload>> for Attempt {
    type Response = ();
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<(), BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, p: Arc<Payload>) -> Self::Future {
        let f = self.0.export(p);
        Box::pin(async move { f.await.map_err(BoxError::from) })
    }
}

/// Retry policy: retryable errors and timeouts are retried with exponential backoff (or
/// after the peer's `Retry-After`), until `max_elapsed_time` has passed since the first
/// failure. A clone lives with each request, so the backoff state is per request.
#[derive(Clone)]
struct RetryPolicy {
    enabled: bool,
    backoff: ExponentialBackoff,
    max_elapsed: Duration,
    first_failure: Option<Instant>,
    retries: Counter,
    health: Arc<ComponentHealth>,
}

impl tower::retry::Policy<Arc<Payload>, (), BoxError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Arc<Payload>,
        result: &mut Result<(), BoxError>,
    ) -> Option<Self::Future> {
        let err = result.as_ref().err()?;
        let (retryable, retry_after) = classify(err);
        self.health.report_error(State::Degraded, err.to_string());
        if !retryable || !self.enabled {
            return None;
        }
        let now = Instant::now();
        let first = *self.first_failure.get_or_insert(now);
        let left = self.max_elapsed.checked_sub(now - first)?;
        let wait = match retry_after {
            Some(d) => d,
            None => self
                .backoff
                .next_backoff()
                .deadline()
                .saturating_duration_since(now),
        };
        if wait > left {
            return None;
        }
        self.retries.inc();
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(&mut self, req: &Arc<Payload>) -> Option<Arc<Payload>> {
        Some(req.clone())
    }
}

/// (retryable, server-requested delay)
fn classify(err: &BoxError) -> (bool, Option<Duration>) {
    if let Some(e) = err.downcast_ref::<ExportError>() {
        return match e {
            ExportError::Retryable { retry_after, .. } => (true, *retry_after),
            ExportError::Permanent { .. } => (false, None),
        };
    }
    // tower's timeout error, or anything unexpected: worth another try.
    (err.is::<tower::timeout::error::Elapsed>(), None)
}

/// Starts an exporter's sending loop; returns the handle pipelines send to and the task
/// that ends once every pipeline has dropped its handle and the queue is drained.
pub fn spawn(
    exporter: Arc<dyn Exporter>,
    settings: &SendingSettings,
    health: Arc<ComponentHealth>,
    hard_stop: CancellationToken,
) -> (ExporterHandle, tokio::task::JoinHandle<()>) {
    let counters = Counters::new(&health, settings.queue.queue_size);
    let (tx, mut rx) = mpsc::channel::<ExportItem>(settings.queue.queue_size);
    let handle = ExporterHandle {
        tx,
        counters: counters.clone(),
    };
    // ExponentialBackoffMaker only fails on min > max or bad jitter, which validation rules out.
    let backoff = ExponentialBackoffMaker::new(
        settings.retry.initial_interval.get(),
        settings.retry.max_interval.get(),
        0.2,
        HasherRng::default(),
    )
    .map(|mut m| m.make_backoff());
    let policy = RetryPolicy {
        enabled: settings.retry.enabled,
        backoff: backoff.unwrap_or_else(|_| {
            ExponentialBackoffMaker::new(
                Duration::from_secs(1),
                Duration::from_secs(30),
                0.2,
                HasherRng::default(),
            )
            .expect("constant backoff parameters are valid")
            .make_backoff()
        }),
        max_elapsed: settings.retry.max_elapsed_time.get(),
        first_failure: None,
        retries: counters.retries.clone(),
        health: health.clone(),
    };
    let service = ServiceBuilder::new()
        .retry(policy)
        .timeout(settings.timeout)
        .service(Attempt(exporter.clone()));
    let limit = Arc::new(Semaphore::new(settings.queue.num_consumers));
    health.set_state(State::Ok);
    let task = tokio::spawn(async move {
        // Requests in flight; shutdown waits for them so that each one ends counted.
        let in_flight = TaskTracker::new();
        loop {
            let item = tokio::select! {
                biased;
                _ = hard_stop.cancelled() => break,
                item = rx.recv() => match item {
                    Some(item) => item,
                    None => break,
                },
            };
            counters.queue_size.dec();
            let permit = tokio::select! {
                _ = hard_stop.cancelled() => {
                    abandon(&counters, item);
                    break;
                }
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let svc = service.clone();
            let counters = counters.clone();
            let health = health.clone();
            let hard_stop = hard_stop.clone();
            in_flight.spawn(async move {
                let signal = item.payload.signal();
                let items = item.payload.items();
                let result = tokio::select! {
                    r = svc.oneshot(item.payload.clone()) => r,
                    _ = hard_stop.cancelled() => {
                        abandon(&counters, item);
                        return;
                    }
                };
                match result {
                    Ok(()) => {
                        counters.of(signal).sent.inc_by(items);
                        health.report_ok();
                    }
                    Err(e) => {
                        counters.of(signal).failed.inc_by(items);
                        health.report_error(
                            State::Degraded,
                            format!("gave up on {items} {}: {e}", signal.item_name()),
                        );
                        tracing::error!(exporter = %health.id, %signal, items, error = %e, "export failed; data dropped");
                        fail_all(&item.acks);
                    }
                }
                drop(permit);
            });
        }
        if hard_stop.is_cancelled() {
            // The shutdown deadline passed: what is still queued is lost, and counted.
            rx.close();
            while let Ok(item) = rx.try_recv() {
                counters.queue_size.dec();
                abandon(&counters, item);
            }
        }
        // Every request in flight ends: delivered, given up, or (past the deadline)
        // abandoned and counted. They watch `hard_stop`, so this wait is bounded.
        in_flight.close();
        in_flight.wait().await;
        exporter.shutdown().await;
        health.set_state(State::Stopped);
    });
    (handle, task)
}

fn abandon(counters: &Counters, item: ExportItem) {
    let signal = item.payload.signal();
    let items = item.payload.items();
    counters.of(signal).dropped.inc_by(items);
    tracing::error!(%signal, items, "shutdown deadline reached: dropping queued data");
    fail_all(&item.acks);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::{ComponentId, Kind};
    use crate::pipeline::{Ack, Delivery};
    use crate::service::health::Telemetry;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails the first `failures` attempts with `error`, then succeeds.
    struct Flaky {
        attempts: Arc<AtomicUsize>,
        failures: usize,
        error: ExportError,
    }

    impl Exporter for Flaky {
        fn export(&self, _p: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
            let n = self.attempts.fetch_add(1, Ordering::SeqCst);
            let r = if n < self.failures {
                Err(self.error.clone())
            } else {
                Ok(())
            };
            Box::pin(async move { r })
        }
    }

    fn settings() -> SendingSettings {
        SendingSettings {
            queue: QueueConfig {
                queue_size: 4,
                num_consumers: 1,
            },
            retry: RetryConfig {
                enabled: true,
                initial_interval: HumanDuration::from_millis(10),
                max_interval: HumanDuration::from_millis(20),
                max_elapsed_time: HumanDuration::from_millis(500),
            },
            timeout: Duration::from_secs(1),
        }
    }

    async fn deliver(failures: usize, error: ExportError) -> (Delivery, usize, Arc<Telemetry>) {
        let t = Telemetry::new();
        let health = t.component(Kind::Exporter, &ComponentId::parse("flaky").unwrap(), true);
        let attempts = Arc::new(AtomicUsize::new(0));
        let exporter = Arc::new(Flaky {
            attempts: attempts.clone(),
            failures,
            error,
        });
        let (handle, task) = spawn(exporter, &settings(), health, CancellationToken::new());
        let (ack, waiter) = Ack::new();
        handle
            .send(ExportItem {
                payload: Arc::new(Payload::Logs(Default::default())),
                acks: vec![ack],
            })
            .await;
        drop(handle);
        let outcome = waiter.wait().await;
        task.await.unwrap();
        (outcome, attempts.load(Ordering::SeqCst), t)
    }

    #[tokio::test]
    async fn retryable_failures_are_retried_then_delivered() {
        let (outcome, attempts, t) = deliver(3, ExportError::retryable("down")).await;
        assert_eq!(outcome, Delivery::Delivered);
        assert_eq!(attempts, 4);
        assert!(t
            .encode_metrics()
            .contains("tradewatch_exporter_retries_total{exporter=\"flaky\"} 3"));
    }

    #[tokio::test]
    async fn permanent_failures_give_up_at_once() {
        let (outcome, attempts, t) = deliver(1, ExportError::permanent("rejected")).await;
        assert_eq!(outcome, Delivery::GaveUp);
        assert_eq!(attempts, 1);
        let st = t.status();
        let last = st.components[0].last_error.as_ref().unwrap();
        assert!(last.message.contains("rejected"), "{}", last.message);
    }

    #[tokio::test]
    async fn retries_stop_at_max_elapsed_time() {
        let (outcome, attempts, _) = deliver(usize::MAX, ExportError::retryable("down")).await;
        assert_eq!(outcome, Delivery::GaveUp);
        // 10ms doubling to 20ms within 500ms: many attempts, but a bounded number.
        assert!((3..=60).contains(&attempts), "{attempts} attempts");
    }

    #[tokio::test]
    async fn server_pushback_sets_the_delay() {
        let started = std::time::Instant::now();
        let err = ExportError::Retryable {
            message: "slow down".into(),
            retry_after: Some(Duration::from_millis(300)),
        };
        let (outcome, attempts, _) = deliver(1, err).await;
        assert_eq!(outcome, Delivery::Delivered);
        assert_eq!(attempts, 2);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
