//! The `logtail` receiver's line parser: whatever bytes a log file holds, turning a line
//! (or a multiline record) into a log record never panics, ids are lifted only whole
//! (16-byte trace, 8-byte span), and no value under a secret key survives redaction.
//!
//! The first byte picks the options (truncated line or not, default or custom secret
//! keys); the rest is the record's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use std::sync::OnceLock;
use tradewatch::receivers::logtail::parse::{parse_record, Redactor, REDACTED};

fn redactors() -> &'static [Redactor; 2] {
    static R: OnceLock<[Redactor; 2]> = OnceLock::new();
    R.get_or_init(|| {
        [
            Redactor::default_set(),
            Redactor::new(&["pin".to_owned()], &["sk-[A-Za-z0-9]{8,}".to_owned()])
                .expect("valid patterns"),
        ]
    })
}

/// Every value under a secret key (at any depth) is the redaction marker, whole.
fn check_secrets(r: &Redactor, path: &str, v: &AnyValue) {
    if r.is_secret_key(path) {
        assert!(
            matches!(&v.value, Some(any_value::Value::StringValue(s)) if s == REDACTED),
            "{path} kept its value: {v:?}"
        );
        return;
    }
    match &v.value {
        Some(any_value::Value::KvlistValue(l)) => {
            for kv in &l.values {
                if let Some(v) = &kv.value {
                    check_secrets(r, &format!("{path}.{}", kv.key), v);
                }
            }
        }
        Some(any_value::Value::ArrayValue(a)) => {
            for v in &a.values {
                check_secrets(r, path, v);
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&opts, line)) = data.split_first() else {
        return;
    };
    let truncated = opts & 1 == 1;
    let r = &redactors()[(opts >> 1 & 1) as usize];
    let rec = parse_record(line, truncated, 1, r);
    assert!(rec.trace_id.is_empty() || rec.trace_id.len() == 16);
    assert!(rec.span_id.is_empty() || rec.span_id.len() == 8);
    for kv in &rec.attributes {
        if let Some(v) = &kv.value {
            check_secrets(r, &kv.key, v);
        }
    }
});
