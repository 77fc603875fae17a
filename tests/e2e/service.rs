//! Service mode (`start -S`): batches loop with a pause, back off after failures, and a
//! stop signal lets the current batch finish (or cancels it after the grace period);
//! either way the service exits 0 and nothing is lost or doubled.

use std::time::{Duration, Instant};

use crate::{Env, commit_count, committed, results};

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn term(child: &std::process::Child) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn ids(env: &Env, id: &str) -> Vec<String> {
    let mut v: Vec<String> = committed(&env.home(), "tester", id)
        .get("t")
        .map(|rows| rows.iter().map(|r| format!("{:?}", r["id"])).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn new_files_across_batches_and_sigterm_mid_batch_finishes_it() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    // Each batch of rows takes 1.5 s: a signal can land mid-batch on purpose.
    let child = env.spawn(
        &[
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            "svc",
            "-S",
            "--service-pause",
            "100ms",
        ],
        &[("ACHVY_FAILPOINT", "source.batch:sleep-1500")],
    );
    let area = env.area("tester", "svc");
    wait_for("the first commit", || commit_count(&area) >= 1);
    env.write("in/b.csv", "id\n2\n");
    // The next batch picks b.csv up; stop it while it sleeps inside that batch.
    std::thread::sleep(Duration::from_millis(700));
    term(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
    let err = crate::stderr(&out);
    assert!(err.contains("finishing the current batch"), "{err}");
    let r = results(&out);
    assert!(r["batches"].as_array().unwrap().len() >= 2);
    assert_eq!(ids(&env, "svc"), vec!["String(\"1\")", "String(\"2\")"]);
    // A rerun finds nothing missing and nothing new.
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "svc"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(ids(&env, "svc").len(), 2);
}

#[test]
fn past_the_grace_period_the_batch_is_cancelled_and_redone_by_the_next_run() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    let child = env.spawn(
        &[
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            "g",
            "-S",
            "--stop-grace",
            "300ms",
        ],
        &[("ACHVY_FAILPOINT", "source.batch:sleep-5000")],
    );
    std::thread::sleep(Duration::from_millis(800));
    let t0 = Instant::now();
    term(&child);
    let out = child.wait_with_output().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "the grace period was not enforced"
    );
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
    assert!(crate::stderr(&out).contains("grace period over"));
    assert!(ids(&env, "g").is_empty(), "a cancelled batch committed");
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "g"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(ids(&env, "g"), vec!["String(\"1\")"]);
}

#[test]
fn failed_batches_back_off() {
    let env = Env::new();
    env.write("in/bad.csv", "id,x\n1\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    let child = env.spawn(
        &[
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            "b",
            "-S",
            "--service-pause",
            "100ms",
        ],
        &[],
    );
    std::thread::sleep(Duration::from_millis(1200));
    term(&child);
    let out = child.wait_with_output().unwrap();
    let err = crate::stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("failures=1 pause_s=0.2"), "{err}");
    assert!(err.contains("failures=2 pause_s=0.4"), "{err}");
}
