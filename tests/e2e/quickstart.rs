//! The README quick start, run as written, and the example config.yaml.

use std::path::Path;

use crate::{Env, commit_count, committed, results, tasks};

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn readme_quick_start_produces_the_documented_layout() {
    let env = Env::new();
    // The README's main job: from the repository root, on the embedded defaults.
    let out = env
        .cmd()
        .current_dir(repo_root())
        .args(["start", "-op", "files.CsvDownloader", "--id", "quickstart"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let r = results(&out);
    assert_eq!(r["status"], "OK");
    assert_eq!(r["anchovy_id"], "quickstart");
    assert_eq!(r["anchovy_user"], "tester");

    let area = env.area("tester", "quickstart");
    for d in [
        "$tables",
        "$checkpoints",
        "$task_logs",
        "$results",
        "$commits",
        "data",
    ] {
        assert!(area.join(d).is_dir(), "missing {d}");
    }
    for t in ["customers", "orders", "sales"] {
        assert!(area.join(format!("$tables/{t}.json")).is_file());
        let files: Vec<_> = std::fs::read_dir(area.join("data").join(t))
            .unwrap()
            .collect();
        assert!(!files.is_empty(), "no data files for {t}");
    }
    // The printed results are the results file.
    let saved: serde_json::Value = serde_json::from_slice(
        &std::fs::read(area.join("$results/anchovy_run_results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved, r);

    let rows = committed(&env.home(), "tester", "quickstart");
    assert_eq!(rows["customers"].len(), 4);
    assert_eq!(rows["orders"].len(), 5);
    assert_eq!(rows["sales"].len(), 3);
    let c2 = rows["customers"]
        .iter()
        .find(|r| r["customer_id"] == anchovy_core::Value::Int(2))
        .unwrap();
    assert_eq!(
        c2["name"],
        anchovy_core::Value::String("Brontë, Charlotte".into())
    );
    assert!(matches!(c2["signed_up"], anchovy_core::Value::Date(_)));
    let o = rows["orders"]
        .iter()
        .find(|r| r["order_id"] == anchovy_core::Value::Int(1003))
        .unwrap();
    assert_eq!(
        o["note"],
        anchovy_core::Value::String("customer wrote:\n\"changed my mind\"".into())
    );
    assert_eq!(o["amount"], anchovy_core::Value::Decimal("120.50".into()));
    assert!(matches!(o["_line"], anchovy_core::Value::Int(4)));

    // Every task log has the README's attributes.
    let logs = std::fs::read_dir(area.join("$task_logs")).unwrap();
    let mut n = 0;
    for l in logs {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(l.unwrap().path()).unwrap()).unwrap();
        for k in [
            "anchovy_id",
            "anchovy_user",
            "session_id",
            "batch_id",
            "thread_id",
            "operator",
            "task_type",
            "duration",
            "timestamp",
            "status",
            "tbl",
            "data",
        ] {
            assert!(v.get(k).is_some(), "task log lacks {k}: {v}");
        }
        if v["task_type"] == "TBL" {
            assert!(v["data"]["rows"].as_u64().unwrap() > 0);
            let (stored, raw) = (
                v["data"]["bytes_written"].as_u64().unwrap(),
                v["data"]["raw_bytes_written"].as_u64().unwrap(),
            );
            assert!(stored > 0 && raw > stored, "{v}");
        }
        n += 1;
    }
    assert_eq!(n, 7, "STARTUP, XOPEN, 3 TBL, XCLOSE, SHUTDOWN");

    // A second run finds nothing new and commits nothing.
    let commits = commit_count(&area);
    let out = env
        .cmd()
        .current_dir(repo_root())
        .args(["start", "-op", "files.CsvDownloader", "--id", "quickstart"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(commit_count(&area), commits);
    let r = results(&out);
    assert!(tasks(&r).iter().all(|t| t.2 == "OK"));
}

#[test]
fn the_example_config_yaml_parses_and_its_tables_are_valid() {
    let doc = anchovy_core::ConfigDoc::load(&repo_root().join("config.yaml")).unwrap();
    assert_eq!(doc.tbls.len(), 3);
    doc.layer().unwrap();
    for t in doc.tbls.values() {
        anchovy_plugins::source::FileDownloader::new(anchovy_plugins::files::TRANSPORT, "csv")
            .table(t)
            .unwrap();
    }
    assert_eq!(doc.tbls["sales"].sort_by.0.len(), 3);
}

/// The README's main job, `script/quickstart`: download + upload into the embedded SQLite.
#[test]
fn script_quickstart_downloads_and_uploads_into_sqlite() {
    let env = Env::new();
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("script/quickstart"))
        .env("ACHVY_HOME", env.home())
        .env("ACHVY_USER", "tester")
        .env("ANCHOVY_BIN", assert_cmd::cargo::cargo_bin("anchovy"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("warehouse.sqlite"), "{text}");
    let db = env.home().join("tester/warehouse.sqlite");
    assert!(db.is_file());
    let rows = crate::upload::fetch(
        crate::upload::Target::Sqlite,
        &env,
        "SELECT CAST(COUNT(*) AS TEXT) FROM \"quickstart__tester__orders\" UNION ALL SELECT CAST(COUNT(*) AS TEXT) FROM \"quickstart__tester__customers\"",
    );
    // Five order rows, one order (1002) delivered twice: four orders; four customers.
    assert_eq!(rows, vec![vec![Some("4".into())], vec![Some("4".into())]]);
}
