//! The row and value model, and the typed NDJSON codec of the datastore.
//!
//! Rows travel in [`Batch`]es: a table name, a shared [`Schema`] (column names) and
//! rows of [`Value`]s indexed by the schema. A row shorter than the schema has nulls
//! in its missing trailing columns, so a batch can grow columns as heterogeneous rows
//! (JSON) arrive without touching earlier rows.
//!
//! On disk a row is one JSON object per line. JSON has no date, time, bytes or exact
//! decimal types, so such values are annotated in a `_types` array of `column@CODE`
//! entries (the original tool's convention, extended):
//!
//! | code | value | text form |
//! |------|-------|-----------|
//! | `D`  | date | `2024-01-31` |
//! | `DT` | datetime | ISO-8601, with offset when the value has one |
//! | `T`  | time | `13:45:00.5` |
//! | `B`  | bytes | lowercase hex |
//! | `N`  | decimal | a JSON string, digit for digit (`"12.50"`) |
//! | `F`  | float NaN/inf | `"NaN"`, `"inf"`, `"-inf"` |
//!
//! Everything else is plain JSON: null, bool, integers (i64; larger integers read back
//! as decimals), floats, strings, and nested arrays/objects ([`Value::Json`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Timelike,
};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The name of the annotation field in NDJSON data files.
pub const TYPES_FIELD: &str = "_types";

/// One typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL / JSON null / a missing column.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A 64-bit float (NaN and infinities survive the round trip).
    Float(f64),
    /// An exact decimal as canonical text (`-?digits[.digits]`), any precision.
    Decimal(String),
    /// Text.
    String(String),
    /// A calendar date.
    Date(NaiveDate),
    /// A date and time without offset.
    DateTime(NaiveDateTime),
    /// A date and time with a UTC offset.
    DateTimeTz(DateTime<FixedOffset>),
    /// A time of day.
    Time(NaiveTime),
    /// Binary data.
    Bytes(Vec<u8>),
    /// A nested JSON array or object.
    Json(serde_json::Value),
}

impl Value {
    /// Builds a decimal after checking its text (`-?digits[.digits]`, exponent allowed
    /// on input and expanded).
    ///
    /// # Errors
    /// [`Error::Data`] when the text is not a decimal number.
    pub fn decimal(text: &str) -> Result<Value> {
        canonical_decimal(text)
            .map(Value::Decimal)
            .ok_or_else(|| Error::data("decimal", format!("`{text}` is not a decimal number")))
    }

    /// Converts a plain JSON value (no annotations) into a typed value.
    pub fn from_json(v: serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => number_value(&n.to_string()),
            serde_json::Value::String(s) => Value::String(s),
            v @ (serde_json::Value::Array(_) | serde_json::Value::Object(_)) => Value::Json(v),
        }
    }

    /// The value as plain JSON (dates as ISO text, bytes as hex, decimals as strings).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| float_text(*f).into()),
            Value::Json(v) => v.clone(),
            other => other.text().into_owned().into(),
        }
    }

    /// The type code used in `_types` annotations, if the value needs one.
    pub fn annotation(&self) -> Option<&'static str> {
        match self {
            Value::Date(_) => Some("D"),
            Value::DateTime(_) | Value::DateTimeTz(_) => Some("DT"),
            Value::Time(_) => Some("T"),
            Value::Bytes(_) => Some("B"),
            Value::Decimal(_) => Some("N"),
            Value::Float(f) if !f.is_finite() => Some("F"),
            _ => None,
        }
    }

    /// The value's type, for schema inference.
    pub fn col_type(&self) -> Option<crate::tbl::ColType> {
        use crate::tbl::ColType as C;
        Some(match self {
            Value::Null => return None,
            Value::Bool(_) => C::Bool,
            Value::Int(_) => C::Int,
            Value::Float(_) => C::Float,
            Value::Decimal(_) => C::Decimal,
            Value::String(_) => C::Str,
            Value::Date(_) => C::Date,
            Value::DateTime(_) | Value::DateTimeTz(_) => C::DateTime,
            Value::Time(_) => C::Time,
            Value::Bytes(_) => C::Bytes,
            Value::Json(_) => C::Object,
        })
    }

    /// A human/text form: ISO dates, hex bytes, canonical decimals, JSON for nested values.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Value::Null => Cow::Borrowed(""),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Int(i) => Cow::Owned(i.to_string()),
            Value::Float(f) => Cow::Owned(float_text(*f)),
            Value::Decimal(d) => Cow::Borrowed(d),
            Value::String(s) => Cow::Borrowed(s),
            Value::Date(d) => Cow::Owned(d.format("%Y-%m-%d").to_string()),
            Value::DateTime(dt) => Cow::Owned(dt.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
            Value::DateTimeTz(dt) => Cow::Owned(dt.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            Value::Time(t) => Cow::Owned(t.format("%H:%M:%S%.f").to_string()),
            Value::Bytes(b) => Cow::Owned(hex::encode(b)),
            Value::Json(v) => Cow::Owned(v.to_string()),
        }
    }

    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map(Into::into).unwrap_or(Value::Null)
    }
}

fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        // serde_json's shortest round-trip form (`2.0`, `1e-7`).
        serde_json::Number::from_f64(f)
            .map(|n| n.to_string())
            .unwrap_or_default()
    }
}

/// An integer literal fits i64 -> Int; otherwise an integer literal is a Decimal;
/// anything with a fraction or exponent is a Float.
fn number_value(raw: &str) -> Value {
    let is_int = !raw.contains(['.', 'e', 'E']);
    if is_int {
        match raw.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => canonical_decimal(raw)
                .map(Value::Decimal)
                .unwrap_or(Value::Null),
        }
    } else {
        raw.parse::<f64>().map(Value::Float).unwrap_or(Value::Null)
    }
}

/// Canonical decimal text: optional `-`, digits without leading zeros, optional `.`
/// and fraction digits (trailing zeros kept: `1.50` stays `1.50`). Exponents expand.
pub fn canonical_decimal(text: &str) -> Option<String> {
    let t = text.trim();
    let (neg, body) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], body[i + 1..].parse::<i32>().ok()?),
        None => (body, 0),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if exp.unsigned_abs() > 4096 {
        return None;
    }
    let mut digits: String = format!("{int_part}{frac_part}");
    let mut point = int_part.len() as i64 + exp as i64;
    if point < 0 {
        digits = "0".repeat((-point) as usize) + &digits;
        point = 0;
    }
    let point = point as usize;
    if point > digits.len() {
        digits.push_str(&"0".repeat(point - digits.len()));
    }
    let (i, f) = digits.split_at(point);
    let i = i.trim_start_matches('0');
    let i = if i.is_empty() { "0" } else { i };
    let mut out = String::with_capacity(digits.len() + 2);
    let zero = i == "0" && f.bytes().all(|b| b == b'0');
    if neg && !zero {
        out.push('-');
    }
    out.push_str(i);
    if !f.is_empty() {
        out.push('.');
        out.push_str(f);
    }
    Some(out)
}

/// Column names of a batch, shared between batches of a stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schema {
    names: Vec<Arc<str>>,
    index: HashMap<Arc<str>, usize>,
    /// `"name":` per column, escaped once for the encoder.
    json_keys: Vec<Box<str>>,
}

impl Schema {
    /// A schema with these column names, in order. Duplicate names keep the first.
    pub fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Self {
        let mut s = Schema::default();
        for n in names {
            s.index_or_insert(n.as_ref());
        }
        s
    }

    /// The column names in order.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when there are no columns.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The position of a column.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The position of a column, appending it when new.
    pub fn index_or_insert(&mut self, name: &str) -> usize {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        let n: Arc<str> = Arc::from(name);
        let i = self.names.len();
        self.names.push(n.clone());
        self.index.insert(n, i);
        let mut key = String::with_capacity(name.len() + 3);
        write_json_str(&mut key, name);
        key.push(':');
        self.json_keys.push(key.into_boxed_str());
        i
    }
}

/// One row: values indexed by the batch schema; missing trailing values are null.
pub type Row = Vec<Value>;

/// A batch of rows for one table.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The table the rows belong to.
    pub table: Arc<str>,
    /// The column names.
    pub schema: Arc<Schema>,
    /// The rows.
    pub rows: Vec<Row>,
}

impl Batch {
    /// The value of `column` in row `i` (null when missing).
    pub fn get(&self, i: usize, column: &str) -> &Value {
        const NULL: Value = Value::Null;
        self.schema
            .index_of(column)
            .and_then(|c| self.rows.get(i)?.get(c))
            .unwrap_or(&NULL)
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows as `(column, value)` pairs, for tests and small tools.
    pub fn records(&self) -> Vec<Vec<(String, Value)>> {
        self.rows
            .iter()
            .map(|r| {
                self.schema
                    .names()
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.to_string(), r.get(i).cloned().unwrap_or(Value::Null)))
                    .collect()
            })
            .collect()
    }
}

/// Accumulates rows of one table into batches; columns may be added as rows arrive.
#[derive(Debug)]
pub struct BatchBuilder {
    table: Arc<str>,
    schema: Schema,
    rows: Vec<Row>,
}

impl BatchBuilder {
    /// An empty builder for `table`.
    pub fn new(table: impl Into<Arc<str>>) -> Self {
        BatchBuilder {
            table: table.into(),
            schema: Schema::default(),
            rows: Vec::new(),
        }
    }

    /// An empty builder with a known schema (the schema may still grow).
    pub fn with_schema(table: impl Into<Arc<str>>, schema: Schema) -> Self {
        BatchBuilder {
            table: table.into(),
            schema,
            rows: Vec::new(),
        }
    }

    /// The table the rows are for.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The schema so far.
    pub fn schema_mut(&mut self) -> &mut Schema {
        &mut self.schema
    }

    /// Appends a row whose values follow the current schema.
    pub fn push_row(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// Appends a row given as `(column, value)` pairs.
    pub fn push_pairs<K: AsRef<str>>(&mut self, pairs: impl IntoIterator<Item = (K, Value)>) {
        let mut row: Row = Vec::with_capacity(self.schema.len());
        for (k, v) in pairs {
            let i = self.schema.index_or_insert(k.as_ref());
            if row.len() <= i {
                row.resize(i + 1, Value::Null);
            }
            row[i] = v;
        }
        self.rows.push(row);
    }

    /// The number of buffered rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no rows are buffered.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Takes the buffered rows as a batch; the schema is kept for the next rows.
    pub fn take(&mut self) -> Batch {
        Batch {
            table: self.table.clone(),
            schema: Arc::new(self.schema.clone()),
            rows: std::mem::take(&mut self.rows),
        }
    }
}

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
fn write_json_value(s: &mut String, v: &Value) {
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
        Value::Json(j) => {
            let _ = write!(s, "{j}");
        }
        Value::Date(d) if (0..=9999).contains(&d.year()) => {
            s.push('"');
            write_date(s, *d);
            s.push('"');
        }
        Value::DateTime(dt)
            if (0..=9999).contains(&dt.year()) && dt.nanosecond() < 1_000_000_000 =>
        {
            s.push('"');
            write_date(s, dt.date());
            s.push('T');
            write_time(s, dt.time());
            s.push('"');
        }
        other => write_json_str(s, &other.text()),
    }
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

/// Appends `text` as a JSON string: runs without escapes are copied whole.
fn write_json_str(s: &mut String, text: &str) {
    s.push('"');
    let bytes = text.as_bytes();
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
struct Line {
    members: Vec<(String, Value)>,
    types: Vec<String>,
}

impl<'de> Deserialize<'de> for Line {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Line;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> std::result::Result<Line, M::Error> {
                let mut line = Line {
                    members: Vec::with_capacity(16),
                    types: Vec::new(),
                };
                while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                    if k == TYPES_FIELD {
                        line.types = m.next_value()?;
                    } else {
                        let v: PlainValue = m.next_value()?;
                        line.members.push((k.into_owned(), v.0));
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
                (c == k).then_some(code)
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
    Ok(())
}

/// True when the line has a number of 19 or more digits outside strings: one that may
/// not fit i64/u64 and must keep its digits (written by other tools; ours writes such
/// values as annotated strings).
fn has_long_number(line: &str) -> bool {
    let (mut in_str, mut escaped, mut run) = (false, false, 0);
    for b in line.bytes() {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_str = true;
                run = 0;
            }
            b'0'..=b'9' => {
                run += 1;
                if run >= 19 {
                    return true;
                }
            }
            _ => run = 0,
        }
    }
    false
}

/// The slower exact decoding: values kept as raw JSON, integers of any length read
/// back as decimals.
fn exact_line(line: &str) -> std::result::Result<Line, serde_json::Error> {
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
        let k = k.into_owned();
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
/// order, integers of any length exact (longer than i64: decimals), nested values as
/// JSON.
///
/// # Errors
/// The parser's message for malformed JSON or a value that is not an object; a member
/// named `_types` (reserved by the datastore format) is refused.
pub fn decode_json_object(text: &str) -> std::result::Result<Vec<(String, Value)>, String> {
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

/// Parses the text form of an annotated value (`D`, `DT`, `T`, `B`, `N`, `F`).
pub fn parse_typed_text(text: &str, code: &str) -> Option<Value> {
    Some(match code {
        "D" => Value::Date(NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?),
        "DT" => parse_datetime(text)?,
        "T" => Value::Time(NaiveTime::parse_from_str(text, "%H:%M:%S%.f").ok()?),
        "B" => Value::Bytes(hex::decode(text).ok()?),
        "N" => Value::Decimal(canonical_decimal(text)?),
        "F" => Value::Float(match text {
            "NaN" | "nan" => f64::NAN,
            "inf" | "Infinity" => f64::INFINITY,
            "-inf" | "-Infinity" => f64::NEG_INFINITY,
            other => other.parse().ok()?,
        }),
        _ => return None,
    })
}

/// Parses ISO-8601 datetimes: with an offset (`Z`, `+02:00`) into
/// [`Value::DateTimeTz`], without into [`Value::DateTime`]; `T` or a space between
/// date and time.
pub fn parse_datetime(text: &str) -> Option<Value> {
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(Value::DateTimeTz(dt));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(t, f) {
            return Some(Value::DateTimeTz(dt));
        }
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, f) {
            return Some(Value::DateTime(dt));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_date_time_text_matches_chrono() {
        let days = [
            (0, 1, 1),
            (1970, 1, 1),
            (2024, 2, 29),
            (9999, 12, 31),
            (33, 7, 4),
        ];
        let nanos = [
            0,
            1,
            999,
            1_000,
            120_000,
            5_000_000,
            500_000_000,
            999_999_999,
            123_456_789,
        ];
        for (y, m, d) in days {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            for ns in nanos {
                let dt = date.and_hms_nano_opt(23, 5, 9, ns).unwrap();
                for v in [Value::Date(date), Value::DateTime(dt)] {
                    let mut fast = String::new();
                    write_json_value(&mut fast, &v);
                    let mut slow = String::new();
                    write_json_str(&mut slow, &v.text());
                    assert_eq!(fast, slow, "{v:?}");
                }
            }
        }
    }

    #[test]
    fn json_strings_escape_like_serde_json() {
        for t in [
            "plain",
            "a\"b",
            "back\\slash",
            "nl\n cr\r tab\t",
            "\u{1}\u{1f}x",
            "é ü 😀",
            "",
        ] {
            let mut s = String::new();
            write_json_str(&mut s, t);
            assert_eq!(s, serde_json::to_string(t).unwrap());
        }
    }

    use super::*;
    use proptest::prelude::*;

    fn roundtrip(schema: &Schema, row: &[Value]) -> (Vec<String>, Vec<Value>) {
        let mut buf = Vec::new();
        encode_row(schema, row, &mut buf);
        let line = std::str::from_utf8(&buf).unwrap().trim_end();
        let mut b = BatchBuilder::new("t");
        decode_row(line, &mut b, &|| "test".into()).unwrap();
        let batch = b.take();
        let names = batch.schema.names().iter().map(|n| n.to_string()).collect();
        let mut r = batch.rows[0].clone();
        r.resize(batch.schema.len(), Value::Null);
        (names, r)
    }

    #[test]
    fn typed_values_round_trip_with_annotations() {
        let schema = Schema::new([
            "n", "b", "i", "f", "big", "s", "d", "dt", "dtz", "t", "bin", "j", "nan",
        ]);
        let row = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-42),
            Value::Float(2.0),
            Value::decimal("123456789012345678901234567890.000000001").unwrap(),
            Value::String("naïve \"quoted\"\n日本語 \u{1}".into()),
            Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
            parse_datetime("2024-01-31T23:59:59.123456").unwrap(),
            parse_datetime("2024-01-31T23:59:59+02:00").unwrap(),
            Value::Time(NaiveTime::from_hms_milli_opt(13, 45, 0, 500).unwrap()),
            Value::Bytes(vec![0, 1, 254, 255]),
            Value::Json(serde_json::json!({"a": [1, {"b": null}]})),
            Value::Float(f64::NAN),
        ];
        let mut buf = Vec::new();
        encode_row(&schema, &row, &mut buf);
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(
            text.contains(r#""_types":["big@N","d@D","dt@DT","dtz@DT","t@T","bin@B","nan@F"]"#),
            "{text}"
        );
        assert!(
            text.contains(r#""big":"123456789012345678901234567890.000000001""#),
            "{text}"
        );
        let (names, back) = roundtrip(&schema, &row);
        assert_eq!(
            names,
            schema
                .names()
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        );
        for (i, (a, b)) in row.iter().zip(&back).enumerate() {
            match (a, b) {
                (Value::Float(x), Value::Float(y)) if x.is_nan() => assert!(y.is_nan()),
                _ => assert_eq!(a, b, "column {}", names[i]),
            }
        }
    }

    #[test]
    fn big_integers_read_back_as_decimals() {
        let mut b = BatchBuilder::new("t");
        decode_row(
            r#"{"x":123456789012345678901234567890,"y":-5}"#,
            &mut b,
            &|| "l".into(),
        )
        .unwrap();
        let batch = b.take();
        assert_eq!(
            batch.rows[0][0],
            Value::Decimal("123456789012345678901234567890".into())
        );
        assert_eq!(batch.rows[0][1], Value::Int(-5));
    }

    #[test]
    fn bad_lines_name_their_location() {
        let mut b = BatchBuilder::new("t");
        let e = decode_row(r#"{"d":"2024-13-01","_types":["d@D"]}"#, &mut b, &|| {
            "f.ndjson:7".into()
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("f.ndjson:7: column `d`: not a valid @D value"),
            "{e}"
        );
        let e = decode_row("[1,2]", &mut b, &|| "f.ndjson:8".into()).unwrap_err();
        assert!(
            e.to_string().contains("f.ndjson:8: not a JSON object"),
            "{e}"
        );
    }

    #[test]
    fn decimals_are_canonical() {
        assert_eq!(canonical_decimal("007.50").unwrap(), "7.50");
        assert_eq!(canonical_decimal("-0.0").unwrap(), "0.0");
        assert_eq!(canonical_decimal("1.5e3").unwrap(), "1500");
        assert_eq!(canonical_decimal("12e-3").unwrap(), "0.012");
        assert_eq!(canonical_decimal(".5").unwrap(), "0.5");
        assert!(canonical_decimal("1.2.3").is_none());
        assert!(canonical_decimal("abc").is_none());
        assert!(canonical_decimal("").is_none());
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::Float),
            "-?[1-9][0-9]{0,40}\\.[0-9]{1,20}".prop_map(|s| Value::decimal(&s).unwrap()),
            any::<String>().prop_map(Value::String),
            (0i32..3_000_000)
                .prop_map(|d| Value::Date(NaiveDate::from_num_days_from_ce_opt(d).unwrap())),
            (0i64..4_000_000_000_000, 0u32..1_000_000).prop_map(|(s, us)| Value::DateTime(
                DateTime::from_timestamp(s, us * 1000).unwrap().naive_utc()
            )),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(Value::Bytes),
            prop::collection::vec(any::<i32>(), 1..5)
                .prop_map(|v| Value::Json(serde_json::json!(v))),
        ]
    }

    proptest! {
        #[test]
        fn any_row_round_trips(
            cols in prop::collection::vec("[a-z_@ \"\\\\é]{1,8}", 1..8),
            vals in prop::collection::vec(value_strategy(), 8),
        ) {
            let schema = Schema::new(&cols);
            prop_assume!(schema.index_of(TYPES_FIELD).is_none());
            let row: Vec<Value> = vals.into_iter().take(schema.len()).collect();
            let (names, back) = roundtrip(&schema, &row);
            prop_assert_eq!(names.len(), schema.len());
            // Column names that contain '@' confuse the annotation split only if they
            // look like `x@CODE`; our annotations use rsplit so the last '@' wins.
            for (a, b) in row.iter().zip(&back) {
                prop_assert_eq!(a, b);
            }
        }
    }
}
