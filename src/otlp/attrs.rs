//! Typed attributes and timestamps for building and editing OTLP data.
//!
//! `attr("bot", "main")`, `attr("open_trades", 3)`, `attr("dry_run", true)` make a
//! [`KeyValue`] from any of the OTLP scalar types without spelling out the nested
//! `AnyValue { value: Some(..) }`; [`get_attr`], [`set_attr`] and [`remove_attr`] read
//! and edit attribute lists (resources, scopes, points, log records alike).

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

/// An attribute value: string, integer, double, bool, bytes or any [`AnyValue`].
///
/// A local type because `From<&str> for AnyValue` cannot be written outside
/// `opentelemetry-proto`; it converts into [`AnyValue`] and [`any_value::Value`].
#[derive(Debug, Clone, PartialEq)]
pub struct AttrValue(pub any_value::Value);

impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        AttrValue(any_value::Value::StringValue(v.to_owned()))
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue(any_value::Value::StringValue(v))
    }
}
impl From<&String> for AttrValue {
    fn from(v: &String) -> Self {
        AttrValue(any_value::Value::StringValue(v.clone()))
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue(any_value::Value::IntValue(v))
    }
}
impl From<i32> for AttrValue {
    fn from(v: i32) -> Self {
        AttrValue(any_value::Value::IntValue(v.into()))
    }
}
impl From<u32> for AttrValue {
    fn from(v: u32) -> Self {
        AttrValue(any_value::Value::IntValue(v.into()))
    }
}
impl From<f64> for AttrValue {
    fn from(v: f64) -> Self {
        AttrValue(any_value::Value::DoubleValue(v))
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue(any_value::Value::BoolValue(v))
    }
}
impl From<Vec<u8>> for AttrValue {
    fn from(v: Vec<u8>) -> Self {
        AttrValue(any_value::Value::BytesValue(v))
    }
}
impl From<any_value::Value> for AttrValue {
    fn from(v: any_value::Value) -> Self {
        AttrValue(v)
    }
}
impl From<AttrValue> for AnyValue {
    fn from(v: AttrValue) -> Self {
        AnyValue { value: Some(v.0) }
    }
}

/// A key-value attribute: `attr("bot", "main")`, `attr("leverage", 3)`, `attr("ratio", 0.5)`.
pub fn attr(key: impl Into<String>, value: impl Into<AttrValue>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value.into().into()),
        ..Default::default()
    }
}

/// The value of the first attribute named `key`.
pub fn get_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

/// The string value of attribute `key`, if it is a string.
pub fn get_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match get_attr(attrs, key)? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// An attribute or body value as text: strings as they are, numbers as Rust prints them
/// (`0.12`, `3`), anything structured as compact JSON-like text.
pub fn value_text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(value_text).collect();
            format!("[{}]", items.join(", "))
        }
        Some(any_value::Value::KvlistValue(l)) => {
            let items: Vec<String> = l
                .values
                .iter()
                .map(|kv| {
                    let v = kv.value.as_ref().map(value_text).unwrap_or_default();
                    format!("{}={v}", kv.key)
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        _ => String::new(),
    }
}

/// The numeric value of attribute `key` (an int or a double), as `f64`.
pub fn get_f64(attrs: &[KeyValue], key: &str) -> Option<f64> {
    match get_attr(attrs, key)? {
        any_value::Value::DoubleValue(v) => Some(*v),
        any_value::Value::IntValue(v) => Some(*v as f64),
        _ => None,
    }
}

/// Sets attribute `key` (replacing its value where it is, else appending), and drops
/// any duplicates of it, so the list holds `key` exactly once afterwards.
pub fn set_attr(attrs: &mut Vec<KeyValue>, key: &str, value: impl Into<AttrValue>) {
    let value = Some(value.into().into());
    match attrs.iter().position(|kv| kv.key == key) {
        Some(i) => {
            attrs[i].value = value;
            let mut n = 0;
            attrs.retain(|kv| {
                n += 1;
                n - 1 <= i || kv.key != key
            });
        }
        None => attrs.push(KeyValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }),
    }
}

/// Adds attribute `key` only if it is absent; returns whether it was added.
pub fn insert_attr(attrs: &mut Vec<KeyValue>, key: &str, value: impl Into<AttrValue>) -> bool {
    if attrs.iter().any(|kv| kv.key == key) {
        return false;
    }
    attrs.push(attr(key, value));
    true
}

/// Removes every attribute named `key`; returns the first one's value, if any.
pub fn remove_attr(attrs: &mut Vec<KeyValue>, key: &str) -> Option<AnyValue> {
    let i = attrs.iter().position(|kv| kv.key == key)?;
    let removed = attrs.remove(i).value.unwrap_or_default();
    attrs.retain(|kv| kv.key != key);
    Some(removed)
}

/// Anything that makes an attribute list: `[attr(..), ..]`, `&[("k", "v")]`, a `Vec`,
/// or `()` for none.
pub trait IntoAttributes {
    fn into_attributes(self) -> Vec<KeyValue>;
}

impl IntoAttributes for () {
    fn into_attributes(self) -> Vec<KeyValue> {
        Vec::new()
    }
}
impl IntoAttributes for Vec<KeyValue> {
    fn into_attributes(self) -> Vec<KeyValue> {
        self
    }
}
impl IntoAttributes for &[KeyValue] {
    fn into_attributes(self) -> Vec<KeyValue> {
        self.to_vec()
    }
}
impl<const N: usize> IntoAttributes for [KeyValue; N] {
    fn into_attributes(self) -> Vec<KeyValue> {
        self.into()
    }
}
impl<const N: usize> IntoAttributes for &[KeyValue; N] {
    fn into_attributes(self) -> Vec<KeyValue> {
        self.to_vec()
    }
}
impl<K: AsRef<str>, V: Into<AttrValue> + Clone> IntoAttributes for &[(K, V)] {
    fn into_attributes(self) -> Vec<KeyValue> {
        self.iter()
            .map(|(k, v)| attr(k.as_ref(), v.clone()))
            .collect()
    }
}
impl<K: AsRef<str>, V: Into<AttrValue> + Clone, const N: usize> IntoAttributes for &[(K, V); N] {
    fn into_attributes(self) -> Vec<KeyValue> {
        self.as_slice().into_attributes()
    }
}

/// A point in time as OTLP writes it: nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn now() -> Timestamp {
        SystemTime::now().into()
    }
}

impl From<u64> for Timestamp {
    fn from(nanos: u64) -> Self {
        Timestamp(nanos)
    }
}

/// Times before the epoch become 0 (OTLP's "unknown").
impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Timestamp(
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
                .unwrap_or(0),
        )
    }
}

/// A trace (`n` = 16) or span (`n` = 8) id written in hex (`2*n` digits, either case), or
/// a UUID for a 16-byte id; all-zero ids are invalid.
pub fn hex_id(s: &str, n: usize) -> Option<Vec<u8>> {
    let s = s.trim();
    let digits: Cow<str> = if n == 16 && s.len() == 36 && s.matches('-').count() == 4 {
        Cow::Owned(s.replace('-', ""))
    } else {
        Cow::Borrowed(s)
    };
    if digits.len() != 2 * n || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id: Vec<u8> = (0..n)
        .map(|i| u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect();
    if id.iter().all(|b| *b == 0) {
        return None;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_and_edits() {
        let mut a = vec![
            attr("bot", "main"),
            attr("n", 3),
            attr("r", 0.5),
            attr("dry", true),
        ];
        assert_eq!(get_str(&a, "bot"), Some("main"));
        assert_eq!(get_f64(&a, "n"), Some(3.0));
        assert_eq!(get_f64(&a, "r"), Some(0.5));
        assert_eq!(
            get_attr(&a, "dry"),
            Some(&any_value::Value::BoolValue(true))
        );
        assert!(!insert_attr(&mut a, "bot", "other"));
        assert!(insert_attr(&mut a, "env", "prod"));
        a.push(attr("bot", "dup"));
        set_attr(&mut a, "bot", "x");
        assert_eq!(a.iter().filter(|kv| kv.key == "bot").count(), 1);
        assert_eq!(a[0], attr("bot", "x"));
        a.push(attr("n", 4));
        assert_eq!(remove_attr(&mut a, "n"), Some(attr("n", 3).value.unwrap()));
        assert!(get_attr(&a, "n").is_none());
        assert_eq!(remove_attr(&mut a, "n"), None);
        assert_eq!(
            (&[("a", "b")]).into_attributes(),
            [attr("a", "b")].into_attributes()
        );
        assert_eq!(Timestamp::from(UNIX_EPOCH), Timestamp(0));
    }
}
