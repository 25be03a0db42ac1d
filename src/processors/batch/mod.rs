//! `batch`: groups data into larger requests, bounded by size and time, like the Go
//! collector's batch processor.
//!
//! Batches are joined without decoding when the data arrived encoded (protobuf repeated
//! fields concatenate), once, when the batch is sent: batching costs one copy of each
//! request, not a decode and an encode.

use crate::component::Processor;
use crate::component::{BuildContext, BuildError, ProcessorConfig};
use crate::component::{ComponentId, Kind, Signal};
use crate::config::{component_config, ConfigError, HumanDuration, Source};
use crate::pipeline::memory::Lease;
use crate::pipeline::{Ack, Batch, Payload};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Items (spans, points, records) that make a batch ready to send.
    pub send_batch_size: u64,
    /// Longest a non-empty batch waits before it is sent anyway.
    pub timeout: HumanDuration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            timeout: HumanDuration::from_millis(200),
        }
    }
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ProcessorConfig>, ConfigError> {
    let c: BatchConfig = component_config(src, Kind::Processor, id)?;
    if c.send_batch_size == 0 {
        return Err(src.component_error(
            Kind::Processor,
            id,
            &["send_batch_size"],
            "send_batch_size must be at least 1".into(),
        ));
    }
    if c.timeout.get().is_zero() {
        return Err(src.component_error(
            Kind::Processor,
            id,
            &["timeout"],
            "timeout must be more than 0s".into(),
        ));
    }
    Ok(Arc::new(c))
}

impl ProcessorConfig for BatchConfig {
    fn build(
        &self,
        _signal: Signal,
        _ctx: &BuildContext,
    ) -> Result<Box<dyn Processor>, BuildError> {
        Ok(Box::new(Batcher {
            send_batch_size: self.send_batch_size,
            timeout: self.timeout.get(),
            pending: None,
        }))
    }
}

/// What a batch holds until it is sent; joined into one request only then. The parts'
/// acks and memory leases move into the batch sent.
struct Pending {
    parts: Vec<Payload>,
    acks: Vec<Ack>,
    lease: Lease,
    items: u64,
    deadline: Instant,
}

impl Pending {
    fn into_batch(self) -> Batch {
        Batch {
            payload: Payload::concat(self.parts),
            acks: self.acks,
            lease: self.lease,
        }
    }
}

pub struct Batcher {
    send_batch_size: u64,
    timeout: Duration,
    pending: Option<Pending>,
}

impl Batcher {
    pub fn new(send_batch_size: u64, timeout: Duration) -> Batcher {
        Batcher {
            send_batch_size,
            timeout,
            pending: None,
        }
    }
}

impl Processor for Batcher {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        let deadline = Instant::now() + self.timeout;
        let p = self.pending.get_or_insert_with(|| Pending {
            parts: Vec::new(),
            acks: Vec::new(),
            lease: Lease::default(),
            items: 0,
            deadline,
        });
        p.items += batch.payload.items();
        p.parts.push(batch.payload);
        p.acks.extend(batch.acks);
        p.lease.merge(batch.lease);
        if p.items >= self.send_batch_size {
            out.extend(self.pending.take().map(Pending::into_batch));
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.deadline)
    }

    fn flush(&mut self, _force: bool, out: &mut Vec<Batch>) {
        out.extend(self.pending.take().map(Pending::into_batch));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;

    fn logs(n: usize) -> Payload {
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        Payload::from_encoded(Signal::Logs, req.encode_to_vec().into()).unwrap()
    }

    #[tokio::test]
    async fn sends_when_full_or_due() {
        let mut b = Batcher::new(10, Duration::from_millis(50));
        let mut out = Vec::new();
        b.process(Batch::new(logs(4)), &mut out);
        b.process(Batch::new(logs(4)), &mut out);
        assert!(out.is_empty());
        assert!(b.deadline().is_some());
        let (ack, waiter) = Ack::new();
        b.process(Batch::with_ack(logs(4), ack), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].payload.items(), 12);
        assert_eq!(out[0].acks.len(), 1);
        assert!(b.deadline().is_none());
        for b in out.drain(..) {
            crate::pipeline::ack::delivered_all(b.acks);
        }
        assert_eq!(waiter.wait().await, crate::pipeline::Delivery::Delivered);

        b.process(Batch::new(logs(1)), &mut out);
        b.flush(true, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].payload.items(), 1);
    }

    #[tokio::test]
    async fn merged_batches_carry_every_ack_and_lease() {
        use crate::pipeline::memory::MemoryBudget;
        use crate::pipeline::Delivery;
        let budget = MemoryBudget::unlimited();
        let mut b = Batcher::new(100, Duration::from_secs(60));
        let mut out = Vec::new();
        let mut waiters = Vec::new();
        for _ in 0..3 {
            let (ack, waiter) = Ack::new();
            let mut batch = Batch::with_ack(logs(2), ack);
            batch.lease = budget.try_reserve(1000).unwrap();
            b.process(batch, &mut out);
            waiters.push(waiter);
        }
        b.flush(true, &mut out);
        assert_eq!(out[0].acks.len(), 3);
        assert_eq!(out[0].lease.bytes(), 3000);
        assert_eq!(budget.used(), 3000);
        // The merged batch is lost (a panic further down, say): every part fails.
        out.clear();
        assert_eq!(budget.used(), 0);
        for w in waiters {
            assert_eq!(w.wait().await, Delivery::GaveUp);
        }
    }
}
