//! The `freqtrade` receiver against the REAL Freqtrade 2026.9 bot (dry-run futures,
//! offline: only exchange I/O is patched, see `tests/peers/freqtrade/README.md`).
//!
//! Two bots (the `default` and `drawdown` scenarios) run on free loopback ports; one
//! tradewatch polls both as a fleet. Every metric must equal, field by field, what the
//! bot's own API returns (fetched here with a plain HTTP client), including the 3x short
//! and its leverage; then a price written to `prices.json` moves that trade's profit
//! metric. Needs a Python with freqtrade 2026.9: `TRADEWATCH_FREQTRADE_PYTHON`, else
//! `TRADEWATCH_PYTHON`, else the repository's `.venv`. It fails, never skips, when the bot cannot start.

mod common;

use common::{eventually, free_port, read_jsonl, Collector};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

use common::freqtrade::{venv, Bot, PASSWORD, USER};

/// Series key → (latest value, attributes).
type Series = BTreeMap<String, (f64, serde_json::Map<String, Value>)>;

/// The latest value of every series of one bot: `name` or `name{trade_id=N}` → (value,
/// attributes), from the file exporter's output; and the resource of its latest poll.
fn latest(c: &Collector, bot: &str) -> (Series, Value) {
    let lines = read_jsonl(&c.path("out/metrics.jsonl"));
    let mut out = BTreeMap::new();
    let mut resource = Value::Null;
    for (res, m) in common::metrics_in(&lines) {
        let data = m
            .get("gauge")
            .or_else(|| m.get("sum"))
            .expect("gauge or sum");
        for p in data["dataPoints"].as_array().into_iter().flatten() {
            let a = common::attrs(&p["attributes"]);
            if a["bot"] != bot {
                continue;
            }
            resource = res.clone();
            let v = p
                .get("asDouble")
                .and_then(Value::as_f64)
                .or_else(|| {
                    p.get("asInt")
                        .and_then(|v| v.as_str()?.parse().ok().or(v.as_f64()))
                })
                .unwrap();
            let mut key = m["name"].as_str().unwrap().to_owned();
            if let Some(id) = a.get("trade_id") {
                key = format!("{key}{{trade_id={id}}}");
            }
            if let Some(s) = a.get("state") {
                key = format!("{key}{{state={}}}", s.as_str().unwrap());
            }
            out.insert(key, (v, a));
        }
    }
    (out, resource)
}

/// Every difference between the latest metrics of `bot` and its API's answers; empty
/// when they agree on every field.
fn differences(c: &Collector, name: &str, bot: &Bot) -> Vec<String> {
    let (m, resource) = latest(c, name);
    let config = bot.get("show_config");
    let profit = bot.get("profit");
    let status = bot.get("status");
    let balance = bot.get("balance");
    let count = bot.get("count");
    let mut diffs = Vec::new();
    let mut other = Vec::new();
    let mut check = |key: String, want: Option<f64>, exact: bool| {
        let got = m.get(&key).map(|p| p.0);
        let same = match (got, want) {
            (Some(g), Some(w)) if exact => g == w,
            (Some(g), Some(w)) => (g - w).abs() <= 1e-9 * w.abs().max(1.0),
            (None, None) => true,
            _ => false,
        };
        if !same {
            diffs.push(format!("{key}: metric {got:?}, API {want:?}"));
        }
    };
    let f = |v: &Value, k: &str| v[k].as_f64();
    for (metric, field) in [
        ("freqtrade.profit.realized.ratio", "profit_closed_ratio"),
        ("freqtrade.profit.realized", "profit_closed_coin"),
        ("freqtrade.profit.all.ratio", "profit_all_ratio"),
        ("freqtrade.profit.all", "profit_all_coin"),
        ("freqtrade.drawdown.current.ratio", "current_drawdown"),
        ("freqtrade.drawdown.current", "current_drawdown_abs"),
        ("freqtrade.drawdown.max.ratio", "max_drawdown"),
        ("freqtrade.drawdown.max", "max_drawdown_abs"),
        ("freqtrade.winrate.ratio", "winrate"),
        ("freqtrade.profit_factor", "profit_factor"),
        ("freqtrade.expectancy", "expectancy"),
        ("freqtrade.trades.closed", "closed_trade_count"),
        ("freqtrade.trades.winning", "winning_trades"),
        ("freqtrade.trades.losing", "losing_trades"),
    ] {
        check(metric.into(), f(&profit, field), true);
    }
    let trades = status.as_array().unwrap();
    check("freqtrade.trades.open".into(), f(&count, "current"), true);
    check(
        "freqtrade.trades.open".into(),
        Some(trades.len() as f64),
        true,
    );
    check(
        "freqtrade.trades.open.notional".into(),
        f(&count, "total_stake"),
        true,
    );
    check("freqtrade.balance".into(), f(&balance, "total"), true);
    let stake = config["stake_currency"].as_str().unwrap();
    let free = balance["currencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["currency"] == stake && c["is_position"] == false)
        .and_then(|c| c["free"].as_f64());
    check("freqtrade.balance.free".into(), free, true);
    check(
        "freqtrade.bot.max_open_trades".into(),
        f(&config, "max_open_trades"),
        true,
    );
    let state = config["state"].as_str().unwrap();
    check(
        format!("freqtrade.bot.state{{state={state}}}"),
        Some(1.0),
        true,
    );
    let (mut num, mut den, mut abs) = (0.0, 0.0, 0.0);
    for t in trades {
        let id = t["trade_id"].as_i64().unwrap();
        let k = |metric: &str| format!("{metric}{{trade_id={id}}}");
        check(
            k("freqtrade.trade.profit.ratio"),
            f(t, "profit_ratio"),
            true,
        );
        check(k("freqtrade.trade.profit"), f(t, "profit_abs"), true);
        check(k("freqtrade.trade.stake"), f(t, "stake_amount"), true);
        check(k("freqtrade.trade.leverage"), f(t, "leverage"), true);
        check(
            k("freqtrade.trade.notional"),
            Some(f(t, "open_rate").unwrap() * f(t, "amount").unwrap()),
            false,
        );
        let (cur, liq) = (f(t, "current_rate").unwrap(), f(t, "liquidation_price"));
        check(
            k("freqtrade.trade.liquidation.distance.ratio"),
            liq.map(|l| (cur - l).abs() / cur),
            false,
        );
        if let Some((_, a)) = m.get(&k("freqtrade.trade.leverage")) {
            if a["pair"] != t["pair"] || a["is_short"] != t["is_short"] {
                other.push(format!("trade {id}: attributes {a:?} vs {t}"));
            }
        }
        num += f(t, "profit_ratio").unwrap() * f(t, "stake_amount").unwrap();
        den += f(t, "stake_amount").unwrap();
        abs += f(t, "profit_abs").unwrap();
    }
    check(
        "freqtrade.profit.unrealized.ratio".into(),
        (den > 0.0).then(|| num / den),
        false,
    );
    check(
        "freqtrade.profit.unrealized".into(),
        (den > 0.0).then_some(abs),
        false,
    );
    check("freqtrade.up".into(), Some(1.0), true);
    diffs.extend(other);
    let (_, a) = m.get("freqtrade.up").cloned().unwrap_or_default();
    if a.get("strategy") != config.get("strategy") || a.get("exchange") != config.get("exchange") {
        diffs.push(format!("attributes {a:?}"));
    }
    let version = common::attrs(&resource["attributes"])
        .get("freqtrade.version")
        .cloned();
    if version.as_ref() != config.get("version") {
        diffs.push(format!("freqtrade.version {version:?}"));
    }
    diffs
}

#[test]
fn metrics_equal_the_real_bots_api_and_follow_its_prices() {
    let venv = venv();
    let dir = tempfile::tempdir().unwrap();
    // Both bots start at once (each takes 10-20 s, mostly python imports).
    let (default, drawdown) = std::thread::scope(|s| {
        let a = s.spawn(|| Bot::start(&venv, "default", dir.path().join("default")));
        let b = s.spawn(|| Bot::start(&venv, "drawdown", dir.path().join("drawdown")));
        (a.join().unwrap(), b.join().unwrap())
    });
    let port = free_port();
    let config = format!(
        r#"
[receivers."freqtrade/fleet"]
username = "{USER}"
password = "${{FT_PASS}}"
interval = "1s"
timeout = "10s"
[[receivers."freqtrade/fleet".bots]]
bot = "default"
url = "http://127.0.0.1:{}"
[[receivers."freqtrade/fleet".bots]]
bot = "drawdown"
url = "http://127.0.0.1:{}"

[exporters.file]
path = "out/metrics.jsonl"

[service]
http = "127.0.0.1:{port}"

[service.pipelines.metrics]
receivers = ["freqtrade/fleet"]
exporters = ["file"]
"#,
        default.port, drawdown.port
    );
    let c = Collector::start_with_env(&config, port, &[("FT_PASS", PASSWORD)]);

    for (name, bot) in [("default", &default), ("drawdown", &drawdown)] {
        let mut last = Vec::new();
        eventually(
            Duration::from_secs(60),
            &format!("{name}: metrics equal the API"),
            || {
                last = differences(&c, name, bot);
                if !last.is_empty() {
                    eprintln!("{name}: not yet equal: {last:?}");
                }
                last.is_empty()
            },
        );
        // The 3x short is there, with its leverage.
        let (m, _) = latest(&c, name);
        let short = m
            .iter()
            .find(|(k, (_, a))| k.starts_with("freqtrade.trade.leverage{") && a["is_short"] == true)
            .expect("the SOL short");
        assert_eq!(short.1 .0, 3.0);
        assert_eq!(short.1 .1["pair"], "SOL/USDT:USDT");
    }
    // The drawdown scenario's own numbers (README of the peer), as a sanity check of
    // which bot is which.
    let (m, _) = latest(&c, "drawdown");
    assert!((m["freqtrade.drawdown.max.ratio"].0 - 0.12344).abs() < 1e-4);
    assert!((m["freqtrade.profit_factor"].0 - 0.102).abs() < 1e-3);

    // A price move: SOL up 5% makes the short lose more, on a later poll.
    let (m, _) = latest(&c, "default");
    let (key, (before, _)) = m
        .iter()
        .find(|(k, (_, a))| {
            k.starts_with("freqtrade.trade.profit.ratio{") && a["pair"] == "SOL/USDT:USDT"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    let rate = default
        .get("status")
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["pair"] == "SOL/USDT:USDT")
        .unwrap()["current_rate"]
        .as_f64()
        .unwrap();
    default.set_price("SOL/USDT:USDT", rate * 1.05);
    eventually(
        Duration::from_secs(60),
        "the SOL short's profit metric moves",
        || latest(&c, "default").0[&key].0 < before - 0.1,
    );
    eventually(Duration::from_secs(60), "and still equals the API", || {
        differences(&c, "default", &default).is_empty()
    });
    assert!(!c.logs().contains(PASSWORD));
}
