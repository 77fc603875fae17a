//! Input formats: the bytes of one source file -> typed batches.
//!
//! Every file-like downloader ([`crate::source`]) reads its files through one
//! [`InputFormat`], chosen per table by `format:` (default: the operator's own, `csv`
//! for the `*.CsvDownloader`s, `json` for `blob.JsonDownloader`; `parquet` for any). The formats are
//! listed once, in [`FORMATS`]: adding one is a module here plus one line there.
//!
//! The source hands a format the file's bytes already decompressed ([`decompressed`],
//! by the file name's `.gz`/`.zst`), and a [`Rejects`] collector: a format sends each
//! record it cannot take there, never panics, and names the file and line (or record)
//! in its errors.

pub mod csv;
pub mod json;
pub mod json_stream;
pub mod parquet;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use anchovy_core::reject::{RecordReader, Rejects};
use anchovy_core::{Batch, ColType, OptionGroup};

use crate::error::PluginError;

/// Reads one source file into batches.
pub trait InputFormat: Send + Sync {
    /// Reads `input` (one whole file, decompressed) into batches of `batch_size` rows
    /// for `table`, calling `emit` for each; `emit` returning false stops the read (the
    /// consumer went away). `label` names the file in errors and in `_file`. Returns
    /// the number of records read (rejected ones included).
    ///
    /// # Errors
    /// [`PluginError::Data`] naming `label` and the line or record; a record the
    /// format cannot take goes to `rejects` first, which fails only under
    /// `on_bad_record: fail` or past `max_rejects`.
    fn read(
        &self,
        input: Box<dyn Read + Send>,
        label: &str,
        table: &str,
        batch_size: usize,
        rejects: &mut Rejects,
        emit: &mut dyn FnMut(Batch) -> bool,
    ) -> Result<u64, PluginError>;

    /// The reader `anchovy rejects replay` reads this format's quarantined records
    /// with; `None` for a format that quarantines nothing.
    fn record_reader(self: Arc<Self>) -> Option<Arc<dyn RecordReader>>;
}

/// Implements [`InputFormat`] for a format whose inherent `read` has the trait's
/// signature and which reads its own quarantined records again (it implements
/// [`RecordReader`]).
macro_rules! input_format {
    ($t:ty) => {
        impl $crate::formats::InputFormat for $t {
            fn read(
                &self,
                input: Box<dyn std::io::Read + Send>,
                label: &str,
                table: &str,
                batch_size: usize,
                rejects: &mut anchovy_core::reject::Rejects,
                emit: &mut dyn FnMut(anchovy_core::Batch) -> bool,
            ) -> Result<u64, $crate::error::PluginError> {
                <$t>::read(self, input, label, table, batch_size, rejects, emit)
            }

            fn record_reader(
                self: std::sync::Arc<Self>,
            ) -> Option<std::sync::Arc<dyn anchovy_core::reject::RecordReader>> {
                Some(self)
            }
        }
    };
}
pub(crate) use input_format;

/// One registered input format.
pub struct FormatSpec {
    /// The `format:` value.
    pub name: &'static str,
    /// Its table options, declared with the options struct. Every file-like operator
    /// lists them ([`crate::source::OPTIONS`]; a test in lib.rs holds that), so the
    /// startup check accepts them and `anchovy plugins` shows them.
    pub options: OptionGroup,
    /// Builds the format of one table from its options (unknown keys refused) and its
    /// `columns:` types.
    pub build: BuildFormat,
}

/// Builds a table's format: `(table, the format's options, columns: types)`.
pub type BuildFormat = fn(
    &str,
    serde_json::Map<String, serde_json::Value>,
    &BTreeMap<String, ColType>,
) -> Result<Arc<dyn InputFormat>, PluginError>;

/// Every input format, one line each.
pub const FORMATS: &[FormatSpec] = &[csv::SPEC, json::SPEC, parquet::SPEC];

/// Builds format `name` for a table.
///
/// # Errors
/// [`PluginError::Option`] for an unknown format (listing the known ones) or a bad
/// option of the format.
pub fn build(
    name: &str,
    table: &str,
    options: serde_json::Map<String, serde_json::Value>,
    columns: &BTreeMap<String, ColType>,
) -> Result<Arc<dyn InputFormat>, PluginError> {
    let spec = FORMATS
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| PluginError::Option {
            key: format!("tbls.{table}.format"),
            message: format!(
                "`{name}` is not a known format; use one of {}",
                FORMATS
                    .iter()
                    .map(|f| f.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    (spec.build)(table, options, columns)
}

/// Deserializes a format's options strictly (unknown keys refused by the struct).
///
/// # Errors
/// [`PluginError::Option`] naming the table's bad or unknown key.
pub fn options<T: serde::de::DeserializeOwned>(
    table: &str,
    options: serde_json::Map<String, serde_json::Value>,
) -> Result<T, PluginError> {
    anchovy_core::options::parse(table, options).map_err(PluginError::from_option)
}

/// `input` decompressed by `label`'s extension (`.gz`, `.zst`), as it streams: a
/// compressed file never lands on disk.
///
/// # Errors
/// [`PluginError::Data`] when the zstd header cannot be read.
pub fn decompressed(
    input: Box<dyn Read + Send>,
    label: &str,
) -> Result<Box<dyn Read + Send>, PluginError> {
    let lower = label.to_ascii_lowercase();
    Ok(if lower.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    } else if lower.ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(input).map_err(|e| io_err(label, e))?)
    } else {
        input
    })
}

/// A read error naming the file.
pub(crate) fn io_err(label: &str, e: std::io::Error) -> PluginError {
    PluginError::Data {
        location: label.to_string(),
        message: format!("read failed: {e}"),
    }
}
