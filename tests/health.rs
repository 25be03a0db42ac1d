//! Honest health and clean lifecycles, in-process: configurations built with test-only
//! components (a receiver that dies, a processor that panics, an exporter with a
//! listener of its own) run through `service::run::run` on free loopback ports, and are
//! watched over real HTTP.
//!
//! * A receiver whose task panics or ends before shutdown is `failed` with the reason,
//!   counted, and `/status` is UNHEALTHY (503), or DEGRADED when it is not critical.
//! * A processor that panics is `failed`; its batch's ack resolves GaveUp (the client
//!   waiting for delivery gets 503); the other pipelines keep serving.
//! * The service endpoint answers during start-up, before receivers listen.
//! * Shutdown never waits for a component that keeps an `AlertSink`, and still delivers
//!   the alert raised just before it.
//! * A processor named in two pipelines sees both pipelines' data in one shared state.
//! * An exporter's own listener: a busy port fails start-up naming the component; the
//!   listener serves while running and closes in the exporter's shutdown, after the
//!   pipelines drained.

mod common;

use common::{eventually, free_port, http_get, metric_value, read_jsonl, spans_in};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tradewatch::component::{
    BuildContext, BuildError, ComponentId, ExportError, Exporter, ExporterConfig, Kind, Outputs,
    Processor, ProcessorConfig, Receiver, ReceiverConfig, Registry, Running, Signal,
};
use tradewatch::config::{component_config, Config, ConfigError, Source};
use tradewatch::pipeline::alerts::{Alert, AlertSink, AlertState, Severity};
use tradewatch::pipeline::sending::SendingSettings;
use tradewatch::pipeline::{Batch, Payload};
use tradewatch::service::run::RunError;

const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Harness

fn config(text: &str, registry: &Registry) -> Config {
    let src = Source::from_text("test.toml".into(), text, &|_| None).expect("source");
    Config::from_source(&src, registry).unwrap_or_else(|e| panic!("config: {e}"))
}

/// One `run` in a runtime of its own.
struct Service {
    rt: tokio::runtime::Runtime,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), RunError>>>,
    addr: SocketAddr,
    client: reqwest::Client,
}

impl Service {
    fn start(cfg: Config, service_port: u16) -> Service {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let stop = CancellationToken::new();
        let task = rt.spawn(tradewatch::service::run::run(cfg, stop.clone()));
        Service {
            rt,
            stop,
            task: Some(task),
            addr: SocketAddr::from(([127, 0, 0, 1], service_port)),
            client: reqwest::Client::new(),
        }
    }

    /// `/status` as (HTTP code, JSON), once it answers.
    fn status(&self) -> Option<(u16, serde_json::Value)> {
        let (code, body) = http_get(self.addr, "/status").ok()?;
        Some((code, serde_json::from_str(&body).ok()?))
    }

    fn overall(&self) -> Option<(u16, String)> {
        self.status()
            .map(|(code, s)| (code, s["status"].as_str().unwrap_or_default().to_owned()))
    }

    fn component(&self, kind: &str, id: &str) -> serde_json::Value {
        let (_, s) = self.status().expect("/status answers");
        s["components"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["kind"] == kind && c["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} {id} in /status: {s}"))
    }

    fn metric(&self, sample: &str) -> Option<f64> {
        metric_value(&http_get(self.addr, "/metrics").ok()?.1, sample)
    }

    fn wait_healthy(&self) {
        eventually(WAIT, "/status says HEALTHY once start-up is over", || {
            self.status().is_some_and(|(code, s)| {
                code == 200 && s["status"] == "HEALTHY" && s["phase"] == "running"
            })
        });
    }

    /// POSTs an OTLP/JSON trace request; the HTTP status.
    fn post(&self, port: u16, body: String) -> u16 {
        self.rt
            .block_on(
                self.client
                    .post(format!("http://127.0.0.1:{port}/v1/traces"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send(),
            )
            .expect("POST /v1/traces")
            .status()
            .as_u16()
    }

    /// Cancels the run and returns its outcome, which must come within `timeout`.
    fn finish(mut self, timeout: Duration) -> Result<(), RunError> {
        self.stop.cancel();
        let task = self.task.take().expect("running");
        self.rt
            .block_on(async { tokio::time::timeout(timeout, task).await })
            .unwrap_or_else(|_| panic!("run did not return within {timeout:?} of the stop"))
            .expect("run task")
    }
}

/// `n` spans named `{name}{i}` in one request.
fn spans(name: &str, n: usize) -> String {
    let spans: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"traceId":"{:032x}","spanId":"{:016x}","name":"{name}{i}"}}"#,
                i + 1,
                i + 1
            )
        })
        .collect();
    format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        spans.join(",")
    )
}

fn span_names(path: &std::path::Path) -> Vec<String> {
    spans_in(&read_jsonl(path))
        .iter()
        .map(|(_, s)| s["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn registry() -> Registry {
    let mut r = tradewatch::registry::builtin();
    r.receivers.push(("dying", parse_dying));
    r.receivers.push(("gated", parse_gated));
    r.processors.push(("panicky", parse_panicky));
    r.processors.push(("counting", parse_counting));
    r.processors.push(("alerter", parse_alerter));
    r.exporters.push(("scrape", parse_scrape));
    r
}

// ---------------------------------------------------------------------------------------
// Test-only components

/// A receiver whose task ends (`mode = "end"`) or panics (`mode = "panic"`) soon after it
/// starts, as one whose upstream connection died would.
#[derive(Deserialize)]
struct DyingConfig {
    mode: String,
}

fn parse_dying(src: &Source, id: &ComponentId) -> Result<Arc<dyn ReceiverConfig>, ConfigError> {
    let c: DyingConfig = component_config(src, Kind::Receiver, id)?;
    Ok(Arc::new(c))
}

impl ReceiverConfig for DyingConfig {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Traces]
    }
    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError> {
        Ok(Box::new(Dying {
            panic: self.mode == "panic",
        }))
    }
}

struct Dying {
    panic: bool,
}

impl Receiver for Dying {
    fn start(
        self: Box<Self>,
        outputs: Outputs,
        _shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<Running, BuildError>> {
        let panic = self.panic;
        Box::pin(async move {
            let run: Running = Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                drop(outputs);
                if panic {
                    panic!("upstream connection lost (on purpose)");
                }
            });
            Ok(run)
        })
    }
}

/// A receiver whose start-up waits for [`GATE`], like one connecting to a slow peer.
#[derive(Deserialize)]
struct GatedConfig {}

static GATE: OnceLock<Arc<tokio::sync::Notify>> = OnceLock::new();

fn gate() -> Arc<tokio::sync::Notify> {
    GATE.get_or_init(Default::default).clone()
}

fn parse_gated(src: &Source, id: &ComponentId) -> Result<Arc<dyn ReceiverConfig>, ConfigError> {
    let c: GatedConfig = component_config(src, Kind::Receiver, id)?;
    Ok(Arc::new(c))
}

impl ReceiverConfig for GatedConfig {
    fn signals(&self) -> Vec<Signal> {
        vec![Signal::Traces]
    }
    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Receiver>, BuildError> {
        Ok(Box::new(Gated))
    }
}

struct Gated;

impl Receiver for Gated {
    fn start(
        self: Box<Self>,
        outputs: Outputs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<Running, BuildError>> {
        Box::pin(async move {
            gate().notified().await;
            let run: Running = Box::pin(async move {
                shutdown.cancelled().await;
                drop(outputs);
            });
            Ok(run)
        })
    }
}

/// A processor that panics on any batch of exactly three items, and passes others on.
#[derive(Deserialize)]
struct PanickyConfig {}

fn parse_panicky(src: &Source, id: &ComponentId) -> Result<Arc<dyn ProcessorConfig>, ConfigError> {
    let c: PanickyConfig = component_config(src, Kind::Processor, id)?;
    Ok(Arc::new(c))
}

impl ProcessorConfig for PanickyConfig {
    fn build(&self, _s: Signal, _ctx: &BuildContext) -> Result<Box<dyn Processor>, BuildError> {
        Ok(Box::new(Panicky))
    }
}

struct Panicky;

impl Processor for Panicky {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        let items = batch.payload.items();
        assert_ne!(items, 3, "poisoned batch of {items} items (on purpose)");
        out.push(batch);
    }
}

/// Counts items in state shared by every instance of its id; each instance records
/// the `Arc` it got in [`COUNTERS`].
#[derive(Deserialize)]
struct CountingConfig {}

static COUNTERS: Mutex<Vec<Arc<AtomicU64>>> = Mutex::new(Vec::new());

fn parse_counting(src: &Source, id: &ComponentId) -> Result<Arc<dyn ProcessorConfig>, ConfigError> {
    let c: CountingConfig = component_config(src, Kind::Processor, id)?;
    Ok(Arc::new(c))
}

impl ProcessorConfig for CountingConfig {
    fn build(&self, _s: Signal, ctx: &BuildContext) -> Result<Box<dyn Processor>, BuildError> {
        let seen = ctx.shared(|| AtomicU64::new(0));
        COUNTERS.lock().unwrap().push(seen.clone());
        Ok(Box::new(Counting(seen)))
    }
}

struct Counting(Arc<AtomicU64>);

impl Processor for Counting {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        self.0.fetch_add(batch.payload.items(), Ordering::Relaxed);
        out.push(batch);
    }
}

/// Keeps its `AlertSink` for ever: one clone in the instance, one in [`KEPT_SINK`].
#[derive(Deserialize)]
struct AlerterConfig {}

static KEPT_SINK: OnceLock<AlertSink> = OnceLock::new();

fn parse_alerter(src: &Source, id: &ComponentId) -> Result<Arc<dyn ProcessorConfig>, ConfigError> {
    let c: AlerterConfig = component_config(src, Kind::Processor, id)?;
    Ok(Arc::new(c))
}

impl ProcessorConfig for AlerterConfig {
    fn build(&self, _s: Signal, ctx: &BuildContext) -> Result<Box<dyn Processor>, BuildError> {
        let _ = KEPT_SINK.set(ctx.alerts.clone());
        Ok(Box::new(Alerter(ctx.alerts.clone())))
    }
}

struct Alerter(#[allow(dead_code)] AlertSink);

impl Processor for Alerter {
    fn process(&mut self, batch: Batch, out: &mut Vec<Batch>) {
        out.push(batch);
    }
}

/// An exporter with a listener of its own (as a scrape endpoint has), bound in
/// `start` and closed in `shutdown`. Every export and the shutdown are logged in
/// [`SCRAPE_EVENTS`].
#[derive(Deserialize)]
struct ScrapeConfig {
    listen: SocketAddr,
}

static SCRAPE_EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn scrape_event(e: String) {
    SCRAPE_EVENTS.lock().unwrap().push(e);
}

fn parse_scrape(src: &Source, id: &ComponentId) -> Result<Arc<dyn ExporterConfig>, ConfigError> {
    let c: ScrapeConfig = component_config(src, Kind::Exporter, id)?;
    Ok(Arc::new(c))
}

impl ExporterConfig for ScrapeConfig {
    fn signals(&self) -> Vec<Signal> {
        Signal::ALL.to_vec()
    }
    fn sending(&self) -> SendingSettings {
        SendingSettings::in_process(8, 1, Duration::from_secs(5))
    }
    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Exporter>, BuildError> {
        Ok(Arc::new(Scrape {
            id: ctx.id.clone(),
            listen: self.listen,
            stop: CancellationToken::new(),
            task: Mutex::default(),
        }))
    }
}

struct Scrape {
    id: ComponentId,
    listen: SocketAddr,
    stop: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Exporter for Scrape {
    fn start(&self) -> BoxFuture<'static, Result<(), BuildError>> {
        let (id, addr, stop) = (self.id.clone(), self.listen, self.stop.clone());
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std);
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                let e = BuildError::new(&id, format!("listen = \"{addr}\": {e}"));
                return Box::pin(async move { Err(e) });
            }
        };
        *self.task.lock().unwrap() = Some(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    c = listener.accept() => if let Ok((mut s, _)) = c {
                        let _ = s.write_all(b"scraped\n").await;
                    },
                }
            }
        }));
        Box::pin(async { Ok(()) })
    }

    fn export(&self, payload: Arc<Payload>) -> BoxFuture<'static, Result<(), ExportError>> {
        scrape_event(format!("export {}", payload.items()));
        Box::pin(async { Ok(()) })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        self.stop.cancel();
        let task = self.task.lock().unwrap().take();
        Box::pin(async move {
            if let Some(t) = task {
                let _ = t.await;
            }
            scrape_event("shutdown".into());
        })
    }
}

// ---------------------------------------------------------------------------------------
// Tests

fn dying_config(dir: &std::path::Path, otlp: u16, service: u16, mode: &str) -> String {
    format!(
        r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{otlp}"
[receivers.dying]
mode = "{mode}"

[exporters.file]
path = "{dir}/out.jsonl"
[exporters.nop]

[service]
http = "127.0.0.1:{service}"
shutdown_timeout = "5s"

[service.pipelines.traces]
receivers = ["otlp"]
exporters = ["file"]
[service.pipelines."traces/dying"]
receivers = ["dying"]
exporters = ["nop"]
"#,
        dir = dir.display()
    )
}

#[test]
fn a_receiver_that_panics_makes_the_service_unhealthy_and_the_rest_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (otlp, service) = (free_port(), free_port());
    let cfg = config(
        &dying_config(dir.path(), otlp, service, "panic"),
        &registry(),
    );
    let s = Service::start(cfg, service);

    eventually(WAIT, "/status says UNHEALTHY with 503", || {
        s.overall() == Some((503, "UNHEALTHY".into()))
    });
    let dying = s.component("receiver", "dying");
    assert_eq!(dying["state"], "failed", "{dying}");
    let reason = dying["last_error"]["message"].as_str().unwrap_or_default();
    assert!(
        reason.contains("upstream connection lost (on purpose)"),
        "the panic message is the reason: {dying}"
    );
    assert_eq!(
        s.metric(r#"tradewatch_receiver_failures_total{receiver="dying"}"#),
        Some(1.0)
    );
    assert_eq!(s.component("receiver", "otlp")["state"], "ok");

    // The OTLP receiver keeps accepting, and its data is delivered.
    assert_eq!(s.post(otlp, spans("alive", 2)), 200);
    let out = dir.path().join("out.jsonl");
    eventually(WAIT, "the OTLP receiver's data is delivered", || {
        span_names(&out) == ["alive0", "alive1"]
    });
    s.finish(WAIT).expect("a clean shutdown");
}

#[test]
fn a_non_critical_receiver_that_ends_early_makes_the_service_degraded() {
    let dir = tempfile::tempdir().unwrap();
    let (otlp, service) = (free_port(), free_port());
    let mut cfg = config(&dying_config(dir.path(), otlp, service, "end"), &registry());
    cfg.critical.insert(
        (Kind::Receiver, ComponentId::parse("dying").unwrap()),
        false,
    );
    let s = Service::start(cfg, service);

    // DEGRADED also shows while a component is still starting: wait for the receiver
    // under test to have failed, then for the overall answer.
    eventually(WAIT, "the dying receiver failed", || {
        s.status().is_some_and(|(_, st)| {
            st["components"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["kind"] == "receiver" && c["id"] == "dying" && c["state"] == "failed")
        })
    });
    eventually(WAIT, "/status says DEGRADED with 200", || {
        s.overall() == Some((200, "DEGRADED".into()))
    });
    let dying = s.component("receiver", "dying");
    assert_eq!(dying["state"], "failed", "{dying}");
    assert_eq!(dying["critical"], false, "{dying}");
    assert!(
        dying["last_error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("stopped before shutdown"),
        "{dying}"
    );
    assert_eq!(
        s.metric(r#"tradewatch_receiver_failures_total{receiver="dying"}"#),
        Some(1.0)
    );
    assert_eq!(s.post(otlp, spans("alive", 1)), 200);
    let out = dir.path().join("out.jsonl");
    eventually(WAIT, "the OTLP receiver's data is delivered", || {
        span_names(&out) == ["alive0"]
    });
    s.finish(WAIT).expect("a clean shutdown");
}

#[test]
fn a_processor_that_panics_fails_its_batch_and_the_other_pipelines_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, service) = (free_port(), free_port(), free_port());
    let text = format!(
        r#"
[receivers."otlp/a"]
grpc = "off"
http = "127.0.0.1:{a}"
wait_for_delivery = true
[receivers."otlp/b"]
grpc = "off"
http = "127.0.0.1:{b}"
wait_for_delivery = true

[processors.panicky]

[exporters."file/a"]
path = "{dir}/a.jsonl"
[exporters."file/b"]
path = "{dir}/b.jsonl"

[service]
http = "127.0.0.1:{service}"
shutdown_timeout = "5s"

[service.pipelines."traces/a"]
receivers = ["otlp/a"]
processors = ["panicky"]
exporters = ["file/a"]
[service.pipelines."traces/b"]
receivers = ["otlp/b"]
exporters = ["file/b"]
"#,
        dir = dir.path().display()
    );
    let s = Service::start(config(&text, &registry()), service);
    s.wait_healthy();

    assert_eq!(s.post(a, spans("fine", 2)), 200, "a healthy batch passes");
    // The poisoned batch is lost: the client waiting for delivery is told so.
    assert_eq!(s.post(a, spans("poison", 3)), 503);
    assert_eq!(s.overall(), Some((503, "UNHEALTHY".into())));
    let p = s.component("processor", "panicky");
    assert_eq!(p["state"], "failed", "{p}");
    assert!(
        p["last_error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("poisoned batch of 3 items (on purpose)"),
        "the panic message is the reason: {p}"
    );
    assert_eq!(
        s.metric(r#"tradewatch_processor_failures_total{processor="panicky"}"#),
        Some(1.0)
    );
    // A failed processor passes nothing on unprocessed: later batches fail closed.
    assert_eq!(s.post(a, spans("after", 1)), 503);
    assert_eq!(
        s.metric(r#"tradewatch_processor_failed_items_total{processor="panicky",signal="traces"}"#),
        Some(4.0)
    );
    // The other pipeline keeps serving.
    assert_eq!(s.post(b, spans("other", 2)), 200);
    eventually(
        WAIT,
        "each file holds its pipeline's delivered spans",
        || {
            span_names(&dir.path().join("b.jsonl")) == ["other0", "other1"]
                && span_names(&dir.path().join("a.jsonl")) == ["fine0", "fine1"]
        },
    );
    s.finish(WAIT).expect("a clean shutdown");
}

#[test]
fn the_service_endpoint_answers_while_receivers_start() {
    let (otlp, service) = (free_port(), free_port());
    let text = format!(
        r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{otlp}"
[receivers.gated]
[exporters.nop]
[service]
http = "127.0.0.1:{service}"
[service.pipelines.traces]
receivers = ["gated", "otlp"]
exporters = ["nop"]
"#
    );
    let s = Service::start(config(&text, &registry()), service);
    eventually(WAIT, "/health answers during start-up", || {
        http_get(s.addr, "/health").is_ok_and(|(code, _)| code == 200)
    });
    let (_, health) = http_get(s.addr, "/health").unwrap();
    assert!(health.contains(r#""phase":"starting""#), "{health}");
    let gated = s.component("receiver", "gated");
    assert_eq!(gated["state"], "starting", "{gated}");
    assert_eq!(s.overall(), Some((200, "DEGRADED".into())));
    // Receivers start in id order, so the OTLP one is not listening yet.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", otlp)).is_err(),
        "the OTLP receiver listens only once start-up got to it"
    );
    gate().notify_one();
    s.wait_healthy();
    assert_eq!(s.status().unwrap().1["phase"], "running");
    assert_eq!(s.post(otlp, spans("x", 1)), 200);
    s.finish(WAIT).expect("a clean shutdown");
}

#[test]
fn shutdown_does_not_wait_for_a_component_that_keeps_an_alert_sink() {
    let dir = tempfile::tempdir().unwrap();
    let service = free_port();
    let text = format!(
        r#"
[receivers.alerts]
[processors.alerter]
[exporters.file]
path = "{dir}/alerts.jsonl"
[service]
http = "127.0.0.1:{service}"
shutdown_timeout = "10s"
[service.pipelines."logs/alerts"]
receivers = ["alerts"]
processors = ["alerter"]
exporters = ["file"]
"#,
        dir = dir.path().display()
    );
    let s = Service::start(config(&text, &registry()), service);
    s.wait_healthy();
    // Raised just before shutdown begins: it is still delivered.
    KEPT_SINK.get().expect("the alerter was built").emit(Alert {
        name: "LastWords".into(),
        state: AlertState::Firing,
        severity: Severity::Warning,
        summary: "raised as shutdown begins".into(),
        fingerprint: String::new(),
        attributes: Vec::new(),
        trace_id: None,
        source: "alerter".into(),
    });
    s.finish(Duration::from_secs(8))
        .expect("shutdown drains and returns Ok (exit 0) before its 10 s deadline");
    let records = common::logs_in(&read_jsonl(&dir.path().join("alerts.jsonl")));
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        records[0].1["body"]["stringValue"],
        "raised as shutdown begins"
    );
}

#[test]
fn a_processor_named_in_two_pipelines_sees_both_pipelines_data_in_one_state() {
    let (a, b, service) = (free_port(), free_port(), free_port());
    let text = format!(
        r#"
[receivers."otlp/a"]
grpc = "off"
http = "127.0.0.1:{a}"
[receivers."otlp/b"]
grpc = "off"
http = "127.0.0.1:{b}"
[processors.counting]
[exporters.nop]
[service]
http = "127.0.0.1:{service}"
[service.pipelines."traces/a"]
receivers = ["otlp/a"]
processors = ["counting"]
exporters = ["nop"]
[service.pipelines."traces/b"]
receivers = ["otlp/b"]
processors = ["counting"]
exporters = ["nop"]
"#
    );
    let s = Service::start(config(&text, &registry()), service);
    s.wait_healthy();
    let counters = COUNTERS.lock().unwrap().clone();
    assert_eq!(counters.len(), 2, "one instance per pipeline");
    assert!(Arc::ptr_eq(&counters[0], &counters[1]), "one shared state");
    assert_eq!(s.post(a, spans("a", 2)), 200);
    assert_eq!(s.post(b, spans("b", 3)), 200);
    eventually(WAIT, "both pipelines' items counted in one state", || {
        counters[0].load(Ordering::Relaxed) == 5
    });
    s.finish(WAIT).expect("a clean shutdown");
}

fn scrape_config(otlp: u16, listen: u16, service: u16) -> String {
    format!(
        r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{otlp}"
[processors.batch]
timeout = "60s"
[exporters.scrape]
listen = "127.0.0.1:{listen}"
[service]
http = "127.0.0.1:{service}"
shutdown_timeout = "10s"
[service.pipelines.traces]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["scrape"]
"#
    )
}

/// Both scrape tests use one exporter type and its event log, so they take turns.
static SCRAPE_TESTS: Mutex<()> = Mutex::new(());

#[test]
fn an_exporter_whose_listener_port_is_taken_fails_start_up_naming_it() {
    let _turn = SCRAPE_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().port();
    let (otlp, service) = (free_port(), free_port());
    let s = Service::start(
        config(&scrape_config(otlp, listen, service), &registry()),
        service,
    );
    let task = s.task.as_ref().unwrap();
    eventually(WAIT, "run returns", || task.is_finished());
    let err = s.finish(WAIT).expect_err("start-up fails").to_string();
    assert!(
        err.starts_with("scrape: ") && err.contains(&format!("listen = \"127.0.0.1:{listen}\"")),
        "the error names the component and its key: {err}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", otlp)).is_err(),
        "no receiver was started"
    );
}

#[test]
fn an_exporter_listener_serves_while_running_and_closes_after_the_pipelines_drained() {
    let _turn = SCRAPE_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    SCRAPE_EVENTS.lock().unwrap().clear();
    let (otlp, listen, service) = (free_port(), free_port(), free_port());
    let s = Service::start(
        config(&scrape_config(otlp, listen, service), &registry()),
        service,
    );
    s.wait_healthy();
    let mut answer = String::new();
    std::io::Read::read_to_string(
        &mut std::net::TcpStream::connect(("127.0.0.1", listen)).expect("the listener serves"),
        &mut answer,
    )
    .unwrap();
    assert_eq!(answer, "scraped\n");
    // Held by the batch processor (60 s timeout) until shutdown flushes it.
    assert_eq!(s.post(otlp, spans("held", 2)), 200);
    s.finish(WAIT).expect("a clean shutdown");
    assert_eq!(
        *SCRAPE_EVENTS.lock().unwrap(),
        ["export 2", "shutdown"],
        "the exporter shuts down after what its pipeline flushed was exported"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", listen)).is_err(),
        "the listener is closed after shutdown"
    );
}
