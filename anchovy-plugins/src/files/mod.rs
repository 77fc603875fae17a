//! `files.CsvDownloader`: CSV/TSV files on the local filesystem, read incrementally.
//!
//! Each table's `path:` is a glob (`*`, `?`, `**`, `[a-z]`). Files are read in path
//! order; after each file a checkpoint `<table>:<path>` = `{size, mtime_ns, rows}` is
//! emitted in-band, so it commits with that file's rows. A rerun skips every file whose
//! size and modification time match its checkpoint: no new files, nothing written. A
//! changed file is read again whole. A file that changes while it is being read fails
//! the table (nothing of it is committed) and is read on the next run.

mod walk;

use std::path::Path;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use anchovy_core::operator::OperatorKind;
use anchovy_core::{
    BoxError, Emitter, Operator, OperatorSpec, OptionDoc, Source, TaskCtx, async_trait,
};
use serde::{Deserialize, Serialize};

use crate::delimited::{CsvFormat, CsvOptions};
use crate::error::PluginError;

/// Batches that may wait between the blocking file reader and the pipeline.
const READ_AHEAD: usize = 4;

/// The registry entry.
pub const SPEC: OperatorSpec = OperatorSpec {
    name: "files.CsvDownloader",
    description: "Downloads CSV/TSV files from the local filesystem (glob per table), incrementally: a rerun reads only new or changed files.",
    kind: OperatorKind::Downloader,
    connections: &[],
    env_vars: &[],
    table_options: &[
        OptionDoc {
            key: "path",
            doc: "glob of the files to read, e.g. ./data/*.csv or /sales/**/*.tsv (required)",
        },
        OptionDoc {
            key: "delimiter",
            doc: "field delimiter: `,` (default), `;`, `|`, `\\t` or `/t` for tabs",
        },
        OptionDoc {
            key: "quote",
            doc: "quote character (default `\"`), `none` to turn quoting off",
        },
        OptionDoc {
            key: "header",
            doc: "first line is a header (default true)",
        },
        OptionDoc {
            key: "names",
            doc: "column names when header is false",
        },
        OptionDoc {
            key: "skip_lines",
            doc: "lines to skip before the header (default 0)",
        },
        OptionDoc {
            key: "encoding",
            doc: "utf-8 (default, BOM stripped), latin-1, windows-1252, ...",
        },
        OptionDoc {
            key: "empty_as_null",
            doc: "empty text fields become null (default false; typed columns always)",
        },
        OptionDoc {
            key: "provenance",
            doc: "add _file and _line columns (default false)",
        },
        OptionDoc {
            key: "rename",
            doc: "source column -> name to use, e.g. {_types: types}: for reserved names (_types; _file/_line with provenance)",
        },
        OptionDoc {
            key: "columns",
            doc: "column -> type, applied on read (str, int, float, decimal, bool, date, datetime, time, bytes, object)",
        },
        OptionDoc {
            key: "autodiscover",
            doc: "accepted for the original's config files; types come from `columns`",
        },
    ],
    build: |_| Ok(Arc::new(CsvDownloader)),
};

/// The operator.
pub struct CsvDownloader;

impl Operator for CsvDownloader {
    fn sources(&self) -> Vec<Arc<dyn Source>> {
        vec![Arc::new(FileSource)]
    }

    fn record_reader(
        &self,
        tbl: &anchovy_core::Tbl,
    ) -> Result<Option<Arc<dyn anchovy_core::reject::RecordReader>>, BoxError> {
        let opts: CsvOptions = tbl.plugin_options()?;
        Ok(Some(Arc::new(CsvFormat::new(&opts, &tbl.columns)?)))
    }
}

/// What a file's checkpoint remembers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileState {
    /// Size in bytes when read.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: u128,
    /// Rows read from it.
    #[serde(default)]
    pub rows: u64,
}

fn stat(path: &Path) -> Result<FileState, PluginError> {
    let m = std::fs::metadata(path).map_err(|source| PluginError::Io {
        op: "stat",
        path: path.display().to_string(),
        source,
    })?;
    let mtime_ns = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(FileState {
        size: m.len(),
        mtime_ns,
        rows: 0,
    })
}

/// The checkpoint key of one file of one table.
pub fn checkpoint_key(table: &str, path: &Path) -> String {
    format!("{table}:{}", walk::path_text(path))
}

struct FileSource;

#[async_trait]
impl Source for FileSource {
    async fn run(&self, ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError> {
        let tbl = ctx.tbl();
        let opts: CsvOptions = tbl.plugin_options()?;
        let format = Arc::new(CsvFormat::new(&opts, &tbl.columns)?);
        let files = walk::list(&opts.path)?;
        if files.is_empty() {
            tracing::warn!(table = %tbl.name, path = %opts.path, "no file matches the path glob");
        }
        let batch_size = ctx.session.settings.batch_size;
        let (mut read, mut skipped) = (0u64, 0u64);
        for path in files {
            let key = checkpoint_key(&tbl.name, &path);
            let before = stat(&path)?;
            let seen: Option<FileState> = ctx
                .checkpoint(&key)
                .and_then(|v| serde_json::from_value(v).ok());
            if seen
                .as_ref()
                .is_some_and(|s| s.size == before.size && s.mtime_ns == before.mtime_ns)
            {
                skipped += 1;
                continue;
            }
            if ctx.session.stop_for_budget(&tbl.name, read) {
                break;
            }
            let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
            let (fmt, p, table) = (format.clone(), path.clone(), tbl.name.clone());
            let mut rejects = ctx.rejects()?;
            let reader = tokio::task::spawn_blocking(move || -> Result<u64, PluginError> {
                let file = std::fs::File::open(&p).map_err(|source| PluginError::Io {
                    op: "open",
                    path: p.display().to_string(),
                    source,
                })?;
                let label = walk::path_text(&p);
                fmt.read(
                    Box::new(file),
                    &label,
                    &table,
                    batch_size,
                    &mut rejects,
                    &mut |b| tx.blocking_send(b).is_ok(),
                )
            });
            while let Some(batch) = rx.recv().await {
                out.send_batch(batch).await?;
            }
            let rows = reader.await.map_err(|e| PluginError::Data {
                location: path.display().to_string(),
                message: format!("reader thread failed: {e}"),
            })??;
            let after = stat(&path)?;
            if after.size != before.size || after.mtime_ns != before.mtime_ns {
                return Err(PluginError::Data {
                    location: path.display().to_string(),
                    message: "the file changed while it was being read; nothing of it is committed, it is read again on the next run".into(),
                }
                .into());
            }
            out.checkpoint(&key, FileState { rows, ..before }).await?;
            ctx.session.budget.spend(rows, before.size);
            ctx.session.progress(&tbl.name, 0, 0, true);
            read += 1;
            ctx.log_add("rows_read", rows);
        }
        ctx.log("files_read", read);
        ctx.log("files_skipped", skipped);
        Ok(())
    }
}
