//! Tasks and task logs.
//!
//! Every task (STARTUP, XOPEN, TBL, XCLOSE, ERROR, SHUTDOWN) ends with one [`TaskLog`]
//! written to `$task_logs/` as JSON with the attributes the README lists, plus `error`
//! when the task failed. Secrets are redacted before anything is written.
//!
//! Each TBL task also rewrites `$last_loads/<tbl>.json`, the table's latest task and
//! latest successful one ([`LastLoad`]): what freshness checks and `anchovy tables`
//! read, one object per table however old the anchovy.

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
    /// The batch id (0 outside batches). The original tool's logs, where it is a
    /// string (`"000"`) or `null`, read as its number or 0.
    #[serde(deserialize_with = "de_batch_id")]
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
    /// Data appended during the task (rows, bytes, files, ...); `null` in some of the
    /// original tool's logs reads as empty.
    #[serde(default, deserialize_with = "de_data")]
    pub data: serde_json::Map<String, serde_json::Value>,
    /// The error chain, when status is ERR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The worker that ran it (`--workers`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

fn de_batch_id<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Num(u64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(0),
        Some(Raw::Num(n)) => Ok(n),
        Some(Raw::Text(t)) => t
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("batch_id `{t}` is not a batch number"))),
    }
}

fn de_data<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<serde_json::Map<String, serde_json::Value>, D::Error> {
    Ok(Option::deserialize(d)?.unwrap_or_default())
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
        let ts = compact_time(&log.timestamp);
        let key = layout::task_log_key(&log.session_id, log.batch_id, &ts, rand);
        self.ds.put_json_redacted(&key, log).await?;
        if let (TaskType::Tbl, Some(tbl)) = (log.task_type, &log.tbl)
            && let Err(e) = self.note_last_load(tbl, log).await
        {
            // The task log is written; only the summary lags.
            tracing::warn!(
                table = %tbl,
                error = %e.chain(),
                "cannot update the table's last load in {}: `anchovy tables` and healthcheck freshness show the previous one until the table's next task writes it",
                layout::LAST_LOADS
            );
        }
        Ok(())
    }

    /// Rewrites `$last_loads/<tbl>.json` after the task log it summarises (a kill
    /// between the two leaves the summary one task behind until the table's next task).
    /// A success replaces both entries without reading; a failure keeps the stored last
    /// success (an unreadable summary counts as none: its last success is then
    /// unknown, and readers fall back to the task logs for it).
    async fn note_last_load(&self, tbl: &str, log: &TaskLog) -> Result<()> {
        let key = layout::last_load_key(tbl);
        let last_ok = match log.status {
            Status::Ok => Some(log.clone()),
            Status::Err => self
                .ds
                .get_json::<LastLoad>(&key)
                .await
                .ok()
                .flatten()
                .and_then(|s| s.last_ok),
        };
        let summary = LastLoad {
            last: Some(log.clone()),
            last_ok,
        };
        self.ds.put_json_redacted(&key, &summary).await
    }

    /// Reads every task log, oldest first.
    ///
    /// # Errors
    /// [`crate::Error::Datastore`] or [`crate::Error::Json`].
    pub async fn read_all(&self) -> Result<Vec<TaskLog>> {
        self.read_since(None).await
    }

    /// Reads the task logs written at or after `since`, oldest first; the objects are
    /// fetched 16 at a time. Every key is listed (a service's session id is the time it
    /// started, so a key prefix cannot tell a recent task of a long-lived service), but
    /// only the logs whose key carries a time at or after `since` are fetched: the
    /// cost of `anchovy logs --since 1h` follows the last hour, not the anchovy's age.
    ///
    /// # Errors
    /// [`crate::Error::Datastore`] or [`crate::Error::Json`].
    pub async fn read_since(
        &self,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<TaskLog>> {
        use futures::StreamExt;
        let mut entries = self.ds.list(layout::TASK_LOGS).await?;
        if let Some(t) = since {
            let from = compact_time(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            // A key without a time of this form (another writer's) is always read.
            entries.retain(|e| key_time(&e.key).is_none_or(|k| k >= from.as_str()));
        }
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

    /// The latest TBL task and the latest successful one of each of `tables`: one
    /// `$last_loads/<tbl>.json` object per table. A table whose summary is missing or
    /// knows no success (its tasks ran before this build wrote summaries, another
    /// writer's datastore, or it never succeeded) is looked up in the task logs
    /// ([`TaskStore::scan_last_loads`]); the result also holds any other table that
    /// scan met.
    ///
    /// # Errors
    /// [`crate::Error::Datastore`] or [`crate::Error::Json`].
    pub async fn last_loads_of(
        &self,
        tables: &[String],
    ) -> Result<std::collections::BTreeMap<String, LastLoad>> {
        use futures::StreamExt;
        let ds = &self.ds;
        let summaries: Vec<Result<Option<LastLoad>>> = futures::stream::iter(tables)
            .map(|t| async move { ds.get_json::<LastLoad>(&layout::last_load_key(t)).await })
            .buffered(16)
            .collect()
            .await;
        let mut loads = std::collections::BTreeMap::new();
        let mut unknown = Vec::new();
        for (t, s) in tables.iter().zip(summaries) {
            // An unreadable summary is rewritten by the next task; until then the
            // task logs answer.
            let s = s.ok().flatten().unwrap_or_default();
            if s.last.is_none() || s.last_ok.is_none() {
                unknown.push(t.clone());
            }
            loads.insert(t.clone(), s);
        }
        if unknown.is_empty() {
            return Ok(loads);
        }
        for (t, scanned) in self.scan_last_loads(&unknown).await? {
            let e = loads.entry(t).or_default();
            for l in [scanned.last, scanned.last_ok].into_iter().flatten() {
                TaskStore::add_load_to(e, &l);
            }
        }
        Ok(loads)
    }

    /// [`TaskStore::last_loads_of`] from the task logs alone, read newest first (by the
    /// time in the keys: one run's worth of logs, then growing chunks) until every one
    /// of `tables` has both, or the logs run out: for healthy tables the cost follows
    /// the last runs (the listing itself grows with the anchovy's age). Logs whose key
    /// has no time are read first.
    ///
    /// # Errors
    /// [`crate::Error::Datastore`] or [`crate::Error::Json`].
    pub async fn scan_last_loads(
        &self,
        tables: &[String],
    ) -> Result<std::collections::BTreeMap<String, LastLoad>> {
        use futures::StreamExt;
        let mut entries = self.ds.list(layout::TASK_LOGS).await?;
        // Newest first; keys without a time sort first (they are read in any case).
        entries.sort_by(|a, b| match (key_time(&a.key), key_time(&b.key)) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => y.cmp(x),
        });
        let mut loads = std::collections::BTreeMap::new();
        let ds = &self.ds;
        // One run's worth of logs first (a TBL log per table, four of the run), then
        // chunks twice as large, up to 64.
        let mut size = tables.len() + 4;
        let mut rest = &entries[..];
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(size.min(rest.len()));
            rest = after;
            size = (size * 2).min(64).max(size);
            let got: Vec<Result<Option<TaskLog>>> = futures::stream::iter(chunk)
                .map(|e| async move { ds.get_json::<TaskLog>(&e.key).await })
                .buffered(16)
                .collect()
                .await;
            for l in got {
                if let Some(l) = l? {
                    TaskStore::add_load(&mut loads, &l);
                }
            }
            let complete = tables.iter().all(|t| {
                loads
                    .get(t)
                    .is_some_and(|l: &LastLoad| l.last.is_some() && l.last_ok.is_some())
            });
            if complete && chunk.iter().all(|e| key_time(&e.key).is_some()) {
                break;
            }
        }
        Ok(loads)
    }

    /// The latest TBL task of each table, and the latest successful one, from logs
    /// in any order.
    pub fn last_loads(logs: &[TaskLog]) -> std::collections::BTreeMap<String, LastLoad> {
        let mut out = Default::default();
        for l in logs {
            TaskStore::add_load(&mut out, l);
        }
        out
    }

    /// Counts `l` into `loads` when it is a TBL task later than what they hold (a tie
    /// goes to the later log in the sequence, as it did when the logs were sorted).
    fn add_load(loads: &mut std::collections::BTreeMap<String, LastLoad>, l: &TaskLog) {
        let (TaskType::Tbl, Some(t)) = (l.task_type, &l.tbl) else {
            return;
        };
        TaskStore::add_load_to(loads.entry(t.clone()).or_default(), l);
    }

    /// Counts the TBL task `l` into one table's `e` when it is later than what `e` holds.
    fn add_load_to(e: &mut LastLoad, l: &TaskLog) {
        let newer =
            |have: &Option<TaskLog>| have.as_ref().is_none_or(|h| l.timestamp >= h.timestamp);
        if newer(&e.last) {
            e.last = Some(l.clone());
        }
        if l.status == Status::Ok && newer(&e.last_ok) {
            e.last_ok = Some(l.clone());
        }
    }
}

/// A task log's time as its key holds it: `2026-12-02T08:15:12.123456Z` ->
/// `20261202T081512.123456Z` (same width for every log of this build, so keys compare
/// as times).
fn compact_time(rfc3339: &str) -> String {
    rfc3339.replace([':', '-'], "")
}

/// The time part of a task log key (`<session>.<batch>.<time>.<rand>.json`), when it
/// has the form [`compact_time`] writes (`YYYYMMDDTHHMMSS.ffffffZ`).
fn key_time(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next()?.strip_suffix(".json")?;
    let (rest, _rand) = name.rsplit_once('.')?; // <session>.<batch>.<secs>.<frac>
    let (head, frac) = rest.rsplit_once('.')?;
    let (_, secs) = head.rsplit_once('.')?;
    let t = &rest[head.len() - secs.len()..];
    let ok = secs.len() == 15
        && secs.as_bytes()[8] == b'T'
        && secs.bytes().filter(u8::is_ascii_digit).count() == 14
        && frac.len() > 1
        && frac.ends_with('Z')
        && frac[..frac.len() - 1].bytes().all(|b| b.is_ascii_digit());
    ok.then_some(t)
}

/// What the task logs say about one table's loads; also the shape of
/// `$last_loads/<tbl>.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LastLoad {
    /// The latest TBL task.
    pub last: Option<TaskLog>,
    /// The latest successful TBL task.
    pub last_ok: Option<TaskLog>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_in_a_task_log_key() {
        let log_time = "2026-12-02T08:15:12.123456Z";
        let key = layout::task_log_key(
            "20261202T081500.001Z",
            3,
            &compact_time(log_time),
            "ab12cd34",
        );
        assert_eq!(key_time(&key), Some("20261202T081512.123456Z"));
        assert!(key_time(&key).unwrap() >= compact_time("2026-12-02T08:15:12.123456Z").as_str());
        assert!(key_time(&key).unwrap() < compact_time("2026-12-02T08:15:12.123457Z").as_str());
        // Other writers' keys have no time of this form: they are always read.
        for other in [
            "$task_logs/x.json",
            "$task_logs/a.b.c.d.json",
            "$task_logs/s.1.2026-12-02.r.json",
        ] {
            assert_eq!(key_time(other), None, "{other}");
        }
    }

    fn log(tbl: &str, minute: u32, ok: bool) -> TaskLog {
        TaskLog {
            anchovy_id: "h".into(),
            anchovy_user: "u".into(),
            session_id: format!("20261202T{:02}{:02}00.000Z", minute / 60, minute % 60),
            batch_id: 1,
            thread_id: "t".into(),
            operator: "files.CsvDownloader".into(),
            task_type: TaskType::Tbl,
            duration: 1,
            timestamp: format!(
                "2026-12-02T{:02}:{:02}:00.000000Z",
                minute / 60,
                minute % 60
            ),
            status: if ok { Status::Ok } else { Status::Err },
            tbl: Some(tbl.into()),
            data: Default::default(),
            error: None,
            worker: None,
        }
    }

    /// The newest-first scan stops once every table has its last and last successful
    /// load: it gives what reading every log gives, and never reads the old ones (an
    /// unreadable old log proves it); a table without a success reads them all.
    #[tokio::test]
    async fn last_loads_read_only_the_recent_logs() {
        let dir = tempfile::tempdir().unwrap();
        let ds = crate::datastore::Datastore::open(dir.path().to_str().unwrap()).unwrap();
        let store = TaskStore::new(ds.clone());
        for m in 0..200 {
            let t = if m % 2 == 0 { "a" } else { "b" };
            store.write(&log(t, m, m % 7 != 0)).await.unwrap();
        }
        store.write(&log("a", 500, false)).await.unwrap();
        let want = TaskStore::last_loads(&store.read_all().await.unwrap());
        let bad = layout::task_log_key(
            "20261202T000000.000Z",
            1,
            "20261202T000000.000000Z",
            "deadbeef",
        );
        ds.put(&bad, bytes::Bytes::from_static(b"not json"))
            .await
            .unwrap();
        let got = store
            .scan_last_loads(&["a".into(), "b".into()])
            .await
            .unwrap();
        assert_eq!(got.len(), 2);
        for t in ["a", "b"] {
            assert_eq!(got[t].last, want[t].last, "{t}");
            assert_eq!(got[t].last_ok, want[t].last_ok, "{t}");
        }
        assert_eq!(got["a"].last.as_ref().unwrap().status, Status::Err);
        // By hand: a's newest is minute 500 (failed), its newest success minute 198;
        // b's newest, a success, minute 199.
        let at = |l: &Option<TaskLog>| l.as_ref().unwrap().timestamp.clone();
        assert_eq!(at(&got["a"].last), "2026-12-02T08:20:00.000000Z");
        assert_eq!(at(&got["a"].last_ok), "2026-12-02T03:18:00.000000Z");
        assert_eq!(at(&got["b"].last), "2026-12-02T03:19:00.000000Z");
        assert_eq!(at(&got["b"].last_ok), at(&got["b"].last));
        assert!(store.last_loads_of(&["never".into()]).await.is_err());
    }

    /// The per-table summaries give what reading every log gives, without reading a
    /// log (every log is unreadable here once the summaries are written); a table
    /// whose summary is missing, unreadable or knows no success falls back to the logs.
    #[tokio::test]
    async fn last_loads_come_from_the_summaries() {
        let dir = tempfile::tempdir().unwrap();
        let ds = crate::datastore::Datastore::open(dir.path().to_str().unwrap()).unwrap();
        let store = TaskStore::new(ds.clone());
        let mut rng = crate::testutil::Rng(15);
        let tables = ["a", "b", "c"];
        let mut all = Vec::new();
        for m in 0..120 {
            let l = log(tables[rng.below(3) as usize], m, rng.below(3) != 0);
            store.write(&l).await.unwrap();
            all.push(l);
        }
        // A failure after the last success keeps that success.
        let fail = log("a", 900, false);
        store.write(&fail).await.unwrap();
        all.push(fail);
        let want = TaskStore::last_loads(&all);
        let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        for e in ds.list(layout::TASK_LOGS).await.unwrap() {
            ds.put(&e.key, bytes::Bytes::from_static(b"not json"))
                .await
                .unwrap();
        }
        let got = store.last_loads_of(&names).await.unwrap();
        for t in tables {
            assert_eq!(got[t].last, want[t].last, "{t}");
            assert_eq!(got[t].last_ok, want[t].last_ok, "{t}");
        }
        assert_eq!(got["a"].last.as_ref().unwrap().status, Status::Err);
        assert!(got["a"].last_ok.is_some());
        // Without a usable summary the logs answer (and here they are unreadable).
        ds.put(
            &layout::last_load_key("b"),
            bytes::Bytes::from_static(b"{broken"),
        )
        .await
        .unwrap();
        assert!(store.last_loads_of(&names).await.is_err());
        ds.delete(&layout::last_load_key("b")).await.unwrap();
        assert!(store.last_loads_of(&names).await.is_err());
        assert!(store.last_loads_of(&["a".into(), "c".into()]).await.is_ok());
        // A first failure without any summary knows no success: the logs are read.
        let dir = tempfile::tempdir().unwrap();
        let ds = crate::datastore::Datastore::open(dir.path().to_str().unwrap()).unwrap();
        let store = TaskStore::new(ds.clone());
        store.write(&log("d", 1, true)).await.unwrap();
        ds.delete(&layout::last_load_key("d")).await.unwrap();
        store.write(&log("d", 2, false)).await.unwrap();
        let got = store.last_loads_of(&["d".into()]).await.unwrap();
        assert_eq!(
            got["d"].last.as_ref().unwrap().timestamp,
            "2026-12-02T00:02:00.000000Z"
        );
        assert_eq!(
            got["d"].last_ok.as_ref().unwrap().timestamp,
            "2026-12-02T00:01:00.000000Z"
        );
    }
}
