//! `anchovy gc`: collect what no reader needs ([`anchovy_core::gc`]); a dry run unless
//! `--delete`, which holds the run lease while it deletes.

use std::process::ExitCode;

use anchovy_core::error::exit;
use anchovy_core::lease::Lease;
use anchovy_core::{Error, gc};

use crate::Loaded;
use crate::args::GcArgs;

/// Lists (or with `--delete` deletes) orphan data files, old logs and old commits.
pub async fn run(loaded: Loaded, args: &GcArgs) -> ExitCode {
    let s = &loaded.settings;
    let duration = |flag: &str, v: &str| {
        anchovy_core::config::parse_duration(v)
            .ok_or_else(|| Error::config(flag, format!("`{v}` is not a duration (1h, 30d)")))
    };
    let (grace, keep) = match (
        duration("--grace", &args.grace),
        duration("--keep", &args.keep),
    ) {
        (Ok(g), Ok(k)) => (g, k),
        (Err(e), _) | (_, Err(e)) => return crate::report(&e),
    };
    let keep_commits = match args.keep_commits.trim() {
        "all" => None,
        v => match duration("--keep-commits", v) {
            Ok(d) => Some(d),
            Err(e) => return crate::report(&e),
        },
    };
    let (store, user) = match anchovy_core::session::open_datastore(s, &loaded.connections) {
        Ok(root) => (root.for_anchovy(&s.user, &s.id), root.child(&[&s.user])),
        Err(e) => return crate::report(&e),
    };
    let downstream = keep_commits.map(|keep| gc::Downstream {
        user: &user,
        user_name: &s.user,
        id: &s.id,
        keep,
    });
    let tasks = match super::task_store(&loaded) {
        Ok(t) => t,
        Err(e) => return crate::report(&e),
    };
    // Deleting holds the run lease: no run of this anchovy writes meanwhile.
    let lease = if args.delete {
        match Lease::acquire(&store, "anchovy-gc-cli", s.lease_ttl).await {
            Ok(l) => Some(l),
            Err(e) => return crate::report(&e),
        }
    } else {
        None
    };
    let keep_alive = lease.as_ref().map(Lease::keep_alive);
    let result = async {
        let plan = gc::plan(
            &store,
            &tasks,
            grace,
            keep,
            downstream.as_ref(),
            chrono::Utc::now(),
        )
        .await?;
        let deleted = match &lease {
            Some(_) => Some(gc::collect(&store, &tasks, &plan).await?),
            None => None,
        };
        Ok::<_, Error>((plan, deleted))
    }
    .await;
    if let (Some(k), Some(l)) = (keep_alive, &lease) {
        k.stop().await;
        let _ = l.release().await;
    }
    let (plan, deleted) = match result {
        Ok(x) => x,
        Err(e) => return crate::report(&e),
    };
    let (objects, bytes) = plan.size();
    if args.json {
        let keys = |v: &[anchovy_core::datastore::Entry]| {
            v.iter().map(|e| e.key.clone()).collect::<Vec<_>>()
        };
        crate::outln!(
            "{}",
            serde_json::json!({
                "datastore": store.location(),
                "dry_run": deleted.is_none(),
                "orphan_files": keys(&plan.orphans),
                "old_task_logs": plan.old_logs.len(),
                "old_worker_results": keys(&plan.old_results),
                "orphans_skipped": plan.orphans_skipped,
                "commits": plan.commits,
                "old_commits": {
                    "through": plan.old_commits.base.as_ref().map(|b| b.seq),
                    "records": plan.old_commits.records.len(),
                    "files": plan.old_commits.files.len(),
                    "rows": plan.old_commits.rows,
                    "bytes": plan.old_commits.bytes,
                    "uploaders": plan.old_commits.uploaders.iter().map(|(u, p)| serde_json::json!({"id": u, "position": p})).collect::<Vec<_>>(),
                    "kept_because": plan.old_commits.kept_because,
                },
                "objects": objects,
                "bytes": bytes,
                "deleted": deleted,
            })
        );
    } else {
        crate::outln!(
            "{} in {}:",
            if deleted.is_some() {
                "collected"
            } else {
                "would collect (dry run; --delete to delete)"
            },
            store.location()
        );
        crate::outln!(
            "  {} orphan data files (no commit lists them; older than {})",
            plan.orphans.len(),
            args.grace
        );
        for e in plan.orphans.iter().take(20) {
            crate::outln!(
                "    {} ({} bytes, {})",
                e.key,
                e.size,
                e.modified.format("%Y-%m-%dT%H:%M:%SZ")
            );
        }
        if plan.orphans.len() > 20 {
            crate::outln!(
                "    ... and {} more (--json lists all)",
                plan.orphans.len() - 20
            );
        }
        crate::outln!(
            "  {} task logs and {} worker results older than {}",
            plan.old_logs.len(),
            plan.old_results.len(),
            args.keep
        );
        if let Some(why) = &plan.orphans_skipped {
            crate::outln!("  orphans not looked for: {why}");
        }
        let c = &plan.old_commits;
        match &keep_commits {
            None => crate::outln!("  commit records: all kept (--keep-commits all)"),
            Some(_) => {
                crate::outln!(
                    "  {} old commit records and the {} data files they list ({} rows; older than {}, loaded by every uploader: {})",
                    c.records.len(),
                    c.files.len(),
                    c.rows,
                    args.keep_commits,
                    if c.uploaders.is_empty() {
                        "none found".to_string()
                    } else {
                        c.uploaders
                            .iter()
                            .map(|(u, p)| format!("{u} at {p}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                );
                if let Some(why) = &c.kept_because {
                    crate::outln!("  commits kept from there: {why}");
                }
            }
        }
        crate::outln!(
            "  {objects} objects, {bytes} bytes; {} commit records read",
            plan.commits
        );
    }
    ExitCode::from(exit::OK)
}
