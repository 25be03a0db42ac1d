//! `nats`: takes OTLP batches from a NATS JetStream stream through a durable pull
//! consumer that every gateway replica shares: each message goes to one replica.
//!
//! A message is acknowledged only once its pipelines delivered it (every exporter's ack
//! said `Delivered`); a batch an exporter gave up on is NAKed with `nak_delay`, so
//! JetStream delivers it again (to this replica or another). A replica holds at most
//! `max_ack_pending` unacknowledged messages: it asks the server only for what it has room
//! for, and while its pipelines push back (memory limit, full queues) it asks for nothing
//! more. While a message waits, the replica tells JetStream it is still working on it
//! (`+WPI`), so a slow batch is not handed to another replica. A replica that dies
//! (SIGKILL) loses nothing: what it held unacknowledged is redelivered to the others after
//! `ack_wait`.
//!
//! Duplicates: a batch the dead replica had exported but not yet acknowledged is exported
//! again by the replica it is redelivered to (at least once). Redeliveries are counted in
//! `redelivered_messages`; a message whose id this replica already exported (an ack lost
//! on the way) is acknowledged without exporting it again (`duplicate_messages`).
//!
//! A message that is not an OTLP export request (or whose signal no pipeline takes) is
//! poison: counted in `poison_messages{reason}`, logged (rate-limited) and terminated
//! (`+TERM`), so it is never delivered again.

use crate::component::{BuildContext, BuildError, ReceiverConfig};
use crate::component::{ComponentId, Kind, Signal};
use crate::component::{Outputs, Receiver, Running};
use crate::config::{component_config, ConfigError, HumanDuration, Secret, Source};
use crate::net::nats::{self, default_stream, default_subject};
use crate::net::nats::{Connection, ConnectionKeys, Events, StreamSettings, Urls};
use crate::net::tls::ClientTlsConfig;
use crate::otlp::log_limit::LogLimiter;
use crate::pipeline::{Ack, Batch, Delivery, Payload};
use crate::service::health::{ComponentHealth, State};
use async_nats::jetstream::{self, consumer::pull, AckKind};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use lru::LruCache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsReceiverConfig {
    #[serde(default)]
    pub url: Urls,
    #[serde(default = "default_stream")]
    pub stream: String,
    /// The durable consumer's name: replicas with the same name share the work.
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// Only these subjects (a NATS subject filter, e.g. `"tradewatch.traces"`); empty:
    /// the whole stream.
    #[serde(default)]
    pub filter_subject: String,
    /// The subjects (`{signal}` template) the stream is created on when it is missing;
    /// the same as the agents' exporter `subject`.
    #[serde(default = "default_subject")]
    pub subject: String,
    #[serde(default)]
    pub stream_settings: StreamSettings,
    /// Unacknowledged messages this replica holds at most.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: usize,
    /// How long JetStream waits for an acknowledgement before delivering a message to
    /// another replica (a replica that died).
    #[serde(default = "default_ack_wait")]
    pub ack_wait: HumanDuration,
    /// How long a batch an exporter gave up on waits before JetStream delivers it again.
    #[serde(default = "default_nak_delay")]
    pub nak_delay: HumanDuration,
    /// Message ids of exported batches remembered to drop exact replays.
    #[serde(default = "default_remember")]
    pub remember_ids: usize,
    #[serde(default)]
    pub credentials_file: String,
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub tls: Option<ClientTlsConfig>,
}

fn default_consumer() -> String {
    "tradewatch".into()
}
fn default_max_ack_pending() -> usize {
    256
}
fn default_ack_wait() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_nak_delay() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn default_remember() -> usize {
    16_384
}

/// Replicas the consumer's own (shared) `MaxAckPending` leaves room for.
const REPLICAS_ROOM: usize = 16;

#[derive(Debug, Clone)]
struct Checked {
    cfg: NatsReceiverConfig,
    conn: Connection,
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ReceiverConfig>, ConfigError> {
    let c: NatsReceiverConfig = component_config(src, Kind::Receiver, id)?;
    let conn = Connection::check(
        src,
        Kind::Receiver,
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
    nats::check_stream(src, Kind::Receiver, id, &c.stream, &c.stream_settings)?;
    nats::check_subject(&c.subject)
        .map_err(|m| src.component_error(Kind::Receiver, id, &["subject"], m))?;
    let err = |key: &str, m: &str| src.component_error(Kind::Receiver, id, &[key], m.into());
    if c.consumer.is_empty() || c.consumer.contains(['.', ' ', '*', '>', '/', '\\']) {
        return Err(err(
            "consumer",
            "invalid consumer name: no dots, spaces, '*', '>' or slashes",
        ));
    }
    if c.max_ack_pending == 0 || c.max_ack_pending > 100_000 {
        return Err(err(
            "max_ack_pending",
            "max_ack_pending must be 1 to 100000",
        ));
    }
    if c.ack_wait.get() < Duration::from_secs(1) {
        return Err(err("ack_wait", "ack_wait must be at least 1s"));
    }
    if c.remember_ids == 0 {
        return Err(err("remember_ids", "remember_ids must be at least 1"));
    }
    Ok(Arc::new(Checked { cfg: c, conn }))
}

impl ReceiverConfig for Checked {
    fn signals(&self) -> Vec<Signal> {
        Signal::ALL.to_vec()
    }

    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError> {
        Ok(Box::new(NatsReceiver {
            cfg: self.cfg.clone(),
            conn: self.conn.clone(),
            id: ctx.id.clone(),
            health: ctx.health.clone(),
        }))
    }
}

struct NatsReceiver {
    cfg: NatsReceiverConfig,
    conn: Connection,
    id: ComponentId,
    health: Arc<ComponentHealth>,
}

/// What each message's task needs.
struct Shared {
    id: ComponentId,
    outputs: Outputs,
    shutdown: CancellationToken,
    ack_wait: Duration,
    nak_delay: Duration,
    exported: Mutex<LruCache<String, ()>>,
    received: Counter,
    redelivered: Counter,
    duplicates: Counter,
    naked: Counter,
    ack_failures: Counter,
    poison: [Counter; 3],
    in_flight: Gauge,
    log: LogLimiter,
}

#[derive(Clone, Copy)]
enum Poison {
    NotOtlp,
    UnknownSignal,
    NoPipeline,
}

impl Poison {
    const ALL: [Poison; 3] = [Poison::NotOtlp, Poison::UnknownSignal, Poison::NoPipeline];

    fn reason(self) -> &'static str {
        match self {
            Poison::NotOtlp => "not_otlp",
            Poison::UnknownSignal => "unknown_signal",
            Poison::NoPipeline => "no_pipeline",
        }
    }
}

impl Receiver for NatsReceiver {
    fn start(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<Running, BuildError>> {
        Box::pin(async move {
            let NatsReceiver {
                cfg,
                conn,
                id,
                health,
            } = *self;
            let events = Arc::new(Events::default());
            let client = conn
                .connect(events.clone())
                .await
                .map_err(|m| BuildError::new(&id, m))?;
            let h = &health;
            let shared = Arc::new(Shared {
                id: id.clone(),
                outputs,
                shutdown: shutdown.clone(),
                ack_wait: cfg.ack_wait.get(),
                nak_delay: cfg.nak_delay.get(),
                exported: Mutex::new(LruCache::new(
                    NonZeroUsize::new(cfg.remember_ids).unwrap_or(NonZeroUsize::MIN),
                )),
                received: h.counter("messages", "Messages taken from the stream", &[]),
                redelivered: h.counter(
                    "redelivered_messages",
                    "Messages JetStream delivered more than once (a replica died or was slow with them, or a NAK): possible duplicates downstream",
                    &[],
                ),
                duplicates: h.counter(
                    "duplicate_messages",
                    "Messages whose batch this replica had already exported (same message id): acknowledged, not exported again",
                    &[],
                ),
                naked: h.counter(
                    "naked_messages",
                    "Messages given back to JetStream (NAK, delivered again after nak_delay) because an exporter gave up on them",
                    &[],
                ),
                ack_failures: h.counter(
                    "ack_failures",
                    "Acknowledgements that could not be sent (the message will be delivered again)",
                    &[],
                ),
                poison: Poison::ALL.map(|p| {
                    h.counter(
                        "poison_messages",
                        "Messages that are not OTLP export requests, or of no signal a pipeline takes: terminated, never delivered again",
                        &[("reason", p.reason())],
                    )
                }),
                in_flight: h.gauge(
                    "in_flight_messages",
                    "Messages this replica holds unacknowledged",
                    &[],
                ),
                log: LogLimiter::new(Duration::from_secs(10)),
            });
            tracing::info!(receiver = %id, servers = %conn.urls.join(","), stream = %cfg.stream, consumer = %cfg.consumer, "NATS receiver started");
            let run = Run {
                cfg,
                conn,
                client,
                events,
                health,
                shared,
            };
            let running: Running = Box::pin(run.run(shutdown));
            Ok(running)
        })
    }
}

struct Run {
    cfg: NatsReceiverConfig,
    conn: Connection,
    client: async_nats::Client,
    events: Arc<Events>,
    health: Arc<ComponentHealth>,
    shared: Arc<Shared>,
}

impl Run {
    fn problem(&self) -> String {
        nats::connection_problem(&self.client, &self.events, &self.conn.urls)
    }

    /// The stream (created if missing) and this replica group's durable consumer.
    async fn consumer(
        &self,
        js: &jetstream::Context,
    ) -> Result<jetstream::consumer::PullConsumer, String> {
        let subjects = Signal::ALL
            .map(|s| nats::subject_for(&self.cfg.subject, s))
            .to_vec();
        let stream =
            nats::ensure_stream(js, &self.cfg.stream, subjects, &self.cfg.stream_settings).await?;
        let max_ack_pending = self.cfg.max_ack_pending.saturating_mul(REPLICAS_ROOM);
        stream
            .get_or_create_consumer(
                &self.cfg.consumer,
                pull::Config {
                    durable_name: Some(self.cfg.consumer.clone()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.cfg.ack_wait.get(),
                    max_ack_pending: i64::try_from(max_ack_pending).unwrap_or(i64::MAX),
                    filter_subject: self.cfg.filter_subject.clone(),
                    deliver_policy: jetstream::consumer::DeliverPolicy::All,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                format!(
                    "cannot find or create consumer {:?} on stream {:?}: {e}",
                    self.cfg.consumer, self.cfg.stream
                )
            })
    }

    async fn run(self, shutdown: CancellationToken) {
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .build(self.client.clone());
        let permits = Arc::new(Semaphore::new(self.cfg.max_ack_pending));
        let tasks = TaskTracker::new();
        let mut failures = 0u32;
        'setup: loop {
            if failures > 0 {
                let wait = Duration::from_millis((250u64 << failures.min(3)).min(2000));
                tokio::select! {
                    _ = shutdown.cancelled() => break 'setup,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let consumer = tokio::select! {
                _ = shutdown.cancelled() => break 'setup,
                c = self.consumer(&js) => c,
            };
            let consumer = match consumer {
                Ok(c) => c,
                Err(e) => {
                    failures += 1;
                    self.health
                        .report_error(State::Degraded, format!("{e}{}", self.problem()));
                    continue;
                }
            };
            loop {
                // Room for one more message first: while the pipelines push back, nothing
                // more is asked for.
                let first = tokio::select! {
                    _ = shutdown.cancelled() => break 'setup,
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break 'setup,
                    },
                };
                let room = 1 + permits.available_permits();
                let batch = consumer
                    .batch()
                    .max_messages(room)
                    .expires(Duration::from_secs(5))
                    .messages()
                    .await;
                let mut batch = match batch {
                    Ok(b) => b,
                    Err(e) => {
                        failures += 1;
                        self.health.report_error(
                            State::Degraded,
                            format!("asking for messages failed: {e}{}", self.problem()),
                        );
                        continue 'setup;
                    }
                };
                let mut held = Some(first);
                let mut got = 0usize;
                loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => break 'setup,
                        m = batch.next() => m,
                    };
                    match next {
                        None => break,
                        Some(Ok(msg)) => {
                            got += 1;
                            let permit = match held.take() {
                                Some(p) => p,
                                // Asked for no more than was free, and only tasks give back.
                                None => match permits.clone().acquire_owned().await {
                                    Ok(p) => p,
                                    Err(_) => break 'setup,
                                },
                            };
                            let shared = self.shared.clone();
                            shared.in_flight.inc();
                            tasks.spawn(async move {
                                handle(&shared, msg).await;
                                shared.in_flight.dec();
                                drop(permit);
                            });
                        }
                        Some(Err(e)) => {
                            failures += 1;
                            self.health.report_error(
                                State::Degraded,
                                format!("taking messages failed: {e}{}", self.problem()),
                            );
                            continue 'setup;
                        }
                    }
                }
                if got > 0
                    || self.client.connection_state() == async_nats::connection::State::Connected
                {
                    if failures > 0 || self.health.state() != State::Ok {
                        self.health.report_ok();
                    }
                    failures = 0;
                } else {
                    self.health
                        .report_error(State::Degraded, format!("no messages{}", self.problem()));
                }
            }
        }
        // What is in flight ends acknowledged or given back before the pipelines close.
        tasks.close();
        tasks.wait().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.flush()).await;
    }
}

/// One message: into the pipelines, then ACK, NAK or TERM.
async fn handle(s: &Shared, msg: jetstream::Message) {
    s.received.inc();
    if msg.info().map(|i| i.delivered > 1).unwrap_or(false) {
        s.redelivered.inc();
    }
    let id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_owned());
    if let Some(id) = &id {
        let seen = s
            .exported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_some();
        if seen {
            s.duplicates.inc();
            settle(s, &msg, AckKind::Ack).await;
            return;
        }
    }
    let Some(signal) = nats::signal_of(&msg.subject, msg.headers.as_ref()) else {
        return poison(
            s,
            &msg,
            Poison::UnknownSignal,
            "neither its Tradewatch-Signal header nor its subject names traces, metrics or logs"
                .into(),
        )
        .await;
    };
    let Some(consumer) = s.outputs.get(signal) else {
        return poison(
            s,
            &msg,
            Poison::NoPipeline,
            format!("no pipeline takes {signal} from this receiver"),
        )
        .await;
    };
    let payload = match Payload::from_encoded(signal, msg.payload.clone()) {
        Ok(p) => p,
        Err(e) => {
            return poison(
                s,
                &msg,
                Poison::NotOtlp,
                format!("not an OTLP {signal} export request: {e}"),
            )
            .await
        }
    };
    let (ack, waiter) = Ack::new();
    let outcome = async {
        // Waits for room while the pipelines push back (memory limit, full queues).
        match consumer
            .deliver(Batch::with_ack(payload, ack), Some(&s.shutdown))
            .await
        {
            Ok(()) => waiter.wait().await,
            Err(_) => Delivery::GaveUp,
        }
    };
    tokio::pin!(outcome);
    // Still working on it: JetStream must not hand it to another replica meanwhile.
    let period = (s.ack_wait / 3).max(Duration::from_millis(300));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let outcome = loop {
        tokio::select! {
            o = &mut outcome => break o,
            _ = tick.tick() => { let _ = msg.ack_with(AckKind::Progress).await; }
        }
    };
    match outcome {
        Delivery::Delivered => {
            if settle(s, &msg, AckKind::Ack).await {
                if let Some(id) = id {
                    s.exported
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .put(id, ());
                }
            }
        }
        Delivery::GaveUp => {
            s.naked.inc();
            settle(s, &msg, AckKind::Nak(Some(s.nak_delay))).await;
        }
    }
}

async fn settle(s: &Shared, msg: &jetstream::Message, kind: AckKind) -> bool {
    match msg.ack_with(kind).await {
        Ok(()) => true,
        Err(e) => {
            s.ack_failures.inc();
            if let Some(suppressed) = s.log.allow("ack") {
                tracing::warn!(receiver = %s.id, suppressed, "acknowledging a message failed (it will be delivered again): {e}");
            }
            false
        }
    }
}

async fn poison(s: &Shared, msg: &jetstream::Message, why: Poison, message: String) {
    s.poison[why as usize].inc();
    if let Some(suppressed) = s.log.allow(why.reason()) {
        let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
        let message: String = message.chars().take(300).collect();
        tracing::warn!(
            receiver = %s.id,
            subject = %msg.subject,
            stream_sequence = seq,
            suppressed,
            "poison message terminated (never delivered again): {message}"
        );
    }
    settle(s, msg, AckKind::Term).await;
}
