//! A simulated Freqtrade REST API on loopback, serving one or many bots.
//!
//! Bot 0 answers at `/api/v1/...`; bot `i` (any `i`, including 0) at `/bots/{i}/api/v1/...`,
//! so a receiver's `url` is `http://ADDR` or `http://ADDR/bots/{i}`; with
//! `port_per_bot`, each bot also has its own port ([`SimHandle::url`]). Responses are the
//! recorded Freqtrade 2026.9 responses (`tests/fixtures/freqtrade/`) with the simulated values
//! written into them, so keys and JSON types are Freqtrade's. Auth works like Freqtrade's:
//! JWT-looking tokens from `POST token/login` (HTTP Basic), `POST token/refresh` with the
//! refresh token, Bearer or Basic on every endpoint except `ping`.
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use tradewatch::demo::sim::{spawn, SimConfig};
//! let (addr, sim) = spawn(SimConfig { bots: 3, ..SimConfig::default() }).await?;
//! // poll http://{addr}/bots/2/api/v1/profit ...
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

use super::market::{Bot, BotParams, BotState, STAKE, STOPLOSS, STRATEGY};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// What to simulate. `Default` is the demo: one bot, three trades, drawdown past 20%
/// after about a minute.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of the price walk (bot `i` uses `seed + i`).
    pub seed: u64,
    /// Number of bots served (see the module doc for their URLs).
    pub bots: usize,
    /// Open trades per bot (Freqtrade's `max_open_trades`).
    pub open_trades: usize,
    /// One market tick: prices move and trades open/close once per step.
    pub step: Duration,
    /// About when the realized drawdown passes 20% (the losing streak starts at a quarter of it).
    pub drawdown_ramp: Duration,
    pub username: String,
    pub password: String,
    /// Lifetime of an access token (Freqtrade: 15 minutes).
    pub access_ttl: Duration,
    /// Faults applied to every bot from the start (see [`SimHandle::set_faults`]).
    pub faults: Faults,
    /// Also give every bot its own port (`http://127.0.0.1:PORT/api/v1/...`), as real
    /// bots on separate hosts have: a client's per-host connection pool then holds one
    /// bot's connections, not the whole fleet's. See [`SimHandle::url`].
    pub port_per_bot: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            bots: 1,
            open_trades: 3,
            step: Duration::from_secs(1),
            drawdown_ramp: Duration::from_secs(60),
            username: "freqtrader".into(),
            password: "demo".into(),
            access_ttl: Duration::from_secs(15 * 60),
            faults: Faults::default(),
            port_per_bot: false,
        }
    }
}

/// Injected faults, per bot, changeable while running.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Added before every answer (a hanging bot: make it longer than the client's timeout).
    pub latency: Duration,
    /// Data endpoints answer 503 "Bot is not in the correct state." (webserver mode).
    pub unavailable: bool,
    /// Bodies of 200 answers are cut in half (truncated JSON).
    pub truncated: bool,
}

/// One request the simulator received: which bot, which endpoint, when (since spawn).
#[derive(Clone, Debug)]
pub struct Hit {
    pub bot: usize,
    pub endpoint: String,
    pub at: Duration,
}

/// Bounds the request log (about 100 bytes an entry).
const MAX_HITS: usize = 2_000_000;

struct Templates {
    show_config: Value,
    profit: Value,
    trade_long: Value,
    trade_short: Value,
    balance: Value,
}

fn fixture(raw: &str) -> Value {
    serde_json::from_str(raw).expect("embedded fixture is JSON")
}

impl Templates {
    fn load() -> Templates {
        let status = fixture(include_str!("../../tests/fixtures/freqtrade/status.json"));
        let by_side = |short: bool| {
            status
                .as_array()
                .and_then(|a| a.iter().find(|t| t["is_short"] == json!(short)))
                .cloned()
                .expect("status fixture has a long and a short trade")
        };
        Templates {
            show_config: fixture(include_str!(
                "../../tests/fixtures/freqtrade/show_config.json"
            )),
            profit: fixture(include_str!("../../tests/fixtures/freqtrade/profit.json")),
            trade_long: by_side(false),
            trade_short: by_side(true),
            balance: fixture(include_str!("../../tests/fixtures/freqtrade/balance.json")),
        }
    }
}

struct Token {
    bot: usize,
    refresh: bool,
    expires: Instant,
}

struct SimBot {
    bot: Bot,
    faults: Faults,
}

struct Shared {
    cfg: SimConfig,
    started: Instant,
    templates: Templates,
    bots: Vec<Mutex<SimBot>>,
    tokens: Mutex<HashMap<String, Token>>,
    hits: Mutex<Vec<Hit>>,
    token_seq: Mutex<u64>,
}

/// Controls a running simulator; dropping it does not stop the server (call `shutdown`).
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    addr: SocketAddr,
    bot_addrs: Arc<Vec<SocketAddr>>,
}

impl SimHandle {
    /// Replaces bot `bot`'s faults (out-of-range bots are ignored).
    pub fn set_faults(&self, bot: usize, faults: Faults) {
        if let Some(b) = self.shared.bots.get(bot) {
            lock(b).faults = faults;
        }
    }

    /// Every request received so far, in arrival order.
    pub fn hits(&self) -> Vec<Hit> {
        lock(&self.shared.hits).clone()
    }

    /// Bot `bot`'s state as its API reports it ("running", "paused", "stopped").
    pub fn bot_state(&self, bot: usize) -> Option<&'static str> {
        self.shared
            .bots
            .get(bot)
            .map(|b| lock(b).bot.state.as_str())
    }

    /// Bot `bot`'s `/api/v1/profit` as of now.
    pub fn profit(&self, bot: usize) -> Option<Value> {
        let b = self.shared.bots.get(bot)?;
        let mut b = lock(b);
        b.bot.advance_to(self.shared.started.elapsed());
        Some(b.bot.profit(&self.shared.templates.profit))
    }

    /// Makes every outstanding access token of every bot expire now (to test refresh).
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for t in lock(&self.shared.tokens).values_mut() {
            if !t.refresh {
                t.expires = now;
            }
        }
    }

    /// Forgets every token, as a restarted bot would (to test re-login on 401).
    pub fn revoke_tokens(&self) {
        lock(&self.shared.tokens).clear();
    }

    /// Bot `bot`'s API root, the receiver's `url`: its own port with `port_per_bot`,
    /// else `http://ADDR/bots/{bot}`.
    pub fn url(&self, bot: usize) -> String {
        match self.bot_addrs.get(bot) {
            Some(a) => format!("http://{a}"),
            None => format!("http://{}/bots/{bot}", self.addr),
        }
    }

    /// Stops serving and waits for the server tasks.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for t in tasks {
            let _ = t.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds 127.0.0.1 on a free port and serves until [`SimHandle::shutdown`].
pub async fn spawn(cfg: SimConfig) -> std::io::Result<(SocketAddr, SimHandle)> {
    spawn_on(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await
}

/// Like [`spawn`] on a chosen address.
pub async fn spawn_on(
    addr: SocketAddr,
    cfg: SimConfig,
) -> std::io::Result<(SocketAddr, SimHandle)> {
    spawn_listener(tokio::net::TcpListener::bind(addr).await?, cfg).await
}

/// Like [`spawn`] on a bound listener.
pub async fn spawn_listener(
    listener: tokio::net::TcpListener,
    cfg: SimConfig,
) -> std::io::Result<(SocketAddr, SimHandle)> {
    let addr = listener.local_addr()?;
    let epoch_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let bots = (0..cfg.bots.max(1))
        .map(|i| {
            Mutex::new(SimBot {
                bot: Bot::new(
                    BotParams {
                        seed: cfg.seed.wrapping_add(i as u64),
                        max_open_trades: cfg.open_trades,
                        step: cfg.step,
                        drawdown_ramp: cfg.drawdown_ramp,
                    },
                    epoch_ms,
                ),
                faults: cfg.faults.clone(),
            })
        })
        .collect();
    let shared = Arc::new(Shared {
        started: Instant::now(),
        templates: Templates::load(),
        bots,
        tokens: Mutex::new(HashMap::new()),
        hits: Mutex::new(Vec::new()),
        token_seq: Mutex::new(0),
        cfg,
    });
    let stop = CancellationToken::new();
    let serve = |listener: tokio::net::TcpListener, fixed: Option<usize>| {
        let app = axum::Router::new().fallback(handle).with_state(Ctx {
            shared: shared.clone(),
            fixed,
        });
        let served = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(served.cancelled_owned())
                .await;
        })
    };
    let mut tasks = vec![serve(listener, None)];
    let mut bot_addrs = Vec::new();
    if shared.cfg.port_per_bot {
        for i in 0..shared.bots.len() {
            let l = tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0)).await?;
            bot_addrs.push(l.local_addr()?);
            tasks.push(serve(l, Some(i)));
        }
    }
    Ok((
        addr,
        SimHandle {
            shared,
            stop,
            tasks: Arc::new(Mutex::new(tasks)),
            addr,
            bot_addrs: Arc::new(bot_addrs),
        },
    ))
}

/// A listener's view: the shared state, and the bot when the port is that bot's own.
#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    fixed: Option<usize>,
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn detail(status: StatusCode, msg: &str) -> Response {
    reply(status, json!({ "detail": msg }))
}

/// Splits `/bots/{i}/api/v1/{endpoint}` or `/api/v1/{endpoint}` into (bot, endpoint).
fn route(path: &str) -> Option<(usize, &str)> {
    let (bot, rest) = match path.strip_prefix("/bots/") {
        Some(r) => {
            let (n, rest) = r.split_once('/')?;
            (n.parse().ok()?, rest)
        }
        None => (0, path.strip_prefix('/')?),
    };
    Some((bot, rest.strip_prefix("api/v1/")?.trim_end_matches('/')))
}

async fn handle(
    State(ctx): State<Ctx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = ctx.shared;
    let routed = match ctx.fixed {
        Some(bot) => uri
            .path()
            .strip_prefix("/api/v1/")
            .map(|e| (bot, e.trim_end_matches('/'))),
        None => route(uri.path()),
    };
    let Some((bot, endpoint)) = routed else {
        return detail(StatusCode::NOT_FOUND, "Not Found");
    };
    let Some(sim_bot) = s.bots.get(bot) else {
        return detail(StatusCode::NOT_FOUND, "Not Found");
    };
    let at = s.started.elapsed();
    {
        let mut hits = lock(&s.hits);
        if hits.len() < MAX_HITS {
            hits.push(Hit {
                bot,
                endpoint: endpoint.to_string(),
                at,
            });
        }
    }
    let faults = lock(sim_bot).faults.clone();
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    let resp = answer(&s, bot, &method, endpoint, &headers, &body, &faults);
    if faults.truncated && resp.status() == StatusCode::OK {
        let (parts, b) = resp.into_parts();
        let full = axum::body::to_bytes(b, usize::MAX)
            .await
            .unwrap_or_default();
        return Response::from_parts(parts, axum::body::Body::from(full.slice(..full.len() / 2)));
    }
    resp
}

fn answer(
    s: &Shared,
    bot: usize,
    method: &Method,
    endpoint: &str,
    headers: &HeaderMap,
    body: &[u8],
    faults: &Faults,
) -> Response {
    let post = method == Method::POST;
    match (endpoint, post) {
        ("ping", false) => return reply(StatusCode::OK, json!({"status": "pong"})),
        ("token/login", true) => return login(s, bot, headers),
        ("token/refresh", true) => return refresh(s, bot, headers),
        _ => {}
    }
    if let Err(msg) = authorize(s, bot, headers) {
        return detail(StatusCode::UNAUTHORIZED, msg);
    }
    if faults.unavailable {
        return detail(
            StatusCode::SERVICE_UNAVAILABLE,
            "Bot is not in the correct state.",
        );
    }
    let mut guard = lock(&s.bots[bot]);
    guard.bot.advance_to(s.started.elapsed());
    let b = &mut guard.bot;
    let t = &s.templates;
    let ok = |v: Value| reply(StatusCode::OK, v);
    match (endpoint, post) {
        ("version", false) => ok(json!({"version": "2026.9"})),
        ("show_config", false) => {
            let mut v = t.show_config.clone();
            v["state"] = json!(b.state.as_str());
            v["strategy"] = json!(STRATEGY);
            v["bot_name"] = json!(format!("demo-{bot}"));
            v["stake_amount"] = json!(format!("{STAKE}"));
            v["max_open_trades"] = json!(s.cfg.open_trades as f64);
            v["stoploss"] = json!(STOPLOSS);
            ok(v)
        }
        ("profit", false) => ok(b.profit(&t.profit)),
        ("status", false) => ok(b.status(&t.trade_long, &t.trade_short)),
        ("balance", false) => ok(b.balance(&t.balance)),
        ("count", false) if b.state == BotState::Stopped => reply(
            StatusCode::BAD_GATEWAY,
            json!({"error": "Error querying /api/v1/count: trader is not running"}),
        ),
        ("count", false) => ok(b.count()),
        ("pause" | "stopentry", true) => {
            let msg = if b.state == BotState::Stopped {
                "starting bot with trader in paused state, no entries will occur. Run /start to enable entries."
            } else {
                "paused, no more entries will occur from now. Run /start to enable entries."
            };
            b.state = BotState::Paused;
            ok(json!({ "status": msg }))
        }
        ("start", true) => {
            let msg = if b.state == BotState::Running {
                "already running"
            } else {
                "starting trader ..."
            };
            b.state = BotState::Running;
            ok(json!({ "status": msg }))
        }
        ("stop", true) => {
            let msg = if b.state == BotState::Stopped {
                "already stopped"
            } else {
                "stopping trader ..."
            };
            b.state = BotState::Stopped;
            ok(json!({ "status": msg }))
        }
        ("forceexit", true) => {
            let id = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| match &v["tradeid"] {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.parse().ok(),
                    _ => None,
                });
            match id {
                Some(id) if b.force_exit(id) => {
                    ok(json!({ "result": format!("Created exit order for trade {id}.") }))
                }
                _ => reply(
                    StatusCode::BAD_GATEWAY,
                    json!({"error": "Error querying /api/v1/forceexit: invalid argument"}),
                ),
            }
        }
        _ => detail(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let raw = STANDARD.decode(v.strip_prefix("Basic ")?.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// `Err` carries Freqtrade's 401 detail.
fn authorize(s: &Shared, bot: usize, headers: &HeaderMap) -> Result<(), &'static str> {
    if let Some(token) = bearer(headers) {
        let tokens = lock(&s.tokens);
        return match tokens.get(token) {
            Some(t) if t.bot == bot && !t.refresh && t.expires > Instant::now() => Ok(()),
            _ => Err("Could not validate credentials"),
        };
    }
    match basic_credentials(headers) {
        Some((u, p)) if u == s.cfg.username && p == s.cfg.password => Ok(()),
        _ => Err("Unauthorized"),
    }
}

fn login(s: &Shared, bot: usize, headers: &HeaderMap) -> Response {
    match basic_credentials(headers) {
        None => detail(StatusCode::UNAUTHORIZED, "Not authenticated"),
        Some((u, p)) if u != s.cfg.username || p != s.cfg.password => {
            detail(StatusCode::UNAUTHORIZED, "Incorrect username or password")
        }
        Some(_) => reply(
            StatusCode::OK,
            json!({
                "access_token": issue(s, bot, false),
                "refresh_token": issue(s, bot, true),
            }),
        ),
    }
}

fn refresh(s: &Shared, bot: usize, headers: &HeaderMap) -> Response {
    let valid = bearer(headers).is_some_and(|tok| {
        lock(&s.tokens)
            .get(tok)
            .is_some_and(|t| t.bot == bot && t.refresh && t.expires > Instant::now())
    });
    if valid {
        reply(
            StatusCode::OK,
            json!({ "access_token": issue(s, bot, false) }),
        )
    } else {
        detail(StatusCode::UNAUTHORIZED, "Could not validate credentials")
    }
}

/// A JWT-shaped token (header.payload.signature, base64url) whose payload carries
/// Freqtrade's claims, so a client may read `exp`; the signature is just unique bytes.
fn issue(s: &Shared, bot: usize, refresh: bool) -> String {
    let ttl = if refresh {
        Duration::from_secs(30 * 86_400)
    } else {
        s.cfg.access_ttl
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let seq = {
        let mut n = lock(&s.token_seq);
        *n += 1;
        *n
    };
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let claims = json!({
        "identity": {"u": s.cfg.username},
        "exp": now + ttl.as_secs(),
        "iat": now,
        "type": if refresh { "refresh" } else { "access" },
    });
    let sig = format!("tradewatch-demo/{bot}/{seq}");
    let token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    );
    let mut tokens = lock(&s.tokens);
    let now_i = Instant::now();
    if tokens.len() > 64 * s.bots.len() {
        tokens.retain(|_, t| t.expires > now_i);
    }
    tokens.insert(
        token.clone(),
        Token {
            bot,
            refresh,
            expires: now_i + ttl,
        },
    );
    token
}
