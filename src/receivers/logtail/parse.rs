//! One log line (or one multiline record) → one OTLP log record, with secrets redacted.
//!
//! A JSON object becomes a structured record: the body from `event`/`message`/`msg`, the
//! time from `timestamp`/`time`/`ts` (ISO-8601 or epoch seconds, milliseconds,
//! microseconds or nanoseconds), the severity from `level`/`levelname`, `trace_id` and
//! `span_id` lifted into the record's own fields when they are valid ids (a UUID counts
//! as a trace id), and every other key an attribute, nested objects flattened with dots
//! (`extra_json.cycle`). Anything else, including JSON that is not an object and bytes
//! that are not UTF-8, is kept as a text body: a line is never dropped.
//!
//! Redaction runs here, before a record exists, so no secret reaches a processor, an
//! exporter or tradewatch's own log: a value whose key names a secret is replaced, and
//! the patterns (webhook URLs, bearer tokens, `password=...` in text, credentials in URLs)
//! are replaced inside every string.

use opentelemetry_proto::tonic::common::v1::KeyValueList;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use regex_lite::Regex;
use std::borrow::Cow;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// The keys redacted when the configuration names none.
pub const DEFAULT_SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "token",
    "api_key",
    "apikey",
    "secret",
    "authorization",
    "private_key",
    "webhook_url",
];

/// Patterns always applied to strings, whatever the configuration adds.
const BUILTIN_PATTERNS: &[&str] = &[
    // Slack, Discord and generic webhook URLs carry their credential in the path.
    r#"(?i)https?://hooks\.slack\.com/[^\s"'<>]+"#,
    r#"(?i)https?://(?:[a-z0-9-]+\.)?discord(?:app)?\.com/api/webhooks/[^\s"'<>]+"#,
    r#"(?i)https?://api\.telegram\.org/bot[^\s"'<>/]+"#,
    r"(?i)\bbearer\s+[a-z0-9._~+/=-]+",
];

#[derive(Debug, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {message}")]
pub struct PatternError {
    pub pattern: String,
    pub message: String,
}

/// Redacts secrets by key and by pattern.
#[derive(Debug, Clone)]
pub struct Redactor {
    /// The secret words (lower case): a key is secret when its dotted path contains one,
    /// whatever the case.
    finder: AnyOf,
    bearer: AnyOf,
    /// Replaced whole by [`REDACTED`].
    patterns: Vec<Regex>,
    /// `key=value` / `key: value` / `"key": "value"` in text, for the secret keys; the
    /// first group (the key and separator) is kept.
    assignment: Option<Regex>,
    /// `scheme://user:password@host`: the password is replaced.
    userinfo: Regex,
}

impl Redactor {
    pub fn new(keys: &[String], extra_patterns: &[String]) -> Result<Redactor, PatternError> {
        let compile = |p: &str| {
            Regex::new(p).map_err(|e| PatternError {
                pattern: p.to_owned(),
                message: e.to_string(),
            })
        };
        let keys: Vec<String> = keys
            .iter()
            .map(|k| k.trim().to_lowercase())
            .filter(|k| !k.is_empty())
            .collect();
        let mut patterns = Vec::new();
        for p in BUILTIN_PATTERNS {
            patterns.push(compile(p)?);
        }
        for p in extra_patterns {
            patterns.push(compile(p)?);
        }
        let assignment = if keys.is_empty() {
            None
        } else {
            let alternatives: Vec<String> = keys.iter().map(|k| escape(k)).collect();
            Some(compile(&format!(
                r#"(?i)([a-z0-9_.\-]*(?:{})[a-z0-9_.\-]*"?\s*[=:]\s*"?)[^\s",}}&]+"#,
                alternatives.join("|")
            ))?)
        };
        Ok(Redactor {
            finder: AnyOf::new(&keys),
            bearer: AnyOf::new(&["bearer".to_owned()]),
            patterns,
            assignment,
            userinfo: compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^:/@\s]+:)[^@/\s]+@")?,
        })
    }

    /// The defaults: [`DEFAULT_SECRET_KEYS`] and the built-in patterns.
    pub fn default_set() -> Redactor {
        let keys: Vec<String> = DEFAULT_SECRET_KEYS.iter().map(|k| k.to_string()).collect();
        Redactor::new(&keys, &[]).expect("the built-in patterns compile")
    }

    pub fn is_secret_key(&self, key: &str) -> bool {
        self.finder.found_in(key)
    }

    /// `s` with every pattern match replaced.
    pub fn text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        let mut out: Cow<'a, str> = Cow::Borrowed(s);
        // Cheap substring checks keep the common string (no URL, no secret word) away
        // from the built-in regexes; patterns from the configuration always run.
        let has_url = s.contains("://");
        let bearer = self.bearer.found_in(s);
        let mut replace = |re: &Regex, with: &str| {
            if let Cow::Owned(o) = re.replace_all(&out, with) {
                out = Cow::Owned(o);
            }
        };
        for (i, p) in self.patterns.iter().enumerate() {
            let run = match i {
                i if i < BUILTIN_URL_PATTERNS => has_url,
                i if i < BUILTIN_PATTERNS.len() => bearer,
                _ => true,
            };
            if run {
                replace(p, REDACTED);
            }
        }
        if has_url {
            replace(&self.userinfo, "${1}[REDACTED]@");
        }
        if let Some(a) = &self.assignment {
            // `key=value`, `key: value`: nothing to find without one of these.
            if memchr::memchr2(b'=', b':', s.as_bytes()).is_some() && self.finder.found_in(s) {
                replace(a, "${1}[REDACTED]");
            }
        }
        out
    }
}

/// The first built-in patterns all need `://` in the string.
const BUILTIN_URL_PATTERNS: usize = 3;

/// Finds any of a few lower-case words in text, ignoring ASCII case, in one pass: only
/// positions whose byte starts some word are compared. (The secret-key check runs on
/// every key and string value of every line; comparing each word at every position
/// was the tail's largest cost.)
#[derive(Debug, Clone)]
struct AnyOf {
    words: Vec<Vec<u8>>,
    /// Lower-cased first byte → the words starting with it.
    by_first: Vec<Vec<u16>>,
    /// Any byte (either case) that starts some word: most bytes are skipped on this alone.
    starts: [bool; 256],
}

impl AnyOf {
    fn new(words: &[String]) -> AnyOf {
        let mut by_first = vec![Vec::new(); 256];
        let words: Vec<Vec<u8>> = words
            .iter()
            .map(|w| w.to_ascii_lowercase().into_bytes())
            .filter(|w| !w.is_empty())
            .collect();
        let mut starts = [false; 256];
        for (i, w) in words.iter().enumerate().take(u16::MAX as usize) {
            by_first[w[0] as usize].push(i as u16);
            starts[w[0] as usize] = true;
            starts[w[0].to_ascii_uppercase() as usize] = true;
        }
        AnyOf {
            words,
            by_first,
            starts,
        }
    }

    fn found_in(&self, hay: &str) -> bool {
        let h = hay.as_bytes();
        for (i, b) in h.iter().enumerate() {
            if !self.starts[*b as usize] {
                continue;
            }
            let list = &self.by_first[b.to_ascii_lowercase() as usize];
            for &w in list {
                let w = &self.words[w as usize];
                if h.len() - i >= w.len() && h[i..i + w.len()].eq_ignore_ascii_case(w) {
                    return true;
                }
            }
        }
        false
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else {
            out.push('\\');
            out.push(c);
        }
    }
    out
}

/// Turns one record's bytes into a log record. `truncated`: the line was longer than
/// the limit and only its beginning is here. `observed`: when it was read (ns).
pub fn parse_record(bytes: &[u8], truncated: bool, observed: u64, r: &Redactor) -> LogRecord {
    let bytes = strip_line_end(bytes);
    let mut rec = LogRecord {
        observed_time_unix_nano: observed,
        ..Default::default()
    };
    let first = bytes.iter().position(|b| !b.is_ascii_whitespace());
    let parsed = match first {
        // UTF-8 checked once for the line, not string by string (invalid UTF-8 would make
        // the JSON fail anyway: such a line is kept as text).
        Some(i) if bytes[i] == b'{' && !truncated => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| serde_json::from_str::<Fields>(text).ok()),
        _ => None,
    };
    match parsed {
        Some(obj) => fill_from_json(&mut rec, obj, r),
        None => {
            let text = String::from_utf8_lossy(bytes);
            if matches!(text, Cow::Owned(_)) {
                rec.attributes
                    .push(kv("log.invalid_utf8", bool_value(true)));
            }
            rec.body = Some(string_value(r.text(&text).into_owned()));
        }
    }
    if truncated {
        rec.attributes.push(kv("log.truncated", bool_value(true)));
    }
    rec
}

pub fn strip_line_end(mut b: &[u8]) -> &[u8] {
    while let Some((&last, rest)) = b.split_last() {
        if last == b'\n' || last == b'\r' {
            b = rest;
        } else {
            break;
        }
    }
    b
}

const BODY_KEYS: &[&str] = &["event", "message", "msg"];
const TIME_KEYS: &[&str] = &["timestamp", "time", "ts", "@timestamp"];
const LEVEL_KEYS: &[&str] = &["level", "levelname", "severity"];

/// A JSON object's members in the line's order, keys borrowed from the line unless they
/// hold escapes; a repeated key keeps its last value (as a map would). Cheaper than a
/// `serde_json::Map`: no tree, no key copied twice.
struct Fields<'a>(Vec<(Cow<'a, str>, Option<serde_json::Value>)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Fields<'de>, A::Error> {
                let mut v = Vec::with_capacity(m.size_hint().unwrap_or(16));
                while let Some(k) = m.next_key_seed(KeySeed)? {
                    v.push((k, Some(m.next_value::<serde_json::Value>()?)));
                }
                dedupe(&mut v);
                Ok(Fields(v))
            }
        }
        d.deserialize_map(Members)
    }
}

struct KeySeed;

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        struct Key;
        impl<'de> serde::de::Visitor<'de> for Key {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
                Ok(Cow::Borrowed(s))
            }
            fn visit_str<E>(self, s: &str) -> Result<Cow<'de, str>, E> {
                Ok(Cow::Owned(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Cow<'de, str>, E> {
                Ok(Cow::Owned(s))
            }
        }
        d.deserialize_str(Key)
    }
}

/// String equality that mostly decides on the length and first byte (short keys are
/// compared many times per line).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().first() == b.as_bytes().first() && a == b
}

/// Empties every member whose key comes again later.
fn dedupe(v: &mut [(Cow<'_, str>, Option<serde_json::Value>)]) {
    let earlier: Vec<usize> = if v.len() <= 32 {
        (0..v.len())
            .filter(|&i| v[i + 1..].iter().any(|(k, _)| same(k, &v[i].0)))
            .collect()
    } else {
        let mut last = std::collections::HashMap::with_capacity(v.len());
        let mut earlier = Vec::new();
        for (i, (k, _)) in v.iter().enumerate() {
            if let Some(prev) = last.insert(k.as_ref(), i) {
                earlier.push(prev);
            }
        }
        earlier
    };
    for i in earlier {
        v[i].1 = None;
    }
}

impl Fields<'_> {
    /// The value of `key`, taken out.
    fn take(&mut self, key: &str) -> Option<serde_json::Value> {
        self.0
            .iter_mut()
            .find(|(k, v)| same(k, key) && v.is_some())
            .and_then(|(_, v)| v.take())
    }

    /// The value of `key` if `f` accepts it (then it is taken out).
    fn take_if<T>(&mut self, key: &str, f: impl Fn(&serde_json::Value) -> Option<T>) -> Option<T> {
        let slot = self
            .0
            .iter_mut()
            .find(|(k, v)| same(k, key) && v.is_some())
            .map(|(_, v)| v)?;
        let out = f(slot.as_ref()?)?;
        *slot = None;
        Some(out)
    }
}

fn fill_from_json(rec: &mut LogRecord, mut obj: Fields<'_>, r: &Redactor) {
    if let Some(v) = BODY_KEYS.iter().find_map(|k| obj.take(k)) {
        rec.body = Some(match v {
            serde_json::Value::String(s) => string_value(r.text(&s).into_owned()),
            other => to_any("", other, r),
        });
    }
    if let Some(t) = TIME_KEYS.iter().find_map(|k| obj.take_if(k, parse_time)) {
        rec.time_unix_nano = t;
    }
    if let Some((n, text)) = LEVEL_KEYS.iter().find_map(|k| obj.take_if(k, parse_level)) {
        rec.severity_number = n as i32;
        rec.severity_text = text;
    }
    if let Some(id) = obj.take_if("trace_id", |v| hex_id(v.as_str()?, 16)) {
        rec.trace_id = id;
    }
    if let Some(id) = obj.take_if("span_id", |v| hex_id(v.as_str()?, 8)) {
        rec.span_id = id;
    }
    // The receiver adds two (the file's name, the record's uid).
    rec.attributes.reserve(obj.0.len() + 2);
    for (k, v) in obj.0 {
        if let Some(v) = v {
            flatten(&k, v, &mut rec.attributes, r);
        }
    }
}

/// Nested objects become dotted keys; everything else one attribute.
fn flatten(key: &str, v: serde_json::Value, out: &mut Vec<KeyValue>, r: &Redactor) {
    if r.is_secret_key(key) {
        out.push(kv(key, string_value(REDACTED.to_owned())));
        return;
    }
    match v {
        serde_json::Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                flatten(&format!("{key}.{k}"), v, out, r);
            }
        }
        other => out.push(kv(key, to_any(key, other, r))),
    }
}

/// A JSON value as an attribute value, secrets inside arrays and objects redacted.
fn to_any(key: &str, v: serde_json::Value, r: &Redactor) -> AnyValue {
    use serde_json::Value as J;
    let value = match v {
        J::Null => None,
        J::Bool(b) => Some(any_value::Value::BoolValue(b)),
        J::Number(n) => match n.as_i64() {
            Some(i) => Some(any_value::Value::IntValue(i)),
            None => Some(any_value::Value::DoubleValue(
                n.as_f64().unwrap_or(f64::NAN),
            )),
        },
        J::String(s) => Some(any_value::Value::StringValue(match r.text(&s) {
            Cow::Borrowed(_) => s,
            Cow::Owned(o) => o,
        })),
        J::Array(a) => Some(any_value::Value::ArrayValue(ArrayValue {
            values: a.into_iter().map(|v| to_any(key, v, r)).collect(),
        })),
        J::Object(m) => Some(any_value::Value::KvlistValue(KeyValueList {
            values: m
                .into_iter()
                .map(|(k, v)| {
                    let path = if key.is_empty() {
                        k.clone()
                    } else {
                        format!("{key}.{k}")
                    };
                    if r.is_secret_key(&path) {
                        kv(&k, string_value(REDACTED.to_owned()))
                    } else {
                        kv(&k, to_any(&path, v, r))
                    }
                })
                .collect(),
        })),
    };
    AnyValue { value }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value),
        ..Default::default()
    }
}

fn string_value(s: String) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    }
}

fn bool_value(b: bool) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::BoolValue(b)),
    }
}

/// Where ids are read from hex: shared with the `trace_enrich` processor.
pub use crate::otlp::hex_id;

/// Python's level names and numbers, OTel's names, and the usual abbreviations.
fn parse_level(v: &serde_json::Value) -> Option<(SeverityNumber, String)> {
    use SeverityNumber as S;
    if let Some(n) = v.as_i64() {
        // Python's logging levels.
        let s = match n {
            ..=9 => S::Trace,
            10..=19 => S::Debug,
            20..=29 => S::Info,
            30..=39 => S::Warn,
            40..=49 => S::Error,
            _ => S::Fatal,
        };
        return Some((s, n.to_string()));
    }
    let text = v.as_str()?;
    let s = match text.trim().to_ascii_lowercase().as_str() {
        "trace" => S::Trace,
        "debug" => S::Debug,
        "info" | "information" | "notice" => S::Info,
        "warn" | "warning" => S::Warn,
        "error" | "err" | "exception" => S::Error,
        "critical" | "fatal" | "crit" | "alert" | "emergency" | "panic" => S::Fatal,
        _ => return None,
    };
    Some((s, text.to_owned()))
}

/// ISO-8601 / RFC 3339 text, or epoch seconds, milliseconds, microseconds or
/// nanoseconds told apart by magnitude; `None` for anything else (kept as an attribute).
pub fn parse_time(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => match n.as_u64() {
            // Integers are scaled exactly; a double would round milliseconds.
            Some(i) if i > 0 => i.checked_mul(if i < 100_000_000_000 {
                1_000_000_000
            } else if i < 100_000_000_000_000 {
                1_000_000
            } else if i < 100_000_000_000_000_000 {
                1_000
            } else {
                1
            }),
            _ => epoch(n.as_f64()?),
        },
        serde_json::Value::String(s) => {
            let s = s.trim();
            if let Ok(f) = s.parse::<f64>() {
                return epoch(f);
            }
            iso8601(s)
        }
        _ => None,
    }
}

fn epoch(f: f64) -> Option<u64> {
    if !f.is_finite() || f <= 0.0 {
        return None;
    }
    let ns = if f < 1e11 {
        f * 1e9
    } else if f < 1e14 {
        f * 1e6
    } else if f < 1e17 {
        f * 1e3
    } else {
        f
    };
    (ns < 1.8e19).then_some(ns as u64)
}

/// `YYYY-MM-DD[T ]HH:MM[:SS[.frac]][Z|±HH[:]MM]`; no zone means UTC.
fn iso8601(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 16 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' {
        return None;
    }
    let (h, mi) = (num(11..13)?, num(14..16)?);
    let mut i = 16;
    let mut sec = 0;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b':') {
        sec = num(i + 1..i + 3)?;
        i += 3;
        if matches!(b.get(i), Some(b'.') | Some(b',')) {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let frac = &s[start..i];
            if frac.is_empty() {
                return None;
            }
            let mut digits: String = frac.chars().take(9).collect();
            while digits.len() < 9 {
                digits.push('0');
            }
            nanos = digits.parse().ok()?;
        }
    }
    let offset_s: i64 = match b.get(i) {
        None => 0,
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let rest = &s[i + 1..];
            let (oh, om) = match rest.len() {
                5 if rest.as_bytes()[2] == b':' => (
                    rest[..2].parse::<i64>().ok()?,
                    rest[3..].parse::<i64>().ok()?,
                ),
                4 => (
                    rest[..2].parse::<i64>().ok()?,
                    rest[2..].parse::<i64>().ok()?,
                ),
                2 => (rest.parse::<i64>().ok()?, 0),
                _ => return None,
            };
            let o = oh * 3600 + om * 60;
            if sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    if secs < 0 {
        return None;
    }
    // Past 2554 nanoseconds since 1970 no longer fit in 64 bits: not a time then.
    (secs as u64)
        .checked_mul(1_000_000_000)?
        .checked_add(nanos as u64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests;
