//! What the receiver shows on `/ui`: one panel per bot (`bot:<name>`, shared with the
//! risk processor, which adds its limits), with the bot's state, equity and PnL over
//! time, its open trades, and the last poll.

use super::models::Snapshot;
use crate::service::board::{Badge, Board, Field, Table, Tone};
use std::time::{Duration, SystemTime};

/// The panel of bot `bot` (the risk processor publishes into the same one).
pub fn panel_id(bot: &str) -> String {
    format!("bot:{bot}")
}

/// One hour of history at the poll interval (at least 60 points, at most 3600), and at
/// most 50,000 points per series over the receiver's whole fleet: 500 bots polled every
/// 5 s keep 100 points (8 minutes) each, so the page's history stays a few MB.
pub fn history_len(interval: Duration, bots: usize) -> usize {
    let hour = (3600 / interval.as_secs().max(1)).clamp(60, 3600) as usize;
    hour.min(50_000 / bots.max(1)).max(60)
}

/// What one poll tells the page.
pub struct PollView<'a> {
    pub bot: &'a str,
    pub snapshot: Option<&'a Snapshot>,
    pub error: Option<String>,
    pub latency: Duration,
    pub consecutive_failures: u32,
    pub polls: u64,
    pub history: usize,
}

fn state_tone(state: &str) -> Tone {
    match state {
        "running" => Tone::Ok,
        "paused" => Tone::Warn,
        _ => Tone::Bad,
    }
}

pub fn publish(board: &Board, v: &PollView<'_>) {
    board.update(&panel_id(v.bot), "bots", |e| {
        let h = v.history;
        e.title(&format!("Bot {}", v.bot)).history(h);
        match v.snapshot {
            Some(snap) => {
                let state = snap.config.state.as_deref().unwrap_or("unknown");
                e.badge(Some(Badge {
                    text: state.into(),
                    tone: state_tone(state),
                }));
                e.field(Field::text("state", "State", state).tone(state_tone(state)));
                if let Some(s) = &snap.config.strategy {
                    e.field(Field::text("strategy", "Strategy", s.as_str()));
                }
                let cur = snap
                    .config
                    .stake_currency
                    .clone()
                    .or_else(|| snap.balance.stake.clone())
                    .unwrap_or_default();
                let unit = if cur.is_empty() {
                    String::new()
                } else {
                    format!(" {cur}")
                };
                if let Some(eq) = snap.balance.total {
                    e.field(Field::number("equity", "Equity", eq, 2, &unit));
                    e.point("equity", "Equity", &unit, h, eq);
                }
                if let Some(r) = snap.profit.profit_closed_coin {
                    e.field(
                        Field::number("realized_pnl", "Realized PnL", r, 2, &unit)
                            .tone(if r < 0.0 { Tone::Warn } else { Tone::Neutral }),
                    );
                    e.point("realized_pnl", "Realized PnL", &unit, h, r);
                }
                let unrealized =
                    super::metrics::sum_known(snap.trades.iter().map(|t| t.profit_abs))
                        .unwrap_or(0.0);
                e.field(
                    Field::number("unrealized_pnl", "Unrealized PnL", unrealized, 2, &unit).tone(
                        if unrealized < 0.0 {
                            Tone::Warn
                        } else {
                            Tone::Neutral
                        },
                    ),
                );
                e.point("unrealized_pnl", "Unrealized PnL", &unit, h, unrealized);
                let open = snap.trades.len() as f64;
                let mut f = Field::number("open_trades", "Open trades", open, 0, "");
                if let Some(max) = snap.config.max_open_trades {
                    f.text = format!("{open:.0} of {max:.0}");
                }
                e.field(f);
                let rows = snap
                    .trades
                    .iter()
                    .map(|t| {
                        vec![
                            t.pair.clone(),
                            if t.is_short { "short" } else { "long" }.into(),
                            t.leverage.map_or("-".into(), |l| format!("{l:.1}×")),
                            t.profit_ratio
                                .map_or("-".into(), |r| format!("{:+.2}%", r * 100.0)),
                            t.stake_amount.map_or("-".into(), |s| format!("{s:.2}")),
                        ]
                    })
                    .collect();
                e.table(Some(Table {
                    title: "Open trades".into(),
                    columns: ["Pair", "Side", "Leverage", "Profit", "Stake"]
                        .map(String::from)
                        .to_vec(),
                    rows,
                }));
            }
            None => {
                e.badge(Some(Badge {
                    text: "unreachable".into(),
                    tone: Tone::Bad,
                }));
            }
        }
        e.field(Field::text(
            "last_poll",
            "Last poll",
            humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        ));
        // Whole milliseconds, as `/status` shows them.
        e.field(Field::number(
            "poll_latency_ms",
            "Poll latency",
            v.latency.as_millis() as f64,
            0,
            " ms",
        ));
        e.field(
            Field::number(
                "consecutive_failures",
                "Failed polls in a row",
                f64::from(v.consecutive_failures),
                0,
                "",
            )
            .tone(if v.consecutive_failures > 0 {
                Tone::Bad
            } else {
                Tone::Neutral
            }),
        );
        e.field(Field::number("polls", "Polls", v.polls as f64, 0, ""));
        e.field(match &v.error {
            Some(err) => Field::text("last_error", "Last error", err.as_str()).tone(Tone::Bad),
            None => Field::text("last_error", "Last error", "none"),
        });
    });
}
