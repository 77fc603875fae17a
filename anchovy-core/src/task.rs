//! Tasks and task logs.
//!
//! Every task (STARTUP, XOPEN, TBL, XCLOSE, ERROR, SHUTDOWN) ends with one [`TaskLog`]
//! written to `$task_logs/` as JSON with the attributes the README lists, plus `error`
//! when the task failed. Secrets are redacted before anything is written.

use serde::{Deserialize, Serialize};

use crate::datastore::{Datastore, layout};
use crate::error::Result;

/// The phases of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskType {
    /// Once, before the first batch.
    Startup,
    /// At the start of each batch ("batch open").
    Xopen,
    /// One per enabled table.
    Tbl,
    /// At the end of each batch ("batch close"); always runs.
    Xclose,
    /// When an unhandled error stops processing.
    Error,
    /// Once, as the process exits; always runs.
    Shutdown,
}

impl TaskType {
    /// The lowercase phase name used by hooks (`startup`, `xopen`, ...).
    pub fn phase(self) -> &'static str {
        match self {
            TaskType::Startup => "startup",
            TaskType::Xopen => "xopen",
            TaskType::Tbl => "tbl",
            TaskType::Xclose => "xclose",
            TaskType::Error => "error",
            TaskType::Shutdown => "shutdown",
        }
    }
}

/// OK or ERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Finished without error.
    #[serde(rename = "OK")]
    Ok,
    /// Failed.
    #[serde(rename = "ERR")]
    Err,
}

/// One finished task, as written to `$task_logs/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskLog {
    /// The anchovy id.
    pub anchovy_id: String,
    /// The anchovy user.
    pub anchovy_user: String,
    /// The session id.
    pub session_id: String,
    /// The batch id (0 outside batches).
    pub batch_id: u64,
    /// The tokio task that ran it.
    pub thread_id: String,
    /// The operator name.
    pub operator: String,
    /// The task type.
    pub task_type: TaskType,
    /// Duration in milliseconds.
    pub duration: u64,
    /// When it finished (RFC 3339, UTC).
    pub timestamp: String,
    /// OK or ERR.
    pub status: Status,
    /// The table, for TBL tasks.
    pub tbl: Option<String>,
    /// Data appended during the task (rows, bytes, files, ...).
    pub data: serde_json::Map<String, serde_json::Value>,
    /// The error chain, when status is ERR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Writes task logs to `$task_logs/`.
#[derive(Clone)]
pub struct TaskStore {
    ds: Datastore,
}

impl TaskStore {
    /// A store in an anchovy's area.
    pub fn new(ds: Datastore) -> TaskStore {
        TaskStore { ds }
    }

    /// Writes one task log.
    ///
    /// # Errors
    /// [`crate::Error::Datastore`].
    pub async fn write(&self, log: &TaskLog) -> Result<()> {
        let rand = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let ts = log.timestamp.replace([':', '-'], "");
        let key = layout::task_log_key(&log.session_id, log.batch_id, &ts, rand);
        self.ds.put_json_redacted(&key, log).await
    }

    /// Reads every task log, oldest first.
    ///
    /// # Errors
    /// [`crate::Error::Datastore`] or [`crate::Error::Json`].
    pub async fn read_all(&self) -> Result<Vec<TaskLog>> {
        let mut out = Vec::new();
        for e in self.ds.list(layout::TASK_LOGS).await? {
            if let Some(l) = self.ds.get_json::<TaskLog>(&e.key).await? {
                out.push(l);
            }
        }
        out.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
        Ok(out)
    }
}
