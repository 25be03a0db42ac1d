//! `freqtrade`: polls one or many Freqtrade bots' REST API and turns what they report into
//! metrics (see [`metrics`]), and offers the same clients to other components as a
//! [`BotControlHandle`] (pause, stop entries, stop, start, force exit, and each bot's
//! consecutive poll failures, for a risk processor that fails closed).
//!
//! Each bot is polled by its own task on its own timer (start times spread over the
//! interval), a semaphore bounding how many polls run at once. A poll reads ping,
//! show_config, profit, status, balance and count; any failure fails the poll: the bot's
//! `freqtrade.up` is 0, its consecutive failures grow, the reason is counted, and the
//! other bots go on. The receiver is `ok` while every bot answers, `degraded` while some
//! don't, and `failed` while none does (a critical receiver then makes the service
//! UNHEALTHY; `critical = false` keeps it DEGRADED).

pub mod client;
pub mod metrics;
pub mod models;
pub mod panel;

use crate::component::{
    BuildContext, BuildError, ComponentId, Kind, Outputs, Receiver, ReceiverConfig, Running, Signal,
};
use crate::config::{component_config, ConfigError, HumanDuration, Secret, Source};
use crate::otlp::Timestamp;
use crate::pipeline::{Batch, Consumer, Payload};
use crate::service::health::{ComponentHealth, State};
use client::{ApiError, Auth, Client};
use futures_util::future::BoxFuture;
use models::{Balance, Count, Profit, ShowConfig, Snapshot, Trade};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_concurrency() -> usize {
    16
}

/// `[receivers."freqtrade/NAME"]`: one bot from the top-level keys, or a fleet in `bots`
/// whose entries fall back to the top-level `username`, `password`, `auth`, `timeout`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreqtradeConfig {
    url: Option<String>,
    username: Option<String>,
    password: Option<Secret>,
    bot: Option<String>,
    auth: Option<Auth>,
    timeout: Option<HumanDuration>,
    #[serde(default = "default_interval")]
    interval: HumanDuration,
    #[serde(default = "default_concurrency")]
    max_concurrent_polls: usize,
    #[serde(default)]
    bots: Vec<BotEntry>,
    /// Poll a simulated bot tradewatch serves itself on a free loopback port (`tradewatch
    /// demo`'s), instead of `url`: the shipped configuration shows the trading pipeline
    /// with nothing else running. Its drawdown passes 20% about 45 s after start.
    #[serde(default)]
    simulate: bool,
    /// Filled by [`parse`]: the checked bots.
    #[serde(skip)]
    resolved: Vec<BotSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BotEntry {
    url: String,
    bot: String,
    username: Option<String>,
    password: Option<Secret>,
    auth: Option<Auth>,
    timeout: Option<HumanDuration>,
}

/// One bot, every key known.
#[derive(Debug, Clone)]
pub struct BotSettings {
    pub name: String,
    pub url: String,
    pub username: String,
    pub password: Secret,
    pub auth: Auth,
    pub timeout: Duration,
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ReceiverConfig>, ConfigError> {
    Ok(Arc::new(parse_config(src, id)?))
}

fn parse_config(src: &Source, id: &ComponentId) -> Result<FreqtradeConfig, ConfigError> {
    let mut c: FreqtradeConfig = component_config(src, Kind::Receiver, id)?;
    let err = |keys: &[&str], msg: &str| src.component_error(Kind::Receiver, id, keys, msg.into());
    if c.interval.get().is_zero() {
        return Err(err(&["interval"], "interval must be more than 0"));
    }
    if c.max_concurrent_polls == 0 {
        return Err(err(
            &["max_concurrent_polls"],
            "max_concurrent_polls must be at least 1",
        ));
    }
    let timeout = c.timeout.unwrap_or_else(default_timeout).get();
    let auth = c.auth.unwrap_or(Auth::Jwt);
    if c.simulate {
        if c.url.is_some() || !c.bots.is_empty() {
            return Err(err(
                &["simulate"],
                "simulate = true polls the built-in simulated bot: remove url and bots (or simulate)",
            ));
        }
        let sim = crate::demo::sim::SimConfig::default();
        c.url = Some(SIMULATED_URL.into());
        c.username.get_or_insert(sim.username);
        if c.password.as_ref().is_none_or(|p| p.is_empty()) {
            c.password = Some(Secret::new(sim.password));
        }
    }
    let entries = if c.bots.is_empty() {
        let Some(url) = c.url.clone() else {
            return Err(err(
                &[],
                "give the bot's API root in url (or a list of bots in [[...bots]])",
            ));
        };
        let name = c.bot.clone().unwrap_or_else(|| {
            id.as_str()
                .split_once('/')
                .map(|(_, n)| n.to_owned())
                .unwrap_or_else(|| "default".into())
        });
        vec![BotEntry {
            url,
            bot: name,
            username: None,
            password: None,
            auth: None,
            timeout: None,
        }]
    } else {
        if c.url.is_some() || c.bot.is_some() {
            return Err(err(
                &["bots"],
                "with a list of bots, write url and bot in each entry, not in the table",
            ));
        }
        c.bots.clone()
    };
    let mut seen = std::collections::HashSet::new();
    for (i, e) in entries.into_iter().enumerate() {
        let at = |k: &str| -> Vec<String> {
            if c.bots.is_empty() {
                vec![k.to_owned()]
            } else {
                vec!["bots".into(), i.to_string(), k.to_owned()]
            }
        };
        let bad = |k: &str, msg: &str| {
            let ks = at(k);
            let ks: Vec<&str> = ks.iter().map(String::as_str).collect();
            err(&ks, msg)
        };
        if !(e.url.starts_with("http://") || e.url.starts_with("https://")) {
            return Err(bad("url", "url must start with http:// or https://"));
        }
        if !seen.insert(e.bot.clone()) {
            return Err(bad("bot", "two bots have the same name"));
        }
        let username = e
            .username
            .or_else(|| c.username.clone())
            .unwrap_or_default();
        let password = e
            .password
            .or_else(|| c.password.clone())
            .unwrap_or_default();
        if username.is_empty() || password.is_empty() {
            return Err(bad(
                "username",
                "username and password are required (set them from the environment: \"${FT_USER}\", \"${FT_PASS}\")",
            ));
        }
        c.resolved.push(BotSettings {
            name: e.bot,
            url: e.url,
            username,
            password,
            auth: e.auth.unwrap_or(auth),
            timeout: e.timeout.map(HumanDuration::get).unwrap_or(timeout),
        });
    }
    Ok(c)
}

impl FreqtradeConfig {
    pub fn bots(&self) -> &[BotSettings] {
        &self.resolved
    }
}

impl ReceiverConfig for FreqtradeConfig {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Metrics]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError> {
        // The simulated bot's port is taken now, so its URL is known to the client.
        let (simulator, sim_url) = if self.simulate {
            let bound = std::net::TcpListener::bind(("127.0.0.1", 0)).and_then(|l| {
                l.set_nonblocking(true)?;
                let url = format!("http://{}", l.local_addr()?);
                Ok((l, url))
            });
            let (l, url) =
                bound.map_err(|e| BuildError::new(&ctx.id, format!("simulated bot: {e}")))?;
            (Some(l), Some(url))
        } else {
            (None, None)
        };
        let http = reqwest::Client::builder()
            // A poll's requests go one after another: one kept-alive connection per bot.
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|e| BuildError::new(&ctx.id, format!("HTTP client: {e}")))?;
        let bots: Vec<Arc<Bot>> = self
            .resolved
            .iter()
            .map(|s| {
                let labels = [("bot", s.name.as_str())];
                Arc::new(Bot {
                    client: Client::new(
                        http.clone(),
                        sim_url.as_deref().unwrap_or(&s.url),
                        s.username.clone(),
                        s.password.clone(),
                        s.auth,
                        s.timeout,
                    ),
                    name: s.name.clone(),
                    status: Mutex::new(BotStatus::default()),
                    polls: ctx
                        .health
                        .counter("polls", "Polls of a Freqtrade bot", &labels),
                    up: ctx
                        .health
                        .gauge("bot_up", "1 when the bot's last poll succeeded", &labels),
                    failures_gauge: ctx.health.gauge(
                        "consecutive_failures",
                        "Polls of the bot failed in a row",
                        &labels,
                    ),
                })
            })
            .collect();
        let control = Arc::new(FleetControl {
            bots: bots.iter().map(|b| (b.name.clone(), b.clone())).collect(),
        });
        ctx.controls
            .provide(ctx.id.as_str(), Arc::new(BotControlHandle(control)));
        Ok(Box::new(FreqtradeReceiver {
            id: ctx.id.clone(),
            health: ctx.health.clone(),
            board: ctx.telemetry.board(),
            bots,
            interval: self.interval.get(),
            concurrency: self.max_concurrent_polls,
            simulator,
        }))
    }
}

#[derive(Default)]
struct BotStatus {
    consecutive_failures: u32,
    last_success: Option<SystemTime>,
    last_latency: Option<Duration>,
    last_error: Option<String>,
    strategy: Option<String>,
    exchange: Option<String>,
    version: Option<String>,
}

struct Bot {
    name: String,
    client: Client,
    status: Mutex<BotStatus>,
    polls: prometheus_client::metrics::counter::Counter,
    up: prometheus_client::metrics::gauge::Gauge,
    failures_gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Bot {
    fn status(&self) -> std::sync::MutexGuard<'_, BotStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads everything one poll needs, one request after another on one kept-alive
    /// connection: a fleet of hundreds of bots then holds one socket per bot, and a poll
    /// costs fewer wake-ups than four requests in parallel would (the bot is usually on
    /// the same host or network, so the added round trips cost little). `/count` answers
    /// 502 while the bot is stopped, which is no failure: the open trades still come from
    /// `/status`.
    async fn read(&self) -> Result<Snapshot, ApiError> {
        let c = &self.client;
        c.ping().await?;
        let config: ShowConfig = c.get("show_config").await?;
        let profit = c.get::<Profit>("profit").await?;
        let trades = c.get::<Vec<Trade>>("status").await?;
        let balance = c.get::<Balance>("balance").await?;
        let count = match c.get::<Count>("count").await {
            Ok(n) => Some(n),
            Err(e) if e.status() == Some(502) && config.state.as_deref() != Some("running") => None,
            Err(e) => return Err(e),
        };
        Ok(Snapshot {
            config,
            profit,
            trades,
            balance,
            count,
        })
    }
}

struct FreqtradeReceiver {
    id: ComponentId,
    health: Arc<ComponentHealth>,
    board: Arc<crate::service::board::Board>,
    bots: Vec<Arc<Bot>>,
    interval: Duration,
    concurrency: usize,
    /// `simulate = true`: the simulated bot's listener, served from start.
    simulator: Option<std::net::TcpListener>,
}

/// What every bot task shares.
struct Shared {
    health: Arc<ComponentHealth>,
    /// `/ui`'s board: one panel per bot.
    board: Arc<crate::service::board::Board>,
    history: usize,
    bots: Vec<Arc<Bot>>,
    /// Bots whose last poll failed: kept on each transition, so a poll costs O(1) in
    /// health however many bots the receiver polls.
    down: AtomicUsize,
    consumer: Consumer,
    permits: Semaphore,
}

impl Receiver for FreqtradeReceiver {
    fn start(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<Running, BuildError>> {
        let FreqtradeReceiver {
            id,
            health,
            board,
            bots,
            interval,
            concurrency,
            simulator,
        } = *self;
        Box::pin(async move {
            let simulator = match simulator {
                Some(l) => {
                    let sim = crate::demo::sim::SimConfig {
                        drawdown_ramp: Duration::from_secs(45),
                        ..Default::default()
                    };
                    let served = tokio::net::TcpListener::from_std(l);
                    let (addr, handle) = match served {
                        Ok(l) => crate::demo::sim::spawn_listener(l, sim).await,
                        Err(e) => Err(e),
                    }
                    .map_err(|e| BuildError::new(&id, format!("simulated bot: {e}")))?;
                    tracing::info!(receiver = %id, "simulated Freqtrade bot at http://{addr}/api/v1/ (simulate = true); its drawdown passes 20% in about 45 s");
                    Some(handle)
                }
                None => None,
            };
            let Some(consumer) = outputs.get(Signal::Metrics).cloned() else {
                return Err(BuildError::new(
                    &id,
                    "no metrics pipeline takes from this receiver",
                ));
            };
            let shared = Arc::new(Shared {
                health,
                board,
                history: panel::history_len(interval, bots.len()),
                bots: bots.clone(),
                down: AtomicUsize::new(0),
                consumer,
                permits: Semaphore::new(concurrency),
            });
            let listed = bots.clone();
            shared.health.set_detail_with(move || detail(&listed));
            shared.health.report_ok();
            let run: Running = Box::pin(async move {
                let n = bots.len() as u32;
                let mut tasks = tokio::task::JoinSet::new();
                for (i, bot) in bots.into_iter().enumerate() {
                    // Spread the bots' first polls over the interval in at most
                    // SPREAD_SLOTS waves, so that a fleet is never polled in one burst
                    // and the runtime still wakes up for a few bots at a time, not
                    // for each one.
                    let slots = n.min(SPREAD_SLOTS);
                    let offset = interval / slots * (i as u32 * slots / n);
                    tasks.spawn(poll_loop(
                        shared.clone(),
                        bot,
                        interval,
                        offset,
                        shutdown.clone(),
                    ));
                }
                while tasks.join_next().await.is_some() {}
                if let Some(sim) = simulator {
                    sim.shutdown().await;
                }
            });
            Ok(run)
        })
    }
}

/// `url` while parsing `simulate = true`; the real one is known once the port is bound.
const SIMULATED_URL: &str = "http://127.0.0.1:0";

/// Waves per interval in which a fleet's polls start.
const SPREAD_SLOTS: u32 = 50;

async fn poll_loop(
    shared: Arc<Shared>,
    bot: Arc<Bot>,
    interval: Duration,
    offset: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval_at(Instant::now() + offset, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let span = tracing::debug_span!("freqtrade.poll", bot = %bot.name);
        let poll = async {
            let _permit = shared.permits.acquire().await;
            poll_once(&shared, &bot).await
        }
        .instrument(span);
        let req = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = poll => r,
        };
        // A poll's data is dropped (and counted as refused) when the service shuts down
        // before the pipelines had room for it.
        let _ = shared
            .consumer
            .deliver(Batch::new(Payload::Metrics(req)), Some(&shutdown))
            .await;
    }
}

/// Polls one bot, records the outcome in its status and the receiver's health, and
/// returns the metrics to send.
async fn poll_once(
    shared: &Shared,
    bot: &Bot,
) -> opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
    let started = Instant::now();
    let result = bot.read().await;
    let latency = started.elapsed();
    bot.polls.inc();
    let (was_down, failures, strategy, exchange, version) = {
        let mut st = bot.status();
        let was_down = st.consecutive_failures > 0;
        st.last_latency = Some(latency);
        match &result {
            Ok(snap) => {
                st.consecutive_failures = 0;
                st.last_success = Some(SystemTime::now());
                st.strategy = snap.config.strategy.clone();
                st.exchange = snap.config.exchange.clone();
                st.version = snap.config.version.clone();
            }
            Err(e) => {
                st.consecutive_failures = st.consecutive_failures.saturating_add(1);
                st.last_error = Some(e.to_string());
            }
        }
        (
            was_down,
            st.consecutive_failures,
            st.strategy.clone(),
            st.exchange.clone(),
            st.version.clone(),
        )
    };
    bot.up.set(i64::from(result.is_ok()));
    bot.failures_gauge.set(i64::from(failures));
    if let Err(e) = &result {
        shared
            .health
            .counter(
                "poll_failures",
                "Failed polls of a Freqtrade bot, by reason",
                &[("bot", &bot.name), ("reason", &e.reason())],
            )
            .inc();
        tracing::warn!(bot = %bot.name, error = %e, consecutive_failures = failures, "freqtrade poll failed");
    }
    shared.record(bot, was_down, result.as_ref().err());
    panel::publish(
        &shared.board,
        &panel::PollView {
            bot: &bot.name,
            snapshot: result.as_ref().ok(),
            error: result.as_ref().err().map(|e| e.to_string()),
            latency,
            consecutive_failures: failures,
            polls: bot.polls.get(),
            history: shared.history,
        },
    );
    metrics::build(
        &metrics::PollOutcome {
            bot: &bot.name,
            snapshot: result.as_ref().ok(),
            strategy: strategy.as_deref(),
            exchange: exchange.as_deref(),
            version: version.as_deref(),
            consecutive_failures: failures,
            latency_seconds: latency.as_secs_f64(),
        },
        Timestamp::now(),
    )
}

impl Shared {
    /// `ok` while every bot answers, `degraded` while some fail, `failed` while all do;
    /// the last error names the bot that failed last.
    fn record(&self, bot: &Bot, was_down: bool, error: Option<&ApiError>) {
        let n = self.bots.len();
        let down = match (was_down, error.is_some()) {
            (false, true) => self.down.fetch_add(1, Ordering::AcqRel) + 1,
            (true, false) => self.down.fetch_sub(1, Ordering::AcqRel) - 1,
            _ => self.down.load(Ordering::Acquire),
        };
        let state = match down {
            0 => State::Ok,
            d if d == n => State::Failed,
            _ => State::Degraded,
        };
        match error {
            Some(e) => self.health.report_error(
                state,
                format!("{down} of {n} bots failing; latest: bot {}: {e}", bot.name),
            ),
            None if down == 0 => self.health.report_ok(),
            None => self.health.set_state(state),
        }
    }
}

/// `/status` detail: one line per bot, rendered when `/status` is read.
fn detail(bots: &[Arc<Bot>]) -> String {
    let mut lines = Vec::with_capacity(bots.len());
    for b in bots {
        let st = b.status();
        let last = st
            .last_success
            .map(|t| humantime::format_rfc3339_millis(t).to_string())
            .unwrap_or_else(|| "never".into());
        let latency = st
            .last_latency
            .map(|d| format!("{}ms", d.as_millis()))
            .unwrap_or_else(|| "-".into());
        let mut line = format!(
            "{}: last_success={last} latency={latency} consecutive_failures={}",
            b.name, st.consecutive_failures
        );
        if let Some(e) = &st.last_error {
            line.push_str(&format!(" last_error=\"{e}\""));
        }
        lines.push(line);
    }
    lines.join("; ")
}

// ---------------------------------------------------------------------------------------
// Control

/// Why a control action failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    #[error("no bot named {0:?} in this receiver")]
    UnknownBot(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// The actions a risk processor takes on a bot, and the health it decides on. Every
/// action returns the bot's own message (`"paused, no more entries will occur ..."`).
pub trait BotControl: Send + Sync {
    /// The bots this handle controls.
    fn bots(&self) -> Vec<String>;
    /// No new entries; open trades are still managed. Bots older than 2025.4 have no
    /// `/pause` and get `/stopentry`, which does the same.
    fn pause<'a>(&'a self, bot: &'a str) -> BoxFuture<'a, Result<String, ControlError>>;
    /// `/stopentry` (the older name of pause).
    fn stop_entry<'a>(&'a self, bot: &'a str) -> BoxFuture<'a, Result<String, ControlError>>;
    /// Stops the bot's loop.
    fn stop<'a>(&'a self, bot: &'a str) -> BoxFuture<'a, Result<String, ControlError>>;
    /// Resumes a paused or stopped bot.
    fn start<'a>(&'a self, bot: &'a str) -> BoxFuture<'a, Result<String, ControlError>>;
    /// Exits one open trade at market.
    fn force_exit<'a>(
        &'a self,
        bot: &'a str,
        trade_id: u64,
    ) -> BoxFuture<'a, Result<String, ControlError>>;
    /// Polls of the bot failed in a row (0 after a success); `None` for an unknown bot.
    fn consecutive_failures(&self, bot: &str) -> Option<u32>;
}

/// What the receiver offers through `ctx.controls`, under its own id:
/// `ctx.controls.get::<BotControlHandle>("freqtrade/main")`. A newtype because typed
/// handles are sized types; tests may wrap a fake [`BotControl`] in one.
pub struct BotControlHandle(pub Arc<dyn BotControl>);

struct FleetControl {
    bots: HashMap<String, Arc<Bot>>,
}

impl FleetControl {
    fn bot(&self, name: &str) -> Result<&Bot, ControlError> {
        self.bots
            .get(name)
            .map(|b| b.as_ref())
            .ok_or_else(|| ControlError::UnknownBot(name.to_owned()))
    }

    fn post<'a>(
        &'a self,
        bot: &'a str,
        path: String,
    ) -> BoxFuture<'a, Result<String, ControlError>> {
        let span = tracing::debug_span!("freqtrade.control", bot, action = %path);
        Box::pin(
            async move {
                let b = self.bot(bot)?;
                let msg = b.client.post(&path).await?;
                tracing::info!(bot, action = %path, result = %msg, "freqtrade control action");
                Ok(msg)
            }
            .instrument(span),
        )
    }
}

impl BotControl for FleetControl {
    fn bots(&self) -> Vec<String> {
        let mut v: Vec<String> = self.bots.keys().cloned().collect();
        v.sort();
        v
    }

    fn pause<'a>(&'a self, bot: &'a str) -> BoxFuture<'a, Result<String, ControlError>> {
        Box::pin(async move {
            match self.post(bot, "pause".into()).await {
                Err(ControlError::Api(e)) if e.status() == Some(404) => {
                    self.post(bot, "stopentry".into()).await
                }
                r => r,
            }
        })
    }

    fn stop_entry<'a>(&'a self, bot: &'a str) -> BoxFuture<'a, Result<String, ControlError>> {
        self.post(bot, "stopentry".into())
    }

    fn stop<'a>(&'a self, bot: &'a str) -> BoxFuture<'a, Result<String, ControlError>> {
        self.post(bot, "stop".into())
    }

    fn start<'a>(&'a self, bot: &'a str) -> BoxFuture<'a, Result<String, ControlError>> {
        self.post(bot, "start".into())
    }

    fn force_exit<'a>(
        &'a self,
        bot: &'a str,
        trade_id: u64,
    ) -> BoxFuture<'a, Result<String, ControlError>> {
        Box::pin(async move {
            let b = self.bot(bot)?;
            let msg = b.client.force_exit(trade_id).await?;
            tracing::info!(bot, trade_id, result = %msg, "freqtrade force exit");
            Ok(msg)
        })
    }

    fn consecutive_failures(&self, bot: &str) -> Option<u32> {
        self.bots.get(bot).map(|b| b.status().consecutive_failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::alerts::AlertSink;
    use crate::service::health::Telemetry;

    fn parse_text(text: &str, id: &str) -> Result<FreqtradeConfig, String> {
        let src = Source::from_text("t.toml".into(), text, &|k| {
            (k == "FT_PASS").then(|| "pw-from-env".to_owned())
        })
        .map_err(|e| e.to_string())?;
        parse_config(&src, &ComponentId::parse(id).unwrap()).map_err(|e| e.to_string())
    }

    fn context(id: &ComponentId, dir: &std::path::Path) -> BuildContext {
        let telemetry = Telemetry::new();
        let (alerts, rx) = AlertSink::new(8, Default::default());
        BuildContext {
            id: id.clone(),
            health: telemetry.component(Kind::Receiver, id, true),
            telemetry,
            state: crate::state::StateDir::new(dir, "receiver", id.as_str()),
            controls: Default::default(),
            shared_state: Default::default(),
            alerts,
            alert_queue: Arc::new(std::sync::Mutex::new(Some(rx))),
            shutdown: Default::default(),
            memory: crate::pipeline::memory::MemoryBudget::unlimited(),
        }
    }

    /// A metrics output into `tx`, as a pipeline would give the receiver.
    fn metrics_output(tx: tokio::sync::mpsc::Sender<Batch>) -> Outputs {
        let mut outputs = Outputs::default();
        outputs.set(Consumer::new(
            Signal::Metrics,
            vec![tx],
            crate::pipeline::memory::MemoryBudget::unlimited(),
            Duration::from_millis(10),
            Default::default(),
            Default::default(),
        ));
        outputs
    }

    #[test]
    fn simulate_needs_no_url_or_credentials_and_refuses_a_url() {
        let c = parse_text(
            "[receivers.\"freqtrade/demo\"]\nsimulate = true\n",
            "freqtrade/demo",
        )
        .unwrap();
        assert_eq!(c.bots().len(), 1);
        assert_eq!(c.bots()[0].name, "demo");
        assert_eq!(c.bots()[0].username, "freqtrader");
        let e = parse_text(
            "[receivers.\"freqtrade/demo\"]\nsimulate = true\nurl = \"http://h:1\"\n",
            "freqtrade/demo",
        )
        .unwrap_err();
        assert!(e.contains("simulate"), "{e}");
    }

    #[tokio::test]
    async fn a_simulated_bot_is_served_and_polled() {
        let dir = tempfile::tempdir().unwrap();
        let id = ComponentId::parse("freqtrade/demo").unwrap();
        let c = parse_text(
            "[receivers.\"freqtrade/demo\"]\nsimulate = true\ninterval = \"100ms\"\n",
            "freqtrade/demo",
        )
        .unwrap();
        let ctx = context(&id, dir.path());
        let receiver = c.build(&ctx).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let outputs = metrics_output(tx);
        let stop = CancellationToken::new();
        let task = tokio::spawn(receiver.start(outputs, stop.clone()).await.unwrap());
        let batch = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("a poll of the simulated bot within 20 s")
            .expect("a batch");
        assert!(batch.payload.items() > 0);
        stop.cancel();
        task.await.unwrap();
    }

    #[test]
    fn bots_take_names_and_defaults() {
        let c = parse_text(
            r#"[receivers."freqtrade/main"]
url = "http://127.0.0.1:8080/"
username = "u"
password = "${FT_PASS}"
"#,
            "freqtrade/main",
        )
        .unwrap();
        let b = &c.bots()[0];
        assert_eq!(b.name, "main");
        assert_eq!(b.password.expose(), "pw-from-env");
        assert_eq!((b.auth, b.timeout), (Auth::Jwt, Duration::from_secs(5)));
        assert_eq!(c.interval.get(), Duration::from_secs(30));
        let c = parse_text(
            "[receivers.freqtrade]\nurl = \"http://h:1\"\nusername = \"u\"\npassword = \"p\"\nbot = \"x\"\n",
            "freqtrade",
        )
        .unwrap();
        assert_eq!(c.bots()[0].name, "x");
        let c = parse_text(
            "[receivers.freqtrade]\nurl = \"http://h:1\"\nusername = \"u\"\npassword = \"p\"\n",
            "freqtrade",
        )
        .unwrap();
        assert_eq!(c.bots()[0].name, "default");
        let c = parse_text(
            r#"[receivers."freqtrade/fleet"]
username = "u"
password = "p"
auth = "basic"
timeout = "2s"
max_concurrent_polls = 2
[[receivers."freqtrade/fleet".bots]]
bot = "a"
url = "http://127.0.0.1:1"
[[receivers."freqtrade/fleet".bots]]
bot = "b"
url = "http://127.0.0.1:2"
username = "other"
auth = "jwt"
timeout = "1s"
"#,
            "freqtrade/fleet",
        )
        .unwrap();
        let (a, b) = (&c.bots()[0], &c.bots()[1]);
        assert_eq!(
            (a.name.as_str(), a.username.as_str(), a.auth),
            ("a", "u", Auth::Basic)
        );
        assert_eq!(a.timeout, Duration::from_secs(2));
        assert_eq!((b.username.as_str(), b.auth), ("other", Auth::Jwt));
        assert_eq!(
            (b.password.expose(), b.timeout),
            ("p", Duration::from_secs(1))
        );
        // The password never shows in a debug print of the config.
        assert!(!format!("{c:?}").contains("pw-from-env"));
    }

    /// A bot that never answers: its failures grow, readable through the control handle
    /// (what a fail-closed risk processor reads), and the receiver fails (its only bot).
    #[tokio::test]
    async fn consecutive_failures_are_readable_through_the_handle() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = format!(
            "[receivers.\"freqtrade/x\"]\nurl = \"http://127.0.0.1:{port}\"\nusername = \"u\"\npassword = \"p\"\ninterval = \"100ms\"\n"
        );
        let c = parse_text(&text, "freqtrade/x").unwrap();
        let dir = std::env::temp_dir();
        let id = ComponentId::parse("freqtrade/x").unwrap();
        let ctx = context(&id, &dir);
        let receiver = c.build(&ctx).unwrap();
        let handle = ctx.controls.get::<BotControlHandle>("freqtrade/x").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let outputs = metrics_output(tx);
        let stop = CancellationToken::new();
        let task = tokio::spawn(receiver.start(outputs, stop.clone()).await.unwrap());
        let mut ups = Vec::new();
        while handle.0.consecutive_failures("x").unwrap() < 3 {
            let b = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a poll every 100ms")
                .unwrap();
            ups.push(b.payload.items());
        }
        assert!(ups.iter().all(|n| *n == 3), "health points only: {ups:?}");
        assert_eq!(ctx.health.state(), State::Failed);
        stop.cancel();
        task.await.unwrap();
    }

    #[test]
    fn config_mistakes_name_the_key() {
        let one = r#"[receivers."freqtrade/main"]
url = "http://127.0.0.1:8080"
username = "u"
password = "${FT_PASS}"
"#;
        assert!(parse_text(one, "freqtrade/main").is_ok());
        let err = parse_text(
            r#"[receivers.freqtrade]
username = "u"
password = "p"
"#,
            "freqtrade",
        )
        .unwrap_err();
        assert!(err.contains("give the bot's API root in url"), "{err}");
        let err = parse_text(
            r#"[receivers.freqtrade]
url = "127.0.0.1:8080"
username = "u"
password = "p"
"#,
            "freqtrade",
        )
        .unwrap_err();
        assert!(err.contains("url must start with http://"), "{err}");
        let err = parse_text(
            r#"[receivers.freqtrade]
url = "http://127.0.0.1:8080"
username = "u"
"#,
            "freqtrade",
        )
        .unwrap_err();
        assert!(err.contains("username and password are required"), "{err}");
        let err = parse_text(
            r#"[receivers."freqtrade/fleet"]
username = "u"
password = "p"
[[receivers."freqtrade/fleet".bots]]
bot = "a"
url = "http://127.0.0.1:1"
[[receivers."freqtrade/fleet".bots]]
bot = "a"
url = "http://127.0.0.1:2"
"#,
            "freqtrade/fleet",
        )
        .unwrap_err();
        assert!(err.contains("two bots have the same name"), "{err}");
        let err = parse_text(
            r#"[receivers.freqtrade]
url = "http://127.0.0.1:8080"
username = "u"
password = "p"
auth = "oauth"
"#,
            "freqtrade",
        )
        .unwrap_err();
        assert!(err.contains("auth"), "{err}");
    }
}
