//! Crashes at named failpoints, then a rerun: every row committed exactly once, and
//! checkpoints never ahead of the data.

use std::collections::BTreeMap;

use anchovy_core::Value;

use crate::{Env, committed};

/// Six files of 1000 rows; a commit after every file (commit interval 0).
fn setup() -> Env {
    let env = Env::new();
    for f in 0..6 {
        let mut s = String::from("id,file\n");
        for i in 0..1000 {
            s.push_str(&format!("{},{f}\n", f * 1000 + i));
        }
        env.write(&format!("in/f{f}.csv"), s);
    }
    env.write("config.yaml", "config:\n  commit_interval: 0\n  batch_size: 300\ntbls:\n  t:\n    path: in/*.csv\n    columns: {id: int}\n");
    env
}

fn assert_exactly_once(env: &Env, id: &str) {
    let rows = committed(&env.home(), "tester", id);
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for r in &rows["t"] {
        let Value::Int(i) = r["id"] else {
            panic!("id not int: {:?}", r["id"])
        };
        *seen.entry(i).or_default() += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "rows loaded twice: {:?}",
        &doubled[..doubled.len().min(5)]
    );
    assert_eq!(seen.len(), 6000, "rows lost");
}

fn crash_then_rerun(failpoint: &str) {
    let env = setup();
    let id = "crash";
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", id])
        .env("ACHVY_FAILPOINT", failpoint)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(86),
        "failpoint {failpoint} did not fire: {}",
        crate::stderr(&out)
    );
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert_exactly_once(&env, id);
    // A third run finds nothing to do.
    let before = crate::commit_count(&env.area("tester", id));
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", id])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(crate::commit_count(&env.area("tester", id)), before);
}

#[test]
fn crash_before_a_commit() {
    crash_then_rerun("commit.before:3");
}

#[test]
fn crash_right_after_a_commit() {
    crash_then_rerun("commit.after:2");
}

#[test]
fn crash_before_checkpoint_mirrors_are_written() {
    crash_then_rerun("checkpoint.mirrors:4");
}

#[test]
fn crash_while_finishing_a_data_file() {
    crash_then_rerun("datafile.finish:3");
}

#[test]
fn crash_mid_stream() {
    crash_then_rerun("source.batch:11");
}
