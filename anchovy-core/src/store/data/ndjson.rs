//! `ndjson.gz` data files: gzip NDJSON with per-row type annotations (`_types`).
//!
//! [`DataFileWriter`] encodes batches into a gzip stream and uploads it through the
//! datastore's streaming writer: memory stays bounded by the compressor buffer and one
//! upload part, whatever the file size. [`DataFileReader`] streams a file back as typed
//! batches, verifying it against its commit record.

use std::io::Write;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{ColumnTypes, DataFormat, FileEntry, FileReader, FileWriter};
use crate::datastore::Datastore;
use crate::error::{Error, Result};
use crate::row::{Batch, BatchBuilder, RowDecoder, RowEncoder};
use crate::tbl::ColType;

/// NDJSON bytes handed to the compressor at a time.
const CHUNK_BYTES: usize = 256 << 10;
/// libdeflate's level: 1 is its fastest and still beats zlib's level 1 on ratio.
const GZIP_LEVEL: i32 = 1;
/// Chunks that may wait for the compressor.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Streams batches of one table into one gzip NDJSON file.
///
/// Rows are encoded on the caller's task while a dedicated thread compresses the
/// previous chunks (gzip is most of the CPU a download spends), and compressed bytes are
/// uploaded as they come. Memory: at most four 256 KiB chunks waiting for the
/// compressor, plus one upload part.
pub struct DataFileWriter {
    tbl: Arc<str>,
    key: String,
    /// Where the file goes, for errors (`<datastore location>/<key>`).
    full_key: String,
    raw_tx: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    gz_rx: tokio::sync::mpsc::UnboundedReceiver<std::io::Result<Vec<u8>>>,
    compressor: Option<std::thread::JoinHandle<()>>,
    /// Emptied chunks coming back from the compressor, and compressed buffers going
    /// back to it once uploaded: the same few buffers serve the whole file.
    spare_chunks: std::sync::mpsc::Receiver<Vec<u8>>,
    spare_gz: std::sync::mpsc::Sender<Vec<u8>>,
    out: object_store::buffered::BufWriter,
    chunk: String,
    encoder: RowEncoder,
    rows: u64,
    raw_bytes: u64,
    bytes: u64,
    crc: libdeflater::Crc,
    columns: ColumnTypes,
    format: DataFormat,
}

impl DataFileWriter {
    /// Starts a file at `key` whose rows are written as the original tool writes them
    /// ([`RowEncoder::original`], the `original` data format).
    pub fn create_original(ds: &Datastore, tbl: Arc<str>, key: String) -> DataFileWriter {
        let mut w = DataFileWriter::create(ds, tbl, key);
        w.encoder = RowEncoder::original();
        w.format = DataFormat::Original;
        w
    }

    /// Starts a file at `key` (relative to `ds`).
    pub fn create(ds: &Datastore, tbl: Arc<str>, key: String) -> DataFileWriter {
        let (raw_tx, mut raw_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
        // Unbounded, but fed only as fast as `raw_tx` admits chunks, and drained after
        // every batch: the compressor never blocks on it, so the two cannot deadlock.
        let (gz_tx, gz_rx) = tokio::sync::mpsc::unbounded_channel::<std::io::Result<Vec<u8>>>();
        let (chunk_back, spare_chunks) = std::sync::mpsc::channel::<Vec<u8>>();
        let (spare_gz, gz_back) = std::sync::mpsc::channel::<Vec<u8>>();
        let compressor = std::thread::Builder::new()
            .name("anchovy-gzip".into())
            .spawn(move || {
                // Each chunk becomes one gzip member (RFC 1952 allows a file of several;
                // gzip, zcat, Python and every datastore reader here read them as one
                // stream). libdeflate compresses a whole buffer ~2x faster than zlib's
                // streaming level 1, and compresses as well or better.
                let mut enc = libdeflater::Compressor::new(
                    libdeflater::CompressionLvl::new(GZIP_LEVEL).unwrap_or_default(),
                );
                while let Some(mut chunk) = raw_rx.blocking_recv() {
                    let mut out = gz_back.try_recv().unwrap_or_default();
                    out.resize(enc.gzip_compress_bound(chunk.len()), 0);
                    let n = match enc.gzip_compress(&chunk, &mut out) {
                        Ok(n) => n,
                        Err(e) => {
                            let _ = gz_tx.send(Err(std::io::Error::other(format!("{e:?}"))));
                            return;
                        }
                    };
                    out.truncate(n);
                    chunk.clear();
                    let _ = chunk_back.send(chunk);
                    if gz_tx.send(Ok(out)).is_err() {
                        return;
                    }
                }
            })
            .ok();
        DataFileWriter {
            out: ds.writer(&key),
            full_key: format!("{}/{key}", ds.location()),
            tbl,
            key,
            raw_tx: Some(raw_tx),
            gz_rx,
            compressor,
            spare_chunks,
            spare_gz,
            chunk: String::with_capacity(CHUNK_BYTES + (64 << 10)),
            encoder: RowEncoder::default(),
            rows: 0,
            raw_bytes: 0,
            bytes: 0,
            crc: libdeflater::Crc::new(),
            columns: ColumnTypes::default(),
            format: DataFormat::NdjsonGz,
        }
    }

    /// Uncompressed bytes written so far.
    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// Appends a batch.
    ///
    /// # Errors
    /// [`Error::Datastore`] when the upload fails, [`Error::Data`] when compression does.
    pub async fn write(&mut self, batch: &Batch) -> Result<()> {
        // Column types seen in this batch, by position, in the same pass as encoding.
        let mut seen: Vec<Option<ColType>> = vec![None; batch.schema.len()];
        for row in &batch.rows {
            for (t, v) in seen.iter_mut().zip(row) {
                if let Some(vt) = v.col_type() {
                    *t = Some(t.map_or(vt, |t| t.widen(vt)));
                }
            }
            let before = self.chunk.len();
            self.encoder.encode(&batch.schema, row, &mut self.chunk);
            self.raw_bytes += (self.chunk.len() - before) as u64;
            if self.chunk.len() >= CHUNK_BYTES {
                self.send_chunk().await?;
            }
        }
        self.columns.merge(&batch.schema, seen);
        self.rows += batch.rows.len() as u64;
        self.upload_ready().await
    }

    async fn send_chunk(&mut self) -> Result<()> {
        let spare = match self.spare_chunks.try_recv() {
            // Emptied by the compressor, so still valid (empty) UTF-8.
            Ok(v) => String::from_utf8(v).unwrap_or_default(),
            Err(_) => String::with_capacity(CHUNK_BYTES + (64 << 10)),
        };
        let chunk = std::mem::replace(&mut self.chunk, spare).into_bytes();
        let tx = self
            .raw_tx
            .as_ref()
            .ok_or_else(|| Error::data(&self.key, "the file is already finished"))?;
        if tx.send(chunk).await.is_err() {
            // The compressor stopped: its error is waiting in the output channel.
            self.upload_ready().await?;
            return Err(Error::data(&self.key, "gzip: the compressor stopped"));
        }
        Ok(())
    }

    /// Uploads whatever the compressor has produced so far.
    async fn upload_ready(&mut self) -> Result<()> {
        while let Ok(r) = self.gz_rx.try_recv() {
            let mut buf = r.map_err(|e| Error::data(&self.key, format!("gzip: {e}")))?;
            self.upload(&buf).await?;
            buf.clear();
            let _ = self.spare_gz.send(buf);
        }
        Ok(())
    }

    async fn upload(&mut self, buf: &[u8]) -> Result<()> {
        self.bytes += buf.len() as u64;
        self.crc.update(buf);
        self.out
            .write_all(buf)
            .await
            .map_err(|e| super::upload_err("write", &self.full_key, e))
    }

    /// Completes the file: after this it is readable (but not yet committed).
    ///
    /// # Errors
    /// [`Error::Datastore`] when the upload cannot be completed.
    pub async fn finish(mut self) -> Result<FileEntry> {
        if !self.chunk.is_empty() {
            self.send_chunk().await?;
        }
        self.raw_tx = None; // the compressor finishes the gzip stream and stops
        while let Some(r) = self.gz_rx.recv().await {
            let buf = r.map_err(|e| Error::data(&self.key, format!("gzip: {e}")))?;
            self.upload(&buf).await?;
        }
        if let Some(h) = self.compressor.take() {
            let _ = h.join();
        }
        self.out
            .shutdown()
            .await
            .map_err(|e| super::upload_err("complete", &self.full_key, e))?;
        Ok(FileEntry {
            tbl: self.tbl.to_string(),
            key: self.key,
            rows: self.rows,
            bytes: self.bytes,
            raw_bytes: self.raw_bytes,
            columns: self.columns.into_vec(),
            crc32: Some(self.crc.sum()),
            format: self.format,
            staged: None,
        })
    }

    /// Abandons the file; nothing becomes visible.
    pub async fn abort(mut self) {
        self.raw_tx = None;
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
    decoder: RowDecoder,
    batch_size: usize,
    /// What the commit record says of the file, checked at its end.
    expect: Option<Expect>,
    bytes: u64,
    crc: libdeflater::Crc,
    rows: u64,
    /// Decompressed bytes so far.
    raw: u64,
}

/// A file's size, checksum and rows as its commit record lists them.
struct Expect {
    entry: FileEntry,
    commit: u64,
}

impl DataFileReader {
    /// Opens a committed file and verifies it against its commit record (`commit` is
    /// the record's sequence number, for messages): its byte size and CRC-32 when the
    /// stream ends, its row count when the last row is decoded. A file that does not
    /// match fails the read before the caller sees the end of it.
    ///
    /// # Errors
    /// [`Error::Datastore`] when the file cannot be opened.
    pub async fn open_committed(
        ds: &Datastore,
        entry: &FileEntry,
        commit: u64,
        batch_size: usize,
    ) -> Result<DataFileReader> {
        let mut r = DataFileReader::open(ds, &entry.tbl, &entry.key, batch_size).await?;
        r.expect = Some(Expect {
            entry: entry.clone(),
            commit,
        });
        Ok(r)
    }

    fn mismatch(&self, what: String) -> Error {
        let commit = self.expect.as_ref().map_or(0, |e| e.commit);
        super::mismatch(&self.key, commit, what)
    }

    /// Checks size and checksum once the stream has ended.
    fn check_stream(&self) -> Result<()> {
        let Some(e) = &self.expect else {
            return Ok(());
        };
        if self.bytes != e.entry.bytes {
            return Err(self.mismatch(format!(
                "{} bytes stored, the record says {}",
                self.bytes, e.entry.bytes
            )));
        }
        if let Some(want) = e.entry.crc32
            && want != self.crc.sum()
        {
            return Err(self.mismatch(format!(
                "CRC-32 {:08x}, the record says {want:08x}",
                self.crc.sum()
            )));
        }
        Ok(())
    }

    /// Checks the row count once every row is decoded.
    fn check_rows(&self) -> Result<()> {
        match &self.expect {
            Some(e) if e.entry.rows != self.rows => Err(self.mismatch(format!(
                "{} rows, the record says {}",
                self.rows, e.entry.rows
            ))),
            _ => Ok(()),
        }
    }

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
            decoder: RowDecoder::default(),
            batch_size: batch_size.max(1),
            expect: None,
            bytes: 0,
            crc: libdeflater::Crc::new(),
            rows: 0,
            raw: 0,
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
                    self.decoder
                        .decode(line, &mut self.builder, &|| format!("{key}:{n}"))?;
                    self.rows += 1;
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
                    let chunk = chunk?;
                    self.bytes += chunk.len() as u64;
                    self.crc.update(&chunk);
                    if let Err(e) = self.dec.write_all(&chunk) {
                        // A checksum mismatch says more than the gzip error it causes.
                        if self.expect.is_some() {
                            while let Some(rest) = self.stream.next().await {
                                let rest = rest?;
                                self.bytes += rest.len() as u64;
                                self.crc.update(&rest);
                            }
                            self.check_stream()?;
                        }
                        return Err(Error::data(&self.key, format!("corrupt gzip data: {e}")));
                    }
                }
                None => {
                    self.check_stream()?;
                    self.dec
                        .try_finish()
                        .map_err(|e| Error::data(&self.key, format!("truncated gzip data: {e}")))?;
                    self.eof = true;
                }
            }
            let out = self.dec.get_mut();
            self.raw += out.len() as u64;
            self.pending.extend_from_slice(out);
            out.clear();
        }
        if self.builder.is_empty() {
            self.check_rows()?;
            Ok(None)
        } else {
            Ok(Some(self.builder.take()))
        }
    }

    /// Reads the file to its end and describes it as a commit record would (rows,
    /// stored and decompressed size, CRC-32, column types): for a file no record lists
    /// (the original tool's, [`crate::original`]), so that it is verified when it is
    /// read again to be loaded, as every committed file is.
    ///
    /// # Errors
    /// As [`DataFileReader::next_batch`];
    /// [`Error::Datastore`] when the file cannot be opened.
    pub async fn survey(ds: &Datastore, tbl: &str, key: &str) -> Result<FileEntry> {
        let mut r = DataFileReader::open(ds, tbl, key, 4096).await?;
        let mut columns = super::ColumnTypes::default();
        while let Some(b) = r.next_batch().await? {
            columns.add(&b);
        }
        Ok(FileEntry {
            tbl: tbl.to_string(),
            key: r.key,
            rows: r.rows,
            bytes: r.bytes,
            raw_bytes: r.raw,
            columns: columns.into_vec(),
            crc32: Some(r.crc.sum()),
            format: DataFormat::NdjsonGz,
            staged: None,
        })
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

#[async_trait]
impl FileWriter for DataFileWriter {
    async fn write(&mut self, batch: &Batch) -> Result<()> {
        DataFileWriter::write(self, batch).await
    }

    fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    async fn finish(self: Box<Self>) -> Result<FileEntry> {
        DataFileWriter::finish(*self).await
    }

    async fn abort(self: Box<Self>) {
        DataFileWriter::abort(*self).await
    }
}

#[async_trait]
impl FileReader for DataFileReader {
    async fn next_batch(&mut self) -> Result<Option<Batch>> {
        DataFileReader::next_batch(self).await
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
