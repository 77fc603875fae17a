//! The run lease with the real binary, on the local filesystem, Azurite and moto:
//! overlapping starts of one anchovy, a killed holder, and a paused (fenced-out) one.

use std::path::PathBuf;

use anchovy_core::Value;

use crate::{Env, committed, need};

/// A datastore URL per backend, fresh for this test.
fn datastores(env: &Env) -> Vec<String> {
    let nonce = env.nonce();
    vec![
        format!("file://{}/ds", env.path().display()),
        format!("az://{}/lease/{nonce}", need("AZURE_CONTAINER")),
        format!("s3://{}/lease/{nonce}", need("S3_BUCKET")),
    ]
}

fn vars(datastore: &str, extra: &[(&'static str, String)]) -> Vec<(String, String)> {
    let mut v = crate::store_vars(datastore, "3s");
    v.extend(extra.iter().map(|(k, val)| (k.to_string(), val.clone())));
    v
}

fn spawn(env: &Env, vars: &[(String, String)]) -> std::process::Child {
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.spawn(
        &["start", "-op", "files.CsvDownloader", "--id", "once"],
        &pairs,
    )
}

fn setup() -> Env {
    let env = Env::new();
    let mut s = String::from("id\n");
    for i in 0..500 {
        s.push_str(&format!("{i}\n"));
    }
    env.write("in/a.csv", s);
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/*.csv\n    columns: {id: int}\n",
    );
    env
}

fn assert_once(datastore: &str) {
    let rows = committed(&PathBuf::from(datastore), "tester", "once");
    let mut ids: Vec<i64> = rows["t"]
        .iter()
        .map(|r| match r["id"] {
            Value::Int(i) => i,
            ref o => panic!("{o:?}"),
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..500).collect::<Vec<_>>(),
        "{datastore}: rows lost or doubled"
    );
}

/// Eight starts of the same anchovy at once: exactly one runs, seven exit 5 at once
/// having written nothing (one session id in the whole area).
#[test]
fn eight_overlapping_starts_run_exactly_once() {
    for backend in 0..3 {
        let env = setup();
        let ds = datastores(&env).swap_remove(backend);
        // The winner pauses before its commit, so every other start overlaps it.
        let v = vars(
            &ds,
            &[("ACHVY_FAILPOINT", "commit.before:sleep-2500".into())],
        );
        let children: Vec<_> = (0..8).map(|_| spawn(&env, &v)).collect();
        let outs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
        assert_eq!(
            codes.iter().filter(|c| **c == Some(0)).count(),
            1,
            "{ds}: {codes:?}"
        );
        assert_eq!(
            codes.iter().filter(|c| **c == Some(5)).count(),
            7,
            "{ds}: {codes:?}"
        );
        let loser = outs.iter().find(|o| o.status.code() == Some(5)).unwrap();
        let err = crate::stderr(loser);
        assert!(
            err.contains("another run of this anchovy is in progress"),
            "{err}"
        );
        assert_once(&ds);
        // Losers wrote no task logs: every one belongs to the winner's session.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let sessions = rt.block_on(async {
            let area = anchovy_core::Datastore::open(&ds)
                .unwrap()
                .for_anchovy("tester", "once");
            let mut ids = std::collections::BTreeSet::new();
            for e in area.list("$task_logs").await.unwrap() {
                let log: serde_json::Value = area.get_json(&e.key).await.unwrap().unwrap();
                ids.insert(log["session_id"].as_str().unwrap().to_string());
            }
            ids
        });
        assert_eq!(sessions.len(), 1, "{ds}: {sessions:?}");
    }
}

/// A holder killed with SIGKILL never releases: on an object store the next start is
/// refused until the TTL passes, then takes over; on the local filesystem the OS lock
/// dies with the process. Either way the rerun loads everything exactly once.
#[test]
fn a_killed_holder_is_taken_over_after_the_ttl() {
    let env = setup();
    for ds in datastores(&env) {
        let v = vars(
            &ds,
            &[("ACHVY_FAILPOINT", "commit.before:sleep-10000".into())],
        );
        let mut holder = spawn(&env, &v);
        std::thread::sleep(std::time::Duration::from_millis(1500));
        holder.kill().unwrap();
        holder.wait().unwrap();
        let plain = vars(&ds, &[]);
        let pairs: Vec<(&str, &str)> = plain
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let run = || {
            env.cmd()
                .args(["start", "-op", "files.CsvDownloader", "--id", "once"])
                .envs(pairs.iter().copied())
                .output()
                .unwrap()
        };
        if !ds.starts_with("file://") {
            let out = run();
            assert_eq!(out.status.code(), Some(5), "{ds}: {}", crate::stderr(&out));
            std::thread::sleep(std::time::Duration::from_secs(3));
        }
        let out = run();
        assert!(out.status.success(), "{ds}: {}", crate::stderr(&out));
        if !ds.starts_with("file://") {
            assert!(crate::stderr(&out).contains("taking over an expired run lease"));
        }
        assert_once(&ds);
    }
}

/// A holder paused past its TTL (a stopped VM) is fenced out: another run takes over
/// and commits; the paused one wakes, fails its pre-commit renewal, exits 5 and
/// commits nothing. (Object stores only: a local OS lock cannot be lost while held.)
#[test]
fn a_paused_holder_is_fenced_out_and_commits_nothing() {
    let env = setup();
    for ds in datastores(&env).into_iter().skip(1) {
        let v = vars(
            &ds,
            &[("ACHVY_FAILPOINT", "commit.before:sleep-2000".into())],
        );
        let holder = spawn(&env, &v);
        std::thread::sleep(std::time::Duration::from_millis(1000));
        let err = pause_past_ttl_while_another_run_takes_over(&env, &ds, holder);
        assert!(err.contains("lost the run lease"), "{err}");
        assert_once(&ds);
    }
}

/// A service paused past its lease TTL while another run takes the lease over: when it
/// wakes its renewal fails, `/readyz` would report the lost lease, and it stops with
/// exit 5 instead of looping on commits it may no longer make.
#[test]
fn a_service_that_loses_its_lease_stops_with_exit_5() {
    let env = setup();
    let ds = format!("az://{}/lease/{}", need("AZURE_CONTAINER"), env.nonce());
    let v = vars(&ds, &[("ACHVY_SERVICE_PAUSE", "100ms".into())]);
    let pairs: Vec<(&str, &str)> = v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let svc = env.spawn(
        &["start", "-S", "-op", "files.CsvDownloader", "--id", "once"],
        &pairs,
    );
    let area = anchovy_core::Datastore::open(&ds)
        .unwrap()
        .for_anchovy("tester", "once");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t0 = std::time::Instant::now();
    while rt.block_on(area.list("$commits")).unwrap().is_empty() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "no commit from the service"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let err = pause_past_ttl_while_another_run_takes_over(&env, &ds, svc);
    assert!(err.contains("run lease"), "{err}");
    assert_once(&ds);
}

/// SIGSTOPs `holder` for longer than its lease TTL, runs the same anchovy to completion
/// meanwhile (it takes the lease over), wakes the holder and checks it exits 5; returns
/// the holder's stderr.
fn pause_past_ttl_while_another_run_takes_over(
    env: &Env,
    ds: &str,
    holder: std::process::Child,
) -> String {
    let pid = holder.id().to_string();
    let signal = |s: &str| {
        let ok = std::process::Command::new("kill")
            .args([s, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {s} {pid}");
    };
    signal("-STOP");
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let plain = vars(ds, &[]);
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "once"])
        .envs(plain.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(out.status.success(), "{ds}: {}", crate::stderr(&out));
    signal("-CONT");
    let out = holder.wait_with_output().unwrap();
    let err = crate::stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{ds}: {err}");
    err
}
