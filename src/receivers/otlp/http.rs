//! OTLP/HTTP front-end: `POST /v1/traces`, `/v1/metrics`, `/v1/logs` with protobuf or
//! JSON bodies, optionally gzip- or zstd-compressed. Errors are answered with a
//! `google.rpc.Status` in the request's own encoding, as the OTLP spec asks.

use super::{inflate, Compression, InflateError, Intake, Rejection};
use crate::component::Running;
use crate::component::Signal;
use crate::net::listener::Listener;
use crate::otlp::json;
use crate::otlp::RpcStatus;
use crate::pipeline::Payload;
use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http_body_util::BodyExt;
use prost::Message;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How rejections name this front-end in the log.
const VIA: &str = "OTLP/HTTP";

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
        intake.count(VIA, &r);
        return error_for(r, encoding.unwrap_or(Encoding::Json)).into_response();
    }
    let Some(encoding) = encoding else {
        let message = format!(
            "unsupported content-type {:?}: send application/x-protobuf or application/json",
            if media.is_empty() {
                "(none)"
            } else {
                media.as_str()
            }
        );
        intake.count(VIA, &Rejection::Invalid(message.clone()));
        return HttpError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            grpc_code: tonic::Code::InvalidArgument,
            message,
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
            intake.count(VIA, &r);
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
    let compression = match content_encoding.as_str() {
        "" | "identity" => None,
        "gzip" => Some(Compression::Gzip),
        "zstd" => Some(Compression::Zstd),
        other => {
            return Err(Rejection::Invalid(format!(
                "unsupported content-encoding {other:?}: send gzip, zstd or no encoding"
            )))
        }
    };
    let body = match compression {
        None => raw,
        Some(c) => inflate(c, raw, limit).await.map_err(|e| match e {
            InflateError::TooLarge => Rejection::TooLarge(format!(
                "decompressed request body is larger than max_request_size ({limit} bytes)"
            )),
            InflateError::Invalid(e) => {
                Rejection::Invalid(format!("invalid {content_encoding} body: {e}"))
            }
        })?,
    };
    match encoding {
        Encoding::Protobuf => intake.accept_encoded(signal, body).await,
        Encoding::Json => {
            // Decoding megabytes of JSON takes milliseconds: not on an async worker.
            let payload = if body.len() <= BLOCKING_JSON_MIN {
                decode_json(signal, &body)?
            } else {
                tokio::task::spawn_blocking(move || decode_json(signal, &body))
                    .await
                    .map_err(|e| Rejection::Invalid(format!("decoding failed: {e}")))??
            };
            intake.accept_decoded(payload).await
        }
    }
}

/// JSON bodies larger than this are decoded on the blocking pool.
const BLOCKING_JSON_MIN: usize = 64 * 1024;

/// Non-finite doubles are accepted as the proto3 JSON strings `"NaN"`, `"Infinity"`
/// and `"-Infinity"` (see [`crate::otlp::json`]).
fn decode_json(signal: Signal, body: &[u8]) -> Result<Payload, Rejection> {
    let bad = |e: serde_json::Error| {
        Rejection::Invalid(format!("invalid OTLP/JSON {signal} request: {e}"))
    };
    Ok(match signal {
        Signal::Traces => Payload::Traces(json::from_slice(body).map_err(bad)?),
        Signal::Metrics => Payload::Metrics(json::from_slice(body).map_err(bad)?),
        Signal::Logs => Payload::Logs(json::from_slice(body).map_err(bad)?),
    })
}

/// 404 / 405 for anything but `POST /v1/<signal>`; closes HTTP/1 connections like every
/// other early rejection, since the body was not read.
async fn unknown_path(
    AxState(intake): AxState<Arc<Intake>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    let message = format!(
        "{method} {} is not an OTLP endpoint: POST /v1/traces, /v1/metrics or /v1/logs",
        uri.path()
    );
    intake.count(VIA, &Rejection::Invalid(message.clone()));
    let status = if matches!(uri.path(), "/v1/traces" | "/v1/metrics" | "/v1/logs") {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        StatusCode::NOT_FOUND
    };
    HttpError {
        status,
        grpc_code: tonic::Code::Unimplemented,
        message,
        encoding: Encoding::Json,
    }
    .into_response()
}

pub(super) fn serve(
    listener: Listener,
    intake: Arc<Intake>,
    shutdown: CancellationToken,
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
    Box::pin(crate::net::listener::serve(listener, app, shutdown))
}
