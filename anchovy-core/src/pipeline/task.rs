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
    /// What the operator's hook was doing, for messages (`opening the batch`).
    pub fn doing(self) -> &'static str {
        match self {
            TaskType::Startup => "starting up",
            TaskType::Xopen => "opening the batch",
            TaskType::Tbl => "running a table",
            TaskType::Xclose => "closing the batch",
            TaskType::Error => "handling a stopped batch",
            TaskType::Shutdown => "shutting down",
        }
    }

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
        crate::failpoint::hit("tasklog.write")?;
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
        self.read_since(None).await
    }

    /// Reads the task logs written at or after `since`, oldest first; the objects are
    /// fetched 16 at a time. (Every key is listed: a service's session id is the time
    /// it started, so a key prefix cannot tell a recent task of a long-lived service.)
    ///
    /// # Errors
    /// [`crate::Error::Datastore`] or [`crate::Error::Json`].
    pub async fn read_since(
        &self,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<TaskLog>> {
        use futures::StreamExt;
        let entries = self.ds.list(layout::TASK_LOGS).await?;
        let ds = &self.ds;
        let logs: Vec<Result<Option<TaskLog>>> = futures::stream::iter(entries)
            .map(|e| async move { ds.get_json::<TaskLog>(&e.key).await })
            .buffered(16)
            .collect()
            .await;
        let mut out = Vec::with_capacity(logs.len());
        for l in logs {
            if let Some(l) = l? {
                out.push(l);
            }
        }
        if let Some(t) = since {
            let t = t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            out.retain(|l| l.timestamp >= t);
        }
        out.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
        Ok(out)
    }

    /// The latest TBL task of each table, and the latest successful one.
    pub fn last_loads(logs: &[TaskLog]) -> std::collections::BTreeMap<String, LastLoad> {
        let mut out: std::collections::BTreeMap<String, LastLoad> = Default::default();
        for l in logs.iter().filter(|l| l.task_type == TaskType::Tbl) {
            let Some(t) = &l.tbl else { continue };
            let e = out.entry(t.clone()).or_default();
            e.last = Some(l.clone());
            if l.status == Status::Ok {
                e.last_ok = Some(l.clone());
            }
        }
        out
    }
}

/// What the task logs say about one table's loads.
#[derive(Debug, Clone, Default)]
pub struct LastLoad {
    /// The latest TBL task.
    pub last: Option<TaskLog>,
    /// The latest successful TBL task.
    pub last_ok: Option<TaskLog>,
}
