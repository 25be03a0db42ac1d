//! Editing the `Resource` of every resource-level message of an encoded export
//! request, without decoding anything else.
//!
//! The three export requests share their outer shape: field 1 is the repeated
//! `ResourceSpans` / `ResourceMetrics` / `ResourceLogs`, and in each of those field 1
//! is the `Resource`. Only that small message is decoded, edited and re-encoded; the
//! scopes and their spans, points or records are copied as bytes, and only the length
//! prefix of a resource-level message whose resource changed is recomputed. Parts of
//! the request before, between and after the changed messages are copied in bulk, and
//! when nothing changed nothing is copied at all.
//!
//! The result decodes (with prost) to exactly what decoding the whole request, editing
//! each `resource` and encoding again gives: the rewritten resource comes first, which
//! is where prost writes it, and several `Resource` fields in one message are merged
//! first, as prost merges them.

use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

/// The request could not be walked; it never is when it passed the wire scanner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed export request at byte {0}")]
pub struct Malformed(pub usize);

const LEN: u8 = 2;
/// Keep well below any stack limit; prost's own limit is 100 nested messages.
const MAX_GROUP_DEPTH: u32 = 100;

/// Calls `edit` with the resource (`None` when absent) of every resource-level message
/// in `buf`, an encoded traces, metrics or logs export request. `edit` returns whether
/// it changed the resource. Returns the edited request, or `None` when nothing changed
/// and `buf` can be kept as it is.
pub fn edit_resources(
    buf: &[u8],
    mut edit: impl FnMut(&mut Option<Resource>) -> bool,
) -> Result<Option<Vec<u8>>, Malformed> {
    let mut out: Option<Vec<u8>> = None;
    // Input before this offset is already in `out` (or replaced there).
    let mut copied = 0;
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let (field, wire_type) = key(buf, &mut pos)?;
        if field != 1 {
            skip(buf, &mut pos, field, wire_type, 0)?;
            continue;
        }
        if wire_type != LEN {
            return Err(Malformed(start));
        }
        let body = length_delimited(buf, &mut pos)?;
        let mut resource = None;
        let mut rest_len = 0;
        walk(buf, body.clone(), |f, range| {
            if f == 1 {
                let r = resource.get_or_insert_with(Resource::default);
                r.merge(&buf[range.clone()])
                    .map_err(|_| Malformed(range.start))
            } else {
                rest_len += range.len();
                Ok(())
            }
        })?;
        if !edit(&mut resource) {
            continue;
        }
        let out = out.get_or_insert_with(|| Vec::with_capacity(buf.len() + 256));
        out.extend_from_slice(&buf[copied..start]);
        let resource_len = resource.as_ref().map_or(0, |r| {
            let n = r.encoded_len();
            1 + prost::length_delimiter_len(n) + n
        });
        out.push(0x0a);
        encode_varint((resource_len + rest_len) as u64, out);
        if let Some(r) = &resource {
            out.push(0x0a);
            encode_varint(r.encoded_len() as u64, out);
            r.encode_raw(out);
        }
        walk(buf, body, |f, range| {
            if f != 1 {
                out.extend_from_slice(&buf[range]);
            }
            Ok(())
        })?;
        copied = pos;
    }
    Ok(out.map(|mut out| {
        out.extend_from_slice(&buf[copied..]);
        out
    }))
}

/// Calls `f` for each field of the message in `buf[body]` with its number and either
/// the payload (field 1, which must be length-delimited) or the whole field, key
/// included (every other field).
fn walk(
    buf: &[u8],
    body: std::ops::Range<usize>,
    mut f: impl FnMut(u32, std::ops::Range<usize>) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    let msg = &buf[..body.end];
    let mut pos = body.start;
    while pos < body.end {
        let start = pos;
        let (field, wire_type) = key(msg, &mut pos)?;
        if field == 1 {
            if wire_type != LEN {
                return Err(Malformed(start));
            }
            f(1, length_delimited(msg, &mut pos)?)?;
        } else {
            skip(msg, &mut pos, field, wire_type, 0)?;
            f(field, start..pos)?;
        }
    }
    Ok(())
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, Malformed> {
    let start = *pos;
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*pos).ok_or(Malformed(start))?;
        *pos += 1;
        if i == 9 && b > 1 {
            return Err(Malformed(start));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(Malformed(start))
}

fn encode_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(buf: &[u8], pos: &mut usize) -> Result<(u32, u8), Malformed> {
    let start = *pos;
    let k = varint(buf, pos)?;
    let field = u32::try_from(k >> 3).map_err(|_| Malformed(start))?;
    if field == 0 {
        return Err(Malformed(start));
    }
    Ok((field, (k & 7) as u8))
}

fn length_delimited(buf: &[u8], pos: &mut usize) -> Result<std::ops::Range<usize>, Malformed> {
    let start = *pos;
    let len = varint(buf, pos)?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| pos.checked_add(l))
        .filter(|&e| e <= buf.len())
        .ok_or(Malformed(start))?;
    let body = *pos..end;
    *pos = end;
    Ok(body)
}

/// Moves past the payload of a field whose key was just read.
fn skip(
    buf: &[u8],
    pos: &mut usize,
    field: u32,
    wire_type: u8,
    depth: u32,
) -> Result<(), Malformed> {
    let start = *pos;
    let fixed = |pos: &mut usize, n: usize| {
        if buf.len() - *pos < n {
            return Err(Malformed(start));
        }
        *pos += n;
        Ok(())
    };
    match wire_type {
        0 => varint(buf, pos).map(drop),
        1 => fixed(pos, 8),
        2 => length_delimited(buf, pos).map(drop),
        5 => fixed(pos, 4),
        3 if depth < MAX_GROUP_DEPTH => loop {
            let (f, wt) = key(buf, pos)?;
            if wt == 4 {
                return if f == field {
                    Ok(())
                } else {
                    Err(Malformed(start))
                };
            }
            skip(buf, pos, f, wt, depth + 1)?;
        },
        _ => Err(Malformed(start)),
    }
}
