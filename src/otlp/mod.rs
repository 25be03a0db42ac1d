//! OTLP helpers shared by receivers and exporters.

pub mod wire;
