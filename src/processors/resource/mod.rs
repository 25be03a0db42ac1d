//! `resource`: inserts, upserts and deletes resource attributes on every signal, as a
//! gateway stamps `deployment.environment` or `service.namespace` on what it relays.
//!
//! ```toml
//! [processors.resource]
//! attributes = [
//!   { key = "deployment.environment", value = "${ENV:-prod}", action = "upsert" },
//!   { key = "service.namespace", value = "trading", action = "insert" },
//!   { key = "internal.debug", action = "delete" },
//! ]
//! ```
//!
//! Actions apply in order to each resource: `insert` adds the attribute only when it
//! is absent, `upsert` sets it whether or not it is there, `delete` removes it. A
//! resource-level message without a resource gets one when something is inserted.
//!
//! Data that arrived encoded stays encoded: only each small `Resource` message is
//! decoded and re-encoded ([`crate::otlp::resource_wire`]); spans, points and records
//! are copied as bytes, so the edit costs a copy of the request, not a decode and an
//! encode of every item.

use crate::component::{BuildContext, BuildError, ComponentId, Kind, Signal};
use crate::component::{Processor, ProcessorConfig};
use crate::config::{component_config, quote_key, ConfigError, Source};
use crate::otlp::resource_wire::edit_resources;
use crate::otlp::{insert_attr, remove_attr, set_attr, AttrValue};
use crate::pipeline::{Batch, Payload};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::Deserialize;
use std::sync::Arc;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    attributes: Vec<Spanned<RawAction>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    key: String,
    #[serde(default)]
    value: Option<RawValue>,
    action: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawValue {
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
}

/// One edit of a resource's attributes.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Adds the attribute when the resource does not have it.
    Insert {
        key: String,
        value: any_value::Value,
    },
    /// Sets the attribute, replacing any value it had.
    Upsert {
        key: String,
        value: any_value::Value,
    },
    /// Removes the attribute.
    Delete { key: String },
}

#[derive(Debug, Clone)]
pub struct ResourceConfig {
    pub actions: Arc<[Action]>,
}

pub fn parse(src: &Source, id: &ComponentId) -> Result<Arc<dyn ProcessorConfig>, ConfigError> {
    let raw: RawConfig = component_config(src, Kind::Processor, id)?;
    if raw.attributes.is_empty() {
        return Err(src.component_error(
            Kind::Processor,
            id,
            &["attributes"],
            "attributes is empty: list at least one { key, value, action }".into(),
        ));
    }
    let mut actions = Vec::with_capacity(raw.attributes.len());
    for (i, a) in raw.attributes.into_iter().enumerate() {
        let span = a.span();
        let a = a.into_inner();
        let err = |field: &str, message: String| {
            let key = format!(
                "{}.{}.attributes[{i}].{field}",
                Kind::Processor.table(),
                quote_key(id.as_str())
            );
            src.error_span_key(span.clone(), key, message)
        };
        if a.key.is_empty() {
            return Err(err(
                "key",
                "key is empty: name the resource attribute".into(),
            ));
        }
        let value = a.value.map(|v| match v {
            RawValue::Bool(b) => AttrValue::from(b).0,
            RawValue::Int(n) => AttrValue::from(n).0,
            RawValue::Double(d) => AttrValue::from(d).0,
            RawValue::Str(s) => AttrValue::from(s).0,
        });
        let action = match (a.action.as_str(), value) {
            ("delete", None) => Action::Delete { key: a.key },
            ("delete", Some(_)) => {
                return Err(err(
                    "value",
                    "delete takes no value: remove `value` or use action \"upsert\"".into(),
                ))
            }
            ("insert" | "upsert", None) => {
                return Err(err(
                    "value",
                    format!("{} needs a value: add `value = ...`", a.action),
                ))
            }
            ("insert", Some(value)) => Action::Insert { key: a.key, value },
            ("upsert", Some(value)) => Action::Upsert { key: a.key, value },
            (other, _) => {
                return Err(err(
                    "action",
                    format!("unknown action {other:?} (known actions: insert, upsert, delete)"),
                ))
            }
        };
        actions.push(action);
    }
    Ok(Arc::new(ResourceConfig {
        actions: actions.into(),
    }))
}

impl ProcessorConfig for ResourceConfig {
    fn build(
        &self,
        _signal: Signal,
        _ctx: &BuildContext,
    ) -> Result<Box<dyn Processor>, BuildError> {
        Ok(Box::new(ResourceProcessor {
            actions: self.actions.clone(),
        }))
    }
}

pub struct ResourceProcessor {
    actions: Arc<[Action]>,
}

impl ResourceProcessor {
    pub fn new(actions: Vec<Action>) -> ResourceProcessor {
        ResourceProcessor {
            actions: actions.into(),
        }
    }

    /// Applies every action to one resource; returns whether anything changed.
    pub fn apply(&self, resource: &mut Option<Resource>) -> bool {
        let mut changed = false;
        for a in self.actions.iter() {
            match a {
                Action::Insert { key, value } => {
                    let attrs = &mut resource.get_or_insert_with(Resource::default).attributes;
                    changed |= insert_attr(attrs, key, value.clone());
                }
                Action::Upsert { key, value } => {
                    let attrs = &mut resource.get_or_insert_with(Resource::default).attributes;
                    // Already so (once): leave the bytes alone.
                    let mut same = attrs.iter().filter(|kv| kv.key == *key);
                    let unchanged = same.next().is_some_and(|kv| {
                        kv.value.as_ref().and_then(|v| v.value.as_ref()) == Some(value)
                    }) && same.next().is_none();
                    if !unchanged {
                        set_attr(attrs, key, value.clone());
                        changed = true;
                    }
                }
                Action::Delete { key } => {
                    if let Some(r) = resource {
                        changed |= remove_attr(&mut r.attributes, key).is_some();
                    }
                }
            }
        }
        changed
    }

    /// Edits every resource of the payload, at the wire level when it is encoded.
    pub fn edit(&self, payload: &mut Payload) {
        match payload {
            Payload::Encoded { bytes, .. } => match edit_resources(bytes, |r| self.apply(r)) {
                Ok(Some(edited)) => *bytes = edited.into(),
                Ok(None) => {}
                Err(e) => {
                    // Unreachable for bytes that passed the wire scanner; decoding
                    // then refuses them the same way.
                    tracing::warn!(error = %e, "resource: walking the request failed; decoding it");
                    if payload.make_decoded().is_ok() {
                        self.edit(payload);
                    }
                }
            },
            Payload::Traces(r) => r.resource_spans.iter_mut().for_each(|rs| {
                self.apply(&mut rs.resource);
            }),
            Payload::Metrics(r) => r.resource_metrics.iter_mut().for_each(|rm| {
                self.apply(&mut rm.resource);
            }),
            Payload::Logs(r) => r.resource_logs.iter_mut().for_each(|rl| {
                self.apply(&mut rl.resource);
            }),
        }
    }
}

impl Processor for ResourceProcessor {
    fn process(&mut self, mut batch: Batch, out: &mut Vec<Batch>) {
        self.edit(&mut batch.payload);
        out.push(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{attr, get_attr, wire};
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        metric::Data, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    const KEYS: [&str; 4] = [
        "deployment.environment",
        "service.namespace",
        "internal.debug",
        "service.name",
    ];

    fn resource(rng: &mut Rng) -> Option<Resource> {
        match rng.below(5) {
            0 => None,
            1 => Some(Resource::default()),
            _ => Some(Resource {
                attributes: (0..rng.below(5))
                    .map(|i| attr(KEYS[rng.below(4) as usize], format!("v{i}")))
                    .collect(),
                dropped_attributes_count: rng.below(2) as u32,
                ..Default::default()
            }),
        }
    }

    /// Encodes one resource-level message by hand: its resource split over two fields
    /// (which prost merges) and written after the scopes, plus an unknown field.
    fn unusual(resource: &Option<Resource>, rest: &[u8]) -> Vec<u8> {
        let mut body = rest.to_vec();
        body.extend_from_slice(&[0xf8, 0x06, 0x01]); // field 111, varint 1
        if let Some(r) = resource {
            let (a, b) = r.attributes.split_at(r.attributes.len() / 2);
            for part in [a, b] {
                let part = Resource {
                    attributes: part.to_vec(),
                    ..r.clone()
                };
                body.push(0x0a);
                prost::encode_length_delimiter(part.encoded_len(), &mut body).unwrap();
                part.encode_raw(&mut body);
            }
        }
        let mut out = vec![0x0a];
        prost::encode_length_delimiter(body.len(), &mut out).unwrap();
        out.extend(body);
        out
    }

    /// A random request of `signal`, encoded, some resource-level messages unusually.
    fn request(signal: Signal, rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..rng.below(4) {
            let res = resource(rng);
            let n_scopes = rng.below(3);
            let schema_url = if rng.below(3) == 0 { "https://s" } else { "" }.to_owned();
            let mut items = || (0..rng.below(4)).collect::<Vec<_>>();
            let mut enc = match signal {
                Signal::Traces => ResourceSpans {
                    resource: None,
                    scope_spans: (0..n_scopes)
                        .map(|_| ScopeSpans {
                            spans: items()
                                .into_iter()
                                .map(|i| Span {
                                    name: format!("s{i}"),
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    schema_url,
                }
                .encode_to_vec(),
                Signal::Metrics => ResourceMetrics {
                    resource: None,
                    scope_metrics: (0..n_scopes)
                        .map(|_| ScopeMetrics {
                            metrics: vec![Metric {
                                name: "m".into(),
                                data: Some(Data::Gauge(Gauge {
                                    data_points: items()
                                        .into_iter()
                                        .map(|i| NumberDataPoint {
                                            time_unix_nano: i,
                                            ..Default::default()
                                        })
                                        .collect(),
                                })),
                                ..Default::default()
                            }],
                            ..Default::default()
                        })
                        .collect(),
                    schema_url,
                }
                .encode_to_vec(),
                Signal::Logs => ResourceLogs {
                    resource: None,
                    scope_logs: (0..n_scopes)
                        .map(|_| ScopeLogs {
                            log_records: items()
                                .into_iter()
                                .map(|i| LogRecord {
                                    time_unix_nano: i,
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    schema_url,
                }
                .encode_to_vec(),
            };
            if rng.below(4) == 0 {
                out.extend(unusual(&res, &enc));
            } else {
                // The usual layout, as prost writes it: resource first.
                let mut body = Vec::new();
                if let Some(r) = &res {
                    body.push(0x0a);
                    prost::encode_length_delimiter(r.encoded_len(), &mut body).unwrap();
                    r.encode_raw(&mut body);
                }
                body.append(&mut enc);
                out.push(0x0a);
                prost::encode_length_delimiter(body.len(), &mut out).unwrap();
                out.extend(body);
            }
        }
        out
    }

    fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    fn action_sets() -> Vec<Vec<Action>> {
        let insert = |k: &str, v| Action::Insert {
            key: k.into(),
            value: v,
        };
        let upsert = |k: &str, v| Action::Upsert {
            key: k.into(),
            value: v,
        };
        let delete = |k: &str| Action::Delete { key: k.into() };
        vec![
            vec![insert("service.namespace", s("trading"))],
            vec![upsert("deployment.environment", s("prod"))],
            vec![upsert("deployment.environment", s("v0"))],
            vec![delete("internal.debug")],
            vec![delete("no.such.key")],
            vec![
                upsert("deployment.environment", s("prod")),
                insert("service.namespace", s("trading")),
                delete("internal.debug"),
                upsert("replicas", any_value::Value::IntValue(3)),
                insert("ratio", any_value::Value::DoubleValue(0.5)),
                insert("canary", any_value::Value::BoolValue(false)),
            ],
        ]
    }

    fn decode(signal: Signal, b: &[u8]) -> Payload {
        let mut p = Payload::Encoded {
            signal,
            bytes: b.to_vec().into(),
            items: 0,
        };
        p.make_decoded().unwrap();
        p
    }

    /// The wire-level edit gives what decode, edit, encode gives, on many requests.
    #[test]
    fn wire_edit_equals_decoded_edit() {
        let mut rng = Rng(0x9e3779b97f4a7c15);
        let mut rewritten = 0;
        for actions in action_sets() {
            let p = ResourceProcessor::new(actions);
            for signal in Signal::ALL {
                for _ in 0..150 {
                    let bytes = request(signal, &mut rng);
                    let mut encoded = Payload::from_encoded(signal, bytes.clone().into()).unwrap();
                    let items = encoded.items();
                    p.edit(&mut encoded);
                    let Payload::Encoded { bytes: out, .. } = &encoded else {
                        panic!("stays encoded")
                    };
                    if out.as_ref() != bytes.as_slice() {
                        rewritten += 1;
                    }
                    // Still valid, same items.
                    let again = Payload::from_encoded(signal, out.clone()).unwrap();
                    assert_eq!(again.items(), items);

                    let mut expected = decode(signal, &bytes);
                    p.edit(&mut expected);
                    let expected = decode(signal, &expected.to_bytes());
                    assert_eq!(decode(signal, out), expected, "{signal:?} {bytes:02x?}");
                }
            }
        }
        assert!(rewritten > 1000, "{rewritten}");
    }

    #[test]
    fn nothing_to_change_keeps_the_bytes() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![attr("service.namespace", "x")],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        };
        let bytes = req.encode_to_vec();
        let p = ResourceProcessor::new(vec![
            Action::Insert {
                key: "service.namespace".into(),
                value: s("trading"),
            },
            Action::Delete {
                key: "absent".into(),
            },
        ]);
        assert_eq!(edit_resources(&bytes, |r| p.apply(r)), Ok(None));
        assert!(edit_resources(b"\x0a\x05\x0a", |_| true).is_err());
    }

    #[test]
    fn decoded_payloads_are_edited_in_place() {
        let p = ResourceProcessor::new(action_sets().pop().unwrap());
        let mut metrics = Payload::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics::default()],
        });
        let mut logs = Payload::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![attr("internal.debug", true), attr("service.namespace", "a")],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        });
        let mut out = Vec::new();
        let mut proc = ResourceProcessor::new(p.actions.to_vec());
        proc.process(Batch::new(metrics.clone()), &mut out);
        p.edit(&mut metrics);
        p.edit(&mut logs);
        assert_eq!(out[0].payload, metrics);
        let Payload::Logs(l) = logs else { panic!() };
        let attrs: &[KeyValue] = &l.resource_logs[0].resource.as_ref().unwrap().attributes;
        assert_eq!(get_attr(attrs, "service.namespace"), Some(&s("a")));
        assert_eq!(get_attr(attrs, "internal.debug"), None);
        assert_eq!(get_attr(attrs, "deployment.environment"), Some(&s("prod")));
        assert_eq!(
            get_attr(attrs, "replicas"),
            Some(&any_value::Value::IntValue(3))
        );
        assert!(wire::scan_logs(&l.encode_to_vec()).is_ok());
    }

    fn parse_text(body: &str) -> Result<Arc<dyn ProcessorConfig>, ConfigError> {
        let text = format!("[processors.resource]\n{body}");
        let src = Source::from_text("c.toml".into(), &text, &|_| None).unwrap();
        parse(&src, &ComponentId::parse("resource").unwrap())
    }

    #[test]
    fn config_errors_are_located() {
        let ok = "attributes = [\n  { key = \"a\", value = \"x\", action = \"insert\" },\n  \
                  { key = \"b\", value = 3, action = \"upsert\" },\n  \
                  { key = \"c\", value = true, action = \"upsert\" },\n  \
                  { key = \"d\", value = 0.5, action = \"upsert\" },\n  \
                  { key = \"e\", action = \"delete\" },\n]";
        assert!(parse_text(ok).is_ok());
        for (body, line, key, message) in [
            (
                "attributes = [\n  { key = \"a\", value = \"x\", action = \"insert\" },\n  { key = \"b\", value = \"x\", action = \"add\" },\n]",
                4,
                "processors.resource.attributes[1].action",
                "unknown action \"add\"",
            ),
            (
                "attributes = [\n  { key = \"a\", action = \"upsert\" },\n]",
                3,
                "processors.resource.attributes[0].value",
                "upsert needs a value",
            ),
            (
                "attributes = [\n  { key = \"\", value = \"x\", action = \"insert\" },\n]",
                3,
                "processors.resource.attributes[0].key",
                "key is empty",
            ),
            (
                "attributes = [\n  { key = \"a\", value = \"x\", action = \"delete\" },\n]",
                3,
                "processors.resource.attributes[0].value",
                "delete takes no value",
            ),
            ("attributes = []", 2, "processors.resource.attributes", "empty"),
        ] {
            let e = parse_text(body).err().expect(body);
            assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
            assert!(e.message.contains(message), "{e}");
        }
        let e = parse_text("").err().unwrap();
        assert!(e.to_string().contains("attributes"), "{e}");
    }
}
