//! Leases: the run lease (at most one live run per anchovy, user + id) and the
//! per-table claims of workers ([`Spot`]), one mechanism on any datastore.
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
/// The folder of the per-table claims (`<table>.json`, and `<table>.lock` locally).
pub const CLAIMS: &str = "$locks/tables";

/// Where a lease lives: the run lease, or one table's claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spot {
    /// The lease object's key in the anchovy's area.
    key: String,
    /// The OS lock file's path under the area's `$locks` folder (local datastores).
    lock: String,
    /// The table, for a claim.
    table: Option<String>,
}

impl Spot {
    /// The run lease.
    pub fn run() -> Spot {
        Spot {
            key: LEASE_KEY.into(),
            lock: "run.lock".into(),
            table: None,
        }
    }

    /// The claim on one table (its name percent-encoded into one path segment).
    pub fn table(name: &str) -> Spot {
        let seg = crate::datastore::layout::segment(name);
        Spot {
            key: format!("{CLAIMS}/{seg}.json"),
            lock: format!("tables/{seg}.lock"),
            table: Some(name.to_string()),
        }
    }

    /// The table of a claim.
    pub fn table_name(&self) -> Option<&str> {
        self.table.as_deref()
    }
}

/// Why a lease was not taken.
#[derive(Debug, Clone)]
pub enum Taken {
    /// Another live holder has it (its lease, when readable).
    Busy(Option<LeaseDoc>),
    /// Released after the round that asked began: done for that round.
    Done(LeaseDoc),
}

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
    /// The worker holding it (`--workers`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// What a claim is on: the table, or `<table>#<part>` (`None` for the run lease).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl LeaseDoc {
    /// Who holds it, for people: the worker (if any), pid, host and session.
    pub fn holder(&self) -> String {
        let w = self
            .worker
            .as_ref()
            .map(|w| format!("worker {w}, "))
            .unwrap_or_default();
        format!(
            "{w}pid {} on {} (session {})",
            self.pid, self.host, self.session_id
        )
    }

    /// True while the lease binds: not released and not expired.
    pub fn live(&self) -> bool {
        !self.released && self.expires_at > Utc::now()
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
    spot: Spot,
    kind: Kind,
    doc: std::sync::Mutex<LeaseDoc>,
    ttl: Duration,
    lost: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({}, token {})", self.spot.key, self.token())
    }
}

fn ttl_chrono(ttl: Duration) -> chrono::Duration {
    chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(60))
}

impl Lease {
    /// Takes the run lease of the anchovy whose area is `store`.
    ///
    /// # Errors
    /// [`Error::Locked`] when another live run holds it; [`Error::Datastore`] /
    /// [`Error::Io`] when the lease cannot be read or written.
    pub async fn acquire(store: &Datastore, session_id: &str, ttl: Duration) -> Result<Arc<Lease>> {
        // Workers of this anchovy beside a single-process run would race it for every
        // table: refuse while any holds a live claim (locally the OS lock says so).
        if store.local_dir().is_none()
            && let Some((t, c)) = claims(store).await?.into_iter().find(|(_, c)| c.live())
        {
            return Err(Error::Locked {
                store: store.location(),
                holder: format!("workers (--workers): {} holds table {t}", c.holder()),
                expires_at: c.expires_at.to_rfc3339(),
            });
        }
        match Lease::take(store, Spot::run(), session_id, ttl, None, None).await? {
            Ok(l) => Ok(l),
            Err(taken) => {
                let (doc, local) = match taken {
                    Taken::Busy(d) => (d, store.local_dir().is_some()),
                    Taken::Done(d) => (Some(d), false),
                };
                let holder = match &doc {
                    // Workers hold the local lock shared, and write no run lease.
                    Some(d) if local && d.released => "workers of this anchovy (--workers)".into(),
                    Some(d) => d.holder(),
                    None if local => "workers of this anchovy (--workers)".into(),
                    None => "another run".into(),
                };
                Err(Error::Locked {
                    store: store.location(),
                    holder,
                    expires_at: if local {
                        "it exits (an OS lock on a local datastore)".into()
                    } else {
                        doc.map_or(String::new(), |p| p.expires_at.to_rfc3339())
                    },
                })
            }
        }
    }

    /// Takes the lease at `spot`, or says why not: another live holder has it, or (with
    /// `done_after`) it was released after that instant, so the work it guards was done
    /// in the caller's round. A lease past its TTL is taken over (token + 1).
    ///
    /// # Errors
    /// [`Error::Datastore`] / [`Error::Io`] when the lease cannot be read or written.
    pub async fn take(
        store: &Datastore,
        spot: Spot,
        session_id: &str,
        ttl: Duration,
        worker: Option<&str>,
        done_after: Option<DateTime<Utc>>,
    ) -> Result<std::result::Result<Arc<Lease>, Taken>> {
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
            worker: worker.map(String::from),
            unit: spot.table.clone(),
        };
        let done = |prev: &LeaseDoc| {
            done_after.is_some_and(|after| prev.released && prev.renewed_at > after)
        };
        let lease = |kind: Kind, doc: LeaseDoc| {
            Arc::new(Lease {
                store: store.clone(),
                spot: spot.clone(),
                kind,
                doc: std::sync::Mutex::new(doc),
                ttl,
                lost: Default::default(),
            })
        };
        if let Some(dir) = store.local_dir() {
            // An OS file lock and a mkdir: blocking, so off the async runtime.
            let lock = spot.lock.clone();
            let file = tokio::task::spawn_blocking(move || lock_local(&dir, &lock, false))
                .await
                .map_err(|e| Error::Cancelled {
                    reason: format!("taking the local lock: {e}"),
                })??;
            let prev: Option<LeaseDoc> = store.get_json(&spot.key).await.unwrap_or(None);
            let Some(file) = file else {
                return Ok(Err(Taken::Busy(prev)));
            };
            if let Some(p) = prev.as_ref().filter(|p| done(p)) {
                let _ = file.unlock();
                return Ok(Err(Taken::Done(p.clone())));
            }
            // We hold the OS lock: the previous token is ours to increment.
            doc.token = prev.map_or(1, |p| p.token + 1);
            store.put_json(&spot.key, &doc).await?;
            return Ok(Ok(lease(Kind::Local { _file: file }, doc)));
        }
        let key = spot.key.as_str();
        let (raw, path) = store.raw(key);
        for _ in 0..3 {
            let current = match raw.get(&path).await {
                Ok(r) => {
                    let meta = r.meta.clone();
                    let bytes = r
                        .bytes()
                        .await
                        .map_err(|e| Error::datastore("get", key, e))?;
                    let prev: LeaseDoc = serde_json::from_slice(&bytes)
                        .map_err(|e| Error::json(format!("{}/{key}", store.location()), e))?;
                    Some((prev, meta))
                }
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => return Err(Error::datastore("get", key, e)),
            };
            let mode = match &current {
                None => PutMode::Create,
                Some((prev, meta)) => {
                    if prev.live() {
                        return Ok(Err(Taken::Busy(Some(prev.clone()))));
                    }
                    if done(prev) {
                        return Ok(Err(Taken::Done(prev.clone())));
                    }
                    doc.token = prev.token + 1;
                    if !prev.released {
                        match &spot.table {
                            None => {
                                tracing::warn!(holder = %prev.holder(), expired_at = %prev.expires_at, token = doc.token, "taking over an expired run lease (its run was killed or cut off)")
                            }
                            Some(t) => {
                                tracing::warn!(holder = %prev.holder(), expired_at = %prev.expires_at, token = doc.token, "taking over the expired claim on {t} (its worker was killed or cut off)")
                            }
                        }
                    }
                    PutMode::Update(UpdateVersion {
                        e_tag: meta.e_tag.clone(),
                        version: meta.version.clone(),
                    })
                }
            };
            let body =
                Bytes::from(serde_json::to_vec_pretty(&doc).map_err(|e| Error::json(key, e))?);
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
                    let version = Mutex::new(UpdateVersion {
                        e_tag: r.e_tag,
                        version: r.version,
                    });
                    return Ok(Ok(lease(Kind::Blob { version }, doc)));
                }
                // Another taker won the race: look again (it will be live), unless
                // the lease stored is exactly ours (a retry of a write that landed).
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => {
                    if let Some(version) = own_write(&raw, &path, &body).await {
                        return Ok(Ok(lease(
                            Kind::Blob {
                                version: Mutex::new(version),
                            },
                            doc,
                        )));
                    }
                    continue;
                }
                Err(e) => return Err(Error::datastore("put", key, e)),
            }
        }
        let prev: Option<LeaseDoc> = store.get_json(key).await?;
        Ok(Err(Taken::Busy(prev)))
    }

    /// The fencing token of this holder.
    pub fn token(&self) -> u64 {
        self.doc.lock().map(|d| d.token).unwrap_or_default()
    }

    /// True once a renewal found the lease taken over.
    pub fn is_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Renews the lease every [`Lease::renew_every`] until [`KeepAlive::stop`] (or the
    /// handle is dropped); a failed renewal is logged (and retried next time); a lost
    /// lease is logged once and ends it.
    pub fn keep_alive(self: &Arc<Self>) -> KeepAlive {
        let lease = self.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let handle = tokio::spawn(async move {
            loop {
                // Only the wait is cut short: a renewal once sent is seen through, so
                // the version this holder knows stays the stored one.
                tokio::select! {
                    _ = tokio::time::sleep(lease.renew_every()) => {}
                    _ = stopped.cancelled() => return,
                }
                match lease.renew().await {
                    Ok(()) => {}
                    Err(e @ (Error::LeaseLost { .. } | Error::ClaimLost { .. })) => {
                        tracing::error!(error = %e, "lease lost");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.chain(), lease = %lease.spot.key, "renewing a lease failed; retrying")
                    }
                }
            }
        });
        KeepAlive {
            stop,
            handle: std::sync::Mutex::new(Some(handle)),
        }
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
        let key = self.spot.key.as_str();
        let Kind::Blob { version } = &self.kind else {
            if let (true, Kind::Local { _file }) = (release, &self.kind) {
                // The OS lock goes with the file handle; mark the doc for people (and
                // the time, for a worker's round), then let the lock go.
                let doc = {
                    let mut d = self.doc.lock().map_err(|_| poisoned())?;
                    d.released = true;
                    d.renewed_at = Utc::now();
                    d.clone()
                };
                self.store.put_json(key, &doc).await?;
                let _ = _file.unlock();
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
        let (raw, path) = self.store.raw(key);
        let body = Bytes::from(serde_json::to_vec_pretty(&doc).map_err(|e| Error::json(key, e))?);
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
                Err(self.lost_error(doc.token))
            }
            Err(e) => Err(Error::datastore("renew lease", key, e)),
        }
    }

    /// The error of a lease found taken over.
    fn lost_error(&self, token: u64) -> Error {
        match &self.spot.table {
            None => Error::LeaseLost {
                store: self.store.location(),
                token,
            },
            Some(t) => Error::ClaimLost {
                table: t.clone(),
                store: self.store.location(),
                reason: format!(
                    "its claim (token {token}) expired and another worker took it over"
                ),
            },
        }
    }

    /// Where this lease lives.
    pub fn spot(&self) -> &Spot {
        &self.spot
    }
}

/// What a worker holds of its anchovy's run lease: on a local datastore the OS lock
/// of the run lease, shared (workers exclude a single-process run, not each other);
/// nothing on an object store, where the run lease is only checked.
#[derive(Debug)]
pub struct WorkerEntry {
    _file: Option<std::fs::File>,
}

/// Enters an anchovy as one of its workers: refused while a single-process run holds the
/// run lease (which, once started, refuses workers' claims in turn: see
/// [`Lease::acquire`]).
///
/// # Errors
/// [`Error::Locked`] when a single-process run is live; datastore errors.
pub async fn enter_as_worker(store: &Datastore) -> Result<WorkerEntry> {
    let run: Option<LeaseDoc> = store.get_json(LEASE_KEY).await?;
    let Some(dir) = store.local_dir() else {
        if let Some(d) = run.filter(LeaseDoc::live) {
            return Err(Error::Locked {
                store: store.location(),
                holder: format!("a single-process run (no --workers): {}", d.holder()),
                expires_at: d.expires_at.to_rfc3339(),
            });
        }
        return Ok(WorkerEntry { _file: None });
    };
    let lock = Spot::run().lock;
    let file = tokio::task::spawn_blocking(move || lock_local(&dir, &lock, true))
        .await
        .map_err(|e| Error::Cancelled {
            reason: format!("taking the local lock: {e}"),
        })??;
    match file {
        Some(f) => Ok(WorkerEntry { _file: Some(f) }),
        None => Err(Error::Locked {
            store: store.location(),
            holder: format!(
                "a single-process run (no --workers): {}",
                run.as_ref()
                    .map_or("another process".into(), LeaseDoc::holder)
            ),
            expires_at: "it exits (an OS lock on a local datastore)".into(),
        }),
    }
}

/// Every claim of an anchovy's area, as `(unit, lease)`, sorted by unit (a table, or
/// `<table>#<part>`): who holds (or last held) what, for `anchovy tables` and
/// `healthcheck`. The claims are read 16 at a time.
///
/// # Errors
/// [`Error::Datastore`] when the claims cannot be listed or read.
pub async fn claims(store: &Datastore) -> Result<Vec<(String, LeaseDoc)>> {
    use futures::StreamExt;
    let keys: Vec<String> = store
        .list(CLAIMS)
        .await?
        .into_iter()
        .map(|e| e.key)
        .filter(|k| k.ends_with(".json"))
        .collect();
    let docs: Vec<Result<Option<LeaseDoc>>> = futures::stream::iter(keys)
        .map(|k| async move { store.get_json::<LeaseDoc>(&k).await })
        .buffered(16)
        .collect()
        .await;
    let mut out = Vec::new();
    for d in docs {
        // The unit is in the claim itself (its key is percent-encoded).
        if let Some(doc) = d?
            && let Some(unit) = doc.unit.clone()
        {
            out.push((unit, doc));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The task renewing a lease ([`Lease::keep_alive`]).
///
/// [`KeepAlive::stop`] before a release: it waits for a renewal in flight, whose
/// answer carries the version the release must name (aborting the task mid-request
/// would leave a stale version, the release would fail its precondition and the lease
/// would stay held until its TTL). Dropped without `stop` (a cancelled task), it stops
/// renewing after any renewal in flight, and the lease expires.
#[derive(Debug)]
pub struct KeepAlive {
    stop: tokio_util::sync::CancellationToken,
    handle: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl KeepAlive {
    /// Stops renewing, once any renewal in flight has finished (waiting 10 s at most:
    /// a store that slow makes the release fail too, and the lease then expires).
    pub async fn stop(&self) {
        self.stop.cancel();
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut h) = handle
            && tokio::time::timeout(Duration::from_secs(10), &mut h)
                .await
                .is_err()
        {
            h.abort();
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.stop.cancel();
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

/// Takes the OS lock `$locks/<lock>` of a local area, exclusive or `shared`; `None`
/// when another process holds it (exclusively, or at all for an exclusive lock).
fn lock_local(dir: &std::path::Path, lock: &str, shared: bool) -> Result<Option<std::fs::File>> {
    let path = dir.join("$locks").join(lock);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            op: "create",
            path: parent.to_path_buf(),
            source,
        })?;
    }
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
    let locked = if shared {
        file.try_lock_shared()
    } else {
        file.try_lock()
    };
    match locked {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(source)) => Err(Error::Io {
            op: "lock",
            path,
            source,
        }),
    }
}
