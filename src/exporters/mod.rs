//! Exporters: turn pipeline data into requests to the outside world.
//!
//! An exporter implements [`Exporter::export`] for one payload; the shared
//! [`sending`] machinery gives every exporter the same bounded queue, concurrency,
//! per-request timeout, retry with backoff and counters.

pub mod debug;
pub mod file;
pub mod nop;
pub mod otlp;
pub mod sending;

use crate::pipeline::Payload;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// Why one export attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExportError {
    /// Worth trying again, after `retry_after` when the peer said how long to wait.
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help (the peer rejected the data).
    #[error("{message}")]
    Permanent { message: String },
}

impl ExportError {
    pub fn retryable(message: impl Into<String>) -> ExportError {
        ExportError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> ExportError {
        ExportError::Permanent {
            message: message.into(),
        }
    }
}

pub trait Exporter: Send + Sync + 'static {
    /// Delivers one payload. The future must be `'static`: clone what it needs.
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>>;

    /// Flushes and closes, after the last export finished.
    fn shutdown(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
