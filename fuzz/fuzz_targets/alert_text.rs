//! Rendering alerts for the channels: whatever an alert record holds (names, summaries and
//! labels are user data: bot names, log lines, exception texts), the Telegram texts stay
//! within 4096 UTF-16 units with their markup intact, and the Slack messages within 50
//! blocks, without a panic.
//!
//! The input is split at 0xFF bytes: name, summary, then label key/value pairs; the first
//! byte picks the state, severity and how many copies of the alert share one payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tradewatch::exporters::alerting::AlertView;
use tradewatch::exporters::slack::{self, Style};
use tradewatch::exporters::telegram::{self, ParseMode, MAX_TEXT};
use tradewatch::pipeline::alerts::{AlertState, Severity};

fn utf16(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Every `&` starts one of the entities Telegram's HTML knows, and every `<` a tag the
/// renderer writes, closed as often as opened.
fn html_ok(t: &str) -> bool {
    let mut rest = t;
    while let Some(i) = rest.find('&') {
        let after = &rest[i..];
        if !["&lt;", "&gt;", "&amp;", "&quot;"].iter().any(|e| after.starts_with(e)) {
            return false;
        }
        rest = &rest[i + 1..];
    }
    for tag in ["b", "code", "i", "pre"] {
        if t.matches(&format!("<{tag}>")).count() != t.matches(&format!("</{tag}>")).count() {
            return false;
        }
    }
    t.matches('<').count() == t.matches("<b>").count() * 2
        + t.matches("<code>").count() * 2
        + t.matches("<i>").count() * 2
        + t.matches("<pre>").count() * 2
}

/// Outside `code` spans every character Telegram reserves is escaped, and a text does not
/// end in a lone backslash.
fn markdown_ok(t: &str) -> bool {
    let mut chars = t.chars();
    let mut in_code = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if chars.next().is_none() {
                    return false;
                }
            }
            '`' => in_code = !in_code,
            '*' if !in_code => {} // bold markers the renderer writes
            '_' | '[' | ']' | '(' | ')' | '~' | '>' | '#' | '+' | '-' | '=' | '|' | '{' | '}'
            | '.' | '!'
                if !in_code =>
            {
                return false
            }
            _ => {}
        }
    }
    !in_code
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let parts: Vec<String> = rest
        .split(|b| *b == 0xff)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let name = parts.first().cloned().unwrap_or_default();
    let summary = parts.get(1).cloned().unwrap_or_default();
    let labels: Vec<(String, String)> = parts
        .get(2..)
        .unwrap_or_default()
        .chunks(2)
        .map(|kv| (kv[0].clone(), kv.get(1).cloned().unwrap_or_default()))
        .collect();
    let alert = AlertView {
        name,
        state: if flags & 1 == 0 { AlertState::Firing } else { AlertState::Resolved },
        severity: match (flags >> 1) % 3 {
            0 => Severity::Info,
            1 => Severity::Warning,
            _ => Severity::Critical,
        },
        summary,
        fingerprint: "0123456789abcdef".into(),
        labels,
        trace_id: (flags & 8 != 0).then(|| "4bf92f3577b34da6a3ce929d0e0e4736".into()),
        time_unix_nano: 1_764_000_000_000_000_000,
        source: "risk".into(),
        is_alert: true,
    };
    let copies = 1 + ((flags >> 4) as usize % 8) * 3;
    let alerts = vec![alert; copies];
    for mode in [ParseMode::Html, ParseMode::MarkdownV2] {
        let texts = telegram::messages(&alerts, mode);
        assert!(!texts.is_empty());
        for t in &texts {
            assert!(utf16(t) <= MAX_TEXT, "{} UTF-16 units", utf16(t));
            match mode {
                ParseMode::Html => assert!(html_ok(t), "broken HTML: {t}"),
                ParseMode::MarkdownV2 => assert!(markdown_ok(t), "unescaped MarkdownV2: {t}"),
            }
        }
    }
    for m in slack::messages(&alerts, &Style::default()) {
        let v: serde_json::Value = serde_json::from_str(&m).expect("Slack JSON");
        assert!(v["blocks"].as_array().map_or(0, |b| b.len()) <= 50);
    }
});
