//! One poll's responses → OTLP metrics.
//!
//! Ratios stay ratios (0..1, unit `1`, names ending in `.ratio`): the `ratio_to_percent`
//! processor converts them once, later. Money is in the stake currency, written as the
//! annotation unit `{USDT}`. A value Freqtrade sends as `null` (inf/NaN) gives no point.

use super::models::{Snapshot, Trade};
use crate::otlp::{attr, MetricsBuilder, Temporality, Timestamp};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;

/// The bot states written as `freqtrade.bot.state{state}`: 1 for the current one, 0 for
/// the others, so a state change never leaves a stale 1 behind.
const STATES: [&str; 3] = ["running", "paused", "stopped"];

/// What a poll of one bot gave: the snapshot, or only the health gauges after a failure.
pub struct PollOutcome<'a> {
    pub bot: &'a str,
    pub snapshot: Option<&'a Snapshot>,
    /// Strategy and exchange of the last successful poll, so that the health points of a
    /// failed poll still carry them.
    pub strategy: Option<&'a str>,
    pub exchange: Option<&'a str>,
    pub version: Option<&'a str>,
    pub consecutive_failures: u32,
    pub latency_seconds: f64,
}

fn opt_str(v: Option<&str>) -> &str {
    v.filter(|s| !s.is_empty()).unwrap_or("unknown")
}

/// Builds the export request of one poll.
pub fn build(o: &PollOutcome, t: Timestamp) -> ExportMetricsServiceRequest {
    let snap = o.snapshot;
    let cfg = snap.map(|s| &s.config);
    let strategy = opt_str(cfg.and_then(|c| c.strategy.as_deref()).or(o.strategy));
    let exchange = opt_str(cfg.and_then(|c| c.exchange.as_deref()).or(o.exchange));
    let base = vec![
        attr("bot", o.bot),
        attr("strategy", strategy),
        attr("exchange", exchange),
    ];
    let with = |extra: Vec<KeyValue>| {
        let mut a = base.clone();
        a.extend(extra);
        a
    };

    let mut resource = vec![attr("service.name", "freqtrade")];
    if let Some(v) = cfg.and_then(|c| c.version.as_deref()).or(o.version) {
        resource.push(attr("freqtrade.version", v));
    }
    if let Some(c) = cfg {
        if let Some(m) = &c.runmode {
            resource.push(attr("freqtrade.runmode", m.as_str()));
        }
        if let Some(m) = &c.trading_mode {
            resource.push(attr("freqtrade.trading_mode", m.as_str()));
        }
    }

    let mut b = MetricsBuilder::new();
    b.resource(resource)
        .scope("tradewatch.freqtrade", env!("CARGO_PKG_VERSION"));
    b.gauge(
        "freqtrade.up",
        "",
        "1 when the last poll of the bot's API succeeded, else 0",
    )
    .point(i64::from(snap.is_some()), base.clone(), t);
    b.gauge(
        "freqtrade.poll.consecutive_failures",
        "{failure}",
        "Polls failed in a row (0 after a success)",
    )
    .point(o.consecutive_failures, base.clone(), t);
    b.gauge(
        "freqtrade.poll.duration",
        "s",
        "Wall time of the last poll (all API calls)",
    )
    .point(o.latency_seconds, base.clone(), t);
    let Some(snap) = snap else {
        return b.build();
    };

    let money = format!(
        "{{{}}}",
        snap.config.stake_currency.as_deref().unwrap_or("stake")
    );
    let money = money.as_str();
    let mut g = Gauges {
        b: &mut b,
        t,
        base: &base,
    };

    let state = snap.config.state.as_deref().unwrap_or_default();
    let mut states: Vec<&str> = STATES.to_vec();
    if !state.is_empty() && !states.contains(&state) {
        states.push(state);
    }
    g.b.gauge(
        "freqtrade.bot.state",
        "",
        "1 for the bot's current state (running, paused, stopped), 0 for the others",
    );
    for s in states {
        g.b.point(i64::from(s == state), with(vec![attr("state", s)]), t);
    }
    g.one(
        "freqtrade.bot.max_open_trades",
        "{trade}",
        "Configured maximum of open trades (-1: unlimited)",
        snap.config.max_open_trades,
    );

    let p = &snap.profit;
    g.one(
        "freqtrade.profit.realized.ratio",
        "1",
        "Profit of closed trades relative to the starting capital",
        p.profit_closed_ratio,
    );
    g.one(
        "freqtrade.profit.realized",
        money,
        "Profit of closed trades",
        p.profit_closed_coin,
    );
    g.one(
        "freqtrade.profit.all.ratio",
        "1",
        "Profit of all trades (open ones at the current rate) relative to the starting capital",
        p.profit_all_ratio,
    );
    g.one(
        "freqtrade.profit.all",
        money,
        "Profit of all trades, open ones at the current rate",
        p.profit_all_coin,
    );
    g.one(
        "freqtrade.drawdown.current.ratio",
        "1",
        "Drawdown from the last equity high (closed trades)",
        p.current_drawdown,
    );
    g.one(
        "freqtrade.drawdown.current",
        money,
        "Drawdown from the last equity high (closed trades)",
        p.current_drawdown_abs,
    );
    g.one(
        "freqtrade.drawdown.max.ratio",
        "1",
        "Largest drawdown so far (closed trades)",
        p.max_drawdown,
    );
    g.one(
        "freqtrade.drawdown.max",
        money,
        "Largest drawdown so far (closed trades)",
        p.max_drawdown_abs,
    );
    g.one(
        "freqtrade.winrate.ratio",
        "1",
        "Winning closed trades / closed trades",
        p.winrate,
    );
    g.one(
        "freqtrade.profit_factor",
        "",
        "Gross profit / gross loss of closed trades (no point without a losing trade)",
        p.profit_factor,
    );
    g.one(
        "freqtrade.expectancy",
        money,
        "Expected profit per closed trade",
        p.expectancy,
    );

    // Trade counts are cumulative since the bot started (the DB's history).
    let start = p
        .bot_start_timestamp
        .map(|ms| Timestamp(ms.saturating_mul(1_000_000)))
        .unwrap_or_default();
    g.b.start_time(start);
    for (name, desc, v) in [
        (
            "freqtrade.trades.closed",
            "Closed trades",
            p.closed_trade_count,
        ),
        (
            "freqtrade.trades.winning",
            "Closed trades with a profit",
            p.winning_trades,
        ),
        (
            "freqtrade.trades.losing",
            "Closed trades with a loss",
            p.losing_trades,
        ),
    ] {
        if let Some(v) = v {
            g.b.sum(name, "{trade}", desc, Temporality::Cumulative, true)
                .point(v as i64, base.clone(), t);
        }
    }
    g.b.start_time(Timestamp(0));
    g.b.gauge("freqtrade.trades.open", "{trade}", "Open trades")
        .point(snap.trades.len() as i64, base.clone(), t);

    if let Some(c) = &snap.count {
        g.one(
            "freqtrade.trades.open.notional",
            money,
            "Notional of the open trades at entry (Σ open rate × amount)",
            c.total_stake,
        );
    }
    g.one(
        "freqtrade.profit.unrealized.ratio",
        "1",
        "Stake-weighted mean profit ratio of the open trades",
        unrealized_ratio(&snap.trades),
    );
    g.one(
        "freqtrade.profit.unrealized",
        money,
        "Profit of the open trades at the current rate",
        sum_known(snap.trades.iter().map(|t| t.profit_abs)),
    );
    g.one(
        "freqtrade.balance",
        money,
        "Total balance in the stake currency",
        snap.balance.total,
    );
    g.one(
        "freqtrade.balance.free",
        money,
        "Free balance of the stake currency",
        snap.balance.free(),
    );

    let per_trade: [(&str, &str, &str, TradeValue); 6] = [
        (
            "freqtrade.trade.profit.ratio",
            "1",
            "Profit ratio of an open trade at the current rate",
            |t| t.profit_ratio,
        ),
        (
            "freqtrade.trade.profit",
            money,
            "Profit of an open trade at the current rate",
            |t| t.profit_abs,
        ),
        (
            "freqtrade.trade.stake",
            money,
            "Margin of an open trade (notional / leverage)",
            |t| t.stake_amount,
        ),
        (
            "freqtrade.trade.notional",
            money,
            "Notional of an open trade at entry (open rate × amount)",
            notional,
        ),
        (
            "freqtrade.trade.leverage",
            "",
            "Leverage of an open trade",
            |t| t.leverage,
        ),
        (
            "freqtrade.trade.liquidation.distance.ratio",
            "1",
            "Distance from the current rate to the liquidation price, relative to the current rate",
            liquidation_distance,
        ),
    ];
    for (name, unit, desc, f) in per_trade {
        let points: Vec<(f64, &Trade)> = snap
            .trades
            .iter()
            .filter_map(|tr| f(tr).filter(|v| v.is_finite()).map(|v| (v, tr)))
            .collect();
        if points.is_empty() {
            continue;
        }
        g.b.gauge(name, unit, desc);
        for (v, tr) in points {
            g.b.point(
                v,
                with(vec![
                    attr("pair", tr.pair.as_str()),
                    attr("is_short", tr.is_short),
                    attr("trade_id", tr.trade_id as i64),
                ]),
                t,
            );
        }
    }
    b.build()
}

/// Reads one per-trade value.
type TradeValue = fn(&Trade) -> Option<f64>;

struct Gauges<'a> {
    b: &'a mut MetricsBuilder,
    t: Timestamp,
    base: &'a [KeyValue],
}

impl Gauges<'_> {
    /// A gauge with one point, or nothing when the value is unknown.
    fn one(&mut self, name: &str, unit: &str, desc: &str, v: Option<f64>) {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            self.b
                .gauge(name, unit, desc)
                .point(v, self.base.to_vec(), self.t);
        }
    }
}

/// Σ(profit_ratio × stake) / Σ stake over the open trades that have both; none without.
pub fn unrealized_ratio(trades: &[Trade]) -> Option<f64> {
    let (mut num, mut den) = (0.0, 0.0);
    for t in trades {
        if let (Some(r), Some(s)) = (t.profit_ratio, t.stake_amount) {
            num += r * s;
            den += s;
        }
    }
    (den > 0.0).then(|| num / den)
}

pub(crate) fn sum_known(vals: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    vals.fold(None, |acc, v| match v {
        Some(v) => Some(acc.unwrap_or(0.0) + v),
        None => acc,
    })
}

/// Notional at entry; Σ over the open trades equals `/count` `total_stake`.
pub fn notional(t: &Trade) -> Option<f64> {
    Some(t.open_rate? * t.amount?)
}

/// |current rate − liquidation price| / current rate: how far the price may still move.
pub fn liquidation_distance(t: &Trade) -> Option<f64> {
    let (cur, liq) = (t.current_rate?, t.liquidation_price?);
    (cur > 0.0 && liq > 0.0).then(|| (cur - liq).abs() / cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::get_attr;
    use crate::receivers::freqtrade::models::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};

    macro_rules! fixture {
        ($name:literal) => {
            serde_json::from_str(include_str!(concat!(
                "../../../tests/fixtures/freqtrade/",
                $name
            )))
            .expect($name)
        };
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            config: fixture!("show_config.json"),
            profit: fixture!("profit.json"),
            trades: fixture!("status.json"),
            balance: fixture!("balance.json"),
            count: Some(fixture!("count.json")),
        }
    }

    /// (attributes, value) of every point of `name`.
    fn points(req: &ExportMetricsServiceRequest, name: &str) -> Vec<(Vec<KeyValue>, f64)> {
        let mut out = Vec::new();
        for rm in &req.resource_metrics {
            for sm in &rm.scope_metrics {
                for m in sm.metrics.iter().filter(|m| m.name == name) {
                    let dps = match m.data.as_ref().unwrap() {
                        Data::Gauge(g) => &g.data_points,
                        Data::Sum(s) => &s.data_points,
                        _ => panic!("{name} is neither gauge nor sum"),
                    };
                    for p in dps {
                        let v = match p.value.unwrap() {
                            number_data_point::Value::AsDouble(v) => v,
                            number_data_point::Value::AsInt(v) => v as f64,
                        };
                        out.push((p.attributes.clone(), v));
                    }
                }
            }
        }
        out
    }

    fn one(req: &ExportMetricsServiceRequest, name: &str) -> f64 {
        let p = points(req, name);
        assert_eq!(p.len(), 1, "{name}: {p:?}");
        p[0].1
    }

    fn outcome(snap: &Snapshot) -> ExportMetricsServiceRequest {
        build(
            &PollOutcome {
                bot: "main",
                snapshot: Some(snap),
                strategy: None,
                exchange: None,
                version: None,
                consecutive_failures: 0,
                latency_seconds: 0.01,
            },
            Timestamp(1),
        )
    }

    #[test]
    fn every_fixture_the_receiver_reads_parses() {
        let _: serde_json::Value = fixture!("ping.json");
        for c in [
            fixture!("show_config.json"),
            fixture!("show_config_paused.json"),
            fixture!("show_config_stopped.json"),
            fixture!("show_config_webserver.json"),
        ] {
            let c: ShowConfig = c;
            assert_eq!(c.version.as_deref(), Some("2026.9"));
            assert_eq!(c.max_open_trades, Some(5.0));
        }
        let ws: ShowConfig = fixture!("show_config_webserver.json");
        assert_eq!(ws.state.as_deref(), Some(""));
        assert_eq!(ws.strategy, None);
        for p in [
            fixture!("profit.json"),
            fixture!("profit_no_open_trades.json"),
            fixture!("profit_short_no_losing_trades.json"),
        ] {
            let p: Profit = p;
            assert!(p.closed_trade_count.is_some() && p.profit_all_ratio.is_some());
        }
        let empty: Vec<Trade> = fixture!("status_empty.json");
        assert!(empty.is_empty());
        let flat: Balance = fixture!("balance_no_positions.json");
        assert!(flat.total.is_some() && flat.free().is_some());
        let c: Count = fixture!("count_empty.json");
        assert_eq!((c.current, c.total_stake), (Some(0), Some(0.0)));
    }

    #[test]
    fn default_scenario_metrics_equal_the_api_values() {
        let snap = snapshot();
        let req = outcome(&snap);
        let res = &req.resource_metrics[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes;
        assert_eq!(
            get_attr(res, "freqtrade.version"),
            Some(&Value::StringValue("2026.9".into()))
        );
        let p = &snap.profit;
        for (name, v) in [
            ("freqtrade.profit.realized.ratio", p.profit_closed_ratio),
            ("freqtrade.profit.realized", p.profit_closed_coin),
            ("freqtrade.profit.all.ratio", p.profit_all_ratio),
            ("freqtrade.profit.all", p.profit_all_coin),
            ("freqtrade.drawdown.current.ratio", p.current_drawdown),
            ("freqtrade.drawdown.current", p.current_drawdown_abs),
            ("freqtrade.drawdown.max.ratio", p.max_drawdown),
            ("freqtrade.drawdown.max", p.max_drawdown_abs),
            ("freqtrade.winrate.ratio", p.winrate),
            ("freqtrade.profit_factor", p.profit_factor),
            ("freqtrade.expectancy", p.expectancy),
            ("freqtrade.balance", Some(10016.6475)),
            ("freqtrade.balance.free", Some(9057.4275)),
            ("freqtrade.trades.open.notional", Some(1878.0)),
            ("freqtrade.trades.open", Some(3.0)),
            ("freqtrade.trades.closed", Some(4.0)),
            ("freqtrade.trades.winning", Some(2.0)),
            ("freqtrade.trades.losing", Some(2.0)),
            ("freqtrade.bot.max_open_trades", Some(5.0)),
            ("freqtrade.up", Some(1.0)),
            ("freqtrade.poll.consecutive_failures", Some(0.0)),
        ] {
            assert_eq!(Some(one(&req, name)), v, "{name}");
        }
        // Every point carries bot, strategy and exchange.
        for (attrs, _) in points(&req, "freqtrade.profit.all") {
            assert_eq!(
                get_attr(&attrs, "strategy"),
                Some(&Value::StringValue("OfflineNoSignal".into()))
            );
            assert_eq!(
                get_attr(&attrs, "exchange"),
                Some(&Value::StringValue("binance".into()))
            );
            assert_eq!(
                get_attr(&attrs, "bot"),
                Some(&Value::StringValue("main".into()))
            );
        }
        let states = points(&req, "freqtrade.bot.state");
        let running: Vec<_> = states.iter().filter(|(_, v)| *v == 1.0).collect();
        assert_eq!(running.len(), 1);
        assert_eq!(
            get_attr(&running[0].0, "state"),
            Some(&Value::StringValue("running".into()))
        );

        // The 3x short: trade 7.
        let trade = |name: &str, id: i64| {
            points(&req, name)
                .into_iter()
                .find(|(a, _)| get_attr(a, "trade_id") == Some(&Value::IntValue(id)))
                .unwrap_or_else(|| panic!("{name} of trade {id}"))
        };
        let (attrs, lev) = trade("freqtrade.trade.leverage", 7);
        assert_eq!(lev, 3.0);
        assert_eq!(get_attr(&attrs, "is_short"), Some(&Value::BoolValue(true)));
        assert_eq!(
            get_attr(&attrs, "pair"),
            Some(&Value::StringValue("SOL/USDT:USDT".into()))
        );
        assert_eq!(trade("freqtrade.trade.profit.ratio", 7).1, -0.07224156);
        assert_eq!(trade("freqtrade.trade.profit", 7).1, -21.37281129);
        assert_eq!(trade("freqtrade.trade.stake", 7).1, 296.0);
        assert_eq!(trade("freqtrade.trade.notional", 7).1, 888.0);
        let dist = trade("freqtrade.trade.liquidation.distance.ratio", 7).1;
        assert!((dist - (193.93 - 151.412429) / 151.412429).abs() < 1e-12);
        // Σ notional = /count total_stake; Σ stake = margin.
        let notional: f64 = points(&req, "freqtrade.trade.notional")
            .iter()
            .map(|p| p.1)
            .sum();
        assert!((notional - 1878.0).abs() < 1e-9);
        let stake: f64 = points(&req, "freqtrade.trade.stake")
            .iter()
            .map(|p| p.1)
            .sum();
        assert!((stake - 956.0).abs() < 1e-9);
        // Stake-weighted mean of the open trades' profit ratios.
        let want = (0.03595886 * 330.0 + 0.03306358 * 330.0 - 0.07224156 * 296.0) / 956.0;
        assert!((one(&req, "freqtrade.profit.unrealized.ratio") - want).abs() < 1e-12);
        let abs = 11.87235594 + 10.91643572 - 21.37281129;
        assert!((one(&req, "freqtrade.profit.unrealized") - abs).abs() < 1e-9);
    }

    #[test]
    fn null_values_give_no_point_never_zero() {
        let mut snap = snapshot();
        snap.profit = fixture!("profit_short_no_losing_trades.json");
        assert_eq!(snap.profit.profit_factor, None);
        snap.trades[0].liquidation_price = None;
        snap.trades[0].profit_ratio = None;
        let req = outcome(&snap);
        assert!(points(&req, "freqtrade.profit_factor").is_empty());
        assert_eq!(
            points(&req, "freqtrade.trade.liquidation.distance.ratio").len(),
            2
        );
        assert_eq!(points(&req, "freqtrade.trade.profit.ratio").len(), 2);
        // The weighted mean leaves out the trade without a ratio.
        let want = (0.03306358 * 330.0 - 0.07224156 * 296.0) / 626.0;
        assert!((one(&req, "freqtrade.profit.unrealized.ratio") - want).abs() < 1e-12);
    }

    #[test]
    fn flat_stopped_and_webserver_bots() {
        let snap = Snapshot {
            config: fixture!("show_config_stopped.json"),
            profit: fixture!("profit_no_open_trades.json"),
            trades: fixture!("status_empty.json"),
            balance: fixture!("balance_no_positions.json"),
            count: None,
        };
        let req = outcome(&snap);
        assert_eq!(one(&req, "freqtrade.trades.open"), 0.0);
        assert!(points(&req, "freqtrade.profit.unrealized.ratio").is_empty());
        assert!(points(&req, "freqtrade.trade.profit.ratio").is_empty());
        assert!(points(&req, "freqtrade.trades.open.notional").is_empty());
        let stopped = points(&req, "freqtrade.bot.state")
            .into_iter()
            .find(|(_, v)| *v == 1.0)
            .unwrap();
        assert_eq!(
            get_attr(&stopped.0, "state"),
            Some(&Value::StringValue("stopped".into()))
        );
        let paused: ShowConfig = fixture!("show_config_paused.json");
        assert_eq!(paused.state.as_deref(), Some("paused"));
        let ws: ShowConfig = fixture!("show_config_webserver.json");
        let snap = Snapshot {
            config: ws,
            ..snapshot()
        };
        let req = outcome(&snap);
        // No state written: every known state is 0; the strategy is "unknown".
        assert!(points(&req, "freqtrade.bot.state")
            .iter()
            .all(|p| p.1 == 0.0));
        let (attrs, _) = &points(&req, "freqtrade.up")[0];
        assert_eq!(
            get_attr(attrs, "strategy"),
            Some(&Value::StringValue("unknown".into()))
        );
    }

    #[test]
    fn a_failed_poll_gives_only_health_points() {
        let req = build(
            &PollOutcome {
                bot: "main",
                snapshot: None,
                strategy: Some("S"),
                exchange: Some("binance"),
                version: Some("2026.9"),
                consecutive_failures: 3,
                latency_seconds: 5.0,
            },
            Timestamp(1),
        );
        assert_eq!(one(&req, "freqtrade.up"), 0.0);
        assert_eq!(one(&req, "freqtrade.poll.consecutive_failures"), 3.0);
        let names: Vec<&str> = req.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "freqtrade.up",
                "freqtrade.poll.consecutive_failures",
                "freqtrade.poll.duration"
            ]
        );
        let (attrs, _) = &points(&req, "freqtrade.up")[0];
        assert_eq!(
            get_attr(attrs, "strategy"),
            Some(&Value::StringValue("S".into()))
        );
    }
}
