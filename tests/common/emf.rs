//! A validator of CloudWatch Embedded Metric Format events, written from the EMF rules in
//! `API-FACTS.md` (the EMF specification and its JSON schema), independent of the
//! exporter's code: a test runs every emitted line through [`check_event`].

use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

/// The units the EMF schema allows.
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks one log event (one line, without its newline) against the EMF rules; returns
/// the parsed object. `max_bytes` is the event size limit the exporter was given.
pub fn check_event(line: &str, max_bytes: usize) -> Result<Value, String> {
    if line.len() > max_bytes {
        return Err(format!("event of {} bytes is over {max_bytes}", line.len()));
    }
    // Nothing before or after the object.
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not one JSON value: {e}"))?;
    let root = v.as_object().ok_or("the event is not a JSON object")?;
    let aws = root
        .get("_aws")
        .and_then(Value::as_object)
        .ok_or("no _aws object")?;
    let ts = aws
        .get("Timestamp")
        .and_then(Value::as_i64)
        .ok_or("_aws.Timestamp is not an integer (ms since the epoch)")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    if ts < now - 14 * 24 * 3600 * 1000 || ts > now + 2 * 3600 * 1000 {
        return Err(format!(
            "Timestamp {ts} is outside 14 days past / 2 hours ahead"
        ));
    }
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .ok_or("_aws.CloudWatchMetrics is not an array")?;
    if directives.is_empty() {
        return Err("no metric directive".into());
    }
    for d in directives {
        let ns = d["Namespace"].as_str().ok_or("Namespace is not a string")?;
        if ns.is_empty() || ns.len() > 255 || ns.starts_with("AWS/") {
            return Err(format!("bad Namespace {ns:?}"));
        }
        let sets = d["Dimensions"]
            .as_array()
            .ok_or("Dimensions is not an array")?;
        for set in sets {
            let set = set.as_array().ok_or("a DimensionSet is not an array")?;
            if set.len() > 30 {
                return Err(format!(
                    "a DimensionSet has {} keys (at most 30)",
                    set.len()
                ));
            }
            for k in set {
                let k = k.as_str().ok_or("a dimension key is not a string")?;
                match root.get(k) {
                    Some(Value::String(_)) => {}
                    Some(_) => return Err(format!("dimension {k:?} is not a string member")),
                    None => return Err(format!("dimension {k:?} has no top-level member")),
                }
            }
        }
        let metrics = d["Metrics"].as_array().ok_or("Metrics is not an array")?;
        if metrics.is_empty() || metrics.len() > 100 {
            return Err(format!("{} metric definitions (1 to 100)", metrics.len()));
        }
        for m in metrics {
            let name = m["Name"].as_str().ok_or("a MetricDefinition has no Name")?;
            if let Some(u) = m.get("Unit") {
                let u = u.as_str().ok_or("Unit is not a string")?;
                if !UNITS.contains(&u) {
                    return Err(format!("Unit {u:?} is not a CloudWatch unit"));
                }
            }
            if let Some(r) = m.get("StorageResolution") {
                if r != 1 && r != 60 {
                    return Err(format!("StorageResolution {r} (1 or 60)"));
                }
            }
            match root.get(name) {
                Some(Value::Number(_)) => {}
                Some(Value::Array(a)) => {
                    if a.is_empty() || a.len() > 100 {
                        return Err(format!("metric {name:?} has {} values (1 to 100)", a.len()));
                    }
                    if !a.iter().all(Value::is_number) {
                        return Err(format!("metric {name:?} has a value that is not a number"));
                    }
                }
                _ => return Err(format!("metric {name:?} has no numeric top-level member")),
            }
        }
    }
    Ok(v)
}
