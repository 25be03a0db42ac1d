//! Processors: transform batches between receivers and exporters.
//!
//! A processor runs inside its pipeline's task, so `process` is synchronous and must
//! not block; a processor that needs I/O spawns it. A processor that holds data back
//! (batching) reports when it next wants to run through [`Processor::deadline`].

pub mod batch;

use crate::pipeline::Batch;
use tokio::time::Instant;

pub trait Processor: Send {
    /// Takes one batch and pushes what should continue down the pipeline into `out`.
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>);

    /// When [`Processor::flush`] should next be called, if the processor holds data.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Emits held data that is due, or all of it when `force` (at shutdown).
    fn flush(&mut self, _force: bool, _out: &mut Vec<Batch>) {}
}
