//! Every alert rule and risk limit of seeds 000, 001 and 003 is in the shipped
//! `pipelines/risk-alerts.toml`, and a table of metric sequences trips each rule there:
//! the rules are read from the file itself (as tradewatch parses it), fed points on a
//! simulated clock, and must reach the level the seed gives. A rule added to the file
//! without a row here, or a seed alert missing from the file, fails the test.

mod common;

use common::rules::{c, g, trip, Point, GAUGE, S};
use std::collections::BTreeSet;
use tradewatch::component::ComponentId;
use tradewatch::config::{Config, Source};
use tradewatch::processors::risk::rules::{Level, RuleSet, Sample};

/// The secrets the file reads from the environment, as an operator would set them.
const ENV: &[(&str, &str)] = &[
    ("FT_USER", "freqtrader"),
    ("FT_PASS", "unused"),
    (
        "SLACK_WEBHOOK_URL",
        "https://hooks.slack.com/services/T0/B0/x",
    ),
    ("TELEGRAM_BOT_TOKEN", "123:abc"),
    ("TELEGRAM_CHAT_ID", "-100123"),
    (
        "ALERT_TOPIC_ARN",
        "arn:aws:sns:us-east-1:123456789012:tradewatch-alerts",
    ),
];

fn source(extra: &[(&str, &str)]) -> Source {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/risk-alerts.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let env: Vec<(String, String)> = ENV
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Source::from_text(path.display().to_string(), &text, &move |k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap()
}

/// One row: the rule, the points fed (seconds, metric, labels, value), the level expected
/// at the end (after a clock tick at `tick` seconds when given).
struct Row {
    rule: &'static str,
    points: Vec<Point>,
    tick: Option<u64>,
    want: Level,
}

fn rows() -> Vec<Row> {
    use Level::*;
    let bot = &[("bot", "main")][..];
    vec![
        // Seed 000
        Row {
            rule: "HeartbeatFailing",
            points: vec![
                g(0, "freqtrade.poll.consecutive_failures", bot, 2.0),
                g(30, "freqtrade.poll.consecutive_failures", bot, 3.0),
            ],
            tick: None,
            want: Critical,
        },
        Row {
            rule: "BotMetricsStale",
            points: vec![g(0, "freqtrade.up", bot, 1.0)],
            tick: Some(121),
            want: Critical,
        },
        Row {
            rule: "ServiceUnhealthy",
            points: vec![
                g(0, "ServiceHealthy", &[("service", "backend-api")], 0.0),
                g(240, "ServiceHealthy", &[("service", "backend-api")], 0.0),
            ],
            tick: None,
            want: Critical,
        },
        Row {
            rule: "ServiceLatencyHigh",
            points: vec![
                g(0, "HealthCheckLatency", &[("service", "mlflow")], 6000.0),
                g(360, "HealthCheckLatency", &[("service", "mlflow")], 7000.0),
            ],
            tick: None,
            want: Warning,
        },
        Row {
            rule: "StaleHeartbeats",
            points: vec![
                g(0, "StaleHeartbeats", &[], 1.0),
                g(600, "StaleHeartbeats", &[], 2.0),
            ],
            tick: None,
            want: Critical,
        },
        Row {
            rule: "ActiveStrategiesLow",
            points: vec![g(0, "ActiveStrategies", &[], 0.0)],
            tick: None,
            want: Warning,
        },
        Row {
            rule: "LambdaErrors",
            points: vec![g(
                0,
                "Errors",
                &[
                    ("namespace", "AWS/Lambda"),
                    ("function_name", "health-check"),
                ],
                1.0,
            )],
            tick: None,
            want: Critical,
        },
        Row {
            rule: "DeadLetterQueueNotEmpty",
            points: vec![g(
                0,
                "ApproximateNumberOfMessagesVisible",
                &[("queue_name", "tradai-dlq")],
                3.0,
            )],
            tick: None,
            want: Critical,
        },
        Row {
            rule: "InfrastructureDrift",
            points: vec![g(0, "DriftDetected", &[], 1.0)],
            tick: None,
            want: Warning,
        },
        Row {
            rule: "RdsCpuHigh",
            points: vec![
                g(0, "CPUUtilization", &[("namespace", "AWS/RDS")], 85.0),
                g(600, "CPUUtilization", &[("namespace", "AWS/RDS")], 90.0),
            ],
            tick: None,
            want: Warning,
        },
        Row {
            rule: "RdsStorageLow",
            points: vec![g(0, "FreeStorageSpace", &[], 1.5e9)],
            tick: None,
            want: Critical,
        },
        Row {
            rule: "Api5xxRateHigh",
            points: vec![
                c(0, "Count", &[], 0.0),
                c(0, "5XXError", &[], 0.0),
                c(300, "Count", &[], 1000.0),
                c(300, "5XXError", &[], 20.0),
                c(600, "Count", &[], 2000.0),
                c(600, "5XXError", &[], 40.0),
                c(900, "Count", &[], 3000.0),
                c(900, "5XXError", &[], 60.0),
            ],
            tick: None,
            want: Critical,
        },
        Row {
            rule: "SystemHealth",
            points: vec![g(0, "FreeStorageSpace", &[], 1.0e9)],
            tick: None,
            want: Critical,
        },
        Row {
            rule: "StepFunctionFailures",
            points: vec![g(
                0,
                "ExecutionsFailed",
                &[("state_machine", "backtest")],
                1.0,
            )],
            tick: None,
            want: Critical,
        },
        // Seed 001
        Row {
            rule: "PdtLimit",
            points: vec![g(0, "trading_pdt_trades_used", &[], 2.0)],
            tick: None,
            want: Warning,
        },
        Row {
            rule: "PdtLimit",
            points: vec![g(0, "trading_pdt_trades_used", &[], 3.0)],
            tick: None,
            want: Critical,
        },
        Row {
            rule: "PortfolioDrawdown",
            points: vec![g(0, "trading_portfolio_drawdown_pct", &[], 5.5)],
            tick: None,
            want: Warning,
        },
        Row {
            rule: "PortfolioDrawdown",
            points: vec![g(0, "trading_portfolio_drawdown_pct", &[], 8.5)],
            tick: None,
            want: Critical,
        },
        Row {
            rule: "DailyLoss",
            points: vec![g(0, "trading_portfolio_daily_pnl_pct", &[], -2.2)],
            tick: None,
            want: Warning,
        },
        Row {
            rule: "DailyLoss",
            points: vec![g(0, "trading_portfolio_daily_pnl_pct", &[], -2.7)],
            tick: None,
            want: Critical,
        },
        Row {
            rule: "ModelDrift",
            points: vec![g(0, "trading_ml_psi_drift", &[], 0.12)],
            tick: None,
            want: Warning,
        },
        Row {
            rule: "ModelDrift",
            points: vec![g(0, "trading_ml_psi_drift", &[], 0.25)],
            tick: None,
            want: Critical,
        },
        Row {
            rule: "KillSwitchActive",
            points: vec![g(0, "trading_kill_switch_active", &[], 1.0)],
            tick: None,
            want: Critical,
        },
        Row {
            rule: "BrokerDisconnected",
            points: vec![g(0, "healthcheck.up", &[("check", "broker")], 0.0)],
            tick: None,
            want: Critical,
        },
        Row {
            rule: "FeedDisconnected",
            points: vec![g(0, "healthcheck.up", &[("check", "feed")], 1.0)],
            tick: Some(301),
            want: Critical,
        },
        // Seed 003
        Row {
            rule: "AisDrawdownApproachingLimit",
            points: vec![g(0, "ais_drawdown", &[], 0.05)],
            tick: None,
            want: Warning,
        },
        Row {
            rule: "AisLeverageHigh",
            points: vec![g(0, "ais_leverage", &[], 2.7)],
            tick: None,
            want: Warning,
        },
        Row {
            rule: "AisKillSwitchTriggered",
            points: vec![
                c(0, "ais_kill_switch_triggers_total", &[], 0.0),
                c(15, "ais_kill_switch_triggers_total", &[], 1.0),
            ],
            tick: None,
            want: Critical,
        },
        Row {
            rule: "AisRiskRejectionsIncreasing",
            points: vec![
                c(
                    0,
                    "ais_risk_rejections_total",
                    &[("reason", "exposure")],
                    4.0,
                ),
                c(
                    15,
                    "ais_risk_rejections_total",
                    &[("reason", "exposure")],
                    6.0,
                ),
            ],
            tick: None,
            want: Warning,
        },
        Row {
            rule: "AisExchangeErrorsIncreasing",
            points: vec![
                c(0, "ais_aster_errors_total", &[], 10.0),
                c(15, "ais_aster_errors_total", &[], 11.0),
            ],
            tick: None,
            want: Warning,
        },
    ]
}

#[test]
fn the_shipped_file_validates_with_the_builtin_components() {
    let src = source(&[]);
    let cfg = Config::from_source(&src, &tradewatch::registry::builtin());
    assert!(
        cfg.is_ok(),
        "{}",
        cfg.err().map(|e| e.to_string()).unwrap_or_default()
    );
}

#[test]
fn every_seed_limit_is_configured() {
    let src = source(&[]);
    let risk =
        tradewatch::processors::risk::settings(&src, &ComponentId::parse("risk").unwrap()).unwrap();
    // Seed 000's RiskLimits and fail-closed after 5; seed 001's daily loss breaker.
    let l = &risk.defaults;
    assert_eq!(
        (
            l.max_drawdown_pct,
            l.max_open_trades,
            l.max_leverage,
            l.max_daily_loss_pct,
            l.fail_closed_after
        ),
        (20.0, 5.0, 3.0, Some(3.0), 5)
    );
    assert_eq!(l.action, tradewatch::processors::risk::Action::Pause);
    let alpha =
        tradewatch::processors::risk::settings(&src, &ComponentId::parse("risk/alpha").unwrap())
            .unwrap();
    // Seed 001: the circuit breaker trips at 10 % drawdown and -3 % daily P&L.
    assert_eq!(alpha.defaults.max_drawdown_pct, 10.0);
    assert_eq!(alpha.defaults.max_daily_loss_pct, Some(3.0));
}

#[test]
fn a_table_of_metrics_trips_every_seed_rule() {
    let src = source(&[]);
    let risk =
        tradewatch::processors::risk::settings(&src, &ComponentId::parse("risk").unwrap()).unwrap();
    let in_file: BTreeSet<String> = risk.rules.iter().map(|r| r.name.clone()).collect();
    let rows = rows();
    let in_table: BTreeSet<String> = rows.iter().map(|r| r.rule.to_owned()).collect();
    assert_eq!(
        in_file, in_table,
        "every shipped rule has a row, every row a rule"
    );
    let mut failures = Vec::new();
    for row in &rows {
        // One rule set per row: rows must not see each other's series.
        let i = risk.rules.iter().position(|r| r.name == row.rule).unwrap();
        if let Err(e) = trip(&risk.rules, i, &row.points, row.tick, row.want) {
            failures.push(format!("{}: {e}", row.rule));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A metric, a calm value, its labels.
type Calm = (&'static str, f64, &'static [(&'static str, &'static str)]);

#[test]
fn below_every_threshold_nothing_fires() {
    let src = source(&[]);
    let risk =
        tradewatch::processors::risk::settings(&src, &ComponentId::parse("risk").unwrap()).unwrap();
    let mut set = RuleSet::new(risk.rules.clone());
    let mut out = Vec::new();
    let calm: &[Calm] = &[
        (
            "freqtrade.poll.consecutive_failures",
            0.0,
            &[("bot", "main")],
        ),
        ("ServiceHealthy", 1.0, &[("service", "backend-api")]),
        ("HealthCheckLatency", 120.0, &[("service", "mlflow")]),
        ("trading_pdt_trades_used", 1.0, &[]),
        ("trading_portfolio_drawdown_pct", 3.2, &[]),
        ("trading_portfolio_daily_pnl_pct", 0.52, &[]),
        ("trading_ml_psi_drift", 0.05, &[]),
        ("trading_kill_switch_active", 0.0, &[]),
        ("healthcheck.up", 1.0, &[("check", "broker")]),
        ("ais_drawdown", 0.02, &[]),
        ("ais_leverage", 1.5, &[]),
        ("FreeStorageSpace", 5e9, &[]),
    ];
    for t in [0u64, 60, 120] {
        for (m, v, labels) in calm {
            let attrs: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            set.observe(
                &Sample {
                    metric: m,
                    kind: GAUGE,
                    attrs: &attrs,
                    resource: &[],
                    value: *v,
                    start_unix_nano: 0,
                    time_unix_nano: t * S,
                },
                t * S,
                &mut out,
            );
        }
    }
    assert!(out.is_empty(), "{out:?}");
}
