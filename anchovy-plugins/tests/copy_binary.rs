//! The binary COPY path against the CSV path, on a real PostgreSQL: the same seeded
//! rows (every column type the binary path sends, NULLs, extremes: i64 bounds, numerics
//! of many scales and leading/trailing zeros, negative zero, NaN and infinities, dates
//! of years 1 and 9999, offsets with seconds, microsecond fractions, empty and odd text,
//! nested JSON) go through `Tx::stage` (CSV, the server's own parsers: the reference)
//! into one table and through `Tx::stage_binary` into another, and every stored row
//! must read back the same. Values the binary path refuses must be refused without
//! harm and be rare for values of their column's own type.
//!
//! `COPY_BINARY_SEED` and `COPY_BINARY_ROWS` (default 4000) replay or scale it; needs
//! `PG_URL` (script/test starts the server).
#![allow(missing_docs)]

use std::sync::Arc;

use anchovy_core::chrono::{FixedOffset, NaiveDate, NaiveTime, TimeZone};
use anchovy_core::row::{Batch, Schema};
use anchovy_core::testutil::Rng;
use anchovy_core::{ColType, Value};
use anchovy_plugins::sql::copy_binary::{self, PgType};
use anchovy_plugins::sql::db::{Db, Tx};
use anchovy_plugins::sql::stage::Staged;

/// The columns: name, SQL type, the column type the uploader knows, the binary type.
const COLS: &[(&str, &str, ColType, PgType)] = &[
    ("c_int8", "bigint", ColType::Int, PgType::Int8),
    ("c_int4", "integer", ColType::Int, PgType::Int4),
    ("c_int2", "smallint", ColType::Int, PgType::Int2),
    (
        "c_float8",
        "double precision",
        ColType::Float,
        PgType::Float8,
    ),
    ("c_num", "numeric", ColType::Decimal, PgType::Numeric),
    (
        "c_num_scaled",
        "numeric(30,3)",
        ColType::Decimal,
        PgType::Numeric,
    ),
    ("c_bool", "boolean", ColType::Bool, PgType::Bool),
    ("c_text", "text", ColType::Str, PgType::Text),
    ("c_varchar", "varchar", ColType::Str, PgType::Text),
    ("c_date", "date", ColType::Date, PgType::Date),
    ("c_ts", "timestamp", ColType::DateTime, PgType::Timestamp),
    (
        "c_tstz",
        "timestamptz",
        ColType::DateTime,
        PgType::Timestamptz,
    ),
    (
        "c_tstz_naive",
        "timestamptz",
        ColType::DateTime,
        PgType::Timestamptz,
    ),
    ("c_time", "time", ColType::Time, PgType::Time),
    ("c_bytea", "bytea", ColType::Bytes, PgType::Bytea),
    ("c_json", "json", ColType::Object, PgType::Json),
    ("c_jsonb", "jsonb", ColType::Object, PgType::Jsonb),
];

/// Between 1 and `max` random digits.
fn digits(r: &mut Rng, max: u64) -> String {
    let n = 1 + r.below(max);
    (0..n)
        .map(|_| char::from(b'0' + r.below(10) as u8))
        .collect()
}

fn decimal(r: &mut Rng) -> String {
    let int = match r.below(4) {
        0 => "0".to_string(),
        1 => format!("000{}", digits(r, 3)),
        _ => digits(r, 24),
    };
    let frac = match r.below(4) {
        0 => String::new(),
        1 => format!(".{}", "0".repeat(1 + r.below(6) as usize)),
        2 => format!(".{}{}", "0".repeat(r.below(9) as usize), digits(r, 1)),
        _ => format!(".{}", digits(r, 20)),
    };
    let sign = if r.chance(30) { "-" } else { "" };
    format!("{sign}{int}{frac}")
}

fn date(r: &mut Rng) -> NaiveDate {
    match r.below(10) {
        0 => NaiveDate::from_ymd_opt(1, 1, 1).unwrap(),
        1 => NaiveDate::from_ymd_opt(9999, 12, 31).unwrap(),
        2 => NaiveDate::from_ymd_opt(2000, 1, 1).unwrap(),
        _ => NaiveDate::from_ymd_opt(1 + r.below(9999) as i32, 1, 1)
            .unwrap()
            .checked_add_days(anchovy_core::chrono::Days::new(r.below(365)))
            .unwrap(),
    }
}

fn time(r: &mut Rng) -> NaiveTime {
    let secs = r.below(86_400) as u32;
    let nano = match r.below(12) {
        0..=3 => 0,
        4..=6 => r.below(1_000) as u32 * 1_000_000,
        7..=10 => r.below(1_000_000) as u32 * 1_000,
        // Sub-microsecond: refused by the binary path.
        _ => r.below(1_000_000_000) as u32,
    };
    NaiveTime::from_num_seconds_from_midnight_opt(secs, nano).unwrap()
}

fn text(r: &mut Rng) -> String {
    const BITS: &[&str] = &[
        "a", "Z", " ", ",", "\"", "'", "\\", "\n", "\r\n", "\t", "é", "日本", "🐟", "NULL", "\\N",
        "x", "0",
    ];
    (0..r.below(12))
        .map(|_| BITS[r.below(BITS.len() as u64) as usize])
        .collect()
}

fn json(r: &mut Rng, depth: u32) -> serde_json::Value {
    match r.below(if depth > 2 { 5 } else { 7 }) {
        0 => serde_json::Value::Null,
        1 => serde_json::Value::Bool(r.chance(50)),
        2 => serde_json::json!(r.next() as i64),
        3 => serde_json::json!((r.below(1_000_000) as f64) / 64.0),
        4 => serde_json::Value::String(text(r)),
        5 => (0..r.below(4)).map(|_| json(r, depth + 1)).collect(),
        _ => (0..r.below(4))
            .map(|i| (format!("k{i}{}", text(r)), json(r, depth + 1)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

fn value(r: &mut Rng, col: &str) -> Value {
    if r.chance(10) {
        return Value::Null;
    }
    match col {
        "c_int8" => Value::Int(match r.below(5) {
            0 => i64::MIN,
            1 => i64::MAX,
            _ => r.next() as i64 >> r.below(63),
        }),
        "c_int4" => Value::Int(match r.below(5) {
            0 => i64::from(i32::MIN),
            1 => i64::from(i32::MAX),
            _ => i64::from(r.next() as i32),
        }),
        "c_int2" => Value::Int(i64::from(r.next() as i16)),
        "c_float8" => Value::Float(match r.below(10) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => -0.0,
            4 => f64::MIN_POSITIVE / 8.0,
            5 => f64::MAX,
            _ => f64::from_bits(r.next()).clamp(-1e300, 1e300),
        }),
        "c_num" | "c_num_scaled" => Value::Decimal(decimal(r)),
        "c_bool" => Value::Bool(r.chance(50)),
        "c_text" | "c_varchar" => Value::String(text(r)),
        "c_date" => Value::Date(date(r)),
        "c_ts" | "c_tstz_naive" => Value::DateTime(date(r).and_time(time(r))),
        "c_tstz" => {
            let secs = match r.below(4) {
                0 => 0,
                1 => 45, // an offset with seconds
                _ => (r.below(26 * 4) as i32 - 52) * 900,
            };
            let off = FixedOffset::east_opt(secs).unwrap();
            let local = date(r).and_time(time(r));
            match off.from_local_datetime(&local).single() {
                Some(dt) => Value::DateTimeTz(dt),
                None => Value::Null,
            }
        }
        "c_time" => Value::Time(time(r)),
        "c_bytea" => Value::Bytes((0..r.below(20)).map(|_| r.next() as u8).collect()),
        _ => Value::Json(json(r, 0).into()),
    }
}

/// A time with a fraction finer than PostgreSQL's microseconds: the one kind of value
/// of a column's own type (within years 1-9999) the binary path refuses.
fn sub_micro(v: &Value) -> bool {
    use anchovy_core::chrono::Timelike;
    match v {
        Value::Time(t) => t.nanosecond() % 1000 != 0,
        Value::DateTime(dt) => dt.nanosecond() % 1000 != 0,
        Value::DateTimeTz(dt) => dt.nanosecond() % 1000 != 0,
        _ => false,
    }
}

fn batch(names: &Arc<Schema>, rows: Vec<Vec<Value>>) -> Batch {
    Batch {
        table: Arc::from("t"),
        schema: names.clone(),
        rows,
    }
}

async fn load(
    tx: &mut Tx,
    into: &str,
    cols: &[(String, ColType)],
    schema: &Arc<Schema>,
    rows: &[Vec<Value>],
    binary: Option<&[PgType]>,
) -> Staged {
    let (send, mut rx) = tokio::sync::mpsc::channel(4);
    let chunks: Vec<Vec<Vec<Value>>> = rows.chunks(97).map(<[_]>::to_vec).collect();
    let schema = schema.clone();
    let producer = tokio::spawn(async move {
        for (i, c) in chunks.into_iter().enumerate() {
            if send.send(Ok((i as u64, batch(&schema, c)))).await.is_err() {
                return;
            }
        }
    });
    let r = match binary {
        Some(types) => tx.stage_binary(into, cols, false, &mut rx, types).await,
        None => tx.stage(into, cols, false, &mut rx).await.map(Staged::Rows),
    };
    producer.abort();
    r.unwrap_or_else(|e| panic!("staging into {into}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_copy_stores_what_csv_copy_stores() {
    let Ok(url) = std::env::var("PG_URL") else {
        panic!("PG_URL is not set: run the tests with script/test, which starts PostgreSQL")
    };
    let seed: u64 = std::env::var("COPY_BINARY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_C0B1);
    let n: usize = std::env::var("COPY_BINARY_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000);
    let mut r = Rng(seed);
    let db = Db::connect(&url).await.unwrap();
    let (t_csv, t_bin) = (
        format!("cb_csv_{}", std::process::id()),
        format!("cb_bin_{}", std::process::id()),
    );
    let ddl: Vec<String> = std::iter::once("id bigint".to_string())
        .chain(COLS.iter().map(|(c, t, _, _)| format!("{c} {t}")))
        .collect();
    for t in [&t_csv, &t_bin] {
        db.exec(&format!("DROP TABLE IF EXISTS {t}")).await.unwrap();
        db.exec(&format!("CREATE TABLE {t} ({})", ddl.join(", ")))
            .await
            .unwrap();
    }
    let mut cols: Vec<(String, ColType)> = vec![("id".into(), ColType::Int)];
    cols.extend(COLS.iter().map(|(c, _, ty, _)| (c.to_string(), *ty)));
    let schema = Arc::new(Schema::new(cols.iter().map(|(c, _)| c.as_str())));
    let mut types = vec![PgType::Int8];
    types.extend(COLS.iter().map(|(_, _, _, b)| *b));

    // Rows the binary path takes whole; refused values are counted and left out.
    let (mut rows, mut refused) = (Vec::new(), 0usize);
    let mut scratch = Vec::new();
    while rows.len() < n {
        let mut row = vec![Value::Int(rows.len() as i64)];
        row.extend(COLS.iter().map(|(c, ..)| value(&mut r, c)));
        let all = row
            .iter()
            .zip(&types)
            .all(|(v, ty)| copy_binary::field(&mut scratch, v, *ty));
        if all {
            rows.push(row);
        } else {
            assert!(
                row.iter().any(sub_micro),
                "seed {seed}: a row was refused for no documented reason: {row:?}"
            );
            refused += 1;
        }
    }

    let mut tx = db.begin().await.unwrap();
    // The binary path itself asks the catalog for these types.
    let names: Vec<&str> = cols.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        tx.copy_types(&format!("\"{t_bin}\""), &names)
            .await
            .unwrap(),
        Some(types.clone())
    );
    let csv = load(&mut tx, &t_csv, &cols, &schema, &rows, None).await;
    let bin = load(&mut tx, &t_bin, &cols, &schema, &rows, Some(&types)).await;
    assert!(matches!(csv, Staged::Rows(k) if k as usize == n), "{csv:?}");
    assert!(matches!(bin, Staged::Rows(k) if k as usize == n), "{bin:?}");
    tx.commit().await.unwrap();

    let read = |t: String| {
        let url = url.clone();
        async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let rows: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT id, t::text FROM {t} t ORDER BY id"
            )))
            .fetch_all(&pool)
            .await
            .unwrap();
            pool.close().await;
            rows
        }
    };
    let (want, got) = (read(t_csv.clone()).await, read(t_bin.clone()).await);
    assert_eq!(want.len(), n);
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(
            w, g,
            "seed {seed}: row {} differs (CSV, then binary); its values: {:?}",
            w.0, rows[w.0 as usize]
        );
    }
    assert_eq!(want.len(), got.len());
    assert!(
        refused > 0,
        "seed {seed}: the generator made no sub-microsecond value"
    );

    // A refused value mid-load: the COPY is abandoned and says which column.
    let mut tx = db.begin().await.unwrap();
    let mut odd = rows[..200].to_vec();
    odd[150][1] = Value::String("12".into());
    let r = load(&mut tx, &t_bin, &cols, &schema, &odd, Some(&types)).await;
    assert!(
        matches!(&r, Staged::NotBinary { column } if column == "c_int8"),
        "{r:?}"
    );
    drop(tx);
    for t in [&t_csv, &t_bin] {
        db.exec(&format!("DROP TABLE {t}")).await.unwrap();
    }
}
