//! The `healthcheck` receiver end to end: the real binary probing real Redis, PostgreSQL,
//! moto (AWS) and loopback HTTP servers; metrics and alert records read back from file
//! exporters, state from `/status`.

mod common;

use common::fakes::{HttpFake, Reply};
use common::stores::{Postgres, Redis};
use common::{attrs, eventually, free_port, logs_in, metrics_in, read_jsonl, BlackHole, Collector};
use serde_json::Value;
use std::time::{Duration, Instant};

const ID: &str = "healthcheck/deps";

/// A collector with `[receivers."healthcheck/deps"]` = `receiver` (its keys and checks),
/// metrics to `metrics.jsonl`, alerts to `alerts.jsonl`.
fn config(service: u16, receiver: &str) -> String {
    format!(
        r#"
[receivers."healthcheck/deps"]
{receiver}

[receivers.alerts]

[exporters."file/metrics"]
path = "metrics.jsonl"
[exporters."file/alerts"]
path = "alerts.jsonl"

[service]
http = "127.0.0.1:{service}"

[service.pipelines.metrics]
receivers = ["healthcheck/deps"]
exporters = ["file/metrics"]

[service.pipelines."logs/alerts"]
receivers = ["alerts"]
exporters = ["file/alerts"]
"#
    )
}

/// The receiver's entry in `/status`.
fn component(c: &Collector) -> Value {
    let status = c.status();
    status["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["id"] == ID && x["kind"] == "receiver")
        .cloned()
        .unwrap_or_else(|| panic!("no receiver {ID} in /status: {status}"))
}

/// The first segment of the receiver's `/status` detail: `HEALTHY (...)` etc.
fn aggregate(c: &Collector) -> String {
    let d = component(c)["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    d.split(' ').next().unwrap_or_default().to_owned()
}

/// The `/status` detail line of one check: `NAME: up|down|pending ...`.
fn check_line(c: &Collector, name: &str) -> String {
    let d = component(c)["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let prefix = format!("{name}: ");
    d.split("; ")
        .skip(1)
        .find(|s| s.starts_with(&prefix))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no check {name} in the detail: {d}"))
}

/// `key=value` of a detail line (values without spaces).
fn field(line: &str, key: &str) -> Option<String> {
    let k = format!(" {key}=");
    let i = line.find(&k)? + k.len();
    Some(line[i..].split(' ').next().unwrap_or_default().to_owned())
}

fn latency_ms(line: &str) -> u64 {
    field(line, "latency")
        .and_then(|l| l.strip_suffix("ms").map(str::to_owned))
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no latency in {line:?}"))
}

/// Every data point of `metric` written so far, as (attributes, value), in order.
fn points(c: &Collector, metric: &str) -> Vec<(serde_json::Map<String, Value>, f64)> {
    let mut out = Vec::new();
    for (_, m) in metrics_in(&read_jsonl(&c.path("metrics.jsonl"))) {
        if m["name"] != metric {
            continue;
        }
        for p in m["gauge"]["dataPoints"].as_array().into_iter().flatten() {
            let v = p
                .get("asDouble")
                .and_then(Value::as_f64)
                .or_else(|| {
                    p.get("asInt").and_then(|i| {
                        i.as_i64()
                            .map(|x| x as f64)
                            .or_else(|| i.as_str().and_then(|s| s.parse().ok()))
                    })
                })
                .unwrap_or(f64::NAN);
            out.push((attrs(&p["attributes"]), v));
        }
    }
    out
}

/// The latest value of `metric` for check `name`.
fn latest(c: &Collector, metric: &str, name: &str) -> Option<f64> {
    points(c, metric)
        .into_iter()
        .rev()
        .find(|(a, _)| a.get("check") == Some(&Value::from(name)))
        .map(|(_, v)| v)
}

fn latest_state(c: &Collector) -> Option<f64> {
    points(c, "healthcheck.state").last().map(|(_, v)| *v)
}

/// Alert records of check `name` in `state` (`firing`, `resolved`).
fn alerts(c: &Collector, name: &str, state: &str) -> Vec<serde_json::Map<String, Value>> {
    logs_in(&read_jsonl(&c.path("alerts.jsonl")))
        .into_iter()
        .map(|(_, r)| {
            let mut a = attrs(&r["attributes"]);
            a.insert("body".into(), r["body"]["stringValue"].clone());
            a
        })
        .filter(|a| {
            a.get("alert.name") == Some(&Value::from("HealthCheckFailing"))
                && a.get("check") == Some(&Value::from(name))
                && a.get("alert.state") == Some(&Value::from(state))
        })
        .collect()
}

fn consecutive_failures(c: &Collector, name: &str) -> u64 {
    field(&check_line(c, name), "consecutive_failures")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

const LONG: Duration = Duration::from_secs(30);

/// Acceptance 1: real Redis (critical) and PostgreSQL (non-critical) pass; stopping each
/// flips its check and the aggregate, raises exactly one alert after 3 failures however
/// long the outage lasts, and restarting it resolves. Passwords appear nowhere.
#[test]
fn redis_and_postgres_outages_flip_state_alert_once_and_resolve() {
    const REDIS_PW: &str = "r3dis-Secret-pw";
    const PG_PW: &str = "pg-Secret-pw-42";
    let mut redis = Redis::start(REDIS_PW);
    let mut pg = Postgres::start("app", PG_PW);
    let service = free_port();
    let receiver = format!(
        r#"interval = "300ms"
timeout = "2s"
alert_after = 3

[[receivers."healthcheck/deps".checks]]
name = "redis"
type = "redis"
url = "{}"
critical = true

[[receivers."healthcheck/deps".checks]]
name = "db"
type = "postgres"
url = "${{DATABASE_URL}}"
critical = false
"#,
        redis.url()
    );
    let c = Collector::start_with_env(
        &config(service, &receiver),
        service,
        &[("DATABASE_URL", &pg.url())],
    );
    let all_up = || {
        latest(&c, "healthcheck.up", "redis") == Some(1.0)
            && latest(&c, "healthcheck.up", "db") == Some(1.0)
    };
    eventually(LONG, "redis and db pass", || {
        all_up() && aggregate(&c) == "HEALTHY"
    });
    assert_eq!(component(&c)["state"], "ok");
    assert_eq!(c.status()["status"], "HEALTHY");
    eventually(LONG, "healthcheck.state 0", || {
        latest_state(&c) == Some(0.0)
    });
    assert!(check_line(&c, "redis").starts_with("redis: up type=redis critical=true"));
    assert!(check_line(&c, "db").starts_with("db: up type=postgres critical=false"));
    for (a, v) in points(&c, "healthcheck.latency") {
        assert!(v > 0.0 && v < 2.0, "latency {v} of {a:?}");
        assert!(a.contains_key("critical") && a.contains_key("type"));
    }

    // Redis (critical) goes away: UNHEALTHY, the receiver failed, one alert.
    redis.stop();
    eventually(LONG, "redis down, aggregate UNHEALTHY", || {
        latest(&c, "healthcheck.up", "redis") == Some(0.0) && aggregate(&c) == "UNHEALTHY"
    });
    let comp = component(&c);
    assert_eq!(comp["state"], "failed", "{comp}");
    assert_eq!(c.status()["status"], "UNHEALTHY");
    assert_eq!(
        common::http_get(c.service, "/status")
            .expect("GET /status")
            .0,
        503
    );
    let err = comp["last_error"]["message"].as_str().unwrap_or_default();
    assert!(err.contains("UNHEALTHY") && err.contains("redis"), "{err}");
    eventually(LONG, "healthcheck.state 2", || {
        latest_state(&c) == Some(2.0)
    });
    // Well past the third failure: still exactly one alert for the run.
    eventually(LONG, "6 consecutive redis failures", || {
        consecutive_failures(&c, "redis") >= 6
    });
    eventually(LONG, "the firing alert arrives", || {
        !alerts(&c, "redis", "firing").is_empty()
    });
    assert!(latest(&c, "healthcheck.consecutive_failures", "redis").unwrap_or(0.0) >= 3.0);
    let line = check_line(&c, "redis");
    assert!(
        line.contains("last_error=\"cannot connect to 127.0.0.1:"),
        "{line}"
    );
    let firing = alerts(&c, "redis", "firing");
    assert_eq!(firing.len(), 1, "one alert per failure run: {firing:?}");
    assert_eq!(firing[0]["alert.severity"], "critical");
    assert_eq!(firing[0]["critical"], "true");
    assert_eq!(firing[0]["type"], "redis");
    assert!(
        firing[0]["body"]
            .as_str()
            .unwrap_or_default()
            .contains("failed 3 times in a row"),
        "{firing:?}"
    );

    // Back: resolved once, HEALTHY again.
    redis.resume();
    eventually(LONG, "redis passes again", || {
        latest(&c, "healthcheck.up", "redis") == Some(1.0) && aggregate(&c) == "HEALTHY"
    });
    eventually(LONG, "a resolved record for redis", || {
        alerts(&c, "redis", "resolved").len() == 1
    });
    let resolved = &alerts(&c, "redis", "resolved")[0];
    assert_eq!(
        resolved["alert.fingerprint"],
        firing[0]["alert.fingerprint"]
    );
    assert_eq!(component(&c)["state"], "ok");
    assert_eq!(alerts(&c, "redis", "firing").len(), 1);

    // PostgreSQL (non-critical) goes away: DEGRADED, a warning.
    pg.stop();
    eventually(LONG, "db down, aggregate DEGRADED", || {
        latest(&c, "healthcheck.up", "db") == Some(0.0) && aggregate(&c) == "DEGRADED"
    });
    assert_eq!(component(&c)["state"], "degraded");
    assert_eq!(c.status()["status"], "DEGRADED");
    eventually(LONG, "healthcheck.state 1", || {
        latest_state(&c) == Some(1.0)
    });
    eventually(LONG, "6 consecutive db failures", || {
        consecutive_failures(&c, "db") >= 6
    });
    eventually(LONG, "the db alert arrives", || {
        !alerts(&c, "db", "firing").is_empty()
    });
    let firing = alerts(&c, "db", "firing");
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0]["alert.severity"], "warning");
    assert_eq!(firing[0]["critical"], "false");
    pg.resume();
    eventually(LONG, "db passes again and resolves", || {
        latest(&c, "healthcheck.up", "db") == Some(1.0)
            && aggregate(&c) == "HEALTHY"
            && alerts(&c, "db", "resolved").len() == 1
    });
    assert_eq!(alerts(&c, "db", "firing").len(), 1);

    // The passwords were never shown.
    let status = c.status().to_string();
    let everything = [
        status.as_str(),
        &c.logs(),
        &std::fs::read_to_string(c.path("alerts.jsonl")).unwrap_or_default(),
        &std::fs::read_to_string(c.path("metrics.jsonl")).unwrap_or_default(),
    ]
    .concat();
    for pw in [REDIS_PW, PG_PW] {
        assert!(!everything.contains(pw), "password {pw} leaked");
    }
    assert!(status.contains("redis://***@127.0.0.1:"), "{status}");
    assert!(status.contains("postgres://***@127.0.0.1:"), "{status}");
}

/// A wrong password: the check fails with an auth reason and the password stays hidden.
#[test]
fn wrong_credentials_fail_clearly_without_showing_them() {
    let redis = Redis::start("right-redis-pw");
    let pg = Postgres::start("app", "right-pg-pw");
    let service = free_port();
    let receiver = format!(
        r#"interval = "300ms"
[[receivers."healthcheck/deps".checks]]
name = "redis"
type = "redis"
url = "redis://:Wrong-Redis-Pw@127.0.0.1:{}"
[[receivers."healthcheck/deps".checks]]
name = "db"
type = "postgres"
url = "postgres://app:Wrong-Pg-Pw@127.0.0.1:{}/postgres"
"#,
        redis.port, pg.port
    );
    let c = Collector::start(&config(service, &receiver), service);
    eventually(LONG, "both checks fail", || {
        latest(&c, "healthcheck.up", "redis") == Some(0.0)
            && latest(&c, "healthcheck.up", "db") == Some(0.0)
    });
    let r = check_line(&c, "redis");
    assert!(r.contains("AUTH refused"), "{r}");
    let d = check_line(&c, "db");
    assert!(d.contains("password authentication failed"), "{d}");
    let everything = [c.status().to_string(), c.logs()].concat();
    assert!(!everything.contains("Wrong-Redis-Pw") && !everything.contains("Wrong-Pg-Pw"));
}

/// Acceptance 2: HTTP failures, each with a clear reason and its latency.
#[test]
fn http_failures_say_why_and_how_long() {
    let fake = HttpFake::start(|req, _| match req.path.as_str() {
        "/ok" => Reply::new(200, r#"{"status":"ok"}"#),
        "/unavailable" => Reply::new(503, "maintenance"),
        "/degraded" => Reply::new(200, "state: degraded"),
        "/json" => Reply::new(200, r#"{"status":"down","db":{"ok":false}}"#),
        _ => Reply::new(404, "no such path"),
    });
    let mut hole = BlackHole::start();
    let refused = free_port();
    let base = fake.base_url();
    let service = free_port();
    let receiver = format!(
        r#"interval = "500ms"
timeout = "3s"

[[receivers."healthcheck/deps".checks]]
name = "api"
type = "http"
url = "{base}/ok"
expect_status = [200]
body_contains = "ok"
json_pointer = "/status"
json_equals = "ok"

[[receivers."healthcheck/deps".checks]]
name = "status_mismatch"
type = "http"
url = "{base}/unavailable"
critical = false

[[receivers."healthcheck/deps".checks]]
name = "body_mismatch"
type = "http"
url = "{base}/degraded"
body_contains = "healthy"
critical = false

[[receivers."healthcheck/deps".checks]]
name = "json_mismatch"
type = "http"
url = "{base}/json"
json_pointer = "/status"
json_equals = "ok"
critical = false

[[receivers."healthcheck/deps".checks]]
name = "never_answers"
type = "http"
url = "http://127.0.0.1:{hole}/health"
timeout = "1s"
critical = false

[[receivers."healthcheck/deps".checks]]
name = "refused"
type = "http"
url = "http://127.0.0.1:{refused}/health"
critical = false

[[receivers."healthcheck/deps".checks]]
name = "tcp_refused"
type = "tcp"
address = "127.0.0.1:{refused}"
critical = false

[[receivers."healthcheck/deps".checks]]
name = "tcp_ok"
type = "tcp"
address = "127.0.0.1:{fake_port}"
"#,
        hole = hole.port,
        fake_port = fake.port()
    );
    let c = Collector::start(&config(service, &receiver), service);
    let failing = [
        "status_mismatch",
        "body_mismatch",
        "json_mismatch",
        "never_answers",
        "refused",
        "tcp_refused",
    ];
    eventually(LONG, "every check ran", || {
        latest(&c, "healthcheck.up", "api") == Some(1.0)
            && latest(&c, "healthcheck.up", "tcp_ok") == Some(1.0)
            && failing
                .iter()
                .all(|n| latest(&c, "healthcheck.up", n) == Some(0.0))
    });
    // Only non-critical checks fail.
    assert_eq!(aggregate(&c), "DEGRADED");
    assert_eq!(component(&c)["state"], "degraded");

    let expect = [
        ("status_mismatch", "HTTP 503, expected a 2xx status"),
        (
            "body_mismatch",
            "HTTP 200 but the body does not contain \"healthy\"",
        ),
        ("json_mismatch", "/status is \"down\", expected \"ok\""),
        ("never_answers", "timeout: no answer within 1s"),
        ("refused", "cannot connect"),
        ("tcp_refused", "cannot connect to 127.0.0.1:"),
    ];
    for (name, reason) in expect {
        let line = check_line(&c, name);
        assert!(line.starts_with(&format!("{name}: down")), "{line}");
        let err = line.split("last_error=").nth(1).unwrap_or_default();
        assert!(err.contains(reason), "{name}: want {reason:?} in {line}");
        latency_ms(&line);
    }
    for name in ["refused", "tcp_refused"] {
        let line = check_line(&c, name);
        assert!(line.contains("refused"), "{line}");
        assert!(latency_ms(&line) < 1000, "{line}");
    }
    // The timeout is the check's own (1 s), not the receiver's 3 s.
    let line = check_line(&c, "never_answers");
    let ms = latency_ms(&line);
    assert!((950..2500).contains(&ms), "{line}");
    let l = latest(&c, "healthcheck.latency", "never_answers").expect("latency metric");
    assert!((0.95..2.5).contains(&l), "latency metric {l}");
    assert!(hole.accepted() >= 1);
    for name in failing {
        let l = latest(&c, "healthcheck.latency", name).expect("latency metric");
        assert!(l > 0.0, "{name}: {l}");
    }
    hole.close();
}

/// An HTTP server that answers every request `200 ok` one second after it arrived, each
/// connection on its own thread (the shared fakes answer under one lock, one at a time).
/// Records when each request arrived.
struct SlowServer {
    port: u16,
    arrivals: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
}

impl SlowServer {
    fn start() -> SlowServer {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = arrivals.clone();
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut writer = sock.try_clone().expect("clone socket");
                    let mut reader = BufReader::new(sock);
                    loop {
                        let mut line = String::new();
                        // Request line and headers (GET: no body).
                        loop {
                            line.clear();
                            match reader.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) if line == "\r\n" => break,
                                Ok(_) => {}
                            }
                        }
                        seen.lock().unwrap().push(Instant::now());
                        std::thread::sleep(Duration::from_secs(1));
                        let reply = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if writer.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        SlowServer { port, arrivals }
    }
}

/// Acceptance 4: 50 checks whose targets each take 1 s finish in about one timeout (5 s
/// here, so that a loaded machine does not turn a slow answer into a failure),
/// concurrently: the server sees all 50 requests within a second of each other, and the
/// round lasts about 1 s, not 50 s.
#[test]
fn fifty_slow_checks_run_concurrently() {
    let slow = SlowServer::start();
    let mut receiver = String::from("interval = \"60s\"\ntimeout = \"5s\"\n");
    for i in 0..50 {
        receiver.push_str(&format!(
            "[[receivers.\"healthcheck/deps\".checks]]\nname = \"slow{i}\"\ntype = \"http\"\nurl = \"http://127.0.0.1:{}/slow/{i}\"\n",
            slow.port
        ));
    }
    let service = free_port();
    let started = Instant::now();
    let c = Collector::start(&config(service, &receiver), service);
    let deadline = Instant::now() + LONG;
    while !(0..50).all(|i| check_line(&c, &format!("slow{i}")).starts_with(&format!("slow{i}: up")))
    {
        assert!(
            Instant::now() < deadline,
            "the 50 checks did not all pass within {LONG:?}: {}",
            component(&c)["detail"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    // Start-up plus one round; 50 checks one after another would take 50 s.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let arrivals = slow.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 50, "one round: one request per check");
    let first = arrivals.iter().min().unwrap();
    let last = arrivals.iter().max().unwrap();
    assert!(
        *last - *first < Duration::from_secs(1),
        "the 50 requests arrived over {:?}: not concurrent",
        *last - *first
    );
    let detail = component(&c)["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let round_ms: u64 = detail
        .split(" took ")
        .nth(1)
        .and_then(|s| s.split("ms").next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no round time in {detail}"));
    assert!(
        (1000..5000).contains(&round_ms),
        "a round of 50 one-second checks took {round_ms} ms"
    );
    for i in 0..50 {
        let ms = latency_ms(&check_line(&c, &format!("slow{i}")));
        assert!((1000..5000).contains(&ms), "slow{i}: {ms} ms");
    }
}

/// Acceptance 3: AWS checks against moto pass for existing resources and fail clearly
/// for missing ones.
#[cfg(feature = "aws")]
#[test]
fn aws_checks_against_moto() {
    use common::moto::Moto;
    let moto = Moto::start();
    let made = moto.boto3(
        r#"
sns = client("sns"); sqs = client("sqs"); s3 = client("s3")
ddb = client("dynamodb"); logs = client("logs")
topic = sns.create_topic(Name="alerts")["TopicArn"]
queue = sqs.create_queue(QueueName="jobs")["QueueUrl"]
s3.create_bucket(Bucket="models")
ddb.create_table(TableName="trades", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
logs.create_log_group(logGroupName="/tradewatch/bots")
logs.create_log_group(logGroupName="/tradewatch/bots-archive")
print(json.dumps({"topic": topic, "queue": queue}))
"#,
        &[],
    );
    let topic = made["topic"].as_str().expect("topic arn");
    let queue = made["queue"].as_str().expect("queue url");
    let missing_queue = queue.replace("/jobs", "/no-such-queue");
    let missing_topic = topic.replace(":alerts", ":no-such-topic");
    let url = moto.url();
    let mut receiver = String::from("interval = \"500ms\"\n");
    let checks = [
        ("sns_ok", "sns", format!("topic_arn = \"{topic}\"")),
        ("sqs_ok", "sqs", format!("queue_url = \"{queue}\"")),
        ("s3_ok", "s3", "bucket = \"models\"".to_owned()),
        ("dynamodb_ok", "dynamodb", "table = \"trades\"".to_owned()),
        (
            "logs_ok",
            "cloudwatch_logs",
            "log_group = \"/tradewatch/bots\"".to_owned(),
        ),
        (
            "sns_missing",
            "sns",
            format!("topic_arn = \"{missing_topic}\""),
        ),
        (
            "sqs_missing",
            "sqs",
            format!("queue_url = \"{missing_queue}\""),
        ),
        ("s3_missing", "s3", "bucket = \"no-such-bucket\"".to_owned()),
        (
            "dynamodb_missing",
            "dynamodb",
            "table = \"no-such-table\"".to_owned(),
        ),
        // A prefix of an existing group is no group.
        (
            "logs_missing",
            "cloudwatch_logs",
            "log_group = \"/tradewatch/bot\"".to_owned(),
        ),
    ];
    for (name, ty, key) in &checks {
        receiver.push_str(&format!(
            "[[receivers.\"healthcheck/deps\".checks]]\nname = \"{name}\"\ntype = \"{ty}\"\n{key}\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\ncritical = {}\n",
            name.ends_with("_ok")
        ));
    }
    let service = free_port();
    let c = Collector::start_with_env(&config(service, &receiver), service, &Moto::env());
    eventually(LONG, "every AWS check ran", || {
        checks
            .iter()
            .all(|(n, _, _)| latest(&c, "healthcheck.up", n).is_some())
    });
    let mut report = String::new();
    for (name, _, _) in &checks {
        report.push_str(&format!("{}\n", check_line(&c, name)));
    }
    for (name, _, _) in checks.iter().filter(|(n, _, _)| n.ends_with("_ok")) {
        assert_eq!(
            latest(&c, "healthcheck.up", name),
            Some(1.0),
            "{name} should pass:\n{report}\nmoto log:\n{}",
            moto.logs()
        );
    }
    let expect = [
        ("sns_missing", "sns GetTopicAttributes"),
        ("sqs_missing", "sqs GetQueueAttributes"),
        ("s3_missing", "s3 HeadBucket \"no-such-bucket\": HTTP 404"),
        ("dynamodb_missing", "ResourceNotFoundException"),
        ("logs_missing", "no log group named \"/tradewatch/bot\""),
    ];
    for (name, reason) in expect {
        assert_eq!(latest(&c, "healthcheck.up", name), Some(0.0), "{report}");
        let line = check_line(&c, name);
        assert!(line.contains(reason), "{name}: want {reason:?}:\n{report}");
    }
    for name in ["sns_missing", "sqs_missing"] {
        let line = check_line(&c, name);
        assert!(
            line.contains("NotFound")
                || line.contains("NonExistent")
                || line.contains("does not exist"),
            "{name} does not say the resource is missing:\n{report}"
        );
    }
    // Only non-critical checks fail.
    assert_eq!(aggregate(&c), "DEGRADED", "{report}");
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        common::repo_root()
            .join("tests/fixtures/freqtrade")
            .join(name),
    )
    .expect("freqtrade fixture")
}

/// `freqtrade` checks: ping only, and ping plus the bot's state (Basic auth) against a
/// fake answering with Freqtrade's recorded responses; a stopped bot fails with its state.
#[test]
fn freqtrade_checks_ping_and_bot_state() {
    let (ping, running, stopped) = (
        fixture("ping.json"),
        fixture("show_config.json"),
        fixture("show_config_stopped.json"),
    );
    // "freqtrader:Ft-Secret-1" in Basic auth.
    const AUTH: &str = "Basic ZnJlcXRyYWRlcjpGdC1TZWNyZXQtMQ==";
    let fake = HttpFake::start(move |req, _| {
        let authorized = req
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("authorization") && v == AUTH);
        match req.path.as_str() {
            "/a/api/v1/ping" | "/b/api/v1/ping" => Reply::new(200, ping.clone()),
            _ if !authorized => Reply::new(401, r#"{"detail":"Unauthorized"}"#),
            "/a/api/v1/show_config" => Reply::new(200, running.clone()),
            "/b/api/v1/show_config" => Reply::new(200, stopped.clone()),
            _ => Reply::new(404, r#"{"detail":"Not Found"}"#),
        }
    });
    let base = fake.base_url();
    let service = free_port();
    let receiver = format!(
        r#"interval = "300ms"
[[receivers."healthcheck/deps".checks]]
name = "ping_only"
type = "freqtrade"
url = "{base}/b"
[[receivers."healthcheck/deps".checks]]
name = "running"
type = "freqtrade"
url = "{base}/a"
username = "freqtrader"
password = "Ft-Secret-1"
auth = "basic"
[[receivers."healthcheck/deps".checks]]
name = "stopped"
type = "freqtrade"
url = "{base}/b"
username = "freqtrader"
password = "Ft-Secret-1"
auth = "basic"
critical = false
"#
    );
    let c = Collector::start(&config(service, &receiver), service);
    eventually(LONG, "the freqtrade checks ran", || {
        latest(&c, "healthcheck.up", "ping_only") == Some(1.0)
            && latest(&c, "healthcheck.up", "running") == Some(1.0)
            && latest(&c, "healthcheck.up", "stopped") == Some(0.0)
    });
    let line = check_line(&c, "stopped");
    assert!(
        line.contains(r#"the bot is "stopped", expected one of ["running"]"#),
        "{line}"
    );
    assert_eq!(aggregate(&c), "DEGRADED");
    assert!(!c.status().to_string().contains("Ft-Secret-1"));
}

/// `critical = false` on the receiver itself: a failing critical check still fails the
/// receiver and makes its aggregate UNHEALTHY, but tradewatch's `/status` stays DEGRADED
/// (200), for a deployment whose readiness must not follow its dependencies.
#[test]
fn a_non_critical_receiver_keeps_the_service_degraded() {
    let refused = free_port();
    let service = free_port();
    let receiver = format!(
        r#"interval = "300ms"
critical = false
[[receivers."healthcheck/deps".checks]]
name = "broker"
type = "tcp"
address = "127.0.0.1:{refused}"
"#
    );
    let c = Collector::start(&config(service, &receiver), service);
    eventually(LONG, "the broker check fails", || {
        latest(&c, "healthcheck.up", "broker") == Some(0.0) && aggregate(&c) == "UNHEALTHY"
    });
    assert_eq!(component(&c)["state"], "failed");
    assert_eq!(component(&c)["critical"], false);
    let (code, body) = common::http_get(c.service, "/status").expect("GET /status");
    assert_eq!(code, 200, "{body}");
    assert_eq!(c.status()["status"], "DEGRADED");
}
