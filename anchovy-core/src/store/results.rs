//! Run results: the session, every batch and every task, written to
//! `$results/anchovy_run_results.json` and printed at the end of `anchovy start`.

use serde::{Deserialize, Serialize};

use crate::task::{Status, TaskLog};

/// One batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchResult {
    /// The batch id.
    pub batch_id: u64,
    /// OK when every task of the batch is OK.
    pub status: Status,
    /// Duration in milliseconds.
    pub duration: u64,
    /// Its tasks: XOPEN, TBL..., ERROR, XCLOSE.
    pub tasks: Vec<TaskLog>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionResult {
    /// The anchovy id.
    pub anchovy_id: String,
    /// The anchovy user.
    pub anchovy_user: String,
    /// The session id.
    pub session_id: String,
    /// The operator.
    pub operator: String,
    /// OK only when every task is OK.
    pub status: Status,
    /// The documented process exit code for this result.
    pub exit_code: u8,
    /// A budget stopped the run with work left (exit code 6): run again to continue.
    #[serde(default)]
    pub more_work_pending: bool,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// When it finished.
    pub finished_at: String,
    /// Duration in milliseconds.
    pub duration: u64,
    /// The error that stopped processing, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The datastore area of this anchovy.
    pub datastore: String,
    /// STARTUP, SHUTDOWN and session-level ERROR tasks.
    pub tasks: Vec<TaskLog>,
    /// The batches: a service's last [`KEPT_BATCHES`] (every batch's tasks are in
    /// `$task_logs`).
    pub batches: Vec<BatchResult>,
    /// The batches of a long service left out of `batches`, oldest first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub batches_omitted: u64,
}

/// The batches a service's run results keep (the newest): its results file stays
/// small however long it runs.
pub const KEPT_BATCHES: usize = 100;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl SessionResult {
    /// Every task log of the run in execution order.
    pub fn all_tasks(&self) -> Vec<&TaskLog> {
        let mut out: Vec<&TaskLog> = Vec::new();
        out.extend(
            self.tasks
                .iter()
                .filter(|t| t.task_type == crate::task::TaskType::Startup),
        );
        for b in &self.batches {
            out.extend(b.tasks.iter());
        }
        out.extend(
            self.tasks
                .iter()
                .filter(|t| t.task_type != crate::task::TaskType::Startup),
        );
        out
    }
}
