//! `otlp`: forwards to another collector, Jaeger or Tempo over gRPC or HTTP/protobuf.
//!
//! Data that arrived encoded is sent as the bytes it arrived in: a gateway relays
//! without decoding. Status handling follows the OTLP spec: retryable gRPC codes and
//! HTTP 429/502/503/504 are retried (after the server's `RetryInfo` / `Retry-After` when
//! given), everything else is permanent.
//!
//! A server that takes a request but refuses part of it says so in the response's
//! `partial_success` (OTLP spec): those items are counted in `rejected_items`, the
//! server's message becomes the last error in `/status` and a warning (at most one per
//! 10 s), and they are not retried: the server refused them on purpose.

mod grpc;
mod http;

use crate::component::{BuildContext, BuildError, ExporterConfig};
use crate::component::{ComponentId, Kind, Signal};
use crate::component::{ExportError, Exporter};
use crate::config::{component_config, ConfigError, HumanDuration, Secret, Source};
use crate::net::tls::ClientTlsConfig;
use crate::otlp::log_limit::LogLimiter;
use crate::pipeline::sending::{QueueConfig, RetryConfig, SendingSettings};
use crate::pipeline::Payload;
use crate::service::health::{ComponentHealth, State};
use futures_util::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Grpc,
    Http,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// `http://host:4317` for gRPC; `http://host:4318` for HTTP (`/v1/<signal>` is appended).
    pub endpoint: String,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub compression: Compression,
    /// Per request attempt.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Extra request headers (e.g. an API key: `headers = { "x-api-key" = "${KEY}" }`).
    /// Values are never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    #[serde(default)]
    pub sending_queue: QueueConfig,
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// TLS settings for an `https://` endpoint (which uses TLS with the system's roots
    /// without this table).
    #[serde(default)]
    pub tls: Option<ClientTlsConfig>,
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let mut c: OtlpExporterConfig = component_config(src, Kind::Exporter, id)?;
    let uri: ::http::Uri = c.endpoint.parse().map_err(|e| {
        src.component_error(
            Kind::Exporter,
            id,
            &["endpoint"],
            format!("invalid endpoint {:?}: {e}", c.endpoint),
        )
    })?;
    if !matches!(uri.scheme_str(), Some("http") | Some("https")) || uri.host().is_none() {
        return Err(src.component_error(
            Kind::Exporter,
            id,
            &["endpoint"],
            format!(
                "invalid endpoint {:?}: write it as http://HOST:PORT (https:// for TLS)",
                c.endpoint
            ),
        ));
    }
    if let Some(tls) = &mut c.tls {
        if uri.scheme_str() != Some("https") {
            return Err(src.component_error(
                Kind::Exporter,
                id,
                &["endpoint"],
                format!(
                    "[tls] is set but the endpoint {:?} is http://: write https:// to use TLS",
                    c.endpoint
                ),
            ));
        }
        // Paths are taken from the configuration file's folder, once, here.
        for p in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file]
            .into_iter()
            .flatten()
        {
            *p = src.resolve_path(p);
        }
        if let Err(e) = tls.build(|p| p.to_owned(), &[]) {
            return Err(src.component_error(Kind::Exporter, id, &["tls", e.key], e.message));
        }
    }
    for (k, v) in &c.headers {
        if ::http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || ::http::HeaderValue::from_str(v.expose()).is_err()
        {
            return Err(src.component_error(
                Kind::Exporter,
                id,
                &["headers"],
                format!("invalid header {k:?} (name or value)"),
            ));
        }
    }
    if let Err((keys, m)) = c.sending().validate() {
        return Err(src.component_error(Kind::Exporter, id, keys, m));
    }
    Ok(Arc::new(c))
}

impl ExporterConfig for OtlpExporterConfig {
    fn signals(&self) -> Vec<Signal> {
        Signal::ALL.to_vec()
    }

    fn sending(&self) -> SendingSettings {
        SendingSettings {
            queue: self.sending_queue.clone(),
            retry: self.retry_on_failure.clone(),
            timeout: self.timeout.get(),
        }
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Exporter>, BuildError> {
        if self.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
            tracing::warn!(
                exporter = %ctx.id,
                endpoint = %self.endpoint,
                "tls.insecure_skip_verify = true: the server's certificate is NOT checked; \
                 anyone between here and the endpoint can read and change the data. \
                 Use it for tests only; set tls.ca_file instead"
            );
        }
        let partial = Arc::new(PartialSuccesses::new(ctx));
        match self.protocol {
            Protocol::Grpc => Ok(Arc::new(OtlpExporter {
                transport: grpc::GrpcExporter::new(self)
                    .map_err(|e| BuildError::new(&ctx.id, e))?,
                partial,
            })),
            Protocol::Http => Ok(Arc::new(OtlpExporter {
                transport: http::HttpExporter::new(self)
                    .map_err(|e| BuildError::new(&ctx.id, e))?,
                partial,
            })),
        }
    }
}

/// The `partial_success` of an `Export*ServiceResponse`: the three signals' responses
/// share this shape (field 1; in it the rejected count is field 1, the message field 2).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<PartialSuccess>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PartialSuccess {
    /// `rejected_spans`, `rejected_data_points` or `rejected_log_records`.
    #[prost(int64, tag = "1")]
    pub rejected: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

impl ExportResponse {
    /// What the server said beyond "taken": `None` for a full success.
    pub(crate) fn partial(self) -> Option<PartialSuccess> {
        self.partial_success
            .filter(|p| p.rejected > 0 || !p.error_message.is_empty())
    }
}

/// Both transports implement this; the `Exporter` impl is shared.
pub(crate) trait Transport: Send + Sync + 'static {
    /// Sends one request; `Ok(Some(_))` when the server took it but reported a partial
    /// success.
    fn send(
        &self,
        signal: Signal,
        body: bytes::Bytes,
    ) -> BoxFuture<'static, Result<Option<PartialSuccess>, ExportError>>;
}

struct OtlpExporter<T> {
    transport: T,
    partial: Arc<PartialSuccesses>,
}

/// Where partial successes are recorded.
struct PartialSuccesses {
    id: String,
    health: Arc<ComponentHealth>,
    /// Per signal, by [`Signal::index`].
    rejected: [Counter; 3],
    log: LogLimiter,
}

impl PartialSuccesses {
    fn new(ctx: &BuildContext) -> PartialSuccesses {
        let counter = |s: Signal| {
            ctx.health.counter(
                "rejected_items",
                "Items the downstream refused in a partial success (not retried)",
                &[("signal", s.as_str())],
            )
        };
        PartialSuccesses {
            id: ctx.id.to_string(),
            health: ctx.health.clone(),
            rejected: [
                counter(Signal::Traces),
                counter(Signal::Metrics),
                counter(Signal::Logs),
            ],
            log: LogLimiter::new(Duration::from_secs(10)),
        }
    }

    fn record(&self, signal: Signal, sent: u64, p: PartialSuccess) {
        let rejected = u64::try_from(p.rejected).unwrap_or(0);
        self.rejected[signal.index()].inc_by(rejected);
        let server: String = p.error_message.chars().take(300).collect();
        let message = format!(
            "partial success: the downstream rejected {rejected} of {sent} {}: {}",
            signal.item_name(),
            if server.is_empty() {
                "(no message)"
            } else {
                &server
            }
        );
        if let Some(suppressed) = self.log.allow("partial success") {
            tracing::warn!(exporter = %self.id, %signal, rejected, suppressed, "{message}");
        }
        // The request was taken: the component stays ok; the message is its last error.
        self.health.report_error(State::Ok, message);
    }
}

impl<T: Transport> Exporter for OtlpExporter<T> {
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        let signal = payload.signal();
        let sent = self.transport.send(signal, payload.to_bytes());
        let partial = self.partial.clone();
        Box::pin(async move {
            if let Some(p) = sent.await? {
                partial.record(signal, payload.items(), p);
            }
            Ok(())
        })
    }
}

impl OtlpExporterConfig {
    /// The rustls configuration for an `https://` endpoint, `None` for `http://`.
    pub(crate) fn client_tls(
        &self,
        alpn: &[&[u8]],
    ) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
        if !self.endpoint.starts_with("https://") {
            return Ok(None);
        }
        let tls = self.tls.clone().unwrap_or_default();
        tls.build(|p| p.to_owned(), alpn)
            .map(|c| Some(Arc::new(c)))
            .map_err(|e| format!("tls.{e}"))
    }
}
