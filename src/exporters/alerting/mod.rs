//! What every alert channel (`slack`, `telegram`, `sns`, `webhook`, `alertmanager`,
//! `log`) shares: reading alert records back out of a logs payload, the severity and
//! resolved filter each channel applies, and how an HTTP answer becomes an export result
//! (a `429` with `Retry-After` is retried after the wait the peer asked for).
//!
//! An alert record is a log record with `event.name = "alert"` (see
//! `crate::pipeline::alerts`). A channel may also be given plain log records (an error
//! line from a log tail): those become an [`AlertView`] named after their body, with the
//! severity of their severity number, so routing an error log to Slack works too.

use crate::component::ExportError;
use crate::otlp::for_each_log_record;
use crate::pipeline::alerts::{AlertState, Severity};
use crate::pipeline::data::Decoded;
use crate::pipeline::Payload;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde::Deserialize;
use std::time::Duration;

/// One alert record as a channel sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertView {
    /// `alert.name` (`MaxDrawdownExceeded`, a rule name).
    pub name: String,
    pub state: AlertState,
    pub severity: Severity,
    /// The record's body: one human sentence.
    pub summary: String,
    /// Shared by the firing and the resolved record of one alert.
    pub fingerprint: String,
    /// Every other attribute, as text, in record order (`bot`, `strategy`, `value`,
    /// `threshold`, `action`, ...). `alert.*` and `event.name` are not repeated here.
    pub labels: Vec<(String, String)>,
    /// Lowercase hex, when the record carries one.
    pub trace_id: Option<String>,
    /// When the state changed, nanoseconds since the epoch (the record's time, else its
    /// observed time).
    pub time_unix_nano: u64,
    /// `alert.source`: the component that raised it (`risk`, `healthcheck/deps`).
    pub source: String,
    /// False for a plain log record that was read as an alert.
    pub is_alert: bool,
}

impl AlertView {
    /// The label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_firing(&self) -> bool {
        self.state == AlertState::Firing
    }

    /// `FIRING` / `RESOLVED`, as the messages write it.
    pub fn state_str(&self) -> &'static str {
        match self.state {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }

    /// Reads one log record; `None` for a record that has neither alert attributes nor
    /// a body.
    pub fn from_record(r: &LogRecord) -> Option<AlertView> {
        let mut name = None;
        let mut state = None;
        let mut severity = None;
        let mut fingerprint = String::new();
        let mut source = String::new();
        let mut is_alert = r.event_name == "alert";
        let mut trace_id = None;
        let mut labels = Vec::new();
        for kv in &r.attributes {
            let text = kv.value.as_ref().map(value_text).unwrap_or_default();
            match kv.key.as_str() {
                "event.name" => is_alert |= text == "alert",
                "alert.name" => name = Some(text),
                "alert.state" => state = parse_state(&text),
                "alert.severity" => severity = parse_severity(&text),
                "alert.fingerprint" => fingerprint = text,
                "alert.source" => source = text,
                "trace_id" => trace_id = Some(text),
                _ => labels.push((kv.key.clone(), text)),
            }
        }
        let summary = r.body.as_ref().map(value_text).unwrap_or_default();
        if trace_id.is_none() && r.trace_id.len() == 16 && r.trace_id.iter().any(|b| *b != 0) {
            trace_id = Some(r.trace_id.iter().map(|b| format!("{b:02x}")).collect());
        }
        let name = match name {
            Some(n) if !n.is_empty() => n,
            _ if summary.is_empty() => return None,
            _ => summary.chars().take(80).collect(),
        };
        let severity = severity.unwrap_or_else(|| severity_of_number(r.severity_number));
        let time_unix_nano = if r.time_unix_nano != 0 {
            r.time_unix_nano
        } else {
            r.observed_time_unix_nano
        };
        if fingerprint.is_empty() {
            fingerprint = format!("{:016x}", fnv(&name));
        }
        Some(AlertView {
            name,
            state: state.unwrap_or(AlertState::Firing),
            severity,
            summary,
            fingerprint,
            labels,
            trace_id,
            time_unix_nano,
            source,
            is_alert,
        })
    }
}

/// Every record of a logs payload as an alert, in order. Other signals have none.
pub fn alerts_in(payload: &Payload) -> Result<Vec<AlertView>, ExportError> {
    let decoded = payload
        .decoded()
        .map_err(|e| ExportError::permanent(format!("undecodable logs payload: {e}")))?;
    let Decoded::Logs(req) = decoded else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for_each_log_record(&req, |_, r| {
        if let Some(a) = AlertView::from_record(r) {
            out.push(a);
        }
    });
    Ok(out)
}

fn parse_state(s: &str) -> Option<AlertState> {
    match s {
        "firing" => Some(AlertState::Firing),
        "resolved" => Some(AlertState::Resolved),
        _ => None,
    }
}

fn parse_severity(s: &str) -> Option<Severity> {
    match s.to_ascii_lowercase().as_str() {
        "info" => Some(Severity::Info),
        "warning" | "warn" => Some(Severity::Warning),
        "critical" | "error" => Some(Severity::Critical),
        _ => None,
    }
}

/// OTLP severity numbers: 17 and above (ERROR, FATAL) are critical, 13–16 (WARN) warning.
fn severity_of_number(n: i32) -> Severity {
    match n {
        17.. => Severity::Critical,
        13..=16 => Severity::Warning,
        _ => Severity::Info,
    }
}

/// An attribute or body value as text: strings as they are, numbers as Rust prints them
/// (`0.12`, `3`), anything structured as compact JSON-like text.
pub fn value_text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(value_text).collect();
            format!("[{}]", items.join(", "))
        }
        Some(any_value::Value::KvlistValue(l)) => {
            let items: Vec<String> = l
                .values
                .iter()
                .map(|kv| {
                    let v = kv.value.as_ref().map(value_text).unwrap_or_default();
                    format!("{}={v}", kv.key)
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        _ => String::new(),
    }
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// `min_severity` as written in a channel's table.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum MinSeverity {
    #[default]
    Info,
    Warning,
    Critical,
}

/// The part of every channel's table that decides which alerts it sends:
/// `min_severity = "warning"` and `send_resolved = true`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ChannelFilter {
    /// Firing alerts below this severity are not sent. A resolved record is sent when
    /// its firing record would have been (a recovery notice is `info` by design, but it
    /// answers a critical alert).
    pub min_severity: MinSeverity,
    /// Whether resolved records are sent at all.
    pub send_resolved: bool,
}

impl Default for ChannelFilter {
    fn default() -> Self {
        ChannelFilter {
            min_severity: MinSeverity::Info,
            send_resolved: true,
        }
    }
}

impl ChannelFilter {
    /// Whether this channel sends `a`. A resolved record carries the severity of the
    /// alert it resolves in `alert.resolves_severity` when it differs from its own.
    pub fn admits(&self, a: &AlertView) -> bool {
        if !a.is_firing() && !self.send_resolved {
            return false;
        }
        let sev = if a.is_firing() {
            a.severity
        } else {
            a.label("alert.resolves_severity")
                .and_then(parse_severity)
                .unwrap_or(a.severity)
                .max_with(a.severity)
        };
        rank(sev) >= self.min_severity as u8
    }
}

fn rank(s: Severity) -> u8 {
    match s {
        Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Critical => 2,
    }
}

trait MaxWith {
    fn max_with(self, other: Severity) -> Severity;
}

impl MaxWith for Severity {
    fn max_with(self, other: Severity) -> Severity {
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// The wait a `Retry-After` header asks for: whole seconds (`"2"`) or an HTTP date.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
    }
    let when = httpdate_parse(v)?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn httpdate_parse(v: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(v).ok().or_else(|| {
        // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
        let rest = v.split_once(", ")?.1.strip_suffix(" GMT")?;
        let mut it = rest.split(' ');
        let (d, m, y, t) = (it.next()?, it.next()?, it.next()?, it.next()?);
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let m = MONTHS.iter().position(|x| *x == m)? + 1;
        humantime::parse_rfc3339(&format!("{y}-{m:02}-{d:0>2}T{t}Z")).ok()
    })
}

/// How an HTTP answer from a channel's API becomes an export result: 2xx delivered;
/// 429 and 5xx retried (after `retry_after`, else the header's wait); 408 retried;
/// other 4xx permanent (the peer refused this message; retrying cannot help). `what`
/// names the channel in the message; the body is cut to 512 bytes and never includes
/// the URL (webhook URLs are secrets).
pub fn classify_http(
    what: &str,
    status: http::StatusCode,
    headers: &http::HeaderMap,
    body: &[u8],
    retry_after_hint: Option<Duration>,
) -> Result<(), ExportError> {
    if status.is_success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    let message = format!("{what} answered {status}: {}", text.trim());
    if status == http::StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
        || status == http::StatusCode::REQUEST_TIMEOUT
    {
        return Err(ExportError::Retryable {
            message,
            retry_after: retry_after_hint.or_else(|| retry_after(headers)),
        });
    }
    Err(ExportError::permanent(message))
}

/// A transport error (connect refused, timeout) as a retryable export error, without the
/// URL (reqwest puts it in its messages, and a webhook URL is a secret).
pub fn transport_error(what: &str, e: reqwest::Error) -> ExportError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(&e);
    let mut detail = String::new();
    while let Some(s) = source {
        let t = s.to_string();
        if !t.contains("://") {
            detail = t;
        }
        source = s.source();
    }
    let message = if detail.is_empty() {
        format!("{what}: {kind}")
    } else {
        format!("{what}: {kind}: {detail}")
    };
    ExportError::retryable(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::attr;
    use crate::pipeline::alerts::{alerts_request, Alert};

    fn alert(state: AlertState, severity: Severity) -> Alert {
        Alert {
            name: "MaxDrawdownExceeded".into(),
            state,
            severity,
            summary: "drawdown 12.3% > 10%".into(),
            fingerprint: String::new(),
            attributes: vec![attr("bot", "main"), attr("value", 12.3)],
            trace_id: Some(vec![0xab; 16]),
            source: "risk".into(),
        }
    }

    #[test]
    fn alert_records_read_back() {
        let req = alerts_request(&[
            alert(AlertState::Firing, Severity::Critical),
            alert(AlertState::Resolved, Severity::Info),
        ]);
        let views = alerts_in(&Payload::Logs(req)).unwrap();
        assert_eq!(views.len(), 2);
        let a = &views[0];
        assert_eq!(a.name, "MaxDrawdownExceeded");
        assert!(a.is_alert && a.is_firing());
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.summary, "drawdown 12.3% > 10%");
        assert_eq!(a.label("bot"), Some("main"));
        assert_eq!(a.label("value"), Some("12.3"));
        assert_eq!(a.source, "risk");
        assert_eq!(a.trace_id.as_deref(), Some("ab".repeat(16).as_str()));
        assert_eq!(a.fingerprint, views[1].fingerprint);
        assert_eq!(views[1].state, AlertState::Resolved);
    }

    #[test]
    fn plain_records_become_alerts_by_severity_number() {
        let r = LogRecord {
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue("broker disconnected".into())),
            }),
            severity_number: 17,
            ..Default::default()
        };
        let a = AlertView::from_record(&r).unwrap();
        assert!(!a.is_alert);
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.name, "broker disconnected");
        assert!(AlertView::from_record(&LogRecord::default()).is_none());
    }

    #[test]
    fn the_filter_sends_a_recovery_where_its_alert_went() {
        let f = ChannelFilter {
            min_severity: MinSeverity::Critical,
            send_resolved: true,
        };
        let req = alerts_request(&[
            alert(AlertState::Firing, Severity::Critical),
            alert(AlertState::Firing, Severity::Warning),
        ]);
        let v = alerts_in(&Payload::Logs(req)).unwrap();
        assert!(f.admits(&v[0]));
        assert!(!f.admits(&v[1]));
        let mut resolved = alert(AlertState::Resolved, Severity::Info);
        resolved
            .attributes
            .push(attr("alert.resolves_severity", "critical"));
        let v = alerts_in(&Payload::Logs(alerts_request(&[resolved]))).unwrap();
        assert!(f.admits(&v[0]));
        let quiet = ChannelFilter {
            send_resolved: false,
            ..f
        };
        assert!(!quiet.admits(&v[0]));
    }

    #[test]
    fn retry_after_forms() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            http::header::RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        let e = classify_http(
            "slack",
            http::StatusCode::TOO_MANY_REQUESTS,
            &h,
            b"rate limited",
            Some(Duration::from_secs(3)),
        )
        .unwrap_err();
        assert!(matches!(
            e,
            ExportError::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        let e = classify_http(
            "slack",
            http::StatusCode::BAD_REQUEST,
            &h,
            b"invalid_payload",
            None,
        )
        .unwrap_err();
        assert!(matches!(e, ExportError::Permanent { .. }));
        assert!(e.to_string().contains("invalid_payload"));
    }
}
