use super::*;
use crate::otlp::{attr, get_attr, get_str, LogsBuilder, MetricsBuilder};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

fn parse_text(body: &str) -> Result<Arc<dyn ProcessorConfig>, ConfigError> {
    let text = format!("[processors.\"attributes/x\"]\n{body}");
    let src = Source::from_text("c.toml".into(), &text, &|_| None).unwrap();
    parse(&src, &ComponentId::parse("attributes/x").unwrap())
}

fn settings(actions: Vec<Action>, drop: Vec<Rule>) -> Settings {
    Settings {
        actions: actions.into(),
        drop: drop.into(),
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

#[test]
fn every_action_on_an_attribute_list() {
    let st = settings(
        vec![
            Action::Insert {
                key: "env".into(),
                value: s("prod"),
            },
            Action::Insert {
                key: "bot".into(),
                value: s("never"),
            },
            Action::Update {
                key: "bot".into(),
                value: s("main"),
            },
            Action::Update {
                key: "absent".into(),
                value: s("x"),
            },
            Action::Upsert {
                key: "region".into(),
                value: any_value::Value::IntValue(3),
            },
            Action::Delete {
                key: "password".into(),
            },
            Action::Hash {
                key: "email".into(),
            },
        ],
        vec![],
    );
    let mut a = vec![
        attr("bot", "old"),
        attr("password", "hunter2"),
        attr("email", "bob@example.com"),
        attr("password", "again"),
    ];
    st.edit(&mut a);
    assert_eq!(get_str(&a, "env"), Some("prod"));
    assert_eq!(get_str(&a, "bot"), Some("main"));
    assert_eq!(get_attr(&a, "absent"), None);
    assert_eq!(get_attr(&a, "region"), Some(&any_value::Value::IntValue(3)));
    assert_eq!(get_attr(&a, "password"), None);
    // sha256("bob@example.com")
    assert_eq!(
        get_str(&a, "email"),
        Some("5ff860bf1190596c7188ab851db691f0f3169c453936e9e1eba2f9a47f7a0018")
    );
    assert_eq!(
        sha256_hex(""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn drops_records_spans_and_points_and_empties() {
    let st = settings(
        vec![],
        vec![
            Rule::Equals {
                key: "level".into(),
                text: "debug".into(),
            },
            Rule::Exists {
                key: "healthcheck".into(),
                exists: true,
            },
            Rule::Matches {
                key: "http.target".into(),
                re: regex_lite::Regex::new("^/health").unwrap(),
            },
        ],
    );
    let mut b = LogsBuilder::new();
    b.log(0u64, SeverityNumber::Info, "a", &[("level", "debug")]);
    b.log(0u64, SeverityNumber::Info, "b", &[("level", "info")]);
    b.log(
        0u64,
        SeverityNumber::Info,
        "c",
        &[("http.target", "/healthz")],
    );
    let mut logs = Payload::Logs(b.build());
    assert_eq!(st.apply(&mut logs), 2);
    assert_eq!(logs.items(), 1);

    let mut spans = Payload::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    attributes: vec![attr("healthcheck", true)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    });
    assert_eq!(st.apply(&mut spans), 1);
    assert!(spans.is_empty(), "empty scopes and resources go");

    let mut m = Payload::Metrics(
        MetricsBuilder::new()
            .gauge("up", "1", "")
            .point(1, &[("level", "debug")], 1u64)
            .gauge("lat", "s", "")
            .point(0.5, &[("http.target", "/api")], 1u64)
            .point(0.7, &[("http.target", "/health")], 1u64)
            .build(),
    );
    assert_eq!(st.apply(&mut m), 2);
    let Payload::Metrics(r) = &m else { panic!() };
    let names: Vec<&str> = r.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["lat"]);
    assert_eq!(m.items(), 1);
}

#[test]
fn a_batch_dropped_whole_counts_as_delivered() {
    let mut p = Attributes {
        s: settings(
            vec![],
            vec![Rule::Equals {
                key: "level".into(),
                text: "debug".into(),
            }],
        ),
        dropped: Counter::default(),
        undecodable: Counter::default(),
    };
    let mut b = LogsBuilder::new();
    b.log(0u64, SeverityNumber::Info, "a", &[("level", "debug")]);
    let (ack, waiter) = crate::pipeline::Ack::new();
    let mut out = Vec::new();
    p.process(Batch::with_ack(Payload::Logs(b.build()), ack), &mut out);
    assert!(out.is_empty());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(waiter.wait()),
        crate::pipeline::Delivery::Delivered
    );
    assert_eq!(p.dropped.get(), 1);
}

#[test]
fn config_errors_are_located() {
    assert!(parse_text(
        "actions = [\n  { key = \"a\", action = \"hash\" },\n  { key = \"b\", value = 1, action = \"update\" },\n]\ndrop = [\n  { key = \"x\", matches = '^a' },\n  { key = \"y\", exists = false },\n  { key = \"z\", equals = 3 },\n]"
    )
    .is_ok());
    assert!(parse_text("").is_ok(), "nothing to do is no mistake");
    for (body, line, key, message) in [
        (
            "actions = [\n  { key = \"a\", action = \"hash\" },\n  { key = \"b\", action = \"rename\" },\n]",
            4,
            "processors.\"attributes/x\".actions[1].action",
            "unknown action \"rename\"",
        ),
        (
            "actions = [\n  { key = \"a\", value = \"x\", action = \"hash\" },\n]",
            3,
            "processors.\"attributes/x\".actions[0].value",
            "hash takes no value",
        ),
        (
            "actions = [\n  { key = \"a\", action = \"update\" },\n]",
            3,
            "processors.\"attributes/x\".actions[0].value",
            "update needs a value",
        ),
        (
            "drop = [\n  { key = \"a\", matches = '(' },\n]",
            3,
            "processors.\"attributes/x\".drop[0].matches",
            "invalid regular expression",
        ),
        (
            "drop = [\n  { key = \"a\", exists = true, equals = 1 },\n]",
            3,
            "processors.\"attributes/x\".drop[0].key",
            "exactly one of",
        ),
    ] {
        let e = parse_text(body).err().expect(body);
        assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
        assert!(e.message.contains(message), "{e}");
    }
}
