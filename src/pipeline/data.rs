//! The data that flows through pipelines: OTLP export requests, kept encoded while
//! nothing needs to look inside them.
//!
//! A receiver validates the bytes it was sent with the wire scanner and passes them on
//! as [`Payload::Encoded`]; a processor that edits records decodes once
//! ([`Payload::make_decoded`]); an exporter that forwards OTLP sends the bytes as they
//! came. Batching concatenates encoded requests, which protobuf defines as merging
//! their repeated `resource_*` fields, so a gateway never decodes what it only relays.

use crate::component::Signal;
use crate::otlp::wire::{self, WireError};
use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use prost::Message;
use std::borrow::Cow;

use super::ack::{delivered_all, Ack};
use super::memory::Lease;

#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A valid encoded export request of `signal` holding `items` items.
    Encoded {
        signal: Signal,
        bytes: Bytes,
        items: u64,
    },
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
}

/// A decoded view of a payload, borrowed when it is already decoded.
pub enum Decoded<'a> {
    Traces(Cow<'a, ExportTraceServiceRequest>),
    Metrics(Cow<'a, ExportMetricsServiceRequest>),
    Logs(Cow<'a, ExportLogsServiceRequest>),
}

impl Payload {
    /// Validates encoded request bytes and counts their items without decoding them.
    pub fn from_encoded(signal: Signal, bytes: Bytes) -> Result<Payload, WireError> {
        let counts = match signal {
            Signal::Traces => wire::scan_traces(&bytes)?,
            Signal::Metrics => wire::scan_metrics(&bytes)?,
            Signal::Logs => wire::scan_logs(&bytes)?,
        };
        Ok(Payload::Encoded {
            signal,
            bytes,
            items: counts.items,
        })
    }

    pub fn signal(&self) -> Signal {
        match self {
            Payload::Encoded { signal, .. } => *signal,
            Payload::Traces(_) => Signal::Traces,
            Payload::Metrics(_) => Signal::Metrics,
            Payload::Logs(_) => Signal::Logs,
        }
    }

    /// Spans, metric data points or log records.
    pub fn items(&self) -> u64 {
        match self {
            Payload::Encoded { items, .. } => *items,
            Payload::Traces(r) => wire::Counts::of_traces(r).items,
            Payload::Metrics(r) => wire::Counts::of_metrics(r).items,
            Payload::Logs(r) => wire::Counts::of_logs(r).items,
        }
    }

    /// No resources at all: nothing to send.
    pub fn is_empty(&self) -> bool {
        match self {
            Payload::Encoded { bytes, .. } => bytes.is_empty(),
            Payload::Traces(r) => r.resource_spans.is_empty(),
            Payload::Metrics(r) => r.resource_metrics.is_empty(),
            Payload::Logs(r) => r.resource_logs.is_empty(),
        }
    }

    pub fn encoded_len(&self) -> usize {
        match self {
            Payload::Encoded { bytes, .. } => bytes.len(),
            Payload::Traces(r) => r.encoded_len(),
            Payload::Metrics(r) => r.encoded_len(),
            Payload::Logs(r) => r.encoded_len(),
        }
    }

    /// The protobuf encoding of the export request; free when it arrived encoded.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Payload::Encoded { bytes, .. } => bytes.clone(),
            Payload::Traces(r) => r.encode_to_vec().into(),
            Payload::Metrics(r) => r.encode_to_vec().into(),
            Payload::Logs(r) => r.encode_to_vec().into(),
        }
    }

    /// Decodes in place (once) so a processor can edit records.
    pub fn make_decoded(&mut self) -> Result<(), prost::DecodeError> {
        if let Payload::Encoded { signal, bytes, .. } = self {
            *self = match signal {
                Signal::Traces => {
                    Payload::Traces(ExportTraceServiceRequest::decode(bytes.as_ref())?)
                }
                Signal::Metrics => {
                    Payload::Metrics(ExportMetricsServiceRequest::decode(bytes.as_ref())?)
                }
                Signal::Logs => Payload::Logs(ExportLogsServiceRequest::decode(bytes.as_ref())?),
            };
        }
        Ok(())
    }

    /// A decoded view, borrowing when possible (for exporters that read records).
    pub fn decoded(&self) -> Result<Decoded<'_>, prost::DecodeError> {
        Ok(match self {
            Payload::Encoded { signal, bytes, .. } => match signal {
                Signal::Traces => Decoded::Traces(Cow::Owned(ExportTraceServiceRequest::decode(
                    bytes.as_ref(),
                )?)),
                Signal::Metrics => Decoded::Metrics(Cow::Owned(
                    ExportMetricsServiceRequest::decode(bytes.as_ref())?,
                )),
                Signal::Logs => Decoded::Logs(Cow::Owned(ExportLogsServiceRequest::decode(
                    bytes.as_ref(),
                )?)),
            },
            Payload::Traces(r) => Decoded::Traces(Cow::Borrowed(r)),
            Payload::Metrics(r) => Decoded::Metrics(Cow::Borrowed(r)),
            Payload::Logs(r) => Decoded::Logs(Cow::Borrowed(r)),
        })
    }

    /// Joins payloads of one signal into one request, in one pass.
    ///
    /// Decoded requests alone merge their lists; otherwise every part is appended once
    /// to a buffer sized for all of them (encoded parts by copy, decoded ones by
    /// encoding), so a batch of n requests costs one copy of each, not n copies of the
    /// growing whole.
    pub fn concat(mut parts: Vec<Payload>) -> Payload {
        if parts.len() == 1 {
            return parts.pop().expect("one part");
        }
        let Some(signal) = parts.first().map(Payload::signal) else {
            return Payload::Encoded {
                signal: Signal::Logs,
                bytes: Bytes::new(),
                items: 0,
            };
        };
        debug_assert!(parts.iter().all(|p| p.signal() == signal));
        if parts.iter().all(|p| !matches!(p, Payload::Encoded { .. })) {
            let mut parts = parts.into_iter();
            let mut first = parts.next().expect("at least two parts");
            for p in parts {
                match (&mut first, p) {
                    (Payload::Traces(a), Payload::Traces(b)) => {
                        a.resource_spans.extend(b.resource_spans)
                    }
                    (Payload::Metrics(a), Payload::Metrics(b)) => {
                        a.resource_metrics.extend(b.resource_metrics)
                    }
                    (Payload::Logs(a), Payload::Logs(b)) => a.resource_logs.extend(b.resource_logs),
                    _ => unreachable!("parts of one signal, all decoded"),
                }
            }
            return first;
        }
        let items = parts.iter().map(Payload::items).sum();
        let mut buf = BytesMut::with_capacity(parts.iter().map(Payload::encoded_len).sum());
        for p in &parts {
            append_encoded(p, &mut buf);
        }
        Payload::Encoded {
            signal,
            bytes: buf.freeze(),
            items,
        }
    }
}

fn append_encoded(p: &Payload, buf: &mut BytesMut) {
    match p {
        Payload::Encoded { bytes, .. } => buf.extend_from_slice(bytes),
        Payload::Traces(r) => r.encode_raw(buf),
        Payload::Metrics(r) => r.encode_raw(buf),
        Payload::Logs(r) => r.encode_raw(buf),
    }
}

pub use crate::otlp::wire::metric_points;

/// A payload on its way through a pipeline, with the acknowledgements it carries and
/// the memory it holds.
///
/// Dropping a batch fails its acks (see [`crate::pipeline::ack`]); a processor that
/// drops data on purpose calls [`Batch::filtered`] instead.
#[derive(Debug)]
pub struct Batch {
    pub payload: Payload,
    pub acks: Vec<Ack>,
    /// Bytes reserved for this payload in the memory budget, released with it.
    pub lease: Lease,
}

impl Batch {
    pub fn new(payload: Payload) -> Batch {
        Batch {
            payload,
            acks: Vec::new(),
            lease: Lease::default(),
        }
    }

    pub fn with_ack(payload: Payload, ack: Ack) -> Batch {
        Batch {
            payload,
            acks: vec![ack],
            lease: Lease::default(),
        }
    }

    /// The data was dropped on purpose (filtered out): its acks count it as delivered.
    pub fn filtered(self) {
        delivered_all(self.acks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn traces(n: usize) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..n)
                        .map(|i| Span {
                            name: format!("s{i}"),
                            trace_id: vec![1; 16],
                            span_id: vec![2; 8],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn concatenates_encoded_and_decoded_alike() {
        let (a, b, c) = (traces(3), traces(2), traces(4));
        let enc = |r: &ExportTraceServiceRequest| {
            Payload::from_encoded(Signal::Traces, r.encode_to_vec().into()).unwrap()
        };
        let mut expect = a.clone();
        expect.resource_spans.extend(b.resource_spans.clone());
        expect.resource_spans.extend(c.resource_spans.clone());

        let mut mixed = Payload::concat(vec![enc(&a), Payload::Traces(b.clone()), enc(&c)]);
        assert!(matches!(mixed, Payload::Encoded { .. }));
        assert_eq!(mixed.items(), 9);
        mixed.make_decoded().unwrap();
        assert_eq!(mixed, Payload::Traces(expect.clone()));

        let decoded = Payload::concat(vec![
            Payload::Traces(a),
            Payload::Traces(b),
            Payload::Traces(c),
        ]);
        assert_eq!(decoded, Payload::Traces(expect));
        assert!(Payload::concat(Vec::new()).is_empty());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(
            Payload::from_encoded(Signal::Traces, Bytes::from_static(b"\x0a\xff\xff\xff")).is_err()
        );
    }
}
