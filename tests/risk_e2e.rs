//! The risk processor end to end against the REAL Freqtrade 2026.9 bot (see
//! `tests/common/freqtrade.rs`), with the alert channels' loopback fakes and SNS on a real
//! moto server (read back through an SQS subscription):
//! 1. the `drawdown` scenario breaches a 10 % limit: the bot is paused within one poll
//!    interval, exactly one critical alert reaches Slack, Telegram and SNS; a restart of
//!    tradewatch while still breached sends nothing and does not act again; closing a
//!    winning trade brings the bot back within limits, which sends one resolved alert;
//! 2. SOL's price in `prices.json` drives a trade-loss rule from ok to warning to critical
//!    and back, one message per state change; then the bot stops answering (SIGSTOP):
//!    after `fail_closed_after` failed polls a `monitoring_failure` breach fires and the
//!    pause is attempted; when it answers again (SIGCONT) the breach resolves.

mod common;

use common::fakes::{SlackFake, TelegramFake};
use common::freqtrade::{venv, Bot, PASSWORD};
use common::moto::Moto;
use common::{eventually, free_port, Collector};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const INTERVAL_SECS: u64 = 2;

/// Each Slack message's `text` (its headline: `🔴 CRITICAL: Name`, `✅ RESOLVED: Name`).
fn slack_texts(slack: &SlackFake) -> Vec<String> {
    slack
        .messages()
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn telegram_texts(t: &TelegramFake) -> Vec<String> {
    t.messages().into_iter().map(|m| m.text).collect()
}

/// Every SNS message read back so far (the queue is drained as it is read).
struct SnsInbox<'a> {
    moto: &'a Moto,
    queue: String,
    seen: Vec<Value>,
}

impl SnsInbox<'_> {
    fn all(&mut self) -> &[Value] {
        let more = self.moto.receive_all(&self.queue);
        self.seen.extend(more);
        &self.seen
    }
}

#[test]
fn a_drawdown_breach_pauses_the_bot_alerts_every_channel_once_and_survives_a_restart() {
    let venv = venv();
    let tmp = tempfile::tempdir().unwrap();
    let bot = Bot::start(&venv, "drawdown", tmp.path().join("bot"));
    let slack = SlackFake::start();
    let telegram = TelegramFake::start();
    let moto = Moto::start();
    let (topic, queue) = moto.sns_topic_with_queue("risk-alerts");
    let mut sns = SnsInbox {
        moto: &moto,
        queue,
        seen: Vec::new(),
    };
    let service = free_port();
    let data = tmp.path().join("data");
    let config = format!(
        r#"
[receivers."freqtrade/main"]
bot = "main"
url = "{bot_url}"
username = "freqtrader"
password = "${{FT_PASS}}"
interval = "{INTERVAL_SECS}s"
timeout = "5s"

[receivers.alerts]

[processors.risk]
max_drawdown_pct = 10
action_on_breach = "pause"
control = "freqtrade/main"

[exporters.nop]
[exporters.slack]
webhook_url = "{slack_url}"
[exporters.telegram]
bot_token = "{token}"
chat_id = "-100777"
api_url = "{telegram_url}"
[exporters.sns]
topic_arn = "{topic}"
region = "us-east-1"
endpoint_url = "{moto_url}"

[service]
http = "127.0.0.1:{service}"
data_dir = "{data}"

[service.pipelines."metrics/bots"]
receivers = ["freqtrade/main"]
processors = ["risk"]
exporters = ["nop"]

[service.pipelines."logs/alerts"]
receivers = ["alerts"]
exporters = ["slack", "telegram", "sns"]
"#,
        bot_url = bot.url(),
        slack_url = slack.url(),
        token = telegram.token,
        telegram_url = telegram.url(),
        moto_url = moto.url(),
        data = data.display(),
    );
    let mut env = Moto::env();
    env.push(("FT_PASS", PASSWORD));
    assert_eq!(bot.state(), "running");
    let mut c = Collector::start_with_env(&config, service, &env);

    // The breach: one critical alert on each channel, and the bot paused by then or
    // within one poll interval (the pause leaves before the alert does).
    eventually(Duration::from_secs(60), "the breach alert on Slack", || {
        !slack.messages().is_empty()
    });
    let alerted = Instant::now();
    loop {
        if bot.state() == "paused" {
            break;
        }
        assert!(
            alerted.elapsed() < Duration::from_secs(INTERVAL_SECS),
            "the bot was not paused within one poll interval of the alert:\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eventually(
        Duration::from_secs(30),
        "the alert on Telegram and SNS",
        || !telegram.messages().is_empty() && !sns.all().is_empty(),
    );
    // A few more polls while breached: nothing new.
    std::thread::sleep(Duration::from_secs(3 * INTERVAL_SECS));
    let s = slack_texts(&slack);
    assert_eq!(s.len(), 1, "{s:#?}");
    assert!(
        s[0].contains("MaxDrawdownBreached") && s[0].to_lowercase().contains("critical"),
        "{}",
        s[0]
    );
    let t = telegram_texts(&telegram);
    assert_eq!(t.len(), 1, "{t:#?}");
    assert!(t[0].contains("MaxDrawdownBreached"), "{}", t[0]);
    let n = sns.all().to_vec();
    assert_eq!(n.len(), 1, "{n:#?}");
    assert!(
        n[0]["Subject"]
            .as_str()
            .unwrap()
            .contains("MaxDrawdownBreached"),
        "{}",
        n[0]
    );
    assert_eq!(
        n[0]["MessageAttributes"]["severity"]["Value"], "critical",
        "{}",
        n[0]
    );

    // A restart while still breached: the state on disk says the run is known and acted on.
    c.restart(&env);
    std::thread::sleep(Duration::from_secs(3 * INTERVAL_SECS));
    assert_eq!(slack.messages().len(), 1, "{:#?}", slack_texts(&slack));
    assert_eq!(telegram.messages().len(), 1);
    assert_eq!(sns.all().len(), 1);
    assert_eq!(bot.state(), "paused");
    let logs = c.logs();
    assert_eq!(
        logs.matches("risk action done").count(),
        1,
        "one pause in both runs of tradewatch:\n{logs}"
    );
    assert!(logs.contains("risk state restored"), "{logs}");

    // Back within limits: BTC far up, its long closed at market; the new equity high
    // leaves no drawdown.
    bot.set_price("BTC/USDT:USDT", 200_000.0);
    let btc = eventually_value(
        Duration::from_secs(30),
        "BTC at the new price in /status",
        || {
            bot.get("status")
                .as_array()
                .unwrap()
                .iter()
                .find(|t| {
                    t["pair"] == "BTC/USDT:USDT"
                        && t["current_rate"].as_f64().unwrap_or(0.0) > 150_000.0
                })
                .map(|t| t["trade_id"].clone())
        },
    );
    bot.post(
        "forceexit",
        &json!({"tradeid": btc.to_string(), "ordertype": "market"}),
    );
    eventually(
        Duration::from_secs(30),
        "the drawdown back under 10 %",
        || {
            bot.get("profit")["current_drawdown"]
                .as_f64()
                .unwrap_or(1.0)
                < 0.10
        },
    );
    eventually(
        Duration::from_secs(30),
        "the resolved alert on every channel",
        || slack.messages().len() >= 2 && telegram.messages().len() >= 2 && sns.all().len() >= 2,
    );
    std::thread::sleep(Duration::from_secs(2 * INTERVAL_SECS));
    let s = slack_texts(&slack);
    assert_eq!(s.len(), 2, "{s:#?}");
    assert!(
        s[1].contains("MaxDrawdownBreached") && s[1].to_lowercase().contains("resolved"),
        "{}",
        s[1]
    );
    assert_eq!(telegram.messages().len(), 2);
    let n = sns.all().to_vec();
    assert_eq!(n.len(), 2, "{n:#?}");
    assert_eq!(
        n[1]["MessageAttributes"]["state"]["Value"], "resolved",
        "{}",
        n[1]
    );
    // The bot is not resumed behind the operator's back.
    assert_eq!(bot.state(), "paused");
    let logs = c.logs();
    for secret in [PASSWORD, telegram.token.as_str()] {
        assert!(!logs.contains(secret), "a secret in the logs");
    }
}

fn eventually_value<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The headlines of the Slack messages about `name`.
fn mentioning(slack: &SlackFake, name: &str) -> Vec<String> {
    slack_texts(slack)
        .into_iter()
        .filter(|m| m.contains(name))
        .collect()
}

fn severity_of(message: &str) -> &'static str {
    let m = message.to_lowercase();
    if m.contains("resolved") {
        "resolved"
    } else if m.contains("critical") {
        "critical"
    } else if m.contains("warning") {
        "warning"
    } else {
        "?"
    }
}

#[test]
fn prices_drive_a_trade_loss_rule_and_a_silent_bot_fails_closed() {
    let venv = venv();
    let tmp = tempfile::tempdir().unwrap();
    // Losing trades stay open (no stoploss exit) so SOL's loss follows the price.
    let bot = Bot::start_with_env(
        &venv,
        "default",
        tmp.path().join("bot"),
        &[("FT_STOPLOSS", "-0.99")],
    );
    let sol_rate = |bot: &Bot| -> f64 {
        bot.get("status")
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["pair"] == "SOL/USDT:USDT")
            .and_then(|t| t["current_rate"].as_f64())
            .unwrap_or(0.0)
    };
    // Start with the short in profit (148 entry, 3x): the rule is ok.
    bot.set_price("SOL/USDT:USDT", 146.0);
    eventually(Duration::from_secs(30), "SOL at 146 in /status", || {
        (sol_rate(&bot) - 146.0).abs() < 0.5
    });
    let slack = SlackFake::start();
    let service = free_port();
    let config = format!(
        r#"
[receivers."freqtrade/main"]
bot = "main"
url = "{bot_url}"
username = "freqtrader"
password = "${{FT_PASS}}"
interval = "1s"
timeout = "1s"

[receivers.alerts]

[processors.risk]
action_on_breach = "pause"
fail_closed_after = 3
action_retry_interval = "1s"
control = "freqtrade/main"

[[processors.risk.rules]]
name = "TradeLoss"
metric = "freqtrade.trade.profit.ratio"
match = {{ pair = "SOL/USDT:USDT" }}
op = "<"
warning = -0.05
critical = -0.2
group_by = ["bot", "pair", "trade_id"]

[exporters.nop]
[exporters.slack]
webhook_url = "{slack_url}"

[service]
http = "127.0.0.1:{service}"
data_dir = "data"

[service.pipelines."metrics/bots"]
receivers = ["freqtrade/main"]
processors = ["risk"]
exporters = ["nop"]

[service.pipelines."logs/alerts"]
receivers = ["alerts"]
exporters = ["slack"]
"#,
        bot_url = bot.url(),
        slack_url = slack.url(),
    );
    let c = Collector::start_with_env(&config, service, &[("FT_PASS", PASSWORD)]);
    // Give the ok state a few polls: nothing may fire.
    std::thread::sleep(Duration::from_secs(3));
    assert!(slack.messages().is_empty(), "{:#?}", slack_texts(&slack));

    // ok → warning → critical → warning → ok: one message per change.
    let steps = [
        (152.0, "warning"),
        (160.0, "critical"),
        (152.0, "warning"),
        (146.0, "resolved"),
    ];
    for (i, (price, want)) in steps.iter().enumerate() {
        bot.set_price("SOL/USDT:USDT", *price);
        eventually(
            Duration::from_secs(40),
            &format!("the TradeLoss {want} message at SOL {price}"),
            || mentioning(&slack, "TradeLoss").len() > i,
        );
        let got = mentioning(&slack, "TradeLoss");
        assert_eq!(
            severity_of(&got[i]),
            *want,
            "step {i} at {price}: {}",
            got[i]
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    let got = mentioning(&slack, "TradeLoss");
    assert_eq!(got.len(), 4, "one message per state change: {got:#?}");
    assert_eq!(slack.messages().len(), 4, "{:#?}", slack_texts(&slack));

    // The bot stops answering: its polls time out; after 3 a monitoring_failure breach
    // fires and the pause is attempted (and fails: nobody answers).
    let pid = bot.pid();
    common::signal_pid(pid, "STOP");
    let resumed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(
            Duration::from_secs(60),
            "the MonitoringFailure alert",
            || !mentioning(&slack, "MonitoringFailure").is_empty(),
        );
        eventually(Duration::from_secs(30), "a failed pause attempt", || {
            c.metrics().lines().any(|l| {
                l.starts_with("tradewatch_processor_risk_actions_total")
                    && l.contains("result=\"failed\"")
                    && !l.ends_with(" 0")
            })
        });
        let m = mentioning(&slack, "MonitoringFailure");
        assert_eq!(severity_of(&m[0]), "critical", "{}", m[0]);
    }));
    common::signal_pid(pid, "CONT");
    if let Err(e) = resumed {
        std::panic::resume_unwind(e);
    }
    // It answers again: the breach resolves.
    eventually(
        Duration::from_secs(60),
        "MonitoringFailure resolved",
        || {
            mentioning(&slack, "MonitoringFailure")
                .iter()
                .any(|m| severity_of(m) == "resolved")
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let m = mentioning(&slack, "MonitoringFailure");
    assert_eq!(m.len(), 2, "one firing, one resolved: {m:#?}");
    assert!(
        c.logs().contains("MonitoringFailure"),
        "the breach is in tradewatch's own log too"
    );
}
