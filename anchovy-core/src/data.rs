//! Data files: gzip NDJSON, written in a stream and made visible only when complete.
//!
//! [`DataFileWriter`] encodes batches into a gzip stream and uploads it through the
//! datastore's streaming writer: memory stays bounded by the compressor buffer and one
//! upload part, whatever the file size. A file is visible to readers only after
//! [`DataFileWriter::finish`]; but being visible does not make it committed: only the
//! commit record ([`crate::commit`]) says which files exist.
//! [`DataFileReader`] streams a file back as typed batches.

use std::io::Write;
use std::sync::Arc;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::datastore::Datastore;
use crate::error::{Error, Result};
use crate::row::{Batch, BatchBuilder, decode_row, encode_row_into};
use crate::tbl::ColType;

/// Compressed bytes buffered before they are handed to the uploader.
const FLUSH_BYTES: usize = 1 << 20;

/// A finished data file, as listed in a commit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The table.
    pub tbl: String,
    /// The key relative to the anchovy's area (`data/<tbl>/<name>`).
    pub key: String,
    /// Rows in the file.
    pub rows: u64,
    /// Compressed size.
    pub bytes: u64,
    /// Uncompressed NDJSON size.
    pub raw_bytes: u64,
    /// Column types seen in the file (inferred from the values), in column order.
    #[serde(default)]
    pub columns: Vec<(String, ColType)>,
}

/// Streams batches of one table into one gzip NDJSON file.
pub struct DataFileWriter {
    tbl: Arc<str>,
    key: String,
    enc: flate2::write::GzEncoder<Vec<u8>>,
    out: object_store::buffered::BufWriter,
    scratch: String,
    rows: u64,
    raw_bytes: u64,
    bytes: u64,
    columns: Vec<(String, ColType)>,
}

impl DataFileWriter {
    /// Starts a file at `key` (relative to `ds`).
    pub fn create(ds: &Datastore, tbl: Arc<str>, key: String) -> DataFileWriter {
        DataFileWriter {
            out: ds.writer(&key),
            tbl,
            key,
            enc: flate2::write::GzEncoder::new(
                Vec::with_capacity(FLUSH_BYTES + (64 << 10)),
                flate2::Compression::fast(),
            ),
            scratch: String::with_capacity(64 << 10),
            rows: 0,
            raw_bytes: 0,
            bytes: 0,
            columns: Vec::new(),
        }
    }

    /// Uncompressed bytes written so far.
    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// Appends a batch.
    ///
    /// # Errors
    /// [`Error::Datastore`] when the upload fails.
    pub async fn write(&mut self, batch: &Batch) -> Result<()> {
        for (i, name) in batch.schema.names().iter().enumerate() {
            let seen = batch
                .rows
                .iter()
                .filter_map(|r| r.get(i)?.col_type())
                .reduce(ColType::widen);
            if let Some(t) = seen {
                match self.columns.iter_mut().find(|(c, _)| **c == **name) {
                    Some((_, e)) => *e = e.widen(t),
                    None => self.columns.push((name.to_string(), t)),
                }
            }
        }
        for row in &batch.rows {
            self.scratch.clear();
            encode_row_into(&batch.schema, row, &mut self.scratch);
            self.raw_bytes += self.scratch.len() as u64;
            self.enc
                .write_all(self.scratch.as_bytes())
                .map_err(|e| Error::data(&self.key, format!("gzip: {e}")))?;
        }
        self.rows += batch.rows.len() as u64;
        if self.enc.get_ref().len() >= FLUSH_BYTES {
            self.drain().await?;
        }
        Ok(())
    }

    async fn drain(&mut self) -> Result<()> {
        let buf = std::mem::take(self.enc.get_mut());
        self.bytes += buf.len() as u64;
        self.out.write_all(&buf).await.map_err(|e| {
            Error::datastore(
                "write",
                &self.key,
                object_store::Error::Generic {
                    store: "datastore",
                    source: Box::new(e),
                },
            )
        })?;
        *self.enc.get_mut() = {
            let mut b = buf;
            b.clear();
            b
        };
        Ok(())
    }

    /// Completes the file: after this it is readable (but not yet committed).
    ///
    /// # Errors
    /// [`Error::Datastore`] when the upload cannot be completed.
    pub async fn finish(mut self) -> Result<FileEntry> {
        self.enc
            .try_finish()
            .map_err(|e| Error::data(&self.key, format!("gzip: {e}")))?;
        self.drain().await?;
        self.out.shutdown().await.map_err(|e| {
            Error::datastore(
                "complete",
                &self.key,
                object_store::Error::Generic {
                    store: "datastore",
                    source: Box::new(e),
                },
            )
        })?;
        Ok(FileEntry {
            tbl: self.tbl.to_string(),
            key: self.key,
            rows: self.rows,
            bytes: self.bytes,
            raw_bytes: self.raw_bytes,
            columns: self.columns,
        })
    }

    /// Abandons the file; nothing becomes visible.
    pub async fn abort(mut self) {
        let _ = self.out.abort().await;
    }
}

/// Streams a gzip NDJSON data file back as typed batches.
pub struct DataFileReader {
    key: String,
    stream: futures::stream::BoxStream<'static, Result<bytes::Bytes>>,
    dec: flate2::write::MultiGzDecoder<Vec<u8>>,
    pending: Vec<u8>,
    pos: usize,
    line: u64,
    eof: bool,
    builder: BatchBuilder,
    batch_size: usize,
}

impl DataFileReader {
    /// Opens `key` in `ds` for table `tbl`.
    ///
    /// # Errors
    /// [`Error::Datastore`] when the file cannot be opened.
    pub async fn open(
        ds: &Datastore,
        tbl: &str,
        key: &str,
        batch_size: usize,
    ) -> Result<DataFileReader> {
        Ok(DataFileReader {
            key: key.to_string(),
            stream: ds.stream(key).await?,
            dec: flate2::write::MultiGzDecoder::new(Vec::new()),
            pending: Vec::new(),
            pos: 0,
            line: 0,
            eof: false,
            builder: BatchBuilder::new(tbl.to_string()),
            batch_size: batch_size.max(1),
        })
    }

    /// The next batch, or `None` at the end of the file.
    ///
    /// # Errors
    /// [`Error::Data`] naming `key:line` for a bad line or a corrupt gzip stream.
    pub async fn next_batch(&mut self) -> Result<Option<Batch>> {
        while self.builder.len() < self.batch_size {
            if let Some(nl) = self.pending[self.pos..].iter().position(|b| *b == b'\n') {
                let end = self.pos + nl;
                self.line += 1;
                let line = std::str::from_utf8(&self.pending[self.pos..end]).map_err(|e| {
                    Error::data(
                        format!("{}:{}", self.key, self.line),
                        format!("invalid UTF-8: {e}"),
                    )
                })?;
                if !line.trim().is_empty() {
                    let (key, n) = (&self.key, self.line);
                    decode_row(line, &mut self.builder, &|| format!("{key}:{n}"))?;
                }
                self.pos = end + 1;
                continue;
            }
            if self.eof {
                if self.pos < self.pending.len() {
                    // A last line without a newline.
                    self.pending.push(b'\n');
                    continue;
                }
                break;
            }
            if self.pos > 0 {
                self.pending.drain(..self.pos);
                self.pos = 0;
            }
            match self.stream.next().await {
                Some(chunk) => {
                    self.dec
                        .write_all(&chunk?)
                        .map_err(|e| Error::data(&self.key, format!("corrupt gzip data: {e}")))?;
                }
                None => {
                    self.dec
                        .try_finish()
                        .map_err(|e| Error::data(&self.key, format!("truncated gzip data: {e}")))?;
                    self.eof = true;
                }
            }
            let out = self.dec.get_mut();
            self.pending.extend_from_slice(out);
            out.clear();
        }
        if self.builder.is_empty() {
            Ok(None)
        } else {
            Ok(Some(self.builder.take()))
        }
    }

    /// Reads the whole file into memory: for tests and small files only.
    ///
    /// # Errors
    /// As [`DataFileReader::next_batch`].
    pub async fn read_all(mut self) -> Result<Vec<Batch>> {
        let mut out = Vec::new();
        while let Some(b) = self.next_batch().await? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::{Schema, Value};

    #[tokio::test]
    async fn write_read_many_batches_in_small_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_str().unwrap()).unwrap();
        let mut w = DataFileWriter::create(&ds, "t".into(), "data/t/f.ndjson.gz".into());
        let schema = Arc::new(Schema::new(["id", "s"]));
        for b in 0..30 {
            let rows = (0..1000)
                .map(|i| {
                    vec![
                        Value::Int(b * 1000 + i),
                        Value::String(format!("row {i}\nline")),
                    ]
                })
                .collect();
            w.write(&Batch {
                table: "t".into(),
                schema: schema.clone(),
                rows,
            })
            .await
            .unwrap();
        }
        assert!(
            ds.get("data/t/f.ndjson.gz").await.unwrap().is_none(),
            "not visible before finish"
        );
        let entry = w.finish().await.unwrap();
        assert_eq!(entry.rows, 30_000);
        assert_eq!(
            entry.columns,
            vec![
                ("id".to_string(), ColType::Int),
                ("s".to_string(), ColType::Str)
            ]
        );
        let mut r = DataFileReader::open(&ds, "t", &entry.key, 777)
            .await
            .unwrap();
        let mut n = 0i64;
        while let Some(b) = r.next_batch().await.unwrap() {
            for row in &b.rows {
                assert_eq!(row[0], Value::Int(n));
                n += 1;
            }
        }
        assert_eq!(n, 30_000);
    }
}
