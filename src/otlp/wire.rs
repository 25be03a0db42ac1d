//! TEMPORARY stand-in (decodes with prost) until the zero-allocation scanner lands.
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use prost::Message;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub resources: u32,
    pub items: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid protobuf: {0}")]
pub struct WireError(String);

pub fn scan_traces(buf: &[u8]) -> Result<Counts, WireError> {
    let r = ExportTraceServiceRequest::decode(buf).map_err(|e| WireError(e.to_string()))?;
    Ok(Counts {
        resources: r.resource_spans.len() as u32,
        items: crate::pipeline::Payload::Traces(r).items(),
    })
}
pub fn scan_metrics(buf: &[u8]) -> Result<Counts, WireError> {
    let r = ExportMetricsServiceRequest::decode(buf).map_err(|e| WireError(e.to_string()))?;
    Ok(Counts {
        resources: r.resource_metrics.len() as u32,
        items: crate::pipeline::Payload::Metrics(r).items(),
    })
}
pub fn scan_logs(buf: &[u8]) -> Result<Counts, WireError> {
    let r = ExportLogsServiceRequest::decode(buf).map_err(|e| WireError(e.to_string()))?;
    Ok(Counts {
        resources: r.resource_logs.len() as u32,
        items: crate::pipeline::Payload::Logs(r).items(),
    })
}
