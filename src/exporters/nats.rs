//! `nats`: publishes each batch to a NATS JetStream stream, as the OTLP protobuf export
//! request (the bytes as received when nothing changed them), one message per batch on
//! the signal's subject (`tradewatch.traces`, …).
//!
//! A batch counts as delivered only on JetStream's publish acknowledgement (the message
//! is stored, on every replica the stream asks for). No acknowledgement (server down, no
//! leader during an election, timeout) is a retryable error, retried with backoff by the
//! shared sending machinery, which also shows the exporter DEGRADED with the reason.
//!
//! Each message carries a `Nats-Msg-Id` made from the signal and the bytes (SHA-256), so
//! a publish retried after a lost acknowledgement is stored once: JetStream drops a
//! message whose id it saw within the stream's `duplicate_window`.

use crate::component::{BuildContext, BuildError, ExporterConfig};
use crate::component::{ComponentId, Kind, Signal};
use crate::component::{ExportError, Exporter};
use crate::config::{component_config, ConfigError, HumanDuration, Secret, Source};
use crate::net::nats::{self, default_stream, default_subject};
use crate::net::nats::{Connection, ConnectionKeys, Events, StreamSettings, Urls};
use crate::net::tls::ClientTlsConfig;
use crate::pipeline::sending::{QueueConfig, RetryConfig, SendingSettings};
use crate::pipeline::Payload;
use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use futures_util::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsExporterConfig {
    /// `"nats://host:4222"` or the list of a cluster's servers.
    #[serde(default)]
    pub url: Urls,
    #[serde(default = "default_stream")]
    pub stream: String,
    /// `{signal}` becomes `traces`, `metrics` or `logs`.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// How the stream is created when it is missing.
    #[serde(default)]
    pub stream_settings: StreamSettings,
    /// A `.creds` file (JWT + NKey seed).
    #[serde(default)]
    pub credentials_file: String,
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub password: Option<Secret>,
    /// TLS settings for `tls://` servers (the system's roots without this table).
    #[serde(default)]
    pub tls: Option<ClientTlsConfig>,
    /// How long one publish waits for JetStream's acknowledgement.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub sending_queue: QueueConfig,
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}

#[derive(Debug, Clone)]
struct Checked {
    cfg: NatsExporterConfig,
    conn: Connection,
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let c: NatsExporterConfig = component_config(src, Kind::Exporter, id)?;
    let conn = Connection::check(
        src,
        Kind::Exporter,
        id,
        ConnectionKeys {
            url: &c.url,
            credentials_file: &c.credentials_file,
            token: &c.token,
            user: &c.user,
            password: &c.password,
            tls: &c.tls,
        },
    )?;
    nats::check_stream(src, Kind::Exporter, id, &c.stream, &c.stream_settings)?;
    nats::check_subject(&c.subject)
        .map_err(|m| src.component_error(Kind::Exporter, id, &["subject"], m))?;
    let checked = Checked { cfg: c, conn };
    if let Err((keys, m)) = checked.sending().validate() {
        return Err(src.component_error(Kind::Exporter, id, keys, m));
    }
    Ok(Arc::new(checked))
}

impl ExporterConfig for Checked {
    fn signals(&self) -> Vec<Signal> {
        Signal::ALL.to_vec()
    }

    fn sending(&self) -> SendingSettings {
        SendingSettings {
            queue: self.cfg.sending_queue.clone(),
            retry: self.cfg.retry_on_failure.clone(),
            // The publish's own timeout says more ("no acknowledgement"): it fires first.
            timeout: self.cfg.timeout.get() + Duration::from_secs(1),
        }
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Exporter>, BuildError> {
        let subjects = Signal::ALL.map(|s| nats::subject_for(&self.cfg.subject, s));
        Ok(Arc::new(NatsExporter {
            inner: Arc::new(Inner {
                conn: self.conn.clone(),
                stream: self.cfg.stream.clone(),
                subjects,
                settings: self.cfg.stream_settings.clone(),
                timeout: self.cfg.timeout.get(),
                client: OnceLock::new(),
                stream_ready: AtomicBool::new(false),
                events: Arc::default(),
                duplicates: ctx.health.counter(
                    "duplicate_publishes",
                    "Batches JetStream already held (a retried publish whose first acknowledgement was lost): stored once",
                    &[],
                ),
            }),
        }))
    }
}

struct NatsExporter {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Connection,
    stream: String,
    /// By [`Signal::index`].
    subjects: [String; 3],
    settings: StreamSettings,
    timeout: Duration,
    client: OnceLock<(async_nats::Client, jetstream::Context)>,
    /// The stream was found or created since the last "no stream" answer.
    stream_ready: AtomicBool,
    events: Arc<Events>,
    duplicates: Counter,
}

/// `traces-<32 hex digits>`: the first 128 bits of SHA-256 over the request bytes.
pub fn message_id(signal: Signal, bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut id = String::with_capacity(8 + 32);
    id.push_str(signal.as_str());
    id.push('-');
    for b in &digest[..16] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

impl Inner {
    fn problem(&self, client: &async_nats::Client) -> String {
        nats::connection_problem(client, &self.events, &self.conn.urls)
    }

    async fn publish(&self, payload: &Payload) -> Result<(), ExportError> {
        let (client, js) = self
            .client
            .get()
            .ok_or_else(|| ExportError::retryable("the NATS client is not started yet"))?;
        if client.connection_state() != async_nats::connection::State::Connected {
            // Nothing would be acknowledged: say why at once and let the backoff run.
            return Err(ExportError::retryable(format!(
                "cannot publish: {}",
                self.problem(client).trim_start_matches("; ")
            )));
        }
        if !self.stream_ready.load(Ordering::Acquire) {
            let subjects = self.subjects.to_vec();
            let found = tokio::time::timeout(
                self.timeout,
                nats::ensure_stream(js, &self.stream, subjects, &self.settings),
            )
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer within {:?} about stream {:?}",
                    self.timeout, self.stream
                ))
            });
            found.map_err(|e| ExportError::retryable(format!("{e}{}", self.problem(client))))?;
            self.stream_ready.store(true, Ordering::Release);
        }
        let signal = payload.signal();
        let subject = &self.subjects[signal.index()];
        let bytes = payload.to_bytes();
        let len = bytes.len();
        let publish = jetstream::message::PublishMessage::build()
            .message_id(message_id(signal, &bytes))
            .header(nats::SIGNAL_HEADER, signal.as_str())
            .payload(bytes);
        let fail = |e: jetstream::context::PublishError| match e.kind() {
            PublishErrorKind::MaxPayloadExceeded => ExportError::permanent(format!(
                "a batch of {len} bytes is larger than the NATS server's max_payload: \
                 lower the batch processor's send_batch_size (or raise max_payload): {e}"
            )),
            PublishErrorKind::StreamNotFound => {
                // Deleted, or not listening on our subject: find or create it again.
                self.stream_ready.store(false, Ordering::Release);
                ExportError::retryable(format!(
                    "no JetStream stream takes subject {subject:?} (is stream {:?} missing or on other subjects?){}",
                    self.stream,
                    self.problem(client)
                ))
            }
            PublishErrorKind::TimedOut => ExportError::retryable(format!(
                "no JetStream acknowledgement within {:?} for a publish to {subject:?}{}",
                self.timeout,
                self.problem(client)
            )),
            _ => ExportError::retryable(format!(
                "publishing to {subject:?} failed: {e}{}",
                self.problem(client)
            )),
        };
        let ack = js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(fail)?
            .await
            .map_err(fail)?;
        if ack.duplicate {
            self.duplicates.inc();
        }
        Ok(())
    }
}

impl Exporter for NatsExporter {
    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.publish(&payload).await })
    }

    fn start(&self) -> BoxFuture<'static, Result<(), BuildError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            // Returns at once: the client connects (and reconnects) in the background,
            // so a NATS server that is down does not stop the collector from starting.
            let client = inner
                .conn
                .connect(inner.events.clone())
                .await
                .map_err(|m| BuildError {
                    component: String::new(),
                    message: m,
                })?;
            let js = jetstream::ContextBuilder::new()
                .timeout(inner.timeout)
                .build(client.clone());
            let _ = inner.client.set((client, js));
            Ok(())
        })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let inner = self.inner.clone();
        Box::pin(async move {
            if let Some((client, _)) = inner.client.get() {
                let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_follow_the_bytes() {
        let a = message_id(Signal::Traces, b"abc");
        assert_eq!(a, message_id(Signal::Traces, b"abc"));
        assert_ne!(a, message_id(Signal::Traces, b"abd"));
        assert_ne!(a, message_id(Signal::Logs, b"abc"));
        assert!(a.starts_with("traces-") && a.len() == 7 + 32, "{a}");
    }
}
