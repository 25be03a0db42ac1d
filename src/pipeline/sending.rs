//! The sending machinery every exporter shares: a bounded queue, a number of concurrent
//! senders, and per request a timeout and retries with exponential backoff (tower's
//! `Retry` and `Timeout` layers), honouring the peer's own pushback (`Retry-After`).
//!
//! When the queue is full, `on_full = "block"` makes the pipeline wait (back-pressure up
//! to the receivers); `"drop_oldest"` drops the oldest queued batch instead, so sending
//! to this exporter never waits: for alert channels and best-effort sinks that must
//! never hold up the other exporters of their pipeline.
//!
//! A panic in an exporter is caught where its request runs: the batch counts as failed
//! (its acks resolve `GaveUp`), the exporter shows `failed` with the panic message until
//! its next successful export, and it keeps taking batches.
//!
//! Counters (per exporter and signal): `sent_items`, `send_failed_items` (given up after
//! a permanent error, when retries ran out, or when the exporter panicked),
//! `dropped_items` (dropped by `drop_oldest`, or abandoned at the shutdown deadline);
//! per exporter `retries`, `panics`, and the `queue_size` and `queue_capacity` gauges.

use crate::component::{ExportError, Exporter, Signal};
use crate::config::{HumanDuration, HumanSize};
use crate::pipeline::ack::{delivered_all, Ack};
use crate::pipeline::memory::Lease;
use crate::pipeline::Payload;
use crate::service::health::{ComponentHealth, State};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

mod disk;
pub use disk::spawn_disk;
use tower::retry::backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::util::rng::HasherRng;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// `[exporters.X.sending_queue]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Batches held while the exporter is busy.
    pub queue_size: usize,
    /// Requests in flight at once.
    pub num_consumers: usize,
    /// What a full queue does to the pipelines sending to it.
    pub on_full: OnFull,
    /// `memory`, or `disk`: batches go to a write-ahead log under `[service] data_dir`
    /// and survive a crash; what is left at start is sent first.
    pub storage: Storage,
    /// Disk only: the log's bound in bytes; past it the receivers push back.
    pub max_size: HumanSize,
    /// Disk only: when written batches are forced to the disk.
    pub fsync: Fsync,
    /// Disk only, with `fsync = "interval"`.
    pub fsync_interval: HumanDuration,
    /// Disk only: the size of one segment file (delivered segments are deleted whole).
    pub segment_size: HumanSize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            queue_size: 256,
            num_consumers: 4,
            on_full: OnFull::Block,
            storage: Storage::Memory,
            max_size: HumanSize::mib(1024),
            fsync: Fsync::Interval,
            fsync_interval: HumanDuration::from_secs(1),
            segment_size: HumanSize::mib(16),
        }
    }
}

/// `sending_queue.storage`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// Batches wait in memory: lost if the process dies.
    Memory,
    /// Batches wait in a write-ahead log on disk until delivered or given up on.
    Disk,
}

/// `sending_queue.fsync`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// Every write is synced before it counts as queued (group commit): survives a
    /// power loss.
    Always,
    /// Writes are synced every `fsync_interval`: a process crash loses nothing (the
    /// data is in the kernel), a power loss can lose the last interval.
    Interval,
}

/// `sending_queue.on_full`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// The pipeline waits for room: back-pressure, nothing dropped.
    Block,
    /// The oldest queued batch is dropped (counted in `dropped_items`, its acks fail);
    /// sending never waits.
    DropOldest,
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
                ..QueueConfig::default()
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
        if self.retry.max_interval.get().is_zero() {
            return Err((
                &["retry_on_failure", "max_interval"],
                "max_interval must be more than 0s".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err((&["timeout"], "timeout must be more than 0s".into()));
        }
        if self.queue.storage == Storage::Disk {
            if self.queue.on_full == OnFull::DropOldest {
                return Err((
                    &["sending_queue", "on_full"],
                    "on_full = \"drop_oldest\" is for memory queues: a disk queue keeps everything and pushes back at max_size".into(),
                ));
            }
            if self.queue.segment_size.0 < 4096 {
                return Err((
                    &["sending_queue", "segment_size"],
                    "segment_size must be at least 4KiB".into(),
                ));
            }
            if self.queue.max_size.0 < self.queue.segment_size.0 {
                return Err((
                    &["sending_queue", "max_size"],
                    format!(
                        "max_size ({}) must be at least segment_size ({})",
                        self.queue.max_size, self.queue.segment_size
                    ),
                ));
            }
            if self.queue.fsync == Fsync::Interval && self.queue.fsync_interval.get().is_zero() {
                return Err((
                    &["sending_queue", "fsync_interval"],
                    "fsync_interval must be more than 0s (or write fsync = \"always\")".into(),
                ));
            }
        }
        Ok(())
    }
}

/// One copy of a batch on its way to one exporter. Dropping it fails its acks.
pub struct ExportItem {
    pub payload: Arc<Payload>,
    pub acks: Vec<Ack>,
    /// The batch's memory, shared by its copies to every exporter of the pipeline.
    pub lease: Arc<Lease>,
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
    panics: Counter,
    queue_size: Gauge,
}

impl Counters {
    fn new(health: &ComponentHealth, queue_capacity: usize) -> Counters {
        let mk = |s: Signal| {
            SignalCounters {
            sent: health.counter(
                "sent_items",
                "Items delivered by the exporter",
                &[("signal", s.as_str())],
            ),
            failed: health.counter(
                "send_failed_items",
                "Items the exporter gave up on after a permanent error, exhausted retries or a panic",
                &[("signal", s.as_str())],
            ),
            dropped: health.counter(
                "dropped_items",
                "Items dropped from a full queue (on_full = \"drop_oldest\") or abandoned in it at the shutdown deadline",
                &[("signal", s.as_str())],
            ),
        }
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
            panics: health.counter(
                "panics",
                "Export requests during which the exporter panicked (the batch counts as failed)",
                &[],
            ),
            queue_size: health.gauge("queue_size", "Batches waiting in the sending queue", &[]),
        }
    }

    fn of(&self, s: Signal) -> &SignalCounters {
        &self.by_signal[s.index()]
    }

    /// Counts an item dropped without being sent; dropping it fails its acks.
    fn drop_item(&self, item: ExportItem, why: &str) {
        let signal = item.payload.signal();
        let items = item.payload.items();
        self.of(signal).dropped.inc_by(items);
        tracing::error!(%signal, items, "{why}: dropping queued data");
    }
}

/// The bounded queue between pipelines and one exporter's sending loop.
///
/// Hand-rolled rather than a channel because `drop_oldest` must take the oldest item
/// out from the sending side. One lock and one (uncontended) notify per batch.
struct Queue {
    state: Mutex<QueueState>,
    capacity: usize,
    on_full: OnFull,
    /// An item arrived, or the last sender left.
    ready: Notify,
    /// An item was taken out, or the queue closed.
    space: Notify,
}

struct QueueState {
    items: VecDeque<ExportItem>,
    senders: usize,
    /// The sending loop is gone: nothing more is taken.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the next item; `None` once every sender is gone and the queue is empty.
    async fn pop(&self) -> Option<ExportItem> {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            {
                let mut q = self.lock();
                if let Some(item) = q.items.pop_front() {
                    drop(q);
                    self.space.notify_one();
                    return Some(item);
                }
                if q.senders == 0 {
                    return None;
                }
                ready.as_mut().enable();
            }
            ready.await;
        }
    }

    /// Stops taking items and returns those still queued.
    fn close(&self) -> VecDeque<ExportItem> {
        let items = {
            let mut q = self.lock();
            q.closed = true;
            std::mem::take(&mut q.items)
        };
        self.space.notify_waiters();
        items
    }
}

/// Where a pipeline hands data to one exporter.
pub struct ExporterHandle {
    to: Destination,
    counters: Counters,
}

enum Destination {
    Memory(Arc<Queue>),
    /// The disk queue's writer, which answers once the batch is in the log.
    Disk(tokio::sync::mpsc::Sender<ExportItem>),
}

impl Clone for ExporterHandle {
    fn clone(&self) -> ExporterHandle {
        let to = match &self.to {
            Destination::Memory(q) => {
                q.lock().senders += 1;
                Destination::Memory(q.clone())
            }
            Destination::Disk(tx) => Destination::Disk(tx.clone()),
        };
        ExporterHandle {
            to,
            counters: self.counters.clone(),
        }
    }
}

impl Drop for ExporterHandle {
    fn drop(&mut self) {
        let Destination::Memory(queue) = &self.to else {
            return;
        };
        let last = {
            let mut q = queue.lock();
            q.senders -= 1;
            q.senders == 0
        };
        if last {
            queue.ready.notify_one();
        }
    }
}

impl ExporterHandle {
    /// Queues an item. A full queue makes this wait (`block`, the back-pressure) or drops
    /// the oldest queued item (`drop_oldest`, never waits). A disk queue waits while its
    /// writer is busy or the log is at `max_size`.
    pub async fn send(&self, item: ExportItem) {
        let q = match &self.to {
            Destination::Memory(q) => &**q,
            Destination::Disk(tx) => {
                if let Err(e) = tx.send(item).await {
                    self.counters
                        .drop_item(e.0, "exporter stopped at the shutdown deadline");
                }
                return;
            }
        };
        loop {
            let space = q.space.notified();
            tokio::pin!(space);
            {
                let mut st = q.lock();
                if st.closed {
                    // Only happens when the exporter was torn down at the shutdown deadline.
                    drop(st);
                    self.counters
                        .drop_item(item, "exporter stopped at the shutdown deadline");
                    return;
                }
                if st.items.len() < q.capacity {
                    st.items.push_back(item);
                    drop(st);
                    self.counters.queue_size.inc();
                    q.ready.notify_one();
                    return;
                }
                if q.on_full == OnFull::DropOldest {
                    let oldest = st.items.pop_front();
                    st.items.push_back(item);
                    drop(st);
                    if let Some(old) = oldest {
                        self.counters
                            .drop_item(old, "sending queue full (on_full = drop_oldest)");
                    }
                    return;
                }
                space.as_mut().enable();
            }
            space.await;
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
/// failure. A clone lives with each request; its backoff is made at the request's first
/// failure with a fresh random seed, so concurrent requests do not retry in lockstep.
#[derive(Clone)]
struct RetryPolicy {
    enabled: bool,
    initial: Duration,
    max: Duration,
    backoff: Option<ExponentialBackoff>,
    max_elapsed: Duration,
    first_failure: Option<Instant>,
    retries: Counter,
    health: Arc<ComponentHealth>,
}

impl RetryPolicy {
    /// The next backoff delay of this request.
    fn next_wait(&mut self, now: Instant) -> Duration {
        let (initial, max) = (self.initial, self.max);
        let backoff = self.backoff.get_or_insert_with(|| {
            // Validation rules out the parameters `new` rejects (min > max, max = 0).
            ExponentialBackoffMaker::new(initial, max.max(initial), 0.2, HasherRng::default())
                .map(|mut m| m.make_backoff())
                .unwrap_or_else(|_| {
                    ExponentialBackoffMaker::new(
                        Duration::from_secs(1),
                        Duration::from_secs(30),
                        0.2,
                        HasherRng::default(),
                    )
                    .expect("constant backoff parameters are valid")
                    .make_backoff()
                })
        });
        backoff
            .next_backoff()
            .deadline()
            .saturating_duration_since(now)
    }
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
            None => self.next_wait(now),
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

/// (retryable, server-requested delay). An exporter reports through [`ExportError`],
/// which says itself whether a retry can help; the only other error that reaches here is
/// the per-request timeout, which is retried. Any other error type would be a bug in a
/// layer of ours, and is not retried: retrying what we do not understand only repeats it.
fn classify(err: &BoxError) -> (bool, Option<Duration>) {
    if let Some(e) = err.downcast_ref::<ExportError>() {
        return match e {
            ExportError::Retryable { retry_after, .. } => (true, *retry_after),
            ExportError::Permanent { .. } => (false, None),
        };
    }
    (err.is::<tower::timeout::error::Elapsed>(), None)
}

/// The text of a caught panic.
fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "panic with a non-string payload"
    }
}

/// The sending loop's end of the queue. However the loop ends (drained, cut off at the
/// deadline, or its task dying), the queue closes: what is still in it is counted as
/// dropped and its acks fail, and no pipeline waits on it forever.
struct QueueRx {
    queue: Arc<Queue>,
    counters: Counters,
}

impl Drop for QueueRx {
    fn drop(&mut self) {
        for item in self.queue.close() {
            self.counters.queue_size.dec();
            self.counters.drop_item(item, "exporter stopped");
        }
    }
}

/// The exporter with its retry and timeout layers.
type Sender = tower::retry::Retry<RetryPolicy, tower::timeout::Timeout<Attempt>>;

fn sender(
    exporter: Arc<dyn Exporter>,
    settings: &SendingSettings,
    counters: &Counters,
    health: &Arc<ComponentHealth>,
) -> Sender {
    let policy = RetryPolicy {
        enabled: settings.retry.enabled,
        initial: settings.retry.initial_interval.get(),
        max: settings.retry.max_interval.get(),
        backoff: None,
        max_elapsed: settings.retry.max_elapsed_time.get(),
        first_failure: None,
        retries: counters.retries.clone(),
        health: health.clone(),
    };
    ServiceBuilder::new()
        .retry(policy)
        .timeout(settings.timeout)
        .service(Attempt(exporter))
}

/// How one batch's sending ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    /// Given up on (permanent error, retries exhausted, panic): counted as failed.
    Failed,
    /// Cut off at the shutdown deadline; the caller counts or keeps it.
    Abandoned,
}

/// Sends one batch with retries, counting and reporting the result.
async fn send_one(
    svc: Sender,
    payload: Arc<Payload>,
    counters: &Counters,
    health: &ComponentHealth,
    hard_stop: &CancellationToken,
) -> Outcome {
    let signal = payload.signal();
    let items = payload.items();
    // A span per request, retries included (self-tracing).
    let span = tracing::debug_span!(
        "exporter.send",
        exporter = %health.id,
        signal = %signal,
        items,
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let attempt = AssertUnwindSafe(svc.oneshot(payload).instrument(span.clone())).catch_unwind();
    let result = tokio::select! {
        r = attempt => r,
        _ = hard_stop.cancelled() => return Outcome::Abandoned,
    };
    match result {
        Ok(Ok(())) => {
            span.record("outcome", "delivered");
            counters.of(signal).sent.inc_by(items);
            health.report_ok();
            Outcome::Delivered
        }
        Ok(Err(e)) => {
            span.record("outcome", "failed");
            span.record("otel.status_code", "error");
            counters.of(signal).failed.inc_by(items);
            health.report_error(
                State::Degraded,
                format!("gave up on {items} {}: {e}", signal.item_name()),
            );
            tracing::error!(exporter = %health.id, %signal, items, error = %e, "export failed; data dropped");
            Outcome::Failed
        }
        Err(panic) => {
            span.record("outcome", "panicked");
            span.record("otel.status_code", "error");
            let msg = panic_message(&*panic);
            counters.panics.inc();
            counters.of(signal).failed.inc_by(items);
            health.report_error(
                State::Failed,
                format!("panicked exporting {items} {}: {msg}", signal.item_name()),
            );
            tracing::error!(exporter = %health.id, %signal, items, panic = %msg, "exporter panicked; data dropped");
            Outcome::Failed
        }
    }
}

/// Waits for a free sender, then for the next item (`next`, polled only once a sender
/// is free); `None` at the hard stop or once the queue is finished.
async fn next_turn<T>(
    limit: &Arc<Semaphore>,
    hard_stop: &CancellationToken,
    next: impl std::future::Future<Output = Option<T>>,
) -> Option<(tokio::sync::OwnedSemaphorePermit, T)> {
    let permit = tokio::select! {
        biased;
        _ = hard_stop.cancelled() => return None,
        p = limit.clone().acquire_owned() => p.ok()?,
    };
    let item = tokio::select! {
        biased;
        _ = hard_stop.cancelled() => return None,
        item = next => item?,
    };
    Some((permit, item))
}

/// Starts an exporter's sending loop; returns the handle pipelines send to and the task
/// that ends once every pipeline has dropped its handle and the queue is drained.
/// A memory queue; see [`spawn_disk`] for `storage = "disk"`.
pub fn spawn(
    exporter: Arc<dyn Exporter>,
    settings: &SendingSettings,
    health: Arc<ComponentHealth>,
    hard_stop: CancellationToken,
) -> (ExporterHandle, tokio::task::JoinHandle<()>) {
    let counters = Counters::new(&health, settings.queue.queue_size);
    let queue = Arc::new(Queue {
        state: Mutex::new(QueueState {
            items: VecDeque::with_capacity(settings.queue.queue_size.min(1024)),
            senders: 1,
            closed: false,
        }),
        capacity: settings.queue.queue_size.max(1),
        on_full: settings.queue.on_full,
        ready: Notify::new(),
        space: Notify::new(),
    });
    let handle = ExporterHandle {
        to: Destination::Memory(queue.clone()),
        counters: counters.clone(),
    };
    let service = sender(exporter.clone(), settings, &counters, &health);
    let limit = Arc::new(Semaphore::new(settings.queue.num_consumers));
    health.set_state(State::Ok);
    let task = tokio::spawn(async move {
        let rx = QueueRx {
            queue,
            counters: counters.clone(),
        };
        // Requests in flight; shutdown waits for them so that each one ends counted.
        let in_flight = TaskTracker::new();
        loop {
            // A sender is free before an item is taken, so everything not in flight
            // stays in the queue, where `drop_oldest` can reach it.
            let Some((permit, item)) = next_turn(&limit, &hard_stop, rx.queue.pop()).await else {
                break;
            };
            counters.queue_size.dec();
            let svc = service.clone();
            let counters = counters.clone();
            let health = health.clone();
            let hard_stop = hard_stop.clone();
            in_flight.spawn(async move {
                let outcome =
                    send_one(svc, item.payload.clone(), &counters, &health, &hard_stop).await;
                match outcome {
                    Outcome::Delivered => delivered_all(item.acks),
                    Outcome::Failed => drop(item),
                    Outcome::Abandoned => counters.drop_item(item, "shutdown deadline reached"),
                }
                drop(permit);
            });
        }
        // Past the shutdown deadline, what is still queued is lost and counted (by
        // `rx`'s drop); otherwise the queue is empty and every sender gone.
        drop(rx);
        // Every request in flight ends: delivered, given up, or (past the deadline)
        // abandoned and counted. They watch `hard_stop`, so this wait is bounded.
        in_flight.close();
        in_flight.wait().await;
        exporter.shutdown().await;
        health.set_state(State::Stopped);
    });
    (handle, task)
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
                ..QueueConfig::default()
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
                lease: Arc::default(),
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

    /// Panics on every export.
    struct Panicky;

    impl Exporter for Panicky {
        fn export(&self, _p: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
            Box::pin(async { panic!("exporter bug") })
        }
    }

    /// Never finishes an export.
    struct Stuck;

    impl Exporter for Stuck {
        fn export(&self, _p: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
            Box::pin(std::future::pending())
        }
    }

    /// One log record.
    fn item(ack: Ack) -> ExportItem {
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let req = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        ExportItem {
            payload: Arc::new(Payload::Logs(req)),
            acks: vec![ack],
            lease: Arc::default(),
        }
    }

    #[tokio::test]
    async fn a_panicking_exporter_fails_the_batch_and_keeps_serving() {
        let t = Telemetry::new();
        let health = t.component(
            Kind::Exporter,
            &ComponentId::parse("panicky").unwrap(),
            true,
        );
        let (handle, task) = spawn(
            Arc::new(Panicky),
            &settings(),
            health.clone(),
            CancellationToken::new(),
        );
        for _ in 0..2 {
            let (ack, waiter) = Ack::new();
            handle.send(item(ack)).await;
            assert_eq!(waiter.wait().await, Delivery::GaveUp);
        }
        assert_eq!(health.state(), State::Failed);
        let st = t.status();
        let msg = &st.components[0].last_error.as_ref().unwrap().message;
        assert!(msg.contains("exporter bug"), "{msg}");
        assert_eq!(st.components[0].counters["panics"], 2);
        drop(handle);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn drop_oldest_never_waits_and_counts_what_it_drops() {
        let t = Telemetry::new();
        let health = t.component(Kind::Exporter, &ComponentId::parse("stuck").unwrap(), true);
        let mut s = settings();
        s.queue.queue_size = 2;
        s.queue.on_full = OnFull::DropOldest;
        s.timeout = Duration::from_secs(3600);
        let hard_stop = CancellationToken::new();
        let (handle, task) = spawn(Arc::new(Stuck), &s, health, hard_stop.clone());
        let mut waiters = Vec::new();
        for _ in 0..10 {
            let (ack, waiter) = Ack::new();
            // One in flight, two queued: the rest push the oldest out, without waiting.
            tokio::time::timeout(Duration::from_secs(5), handle.send(item(ack)))
                .await
                .expect("drop_oldest never waits");
            waiters.push(waiter);
        }
        // Batch 0 in flight (or dropped, if the loop had not taken it yet), two queued:
        // batches 1 to 7 were pushed out whatever the timing.
        for w in waiters.drain(..8).skip(1) {
            let outcome = tokio::time::timeout(Duration::from_secs(5), w.wait()).await;
            assert_eq!(outcome, Ok(Delivery::GaveUp));
        }
        let dropped = t.status().components[0].counters["dropped_items{signal=\"logs\"}"];
        assert!((7..=8).contains(&dropped), "{dropped} dropped");
        hard_stop.cancel();
        drop(handle);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn block_waits_for_room() {
        let t = Telemetry::new();
        let health = t.component(Kind::Exporter, &ComponentId::parse("stuck").unwrap(), true);
        let mut s = settings();
        s.queue.queue_size = 1;
        s.timeout = Duration::from_secs(3600);
        let hard_stop = CancellationToken::new();
        let (handle, task) = spawn(Arc::new(Stuck), &s, health, hard_stop.clone());
        let mut held = Vec::new();
        let mut blocked = false;
        for _ in 0..4 {
            let (ack, w) = Ack::new();
            held.push(w);
            if tokio::time::timeout(Duration::from_millis(300), handle.send(item(ack)))
                .await
                .is_err()
            {
                blocked = true;
                break;
            }
        }
        assert!(
            blocked,
            "a full queue with on_full = block makes the sender wait"
        );
        hard_stop.cancel();
        drop(handle);
        task.await.unwrap();
        for w in held {
            assert_eq!(w.wait().await, Delivery::GaveUp);
        }
    }

    #[tokio::test]
    async fn each_request_gets_its_own_jitter() {
        let t = Telemetry::new();
        let health = t.component(Kind::Exporter, &ComponentId::parse("x").unwrap(), true);
        let policy = RetryPolicy {
            enabled: true,
            initial: Duration::from_secs(10),
            max: Duration::from_secs(1000),
            backoff: None,
            max_elapsed: Duration::from_secs(3600),
            first_failure: None,
            retries: Counter::default(),
            health,
        };
        let now = Instant::now();
        // tower clones the policy for each request.
        let delays = |mut p: RetryPolicy| (0..4).map(|_| p.next_wait(now)).collect::<Vec<_>>();
        let (a, b) = (delays(policy.clone()), delays(policy.clone()));
        assert_ne!(a, b, "two requests retried with the same jitter");
    }

    #[test]
    fn only_export_errors_and_timeouts_are_understood() {
        let timeout: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(classify(&timeout), (true, None));
        let odd: BoxError = "something else".into();
        assert_eq!(classify(&odd), (false, None));
        let perm: BoxError = Box::new(ExportError::permanent("no"));
        assert_eq!(classify(&perm), (false, None));
    }
}
