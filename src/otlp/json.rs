//! OTLP/JSON with non-finite doubles.
//!
//! The proto3 JSON mapping writes NaN and the infinities as the strings `"NaN"`,
//! `"Infinity"` and `"-Infinity"`. serde_json writes `null` for them and the serde
//! impls of `opentelemetry-proto` read doubles as numbers only (except summary
//! quantiles), so a profit factor of +∞ would be lost on the way out and refused on the
//! way in. These adapters sit between the OTLP types and serde_json: on output a
//! non-finite double becomes its string; on input such a string becomes the double where
//! a double is expected. Everything else is byte-for-byte what serde_json does.
//!
//! On input "where a double is expected" has two cases. A field the OTLP types read
//! directly as `f64` asks for one, and gets it from the string. A field below a
//! `#[serde(flatten)]` (a metric's data, a point's `asDouble`, an attribute's
//! `doubleValue`) is first buffered without a type, so there the string is read as a
//! double when its key is one that only ever holds doubles.

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};
use serde::ser::{self, Serialize, Serializer};
use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

/// Keys whose values are doubles wherever they appear in OTLP/JSON.
const DOUBLE_KEYS: &[&str] = &[
    "asDouble",
    "doubleValue",
    "sum",
    "min",
    "max",
    "explicitBounds",
    "zeroThreshold",
];

/// Serializes to OTLP/JSON, writing non-finite doubles as the proto3 JSON strings.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    value.serialize(Ser(&mut serde_json::Serializer::new(&mut out)))?;
    Ok(out)
}

/// Deserializes OTLP/JSON, reading `"NaN"`, `"Infinity"` and `"-Infinity"` as doubles.
pub fn from_slice<'de, T: de::Deserialize<'de>>(bytes: &'de [u8]) -> serde_json::Result<T> {
    let mut d = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(De {
        inner: &mut d,
        mode: Mode::Plain,
    })?;
    d.end()?;
    Ok(value)
}

fn non_finite_name(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

fn non_finite_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

// ---------------------------------------------------------------------------- output

struct Ser<S>(S);
struct Wrap<'a, T: ?Sized>(&'a T);
struct Compound<C>(C);

impl<T: Serialize + ?Sized> Serialize for Wrap<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Ser(s))
    }
}

macro_rules! forward_ser {
    ($($m:ident($t:ty)),* $(,)?) => {
        $(fn $m(self, v: $t) -> Result<S::Ok, S::Error> { self.0.$m(v) })*
    };
}

impl<S: Serializer> Serializer for Ser<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<S::SerializeSeq>;
    type SerializeTuple = Compound<S::SerializeTuple>;
    type SerializeTupleStruct = Compound<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<S::SerializeTupleVariant>;
    type SerializeMap = Compound<S::SerializeMap>;
    type SerializeStruct = Compound<S::SerializeStruct>;
    type SerializeStructVariant = Compound<S::SerializeStructVariant>;

    forward_ser!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            self.0.serialize_f32(v)
        } else {
            self.0.serialize_str(non_finite_name(v.into()))
        }
    }
    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            self.0.serialize_f64(v)
        } else {
            self.0.serialize_str(non_finite_name(v))
        }
    }
    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_none()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Wrap(v))
    }
    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_variant(name, index, variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Wrap(v))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Wrap(v))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Compound)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Compound)
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Compound)
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Compound)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(Compound)
    }
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(Compound)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Compound)
    }
    fn collect_str<T: fmt::Display + ?Sized>(self, v: &T) -> Result<S::Ok, S::Error> {
        self.0.collect_str(v)
    }
    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! compound {
    ($trait:ident, $m:ident) => {
        impl<C: ser::$trait> ser::$trait for Compound<C> {
            type Ok = C::Ok;
            type Error = C::Error;
            fn $m<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), C::Error> {
                self.0.$m(&Wrap(v))
            }
            fn end(self) -> Result<C::Ok, C::Error> {
                self.0.end()
            }
        }
    };
}
compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), C::Error> {
        self.0.serialize_key(&Wrap(k))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), C::Error> {
        self.0.serialize_value(&Wrap(v))
    }
    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        k: &K,
        v: &V,
    ) -> Result<(), C::Error> {
        self.0.serialize_entry(&Wrap(k), &Wrap(v))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

macro_rules! compound_struct {
    ($trait:ident) => {
        impl<C: ser::$trait> ser::$trait for Compound<C> {
            type Ok = C::Ok;
            type Error = C::Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                v: &T,
            ) -> Result<(), C::Error> {
                self.0.serialize_field(key, &Wrap(v))
            }
            fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
                self.0.skip_field(key)
            }
            fn end(self) -> Result<C::Ok, C::Error> {
                self.0.end()
            }
        }
    };
}
compound_struct!(SerializeStruct);
compound_struct!(SerializeStructVariant);

// ----------------------------------------------------------------------------- input

/// What the value being read is known to be.
#[derive(Clone)]
enum Mode {
    Plain,
    /// A double: the proto3 strings for non-finite values are read as doubles.
    Double,
    /// A map key: records whether it names a double field.
    Key(Rc<Cell<bool>>),
}

struct De<D> {
    inner: D,
    mode: Mode,
}

struct Vis<V> {
    inner: V,
    mode: Mode,
}

struct Seed<S> {
    inner: S,
    mode: Mode,
}

struct Seq<A> {
    inner: A,
    mode: Mode,
}

struct Map<A> {
    inner: A,
    key_is_double: Rc<Cell<bool>>,
}

struct Enum<A>(A);

impl<V> Vis<V> {
    fn plain(inner: V) -> Vis<V> {
        Vis {
            inner,
            mode: Mode::Plain,
        }
    }
}

macro_rules! forward_de {
    ($($m:ident),* $(,)?) => {
        $(fn $m<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
            self.inner.$m(Vis::plain(v))
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for De<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_any(Vis {
            inner: v,
            mode: self.mode,
        })
    }
    // A double is asked for: take a number or one of the proto3 strings.
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_any(Vis {
            inner: v,
            mode: Mode::Double,
        })
    }
    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.deserialize_f64(v)
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_option(Vis {
            inner: v,
            mode: self.mode,
        })
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_str(Vis {
            inner: v,
            mode: self.mode,
        })
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_string(Vis {
            inner: v,
            mode: self.mode,
        })
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_identifier(Vis {
            inner: v,
            mode: self.mode,
        })
    }

    forward_de!(
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_char,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_unit_struct(name, Vis::plain(v))
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_newtype_struct(name, Vis::plain(v))
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_tuple(len, Vis::plain(v))
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_tuple_struct(name, len, Vis::plain(v))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_struct(name, fields, Vis::plain(v))
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_enum(name, variants, Vis::plain(v))
    }
    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($m:ident($t:ty)),* $(,)?) => {
        $(fn $m<E: de::Error>(self, v: $t) -> Result<V::Value, E> { self.inner.$m(v) })*
    };
}

impl<V> Vis<V> {
    /// Sees a string: records a key, or turns a proto3 non-finite string into a double.
    fn string<'de, E: de::Error>(
        self,
        s: &str,
        forward: impl FnOnce(V) -> Result<V::Value, E>,
    ) -> Result<V::Value, E>
    where
        V: Visitor<'de>,
    {
        match &self.mode {
            Mode::Key(is_double) => is_double.set(DOUBLE_KEYS.contains(&s)),
            Mode::Double => {
                if let Some(d) = non_finite_value(s) {
                    return self.inner.visit_f64(d);
                }
            }
            Mode::Plain => {}
        }
        forward(self.inner)
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Vis<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_str<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        self.string(s, |v| v.visit_str(s))
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<V::Value, E> {
        self.string(s, |v| v.visit_borrowed_str(s))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<V::Value, E> {
        match &self.mode {
            Mode::Plain => self.inner.visit_string(s),
            _ => {
                let forward = |v: V| v.visit_str(&s);
                self.string(&s, forward)
            }
        }
    }
    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(De {
            inner: d,
            mode: self.mode,
        })
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(De {
            inner: d,
            mode: self.mode,
        })
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        // The elements of a double array (`explicitBounds`) are doubles.
        let mode = match self.mode {
            Mode::Double => Mode::Double,
            _ => Mode::Plain,
        };
        self.inner.visit_seq(Seq { inner: seq, mode })
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(Map {
            inner: map,
            key_is_double: Rc::new(Cell::new(false)),
        })
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(Enum(data))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(De {
            inner: d,
            mode: self.mode,
        })
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Seq<A> {
    type Error = A::Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.inner.next_element_seed(Seed {
            inner: seed,
            mode: self.mode.clone(),
        })
    }
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Map<A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.key_is_double.set(false);
        self.inner.next_key_seed(Seed {
            inner: seed,
            mode: Mode::Key(self.key_is_double.clone()),
        })
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let mode = if self.key_is_double.replace(false) {
            Mode::Double
        } else {
            Mode::Plain
        };
        self.inner.next_value_seed(Seed { inner: seed, mode })
    }
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Enum<A> {
    type Error = A::Error;
    type Variant = Enum<A::Variant>;
    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Enum<A::Variant>), A::Error> {
        let (v, variant) = self.0.variant_seed(Seed {
            inner: seed,
            mode: Mode::Plain,
        })?;
        Ok((v, Enum(variant)))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Enum<A> {
    type Error = A::Error;
    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(Seed {
            inner: seed,
            mode: Mode::Plain,
        })
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, Vis::plain(v))
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, Vis::plain(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        exponential_histogram_data_point, metric, number_data_point, summary_data_point, Exemplar,
        ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn double_attr(key: &str, d: f64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::DoubleValue(d)),
            }),
            ..Default::default()
        }
    }

    fn string_attr(key: &str, s: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(s.into())),
            }),
            ..Default::default()
        }
    }

    /// Every double field of the metrics model, holding `x`.
    fn metrics(x: f64) -> ExportMetricsServiceRequest {
        let attrs = vec![
            double_attr("profit_factor", x),
            string_attr("label", "NaN"),
            KeyValue {
                key: "list".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(any_value::Value::DoubleValue(x)),
                        }],
                    })),
                }),
                ..Default::default()
            },
        ];
        let number = NumberDataPoint {
            attributes: attrs.clone(),
            time_unix_nano: 5,
            exemplars: vec![Exemplar {
                value: Some(opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsDouble(x)),
                ..Default::default()
            }],
            value: Some(number_data_point::Value::AsDouble(x)),
            ..Default::default()
        };
        let metric = |name: &str, data| Metric {
            name: name.into(),
            data: Some(data),
            ..Default::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: attrs.clone(),
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        metric(
                            "gauge",
                            metric::Data::Gauge(Gauge {
                                data_points: vec![number.clone()],
                            }),
                        ),
                        metric(
                            "sum",
                            metric::Data::Sum(Sum {
                                data_points: vec![number],
                                ..Default::default()
                            }),
                        ),
                        metric(
                            "histogram",
                            metric::Data::Histogram(Histogram {
                                data_points: vec![HistogramDataPoint {
                                    count: 2,
                                    sum: Some(x),
                                    bucket_counts: vec![1, 1],
                                    explicit_bounds: vec![x],
                                    min: Some(x),
                                    max: Some(x),
                                    ..Default::default()
                                }],
                                ..Default::default()
                            }),
                        ),
                        metric(
                            "exponential",
                            metric::Data::ExponentialHistogram(ExponentialHistogram {
                                data_points: vec![ExponentialHistogramDataPoint {
                                    sum: Some(x),
                                    min: Some(x),
                                    max: Some(x),
                                    zero_threshold: x,
                                    positive: Some(exponential_histogram_data_point::Buckets {
                                        offset: 1,
                                        bucket_counts: vec![1],
                                    }),
                                    ..Default::default()
                                }],
                                ..Default::default()
                            }),
                        ),
                        metric(
                            "summary",
                            metric::Data::Summary(Summary {
                                data_points: vec![SummaryDataPoint {
                                    sum: x,
                                    quantile_values: vec![summary_data_point::ValueAtQuantile {
                                        quantile: 0.5,
                                        value: x,
                                    }],
                                    ..Default::default()
                                }],
                            }),
                        ),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// Compares with NaN equal to NaN, through the protobuf encoding.
    fn same(a: &ExportMetricsServiceRequest, b: &ExportMetricsServiceRequest) -> bool {
        use prost::Message;
        a.encode_to_vec() == b.encode_to_vec()
    }

    #[test]
    fn non_finite_doubles_round_trip_in_every_double_field() {
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let req = metrics(x);
            let json = String::from_utf8(to_vec(&req).unwrap()).unwrap();
            let name = non_finite_name(x);
            // asDouble ×4 (2 points, 2 exemplars), doubleValue ×6, histogram sum/min/max
            // and a bound, exponential sum/min/max/zeroThreshold, summary sum and value;
            // and the three string attributes reading "NaN".
            let expected = 4 + 6 + 4 + 4 + 2 + if x.is_nan() { 3 } else { 0 };
            assert_eq!(
                json.matches(&format!("\"{name}\"")).count(),
                expected,
                "{json}"
            );
            let back: ExportMetricsServiceRequest = from_slice(json.as_bytes()).unwrap();
            assert!(same(&req, &back), "{name}: {back:?}");
            // A string attribute that reads "NaN" stays a string.
            assert!(json.contains(r#"{"key":"label","value":{"stringValue":"NaN"}}"#));
        }
    }

    #[test]
    fn finite_output_is_byte_identical_to_serde_json() {
        let req = metrics(-12.5);
        assert_eq!(to_vec(&req).unwrap(), serde_json::to_vec(&req).unwrap());
        let back: ExportMetricsServiceRequest = from_slice(&to_vec(&req).unwrap()).unwrap();
        assert_eq!(back, req);
        let logs = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("Infinity".into())),
                        }),
                        attributes: vec![double_attr("x", 1.0), string_attr("sum", "-Infinity")],
                        trace_id: vec![1; 16],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let json = to_vec(&logs).unwrap();
        assert_eq!(json, serde_json::to_vec(&logs).unwrap());
        assert_eq!(from_slice::<ExportLogsServiceRequest>(&json).unwrap(), logs);
    }

    #[test]
    fn other_strings_in_double_fields_are_read_as_serde_json_reads_them() {
        let point = |p: &str| {
            format!(
                r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"m",{p}}}]}}]}}]}}"#
            )
        };
        for case in [
            point(r#""gauge":{"dataPoints":[{"asDouble":"lots"}]}"#),
            point(r#""gauge":{"dataPoints":[{"asDouble":"nan"}]}"#),
            point(r#""histogram":{"dataPoints":[{"sum":"nan","explicitBounds":["x"]}]}"#),
            point(r#""summary":{"dataPoints":[{"sum":"inf"}]}"#),
            point(
                r#""gauge":{"dataPoints":[{"attributes":[{"key":"k","value":{"doubleValue":"1.5"}}]}]}"#,
            ),
            "{} x".to_owned(),
        ] {
            let ours = from_slice::<ExportMetricsServiceRequest>(case.as_bytes());
            let theirs = serde_json::from_slice::<ExportMetricsServiceRequest>(case.as_bytes());
            match (ours, theirs) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{case}"),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{case}: {a:?} against serde_json's {b:?}"),
            }
        }
    }
}
