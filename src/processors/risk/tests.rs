//! The risk engine against a fake bot control: breach runs, actions once per run,
//! fallbacks, fail-closed, restarts, and the configuration's checks.

use super::*;
use crate::component::Kind;
use crate::config::Source;
use crate::otlp::{attr, MetricsBuilder, Timestamp};
use crate::pipeline::alerts::{Alert, AlertSink, AlertState, Severity};
use crate::receivers::freqtrade::{BotControl, BotControlHandle, ControlError};
use crate::service::health::Telemetry;
use futures_util::future::BoxFuture;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use std::sync::Mutex as StdMutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// Records every action; `stop` and `pause` fail while told to.
#[derive(Default)]
struct FakeControl {
    calls: StdMutex<Vec<String>>,
    fail_stop: std::sync::atomic::AtomicBool,
    fail_pause: std::sync::atomic::AtomicBool,
}

impl FakeControl {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn call(&self, what: String, fail: bool) -> Result<String, ControlError> {
        self.calls.lock().unwrap().push(what.clone());
        if fail {
            Err(ControlError::UnknownBot(format!("{what} refused")))
        } else {
            Ok(format!("{what} ok"))
        }
    }
}

impl BotControl for FakeControl {
    fn bots(&self) -> Vec<String> {
        vec!["main".into(), "other".into()]
    }
    fn pause<'a>(&'a self, bot: &'a str) -> BoxFuture<'a, Result<String, ControlError>> {
        let fail = self.fail_pause.load(std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move { self.call(format!("pause {bot}"), fail) })
    }
    fn stop_entry<'a>(&'a self, bot: &'a str) -> BoxFuture<'a, Result<String, ControlError>> {
        Box::pin(async move { self.call(format!("stopentry {bot}"), false) })
    }
    fn stop<'a>(&'a self, bot: &'a str) -> BoxFuture<'a, Result<String, ControlError>> {
        let fail = self.fail_stop.load(std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move { self.call(format!("stop {bot}"), fail) })
    }
    fn start<'a>(&'a self, bot: &'a str) -> BoxFuture<'a, Result<String, ControlError>> {
        Box::pin(async move { self.call(format!("start {bot}"), false) })
    }
    fn force_exit<'a>(
        &'a self,
        bot: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<String, ControlError>> {
        Box::pin(async move { self.call(format!("forceexit {bot} {id}"), false) })
    }
    fn consecutive_failures(&self, _bot: &str) -> Option<u32> {
        Some(0)
    }
}

struct Harness {
    processor: Box<dyn Processor>,
    alerts: mpsc::Receiver<Alert>,
    control: Arc<FakeControl>,
}

fn settings(text: &str) -> Result<Arc<dyn ProcessorConfig>, String> {
    let src = Source::from_text("risk.toml".into(), text, &|_| None).map_err(|e| e.to_string())?;
    parse(&src, &ComponentId::parse("risk").unwrap()).map_err(|e| e.to_string())
}

fn harness(text: &str, dir: &std::path::Path, control: Arc<FakeControl>) -> Harness {
    let cfg = settings(text).unwrap();
    let id = ComponentId::parse("risk").unwrap();
    let telemetry = Telemetry::new();
    let (sink, rx) = AlertSink::new(64, Default::default());
    let controls = crate::pipeline::controls::Controls::default();
    controls.provide(
        "freqtrade/main",
        Arc::new(BotControlHandle(control.clone() as Arc<dyn BotControl>)),
    );
    let ctx = BuildContext {
        id: id.clone(),
        health: telemetry.component(Kind::Processor, &id, true),
        telemetry: telemetry.clone(),
        state: crate::state::StateDir::new(dir, "processor", "risk"),
        controls,
        shared_state: Default::default(),
        alerts: sink,
        alert_queue: Arc::new(std::sync::Mutex::new(None)),
        shutdown: Default::default(),
        memory: crate::pipeline::memory::MemoryBudget::unlimited(),
    };
    Harness {
        processor: cfg.build(Signal::Metrics, &ctx).unwrap(),
        alerts: rx,
        control,
    }
}

/// One poll of bot `bot` as the freqtrade receiver reports it.
fn poll(bot: &str, drawdown_ratio: f64, open: i64, leverages: &[f64], failures: i64) -> Batch {
    let t = Timestamp::now();
    let base = [attr("bot", bot), attr("strategy", "S1")];
    let mut b = MetricsBuilder::new();
    b.resource([attr("service.name", "freqtrade")]);
    b.gauge("freqtrade.poll.consecutive_failures", "{failure}", "")
        .point(failures, base.clone(), t);
    if failures == 0 {
        b.gauge("freqtrade.drawdown.current.ratio", "1", "")
            .point(drawdown_ratio, base.clone(), t);
        b.gauge("freqtrade.trades.open", "{trade}", "")
            .point(open, base.clone(), t);
        b.gauge("freqtrade.trade.leverage", "1", "");
        for (i, l) in leverages.iter().enumerate() {
            let mut a = base.to_vec();
            a.push(attr("trade_id", i as i64));
            b.point(*l, a, t);
        }
    }
    Batch::new(Payload::Metrics(b.build()))
}

impl Harness {
    fn feed(&mut self, batch: Batch) -> ExportMetricsServiceRequest {
        let mut out = Vec::new();
        self.processor.process(batch, &mut out);
        assert_eq!(out.len(), 1, "risk passes every batch on");
        match out.pop().unwrap().payload {
            Payload::Metrics(r) => r,
            p => panic!("not metrics: {p:?}"),
        }
    }

    fn tick(&mut self) {
        let mut out = Vec::new();
        self.processor.flush(false, &mut out);
    }

    /// Alerts raised so far, after letting spawned actions finish.
    async fn alerts(&mut self) -> Vec<Alert> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut v = Vec::new();
        while let Ok(a) = self.alerts.try_recv() {
            v.push(a);
        }
        v
    }

    fn close(&mut self) {
        let mut out = Vec::new();
        self.processor.flush(true, &mut out);
    }
}

fn names(alerts: &[Alert]) -> Vec<(String, AlertState, Severity)> {
    alerts
        .iter()
        .map(|a| (a.name.clone(), a.state, a.severity))
        .collect()
}

fn gauge(req: &ExportMetricsServiceRequest, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    crate::otlp::for_each_metric_point(req, |m, p| {
        if m.metric.name == name
            && labels
                .iter()
                .all(|(k, v)| crate::otlp::get_str(p.attributes(), k) == Some(v))
        {
            found = p.value();
        }
    });
    found
}

const BASE: &str = r#"
[processors.risk]
max_drawdown_pct = 10
max_open_trades = 3
max_leverage = 3
action_on_breach = "pause"
fail_closed_after = 3
"#;

#[tokio::test]
async fn a_breach_pauses_once_per_run_and_recovers_with_one_resolved_alert() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(BASE, dir.path(), Arc::default());
    h.feed(poll("main", 0.05, 1, &[2.0], 0));
    assert!(h.alerts().await.is_empty());
    let req = h.feed(poll("main", 0.1205, 1, &[2.0], 0));
    let a = h.alerts().await;
    assert_eq!(
        names(&a),
        [(
            "MaxDrawdownBreached".into(),
            AlertState::Firing,
            Severity::Critical
        )]
    );
    assert!(a[0].summary.contains("12.05%"), "{}", a[0].summary);
    assert_eq!(h.control.calls(), ["pause main"]);
    assert_eq!(
        gauge(
            &req,
            "tradewatch.risk.breached",
            &[("bot", "main"), ("limit", "drawdown_pct")]
        ),
        Some(1.0)
    );
    assert_eq!(
        gauge(
            &req,
            "tradewatch.risk.limit",
            &[("bot", "main"), ("limit", "drawdown_pct")]
        ),
        Some(10.0)
    );
    // Still breached, and now a second limit too: one more alert, no second action.
    for _ in 0..3 {
        h.feed(poll("main", 0.13, 4, &[2.0], 0));
        h.tick();
    }
    assert_eq!(
        names(&h.alerts().await),
        [(
            "MaxOpenTradesBreached".into(),
            AlertState::Firing,
            Severity::Critical
        )]
    );
    assert_eq!(h.control.calls(), ["pause main"]);
    // Back within limits: one resolved record per limit, no resume.
    h.feed(poll("main", 0.02, 1, &[2.0], 0));
    let a = h.alerts().await;
    assert_eq!(
        names(&a),
        [
            (
                "MaxDrawdownBreached".into(),
                AlertState::Resolved,
                Severity::Info
            ),
            (
                "MaxOpenTradesBreached".into(),
                AlertState::Resolved,
                Severity::Info
            ),
        ]
    );
    assert_eq!(h.control.calls(), ["pause main"]);
    // A new run acts again.
    h.feed(poll("main", 0.02, 1, &[5.0], 0));
    assert_eq!(
        names(&h.alerts().await),
        [(
            "MaxLeverageBreached".into(),
            AlertState::Firing,
            Severity::Critical
        )]
    );
    assert_eq!(h.control.calls(), ["pause main", "pause main"]);
}

#[tokio::test]
async fn a_restart_while_breached_sends_nothing_new_and_still_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let control: Arc<FakeControl> = Arc::default();
    let mut h = harness(BASE, dir.path(), control.clone());
    h.feed(poll("main", 0.2, 1, &[], 0));
    assert_eq!(h.alerts().await.len(), 1);
    h.close();
    drop(h);
    let mut h = harness(BASE, dir.path(), control.clone());
    for _ in 0..3 {
        h.feed(poll("main", 0.2, 1, &[], 0));
        h.tick();
    }
    assert!(h.alerts().await.is_empty());
    assert_eq!(
        control.calls(),
        ["pause main"],
        "no second pause after a restart"
    );
    h.feed(poll("main", 0.01, 1, &[], 0));
    let a = h.alerts().await;
    assert_eq!(
        names(&a),
        [(
            "MaxDrawdownBreached".into(),
            AlertState::Resolved,
            Severity::Info
        )]
    );
}

#[tokio::test]
async fn stop_falls_back_to_pause() {
    let dir = tempfile::tempdir().unwrap();
    let control: Arc<FakeControl> = Arc::default();
    control
        .fail_stop
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let text = BASE.replace("\"pause\"", "\"stop\"");
    let mut h = harness(&text, dir.path(), control.clone());
    h.feed(poll("main", 0.5, 1, &[], 0));
    let a = h.alerts().await;
    assert_eq!(a.len(), 1, "{:?}", names(&a));
    assert_eq!(control.calls(), ["stop main", "pause main"]);
}

#[tokio::test]
async fn fail_closed_after_n_failed_polls_and_a_failed_action_is_retried_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let control: Arc<FakeControl> = Arc::default();
    control
        .fail_pause
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let text = format!("{BASE}action_retry_interval = \"10ms\"\nevaluation_interval = \"10ms\"\n");
    let mut h = harness(&text, dir.path(), control.clone());
    h.feed(poll("main", 0.01, 0, &[], 1));
    h.feed(poll("main", 0.01, 0, &[], 2));
    assert!(h.alerts().await.is_empty());
    h.feed(poll("main", 0.01, 0, &[], 3));
    let a = h.alerts().await;
    assert_eq!(
        names(&a),
        [
            (
                "MonitoringFailure".into(),
                AlertState::Firing,
                Severity::Critical
            ),
            (
                "RiskActionFailed".into(),
                AlertState::Firing,
                Severity::Critical
            ),
        ]
    );
    // Retried on ticks, alerted once.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        h.tick();
    }
    assert!(h.alerts().await.is_empty());
    assert!(control.calls().len() >= 3, "{:?}", control.calls());
    // The bot answers again: the run ends, both alerts resolve.
    h.feed(poll("main", 0.01, 0, &[], 0));
    let a = h.alerts().await;
    let mut got = names(&a);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            (
                "MonitoringFailure".into(),
                AlertState::Resolved,
                Severity::Info
            ),
            (
                "RiskActionFailed".into(),
                AlertState::Resolved,
                Severity::Info
            ),
        ]
    );
}

#[tokio::test]
async fn alert_only_never_acts_and_bots_have_their_own_limits() {
    let dir = tempfile::tempdir().unwrap();
    let control: Arc<FakeControl> = Arc::default();
    let text = format!(
        "{BASE}\n[processors.risk.bots.other]\nmax_drawdown_pct = 30\naction_on_breach = \"alert_only\"\n"
    );
    let mut h = harness(&text, dir.path(), control.clone());
    h.feed(poll("other", 0.2, 1, &[], 0));
    assert!(h.alerts().await.is_empty(), "20% is within other's 30%");
    h.feed(poll("other", 0.35, 1, &[], 0));
    let a = h.alerts().await;
    assert_eq!(a.len(), 1);
    assert_eq!(
        crate::otlp::get_str(&a[0].attributes, "action"),
        Some("alert_only")
    );
    assert!(control.calls().is_empty());
}

#[tokio::test]
async fn rules_raise_one_record_per_state_change() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"{BASE}
[[processors.risk.rules]]
name = "DrawdownHigh"
metric = "freqtrade.drawdown.current.ratio"
warning = 0.05
critical = 0.08
group_by = ["bot"]
summary = "{{bot}} drawdown {{value}} over {{threshold}}"
"#
    );
    let mut h = harness(&text, dir.path(), Arc::default());
    let mut seen = Vec::new();
    for dd in [0.01, 0.06, 0.07, 0.09, 0.06, 0.01] {
        let req = h.feed(poll("main", dd, 0, &[], 0));
        seen.push(
            gauge(
                &req,
                "tradewatch.alert.level",
                &[("alert", "DrawdownHigh"), ("bot", "main")],
            )
            .unwrap(),
        );
    }
    assert_eq!(seen, [0.0, 1.0, 1.0, 2.0, 1.0, 0.0]);
    let a = h.alerts().await;
    assert_eq!(
        names(&a),
        [
            ("DrawdownHigh".into(), AlertState::Firing, Severity::Warning),
            (
                "DrawdownHigh".into(),
                AlertState::Firing,
                Severity::Critical
            ),
            ("DrawdownHigh".into(), AlertState::Firing, Severity::Warning),
            ("DrawdownHigh".into(), AlertState::Resolved, Severity::Info),
        ]
    );
    assert_eq!(a[1].summary, "main drawdown 0.09 over 0.08");
    assert!(a.iter().all(|x| x.fingerprint == a[0].fingerprint));
}

#[test]
fn limits_out_of_bounds_and_unknown_actions_name_file_line_and_key() {
    let err = |text: &str| settings(text).err().expect("should be refused");
    let e = err("[processors.risk]\nmax_drawdown_pct = 60\n");
    assert!(e.contains("risk.toml:2"), "{e}");
    assert!(e.contains("deployment bounds 1..50"), "{e}");
    assert!(
        settings("[processors.risk]\nmax_drawdown_pct = 60\ndeployment_bounds = false\n").is_ok()
    );
    let e = err("[processors.risk]\nmax_drawdown_pct = 0.5\n");
    assert!(e.contains("outside 1..50"), "{e}");
    let e = err("[processors.risk]\nmax_leverage = 200\ndeployment_bounds = false\n");
    assert!(
        e.contains("risk.toml:2") && e.contains("outside 1..125"),
        "{e}"
    );
    let e = err("[processors.risk]\naction_on_breach = \"panic\"\n");
    assert!(
        e.contains("risk.toml:2") && e.contains("unknown action"),
        "{e}"
    );
    let e = err("[processors.risk]\n[processors.risk.bots.main]\nmax_open_trades = 21\n");
    assert!(
        e.contains("risk.toml:3") && e.contains("bots.main.max_open_trades"),
        "{e}"
    );
    let e = err("[processors.risk]\n\n[[processors.risk.rules]]\nname = \"x\"\nmetric = \"m\"\nwarning = 9\ncritical = 5\n");
    assert!(
        e.contains("risk.toml:7") && e.contains("rules[0].critical"),
        "{e}"
    );
    let e = err("[processors.risk]\n[[processors.risk.rules]]\nname = \"x\"\ncritical = 5\n");
    assert!(e.contains("metric"), "{e}");
}

#[tokio::test]
async fn a_firing_rule_is_not_raised_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"{BASE}
[[processors.risk.rules]]
name = "DrawdownHigh"
metric = "freqtrade.drawdown.current.ratio"
critical = 0.05
group_by = ["bot"]
"#
    );
    let mut h = harness(&text, dir.path(), Arc::default());
    h.feed(poll("main", 0.06, 0, &[], 0));
    assert_eq!(
        names(&h.alerts().await),
        [(
            "DrawdownHigh".into(),
            AlertState::Firing,
            Severity::Critical
        )]
    );
    h.close();
    drop(h);
    let mut h = harness(&text, dir.path(), Arc::default());
    let req = h.feed(poll("main", 0.07, 0, &[], 0));
    assert!(h.alerts().await.is_empty(), "still firing: nothing new");
    assert_eq!(
        gauge(
            &req,
            "tradewatch.alert.level",
            &[("alert", "DrawdownHigh"), ("bot", "main")]
        ),
        Some(2.0)
    );
    h.feed(poll("main", 0.01, 0, &[], 0));
    assert_eq!(
        names(&h.alerts().await),
        [("DrawdownHigh".into(), AlertState::Resolved, Severity::Info)]
    );
}

#[tokio::test]
async fn a_damaged_state_file_is_set_aside_and_monitoring_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let state = crate::state::StateDir::new(dir.path(), "processor", "risk");
    state.write_blocking("state.json", b"{ not json").unwrap();
    let mut h = harness(BASE, dir.path(), Arc::default());
    h.feed(poll("main", 0.5, 1, &[], 0));
    assert_eq!(h.alerts().await.len(), 1, "a breach is still caught");
    assert!(state.path().join("state.json.corrupt").exists());
}

#[tokio::test]
async fn relayed_requests_are_decoded_only_when_they_hold_a_metric_the_engine_reads() {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(BASE, dir.path(), Arc::default());
    let encoded = |req: ExportMetricsServiceRequest| {
        Batch::new(Payload::from_encoded(Signal::Metrics, req.encode_to_vec().into()).unwrap())
    };
    // Nothing the engine reads: the bytes go on as they came.
    let mut other = MetricsBuilder::new();
    other.resource([attr("service.name", "app")]);
    other
        .gauge("http.requests", "", "")
        .point(1, [attr("bot", "main")], Timestamp::now());
    let mut out = Vec::new();
    h.processor.process(encoded(other.build()), &mut out);
    assert!(matches!(out[0].payload, Payload::Encoded { .. }));
    // A poll relayed from another tradewatch: evaluated like a local one.
    let Payload::Metrics(req) = poll("main", 0.5, 1, &[], 0).payload else {
        unreachable!()
    };
    let mut out = Vec::new();
    h.processor.process(encoded(req), &mut out);
    assert!(
        matches!(out[0].payload, Payload::Metrics(_)),
        "state metrics appended"
    );
    assert_eq!(
        names(&h.alerts().await),
        [(
            "MaxDrawdownBreached".into(),
            AlertState::Firing,
            Severity::Critical
        )]
    );
}
