//! process.Downloader: real programs as sources. The tests' own Singer tap
//! (tests/process/tap.py) for the edge cases (state handed back, a malformed line, a
//! schema change, a crash and a kill -9 mid-stream then a rerun = every row once);
//! tap-jsonl and MeltanoLabs' tap-postgres from PyPI (script/services.sh
//! `install_singer_taps`, `SINGER_BIN`) as the real taps, loaded on into SQLite.

use std::collections::BTreeMap;

use anchovy_core::Value;

use crate::upload::{Target, fetch};
use crate::{Env, committed, need, output, results, tbl_data, walk};

const TAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/process/tap.py");

/// A config.yaml of one process.Downloader entry `prog` with these options.
fn config(env: &Env, options: &str) {
    env.write(
        "config.yaml",
        format!("tbls:\n  prog:\n    command: [python3, \"{TAP}\"]\n{options}"),
    );
}

fn download(env: &Env, envs: &[(&str, &str)]) -> std::process::Output {
    let mut c = env.cmd();
    c.args(["start", "-op", "process.Downloader", "--id", "dl"])
        .env("ACHVY_COMMIT_INTERVAL", "0");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn download_ok(env: &Env, envs: &[(&str, &str)]) -> serde_json::Value {
    let out = download(env, envs);
    assert!(out.status.success(), "{}", output(&out));
    results(&out)
}

/// The committed rows' ids of each table, in commit order.
fn ids(env: &Env) -> BTreeMap<String, Vec<i64>> {
    committed(&env.home(), "tester", "dl")
        .into_iter()
        .filter(|(t, _)| !t.starts_with("$rejects"))
        .map(|(t, rows)| {
            let ids = rows
                .iter()
                .map(|r| match r.get("id") {
                    Some(Value::Int(i)) => *i,
                    other => panic!("table {t}: id {other:?}"),
                })
                .collect();
            (t, ids)
        })
        .collect()
}

fn each_once(ids: &[i64], rows: i64) {
    let mut sorted = ids.to_vec();
    sorted.sort();
    assert_eq!(
        sorted,
        (1..=rows).collect::<Vec<_>>(),
        "every row exactly once"
    );
}

fn table_entry(env: &Env, t: &str) -> serde_json::Value {
    let p = env.area("tester", "dl").join(format!("$tables/{t}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// Streams become tables with their key and types; the committed STATE goes back to
/// the tap, which then writes only what is new.
#[test]
fn singer_streams_become_tables_and_the_state_goes_back_to_the_tap() {
    let env = Env::new();
    config(&env, "    config: {rows: 10, state_every: 4}\n");
    let r = download_ok(&env, &[]);
    let got = ids(&env);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["a", "b"]);
    each_once(&got["a"], 10);
    each_once(&got["b"], 10);
    let d = tbl_data(&r, "prog");
    assert_eq!(d["program"], "python3", "{d}");
    assert_eq!(d["source_rows"], 20, "{d}");
    assert_eq!(d["schemas"], 2, "{d}");
    assert!(d["states"].as_u64().unwrap() >= 5, "{d}");
    assert_eq!(d["streams"]["a"], 10, "{d}");
    assert!(
        d["stderr"]
            .as_str()
            .unwrap()
            .contains("tap starting with state {}"),
        "{d}"
    );
    // The streams' entries: key properties as unique_by, JSON Schema types.
    let a = table_entry(&env, "a");
    assert_eq!(a["unique_by"], "id", "{a}");
    assert_eq!(a["columns"]["id"], "int", "{a}");
    assert_eq!(a["columns"]["amount"], "decimal", "{a}");
    assert_eq!(a["columns"]["at"], "datetime", "{a}");
    assert_eq!(a["columns"]["note"], "str", "{a}");
    // The program's entry is no table of its own.
    assert!(
        !env.area("tester", "dl").join("$tables/prog.json").exists(),
        "the entry `prog` became a table"
    );
    // Values land as the tap wrote them.
    let rows = &committed(&env.home(), "tester", "dl")["a"];
    let r3 = rows.iter().find(|r| r["id"] == Value::Int(3)).unwrap();
    assert_eq!(r3["amount"], Value::Decimal("3.75".into()));
    assert_eq!(r3["note"], Value::String("a-3".into()));
    assert!(matches!(r3["at"], Value::DateTimeTz(_)), "{:?}", r3["at"]);

    // The next run is handed the last state: only rows 11..=15 come.
    config(&env, "    config: {rows: 15, state_every: 4}\n");
    let r = download_ok(&env, &[]);
    let d = tbl_data(&r, "prog");
    assert_eq!(d["source_rows"], 10, "{d}");
    assert!(
        d["stderr"]
            .as_str()
            .unwrap()
            .contains(r#"tap starting with state {"a": 10, "b": 10}"#),
        "{d}"
    );
    let got = ids(&env);
    each_once(&got["a"], 15);
    each_once(&got["b"], 15);

    // The state as `anchovy checkpoints` shows it.
    let out = env
        .cmd()
        .args(["checkpoints", "--id", "dl", "-op", "process.Downloader"])
        .output()
        .unwrap();
    assert!(output(&out).contains("singer_state"), "{}", output(&out));
}

/// A tap that dies mid-stream fails its table, keeps what its last committed STATE
/// covers and nothing after; the rerun resumes there: every row exactly once.
#[test]
fn a_crash_mid_stream_keeps_the_last_state_and_the_rerun_loads_each_row_once() {
    let env = Env::new();
    let flag = env.write("crash.flag", "");
    config(
        &env,
        "    config: {rows: 20, state_every: 5, crash_after: 23}\n    env: {CRASH_FLAG: FLAG}\n",
    );
    // `env:` values are text: the flag's path goes in by substitution-free text.
    let yaml = std::fs::read_to_string(env.path().join("config.yaml"))
        .unwrap()
        .replace("FLAG", &flag.display().to_string());
    env.write("config.yaml", yaml);
    let out = download(&env, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    let o = output(&out);
    assert!(o.contains("program `python3`: exited with status 3"), "{o}");
    assert!(o.contains("tap crashed after 23 records"), "{o}");
    assert!(
        o.contains("nothing it wrote after the last commit is kept"),
        "{o}"
    );
    // 23 records written, states after 5, 10, 15, 20: the 20 they cover are kept.
    let got = ids(&env);
    let kept: usize = got.values().map(Vec::len).sum();
    assert_eq!(kept, 20, "{got:?}");
    // The rerun starts from the last committed state.
    download_ok(&env, &[]);
    let got = ids(&env);
    each_once(&got["a"], 20);
    each_once(&got["b"], 20);
}

/// Seeded schedules of crashes held against the model: after each run, what is
/// committed is exactly the records the last committed STATE covers (a prefix of the
/// tap's order, every record once), and when the tap finally runs to its end, every
/// record of every stream is there once.
#[test]
fn seeded_crash_schedules_commit_exactly_what_the_last_state_covers() {
    let seed = anchovy_core::testutil::seed("PROCESS_SEED");
    let mut rng = anchovy_core::testutil::Rng(seed);
    for trial in 0..4 {
        let env = Env::new();
        let rows = 5 + rng.below(30) as i64;
        let every = 1 + rng.below(6) as i64;
        let mut crashes = 0;
        // The model: the tap's order is id 1, stream a then b, id 2, ...; a run that
        // crashes after k records of this run keeps the records up to its last STATE.
        let mut kept = 0i64;
        loop {
            let left = 2 * rows - kept;
            let crash = (crashes < 3 && left > 1 && rng.chance(70))
                .then(|| 1 + rng.below(left as u64 - 1) as i64);
            let flag = env.write("crash.flag", "");
            let mut opts = format!("    config: {{rows: {rows}, state_every: {every}");
            if let Some(c) = crash {
                opts.push_str(&format!(", crash_after: {c}"));
            }
            opts.push_str(&format!(
                "}}\n    env: {{CRASH_FLAG: \"{}\"}}\n",
                flag.display()
            ));
            config(&env, &opts);
            let out = download(&env, &[]);
            let ctx =
                format!("seed {seed} trial {trial} rows {rows} every {every} crash {crash:?}");
            match crash {
                Some(c) => {
                    assert_eq!(out.status.code(), Some(1), "{ctx}: {}", output(&out));
                    crashes += 1;
                    // STATEs come after every `every`-th record of the run.
                    kept += c / every * every;
                }
                None => {
                    assert!(out.status.success(), "{ctx}: {}", output(&out));
                    kept = 2 * rows;
                }
            }
            let got = ids(&env);
            let n: usize = got.values().map(Vec::len).sum();
            assert_eq!(n as i64, kept, "{ctx}: {got:?}");
            for (t, ids) in &got {
                let mut s = ids.clone();
                s.sort();
                s.dedup();
                assert_eq!(
                    s.len(),
                    ids.len(),
                    "{ctx}: table {t} has a record twice: {ids:?}"
                );
            }
            if crash.is_none() {
                each_once(&got["a"], rows);
                each_once(&got["b"], rows);
                break;
            }
        }
    }
}

/// kill -9 of anchovy while the tap streams, then a rerun: every row exactly once
/// (the tap dies of its closed stdout; the rerun starts from the last commit).
#[test]
fn kill_9_mid_stream_then_rerun_loads_each_row_once() {
    let env = Env::new();
    config(
        &env,
        "    config: {rows: 60, state_every: 7, sleep_ms: 20}\n",
    );
    let mut child = env.spawn(
        &["start", "-op", "process.Downloader", "--id", "dl"],
        &[("ACHVY_COMMIT_INTERVAL", "0")],
    );
    let commits = env.area("tester", "dl").join("$commits");
    let t0 = std::time::Instant::now();
    while std::fs::read_dir(&commits).map(|d| d.count()).unwrap_or(0) < 3 {
        assert!(t0.elapsed().as_secs() < 60, "no commits after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before: usize = ids(&env).values().map(Vec::len).sum();
    assert!(before > 0 && before < 120, "{before} rows before the kill");
    let out = download(&env, &[("ACHVY_LEASE_TTL", "1s")]);
    assert!(out.status.success(), "{}", output(&out));
    let got = ids(&env);
    each_once(&got["a"], 60);
    each_once(&got["b"], 60);
}

/// A line that is no message fails the table by default, naming the program's line;
/// quarantined, the good rows flow and the bad line is kept with its reason.
#[test]
fn a_malformed_line_fails_or_is_quarantined() {
    let env = Env::new();
    config(&env, "    config: {rows: 6, malformed_at: 4}\n");
    let out = download(&env, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    let o = output(&out);
    assert!(o.contains("python3 stdout:"), "{o}");
    assert!(o.contains("not a Singer message"), "{o}");

    config(
        &env,
        "    config: {rows: 6, malformed_at: 4}\n    on_bad_record: quarantine\n",
    );
    let r = download_ok(&env, &[]);
    let d = tbl_data(&r, "prog");
    assert_eq!(d["rejected"], 1, "{d}");
    assert_eq!(d["quarantined"], 1, "{d}");
    let got = ids(&env);
    each_once(&got["a"], 6);
    each_once(&got["b"], 6);
    let out = env
        .cmd()
        .args(["rejects", "--id", "dl", "-op", "process.Downloader"])
        .output()
        .unwrap();
    assert!(
        output(&out).contains("this is not JSON"),
        "{}",
        output(&out)
    );
}

/// A second SCHEMA of a stream mid-stream: the rows after it have the new column,
/// the table's entry gains it, the rows before it keep theirs.
#[test]
fn a_schema_change_mid_stream_adds_the_column() {
    let env = Env::new();
    config(&env, "    config: {rows: 8, schema_change_at: 5}\n");
    let r = download_ok(&env, &[]);
    assert_eq!(tbl_data(&r, "prog")["schemas"], 3);
    let rows = &committed(&env.home(), "tester", "dl")["a"];
    for r in rows {
        let Value::Int(id) = r["id"] else { panic!() };
        let extra = r.get("extra").cloned().unwrap_or(Value::Null);
        if id >= 5 {
            assert_eq!(extra, Value::Int(id * 10), "row {id}");
        } else {
            assert_eq!(extra, Value::Null, "row {id}");
        }
    }
    assert_eq!(table_entry(&env, "a")["columns"]["extra"], "int");
    assert!(table_entry(&env, "b")["columns"].get("extra").is_none());
}

/// The connection's attributes reach the program as variables and never appear in
/// anything anchovy writes; the rest of anchovy's environment stays out.
#[test]
fn connection_attributes_reach_the_program_and_stay_secret() {
    let env = Env::new();
    let secret = "s3cr3t-Token-2f9a7";
    config(
        &env,
        "    connection: gh\n    config: {rows: 2, stderr_env: GITHUB_TOKEN}\n",
    );
    let out = download(
        &env,
        &[
            ("ACHVY_CNXN__GH__GITHUB_TOKEN", secret),
            ("ACHVY_LOG_FORMAT", "json"),
        ],
    );
    assert!(out.status.success(), "{}", output(&out));
    let o = output(&out);
    // The tap saw it (it printed it on stderr, and anchovy redacted the line).
    assert!(o.contains("token is ***"), "{o}");
    assert!(!o.contains(secret), "the secret was printed: {o}");
    for f in walk(&env.area("tester", "dl")) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(!text.contains(secret), "{} holds the secret", f.display());
    }
}

/// `dialect: ndjson`: each line a row of the entry's table, typed by `columns:`, the
/// whole output one commit; a program that is not there is named with the fix.
#[test]
fn ndjson_programs_and_missing_programs() {
    let env = Env::new();
    env.write(
        "rows.sh",
        "#!/bin/sh\nfor i in 1 2 3; do echo \"{\\\"id\\\": $i, \\\"day\\\": \\\"2026-02-0$i\\\"}\"; done\necho done >&2\n",
    );
    env.write(
        "config.yaml",
        "tbls:\n  days:\n    command: [sh, rows.sh]\n    dialect: ndjson\n    unique_by: id\n    columns: {day: date}\n",
    );
    let r = download_ok(&env, &[]);
    let d = tbl_data(&r, "days");
    assert_eq!(d["rows"], 3, "{d}");
    assert_eq!(d["commits"], 1, "{d}");
    let rows = &committed(&env.home(), "tester", "dl")["days"];
    assert_eq!(rows.len(), 3);
    assert!(matches!(rows[0]["day"], Value::Date(_)), "{:?}", rows[0]);
    assert_eq!(table_entry(&env, "days")["unique_by"], "id");

    env.write(
        "config.yaml",
        "tbls:\n  gone:\n    command: [tap-not-installed-anywhere, --config, x.json]\n",
    );
    let out = download(&env, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    let o = output(&out);
    assert!(
        o.contains("`tap-not-installed-anywhere` is not an executable file here nor on the PATH"),
        "{o}"
    );
    let out = env
        .cmd()
        .args(["healthcheck", "-op", "process.Downloader", "--id", "dl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    assert!(output(&out).contains("FAIL table gone"), "{}", output(&out));
}

/// A real tap from PyPI: tap-jsonl reads local JSONL files; the uploader merges its
/// streams by their key properties. A changed file is read again by the tap (it
/// tracks files by modification time): the target has each key once, newest values.
#[test]
fn tap_jsonl_from_pypi_loads_into_sqlite() {
    let env = Env::new();
    let bin = need("SINGER_BIN");
    let dir = env.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("users.jsonl"),
        "{\"id\": 1, \"name\": \"ann\"}\n{\"id\": 2, \"name\": \"bob\"}\n",
    )
    .unwrap();
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  users_tap:\n    command: [\"{bin}/tap-jsonl\"]\n    config: {{path: \"{}\", stream_name: users, primary_keys: [id]}}\n",
            dir.join("users.jsonl").display()
        ),
    );
    // What the tap offers, before any run.
    let out = env
        .cmd()
        .args([
            "tables",
            "--discover",
            "-op",
            "process.Downloader",
            "--id",
            "dl",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output(&out));
    let o = output(&out);
    assert!(o.contains("users") && o.contains("id:int"), "{o}");
    let r = download_ok(&env, &[]);
    assert_eq!(tbl_data(&r, "users_tap")["streams"]["users"], 2, "{r}");
    assert_eq!(table_entry(&env, "users")["unique_by"], "id");
    let up = |env: &Env| {
        let out = env
            .cmd()
            .args(["start", "-op", "sql.Uploader", "--id", "up", "-U", "dl"])
            .env("ACHVY_CNXN__DB__URI", Target::Sqlite.sqlite_file(env))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output(&out));
    };
    up(&env);
    // Later: bob renamed, carl added (a new modification time).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(
        dir.join("users.jsonl"),
        "{\"id\": 1, \"name\": \"ann\"}\n{\"id\": 2, \"name\": \"robert\"}\n{\"id\": 3, \"name\": \"carl\"}\n",
    )
    .unwrap();
    download_ok(&env, &[]);
    up(&env);
    let t = Target::Sqlite;
    let rows = fetch(
        t,
        &env,
        &format!(
            "SELECT {}, {} FROM {} ORDER BY id",
            t.text("id"),
            t.text("name"),
            t.table("dl", "users")
        ),
    );
    let got: Vec<(String, String)> = rows
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("1".to_string(), "ann".to_string()),
            ("2".into(), "robert".into()),
            ("3".into(), "carl".into())
        ]
    );
}

/// A real tap from PyPI against the test PostgreSQL: MeltanoLabs' tap-postgres, its
/// configuration from the connection (the password never printed), the table's rows
/// typed by the tap's schema and merged into SQLite by its primary key.
#[test]
fn tap_postgres_from_pypi_reads_the_test_database() {
    let env = Env::new();
    let bin = need("SINGER_BIN");
    let pg = need("PG_URL");
    let schema = format!("tap_{}", env.nonce());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&pg).await.unwrap();
        for sql in [
            format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
            format!("CREATE SCHEMA {schema}"),
            format!("CREATE TABLE {schema}.items (id int PRIMARY KEY, name text, price numeric(10,2), added date)"),
            format!("INSERT INTO {schema}.items SELECT g, 'item ' || g, g * 1.5, date '2026-01-01' + g FROM generate_series(1, 25) g"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
        }
    });
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  pg_tap:\n    command: [\"{bin}/tap-postgres\"]\n    connection: src\n    catalog: discover\n    streams: \"{schema}-items\"\n    config: {{sqlalchemy_url: \"${{url}}\", filter_schemas: [{schema}]}}\n"
        ),
    );
    // postgres://user:password@host...
    let password = pg
        .split_once("://")
        .and_then(|(_, r)| r.split_once('@'))
        .and_then(|(cred, _)| cred.split_once(':'))
        .map(|(_, p)| p.to_string())
        .unwrap_or_default();
    let pg_sqlalchemy = pg
        .replacen("postgres://", "postgresql+psycopg2://", 1)
        .replacen("postgresql://", "postgresql+psycopg2://", 1);
    let out = download(&env, &[("ACHVY_CNXN__SRC__URL", &pg_sqlalchemy)]);
    let o = output(&out);
    assert!(out.status.success(), "{o}");
    if password.len() >= 4 {
        assert!(!o.contains(&password), "the password was printed");
    }
    let table = format!("{schema}_items");
    let got = ids(&env);
    assert!(got.contains_key(&table), "tables {:?}; {o}", got.keys());
    each_once(&got[&table], 25);
    let e = table_entry(&env, &table);
    assert_eq!(e["unique_by"], "id", "{e}");
    assert_eq!(e["columns"]["added"], "date", "{e}");
    let out = env
        .cmd()
        .args(["start", "-op", "sql.Uploader", "--id", "up", "-U", "dl"])
        .env("ACHVY_CNXN__DB__URI", Target::Sqlite.sqlite_file(&env))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output(&out));
    let t = Target::Sqlite;
    let rows = fetch(
        t,
        &env,
        &format!(
            "SELECT {}, {}, {} FROM {} WHERE id = 7",
            t.text("name"),
            t.text("price"),
            t.text("added"),
            t.table("dl", &table)
        ),
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0].as_deref(), Some("item 7"));
    assert_eq!(rows[0][1].as_deref(), Some("10.50"));
    assert!(
        rows[0][2].as_deref().unwrap().starts_with("2026-01-08"),
        "{rows:?}"
    );
}

/// Hostile option values: each table fails naming its option and what to write
/// instead, and the good table beside them still loads.
#[test]
fn hostile_option_values_fail_their_table_with_the_fix() {
    let env = Env::new();
    let cases = [
        (
            "no_command",
            "dialect: singer",
            "set `command: [program, arg, ...]`",
        ),
        ("empty_command", "command: []", "the command is empty"),
        ("blank_program", "command: [\"\"]", "the command is empty"),
        ("object_command", "command: {run: x}", "is not a command"),
        (
            "nested_arg",
            "command: [python3, [x]]",
            "is not an argument",
        ),
        (
            "dialect",
            "command: [true]\n    dialect: xml",
            "`xml` is not a dialect",
        ),
        ("timeout", "command: [true]\n    timeout: soon", "timeout"),
        (
            "inherit",
            "command: [true]\n    inherit_env: maybe",
            "inherit_env",
        ),
        (
            "env_braces",
            "command: [true]\n    env: {A: \"${oops\"}",
            "without `}`",
        ),
        (
            "env_missing",
            "command: [true]\n    connection: nope\n    env: {A: \"${token}\"}",
            "ACHVY_CNXN__NOPE__TOKEN",
        ),
        (
            "catalog_ndjson",
            "command: [true]\n    dialect: ndjson\n    catalog: discover",
            "a catalog is for Singer taps",
        ),
        ("unknown", "command: [true]\n    comand: [x]", "comand"),
    ];
    let mut cfg =
        format!("tbls:\n  good:\n    command: [python3, \"{TAP}\"]\n    config: {{rows: 2}}\n");
    for (name, opt, _) in cases {
        cfg.push_str(&format!("  {name}:\n    {opt}\n"));
    }
    env.write("config.yaml", cfg);
    // An unknown key stops the run at startup (exit 2), naming the table and the key.
    let out = download(&env, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", output(&out));
    assert!(
        output(&out).contains("unknown key `comand` in tbls.unknown"),
        "{}",
        output(&out)
    );
    let cfg = std::fs::read_to_string(env.path().join("config.yaml"))
        .unwrap()
        .replace("  unknown:\n    command: [true]\n    comand: [x]\n", "");
    env.write("config.yaml", cfg);
    let out = download(&env, &[]);
    assert_ne!(out.status.code(), Some(0), "{}", output(&out));
    let r = results(&out);
    for (name, _, want) in cases.iter().filter(|c| c.0 != "unknown") {
        let t = crate::tbl_task(&r, name).to_string();
        assert!(t.contains("\"ERR\"") && t.contains(want), "{name}: {t}");
    }
    assert_eq!(tbl_data(&r, "good")["source_rows"], 4, "{r}");
}
