//! The bad-input corpus (tests/corpus): nasty CSV, JSON and config files, bad env
//! values, and table/column names that try path traversal or SQL injection. Each ends
//! with its documented exit code and a one-line error naming the file:line or key;
//! none panics or hangs; names never escape the datastore area or change the SQL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Env, results};

#[derive(Debug, Deserialize)]
struct Expect {
    exit: i32,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    rows: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Corpus {
    csv: BTreeMap<String, Expect>,
    json: BTreeMap<String, Expect>,
    config: BTreeMap<String, Expect>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus")
}

fn check(what: &str, out: &std::process::Output, e: &Expect) {
    let err = crate::stderr(out);
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
    assert_eq!(out.status.code(), Some(e.exit), "{what}: {err}");
    if let Some(m) = &e.error {
        assert!(
            err.contains(m.as_str()),
            "{what}: expected `{m}` in:\n{err}"
        );
    }
    if let Some(n) = e.rows {
        let r = results(out);
        assert_eq!(crate::tbl_data(&r, "t")["rows"], n, "{what}");
    }
}

fn run_file(env: &Env, op: &str, id: &str, path_line: &str) -> std::process::Output {
    env.write(
        "config.yaml",
        format!("tbls:\n  t:\n    path: {path_line}\n"),
    );
    env.cmd()
        .args(["start", "-op", op, "--id", id])
        .output()
        .unwrap()
}

#[test]
fn every_corpus_file_has_its_documented_outcome() {
    let dir = corpus_dir();
    let c: Corpus =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("expected.yaml")).unwrap())
            .unwrap();
    // Every file is listed, and every listed file exists.
    for (kind, listed) in [("csv", &c.csv), ("json", &c.json), ("config", &c.config)] {
        let mut on_disk: Vec<String> = std::fs::read_dir(dir.join(kind))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        assert_eq!(
            on_disk,
            listed.keys().cloned().collect::<Vec<_>>(),
            "{kind}"
        );
    }
    for (i, (name, e)) in c.csv.iter().enumerate() {
        let env = Env::new();
        std::fs::create_dir_all(env.path().join("in")).unwrap();
        std::fs::copy(dir.join("csv").join(name), env.path().join("in").join(name)).unwrap();
        let out = run_file(&env, "files.CsvDownloader", &format!("c{i}"), "in/*");
        check(name, &out, e);
    }
    for (i, (name, e)) in c.json.iter().enumerate() {
        let env = Env::new();
        let path = format!("file://{}/{name}", dir.join("json").display());
        let out = run_file(&env, "blob.JsonDownloader", &format!("j{i}"), &path);
        check(name, &out, e);
    }
    for (name, e) in &c.config {
        let env = Env::new();
        let out = env
            .cmd()
            .args(["start", "-op", "files.CsvDownloader", "--id", "cfg", "-c"])
            .arg(dir.join("config").join(name))
            .output()
            .unwrap();
        check(name, &out, e);
        assert_eq!(
            crate::stderr(&out)
                .lines()
                .filter(|l| l.starts_with("anchovy: error"))
                .count(),
            1
        );
    }
}

#[test]
fn huge_fields_and_wide_headers_stream_through() {
    let env = Env::new();
    // A 10 MB single field and a 100,000-column header.
    let big = "x".repeat(10 << 20);
    env.write("in/big.csv", format!("id,blob\n1,\"{big}\"\n"));
    let out = run_file(&env, "files.CsvDownloader", "big", "in/big.csv");
    check(
        "10 MB field",
        &out,
        &Expect {
            exit: 0,
            error: None,
            rows: Some(1),
        },
    );
    let header: Vec<String> = (0..100_000).map(|i| format!("c{i}")).collect();
    let row: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
    env.write(
        "in/wide.csv",
        format!("{}\n{}\n", header.join(","), row.join(",")),
    );
    let out = run_file(&env, "files.CsvDownloader", "wide", "in/wide.csv");
    check(
        "100k columns",
        &out,
        &Expect {
            exit: 0,
            error: None,
            rows: Some(1),
        },
    );
}

#[test]
fn bad_environment_values_are_configuration_errors() {
    let env = Env::new();
    env.write("config.yaml", "tbls: {}\n");
    for (k, v, msg) in [
        (
            "ACHVY_BATCH_SIZE",
            "abc",
            "`abc` from environment is not a whole number",
        ),
        ("ACHVY_DATASTORE", "ftp://host/x", "`ftp://host/x`"),
        ("ACHVY_LEASE_TTL", "0s", "lease_ttl"),
        ("ACHVY_PORT", "70000", "from 0 to 65535"),
        ("ACHVY_BIND", "localhost:80", "is not an IP address"),
    ] {
        let out = env
            .cmd()
            .args(["start", "-op", "files.CsvDownloader", "--id", "e"])
            .env(k, v)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{k}={v}: {}",
            crate::stderr(&out)
        );
        assert!(
            crate::stderr(&out).contains(msg),
            "{k}={v}: {}",
            crate::stderr(&out)
        );
    }
    let out = env
        .cmd()
        .args(["start", "-op", "nope.Downloader", "--id", "e"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        crate::stderr(&out).contains("files.CsvDownloader"),
        "lists the known operators"
    );
}

/// Table and column names that try to escape the datastore or change the SQL.
#[test]
fn hostile_table_and_column_names_stay_data() {
    let env = Env::new();
    let evil_col = "x\"; DROP TABLE victim; --";
    env.write(
        "in/a.csv",
        format!("id,\"{}\"\n1,2\n", evil_col.replace('"', "\"\"")),
    );
    let names = [
        "../../escape",
        "a/b",
        "$tables",
        "t\"; DROP TABLE victim; --",
        "..",
        "%2e%2e",
    ];
    let mut yaml = String::from("tbls:\n");
    for n in names {
        yaml.push_str(&format!(
            "  '{}':\n    path: in/a.csv\n",
            n.replace('\'', "''")
        ));
    }
    env.write("config.yaml", &yaml);
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "evil"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    // Every file lies inside the anchovy's own area.
    let area = env.area("tester", "evil");
    let home = env.home();
    let files = crate::walk(&home);
    assert!(files.iter().all(|f| f.starts_with(&area)), "{files:?}");
    assert!(!env.path().join("escape").exists());
    // The uploader loads every table as data into SQLite; the victim table survives.
    let db = env.home().join("tester/warehouse.sqlite");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        sqlx::query("CREATE TABLE victim (x INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    let out = env
        .cmd()
        .args([
            "start",
            "-op",
            "sql.Uploader",
            "--id",
            "wh",
            "-U",
            "evil",
            "--config",
            "{}",
        ])
        .env("ACHVY_CNXN__DB__URI", "sqlite://")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    rt.block_on(async {
        use sqlx::Row;
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let tables: Vec<String> =
            sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(&pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>(0))
                .collect();
        assert!(tables.contains(&"victim".to_string()), "{tables:?}");
        assert!(
            tables.iter().any(|t| t.contains("DROP TABLE victim")),
            "{tables:?}"
        );
        // The hostile column is a column, holding its value.
        let q = format!(
            "SELECT \"{}\" FROM \"evil__tester__t\"\"; DROP TABLE victim; --\"",
            evil_col.replace('"', "\"\"")
        );
        let v: String = sqlx::query(sqlx::AssertSqlSafe(q))
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, "2");
    });
}
