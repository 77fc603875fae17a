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
use crate::data::{FileEntry, FileWriter};
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
    /// Bytes committed, as stored (compressed): `bytes_written` in the task log.
    #[serde(rename = "bytes_written")]
    pub bytes: u64,
    /// The committed rows' bytes before compression: `raw_bytes_written`.
    #[serde(rename = "raw_bytes_written")]
    pub raw_bytes: u64,
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
    open: BTreeMap<Arc<str>, Box<dyn FileWriter>>,
    done: Vec<FileEntry>,
    pending: BTreeMap<String, Option<serde_json::Value>>,
    last_commit: Instant,
    /// Rows this sink itself rejects (NULL keys), created on the first.
    rejects: Option<crate::reject::Rejects>,
    /// Committed totals by table.
    pub stats: BTreeMap<String, TableStats>,
    /// Commits made.
    pub commits: u64,
    /// Rows dropped because their table is disabled.
    pub dropped_rows: u64,
    /// Rows of the task's own table seen so far (for messages).
    seen_rows: u64,
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
            rejects: None,
            stats: BTreeMap::new(),
            commits: 0,
            dropped_rows: 0,
            seen_rows: 0,
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
        self.check_reject_share(false)?;
        self.close_all().await?;
        if self.done.is_empty() && self.pending.is_empty() {
            return Ok(());
        }
        let files = std::mem::take(&mut self.done)
            .into_iter()
            .map(crate::data::to_publish)
            .collect();
        let pending = std::mem::take(&mut self.pending);
        let rec = self
            .committer
            .commit(&self.ctx.commit_meta(), files, pending)
            .await?;
        // `original` files become visible to the original's uploader only now; a
        // failure leaves them to the next start ([`crate::data::publish_staged`]).
        if let Err(e) = crate::data::publish(&self.ctx.session.store, &rec.files).await {
            tracing::warn!(error = %e.chain(), "cannot publish data files under the original's names yet; the next start does");
        }
        for f in &rec.files {
            let s = self.stats.entry(f.tbl.clone()).or_default();
            s.rows += f.rows;
            s.bytes += f.bytes;
            s.raw_bytes += f.raw_bytes;
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

    /// Every row of the task's table has a value in each `unique_by` column: a NULL
    /// key cannot be merged (there is no row it is the same as). Under the table's
    /// `on_bad_record: fail` (default) such a row fails the task before anything of
    /// the run is committed, instead of failing or vanishing in the uploader later;
    /// under `skip` or `quarantine` it is taken out of the batch and rejected (the
    /// quarantined ones go to the table's rejects, in the same commit).
    async fn check_keys(&mut self, batch: &mut Batch) -> Result<()> {
        let keys = &self.ctx.tbl().unique_by.0;
        if keys.is_empty() {
            return Ok(());
        }
        let idx: Vec<(usize, &String)> = keys
            .iter()
            .filter_map(|k| batch.schema.index_of(k).map(|i| (i, k)))
            .collect();
        // A key column the batch lacks is NULL in every row (decided once per batch).
        let absent = keys.iter().find(|k| !idx.iter().any(|(_, i)| i == k));
        let mut bad: Vec<(usize, String)> = Vec::new();
        for (n, row) in batch.rows.iter().enumerate() {
            let missing = absent.or_else(|| {
                idx.iter()
                    .find(|(i, _)| matches!(row.get(*i), None | Some(crate::Value::Null)))
                    .map(|(_, k)| *k)
            });
            if let Some(k) = missing {
                bad.push((n, k.clone()));
            }
        }
        if bad.is_empty() {
            return Ok(());
        }
        if self.rejects.is_none() {
            self.rejects = Some(self.ctx.rejects()?);
        }
        let rejects = self.rejects.as_mut().unwrap_or_else(|| unreachable!());
        let at_of = |row: &crate::row::Row| {
            ["_file", "_line"]
                .iter()
                .filter_map(|c| batch.schema.index_of(c).map(|i| row[i].text().into_owned()))
                .collect::<Vec<_>>()
        };
        for (n, k) in &bad {
            let row = &batch.rows[*n];
            let at = at_of(row);
            let mut raw = String::new();
            crate::row::encode_row_into(&batch.schema, row, &mut raw);
            let raw = raw.trim_end().to_string();
            let (source, line) = match at.as_slice() {
                [f, l] => (f.clone(), l.parse().unwrap_or(0)),
                _ => (
                    format!("row {} of this run", self.seen_rows + *n as u64 + 1),
                    0,
                ),
            };
            let reason = format!(
                "no value in unique_by column `{k}`; a row without its key cannot be merged"
            );
            if let Err((_, why)) = rejects.reject(crate::reject::Reject {
                source: &source,
                line,
                reason: reason.clone(),
                raw,
                header: None,
                format: crate::reject::ROW_FORMAT,
            }) {
                let at = if at.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", at.join(":"))
                };
                let why = if why == reason {
                    format!(
                        "row {} of this run{at} has no value in unique_by column `{k}`; a row without its key cannot be merged, so nothing of this run was committed. Give the row a key in the source, take `{k}` out of unique_by, or set `on_bad_record: quarantine`",
                        self.seen_rows + *n as u64 + 1
                    )
                } else {
                    why
                };
                return Err(crate::Error::data(format!("table {}", batch.table), why));
            }
        }
        let drop: std::collections::HashSet<usize> = bad.iter().map(|b| b.0).collect();
        let rows = std::mem::take(&mut batch.rows);
        batch.rows = rows
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !drop.contains(i))
            .map(|(_, r)| r)
            .collect();
        if let Some(b) = self.rejects.as_mut().and_then(|r| r.take_batch()) {
            self.write_file(b).await?;
        }
        Ok(())
    }

    /// Appends a batch to its table's open data file (rotating at `file_max_bytes`).
    /// A table's rejects ([`crate::reject`]) go under `$rejects/<table>/`.
    async fn write_file(&mut self, batch: Batch) -> Result<()> {
        if batch.rows.is_empty() {
            return Ok(());
        }
        let max = self.ctx.session.settings.file_max_bytes;
        // A file whose schema cannot take this batch (a new column, a value its
        // column's type cannot hold exactly) is finished; the batch starts the next.
        if self.open.get(&batch.table).is_some_and(|w| !w.fits(&batch))
            && let Some(w) = self.open.remove(&batch.table)
        {
            self.done.push(w.finish().await?);
        }
        if !self.open.contains_key(&batch.table) {
            let rejects = crate::reject::rejected_table(&batch.table);
            // Rejects are always NDJSON: their raw text and reasons are what matters.
            let format = match rejects {
                Some(_) => crate::data::DataFormat::NdjsonGz,
                None => self.ctx.session.settings.data_buffer_cls,
            };
            let name = format!(
                "{}.{:06}.{}.{}",
                self.ctx.session.session_id,
                self.ctx.batch_id,
                uuid::Uuid::now_v7().simple(),
                format.name()
            );
            let key = match rejects {
                Some(owner) => layout::rejects_key(owner, &name),
                // The original's name, published only after the commit.
                None if format == crate::data::DataFormat::Original => {
                    crate::data::original_key(&self.ctx.session.store, &batch.table).await?
                }
                None => layout::data_key(&batch.table, &name),
            };
            let columns = match rejects {
                Some(_) => Default::default(),
                None => self
                    .ctx
                    .tbls
                    .get(&batch.table)
                    .map(|t| t.columns.clone())
                    .unwrap_or_default(),
            };
            let w = format.create(&self.ctx.session.store, batch.table.clone(), key, &columns);
            self.open.insert(batch.table.clone(), w);
        }
        let w = self
            .open
            .get_mut(&batch.table)
            .unwrap_or_else(|| unreachable!());
        let before = w.raw_bytes();
        w.write(&batch).await?;
        if crate::reject::rejected_table(&batch.table).is_none() {
            self.ctx.session.progress(
                self.ctx.tbl_name(),
                batch.rows.len() as u64,
                w.raw_bytes() - before,
                false,
            );
        }
        if w.raw_bytes() >= max
            && let Some(w) = self.open.remove(&batch.table)
        {
            self.done.push(w.finish().await?);
        }
        Ok(())
    }

    /// Fails the task when its readers rejected more than `max_rejects` allows (a
    /// share is judged once 100 records are read, and on any number at the end).
    pub(crate) fn check_reject_share(&self, done: bool) -> Result<()> {
        let rejected = self.ctx.rejected();
        if rejected == 0 {
            return Ok(());
        }
        let policy = crate::reject::RejectPolicy::of(self.ctx.tbl())?;
        let read = self.seen_rows + rejected;
        if policy.over(rejected, read, done) {
            return Err(crate::Error::data(
                format!("table {}", self.ctx.tbl_name()),
                format!(
                    "{rejected} of {read} records read were rejected, over max_rejects {}: the data looks mostly bad, so the table fails and nothing more of this run is committed (fix the source or the table's options, or raise max_rejects)",
                    policy.limit_text()
                ),
            ));
        }
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
        if let Some(owner) = crate::reject::rejected_table(&batch.table) {
            if owner != self.ctx.tbl_name() && !TblSet::allows(owner, &s.enabled, &s.disabled) {
                self.dropped_rows += batch.rows.len() as u64;
                return Ok(());
            }
            return self.write_file(batch).await;
        }
        if *batch.table != *self.ctx.tbl_name()
            && !TblSet::allows(&batch.table, &s.enabled, &s.disabled)
        {
            self.dropped_rows += batch.rows.len() as u64;
            return Ok(());
        }
        if batch.schema.index_of(crate::row::TYPES_FIELD).is_some() {
            return Err(crate::Error::data(
                format!("table {}", batch.table),
                format!(
                    "the source has a column `{0}`, a name the data files reserve for type annotations; nothing was committed. Rename it (for CSV tables: `rename: {{{0}: types}}` under tbls.{1})",
                    crate::row::TYPES_FIELD,
                    batch.table
                ),
            ));
        }
        if *batch.table == *self.ctx.tbl_name() {
            let mut batch = batch;
            self.check_keys(&mut batch).await?;
            self.seen_rows += batch.rows.len() as u64;
            return self.write_file(batch).await;
        }
        self.write_file(batch).await
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
