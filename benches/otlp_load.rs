//! OTLP/gRPC trace load benchmark: tradewatch next to rotel, in one run.
//!
//! `cargo bench --bench otlp_load` starts each collector (tradewatch from this
//! package's release binary, rotel's `rotel-agent` from a Python venv), drives
//! pre-encoded `ExportTraceServiceRequest`s (100 spans each) over several
//! closed-loop HTTP/2 connections, and reports spans/s, collector CPU seconds
//! per million spans, latency percentiles and peak RSS as a Markdown table and
//! as JSON in `target/otlp_load.json`.
//!
//! Environment:
//! - `BENCH_SECS` (10): measured seconds per phase; `BENCH_WARMUP_SECS` (2).
//! - `BENCH_STREAMS` ("1,4,8"): concurrent connections per phase.
//! - `BENCH_COLLECTORS` ("tradewatch,tradewatch-resource,tradewatch-tls,rotel"):
//!   which collectors to run. `tradewatch-resource` is tradewatch with the
//!   `resource` processor inserting one attribute into every request (otlp →
//!   resource → nop): the editing phase, compared with rotel's plain relay.
//!   `tradewatch-tls` is the relay with TLS on the receiver (a certificate made
//!   here with rcgen; the generator's streams are TLS 1.3 connections): the cost
//!   of TLS, beside the plaintext relay in the same run.
//!   `tradewatch-disk` and `tradewatch-disk-always` put a disk sending queue
//!   (`storage = "disk"`, `fsync = "interval"` or `"always"`) on the nop exporter
//!   and answer clients once the data is queued (`wait_for_delivery = "queued"`):
//!   the cost of durability; the table's "written B/span" column is the bytes the
//!   collector wrote to storage (`/proc/<pid>/io` `write_bytes`) per span.
//!   `tradewatch-traced` and `tradewatch-traced-1pct` turn tradewatch's own spans on
//!   (`[service.telemetry]`, ratio 1 or 0.01; sent to a closed port): the cost of
//!   self-tracing per request.
//! - `BENCH_TRADEWATCH_BIN`: tradewatch binary (default: Cargo's
//!   `CARGO_BIN_EXE_tradewatch`, else `target/release/tradewatch`).
//! - `TRADEWATCH_PYTHON` (`.venv/bin/python`): interpreter whose site-packages
//!   hold `rotel` (`pip install rotel==0.0.1a15`); `BENCH_ROTEL_BIN` overrides
//!   the `rotel-agent` path; `BENCH_ROTEL_ARGS` adds extra arguments.
//! - `BENCH_GEN_THREADS` (0): load generator runtime; 0 = current-thread,
//!   N = multi-thread with N workers.
//!
//! Run without `--bench` (e.g. `cargo test --all-targets`) it does nothing.
//!
//! Reading the numbers: the machine has 2 cores shared by the collector, this
//! load generator (~1 CPU s per million spans) and anything else running; the
//! "other CPU %" column shows that background load. Compare CPU s / M spans
//! first. rotel 0.0.1a15 does not set TCP_NODELAY on accepted gRPC sockets, so
//! Nagle + delayed ACK give it a ~40-50 ms p99 that also caps its closed-loop
//! spans/s; a collector that accepts with `serve_with_incoming` and its own
//! listener (tonic then ignores `tcp_nodelay`) shows the same stall.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes};
use hdrhistogram::Histogram;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const SPANS_PER_REQUEST: usize = 100;
const SPANS_PER_TRACE: usize = 10;
const DISTINCT_REQUESTS: usize = 16;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);
const COOLDOWN: Duration = Duration::from_millis(1000);

// Targets for tradewatch relative to rotel.
const TARGET_CPU_RATIO: f64 = 0.5;
const TARGET_P99_MS_AT_4: f64 = 10.0;
/// Editing every request's resource should cost no more CPU per span than rotel's relay.
const TARGET_RESOURCE_CPU_RATIO: f64 = 1.0;
/// Background CPU (not collector, not this bench) above which a phase is flagged.
const NOISY_OTHER_CPU_PCT: f64 = 20.0;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not.
    if !std::env::args().any(|a| a == "--bench") {
        println!("otlp_load: not run without --bench (use `cargo bench --bench otlp_load`)");
        return;
    }
    let cfg = BenchConfig::from_env();
    let target_dir = target_dir();
    let log_dir = target_dir.join("otlp_load");
    fs::create_dir_all(&log_dir).expect("create target/otlp_load");
    let clk_tck = clock_ticks();

    let requests = Arc::new(build_requests());
    let req_bytes = requests[0].len();
    eprintln!(
        "otlp_load: {} distinct requests of {} spans ({} bytes each); phases {:?} streams, \
         {}s warm-up + {}s measured; generator runtime: {}; clock ticks/s: {}",
        requests.len(),
        SPANS_PER_REQUEST,
        req_bytes,
        cfg.streams,
        cfg.warmup.as_secs_f64(),
        cfg.measure.as_secs_f64(),
        cfg.runtime_name(),
        clk_tck
    );

    let mut notes: Vec<String> = Vec::new();
    let mut collectors: Vec<Collector> = Vec::new();
    for name in &cfg.collectors {
        let started = match name.as_str() {
            "tradewatch" => start_tradewatch(&log_dir, Variant::Relay),
            "tradewatch-resource" => start_tradewatch(&log_dir, Variant::Resource),
            "tradewatch-tls" => start_tradewatch(&log_dir, Variant::Tls),
            "tradewatch-disk" => start_tradewatch(&log_dir, Variant::Disk(false)),
            "tradewatch-disk-always" => start_tradewatch(&log_dir, Variant::Disk(true)),
            "tradewatch-traced" => start_tradewatch(&log_dir, Variant::Traced(false)),
            "tradewatch-traced-1pct" => start_tradewatch(&log_dir, Variant::Traced(true)),
            "rotel" => start_rotel(&log_dir),
            other => Err(format!("unknown collector {other:?} in BENCH_COLLECTORS")),
        };
        match started {
            Ok(c) => collectors.push(c),
            Err(e) => {
                let msg = format!("{name}: NOT RUN: {e}");
                eprintln!("otlp_load: {msg}");
                notes.push(msg);
            }
        }
    }
    // A first real request must succeed; otherwise the collector is dropped.
    collectors.retain_mut(|c| match probe(c.grpc, c.tls.clone(), &requests[0]) {
        Ok(()) => true,
        Err(e) => {
            let msg = format!(
                "{}: NOT RUN: probe Export failed: {e}\n{}",
                c.name,
                log_tail(&c.log, 20)
            );
            eprintln!("otlp_load: {msg}");
            notes.push(msg);
            false
        }
    });
    if collectors.is_empty() {
        eprintln!("otlp_load: no collector could be started; nothing measured");
        std::process::exit(1);
    }

    let mut results: Vec<PhaseResult> = Vec::new();
    // Interleave collectors per stream count so that drifting background load
    // on the shared machine hits both alike; idle collectors cost ~nothing.
    for &streams in &cfg.streams {
        for c in collectors.iter_mut() {
            if let Some(status) = c.exited() {
                let msg = format!(
                    "{}: exited ({status}) before the {streams}-stream phase\n{}",
                    c.name,
                    log_tail(&c.log, 20)
                );
                eprintln!("otlp_load: {msg}");
                notes.push(msg);
                continue;
            }
            let r = match run_phase(c, &requests, streams, &cfg, clk_tck) {
                Ok(r) => r,
                Err(e) => {
                    let msg = format!("{} {streams}-stream phase not run: {e}", c.name);
                    eprintln!("otlp_load: {msg}");
                    notes.push(msg);
                    continue;
                }
            };
            eprintln!(
                "otlp_load: {:>10} {:>2} streams: {:>9.0} spans/s, {:>6.2} CPU s/M spans, \
                 p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, peak RSS {:.1} MiB, errors {}, \
                 collector CPU {:.0}%, generator CPU {:.0}%, other CPU {:.0}%",
                r.collector,
                r.streams,
                r.spans_per_sec,
                r.cpu_s_per_mspans,
                r.p50_us / 1e3,
                r.p99_us / 1e3,
                r.p999_us / 1e3,
                kib_to_mib(r.peak_rss_kib),
                r.errors,
                r.collector_cpu_pct,
                r.generator_cpu_pct,
                r.other_cpu_pct
            );
            if r.errors > 0 {
                eprintln!("otlp_load:   error samples: {:?}", r.error_samples);
            }
            if r.other_cpu_pct > NOISY_OTHER_CPU_PCT {
                notes.push(format!(
                    "{} {}-stream phase: other processes used {:.0}% of a core; figures are noisy",
                    r.collector, r.streams, r.other_cpu_pct
                ));
            }
            results.push(r);
            std::thread::sleep(COOLDOWN);
        }
    }

    let mut collector_meta = Vec::new();
    for mut c in collectors {
        let stop = c.stop();
        collector_meta.push(CollectorMeta {
            name: c.name.to_string(),
            binary: c.binary.display().to_string(),
            version: c.version.clone(),
            idle_rss_kib: c.idle_rss_kib,
            acked_spans_total: c.acked_spans_total,
            stop,
            log: c.log.display().to_string(),
        });
    }

    let summary = Summary::compute(&results, &cfg.streams);
    let table = markdown_table(&results);
    println!();
    println!("{table}");
    println!("{}", summary.line);
    for n in &notes {
        println!("note: {}", n.lines().next().unwrap_or(""));
    }
    let json = to_json(
        &cfg,
        clk_tck,
        req_bytes,
        &collector_meta,
        &results,
        &summary,
        &notes,
    );
    let json_path = target_dir.join("otlp_load.json");
    match fs::write(&json_path, json) {
        Ok(()) => eprintln!("otlp_load: wrote {}", json_path.display()),
        Err(e) => eprintln!("otlp_load: cannot write {}: {e}", json_path.display()),
    }
}

// ---------------------------------------------------------------- config ---

struct BenchConfig {
    measure: Duration,
    warmup: Duration,
    streams: Vec<usize>,
    collectors: Vec<String>,
    gen_threads: usize,
}

impl BenchConfig {
    fn from_env() -> Self {
        let secs = |name: &str, default: f64| {
            let v = std::env::var(name)
                .ok()
                .map(|s| {
                    s.trim()
                        .parse::<f64>()
                        .unwrap_or_else(|_| panic!("{name}={s:?}"))
                })
                .unwrap_or(default);
            assert!(v >= 0.0 && v.is_finite(), "{name} must be >= 0");
            Duration::from_secs_f64(v)
        };
        let streams: Vec<usize> = std::env::var("BENCH_STREAMS")
            .unwrap_or_else(|_| "1,4,8".into())
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("BENCH_STREAMS: comma-separated counts")
            })
            .collect();
        assert!(
            !streams.is_empty() && streams.iter().all(|&s| s > 0),
            "BENCH_STREAMS must list positive counts"
        );
        let collectors = std::env::var("BENCH_COLLECTORS")
            .unwrap_or_else(|_| "tradewatch,tradewatch-resource,tradewatch-tls,rotel".into())
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let gen_threads = std::env::var("BENCH_GEN_THREADS")
            .ok()
            .map(|s| s.trim().parse().expect("BENCH_GEN_THREADS: number"))
            .unwrap_or(0);
        let measure = secs("BENCH_SECS", 10.0);
        assert!(!measure.is_zero(), "BENCH_SECS must be > 0");
        BenchConfig {
            measure,
            warmup: secs("BENCH_WARMUP_SECS", 2.0),
            streams,
            collectors,
            gen_threads,
        }
    }

    fn runtime_name(&self) -> String {
        match self.gen_threads {
            0 => "tokio current-thread".into(),
            n => format!("tokio multi-thread, {n} worker(s)"),
        }
    }

    fn runtime(&self) -> tokio::runtime::Runtime {
        let mut b = match self.gen_threads {
            0 => tokio::runtime::Builder::new_current_thread(),
            n => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(n);
                b
            }
        };
        b.enable_all().build().expect("tokio runtime")
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<target>/release/deps/otlp_load-HASH` -> `<target>`; else `<manifest>/target`.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let deps = exe.parent()?;
            (deps.file_name()? == "deps").then(|| deps.parent()?.parent().map(Path::to_path_buf))?
        })
        .unwrap_or_else(|| manifest_dir().join("target"))
}

fn resolve(p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        manifest_dir().join(p)
    }
}

// ------------------------------------------------------------ collectors ---

struct Collector {
    name: &'static str,
    binary: PathBuf,
    version: String,
    child: Child,
    pid: i32,
    grpc: SocketAddr,
    log: PathBuf,
    idle_rss_kib: u64,
    /// Last VmHWM read while the process was alive (a zombie has none).
    peak_rss_kib: u64,
    acked_spans_total: u64,
    stopped: Option<String>,
    /// The generator connects with TLS (tradewatch-tls).
    tls: Option<Arc<rustls::ClientConfig>>,
    _dir: TempDir,
}

impl Collector {
    fn spawn(
        name: &'static str,
        binary: PathBuf,
        version: String,
        mut cmd: Command,
        grpc: SocketAddr,
        log: PathBuf,
        dir: TempDir,
    ) -> Result<Self, String> {
        let out = File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // If this bench dies without unwinding (SIGKILL), take the collector
        // with it. Children are spawned from the main thread, which lives
        // until the end, so the thread-exit semantics of PDEATHSIG are fine.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
        let pid = child.id() as i32;
        Ok(Collector {
            name,
            binary,
            version,
            child,
            pid,
            grpc,
            log,
            idle_rss_kib: 0,
            peak_rss_kib: 0,
            acked_spans_total: 0,
            stopped: None,
            tls: None,
            _dir: dir,
        })
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("wait failed: {e}")),
        }
    }

    /// Waits until `ready` holds, the child exits, or STARTUP_TIMEOUT passes.
    fn wait_ready(&mut self, ready: impl Fn() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(st) = self.exited() {
                return Err(format!(
                    "exited during startup ({st})\n{}",
                    log_tail(&self.log, 20)
                ));
            }
            if ready() {
                self.idle_rss_kib = proc_status_kib(self.pid, "VmRSS:").unwrap_or(0);
                self.update_peak_rss();
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not ready after {:?}\n{}",
                    STARTUP_TIMEOUT,
                    log_tail(&self.log, 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn update_peak_rss(&mut self) -> u64 {
        if let Some(k) = proc_status_kib(self.pid, "VmHWM:") {
            self.peak_rss_kib = self.peak_rss_kib.max(k);
        }
        self.peak_rss_kib
    }

    /// SIGTERM, then SIGKILL after STOP_GRACE. Idempotent.
    fn stop(&mut self) -> String {
        if let Some(s) = &self.stopped {
            return s.clone();
        }
        let outcome = if let Some(st) = self.exited() {
            format!("had already exited ({st})")
        } else {
            let t0 = Instant::now();
            unsafe {
                libc::kill(self.pid, libc::SIGTERM);
            }
            loop {
                match self.child.try_wait() {
                    Ok(Some(st)) => {
                        break format!(
                            "exited {:.2}s after SIGTERM ({st})",
                            t0.elapsed().as_secs_f64()
                        )
                    }
                    Ok(None) if t0.elapsed() < STOP_GRACE => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = self.child.kill();
                        let _ = self.child.wait();
                        break format!("SIGKILLed: still running {STOP_GRACE:?} after SIGTERM");
                    }
                }
            }
        };
        eprintln!("otlp_load: {} {outcome}", self.name);
        self.stopped = Some(outcome.clone());
        outcome
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p =
            std::env::temp_dir().join(format!("otlp_load-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// What tradewatch does with the spans between its OTLP receiver and the nop exporter.
#[derive(Clone, Copy)]
enum Variant {
    /// Nothing: a relay, like rotel with its blackhole exporter.
    Relay,
    /// The `resource` processor inserts `service.namespace` (absent from the
    /// requests) into every resource: an edit of every request.
    Resource,
    /// The relay with TLS on the receiver.
    Tls,
    /// The relay with a disk queue, answering once queued; `true`: fsync always.
    Disk(bool),
    /// The relay with its own spans on (`[service.telemetry]`), every trace recorded
    /// (`true`: 1 %). They go to a port nobody listens on: span creation, recording and
    /// encoding are paid, the export fails at once.
    Traced(bool),
}

fn start_tradewatch(log_dir: &Path, variant: Variant) -> Result<Collector, String> {
    let (bin, how) = match std::env::var("BENCH_TRADEWATCH_BIN") {
        Ok(p) if !p.is_empty() => (resolve(&p), "BENCH_TRADEWATCH_BIN"),
        _ => match option_env!("CARGO_BIN_EXE_tradewatch") {
            Some(p) => (PathBuf::from(p), "CARGO_BIN_EXE_tradewatch"),
            None => (
                manifest_dir().join("target/release/tradewatch"),
                "fallback target/release/tradewatch",
            ),
        },
    };
    if !bin.is_file() {
        return Err(format!("binary {} ({how}) does not exist", bin.display()));
    }
    eprintln!("otlp_load: tradewatch binary: {} ({how})", bin.display());
    let [grpc, http, service] = free_ports::<3>();
    let dir = TempDir::new("tradewatch");
    let config = dir.0.join("bench.toml");
    let (name, processor) = match variant {
        Variant::Relay => ("tradewatch", ""),
        Variant::Tls => ("tradewatch-tls", ""),
        Variant::Disk(false) => ("tradewatch-disk", ""),
        Variant::Disk(true) => ("tradewatch-disk-always", ""),
        Variant::Traced(false) => ("tradewatch-traced", ""),
        Variant::Traced(true) => ("tradewatch-traced-1pct", ""),
        Variant::Resource => (
            "tradewatch-resource",
            "[processors.resource]\n\
             attributes = [{ key = \"service.namespace\", value = \"trading\", action = \"insert\" }]\n",
        ),
    };
    let (receiver_extra, nop_extra, service_extra) = match variant {
        Variant::Disk(always) => (
            "wait_for_delivery = \"queued\"\n".to_string(),
            format!(
                "[exporters.nop.sending_queue]\nstorage = \"disk\"\nfsync = \"{}\"\n\
                 num_consumers = 4\nqueue_size = 1024\n",
                if always { "always" } else { "interval" }
            ),
            format!("data_dir = \"{}\"\n", dir.0.join("data").display()),
        ),
        Variant::Traced(one_pct) => {
            let [dead] = free_ports::<1>();
            (
                String::new(),
                String::new(),
                format!(
                    "[service.telemetry]\ntraces_endpoint = \"http://127.0.0.1:{dead}\"\n\
                     traces_sample_ratio = {}\n",
                    if one_pct { 0.01 } else { 1.0 }
                ),
            )
        }
        _ => (String::new(), String::new(), String::new()),
    };
    let mut toml = format!(
        "[receivers.otlp]\n\
         grpc = \"127.0.0.1:{grpc}\"\n\
         http = \"127.0.0.1:{http}\"\n\
         {receiver_extra}\
         {processor}\
         [exporters.nop]\n\
         {nop_extra}\
         [service]\n\
         http = \"127.0.0.1:{service}\"\n\
         {service_extra}\
         [service.pipelines.traces]\n\
         receivers = [\"otlp\"]\n\
         exporters = [\"nop\"]\n"
    );
    if !processor.is_empty() {
        toml.push_str("processors = [\"resource\"]\n");
    }
    let tls = match variant {
        Variant::Tls => {
            let (client, cert, key) = bench_certificate(&dir.0)?;
            let _ = write!(
                toml,
                "[receivers.otlp.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                cert.display(),
                key.display()
            );
            Some(client)
        }
        _ => None,
    };
    fs::write(&config, toml).map_err(|e| format!("write {}: {e}", config.display()))?;
    let mut cmd = Command::new(&bin);
    cmd.arg("run").arg("--config").arg(&config);
    let grpc_addr: SocketAddr = ([127, 0, 0, 1], grpc).into();
    let health: SocketAddr = ([127, 0, 0, 1], service).into();
    let mut c = Collector::spawn(
        name,
        bin,
        String::new(),
        cmd,
        grpc_addr,
        log_dir.join(format!("{name}.log")),
        dir,
    )?;
    c.tls = tls;
    c.wait_ready(|| http_get_ok(health, "/health") && tcp_connects(grpc_addr))?;
    Ok(c)
}

/// A self-signed certificate for 127.0.0.1 written into `dir`, and a client configuration
/// trusting it (offering h2, as gRPC clients do).
fn bench_certificate(dir: &Path) -> Result<(Arc<rustls::ClientConfig>, PathBuf, PathBuf), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    fs::write(&cert_file, cert.pem()).map_err(|e| e.to_string())?;
    fs::write(&key_file, key.serialize_pem()).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(config), cert_file, key_file))
}

fn start_rotel(log_dir: &Path) -> Result<Collector, String> {
    let (bin, version) = match std::env::var("BENCH_ROTEL_BIN") {
        Ok(p) if !p.is_empty() => (resolve(&p), "BENCH_ROTEL_BIN".to_string()),
        _ => find_rotel_agent()?,
    };
    if !bin.is_file() {
        return Err(format!("{} does not exist", bin.display()));
    }
    eprintln!("otlp_load: rotel-agent: {} ({version})", bin.display());
    let [grpc, http] = free_ports::<2>();
    let dir = TempDir::new("rotel");
    let mut cmd = Command::new(&bin);
    cmd.arg("start")
        .arg("--otlp-grpc-endpoint")
        .arg(format!("127.0.0.1:{grpc}"))
        .arg("--otlp-http-endpoint")
        .arg(format!("127.0.0.1:{http}"))
        .arg("--exporter")
        .arg("blackhole")
        // Only used with --daemon, but keep them out of shared /tmp anyway.
        .arg("--pid-file")
        .arg(dir.0.join("rotel.pid"))
        .arg("--log-file")
        .arg(dir.0.join("rotel.log"));
    if let Ok(extra) = std::env::var("BENCH_ROTEL_ARGS") {
        cmd.args(extra.split_whitespace());
    }
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ROTEL_") {
            cmd.env_remove(k);
        }
    }
    let grpc_addr: SocketAddr = ([127, 0, 0, 1], grpc).into();
    let mut c = Collector::spawn(
        "rotel",
        bin,
        version,
        cmd,
        grpc_addr,
        log_dir.join("rotel.log"),
        dir,
    )?;
    c.wait_ready(|| tcp_connects(grpc_addr))?;
    Ok(c)
}

/// `rotel-agent` ships inside the `rotel` package directory of the venv.
fn find_rotel_agent() -> Result<(PathBuf, String), String> {
    let py = std::env::var("TRADEWATCH_PYTHON").unwrap_or_else(|_| ".venv/bin/python".into());
    let py = resolve(&py);
    if !py.exists() {
        return Err(format!(
            "Python interpreter {} not found; create it with `python3 -m venv .venv && \
             .venv/bin/pip install rotel==0.0.1a15` or set TRADEWATCH_PYTHON",
            py.display()
        ));
    }
    let out = Command::new(&py)
        .args([
            "-c",
            "import rotel, os, importlib.metadata as m\n\
             print(os.path.dirname(rotel.__file__))\n\
             print(m.version('rotel'))",
        ])
        .output()
        .map_err(|e| format!("run {}: {e}", py.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`import rotel` failed with {} ({}); install it with `{} -m pip install rotel==0.0.1a15`",
            py.display(),
            String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or(""),
            py.display()
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let dir = PathBuf::from(lines.next().unwrap_or("").trim());
    let pkg_version = lines.next().unwrap_or("?").trim().to_string();
    let bin = dir.join("rotel-agent");
    if !bin.is_file() {
        return Err(format!("no rotel-agent in {}", dir.display()));
    }
    let reported = Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Ok((
        bin,
        format!("pip rotel=={pkg_version}; binary says {reported:?}"),
    ))
}

fn tcp_connects(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn http_get_ok(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match s.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let head = String::from_utf8_lossy(&head[..n]);
    head.starts_with("HTTP/1.") && head.get(9..12) == Some("200")
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    format!("--- last lines of {} ---\n{tail}", path.display())
}

// ------------------------------------------------------------------ /proc ---

fn clock_ticks() -> u64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// utime + stime (all threads) of a process, in clock ticks.
fn proc_cpu_ticks(pid: &str) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// (busy, total) ticks over all CPUs from /proc/stat.
fn system_cpu_ticks() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    Some((total - v[3] - v[4], total))
}

fn proc_status_kib(pid: i32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

struct CpuSample {
    at: Instant,
    collector: u64,
    generator: u64,
    system: (u64, u64),
}

/// `write_bytes` of `/proc/<pid>/io`: bytes the process caused to be sent to storage.
fn proc_write_bytes(pid: i32) -> Option<u64> {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

fn sample(pid: i32) -> CpuSample {
    CpuSample {
        at: Instant::now(),
        collector: proc_cpu_ticks(&pid.to_string()).unwrap_or(0),
        generator: proc_cpu_ticks("self").unwrap_or(0),
        system: system_cpu_ticks().unwrap_or((0, 0)),
    }
}

// ----------------------------------------------------------------- load ---

/// Writes pre-encoded request bytes as-is; decodes only the (normally empty)
/// `ExportTraceServiceResponse`, yielding its partial-success rejected spans.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct ResponseDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = u64;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(64 * 1024, 256 * 1024)
    }
}

impl Decoder for ResponseDecoder {
    type Item = u64;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<u64>, tonic::Status> {
        if !src.has_remaining() {
            return Ok(Some(0));
        }
        let resp = ExportTraceServiceResponse::decode(src)
            .map_err(|e| tonic::Status::internal(format!("bad response: {e}")))?;
        Ok(Some(
            resp.partial_success
                .map_or(0, |p| p.rejected_spans.max(0) as u64),
        ))
    }
}

async fn connect(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<tonic::client::Grpc<Channel>, tonic::transport::Error> {
    // One Endpoint::connect per stream = one TCP/HTTP/2 connection per stream.
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .expect("endpoint uri")
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT);
    let ch = match tls {
        // tradewatch's own connector: TCP_NODELAY, then the rustls handshake.
        Some(config) => {
            endpoint
                .connect_with_connector(tradewatch::net::tls::TlsConnect::new(config))
                .await?
        }
        None => endpoint.connect().await?,
    };
    Ok(tonic::client::Grpc::new(ch))
}

async fn export(
    grpc: &mut tonic::client::Grpc<Channel>,
    body: Bytes,
) -> Result<u64, tonic::Status> {
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("not ready: {e}")))?;
    let resp = grpc
        .unary(
            tonic::Request::new(body),
            tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH),
            RawCodec,
        )
        .await?;
    Ok(resp.into_inner())
}

fn probe(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    body: &Bytes,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut grpc = connect(addr, tls)
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        match export(&mut grpc, body.clone()).await {
            Ok(0) => Ok(()),
            Ok(rejected) => Err(format!("{rejected} spans rejected (partial success)")),
            Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
        }
    })
}

struct StreamStats {
    ok: u64,
    rejected_spans: u64,
    errors: u64,
    error_samples: BTreeMap<String, u64>,
    hist: Histogram<u64>,
    acked_spans_total: u64,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

async fn stream_loop(
    mut grpc: tonic::client::Grpc<Channel>,
    requests: Arc<Vec<Bytes>>,
    first: usize,
    warm_end: Instant,
    end: Instant,
) -> StreamStats {
    let mut st = StreamStats {
        ok: 0,
        rejected_spans: 0,
        errors: 0,
        error_samples: BTreeMap::new(),
        hist: new_hist(),
        acked_spans_total: 0,
    };
    let mut i = first;
    while Instant::now() < end {
        let body = requests[i % requests.len()].clone();
        i += 1;
        let t0 = Instant::now();
        let res = export(&mut grpc, body).await;
        let done = Instant::now();
        if let Ok(rejected) = res {
            st.acked_spans_total +=
                SPANS_PER_REQUEST as u64 - rejected.min(SPANS_PER_REQUEST as u64);
        }
        // Count only requests completing inside the measured window.
        let in_window = done >= warm_end && done <= end;
        match res {
            Ok(rejected) if in_window => {
                st.ok += 1;
                st.rejected_spans += rejected;
                st.hist
                    .saturating_record(done.duration_since(t0).as_micros().max(1) as u64);
            }
            Ok(_) => {}
            Err(s) => {
                if in_window {
                    st.errors += 1;
                    let key = format!("{:?}: {}", s.code(), s.message());
                    *st.error_samples.entry(key).or_insert(0) += 1;
                }
                // Do not spin on a dead connection.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    st
}

struct PhaseResult {
    collector: String,
    streams: usize,
    window_s: f64,
    ok_requests: u64,
    spans: u64,
    rejected_spans: u64,
    errors: u64,
    error_samples: BTreeMap<String, u64>,
    spans_per_sec: f64,
    cpu_s: f64,
    cpu_s_per_mspans: f64,
    generator_cpu_s_per_mspans: f64,
    collector_cpu_pct: f64,
    generator_cpu_pct: f64,
    other_cpu_pct: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    mean_us: f64,
    peak_rss_kib: u64,
    rss_kib: u64,
    /// Bytes the collector caused to be written to storage, per span.
    written_bytes_per_span: f64,
    collector_exited: Option<String>,
}

fn run_phase(
    c: &mut Collector,
    requests: &Arc<Vec<Bytes>>,
    streams: usize,
    cfg: &BenchConfig,
    clk_tck: u64,
) -> Result<PhaseResult, String> {
    let (tx, rx) = mpsc::channel::<Result<(Instant, Instant), String>>();
    let addr = c.grpc;
    let tls = c.tls.clone();
    let reqs = requests.clone();
    let rt = cfg.runtime();
    let (warmup, measure) = (cfg.warmup, cfg.measure);
    // The load runs on its own thread so that the /proc samples below are
    // taken on time whatever the generator runtime is doing.
    let gen = std::thread::spawn(move || {
        rt.block_on(async move {
            let mut conns = Vec::with_capacity(streams);
            for _ in 0..streams {
                match connect(addr, tls.clone()).await {
                    Ok(g) => conns.push(g),
                    Err(e) => {
                        let _ = tx.send(Err(format!("connect: {e:?}")));
                        return Vec::new();
                    }
                }
            }
            let warm_end = Instant::now() + warmup;
            let end = warm_end + measure;
            let _ = tx.send(Ok((warm_end, end)));
            let mut set = tokio::task::JoinSet::new();
            for (k, g) in conns.into_iter().enumerate() {
                let first = k * requests_per_stream_offset(reqs.len(), streams);
                set.spawn(stream_loop(g, reqs.clone(), first, warm_end, end));
            }
            set.join_all().await
        })
    });
    let (warm_end, end) = match rx.recv() {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            let _ = gen.join();
            return Err(e);
        }
        Err(_) => match gen.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(_) => panic!("load generator ended early"),
        },
    };
    sleep_until(warm_end);
    let s0 = sample(c.pid);
    let w0 = proc_write_bytes(c.pid);
    c.update_peak_rss();
    sleep_until(end);
    let s1 = sample(c.pid);
    let w1 = proc_write_bytes(c.pid);
    let peak_rss_kib = c.update_peak_rss();
    let rss_kib = proc_status_kib(c.pid, "VmRSS:").unwrap_or(0);
    let stats = match gen.join() {
        Ok(s) => s,
        Err(p) => std::panic::resume_unwind(p),
    };
    // A collector that died mid-phase still has /proc/<pid>/stat as a zombie.
    let collector_exited = c.exited();

    let mut hist = new_hist();
    let (mut ok, mut rejected, mut errors) = (0, 0, 0);
    let mut error_samples = BTreeMap::new();
    for s in stats {
        hist.add(&s.hist).expect("merge histograms");
        ok += s.ok;
        rejected += s.rejected_spans;
        errors += s.errors;
        c.acked_spans_total += s.acked_spans_total;
        for (k, v) in s.error_samples {
            *error_samples.entry(k).or_insert(0) += v;
        }
    }
    let window_s = s1.at.duration_since(s0.at).as_secs_f64();
    let spans = ok * SPANS_PER_REQUEST as u64 - rejected;
    let tck = clk_tck as f64;
    let cpu_s = s1.collector.saturating_sub(s0.collector) as f64 / tck;
    let gen_cpu_s = s1.generator.saturating_sub(s0.generator) as f64 / tck;
    let sys_busy_s = s1.system.0.saturating_sub(s0.system.0) as f64 / tck;
    let per_m = |secs: f64| {
        if spans > 0 {
            secs / (spans as f64 / 1e6)
        } else {
            f64::NAN
        }
    };
    let pct = |secs: f64| 100.0 * secs / window_s;
    let q = |q: f64| {
        if hist.is_empty() {
            f64::NAN
        } else {
            hist.value_at_quantile(q) as f64
        }
    };
    Ok(PhaseResult {
        collector: c.name.to_string(),
        streams,
        window_s,
        ok_requests: ok,
        spans,
        rejected_spans: rejected,
        errors,
        error_samples,
        spans_per_sec: spans as f64 / window_s,
        cpu_s,
        cpu_s_per_mspans: per_m(cpu_s),
        generator_cpu_s_per_mspans: per_m(gen_cpu_s),
        collector_cpu_pct: pct(cpu_s),
        generator_cpu_pct: pct(gen_cpu_s),
        other_cpu_pct: pct((sys_busy_s - cpu_s - gen_cpu_s).max(0.0)),
        p50_us: q(0.5),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: if hist.is_empty() {
            f64::NAN
        } else {
            hist.max() as f64
        },
        mean_us: if hist.is_empty() {
            f64::NAN
        } else {
            hist.mean()
        },
        peak_rss_kib,
        rss_kib,
        written_bytes_per_span: match (w0, w1) {
            (Some(a), Some(b)) if spans > 0 => b.saturating_sub(a) as f64 / spans as f64,
            _ => f64::NAN,
        },
        collector_exited,
    })
}

/// Spread the streams' starting points over the distinct requests.
fn requests_per_stream_offset(n_requests: usize, streams: usize) -> usize {
    (n_requests / streams).max(1)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

// -------------------------------------------------------------- payload ---

struct Rng(u64);

impl Rng {
    /// splitmix64
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.to_string())
}

/// DISTINCT_REQUESTS requests, each 1 resource / 1 scope / 100 spans in
/// 10 traces of 10 spans, ~10 attributes per span.
fn build_requests() -> Vec<Bytes> {
    let mut rng = Rng(0x7261_6465_7761_7463);
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    const PAIRS: &[&str] = &[
        "BTC/USDT",
        "ETH/USDT",
        "SOL/USDT",
        "XRP/USDT",
        "DOGE/USDT",
        "ETH/BTC",
    ];
    const EXCHANGES: &[&str] = &["binance", "kraken", "okx", "bybit"];
    const STRATEGIES: &[&str] = &[
        "SampleStrategy",
        "RsiMeanReversion",
        "EmaCrossV2",
        "GridBot",
    ];
    const OPS: &[(&str, i32)] = &[
        ("exchange.fetch_ohlcv", span::SpanKind::Client as i32),
        (
            "strategy.populate_indicators",
            span::SpanKind::Internal as i32,
        ),
        (
            "strategy.populate_entry_trend",
            span::SpanKind::Internal as i32,
        ),
        ("risk.check_stake", span::SpanKind::Internal as i32),
        ("order.create", span::SpanKind::Internal as i32),
        ("exchange.create_order", span::SpanKind::Client as i32),
        ("exchange.fetch_order", span::SpanKind::Client as i32),
        ("wallet.update", span::SpanKind::Internal as i32),
        ("persistence.commit", span::SpanKind::Client as i32),
    ];
    (0..DISTINCT_REQUESTS)
        .map(|r| {
            let mut spans = Vec::with_capacity(SPANS_PER_REQUEST);
            for _ in 0..SPANS_PER_REQUEST / SPANS_PER_TRACE {
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&rng.next().to_be_bytes());
                trace_id[8..].copy_from_slice(&rng.next().to_be_bytes());
                let bot = format!("bot-{:02}", rng.below(12));
                let strategy = rng.pick(STRATEGIES);
                let pair = rng.pick(PAIRS);
                let exchange = rng.pick(EXCHANGES);
                let side = if rng.below(2) == 0 { "buy" } else { "sell" };
                let trade_id = 100_000 + rng.below(900_000) as i64;
                let dry_run = rng.below(4) == 0;
                let root_start = now_ns - 60_000_000_000 + rng.next() % 50_000_000_000;
                let root_id = rng.next().max(1).to_be_bytes().to_vec();
                let mut offset = 0u64;
                for k in 0..SPANS_PER_TRACE {
                    let (name, kind, span_id, parent) = if k == 0 {
                        (
                            "bot.process_candle",
                            span::SpanKind::Internal as i32,
                            root_id.clone(),
                            Vec::new(),
                        )
                    } else {
                        let (n, kind) = OPS[(k - 1) % OPS.len()];
                        (
                            n,
                            kind,
                            rng.next().max(1).to_be_bytes().to_vec(),
                            root_id.clone(),
                        )
                    };
                    let dur = if k == 0 {
                        180_000_000
                    } else {
                        200_000 + rng.next() % 15_000_000
                    };
                    let start = root_start + offset;
                    if k > 0 {
                        offset += dur + 50_000;
                    }
                    let price = 100.0 + rng.unit() * 60_000.0;
                    let mut attributes = vec![
                        kv("bot", s(&bot)),
                        kv("strategy", s(strategy)),
                        kv("pair", s(pair)),
                        kv("exchange", s(exchange)),
                        kv("order.side", s(side)),
                        kv("order.type", s(if k % 3 == 0 { "market" } else { "limit" })),
                        kv(
                            "order.amount",
                            any_value::Value::DoubleValue((rng.unit() * 2.0 * 1e6).round() / 1e6),
                        ),
                        kv(
                            "order.price",
                            any_value::Value::DoubleValue((price * 100.0).round() / 100.0),
                        ),
                        kv("trade.id", any_value::Value::IntValue(trade_id)),
                        kv("dry_run", any_value::Value::BoolValue(dry_run)),
                    ];
                    let failed = kind == span::SpanKind::Client as i32 && rng.below(50) == 0;
                    if kind == span::SpanKind::Client as i32 {
                        attributes.push(kv(
                            "http.response.status_code",
                            any_value::Value::IntValue(if failed { 429 } else { 200 }),
                        ));
                    }
                    spans.push(Span {
                        trace_id: trace_id.to_vec(),
                        span_id,
                        parent_span_id: parent,
                        name: name.to_string(),
                        kind,
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + dur,
                        attributes,
                        status: Some(Status {
                            code: if failed {
                                status::StatusCode::Error
                            } else {
                                status::StatusCode::Unset
                            } as i32,
                            message: if failed {
                                "rate limited".into()
                            } else {
                                String::new()
                            },
                        }),
                        ..Default::default()
                    });
                }
            }
            let req = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![
                            kv("service.name", s("freqtrade")),
                            kv("service.version", s("2025.3")),
                            kv("service.instance.id", s(&format!("bot-host-{}", r % 4))),
                            kv("host.name", s("trade-01")),
                            kv("deployment.environment.name", s("prod")),
                        ],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "freqtrade.tracing".into(),
                            version: "1.2.0".into(),
                            ..Default::default()
                        }),
                        spans,
                        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                    }],
                    schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                }],
            };
            Bytes::from(req.encode_to_vec())
        })
        .collect()
}

// -------------------------------------------------------------- report ---

struct CollectorMeta {
    name: String,
    binary: String,
    version: String,
    idle_rss_kib: u64,
    acked_spans_total: u64,
    stop: String,
    log: String,
}

fn kib_to_mib(k: u64) -> f64 {
    k as f64 / 1024.0
}

fn fmt_num(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "–".into()
    }
}

fn markdown_table(results: &[PhaseResult]) -> String {
    let mut t = String::new();
    t.push_str(
        "| collector | streams | spans/s | CPU s / M spans | p50 ms | p99 ms | p99.9 ms \
         | peak RSS MiB | RSS MiB | written B/span | errors | collector CPU % | other CPU % |\n",
    );
    t.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in results {
        let _ = writeln!(
            t,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {:.0} | {:.0} |",
            r.collector,
            r.streams,
            r.spans_per_sec,
            fmt_num(r.cpu_s_per_mspans, 2),
            fmt_num(r.p50_us / 1e3, 2),
            fmt_num(r.p99_us / 1e3, 2),
            fmt_num(r.p999_us / 1e3, 2),
            kib_to_mib(r.peak_rss_kib),
            kib_to_mib(r.rss_kib),
            fmt_num(r.written_bytes_per_span, 0),
            {
                let mut e = r.errors.to_string();
                if r.rejected_spans > 0 {
                    let _ = write!(e, " (+{} rejected spans)", r.rejected_spans);
                }
                if r.collector_exited.is_some() {
                    e.push_str(" (collector DIED)");
                }
                e
            },
            r.collector_cpu_pct,
            r.other_cpu_pct,
        );
    }
    t
}

struct Summary {
    line: String,
    cpu_ratio: Option<f64>,
    cpu_ratio_by_streams: Vec<(usize, f64)>,
    /// CPU per span of `tradewatch-resource` (editing every request) over rotel's
    /// (relaying), overall and per stream count.
    resource_cpu_ratio: Option<f64>,
    resource_cpu_ratio_by_streams: Vec<(usize, f64)>,
    resource_target_met: Option<bool>,
    tw_peak_rss_mib: Option<f64>,
    rotel_peak_rss_mib: Option<f64>,
    tw_p99_ms_at_4: Option<f64>,
    rotel_p99_ms_at_4: Option<f64>,
    cpu_target_met: Option<bool>,
    rss_target_met: Option<bool>,
    p99_target_met: Option<bool>,
}

impl Summary {
    fn compute(results: &[PhaseResult], streams: &[usize]) -> Summary {
        let of = |name: &'static str| results.iter().filter(move |r| r.collector == name);
        // CPU per span over all phases: sum(CPU s) / sum(spans).
        let cpu_per_span = |name: &'static str| {
            let (cpu, spans) = of(name).fold((0.0, 0u64), |(c, s), r| (c + r.cpu_s, s + r.spans));
            (spans > 0).then(|| cpu / spans as f64)
        };
        let peak = |name: &'static str| of(name).map(|r| r.peak_rss_kib).max().map(kib_to_mib);
        let p99_4 = |name: &'static str| {
            of(name)
                .find(|r| r.streams == 4)
                .map(|r| r.p99_us / 1e3)
                .filter(|v| v.is_finite())
        };
        let errors = |name: &'static str| of(name).map(|r| r.errors).sum::<u64>();
        let ratio_to_rotel = |name: &'static str| match (cpu_per_span(name), cpu_per_span("rotel"))
        {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let ratio_by_streams = |name: &'static str| -> Vec<(usize, f64)> {
            streams
                .iter()
                .filter_map(|&n| {
                    let a = of(name).find(|r| r.streams == n)?.cpu_s_per_mspans;
                    let b = of("rotel").find(|r| r.streams == n)?.cpu_s_per_mspans;
                    let ratio = a / b;
                    ratio.is_finite().then_some((n, ratio))
                })
                .collect()
        };
        let cpu_ratio = ratio_to_rotel("tradewatch");
        let cpu_ratio_by_streams = ratio_by_streams("tradewatch");
        let resource_cpu_ratio = ratio_to_rotel("tradewatch-resource");
        let resource_cpu_ratio_by_streams = ratio_by_streams("tradewatch-resource");
        let resource_target_met = resource_cpu_ratio.map(|r| r <= TARGET_RESOURCE_CPU_RATIO);
        let (tw_rss, rotel_rss) = (peak("tradewatch"), peak("rotel"));
        let (tw_p99, rotel_p99) = (p99_4("tradewatch"), p99_4("rotel"));
        let cpu_target_met = cpu_ratio.map(|r| r <= TARGET_CPU_RATIO);
        let rss_target_met = match (tw_rss, rotel_rss) {
            (Some(a), Some(b)) => Some(a <= b),
            _ => None,
        };
        let p99_target_met = tw_p99.map(|p| p < TARGET_P99_MS_AT_4);
        let mark = |m: Option<bool>, why: &str| match m {
            Some(true) => "met".to_string(),
            Some(false) => "NOT met".to_string(),
            None => format!("n/a: {why}"),
        };
        let missing = if of("tradewatch").next().is_none() {
            "tradewatch not run"
        } else if of("rotel").next().is_none() {
            "rotel not run"
        } else {
            "no data"
        };
        let p99_why = if !streams.contains(&4) {
            "no 4-stream phase"
        } else {
            "no tradewatch 4-stream result"
        };
        let mut line = format!(
            "tradewatch CPU/span = {} × rotel's [target ≤ {TARGET_CPU_RATIO}×: {}]; \
             peak RSS {} vs {} MiB [target tradewatch ≤ rotel: {}]; \
             p99 at 4 streams = {} ms (rotel {} ms) [target < {TARGET_P99_MS_AT_4} ms: {}]",
            cpu_ratio.map_or("?".into(), |r| format!("{r:.2}")),
            mark(cpu_target_met, missing),
            tw_rss.map_or("?".into(), |v| format!("{v:.1}")),
            rotel_rss.map_or("?".into(), |v| format!("{v:.1}")),
            mark(rss_target_met, missing),
            tw_p99.map_or("?".into(), |v| format!("{v:.2}")),
            rotel_p99.map_or("?".into(), |v| format!("{v:.2}")),
            mark(p99_target_met, p99_why),
        );
        if of("tradewatch-tls").next().is_some() {
            let per_span = |name: &'static str, n: usize| {
                of(name)
                    .find(|r| r.streams == n)
                    .map(|r| r.cpu_s_per_mspans)
            };
            let at4 = match (per_span("tradewatch-tls", 4), per_span("tradewatch", 4)) {
                (Some(t), Some(p)) => format!("{t:.2} vs {p:.2} CPU s/M spans ({:.2}×)", t / p),
                _ => "n/a (no 4-stream phase for both)".into(),
            };
            let _ = write!(
                line,
                "; with TLS at 4 streams: {at4}, rotel plaintext {}",
                per_span("rotel", 4).map_or("?".into(), |v| format!("{v:.2}"))
            );
        }
        if of("tradewatch-resource").next().is_some() {
            let _ = write!(
                line,
                "; with the resource processor editing every request, tradewatch CPU/span = {} × \
                 rotel's relay [target ≤ {TARGET_RESOURCE_CPU_RATIO}×: {}]",
                resource_cpu_ratio.map_or("?".into(), |r| format!("{r:.2}")),
                mark(resource_target_met, "rotel not run"),
            );
        }
        for name in ["tradewatch", "tradewatch-resource", "tradewatch-tls"] {
            if of(name).any(|r| r.collector_exited.is_some()) {
                let _ = write!(line, "; {name} DIED during the run");
            }
            let n = errors(name);
            if n > 0 {
                let _ = write!(line, "; {name} had {n} failed requests");
            }
        }
        Summary {
            line,
            cpu_ratio,
            cpu_ratio_by_streams,
            resource_cpu_ratio,
            resource_cpu_ratio_by_streams,
            resource_target_met,
            tw_peak_rss_mib: tw_rss,
            rotel_peak_rss_mib: rotel_rss,
            tw_p99_ms_at_4: tw_p99,
            rotel_p99_ms_at_4: rotel_p99,
            cpu_target_met,
            rss_target_met,
            p99_target_met,
        }
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_f(v: f64) -> String {
    if v.is_finite() {
        format!("{}", (v * 1e4).round() / 1e4)
    } else {
        "null".into()
    }
}

fn json_opt_f(v: Option<f64>) -> String {
    v.map_or("null".into(), json_f)
}

fn json_opt_b(v: Option<bool>) -> String {
    v.map_or("null".into(), |b| b.to_string())
}

fn to_json(
    cfg: &BenchConfig,
    clk_tck: u64,
    req_bytes: usize,
    collectors: &[CollectorMeta],
    results: &[PhaseResult],
    summary: &Summary,
    notes: &[String],
) -> String {
    let mut j = String::from("{\n");
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let _ = writeln!(
        j,
        "  \"settings\": {{\"unix_time\": {unix}, \"measure_secs\": {}, \"warmup_secs\": {}, \
         \"streams\": {:?}, \"spans_per_request\": {SPANS_PER_REQUEST}, \"request_bytes\": {req_bytes}, \
         \"distinct_requests\": {DISTINCT_REQUESTS}, \"generator_runtime\": {}, \"clock_ticks_per_sec\": {clk_tck}, \
         \"cpus\": {}}},",
        json_f(cfg.measure.as_secs_f64()),
        json_f(cfg.warmup.as_secs_f64()),
        cfg.streams,
        json_str(&cfg.runtime_name()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    j.push_str("  \"collectors\": [\n");
    for (i, c) in collectors.iter().enumerate() {
        let _ = write!(
            j,
            "    {{\"name\": {}, \"binary\": {}, \"version\": {}, \"idle_rss_mib\": {}, \
             \"acked_spans_total\": {}, \"stop\": {}, \"log\": {}}}",
            json_str(&c.name),
            json_str(&c.binary),
            json_str(&c.version),
            json_f(kib_to_mib(c.idle_rss_kib)),
            c.acked_spans_total,
            json_str(&c.stop),
            json_str(&c.log),
        );
        j.push_str(if i + 1 < collectors.len() {
            ",\n"
        } else {
            "\n"
        });
    }
    j.push_str("  ],\n  \"results\": [\n");
    for (i, r) in results.iter().enumerate() {
        let errs: Vec<String> = r
            .error_samples
            .iter()
            .map(|(k, v)| format!("{}: {v}", json_str(k)))
            .collect();
        let _ = write!(
            j,
            "    {{\"collector\": {}, \"streams\": {}, \"window_secs\": {}, \"ok_requests\": {}, \
             \"spans\": {}, \"rejected_spans\": {}, \"errors\": {}, \"error_samples\": {{{}}}, \
             \"spans_per_sec\": {}, \"cpu_secs\": {}, \"cpu_secs_per_million_spans\": {}, \
             \"generator_cpu_secs_per_million_spans\": {}, \"collector_cpu_pct\": {}, \
             \"generator_cpu_pct\": {}, \"other_cpu_pct\": {}, \"latency_ms\": {{\"p50\": {}, \
             \"p99\": {}, \"p99_9\": {}, \"max\": {}, \"mean\": {}}}, \"peak_rss_mib\": {}, \"rss_mib\": {}, \"written_bytes_per_span\": {}, \"collector_exited\": {}}}",
            json_str(&r.collector),
            r.streams,
            json_f(r.window_s),
            r.ok_requests,
            r.spans,
            r.rejected_spans,
            r.errors,
            errs.join(", "),
            json_f(r.spans_per_sec),
            json_f(r.cpu_s),
            json_f(r.cpu_s_per_mspans),
            json_f(r.generator_cpu_s_per_mspans),
            json_f(r.collector_cpu_pct),
            json_f(r.generator_cpu_pct),
            json_f(r.other_cpu_pct),
            json_f(r.p50_us / 1e3),
            json_f(r.p99_us / 1e3),
            json_f(r.p999_us / 1e3),
            json_f(r.max_us / 1e3),
            json_f(r.mean_us / 1e3),
            json_f(kib_to_mib(r.peak_rss_kib)),
            json_f(kib_to_mib(r.rss_kib)),
            json_f(r.written_bytes_per_span),
            r.collector_exited.as_deref().map_or("null".into(), json_str),
        );
        j.push_str(if i + 1 < results.len() { ",\n" } else { "\n" });
    }
    let notes: Vec<String> = notes.iter().map(|n| json_str(n)).collect();
    let by_streams = |v: &[(usize, f64)]| {
        v.iter()
            .map(|(n, r)| format!("\"{n}\": {}", json_f(*r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = write!(
        j,
        "  ],\n  \"summary\": {{\"line\": {}, \"cpu_per_span_ratio\": {}, \"cpu_per_span_ratio_by_streams\": {{{}}}, \
         \"resource_cpu_per_span_ratio\": {}, \"resource_cpu_per_span_ratio_by_streams\": {{{}}}, \
         \"tradewatch_peak_rss_mib\": {}, \
         \"rotel_peak_rss_mib\": {}, \"tradewatch_p99_ms_at_4\": {}, \"rotel_p99_ms_at_4\": {}, \
         \"targets\": {{\"cpu_ratio_le_0_5\": {}, \"rss_le_rotel\": {}, \"p99_lt_10ms_at_4\": {}, \
         \"resource_cpu_ratio_le_1\": {}}}}},\n  \
         \"notes\": [{}]\n}}\n",
        json_str(&summary.line),
        json_opt_f(summary.cpu_ratio),
        by_streams(&summary.cpu_ratio_by_streams),
        json_opt_f(summary.resource_cpu_ratio),
        by_streams(&summary.resource_cpu_ratio_by_streams),
        json_opt_f(summary.tw_peak_rss_mib),
        json_opt_f(summary.rotel_peak_rss_mib),
        json_opt_f(summary.tw_p99_ms_at_4),
        json_opt_f(summary.rotel_p99_ms_at_4),
        json_opt_b(summary.cpu_target_met),
        json_opt_b(summary.rss_target_met),
        json_opt_b(summary.p99_target_met),
        json_opt_b(summary.resource_target_met),
        notes.join(", "),
    );
    j
}
