//! NaN and ±Infinity survive OTLP/JSON (a profit factor with no losing trade is +∞):
//! protobuf over gRPC → the file exporter's line holds the proto3 JSON strings "NaN",
//! "Infinity", "-Infinity" → that line posted back over OTLP/HTTP JSON → forwarded as
//! protobuf to a downstream, which receives exactly the values first sent.

mod common;

use common::{eventually, free_port, Collector};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    metrics_service_client::MetricsServiceClient,
    metrics_service_server::{MetricsService, MetricsServiceServer},
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics,
};
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

struct Capture(Arc<Mutex<Vec<ExportMetricsServiceRequest>>>);

#[tonic::async_trait]
impl MetricsService for Capture {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(req.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn gauge(name: &str, v: f64) -> Metric {
    Metric {
        name: name.into(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                time_unix_nano: 1_700_000_000_000_000_000,
                attributes: vec![
                    KeyValue {
                        key: "bot".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("NaN".into())),
                        }),
                        ..Default::default()
                    },
                    KeyValue {
                        key: "ratio".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::DoubleValue(v)),
                        }),
                        ..Default::default()
                    },
                ],
                value: Some(number_data_point::Value::AsDouble(v)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    }
}

fn request() -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    gauge("profit_factor", f64::INFINITY),
                    gauge("drawdown_ratio", f64::NEG_INFINITY),
                    gauge("sharpe", f64::NAN),
                    gauge("finite", 1.25),
                    Metric {
                        name: "latency".into(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                time_unix_nano: 1_700_000_000_000_000_000,
                                count: 3,
                                sum: Some(f64::INFINITY),
                                bucket_counts: vec![1, 1, 1],
                                explicit_bounds: vec![f64::NEG_INFINITY, 0.5],
                                min: Some(f64::NEG_INFINITY),
                                max: Some(f64::NAN),
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn nan_and_infinities_round_trip_through_otlp_json() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let captured = Arc::new(Mutex::new(Vec::new()));
    let down = free_port();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", down)))
        .expect("bind the downstream");
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(Capture(captured.clone())))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let (grpc, http, service) = (free_port(), free_port(), free_port());
    let c = Collector::start(
        &format!(
            r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "off"

[receivers."otlp/json"]
grpc = "off"
http = "127.0.0.1:{http}"

[exporters.file]
path = "out/metrics.jsonl"

[exporters."otlp/down"]
endpoint = "http://127.0.0.1:{down}"

[service]
http = "127.0.0.1:{service}"

[service.pipelines.metrics]
receivers = ["otlp"]
exporters = ["file"]

[service.pipelines."metrics/relay"]
receivers = ["otlp/json"]
exporters = ["otlp/down"]
"#
        ),
        service,
    );

    let sent = request();
    rt.block_on(async {
        MetricsServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .expect("connect")
            .export(sent.clone())
            .await
            .expect("tradewatch takes the metrics")
    });

    // 1. The file exporter writes the proto3 JSON strings, never null.
    let out = c.path("out/metrics.jsonl");
    eventually(WAIT, "the file exporter wrote the line", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.ends_with('\n'))
    });
    let line = std::fs::read_to_string(&out).expect("read the output");
    let line = line.trim_end();
    for lost in [
        r#""doubleValue":null"#,
        r#""asDouble":null"#,
        r#""sum":null"#,
        r#""min":null"#,
        r#""max":null"#,
        "[null",
        "null]",
    ] {
        assert!(!line.contains(lost), "a value was lost ({lost}): {line}");
    }
    for expected in [
        r#"{"doubleValue":"Infinity"}"#,
        r#"{"doubleValue":"-Infinity"}"#,
        r#"{"doubleValue":"NaN"}"#,
        r#""asDouble":"Infinity""#,
        r#""asDouble":"-Infinity""#,
        r#""asDouble":"NaN""#,
        r#""asDouble":1.25"#,
        r#""sum":"Infinity""#,
        r#""explicitBounds":["-Infinity",0.5]"#,
        r#""min":"-Infinity""#,
        r#""max":"NaN""#,
        r#"{"stringValue":"NaN"}"#,
    ] {
        assert!(line.contains(expected), "no {expected} in {line}");
    }

    // 2. The line, posted back as OTLP/JSON, is accepted.
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{http}/v1/metrics"))
            .header("content-type", "application/json")
            .body(line.to_owned())
            .send()
            .await
            .expect("POST the line")
            .status()
    });
    assert_eq!(status, 200, "the JSON line was refused");

    // 3. The protobuf forwarded downstream holds exactly the values first sent
    // (compared encoded, where NaN equals NaN).
    eventually(WAIT, "the downstream received the relayed request", || {
        !captured.lock().unwrap().is_empty()
    });
    let got = captured.lock().unwrap()[0].clone();
    assert_eq!(
        got.encode_to_vec(),
        sent.encode_to_vec(),
        "sent {sent:?}\nreceived {got:?}"
    );
    let value = |m: &Metric| match &m.data {
        Some(Data::Gauge(g)) => match g.data_points[0].value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            ref other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    let metrics = &got.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(value(&metrics[0]), f64::INFINITY);
    assert_eq!(value(&metrics[1]), f64::NEG_INFINITY);
    assert!(value(&metrics[2]).is_nan());
}
