//! Zero-allocation protobuf wire-format scanner for the three OTLP export
//! requests.
//!
//! The receiver forwards the original request bytes whenever no processor
//! changes them, so decoding into owned `opentelemetry-proto` types (several
//! microseconds per span, mostly allocation) would be pure overhead. This
//! module walks the encoding once, without allocating, and
//!
//! * accepts exactly what `prost::Message::decode` into the
//!   `opentelemetry_proto::tonic` types accepts, and rejects exactly what it
//!   rejects, so that forwarding the bytes is as safe as re-encoding a decoded
//!   message (the unit tests check this differentially against prost);
//! * counts resources and items (spans, metric data points, log records) for
//!   limits, metrics and partial-success accounting.
//!
//! The rules mirror prost 0.14 rather than the protobuf spec where the two
//! could differ: varints are at most 10 bytes and must not overflow 64 bits
//! (non-canonical, zero-padded varints are fine); keys above `u32::MAX`,
//! wire types 6 and 7 and field number 0 are errors; a known field must carry
//! its declared wire type (repeated numeric fields may be packed or not);
//! `string` fields must be UTF-8 while `bytes` fields (trace ids, ...) may have
//! any length; enum fields take any varint; unknown fields of any wire type,
//! including (nested) groups, are skipped; and the nesting limit is prost's
//! recursion limit of 100, which also applies to skipping unknown fields.
//!
//! Because every request is a single `repeated` top-level field, the
//! concatenation of two valid encoded requests of the same kind is itself a
//! valid request containing both lists (protobuf merge semantics), and its
//! counts are the sum of the two. Batching can therefore join encoded requests
//! without re-encoding them.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use std::cell::Cell;
use std::str;

/// Result of a successful scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Number of `ResourceSpans` / `ResourceMetrics` / `ResourceLogs` entries.
    pub resources: u32,
    /// Spans, metric data points (all five metric kinds) or log records.
    pub items: u64,
}

/// The same counts read off decoded requests: what the scanner must agree with (its
/// tests and the `wire_diff` fuzz target compare the two), and how a decoded payload
/// counts its items.
impl Counts {
    pub fn of_traces(r: &ExportTraceServiceRequest) -> Counts {
        Counts {
            resources: r.resource_spans.len() as u32,
            items: r
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len() as u64)
                .sum(),
        }
    }

    pub fn of_metrics(r: &ExportMetricsServiceRequest) -> Counts {
        Counts {
            resources: r.resource_metrics.len() as u32,
            items: r
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(|m| metric_points(m.data.as_ref()))
                .sum(),
        }
    }

    pub fn of_logs(r: &ExportLogsServiceRequest) -> Counts {
        Counts {
            resources: r.resource_logs.len() as u32,
            items: r
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len() as u64)
                .sum(),
        }
    }
}

/// Data points in one metric, whatever its kind.
pub fn metric_points(data: Option<&Data>) -> u64 {
    match data {
        Some(Data::Gauge(g)) => g.data_points.len() as u64,
        Some(Data::Sum(s)) => s.data_points.len() as u64,
        Some(Data::Histogram(h)) => h.data_points.len() as u64,
        Some(Data::ExponentialHistogram(h)) => h.data_points.len() as u64,
        Some(Data::Summary(s)) => s.data_points.len() as u64,
        None => 0,
    }
}

/// Why an encoded request was rejected. Offsets are byte positions in the
/// whole request buffer, pointing at the key of the offending field.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("invalid protobuf: truncated field key in {message} at byte {offset}")]
    TruncatedKey {
        message: &'static str,
        offset: usize,
    },
    #[error(
        "invalid protobuf: malformed varint field key in {message} at byte {offset} \
         (longer than 10 bytes or overflows 64 bits)"
    )]
    MalformedKey {
        message: &'static str,
        offset: usize,
    },
    #[error("invalid protobuf: field key {key} exceeds 32 bits in {message} at byte {offset}")]
    KeyOutOfRange {
        key: u64,
        message: &'static str,
        offset: usize,
    },
    #[error(
        "invalid protobuf: invalid wire type {wire_type} for field {field} in {message} \
         at byte {offset}"
    )]
    InvalidWireType {
        wire_type: u8,
        field: u32,
        message: &'static str,
        offset: usize,
    },
    #[error("invalid protobuf: field number 0 in {message} at byte {offset}")]
    FieldNumberZero {
        message: &'static str,
        offset: usize,
    },
    #[error(
        "invalid protobuf: field {field} ({name}) in {message} at byte {offset} has wire type \
         {actual} ({}), expected {expected}",
        wire_type_name(*.actual)
    )]
    UnexpectedWireType {
        message: &'static str,
        field: u32,
        name: &'static str,
        actual: u8,
        expected: &'static str,
        offset: usize,
    },
    #[error(
        "invalid protobuf: truncated {kind} field {field} ({name}) in {message} at byte {offset}"
    )]
    Truncated {
        kind: &'static str,
        message: &'static str,
        field: u32,
        name: &'static str,
        offset: usize,
    },
    #[error(
        "invalid protobuf: malformed varint in field {field} ({name}) in {message} at byte \
         {offset} (longer than 10 bytes or overflows 64 bits)"
    )]
    MalformedVarint {
        message: &'static str,
        field: u32,
        name: &'static str,
        offset: usize,
    },
    #[error(
        "invalid protobuf: packed field {field} ({name}) in {message} at byte {offset} has \
         length {len}, not a multiple of {width}"
    )]
    PackedLength {
        message: &'static str,
        field: u32,
        name: &'static str,
        len: usize,
        width: usize,
        offset: usize,
    },
    #[error(
        "invalid protobuf: invalid UTF-8 in string field {name} (field {field}) at byte {offset}"
    )]
    InvalidUtf8 {
        name: &'static str,
        field: u32,
        offset: usize,
    },
    #[error(
        "invalid protobuf: wire type 4 (end group) for field {field} in {message} at byte \
         {offset} without a matching start group"
    )]
    UnexpectedEndGroup {
        message: &'static str,
        field: u32,
        offset: usize,
    },
    #[error(
        "invalid protobuf: group for field {open} closed by end-group tag of field {field} \
         at byte {offset}"
    )]
    MismatchedEndGroup {
        open: u32,
        field: u32,
        offset: usize,
    },
    #[error(
        "invalid protobuf: nesting too deep (more than {RECURSION_LIMIT} levels) at field \
         {field} in {message} at byte {offset}"
    )]
    TooDeep {
        message: &'static str,
        field: u32,
        offset: usize,
    },
}

/// Scans an encoded `ExportTraceServiceRequest`; items are spans.
pub fn scan_traces(buf: &[u8]) -> Result<Counts, WireError> {
    export_request(Reader::new(buf), Msg::ExportTraces, resource_spans).map_err(take_error)
}

/// Scans an encoded `ExportMetricsServiceRequest`; items are data points of
/// gauges, sums, histograms, exponential histograms and summaries.
pub fn scan_metrics(buf: &[u8]) -> Result<Counts, WireError> {
    export_request(Reader::new(buf), Msg::ExportMetrics, resource_metrics).map_err(take_error)
}

/// Scans an encoded `ExportLogsServiceRequest`; items are log records.
pub fn scan_logs(buf: &[u8]) -> Result<Counts, WireError> {
    export_request(Reader::new(buf), Msg::ExportLogs, resource_logs).map_err(take_error)
}

// ---------------------------------------------------------------------------
// Wire primitives
// ---------------------------------------------------------------------------

/// Internal result. The error details are parked in `LAST_ERROR` so that
/// results of the hot functions stay register-sized (an inline `WireError`
/// costs ~25% more instructions, boxing it would allocate).
type Scan<T> = Result<T, Fail>;

/// The input was rejected; the reason is in `LAST_ERROR`.
struct Fail;

thread_local! {
    static LAST_ERROR: Cell<Option<WireError>> = const { Cell::new(None) };
}

#[cold]
#[inline(never)]
fn fail(e: WireError) -> Fail {
    LAST_ERROR.with(|c| c.set(Some(e)));
    Fail
}

fn take_error(_: Fail) -> WireError {
    LAST_ERROR
        .with(Cell::take)
        .expect("a scan failure always records its reason")
}

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const SGROUP: u8 = 3;
const EGROUP: u8 = 4;
const I32: u8 = 5;

/// prost's `RECURSION_LIMIT`: nested messages (and nested unknown groups)
/// deeper than this are rejected, and so is an unknown field at that depth.
const RECURSION_LIMIT: u32 = 100;

/// "Expected wire type" texts for error messages, indexed by wire type.
const EXPECTED: [&str; 6] = [
    "0 (varint)",
    "1 (64-bit)",
    "2 (length-delimited)",
    "3 (start group)",
    "4 (end group)",
    "5 (32-bit)",
];

fn wire_type_name(wt: u8) -> &'static str {
    match wt {
        VARINT => "varint",
        I64 => "64-bit",
        LEN => "length-delimited",
        SGROUP => "start group",
        EGROUP => "end group",
        I32 => "32-bit",
        _ => "invalid",
    }
}

/// Field names of a message, used only to build error messages.
struct Desc {
    name: &'static str,
    fields: &'static [(u32, &'static str)],
}

impl Desc {
    fn field_name(&self, num: u32) -> &'static str {
        self.fields
            .iter()
            .find(|(n, _)| *n == num)
            .map_or("unknown", |(_, s)| s)
    }
}

macro_rules! messages {
    ($($id:ident = $name:literal [$($num:literal => $field:literal),* $(,)?];)*) => {
        /// The scanned message types; an index into `DESCS`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        enum Msg {
            $($id),*
        }

        static DESCS: &[Desc] = &[$(Desc {
            name: $name,
            fields: &[$(($num, concat!($name, ".", $field))),*],
        }),*];
    };
}

impl Msg {
    fn desc(self) -> &'static Desc {
        &DESCS[self as usize]
    }
}

/// A decoded field key plus what is needed to report an error about it.
/// Kept at 16 bytes so that it travels in registers.
#[derive(Clone, Copy)]
struct Field {
    at: usize,
    key: u32,
    msg: Msg,
}

impl Field {
    #[inline(always)]
    fn num(self) -> u32 {
        self.key >> 3
    }

    #[inline(always)]
    fn wt(self) -> u8 {
        (self.key & 7) as u8
    }

    fn desc(self) -> &'static Desc {
        self.msg.desc()
    }

    fn name(self) -> &'static str {
        self.desc().field_name(self.num())
    }
}

enum VarintErr {
    Truncated,
    Malformed,
}

/// Cursor over one message. `buf` is the whole request cut at the end of the
/// message, so positions are absolute and nested readers cannot overrun their
/// parent. `depth` is prost's remaining recursion budget for this message's
/// fields.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: u32,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            depth: RECURSION_LIMIT,
        }
    }

    #[inline(always)]
    fn more(&self) -> bool {
        self.pos < self.buf.len()
    }

    #[inline(always)]
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads a varint as prost does: at most 10 bytes, the 10th byte at most 1.
    #[inline]
    fn varint(&mut self) -> Result<u64, VarintErr> {
        let pos = self.pos;
        if let Some(&b0) = self.buf.get(pos) {
            if b0 < 0x80 {
                self.pos = pos + 1;
                return Ok(u64::from(b0));
            }
            if let Some(&b1) = self.buf.get(pos + 1) {
                if b1 < 0x80 {
                    self.pos = pos + 2;
                    return Ok(u64::from(b0 & 0x7f) | (u64::from(b1) << 7));
                }
            }
        }
        let (value, next) = varint_slow(self.buf, pos)?;
        self.pos = next;
        Ok(value)
    }

    #[inline(always)]
    fn key(&mut self, msg: Msg) -> Scan<Field> {
        let at = self.pos;
        let key = match self.varint() {
            Ok(k) => k,
            Err(e) => return Err(key_varint_error(e, msg, at)),
        };
        if key > u64::from(u32::MAX) || key & 7 > u64::from(I32) || key >> 3 == 0 {
            return Err(bad_key(key, msg, at));
        }
        Ok(Field {
            at,
            key: key as u32,
            msg,
        })
    }

    #[inline(always)]
    fn expect(&self, f: Field, wt: u8) -> Scan<()> {
        if f.wt() == wt {
            Ok(())
        } else {
            Err(wrong_wire_type(f, EXPECTED[wt as usize]))
        }
    }

    #[inline(always)]
    fn advance(&mut self, f: Field, n: usize) -> Scan<()> {
        if self.remaining() < n {
            return Err(truncated(f));
        }
        self.pos += n;
        Ok(())
    }

    #[inline(always)]
    fn read_varint(&mut self, f: Field) -> Scan<u64> {
        self.varint().map_err(|e| varint_error(e, f))
    }

    /// Reads a length prefix and checks it against the enclosing message.
    #[inline(always)]
    fn len(&mut self, f: Field) -> Scan<usize> {
        let n = self.read_varint(f)?;
        if n > self.remaining() as u64 {
            return Err(truncated(f));
        }
        Ok(n as usize)
    }

    /// int32, int64, uint32, uint64, sint32, bool, enum.
    #[inline(always)]
    fn varint_field(&mut self, f: Field) -> Scan<()> {
        self.expect(f, VARINT)?;
        self.read_varint(f).map(drop)
    }

    /// fixed64, sfixed64, double.
    #[inline(always)]
    fn fixed64(&mut self, f: Field) -> Scan<()> {
        self.expect(f, I64)?;
        self.advance(f, 8)
    }

    /// fixed32.
    #[inline(always)]
    fn fixed32(&mut self, f: Field) -> Scan<()> {
        self.expect(f, I32)?;
        self.advance(f, 4)
    }

    /// bytes: any content, any length.
    #[inline(always)]
    fn bytes(&mut self, f: Field) -> Scan<()> {
        self.expect(f, LEN)?;
        let n = self.len(f)?;
        self.pos += n;
        Ok(())
    }

    /// string: must be UTF-8.
    #[inline(always)]
    fn string(&mut self, f: Field) -> Scan<()> {
        self.expect(f, LEN)?;
        let n = self.len(f)?;
        let start = self.pos;
        self.pos += n;
        if !is_utf8(&self.buf[start..self.pos]) {
            return Err(invalid_utf8(f));
        }
        Ok(())
    }

    /// Embedded message: returns a reader over its bytes and moves past them.
    #[inline(always)]
    fn message(&mut self, f: Field) -> Scan<Reader<'a>> {
        self.expect(f, LEN)?;
        if self.depth == 0 {
            return Err(too_deep(f));
        }
        let n = self.len(f)?;
        let start = self.pos;
        self.pos += n;
        Ok(Reader {
            buf: &self.buf[..self.pos],
            pos: start,
            depth: self.depth - 1,
        })
    }

    /// Repeated fixed64 / double: packed or one element per key.
    #[inline(always)]
    fn repeated_fixed64(&mut self, f: Field) -> Scan<()> {
        match f.wt() {
            LEN => {
                let n = self.len(f)?;
                if n % 8 != 0 {
                    return Err(packed_length(f, n, 8));
                }
                self.pos += n;
                Ok(())
            }
            I64 => self.advance(f, 8),
            _ => Err(wrong_wire_type(f, "1 (64-bit) or 2 (packed)")),
        }
    }

    /// Repeated uint64: packed or one element per key.
    #[inline(always)]
    fn repeated_varint(&mut self, f: Field) -> Scan<()> {
        match f.wt() {
            LEN => {
                let n = self.len(f)?;
                let end = self.pos + n;
                let mut packed = Reader {
                    buf: &self.buf[..end],
                    pos: self.pos,
                    depth: self.depth,
                };
                while packed.more() {
                    packed.read_varint(f)?;
                }
                self.pos = end;
                Ok(())
            }
            VARINT => self.read_varint(f).map(drop),
            _ => Err(wrong_wire_type(f, "0 (varint) or 2 (packed)")),
        }
    }

    /// Unknown field: skipped like prost's `skip_field`, which checks the
    /// recursion limit first and walks (nested) groups. Out of line, and
    /// without borrowing `self`, so that readers can live in registers.
    #[inline(always)]
    fn skip(&mut self, f: Field) -> Scan<()> {
        self.pos = skip_field(self.buf, self.pos, self.depth, f)?;
        Ok(())
    }

    fn skip_here(&mut self, f: Field) -> Scan<()> {
        if self.depth == 0 {
            return Err(too_deep(f));
        }
        match f.wt() {
            VARINT => self.read_varint(f).map(drop),
            I64 => self.advance(f, 8),
            LEN => {
                let n = self.len(f)?;
                self.pos += n;
                Ok(())
            }
            I32 => self.advance(f, 4),
            SGROUP => self.skip_group(f),
            _ => Err(fail(WireError::UnexpectedEndGroup {
                message: f.desc().name,
                field: f.num(),
                offset: f.at,
            })),
        }
    }

    #[inline(never)]
    fn skip_group(&mut self, f: Field) -> Scan<()> {
        self.depth -= 1;
        let result = loop {
            if !self.more() {
                break Err(truncated(f));
            }
            let g = match self.key(Msg::Group) {
                Ok(g) => g,
                Err(e) => break Err(e),
            };
            if g.wt() == EGROUP {
                if g.num() != f.num() {
                    break Err(fail(WireError::MismatchedEndGroup {
                        open: f.num(),
                        field: g.num(),
                        offset: g.at,
                    }));
                }
                break Ok(());
            }
            if let Err(e) = self.skip_here(g) {
                break Err(e);
            }
        };
        self.depth += 1;
        result
    }
}

/// Continuation of `Reader::varint` for 3 bytes and more, returning the value
/// and the position after it.
#[inline(never)]
fn varint_slow(buf: &[u8], pos: usize) -> Result<(u64, usize), VarintErr> {
    let mut value = 0u64;
    for i in 0..10 {
        let Some(&b) = buf.get(pos + i) else {
            return Err(VarintErr::Truncated);
        };
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            if i == 9 && b > 1 {
                return Err(VarintErr::Malformed);
            }
            return Ok((value, pos + i + 1));
        }
    }
    Err(VarintErr::Malformed)
}

/// See `Reader::skip`; returns the position after the field.
#[inline(never)]
fn skip_field(buf: &[u8], pos: usize, depth: u32, f: Field) -> Scan<usize> {
    let mut r = Reader { buf, pos, depth };
    r.skip_here(f)?;
    Ok(r.pos)
}

/// `str::from_utf8(..).is_ok()`, with an inlined ASCII pre-check: OTLP keys
/// and most values are short ASCII strings, for which the call into the
/// general validator costs more than the check itself.
#[inline(always)]
fn is_utf8(s: &[u8]) -> bool {
    s.is_ascii() || str::from_utf8(s).is_ok()
}

// Error constructors: kept out of line so the hot paths stay small.

#[cold]
#[inline(never)]
fn key_varint_error(e: VarintErr, msg: Msg, at: usize) -> Fail {
    fail(match e {
        VarintErr::Truncated => WireError::TruncatedKey {
            message: msg.desc().name,
            offset: at,
        },
        VarintErr::Malformed => WireError::MalformedKey {
            message: msg.desc().name,
            offset: at,
        },
    })
}

#[cold]
#[inline(never)]
fn bad_key(key: u64, msg: Msg, at: usize) -> Fail {
    fail(if key > u64::from(u32::MAX) {
        WireError::KeyOutOfRange {
            key,
            message: msg.desc().name,
            offset: at,
        }
    } else if key & 7 > 5 {
        WireError::InvalidWireType {
            wire_type: (key & 7) as u8,
            field: (key >> 3) as u32,
            message: msg.desc().name,
            offset: at,
        }
    } else {
        WireError::FieldNumberZero {
            message: msg.desc().name,
            offset: at,
        }
    })
}

#[cold]
#[inline(never)]
fn wrong_wire_type(f: Field, expected: &'static str) -> Fail {
    fail(WireError::UnexpectedWireType {
        message: f.desc().name,
        field: f.num(),
        name: f.name(),
        actual: f.wt(),
        expected,
        offset: f.at,
    })
}

#[cold]
#[inline(never)]
fn truncated(f: Field) -> Fail {
    fail(WireError::Truncated {
        kind: match f.wt() {
            VARINT => "varint",
            I64 => "64-bit",
            LEN => "length-delimited",
            SGROUP => "group",
            _ => "32-bit",
        },
        message: f.desc().name,
        field: f.num(),
        name: f.name(),
        offset: f.at,
    })
}

#[cold]
#[inline(never)]
fn varint_error(e: VarintErr, f: Field) -> Fail {
    fail(match e {
        VarintErr::Truncated => WireError::Truncated {
            kind: if f.wt() == LEN {
                "length-delimited"
            } else {
                "varint"
            },
            message: f.desc().name,
            field: f.num(),
            name: f.name(),
            offset: f.at,
        },
        VarintErr::Malformed => WireError::MalformedVarint {
            message: f.desc().name,
            field: f.num(),
            name: f.name(),
            offset: f.at,
        },
    })
}

#[cold]
#[inline(never)]
fn packed_length(f: Field, len: usize, width: usize) -> Fail {
    fail(WireError::PackedLength {
        message: f.desc().name,
        field: f.num(),
        name: f.name(),
        len,
        width,
        offset: f.at,
    })
}

#[cold]
#[inline(never)]
fn invalid_utf8(f: Field) -> Fail {
    fail(WireError::InvalidUtf8 {
        name: f.name(),
        field: f.num(),
        offset: f.at,
    })
}

#[cold]
#[inline(never)]
fn too_deep(f: Field) -> Fail {
    fail(WireError::TooDeep {
        message: f.desc().name,
        field: f.num(),
        offset: f.at,
    })
}

// ---------------------------------------------------------------------------
// Message descriptions (field numbers as in opentelemetry-proto 0.33.1)
// ---------------------------------------------------------------------------

messages! {
    Group = "group" [];
    ExportTraces = "ExportTraceServiceRequest" [1 => "resource_spans"];
    ExportMetrics = "ExportMetricsServiceRequest" [1 => "resource_metrics"];
    ExportLogs = "ExportLogsServiceRequest" [1 => "resource_logs"];
    Resource = "Resource" [1 => "attributes", 2 => "dropped_attributes_count", 3 => "entity_refs"];
    EntityRef = "EntityRef" [
        1 => "schema_url", 2 => "type", 3 => "id_keys", 4 => "description_keys",
    ];
    Scope = "InstrumentationScope" [
        1 => "name", 2 => "version", 3 => "attributes", 4 => "dropped_attributes_count",
    ];
    KeyValue = "KeyValue" [1 => "key", 2 => "value", 3 => "key_strindex"];
    AnyValue = "AnyValue" [
        1 => "string_value", 2 => "bool_value", 3 => "int_value", 4 => "double_value",
        5 => "array_value", 6 => "kvlist_value", 7 => "bytes_value", 8 => "string_value_strindex",
    ];
    ArrayValue = "ArrayValue" [1 => "values"];
    KeyValueList = "KeyValueList" [1 => "values"];
    ResourceSpans = "ResourceSpans" [1 => "resource", 2 => "scope_spans", 3 => "schema_url"];
    ScopeSpans = "ScopeSpans" [1 => "scope", 2 => "spans", 3 => "schema_url"];
    Span = "Span" [
        1 => "trace_id", 2 => "span_id", 3 => "trace_state", 4 => "parent_span_id", 5 => "name",
        6 => "kind", 7 => "start_time_unix_nano", 8 => "end_time_unix_nano", 9 => "attributes",
        10 => "dropped_attributes_count", 11 => "events", 12 => "dropped_events_count",
        13 => "links", 14 => "dropped_links_count", 15 => "status", 16 => "flags",
    ];
    Event = "Span.Event" [
        1 => "time_unix_nano", 2 => "name", 3 => "attributes", 4 => "dropped_attributes_count",
    ];
    Link = "Span.Link" [
        1 => "trace_id", 2 => "span_id", 3 => "trace_state", 4 => "attributes",
        5 => "dropped_attributes_count", 6 => "flags",
    ];
    Status = "Status" [2 => "message", 3 => "code"];
    ResourceLogs = "ResourceLogs" [1 => "resource", 2 => "scope_logs", 3 => "schema_url"];
    ScopeLogs = "ScopeLogs" [1 => "scope", 2 => "log_records", 3 => "schema_url"];
    LogRecord = "LogRecord" [
        1 => "time_unix_nano", 2 => "severity_number", 3 => "severity_text", 5 => "body",
        6 => "attributes", 7 => "dropped_attributes_count", 8 => "flags", 9 => "trace_id",
        10 => "span_id", 11 => "observed_time_unix_nano", 12 => "event_name",
    ];
    ResourceMetrics = "ResourceMetrics" [1 => "resource", 2 => "scope_metrics", 3 => "schema_url"];
    ScopeMetrics = "ScopeMetrics" [1 => "scope", 2 => "metrics", 3 => "schema_url"];
    Metric = "Metric" [
        1 => "name", 2 => "description", 3 => "unit", 5 => "gauge", 7 => "sum", 9 => "histogram",
        10 => "exponential_histogram", 11 => "summary", 12 => "metadata",
    ];
    Gauge = "Gauge" [1 => "data_points"];
    Sum = "Sum" [1 => "data_points", 2 => "aggregation_temporality", 3 => "is_monotonic"];
    Histogram = "Histogram" [1 => "data_points", 2 => "aggregation_temporality"];
    ExpHistogram = "ExponentialHistogram" [1 => "data_points", 2 => "aggregation_temporality"];
    Summary = "Summary" [1 => "data_points"];
    NumberDp = "NumberDataPoint" [
        2 => "start_time_unix_nano", 3 => "time_unix_nano", 4 => "as_double", 5 => "exemplars",
        6 => "as_int", 7 => "attributes", 8 => "flags",
    ];
    HistogramDp = "HistogramDataPoint" [
        2 => "start_time_unix_nano", 3 => "time_unix_nano", 4 => "count", 5 => "sum",
        6 => "bucket_counts", 7 => "explicit_bounds", 8 => "exemplars", 9 => "attributes",
        10 => "flags", 11 => "min", 12 => "max",
    ];
    ExpHistogramDp = "ExponentialHistogramDataPoint" [
        1 => "attributes", 2 => "start_time_unix_nano", 3 => "time_unix_nano", 4 => "count",
        5 => "sum", 6 => "scale", 7 => "zero_count", 8 => "positive", 9 => "negative",
        10 => "flags", 11 => "exemplars", 12 => "min", 13 => "max", 14 => "zero_threshold",
    ];
    Buckets = "ExponentialHistogramDataPoint.Buckets" [1 => "offset", 2 => "bucket_counts"];
    SummaryDp = "SummaryDataPoint" [
        2 => "start_time_unix_nano", 3 => "time_unix_nano", 4 => "count", 5 => "sum",
        6 => "quantile_values", 7 => "attributes", 8 => "flags",
    ];
    Quantile = "SummaryDataPoint.ValueAtQuantile" [1 => "quantile", 2 => "value"];
    Exemplar = "Exemplar" [
        2 => "time_unix_nano", 3 => "as_double", 4 => "span_id", 5 => "trace_id", 6 => "as_int",
        7 => "filtered_attributes",
    ];
}

// ---------------------------------------------------------------------------
// One function per message type. Each loops over its fields; embedded
// messages get their own bounded reader.
// ---------------------------------------------------------------------------

/// Scans the embedded message in field `f` of `r` with `scan`. Message
/// functions take the reader's parts as scalars so they are passed in
/// registers.
macro_rules! nested {
    ($scan:ident, $r:ident, $f:ident) => {{
        let m = $r.message($f)?;
        $scan(m.buf, m.pos, m.depth)
    }};
}

/// `Export*ServiceRequest { repeated Resource* resource_* = 1; }`
fn export_request(
    mut r: Reader<'_>,
    msg: Msg,
    resource_x: fn(&[u8], usize, u32) -> Scan<u64>,
) -> Scan<Counts> {
    let mut c = Counts::default();
    while r.more() {
        let f = r.key(msg)?;
        match f.num() {
            1 => {
                let items = nested!(resource_x, r, f)?;
                c.resources = c.resources.saturating_add(1);
                c.items = c.items.saturating_add(items);
            }
            _ => r.skip(f)?,
        }
    }
    Ok(c)
}

fn resource(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::Resource)?;
        match f.num() {
            1 => nested!(key_value, r, f)?,
            2 => r.varint_field(f)?,
            3 => nested!(entity_ref, r, f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

fn entity_ref(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::EntityRef)?;
        match f.num() {
            1..=4 => r.string(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

fn scope(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::Scope)?;
        match f.num() {
            1 | 2 => r.string(f)?,
            3 => nested!(key_value, r, f)?,
            4 => r.varint_field(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

fn key_value(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::KeyValue)?;
        match f.num() {
            1 => r.string(f)?,
            2 => nested!(any_value, r, f)?,
            3 => r.varint_field(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

/// Inlined into its callers (mostly `KeyValue`), which saves a call per
/// attribute; the recursion goes through the out-of-line `ArrayValue` and
/// `KeyValueList` functions.
#[inline(always)]
fn any_value(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::AnyValue)?;
        match f.num() {
            1 => r.string(f)?,
            2 | 3 | 8 => r.varint_field(f)?,
            4 => r.fixed64(f)?,
            5 => nested!(array_value, r, f)?,
            6 => nested!(key_value_list, r, f)?,
            7 => r.bytes(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

#[inline(never)]
fn array_value(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::ArrayValue)?;
        match f.num() {
            1 => nested!(any_value, r, f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

#[inline(never)]
fn key_value_list(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::KeyValueList)?;
        match f.num() {
            1 => nested!(key_value, r, f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

// --- traces ---

fn resource_spans(buf: &[u8], pos: usize, depth: u32) -> Scan<u64> {
    let mut r = Reader { buf, pos, depth };
    let mut n = 0u64;
    while r.more() {
        let f = r.key(Msg::ResourceSpans)?;
        match f.num() {
            1 => nested!(resource, r, f)?,
            2 => n = n.saturating_add(nested!(scope_spans, r, f)?),
            3 => r.string(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(n)
}

fn scope_spans(buf: &[u8], pos: usize, depth: u32) -> Scan<u64> {
    let mut r = Reader { buf, pos, depth };
    let mut n = 0u64;
    while r.more() {
        let f = r.key(Msg::ScopeSpans)?;
        match f.num() {
            1 => nested!(scope, r, f)?,
            2 => {
                nested!(span, r, f)?;
                n += 1;
            }
            3 => r.string(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(n)
}

fn span(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::Span)?;
        match f.num() {
            1 | 2 | 4 => r.bytes(f)?,
            3 | 5 => r.string(f)?,
            6 | 10 | 12 | 14 => r.varint_field(f)?,
            7 | 8 => r.fixed64(f)?,
            9 => nested!(key_value, r, f)?,
            11 => nested!(event, r, f)?,
            13 => nested!(link, r, f)?,
            15 => nested!(status, r, f)?,
            16 => r.fixed32(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

fn event(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::Event)?;
        match f.num() {
            1 => r.fixed64(f)?,
            2 => r.string(f)?,
            3 => nested!(key_value, r, f)?,
            4 => r.varint_field(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

fn link(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::Link)?;
        match f.num() {
            1 | 2 => r.bytes(f)?,
            3 => r.string(f)?,
            4 => nested!(key_value, r, f)?,
            5 => r.varint_field(f)?,
            6 => r.fixed32(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

fn status(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::Status)?;
        match f.num() {
            2 => r.string(f)?,
            3 => r.varint_field(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

// --- logs ---

fn resource_logs(buf: &[u8], pos: usize, depth: u32) -> Scan<u64> {
    let mut r = Reader { buf, pos, depth };
    let mut n = 0u64;
    while r.more() {
        let f = r.key(Msg::ResourceLogs)?;
        match f.num() {
            1 => nested!(resource, r, f)?,
            2 => n = n.saturating_add(nested!(scope_logs, r, f)?),
            3 => r.string(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(n)
}

fn scope_logs(buf: &[u8], pos: usize, depth: u32) -> Scan<u64> {
    let mut r = Reader { buf, pos, depth };
    let mut n = 0u64;
    while r.more() {
        let f = r.key(Msg::ScopeLogs)?;
        match f.num() {
            1 => nested!(scope, r, f)?,
            2 => {
                nested!(log_record, r, f)?;
                n += 1;
            }
            3 => r.string(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(n)
}

fn log_record(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::LogRecord)?;
        match f.num() {
            1 | 11 => r.fixed64(f)?,
            2 | 7 => r.varint_field(f)?,
            3 | 12 => r.string(f)?,
            5 => nested!(any_value, r, f)?,
            6 => nested!(key_value, r, f)?,
            8 => r.fixed32(f)?,
            9 | 10 => r.bytes(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

// --- metrics ---

fn resource_metrics(buf: &[u8], pos: usize, depth: u32) -> Scan<u64> {
    let mut r = Reader { buf, pos, depth };
    let mut n = 0u64;
    while r.more() {
        let f = r.key(Msg::ResourceMetrics)?;
        match f.num() {
            1 => nested!(resource, r, f)?,
            2 => n = n.saturating_add(nested!(scope_metrics, r, f)?),
            3 => r.string(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(n)
}

fn scope_metrics(buf: &[u8], pos: usize, depth: u32) -> Scan<u64> {
    let mut r = Reader { buf, pos, depth };
    let mut n = 0u64;
    while r.more() {
        let f = r.key(Msg::ScopeMetrics)?;
        match f.num() {
            1 => nested!(scope, r, f)?,
            2 => n = n.saturating_add(nested!(metric, r, f)?),
            3 => r.string(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(n)
}

/// Returns the data points of the metric's `data` oneof. Like prost, a
/// repeated occurrence of the same oneof member merges into it, while a
/// different member replaces it (dropping the points counted so far).
fn metric(buf: &[u8], pos: usize, depth: u32) -> Scan<u64> {
    let mut r = Reader { buf, pos, depth };
    let mut member = 0u32;
    let mut n = 0u64;
    while r.more() {
        let f = r.key(Msg::Metric)?;
        let points = match f.num() {
            1..=3 => {
                r.string(f)?;
                continue;
            }
            12 => {
                nested!(key_value, r, f)?;
                continue;
            }
            5 => nested!(gauge, r, f)?,
            7 => nested!(sum, r, f)?,
            9 => nested!(histogram, r, f)?,
            10 => nested!(exp_histogram, r, f)?,
            11 => nested!(summary, r, f)?,
            _ => {
                r.skip(f)?;
                continue;
            }
        };
        if member == f.num() {
            n = n.saturating_add(points);
        } else {
            member = f.num();
            n = points;
        }
    }
    Ok(n)
}

fn gauge(buf: &[u8], pos: usize, depth: u32) -> Scan<u64> {
    let mut r = Reader { buf, pos, depth };
    let mut n = 0u64;
    while r.more() {
        let f = r.key(Msg::Gauge)?;
        match f.num() {
            1 => {
                nested!(number_dp, r, f)?;
                n += 1;
            }
            _ => r.skip(f)?,
        }
    }
    Ok(n)
}

fn sum(buf: &[u8], pos: usize, depth: u32) -> Scan<u64> {
    let mut r = Reader { buf, pos, depth };
    let mut n = 0u64;
    while r.more() {
        let f = r.key(Msg::Sum)?;
        match f.num() {
            1 => {
                nested!(number_dp, r, f)?;
                n += 1;
            }
            2 | 3 => r.varint_field(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(n)
}

fn histogram(buf: &[u8], pos: usize, depth: u32) -> Scan<u64> {
    let mut r = Reader { buf, pos, depth };
    let mut n = 0u64;
    while r.more() {
        let f = r.key(Msg::Histogram)?;
        match f.num() {
            1 => {
                nested!(histogram_dp, r, f)?;
                n += 1;
            }
            2 => r.varint_field(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(n)
}

fn exp_histogram(buf: &[u8], pos: usize, depth: u32) -> Scan<u64> {
    let mut r = Reader { buf, pos, depth };
    let mut n = 0u64;
    while r.more() {
        let f = r.key(Msg::ExpHistogram)?;
        match f.num() {
            1 => {
                nested!(exp_histogram_dp, r, f)?;
                n += 1;
            }
            2 => r.varint_field(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(n)
}

fn summary(buf: &[u8], pos: usize, depth: u32) -> Scan<u64> {
    let mut r = Reader { buf, pos, depth };
    let mut n = 0u64;
    while r.more() {
        let f = r.key(Msg::Summary)?;
        match f.num() {
            1 => {
                nested!(summary_dp, r, f)?;
                n += 1;
            }
            _ => r.skip(f)?,
        }
    }
    Ok(n)
}

fn number_dp(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::NumberDp)?;
        match f.num() {
            2 | 3 | 4 | 6 => r.fixed64(f)?,
            5 => nested!(exemplar, r, f)?,
            7 => nested!(key_value, r, f)?,
            8 => r.varint_field(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

fn histogram_dp(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::HistogramDp)?;
        match f.num() {
            2 | 3 | 4 | 5 | 11 | 12 => r.fixed64(f)?,
            6 | 7 => r.repeated_fixed64(f)?,
            8 => nested!(exemplar, r, f)?,
            9 => nested!(key_value, r, f)?,
            10 => r.varint_field(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

fn exp_histogram_dp(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::ExpHistogramDp)?;
        match f.num() {
            1 => nested!(key_value, r, f)?,
            2..=5 | 7 | 12..=14 => r.fixed64(f)?,
            6 | 10 => r.varint_field(f)?,
            8 | 9 => nested!(buckets, r, f)?,
            11 => nested!(exemplar, r, f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

fn buckets(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::Buckets)?;
        match f.num() {
            1 => r.varint_field(f)?,
            2 => r.repeated_varint(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

fn summary_dp(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::SummaryDp)?;
        match f.num() {
            2..=5 => r.fixed64(f)?,
            6 => nested!(quantile, r, f)?,
            7 => nested!(key_value, r, f)?,
            8 => r.varint_field(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

fn quantile(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::Quantile)?;
        match f.num() {
            1 | 2 => r.fixed64(f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

fn exemplar(buf: &[u8], pos: usize, depth: u32) -> Scan<()> {
    let mut r = Reader { buf, pos, depth };
    while r.more() {
        let f = r.key(Msg::Exemplar)?;
        match f.num() {
            2 | 3 | 6 => r.fixed64(f)?,
            4 | 5 => r.bytes(f)?,
            7 => nested!(key_value, r, f)?,
            _ => r.skip(f)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{
        any_value::Value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue,
        KeyValueList,
    };
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
        summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
        ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric,
        NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{
        span::{Event, Link},
        ResourceSpans, ScopeSpans, Span, Status,
    };
    use prost::Message;

    /// xorshift64*: deterministic, dependency-free.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn byte(&mut self) -> u8 {
            self.next() as u8
        }
    }

    // ----- builders -----

    fn any(v: Value) -> AnyValue {
        AnyValue { value: Some(v) }
    }

    fn kv(key: &str, v: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(any(v)),
            key_strindex: 0,
        }
    }

    /// One value of every `AnyValue` kind (and an empty one), nested ones
    /// included.
    fn every_value() -> Vec<Option<Value>> {
        vec![
            Some(Value::StringValue("héllo wörld".into())),
            Some(Value::BoolValue(true)),
            Some(Value::IntValue(-42)),
            Some(Value::DoubleValue(3.25)),
            Some(Value::ArrayValue(ArrayValue {
                values: vec![
                    any(Value::IntValue(1)),
                    any(Value::StringValue("two".into())),
                    any(Value::ArrayValue(ArrayValue {
                        values: vec![any(Value::BoolValue(false)), AnyValue { value: None }],
                    })),
                ],
            })),
            Some(Value::KvlistValue(KeyValueList {
                values: vec![
                    kv("inner", Value::DoubleValue(-0.5)),
                    kv(
                        "deeper",
                        Value::KvlistValue(KeyValueList {
                            values: vec![kv("x", Value::BytesValue(vec![0xff, 0, 0x80]))],
                        }),
                    ),
                ],
            })),
            Some(Value::BytesValue(vec![0xde, 0xad, 0xbe, 0xef, 0xff])),
            Some(Value::StringValueStrindex(7)),
            None,
        ]
    }

    fn attrs(rng: &mut Rng, n: usize) -> Vec<KeyValue> {
        let values = every_value();
        (0..n)
            .map(|i| KeyValue {
                key: format!("attr.{i}"),
                value: Some(AnyValue {
                    value: values[rng.below(values.len())].clone(),
                }),
                key_strindex: if i % 3 == 2 { 3 } else { 0 },
            })
            .collect()
    }

    fn resource(rng: &mut Rng, i: usize) -> Option<Resource> {
        if i == 1 {
            return None;
        }
        Some(Resource {
            attributes: vec![
                kv("service.name", Value::StringValue(format!("svc-{i}"))),
                kv("host.id", Value::IntValue(i as i64)),
            ]
            .into_iter()
            .chain(attrs(rng, 2))
            .collect(),
            dropped_attributes_count: i as u32 + 1,
            entity_refs: vec![EntityRef {
                schema_url: "https://opentelemetry.io/schemas/1.0".into(),
                r#type: "service".into(),
                id_keys: vec!["service.name".into(), "host.id".into()],
                description_keys: vec!["ümlaut".into()],
            }],
        })
    }

    fn scope(rng: &mut Rng, i: usize) -> Option<InstrumentationScope> {
        if i == 2 {
            return None;
        }
        Some(InstrumentationScope {
            name: format!("lib-{i}"),
            version: "1.2.3".into(),
            attributes: attrs(rng, 1),
            dropped_attributes_count: 1,
        })
    }

    fn span(rng: &mut Rng, i: usize) -> Span {
        Span {
            trace_id: (0..16).map(|_| rng.byte()).collect(),
            span_id: (0..8).map(|_| rng.byte()).collect(),
            trace_state: "k=v".into(),
            parent_span_id: if i.is_multiple_of(2) {
                vec![]
            } else {
                vec![1; 8]
            },
            flags: 0x101,
            name: format!("order.submit.{i}"),
            kind: (i % 6) as i32,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_000_500_000 + i as u64,
            attributes: if i == 0 {
                // One attribute of every value kind.
                every_value()
                    .into_iter()
                    .map(|value| KeyValue {
                        key: "k".into(),
                        value: Some(AnyValue { value }),
                        key_strindex: 0,
                    })
                    .collect()
            } else {
                attrs(rng, 3)
            },
            dropped_attributes_count: 2,
            events: (0..i % 3)
                .map(|e| Event {
                    time_unix_nano: 1_700_000_000_000_100_000 + e as u64,
                    name: "fill".into(),
                    attributes: attrs(rng, 2),
                    dropped_attributes_count: 1,
                })
                .collect(),
            dropped_events_count: 1,
            links: (0..(i + 1) % 2)
                .map(|_| Link {
                    trace_id: vec![2; 16],
                    span_id: vec![3; 8],
                    trace_state: "a=b".into(),
                    attributes: attrs(rng, 1),
                    dropped_attributes_count: 4,
                    flags: 0x300,
                })
                .collect(),
            dropped_links_count: 3,
            status: if i % 3 == 2 {
                None
            } else {
                Some(Status {
                    message: "rejected by venue".into(),
                    code: 2,
                })
            },
        }
    }

    fn traces(
        rng: &mut Rng,
        resources: usize,
        scopes: usize,
        spans: usize,
    ) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: (0..resources)
                .map(|r| ResourceSpans {
                    resource: resource(rng, r),
                    scope_spans: (0..scopes)
                        .map(|s| ScopeSpans {
                            scope: scope(rng, s),
                            spans: (0..spans + s).map(|i| span(rng, i)).collect(),
                            schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                        })
                        .collect(),
                    schema_url: if r == 0 { String::new() } else { "s".into() },
                })
                .collect(),
        }
    }

    fn exemplars(rng: &mut Rng) -> Vec<Exemplar> {
        vec![
            Exemplar {
                filtered_attributes: attrs(rng, 1),
                time_unix_nano: 17,
                span_id: vec![1; 8],
                trace_id: vec![2; 16],
                value: Some(exemplar::Value::AsDouble(1.5)),
            },
            Exemplar {
                filtered_attributes: vec![],
                time_unix_nano: 18,
                span_id: vec![],
                trace_id: vec![],
                value: Some(exemplar::Value::AsInt(-3)),
            },
        ]
    }

    fn number_points(rng: &mut Rng, n: usize) -> Vec<NumberDataPoint> {
        (0..n)
            .map(|i| NumberDataPoint {
                attributes: attrs(rng, 2),
                start_time_unix_nano: 1,
                time_unix_nano: 2 + i as u64,
                exemplars: if i == 0 { exemplars(rng) } else { vec![] },
                flags: (i % 2) as u32,
                value: Some(if i % 2 == 0 {
                    number_data_point::Value::AsDouble(i as f64 * 0.5)
                } else {
                    number_data_point::Value::AsInt(-(i as i64))
                }),
            })
            .collect()
    }

    fn metrics(rng: &mut Rng, resources: usize) -> ExportMetricsServiceRequest {
        let metric = |name: &str, data: Option<Data>| Metric {
            name: name.into(),
            description: "desc".into(),
            unit: "ms".into(),
            metadata: vec![kv("m", Value::IntValue(1))],
            data,
        };
        ExportMetricsServiceRequest {
            resource_metrics: (0..resources)
                .map(|r| ResourceMetrics {
                    resource: resource(rng, r),
                    scope_metrics: vec![ScopeMetrics {
                        scope: scope(rng, r),
                        metrics: vec![
                            metric(
                                "g",
                                Some(Data::Gauge(Gauge {
                                    data_points: number_points(rng, 2),
                                })),
                            ),
                            metric(
                                "s",
                                Some(Data::Sum(Sum {
                                    data_points: number_points(rng, 3),
                                    aggregation_temporality: 2,
                                    is_monotonic: true,
                                })),
                            ),
                            metric(
                                "h",
                                Some(Data::Histogram(Histogram {
                                    data_points: (0..2)
                                        .map(|i| HistogramDataPoint {
                                            attributes: attrs(rng, 1),
                                            start_time_unix_nano: 1,
                                            time_unix_nano: 2,
                                            count: 10,
                                            sum: if i == 0 { Some(12.5) } else { None },
                                            bucket_counts: vec![1, 2, 3, 4],
                                            explicit_bounds: vec![0.5, 1.0, 5.0],
                                            exemplars: exemplars(rng),
                                            flags: 1,
                                            min: Some(0.1),
                                            max: if i == 0 { Some(9.0) } else { None },
                                        })
                                        .collect(),
                                    aggregation_temporality: 1,
                                })),
                            ),
                            metric(
                                "e",
                                Some(Data::ExponentialHistogram(ExponentialHistogram {
                                    data_points: vec![ExponentialHistogramDataPoint {
                                        attributes: attrs(rng, 1),
                                        start_time_unix_nano: 1,
                                        time_unix_nano: 2,
                                        count: 7,
                                        sum: Some(3.0),
                                        scale: -3,
                                        zero_count: 1,
                                        positive: Some(Buckets {
                                            offset: -2,
                                            bucket_counts: vec![1, 300, 70_000, u64::MAX],
                                        }),
                                        negative: Some(Buckets {
                                            offset: 5,
                                            bucket_counts: vec![],
                                        }),
                                        flags: 1,
                                        exemplars: exemplars(rng),
                                        min: Some(-1.0),
                                        max: Some(1.0),
                                        zero_threshold: 1e-9,
                                    }],
                                    aggregation_temporality: 2,
                                })),
                            ),
                            metric(
                                "q",
                                Some(Data::Summary(Summary {
                                    data_points: vec![SummaryDataPoint {
                                        attributes: attrs(rng, 1),
                                        start_time_unix_nano: 1,
                                        time_unix_nano: 2,
                                        count: 3,
                                        sum: 4.5,
                                        quantile_values: vec![
                                            ValueAtQuantile {
                                                quantile: 0.5,
                                                value: 1.0,
                                            },
                                            ValueAtQuantile {
                                                quantile: 0.99,
                                                value: 2.0,
                                            },
                                        ],
                                        flags: 1,
                                    }],
                                })),
                            ),
                            metric("empty", None),
                        ],
                        schema_url: "x".into(),
                    }],
                    schema_url: "rm".into(),
                })
                .collect(),
        }
    }

    fn logs(rng: &mut Rng, resources: usize, scopes: usize) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: (0..resources)
                .map(|r| ResourceLogs {
                    resource: resource(rng, r),
                    scope_logs: (0..scopes)
                        .map(|s| ScopeLogs {
                            scope: scope(rng, s),
                            log_records: every_value()
                                .into_iter()
                                .enumerate()
                                .filter(|(i, _)| (i + s) % 2 == 0 || r == 0)
                                .map(|(i, body)| LogRecord {
                                    time_unix_nano: if i == 0 { 0 } else { 99 },
                                    observed_time_unix_nano: 100,
                                    severity_number: (i * 3) as i32,
                                    severity_text: "WARN".into(),
                                    body: Some(AnyValue { value: body }),
                                    attributes: attrs(rng, 1),
                                    dropped_attributes_count: i as u32,
                                    flags: 1,
                                    trace_id: vec![9; 16],
                                    span_id: vec![8; 8],
                                    event_name: if i == 1 {
                                        "order.reject".into()
                                    } else {
                                        String::new()
                                    },
                                })
                                .collect(),
                            schema_url: "sl".into(),
                        })
                        .collect(),
                    schema_url: "rl".into(),
                })
                .collect(),
        }
    }

    // ----- counts from decoded structures -----

    fn hex(buf: &[u8]) -> String {
        buf.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Asserts scanner and prost agree on `buf`.
    fn agree<M: Message + Default>(
        buf: &[u8],
        scan: fn(&[u8]) -> Result<Counts, WireError>,
        count: fn(&M) -> Counts,
    ) {
        match (M::decode(buf), scan(buf)) {
            (Ok(m), Ok(c)) => assert_eq!(count(&m), c, "counts differ for {}", hex(buf)),
            (Err(_), Err(_)) => {}
            (p, s) => panic!(
                "prost {:?} but scanner {:?} for input {}",
                p.map(|_| ()),
                s,
                hex(buf)
            ),
        }
    }

    /// Truncations, byte flips/replacements, insertions, deletions and random
    /// multi-byte damage of every seed; returns the number of inputs checked.
    fn mutate_and_compare<M: Message + Default>(
        seeds: &[Vec<u8>],
        scan: fn(&[u8]) -> Result<Counts, WireError>,
        count: fn(&M) -> Counts,
        rng: &mut Rng,
    ) -> usize {
        let mut n = 0;
        let mut check = |buf: &[u8]| {
            agree::<M>(buf, scan, count);
            n += 1;
        };
        // Spliced-in unknown fields of every wire type, incl. nested groups,
        // and a few troublemakers (end group, field 0, wire type 7, overlong).
        let splices: [&[u8]; 10] = [
            &[0xf8, 0x07, 0x96, 0x01],
            &[0xf9, 0x07, 1, 2, 3, 4, 5, 6, 7, 8],
            &[0xfa, 0x07, 2, 0xff, 0xfe],
            &[0xfd, 0x07, 1, 2, 3, 4],
            &[0xfb, 0x07, 0x0b, 0x08, 0x01, 0x0c, 0xfc, 0x07],
            &[0xfc, 0x07],
            &[0x00],
            &[0x0f],
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ],
        ];
        for seed in seeds {
            check(seed);
            let len = seed.len();
            for i in 0..len {
                check(&seed[..i]);
                let b = seed[i];
                let mut m = seed.clone();
                let replacements = [
                    b ^ 1,
                    b ^ 2,
                    b ^ 3,
                    b ^ 4,
                    b ^ 5,
                    b ^ 6,
                    b ^ 7,
                    b ^ 0x80,
                    b ^ 0x40,
                    b.wrapping_add(1),
                    b.wrapping_sub(1),
                    0x00,
                    0xff,
                    0x80,
                    rng.byte(),
                ];
                // Unoptimized builds try every third replacement per offset
                // (rotating), optimized ones all of them.
                let stride = if cfg!(debug_assertions) { 3 } else { 1 };
                for &v in replacements.iter().skip(i % stride).step_by(stride) {
                    m[i] = v;
                    check(&m);
                }
                let mut m = seed.clone();
                m.remove(i);
                check(&m);
                for ins in [rng.byte(), 0x80] {
                    let mut m = seed.clone();
                    m.insert(i, ins);
                    check(&m);
                }
            }
            for _ in 0..len {
                let mut m = seed.clone();
                let at = rng.below(m.len() + 1);
                let s = splices[rng.below(splices.len())];
                m.splice(at..at, s.iter().copied());
                check(&m);
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(m.len());
                    m[i] = rng.byte();
                }
                check(&m);
            }
        }
        n
    }

    // ----- tests -----

    #[test]
    fn realistic_requests_count_like_prost() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let t = traces(&mut rng, 3, 3, 4);
        let buf = t.encode_to_vec();
        let c = scan_traces(&buf).unwrap();
        assert_eq!(
            c,
            Counts::of_traces(&ExportTraceServiceRequest::decode(&buf[..]).unwrap())
        );
        assert_eq!(
            c,
            Counts {
                resources: 3,
                items: 3 * (4 + 5 + 6)
            }
        );

        let m = metrics(&mut rng, 3);
        let buf = m.encode_to_vec();
        let c = scan_metrics(&buf).unwrap();
        assert_eq!(
            c,
            Counts::of_metrics(&ExportMetricsServiceRequest::decode(&buf[..]).unwrap())
        );
        assert_eq!(
            c,
            Counts {
                resources: 3,
                items: 3 * (2 + 3 + 2 + 1 + 1)
            }
        );

        let l = logs(&mut rng, 3, 2);
        let buf = l.encode_to_vec();
        let c = scan_logs(&buf).unwrap();
        assert_eq!(
            c,
            Counts::of_logs(&ExportLogsServiceRequest::decode(&buf[..]).unwrap())
        );
        assert_eq!(c.resources, 3);
        assert_eq!(c.items, 2 * 9 + 2 * (5 + 4));
    }

    #[test]
    fn differential_mutations_agree_with_prost() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let trace_seeds = vec![
            traces(&mut rng, 1, 1, 3).encode_to_vec(),
            traces(&mut rng, 2, 1, 1).encode_to_vec(),
        ];
        let metric_seeds = vec![metrics(&mut rng, 1).encode_to_vec()];
        let log_seeds = vec![logs(&mut rng, 1, 1).encode_to_vec()];
        let t = mutate_and_compare(&trace_seeds, scan_traces, Counts::of_traces, &mut rng);
        let m = mutate_and_compare(&metric_seeds, scan_metrics, Counts::of_metrics, &mut rng);
        let l = mutate_and_compare(&log_seeds, scan_logs, Counts::of_logs, &mut rng);
        println!("differential: {t} trace, {m} metric, {l} log inputs");
        assert!(t > 10_000 && m > 10_000 && l > 5_000);
    }

    #[test]
    fn empty_buffer_is_an_empty_request() {
        assert_eq!(scan_traces(&[]), Ok(Counts::default()));
        assert_eq!(scan_metrics(&[]), Ok(Counts::default()));
        assert_eq!(scan_logs(&[]), Ok(Counts::default()));
        assert!(ExportTraceServiceRequest::decode(&[][..]).is_ok());
    }

    #[test]
    fn concatenated_requests_are_one_request_with_summed_counts() {
        let mut rng = Rng(7);
        let (a, b) = (traces(&mut rng, 2, 1, 3), traces(&mut rng, 1, 2, 1));
        let joined = [a.encode_to_vec(), b.encode_to_vec()].concat();
        let decoded = ExportTraceServiceRequest::decode(&joined[..]).unwrap();
        let sum = |x: Counts, y: Counts| Counts {
            resources: x.resources + y.resources,
            items: x.items + y.items,
        };
        assert_eq!(scan_traces(&joined).unwrap(), Counts::of_traces(&decoded));
        assert_eq!(
            scan_traces(&joined).unwrap(),
            sum(Counts::of_traces(&a), Counts::of_traces(&b))
        );

        let (a, b) = (metrics(&mut rng, 1), metrics(&mut rng, 2));
        let joined = [a.encode_to_vec(), b.encode_to_vec()].concat();
        let decoded = ExportMetricsServiceRequest::decode(&joined[..]).unwrap();
        assert_eq!(scan_metrics(&joined).unwrap(), Counts::of_metrics(&decoded));
        assert_eq!(
            scan_metrics(&joined).unwrap(),
            sum(Counts::of_metrics(&a), Counts::of_metrics(&b))
        );

        let (a, b) = (logs(&mut rng, 2, 2), logs(&mut rng, 1, 2));
        let joined = [a.encode_to_vec(), b.encode_to_vec()].concat();
        let decoded = ExportLogsServiceRequest::decode(&joined[..]).unwrap();
        assert_eq!(scan_logs(&joined).unwrap(), Counts::of_logs(&decoded));
        assert_eq!(
            scan_logs(&joined).unwrap(),
            sum(Counts::of_logs(&a), Counts::of_logs(&b))
        );
    }

    // ----- hand-made encodings -----

    fn varint(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_varint(v, &mut out);
        out
    }

    fn key(field: u32, wt: u8) -> Vec<u8> {
        varint(u64::from(field) << 3 | u64::from(wt))
    }

    fn ld(field: u32, body: &[u8]) -> Vec<u8> {
        [key(field, LEN), varint(body.len() as u64), body.to_vec()].concat()
    }

    /// Request with one resource, one scope and the given encoded span body.
    fn trace_with_span(span: &[u8]) -> Vec<u8> {
        ld(1, &ld(2, &ld(2, span)))
    }

    fn log_with_record(record: &[u8]) -> Vec<u8> {
        ld(1, &ld(2, &ld(2, record)))
    }

    fn metric_request(metric: &[u8]) -> Vec<u8> {
        ld(1, &ld(2, &ld(2, metric)))
    }

    fn check_traces(buf: &[u8]) -> Result<Counts, WireError> {
        agree::<ExportTraceServiceRequest>(buf, scan_traces, Counts::of_traces);
        scan_traces(buf)
    }

    fn check_logs(buf: &[u8]) -> Result<Counts, WireError> {
        agree::<ExportLogsServiceRequest>(buf, scan_logs, Counts::of_logs);
        scan_logs(buf)
    }

    fn check_metrics(buf: &[u8]) -> Result<Counts, WireError> {
        agree::<ExportMetricsServiceRequest>(buf, scan_metrics, Counts::of_metrics);
        scan_metrics(buf)
    }

    #[test]
    fn wrong_wire_type_on_known_field_is_rejected_like_prost() {
        // start_time_unix_nano (fixed64) sent as a varint.
        let span = [key(7, VARINT), varint(5)].concat();
        let err = check_traces(&trace_with_span(&span)).unwrap_err();
        assert!(
            matches!(
                err,
                WireError::UnexpectedWireType {
                    name: "Span.start_time_unix_nano",
                    actual: 0,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("expected 1 (64-bit)"), "{err}");
        // flags (fixed32) sent as fixed64, name (string) as varint,
        // attributes (message) as a group, kind (enum) as fixed32.
        for bad in [
            [key(16, I64), vec![0; 8]].concat(),
            [key(5, VARINT), varint(1)].concat(),
            [key(9, SGROUP), key(9, EGROUP)].concat(),
            [key(6, I32), vec![0; 4]].concat(),
            [key(1, VARINT), varint(1)].concat(),
        ] {
            check_traces(&trace_with_span(&bad)).unwrap_err();
        }
        // Same field numbers with the right wire type are fine.
        let good = [
            key(16, I32),
            vec![1; 4],
            ld(5, b"n"),
            ld(9, &[]),
            key(6, VARINT),
            varint(2),
        ]
        .concat();
        assert_eq!(check_traces(&trace_with_span(&good)).unwrap().items, 1);
    }

    #[test]
    fn unknown_enum_values_and_odd_bytes_are_accepted_like_prost() {
        // kind = -1 (10-byte varint) and 1000; status code 77; severity 12345.
        let span = [
            key(6, VARINT),
            varint(u64::MAX),
            key(6, VARINT),
            varint(1000),
            ld(15, &[key(3, VARINT), varint(77)].concat()),
            ld(1, &[0xff; 3]),
            ld(2, &[]),
            ld(4, &[0xc3; 33]),
        ]
        .concat();
        assert_eq!(check_traces(&trace_with_span(&span)).unwrap().items, 1);
        let record = [key(2, VARINT), varint(12345), ld(9, &[0x80; 5])].concat();
        assert_eq!(check_logs(&log_with_record(&record)).unwrap().items, 1);
    }

    #[test]
    fn invalid_utf8_in_string_fields_is_rejected_like_prost() {
        let span = ld(5, &[b'a', 0xff]);
        let err = check_traces(&trace_with_span(&span)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid protobuf: invalid UTF-8 in string field Span.name (field 5) at byte 6"
        );
        let record = ld(12, &[0xc3]);
        let err = check_logs(&log_with_record(&record)).unwrap_err();
        assert!(matches!(
            err,
            WireError::InvalidUtf8 {
                name: "LogRecord.event_name",
                ..
            }
        ));
        // A key inside a nested kvlist value.
        let kvl = ld(6, &ld(1, &ld(1, &[0xe2, 0x82])));
        let record = ld(5, &kvl);
        check_logs(&log_with_record(&record)).unwrap_err();
    }

    #[test]
    fn unknown_fields_of_every_wire_type_are_skipped_like_prost() {
        let unknown = [
            key(100, VARINT),
            varint(u64::MAX),
            key(101, I64),
            vec![0; 8],
            ld(102, &[0xff, 0xff]),
            key(103, I32),
            vec![0; 4],
            key(104, SGROUP),
            key(1, VARINT),
            varint(3),
            key(2, SGROUP),
            ld(3, b"x"),
            key(2, EGROUP),
            key(104, EGROUP),
        ]
        .concat();
        let span = [unknown.clone(), ld(5, b"name")].concat();
        let buf = [trace_with_span(&span), unknown.clone()].concat();
        assert_eq!(
            check_traces(&buf).unwrap(),
            Counts {
                resources: 1,
                items: 1
            }
        );
        // Status.code's deprecated predecessor (field 1) is unknown now.
        let span = ld(15, &[key(1, VARINT), varint(2)].concat());
        check_traces(&trace_with_span(&span)).unwrap();

        // Group errors: stray end group, mismatched end, unterminated.
        for bad in [
            key(100, EGROUP),
            [key(100, SGROUP), key(101, EGROUP)].concat(),
            [key(100, SGROUP), key(1, VARINT), varint(1)].concat(),
        ] {
            check_traces(&trace_with_span(&bad)).unwrap_err();
            check_traces(&bad).unwrap_err();
        }
    }

    #[test]
    fn key_and_varint_edge_cases_match_prost() {
        let cases: Vec<Vec<u8>> = vec![
            vec![0x00],                                              // field 0
            vec![0x0e],                                              // wire type 6
            vec![0x0f],                                              // wire type 7
            vec![0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00],                // max field number
            vec![0x80, 0x80, 0x80, 0x80, 0x10, 0x00],                // key > u32::MAX
            vec![0x88, 0x80, 0x00, 0x00],                            // non-canonical key
            [vec![0xf8, 0x07], vec![0xff; 9], vec![0x01]].concat(),  // 10-byte varint
            [vec![0xf8, 0x07], vec![0xff; 9], vec![0x02]].concat(),  // overflow
            [vec![0xf8, 0x07], vec![0x80; 10], vec![0x00]].concat(), // 11 bytes
            [vec![0xf8, 0x07], vec![0x80; 9], vec![0x00]].concat(),  // padded zero
            vec![0xf8, 0x07, 0x80],                                  // truncated
            vec![
                0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
            ], // huge len
        ];
        for case in &cases {
            check_traces(case).ok();
            check_metrics(case).ok();
            check_logs(case).ok();
        }
        assert!(matches!(
            scan_traces(&[0x00]),
            Err(WireError::FieldNumberZero { .. })
        ));
        assert!(matches!(
            scan_traces(&cases[4]),
            Err(WireError::KeyOutOfRange { .. })
        ));
        assert!(scan_traces(&cases[3]).is_ok());
    }

    #[test]
    fn packed_and_unpacked_repeated_numbers_are_both_accepted() {
        let fixed = |v: u64| v.to_le_bytes().to_vec();
        let hdp = [
            key(6, I64),
            fixed(1),
            ld(6, &[fixed(2), fixed(3)].concat()),
            key(6, I64),
            fixed(4),
            ld(7, &fixed(0x3ff0_0000_0000_0000)),
            key(7, I64),
            fixed(0),
        ]
        .concat();
        let metric = ld(9, &ld(1, &hdp));
        assert_eq!(check_metrics(&metric_request(&metric)).unwrap().items, 1);
        let decoded = ExportMetricsServiceRequest::decode(&metric_request(&metric)[..]).unwrap();
        let Some(Data::Histogram(h)) =
            &decoded.resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            panic!("no histogram")
        };
        assert_eq!(h.data_points[0].bucket_counts, [1, 2, 3, 4]);

        let buckets = [
            key(2, VARINT),
            varint(5),
            ld(2, &[varint(300), varint(u64::MAX), varint(0)].concat()),
        ]
        .concat();
        let metric = ld(10, &ld(1, &ld(8, &buckets)));
        assert_eq!(check_metrics(&metric_request(&metric)).unwrap().items, 1);

        for bad in [
            ld(9, &ld(1, &ld(6, &[0; 7]))),  // packed fixed64 of 7 bytes
            ld(9, &ld(1, &ld(6, &[0; 12]))), // ... of 12 bytes
            ld(9, &ld(1, &ld(7, &[0; 4]))),  // packed double of 4 bytes
            ld(9, &ld(1, &[key(6, I32), vec![0; 4]].concat())),
            ld(10, &ld(1, &ld(8, &ld(2, &[0x80])))), // packed varint cut short
            ld(10, &ld(1, &ld(8, &[key(2, I64), vec![0; 8]].concat()))),
            ld(7, &ld(1, &[key(4, VARINT), varint(1)].concat())), // as_double as varint
        ] {
            check_metrics(&metric_request(&bad)).unwrap_err();
        }
    }

    #[test]
    fn metric_data_oneof_is_last_member_wins_like_prost() {
        let mut rng = Rng(3);
        let gauge = |n| Metric {
            data: Some(Data::Gauge(Gauge {
                data_points: number_points(&mut Rng(5), n),
            })),
            ..Default::default()
        };
        let sum = Metric {
            data: Some(Data::Sum(Sum {
                data_points: number_points(&mut rng, 2),
                ..Default::default()
            })),
            ..Default::default()
        };
        // gauge(3) + gauge(1) merge; a different member replaces.
        let cases = [
            (vec![gauge(3), gauge(1)], 4),
            (vec![gauge(3), sum.clone()], 2),
            (vec![gauge(3), sum.clone(), gauge(1)], 1),
            (vec![sum.clone(), Metric::default(), sum.clone()], 4),
        ];
        for (parts, expected) in cases {
            let metric: Vec<u8> = parts.iter().flat_map(|m| m.encode_to_vec()).collect();
            assert_eq!(
                check_metrics(&metric_request(&metric)).unwrap().items,
                expected
            );
        }
    }

    /// Every scanned message type: its name, the request kind it is reached
    /// from (0 traces, 1 metrics, 2 logs) and the field path from the root.
    const PATHS: &[(&str, u8, &[u32])] = &[
        ("ExportTraceServiceRequest", 0, &[]),
        ("ResourceSpans", 0, &[1]),
        ("Resource", 0, &[1, 1]),
        ("EntityRef", 0, &[1, 1, 3]),
        ("KeyValue", 0, &[1, 1, 1]),
        ("AnyValue", 0, &[1, 1, 1, 2]),
        ("ArrayValue", 0, &[1, 1, 1, 2, 5]),
        ("KeyValueList", 0, &[1, 1, 1, 2, 6]),
        ("ScopeSpans", 0, &[1, 2]),
        ("InstrumentationScope", 0, &[1, 2, 1]),
        ("Span", 0, &[1, 2, 2]),
        ("Span.Event", 0, &[1, 2, 2, 11]),
        ("Span.Link", 0, &[1, 2, 2, 13]),
        ("Status", 0, &[1, 2, 2, 15]),
        ("ExportMetricsServiceRequest", 1, &[]),
        ("ResourceMetrics", 1, &[1]),
        ("ScopeMetrics", 1, &[1, 2]),
        ("Metric", 1, &[1, 2, 2]),
        ("Gauge", 1, &[1, 2, 2, 5]),
        ("Sum", 1, &[1, 2, 2, 7]),
        ("Histogram", 1, &[1, 2, 2, 9]),
        ("ExponentialHistogram", 1, &[1, 2, 2, 10]),
        ("Summary", 1, &[1, 2, 2, 11]),
        ("NumberDataPoint", 1, &[1, 2, 2, 5, 1]),
        ("Exemplar", 1, &[1, 2, 2, 5, 1, 5]),
        ("HistogramDataPoint", 1, &[1, 2, 2, 9, 1]),
        ("ExponentialHistogramDataPoint", 1, &[1, 2, 2, 10, 1]),
        (
            "ExponentialHistogramDataPoint.Buckets",
            1,
            &[1, 2, 2, 10, 1, 8],
        ),
        ("SummaryDataPoint", 1, &[1, 2, 2, 11, 1]),
        ("SummaryDataPoint.ValueAtQuantile", 1, &[1, 2, 2, 11, 1, 6]),
        ("ExportLogsServiceRequest", 2, &[]),
        ("ResourceLogs", 2, &[1]),
        ("ScopeLogs", 2, &[1, 2]),
        ("LogRecord", 2, &[1, 2, 2]),
    ];

    fn at_path(kind: u8, path: &[u32], body: &[u8]) -> Result<Counts, WireError> {
        let mut buf = body.to_vec();
        for &field in path.iter().rev() {
            buf = ld(field, &buf);
        }
        match kind {
            0 => check_traces(&buf),
            1 => check_metrics(&buf),
            _ => check_logs(&buf),
        }
    }

    /// Every field number 1..=17 (all OTLP fields are below 17) plus unknown
    /// ones, in every message, with every wire type and a few payloads each:
    /// catches a field read with the wrong type, a forgotten field, or a
    /// `string` treated as `bytes`, which random mutations may miss.
    #[test]
    fn every_field_number_and_wire_type_agrees_with_prost() {
        let mut checked = 0;
        for &(_, kind, path) in PATHS {
            for field in (1..=17).chain([99, 536_870_911]) {
                let variants = [
                    [key(field, VARINT), varint(1)].concat(),
                    [key(field, VARINT), varint(u64::MAX)].concat(),
                    [key(field, I64), vec![0x11; 8]].concat(),
                    ld(field, &[]),
                    ld(field, &[0x08, 0x01]),
                    ld(field, &[0xff]),
                    ld(field, &[0; 8]),
                    ld(field, &[0; 12]),
                    ld(field, "é".as_bytes()),
                    [key(field, SGROUP), key(field, EGROUP)].concat(),
                    key(field, EGROUP),
                    [key(field, I32), vec![0x22; 4]].concat(),
                ];
                for body in &variants {
                    // Alone, twice, and followed by a valid unknown field.
                    at_path(kind, path, body).ok();
                    at_path(kind, path, &body.repeat(2)).ok();
                    at_path(kind, path, &[&body[..], &[0xf8, 0x07, 0x01]].concat()).ok();
                    checked += 3;
                }
            }
        }
        assert!(checked > 3000);
    }

    /// `PATHS` really reaches the scanner function of each named message, and
    /// every message description is covered.
    #[test]
    fn paths_reach_the_named_messages() {
        for desc in DESCS.iter().filter(|d| d.name != "group") {
            let &(_, kind, path) = PATHS
                .iter()
                .find(|(name, _, _)| *name == desc.name)
                .unwrap_or_else(|| panic!("no path for {}", desc.name));
            for &(field, name) in desc.fields {
                let err = at_path(kind, path, &key(field, EGROUP)).unwrap_err();
                assert_eq!(
                    (err.clone(), name),
                    (
                        WireError::UnexpectedWireType {
                            message: desc.name,
                            field,
                            name,
                            actual: EGROUP,
                            expected: match err {
                                WireError::UnexpectedWireType { expected, .. } => expected,
                                _ => "",
                            },
                            offset: path.len() * 2,
                        },
                        name
                    )
                );
            }
        }
    }

    /// `depth` nested AnyValue(ArrayValue(...)) levels as a log body, with
    /// `inner` as the innermost AnyValue's content.
    fn nested_body(depth: usize, inner: &[u8]) -> Vec<u8> {
        let mut v = inner.to_vec();
        for _ in 0..depth {
            v = ld(5, &ld(1, &v));
        }
        log_with_record(&ld(5, &v))
    }

    #[test]
    fn nesting_limit_matches_prost_exactly() {
        let unknown = [key(99, VARINT), varint(1)].concat();
        let scalar = [key(3, VARINT), varint(1)].concat();
        let mut accepted = [0; 3];
        for depth in 40..52 {
            for (i, inner) in [&[][..], &scalar[..], &unknown[..]].iter().enumerate() {
                let buf = nested_body(depth, inner);
                if check_logs(&buf).is_ok() {
                    accepted[i] = depth;
                }
            }
        }
        // The request, ResourceLogs, ScopeLogs, LogRecord and the body use 4
        // levels, each nesting step 2 more: after 48 steps the innermost
        // AnyValue's fields are at the limit, where prost still takes scalar
        // fields but neither a nested message nor an unknown field.
        assert_eq!(accepted, [48, 48, 47]);
        let err = scan_logs(&nested_body(60, &[])).unwrap_err();
        assert!(err.to_string().contains("nesting too deep"), "{err}");

        // Nested unknown groups count too.
        for depth in 90..110 {
            let mut g = Vec::new();
            for _ in 0..depth {
                g.extend(key(7, SGROUP));
            }
            for _ in 0..depth {
                g.extend(key(7, EGROUP));
            }
            check_traces(&g).ok();
        }
    }

    #[test]
    fn very_deep_nesting_is_an_error_not_a_stack_overflow() {
        // 200_000 levels of ArrayValue/AnyValue, built back to front.
        let mut rev: Vec<u8> = Vec::new();
        let push_ld = |rev: &mut Vec<u8>, field: u32| {
            let len = rev.len() as u64;
            rev.extend(varint(len).iter().rev());
            rev.extend(key(field, LEN).iter().rev());
        };
        for _ in 0..200_000 {
            push_ld(&mut rev, 1);
            push_ld(&mut rev, 5);
        }
        rev.reverse();
        let buf = log_with_record(&ld(5, &rev));
        let err = scan_logs(&buf).unwrap_err();
        assert!(matches!(err, WireError::TooDeep { .. }), "{err}");
        assert!(ExportLogsServiceRequest::decode(&buf[..]).is_err());
        // Same with unknown groups.
        let groups = [
            key(9, SGROUP).repeat(200_000),
            key(9, EGROUP).repeat(200_000),
        ]
        .concat();
        assert!(matches!(
            scan_traces(&groups),
            Err(WireError::TooDeep { .. })
        ));
        assert!(ExportTraceServiceRequest::decode(&groups[..]).is_err());
    }

    #[test]
    fn error_messages_name_the_field_and_position() {
        let buf = trace_with_span(&ld(9, &[0x0a, 0x05, b'a']));
        let err = scan_traces(&buf).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid protobuf: truncated length-delimited field 1 (KeyValue.key) in KeyValue at byte 8"
        );
        let buf = [0x0a, 0x03, 0x12, 0x05, 0x00];
        assert_eq!(
            scan_traces(&buf).unwrap_err().to_string(),
            "invalid protobuf: truncated length-delimited field 2 (ResourceSpans.scope_spans) in \
             ResourceSpans at byte 2"
        );
    }
}
