//! The typed NDJSON codec of the datastore's `ndjson.gz` data files (see the
//! annotation table in [`super`]).

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::{NaiveDate, NaiveTime};
use serde::Deserialize;

use super::*;
use crate::error::{Error, Result};

/// Appends one row as a JSON line (with `\n`) to `out`.
pub fn encode_row(schema: &Schema, row: &[Value], out: &mut Vec<u8>) {
    let mut s = String::with_capacity(64 + row.len() * 16);
    encode_row_into(schema, row, &mut s);
    out.extend_from_slice(s.as_bytes());
}

/// Appends one row as a JSON line (with `\n`) to a reusable text buffer (no allocation
/// per row beyond the buffer's growth).
pub fn encode_row_into(schema: &Schema, row: &[Value], s: &mut String) {
    RowEncoder::default().encode(schema, row, s);
}

/// Encodes rows of one stream, remembering the `_types` suffix of the previous row: in
/// a typed stream every row carries the same annotations, so they are written once per
/// change, not escaped again for every row.
#[derive(Debug, Default)]
pub struct RowEncoder {
    types: Vec<(usize, &'static str)>,
    last_types: Vec<(usize, &'static str)>,
    suffix: String,
}

impl RowEncoder {
    /// Appends one row as a JSON line (with `\n`) to `s`.
    pub fn encode(&mut self, schema: &Schema, row: &[Value], s: &mut String) {
        s.push('{');
        self.types.clear();
        for (i, key) in schema.json_keys.iter().enumerate() {
            let v = row.get(i).unwrap_or(&Value::Null);
            if i > 0 {
                s.push(',');
            }
            s.push_str(key);
            if let Some(code) = v.annotation() {
                self.types.push((i, code));
            }
            write_json_value(s, v);
        }
        if !self.types.is_empty() {
            if self.types != self.last_types {
                self.suffix.clear();
                if !schema.is_empty() {
                    self.suffix.push(',');
                }
                write_json_str(&mut self.suffix, TYPES_FIELD);
                self.suffix.push_str(":[");
                for (n, (i, code)) in self.types.iter().enumerate() {
                    if n > 0 {
                        self.suffix.push(',');
                    }
                    let mut entry = String::with_capacity(schema.names()[*i].len() + 3);
                    entry.push_str(&schema.names()[*i]);
                    entry.push('@');
                    entry.push_str(code);
                    write_json_str(&mut self.suffix, &entry);
                }
                self.suffix.push(']');
                std::mem::swap(&mut self.types, &mut self.last_types);
                self.types.clone_from(&self.last_types);
            }
            s.push_str(&self.suffix);
        }
        s.push_str("}\n");
    }
}

/// Writes a value's JSON form (annotated values as strings).
pub(super) fn write_json_value(s: &mut String, v: &Value) {
    match v {
        Value::Null => s.push_str("null"),
        Value::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => s.push_str(itoa::Buffer::new().format(*i)),
        Value::Float(f) if f.is_finite() => {
            if let Some(n) = serde_json::Number::from_f64(*f) {
                let _ = write!(s, "{n}");
            }
        }
        Value::String(t) | Value::Decimal(t) => write_json_str(s, t),
        Value::Json(j) => write_json_tree(s, j),
        Value::Date(_) | Value::DateTime(_) | Value::DateTimeTz(_) => {
            s.push('"');
            if write_temporal(s, v) {
                s.push('"');
            } else {
                s.pop();
                write_json_str(s, &v.text());
            }
        }
        other => write_json_str(s, &other.text()),
    }
}

/// The text form ([`Value::text`]) of a date, a datetime or a datetime with offset
/// (`to_rfc3339_opts(SecondsFormat::AutoSi, true)`), unquoted, without allocating.
/// False (nothing written) for other values and what the fast form does not cover:
/// years outside 0..=9999, leap seconds, offsets with seconds.
pub(super) fn write_temporal(s: &mut String, v: &Value) -> bool {
    match v {
        Value::Date(d) if (0..=9999).contains(&d.year()) => write_date(s, *d),
        Value::DateTime(dt)
            if (0..=9999).contains(&dt.year()) && dt.nanosecond() < 1_000_000_000 =>
        {
            write_date(s, dt.date());
            s.push('T');
            write_time(s, dt.time());
        }
        Value::DateTimeTz(dt) => {
            let off = dt.offset().local_minus_utc();
            let local = dt.naive_local();
            if !(0..=9999).contains(&local.year())
                || local.nanosecond() >= 1_000_000_000
                || off % 60 != 0
            {
                return false;
            }
            write_date(s, local.date());
            s.push('T');
            write_time(s, local.time());
            if off == 0 {
                s.push('Z');
            } else {
                let m = off.unsigned_abs() / 60;
                let mut b = [0u8; 6];
                b[0] = if off < 0 { b'-' } else { b'+' };
                put_digits(&mut b[1..3], m / 60);
                b[3] = b':';
                put_digits(&mut b[4..6], m % 60);
                s.push_str(std::str::from_utf8(&b).unwrap_or_default());
            }
        }
        _ => return false,
    }
    true
}

/// `YYYY-MM-DD` for years 0..=9999, as chrono's `%Y-%m-%d` writes them.
fn write_date(s: &mut String, d: NaiveDate) {
    let mut b = [0u8; 10];
    put_digits(&mut b[0..4], d.year() as u32);
    b[4] = b'-';
    put_digits(&mut b[5..7], d.month());
    b[7] = b'-';
    put_digits(&mut b[8..10], d.day());
    s.push_str(std::str::from_utf8(&b).unwrap_or_default());
}

/// `HH:MM:SS[.fff|.ffffff|.fffffffff]`, as chrono's `%H:%M:%S%.f` writes it (no
/// fraction when zero; 3, 6 or 9 digits otherwise). Leap seconds are not handled here.
fn write_time(s: &mut String, t: NaiveTime) {
    let mut b = [0u8; 18];
    put_digits(&mut b[0..2], t.hour());
    b[2] = b':';
    put_digits(&mut b[3..5], t.minute());
    b[5] = b':';
    put_digits(&mut b[6..8], t.second());
    let ns = t.nanosecond();
    let n = if ns == 0 {
        8
    } else {
        b[8] = b'.';
        if ns.is_multiple_of(1_000_000) {
            put_digits(&mut b[9..12], ns / 1_000_000);
            12
        } else if ns.is_multiple_of(1_000) {
            put_digits(&mut b[9..15], ns / 1_000);
            15
        } else {
            put_digits(&mut b[9..18], ns);
            18
        }
    };
    s.push_str(std::str::from_utf8(&b[..n]).unwrap_or_default());
}

/// Writes `v` as exactly `out.len()` decimal digits, zero-padded.
fn put_digits(out: &mut [u8], mut v: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Appends a JSON value as serde_json writes it compactly, without going through
/// `fmt` (nested objects and arrays of source records are common).
pub(super) fn write_json_tree(s: &mut String, v: &serde_json::Value) {
    match v {
        serde_json::Value::Null => s.push_str("null"),
        serde_json::Value::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                s.push_str(itoa::Buffer::new().format(i));
            } else if let Some(u) = n.as_u64() {
                s.push_str(itoa::Buffer::new().format(u));
            } else {
                let _ = write!(s, "{n}");
            }
        }
        serde_json::Value::String(t) => write_json_str(s, t),
        serde_json::Value::Array(a) => {
            s.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                write_json_tree(s, x);
            }
            s.push(']');
        }
        serde_json::Value::Object(m) => {
            s.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                write_json_str(s, k);
                s.push(':');
                write_json_tree(s, x);
            }
            s.push('}');
        }
    }
}

/// Appends `text` as a JSON string: runs without escapes are copied whole.
pub(super) fn write_json_str(s: &mut String, text: &str) {
    s.push('"');
    let bytes = text.as_bytes();
    // Most text has nothing to escape: one branch-free pass (vectorized) says so.
    let plain = bytes
        .iter()
        .fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        s.push_str(text);
        s.push('"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // Escaped bytes are ASCII, so `i` is a char boundary.
        s.push_str(&text[start..i]);
        if esc.is_empty() {
            let _ = write!(s, "\\u{:04x}", b);
        } else {
            s.push_str(esc);
        }
        start = i + 1;
    }
    s.push_str(&text[start..]);
    s.push('"');
}

/// One decoded line: members in order, plus the `_types` annotations.
struct Line<'a> {
    /// Member names borrowed from the text unless escaped there.
    members: Vec<(Cow<'a, str>, Value)>,
    types: Vec<String>,
}

impl<'de> Deserialize<'de> for Line<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Line<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> std::result::Result<Line<'de>, M::Error> {
                let mut line = Line {
                    members: Vec::with_capacity(16),
                    types: Vec::new(),
                };
                while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                    if k == TYPES_FIELD {
                        line.types = m.next_value()?;
                    } else {
                        let v: PlainValue = m.next_value()?;
                        line.members.push((k, v.0));
                    }
                }
                Ok(line)
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON value as a [`Value`], in one pass (no annotation applied yet).
struct PlainValue(Value);

impl<'de> Deserialize<'de> for PlainValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PlainValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> std::result::Result<PlainValue, E> {
                Ok(PlainValue(Value::Null))
            }
            fn visit_none<E>(self) -> std::result::Result<PlainValue, E> {
                Ok(PlainValue(Value::Null))
            }
            fn visit_bool<E>(self, b: bool) -> std::result::Result<PlainValue, E> {
                Ok(PlainValue(Value::Bool(b)))
            }
            fn visit_i64<E>(self, i: i64) -> std::result::Result<PlainValue, E> {
                Ok(PlainValue(Value::Int(i)))
            }
            fn visit_u64<E>(self, u: u64) -> std::result::Result<PlainValue, E> {
                Ok(PlainValue(match i64::try_from(u) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::Decimal(u.to_string()),
                }))
            }
            fn visit_f64<E>(self, f: f64) -> std::result::Result<PlainValue, E> {
                Ok(PlainValue(Value::Float(f)))
            }
            fn visit_str<E>(self, s: &str) -> std::result::Result<PlainValue, E> {
                Ok(PlainValue(Value::String(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> std::result::Result<PlainValue, E> {
                Ok(PlainValue(Value::String(s)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                a: A,
            ) -> std::result::Result<PlainValue, A::Error> {
                let v = serde_json::Value::deserialize(
                    serde::de::value::SeqAccessDeserializer::new(a),
                )?;
                Ok(PlainValue(Value::Json(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                a: A,
            ) -> std::result::Result<PlainValue, A::Error> {
                let v = serde_json::Value::deserialize(
                    serde::de::value::MapAccessDeserializer::new(a),
                )?;
                Ok(PlainValue(Value::Json(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Decodes one JSON line into `builder` (columns are added as they appear).
///
/// # Errors
/// [`Error::Data`] naming `location` when the line is not a JSON object or an
/// annotated value does not parse as its type.
pub fn decode_row(
    line: &str,
    builder: &mut BatchBuilder,
    location: &dyn Fn() -> String,
) -> Result<()> {
    decode_row_types(line, builder, location).map(drop)
}

/// [`decode_row`], returning the line's `_types` entries.
fn decode_row_types(
    line: &str,
    builder: &mut BatchBuilder,
    location: &dyn Fn() -> String,
) -> Result<Vec<String>> {
    let parsed: Line = if has_long_number(line) {
        exact_line(line)
    } else {
        serde_json::from_str(line)
    }
    .map_err(|e| Error::data(location(), format!("not a JSON object: {e}")))?;
    let mut row: Row = Vec::with_capacity(builder.schema.len());
    for (k, mut v) in parsed.members {
        if !parsed.types.is_empty()
            && let Some(code) = parsed.types.iter().find_map(|t| {
                let (c, code) = t.rsplit_once('@')?;
                (c == k.as_ref()).then_some(code)
            })
        {
            v = annotate(v, code).ok_or_else(|| {
                Error::data(
                    location(),
                    format!("column `{k}`: not a valid @{code} value"),
                )
            })?;
        }
        let i = builder.schema.index_or_insert(&k);
        if row.len() <= i {
            row.resize(i + 1, Value::Null);
        }
        row[i] = v;
    }
    builder.rows.push(row);
    Ok(parsed.types)
}

/// Decodes the lines of one stream, remembering the last line's `_types`: in a typed
/// stream every line carries the same annotations, so once they are known each line is
/// read in one pass (member names looked up without copying, annotated values typed
/// straight from the JSON text). A line whose `_types` text differs, or whose value
/// does not fit the annotation expected, is decoded the general way ([`decode_row`]),
/// which also gives its error: both ways give the same row for every line.
#[derive(Debug, Default)]
pub struct RowDecoder {
    /// The `_types` JSON text the codes below are for (`""`: lines without `_types`;
    /// `None`: nothing known yet).
    types: Option<String>,
    /// Lines decoded in one pass (for tests: the fast way is taken).
    pub(super) fast_lines: u64,
    /// The annotation code of each column of the builder's schema.
    codes: Vec<Option<&'static str>>,
}

impl RowDecoder {
    /// Decodes one JSON line into `builder`, as [`decode_row`] does.
    ///
    /// # Errors
    /// As [`decode_row`].
    pub fn decode(
        &mut self,
        line: &str,
        builder: &mut BatchBuilder,
        location: &dyn Fn() -> String,
    ) -> Result<()> {
        if let Some(types) = &self.types
            && !has_long_number(line)
        {
            let mut row: Row = Vec::with_capacity(builder.schema.len());
            let seed = FastLine {
                schema: &mut builder.schema,
                codes: &self.codes,
                row: &mut row,
            };
            let mut de = serde_json::Deserializer::from_str(line);
            if let Ok(raw) = serde::de::DeserializeSeed::deserialize(seed, &mut de)
                && de.end().is_ok()
                && raw.map_or("", |r| r.get()) == types
            {
                builder.rows.push(row);
                self.fast_lines += 1;
                return Ok(());
            }
        }
        let types = decode_row_types(line, builder, location)?;
        self.learn(&types, &builder.schema);
        Ok(())
    }

    /// Remembers a line's annotations for the lines after it (none: `""`, the lines
    /// of an untyped stream; nothing is remembered when a code is unknown or names a
    /// column the schema does not have yet).
    fn learn(&mut self, types: &[String], schema: &Schema) {
        self.types = None;
        if types.is_empty() {
            self.codes.clear();
            self.types = Some(String::new());
            return;
        }
        let mut codes = vec![None; schema.len()];
        for t in types {
            let Some((col, code)) = t.rsplit_once('@') else {
                return;
            };
            let Some(code) = ["D", "DT", "T", "B", "N", "F"]
                .into_iter()
                .find(|c| *c == code)
            else {
                return;
            };
            let Some(i) = schema.index_of(col) else {
                return;
            };
            // The first entry for a column wins, as in `decode_row`.
            codes[i].get_or_insert(code);
        }
        self.codes = codes;
        self.types = serde_json::to_string(types).ok();
    }
}

/// One line decoded with the annotations expected: the members go into `row`, and the
/// raw `_types` text is returned for the caller to check the expectation.
struct FastLine<'a> {
    schema: &'a mut Schema,
    codes: &'a [Option<&'static str>],
    row: &'a mut Row,
}

impl<'de> serde::de::DeserializeSeed<'de> for FastLine<'_> {
    type Value = Option<&'de serde_json::value::RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FastLine<'_> {
    type Value = Option<&'de serde_json::value::RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(
        self,
        mut m: M,
    ) -> std::result::Result<Self::Value, M::Error> {
        let mut types = None;
        while let Some(Key(k)) = m.next_key()? {
            if k == TYPES_FIELD {
                types = Some(m.next_value()?);
                continue;
            }
            // Members come in the schema's order in a typed stream: the next column is
            // checked first, the name looked up only when it is not that one.
            let next = self.row.len();
            let i = match self.schema.names().get(next) {
                Some(name) if **name == *k => next,
                _ => self.schema.index_or_insert(&k),
            };
            let v = match self.codes.get(i).copied().flatten() {
                None => m.next_value::<PlainValue>()?.0,
                Some(code) => m.next_value_seed(Typed(code))?,
            };
            if i == self.row.len() {
                self.row.push(v);
            } else {
                if self.row.len() <= i {
                    self.row.resize(i + 1, Value::Null);
                }
                self.row[i] = v;
            }
        }
        Ok(types)
    }
}

/// A member name, borrowed from the line unless it has escapes (serde's own `Cow`
/// always copies).
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A value of an annotated column, typed as it is read; anything the annotation does
/// not take is an error (the caller then decodes the line the general way).
struct Typed(&'static str);

impl<'de> serde::de::DeserializeSeed<'de> for Typed {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Value, D::Error> {
        struct V(&'static str);
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "a @{} value", self.0)
            }
            fn visit_unit<E>(self) -> std::result::Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Value, E> {
                parse_typed_text(s, self.0).ok_or_else(|| E::custom("not a valid annotated value"))
            }
            fn visit_i64<E: serde::de::Error>(self, i: i64) -> std::result::Result<Value, E> {
                annotate(Value::Int(i), self.0).ok_or_else(|| E::custom("not annotated"))
            }
            fn visit_u64<E: serde::de::Error>(self, u: u64) -> std::result::Result<Value, E> {
                match i64::try_from(u) {
                    Ok(i) => self.visit_i64(i),
                    Err(_) => Err(E::custom("out of range")),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, f: f64) -> std::result::Result<Value, E> {
                annotate(Value::Float(f), self.0).ok_or_else(|| E::custom("not annotated"))
            }
        }
        d.deserialize_any(V(self.0))
    }
}

/// True when the line has a number of 19 or more digits outside strings: one that may
/// not fit i64/u64 and must keep its digits (written by other tools; ours writes such
/// values as annotated strings).
pub(super) fn has_long_number(line: &str) -> bool {
    let b = line.as_bytes();
    let (mut i, mut run) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'"' => {
                // To the closing quote, a backslash's next byte skipped.
                run = 0;
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &b[i.min(b.len())..]) {
                        None => return false,
                        Some(k) if b[i + k] == b'\\' => i += k + 2,
                        Some(k) => {
                            i += k + 1;
                            break;
                        }
                    }
                }
                continue;
            }
            b'0'..=b'9' => {
                run += 1;
                if run >= 19 {
                    return true;
                }
            }
            _ => run = 0,
        }
        i += 1;
    }
    false
}

/// The slower exact decoding: values kept as raw JSON, integers of any length read
/// back as decimals.
fn exact_line(line: &str) -> std::result::Result<Line<'_>, serde_json::Error> {
    /// Members in order, values as raw JSON text.
    struct RawMembers<'a>(Vec<(Cow<'a, str>, &'a serde_json::value::RawValue)>);
    impl<'de: 'a, 'a> Deserialize<'de> for RawMembers<'a> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V<'a>(std::marker::PhantomData<&'a ()>);
            impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
                type Value = RawMembers<'a>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<M: serde::de::MapAccess<'de>>(
                    self,
                    mut m: M,
                ) -> std::result::Result<Self::Value, M::Error> {
                    let mut out = Vec::new();
                    while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                        out.push((k, m.next_value()?));
                    }
                    Ok(RawMembers(out))
                }
            }
            d.deserialize_map(V(std::marker::PhantomData))
        }
    }
    let raw: RawMembers = serde_json::from_str(line)?;
    let mut line_out = Line {
        members: Vec::with_capacity(raw.0.len()),
        types: Vec::new(),
    };
    for (k, v) in raw.0 {
        if k == TYPES_FIELD {
            line_out.types = serde_json::from_str(v.get())?;
            continue;
        }
        let text = v.get();
        let first = text.as_bytes().first().copied().unwrap_or(b'n');
        let value = if first == b'-' || first.is_ascii_digit() {
            number_value(text)
        } else {
            serde_json::from_str::<PlainValue>(text)?.0
        };
        line_out.members.push((k, value));
    }
    Ok(line_out)
}

/// Decodes one JSON object from a source (not the datastore's typed NDJSON): members in
/// order (names borrowed from `text` unless escaped there), integers of any length
/// exact (longer than i64: decimals), nested values as JSON.
///
/// # Errors
/// The parser's message for malformed JSON or a value that is not an object; a member
/// named `_types` (reserved by the datastore format) is refused.
pub fn decode_json_object(text: &str) -> std::result::Result<Vec<(Cow<'_, str>, Value)>, String> {
    let line = if has_long_number(text) {
        exact_line(text)
    } else {
        serde_json::from_str::<Line>(text)
    }
    .map_err(|e| e.to_string())?;
    if !line.types.is_empty() {
        return Err(format!(
            "the field `{TYPES_FIELD}` is reserved by the datastore format; rename it at the source"
        ));
    }
    Ok(line.members)
}

/// Applies a `_types` code to a plainly decoded value.
fn annotate(v: Value, code: &str) -> Option<Value> {
    match v {
        Value::Null => Some(Value::Null),
        Value::String(text) => parse_typed_text(&text, code),
        // Older writers put decimals as JSON numbers.
        Value::Int(i) if code == "N" => Some(Value::Decimal(i.to_string())),
        Value::Float(f) if code == "N" => canonical_decimal(&float_text(f)).map(Value::Decimal),
        _ => None,
    }
}
