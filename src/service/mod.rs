//! The running service: health and self-telemetry, the HTTP endpoints, start-up and shutdown.

pub mod board;
pub mod health;
pub mod http;
pub mod run;
pub mod self_trace;
pub mod ui;

pub use health::{ComponentHealth, Overall, Phase, State, Telemetry};
