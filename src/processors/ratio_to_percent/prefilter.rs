//! A look at an encoded request, without decoding it, for anything the processor
//! might convert: requests that hold none go on as their bytes, undecoded.

use super::Rules;
use prost::encoding::{decode_key, decode_varint, WireType};

/// Whether the request may hold something to convert: a metric whose name matches
/// a glob, or the bytes of a listed attribute key anywhere. Errs on the side of yes
/// (anything it cannot read says yes, and decoding then judges).
pub(super) fn may_convert(rules: &Rules, request: &[u8]) -> bool {
    let key_present = rules
        .attributes
        .iter()
        .any(|k| request.windows(k.len()).any(|w| w == k.as_bytes()));
    key_present || (!rules.metrics.is_empty() && names_match(rules, request).unwrap_or(true))
}

/// `ExportMetricsServiceRequest.resource_metrics` (1) → `ResourceMetrics.scope_metrics`
/// (2) → `ScopeMetrics.metrics` (2) → `Metric.name` (1); `None` when unreadable.
fn names_match(rules: &Rules, request: &[u8]) -> Option<bool> {
    for resource in fields(request, 1) {
        for scope in fields(resource?, 2) {
            for metric in fields(scope?, 2) {
                for name in fields(metric?, 1) {
                    if rules.matches(std::str::from_utf8(name?).ok()?) {
                        return Some(true);
                    }
                }
            }
        }
    }
    Some(false)
}

/// The length-delimited fields numbered `number` in one message's bytes, in order;
/// a `None` item ends the walk where the bytes cannot be read.
fn fields(mut buf: &[u8], number: u32) -> impl Iterator<Item = Option<&[u8]>> {
    std::iter::from_fn(move || loop {
        if buf.is_empty() {
            return None;
        }
        let next = (|| {
            let (tag, wire_type) = decode_key(&mut buf).ok()?;
            let len = match wire_type {
                WireType::Varint => {
                    decode_varint(&mut buf).ok()?;
                    0
                }
                WireType::SixtyFourBit => 8,
                WireType::ThirtyTwoBit => 4,
                WireType::LengthDelimited => usize::try_from(decode_varint(&mut buf).ok()?).ok()?,
                WireType::StartGroup | WireType::EndGroup => return None,
            };
            let value = buf.get(..len)?;
            buf = &buf[len..];
            Some((tag == number && wire_type == WireType::LengthDelimited).then_some(value))
        })();
        match next {
            Some(Some(value)) => return Some(Some(value)),
            Some(None) => continue,
            None => {
                buf = &[];
                return Some(None);
            }
        }
    })
}
