//! Small-request latency while huge compressed bodies arrive on another connection.
//!
//! `cargo bench --bench big_bodies` starts the release binary with an OTLP/HTTP receiver
//! and the `nop` exporter, then runs two phases of `BENCH_SECS` each on the same
//! collector: small OTLP/HTTP trace requests (one span, ~200 bytes) sent closed-loop on
//! `BENCH_SMALL_CONNS` keep-alive connections, first alone, then while
//! `BENCH_BIG_CONNS` other connections send gzip bodies of about `BENCH_BIG_MB` MB
//! compressed each, back to back (random-letter
//! span attributes, which inflate to ~1.7× that: Huffman-decoding work, as with real
//! telemetry). It prints p50/p99/max of the small requests for both phases
//! and how long each big body took.
//!
//! Inflating a big body on an async worker stalls every connection that worker
//! serves; tradewatch inflates bodies over 64 KiB compressed on the blocking pool. To
//! compare with a build without that, run the same bench against another binary:
//! `BENCH_TRADEWATCH_BIN=/path/to/old/tradewatch cargo bench --bench big_bodies`.
//!
//! Environment:
//! - `BENCH_SECS` (10): measured seconds per phase; `BENCH_WARMUP_SECS` (2).
//! - `BENCH_SMALL_CONNS` (4): connections sending small requests.
//! - `BENCH_BIG_CONNS` (2): connections sending big bodies at once (with 2, on a
//!   2-core machine, inflating on the async workers can occupy both of them).
//! - `BENCH_BIG_MB` (50): compressed size of each big body, in MB.
//! - `BENCH_TRADEWATCH_BIN`: the tradewatch binary (default: Cargo's
//!   `CARGO_BIN_EXE_tradewatch`, else `target/release/tradewatch`).
//!
//! Run without `--bench` (e.g. `cargo test --all-targets`) it does nothing.

use bytes::Bytes;
use hdrhistogram::Histogram;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs = env_num("BENCH_SECS", 10);
    let warmup = env_num("BENCH_WARMUP_SECS", 2);
    let conns = env_num("BENCH_SMALL_CONNS", 4) as usize;
    let big_mb = env_num("BENCH_BIG_MB", 50);
    let big_conns = env_num("BENCH_BIG_CONNS", 2) as usize;

    let t = Instant::now();
    let (big, inflated) = big_body(big_mb * 1_000_000);
    eprintln!(
        "big_bodies: big body {:.1} MB gzip, {:.1} MB inflated (built in {:.1}s)",
        big.len() as f64 / 1e6,
        inflated as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let mut collector = Collector::start(inflated * 2);
    let url = format!("http://{}/v1/traces", collector.http);
    let small = Bytes::from(small_request().encode_to_vec());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let phases = [
        ("small requests alone", false),
        ("while big bodies arrive", true),
    ];
    let mut rows = Vec::new();
    for (name, with_big) in phases {
        let r = rt.block_on(phase(
            &url,
            &small,
            with_big.then(|| big.clone()),
            conns,
            big_conns,
            Duration::from_secs(warmup),
            Duration::from_secs(secs),
        ));
        if let Some(e) = collector.exited() {
            panic!(
                "tradewatch exited during {name:?}: {e}\n{}",
                collector.log()
            );
        }
        rows.push((name, r));
    }
    collector.stop();

    println!();
    println!(
        "binary: {} ({conns} small-request connections, {big_conns} big-body connections, \
         {:.0} MB gzip bodies, {secs} s per phase)",
        collector.binary.display(),
        big.len() as f64 / 1e6
    );
    println!();
    println!("| phase | small req/s | p50 ms | p99 ms | max ms | errors | big bodies | mean s per big body |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, r) in &rows {
        let h = &r.small;
        let ms = |us: u64| us as f64 / 1000.0;
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {} | {} |",
            h.len() as f64 / secs as f64,
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max()),
            r.errors,
            r.big_done,
            if r.big_done > 0 {
                format!("{:.2}", r.big_secs / r.big_done as f64)
            } else {
                "-".into()
            }
        );
    }
}

struct PhaseResult {
    small: Histogram<u64>,
    errors: u64,
    big_done: u64,
    big_secs: f64,
}

async fn phase(
    url: &str,
    small: &Bytes,
    big: Option<Bytes>,
    conns: usize,
    big_conns: usize,
    warmup: Duration,
    measure: Duration,
) -> PhaseResult {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let stop = Arc::new(AtomicBool::new(false));
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram"),
    ));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (url, body, hist) = (url.to_owned(), small.clone(), hist.clone());
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut errors = 0;
            let mut local = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).unwrap();
            while Instant::now() < end {
                let t0 = Instant::now();
                let ok = post(&client, &url, body.clone(), None).await;
                if t0 >= measure_from {
                    local.saturating_record(t0.elapsed().as_micros() as u64);
                    errors += u64::from(!ok);
                }
            }
            hist.lock().unwrap().add(&local).unwrap();
            errors
        }));
    }
    let big_tasks: Vec<_> = big
        .into_iter()
        .flat_map(|body| std::iter::repeat_n(body, big_conns))
        .map(|body| {
            let (url, stop) = (url.to_owned(), stop.clone());
            tokio::spawn(async move {
                let client = client();
                let (mut done, mut secs, mut errors) = (0u64, 0f64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let ok = post(&client, &url, body.clone(), Some("gzip")).await;
                    if t0 >= measure_from {
                        done += 1;
                        secs += t0.elapsed().as_secs_f64();
                        errors += u64::from(!ok);
                    }
                }
                (done, secs, errors)
            })
        })
        .collect();
    let mut errors = 0;
    for t in tasks {
        errors += t.await.expect("small-request task");
    }
    stop.store(true, Ordering::Relaxed);
    let (mut big_done, mut big_secs) = (0, 0.0);
    for t in big_tasks {
        let (done, secs, e) = t.await.expect("big-body task");
        big_done += done;
        big_secs += secs;
        errors += e;
    }
    let small = Arc::try_unwrap(hist).unwrap().into_inner().unwrap();
    PhaseResult {
        small,
        errors,
        big_done,
        big_secs,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("HTTP client")
}

async fn post(client: &reqwest::Client, url: &str, body: Bytes, encoding: Option<&str>) -> bool {
    let mut req = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    match req.send().await {
        Ok(r) => {
            let ok = r.status().is_success();
            let _ = r.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

fn small_request() -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: "order.submit".into(),
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_000_001_000_000,
                    attributes: vec![KeyValue {
                        key: "symbol".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("BTC/USDT".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A trace request of 1 KB spans with random-letter attributes, gzip-compressed to about
/// `compressed` bytes; returns it and its inflated size.
fn big_body(compressed: u64) -> (Bytes, usize) {
    // Random letters compress to ~0.6 of their size.
    let inflated_target = (compressed as f64 / 0.6) as usize;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut letters = |n: usize| -> String {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect()
    };
    let n_spans = inflated_target / 1_060;
    let spans = (0..n_spans)
        .map(|i| Span {
            trace_id: (i as u128).to_be_bytes().to_vec(),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: "backfill".into(),
            attributes: vec![KeyValue {
                key: "payload".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(letters(1_000))),
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    let raw = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(compressed as usize + (1 << 20)),
        flate2::Compression::fast(),
    );
    e.write_all(&raw).expect("gzip");
    (Bytes::from(e.finish().expect("gzip")), raw.len())
}

struct Collector {
    binary: PathBuf,
    child: Child,
    http: SocketAddr,
    dir: PathBuf,
}

impl Collector {
    fn start(max_request_size: usize) -> Collector {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let binary = match std::env::var("BENCH_TRADEWATCH_BIN") {
            Ok(p) if !p.is_empty() => manifest.join(p),
            _ => option_env!("CARGO_BIN_EXE_tradewatch")
                .map(PathBuf::from)
                .unwrap_or_else(|| manifest.join("target/release/tradewatch")),
        };
        assert!(
            binary.is_file(),
            "no tradewatch binary at {}",
            binary.display()
        );
        let ports: Vec<TcpListener> = (0..2)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let port = |i: usize| ports[i].local_addr().unwrap().port();
        let (http, service) = (port(0), port(1));
        drop(ports);
        let dir = std::env::temp_dir().join(format!("big_bodies-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("bench.toml");
        std::fs::write(
            &config,
            format!(
                "[receivers.otlp]\ngrpc = \"off\"\nhttp = \"127.0.0.1:{http}\"\n\
                 max_request_size = \"{}MiB\"\n\
                 [exporters.nop]\n\
                 [service]\nhttp = \"127.0.0.1:{service}\"\n\
                 [service.pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"nop\"]\n",
                max_request_size.div_ceil(1 << 20)
            ),
        )
        .expect("write config");
        let log = std::fs::File::create(dir.join("tradewatch.log")).expect("log file");
        let mut cmd = Command::new(&binary);
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        // Take the collector along if this bench is killed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn tradewatch");
        let mut c = Collector {
            binary,
            child,
            http: ([127, 0, 0, 1], http).into(),
            dir,
        };
        let health: SocketAddr = ([127, 0, 0, 1], service).into();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !health_ok(health) {
            if let Some(e) = c.exited() {
                panic!("tradewatch exited during start-up: {e}\n{}", c.log());
            }
            assert!(
                Instant::now() < deadline,
                "tradewatch not ready:\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    fn exited(&mut self) -> Option<String> {
        self.child.try_wait().ok().flatten().map(|s| s.to_string())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tradewatch.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn health_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET /health HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200")
}
