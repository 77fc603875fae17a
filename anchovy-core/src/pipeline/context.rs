//! Context: what operator code can see while it runs.
//!
//! [`SessionCtx`] lives for the whole process (id, user, settings, connections, the
//! datastore, committed checkpoints). [`TaskCtx`] lives for one task (STARTUP, XOPEN,
//! a TBL task, ...): it knows its batch, its table (for TBL tasks), the active tables,
//! and collects the `data` object of the task log.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::commit::{CommitMeta, Committer};
use crate::config::Settings;
use crate::connection::{Connection, Connections};
use crate::datastore::Datastore;
use crate::error::{Error, Result};
use crate::task::TaskType;
use crate::tbl::{Tbl, TblSet};

/// Whether an operator downloads into the datastore or uploads out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorKind {
    /// Source system -> datastore.
    Downloader,
    /// Datastore -> target system.
    Uploader,
}

/// Process-wide context of one anchovy run.
pub struct SessionCtx {
    /// Resolved settings.
    pub settings: Settings,
    /// The operator's registered name.
    pub operator: String,
    /// Downloader or uploader.
    pub kind: OperatorKind,
    /// The session id (a UTC timestamp, `20261123T143909.123Z`).
    pub session_id: String,
    /// Connections from the environment.
    pub connections: Connections,
    /// The whole datastore (other anchovies' areas are reachable for uploaders).
    pub datastore: Datastore,
    /// This anchovy's area: `<datastore>/<user>/<id>`.
    pub store: Datastore,
    /// Where table metadata (`$tables`) lives: the datastore, or the root that
    /// `tbl_store_cls` names.
    pub tbl_root: Datastore,
    /// Tables from the config document (before discovery and filtering).
    pub config_tbls: TblSet,
    pub(crate) committer: Arc<Committer>,
    /// The run's budget (`max_duration`, `max_rows`, `max_bytes`).
    pub budget: Budget,
    /// This process as a worker (`--workers`), or `None` for a single-process run.
    pub worker: Option<crate::worker::Worker>,
    /// The run's metrics (served by a service, written to `metrics_file`).
    pub metrics: crate::metrics::Metrics,
    /// Where progress goes (the CLI draws bars on a terminal); `None` when nobody looks.
    pub progress: std::sync::OnceLock<Arc<dyn Progress>>,
    /// `anchovy migrate`: an uploader's table tasks take over the positions the original
    /// tool's uploader reached instead of loading ([`crate::destination::Migrate`]).
    pub migrate: std::sync::OnceLock<crate::destination::Migrate>,
}

/// Progress of table tasks, for a display. Called often: implementations must be cheap.
pub trait Progress: Send + Sync {
    /// A table task started.
    fn start(&self, table: &str);
    /// `rows` and `bytes` more moved for `table` (and a file, when `file`).
    fn advance(&self, table: &str, rows: u64, bytes: u64, file: bool);
    /// The table task ended.
    fn finish(&self, table: &str, ok: bool);
}

impl SessionCtx {
    /// Reports progress to the display, if one is attached.
    pub fn progress(&self, table: &str, rows: u64, bytes: u64, file: bool) {
        if let Some(p) = self.progress.get() {
            p.advance(table, rows, bytes, file);
        }
    }
}

/// A task-mode budget: sources ask [`SessionCtx::stop_for_budget`] before each unit of
/// work (a file, an object, an upstream commit) and stop taking new units once the run
/// has spent its time, rows or bytes; what they did is committed as usual, and the run
/// exits 6 (more work pending) so the next start resumes from the checkpoints.
#[derive(Debug)]
pub struct Budget {
    started: std::time::Instant,
    max_duration: Option<std::time::Duration>,
    max_rows: Option<u64>,
    max_bytes: Option<u64>,
    rows: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    pending: std::sync::atomic::AtomicBool,
}

impl Budget {
    /// The budget the settings give (no limits: never exhausted).
    pub fn new(s: &Settings) -> Budget {
        Budget {
            started: std::time::Instant::now(),
            max_duration: s.max_duration,
            max_rows: s.max_rows,
            max_bytes: s.max_bytes,
            rows: Default::default(),
            bytes: Default::default(),
            pending: Default::default(),
        }
    }

    /// Counts work done (rows and bytes moved). Sources report each finished unit
    /// (the built-in ones do), so the check before the next unit is exact.
    pub fn spend(&self, rows: u64, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.rows.fetch_add(rows, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    /// Which limit is spent, if any.
    pub fn exhausted(&self) -> Option<String> {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(d) = self.max_duration
            && self.started.elapsed() >= d
        {
            return Some(format!("max_duration {d:?}"));
        }
        if let Some(n) = self.max_rows
            && self.rows.load(Relaxed) >= n
        {
            return Some(format!("max_rows {n}"));
        }
        if let Some(n) = self.max_bytes
            && self.bytes.load(Relaxed) >= n
        {
            return Some(format!("max_bytes {n}"));
        }
        None
    }

    /// True once a source stopped with work left.
    pub fn pending(&self) -> bool {
        self.pending.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl SessionCtx {
    /// A connection by id.
    ///
    /// # Errors
    /// [`Error::MissingConnection`] naming the variable to set.
    pub fn connection(&self, id: &str) -> Result<&Connection> {
        self.connections
            .get(id)
            .ok_or_else(|| Error::MissingConnection {
                id: id.to_string(),
                needed_by: Some(self.operator.clone()),
                vars: vec![
                    crate::connection::var_name(id, "URI"),
                    crate::connection::var_name(id, "JSONDATA"),
                ],
                hint: String::new(),
            })
    }

    /// The committed value of a checkpoint.
    pub fn checkpoint(&self, key: &str) -> Option<serde_json::Value> {
        self.committer.checkpoints().get(key)
    }

    /// Calls `f(key, value)` with each committed checkpoint whose key starts with
    /// `prefix`, sorted by key (e.g. every file of a table: `"<table>:"`), without
    /// copying them; `f` must not read checkpoints itself (the state is locked).
    pub fn for_each_checkpoint_with_prefix(
        &self,
        prefix: &str,
        f: impl FnMut(&str, &serde_json::Value),
    ) {
        self.committer.checkpoints().for_each_with_prefix(prefix, f);
    }

    /// Asked by a source before a unit of work (file, object, commit) when `done` units
    /// are already behind it in this task: true when the budget is spent and at least
    /// one unit was done (so every run makes progress), after which the source stops
    /// and the run reports more work pending.
    pub fn stop_for_budget(&self, table: &str, done: u64) -> bool {
        if done == 0 || self.settings.service() {
            return false;
        }
        match self.budget.exhausted() {
            Some(why) => {
                self.budget
                    .pending
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!(table, budget = %why, "budget spent: this table stops here; the next run resumes");
                true
            }
            None => false,
        }
    }

    /// The area of another anchovy of the same user (an upstream).
    pub fn upstream_store(&self, id: &str) -> Datastore {
        self.datastore.for_anchovy(&self.settings.user, id)
    }

    /// Where an anchovy of this user keeps its table metadata (this one's with
    /// `self.settings.id`).
    pub fn tbl_store(&self, id: &str) -> Datastore {
        self.tbl_root.for_anchovy(&self.settings.user, id)
    }
}

/// Context of one task.
pub struct TaskCtx {
    /// The session.
    pub session: Arc<SessionCtx>,
    /// The batch (0 for STARTUP and SHUTDOWN).
    pub batch_id: u64,
    /// The task type.
    pub task_type: TaskType,
    /// The active tables of the batch (empty outside a batch).
    pub tbls: Arc<TblSet>,
    tbl: Option<Tbl>,
    data: Mutex<serde_json::Map<String, serde_json::Value>>,
    staged: Mutex<BTreeMap<String, Option<serde_json::Value>>>,
    rejected: Arc<std::sync::atomic::AtomicU64>,
    /// The worker's claim on the task's table (`--workers`).
    claim: Option<crate::commit::Claim>,
    /// The part of the table this task runs, when the table is split.
    part: Option<crate::worker::Part>,
    /// Tables the source declared while reading ([`TaskCtx::declare`]).
    declared: Mutex<BTreeMap<String, Tbl>>,
    /// The task's entry is a program of tables, not a table ([`TaskCtx::not_a_table`]).
    not_a_table: std::sync::atomic::AtomicBool,
}

impl TaskCtx {
    pub(crate) fn new(
        session: Arc<SessionCtx>,
        batch_id: u64,
        task_type: TaskType,
        tbls: Arc<TblSet>,
        tbl: Option<Tbl>,
    ) -> TaskCtx {
        TaskCtx {
            session,
            batch_id,
            task_type,
            tbls,
            tbl,
            data: Mutex::new(Default::default()),
            staged: Mutex::new(BTreeMap::new()),
            rejected: Arc::default(),
            claim: None,
            part: None,
            declared: Mutex::new(BTreeMap::new()),
            not_a_table: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Declares a table the source learned of while reading (a Singer SCHEMA: its
    /// key and column types): when the task ends, its `$tables` entry gets these,
    /// under config.yaml's entry of the same name (config wins) and over what is
    /// stored. A later declaration of the same table replaces the earlier one.
    pub fn declare(&self, tbl: Tbl) {
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tbl.name.clone(), tbl);
    }

    /// The table `name` as the source declared it, if it did.
    pub(crate) fn declared(&self, name: &str) -> Option<Tbl> {
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Says the task's config entry stands for the tables its source writes (a
    /// program's streams), not for a table of its own name: no `$tables` entry is
    /// written under the entry's name unless rows of that name were written.
    pub fn not_a_table(&self) {
        self.not_a_table
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The names of the tables the source declared.
    pub(crate) fn declared_names(&self) -> Vec<String> {
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// True once [`TaskCtx::not_a_table`] was said.
    pub(crate) fn is_not_a_table(&self) -> bool {
        self.not_a_table.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// This task runs one part of its table ([`crate::Operator::parts`]).
    pub(crate) fn with_part(mut self, part: Option<crate::worker::Part>) -> TaskCtx {
        self.part = part;
        self
    }

    /// The part of its table this task runs (`None`: the whole table): a source that
    /// splits its tables reads only the items [`crate::worker::Part::holds`].
    pub fn part(&self) -> Option<crate::worker::Part> {
        self.part
    }

    /// This task commits under a worker's claim on its table.
    pub(crate) fn with_claim(mut self, claim: Option<crate::commit::Claim>) -> TaskCtx {
        self.claim = claim;
        self
    }

    /// A bad-record collector for this task's table under its `on_bad_record` and
    /// `max_rejects` options, for a format reader (one per file or object read).
    /// Every downloader reads through one: see [`crate::reject`].
    ///
    /// # Errors
    /// [`crate::Error::Config`] for a bad option value.
    pub fn rejects(&self) -> crate::Result<crate::reject::Rejects> {
        let policy = crate::reject::RejectPolicy::of(self.tbl())?;
        Ok(crate::reject::Rejects::with_total(
            self.tbl_name(),
            policy,
            self.rejected.clone(),
        ))
    }

    /// Records this task's readers rejected (skipped or quarantined) so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The task's table (TBL tasks); an empty table otherwise.
    pub fn tbl(&self) -> &Tbl {
        static EMPTY: std::sync::OnceLock<Tbl> = std::sync::OnceLock::new();
        self.tbl
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(Tbl::default))
    }

    /// The task's table name ("" outside TBL tasks).
    pub fn tbl_name(&self) -> &str {
        &self.tbl().name
    }

    /// A checkpoint's value: this task's own pending update if it set one, else the
    /// committed value.
    pub fn checkpoint(&self, key: &str) -> Option<serde_json::Value> {
        if let Some(v) = self
            .staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            return v.clone();
        }
        self.session.checkpoint(key)
    }

    /// Committed checkpoints whose key matches a wildcard, as `(key, value)`.
    pub fn checkpoints_matching(&self, pattern: &str) -> Vec<(String, serde_json::Value)> {
        self.session
            .committer
            .checkpoints()
            .list(pattern)
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    }

    pub(crate) fn stage_checkpoints(&self, updates: &BTreeMap<String, Option<serde_json::Value>>) {
        let mut s = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in updates {
            s.insert(k.clone(), v.clone());
        }
    }

    /// Adds a field to the `data` object of this task's log.
    pub fn log(&self, key: &str, value: impl Into<serde_json::Value>) {
        self.data
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), value.into());
    }

    /// Adds `n` to a numeric field of the task log data.
    pub fn log_add(&self, key: &str, n: u64) {
        let mut d = self.data.lock().unwrap_or_else(|p| p.into_inner());
        let cur = d.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
        d.insert(key.to_string(), (cur + n).into());
    }

    pub(crate) fn take_data(&self) -> serde_json::Map<String, serde_json::Value> {
        std::mem::take(&mut *self.data.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn commit_meta(&self) -> CommitMeta {
        CommitMeta {
            anchovy_id: self.session.settings.id.clone(),
            anchovy_user: self.session.settings.user.clone(),
            session_id: self.session.session_id.clone(),
            batch_id: self.batch_id,
            tbl: self.tbl.as_ref().map(|t| t.name.clone()),
            worker: self.session.worker.as_ref().map(|w| w.name.clone()),
            claim: self.claim.clone(),
        }
    }
}
