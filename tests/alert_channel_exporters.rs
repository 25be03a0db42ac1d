//! The alert channel exporters end to end: the collector runs as a process, takes alert
//! records over OTLP/HTTP (as the `alerts` receiver makes them) and delivers them to
//! loopback fakes of Slack, Telegram and a webhook receiver, and to a real Alertmanager.

mod common;

use common::fakes::{SlackFake, TelegramFake, WebhookFake};
use common::{eventually, free_port, Collector};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use serde_json::Value;
use std::time::{Duration, Instant};
use tradewatch::otlp::attr;
use tradewatch::pipeline::alerts::{alerts_request, Alert, AlertState, Severity};

const HOSTILE: &str = r"_*[]()~`>#+-=|{}.!<&";

fn alert(name: &str, state: AlertState, severity: Severity, summary: &str) -> Alert {
    Alert {
        name: name.into(),
        state,
        severity,
        summary: summary.into(),
        fingerprint: String::new(),
        attributes: vec![
            attr("bot", "main"),
            attr("strategy", "SampleStrategy"),
            attr("value", 12.5),
            attr("threshold", 10.0),
        ],
        trace_id: Some(vec![0x4b; 16]),
        source: "risk".into(),
    }
}

fn with_attrs(mut a: Alert, extra: Vec<KeyValue>) -> Alert {
    a.attributes.extend(extra);
    a
}

/// Posts the alerts as one OTLP/HTTP protobuf request.
fn send(http: u16, alerts: &[Alert]) {
    let body = alerts_request(alerts).encode_to_vec();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{http}/v1/logs"))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .expect("OTLP/HTTP request")
            .status()
    });
    assert_eq!(status.as_u16(), 200, "the collector took the alerts");
}

fn config(http: u16, service: u16, exporters: &str, names: &[&str]) -> String {
    let list: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    format!(
        r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"

{exporters}

[service]
http = "127.0.0.1:{service}"
shutdown_timeout = "2s"

[service.pipelines.logs]
receivers = ["otlp"]
exporters = [{}]
"#,
        list.join(", ")
    )
}

/// No secret in the collector's log or in `/status`.
fn assert_no_secrets(c: &Collector, secrets: &[&str]) {
    let logs = c.logs();
    let status = c.status().to_string();
    for s in secrets {
        assert!(
            !logs.contains(s),
            "secret {s:?} in the collector's log:\n{logs}"
        );
        assert!(!status.contains(s), "secret {s:?} in /status:\n{status}");
    }
}

fn slack_names(m: &Value) -> Vec<String> {
    m["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "header")
        .map(|b| b["text"]["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn rate_limits_are_waited_out_and_every_alert_arrives_once_in_order() {
    let slack = SlackFake::start();
    let telegram = TelegramFake::start();
    slack.rate_limit_requests(0, 1, 2);
    telegram.rate_limit_requests(1, 1, 2);
    let (http, service) = (free_port(), free_port());
    let exporters = format!(
        r#"
[exporters.slack]
webhook_url = "${{SLACK_WEBHOOK_URL}}"
[exporters.telegram]
bot_token = "${{TELEGRAM_BOT_TOKEN}}"
chat_id = -1001234
api_url = "{}"
"#,
        telegram.url()
    );
    let c = Collector::start_with_env(
        &config(http, service, &exporters, &["slack", "telegram"]),
        service,
        &[
            ("SLACK_WEBHOOK_URL", &slack.url()),
            ("TELEGRAM_BOT_TOKEN", &telegram.token),
        ],
    );
    let names: Vec<String> = (0..4).map(|i| format!("Alert{i}")).collect();
    for n in &names {
        send(
            http,
            &[alert(n, AlertState::Firing, Severity::Critical, "x")],
        );
    }
    eventually(Duration::from_secs(30), "4 Slack messages", || {
        slack.messages().len() >= 4
    });
    eventually(Duration::from_secs(30), "4 Telegram messages", || {
        telegram.messages().len() >= 4
    });
    // Nothing more arrives later: no duplicate from a retry.
    std::thread::sleep(Duration::from_millis(500));

    let got: Vec<String> = slack.messages().iter().flat_map(slack_names).collect();
    let want: Vec<String> = names.iter().map(|n| format!("🔴 CRITICAL: {n}")).collect();
    assert_eq!(got, want, "Slack: each alert once, in order");
    let r = slack.received();
    assert_eq!(r[0].status, 429);
    let waited = r[1].request.at - r[0].request.at;
    assert!(
        waited >= Duration::from_secs(2),
        "Slack's retry came {waited:?} after the 429 asking for 2 s"
    );
    assert_eq!(slack_names(&r[1].request.json()), [want[0].clone()]);

    let texts: Vec<String> = telegram.messages().into_iter().map(|m| m.text).collect();
    assert_eq!(texts.len(), 4, "Telegram: no duplicate: {texts:?}");
    for (t, n) in texts.iter().zip(&names) {
        assert!(
            t.starts_with(&format!("🔴 <b>CRITICAL: {n}</b>")),
            "Telegram in order: {t}"
        );
    }
    let r = telegram.received();
    assert_eq!(r[1].status, 429);
    let waited = r[2].request.at - r[1].request.at;
    assert!(
        waited >= Duration::from_secs(2),
        "Telegram's retry came {waited:?} after retry_after = 2"
    );
    let m = &telegram.messages()[0];
    assert_eq!(m.chat_id, -1001234);
    assert_eq!(m.parse_mode.as_deref(), Some("HTML"));
    assert_eq!(m.disable_notification, Some(false));
    assert_no_secrets(&c, &[&slack.path, &telegram.token]);
}

#[test]
fn severity_filter_and_send_resolved() {
    let loud = SlackFake::start();
    let all = WebhookFake::start();
    let (http, service) = (free_port(), free_port());
    let exporters = format!(
        r#"
[exporters."slack/loud"]
webhook_url = "{}"
min_severity = "warning"
send_resolved = false
[exporters."webhook/all"]
url = "{}"
min_severity = "critical"
"#,
        loud.url(),
        all.url()
    );
    let c = Collector::start(
        &config(http, service, &exporters, &["slack/loud", "webhook/all"]),
        service,
    );
    let resolved_critical = with_attrs(
        alert("Drawdown", AlertState::Resolved, Severity::Info, "back"),
        vec![attr("alert.resolves_severity", "critical")],
    );
    for a in [
        alert("Info", AlertState::Firing, Severity::Info, "fyi"),
        alert("Warn", AlertState::Firing, Severity::Warning, "hmm"),
        alert("Drawdown", AlertState::Firing, Severity::Critical, "bad"),
        resolved_critical,
        alert("Warn", AlertState::Resolved, Severity::Info, "ok"),
        alert("Marker", AlertState::Firing, Severity::Critical, "end"),
    ] {
        send(http, &[a]);
    }
    eventually(Duration::from_secs(20), "the marker in Slack", || {
        loud.messages()
            .iter()
            .flat_map(slack_names)
            .any(|n| n.contains("Marker"))
    });
    eventually(Duration::from_secs(20), "the marker at the webhook", || {
        all.messages()
            .iter()
            .any(|m| m["alerts"][0]["labels"]["alertname"] == "Marker")
    });
    let slack: Vec<String> = loud.messages().iter().flat_map(slack_names).collect();
    assert_eq!(
        slack,
        [
            "⚠️ WARNING: Warn",
            "🔴 CRITICAL: Drawdown",
            "🔴 CRITICAL: Marker"
        ],
        "warning and above, no resolved"
    );
    let hook: Vec<(String, String)> = all
        .messages()
        .iter()
        .map(|m| {
            let a = &m["alerts"][0];
            (
                a["labels"]["alertname"].as_str().unwrap().to_owned(),
                a["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let hook: Vec<(&str, &str)> = hook.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        hook,
        [
            ("Drawdown", "firing"),
            ("Drawdown", "resolved"),
            ("Marker", "firing")
        ],
        "critical only, with the recovery of a critical alert"
    );
    assert_no_secrets(&c, &[&loud.path]);
}

#[test]
fn telegram_escapes_hostile_text_and_splits_long_payloads_without_duplicates() {
    let telegram = TelegramFake::start();
    // The second message of the long payload is rate limited once.
    telegram.rate_limit_requests(3, 1, 1);
    let (http, service) = (free_port(), free_port());
    let exporters = format!(
        r#"
[exporters."telegram/html"]
bot_token = "{token}"
chat_id = "@html"
api_url = "{url}"
[exporters."telegram/md"]
bot_token = "{token}"
chat_id = "@md"
api_url = "{url}"
parse_mode = "MarkdownV2"
"#,
        token = telegram.token,
        url = telegram.url()
    );
    let mut c = Collector::start(
        &config(http, service, &exporters, &["telegram/html", "telegram/md"]),
        service,
    );
    send(
        http,
        &[alert(
            HOSTILE,
            AlertState::Firing,
            Severity::Warning,
            HOSTILE,
        )],
    );
    eventually(Duration::from_secs(20), "both hostile messages", || {
        telegram.messages().len() >= 2
    });
    let msgs = telegram.messages();
    let by_chat = |chat: &str| {
        msgs.iter()
            .find(|m| m.chat_id == chat)
            .unwrap_or_else(|| panic!("no message to {chat}"))
            .clone()
    };
    let html = by_chat("@html");
    assert_eq!(html.parse_mode.as_deref(), Some("HTML"));
    let html_escaped = r"_*[]()~`&gt;#+-=|{}.!&lt;&amp;";
    assert_eq!(
        html.text.lines().next().unwrap(),
        format!("⚠️ <b>WARNING: {html_escaped}</b>")
    );
    assert_eq!(html.text.lines().nth(1).unwrap(), html_escaped);
    let md = by_chat("@md");
    assert_eq!(md.parse_mode.as_deref(), Some("MarkdownV2"));
    let md_escaped = r"\_\*\[\]\(\)\~\`\>\#\+\-\=\|\{\}\.\!<&";
    assert_eq!(
        md.text.lines().next().unwrap(),
        format!("⚠️ *WARNING: {md_escaped}*")
    );
    assert_eq!(md.text.lines().nth(1).unwrap(), md_escaped);

    // Requests so far: 2. The long payload goes to telegram/html only (a file of its own
    // would do; the chat tells them apart). Its messages are requests 2, 3 (429), 4...
    let long: Vec<Alert> = (0..6)
        .map(|i| {
            alert(
                &format!("Long{i}"),
                AlertState::Firing,
                Severity::Critical,
                &format!("{i}{}", "&<".repeat(400)),
            )
        })
        .chain([alert(
            "Huge",
            AlertState::Firing,
            Severity::Critical,
            &"<".repeat(10_000),
        )])
        .collect();
    send(http, &long);
    let delivered = |chat: &str| -> Vec<String> {
        telegram
            .messages()
            .into_iter()
            .filter(|m| m.chat_id == chat)
            .map(|m| m.text)
            .collect()
    };
    eventually(
        Duration::from_secs(30),
        "every long alert in both chats",
        || {
            ["@html", "@md"]
                .iter()
                .all(|chat| delivered(chat).iter().any(|t| t.contains("Huge")))
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        telegram.received().iter().any(|r| r.status == 429),
        "a message of the long payload was rate limited"
    );
    assert!(
        telegram.received().iter().all(|r| r.status != 400),
        "no message over 4096 characters or with bad markup"
    );
    for chat in ["@html", "@md"] {
        let texts = delivered(chat);
        assert!(
            texts.len() >= 4,
            "{chat}: split into several: {}",
            texts.len()
        );
        for i in 0..6 {
            let n = texts
                .iter()
                .map(|t| t.matches(&format!("CRITICAL: Long{i}")).count())
                .sum::<usize>();
            assert_eq!(n, 1, "{chat}: Long{i} exactly once");
        }
        let huge: Vec<&String> = texts.iter().filter(|t| t.contains("Huge")).collect();
        assert_eq!(huge.len(), 1, "{chat}: Huge exactly once");
        assert!(huge[0].chars().count() <= 4096);
        assert!(huge[0].contains('…'), "{chat}: the huge alert is cut");
    }
    assert_no_secrets(&c, &[&telegram.token]);
    c.terminate(Duration::from_secs(10));
}

#[test]
fn webhook_posts_alertmanager_v4_payloads() {
    let hook = WebhookFake::start();
    let (http, service) = (free_port(), free_port());
    let exporters = format!(
        r#"
[exporters."webhook/ops"]
url = "{}?token=s3cretQueryToken"
headers = {{ authorization = "Bearer s3cretHeaderToken" }}
external_url = "http://tradewatch.local"
"#,
        hook.url()
    );
    let c = Collector::start(
        &config(http, service, &exporters, &["webhook/ops"]),
        service,
    );
    let firing = with_attrs(
        alert(
            "MaxDrawdownExceeded",
            AlertState::Firing,
            Severity::Critical,
            "drawdown 12.5% > 10%",
        ),
        vec![attr("pair.name", "BTC/USDT")],
    );
    send(http, &[firing]);
    eventually(Duration::from_secs(20), "the firing payload", || {
        !hook.messages().is_empty()
    });
    // Later, so its time differs from the start.
    std::thread::sleep(Duration::from_millis(1100));
    let resolved = with_attrs(
        alert(
            "MaxDrawdownExceeded",
            AlertState::Resolved,
            Severity::Info,
            "recovered",
        ),
        vec![
            attr("pair.name", "BTC/USDT"),
            attr("alert.resolves_severity", "critical"),
        ],
    );
    send(http, &[resolved]);
    eventually(Duration::from_secs(20), "the resolved payload", || {
        hook.messages().len() >= 2
    });
    let r = hook.received();
    let auth = r[0]
        .request
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str());
    assert_eq!(auth, Some("Bearer s3cretHeaderToken"));
    assert!(r[0].request.path.ends_with("?token=s3cretQueryToken"));
    let (f, res) = (&hook.messages()[0], &hook.messages()[1]);
    for p in [f, res] {
        assert_eq!(p["version"], "4");
        assert_eq!(p["receiver"], "webhook/ops");
        assert_eq!(p["externalURL"], "http://tradewatch.local");
        assert_eq!(p["truncatedAlerts"], 0);
        assert_eq!(p["groupLabels"]["alertname"], "MaxDrawdownExceeded");
        assert!(p["groupKey"]
            .as_str()
            .unwrap()
            .contains("MaxDrawdownExceeded"));
        assert_eq!(p["commonLabels"]["bot"], "main");
        assert!(p["commonAnnotations"].is_object());
        let keys: Vec<&str> = p["alerts"][0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "annotations",
                "endsAt",
                "fingerprint",
                "generatorURL",
                "labels",
                "startsAt",
                "status"
            ]
        );
    }
    assert_eq!(f["status"], "firing");
    assert_eq!(res["status"], "resolved");
    let (fa, ra) = (&f["alerts"][0], &res["alerts"][0]);
    assert_eq!(fa["labels"]["alertname"], "MaxDrawdownExceeded");
    assert_eq!(fa["labels"]["severity"], "critical");
    assert_eq!(fa["labels"]["bot"], "main");
    assert_eq!(fa["labels"]["strategy"], "SampleStrategy");
    assert_eq!(
        fa["labels"]["pair_name"], "BTC/USDT",
        "label names sanitised"
    );
    assert!(
        fa["labels"].get("value").is_none(),
        "measured values are not labels"
    );
    assert_eq!(fa["annotations"]["value"], "12.5");
    assert_eq!(fa["annotations"]["threshold"], "10");
    assert_eq!(fa["annotations"]["summary"], "drawdown 12.5% > 10%");
    assert_eq!(fa["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(
        ra["labels"], fa["labels"],
        "the resolved alert has the same identity"
    );
    assert_eq!(ra["startsAt"], fa["startsAt"], "the original startsAt");
    assert_eq!(ra["fingerprint"], fa["fingerprint"]);
    let starts = humantime::parse_rfc3339(fa["startsAt"].as_str().unwrap()).unwrap();
    let ends = humantime::parse_rfc3339(ra["endsAt"].as_str().unwrap()).unwrap();
    assert!(ends.duration_since(starts).unwrap() >= Duration::from_secs(1));
    assert_no_secrets(&c, &["s3cretQueryToken", "s3cretHeaderToken"]);
}

#[test]
fn a_dead_channel_never_delays_a_healthy_one() {
    let healthy = SlackFake::start();
    let telegram = TelegramFake::start();
    let dead = free_port(); // nobody listens: connection refused
    let (http, service) = (free_port(), free_port());
    let exporters = format!(
        r#"
[exporters."slack/dead"]
webhook_url = "http://127.0.0.1:{dead}/services/T0/B0/deadS3cretPath"
[exporters."telegram/dead"]
bot_token = "{token}"
chat_id = 1
api_url = "http://127.0.0.1:{dead}"
[exporters."slack/healthy"]
webhook_url = "{url}"
[exporters.log]
"#,
        token = telegram.token,
        url = healthy.url()
    );
    let c = Collector::start(
        &config(
            http,
            service,
            &exporters,
            &["slack/dead", "telegram/dead", "slack/healthy", "log"],
        ),
        service,
    );
    for i in 0..5 {
        let t0 = Instant::now();
        let name = format!("Broker{i}");
        send(
            http,
            &[alert(
                &name,
                AlertState::Firing,
                Severity::Critical,
                "disconnected",
            )],
        );
        eventually(
            Duration::from_secs(3),
            &format!("{name} reached Slack"),
            || {
                healthy
                    .messages()
                    .iter()
                    .flat_map(slack_names)
                    .any(|n| n.ends_with(&name))
            },
        );
        assert!(t0.elapsed() < Duration::from_secs(3));
    }
    eventually(
        Duration::from_secs(10),
        "the dead channels report errors",
        || {
            let s = c.status().to_string();
            s.contains("connection failed")
        },
    );
    let (_, health) = common::http_get(c.service, "/health").unwrap();
    assert!(
        !health.contains("UNHEALTHY"),
        "channels are not critical: {health}"
    );
    let logs = c.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("ERROR") && l.contains("Broker0") && l.contains("fingerprint")),
        "the log channel wrote the alert at error level:\n{logs}"
    );
    assert_no_secrets(&c, &["deadS3cretPath", &telegram.token]);
}

/// A real Alertmanager (the Debian package `prometheus-alertmanager`, which
/// `scripts/test` installs) on a loopback port, clustering off, routing every alert to
/// a receiver with no integrations.
struct Alertmanager {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    fn start() -> Alertmanager {
        let bin = std::env::var("TRADEWATCH_ALERTMANAGER")
            .unwrap_or_else(|_| "prometheus-alertmanager".into());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: quiet\n  group_wait: 1s\nreceivers:\n  - name: quiet\n",
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let child = std::process::Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the real Alertmanager ({bin}): {e}. Install the Debian package \
                     prometheus-alertmanager (scripts/test does) or set TRADEWATCH_ALERTMANAGER"
                )
            });
        let mut am = Alertmanager { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = am.child.try_wait() {
                panic!(
                    "Alertmanager exited during start-up ({status}):\n{}",
                    am.log()
                );
            }
            if matches!(am.get("/-/ready"), Some((200, _))) {
                return am;
            }
            assert!(
                Instant::now() < deadline,
                "Alertmanager was not ready within 30 s:\n{}",
                am.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        common::http_get(
            std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            path,
        )
        .ok()
    }

    /// The active alerts' label sets.
    fn active(&self) -> Vec<Value> {
        let (code, body) = self.get("/api/v2/alerts").expect("GET /api/v2/alerts");
        assert_eq!(code, 200, "{body}");
        let all: Value = serde_json::from_str(&body).expect("alerts JSON");
        all.as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["status"]["state"] == "active")
            .map(|a| a["labels"].clone())
            .collect()
    }

    fn is_active(&self, alertname: &str) -> bool {
        self.active().iter().any(|l| l["alertname"] == alertname)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn alertmanager_receives_resends_across_a_restart_and_resolves() {
    let am = Alertmanager::start();
    let data = tempfile::tempdir().unwrap();
    let dead = free_port();
    let (http, service) = (free_port(), free_port());
    let text = format!(
        r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"

[exporters.alertmanager]
endpoints = ["http://127.0.0.1:{dead}", "http://127.0.0.1:{am}"]
resolve_timeout = "4s"
resend_interval = "1s"

[service]
http = "127.0.0.1:{service}"
shutdown_timeout = "2s"
data_dir = "{data}"

[service.pipelines.logs]
receivers = ["otlp"]
exporters = ["alertmanager"]
"#,
        am = am.port,
        data = data.path().display()
    );
    let mut c = Collector::start(&text, service);
    send(
        http,
        &[
            alert(
                "MaxDrawdownExceeded",
                AlertState::Firing,
                Severity::Critical,
                "drawdown 12.5% > 10%",
            ),
            alert(
                "PdtApproaching",
                AlertState::Firing,
                Severity::Warning,
                "2 day trades used",
            ),
        ],
    );
    eventually(
        Duration::from_secs(20),
        "the alerts active in Alertmanager",
        || am.is_active("MaxDrawdownExceeded") && am.is_active("PdtApproaching"),
    );
    let labels = am
        .active()
        .into_iter()
        .find(|l| l["alertname"] == "MaxDrawdownExceeded")
        .unwrap();
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["bot"], "main");
    assert_eq!(labels["strategy"], "SampleStrategy");
    assert!(labels.get("value").is_none());

    // Restart: the active set comes back from disk and re-sends go on, so the alerts
    // outlive their 4 s resolve_timeout although nothing raises them again.
    c.terminate(Duration::from_secs(10));
    let cwd = tempfile::tempdir().unwrap();
    let config_path = cwd.path().join("config.toml");
    std::fs::write(&config_path, &text).unwrap();
    let mut c = Collector::spawn(cwd, config_path, service, &[]);
    c.wait_healthy();
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        assert!(
            am.is_active("MaxDrawdownExceeded"),
            "the alert expired after the restart: re-sends stopped\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let resolved = with_attrs(
        alert(
            "MaxDrawdownExceeded",
            AlertState::Resolved,
            Severity::Info,
            "recovered",
        ),
        vec![attr("alert.resolves_severity", "critical")],
    );
    send(http, &[resolved]);
    eventually(
        Duration::from_secs(20),
        "the resolved alert no longer active",
        || !am.is_active("MaxDrawdownExceeded"),
    );
    // Resolved stays resolved (no re-send brings it back); the other is still active.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!am.is_active("MaxDrawdownExceeded"));
    assert!(am.is_active("PdtApproaching"));

    // Escalation: the same alert (same fingerprint) now critical. To Alertmanager that
    // is a new label set; the warning one ends at once instead of lingering.
    send(
        http,
        &[alert(
            "PdtApproaching",
            AlertState::Firing,
            Severity::Critical,
            "3 day trades used",
        )],
    );
    let severities = || -> Vec<String> {
        am.active()
            .iter()
            .filter(|l| l["alertname"] == "PdtApproaching")
            .map(|l| l["severity"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    // Without the ending, the warning would stay active until its resolve_timeout
    // (4 s) after the critical one appeared: the first snapshot that has the critical
    // one must not have the warning one.
    let mut snapshot = Vec::new();
    eventually(
        Duration::from_secs(20),
        "the critical PdtApproaching active",
        || {
            snapshot = severities();
            snapshot.iter().any(|s| s == "critical")
        },
    );
    assert_eq!(
        snapshot,
        ["critical"],
        "the warning label set was not ended"
    );
    c.terminate(Duration::from_secs(10));
}

/// With `storage = "disk"` an alert channel keeps what it has not delivered across a
/// SIGKILL: alerts raised while the webhook receiver is down arrive, in order, once the
/// collector is back and the receiver is up. (A memory queue loses them with the process.)
#[test]
fn alerts_on_a_disk_queue_survive_sigkill() {
    let (http, service, dead) = (free_port(), free_port(), free_port());
    let exporters = |url: &str| {
        format!(
            r#"
[exporters."webhook/ops"]
url = "{url}"
[exporters."webhook/ops".sending_queue]
storage = "disk"
[exporters."webhook/ops".retry_on_failure]
initial_interval = "100ms"
max_interval = "500ms"
"#
        )
    };
    // Answered once the alerts are on disk.
    let cfg = |url: &str| {
        config(http, service, &exporters(url), &["webhook/ops"]).replace(
            "grpc = \"off\"",
            "grpc = \"off\"\nwait_for_delivery = \"queued\"",
        )
    };
    let mut c = Collector::start(&cfg(&format!("http://127.0.0.1:{dead}/hook")), service);
    let names = ["DiskQueueFirst", "DiskQueueSecond", "DiskQueueThird"];
    for n in names {
        send(
            http,
            &[alert(
                n,
                AlertState::Firing,
                Severity::Critical,
                "raised while the receiver is down",
            )],
        );
    }
    c.kill();
    let hook = WebhookFake::start();
    std::fs::write(&c.config_path, cfg(&hook.url())).unwrap();
    c.start_again(&[]);
    eventually(
        Duration::from_secs(30),
        "the three alerts at the webhook",
        || hook.messages().len() >= 3,
    );
    let got: Vec<String> = hook
        .messages()
        .iter()
        .map(|m| {
            m["alerts"][0]["labels"]["alertname"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(got, names, "each alert once, in the order raised");
}
