//! The incremental cursor of a SQL table: its committed value, the lookback window and
//! how the bound is written for each database.
//!
//! The checkpoint of table `t` is `{"cursor": <column>, "kind": <kind>, "value": <text>}`:
//! the greatest cursor value of the rows committed so far, written only once every row
//! with that value has been emitted (the next read asks for `cursor > value`, so rows
//! that tie with it are never skipped). The value is kept as text in the form the
//! source compares: canonical numbers, ISO dates and times, and on SQLite the stored
//! text itself (SQLite compares stored text, `2024-01-31 10:00:00`, byte by byte).

use std::time::Duration;

use anchovy_core::Value;
use chrono::{Duration as ChronoDuration, NaiveDateTime};
use serde::{Deserialize, Serialize};

use crate::error::PluginError;
use crate::sql::dialect::Dialect;

/// What a cursor column holds, which decides how its bound is cast and how a lookback
/// is subtracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CursorKind {
    /// 64-bit integers.
    Int,
    /// Floats.
    Float,
    /// Exact decimals.
    Decimal,
    /// Text (ordered by the column's collation).
    Text,
    /// Dates.
    Date,
    /// Timestamps without offset.
    Timestamp,
    /// Timestamps with offset (instants).
    Timestamptz,
    /// Times of day.
    Time,
}

impl CursorKind {
    /// The kind of a decoded value, `None` for values that cannot be a cursor.
    pub fn of(v: &Value) -> Option<CursorKind> {
        Some(match v {
            Value::Int(_) => CursorKind::Int,
            Value::Float(_) => CursorKind::Float,
            Value::Decimal(_) => CursorKind::Decimal,
            Value::String(_) => CursorKind::Text,
            Value::Date(_) => CursorKind::Date,
            Value::DateTime(_) => CursorKind::Timestamp,
            Value::DateTimeTz(_) => CursorKind::Timestamptz,
            Value::Time(_) => CursorKind::Time,
            _ => return None,
        })
    }

    /// `<column> > <bound>` (`>=` when `inclusive`) for the bind parameter `param`
    /// holding the bound as text (SQLite: as its stored value, see [`Bound`]).
    pub fn condition(self, d: Dialect, column: &str, param: &str, inclusive: bool) -> String {
        let op = if inclusive { ">=" } else { ">" };
        let cast = match (d, self) {
            (Dialect::Postgres, CursorKind::Int) => "INT8",
            (Dialect::Postgres, CursorKind::Float) => "FLOAT8",
            (Dialect::Postgres, CursorKind::Decimal) => "NUMERIC",
            (Dialect::Postgres, CursorKind::Date) => "DATE",
            (Dialect::Postgres, CursorKind::Timestamp) => "TIMESTAMP",
            (Dialect::Postgres, CursorKind::Timestamptz) => "TIMESTAMPTZ",
            (Dialect::Postgres, CursorKind::Time) => "TIME",
            (Dialect::MySql, CursorKind::Int) => "SIGNED",
            (Dialect::MySql, CursorKind::Float) => "DOUBLE",
            (Dialect::MySql, CursorKind::Decimal) => "DECIMAL(65,30)",
            (Dialect::MySql, CursorKind::Date) => "DATE",
            (Dialect::MySql, CursorKind::Timestamp | CursorKind::Timestamptz) => "DATETIME(6)",
            (Dialect::MySql, CursorKind::Time) => "TIME(6)",
            _ => return format!("{column} {op} {param}"),
        };
        format!("{column} {op} CAST({param} AS {cast})")
    }
}

/// The committed position of a cursor table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CursorState {
    /// The cursor column the value belongs to.
    pub cursor: String,
    /// What the column holds.
    pub kind: CursorKind,
    /// The greatest value committed (see the module docs).
    pub value: Bound,
}

/// A cursor value as bound to the source: text, or on SQLite the stored integer or
/// real (SQLite orders numbers before text, so the class matters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bound {
    /// An integer (SQLite's stored integers; on the other databases ints are text).
    Int(i64),
    /// A real (SQLite's stored reals).
    Real(f64),
    /// Text in the form the source casts or compares.
    Text(String),
}

impl Bound {
    /// The bound of a decoded cursor value on PostgreSQL or MySQL: its text form, with
    /// instants in UTC without offset on MySQL (its DATETIME cast takes no offset).
    pub fn of_value(d: Dialect, v: &Value) -> Bound {
        match (d, v) {
            (Dialect::MySql, Value::DateTimeTz(t)) => {
                Bound::Text(t.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string())
            }
            (Dialect::MySql, Value::DateTime(t)) => {
                Bound::Text(t.format("%Y-%m-%d %H:%M:%S%.f").to_string())
            }
            _ => Bound::Text(v.text().into_owned()),
        }
    }
}

/// A `lookback:` window: a duration for temporal cursors, a number for numeric ones.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookback {
    /// `10m`, `2h`, `1d`.
    Time(Duration),
    /// `100`, `0.5`.
    Number(String),
}

impl Lookback {
    /// Parses `lookback:` (a number, or a duration such as `10m`).
    ///
    /// # Errors
    /// [`PluginError::Option`] naming the table.
    pub fn parse(table: &str, v: &serde_json::Value) -> Result<Lookback, PluginError> {
        let text = match v {
            serde_json::Value::Number(n) => return Ok(Lookback::Number(n.to_string())),
            serde_json::Value::String(s) => s.trim().to_string(),
            other => other.to_string(),
        };
        if anchovy_core::Value::decimal(&text).is_ok() {
            return Ok(Lookback::Number(text));
        }
        anchovy_core::config::parse_duration(&text)
            .map(Lookback::Time)
            .ok_or_else(|| PluginError::Option {
                key: format!("tbls.{table}.lookback"),
                message: format!("`{text}` is neither a duration (30s, 10m, 2h, 1d) nor a number"),
            })
    }

    /// The bound `value - self`, in the same form as `value`.
    ///
    /// # Errors
    /// [`PluginError::Option`] when the window does not fit the cursor's kind (a
    /// duration on a numeric cursor, any window on a text cursor).
    pub fn apply(
        &self,
        table: &str,
        kind: CursorKind,
        value: &Bound,
    ) -> Result<Bound, PluginError> {
        let mismatch = |what: &str| PluginError::Option {
            key: format!("tbls.{table}.lookback"),
            message: format!("a {kind:?} cursor takes {what}").to_lowercase(),
        };
        match (self, kind) {
            (_, CursorKind::Text) => Err(mismatch("no lookback (text has no distance)")),
            (Lookback::Number(n), CursorKind::Int | CursorKind::Float | CursorKind::Decimal) => {
                subtract_number(value, n).ok_or_else(|| mismatch("a number that fits its values"))
            }
            (
                Lookback::Time(d),
                CursorKind::Date
                | CursorKind::Timestamp
                | CursorKind::Timestamptz
                | CursorKind::Time,
            ) => subtract_time(value, *d, kind).ok_or_else(|| mismatch("a duration")),
            (Lookback::Number(_), _) => Err(mismatch("a duration (10m, 2h, 1d)")),
            (Lookback::Time(_), _) => Err(mismatch("a number")),
        }
    }
}

/// `v - n` for numbers: exact for decimals (scaled integers), as floats for reals.
fn subtract_number(v: &Bound, n: &str) -> Option<Bound> {
    match v {
        Bound::Int(i) => {
            let n: i64 = n.parse().ok()?;
            Some(Bound::Int(i.checked_sub(n)?))
        }
        Bound::Real(f) => Some(Bound::Real(f - n.parse::<f64>().ok()?)),
        Bound::Text(t) => decimal_sub(t, n).map(Bound::Text),
    }
}

/// `a - b` for decimal texts, exactly (up to 30 digits of scale and 38 of precision).
fn decimal_sub(a: &str, b: &str) -> Option<String> {
    fn parts(s: &str) -> Option<(i128, u32)> {
        let s = anchovy_core::Value::decimal(s).ok()?;
        let anchovy_core::Value::Decimal(s) = s else {
            return None;
        };
        let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
        let scale = frac.len() as u32;
        let digits: i128 = format!("{int}{frac}").parse().ok()?;
        Some((digits, scale))
    }
    let (x, sx) = parts(a)?;
    let (y, sy) = parts(b)?;
    let scale = sx.max(sy);
    if scale > 30 {
        return None;
    }
    let x = x.checked_mul(10i128.checked_pow(scale - sx)?)?;
    let y = y.checked_mul(10i128.checked_pow(scale - sy)?)?;
    let d = x.checked_sub(y)?;
    let neg = d < 0;
    let digits = format!("{:0>width$}", d.unsigned_abs(), width = scale as usize + 1);
    let (int, frac) = digits.split_at(digits.len() - scale as usize);
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    out.push_str(int);
    if scale > 0 {
        out.push('.');
        out.push_str(frac);
    }
    Some(out)
}

/// `v - d` for temporal bounds, written back in the form `v` had (separator, offset).
fn subtract_time(v: &Bound, d: Duration, kind: CursorKind) -> Option<Bound> {
    let Bound::Text(t) = v else {
        return None;
    };
    let d = ChronoDuration::from_std(d).ok()?;
    let text = t.trim();
    Some(Bound::Text(match kind {
        CursorKind::Date => {
            let date =
                chrono::NaiveDate::parse_from_str(&text[..text.len().min(10)], "%Y-%m-%d").ok()?;
            // From the day's midnight: a window shorter than a day reaches the day before.
            let back = date.and_hms_opt(0, 0, 0)?.checked_sub_signed(d)?;
            back.date().format("%Y-%m-%d").to_string()
        }
        CursorKind::Time => {
            let time = chrono::NaiveTime::parse_from_str(text, "%H:%M:%S%.f").ok()?;
            let (back, wrapped) = time.overflowing_sub_signed(d);
            if wrapped != 0 {
                "00:00:00".to_string()
            } else {
                back.format("%H:%M:%S%.f").to_string()
            }
        }
        _ => {
            let parsed = match anchovy_core::row::parse_datetime(text)? {
                Value::DateTime(n) => (n, None),
                Value::DateTimeTz(z) => (z.naive_local(), Some(*z.offset())),
                _ => return None,
            };
            let back: NaiveDateTime = parsed.0.checked_sub_signed(d)?;
            let sep = if text.as_bytes().get(10) == Some(&b' ') {
                " "
            } else {
                "T"
            };
            let mut out = back
                .format(&format!("%Y-%m-%d{sep}%H:%M:%S%.f"))
                .to_string();
            if let Some(off) = parsed.1 {
                out.push_str(&off.to_string());
            }
            out
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_windows_subtract_exactly() {
        assert_eq!(decimal_sub("10.50", "1").as_deref(), Some("9.50"));
        assert_eq!(decimal_sub("1", "1.25").as_deref(), Some("-0.25"));
        assert_eq!(decimal_sub("-3.5", "0.5").as_deref(), Some("-4.0"));
        assert_eq!(
            decimal_sub("12345678901234567890.123", "0.001").as_deref(),
            Some("12345678901234567890.122")
        );
        assert_eq!(decimal_sub("0", "0").as_deref(), Some("0"));
    }

    #[test]
    fn time_windows_keep_the_form_of_the_value() {
        let w = Lookback::Time(Duration::from_secs(600));
        let b = |s: &str| Bound::Text(s.into());
        let go = |k, s: &str| w.apply("t", k, &b(s)).unwrap();
        assert_eq!(
            go(CursorKind::Timestamp, "2024-01-01 00:05:00"),
            b("2023-12-31 23:55:00")
        );
        assert_eq!(
            go(CursorKind::Timestamp, "2024-01-01T10:00:00.5"),
            b("2024-01-01T09:50:00.500")
        );
        assert_eq!(
            go(CursorKind::Timestamptz, "2024-01-01T10:00:00+02:00"),
            b("2024-01-01T09:50:00+02:00")
        );
        assert_eq!(go(CursorKind::Date, "2024-03-01"), b("2024-02-29"));
        assert_eq!(go(CursorKind::Time, "00:05:00"), b("00:00:00"));
        assert!(w.apply("t", CursorKind::Int, &Bound::Int(5)).is_err());
        assert!(w.apply("t", CursorKind::Text, &b("x")).is_err());
        let n = Lookback::Number("3".into());
        assert_eq!(
            n.apply("t", CursorKind::Int, &Bound::Int(5)).unwrap(),
            Bound::Int(2)
        );
        assert_eq!(n.apply("t", CursorKind::Int, &b("5")).unwrap(), b("2"));
    }

    #[test]
    fn lookback_parses_numbers_and_durations() {
        assert_eq!(
            Lookback::parse("t", &serde_json::json!("10m")).unwrap(),
            Lookback::Time(Duration::from_secs(600))
        );
        assert_eq!(
            Lookback::parse("t", &serde_json::json!(100)).unwrap(),
            Lookback::Number("100".into())
        );
        assert!(Lookback::parse("t", &serde_json::json!("soon")).is_err());
    }
}
