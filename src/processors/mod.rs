//! Processors: transform batches between receivers and exporters. Each implements
//! [`crate::component::Processor`]; `crate::registry` lists them.

pub mod attributes;
pub mod batch;
pub mod ratio_to_percent;
pub mod resource;
pub mod risk;
pub mod trace_enrich;
