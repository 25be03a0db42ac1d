//! Tail throughput: JSON lines (~250 bytes, 12 fields) from a file on disk to finished
//! OTLP log records (read, split, parse, redact, build), on one thread.
//! `cargo bench --bench logtail`; does nothing without `--bench`.

use std::io::Write;
use std::time::{Duration, Instant};
use tradewatch::receivers::logtail::parse::Redactor;
use tradewatch::receivers::logtail::tail::{Outbox, Settings, Tailer};

// The allocator the binary ships with (src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn cpu_and_rss() -> (Duration, u64) {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    (t(u.ru_utime) + t(u.ru_stime), u.ru_maxrss as u64 * 1024)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.jsonl");
    let lines: u64 = 2_000_000;
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for n in 0..lines {
        writeln!(f, "{{\"timestamp\":\"2024-03-15T14:32:15.123456Z\",\"level\":\"info\",\"event\":\"order_submitted\",\"bot\":\"scalper-{}\",\"symbol\":\"BTC/USDT\",\"order_id\":\"ord-{n:012}\",\"side\":\"buy\",\"quantity\":{},\"price\":{}.25,\"strategy\":\"mean_reversion_v2\",\"exchange\":\"binance\",\"job_id\":\"job-{:08}\"}}", n % 8, n % 100, 60000 + n % 1000, n / 1000).unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let size = std::fs::metadata(&path).unwrap().len();
    let pattern = glob::Pattern::new(&path.to_string_lossy()).unwrap();
    let mut t = Tailer::new(
        Settings {
            include: vec![pattern],
            exclude: vec![],
            start_at_end: false,
            fingerprint_bytes: 1024,
            max_line_bytes: 1 << 20,
            multiline_start: None,
            redactor: Redactor::default_set(),
            close_after_idle: Duration::from_secs(60),
            forget_after: Duration::from_secs(600),
        },
        None,
    );
    let (cpu0, _) = cpu_and_rss();
    let start = Instant::now();
    t.poll(true);
    // The receiver reads a file only once the checkpoint knowing it is on disk.
    let _ = t.checkpoint();
    t.saved();
    let mut records = 0u64;
    let mut encoded = 0usize;
    while t.has_work() {
        let mut out = Outbox::default();
        t.read(&mut out, 1 << 20, 0, &mut |_| {});
        if out.records.is_empty() {
            continue;
        }
        records += out.records.len() as u64;
        t.sent(&out.segments);
        t.delivered(&out.segments);
        let req = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
            resource_logs: vec![opentelemetry_proto::tonic::logs::v1::ResourceLogs {
                scope_logs: vec![opentelemetry_proto::tonic::logs::v1::ScopeLogs {
                    log_records: out.records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        encoded += prost::Message::encoded_len(&req);
    }
    let wall = start.elapsed();
    let (cpu1, rss) = cpu_and_rss();
    let cpu = cpu1 - cpu0;
    assert_eq!(records, lines);
    println!(
        "logtail: {lines} lines, {:.1} MB ({} B/line) in {:.2?} wall, {:.2?} CPU\n  {:.0} lines/s, {:.1} MB/s per core (CPU), CPU per million lines {:.2?}, peak RSS {:.1} MiB, encoded {:.1} MB",
        size as f64 / 1e6,
        size / lines,
        wall,
        cpu,
        lines as f64 / cpu.as_secs_f64(),
        size as f64 / 1e6 / cpu.as_secs_f64(),
        cpu / (lines / 1_000_000) as u32,
        rss as f64 / 1048576.0,
        encoded as f64 / 1e6,
    );
}
