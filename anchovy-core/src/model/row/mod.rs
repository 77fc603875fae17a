//! The row and value model, and the typed NDJSON codec of the datastore.
//!
//! Rows travel in [`Batch`]es: a table name, a shared [`Schema`] (column names) and
//! rows of [`Value`]s indexed by the schema. A row shorter than the schema has nulls
//! in its missing trailing columns, so a batch can grow columns as heterogeneous rows
//! (JSON) arrive without touching earlier rows.
//!
//! On disk a row is one JSON object per line. JSON has no date, time, bytes or exact
//! decimal types, so such values are annotated in a `_types` array of `column@CODE`
//! entries (the original tool's convention, extended; the original itself writes one
//! string of space-separated entries, `"born@D ts@DT"`, `""` for none, and only `D`,
//! `DT` and `B`: readers take both forms):
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

use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Timelike,
};

use crate::error::{Error, Result};

mod batch;
mod json;
mod ndjson;
#[cfg(test)]
mod tests;
mod text;

pub use self::batch::{Batch, BatchBuilder, Row, Schema, put};
pub use self::json::{
    Json, MAX_DEPTH, Member, ReadError, check_value, quote_or_backslash, quote_or_bracket,
    read_object, read_object_at,
};
pub use self::ndjson::{RowDecoder, RowEncoder, decode_row, encode_row, encode_row_into};
pub use self::text::{parse_datetime, parse_typed_text};

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
    /// A nested JSON array or object, as its compact text.
    Json(Json),
}

/// RFC 3339 (`Z` for UTC), except for an offset with seconds (local mean times of
/// old dates, `+00:19:32`): RFC 3339 offsets have minutes only, and chrono rounds
/// them (`+00:00:45` -> `+00:01`), which moves the instant; ISO 8601's `+HH:MM:SS`
/// keeps it exact (PostgreSQL, Python and [`parse_datetime`] read it).
fn datetime_tz_text(dt: &DateTime<FixedOffset>) -> String {
    let off = dt.offset().local_minus_utc();
    if off % 60 == 0 {
        return dt.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    }
    let a = off.unsigned_abs();
    format!(
        "{}{}{:02}:{:02}:{:02}",
        dt.naive_local().format("%Y-%m-%dT%H:%M:%S%.f"),
        if off < 0 { '-' } else { '+' },
        a / 3600,
        a / 60 % 60,
        a % 60
    )
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
            v @ (serde_json::Value::Array(_) | serde_json::Value::Object(_)) => {
                Value::Json(v.into())
            }
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
            Value::Json(v) => v.to_value(),
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
            Value::DateTimeTz(dt) => Cow::Owned(datetime_tz_text(dt)),
            Value::Time(t) => Cow::Owned(t.format("%H:%M:%S%.f").to_string()),
            Value::Bytes(b) => Cow::Owned(hex::encode(b)),
            Value::Json(v) => Cow::Borrowed(v.as_str()),
        }
    }

    /// Appends [`Value::text`] to `out`: integers, decimals, text, dates, times of
    /// datetimes and datetimes with offsets without allocating.
    pub fn write_text(&self, out: &mut String) {
        match self {
            Value::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
            Value::String(t) | Value::Decimal(t) => out.push_str(t),
            v @ (Value::Date(_) | Value::DateTime(_) | Value::DateTimeTz(_))
                if ndjson::write_temporal(out, v) => {}
            other => out.push_str(&other.text()),
        }
    }

    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// A member as read ([`read_object`]), untyped: integers exact (beyond i64:
/// decimals), other numbers floats, nested arrays and objects as [`Json`].
impl From<Member<'_>> for Value {
    fn from(m: Member<'_>) -> Value {
        match m {
            Member::Null => Value::Null,
            Member::Bool(b) => Value::Bool(b),
            Member::Number(n) => number_value(n),
            Member::Str(s) => Value::String(s.into_owned()),
            Member::Nested(t) => Value::Json(Json::from_checked(t)),
        }
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
/// anything with a fraction or exponent is a Float, except a number beyond f64's
/// range (`1e400`), which keeps its digits as a Decimal.
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
        match raw.parse::<f64>() {
            Ok(f) if f.is_finite() => Value::Float(f),
            Ok(f) => canonical_decimal(raw).map_or(Value::Float(f), Value::Decimal),
            Err(_) => Value::Null,
        }
    }
}

/// True when `t` is already canonical decimal text: an optional `-`, an integer part
/// without leading zeros (a lone `0` allowed) and an optional `.` with fraction digits;
/// `-0`, `-0.0`... are not (they canonicalize to `0`...).
fn is_canonical_decimal(t: &str) -> bool {
    let b = t.as_bytes();
    let body = b.strip_prefix(b"-").unwrap_or(b);
    let int_len = body.iter().take_while(|c| c.is_ascii_digit()).count();
    let (int, rest) = body.split_at(int_len);
    let frac = match rest {
        [] => &[][..],
        [b'.', frac @ ..] if !frac.is_empty() => frac,
        _ => return false,
    };
    if int.is_empty() || (int.len() > 1 && int[0] == b'0') || !frac.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let zero = int == b"0" && frac.iter().all(|&c| c == b'0');
    !(zero && body.len() != b.len())
}

/// Canonical decimal text: optional `-`, digits without leading zeros, optional `.`
/// and fraction digits (trailing zeros kept: `1.50` stays `1.50`). Exponents expand.
pub fn canonical_decimal(text: &str) -> Option<String> {
    let t = text.trim();
    // The common case, already canonical (`12.50`, `-3`, `0.5`): one scan, one copy.
    if is_canonical_decimal(t) {
        return Some(t.to_string());
    }
    canonical_decimal_general(t)
}

/// [`canonical_decimal`] of any input (exponents, signs, leading zeros).
fn canonical_decimal_general(text: &str) -> Option<String> {
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
