//! Garbage collection of an anchovy's area (`anchovy gc`): what a long life leaves
//! behind that no reader needs.
//!
//! - **Orphan data files**: files under `data/` and `$rejects/` that no commit record
//!   lists (a run killed between writing a file and its commit leaves them; the rerun
//!   writes the rows again under a new name), older than a grace period. A file that a
//!   commit lists, under its key or, for the original tool's format, where it was
//!   staged, is never one. An area with data files but no commit record (the original
//!   tool's layout, or a record someone deleted) has no orphans: nothing can tell them
//!   apart there, so nothing is collected.
//! - **Old task logs and worker results**: `$task_logs/*` and `$results/workers/*` last
//!   written before the retention. They are for people; each table's last load stays in
//!   `$last_loads` (what `anchovy tables` and freshness checks read).
//!
//! Commit records and the data files they list are kept: an uploader's position counts
//! in them, and the first one names the upstream's history ([`crate::commit::origin`]).
//!
//! [`plan`] only lists; [`collect`] deletes what a plan found, one object at a time,
//! each deletion final on its own: a collection cut short (a kill) leaves a smaller
//! remainder that the next one finds again. The caller holds the run lease, so no run
//! of the anchovy writes meanwhile; the grace period covers a writer that does not
//! take it.

use std::collections::HashSet;

use crate::datastore::{Datastore, Entry, layout};
use crate::error::Result;

/// What a collection would delete.
#[derive(Debug, Default)]
pub struct Plan {
    /// Data and quarantine files no commit lists, older than the grace period.
    pub orphans: Vec<Entry>,
    /// Task logs older than the retention (in the task log store).
    pub old_logs: Vec<Entry>,
    /// Worker results older than the retention.
    pub old_results: Vec<Entry>,
    /// Why orphans were not looked for, when they were not.
    pub orphans_skipped: Option<String>,
    /// Commit records read (every data file they list is kept).
    pub commits: usize,
}

impl Plan {
    /// Objects and bytes in the plan.
    pub fn size(&self) -> (usize, u64) {
        let all = self
            .orphans
            .iter()
            .chain(&self.old_logs)
            .chain(&self.old_results);
        (
            self.orphans.len() + self.old_logs.len() + self.old_results.len(),
            all.map(|e| e.size).sum(),
        )
    }
}

/// Lists what a collection at `now` would delete in the anchovy's area `ds` and its
/// task log area `tasks` (the same, unless `task_store_cls` puts the logs elsewhere):
/// orphans older than `grace`, logs and worker results older than `keep`.
///
/// # Errors
/// [`crate::Error::Datastore`] or [`crate::Error::Json`] when a listing or a commit
/// record cannot be read (then nothing is planned: an unreadable record could be the one
/// that lists a file).
pub async fn plan(
    ds: &Datastore,
    tasks: &Datastore,
    grace: std::time::Duration,
    keep: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Plan> {
    let age =
        |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    let orphan_before = now - age(grace);
    let log_before = now - age(keep);
    let mut plan = Plan::default();
    let records = crate::commit::read_commits(ds, 0).await?;
    plan.commits = records.len();
    let mut listed: HashSet<String> = HashSet::new();
    for r in &records {
        for f in &r.files {
            listed.insert(f.key.clone());
            if let Some(s) = &f.staged {
                listed.insert(s.clone());
            }
        }
    }
    let mut files = ds.list(layout::DATA).await?;
    files.extend(ds.list(layout::REJECTS).await?);
    if records.is_empty() && !files.is_empty() {
        plan.orphans_skipped = Some(format!(
            "{} data files and no commit record (the original tool's layout, or a deleted record): no file can be told to be an orphan, so none is collected",
            files.len()
        ));
    } else {
        plan.orphans = files
            .into_iter()
            .filter(|e| !listed.contains(&e.key) && e.modified < orphan_before)
            .collect();
    }
    let old = |list: Vec<Entry>| -> Vec<Entry> {
        list.into_iter()
            .filter(|e| e.modified < log_before)
            .collect()
    };
    plan.old_logs = old(tasks.list(layout::TASK_LOGS).await?);
    plan.old_results = old(ds.list(&format!("{}/workers", layout::RESULTS)).await?);
    Ok(plan)
}

/// Deletes what `plan` found, one object at a time; returns how many were deleted. An
/// object already gone counts as deleted.
///
/// # Errors
/// [`crate::Error::Datastore`] when a deletion fails (those before it stay done).
pub async fn collect(ds: &Datastore, tasks: &Datastore, plan: &Plan) -> Result<usize> {
    let mut n = 0;
    let each = plan
        .orphans
        .iter()
        .chain(&plan.old_results)
        .map(|e| (ds, e))
        .chain(plan.old_logs.iter().map(|e| (tasks, e)));
    for (store, e) in each {
        crate::failpoint::hit("gc.delete")?;
        store.delete(&e.key).await?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn later() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::seconds(5)
    }

    /// With no commit record, data files cannot be told to be orphans: none is
    /// collected. A file a commit lists, under its key or where it was staged (the
    /// original tool's format, before it is published), is kept; only the others go.
    #[tokio::test]
    async fn only_files_no_commit_lists_are_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_str().unwrap()).unwrap();
        for k in [
            "data/t/a",
            "data/t/_staged.b",
            "data/t/orphan",
            "$rejects/t/r",
        ] {
            ds.put(k, Bytes::from_static(b"x")).await.unwrap();
        }
        let p = plan(&ds, &ds, Duration::ZERO, Duration::from_secs(3600), later())
            .await
            .unwrap();
        assert!(p.orphans.is_empty());
        assert!(p.orphans_skipped.unwrap().contains("no commit record"));
        let (cps, last) = crate::commit::load_checkpoints(&ds, crate::commit::LoadAs::SoleWriter)
            .await
            .unwrap();
        let c = crate::commit::Committer::new(ds.clone(), std::sync::Arc::new(cps), last);
        let file = |key: &str, staged: Option<&str>| {
            serde_json::from_value::<crate::data::FileEntry>(serde_json::json!({
                "tbl": "t", "key": key, "rows": 1, "bytes": 1, "raw_bytes": 1, "staged": staged
            }))
            .unwrap()
        };
        let meta = crate::commit::CommitMeta {
            anchovy_id: "a".into(),
            anchovy_user: "u".into(),
            session_id: "s".into(),
            batch_id: 1,
            tbl: None,
            worker: None,
            claim: None,
        };
        c.commit(
            &meta,
            vec![
                file("data/t/a", None),
                file("data/t/b", Some("data/t/_staged.b")),
            ],
            Default::default(),
        )
        .await
        .unwrap();
        let p = plan(&ds, &ds, Duration::ZERO, Duration::from_secs(3600), later())
            .await
            .unwrap();
        let keys: Vec<&str> = p.orphans.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["data/t/orphan", "$rejects/t/r"]);
        // Within the grace period nothing is an orphan yet.
        let p = plan(
            &ds,
            &ds,
            Duration::from_secs(60),
            Duration::from_secs(3600),
            later(),
        )
        .await
        .unwrap();
        assert!(p.orphans.is_empty());
        assert_eq!(collect(&ds, &ds, &p).await.unwrap(), 0);
        let p = plan(&ds, &ds, Duration::ZERO, Duration::from_secs(3600), later())
            .await
            .unwrap();
        assert_eq!(collect(&ds, &ds, &p).await.unwrap(), 2);
        assert!(ds.exists("data/t/a").await.unwrap());
        assert!(ds.exists("data/t/_staged.b").await.unwrap());
        assert!(!ds.exists("data/t/orphan").await.unwrap());
    }
}
