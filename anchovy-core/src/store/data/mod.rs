//! Data files: the format seam of the datastore.
//!
//! A downloader's rows land in data files of one [`DataFormat`], chosen by the
//! `data_buffer_cls` setting: `ndjson.gz` (the default, [`ndjson`]) or `parquet`
//! ([`parquet`]). Each file's format is recorded in its commit record's
//! [`FileEntry`], so readers never guess from a name and one anchovy may hold files of
//! both (after a change of the setting) and read them all. Writers stream into the
//! datastore and make a file visible only when it is complete ([`FileWriter::finish`]);
//! but being visible does not make it committed: only the commit record
//! ([`crate::commit`]) says which files exist. Readers ([`open_committed`]) verify a
//! file against its record (size, CRC-32, rows) before the caller sees its end.

pub mod ndjson;
pub mod parquet;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::datastore::Datastore;
use crate::error::{Error, Result};
use crate::row::Batch;
use crate::tbl::ColType;

pub use self::ndjson::{DataFileReader, DataFileWriter};

/// A finished data file, as listed in a commit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The table.
    pub tbl: String,
    /// The key relative to the anchovy's area (`data/<tbl>/<name>`).
    pub key: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size as stored.
    pub bytes: u64,
    /// Size of the rows before compression (NDJSON text; for Parquet, the values'
    /// text size, an estimate of the same).
    pub raw_bytes: u64,
    /// Column types seen in the file (inferred from the values), in column order.
    #[serde(default)]
    pub columns: Vec<(String, ColType)>,
    /// CRC-32 (the gzip polynomial) of the file's bytes as stored. Readers check it,
    /// with `rows` and `bytes`, before anything of the file is used. Absent in commit
    /// records written before it existed (then rows and bytes are still checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<u32>,
    /// The file's format; absent (records written before formats) means `ndjson.gz`.
    #[serde(default, skip_serializing_if = "DataFormat::is_default")]
    pub format: DataFormat,
    /// Format `original`: where the file was written before it was published under
    /// `key` (after its commit; see [`DataFormat::Original`]). Readers take this one
    /// while `key` does not exist yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<String>,
}

/// The format of a data file (the `data_buffer_cls` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DataFormat {
    /// Gzip NDJSON with per-row type annotations (the default).
    #[default]
    #[serde(rename = "ndjson.gz")]
    NdjsonGz,
    /// Apache Parquet, zstd, one schema per file with exact types.
    #[serde(rename = "parquet")]
    Parquet,
    /// Gzip NDJSON as the original tool writes it, for its uploader to read during a
    /// migration ([`crate::row::RowEncoder::original`]): named as it names files
    /// (`data/<table>/<YYYYmmddHHMMSS>.<3 hex>.json.gz`), and visible under that name
    /// only once committed. The file is written as `data/<table>/_staged.<name>`
    /// (which the original does not list) and renamed after its commit; a run killed
    /// in between is published by the next start of the downloader. Names sort in the
    /// order files are published, and a published file's time is its publication's
    /// ([`original_key`], [`publish`]).
    #[serde(rename = "original")]
    Original,
}

impl DataFormat {
    /// The canonical names, for messages.
    pub const NAMES: &'static [&'static str] = &["ndjson.gz", "parquet", "original"];

    /// Parses a `data_buffer_cls` value. The original tool's buffer classes
    /// (`core.io.StatisticsBuffer`, `DefaultDataBuffer`, `GzipJsonBuffer`,
    /// `TypedJsonBuffer`, with or without their module path) mean `ndjson.gz`.
    pub fn parse(name: &str) -> Option<DataFormat> {
        let n = name.trim();
        let last = n.rsplit('.').next().unwrap_or(n);
        match n.to_ascii_lowercase().as_str() {
            "ndjson.gz" | "ndjson" | "jsonl.gz" | "json.gz" => return Some(DataFormat::NdjsonGz),
            "parquet" => return Some(DataFormat::Parquet),
            "original" | "compat" => return Some(DataFormat::Original),
            _ => {}
        }
        match last {
            "StatisticsBuffer" | "DefaultDataBuffer" | "GzipJsonBuffer" | "TypedJsonBuffer"
            | "DatetimePathBuffer" | "NaivePathBuffer" => Some(DataFormat::NdjsonGz),
            _ => None,
        }
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            DataFormat::NdjsonGz => "ndjson.gz",
            DataFormat::Parquet => "parquet",
            DataFormat::Original => "original",
        }
    }

    fn is_default(&self) -> bool {
        *self == DataFormat::NdjsonGz
    }

    /// Starts a file at `key` (relative to `ds`) for table `tbl`; `columns` are the
    /// table's declared types (a hint for formats with a schema).
    pub fn create(
        self,
        ds: &Datastore,
        tbl: Arc<str>,
        key: String,
        columns: &BTreeMap<String, ColType>,
    ) -> Box<dyn FileWriter> {
        match self {
            DataFormat::NdjsonGz => Box::new(DataFileWriter::create(ds, tbl, key)),
            DataFormat::Original => Box::new(DataFileWriter::create_original(ds, tbl, key)),
            DataFormat::Parquet => Box::new(parquet::ParquetWriter::create(ds, tbl, key, columns)),
        }
    }
}

impl std::fmt::Display for DataFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Streams batches of one table into one data file.
#[async_trait]
pub trait FileWriter: Send {
    /// Whether `batch` can go into this file. A format with one schema per file says
    /// no to a batch with a new column or a value its column's type cannot hold
    /// exactly; the caller then finishes this file and starts another.
    fn fits(&self, _batch: &Batch) -> bool {
        true
    }

    /// Appends a batch.
    ///
    /// # Errors
    /// [`Error::Datastore`] when the upload fails, [`Error::Data`] when encoding does.
    async fn write(&mut self, batch: &Batch) -> Result<()>;

    /// Uncompressed bytes written so far (for `file_max_bytes` and progress).
    fn raw_bytes(&self) -> u64;

    /// Completes the file: after this it is readable (but not yet committed).
    ///
    /// # Errors
    /// [`Error::Datastore`] when the upload cannot be completed.
    async fn finish(self: Box<Self>) -> Result<FileEntry>;

    /// Abandons the file; nothing becomes visible.
    async fn abort(self: Box<Self>);
}

/// Streams a data file back as typed batches.
#[async_trait]
pub trait FileReader: Send {
    /// The next batch, or `None` at the end of the file (after the file was verified).
    ///
    /// # Errors
    /// [`Error::Data`] naming the file for corrupt data or a mismatch with the commit
    /// record.
    async fn next_batch(&mut self) -> Result<Option<Batch>>;
}

/// Opens a committed file in its recorded format and verifies it against its commit
/// record (`commit` is the record's sequence number, for messages). A file that does
/// not match fails the read before the caller sees its end.
///
/// # Errors
/// [`Error::Datastore`] when the file cannot be opened.
pub async fn open_committed(
    ds: &Datastore,
    entry: &FileEntry,
    commit: u64,
    batch_size: usize,
) -> Result<Box<dyn FileReader>> {
    Ok(match entry.format {
        DataFormat::NdjsonGz => {
            Box::new(DataFileReader::open_committed(ds, entry, commit, batch_size).await?)
        }
        DataFormat::Original => {
            // Not published yet (killed between its commit and the rename): the
            // staged file is the same bytes.
            let mut e = entry.clone();
            if let Some(staged) = &entry.staged
                && !ds.exists(&entry.key).await?
            {
                e.key = staged.clone();
            }
            Box::new(DataFileReader::open_committed(ds, &e, commit, batch_size).await?)
        }
        DataFormat::Parquet => {
            Box::new(parquet::ParquetReader::open_committed(ds, entry, commit, batch_size).await?)
        }
    })
}

/// The name prefix of an `original` file until its commit publishes it.
pub const STAGED: &str = "_staged.";

/// Where `publish_staged` remembers the last commit whose files it published.
const PUBLISHED: &str = "$original_published";

/// A new `original` file's key in `data/<tbl>/` (staged: `_staged.<name>`): named by
/// the UTC second and three hex digits, as the original tool names files, and after
/// every name the folder holds (published or staged, a killed run's too), so names
/// sort in the order files are made and published. The original's uploader depends on
/// that: it reads a folder in name order and keeps the modification time of the last
/// name as its position, so a file named before one it read but written after would be
/// read twice, and one published with an older time never. One process writes an
/// anchovy's files of this format (the run lease; `--workers` is refused with it), so
/// the name stays free until the file is written.
///
/// # Errors
/// [`Error::Datastore`] when the folder cannot be listed.
pub async fn original_key(ds: &Datastore, tbl: &str) -> Result<String> {
    use crate::datastore::layout;
    use crate::original::{file_name, file_seq, first_seq_of};
    let folder = format!("{}/{}/", layout::DATA, layout::segment(tbl));
    let now = chrono::Utc::now();
    let from = file_name(first_seq_of(now));
    // Names from this second on (staged ones sort after every digit).
    let after = format!("{folder}{}", &from[..14]);
    let newest = ds
        .list_after(folder.trim_end_matches('/'), Some(&after))
        .await?
        .into_iter()
        .filter_map(|e| {
            let name = e.key.rsplit('/').next()?.to_string();
            file_seq(name.strip_prefix(STAGED).unwrap_or(&name))
        })
        .max();
    let seq = match newest {
        Some(n) if n >= first_seq_of(now) => crate::original::next_seq(n),
        _ => first_seq_of(now),
    };
    Ok(layout::data_key(
        tbl,
        &format!("{STAGED}{}", file_name(seq)),
    ))
}

/// An `original` file as its commit records it: under its published name, with where
/// it was written (`staged`). Other files unchanged.
pub fn to_publish(mut f: FileEntry) -> FileEntry {
    if f.format == DataFormat::Original
        && let Some((dir, name)) = f.key.rsplit_once('/')
        && let Some(published) = name.strip_prefix(STAGED)
    {
        let key = format!("{dir}/{published}");
        f.staged = Some(std::mem::replace(&mut f.key, key));
    }
    f
}

/// Publishes the `original` files of committed records: renames each from where it was
/// written to its name (then the original tool's uploader lists it).
///
/// # Errors
/// [`Error::Datastore`] when a rename fails (the next start tries again).
pub async fn publish(ds: &Datastore, files: &[FileEntry]) -> Result<()> {
    for f in files {
        if let Some(staged) = &f.staged {
            ds.rename(staged, &f.key).await?;
            // Published now: its time is the publication's (a filesystem rename keeps
            // the write's; an object store's copy is new), at least 2 ms after the
            // previous one, so the original's reader, whose position is a file's time
            // plus 1 ms, never passes a file it has not read.
            if let Some(dir) = ds.local_dir() {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                let path = dir.join(&f.key);
                let touched = std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|h| h.set_modified(std::time::SystemTime::now()));
                if let Err(source) = touched {
                    return Err(Error::Io {
                        op: "set the modification time of",
                        path,
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}

/// At a downloader's start: publishes what a run killed between a commit and its
/// rename left staged, reading only the commits after the last start's.
///
/// # Errors
/// [`Error::Datastore`] or [`Error::Json`].
pub async fn publish_staged(ds: &Datastore) -> Result<()> {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Published {
        seq: u64,
    }
    let after = ds
        .get_json::<Published>(PUBLISHED)
        .await?
        .map_or(0, |p| p.seq);
    let recs = crate::commit::read_commits(ds, after).await?;
    let Some(last) = recs.last().map(|r| r.seq) else {
        return Ok(());
    };
    for r in &recs {
        for f in r.files.iter() {
            let Some(staged) = &f.staged else { continue };
            if ds.exists(&f.key).await? {
                continue;
            }
            if !ds.exists(staged).await? {
                // Neither name exists (deleted by hand): nothing to publish, and no
                // reason to stop this downloader's every start over it.
                tracing::warn!(
                    commit = r.seq,
                    file = %f.key,
                    "a committed data file of the original format is gone under both its names; the original's uploader cannot load it (this project's reports it when it reads the commit)"
                );
                continue;
            }
            publish(ds, std::slice::from_ref(f)).await?;
        }
    }
    ds.put_json(PUBLISHED, &Published { seq: last }).await
}

/// Reads a whole file into memory: for tests and small files only.
///
/// # Errors
/// As [`FileReader::next_batch`].
pub async fn read_all(mut r: Box<dyn FileReader>) -> Result<Vec<Batch>> {
    let mut out = Vec::new();
    while let Some(b) = r.next_batch().await? {
        out.push(b);
    }
    Ok(out)
}

/// The column types of a file, widened as values come (both formats record them).
#[derive(Debug, Default)]
pub(crate) struct ColumnTypes {
    columns: Vec<(String, ColType)>,
    index: std::collections::HashMap<String, usize>,
}

impl ColumnTypes {
    /// Widens by the values of `batch`.
    pub(crate) fn add(&mut self, batch: &Batch) {
        let mut seen: Vec<Option<ColType>> = vec![None; batch.schema.len()];
        for row in &batch.rows {
            for (t, v) in seen.iter_mut().zip(row) {
                if let Some(vt) = v.col_type() {
                    *t = Some(t.map_or(vt, |t| t.widen(vt)));
                }
            }
        }
        self.merge(&batch.schema, seen);
    }

    /// Widens by the types seen per column of `schema` (computed by the caller, e.g.
    /// in the same pass as encoding).
    pub(crate) fn merge(&mut self, schema: &crate::row::Schema, seen: Vec<Option<ColType>>) {
        for (name, t) in schema.names().iter().zip(seen) {
            if let Some(t) = t {
                match self.index.get(&**name) {
                    Some(&i) => self.columns[i].1 = self.columns[i].1.widen(t),
                    None => {
                        self.index.insert(name.to_string(), self.columns.len());
                        self.columns.push((name.to_string(), t));
                    }
                }
            }
        }
    }

    /// The types, in order of first appearance.
    pub(crate) fn into_vec(self) -> Vec<(String, ColType)> {
        self.columns
    }
}

/// A failed write (`op`: `write`, `complete`) of a data file being uploaded to `key`.
pub(crate) fn upload_err(op: &'static str, key: &str, e: std::io::Error) -> Error {
    Error::datastore(
        op,
        key,
        object_store::Error::Generic {
            store: "datastore",
            source: Box::new(e),
        },
    )
}

/// The error of a file that does not match its commit record.
pub(crate) fn mismatch(key: &str, commit: u64, what: String) -> Error {
    Error::data(
        key,
        format!(
            "the data file does not match commit record {commit}: {what}. It was cut or changed after it was committed, so none of it is used; restore it from a copy of the datastore, or re-download its rows (`anchovy checkpoints -D` on the downloader's checkpoints for that source file) and re-upload"
        ),
    )
}
