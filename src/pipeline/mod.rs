//! The pipeline runtime: bounded channels from receivers into pipelines, the processor
//! chain, and the fan-out of each pipeline to its exporters' sending queues.
//!
//! Back-pressure is end to end: an exporter whose queue is full makes its pipelines wait,
//! a waiting pipeline's channel fills, and then [`Consumer::consume`] refuses new data so
//! the receiver can answer its client with a retryable status. Nothing that was accepted
//! is dropped on the way (except by an exporter configured with `on_full = "drop_oldest"`).
//! The bytes held are bounded too: [`Consumer::consume`] reserves each request's size in
//! the [`memory::MemoryBudget`] and refuses the same way when it stays full.

pub mod ack;
pub mod alerts;
pub mod controls;
pub mod data;
pub mod disk_log;
pub mod memory;
pub mod sending;
pub mod topology;

pub use ack::{Ack, AckWaiter, Delivery};
pub use data::{Batch, Payload};

use crate::component::Processor;
use crate::component::{PipelineId, Signal};
use crate::pipeline::ack::delivered_all;
use crate::pipeline::memory::MemoryBudget;
use crate::pipeline::sending::{ExportItem, ExporterHandle};
use crate::service::health::{panic_message, ComponentHealth};
use prometheus_client::metrics::counter::Counter;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Why a receiver's data was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the pipeline is full; retry later")]
    Full,
    #[error("the collector is shutting down")]
    ShuttingDown,
}

/// A receiver's way into the pipelines that list it, for one signal.
///
/// Data goes to every pipeline or to none: its bytes are reserved in the memory budget
/// (once per pipeline copy, as each pipeline may hold its copy for a different time) and
/// a slot in each pipeline's channel before anything is sent, so a refusal never leaves
/// a partial delivery behind.
#[derive(Clone)]
pub struct Consumer {
    signal: Signal,
    targets: Arc<[mpsc::Sender<Batch>]>,
    memory: Arc<MemoryBudget>,
    wait: Duration,
    accepted: Counter,
    refused: Counter,
}

impl Consumer {
    pub(crate) fn new(
        signal: Signal,
        targets: Vec<mpsc::Sender<Batch>>,
        memory: Arc<MemoryBudget>,
        wait: Duration,
        accepted: Counter,
        refused: Counter,
    ) -> Consumer {
        Consumer {
            signal,
            targets: targets.into(),
            memory,
            wait,
            accepted,
            refused,
        }
    }

    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// How long `consume` waits for room before refusing.
    pub fn with_wait(mut self, wait: Duration) -> Consumer {
        self.wait = wait;
        self
    }

    /// Hands a batch to every pipeline, waiting up to the configured time for room (in
    /// memory and in the pipelines' channels). A batch may arrive with bytes already
    /// reserved (a reader that reserved before reading); only the rest is reserved here.
    pub async fn consume(&self, batch: Batch) -> Result<(), Refused> {
        let items = batch.payload.items();
        let result = self.send(batch).await.map_err(|(why, _)| why);
        match result {
            Ok(()) => self.accepted.inc_by(items),
            Err(_) => self.refused.inc_by(items),
        };
        result
    }

    /// For data raised inside the collector (alerts, polled metrics), which has no client
    /// to retry for it: waits for room, backing off up to 2 s between tries, until the
    /// pipelines take the batch. Gives the batch back when the pipelines close or
    /// `shutdown` is cancelled first, so the caller can say what was not delivered.
    /// Counted once: accepted, or refused when given back.
    pub async fn deliver(
        &self,
        mut batch: Batch,
        shutdown: Option<&CancellationToken>,
    ) -> Result<(), Batch> {
        let items = batch.payload.items();
        let mut delay = Duration::from_millis(50);
        let given_back = loop {
            batch = match self.send(batch).await {
                Ok(()) => {
                    self.accepted.inc_by(items);
                    return Ok(());
                }
                Err((Refused::ShuttingDown, b)) => break b,
                Err((Refused::Full, b)) => b,
            };
            let wait = tokio::time::sleep(delay);
            match shutdown {
                Some(s) => tokio::select! {
                    _ = s.cancelled() => break batch,
                    _ = wait => {}
                },
                None => wait.await,
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        };
        self.refused.inc_by(items);
        Err(given_back)
    }

    /// Hands the batch on, or gives it back with the reason it was refused.
    async fn send(&self, mut batch: Batch) -> Result<(), (Refused, Batch)> {
        debug_assert_eq!(batch.payload.signal(), self.signal);
        let deadline = Instant::now() + self.wait;
        let size = batch.payload.encoded_len() as u64;
        let missing = (size * self.targets.len() as u64).saturating_sub(batch.lease.bytes());
        if missing > 0 {
            let more = match self.memory.try_reserve(missing) {
                Some(l) => l,
                None => match self.memory.reserve(missing, deadline).await {
                    Some(l) => l,
                    None => return Err((Refused::Full, batch)),
                },
            };
            batch.lease.merge(more);
        }
        if let [tx] = &*self.targets {
            let permit = match tx.try_reserve() {
                Ok(permit) => permit,
                Err(mpsc::error::TrySendError::Closed(())) => {
                    return Err((Refused::ShuttingDown, batch))
                }
                Err(mpsc::error::TrySendError::Full(())) => {
                    match tokio::time::timeout_at(deadline, tx.reserve()).await {
                        Ok(Ok(permit)) => permit,
                        Ok(Err(_)) => return Err((Refused::ShuttingDown, batch)),
                        Err(_) => return Err((Refused::Full, batch)),
                    }
                }
            };
            permit.send(batch);
            return Ok(());
        }
        let mut permits = Vec::with_capacity(self.targets.len());
        for tx in self.targets.iter() {
            match tokio::time::timeout_at(deadline, tx.reserve()).await {
                Ok(Ok(p)) => permits.push(p),
                Ok(Err(_)) => return Err((Refused::ShuttingDown, batch)),
                Err(_) => return Err((Refused::Full, batch)),
            }
        }
        let last = permits.pop();
        for p in permits {
            p.send(Batch {
                payload: batch.payload.clone(),
                acks: batch.acks.clone(),
                lease: batch.lease.split(size),
            });
        }
        if let Some(p) = last {
            p.send(batch);
        }
        Ok(())
    }
}

/// One pipeline's task: input channel → processors → exporters.
pub(crate) struct PipelineRunner {
    pub id: PipelineId,
    pub rx: mpsc::Receiver<Batch>,
    pub processors: Vec<Stage>,
    pub exporters: Vec<ExporterHandle>,
}

impl PipelineRunner {
    pub async fn run(mut self) {
        loop {
            let deadline = self.processors.iter().filter_map(|p| p.deadline()).min();
            tokio::select! {
                biased;
                b = self.rx.recv() => match b {
                    Some(b) if self.processors.is_empty() => export(&self.exporters, b).await,
                    Some(b) => {
                        // A span per batch through the processors (self-tracing).
                        let span = tracing::debug_span!(
                            "pipeline.batch",
                            pipeline = %self.id,
                            signal = %b.payload.signal(),
                            items = b.payload.items(),
                        );
                        self.push(0, vec![b]).instrument(span).await
                    }
                    None => break,
                },
                _ = sleep_until(deadline), if deadline.is_some() => self.flush(false).await,
            }
        }
        // Input closed: everything still held by processors goes out, in chain order.
        self.flush(true).await;
        tracing::debug!(pipeline = %self.id, "pipeline drained");
    }

    async fn push(&mut self, from: usize, mut batches: Vec<Batch>) {
        for p in &mut self.processors[from..] {
            let mut next = Vec::with_capacity(batches.len());
            for b in batches {
                p.process(b, &mut next);
            }
            batches = next;
            if batches.is_empty() {
                return;
            }
        }
        for b in batches {
            export(&self.exporters, b).await;
        }
    }

    /// Lets each processor emit what is due (or everything, when forced) and pushes it
    /// through the rest of the chain.
    async fn flush(&mut self, force: bool) {
        let now = Instant::now();
        for i in 0..self.processors.len() {
            let due = force || self.processors[i].deadline().is_some_and(|d| d <= now);
            if !due {
                continue;
            }
            let span =
                tracing::debug_span!("pipeline.flush", pipeline = %self.id, stage = i, force);
            let mut out = Vec::new();
            span.in_scope(|| self.processors[i].flush(force, &mut out));
            if !out.is_empty() {
                self.push(i + 1, out).instrument(span).await;
            }
        }
    }
}

/// One processor in a pipeline's chain, with the panic boundary around it.
///
/// A processor that panics is `failed` for good (its state may be half-updated): the
/// batch it was given is lost and its acks resolve `GaveUp`, the data it held is dropped
/// with it, and every later batch that reaches it is dropped the same way (counted in
/// `failed_items`) rather than passed on unprocessed, since skipping a filter or a
/// check would be worse than failing closed. The pipeline keeps taking input, so the
/// receivers and the other pipelines keep serving.
pub(crate) struct Stage {
    processor: Option<Box<dyn Processor>>,
    health: Arc<ComponentHealth>,
    failed_items: Counter,
}

impl Stage {
    pub fn new(
        processor: Box<dyn Processor>,
        health: Arc<ComponentHealth>,
        signal: Signal,
    ) -> Stage {
        let failed_items = health.counter(
            "failed_items",
            "Items lost because the processor failed (their acknowledgements resolve GaveUp)",
            &[("signal", signal.as_str())],
        );
        Stage {
            processor: Some(processor),
            health,
            failed_items,
        }
    }

    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        let items = batch.payload.items();
        let Some(p) = self.processor.as_mut() else {
            self.lose(items, batch.acks);
            return;
        };
        // A panic unwinds through the batch, and dropping it unsettled fails its acks.
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| p.process(batch, out))) {
            self.failed_items.inc_by(items);
            self.fail(&*panic);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.processor.as_ref().and_then(|p| p.deadline())
    }

    fn flush(&mut self, force: bool, out: &mut Vec<Batch>) {
        if let Some(p) = self.processor.as_mut() {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| p.flush(force, out))) {
                self.fail(&*panic);
            }
        }
    }

    /// Dropping unsettled shares fails their acknowledgements. Counted first, so a client
    /// told its data was lost finds it counted.
    fn lose(&self, items: u64, acks: Vec<Ack>) {
        self.failed_items.inc_by(items);
        drop(acks);
    }

    fn fail(&mut self, panic: &(dyn std::any::Any + Send)) {
        self.health.report_failure(panic_message(panic));
        // What it held goes with it; its Drop must not take the pipeline down either.
        if let Some(p) = self.processor.take() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(p)));
        }
    }
}

/// Hands a batch to each exporter of the pipeline; the copies share the payload and its
/// memory lease, and each holds its own share of the acks.
async fn export(exporters: &[ExporterHandle], batch: Batch) {
    if batch.payload.is_empty() {
        // Nothing to send is trivially delivered.
        delivered_all(batch.acks);
        return;
    }
    let Batch {
        payload,
        acks,
        lease,
    } = batch;
    let payload = Arc::new(payload);
    let lease = Arc::new(lease);
    let n = exporters.len();
    let mut acks = Some(acks);
    for (i, e) in exporters.iter().enumerate() {
        let acks = if i + 1 == n {
            acks.take().unwrap_or_default()
        } else {
            acks.clone().unwrap_or_default()
        };
        e.send(ExportItem {
            payload: payload.clone(),
            acks,
            lease: lease.clone(),
        })
        .await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::gauge::Gauge;

    fn payload(len: usize) -> Payload {
        Payload::Encoded {
            signal: Signal::Logs,
            bytes: vec![0; len].into(),
            items: 1,
        }
    }

    #[tokio::test]
    async fn consume_reserves_each_pipeline_copy_and_refuses_past_the_limit() {
        let budget = MemoryBudget::new(800, Gauge::default());
        let (tx1, mut rx1) = mpsc::channel(8);
        let (tx2, mut rx2) = mpsc::channel(8);
        let refused = Counter::default();
        let c = Consumer::new(
            Signal::Logs,
            vec![tx1, tx2],
            budget.clone(),
            Duration::from_millis(20),
            Counter::default(),
            refused.clone(),
        );
        c.consume(Batch::new(payload(300))).await.unwrap();
        assert_eq!(budget.used(), 600);
        let (b1, b2) = (rx1.recv().await.unwrap(), rx2.recv().await.unwrap());
        assert_eq!((b1.lease.bytes(), b2.lease.bytes()), (300, 300));
        // 600 more would pass the limit: refused after the wait, nothing half-sent.
        assert_eq!(
            c.consume(Batch::new(payload(300))).await,
            Err(Refused::Full)
        );
        assert_eq!(refused.get(), 1);
        assert!(rx1.try_recv().is_err() && rx2.try_recv().is_err());
        assert_eq!(budget.used(), 600);
        // One pipeline done with its copy is not enough; both are.
        drop(b1);
        assert_eq!(
            c.consume(Batch::new(payload(300))).await,
            Err(Refused::Full)
        );
        drop(b2);
        assert_eq!(budget.used(), 0);
        c.consume(Batch::new(payload(300))).await.unwrap();
    }

    #[tokio::test]
    async fn deliver_waits_for_room_and_gives_the_batch_back_at_shutdown() {
        let (tx, mut rx) = mpsc::channel(1);
        let (accepted, refused) = (Counter::default(), Counter::default());
        let c = Consumer::new(
            Signal::Logs,
            vec![tx],
            MemoryBudget::unlimited(),
            Duration::from_millis(10),
            accepted.clone(),
            refused.clone(),
        );
        c.consume(Batch::new(payload(10))).await.unwrap();
        // The channel is full: deliver keeps trying until the pipeline makes room.
        let drain = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            rx.recv().await.unwrap()
        };
        let (r, _) = tokio::join!(c.deliver(Batch::new(payload(10)), None), drain);
        assert!(r.is_ok());
        assert!(rx.recv().await.is_some(), "the delivered batch arrived");
        // Counted once however many tries it took.
        assert_eq!((accepted.get(), refused.get()), (2, 0));
        // Full again; shutdown ends the wait and hands the batch back, counted refused once.
        c.consume(Batch::new(payload(10))).await.unwrap();
        let stop = CancellationToken::new();
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stop.cancel();
        };
        let (r, _) = tokio::join!(c.deliver(Batch::new(payload(10)), Some(&stop)), cancel);
        let back = r.expect_err("not delivered before shutdown");
        assert_eq!(back.payload.items(), 1);
        assert_eq!(refused.get(), 1);
    }

    #[tokio::test]
    async fn an_empty_payload_is_delivered_without_an_exporter() {
        let (ack, waiter) = Ack::new();
        export(&[], Batch::with_ack(payload(0), ack)).await;
        assert_eq!(waiter.wait().await, Delivery::Delivered);
    }
}
