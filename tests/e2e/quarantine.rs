//! Bad records end to end: a download with bad rows commits the good ones and
//! quarantines the bad ones in the same commits (also across kills at every commit
//! point), the uploader loads both, a fixed config replays the quarantined records
//! exactly once, and max_rejects fails a table whose data is mostly bad.

use std::collections::BTreeMap;

use anchovy_core::Value;

use crate::upload::{Target, fetch};
use crate::{Env, committed, results, tbl_task};

const FILES: i64 = 6;
const ROWS: i64 = 200;

/// Every 23rd id has a value that is no int; every 41st is a ragged row.
fn bad_kind(id: i64) -> Option<&'static str> {
    if id % 41 == 0 {
        Some("ragged")
    } else if id % 23 == 0 {
        Some("type")
    } else {
        None
    }
}

fn setup(extra: &str) -> Env {
    let env = Env::new();
    for f in 0..FILES {
        let mut s = String::from("id,v\n");
        for i in 0..ROWS {
            let id = f * ROWS + i + 1;
            match bad_kind(id) {
                Some("ragged") => s.push_str(&format!("{id},{id},extra\n")),
                Some(_) => s.push_str(&format!("{id},x{id}\n")),
                None => s.push_str(&format!("{id},{id}\n")),
            }
        }
        env.write(&format!("in/f{f}.csv"), s);
    }
    env.write(
        "config.yaml",
        format!(
            "config:\n  commit_interval: 0\n  batch_size: 16\ntbls:\n  t:\n    path: in/*.csv\n    unique_by: id\n    columns: {{id: int, v: int}}\n    on_bad_record: quarantine\n    load_rejects: true\n{extra}"
        ),
    );
    env
}

/// (good ids in `t`, ids of quarantined records not yet replayed... all of them).
fn committed_ids(env: &Env, id: &str) -> (BTreeMap<i64, usize>, BTreeMap<i64, usize>) {
    let rows = committed(&env.home(), "tester", id);
    let mut good = BTreeMap::new();
    for r in rows.get("t").into_iter().flatten() {
        let Value::Int(i) = r["id"] else {
            panic!("id not int: {:?}", r["id"])
        };
        *good.entry(i).or_default() += 1;
    }
    let mut bad = BTreeMap::new();
    for r in rows.get("$rejects/t").into_iter().flatten() {
        let raw = r["raw"].text().into_owned();
        let i: i64 = raw.split(',').next().unwrap().parse().unwrap();
        *bad.entry(i).or_default() += 1;
        assert!(r["reason"].text().len() > 10, "a reason: {r:?}");
        assert!(r["source"].text().starts_with("in/f"), "{r:?}");
    }
    (good, bad)
}

fn assert_every_record_once(env: &Env, id: &str) {
    let (good, bad) = committed_ids(env, id);
    let all = FILES * ROWS;
    let want_good: Vec<i64> = (1..=all).filter(|i| bad_kind(*i).is_none()).collect();
    let want_bad: Vec<i64> = (1..=all).filter(|i| bad_kind(*i).is_some()).collect();
    assert_eq!(
        good.keys().copied().collect::<Vec<_>>(),
        want_good,
        "good rows"
    );
    assert!(good.values().all(|n| *n == 1), "a good row committed twice");
    assert_eq!(
        bad.keys().copied().collect::<Vec<_>>(),
        want_bad,
        "quarantined records"
    );
    assert!(bad.values().all(|n| *n == 1), "a record quarantined twice");
}

/// `anchovy rejects replay` of downloader `id`; its run results.
fn replay(env: &Env, id: &str) -> serde_json::Value {
    let out = env
        .cmd()
        .args(["rejects", "replay", "-op", "files.CsvDownloader", "-i", id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    results(&out)
}

fn start(env: &Env, id: &str, envs: &[(&str, &str)]) -> std::process::Output {
    env.cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", id])
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn quarantine_download_upload_fix_replay_exactly_once() {
    let env = setup("");
    let out = start(&env, "dl", &[]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let r = results(&out);
    let data = &tbl_task(&r, "t")["data"];
    let bad = (1..=FILES * ROWS)
        .filter(|i| bad_kind(*i).is_some())
        .count() as u64;
    assert_eq!(data["rejected"], bad, "{data}");
    assert_eq!(data["quarantined"], bad, "{data}");
    assert_eq!(data["rows"], (FILES * ROWS) as u64 - bad, "{data}");
    assert_every_record_once(&env, "dl");
    // Each commit holds a file's good rows and its rejects together.
    let commits = std::fs::read_dir(env.area("tester", "dl").join("$commits")).unwrap();
    let together = commits
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .filter(|c| c.contains("\"tbl\":\"t\"") && c.contains("\"tbl\":\"$rejects/t\""))
        .count();
    assert!(together >= 1, "rejects are committed with the good rows");

    // Listed by `anchovy rejects`, as text and JSON.
    let out = env
        .cmd()
        .args(["rejects", "-i", "dl", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len() as u64, bad);
    assert!(
        listed
            .iter()
            .any(|l| l["reason"].as_str().unwrap().contains("is not a valid int"))
    );
    assert!(listed.iter().any(|l| {
        l["reason"]
            .as_str()
            .unwrap()
            .contains("3 fields but the header has 2")
    }));
    let out = env
        .cmd()
        .args(["rejects", "t", "-i", "dl"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("in/f0.csv:24"));

    // The uploader loads the good rows, and the rejects into t__rejects.
    let up = |env: &Env| {
        let out = env
            .cmd()
            .args(["start", "-op", "sql.Uploader", "--id", "up", "-U", "dl"])
            .env("ACHVY_CNXN__DB__URI", "sqlite://")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", crate::stderr(&out));
    };
    up(&env);
    let count = |table: &str| {
        fetch(Target::Sqlite, &env, &format!("SELECT CAST(COUNT(*) AS TEXT), CAST(COUNT(DISTINCT {}) AS TEXT) FROM \"dl__tester__{table}\"", if table == "t" { "id" } else { "raw" }))[0]
            .iter()
            .map(|v| v.clone().unwrap().parse::<u64>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(count("t"), vec![(FILES * ROWS) as u64 - bad; 2]);
    assert_eq!(count("t__rejects"), vec![bad; 2]);

    // The fix: `v` is text after all. Replay: the type rejects land, the ragged stay.
    let cfg = std::fs::read_to_string(env.path().join("config.yaml")).unwrap();
    env.write("config.yaml", cfg.replace("{id: int, v: int}", "{id: int}"));
    let replay = || replay(&env, "dl");
    let ragged = (1..=FILES * ROWS)
        .filter(|i| bad_kind(*i) == Some("ragged"))
        .count() as u64;
    let r = replay();
    let d = &tbl_task(&r, "t")["data"];
    assert_eq!(d["rows_replayed"], bad - ragged, "{d}");
    assert_eq!(d["still_rejected"], ragged, "{d}");
    // A second replay finds only the re-quarantined ragged rows.
    let r = replay();
    assert_eq!(tbl_task(&r, "t")["data"]["rows_replayed"], 0);
    up(&env);
    assert_eq!(
        count("t"),
        vec![(FILES * ROWS) as u64 - ragged; 2],
        "every fixed record once"
    );
    let out = env
        .cmd()
        .args(["rejects", "-i", "dl", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count() as u64,
        ragged
    );
}

/// Killed at every commit point of a quarantining run, then rerun: every good row
/// and every quarantined record is committed exactly once.
#[test]
fn kills_during_a_quarantining_run_lose_and_double_nothing() {
    for fp in [
        "commit.before:3",
        "commit.after:2",
        "datafile.finish:4",
        "source.batch:7",
        "checkpoint.mirrors:2",
    ] {
        let env = setup("");
        let out = start(&env, "k", &[("ACHVY_FAILPOINT", fp)]);
        assert_eq!(
            out.status.code(),
            Some(86),
            "{fp} did not fire: {}",
            crate::stderr(&out)
        );
        let out = start(&env, "k", &[]);
        assert!(out.status.success(), "{fp}: {}", crate::stderr(&out));
        assert_every_record_once(&env, "k");
    }
}

/// skip counts and drops; max_rejects (a count or a share) fails a mostly bad table
/// with the reason, exit 1, nothing of it committed past the limit.
#[test]
fn skip_and_max_rejects() {
    let env = setup("");
    let cfg = std::fs::read_to_string(env.path().join("config.yaml")).unwrap();
    env.write("config.yaml", cfg.replace("quarantine", "skip"));
    let out = start(&env, "s", &[("ACHVY_METRICS_FILE", "m.prom")]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let (good, bad) = committed_ids(&env, "s");
    assert!(bad.is_empty(), "skip keeps nothing");
    assert_eq!(
        good.len() as i64,
        (1..=FILES * ROWS)
            .filter(|i| bad_kind(*i).is_none())
            .count() as i64
    );
    let prom = std::fs::read_to_string(env.path().join("m.prom")).unwrap();
    assert!(
        prom.contains("anchovy_rejected_records_total{anchovy=\"s\""),
        "{prom}"
    );
    for limit in ["5", "2%"] {
        env.write(
            "config.yaml",
            cfg.replace("load_rejects: true", &format!("max_rejects: {limit}")),
        );
        let id = format!("m{}", limit.replace('%', "p"));
        let out = start(&env, &id, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", crate::stderr(&out));
        let err = crate::stderr(&out);
        assert!(err.contains("over max_rejects"), "{err}");
    }
    // The default is fail: the first bad record fails the table, naming it.
    env.write(
        "config.yaml",
        cfg.replace("    on_bad_record: quarantine\n", ""),
    );
    let out = start(&env, "f", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        crate::stderr(&out).contains("in/f0.csv:24: column `v`: `x23` is not a valid int"),
        "{}",
        crate::stderr(&out)
    );
}

/// A row without its key is quarantined as a row (it parsed; only the merge refuses
/// it) and replays as a row once the key is fixed.
#[test]
fn a_row_without_its_key_is_quarantined_and_replays() {
    let env = Env::new();
    env.write("in/k.csv", "id,v\n1,a\n,b\n3,c\n");
    let cfg = |key: &str| {
        format!(
            "tbls:\n  k:\n    path: in/*.csv\n    unique_by: {key}\n    columns: {{id: int}}\n    on_bad_record: quarantine\n"
        )
    };
    env.write("config.yaml", cfg("id"));
    let out = start(&env, "nk", &[]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let rows = committed(&env.home(), "tester", "nk");
    assert_eq!(rows["k"].len(), 2);
    let q = &rows["$rejects/k"];
    assert_eq!(q.len(), 1);
    assert!(
        q[0]["reason"]
            .text()
            .contains("no value in unique_by column `id`"),
        "{q:?}"
    );
    assert_eq!(q[0]["format"].text(), "row");
    // Still keyless: quarantined again, not lost.
    let replay = || replay(&env, "nk");
    replay();
    let rows = committed(&env.home(), "tester", "nk");
    assert_eq!((rows["k"].len(), rows["$rejects/k"].len()), (2, 2));
    // Keyed by `v` now: the row lands, once.
    env.write("config.yaml", cfg("v"));
    replay();
    replay();
    let rows = committed(&env.home(), "tester", "nk");
    assert_eq!(rows["k"].len(), 3);
    assert_eq!(rows["k"][2]["v"], Value::from("b"));
}
