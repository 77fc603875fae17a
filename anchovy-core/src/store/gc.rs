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
//! - **Old commits** (with a commit retention, [`Downstream`]): commit records older
//!   than the retention whose every table each uploader of the anchovy has loaded
//!   past, with the data files they list, as a prefix `1..=B` of the history and never
//!   the last commit. Uploaders are found where `-U` finds their upstream: the other
//!   anchovies of the same user in the same datastore, by their positions (their
//!   `<id>.<table>` checkpoints naming `<user>/<id>`); with none, nothing is collected. A
//!   base (`$commits/_base.json`, [`crate::commit::Base`]) is written first: the
//!   history's identity and the checkpoint state after `B`, from which starts and
//!   catch-ups continue. An uploader behind `B` (restored, reset, or new) then fails
//!   with the reason instead of loading part of the history. Areas the original tool
//!   reads (`original` data files) keep every commit.
//!
//! [`plan`] only lists; [`collect`] deletes what a plan found, one object at a time,
//! each deletion final on its own: a collection cut short (a kill) leaves a smaller
//! remainder that the next one finds again. The caller holds the run lease, so no run
//! of the anchovy writes meanwhile; the grace period covers a writer that does not
//! take it.

use std::collections::{BTreeMap, HashSet};

use crate::commit::{Base, CommitRecord};
use crate::datastore::{Datastore, Entry, layout};
use crate::error::Result;

/// Where to look for an anchovy's uploaders, and how long commits are kept.
pub struct Downstream<'a> {
    /// The datastore of the anchovy's user (`<root>/<user>`): its other anchovies.
    pub user: &'a Datastore,
    /// The user's name (an uploader's position names its upstream `<user>/<id>`).
    pub user_name: &'a str,
    /// The anchovy's own id (its uploaders' positions are `<id>.<table>`).
    pub id: &'a str,
    /// Commits younger than this are kept.
    pub keep: std::time::Duration,
}

/// The commits a collection would take.
#[derive(Debug, Default)]
pub struct Commits {
    /// The base to write first (none when the collection goes no further than the
    /// stored one, e.g. finishing a collection cut short).
    pub base: Option<Base>,
    /// Commit records to delete, in order.
    pub records: Vec<String>,
    /// The data and quarantine files they list.
    pub files: Vec<String>,
    /// Rows in those files.
    pub rows: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Each uploader and the lowest position it holds among the tables it loads.
    pub uploaders: Vec<(String, u64)>,
    /// Why the collection stops where it does (or collects nothing).
    pub kept_because: Option<String>,
}

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
    /// Commit records read.
    pub commits: usize,
    /// Old commits to collect (with a [`Downstream`]).
    pub old_commits: Commits,
}

impl Plan {
    /// Objects and bytes in the plan.
    pub fn size(&self) -> (usize, u64) {
        let all = self
            .orphans
            .iter()
            .chain(&self.old_logs)
            .chain(&self.old_results);
        let c = &self.old_commits;
        (
            self.orphans.len()
                + self.old_logs.len()
                + self.old_results.len()
                + c.records.len()
                + c.files.len(),
            all.map(|e| e.size).sum::<u64>() + c.bytes,
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
    downstream: Option<&Downstream<'_>>,
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
    if let Some(d) = downstream {
        plan.old_commits = old_commits(ds, &records, d, now).await?;
    }
    Ok(plan)
}

/// The prefix of commits every uploader has passed, older than the retention (see the
/// module doc).
async fn old_commits(
    ds: &Datastore,
    records: &[CommitRecord],
    d: &Downstream<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Commits> {
    let mut out = Commits::default();
    let stored = crate::commit::base(ds).await?;
    let Some(origin) = crate::commit::origin(ds).await? else {
        return Ok(out);
    };
    if records
        .iter()
        .any(|r| r.files.iter().any(|f| f.staged.is_some()))
    {
        out.kept_because = Some("the original tool's uploader reads this anchovy's data files by name (data_buffer_cls: original): every commit is kept".into());
        return Ok(out);
    }
    // Each uploader's positions in this history, by table.
    let mut uploaders: Vec<(String, BTreeMap<String, u64>)> = Vec::new();
    let prefix = format!("{}.", d.id);
    let upstream = format!("{}/{}", d.user_name, d.id);
    for id in d.user.children().await? {
        if id == d.id {
            continue;
        }
        let area = d.user.child(&[&id]);
        if !area.exists(layout::COMMITS_BASE).await?
            && area.list(layout::CHECKPOINTS).await?.is_empty()
        {
            continue;
        }
        let (cps, _) =
            crate::commit::load_checkpoints(&area, crate::commit::LoadAs::Reader).await?;
        let mut pos = BTreeMap::new();
        for e in cps.list(&format!("{prefix}*")) {
            if e.value.get("upstream").and_then(|u| u.as_str()) == Some(upstream.as_str())
                && let Some(seq) = e.value.get("seq").and_then(|s| s.as_u64())
            {
                pos.insert(e.key[prefix.len()..].to_string(), seq);
            }
        }
        if !pos.is_empty() {
            uploaders.push((id, pos));
        }
    }
    out.uploaders = uploaders
        .iter()
        .map(|(u, p)| (u.clone(), p.values().copied().min().unwrap_or(0)))
        .collect();
    if uploaders.is_empty() {
        out.kept_because = Some(format!(
            "no uploader of `{}` holds a position in {} (an uploader finds its upstream there): every commit is kept",
            d.id,
            d.user.location()
        ));
        return Ok(out);
    }
    let cutoff = now - chrono::Duration::from_std(d.keep).unwrap_or(chrono::Duration::MAX);
    let last = records.last().map_or(0, |r| r.seq);
    let below = stored.as_ref().map_or(0, |b| b.seq);
    let mut through = below;
    for r in records {
        // Left over from a collection cut short: already below the base.
        if r.seq <= below {
            continue;
        }
        let behind = r
            .files
            .iter()
            .filter(|f| crate::reject::rejected_table(&f.tbl).is_none())
            .find_map(|f| {
                uploaders.iter().find_map(|(u, p)| match p.get(&f.tbl) {
                    Some(s) if *s >= r.seq => None,
                    Some(s) => Some(format!(
                        "uploader `{u}` has loaded table {} up to commit {s} only",
                        f.tbl
                    )),
                    None => Some(format!("uploader `{u}` has not loaded table {} yet", f.tbl)),
                })
            });
        let stop = if r.seq != through + 1 {
            Some(format!(
                "commit {} is missing (the records are not dense)",
                through + 1
            ))
        } else if behind.is_some() {
            behind
        } else if r.seq >= last {
            Some("the last commit is always kept".to_string())
        } else if chrono::DateTime::parse_from_rfc3339(&r.committed_at)
            .map_or(true, |t| t.with_timezone(&chrono::Utc) >= cutoff)
        {
            Some(format!("commit {} is younger than the retention", r.seq))
        } else {
            None
        };
        if let Some(why) = stop {
            out.kept_because = Some(why);
            break;
        }
        through = r.seq;
    }
    for r in records.iter().filter(|r| r.seq <= through) {
        out.records.push(layout::commit_key(r.seq));
        for f in &r.files {
            out.files.push(f.key.clone());
            out.rows += f.rows;
            out.bytes += f.bytes;
        }
    }
    if through > below {
        // The state after `through`: the stored base's, then the commits after it.
        let cps = crate::checkpoint::Checkpoints::empty(ds);
        if let Some(b) = &stored {
            cps.adopt(b.entries.clone(), b.seq);
        }
        for r in records.iter().filter(|r| r.seq > below && r.seq <= through) {
            cps.replay_state(r.update());
        }
        out.base = Some(Base {
            seq: through,
            origin,
            collected_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            entries: cps.entries(),
        });
    }
    Ok(out)
}

/// Deletes what `plan` found, one object at a time; returns how many were deleted. An
/// object already gone counts as deleted.
///
/// # Errors
/// [`crate::Error::Datastore`] when a deletion fails (those before it stay done).
pub async fn collect(ds: &Datastore, tasks: &Datastore, plan: &Plan) -> Result<usize> {
    let mut n = 0;
    // Old commits: the base first, then their files, then the records themselves (a
    // record outlives its files: a cut collection leaves records below the base, which
    // the next one finds again).
    let c = &plan.old_commits;
    if let Some(b) = &c.base {
        crate::failpoint::hit("gc.base")?;
        ds.put_json(layout::COMMITS_BASE, b).await?;
    }
    for k in c.files.iter().chain(&c.records) {
        crate::failpoint::hit("gc.delete")?;
        ds.delete(k).await?;
        n += 1;
    }
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

    /// The plan of `ds` a moment from now, with orphans' `grace` and an hour's logs.
    async fn plan_now(ds: &Datastore, grace: Duration) -> Plan {
        plan(ds, ds, grace, Duration::from_secs(3600), None, later())
            .await
            .unwrap()
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
        let p = plan_now(&ds, Duration::ZERO).await;
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
        let p = plan_now(&ds, Duration::ZERO).await;
        let keys: Vec<&str> = p.orphans.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["data/t/orphan", "$rejects/t/r"]);
        // Within the grace period nothing is an orphan yet.
        let p = plan_now(&ds, Duration::from_secs(60)).await;
        assert!(p.orphans.is_empty());
        assert_eq!(collect(&ds, &ds, &p).await.unwrap(), 0);
        let p = plan_now(&ds, Duration::ZERO).await;
        assert_eq!(collect(&ds, &ds, &p).await.unwrap(), 2);
        assert!(ds.exists("data/t/a").await.unwrap());
        assert!(ds.exists("data/t/_staged.b").await.unwrap());
        assert!(!ds.exists("data/t/orphan").await.unwrap());
    }

    /// Seeded histories held against the rule's model: the commits collected are the
    /// longest prefix, short of the last commit, in which every table of every commit
    /// is loaded at or past it by every uploader (none without an uploader); the base
    /// holds the state after it.
    #[tokio::test]
    async fn old_commits_are_the_prefix_every_uploader_passed() {
        use crate::commit::{CommitMeta, Committer, LoadAs, load_checkpoints};
        let seed = crate::testutil::seed("GC_SEED");
        let mut rng = crate::testutil::Rng(seed);
        let meta = CommitMeta {
            anchovy_id: "a".into(),
            anchovy_user: "u".into(),
            session_id: "s".into(),
            batch_id: 1,
            tbl: None,
            worker: None,
            claim: None,
        };
        for trial in 0..40 {
            let dir = tempfile::tempdir().unwrap();
            let root = Datastore::open(dir.path().to_str().unwrap()).unwrap();
            let area = root.for_anchovy("u", "a");
            let (cps, last) = load_checkpoints(&area, LoadAs::SoleWriter).await.unwrap();
            let c = Committer::new(area.clone(), std::sync::Arc::new(cps), last);
            let n = 1 + rng.below(10);
            let tables = ["t1", "t2", "t3"];
            let mut files_of: Vec<Vec<&str>> = Vec::new();
            for i in 1..=n {
                let ts: Vec<&str> = tables.iter().copied().filter(|_| rng.chance(40)).collect();
                let files = ts
                    .iter()
                    .map(|t| {
                        serde_json::from_value::<crate::data::FileEntry>(serde_json::json!({
                            "tbl": t, "key": format!("data/{t}/{i}"), "rows": 1, "bytes": 1, "raw_bytes": 1
                        }))
                        .unwrap()
                    })
                    .collect();
                let cp = [(format!("k{}", rng.below(3)), Some(serde_json::json!(i)))].into();
                c.commit(&meta, files, cp).await.unwrap();
                files_of.push(ts);
            }
            // Uploaders with a position for some of the tables.
            let mut ups: Vec<std::collections::BTreeMap<&str, u64>> = Vec::new();
            for u in 0..rng.below(3) {
                let up = root.for_anchovy("u", &format!("up{u}"));
                let (cps, last) = load_checkpoints(&up, LoadAs::SoleWriter).await.unwrap();
                let uc = Committer::new(up.clone(), std::sync::Arc::new(cps), last);
                let mut pos = std::collections::BTreeMap::new();
                let mut cp = BTreeMap::new();
                for t in tables {
                    if rng.chance(80) {
                        let p = rng.below(n + 1);
                        pos.insert(t, p);
                        cp.insert(
                            format!("a.{t}"),
                            Some(serde_json::json!({"seq": p, "upstream": "u/a"})),
                        );
                    }
                }
                // Another upstream's position does not count.
                cp.insert(
                    "b.t1".into(),
                    Some(serde_json::json!({"seq": 0, "upstream": "u/b"})),
                );
                uc.commit(&meta, vec![], cp).await.unwrap();
                if !pos.is_empty() {
                    ups.push(pos);
                }
            }
            // The model.
            let mut want = 0;
            if !ups.is_empty() {
                for seq in 1..n {
                    let ok = files_of[(seq - 1) as usize]
                        .iter()
                        .all(|t| ups.iter().all(|p| p.get(t).is_some_and(|s| *s >= seq)));
                    if !ok {
                        break;
                    }
                    want = seq;
                }
            }
            let d = Downstream {
                user: &root.child(&["u"]),
                user_name: "u",
                id: "a",
                keep: Duration::ZERO,
            };
            let p = plan(
                &area,
                &area,
                Duration::ZERO,
                Duration::ZERO,
                Some(&d),
                later(),
            )
            .await
            .unwrap();
            let c2 = &p.old_commits;
            let ctx = format!(
                "GC_SEED={seed} trial {trial}: {n} commits {files_of:?}, uploaders {ups:?}"
            );
            assert_eq!(c2.base.as_ref().map_or(0, |b| b.seq), want, "{ctx}");
            assert_eq!(c2.records.len() as u64, want, "{ctx}");
            let files: usize = files_of.iter().take(want as usize).map(Vec::len).sum();
            assert_eq!(c2.files.len(), files, "{ctx}");
            if let Some(b) = &c2.base {
                // The base's state is the fold of the commits it covers.
                let fold = crate::checkpoint::Checkpoints::empty(&area);
                for r in crate::commit::read_commits(&area, 0).await.unwrap() {
                    if r.seq <= b.seq {
                        fold.replay_state(r.update());
                    }
                }
                assert_eq!(b.entries, fold.entries(), "{ctx}");
            }
        }
    }
}
