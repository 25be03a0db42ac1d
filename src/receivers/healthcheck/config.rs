//! `[receivers."healthcheck/NAME"]` and its `[[...checks]]`, checked when the config is
//! loaded so that `validate` names the file, line and key of a bad check.

use super::probe::{HttpProbe, PostgresProbe, RedisProbe};
use crate::component::{ComponentId, Kind};
use crate::config::{component_config, quote_key, ConfigError, HumanDuration, Secret, Source};
use crate::receivers::freqtrade::client::Auth;
use serde::Deserialize;
use std::collections::HashSet;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

/// The check types, as written in `type`.
pub const TYPES: &[&str] = &[
    "http",
    "tcp",
    "redis",
    "postgres",
    "freqtrade",
    "sns",
    "sqs",
    "s3",
    "dynamodb",
    "cloudwatch_logs",
];

fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(3))
}
/// Consecutive failures of a check before its alert.
const DEFAULT_ALERT_AFTER: i64 = 3;
fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_interval")]
    interval: HumanDuration,
    /// The default of every check's `timeout`.
    #[serde(default = "default_timeout")]
    timeout: HumanDuration,
    alert_after: Option<Spanned<i64>>,
    #[serde(default)]
    checks: Vec<Spanned<RawCheck>>,
}

/// One `[[...checks]]` table: the keys of every type; [`check`] refuses those that do
/// not belong to its type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(default = "yes")]
    critical: bool,
    timeout: Option<HumanDuration>,
    url: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    expect_status: Option<Vec<u16>>,
    body_contains: Option<String>,
    json_pointer: Option<Spanned<String>>,
    json_equals: Option<String>,
    username: Option<String>,
    password: Option<Secret>,
    auth: Option<Auth>,
    states: Option<Vec<String>>,
    region: Option<String>,
    endpoint_url: Option<Spanned<String>>,
    topic_arn: Option<Spanned<String>>,
    queue_url: Option<Spanned<String>>,
    bucket: Option<Spanned<String>>,
    table: Option<Spanned<String>>,
    log_group: Option<Spanned<String>>,
}

impl RawCheck {
    /// The optional keys written in this check.
    fn written(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut note = |k: &'static str, set: bool| {
            if set {
                keys.push(k)
            }
        };
        note("url", self.url.is_some());
        note("address", self.address.is_some());
        note("expect_status", self.expect_status.is_some());
        note("body_contains", self.body_contains.is_some());
        note("json_pointer", self.json_pointer.is_some());
        note("json_equals", self.json_equals.is_some());
        note("username", self.username.is_some());
        note("password", self.password.is_some());
        note("auth", self.auth.is_some());
        note("states", self.states.is_some());
        note("region", self.region.is_some());
        note("endpoint_url", self.endpoint_url.is_some());
        note("topic_arn", self.topic_arn.is_some());
        note("queue_url", self.queue_url.is_some());
        note("bucket", self.bucket.is_some());
        note("table", self.table.is_some());
        note("log_group", self.log_group.is_some());
        keys
    }
}

/// The keys each type takes besides `name`, `type`, `critical`, `timeout`.
fn keys_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "http" => &[
            "url",
            "expect_status",
            "body_contains",
            "json_pointer",
            "json_equals",
        ],
        "tcp" => &["address"],
        "redis" | "postgres" => &["url"],
        "freqtrade" => &["url", "username", "password", "auth", "states"],
        "sns" => &["region", "endpoint_url", "topic_arn"],
        "sqs" => &["region", "endpoint_url", "queue_url"],
        "s3" => &["region", "endpoint_url", "bucket"],
        "dynamodb" => &["region", "endpoint_url", "table"],
        "cloudwatch_logs" => &["region", "endpoint_url", "log_group"],
        _ => &[],
    }
}

/// What a check probes, with everything checked.
#[derive(Debug, Clone)]
pub enum ProbeSpec {
    Http(HttpProbe),
    Tcp(String),
    Redis(RedisProbe),
    Postgres(PostgresProbe),
    Freqtrade {
        url: String,
        login: Option<(String, Secret, Auth)>,
        states: Vec<String>,
    },
    #[cfg(feature = "aws")]
    Aws {
        resource: super::aws::Resource,
        region: Option<String>,
        endpoint_url: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct CheckSpec {
    pub name: String,
    /// The type, as written (`http`, `redis`, ...).
    pub kind: &'static str,
    pub critical: bool,
    pub timeout: Duration,
    /// What it probes, safe to show: a URL with its user info as `***`, an address, an
    /// AWS resource.
    pub target: String,
    pub probe: ProbeSpec,
    /// Passwords of this check, scrubbed from every error text.
    secrets: Vec<String>,
}

impl CheckSpec {
    /// `text` with every password of this check replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "***");
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct HealthcheckConfig {
    pub interval: Duration,
    pub alert_after: u32,
    pub checks: Vec<CheckSpec>,
}

pub fn parse_config(src: &Source, id: &ComponentId) -> Result<HealthcheckConfig, ConfigError> {
    let raw: RawConfig = component_config(src, Kind::Receiver, id)?;
    let table = format!("receivers.{}", quote_key(id.as_str()));
    let err = |keys: &[&str], msg: &str| src.component_error(Kind::Receiver, id, keys, msg.into());
    if raw.interval.get().is_zero() {
        return Err(err(&["interval"], "interval must be more than 0"));
    }
    if raw.timeout.get().is_zero() {
        return Err(err(&["timeout"], "timeout must be more than 0"));
    }
    let alert_after = raw
        .alert_after
        .as_ref()
        .map_or(DEFAULT_ALERT_AFTER, |a| *a.get_ref());
    if let (Some(a), false) = (&raw.alert_after, (1..=1000).contains(&alert_after)) {
        return Err(src.error_span_key(
            a.span(),
            format!("{table}.alert_after"),
            format!("alert_after = {alert_after} is outside 1..1000 (consecutive failures before one alert)"),
        ));
    }
    // No checks is accepted (the aggregate is then HEALTHY): `validate` blanks a broken
    // `[[...checks]]` to look for further mistakes, and must not then report its absence
    // as a second one.
    let mut names = HashSet::new();
    let mut checks = Vec::with_capacity(raw.checks.len());
    for (i, c) in raw.checks.into_iter().enumerate() {
        let span = c.span();
        let c = c.into_inner();
        let at = |key: &str| format!("{table}.checks[{i}].{key}");
        let name = c.name.get_ref().trim().to_owned();
        if name.is_empty() {
            return Err(src.error_span_key(
                c.name.span(),
                at("name"),
                "the check's name is empty".into(),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(src.error_span_key(
                c.name.span(),
                at("name"),
                format!("two checks are named {name:?}: names identify checks in metrics and alerts, make them unique"),
            ));
        }
        checks.push(check(src, &c, name, span, &at, raw.timeout.get())?);
    }
    Ok(HealthcheckConfig {
        interval: raw.interval.get(),
        alert_after: alert_after as u32,
        checks,
    })
}

/// Checks one `[[...checks]]` table of a known or unknown type.
fn check(
    src: &Source,
    c: &RawCheck,
    name: String,
    span: Range<usize>,
    at: &dyn Fn(&str) -> String,
    default_timeout: Duration,
) -> Result<CheckSpec, ConfigError> {
    let kind_written = c.kind.get_ref().as_str();
    let Some(kind) = TYPES.iter().copied().find(|t| *t == kind_written) else {
        return Err(src.error_span_key(
            c.kind.span(),
            at("type"),
            format!(
                "check {name:?}: unknown check type {kind_written:?}: use one of {}",
                TYPES.join(", ")
            ),
        ));
    };
    let allowed = keys_of(kind);
    if let Some(k) = c.written().into_iter().find(|k| !allowed.contains(k)) {
        return Err(src.error_in_span(
            span,
            &format!("\n{k}"),
            at(k),
            format!(
                "check {name:?}: a {kind} check has no key {k:?} (it takes {})",
                allowed.join(", ")
            ),
        ));
    }
    let timeout = c.timeout.map(HumanDuration::get).unwrap_or(default_timeout);
    if timeout.is_zero() {
        return Err(src.error_in_span(
            span,
            "\ntimeout",
            at("timeout"),
            format!("check {name:?}: timeout must be more than 0"),
        ));
    }
    let spanned_err = |v: &Spanned<String>, key: &str, msg: String| {
        src.error_span_key(v.span(), at(key), format!("check {name:?}: {msg}"))
    };
    let missing = |key: &str, what: &str| {
        src.error_in_span(
            span.clone(),
            "\ntype",
            at(key),
            format!("check {name:?}: a {kind} check needs {key} ({what})"),
        )
    };
    let required = |v: &Option<Spanned<String>>, key: &str, what: &str| match v {
        Some(v) if !v.get_ref().trim().is_empty() => Ok(v.clone()),
        Some(v) => Err(spanned_err(v, key, format!("{key} is empty"))),
        None => Err(missing(key, what)),
    };
    let mut secrets = Vec::new();
    let (target, probe) = match kind {
        "http" => {
            let url = required(&c.url, "url", "http://HOST:PORT/PATH")?;
            let parsed = parse_url(url.get_ref(), &["http", "https"])
                .map_err(|m| spanned_err(&url, "url", m))?;
            secrets.extend(url_secrets(&parsed));
            if let Some(p) = &c.json_pointer {
                if !(p.get_ref().is_empty() || p.get_ref().starts_with('/')) {
                    return Err(spanned_err(
                        p,
                        "json_pointer",
                        format!(
                            "json_pointer {:?} must start with '/' (RFC 6901, e.g. \"/status\")",
                            p.get_ref()
                        ),
                    ));
                }
            }
            if c.json_equals.is_some() && c.json_pointer.is_none() {
                return Err(missing(
                    "json_pointer",
                    "json_equals compares the value there",
                ));
            }
            if let Some(s) = c
                .expect_status
                .iter()
                .flatten()
                .find(|s| !(100..=599).contains(*s))
            {
                return Err(src.error_in_span(
                    span.clone(),
                    "\nexpect_status",
                    at("expect_status"),
                    format!("check {name:?}: {s} is no HTTP status (100..599)"),
                ));
            }
            (
                redact_url(url.get_ref()),
                ProbeSpec::Http(HttpProbe {
                    url: url.get_ref().clone(),
                    expect_status: c.expect_status.clone().unwrap_or_default(),
                    body_contains: c.body_contains.clone(),
                    json_pointer: c.json_pointer.as_ref().map(|p| p.get_ref().clone()),
                    json_equals: c.json_equals.clone(),
                }),
            )
        }
        "tcp" => {
            let address = required(&c.address, "address", "HOST:PORT")?;
            let a = address.get_ref();
            let port_ok = a.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !port_ok {
                return Err(spanned_err(
                    &address,
                    "address",
                    format!("address {a:?} is not HOST:PORT"),
                ));
            }
            (a.clone(), ProbeSpec::Tcp(a.clone()))
        }
        "redis" => {
            let url = required(&c.url, "url", "redis://[:PASSWORD@]HOST:PORT")?;
            let parsed =
                parse_url(url.get_ref(), &["redis"]).map_err(|m| spanned_err(&url, "url", m))?;
            secrets.extend(url_secrets(&parsed));
            let host = parsed.host_str().unwrap_or_default();
            let address = format!("{host}:{}", parsed.port().unwrap_or(6379));
            let password = parsed
                .password()
                .map(|p| Secret::new(percent_decode(p)))
                .filter(|p| !p.is_empty());
            let username = Some(percent_decode(parsed.username())).filter(|u| !u.is_empty());
            (
                redact_url(url.get_ref()),
                ProbeSpec::Redis(RedisProbe {
                    address,
                    username: password.as_ref().and(username),
                    password,
                }),
            )
        }
        "postgres" => {
            let url = required(&c.url, "url", "postgres://USER:PASSWORD@HOST:PORT/DB")?;
            let parsed = parse_url(url.get_ref(), &["postgres", "postgresql"])
                .map_err(|m| spanned_err(&url, "url", m))?;
            secrets.extend(url_secrets(&parsed));
            let config: tokio_postgres::Config = url.get_ref().parse().map_err(|e| {
                let e = format!("{e}");
                let mut msg = format!(
                    "url {} is no PostgreSQL URL: {e}",
                    redact_url(url.get_ref())
                );
                for s in &secrets {
                    msg = msg.replace(s.as_str(), "***");
                }
                spanned_err(&url, "url", msg)
            })?;
            (
                redact_url(url.get_ref()),
                ProbeSpec::Postgres(PostgresProbe { config }),
            )
        }
        "freqtrade" => {
            let url = required(&c.url, "url", "the bot's API root, http://HOST:PORT")?;
            let parsed = parse_url(url.get_ref(), &["http", "https"])
                .map_err(|m| spanned_err(&url, "url", m))?;
            secrets.extend(url_secrets(&parsed));
            let login = match (&c.username, &c.password) {
                (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => {
                    secrets.push(p.expose().to_owned());
                    Some((u.clone(), p.clone(), c.auth.unwrap_or(Auth::Jwt)))
                }
                (None, None) => None,
                _ => {
                    return Err(missing(
                        "password",
                        "give both username and password to check the bot's state, or neither to ping only",
                    ))
                }
            };
            let states = c.states.clone().unwrap_or_else(|| vec!["running".into()]);
            (
                redact_url(url.get_ref()),
                ProbeSpec::Freqtrade {
                    url: url.get_ref().clone(),
                    login,
                    states,
                },
            )
        }
        aws_kind => aws_probe(src, c, &name, aws_kind, &span, at)?,
    };
    secrets.retain(|s| s.len() >= 3);
    Ok(CheckSpec {
        name,
        kind,
        critical: c.critical,
        timeout,
        target,
        probe,
        secrets,
    })
}

#[cfg(feature = "aws")]
fn aws_probe(
    src: &Source,
    c: &RawCheck,
    name: &str,
    kind: &str,
    span: &Range<usize>,
    at: &dyn Fn(&str) -> String,
) -> Result<(String, ProbeSpec), ConfigError> {
    use super::aws::Resource;
    let (key, what, field): (&str, &str, &Option<Spanned<String>>) = match kind {
        "sns" => ("topic_arn", "arn:aws:sns:REGION:ACCOUNT:NAME", &c.topic_arn),
        "sqs" => ("queue_url", "the queue's URL", &c.queue_url),
        "s3" => ("bucket", "the bucket's name", &c.bucket),
        "dynamodb" => ("table", "the table's name", &c.table),
        _ => ("log_group", "the log group's name", &c.log_group),
    };
    let value = match field {
        Some(v) if !v.get_ref().trim().is_empty() => v.get_ref().trim().to_owned(),
        Some(v) => {
            return Err(src.error_span_key(
                v.span(),
                at(key),
                format!("check {name:?}: {key} is empty"),
            ))
        }
        None => {
            return Err(src.error_in_span(
                span.clone(),
                "\ntype",
                at(key),
                format!("check {name:?}: a {kind} check needs {key} ({what})"),
            ))
        }
    };
    if kind == "sns" && !value.starts_with("arn:") {
        let v = field.as_ref().map(|v| v.span()).unwrap_or(span.clone());
        return Err(src.error_span_key(
            v,
            at(key),
            format!(
                "check {name:?}: topic_arn {value:?} is no ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
            ),
        ));
    }
    let endpoint_url = match &c.endpoint_url {
        Some(u) => {
            parse_url(u.get_ref(), &["http", "https"]).map_err(|m| {
                src.error_span_key(u.span(), at("endpoint_url"), format!("check {name:?}: {m}"))
            })?;
            Some(u.get_ref().clone())
        }
        None => None,
    };
    let resource = match kind {
        "sns" => Resource::SnsTopic(value.clone()),
        "sqs" => Resource::SqsQueue(value.clone()),
        "s3" => Resource::S3Bucket(value.clone()),
        "dynamodb" => Resource::DynamoDbTable(value.clone()),
        _ => Resource::LogGroup(value.clone()),
    };
    Ok((
        format!("{key}={value}"),
        ProbeSpec::Aws {
            resource,
            region: c.region.clone().filter(|r| !r.trim().is_empty()),
            endpoint_url,
        },
    ))
}

#[cfg(not(feature = "aws"))]
fn aws_probe(
    src: &Source,
    c: &RawCheck,
    name: &str,
    kind: &str,
    _span: &Range<usize>,
    at: &dyn Fn(&str) -> String,
) -> Result<(String, ProbeSpec), ConfigError> {
    Err(src.error_span_key(
        c.kind.span(),
        at("type"),
        format!("check {name:?}: this tradewatch was built without the `aws` feature, which {kind} checks need"),
    ))
}

/// Parses `raw` as an absolute URL of one of `schemes` with a host; the message never
/// repeats the URL's credentials.
fn parse_url(raw: &str, schemes: &[&str]) -> Result<reqwest::Url, String> {
    let shown = redact_url(raw);
    let url = reqwest::Url::parse(raw).map_err(|e| format!("bad URL {shown:?}: {e}"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "bad URL {shown:?}: the scheme must be {}",
            schemes
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("bad URL {shown:?}: no host"));
    }
    Ok(url)
}

/// The password of a URL, as written and decoded, and secret-looking query values.
fn url_secrets(url: &reqwest::Url) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = url.password() {
        out.push(p.to_owned());
        out.push(percent_decode(p));
    }
    for (k, v) in url.query_pairs() {
        if is_secret_key(&k) && !v.is_empty() {
            out.push(v.into_owned());
        }
    }
    out
}

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["pass", "token", "secret", "key"]
        .iter()
        .any(|s| k.contains(s))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` safe to show: its user info (`user:password@`) becomes `***@`, and the values
/// of query keys that look secret (`password`, `token`, `secret`, `key`) become `***`.
/// Works on text that does not parse as a URL too.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    // User info ends at the last '@' (a password may hold '/' or '?'); a path that holds
    // an '@' is then hidden too, which errs on the safe side.
    let authority_start = rest.rfind('@').unwrap_or(0);
    let authority_end = rest[authority_start..]
        .find(['/', '?', '#'])
        .map_or(rest.len(), |i| authority_start + i);
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(i) => format!("***@{}", &authority[i + 1..]),
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            let mut t = format!("{path}?{}", query.join("&"));
            if let Some(f) = fragment {
                t.push('#');
                t.push_str(f);
            }
            t
        }
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(
            redact_url("postgres://app:s3cret@127.0.0.1:5432/db?sslmode=disable&password=x"),
            "postgres://***@127.0.0.1:5432/db?sslmode=disable&password=***"
        );
        assert_eq!(
            redact_url("redis://:p%40ss@localhost:6379/0"),
            "redis://***@localhost:6379/0"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:8000/health"),
            "http://127.0.0.1:8000/health"
        );
        assert_eq!(redact_url("user:pw@host"), "***@host");
        assert_eq!(redact_url("redis//:pw@host:1"), "***@host:1");
        assert_eq!(
            redact_url("redis://:p/w?x@host:1/0"),
            "redis://***@host:1/0"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("p%40ss%2"), "p@ss%2");
        assert_eq!(percent_decode("plain"), "plain");
    }
}
