//! `anchovy logs`, `anchovy tables` and healthcheck freshness, from the task logs.

use crate::Env;

fn run(env: &Env, args: &[&str]) -> std::process::Output {
    env.cmd().args(args).output().unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn logs_tables_and_freshness() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n2\n");
    env.write("bad/b.csv", "id,x\n1\n");
    env.write(
        "config.yaml",
        "tbls:\n  a:\n    path: in/*.csv\n    unique_by: id\n  b:\n    path: bad/*.csv\n  c:\n    path: in/*.csv\n    set_by: id\n",
    );
    let out = run(&env, &["start", "-op", "files.CsvDownloader", "--id", "h"]);
    assert_eq!(out.status.code(), Some(1));

    // logs: a table, filters, JSON lines.
    let out = run(&env, &["logs", "--id", "h"]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let text = stdout(&out);
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("TIME (UTC)") && header.contains("STATUS"),
        "{text}"
    );
    for t in ["STARTUP", "XOPEN", "TBL", "XCLOSE", "SHUTDOWN"] {
        assert!(text.contains(t), "{t} missing:\n{text}");
    }
    let out = run(
        &env,
        &[
            "logs", "--id", "h", "--table", "a", "--type", "tbl", "--json",
        ],
    );
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["tbl"], "a");
    assert_eq!(lines[0]["data"]["rows"], 2);
    let out = run(&env, &["logs", "--id", "h", "--status", "err", "--json"]);
    let errs = stdout(&out);
    assert!(errs.lines().any(|l| l.contains("\"tbl\":\"b\"")), "{errs}");
    assert!(errs.lines().all(|l| l.contains("\"status\":\"ERR\"")));
    let out = run(
        &env,
        &["logs", "--id", "h", "--since", "2099-01-01", "--json"],
    );
    assert!(stdout(&out).is_empty());
    assert_eq!(
        stdout(&run(
            &env,
            &["logs", "--id", "h", "--since", "1h", "--json"]
        ))
        .lines()
        .count(),
        7
    );
    let out = run(&env, &["logs", "--id", "h", "--since", "yesterday-ish"]);
    assert_eq!(out.status.code(), Some(2));
    // `--since` fetches only the logs whose key is recent enough: an old, unreadable
    // one is not even read (a full listing reads it and says so).
    std::fs::write(
        env.area("tester", "h")
            .join("$task_logs/20200101T000000.000Z.000001.20200101T000000.000000Z.deadbeef.json"),
        "not json",
    )
    .unwrap();
    let out = run(&env, &["logs", "--id", "h", "--since", "1h", "--json"]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 7);
    let out = run(&env, &["logs", "--id", "h"]);
    assert!(
        !out.status.success(),
        "the old log was not read without --since"
    );
    std::fs::remove_file(
        env.area("tester", "h")
            .join("$task_logs/20200101T000000.000Z.000001.20200101T000000.000000Z.deadbeef.json"),
    )
    .unwrap();

    // tables: settings and last load.
    let out = run(&env, &["tables", "--id", "h"]);
    let text = stdout(&out);
    assert!(text.starts_with("TABLE"), "{text}");
    let a = text.lines().find(|l| l.starts_with("a ")).unwrap();
    assert!(a.contains(" id ") && a.contains("OK"), "{a}");
    // Every setting of the table has its column: SET_BY too.
    assert!(text.lines().next().unwrap().contains("SET_BY"), "{text}");
    let c = text.lines().find(|l| l.starts_with("c ")).unwrap();
    assert_eq!(c.split_whitespace().nth(2), Some("id"), "{text}");
    let out = run(&env, &["tables", "--id", "h", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    assert_eq!(v["table"]["name"], "a");
    assert!(v["last_ok_at"].is_string());

    // Freshness: b never loaded -> FAIL; once it loads, the check passes.
    let hc = |extra: &[&str]| {
        let mut args = vec!["healthcheck", "-op", "files.CsvDownloader", "--id", "h"];
        args.extend(extra);
        run(&env, &args)
    };
    let out = hc(&["--max-lag", "1h"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("FAIL freshness b: never loaded successfully"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("ok   freshness a: last successful load"));
    env.write("bad/b.csv", "id,x\n1,2\n");
    assert!(
        run(&env, &["start", "-op", "files.CsvDownloader", "--id", "h"])
            .status
            .success()
    );
    let out = hc(&["--max-lag", "1h"]);
    assert!(out.status.success(), "{}", stdout(&out));
    // Freshness reads the logs newest first and stops once every table has its last
    // successful load: an old, unreadable log is never read.
    let old = env
        .area("tester", "h")
        .join("$task_logs/20200101T000000.000Z.000001.20200101T000000.000000Z.deadbeef.json");
    std::fs::write(&old, "not json").unwrap();
    let out = hc(&["--max-lag", "1h"]);
    assert!(out.status.success(), "{}", stdout(&out));
    std::fs::remove_file(&old).unwrap();
    // A per-table max_lag in config.yaml wins.
    env.write(
        "config.yaml",
        "tbls:\n  a:\n    path: in/*.csv\n    unique_by: id\n    max_lag: 0s\n  b:\n    path: bad/*.csv\n",
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = hc(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("FAIL freshness a"),
        "{}",
        stdout(&out)
    );
}

/// A healthcheck while the anchovy runs takes no lease: it passes and names the holder.
#[test]
fn healthcheck_works_while_a_run_holds_the_lease() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    let mut child = env.spawn(
        &["start", "-op", "files.CsvDownloader", "--id", "busy"],
        &[("ACHVY_FAILPOINT", "source.batch:sleep-3000")],
    );
    std::thread::sleep(std::time::Duration::from_millis(800));
    let out = run(
        &env,
        &["healthcheck", "-op", "files.CsvDownloader", "--id", "busy"],
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("ok   lease: held by pid"),
        "{}",
        stdout(&out)
    );
}

/// An uploader's freshness names its tables `<upstream>.<table>`, and reads only the
/// newest logs: an old, unreadable one is never read.
#[test]
fn uploader_freshness_reads_only_the_newest_logs() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n2\n");
    env.write(
        "config.yaml",
        "tbls:\n  a:\n    path: in/*.csv\n    unique_by: id\n",
    );
    let ok = |args: &[&str]| {
        let out = env
            .cmd()
            .args(args)
            .env("ACHVY_CNXN__DB__URI", "sqlite://")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            stdout(&out),
            crate::stderr(&out)
        );
        stdout(&out)
    };
    ok(&["start", "-op", "files.CsvDownloader", "--id", "dl"]);
    let up = ["-op", "sql.Uploader", "--id", "up", "-U", "dl"];
    let hc = |env: &Env| {
        env.cmd()
            .args(["healthcheck", "--max-lag", "1h"])
            .args(up)
            .env("ACHVY_CNXN__DB__URI", "sqlite://")
            .output()
            .unwrap()
    };
    let out = hc(&env);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("FAIL freshness dl.a: never loaded successfully"),
        "{}",
        stdout(&out)
    );
    // The stale table does not hide the checks that say why: the target database's.
    assert!(
        stdout(&out).contains("ok   target database: Sqlite reachable"),
        "{}",
        stdout(&out)
    );
    let mut start = vec!["start"];
    start.extend(up);
    ok(&start);
    std::fs::write(
        env.area("tester", "up")
            .join("$task_logs/20200101T000000.000Z.000001.20200101T000000.000000Z.deadbeef.json"),
        "not json",
    )
    .unwrap();
    let out = hc(&env);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("ok   freshness dl.a: last successful load"),
        "{}",
        stdout(&out)
    );
}
