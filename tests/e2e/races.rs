//! Races between runs: a cron double-fire of an uploader, a downloader committing while
//! its uploader reads, and two uploaders of different ids reading the same upstream.
//! Each behaves as the README documents, and every row lands exactly once.

use std::time::{Duration, Instant};

use crate::upload::{Target, fetch, upload, upload_args};
use crate::{Env, walk};

/// Writes `in/<name>.csv` with ids `from..to` atomically (a file appears whole).
fn drop_file(env: &Env, name: &str, ids: std::ops::Range<i64>) {
    let mut s = String::from("id\n");
    for i in ids {
        s.push_str(&format!("{i}\n"));
    }
    let tmp = env.write(&format!("in/.{name}.tmp"), s);
    std::fs::rename(tmp, env.path().join(format!("in/{name}.csv"))).unwrap();
}

fn setup() -> Env {
    let env = Env::new();
    env.write(
        "config.yaml",
        "config:\n  commit_interval: 0\ntbls:\n  ev:\n    path: in/*.csv\n    columns: {id: int}\n",
    );
    env.write("upload.yaml", "tbls: {}\n");
    env
}

fn download(env: &Env, up: &str, extra: &[(&str, &str)]) -> std::process::Child {
    env.spawn(&["start", "-op", "files.CsvDownloader", "--id", up], extra)
}

/// The ids in the target table, sorted; panics on a duplicate.
fn loaded(env: &Env, target: Target, up: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = fetch(
        target,
        env,
        &format!(
            "SELECT {} FROM {}",
            target.text("id"),
            target.table(up, "ev")
        ),
    )
    .iter()
    .map(|r| r[0].as_deref().unwrap().parse().unwrap())
    .collect();
    ids.sort_unstable();
    let dup = ids.windows(2).find(|w| w[0] == w[1]);
    assert!(dup.is_none(), "{target:?}: id {dup:?} loaded twice");
    ids
}

fn db_env(target: Target) -> Vec<(String, String)> {
    target
        .url()
        .map(|u| vec![("ACHVY_CNXN__DB__URI".to_string(), u)])
        .unwrap_or_default()
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Cron fires the same uploader twice at once: one loads, the other exits 5 at once
/// having touched nothing; the rows are there once.
#[test]
fn a_double_fired_uploader_runs_once() {
    for target in [Target::Sqlite, Target::Pg] {
        let env = setup();
        let up = format!("dbl_{}", env.nonce());
        drop_file(&env, "a", 0..500);
        assert!(download(&env, &up, &[]).wait().unwrap().success());
        let mut vars = db_env(target);
        // The winner holds its load open long enough for the second start to overlap.
        vars.push((
            "ACHVY_FAILPOINT".into(),
            "upload.before_commit:sleep-1500".into(),
        ));
        let args = upload_args("wh", &up);
        let a = env.spawn(&args, &pairs(&vars));
        std::thread::sleep(Duration::from_millis(300));
        let b = env.spawn(&args, &pairs(&vars)).wait_with_output().unwrap();
        assert_eq!(b.status.code(), Some(5), "{}", crate::stderr(&b));
        let mut a = a;
        assert!(
            a.try_wait().unwrap().is_none(),
            "the second start waited for the first instead of leaving at once"
        );
        assert!(
            crate::stderr(&b).contains("another run of this anchovy is in progress"),
            "{}",
            crate::stderr(&b)
        );
        let a = a.wait_with_output().unwrap();
        assert!(a.status.success(), "{}", crate::stderr(&a));
        assert_eq!(loaded(&env, target, &up), (0..500).collect::<Vec<_>>());
    }
}

/// A downloader stopped between writing its data files and its commit record (exactly
/// where an uploader could see half a commit): an uploader running then loads only
/// what was committed before; once the downloader commits, the next upload loads the
/// rest. Nothing is read twice or early.
#[test]
fn an_uploader_never_sees_a_commit_being_written() {
    let env = setup();
    let up = format!("mid_{}", env.nonce());
    drop_file(&env, "a", 0..300);
    assert!(download(&env, &up, &[]).wait().unwrap().success());
    drop_file(&env, "b", 300..700);
    let slow = download(
        &env,
        &up,
        &[("ACHVY_FAILPOINT", "commit.before:sleep-5000")],
    );
    // Wait until the data file of b.csv exists in the datastore (its commit does not).
    let area = env.area("tester", &up);
    let t0 = Instant::now();
    let data_files = || {
        walk(&area.join("data/ev"))
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".gz"))
            .count()
    };
    while data_files() < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no data file written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = upload(&env, Target::Sqlite, "wh", &up, &[]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert_eq!(
        loaded(&env, Target::Sqlite, &up),
        (0..300).collect::<Vec<_>>()
    );
    assert!(slow.wait_with_output().unwrap().status.success());
    let out = upload(&env, Target::Sqlite, "wh", &up, &[]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert_eq!(
        loaded(&env, Target::Sqlite, &up),
        (0..700).collect::<Vec<_>>()
    );
}

/// A downloader service commits new files every few hundred milliseconds while an
/// uploader loads in a loop: every upload sees whole commits only, and after the last
/// one the target holds every row once.
#[test]
fn a_downloader_service_and_its_uploader_run_side_by_side() {
    for target in [Target::Sqlite, Target::Pg] {
        let env = setup();
        let up = format!("side_{}", env.nonce());
        drop_file(&env, "f00", 0..100);
        let svc = env.spawn(
            &[
                "start",
                "-op",
                "files.CsvDownloader",
                "--id",
                &up,
                "-S",
                "--service-pause",
                "50ms",
            ],
            &[],
        );
        let vars = db_env(target);
        let area = env.area("tester", &up);
        let t0 = Instant::now();
        while crate::commit_count(&area) == 0 {
            assert!(t0.elapsed() < Duration::from_secs(20), "no first commit");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut uploads = 0;
        for f in 1..=12i64 {
            drop_file(&env, &format!("f{f:02}"), f * 100..f * 100 + 100);
            let out = upload(&env, target, "wh", &up, &pairs(&vars));
            assert!(out.status.success(), "{}", crate::stderr(&out));
            uploads += 1;
            // Whatever was loaded is a prefix of whole files: ids come in blocks of 100.
            let ids = loaded(&env, target, &up);
            assert_eq!(ids.len() % 100, 0, "{target:?}: a partial file was loaded");
        }
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &svc.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let out = svc.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", crate::stderr(&out));
        // The service may have stopped before the last file: one more run catches up.
        assert!(download(&env, &up, &[]).wait().unwrap().success());
        let out = upload(&env, target, "wh", &up, &pairs(&vars));
        assert!(out.status.success(), "{}", crate::stderr(&out));
        assert_eq!(
            loaded(&env, target, &up),
            (0..1300).collect::<Vec<_>>(),
            "{target:?} after {uploads} concurrent uploads"
        );
    }
}

/// Two uploaders with different ids load the same upstream into the same target
/// tables, at the same time: they share the target's position, so each commit is
/// loaded once, and both exit 0. Renaming the schema of one gives it its own copy.
#[test]
fn two_uploaders_of_one_upstream_share_the_target_position() {
    for target in [Target::Sqlite, Target::Pg] {
        let env = setup();
        let up = format!("two_{}", env.nonce());
        for f in 0..6i64 {
            drop_file(&env, &format!("f{f}"), f * 100..f * 100 + 100);
            // One commit per file: several units to race over.
            assert!(download(&env, &up, &[]).wait().unwrap().success());
        }
        env.write("upload.yaml", "tbls:\n  ev:\n    max_rows_per_load: 100\n");
        let mut vars = db_env(target);
        vars.push((
            "ACHVY_FAILPOINT".into(),
            "upload.staged_file:sleep-150".into(),
        ));
        let (a, b) = (upload_args("wh_a", &up), upload_args("wh_b", &up));
        let ca = env.spawn(&a, &pairs(&vars));
        let cb = env.spawn(&b, &pairs(&vars));
        let (oa, ob) = (
            ca.wait_with_output().unwrap(),
            cb.wait_with_output().unwrap(),
        );
        assert!(oa.status.success(), "{target:?} a: {}", crate::stderr(&oa));
        assert!(ob.status.success(), "{target:?} b: {}", crate::stderr(&ob));
        assert_eq!(loaded(&env, target, &up), (0..600).collect::<Vec<_>>());
        // Run again, one after the other: nothing new for either.
        for args in [&a, &b] {
            let out = env.cmd().args(args).envs(vars.clone()).output().unwrap();
            assert!(out.status.success(), "{}", crate::stderr(&out));
        }
        assert_eq!(loaded(&env, target, &up), (0..600).collect::<Vec<_>>());
        if target == Target::Sqlite {
            // An uploader whose schema is renamed keeps its own full copy.
            let own = format!("{up}_copy");
            let out = env
                .cmd()
                .args(a)
                .envs(vars.clone())
                .env(format!("ACHVY_CNXN__SCHEMAS__{up}"), &own)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", crate::stderr(&out));
            let n = fetch(
                target,
                &env,
                &format!("SELECT CAST(COUNT(*) AS TEXT) FROM \"{own}__tester__ev\""),
            );
            assert_eq!(n[0][0].as_deref(), Some("600"));
        }
    }
}
