//! `prometheus`: a pull endpoint serving what the metrics pipelines carry, in the
//! Prometheus text format or OpenMetrics (by the scraper's `Accept`, with exemplars).
//!
//! ```toml
//! [exporters.prometheus]
//! endpoint = "127.0.0.1:9464"
//! path = "/metrics"
//! namespace = ""                      # prefix for every name
//! const_labels = { env = "prod" }
//! resource_to_labels = ["deployment.environment"]   # also on every series
//! metric_expiration = "5m"            # series not updated this long disappear
//! max_series_per_metric = 10000       # new series past it are refused (counted)
//! ```
//!
//! OpenTelemetry → Prometheus: names sanitised, unit suffixes (`s` → `_seconds`, `By` →
//! `_bytes`, `%` → `_percent`, `1` → `_ratio` on gauges; annotations such as `{trade}`
//! dropped), `_total` on monotonic sums, non-monotonic sums as gauges, delta sums and
//! delta histograms added up to cumulative (a delta starting before the last one ended
//! starts the sum over: a counter reset), histograms with `+Inf`, summaries with
//! quantiles, the resource in `target_info` (`job` = `service.namespace/service.name`,
//! `instance` = `service.instance.id`, which every series also carries), the scope in
//! `otel_scope_name` / `otel_scope_version`. Exponential histograms are not converted
//! (counted). Expiry runs on its own timer, scraped or not.

mod names;
pub mod store;

use crate::component::{BuildContext, BuildError, ComponentId, ExportError, Exporter};
use crate::component::{ExporterConfig, Kind, Signal};
use crate::config::{component_config, ConfigError, HumanDuration, Source};
use crate::pipeline::data::Decoded;
use crate::pipeline::sending::SendingSettings;
use crate::pipeline::Payload;
use futures_util::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Shape, Store};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub const_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub resource_to_labels: Vec<String>,
    #[serde(default = "default_expiration")]
    pub metric_expiration: HumanDuration,
    #[serde(default = "default_max_series")]
    pub max_series_per_metric: usize,
}

fn default_endpoint() -> String {
    "127.0.0.1:9464".into()
}
fn default_path() -> String {
    "/metrics".into()
}
fn default_expiration() -> HumanDuration {
    HumanDuration::from_secs(300)
}
fn default_max_series() -> usize {
    10_000
}

struct Checked {
    cfg: PrometheusConfig,
    addr: SocketAddr,
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let cfg: PrometheusConfig = component_config(src, Kind::Exporter, id)?;
    let addr: SocketAddr = cfg.endpoint.parse().map_err(|e| {
        src.component_error(
            Kind::Exporter,
            id,
            &["endpoint"],
            format!("endpoint {:?} is not host:port ({e})", cfg.endpoint),
        )
    })?;
    if !cfg.path.starts_with('/') {
        return Err(src.component_error(
            Kind::Exporter,
            id,
            &["path"],
            format!("path {:?} must start with /", cfg.path),
        ));
    }
    if cfg.metric_expiration.get().is_zero() {
        return Err(src.component_error(
            Kind::Exporter,
            id,
            &["metric_expiration"],
            "metric_expiration must be longer than 0s".into(),
        ));
    }
    Ok(Arc::new(Checked { cfg, addr }))
}

impl ExporterConfig for Checked {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Metrics]
    }
    fn sending(&self) -> SendingSettings {
        SendingSettings::in_process(256, 2, Duration::from_secs(10))
    }
    fn critical(&self) -> bool {
        true
    }
    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Exporter>, BuildError> {
        let c = &self.cfg;
        let shape = Shape {
            namespace: c.namespace.clone(),
            const_labels: c
                .const_labels
                .iter()
                .map(|(k, v)| (names::label_name(k), v.clone()))
                .collect(),
            resource_labels: c.resource_to_labels.clone(),
            max_series_per_metric: c.max_series_per_metric,
        };
        let h = &ctx.health;
        Ok(Arc::new(PrometheusExporter {
            id: ctx.id.clone(),
            addr: self.addr,
            path: c.path.clone(),
            expiration: c.metric_expiration.get(),
            shape: Arc::new(shape),
            store: Arc::new(Store::default()),
            stop: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
            counters: Arc::new(Counters {
                refused: h.counter(
                    "refused_series",
                    "New series refused by max_series_per_metric.",
                    &[],
                ),
                conflicts: h.counter(
                    "type_conflict_points",
                    "Points whose Prometheus name is already used by a metric of another type.",
                    &[],
                ),
                unsupported: h.counter(
                    "unconverted_points",
                    "Points of kinds with no Prometheus form here (exponential histograms).",
                    &[],
                ),
                out_of_order: h.counter(
                    "out_of_order_points",
                    "Delta points older than what was already added.",
                    &[],
                ),
                expired: h.counter(
                    "expired_series",
                    "Series removed after metric_expiration without an update.",
                    &[],
                ),
                series: h.gauge("series", "Series held for scraping.", &[]),
            }),
        }))
    }
}

struct Counters {
    refused: Counter,
    conflicts: Counter,
    unsupported: Counter,
    out_of_order: Counter,
    expired: Counter,
    series: Gauge,
}

struct PrometheusExporter {
    id: ComponentId,
    addr: SocketAddr,
    path: String,
    expiration: Duration,
    shape: Arc<Shape>,
    store: Arc<Store>,
    stop: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl Exporter for PrometheusExporter {
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        let (store, shape, counters) = (
            self.store.clone(),
            self.shape.clone(),
            self.counters.clone(),
        );
        Box::pin(async move {
            let out = match payload.decoded() {
                Ok(Decoded::Metrics(req)) => store.ingest(&req, &shape),
                Ok(_) => return Ok(()),
                Err(e) => return Err(ExportError::permanent(format!("undecodable metrics: {e}"))),
            };
            counters.refused.inc_by(out.refused_series);
            counters.conflicts.inc_by(out.conflicts);
            counters.unsupported.inc_by(out.unsupported);
            counters.out_of_order.inc_by(out.out_of_order);
            Ok(())
        })
    }

    fn start(&self) -> BoxFuture<'static, Result<(), BuildError>> {
        let (store, path, addr, stop, id) = (
            self.store.clone(),
            self.path.clone(),
            self.addr,
            self.stop.clone(),
            self.id.clone(),
        );
        let (expiration, counters) = (self.expiration, self.counters.clone());
        let mut tasks = Vec::new();
        // Expiry on its own timer: memory stays bounded whether or not anyone scrapes.
        {
            let (store, stop) = (store.clone(), stop.clone());
            let every = (expiration / 4).clamp(Duration::from_millis(50), Duration::from_secs(15));
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let removed = store.expire(expiration);
                    counters.expired.inc_by(removed as u64);
                    counters.series.set(store.series_count() as i64);
                }
            }));
        }
        let listener = std::net::TcpListener::bind(addr);
        let result = match listener {
            Err(e) => Err(BuildError::at_key(
                &id,
                Kind::Exporter,
                "endpoint",
                format!("cannot listen on {addr}: {e}"),
            )),
            Ok(l) => {
                let _ = l.set_nonblocking(true);
                match tokio::net::TcpListener::from_std(l) {
                    Err(e) => Err(BuildError::new(
                        &id,
                        format!("cannot listen on {addr}: {e}"),
                    )),
                    Ok(listener) => {
                        let app = axum::Router::new().route(
                            &path,
                            axum::routing::get(move |headers: axum::http::HeaderMap| {
                                let store = store.clone();
                                async move { scrape(&store, &headers).await }
                            }),
                        );
                        tasks.push(tokio::spawn(async move {
                            let _ = axum::serve(listener, app)
                                .with_graceful_shutdown(async move { stop.cancelled().await })
                                .await;
                        }));
                        tracing::info!(exporter = %id, %addr, "prometheus scrape endpoint listening");
                        Ok(())
                    }
                }
            }
        };
        *self.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        Box::pin(async move { result })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        Box::pin(async move {
            for t in tasks {
                let _ = t.await;
            }
        })
    }
}

async fn scrape(store: &Arc<Store>, headers: &axum::http::HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    let openmetrics = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let store = store.clone();
    // A big exposition is rendered off the async workers.
    let body = tokio::task::spawn_blocking(move || store.render(openmetrics))
        .await
        .unwrap_or_default();
    let ct = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(axum::http::header::CONTENT_TYPE, ct)], body).into_response()
}

#[cfg(test)]
mod tests;
