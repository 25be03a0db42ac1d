//! The gRPC transport: a lazily connecting tonic channel and a codec that sends the
//! request bytes as they are.

use super::{Compression, ExportResponse, OtlpExporterConfig, PartialSuccess, Transport};
use crate::component::ExportError;
use crate::component::Signal;
use crate::net::tls::TlsConnect;
use crate::otlp::RpcStatus;
use bytes::{BufMut, Bytes};
use futures_util::future::BoxFuture;
use http::uri::PathAndQuery;
use prost::Message;
use std::time::Duration;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

#[derive(Default, Clone, Copy)]
struct RawCodec;
struct RawEncoder;
struct ResponseDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = ExportResponse;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ExportResponse>, Status> {
        // The request was taken whatever the response holds: one that does not decode
        // reports no partial success rather than failing a delivered export.
        Ok(Some(ExportResponse::decode(src).unwrap_or_default()))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

pub(crate) struct GrpcExporter {
    channel: Channel,
    compression: Compression,
    metadata: MetadataMap,
}

impl GrpcExporter {
    pub(crate) fn new(c: &OtlpExporterConfig) -> Result<GrpcExporter, String> {
        let endpoint = Endpoint::from_shared(c.endpoint.clone())
            .map_err(|e| format!("invalid endpoint: {e}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .http2_adaptive_window(true);
        let mut metadata = MetadataMap::new();
        for (k, v) in &c.headers {
            let key = AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("invalid header name {k:?}"))?;
            let val = AsciiMetadataValue::try_from(v.expose())
                .map_err(|_| format!("invalid value for header {k:?}"))?;
            metadata.insert(key, val);
        }
        let channel = match c.client_tls(&[b"h2"])? {
            Some(config) => endpoint.connect_with_connector_lazy(TlsConnect::new(config)),
            None => endpoint.connect_lazy(),
        };
        Ok(GrpcExporter {
            channel,
            compression: c.compression,
            metadata,
        })
    }
}

fn path(signal: Signal) -> PathAndQuery {
    PathAndQuery::from_static(match signal {
        Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    })
}

impl Transport for GrpcExporter {
    fn send(
        &self,
        signal: Signal,
        body: Bytes,
    ) -> BoxFuture<'static, Result<Option<PartialSuccess>, ExportError>> {
        let mut client = tonic::client::Grpc::new(self.channel.clone());
        if self.compression == Compression::Gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        client = client.accept_compressed(CompressionEncoding::Gzip);
        let metadata = self.metadata.clone();
        Box::pin(async move {
            client
                .ready()
                .await
                .map_err(|e| ExportError::retryable(format!("connecting: {e}")))?;
            let mut req = tonic::Request::new(body);
            *req.metadata_mut() = metadata;
            match client.unary(req, path(signal), RawCodec).await {
                Ok(response) => Ok(response.into_inner().partial()),
                Err(status) => Err(classify(&status)),
            }
        })
    }
}

/// OTLP/gRPC: these codes are transient; the rest mean the data will never be taken.
fn classify(status: &Status) -> ExportError {
    let message = format!("gRPC {:?}: {}", status.code(), status.message());
    // A status tonic made up itself from a broken connection (not one the server sent)
    // says nothing about the data: the peer went away mid-request. Try again.
    if status.code() == Code::Unknown && std::error::Error::source(status).is_some() {
        return ExportError::retryable(message);
    }
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => ExportError::Retryable {
            message,
            retry_after: retry_delay(status.details()),
        },
        _ => ExportError::Permanent { message },
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// The server's `google.rpc.RetryInfo`, if it sent one (OTLP throttling).
fn retry_delay(details: &[u8]) -> Option<Duration> {
    let status = RpcStatus::decode(details).ok()?;
    let info = status
        .details
        .iter()
        .find(|a| a.type_url.ends_with("google.rpc.RetryInfo"))?;
    let d = RetryInfo::decode(info.value.as_slice()).ok()?.retry_delay?;
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?;
    Some(Duration::new(secs, nanos).min(Duration::from_secs(300)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::ProtoAny;

    #[test]
    fn codes_follow_the_otlp_spec() {
        assert!(matches!(
            classify(&Status::unavailable("x")),
            ExportError::Retryable { .. }
        ));
        assert!(matches!(
            classify(&Status::invalid_argument("x")),
            ExportError::Permanent { .. }
        ));
        assert!(matches!(
            classify(&Status::unauthenticated("x")),
            ExportError::Permanent { .. }
        ));
        let details = RpcStatus {
            code: 8,
            message: "slow down".into(),
            details: vec![ProtoAny {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: RetryInfo {
                    retry_delay: Some(ProtoDuration {
                        seconds: 3,
                        nanos: 0,
                    }),
                }
                .encode_to_vec(),
            }],
        }
        .encode_to_vec();
        let s = Status::with_details(Code::ResourceExhausted, "slow down", details.into());
        match classify(&s) {
            ExportError::Retryable { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(3)))
            }
            other => panic!("{other:?}"),
        }
    }
}
