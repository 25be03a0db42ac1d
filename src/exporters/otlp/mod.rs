//! `otlp`: forwards to another collector, Jaeger or Tempo over gRPC or HTTP/protobuf.
//!
//! Data that arrived encoded is sent as the bytes it arrived in: a gateway relays
//! without decoding. Status handling follows the OTLP spec: retryable gRPC codes and
//! HTTP 429/502/503/504 are retried (after the server's `RetryInfo` / `Retry-After` when
//! given), everything else is permanent.

mod grpc;
mod http;

use crate::component::{BuildContext, BuildError, ExporterConfig};
use crate::component::{ComponentId, Kind, Signal};
use crate::component::{ExportError, Exporter};
use crate::config::{component_config, ConfigError, HumanDuration, Secret, Source};
use crate::pipeline::sending::{QueueConfig, RetryConfig, SendingSettings};
use crate::pipeline::Payload;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

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
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let c: OtlpExporterConfig = component_config(src, Kind::Exporter, id)?;
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
                "invalid endpoint {:?}: write it as http://HOST:PORT",
                c.endpoint
            ),
        ));
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
        match self.protocol {
            Protocol::Grpc => Ok(Arc::new(
                grpc::GrpcExporter::new(self).map_err(|e| BuildError::new(&ctx.id, e))?,
            )),
            Protocol::Http => Ok(Arc::new(
                http::HttpExporter::new(self).map_err(|e| BuildError::new(&ctx.id, e))?,
            )),
        }
    }
}

/// Both transports implement this; the `Exporter` impl is shared.
pub(crate) trait Transport: Send + Sync + 'static {
    fn send(
        &self,
        signal: Signal,
        body: bytes::Bytes,
    ) -> BoxFuture<'static, Result<(), ExportError>>;
}

impl<T: Transport> Exporter for T {
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        self.send(payload.signal(), payload.to_bytes())
    }
}
