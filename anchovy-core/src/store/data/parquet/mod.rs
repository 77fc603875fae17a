//! `parquet` data files (`data_buffer_cls: parquet`), and the Parquet reader that the
//! downloaders' `format: parquet` shares.
//!
//! **Writing.** A file has one schema with exact types, decided from its first
//! [`SAMPLE_ROWS`] rows (the table's `columns:` types decide columns that are all
//! null there):
//!
//! | values | Parquet column |
//! |---|---|
//! | bool / int / float | BOOLEAN / INT64 / DOUBLE (NaN and infinities kept) |
//! | decimal, every value with the same scale and at most 38 digits | DECIMAL(38, scale) |
//! | decimal of varying scale or more digits | UTF8 with field metadata `anchovy.type=decimal` (the exact text) |
//! | text / bytes | UTF8 / BINARY |
//! | date / time | DATE / TIME(micros, or nanos when a value needs them) |
//! | datetime without offset | TIMESTAMP(micros or nanos, not adjusted to UTC) |
//! | datetime with offset | TIMESTAMP(micros or nanos, adjusted to UTC): the instant; the offset is not kept |
//! | nested JSON | UTF8 holding the JSON text, field metadata `anchovy.type=json` |
//! | a column whose values have several types | UTF8, each value in its NDJSON form, `anchovy.type=mixed` |
//!
//! A later batch with a new column, or a value its column cannot hold exactly, does
//! not fit ([`super::FileWriter::fits`]): the sink finishes the file and starts the
//! next. Row groups are cut at [`ROW_GROUP_BYTES`] or [`ROW_GROUP_ROWS`], pages are
//! zstd-compressed, and each row group is uploaded as soon as it is encoded: memory
//! stays at about one row group whatever the file size. DuckDB and pyarrow read
//! the files as they are.
//!
//! **Reading.** A committed file is downloaded to a temporary file (Parquet's footer
//! is at its end) while its size and CRC-32 are checked against the commit record,
//! then decoded a batch at a time off the async runtime. [`ParquetRows`] reads any
//! Parquet file (other tools' too): integers, floats, decimals, text, binary, dates,
//! times, timestamps (with a time zone: the instant, as UTC), dictionaries, and nested
//! lists, structs and maps as JSON. Other types (intervals, durations, unions) fail
//! with the column and the type named.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    StringBuilder, Time64MicrosecondBuilder, Time64NanosecondBuilder, TimestampMicrosecondBuilder,
    TimestampNanosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use async_trait::async_trait;
use chrono::{NaiveDate, NaiveTime, Timelike};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tokio::io::AsyncWriteExt;

mod read;
#[cfg(test)]
mod tests;

pub use self::read::{ParquetReader, ParquetRows};
use super::{ColumnTypes, DataFormat, FileEntry, FileWriter};
use crate::datastore::Datastore;
use crate::error::{Error, Result};
use crate::row::{Batch, Row, Schema, Value};
use crate::tbl::ColType;

/// Rows buffered before a file's schema is decided.
pub const SAMPLE_ROWS: usize = 8192;
/// A row group is cut when its encoded size reaches this.
pub const ROW_GROUP_BYTES: usize = 16 << 20;
/// ... or when it has this many rows.
pub const ROW_GROUP_ROWS: usize = 256 * 1024;
/// The field metadata key naming an anchovies type a Parquet type does not carry.
pub const TYPE_KEY: &str = "anchovy.type";

/// How a column is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
    Decimal { scale: i8 },
    DecimalText,
    Str,
    Date,
    DateTime { nanos: bool },
    DateTimeTz { nanos: bool },
    Time { nanos: bool },
    Bytes,
    Json,
    Mixed,
}

/// The variant of a value, as a bit.
fn variant(v: &Value) -> u16 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Int(_) => 1 << 1,
        Value::Float(_) => 1 << 2,
        Value::Decimal(_) => 1 << 3,
        Value::String(_) => 1 << 4,
        Value::Date(_) => 1 << 5,
        Value::DateTime(_) => 1 << 6,
        Value::DateTimeTz(_) => 1 << 7,
        Value::Time(_) => 1 << 8,
        Value::Bytes(_) => 1 << 9,
        Value::Json(_) => 1 << 10,
    }
}

/// Scale and digit count of a canonical decimal.
fn decimal_shape(d: &str) -> (usize, usize) {
    let d = d.trim_start_matches('-');
    match d.split_once('.') {
        Some((i, f)) => (f.len(), i.len() + f.len()),
        None => (0, d.len()),
    }
}

fn sub_micro(nanos: u32) -> bool {
    !nanos.is_multiple_of(1000)
}

impl Kind {
    /// Whether `v` can be stored in this column exactly.
    fn holds(self, v: &Value) -> bool {
        match (self, v) {
            (_, Value::Null) | (Kind::Mixed, _) => true,
            (Kind::Bool, Value::Bool(_))
            | (Kind::Int, Value::Int(_))
            | (Kind::Float, Value::Float(_))
            | (Kind::DecimalText, Value::Decimal(_))
            | (Kind::Str, Value::String(_))
            | (Kind::Date, Value::Date(_))
            | (Kind::Bytes, Value::Bytes(_))
            | (Kind::Json, Value::Json(_)) => true,
            (Kind::Decimal { scale }, Value::Decimal(d)) => {
                let (s, digits) = decimal_shape(d);
                s == scale as usize && digits <= 38
            }
            (Kind::DateTime { nanos }, Value::DateTime(dt)) => {
                (nanos || !sub_micro(dt.nanosecond()))
                    && dt.and_utc().timestamp_nanos_opt().is_some()
            }
            (Kind::DateTimeTz { nanos }, Value::DateTimeTz(dt)) => {
                (nanos || !sub_micro(dt.nanosecond())) && dt.timestamp_nanos_opt().is_some()
            }
            (Kind::Time { nanos }, Value::Time(t)) => nanos || !sub_micro(t.nanosecond()),
            _ => false,
        }
    }

    fn data_type(self) -> DataType {
        let unit = |nanos| {
            if nanos {
                TimeUnit::Nanosecond
            } else {
                TimeUnit::Microsecond
            }
        };
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Decimal { scale } => DataType::Decimal128(38, scale),
            Kind::DecimalText | Kind::Str | Kind::Json | Kind::Mixed => DataType::Utf8,
            Kind::Date => DataType::Date32,
            Kind::DateTime { nanos } => DataType::Timestamp(unit(nanos), None),
            Kind::DateTimeTz { nanos } => DataType::Timestamp(unit(nanos), Some("UTC".into())),
            Kind::Time { nanos } => DataType::Time64(unit(nanos)),
            Kind::Bytes => DataType::Binary,
        }
    }

    fn tag(self) -> Option<&'static str> {
        match self {
            Kind::DecimalText => Some("decimal"),
            Kind::Json => Some("json"),
            Kind::Mixed => Some("mixed"),
            _ => None,
        }
    }

    /// The column kind for the values of one column in the sample; `declared` decides
    /// a column with no value.
    fn of(values: &[&Value], declared: Option<ColType>) -> Kind {
        let mut bits = 0u16;
        let (mut scales, mut digits, mut nanos) = (None::<(usize, usize)>, 0usize, false);
        for v in values {
            bits |= variant(v);
            match v {
                Value::Decimal(d) => {
                    let (s, n) = decimal_shape(d);
                    scales = Some(scales.map_or((s, s), |(lo, hi)| (lo.min(s), hi.max(s))));
                    digits = digits.max(n);
                }
                Value::DateTime(dt) => nanos |= sub_micro(dt.nanosecond()),
                Value::DateTimeTz(dt) => nanos |= sub_micro(dt.nanosecond()),
                Value::Time(t) => nanos |= sub_micro(t.nanosecond()),
                _ => {}
            }
        }
        let kind = match bits {
            0 => {
                return match declared {
                    Some(ColType::Bool) => Kind::Bool,
                    Some(ColType::Int) => Kind::Int,
                    Some(ColType::Float) => Kind::Float,
                    Some(ColType::Decimal) => Kind::DecimalText,
                    Some(ColType::Date) => Kind::Date,
                    Some(ColType::DateTime) => Kind::DateTime { nanos: false },
                    Some(ColType::Time) => Kind::Time { nanos: false },
                    Some(ColType::Bytes) => Kind::Bytes,
                    Some(ColType::Object) => Kind::Json,
                    Some(ColType::Str) | None => Kind::Str,
                };
            }
            1 => Kind::Bool,
            2 => Kind::Int,
            4 => Kind::Float,
            8 => match scales {
                Some((lo, hi)) if lo == hi && digits <= 38 => Kind::Decimal { scale: hi as i8 },
                _ => Kind::DecimalText,
            },
            16 => Kind::Str,
            32 => Kind::Date,
            64 => Kind::DateTime { nanos },
            128 => Kind::DateTimeTz { nanos },
            256 => Kind::Time { nanos },
            512 => Kind::Bytes,
            1024 => Kind::Json,
            _ => Kind::Mixed,
        };
        // A value out of the nanosecond range goes to the exact text form.
        if values.iter().all(|v| kind.holds(v)) {
            kind
        } else {
            Kind::Mixed
        }
    }
}

/// A file's columns and their kinds, fixed once the sample is read.
struct Plan {
    schema: Arc<ArrowSchema>,
    kinds: Vec<Kind>,
    index: HashMap<String, usize>,
}

impl Plan {
    fn of(sample: &[Batch], declared: &BTreeMap<String, ColType>) -> Plan {
        let mut names: Vec<String> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for b in sample {
            for n in b.schema.names() {
                if !index.contains_key(&**n) {
                    index.insert(n.to_string(), names.len());
                    names.push(n.to_string());
                }
            }
        }
        let mut kinds = Vec::with_capacity(names.len());
        let mut fields = Vec::with_capacity(names.len());
        for name in &names {
            let values: Vec<&Value> = sample
                .iter()
                .filter_map(|b| b.schema.index_of(name).map(|i| (b, i)))
                .flat_map(|(b, i)| b.rows.iter().filter_map(move |r| r.get(i)))
                .collect();
            let kind = Kind::of(&values, declared.get(name).copied());
            let mut field = Field::new(name, kind.data_type(), true);
            if let Some(tag) = kind.tag() {
                field = field.with_metadata(HashMap::from([(TYPE_KEY.into(), tag.into())]));
            }
            kinds.push(kind);
            fields.push(field);
        }
        Plan {
            schema: Arc::new(ArrowSchema::new(fields)),
            kinds,
            index,
        }
    }

    fn fits(&self, batch: &Batch) -> bool {
        batch.schema.names().iter().enumerate().all(|(c, name)| {
            self.index.get(&**name).is_some_and(|&k| {
                let kind = self.kinds[k];
                batch
                    .rows
                    .iter()
                    .all(|r| r.get(c).is_none_or(|v| kind.holds(v)))
            })
        })
    }

    /// The batch as Arrow arrays (the caller checked it fits).
    fn encode(&self, batch: &Batch) -> Result<RecordBatch> {
        let cols: Vec<ArrayRef> = self
            .schema
            .fields()
            .iter()
            .zip(&self.kinds)
            .map(|(f, kind)| {
                let at = batch.schema.index_of(f.name());
                const NULL: Value = Value::Null;
                let cells = batch
                    .rows
                    .iter()
                    .map(|r: &Row| at.and_then(|i| r.get(i)).unwrap_or(&NULL));
                encode_column(*kind, cells, batch.rows.len())
            })
            .collect::<Result<_>>()?;
        RecordBatch::try_new(self.schema.clone(), cols)
            .map_err(|e| Error::data(batch.table.to_string(), format!("parquet: {e}")))
    }
}

fn micros(nanos: i64) -> i64 {
    nanos.div_euclid(1000)
}

fn decimal_i128(d: &str) -> i128 {
    let neg = d.starts_with('-');
    let v: i128 = d
        .bytes()
        .filter(u8::is_ascii_digit)
        .fold(0i128, |acc, b| acc * 10 + i128::from(b - b'0'));
    if neg { -v } else { v }
}

fn encode_column<'a>(
    kind: Kind,
    values: impl Iterator<Item = &'a Value>,
    n: usize,
) -> Result<ArrayRef> {
    macro_rules! build {
        ($builder:expr, $pat:pat => $val:expr) => {{
            let mut b = $builder;
            for v in values {
                match v {
                    $pat => b.append_value($val),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    Ok(match kind {
        Kind::Bool => build!(BooleanBuilder::with_capacity(n), Value::Bool(x) => *x),
        Kind::Int => build!(Int64Builder::with_capacity(n), Value::Int(x) => *x),
        Kind::Float => build!(Float64Builder::with_capacity(n), Value::Float(x) => *x),
        Kind::Decimal { scale } => {
            let b = Decimal128Builder::with_capacity(n)
                .with_precision_and_scale(38, scale)
                .map_err(|e| Error::data("parquet", e.to_string()))?;
            build!(b, Value::Decimal(d) => decimal_i128(d))
        }
        Kind::DecimalText => build!(StringBuilder::with_capacity(n, n * 8), Value::Decimal(d) => d),
        Kind::Str => build!(StringBuilder::with_capacity(n, n * 16), Value::String(s) => s),
        Kind::Json => {
            build!(StringBuilder::with_capacity(n, n * 32), Value::Json(j) => j.to_string())
        }
        Kind::Mixed => {
            let schema = Schema::new(["v"]);
            let mut b = StringBuilder::with_capacity(n, n * 16);
            let mut s = String::new();
            for v in values {
                if matches!(v, Value::Null) {
                    b.append_null();
                } else {
                    s.clear();
                    crate::row::encode_row_into(&schema, std::slice::from_ref(v), &mut s);
                    b.append_value(s.trim_end());
                }
            }
            Arc::new(b.finish())
        }
        Kind::Date => {
            build!(Date32Builder::with_capacity(n), Value::Date(d) => (*d - epoch).num_days() as i32)
        }
        Kind::DateTime { nanos: true } => build!(
            TimestampNanosecondBuilder::with_capacity(n),
            Value::DateTime(dt) => dt.and_utc().timestamp_nanos_opt().unwrap_or_default()
        ),
        Kind::DateTime { nanos: false } => build!(
            TimestampMicrosecondBuilder::with_capacity(n),
            Value::DateTime(dt) => dt.and_utc().timestamp_micros()
        ),
        Kind::DateTimeTz { nanos: true } => build!(
            TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC"),
            Value::DateTimeTz(dt) => dt.timestamp_nanos_opt().unwrap_or_default()
        ),
        Kind::DateTimeTz { nanos: false } => build!(
            TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
            Value::DateTimeTz(dt) => dt.timestamp_micros()
        ),
        Kind::Time { nanos } => {
            let ns = |t: &NaiveTime| {
                i64::from(t.num_seconds_from_midnight()) * 1_000_000_000 + i64::from(t.nanosecond())
            };
            if nanos {
                build!(Time64NanosecondBuilder::with_capacity(n), Value::Time(t) => ns(t))
            } else {
                build!(Time64MicrosecondBuilder::with_capacity(n), Value::Time(t) => micros(ns(t)))
            }
        }
        Kind::Bytes => build!(BinaryBuilder::with_capacity(n, n * 16), Value::Bytes(b) => b),
    })
}

/// A rough size of a value as text, for `raw_bytes` (rotation and progress).
fn text_size(v: &Value) -> u64 {
    (match v {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Int(_) | Value::Float(_) => 10,
        Value::Decimal(d) => d.len(),
        Value::String(s) => s.len() + 2,
        Value::Date(_) => 12,
        Value::DateTime(_) | Value::DateTimeTz(_) => 28,
        Value::Time(_) => 10,
        Value::Bytes(b) => b.len() * 2 + 2,
        Value::Json(_) => 32,
    }) as u64
}

/// The buffer the Arrow writer writes row groups into; drained into the upload.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Streams batches of one table into one Parquet file.
pub struct ParquetWriter {
    tbl: Arc<str>,
    key: String,
    full_key: String,
    out: object_store::buffered::BufWriter,
    declared: BTreeMap<String, ColType>,
    sample: Vec<Batch>,
    sample_rows: usize,
    plan: Option<Plan>,
    writer: Option<ArrowWriter<Shared>>,
    buf: Shared,
    rows: u64,
    raw_bytes: u64,
    bytes: u64,
    crc: libdeflater::Crc,
    columns: ColumnTypes,
}

impl ParquetWriter {
    /// Starts a file at `key` (relative to `ds`); `declared` are the table's
    /// `columns:` types.
    pub fn create(
        ds: &Datastore,
        tbl: Arc<str>,
        key: String,
        declared: &BTreeMap<String, ColType>,
    ) -> ParquetWriter {
        ParquetWriter {
            out: ds.writer(&key),
            full_key: format!("{}/{key}", ds.location()),
            tbl,
            key,
            declared: declared.clone(),
            sample: Vec::new(),
            sample_rows: 0,
            plan: None,
            writer: None,
            buf: Shared::default(),
            rows: 0,
            raw_bytes: 0,
            bytes: 0,
            crc: libdeflater::Crc::new(),
            columns: ColumnTypes::default(),
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::data(&self.full_key, format!("parquet: {e}"))
    }

    /// Decides the schema from the sample and writes it.
    async fn start(&mut self) -> Result<()> {
        let plan = Plan::of(&self.sample, &self.declared);
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).map_err(|e| self.err(e))?,
            ))
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_created_by(format!("anchovies {}", env!("CARGO_PKG_VERSION")))
            .build();
        let w = ArrowWriter::try_new(self.buf.clone(), plan.schema.clone(), Some(props))
            .map_err(|e| self.err(e))?;
        self.writer = Some(w);
        self.plan = Some(plan);
        for b in std::mem::take(&mut self.sample) {
            self.append(&b).await?;
        }
        Ok(())
    }

    /// Encodes and writes one batch (off the async runtime), uploading finished row
    /// groups.
    async fn append(&mut self, batch: &Batch) -> Result<()> {
        let (Some(plan), Some(mut w)) = (&self.plan, self.writer.take()) else {
            return Err(self.err("the file is already finished"));
        };
        let rb = plan.encode(batch)?;
        let (w, r) = tokio::task::spawn_blocking(move || {
            let r = w.write(&rb);
            (w, r)
        })
        .await
        .map_err(|e| self.err(e))?;
        self.writer = Some(w);
        r.map_err(|e| self.err(e))?;
        self.upload_ready().await
    }

    async fn upload_ready(&mut self) -> Result<()> {
        let bytes = self.buf.take();
        if bytes.is_empty() {
            return Ok(());
        }
        self.bytes += bytes.len() as u64;
        self.crc.update(&bytes);
        self.out
            .write_all(&bytes)
            .await
            .map_err(|e| crate::data::upload_err("write", &self.full_key, e))
    }
}

#[async_trait]
impl FileWriter for ParquetWriter {
    fn fits(&self, batch: &Batch) -> bool {
        self.plan.as_ref().is_none_or(|p| p.fits(batch))
    }

    async fn write(&mut self, batch: &Batch) -> Result<()> {
        self.columns.add(batch);
        self.raw_bytes += batch
            .rows
            .iter()
            .flat_map(|r| r.iter())
            .map(text_size)
            .sum::<u64>();
        self.rows += batch.rows.len() as u64;
        if self.plan.is_some() {
            return self.append(batch).await;
        }
        self.sample.push(batch.clone());
        self.sample_rows += batch.rows.len();
        if self.sample_rows >= SAMPLE_ROWS {
            self.start().await?;
        }
        Ok(())
    }

    fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    async fn finish(mut self: Box<Self>) -> Result<FileEntry> {
        if self.plan.is_none() {
            self.start().await?;
        }
        let Some(w) = self.writer.take() else {
            return Err(self.err("the file is already finished"));
        };
        let r = tokio::task::spawn_blocking(move || w.close().map(|_| ()))
            .await
            .map_err(|e| self.err(e))?;
        r.map_err(|e| self.err(e))?;
        self.upload_ready().await?;
        crate::failpoint::hit("datafile.finish")?;
        self.out
            .shutdown()
            .await
            .map_err(|e| crate::data::upload_err("complete", &self.full_key, e))?;
        let this = *self;
        Ok(FileEntry {
            tbl: this.tbl.to_string(),
            key: this.key,
            rows: this.rows,
            bytes: this.bytes,
            raw_bytes: this.raw_bytes,
            columns: this.columns.into_vec(),
            crc32: Some(this.crc.sum()),
            format: DataFormat::Parquet,
            staged: None,
        })
    }

    async fn abort(mut self: Box<Self>) {
        self.writer = None;
        let _ = self.out.abort().await;
    }
}
