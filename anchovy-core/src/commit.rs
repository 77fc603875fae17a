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
}

/// Serializes commits of one process to one anchovy's area.
pub struct Committer {
    ds: Datastore,
    next: tokio::sync::Mutex<u64>,
    checkpoints: Arc<Checkpoints>,
}

impl Committer {
    /// A committer that continues after `last_seq` (from [`Checkpoints::load`]).
    pub fn new(ds: Datastore, checkpoints: Arc<Checkpoints>, last_seq: u64) -> Committer {
        Committer {
            ds,
            next: tokio::sync::Mutex::new(last_seq + 1),
            checkpoints,
        }
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
        let record = CommitRecord {
            seq: *next,
            anchovy_id: meta.anchovy_id.clone(),
            anchovy_user: meta.anchovy_user.clone(),
            session_id: meta.session_id.clone(),
            batch_id: meta.batch_id,
            tbl: meta.tbl.clone(),
            committed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            files,
            checkpoints,
        };
        let text = serde_json::to_string(&record).map_err(|e| Error::json("commit record", e))?;
        let text = crate::secret::redact(&text).into_owned();
        if !self
            .ds
            .create(&layout::commit_key(record.seq), Bytes::from(text))
            .await?
        {
            return Err(Error::CommitConflict {
                seq: record.seq,
                store: self.ds.location(),
            });
        }
        *next += 1;
        crate::failpoint::hit("commit.after")?;
        self.checkpoints.apply(&record).await;
        Ok(record)
    }
}

/// Every commit after `after_seq`, in order.
///
/// # Errors
/// [`Error::Datastore`] or [`Error::Json`] for an unreadable record.
pub async fn read_commits(ds: &Datastore, after_seq: u64) -> Result<Vec<CommitRecord>> {
    let after = (after_seq > 0).then(|| layout::commit_key(after_seq));
    let entries = ds.list_after(layout::COMMITS, after.as_deref()).await?;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Some(seq) = layout::commit_seq(&e.key) else {
            continue;
        };
        if seq <= after_seq {
            continue;
        }
        let rec: CommitRecord = ds
            .get_json(&e.key)
            .await?
            .ok_or_else(|| Error::data(&e.key, "commit disappeared while reading"))?;
        out.push(rec);
    }
    Ok(out)
}
