//! The `freqtrade` receiver against fakes of the Freqtrade REST API that serve the
//! recorded responses (`tests/fixtures/freqtrade/`): authentication (JWT refresh,
//! re-login, wrong credentials, Basic), faults (down, hanging, 503, 502, truncated JSON,
//! an unknown field, a null float) and the control handle. The real bot is in
//! `tests/freqtrade_real.rs`.

mod common;

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use common::{eventually, free_port, metric_value, metrics_in, read_jsonl, Collector};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PASSWORD: &str = "Sup3r-Secret-Pa55!";
const USER: &str = "freqtrader";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        common::repo_root()
            .join("tests/fixtures/freqtrade")
            .join(name),
    )
    .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// How a fake bot misbehaves.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Ok,
    /// `/show_config` never answers.
    Hang,
    /// `freqtrade webserver`: trading endpoints answer 503.
    Webserver,
    /// `/count` answers 502 while the bot says it is running.
    Rpc502,
    /// `/status` is cut off mid-JSON.
    Truncated,
    /// `/profit` has a field this receiver has never heard of.
    ExtraField,
    /// `/profit` `profit_factor` is null (inf on the bot's side).
    NullFloat,
}

#[derive(Default)]
struct FakeState {
    password: String,
    /// Lifetime of the access tokens it issues.
    access_ttl: u64,
    access: HashSet<String>,
    refresh: HashSet<String>,
    serial: u64,
    logins: u32,
    refreshes: u32,
    rejected: u32,
    basic_calls: u32,
    /// Older than 2025.4: no `/pause`.
    no_pause: bool,
    posts: Vec<(String, String)>,
}

#[derive(Clone)]
struct Fake {
    mode: Mode,
    st: Arc<Mutex<FakeState>>,
    port: u16,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(kind: &str, exp: u64, serial: u64) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64(&format!(
            r#"{{"identity":{{"u":"freqtrader"}},"exp":{exp},"iat":{},"type":"{kind}","n":{serial}}}"#,
            now()
        ))
    )
}

fn json(status: u16, body: String) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body,
    )
        .into_response()
}

impl Fake {
    /// Serves on a free loopback port from a runtime of its own, for the test's life.
    fn start(mode: Mode) -> Fake {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let fake = Fake {
            mode,
            st: Arc::new(Mutex::new(FakeState {
                password: PASSWORD.into(),
                access_ttl: 900,
                ..Default::default()
            })),
            port: listener.local_addr().unwrap().port(),
        };
        let f = fake.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(
                    move |method: Method, uri: Uri, headers: HeaderMap, body: String| {
                        let f = f.clone();
                        async move { f.handle(method, uri.path(), &headers, body).await }
                    },
                );
                axum::serve(listener, app).await.unwrap();
            });
        });
        fake
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.st.lock().unwrap()
    }

    /// Forgets every access token it issued, as a restarted bot with a new secret would.
    fn revoke_access(&self) {
        self.state().access.clear();
    }

    fn basic_ok(&self, headers: &HeaderMap) -> bool {
        let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some(b) = v.strip_prefix("Basic ") else {
            return false;
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b)
            .unwrap_or_default();
        String::from_utf8_lossy(&raw) == format!("{USER}:{}", self.state().password)
    }

    fn bearer(headers: &HeaderMap) -> Option<&str> {
        headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
    }

    async fn handle(
        &self,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        body: String,
    ) -> Response {
        let Some(ep) = path.strip_prefix("/api/v1/") else {
            return json(404, r#"{"detail":"Not Found"}"#.into());
        };
        if ep == "ping" {
            return json(200, fixture("ping.json"));
        }
        let unauthorized = || json(401, fixture("401.json"));
        match ep {
            "token/login" => {
                if !self.basic_ok(headers) {
                    return json(401, fixture("401_login_bad_password.json"));
                }
                let mut st = self.state();
                st.logins += 1;
                st.serial += 1;
                let (a, r) = (
                    token("access", now() + st.access_ttl, st.serial),
                    token("refresh", now() + 30 * 86400, st.serial),
                );
                st.access.insert(a.clone());
                st.refresh.insert(r.clone());
                return json(
                    200,
                    serde_json::json!({"access_token": a, "refresh_token": r}).to_string(),
                );
            }
            "token/refresh" => {
                let mut st = self.state();
                if !Self::bearer(headers).is_some_and(|t| st.refresh.contains(t)) {
                    st.rejected += 1;
                    return unauthorized();
                }
                st.refreshes += 1;
                st.serial += 1;
                let a = token("access", now() + st.access_ttl, st.serial);
                st.access.insert(a.clone());
                return json(200, serde_json::json!({"access_token": a}).to_string());
            }
            _ => {}
        }
        let basic = self.basic_ok(headers);
        {
            let mut st = self.state();
            let bearer_ok = Self::bearer(headers).is_some_and(|t| st.access.contains(t));
            if basic {
                st.basic_calls += 1;
            } else if !bearer_ok {
                st.rejected += 1;
                return unauthorized();
            }
        }
        if method == Method::POST {
            let mut st = self.state();
            if ep == "pause" && st.no_pause {
                return json(404, r#"{"detail":"Not Found"}"#.into());
            }
            st.posts.push((ep.to_owned(), body));
            let file = match ep {
                "pause" => "pause.json",
                "stopentry" => "stopentry.json",
                "stop" => "stop.json",
                "start" => "start.json",
                "forceexit" => "forceexit.json",
                _ => return json(404, r#"{"detail":"Not Found"}"#.into()),
            };
            return json(200, fixture(file));
        }
        match (self.mode, ep) {
            (Mode::Hang, "show_config") => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                unreachable!()
            }
            (Mode::Webserver, "show_config") => json(200, fixture("show_config_webserver.json")),
            (Mode::Webserver, _) => json(503, fixture("503_profit_webserver_mode.json")),
            (Mode::Rpc502, "count") => json(502, fixture("502_count_when_stopped.json")),
            (Mode::Truncated, "status") => {
                let s = fixture("status.json");
                json(200, s[..s.len() / 2].to_owned())
            }
            (Mode::ExtraField, "profit") => {
                let mut v: serde_json::Value =
                    serde_json::from_str(&fixture("profit.json")).unwrap();
                v["a_field_from_the_future"] = serde_json::json!({"nested": [1, 2]});
                v["profit_closed_coin"] = serde_json::json!(99.5);
                json(200, v.to_string())
            }
            (Mode::NullFloat, "profit") => json(200, fixture("profit_short_no_losing_trades.json")),
            (_, "show_config" | "profit" | "status" | "balance" | "count") => {
                json(200, fixture(&format!("{ep}.json")))
            }
            _ => json(404, r#"{"detail":"Not Found"}"#.into()),
        }
    }
}

/// A config running `receivers` (TOML) into a metrics pipeline with a file exporter.
fn config(service_port: u16, receivers: &str, names: &[&str]) -> String {
    let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        r#"
{receivers}

[exporters.file]
path = "out/metrics.jsonl"

[service]
http = "127.0.0.1:{service_port}"

[service.pipelines.metrics]
receivers = [{}]
exporters = ["file"]
"#,
        list.join(", ")
    )
}

/// Every point of `name` in the file exporter's output: (attributes, value), oldest first.
fn points(c: &Collector, name: &str) -> Vec<(serde_json::Map<String, serde_json::Value>, f64)> {
    let lines = read_jsonl(&c.path("out/metrics.jsonl"));
    let mut out = Vec::new();
    for (_, m) in metrics_in(&lines)
        .into_iter()
        .filter(|(_, m)| m["name"] == name)
    {
        let data = m
            .get("gauge")
            .or_else(|| m.get("sum"))
            .expect("gauge or sum");
        for p in data["dataPoints"].as_array().into_iter().flatten() {
            let v = p
                .get("asDouble")
                .and_then(|v| v.as_f64())
                .or_else(|| {
                    p.get("asInt")
                        .and_then(|v| v.as_str()?.parse().ok().or(v.as_f64()))
                })
                .unwrap_or(f64::NAN);
            out.push((common::attrs(&p["attributes"]), v));
        }
    }
    out
}

/// Values of `name` for one bot, oldest first.
fn bot_values(c: &Collector, name: &str, bot: &str) -> Vec<f64> {
    points(c, name)
        .into_iter()
        .filter(|(a, _)| a["bot"] == bot)
        .map(|(_, v)| v)
        .collect()
}

fn component<'a>(status: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    status["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no component {id} in {status}"))
}

fn sample(c: &Collector, sample: &str) -> f64 {
    metric_value(&c.metrics(), sample).unwrap_or(0.0)
}

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn faults_are_counted_and_never_stop_the_other_bots() {
    let good = Fake::start(Mode::Ok);
    let fakes = [
        ("hang", Fake::start(Mode::Hang)),
        ("ws503", Fake::start(Mode::Webserver)),
        ("rpc502", Fake::start(Mode::Rpc502)),
        ("trunc", Fake::start(Mode::Truncated)),
        ("extra", Fake::start(Mode::ExtraField)),
        ("nullf", Fake::start(Mode::NullFloat)),
    ];
    let down_port = free_port();
    let mut bots = format!(
        "[[receivers.\"freqtrade/fleet\".bots]]\nbot = \"good\"\nurl = \"{}\"\n\
         [[receivers.\"freqtrade/fleet\".bots]]\nbot = \"down\"\nurl = \"http://127.0.0.1:{down_port}\"\n",
        good.url()
    );
    for (name, f) in &fakes {
        bots.push_str(&format!(
            "[[receivers.\"freqtrade/fleet\".bots]]\nbot = \"{name}\"\nurl = \"{}\"\n",
            f.url()
        ));
        // Only the hanging bot gets a short timeout: the others must answer in time
        // even on a busy machine.
        if *name == "hang" {
            bots.push_str("timeout = \"1s\"\n");
        }
    }
    let receivers = format!(
        "[receivers.\"freqtrade/fleet\"]\nusername = \"{USER}\"\npassword = \"${{FT_PASS}}\"\n\
         interval = \"500ms\"\ntimeout = \"5s\"\nmax_concurrent_polls = 4\n{bots}"
    );
    let port = free_port();
    let c = Collector::start_with_env(
        &config(port, &receivers, &["freqtrade/fleet"]),
        port,
        &[("FT_PASS", PASSWORD)],
    );

    let id = "receiver=\"freqtrade/fleet\"";
    for (bot, reason) in [
        ("down", "connect"),
        ("hang", "timeout"),
        ("ws503", "http_503"),
        ("rpc502", "http_502"),
        ("trunc", "decode"),
    ] {
        let s = format!(
            "tradewatch_receiver_poll_failures_total{{{id},bot=\"{bot}\",reason=\"{reason}\"}}"
        );
        eventually(WAIT, &format!("{s} >= 2"), || sample(&c, &s) >= 2.0);
        eventually(WAIT, &format!("{bot} up=0 and failures >= 2"), || {
            bot_values(&c, "freqtrade.up", bot).last() == Some(&0.0)
                && bot_values(&c, "freqtrade.poll.consecutive_failures", bot)
                    .last()
                    .is_some_and(|v| *v >= 2.0)
        });
    }
    // Good, unknown-field and null-float bots keep being polled successfully while the
    // others fail (at least 3 more successful polls each from here).
    let before: Vec<usize> = ["good", "extra", "nullf"]
        .iter()
        .map(|b| {
            bot_values(&c, "freqtrade.up", b)
                .iter()
                .filter(|v| **v == 1.0)
                .count()
        })
        .collect();
    for (bot, n) in ["good", "extra", "nullf"].iter().zip(before) {
        eventually(WAIT, &format!("{bot} keeps succeeding"), || {
            let ups = bot_values(&c, "freqtrade.up", bot);
            ups.iter().filter(|v| **v == 1.0).count() >= n + 3 && ups.iter().all(|v| *v == 1.0)
        });
        assert_eq!(
            sample(
                &c,
                &format!("tradewatch_receiver_consecutive_failures{{{id},bot=\"{bot}\"}}")
            ),
            0.0
        );
    }
    // The unknown field is ignored, the known ones are read.
    assert_eq!(
        bot_values(&c, "freqtrade.profit.realized", "extra").last(),
        Some(&99.5)
    );
    // The null float gives no point (never a zero); the good bot has one.
    assert!(bot_values(&c, "freqtrade.profit_factor", "nullf").is_empty());
    assert!(!bot_values(&c, "freqtrade.profit.realized", "nullf").is_empty());
    assert_eq!(
        bot_values(&c, "freqtrade.profit_factor", "good").last(),
        Some(&1.6513461072034927)
    );

    // /status: degraded (some bots down, not all), each bot in the detail.
    let st = c.status();
    let r = component(&st, "freqtrade/fleet");
    assert_eq!(r["state"], "degraded", "{r}");
    assert_eq!(st["status"], "DEGRADED");
    let detail = r["detail"].as_str().unwrap();
    for bot in [
        "good", "down", "hang", "ws503", "rpc502", "trunc", "extra", "nullf",
    ] {
        assert!(
            detail.contains(&format!("{bot}: last_success=")),
            "{detail}"
        );
    }
    assert!(
        detail.contains("Bot is not in the correct state."),
        "{detail}"
    );
    assert!(detail.contains("no answer within 1s"), "{detail}");
    assert!(detail.contains("bad response from status"), "{detail}");
    assert!(detail.contains("cannot connect"), "{detail}");
    let err = r["last_error"]["message"].as_str().unwrap();
    assert!(err.contains("of 8 bots failing; latest: bot "), "{err}");
    let logs = c.logs();
    assert!(logs.contains("freqtrade poll failed"), "{logs}");
    assert!(!logs.contains(PASSWORD) && !st.to_string().contains(PASSWORD));
}

#[test]
fn jwt_is_refreshed_re_logged_in_and_wrong_credentials_are_reported() {
    // Tokens that live 62 s: within the 60 s refresh margin after 2 s.
    let jwt = Fake::start(Mode::Ok);
    jwt.state().access_ttl = 62;
    let wrong = Fake::start(Mode::Ok);
    wrong.state().password = "another password".into();
    let basic = Fake::start(Mode::Ok);
    let receivers = format!(
        r#"
[receivers."freqtrade/jwt"]
url = "{}"
username = "{USER}"
password = "${{FT_PASS}}"
interval = "500ms"

[receivers."freqtrade/wrong"]
url = "{}/api/v1/"
username = "{USER}"
password = "${{FT_PASS}}"
interval = "500ms"
critical = false

[receivers."freqtrade/basic"]
url = "{}"
username = "{USER}"
password = "${{FT_PASS}}"
auth = "basic"
interval = "500ms"
"#,
        jwt.url(),
        wrong.url(),
        basic.url()
    );
    let port = free_port();
    let c = Collector::start_with_env(
        &config(
            port,
            &receivers,
            &["freqtrade/jwt", "freqtrade/wrong", "freqtrade/basic"],
        ),
        port,
        &[("FT_PASS", PASSWORD)],
    );

    // Refresh before expiry, without logging in again.
    eventually(WAIT, "a refresh", || jwt.state().refreshes >= 2);
    assert_eq!(jwt.state().logins, 1);
    assert_eq!(jwt.state().rejected, 0);
    // A rejected access token: one 401, then a new login, and polls go on.
    jwt.revoke_access();
    eventually(WAIT, "a second login", || jwt.state().logins == 2);
    let ups = bot_values(&c, "freqtrade.up", "jwt").len();
    eventually(WAIT, "polls after the re-login", || {
        let v = bot_values(&c, "freqtrade.up", "jwt");
        v.len() >= ups + 2 && v.iter().all(|u| *u == 1.0)
    });
    // One login for the whole poll, though its calls all met the 401.
    assert_eq!(jwt.state().logins, 2);
    assert_eq!(jwt.state().basic_calls, 0);

    // Basic: credentials on every call, no tokens.
    eventually(WAIT, "basic polls", || {
        bot_values(&c, "freqtrade.up", "basic").last() == Some(&1.0)
    });
    assert_eq!(basic.state().logins, 0);
    assert!(basic.state().basic_calls >= 5);

    // Wrong credentials: a clear error, counted, the receiver failed (not critical: the
    // service is DEGRADED), polling goes on and recovers once the bot accepts them.
    let s = r#"tradewatch_receiver_poll_failures_total{receiver="freqtrade/wrong",bot="wrong",reason="login"}"#;
    eventually(WAIT, "login failures counted", || sample(&c, s) >= 2.0);
    let st = c.status();
    let r = component(&st, "freqtrade/wrong");
    assert_eq!(r["state"], "failed", "{r}");
    assert_eq!(st["status"], "DEGRADED", "{st}");
    let err = r["last_error"]["message"].as_str().unwrap();
    assert!(
        err.contains("login rejected (HTTP 401): check username and password"),
        "{err}"
    );
    assert!(c.logs().contains("login rejected"));
    wrong.state().password = PASSWORD.into();
    eventually(WAIT, "the bot recovers", || {
        bot_values(&c, "freqtrade.up", "wrong").last() == Some(&1.0)
            && component(&c.status(), "freqtrade/wrong")["state"] == "ok"
    });
    assert_eq!(c.status()["status"], "HEALTHY");

    // No secret anywhere: not the password, not a token.
    let logs = c.logs();
    let status = c.status().to_string();
    let metrics = c.metrics();
    for text in [&logs, &status, &metrics] {
        assert!(!text.contains(PASSWORD));
        assert!(!text.contains("eyJ"), "a token leaked");
    }
}

/// The receiver built in-process (as the topology does) with the fake bots: its
/// control handle, under the receiver's id.
fn control_handle(
    receivers: &str,
    id: &str,
    dir: &std::path::Path,
) -> (
    Arc<tradewatch::receivers::freqtrade::BotControlHandle>,
    Box<dyn tradewatch::component::Receiver>,
) {
    use tradewatch::component::{BuildContext, ComponentId, Kind};
    use tradewatch::pipeline::alerts::AlertSink;
    use tradewatch::receivers::freqtrade::BotControlHandle;
    let src =
        tradewatch::config::Source::from_text("test.toml".to_owned(), receivers, &|k: &str| {
            (k == "FT_PASS").then(|| PASSWORD.to_owned())
        })
        .unwrap();
    let cid = ComponentId::parse(id).unwrap();
    let rc = tradewatch::receivers::freqtrade::parse(&src, &cid).unwrap();
    let telemetry = tradewatch::service::health::Telemetry::new();
    let (alerts, rx) = AlertSink::new(8, Default::default());
    let ctx = BuildContext {
        id: cid.clone(),
        health: telemetry.component(Kind::Receiver, &cid, true),
        telemetry: telemetry.clone(),
        state: tradewatch::state::StateDir::new(dir, "receiver", id),
        controls: Default::default(),
        shared_state: Default::default(),
        alerts,
        alert_queue: Arc::new(Mutex::new(Some(rx))),
        shutdown: Default::default(),
        memory: tradewatch::pipeline::memory::MemoryBudget::unlimited(),
    };
    let receiver = rc.build(&ctx).unwrap();
    let handle = ctx
        .controls
        .get::<BotControlHandle>(id)
        .expect("the receiver offers its control handle under its id");
    (handle, receiver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_actions_reach_the_bot_and_failures_are_readable() {
    let new = Fake::start(Mode::Ok);
    let old = Fake::start(Mode::Ok);
    old.state().no_pause = true;
    let down_port = free_port();
    let receivers = format!(
        r#"
[receivers."freqtrade/fleet"]
username = "{USER}"
password = "${{FT_PASS}}"
interval = "200ms"
timeout = "1s"
[[receivers."freqtrade/fleet".bots]]
bot = "new"
url = "{}"
[[receivers."freqtrade/fleet".bots]]
bot = "old"
url = "{}"
[[receivers."freqtrade/fleet".bots]]
bot = "down"
url = "http://127.0.0.1:{down_port}"
"#,
        new.url(),
        old.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let (h, receiver) = control_handle(&receivers, "freqtrade/fleet", dir.path());
    let ctl = &h.0;
    assert_eq!(ctl.bots(), ["down", "new", "old"]);

    // pause: /pause on a current bot, /stopentry on one older than 2025.4.
    assert!(ctl.pause("new").await.unwrap().starts_with("paused"));
    assert!(ctl.pause("old").await.unwrap().starts_with("paused"));
    let posts = |f: &Fake| -> Vec<String> { f.state().posts.iter().map(|p| p.0.clone()).collect() };
    assert_eq!(posts(&new), ["pause"]);
    assert_eq!(posts(&old), ["stopentry"]);
    ctl.stop_entry("new").await.unwrap();
    assert_eq!(ctl.stop("new").await.unwrap(), "stopping trader ...");
    assert_eq!(ctl.start("new").await.unwrap(), "starting trader ...");
    assert_eq!(
        ctl.force_exit("new", 6).await.unwrap(),
        "Created exit order for trade 6."
    );
    assert_eq!(
        posts(&new),
        ["pause", "stopentry", "stop", "start", "forceexit"]
    );
    let body: serde_json::Value =
        serde_json::from_str(&new.state().posts.last().unwrap().1).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"tradeid": "6", "ordertype": "market"})
    );
    let err = ctl.pause("nope").await.unwrap_err().to_string();
    assert!(err.contains("no bot named \"nope\""), "{err}");
    let err = ctl.stop("down").await.unwrap_err().to_string();
    assert!(
        err.contains("cannot connect") && !err.contains(PASSWORD),
        "{err}"
    );

    // Nothing polled yet; the receiver's own unit tests watch the count grow.
    assert_eq!(ctl.consecutive_failures("down"), Some(0));
    assert_eq!(ctl.consecutive_failures("nope"), None);
    drop(receiver);
}
