//! `slack`: alert records to a Slack incoming webhook.
//!
//! The alerts of one payload become one message (a webhook takes about one message a
//! second, so grouping is what keeps a burst from being rate limited): a `text`
//! fallback for notifications, and per alert a header block and a `mrkdwn` section
//! with the summary, the labels and the trace id. A message is split only at Slack's
//! 50-block limit; a retry after a failure midway does not send the delivered part
//! again. A `429` is retried after its `Retry-After`; another 4xx is permanent.

use super::alerting::{self, AlertView, ChannelFilter, ChannelQueue, ChannelRetry, MinSeverity};
use crate::component::{BuildContext, BuildError, ExporterConfig};
use crate::component::{ComponentId, Kind, Signal};
use crate::component::{ExportError, Exporter};
use crate::config::{component_config, ConfigError, HumanDuration, Secret, Source};
use crate::pipeline::alerts::Severity;
use crate::pipeline::sending::SendingSettings;
use crate::pipeline::Payload;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Slack's limit of blocks per message.
const MAX_BLOCKS: usize = 50;
/// Blocks one alert takes (header, section).
const BLOCKS_PER_ALERT: usize = 2;
/// Slack's limits on a header's plain text and a section's text.
const HEADER_MAX: usize = 150;
const SECTION_MAX: usize = 3000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming webhook URL, e.g. `"${SLACK_WEBHOOK_URL}"`. A secret.
    pub webhook_url: Secret,
    /// Overrides the webhook's channel, user name and icon (legacy webhooks honour them).
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub icon_emoji: Option<String>,
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
    let c: SlackConfig = component_config(src, Kind::Exporter, id)?;
    alerting::check_secret_url(src, id, "webhook_url", &c.webhook_url)?;
    if let Err((keys, m)) = c.sending().validate() {
        return Err(src.component_error(Kind::Exporter, id, keys, m));
    }
    Ok(Arc::new(c))
}

impl ExporterConfig for SlackConfig {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Logs]
    }

    fn sending(&self) -> SendingSettings {
        alerting::channel_sending(&self.sending_queue, &self.retry_on_failure, self.timeout)
    }

    /// A dead Slack must not make the collector UNHEALTHY (`critical = true` changes it).
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
            Arc::new(SlackExporter {
                shared: Arc::new(Shared {
                    client,
                    url: self.webhook_url.clone(),
                    style: Style {
                        channel: self.channel.clone(),
                        username: self.username.clone(),
                        icon_emoji: self.icon_emoji.clone(),
                    },
                    filter,
                    progress: alerting::Progress::default(),
                }),
            }),
        ))
    }
}

struct SlackExporter {
    shared: Arc<Shared>,
}

struct Shared {
    client: reqwest::Client,
    url: Secret,
    style: Style,
    filter: ChannelFilter,
    progress: alerting::Progress,
}

/// The optional overrides of a message.
#[derive(Debug, Clone, Default)]
pub struct Style {
    pub channel: Option<String>,
    pub username: Option<String>,
    pub icon_emoji: Option<String>,
}

impl Exporter for SlackExporter {
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let alerts: Vec<AlertView> = alerting::alerts_in(&payload)?
                .into_iter()
                .filter(|a| shared.filter.admits(a))
                .collect();
            let messages = messages(&alerts, &shared.style);
            let headers = http::HeaderMap::new();
            shared
                .progress
                .deliver(messages, |body| {
                    let shared = shared.clone();
                    let headers = headers.clone();
                    async move {
                        let (status, h, b) = alerting::post_json(
                            &shared.client,
                            "slack",
                            shared.url.expose(),
                            &headers,
                            body.into_bytes(),
                        )
                        .await?;
                        alerting::classify_http("slack", status, &h, &b, None)
                    }
                })
                .await
        })
    }
}

/// The JSON bodies for `alerts`: one, or more when the blocks exceed Slack's limit.
pub fn messages(alerts: &[AlertView], style: &Style) -> Vec<String> {
    alerts
        .chunks(MAX_BLOCKS / BLOCKS_PER_ALERT)
        .map(|chunk| message(chunk, style).to_string())
        .collect()
}

/// One webhook message for `alerts`.
pub fn message(alerts: &[AlertView], style: &Style) -> Value {
    let text: Vec<String> = alerts.iter().map(headline).collect();
    let mut blocks = Vec::with_capacity(alerts.len() * BLOCKS_PER_ALERT);
    for a in alerts {
        blocks.push(json!({
            "type": "header",
            "text": {"type": "plain_text", "text": cut_with_ellipsis(&headline(a), HEADER_MAX), "emoji": true},
        }));
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": section(a)},
        }));
    }
    let mut m = json!({ "text": escape(&text.join("\n")), "blocks": blocks });
    for (k, v) in [
        ("channel", &style.channel),
        ("username", &style.username),
        ("icon_emoji", &style.icon_emoji),
    ] {
        if let Some(v) = v {
            m[k] = Value::String(v.clone());
        }
    }
    m
}

/// `🔴 CRITICAL: MaxDrawdownExceeded` / `✅ RESOLVED: MaxDrawdownExceeded`.
pub fn headline(a: &AlertView) -> String {
    let (icon, word) = if !a.is_firing() {
        ("✅", "RESOLVED")
    } else {
        match a.severity {
            Severity::Critical => ("🔴", "CRITICAL"),
            Severity::Warning => ("⚠️", "WARNING"),
            Severity::Info => ("ℹ️", "INFO"),
        }
    };
    format!("{icon} {word}: {}", a.name)
}

/// The section text: the summary, the labels as metadata, the trace id.
fn section(a: &AlertView) -> String {
    let mut s = format!("*{}*", escape(&a.name));
    if !a.summary.is_empty() {
        s.push_str("\n\n");
        s.push_str(&escape(&a.summary));
    }
    let labels: Vec<&(String, String)> = a
        .labels
        .iter()
        .filter(|(k, _)| k != "alert.resolves_severity")
        .collect();
    if !labels.is_empty() {
        s.push_str("\n\n*Metadata:*");
        for (k, v) in labels {
            s.push_str(&format!("\n• {}: {}", escape(k), escape(v)));
        }
    }
    if let Some(t) = &a.trace_id {
        s.push_str(&format!("\n\n*Trace:* `{}`", escape(t)));
    }
    if s.chars().count() > SECTION_MAX {
        s = cut_escaped(&s, SECTION_MAX - 1);
        s.push('…');
    }
    s
}

/// Escapes Slack's mrkdwn control characters.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Cuts escaped text to at most `max` chars, never inside an `&...;` entity.
fn cut_escaped(s: &str, max: usize) -> String {
    let mut cut = alerting::cut_chars(s, max);
    if let Some(amp) = cut.rfind('&') {
        if !cut[amp..].contains(';') {
            cut = &cut[..amp];
        }
    }
    cut.to_owned()
}

fn cut_with_ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    format!("{}…", alerting::cut_chars(s, max - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::alerts::AlertState;

    fn view(name: &str, state: AlertState, summary: &str) -> AlertView {
        AlertView {
            name: name.into(),
            state,
            severity: Severity::Critical,
            summary: summary.into(),
            fingerprint: "f".into(),
            labels: vec![
                ("bot".into(), "main<&>".into()),
                ("value".into(), "12.3".into()),
            ],
            trace_id: Some("ab".repeat(16)),
            time_unix_nano: 1,
            source: "risk".into(),
            is_alert: true,
        }
    }

    #[test]
    fn one_message_with_blocks_and_escaped_mrkdwn() {
        let alerts = [
            view("Kill <Switch>", AlertState::Firing, "VIX > 35 & <@here>"),
            view("Drawdown", AlertState::Resolved, "back to 3%"),
        ];
        let m = message(
            &alerts,
            &Style {
                channel: Some("#alerts".into()),
                ..Style::default()
            },
        );
        assert_eq!(
            m["text"],
            "🔴 CRITICAL: Kill &lt;Switch&gt;\n✅ RESOLVED: Drawdown"
        );
        assert_eq!(m["channel"], "#alerts");
        assert!(m.get("username").is_none());
        let blocks = m["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 4);
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["text"], "🔴 CRITICAL: Kill <Switch>");
        let text = blocks[1]["text"]["text"].as_str().unwrap();
        assert!(text.contains("VIX &gt; 35 &amp; &lt;@here&gt;"), "{text}");
        assert!(text.contains("• bot: main&lt;&amp;&gt;"), "{text}");
        assert!(text.contains("• value: 12.3"), "{text}");
        assert!(text.contains(&format!("`{}`", "ab".repeat(16))), "{text}");
        assert!(!text.contains('<') && !text.contains('>'));
    }

    #[test]
    fn split_only_at_the_block_limit() {
        let alerts: Vec<AlertView> = (0..60)
            .map(|i| view(&format!("A{i}"), AlertState::Firing, "x"))
            .collect();
        let ms = messages(&alerts, &Style::default());
        assert_eq!(ms.len(), 3);
        let blocks: Vec<usize> = ms
            .iter()
            .map(|m| {
                let v: Value = serde_json::from_str(m).unwrap();
                v["blocks"].as_array().unwrap().len()
            })
            .collect();
        assert_eq!(blocks, [50, 50, 20]);
        assert_eq!(messages(&alerts[..25], &Style::default()).len(), 1);
    }

    #[test]
    fn long_sections_are_cut_outside_entities() {
        let a = view("A", AlertState::Firing, &"<".repeat(5000));
        let s = section(&a);
        assert!(s.chars().count() <= SECTION_MAX);
        assert!(s.ends_with("&lt;…"), "{}", &s[s.len() - 20..]);
    }
}
