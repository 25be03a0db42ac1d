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
use crate::config::{HumanDuration, HumanSize};
use crate::otlp::for_each_log_record;
use crate::pipeline::alerts::{AlertState, Severity};
use crate::pipeline::data::Decoded;
use crate::pipeline::sending::{Fsync, OnFull, QueueConfig, RetryConfig, SendingSettings, Storage};
use crate::pipeline::Payload;

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
            fingerprint = crate::pipeline::alerts::fingerprint(&name, []);
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

pub use crate::otlp::value_text;

/// Refuses a secret URL (a webhook with its token in the path) that is not http(s),
/// naming the key but never showing the value.
pub fn check_secret_url(
    src: &crate::config::Source,
    id: &crate::component::ComponentId,
    key: &str,
    url: &crate::config::Secret,
) -> Result<(), crate::config::ConfigError> {
    let u = url.expose();
    if (u.starts_with("https://") || u.starts_with("http://")) && u.parse::<http::Uri>().is_ok() {
        return Ok(());
    }
    Err(src.component_error(
        crate::component::Kind::Exporter,
        id,
        &[key],
        format!("{key} must be an http(s) URL (the value is not shown: it is a secret)"),
    ))
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

// ---------------------------------------------------------------------------------------
// Sending settings every channel shares

/// `[exporters.<channel>.sending_queue]` with the defaults that suit an alert channel:
/// one message at a time (they leave in order and a retried message is not overtaken),
/// room for 1024 payloads, and the oldest dropped when full, so a dead channel never
/// holds up the pipeline. With `storage = "disk"` alerts survive a crash (a restart sends
/// what was not delivered) and a full queue blocks instead (`on_full` defaults to
/// `block`: a disk queue keeps everything).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelQueue {
    pub queue_size: usize,
    pub num_consumers: usize,
    pub on_full: Option<OnFull>,
    pub storage: Storage,
    pub max_size: HumanSize,
    pub fsync: Fsync,
    pub fsync_interval: HumanDuration,
    pub segment_size: HumanSize,
}

impl Default for ChannelQueue {
    fn default() -> Self {
        let q = QueueConfig::default();
        ChannelQueue {
            queue_size: 1024,
            num_consumers: 1,
            on_full: None,
            storage: q.storage,
            max_size: q.max_size,
            fsync: q.fsync,
            fsync_interval: q.fsync_interval,
            segment_size: q.segment_size,
        }
    }
}

impl ChannelQueue {
    /// The queue settings, `on_full` resolved by storage.
    pub fn get(&self) -> QueueConfig {
        QueueConfig {
            queue_size: self.queue_size,
            num_consumers: self.num_consumers,
            on_full: self.on_full.unwrap_or(match self.storage {
                Storage::Memory => OnFull::DropOldest,
                Storage::Disk => OnFull::Block,
            }),
            storage: self.storage,
            max_size: self.max_size,
            fsync: self.fsync,
            fsync_interval: self.fsync_interval,
            segment_size: self.segment_size,
        }
    }
}

/// `[exporters.<channel>.retry_on_failure]`: retries on, for up to an hour (an alert is
/// worth waiting for; a rate limit or a Slack outage passes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelRetry {
    pub enabled: bool,
    pub initial_interval: HumanDuration,
    pub max_interval: HumanDuration,
    pub max_elapsed_time: HumanDuration,
}

impl Default for ChannelRetry {
    fn default() -> Self {
        ChannelRetry {
            enabled: true,
            initial_interval: HumanDuration::from_secs(1),
            max_interval: HumanDuration::from_secs(60),
            max_elapsed_time: HumanDuration::from_secs(3600),
        }
    }
}

/// Per request attempt, for every channel.
pub fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// `send_resolved` defaults to true.
pub fn default_true() -> bool {
    true
}

/// The sending settings of a channel's table.
pub fn channel_sending(
    queue: &ChannelQueue,
    retry: &ChannelRetry,
    timeout: HumanDuration,
) -> SendingSettings {
    SendingSettings {
        queue: queue.get(),
        retry: RetryConfig {
            enabled: retry.enabled,
            initial_interval: retry.initial_interval,
            max_interval: retry.max_interval,
            max_elapsed_time: retry.max_elapsed_time,
        },
        timeout: timeout.get(),
    }
}

/// The HTTP client of a channel: short connect timeout (a dead peer fails fast and is
/// retried), no redirects (a webhook URL that redirects is a misconfiguration).
pub fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Sends a JSON body; the error never carries the URL.
pub async fn post_json(
    client: &reqwest::Client,
    what: &str,
    url: &str,
    headers: &http::HeaderMap,
    body: Vec<u8>,
) -> Result<(http::StatusCode, http::HeaderMap, bytes::Bytes), ExportError> {
    let resp = client
        .post(url)
        .headers(headers.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| transport_error(what, e))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.map_err(|e| transport_error(what, e))?;
    Ok((status, headers, body))
}

/// RFC 3339 in UTC with milliseconds, as Alertmanager writes times.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A record time (nanoseconds since the epoch) as a `SystemTime`; now when unset.
pub fn record_time(unix_nano: u64) -> std::time::SystemTime {
    if unix_nano == 0 {
        return std::time::SystemTime::now();
    }
    std::time::UNIX_EPOCH + Duration::from_nanos(unix_nano)
}

// ---------------------------------------------------------------------------------------
// Alertmanager's model (the `webhook` and `alertmanager` channels)

/// An alert as Alertmanager models it: labels identify it, annotations describe it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct LabeledAlert {
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// Label keys whose values are measurements: annotations, never labels (a label that
/// changes with every reading would make every reading a new alert).
const MEASURED: [&str; 3] = ["value", "threshold", "limit"];

impl LabeledAlert {
    /// `alertname`, `severity` and the string labels (names made valid Prometheus label
    /// names) as labels; the summary, measured and numeric values, the trace id and the
    /// source as annotations. A resolved record gets the severity of the alert it
    /// resolves, so both records carry the same labels.
    pub fn of(a: &AlertView) -> LabeledAlert {
        let mut labels = std::collections::BTreeMap::new();
        let mut annotations = std::collections::BTreeMap::new();
        for (k, v) in &a.labels {
            if k == "alert.resolves_severity" {
                continue;
            }
            let name = label_name(k);
            let numeric = v.parse::<f64>().is_ok();
            if MEASURED.contains(&k.as_str()) || numeric {
                annotations.insert(name, v.clone());
            } else if !v.is_empty() {
                labels.insert(name, v.clone());
            }
        }
        let severity = if a.is_firing() {
            a.severity
        } else {
            a.label("alert.resolves_severity")
                .and_then(parse_severity)
                .unwrap_or(a.severity)
        };
        labels.insert("alertname".into(), a.name.clone());
        labels.insert("severity".into(), severity.as_str().into());
        if !a.summary.is_empty() {
            annotations.insert("summary".into(), a.summary.clone());
        }
        if let Some(t) = &a.trace_id {
            annotations.insert("trace_id".into(), t.clone());
        }
        if !a.source.is_empty() {
            annotations.insert("source".into(), a.source.clone());
        }
        LabeledAlert {
            labels,
            annotations,
        }
    }
}

/// A valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, anything else (`.`, `-`)
/// becomes `_`, and a leading digit gets a `_` before it.
pub fn label_name(k: &str) -> String {
    let mut out: String = k
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

// ---------------------------------------------------------------------------------------
// Multi-message payloads

/// How far each multi-message payload got, so that a retry after a failure midway does
/// not send again what was delivered: keyed by a hash of the payload's rendered
/// messages (rendering is deterministic), the number of messages delivered. An entry
/// lives only while its payload is being retried.
#[derive(Default)]
pub struct Progress {
    delivered: std::sync::Mutex<std::collections::HashMap<u64, usize>>,
}

/// Entries kept at most: one per payload in retry; more means payloads that were given
/// up (retries ran out, or the queue dropped them), whose entries are forgotten.
const PROGRESS_ENTRIES: usize = 256;

impl Progress {
    /// Sends `messages` in order with `send`, skipping those an earlier attempt of the
    /// same payload delivered. Stops at the first failure and returns it.
    pub async fn deliver<F, Fut>(
        &self,
        messages: Vec<String>,
        mut send: F,
    ) -> Result<(), ExportError>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<(), ExportError>>,
    {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        messages.hash(&mut h);
        let key = h.finish();
        let start = self.lock().get(&key).copied().unwrap_or(0);
        for (i, m) in messages.into_iter().enumerate().skip(start) {
            match send(m).await {
                Ok(()) => {
                    let mut done = self.lock();
                    if done.len() >= PROGRESS_ENTRIES && !done.contains_key(&key) {
                        done.clear();
                    }
                    done.insert(key, i + 1);
                }
                Err(e) => {
                    if matches!(e, ExportError::Permanent { .. }) {
                        self.lock().remove(&key);
                    }
                    return Err(e);
                }
            }
        }
        self.lock().remove(&key);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, usize>> {
        self.delivered.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Cuts `s` to at most `max` chars (never inside a char).
pub fn cut_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

// ---------------------------------------------------------------------------------------
// Delivery results on the live page

/// Wraps an alert channel so that each attempt's result for each alert it admits reaches
/// `/ui`'s timeline (`slack sent`, `telegram: answered 500 …`). The error text is the
/// channel's own, which never holds a secret (URLs and tokens are left out of it).
pub fn reported(
    ctx: &crate::component::BuildContext,
    filter: ChannelFilter,
    inner: std::sync::Arc<dyn crate::component::Exporter>,
) -> std::sync::Arc<dyn crate::component::Exporter> {
    std::sync::Arc::new(Reported {
        inner,
        channel: ctx.id.to_string(),
        filter,
        board: ctx.telemetry.board(),
    })
}

struct Reported {
    inner: std::sync::Arc<dyn crate::component::Exporter>,
    channel: String,
    filter: ChannelFilter,
    board: std::sync::Arc<crate::service::board::Board>,
}

impl crate::component::Exporter for Reported {
    fn export(
        &self,
        payload: std::sync::Arc<Payload>,
    ) -> futures_util::future::BoxFuture<'static, Result<(), ExportError>> {
        let attempt = self.inner.export(payload.clone());
        let (board, channel, filter) = (
            self.board.clone(),
            self.channel.clone(),
            self.filter.clone(),
        );
        Box::pin(async move {
            let result = attempt.await;
            for a in alerts_in(&payload).unwrap_or_default() {
                if a.is_alert && filter.admits(&a) {
                    let r = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
                    board.channel_result(&a.fingerprint, a.is_firing(), &channel, r);
                }
            }
            result
        })
    }

    fn start(
        &self,
    ) -> futures_util::future::BoxFuture<'static, Result<(), crate::component::BuildError>> {
        self.inner.start()
    }

    fn shutdown(&self) -> futures_util::future::BoxFuture<'static, ()> {
        self.inner.shutdown()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::attr;
    use crate::pipeline::alerts::{alerts_request, Alert};
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};

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

    #[tokio::test]
    async fn a_retry_skips_messages_already_delivered() {
        let p = Progress::default();
        let msgs = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let sent = std::sync::Mutex::new(Vec::new());
        let fail_at_b = std::sync::atomic::AtomicBool::new(true);
        let r = p
            .deliver(msgs.clone(), |m| {
                let fail = m == "b" && fail_at_b.swap(false, std::sync::atomic::Ordering::SeqCst);
                if !fail {
                    sent.lock().unwrap().push(m);
                }
                async move {
                    if fail {
                        Err(ExportError::retryable("429"))
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        assert!(r.is_err());
        p.deliver(msgs.clone(), |m| {
            sent.lock().unwrap().push(m);
            async { Ok(()) }
        })
        .await
        .unwrap();
        assert_eq!(*sent.lock().unwrap(), ["a", "b", "c"]);
        // Done: the same messages again are a new payload, sent in full.
        p.deliver(msgs, |m| {
            sent.lock().unwrap().push(m);
            async { Ok(()) }
        })
        .await
        .unwrap();
        assert_eq!(sent.lock().unwrap().len(), 6);
    }

    #[test]
    fn alertmanager_labels_and_annotations() {
        let mut resolved = alert(AlertState::Resolved, Severity::Info);
        resolved
            .attributes
            .push(attr("alert.resolves_severity", "critical"));
        resolved.attributes.push(attr("pair.name", "BTC/USDT"));
        resolved.attributes.push(attr("1x", "y"));
        let v = alerts_in(&Payload::Logs(alerts_request(&[
            alert(AlertState::Firing, Severity::Critical),
            resolved,
        ])))
        .unwrap();
        let (f, r) = (LabeledAlert::of(&v[0]), LabeledAlert::of(&v[1]));
        assert_eq!(f.labels["alertname"], "MaxDrawdownExceeded");
        assert_eq!(f.labels["severity"], "critical");
        assert_eq!(f.labels["bot"], "main");
        assert!(!f.labels.contains_key("value"));
        assert_eq!(f.annotations["value"], "12.3");
        assert_eq!(f.annotations["summary"], "drawdown 12.3% > 10%");
        assert_eq!(r.labels["severity"], "critical");
        assert_eq!(r.labels["pair_name"], "BTC/USDT");
        assert_eq!(r.labels["_1x"], "y");
        assert!(!r.labels.keys().any(|k| k.contains('.')));
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
