//! The HTTP/protobuf transport.

use super::{Compression, OtlpExporterConfig, Transport};
use crate::component::ExportError;
use crate::component::Signal;
use bytes::Bytes;
use futures_util::future::BoxFuture;
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
        let client = reqwest::Client::builder()
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
    fn send(&self, signal: Signal, body: Bytes) -> BoxFuture<'static, Result<(), ExportError>> {
        let mut req = self
            .client
            .post(&self.urls[signal.index()])
            .header(CONTENT_TYPE, "application/x-protobuf");
        let body = match self.compression {
            Compression::None => Ok(body),
            Compression::Gzip => {
                req = req.header(CONTENT_ENCODING, "gzip");
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(body.len() / 4),
                    flate2::Compression::fast(),
                );
                enc.write_all(&body)
                    .and_then(|_| enc.finish())
                    .map(Bytes::from)
            }
        };
        Box::pin(async move {
            let body = body.map_err(|e| ExportError::permanent(format!("gzip failed: {e}")))?;
            let resp = req
                .body(body)
                .send()
                .await
                .map_err(|e| ExportError::retryable(format!("sending: {}", without_url(e))))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = resp.text().await.unwrap_or_default();
            let message = format!(
                "HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            );
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
