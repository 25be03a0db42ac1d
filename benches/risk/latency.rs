//! The processor per batch, and breach → action / alert latency through a running tradewatch.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tradewatch::component::{BuildContext, ComponentId, Kind, Signal};
use tradewatch::config::Source;
use tradewatch::otlp::{attr, MetricsBuilder, Timestamp};
use tradewatch::pipeline::alerts::AlertSink;
use tradewatch::pipeline::{Batch, Payload};
use tradewatch::service::health::Telemetry;

/// A poll's worth of Freqtrade metrics for one bot.
fn poll_batch(bot: &str, drawdown: f64) -> Batch {
    let t = Timestamp::now();
    let base = [
        attr("bot", bot),
        attr("strategy", "S1"),
        attr("exchange", "binance"),
    ];
    let mut b = MetricsBuilder::new();
    b.resource([attr("service.name", "freqtrade")]);
    for name in [
        "freqtrade.up",
        "freqtrade.poll.duration",
        "freqtrade.profit.realized.ratio",
        "freqtrade.profit.realized",
        "freqtrade.profit.all.ratio",
        "freqtrade.profit.all",
        "freqtrade.drawdown.max.ratio",
        "freqtrade.drawdown.max",
        "freqtrade.winrate.ratio",
        "freqtrade.profit_factor",
        "freqtrade.expectancy",
        "freqtrade.balance",
        "freqtrade.balance.free",
        "freqtrade.trades.closed",
        "freqtrade.trades.winning",
        "freqtrade.trades.losing",
        "freqtrade.bot.max_open_trades",
        "freqtrade.trades.open.notional",
        "freqtrade.profit.unrealized.ratio",
        "freqtrade.profit.unrealized",
    ] {
        b.gauge(name, "1", "").point(1.5, base.clone(), t);
    }
    b.gauge("freqtrade.poll.consecutive_failures", "1", "")
        .point(0, base.clone(), t);
    b.gauge("freqtrade.drawdown.current.ratio", "1", "")
        .point(drawdown, base.clone(), t);
    b.gauge("freqtrade.trades.open", "1", "")
        .point(3, base.clone(), t);
    for name in [
        "freqtrade.trade.profit.ratio",
        "freqtrade.trade.profit",
        "freqtrade.trade.stake",
        "freqtrade.trade.notional",
        "freqtrade.trade.leverage",
    ] {
        b.gauge(name, "1", "");
        for id in 0..3 {
            let mut a = base.to_vec();
            a.push(attr("trade_id", id));
            a.push(attr("pair", "BTC/USDT:USDT"));
            b.point(2.0, a, t);
        }
    }
    Batch::new(Payload::Metrics(b.build()))
}

pub fn processor_per_batch() {
    println!("== the risk processor per poll batch (38 points, 1 bot) ==");
    let mut text = String::from(
        "[processors.risk]\nmax_drawdown_pct = 10\naction_on_breach = \"alert_only\"\n",
    );
    for i in 0..1000 {
        text.push_str(&format!(
            "[[processors.risk.rules]]\nname = \"r{i}\"\nmetric = \"{}\"\nmatch = {{ bot = \"b{}\" }}\ncritical = 1000\n",
            if i % 10 == 0 { "freqtrade.trade.leverage" } else { "app.metric" },
            i % 50
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let src = Source::from_text("bench.toml".into(), &text, &|_| None).unwrap();
    let id = ComponentId::parse("risk").unwrap();
    let cfg = tradewatch::processors::risk::parse(&src, &id).unwrap();
    let telemetry = Telemetry::new();
    let (alerts, _rx) = AlertSink::new(1024, Default::default());
    let ctx = BuildContext {
        id: id.clone(),
        health: telemetry.component(Kind::Processor, &id, true),
        telemetry: telemetry.clone(),
        state: tradewatch::state::StateDir::new(dir.path(), "processor", "risk"),
        controls: Default::default(),
        shared_state: Default::default(),
        alerts,
        alert_queue: Arc::new(std::sync::Mutex::new(None)),
        shutdown: Default::default(),
        memory: tradewatch::pipeline::memory::MemoryBudget::unlimited(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let mut p = cfg.build(Signal::Metrics, &ctx).unwrap();
    let batches: Vec<Batch> = (0..2000)
        .map(|i| poll_batch(&format!("b{}", i % 50), 0.01))
        .collect();
    let mut out = Vec::new();
    let start = Instant::now();
    let n = batches.len();
    for b in batches {
        p.process(b, &mut out);
        out.clear();
    }
    let per = start.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "{:<58} {:>9.1} µs/batch ({:.0} ns/point)",
        "poll batch, limits + 1,000 rules (100 on a trade metric)",
        per / 1000.0,
        per / 38.0
    );
}

/// Times recorded by the fakes, in arrival order.
#[derive(Default)]
struct Log {
    polls: u64,
    /// Poll number → when its last response (`/count`) was sent, for breach polls.
    breach_sent: Vec<Instant>,
    pauses: Vec<Instant>,
    slack: Vec<Instant>,
    telegram: Vec<Instant>,
    webhook: Vec<Instant>,
}

type Shared = Arc<std::sync::Mutex<Log>>;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/freqtrade/");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIX}{name}.json")).unwrap()
}

fn percentiles(label: &str, mut v: Vec<Duration>) {
    v.sort();
    if v.is_empty() {
        println!("{label:<34} no samples");
        return;
    }
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    println!(
        "{label:<34} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   (n = {})",
        p(0.50).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
        v.len()
    );
}

fn firing(body: &str) -> bool {
    // Every channel's rendering names the firing critical alert so.
    body.contains("CRITICAL") || body.contains("\"firing\"")
}

pub fn breach_latency() {
    use axum::routing::{get, post};
    let breaches: usize = std::env::var("BENCH_BREACHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    println!("== breach → pause request and → alert at each channel ({breaches} breaches) ==");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let log: Shared = Arc::default();
    let profit: serde_json::Value = serde_json::from_str(&fixture("profit")).unwrap();
    let (show_config, status, balance, count, pause) = (
        fixture("show_config"),
        fixture("status"),
        fixture("balance"),
        fixture("count"),
        fixture("pause"),
    );
    let json = |s: String| ([(axum::http::header::CONTENT_TYPE, "application/json")], s);
    let l = log.clone();
    let bot = axum::Router::new()
        .route(
            "/api/v1/ping",
            get(move || {
                let l = l.clone();
                async move {
                    l.lock().unwrap().polls += 1;
                    json(r#"{"status":"pong"}"#.into())
                }
            }),
        )
        .route(
            "/api/v1/show_config",
            get(move || async move { json(show_config) }),
        )
        .route(
            "/api/v1/profit",
            get({
                let l = log.clone();
                move || {
                    let (l, mut p) = (l.clone(), profit.clone());
                    async move {
                        // Odd polls breach (12 %), even polls recover (1 %).
                        let odd = l.lock().unwrap().polls % 2 == 1;
                        p["current_drawdown"] = if odd { 0.12 } else { 0.01 }.into();
                        json(p.to_string())
                    }
                }
            }),
        )
        .route("/api/v1/status", get(move || async move { json(status) }))
        .route("/api/v1/balance", get(move || async move { json(balance) }))
        .route(
            "/api/v1/count",
            get({
                let l = log.clone();
                move || {
                    let l = l.clone();
                    async move {
                        let mut g = l.lock().unwrap();
                        if g.polls % 2 == 1 {
                            g.breach_sent.push(Instant::now());
                        }
                        json(count)
                    }
                }
            }),
        )
        .route(
            "/api/v1/pause",
            post({
                let l = log.clone();
                move || {
                    let l = l.clone();
                    async move {
                        l.lock().unwrap().pauses.push(Instant::now());
                        json(pause)
                    }
                }
            }),
        );
    let record = |pick: fn(&mut Log) -> &mut Vec<Instant>, answer: &'static str| {
        let l = log.clone();
        post(move |body: String| {
            let l = l.clone();
            async move {
                if firing(&body) {
                    pick(&mut l.lock().unwrap()).push(Instant::now());
                }
                json(answer.into())
            }
        })
    };
    let channels = axum::Router::new()
        .route("/slack", record(|l| &mut l.slack, "ok"))
        .route(
            "/botT0K3N/sendMessage",
            record(|l| &mut l.telegram, r#"{"ok":true,"result":{}}"#),
        )
        .route("/hook", record(|l| &mut l.webhook, "{}"));
    let (bot_addr, ch_addr) = rt.block_on(async {
        let b = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (ba, ca) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(b, bot).await.unwrap() });
        tokio::spawn(async move { axum::serve(c, channels).await.unwrap() });
        (ba, ca)
    });
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[receivers."freqtrade/main"]
bot = "main"
url = "http://{bot_addr}"
username = "u"
password = "p"
auth = "basic"
interval = "25ms"
timeout = "2s"
[receivers.alerts]
[processors.risk]
max_drawdown_pct = 10
action_on_breach = "pause"
[exporters.nop]
[exporters.slack]
webhook_url = "http://{ch_addr}/slack"
[exporters.telegram]
bot_token = "T0K3N"
chat_id = "1"
api_url = "http://{ch_addr}"
[exporters.webhook]
url = "http://{ch_addr}/hook"
[service]
data_dir = "{data}"
[service.pipelines."metrics/bots"]
receivers = ["freqtrade/main"]
processors = ["risk"]
exporters = ["nop"]
[service.pipelines."logs/alerts"]
receivers = ["alerts"]
exporters = ["slack", "telegram", "webhook"]
"#,
        data = dir.path().display()
    );
    let src = Source::from_text("bench.toml".into(), &text, &|_| None).unwrap();
    let cfg = tradewatch::config::Config::from_source(&src, &tradewatch::registry::builtin())
        .unwrap_or_else(|e| panic!("{e}"));
    let stop = tokio_util::sync::CancellationToken::new();
    let run = rt.spawn(tradewatch::service::run::run(cfg, stop.clone()));
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let g = log.lock().unwrap();
        let done = [
            g.pauses.len(),
            g.slack.len(),
            g.telegram.len(),
            g.webhook.len(),
        ]
        .iter()
        .all(|n| *n >= breaches);
        if done || started.elapsed() > Duration::from_secs(600) {
            break;
        }
    }
    stop.cancel();
    let _ = rt.block_on(run);
    let g = log.lock().unwrap();
    let lat = |arrivals: &[Instant]| -> Vec<Duration> {
        g.breach_sent
            .iter()
            .zip(arrivals)
            .take(breaches)
            .map(|(sent, got)| got.saturating_duration_since(*sent))
            .collect()
    };
    println!(
        "polls {}, breaches sent {}, pauses {}, alerts slack/telegram/webhook {}/{}/{}",
        g.polls,
        g.breach_sent.len(),
        g.pauses.len(),
        g.slack.len(),
        g.telegram.len(),
        g.webhook.len()
    );
    percentiles("breach → pause request", lat(&g.pauses));
    percentiles("breach → alert at Slack", lat(&g.slack));
    percentiles("breach → alert at Telegram", lat(&g.telegram));
    percentiles("breach → alert at webhook", lat(&g.webhook));
}
