//! The HTTP/protobuf transport.

use super::{Compression, ExportResponse, OtlpExporterConfig, PartialSuccess, Transport};
use crate::component::ExportError;
use crate::component::Signal;
use crate::otlp::RpcStatus;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use prost::Message;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER,
};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct HttpExporter {
    client: reqwest::Client,
    urls: Arc<[String; 3]>,
    compression: Compression,
}

impl HttpExporter {
    pub(crate) fn new(c: &OtlpExporterConfig) -> Result<HttpExporter, String> {
        let mut headers = HeaderMap::new();
        for (k, v) in &c.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("invalid header name {k:?}"))?;
            let mut value = HeaderValue::from_str(v.expose())
                .map_err(|_| format!("invalid value for header {k:?}"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let mut client = reqwest::Client::builder();
        if let Some(tls) = c.client_tls(&[b"h2", b"http/1.1"])? {
            client = client.use_preconfigured_tls(Arc::unwrap_or_clone(tls));
        }
        let client = client
            .default_headers(headers)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let base = c.endpoint.trim_end_matches('/');
        let url = |s: Signal| format!("{base}/v1/{}", s.as_str());
        Ok(HttpExporter {
            client,
            urls: Arc::new([url(Signal::Traces), url(Signal::Metrics), url(Signal::Logs)]),
            compression: c.compression,
        })
    }
}

impl Transport for HttpExporter {
    fn send(
        &self,
        signal: Signal,
        body: Bytes,
    ) -> BoxFuture<'static, Result<Option<PartialSuccess>, ExportError>> {
        let mut req = self
            .client
            .post(&self.urls[signal.index()])
            .header(CONTENT_TYPE, "application/x-protobuf");
        let gzip = self.compression == Compression::Gzip;
        if gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        Box::pin(async move {
            let body = match gzip {
                false => body,
                // Compressing a big batch takes milliseconds: not on an async worker.
                true if body.len() <= INLINE_GZIP_MAX => gzip_body(&body)?,
                true => tokio::task::spawn_blocking(move || gzip_body(&body))
                    .await
                    .map_err(|e| ExportError::permanent(format!("gzip failed: {e}")))??,
            };
            let resp = req
                .body(body)
                .send()
                .await
                .map_err(|e| ExportError::retryable(format!("sending: {}", without_url(e))))?;
            let status = resp.status();
            let json = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().starts_with("application/json"));
            if status.is_success() {
                let (body, _) = read_capped(resp).await;
                return Ok(partial_success(&body, json));
            }
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let (body, cut) = read_capped(resp).await;
            let message = format!("HTTP {status}: {}", error_text(&body, cut, json));
            Err(match status.as_u16() {
                429 | 502 | 503 | 504 => ExportError::Retryable {
                    message,
                    retry_after,
                },
                _ => ExportError::Permanent { message },
            })
        })
    }
}

/// Request bodies larger than this are compressed on the blocking pool.
const INLINE_GZIP_MAX: usize = 64 * 1024;

fn gzip_body(body: &[u8]) -> Result<Bytes, ExportError> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(body)
        .and_then(|_| enc.finish())
        .map(Bytes::from)
        .map_err(|e| ExportError::permanent(format!("gzip failed: {e}")))
}

/// The most of a response body that is read: a downstream answering with megabytes
/// (an HTML error page, a misconfigured proxy) must not cost megabytes here.
const MAX_BODY: usize = 64 * 1024;
/// The most of an error body quoted in the error message (and so in `/status`).
const MAX_QUOTED_CHARS: usize = 300;

/// Up to [`MAX_BODY`] bytes of the body, and whether there was more (left unread).
async fn read_capped(mut resp: reqwest::Response) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    // A body that breaks off is quoted as far as it came.
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_BODY - out.len();
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            return (out, true);
        }
        out.extend_from_slice(&chunk);
    }
    (out, false)
}

/// The partial success in a 2xx response body (protobuf, or JSON when the server
/// answered in JSON).
fn partial_success(body: &[u8], json: bool) -> Option<PartialSuccess> {
    if body.is_empty() {
        return None;
    }
    if !json {
        return ExportResponse::decode(body).ok()?.partial();
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let p = v.get("partialSuccess")?.as_object()?;
    // `rejectedSpans` / `rejectedDataPoints` / `rejectedLogRecords`: an int64, which the
    // proto3 JSON mapping writes as a string (numbers are accepted too).
    let rejected = p
        .iter()
        .find(|(k, _)| k.starts_with("rejected"))
        .and_then(|(_, v)| match v {
            serde_json::Value::String(s) => s.parse().ok(),
            v => v.as_i64(),
        })
        .unwrap_or(0);
    let error_message = p
        .get("errorMessage")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_owned();
    ExportResponse {
        partial_success: Some(PartialSuccess {
            rejected,
            error_message,
        }),
    }
    .partial()
}

/// What an error response says: the `google.rpc.Status` message the OTLP spec asks
/// servers to send, or else the body as text; cut to a few hundred characters, saying so.
fn error_text(body: &[u8], cut: bool, json: bool) -> String {
    let status_message = if json {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
    } else {
        RpcStatus::decode(body).ok().map(|s| s.message)
    }
    .filter(|m| !m.is_empty() && !cut);
    let text = status_message.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let text = text.trim();
    let mut quoted: String = text.chars().take(MAX_QUOTED_CHARS).collect();
    if cut {
        quoted.push_str(&format!(
            " … (truncated: the response body is over {} KiB and was not read further)",
            MAX_BODY / 1024
        ));
    } else if quoted.len() < text.len() {
        quoted.push_str(" … (truncated)");
    }
    quoted
}

/// reqwest errors print the URL, which may carry credentials: keep only the causes.
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
