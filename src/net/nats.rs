//! What the `nats` exporter and receiver share: the connection settings (servers,
//! credentials, TLS), the stream they meet on and how it is created when missing, and how
//! a message's subject and headers say what it holds.
//!
//! Both ends keep one client, made at start-up whether or not a server answers: the
//! client connects in the background and reconnects forever, trying every server it knows
//! (those configured and those the cluster announces).

use crate::component::{ComponentId, Kind, Signal};
use crate::config::{ConfigError, HumanDuration, HumanSize, Secret, Source};
use crate::net::tls::ClientTlsConfig;
use async_nats::jetstream;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The header that names the signal of a message (its subject may not).
pub const SIGNAL_HEADER: &str = "Tradewatch-Signal";

/// The stream both ends use unless told otherwise.
pub fn default_stream() -> String {
    "TELEMETRY".into()
}

/// Where each signal is published: `{signal}` becomes `traces`, `metrics` or `logs`.
pub fn default_subject() -> String {
    "tradewatch.{signal}".into()
}

/// `url = "nats://…"` or a list of a cluster's URLs.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Urls {
    One(String),
    Many(Vec<String>),
}

impl Default for Urls {
    fn default() -> Self {
        Urls::One("nats://127.0.0.1:4222".into())
    }
}

impl Urls {
    pub fn list(&self) -> Vec<String> {
        match self {
            Urls::One(u) => vec![u.clone()],
            Urls::Many(v) => v.clone(),
        }
    }
}

/// The stream both ends use, created with these settings by whichever end finds it
/// missing. An existing stream is used as it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// Oldest data is discarded past this size (`discard = old`): size it for the
    /// longest gateway outage you want to ride out.
    pub max_bytes: HumanSize,
    /// Messages older than this are discarded; `"0s"`: kept until `max_bytes`.
    pub max_age: HumanDuration,
    /// Copies kept in a cluster (1, 3 or 5; at most the number of servers).
    pub replicas: usize,
    /// `"file"` (survives a server restart) or `"memory"`.
    pub storage: Storage,
    /// How long JetStream remembers message ids to drop a re-published batch.
    pub duplicate_window: HumanDuration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            max_bytes: HumanSize(1024 * 1024 * 1024),
            max_age: HumanDuration::from_secs(24 * 3600),
            replicas: 1,
            storage: Storage::File,
            duplicate_window: HumanDuration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    #[default]
    File,
    Memory,
}

/// Where and how to connect, checked.
#[derive(Debug, Clone)]
pub struct Connection {
    pub urls: Vec<String>,
    pub credentials_file: Option<PathBuf>,
    pub token: Option<Secret>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The client's name in the server's connection list.
    pub name: String,
}

/// The connection keys as written in a component's table.
pub struct ConnectionKeys<'a> {
    pub url: &'a Urls,
    pub credentials_file: &'a str,
    pub token: &'a Option<Secret>,
    pub user: &'a str,
    pub password: &'a Option<Secret>,
    pub tls: &'a Option<ClientTlsConfig>,
}

impl Connection {
    /// Checks the connection keys of component `id`; errors name the key.
    pub fn check(
        src: &Source,
        kind: Kind,
        id: &ComponentId,
        k: ConnectionKeys<'_>,
    ) -> Result<Connection, ConfigError> {
        let err = |key: &str, m: String| src.component_error(kind, id, &[key], m);
        let urls = k.url.list();
        if urls.is_empty() {
            return Err(err("url", "give at least one server URL".into()));
        }
        let mut tls_scheme = false;
        for u in &urls {
            if let Err(e) = u.parse::<async_nats::ServerAddr>() {
                return Err(err(
                    "url",
                    format!("invalid server URL {u:?}: {e} (write nats://HOST:PORT, tls://HOST:PORT for TLS)"),
                ));
            }
            tls_scheme |= u.starts_with("tls://");
        }
        let tls = match k.tls {
            Some(t) => {
                if t.server_name.is_some() {
                    return Err(src.component_error(
                        kind,
                        id,
                        &["tls", "server_name"],
                        "not supported by the nats components: the certificate must name the host of the URL".into(),
                    ));
                }
                let mut t = t.clone();
                for p in [&mut t.ca_file, &mut t.cert_file, &mut t.key_file]
                    .into_iter()
                    .flatten()
                {
                    *p = src.resolve_path(p);
                }
                let c = t
                    .build(|p| p.to_owned(), &[])
                    .map_err(|e| src.component_error(kind, id, &["tls", e.key], e.message))?;
                Some(Arc::new(c))
            }
            None if tls_scheme => {
                let c = ClientTlsConfig::default()
                    .build(|p| p.to_owned(), &[])
                    .map_err(|e| src.component_error(kind, id, &["tls", e.key], e.message))?;
                Some(Arc::new(c))
            }
            None => None,
        };
        let user = (!k.user.is_empty()).then(|| k.user.to_owned());
        let password = k.password.clone().filter(|p| !p.is_empty());
        if user.is_some() != password.is_some() {
            return Err(err(
                if user.is_some() { "password" } else { "user" },
                "user and password go together".into(),
            ));
        }
        let token = k.token.clone().filter(|t| !t.is_empty());
        let credentials_file =
            (!k.credentials_file.is_empty()).then(|| src.resolve_path(k.credentials_file.as_ref()));
        let methods = [credentials_file.is_some(), token.is_some(), user.is_some()];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(err(
                "credentials_file",
                "choose one of credentials_file, token, or user + password".into(),
            ));
        }
        Ok(Connection {
            urls,
            credentials_file,
            token,
            user,
            password,
            tls,
            name: format!("tradewatch {}/{id}", kind.as_str()),
        })
    }

    /// A client that connects in the background and reconnects forever. `events` records
    /// the last thing the client said about its connection (for `/status`).
    pub async fn connect(&self, events: Arc<Events>) -> Result<async_nats::Client, String> {
        let mut o = match &self.credentials_file {
            Some(p) => async_nats::ConnectOptions::with_credentials_file(p)
                .await
                .map_err(|e| format!("cannot read credentials_file {}: {e}", p.display()))?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some(t) = &self.token {
            o = o.token(t.expose().to_owned());
        }
        if let (Some(u), Some(p)) = (&self.user, &self.password) {
            o = o.user_and_password(u.clone(), p.expose().to_owned());
        }
        if let Some(tls) = &self.tls {
            o = o.require_tls(true).tls_client_config((**tls).clone());
        }
        o = o
            .name(&self.name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(3))
            // At most 2 s between attempts, so a returning server is found quickly.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((100u64 << attempts.min(5) as u32).min(2000))
            })
            .event_callback(move |e| {
                let events = events.clone();
                async move { events.record(&e) }
            });
        o.connect(self.urls.clone())
            .await
            .map_err(|e| format!("cannot connect to NATS: {e}"))
    }
}

/// The last connection event, for error messages: "disconnected (…: connection refused)".
#[derive(Default)]
pub struct Events {
    last: Mutex<Option<String>>,
}

impl Events {
    fn record(&self, e: &async_nats::Event) {
        let text = match e {
            async_nats::Event::Connected => None,
            other => Some(other.to_string()),
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = text;
    }

    /// Why the client is not connected, if it said.
    pub fn last_problem(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A sentence on the client's state when a request failed: what the user should look at.
pub fn connection_problem(client: &async_nats::Client, events: &Events, urls: &[String]) -> String {
    match client.connection_state() {
        async_nats::connection::State::Connected => String::new(),
        _ => format!(
            "; not connected to NATS ({}; trying {})",
            events
                .last_problem()
                .unwrap_or_else(|| "no server answered yet".into()),
            urls.join(", ")
        ),
    }
}

/// Finds the stream, or creates it on `subjects` with `s`.
pub async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: Vec<String>,
    s: &StreamSettings,
) -> Result<jetstream::stream::Stream, String> {
    js.get_or_create_stream(jetstream::stream::Config {
        name: name.to_owned(),
        subjects,
        max_bytes: i64::try_from(s.max_bytes.0).unwrap_or(i64::MAX),
        max_age: s.max_age.get(),
        num_replicas: s.replicas,
        storage: match s.storage {
            Storage::File => jetstream::stream::StorageType::File,
            Storage::Memory => jetstream::stream::StorageType::Memory,
        },
        duplicate_window: s.duplicate_window.get(),
        discard: jetstream::stream::DiscardPolicy::Old,
        retention: jetstream::stream::RetentionPolicy::Limits,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot find or create stream {name:?}: {e}"))
}

/// Checks the stream settings of component `id`.
pub fn check_stream(
    src: &Source,
    kind: Kind,
    id: &ComponentId,
    name: &str,
    s: &StreamSettings,
) -> Result<(), ConfigError> {
    if name.is_empty() || name.contains(['.', ' ', '*', '>', '/', '\\']) {
        return Err(src.component_error(
            kind,
            id,
            &["stream"],
            format!("invalid stream name {name:?}: no dots, spaces, '*', '>' or slashes"),
        ));
    }
    if !matches!(s.replicas, 1..=5) {
        return Err(src.component_error(
            kind,
            id,
            &["stream_settings", "replicas"],
            "replicas must be 1 to 5".into(),
        ));
    }
    Ok(())
}

/// The subject for `signal` from a template with `{signal}` (`tradewatch.{signal}`).
pub fn subject_for(template: &str, signal: Signal) -> String {
    template.replace("{signal}", signal.as_str())
}

/// Checks a subject template: a valid subject for each signal, and one per signal.
pub fn check_subject(template: &str) -> Result<(), String> {
    if !template.contains("{signal}") {
        return Err(format!(
            "subject {template:?} must contain {{signal}} (e.g. \"tradewatch.{{signal}}\") so each signal has its own subject"
        ));
    }
    let s = subject_for(template, Signal::Traces);
    let valid = !s.is_empty()
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
        && !s.contains(|c: char| c.is_whitespace() || c == '*' || c == '>');
    if !valid {
        return Err(format!(
            "invalid subject {template:?}: dot-separated tokens, no spaces or wildcards"
        ));
    }
    Ok(())
}

/// The signal of a message: its `Tradewatch-Signal` header, else a token of its subject
/// that names one (`tradewatch.traces`, `otlp.logs.bot1`).
pub fn signal_of(subject: &str, headers: Option<&async_nats::HeaderMap>) -> Option<Signal> {
    if let Some(v) = headers.and_then(|h| h.get(SIGNAL_HEADER)) {
        return Signal::parse(v.as_str());
    }
    subject.split('.').find_map(Signal::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_signals() {
        assert_eq!(
            subject_for("tradewatch.{signal}", Signal::Logs),
            "tradewatch.logs"
        );
        assert!(check_subject("tradewatch.{signal}").is_ok());
        assert!(check_subject("tradewatch.all").is_err());
        assert!(check_subject("trade watch.{signal}").is_err());
        assert!(check_subject("a.*.{signal}").is_err());
        assert_eq!(signal_of("x.metrics.bot1", None), Some(Signal::Metrics));
        assert_eq!(signal_of("x.spans", None), None);
        let mut h = async_nats::HeaderMap::new();
        h.insert(SIGNAL_HEADER, "logs");
        assert_eq!(signal_of("x.traces", Some(&h)), Some(Signal::Logs));
    }
}
