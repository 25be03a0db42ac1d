//! The processor per batch, and breach → action / alert latency through a running tradewatch.

use std::sync::Arc;
use std::time::Instant;
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
        "freqtrade.profit.total.ratio",
        "freqtrade.profit.total",
        "freqtrade.drawdown.max.ratio",
        "freqtrade.drawdown.max",
        "freqtrade.winrate.ratio",
        "freqtrade.profit_factor",
        "freqtrade.expectancy",
        "freqtrade.balance.total",
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

pub fn breach_latency() {}
