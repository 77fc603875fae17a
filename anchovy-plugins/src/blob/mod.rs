//! `blob.CsvDownloader` and `blob.JsonDownloader`: files in object stores (S3, Azure
//! Blob, GCS), read incrementally.
//!
//! - **Tables**: `path:` is an object URL whose last part may be a glob:
//!   `az://chat/sessions/*.json`, `s3://bucket/exports/**/*.csv.gz`,
//!   `https://<account>.blob.core.windows.net/logs/2024-*/*.ndjson`. `*` and `?` stay
//!   within one `/` level, `**` crosses levels, `[a-z]` classes work. Every option of
//!   `files.CsvDownloader` applies to `blob.CsvDownloader`; `blob.JsonDownloader` reads
//!   NDJSON, JSON arrays and JSON documents ([`crate::json`]). `.gz`/`.zst` objects are
//!   decompressed as they stream.
//! - **Credentials**: the providers' environment variables, or `connection: <id>` with
//!   `ACHVY_CNXN__<ID>__<KEY>` (see [`anchovy_core::datastore::url`]).
//! - **Incremental** per object: a checkpoint `<table>:<url>` = `{size, etag,
//!   last_modified, rows}`, committed with the object's rows. A rerun reads only new
//!   objects and objects whose etag changed. An object is read at the version that was
//!   listed (`If-Match`): one replaced meanwhile is skipped this run and read on the next.
//! - **Streaming**: the object's bytes stream into the blocking parser, batches go out
//!   through a bounded channel; memory stays flat whatever the object size.

use std::sync::Arc;

use anchovy_core::datastore::url::{self, Opened};
use anchovy_core::operator::OperatorKind;
use anchovy_core::{
    BoxError, Emitter, Operator, OperatorSpec, OptionDoc, Source, TaskCtx, async_trait,
};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, ObjectMeta, ObjectStore};
use serde::{Deserialize, Serialize};

use crate::delimited::{CsvFormat, CsvOptions};
use crate::error::PluginError;
use crate::json::{JsonFormat, JsonOptions};

/// Batches that may wait between the blocking parser and the pipeline.
const READ_AHEAD: usize = 4;

const PATH_DOC: OptionDoc = OptionDoc {
    key: "path",
    doc: "object URL with a glob, e.g. az://container/logs/*.json or s3://bucket/in/**/*.csv (required)",
};
const CONNECTION_DOC: OptionDoc = OptionDoc {
    key: "connection",
    doc: "connection id with the store's credentials (default: the provider's env vars)",
};

/// The variables both blob downloaders read.
const ENV_VARS: &[OptionDoc] = &[
    OptionDoc {
        key: "AWS_*, AZURE_STORAGE_*, GOOGLE_*",
        doc: "the providers' credentials and endpoints, as object_store reads them",
    },
    OptionDoc {
        key: "ACHVY_CNXN__<ID>__<KEY>",
        doc: "credentials of `connection: <id>`: the provider key without its prefix (ACCESS_KEY_ID, ACCOUNT_KEY, ...)",
    },
];

/// `blob.CsvDownloader`.
pub const CSV_SPEC: OperatorSpec = OperatorSpec {
    name: "blob.CsvDownloader",
    description: "Downloads CSV/TSV objects from S3, Azure Blob or GCS (URL glob per table), incrementally by etag.",
    kind: OperatorKind::Downloader,
    connections: &[],
    env_vars: ENV_VARS,
    table_options: &[
        PATH_DOC,
        CONNECTION_DOC,
        OptionDoc {
            key: "delimiter, quote, header, names, skip_lines, encoding, empty_as_null, provenance, rename, columns, autodiscover",
            doc: "as files.CsvDownloader",
        },
    ],
    build: |_| Ok(Arc::new(BlobDownloader { json: false })),
};

/// `blob.JsonDownloader`.
pub const JSON_SPEC: OperatorSpec = OperatorSpec {
    name: "blob.JsonDownloader",
    description: "Downloads JSON objects (NDJSON, arrays, one document per file) from S3, Azure Blob or GCS, incrementally by etag.",
    kind: OperatorKind::Downloader,
    connections: &[],
    env_vars: ENV_VARS,
    table_options: &[
        PATH_DOC,
        CONNECTION_DOC,
        OptionDoc {
            key: "records",
            doc: "dotted path of the array of records inside each document; the document's top-level scalars are copied into each record",
        },
        OptionDoc {
            key: "provenance",
            doc: "add _file and _line (line, or record position) columns (default false)",
        },
        OptionDoc {
            key: "columns",
            doc: "column -> type; text values of typed columns are converted on read",
        },
    ],
    build: |_| Ok(Arc::new(BlobDownloader { json: true })),
};

/// The operator (CSV or JSON).
pub struct BlobDownloader {
    json: bool,
}

impl Operator for BlobDownloader {
    fn sources(&self) -> Vec<Arc<dyn Source>> {
        vec![Arc::new(BlobSource { json: self.json })]
    }

    fn record_reader(
        &self,
        tbl: &anchovy_core::Tbl,
    ) -> Result<Option<Arc<dyn anchovy_core::reject::RecordReader>>, BoxError> {
        Ok(Some(match table_format(tbl, self.json)?.2 {
            Format::Csv(f) => Arc::new(f),
            Format::Json(f) => Arc::new(f),
        }))
    }
}

/// A table's object URL glob, connection and format.
fn table_format(
    tbl: &anchovy_core::Tbl,
    json: bool,
) -> Result<(String, Option<String>, Format), PluginError> {
    Ok(if json {
        let o: JsonOptions = tbl.plugin_options()?;
        let f = Format::Json(JsonFormat::new(&o, &tbl.columns));
        (o.path, o.connection, f)
    } else {
        let raw: RawCsvOptions = tbl.plugin_options()?;
        let o: CsvOptions =
            serde_json::from_value(serde_json::Value::Object(raw.csv)).map_err(|e| {
                PluginError::Option {
                    key: format!("tbls.{}", tbl.name),
                    message: e.to_string(),
                }
            })?;
        let f = Format::Csv(CsvFormat::new(&o, &tbl.columns)?);
        (o.path, raw.connection, f)
    })
}

/// What an object's checkpoint remembers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectState {
    /// Size in bytes when read.
    pub size: u64,
    /// The entity tag read.
    pub etag: Option<String>,
    /// Last modified (RFC 3339).
    pub last_modified: String,
    /// Records read from it.
    #[serde(default)]
    pub rows: u64,
}

#[derive(Clone)]
enum Format {
    Csv(CsvFormat),
    Json(JsonFormat),
}

impl Format {
    fn read(
        &self,
        input: Box<dyn std::io::Read + Send>,
        label: &str,
        table: &str,
        batch_size: usize,
        rejects: &mut anchovy_core::reject::Rejects,
        emit: &mut dyn FnMut(anchovy_core::Batch) -> bool,
    ) -> Result<u64, PluginError> {
        match self {
            Format::Csv(f) => f.read(input, label, table, batch_size, rejects, emit),
            Format::Json(f) => f.read(input, label, table, batch_size, rejects, emit),
        }
    }
}

/// The CSV table options: `connection`, then the shared CSV options (checked strictly).
#[derive(Debug, Deserialize)]
struct RawCsvOptions {
    #[serde(default)]
    connection: Option<String>,
    #[serde(flatten)]
    csv: serde_json::Map<String, serde_json::Value>,
}

/// A table's `path:` resolved: the store, the prefix to list and the glob to match.
pub struct ObjectGlob {
    opened: Opened,
    /// The printable URL of the listed prefix (labels are this + the rest of the key).
    base: String,
    pattern: glob::Pattern,
}

const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl ObjectGlob {
    /// Splits `path` into the store URL before the first glob character and the glob.
    ///
    /// # Errors
    /// [`PluginError::Option`] for a path that is not an object URL or a bad glob;
    /// [`PluginError::Core`] when the store cannot be opened.
    pub fn parse(
        path: &str,
        conn: Option<&anchovy_core::Connection>,
    ) -> Result<ObjectGlob, PluginError> {
        let bad = |m: String| PluginError::Option {
            key: "path".into(),
            message: m,
        };
        let Some((_, after_scheme)) = path.split_once("://") else {
            return Err(bad(format!(
                "`{path}` is not an object URL; use az://container/prefix/*.json, s3://bucket/prefix/*.csv or gs://bucket/prefix/*"
            )));
        };
        let start = path.len() - after_scheme.len();
        let glob_at = path[start..]
            .find(['*', '?', '['])
            .map_or(path.len(), |i| start + i);
        let cut = path[..glob_at]
            .rfind('/')
            .filter(|i| *i >= start)
            .ok_or_else(|| bad(format!("`{path}` names no bucket or container")))?;
        let (base, rest) = (&path[..cut], &path[cut + 1..]);
        let opened = url::open(base, conn)?;
        let full = if opened.prefix.as_ref().is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", opened.prefix)
        };
        let pattern = glob::Pattern::new(&full)
            .map_err(|e| bad(format!("`{path}` is not a valid glob: {e}")))?;
        Ok(ObjectGlob {
            base: url::printable(base),
            opened,
            pattern,
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.opened.store
    }

    /// The URL of an object, for labels, `_file` and checkpoint keys.
    pub fn label(&self, location: &Path) -> String {
        let prefix = self.opened.prefix.as_ref();
        let rel = location
            .as_ref()
            .strip_prefix(prefix)
            .unwrap_or(location.as_ref())
            .trim_start_matches('/');
        format!("{}/{rel}", self.base.trim_end_matches('/'))
    }

    /// The matching objects, sorted by key.
    ///
    /// # Errors
    /// [`PluginError::Core`] naming the URL when listing fails.
    pub async fn list(&self) -> Result<Vec<ObjectMeta>, PluginError> {
        let prefix = (!self.opened.prefix.as_ref().is_empty()).then_some(&self.opened.prefix);
        let mut stream = self.opened.store.list(prefix);
        let mut out = Vec::new();
        while let Some(m) = stream.next().await {
            let m = m.map_err(|e| anchovy_core::Error::datastore("list", self.base.clone(), e))?;
            if self.pattern.matches_with(m.location.as_ref(), MATCH) {
                out.push(m);
            }
        }
        out.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(out)
    }
}

/// A blocking `Read` over an object's byte stream (run it off the async runtime).
struct StreamRead {
    rt: tokio::runtime::Handle,
    stream: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    cur: bytes::Bytes,
}

impl std::io::Read for StreamRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rt.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

struct BlobSource {
    json: bool,
}

#[async_trait]
impl Source for BlobSource {
    async fn run(&self, ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError> {
        let tbl = ctx.tbl();
        let (path, connection, format) = table_format(tbl, self.json)?;
        let conn = match &connection {
            Some(id) => Some(ctx.session.connection(id)?),
            None => None,
        };
        let glob = ObjectGlob::parse(&path, conn)?;
        let objects = glob.list().await?;
        if objects.is_empty() {
            tracing::warn!(table = %tbl.name, path = %path, "no object matches the path glob");
        }
        let batch_size = ctx.session.settings.batch_size;
        let (mut read, mut unchanged, mut skipped) = (0u64, 0u64, 0u64);
        for meta in objects {
            let label = glob.label(&meta.location);
            let key = format!("{}:{label}", tbl.name);
            let seen: Option<ObjectState> = ctx
                .checkpoint(&key)
                .and_then(|v| serde_json::from_value(v).ok());
            if seen
                .as_ref()
                .is_some_and(|s| s.size == meta.size && s.etag == meta.e_tag)
            {
                unchanged += 1;
                continue;
            }
            if ctx.session.stop_for_budget(&tbl.name, read) {
                break;
            }
            // Read exactly the version listed.
            let opts = GetOptions {
                if_match: meta.e_tag.clone(),
                ..Default::default()
            };
            let got = match glob.store().get_opts(&meta.location, opts).await {
                Ok(g) => g,
                Err(object_store::Error::Precondition { .. })
                | Err(object_store::Error::NotModified { .. })
                | Err(object_store::Error::NotFound { .. }) => {
                    skipped += 1;
                    tracing::info!(table = %tbl.name, object = %label, "skipped: it changed or went away since it was listed; it is read on a later run");
                    continue;
                }
                Err(e) => {
                    return Err(anchovy_core::Error::datastore("get", label.clone(), e).into());
                }
            };
            let input = StreamRead {
                rt: tokio::runtime::Handle::current(),
                stream: got.into_stream(),
                cur: bytes::Bytes::new(),
            };
            let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
            let (fmt, table, l) = (format.clone(), tbl.name.clone(), label.clone());
            let mut rejects = ctx.rejects()?;
            let reader = tokio::task::spawn_blocking(move || -> Result<u64, PluginError> {
                fmt.read(
                    Box::new(input),
                    &l,
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
                location: label.clone(),
                message: format!("reader thread failed: {e}"),
            })??;
            let state = ObjectState {
                size: meta.size,
                etag: meta.e_tag.clone(),
                last_modified: meta.last_modified.to_rfc3339(),
                rows,
            };
            out.checkpoint(&key, state).await?;
            ctx.session.budget.spend(rows, meta.size);
            ctx.session.progress(&tbl.name, 0, 0, true);
            read += 1;
            ctx.log_add("rows_read", rows);
        }
        ctx.log("objects_read", read);
        ctx.log("objects_unchanged", unchanged);
        ctx.log("objects_skipped_changed", skipped);
        Ok(())
    }
}
