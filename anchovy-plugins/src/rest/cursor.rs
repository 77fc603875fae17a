//! Incremental reads of an endpoint: `incremental: {cursor, param, value, start,
//! lookback, sorted}`.
//!
//! - A run sends `param` = the committed cursor value (minus `lookback`), or `start`
//!   on the first run (nothing without one), through the `value` template (default
//!   `{cursor}`; e.g. `updated>{cursor}` for a search parameter).
//! - The value committed is the greatest `cursor` field of the records read, compared
//!   as instants when the values are RFC 3339 / ISO 8601 times, as numbers when they
//!   are numbers, else as text, and kept exactly as the API wrote it (so the next
//!   request sends the API's own format back).
//! - `lookback` subtracts a duration (`10m`, `1d`) from a time cursor, keeping its
//!   format (offset, `Z`, fraction digits), or a number from a numeric one.

use std::borrow::Cow;

use anchovy_core::Value;
use chrono::{DateTime, Duration as Span, FixedOffset, NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};

/// A table's `incremental:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incremental {
    /// The record field that orders changes (`updated_at`).
    pub cursor: String,
    /// The request parameter the value is sent as (`updated_since`).
    pub param: String,
    /// The parameter's value, `{cursor}` standing for the cursor value.
    #[serde(default)]
    pub value: Option<String>,
    /// The value of a first run (none: the first run sends no parameter).
    #[serde(default)]
    pub start: Option<serde_json::Value>,
    /// Re-read this far back: a duration for time cursors, a number for numeric ones.
    #[serde(default)]
    pub lookback: Option<serde_json::Value>,
    /// The API returns records in ascending cursor order: the cursor is committed
    /// page by page (with an inclusive filter, `>=`), not only at the end of a read.
    #[serde(default, deserialize_with = "anchovy_core::options::de::flag")]
    pub sorted: bool,
}

/// The committed checkpoint of an incremental table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CursorState {
    /// The cursor field.
    pub cursor: String,
    /// The greatest value read, as the API wrote it.
    pub value: serde_json::Value,
}

/// A cursor value in its order (text borrowed from the value it was read from).
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Key<'a> {
    Num(f64),
    Time(DateTime<FixedOffset>),
    Text(Cow<'a, str>),
}

impl Key<'_> {
    fn same_kind(&self, other: &Key<'_>) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }

    fn into_owned(self) -> Key<'static> {
        match self {
            Key::Num(n) => Key::Num(n),
            Key::Time(t) => Key::Time(t),
            Key::Text(t) => Key::Text(Cow::Owned(t.into_owned())),
        }
    }
}

fn text_key(s: &str) -> Key<'_> {
    match parse_time(s) {
        Some(t) => Key::Time(t.0),
        None => Key::Text(Cow::Borrowed(s)),
    }
}

/// The order key of a JSON value, `None` for null and values without an order.
fn key(v: &serde_json::Value) -> Option<Key<'_>> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().map(Key::Num),
        serde_json::Value::String(s) => Some(text_key(s)),
        _ => None,
    }
}

/// The order key of a record's field as read (before `columns:` typing).
fn value_key(v: &Value) -> Option<Key<'_>> {
    match v {
        Value::Int(i) => Some(Key::Num(*i as f64)),
        Value::Float(f) => Some(Key::Num(*f)),
        Value::Decimal(d) => d.parse().ok().map(Key::Num),
        Value::String(s) => Some(text_key(s)),
        _ => None,
    }
}

/// The greatest cursor value seen. Taking a value allocates only when it is a new
/// greatest one (or a text cursor's last value changes length).
#[derive(Debug, Default)]
pub struct Max {
    best: Option<(Key<'static>, serde_json::Value)>,
    /// Values that could not be compared with the others (other kind, null).
    pub skipped: u64,
    /// Values lower than the one before (an unsorted stream).
    pub descents: u64,
    last: Option<Key<'static>>,
}

impl Max {
    /// Takes one JSON value.
    pub fn see(&mut self, v: &serde_json::Value) {
        match key(v) {
            Some(k) => self.take(k, || v.clone()),
            None => self.skipped += 1,
        }
    }

    /// Takes a record's field as read.
    pub fn see_value(&mut self, v: &Value) {
        match value_key(v) {
            Some(k) => self.take(k, || v.to_json()),
            None => self.skipped += 1,
        }
    }

    fn take(&mut self, k: Key<'_>, json: impl FnOnce() -> serde_json::Value) {
        if let Some(l) = &self.last
            && l.same_kind(&k)
            && k < *l
        {
            self.descents += 1;
        }
        match (&mut self.last, &k) {
            (Some(Key::Text(Cow::Owned(l))), Key::Text(t)) => {
                l.clear();
                l.push_str(t);
            }
            (last, _) => *last = Some(k.clone().into_owned()),
        }
        match &self.best {
            Some((b, _)) if !b.same_kind(&k) => self.skipped += 1,
            Some((b, _)) if k <= *b => {}
            _ => self.best = Some((k.into_owned(), json())),
        }
    }

    /// The greatest value, as the API wrote it.
    pub fn value(&self) -> Option<&serde_json::Value> {
        self.best.as_ref().map(|(_, v)| v)
    }
}

/// A time in the API's text, and how to write one back the same way.
struct Style {
    sep: char,
    frac: usize,
    zone: Zone,
}

enum Zone {
    Z,
    Offset,
    None,
}

/// Parses RFC 3339 / ISO 8601 times (`2024-01-02T03:04:05Z`, `...+02:00`, `2024-01-02
/// 03:04:05`, `2024-01-02`); naive ones are taken as UTC.
fn parse_time(s: &str) -> Option<(DateTime<FixedOffset>, Style)> {
    let t = s.trim();
    if t.len() < 10 || !t.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let sep = t.as_bytes().get(10).map_or('T', |b| *b as char);
    let frac = t
        .find('.')
        .map(|i| t[i + 1..].bytes().take_while(u8::is_ascii_digit).count())
        .unwrap_or(0);
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        let zone = if t.ends_with(['Z', 'z']) {
            Zone::Z
        } else {
            Zone::Offset
        };
        return Some((d, Style { sep, frac, zone }));
    }
    let utc = FixedOffset::east_opt(0)?;
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            return Some((
                n.and_local_timezone(utc).single()?,
                Style {
                    sep,
                    frac,
                    zone: Zone::None,
                },
            ));
        }
    }
    if t.len() == 10
        && let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d")
    {
        let n = d.and_hms_opt(0, 0, 0)?;
        return Some((
            n.and_local_timezone(utc).single()?,
            Style {
                sep: '\0',
                frac: 0,
                zone: Zone::None,
            },
        ));
    }
    None
}

fn format_time(t: DateTime<FixedOffset>, s: &Style) -> String {
    if s.sep == '\0' {
        return t.format("%Y-%m-%d").to_string();
    }
    let frac = match s.frac {
        0 => "",
        1..=3 => "%.3f",
        4..=6 => "%.6f",
        _ => "%.9f",
    };
    let mut out = t
        .format(&format!("%Y-%m-%d{}%H:%M:%S{frac}", s.sep))
        .to_string();
    match s.zone {
        Zone::Z => out.push('Z'),
        Zone::Offset => out.push_str(&t.format("%:z").to_string()),
        Zone::None => {}
    }
    out
}

/// `value` moved back by `lookback`.
///
/// # Errors
/// A message when the lookback does not fit the value (a duration for a number, ...).
pub fn look_back(
    value: &serde_json::Value,
    lookback: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    match (value, lookback) {
        (serde_json::Value::Number(v), lb) => {
            let lb = match lb {
                serde_json::Value::Number(n) => n.clone(),
                serde_json::Value::String(s) => {
                    s.trim().parse::<serde_json::Number>().map_err(|_| {
                        format!("`{s}` is not a number; a numeric cursor looks back by a number")
                    })?
                }
                other => return Err(format!("`{other}` is not a number")),
            };
            Ok(match (v.as_i64(), lb.as_i64()) {
                (Some(a), Some(b)) => serde_json::json!(a.saturating_sub(b)),
                _ => serde_json::json!(v.as_f64().unwrap_or(0.0) - lb.as_f64().unwrap_or(0.0)),
            })
        }
        (serde_json::Value::String(s), lb) => {
            let (t, style) = parse_time(s).ok_or_else(|| {
                format!(
                    "the cursor value `{s}` is neither a time nor a number: lookback cannot apply"
                )
            })?;
            let text = match lb {
                serde_json::Value::String(x) => x.clone(),
                serde_json::Value::Number(n) => format!("{n}s"),
                other => other.to_string(),
            };
            let d = anchovy_core::config::parse_duration(&text)
                .ok_or_else(|| format!("`{text}` is not a duration (10m, 2h, 1d)"))?;
            let back = t - Span::from_std(d).map_err(|e| e.to_string())?;
            Ok(serde_json::Value::String(format_time(back, &style)))
        }
        (other, _) => Err(format!(
            "the cursor value `{other}` has no order to look back in"
        )),
    }
}

impl Incremental {
    /// The parameter a read sends for `from` (the committed value or `start`).
    pub fn param_value(&self, from: &serde_json::Value) -> String {
        let text = match from {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match &self.value {
            Some(t) => t.replace("{cursor}", &text),
            None => text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_greatest_value_is_kept_as_written() {
        let mut m = Max::default();
        for v in [
            json!("2024-01-02T03:04:05Z"),
            json!("2024-01-02T05:04:05+02:00"), // 03:04:05Z: a tie
            json!("2024-01-02T03:04:06.5Z"),
            json!(null),
            json!("2024-01-01T00:00:00Z"),
        ] {
            m.see(&v);
        }
        assert_eq!(m.value(), Some(&json!("2024-01-02T03:04:06.5Z")));
        assert_eq!(m.skipped, 1);
        assert_eq!(m.descents, 1);
        let mut m = Max::default();
        for v in [json!(9), json!(10), json!(2.5)] {
            m.see(&v);
        }
        assert_eq!(m.value(), Some(&json!(10)));
    }

    /// A record's fields as read give the same greatest value and descents as their
    /// JSON (seeded: times with offsets, numbers, text).
    #[test]
    fn fields_and_json_agree() {
        let mut rng = anchovy_core::testutil::Rng(0xc0);
        for _ in 0..500 {
            let (mut a, mut b) = (Max::default(), Max::default());
            let kind = rng.below(3);
            for _ in 0..rng.below(20) {
                let j = match kind {
                    0 => json!(format!(
                        "2024-01-{:02}T{:02}:00:00+0{}:00",
                        1 + rng.below(9),
                        rng.below(24),
                        rng.below(3)
                    )),
                    1 => json!(rng.below(1000) as i64 - 500),
                    _ => json!(["b", "a", "ab", "ba", ""][rng.below(5) as usize]),
                };
                a.see(&j);
                b.see_value(&Value::from_json(j));
            }
            assert_eq!(a.value(), b.value());
            assert_eq!((a.descents, a.skipped), (b.descents, b.skipped));
        }
    }

    #[test]
    fn lookback_keeps_the_apis_format() {
        let lb = json!("10m");
        assert_eq!(
            look_back(&json!("2024-01-02T03:04:05Z"), &lb).unwrap(),
            json!("2024-01-02T02:54:05Z")
        );
        assert_eq!(
            look_back(&json!("2024-01-02T00:05:00.123+02:00"), &lb).unwrap(),
            json!("2024-01-01T23:55:00.123+02:00")
        );
        assert_eq!(
            look_back(&json!("2024-01-02 00:05:00"), &lb).unwrap(),
            json!("2024-01-01 23:55:00")
        );
        assert_eq!(
            look_back(&json!("2024-01-02"), &json!("1d")).unwrap(),
            json!("2024-01-01")
        );
        assert_eq!(look_back(&json!(1000), &json!(60)).unwrap(), json!(940));
        assert!(
            look_back(&json!("abc"), &lb)
                .unwrap_err()
                .contains("neither a time")
        );
        assert!(
            look_back(&json!(5), &lb)
                .unwrap_err()
                .contains("not a number")
        );
    }

    #[test]
    fn templates() {
        let i: Incremental = serde_json::from_value(
            json!({"cursor": "updated_at", "param": "q", "value": "updated>{cursor}"}),
        )
        .unwrap();
        assert_eq!(i.param_value(&json!("2024-01-01")), "updated>2024-01-01");
        assert_eq!(i.param_value(&json!(7)), "updated>7");
    }
}
