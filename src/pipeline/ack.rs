//! Delivery acknowledgements.
//!
//! A batch may carry [`Ack`]s. Every copy of the batch that fans out to an exporter holds
//! a clone; when the last clone is dropped, the waiter learns whether every exporter
//! delivered it or at least one gave up. A log tail advances its checkpoint only on
//! `Delivered`, which is what makes tailing exactly-once across restarts.
//!
//! At shutdown a receiver may wait for its outstanding acks before it returns: the
//! pipelines downstream keep running (and batches still flush on their timeout) until
//! the receiver drops its outputs. Data a processor filters out resolves as `Delivered`
//! unless the processor calls [`Ack::fail`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Every exporter the data went to delivered it.
    Delivered,
    /// At least one exporter gave up (permanent error, retries exhausted, dropped at the
    /// shutdown deadline), or a processor failed the data on purpose.
    GaveUp,
}

/// One holder's share of an acknowledgement. Clone it for each copy of the data.
#[derive(Clone, Debug)]
pub struct Ack(Arc<AckState>);

#[derive(Debug)]
struct AckState {
    failed: AtomicBool,
    tx: Mutex<Option<oneshot::Sender<Delivery>>>,
}

impl Drop for AckState {
    fn drop(&mut self) {
        let outcome = if self.failed.load(Ordering::Acquire) {
            Delivery::GaveUp
        } else {
            Delivery::Delivered
        };
        if let Some(tx) = self.tx.get_mut().ok().and_then(|t| t.take()) {
            let _ = tx.send(outcome);
        }
    }
}

impl Ack {
    /// Creates an acknowledgement and the waiter that learns its outcome.
    pub fn new() -> (Ack, AckWaiter) {
        let (tx, rx) = oneshot::channel();
        (
            Ack(Arc::new(AckState {
                failed: AtomicBool::new(false),
                tx: Mutex::new(Some(tx)),
            })),
            AckWaiter(rx),
        )
    }

    /// Marks the data as not delivered by this holder; the outcome becomes `GaveUp`.
    pub fn fail(&self) {
        self.0.failed.store(true, Ordering::Release);
    }
}

/// Resolves when every clone of the matching [`Ack`] is gone.
pub struct AckWaiter(oneshot::Receiver<Delivery>);

impl AckWaiter {
    pub async fn wait(self) -> Delivery {
        // The sender can only vanish without sending if the state was leaked; treat that as a failure.
        self.0.await.unwrap_or(Delivery::GaveUp)
    }
}

/// Marks every ack in a set as failed (used when data is dropped on purpose).
pub fn fail_all(acks: &[Ack]) {
    for a in acks {
        a.fail();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_when_every_clone_is_gone() {
        let (ack, waiter) = Ack::new();
        let a2 = ack.clone();
        let a3 = ack.clone();
        drop(ack);
        drop(a2);
        let mut waiter = Box::pin(waiter.wait());
        assert!(futures_util::poll!(&mut waiter).is_pending());
        drop(a3);
        assert_eq!(waiter.await, Delivery::Delivered);
    }

    #[tokio::test]
    async fn one_failure_fails_the_whole() {
        let (ack, waiter) = Ack::new();
        let a2 = ack.clone();
        a2.fail();
        drop(a2);
        drop(ack);
        assert_eq!(waiter.wait().await, Delivery::GaveUp);
    }
}
