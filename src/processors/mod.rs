//! Processors: transform batches between receivers and exporters. Each implements
//! [`crate::component::Processor`]; `crate::registry` lists them.

pub mod batch;
pub mod resource;
