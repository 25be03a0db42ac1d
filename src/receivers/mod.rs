//! Receivers: where data enters tradewatch. Each implements
//! [`crate::component::Receiver`]; `crate::registry` lists them.

pub mod alerts;
pub mod freqtrade;
pub mod healthcheck;
pub mod logtail;
pub mod nats;
pub mod otlp;
