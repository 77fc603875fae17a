//! Reading Parquet: any file into typed batches ([`ParquetRows`]), and committed data
//! files verified against their commit record ([`ParquetReader`]).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal128Type, Decimal256Type, DecimalType, Float32Type, Float64Type,
    Int8Type, Int16Type, Int32Type, Int64Type, Time32MillisecondType, Time32SecondType,
    Time64MicrosecondType, Time64NanosecondType, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};
use async_trait::async_trait;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use futures::StreamExt;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use tokio::io::AsyncWriteExt;

use super::TYPE_KEY;
use crate::data::{FileEntry, FileReader};
use crate::datastore::Datastore;
use crate::error::{Error, Result};
use crate::row::{Batch, BatchBuilder, Json, Row, Schema, Value, canonical_decimal};

/// Decodes any Parquet file a batch at a time (blocking: call it off the runtime).
pub struct ParquetRows {
    reader: ParquetRecordBatchReader,
    table: Arc<str>,
    label: String,
    schema: Option<Arc<Schema>>,
}

impl ParquetRows {
    /// Opens `file` (named `label` in errors) for `table`.
    ///
    /// # Errors
    /// [`Error::Data`] when it is not a Parquet file.
    pub fn open(
        file: std::fs::File,
        table: &str,
        label: &str,
        batch_size: usize,
    ) -> Result<ParquetRows> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(batch_size.max(1)).build())
            .map_err(|e| Error::data(label, format!("not a readable Parquet file: {e}")))?;
        Ok(ParquetRows {
            reader,
            table: table.into(),
            label: label.to_string(),
            schema: None,
        })
    }

    /// The next batch, `None` at the end.
    ///
    /// # Errors
    /// [`Error::Data`] naming the file for corrupt data or a column type anchovies
    /// does not read.
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        let Some(rb) = self.reader.next() else {
            return Ok(None);
        };
        let rb = rb.map_err(|e| Error::data(&self.label, format!("parquet: {e}")))?;
        let schema = match &self.schema {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(Schema::new(
                    rb.schema().fields().iter().map(|f| f.name().clone()),
                ));
                self.schema = Some(s.clone());
                s
            }
        };
        let mut rows: Vec<Row> = (0..rb.num_rows())
            .map(|_| Vec::with_capacity(rb.num_columns()))
            .collect();
        for (field, col) in rb.schema().fields().iter().zip(rb.columns()) {
            let tag = field.metadata().get(TYPE_KEY).map(String::as_str);
            let values = column_values(col, tag)
                .map_err(|m| Error::data(&self.label, format!("column `{}`: {m}", field.name())))?;
            for (row, v) in rows.iter_mut().zip(values) {
                row.push(v);
            }
        }
        Ok(Some(Batch {
            table: self.table.clone(),
            schema,
            rows,
        }))
    }
}

fn date_of(days: i64) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_signed(chrono::Duration::days(days))
}

fn datetime_of(v: i64, per_second: i64) -> Option<NaiveDateTime> {
    let nanos = (v.rem_euclid(per_second) * (1_000_000_000 / per_second)) as u32;
    chrono::DateTime::from_timestamp(v.div_euclid(per_second), nanos).map(|d| d.naive_utc())
}

fn time_of(v: i64, per_second: i64) -> Option<NaiveTime> {
    let nanos = (v.rem_euclid(per_second) * (1_000_000_000 / per_second)) as u32;
    NaiveTime::from_num_seconds_from_midnight_opt(v.div_euclid(per_second) as u32, nanos)
}

/// One column's values, in row order.
fn column_values(col: &ArrayRef, tag: Option<&str>) -> std::result::Result<Vec<Value>, String> {
    let n = col.len();
    macro_rules! each {
        ($arr:expr, |$x:ident| $val:expr) => {{
            let a = $arr;
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        Ok(Value::Null)
                    } else {
                        let $x = a.value(i);
                        Ok($val)
                    }
                })
                .collect::<std::result::Result<Vec<Value>, String>>()?
        }};
    }
    let bad = |what: &str| format!("a {what} value out of range");
    let text = |s: &str| -> std::result::Result<Value, String> {
        Ok(match tag {
            Some("decimal") => Value::Decimal(canonical_decimal(s).ok_or("not a decimal")?),
            Some("json") => Value::Json(Json::parse(s)?),
            Some("mixed") => {
                let mut b = BatchBuilder::new("v");
                crate::row::decode_row(s, &mut b, &|| "value".into()).map_err(|e| e.to_string())?;
                b.take()
                    .rows
                    .pop()
                    .and_then(|mut r| r.pop())
                    .unwrap_or(Value::Null)
            }
            _ => Value::String(s.to_string()),
        })
    };
    Ok(match col.data_type() {
        DataType::Null => vec![Value::Null; n],
        DataType::Boolean => each!(col.as_boolean(), |x| Value::Bool(x)),
        DataType::Int8 => each!(col.as_primitive::<Int8Type>(), |x| Value::Int(x.into())),
        DataType::Int16 => each!(col.as_primitive::<Int16Type>(), |x| Value::Int(x.into())),
        DataType::Int32 => each!(col.as_primitive::<Int32Type>(), |x| Value::Int(x.into())),
        DataType::Int64 => each!(col.as_primitive::<Int64Type>(), |x| Value::Int(x)),
        DataType::UInt8 => each!(col.as_primitive::<UInt8Type>(), |x| Value::Int(x.into())),
        DataType::UInt16 => each!(col.as_primitive::<UInt16Type>(), |x| Value::Int(x.into())),
        DataType::UInt32 => each!(col.as_primitive::<UInt32Type>(), |x| Value::Int(x.into())),
        DataType::UInt64 => each!(
            col.as_primitive::<UInt64Type>(),
            |x| match i64::try_from(x) {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Decimal(x.to_string()),
            }
        ),
        DataType::Float32 => each!(col.as_primitive::<Float32Type>(), |x| Value::Float(
            x.into()
        )),
        DataType::Float64 => each!(col.as_primitive::<Float64Type>(), |x| Value::Float(x)),
        DataType::Decimal128(p, s) => each!(col.as_primitive::<Decimal128Type>(), |x| {
            let t = Decimal128Type::format_decimal(x, *p, *s);
            Value::Decimal(canonical_decimal(&t).ok_or_else(|| bad("decimal"))?)
        }),
        DataType::Decimal256(p, s) => each!(col.as_primitive::<Decimal256Type>(), |x| {
            let t = Decimal256Type::format_decimal(x, *p, *s);
            Value::Decimal(canonical_decimal(&t).ok_or_else(|| bad("decimal"))?)
        }),
        DataType::Utf8 => each!(col.as_string::<i32>(), |x| text(x)?),
        DataType::LargeUtf8 => each!(col.as_string::<i64>(), |x| text(x)?),
        DataType::Utf8View => each!(col.as_string_view(), |x| text(x)?),
        DataType::Binary => each!(col.as_binary::<i32>(), |x| Value::Bytes(x.to_vec())),
        DataType::LargeBinary => each!(col.as_binary::<i64>(), |x| Value::Bytes(x.to_vec())),
        DataType::BinaryView => each!(col.as_binary_view(), |x| Value::Bytes(x.to_vec())),
        DataType::FixedSizeBinary(_) => {
            each!(col.as_fixed_size_binary(), |x| Value::Bytes(x.to_vec()))
        }
        DataType::Date32 => each!(col.as_primitive::<Date32Type>(), |x| Value::Date(
            date_of(x.into()).ok_or_else(|| bad("date"))?
        )),
        DataType::Date64 => each!(col.as_primitive::<Date64Type>(), |x| Value::Date(
            datetime_of(x, 1000).ok_or_else(|| bad("date"))?.date()
        )),
        DataType::Timestamp(unit, tz) => {
            let per = match unit {
                TimeUnit::Second => 1,
                TimeUnit::Millisecond => 1000,
                TimeUnit::Microsecond => 1_000_000,
                TimeUnit::Nanosecond => 1_000_000_000,
            };
            let raw: Vec<Option<i64>> = match unit {
                TimeUnit::Second => col.as_primitive::<TimestampSecondType>().iter().collect(),
                TimeUnit::Millisecond => col
                    .as_primitive::<TimestampMillisecondType>()
                    .iter()
                    .collect(),
                TimeUnit::Microsecond => col
                    .as_primitive::<TimestampMicrosecondType>()
                    .iter()
                    .collect(),
                TimeUnit::Nanosecond => col
                    .as_primitive::<TimestampNanosecondType>()
                    .iter()
                    .collect(),
            };
            raw.into_iter()
                .map(|v| {
                    let Some(v) = v else { return Ok(Value::Null) };
                    let dt = datetime_of(v, per).ok_or_else(|| bad("timestamp"))?;
                    Ok(match tz {
                        None => Value::DateTime(dt),
                        Some(_) => Value::DateTimeTz(dt.and_utc().fixed_offset()),
                    })
                })
                .collect::<std::result::Result<_, String>>()?
        }
        DataType::Time32(TimeUnit::Second) => {
            each!(col.as_primitive::<Time32SecondType>(), |x| Value::Time(
                time_of(x.into(), 1).ok_or_else(|| bad("time"))?
            ))
        }
        DataType::Time32(_) => each!(
            col.as_primitive::<Time32MillisecondType>(),
            |x| Value::Time(time_of(x.into(), 1000).ok_or_else(|| bad("time"))?)
        ),
        DataType::Time64(TimeUnit::Microsecond) => each!(
            col.as_primitive::<Time64MicrosecondType>(),
            |x| Value::Time(time_of(x, 1_000_000).ok_or_else(|| bad("time"))?)
        ),
        DataType::Time64(_) => each!(col.as_primitive::<Time64NanosecondType>(), |x| Value::Time(
            time_of(x, 1_000_000_000).ok_or_else(|| bad("time"))?
        )),
        DataType::Dictionary(_, _) => {
            let d = col.as_any_dictionary();
            let values = column_values(d.values(), tag)?;
            if values.is_empty() {
                vec![Value::Null; n]
            } else {
                let keys = d.normalized_keys();
                (0..n)
                    .map(|i| {
                        if d.is_null(i) {
                            Value::Null
                        } else {
                            values.get(keys[i]).cloned().unwrap_or(Value::Null)
                        }
                    })
                    .collect()
            }
        }
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(_, _)
        | DataType::Struct(_)
        | DataType::Map(_, _) => (0..n)
            .map(|i| {
                Ok(if col.is_null(i) {
                    Value::Null
                } else {
                    Value::Json(json_of(col, i)?.into())
                })
            })
            .collect::<std::result::Result<_, String>>()?,
        other => {
            return Err(format!(
                "type {other} is not one anchovies reads (numbers, decimals, text, binary, dates, times, timestamps, lists, structs, maps); cast it in the file, or leave the column out"
            ));
        }
    })
}

/// One nested cell as JSON.
fn json_of(col: &ArrayRef, i: usize) -> std::result::Result<serde_json::Value, String> {
    let children = |a: ArrayRef| -> std::result::Result<serde_json::Value, String> {
        Ok(serde_json::Value::Array(
            column_values(&a, None)?
                .iter()
                .enumerate()
                .map(|(j, v)| match v {
                    Value::Json(_) => json_of(&a, j),
                    v => Ok(v.to_json()),
                })
                .collect::<std::result::Result<_, String>>()?,
        ))
    };
    Ok(match col.data_type() {
        DataType::List(_) => children(col.as_list::<i32>().value(i))?,
        DataType::LargeList(_) => children(col.as_list::<i64>().value(i))?,
        DataType::FixedSizeList(_, _) => children(col.as_fixed_size_list().value(i))?,
        DataType::Struct(fields) => {
            let s = col.as_struct();
            let mut m = serde_json::Map::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                let v = if c.is_null(i) {
                    serde_json::Value::Null
                } else {
                    match c.data_type() {
                        DataType::List(_)
                        | DataType::LargeList(_)
                        | DataType::FixedSizeList(_, _)
                        | DataType::Struct(_)
                        | DataType::Map(_, _) => json_of(c, i)?,
                        _ => column_values(&c.slice(i, 1), None)?
                            .first()
                            .map_or(serde_json::Value::Null, Value::to_json),
                    }
                };
                m.insert(f.name().clone(), v);
            }
            serde_json::Value::Object(m)
        }
        DataType::Map(_, _) => {
            let entries = col.as_map().value(i);
            let keys = column_values(entries.column(0), None)?;
            let vals = children(entries.column(1).clone())?;
            let vals = match vals {
                serde_json::Value::Array(v) => v,
                _ => Vec::new(),
            };
            let mut m = serde_json::Map::new();
            for (k, v) in keys.iter().zip(vals) {
                m.insert(k.text().into_owned(), v);
            }
            serde_json::Value::Object(m)
        }
        _ => column_values(&col.slice(i, 1), None)?
            .first()
            .map_or(serde_json::Value::Null, Value::to_json),
    })
}

/// Reads a committed Parquet data file: downloaded to a temporary file while its size
/// and CRC-32 are checked against the commit record, then decoded a batch at a time.
pub struct ParquetReader {
    rows: Option<ParquetRows>,
    key: String,
    commit: u64,
    want_rows: u64,
    got_rows: u64,
    /// Keeps the temporary file until the reader is dropped.
    _file: tempfile::NamedTempFile,
}

impl ParquetReader {
    /// Downloads, verifies and opens a committed file.
    ///
    /// # Errors
    /// [`Error::Datastore`] when it cannot be read, [`Error::Data`] when it does not
    /// match its commit record or is not Parquet.
    pub async fn open_committed(
        ds: &Datastore,
        entry: &FileEntry,
        commit: u64,
        batch_size: usize,
    ) -> Result<ParquetReader> {
        let io = |e: std::io::Error| Error::data(&entry.key, format!("temporary file: {e}"));
        let tmp = tempfile::NamedTempFile::new().map_err(io)?;
        let mut out = tokio::fs::File::from_std(tmp.reopen().map_err(io)?);
        let mut stream = ds.stream(&entry.key).await?;
        let (mut bytes, mut crc) = (0u64, libdeflater::Crc::new());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            bytes += chunk.len() as u64;
            crc.update(&chunk);
            out.write_all(&chunk).await.map_err(io)?;
        }
        out.flush().await.map_err(io)?;
        if bytes != entry.bytes {
            return Err(crate::data::mismatch(
                &entry.key,
                commit,
                format!("{bytes} bytes stored, the record says {}", entry.bytes),
            ));
        }
        if let Some(want) = entry.crc32
            && want != crc.sum()
        {
            return Err(crate::data::mismatch(
                &entry.key,
                commit,
                format!("CRC-32 {:08x}, the record says {want:08x}", crc.sum()),
            ));
        }
        let file = tmp.reopen().map_err(io)?;
        let (tbl, key) = (entry.tbl.clone(), entry.key.clone());
        let rows =
            tokio::task::spawn_blocking(move || ParquetRows::open(file, &tbl, &key, batch_size))
                .await
                .map_err(|e| Error::data(&entry.key, e.to_string()))??;
        Ok(ParquetReader {
            rows: Some(rows),
            key: entry.key.clone(),
            commit,
            want_rows: entry.rows,
            got_rows: 0,
            _file: tmp,
        })
    }
}

#[async_trait]
impl FileReader for ParquetReader {
    async fn next_batch(&mut self) -> Result<Option<Batch>> {
        let Some(mut rows) = self.rows.take() else {
            return Ok(None);
        };
        let (rows, next) = tokio::task::spawn_blocking(move || {
            let b = rows.next_batch();
            (rows, b)
        })
        .await
        .map_err(|e| Error::data(&self.key, e.to_string()))?;
        match next? {
            Some(b) => {
                self.got_rows += b.rows.len() as u64;
                self.rows = Some(rows);
                Ok(Some(b))
            }
            None if self.got_rows != self.want_rows => Err(crate::data::mismatch(
                &self.key,
                self.commit,
                format!("{} rows, the record says {}", self.got_rows, self.want_rows),
            )),
            None => Ok(None),
        }
    }
}
