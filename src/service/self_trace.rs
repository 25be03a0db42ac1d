//! tradewatch's own spans: `tracing` spans (pipeline batches, exporter requests, polls,
//! risk actions) become OpenTelemetry spans and travel as OTLP/gRPC to
//! `[service.telemetry] traces_endpoint`.
//!
//! The layer is installed with the logger, before the configuration is read; it lets no
//! span through until [`start`] gave it somewhere to send them, so with no endpoint a span
//! costs one atomic load. Spans go through the SDK's batch processor (its own thread,
//! a bounded queue: when the endpoint is slower than the spans, spans are dropped, never
//! data). The export itself runs on the service's runtime, on the tonic stack the OTLP
//! exporter uses, so self-traces add no HTTP client and no TLS library.
//!
//! Risk actions and bot control calls are always recorded; the per-batch spans (pipeline
//! batches and flushes, exporter requests, polls) start a recorded trace at
//! `traces_sample_ratio`, decided before the span exists, and their children follow.
//! [`trace_id`] gives a span's trace id for records that should point at it (a risk
//! action's alert).

use crate::config::Secret;
use crate::net::tls::ClientTlsConfig;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{dynamic_filter_fn, FilterExt, Targets};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// `[service.telemetry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Where tradewatch's own spans go, as OTLP/gRPC (`http://` or `https://`); unset or
    /// empty: nowhere, and spans cost nothing.
    #[serde(default)]
    pub traces_endpoint: Option<String>,
    /// The share of per-batch traces recorded, 0..=1 (risk actions and bot control calls
    /// always are; a child follows its parent).
    #[serde(default = "default_ratio")]
    pub traces_sample_ratio: f64,
    /// `service.name` of the spans (default `tradewatch`).
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Headers sent with every export (a secret: `${VAR}`), e.g. an auth token.
    #[serde(default)]
    pub traces_headers: std::collections::BTreeMap<String, Secret>,
    /// TLS for an `https://` endpoint; the system's roots when absent.
    #[serde(default)]
    pub tls: Option<ClientTlsConfig>,
}

fn default_ratio() -> f64 {
    1.0
}

fn default_service_name() -> String {
    "tradewatch".into()
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            traces_endpoint: None,
            traces_sample_ratio: default_ratio(),
            service_name: default_service_name(),
            traces_headers: Default::default(),
            tls: None,
        }
    }
}

impl TelemetryConfig {
    /// The endpoint, when one is set.
    pub fn endpoint(&self) -> Option<&str> {
        self.traces_endpoint.as_deref().filter(|e| !e.is_empty())
    }

    /// Checks what can be checked without connecting (paths already resolved):
    /// `(key, message)` on error.
    pub fn check(&self) -> Result<(), (String, String)> {
        if !(0.0..=1.0).contains(&self.traces_sample_ratio) {
            return Err((
                "traces_sample_ratio".into(),
                format!("must be within 0..=1, not {}", self.traces_sample_ratio),
            ));
        }
        if let Some(e) = self.endpoint() {
            let uri: http::Uri = e.parse().map_err(|err| {
                (
                    "traces_endpoint".into(),
                    format!("invalid URL {e:?}: {err} (write e.g. \"http://127.0.0.1:4317\")"),
                )
            })?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err((
                    "traces_endpoint".into(),
                    format!("{e:?} is not an http:// or https:// URL with a host (OTLP/gRPC, e.g. \"http://127.0.0.1:4317\")"),
                ));
            }
        }
        self.client_tls()?;
        self.metadata()?;
        Ok(())
    }

    /// The TLS client configuration for an `https://` endpoint.
    fn client_tls(&self) -> Result<Option<rustls::ClientConfig>, (String, String)> {
        if !self.endpoint().is_some_and(|e| e.starts_with("https://")) {
            return Ok(None);
        }
        self.tls
            .clone()
            .unwrap_or_default()
            .build(|p| p.to_owned(), &[b"h2"])
            .map(Some)
            .map_err(|err| (format!("tls.{}", err.key), err.message))
    }

    /// `traces_headers` as gRPC metadata.
    fn metadata(&self) -> Result<tonic::metadata::MetadataMap, (String, String)> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (k, v) in &self.traces_headers {
            let bad = |what: &str| ("traces_headers".to_owned(), format!("invalid {what} {k:?}"));
            let key =
                tonic::metadata::AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                    .map_err(|_| bad("header name"))?;
            let value = tonic::metadata::AsciiMetadataValue::try_from(v.expose())
                .map_err(|_| bad("value for"))?;
            metadata.insert(key, value);
        }
        Ok(metadata)
    }
}

/// Spans pass only once [`start`] set an endpoint.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// `traces_sample_ratio` as f64 bits.
static RATIO: AtomicU64 = AtomicU64::new(0x3FF0_0000_0000_0000); // 1.0
/// Where ended spans go once started.
static SINK: OnceLock<BatchSpanProcessor> = OnceLock::new();
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The layer that turns tradewatch's spans (target `tradewatch`, debug and above) into
/// OpenTelemetry spans, once [`start`] enabled it. Install it next to the log layer.
pub fn layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let provider = PROVIDER.get_or_init(|| {
        SdkTracerProvider::builder()
            .with_span_processor(Late)
            // Sampling happens before a span exists (`keep`), where it costs nothing.
            .with_sampler(Sampler::AlwaysOn)
            .build()
    });
    let tracer = provider.tracer("tradewatch");
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(
            Targets::new()
                .with_target("tradewatch", tracing::Level::DEBUG)
                .and(dynamic_filter_fn(|meta, cx| {
                    meta.is_span()
                        && ENABLED.load(Ordering::Relaxed)
                        && keep(*meta.level(), cx.lookup_current().is_some())
                })),
        )
}

/// Whether a new span is recorded: info-level spans (risk actions, bot control calls) always;
/// the per-batch debug-level ones with their parent, or as a new trace at the configured
/// ratio. A span not kept is never created for this layer, so sampling costs nothing.
fn keep(level: tracing::Level, has_parent: bool) -> bool {
    if level <= tracing::Level::INFO || has_parent {
        return true;
    }
    let ratio = f64::from_bits(RATIO.load(Ordering::Relaxed));
    if ratio >= 1.0 {
        return true;
    }
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new({
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ (&t as *const u64 as u64).rotate_left(32)
        });
    }
    // splitmix64: a uniform draw without a lock.
    let draw = STATE.with(|s| {
        let mut z = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    });
    (draw >> 11) as f64 * (1.0 / (1u64 << 53) as f64) < ratio
}

/// What [`start`] counts: spans exported and spans whose export failed.
pub struct Counters {
    pub exported: prometheus_client::metrics::counter::Counter,
    pub failed: prometheus_client::metrics::counter::Counter,
}

/// Sends spans to `cfg`'s endpoint from now on (nothing when it has none). Once per
/// process: a reload that changes `[service.telemetry]` needs a restart. Call it on the
/// runtime the exports should run on.
pub fn start(cfg: &TelemetryConfig, counters: Counters) -> Result<bool, String> {
    let Some(endpoint) = cfg.endpoint() else {
        return Ok(false);
    };
    if SINK.get().is_some() {
        return Ok(true);
    }
    let invalid = |(key, message): (String, String)| format!("{key}: {message}");
    let ep = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| format!("traces_endpoint: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    let channel = match cfg.client_tls().map_err(invalid)? {
        Some(tls) => {
            ep.connect_with_connector_lazy(crate::net::tls::TlsConnect::new(Arc::new(tls)))
        }
        None => ep.connect_lazy(),
    };
    let metadata = cfg.metadata().map_err(invalid)?;
    let resource = Resource::builder_empty()
        .with_service_name(cfg.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance_id()),
        ])
        .build();
    let exporter = OtlpSpans {
        client: TraceServiceClient::new(channel),
        metadata,
        resource: (&resource).into(),
        runtime: tokio::runtime::Handle::try_current()
            .map_err(|_| "self-tracing needs the service's runtime".to_owned())?,
        counters: Arc::new(counters),
        failing: Arc::new(AtomicBool::new(false)),
    };
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(8192)
                .with_max_export_batch_size(512)
                .with_scheduled_delay(Duration::from_secs(1))
                .build(),
        )
        .build();
    if SINK.set(processor).is_err() {
        return Ok(true);
    }
    RATIO.store(cfg.traces_sample_ratio.to_bits(), Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
    tracing::info!(
        endpoint,
        ratio = cfg.traces_sample_ratio,
        "tradewatch's own spans go to traces_endpoint"
    );
    Ok(true)
}

/// Sends what is queued (at shutdown); blocks, so run it off the async workers.
pub fn flush() {
    ENABLED.store(false, Ordering::Relaxed);
    if let Some(p) = SINK.get() {
        let _ = p.force_flush();
    }
}

/// The trace id of `span` (16 bytes), when self-tracing is on and the span exists.
pub fn trace_id(span: &tracing::Span) -> Option<Vec<u8>> {
    if span.is_disabled() || !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_bytes().to_vec())
}

/// The trace id of the span the caller is in.
pub fn current_trace_id() -> Option<Vec<u8>> {
    trace_id(&tracing::Span::current())
}

fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!("{host}:{}", std::process::id())
}

/// Hands ended spans to the batch processor once there is one.
#[derive(Debug)]
struct Late;

impl SpanProcessor for Late {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if let Some(p) = SINK.get() {
            p.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        SINK.get().map_or(Ok(()), |p| p.force_flush())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        SINK.get()
            .map_or(Ok(()), |p| p.shutdown_with_timeout(timeout))
    }
}

/// Export over OTLP/gRPC on the service's runtime.
struct OtlpSpans {
    client: TraceServiceClient<tonic::transport::Channel>,
    metadata: tonic::metadata::MetadataMap,
    resource: ResourceAttributesWithSchema,
    runtime: tokio::runtime::Handle,
    counters: Arc<Counters>,
    /// Whether the last export failed: logged once per failure streak.
    failing: Arc<AtomicBool>,
}

impl std::fmt::Debug for OtlpSpans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSpans").finish_non_exhaustive()
    }
}

impl SpanExporter for OtlpSpans {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let n = batch.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource),
        };
        let mut client = self.client.clone();
        let mut req = tonic::Request::new(request);
        *req.metadata_mut() = self.metadata.clone();
        let (counters, failing) = (self.counters.clone(), self.failing.clone());
        // The SDK's thread polls this future; the request runs on the service's runtime.
        let task = self.runtime.spawn(async move { client.export(req).await });
        async move {
            let result = match task.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(status)) => Err(format!("{}: {}", status.code(), status.message())),
                Err(e) => Err(format!("the export task ended: {e}")),
            };
            match result {
                Ok(()) => {
                    counters.exported.inc_by(n);
                    if failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("tradewatch's own spans are exported again");
                    }
                    Ok(())
                }
                Err(e) => {
                    counters.failed.inc_by(n);
                    if !failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(spans = n, "exporting tradewatch's own spans failed: {e}");
                    }
                    Err(OTelSdkError::InternalFailure(e))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn actions_are_always_kept_children_follow_and_roots_are_sampled() {
        RATIO.store(0f64.to_bits(), Ordering::Relaxed);
        assert!(keep(Level::INFO, false), "risk actions whatever the ratio");
        assert!(keep(Level::DEBUG, true), "a child of a kept span");
        assert!(!(0..1000).any(|_| keep(Level::DEBUG, false)), "ratio 0");
        RATIO.store(0.25f64.to_bits(), Ordering::Relaxed);
        let kept = (0..20_000).filter(|_| keep(Level::DEBUG, false)).count();
        assert!((4_000..6_000).contains(&kept), "about a quarter: {kept}");
        RATIO.store(1f64.to_bits(), Ordering::Relaxed);
        assert!((0..1000).all(|_| keep(Level::DEBUG, false)), "ratio 1");
    }
}
