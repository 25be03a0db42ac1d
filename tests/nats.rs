//! Acceptance of the NATS JetStream buffer tier: agents publish with the `nats` exporter,
//! gateway replicas share a durable consumer through the `nats` receiver. Every test runs
//! real `nats-server` processes (JetStream, file storage) on free loopback ports.

mod common;

use common::nats::NatsServer;
use common::{
    eventually, metric_value, post_otlp, read_jsonl, seq_request, span_ids, spans_in, Collector,
};
use prost::Message;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const PROTOBUF: &str = "application/x-protobuf";

fn toml_list(urls: &[String]) -> String {
    let quoted: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// OTLP in (HTTP), `nats` out, every signal.
fn agent_config(http: u16, service: u16, urls: &[String], extra: &str) -> String {
    let mut c = format!(
        r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"

[exporters.nats]
url = {urls}
timeout = "2s"
{extra}

[exporters.nats.retry_on_failure]
initial_interval = "100ms"
max_interval = "1s"
max_elapsed_time = "10m"

[service]
http = "127.0.0.1:{service}"
"#,
        urls = toml_list(urls),
    );
    for s in ["traces", "metrics", "logs"] {
        c.push_str(&format!(
            "\n[service.pipelines.{s}]\nreceivers = [\"otlp\"]\nexporters = [\"nats\"]\n"
        ));
    }
    c
}

/// `nats` in (consumer `gateways`), a file out, every signal. With `stuck`, a second
/// exporter to that port (a peer that never answers): batches are written to the file but
/// never acknowledged, so the replica holds `max_ack_pending` exported, unacknowledged batches.
fn gateway_config(
    service: u16,
    urls: &[String],
    max_ack_pending: usize,
    stuck: Option<u16>,
) -> String {
    let mut c = format!(
        r#"
[receivers.nats]
url = {urls}
consumer = "gateways"
max_ack_pending = {max_ack_pending}
ack_wait = "2s"
nak_delay = "300ms"

[exporters.file]
path = "out/gateway.jsonl"

[service]
http = "127.0.0.1:{service}"
"#,
        urls = toml_list(urls),
    );
    let mut exporters = "[\"file\"]";
    if let Some(port) = stuck {
        c.push_str(&format!(
            "\n[exporters.\"otlp/stuck\"]\nendpoint = \"http://127.0.0.1:{port}\"\nprotocol = \"http\"\ntimeout = \"10m\"\ncritical = false\n"
        ));
        exporters = "[\"file\", \"otlp/stuck\"]";
    }
    for s in ["traces", "metrics", "logs"] {
        c.push_str(&format!(
            "\n[service.pipelines.{s}]\nreceivers = [\"nats\"]\nexporters = {exporters}\n"
        ));
    }
    c
}

fn gateway(urls: &[String], max_ack_pending: usize, stuck: Option<u16>) -> Collector {
    let service = common::free_port();
    Collector::start(
        &gateway_config(service, urls, max_ack_pending, stuck),
        service,
    )
}

/// Span ids in a gateway's file output, with their count (duplicates show as > 1).
fn spans_of(c: &Collector) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (_, s) in spans_in(&read_jsonl(&c.path("out/gateway.jsonl"))) {
        *m.entry(s["spanId"].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    m
}

fn merged(parts: &[&BTreeMap<String, usize>]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in parts {
        for (k, n) in p.iter() {
            *m.entry(k.clone()).or_insert(0) += n;
        }
    }
    m
}

fn component<'a>(st: &'a Value, kind: &str, id: &str) -> &'a Value {
    st["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["kind"] == kind && x["id"] == id)
        .unwrap_or_else(|| panic!("no {kind} {id} in /status: {st}"))
}

fn receiver_counter(c: &Collector, name: &str, labels: &str) -> f64 {
    let sample = format!("tradewatch_receiver_{name}{{receiver=\"nats\"{labels}}}");
    metric_value(&c.metrics(), &sample).unwrap_or(0.0)
}

/// Sends numbered trace requests (`spans` spans each, span ids salted) to an agent's
/// OTLP/HTTP port; returns the requests whose POST was answered 200.
struct Sender {
    port: u16,
    salt: u8,
    spans: usize,
    next: usize,
    accepted: Vec<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
}

impl Sender {
    fn new(port: u16, salt: u8, spans: usize) -> Sender {
        Sender {
            port,
            salt,
            spans,
            next: 0,
            accepted: Vec::new(),
        }
    }

    /// Posts the next request; its status.
    fn send(&mut self) -> u16 {
        let req = seq_request("nats-test", self.salt, self.next, self.spans);
        self.next += 1;
        let code = post_otlp(self.port, "traces", PROTOBUF, req.encode_to_vec());
        if code == 200 {
            self.accepted.push(req);
        }
        code
    }

    fn send_ok(&mut self, n: usize, pause: Duration) {
        for _ in 0..n {
            let code = self.send();
            assert_eq!(code, 200, "the agent refused request {}", self.next - 1);
            std::thread::sleep(pause);
        }
    }

    fn ids(&self) -> BTreeSet<String> {
        span_ids(&self.accepted).into_iter().collect()
    }
}

fn assert_all_arrived(want: &BTreeSet<String>, got: &BTreeMap<String, usize>) {
    let missing: Vec<&String> = want.iter().filter(|id| !got.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} spans missing, e.g. {:?}",
        missing.len(),
        want.len(),
        &missing[..missing.len().min(5)]
    );
}

fn wait_all_arrived(
    what: &str,
    want: &BTreeSet<String>,
    gateways: &[&Collector],
    timeout: Duration,
) {
    eventually(timeout, what, || {
        let maps: Vec<BTreeMap<String, usize>> = gateways.iter().map(|g| spans_of(g)).collect();
        let refs: Vec<&BTreeMap<String, usize>> = maps.iter().collect();
        let all = merged(&refs);
        want.iter().all(|id| all.contains_key(id))
    });
}

// ---------------------------------------------------------------------------------------
// 1. Python OTel SDK → agent → JetStream → two gateway replicas → files.

fn run_sdk_client(http: u16, run_id: &str, dir: &Path) -> Value {
    let out = dir.join(format!("manifest-{run_id}.json"));
    let script = common::repo_root().join("tests/peers/otel_client.py");
    let result = Command::new(common::python())
        .arg(&script)
        .args(["--protocol", "http", "--endpoint"])
        .arg(format!("http://127.0.0.1:{http}"))
        .args([
            "--spans",
            "30",
            "--logs",
            "10",
            "--metrics",
            "--run-id",
            run_id,
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run the Python OpenTelemetry client");
    assert!(
        result.status.success(),
        "the SDK client reported failed exports ({}):\nstdout: {}\nstderr: {}",
        result.status,
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    serde_json::from_slice(&std::fs::read(&out).expect("manifest written")).expect("manifest")
}

#[test]
fn sdk_spans_cross_jetstream_to_two_gateway_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let urls = vec![nats.url()];
    let (http, service) = (common::free_port(), common::free_port());
    let agent = Collector::start(&agent_config(http, service, &urls, ""), service);
    // One unacknowledged message at a time per replica: the server hands the next one to
    // whichever replica is waiting, so both take a share.
    let a = gateway(&urls, 1, None);
    let b = gateway(&urls, 1, None);

    let mut want = BTreeSet::new();
    let mut logs = 0usize;
    for i in 0..6 {
        let m = run_sdk_client(http, &format!("nats-sdk-{i}"), dir.path());
        for s in m["spans"].as_array().unwrap() {
            want.insert(s["span_id"].as_str().unwrap().to_owned());
        }
        logs += m["logs"].as_array().unwrap().len();
    }
    assert_eq!(want.len(), 6 * 30);
    wait_all_arrived(
        "every SDK span at a gateway",
        &want,
        &[&a, &b],
        Duration::from_secs(60),
    );
    let (sa, sb) = (spans_of(&a), spans_of(&b));
    let all = merged(&[&sa, &sb]);
    assert_all_arrived(&want, &all);
    assert!(
        all.values().all(|n| *n == 1),
        "without a crash every span arrives once"
    );
    assert!(
        !sa.is_empty() && !sb.is_empty(),
        "each replica took a share: {} and {} spans",
        sa.len(),
        sb.len()
    );
    // Logs and metrics crossed too.
    let log_count =
        |c: &Collector| common::logs_in(&read_jsonl(&c.path("out/gateway.jsonl"))).len();
    eventually(Duration::from_secs(30), "every SDK log record", || {
        log_count(&a) + log_count(&b) == logs
    });
    let metric_count =
        |c: &Collector| common::metrics_in(&read_jsonl(&c.path("out/gateway.jsonl"))).len();
    eventually(Duration::from_secs(30), "the SDK's metrics", || {
        metric_count(&a) + metric_count(&b) >= 6 * 4
    });
    // The agent delivered everything to JetStream and is healthy.
    let st = agent.status();
    assert_eq!(component(&st, "exporter", "nats")["state"], "ok", "{st}");
}

// ---------------------------------------------------------------------------------------
// 2. A replica killed with SIGKILL mid-run, not restarted.

#[test]
fn a_replica_killed_mid_run_loses_nothing_and_duplicates_stay_within_its_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let urls = vec![nats.url()];
    let (http, service) = (common::free_port(), common::free_port());
    let _agent = Collector::start(&agent_config(http, service, &urls, ""), service);
    const IN_FLIGHT: usize = 4;
    const SPANS: usize = 10;
    let a = gateway(&urls, IN_FLIGHT, None);
    // B writes every batch it takes to its file, but its second upstream never answers:
    // it holds IN_FLIGHT exported, unacknowledged batches (and keeps them from being
    // redelivered while it lives, by telling JetStream it is still working on them).
    let stuck = common::BlackHole::start();
    let mut b = gateway(&urls, IN_FLIGHT, Some(stuck.port));

    // Requests keep coming while B is killed.
    let sending = std::thread::spawn(move || {
        let mut sender = Sender::new(http, 0x42, SPANS);
        sender.send_ok(600, Duration::from_millis(10));
        sender
    });
    eventually(
        Duration::from_secs(30),
        "replica B holding all it may",
        || {
            receiver_counter(&b, "in_flight_messages", "") == IN_FLIGHT as f64
                && spans_of(&b).len() == IN_FLIGHT * SPANS
        },
    );
    // Nothing may happen here: for longer than ack_wait, B's batches stay B's while it lives.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        receiver_counter(&a, "redelivered_messages_total", ""),
        0.0,
        "a live replica's batches were handed to another"
    );
    assert!(!sending.is_finished(), "the run ended before B was killed");
    b.kill();
    let b_spans = spans_of(&b);
    let sender = sending.join().expect("sender thread");
    // B's spans are final; A gets the rest, including what B held unacknowledged.
    let want = sender.ids();
    eventually(
        Duration::from_secs(60),
        "every span at replica A or B",
        || {
            let all = merged(&[&spans_of(&a), &b_spans]);
            want.iter().all(|id| all.contains_key(id))
        },
    );
    let a_spans = spans_of(&a);
    let all = merged(&[&a_spans, &b_spans]);
    assert_all_arrived(&sender.ids(), &all);
    let duplicate_spans = all.values().filter(|n| **n > 1).count();
    let duplicate_batches: BTreeSet<usize> = all
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| u32::from_str_radix(&id[8..16], 16).unwrap() as usize / SPANS)
        .collect();
    assert!(
        duplicate_spans <= IN_FLIGHT * SPANS,
        "{duplicate_spans} duplicate spans: more than the {IN_FLIGHT} batches of {SPANS} the dead replica could hold"
    );
    // What B held unacknowledged was redelivered to A, and counted there.
    let redelivered = receiver_counter(&a, "redelivered_messages_total", "");
    eprintln!(
        "B exported {} spans before SIGKILL; A counted {redelivered} redeliveries; {} spans ({} batches) arrived twice",
        b_spans.len(),
        duplicate_spans,
        duplicate_batches.len()
    );
    assert_eq!(
        redelivered, IN_FLIGHT as f64,
        "A counted {redelivered} redeliveries; B held {IN_FLIGHT} messages"
    );
    // B had exported them all: each is a duplicate, and each was counted.
    assert_eq!(
        duplicate_batches.len(),
        IN_FLIGHT,
        "{} batches duplicated, {redelivered} redeliveries counted",
        duplicate_batches.len()
    );
}

// ---------------------------------------------------------------------------------------
// 3. Every gateway down for 30 s: the stream buffers.

#[test]
fn with_every_gateway_down_for_30s_the_agent_keeps_accepting_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let urls = vec![nats.url()];
    let (http, service) = (common::free_port(), common::free_port());
    let agent = Collector::start(&agent_config(http, service, &urls, ""), service);
    let mut a = gateway(&urls, 8, None);
    let mut b = gateway(&urls, 8, None);
    let mut sender = Sender::new(http, 0x43, 20);
    sender.send_ok(10, Duration::from_millis(20));
    wait_all_arrived(
        "the first spans",
        &sender.ids(),
        &[&a, &b],
        Duration::from_secs(30),
    );

    a.terminate(Duration::from_secs(20));
    b.terminate(Duration::from_secs(20));
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(30) {
        sender.send_ok(1, Duration::from_millis(200));
    }
    // Stored in the stream: the agent holds nothing back.
    let sent = (sender.accepted.len() * 20) as f64;
    eventually(
        Duration::from_secs(20),
        "the agent published everything",
        || {
            metric_value(
                &agent.metrics(),
                r#"tradewatch_exporter_sent_items_total{exporter="nats",signal="traces"}"#,
            ) == Some(sent)
        },
    );
    a.start_again(&[]);
    b.start_again(&[]);
    wait_all_arrived(
        "everything after the outage",
        &sender.ids(),
        &[&a, &b],
        Duration::from_secs(60),
    );
    let all = merged(&[&spans_of(&a), &spans_of(&b)]);
    assert_all_arrived(&sender.ids(), &all);
    // A clean stop acknowledges or gives back what it held: nothing twice.
    let dups = all.values().filter(|n| **n > 1).count();
    assert_eq!(dups, 0, "duplicate spans after clean restarts");
}

// ---------------------------------------------------------------------------------------
// 4. A three-node cluster, stream with 3 replicas, one node killed mid-run.

#[test]
fn a_three_node_cluster_loses_a_node_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = NatsServer::cluster(dir.path());
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let (http, service) = (common::free_port(), common::free_port());
    let extra = "[exporters.nats.stream_settings]\nreplicas = 3\n";
    let agent = Collector::start(&agent_config(http, service, &urls, extra), service);
    let g = gateway(&urls, 16, None);
    let mut sender = Sender::new(http, 0x44, 10);
    sender.send_ok(40, Duration::from_millis(20));
    wait_all_arrived(
        "spans before the node dies",
        &sender.ids(),
        &[&g],
        Duration::from_secs(60),
    );
    nodes[0].kill();
    // Accepted by the agent all along; published and consumed once a leader is elected.
    sender.send_ok(80, Duration::from_millis(20));
    wait_all_arrived(
        "every span after the node died",
        &sender.ids(),
        &[&g],
        Duration::from_secs(90),
    );
    let all = spans_of(&g);
    assert_all_arrived(&sender.ids(), &all);
    let published = (sender.accepted.len() * 10) as f64;
    eventually(
        Duration::from_secs(30),
        "the agent published everything",
        || {
            metric_value(
                &agent.metrics(),
                r#"tradewatch_exporter_sent_items_total{exporter="nats",signal="traces"}"#,
            ) == Some(published)
        },
    );
}

// ---------------------------------------------------------------------------------------
// 5. NATS unreachable at start and during the run.

#[test]
fn nats_unreachable_makes_the_exporter_retry_show_degraded_and_push_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let urls = vec![format!("nats://127.0.0.1:{port}")];
    let (http, service) = (common::free_port(), common::free_port());
    let extra = "[exporters.nats.sending_queue]\nqueue_size = 4\nnum_consumers = 1\n";
    let mut config = agent_config(http, service, &urls, extra);
    config = config.replace("[service]\n", "[service]\nmemory_limit = \"256KiB\"\n");
    let agent = Collector::start(&config, service);
    let g = gateway(&urls, 16, None);

    // Nothing listens: requests are taken until the memory limit, then refused (503).
    let mut sender = Sender::new(http, 0x45, 200);
    let mut refused = false;
    for _ in 0..200 {
        match sender.send() {
            200 => {}
            503 => {
                refused = true;
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused, "the agent never pushed back with NATS down");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = component(&agent.status(), "exporter", "nats").clone();
        let reason = last["last_error"]["message"].as_str().unwrap_or_default();
        if last["state"] == "degraded"
            && reason.contains("not connected to NATS")
            && reason.contains(&port.to_string())
        {
            eprintln!("exporter DEGRADED: {reason}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the nats exporter is not DEGRADED with the reason: {last}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        agent.metric(r#"tradewatch_exporter_retries_total{exporter="nats"}"#) > 0.0,
        "the exporter retried"
    );
    eventually(
        Duration::from_secs(20),
        "the gateway's receiver DEGRADED",
        || component(&g.status(), "receiver", "nats")["state"] == "degraded",
    );

    // NATS comes up: everything accepted so far is published and consumed.
    let mut nats = NatsServer::start_on(dir.path(), port);
    wait_all_arrived(
        "everything accepted while NATS was down",
        &sender.ids(),
        &[&g],
        Duration::from_secs(60),
    );
    eventually(Duration::from_secs(20), "the exporter ok again", || {
        component(&agent.status(), "exporter", "nats")["state"] == "ok"
    });

    // Down again during the run, then back with its data.
    nats.kill();
    let before = sender.accepted.len();
    for _ in 0..5 {
        assert_eq!(sender.send(), 200, "a few requests fit in memory");
    }
    eventually(Duration::from_secs(20), "DEGRADED again", || {
        component(&agent.status(), "exporter", "nats")["state"] == "degraded"
    });
    nats.restart();
    assert!(sender.accepted.len() > before);
    wait_all_arrived(
        "everything accepted during the second outage",
        &sender.ids(),
        &[&g],
        Duration::from_secs(60),
    );
}

// ---------------------------------------------------------------------------------------
// 6. Poison messages.

#[test]
fn poison_messages_are_counted_terminated_and_never_crash_a_replica() {
    use async_nats::jetstream;
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let urls = vec![nats.url()];
    let g = gateway(&urls, 16, None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = nats.url();
    let consumer_info = rt.block_on(async move {
        let client = async_nats::connect(url).await.expect("connect to nats");
        let js = jetstream::new(client);
        // The gateway created the stream and its consumer.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stream = loop {
            match js.get_stream("TELEMETRY").await {
                Ok(s) => break s,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the gateway never created the stream: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let publish = |subject: &'static str, body: Vec<u8>, signal: Option<&'static str>| {
            let js = js.clone();
            async move {
                let mut p = jetstream::message::PublishMessage::build().payload(body.into());
                if let Some(s) = signal {
                    p = p.header("Tradewatch-Signal", s);
                }
                js.send_publish(subject, p)
                    .await
                    .expect("publish")
                    .await
                    .expect("stored");
            }
        };
        for i in 0..3 {
            publish(
                "tradewatch.traces",
                format!("not otlp {i}").into_bytes(),
                None,
            )
            .await;
        }
        // A field number 0 is never valid protobuf.
        publish("tradewatch.logs", vec![0x00, 0x01, 0x02], None).await;
        publish("tradewatch.metrics", b"{}".to_vec(), Some("bogus")).await;
        let good = seq_request("nats-poison", 0x46, 0, 3).encode_to_vec();
        publish("tradewatch.traces", good, None).await;
        let _ = stream.info().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The gateway creates its consumer just after the stream: it may not exist yet.
            let info = stream.consumer_info("gateways").await;
            match &info {
                Ok(i)
                    if i.num_ack_pending == 0
                        && i.num_pending == 0
                        && i.ack_floor.stream_sequence >= 6 =>
                {
                    break info.unwrap();
                }
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "messages still pending: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let want: BTreeSet<String> = span_ids(&[seq_request("nats-poison", 0x46, 0, 3)])
        .into_iter()
        .collect();
    wait_all_arrived("the good message", &want, &[&g], Duration::from_secs(30));
    eventually(Duration::from_secs(10), "poison counted by reason", || {
        receiver_counter(&g, "poison_messages_total", ",reason=\"not_otlp\"") == 4.0
            && receiver_counter(&g, "poison_messages_total", ",reason=\"unknown_signal\"") == 1.0
    });
    // Terminated, not redelivered: nothing left for anyone, and the replica is fine.
    assert_eq!(consumer_info.num_redelivered, 0, "{consumer_info:?}");
    assert_eq!(receiver_counter(&g, "redelivered_messages_total", ""), 0.0);
    let st = g.status();
    assert_eq!(st["phase"], "running", "{st}");
    assert!(
        g.logs().contains("poison message terminated"),
        "{}",
        g.logs()
    );
}

// ---------------------------------------------------------------------------------------
// The shipped pipeline files, end to end.

#[test]
fn the_shipped_agent_and_gateway_pipelines_relay_through_jetstream() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let url = nats.url();
    // The upstream the gateways relay to: OTLP/gRPC into a file.
    let (sink_grpc, sink_service) = (common::free_port(), common::free_port());
    let sink = Collector::start(
        &format!(
            "[receivers.otlp]\ngrpc = \"127.0.0.1:{sink_grpc}\"\nhttp = \"off\"\n\
             [exporters.file]\npath = \"out/gateway.jsonl\"\n[service]\nhttp = \"127.0.0.1:{sink_service}\"\n\
             [service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"file\"]\n"
        ),
        sink_service,
    );
    let read = |name: &str| {
        std::fs::read_to_string(common::repo_root().join("pipelines").join(name)).unwrap()
    };
    let gw_service = common::free_port();
    let upstream = format!("http://127.0.0.1:{sink_grpc}");
    let gw_http = format!("127.0.0.1:{gw_service}");
    let _gateway = Collector::start_with_env(
        &read("gateway-nats.toml"),
        gw_service,
        &[
            ("NATS_URLS", url.as_str()),
            ("JAEGER_OTLP", upstream.as_str()),
            ("TRADEWATCH_SERVICE_HTTP", gw_http.as_str()),
        ],
    );
    let (http, agent_service) = (common::free_port(), common::free_port());
    let agent_http = format!("127.0.0.1:{http}");
    let agent_status = format!("127.0.0.1:{agent_service}");
    let _agent = Collector::start_with_env(
        &read("agent-nats.toml"),
        agent_service,
        &[
            ("NATS_URLS", url.as_str()),
            ("TRADEWATCH_OTLP_GRPC", "off"),
            ("TRADEWATCH_OTLP_HTTP", agent_http.as_str()),
            ("TRADEWATCH_SERVICE_HTTP", agent_status.as_str()),
        ],
    );
    let mut sender = Sender::new(http, 0x47, 25);
    sender.send_ok(8, Duration::from_millis(10));
    wait_all_arrived(
        "every span at the upstream",
        &sender.ids(),
        &[&sink],
        Duration::from_secs(60),
    );
    let lines = read_jsonl(&sink.path("out/gateway.jsonl"));
    let (resource, _) = spans_in(&lines).into_iter().next().unwrap();
    assert!(
        common::attrs(&resource["attributes"]).contains_key("host.name"),
        "the agent's resource processor ran: {resource}"
    );
}

// ---------------------------------------------------------------------------------------
// Configuration mistakes are named by key, before anything connects.

#[test]
fn bad_nats_settings_are_refused_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[receivers.nats]
url = "nats://127.0.0.1:4222"
consumer = "a.b"
user = "gateway"
max_ack_pending = 0

[exporters.nats]
url = ["nats://127.0.0.1:4222", "http://[::1"]
subject = "tradewatch.all"

[service.pipelines.traces]
receivers = ["nats"]
exporters = ["nats"]
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tradewatch"))
        .arg("validate")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for key in [
        "receivers.nats.password",
        "exporters.nats.url",
        "exporters.nats.subject",
    ] {
        assert!(text.contains(key), "no error names {key}:\n{text}");
    }
}

// ---------------------------------------------------------------------------------------
// With the shared disk queue, an agent that dies while NATS is down loses nothing either.

#[test]
fn an_agent_with_a_disk_queue_killed_while_nats_is_down_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let urls = vec![format!("nats://127.0.0.1:{port}")];
    let (http, service) = (common::free_port(), common::free_port());
    let extra = "[exporters.nats.sending_queue]\nstorage = \"disk\"\nfsync = \"always\"\n";
    let config = agent_config(http, service, &urls, extra).replace(
        "[receivers.otlp]\n",
        "[receivers.otlp]\nwait_for_delivery = \"queued\"\n",
    );
    let mut agent = Collector::start(&config, service);
    let mut sender = Sender::new(http, 0x48, 20);
    // Answered once on disk, while no NATS server is up.
    sender.send_ok(20, Duration::from_millis(5));
    agent.kill();
    let _nats = NatsServer::start_on(dir.path(), port);
    let g = gateway(&urls, 16, None);
    agent.start_again(&[]);
    wait_all_arrived(
        "everything the killed agent had queued on disk",
        &sender.ids(),
        &[&g],
        Duration::from_secs(60),
    );
}
