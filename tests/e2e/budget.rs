//! Budgets (`--max-rows`, `--max-bytes`, `--max-duration`): a run stops taking new work
//! once spent, commits what it did, exits 6 (more work pending); reruns resume exactly
//! where it stopped until everything is loaded once.

use crate::upload::{Target, fetch, upload};
use crate::{Env, results};

/// Six files of 100 rows; a commit per file.
fn setup() -> Env {
    let env = Env::new();
    for f in 0..6 {
        let mut s = String::from("id,file\n");
        for i in 0..100 {
            s.push_str(&format!("{},{f}\n", f * 100 + i));
        }
        env.write(&format!("in/f{f}.csv"), s);
    }
    env.write(
        "config.yaml",
        "config:\n  commit_interval: 0\ntbls:\n  t:\n    path: in/*.csv\n    columns: {id: int}\n",
    );
    env.write("upload.yaml", "tbls:\n  t:\n    max_rows_per_load: 100\n");
    env
}

fn download(env: &Env, budget: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "src"])
        .args(budget)
        .output()
        .unwrap();
    let code = out.status.code();
    (code, results(&out))
}

#[test]
fn a_row_budget_stops_downloads_and_uploads_and_reruns_resume_exactly_once() {
    let env = setup();
    let mut codes = vec![];
    loop {
        let (code, r) = download(&env, &["--max-rows", "150"]);
        assert_eq!(r["status"], "OK", "{r}");
        assert_eq!(r["more_work_pending"], code == Some(6), "{r}");
        codes.push(code);
        if code != Some(6) {
            break;
        }
        assert!(codes.len() < 6, "no progress: {codes:?}");
    }
    // 2 files per run (the budget is checked before each file after the first).
    assert_eq!(codes, vec![Some(6), Some(6), Some(0)]);
    let rows = crate::committed(&env.home(), "tester", "src");
    assert_eq!(rows["t"].len(), 600);
    // The uploader: one 100-row unit per upstream commit, two per run.
    let mut codes = vec![];
    loop {
        let out = upload(
            &env,
            Target::Sqlite,
            "wh",
            "src",
            &[("ACHVY_MAX_ROWS", "150")],
        );
        codes.push(out.status.code());
        if out.status.code() != Some(6) {
            assert!(out.status.success(), "{}", crate::stderr(&out));
            break;
        }
        assert!(codes.len() < 6, "no progress: {codes:?}");
    }
    assert_eq!(codes, vec![Some(6), Some(6), Some(0)]);
    let t = Target::Sqlite.table("src", "t");
    let n = fetch(
        Target::Sqlite,
        &env,
        &format!("SELECT CAST(COUNT(*) AS TEXT), CAST(COUNT(DISTINCT id) AS TEXT) FROM {t}"),
    );
    assert_eq!(n, vec![vec![Some("600".into()), Some("600".into())]]);
}

#[test]
fn duration_and_byte_budgets_take_one_unit_per_run_when_spent() {
    let env = setup();
    let (code, _) = download(&env, &["--max-duration", "0s"]);
    assert_eq!(code, Some(6));
    assert_eq!(
        crate::committed(&env.home(), "tester", "src")["t"].len(),
        100
    );
    let (code, _) = download(&env, &["--max-bytes", "1"]);
    assert_eq!(code, Some(6));
    assert_eq!(
        crate::committed(&env.home(), "tester", "src")["t"].len(),
        200
    );
    let (code, _) = download(&env, &[]);
    assert_eq!(code, Some(0));
    assert_eq!(
        crate::committed(&env.home(), "tester", "src")["t"].len(),
        600
    );
}
