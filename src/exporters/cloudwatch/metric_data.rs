//! `cloudwatch`: metrics to CloudWatch through `PutMetricData` (aws-sdk-cloudwatch).
//!
//! ```toml
//! [exporters.cloudwatch]
//! region = "us-east-1"                  # empty: the environment's
//! endpoint_url = ""                     # moto, a VPC endpoint
//! namespace = "tradewatch"              # and the rest of the shared conversion settings
//! timeout = "10s"
//! ```
//!
//! Samples become datums, one per dimension set. Within one request (one namespace):
//! at most 1,000 datums and an estimated 1 MB of form-encoded body; values of one metric,
//! dimension set, unit and timestamp travel as `Values`/`Counts` (at most 150 distinct
//! values per datum); histograms and summaries as `StatisticValues`. NaN and infinities are
//! dropped and counted (CloudWatch refuses them). Throttling, 5xx and connection failures
//! are retried by the sending queue; a retry resumes after the requests already accepted.

use super::{
    own_and_shape, samples_of, AwsTarget, Counters, DeltaState, Prepared, Sample, Shape, Value,
};
use crate::component::{BuildContext, BuildError, ComponentId, ExportError, Exporter};
use crate::component::{ExporterConfig, Kind, Signal};
use crate::config::{ConfigError, HumanDuration, Source};
use crate::pipeline::sending::{QueueConfig, RetryConfig, SendingSettings};
use crate::pipeline::Payload;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};
use futures_util::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// PutMetricData: at most 1,000 metric data per request.
pub const MAX_DATUMS: usize = 1000;
/// PutMetricData: a request body is at most 1 MB.
pub const MAX_REQUEST_BYTES: usize = 1_000_000;
/// PutMetricData: at most 150 values (and counts) per datum.
pub const MAX_VALUES: usize = 150;

#[derive(Debug, Clone, Deserialize)]
pub struct CloudWatchOwn {
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub endpoint_url: String,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub sending_queue: Option<QueueConfig>,
    #[serde(default)]
    pub retry_on_failure: Option<RetryConfig>,
}

const OWN_KEYS: &[&str] = &[
    "region",
    "endpoint_url",
    "timeout",
    "sending_queue",
    "retry_on_failure",
];

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

pub struct CloudWatchConfig {
    own: CloudWatchOwn,
    shape: Shape,
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let (own, shape): (CloudWatchOwn, Shape) = own_and_shape(src, id, OWN_KEYS)?;
    let target = AwsTarget {
        region: own.region.clone(),
        endpoint_url: own.endpoint_url.clone(),
    };
    target
        .check()
        .map_err(|(k, m)| src.component_error(Kind::Exporter, id, &[k], m))?;
    let c = CloudWatchConfig { own, shape };
    if let Err((keys, m)) = c.sending().validate() {
        return Err(src.component_error(Kind::Exporter, id, keys, m));
    }
    Ok(Arc::new(c))
}

impl ExporterConfig for CloudWatchConfig {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Metrics]
    }

    fn sending(&self) -> SendingSettings {
        super::sending_settings(
            &self.own.sending_queue,
            &self.own.retry_on_failure,
            self.own.timeout,
        )
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Exporter>, BuildError> {
        let h = &ctx.health;
        Ok(Arc::new(CloudWatchExporter {
            inner: Arc::new(Inner {
                target: AwsTarget {
                    region: self.own.region.clone(),
                    endpoint_url: self.own.endpoint_url.clone(),
                },
                timeout: self.own.timeout.get(),
                shape: self.shape.clone(),
                state: Mutex::new(DeltaState::default()),
                prepared: Prepared::default(),
                client: OnceCell::new(),
                counters: Counters::new(h),
                requests: h.counter("put_metric_data_requests", "PutMetricData calls made.", &[]),
            }),
        }))
    }
}

struct CloudWatchExporter {
    inner: Arc<Inner>,
}

struct Inner {
    target: AwsTarget,
    timeout: std::time::Duration,
    shape: Shape,
    state: Mutex<DeltaState>,
    prepared: Prepared<Vec<Request>>,
    client: OnceCell<aws_sdk_cloudwatch::Client>,
    counters: Counters,
    requests: Counter,
}

impl Exporter for CloudWatchExporter {
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let result = inner.export(&payload).await;
            if !matches!(result, Err(ExportError::Retryable { .. })) {
                inner.prepared.finish(&payload);
            }
            result
        })
    }
}

impl Inner {
    async fn client(&self) -> &aws_sdk_cloudwatch::Client {
        self.client
            .get_or_init(|| async {
                let sdk = self.target.sdk_config(self.timeout).await;
                aws_sdk_cloudwatch::Client::new(&sdk)
            })
            .await
    }

    fn prepare(&self, payload: &Payload) -> Result<Vec<Request>, ExportError> {
        let samples = samples_of(payload, &self.shape, &self.state, &self.counters)?;
        Ok(requests(&samples))
    }

    async fn export(&self, payload: &Arc<Payload>) -> Result<(), ExportError> {
        let (reqs, done) = self.prepared.get(payload, || self.prepare(payload))?;
        if reqs.len() <= done {
            return Ok(());
        }
        let client = self.client().await;
        for (i, r) in reqs.iter().enumerate().skip(done) {
            let data: Vec<MetricDatum> = r.datums.iter().map(Datum::to_sdk).collect();
            self.requests.inc();
            client
                .put_metric_data()
                .namespace(r.namespace.as_ref())
                .set_metric_data(Some(data))
                .send()
                .await
                .map_err(|e| super::classify_sdk("PutMetricData", &e))?;
            self.prepared.advance(payload, i + 1);
        }
        Ok(())
    }
}

/// One `PutMetricData` call.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub namespace: Arc<str>,
    pub datums: Vec<Datum>,
}

/// One metric datum, before it becomes the SDK's.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub name: String,
    pub dimensions: Vec<(String, String)>,
    pub time_ms: i64,
    pub unit: &'static str,
    pub resolution: u8,
    pub data: DatumData,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DatumData {
    /// Distinct values and how often each was seen.
    Values(Vec<(f64, f64)>),
    Stats {
        count: f64,
        sum: f64,
        min: f64,
        max: f64,
    },
}

impl Datum {
    fn to_sdk(&self) -> MetricDatum {
        let mut b = MetricDatum::builder()
            .metric_name(&self.name)
            .timestamp(DateTime::from_millis(self.time_ms))
            .unit(StandardUnit::from(self.unit))
            .storage_resolution(self.resolution as i32);
        for (k, v) in &self.dimensions {
            b = b.dimensions(Dimension::builder().name(k).value(v).build());
        }
        match &self.data {
            DatumData::Values(vs) if vs.len() == 1 && vs[0].1 == 1.0 => b = b.value(vs[0].0),
            DatumData::Values(vs) => {
                for (v, c) in vs {
                    b = b.values(*v).counts(*c);
                }
            }
            DatumData::Stats {
                count,
                sum,
                min,
                max,
            } => {
                b = b.statistic_values(
                    StatisticSet::builder()
                        .sample_count(*count)
                        .sum(*sum)
                        .minimum(*min)
                        .maximum(*max)
                        .build(),
                )
            }
        }
        b.build()
    }

    /// An upper bound of this datum's size in the form-encoded (awsQuery) request: each
    /// field is a key of at most 64 bytes and a value that URL-encoding can triple.
    pub fn encoded_size(&self) -> usize {
        const FIELD: usize = 64;
        let text = |s: &str| FIELD + 3 * s.len();
        let mut n =
            text(&self.name) + text("2026-11-30T00:00:00.000Z") + text(self.unit) + FIELD + 2;
        for (k, v) in &self.dimensions {
            n += text(k) + text(v);
        }
        n += match &self.data {
            DatumData::Values(vs) => vs.len() * 2 * (FIELD + 24),
            DatumData::Stats { .. } => 4 * (FIELD + 24),
        };
        n
    }
}

/// Lays samples out as requests within PutMetricData's limits.
pub fn requests(samples: &[Sample]) -> Vec<Request> {
    // Datums by (namespace, name, dimensions, time, unit, resolution); values merged.
    type Key = (
        Arc<str>,
        String,
        Vec<(String, String)>,
        i64,
        &'static str,
        u8,
    );
    let mut order: Vec<Key> = Vec::new();
    let mut values: HashMap<Key, Vec<(f64, f64)>> = HashMap::new();
    let mut stats: Vec<(Key, DatumData)> = Vec::new();
    for s in samples {
        for set in s.sets.iter() {
            let dimensions: Vec<(String, String)> = set
                .iter()
                .filter_map(|k| s.members.iter().find(|(mk, _)| mk == k).cloned())
                .collect();
            let key: Key = (
                s.namespace.clone(),
                s.name.clone(),
                dimensions,
                s.time_ms,
                s.unit,
                s.resolution,
            );
            match s.value {
                Value::One(v) => {
                    let slot = values.entry(key.clone()).or_insert_with(|| {
                        order.push(key);
                        Vec::new()
                    });
                    match slot.iter_mut().find(|(x, _)| *x == v) {
                        Some(e) => e.1 += 1.0,
                        None => slot.push((v, 1.0)),
                    }
                }
                Value::Stats {
                    count,
                    sum,
                    min,
                    max,
                } => stats.push((
                    key,
                    DatumData::Stats {
                        count,
                        sum,
                        min,
                        max,
                    },
                )),
            }
        }
    }
    let mut datums: Vec<(Arc<str>, Datum)> = Vec::new();
    let mk = |k: &Key, data: DatumData| Datum {
        name: k.1.clone(),
        dimensions: k.2.clone(),
        time_ms: k.3,
        unit: k.4,
        resolution: k.5,
        data,
    };
    for k in order {
        let vs = values.remove(&k).unwrap_or_default();
        for chunk in vs.chunks(MAX_VALUES) {
            datums.push((k.0.clone(), mk(&k, DatumData::Values(chunk.to_vec()))));
        }
    }
    for (k, data) in stats {
        datums.push((k.0.clone(), mk(&k, data)));
    }
    // Requests per namespace, in the order namespaces first appear.
    let mut out: Vec<Request> = Vec::new();
    let mut open: HashMap<Arc<str>, (usize, usize)> = HashMap::new(); // index, bytes
    for (ns, d) in datums {
        let size = d.encoded_size();
        let base = 64 + 3 * ns.len();
        let fits = open.get(&ns).is_some_and(|&(i, bytes)| {
            out[i].datums.len() < MAX_DATUMS && bytes + size <= MAX_REQUEST_BYTES
        });
        if !fits {
            out.push(Request {
                namespace: ns.clone(),
                datums: Vec::new(),
            });
            open.insert(ns.clone(), (out.len() - 1, base));
        }
        let slot = open.get_mut(&ns).expect("just inserted");
        slot.1 += size;
        out[slot.0].datums.push(d);
    }
    out
}
