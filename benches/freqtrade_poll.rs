//! Polling a fleet of simulated Freqtrade bots: tradewatch's CPU and memory, and how
//! regular the polls are.
//!
//! `cargo bench --bench freqtrade_poll` starts one simulated Freqtrade API
//! (`tradewatch::demo::sim`) serving `BENCH_BOTS` bots in this process, each on its own
//! loopback port like real bots on separate hosts, and the release
//! `tradewatch` binary with one `freqtrade` receiver listing every bot,
//! `ratio_to_percent`, `batch` and the `nop` exporter. After one
//! interval of warm-up (the receiver staggers the bots' first polls over an interval, and
//! logs in), it measures for `BENCH_SECS`:
//! - tradewatch's CPU as % of one core (utime + stime from /proc/PID/stat) and its peak
//!   RSS (VmHWM) and last RSS;
//! - polls started (a poll starts with `GET ping`, recorded by the simulator on arrival)
//!   against the expected `bots × secs / interval`, and requests that failed;
//! - poll start regularity: per bot, the gap between consecutive poll starts minus the
//!   interval (jitter), and each start's lag behind its schedule (the bot's first start
//!   in the window + k × interval): p50 / p99 / max. Within a round the starts are spread
//!   over the interval on purpose (bot i at i × interval / bots); the round width printed
//!   shows that.
//!
//! Environment:
//! - `BENCH_BOTS` (500), `BENCH_INTERVAL_SECS` (5), `BENCH_SECS` (60).
//! - `BENCH_PORT_PER_BOT` (1): 0 serves every bot on one port (`http://SIM/bots/{i}`),
//!   so the receiver's per-host connection pool is shared by the whole fleet.
//! - `BENCH_MAX_CONCURRENT_POLLS`: the receiver's `max_concurrent_polls` (default: the
//!   receiver's own default).
//! - `BENCH_TRADEWATCH_BIN`: the tradewatch binary (default: Cargo's
//!   `CARGO_BIN_EXE_tradewatch`, else `target/release/tradewatch`).
//!
//! Targets (issue 6): under 5% of one core and under 100 MB RSS for 500 bots at 5 s.
//! Run without `--bench` (e.g. `cargo test --all-targets`) it does nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tradewatch::demo::sim::{spawn, Hit, SimConfig};

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
    let bots = env_num("BENCH_BOTS", 500) as usize;
    let interval = Duration::from_secs(env_num("BENCH_INTERVAL_SECS", 5).max(1));
    let secs = env_num("BENCH_SECS", 60).max(1);
    let concurrency = std::env::var("BENCH_MAX_CONCURRENT_POLLS").ok();
    let port_per_bot = env_num("BENCH_PORT_PER_BOT", 1) != 0;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sim_cfg = SimConfig {
        bots,
        port_per_bot,
        // The market keeps moving but no bot runs away within the bench.
        drawdown_ramp: Duration::from_secs(600),
        ..SimConfig::default()
    };
    let (_, sim) = rt
        .block_on(spawn(sim_cfg.clone()))
        .expect("start the simulator");

    let service = free_addr();
    let mut toml = format!(
        "[receivers.\"freqtrade/fleet\"]\n\
         username = \"{}\"\npassword = \"{}\"\ninterval = \"{}s\"\ntimeout = \"5s\"\n",
        sim_cfg.username,
        sim_cfg.password,
        interval.as_secs()
    );
    if let Some(c) = &concurrency {
        toml.push_str(&format!("max_concurrent_polls = {c}\n"));
    }
    for i in 0..bots {
        toml.push_str(&format!(
            "[[receivers.\"freqtrade/fleet\".bots]]\nurl = \"{}\"\nbot = \"bot-{i}\"\n",
            sim.url(i)
        ));
    }
    toml.push_str(&format!(
        "[processors.ratio_to_percent]\nmetrics = [\"freqtrade.*.ratio\"]\n\
         [processors.batch]\n[exporters.nop]\n\
         [service]\nhttp = \"{service}\"\ndata_dir = \"data\"\nshutdown_timeout = \"5s\"\n\
         [service.pipelines.metrics]\nreceivers = [\"freqtrade/fleet\"]\n\
         processors = [\"ratio_to_percent\", \"batch\"]\nexporters = [\"nop\"]\n"
    ));
    let dir = std::env::temp_dir().join(format!("freqtrade_poll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("config.toml");
    std::fs::write(&config, toml).expect("write config");
    let binary = binary();
    let stderr = std::fs::File::create(dir.join("tradewatch.stderr")).expect("stderr file");
    let child = Command::new(&binary)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .current_dir(&dir)
        .env("TRADEWATCH_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start tradewatch");
    let mut child = Guard(child);
    let pid = child.0.id();
    let started = Instant::now();
    while !http_get(service, "/health").is_some_and(|b| b.contains(r#""phase":"running""#)) {
        assert!(
            started.elapsed() < Duration::from_secs(30)
                && child.0.try_wait().ok().flatten().is_none(),
            "tradewatch did not start; see {}",
            dir.join("tradewatch.stderr").display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "freqtrade_poll: {bots} bots ({}) at {}s, {secs}s measured, binary {}",
        if port_per_bot {
            "a port each"
        } else {
            "one port, /bots/{i}"
        },
        interval.as_secs(),
        binary.display()
    );
    // Warm-up: every bot logs in and has its first poll.
    std::thread::sleep(interval + Duration::from_millis(500));
    let sim_since = sim.hits().last().map_or(Duration::ZERO, |h| h.at);
    let ticks0 = cpu_ticks(pid).expect("read /proc/PID/stat");
    let sim0 = cpu_ticks(std::process::id()).unwrap_or(0);
    let t0 = Instant::now();
    let mut peak_rss = 0;
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(250));
        peak_rss = peak_rss.max(status_kib(pid, "VmHWM:").unwrap_or(0));
    }
    let ticks1 = cpu_ticks(pid).expect("read /proc/PID/stat");
    let sim1 = cpu_ticks(std::process::id()).unwrap_or(0);
    let elapsed = t0.elapsed().as_secs_f64();
    let rss = status_kib(pid, "VmRSS:").unwrap_or(0);
    let cpu_pct = (ticks1 - ticks0) as f64 / clock_ticks() as f64 / elapsed * 100.0;
    let status = http_get(service, "/status").unwrap_or_default();
    let sim_until = sim_since + Duration::from_secs_f64(elapsed);
    let hits: Vec<Hit> = sim
        .hits()
        .into_iter()
        .filter(|h| h.at > sim_since && h.at <= sim_until)
        .collect();
    signal_term(pid);
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    rt.block_on(sim.shutdown());

    let mut starts: Vec<Vec<f64>> = vec![Vec::new(); bots];
    for h in hits.iter().filter(|h| h.endpoint == "ping") {
        starts[h.bot].push(h.at.as_secs_f64());
    }
    let expected = bots as f64 * elapsed / interval.as_secs_f64();
    let polls: usize = starts.iter().map(Vec::len).sum();
    let iv = interval.as_secs_f64();
    let mut jitter = Vec::new();
    let mut lag = Vec::new();
    let mut rounds: Vec<Vec<f64>> = Vec::new();
    for s in &starts {
        for w in s.windows(2) {
            jitter.push(((w[1] - w[0]) - iv).abs() * 1000.0);
        }
        for (k, t) in s.iter().enumerate() {
            lag.push((t - (s[0] + k as f64 * iv)) * 1000.0);
            if rounds.len() <= k {
                rounds.push(Vec::new());
            }
            rounds[k].push(*t);
        }
    }
    let widths: Vec<f64> = rounds
        .iter()
        .filter(|r| r.len() == bots)
        .map(|r| {
            let (lo, hi) = r
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), t| (lo.min(*t), hi.max(*t)));
            hi - lo
        })
        .collect();
    println!("tradewatch CPU:  {cpu_pct:.2}% of one core (target < 5%)");
    println!(
        "simulator CPU:   {:.2}% of one core (this process, for context)",
        (sim1 - sim0) as f64 / clock_ticks() as f64 / elapsed * 100.0
    );
    println!(
        "tradewatch RSS:  peak {:.1} MB, last {:.1} MB (target < 100 MB)",
        peak_rss as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    let completed = hits.iter().filter(|h| h.endpoint == "count").count();
    println!(
        "polls:           {polls} started, {completed} reached /count, of {expected:.0} expected; {} requests",
        hits.len()
    );
    println!(
        "poll jitter (|gap - interval|, ms): {}",
        summary(&mut jitter)
    );
    println!("poll start lag behind schedule (ms): {}", summary(&mut lag));
    println!(
        "round width (first to last bot of a full round, s; staggered on purpose over {iv}s): {}",
        summary(&mut widths.clone())
    );
    println!(
        "collector /status (excerpt): {}",
        &status[..status.len().min(600)]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// "p50 X, p99 Y, max Z".
fn summary(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "no data".into();
    }
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    format!(
        "p50 {:.1}, p99 {:.1}, max {:.1} (n={})",
        q(0.5),
        q(0.99),
        q(1.0),
        v.len()
    )
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary() -> PathBuf {
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
    binary
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn signal_term(pid: u32) {
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
}

fn clock_ticks() -> u64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// utime + stime (all threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}
