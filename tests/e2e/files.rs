//! files.CsvDownloader: globs, incremental reruns, changed files, CSV edge cases.

use std::collections::BTreeMap;

use anchovy_core::Value;

use crate::{Env, commit_count, committed, results, tbl_data, tbl_task};

fn run(env: &Env, id: &str) -> serde_json::Value {
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    results(&out)
}

#[test]
fn glob_across_folders_and_incremental_reruns() {
    let env = Env::new();
    env.write("in/2024/01/a.csv", "id,v\n1,x\n");
    env.write("in/2024/02/b.csv", "id,v\n2,y\n");
    env.write("in/2024/02/skip.txt", "not csv\n");
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/**/[ab].csv\n    unique_by: id\n    columns: {id: int}\n",
    );
    let r = run(&env, "g");
    assert_eq!(tbl_data(&r, "t")["rows"], 2);
    let area = env.area("tester", "g");
    let commits = commit_count(&area);

    // Nothing new: nothing written.
    let r = run(&env, "g");
    assert_eq!(tbl_data(&r, "t")["rows"], 0);
    assert_eq!(tbl_data(&r, "t")["files_skipped"], 2);
    assert_eq!(commit_count(&area), commits);

    // A new file is read alone; a modified file is read again.
    env.write("in/2024/03/a.csv", "id,v\n3,z\n");
    std::thread::sleep(std::time::Duration::from_millis(20));
    env.write("in/2024/01/a.csv", "id,v\n1,x2\n");
    let r = run(&env, "g");
    assert_eq!(tbl_data(&r, "t")["rows"], 2);
    assert_eq!(tbl_data(&r, "t")["files_read"], 2);
    let rows = committed(&env.home(), "tester", "g");
    let vs: Vec<&Value> = rows["t"].iter().map(|r| &r["v"]).collect();
    assert_eq!(
        vs,
        vec![
            &Value::from("x"),
            &Value::from("y"),
            &Value::from("x2"),
            &Value::from("z")
        ]
    );
    // The checkpoints name each file.
    let out = env
        .cmd()
        .args(["checkpoints", "--id", "g", "t:*"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.contains("t:in/2024/02/b.csv"));
}

#[test]
fn csv_edge_cases_end_to_end() {
    let env = Env::new();
    env.write(
        "in/quotes.csv",
        "id,note\n1,\"a, \"\"quoted\"\" note\nwith a newline\"\n2,plain\n",
    );
    env.write("in/bom.csv", "\u{feff}id,note\n3,bom\n");
    env.write("in/empty.csv", "");
    env.write("in/header_only.csv", "id,note\n");
    env.write("latin/l.csv", b"id;note\n4;caf\xe9\n");
    env.write("gz/z.csv.gz", gzip(b"id,note\n5,zipped\n"));
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/*.csv\n    columns: {id: int}\n  l:\n    path: latin/*.csv\n    delimiter: ';'\n    encoding: latin-1\n  z:\n    path: gz/*.csv.gz\n",
    );
    run(&env, "c");
    let rows = committed(&env.home(), "tester", "c");
    let notes: Vec<(Value, Value)> = rows["t"]
        .iter()
        .map(|r| (r["id"].clone(), r["note"].clone()))
        .collect();
    assert_eq!(
        notes,
        vec![
            (Value::Int(3), Value::from("bom")),
            (
                Value::Int(1),
                Value::from("a, \"quoted\" note\nwith a newline")
            ),
            (Value::Int(2), Value::from("plain")),
        ]
    );
    assert_eq!(rows["l"][0]["note"], Value::from("café"));
    assert_eq!(rows["z"][0]["note"], Value::from("zipped"));
    // The BOM did not leak into the first column name.
    assert!(rows["t"].iter().all(|r| r.contains_key("id")));
}

#[test]
fn a_bad_value_names_file_line_column_and_value() {
    let env = Env::new();
    env.write("in/a.csv", "id,amount\n1,2.5\n2,lots\n");
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/*.csv\n    columns: {amount: decimal}\n",
    );
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r = results(&out);
    let err = r["batches"][0]["tasks"][1]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains("in/a.csv:3: column `amount`: `lots` is not a valid decimal"),
        "{err}"
    );
    // Fix the file: the rerun loads it whole, once.
    env.write("in/a.csv", "id,amount\n1,2.5\n2,3\n");
    run(&env, "b");
    assert_eq!(committed(&env.home(), "tester", "b")["t"].len(), 2);
}

#[test]
fn unknown_table_option_is_named() {
    let env = Env::new();
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/*.csv\n    delimter: ';'\n",
    );
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "u"])
        .output()
        .unwrap();
    // At startup, before anything runs, with the closest option.
    assert_eq!(out.status.code(), Some(2));
    let err = crate::stderr(&out);
    assert!(
        err.contains("unknown key `delimter` in tbls.t")
            && err.contains("did you mean `delimiter`?"),
        "{err}"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn deleting_a_checkpoint_rereads_that_file() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env.write("in/b.csv", "id\n2\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    run(&env, "d");
    // Without a TTY and without -y, nothing is deleted.
    let out = env
        .cmd()
        .args(["checkpoints", "--id", "d", "-D", "t:in/b.csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(crate::stderr(&out).contains("pass -y"));
    // While a run holds the lease, a deletion waits its turn: exit 5, nothing deleted.
    // (The run pauses at its first batch, of a new file, and is then killed.)
    env.write("in/c.csv", "id\n3\n");
    let mut running = env.spawn(
        &["start", "-op", "files.CsvDownloader", "--id", "d"],
        &[("ACHVY_FAILPOINT", "source.batch:sleep-3000")],
    );
    std::thread::sleep(std::time::Duration::from_millis(800));
    let out = env
        .cmd()
        .args(["checkpoints", "--id", "d", "-D", "-y", "t:in/b.csv"])
        .output()
        .unwrap();
    running.kill().unwrap();
    running.wait().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", crate::stderr(&out));
    let out = env
        .cmd()
        .args(["checkpoints", "--id", "d", "-D", "-y", "t:in/b.csv"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert!(crate::stderr(&out).contains("deleted 1 checkpoints"));
    let r = run(&env, "d");
    assert_eq!(tbl_data(&r, "t")["files_read"], 2, "b.csv again, and c.csv");
    let ids: Vec<Value> = committed(&env.home(), "tester", "d")["t"]
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![
            Value::from("1"),
            Value::from("2"),
            Value::from("2"),
            Value::from("3")
        ]
    );
}

#[test]
fn service_mode_runs_batches_until_sigterm() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    let child = env.spawn(
        &["start", "-op", "files.CsvDownloader", "--id", "svc", "-S"],
        &[],
    );
    let area = env.area("tester", "svc");
    let t0 = std::time::Instant::now();
    while commit_count(&area) == 0 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "no commit from the service"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    // SIGTERM during the pause between batches: a clean stop, exit 0.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
    let r = results(&out);
    assert_eq!(r["status"], "OK");
    assert_eq!(r["batches"].as_array().unwrap().len(), 1);
    assert_eq!(
        r["tasks"].as_array().unwrap().last().unwrap()["task_type"],
        "SHUTDOWN"
    );
}

/// Regression: a secret whose text also occurs in a file path (a weak password such as
/// the project name) must not be redacted out of checkpoint keys, or the file would be
/// downloaded again on every run.
#[test]
fn redaction_never_rewrites_checkpoints() {
    let env = Env::new();
    env.write("in/anchovies-data.csv", "id\n1\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    let run = || {
        let out = env
            .cmd()
            .args(["start", "-op", "files.CsvDownloader", "--id", "r"])
            .env(
                "ACHVY_CNXN__DB__URI",
                "postgres://user:anchovies@localhost/db",
            )
            .output()
            .unwrap();
        assert!(out.status.success());
        results(&out)
    };
    assert_eq!(tbl_data(&run(), "t")["files_read"], 1);
    assert_eq!(
        tbl_data(&run(), "t")["files_read"],
        0,
        "the file was downloaded again"
    );
    assert_eq!(committed(&env.home(), "tester", "r")["t"].len(), 1);
}

#[test]
fn setting_a_checkpoint_and_undoing_it() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env.write("in/b.csv", "id\n2\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    run(&env, "s");
    let cp = |args: &[&str]| {
        env.cmd()
            .args(["checkpoints", "--id", "s"])
            .args(args)
            .output()
            .unwrap()
    };
    let value = || {
        let out = cp(&["--json", "t:in/a.csv"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["value"].clone()
    };
    let original = value();
    let set = r#"t:in/a.csv={"size":1,"mtime_ns":1,"rows":0}"#;
    let out = cp(&["--set", set]);
    assert_eq!(out.status.code(), Some(2), "asks first");
    let out = cp(&["--set", set, "-y"]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert!(crate::stderr(&out).contains("--undo"));
    assert_eq!(value()["size"], 1);
    // Undo: the previous value is back, and a rerun reads nothing.
    let out = cp(&["--undo", "-y"]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert_eq!(value(), original);
    let r = run(&env, "s");
    assert_eq!(tbl_data(&r, "t")["files_read"], 0);
    // Set again and keep it: the next run reads that file again.
    assert!(cp(&["--set", set, "-y"]).status.success());
    let r = run(&env, "s");
    assert_eq!(tbl_data(&r, "t")["files_read"], 1);
}

/// Globs: a symlink loop under `**` and a second name for a directory read each real
/// file once (2 rows stay 2 rows, no "File name too long"); a file name that is not
/// UTF-8 is read, named with its odd byte escaped; a rerun reads nothing again.
#[test]
fn symlink_loops_and_odd_names_read_each_file_once() {
    use std::os::unix::ffi::OsStringExt;
    let env = Env::new();
    env.write("in/real/a.csv", "id\n1\n");
    std::os::unix::fs::symlink(env.path().join("in"), env.path().join("in/real/loop")).unwrap();
    std::os::unix::fs::symlink(env.path().join("in/real"), env.path().join("in/alias")).unwrap();
    let odd = env.path().join(std::ffi::OsString::from_vec(
        b"in/real/caf\xe9.csv".to_vec(),
    ));
    std::fs::write(&odd, "id\n2\n").unwrap();
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/**/*.csv\n    columns: {id: int}\n",
    );
    let run = || {
        let out = env
            .cmd()
            .args(["start", "-op", "files.CsvDownloader", "--id", "g"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", crate::stderr(&out));
        out
    };
    let out = run();
    let r = results(&out);
    assert_eq!(tbl_task(&r, "t")["data"]["rows"], 2, "{r}");
    let rows = crate::committed(&env.home(), "tester", "g");
    assert_eq!(rows["t"].len(), 2);
    let cps = std::fs::read_to_string(
        std::fs::read_dir(env.area("tester", "g").join("$commits"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap();
    assert!(cps.contains("t:in/real/caf\\\\xe9.csv"), "{cps}");
    assert!(
        cps.contains("t:in/real/a.csv"),
        "named by its real path: {cps}"
    );
    let out = run();
    assert_eq!(tbl_task(&results(&out), "t")["data"]["files_read"], 0);
}

/// `after_load` on local files: nothing happens before the rows are committed (a
/// crash at the commit leaves every file in place), then `delete` and `move:<dir>`
/// act at batch close, and every row is committed once.
#[test]
fn after_load_deletes_or_moves_local_files_once_committed() {
    let env = Env::new();
    env.write("in/del/a.csv", "id\n1\n");
    env.write("in/mv/b.csv", "id\n2\n");
    env.write(
        "config.yaml",
        "tbls:\n  d:\n    path: in/del/*.csv\n    after_load: delete\n  m:\n    path: in/mv/*.csv\n    after_load: move:done/mv\n",
    );
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "al"])
        .env("ACHVY_FAILPOINT", "commit.before")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(86));
    assert!(env.path().join("in/del/a.csv").exists() && env.path().join("in/mv/b.csv").exists());
    let r = run(&env, "al");
    let xclose = r["batches"][0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_type"] == "XCLOSE")
        .unwrap_or_else(|| panic!("no XCLOSE task in {r}"));
    assert_eq!(xclose["data"]["files_after_load"], 2, "{r}");
    assert!(
        !env.path().join("in/del/a.csv").exists(),
        "a.csv was not deleted"
    );
    assert!(
        !env.path().join("in/mv/b.csv").exists() && env.path().join("done/mv/b.csv").exists(),
        "b.csv was not moved"
    );
    let rows = committed(&env.home(), "tester", "al");
    assert_eq!((rows["d"].len(), rows["m"].len()), (1, 1));
    // Nothing left to read or to act on.
    let r = run(&env, "al");
    assert_eq!(tbl_data(&r, "d")["files_read"], 0);
    // A later file of the same name never overwrites the archived one.
    env.write("in/mv/b.csv", "id\n3\n");
    run(&env, "al");
    let read = |p: &str| std::fs::read_to_string(env.path().join(p)).unwrap();
    assert_eq!(read("done/mv/b.csv"), "id\n2\n");
    assert_eq!(read("done/mv/b.1.csv"), "id\n3\n");
    assert_eq!(committed(&env.home(), "tester", "al")["m"].len(), 2);
}

/// A bad option of one table (a two-character delimiter, an unknown format) fails that
/// table only: under CONTINUE the other tables load.
#[test]
fn a_bad_table_option_fails_only_its_table() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env.write(
        "config.yaml",
        "tbls:\n  good:\n    path: in/*.csv\n  bad:\n    path: in/*.csv\n    delimiter: ';;'\n  odd:\n    path: in/*.csv\n    format: xml\n",
    );
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "bo"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", crate::stderr(&out));
    let r = results(&out);
    assert_eq!(tbl_task(&r, "good")["status"], "OK", "{r}");
    assert_eq!(tbl_task(&r, "bad")["status"], "ERR", "{r}");
    let err = tbl_task(&r, "odd")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("`xml` is not a known format; use one of csv, json, parquet"),
        "{err}"
    );
    assert_eq!(committed(&env.home(), "tester", "bo")["good"].len(), 1);
}

/// The checkpoint state of an anchovy as its snapshot holds it: key -> value.
fn checkpoint_state(env: &Env, id: &str) -> BTreeMap<String, serde_json::Value> {
    let text = std::fs::read_to_string(env.area("tester", id).join("$checkpoints/_state"))
        .expect("no checkpoint snapshot");
    let snap: serde_json::Value = serde_json::from_str(&text).unwrap();
    snap["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap().to_string(), e["value"].clone()))
        .collect()
}

/// Writes `a.csv` back as it was: the same bytes and modification time.
fn restore(a: &std::path::Path, mtime: std::time::SystemTime) {
    std::fs::write(a, "id\n1\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(a)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

/// Retention of file checkpoints (`forget_after`): a file the listing misses is marked
/// `gone_since`, unmarked when it is listed again unchanged (and not read again), and its
/// checkpoint is deleted once it stayed missing for `forget_after`; a file that comes
/// back after that is read as new. `never` marks nothing; a bad value names the option.
#[test]
fn checkpoints_of_files_gone_for_forget_after_are_deleted() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env.write("in/b.csv", "id\n2\n");
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/*.csv\n    forget_after: 2s\n  n:\n    path: in/*.csv\n    forget_after: never\n  \"t:x\":\n    path: in/b.csv\n    forget_after: never\n",
    );
    run(&env, "f");
    let a = env.path().join("in/a.csv");
    let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
    std::fs::remove_file(&a).unwrap();

    // Missed once: marked, not forgotten; `never` marks nothing.
    let r = run(&env, "f");
    assert_eq!(tbl_data(&r, "t")["rows"], 0);
    let st = checkpoint_state(&env, "f");
    assert!(st["t:in/a.csv"]["gone_since"].is_string(), "{st:?}");
    assert!(st["t:in/b.csv"].get("gone_since").is_none(), "{st:?}");
    assert!(st["n:in/a.csv"].get("gone_since").is_none(), "{st:?}");

    // Back unchanged (same size and mtime): unmarked, not read again.
    restore(&a, mtime);
    let r = run(&env, "f");
    assert_eq!(tbl_data(&r, "t")["files_read"], 0, "{r}");
    assert!(
        checkpoint_state(&env, "f")["t:in/a.csv"]
            .get("gone_since")
            .is_none()
    );

    // Gone again: its clock starts afresh, and it is forgotten only once it stayed
    // missing for 2 s.
    std::fs::remove_file(&a).unwrap();
    run(&env, "f");
    let r = run(&env, "f");
    assert!(
        tbl_data(&r, "t").get("checkpoints_forgotten").is_none(),
        "{r}"
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = run(&env, "f");
    assert_eq!(tbl_data(&r, "t")["checkpoints_forgotten"], 1, "{r}");
    let st = checkpoint_state(&env, "f");
    assert!(!st.contains_key("t:in/a.csv"), "{st:?}");
    assert!(st.contains_key("t:in/b.csv") && st.contains_key("n:in/a.csv"));
    let mirrors = std::fs::read_dir(env.area("tester", "f").join("$checkpoints"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".json")
        })
        .count();
    // t:in/b.csv, n:in/a.csv, n:in/b.csv and t:x:in/b.csv; not t:in/a.csv.
    assert_eq!(
        mirrors, 4,
        "the mirror of a forgotten checkpoint is deleted too"
    );

    // Table `t:x`'s keys start with `t:` too: while `t:x` does not run, `t` still
    // neither marks nor forgets them.
    for pause in [2100, 0] {
        let out = env
            .cmd()
            .args([
                "start",
                "-op",
                "files.CsvDownloader",
                "--id",
                "f",
                "-d",
                "t:x",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", crate::stderr(&out));
        std::thread::sleep(std::time::Duration::from_millis(pause));
    }
    let st = checkpoint_state(&env, "f");
    assert!(
        st.get("t:x:in/b.csv")
            .is_some_and(|v| v.get("gone_since").is_none()),
        "{st:?}"
    );

    // A file of that name after it was forgotten is a new file: read, for `t` only.
    restore(&a, mtime);
    let r = run(&env, "f");
    assert_eq!(tbl_data(&r, "t")["files_read"], 1, "{r}");
    assert_eq!(tbl_data(&r, "n")["files_read"], 0, "{r}");

    for bad in ["soon", "-1d", "1e30", "NaN", "7 days", "\"\""] {
        env.write(
            "config.yaml",
            format!("tbls:\n  t:\n    path: in/*.csv\n    forget_after: {bad}\n"),
        );
        let out = env
            .cmd()
            .args(["start", "-op", "files.CsvDownloader", "--id", "f"])
            .output()
            .unwrap();
        let err = crate::stderr(&out);
        assert!(!out.status.success(), "{bad}: {err}");
        assert!(err.contains("tbls.t.forget_after"), "{bad}: {err}");
        assert!(!err.contains("panicked"), "{bad}: {err}");
    }
}
