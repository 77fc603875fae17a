//! Text forms of typed values: what CSV fields and `_types` annotations hold.

use chrono::{NaiveDate, NaiveTime};

use super::*;

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
