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
    for flag in ["--grace", "--keep"] {
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
    assert_eq!(plan["commits_kept"], 1);
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
