//! tradewatch: an OpenTelemetry-collector-style pipeline for automated trading systems.
//!
//! Receivers turn the outside world into OTLP data, processors transform it, exporters
//! deliver it. [`pipeline`] wires them; [`service`] runs the whole graph and serves
//! `/health`, `/status` and `/metrics`.

#[cfg(feature = "aws")]
pub mod aws;
pub mod component;
pub mod config;
pub mod demo;
pub mod exporters;
pub mod otlp;
pub mod pipeline;
pub mod processors;
pub mod receivers;
pub mod registry;
pub mod service;
pub mod state;
