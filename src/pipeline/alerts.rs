//! Alerts: how components raise them, and what one alert is.
//!
//! Alerts are OTLP log records with `event.name = "alert"` and well-known attributes
//! (`alert.name`, `alert.state`, `alert.severity`, `alert.fingerprint`, ...). Processors
//! and receivers emit them through the [`AlertSink`] in their build context; a receiver
//! that takes the [`AlertQueue`] (the `alerts` receiver) puts them into the logs
//! pipelines that list it. When no receiver takes the queue, the service logs every
//! alert instead, so none is lost silently.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use prometheus_client::metrics::counter::Counter;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
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
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
    pub fn number(self) -> SeverityNumber {
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
    pub fn new(capacity: usize, lost: Counter) -> (AlertSink, mpsc::Receiver<Alert>) {
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

/// The alert queue's receiving end, taken by the one `alerts` receiver at build time.
pub type AlertQueue = Arc<Mutex<Option<mpsc::Receiver<Alert>>>>;
