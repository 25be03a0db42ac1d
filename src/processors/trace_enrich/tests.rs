use super::*;
use crate::otlp::{attr, get_str, LogsBuilder, MetricsBuilder};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, Exemplar};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const S: &str = "00f067aa0ba902b7";

fn t_bytes() -> Vec<u8> {
    hex_id(T, 16).unwrap()
}

fn spans(job: &str, trace: &[u8]) -> Payload {
    Payload::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "job".into(),
                    trace_id: trace.to_vec(),
                    span_id: vec![7; 8],
                    attributes: vec![attr("job_id", job)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn logs(records: Vec<LogRecord>) -> Payload {
    let mut b = LogsBuilder::new();
    for r in records {
        b.record(r);
    }
    Payload::Logs(b.build())
}

fn rec(body: &str, attrs: Vec<KeyValue>) -> LogRecord {
    crate::otlp::log_record(0u64, SeverityNumber::Info, body, attrs)
}

fn records(p: &Payload) -> Vec<LogRecord> {
    let Payload::Logs(r) = p else { panic!() };
    r.resource_logs
        .iter()
        .flat_map(|rl| rl.scope_logs.iter())
        .flat_map(|sl| sl.log_records.clone())
        .collect()
}

#[test]
fn lifts_ids_from_attributes_bodies_and_resources() {
    let p = TraceEnrich::new(Settings::default());
    let mut batch = logs(vec![
        rec("a", vec![attr("traceId", T), attr("spanId", S)]),
        rec("b", vec![attr("otel.trace_id", T.to_uppercase())]),
        rec(&format!("order filled trace_id={T} span_id={S} ok"), vec![]),
        rec(&format!("{{\"traceId\": \"{T}\"}}"), vec![]),
        rec("c", vec![attr("trace_id", "not-hex")]),
        rec("d", vec![attr("trace_id", "0".repeat(32))]),
        rec(&format!("xtrace_id={T}"), vec![]),
        rec(&format!("trace_id={T}0"), vec![]),
        rec(
            "uuid",
            vec![attr("trace_id", "4bf92f35-77b3-4da6-a3ce-929d0e0e4736")],
        ),
    ]);
    let done = p.enrich(&mut batch);
    let r = records(&batch);
    assert_eq!(r[0].trace_id, t_bytes());
    assert_eq!(r[0].span_id, hex_id(S, 8).unwrap());
    assert_eq!(get_str(&r[0].attributes, "traceId"), Some(T), "kept");
    assert_eq!(r[1].trace_id, t_bytes());
    assert_eq!(r[2].trace_id, t_bytes());
    assert_eq!(r[2].span_id, hex_id(S, 8).unwrap());
    assert_eq!(r[3].trace_id, t_bytes());
    for (i, rec) in r.iter().enumerate().take(8).skip(4) {
        assert!(rec.trace_id.is_empty(), "record {i}");
    }
    assert_eq!(r[8].trace_id, t_bytes());
    assert_eq!(done.lifted, 5);

    // From the resource (a job container's TRACE_ID), but the record's own id wins.
    let mut b = LogsBuilder::new();
    b.resource(&[("trace_id", T)]);
    b.record(rec("from resource", vec![]));
    let mut own = rec("own", vec![]);
    own.trace_id = vec![9; 16];
    b.record(own);
    let mut batch = Payload::Logs(b.build());
    p.enrich(&mut batch);
    let r = records(&batch);
    assert_eq!(r[0].trace_id, t_bytes());
    assert_eq!(r[1].trace_id, vec![9; 16]);
}

#[test]
fn learns_from_spans_and_stamps_logs_metrics_and_alerts() {
    let p = TraceEnrich::new(Settings::default());
    let mut sp = spans("job-42", &t_bytes());
    assert_eq!(p.enrich(&mut sp).learned, 1);
    let mut batch = logs(vec![
        rec("only the key", vec![attr("job_id", "job-42")]),
        rec("other job", vec![attr("job_id", "job-43")]),
        rec("no key", vec![]),
        rec(
            "alert",
            vec![
                attr("event.name", "alert"),
                attr("alert.name", "DrawdownHigh"),
                attr("job_id", "job-42"),
            ],
        ),
    ]);
    assert_eq!(p.enrich(&mut batch).stamped, 2);
    let r = records(&batch);
    assert_eq!(r[0].trace_id, t_bytes());
    assert!(r[1].trace_id.is_empty() && r[2].trace_id.is_empty());
    assert_eq!(r[3].trace_id, t_bytes());

    // A key on the resource counts too; integers are keys as well.
    let mut sp = spans("7", &[5; 16]);
    if let Payload::Traces(t) = &mut sp {
        let span = &mut t.resource_spans[0].scope_spans[0].spans[0];
        span.attributes = vec![attr("run_id", 7i64)];
    }
    p.enrich(&mut sp);
    let mut b = LogsBuilder::new();
    b.resource(&[("run_id", "7")]);
    b.record(rec("x", vec![]));
    let mut batch = Payload::Logs(b.build());
    p.enrich(&mut batch);
    assert_eq!(records(&batch)[0].trace_id, vec![5; 16]);

    // Metric points: a trace_id attribute, and the exemplars' trace ids.
    let mut req = MetricsBuilder::new()
        .gauge("job.progress", "1", "")
        .point(0.5, &[("job_id", "job-42")], 1u64)
        .point(0.7, &[("job_id", "job-99")], 1u64)
        .build();
    if let Some(Data::Gauge(g)) = &mut req.resource_metrics[0].scope_metrics[0].metrics[0].data {
        g.data_points[0].exemplars.push(Exemplar::default());
    }
    let mut m = Payload::Metrics(req);
    assert_eq!(p.enrich(&mut m).stamped, 1);
    let Payload::Metrics(req) = m else { panic!() };
    let Some(Data::Gauge(g)) = &req.resource_metrics[0].scope_metrics[0].metrics[0].data else {
        panic!()
    };
    assert_eq!(get_str(&g.data_points[0].attributes, "trace_id"), Some(T));
    assert_eq!(g.data_points[0].exemplars[0].trace_id, t_bytes());
    assert_eq!(get_str(&g.data_points[1].attributes, "trace_id"), None);
}

#[test]
fn logs_with_both_teach_and_encoded_batches_are_decoded() {
    let p = TraceEnrich::new(Settings::default());
    let mut teach = logs(vec![rec(
        "submitted",
        vec![attr("session_id", "s-1"), attr("trace_id", T)],
    )]);
    p.enrich(&mut teach);
    let req = match logs(vec![rec("later", vec![attr("session_id", "s-1")])]) {
        Payload::Logs(r) => r,
        _ => unreachable!(),
    };
    let mut enc = Payload::from_encoded(Signal::Logs, req.encode_to_vec().into()).unwrap();
    p.enrich(&mut enc);
    assert_eq!(records(&enc)[0].trace_id, t_bytes());
}

#[test]
fn resource_attributes_are_added_when_absent() {
    let p = TraceEnrich::new(Settings {
        resource_attributes: vec![
            ("trace_id".into(), T.into()),
            ("deployment.environment".into(), "prod".into()),
        ],
        ..Settings::default()
    });
    let mut b = LogsBuilder::new();
    b.resource(&[("deployment.environment", "dev")]);
    b.record(rec("x", vec![]));
    let mut batch = Payload::Logs(b.build());
    p.enrich(&mut batch);
    let Payload::Logs(r) = &batch else { panic!() };
    let res = &r.resource_logs[0].resource.as_ref().unwrap().attributes;
    assert_eq!(get_str(res, "deployment.environment"), Some("dev"));
    assert_eq!(get_str(res, "trace_id"), Some(T));
    assert_eq!(records(&batch)[0].trace_id, t_bytes(), "and lifted");
}

/// Acceptance 5: a million distinct keys through the processor leave the table at its
/// bound, the newest keys resolvable and the oldest gone.
#[test]
fn the_table_stays_within_its_bound_under_a_million_keys() {
    const CAP: usize = 10_000;
    let p = TraceEnrich::new(Settings {
        max_entries: CAP,
        ..Settings::default()
    });
    let table = p.table();
    let id = |i: u32| {
        let mut t = [0u8; 16];
        t[..4].copy_from_slice(&i.to_be_bytes());
        t[15] = 1;
        t
    };
    for chunk in 0..1000u32 {
        let mut req = ExportTraceServiceRequest::default();
        let mut ss = ScopeSpans::default();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            ss.spans.push(Span {
                trace_id: id(i).to_vec(),
                attributes: vec![attr("job_id", format!("job-{i}"))],
                ..Default::default()
            });
        }
        req.resource_spans.push(ResourceSpans {
            scope_spans: vec![ss],
            ..Default::default()
        });
        p.enrich(&mut Payload::Traces(req));
        assert!(table.lock().unwrap().len() <= CAP);
    }
    let mut t = table.lock().unwrap();
    assert_eq!(t.len(), CAP);
    assert_eq!(t.cap(), CAP);
    let now = Instant::now();
    let ttl = Duration::from_secs(3600);
    assert_eq!(t.lookup("job_id=job-999999", ttl, now), Some(id(999_999)));
    assert_eq!(t.lookup("job_id=job-990000", ttl, now), Some(id(990_000)));
    assert_eq!(t.lookup("job_id=job-989999", ttl, now), None);
    assert_eq!(t.lookup("job_id=job-0", ttl, now), None);
}

#[test]
fn entries_expire_and_long_keys_are_not_kept() {
    let mut t = Correlations::new(10);
    let now = Instant::now();
    t.learn("job_id=a".into(), [1; 16], now);
    let ttl = Duration::from_secs(60);
    assert_eq!(t.lookup("job_id=a", ttl, now + ttl), Some([1; 16]));
    assert_eq!(t.lookup("job_id=a", ttl, now + ttl * 2), None);
    assert!(t.is_empty(), "an expired entry is dropped when found");

    let p = TraceEnrich::new(Settings {
        max_key_bytes: 32,
        ..Settings::default()
    });
    p.enrich(&mut spans(&"x".repeat(100), &t_bytes()));
    assert!(p.table().lock().unwrap().is_empty());
}

fn parse_text(body: &str) -> Result<Arc<dyn ProcessorConfig>, ConfigError> {
    let text = format!("[processors.trace_enrich]\n{body}");
    let env = |k: &str| (k == "TRACE_ID").then(|| T.to_owned());
    let src = Source::from_text("c.toml".into(), &text, &env).unwrap();
    parse(&src, &ComponentId::parse("trace_enrich").unwrap())
}

#[test]
fn config_errors_are_located() {
    assert!(parse_text("").is_ok());
    assert!(parse_text(
        "resource_attributes = { trace_id = \"${TRACE_ID}\", other = \"${UNSET:-}\" }\nttl = \"1h\""
    )
    .is_ok());
    for (body, line, key, message) in [
        (
            "max_entries = 0",
            2,
            "processors.trace_enrich.max_entries",
            "between 1 and",
        ),
        (
            "ttl = \"0s\"",
            2,
            "processors.trace_enrich.ttl",
            "more than 0s",
        ),
        (
            "correlation_keys = [\"job_id\", \"\"]",
            2,
            "processors.trace_enrich.correlation_keys",
            "empty",
        ),
        (
            "\nresource_attributes = { trace_id = \"nope\" }",
            3,
            "processors.trace_enrich.resource_attributes.trace_id",
            "not a trace id",
        ),
    ] {
        let e = parse_text(body).err().expect(body);
        assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
        assert!(e.message.contains(message), "{e}");
    }
    let e = parse_text("unknown = 1").err().unwrap();
    assert!(e.to_string().contains("unknown"), "{e}");
}

#[test]
fn requests_naming_no_key_stay_encoded() {
    let p = TraceEnrich::new(Settings::default());
    let req = match logs(vec![rec("plain", vec![attr("bot", "main")])]) {
        Payload::Logs(r) => r,
        _ => unreachable!(),
    };
    let mut enc = Payload::from_encoded(Signal::Logs, req.encode_to_vec().into()).unwrap();
    p.enrich(&mut enc);
    assert!(matches!(enc, Payload::Encoded { .. }));
}
