//! Shared harness for end-to-end tests: runs the real `tradewatch` binary on free
//! loopback ports, talks to it over HTTP, and stops it with a signal.
#![allow(dead_code)]

pub mod fakes;
pub mod freqtrade;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub mod aws_proxy;
pub mod emf;
pub mod moto;
pub mod nats;
pub mod prometheus;
pub mod rules;
pub mod stores;

/// A second tradewatch as a downstream: OTLP/gRPC in on a free port, every request of
/// `signals` written to `out/sink.jsonl`. Returns it, its gRPC port, and the file.
pub fn otlp_file_sink(signals: &[&str]) -> (Collector, u16, PathBuf) {
    let (grpc, service) = (free_port(), free_port());
    let mut config = format!(
        "[receivers.otlp]\ngrpc = \"127.0.0.1:{grpc}\"\nhttp = \"off\"\n\
         [exporters.file]\npath = \"out/sink.jsonl\"\n\
         [service]\nhttp = \"127.0.0.1:{service}\"\n"
    );
    for s in signals {
        config.push_str(&format!(
            "[service.pipelines.{s}]\nreceivers = [\"otlp\"]\nexporters = [\"file\"]\n"
        ));
    }
    let sink = Collector::start(&config, service);
    let out = sink.path("out/sink.jsonl");
    (sink, grpc, out)
}

/// `tradewatch demo ARGS` in `dir` (its stderr in `dir/stderr`), killed on drop.
pub struct Demo {
    pub child: Child,
    log: PathBuf,
}

impl Demo {
    pub fn start(dir: &Path, args: &[String]) -> Demo {
        let log = dir.join("stderr");
        let stderr = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tradewatch"))
            .arg("demo")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start tradewatch demo");
        Demo { child, log }
    }

    /// What it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on now, and one this test process has never handed
/// out before. The OS picks it (bind to port 0, then release it); remembering what was
/// handed out matters because tests run in parallel threads: a port that one test's
/// collector released (a peer stopped to simulate an outage) must not become another
/// test's listener, or data crosses between tests.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind 127.0.0.1:0")
            .local_addr()
            .expect("local addr")
            .port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python interpreter with the OpenTelemetry SDK that `scripts/test` installs.
pub fn python() -> PathBuf {
    let p = std::env::var_os("TRADEWATCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "the Python test peer is missing: {} does not exist. Run scripts/test (it creates the venv), \
         or set TRADEWATCH_PYTHON to a Python with opentelemetry-sdk and the OTLP exporters installed.",
        p.display()
    );
    p
}

pub struct Collector {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub service: SocketAddr,
    pub stderr_path: PathBuf,
}

impl Collector {
    /// Starts `tradewatch run` on `config` (written into a fresh temp dir, which is also
    /// the working directory) and waits until `/health` says start-up is over.
    pub fn start(config: &str, service_port: u16) -> Collector {
        Collector::start_with_env(config, service_port, &[])
    }

    pub fn start_with_env(config: &str, service_port: u16, env: &[(&str, &str)]) -> Collector {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut c = Collector::spawn(dir, config_path, service_port, env);
        c.wait_healthy();
        c
    }

    pub fn spawn(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        service_port: u16,
        env: &[(&str, &str)],
    ) -> Collector {
        let stderr_path = dir.path().join("tradewatch.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let stdout =
            std::fs::File::create(dir.path().join("tradewatch.stdout")).expect("stdout file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tradewatch"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .env("TRADEWATCH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn tradewatch");
        Collector {
            child: Some(child),
            dir,
            config_path,
            service: SocketAddr::from(([127, 0, 0, 1], service_port)),
            stderr_path,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// What the collector wrote to its standard output (exporters writing to stdout).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.path("tradewatch.stdout")).unwrap_or_default()
    }

    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "tradewatch exited during start-up ({status}):\n{}",
                    self.logs()
                );
            }
            // The endpoint answers from the start; receivers listen once it says `running`.
            if http_get(self.service, "/health")
                .map(|(code, body)| code == 200 && body.contains(r#""phase":"running""#))
                .unwrap_or(false)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tradewatch did not answer /health within 30 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn status(&self) -> serde_json::Value {
        let (_, body) = http_get(self.service, "/status").expect("GET /status");
        serde_json::from_str(&body).expect("status is JSON")
    }

    pub fn metrics(&self) -> String {
        http_get(self.service, "/metrics").expect("GET /metrics").1
    }

    /// The value of one self-telemetry sample, e.g. `metric(r#"tradewatch_exporter_sent_items_total{exporter="nop",signal="traces"}"#)`.
    pub fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics(), sample)
            .unwrap_or_else(|| panic!("no sample {sample} in /metrics"))
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("collector already stopped");
        signal(&child, "TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tradewatch did not exit within {timeout:?} of SIGTERM:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the collector (SIGTERM) and starts it again on the same config, working
    /// directory and data, appending to the same stderr file; waits until it is healthy.
    pub fn restart(&mut self, env: &[(&str, &str)]) {
        self.terminate(Duration::from_secs(20));
        self.start_again(env);
    }

    /// Starts a stopped collector (after [`Collector::terminate`]) on the same config,
    /// working directory and data, appending to the same stderr file; waits until healthy.
    pub fn start_again(&mut self, env: &[(&str, &str)]) {
        assert!(
            self.child.is_none(),
            "start_again: the collector is running"
        );
        let stderr = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.stderr_path)
            .expect("stderr file");
        let stdout = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("tradewatch.stdout"))
            .expect("stdout file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tradewatch"));
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .env("TRADEWATCH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn tradewatch"));
        self.wait_healthy();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn signal(child: &Child, sig: &str) {
    signal_pid(child.id(), sig);
}

/// `kill -SIG PID` (a peer started by a script, known by its PID file).
pub fn signal_pid(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {pid} failed");
}

/// `promtool`, which `scripts/test` installs from Debian's `prometheus` package.
pub fn promtool() -> PathBuf {
    let p = std::env::var_os("TRADEWATCH_PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| "promtool".into());
    let found = Command::new(&p)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "promtool is missing: run scripts/test (it installs Debian's prometheus package) or set TRADEWATCH_PROMTOOL");
    p
}

pub fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(sample)
            .and_then(|rest| rest.trim().split(' ').next())
            .and_then(|v| v.parse().ok())
    })
}

/// A minimal HTTP/1.0 GET, so the harness needs no client library.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {buf:?}")))?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Waits until `cond` holds, up to `timeout`, then asserts it.
pub fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every complete line of a file exporter's output, parsed. A last line without its
/// newline is still being written (the test polls while the collector runs): left out.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("bad JSON line in {}: {e}: {l}", path.display()))
        })
        .collect()
}

/// Spans in OTLP/JSON export lines: (traceId, spanId) → span JSON, with the resource attached.
pub fn spans_in(lines: &[serde_json::Value]) -> Vec<(serde_json::Value, serde_json::Value)> {
    let mut out = Vec::new();
    for l in lines {
        for rs in l["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    out.push((rs["resource"].clone(), s.clone()));
                }
            }
        }
    }
    out
}

pub fn logs_in(lines: &[serde_json::Value]) -> Vec<(serde_json::Value, serde_json::Value)> {
    let mut out = Vec::new();
    for l in lines {
        for rl in l["resourceLogs"].as_array().into_iter().flatten() {
            for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
                for r in sl["logRecords"].as_array().into_iter().flatten() {
                    out.push((rl["resource"].clone(), r.clone()));
                }
            }
        }
    }
    out
}

pub fn metrics_in(lines: &[serde_json::Value]) -> Vec<(serde_json::Value, serde_json::Value)> {
    let mut out = Vec::new();
    for l in lines {
        for rm in l["resourceMetrics"].as_array().into_iter().flatten() {
            for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    out.push((rm["resource"].clone(), m.clone()));
                }
            }
        }
    }
    out
}

/// OTLP/JSON attributes (`[{key, value: {stringValue|intValue|...}}]`) as plain JSON.
pub fn attrs(v: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    for kv in v.as_array().into_iter().flatten() {
        m.insert(
            kv["key"].as_str().unwrap_or_default().to_owned(),
            any_value(&kv["value"]),
        );
    }
    m
}

pub fn any_value(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    if let Some(s) = v.get("stringValue") {
        return s.clone();
    }
    if let Some(i) = v.get("intValue") {
        return match i {
            Value::String(s) => s.parse::<i64>().map(Value::from).unwrap_or(Value::Null),
            other => other.clone(),
        };
    }
    if let Some(d) = v.get("doubleValue") {
        return d.clone();
    }
    if let Some(b) = v.get("boolValue") {
        return b.clone();
    }
    if let Some(a) = v.get("arrayValue") {
        return Value::Array(
            a["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(any_value)
                .collect(),
        );
    }
    if let Some(kv) = v.get("kvlistValue") {
        return Value::Object(attrs(&kv["values"]));
    }
    Value::Null
}

/// A TCP peer that accepts connections and never answers.
pub struct BlackHole {
    pub port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the black hole");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("local addr").port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut held = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    match listener.accept() {
                        Ok((sock, _)) => {
                            held.push(sock);
                            accepted.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(e) => panic!("black hole accept: {e}"),
                    }
                }
                drop(listener);
                for s in held {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
            })
        };
        BlackHole {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Closes the listener and every connection it accepted.
    pub fn close(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().expect("black hole thread");
        }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.close();
    }
}

/// An OTLP attribute.
pub fn kv(
    key: &str,
    v: opentelemetry_proto::tonic::common::v1::any_value::Value,
) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    opentelemetry_proto::tonic::common::v1::KeyValue {
        key: key.into(),
        value: Some(opentelemetry_proto::tonic::common::v1::AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// Request `n` of a numbered sequence: `spans` spans with unique ids (trace id all `salt`)
/// and `seq` / `request` attributes, from resource `service.name = service`.
pub fn seq_request(
    service: &str,
    salt: u8,
    n: usize,
    spans: usize,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue(service.into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| {
                        let seq = (n * spans + i) as u64;
                        let mut span_id = [salt; 8];
                        span_id[4..].copy_from_slice(&(seq as u32).to_be_bytes());
                        Span {
                            trace_id: vec![salt; 16],
                            span_id: span_id.to_vec(),
                            name: format!("req{n}.span{i}"),
                            start_time_unix_nano: 1_700_000_000_000_000_000 + seq,
                            end_time_unix_nano: 1_700_000_000_000_000_500 + seq,
                            attributes: vec![
                                kv("seq", Value::IntValue(seq as i64)),
                                kv("request", Value::IntValue(n as i64)),
                            ],
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The span ids (hex) of some requests, in order.
pub fn span_ids(
    reqs: &[opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest],
) -> Vec<String> {
    reqs.iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.span_id.iter().map(|b| format!("{b:02x}")).collect())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Added on branch `health`.

/// Polls `get` until it returns `want`, up to `timeout`, and fails showing the last value:
/// for counters and states that other tasks (or processes) update.
pub fn eventually_eq<T: PartialEq + std::fmt::Debug>(
    timeout: Duration,
    what: &str,
    want: T,
    mut get: impl FnMut() -> T,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = get();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}: got {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// POSTs an OTLP/HTTP body for `signal` (`traces`, `metrics`, `logs`) to the receiver on
/// `port`; returns the status.
pub fn post_otlp(port: u16, signal: &str, content_type: &str, body: impl Into<Vec<u8>>) -> u16 {
    let url = format!("http://127.0.0.1:{port}/v1/{signal}");
    let body = body.into();
    block_on(async {
        reqwest::Client::new()
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
    })
    .unwrap_or_else(|e| panic!("POST {url}: {e}"))
    .status()
    .as_u16()
}

/// GETs `path` from `addr` with an `Accept` header; returns the content type and body.
pub fn get_accepting(addr: SocketAddr, path: &str, accept: &str) -> (String, String) {
    let url = format!("http://{addr}{path}");
    block_on(async {
        let r = reqwest::Client::new()
            .get(&url)
            .header("accept", accept)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (ct, r.text().await.unwrap_or_default())
    })
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
        .block_on(f)
}
