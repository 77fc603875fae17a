//! The run lease: at most one live run per anchovy (user + id), on any datastore.
//!
//! A run takes the lease at startup, before it reads or writes anything else, and keeps
//! it until shutdown. A second start of the same anchovy while the lease is live exits
//! at once with [`Error::Locked`] (exit code 5) and writes nothing.
//!
//! **Object stores** (S3, Azure Blob, GCS): the lease is the object `$locks/run.json`
//! in the anchovy's area, written only with conditional requests: create-if-absent
//! (S3 `If-None-Match: *`, Azure/GCS equivalents) for the first run, and
//! update-if-unchanged (`If-Match: <etag>` / generation) for every renewal, takeover
//! and release. The holder renews it every `ttl / 3`; a killed holder stops renewing,
//! so its lease expires after `ttl` and the next start takes it over, adding one to the
//! **fencing token**. Before every commit the holder renews once more, conditionally:
//! a process that lost its lease (paused VM, network partition) fails that renewal and
//! cannot commit ([`Error::LeaseLost`]); its commit would also lose the race for the
//! commit's sequence number. Every commit record carries the token it was made under.
//! Expiry compares the holder's clock (written into the lease) with the taker's:
//! clocks more than a few seconds apart shorten or lengthen the takeover delay, never
//! let two runs commit, because takeover and commits are conditional writes.
//!
//! **Local filesystem**: an exclusive OS lock (`flock`) on `$locks/run.lock`, held by
//! the kernel until the process exits or is killed: no TTL to wait for, and no way
//! for a paused process to lose it. `$locks/run.json` is written for people and for
//! the fencing token.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::{ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::datastore::Datastore;
use crate::error::{Error, Result};

/// The lease object, relative to the anchovy's area.
pub const LEASE_KEY: &str = "$locks/run.json";
const LOCK_FILE: &str = "run.lock";

/// What the lease object holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseDoc {
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// The holder's session id.
    pub session_id: String,
    /// The fencing token: one more than the previous holder's.
    pub token: u64,
    /// When this holder took the lease.
    pub acquired_at: DateTime<Utc>,
    /// The last renewal.
    pub renewed_at: DateTime<Utc>,
    /// When the lease lapses unless renewed.
    pub expires_at: DateTime<Utc>,
    /// Set at a clean shutdown: the next start takes over at once.
    #[serde(default)]
    pub released: bool,
}

impl LeaseDoc {
    fn holder(&self) -> String {
        format!(
            "pid {} on {} (session {})",
            self.pid, self.host, self.session_id
        )
    }
}

enum Kind {
    /// An OS lock held for the life of the file handle.
    Local { _file: std::fs::File },
    /// A conditional-write lease object and the version we last wrote.
    Blob { version: Mutex<UpdateVersion> },
}

/// A held run lease. Drop it only through [`Lease::release`] at a clean shutdown; a
/// process that dies without releasing leaves the lease to expire.
pub struct Lease {
    store: Datastore,
    kind: Kind,
    doc: std::sync::Mutex<LeaseDoc>,
    ttl: Duration,
    lost: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease(token {})", self.token())
    }
}

fn ttl_chrono(ttl: Duration) -> chrono::Duration {
    chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(60))
}

impl Lease {
    /// Takes the lease of the anchovy whose area is `store`.
    ///
    /// # Errors
    /// [`Error::Locked`] when another live run holds it; [`Error::Datastore`] /
    /// [`Error::Io`] when the lease cannot be read or written.
    pub async fn acquire(store: &Datastore, session_id: &str, ttl: Duration) -> Result<Arc<Lease>> {
        let now = Utc::now();
        let mut doc = LeaseDoc {
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            session_id: session_id.to_string(),
            token: 1,
            acquired_at: now,
            renewed_at: now,
            expires_at: now + ttl_chrono(ttl),
            released: false,
        };
        if let Some(dir) = store.local_dir() {
            // An OS file lock and a mkdir: blocking, so off the async runtime.
            let locked = store.clone();
            let file = tokio::task::spawn_blocking(move || lock_local(&dir, &locked))
                .await
                .map_err(|e| Error::Cancelled {
                    reason: format!("taking the local lock: {e}"),
                })??;
            // We hold the OS lock: the previous token is ours to increment.
            let prev: Option<LeaseDoc> = store.get_json(LEASE_KEY).await.unwrap_or(None);
            doc.token = prev.map_or(1, |p| p.token + 1);
            store.put_json(LEASE_KEY, &doc).await?;
            return Ok(Arc::new(Lease {
                store: store.clone(),
                kind: Kind::Local { _file: file },
                doc: std::sync::Mutex::new(doc),
                ttl,
                lost: Default::default(),
            }));
        }
        let (raw, path) = store.raw(LEASE_KEY);
        for _ in 0..3 {
            let current = match raw.get(&path).await {
                Ok(r) => {
                    let meta = r.meta.clone();
                    let bytes = r
                        .bytes()
                        .await
                        .map_err(|e| Error::datastore("get", LEASE_KEY, e))?;
                    let prev: LeaseDoc = serde_json::from_slice(&bytes)
                        .map_err(|e| Error::json(format!("{}/{LEASE_KEY}", store.location()), e))?;
                    Some((prev, meta))
                }
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => return Err(Error::datastore("get", LEASE_KEY, e)),
            };
            let mode = match &current {
                None => PutMode::Create,
                Some((prev, meta)) => {
                    if !prev.released && prev.expires_at > Utc::now() {
                        return Err(Error::Locked {
                            store: store.location(),
                            holder: prev.holder(),
                            expires_at: prev.expires_at.to_rfc3339(),
                        });
                    }
                    doc.token = prev.token + 1;
                    if !prev.released {
                        tracing::warn!(holder = %prev.holder(), expired_at = %prev.expires_at, token = doc.token, "taking over an expired run lease (its run was killed or cut off)");
                    }
                    PutMode::Update(UpdateVersion {
                        e_tag: meta.e_tag.clone(),
                        version: meta.version.clone(),
                    })
                }
            };
            let body = Bytes::from(
                serde_json::to_vec_pretty(&doc).map_err(|e| Error::json(LEASE_KEY, e))?,
            );
            match raw
                .put_opts(
                    &path,
                    body.clone().into(),
                    PutOptions {
                        mode,
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(r) => {
                    return Ok(Arc::new(Lease {
                        store: store.clone(),
                        kind: Kind::Blob {
                            version: Mutex::new(UpdateVersion {
                                e_tag: r.e_tag,
                                version: r.version,
                            }),
                        },
                        doc: std::sync::Mutex::new(doc),
                        ttl,
                        lost: Default::default(),
                    }));
                }
                // Another starter won the race: look again (it will be live), unless
                // the lease stored is exactly ours (a retry of a write that landed).
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => {
                    if let Some(version) = own_write(&raw, &path, &body).await {
                        return Ok(Arc::new(Lease {
                            store: store.clone(),
                            kind: Kind::Blob {
                                version: Mutex::new(version),
                            },
                            doc: std::sync::Mutex::new(doc),
                            ttl,
                            lost: Default::default(),
                        }));
                    }
                    continue;
                }
                Err(e) => return Err(Error::datastore("put", LEASE_KEY, e)),
            }
        }
        let prev: Option<LeaseDoc> = store.get_json(LEASE_KEY).await?;
        Err(Error::Locked {
            store: store.location(),
            holder: prev.as_ref().map_or("another run".into(), LeaseDoc::holder),
            expires_at: prev.map_or(String::new(), |p| p.expires_at.to_rfc3339()),
        })
    }

    /// The fencing token of this holder.
    pub fn token(&self) -> u64 {
        self.doc.lock().map(|d| d.token).unwrap_or_default()
    }

    /// True once a renewal found the lease taken over.
    pub fn is_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Renews the lease every [`Lease::renew_every`] until aborted; a failed renewal
    /// is logged (and retried next time); a lost lease is logged once and ends it.
    pub fn keep_alive(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let lease = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease.renew_every()).await;
                match lease.renew().await {
                    Ok(()) => {}
                    Err(e @ Error::LeaseLost { .. }) => {
                        tracing::error!(error = %e, "run lease lost");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.chain(), "renewing the run lease failed; retrying")
                    }
                }
            }
        })
    }

    /// How often [`Lease::renew`] should run.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Extends the lease by its TTL, conditionally on nobody having taken it over:
    /// called periodically and before every commit (the fence).
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when another run took the lease over; [`Error::Datastore`]
    /// when the store cannot be reached (the caller retries; the lease may expire).
    pub async fn renew(&self) -> Result<()> {
        self.write(false).await
    }

    /// Releases the lease at a clean shutdown: the next start takes it at once.
    ///
    /// # Errors
    /// As [`Lease::renew`].
    pub async fn release(&self) -> Result<()> {
        self.write(true).await
    }

    async fn write(&self, release: bool) -> Result<()> {
        let Kind::Blob { version } = &self.kind else {
            if release {
                // The OS lock goes with the file handle; mark the doc for people.
                let doc = {
                    let mut d = self.doc.lock().map_err(|_| poisoned())?;
                    d.released = true;
                    d.clone()
                };
                self.store.put_json(LEASE_KEY, &doc).await?;
            }
            return Ok(());
        };
        let mut v = version.lock().await;
        let doc = {
            let mut d = self.doc.lock().map_err(|_| poisoned())?;
            let now = Utc::now();
            d.renewed_at = now;
            d.expires_at = now + ttl_chrono(self.ttl);
            d.released = release;
            d.clone()
        };
        let (raw, path) = self.store.raw(LEASE_KEY);
        let body =
            Bytes::from(serde_json::to_vec_pretty(&doc).map_err(|e| Error::json(LEASE_KEY, e))?);
        match raw
            .put_opts(
                &path,
                body.clone().into(),
                PutOptions {
                    mode: PutMode::Update(v.clone()),
                    ..Default::default()
                },
            )
            .await
        {
            Ok(r) => {
                *v = UpdateVersion {
                    e_tag: r.e_tag,
                    version: r.version,
                };
                Ok(())
            }
            Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::NotFound { .. }) => {
                // A retried write whose first attempt landed (its answer was lost)
                // fails its own precondition: the stored lease is then exactly ours.
                if let Some(version) = own_write(&raw, &path, &body).await {
                    *v = version;
                    return Ok(());
                }
                self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
                Err(Error::LeaseLost {
                    store: self.store.location(),
                    token: doc.token,
                })
            }
            Err(e) => Err(Error::datastore("renew lease", LEASE_KEY, e)),
        }
    }
}

/// The version of the lease object if it holds exactly `body` (this run's own write).
async fn own_write(
    raw: &Arc<dyn object_store::ObjectStore>,
    path: &object_store::path::Path,
    body: &Bytes,
) -> Option<UpdateVersion> {
    let r = raw.get(path).await.ok()?;
    let version = UpdateVersion {
        e_tag: r.meta.e_tag.clone(),
        version: r.meta.version.clone(),
    };
    (r.bytes().await.ok()? == *body).then_some(version)
}

fn poisoned() -> Error {
    Error::Cancelled {
        reason: "the lease state is poisoned".into(),
    }
}

fn lock_local(dir: &std::path::Path, store: &Datastore) -> Result<std::fs::File> {
    let locks = dir.join("$locks");
    std::fs::create_dir_all(&locks).map_err(|source| Error::Io {
        op: "create",
        path: locks.clone(),
        source,
    })?;
    let path = locks.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::Io {
            op: "open",
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(locks.join("run.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<LeaseDoc>(&t).ok());
            Err(Error::Locked {
                store: store.location(),
                holder: holder
                    .as_ref()
                    .map_or("another process".into(), LeaseDoc::holder),
                expires_at: "it exits (an OS lock on a local datastore)".into(),
            })
        }
        Err(std::fs::TryLockError::Error(source)) => Err(Error::Io {
            op: "lock",
            path,
            source,
        }),
    }
}
