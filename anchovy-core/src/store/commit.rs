//! The commit record: which data files an anchovy has committed, and in what order.
//!
//! A commit is one JSON object at `$commits/<seq>.json` (20-digit, zero-padded, so keys
//! sort in commit order), written with a conditional create: a sequence number is taken
//! exactly once, by exactly one writer. It lists the data files it makes visible and the
//! checkpoint updates that those files cover. Because the data files are complete before
//! the commit is written, and the checkpoint updates ride in the same object, a crash at
//! any point leaves either both (files + checkpoints) or neither:
//!
//! - crash before the commit: the files are orphans no reader lists; checkpoints did not
//!   move, so the rerun produces the same data again;
//! - crash after the commit: the data is committed and the checkpoints say so; the
//!   `$checkpoints` mirrors are brought up to date from the commit on the next start.
//!
//! Readers (the uploader) call [`read_commits`] with the last sequence number they
//! consumed and get every later commit, in order.
//!
//! **Several writers** ([`crate::worker`]): a [`Committer::shared`] committer that finds
//! its sequence number taken reads the commits it missed, applies their checkpoint
//! updates, and tries the next number, so the sequence stays dense and every writer's
//! state at its last commit is the state of the whole prefix. What such a writer
//! commits for a table is fenced twice: the table's claim is renewed (conditionally)
//! before each attempt, and a commit that would set a checkpoint another writer changed
//! after the table was claimed ([`Claim::since`]) is refused with
//! [`Error::ClaimLost`]: its data was read from a state that is no longer true.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoints;
use crate::data::FileEntry;
use crate::datastore::{Datastore, layout};
use crate::error::{Error, Result};

/// One commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// The sequence number (1, 2, ...), unique per anchovy.
    pub seq: u64,
    /// The anchovy id that committed.
    pub anchovy_id: String,
    /// The anchovy user.
    pub anchovy_user: String,
    /// The session that committed.
    pub session_id: String,
    /// The batch that committed.
    pub batch_id: u64,
    /// The task's table, when a table task committed.
    #[serde(default)]
    pub tbl: Option<String>,
    /// When (RFC 3339, UTC).
    pub committed_at: String,
    /// Data files made visible by this commit.
    #[serde(default)]
    pub files: Vec<FileEntry>,
    /// Checkpoint updates covered by these files (`null` deletes a key).
    #[serde(default)]
    pub checkpoints: BTreeMap<String, Option<serde_json::Value>>,
    /// The fencing token of the run lease (or, for a worker, of the table's claim) this
    /// commit was made under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<u64>,
    /// The worker that committed (`--workers`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// A worker's claim on the table it commits for.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The claim's lease (renewed before each commit).
    pub lease: Arc<crate::lease::Lease>,
    /// The last commit applied when the claim was taken ([`Committer::catch_up`]): the
    /// state the table's task read.
    pub since: u64,
}

/// Who is committing (stamped on every record).
#[derive(Debug, Clone)]
pub struct CommitMeta {
    /// The anchovy id.
    pub anchovy_id: String,
    /// The anchovy user.
    pub anchovy_user: String,
    /// The session id.
    pub session_id: String,
    /// The batch id.
    pub batch_id: u64,
    /// The table, for table tasks.
    pub tbl: Option<String>,
    /// The worker, if any.
    pub worker: Option<String>,
    /// The worker's claim on the table, if any.
    pub claim: Option<Claim>,
}

/// Serializes commits of one process to one anchovy's area.
pub struct Committer {
    ds: Datastore,
    next: tokio::sync::Mutex<u64>,
    checkpoints: Arc<Checkpoints>,
    lease: Option<Arc<crate::lease::Lease>>,
    /// Other writers may commit too: a taken sequence number is caught up and retried.
    shared: bool,
    /// For each checkpoint key another writer set: the last commit that did (shared).
    foreign: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// The retries of a shared committer: each failed attempt means another writer
/// committed in between; after the second one the attempts are spread by a random wait
/// that doubles from 10 ms to 1 s ([`crate::http::retry::RetryPolicy::backoff`]), so a
/// storm of writers thins out instead of colliding again in lockstep; it gives up after
/// 5 minutes.
const SHARED_RETRY: crate::http::retry::RetryPolicy = crate::http::retry::RetryPolicy {
    max_retries: u32::MAX,
    initial_backoff: std::time::Duration::from_millis(10),
    max_backoff: std::time::Duration::from_secs(1),
    max_elapsed: std::time::Duration::from_secs(300),
    retry_after_cap: std::time::Duration::ZERO,
};

impl Committer {
    /// A committer that continues after `last_seq` (from [`load_checkpoints`]).
    pub fn new(ds: Datastore, checkpoints: Arc<Checkpoints>, last_seq: u64) -> Committer {
        Committer {
            ds,
            next: tokio::sync::Mutex::new(last_seq + 1),
            checkpoints,
            lease: None,
            shared: false,
            foreign: Default::default(),
        }
    }

    /// A committer among several writers of the anchovy (workers, and `anchovy
    /// checkpoints` beside them): see the module doc.
    pub fn shared(mut self) -> Committer {
        self.shared = true;
        self.checkpoints.share();
        self
    }

    /// Applies every commit made since this committer's last one (by other writers) and
    /// returns the last: what a worker calls when it claims a table, so the table's
    /// task reads the present state ([`Claim::since`]).
    ///
    /// # Errors
    /// [`Error::Datastore`] or [`Error::Json`] for an unreadable record.
    pub async fn catch_up(&self) -> Result<u64> {
        let mut next = self.next.lock().await;
        self.catch_up_locked(&mut next).await?;
        Ok(*next - 1)
    }

    async fn catch_up_locked(&self, next: &mut u64) -> Result<usize> {
        let missed = read_commits(&self.ds, *next - 1).await?;
        // The next commit this writer expects was collected by `anchovy gc` meanwhile
        // (it is below the base): continue from the base's state. Every key the
        // collected commits set counts as another writer's change (the claims' fence).
        if missed.first().is_some_and(|r| r.seq > *next)
            && let Some(b) = base(&self.ds).await?
            && b.seq >= *next
        {
            {
                let mut f = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
                for e in b.entries.iter().filter(|e| e.commit >= *next) {
                    f.insert(e.key.clone(), e.commit);
                }
            }
            self.checkpoints.adopt(b.entries, b.seq);
            *next = b.seq + 1;
        }
        for rec in &missed {
            if rec.seq < *next {
                continue;
            }
            if rec.seq != *next {
                // Dense by construction; a gap means a record is not listed yet.
                break;
            }
            {
                let mut f = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
                for k in rec.checkpoints.keys() {
                    f.insert(k.clone(), rec.seq);
                }
            }
            self.checkpoints.replay_state(rec.update());
            *next = rec.seq + 1;
        }
        Ok(missed.len())
    }

    /// The first checkpoint of `checkpoints` another writer set after `since`.
    fn changed_since(
        &self,
        checkpoints: &BTreeMap<String, Option<serde_json::Value>>,
        since: u64,
    ) -> Option<(String, u64)> {
        let f = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
        checkpoints
            .keys()
            .find_map(|k| f.get(k).filter(|s| **s > since).map(|s| (k.clone(), *s)))
    }

    /// Fences every commit with `lease`: it is renewed (conditionally) before each
    /// commit record is written, so a run that lost its lease cannot commit.
    pub fn with_lease(mut self, lease: Arc<crate::lease::Lease>) -> Committer {
        self.lease = Some(lease);
        self
    }

    /// The checkpoint state this committer advances.
    pub fn checkpoints(&self) -> &Arc<Checkpoints> {
        &self.checkpoints
    }

    /// Writes one commit: the files (already finished) and the checkpoint updates they
    /// cover, then brings the checkpoint mirrors up to date.
    ///
    /// # Errors
    /// [`Error::CommitConflict`] when another process took the sequence number;
    /// [`Error::Datastore`] when the commit cannot be written (nothing was committed).
    pub async fn commit(
        &self,
        meta: &CommitMeta,
        files: Vec<FileEntry>,
        checkpoints: BTreeMap<String, Option<serde_json::Value>>,
    ) -> Result<CommitRecord> {
        let mut next = self.next.lock().await;
        crate::failpoint::hit("commit.before")?;
        if let Some(l) = &self.lease {
            l.renew().await?;
        }
        let mut record = CommitRecord {
            seq: *next,
            anchovy_id: meta.anchovy_id.clone(),
            anchovy_user: meta.anchovy_user.clone(),
            session_id: meta.session_id.clone(),
            batch_id: meta.batch_id,
            tbl: meta.tbl.clone(),
            committed_at: String::new(),
            files,
            checkpoints,
            lease_token: match &meta.claim {
                Some(c) => Some(c.lease.token()),
                None => self.lease.as_ref().map(|l| l.token()),
            },
            worker: meta.worker.clone(),
        };
        let mut attempt = 0u32;
        let started = std::time::Instant::now();
        loop {
            attempt += 1;
            if let Some(c) = &meta.claim {
                c.lease.renew().await?;
                if let Some((key, seq)) = self.changed_since(&record.checkpoints, c.since) {
                    return Err(Error::ClaimLost {
                        table: meta.tbl.clone().unwrap_or_default(),
                        store: self.ds.location(),
                        reason: format!(
                            "commit {seq} of another writer changed checkpoint `{key}` after \
                             this worker read it (claim token {}), so its data may repeat \
                             that commit's",
                            c.lease.token()
                        ),
                    });
                }
            }
            record.seq = *next;
            record.committed_at =
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            // Machine state: stored exactly (redacting would corrupt keys that merely
            // contain a secret's text). Operators must not put secrets into checkpoints.
            let text =
                serde_json::to_string(&record).map_err(|e| Error::json("commit record", e))?;
            if self
                .ds
                .create(&layout::commit_key(record.seq), Bytes::from(text))
                .await?
            {
                break;
            }
            if !self.shared || started.elapsed() > SHARED_RETRY.max_elapsed {
                return Err(Error::CommitConflict {
                    seq: record.seq,
                    store: self.ds.location(),
                });
            }
            // Another writer took the number: learn what it (and any other) committed.
            self.catch_up_locked(&mut next).await?;
            if attempt >= 2 {
                tokio::time::sleep(SHARED_RETRY.backoff(attempt - 1)).await;
            }
        }
        *next += 1;
        crate::failpoint::hit("commit.after")?;
        self.checkpoints.apply(record.update()).await;
        Ok(record)
    }
}

/// Every committed row after `after_seq`, read into memory as `(table, batch)` in
/// commit order. For tests and small tools only: it holds everything at once.
///
/// # Errors
/// As [`read_commits`] and [`crate::data::FileReader::next_batch`].
pub async fn read_committed(
    ds: &Datastore,
    after_seq: u64,
) -> Result<Vec<(String, crate::row::Batch)>> {
    let mut out = Vec::new();
    for rec in read_commits(ds, after_seq).await? {
        for f in rec.files {
            let r = crate::data::open_committed(ds, &f, rec.seq, 4096).await?;
            for b in crate::data::read_all(r).await? {
                out.push((f.tbl.clone(), b));
            }
        }
    }
    Ok(out)
}

/// The identity of an anchovy's commit history: the session and time of its first
/// commit (`None` before any). A datastore area that was wiped and written again has a
/// different origin, so a consumer that remembers a position can tell that the
/// sequence numbers it holds no longer mean the same commits.
///
/// # Errors
/// [`Error::Datastore`] or [`Error::Json`] for an unreadable record.
pub async fn origin(ds: &Datastore) -> Result<Option<String>> {
    let first: Option<CommitRecord> = ds.get_json(&layout::commit_key(1)).await?;
    if let Some(c) = first {
        return Ok(Some(format!("{} {}", c.session_id, c.committed_at)));
    }
    // Commit 1 collected by `anchovy gc`: the base keeps its identity.
    Ok(base(ds).await?.map(|b| b.origin))
}

/// What `anchovy gc` leaves of the commits it collected (`$commits/_base.json`):
/// commits `1..=seq` and the data files they listed are gone; this keeps their
/// history's identity ([`origin`]) and the checkpoint state after commit `seq`, from
/// which a start ([`load_checkpoints`]) or a catch-up continues when the commits it
/// would replay are gone. Written before anything is deleted, so a collection cut
/// short leaves a base that covers every commit missing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Base {
    /// The last commit collected: commits up to it may be gone.
    pub seq: u64,
    /// [`origin`] of the history (commit 1's session and time).
    pub origin: String,
    /// When the collection began (RFC 3339).
    pub collected_at: String,
    /// The checkpoint state after commit `seq`.
    pub entries: Vec<crate::checkpoint::CheckpointEntry>,
}

/// The compaction base of an anchovy's commits, if `anchovy gc` collected any.
///
/// # Errors
/// [`Error::Datastore`] or [`Error::Json`] for an unreadable base.
pub async fn base(ds: &Datastore) -> Result<Option<Base>> {
    ds.get_json(layout::COMMITS_BASE).await
}

/// Who loads the checkpoint state, which decides what the load may write besides
/// the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadAs {
    /// The only writer of the anchovy (it holds the run lease): the load also brings
    /// the per-key mirrors and `$checkpoints/_applied` up to the commits it replays
    /// (the repair of a crash between a commit and its mirrors).
    SoleWriter,
    /// A worker among several, or a reader beside writers (`anchovy healthcheck`,
    /// `anchovy checkpoints`): the load writes no mirror and no `_applied`. Their
    /// writes would race the mirror writes of the commits' own writers, and an
    /// `_applied` that names commits whose mirrors a slower writer has not written yet
    /// (or overwrites with an older value) tells the next start that the mirrors hold
    /// a state they do not.
    Shared,
    /// A reader of another anchovy's state (`anchovy gc` reading its uploaders'
    /// positions): as `Shared`, and no snapshot written either: the area is not its own.
    Reader,
}

/// The checkpoint state: the snapshot (or the mirrors), then every commit after the
/// last one it reflects replayed into it, in sequence order and only while the
/// sequence is dense (a gap, which a listing of a consistent store never shows, ends
/// the replay: a [`Committer`] continuing there catches up, or fails, on the commit it
/// meets); when any was replayed, the snapshot is rewritten so the next start does not
/// replay them again. Returns the state and the last commit's sequence number (where a
/// [`Committer`] continues). The state is always that of a whole prefix of commits,
/// whatever other writers do meanwhile.
///
/// # Errors
/// [`Error::Datastore`] when the mirrors or the commit records cannot be read.
pub async fn load_checkpoints(ds: &Datastore, as_: LoadAs) -> Result<(Checkpoints, u64)> {
    let (cps, mut applied) = Checkpoints::load(ds).await?;
    if as_ != LoadAs::SoleWriter {
        cps.share();
    }
    // The commits after the stored state were collected by `anchovy gc`: the state
    // continues from its base.
    if let Some(b) = base(ds).await?
        && b.seq > applied
    {
        tracing::info!(
            from = applied,
            base = b.seq,
            "the commits after the stored checkpoint state were collected by anchovy gc; continuing from its base"
        );
        cps.adopt(b.entries, b.seq);
        applied = b.seq;
        // Written now: the next start reads it instead of the base.
        if as_ != LoadAs::Reader {
            cps.snapshot().await;
        }
    }
    let mut last = applied;
    for rec in read_commits(ds, applied).await? {
        if rec.seq != last + 1 {
            tracing::warn!(
                after = last,
                next = rec.seq,
                "the commit records are not dense (commit {} is not listed); the state is read up to commit {last}",
                last + 1
            );
            break;
        }
        match as_ {
            LoadAs::SoleWriter => cps.replay(rec.update()).await,
            LoadAs::Shared | LoadAs::Reader => cps.replay_state(rec.update()),
        }
        last = rec.seq;
    }
    if last > applied && as_ != LoadAs::Reader {
        cps.snapshot().await;
    }
    Ok((cps, last))
}

impl CommitRecord {
    /// Its checkpoint updates, as [`Checkpoints`] applies them.
    pub fn update(&self) -> crate::checkpoint::Update<'_> {
        crate::checkpoint::Update {
            seq: self.seq,
            committed_at: &self.committed_at,
            checkpoints: &self.checkpoints,
        }
    }
}

/// Every commit after `after_seq`, in order.
///
/// # Errors
/// [`Error::Datastore`] or [`Error::Json`] for an unreadable record.
pub async fn read_commits(ds: &Datastore, after_seq: u64) -> Result<Vec<CommitRecord>> {
    use futures::StreamExt;
    let after = (after_seq > 0).then(|| layout::commit_key(after_seq));
    let entries = ds.list_after(layout::COMMITS, after.as_deref()).await?;
    let keys: Vec<String> = entries
        .into_iter()
        .filter(|e| layout::commit_seq(&e.key).is_some_and(|s| s > after_seq))
        .map(|e| e.key)
        .collect();
    // Fetched 16 at a time, kept in order: a worker catching up after a lost race
    // waits one round trip, not one per record.
    let fetched: Vec<Result<CommitRecord>> = futures::stream::iter(keys)
        .map(|k| async move {
            ds.get_json::<CommitRecord>(&k)
                .await?
                .ok_or_else(|| Error::data(&k, "commit disappeared while reading"))
        })
        .buffered(16)
        .collect()
        .await;
    fetched.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> CommitMeta {
        CommitMeta {
            anchovy_id: "a".into(),
            anchovy_user: "u".into(),
            session_id: "s".into(),
            batch_id: 1,
            tbl: None,
            worker: None,
            claim: None,
        }
    }

    /// Commits collected by `anchovy gc` behind a base: a writer that was behind them
    /// catches up through the base (its state is the base's, then the commits after
    /// it) and commits after the last one, never into a collected number; a start
    /// whose stored state is older than the base begins from it; the history keeps
    /// its origin.
    #[tokio::test]
    async fn writers_and_starts_continue_through_a_compaction_base() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_str().unwrap())
            .unwrap()
            .for_anchovy("u", "a");
        let (c, last) = load_checkpoints(&ds, LoadAs::SoleWriter).await.unwrap();
        let a = Committer::new(ds.clone(), Arc::new(c), last);
        a.commit(&meta(), vec![], [("k".to_string(), Some(1.into()))].into())
            .await
            .unwrap();
        let origin0 = origin(&ds).await.unwrap().unwrap();
        // A second writer, which stays at commit 1 while the others go on.
        let (c, last) = load_checkpoints(&ds, LoadAs::Shared).await.unwrap();
        let behind = Committer::new(ds.clone(), Arc::new(c), last).shared();
        for i in 2..=5 {
            let mut cps: BTreeMap<String, Option<serde_json::Value>> =
                [("k".to_string(), Some(i.into()))].into();
            if i == 3 {
                cps.insert("gone".into(), Some(3.into()));
            }
            a.commit(&meta(), vec![], cps).await.unwrap();
        }
        // gc: commits 1..=4 collected behind a base holding the state after 4.
        let state4 = Checkpoints::empty(&ds);
        for r in read_commits(&ds, 0)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.seq <= 4)
        {
            state4.replay_state(r.update());
        }
        ds.put_json(
            layout::COMMITS_BASE,
            &Base {
                seq: 4,
                origin: origin0.clone(),
                collected_at: "2026-01-01T00:00:00Z".into(),
                entries: state4.entries(),
            },
        )
        .await
        .unwrap();
        for s in 1..=4 {
            ds.delete(&layout::commit_key(s)).await.unwrap();
        }
        assert_eq!(origin(&ds).await.unwrap().unwrap(), origin0);
        assert_eq!(behind.catch_up().await.unwrap(), 5);
        assert_eq!(behind.checkpoints().get("k"), Some(5.into()));
        assert_eq!(behind.checkpoints().get("gone"), Some(3.into()));
        let rec = behind
            .commit(&meta(), vec![], [("k".to_string(), Some(6.into()))].into())
            .await
            .unwrap();
        assert_eq!(rec.seq, 6);
        // A start from the mirrors alone (no snapshot, no marker): the base, then 5, 6.
        ds.delete(layout::CHECKPOINTS_STATE).await.unwrap();
        ds.delete(layout::CHECKPOINTS_APPLIED).await.unwrap();
        let (c, last) = load_checkpoints(&ds, LoadAs::SoleWriter).await.unwrap();
        assert_eq!(last, 6);
        assert_eq!(c.get("k"), Some(6.into()));
        assert_eq!(c.get("gone"), Some(3.into()));
    }

    /// Two processes of the same anchovy: each commit must directly follow the state its
    /// process knows, so the one that falls behind is fenced out instead of interleaving.
    #[tokio::test]
    async fn a_second_writer_of_the_same_anchovy_is_fenced_out() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_str().unwrap())
            .unwrap()
            .for_anchovy("u", "a");
        let (c1, last1) = load_checkpoints(&ds, LoadAs::SoleWriter).await.unwrap();
        let (c2, last2) = load_checkpoints(&ds, LoadAs::SoleWriter).await.unwrap();
        let a = Committer::new(ds.clone(), Arc::new(c1), last1);
        let b = Committer::new(ds.clone(), Arc::new(c2), last2);
        let r = a
            .commit(&meta(), vec![], [("k".to_string(), Some(1.into()))].into())
            .await
            .unwrap();
        assert_eq!(r.seq, 1);
        let e = b
            .commit(&meta(), vec![], [("k".to_string(), Some(2.into()))].into())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::CommitConflict { seq: 1, .. }), "{e}");
        assert!(
            e.to_string()
                .contains("another process is writing to this anchovy")
        );
        // Still fenced out on the next try: its view of the state is stale.
        assert!(b.commit(&meta(), vec![], BTreeMap::new()).await.is_err());
        // The first writer goes on; a fresh load sees its state.
        a.commit(&meta(), vec![], [("k".to_string(), Some(3.into()))].into())
            .await
            .unwrap();
        let (c3, last3) = load_checkpoints(&ds, LoadAs::SoleWriter).await.unwrap();
        assert_eq!(last3, 2);
        assert_eq!(c3.get("k"), Some(3.into()));
        let all = read_commits(&ds, 0).await.unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(read_commits(&ds, 1).await.unwrap().len(), 1);
    }

    /// A crash between a commit and its mirror writes: the next load replays the commit.
    #[tokio::test]
    async fn stale_mirrors_are_repaired_from_the_commit_record() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_str().unwrap()).unwrap();
        let (c, last) = load_checkpoints(&ds, LoadAs::SoleWriter).await.unwrap();
        let a = Committer::new(ds.clone(), Arc::new(c), last);
        a.commit(
            &meta(),
            vec![],
            [("x".to_string(), Some("one".into()))].into(),
        )
        .await
        .unwrap();
        a.commit(
            &meta(),
            vec![],
            [
                ("x".to_string(), Some("two".into())),
                ("y".to_string(), Some(1.into())),
            ]
            .into(),
        )
        .await
        .unwrap();
        // Simulate the crash: roll the mirrors and the marker back to commit 1.
        ds.put_json(
            &layout::checkpoint_key("x"),
            &crate::checkpoint::CheckpointEntry {
                key: "x".into(),
                value: "one".into(),
                commit: 1,
                updated_at: String::new(),
            },
        )
        .await
        .unwrap();
        ds.delete(&layout::checkpoint_key("y")).await.unwrap();
        ds.put(
            layout::CHECKPOINTS_APPLIED,
            Bytes::from_static(br#"{"seq":1}"#),
        )
        .await
        .unwrap();
        let (c, last) = load_checkpoints(&ds, LoadAs::SoleWriter).await.unwrap();
        assert_eq!(last, 2);
        assert_eq!(c.get("x"), Some("two".into()));
        assert_eq!(c.get("y"), Some(1.into()));
        // A deletion is a commit too.
        let b = Committer::new(ds.clone(), Arc::new(c), last);
        b.commit(&meta(), vec![], [("y".to_string(), None)].into())
            .await
            .unwrap();
        let (c, _) = load_checkpoints(&ds, LoadAs::SoleWriter).await.unwrap();
        assert_eq!(c.get("y"), None);
        assert_eq!(c.list("*").len(), 1);
    }

    /// A start reads the snapshot and only the commits after it: with the commits it
    /// covers, every per-key mirror and the mirrors' marker gone, the state is whole.
    /// The end of a session brings it up to the last commit; an unreadable snapshot
    /// falls back to the mirrors.
    #[tokio::test]
    async fn a_start_reads_the_snapshot_and_the_commits_after_it() {
        use crate::checkpoint::SNAPSHOT_EVERY;
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_str().unwrap()).unwrap();
        let (c, last) = load_checkpoints(&ds, LoadAs::SoleWriter).await.unwrap();
        let a = Committer::new(ds.clone(), Arc::new(c), last);
        let n = SNAPSHOT_EVERY + 8;
        for i in 1..=n {
            let key = format!("file{i}");
            a.commit(&meta(), vec![], [(key, Some(i.into()))].into())
                .await
                .unwrap();
        }
        // Remove everything a start must no longer need.
        for seq in 1..=SNAPSHOT_EVERY {
            ds.delete(&layout::commit_key(seq)).await.unwrap();
        }
        for i in 1..=n {
            ds.delete(&layout::checkpoint_key(&format!("file{i}")))
                .await
                .unwrap();
        }
        ds.delete(layout::CHECKPOINTS_APPLIED).await.unwrap();
        let (c, last) = load_checkpoints(&ds, LoadAs::SoleWriter).await.unwrap();
        assert_eq!(last, n);
        assert_eq!(c.list("*").len(), n as usize);
        assert_eq!(c.get("file1"), Some(1.into()));
        assert_eq!(c.get(&format!("file{n}")), Some(n.into()));
        // That load replayed the commits after the snapshot and rewrote it: now no
        // commit at all is needed.
        for seq in SNAPSHOT_EVERY + 1..=n {
            ds.delete(&layout::commit_key(seq)).await.unwrap();
        }
        let (c, last) = load_checkpoints(&ds, LoadAs::SoleWriter).await.unwrap();
        assert_eq!((last, c.list("*").len()), (n, n as usize));
        // A session's end writes it too.
        let b = Committer::new(ds.clone(), Arc::new(c), last);
        b.commit(&meta(), vec![], [("file1".to_string(), None)].into())
            .await
            .unwrap();
        b.checkpoints().snapshot().await;
        ds.delete(&layout::commit_key(n + 1)).await.unwrap();
        let (c, last) = load_checkpoints(&ds, LoadAs::SoleWriter).await.unwrap();
        assert_eq!((last, c.get("file1")), (n + 1, None));
        // An unreadable snapshot: the start falls back to the mirrors (the replays
        // above rewrote those of the last commits; the first ones were deleted).
        ds.put(layout::CHECKPOINTS_STATE, Bytes::from_static(b"{not json"))
            .await
            .unwrap();
        let (c, _) = load_checkpoints(&ds, LoadAs::SoleWriter).await.unwrap();
        assert_eq!(c.get("file1"), None);
        assert_eq!(c.get("file2"), None, "its mirror was deleted above");
        assert_eq!(c.get(&format!("file{n}")), Some(n.into()));
    }

    /// The prefix visit sees exactly the keys that start with the prefix, in key order,
    /// with their committed values: not a neighbour that sorts just before or after it
    /// (`a` itself, `a;`, `a:` vs `a;b`), and every key of a longer table name that
    /// extends it (the caller tells those apart).
    #[tokio::test]
    async fn the_prefix_visit_sees_the_keys_of_the_prefix_only() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_str().unwrap()).unwrap();
        let (c, last) = load_checkpoints(&ds, LoadAs::SoleWriter).await.unwrap();
        let a = Committer::new(ds.clone(), Arc::new(c), last);
        let keys = [
            "a", "a:", "a:x", "a:b:y", "a:z", "a;", "a;b", "a9", "`", "b:x",
        ];
        let cps: BTreeMap<String, Option<serde_json::Value>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), Some(i.into())))
            .collect();
        a.commit(&meta(), vec![], cps).await.unwrap();
        let mut seen = Vec::new();
        a.checkpoints()
            .for_each_with_prefix("a:", |k, v| seen.push((k.to_string(), v.clone())));
        let want: Vec<(String, serde_json::Value)> = ["a:", "a:b:y", "a:x", "a:z"]
            .iter()
            .map(|k| {
                let i = keys.iter().position(|x| x == k).unwrap();
                (k.to_string(), i.into())
            })
            .collect();
        assert_eq!(seen, want);
        let mut none = 0;
        a.checkpoints().for_each_with_prefix("c:", |_, _| none += 1);
        assert_eq!(none, 0);
    }
}
