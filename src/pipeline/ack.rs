//! Delivery acknowledgements, failing closed.
//!
//! A batch may carry [`Ack`]s. Every copy of the batch (one per pipeline, one per
//! exporter) holds its own share, a clone. The waiter learns `Delivered` only when every
//! share was settled with [`Ack::delivered`]; a share dropped without that (an exporter
//! that gave up, a panic in a processor or exporter, a batch abandoned at the shutdown
//! deadline, a runtime torn down) makes the whole `GaveUp`. A log tail advances its
//! checkpoint only on `Delivered`, so a bug or a crash can delay data but never skip it.
//!
//! For component authors: an exporter's sending loop settles its share when the export
//! succeeded; a processor that drops data on purpose (a filter) settles it with
//! [`crate::pipeline::Batch::filtered`]; a processor that merges batches moves their
//! acks into the merged batch. Anything else needs no code: dropping is failing.
//!
//! A waiter content with durability makes its ack with [`Ack::new_queued`]: a disk
//! queue settles its share once the batch is written ([`Ack::settle_if_queued`]), while
//! a memory queue still settles only on delivery (memory is not durable), so the
//! waiter learns `Delivered` once every exporter either holds the data on disk or
//! delivered it.
//!
//! At shutdown a receiver may wait for its outstanding acks before it returns: the
//! pipelines downstream keep running (and batches still flush on their timeout) until
//! the receiver drops its outputs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Every holder of the data said it was delivered (or filtered on purpose).
    Delivered,
    /// At least one holder gave up or was dropped without settling.
    GaveUp,
}

/// One holder's share of an acknowledgement. Clone it for each copy of the data; settle
/// each share with [`Ack::delivered`], or drop it to fail the whole.
#[derive(Debug)]
pub struct Ack {
    state: Arc<AckState>,
    settled: bool,
}

#[derive(Debug)]
struct AckState {
    failed: AtomicBool,
    /// Made by [`Ack::new_queued`]: a durable queue may settle this share.
    queued_is_enough: bool,
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

impl Clone for Ack {
    /// A new, unsettled share.
    fn clone(&self) -> Ack {
        Ack {
            state: self.state.clone(),
            settled: false,
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.settled {
            self.state.failed.store(true, Ordering::Release);
        }
    }
}

impl Ack {
    /// Creates an acknowledgement and the waiter that learns its outcome.
    pub fn new() -> (Ack, AckWaiter) {
        Ack::with_mode(false)
    }

    /// An acknowledgement whose shares a durable (disk) queue settles as soon as it
    /// holds the data: the waiter learns that nothing will be lost, not that it arrived.
    pub fn new_queued() -> (Ack, AckWaiter) {
        Ack::with_mode(true)
    }

    fn with_mode(queued_is_enough: bool) -> (Ack, AckWaiter) {
        let (tx, rx) = oneshot::channel();
        (
            Ack {
                state: Arc::new(AckState {
                    failed: AtomicBool::new(false),
                    queued_is_enough,
                    tx: Mutex::new(Some(tx)),
                }),
                settled: false,
            },
            AckWaiter(rx),
        )
    }

    /// This holder delivered its copy (or dropped it on purpose).
    pub fn delivered(mut self) {
        self.settled = true;
    }

    /// Called by a durable queue that now holds the data: settles the share if its
    /// waiter asked for no more ([`Ack::new_queued`]), or gives it back to be settled on
    /// delivery.
    pub fn settle_if_queued(self) -> Option<Ack> {
        if self.state.queued_is_enough {
            self.delivered();
            None
        } else {
            Some(self)
        }
    }
}

/// Settles every share in a set as delivered.
pub fn delivered_all(acks: Vec<Ack>) {
    acks.into_iter().for_each(Ack::delivered);
}

/// Resolves when every share of the matching [`Ack`] is gone.
pub struct AckWaiter(oneshot::Receiver<Delivery>);

impl AckWaiter {
    pub async fn wait(self) -> Delivery {
        // The sender can only vanish without sending if the state was leaked; treat that as a failure.
        self.0.await.unwrap_or(Delivery::GaveUp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivered_when_every_share_says_so() {
        let (ack, waiter) = Ack::new();
        let a2 = ack.clone();
        let a3 = ack.clone();
        ack.delivered();
        a2.delivered();
        let mut waiter = Box::pin(waiter.wait());
        assert!(futures_util::poll!(&mut waiter).is_pending());
        a3.delivered();
        assert_eq!(waiter.await, Delivery::Delivered);
    }

    #[tokio::test]
    async fn a_queued_ack_is_settled_by_a_durable_queue_and_a_plain_one_is_not() {
        let (queued, w1) = Ack::new_queued();
        let memory_share = queued.clone();
        assert!(queued.settle_if_queued().is_none());
        let mut w1 = Box::pin(w1.wait());
        assert!(
            futures_util::poll!(&mut w1).is_pending(),
            "a memory queue still holds a share"
        );
        memory_share.delivered();
        assert_eq!(w1.await, Delivery::Delivered);

        let (plain, w2) = Ack::new();
        let back = plain.settle_if_queued().expect("settled on delivery only");
        drop(back);
        assert_eq!(w2.wait().await, Delivery::GaveUp);
    }

    #[tokio::test]
    async fn a_share_dropped_unsettled_fails_the_whole() {
        let (ack, waiter) = Ack::new();
        let a2 = ack.clone();
        drop(a2);
        ack.delivered();
        assert_eq!(waiter.wait().await, Delivery::GaveUp);
    }

    #[tokio::test]
    async fn a_panic_while_holding_a_share_fails_it() {
        let (ack, waiter) = Ack::new();
        let holder = ack.clone();
        ack.delivered();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = holder;
            panic!("processor bug");
        }));
        assert!(r.is_err());
        assert_eq!(waiter.wait().await, Delivery::GaveUp);
    }

    #[tokio::test]
    async fn a_task_aborted_while_holding_a_share_fails_it() {
        let (ack, waiter) = Ack::new();
        let task = tokio::spawn(async move {
            let _held = ack;
            std::future::pending::<()>().await;
        });
        task.abort();
        let _ = task.await;
        assert_eq!(waiter.wait().await, Delivery::GaveUp);
    }

    #[test]
    fn a_runtime_torn_down_fails_what_its_tasks_held() {
        let (ack, waiter) = Ack::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.spawn(async move {
            let _held = ack;
            std::future::pending::<()>().await;
        });
        drop(rt);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(waiter.wait()), Delivery::GaveUp);
    }
}
