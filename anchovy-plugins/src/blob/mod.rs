//! `blob.CsvDownloader` and `blob.JsonDownloader`: files in object stores (S3, Azure
//! Blob, GCS), read incrementally: the object-store [`Transport`] of the shared file
//! source ([`crate::source`]).
//!
//! - **Tables**: `path:` is an object URL whose last part may be a glob:
//!   `az://chat/sessions/*.json`, `s3://bucket/exports/**/*.csv.gz`,
//!   `https://<account>.blob.core.windows.net/logs/2024-*/*.ndjson`. `*` and `?` stay
//!   within one `/` level, `**` crosses levels, `[a-z]` classes work. Every option of
//!   `files.CsvDownloader` applies to `blob.CsvDownloader`; `blob.JsonDownloader` reads
//!   NDJSON, JSON arrays and JSON documents ([`crate::formats::json`]); `format: parquet`
//!   reads Parquet objects with either. `.gz`/`.zst` objects are
//!   decompressed as they stream.
//! - **Credentials**: the providers' environment variables, or `connection: <id>` with
//!   `ACHVY_CNXN__<ID>__<KEY>` (see [`anchovy_core::datastore::url`]).
//! - **Incremental** per object: a checkpoint `<table>:<url>` = `{size, etag,
//!   last_modified, rows}`, committed with the object's rows. A rerun reads only new
//!   objects and objects whose etag changed. An object is read at the version that was
//!   listed (`If-Match`): one replaced meanwhile is skipped this run and read on the next.
//!   A read that drops mid-object resumes at the byte where it stopped, still
//!   `If-Match`, so it never mixes two versions.
//! - **After load**: `after_load: delete`, or `move:<prefix>` (a key prefix in the same
//!   bucket or container, e.g. `move:archive/2024`), once the rows are committed.
//! - **Streaming**: the object's bytes stream into the blocking parser, batches go out
//!   through a bounded channel; memory stays flat whatever the object size.

use std::path::PathBuf;
use std::sync::Arc;

use anchovy_core::datastore::url::{self, Opened as OpenedStore};
use anchovy_core::operator::OperatorKind;
use anchovy_core::{OperatorSpec, OptionDoc};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::error::PluginError;
use crate::source::{
    AfterLoad, Counters, Entry, FileDownloader, Opened, Transport, TransportSpec, move_names,
    no_free_name,
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
    description: "Downloads CSV/TSV (or `format: json | parquet`) objects from S3, Azure Blob or GCS (URL glob per table), incrementally by etag.",
    kind: OperatorKind::Downloader,
    connections: &[],
    env_vars: ENV_VARS,
    table_options: crate::source::OPTIONS,
    build: |_| Ok(Arc::new(FileDownloader::new(TRANSPORT, "csv"))),
};

/// `blob.JsonDownloader`.
pub const JSON_SPEC: OperatorSpec = OperatorSpec {
    name: "blob.JsonDownloader",
    description: "Downloads JSON objects (NDJSON, arrays, one document per file) from S3, Azure Blob or GCS, incrementally by etag.",
    kind: OperatorKind::Downloader,
    connections: &[],
    env_vars: ENV_VARS,
    table_options: crate::source::OPTIONS,
    build: |_| Ok(Arc::new(FileDownloader::new(TRANSPORT, "json"))),
};

/// Moves `from` to `<prefix>/<name>` under the first free name of [`move_names`]:
/// `rename_if_not_exists` where the store has it (Azure, GCS, local), otherwise (S3
/// without conditional copies) a rename to a name a `head` saw free.
async fn move_to_free_name(
    store: &dyn ObjectStore,
    from: &Path,
    prefix: &str,
    name: &str,
) -> object_store::Result<()> {
    for candidate in move_names(name) {
        let to = Path::from(format!("{prefix}/{candidate}"));
        match store.rename_if_not_exists(from, &to).await {
            Ok(()) => return Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => continue,
            Err(
                object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. },
            ) => match store.head(&to).await {
                Ok(_) => continue,
                Err(object_store::Error::NotFound { .. }) => return store.rename(from, &to).await,
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    Err(object_store::Error::Generic {
        store: "after_load",
        source: Box::new(no_free_name(name, prefix)),
    })
}

/// Object stores as a transport.
pub const TRANSPORT: TransportSpec = TransportSpec {
    id: "blob",
    counters: Counters {
        noun: "objects",
        read: "objects_read",
        unchanged: "objects_unchanged",
        changed: "objects_skipped_changed",
    },
    connect: |ctx, o| {
        let conn = match &o.connection {
            Some(id) => Some(ctx.connection(id)?),
            None => None,
        };
        Ok(Box::new(Objects {
            glob: ObjectGlob::parse(&o.path, conn)?,
            rt: tokio::runtime::Handle::current(),
        }))
    },
};

/// A table's `path:` resolved: the store, the prefix to list and the glob to match.
pub struct ObjectGlob {
    opened: OpenedStore,
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

/// The objects of one table's URL glob.
struct Objects {
    glob: ObjectGlob,
    rt: tokio::runtime::Handle,
}

impl Objects {
    fn key(e: &Entry) -> Path {
        Path::from(e.location.to_string_lossy().as_ref())
    }
}

impl Transport for Objects {
    fn list(&mut self) -> Result<Vec<Entry>, PluginError> {
        let objects = self.rt.block_on(self.glob.list())?;
        Ok(objects
            .into_iter()
            .map(|m| Entry {
                name: self.glob.label(&m.location),
                location: PathBuf::from(m.location.as_ref()),
                size: m.size,
                mtime_ns: None,
                etag: m.e_tag,
                last_modified: Some(m.last_modified.to_rfc3339()),
            })
            .collect())
    }

    fn open(&mut self, e: &Entry, offset: u64) -> Result<Opened, PluginError> {
        if offset > 0 && e.etag.is_none() {
            return Err(PluginError::Data {
                location: e.name.clone(),
                message: "the read failed mid-object and the store gives no etag to resume it safely; it is read again on the next run".into(),
            });
        }
        // Read exactly the version listed.
        let opts = GetOptions {
            if_match: e.etag.clone(),
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..Default::default()
        };
        let got = match self
            .rt
            .block_on(self.glob.store().get_opts(&Self::key(e), opts))
        {
            Ok(g) => g,
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::NotModified { .. }
                | object_store::Error::NotFound { .. },
            ) if offset == 0 => {
                return Ok(Opened::Changed(
                    "it changed or went away since it was listed",
                ));
            }
            Err(err) => {
                return Err(anchovy_core::Error::datastore("get", e.name.clone(), err).into());
            }
        };
        Ok(Opened::Reader(Box::new(StreamRead {
            rt: self.rt.clone(),
            stream: got.into_stream(),
            cur: bytes::Bytes::new(),
        })))
    }

    fn verify(&mut self, _e: &Entry) -> Result<(), PluginError> {
        // The read was of the listed version (`If-Match`): nothing to check.
        Ok(())
    }

    fn resumable(&self) -> bool {
        true
    }

    fn after_load(&mut self, entries: &[Entry], action: &AfterLoad) -> Result<u64, PluginError> {
        let store = self.glob.store().clone();
        let mut n = 0;
        for e in entries {
            let from = Self::key(e);
            let r = self.rt.block_on(async {
                match action {
                    AfterLoad::Keep => Ok(false),
                    AfterLoad::Delete => store.delete(&from).await.map(|()| true),
                    AfterLoad::Move(prefix) => {
                        let name = from.filename().unwrap_or_default().to_string();
                        move_to_free_name(store.as_ref(), &from, prefix.trim_matches('/'), &name)
                            .await
                            .map(|()| true)
                    }
                }
            });
            match r {
                Ok(true) => n += 1,
                Ok(false) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => {
                    return Err(anchovy_core::Error::datastore(
                        "after_load",
                        format!("{} ({action:?})", e.name),
                        err,
                    )
                    .into());
                }
            }
        }
        Ok(n)
    }
}
