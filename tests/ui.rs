//! `/ui` in a real browser: Debian's headless Chromium driven through chromedriver
//! (WebDriver, the `fantoccini` crate), against `tradewatch demo`, a `tradewatch run`
//! polling the REAL Freqtrade bot, and a restarted collector.
//!
//! 1. the bot card shows what `/status`, `/metrics` and the receiver's own metric points
//!    say; the drawdown chart gains points; after the demo's breach the card says `paused`
//!    and the alert is in the timeline within 2 s of being raised;
//! 2. a screenshot after the breach goes to `target/test-artifacts/ui-after-breach.png`;
//! 3. actions: refused without the token (401), across origins and without the CSRF header
//!    (403); with the token, `resume` starts the real Freqtrade bot (`show_config` says
//!    `running`) and is recorded as an alert record; acknowledging an alert works;
//! 4. the page reconnects by itself when tradewatch restarts and shows the new process's data;
//! 5. the page's weight and requests: three assets, all from loopback, < 250 KB; the
//!    browser's proxy points at a dead port, so anything not on loopback could not load.
//!
//! Chromium and chromedriver: `TRADEWATCH_CHROMIUM` / `TRADEWATCH_CHROMEDRIVER`, else
//! `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/test`). Missing: the test fails, saying so.

mod common;

use common::freqtrade::{venv, Bot, PASSWORD};
use common::{eventually, free_port, http_get, metric_value, Collector};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn tool(var: &str, default: &str, package: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        p.exists(),
        "{} not found: install Debian's `{package}` (scripts/test does) or set {var}",
        p.display()
    );
    p
}

/// One headless Chromium session through its own chromedriver; both stopped on drop.
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<fantoccini::Client>,
    driver: Child,
    _profile: tempfile::TempDir,
    driver_log: PathBuf,
}

impl Browser {
    fn start() -> Browser {
        let chromium = tool("TRADEWATCH_CHROMIUM", "/usr/bin/chromium", "chromium");
        let chromedriver = tool(
            "TRADEWATCH_CHROMEDRIVER",
            "/usr/bin/chromedriver",
            "chromium-driver",
        );
        let profile = tempfile::tempdir().expect("tempdir");
        let driver_log = profile.path().join("chromedriver.log");
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", driver_log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut b = Browser {
            rt,
            client: None,
            driver,
            _profile: profile,
            driver_log,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Listening is enough: the session request below waits for it to be ready.
        eventually(Duration::from_secs(30), "chromedriver listening", || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        // Anything that is not loopback goes to a proxy that does not exist: it could
        // not load. The background services would otherwise try the network.
        let dead = free_port();
        let user_data = b._profile.path().join("chromium");
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1100,1400",
                    format!("--proxy-server=http://127.0.0.1:{dead}"),
                    format!("--user-data-dir={}", user_data.display()),
                ]
            }
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let client =
            b.rt.block_on(async {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                fantoccini::ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&url)
                    .await
            })
            .unwrap_or_else(|e| {
                panic!(
                    "no Chromium session through chromedriver: {e}\n{}",
                    std::fs::read_to_string(&b.driver_log).unwrap_or_default()
                )
            });
        b.client = Some(client);
        b
    }

    fn c(&self) -> &fantoccini::Client {
        self.client.as_ref().expect("session open")
    }

    fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).expect("goto");
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    fn js(&self, script: &str) -> Value {
        self.rt
            .block_on(self.c().execute(script, vec![]))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    fn click(&self, css: &str) {
        self.rt.block_on(async {
            let e = self
                .c()
                .find(fantoccini::Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"));
            e.click()
                .await
                .unwrap_or_else(|e| panic!("click {css}: {e}"));
        });
    }

    fn type_into(&self, css: &str, text: &str) {
        self.rt.block_on(async {
            let e = self
                .c()
                .find(fantoccini::Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"));
            e.send_keys(text).await.expect("send_keys");
        });
    }

    fn screenshot(&self) -> Vec<u8> {
        self.rt.block_on(self.c().screenshot()).expect("screenshot")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), c.close()).await });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The fields of panel `id` as the page shows them: key → {text, value, tone}, plus the
/// badge and the number of points of each chart.
fn panel(b: &Browser, id: &str) -> Value {
    b.js(&format!(
        r#"var p = document.querySelector('[data-panel="{id}"]');
        if (!p) return null;
        var out = {{fields: {{}}, charts: {{}}, badge: null, actions: []}};
        p.querySelectorAll('dd[data-field]').forEach(function (d) {{
          out.fields[d.getAttribute('data-field')] = {{text: d.textContent,
            value: d.hasAttribute('data-value') ? Number(d.getAttribute('data-value')) : null,
            tone: d.getAttribute('data-tone')}};
        }});
        p.querySelectorAll('svg[data-series]').forEach(function (s) {{
          out.charts[s.getAttribute('data-series')] = Number(s.getAttribute('data-points'));
        }});
        var badge = p.querySelector('[data-badge]');
        if (badge) out.badge = badge.getAttribute('data-badge');
        p.querySelectorAll('button[data-action]').forEach(function (x) {{ out.actions.push(x.getAttribute('data-action')); }});
        return out;"#
    ))
}

/// The timeline as the page shows it, newest first.
fn timeline(b: &Browser) -> Vec<Value> {
    b.js(
        r#"return Array.prototype.map.call(document.querySelectorAll('#timeline li[data-alert-id]'), function (li) {
          return {id: Number(li.getAttribute('data-alert-id')), name: li.getAttribute('data-alert-name'),
            state: li.getAttribute('data-state'), at_ms: Number(li.getAttribute('data-at-ms')),
            seen_ms: Number(li.getAttribute('data-seen-ms')), acknowledged: li.getAttribute('data-acknowledged'),
            text: li.textContent};
        });"#,
    )
    .as_array()
    .cloned()
    .unwrap_or_default()
}

/// `tradewatch demo`, stopped (SIGTERM) on drop.
struct Demo {
    child: Child,
    service: SocketAddr,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let service = SocketAddr::from(([127, 0, 0, 1], port));
        let out = dir.path().join("out.jsonl");
        let child = Command::new(env!("CARGO_BIN_EXE_tradewatch"))
            .args(["demo", "--interval", "1s", "--drawdown-ramp", "15s"])
            .arg("--service")
            .arg(service.to_string())
            .arg("--out")
            .arg(&out)
            .env("TRADEWATCH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .expect("spawn tradewatch demo");
        let d = Demo {
            child,
            service,
            out,
            _dir: dir,
        };
        eventually(Duration::from_secs(30), "the demo running", || {
            http_get(service, "/health").is_ok_and(|(c, b)| c == 200 && b.contains("running"))
        });
        d
    }

    /// The latest value of metric `name` for the demo bot in the file output.
    fn latest_point(&self, name: &str, attr: Option<(&str, &str)>) -> Option<f64> {
        let lines = common::read_jsonl(&self.out);
        let mut last = None;
        for (_, m) in common::metrics_in(&lines) {
            if m["name"] != name {
                continue;
            }
            let data = m.get("gauge").or_else(|| m.get("sum"))?;
            for p in data["dataPoints"].as_array().into_iter().flatten() {
                let a = common::attrs(&p["attributes"]);
                if let Some((k, v)) = attr {
                    if a.get(k).and_then(Value::as_str) != Some(v) {
                        continue;
                    }
                }
                last = p.get("asDouble").and_then(Value::as_f64).or_else(|| {
                    p.get("asInt")
                        .and_then(|v| v.as_str()?.parse().ok().or(v.as_f64()))
                });
            }
        }
        last
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        common::signal(&self.child, "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn artifacts_dir() -> PathBuf {
    let dir = common::repo_root().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("target/test-artifacts");
    dir
}

#[test]
fn the_page_follows_the_demo_bot_shows_the_breach_and_loads_only_from_loopback() {
    let demo = Demo::start();
    let b = Browser::start();
    let base = format!("http://{}", demo.service);
    b.goto(&format!("{base}/ui"));

    // (1) The card shows what /status, /metrics and the receiver's points say. Each read
    // is of one moment; polls move every second, so read until all agree.
    eventually(Duration::from_secs(30), "the bot card on the page", || {
        !panel(&b, "bot:demo").is_null()
    });
    let mut last_mismatch = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let card = panel(&b, "bot:demo");
        let f = &card["fields"];
        let (_, status) = http_get(demo.service, "/status").unwrap();
        let status: Value = serde_json::from_str(&status).unwrap();
        let detail = status["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "freqtrade/demo")
            .and_then(|c| c["detail"].as_str())
            .unwrap_or_default()
            .to_owned();
        let (_, metrics) = http_get(demo.service, "/metrics").unwrap();
        let polls = metric_value(
            &metrics,
            r#"tradewatch_receiver_polls_total{receiver="freqtrade/demo",bot="demo"}"#,
        );
        let balance = demo.latest_point("freqtrade.balance", None);
        let running = demo.latest_point("freqtrade.bot.state", Some(("state", "running")));
        let want_latency = format!(
            "latency={}ms",
            f["poll_latency_ms"]["value"].as_f64().unwrap_or(-1.0)
        );
        let checks = [
            (
                "polls = /metrics polls",
                f["polls"]["value"].as_f64() == polls,
            ),
            (
                "failed polls = /status",
                detail.contains(&format!(
                    "consecutive_failures={}",
                    f["consecutive_failures"]["value"].as_f64().unwrap_or(-1.0)
                )),
            ),
            ("latency = /status", detail.contains(&want_latency)),
            (
                "equity = freqtrade.balance",
                f["equity"]["value"].as_f64().is_some() && f["equity"]["value"].as_f64() == balance,
            ),
            (
                "state running = freqtrade.bot.state",
                // The page writes a shape before the word (✔ running).
                f["state"]["text"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("running"))
                    && running == Some(1.0),
            ),
        ];
        if checks.iter().all(|(_, ok)| *ok) {
            break;
        }
        last_mismatch = format!("{checks:?}\ncard: {card}\n/status detail: {detail}\npolls {polls:?} balance {balance:?}");
        assert!(
            Instant::now() < deadline,
            "the card never agreed with /status, /metrics and the metric points: {last_mismatch}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = last_mismatch;

    // The drawdown chart gains points, with its limit line.
    let points = |b: &Browser| {
        panel(b, "bot:demo")["charts"]["drawdown_pct"]
            .as_f64()
            .unwrap_or(0.0)
    };
    let first = points(&b);
    eventually(
        Duration::from_secs(20),
        "the drawdown chart gaining points",
        || points(&b) >= first + 2.0,
    );
    assert_eq!(
        b.js(r#"return document.querySelectorAll('[data-panel="bot:demo"] svg[data-series="drawdown_pct"] line.limit').length"#),
        json!(1),
        "the drawdown chart has its limit line"
    );

    // The demo's breach: the alert in the timeline within 2 s of being raised, and the
    // card says paused.
    eventually(
        Duration::from_secs(120),
        "the breach alert in the timeline",
        || {
            timeline(&b)
                .iter()
                .any(|a| a["name"] == "MaxDrawdownBreached" && a["state"] == "firing")
        },
    );
    let alert = timeline(&b)
        .into_iter()
        .find(|a| a["name"] == "MaxDrawdownBreached")
        .unwrap();
    let lag = alert["seen_ms"].as_f64().unwrap() - alert["at_ms"].as_f64().unwrap();
    eprintln!("breach alert raised -> shown on the page: {lag} ms");
    assert!(
        lag <= 2000.0,
        "the alert appeared {lag} ms after it was raised (must be within 2 s)"
    );
    // The log channel's delivery result, on the alert.
    eventually(
        Duration::from_secs(10),
        "the log channel's result on the alert",
        || {
            b.js(r#"return !!document.querySelector('li[data-alert-name="MaxDrawdownBreached"] [data-channel="log"][data-tone="ok"]')"#)
            == json!(true)
        },
    );
    eventually(Duration::from_secs(10), "the card saying paused", || {
        panel(&b, "bot:demo")["badge"] == "paused"
    });
    let card = panel(&b, "bot:demo");
    assert!(
        card["fields"]["state"]["text"]
            .as_str()
            .is_some_and(|t| t.ends_with("paused")),
        "{card}"
    );
    assert_eq!(card["fields"]["breach_run"]["tone"], "bad", "{card}");
    // Actions are off in the demo (no ui_token): no buttons.
    assert_eq!(card["actions"], json!([]), "{card}");

    // (2) The screenshot, kept as a test artifact.
    let png = b.screenshot();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    let shot = artifacts_dir().join("ui-after-breach.png");
    std::fs::write(&shot, &png).unwrap();
    eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());

    // Readable on a phone: at 390 px nothing runs off the side.
    b.rt.block_on(b.c().set_window_size(390, 844))
        .expect("window size");
    eventually(
        Duration::from_secs(10),
        "the page fitting a phone's width",
        || {
            b.js("return document.documentElement.scrollWidth <= window.innerWidth + 1")
                == json!(true)
        },
    );
    std::fs::write(artifacts_dir().join("ui-phone.png"), b.screenshot()).unwrap();

    // (5) Page weight and requests: the document and its two assets, all from this
    // collector on loopback (plus the event stream, listed once it ends).
    let entries = b.js(
        r#"var nav = performance.getEntriesByType('navigation')[0];
        var all = [{name: nav.name, size: nav.encodedBodySize, transfer: nav.transferSize, type: 'navigation'}];
        performance.getEntriesByType('resource').forEach(function (r) {
          all.push({name: r.name, size: r.encodedBodySize, transfer: r.transferSize, type: r.initiatorType});
        });
        return all;"#,
    );
    let entries = entries.as_array().unwrap();
    let origin = format!("{base}/");
    for e in entries {
        let name = e["name"].as_str().unwrap();
        assert!(
            name.starts_with(&origin),
            "a request left this collector: {e}"
        );
    }
    let assets: Vec<&Value> = entries
        .iter()
        .filter(|e| !e["name"].as_str().unwrap().ends_with("/ui/events"))
        .collect();
    let names: Vec<&str> = assets.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(
        names.len(),
        3,
        "the page is one document and two assets: {names:?}"
    );
    for want in ["/ui", "/ui/app.js", "/ui/app.css"] {
        assert!(
            names.iter().any(|n| n.ends_with(want)),
            "{want} not loaded: {names:?}"
        );
    }
    let weight: f64 = assets
        .iter()
        .map(|e| e["size"].as_f64().unwrap_or(0.0))
        .sum();
    eprintln!(
        "page weight: {weight} bytes in {} requests (+ the event stream)",
        names.len()
    );
    assert!(
        weight > 1000.0 && weight < 250.0 * 1024.0,
        "page weight {weight} bytes"
    );
    // What the proxy would have refused, had anything asked: nothing failed to load.
    let failed = b.js(
        r#"return performance.getEntriesByType('resource').filter(function (r) { return r.responseStatus >= 400; }).length"#,
    );
    assert_eq!(failed, json!(0));
}

const UI_TOKEN: &str = "ui-token-for-tests-3f9c1d";

fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn actions_need_the_token_and_resume_resumes_the_real_freqtrade_bot() {
    let venv = venv();
    let tmp = tempfile::tempdir().unwrap();
    let bot = Bot::start(&venv, "drawdown", tmp.path().join("bot"));
    let service = free_port();
    let config = format!(
        r#"
[receivers."freqtrade/main"]
bot = "main"
url = "{url}"
username = "freqtrader"
password = "${{FT_PASS}}"
interval = "1s"

[receivers.alerts]

[processors.risk]
max_drawdown_pct = 10
action_on_breach = "pause"
control = "freqtrade/main"

[exporters.nop]
[exporters.log]

[service]
http = "127.0.0.1:{service}"
data_dir = "{data}"
ui_token = "${{UI_TOKEN}}"

[service.pipelines.metrics]
receivers = ["freqtrade/main"]
processors = ["risk"]
exporters = ["nop"]

[service.pipelines."logs/alerts"]
receivers = ["alerts"]
exporters = ["log"]
"#,
        url = bot.url(),
        data = tmp.path().join("data").display(),
    );
    assert_eq!(bot.state(), "running");
    let c = Collector::start_with_env(
        &config,
        service,
        &[("FT_PASS", PASSWORD), ("UI_TOKEN", UI_TOKEN)],
    );
    eventually(
        Duration::from_secs(60),
        "the breach pausing the real bot",
        || bot.state() == "paused",
    );

    // Refused: no token, a wrong token (401); no CSRF header, another origin (403).
    let resume = "/ui/api/panels/bot:main/actions/resume";
    let bearer = format!("Bearer {UI_TOKEN}");
    let addr = c.service;
    assert_eq!(post(addr, resume, &[("X-Tradewatch-UI", "1")]), 401);
    assert_eq!(
        post(
            addr,
            resume,
            &[("X-Tradewatch-UI", "1"), ("Authorization", "Bearer nope")]
        ),
        401
    );
    assert_eq!(post(addr, resume, &[("Authorization", &bearer)]), 403);
    assert_eq!(
        post(
            addr,
            resume,
            &[
                ("X-Tradewatch-UI", "1"),
                ("Authorization", &bearer),
                ("Origin", "http://evil.example")
            ]
        ),
        403
    );
    assert_eq!(
        post(addr, "/ui/api/alerts/1/ack", &[("X-Tradewatch-UI", "1")]),
        401
    );
    assert_eq!(bot.state(), "paused", "a refused request changed nothing");
    let metrics = c.metrics();
    assert_eq!(
        metric_value(
            &metrics,
            r#"tradewatch_ui_refused_actions_total{code="401"}"#
        ),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"tradewatch_ui_refused_actions_total{code="403"}"#
        ),
        Some(2.0)
    );

    // With the token, through the page.
    let b = Browser::start();
    b.goto(&format!("http://{addr}/ui"));
    eventually(Duration::from_secs(30), "the resume button", || {
        panel(&b, "bot:main")["actions"] == json!(["resume"])
    });
    b.type_into("#token", UI_TOKEN);
    b.click("#token-form button[type=submit]");
    eventually(Duration::from_secs(10), "the token taken", || {
        b.js("return document.getElementById('token-state').getAttribute('data-set')") == "1"
    });
    // Acknowledge the breach alert.
    eventually(
        Duration::from_secs(30),
        "the breach alert with its button",
        || {
            b.js(r#"return !!document.querySelector('li[data-alert-name="MaxDrawdownBreached"] button[data-ack]')"#)
            == json!(true)
        },
    );
    // Keyboard: a focused button keeps its focus while updates arrive.
    b.js(r#"document.querySelector('li[data-alert-name="MaxDrawdownBreached"] button[data-ack]').focus(); return true"#);
    let updated = |b: &Browser| {
        b.js("return document.getElementById('conn').getAttribute('data-updated-ms')")
    };
    let u0 = updated(&b);
    eventually(Duration::from_secs(10), "two updates", || updated(&b) != u0);
    let u1 = updated(&b);
    eventually(Duration::from_secs(10), "another update", || {
        updated(&b) != u1
    });
    assert_eq!(
        b.js("return document.activeElement && document.activeElement.getAttribute('data-ack') !== null"),
        json!(true),
        "the focused Acknowledge button kept its focus across updates"
    );
    b.click(r#"li[data-alert-name="MaxDrawdownBreached"] button[data-ack]"#);
    eventually(Duration::from_secs(10), "the alert acknowledged", || {
        timeline(&b)
            .iter()
            .any(|a| a["name"] == "MaxDrawdownBreached" && a["acknowledged"] == "1")
    });
    // Resume the bot.
    b.click(r#"[data-panel="bot:main"] button[data-action="resume"]"#);
    eventually(Duration::from_secs(30), "the resume answered", || {
        b.js("return document.getElementById('action-result').getAttribute('data-code')") == "200"
    });
    eventually(
        Duration::from_secs(30),
        "show_config saying running",
        || bot.state() == "running",
    );
    eventually(
        Duration::from_secs(10),
        "the resume in the timeline",
        || {
            timeline(&b)
                .iter()
                .any(|a| a["name"] == "BotResumedByOperator")
        },
    );
    eventually(Duration::from_secs(10), "the card saying running", || {
        panel(&b, "bot:main")["badge"] == "running"
    });
    let logs = c.logs();
    assert!(
        logs.contains("BotResumedByOperator"),
        "the resume alert went through the log channel"
    );
    assert!(
        !logs.contains(UI_TOKEN),
        "the token never appears in the logs"
    );
    let status = c.status().to_string();
    assert!(!status.contains(UI_TOKEN), "nor in /status");
}

#[test]
fn the_page_reconnects_when_tradewatch_restarts_and_shows_the_new_data() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (sim_addr, sim) = rt
        .block_on(tradewatch::demo::sim::spawn(Default::default()))
        .expect("the simulated bot");
    let service = free_port();
    let tmp_data = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[receivers."freqtrade/sim"]
bot = "sim"
url = "http://{sim_addr}"
username = "freqtrader"
password = "demo"
interval = "1s"

[exporters.nop]

[service]
http = "127.0.0.1:{service}"
data_dir = "{data}"

[service.pipelines.metrics]
receivers = ["freqtrade/sim"]
exporters = ["nop"]
"#,
        data = tmp_data.path().display(),
    );
    let mut c = Collector::start(&config, service);
    let b = Browser::start();
    b.goto(&format!("http://{}/ui", c.service));
    let conn = |b: &Browser| {
        b.js(r#"var c = document.getElementById('conn');
            return {state: c.getAttribute('data-state'), epoch: c.getAttribute('data-epoch'),
                    snapshots: Number(c.getAttribute('data-snapshots') || 0)};"#)
    };
    let polls = |b: &Browser| panel(b, "bot:sim")["fields"]["polls"]["value"].as_f64();
    eventually(
        Duration::from_secs(30),
        "the page live with the bot",
        || conn(&b)["state"] == "live" && polls(&b).is_some_and(|p| p >= 3.0),
    );
    let before = conn(&b);

    c.restart(&[]);

    // A new snapshot from the new process (a new epoch), live again, and its polls
    // counting from the start again, then moving.
    eventually(
        Duration::from_secs(30),
        "the page reconnected to the new process",
        || {
            let now = conn(&b);
            now["state"] == "live"
                && now["epoch"] != before["epoch"]
                && now["snapshots"].as_f64() > before["snapshots"].as_f64()
        },
    );
    eventually(
        Duration::from_secs(30),
        "fresh polls after the restart",
        || polls(&b).is_some_and(|p| (1.0..100.0).contains(&p)),
    );
    let p0 = polls(&b).unwrap();
    eventually(
        Duration::from_secs(30),
        "the polls moving after the restart",
        || polls(&b).is_some_and(|p| p > p0),
    );
    let fresh = b.js(r#"return document.querySelector('[data-panel="collector"]') !== null"#);
    assert_eq!(fresh, json!(true), "the collector panel is back");
    drop(b);
    c.terminate(Duration::from_secs(20));
    rt.block_on(sim.shutdown());
}
