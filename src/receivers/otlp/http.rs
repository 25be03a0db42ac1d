//! OTLP/HTTP front-end: `POST /v1/traces`, `/v1/metrics`, `/v1/logs` with protobuf or
//! JSON bodies, optionally gzip- or zstd-compressed. Errors are answered with a
//! `google.rpc.Status` in the request's own encoding, as the OTLP spec asks.

use super::{Intake, Rejection};
use crate::component::Running;
use crate::component::Signal;
use crate::otlp::RpcStatus;
use crate::pipeline::Payload;
use crate::service::health::{ComponentHealth, State};
use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use prost::Message;
use std::io::Read;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

struct HttpError {
    status: StatusCode,
    grpc_code: tonic::Code,
    message: String,
    encoding: Encoding,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = match self.encoding {
            Encoding::Protobuf => RpcStatus {
                code: self.grpc_code as i32,
                message: self.message,
                details: Vec::new(),
            }
            .encode_to_vec(),
            Encoding::Json => serde_json::to_vec(&serde_json::json!({
                "code": self.grpc_code as i32,
                "message": self.message,
            }))
            .unwrap_or_default(),
        };
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.encoding.content_type()),
        );
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

fn error_for(r: Rejection, encoding: Encoding) -> HttpError {
    let status = match &r {
        Rejection::Invalid(_) => StatusCode::BAD_REQUEST,
        Rejection::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Rejection::Unauthenticated => StatusCode::UNAUTHORIZED,
        Rejection::NotConfigured(_) => StatusCode::NOT_FOUND,
        Rejection::Refused(_) | Rejection::NotDelivered => StatusCode::SERVICE_UNAVAILABLE,
    };
    HttpError {
        status,
        grpc_code: r.code(),
        message: r.into_message(),
        encoding,
    }
}

/// Every client error on HTTP/1 closes the connection: a request refused before its
/// body was read would otherwise leave the rest of that body on the connection, and the
/// next request on it would be misparsed.
async fn close_after_client_error(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let http1 = req.version() < Version::HTTP_2;
    let mut resp = next.run(req).await;
    if http1 && resp.status().is_client_error() {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

async fn respond(signal: Signal, intake: &Intake, headers: &HeaderMap, body: Body) -> Response {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let encoding = match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
        "application/json" => Some(Encoding::Json),
        _ => None,
    };
    // Authentication first: an unauthenticated client learns nothing else.
    if !intake.authorized(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())) {
        let r = Rejection::Unauthenticated;
        intake.count(&r);
        return error_for(r, encoding.unwrap_or(Encoding::Json)).into_response();
    }
    let Some(encoding) = encoding else {
        intake.count(&Rejection::Invalid(String::new()));
        return HttpError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            grpc_code: tonic::Code::InvalidArgument,
            message: format!(
                "unsupported content-type {:?}: send application/x-protobuf or application/json",
                if media.is_empty() {
                    "(none)"
                } else {
                    media.as_str()
                }
            ),
            encoding: Encoding::Json,
        }
        .into_response();
    };
    match handle(signal, intake, headers, body, encoding).await {
        Ok(()) => {
            let body: Vec<u8> = match encoding {
                // An empty Export*ServiceResponse: full success.
                Encoding::Protobuf => Vec::new(),
                Encoding::Json => b"{}".to_vec(),
            };
            ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
        }
        Err(r) => {
            intake.count(&r);
            error_for(r, encoding).into_response()
        }
    }
}

async fn handle(
    signal: Signal,
    intake: &Intake,
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
) -> Result<(), Rejection> {
    let limit = intake.max_request_size;
    let too_large = || {
        Rejection::TooLarge(format!(
            "request body is larger than max_request_size ({limit} bytes)"
        ))
    };
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > limit)
    {
        return Err(too_large());
    }
    let raw = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                Rejection::Invalid(format!("reading the request body failed: {e}"))
            }
        })?
        .to_bytes();
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let body = match content_encoding.as_str() {
        "" | "identity" => raw,
        "gzip" => decompress(flate2::read::GzDecoder::new(&raw[..]), limit, "gzip")?,
        "zstd" => {
            let d = zstd::stream::read::Decoder::new(&raw[..])
                .map_err(|e| Rejection::Invalid(format!("invalid zstd body: {e}")))?;
            decompress(d, limit, "zstd")?
        }
        other => {
            return Err(Rejection::Invalid(format!(
                "unsupported content-encoding {other:?}: send gzip, zstd or no encoding"
            )))
        }
    };
    match encoding {
        Encoding::Protobuf => intake.accept_encoded(signal, body).await,
        Encoding::Json => {
            let payload = decode_json(signal, &body)?;
            intake.accept_decoded(payload).await
        }
    }
}

fn decompress(mut r: impl Read, limit: usize, what: &str) -> Result<Bytes, Rejection> {
    let mut out = Vec::new();
    (&mut r)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Rejection::Invalid(format!("invalid {what} body: {e}")))?;
    if out.len() > limit {
        return Err(Rejection::TooLarge(format!(
            "decompressed request body is larger than max_request_size ({limit} bytes)"
        )));
    }
    Ok(out.into())
}

fn decode_json(signal: Signal, body: &[u8]) -> Result<Payload, Rejection> {
    let bad = |e: serde_json::Error| {
        Rejection::Invalid(format!("invalid OTLP/JSON {signal} request: {e}"))
    };
    Ok(match signal {
        Signal::Traces => {
            Payload::Traces(serde_json::from_slice::<ExportTraceServiceRequest>(body).map_err(bad)?)
        }
        Signal::Metrics => Payload::Metrics(
            serde_json::from_slice::<ExportMetricsServiceRequest>(body).map_err(bad)?,
        ),
        Signal::Logs => {
            Payload::Logs(serde_json::from_slice::<ExportLogsServiceRequest>(body).map_err(bad)?)
        }
    })
}

/// 404 / 405 for anything but `POST /v1/<signal>`; closes HTTP/1 connections like every
/// other early rejection, since the body was not read.
async fn unknown_path(
    AxState(intake): AxState<Arc<Intake>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    intake.count(&Rejection::Invalid(String::new()));
    let status = if matches!(uri.path(), "/v1/traces" | "/v1/metrics" | "/v1/logs") {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        StatusCode::NOT_FOUND
    };
    HttpError {
        status,
        grpc_code: tonic::Code::Unimplemented,
        message: format!(
            "{method} {} is not an OTLP endpoint: POST /v1/traces, /v1/metrics or /v1/logs",
            uri.path()
        ),
        encoding: Encoding::Json,
    }
    .into_response()
}

pub(super) fn serve(
    listener: tokio::net::TcpListener,
    intake: Arc<Intake>,
    shutdown: CancellationToken,
    health: Arc<ComponentHealth>,
) -> Running {
    let route = |signal: Signal| {
        post(
            move |AxState(intake): AxState<Arc<Intake>>, headers: HeaderMap, body: Body| async move {
                respond(signal, &intake, &headers, body).await
            },
        )
    };
    let app = Router::new()
        .route("/v1/traces", route(Signal::Traces))
        .route("/v1/metrics", route(Signal::Metrics))
        .route("/v1/logs", route(Signal::Logs))
        .fallback(unknown_path)
        .method_not_allowed_fallback(unknown_path)
        .layer(axum::middleware::from_fn(close_after_client_error))
        .with_state(intake);
    Box::pin(async move {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            health.report_error(State::Failed, format!("OTLP/HTTP server stopped: {e}"));
        }
    })
}
