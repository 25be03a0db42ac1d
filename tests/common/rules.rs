//! Feeding alert rules on a simulated clock: the points of a table row go to a fresh
//! `RuleSet`, and [`trip`] says whether the row's rule (and only it) ends at the level the
//! row expects. Shared by `seed_alerts` and `seed_pipelines`.

use tradewatch::otlp::MetricKind;
use tradewatch::processors::risk::rules::{Level, Rule, RuleSet, Sample, Transition};

pub const S: u64 = 1_000_000_000;

pub const GAUGE: MetricKind = MetricKind::Gauge;
pub const COUNTER: MetricKind = MetricKind::Sum {
    temporality: 2,
    monotonic: true,
};

/// One fed point: seconds, metric, kind, labels, value.
pub type Point = (
    u64,
    &'static str,
    MetricKind,
    Vec<(&'static str, &'static str)>,
    f64,
);

/// A gauge point.
pub fn g(t: u64, m: &'static str, labels: &[(&'static str, &'static str)], v: f64) -> Point {
    (t, m, GAUGE, labels.to_vec(), v)
}

/// A cumulative monotonic counter point.
pub fn c(t: u64, m: &'static str, labels: &[(&'static str, &'static str)], v: f64) -> Point {
    (t, m, COUNTER, labels.to_vec(), v)
}

/// Feeds `points` to a fresh rule set (a clock tick at `tick` seconds after them, when
/// given): rule `i` must end at `want`, not fire at its first point when it has a `for`,
/// and trip nothing else but the composite rules that combine it.
pub fn trip(
    rules: &[Rule],
    i: usize,
    points: &[Point],
    tick: Option<u64>,
    want: Level,
) -> Result<(), String> {
    let mut set = RuleSet::new(rules.to_vec());
    let mut out: Vec<Transition> = Vec::new();
    let mut at_first = Vec::new();
    for (t, metric, kind, labels, value) in points {
        let attrs: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        set.observe(
            &Sample {
                metric,
                kind: *kind,
                attrs: &attrs,
                resource: &[],
                value: *value,
                start_unix_nano: 0,
                time_unix_nano: t * S,
            },
            1_000 * S + t * S,
            &mut out,
        );
        if *t == 0 {
            at_first = out.clone();
        }
    }
    if let Some(t) = tick {
        set.tick(1_000 * S + t * S, &mut out);
    }
    let mine: Vec<&Transition> = out.iter().filter(|t| t.rule == i).collect();
    let last = mine.last().map(|t| t.to).unwrap_or(Level::Ok);
    if last != want {
        return Err(format!("got {last:?}, want {want:?} ({mine:?})"));
    }
    if !rules[i].for_.is_zero() && at_first.iter().any(|t| t.rule == i && t.to != Level::Ok) {
        return Err(format!("fired before its `for` ({:?})", rules[i].for_));
    }
    let combined = |a: usize, b: usize| {
        rules[a].any_of.contains(&rules[b].name) || rules[b].any_of.contains(&rules[a].name)
    };
    for t in &out {
        if t.rule != i && !combined(t.rule, i) {
            return Err(format!("also tripped {}", rules[t.rule].name));
        }
    }
    Ok(())
}
