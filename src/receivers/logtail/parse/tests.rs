use super::*;

fn attr<'a>(r: &'a LogRecord, k: &str) -> Option<&'a any_value::Value> {
    r.attributes
        .iter()
        .find(|a| a.key == k)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn body(r: &LogRecord) -> String {
    match r.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

#[test]
fn timestamps_iso_and_epoch() {
    let t = |v: serde_json::Value| parse_time(&v);
    let want = 1_710_513_135_123_456_000u64;
    assert_eq!(t("2024-03-15T14:32:15.123456Z".into()), Some(want));
    assert_eq!(t("2024-03-15 14:32:15.123456".into()), Some(want));
    assert_eq!(t("2024-03-15T16:32:15.123456+02:00".into()), Some(want));
    assert_eq!(t("2024-03-15T14:32:15,123456Z".into()), Some(want));
    assert_eq!(
        t(1_710_513_135.123456.into()),
        Some(1_710_513_135_123_456_000)
    );
    assert_eq!(
        t(1_710_513_135_123u64.into()),
        Some(1_710_513_135_123_000_000)
    );
    assert_eq!(t("yesterday".into()), None);
    assert_eq!(t("2024-13-15T14:32:15Z".into()), None);
}

#[test]
fn ids_levels_and_flattening() {
    let r = Redactor::default_set();
    let line = br#"{"msg":"m","levelname":"CRITICAL","trace_id":"4bf92f35-77b3-4da6-a3ce-929d0e0e4736","span_id":"zz","extra_json":{"a":{"b":1}},"tags":[1,"x"]}"#;
    let rec = parse_record(line, false, 0, &r);
    assert_eq!(body(&rec), "m");
    assert_eq!(rec.severity_number, SeverityNumber::Fatal as i32);
    assert_eq!(rec.severity_text, "CRITICAL");
    assert_eq!(rec.trace_id.len(), 16, "a UUID is a trace id");
    assert!(rec.span_id.is_empty());
    assert_eq!(
        attr(&rec, "span_id"),
        Some(&any_value::Value::StringValue("zz".into()))
    );
    assert_eq!(
        attr(&rec, "extra_json.a.b"),
        Some(&any_value::Value::IntValue(1))
    );
    assert!(matches!(
        attr(&rec, "tags"),
        Some(any_value::Value::ArrayValue(_))
    ));
    assert_eq!(hex_id("00000000000000000000000000000000", 16), None);
}

#[test]
fn non_objects_and_broken_json_stay_text() {
    let r = Redactor::default_set();
    for line in [&b"[1,2]\n"[..], b"{\"a\":", b"42", b"  {not json}"] {
        let rec = parse_record(line, false, 0, &r);
        assert_eq!(body(&rec), String::from_utf8_lossy(line).trim_end());
    }
}

#[test]
fn secrets_are_redacted_by_key_and_pattern() {
    let r = Redactor::default_set();
    let rec = parse_record(
        br#"{"event":"x","db_password":"p1","nested":{"Api_Key":"k1"},"list":[{"token":"t1"}],"note":"see https://hooks.slack.com/services/A/B/C"}"#,
        false,
        0,
        &r,
    );
    let dump = format!("{rec:?}");
    for s in ["p1", "k1", "t1", "services/A/B/C"] {
        assert!(
            !dump.contains(&format!("\"{s}\"")) && !dump.contains(s),
            "{s} leaked: {dump}"
        );
    }
    let text = parse_record(
        b"user=bob password=hunter2 Authorization: Bearer abc.def",
        false,
        0,
        &r,
    );
    assert_eq!(
        body(&text),
        "user=bob password=[REDACTED] Authorization: [REDACTED]"
    );
}

#[test]
fn any_of_finds_words_ignoring_case() {
    let f = AnyOf::new(&["token".into(), "api_key".into(), "passwd".into()]);
    assert!(f.found_in("X-Auth-TOKEN"));
    assert!(f.found_in("exchange.Api_Key"));
    assert!(f.found_in("passwd"));
    assert!(!f.found_in("passw"));
    assert!(!f.found_in("tokn api-key"));
    assert!(!f.found_in(""));
    assert!(!AnyOf::new(&[]).found_in("anything"));
}

/// Found by the fuzzer (`logtail_parse`): a year past 2554 overflowed the nanoseconds.
#[test]
fn fuzz_regression_a_far_future_timestamp_is_no_time() {
    assert_eq!(parse_time(&"4048-03-15T14:32:15.123456Z".into()), None);
    assert!(parse_time(&"2554-01-01T00:00:00Z".into()).is_some());
    let r = Redactor::default_set();
    let rec = parse_record(
        br#"{"event":"x","timestamp":"4048-03-15T14:32:15Z"}"#,
        false,
        0,
        &r,
    );
    assert_eq!(rec.time_unix_nano, 0);
    assert_eq!(
        attr(&rec, "timestamp"),
        Some(&any_value::Value::StringValue(
            "4048-03-15T14:32:15Z".into()
        ))
    );
}
