//! The memory budget: the bytes of data held in pipelines and sending queues, bounded by
//! `[service] memory_limit`.
//!
//! A receiver's [`crate::pipeline::Consumer`] reserves a request's encoded size before
//! handing it on and, past the limit, waits for room up to its pushback wait, then
//! refuses (the receiver answers with a retryable status). The reservation is a
//! [`Lease`] that travels with the data: the batch processor merges leases, and the
//! copies handed to several exporters share one, so the bytes are released when the last
//! exporter is done with them (delivered, given up or dropped).
//!
//! A request larger than the whole limit is admitted only when nothing else is held, so
//! it is never refused forever; `max_request_size` bounds how far past the limit that
//! goes. Components that read data themselves (a log tail) reserve through
//! [`crate::component::BuildContext::memory`] before reading.

use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug)]
pub struct MemoryBudget {
    /// Bytes held now; the gauge behind `tradewatch_memory_used_bytes`.
    used: Gauge,
    limit: i64,
    /// Reservations waiting for room; releases wake them only when there are some.
    waiting: AtomicUsize,
    freed: Notify,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, reporting its use through `used`.
    pub fn new(limit: u64, used: Gauge) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            used,
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// A budget that never refuses (tests, tools).
    pub fn unlimited() -> Arc<MemoryBudget> {
        MemoryBudget::new(u64::MAX, Gauge::default())
    }

    pub fn used(&self) -> u64 {
        self.used.get().max(0) as u64
    }

    pub fn limit(&self) -> u64 {
        self.limit as u64
    }

    /// Reserves `bytes` if they fit now (or if nothing is held at all).
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Lease> {
        let n = i64::try_from(bytes).unwrap_or(i64::MAX);
        let used = self.used.inner();
        let mut cur = used.load(Ordering::Relaxed);
        loop {
            if cur > 0 && cur.saturating_add(n) > self.limit {
                return None;
            }
            match used.compare_exchange_weak(cur, cur + n, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    return Some(Lease {
                        budget: Some(self.clone()),
                        bytes: n,
                    })
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Reserves `bytes`, waiting for room until `deadline`; `None` when there was none.
    pub async fn reserve(self: &Arc<Self>, bytes: u64, deadline: Instant) -> Option<Lease> {
        if let Some(l) = self.try_reserve(bytes) {
            return Some(l);
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `release`: either it sees this waiter or we see its room.
        std::sync::atomic::fence(Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(l) = self.try_reserve(bytes) {
                return Some(l);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }

    fn release(&self, bytes: i64) {
        self.used.dec_by(bytes);
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bytes reserved in a [`MemoryBudget`], released when the lease is dropped. The
/// default lease holds nothing.
#[derive(Debug, Default)]
pub struct Lease {
    budget: Option<Arc<MemoryBudget>>,
    bytes: i64,
}

impl Lease {
    pub fn bytes(&self) -> u64 {
        self.bytes as u64
    }

    /// Takes over another lease's bytes (when batches are merged).
    pub fn merge(&mut self, mut other: Lease) {
        if other.bytes == 0 {
            return;
        }
        if self.budget.is_none() {
            std::mem::swap(self, &mut other);
            return;
        }
        self.bytes += std::mem::take(&mut other.bytes);
    }

    /// Splits off `bytes` (at most what is held) into a lease of its own.
    pub fn split(&mut self, bytes: u64) -> Lease {
        let n = i64::try_from(bytes).unwrap_or(i64::MAX).min(self.bytes);
        self.bytes -= n;
        Lease {
            budget: self.budget.clone(),
            bytes: n,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            if self.bytes > 0 {
                b.release(self.bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reservations_wait_for_room_and_give_up_at_the_deadline() {
        let b = MemoryBudget::new(100, Gauge::default());
        let a = b.try_reserve(60).unwrap();
        assert!(b.try_reserve(60).is_none());
        let soon = Instant::now() + Duration::from_millis(30);
        assert!(b.reserve(60, soon).await.is_none());
        let waiter = tokio::spawn({
            let b = b.clone();
            async move {
                b.reserve(60, Instant::now() + Duration::from_secs(10))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        let c = waiter.await.unwrap().expect("room after the release");
        assert_eq!(b.used(), 60);
        drop(c);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_request_larger_than_the_limit_passes_only_alone() {
        let b = MemoryBudget::new(100, Gauge::default());
        let small = b.try_reserve(1).unwrap();
        assert!(b.try_reserve(500).is_none());
        drop(small);
        let big = b.try_reserve(500).unwrap();
        assert!(b.try_reserve(1).is_none());
        drop(big);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn merged_and_split_leases_release_exactly_once() {
        let b = MemoryBudget::new(1000, Gauge::default());
        let mut l = Lease::default();
        l.merge(b.try_reserve(100).unwrap());
        l.merge(b.try_reserve(50).unwrap());
        assert_eq!((l.bytes(), b.used()), (150, 150));
        let part = l.split(40);
        drop(l);
        assert_eq!(b.used(), 40);
        drop(part);
        assert_eq!(b.used(), 0);
    }
}
