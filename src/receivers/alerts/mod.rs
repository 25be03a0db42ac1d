//! `alerts`: the internal source through which components raise alerts.
//!
//! Alerts are OTLP log records with `event.name = "alert"` and well-known attributes
//! (`alert.name`, `alert.state`, `alert.severity`, `alert.fingerprint`, ...). Processors
//! and receivers emit them through the [`AlertSink`] in their build context; the
//! `alerts` receiver puts them into the logs pipelines that list it, where the alert
//! exporters (and any other logs exporter) deliver them like any record.

use crate::component::{ComponentId, Kind, Signal};
use crate::config::{component_config, ConfigError, Source};
use crate::pipeline::{Batch, Payload, Refused};
use crate::receivers::{Outputs, Receiver, Running};
use crate::registry::{BuildContext, BuildError, ReceiverConfig};
use futures_util::future::BoxFuture;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Firing,
    Resolved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
    fn number(self) -> SeverityNumber {
        match self {
            Severity::Info => SeverityNumber::Info,
            Severity::Warning => SeverityNumber::Warn,
            Severity::Critical => SeverityNumber::Error,
        }
    }
}

/// One alert state change.
#[derive(Debug, Clone)]
pub struct Alert {
    pub name: String,
    pub state: AlertState,
    pub severity: Severity,
    /// Human summary; becomes the record's body.
    pub summary: String,
    /// Identifies one alert across its firing and resolved records; derived from the name
    /// and the labels when empty.
    pub fingerprint: String,
    /// Labels such as `bot`, `strategy`, and measured `value` / `threshold`.
    pub attributes: Vec<KeyValue>,
    pub trace_id: Option<Vec<u8>>,
    /// The component that raised it.
    pub source: String,
}

impl Alert {
    pub fn to_log_record(&self) -> LogRecord {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let fingerprint = if self.fingerprint.is_empty() {
            fingerprint(&self.name, &self.attributes)
        } else {
            self.fingerprint.clone()
        };
        let mut attributes = vec![
            kv_str("event.name", "alert"),
            kv_str("alert.name", &self.name),
            kv_str(
                "alert.state",
                match self.state {
                    AlertState::Firing => "firing",
                    AlertState::Resolved => "resolved",
                },
            ),
            kv_str("alert.severity", self.severity.as_str()),
            kv_str("alert.fingerprint", &fingerprint),
            kv_str("alert.source", &self.source),
        ];
        attributes.extend(self.attributes.iter().cloned());
        if let Some(t) = &self.trace_id {
            attributes.push(kv_str("trace_id", &hex(t)));
        }
        LogRecord {
            time_unix_nano: now,
            observed_time_unix_nano: now,
            severity_number: self.severity.number() as i32,
            severity_text: self.severity.as_str().to_uppercase(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(self.summary.clone())),
            }),
            attributes,
            trace_id: self.trace_id.clone().unwrap_or_default(),
            event_name: "alert".into(),
            ..Default::default()
        }
    }
}

pub fn kv_str(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_owned())),
        }),
        ..Default::default()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Stable across restarts: FNV-1a over the name and the string labels, sorted.
fn fingerprint(name: &str, attrs: &[KeyValue]) -> String {
    let mut labels: Vec<(&str, &str)> = attrs
        .iter()
        .filter_map(
            |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => Some((kv.key.as_str(), s.as_str())),
                _ => None,
            },
        )
        .collect();
    labels.sort();
    let mut h: u64 = 0xcbf29ce484222325;
    let mut eat = |s: &str| {
        for b in s.bytes().chain([0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    };
    eat(name);
    for (k, v) in labels {
        eat(k);
        eat(v);
    }
    format!("{h:016x}")
}

/// How components raise alerts. Cheap to clone.
#[derive(Clone)]
pub struct AlertSink {
    tx: mpsc::Sender<Alert>,
    lost: Counter,
}

impl AlertSink {
    pub(crate) fn new(capacity: usize, lost: Counter) -> (AlertSink, mpsc::Receiver<Alert>) {
        let (tx, rx) = mpsc::channel(capacity);
        (AlertSink { tx, lost }, rx)
    }

    /// Raises an alert. Never blocks the caller; if the alert queue is full the alert is
    /// logged at error level and counted, so it is never lost silently.
    pub fn emit(&self, alert: Alert) {
        if let Err(e) = self.tx.try_send(alert) {
            let a = match e {
                mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => a,
            };
            self.lost.inc();
            tracing::error!(alert = %a.name, severity = a.severity.as_str(), summary = %a.summary, "alert queue unavailable; alert logged here only");
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ReceiverConfig>, ConfigError> {
    let c: AlertsConfig = component_config(src, Kind::Receiver, id)?;
    Ok(Arc::new(c))
}

/// The alert queue's receiving end, taken by the one `alerts` receiver at build time.
pub type AlertQueue = Arc<Mutex<Option<mpsc::Receiver<Alert>>>>;

impl ReceiverConfig for AlertsConfig {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Logs]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError> {
        let rx = ctx.alert_queue.lock().ok().and_then(|mut g| g.take());
        let Some(rx) = rx else {
            return Err(BuildError::new(
                &ctx.id,
                "only one alerts receiver may be declared",
            ));
        };
        Ok(Box::new(AlertsReceiver {
            id: ctx.id.clone(),
            rx,
        }))
    }
}

struct AlertsReceiver {
    id: ComponentId,
    rx: mpsc::Receiver<Alert>,
}

impl Receiver for AlertsReceiver {
    fn start(
        self: Box<Self>,
        outputs: Outputs,
        _shutdown: tokio_util::sync::CancellationToken,
    ) -> BoxFuture<'static, Result<Running, BuildError>> {
        let AlertsReceiver { id, mut rx } = *self;
        Box::pin(async move {
            let Some(consumer) = outputs.get(Signal::Logs).cloned() else {
                return Err(BuildError::new(
                    &id,
                    "no logs pipeline takes alerts from this receiver",
                ));
            };
            let run: Running = Box::pin(async move {
                // Runs until every component holding an AlertSink is gone, so alerts
                // raised while the service drains are still delivered.
                while let Some(alert) = rx.recv().await {
                    let req = ExportLogsServiceRequest {
                        resource_logs: vec![ResourceLogs {
                            resource: Some(Resource {
                                attributes: vec![kv_str("service.name", "tradewatch")],
                                ..Default::default()
                            }),
                            scope_logs: vec![ScopeLogs {
                                scope: Some(InstrumentationScope {
                                    name: "tradewatch.alerts".into(),
                                    version: env!("CARGO_PKG_VERSION").into(),
                                    ..Default::default()
                                }),
                                log_records: vec![alert.to_log_record()],
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                    };
                    let mut delay = Duration::from_millis(50);
                    loop {
                        match consumer
                            .consume(Batch::new(Payload::Logs(req.clone())))
                            .await
                        {
                            Ok(()) => break,
                            Err(Refused::ShuttingDown) => {
                                tracing::error!(alert = %alert.name, summary = %alert.summary, "pipeline closed; alert logged here only");
                                break;
                            }
                            // Internal data has no client to retry for it: wait for room.
                            Err(Refused::Full) => {
                                tokio::time::sleep(delay).await;
                                delay = (delay * 2).min(Duration::from_secs(2));
                            }
                        }
                    }
                }
            });
            Ok(run)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Consumer;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn alerts_enter_the_logs_pipeline_as_records() {
        let (sink, rx) = AlertSink::new(8, Counter::default());
        let (tx, mut pipeline) = mpsc::channel(8);
        let mut outputs = Outputs::default();
        outputs.set(Consumer::new(
            Signal::Logs,
            vec![tx],
            Duration::from_millis(10),
            Counter::default(),
            Counter::default(),
        ));
        let receiver = Box::new(AlertsReceiver {
            id: ComponentId::parse("alerts").unwrap(),
            rx,
        });
        let run = receiver.start(outputs, Default::default()).await.unwrap();
        let task = tokio::spawn(run);
        let alert = |state| Alert {
            name: "MaxDrawdownExceeded".into(),
            state,
            severity: Severity::Critical,
            summary: "drawdown 12.3% > 10%".into(),
            fingerprint: String::new(),
            attributes: vec![kv_str("bot", "main")],
            trace_id: Some(vec![7; 16]),
            source: "risk".into(),
        };
        sink.emit(alert(AlertState::Firing));
        sink.emit(alert(AlertState::Resolved));
        drop(sink);
        let mut records = Vec::new();
        while let Some(b) = pipeline.recv().await {
            let Payload::Logs(req) = b.payload else {
                panic!("alerts are logs")
            };
            records.extend(req.resource_logs[0].scope_logs[0].log_records.clone());
        }
        task.await.unwrap();
        assert_eq!(records.len(), 2);
        let attr = |r: &LogRecord, k: &str| {
            r.attributes.iter().find(|kv| kv.key == k).and_then(|kv| {
                match &kv.value.as_ref()?.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                }
            })
        };
        assert_eq!(attr(&records[0], "event.name").as_deref(), Some("alert"));
        assert_eq!(attr(&records[0], "alert.state").as_deref(), Some("firing"));
        assert_eq!(
            attr(&records[1], "alert.state").as_deref(),
            Some("resolved")
        );
        assert_eq!(
            attr(&records[0], "alert.severity").as_deref(),
            Some("critical")
        );
        assert_eq!(attr(&records[0], "bot").as_deref(), Some("main"));
        // One alert, one fingerprint, across its state changes.
        assert_eq!(
            attr(&records[0], "alert.fingerprint"),
            attr(&records[1], "alert.fingerprint")
        );
        assert_eq!(records[0].trace_id, vec![7; 16]);
        assert_eq!(records[0].severity_number, SeverityNumber::Error as i32);
    }
}
