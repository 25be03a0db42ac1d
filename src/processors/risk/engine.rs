//! The risk engine: one per processor id, shared by its instances in every pipeline.

use super::config::{Action, DrawdownUnit, Limits, Settings};
use super::rules::{Level, Nanos, RuleSet, Sample, SavedSeries, Transition};
use super::saver::{Saver, FILE};
use crate::component::{BuildContext, BuildError};
use crate::otlp::{attr, for_each_metric_point, get_str, value_text, MetricsBuilder, Timestamp};
use crate::pipeline::alerts::{fingerprint, Alert, AlertSink, AlertState, Severity};
use crate::pipeline::controls::Controls;
use crate::receivers::freqtrade::BotControlHandle;
use crate::service::health::ComponentHealth;
use crate::state::StateDir;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::Instrument;

/// The limits, in evaluation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    MaxDrawdown,
    MaxOpenTrades,
    MaxLeverage,
    MaxDailyLoss,
    MonitoringFailure,
}

impl Limit {
    pub const ORDER: [Limit; 5] = [
        Limit::MaxDrawdown,
        Limit::MaxOpenTrades,
        Limit::MaxLeverage,
        Limit::MaxDailyLoss,
        Limit::MonitoringFailure,
    ];

    /// The config key of the limit.
    pub fn key(self) -> &'static str {
        match self {
            Limit::MaxDrawdown => "max_drawdown_pct",
            Limit::MaxOpenTrades => "max_open_trades",
            Limit::MaxLeverage => "max_leverage",
            Limit::MaxDailyLoss => "max_daily_loss_pct",
            Limit::MonitoringFailure => "fail_closed_after",
        }
    }

    /// `alert.name` of its breach.
    pub fn alert_name(self) -> &'static str {
        match self {
            Limit::MaxDrawdown => "MaxDrawdownBreached",
            Limit::MaxOpenTrades => "MaxOpenTradesBreached",
            Limit::MaxLeverage => "MaxLeverageBreached",
            Limit::MaxDailyLoss => "MaxDailyLossBreached",
            Limit::MonitoringFailure => "MonitoringFailure",
        }
    }

    /// The `limit` label: what was measured.
    pub fn label(self) -> &'static str {
        match self {
            Limit::MaxDrawdown => "drawdown_pct",
            Limit::MaxOpenTrades => "open_trades",
            Limit::MaxLeverage => "leverage",
            Limit::MaxDailyLoss => "daily_loss_pct",
            Limit::MonitoringFailure => "consecutive_failures",
        }
    }

    fn threshold(self, l: &Limits) -> Option<f64> {
        match self {
            Limit::MaxDrawdown => Some(l.max_drawdown_pct),
            Limit::MaxOpenTrades => Some(l.max_open_trades),
            Limit::MaxLeverage => Some(l.max_leverage),
            Limit::MaxDailyLoss => l.max_daily_loss_pct,
            Limit::MonitoringFailure => Some(l.fail_closed_after as f64),
        }
    }

    /// Whether `value` breaches `threshold`: reaching a loss limit trips it, counts and
    /// leverage must exceed theirs.
    fn breached(self, value: f64, threshold: f64) -> bool {
        match self {
            Limit::MaxDrawdown | Limit::MaxDailyLoss | Limit::MonitoringFailure => {
                value >= threshold
            }
            Limit::MaxOpenTrades | Limit::MaxLeverage => value > threshold,
        }
    }

    /// What was measured, in a sentence.
    fn words(self) -> &'static str {
        match self {
            Limit::MaxDrawdown => "drawdown",
            Limit::MaxOpenTrades => "open trades",
            Limit::MaxLeverage => "leverage",
            Limit::MaxDailyLoss => "daily loss",
            Limit::MonitoringFailure => "failed polls in a row",
        }
    }

    fn op(self) -> &'static str {
        match self {
            Limit::MaxDrawdown | Limit::MaxDailyLoss | Limit::MonitoringFailure => "≥",
            Limit::MaxOpenTrades | Limit::MaxLeverage => ">",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Limit::MaxDrawdown | Limit::MaxDailyLoss => "%",
            _ => "",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Breach {
    since: Nanos,
    value: f64,
    threshold: f64,
}

/// The action of one breach run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct ActionState {
    action: Option<Action>,
    /// What the bot answered when the action succeeded.
    done: Option<String>,
    attempts: u32,
    last_error: Option<String>,
    #[serde(skip)]
    in_flight: bool,
    #[serde(skip)]
    next_try: Nanos,
    failure_alerted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Run {
    since: Nanos,
    action: ActionState,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct BotRisk {
    #[serde(default)]
    strategy: Option<String>,
    breaches: BTreeMap<Limit, Breach>,
    run: Option<Run>,
    /// The latest value of each input, for the state metrics and `/status`.
    #[serde(skip)]
    values: BTreeMap<Limit, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct DailyBase {
    /// Days since the epoch (UTC).
    day: u64,
    profit: f64,
    balance: f64,
}

/// What `state.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    version: u32,
    bots: BTreeMap<String, BotRisk>,
    #[serde(default)]
    daily: BTreeMap<String, DailyBase>,
    #[serde(default)]
    rules: Vec<SavedSeries>,
}

/// One bot's inputs found in a batch.
#[derive(Debug, Default)]
struct Observed {
    strategy: Option<String>,
    drawdown_pct: Option<f64>,
    open_trades: Option<f64>,
    max_leverage: Option<f64>,
    failures: Option<f64>,
    profit: Option<f64>,
    balance: Option<f64>,
    daily_pnl_pct: Option<f64>,
}

struct Counters {
    breaches: Counter,
    actions_ok: Counter,
    actions_failed: Counter,
    alerts: Counter,
    undecodable: Counter,
}

pub struct Engine {
    settings: Arc<Settings>,
    id: String,
    bots: BTreeMap<String, BotRisk>,
    daily: BTreeMap<String, DailyBase>,
    rules: RuleSet,
    alerts: AlertSink,
    controls: Controls,
    saver: Saver,
    health: Arc<ComponentHealth>,
    counters: Counters,
    /// `/ui`'s board: the risk part of each bot's panel.
    board: Arc<crate::service::board::Board>,
}

pub fn now_nanos() -> Nanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Attributes as text, for matching and labelling.
fn texts(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            let v = kv.value.as_ref().map(value_text).unwrap_or_default();
            (kv.key.clone(), v)
        })
        .collect()
}

/// Two decimals at most: limits are percents, counts and leverages.
fn fmt_short(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

impl Engine {
    pub fn new(settings: Arc<Settings>, ctx: &BuildContext) -> Result<Engine, BuildError> {
        let state = match &settings.state_dir {
            Some(dir) => StateDir::at(dir.clone()),
            None => ctx.state.clone(),
        };
        let health = ctx.health.clone();
        let counters = Counters {
            breaches: health.counter(
                "risk_breaches",
                "Limits that became breached (one per limit and breach).",
                &[],
            ),
            actions_ok: health.counter(
                "risk_actions",
                "Circuit-breaker actions run on bots, by result.",
                &[("result", "ok")],
            ),
            actions_failed: health.counter(
                "risk_actions",
                "Circuit-breaker actions run on bots, by result.",
                &[("result", "failed")],
            ),
            alerts: health.counter(
                "risk_alerts",
                "Alert records raised (breaches, recoveries, rule state changes).",
                &[],
            ),
            undecodable: health.counter(
                "risk_undecodable_batches",
                "Batches that could not be decoded, passed on unevaluated.",
                &[],
            ),
        };
        let write_failures = health.counter(
            "risk_state_write_failures",
            "Failed writes of the risk state file.",
            &[],
        );
        let mut rules = RuleSet::new(settings.rules.clone());
        let mut saved = Saved::default();
        match state.read_blocking(FILE) {
            Ok(None) => {}
            Ok(Some(bytes)) => match serde_json::from_slice::<Saved>(&bytes) {
                Ok(s) => saved = s,
                Err(e) => {
                    // A damaged file must not stop the monitoring: keep it aside, start
                    // clean, and say so loudly.
                    let aside = state.path().join(format!("{FILE}.corrupt"));
                    let _ = std::fs::rename(state.path().join(FILE), &aside);
                    let msg = format!(
                        "the risk state {} is damaged ({e}); moved to {} and starting without breach state",
                        state.path().join(FILE).display(),
                        aside.display()
                    );
                    tracing::error!("{msg}");
                    health.report_error(crate::service::health::State::Degraded, msg);
                }
            },
            Err(e) => {
                return Err(BuildError::new(
                    &ctx.id,
                    format!(
                        "cannot read the risk state {}: {e}",
                        state.path().join(FILE).display()
                    ),
                ))
            }
        }
        rules.restore(saved.rules);
        if !saved.bots.is_empty() {
            let in_run: Vec<&String> = saved
                .bots
                .iter()
                .filter(|(_, b)| b.run.is_some())
                .map(|(n, _)| n)
                .collect();
            tracing::info!(processor = %ctx.id, bots_in_breach = ?in_run, "risk state restored");
        }
        let saver = Saver::start(state, health.clone(), write_failures);
        let engine = Engine {
            settings,
            id: ctx.id.to_string(),
            bots: saved.bots,
            daily: saved.daily,
            rules,
            alerts: ctx.alerts.clone(),
            controls: ctx.controls.clone(),
            saver,
            health: health.clone(),
            counters,
            board: ctx.telemetry.board(),
        };
        Ok(engine)
    }

    pub fn saver(&self) -> Saver {
        self.saver.clone()
    }

    /// Whether the engine reads metric `name` (a limit's input or a rule's metric).
    pub fn reads(&self, name: &str) -> bool {
        self.settings.inputs.reads(name) || self.rules.watches(name)
    }

    pub fn undecodable(&self, e: prost::DecodeError) {
        self.counters.undecodable.inc();
        tracing::warn!(processor = %self.id, "undecodable metrics batch passed on unevaluated: {e}");
    }

    /// Evaluates one request; returns the risk state metrics to append to it.
    pub fn process(
        engine: &Arc<Mutex<Engine>>,
        req: &ExportMetricsServiceRequest,
    ) -> Vec<ResourceMetrics> {
        let now = now_nanos();
        let mut guard = engine.lock().unwrap_or_else(|e| e.into_inner());
        let e = &mut *guard;
        let inputs = &e.settings.inputs;
        let mut observed: BTreeMap<String, Observed> = BTreeMap::new();
        let mut transitions = Vec::new();
        let mut rule_levels: Vec<(usize, String)> = Vec::new();
        let mut resource_text: Option<(usize, Vec<(String, String)>)> = None;
        let mut resource_no = 0usize;
        let mut last_resource: *const () = std::ptr::null();
        for_each_metric_point(req, |m, p| {
            let name = m.metric.name.as_str();
            let watched = e.rules.watches(name);
            let input = inputs.reads(name);
            if !watched && !input {
                return;
            }
            let Some(value) = p.value() else { return };
            if !value.is_finite() {
                return;
            }
            let attrs = p.attributes();
            if input {
                let bot = get_str(attrs, &inputs.bot_attribute).or_else(|| {
                    m.resource
                        .and_then(|r| get_str(&r.attributes, &inputs.bot_attribute))
                });
                if let Some(bot) = bot {
                    let o = observed.entry(bot.to_owned()).or_default();
                    if o.strategy.is_none() {
                        o.strategy = get_str(attrs, "strategy").map(str::to_owned);
                    }
                    let pct = |v: f64| match inputs.drawdown_unit {
                        DrawdownUnit::Percent => v,
                        DrawdownUnit::Ratio => v * 100.0,
                        DrawdownUnit::Auto if m.metric.unit == "%" => v,
                        DrawdownUnit::Auto => v * 100.0,
                    };
                    if name == inputs.drawdown {
                        o.drawdown_pct = Some(pct(value));
                    } else if name == inputs.open_trades {
                        o.open_trades = Some(value);
                    } else if name == inputs.leverage {
                        o.max_leverage = Some(o.max_leverage.map_or(value, |l| l.max(value)));
                    } else if name == inputs.consecutive_failures {
                        o.failures = Some(value);
                    } else if name == inputs.profit {
                        o.profit = Some(value);
                    } else if name == inputs.balance {
                        o.balance = Some(value);
                    } else {
                        o.daily_pnl_pct = Some(value);
                    }
                }
            }
            if watched {
                let res_ptr = m
                    .resource
                    .map_or(std::ptr::null(), |r| r as *const _ as *const ());
                if res_ptr != last_resource || resource_text.is_none() {
                    last_resource = res_ptr;
                    resource_no += 1;
                    resource_text = Some((
                        resource_no,
                        m.resource.map(|r| texts(&r.attributes)).unwrap_or_default(),
                    ));
                }
                let point_attrs = texts(attrs);
                let start = match p {
                    crate::otlp::PointRef::Number(n) => n.start_time_unix_nano,
                    _ => 0,
                };
                e.rules.observe_seen(
                    &Sample {
                        metric: name,
                        kind: m.kind,
                        attrs: &point_attrs,
                        resource: &resource_text.as_ref().expect("set above").1,
                        value,
                        start_unix_nano: start,
                        time_unix_nano: p.time_unix_nano(),
                    },
                    now,
                    &mut transitions,
                    e.settings.emit_state_metrics.then_some(&mut rule_levels),
                );
            }
        });
        let mut changed = !transitions.is_empty();
        for t in transitions {
            e.rule_alert(&t);
        }
        let mut out = Vec::new();
        let mut metrics = MetricsBuilder::new();
        let mut any_metrics = false;
        if e.settings.emit_state_metrics {
            metrics
                .resource([attr("service.name", "tradewatch")])
                .scope("tradewatch.risk", env!("CARGO_PKG_VERSION"));
        }
        for (bot, o) in observed {
            changed |= e.evaluate_bot(engine, &bot, o, now);
            e.publish_panel(&bot);
            if e.settings.emit_state_metrics {
                e.state_metrics(&mut metrics, &bot);
                any_metrics = true;
            }
        }
        if e.settings.emit_state_metrics && !rule_levels.is_empty() {
            e.rule_metrics(&mut metrics, &rule_levels);
            any_metrics = true;
        }
        if changed || e.rules.take_dirty() {
            e.persist();
        }
        if any_metrics {
            out.extend(metrics.build().resource_metrics);
        }
        out
    }

    /// Timers: rule `for`s and missing series, and retries of failed actions.
    pub fn tick(engine: &Arc<Mutex<Engine>>) {
        let now = now_nanos();
        let mut guard = engine.lock().unwrap_or_else(|e| e.into_inner());
        let e = &mut *guard;
        let mut transitions = Vec::new();
        e.rules.tick(now, &mut transitions);
        for t in &transitions {
            e.rule_alert(t);
        }
        let due: Vec<String> = e
            .bots
            .iter()
            .filter(|(_, b)| {
                b.run.as_ref().is_some_and(|r| {
                    r.action.action.is_some_and(|a| a != Action::AlertOnly)
                        && r.action.done.is_none()
                        && !r.action.in_flight
                        && r.action.next_try <= now
                })
            })
            .map(|(n, _)| n.clone())
            .collect();
        for bot in due {
            e.start_action(engine, &bot, now, None);
        }
        if e.rules.take_dirty() || !transitions.is_empty() {
            e.persist();
        }
    }

    /// Checks one bot's limits in order; runs the action at the start of a breach run.
    /// Returns whether the state changed.
    fn evaluate_bot(
        &mut self,
        engine: &Arc<Mutex<Engine>>,
        bot: &str,
        o: Observed,
        now: Nanos,
    ) -> bool {
        let limits = self.settings.limits(bot).clone();
        let daily = self.daily_loss(bot, &o, now);
        let mut changed = false;
        let state = self.bots.entry(bot.to_owned()).or_default();
        if o.strategy.is_some() && state.strategy != o.strategy {
            state.strategy = o.strategy.clone();
        }
        let leverage = match (o.max_leverage, o.open_trades) {
            (Some(l), _) => Some(l),
            // The open trades were reported and none had a leverage point: none is open.
            (None, Some(_)) => Some(0.0),
            (None, None) => None,
        };
        let values = [
            (Limit::MaxDrawdown, o.drawdown_pct),
            (Limit::MaxOpenTrades, o.open_trades),
            (Limit::MaxLeverage, leverage),
            (Limit::MaxDailyLoss, daily),
            (Limit::MonitoringFailure, o.failures),
        ];
        let was_in_run = state.run.is_some();
        let mut newly = Vec::new();
        let mut recovered = Vec::new();
        for (limit, value) in values {
            let Some(value) = value else { continue };
            state.values.insert(limit, value);
            let Some(threshold) = limit.threshold(&limits) else {
                continue;
            };
            let breached = limit.breached(value, threshold);
            match (breached, state.breaches.contains_key(&limit)) {
                (true, false) => {
                    state.breaches.insert(
                        limit,
                        Breach {
                            since: now,
                            value,
                            threshold,
                        },
                    );
                    newly.push((limit, value, threshold));
                }
                (false, true) => {
                    let b = state.breaches.remove(&limit).expect("present");
                    recovered.push((limit, value, b));
                }
                _ => {}
            }
        }
        let strategy = state.strategy.clone();
        if !newly.is_empty() && state.run.is_none() {
            state.run = Some(Run {
                since: now,
                action: ActionState {
                    action: Some(limits.action),
                    ..Default::default()
                },
            });
        }
        let run_ended = was_in_run && state.breaches.is_empty();
        // A failed action's alert resolves with its run.
        let failure_alerted =
            run_ended && state.run.as_ref().is_some_and(|r| r.action.failure_alerted);
        if state.breaches.is_empty() {
            state.run = None;
        }
        let start_action = !was_in_run && state.run.is_some() && limits.action != Action::AlertOnly;
        // The action's span (self-tracing): its trace id goes into the breach alerts, so an
        // alert leads to the trace of what was done about it.
        let action_span = start_action.then(|| action_span(bot, limits.action, 1));
        let action_trace = action_span
            .as_ref()
            .and_then(crate::service::self_trace::trace_id);
        for (limit, value, threshold) in newly {
            changed = true;
            self.counters.breaches.inc();
            let action = if limits.action == Action::AlertOnly {
                "alert_only".to_owned()
            } else if start_action {
                limits.action.as_str().to_owned()
            } else {
                // Part of a run whose action already ran (or is running).
                format!("{} (breach run in progress)", limits.action.as_str())
            };
            let verb = match limits.action {
                Action::Pause => "pausing the bot",
                Action::Stop => "stopping the bot",
                Action::AlertOnly => "alert only",
            };
            let summary = format!(
                "{bot}: {} {}{} {} limit {}{} — {}",
                limit.words(),
                fmt_short(value),
                limit.unit(),
                limit.op(),
                fmt_num(threshold),
                limit.unit(),
                if start_action {
                    verb
                } else {
                    "breach run already in progress"
                }
            );
            let mut attributes = vec![
                attr("bot", bot),
                attr("limit", limit.key()),
                attr("value", value),
                attr("threshold", threshold),
                attr("action", action),
            ];
            if let Some(s) = &strategy {
                attributes.push(attr("strategy", s.as_str()));
            }
            self.raise(Alert {
                name: limit.alert_name().into(),
                state: AlertState::Firing,
                severity: Severity::Critical,
                summary,
                fingerprint: fingerprint(limit.alert_name(), [("bot", bot)]),
                attributes,
                trace_id: action_trace.clone(),
                source: self.id.clone(),
            });
        }
        for (limit, value, breach) in recovered {
            changed = true;
            let mut attributes = vec![
                attr("bot", bot),
                attr("limit", limit.key()),
                attr("value", value),
                attr("threshold", breach.threshold),
                attr("alert.resolves_severity", "critical"),
                attr(
                    "breach.duration_seconds",
                    (now.saturating_sub(breach.since) / 1_000_000_000) as i64,
                ),
            ];
            if let Some(s) = &strategy {
                attributes.push(attr("strategy", s.as_str()));
            }
            self.raise(Alert {
                name: limit.alert_name().into(),
                state: AlertState::Resolved,
                severity: Severity::Info,
                summary: format!(
                    "{bot}: {} back to {}{} (limit {}{}){}",
                    limit.words(),
                    fmt_short(value),
                    limit.unit(),
                    fmt_num(breach.threshold),
                    limit.unit(),
                    if run_ended {
                        "; the bot was not resumed automatically"
                    } else {
                        ""
                    }
                ),
                fingerprint: fingerprint(limit.alert_name(), [("bot", bot)]),
                attributes,
                trace_id: None,
                source: self.id.clone(),
            });
        }
        if failure_alerted {
            self.resolve_action_failure_alert(bot, strategy.as_deref(), "the breach run ended");
        }
        if let Some(span) = action_span {
            changed = true;
            self.start_action(engine, bot, now, Some(span));
        }
        changed
    }

    /// The day's loss in percent (positive = loss), from a direct input or from the
    /// fall of total profit since the day's first observation relative to the balance.
    fn daily_loss(&mut self, bot: &str, o: &Observed, now: Nanos) -> Option<f64> {
        if let Some(p) = o.daily_pnl_pct {
            return Some(-p);
        }
        let (profit, balance) = (o.profit?, o.balance?);
        let day = now / 86_400_000_000_000;
        let base = self
            .daily
            .entry(bot.to_owned())
            .or_insert_with(|| DailyBase {
                day,
                profit,
                balance,
            });
        if base.day != day {
            *base = DailyBase {
                day,
                profit,
                balance,
            };
        }
        if base.balance <= 0.0 {
            return None;
        }
        Some((base.profit - profit) / base.balance * 100.0)
    }

    fn raise(&self, alert: Alert) {
        self.counters.alerts.inc();
        match alert.state {
            AlertState::Firing => {
                tracing::warn!(processor = %self.id, alert = %alert.name, "{}", alert.summary)
            }
            AlertState::Resolved => {
                tracing::info!(processor = %self.id, alert = %alert.name, "{}", alert.summary)
            }
        }
        self.alerts.emit(alert);
    }

    /// The alert record of one rule transition.
    fn rule_alert(&self, t: &Transition) {
        let rule = &self.rules.rules()[t.rule];
        let mut attributes: Vec<KeyValue> = t
            .labels
            .iter()
            .map(|(k, v)| attr(k.as_str(), v.as_str()))
            .collect();
        for (k, v) in &rule.labels {
            attributes.push(attr(k.as_str(), v.as_str()));
        }
        attributes.push(attr("rule.metric", rule.metric.as_str()));
        if let Some(v) = t.value {
            attributes.push(attr("value", v));
        }
        if let Some(th) = t.threshold {
            attributes.push(attr("threshold", th));
        }
        let (state, severity) = if t.to == Level::Ok {
            attributes.push(attr("alert.resolves_severity", t.from.severity().as_str()));
            (AlertState::Resolved, Severity::Info)
        } else {
            (AlertState::Firing, t.to.severity())
        };
        let summary = match &rule.summary {
            Some(tpl) => render(tpl, rule, t),
            None => default_summary(rule, t),
        };
        self.raise(Alert {
            name: rule.name.clone(),
            state,
            severity,
            summary,
            fingerprint: t.fingerprint.clone(),
            attributes,
            trace_id: None,
            source: self.id.clone(),
        });
    }

    fn control_for(&self, bot: &str) -> Option<Arc<BotControlHandle>> {
        match &self.settings.control {
            Some(id) => self.controls.get::<BotControlHandle>(id),
            None => self
                .controls
                .all::<BotControlHandle>()
                .into_iter()
                .find(|(_, h)| h.0.bots().iter().any(|b| b == bot))
                .map(|(_, h)| h),
        }
    }

    /// Runs the run's action in the background, in `span` (made here for a retry); the
    /// result comes back under the lock.
    fn start_action(
        &mut self,
        engine: &Arc<Mutex<Engine>>,
        bot: &str,
        now: Nanos,
        span: Option<tracing::Span>,
    ) {
        let retry = self.settings.action_retry_interval;
        let control = self.control_for(bot);
        let Some(run) = self.bots.get_mut(bot).and_then(|b| b.run.as_mut()) else {
            return;
        };
        let Some(action) = run.action.action else {
            return;
        };
        run.action.in_flight = true;
        run.action.attempts += 1;
        run.action.next_try = now + retry.as_nanos() as u64;
        let span = span.unwrap_or_else(|| action_span(bot, action, run.action.attempts));
        let engine = engine.clone();
        let name = bot.to_owned();
        let bot = name.clone();
        let run_since = run.since;
        let task = async move {
            let result = match &control {
                None => Err(format!(
                    "no freqtrade receiver controls bot {bot:?} (set `control` or use action_on_breach = \"alert_only\")"
                )),
                Some(c) => act(&*c.0, &bot, action).await,
            };
            let current = tracing::Span::current();
            match &result {
                Ok(_) => current.record("outcome", "done"),
                Err(e) => current
                    .record("outcome", e.as_str())
                    .record("otel.status_code", "error"),
            };
            let mut guard = engine.lock().unwrap_or_else(|e| e.into_inner());
            guard.action_done(&bot, run_since, action, result);
        }
        .instrument(span);
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(task);
            }
            Err(_) => {
                tracing::error!(bot = name, "no runtime to run the risk action on");
            }
        }
    }

    fn action_done(
        &mut self,
        bot: &str,
        run_since: Nanos,
        action: Action,
        result: Result<String, String>,
    ) {
        let strategy = self.bots.get(bot).and_then(|b| b.strategy.clone());
        let Some(run) = self
            .bots
            .get_mut(bot)
            .and_then(|b| b.run.as_mut())
            .filter(|r| r.since == run_since)
        else {
            // The run ended while the action was under way: nothing to record.
            return;
        };
        run.action.in_flight = false;
        match result {
            Ok(msg) => {
                self.counters.actions_ok.inc();
                tracing::warn!(processor = %self.id, bot, action = action.as_str(), result = %msg, "risk action done");
                run.action.done = Some(msg);
                run.action.last_error = None;
                let alerted = std::mem::take(&mut run.action.failure_alerted);
                if alerted {
                    self.resolve_action_failure_alert(
                        bot,
                        strategy.as_deref(),
                        "the risk action succeeded after a retry",
                    );
                }
            }
            Err(err) => {
                self.counters.actions_failed.inc();
                tracing::error!(processor = %self.id, bot, action = action.as_str(), attempt = run.action.attempts, "risk action failed: {err}");
                run.action.last_error = Some(err.clone());
                if !run.action.failure_alerted {
                    run.action.failure_alerted = true;
                    let mut attributes = vec![
                        attr("bot", bot),
                        attr("action", action.as_str()),
                        attr("error", err.as_str()),
                    ];
                    if let Some(s) = &strategy {
                        attributes.push(attr("strategy", s.as_str()));
                    }
                    self.raise(Alert {
                        name: "RiskActionFailed".into(),
                        state: AlertState::Firing,
                        severity: Severity::Critical,
                        summary: format!(
                            "{bot}: the {} action after a risk breach failed: {err}; retrying every {}",
                            action.as_str(),
                            humantime::format_duration(self.settings.action_retry_interval)
                        ),
                        fingerprint: fingerprint("RiskActionFailed", [("bot", bot)]),
                        attributes,
                        trace_id: crate::service::self_trace::current_trace_id(),
                        source: self.id.clone(),
                    });
                }
            }
        }
        self.publish_panel(bot);
        self.persist();
    }

    /// The risk part of the bot's `/ui` panel: each limit against its value, the
    /// drawdown history with its limit line, the breach run, and the operator's `resume`.
    fn publish_panel(&self, bot: &str) {
        use crate::receivers::freqtrade::panel::panel_id;
        use crate::service::board::{Field, Tone};
        let Some(state) = self.bots.get(bot) else {
            return;
        };
        let limits = self.settings.limits(bot);
        let resume = self.resume_action(bot, state.strategy.clone());
        self.board.update(&panel_id(bot), "bots", |e| {
            for limit in [
                Limit::MaxDrawdown,
                Limit::MaxOpenTrades,
                Limit::MaxLeverage,
                Limit::MaxDailyLoss,
            ] {
                let (Some(v), Some(th)) = (state.values.get(&limit), limit.threshold(limits))
                else {
                    continue;
                };
                let breached = state.breaches.contains_key(&limit);
                let near = th > 0.0 && *v >= th * 0.75;
                let unit = limit.unit();
                let suffix = if limit == Limit::MaxLeverage {
                    "×"
                } else {
                    unit
                };
                let key = format!("limit_{}", limit.label());
                let mut f = Field::number(&key, limit.words(), *v, 2, suffix).tone(if breached {
                    Tone::Bad
                } else if near {
                    Tone::Warn
                } else {
                    Tone::Ok
                });
                f.label = format!(
                    "{} (limit {}{suffix})",
                    capitalize(limit.words()),
                    fmt_num(th)
                );
                f.text = format!(
                    "{}{suffix}{}",
                    fmt_short(*v),
                    if breached { " — BREACHED" } else { "" }
                );
                e.field(f);
                if limit == Limit::MaxDrawdown {
                    // As long a history as the receiver's series of the same panel.
                    e.point("drawdown_pct", "Drawdown", "%", 0, *v)
                        .limit("drawdown_pct", Some(th));
                }
            }
            let breach = match &state.run {
                None => Field::text("breach_run", "Breach run", "none").tone(Tone::Ok),
                Some(run) => {
                    let which: Vec<&str> = state.breaches.keys().map(|l| l.key()).collect();
                    let action =
                        match (&run.action.action, &run.action.done, &run.action.last_error) {
                            (Some(Action::AlertOnly), _, _) | (None, _, _) => {
                                "alert only".to_owned()
                            }
                            (Some(a), Some(_), _) => format!("{}: done", a.as_str()),
                            (Some(a), None, Some(err)) => {
                                format!("{}: failing ({err})", a.as_str())
                            }
                            (Some(a), None, None) => format!("{}: under way", a.as_str()),
                        };
                    Field::text(
                        "breach_run",
                        "Breach run",
                        format!("{} — {action}", which.join(", ")),
                    )
                    .tone(Tone::Bad)
                }
            };
            e.field(breach);
            e.action("resume", "Resume bot", resume);
        });
    }

    /// The operator's `resume` (from `/ui`): the bot's `start` through the same control
    /// handle the breach action used, recorded as an alert record of its own.
    fn resume_action(
        &self,
        bot: &str,
        strategy: Option<String>,
    ) -> crate::service::board::ActionFn {
        let controls = self.controls.clone();
        let control_id = self.settings.control.clone();
        let alerts = self.alerts.clone();
        let source = self.id.clone();
        let ok = self.counters.actions_ok.clone();
        let failed = self.counters.actions_failed.clone();
        let bot = bot.to_owned();
        Arc::new(move || {
            let (controls, control_id, alerts, source, bot, strategy) = (
                controls.clone(),
                control_id.clone(),
                alerts.clone(),
                source.clone(),
                bot.clone(),
                strategy.clone(),
            );
            let (ok, failed) = (ok.clone(), failed.clone());
            Box::pin(async move {
                let handle = match &control_id {
                    Some(id) => controls.get::<BotControlHandle>(id),
                    None => controls
                        .all::<BotControlHandle>()
                        .into_iter()
                        .find(|(_, h)| h.0.bots().contains(&bot))
                        .map(|(_, h)| h),
                };
                let Some(handle) = handle else {
                    return Err(format!("no freqtrade receiver controls bot {bot:?}"));
                };
                match handle.0.start(&bot).await {
                    Ok(msg) => {
                        ok.inc();
                        tracing::warn!(processor = %source, bot, result = %msg, "bot resumed by an operator (/ui)");
                        let mut attributes = vec![
                            attr("bot", bot.as_str()),
                            attr("action", "resume"),
                            attr("actor", "operator (/ui)"),
                        ];
                        if let Some(s) = &strategy {
                            attributes.push(attr("strategy", s.as_str()));
                        }
                        alerts.emit(Alert {
                            name: "BotResumedByOperator".into(),
                            state: AlertState::Resolved,
                            severity: Severity::Info,
                            summary: format!("{bot}: resumed by an operator from /ui ({msg})"),
                            fingerprint: fingerprint(
                                "BotResumedByOperator",
                                [("bot", bot.as_str())],
                            ),
                            attributes,
                            trace_id: None,
                            source,
                        });
                        Ok(msg)
                    }
                    Err(e) => {
                        failed.inc();
                        tracing::error!(processor = %source, bot, "operator resume failed: {e}");
                        Err(e.to_string())
                    }
                }
            })
        })
    }

    fn resolve_action_failure_alert(&self, bot: &str, strategy: Option<&str>, why: &str) {
        let mut attributes = vec![
            attr("bot", bot),
            attr("alert.resolves_severity", "critical"),
        ];
        if let Some(s) = strategy {
            attributes.push(attr("strategy", s));
        }
        self.raise(Alert {
            name: "RiskActionFailed".into(),
            state: AlertState::Resolved,
            severity: Severity::Info,
            summary: format!("{bot}: {why}"),
            fingerprint: fingerprint("RiskActionFailed", [("bot", bot)]),
            attributes,
            trace_id: None,
            source: self.id.clone(),
        });
    }

    fn persist(&self) {
        let saved = SavedRef {
            version: 1,
            bots: &self.bots,
            daily: &self.daily,
            rules: self.rules.save(),
        };
        match serde_json::to_vec_pretty(&saved) {
            Ok(b) => self.saver.save(b),
            Err(e) => tracing::error!("cannot serialize the risk state: {e}"),
        }
        self.health.report_ok();
    }

    fn state_metrics(&self, b: &mut MetricsBuilder, bot: &str) {
        let Some(state) = self.bots.get(bot) else {
            return;
        };
        let limits = self.settings.limits(bot);
        let t = Timestamp::now();
        b.gauge(
            "tradewatch.risk.limit",
            "",
            "The configured limit (percent for drawdown and daily loss)",
        );
        for limit in Limit::ORDER {
            if let Some(th) = limit.threshold(limits) {
                b.point(th, [attr("bot", bot), attr("limit", limit.label())], t);
            }
        }
        b.gauge(
            "tradewatch.risk.value",
            "",
            "The latest measured value each limit is compared with",
        );
        for (limit, v) in &state.values {
            b.point(*v, [attr("bot", bot), attr("limit", limit.label())], t);
        }
        b.gauge(
            "tradewatch.risk.breached",
            "",
            "1 while the limit is breached",
        );
        for limit in Limit::ORDER {
            if limit.threshold(limits).is_some() {
                let on = i64::from(state.breaches.contains_key(&limit));
                b.point(on, [attr("bot", bot), attr("limit", limit.label())], t);
            }
        }
        b.gauge(
            "tradewatch.risk.breach_run",
            "",
            "1 while the bot is in a breach run",
        )
        .point(i64::from(state.run.is_some()), [attr("bot", bot)], t);
        let pending = state.run.as_ref().is_some_and(|r| {
            r.action.action.is_some_and(|a| a != Action::AlertOnly) && r.action.done.is_none()
        });
        b.gauge(
            "tradewatch.risk.action_pending",
            "",
            "1 while the breach run's action has not succeeded yet",
        )
        .point(i64::from(pending), [attr("bot", bot)], t);
    }

    fn rule_metrics(&self, b: &mut MetricsBuilder, seen: &[(usize, String)]) {
        let t = Timestamp::now();
        b.gauge(
            "tradewatch.alert.level",
            "",
            "State of an alert rule's series: 0 ok, 1 warning, 2 critical",
        );
        let mut done = std::collections::HashSet::new();
        for (i, key) in seen {
            if !done.insert((*i, key.as_str())) {
                continue;
            }
            let Some((labels, level)) = self.rules.series(*i, key) else {
                continue;
            };
            let mut kv = vec![attr("alert", self.rules.rules()[*i].name.as_str())];
            kv.extend(labels.iter().map(|(k, v)| attr(k.as_str(), v.as_str())));
            b.point(level.as_number(), kv, t);
        }
    }

    /// `/status` detail: bots in a breach run.
    pub fn detail(&self) -> String {
        let mut parts = Vec::new();
        for (bot, s) in &self.bots {
            if let Some(run) = &s.run {
                let limits: Vec<&str> = s.breaches.keys().map(|l| l.key()).collect();
                let action = match (&run.action.done, &run.action.last_error) {
                    (Some(_), _) => "action done".to_owned(),
                    (None, Some(e)) => format!("action failing: {e}"),
                    (None, None) => "no action".to_owned(),
                };
                parts.push(format!("{bot}: breached {} ({action})", limits.join(", ")));
            }
        }
        if parts.is_empty() {
            "no bot in a breach run".into()
        } else {
            parts.join("; ")
        }
    }
}

#[derive(Serialize)]
struct SavedRef<'a> {
    version: u32,
    bots: &'a BTreeMap<String, BotRisk>,
    daily: &'a BTreeMap<String, DailyBase>,
    rules: Vec<SavedSeries>,
}

/// The span of one attempt at a breach run's action.
fn action_span(bot: &str, action: Action, attempt: u32) -> tracing::Span {
    tracing::info_span!(
        "risk.action",
        bot,
        action = action.as_str(),
        attempt,
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Runs `action` on `bot`; `stop` falls back to `pause`.
async fn act(
    c: &dyn crate::receivers::freqtrade::BotControl,
    bot: &str,
    action: Action,
) -> Result<String, String> {
    match action {
        Action::Pause => c.pause(bot).await.map_err(|e| e.to_string()),
        Action::Stop => match c.stop(bot).await {
            Ok(m) => Ok(m),
            Err(stop) => {
                tracing::warn!(bot, "stop failed ({stop}); pausing instead");
                c.pause(bot)
                    .await
                    .map(|m| format!("stop failed ({stop}); paused instead: {m}"))
                    .map_err(|pause| format!("stop failed ({stop}) and pause failed ({pause})"))
            }
        },
        Action::AlertOnly => Ok(String::new()),
    }
}

fn default_summary(rule: &super::rules::Rule, t: &Transition) -> String {
    let who: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let who = if who.is_empty() {
        String::new()
    } else {
        format!(" [{}]", who.join(", "))
    };
    if rule.kind == super::rules::RuleKind::Composite {
        return if t.to == Level::Ok {
            format!(
                "{}: none of {} is firing any more",
                rule.name,
                rule.any_of.join(", ")
            )
        } else {
            format!("{}: one of {} is firing", rule.name, rule.any_of.join(", "))
        };
    }
    match (t.to, t.value, t.threshold) {
        (Level::Ok, Some(v), _) => format!(
            "{}{who}: back to normal ({} = {})",
            rule.name,
            rule.metric,
            fmt_num(v)
        ),
        (Level::Ok, None, _) => format!("{}{who}: resolved", rule.name),
        (_, Some(v), Some(th)) => format!(
            "{}{who}: {} = {} {} {}",
            rule.name,
            rule.metric,
            fmt_num(v),
            rule.op.as_str(),
            fmt_num(th)
        ),
        (_, _, _) => format!(
            "{}{who}: no {} for {}",
            rule.name,
            rule.metric,
            humantime::format_duration(if rule.kind == super::rules::RuleKind::Absent {
                rule.for_
            } else {
                rule.stale_after
            })
        ),
    }
}

/// `{value}`, `{threshold}`, `{metric}`, `{name}`, `{state}` and `{<label>}` in a summary.
fn render(tpl: &str, rule: &super::rules::Rule, t: &Transition) -> String {
    let mut out = String::with_capacity(tpl.len() + 16);
    let mut rest = tpl;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let key = &after[..end];
        let v = match key {
            "value" => t.value.map(fmt_num),
            "threshold" => t.threshold.map(fmt_num),
            "metric" => Some(rule.metric.clone()),
            "name" => Some(rule.name.clone()),
            "for" => Some(humantime::format_duration(rule.for_).to_string()),
            "state" => Some(
                match t.to {
                    Level::Ok => "resolved",
                    Level::Warning => "warning",
                    Level::Critical => "critical",
                }
                .to_owned(),
            ),
            k => t
                .labels
                .iter()
                .find(|(lk, _)| lk == k)
                .map(|(_, v)| v.clone())
                .or_else(|| rule.labels.get(k).cloned()),
        };
        match v {
            Some(v) => out.push_str(&v),
            None => {
                out.push('{');
                out.push_str(key);
                out.push('}');
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}
