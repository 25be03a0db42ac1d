//! OTLP/gRPC front-end. Requests are taken as raw bytes (a codec that does not decode)
//! and validated by the wire scanner, so the hot path allocates one buffer per request.

use super::{inflate, Compression, InflateError, Intake, Rejection, INLINE_INFLATE_MAX};
use crate::component::Running;
use crate::component::Signal;
use crate::net::listener::Listener;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http_body::Frame;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceResponse, metrics::v1::ExportMetricsServiceResponse,
    trace::v1::ExportTraceServiceResponse,
};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Status};

/// How rejections name this front-end in the log.
const VIA: &str = "OTLP/gRPC";

/// Takes requests as bytes and encodes responses with prost.
pub(crate) struct RawRequestCodec<R>(PhantomData<R>);

impl<R> Default for RawRequestCodec<R> {
    fn default() -> Self {
        RawRequestCodec(PhantomData)
    }
}

pub(crate) struct ProstResponseEncoder<R>(PhantomData<R>);
pub(crate) struct BytesDecoder;

impl<R: prost::Message> Encoder for ProstResponseEncoder<R> {
    type Item = R;
    type Error = Status;
    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the response failed: {e}")))
    }
}

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl<R: prost::Message + Send + 'static> Codec for RawRequestCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ProstResponseEncoder<R>;
    type Decoder = BytesDecoder;
    fn encoder(&mut self) -> Self::Encoder {
        ProstResponseEncoder(PhantomData)
    }
    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

/// One OTLP service (`TraceService`, `MetricsService` or `LogsService`).
trait OtlpService: Send + Sync + 'static {
    const NAME: &'static str;
    const SIGNAL: Signal;
    type Response: prost::Message + Default + Send + 'static;
}

struct Traces;
struct Metrics;
struct Logs;

impl OtlpService for Traces {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const SIGNAL: Signal = Signal::Traces;
    type Response = ExportTraceServiceResponse;
}
impl OtlpService for Metrics {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const SIGNAL: Signal = Signal::Metrics;
    type Response = ExportMetricsServiceResponse;
}
impl OtlpService for Logs {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const SIGNAL: Signal = Signal::Logs;
    type Response = ExportLogsServiceResponse;
}

struct GrpcService<S> {
    intake: Arc<Intake>,
    _s: PhantomData<S>,
}

impl<S> Clone for GrpcService<S> {
    fn clone(&self) -> Self {
        GrpcService {
            intake: self.intake.clone(),
            _s: PhantomData,
        }
    }
}

impl<S: OtlpService> NamedService for GrpcService<S> {
    const NAME: &'static str = S::NAME;
}

struct Export<S> {
    intake: Arc<Intake>,
    /// Set when tonic got as far as calling the handler, which then does its own counting.
    reached: Arc<AtomicBool>,
    _s: PhantomData<S>,
}

impl<S: OtlpService> UnaryService<Bytes> for Export<S> {
    type Response = S::Response;
    type Future = BoxFuture<'static, Result<tonic::Response<S::Response>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        self.reached.store(true, Ordering::Relaxed);
        let intake = self.intake.clone();
        Box::pin(async move {
            match intake.accept_encoded(S::SIGNAL, request.into_inner()).await {
                Ok(()) => Ok(tonic::Response::new(S::Response::default())),
                Err(r) => {
                    intake.count(VIA, &r);
                    Err(status_for(r))
                }
            }
        })
    }
}

fn status_for(r: Rejection) -> Status {
    Status::new(r.code(), r.into_message())
}

impl<S: OtlpService> tower::Service<http::Request<tonic::body::Body>> for GrpcService<S> {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let intake = self.intake.clone();
        Box::pin(async move {
            let path = req.uri().path();
            let is_export = path
                .strip_prefix('/')
                .and_then(|p| p.strip_prefix(S::NAME))
                .is_some_and(|p| p == "/Export");
            if !is_export {
                let message = format!("unknown method {path}");
                intake.count(VIA, &Rejection::Invalid(message.clone()));
                return Ok(Status::unimplemented(message).into_http());
            }
            let is_grpc = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/grpc"));
            if !is_grpc {
                // The gRPC spec: a request that is not application/grpc* gets HTTP 415.
                intake.count(
                    VIA,
                    &Rejection::Invalid("content-type is not application/grpc: HTTP 415".into()),
                );
                let mut resp = http::Response::new(tonic::body::Body::empty());
                *resp.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
                return Ok(resp);
            }
            // Before the body is read and decompressed: an unauthenticated client costs nothing.
            if !intake.authorized(
                req.headers()
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
            ) {
                let r = Rejection::Unauthenticated;
                intake.count(VIA, &r);
                return Ok(status_for(r).into_http());
            }
            let limit = intake.max_request_size;
            let req = match inflate_large_message(req, limit).await {
                Ok(req) => req,
                Err(r) => {
                    intake.count(VIA, &r);
                    return Ok(status_for(r).into_http());
                }
            };
            let mut grpc = tonic::server::Grpc::new(RawRequestCodec::<S::Response>::default())
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit);
            let reached = Arc::new(AtomicBool::new(false));
            let handler = Export::<S> {
                intake: intake.clone(),
                reached: reached.clone(),
                _s: PhantomData,
            };
            let resp = grpc.unary(handler, req).await;
            if reached.load(Ordering::Relaxed) {
                return Ok(resp);
            }
            Ok(tonic_rejection(resp, limit, &intake))
        })
    }
}

/// A request tonic refused before our handler saw it (bad framing, bad compression, too
/// large): count it, and say what was wrong in OTLP's terms — an oversized message is
/// `RESOURCE_EXHAUSTED` naming the limit, a body that does not decompress is the
/// client's mistake (`INVALID_ARGUMENT`), not an `INTERNAL` server error.
fn tonic_rejection(
    resp: http::Response<tonic::body::Body>,
    limit: usize,
    intake: &Intake,
) -> http::Response<tonic::body::Body> {
    let Some(status) = Status::from_header_map(resp.headers()) else {
        return resp;
    };
    let r = match status.code() {
        Code::Ok => return resp,
        Code::OutOfRange | Code::ResourceExhausted => Rejection::TooLarge(format!(
            "request is larger than max_request_size ({limit} bytes after decompression)"
        )),
        Code::Internal => Rejection::Invalid(format!("invalid request: {}", status.message())),
        _ => {
            let message = format!("{:?}: {}", status.code(), status.message());
            intake.count(VIA, &Rejection::Invalid(message));
            return resp;
        }
    };
    intake.count(VIA, &r);
    status_for(r).into_http()
}

fn too_large(limit: usize) -> Rejection {
    Rejection::TooLarge(format!(
        "request is larger than max_request_size ({limit} bytes after decompression)"
    ))
}

/// tonic inflates a compressed message inside its codec, on the async worker serving the
/// connection, where inflating tens of megabytes stalls every other request on that
/// worker. A large compressed message is therefore read and inflated here, on the
/// blocking pool and never past `limit`, and handed on as an uncompressed frame; small
/// ones (and anything malformed, which tonic answers as before) pass through untouched.
async fn inflate_large_message(
    req: http::Request<tonic::body::Body>,
    limit: usize,
) -> Result<http::Request<tonic::body::Body>, Rejection> {
    use futures_util::StreamExt;
    use http_body_util::BodyExt;
    let compression = match req.headers().get("grpc-encoding").map(|v| v.as_bytes()) {
        Some(b"gzip") => Compression::Gzip,
        Some(b"zstd") => Compression::Zstd,
        _ => return Ok(req),
    };
    let (parts, mut body) = req.into_parts();
    let mut buf = BytesMut::new();
    let mut prefix: Vec<Result<Frame<Bytes>, Status>> = Vec::new();
    let mut ended = false;
    // The message length, once the 5-byte header is in, if it is compressed and large.
    let large = |buf: &BytesMut| -> Option<Option<usize>> {
        let header = buf.get(..5)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        Some((header[0] == 1 && len > INLINE_INFLATE_MAX && len <= limit).then_some(len))
    };
    let len = loop {
        if let Some(large) = large(&buf) {
            match large {
                Some(len) if buf.len() < 5 + len => {}
                other => break other,
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => buf.extend_from_slice(&data),
                Err(trailers) => {
                    prefix.push(Ok(trailers));
                    ended = true;
                    break None;
                }
            },
            Some(Err(e)) => {
                return Err(Rejection::Invalid(format!(
                    "reading the request failed: {}",
                    e.message()
                )))
            }
            None => {
                ended = true;
                break None;
            }
        }
    };
    let mut data = buf.freeze();
    if let Some(len) = len {
        let rest = data.split_off(5 + len);
        let inflated = inflate(compression, data.slice(5..), limit)
            .await
            .map_err(|e| match e {
                InflateError::TooLarge => too_large(limit),
                InflateError::Invalid(e) => {
                    Rejection::Invalid(format!("invalid request: Error decompressing: {e}"))
                }
            })?;
        let len = u32::try_from(inflated.len()).map_err(|_| too_large(limit))?;
        let mut header = BytesMut::with_capacity(5);
        header.put_u8(0);
        header.put_u32(len);
        data = rest;
        prefix.insert(0, Ok(Frame::data(inflated)));
        prefix.insert(0, Ok(Frame::data(header.freeze())));
    }
    if !data.is_empty() {
        let at = prefix
            .iter()
            .take_while(|f| matches!(f, Ok(f) if f.is_data()))
            .count();
        prefix.insert(at, Ok(Frame::data(data)));
    }
    let rest = (!ended).then(|| http_body_util::BodyStream::new(body));
    let stream =
        futures_util::stream::iter(prefix).chain(futures_util::stream::iter(rest).flatten());
    let body = tonic::body::Body::new(http_body_util::StreamBody::new(stream));
    Ok(http::Request::from_parts(parts, body))
}

pub(super) fn serve(
    listener: Listener,
    intake: Arc<Intake>,
    shutdown: CancellationToken,
) -> Running {
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(GrpcService::<Traces> {
            intake: intake.clone(),
            _s: PhantomData,
        })
        .add_service(GrpcService::<Metrics> {
            intake: intake.clone(),
            _s: PhantomData,
        })
        .add_service(GrpcService::<Logs> {
            intake: intake.clone(),
            _s: PhantomData,
        });
    // Anything that is not one of the three OTLP services is counted as a bad request too.
    let counted = intake.clone();
    let router =
        routes
            .routes()
            .into_axum_router()
            .fallback(move |req: http::Request<axum::body::Body>| {
                let intake = counted.clone();
                async move {
                    let message = format!("unknown service or method {}", req.uri().path());
                    intake.count(VIA, &Rejection::Invalid(message.clone()));
                    Status::unimplemented(message).into_http::<axum::body::Body>()
                }
            });
    // Served by the shared accept loop (TLS, connection cap, timeouts, HTTP/2 windows and
    // keepalive) rather than tonic's own server.
    Box::pin(crate::net::listener::serve(listener, router, shutdown))
}
