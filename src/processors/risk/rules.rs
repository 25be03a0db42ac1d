//! Generic alert rules over incoming metrics: every alert in the seeds is one of these.
//!
//! ```toml
//! [[processors.risk.rules]]
//! name = "DrawdownHigh"                      # alert.name
//! metric = "trading_portfolio_drawdown_pct"  # exact metric name
//! match = { env = "prod" }                   # point/resource attributes; "*" = present, "!x" = not x
//! op = ">"                                   # > >= < <= == !=
//! warning = 5                                # either level may be left out
//! critical = 8
//! for = "0s"                                 # the condition must hold this long first
//! group_by = ["bot"]                         # identifying labels (default: every point attribute)
//! kind = "threshold"                         # or "increase" (counters over `window`) or "absent"
//! window = "5m"                              # increase: the look-back
//! per = "api_requests_total"                 # increase: divide by this counter's increase …
//! scale = 100                                # … and multiply (a percentage of requests)
//! missing_data = "keep"                      # threshold: keep | not_breaching | breaching
//! stale_after = "5m"                         # when a series counts as missing
//! summary = "drawdown {value}% over {threshold}%"
//! labels = { team = "risk" }                 # added to the alert's labels
//! ```
//!
//! A series is one metric's points with one set of identifying labels; each series of a
//! rule has a level (ok, warning, critical). A level is entered once its condition has
//! held for `for`; a lower level is entered at once. Every change of level is one alert
//! record: firing with the new severity, or resolved (info) when back to ok. The
//! fingerprint is the rule's name and the identifying labels, so all records of one
//! series share it.

use crate::config::HumanDuration;
use crate::otlp::MetricKind;
use crate::pipeline::alerts::{fingerprint, Severity};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

/// Nanoseconds since the epoch: the processor's clock, so `for` and windows are measured
/// in one time base whatever the data's own timestamps say.
pub type Nanos = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
pub enum Op {
    #[serde(rename = ">")]
    #[default]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    pub fn holds(self, v: f64, t: f64) -> bool {
        match self {
            Op::Gt => v > t,
            Op::Ge => v >= t,
            Op::Lt => v < t,
            Op::Le => v <= t,
            Op::Eq => v == t,
            Op::Ne => v != t,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    #[default]
    Threshold,
    Increase,
    Absent,
    /// Fires while any rule in `any_of` has a series above ok (a composite alarm).
    Composite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MissingData {
    /// A series that stops arriving keeps its level (its alert stays as it was).
    #[default]
    Keep,
    /// A missing series is ok: a firing alert resolves.
    NotBreaching,
    /// A missing series is critical (an always-on service that went quiet).
    Breaching,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    #[default]
    Ok,
    Warning,
    Critical,
}

impl Level {
    pub fn severity(self) -> Severity {
        match self {
            Level::Ok => Severity::Info,
            Level::Warning => Severity::Warning,
            Level::Critical => Severity::Critical,
        }
    }

    pub fn as_number(self) -> i64 {
        self as i64
    }
}

/// One attribute matcher: `"value"` equal, `"*"` present, `"!value"` absent or different.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    Equals(String),
    Present,
    NotEquals(String),
}

impl Matcher {
    pub fn parse(s: &str) -> Matcher {
        if s == "*" {
            Matcher::Present
        } else if let Some(v) = s.strip_prefix('!') {
            Matcher::NotEquals(v.to_owned())
        } else {
            Matcher::Equals(s.to_owned())
        }
    }

    fn admits(&self, v: Option<&str>) -> bool {
        match self {
            Matcher::Equals(x) => v == Some(x.as_str()),
            Matcher::Present => v.is_some(),
            Matcher::NotEquals(x) => v != Some(x.as_str()),
        }
    }
}

/// One rule, checked.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub metric: String,
    pub matchers: Vec<(String, Matcher)>,
    pub op: Op,
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    pub for_: Duration,
    pub group_by: Option<Vec<String>>,
    pub kind: RuleKind,
    pub window: Duration,
    pub per: Option<String>,
    pub scale: f64,
    pub missing_data: MissingData,
    pub stale_after: Duration,
    pub summary: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// For `absent` and `composite` rules: the severity they fire with.
    pub severity: Level,
    /// For `composite` rules: the rules it watches, by name.
    pub any_of: Vec<String>,
}

/// `[[processors.risk.rules]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    #[serde(default)]
    pub metric: String,
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, String>,
    #[serde(default)]
    pub op: Op,
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    #[serde(default, rename = "for")]
    pub for_: Option<HumanDuration>,
    pub group_by: Option<Vec<String>>,
    #[serde(default)]
    pub kind: RuleKind,
    pub window: Option<HumanDuration>,
    pub per: Option<String>,
    pub scale: Option<f64>,
    #[serde(default)]
    pub missing_data: MissingData,
    pub stale_after: Option<HumanDuration>,
    pub summary: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub severity: Option<String>,
    #[serde(default)]
    pub any_of: Vec<String>,
}

impl RuleConfig {
    /// Checks the rule; an error names the key (inside the rule's table) and why.
    pub fn check(self) -> Result<Rule, (&'static str, String)> {
        if self.name.trim().is_empty() {
            return Err(("name", "a rule needs a non-empty name".into()));
        }
        if self.kind == RuleKind::Composite {
            if self.any_of.is_empty() {
                return Err((
                    "any_of",
                    "a composite rule needs `any_of`: the names of the rules it combines".into(),
                ));
            }
            if !self.metric.is_empty() || self.warning.is_some() || self.critical.is_some() {
                return Err((
                    "kind",
                    "a composite rule watches other rules (`any_of`), not a metric or thresholds"
                        .into(),
                ));
            }
        } else {
            if self.metric.trim().is_empty() {
                return Err(("metric", "a rule needs the metric it watches".into()));
            }
            if !self.any_of.is_empty() {
                return Err((
                    "any_of",
                    "`any_of` is for kind = \"composite\" rules".into(),
                ));
            }
        }
        for (k, v) in [("warning", self.warning), ("critical", self.critical)] {
            if v.is_some_and(|v| !v.is_finite()) {
                return Err((k, format!("{k} must be a finite number")));
            }
        }
        let window = self.window.map(|w| w.get());
        match self.kind {
            RuleKind::Threshold | RuleKind::Increase => {
                if self.warning.is_none() && self.critical.is_none() {
                    return Err((
                        "critical",
                        "set `warning`, `critical` or both: the levels the value is compared with"
                            .into(),
                    ));
                }
                if let (Some(w), Some(c)) = (self.warning, self.critical) {
                    // The critical level must be the harder one to reach.
                    let ordered = match self.op {
                        Op::Gt | Op::Ge => c >= w,
                        Op::Lt | Op::Le => c <= w,
                        Op::Eq | Op::Ne => true,
                    };
                    if !ordered {
                        return Err((
                            "critical",
                            format!(
                                "critical {c} is easier to reach than warning {w} with op \"{}\": swap them",
                                self.op.as_str()
                            ),
                        ));
                    }
                }
            }
            RuleKind::Composite => {}
            RuleKind::Absent => {
                if self.warning.is_some() || self.critical.is_some() {
                    return Err((
                        "kind",
                        "an absent rule has no thresholds: it fires when the metric stops arriving for `for`".into(),
                    ));
                }
            }
        }
        if self.kind == RuleKind::Increase {
            match window {
                None => {
                    return Err((
                        "window",
                        "an increase rule needs `window` (e.g. \"5m\")".into(),
                    ))
                }
                Some(w) if w.is_zero() => {
                    return Err(("window", "window must be longer than 0s".into()))
                }
                _ => {}
            }
        } else {
            if window.is_some() {
                return Err(("window", "`window` is for kind = \"increase\" rules".into()));
            }
            if self.per.is_some() {
                return Err(("per", "`per` is for kind = \"increase\" rules".into()));
            }
        }
        if self.kind == RuleKind::Absent && self.for_.is_none() {
            return Err((
                "for",
                "an absent rule needs `for`: how long the metric may stay away".into(),
            ));
        }
        let severity = match self.severity.as_deref() {
            None | Some("critical") => Level::Critical,
            Some("warning") => Level::Warning,
            Some(s) => {
                return Err((
                    "severity",
                    format!("unknown severity {s:?} (use \"warning\" or \"critical\")"),
                ))
            }
        };
        if self.severity.is_some() && !matches!(self.kind, RuleKind::Absent | RuleKind::Composite) {
            return Err((
                "severity",
                "`severity` is for absent and composite rules; threshold rules take `warning` and `critical`"
                    .into(),
            ));
        }
        let scale = self.scale.unwrap_or(1.0);
        if !scale.is_finite() || scale == 0.0 {
            return Err(("scale", "scale must be a finite, non-zero number".into()));
        }
        Ok(Rule {
            name: self.name,
            metric: self.metric,
            matchers: self
                .matchers
                .iter()
                .map(|(k, v)| (k.clone(), Matcher::parse(v)))
                .collect(),
            op: self.op,
            warning: self.warning,
            critical: self.critical,
            for_: self.for_.map(|d| d.get()).unwrap_or_default(),
            group_by: self.group_by,
            kind: self.kind,
            window: window.unwrap_or_default(),
            per: self.per,
            scale,
            missing_data: self.missing_data,
            stale_after: self
                .stale_after
                .map(|d| d.get())
                .unwrap_or(Duration::from_secs(300)),
            summary: self.summary,
            labels: self.labels,
            severity,
            any_of: self.any_of,
        })
    }
}

/// A sample of one metric point as the rules see it.
pub struct Sample<'a> {
    pub metric: &'a str,
    pub kind: MetricKind,
    /// The point's attributes, as text.
    pub attrs: &'a [(String, String)],
    /// The resource's attributes, as text: matchers and `group_by` see them after the
    /// point's own.
    pub resource: &'a [(String, String)],
    pub value: f64,
    /// The point's start time (cumulative counters), 0 when unknown.
    pub start_unix_nano: u64,
    pub time_unix_nano: u64,
}

impl Sample<'_> {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .chain(self.resource)
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

/// A change of level of one series: becomes one alert record.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub rule: usize,
    pub labels: Vec<(String, String)>,
    pub from: Level,
    pub to: Level,
    /// The value compared (None for a missing series).
    pub value: Option<f64>,
    /// The level's threshold (for `to`, or `from` when resolving).
    pub threshold: Option<f64>,
    pub fingerprint: String,
    pub at: Nanos,
}

/// What survives a restart of one series: its level and since when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedSeries {
    pub rule: String,
    pub labels: Vec<(String, String)>,
    pub level: Level,
    pub since: Nanos,
    pub last_seen: Nanos,
    #[serde(default)]
    pub value: Option<f64>,
}

#[derive(Debug, Default)]
struct Series {
    labels: Vec<(String, String)>,
    level: Level,
    since: Nanos,
    /// When the condition for warning / critical began to hold without a break.
    pending: [Option<Nanos>; 2],
    last_seen: Nanos,
    last_value: Option<f64>,
    /// Increase rules: (time, cumulative value) within the window, oldest first.
    samples: VecDeque<(Nanos, f64)>,
    /// Increase rules with `per`: the denominator's samples.
    per_samples: VecDeque<(Nanos, f64)>,
}

/// Every rule and the state of every series.
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Metric name → rules watching it (as `metric` or as `per`), for a cheap lookup.
    by_metric: HashMap<String, Vec<(usize, bool)>>,
    /// Composite rules and the indices of the rules they combine.
    composites: Vec<(usize, Vec<usize>)>,
    series: Vec<HashMap<String, Series>>,
    /// Whether a series changed in a way worth saving.
    dirty: bool,
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> RuleSet {
        let mut by_metric: HashMap<String, Vec<(usize, bool)>> = HashMap::new();
        let mut composites = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            if r.kind == RuleKind::Composite {
                let members = r
                    .any_of
                    .iter()
                    .filter_map(|n| {
                        rules
                            .iter()
                            .position(|m| &m.name == n && m.kind != RuleKind::Composite)
                    })
                    .collect();
                composites.push((i, members));
                continue;
            }
            by_metric
                .entry(r.metric.clone())
                .or_default()
                .push((i, false));
            if let Some(p) = &r.per {
                by_metric.entry(p.clone()).or_default().push((i, true));
            }
        }
        let series = rules.iter().map(|_| HashMap::new()).collect();
        RuleSet {
            rules,
            by_metric,
            composites,
            series,
            dirty: false,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether any rule watches `metric` (so a caller can skip points cheaply).
    pub fn watches(&self, metric: &str) -> bool {
        self.by_metric.contains_key(metric)
    }

    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Feeds one point; returns the transitions it causes.
    pub fn observe(&mut self, s: &Sample<'_>, now: Nanos, out: &mut Vec<Transition>) {
        self.observe_seen(s, now, out, None)
    }

    /// [`RuleSet::observe`], also listing `(rule, series key)` of every series the point
    /// belongs to (for [`RuleSet::series`]).
    pub fn observe_seen(
        &mut self,
        s: &Sample<'_>,
        now: Nanos,
        out: &mut Vec<Transition>,
        mut seen: Option<&mut Vec<(usize, String)>>,
    ) {
        let Some(watchers) = self.by_metric.get(s.metric) else {
            return;
        };
        let before = out.len();
        let mut key = String::new();
        for &(i, is_per) in watchers {
            let rule = &self.rules[i];
            if !rule.matchers.iter().all(|(k, m)| m.admits(s.attr(k))) {
                continue;
            }
            let labels = identifying_refs(rule, s);
            key.clear();
            for (a, b) in &labels {
                push_key(&mut key, a, b);
            }
            if !self.series[i].contains_key(&key) {
                self.series[i].insert(
                    key.clone(),
                    Series {
                        labels: labels
                            .iter()
                            .map(|(a, b)| (a.to_string(), b.to_string()))
                            .collect(),
                        since: now,
                        ..Default::default()
                    },
                );
            }
            let series = self.series[i].get_mut(&key).expect("present");
            if !is_per {
                if let Some(seen) = seen.as_deref_mut() {
                    seen.push((i, key.clone()));
                }
            }
            if is_per {
                push_window(&mut series.per_samples, now, s.value, rule.window);
                continue;
            }
            series.last_seen = now;
            let value = match rule.kind {
                RuleKind::Threshold => Some(s.value),
                RuleKind::Absent | RuleKind::Composite => None,
                RuleKind::Increase => {
                    let delta = matches!(
                        s.kind,
                        MetricKind::Sum { temporality: 1, .. }
                            | MetricKind::Histogram { temporality: 1 }
                    );
                    let first = series.samples.is_empty();
                    // A counter seen for the first time that started within the window
                    // counted from 0 inside it: that much is its increase.
                    if first
                        && !delta
                        && s.start_unix_nano != 0
                        && s.time_unix_nano >= s.start_unix_nano
                        && s.time_unix_nano - s.start_unix_nano <= rule.window.as_nanos() as u64
                    {
                        series.samples.push_back((now.saturating_sub(1), 0.0));
                    }
                    push_window(&mut series.samples, now, s.value, rule.window);
                    let inc = increase(&series.samples, delta);
                    match (&rule.per, inc) {
                        (_, None) => None,
                        (None, Some(inc)) => Some(inc * rule.scale),
                        (Some(_), Some(inc)) => match increase(&series.per_samples, delta) {
                            Some(d) if d > 0.0 => Some(inc / d * rule.scale),
                            _ => None,
                        },
                    }
                }
            };
            series.last_value = value.or(series.last_value);
            let cond = match (rule.kind, value) {
                (RuleKind::Absent | RuleKind::Composite, _) => Level::Ok,
                (_, None) => continue,
                (_, Some(v)) => condition(rule, v),
            };
            step(i, rule, series, cond, value, now, out);
        }
        if out.len() > before {
            self.dirty = true;
            self.composite(now, out);
        }
    }

    /// Re-evaluates the composite rules after their members changed.
    fn composite(&mut self, now: Nanos, out: &mut Vec<Transition>) {
        for (i, members) in &self.composites {
            let firing = members
                .iter()
                .any(|m| self.series[*m].values().any(|s| s.level != Level::Ok));
            let rule = &self.rules[*i];
            let target = if firing { rule.severity } else { Level::Ok };
            let series = self.series[*i]
                .entry(String::new())
                .or_insert_with(|| Series {
                    since: now,
                    last_seen: now,
                    ..Default::default()
                });
            if series.level != target {
                let from = series.level;
                series.level = target;
                series.since = now;
                out.push(transition(*i, rule, series, from, target, None, now));
            }
        }
    }

    /// The labels and level of rule `i`'s series `key` (from [`RuleSet::observe_seen`]).
    pub fn series(&self, i: usize, key: &str) -> Option<(&[(String, String)], Level)> {
        self.series[i]
            .get(key)
            .map(|s| (s.labels.as_slice(), s.level))
    }

    /// Advances the clock: missing series (absent rules, `missing_data`) and `for`
    /// timers that ran out without a new point.
    pub fn tick(&mut self, now: Nanos, out: &mut Vec<Transition>) {
        let before = out.len();
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.kind == RuleKind::Composite {
                continue;
            }
            for series in self.series[i].values_mut() {
                let silent = now.saturating_sub(series.last_seen);
                match rule.kind {
                    RuleKind::Absent => {
                        let cond = if silent >= rule.for_.as_nanos() as u64 {
                            rule.severity
                        } else {
                            Level::Ok
                        };
                        if cond != series.level {
                            let from = series.level;
                            series.level = cond;
                            series.since = now;
                            out.push(transition(i, rule, series, from, cond, None, now));
                        }
                        continue;
                    }
                    _ if silent >= rule.stale_after.as_nanos() as u64 => {
                        let target = match rule.missing_data {
                            MissingData::Keep => continue,
                            MissingData::NotBreaching => Level::Ok,
                            MissingData::Breaching => Level::Critical,
                        };
                        series.pending = [None, None];
                        if target != series.level {
                            let from = series.level;
                            series.level = target;
                            series.since = now;
                            out.push(transition(i, rule, series, from, target, None, now));
                        }
                        continue;
                    }
                    _ => {}
                }
                if let Some(v) = series.last_value {
                    if !rule.for_.is_zero() && series.pending.iter().any(Option::is_some) {
                        let cond = condition(rule, v);
                        step(i, rule, series, cond, Some(v), now, out);
                    }
                }
            }
        }
        if out.len() > before {
            self.dirty = true;
            self.composite(now, out);
        }
    }

    /// Every series not at ok, for saving.
    pub fn save(&self) -> Vec<SavedSeries> {
        let mut v = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            for s in self.series[i].values() {
                let keep = s.level != Level::Ok
                    || rule.kind == RuleKind::Absent
                    || rule.missing_data == MissingData::Breaching;
                if keep {
                    v.push(SavedSeries {
                        rule: rule.name.clone(),
                        labels: s.labels.clone(),
                        level: s.level,
                        since: s.since,
                        last_seen: s.last_seen,
                        value: s.last_value,
                    });
                }
            }
        }
        v
    }

    /// Restores saved series (rules that no longer exist are forgotten). Restored
    /// series keep their level: nothing is re-alerted.
    pub fn restore(&mut self, saved: Vec<SavedSeries>) {
        for s in saved {
            let Some(i) = self.rules.iter().position(|r| r.name == s.rule) else {
                continue;
            };
            let key = series_key(&s.labels);
            self.series[i].insert(
                key,
                Series {
                    labels: s.labels,
                    level: s.level,
                    since: s.since,
                    last_seen: s.last_seen,
                    last_value: s.value,
                    ..Default::default()
                },
            );
        }
    }
}

/// The level whose condition `v` meets.
fn condition(rule: &Rule, v: f64) -> Level {
    if rule.critical.is_some_and(|c| rule.op.holds(v, c)) {
        Level::Critical
    } else if rule.warning.is_some_and(|w| rule.op.holds(v, w)) {
        Level::Warning
    } else {
        Level::Ok
    }
}

/// One evaluation of a series whose condition is `cond` now.
fn step(
    i: usize,
    rule: &Rule,
    series: &mut Series,
    cond: Level,
    value: Option<f64>,
    now: Nanos,
    out: &mut Vec<Transition>,
) {
    // Pending timers: a level's condition holds when `cond` is at least that level.
    for (slot, level) in [(0, Level::Warning), (1, Level::Critical)] {
        if cond >= level {
            series.pending[slot].get_or_insert(now);
        } else {
            series.pending[slot] = None;
        }
    }
    let for_ = rule.for_.as_nanos() as u64;
    let held = if series.pending[1].is_some_and(|t| now.saturating_sub(t) >= for_) {
        Level::Critical
    } else if series.pending[0].is_some_and(|t| now.saturating_sub(t) >= for_) {
        Level::Warning
    } else {
        Level::Ok
    };
    // Up only once held for `for`; down at once.
    let to = held.max(series.level.min(cond));
    if to != series.level {
        let from = series.level;
        series.level = to;
        series.since = now;
        out.push(transition(i, rule, series, from, to, value, now));
    }
}

fn transition(
    i: usize,
    rule: &Rule,
    series: &Series,
    from: Level,
    to: Level,
    value: Option<f64>,
    now: Nanos,
) -> Transition {
    let level_for_threshold = if to == Level::Ok { from } else { to };
    let threshold = match level_for_threshold {
        Level::Critical => rule.critical,
        Level::Warning => rule.warning,
        Level::Ok => None,
    };
    Transition {
        rule: i,
        labels: series.labels.clone(),
        from,
        to,
        value,
        threshold,
        fingerprint: fingerprint(
            &rule.name,
            series.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ),
        at: now,
    }
}

/// The labels that identify a series of `rule`, borrowed, sorted, one per key:
/// `group_by`, else every attribute the point carries (not the resource's: they are the
/// same for every point of a source and would only make the key longer).
fn identifying_refs<'a>(rule: &'a Rule, s: &'a Sample<'a>) -> Vec<(&'a str, &'a str)> {
    let mut labels: Vec<(&str, &str)> = match &rule.group_by {
        Some(keys) => keys
            .iter()
            .filter_map(|k| s.attr(k).map(|v| (k.as_str(), v)))
            .collect(),
        None => s
            .attrs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect(),
    };
    labels.sort_unstable();
    labels.dedup_by(|a, b| a.0 == b.0);
    labels
}

fn push_key(k: &mut String, a: &str, b: &str) {
    k.push_str(a);
    k.push('\u{1}');
    k.push_str(b);
    k.push('\u{2}');
}

fn series_key(labels: &[(String, String)]) -> String {
    let mut k = String::new();
    for (a, b) in labels {
        push_key(&mut k, a, b);
    }
    k
}

fn push_window(q: &mut VecDeque<(Nanos, f64)>, now: Nanos, v: f64, window: Duration) {
    q.push_back((now, v));
    let w = window.as_nanos() as u64;
    // Keep one sample at or before the window's start, so the increase spans all of it.
    while q.len() > 2 && now.saturating_sub(q[1].0) >= w {
        q.pop_front();
    }
}

/// The increase over the samples: for cumulative counters the sum of rises (a drop is a
/// reset: the new value counts from 0), for delta points the sum of the values after the
/// first. `None` before there are two samples.
fn increase(q: &VecDeque<(Nanos, f64)>, deltas: bool) -> Option<f64> {
    if deltas {
        return (!q.is_empty()).then(|| q.iter().map(|(_, v)| v).sum());
    }
    if q.len() < 2 {
        return None;
    }
    let mut inc = 0.0;
    for w in q.iter().collect::<Vec<_>>().windows(2) {
        let (a, b) = (w[0].1, w[1].1);
        inc += if b >= a { b - a } else { b };
    }
    Some(inc)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn rule(toml_text: &str) -> Rule {
        let c: RuleConfig = toml::from_str(toml_text).unwrap();
        c.check().unwrap()
    }

    fn feed(set: &mut RuleSet, metric: &str, bot: &str, v: f64, now: Nanos) -> Vec<Transition> {
        feed_kind(set, metric, MetricKind::Gauge, bot, v, now)
    }

    fn feed_kind(
        set: &mut RuleSet,
        metric: &str,
        kind: MetricKind,
        bot: &str,
        v: f64,
        now: Nanos,
    ) -> Vec<Transition> {
        let attrs = vec![("bot".to_string(), bot.to_string())];
        let mut out = Vec::new();
        set.observe(
            &Sample {
                metric,
                kind,
                attrs: &attrs,
                resource: &[],
                value: v,
                start_unix_nano: 0,
                time_unix_nano: now,
            },
            now,
            &mut out,
        );
        out
    }

    fn levels(t: &[Transition]) -> Vec<(Level, Level)> {
        t.iter().map(|t| (t.from, t.to)).collect()
    }

    #[test]
    fn threshold_levels_change_once_per_state() {
        let mut set = RuleSet::new(vec![rule(
            r#"name = "dd"
metric = "dd"
warning = 5
critical = 8"#,
        )]);
        let mut all = Vec::new();
        for (i, v) in [1.0, 6.0, 6.5, 9.0, 9.5, 6.0, 2.0, 1.0].iter().enumerate() {
            all.extend(feed(&mut set, "dd", "a", *v, i as u64 * S));
        }
        use Level::*;
        assert_eq!(
            levels(&all),
            [
                (Ok, Warning),
                (Warning, Critical),
                (Critical, Warning),
                (Warning, Ok)
            ]
        );
        assert_eq!(all[1].threshold, Some(8.0));
        assert_eq!(all[3].threshold, Some(5.0));
        assert!(all.iter().all(|t| t.fingerprint == all[0].fingerprint));
        // Another bot is another series with its own fingerprint.
        let other = feed(&mut set, "dd", "b", 9.0, 10 * S);
        assert_eq!(levels(&other), [(Ok, Critical)]);
        assert_ne!(other[0].fingerprint, all[0].fingerprint);
    }

    #[test]
    fn for_delays_escalation_but_not_recovery() {
        let mut set = RuleSet::new(vec![rule(
            r#"name = "cpu"
metric = "cpu"
critical = 80
for = "10s""#,
        )]);
        assert!(feed(&mut set, "cpu", "a", 90.0, 0).is_empty());
        assert!(feed(&mut set, "cpu", "a", 90.0, 5 * S).is_empty());
        // A dip restarts the clock.
        assert!(feed(&mut set, "cpu", "a", 50.0, 6 * S).is_empty());
        assert!(feed(&mut set, "cpu", "a", 90.0, 7 * S).is_empty());
        let mut out = Vec::new();
        set.tick(16 * S, &mut out);
        assert!(out.is_empty());
        set.tick(17 * S, &mut out);
        assert_eq!(levels(&out), [(Level::Ok, Level::Critical)]);
        assert_eq!(
            levels(&feed(&mut set, "cpu", "a", 10.0, 18 * S)),
            [(Level::Critical, Level::Ok)]
        );
    }

    #[test]
    fn increase_over_a_window_with_resets() {
        let mut set = RuleSet::new(vec![rule(
            r#"name = "kill"
metric = "kills_total"
kind = "increase"
window = "60s"
critical = 0"#,
        )]);
        let counter = MetricKind::Sum {
            temporality: 2,
            monotonic: true,
        };
        assert!(feed_kind(&mut set, "kills_total", counter, "a", 3.0, 0).is_empty());
        assert!(feed_kind(&mut set, "kills_total", counter, "a", 3.0, 10 * S).is_empty());
        let t = feed_kind(&mut set, "kills_total", counter, "a", 4.0, 20 * S);
        assert_eq!(levels(&t), [(Level::Ok, Level::Critical)]);
        // Still within the window: still firing; a reset to 0 adds nothing.
        assert!(feed_kind(&mut set, "kills_total", counter, "a", 0.0, 50 * S).is_empty());
        // 20 s + 60 s later the rise has left the window.
        let t = feed_kind(&mut set, "kills_total", counter, "a", 0.0, 85 * S);
        assert_eq!(levels(&t), [(Level::Critical, Level::Ok)]);
    }

    #[test]
    fn increase_per_another_counter_is_a_rate() {
        let mut set = RuleSet::new(vec![rule(
            r#"name = "5xx"
metric = "http_5xx_total"
kind = "increase"
window = "5m"
per = "http_requests_total"
scale = 100
critical = 1"#,
        )]);
        let c = MetricKind::Sum {
            temporality: 2,
            monotonic: true,
        };
        let mut out = Vec::new();
        for (t, req, err) in [(0, 0.0, 0.0), (60, 1000.0, 5.0), (120, 2000.0, 30.0)] {
            out.extend(feed_kind(
                &mut set,
                "http_requests_total",
                c,
                "a",
                req,
                t * S,
            ));
            out.extend(feed_kind(&mut set, "http_5xx_total", c, "a", err, t * S));
        }
        // 30 errors in 2000 requests: 1.5% > 1%.
        assert_eq!(levels(&out), [(Level::Ok, Level::Critical)]);
        assert!((out[0].value.unwrap() - 1.5).abs() < 1e-9, "{out:?}");
    }

    #[test]
    fn absent_fires_after_silence_and_resolves_on_arrival() {
        let mut set = RuleSet::new(vec![rule(
            r#"name = "stale"
metric = "heartbeat"
kind = "absent"
for = "30s"
group_by = ["bot"]"#,
        )]);
        assert!(feed(&mut set, "heartbeat", "a", 1.0, 0).is_empty());
        let mut out = Vec::new();
        set.tick(29 * S, &mut out);
        assert!(out.is_empty());
        set.tick(30 * S, &mut out);
        set.tick(40 * S, &mut out);
        assert_eq!(levels(&out), [(Level::Ok, Level::Critical)]);
        let mut out = feed(&mut set, "heartbeat", "a", 1.0, 41 * S);
        set.tick(42 * S, &mut out);
        assert_eq!(levels(&out), [(Level::Critical, Level::Ok)]);
    }

    #[test]
    fn missing_data_policies() {
        let mut set = RuleSet::new(vec![
            rule(
                r#"name = "up"
metric = "up"
op = "<"
critical = 1
missing_data = "breaching"
stale_after = "60s""#,
            ),
            rule(
                r#"name = "lat"
metric = "lat"
critical = 5000
missing_data = "not_breaching"
stale_after = "60s""#,
            ),
        ]);
        assert!(feed(&mut set, "up", "a", 1.0, 0).is_empty());
        assert_eq!(
            levels(&feed(&mut set, "lat", "a", 6000.0, 0)),
            [(Level::Ok, Level::Critical)]
        );
        let mut out = Vec::new();
        set.tick(61 * S, &mut out);
        let mut got: Vec<(usize, Level)> = out.iter().map(|t| (t.rule, t.to)).collect();
        got.sort();
        assert_eq!(got, [(0, Level::Critical), (1, Level::Ok)]);
    }

    #[test]
    fn state_survives_a_restart_without_realerting() {
        let r = rule(
            r#"name = "dd"
metric = "dd"
critical = 8"#,
        );
        let mut set = RuleSet::new(vec![r.clone()]);
        assert_eq!(feed(&mut set, "dd", "a", 9.0, 0).len(), 1);
        assert!(set.take_dirty());
        let saved = serde_json::to_string(&set.save()).unwrap();
        let mut again = RuleSet::new(vec![r]);
        again.restore(serde_json::from_str(&saved).unwrap());
        assert!(feed(&mut again, "dd", "a", 9.5, 5 * S).is_empty());
        let t = feed(&mut again, "dd", "a", 1.0, 6 * S);
        assert_eq!(levels(&t), [(Level::Critical, Level::Ok)]);
    }

    #[test]
    fn a_composite_fires_while_any_member_does() {
        let mut set = RuleSet::new(vec![
            rule("name = \"a\"\nmetric = \"a\"\ncritical = 1"),
            rule("name = \"b\"\nmetric = \"b\"\nwarning = 1"),
            rule("name = \"any\"\nkind = \"composite\"\nany_of = [\"a\", \"b\"]"),
        ]);
        let composite = |t: &[Transition]| -> Vec<(Level, Level)> {
            t.iter()
                .filter(|t| t.rule == 2)
                .map(|t| (t.from, t.to))
                .collect()
        };
        assert!(composite(&feed(&mut set, "a", "x", 0.0, 0)).is_empty());
        assert_eq!(
            composite(&feed(&mut set, "b", "x", 2.0, S)),
            [(Level::Ok, Level::Critical)]
        );
        // A second member firing changes nothing; the composite resolves with the last.
        assert!(composite(&feed(&mut set, "a", "x", 2.0, 2 * S)).is_empty());
        assert!(composite(&feed(&mut set, "b", "x", 0.0, 3 * S)).is_empty());
        assert_eq!(
            composite(&feed(&mut set, "a", "x", 0.0, 4 * S)),
            [(Level::Critical, Level::Ok)]
        );
    }

    #[test]
    fn matchers_filter_points() {
        let mut set = RuleSet::new(vec![rule(
            r#"name = "dd"
metric = "dd"
match = { bot = "!b" }
critical = 8"#,
        )]);
        assert!(feed(&mut set, "dd", "b", 9.0, 0).is_empty());
        assert_eq!(feed(&mut set, "dd", "a", 9.0, 0).len(), 1);
    }

    #[test]
    fn bad_rules_name_their_key() {
        let bad = |t: &str| {
            let c: RuleConfig = toml::from_str(t).unwrap();
            c.check().unwrap_err().0
        };
        assert_eq!(bad("name = \"x\"\nmetric = \"m\""), "critical");
        assert_eq!(
            bad("name = \"x\"\nmetric = \"m\"\nwarning = 8\ncritical = 5"),
            "critical"
        );
        assert_eq!(
            bad("name = \"x\"\nmetric = \"m\"\nkind = \"increase\"\ncritical = 0"),
            "window"
        );
        assert_eq!(
            bad("name = \"x\"\nmetric = \"m\"\nkind = \"absent\""),
            "for"
        );
        assert_eq!(bad("name = \"\"\nmetric = \"m\"\ncritical = 1"), "name");
    }
}
