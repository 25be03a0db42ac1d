//! Exporters: turn pipeline data into requests to the outside world. Each implements
//! [`crate::component::Exporter`]; `crate::pipeline::sending` gives all of them the same
//! queue, retries and counters. `crate::registry` lists them.

pub mod alerting;
pub mod alertmanager;
pub mod cloudwatch;
pub mod debug;
pub mod file;
pub mod log;
pub mod nats;
pub mod nop;
pub mod otlp;
pub mod prometheus;
pub mod slack;
#[cfg(feature = "aws")]
pub mod sns;
pub mod telegram;
pub mod webhook;
