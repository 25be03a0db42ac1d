//! `alertmanager`: alert records to Prometheus Alertmanager's API v2
//! (`POST /api/v2/alerts`), to one endpoint or to every member of a cluster (delivered
//! when at least one accepted).
//!
//! A firing alert is posted with `endsAt` = now + `resolve_timeout`, and re-posted
//! every `resend_interval` while it stays active, as Alertmanager clients must: if
//! tradewatch dies, its alerts expire by themselves. A resolved record posts the alert
//! with `endsAt` = the time it resolved. The set of active alerts is kept on disk in
//! the exporter's state directory, so re-sends continue after a restart (alerts that
//! were firing before it are not raised again).

use super::alerting::MinSeverity;
use super::alerting::{self, AlertView, ChannelFilter, ChannelQueue, ChannelRetry, LabeledAlert};
use crate::component::{BuildContext, BuildError, ExporterConfig};
use crate::component::{ComponentId, Kind, Signal};
use crate::component::{ExportError, Exporter};
use crate::config::{component_config, ConfigError, HumanDuration, Source};
use crate::otlp::log_limit::LogLimiter;
use crate::pipeline::sending::SendingSettings;
use crate::pipeline::Payload;
use crate::state::StateDir;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// The file in the state directory that holds the active alerts.
const ACTIVE_FILE: &str = "active_alerts.json";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// `http://127.0.0.1:9093`; `endpoints` for a cluster (one of the two).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// How long a firing alert stays active in Alertmanager without a re-send.
    #[serde(default = "default_resolve_timeout")]
    pub resolve_timeout: HumanDuration,
    /// How often active alerts are re-sent; less than `resolve_timeout`.
    #[serde(default = "default_resend_interval")]
    pub resend_interval: HumanDuration,
    /// `generatorURL` of every alert (a dashboard link).
    #[serde(default)]
    pub generator_url: String,
    #[serde(default)]
    pub min_severity: MinSeverity,
    #[serde(default = "alerting::default_true")]
    pub send_resolved: bool,
    #[serde(default = "alerting::default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub sending_queue: ChannelQueue,
    #[serde(default)]
    pub retry_on_failure: ChannelRetry,
}

fn default_resolve_timeout() -> HumanDuration {
    HumanDuration::from_secs(300)
}

fn default_resend_interval() -> HumanDuration {
    HumanDuration::from_secs(60)
}

impl AlertmanagerConfig {
    fn urls(&self) -> Vec<String> {
        let mut all: Vec<&String> = self.endpoint.iter().collect();
        all.extend(&self.endpoints);
        all.iter()
            .map(|e| format!("{}/api/v2/alerts", e.trim_end_matches('/')))
            .collect()
    }
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let mut c: AlertmanagerConfig = component_config(src, Kind::Exporter, id)?;
    let err = |key: &str, m: String| src.component_error(Kind::Exporter, id, &[key], m);
    if c.endpoint.is_some() && !c.endpoints.is_empty() {
        return Err(err(
            "endpoints",
            "write either endpoint or endpoints, not both".into(),
        ));
    }
    if c.endpoint.is_none() && c.endpoints.is_empty() {
        c.endpoint = Some("http://127.0.0.1:9093".into());
    }
    let key = if c.endpoint.is_some() {
        "endpoint"
    } else {
        "endpoints"
    };
    for e in c.endpoint.iter().chain(&c.endpoints) {
        let ok = e
            .parse::<http::Uri>()
            .map(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
            .unwrap_or(false);
        if !ok {
            return Err(err(
                key,
                format!("invalid endpoint {e:?}: write it as http://HOST:PORT"),
            ));
        }
    }
    if c.resend_interval.get().is_zero() || c.resend_interval.get() >= c.resolve_timeout.get() {
        return Err(err(
            "resend_interval",
            "resend_interval must be more than 0s and less than resolve_timeout, or active alerts expire between re-sends".into(),
        ));
    }
    if let Err((keys, m)) = c.sending().validate() {
        return Err(src.component_error(Kind::Exporter, id, keys, m));
    }
    Ok(Arc::new(c))
}

impl ExporterConfig for AlertmanagerConfig {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Logs]
    }

    fn sending(&self) -> SendingSettings {
        alerting::channel_sending(&self.sending_queue, &self.retry_on_failure, self.timeout)
    }

    fn critical(&self) -> bool {
        false
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Exporter>, BuildError> {
        let filter = super::alerting::ChannelFilter {
            min_severity: self.min_severity,
            send_resolved: self.send_resolved,
        };
        let client = alerting::http_client().map_err(|e| BuildError::new(&ctx.id, e))?;
        Ok(super::alerting::reported(
            ctx,
            filter.clone(),
            Arc::new(AlertmanagerExporter {
                shared: Arc::new(Shared {
                    client,
                    urls: self.urls(),
                    resolve_timeout: self.resolve_timeout.get(),
                    generator_url: self.generator_url.clone(),
                    filter,
                    active: Mutex::new(BTreeMap::new()),
                    state: ctx.state.clone(),
                    persist: tokio::sync::Mutex::new(()),
                    id: ctx.id.to_string(),
                    log: LogLimiter::new(Duration::from_secs(60)),
                }),
                resend_interval: self.resend_interval.get(),
                stop: CancellationToken::new(),
                resender: Arc::new(Mutex::new(None)),
            }),
        ))
    }
}

/// An active alert as posted: its labels, annotations and `startsAt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Active {
    #[serde(flatten)]
    alert: LabeledAlert,
    starts_at: String,
}

struct Shared {
    client: reqwest::Client,
    urls: Vec<String>,
    resolve_timeout: Duration,
    generator_url: String,
    filter: ChannelFilter,
    /// By fingerprint.
    active: Mutex<BTreeMap<String, Active>>,
    state: StateDir,
    /// One state write at a time, in the order the changes were made.
    persist: tokio::sync::Mutex<()>,
    id: String,
    log: LogLimiter,
}

struct AlertmanagerExporter {
    shared: Arc<Shared>,
    resend_interval: Duration,
    stop: CancellationToken,
    resender: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Shared {
    fn active(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Active>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn item(&self, a: &Active, ends_at: SystemTime) -> Value {
        json!({
            "labels": a.alert.labels,
            "annotations": a.alert.annotations,
            "startsAt": a.starts_at,
            "endsAt": alerting::rfc3339(ends_at),
            "generatorURL": self.generator_url,
        })
    }

    /// Posts `items` to every endpoint; delivered when one accepted.
    async fn post(&self, items: &[Value]) -> Result<(), ExportError> {
        let body = serde_json::to_vec(items)
            .map_err(|e| ExportError::permanent(format!("cannot encode alerts: {e}")))?;
        let headers = http::HeaderMap::new();
        let sends = self.urls.iter().map(|url| {
            let body = body.clone();
            let headers = &headers;
            async move {
                let (status, h, b) =
                    alerting::post_json(&self.client, "alertmanager", url, headers, body).await?;
                alerting::classify_http("alertmanager", status, &h, &b, None)
            }
        });
        let results = futures_util::future::join_all(sends).await;
        let mut last = None;
        for r in results {
            match r {
                Ok(()) => return Ok(()),
                Err(e) => {
                    // A retryable failure anywhere makes the whole retryable.
                    let retryable = matches!(e, ExportError::Retryable { .. });
                    if retryable || last.is_none() {
                        last = Some(e);
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| ExportError::permanent("no Alertmanager endpoint")))
    }

    async fn save(&self) {
        let _order = self.persist.lock().await;
        let bytes = match serde_json::to_vec(&*self.active()) {
            Ok(b) => b,
            Err(_) => return,
        };
        if let Err(e) = self.state.write(ACTIVE_FILE, bytes).await {
            tracing::warn!(exporter = %self.id, error = %e, "cannot save the active alerts; after a restart they are not re-sent");
        }
    }

    async fn load(&self) {
        match self.state.read(ACTIVE_FILE).await {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(active) => *self.active() = active,
                Err(e) => {
                    tracing::warn!(exporter = %self.id, error = %e, "unreadable active alerts file; starting with none")
                }
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(exporter = %self.id, error = %e, "cannot read the active alerts; starting with none")
            }
        }
    }

    /// Re-posts every active alert with a fresh `endsAt`.
    async fn resend(&self) {
        let ends_at = SystemTime::now() + self.resolve_timeout;
        let items: Vec<Value> = self
            .active()
            .values()
            .map(|a| self.item(a, ends_at))
            .collect();
        if items.is_empty() {
            return;
        }
        if let Err(e) = self.post(&items).await {
            if let Some(suppressed) = self.log.allow("resend") {
                tracing::warn!(exporter = %self.id, suppressed, "re-sending active alerts failed: {e}");
            }
        }
    }
}

impl Exporter for AlertmanagerExporter {
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let alerts: Vec<AlertView> = alerting::alerts_in(&payload)?
                .into_iter()
                .filter(|a| shared.filter.admits(a))
                .collect();
            if alerts.is_empty() {
                return Ok(());
            }
            // What to post and how the active set changes, applied once delivered (a
            // retry recomputes the same from the same active set).
            let now = SystemTime::now();
            let mut items = Vec::with_capacity(alerts.len());
            let mut changes: Vec<(String, Option<Active>)> = Vec::new();
            {
                let active = shared.active();
                for a in &alerts {
                    let at = alerting::record_time(a.time_unix_nano);
                    let labeled = LabeledAlert::of(a);
                    // By fingerprint, else by labels (Alertmanager's identity): a
                    // resolved record from another source may carry its own fingerprint.
                    let key = if active.contains_key(&a.fingerprint) || a.is_firing() {
                        a.fingerprint.clone()
                    } else {
                        active
                            .iter()
                            .find(|(_, e)| e.alert.labels == labeled.labels)
                            .map(|(k, _)| k.clone())
                            .unwrap_or_else(|| a.fingerprint.clone())
                    };
                    let known = active.get(&key).cloned();
                    if a.is_firing() {
                        // A change of severity is a new label set to Alertmanager: end
                        // the old one now, or it would linger until it expires.
                        if let Some(old) =
                            known.as_ref().filter(|k| k.alert.labels != labeled.labels)
                        {
                            items.push(shared.item(old, at));
                        }
                        let entry = Active {
                            alert: labeled,
                            starts_at: known
                                .map(|k| k.starts_at)
                                .unwrap_or_else(|| alerting::rfc3339(at)),
                        };
                        items.push(shared.item(&entry, now + shared.resolve_timeout));
                        changes.push((a.fingerprint.clone(), Some(entry)));
                    } else {
                        let entry = known.unwrap_or_else(|| Active {
                            alert: labeled,
                            starts_at: alerting::rfc3339(at),
                        });
                        items.push(shared.item(&entry, at));
                        changes.push((key, None));
                    }
                }
            }
            shared.post(&items).await?;
            {
                let mut active = shared.active();
                for (fp, entry) in changes {
                    match entry {
                        Some(e) => active.insert(fp, e),
                        None => active.remove(&fp),
                    };
                }
            }
            shared.save().await;
            Ok(())
        })
    }

    fn start(&self) -> BoxFuture<'static, Result<(), BuildError>> {
        let shared = self.shared.clone();
        let stop = self.stop.clone();
        let every = self.resend_interval;
        let resender = self.resender.clone();
        Box::pin(async move {
            // Loaded before any export can change the set.
            shared.load().await;
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        // The first tick is at once: alerts loaded from disk may be near expiry.
                        _ = tick.tick() => {}
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = shared.resend() => {}
                    }
                }
            });
            *resender.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
            Ok(())
        })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        self.stop.cancel();
        let task = self
            .resender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        Box::pin(async move {
            if let Some(t) = task {
                let _ = t.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_alerts_round_trip_through_json() {
        let mut m = BTreeMap::new();
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), "A".to_string());
        m.insert(
            "fp".to_string(),
            Active {
                alert: LabeledAlert {
                    labels,
                    annotations: BTreeMap::new(),
                },
                starts_at: "2023-11-14T22:13:20.000Z".into(),
            },
        );
        let bytes = serde_json::to_vec(&m).unwrap();
        let back: BTreeMap<String, Active> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, m);
    }
}
