//! The demo's simulated Freqtrade API (`tradewatch::demo::sim`), driven over loopback
//! with a real HTTP client: its answers have the recorded Freqtrade 2026.9 shapes, its
//! auth behaves like Freqtrade's, its numbers move, and its faults and controls work.

mod common;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tradewatch::demo::sim::{spawn, Faults, SimConfig, SimHandle};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/freqtrade");

fn fixture(name: &str) -> Value {
    let path = format!("{FIXTURES}/{name}.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(&path)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Same keys and JSON types, recursively (int and float are different types; null
/// stands in for a missing scalar, as Freqtrade sends null for absent, inf and NaN values).
/// Array elements are compared with the fixture's first element.
fn same_shape(path: &str, want: &Value, got: &Value, errors: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for k in w.keys().filter(|k| !g.contains_key(*k)) {
                errors.push(format!("{path}.{k}: missing"));
            }
            for k in g.keys().filter(|k| !w.contains_key(*k)) {
                errors.push(format!("{path}.{k}: not in the fixture"));
            }
            for (k, wv) in w {
                if let Some(gv) = g.get(k) {
                    same_shape(&format!("{path}.{k}"), wv, gv, errors);
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            if let Some(first) = w.first() {
                for (i, gv) in g.iter().enumerate() {
                    same_shape(&format!("{path}[{i}]"), first, gv, errors);
                }
            }
        }
        (Value::Null, g) | (g, Value::Null) if !g.is_array() && !g.is_object() => {}
        (w, g) if kind(w) != kind(g) => errors.push(format!(
            "{path}: {} in the fixture, {} served",
            kind(w),
            kind(g)
        )),
        _ => {}
    }
}

async fn json(r: reqwest::Response) -> Value {
    serde_json::from_slice(&r.bytes().await.expect("body")).expect("JSON body")
}

struct Api {
    http: Client,
    base: String,
    token: String,
}

impl Api {
    async fn login(base: String) -> Api {
        let http = Client::new();
        let v = http
            .post(format!("{base}/api/v1/token/login"))
            .basic_auth("freqtrader", Some("demo"))
            .send()
            .await
            .expect("login");
        let v = json(v).await;
        let token = v["access_token"]
            .as_str()
            .expect("access_token")
            .to_string();
        Api { http, base, token }
    }

    async fn call(
        &self,
        method: Method,
        endpoint: &str,
        body: Option<Value>,
    ) -> (StatusCode, String) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1/{endpoint}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        (resp.status(), resp.text().await.expect("body"))
    }

    async fn get(&self, endpoint: &str) -> Value {
        let (status, body) = self.call(Method::GET, endpoint, None).await;
        assert_eq!(status, StatusCode::OK, "GET {endpoint}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }

    async fn post(&self, endpoint: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, body) = self.call(Method::POST, endpoint, body).await;
        (status, serde_json::from_str(&body).expect("JSON"))
    }
}

async fn sim(cfg: SimConfig) -> (String, SimHandle) {
    let (addr, handle) = spawn(cfg).await.expect("spawn simulator");
    (format!("http://{addr}"), handle)
}

fn fast() -> SimConfig {
    SimConfig {
        step: Duration::from_millis(50),
        drawdown_ramp: Duration::from_secs(3),
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_endpoint_has_the_recorded_freqtrade_shape() {
    let (base, handle) = sim(SimConfig::default()).await;
    let api = Api::login(base.clone()).await;
    let mut errors = Vec::new();
    let mut check = |name: &str, got: &Value| same_shape(name, &fixture(name), got, &mut errors);

    let login = json(
        api.http
            .post(format!("{base}/api/v1/token/login"))
            .basic_auth("freqtrader", Some("demo"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    check("token_login", &login);
    let refreshed = json(
        api.http
            .post(format!("{base}/api/v1/token/refresh"))
            .bearer_auth(login["refresh_token"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    check("token_refresh", &refreshed);
    for name in [
        "ping",
        "version",
        "show_config",
        "profit",
        "status",
        "balance",
        "count",
    ] {
        check(name, &api.get(name).await);
    }
    let status = api.get("status").await;
    assert!(
        !status.as_array().unwrap().is_empty(),
        "the demo bot has open trades"
    );
    let trade = status[0]["trade_id"].as_u64().unwrap();
    let (code, v) = api
        .post("forceexit", Some(json!({"tradeid": trade.to_string()})))
        .await;
    assert_eq!(code, StatusCode::OK);
    check("forceexit", &v);
    let (code, v) = api.post("forceexit", Some(json!({"tradeid": "999"}))).await;
    assert_eq!(code, StatusCode::BAD_GATEWAY);
    check("502_forceexit_invalid_trade", &v);
    for (endpoint, name) in [
        ("pause", "pause"),
        ("stopentry", "stopentry"),
        ("start", "start"),
        ("start", "start_already_running"),
        ("stop", "stop"),
        ("stop", "stop_already_stopped"),
        ("pause", "pause_from_stopped"),
    ] {
        let (code, v) = api.post(endpoint, None).await;
        assert_eq!(code, StatusCode::OK, "{endpoint}");
        assert_eq!(
            v,
            fixture(name),
            "POST {endpoint} answers like the recorded {name}"
        );
    }
    api.post("stop", None).await;
    let (code, body) = api.call(Method::GET, "count", None).await;
    assert_eq!(code, StatusCode::BAD_GATEWAY);
    check(
        "502_count_when_stopped",
        &serde_json::from_str(&body).unwrap(),
    );
    assert!(
        errors.is_empty(),
        "shape differences:\n{}",
        errors.join("\n")
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_behaves_like_freqtrade() {
    let (base, handle) = sim(SimConfig::default()).await;
    let http = Client::new();
    let url = |e: &str| format!("{base}/api/v1/{e}");
    let detail = |r: reqwest::Response| async move {
        let code = r.status();
        (code, json(r).await)
    };

    let r = http.get(url("ping")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "ping needs no auth");
    let (code, v) = detail(http.get(url("profit")).send().await.unwrap()).await;
    assert_eq!((code, v), (StatusCode::UNAUTHORIZED, fixture("401")));
    let r = http.post(url("token/login")).send().await.unwrap();
    assert_eq!(
        detail(r).await,
        (
            StatusCode::UNAUTHORIZED,
            fixture("401_login_no_credentials")
        )
    );
    let r = http
        .post(url("token/login"))
        .basic_auth("freqtrader", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        detail(r).await,
        (StatusCode::UNAUTHORIZED, fixture("401_login_bad_password"))
    );
    let r = http
        .get(url("profit"))
        .basic_auth("freqtrader", Some("demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "HTTP Basic works on data endpoints"
    );

    let api = Api::login(base.clone()).await;
    let tokens = json(
        http.post(url("token/login"))
            .basic_auth("freqtrader", Some("demo"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    // The payload is readable like a real JWT's, so a client can refresh before `exp`.
    use base64::Engine;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(api.token.split('.').nth(1).unwrap())
        .unwrap();
    let claims: Value = serde_json::from_slice(&claims).unwrap();
    assert_eq!(claims["type"], "access");
    assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());

    let r = http
        .get(url("profit"))
        .bearer_auth(refresh)
        .send()
        .await
        .unwrap();
    assert_eq!(
        detail(r).await,
        (
            StatusCode::UNAUTHORIZED,
            fixture("401_refresh_token_used_as_access")
        )
    );
    api.get("profit").await;
    handle.expire_access_tokens();
    let (code, body) = api.call(Method::GET, "profit", None).await;
    assert_eq!(
        code,
        StatusCode::UNAUTHORIZED,
        "an expired access token is refused"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        fixture("401_bad_bearer")
    );
    let fresh = json(
        http.post(url("token/refresh"))
            .bearer_auth(refresh)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let again = Api {
        http: http.clone(),
        base: base.clone(),
        token: fresh["access_token"].as_str().unwrap().to_string(),
    };
    again.get("profit").await;
    handle.revoke_tokens();
    let (code, _) = again.call(Method::GET, "profit", None).await;
    assert_eq!(
        code,
        StatusCode::UNAUTHORIZED,
        "a restarted bot forgets its tokens"
    );
    let r = http
        .post(url("token/refresh"))
        .bearer_auth(refresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    Api::login(base).await.get("profit").await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_move_and_the_drawdown_passes_the_default_limit() {
    let (base, handle) = sim(fast()).await;
    let api = Api::login(base).await;
    let first = api.get("profit").await;
    let start_dd = first["current_drawdown"].as_f64().unwrap();
    assert!(
        start_dd < 0.2,
        "the demo starts under the limit: {start_dd}"
    );
    let mut changed = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let p = api.get("profit").await;
        changed |= p["profit_all_coin"] != first["profit_all_coin"];
        let rates: Vec<Value> = api
            .get("status")
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["current_rate"].clone())
            .collect();
        assert!(
            rates.iter().all(Value::is_f64),
            "current_rate is a float: {rates:?}"
        );
        if changed && p["current_drawdown"].as_f64().unwrap() > 0.2 {
            assert!(
                p["closed_trade_count"].as_u64().unwrap()
                    > first["closed_trade_count"].as_u64().unwrap()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "within 60 s (ramp 3 s): profit changed = {changed}, drawdown = {}, rates {rates:?}",
            p["current_drawdown"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_bots_each_with_their_own_tokens_and_faults() {
    let (base, handle) = sim(SimConfig {
        bots: 5,
        port_per_bot: true,
        ..SimConfig::default()
    })
    .await;
    assert_ne!(handle.url(0), base, "bot 0 has its own port");
    let own = Api::login(handle.url(4)).await;
    let via_path = Api::login(format!("{base}/bots/4")).await;
    assert_eq!(
        own.get("show_config").await["bot_name"],
        via_path.get("show_config").await["bot_name"],
        "bot 4's own port and /bots/4 are the same bot"
    );
    let bot0 = Api::login(base.clone()).await;
    let bot3 = Api::login(format!("{base}/bots/3")).await;
    let p0 = bot0.get("profit").await;
    let p3 = bot3.get("profit").await;
    assert_ne!(
        p0["profit_all_coin"], p3["profit_all_coin"],
        "bots walk differently"
    );
    let stolen = Api {
        http: bot3.http.clone(),
        base: format!("{base}/bots/3"),
        token: bot0.token.clone(),
    };
    let (code, _) = stolen.call(Method::GET, "profit", None).await;
    assert_eq!(
        code,
        StatusCode::UNAUTHORIZED,
        "bot 0's token is not valid on bot 3"
    );
    let (code, _) = bot3
        .http
        .get(format!("{base}/bots/9/api/v1/ping"))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(code, StatusCode::NOT_FOUND, "no bot 9");

    handle.set_faults(
        3,
        Faults {
            unavailable: true,
            ..Faults::default()
        },
    );
    let (code, body) = bot3.call(Method::GET, "profit", None).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        fixture("503_profit_webserver_mode")
    );
    bot0.get("profit").await;
    handle.set_faults(
        3,
        Faults {
            truncated: true,
            ..Faults::default()
        },
    );
    let (code, body) = bot3.call(Method::GET, "status", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        serde_json::from_str::<Value>(&body).is_err(),
        "truncated: {body}"
    );
    handle.set_faults(
        3,
        Faults {
            latency: Duration::from_secs(5),
            ..Faults::default()
        },
    );
    let slow = bot3
        .http
        .get(format!("{base}/bots/3/api/v1/ping"))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(
        slow.is_err_and(|e| e.is_timeout()),
        "a hanging bot makes the client time out"
    );
    handle.set_faults(3, Faults::default());
    bot3.get("profit").await;

    let hits = handle.hits();
    assert!(hits.iter().any(|h| h.bot == 3 && h.endpoint == "status"));
    assert!(hits.iter().any(|h| h.bot == 0 && h.endpoint == "profit"));
    assert!(
        hits.windows(2).all(|w| w[0].at <= w[1].at),
        "hits are in arrival order"
    );
    handle.shutdown().await;
}

/// Acceptance 6: the real `tradewatch demo` polls its simulated bot through the
/// freqtrade receiver and ratio_to_percent; the profit moves between polls and the
/// drawdown passes 20% (with a short ramp), which the risk processor turns into a pause
/// and an alert.
#[test]
fn tradewatch_demo_shows_profit_moving_and_the_drawdown_passing_the_limit() {
    use common::{eventually, http_get, metrics_in, read_jsonl};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.jsonl");
    let service = std::net::SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let prometheus = std::net::SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let mut demo = common::Demo::start(
        dir.path(),
        &[
            "--interval".into(),
            "1s".into(),
            "--for".into(),
            "120s".into(),
            "--drawdown-ramp".into(),
            "6s".into(),
            "--service".into(),
            service.to_string(),
            "--out".into(),
            out.display().to_string(),
            "--prometheus".into(),
            prometheus.to_string(),
        ],
    );

    let values = |name: &str| -> Vec<f64> {
        metrics_in(&read_jsonl(&out))
            .iter()
            .filter(|(_, m)| m["name"] == name)
            .flat_map(|(_, m)| {
                m["gauge"]["dataPoints"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|p| p["asDouble"].as_f64())
            .collect()
    };
    eventually(
        Duration::from_secs(90),
        "the total profit changes between polls",
        || {
            let v = values("freqtrade.profit.all");
            v.windows(2).any(|w| w[0] != w[1])
        },
    );
    eventually(
        Duration::from_secs(90),
        "the drawdown passes 20% (converted to percent)",
        || {
            values("freqtrade.drawdown.current.pct")
                .iter()
                .any(|d| *d > 20.0)
        },
    );
    // The risk processor sees the breach: it pauses the simulated bot and its alert
    // reaches the log channel and the file.
    eventually(
        Duration::from_secs(60),
        "the breach alert in the log and the pause done",
        || {
            let text = demo.logs();
            text.contains("MaxDrawdownBreached") && text.contains("risk action done")
        },
    );
    eventually(
        Duration::from_secs(30),
        "the alert record in the --out file",
        || {
            common::logs_in(&read_jsonl(&out))
                .iter()
                .any(|(_, r)| r.to_string().contains("MaxDrawdownBreached"))
        },
    );
    // The bot's metrics are scrapeable (--prometheus).
    eventually(
        Duration::from_secs(30),
        "the drawdown on the prometheus exporter",
        || {
            http_get(prometheus, "/metrics")
                .is_ok_and(|(c, b)| c == 200 && b.contains("freqtrade_drawdown_current_pct{"))
        },
    );
    let (code, body) = http_get(service, "/status").expect("GET /status");
    assert_eq!(code, 200, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert!(
        body.contains("freqtrade/demo"),
        "/status lists the demo receiver: {status}"
    );
    let text = demo.logs();
    assert!(
        text.contains("http://127.0.0.1:"),
        "prints where the bot is:\n{text}"
    );
    assert!(
        text.contains(&format!("http://{service}/status")),
        "prints /status:\n{text}"
    );
    assert!(
        text.contains("debug: "),
        "the debug exporter prints batches:\n{text}"
    );
    assert!(
        !text.contains("password = "),
        "no credentials in the output"
    );
    common::signal(&demo.child, "TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = demo.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "demo did not stop on SIGTERM:\n{}",
            demo.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "demo exits cleanly: {status}\n{}",
        demo.logs()
    );
}
