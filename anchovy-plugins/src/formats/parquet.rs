//! Parquet source files to typed batches (`format: parquet`).
//!
//! Parquet keeps its footer at the end of the file, so the file is first copied to a
//! temporary file (disk, not memory), then decoded a row group's batch at a time by
//! the same reader as the datastore's Parquet data files
//! ([`anchovy_core::data::parquet::ParquetRows`]): every Parquet type a warehouse or
//! pandas writes maps to a typed value (nested lists, structs and maps become JSON;
//! timestamps with a time zone become instants in UTC). Snappy, gzip, zstd, lz4 and
//! brotli pages are read. `columns:` types convert text columns (`"2024-01-02"` to a
//! date); a value that does not convert rejects its row under the table's
//! `on_bad_record` (quarantined rows replay as rows). `provenance: true` adds `_file`
//! and `_line` (the row's position in the file, 1-based).

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use anchovy_core::data::parquet::ParquetRows;
use anchovy_core::reject::{ROW_FORMAT, Reject, Rejects};
use anchovy_core::{Batch, ColType, Schema, Value};

use super::csv::convert;
use crate::error::PluginError;

anchovy_core::table_options! {
    /// The Parquet options of a table.
    pub struct ParquetOptions {
        /// add `_file` and `_line` (row position) columns (default false)
        #[serde(default, deserialize_with = "anchovy_core::options::de::flag")]
        pub provenance: bool,
    }
}

/// How one table's Parquet files become rows.
#[derive(Debug, Clone)]
pub struct ParquetFormat {
    provenance: bool,
    columns: BTreeMap<String, ColType>,
}

/// The registry entry (`format: parquet`).
pub const SPEC: super::FormatSpec = super::FormatSpec {
    name: "parquet",
    options: anchovy_core::OptionGroup {
        title: "format parquet",
        options: <ParquetOptions as anchovy_core::TableOptions>::DOCS,
    },
    build: |table, options, columns| {
        let o: ParquetOptions = super::options(table, options)?;
        Ok(Arc::new(ParquetFormat {
            provenance: o.provenance,
            columns: columns.clone(),
        }))
    },
};

fn core_err(e: anchovy_core::Error) -> PluginError {
    PluginError::Core(e)
}

impl super::InputFormat for ParquetFormat {
    fn read(
        &self,
        mut input: Box<dyn Read + Send>,
        label: &str,
        table: &str,
        batch_size: usize,
        rejects: &mut Rejects,
        emit: &mut dyn FnMut(Batch) -> bool,
    ) -> Result<u64, PluginError> {
        let io = |e: std::io::Error| super::io_err(label, e);
        let mut tmp = tempfile::tempfile().map_err(io)?;
        std::io::copy(&mut input, &mut tmp).map_err(io)?;
        let mut rows = ParquetRows::open(tmp, table, label, batch_size).map_err(core_err)?;
        let mut count = 0u64;
        while let Some(mut b) = rows.next_batch().map_err(core_err)? {
            let first = count + 1;
            count += b.rows.len() as u64;
            if self.provenance {
                let mut names: Vec<String> =
                    b.schema.names().iter().map(|n| n.to_string()).collect();
                names.extend(["_file".to_string(), "_line".to_string()]);
                let file = Value::String(label.to_string());
                for (i, row) in b.rows.iter_mut().enumerate() {
                    row.resize(names.len() - 2, Value::Null);
                    row.push(file.clone());
                    row.push(Value::Int(first as i64 + i as i64));
                }
                b.schema = Arc::new(Schema::new(names));
            }
            self.convert(&mut b, first, label, rejects)?;
            if let Some(r) = rejects.take_batch()
                && !emit(r)
            {
                return Ok(count);
            }
            if !b.rows.is_empty() && !emit(b) {
                return Ok(count);
            }
        }
        Ok(count)
    }

    fn record_reader(self: Arc<Self>) -> Option<Arc<dyn anchovy_core::reject::RecordReader>> {
        // Rejected rows are quarantined as rows and replay without a reader.
        None
    }
}

impl ParquetFormat {
    /// Converts text values of typed columns; a row with a value that does not convert
    /// is taken out and rejected.
    fn convert(
        &self,
        b: &mut Batch,
        first: u64,
        label: &str,
        rejects: &mut Rejects,
    ) -> Result<(), PluginError> {
        let typed: Vec<(usize, ColType)> = b
            .schema
            .names()
            .iter()
            .enumerate()
            .filter_map(|(i, n)| self.columns.get(&**n).map(|t| (i, *t)))
            .filter(|(_, t)| *t != ColType::Str)
            .collect();
        if typed.is_empty() {
            return Ok(());
        }
        let schema = b.schema.clone();
        let mut keep = Vec::with_capacity(b.rows.len());
        for (n, mut row) in std::mem::take(&mut b.rows).into_iter().enumerate() {
            let mut bad = None;
            for &(i, t) in &typed {
                if let Some(Value::String(s)) = row.get(i) {
                    match convert(s, Some(t), false) {
                        Some(v) => row[i] = v,
                        None => {
                            bad = Some(format!(
                                "column `{}`: `{s}` is not a {t}",
                                schema.names()[i]
                            ));
                            break;
                        }
                    }
                }
            }
            match bad {
                None => keep.push(row),
                Some(reason) => {
                    let mut raw = String::new();
                    anchovy_core::row::encode_row_into(&schema, &row, &mut raw);
                    rejects
                        .reject(Reject {
                            source: label,
                            line: first + n as u64,
                            reason,
                            raw: raw.trim_end().to_string(),
                            header: None,
                            format: ROW_FORMAT,
                        })
                        .map_err(|(location, message)| PluginError::Data { location, message })?;
                }
            }
        }
        b.rows = keep;
        Ok(())
    }
}
