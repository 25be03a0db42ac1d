//! Issue 16, acceptance 3: each seed platform's file in `pipelines/` holds the metrics and
//! alerts its seed lists. A table per seed maps the seed's items to the configuration:
//!
//! - **Published metrics** (`Emf`): a `cloudwatch_emf` declaration renames a metric the
//!   file's pipeline produces to the seed's name, in the seed's namespace; a Freqtrade
//!   metric in percent needs the pipeline's `ratio_to_percent` to convert its ratio.
//! - **Served metrics** (`Served`): the platform's own instruments arrive over OTLP and the
//!   file's Prometheus endpoint serves them under the seed's names. Nothing in the file names
//!   them, so the file is run: every row is sent to the real binary and scraped back.
//! - **Probes** (`checks`): a `healthcheck` check of that name and type.
//! - **Alerts** (`RuleRow`): the file's `risk` processor has the rule with the seed's metric,
//!   operator, thresholds and duration, and points on a simulated clock trip it to the
//!   seed's level (and trip nothing else). Every rule of a file has a row here.
//! - **Limits**: the circuit breakers' limits and action.
//!
//! A seed item taken out of its file, or a threshold changed, fails a test below.
//! `tests/default_config.rs` runs `tradewatch validate` on every file in `pipelines/`.

mod common;

use common::rules::{c, g, Point};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tradewatch::component::{ComponentId, Kind};
use tradewatch::config::{Config, Source};
use tradewatch::processors::risk::rules::{Level, MissingData, Op, Rule, RuleKind};
use tradewatch::processors::risk::Action;

/// The secrets the files read from the environment, as an operator sets them.
const ENV: &[(&str, &str)] = &[
    ("FT_USER", "freqtrader"),
    ("FT_PASS", "unused"),
    (
        "SLACK_WEBHOOK_URL",
        "https://hooks.slack.com/services/T0/B0/x",
    ),
    (
        "AIS_SLACK_WEBHOOK_URL",
        "https://hooks.slack.com/services/T0/B0/y",
    ),
    ("TELEGRAM_BOT_TOKEN", "123:abc"),
    ("TELEGRAM_CHAT_ID", "-100123"),
    (
        "ALERT_TOPIC_ARN",
        "arn:aws:sns:us-east-1:123456789012:tradai-alerts-dev",
    ),
];

fn path(file: &str) -> std::path::PathBuf {
    common::repo_root().join("pipelines").join(file)
}

fn source(file: &str) -> Source {
    let path = path(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    Source::from_text(path.display().to_string(), &text, &|k| {
        ENV.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn load(file: &str) -> (Source, Config) {
    let src = source(file);
    let cfg = Config::from_source(&src, &tradewatch::registry::builtin())
        .unwrap_or_else(|e| panic!("{file} does not load: {e}"));
    (src, cfg)
}

/// The file as plain TOML, for the keys no public settings type exposes (EMF declarations,
/// health checks, `ratio_to_percent` globs). Names are never `${VAR}`s in these files.
fn raw(file: &str) -> toml::Table {
    std::fs::read_to_string(path(file))
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A metric the file publishes under the seed's name: the declaration renaming `from`.
struct Emf {
    name: &'static str,
    namespace: &'static str,
    from: &'static str,
}

#[derive(Clone, Copy, Debug)]
enum Instrument {
    Gauge,
    Counter,
    UpDown,
    Histogram,
}

/// One of the platform's instruments as its OTel SDK sends it (`send`, `unit`), and the
/// name the seed's dashboards and queries read from Prometheus (`prom`).
struct Served {
    send: &'static str,
    unit: &'static str,
    instrument: Instrument,
    prom: &'static str,
}

const fn served(send: &'static str, instrument: Instrument) -> Served {
    Served {
        send,
        unit: "",
        instrument,
        prom: send,
    }
}

/// A seed alert: the rule as the file must have it, and points that trip it.
struct RuleRow {
    /// The seed's words, for failure messages.
    seed: &'static str,
    rule: &'static str,
    kind: RuleKind,
    /// Empty for a composite rule.
    metric: &'static str,
    op: Op,
    warning: Option<f64>,
    critical: Option<f64>,
    for_secs: u64,
    /// Increase rules: the factor on the increase (1 when not set).
    scale: f64,
    /// What a series that stops arriving means, where the seed says.
    missing: Option<MissingData>,
    /// Composite rules: the rules they combine.
    any_of: &'static [&'static str],
    points: Vec<Point>,
    /// A clock tick after the points, at this many seconds.
    tick: Option<u64>,
    want: Level,
}

#[allow(clippy::too_many_arguments)]
fn rule(
    seed: &'static str,
    rule: &'static str,
    metric: &'static str,
    op: Op,
    warning: Option<f64>,
    critical: Option<f64>,
    for_secs: u64,
    points: Vec<Point>,
    want: Level,
) -> RuleRow {
    RuleRow {
        seed,
        rule,
        kind: RuleKind::Threshold,
        metric,
        op,
        warning,
        critical,
        for_secs,
        scale: 1.0,
        missing: None,
        any_of: &[],
        points,
        tick: None,
        want,
    }
}

impl RuleRow {
    fn kind(mut self, kind: RuleKind) -> RuleRow {
        self.kind = kind;
        self
    }
    fn tick(mut self, t: u64) -> RuleRow {
        self.tick = Some(t);
        self
    }
    fn scale(mut self, s: f64) -> RuleRow {
        self.scale = s;
        self
    }
    fn missing(mut self, m: MissingData) -> RuleRow {
        self.missing = Some(m);
        self
    }
    fn any_of(mut self, rules: &'static [&'static str]) -> RuleRow {
        self.any_of = rules;
        self
    }
}

/// The circuit breaker: drawdown %, open trades, leverage, daily loss %, failed polls, action.
type LimitsRow = (
    f64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<u32>,
    Action,
);

struct Seed {
    id: &'static str,
    /// The platform the seed describes, named in the file's first line.
    platform: &'static str,
    file: &'static str,
    emf: Vec<Emf>,
    served: Vec<Served>,
    /// The environment variable that moves the Prometheus endpoint, and its value's form.
    prometheus_env: Option<(&'static str, &'static str)>,
    checks: Vec<(&'static str, &'static str)>,
    rules: Vec<RuleRow>,
    limits: Option<LimitsRow>,
    /// The alert channels (exporters of a pipeline the `alerts` receiver feeds).
    channels: &'static [&'static str],
    /// Settings the seed gives (intervals, timeouts, ports), as the file resolves them
    /// with no variable set: (component, key path, value).
    settings: &'static [(&'static str, &'static str, &'static str)],
}

// A table, one item a line where it fits: kept as written.
#[rustfmt::skip]
fn seeds() -> Vec<Seed> {
    use Instrument::*;
    use Level::*;
    let bot = &[("bot", "main")][..];
    let services = ("healthcheck", "healthcheck/services");
    vec![
        // --- 000 TradAI ---------------------------------------------------------------
        Seed {
            id: "000",
            platform: "TradAI",
            file: "tradai.toml",
            emf: vec![
                // §8 custom namespaces
                Emf { name: "ServiceHealthy", namespace: "tradai/ServiceHealth", from: "healthcheck.up" },
                Emf { name: "HealthCheckLatency", namespace: "tradai/ServiceHealth", from: "healthcheck.latency" },
                Emf { name: "ConsecutiveFailures", namespace: "tradai/ServiceHealth", from: "healthcheck.consecutive_failures" },
                Emf { name: "ActiveStrategies", namespace: "tradai/TradingHealth", from: "freqtrade.bot.state" },
                Emf { name: "StaleHeartbeats", namespace: "tradai/TradingHealth", from: "freqtrade.up" },
                Emf { name: "HealthyHeartbeats", namespace: "tradai/TradingHealth", from: "freqtrade.up" },
                // §3 StrategyPnL and LiveTrade fields, in percent where the seed has *_pct
                Emf { name: "realized_pnl_pct", namespace: "tradai/StrategyPnL", from: "freqtrade.profit.realized.pct" },
                Emf { name: "unrealized_pnl_pct", namespace: "tradai/StrategyPnL", from: "freqtrade.profit.unrealized.pct" },
                Emf { name: "drawdown_pct", namespace: "tradai/StrategyPnL", from: "freqtrade.drawdown.current.pct" },
                Emf { name: "open_trades", namespace: "tradai/StrategyPnL", from: "freqtrade.trades.open" },
                Emf { name: "closed_trades", namespace: "tradai/StrategyPnL", from: "freqtrade.trades.closed" },
                Emf { name: "profit_pct", namespace: "tradai/StrategyPnL", from: "freqtrade.trade.profit.pct" },
                Emf { name: "stake_amount", namespace: "tradai/StrategyPnL", from: "freqtrade.trade.stake" },
                Emf { name: "leverage", namespace: "tradai/StrategyPnL", from: "freqtrade.trade.leverage" },
            ],
            served: vec![],
            prometheus_env: None,
            // §4 pre-built health checkers, and the services the health-check Lambda probes
            checks: vec![
                ("redis", "redis"),
                ("database", "postgres"),
                ("trading-state", "dynamodb"),
                ("backtest-queue", "sqs"),
                ("artifacts", "s3"),
                ("alerts-topic", "sns"),
                ("mlflow", "http"),
                ("backend-api", "http"),
                ("data-collection", "http"),
                ("strategy-service", "http"),
            ],
            rules: vec![
                rule("§4 heartbeat failures: alert after 3 consecutive", "HeartbeatFailing",
                    "freqtrade.poll.consecutive_failures", Op::Ge, None, Some(3.0), 0,
                    vec![g(0, "freqtrade.poll.consecutive_failures", bot, 2.0),
                         g(30, "freqtrade.poll.consecutive_failures", bot, 3.0)], Critical),
                rule("§8 ServiceHealthy < 1 for 2 periods of 120 s, missing data breaching", "ServiceUnhealthy",
                    "healthcheck.up", Op::Lt, None, Some(1.0), 240,
                    vec![g(0, "healthcheck.up", &[services, ("check", "backend-api")], 0.0),
                         g(240, "healthcheck.up", &[services, ("check", "backend-api")], 0.0)], Critical)
                    .missing(MissingData::Breaching),
                rule("§8 HealthCheckLatency > 5000 ms for 3 periods of 120 s (seconds here)", "ServiceLatencyHigh",
                    "healthcheck.latency", Op::Gt, Some(5000.0 / 1000.0), None, 360,
                    vec![g(0, "healthcheck.latency", &[services, ("check", "mlflow")], 6.0),
                         g(360, "healthcheck.latency", &[services, ("check", "mlflow")], 7.0)], Warning)
                    .missing(MissingData::NotBreaching),
                rule("§8 StaleHeartbeats >= 1 for 2 periods of 300 s (a bot not answering)", "StaleHeartbeats",
                    "freqtrade.up", Op::Lt, None, Some(1.0), 600,
                    vec![g(0, "freqtrade.up", bot, 0.0), g(600, "freqtrade.up", bot, 0.0)], Critical)
                    .missing(MissingData::NotBreaching),
                rule("§8 ActiveStrategies < configured minimum (1)", "ActiveStrategiesLow",
                    "freqtrade.bot.state", Op::Lt, Some(1.0), None, 0,
                    vec![g(0, "freqtrade.bot.state", &[("bot", "main"), ("state", "running")], 0.0)], Warning),
                rule("§8 Lambda Errors >= 1", "LambdaErrors", "Errors", Op::Ge, None, Some(1.0), 0,
                    vec![g(0, "Errors", &[("namespace", "AWS/Lambda"), ("function_name", "health-check")], 1.0)], Critical),
                rule("§8 DLQ ApproximateNumberOfMessagesVisible > 0", "DeadLetterQueueNotEmpty",
                    "ApproximateNumberOfMessagesVisible", Op::Gt, None, Some(0.0), 0,
                    vec![g(0, "ApproximateNumberOfMessagesVisible", &[("queue_name", "tradai-dlq")], 3.0)], Critical),
                rule("§8 DriftDetected >= 1", "InfrastructureDrift", "DriftDetected", Op::Ge, Some(1.0), None, 0,
                    vec![g(0, "DriftDetected", &[], 1.0)], Warning),
                rule("§8 RDS CPUUtilization > 80 % for 2 periods of 300 s", "RdsCpuHigh", "CPUUtilization",
                    Op::Gt, Some(80.0), None, 600,
                    vec![g(0, "CPUUtilization", &[("namespace", "AWS/RDS")], 85.0),
                         g(600, "CPUUtilization", &[("namespace", "AWS/RDS")], 90.0)], Warning),
                rule("§8 RDS FreeStorageSpace < 2 GB", "RdsStorageLow", "FreeStorageSpace", Op::Lt, None,
                    Some(2.0 * 1024.0 * 1024.0 * 1024.0), 0,
                    vec![g(0, "FreeStorageSpace", &[], 1.5e9)], Critical),
                rule("§8 API 5xx / Count × 100 > 1 % for 2 periods of 300 s", "Api5xxRateHigh", "5XXError",
                    Op::Gt, None, Some(1.0), 600,
                    vec![c(0, "Count", &[], 0.0), c(0, "5XXError", &[], 0.0),
                         c(300, "Count", &[], 1000.0), c(300, "5XXError", &[], 20.0),
                         c(600, "Count", &[], 2000.0), c(600, "5XXError", &[], 40.0),
                         c(900, "Count", &[], 3000.0), c(900, "5XXError", &[], 60.0)], Critical)
                    .kind(RuleKind::Increase).scale(100.0),
                rule("§8 Step Functions ExecutionsFailed > 0", "StepFunctionFailures", "ExecutionsFailed",
                    Op::Gt, None, Some(0.0), 0,
                    vec![g(0, "ExecutionsFailed", &[("state_machine", "backtest")], 1.0)], Critical),
                rule("§8 composite alarm tradai-system-health", "SystemHealth", "", Op::Gt, None, None, 0,
                    vec![g(0, "FreeStorageSpace", &[], 1.0e9)], Critical)
                    .kind(RuleKind::Composite)
                    .any_of(&["ServiceUnhealthy", "StaleHeartbeats", "RdsCpuHigh", "RdsStorageLow", "Api5xxRateHigh", "StepFunctionFailures"]),
            ],
            // §5 RiskLimits: 20 %, 5 trades, 3x, pause; fail-closed after 5 failed polls
            limits: Some((20.0, Some(5.0), Some(3.0), None, Some(5), Action::Pause)),
            // §8: every alarm notifies the SNS topic
            channels: &["sns"],
            settings: &[
                // §3: the HealthReporter polls every 30 s, JWT auth, 5 s per call
                ("receivers.freqtrade/main", "interval", "30s"),
                ("receivers.freqtrade/main", "timeout", "5s"),
                ("receivers.freqtrade/main", "auth", "jwt"),
                // §8: the health-check Lambda every 2 min; §4: HealthService's 5 s, AWS 3 s
                ("receivers.healthcheck/services", "interval", "120s"),
                ("receivers.healthcheck/deps", "timeout", "5s"),
                ("receivers.healthcheck/deps", "checks.2.timeout", "3s"),
                // §4: MLflow is non-critical
                ("receivers.healthcheck/services", "checks.3.name", "mlflow"),
                ("receivers.healthcheck/services", "checks.3.critical", "false"),
            ],
        },
        // --- 001 alpha-oracle -----------------------------------------------------------
        Seed {
            id: "001",
            platform: "alpha-oracle",
            file: "alpha-oracle.toml",
            emf: vec![],
            served: vec![
                served("trading_system_info", Gauge),
                served("trading_orders_total", Counter),
                served("trading_trades_total", Counter),
                served("trading_trade_pnl_dollars", Histogram),
                served("trading_portfolio_equity_dollars", Gauge),
                served("trading_portfolio_cash_dollars", Gauge),
                served("trading_portfolio_positions_count", Gauge),
                served("trading_portfolio_daily_pnl_dollars", Gauge),
                served("trading_portfolio_daily_pnl_pct", Gauge),
                served("trading_portfolio_drawdown_pct", Gauge),
                served("trading_risk_checks_total", Counter),
                served("trading_pdt_trades_used", Gauge),
                served("trading_circuit_breakers_tripped", Gauge),
                served("trading_kill_switch_active", Gauge),
                served("trading_fill_latency_ms", Histogram),
                served("trading_slippage_bps", Histogram),
                served("trading_ml_model_accuracy", Gauge),
                served("trading_ml_psi_drift", Gauge),
            ],
            // "Prometheus metrics on port 8001", SA_MONITORING__PROMETHEUS_PORT overrides it
            prometheus_env: Some(("SA_MONITORING__PROMETHEUS_PORT", "{port}")),
            checks: vec![
                ("broker", "tcp"),
                ("feed", "tcp"),
                ("database", "postgres"),
                ("redis", "redis"),
                ("api", "http"),
            ],
            rules: vec![
                rule("PDT warning: 2 day trades used; critical: 3", "PdtLimit", "trading_pdt_trades_used",
                    Op::Ge, Some(2.0), Some(3.0), 0,
                    vec![g(0, "trading_pdt_trades_used", &[], 3.0)], Critical),
                rule("Drawdown warning > 5 %; critical > 8 %", "PortfolioDrawdown", "trading_portfolio_drawdown_pct",
                    Op::Gt, Some(5.0), Some(8.0), 0,
                    vec![g(0, "trading_portfolio_drawdown_pct", &[], 5.5)], Warning),
                rule("Daily loss warning < -2 %; critical < -2.5 %", "DailyLoss", "trading_portfolio_daily_pnl_pct",
                    Op::Lt, Some(-2.0), Some(-2.5), 0,
                    vec![g(0, "trading_portfolio_daily_pnl_pct", &[], -2.7)], Critical),
                rule("Model drift warning PSI > 0.1; critical > 0.2", "ModelDrift", "trading_ml_psi_drift",
                    Op::Gt, Some(0.1), Some(0.2), 0,
                    vec![g(0, "trading_ml_psi_drift", &[], 0.12)], Warning),
                rule("Kill switch activation", "KillSwitchActive", "trading_kill_switch_active",
                    Op::Gt, None, Some(0.0), 0,
                    vec![g(0, "trading_kill_switch_active", &[], 1.0)], Critical),
                rule("Broker disconnect", "BrokerDisconnected", "healthcheck.up", Op::Lt, None, Some(1.0), 0,
                    vec![g(0, "healthcheck.up", &[("check", "broker")], 0.0)], Critical)
                    .missing(MissingData::Breaching),
                rule("Feed disconnect (probes stopped: missing data breaches)", "FeedDisconnected",
                    "healthcheck.up", Op::Lt, None, Some(1.0), 0,
                    vec![g(0, "healthcheck.up", &[("check", "feed")], 1.0)], Critical)
                    .tick(301).missing(MissingData::Breaching),
            ],
            // the circuit breaker trips at 10 % drawdown and at -3 % daily P&L: alert only
            limits: Some((10.0, None, None, Some(3.0), None, Action::AlertOnly)),
            // AlertManager channels: log, Slack, Telegram
            channels: &["log", "slack", "telegram"],
            settings: &[
                ("exporters.prometheus", "endpoint", "0.0.0.0:8001"),
                ("exporters.prometheus", "path", "/metrics"),
                ("receivers.healthcheck/connectivity", "interval", "60s"),
            ],
        },
        // --- 002 Trading Platform --------------------------------------------------------
        Seed {
            id: "002",
            platform: "Trading Platform",
            file: "trading-platform.toml",
            emf: vec![],
            served: vec![
                // §4.1 system health
                served("system_active_pipelines", Gauge),
                served("system_total_pipelines", Gauge),
                served("system_signal_pipelines", Gauge),
                served("system_periodic_pipelines", Gauge),
                served("system_active_users", Gauge),
                served("system_total_users", Gauge),
                Served { send: "system_executions_today", unit: "executions", instrument: Gauge, prom: "system_executions_today_executions" },
                Served { send: "system_executions_running", unit: "executions", instrument: Gauge, prom: "system_executions_running_executions" },
                Served { send: "system_executions_pending", unit: "executions", instrument: Gauge, prom: "system_executions_pending_executions" },
                Served { send: "system_success_rate_24h", unit: "%", instrument: Gauge, prom: "system_success_rate_24h_percent" },
                // §4.2 pipeline execution
                served("pipeline_executions_total", Counter),
                Served { send: "pipeline_execution_duration", unit: "s", instrument: Histogram, prom: "pipeline_execution_duration_seconds" },
                Served { send: "pipeline_agent_execution_duration", unit: "s", instrument: Histogram, prom: "pipeline_agent_execution_duration_seconds" },
                served("pipeline_execution_cost", Histogram),
                // §4.3 signal system
                served("signals_generated_total", Counter),
                Served { send: "signal_generation_duration", unit: "s", instrument: Histogram, prom: "signal_generation_duration_seconds" },
                served("kafka_publish_success_total", Counter),
                served("kafka_publish_failure_total", Counter),
                Served { send: "kafka_publish_duration", unit: "s", instrument: Histogram, prom: "kafka_publish_duration_seconds" },
                served("signals_consumed_total", Counter),
                served("pipelines_matched_total", Counter),
                served("pipelines_enqueued_total", Counter),
                served("pipelines_skipped_running_total", Counter),
                served("pipeline_cache_size", Gauge),
                Served { send: "batch_processing_duration", unit: "s", instrument: Histogram, prom: "batch_processing_duration_seconds" },
                // §4.4 auto-instrumented, under OpenTelemetry's semantic-convention names
                Served { send: "http.server.request.duration", unit: "s", instrument: Histogram, prom: "http_server_request_duration_seconds" },
                Served { send: "http.server.active_requests", unit: "{request}", instrument: UpDown, prom: "http_server_active_requests" },
                Served { send: "http.server.requests", unit: "{request}", instrument: Counter, prom: "http_server_requests_total" },
                Served { send: "db.client.operation.duration", unit: "s", instrument: Histogram, prom: "db_client_operation_duration_seconds" },
                Served { send: "db.client.connections.usage", unit: "{connection}", instrument: UpDown, prom: "db_client_connections_usage" },
                Served { send: "redis.command.duration", unit: "s", instrument: Histogram, prom: "redis_command_duration_seconds" },
                Served { send: "redis.commands", unit: "{command}", instrument: Counter, prom: "redis_commands_total" },
            ],
            prometheus_env: Some(("TRADEWATCH_PROMETHEUS", "127.0.0.1:{port}")),
            // §3.2 row 2: the four services UP/DOWN
            checks: vec![
                ("backend", "http"),
                ("celery-worker", "http"),
                ("signal-generator", "http"),
                ("trigger-dispatcher", "http"),
            ],
            rules: vec![
                rule("§5.1 HighExecutionFailureRate: rate(pipeline_executions_total{status=\"failed\"}[5m]) > 0.1 for 5m, warning",
                    "HighExecutionFailureRate", "pipeline_executions_total", Op::Gt, Some(0.1), None, 300,
                    vec![c(0, "pipeline_executions_total", &[("status", "failed")], 0.0),
                         c(300, "pipeline_executions_total", &[("status", "failed")], 60.0),
                         c(600, "pipeline_executions_total", &[("status", "failed")], 120.0),
                         c(900, "pipeline_executions_total", &[("status", "failed")], 180.0)], Warning)
                    .kind(RuleKind::Increase).scale(1.0 / 300.0),
                rule("§5.1 ServiceDown: up == 0 for 1m, critical", "ServiceDown", "healthcheck.up",
                    Op::Eq, None, Some(0.0), 60,
                    vec![g(0, "healthcheck.up", &[services, ("check", "celery-worker")], 0.0),
                         g(60, "healthcheck.up", &[services, ("check", "celery-worker")], 0.0)], Critical),
            ],
            limits: None,
            // §5.2: email and PagerDuty through Alertmanager, Slack
            channels: &["alertmanager", "slack"],
            settings: &[
                // §2.1: scraped on :8001 every 15 s
                ("exporters.prometheus", "endpoint", "0.0.0.0:8001"),
                ("receivers.healthcheck/services", "interval", "15s"),
                ("receivers.healthcheck/services", "checks.0.url", "http://127.0.0.1:18001/metrics"),
                ("exporters.otlp/jaeger", "protocol", "grpc"),
            ],
        },
        // --- 003 AIS ------------------------------------------------------------------------
        Seed {
            id: "003",
            platform: "AIS",
            file: "ais.toml",
            emf: vec![],
            served: vec![
                served("ais_drawdown", Gauge),
                served("ais_leverage", Gauge),
                served("ais_kill_switch_triggers_total", Counter),
                served("ais_risk_rejections_total", Counter),
                served("ais_aster_errors_total", Counter),
            ],
            prometheus_env: Some(("TRADEWATCH_PROMETHEUS", "127.0.0.1:{port}")),
            checks: vec![],
            rules: vec![
                rule("ais_drawdown > 0.04", "AisDrawdownApproachingLimit", "ais_drawdown", Op::Gt,
                    Some(0.04), None, 0, vec![g(0, "ais_drawdown", &[], 0.05)], Warning),
                rule("ais_leverage > 2.5", "AisLeverageHigh", "ais_leverage", Op::Gt, Some(2.5), None, 0,
                    vec![g(0, "ais_leverage", &[], 2.7)], Warning),
                rule("ais_kill_switch_triggers_total > 0", "AisKillSwitchTriggered",
                    "ais_kill_switch_triggers_total", Op::Gt, None, Some(0.0), 0,
                    vec![c(0, "ais_kill_switch_triggers_total", &[], 0.0),
                         c(15, "ais_kill_switch_triggers_total", &[], 1.0)], Critical)
                    .kind(RuleKind::Increase),
                rule("ais_risk_rejections_total increasing", "AisRiskRejectionsIncreasing",
                    "ais_risk_rejections_total", Op::Gt, Some(0.0), None, 0,
                    vec![c(0, "ais_risk_rejections_total", &[("reason", "exposure")], 4.0),
                         c(15, "ais_risk_rejections_total", &[("reason", "exposure")], 6.0)], Warning)
                    .kind(RuleKind::Increase),
                rule("ais_aster_errors_total increasing", "AisExchangeErrorsIncreasing",
                    "ais_aster_errors_total", Op::Gt, Some(0.0), None, 0,
                    vec![c(0, "ais_aster_errors_total", &[], 10.0),
                         c(15, "ais_aster_errors_total", &[], 11.0)], Warning)
                    .kind(RuleKind::Increase),
            ],
            limits: None,
            // Alertmanager (:9093, webhook by default), Slack #trading-alerts
            channels: &["alertmanager", "slack"],
            settings: &[
                ("exporters.alertmanager", "endpoint", "http://127.0.0.1:9093"),
                ("exporters.slack", "channel", "#trading-alerts"),
                ("exporters.prometheus", "path", "/metrics"),
            ],
        },
        // --- 004 ATB ------------------------------------------------------------------------
        Seed {
            id: "004",
            platform: "ATB",
            file: "atb.toml",
            emf: vec![],
            served: vec![],
            prometheus_env: None,
            // Health endpoints: /health and /status (database, Binance API reachability)
            checks: vec![
                ("live-health", "http"),
                ("live-status", "http"),
                ("database", "postgres"),
                ("binance-api", "http"),
            ],
            rules: vec![
                rule("alerts for database connection failures", "DatabaseConnectionFailure",
                    "healthcheck.up", Op::Lt, None, Some(1.0), 0,
                    vec![g(0, "healthcheck.up", &[("check", "database")], 0.0)], Critical),
                rule("/health wired into uptime monitors", "LiveHealthDown", "healthcheck.up",
                    Op::Lt, None, Some(1.0), 60,
                    vec![g(0, "healthcheck.up", &[("check", "live-health")], 0.0),
                         g(60, "healthcheck.up", &[("check", "live-health")], 0.0)], Critical),
            ],
            limits: None,
            channels: &["log"],
            settings: &[
                // PORT / HEALTH_CHECK_PORT default 8000
                ("receivers.healthcheck/atb", "checks.0.url", "http://127.0.0.1:8000/health"),
                ("receivers.healthcheck/atb", "checks.1.url", "http://127.0.0.1:8000/status"),
            ],
        },
    ]
}

#[test]
fn every_seed_has_its_file_and_every_file_loads() {
    for seed in seeds() {
        // The file says which seed and platform it answers (mapped from the seeds' texts).
        let text =
            std::fs::read_to_string(common::repo_root().join("pipelines").join(seed.file)).unwrap();
        let header = format!("# Seed {}, {}:", seed.id, seed.platform);
        assert!(
            text.starts_with(&header),
            "{} opens with {header:?}",
            seed.file
        );
        load(seed.file);
    }
}

/// The `risk` processors of a file and their rules, by processor id.
fn risk_rules(src: &Source, cfg: &Config) -> Vec<(ComponentId, Vec<Rule>)> {
    cfg.processors
        .keys()
        .filter(|id| id.type_name() == "risk")
        .map(|id| {
            let s = tradewatch::processors::risk::settings(src, id).unwrap();
            (id.clone(), s.rules)
        })
        .collect()
}

#[test]
fn every_seed_alert_is_a_rule_with_the_seeds_threshold_and_trips_at_its_level() {
    let mut failures = Vec::new();
    for seed in seeds() {
        let (src, cfg) = load(seed.file);
        let processors = risk_rules(&src, &cfg);
        let in_file: BTreeSet<String> = processors
            .iter()
            .flat_map(|(_, rules)| rules.iter().map(|r| r.name.clone()))
            .collect();
        let in_table: BTreeSet<String> = seed.rules.iter().map(|r| r.rule.to_owned()).collect();
        for missing in in_table.difference(&in_file) {
            failures.push(format!("{}: seed alert {missing} is not a rule", seed.file));
        }
        for extra in in_file.difference(&in_table) {
            failures.push(format!(
                "{}: rule {extra} answers no seed item of this table",
                seed.file
            ));
        }
        for row in &seed.rules {
            let Some((rules, i)) = processors.iter().find_map(|(_, rules)| {
                rules
                    .iter()
                    .position(|r| r.name == row.rule)
                    .map(|i| (rules, i))
            }) else {
                continue;
            };
            let r = &rules[i];
            let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
                _ => false,
            };
            let what = format!("{} {} ({})", seed.file, row.rule, row.seed);
            if r.kind != row.kind {
                failures.push(format!("{what}: kind {:?}, want {:?}", r.kind, row.kind));
            }
            if r.metric != row.metric {
                failures.push(format!(
                    "{what}: metric {:?}, want {:?}",
                    r.metric, row.metric
                ));
            }
            if r.kind != RuleKind::Composite && r.op != row.op {
                failures.push(format!("{what}: op {:?}, want {:?}", r.op, row.op));
            }
            if !close(r.warning, row.warning) || !close(r.critical, row.critical) {
                failures.push(format!(
                    "{what}: warning {:?} critical {:?}, want {:?} {:?}",
                    r.warning, r.critical, row.warning, row.critical
                ));
            }
            if r.for_ != Duration::from_secs(row.for_secs) {
                failures.push(format!("{what}: for {:?}, want {}s", r.for_, row.for_secs));
            }
            if !close(Some(r.scale), Some(row.scale)) {
                failures.push(format!("{what}: scale {}, want {}", r.scale, row.scale));
            }
            let any_of: BTreeSet<&str> = r.any_of.iter().map(String::as_str).collect();
            if any_of != row.any_of.iter().copied().collect() {
                failures.push(format!("{what}: any_of {any_of:?}, want {:?}", row.any_of));
            }
            if row.missing.is_some_and(|m| m != r.missing_data) {
                failures.push(format!(
                    "{what}: missing_data {:?}, want {:?}",
                    r.missing_data, row.missing
                ));
            }
            if let Err(e) = common::rules::trip(rules, i, &row.points, row.tick, row.want) {
                failures.push(format!("{what}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_seed_limit_is_configured() {
    for seed in seeds() {
        let Some((dd, trades, lev, daily, fail, action)) = seed.limits else {
            continue;
        };
        let src = source(seed.file);
        let s = tradewatch::processors::risk::settings(&src, &ComponentId::parse("risk").unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", seed.file));
        let l = &s.defaults;
        let what = seed.file;
        assert_eq!(l.max_drawdown_pct, dd, "{what}: max_drawdown_pct");
        assert_eq!(l.max_daily_loss_pct, daily, "{what}: max_daily_loss_pct");
        assert_eq!(l.action, action, "{what}: action_on_breach");
        // A limit the seed has is on (its input named) with the seed's value; one it has
        // not is off (its input empty).
        let on = |input: &str, limit: f64, want: Option<f64>| match want {
            Some(w) => assert!(
                !input.is_empty() && limit == w,
                "{what}: limit {w} (input {input:?}, limit {limit})"
            ),
            None => assert!(input.is_empty(), "{what}: input {input:?} should be off"),
        };
        assert!(
            !s.inputs.drawdown.is_empty(),
            "{what}: the drawdown limit has no input"
        );
        if daily.is_some() {
            let i = &s.inputs;
            assert!(
                !i.daily_pnl_pct.is_empty() || !(i.profit.is_empty() || i.balance.is_empty()),
                "{what}: the daily loss limit has no input"
            );
        }
        on(&s.inputs.open_trades, l.max_open_trades, trades);
        on(&s.inputs.leverage, l.max_leverage, lev);
        match fail {
            Some(n) => assert!(
                !s.inputs.consecutive_failures.is_empty() && l.fail_closed_after == n,
                "{what}: fail-closed after {n}"
            ),
            None => assert!(
                s.inputs.consecutive_failures.is_empty(),
                "{what}: fail-closed off"
            ),
        }
        if seed.id == "000" {
            // Pauses the bot through the receiver polling it.
            assert_eq!(
                s.control.as_deref(),
                Some("freqtrade/main"),
                "{what}: control"
            );
        }
    }
}

/// `[exporters.*]` tables of the given type, by full id.
fn exporters_of<'a>(raw: &'a toml::Table, types: &[&str]) -> Vec<(String, &'a toml::Table)> {
    raw.get("exporters")
        .and_then(|e| e.as_table())
        .into_iter()
        .flat_map(|t| t.iter())
        .filter(|(id, _)| types.contains(&id.split('/').next().unwrap()))
        .filter_map(|(id, v)| v.as_table().map(|t| (id.clone(), t)))
        .collect()
}

#[test]
fn every_seed_metric_published_by_declaration_is_declared_and_produced() {
    let mut failures = Vec::new();
    for seed in seeds() {
        if seed.emf.is_empty() {
            continue;
        }
        let (_, cfg) = load(seed.file);
        let raw = raw(seed.file);
        let exporters = exporters_of(&raw, &["cloudwatch_emf", "cloudwatch"]);
        for m in &seed.emf {
            let what = format!("{} {} ({})", seed.file, m.name, m.namespace);
            let found = exporters.iter().find(|(_, t)| {
                t.get("metrics")
                    .and_then(|d| d.as_array())
                    .into_iter()
                    .flatten()
                    .any(|d| {
                        d.get("rename").and_then(|v| v.as_str()) == Some(m.name)
                            && d.get("namespace").and_then(|v| v.as_str()) == Some(m.namespace)
                            && d.get("match").and_then(|v| v.as_str()) == Some(m.from)
                    })
            });
            let Some((exporter, _)) = found else {
                failures.push(format!("{what}: no declaration renames {} to it", m.from));
                continue;
            };
            // A pipeline to that exporter produces `from`.
            let produced = cfg.pipelines.iter().any(|p| {
                p.exporters.iter().any(|e| e.as_str() == exporter) && produces(&raw, p, m.from)
            });
            if !produced {
                failures.push(format!(
                    "{what}: no pipeline to {exporter} produces {}",
                    m.from
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Whether pipeline `p` produces metric `name`: a receiver that emits it (README's tables
/// for `freqtrade` and `healthcheck`), in percent only through a `ratio_to_percent` whose
/// globs take its ratio.
fn produces(raw: &toml::Table, p: &tradewatch::config::PipelineConfig, name: &str) -> bool {
    let source = name.split('.').next().unwrap();
    if !p.receivers.iter().any(|r| r.type_name() == source) {
        return false;
    }
    let Some(base) = name.strip_suffix(".pct") else {
        return true;
    };
    let ratio = format!("{base}.ratio");
    p.processors
        .iter()
        .filter(|id| id.type_name() == "ratio_to_percent")
        .any(|id| {
            let table = raw["processors"][id.as_str()].as_table().unwrap();
            table
                .get("metrics")
                .and_then(|m| m.as_array())
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str())
                .any(|g| glob::Pattern::new(g).is_ok_and(|p| p.matches(&ratio)))
        })
}

#[test]
fn every_seed_probe_is_a_health_check() {
    let mut failures = Vec::new();
    for seed in seeds() {
        let raw = raw(seed.file);
        let mut checks = BTreeMap::new();
        if let Some(receivers) = raw.get("receivers").and_then(|r| r.as_table()) {
            for (id, t) in receivers {
                if id.split('/').next() != Some("healthcheck") {
                    continue;
                }
                for c in t
                    .get("checks")
                    .and_then(|c| c.as_array())
                    .into_iter()
                    .flatten()
                {
                    let name = c["name"].as_str().unwrap().to_owned();
                    let kind = c["type"].as_str().unwrap().to_owned();
                    checks.insert(name, kind);
                }
            }
        }
        for (name, kind) in &seed.checks {
            match checks.get(*name) {
                Some(k) if k == kind => {}
                other => failures.push(format!(
                    "{}: check {name} ({kind}): found {other:?}",
                    seed.file
                )),
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// An OTLP/JSON metrics request holding one point of every row, as the platform's SDK
/// would send it.
fn otlp_request(rows: &[Served]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let start = now - 60_000_000_000;
    let attrs = serde_json::json!([{"key": "strategy", "value": {"stringValue": "SwingMomentum"}}]);
    let metrics: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let point = serde_json::json!({
                "attributes": attrs,
                "startTimeUnixNano": start.to_string(),
                "timeUnixNano": now.to_string(),
                "asDouble": 2.0,
            });
            let data = match r.instrument {
                Instrument::Gauge => ("gauge", serde_json::json!({"dataPoints": [point]})),
                Instrument::Counter | Instrument::UpDown => (
                    "sum",
                    serde_json::json!({
                        "dataPoints": [point],
                        "aggregationTemporality": 2,
                        "isMonotonic": matches!(r.instrument, Instrument::Counter),
                    }),
                ),
                Instrument::Histogram => (
                    "histogram",
                    serde_json::json!({
                        "dataPoints": [{
                            "attributes": attrs,
                            "startTimeUnixNano": start.to_string(),
                            "timeUnixNano": now.to_string(),
                            "count": "3",
                            "sum": 7.5,
                            "bucketCounts": ["1", "1", "1"],
                            "explicitBounds": [1.0, 5.0],
                        }],
                        "aggregationTemporality": 2,
                    }),
                ),
            };
            let mut m = serde_json::json!({"name": r.send, "unit": r.unit});
            m[data.0] = data.1;
            m
        })
        .collect();
    serde_json::json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "platform"}}]},
        "scopeMetrics": [{"scope": {"name": "seed"}, "metrics": metrics}],
    }]})
    .to_string()
}

/// The platform's instruments, sent over OTLP to the real binary running the seed's file,
/// come out of its Prometheus endpoint under the names the seed's dashboards read, with
/// the seed's types.
#[test]
fn every_seed_metric_served_to_prometheus_keeps_the_seeds_name() {
    for seed in seeds() {
        if seed.served.is_empty() {
            continue;
        }
        let (env_key, form) = seed.prometheus_env.expect("a movable Prometheus endpoint");
        let text = std::fs::read_to_string(path(seed.file)).unwrap();
        let (grpc, http, service, prom, nobody) = (
            common::free_port(),
            common::free_port(),
            common::free_port(),
            common::free_port(),
            common::free_port(),
        );
        // Channels and upstreams point at a closed loopback port: nothing leaves the machine.
        let closed = format!("http://127.0.0.1:{nobody}");
        let mut env: Vec<(String, String)> = ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.extend([
            ("TRADEWATCH_OTLP_GRPC".into(), format!("127.0.0.1:{grpc}")),
            ("TRADEWATCH_OTLP_HTTP".into(), format!("127.0.0.1:{http}")),
            (
                "TRADEWATCH_SERVICE_HTTP".into(),
                format!("127.0.0.1:{service}"),
            ),
            (env_key.into(), form.replace("{port}", &prom.to_string())),
            ("ALPHA_METRICS_HOST".into(), "127.0.0.1".into()),
            ("SLACK_WEBHOOK_URL".into(), format!("{closed}/slack")),
            ("AIS_SLACK_WEBHOOK_URL".into(), format!("{closed}/slack")),
            ("TELEGRAM_API_URL".into(), closed.clone()),
            ("ALERTMANAGER_URL".into(), closed.clone()),
            ("JAEGER_OTLP".into(), closed.clone()),
        ]);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let c = common::Collector::start_with_env(&text, service, &env);
        let body = otlp_request(&seed.served);
        let code = common::post_otlp(http, "metrics", "application/json", body);
        assert_eq!(
            code,
            200,
            "{}: OTLP metrics refused:\n{}",
            seed.file,
            c.logs()
        );
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], prom));
        let missing = |scraped: &str| -> Vec<String> {
            seed.served
                .iter()
                .filter(|r| {
                    let (ty, sample) = match r.instrument {
                        Instrument::Gauge | Instrument::UpDown => {
                            ("gauge", format!("{}{{", r.prom))
                        }
                        Instrument::Counter => ("counter", format!("{}{{", r.prom)),
                        Instrument::Histogram => ("histogram", format!("{}_bucket{{", r.prom)),
                    };
                    let type_line = format!("# TYPE {} {ty}\n", r.prom);
                    !(scraped.contains(&type_line)
                        && scraped.lines().any(|l| l.starts_with(&sample)))
                })
                .map(|r| r.prom.to_owned())
                .collect()
        };
        // Polls until every name is there, then says which are not.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let scraped = common::http_get(addr, "/metrics")
                .map(|(_, b)| b)
                .unwrap_or_default();
            let left = missing(&scraped);
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: not on /metrics within 30 s: {left:?}\n{scraped}\n{}",
                seed.file,
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(c);
    }
}

#[test]
fn every_seed_channel_takes_the_alerts() {
    let mut failures = Vec::new();
    for seed in seeds() {
        let (_, cfg) = load(seed.file);
        let fed: BTreeSet<&str> = cfg
            .pipelines
            .iter()
            .filter(|p| p.receivers.iter().any(|r| r.type_name() == "alerts"))
            .flat_map(|p| p.exporters.iter().map(|e| e.as_str()))
            .collect();
        for ch in seed.channels {
            if !fed.contains(ch) {
                failures.push(format!("{}: alerts do not reach {ch} ({fed:?})", seed.file));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The value at `path` (`a.b.0.c`) in a component's table, as the file resolves it.
fn setting(src: &Source, component: &str, path: &str) -> Option<String> {
    let (table, id) = component.split_once('.').unwrap();
    let kind = match table {
        "receivers" => Kind::Receiver,
        "processors" => Kind::Processor,
        _ => Kind::Exporter,
    };
    let t: toml::Table =
        tradewatch::config::component_config(src, kind, &ComponentId::parse(id).unwrap()).ok()?;
    let mut v = toml::Value::Table(t);
    for k in path.split('.') {
        v = match k.parse::<usize>() {
            Ok(i) => v.get(i)?.clone(),
            Err(_) => v.get(k)?.clone(),
        };
    }
    Some(match v {
        toml::Value::String(s) => s,
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        other => format!("{other:?}"),
    })
}

#[test]
fn every_seed_setting_is_the_seeds() {
    let mut failures = Vec::new();
    for seed in seeds() {
        let src = source(seed.file);
        for (component, path, want) in seed.settings {
            let got = setting(&src, component, path);
            if got.as_deref() != Some(*want) {
                failures.push(format!(
                    "{}: {component}.{path} = {got:?}, want {want:?}",
                    seed.file
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
