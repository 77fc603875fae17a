//! PostgreSQL's binary `COPY` format, the bulk path's fast lane.
//!
//! With `COPY ... (FORMAT binary)` the server reads integers, timestamps and numerics
//! as machine values instead of parsing their text: a million typed orders rows load in
//! 2.5-3.1 s instead of 3.7 s on the bench machine (`script/bench`), most of the
//! upload's time being the server's.
//!
//! The contract is "the same as text, faster": a value is sent in binary only where the
//! result is exactly what PostgreSQL makes of the text the CSV path sends (the
//! differential test `copy_binary` in `tests/` holds the two paths to the same stored
//! values on a real server, seeded). Where that cannot be promised, [`field`] says so
//! and the load is done again as CSV:
//!
//! - a column type outside [`PgType`] (domains, arrays, `uuid`, `char(n)`, `float4`,
//!   user types): the whole load goes as CSV, decided before the COPY starts;
//! - a value whose variant is not the column's own (text in a `bigint` column, an
//!   integer in a `text` column: data files written before a column got its type), an
//!   integer out of an `integer` column's range, dates and times outside years
//!   1-9999, sub-microsecond fractions (PostgreSQL rounds their text), leap seconds,
//!   a `timestamp` column given an offset (PostgreSQL drops the offset of the text):
//!   PostgreSQL's own parser and its own error messages decide, through the CSV path.

use anchovy_core::Value;
use anchovy_core::chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike};

/// The column types sent in binary, by PostgreSQL type OID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    /// `bigint` (20).
    Int8,
    /// `integer` (23).
    Int4,
    /// `smallint` (21).
    Int2,
    /// `double precision` (701).
    Float8,
    /// `numeric` (1700), any typmod (the server applies it as for text).
    Numeric,
    /// `boolean` (16).
    Bool,
    /// `text` (25) and `varchar` (1043).
    Text,
    /// `date` (1082).
    Date,
    /// `timestamp` (1114).
    Timestamp,
    /// `timestamptz` (1184).
    Timestamptz,
    /// `time` (1083).
    Time,
    /// `bytea` (17).
    Bytea,
    /// `json` (114).
    Json,
    /// `jsonb` (3802).
    Jsonb,
}

impl PgType {
    /// The type of a column by its `pg_attribute.atttypid`; `None` for types sent as
    /// CSV.
    pub fn of_oid(oid: i64) -> Option<PgType> {
        Some(match oid {
            20 => PgType::Int8,
            23 => PgType::Int4,
            21 => PgType::Int2,
            701 => PgType::Float8,
            1700 => PgType::Numeric,
            16 => PgType::Bool,
            25 | 1043 => PgType::Text,
            1082 => PgType::Date,
            1114 => PgType::Timestamp,
            1184 => PgType::Timestamptz,
            1083 => PgType::Time,
            17 => PgType::Bytea,
            114 => PgType::Json,
            3802 => PgType::Jsonb,
            _ => return None,
        })
    }
}

/// The start of every binary COPY stream: signature, flags, header extension length.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The end of every binary COPY stream: a tuple with -1 fields.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// Starts a tuple of `fields` fields.
pub fn tuple(buf: &mut Vec<u8>, fields: u16) {
    buf.extend_from_slice(&fields.to_be_bytes());
}

/// Appends a bigint field (the staging tables' order and version columns).
pub fn int8(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(&8i32.to_be_bytes());
    buf.extend_from_slice(&v.to_be_bytes());
}

/// Appends `v` as a field of a `ty` column. False, with `buf` as it was, when the
/// value has no binary form that stores exactly what its text would (see the module
/// documentation): the caller then loads the rows as CSV.
pub fn field(buf: &mut Vec<u8>, v: &Value, ty: PgType) -> bool {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    let ok = match (v, ty) {
        (Value::Null, _) => {
            buf.truncate(start);
            buf.extend_from_slice(&(-1i32).to_be_bytes());
            return true;
        }
        (Value::Int(i), PgType::Int8) => {
            buf.extend_from_slice(&i.to_be_bytes());
            true
        }
        (Value::Int(i), PgType::Int4) => i32::try_from(*i)
            .map(|i| buf.extend_from_slice(&i.to_be_bytes()))
            .is_ok(),
        (Value::Int(i), PgType::Int2) => i16::try_from(*i)
            .map(|i| buf.extend_from_slice(&i.to_be_bytes()))
            .is_ok(),
        (Value::Int(i), PgType::Numeric) => numeric(buf, &i.to_string()),
        (Value::Float(f), PgType::Float8) => {
            buf.extend_from_slice(&f.to_bits().to_be_bytes());
            true
        }
        (Value::Decimal(d), PgType::Numeric) => numeric(buf, d),
        (Value::Bool(b), PgType::Bool) => {
            buf.push(u8::from(*b));
            true
        }
        (Value::String(s), PgType::Text) => {
            buf.extend_from_slice(s.as_bytes());
            true
        }
        (Value::Date(d), PgType::Date) => date(buf, *d),
        (Value::DateTime(dt), PgType::Timestamp | PgType::Timestamptz) => {
            // Naive: as written for `timestamp`; read as UTC for `timestamptz`, as the
            // text is (the uploader's sessions run with TimeZone=UTC).
            timestamp(buf, *dt, *dt)
        }
        (Value::DateTimeTz(dt), PgType::Timestamptz) => {
            timestamp(buf, dt.naive_utc(), dt.naive_local())
        }
        (Value::Time(t), PgType::Time) => micros_of_day(*t)
            .map(|m| buf.extend_from_slice(&m.to_be_bytes()))
            .is_some(),
        (Value::Bytes(b), PgType::Bytea) => {
            buf.extend_from_slice(b);
            true
        }
        (Value::Json(j), PgType::Json | PgType::Jsonb) => {
            if ty == PgType::Jsonb {
                buf.push(1); // jsonb's binary format version
            }
            buf.extend_from_slice(j.as_str().as_bytes());
            true
        }
        _ => false,
    };
    let len = buf.len() - start - 4;
    match i32::try_from(len) {
        Ok(n) if ok => {
            buf[start..start + 4].copy_from_slice(&n.to_be_bytes());
            true
        }
        _ => {
            buf.truncate(start);
            false
        }
    }
}

/// Years whose text both sides write and read the same way.
trait YearIn {
    fn year_in(&self, r: std::ops::RangeInclusive<i32>) -> bool;
}

impl YearIn for NaiveDate {
    fn year_in(&self, r: std::ops::RangeInclusive<i32>) -> bool {
        use anchovy_core::chrono::Datelike;
        r.contains(&self.year())
    }
}

/// PostgreSQL's epoch for dates and timestamps.
fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default()
}

fn date(buf: &mut Vec<u8>, d: NaiveDate) -> bool {
    if !d.year_in(1..=9999) {
        return false;
    }
    let days = d.signed_duration_since(epoch()).num_days() as i32;
    buf.extend_from_slice(&days.to_be_bytes());
    true
}

/// A timestamp: microseconds since PostgreSQL's epoch. The year checked is the one
/// its text would show: for an instant with an offset the local one (the UTC instant
/// may fall in year 0, which PostgreSQL stores).
fn timestamp(buf: &mut Vec<u8>, dt: NaiveDateTime, text_year_of: NaiveDateTime) -> bool {
    if !text_year_of.date().year_in(1..=9999) {
        return false;
    }
    let days = dt.date().signed_duration_since(epoch()).num_days();
    let Some(day) = micros_of_day(dt.time()) else {
        return false;
    };
    buf.extend_from_slice(&(days * 86_400_000_000 + day).to_be_bytes());
    true
}

/// Microseconds since midnight; `None` for sub-microsecond fractions and leap seconds.
fn micros_of_day(t: NaiveTime) -> Option<i64> {
    let ns = t.nanosecond();
    if !ns.is_multiple_of(1000) || ns >= 1_000_000_000 {
        return None;
    }
    Some(i64::from(t.num_seconds_from_midnight()) * 1_000_000 + i64::from(ns / 1000))
}

/// A canonical decimal (`-?digits[.digits]`) as PostgreSQL's binary numeric: digit
/// count, weight (of the first base-10000 digit), sign, display scale (the digits after
/// the point, as numeric's text input keeps them), then the base-10000 digits.
fn numeric(buf: &mut Vec<u8>, text: &str) -> bool {
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (body.contains('.') && frac.is_empty())
    {
        return false;
    }
    let Ok(dscale) = i16::try_from(frac.len()) else {
        return false;
    };
    if dscale > 0x3FFF {
        return false;
    }
    let int = int.trim_start_matches('0');
    // Base-10000 digits, written straight after a header patched at the end (no
    // allocation per value): the integer part grouped from the point leftwards, the
    // fraction from the point rightwards. Leading zero digits (a value under 1) lower
    // the weight and are not written; trailing ones are cut off.
    let lead = int.len() % 4;
    let Ok(mut weight) = i16::try_from(int.len().div_ceil(4) as i64 - 1) else {
        return false;
    };
    let head = buf.len();
    buf.extend_from_slice(&[0; 8]);
    let mut end = head + 8; // the end of the last non-zero digit
    let mut put = |buf: &mut Vec<u8>, g: i16| {
        if buf.len() == head + 8 && g == 0 {
            weight -= 1;
            return;
        }
        buf.extend_from_slice(&g.to_be_bytes());
        if g != 0 {
            end = buf.len();
        }
    };
    let group = |c: &[u8]| c.iter().fold(0i16, |acc, b| acc * 10 + i16::from(b - b'0'));
    let int = int.as_bytes();
    if lead > 0 {
        put(buf, group(&int[..lead]));
    }
    for c in int[lead..].chunks(4) {
        put(buf, group(c));
    }
    for c in frac.as_bytes().chunks(4) {
        put(buf, group(c) * [1, 1000, 100, 10][c.len() % 4]);
    }
    buf.truncate(end);
    let Ok(n) = i16::try_from((end - head - 8) / 2) else {
        return false;
    };
    let (sign, weight) = if n == 0 {
        (0u16, 0i16)
    } else {
        (if neg { 0x4000 } else { 0 }, weight)
    };
    let mut header = [0u8; 8];
    header[0..2].copy_from_slice(&n.to_be_bytes());
    header[2..4].copy_from_slice(&weight.to_be_bytes());
    header[4..6].copy_from_slice(&sign.to_be_bytes());
    header[6..8].copy_from_slice(&dscale.to_be_bytes());
    buf[head..head + 8].copy_from_slice(&header);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(text: &str) -> Option<(i16, i16, u16, i16, Vec<i16>)> {
        let mut b = Vec::new();
        if !numeric(&mut b, text) {
            return None;
        }
        let w = |i: usize| i16::from_be_bytes([b[i], b[i + 1]]);
        let n = w(0);
        let digits = (0..n as usize).map(|k| w(8 + 2 * k)).collect();
        Some((n, w(2), w(4) as u16, w(6), digits))
    }

    #[test]
    fn numerics_in_base_10000() {
        assert_eq!(num("0"), Some((0, 0, 0, 0, vec![])));
        assert_eq!(num("-0.00"), Some((0, 0, 0, 2, vec![])));
        assert_eq!(num("12345.678"), Some((3, 1, 0, 3, vec![1, 2345, 6780])));
        assert_eq!(num("-0.0001"), Some((1, -1, 0x4000, 4, vec![1])));
        assert_eq!(num("0.00001"), Some((1, -2, 0, 5, vec![1000])));
        assert_eq!(num("10000"), Some((1, 1, 0, 0, vec![1])));
        assert_eq!(num("007.50"), Some((2, 0, 0, 2, vec![7, 5000])));
        assert_eq!(num("1."), None);
        assert_eq!(num("1e5"), None);
        assert_eq!(num(""), None);
    }

    #[test]
    fn values_outside_the_exact_cases_are_refused_untouched() {
        let mut b = vec![7];
        assert!(!field(&mut b, &Value::String("12".into()), PgType::Int8));
        assert!(!field(&mut b, &Value::Int(1 << 40), PgType::Int4));
        let sub_micro = NaiveTime::from_hms_nano_opt(1, 2, 3, 4).unwrap();
        assert!(!field(&mut b, &Value::Time(sub_micro), PgType::Time));
        let bc = NaiveDate::from_ymd_opt(0, 1, 1).unwrap();
        assert!(!field(&mut b, &Value::Date(bc), PgType::Date));
        assert_eq!(b, vec![7]);
        assert!(field(&mut b, &Value::Null, PgType::Int8));
        assert_eq!(b, vec![7, 0xff, 0xff, 0xff, 0xff]);
    }
}
