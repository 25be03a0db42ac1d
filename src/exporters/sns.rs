//! `sns`: an alert channel that publishes one Amazon SNS message per alert record
//! (`aws-sdk-sns` `Publish`).
//!
//! Each admitted record (see [`ChannelFilter`]) becomes one message: a one-line
//! `Subject` (at most 99 characters, no line breaks or control characters), a readable
//! `Message` (state, severity, name, summary, labels, trace id; at most 256 KiB with the
//! attributes) and the `String` message attributes `severity`, `alert_name`, `state` and
//! `bot` (when present), so that subscriptions can filter on them. On a FIFO topic (its ARN
//! ends in `.fifo`) every message carries a `MessageGroupId` (configured, or the alert's
//! fingerprint) and a `MessageDeduplicationId` made from the fingerprint, the state and the
//! record's time: the same record published again within SNS's five-minute window (a retry,
//! a collector restart) is delivered once.
//!
//! Credentials come from the standard AWS chain (environment, profile, web identity,
//! container and instance metadata); they are never logged or put in errors. The SDK's own
//! retries are off: the sending queue retries (throttling, 5xx, timeouts and connection
//! failures), so the queue's timeout bounds each attempt. Refusals (`InvalidParameter`,
//! `NotFound`, `AuthorizationError`, ...) are permanent and carry the error code and the
//! service's message.

use super::alerting::{alerts_in, AlertView, ChannelFilter, MinSeverity};
use crate::component::{BuildContext, BuildError, ComponentId, ExportError, Exporter};
use crate::component::{ExporterConfig, Kind, Signal};
use crate::config::{component_config, ConfigError, HumanDuration, Source};
use crate::pipeline::sending::{RetryConfig, SendingSettings};
use crate::pipeline::Payload;
use aws_sdk_sns::config::http::HttpResponse;
use aws_sdk_sns::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sns::operation::publish::PublishError;
use aws_sdk_sns::types::MessageAttributeValue;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// SNS: a subject "must be less than 100 characters".
pub const MAX_SUBJECT_CHARS: usize = 99;
/// SNS: a message, with its attributes, is at most 256 KiB.
pub const MAX_MESSAGE_BYTES: usize = 262_144;
/// SNS FIFO: `MessageGroupId` and `MessageDeduplicationId` are at most 128 characters.
pub const MAX_FIFO_ID_CHARS: usize = 128;
/// A longer attribute value is cut (the message carries it whole, within its cap).
const MAX_ATTRIBUTE_BYTES: usize = 1024;
/// A longer `subject_prefix` would leave little room for the alert.
const MAX_PREFIX_CHARS: usize = 40;
/// How long a published record is remembered, so that a payload retried after a later
/// record of it failed does not publish the earlier ones again (SNS FIFO deduplicates
/// for five minutes; standard topics do not deduplicate at all).
const REMEMBER_PUBLISHED: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsExporterConfig {
    /// `arn:aws:sns:REGION:ACCOUNT:NAME`; a name ending in `.fifo` is a FIFO topic.
    pub topic_arn: String,
    pub region: String,
    /// Another endpoint than AWS's (a local SNS such as moto); empty: AWS.
    #[serde(default)]
    pub endpoint_url: String,
    #[serde(default)]
    pub min_severity: MinSeverity,
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// Put before every subject, e.g. `[tradewatch]`.
    #[serde(default)]
    pub subject_prefix: String,
    /// FIFO topics: the group of every message; empty: the alert's fingerprint (so that
    /// one alert's firing and resolved messages stay in order). Ignored on standard topics.
    #[serde(default)]
    pub message_group_id: String,
    /// Per publish attempt.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub sending_queue: ChannelQueueConfig,
    #[serde(default)]
    pub retry_on_failure: ChannelRetryConfig,
}

fn yes() -> bool {
    true
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// `sending_queue` with an alert channel's defaults (see [`ChannelQueue`]): 1024
/// batches, one at a time (in order), `drop_oldest` in memory so that a dead channel never
/// holds up the others; `storage = "disk"` keeps alerts across a crash.
pub type ChannelQueueConfig = super::alerting::ChannelQueue;

/// `retry_on_failure` with an alert channel's defaults: an alert is worth an hour of
/// retries (a channel's outage should delay it, not lose it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRetryConfig {
    pub enabled: Option<bool>,
    pub initial_interval: Option<HumanDuration>,
    pub max_interval: Option<HumanDuration>,
    pub max_elapsed_time: Option<HumanDuration>,
}

impl ChannelRetryConfig {
    pub fn get(&self) -> RetryConfig {
        let d = RetryConfig::default();
        RetryConfig {
            enabled: self.enabled.unwrap_or(d.enabled),
            initial_interval: self.initial_interval.unwrap_or(d.initial_interval),
            max_interval: self.max_interval.unwrap_or(d.max_interval),
            max_elapsed_time: self
                .max_elapsed_time
                .unwrap_or(HumanDuration::from_secs(3600)),
        }
    }
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let c: SnsExporterConfig = component_config(src, Kind::Exporter, id)?;
    let err = |key: &str, m: String| src.component_error(Kind::Exporter, id, &[key], m);
    if c.region.trim().is_empty() {
        return Err(err(
            "region",
            "region is empty: write e.g. \"us-east-1\"".into(),
        ));
    }
    let arn = TopicArn::parse(&c.topic_arn).map_err(|m| err("topic_arn", m))?;
    if arn.region != c.region {
        return Err(err(
            "topic_arn",
            format!(
                "the topic is in region {:?} but region = {:?}: SNS publishes only to topics of the client's region",
                arn.region, c.region
            ),
        ));
    }
    if !c.endpoint_url.is_empty() {
        let ok = c
            .endpoint_url
            .parse::<::http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if ok.is_none() {
            return Err(err(
                "endpoint_url",
                format!(
                    "invalid endpoint_url {:?}: write it as http(s)://HOST[:PORT], or leave it empty for AWS",
                    c.endpoint_url
                ),
            ));
        }
    }
    if c.subject_prefix.chars().any(char::is_control) {
        return Err(err(
            "subject_prefix",
            "subject_prefix holds a line break or control character (SNS subjects are one line)"
                .into(),
        ));
    }
    if c.subject_prefix.chars().count() > MAX_PREFIX_CHARS {
        return Err(err(
            "subject_prefix",
            format!("subject_prefix is longer than {MAX_PREFIX_CHARS} characters (a subject is at most {MAX_SUBJECT_CHARS})"),
        ));
    }
    if !c.message_group_id.is_empty()
        && (c.message_group_id.chars().count() > MAX_FIFO_ID_CHARS
            || !c.message_group_id.chars().all(fifo_char_ok))
    {
        return Err(err(
            "message_group_id",
            format!("message_group_id must be 1 to {MAX_FIFO_ID_CHARS} letters, digits or ASCII punctuation"),
        ));
    }
    if let Err((keys, m)) = c.sending().validate() {
        return Err(src.component_error(Kind::Exporter, id, keys, m));
    }
    Ok(Arc::new(c))
}

/// The parts of a topic ARN that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicArn {
    pub region: String,
    pub account: String,
    pub name: String,
}

impl TopicArn {
    /// `arn:PARTITION:sns:REGION:ACCOUNT:NAME` (`aws`, `aws-cn`, `aws-us-gov`, ...).
    pub fn parse(s: &str) -> Result<TopicArn, String> {
        if s.is_empty() {
            return Err("topic_arn is empty: set ALERT_TOPIC_ARN (or write the ARN)".into());
        }
        let bad = || {
            format!(
                "topic_arn {s:?} is not an SNS topic ARN: write arn:aws:sns:REGION:ACCOUNT:NAME"
            )
        };
        let parts: Vec<&str> = s.split(':').collect();
        let [arn, partition, service, region, account, name] = parts[..] else {
            return Err(bad());
        };
        let partition_ok = partition == "aws"
            || partition.strip_prefix("aws-").is_some_and(|p| {
                !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            });
        let region_ok = !region.is_empty()
            && region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let account_ok = account.len() == 12 && account.chars().all(|c| c.is_ascii_digit());
        let base = name.strip_suffix(".fifo").unwrap_or(name);
        let name_ok = (1..=256).contains(&name.len())
            && !base.is_empty()
            && base
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if arn != "arn"
            || !partition_ok
            || service != "sns"
            || !region_ok
            || !account_ok
            || !name_ok
        {
            return Err(bad());
        }
        Ok(TopicArn {
            region: region.into(),
            account: account.into(),
            name: name.into(),
        })
    }

    pub fn is_fifo(&self) -> bool {
        self.name.ends_with(".fifo")
    }
}

impl ExporterConfig for SnsExporterConfig {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Logs]
    }

    fn sending(&self) -> SendingSettings {
        SendingSettings {
            queue: self.sending_queue.get(),
            retry: self.retry_on_failure.get(),
            timeout: self.timeout.get(),
        }
    }

    /// A dead alert channel degrades the service; it does not make it unhealthy.
    fn critical(&self) -> bool {
        false
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Exporter>, BuildError> {
        let filter = super::alerting::ChannelFilter {
            min_severity: self.min_severity,
            send_resolved: self.send_resolved,
        };
        let arn = TopicArn::parse(&self.topic_arn).map_err(|m| BuildError::new(&ctx.id, m))?;
        Ok(super::alerting::reported(
            ctx,
            filter.clone(),
            Arc::new(SnsExporter {
                inner: Arc::new(Inner {
                    fifo: arn.is_fifo(),
                    config: self.clone(),
                    client: OnceCell::new(),
                    published: Mutex::new(HashMap::new()),
                }),
            }),
        ))
    }
}

struct SnsExporter {
    inner: Arc<Inner>,
}

struct Inner {
    config: SnsExporterConfig,
    fifo: bool,
    /// Made at the first export (loading the AWS configuration is async).
    client: OnceCell<aws_sdk_sns::Client>,
    /// Deduplication keys of records published lately, and when.
    published: Mutex<HashMap<String, Instant>>,
}

impl Exporter for SnsExporter {
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.export(&payload).await })
    }
}

impl Inner {
    fn filter(&self) -> ChannelFilter {
        ChannelFilter {
            min_severity: self.config.min_severity,
            send_resolved: self.config.send_resolved,
        }
    }

    async fn client(&self) -> &aws_sdk_sns::Client {
        self.client
            .get_or_init(|| async {
                let endpoint_url = &self.config.endpoint_url;
                let sdk = crate::aws::sdk_config(crate::aws::SdkSettings {
                    region: Some(&self.config.region),
                    endpoint_url: (!endpoint_url.is_empty()).then_some(endpoint_url.as_str()),
                    // The sending queue retries, with its own backoff and deadline.
                    attempt_timeout: self.config.timeout.get(),
                    connect_timeout: None,
                })
                .await;
                aws_sdk_sns::Client::new(&sdk)
            })
            .await
    }

    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        let filter = self.filter();
        let alerts: Vec<AlertView> = alerts_in(payload)?
            .into_iter()
            .filter(|a| filter.admits(a))
            .collect();
        if alerts.is_empty() {
            return Ok(());
        }
        let client = self.client().await;
        for alert in &alerts {
            let msg = SnsMessage::of(
                alert,
                &self.config.subject_prefix,
                self.fifo.then_some(self.config.message_group_id.as_str()),
            );
            if self.already_published(&msg.dedup_key) {
                continue;
            }
            let mut req = client
                .publish()
                .topic_arn(&self.config.topic_arn)
                .subject(&msg.subject)
                .message(&msg.message);
            for (k, v) in &msg.attributes {
                let value = MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(v)
                    .build()
                    .map_err(|e| ExportError::permanent(format!("sns: attribute {k}: {e}")))?;
                req = req.message_attributes(k.as_str(), value);
            }
            if let Some(fifo) = &msg.fifo {
                req = req
                    .message_group_id(&fifo.group_id)
                    .message_deduplication_id(&fifo.deduplication_id);
            }
            req.send().await.map_err(classify)?;
            self.remember(msg.dedup_key);
        }
        Ok(())
    }

    fn already_published(&self, key: &str) -> bool {
        let published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        published
            .get(key)
            .is_some_and(|t| t.elapsed() < REMEMBER_PUBLISHED)
    }

    fn remember(&self, key: String) {
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        if published.len() >= 4096 {
            published.retain(|_, t| t.elapsed() < REMEMBER_PUBLISHED);
        }
        published.insert(key, Instant::now());
    }
}

/// A failed `Publish` as an export result: throttling, server errors, timeouts and
/// connection failures are retried; what SNS refused (bad parameter, no such topic, not
/// allowed) is permanent. The message has SNS's error code and text, never credentials.
fn classify(e: SdkError<PublishError, HttpResponse>) -> ExportError {
    match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("unknown error");
            let text = err.message().unwrap_or("");
            let status = se.raw().status().as_u16();
            let message = format!("sns Publish refused ({status}): {code}: {text}");
            if retryable_code(code) || status >= 500 || status == 429 {
                ExportError::retryable(message)
            } else {
                ExportError::permanent(message)
            }
        }
        SdkError::ResponseError(re) => {
            let status = re.raw().status().as_u16();
            let message = format!(
                "sns Publish: unreadable response ({status}): {}",
                DisplayErrorContext(&e)
            );
            if status >= 500 || status == 429 || status < 400 {
                ExportError::retryable(message)
            } else {
                ExportError::permanent(message)
            }
        }
        SdkError::TimeoutError(_) => ExportError::retryable("sns Publish timed out"),
        SdkError::DispatchFailure(d) if d.is_user() => {
            ExportError::permanent(format!("sns Publish: {}", DisplayErrorContext(&e)))
        }
        // Connection failures, and credentials not found (yet: instance metadata or a
        // container's credentials endpoint may come up).
        SdkError::DispatchFailure(_) => {
            ExportError::retryable(format!("sns Publish: {}", DisplayErrorContext(&e)))
        }
        // The request could not be built from what was given: trying again cannot help.
        _ => ExportError::permanent(format!("sns Publish: {}", DisplayErrorContext(&e))),
    }
}

fn retryable_code(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottled"
            | "TooManyRequestsException"
            | "KMSThrottling"
            | "InternalError"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "RequestTimeout"
            | "RequestTimeoutException"
    )
}

/// One `Publish` request, shaped from one alert.
#[derive(Debug, Clone, PartialEq)]
pub struct SnsMessage {
    pub subject: String,
    pub message: String,
    /// `severity`, `alert_name`, `state`, and `bot` when present; all `String`.
    pub attributes: Vec<(String, String)>,
    pub fifo: Option<FifoIds>,
    /// The record's identity: fingerprint, state and time.
    pub dedup_key: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FifoIds {
    pub group_id: String,
    pub deduplication_id: String,
}

impl SnsMessage {
    /// `group_id`: `None` for a standard topic; for a FIFO topic the configured group
    /// (empty: the alert's fingerprint).
    pub fn of(a: &AlertView, subject_prefix: &str, group_id: Option<&str>) -> SnsMessage {
        let bot = a.label("bot").filter(|b| !b.is_empty());
        let mut attributes = vec![
            ("severity".to_string(), a.severity.as_str().to_string()),
            ("alert_name".to_string(), a.name.clone()),
            ("state".to_string(), a.state_str().to_string()),
        ];
        if let Some(bot) = bot {
            attributes.push(("bot".into(), bot.into()));
        }
        for (_, v) in &mut attributes {
            *v = clean_attribute(v);
        }
        attributes.retain(|(_, v)| !v.is_empty());
        let dedup_key = format!(
            "{}-{}-{:016x}",
            a.state_str(),
            a.time_unix_nano,
            fnv(&a.fingerprint)
        );
        let fifo = group_id.map(|g| FifoIds {
            group_id: if g.is_empty() {
                fifo_id(&a.fingerprint)
            } else {
                fifo_id(g)
            },
            deduplication_id: dedup_key.clone(),
        });
        let attribute_bytes: usize = attributes
            .iter()
            .map(|(k, v)| k.len() + "String".len() + v.len())
            .sum();
        SnsMessage {
            subject: subject(a, subject_prefix),
            message: message(a, MAX_MESSAGE_BYTES - attribute_bytes),
            attributes,
            fifo,
            dedup_key,
        }
    }
}

/// `[prefix] FIRING critical: NAME (bot BOT)`, one line, at most 99 characters.
pub fn subject(a: &AlertView, prefix: &str) -> String {
    let mut s = String::new();
    let prefix = one_line(prefix);
    if !prefix.is_empty() {
        s.push_str(&prefix);
        s.push(' ');
    }
    let _ = write!(
        s,
        "{} {}: {}",
        a.state_str().to_uppercase(),
        a.severity.as_str(),
        one_line(&a.name)
    );
    if let Some(bot) = a.label("bot").filter(|b| !b.is_empty()) {
        let _ = write!(s, " (bot {})", one_line(bot));
    }
    truncate_chars(&s, MAX_SUBJECT_CHARS)
}

/// The message body: what a human reading an email or a chat forward needs.
pub fn message(a: &AlertView, max_bytes: usize) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "{} {}: {}",
        a.state_str().to_uppercase(),
        a.severity.as_str(),
        a.name
    );
    if !a.summary.is_empty() {
        let _ = writeln!(m, "\n{}", a.summary);
    }
    if !a.labels.is_empty() {
        m.push('\n');
        for (k, v) in &a.labels {
            let _ = writeln!(m, "{k}: {v}");
        }
    }
    m.push('\n');
    if let Some(t) = &a.trace_id {
        let _ = writeln!(m, "trace_id: {t}");
    }
    if !a.source.is_empty() {
        let _ = writeln!(m, "source: {}", a.source);
    }
    let _ = writeln!(m, "fingerprint: {}", a.fingerprint);
    if a.time_unix_nano > 0 {
        let t = std::time::UNIX_EPOCH + Duration::from_nanos(a.time_unix_nano);
        let _ = writeln!(m, "time: {}", humantime::format_rfc3339_millis(t));
    }
    let m = clean_message(m.trim_end());
    truncate_bytes(&m, max_bytes)
}

/// Line breaks, tabs and other control characters (and Unicode line separators) become
/// one space; runs of spaces collapse; no space at either end.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if c.is_control() || c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(c);
    }
    out
}

/// A message keeps its lines (`\n`, tabs); other control characters and the
/// non-characters SQS refuses to deliver become `\u{FFFD}`.
fn clean_message(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '\r')
        .map(|c| match c {
            '\n' | '\t' => c,
            '\u{FFFE}' | '\u{FFFF}' => '\u{FFFD}',
            c if c.is_control() => '\u{FFFD}',
            c => c,
        })
        .collect()
}

fn clean_attribute(s: &str) -> String {
    truncate_bytes(&one_line(s), MAX_ATTRIBUTE_BYTES)
}

/// `s` cut to at most `max` characters, the cut marked with `…`.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

/// `s` cut to at most `max` bytes on a character boundary, the cut marked with `…`.
pub fn truncate_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mark = '…'.len_utf8();
    let mut end = max.saturating_sub(mark);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s[..end].to_string();
    out.push('…');
    out
}

/// SNS FIFO ids: letters, digits and ASCII punctuation.
fn fifo_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || c.is_ascii_punctuation()
}

/// `s` as a FIFO id: other characters become `_`, at most 128; never empty.
fn fifo_id(s: &str) -> String {
    let id: String = s
        .chars()
        .map(|c| if fifo_char_ok(c) { c } else { '_' })
        .take(MAX_FIFO_ID_CHARS)
        .collect();
    if id.is_empty() {
        "tradewatch".into()
    } else {
        id
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::alerts::{AlertState, Severity};

    fn view(name: &str) -> AlertView {
        AlertView {
            name: name.into(),
            state: AlertState::Firing,
            severity: Severity::Critical,
            summary: "drawdown 12.3% > 10%".into(),
            fingerprint: "0123456789abcdef".into(),
            labels: vec![
                ("bot".into(), "main".into()),
                ("value".into(), "12.3".into()),
            ],
            trace_id: Some("ab".repeat(16)),
            time_unix_nano: 1_700_000_000_123_000_000,
            source: "risk".into(),
            is_alert: true,
        }
    }

    #[test]
    fn subject_is_one_short_line() {
        let a = view("MaxDrawdownExceeded");
        assert_eq!(
            subject(&a, "[tradewatch]"),
            "[tradewatch] FIRING critical: MaxDrawdownExceeded (bot main)"
        );
        let long = format!(
            "{}\nsecond line\r\n\tand\u{2028}more{}",
            "é".repeat(150),
            "x"
        );
        let s = subject(&view(&long), "[tw]");
        assert_eq!(s.chars().count(), MAX_SUBJECT_CHARS, "{s}");
        assert!(s.ends_with('…'));
        assert!(!s.chars().any(char::is_control), "{s:?}");
        assert!(s.starts_with("[tw] FIRING critical: éé"));
        // A break in the middle becomes one space.
        let s = subject(&view("a\n\n b"), "");
        assert_eq!(s, "FIRING critical: a b (bot main)");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_chars("abc", 3), "abc");
        assert_eq!(truncate_chars("abcd", 3), "ab…");
        let s = "€".repeat(10); // 3 bytes each
        let t = truncate_bytes(&s, 10);
        assert!(t.len() <= 10, "{t}");
        assert_eq!(t, "€€…");
        assert_eq!(truncate_bytes("short", 10), "short");
    }

    #[test]
    fn message_is_readable_and_capped() {
        let a = view("MaxDrawdownExceeded");
        let m = SnsMessage::of(&a, "", None);
        assert!(
            m.message
                .starts_with("FIRING critical: MaxDrawdownExceeded\n\ndrawdown 12.3% > 10%\n"),
            "{}",
            m.message
        );
        assert!(m.message.contains("bot: main\nvalue: 12.3\n"));
        assert!(m
            .message
            .contains(&format!("trace_id: {}", "ab".repeat(16))));
        assert!(m.message.contains("time: 2023-11-14T22:13:20.123Z"));
        assert_eq!(
            m.attributes,
            vec![
                ("severity".to_string(), "critical".to_string()),
                ("alert_name".to_string(), "MaxDrawdownExceeded".to_string()),
                ("state".to_string(), "firing".to_string()),
                ("bot".to_string(), "main".to_string()),
            ]
        );
        assert!(m.fifo.is_none());

        let mut big = view("Big");
        big.summary = "ü".repeat(200_000); // 400,000 bytes
        big.summary.push('\u{7}');
        let m = SnsMessage::of(&big, "", None);
        let attrs: usize = m
            .attributes
            .iter()
            .map(|(k, v)| k.len() + 6 + v.len())
            .sum();
        assert!(m.message.len() + attrs <= MAX_MESSAGE_BYTES);
        assert!(m.message.len() > MAX_MESSAGE_BYTES - 200);
        assert!(m.message.ends_with('…'));
    }

    #[test]
    fn control_characters_leave_the_message() {
        let mut a = view("X");
        a.summary = "line1\r\nline2\u{0}\u{1b}[31m\u{FFFF}".into();
        let m = message(&a, MAX_MESSAGE_BYTES);
        assert!(
            m.contains("line1\nline2\u{FFFD}\u{FFFD}[31m\u{FFFD}"),
            "{m:?}"
        );
    }

    #[test]
    fn fifo_ids_are_deterministic_and_valid() {
        let a = view("MaxDrawdownExceeded");
        let one = SnsMessage::of(&a, "", Some("")).fifo.unwrap();
        let two = SnsMessage::of(&a, "", Some("")).fifo.unwrap();
        assert_eq!(one, two);
        assert_eq!(one.group_id, "0123456789abcdef");
        assert!(one.deduplication_id.len() <= MAX_FIFO_ID_CHARS);
        assert!(one.deduplication_id.chars().all(fifo_char_ok));
        let mut resolved = a.clone();
        resolved.state = AlertState::Resolved;
        resolved.time_unix_nano += 1;
        let r = SnsMessage::of(&resolved, "", Some("")).fifo.unwrap();
        assert_eq!(r.group_id, one.group_id, "one alert, one group: in order");
        assert_ne!(r.deduplication_id, one.deduplication_id);
        let configured = SnsMessage::of(&a, "", Some("alerts")).fifo.unwrap();
        assert_eq!(configured.group_id, "alerts");
        let mut odd = a.clone();
        odd.fingerprint = format!("{} ü {}", "f".repeat(200), "x");
        let g = SnsMessage::of(&odd, "", Some("")).fifo.unwrap().group_id;
        assert_eq!(g.chars().count(), MAX_FIFO_ID_CHARS);
        assert!(g.chars().all(fifo_char_ok));
    }

    #[test]
    fn topic_arns() {
        let t = TopicArn::parse("arn:aws:sns:us-east-1:123456789012:alerts").unwrap();
        assert_eq!(t.region, "us-east-1");
        assert!(!t.is_fifo());
        assert!(
            TopicArn::parse("arn:aws-cn:sns:cn-north-1:123456789012:a.fifo")
                .unwrap()
                .is_fifo()
        );
        assert!(TopicArn::parse("").unwrap_err().contains("ALERT_TOPIC_ARN"));
        for bad in [
            "alerts",
            "arn:aws:sqs:us-east-1:123456789012:alerts",
            "arn:aws:sns:us-east-1:1234:alerts",
            "arn:aws:sns::123456789012:alerts",
            "arn:aws:sns:us-east-1:123456789012:",
            "arn:aws:sns:us-east-1:123456789012:a b",
            "arn:aws:sns:us-east-1:123456789012:a:b",
        ] {
            assert!(TopicArn::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_codes() {
        assert!(retryable_code("Throttling"));
        assert!(retryable_code("InternalError"));
        assert!(!retryable_code("InvalidParameter"));
        assert!(!retryable_code("NotFound"));
        assert!(!retryable_code("AuthorizationError"));
    }
}
