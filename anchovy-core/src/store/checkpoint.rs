//! Checkpoints: small JSON values by key that let an operator resume where it stopped.
//!
//! The truth is the commit record: a checkpoint update is committed in the same
//! `$commits/<seq>.json` as the data it covers ([`crate::commit`]), so a checkpoint is
//! never ahead of durable data. `$checkpoints/<key>.json` are mirrors for fast startup
//! and for `anchovy checkpoints`; `$checkpoints/_applied` names the last commit the
//! mirrors fully reflect. [`crate::commit::load_checkpoints`] reads the mirrors
//! ([`Checkpoints::load_mirrors`]) and replays any later commits into them (a crash
//! between a commit and its mirror writes loses nothing). This module knows nothing of
//! commit records: a commit hands its updates over as an [`Update`].
//!
//! Operator code reads checkpoints with [`Checkpoints::get`] (through the task context)
//! and sets them in-band from a source with `Emitter::checkpoint`, so the update reaches
//! the commit together with the rows emitted before it.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// The committed checkpoint state of one anchovy.
pub struct Checkpoints {
    ds: Datastore,
    state: RwLock<BTreeMap<String, CheckpointEntry>>,
    /// False once a mirror write failed in this process: `_applied` then stays where
    /// it was, so the next start replays the commits whose mirrors may be stale.
    mirrors_ok: AtomicBool,
}

impl Checkpoints {
    /// The state as the mirrors hold it, and the last commit they fully reflect
    /// (`$checkpoints/_applied`); commits after it are replayed by the caller
    /// ([`crate::commit::load_checkpoints`]).
    ///
    /// # Errors
    /// [`crate::Error::Datastore`] when the mirrors cannot be read.
    pub async fn load_mirrors(ds: &Datastore) -> Result<(Checkpoints, u64)> {
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
        let mut state: BTreeMap<String, CheckpointEntry> = loaded
            .into_iter()
            .flatten()
            .map(|e| (e.key.clone(), e))
            .collect();
        let applied = ds
            .get_json::<Applied>(layout::CHECKPOINTS_APPLIED)
            .await?
            .map(|a| a.seq)
            .unwrap_or(0);
        let this = Checkpoints {
            ds: ds.clone(),
            state: RwLock::new(std::mem::take(&mut state)),
            mirrors_ok: AtomicBool::new(true),
        };
        Ok((this, applied))
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

    /// Applies a commit's checkpoint updates to the state and the mirrors.
    /// Mirror failures are logged, not returned: the commit is already durable and the
    /// next start repairs the mirrors from it.
    pub(crate) async fn apply(&self, rec: Update<'_>) {
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
        if let Err(e) = self.write_mirrors(rec).await {
            self.mirrors_ok.store(false, Ordering::SeqCst);
            tracing::warn!(error = %e.chain(), seq = rec.seq, "checkpoint mirrors not updated; the next start replays the commit");
        }
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
