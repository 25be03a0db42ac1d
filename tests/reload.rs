//! Configuration reload (SIGHUP and `POST /reload`): a valid change takes effect while
//! data flows and nothing the collector accepted is lost (counted end to end); an invalid
//! one is refused with its errors and the running pipelines go on.

mod common;

use common::{read_jsonl, spans_in, Collector};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn config(http: u16, service: u16, out: &str) -> String {
    format!(
        r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"

[processors.batch]
send_batch_size = 50
timeout = "200ms"

[exporters.file]
path = "{out}"

# A disk queue too: its log (and lock) must pass from the old pipelines to the new.
[exporters.nop.sending_queue]
storage = "disk"

[service]
http = "127.0.0.1:{service}"
shutdown_timeout = "10s"
data_dir = "data"

[service.pipelines.traces]
receivers = ["otlp"]
processors = ["batch"]
exporters = ["file", "nop"]
"#
    )
}

/// One span named `name`, as OTLP/JSON.
fn span(name: &str, n: u64) -> String {
    format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"{:032x}","spanId":"{:016x}","name":"{name}"}}]}}]}}]}}"#,
        n + 1,
        n + 1
    )
}

/// POSTs with a raw HTTP/1.0 request; `None` when nothing answers (the receiver is
/// between two configurations).
fn post(port: u16, body: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "POST /v1/traces HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split(' ').nth(1).and_then(|c| c.parse().ok())
}

fn post_reload(service: SocketAddr) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&service, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /reload HTTP/1.0\r\nHost: {service}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let code = buf.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// Span names in the collector's output files, each with how often it was written.
fn written(c: &Collector, files: &[&str]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for f in files {
        for (_, s) in spans_in(&read_jsonl(&c.path(f))) {
            *m.entry(s["name"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    m
}

#[test]
fn a_reload_takes_effect_without_losing_accepted_data_and_a_bad_one_is_refused() {
    let (http, service) = (common::free_port(), common::free_port());
    let mut c = Collector::start(&config(http, service, "out1.jsonl"), service);

    // A client sending all along; it remembers every span the collector answered 200 for.
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (accepted, stop) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("s{n}");
                if post(http, &span(&name, n)) == Some(200) {
                    accepted.lock().unwrap().push(name);
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let count = || accepted.lock().unwrap().len();
    common::eventually(Duration::from_secs(20), "100 spans accepted", || {
        count() >= 100
    });

    // SIGHUP with a new output file: it takes effect, and the old file got what was
    // accepted before (drained, not dropped).
    std::fs::write(&c.config_path, config(http, service, "out2.jsonl")).unwrap();
    common::signal(c.child.as_ref().unwrap(), "HUP");
    common::eventually(Duration::from_secs(30), "spans in the new file", || {
        !written(&c, &["out2.jsonl"]).is_empty()
    });
    let before = count();
    common::eventually(Duration::from_secs(20), "100 more spans accepted", || {
        count() >= before + 100
    });

    // A broken file is refused as a whole, with its errors; the pipelines keep running.
    std::fs::write(
        &c.config_path,
        config(http, service, "out3.jsonl")
            .replace("send_batch_size = 50", "send_batch_size = \"many\""),
    )
    .unwrap();
    let (code, body) = post_reload(c.service);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("processors.batch.send_batch_size"), "{body}");
    let before = count();
    common::eventually(
        Duration::from_secs(20),
        "spans accepted after the refusal",
        || count() >= before + 50,
    );

    // POST /reload with a valid change answers once it runs.
    std::fs::write(&c.config_path, config(http, service, "out3.jsonl")).unwrap();
    let (code, body) = post_reload(c.service);
    assert_eq!(code, 200, "{body}");
    let before = count();
    common::eventually(
        Duration::from_secs(20),
        "spans accepted after the reload",
        || count() >= before + 50,
    );
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();

    // End to end: every accepted span is in exactly one file, once.
    let files = ["out1.jsonl", "out2.jsonl", "out3.jsonl"];
    let accepted = accepted.lock().unwrap().clone();
    common::eventually(
        Duration::from_secs(20),
        "every accepted span written",
        || {
            let w = written(&c, &files);
            accepted.iter().all(|n| w.contains_key(n))
        },
    );
    let w = written(&c, &files);
    assert_eq!(
        w.len(),
        accepted.len(),
        "nothing written that was not accepted"
    );
    assert!(w.values().all(|&n| n == 1), "a span written twice");
    for f in files {
        assert!(!written(&c, &[f]).is_empty(), "{f} got nothing");
    }
    assert_eq!(
        c.metric(r#"tradewatch_config_reloads_total{result="ok"}"#),
        2.0
    );
    assert_eq!(
        c.metric(r#"tradewatch_config_reloads_total{result="refused"}"#),
        1.0
    );
    assert!(c.logs().contains("configuration reload refused"));
    c.terminate(Duration::from_secs(20));
}

/// New pipelines that cannot start (their port is taken) are refused, and the previous
/// configuration runs again.
#[test]
fn a_reload_whose_pipelines_cannot_start_falls_back_to_the_previous_configuration() {
    let (http, service) = (common::free_port(), common::free_port());
    let c = Collector::start(&config(http, service, "out1.jsonl"), service);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    std::fs::write(&c.config_path, config(busy, service, "out2.jsonl")).unwrap();
    let (code, body) = post_reload(c.service);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("did not start"), "{body}");
    // The previous pipelines listen again, on the previous port, into the previous file.
    common::eventually(
        Duration::from_secs(20),
        "a span through the old pipelines",
        || {
            post(http, &span("after", 1)) == Some(200)
                && written(&c, &["out1.jsonl"]).contains_key("after")
        },
    );
    assert!(written(&c, &["out2.jsonl"]).is_empty());
    assert_eq!(c.status()["phase"], "running");
    drop(taken);
}
