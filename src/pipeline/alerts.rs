//! Alerts: how components raise them, and what one alert is.
//!
//! Alerts are OTLP log records with `event.name = "alert"` and well-known attributes
//! (`alert.name`, `alert.state`, `alert.severity`, `alert.fingerprint`, ...). Processors
//! and receivers emit them through the [`AlertSink`] in their build context; a receiver
//! that takes the [`AlertQueue`] (the `alerts` receiver) puts them into the logs
//! pipelines that list it. When no receiver takes the queue, the service logs every
//! alert instead, so none is lost silently.

use crate::otlp::{attr, log_record, LogsBuilder, Timestamp};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use prometheus_client::metrics::counter::Counter;
use std::sync::{Arc, Mutex};
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
    /// The alert as a log record observed now; the body is the summary.
    pub fn to_log_record(&self) -> LogRecord {
        let now = Timestamp::now();
        let fingerprint = if self.fingerprint.is_empty() {
            fingerprint_of(&self.name, &self.attributes)
        } else {
            self.fingerprint.clone()
        };
        let state = match self.state {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        };
        let mut attributes = vec![
            attr("event.name", "alert"),
            attr("alert.name", &self.name),
            attr("alert.state", state),
            attr("alert.severity", self.severity.as_str()),
            attr("alert.fingerprint", fingerprint),
            attr("alert.source", &self.source),
        ];
        attributes.extend(self.attributes.iter().cloned());
        if let Some(t) = &self.trace_id {
            attributes.push(attr("trace_id", hex(t)));
        }
        LogRecord {
            observed_time_unix_nano: now.0,
            trace_id: self.trace_id.clone().unwrap_or_default(),
            event_name: "alert".into(),
            severity_text: self.severity.as_str().to_uppercase(),
            ..log_record(
                now,
                self.severity.number(),
                self.summary.as_str(),
                attributes,
            )
        }
    }
}

/// The logs export request that carries `alerts`, as the `alerts` receiver sends it:
/// resource `service.name = "tradewatch"`, scope `tradewatch.alerts`.
pub fn alerts_request<'a>(alerts: impl IntoIterator<Item = &'a Alert>) -> ExportLogsServiceRequest {
    let mut b = LogsBuilder::new();
    b.resource([attr("service.name", "tradewatch")])
        .scope("tradewatch.alerts", env!("CARGO_PKG_VERSION"));
    for a in alerts {
        b.record(a.to_log_record());
    }
    b.build()
}

/// A string attribute (same as [`attr`] with a `&str`).
pub fn kv_str(k: &str, v: &str) -> KeyValue {
    attr(k, v)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An alert's fingerprint from its name and its string attributes.
fn fingerprint_of(name: &str, attrs: &[KeyValue]) -> String {
    fingerprint(
        name,
        attrs.iter().filter_map(
            |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => Some((kv.key.as_str(), s.as_str())),
                _ => None,
            },
        ),
    )
}

/// The one fingerprint of alerts, stable across restarts and versions: FNV-1a over the
/// name and the identifying labels, sorted. Every component that raises alerts uses it,
/// so a firing record and its resolved record always share it.
pub fn fingerprint<'a>(name: &str, labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut labels: Vec<(&str, &str)> = labels.into_iter().collect();
    labels.sort_unstable();
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
    /// The live page's timeline, when the service has one.
    board: Option<Arc<crate::service::board::Board>>,
}

impl AlertSink {
    pub fn new(capacity: usize, lost: Counter) -> (AlertSink, mpsc::Receiver<Alert>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            AlertSink {
                tx,
                lost,
                board: None,
            },
            rx,
        )
    }

    /// Also adds every alert to `board`'s timeline (`/ui`).
    pub fn with_board(mut self, board: Arc<crate::service::board::Board>) -> AlertSink {
        self.board = Some(board);
        self
    }

    /// Raises an alert. Never blocks the caller; if the alert queue is full the alert is
    /// logged at error level and counted, so it is never lost silently.
    pub fn emit(&self, alert: Alert) {
        if let Some(board) = &self.board {
            let fp = if alert.fingerprint.is_empty() {
                fingerprint_of(&alert.name, &alert.attributes)
            } else {
                alert.fingerprint.clone()
            };
            let labels = alert
                .attributes
                .iter()
                .filter(|kv| !kv.key.starts_with("alert."))
                .map(|kv| {
                    let v = kv
                        .value
                        .as_ref()
                        .map(crate::otlp::value_text)
                        .unwrap_or_default();
                    (kv.key.clone(), v)
                })
                .collect();
            board.alert(
                &alert.name,
                alert.state == AlertState::Firing,
                alert.severity.as_str(),
                &alert.summary,
                &fp,
                &alert.source,
                labels,
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{for_each_log_record, get_str, wire};
    use prost::Message;

    #[test]
    fn alerts_become_one_logs_request() {
        let alert = |name: &str, state| Alert {
            name: name.into(),
            state,
            severity: Severity::Warning,
            summary: format!("{name} happened"),
            fingerprint: String::new(),
            attributes: vec![attr("bot", "main"), attr("value", 0.12)],
            trace_id: None,
            source: "risk".into(),
        };
        let alerts = [
            alert("A", AlertState::Firing),
            alert("A", AlertState::Resolved),
            alert("B", AlertState::Firing),
        ];
        let req = alerts_request(&alerts);
        let bytes = req.encode_to_vec();
        let counts = wire::scan_logs(&bytes).unwrap();
        assert_eq!((counts.resources, counts.items), (1, 3));
        assert_eq!(
            ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap(),
            req
        );
        let mut seen = Vec::new();
        for_each_log_record(&req, |ctx, r| {
            let res = &ctx.resource.unwrap().attributes;
            assert_eq!(get_str(res, "service.name"), Some("tradewatch"));
            assert_eq!(ctx.scope.unwrap().name, "tradewatch.alerts");
            assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
            assert_eq!(r.severity_text, "WARNING");
            assert!(r.time_unix_nano > 0 && r.observed_time_unix_nano == r.time_unix_nano);
            seen.push((
                get_str(&r.attributes, "alert.name").unwrap().to_owned(),
                get_str(&r.attributes, "alert.fingerprint")
                    .unwrap()
                    .to_owned(),
            ));
        });
        assert_eq!(seen[0], seen[1]);
        assert_ne!(seen[0].1, seen[2].1);
    }
}
