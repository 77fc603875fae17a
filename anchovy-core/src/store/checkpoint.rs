//! Checkpoints: small JSON values by key that let an operator resume where it stopped.
//!
//! The truth is the commit record: a checkpoint update is committed in the same
//! `$commits/<seq>.json` as the data it covers ([`crate::commit`]), so a checkpoint is
//! never ahead of durable data. Two kinds of copies make a start fast:
//! - `$checkpoints/_state`, every checkpoint in one object with the last commit it
//!   reflects, rewritten every [`SNAPSHOT_EVERY`] commits and at the end of a session
//!   ([`Checkpoints::snapshot`]). A start reads it and the commits after it: a
//!   bounded number of requests however many files an anchovy has read in its life.
//! - `$checkpoints/<key>.json`, one mirror per key, for `anchovy checkpoints` and for
//!   datastores written before the snapshot existed; `$checkpoints/_applied` names the
//!   last commit the mirrors fully reflect.
//!
//! [`crate::commit::load_checkpoints`] reads the snapshot (or, without one, the
//! mirrors: [`Checkpoints::load`]) and replays every later commit into it, so a copy
//! that is behind (a crash between a commit and its copies) loses nothing. This module knows nothing of
//! commit records: a commit hands its updates over as an [`Update`].
//!
//! Operator code reads checkpoints with [`Checkpoints::get`] (through the task context)
//! and sets them in-band from a source with `Emitter::checkpoint`, so the update reaches
//! the commit together with the rows emitted before it.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::datastore::{Datastore, layout};
use crate::error::Result;

/// A commit's checkpoint updates, as [`Checkpoints`] applies them.
#[derive(Debug, Clone, Copy)]
pub struct Update<'a> {
    /// The commit's sequence number.
    pub seq: u64,
    /// When it was committed (RFC 3339).
    pub committed_at: &'a str,
    /// Key -> new value, or `None` to delete.
    pub checkpoints: &'a BTreeMap<String, Option<serde_json::Value>>,
}

/// One checkpoint as mirrored in `$checkpoints/<key>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointEntry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: serde_json::Value,
    /// The commit that set it.
    pub commit: u64,
    /// When it was committed.
    pub updated_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Applied {
    seq: u64,
}

/// `$checkpoints/_state`: the whole state after commit `seq`.
/// Read as this; written by [`SnapshotOf`] (the same fields, borrowed from the state).
#[derive(Debug, Deserialize)]
struct Snapshot {
    seq: u64,
    entries: Vec<CheckpointEntry>,
}

/// A [`Snapshot`] written straight from the state.
struct SnapshotOf<'a> {
    seq: u64,
    state: &'a BTreeMap<String, CheckpointEntry>,
}

impl Serialize for SnapshotOf<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Entries<'a>(&'a BTreeMap<String, CheckpointEntry>);
        impl Serialize for Entries<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.collect_seq(self.0.values())
            }
        }
        let mut st = s.serialize_struct("Snapshot", 2)?;
        st.serialize_field("seq", &self.seq)?;
        st.serialize_field("entries", &Entries(self.state))?;
        st.end()
    }
}

/// Commits between two rewrites of `$checkpoints/_state` at most: a start after a
/// crash replays fewer than this many commits beyond it.
pub const SNAPSHOT_EVERY: u64 = 32;

/// The committed checkpoint state of one anchovy.
pub struct Checkpoints {
    ds: Datastore,
    state: RwLock<BTreeMap<String, CheckpointEntry>>,
    /// False once a mirror write failed in this process: `_applied` then stays where
    /// it was, so the next start replays the commits whose mirrors may be stale.
    mirrors_ok: AtomicBool,
    /// The last commit applied to `state`.
    applied: AtomicU64,
    /// The commit the stored snapshot reflects.
    snapshot: AtomicU64,
}

impl Checkpoints {
    /// The stored state and the last commit it reflects: the snapshot
    /// (`$checkpoints/_state`, one request), or without a readable one the mirrors;
    /// commits after it are replayed by the caller ([`crate::commit::load_checkpoints`]).
    ///
    /// # Errors
    /// [`crate::Error::Datastore`] when the snapshot or the mirrors cannot be read.
    pub async fn load(ds: &Datastore) -> Result<(Checkpoints, u64)> {
        if let Some(bytes) = ds.get(layout::CHECKPOINTS_STATE).await? {
            match serde_json::from_slice::<Snapshot>(&bytes) {
                Ok(s) => {
                    let state = s.entries.into_iter().map(|e| (e.key.clone(), e)).collect();
                    return Ok((Checkpoints::new(ds, state, s.seq), s.seq));
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "{} is unreadable; reading the checkpoint mirrors instead",
                    layout::CHECKPOINTS_STATE
                ),
            }
        }
        Checkpoints::load_mirrors(ds).await
    }

    fn new(ds: &Datastore, state: BTreeMap<String, CheckpointEntry>, seq: u64) -> Checkpoints {
        Checkpoints {
            ds: ds.clone(),
            state: RwLock::new(state),
            mirrors_ok: AtomicBool::new(true),
            applied: AtomicU64::new(seq),
            snapshot: AtomicU64::new(seq),
        }
    }

    /// The state as the per-key mirrors hold it, and the last commit they fully
    /// reflect (`$checkpoints/_applied`).
    ///
    /// `_applied` is read before the mirrors are listed: a mirror written meanwhile is
    /// newer than the marker says, which the replay of the commits after the marker
    /// makes right, while a marker read after the listing could name a commit whose
    /// mirror the listing missed, and that commit would never be replayed.
    async fn load_mirrors(ds: &Datastore) -> Result<(Checkpoints, u64)> {
        let applied = ds
            .get_json::<Applied>(layout::CHECKPOINTS_APPLIED)
            .await?
            .map(|a| a.seq)
            .unwrap_or(0);
        let entries = ds.list(layout::CHECKPOINTS).await?;
        let keys: Vec<String> = entries
            .into_iter()
            .map(|e| e.key)
            .filter(|k| k.ends_with(".json"))
            .collect();
        let loaded: Vec<Option<CheckpointEntry>> = futures::stream::iter(keys)
            .map(|k| async move { ds.get_json::<CheckpointEntry>(&k).await })
            .buffer_unordered(32)
            .try_collect()
            .await?;
        let state: BTreeMap<String, CheckpointEntry> = loaded
            .into_iter()
            .flatten()
            .map(|e| (e.key.clone(), e))
            .collect();
        let this = Checkpoints::new(ds, state, applied);
        // No snapshot yet: the first one is written at the next commit.
        this.snapshot.store(0, Ordering::SeqCst);
        Ok((this, applied))
    }

    /// An empty state before any commit (what a fold of the commit records starts
    /// from).
    pub(crate) fn empty(ds: &Datastore) -> Checkpoints {
        Checkpoints::new(ds, BTreeMap::new(), 0)
    }

    /// Every entry, in key order (the state as a compaction base keeps it).
    pub(crate) fn entries(&self) -> Vec<CheckpointEntry> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Replaces the state with a compaction base's, the state after commit `seq`
    /// ([`crate::commit::Base`]): for a start or a catch-up that finds the commits it
    /// would replay collected by `anchovy gc`. The mirrors are not rewritten and
    /// `_applied` is no longer advanced by this process: it stays below the base, so
    /// a start from the mirrors adopts the base again.
    pub(crate) fn adopt(&self, entries: Vec<CheckpointEntry>, seq: u64) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) =
            entries.into_iter().map(|e| (e.key.clone(), e)).collect();
        self.applied.store(seq, Ordering::SeqCst);
        self.mirrors_ok.store(false, Ordering::SeqCst);
    }

    /// Rewrites `$checkpoints/_state` when commits were applied since it was written.
    /// A failure is logged, not returned: the snapshot is only a faster start (the
    /// next start replays the commits after whichever snapshot it finds).
    pub async fn snapshot(&self) {
        let seq = self.applied.load(Ordering::SeqCst);
        if seq == 0 || seq == self.snapshot.load(Ordering::SeqCst) {
            return;
        }
        // Written from the state itself (no copy of its entries), compact.
        let text = {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            serde_json::to_vec(&SnapshotOf { seq, state: &st })
        };
        let written = match text {
            Ok(t) => self.ds.put(layout::CHECKPOINTS_STATE, Bytes::from(t)).await,
            Err(e) => Err(crate::Error::json(layout::CHECKPOINTS_STATE, e)),
        };
        match written {
            Ok(()) => self.snapshot.store(seq, Ordering::SeqCst),
            Err(e) => {
                tracing::warn!(error = %e.chain(), seq, "checkpoint snapshot not written; the next start replays more commits")
            }
        }
    }

    /// The committed value of a key.
    pub fn get(&self, key: &str) -> Option<serde_json::Value> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|e| e.value.clone())
    }

    /// Entries whose key matches a wildcard (`*` for all), sorted by key.
    pub fn list(&self, pattern: &str) -> Vec<CheckpointEntry> {
        let w = wildmatch::WildMatch::new(pattern);
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|e| w.matches(&e.key))
            .cloned()
            .collect()
    }

    /// Calls `f` with each entry whose key starts with `prefix`, in key order (a range
    /// of the state, not a scan of it), without copying any: a source that looks at
    /// every checkpoint of its table each run allocates for the ones it acts on only.
    /// The state is read-locked meanwhile, so `f` must not call back into it.
    pub fn for_each_with_prefix(&self, prefix: &str, mut f: impl FnMut(&str, &serde_json::Value)) {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        for (k, e) in st
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            f(k, &e.value);
        }
    }

    /// Applies a new commit's checkpoint updates ([`Checkpoints::replay`]) and
    /// rewrites the snapshot when [`SNAPSHOT_EVERY`] commits passed since the last one.
    pub(crate) async fn apply(&self, rec: Update<'_>) {
        self.replay(rec).await;
        if rec.seq >= self.snapshot.load(Ordering::SeqCst) + SNAPSHOT_EVERY {
            self.snapshot().await;
        }
    }

    /// Several writers commit to this anchovy ([`crate::worker`]): `_applied` is no
    /// longer written, because one writer's mirrors being current says nothing of the
    /// others'. The mirrors stay for people; a start reads the snapshot (always the
    /// state of a whole prefix of commits) or, without one, replays from the last
    /// `_applied` a single writer left.
    pub(crate) fn share(&self) {
        self.mirrors_ok.store(false, Ordering::SeqCst);
    }

    /// Applies a commit's checkpoint updates to the state and the mirrors.
    /// Mirror failures are logged, not returned: the commit is already durable and the
    /// next start repairs the mirrors from it.
    pub(crate) async fn replay(&self, rec: Update<'_>) {
        self.replay_state(rec);
        if let Err(e) = self.write_mirrors(rec).await {
            self.mirrors_ok.store(false, Ordering::SeqCst);
            tracing::warn!(error = %e.chain(), seq = rec.seq, "checkpoint mirrors not updated; the next start replays the commit");
        }
    }

    /// Applies a commit's checkpoint updates to the state only: another writer's commit,
    /// whose mirrors are that writer's to write.
    pub(crate) fn replay_state(&self, rec: Update<'_>) {
        {
            let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
            for (k, v) in rec.checkpoints {
                match v {
                    Some(v) => {
                        st.insert(
                            k.clone(),
                            CheckpointEntry {
                                key: k.clone(),
                                value: v.clone(),
                                commit: rec.seq,
                                updated_at: rec.committed_at.to_string(),
                            },
                        );
                    }
                    None => {
                        st.remove(k);
                    }
                }
            }
        }
        self.applied.store(rec.seq, Ordering::SeqCst);
    }

    async fn write_mirrors(&self, rec: Update<'_>) -> Result<()> {
        let entries: Vec<(String, Option<CheckpointEntry>)> = {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            rec.checkpoints
                .keys()
                .map(|k| (k.clone(), st.get(k).cloned()))
                .collect()
        };
        futures::stream::iter(entries)
            .map(|(k, e)| async move {
                match e {
                    Some(e) => self.ds.put_json(&layout::checkpoint_key(&k), &e).await,
                    None => self.ds.delete(&layout::checkpoint_key(&k)).await,
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        crate::failpoint::hit("checkpoint.mirrors")?;
        if self.mirrors_ok.load(Ordering::SeqCst) {
            let text = serde_json::to_string(&Applied { seq: rec.seq }).unwrap_or_default();
            self.ds
                .put(layout::CHECKPOINTS_APPLIED, Bytes::from(text))
                .await?;
        }
        Ok(())
    }
}
