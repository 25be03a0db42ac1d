//! `[processors.risk]` as written, and its checks: limits within the seeds' bounds, an
//! action that exists, rules that make sense. Every error names the file, line and key.

use super::rules::{Rule, RuleConfig};
use crate::component::{ComponentId, Kind};
use crate::config::{component_config, quote_key, ConfigError, HumanDuration, Source};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// What runs once per breach run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// No new entries (Freqtrade `/pause`); open trades are still managed.
    Pause,
    /// Stops the bot's loop (`/stop`); falls back to pause when that fails.
    Stop,
    /// Alert only.
    AlertOnly,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Stop => "stop",
            Action::AlertOnly => "alert_only",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        match s {
            "pause" => Some(Action::Pause),
            "stop" => Some(Action::Stop),
            "alert_only" => Some(Action::AlertOnly),
            _ => None,
        }
    }
}

/// One bot's limits, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_drawdown_pct: f64,
    pub max_open_trades: f64,
    pub max_leverage: f64,
    /// Off unless set.
    pub max_daily_loss_pct: Option<f64>,
    pub action: Action,
    pub fail_closed_after: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DrawdownUnit {
    #[default]
    Auto,
    Ratio,
    Percent,
}

/// Where the risk inputs come from: metric names as the `freqtrade` receiver writes them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inputs {
    /// The attribute naming the bot: the point's, else the resource's (`service.name`
    /// for a strategy that reports over OTLP).
    pub bot_attribute: String,
    /// Current drawdown; see `drawdown_unit`.
    pub drawdown: String,
    /// `auto`: a ratio (multiplied by 100) unless the metric's unit is `%`; `ratio`;
    /// `percent` (as Prometheus-style gauges without a unit report it).
    pub drawdown_unit: DrawdownUnit,
    pub open_trades: String,
    /// One point per open trade: the largest is compared with `max_leverage`.
    pub leverage: String,
    /// Polls failed in a row: `fail_closed_after` of them is a `monitoring_failure`.
    pub consecutive_failures: String,
    /// Total profit (realized + unrealized) in the stake currency, and the wallet total:
    /// the day's loss is the fall of the first since 00:00 UTC relative to the second.
    pub profit: String,
    pub balance: String,
    /// A metric that already is the day's profit and loss in percent (negative = loss);
    /// when set it replaces `profit` and `balance`.
    pub daily_pnl_pct: String,
}

impl Inputs {
    /// Whether `name` is one of the inputs (an empty input name is off).
    pub fn reads(&self, name: &str) -> bool {
        !name.is_empty()
            && [
                &self.drawdown,
                &self.open_trades,
                &self.leverage,
                &self.consecutive_failures,
                &self.profit,
                &self.balance,
                &self.daily_pnl_pct,
            ]
            .iter()
            .any(|n| n.as_str() == name)
    }
}

impl Default for Inputs {
    fn default() -> Self {
        Inputs {
            bot_attribute: "bot".into(),
            drawdown: "freqtrade.drawdown.current.ratio".into(),
            drawdown_unit: DrawdownUnit::Auto,
            open_trades: "freqtrade.trades.open".into(),
            leverage: "freqtrade.trade.leverage".into(),
            consecutive_failures: "freqtrade.poll.consecutive_failures".into(),
            profit: "freqtrade.profit.all".into(),
            balance: "freqtrade.balance".into(),
            daily_pnl_pct: String::new(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_drawdown_pct: Option<Spanned<f64>>,
    max_open_trades: Option<Spanned<f64>>,
    max_leverage: Option<Spanned<f64>>,
    max_daily_loss_pct: Option<Spanned<f64>>,
    action_on_breach: Option<Spanned<String>>,
    fail_closed_after: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    max_drawdown_pct: Option<Spanned<f64>>,
    max_open_trades: Option<Spanned<f64>>,
    max_leverage: Option<Spanned<f64>>,
    max_daily_loss_pct: Option<Spanned<f64>>,
    action_on_breach: Option<Spanned<String>>,
    fail_closed_after: Option<Spanned<i64>>,
    #[serde(default = "yes")]
    deployment_bounds: bool,
    state_dir: Option<String>,
    control: Option<String>,
    #[serde(default = "yes")]
    emit_state_metrics: bool,
    action_retry_interval: Option<HumanDuration>,
    evaluation_interval: Option<HumanDuration>,
    #[serde(default)]
    inputs: Inputs,
    #[serde(default)]
    bots: BTreeMap<String, RawLimits>,
    #[serde(default)]
    rules: Vec<Spanned<RuleConfig>>,
}

fn yes() -> bool {
    true
}

/// The processor's checked configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub defaults: Limits,
    pub bots: BTreeMap<String, Limits>,
    pub inputs: Inputs,
    pub rules: Vec<Rule>,
    pub control: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub emit_state_metrics: bool,
    pub action_retry_interval: Duration,
    pub evaluation_interval: Duration,
}

impl Settings {
    pub fn limits(&self, bot: &str) -> &Limits {
        self.bots.get(bot).unwrap_or(&self.defaults)
    }
}

/// `(entity bounds, deployment bounds)` per limit, as the seeds' `RiskLimits` has them.
struct Bounds {
    key: &'static str,
    entity: (f64, f64),
    deployment: (f64, f64),
}

const DRAWDOWN: Bounds = Bounds {
    key: "max_drawdown_pct",
    entity: (1.0, 100.0),
    deployment: (1.0, 50.0),
};
const OPEN_TRADES: Bounds = Bounds {
    key: "max_open_trades",
    entity: (1.0, 50.0),
    deployment: (1.0, 20.0),
};
const LEVERAGE: Bounds = Bounds {
    key: "max_leverage",
    entity: (1.0, 125.0),
    deployment: (1.0, 10.0),
};
const DAILY_LOSS: Bounds = Bounds {
    key: "max_daily_loss_pct",
    entity: (0.1, 100.0),
    deployment: (0.1, 50.0),
};

pub fn parse(src: &Source, id: &ComponentId) -> Result<Settings, ConfigError> {
    let mut raw: Raw = component_config(src, Kind::Processor, id)?;
    let top = RawLimits {
        max_drawdown_pct: raw.max_drawdown_pct.take(),
        max_open_trades: raw.max_open_trades.take(),
        max_leverage: raw.max_leverage.take(),
        max_daily_loss_pct: raw.max_daily_loss_pct.take(),
        action_on_breach: raw.action_on_breach.take(),
        fail_closed_after: raw.fail_closed_after.take(),
    };
    let table = format!("{}.{}", Kind::Processor.table(), quote_key(id.as_str()));
    let check = |spanned: &Option<Spanned<f64>>,
                 b: &Bounds,
                 default: Option<f64>,
                 prefix: &str|
     -> Result<Option<f64>, ConfigError> {
        let Some(v) = spanned else {
            return Ok(default);
        };
        let (lo, hi) = if raw.deployment_bounds {
            b.deployment
        } else {
            b.entity
        };
        let value = *v.get_ref();
        if !(lo..=hi).contains(&value) {
            let why = if raw.deployment_bounds && (b.entity.0..=b.entity.1).contains(&value) {
                format!(
                    "{value} is outside the deployment bounds {lo}..{hi} (the limit itself allows {}..{}; set deployment_bounds = false to use it)",
                    b.entity.0, b.entity.1
                )
            } else {
                format!("{value} is outside {lo}..{hi}")
            };
            return Err(src.error_span_key(
                v.span(),
                format!("{table}.{prefix}{}", b.key),
                format!("{}: {why}", b.key),
            ));
        }
        if b.key == "max_open_trades" && value.fract() != 0.0 {
            return Err(src.error_span_key(
                v.span(),
                format!("{table}.{prefix}{}", b.key),
                "max_open_trades must be a whole number".into(),
            ));
        }
        Ok(Some(value))
    };
    let read = |l: &RawLimits, base: &Limits, prefix: &str| -> Result<Limits, ConfigError> {
        let action = match &l.action_on_breach {
            None => base.action,
            Some(a) => Action::parse(a.get_ref()).ok_or_else(|| {
                src.error_span_key(
                    a.span(),
                    format!("{table}.{prefix}action_on_breach"),
                    format!(
                        "unknown action {:?}: use \"pause\", \"stop\" or \"alert_only\"",
                        a.get_ref()
                    ),
                )
            })?,
        };
        let fail_closed_after = match &l.fail_closed_after {
            None => base.fail_closed_after,
            Some(n) if (1..=1000).contains(n.get_ref()) => *n.get_ref() as u32,
            Some(n) => {
                return Err(src.error_span_key(
                    n.span(),
                    format!("{table}.{prefix}fail_closed_after"),
                    format!(
                        "fail_closed_after = {} is outside 1..1000 (consecutive failed polls)",
                        n.get_ref()
                    ),
                ))
            }
        };
        Ok(Limits {
            max_drawdown_pct: check(
                &l.max_drawdown_pct,
                &DRAWDOWN,
                Some(base.max_drawdown_pct),
                prefix,
            )?
            .unwrap_or(base.max_drawdown_pct),
            max_open_trades: check(
                &l.max_open_trades,
                &OPEN_TRADES,
                Some(base.max_open_trades),
                prefix,
            )?
            .unwrap_or(base.max_open_trades),
            max_leverage: check(&l.max_leverage, &LEVERAGE, Some(base.max_leverage), prefix)?
                .unwrap_or(base.max_leverage),
            max_daily_loss_pct: check(
                &l.max_daily_loss_pct,
                &DAILY_LOSS,
                base.max_daily_loss_pct,
                prefix,
            )?,
            action,
            fail_closed_after,
        })
    };
    // The seeds' RiskLimits defaults.
    let builtin = Limits {
        max_drawdown_pct: 20.0,
        max_open_trades: 5.0,
        max_leverage: 3.0,
        max_daily_loss_pct: None,
        action: Action::Pause,
        fail_closed_after: 5,
    };
    let defaults = read(&top, &builtin, "")?;
    let mut bots = BTreeMap::new();
    for (bot, l) in &raw.bots {
        let prefix = format!("bots.{}.", quote_key(bot));
        bots.insert(bot.clone(), read(l, &defaults, &prefix)?);
    }
    let mut rules = Vec::new();
    let mut rule_spans = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, r) in raw.rules.into_iter().enumerate() {
        let span = r.span();
        rule_spans.push(span.clone());
        let rule = r.into_inner();
        let name = rule.name.clone();
        let rule = rule.check().map_err(|(key, message)| {
            src.error_in_span(
                span.clone(),
                &format!("\n{key}"),
                format!("{table}.rules[{i}].{key}"),
                format!("rule {name:?}: {message}"),
            )
        })?;
        if !names.insert(rule.name.clone()) {
            return Err(src.error_in_span(
                span,
                "name",
                format!("{table}.rules[{i}].name"),
                format!(
                    "two rules are named {:?}: names identify alerts, make them unique",
                    rule.name
                ),
            ));
        }
        rules.push(rule);
    }
    // A composite rule combines rules that exist and are not composites themselves.
    for (i, r) in rules.iter().enumerate() {
        for name in &r.any_of {
            let ok = rules
                .iter()
                .any(|m| &m.name == name && m.kind != super::rules::RuleKind::Composite);
            if !ok {
                return Err(src.error_in_span(
                    rule_spans[i].clone(),
                    "\nany_of",
                    format!("{table}.rules[{i}].any_of"),
                    format!(
                        "rule {:?}: {name:?} is not the name of a non-composite rule in this processor",
                        r.name
                    ),
                ));
            }
        }
    }
    let positive = |d: Option<HumanDuration>, key: &str, default: u64| {
        let d = d.map(|d| d.get()).unwrap_or(Duration::from_millis(default));
        if d.is_zero() {
            Err(src.component_error(
                Kind::Processor,
                id,
                &[key],
                format!("{key} must be longer than 0s"),
            ))
        } else {
            Ok(d)
        }
    };
    if raw.inputs.bot_attribute.is_empty() {
        return Err(src.component_error(
            Kind::Processor,
            id,
            &["inputs", "bot_attribute"],
            "bot_attribute must name the attribute that identifies a bot".into(),
        ));
    }
    Ok(Settings {
        defaults,
        bots,
        inputs: raw.inputs,
        rules,
        control: raw.control,
        state_dir: raw
            .state_dir
            .filter(|s| !s.is_empty())
            .map(|s| src.resolve_path(std::path::Path::new(&s))),
        emit_state_metrics: raw.emit_state_metrics,
        action_retry_interval: positive(
            raw.action_retry_interval,
            "action_retry_interval",
            10_000,
        )?,
        evaluation_interval: positive(raw.evaluation_interval, "evaluation_interval", 1_000)?,
    })
}
