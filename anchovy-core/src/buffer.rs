//! The default sink: writes a table task's batches into data files and commits them.
//!
//! One [`DatastoreSink`] serves one table task (all tables that task emits). Files
//! rotate when they reach `file_max_bytes` of NDJSON. Commits happen only at checkpoint
//! markers (then at most every `commit_interval`, so a chatty source does not produce a
//! commit per page) and at the end of the task: a commit therefore never contains rows
//! that are not covered by the checkpoints it carries. If the task fails, open files
//! are abandoned and finished-but-uncommitted files stay orphans that no reader lists.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use crate::commit::Committer;
use crate::context::TaskCtx;
use crate::data::{DataFileWriter, FileEntry};
use crate::datastore::layout;
use crate::error::Result;
use crate::row::Batch;
use crate::stream::Terminal;
use crate::tbl::{ColType, TblSet};

/// Per-table totals of one task.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TableStats {
    /// Rows committed.
    pub rows: u64,
    /// Compressed bytes committed.
    pub bytes: u64,
    /// Files committed.
    pub files: u64,
    /// Column types seen.
    #[serde(skip)]
    pub columns: BTreeMap<String, ColType>,
}

/// The datastore writer at the end of every pipeline.
pub struct DatastoreSink {
    ctx: Arc<TaskCtx>,
    committer: Arc<Committer>,
    open: BTreeMap<Arc<str>, DataFileWriter>,
    done: Vec<FileEntry>,
    pending: BTreeMap<String, Option<serde_json::Value>>,
    last_commit: Instant,
    /// Committed totals by table.
    pub stats: BTreeMap<String, TableStats>,
    /// Commits made.
    pub commits: u64,
    /// Rows dropped because their table is disabled.
    pub dropped_rows: u64,
}

impl DatastoreSink {
    pub(crate) fn new(ctx: Arc<TaskCtx>) -> DatastoreSink {
        DatastoreSink {
            committer: ctx.session.committer.clone(),
            ctx,
            open: BTreeMap::new(),
            done: Vec::new(),
            pending: BTreeMap::new(),
            last_commit: Instant::now(),
            stats: BTreeMap::new(),
            commits: 0,
            dropped_rows: 0,
        }
    }

    async fn close_all(&mut self) -> Result<()> {
        let open = std::mem::take(&mut self.open);
        for (_, w) in open {
            crate::failpoint::hit("datafile.finish")?;
            self.done.push(w.finish().await?);
        }
        Ok(())
    }

    /// Finishes open files and commits them with the pending checkpoints.
    pub(crate) async fn commit(&mut self) -> Result<()> {
        self.close_all().await?;
        if self.done.is_empty() && self.pending.is_empty() {
            return Ok(());
        }
        let files = std::mem::take(&mut self.done);
        let pending = std::mem::take(&mut self.pending);
        let rec = self
            .committer
            .commit(&self.ctx.commit_meta(), files, pending)
            .await?;
        for f in &rec.files {
            let s = self.stats.entry(f.tbl.clone()).or_default();
            s.rows += f.rows;
            s.bytes += f.bytes;
            s.files += 1;
            for (c, t) in &f.columns {
                let e = s.columns.entry(c.clone()).or_insert(*t);
                *e = e.widen(*t);
            }
        }
        self.commits += 1;
        self.last_commit = Instant::now();
        tracing::debug!(seq = rec.seq, files = rec.files.len(), table = %self.ctx.tbl_name(), "committed");
        Ok(())
    }

    /// Abandons open files (the task failed): nothing uncommitted becomes visible.
    pub(crate) async fn abort(&mut self) {
        for (_, w) in std::mem::take(&mut self.open) {
            w.abort().await;
        }
        self.done.clear();
        self.pending.clear();
    }
}

#[async_trait]
impl Terminal for DatastoreSink {
    async fn write(&mut self, batch: Batch) -> Result<()> {
        let s = &self.ctx.session.settings;
        if *batch.table != *self.ctx.tbl_name()
            && !TblSet::allows(&batch.table, &s.enabled, &s.disabled)
        {
            self.dropped_rows += batch.rows.len() as u64;
            return Ok(());
        }
        let max = s.file_max_bytes;
        if !self.open.contains_key(&batch.table) {
            let name = format!(
                "{}.{:06}.{}.ndjson.gz",
                self.ctx.session.session_id,
                self.ctx.batch_id,
                uuid::Uuid::now_v7().simple()
            );
            let key = layout::data_key(&batch.table, &name);
            let w = DataFileWriter::create(&self.ctx.session.store, batch.table.clone(), key);
            self.open.insert(batch.table.clone(), w);
        }
        let w = self
            .open
            .get_mut(&batch.table)
            .unwrap_or_else(|| unreachable!());
        let before = w.raw_bytes();
        w.write(&batch).await?;
        self.ctx.session.progress(
            self.ctx.tbl_name(),
            batch.rows.len() as u64,
            w.raw_bytes() - before,
            false,
        );
        if w.raw_bytes() >= max
            && let Some(w) = self.open.remove(&batch.table)
        {
            self.done.push(w.finish().await?);
        }
        Ok(())
    }

    async fn checkpoint(
        &mut self,
        updates: BTreeMap<String, Option<serde_json::Value>>,
    ) -> Result<()> {
        self.pending.extend(updates);
        if self.last_commit.elapsed() >= self.ctx.session.settings.commit_interval {
            self.commit().await?;
        }
        Ok(())
    }
}
