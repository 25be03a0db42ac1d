//! The JetStream buffer tier against the direct OTLP relay, in one run.
//!
//! `cargo bench --bench nats` starts a single-node `nats-server` (JetStream, file storage)
//! and, phase after phase, two or three tradewatch processes (this package's release
//! binary):
//!
//! - `direct`: agent (OTLP/HTTP → `otlp` exporter, gRPC) → gateway (OTLP → `nop`);
//! - `jetstream-1`: agent (OTLP/HTTP → `nats`) → JetStream → one gateway (`nats` → `nop`);
//! - `jetstream-2`: the same with two gateway replicas sharing the consumer.
//!
//! A closed-loop generator posts pre-encoded trace requests (100 spans each) to the agent
//! over `BENCH_CONNECTIONS` (4) connections for `BENCH_SECS` (10) after a 2 s warm-up. For
//! each phase it reports spans/s taken by the agent and delivered by the gateways (their
//! `nop` exporters' `sent_items`), and CPU microseconds per delivered span of every process
//! (agent, gateways, nats-server) from /proc: the cost of each hop. Markdown on stdout,
//! JSON in `target/nats_bench.json`.
//!
//! `TRADEWATCH_NATS_SERVER` names the nats-server binary (default: `nats-server`, then
//! `/usr/sbin/nats-server`). Run without `--bench` it does nothing.

use prost::Message;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SPANS_PER_REQUEST: usize = 100;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs: u64 = env_num("BENCH_SECS", 10);
    let connections: usize = env_num("BENCH_CONNECTIONS", 4);
    let dir = tempdir();
    let nats = start_nats(&dir);
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let mut results = Vec::new();
    for (phase, gateways) in [("direct", 1), ("jetstream-1", 1), ("jetstream-2", 2)] {
        let stream = format!("BENCH{}", results.len());
        let mut procs = Vec::new();
        let mut gw_services = Vec::new();
        let upstream_grpc = free_port();
        for g in 0..gateways {
            let service = free_port();
            let cfg = if phase == "direct" {
                format!(
                    "[receivers.otlp]\ngrpc = \"127.0.0.1:{upstream_grpc}\"\nhttp = \"off\"\n\
                     [exporters.nop]\n[service]\nhttp = \"127.0.0.1:{service}\"\nmemory_limit = \"512MiB\"\n\
                     [service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"nop\"]\n"
                )
            } else {
                format!(
                    "[receivers.nats]\nurl = \"{url}\"\nstream = \"{stream}\"\nconsumer = \"bench\"\n\
                     subject = \"{}.{{signal}}\"\nmax_ack_pending = 256\n[exporters.nop]\n[service]\nhttp = \"127.0.0.1:{service}\"\n\
                     memory_limit = \"512MiB\"\n\
                     [service.pipelines.traces]\nreceivers = [\"nats\"]\nexporters = [\"nop\"]\n",
                    stream.to_lowercase()
                )
            };
            procs.push(start_tradewatch(
                &dir,
                &format!("{phase}-gw{g}"),
                &cfg,
                service,
            ));
            gw_services.push(service);
        }
        let (http, service) = (free_port(), free_port());
        let exporter = if phase == "direct" {
            format!(
                "[exporters.otlp]\nendpoint = \"http://127.0.0.1:{upstream_grpc}\"\nprotocol = \"grpc\"\n\
                 [exporters.otlp.sending_queue]\nqueue_size = 256\nnum_consumers = 8\n"
            )
        } else {
            format!(
                "[exporters.nats]\nurl = \"{url}\"\nstream = \"{stream}\"\nsubject = \"{}.{{signal}}\"\n\
                 [exporters.nats.sending_queue]\nqueue_size = 256\nnum_consumers = 8\n",
                stream.to_lowercase()
            )
        };
        let name = if phase == "direct" { "otlp" } else { "nats" };
        let agent_cfg = format!(
            "[receivers.otlp]\ngrpc = \"off\"\nhttp = \"127.0.0.1:{http}\"\n{exporter}\
             [service]\nhttp = \"127.0.0.1:{service}\"\nmemory_limit = \"512MiB\"\n\
             [service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"{name}\"]\n"
        );
        let agent = start_tradewatch(&dir, &format!("{phase}-agent"), &agent_cfg, service);
        let r = run_phase(
            phase,
            &agent,
            &procs,
            &gw_services,
            nats.child.id(),
            http,
            connections,
            secs,
        );
        println!("{}", r.line());
        results.push(r);
        drop(agent);
        drop(procs);
    }
    let mut md = String::from(
        "| phase | agent spans/s | delivered spans/s | agent µs CPU/span | gateways µs CPU/span | nats-server µs CPU/span | total µs CPU/span |\n|---|---|---|---|---|---|---|\n",
    );
    for r in &results {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {:.2} |",
            r.phase,
            r.accepted_per_s,
            r.delivered_per_s,
            r.agent_us,
            r.gateways_us,
            if r.phase == "direct" {
                "—".to_owned()
            } else {
                format!("{:.2}", r.nats_us)
            },
            r.total_us()
        );
    }
    println!("\n{md}");
    let json: Vec<String> = results.iter().map(|r| r.json()).collect();
    let out = target_dir().join("nats_bench.json");
    let _ = std::fs::write(&out, format!("[{}]\n", json.join(",\n")));
    println!("JSON: {}", out.display());
    drop(nats);
    if std::env::var_os("BENCH_KEEP").is_some() {
        println!("logs and configs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

struct PhaseResult {
    phase: &'static str,
    accepted_per_s: f64,
    delivered_per_s: f64,
    agent_us: f64,
    gateways_us: f64,
    nats_us: f64,
}

impl PhaseResult {
    fn total_us(&self) -> f64 {
        let nats = if self.phase == "direct" {
            0.0
        } else {
            self.nats_us
        };
        self.agent_us + self.gateways_us + nats
    }
    fn line(&self) -> String {
        format!(
            "{}: agent took {:.0} spans/s, gateways delivered {:.0} spans/s; CPU µs/span: agent {:.2}, gateways {:.2}, nats-server {:.2}",
            self.phase, self.accepted_per_s, self.delivered_per_s, self.agent_us, self.gateways_us, self.nats_us
        )
    }
    fn json(&self) -> String {
        format!(
            "{{\"phase\":\"{}\",\"agent_spans_per_s\":{:.1},\"delivered_spans_per_s\":{:.1},\"agent_us_per_span\":{:.3},\"gateways_us_per_span\":{:.3},\"nats_us_per_span\":{:.3},\"total_us_per_span\":{:.3}}}",
            self.phase,
            self.accepted_per_s,
            self.delivered_per_s,
            self.agent_us,
            self.gateways_us,
            self.nats_us,
            self.total_us()
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn run_phase(
    phase: &'static str,
    agent: &Proc,
    gateways: &[Proc],
    gw_services: &[u16],
    nats_pid: u32,
    http: u16,
    connections: usize,
    secs: u64,
) -> PhaseResult {
    // Every request different (the first span's id counts up): the `nats` exporter's
    // message id follows the bytes, and JetStream stores an identical batch once.
    let body: Vec<u8> = request().encode_to_vec();
    let marker = 0xA5A5_A5A5_A5A5_A5A5u64.to_be_bytes();
    let at = body
        .windows(8)
        .position(|w| w == marker)
        .expect("the marker span id");
    let counter = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (accepted, stop) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = reqwest::Client::new();
                let url = format!("http://127.0.0.1:{http}/v1/traces");
                let mut tasks = Vec::new();
                for _ in 0..connections {
                    let (client, url, body) = (client.clone(), url.clone(), body.clone());
                    let counter = counter.clone();
                    let (accepted, stop) = (accepted.clone(), stop.clone());
                    tasks.push(tokio::spawn(async move {
                        while !stop.load(Ordering::Relaxed) {
                            let mut b = body.clone();
                            let n = counter.fetch_add(1, Ordering::Relaxed);
                            b[at..at + 8].copy_from_slice(&n.to_be_bytes());
                            let r = client
                                .post(&url)
                                .header("content-type", "application/x-protobuf")
                                .body(b)
                                .send()
                                .await;
                            match r {
                                Ok(r) if r.status() == 200 => {
                                    accepted.fetch_add(SPANS_PER_REQUEST as u64, Ordering::Relaxed);
                                }
                                _ => tokio::time::sleep(Duration::from_millis(20)).await,
                            }
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let delivered = || -> u64 {
        gw_services
            .iter()
            .map(|p| {
                metric(
                    *p,
                    r#"tradewatch_exporter_sent_items_total{exporter="nop",signal="traces"}"#,
                ) as u64
            })
            .sum()
    };
    let cpu = |pid: u32| cpu_ticks(pid);
    let (a0, d0, t0) = (
        accepted.load(Ordering::Relaxed),
        delivered(),
        Instant::now(),
    );
    let agent0 = cpu(agent.child.id());
    let gw0: u64 = gateways.iter().map(|g| cpu(g.child.id())).sum();
    let nats0 = cpu(nats_pid);
    std::thread::sleep(Duration::from_secs(secs));
    let (a1, d1, el) = (accepted.load(Ordering::Relaxed), delivered(), t0.elapsed());
    let agent1 = cpu(agent.child.id());
    let gw1: u64 = gateways.iter().map(|g| cpu(g.child.id())).sum();
    let nats1 = cpu(nats_pid);
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    let tick_us = 1e6 / clock_ticks() as f64;
    let spans_acc = (a1 - a0).max(1) as f64;
    let spans_del = (d1 - d0).max(1) as f64;
    PhaseResult {
        phase,
        accepted_per_s: spans_acc / el.as_secs_f64(),
        delivered_per_s: spans_del / el.as_secs_f64(),
        agent_us: (agent1 - agent0) as f64 * tick_us / spans_acc,
        gateways_us: (gw1 - gw0) as f64 * tick_us / spans_del,
        nats_us: (nats1 - nats0) as f64 * tick_us / spans_del,
    }
}

/// 100 spans of a trading service, with the attributes a bot's spans carry.
fn request() -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let kv = |k: &str, v: Value| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    let spans = (0..SPANS_PER_REQUEST)
        .map(|i| Span {
            trace_id: vec![(i / 10) as u8 + 1; 16],
            span_id: if i == 0 {
                0xA5A5_A5A5_A5A5_A5A5u64.to_be_bytes().to_vec()
            } else {
                (i as u64 + 1).to_be_bytes().to_vec()
            },
            name: format!("order.place.{}", i % 7),
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64 * 1000,
            end_time_unix_nano: 1_700_000_000_000_500_000 + i as u64 * 1000,
            attributes: vec![
                kv("trade.symbol", Value::StringValue("BTC/USDT".into())),
                kv("trade.price", Value::DoubleValue(64_000.5 + i as f64)),
                kv("trade.is_buy", Value::BoolValue(i % 2 == 0)),
                kv("order.id", Value::IntValue(1_000_000 + i as i64)),
            ],
            ..Default::default()
        })
        .collect();
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue("bot-1".into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Nats {
    child: Child,
    port: u16,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nats(dir: &Path) -> Nats {
    let bin = std::env::var_os("TRADEWATCH_NATS_SERVER")
        .map(PathBuf::from)
        .or_else(|| {
            ["nats-server", "/usr/sbin/nats-server"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| Command::new(p).arg("--version").output().is_ok())
        })
        .expect(
            "nats-server not found: install Debian's nats-server or set TRADEWATCH_NATS_SERVER",
        );
    let (port, monitor) = (free_port(), free_port());
    let store = dir.join("nats");
    let log = std::fs::File::create(dir.join("nats.log")).unwrap();
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["-m", &monitor.to_string(), "-sd"])
        .arg(&store)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start nats-server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(monitor, "/healthz").map(|(c, _)| c) != Some(200) {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Nats { child, port }
}

fn start_tradewatch(dir: &Path, name: &str, config: &str, service: u16) -> Proc {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tradewatch"))
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .env("TRADEWATCH_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start tradewatch");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, body)) = http_get(service, "/health") {
            if body.contains(r#""phase":"running""#) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not start: {}",
            std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Proc { child }
}

fn metric(port: u16, sample: &str) -> f64 {
    http_get(port, "/metrics")
        .and_then(|(_, body)| {
            body.lines().find_map(|l| {
                l.strip_prefix(sample)
                    .and_then(|v| v.trim().split(' ').next())
                    .and_then(|v| v.parse().ok())
            })
        })
        .unwrap_or(0.0)
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split(' ').nth(1)?.parse().ok()?;
    Some((code, buf.split_once("\r\n\r\n")?.1.to_owned()))
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the line; `after` starts at field 3.
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("tradewatch-nats-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
