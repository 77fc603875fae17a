//! The datastore: where an anchovy keeps its data files and metadata.
//!
//! [`Datastore`] is a prefix inside an [`object_store::ObjectStore`] (the local
//! filesystem is the embedded default). An anchovy's own area is
//! `<root>/<user>/<id>/` (see [`layout`]):
//!
//! ```text
//! $tables/<tbl>.json        merged table metadata
//! $checkpoints/<key>.json   checkpoint mirrors (+ `_applied`, the last commit they reflect)
//! $commits/<seq>.json       the commit record: which data files exist, in order
//! $task_logs/<...>.json     one JSON per finished task
//! $results/anchovy_run_results.json     (workers: $results/workers/<worker>.json)
//! $locks/run.json           the run lease; $locks/tables/<unit>.json: workers' claims
//! data/<tbl>/<file>.ndjson.gz
//! ```
//!
//! Guarantees relied on elsewhere: a `put` is atomic (readers see the old object or the
//! whole new one, never a torn one: object stores do this natively, the local
//! filesystem writes a temporary file and renames it), and [`Datastore::create`] is a
//! conditional create (exactly one of several racing writers wins).

pub mod layout;
pub mod url;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

/// A listed object.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key relative to the datastore prefix (`data/sales/x.ndjson.gz`).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written, as the store reports it.
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// A prefix in an object store.
#[derive(Clone)]
pub struct Datastore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    location: String,
    /// Path parts of `prefix` that `location` already shows (a URL's own prefix).
    shown: usize,
    local: Option<PathBuf>,
}

impl std::fmt::Debug for Datastore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Datastore({})", self.location())
    }
}

impl Datastore {
    /// Opens a datastore from a location: a local path, `file://`, `s3://`, `az://`
    /// (and the other Azure forms), or `gs://` URL (see [`url`]). A local directory is
    /// created when missing.
    ///
    /// # Errors
    /// [`Error::Config`] for a URL that is not understood, [`Error::Io`] when the
    /// directory cannot be created, [`Error::Datastore`] when the client cannot be built.
    pub fn open(location: &str) -> Result<Datastore> {
        Datastore::open_with(location, None)
    }

    /// [`Datastore::open`] with credentials from a named connection.
    ///
    /// # Errors
    /// As [`Datastore::open`].
    pub fn open_with(
        location: &str,
        conn: Option<&crate::connection::Connection>,
    ) -> Result<Datastore> {
        let o = url::open(location, conn)?;
        Ok(Datastore {
            shown: o.prefix.parts().count(),
            store: o.store,
            prefix: o.prefix,
            location: o.location.trim_end_matches('/').to_string(),
            local: o.local,
        })
    }

    /// Fails early, with what is wrong and the fix, when a local datastore directory
    /// cannot be written (read-only mount, permissions, a full disk). Object stores
    /// are not probed: the run lease is their first write and says the same.
    ///
    /// # Errors
    /// [`Error::DatastoreUnusable`] (exit 4).
    pub fn check_writable(&self) -> Result<()> {
        match &self.local {
            Some(root) => url::check_writable_local(root),
            None => Ok(()),
        }
    }

    /// The directory of a local filesystem datastore (`None` for object stores).
    pub fn local_dir(&self) -> Option<PathBuf> {
        let root = self.local.as_ref()?;
        Some(
            self.prefix
                .parts()
                .fold(root.clone(), |p, part| p.join(part.as_ref())),
        )
    }

    /// `<location>/<key>`: how errors name an object.
    fn at(&self, key: &str) -> String {
        format!("{}/{key}", self.location())
    }

    /// The underlying store and the full path of `key` in it, for conditional writes
    /// that need versions ([`crate::lease`]).
    pub fn raw(&self, key: &str) -> (Arc<dyn ObjectStore>, Path) {
        (self.store.clone(), self.full(key))
    }

    /// The area of one anchovy: `<prefix>/<user>/<id>`.
    pub fn for_anchovy(&self, user: &str, id: &str) -> Datastore {
        self.child(&[user, id])
    }

    /// A sub-prefix; each part is one encoded path segment (it cannot escape).
    pub fn child(&self, parts: &[&str]) -> Datastore {
        let mut p: Vec<object_store::path::PathPart> = self.prefix.parts().collect();
        p.extend(parts.iter().map(|s| object_store::path::PathPart::from(*s)));
        Datastore {
            store: self.store.clone(),
            prefix: Path::from_iter(p),
            location: self.location.clone(),
            shown: self.shown,
            local: self.local.clone(),
        }
    }

    /// A printable location (`file:///home/me/.anchovies/me/sales`), without secrets.
    pub fn location(&self) -> String {
        let rest: Vec<String> = self
            .prefix
            .parts()
            .skip(self.shown)
            .map(|p| p.as_ref().to_string())
            .collect();
        if rest.is_empty() {
            self.location.clone()
        } else {
            format!("{}/{}", self.location.trim_end_matches('/'), rest.join("/"))
        }
    }

    fn full(&self, key: &str) -> Path {
        // Keys are built by `layout`, whose user-supplied parts are already encoded.
        let rel = Path::parse(key).unwrap_or_else(|_| Path::from(key));
        Path::from_iter(self.prefix.parts().chain(rel.parts()))
    }

    fn rel(&self, full: &Path) -> String {
        let parts: Vec<_> = full
            .prefix_match(&self.prefix)
            .map(|p| p.collect())
            .unwrap_or_default();
        Path::from_iter(parts).to_string()
    }

    /// Reads an object; `None` when it does not exist.
    ///
    /// # Errors
    /// [`Error::Datastore`] for anything but "not found".
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.store.get(&self.full(key)).await {
            Ok(r) => Ok(Some(
                r.bytes()
                    .await
                    .map_err(|e| Error::datastore("get", self.at(key), e))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::datastore("get", self.at(key), e)),
        }
    }

    /// Reads and decodes a JSON object; `None` when it does not exist.
    ///
    /// # Errors
    /// [`Error::Datastore`], or [`Error::Json`] naming the key when it does not decode.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key).await? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::json(format!("{}/{key}", self.location()), e)),
        }
    }

    /// Writes (or overwrites) an object atomically.
    ///
    /// # Errors
    /// [`Error::Datastore`].
    pub async fn put(&self, key: &str, data: impl Into<PutPayload>) -> Result<()> {
        self.store
            .put(&self.full(key), data.into())
            .await
            .map(|_| ())
            .map_err(|e| Error::datastore("put", self.at(key), e))
    }

    /// Writes JSON (pretty) atomically, exactly as given: for machine state (table
    /// metadata, checkpoint mirrors), which redaction would corrupt.
    ///
    /// # Errors
    /// [`Error::Datastore`].
    pub async fn put_json<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(value).map_err(|e| Error::json(key, e))?;
        self.put(key, Bytes::from(text)).await
    }

    /// Writes JSON for people (task logs, run results) with every registered secret
    /// replaced by `***`.
    ///
    /// # Errors
    /// [`Error::Datastore`].
    pub async fn put_json_redacted<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(value).map_err(|e| Error::json(key, e))?;
        let text = crate::secret::redact(&text).into_owned();
        self.put(key, Bytes::from(text)).await
    }

    /// Reads, changes and writes one JSON object so that concurrent writers (workers)
    /// never lose each other's changes: `change` gets the stored value (`None` when
    /// there is none) and returns the value to store. On an object store the write is
    /// conditional on the version read (create-if-absent, or `If-Match`), and a lost
    /// race reads again and calls `change` again; on a local datastore an OS lock on
    /// `$locks/meta/<key>.lock` keeps the read and the write of concurrent processes
    /// apart.
    ///
    /// # Errors
    /// [`Error::Datastore`], [`Error::Json`], or the error of `change`.
    pub async fn update_json(
        &self,
        key: &str,
        mut change: impl FnMut(Option<serde_json::Value>) -> Result<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        if let Some(dir) = self.local_dir() {
            let lock = dir
                .join("$locks/meta")
                .join(layout::segment(&format!("{key}.lock")));
            let file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
                std::fs::create_dir_all(lock.parent().unwrap_or(&lock))?;
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock)?;
                f.lock()?;
                Ok(f)
            })
            .await
            .map_err(|e| Error::Cancelled {
                reason: format!("locking {key}: {e}"),
            })?
            .map_err(|source| Error::Io {
                op: "lock",
                path: dir.join(key),
                source,
            })?;
            let v = change(self.get_json(key).await?)?;
            let written = self.put_json(key, &v).await;
            drop(file);
            return written.map(|()| v);
        }
        let path = self.full(key);
        for _ in 0..50 {
            let (stored, mode) = match self.store.get(&path).await {
                Ok(r) => {
                    let version = object_store::UpdateVersion {
                        e_tag: r.meta.e_tag.clone(),
                        version: r.meta.version.clone(),
                    };
                    let bytes = r
                        .bytes()
                        .await
                        .map_err(|e| Error::datastore("get", self.at(key), e))?;
                    let v: serde_json::Value =
                        serde_json::from_slice(&bytes).map_err(|e| Error::json(self.at(key), e))?;
                    (Some(v), PutMode::Update(version))
                }
                Err(object_store::Error::NotFound { .. }) => (None, PutMode::Create),
                Err(e) => return Err(Error::datastore("get", self.at(key), e)),
            };
            let v = change(stored)?;
            let text = serde_json::to_string_pretty(&v).map_err(|e| Error::json(key, e))?;
            let opts = PutOptions {
                mode,
                ..Default::default()
            };
            match self
                .store
                .put_opts(&path, Bytes::from(text).into(), opts)
                .await
            {
                Ok(_) => return Ok(v),
                Err(object_store::Error::Precondition { .. })
                | Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(Error::datastore("put", self.at(key), e)),
            }
        }
        Err(Error::data(
            self.at(key),
            "50 concurrent writers changed it first, one after another; try again",
        ))
    }

    /// Creates an object only if it does not exist. Returns false when it already
    /// existed (another writer won).
    ///
    /// An object that exists with exactly `data` counts as created: that is this very
    /// write, whose answer was lost (a timeout or a 5xx after the store had stored it)
    /// and which the HTTP client retried. The contents must therefore be unique to the
    /// writer (commit records carry the session and a timestamp).
    ///
    /// # Errors
    /// [`Error::Datastore`] for other failures.
    pub async fn create(&self, key: &str, data: Bytes) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.full(key), data.clone().into(), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Ok(self.get(key).await?.is_some_and(|b| b == data))
            }
            Err(e) => Err(Error::datastore("create", self.at(key), e)),
        }
    }

    /// Lists objects under a key prefix (a folder, e.g. `$commits`), sorted by key.
    ///
    /// # Errors
    /// [`Error::Datastore`].
    pub async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        self.list_after(prefix, None).await
    }

    /// Lists objects under a folder whose keys sort after `after` (a full relative key).
    ///
    /// # Errors
    /// [`Error::Datastore`].
    pub async fn list_after(&self, prefix: &str, after: Option<&str>) -> Result<Vec<Entry>> {
        let p = self.full(prefix);
        let stream = match after {
            Some(a) => self.store.list_with_offset(Some(&p), &self.full(a)),
            None => self.store.list(Some(&p)),
        };
        let mut out: Vec<Entry> = stream
            .map_ok(|m| Entry {
                key: self.rel(&m.location),
                size: m.size,
                modified: m.last_modified,
            })
            .try_collect()
            .await
            .map_err(|e| Error::datastore("list", self.at(prefix), e))?;
        out.retain(|e| !e.key.contains('#'));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The names of the folders directly under this prefix (one listing request per
    /// page, not a walk of everything below): for messages that say which anchovies
    /// a datastore holds.
    ///
    /// # Errors
    /// [`Error::Datastore`].
    pub async fn children(&self) -> Result<Vec<String>> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|e| Error::datastore("list", self.location(), e))?;
        let mut out: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.parts().next_back().map(|s| s.as_ref().to_string()))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Whether an object exists (one HEAD request).
    ///
    /// # Errors
    /// [`Error::Datastore`] for anything but "not found".
    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self.store.head(&self.full(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::datastore("head", self.at(key), e)),
        }
    }

    /// Moves an object to another key (a rename on a filesystem, a copy and a delete
    /// on an object store). A missing `from` whose `to` exists is a move already made.
    ///
    /// # Errors
    /// [`Error::Datastore`].
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        match self.store.rename(&self.full(from), &self.full(to)).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) if self.exists(to).await? => Ok(()),
            Err(e) => Err(Error::datastore("rename", self.at(from), e)),
        }
    }

    /// Deletes an object (missing is fine).
    ///
    /// # Errors
    /// [`Error::Datastore`].
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&self.full(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::datastore("delete", self.at(key), e)),
        }
    }

    /// A streaming writer that makes the object visible only when shut down
    /// successfully (multipart upload, or temp file + rename on the filesystem).
    pub fn writer(&self, key: &str) -> object_store::buffered::BufWriter {
        object_store::buffered::BufWriter::new(self.store.clone(), self.full(key))
    }

    /// Streams an object's bytes.
    ///
    /// # Errors
    /// [`Error::Datastore`] (including not found).
    pub async fn stream(
        &self,
        key: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes>>> {
        let r = self
            .store
            .get(&self.full(key))
            .await
            .map_err(|e| Error::datastore("get", self.at(key), e))?;
        let k = self.at(key);
        Ok(r.into_stream()
            .map(move |b| b.map_err(|e| Error::datastore("read", k.clone(), e)))
            .boxed())
    }

    /// Checks that the datastore can be written, read back and deleted.
    ///
    /// # Errors
    /// The first failing operation.
    pub async fn probe(&self) -> Result<()> {
        let key = format!("$probe/{}", uuid::Uuid::new_v4());
        self.put(&key, Bytes::from_static(b"ok")).await?;
        let back = self.get(&key).await?;
        self.delete(&key).await?;
        match back.as_deref() {
            Some(b"ok") => Ok(()),
            _ => Err(Error::config(
                "datastore",
                "a probe object did not read back",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_list_create_and_escape_proof_keys() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_str().unwrap())
            .unwrap()
            .for_anchovy("me", "a1");
        ds.put("$tables/x.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(
            ds.get("$tables/x.json").await.unwrap().unwrap(),
            Bytes::from_static(b"{}")
        );
        assert!(ds.get("$tables/missing.json").await.unwrap().is_none());
        assert!(
            ds.create("$commits/1", Bytes::from_static(b"a"))
                .await
                .unwrap()
        );
        // The same bytes again: a retry of the write that landed (its answer was lost).
        assert!(
            ds.create("$commits/1", Bytes::from_static(b"a"))
                .await
                .unwrap()
        );
        assert!(
            !ds.create("$commits/1", Bytes::from_static(b"b"))
                .await
                .unwrap()
        );
        assert_eq!(
            ds.get("$commits/1").await.unwrap().unwrap(),
            Bytes::from_static(b"a")
        );
        let listed = ds.list("$tables").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, "$tables/x.json");
        assert!(dir.path().join("me/a1/$tables/x.json").exists());
        // A hostile table name stays one segment inside the anchovy's area.
        let evil = ds.child(&["../../etc"]);
        evil.put("passwd", Bytes::from_static(b"x")).await.unwrap();
        assert!(!dir.path().join("etc").exists());
        let k = layout::table_key("../../x/y");
        ds.put(&k, Bytes::from_static(b"x")).await.unwrap();
        let listed = ds.list("$tables").await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(
            walk(dir.path())
                .iter()
                .all(|p| p.starts_with(dir.path().join("me/a1")))
        );
        ds.probe().await.unwrap();
    }

    fn walk(p: &std::path::Path) -> Vec<PathBuf> {
        let mut out = vec![];
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                out.extend(walk(&e));
            } else {
                out.push(e);
            }
        }
        out
    }
}
