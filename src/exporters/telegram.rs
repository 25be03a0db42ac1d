//! `telegram`: alert records to a Telegram chat through the Bot API's `sendMessage`.
//!
//! The alerts of one payload go into one message when they fit Telegram's 4096
//! characters, else into several, split between alerts; one alert longer than that is
//! cut where no escape sequence, entity or tag is broken. Text is escaped for the
//! chosen `parse_mode` (`HTML` or `MarkdownV2`). A `429` is retried after the
//! `parameters.retry_after` the API sends; a retry after a failure midway does not send
//! the messages already delivered. The bot token is part of the URL path: it never
//! reaches a log line or an error.

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
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Telegram's limit on a message's text. Counted here in UTF-16 units (as Telegram
/// counts) over the marked-up text, which is never shorter than the parsed text.
pub const MAX_TEXT: usize = 4096;
/// An alert name longer than this is cut in the heading.
const NAME_MAX: usize = 256;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum ParseMode {
    #[default]
    #[serde(rename = "HTML")]
    Html,
    MarkdownV2,
}

impl ParseMode {
    fn as_str(self) -> &'static str {
        match self {
            ParseMode::Html => "HTML",
            ParseMode::MarkdownV2 => "MarkdownV2",
        }
    }
}

/// `chat_id = -100123` or `chat_id = "@channel"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ChatId {
    Int(i64),
    Name(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// `"${TELEGRAM_BOT_TOKEN}"`. A secret.
    pub bot_token: Secret,
    pub chat_id: ChatId,
    #[serde(default = "default_api_url")]
    pub api_url: String,
    #[serde(default)]
    pub parse_mode: ParseMode,
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

fn default_api_url() -> String {
    "https://api.telegram.org".into()
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let c: TelegramConfig = component_config(src, Kind::Exporter, id)?;
    let err = |key: &str, m: &str| src.component_error(Kind::Exporter, id, &[key], m.to_owned());
    let token = c.bot_token.expose();
    if token.is_empty()
        || !token
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, ':' | '_' | '-'))
    {
        return Err(err(
            "bot_token",
            "bot_token must look like 123456:ABC-def (the value is not shown: it is a secret)",
        ));
    }
    if !(c.api_url.starts_with("https://") || c.api_url.starts_with("http://"))
        || c.api_url.parse::<http::Uri>().is_err()
    {
        return Err(err(
            "api_url",
            &format!("invalid api_url {:?}: write it as https://HOST", c.api_url),
        ));
    }
    if matches!(&c.chat_id, ChatId::Name(n) if n.is_empty()) {
        return Err(err("chat_id", "chat_id must not be empty"));
    }
    if let Err((keys, m)) = c.sending().validate() {
        return Err(src.component_error(Kind::Exporter, id, keys, m));
    }
    Ok(Arc::new(c))
}

impl ExporterConfig for TelegramConfig {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Logs]
    }

    fn sending(&self) -> SendingSettings {
        alerting::channel_sending(&self.sending_queue, &self.retry_on_failure, self.timeout)
    }

    /// A dead Telegram must not make the collector UNHEALTHY (`critical = true` changes it).
    fn critical(&self) -> bool {
        false
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Exporter>, BuildError> {
        let filter = super::alerting::ChannelFilter {
            min_severity: self.min_severity,
            send_resolved: self.send_resolved,
        };
        let client = alerting::http_client().map_err(|e| BuildError::new(&ctx.id, e))?;
        let url = format!(
            "{}/bot{}/sendMessage",
            self.api_url.trim_end_matches('/'),
            self.bot_token.expose()
        );
        Ok(super::alerting::reported(
            ctx,
            filter.clone(),
            Arc::new(TelegramExporter {
                shared: Arc::new(Shared {
                    client,
                    url: Secret::new(url),
                    chat_id: match &self.chat_id {
                        ChatId::Int(i) => json!(i),
                        ChatId::Name(s) => json!(s),
                    },
                    mode: self.parse_mode,
                    filter,
                    progress: alerting::Progress::default(),
                }),
            }),
        ))
    }
}

struct TelegramExporter {
    shared: Arc<Shared>,
}

struct Shared {
    client: reqwest::Client,
    /// Holds the token.
    url: Secret,
    chat_id: serde_json::Value,
    mode: ParseMode,
    filter: ChannelFilter,
    progress: alerting::Progress,
}

/// The part of a Bot API answer that says how long to wait.
#[derive(Deserialize)]
struct ApiAnswer {
    parameters: Option<ApiParameters>,
}

#[derive(Deserialize)]
struct ApiParameters {
    retry_after: Option<u64>,
}

impl Exporter for TelegramExporter {
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let alerts: Vec<AlertView> = alerting::alerts_in(&payload)?
                .into_iter()
                .filter(|a| shared.filter.admits(a))
                .collect();
            let texts = messages(&alerts, shared.mode);
            let headers = http::HeaderMap::new();
            shared
                .progress
                .deliver(texts, |text| {
                    let shared = shared.clone();
                    let headers = headers.clone();
                    async move {
                        // Silent unless it carries a firing warning or critical alert.
                        let loud = text.contains('🔴') || text.contains("⚠️");
                        let body = json!({
                            "chat_id": shared.chat_id,
                            "text": text,
                            "parse_mode": shared.mode.as_str(),
                            "disable_notification": !loud,
                        });
                        let (status, h, b) = alerting::post_json(
                            &shared.client,
                            "telegram",
                            shared.url.expose(),
                            &headers,
                            body.to_string().into_bytes(),
                        )
                        .await?;
                        let hint = serde_json::from_slice::<ApiAnswer>(&b)
                            .ok()
                            .and_then(|a| a.parameters?.retry_after)
                            .map(Duration::from_secs);
                        alerting::classify_http("telegram", status, &h, &b, hint)
                    }
                })
                .await
        })
    }
}

/// The texts for `alerts`: grouped into as few messages as fit [`MAX_TEXT`], split
/// between alerts, in order.
pub fn messages(alerts: &[AlertView], mode: ParseMode) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for a in alerts {
        let block = alert_text(a, mode, MAX_TEXT);
        let joined = utf16_len(&current) + 2 + utf16_len(&block);
        if current.is_empty() {
            current = block;
        } else if joined <= MAX_TEXT {
            current.push_str("\n\n");
            current.push_str(&block);
        } else {
            out.push(std::mem::replace(&mut current, block));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// One alert's text, at most `max` UTF-16 units:
/// ```text
/// 🔴 CRITICAL: Kill Switch Activated
/// Trading halted due to circuit breaker: VIX > 35
/// • bot: main
/// trace: 0af7...
/// ```
/// The heading is bold and the trace id code; everything else is escaped plain text, so
/// a cut there breaks no markup.
pub fn alert_text(a: &AlertView, mode: ParseMode, max: usize) -> String {
    let (icon, word) = if !a.is_firing() {
        ("✅", "RESOLVED")
    } else {
        match a.severity {
            Severity::Critical => ("🔴", "CRITICAL"),
            Severity::Warning => ("⚠️", "WARNING"),
            Severity::Info => ("ℹ️", "INFO"),
        }
    };
    let name = alerting::cut_chars(&a.name, NAME_MAX);
    let heading = match mode {
        ParseMode::Html => format!("{icon} <b>{word}: {}</b>", html(name)),
        ParseMode::MarkdownV2 => format!("{icon} *{word}: {}*", markdown(name)),
    };
    let esc = |s: &str| match mode {
        ParseMode::Html => html(s),
        ParseMode::MarkdownV2 => markdown(s),
    };
    let mut body = String::new();
    if !a.summary.is_empty() {
        body.push('\n');
        body.push_str(&esc(&a.summary));
    }
    for (k, v) in &a.labels {
        if k == "alert.resolves_severity" {
            continue;
        }
        body.push_str(&format!("\n• {}: {}", esc(k), esc(v)));
    }
    let trailer = match &a.trace_id {
        Some(t) => match mode {
            ParseMode::Html => format!("\ntrace: <code>{}</code>", html(t)),
            ParseMode::MarkdownV2 => format!("\ntrace: `{}`", code(t)),
        },
        None => String::new(),
    };
    let fixed = utf16_len(&heading) + utf16_len(&trailer);
    if fixed + utf16_len(&body) > max {
        let room = max.saturating_sub(fixed + 1);
        body = cut_escaped(&body, room, mode);
        body.push('…');
    }
    format!("{heading}{body}{trailer}")
}

/// Escapes text for `parse_mode = "HTML"`: `<`, `>`, `&` (and `"`, harmless elsewhere).
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text outside entities for `parse_mode = "MarkdownV2"`: every one of
/// `_*[]()~`>#+-=|{}.!` and the backslash itself.
pub fn markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            '_' | '*'
                | '['
                | ']'
                | '('
                | ')'
                | '~'
                | '`'
                | '>'
                | '#'
                | '+'
                | '-'
                | '='
                | '|'
                | '{'
                | '}'
                | '.'
                | '!'
                | '\\'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Escapes text inside a MarkdownV2 `code` entity: `` ` `` and `\`.
fn code(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '`' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Cuts escaped text to at most `max` UTF-16 units without breaking an escape: not
/// inside an HTML entity (`&amp;`), not between a MarkdownV2 `\` and what it escapes.
fn cut_escaped(s: &str, max: usize, mode: ParseMode) -> String {
    let mut units = 0;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        units += c.len_utf16();
        if units > max {
            break;
        }
        end = i + c.len_utf8();
    }
    let mut cut = &s[..end];
    match mode {
        ParseMode::Html => {
            if let Some(amp) = cut.rfind('&') {
                if !cut[amp..].contains(';') {
                    cut = &cut[..amp];
                }
            }
        }
        ParseMode::MarkdownV2 => {
            let trailing = cut.len() - cut.trim_end_matches('\\').len();
            if trailing % 2 == 1 {
                cut = &cut[..cut.len() - 1];
            }
        }
    }
    cut.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::alerts::AlertState;

    const HOSTILE: &str = r"_*[]()~`>#+-=|{}.!<&\";

    fn view(name: &str, summary: &str) -> AlertView {
        AlertView {
            name: name.into(),
            state: AlertState::Firing,
            severity: Severity::Critical,
            summary: summary.into(),
            fingerprint: "f".into(),
            labels: vec![("bot".into(), "main".into())],
            trace_id: Some("ab".repeat(16)),
            time_unix_nano: 1,
            source: "risk".into(),
            is_alert: true,
        }
    }

    /// What Telegram shows for MarkdownV2 text outside entities: every `\X` is `X`; a
    /// reserved character that is not escaped is an error.
    fn unescape_markdown(s: &str) -> Result<String, char> {
        let mut out = String::new();
        let mut it = s.chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                out.push(it.next().ok_or('\\')?);
            } else if "_*[]()~`>#+-=|{}.!".contains(c) {
                return Err(c);
            } else {
                out.push(c);
            }
        }
        Ok(out)
    }

    #[test]
    fn markdown_v2_escapes_every_reserved_character() {
        let e = markdown(HOSTILE);
        assert_eq!(e, r"\_\*\[\]\(\)\~\`\>\#\+\-\=\|\{\}\.\!<&\\");
        assert_eq!(unescape_markdown(&e).unwrap(), HOSTILE);
        let t = alert_text(&view(HOSTILE, HOSTILE), ParseMode::MarkdownV2, MAX_TEXT);
        let heading = t.lines().next().unwrap();
        let inner = heading
            .strip_prefix("🔴 *")
            .and_then(|h| h.strip_suffix('*'))
            .unwrap();
        assert_eq!(
            unescape_markdown(inner).unwrap(),
            format!("CRITICAL: {HOSTILE}")
        );
        assert_eq!(
            unescape_markdown(t.lines().nth(1).unwrap()).unwrap(),
            HOSTILE
        );
    }

    #[test]
    fn html_escapes_markup_characters() {
        let t = alert_text(
            &view("<b>x</b>", "a < b && c > d"),
            ParseMode::Html,
            MAX_TEXT,
        );
        assert!(
            t.starts_with("🔴 <b>CRITICAL: &lt;b&gt;x&lt;/b&gt;</b>\n"),
            "{t}"
        );
        assert!(t.contains("\na &lt; b &amp;&amp; c &gt; d\n"), "{t}");
        assert!(t.ends_with(&format!("<code>{}</code>", "ab".repeat(16))));
    }

    #[test]
    fn long_alerts_are_cut_without_breaking_escapes() {
        for mode in [ParseMode::Html, ParseMode::MarkdownV2] {
            for n in 4000..4010 {
                let t = alert_text(&view("A", &"&.".repeat(n)), mode, MAX_TEXT);
                assert!(utf16_len(&t) <= MAX_TEXT, "{mode:?} {n}");
                let body = t.lines().nth(1).unwrap();
                assert!(body.ends_with('…'));
                let body = body.trim_end_matches('…');
                match mode {
                    ParseMode::Html => assert!(body.ends_with("&amp;") || body.ends_with('.')),
                    ParseMode::MarkdownV2 => {
                        unescape_markdown(body).unwrap();
                    }
                }
            }
        }
    }

    #[test]
    fn grouped_alerts_split_between_alerts_at_the_limit() {
        let alerts: Vec<AlertView> = (0..10)
            .map(|i| view(&format!("A{i}"), &"x".repeat(1500)))
            .collect();
        let ms = messages(&alerts, ParseMode::Html);
        assert!(ms.len() > 1);
        assert!(ms.iter().all(|m| utf16_len(m) <= MAX_TEXT));
        let names: Vec<usize> = ms
            .iter()
            .map(|m| m.matches("CRITICAL: A").count())
            .collect();
        assert_eq!(names.iter().sum::<usize>(), 10);
        assert_eq!(messages(&alerts[..2], ParseMode::Html).len(), 1);
    }
}
