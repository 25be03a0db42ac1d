//! `${VAR}` expansion inside string values, applied while deserializing.
//!
//! Expansion happens after TOML parsing, so an environment value is data, never syntax:
//! whatever it holds (quotes, backslashes, newlines, `${`, non-ASCII) arrives unchanged in
//! one string value, is never expanded again, and can add no key or table. [`Expand`]
//! wraps a deserializer and expands every string value it hands out (keys and comments
//! are never expanded). A value that is exactly one `${VAR}` may also fill a number or
//! boolean field: the expanded text is parsed as the type the field asks for.

use serde::de::value::{
    BorrowedStrDeserializer, MapAccessDeserializer, StrDeserializer, StringDeserializer,
};
use serde::de::{
    self, DeserializeSeed, Deserializer, Expected, IgnoredAny, IntoDeserializer, MapAccess,
    SeqAccess, Visitor,
};
use std::collections::BTreeMap;
use std::fmt;

/// The environment as read when the file was loaded: every variable a value names, and
/// its value if set.
pub(crate) type Vars = BTreeMap<String, Option<String>>;

/// A piece of a string value: literal text, or a `${NAME}` / `${NAME:-default}` reference.
pub(crate) enum Piece<'a> {
    Text(&'a str),
    Var {
        name: &'a str,
        default: Option<&'a str>,
    },
}

/// Splits a string value into pieces; `$${` is a literal `${`.
pub(crate) fn pieces(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        let after = &rest[pos..];
        if let Some(literal) = after.strip_prefix("$${") {
            out.push(Piece::Text(&rest[..pos]));
            out.push(Piece::Text(&after[1..3]));
            rest = literal;
            continue;
        }
        if !after.starts_with("${") {
            out.push(Piece::Text(&rest[..=pos]));
            rest = &after[1..];
            continue;
        }
        out.push(Piece::Text(&rest[..pos]));
        let Some(end) = after.find('}') else {
            return Err("unterminated ${...}: add the closing '}'".into());
        };
        let inner = &after[2..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!(
                "invalid environment variable name {name:?} in ${{{inner}}}: use letters, digits and '_'"
            ));
        }
        out.push(Piece::Var { name, default });
        rest = &after[end + 1..];
    }
    out.push(Piece::Text(rest));
    out.retain(|p| !matches!(p, Piece::Text("")));
    Ok(out)
}

/// The value of one reference: the variable if set (and, with a default, not empty),
/// else the default.
pub(crate) fn lookup(vars: &Vars, name: &str, default: Option<&str>) -> Result<String, String> {
    match (vars.get(name).cloned().flatten(), default) {
        (Some(v), d) if !(v.is_empty() && d.is_some()) => Ok(v),
        (_, Some(d)) => Ok(d.to_owned()),
        (_, None) => Err(format!(
            "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
        )),
    }
}

/// The references a string value holds.
#[derive(Clone, Copy)]
pub(crate) enum Refs<'s> {
    None,
    /// The value is exactly this one reference.
    Whole(&'s str),
    /// The first of the references inside other text.
    Within(&'s str),
}

/// Expands `s`, and says which references it held.
pub(crate) fn expand<'s>(s: &'s str, vars: &Vars) -> Result<(String, Refs<'s>), String> {
    let pieces = pieces(s)?;
    let mut refs = Refs::None;
    let mut out = String::with_capacity(s.len());
    for p in &pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Var { name, default } => {
                if let Refs::None = refs {
                    refs = if pieces.len() == 1 {
                        Refs::Whole(name)
                    } else {
                        Refs::Within(name)
                    };
                }
                out.push_str(&lookup(vars, name, *default)?);
            }
        }
    }
    Ok((out, refs))
}

/// What the caller asked the deserializer for, so a whole `${VAR}` can be parsed into it.
#[derive(Clone, Copy, PartialEq)]
enum Want {
    Any,
    Bool,
    Int,
    Float,
    Enum,
}

/// A deserializer whose string values are expanded. `skip` names a key of the first
/// table it meets that is left out (the core's `critical`, which no component declares).
pub(crate) struct Expand<'v, D> {
    pub de: D,
    pub vars: &'v Vars,
    pub skip: Option<&'static str>,
}

impl<'v, D> Expand<'v, D> {
    pub fn new(de: D, vars: &'v Vars) -> Self {
        Expand {
            de,
            vars,
            skip: None,
        }
    }

    fn visit<V>(&self, v: V, want: Want) -> Visit<'v, V> {
        Visit {
            v,
            vars: self.vars,
            skip: self.skip,
            want,
        }
    }
}

macro_rules! forward {
    ($($method:ident => $want:ident),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
            let visit = self.visit(v, Want::$want);
            self.de.$method(visit)
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Expand<'_, D> {
    type Error = D::Error;

    forward! {
        deserialize_any => Any, deserialize_bool => Bool,
        deserialize_i8 => Int, deserialize_i16 => Int, deserialize_i32 => Int, deserialize_i64 => Int,
        deserialize_u8 => Int, deserialize_u16 => Int, deserialize_u32 => Int, deserialize_u64 => Int,
        deserialize_i128 => Any, deserialize_u128 => Any,
        deserialize_f32 => Float, deserialize_f64 => Float,
        deserialize_char => Any, deserialize_str => Any, deserialize_string => Any,
        deserialize_bytes => Any, deserialize_byte_buf => Any, deserialize_option => Any,
        deserialize_unit => Any, deserialize_seq => Any, deserialize_map => Any,
        deserialize_identifier => Any,
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        let visit = self.visit(v, Want::Any);
        self.de.deserialize_unit_struct(name, visit)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        let visit = self.visit(v, Want::Any);
        self.de.deserialize_newtype_struct(name, visit)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, D::Error> {
        let visit = self.visit(v, Want::Any);
        self.de.deserialize_tuple(len, visit)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, D::Error> {
        let visit = self.visit(v, Want::Any);
        self.de.deserialize_tuple_struct(name, len, visit)
    }

    /// Forwarded as is: `toml::Spanned` and TOML datetimes are special struct names the
    /// inner deserializer must see.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        let visit = self.visit(v, Want::Any);
        self.de.deserialize_struct(name, fields, visit)
    }

    /// Read as any value, so a string enum (`protocol = "${PROTO:-grpc}"`) is expanded
    /// before its variant is matched.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        let visit = self.visit(v, Want::Enum);
        self.de.deserialize_any(visit)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.de.deserialize_ignored_any(v)
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

struct Visit<'v, V> {
    v: V,
    vars: &'v Vars,
    skip: Option<&'static str>,
    want: Want,
}

impl<'de, V: Visitor<'de>> Visit<'_, V> {
    fn string<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        let (text, refs) = expand(s, self.vars).map_err(E::custom)?;
        let expected = &self.v as &dyn Expected;
        let bad = |name: &str| E::custom(format!("the value of ${{{name}}} is not {expected}"));
        let typed = matches!(self.want, Want::Bool | Want::Int | Want::Float);
        match (self.want, refs) {
            (Want::Enum, _) => self.v.visit_enum(text.into_deserializer()),
            // Not echoed: the text holds an environment value, which may be a secret.
            (_, Refs::Within(name)) if typed => Err(E::custom(format!(
                "expected {expected}, found text around ${{{name}}}: to fill this key from the environment, write the reference alone (\"${{{name}}}\")"
            ))),
            (Want::Bool, Refs::Whole(name)) => match text.trim() {
                "true" => self.v.visit_bool(true),
                "false" => self.v.visit_bool(false),
                _ => Err(bad(name)),
            },
            (Want::Int, Refs::Whole(name)) => {
                if let Ok(n) = text.trim().parse::<u64>() {
                    self.v.visit_u64(n)
                } else if let Ok(n) = text.trim().parse::<i64>() {
                    self.v.visit_i64(n)
                } else {
                    Err(bad(name))
                }
            }
            (Want::Float, Refs::Whole(name)) => match text.trim().parse::<f64>() {
                Ok(n) => self.v.visit_f64(n),
                Err(_) => Err(bad(name)),
            },
            _ => self.v.visit_string(text),
        }
    }

    /// Strings without `$` go through untouched (and stay borrowed).
    fn plain(&self, s: &str) -> bool {
        self.want != Want::Enum && !s.contains('$')
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Visit<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.v.expecting(f)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<V::Value, E> {
        self.v.visit_bool(b)
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<V::Value, E> {
        self.v.visit_i64(n)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<V::Value, E> {
        self.v.visit_u64(n)
    }
    fn visit_i128<E: de::Error>(self, n: i128) -> Result<V::Value, E> {
        self.v.visit_i128(n)
    }
    fn visit_u128<E: de::Error>(self, n: u128) -> Result<V::Value, E> {
        self.v.visit_u128(n)
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<V::Value, E> {
        self.v.visit_f64(n)
    }
    fn visit_char<E: de::Error>(self, c: char) -> Result<V::Value, E> {
        self.v.visit_char(c)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        if self.plain(s) {
            return self.v.visit_str(s);
        }
        self.string(s)
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<V::Value, E> {
        if self.plain(s) {
            return self.v.visit_borrowed_str(s);
        }
        self.string(s)
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<V::Value, E> {
        if self.plain(&s) {
            return self.v.visit_string(s);
        }
        self.string(&s)
    }
    fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<V::Value, E> {
        self.v.visit_bytes(b)
    }
    fn visit_borrowed_bytes<E: de::Error>(self, b: &'de [u8]) -> Result<V::Value, E> {
        self.v.visit_borrowed_bytes(b)
    }
    fn visit_byte_buf<E: de::Error>(self, b: Vec<u8>) -> Result<V::Value, E> {
        self.v.visit_byte_buf(b)
    }
    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.v.visit_none()
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.v.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.v.visit_some(Expand {
            de: d,
            vars: self.vars,
            skip: self.skip,
        })
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.v.visit_newtype_struct(Expand {
            de: d,
            vars: self.vars,
            skip: self.skip,
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        self.v.visit_seq(Seq { a, vars: self.vars })
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        let map = Map {
            a,
            vars: self.vars,
            skip: self.skip,
        };
        if self.want == Want::Enum {
            // A table enum `{ Variant = ... }`: its one key names the variant.
            return self.v.visit_enum(MapAccessDeserializer::new(map));
        }
        self.v.visit_map(map)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, a: A) -> Result<V::Value, A::Error> {
        self.v.visit_enum(a)
    }
}

struct Seq<'v, A> {
    a: A,
    vars: &'v Vars,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<'_, A> {
    type Error = A::Error;
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        self.a.next_element_seed(Seed {
            seed,
            vars: self.vars,
        })
    }
    fn size_hint(&self) -> Option<usize> {
        self.a.size_hint()
    }
}

struct Map<'v, A> {
    a: A,
    vars: &'v Vars,
    skip: Option<&'static str>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<'_, A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let Some(skip) = self.skip else {
            return self.a.next_key_seed(seed);
        };
        let mut seed = seed;
        loop {
            match self.a.next_key_seed(KeySeed { seed, skip })? {
                None => return Ok(None),
                Some(Key::Kept(k)) => return Ok(Some(k)),
                Some(Key::Skipped(s)) => {
                    self.a.next_value::<IgnoredAny>()?;
                    seed = s;
                }
            }
        }
    }
    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.a.next_value_seed(Seed {
            seed,
            vars: self.vars,
        })
    }
    fn size_hint(&self) -> Option<usize> {
        self.a.size_hint()
    }
}

struct Seed<'v, S> {
    seed: S,
    vars: &'v Vars,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Expand::new(d, self.vars))
    }
}

/// A key, or the seed handed back when the key is the skipped one. The key is read inside
/// the inner map's own `next_key_seed`, so its errors keep the key's position.
enum Key<K, T> {
    Kept(T),
    Skipped(K),
}

struct KeySeed<K> {
    seed: K,
    skip: &'static str,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<K> {
    type Value = Key<K, K::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for KeySeed<K> {
    type Value = Key<K, K::Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        if s == self.skip {
            return Ok(Key::Skipped(self.seed));
        }
        self.seed
            .deserialize(StrDeserializer::<E>::new(s))
            .map(Key::Kept)
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        if s == self.skip {
            return Ok(Key::Skipped(self.seed));
        }
        self.seed
            .deserialize(BorrowedStrDeserializer::<E>::new(s))
            .map(Key::Kept)
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        if s == self.skip {
            return Ok(Key::Skipped(self.seed));
        }
        self.seed
            .deserialize(StringDeserializer::<E>::new(s))
            .map(Key::Kept)
    }
}
