//! Lifecycle order, batch policies and concurrency, with files.CsvDownloader.

use crate::{Env, committed, results, tasks};

fn two_tables(env: &Env) {
    env.write("bad/x.csv", "id,name\n1,a\n2\n");
    env.write("good/y.csv", "id,name\n1,a\n2,b\n");
    env.write(
        "config.yaml",
        "tbls:\n  a_bad:\n    path: bad/*.csv\n  b_good:\n    path: good/*.csv\n",
    );
}

#[test]
fn continue_logs_the_failed_table_and_finishes_the_others() {
    let env = Env::new();
    two_tables(&env);
    let out = env
        .cmd()
        .args([
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            "p",
            "--max-concurrency",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", crate::stderr(&out));
    let r = results(&out);
    assert_eq!(r["status"], "ERR");
    let t = tasks(&r);
    let names: Vec<(&str, Option<&str>, &str)> = t
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_deref(), c.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("STARTUP", None, "OK"),
            ("XOPEN", None, "OK"),
            ("TBL", Some("a_bad"), "ERR"),
            ("TBL", Some("b_good"), "OK"),
            ("XCLOSE", None, "OK"),
            ("SHUTDOWN", None, "OK"),
        ]
    );
    let bad = crate::tbl_task(&r, "a_bad");
    let e = bad["error"].as_str().unwrap();
    assert!(
        e.contains("bad/x.csv:3: the row has 1 fields but the header has 2"),
        "{e}"
    );
    assert!(crate::stderr(&out).contains("bad/x.csv:3"));
    let rows = committed(&env.home(), "tester", "p");
    assert_eq!(rows["b_good"].len(), 2);
    assert!(
        !rows.contains_key("a_bad"),
        "a failed table commits nothing"
    );
}

#[test]
fn raise_stops_the_batch_and_runs_error_and_xclose() {
    let env = Env::new();
    two_tables(&env);
    let out = env
        .cmd()
        .args([
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            "p",
            "--max-concurrency",
            "1",
        ])
        .env("ACHVY_BATCH_POLICY", "RAISE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", crate::stderr(&out));
    let r = results(&out);
    let t = tasks(&r);
    let types: Vec<&str> = t.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "STARTUP", "XOPEN", "TBL", "TBL", "ERROR", "XCLOSE", "SHUTDOWN"
        ]
    );
    let good = crate::tbl_task(&r, "b_good");
    assert_eq!(good["status"], "ERR");
    assert!(
        good["error"]
            .as_str()
            .unwrap()
            .contains("batch policy RAISE"),
        "{good}"
    );
    assert!(committed(&env.home(), "tester", "p").is_empty());
}

#[test]
fn task_logs_are_written_in_lifecycle_order() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env.write(
        "config.yaml",
        "tbls:\n  t1:\n    path: in/*.csv\n  t2:\n    path: in/*.csv\n",
    );
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "o"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut logs: Vec<serde_json::Value> =
        std::fs::read_dir(env.area("tester", "o").join("$task_logs"))
            .unwrap()
            .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
            .collect();
    logs.sort_by(|a, b| a["timestamp"].as_str().cmp(&b["timestamp"].as_str()));
    let order: Vec<&str> = logs
        .iter()
        .map(|l| l["task_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        vec!["STARTUP", "XOPEN", "TBL", "TBL", "XCLOSE", "SHUTDOWN"]
    );
    let session = logs[0]["session_id"].as_str().unwrap();
    assert!(
        logs.iter()
            .all(|l| l["session_id"] == session && l["operator"] == "files.CsvDownloader")
    );
    assert!(
        logs.iter()
            .filter(|l| l["task_type"] != "STARTUP" && l["task_type"] != "SHUTDOWN")
            .all(|l| l["batch_id"] == 1)
    );
}

#[test]
fn enabled_and_disabled_tables_disabled_wins() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env.write("config.yaml", "tbls:\n  sales:\n    path: in/*.csv\n  sales_lines:\n    path: in/*.csv\n  stock:\n    path: in/*.csv\n");
    let out = env
        .cmd()
        .args([
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            "e",
            "-e",
            "sales*",
            "-d",
            "sales_lines",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let r = results(&out);
    let tbls: Vec<String> = tasks(&r).into_iter().filter_map(|t| t.1).collect();
    assert_eq!(tbls, vec!["sales"]);
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "e2"])
        .env("ACHVY_DISABLED", "sales, stock")
        .output()
        .unwrap();
    let tbls: Vec<String> = tasks(&results(&out))
        .into_iter()
        .filter_map(|t| t.1)
        .collect();
    assert_eq!(tbls, vec!["sales_lines"]);
}
