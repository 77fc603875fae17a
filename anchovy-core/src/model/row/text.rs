//! Text forms of typed values: what CSV fields and `_types` annotations hold.

use chrono::{NaiveDate, NaiveTime};

use super::*;

/// Parses the text form of an annotated value (`D`, `DT`, `T`, `B`, `N`, `F`).
pub fn parse_typed_text(text: &str, code: &str) -> Option<Value> {
    Some(match code {
        "D" => Value::Date(match fast::date(text.as_bytes()) {
            Some(d) => d,
            None => NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?,
        }),
        "DT" => parse_datetime(text)?,
        "T" => Value::Time(match fast::time(text.as_bytes()) {
            Some((t, n)) if n == text.len() => t,
            _ => NaiveTime::parse_from_str(text, "%H:%M:%S%.f").ok()?,
        }),
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
    fast::datetime(t.as_bytes()).or_else(|| general_datetime(t))
}

/// [`parse_datetime`] by chrono's parsers, one format after the other: every form the
/// fast path does not take (and the reference the fast path is tested against).
pub(super) fn general_datetime(t: &str) -> Option<Value> {
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
    if let Some(v) = with_offset_seconds(t) {
        return Some(v);
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

/// A datetime whose offset has seconds (`...T16:53:04+00:00:45`), as [`Value::text`]
/// writes one: chrono parses offsets to the minute only.
fn with_offset_seconds(t: &str) -> Option<Value> {
    let n = t.len().checked_sub(9)?;
    if !t.is_char_boundary(n) {
        return None;
    }
    let (head, off) = t.split_at(n);
    let b = off.as_bytes();
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if b[3] != b':' || b[6] != b':' {
        return None;
    }
    let num = |i: usize| -> Option<i32> {
        let (x, y) = (b[i], b[i + 1]);
        (x.is_ascii_digit() && y.is_ascii_digit())
            .then(|| i32::from(x - b'0') * 10 + i32::from(y - b'0'))
    };
    let secs = num(1)? * 3600 + num(4)? * 60 + num(7)?;
    let off = FixedOffset::east_opt(sign * secs)?;
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(head, f).ok())
        .and_then(|naive| chrono::TimeZone::from_local_datetime(&off, &naive).single())
        .map(Value::DateTimeTz)
}

/// The strict ISO forms nearly every export writes, parsed digit by digit instead of by
/// chrono's format interpreter (which tries up to eight formats in turn: ~0.7 us a
/// value for a datetime without an offset). Each function returns `None` for anything
/// it does not take whole (other spellings, out-of-range fields, leap seconds, more
/// than 9 fraction digits), and the caller falls back to chrono; for what it takes it
/// gives exactly chrono's value (a seeded differential test in `row/tests.rs` holds it).
pub(super) mod fast {
    use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};

    use crate::row::Value;

    /// `b[i..i + n]` as a number when all of it is ASCII digits.
    #[inline]
    fn num(b: &[u8], i: usize, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for &c in b.get(i..i + n)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        Some(v)
    }

    /// `YYYY-MM-DD`, exactly.
    #[inline]
    pub fn date(b: &[u8]) -> Option<NaiveDate> {
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        NaiveDate::from_ymd_opt(num(b, 0, 4)? as i32, num(b, 5, 2)?, num(b, 8, 2)?)
    }

    /// `HH:MM:SS` with an optional `.` and 1 to 9 digits at the start of `b`: the time
    /// and the bytes it took. Second 60 (a leap second) is left to chrono.
    #[inline]
    pub fn time(b: &[u8]) -> Option<(NaiveTime, usize)> {
        if b.len() < 8 || b[2] != b':' || b[5] != b':' {
            return None;
        }
        let (h, m, s) = (num(b, 0, 2)?, num(b, 3, 2)?, num(b, 6, 2)?);
        if s > 59 {
            return None;
        }
        let mut end = 8;
        let mut nanos = 0;
        if b.get(8) == Some(&b'.') {
            let digits = b[9..].iter().take_while(|c| c.is_ascii_digit()).count();
            if !(1..=9).contains(&digits) {
                return None;
            }
            nanos = num(b, 9, digits)? * 10u32.pow(9 - digits as u32);
            end = 9 + digits;
        }
        Some((NaiveTime::from_hms_nano_opt(h, m, s, nanos)?, end))
    }

    /// `YYYY-MM-DD`, `T` or a space, a [`time`], then nothing (a naive datetime), `Z`
    /// (after `T` only) or `+HH:MM` / `-HH:MM`.
    #[inline]
    pub fn datetime(b: &[u8]) -> Option<Value> {
        if b.len() < 19 || !matches!(b[10], b'T' | b' ') {
            return None;
        }
        let date = date(&b[..10])?;
        let (time, n) = time(&b[11..])?;
        let naive = NaiveDateTime::new(date, time);
        match &b[11 + n..] {
            [] => Some(Value::DateTime(naive)),
            [b'Z'] if b[10] == b'T' => Some(Value::DateTimeTz(
                DateTime::from_naive_utc_and_offset(naive, FixedOffset::east_opt(0)?),
            )),
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let (h, m) = (num(&[*h1, *h2], 0, 2)?, num(&[*m1, *m2], 0, 2)?);
                if h > 23 || m > 59 {
                    return None;
                }
                let secs = (h * 3600 + m * 60) as i32;
                let offset = FixedOffset::east_opt(if *sign == b'-' { -secs } else { secs })?;
                offset
                    .from_local_datetime(&naive)
                    .single()
                    .map(Value::DateTimeTz)
            }
            _ => None,
        }
    }
}
