//! The CloudWatch exporters end to end, against moto (a local AWS) through a recording
//! proxy: `cloudwatch_emf` to a file, stdout and CloudWatch Logs (every line checked by an
//! EMF validator written from the spec; events read back from moto equal what was sent;
//! every PutLogEvents call within the API's limits), `cloudwatch` PutMetricData (the
//! Python OpenTelemetry SDK's metrics read back through GetMetricData; 5,000 points split
//! into requests of at most 1,000), and faults (AWS down then up, refused credentials).

mod common;

use common::aws_proxy::AwsProxy;
use common::emf::check_event;
use common::moto::Moto;
use common::{eventually, free_port, python, Collector};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime};
use tradewatch::otlp::{attr, MetricsBuilder, Temporality};

const MAX_EVENT: usize = 262_144;

fn post_metrics(port: u16, req: &ExportMetricsServiceRequest) {
    let status = common::post_otlp(
        port,
        "metrics",
        "application/x-protobuf",
        req.encode_to_vec(),
    );
    assert_eq!(status, 200, "POST /v1/metrics");
}

/// 250 gauges sharing 40 attributes (one EMF group that must split), and `series`
/// single-metric series (many events: several PutLogEvents calls).
fn wide_and_many(series: usize) -> Vec<ExportMetricsServiceRequest> {
    let t = SystemTime::now();
    let attrs: Vec<_> = (0..40)
        .map(|i| attr(format!("attr{i:02}"), format!("value-{i}")))
        .collect();
    let mut wide = MetricsBuilder::new();
    wide.resource(&[("service.name", "cw-test")]);
    for m in 0..250 {
        wide.gauge(&format!("wide.{m:03}"), "ms", "")
            .point(m as f64 + 0.5, attrs.clone(), t);
    }
    let mut many = MetricsBuilder::new();
    many.resource(&[("service.name", "cw-test")])
        .gauge("many", "By", "");
    for i in 0..series {
        many.point(
            i as i64,
            [
                attr("series", format!("s{i:05}")),
                attr("pad", "x".repeat(120)),
            ],
            t,
        );
    }
    vec![wide.build(), many.build()]
}

/// The metric names and values of EMF events, as (name, values).
fn emf_values(events: &[Value]) -> BTreeMap<String, Vec<f64>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for e in events {
        for m in e["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
        {
            let name = m["Name"].as_str().unwrap();
            let key = if name == "many" {
                format!("many/{}", e["series"].as_str().unwrap())
            } else {
                name.to_string()
            };
            match &e[name] {
                Value::Array(a) => out
                    .entry(key)
                    .or_default()
                    .extend(a.iter().map(|v| v.as_f64().unwrap())),
                v => out.entry(key).or_default().push(v.as_f64().unwrap()),
            }
        }
    }
    out
}

fn read_log_events(moto: &Moto, group: &str, stream: &str) -> Vec<String> {
    let v = moto.boto3(
        r#"
logs = client("logs")
group, stream = sys.argv[1], sys.argv[2]
out, token = [], None
try:
    while True:
        kw = dict(logGroupName=group, logStreamName=stream, startFromHead=True)
        if token:
            kw["nextToken"] = token
        r = logs.get_log_events(**kw)
        out += [e["message"] for e in r["events"]]
        if not r["events"] or r.get("nextForwardToken") == token:
            break
        token = r["nextForwardToken"]
except logs.exceptions.ResourceNotFoundException:
    pass
print(json.dumps(out))
"#,
        &[group, stream],
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn emf_to_a_file_stdout_and_cloudwatch_logs_within_every_limit() {
    let moto = Moto::start();
    let proxy = AwsProxy::start(moto.port);
    let (http, service) = (free_port(), free_port());
    let config = format!(
        r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"

[exporters."cloudwatch_emf/file"]
destination = "file"
path = "emf.jsonl"
namespace = "tradewatch/test"

[exporters."cloudwatch_emf/stdout"]
namespace = "tradewatch/test"

[exporters."cloudwatch_emf/logs"]
destination = "cloudwatch_logs"
endpoint_url = "{proxy}"
region = "us-east-1"
log_group = "/tradewatch/emf-test"
log_stream = "collector-1"
namespace = "tradewatch/test"

[service]
http = "127.0.0.1:{service}"

[service.pipelines.metrics]
receivers = ["otlp"]
exporters = ["cloudwatch_emf/file", "cloudwatch_emf/stdout", "cloudwatch_emf/logs"]
"#,
        proxy = proxy.url()
    );
    let c = Collector::start_with_env(&config, service, &Moto::env());
    const SERIES: usize = 12_000;
    for req in wide_and_many(SERIES) {
        post_metrics(http, &req);
    }
    let want_metrics = 250 + SERIES;
    let file = c.path("emf.jsonl");
    // Complete lines only: a poll can catch the exporter in the middle of a write.
    let parse_all = |text: &str| -> Vec<Value> {
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .map(|l| {
                check_event(l, MAX_EVENT).unwrap_or_else(|e| panic!("invalid EMF ({e}): {l:.300}"))
            })
            .collect()
    };
    eventually(
        Duration::from_secs(180),
        "every metric in the EMF file",
        || {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            emf_values(&parse_all(&text)).len() == want_metrics
        },
    );
    let file_text = std::fs::read_to_string(&file).unwrap();
    let file_events = parse_all(&file_text);
    let values = emf_values(&file_events);
    for m in 0..250 {
        assert_eq!(values[&format!("wide.{m:03}")], [m as f64 + 0.5]);
    }
    assert_eq!(values["many/s00042"], [42.0]);
    // The 250 wide metrics: 3 events of at most 100 metrics, 30 of the 40 attributes
    // (and service.name) offered as dimensions: the set holds 30 keys.
    let wide: Vec<&Value> = file_events
        .iter()
        .filter(|e| e.get("attr00").is_some())
        .collect();
    assert_eq!(wide.len(), 3, "250 metrics split into 3 events");
    for e in &wide {
        assert_eq!(
            e["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
                .as_array()
                .unwrap()
                .len(),
            30
        );
        assert_eq!(
            e["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "tradewatch/test"
        );
        assert_eq!(
            e["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"],
            "Milliseconds"
        );
    }

    // stdout: the same events, each line valid.
    eventually(Duration::from_secs(30), "every metric on stdout", || {
        emf_values(&parse_all(&c.stdout())).len() == want_metrics
    });
    let mut stdout_lines: Vec<String> = c.stdout().lines().map(str::to_string).collect();
    let mut file_lines: Vec<String> = file_text.lines().map(str::to_string).collect();
    stdout_lines.sort();
    file_lines.sort();
    assert_eq!(stdout_lines, file_lines);

    // CloudWatch Logs: read back from moto, equal to what was written to the file.
    eventually(
        Duration::from_secs(180),
        "every event in CloudWatch Logs",
        || read_log_events(&moto, "/tradewatch/emf-test", "collector-1").len() >= file_lines.len(),
    );
    let mut stored = read_log_events(&moto, "/tradewatch/emf-test", "collector-1");
    stored.sort();
    assert_eq!(
        stored, file_lines,
        "the events moto stored differ from those written"
    );

    // What the client sent: every PutLogEvents call within the limits.
    let calls = proxy.calls("PutLogEvents");
    assert!(
        calls.len() >= 3,
        "{} PutLogEvents calls for {} events",
        calls.len(),
        file_lines.len()
    );
    let mut events_sent = 0;
    for call in &calls {
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        let events = body["logEvents"].as_array().unwrap();
        assert!(
            !events.is_empty() && events.len() <= 10_000,
            "{} events in a call",
            events.len()
        );
        let bytes: usize = events
            .iter()
            .map(|e| e["message"].as_str().unwrap().len() + 26)
            .sum();
        assert!(bytes <= 1_048_576, "a PutLogEvents call of {bytes} bytes");
        let times: Vec<i64> = events
            .iter()
            .map(|e| e["timestamp"].as_i64().unwrap())
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "events out of time order"
        );
        assert!(times.last().unwrap() - times[0] <= 24 * 3600 * 1000);
        assert!(
            call.headers
                .iter()
                .any(|(k, v)| k == "x-amzn-logs-format" && v == "json/emf"),
            "no x-amzn-logs-format header"
        );
        events_sent += events.len();
    }
    assert_eq!(
        events_sent,
        file_lines.len(),
        "events sent more than once or not at all"
    );
    assert_eq!(proxy.calls("CreateLogGroup").len(), 1);
    assert_eq!(proxy.calls("CreateLogStream").len(), 1);
}

/// Sums per (metric name, dimensions) of namespace `ns` in moto, through ListMetrics and
/// GetMetricData (statistic `stat`).
fn metric_sums(moto: &Moto, ns: &str, stat: &str) -> BTreeMap<String, f64> {
    let v = moto.boto3(
        r#"
import datetime
cw = client("cloudwatch")
ns, stat = sys.argv[1], sys.argv[2]
metrics, seen = [], set()
for page in cw.get_paginator("list_metrics").paginate(Namespace=ns):
    for m in page["Metrics"]:
        # moto lists a metric once per datum put; CloudWatch lists it once.
        key = (m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m.get("Dimensions", []))))
        if key not in seen:
            seen.add(key)
            metrics.append(m)
now = datetime.datetime.now(datetime.timezone.utc)
out = {}
for i in range(0, len(metrics), 100):
    chunk = metrics[i:i + 100]
    q = [{"Id": "m%d" % j, "MetricStat": {"Metric": m, "Period": 60, "Stat": stat}, "ReturnData": True}
         for j, m in enumerate(chunk)]
    r = cw.get_metric_data(MetricDataQueries=q, StartTime=now - datetime.timedelta(hours=1),
                           EndTime=now + datetime.timedelta(hours=1))
    for res in r["MetricDataResults"]:
        m = chunk[int(res["Id"][1:])]
        dims = ",".join(sorted("%s=%s" % (d["Name"], d["Value"]) for d in m.get("Dimensions", [])))
        key = m["MetricName"] + "{" + dims + "}"
        out[key] = out.get(key, 0) + sum(res["Values"])
print(json.dumps(out))
"#,
        &[ns, stat],
    );
    serde_json::from_value(v).unwrap()
}

fn cloudwatch_config(http: u16, service: u16, endpoint: &str, extra: &str) -> String {
    cloudwatch_config_to(http, service, endpoint, extra, r#""cloudwatch""#)
}

fn cloudwatch_config_to(
    http: u16,
    service: u16,
    endpoint: &str,
    extra: &str,
    exporters: &str,
) -> String {
    format!(
        r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"

[exporters.cloudwatch]
endpoint_url = "{endpoint}"
region = "us-east-1"
namespace = "tradewatch/test"
namespace_from_resource = false
timeout = "60s"
{extra}

[service]
http = "127.0.0.1:{service}"

[service.pipelines.metrics]
receivers = ["otlp"]
exporters = [{exporters}]
"#
    )
}

#[test]
fn put_metric_data_reads_back_the_sdk_sums_and_splits_5000_points() {
    let moto = Moto::start();
    let proxy = AwsProxy::start(moto.port);
    let (http, service) = (free_port(), free_port());
    let c = Collector::start_with_env(
        &cloudwatch_config(http, service, &proxy.url(), ""),
        service,
        &Moto::env(),
    );
    // The Python OpenTelemetry SDK: counter, up-down counter, histogram, gauge.
    let dir = tempfile::tempdir().unwrap();
    let manifest_path = dir.path().join("manifest.json");
    let r = Command::new(python())
        .arg(common::repo_root().join("tests/peers/otel_client.py"))
        .args([
            "--protocol",
            "http",
            "--endpoint",
            &format!("http://127.0.0.1:{http}"),
            "--metrics",
        ])
        .args(["--spans", "0", "--logs", "0", "--service-name", "cw-peer"])
        .arg("--out")
        .arg(&manifest_path)
        .output()
        .expect("run the Python OpenTelemetry client");
    assert!(
        r.status.success(),
        "the SDK client failed:\n{}\n{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let sent = |name: &str, field: &str| -> f64 {
        manifest["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["name"] == name)
            .flat_map(|m| m["datapoints"].as_array().unwrap())
            .map(|p| p[field].as_f64().unwrap_or(0.0))
            .sum()
    };
    let total = |sums: &BTreeMap<String, f64>, name: &str| -> f64 {
        sums.iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    };
    let orders = sent("tradewatch.test.orders", "value");
    assert!(orders > 0.0);
    eventually(
        Duration::from_secs(180),
        "the SDK's counter in CloudWatch",
        || {
            total(
                &metric_sums(&moto, "tradewatch/test", "Sum"),
                "tradewatch.test.orders",
            ) == orders
        },
    );
    let sums = metric_sums(&moto, "tradewatch/test", "Sum");
    // The first cumulative sample is not dropped: the sums equal what the SDK counted.
    assert_eq!(total(&sums, "tradewatch.test.orders"), orders);
    assert_eq!(
        total(&sums, "tradewatch.test.open_positions"),
        sent("tradewatch.test.open_positions", "value")
    );
    assert_eq!(
        total(&sums, "tradewatch.test.balance"),
        sent("tradewatch.test.balance", "value")
    );
    let counts = metric_sums(&moto, "tradewatch/test", "SampleCount");
    assert_eq!(
        total(&counts, "tradewatch.test.order_latency"),
        sent("tradewatch.test.order_latency", "count")
    );
    let latency_sum = total(&sums, "tradewatch.test.order_latency");
    let want = sent("tradewatch.test.order_latency", "sum");
    assert!(
        (latency_sum - want).abs() < 1e-6 * want.abs().max(1.0),
        "{latency_sum} vs {want}"
    );

    // 5,000 points of one gauge, each its own series: requests of at most 1,000. What the
    // client sends is what is checked; the proxy answers for CloudWatch (moto takes seconds
    // per request of 1,000 data).
    proxy.accept_metric_data_here(true);
    let before = proxy.calls("PutMetricData").len();
    let t = SystemTime::now();
    let mut b = MetricsBuilder::new();
    b.resource(&[("service.name", "bulk")])
        .gauge("bulk.level", "%", "");
    for i in 0..5000 {
        b.point(i as f64, [attr("series", format!("s{i:04}"))], t);
    }
    post_metrics(http, &b.build());
    let data = |body: &[u8]| -> BTreeMap<String, String> {
        String::from_utf8_lossy(body)
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let datum_count = |body: &[u8]| -> usize {
        data(body)
            .keys()
            .filter(|k| k.starts_with("MetricData.member.") && k.ends_with(".MetricName"))
            .count()
    };
    eventually(Duration::from_secs(120), "5,000 bulk points sent", || {
        proxy.calls("PutMetricData")[before..]
            .iter()
            .map(|r| datum_count(&r.body))
            .sum::<usize>()
            >= 5000
    });
    let calls = proxy.calls("PutMetricData");
    let bulk: Vec<usize> = calls[before..]
        .iter()
        .map(|r| datum_count(&r.body))
        .collect();
    let answered: Vec<u16> = proxy
        .calls_answered("PutMetricData")
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| *s != 200)
        .collect();
    assert!(answered.is_empty(), "refused calls: {answered:?}");
    assert!(bulk.iter().all(|n| *n <= 1000), "{bulk:?}");
    assert_eq!(bulk.iter().sum::<usize>(), 5000, "{bulk:?}");
    assert!(calls.iter().all(|r| r.body.len() <= 1_000_000));
    // Each series once, with its value.
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for r in &calls[before..] {
        let d = data(&r.body);
        for (k, name) in &d {
            let Some(prefix) = k.strip_suffix(".MetricName") else {
                continue;
            };
            assert_eq!(name, "bulk.level");
            assert_eq!(d[&format!("{prefix}.Unit")], "Percent");
            let series = (1..=2)
                .map(|j| {
                    (
                        &d[&format!("{prefix}.Dimensions.member.{j}.Name")],
                        &d[&format!("{prefix}.Dimensions.member.{j}.Value")],
                    )
                })
                .find(|(n, _)| *n == "series")
                .map(|(_, v)| v.clone())
                .expect("a series dimension");
            let old = values.insert(series, d[&format!("{prefix}.Value")].clone());
            assert!(old.is_none(), "a series sent twice");
        }
    }
    assert_eq!(values.len(), 5000);
    assert_eq!(values["s1234"], "1234.0");
    drop(c);
}

#[test]
fn aws_down_then_up_loses_nothing_and_refused_credentials_are_reported_without_secrets() {
    // AWS unreachable: nothing listens on the endpoint's port yet.
    let port = free_port();
    let (http, service) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{port}");
    let extra = format!(
        r#"
[exporters.cloudwatch.retry_on_failure]
initial_interval = "200ms"
max_interval = "1s"
max_elapsed_time = "5m"

[exporters."cloudwatch_emf/logs"]
destination = "cloudwatch_logs"
endpoint_url = "{endpoint}"
region = "us-east-1"
log_group = "/tradewatch/outage"
namespace = "tradewatch/test"
[exporters."cloudwatch_emf/logs".retry_on_failure]
initial_interval = "200ms"
max_interval = "1s"
max_elapsed_time = "5m"
"#
    );
    let c = Collector::start_with_env(
        &cloudwatch_config_to(
            http,
            service,
            &endpoint,
            &extra,
            r#""cloudwatch", "cloudwatch_emf/logs""#,
        ),
        service,
        &Moto::env(),
    );
    let t0 = SystemTime::now() - Duration::from_secs(30);
    for i in 0..10u64 {
        let mut b = MetricsBuilder::new();
        b.resource(&[("service.name", "outage")])
            .sum("fills", "{fill}", "", Temporality::Delta, true)
            .point(
                i as i64 + 1,
                [attr("pair", "BTC/USDT")],
                t0 + Duration::from_secs(i),
            );
        post_metrics(http, &b.build());
    }
    eventually(Duration::from_secs(30), "the exporter retrying", || {
        c.metrics().lines().any(|l| {
            l.starts_with("tradewatch_exporter_retries")
                && l.contains("cloudwatch")
                && !l.ends_with(" 0")
        })
    });
    // AWS comes back on the same port.
    let moto = Moto::start_on(port);
    eventually(Duration::from_secs(180), "every fill in CloudWatch", || {
        let sums = metric_sums(&moto, "tradewatch/test", "Sum");
        sums.get("fills{pair=BTC/USDT,service.name=outage}")
            .copied()
            == Some(55.0)
    });
    // The EMF events too: one per point, each once.
    eventually(
        Duration::from_secs(180),
        "every EMF event in CloudWatch Logs",
        || read_log_events(&moto, "/tradewatch/outage", "tradewatch").len() >= 10,
    );
    let events: Vec<Value> = read_log_events(&moto, "/tradewatch/outage", "tradewatch")
        .iter()
        .map(|l| check_event(l, MAX_EVENT).unwrap())
        .collect();
    let fills: Vec<f64> = events
        .iter()
        .map(|e| e["fills"].as_f64().unwrap())
        .collect();
    assert_eq!(fills, (1..=10).map(f64::from).collect::<Vec<_>>());

    // Refused credentials: a clear error in /status, the secret nowhere.
    let proxy = AwsProxy::start(moto.port);
    proxy.deny_credentials(true);
    let (http2, service2) = (free_port(), free_port());
    const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
    let mut env = Moto::env();
    env.retain(|(k, _)| *k != "AWS_SECRET_ACCESS_KEY");
    env.push(("AWS_SECRET_ACCESS_KEY", SECRET));
    let c2 = Collector::start_with_env(
        &cloudwatch_config(http2, service2, &proxy.url(), ""),
        service2,
        &env,
    );
    let mut b = MetricsBuilder::new();
    b.gauge("g", "", "")
        .point(1, [attr("a", "1")], SystemTime::now());
    post_metrics(http2, &b.build());
    eventually(Duration::from_secs(30), "the refusal in /status", || {
        c2.status().to_string().contains("InvalidClientTokenId")
    });
    let status = c2.status().to_string();
    assert!(status.contains("PutMetricData refused"), "{status}");
    eventually(
        Duration::from_secs(10),
        "the refused batch counted as failed",
        || {
            c2.metrics().lines().any(|l| {
                l.starts_with("tradewatch_exporter_send_failed_items")
                    && l.contains("cloudwatch")
                    && l.ends_with(" 1")
            })
        },
    );
    for text in [status, c2.logs(), c2.metrics(), c2.stdout()] {
        assert!(!text.contains(SECRET), "the secret key leaked");
    }
    assert!(proxy
        .calls_answered("PutMetricData")
        .iter()
        .all(|(_, status)| *status == 403));
}
