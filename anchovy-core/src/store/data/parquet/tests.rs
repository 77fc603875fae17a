//! The Parquet data files against their model.

use super::*;
use crate::data::{FileWriter, open_committed, read_all};
use crate::testutil::Rng;
use chrono::{FixedOffset, TimeZone};

/// A value of column `c` (each column has a habit; column 9 mixes types).
fn value(r: &mut Rng, c: usize) -> Value {
    if r.below(7) == 0 {
        return Value::Null;
    }
    let base = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let kind = if c == 9 { r.below(9) as usize } else { c };
    match kind {
        0 => Value::Int(r.next() as i64),
        1 => Value::Float(match r.below(20) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            _ => (r.next() as i64) as f64 / 1e3,
        }),
        2 => Value::Decimal(format!(
            "{}.{:02}",
            r.below(1_000_000) as i64 - 500_000,
            r.below(100)
        )),
        3 => Value::Decimal(match r.below(3) {
            0 => format!("{}", r.below(1000)),
            1 => format!("-{}.5", r.below(1000) + 1),
            _ => "123456789012345678901234567890123456789012.000001".into(),
        }),
        4 => Value::String(
            ["", "a", "ü, \"q\"\nline", "日本"][r.below(4) as usize]
                .repeat(1 + r.below(3) as usize),
        ),
        5 => Value::DateTime(base + chrono::Duration::nanoseconds(r.below(1 << 50) as i64)),
        6 => {
            let off = FixedOffset::east_opt(3600 * (r.below(25) as i32 - 12)).unwrap();
            let t = off.from_utc_datetime(
                &(base + chrono::Duration::microseconds(r.below(1 << 40) as i64)),
            );
            Value::DateTimeTz(t)
        }
        7 => match r.below(4) {
            0 => Value::Date(base.date() + chrono::Duration::days(r.below(20000) as i64 - 10000)),
            1 => Value::Time(
                NaiveTime::from_num_seconds_from_midnight_opt(
                    r.below(86400) as u32,
                    r.below(1_000_000_000) as u32,
                )
                .unwrap(),
            ),
            2 => Value::Bool(r.below(2) == 0),
            _ => Value::Bytes((0..r.below(5)).map(|i| i as u8 * 51).collect()),
        },
        _ => Value::Json(serde_json::json!({"k": [1, "two", {"n": null}], "x": r.below(9)}).into()),
    }
}

/// What the model says a value reads back as: itself, but a datetime with an offset
/// is its instant in UTC (the documented semantics).
fn model(v: &Value) -> Value {
    match v {
        Value::DateTimeTz(t) => Value::DateTimeTz(t.naive_utc().and_utc().fixed_offset()),
        v => v.clone(),
    }
}

/// Rows in a comparable form: columns in name order, NULLs dropped, each value in its
/// NDJSON encoding (which tells every type apart, NaN included).
fn text(rows: &[(Arc<Schema>, Row)], model: fn(&Value) -> Value) -> Vec<String> {
    rows.iter()
        .map(|(s, r)| {
            let mut cells: Vec<(String, String)> = s
                .names()
                .iter()
                .zip(r)
                .filter(|(_, v)| !matches!(v, Value::Null))
                .map(|(n, v)| {
                    let mut t = String::new();
                    crate::row::encode_row_into(&Schema::new(["v"]), &[model(v)], &mut t);
                    (n.to_string(), t)
                })
                .collect();
            cells.sort();
            format!("{cells:?}")
        })
        .collect()
}

/// Seeded differential test: random batches (mixed types, NULLs, columns coming and
/// going, decimals of one and of several scales, nanosecond times, offsets) written
/// as Parquet with the sink's rotation rule, read back equal to the model.
#[tokio::test]
async fn parquet_round_trip_matches_the_model() {
    for seed in 1..=12u64 {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_str().unwrap()).unwrap();
        let mut r = Rng(seed);
        let mut written: Vec<(Arc<Schema>, Row)> = Vec::new();
        let mut files = Vec::new();
        let mut w: Option<Box<dyn FileWriter>> = None;
        for b in 0..(2 + r.below(6)) {
            let ncols = 3 + r.below(8) as usize;
            let cols: Vec<usize> = (0..ncols).map(|i| (i + b as usize) % 10).collect();
            let names: Vec<String> = cols.iter().map(|c| format!("c{c}")).collect();
            let schema = Arc::new(Schema::new(names.iter()));
            let n = 1 + r.below(if seed % 3 == 0 { 9000 } else { 300 }) as usize;
            let rows: Vec<Row> = (0..n)
                .map(|_| cols.iter().map(|c| value(&mut r, *c)).collect())
                .collect();
            let batch = Batch {
                table: "t".into(),
                schema: schema.clone(),
                rows,
            };
            if w.as_ref().is_some_and(|w| !w.fits(&batch)) {
                files.push(w.take().unwrap().finish().await.unwrap());
            }
            let key = format!("data/t/{seed}.{}.parquet", files.len());
            let wr = w.get_or_insert_with(|| {
                DataFormat::Parquet.create(&ds, "t".into(), key, &BTreeMap::new())
            });
            wr.write(&batch).await.unwrap();
            written.extend(batch.rows.iter().map(|r| (schema.clone(), r.clone())));
        }
        files.push(w.take().unwrap().finish().await.unwrap());
        let mut read: Vec<(Arc<Schema>, Row)> = Vec::new();
        for f in &files {
            assert_eq!(f.format, DataFormat::Parquet);
            let batches = read_all(open_committed(&ds, f, 1, 500).await.unwrap())
                .await
                .unwrap();
            for b in batches {
                read.extend(b.rows.iter().map(|r| (b.schema.clone(), r.clone())));
            }
        }
        assert_eq!(text(&read, model), text(&written, model), "seed {seed}");
        // The model is not vacuous: offsets are really normalised.
        if seed == 1 {
            assert_ne!(text(&read, Value::clone), text(&written, Value::clone));
        }
        let total: u64 = files.iter().map(|f| f.rows).sum();
        assert_eq!(total, written.len() as u64);
    }
}

/// A cut or changed file fails against its commit record before any row is used.
#[tokio::test]
async fn a_changed_file_does_not_match_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Datastore::open(dir.path().to_str().unwrap()).unwrap();
    let mut w =
        DataFormat::Parquet.create(&ds, "t".into(), "data/t/x.parquet".into(), &BTreeMap::new());
    let batch = Batch {
        table: "t".into(),
        schema: Arc::new(Schema::new(["id"])),
        rows: (0..100).map(|i| vec![Value::Int(i)]).collect(),
    };
    w.write(&batch).await.unwrap();
    let mut e = w.finish().await.unwrap();
    let batches = read_all(open_committed(&ds, &e, 1, 10).await.unwrap()).await;
    assert_eq!(batches.unwrap().len(), 10);
    e.rows += 1;
    let err = read_all(open_committed(&ds, &e, 7, 10).await.unwrap())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not match commit record 7"),
        "{err}"
    );
    e.rows -= 1;
    e.crc32 = Some(e.crc32.unwrap() ^ 1);
    let err = open_committed(&ds, &e, 7, 10).await.err().unwrap();
    assert!(err.to_string().contains("CRC-32"), "{err}");
}
