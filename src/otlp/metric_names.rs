//! Metric names read straight off an encoded metrics request, without decoding it: a
//! processor that cares about a few metrics lets every other request pass as its bytes.

use prost::encoding::{decode_key, decode_varint, WireType};

/// Whether some metric of the encoded `ExportMetricsServiceRequest` has a name for which
/// `wanted` says yes. Errs on the side of yes: bytes it cannot read answer true, and
/// decoding then judges.
pub fn any_metric_name(request: &[u8], mut wanted: impl FnMut(&str) -> bool) -> bool {
    // `resource_metrics` (1) → `ScopeMetrics` via `scope_metrics` (2) → `metrics` (2) →
    // `Metric.name` (1).
    let mut walk = || -> Option<bool> {
        for resource in fields(request, 1) {
            for scope in fields(resource?, 2) {
                for metric in fields(scope?, 2) {
                    for name in fields(metric?, 1) {
                        if wanted(std::str::from_utf8(name?).ok()?) {
                            return Some(true);
                        }
                    }
                }
            }
        }
        Some(false)
    };
    walk().unwrap_or(true)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{MetricsBuilder, Timestamp};
    use prost::Message;

    #[test]
    fn names_are_read_without_decoding() {
        let mut b = MetricsBuilder::new();
        b.resource(&[("service.name", "x")]).scope("s", "1");
        b.gauge("a.b", "", "").point(1, &[("k", "v")], Timestamp(1));
        b.gauge("c.d", "", "").point(1, &[("k", "v")], Timestamp(1));
        let bytes = b.build().encode_to_vec();
        assert!(any_metric_name(&bytes, |n| n == "c.d"));
        assert!(!any_metric_name(&bytes, |n| n == "e.f"));
        // Unreadable bytes say yes.
        assert!(any_metric_name(&[0x0a, 0xff], |_| false));
    }
}
