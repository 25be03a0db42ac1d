//! Receivers: where data enters tradewatch.
//!
//! A receiver is built from its configuration, then started with the [`Outputs`] of the
//! pipelines that list it. Starting binds what it listens on, so a busy port fails
//! start-up before anything serves; the returned future runs until shutdown.

pub mod alerts;
pub mod otlp;

use crate::component::Signal;
use crate::pipeline::Consumer;
use crate::registry::BuildError;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

/// The running part of a started receiver.
pub type Running = BoxFuture<'static, ()>;

pub trait Receiver: Send {
    /// Binds sockets or opens files, then returns the future that serves until
    /// `shutdown` is cancelled. Dropping the outputs when done is what lets the
    /// pipelines downstream drain and end.
    fn start(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<Running, BuildError>>;
}

/// The consumers a receiver sends to, one per signal that some pipeline takes from it.
#[derive(Clone, Default)]
pub struct Outputs {
    by_signal: [Option<Consumer>; 3],
}

impl Outputs {
    pub(crate) fn set(&mut self, c: Consumer) {
        let i = c.signal().index();
        self.by_signal[i] = Some(c);
    }

    pub fn get(&self, s: Signal) -> Option<&Consumer> {
        self.by_signal[s.index()].as_ref()
    }
}
