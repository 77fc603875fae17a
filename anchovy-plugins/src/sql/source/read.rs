//! Decoding the rows of a source into values, per database.
//!
//! The columns' [`Read`]s decide how each value decodes. A row with a value that
//! cannot decode (PostgreSQL's `infinity` timestamps, MySQL's zero dates) is a bad
//! record: the table's `on_bad_record` fails the table (the default, naming the row,
//! the column and its type), skips the row or quarantines it (as JSON, the failing
//! columns null) while the good rows flow.

use anchovy_core::Value;
use anchovy_core::row::Json;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use sqlx::Row as _;
use sqlx::ValueRef as _;

use super::catalog::{Column, Read};
use super::cursor::Bound;

/// Why a value could not be read.
#[derive(Debug)]
pub struct DecodeError {
    /// The column.
    pub column: String,
    /// Its source type.
    pub source_type: String,
    /// What went wrong.
    pub message: String,
}

impl DecodeError {
    fn new(c: &Column, message: impl std::fmt::Display) -> DecodeError {
        DecodeError {
            column: c.name.clone(),
            source_type: c.source_type.clone(),
            message: message.to_string(),
        }
    }
}

/// A float4 as the float its shortest text names (0.1f32 -> 0.1, not 0.100000001):
/// Rust's `Display` of an f32 is the shortest text that reads back as that f32.
fn widen(f: f32) -> f64 {
    if !f.is_finite() {
        return f as f64;
    }
    format!("{f}").parse::<f64>().unwrap_or(f as f64)
}

/// A decimal's text as a value: exact, or a float for PostgreSQL's NaN and infinities.
fn decimal(c: &Column, s: String) -> Result<Value, DecodeError> {
    match s.as_str() {
        "NaN" => Ok(Value::Float(f64::NAN)),
        "Infinity" => Ok(Value::Float(f64::INFINITY)),
        "-Infinity" => Ok(Value::Float(f64::NEG_INFINITY)),
        _ => Value::decimal(&s).map_err(|_| DecodeError::new(c, format!("`{s}` is not a decimal"))),
    }
}

fn json(c: &Column, s: String) -> Result<Value, DecodeError> {
    let not_json = |e: String| DecodeError::new(c, format!("not JSON: {e}"));
    if s.trim_start().starts_with(['{', '[']) {
        // Kept as written (compacted): every digit of its numbers, its member order.
        return Json::parse(&s).map(Value::Json).map_err(not_json);
    }
    // A JSON scalar stays a scalar of its kind.
    serde_json::from_str::<serde_json::Value>(&s)
        .map(Value::from_json)
        .map_err(|e| not_json(e.to_string()))
}

fn time_text(c: &Column, s: String) -> Result<Value, DecodeError> {
    NaiveTime::parse_from_str(&s, "%H:%M:%S%.f")
        .map(Value::Time)
        .map_err(|_| {
            DecodeError::new(
                c,
                format!("`{s}` is not a time of day (00:00:00..23:59:59); select it as text in a query: to keep it"),
            )
        })
}

/// Decodes the typed columns shared by PostgreSQL and MySQL (one body, two row types).
/// Unchecked: each column's expression ([`Column::expr`]) casts it to the very type its
/// [`Read`] decodes, so the driver's per-value type check is skipped (a decode still
/// fails on bytes that are not that type).
macro_rules! decode_typed {
    ($row:expr, $cols:expr, $out:expr, $errs:expr, $temporal:expr) => {{
        $out.clear();
        for (i, c) in $cols.iter().enumerate() {
            let err = |e: sqlx::Error| DecodeError::new(c, short(&e));
            let one = || -> Result<Option<Value>, DecodeError> {
                Ok(match c.read {
                    Read::Int => $row
                        .try_get_unchecked::<Option<i64>, _>(i)
                        .map_err(err)?
                        .map(Value::Int),
                    Read::Float => $row
                        .try_get_unchecked::<Option<f64>, _>(i)
                        .map_err(err)?
                        .map(Value::Float),
                    Read::Float4 => $row
                        .try_get_unchecked::<Option<f32>, _>(i)
                        .map_err(err)?
                        .map(|f| Value::Float(widen(f))),
                    Read::Bool => $row
                        .try_get_unchecked::<Option<bool>, _>(i)
                        .map_err(err)?
                        .map(Value::Bool),
                    Read::Text => $row
                        .try_get_unchecked::<Option<String>, _>(i)
                        .map_err(err)?
                        .map(Value::String),
                    Read::Decimal => match $row
                        .try_get_unchecked::<Option<String>, _>(i)
                        .map_err(err)?
                    {
                        Some(s) => Some(decimal(c, s)?),
                        None => None,
                    },
                    Read::Json => match $row
                        .try_get_unchecked::<Option<String>, _>(i)
                        .map_err(err)?
                    {
                        Some(s) => Some(json(c, s)?),
                        None => None,
                    },
                    Read::TimeText => match $row
                        .try_get_unchecked::<Option<String>, _>(i)
                        .map_err(err)?
                    {
                        Some(s) => Some(time_text(c, s)?),
                        None => None,
                    },
                    Read::Date | Read::Time | Read::Timestamp | Read::Timestamptz => {
                        $temporal($row, i, c)?
                    }
                    Read::Bytes => $row
                        .try_get_unchecked::<Option<Vec<u8>>, _>(i)
                        .map_err(err)?
                        .map(Value::Bytes),
                    Read::Lite(_) => return Err(DecodeError::new(c, "not a SQLite source")),
                })
            };
            match one() {
                Ok(v) => $out.push(v.unwrap_or(Value::Null)),
                // The row is still read whole: every column that fails is named.
                Err(e) => {
                    $out.push(Value::Null);
                    $errs.push(e);
                }
            }
        }
    }};
}

/// The driver's message without its prefixes.
fn short(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::ColumnDecode { source, .. } => source.to_string(),
        other => crate::error::describe_db_error(other),
    }
}

/// Decodes one PostgreSQL row into `out`; a column that cannot be read is null there
/// and its [`DecodeError`] goes to `errs`.
pub fn pg(
    row: &sqlx::postgres::PgRow,
    cols: &[Column],
    out: &mut Vec<Value>,
    errs: &mut Vec<DecodeError>,
) {
    decode_typed!(row, cols, out, errs, pg_temporal)
}

/// PostgreSQL's dates and times from their binary form, checked: the driver's own
/// decoding panics on `infinity` and wraps `24:00:00` to midnight.
fn pg_temporal(
    row: &sqlx::postgres::PgRow,
    i: usize,
    c: &Column,
) -> Result<Option<Value>, DecodeError> {
    let raw = row
        .try_get_raw(i)
        .map_err(|e| DecodeError::new(c, short(&e)))?;
    if raw.is_null() {
        return Ok(None);
    }
    let b = raw.as_bytes().map_err(|e| DecodeError::new(c, e))?;
    let out_of_range = || {
        DecodeError::new(
            c,
            "infinity, or a value outside the range the datastore's dates and times hold (years -262143..262142, times of day below 24:00:00)",
        )
    };
    let epoch = NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date");
    if c.read == Read::Date {
        let days = i32::from_be_bytes(b.try_into().map_err(|_| out_of_range())?);
        let d = epoch
            .checked_add_signed(chrono::Duration::days(days as i64))
            .filter(|_| days != i32::MAX && days != i32::MIN)
            .ok_or_else(out_of_range)?;
        return Ok(Some(Value::Date(d)));
    }
    let micros = i64::from_be_bytes(b.try_into().map_err(|_| out_of_range())?);
    if c.read == Read::Time {
        let t = (0..86_400_000_000)
            .contains(&micros)
            .then(|| {
                NaiveTime::from_num_seconds_from_midnight_opt(
                    (micros / 1_000_000) as u32,
                    (micros % 1_000_000) as u32 * 1000,
                )
            })
            .flatten()
            .ok_or_else(out_of_range)?;
        return Ok(Some(Value::Time(t)));
    }
    let at = epoch
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .checked_add_signed(chrono::Duration::microseconds(micros))
        .filter(|_| micros != i64::MAX && micros != i64::MIN)
        .ok_or_else(out_of_range)?;
    Ok(Some(if c.read == Read::Timestamptz {
        Value::DateTimeTz(at.and_utc().fixed_offset())
    } else {
        Value::DateTime(at)
    }))
}

/// MySQL's dates and times, by the driver (it refuses what it cannot take).
fn my_temporal(
    row: &sqlx::mysql::MySqlRow,
    i: usize,
    c: &Column,
) -> Result<Option<Value>, DecodeError> {
    let err = |e: sqlx::Error| DecodeError::new(c, short(&e));
    Ok(match c.read {
        Read::Date => row
            .try_get_unchecked::<Option<NaiveDate>, _>(i)
            .map_err(err)?
            .map(Value::Date),
        Read::Timestamp => row
            .try_get_unchecked::<Option<NaiveDateTime>, _>(i)
            .map_err(err)?
            .map(Value::DateTime),
        Read::Timestamptz => row
            .try_get_unchecked::<Option<DateTime<Utc>>, _>(i)
            .map_err(err)?
            .map(|t| Value::DateTimeTz(t.fixed_offset())),
        _ => row
            .try_get_unchecked::<Option<NaiveTime>, _>(i)
            .map_err(err)?
            .map(Value::Time),
    })
}

/// Decodes one MySQL row into `out`, as [`pg`] does.
pub fn my(
    row: &sqlx::mysql::MySqlRow,
    cols: &[Column],
    out: &mut Vec<Value>,
    errs: &mut Vec<DecodeError>,
) {
    decode_typed!(row, cols, out, errs, my_temporal)
}

/// Decodes one SQLite row into `out`, by each value's stored class read as its
/// column's declared type; returns the stored cursor value (column `cursor`) as it is
/// bound back.
///
/// # Errors
/// [`DecodeError`] naming the column.
pub fn lite(
    row: &sqlx::sqlite::SqliteRow,
    cols: &[Column],
    cursor: Option<usize>,
    out: &mut Vec<Value>,
) -> Result<Option<Bound>, DecodeError> {
    use sqlx::TypeInfo as _;
    out.clear();
    let mut bound = None;
    for (i, c) in cols.iter().enumerate() {
        let err = |e: sqlx::Error| DecodeError::new(c, short(&e));
        let hint = match c.read {
            Read::Lite(h) => h,
            _ => None,
        };
        let raw = row.try_get_raw(i).map_err(err)?;
        let class = if raw.is_null() {
            "NULL".to_string()
        } else {
            raw.type_info().name().to_string()
        };
        use anchovy_core::ColType as T;
        let v = match class.as_str() {
            "NULL" => Value::Null,
            "INTEGER" | "BOOLEAN" | "INT4" => {
                let n: i64 = row.try_get(i).map_err(err)?;
                if cursor == Some(i) {
                    bound = Some(Bound::Int(n));
                }
                match hint {
                    Some(T::Bool) => Value::Bool(n != 0),
                    Some(T::Decimal) => Value::Decimal(n.to_string()),
                    Some(T::Float) => Value::Float(n as f64),
                    _ => Value::Int(n),
                }
            }
            "REAL" => {
                let f: f64 = row.try_get(i).map_err(err)?;
                if cursor == Some(i) {
                    bound = Some(Bound::Real(f));
                }
                match hint {
                    Some(T::Decimal) if f.is_finite() => {
                        Value::decimal(&format!("{f}")).unwrap_or(Value::Float(f))
                    }
                    _ => Value::Float(f),
                }
            }
            "BLOB" => Value::Bytes(row.try_get(i).map_err(err)?),
            _ => {
                let s: String = row.try_get(i).map_err(err)?;
                if cursor == Some(i) {
                    bound = Some(Bound::Text(s.clone()));
                }
                lite_text(hint, s)
            }
        };
        out.push(v);
    }
    Ok(bound)
}

/// SQLite text read as its declared type; text that is not of that type stays text.
fn lite_text(hint: Option<anchovy_core::ColType>, s: String) -> Value {
    use anchovy_core::ColType as T;
    let parsed = match hint {
        Some(T::Date) => anchovy_core::row::parse_typed_text(&s, "D"),
        Some(T::DateTime) => anchovy_core::row::parse_datetime(&s),
        Some(T::Time) => anchovy_core::row::parse_typed_text(&s, "T"),
        Some(T::Decimal) => Value::decimal(&s).ok(),
        Some(T::Object) => serde_json::from_str::<serde_json::Value>(&s)
            .ok()
            .map(Value::from_json),
        Some(T::Int) => s.parse::<i64>().ok().map(Value::Int),
        Some(T::Float) => s.parse::<f64>().ok().map(Value::Float),
        _ => None,
    };
    parsed.unwrap_or(Value::String(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float4_widens_by_its_shortest_text() {
        assert_eq!(widen(0.1), 0.1);
        assert_eq!(widen(1.5e-7), 1.5e-7);
        assert!(widen(f32::NAN).is_nan());
        assert_eq!(widen(f32::NEG_INFINITY), f64::NEG_INFINITY);
        assert_eq!(widen(3.4028235e38), 3.4028235e38);
    }

    #[test]
    fn sqlite_text_reads_as_its_declared_type_or_stays_text() {
        use anchovy_core::ColType as T;
        assert_eq!(
            lite_text(Some(T::Date), "2024-02-29".into()),
            Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap())
        );
        assert_eq!(
            lite_text(Some(T::Date), "soon".into()),
            Value::String("soon".into())
        );
        assert_eq!(
            lite_text(Some(T::Decimal), "12.50".into()),
            Value::Decimal("12.50".into())
        );
        assert_eq!(
            lite_text(None, "12.50".into()),
            Value::String("12.50".into())
        );
    }
}
