//! `anchovy gc`: orphan data files of killed runs and old logs are collected (listed
//! first in a dry run), committed data never; a kill in the middle of a collection and
//! a rerun leave every row exactly once; a running anchovy keeps gc from deleting.

use crate::{Env, committed};

fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .map(|e| {
                if e.path().is_dir() {
                    files_under(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

fn gc(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    let mut c = env.cmd();
    c.args(["gc", "--id", "g"]).args(args);
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", crate::stderr(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", crate::stderr(out)))
}

#[test]
fn gc_collects_orphans_and_old_logs_and_never_committed_data() {
    let env = Env::new();
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/*.csv\n    unique_by: id\n",
    );
    env.write("in/1.csv", "id\n1\n2\n");
    let start = |vars: &[(&str, &str)]| {
        let mut c = env.cmd();
        c.args(["start", "-op", "files.CsvDownloader", "--id", "g"]);
        for (k, v) in vars {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    assert!(start(&[]).status.success());
    // A run killed right before its commit leaves a data file no commit lists.
    env.write("in/2.csv", "id\n3\n4\n");
    let out = start(&[("ACHVY_FAILPOINT", "commit.before")]);
    assert_eq!(out.status.code(), Some(86), "{}", crate::stderr(&out));
    let area = env.area("tester", "g");
    let data = area.join("data");
    let before = files_under(&data);
    assert_eq!(before, 2, "one committed file, one orphan");

    // A duration that is none is refused, naming the flag (exit 2).
    for flag in ["--grace", "--keep", "--keep-commits"] {
        let out = gc(&env, &[flag, "soon"], &[]);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        assert!(
            crate::stderr(&out).contains(flag),
            "{}",
            crate::stderr(&out)
        );
    }
    // A dry run lists; with the default grace (1h) the new orphan is kept.
    let plan = json(&gc(&env, &["--json"], &[]));
    assert_eq!(plan["orphan_files"].as_array().unwrap().len(), 0, "{plan}");
    let plan = json(&gc(&env, &["--json", "--grace", "0s", "--keep", "0s"], &[]));
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["orphan_files"].as_array().unwrap().len(), 1, "{plan}");
    assert!(plan["old_task_logs"].as_u64().unwrap() >= 5, "{plan}");
    assert_eq!(plan["commits"], 1);
    assert!(
        plan["old_commits"]["kept_because"]
            .as_str()
            .unwrap()
            .contains("no uploader of `g`"),
        "{plan}"
    );
    assert_eq!(files_under(&data), before, "a dry run deletes nothing");

    // While a run holds the lease, gc does not delete (exit 5).
    let port = "0";
    let service = env.spawn(
        &[
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            "g",
            "-S",
            "--service-pause",
            "1h",
            "--port",
            port,
        ],
        &[],
    );
    // Once its first batch is done (its task logs are written), it holds the lease.
    let logs = area.join("$task_logs");
    let n0 = files_under(&logs);
    let t0 = std::time::Instant::now();
    while files_under(&logs) < n0 + 3 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "the service did not run"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let locked = gc(&env, &["--delete", "--grace", "0s"], &[]);
    assert_eq!(locked.status.code(), Some(5), "{}", crate::stderr(&locked));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &service.id().to_string()])
        .status();
    let out = service.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));

    // The service committed the killed run's file meanwhile: what is left to collect is
    // the orphan of the killed run and the logs. A kill in the middle of the collection,
    // then a rerun: everything collected, nothing else.
    let out = gc(
        &env,
        &["--delete", "--grace", "0s", "--keep", "0s"],
        &[("ACHVY_FAILPOINT", "gc.delete:2")],
    );
    assert_eq!(out.status.code(), Some(86), "{}", crate::stderr(&out));
    let done = json(&gc(
        &env,
        &["--delete", "--grace", "0s", "--keep", "0s", "--json"],
        &[],
    ));
    assert_eq!(done["dry_run"], false);
    let left = json(&gc(&env, &["--json", "--grace", "0s", "--keep", "0s"], &[]));
    assert_eq!(left["objects"], 0, "{left}");
    assert_eq!(files_under(&area.join("$task_logs")), 0);
    // Every committed file is there, and every row once.
    let mut ids: Vec<String> = committed(&env.home(), "tester", "g")
        .into_values()
        .flatten()
        .map(|r| format!("{:?}", r["id"]))
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 4, "{ids:?}");
    ids.dedup();
    assert_eq!(ids.len(), 4, "{ids:?}");
    // `anchovy tables` still knows the last load (from $last_loads, not the logs).
    let out = env.cmd().args(["tables", "--id", "g"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("t ") && l.contains("OK")),
        "{text}"
    );
}

/// An anchovy's area, read and changed through the datastore API (any store).
struct Area {
    rt: tokio::runtime::Runtime,
    ds: anchovy_core::Datastore,
}

impl Area {
    fn new(root: &str, id: &str) -> Area {
        Area {
            rt: tokio::runtime::Runtime::new().unwrap(),
            ds: anchovy_core::Datastore::open(root)
                .unwrap()
                .for_anchovy("tester", id),
        }
    }

    /// The seqs of the commit records.
    fn seqs(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .rt
            .block_on(self.ds.list("$commits"))
            .unwrap()
            .iter()
            .filter_map(|e| anchovy_core::datastore::layout::commit_seq(&e.key))
            .collect();
        v.sort();
        v
    }

    fn exists(&self, key: &str) -> bool {
        self.rt.block_on(self.ds.exists(key)).unwrap()
    }

    fn delete(&self, key: &str) {
        self.rt.block_on(self.ds.delete(key)).unwrap()
    }
}

/// Old commit records go once every uploader has loaded past them, with the files they
/// list, behind a base that keeps the history's identity and the checkpoint state: a
/// kill in the middle, then the downloader (even from its mirrors alone), the
/// collection again and the uploader each carry on with every row once, and an
/// uploader that would need a collected commit (a new one, a dropped table) fails
/// with the reason instead of loading part of the history. On the local filesystem,
/// S3 (moto) and Azure Blob (Azurite).
#[test]
fn gc_collects_old_commits_every_uploader_has_loaded() {
    for store in ["fs", "s3", "azure"] {
        old_commits_on(store);
    }
}

fn old_commits_on(store: &str) {
    use crate::upload::{Target, fetch};
    let env = Env::new();
    let url = match store {
        "s3" => Some(format!(
            "s3://{}/gc/{}",
            crate::need("S3_BUCKET"),
            env.nonce()
        )),
        "azure" => Some(format!(
            "az://{}/gc/{}",
            crate::need("AZURE_CONTAINER"),
            env.nonce()
        )),
        _ => None,
    };
    let vars: Vec<(String, String)> = url
        .as_deref()
        .map(|u| crate::store_vars(u, "3s"))
        .unwrap_or_default();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let area = Area::new(
        url.as_deref().unwrap_or(&env.home().display().to_string()),
        "g",
    );
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/*.csv\n    unique_by: id\n",
    );
    let run = || {
        let out = env
            .cmd()
            .args(["start", "-op", "files.CsvDownloader", "--id", "g"])
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{store}: {}", crate::stderr(&out));
    };
    let download = |i: u32| {
        env.write(
            &format!("in/{i}.csv"),
            format!("id,v\n{},a\n{},b\n", 2 * i - 1, 2 * i),
        );
        run();
    };
    let db = Target::Sqlite.sqlite_file(&env);
    // The target's file lives beside the local datastore's areas, whatever the store.
    std::fs::create_dir_all(env.home().join("tester")).unwrap();
    let fresh = format!("sqlite://{}", env.path().join("fresh.sqlite").display());
    let upload = |id: &str| {
        env.cmd()
            .args(["start", "-op", "sql.Uploader", "--id", id, "-U", "g"])
            .envs(vars.iter().copied())
            .env(
                "ACHVY_CNXN__DB__URI",
                if id == "up2" { &fresh } else { &db },
            )
            .output()
            .unwrap()
    };
    let gc = |args: &[&str], more: &[(&str, &str)]| {
        let mut all = vars.clone();
        all.extend_from_slice(more);
        gc(&env, args, &all)
    };
    for i in 1..=3 {
        download(i);
    }
    let out = upload("up");
    assert!(out.status.success(), "{store}: {}", crate::stderr(&out));
    let loaded = *area.seqs().last().unwrap();
    download(4);
    let all = area.seqs();
    assert!(all.len() as u64 > loaded, "{store}: {all:?}");

    // Young commits are kept; with no retention, the prefix the uploader passed goes.
    let plan = json(&gc(&["--json"], &[]));
    assert_eq!(plan["old_commits"]["records"], 0, "{plan}");
    assert!(
        plan["old_commits"]["kept_because"]
            .as_str()
            .unwrap()
            .contains("younger than the retention"),
        "{plan}"
    );
    let plan = json(&gc(&["--json", "--keep-commits", "0s"], &[]));
    assert_eq!(plan["old_commits"]["through"], loaded, "{plan}");
    assert_eq!(plan["old_commits"]["uploaders"][0]["id"], "up", "{plan}");
    assert_eq!(plan["old_commits"]["rows"], 2 * loaded, "{plan}");
    assert!(
        plan["old_commits"]["kept_because"]
            .as_str()
            .unwrap()
            .contains("uploader `up` has loaded table t up to commit"),
        "{plan}"
    );
    // `--keep-commits all` keeps them.
    let plan = json(&gc(&["--json", "--keep-commits", "all"], &[]));
    assert_eq!(plan["old_commits"]["records"], 0, "{plan}");

    // Killed after the base and one deletion.
    let out = gc(
        &["--delete", "--keep-commits", "0s"],
        &[("ACHVY_FAILPOINT", "gc.delete:2")],
    );
    assert_eq!(
        out.status.code(),
        Some(86),
        "{store}: {}",
        crate::stderr(&out)
    );
    assert!(area.exists("$commits/_base.json"), "{store}");
    // The downloader carries on from its state, even when only the mirrors are left
    // (no snapshot, no marker of what they reflect): the base holds the state.
    area.delete("$checkpoints/_state");
    area.delete("$checkpoints/_applied");
    // The killed collection's lease expires (3 s on an object store).
    if url.is_some() {
        std::thread::sleep(std::time::Duration::from_secs(4));
    }
    download(5);
    let done = json(&gc(&["--delete", "--keep-commits", "0s", "--json"], &[]));
    assert_eq!(done["dry_run"], false, "{done}");
    let left = area.seqs();
    assert!(left.iter().all(|s| *s > loaded), "{store}: {left:?}");
    // A run with nothing new reads nothing again (its checkpoints survived).
    let before = area.seqs();
    run();
    assert_eq!(area.seqs(), before, "{store}");

    // The uploader loads the rest: every row once.
    let out = upload("up");
    assert!(out.status.success(), "{store}: {}", crate::stderr(&out));
    let t = Target::Sqlite;
    let rows = fetch(
        t,
        &env,
        &format!(
            "SELECT {} FROM {} ORDER BY id",
            t.text("id"),
            t.table("g", "t")
        ),
    );
    let mut ids: Vec<u64> = rows
        .into_iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>(), "{store}");

    // A new uploader (into a new database), and the old one after its table was
    // dropped, would need the collected commits: both fail, saying so.
    for id in ["up2", "up"] {
        if id == "up" {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                use std::str::FromStr;
                let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&db).unwrap();
                let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP TABLE {}",
                    t.table("g", "t")
                )))
                .execute(&pool)
                .await
                .unwrap();
            });
        }
        let out = upload(id);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{store} {id}: {}",
            crate::stderr(&out)
        );
        let e = crate::stderr(&out);
        assert!(
            e.contains(&format!("`anchovy gc` collected its commits 1..={loaded}")),
            "{store} {id}: {e}"
        );
    }
}
