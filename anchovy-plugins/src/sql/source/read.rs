//! Decoding the rows of a source into values, per database.
//!
//! The columns' [`Read`]s decide how each value decodes; a value that cannot decode
//! (PostgreSQL's `infinity` timestamps, MySQL's zero dates) fails the table with the
//! column, its type and the row's position, and nothing of that read past the last
//! committed cursor is kept.

use anchovy_core::Value;
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
    serde_json::from_str::<serde_json::Value>(&s)
        .map(|v| match v {
            serde_json::Value::Null => Value::Null,
            v @ (serde_json::Value::Array(_) | serde_json::Value::Object(_)) => Value::Json(v),
            // A JSON scalar stays a scalar of its kind.
            other => Value::from_json(other),
        })
        .map_err(|e| DecodeError::new(c, format!("not JSON: {e}")))
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
    ($row:expr, $cols:expr, $out:expr) => {{
        $out.clear();
        for (i, c) in $cols.iter().enumerate() {
            let err = |e: sqlx::Error| DecodeError::new(c, short(&e));
            let v = match c.read {
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
                Read::Date => $row
                    .try_get_unchecked::<Option<NaiveDate>, _>(i)
                    .map_err(err)?
                    .map(Value::Date),
                Read::Time => $row
                    .try_get_unchecked::<Option<NaiveTime>, _>(i)
                    .map_err(err)?
                    .map(Value::Time),
                Read::Timestamp => $row
                    .try_get_unchecked::<Option<NaiveDateTime>, _>(i)
                    .map_err(err)?
                    .map(Value::DateTime),
                Read::Timestamptz => $row
                    .try_get_unchecked::<Option<DateTime<Utc>>, _>(i)
                    .map_err(err)?
                    .map(|t| Value::DateTimeTz(t.fixed_offset())),
                Read::Bytes => $row
                    .try_get_unchecked::<Option<Vec<u8>>, _>(i)
                    .map_err(err)?
                    .map(Value::Bytes),
                Read::Lite(_) => return Err(DecodeError::new(c, "not a SQLite source")),
            };
            $out.push(v.unwrap_or(Value::Null));
        }
        Ok(())
    }};
}

/// The driver's message without its prefixes.
fn short(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::ColumnDecode { source, .. } => source.to_string(),
        other => crate::error::describe_db_error(other),
    }
}

/// Decodes one PostgreSQL row into `out`.
///
/// # Errors
/// [`DecodeError`] naming the column.
pub fn pg(
    row: &sqlx::postgres::PgRow,
    cols: &[Column],
    out: &mut Vec<Value>,
) -> Result<(), DecodeError> {
    decode_typed!(row, cols, out)
}

/// Decodes one MySQL row into `out`.
///
/// # Errors
/// [`DecodeError`] naming the column.
pub fn my(
    row: &sqlx::mysql::MySqlRow,
    cols: &[Column],
    out: &mut Vec<Value>,
) -> Result<(), DecodeError> {
    decode_typed!(row, cols, out)
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
