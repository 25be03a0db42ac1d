//! The risk processor's costs.
//!
//! `cargo bench --bench risk` measures:
//! 1. **Rule evaluation per data point with 1,000 rules** (`RuleSet::observe`): each point
//!    reaches the rules watching its metric through an index, so the cost depends on how
//!    many rules watch the point's metric, not on how many rules exist. Three shapes:
//!    1,000 rules on 1,000 metrics (one rule per metric, the usual case), 1,000 rules
//!    on one metric told apart by matchers (the worst case: every point meets every
//!    rule), and points of metrics no rule watches (the pass-through cost).
//! 2. **The processor per batch**: a Freqtrade poll's worth of metrics (about 40
//!    points, one bot) through the `risk` processor with 1,000 rules configured, limits
//!    evaluated and the risk state metrics appended.
//! 3. **Breach to action and to alert** (`BENCH_BREACHES`, default 1,000): tradewatch in
//!    this process polls a loopback fake Freqtrade API whose drawdown alternates between
//!    12 % and 1 % on each poll (a breach run, then its recovery). For each breach, the
//!    time from the fake sending the poll's last response to the `/pause` request
//!    arriving at the fake, and to the alert arriving at a loopback Slack, Telegram and
//!    webhook fake: p50 / p99 / max.
//!
//! Run without `--bench` (e.g. `cargo test --all-targets`) it does nothing.

use std::time::{Duration, Instant};
use tradewatch::otlp::MetricKind;
use tradewatch::processors::risk::rules::{RuleConfig, RuleSet, Sample};

#[path = "risk/latency.rs"]
mod latency;

fn rule(name: &str, metric: &str, extra: &str) -> tradewatch::processors::risk::rules::Rule {
    let text =
        format!("name = \"{name}\"\nmetric = \"{metric}\"\nwarning = 50\ncritical = 80\n{extra}");
    let c: RuleConfig = toml::from_str(&text).unwrap();
    c.check().unwrap()
}

fn per_point(
    label: &str,
    set: &mut RuleSet,
    points: &[(String, Vec<(String, String)>)],
    rounds: usize,
) {
    let mut out = Vec::new();
    let start = Instant::now();
    let mut n = 0u64;
    for r in 0..rounds {
        for (i, (metric, attrs)) in points.iter().enumerate() {
            // Values wander below the thresholds: no transitions, the steady state.
            let v = ((r * 7 + i) % 40) as f64;
            set.observe(
                &Sample {
                    metric,
                    kind: MetricKind::Gauge,
                    attrs,
                    resource: &[],
                    value: v,
                    start_unix_nano: 0,
                    time_unix_nano: 0,
                },
                r as u64 * 1_000_000_000,
                &mut out,
            );
            n += 1;
        }
        out.clear();
    }
    let per = start.elapsed().as_nanos() as f64 / n as f64;
    println!("{label:<58} {per:>9.0} ns/point  ({n} points)");
}

fn rules_bench() {
    println!("== rule evaluation, 1,000 rules ==");
    let attrs = |i: usize| vec![("bot".to_string(), format!("bot{}", i % 20))];
    // 1) one rule per metric.
    let rules: Vec<_> = (0..1000)
        .map(|i| rule(&format!("r{i}"), &format!("m{i}"), "group_by = [\"bot\"]"))
        .collect();
    let mut set = RuleSet::new(rules);
    let points: Vec<_> = (0..1000).map(|i| (format!("m{i}"), attrs(i))).collect();
    per_point(
        "1,000 rules on 1,000 metrics (1 rule per point)",
        &mut set,
        &points,
        200,
    );
    // 2) every rule on one metric, matchers telling them apart.
    let rules: Vec<_> = (0..1000)
        .map(|i| {
            rule(
                &format!("r{i}"),
                "m",
                &format!("match = {{ bot = \"bot{}\" }}", i % 20),
            )
        })
        .collect();
    let mut set = RuleSet::new(rules);
    let points: Vec<_> = (0..1000).map(|i| ("m".to_string(), attrs(i))).collect();
    per_point(
        "1,000 rules on one metric (every rule sees every point)",
        &mut set,
        &points,
        20,
    );
    // 3) points no rule watches.
    let rules: Vec<_> = (0..1000)
        .map(|i| rule(&format!("r{i}"), &format!("m{i}"), ""))
        .collect();
    let mut set = RuleSet::new(rules);
    let points: Vec<_> = (0..1000).map(|i| (format!("other{i}"), attrs(i))).collect();
    per_point("points of metrics no rule watches", &mut set, &points, 200);
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    rules_bench();
    latency::processor_per_batch();
    latency::breach_latency();
    let _ = Duration::ZERO;
}
