//! `webhook`: alert records POSTed as Alertmanager's webhook payload (version 4), so
//! any receiver written for Alertmanager takes tradewatch's alerts unchanged.
//!
//! One payload's alerts become one POST. Labels identify an alert (`alertname`,
//! `severity`, the string labels), annotations describe it (`summary`, measured
//! values). A firing alert's `startsAt` is remembered, so its resolved record carries
//! the same `startsAt` (and labels); `endsAt` is `0001-01-01T00:00:00Z` while firing,
//! as Alertmanager writes it.

use super::alerting::{self, AlertView, ChannelFilter, ChannelQueue, ChannelRetry, MinSeverity};
use super::alerting::{LabeledAlert, Progress};
use crate::component::{BuildContext, BuildError, ExporterConfig};
use crate::component::{ComponentId, Kind, Signal};
use crate::component::{ExportError, Exporter};
use crate::config::{component_config, ConfigError, HumanDuration, Secret, Source};
use crate::pipeline::sending::SendingSettings;
use crate::pipeline::Payload;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// What Alertmanager writes as the `endsAt` of a firing alert.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
/// Firing alerts whose `startsAt` is remembered, at most.
const REMEMBERED: usize = 10_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST. A secret (it often carries a token).
    pub url: Secret,
    /// Extra request headers; values are secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// At most this many alerts per POST; the rest are counted in `truncatedAlerts`.
    /// 0: all.
    #[serde(default)]
    pub max_alerts: usize,
    /// `externalURL` of the payload (Alertmanager puts its own URL there).
    #[serde(default)]
    pub external_url: String,
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

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let c: WebhookConfig = component_config(src, Kind::Exporter, id)?;
    alerting::check_secret_url(src, id, "url", &c.url)?;
    if header_map(&c.headers).is_err() {
        return Err(src.component_error(
            Kind::Exporter,
            id,
            &["headers"],
            "invalid header name or value (values are not shown: they are secrets)".into(),
        ));
    }
    if let Err((keys, m)) = c.sending().validate() {
        return Err(src.component_error(Kind::Exporter, id, keys, m));
    }
    Ok(Arc::new(c))
}

fn header_map(headers: &BTreeMap<String, Secret>) -> Result<http::HeaderMap, ()> {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| ())?;
        let mut value = http::HeaderValue::from_str(v.expose()).map_err(|_| ())?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

impl ExporterConfig for WebhookConfig {
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
        let headers =
            header_map(&self.headers).map_err(|_| BuildError::new(&ctx.id, "invalid header"))?;
        Ok(super::alerting::reported(
            ctx,
            filter.clone(),
            Arc::new(WebhookExporter {
                shared: Arc::new(Shared {
                    client,
                    url: self.url.clone(),
                    headers,
                    receiver: ctx.id.to_string(),
                    external_url: self.external_url.clone(),
                    max_alerts: self.max_alerts,
                    filter,
                    firing: Mutex::new(HashMap::new()),
                    progress: Progress::default(),
                }),
            }),
        ))
    }
}

struct WebhookExporter {
    shared: Arc<Shared>,
}

/// A firing alert as first sent: a resolved record reuses its labels and `startsAt`.
#[derive(Debug, Clone)]
pub struct Firing {
    pub labels: BTreeMap<String, String>,
    pub starts_at: String,
}

struct Shared {
    client: reqwest::Client,
    url: Secret,
    headers: http::HeaderMap,
    receiver: String,
    external_url: String,
    max_alerts: usize,
    filter: ChannelFilter,
    /// By fingerprint.
    firing: Mutex<HashMap<String, Firing>>,
    progress: Progress,
}

impl Exporter for WebhookExporter {
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
            let body = {
                let firing = shared.firing.lock().unwrap_or_else(|e| e.into_inner());
                payload_v4(
                    &alerts,
                    &firing,
                    &shared.receiver,
                    &shared.external_url,
                    shared.max_alerts,
                )
            };
            shared
                .progress
                .deliver(vec![body.to_string()], |body| {
                    let shared = shared.clone();
                    async move {
                        let (status, h, b) = alerting::post_json(
                            &shared.client,
                            "webhook",
                            shared.url.expose(),
                            &shared.headers,
                            body.into_bytes(),
                        )
                        .await?;
                        alerting::classify_http("webhook", status, &h, &b, None)
                    }
                })
                .await?;
            // Delivered: remember what fired, forget what resolved.
            let mut firing = shared.firing.lock().unwrap_or_else(|e| e.into_inner());
            for (a, sent) in alerts
                .iter()
                .zip(body["alerts"].as_array().into_iter().flatten())
            {
                if a.is_firing() {
                    if firing.len() < REMEMBERED {
                        firing
                            .entry(a.fingerprint.clone())
                            .or_insert_with(|| Firing {
                                labels: LabeledAlert::of(a).labels,
                                starts_at: sent["startsAt"].as_str().unwrap_or_default().to_owned(),
                            });
                    }
                } else {
                    let labels = LabeledAlert::of(a).labels;
                    firing.remove(&a.fingerprint);
                    firing.retain(|_, f| f.labels != labels);
                }
            }
            Ok(())
        })
    }
}

/// The Alertmanager webhook payload (version 4) for `alerts`.
pub fn payload_v4(
    alerts: &[AlertView],
    firing: &HashMap<String, Firing>,
    receiver: &str,
    external_url: &str,
    max_alerts: usize,
) -> Value {
    let mut items = Vec::with_capacity(alerts.len());
    let mut label_sets = Vec::with_capacity(alerts.len());
    let mut annotation_sets = Vec::with_capacity(alerts.len());
    for a in alerts {
        let LabeledAlert {
            mut labels,
            annotations,
        } = LabeledAlert::of(a);
        let at = alerting::rfc3339(alerting::record_time(a.time_unix_nano));
        // By fingerprint, else by labels (Alertmanager's identity): a resolved record
        // from another source may carry a fingerprint of its own.
        let known = firing.get_key_value(&a.fingerprint).or_else(|| {
            (!a.is_firing())
                .then(|| firing.iter().find(|(_, f)| f.labels == labels))
                .flatten()
        });
        let fingerprint = known.map_or(a.fingerprint.as_str(), |(k, _)| k.as_str());
        let known = known.map(|(_, f)| f);
        let starts_at = match known {
            Some(f) => f.starts_at.clone(),
            None => at.clone(),
        };
        if let (false, Some(f)) = (a.is_firing(), known) {
            labels = f.labels.clone();
        }
        let ends_at = if a.is_firing() {
            ZERO_TIME.to_owned()
        } else {
            at
        };
        items.push(json!({
            "status": a.state_str(),
            "labels": labels,
            "annotations": annotations,
            "startsAt": starts_at,
            "endsAt": ends_at,
            "generatorURL": "",
            "fingerprint": fingerprint,
        }));
        label_sets.push(labels);
        annotation_sets.push(annotations);
    }
    let status = if alerts.iter().any(|a| a.is_firing()) {
        "firing"
    } else {
        "resolved"
    };
    let common_labels = common(&label_sets);
    let group_labels: BTreeMap<String, String> = common_labels
        .iter()
        .filter(|(k, _)| *k == "alertname")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let group_key = format!(
        "{{}}:{{{}}}",
        group_labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let truncated = if max_alerts > 0 && items.len() > max_alerts {
        let t = items.len() - max_alerts;
        items.truncate(max_alerts);
        t
    } else {
        0
    };
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": truncated,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": common_labels,
        "commonAnnotations": common(&annotation_sets),
        "externalURL": external_url,
        "alerts": items,
    })
}

/// The pairs every map shares.
fn common(sets: &[BTreeMap<String, String>]) -> BTreeMap<String, String> {
    let Some((first, rest)) = sets.split_first() else {
        return BTreeMap::new();
    };
    first
        .iter()
        .filter(|(k, v)| rest.iter().all(|s| s.get(*k) == Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::alerts::{AlertState, Severity};

    fn view(name: &str, state: AlertState, t: u64) -> AlertView {
        AlertView {
            name: name.into(),
            state,
            severity: if state == AlertState::Firing {
                Severity::Critical
            } else {
                Severity::Info
            },
            summary: "drawdown 12.3% > 10%".into(),
            fingerprint: format!("fp-{name}"),
            labels: vec![
                ("bot".into(), "main".into()),
                ("value".into(), "12.3".into()),
                ("alert.resolves_severity".into(), "critical".into()),
            ],
            trace_id: None,
            time_unix_nano: t,
            source: "risk".into(),
            is_alert: true,
        }
    }

    #[test]
    fn version_4_shape() {
        let t0 = 1_700_000_000_000_000_000;
        let p = payload_v4(
            &[
                view("A", AlertState::Firing, t0),
                view("B", AlertState::Firing, t0),
            ],
            &HashMap::new(),
            "webhook/ops",
            "",
            1,
        );
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["receiver"], "webhook/ops");
        assert_eq!(p["truncatedAlerts"], 1);
        assert_eq!(p["alerts"].as_array().unwrap().len(), 1);
        assert_eq!(p["commonLabels"]["bot"], "main");
        assert_eq!(p["groupLabels"], json!({}));
        assert_eq!(p["groupKey"], "{}:{}");
        let a = &p["alerts"][0];
        assert_eq!(a["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(a["endsAt"], ZERO_TIME);
        assert_eq!(a["labels"]["alertname"], "A");
        assert_eq!(a["annotations"]["value"], "12.3");
        assert_eq!(a["fingerprint"], "fp-A");
    }

    #[test]
    fn resolved_carries_the_original_start() {
        let mut firing = HashMap::new();
        firing.insert(
            "fp-A".to_string(),
            Firing {
                labels: LabeledAlert::of(&view("A", AlertState::Firing, 1)).labels,
                starts_at: "2023-11-14T22:13:20.000Z".into(),
            },
        );
        let t1 = 1_700_000_060_000_000_000;
        let p = payload_v4(&[view("A", AlertState::Resolved, t1)], &firing, "w", "", 0);
        assert_eq!(p["status"], "resolved");
        assert_eq!(p["groupKey"], "{}:{alertname=\"A\"}");
        let a = &p["alerts"][0];
        assert_eq!(a["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(a["endsAt"], "2023-11-14T22:14:20.000Z");
        assert_eq!(a["labels"]["severity"], "critical");
    }
}
