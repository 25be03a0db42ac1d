//! End-to-end tests of the `logtail` receiver: the real binary tails real files while
//! they rotate, while it is killed, while its exporter is down; what comes out of the
//! file exporter is counted line by line.

mod common;

use common::{attrs, eventually, logs_in, read_jsonl, Collector};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn config(service: u16, receiver: &str, exporters: &str, names: &str) -> String {
    format!(
        r#"
{receiver}

{exporters}

[service]
http = "127.0.0.1:{service}"

[service.pipelines.logs]
receivers = ["logtail/t"]
exporters = [{names}]
"#
    )
}

const DEBUG: &str = "info,tradewatch::receivers::logtail=debug";

fn file_exporter() -> &'static str {
    "[exporters.file]\npath = \"out.jsonl\"\n"
}

/// Starts the binary again on the same directory after a SIGKILL.
fn respawn(c: &mut Collector) {
    let stderr = OpenOptions::new()
        .append(true)
        .open(&c.stderr_path)
        .expect("stderr file");
    let child = Command::new(env!("CARGO_BIN_EXE_tradewatch"))
        .arg("run")
        .arg("--config")
        .arg(&c.config_path)
        .current_dir(c.dir.path())
        .env("TRADEWATCH_LOG", DEBUG)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn tradewatch");
    c.child = Some(child);
    c.wait_healthy();
}

/// How many times each value of the integer attribute `key` came out.
fn counts(out: &Path, key: &str) -> BTreeMap<i64, usize> {
    let mut m = BTreeMap::new();
    for (_, rec) in logs_in(&read_jsonl(out)) {
        if let Some(n) = attrs(&rec["attributes"]).get(key).and_then(|v| v.as_i64()) {
            *m.entry(n).or_insert(0) += 1;
        }
    }
    m
}

fn line(n: u64) -> String {
    format!(
        "{{\"timestamp\":\"2024-03-15T14:32:15.123456Z\",\"level\":\"info\",\"event\":\"tick\",\"n\":{n},\"bot\":\"scalper\",\"pad\":\"{}\"}}\n",
        "x".repeat((n % 40) as usize)
    )
}

/// Appends numbered lines to `logs/app.jsonl`, rotating by rename (`app.jsonl.rN`) and
/// by copy-truncate (`app.jsonl.cN`) at evenly spread points.
fn writer(dir: PathBuf, total: u64, renames: u32, copies: u32) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let live = dir.join("app.jsonl");
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&live)
                .expect("open live log")
        };
        let mut f = open();
        let rotations = (renames + copies) as u64;
        let every = total / (rotations + 1);
        let (mut r, mut c) = (0, 0);
        let mut buf = String::new();
        for n in 0..total {
            buf.push_str(&line(n));
            if n % 50 == 49 {
                f.write_all(buf.as_bytes()).expect("write");
                buf.clear();
            }
            if n % 2000 == 1999 {
                std::thread::sleep(Duration::from_millis(25));
            }
            if n % every == every - 1 && r + c < renames + copies {
                f.write_all(buf.as_bytes()).expect("write");
                buf.clear();
                // Two renames for every copy-truncate, in a fixed pattern.
                let k = r + c;
                if (k % 7 == 2 || k % 7 == 5) && c < copies || r == renames {
                    fs::copy(&live, dir.join(format!("app.jsonl.c{c}"))).expect("copy");
                    f.set_len(0).expect("truncate");
                    c += 1;
                } else {
                    fs::rename(&live, dir.join(format!("app.jsonl.r{r}"))).expect("rename");
                    f = open();
                    r += 1;
                }
            }
        }
        f.write_all(buf.as_bytes()).expect("write");
        assert_eq!((r, c), (renames, copies), "the writer rotated as planned");
    })
}

/// Every record's `n` and `log.record.uid` (file id, offset), in output order.
fn numbered_uids(out: &Path) -> Vec<(i64, u64, u64)> {
    let mut v = Vec::new();
    for (_, rec) in logs_in(&read_jsonl(out)) {
        let a = attrs(&rec["attributes"]);
        let (Some(n), Some(uid)) = (
            a.get("n").and_then(|v| v.as_i64()),
            a.get("log.record.uid").and_then(|v| v.as_str()),
        ) else {
            panic!("a record without n or log.record.uid: {rec}");
        };
        let (file, offset) = uid.split_once(':').expect("uid is FILE:OFFSET");
        v.push((
            n,
            u64::from_str_radix(file, 16).expect("file id in hex"),
            offset.parse().expect("offset"),
        ));
    }
    v
}

/// The file entries of `logtail/t`'s checkpoint (none before the first one is written).
fn checkpoint_files(c: &Collector) -> Vec<serde_json::Value> {
    let p = c.path("cp/receiver/logtail%2Ft/checkpoints.json");
    let Ok(text) = fs::read_to_string(p) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&text).expect("checkpoint is JSON");
    v["files"].as_array().expect("checkpoint files").clone()
}

/// What a checkpoint says was delivered: file id → (committed prefix, ranges beyond).
type Delivered = BTreeMap<u64, (u64, Vec<(u64, u64)>)>;

fn checkpoint_delivered(c: &Collector) -> Delivered {
    checkpoint_files(c)
        .iter()
        .map(|f| {
            let done = f["done"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
                        .collect()
                })
                .unwrap_or_default();
            (
                f["id"].as_u64().expect("file id"),
                (f["committed"].as_u64().unwrap(), done),
            )
        })
        .collect()
}

fn recorded(cp: &Delivered, file: u64, offset: u64) -> bool {
    cp.get(&file).is_some_and(|(committed, done)| {
        offset < *committed || done.iter().any(|(s, e)| *s <= offset && offset < *e)
    })
}

/// The claim (README, "Log files"): no line is lost; a restart repeats no record the
/// checkpoint recorded as delivered; a repeat (a batch delivered in the instant before
/// a SIGKILL, not yet recorded) is the same record with the same `log.record.uid`, which
/// the file exporter does not write twice: every line is in the file exactly once.
#[test]
fn rotation_torture_every_line_exactly_once_through_three_sigkills() {
    const TOTAL: u64 = 200_000;
    let service = common::free_port();
    let receiver = r#"[receivers."logtail/t"]
include = ["logs/app.jsonl*"]
start_at = "beginning"
poll_interval = "50ms"
checkpoint_dir = "cp""#;
    let mut c = Collector::start_with_env(
        &config(service, receiver, file_exporter(), "\"file\""),
        service,
        &[("TRADEWATCH_LOG", DEBUG)],
    );
    let logs = c.path("logs");
    fs::create_dir_all(&logs).unwrap();
    let started = Instant::now();
    let w = writer(logs.clone(), TOTAL, 50, 20);
    let out = c.path("out.jsonl");
    // Three SIGKILLs while the writer writes and rotates, each once output has grown;
    // what the checkpoint held at each kill is read while the collector is dead.
    let mut at_kills: Vec<Delivered> = Vec::new();
    for kill in 0..3 {
        // Each kill once output has grown, or once everything has arrived: on a busy
        // machine the writer can finish first, and fewer than 5,000 lines may be left
        // for the last kills.
        let before = counts(&out, "n").len();
        eventually(
            Duration::from_secs(120),
            "output grows before a kill",
            || {
                let now = counts(&out, "n").len();
                now > before + 5_000 || now as u64 == TOTAL
            },
        );
        c.kill();
        at_kills.push(checkpoint_delivered(&c));
        std::thread::sleep(Duration::from_millis(100 + 150 * kill));
        respawn(&mut c);
    }
    w.join().expect("writer");
    let rotated = fs::read_dir(&logs).unwrap().count();
    assert_eq!(rotated, 71, "50 renamed + 20 copied + the live file");
    eventually(Duration::from_secs(90), "every line arrives", || {
        counts(&out, "n").len() as u64 == TOTAL
    });
    // Anything repeated would arrive with or after the last missing line; stop cleanly
    // so that everything in flight has landed, then count.
    c.terminate(Duration::from_secs(20));
    let records = numbered_uids(&out);
    // Repeats are retransmissions: one uid names one line, one line has one uid.
    let mut copies: BTreeMap<(u64, u64), (i64, usize)> = BTreeMap::new();
    let mut uid_of: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for &(n, file, offset) in &records {
        let e = copies.entry((file, offset)).or_insert((n, 0));
        assert_eq!(
            e.0, n,
            "uid {file:016x}:{offset} names lines {} and {n}",
            e.0
        );
        e.1 += 1;
        let u = uid_of.entry(n).or_insert((file, offset));
        assert_eq!(*u, (file, offset), "line {n} came with two uids");
    }
    // A repeat needs a restart whose checkpoint did not record the record as delivered.
    let mut repeats = 0;
    for (&(file, offset), &(n, k)) in &copies {
        if k > 1 {
            repeats += k - 1;
            let unrecorded = at_kills
                .iter()
                .filter(|cp| !recorded(cp, file, offset))
                .count();
            assert!(
                k - 1 <= unrecorded,
                "line {n} ({file:016x}:{offset}) came {k} times though only {unrecorded} \
                 restarts found it unrecorded"
            );
        }
    }
    eprintln!(
        "torture: {} records, {repeats} repeats of batches in flight at a kill",
        records.len()
    );
    // The file exporter writes a log.record.uid once: the repeats a kill can cause never
    // reach the file, so every line number is there exactly once as it stands.
    assert_eq!(repeats, 0, "a record was written twice");
    assert_eq!(records.len() as u64, TOTAL);
    // De-duplicated by uid: every line exactly once.
    let seen: BTreeMap<i64, usize> = copies.values().fold(BTreeMap::new(), |mut m, (n, _)| {
        *m.entry(*n).or_insert(0) += 1;
        m
    });
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for (&n, _) in seen.iter().filter(|(_, k)| **k != 1) {
        match runs.last_mut() {
            Some(r) if r.1 + 1 == n => r.1 = n,
            _ => runs.push((n, n)),
        }
    }
    if !runs.is_empty() {
        let trail: Vec<String> = c
            .logs()
            .lines()
            .filter(|l| l.contains("logtail") || l.contains("start"))
            .map(|l| l.chars().take(300).collect())
            .collect();
        panic!(
            "lines seen more than once, in runs: {runs:?}\n{}",
            trail.join("\n")
        );
    }
    assert_eq!(seen.len() as u64, TOTAL);
    assert_eq!(seen.keys().next_back(), Some(&(TOTAL as i64 - 1)));
    eprintln!("torture: {TOTAL} lines in {:?}", started.elapsed());
}

fn checkpoint_committed(c: &Collector) -> Vec<(String, u64)> {
    checkpoint_files(c)
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["committed"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn downstream_down_holds_the_checkpoint_back_and_every_line_arrives_once() {
    const TOTAL: u64 = 3_000;
    let (service, sink_grpc, sink_http, sink_service) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let receiver = r#"[receivers."logtail/t"]
include = ["logs/*.jsonl"]
start_at = "beginning"
poll_interval = "50ms"
checkpoint_dir = "cp"
max_batch_bytes = "16KiB""#;
    // The exporter gives up after a second, so batches fail and are read again.
    let exporter = format!(
        r#"[exporters.otlp]
endpoint = "http://127.0.0.1:{sink_grpc}"
[exporters.otlp.retry_on_failure]
initial_interval = "50ms"
max_interval = "200ms"
max_elapsed_time = "1s""#
    );
    let mut c = Collector::start(&config(service, receiver, &exporter, "\"otlp\""), service);
    let logs = c.path("logs");
    fs::create_dir_all(&logs).unwrap();
    let mut text = String::new();
    for n in 0..TOTAL {
        text.push_str(&line(n));
    }
    fs::write(logs.join("app.jsonl"), &text).unwrap();
    let size = text.len() as u64;
    // Read and sent, given up on, read again: but never checkpointed.
    eventually(
        Duration::from_secs(30),
        "batches fail while the sink is down",
        || {
            common::metric_value(
                &c.metrics(),
                r#"tradewatch_receiver_batches_not_delivered_total{receiver="logtail/t"}"#,
            )
            .unwrap_or(0.0)
                >= 3.0
        },
    );
    let cp = checkpoint_committed(&c);
    assert!(
        cp.iter().all(|(_, committed)| *committed == 0),
        "the checkpoint advanced past undelivered lines: {cp:?}"
    );
    // The sink: a second collector, OTLP in, file out.
    let sink = Collector::start(
        &format!(
            r#"[receivers.otlp]
grpc = "127.0.0.1:{sink_grpc}"
http = "127.0.0.1:{sink_http}"
[exporters.file]
path = "sink.jsonl"
[service]
http = "127.0.0.1:{sink_service}"
[service.pipelines.logs]
receivers = ["otlp"]
exporters = ["file"]
"#
        ),
        sink_service,
    );
    let out = sink.path("sink.jsonl");
    eventually(
        Duration::from_secs(60),
        "every line reaches the sink",
        || counts(&out, "n").len() as u64 == TOTAL,
    );
    eventually(
        Duration::from_secs(10),
        "the checkpoint covers the file",
        || {
            checkpoint_committed(&c)
                == vec![(logs.join("app.jsonl").to_string_lossy().into_owned(), size)]
        },
    );
    c.terminate(Duration::from_secs(20));
    let seen = counts(&out, "n");
    assert!(seen.values().all(|k| *k == 1), "a line arrived twice");
    assert_eq!(seen.len() as u64, TOTAL);
}

#[test]
fn parsing_table_end_to_end() {
    let service = common::free_port();
    let receiver = r#"[receivers."logtail/t"]
include = ["logs/*.log"]
start_at = "beginning"
poll_interval = "50ms"
multiline_start = '^(\{|\d{4}-\d\d-\d\d)'"#;
    let c = Collector::start(
        &config(service, receiver, file_exporter(), "\"file\""),
        service,
    );
    let logs = c.path("logs");
    fs::create_dir_all(&logs).unwrap();
    let mut f = File::create(logs.join("app.log")).unwrap();
    let big = "y".repeat(10 * 1024 * 1024);
    let mut bytes: Vec<u8> = Vec::new();
    bytes.extend_from_slice(b"{\"event\": \"order_submitted\", \"symbol\": \"AAPL\", \"order_id\": \"abc123\", \"quantity\": 100, \"price\": 150.0, \"timestamp\": \"2024-03-15T14:32:15.123456Z\", \"level\": \"info\", \"trace_id\": \"4bf92f3577b34da6a3ce929d0e0e4736\", \"span_id\": \"00f067aa0ba902b7\"}\n");
    bytes.extend_from_slice(b"{\"asctime\": \"2024-03-15 14:32:16,001\", \"levelname\": \"WARNING\", \"name\": \"bot.risk\", \"message\": \"drawdown near limit\", \"drawdown_pct\": 4.5}\n");
    bytes.extend_from_slice(b"{\n\"level\": \"INFO\",\n\"logger\": \"aiswarm.orchestration.coordinator\",\n\"message\": \"Cycle completed\",\n\"extra_json\": {\n\"cycle\": 42,\n\"signal_selected\": true,\n\"duration_ms\": 245\n}\n}\n");
    bytes.extend_from_slice(b"2024-03-15 14:32:17 plain text line\n");
    bytes.extend_from_slice(b"2024-03-15 14:32:18 bad bytes \xff\xfe here\n");
    bytes.extend_from_slice(format!("2024-03-15 14:32:19 huge {big}\n").as_bytes());
    bytes.extend_from_slice(b"2024-03-15 14:32:20 ERROR job failed\nTraceback (most recent call last):\n  File \"bot.py\", line 3, in <module>\n    main()\nValueError: boom\n");
    bytes.extend_from_slice(b"{\"event\": \"last\", \"level\": \"debug\"}\n");
    f.write_all(&bytes).unwrap();
    drop(f);
    let out = c.path("out.jsonl");
    eventually(Duration::from_secs(30), "eight records", || {
        logs_in(&read_jsonl(&out)).len() >= 8
    });
    let recs: Vec<serde_json::Value> = logs_in(&read_jsonl(&out))
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(recs.len(), 8, "one record per entry");
    let body = |i: usize| {
        recs[i]["body"]["stringValue"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let a = |i: usize| attrs(&recs[i]["attributes"]);
    // structlog
    assert_eq!(body(0), "order_submitted");
    assert_eq!(recs[0]["severityNumber"], 9);
    assert_eq!(recs[0]["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(recs[0]["spanId"], "00f067aa0ba902b7");
    assert_eq!(recs[0]["timeUnixNano"], "1710513135123456000");
    assert_eq!(a(0)["symbol"], "AAPL");
    assert_eq!(a(0)["quantity"], 100);
    assert!(!a(0).contains_key("trace_id") && !a(0).contains_key("event"));
    // python-json-logger
    assert_eq!(body(1), "drawdown near limit");
    assert_eq!(recs[1]["severityNumber"], 13);
    assert_eq!(a(1)["drawdown_pct"], 4.5);
    assert_eq!(a(1)["name"], "bot.risk");
    // the seeds' extra_json shape, pretty-printed over several lines
    assert_eq!(body(2), "Cycle completed");
    assert_eq!(a(2)["extra_json.cycle"], 42);
    assert_eq!(a(2)["extra_json.signal_selected"], true);
    assert_eq!(a(2)["logger"], "aiswarm.orchestration.coordinator");
    // plain text
    assert_eq!(body(3), "2024-03-15 14:32:17 plain text line");
    // invalid UTF-8 kept, lossily
    assert_eq!(
        body(4),
        "2024-03-15 14:32:18 bad bytes \u{fffd}\u{fffd} here"
    );
    assert_eq!(a(4)["log.invalid_utf8"], true);
    // a 10 MB line: its first MiB, marked and counted
    assert_eq!(body(5).len(), 1024 * 1024);
    assert!(body(5).starts_with("2024-03-15 14:32:19 huge yyy"));
    assert_eq!(a(5)["log.truncated"], true);
    assert_eq!(
        c.metric(r#"tradewatch_receiver_lines_truncated_total{receiver="logtail/t"}"#),
        1.0
    );
    // a Python traceback: one record
    assert_eq!(
        body(6),
        "2024-03-15 14:32:20 ERROR job failed\nTraceback (most recent call last):\n  File \"bot.py\", line 3, in <module>\n    main()\nValueError: boom"
    );
    assert_eq!(body(7), "last");
    assert_eq!(recs[7]["severityNumber"], 5);
}

const SECRETS: &[&str] = &[
    "hunter2-pass",
    "tok-3f9a8b7c6d",
    "AKIA-api-key-771",
    "T000/B000/XXXXsecretXXXX",
    "123456:ABC-telegram-bot-token",
    "eyJhbGciOiJIUzI1NiJ9.bearer",
    "dbpass-42",
    "custom-9f8e",
];

#[test]
fn redaction_no_secret_in_any_output_or_own_log() {
    let service = common::free_port();
    let receiver = r#"[receivers."logtail/t"]
include = ["logs/*.log"]
start_at = "beginning"
poll_interval = "50ms"
redact_patterns = ['custom-[0-9a-f]{4}']"#;
    let exporters =
        "[exporters.file]\npath = \"out.jsonl\"\n[exporters.debug]\nverbosity = \"detailed\"\n";
    let c = Collector::start(
        &config(service, receiver, exporters, "\"file\", \"debug\""),
        service,
    );
    let logs = c.path("logs");
    fs::create_dir_all(&logs).unwrap();
    let text = [
        r#"{"event": "login", "password": "hunter2-pass", "user": "bob"}"#,
        r#"{"event": "call", "auth": {"token": "tok-3f9a8b7c6d"}, "exchange": {"api_key": "AKIA-api-key-771"}}"#,
        r#"{"event": "alert sent to https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX ok"}"#,
        r#"{"event": "tg", "url": "https://api.telegram.org/bot123456:ABC-telegram-bot-token/sendMessage"}"#,
        r#"{"event": "http", "headers": [{"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.bearer"}]}"#,
        "2024-03-15 connecting to postgres://bot:dbpass-42@db:5432/trades with password=hunter2-pass",
        "2024-03-15 calling with Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.bearer token=tok-3f9a8b7c6d",
        "2024-03-15 custom-9f8e leaked",
        r#"{"event": "done", "n": 1}"#,
    ]
    .join("\n")
        + "\n";
    fs::write(logs.join("app.log"), text).unwrap();
    let out = c.path("out.jsonl");
    eventually(Duration::from_secs(30), "every record", || {
        logs_in(&read_jsonl(&out)).len() >= 9
    });
    eventually(
        Duration::from_secs(10),
        "the debug exporter printed them",
        || c.logs().contains("\"done\""),
    );
    let written = fs::read_to_string(&out).unwrap();
    let own = c.logs();
    for s in SECRETS {
        assert!(!written.contains(s), "{s} in the file exporter's output");
        assert!(!own.contains(s), "{s} in tradewatch's own log");
    }
    assert!(written.contains("[REDACTED]"));
    assert!(written.contains("\"bob\""), "what is not secret stays");
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_thousand_files_created_and_deleted_leak_no_descriptor() {
    let service = common::free_port();
    let receiver = r#"[receivers."logtail/t"]
include = ["logs/*.jsonl"]
start_at = "beginning"
poll_interval = "50ms""#;
    let c = Collector::start(
        &config(service, receiver, file_exporter(), "\"file\""),
        service,
    );
    let pid = c.child.as_ref().unwrap().id();
    let logs = c.path("logs");
    fs::create_dir_all(&logs).unwrap();
    let out = c.path("out.jsonl");
    // Settle first: the file exporter's output is open from now on.
    fs::write(logs.join("warmup.jsonl"), line(1_000_000)).unwrap();
    eventually(Duration::from_secs(20), "warm-up line", || {
        counts(&out, "n").len() == 1
    });
    fs::remove_file(logs.join("warmup.jsonl")).unwrap();
    eventually(Duration::from_secs(20), "warm-up file released", || {
        common::metric_value(
            &c.metrics(),
            r#"tradewatch_receiver_open_files{receiver="logtail/t"}"#,
        ) == Some(0.0)
    });
    let before = open_fds(pid);
    let mut peak = 0;
    for batch in 0..20 {
        let names: Vec<PathBuf> = (0..50)
            .map(|i| logs.join(format!("f{batch}-{i}.jsonl")))
            .collect();
        for (i, p) in names.iter().enumerate() {
            fs::write(p, line((batch * 50 + i) as u64)).unwrap();
        }
        eventually(Duration::from_secs(30), "this round's lines", || {
            counts(&out, "n").len() == 1 + (batch + 1) * 50
        });
        peak = peak.max(open_fds(pid));
        for p in names {
            fs::remove_file(p).unwrap();
        }
    }
    eventually(
        Duration::from_secs(30),
        "every deleted file is released",
        || open_fds(pid) <= before,
    );
    let seen = counts(&out, "n");
    assert_eq!(seen.len(), 1001);
    assert!(seen.values().all(|k| *k == 1));
    assert!(
        peak > before,
        "files were held open while read (peak {peak}, before {before})"
    );
    eprintln!("fds: before {before}, peak {peak}, after {}", open_fds(pid));
}
