//! `risk`: the seeds' risk monitor as a processor — per-bot limits with circuit-breaker
//! actions, fail-closed on blind monitoring, and generic alert rules over any metric.
//!
//! ```toml
//! [processors.risk]
//! max_drawdown_pct = 10          # 1..100 (deployment bounds 1..50)
//! max_open_trades = 5            # 1..50  (deployment 1..20)
//! max_leverage = 3               # 1..125 (deployment 1..10)
//! max_daily_loss_pct = 3         # 0.1..100 (deployment 0.1..50); off when not set
//! action_on_breach = "pause"     # pause | stop | alert_only
//! fail_closed_after = 5          # failed polls in a row → monitoring_failure
//! deployment_bounds = true       # false: only the wider entity bounds apply
//! control = "freqtrade/main"     # the receiver whose client acts (default: the one polling the bot)
//! state_dir = "data/risk"        # default: <data_dir>/processor/<id>
//! [processors.risk.bots.main]    # per-bot overrides of any limit, action or fail_closed_after
//! max_drawdown_pct = 8
//! [[processors.risk.rules]]      # generic alert rules: see `rules.rs`
//! ```
//!
//! **Evaluation order.** Each time a batch brings fresh metrics of a bot, its limits are
//! checked in this fixed order: (1) current drawdown ≥ `max_drawdown_pct`, (2) open
//! trades > `max_open_trades`, (3) the largest open trade's leverage > `max_leverage`,
//! (4) the day's loss (since 00:00 UTC) ≥ `max_daily_loss_pct`, (5) failed polls in a
//! row ≥ `fail_closed_after` (`monitoring_failure`: trading blind is a breach). A limit
//! whose input is not in the batch keeps its state: missing data never clears a breach.
//!
//! **Breach runs.** A bot is in a breach run while any limit is breached. The run's first
//! breach runs the action once (`stop` falls back to `pause` when it fails; a failed
//! action is retried every `action_retry_interval` while the run lasts and raises one
//! `RiskActionFailed` alert). Every limit that becomes breached raises one critical alert;
//! every limit that recovers raises one resolved alert (info). The bot is not resumed
//! automatically: that is an operator's decision.
//!
//! **Restarts.** Breach runs (which limits, since when, whether the action ran), rule
//! states and the daily baselines are written to `state.json` in the state directory
//! (atomically) after every change. A restart while breached sends nothing new and does
//! not act again; a recovery after the restart still sends its resolved alert.
//!
//! **State for dashboards.** With `emit_state_metrics` (default), each batch that carried
//! a bot's inputs also carries `tradewatch.risk.limit`, `tradewatch.risk.value` and
//! `tradewatch.risk.breached` (per bot and limit), `tradewatch.risk.breach_run` and
//! `tradewatch.risk.action_pending` (per bot), and `tradewatch.alert.level` (per rule
//! series seen in the batch: 0 ok, 1 warning, 2 critical).

mod config;
mod engine;
pub mod rules;
mod saver;
#[cfg(test)]
mod tests;

pub use config::{Action, DrawdownUnit, Inputs, Limits, Settings};
pub use engine::Limit;

use crate::component::{BuildContext, BuildError, ComponentId, Kind, Reference, Signal};
use crate::component::{Processor, ProcessorConfig};
use crate::config::{ConfigError, Source};
use crate::otlp::metric_names::any_metric_name;
use crate::pipeline::data::Decoded;
use crate::pipeline::{Batch, Payload};
use engine::Engine;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

pub struct RiskConfig {
    settings: Arc<Settings>,
}

/// The checked settings of `[processors.<id>]` (for tools and tests that read a
/// shipped configuration's limits and rules).
pub fn settings(src: &Source, id: &ComponentId) -> Result<Settings, ConfigError> {
    config::parse(src, id)
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ProcessorConfig>, ConfigError> {
    Ok(Arc::new(RiskConfig {
        settings: Arc::new(config::parse(src, id)?),
    }))
}

impl ProcessorConfig for RiskConfig {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Metrics]
    }

    fn references(&self) -> Vec<Reference> {
        self.settings
            .control
            .iter()
            .map(|c| Reference::new(&["control"], Kind::Receiver, c).of_types(&["freqtrade"]))
            .collect()
    }

    fn build(&self, _signal: Signal, ctx: &BuildContext) -> Result<Box<dyn Processor>, BuildError> {
        let settings = self.settings.clone();
        let mut error = None;
        let engine = ctx.shared(|| match Engine::new(settings, ctx) {
            Ok(e) => Some(Arc::new(Mutex::new(e))),
            Err(e) => {
                error = Some(e);
                None
            }
        });
        if let Some(e) = error {
            return Err(e);
        }
        let Some(engine) = engine.as_ref().clone() else {
            return Err(BuildError::new(
                &ctx.id,
                "the risk state could not be loaded (see the first error)",
            ));
        };
        let weak = Arc::downgrade(&engine);
        ctx.health.set_detail_with(move || match weak.upgrade() {
            Some(e) => e.lock().unwrap_or_else(|e| e.into_inner()).detail(),
            None => String::new(),
        });
        // Ticks drive rule timers (`for`, absent series) and retries of failed actions.
        Ok(Box::new(Risk {
            tick: self.settings.evaluation_interval,
            next_tick: Instant::now() + self.settings.evaluation_interval,
            engine,
        }))
    }
}

struct Risk {
    engine: Arc<Mutex<Engine>>,
    tick: std::time::Duration,
    next_tick: Instant,
}

impl Risk {
    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Processor for Risk {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        // A relayed request that holds no metric the engine reads passes as its bytes,
        // undecoded.
        let relevant = match &batch.payload {
            Payload::Encoded { bytes, .. } => {
                let e = self.engine();
                any_metric_name(bytes, |n| e.reads(n))
            }
            _ => true,
        };
        if relevant && batch.payload.signal() == Signal::Metrics {
            // Read where the data lies (a relayed request stays as its bytes); decode in
            // place only to append the risk state.
            let extra = match batch.payload.decoded() {
                Ok(Decoded::Metrics(req)) => Engine::process(&self.engine, &req),
                Ok(_) => Vec::new(),
                Err(e) => {
                    self.engine().undecodable(e);
                    Vec::new()
                }
            };
            if !extra.is_empty() && batch.payload.make_decoded().is_ok() {
                if let Payload::Metrics(req) = &mut batch.payload {
                    req.resource_metrics.extend(extra);
                }
            }
        }
        out.push(batch);
    }

    fn deadline(&self) -> Option<Instant> {
        Some(self.next_tick)
    }

    fn flush(&mut self, force: bool, _out: &mut Vec<Batch>) {
        if force {
            // Shutdown: the last state change must be on disk before the process ends.
            let saver = self.engine().saver();
            saver.wait_idle(std::time::Duration::from_secs(5));
            return;
        }
        if Instant::now() >= self.next_tick {
            Engine::tick(&self.engine);
            self.next_tick = Instant::now() + self.tick;
        }
    }
}
