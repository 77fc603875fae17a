//! Targets, names and what the uploader refuses, with the fix.

use super::*;

#[test]
fn a_refused_password_or_a_dead_database_is_a_clear_error() {
    let env = Env::new();
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    env.write("upload.yaml", "tbls: {}\n");
    env.write("in/1.csv", "id\n1\n");
    let up = format!("dead_{}", env.nonce());
    download(&env, &up);
    let good = Target::Pg.url().unwrap();
    let bad = good.replacen("anchovies:anchovies@", "anchovies:Wr0ng-Passw0rd@", 1);
    let t0 = std::time::Instant::now();
    let out = upload(
        &env,
        Target::Pg,
        "wh",
        &up,
        &[("ACHVY_CNXN__DB__URI", &bad)],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = crate::stderr(&out);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(
        !err.contains("Wr0ng-Passw0rd")
            && !String::from_utf8_lossy(&out.stdout).contains("Wr0ng-Passw0rd"),
        "password leaked: {err}"
    );
    let out = upload(
        &env,
        Target::Pg,
        "wh",
        &up,
        &[(
            "ACHVY_CNXN__DB__URI",
            "postgres://u:p4ssw0rd-x@127.0.0.1:1/db",
        )],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        crate::stderr(&out).contains("connect to postgres://u:***@127.0.0.1:1/db"),
        "{}",
        crate::stderr(&out)
    );
    assert!(t0.elapsed() < std::time::Duration::from_secs(40));
    // Nothing was loaded and no position moved: the good run loads everything.
    let r = upload_ok(&env, Target::Pg, "wh", &up);
    assert_eq!(tbl_task(&r, &format!("{up}.t"))["data"]["rows_inserted"], 1);
}

#[test]
fn schemas_are_renamed_and_suffixed_for_non_prod_users() {
    let env = Env::new();
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    env.write("upload.yaml", "tbls: {}\n");
    env.write("in/1.csv", "id\n1\n");
    let up = format!("ren_{}", env.nonce());
    let schema = format!("sales_{}", env.nonce());
    for user in ["tester", "prod"] {
        let out = env
            .cmd()
            .args([
                "start",
                "-op",
                "files.CsvDownloader",
                "--id",
                &up,
                "--user",
                user,
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let out = env
            .cmd()
            .args([
                "start",
                "-op",
                "sql.Uploader",
                "--id",
                "wh",
                "-U",
                &up,
                "--user",
                user,
                "-c",
                "upload.yaml",
            ])
            .env("ACHVY_CNXN__DB__URI", Target::Pg.url().unwrap())
            .env(
                format!("ACHVY_CNXN__SCHEMAS__{}", up.to_uppercase()),
                &schema,
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", crate::stderr(&out));
    }
    for schema in [format!("{schema}__tester"), schema.clone()] {
        let n = fetch(
            Target::Pg,
            &env,
            &format!("SELECT COUNT(*)::text FROM \"{schema}\".\"t\""),
        );
        assert_eq!(n[0][0], s("1"), "{schema}");
    }
}

#[test]
fn an_uploader_without_upstreams_says_how_to_set_them() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["start", "-op", "core.sql.Uploader", "--id", "wh"])
        .env("ACHVY_CNXN__DB__URI", "sqlite://")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        crate::stderr(&out).contains("pass -U <downloader id>"),
        "{}",
        crate::stderr(&out)
    );
}

#[test]
fn history_keeps_superseded_versions_until_their_ttl() {
    for target in ALL {
        let env = Env::new();
        let up = format!("his_{target:?}_{}", env.nonce()).to_lowercase();
        env.write("config.yaml", "tbls:\n  cust:\n    path: in/*.csv\n    unique_by: id\n    sort_by: -v\n    columns: {id: int, v: int}\n");
        env.write("upload.yaml", "tbls:\n  cust:\n    history: true\n");
        env.write("in/1.csv", "id,v\n1,1\n2,1\n");
        download(&env, &up);
        upload_ok(&env, target, "wh", &up);
        // A newer id 1, an older id 2 (ignored), a new id 3.
        env.write("in/2.csv", "id,v\n1,2\n2,0\n3,1\n");
        download(&env, &up);
        let r = upload_ok(&env, target, "wh", &up);
        let d = &tbl_task(&r, &format!("{up}.cust"))["data"];
        assert_eq!(
            (
                d["rows_inserted"].as_u64(),
                d["rows_updated"].as_u64(),
                d["rows_skipped_older"].as_u64()
            ),
            (Some(1), Some(1), Some(1)),
            "{target:?}: {d}"
        );
        let versions = |env: &Env| {
            fetch(
                target,
                env,
                &format!(
                    "SELECT {}, {}, CASE WHEN _del IS NULL THEN 'current' ELSE 'old' END FROM {} ORDER BY id, v",
                    target.text("id"),
                    target.text("v"),
                    target.table(&up, "cust")
                ),
            )
        };
        let cur = |id: &str, v: &str| vec![s(id), s(v), s("current")];
        let old = |id: &str, v: &str| vec![s(id), s(v), s("old")];
        assert_eq!(
            versions(&env),
            vec![old("1", "1"), cur("1", "2"), cur("2", "1"), cur("3", "1")],
            "{target:?}"
        );
        // With a TTL, versions superseded longer ago than it are dropped at the next load.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        env.write(
            "upload.yaml",
            "tbls:\n  cust:\n    history: true\n    deleted_ttl: 2s\n",
        );
        env.write("in/3.csv", "id,v\n3,5\n");
        download(&env, &up);
        upload_ok(&env, target, "wh", &up);
        assert_eq!(
            versions(&env),
            vec![cur("1", "2"), cur("2", "1"), old("3", "1"), cur("3", "5")],
            "{target:?}"
        );
    }
}

#[test]
fn an_uploader_needs_a_named_target() {
    let env = Env::new();
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    env.write("upload.yaml", "tbls: {}\n");
    env.write("in/1.csv", "id\n1\n");
    download(&env, "src");
    let run = |vars: &[(&str, &str)]| {
        let mut c = env.cmd();
        c.args(upload_args("wh", "src"));
        for (k, v) in vars {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    // No target: exit 2 with the README's message, and no SQLite file appears.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", crate::stderr(&out));
    assert!(
        crate::stderr(&out).contains("anchovy: error: connection \"db\" is not configured (needed by sql.Uploader); set ACHVY_CNXN__DB__URI or ACHVY_CNXN__DB__JSONDATA"),
        "{}",
        crate::stderr(&out)
    );
    assert!(!env.home().join("tester/warehouse.sqlite").exists());
    // A typo is named.
    let out = run(&[("ACHVY_CNXN__DB_URI", "sqlite://")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        crate::stderr(&out)
            .contains("(ACHVY_CNXN__DB_URI is set: did you mean ACHVY_CNXN__DB__URI?)"),
        "{}",
        crate::stderr(&out)
    );
    // The original tool's URL spelling works.
    let file = env.path().join("w.sqlite");
    let out = run(&[(
        "ACHVY_CNXN__DB__URL",
        &format!("sqlite://{}", file.display()),
    )]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert!(file.exists());
    // sqlite:// alone is the embedded default; unknown variables and attributes are
    // warned about with the closest known name.
    let out = run(&[
        ("ACHVY_CNXN__DB__URI", "sqlite://"),
        ("ACHVY_BATCHSIZE", "10"),
        ("ACHVY_CNXN__DB__URII", "x"),
    ]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert!(env.home().join("tester/warehouse.sqlite").exists());
    let err = crate::stderr(&out);
    assert!(
        err.contains("ACHVY_BATCHSIZE is set but is no anchovies setting, so it is ignored; did you mean ACHVY_BATCH_SIZE?"),
        "{err}"
    );
    assert!(
        err.contains("ACHVY_CNXN__DB__URII is set, but the connection \"db\" has no attribute `urii` (it reads uri); did you mean ACHVY_CNXN__DB__URI?"),
        "{err}"
    );
}

#[test]
fn names_never_collide_silently() {
    // PostgreSQL cuts identifiers at 63 bytes: two tables sharing their first 63
    // characters stay two tables, and a long column loads on every run.
    let env = Env::new();
    let up = format!("nm_{}", env.nonce());
    let (a, b) = (
        format!("{}_alpha", "t".repeat(60)),
        format!("{}_beta", "t".repeat(60)),
    );
    let long_col = "c".repeat(70);
    env.write(
        "config.yaml",
        format!("tbls:\n  {a}:\n    path: a/*.csv\n  {b}:\n    path: b/*.csv\n"),
    );
    env.write("upload.yaml", "tbls: {}\n");
    env.write("a/1.csv", format!("id,{long_col}\n1,a1\n"));
    env.write("b/1.csv", format!("id,{long_col}\n2,b1\n"));
    download(&env, &up);
    upload_ok(&env, Target::Pg, "wh", &up);
    env.write("a/2.csv", format!("id,{long_col}\n3,a2\n"));
    download(&env, &up);
    upload_ok(&env, Target::Pg, "wh", &up);
    let fit = |n: &str| {
        format!(
            "{}_{:08x}",
            &n[..54],
            anchovy_plugins::sql::dialect::name_hash(n)
        )
    };
    let rows = fetch(
        Target::Pg,
        &env,
        &format!(
            "SELECT id::text, {} FROM \"{up}__tester\".\"{}\" ORDER BY id",
            Target::Pg.q(&fit(&long_col)),
            fit(&a)
        ),
    );
    assert_eq!(rows, vec![vec![s("1"), s("a1")], vec![s("3"), s("a2")]]);
    let rows = fetch(
        Target::Pg,
        &env,
        &format!("SELECT id::text FROM \"{up}__tester\".\"{}\"", fit(&b)),
    );
    assert_eq!(rows, vec![vec![s("2")]]);

    // SQLite compares names without regard to case: `Orders` and `orders` are refused
    // rather than merged; columns `Name` and `name` both arrive.
    let env = Env::new();
    env.write(
        "config.yaml",
        "tbls:\n  Orders:\n    path: o1/*.csv\n  orders:\n    path: o2/*.csv\n  people:\n    path: p/*.csv\n",
    );
    env.write("upload.yaml", "tbls: {}\n");
    env.write("o1/1.csv", "id\n1\n");
    env.write("o2/1.csv", "id\n2\n");
    env.write("p/1.csv", "id,Name,name\n1,Ada,ada\n");
    download(&env, "src");
    let out = upload(
        &env,
        Target::Sqlite,
        "wh",
        "src",
        &[("ACHVY_MAX_CONCURRENCY", "1")],
    );
    let all = crate::output(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("the upstream table `orders` would load into \"src__tester__orders\"")
            && all.contains("already holds `src__tester__Orders`"),
        "{all}"
    );
    let rows = fetch(
        Target::Sqlite,
        &env,
        "SELECT CAST(id AS TEXT) FROM \"src__tester__Orders\"",
    );
    assert_eq!(rows, vec![vec![s("1")]], "Orders keeps only its own rows");
    let suffixed = format!(
        "name_{:08x}",
        anchovy_plugins::sql::dialect::name_hash("name")
    );
    let rows = fetch(
        Target::Sqlite,
        &env,
        &format!("SELECT \"Name\", \"{suffixed}\" FROM \"src__tester__people\""),
    );
    assert_eq!(rows, vec![vec![s("Ada"), s("ada")]]);
}

#[test]
fn a_null_key_is_refused_with_the_row_never_dropped() {
    let env = Env::new();
    let src = format!("nk_{}", env.nonce());
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/*.csv\n    unique_by: id\n    provenance: true\n    columns: {id: int}\n",
    );
    env.write("in/1.csv", "id,v\n1,a\n,b\n");
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", &src])
        .output()
        .unwrap();
    let all = crate::output(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("row 2 of this run (in/1.csv:3) has no value in unique_by column `id`"),
        "{all}"
    );
    assert_eq!(crate::commit_count(&env.area("tester", &src)), 0);
    // A key the uploader adds in its own config is checked there, on every database.
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/*.csv\n    columns: {id: int}\n",
    );
    download(&env, &src);
    env.write("upload.yaml", "tbls:\n  t:\n    unique_by: id\n");
    for target in ALL {
        let out = upload(
            &env,
            target,
            &format!("wh{target:?}").to_lowercase(),
            &src,
            &[],
        );
        let all = crate::output(&out);
        assert_eq!(out.status.code(), Some(1), "{target:?}: {all}");
        assert!(
            all.contains("the row has no value in unique_by column `id`")
                && all.contains(":2 (commit 1)"),
            "{target:?}: {all}"
        );
    }
}

#[test]
fn reserved_column_names_are_refused_at_download_with_the_fix() {
    let env = Env::new();
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    env.write("in/1.csv", "id,_types\n1,x\n");
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "src"])
        .output()
        .unwrap();
    let all = crate::output(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("the source has a column `_types`") && all.contains("rename: {_types: types}"),
        "{all}"
    );
    assert_eq!(crate::commit_count(&env.area("tester", "src")), 0);
    // The fix works, and provenance collisions are named the same way.
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/*.csv\n    rename: {_types: types}\n    provenance: true\n",
    );
    env.write("in/2.csv", "id,_file\n2,y\n");
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "src"])
        .output()
        .unwrap();
    let all = crate::output(&out);
    assert!(
        all.contains("in/2.csv:1: the file has a column `_file`, which `provenance: true` adds itself; rename it (`rename: {_file: source_file}`)"),
        "{all}"
    );
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/*.csv\n    rename: {_types: types, _file: source_file}\n    provenance: true\n",
    );
    download(&env, "src");
    env.write("upload.yaml", "tbls: {}\n");
    upload_ok(&env, Target::Sqlite, "wh", "src");
    let rows = fetch(
        Target::Sqlite,
        &env,
        "SELECT CAST(id AS TEXT), types, source_file, _file FROM \"src__tester__t\" ORDER BY id",
    );
    assert_eq!(
        rows,
        vec![
            vec![s("1"), s("x"), None, s("in/1.csv")],
            vec![s("2"), None, s("y"), s("in/2.csv")]
        ]
    );
}

/// `ACHVY_SQL_NO_SCHEMA_NAME` (the original tool's): every database loads into its
/// default schema under the upstream's table name, as the original's uploader names
/// it, and a second load continues there.
#[test]
fn no_schema_name_loads_into_the_default_schema_under_the_plain_name() {
    for target in ALL {
        let env = Env::new();
        let tbl = format!("plain_{}", env.nonce());
        env.write(
            "config.yaml",
            format!("tbls:\n  {tbl}:\n    path: in/*.csv\n    unique_by: id\n"),
        );
        env.write("upload.yaml", "tbls: {}\n");
        env.write("in/1.csv", "id,v\n1,a\n2,b\n");
        download(&env, "dl");
        let run = || {
            let out = upload(
                &env,
                target,
                "wh",
                "dl",
                &[("ACHVY_SQL_NO_SCHEMA_NAME", "true")],
            );
            assert!(out.status.success(), "{target:?}: {}", crate::stderr(&out));
            results(&out)
        };
        let r = run();
        let want = match target {
            Target::My => format!("`{tbl}`"),
            _ => format!("\"{tbl}\""),
        };
        assert_eq!(
            tbl_task(&r, &format!("dl.{tbl}"))["data"]["target"],
            want,
            "{target:?}"
        );
        env.write("in/2.csv", "id,v\n2,c\n3,d\n");
        download(&env, "dl");
        run();
        let rows = fetch(
            target,
            &env,
            &format!(
                "SELECT {}, {} FROM {} ORDER BY id",
                target.text("id"),
                target.text("v"),
                target.q(&tbl)
            ),
        );
        let got: Vec<(String, String)> = rows
            .into_iter()
            .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
            .collect();
        let want: Vec<(String, String)> = [("1", "a"), ("2", "c"), ("3", "d")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .to_vec();
        assert_eq!(got, want, "{target:?}");
        if target != Target::Sqlite {
            let drop = format!("DROP TABLE {}", target.q(&tbl));
            fetch(target, &env, &drop);
        }
    }
}

/// A history table in the original tool's layout (made by its SQLAlchemy uploader:
/// NUMERIC keys, `_seq` and `_del` as NUMERIC(38,0), current rows `_del IS NULL`) is
/// continued in that layout on every database: a superseded version is stamped in
/// epoch microseconds, as the original stamps it.
#[test]
fn an_original_history_table_is_continued_in_its_layout() {
    for target in ALL {
        let env = Env::new();
        let tbl = format!("orig_{}", env.nonce());
        let q = |s: &str| target.q(s);
        let (num, text, dt) = match target {
            Target::My => ("NUMERIC(38, 0)", "VARCHAR(255)", "DATETIME"),
            Target::Pg => ("NUMERIC(38, 0)", "VARCHAR", "TIMESTAMP WITHOUT TIME ZONE"),
            Target::Sqlite => ("NUMERIC(38, 0)", "VARCHAR", "DATETIME"),
        };
        if target == Target::Sqlite {
            // The embedded target file, made before the uploader makes it.
            let f = env.home().join("tester/warehouse.sqlite");
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::File::create(f).unwrap();
        }
        for sql in [
            format!(
                "CREATE TABLE {} ({} {num} NOT NULL, {} {num} NOT NULL, {} {text}, {} {dt}, {} {num}, PRIMARY KEY ({}, {}))",
                q(&tbl),
                q("id"),
                q("_seq"),
                q("v"),
                q("at"),
                q("_del"),
                q("id"),
                q("_seq")
            ),
            format!(
                "INSERT INTO {} ({}, {}, {}, {}, {}) VALUES (1, 1796322547456292, 'a', '2024-05-01 10:00:00', NULL), (2, 1796322547456293, 'b', '2024-05-01 10:00:00', NULL)",
                q(&tbl),
                q("id"),
                q("_seq"),
                q("v"),
                q("at"),
                q("_del")
            ),
        ] {
            fetch(target, &env, &sql);
        }
        env.write(
            "config.yaml",
            format!("tbls:\n  {tbl}:\n    path: in/*.csv\n    unique_by: id\n    columns: {{id: int, at: datetime}}\n"),
        );
        env.write(
            "upload.yaml",
            format!("tbls:\n  {tbl}:\n    history: true\n"),
        );
        env.write(
            "in/1.csv",
            "id,v,at\n1,a2,2024-05-02T10:00:00\n3,c,2024-05-02T10:00:00\n",
        );
        download(&env, "dl");
        let out = upload(
            &env,
            target,
            "wh",
            "dl",
            &[("ACHVY_SQL_NO_SCHEMA_NAME", "true")],
        );
        assert!(out.status.success(), "{target:?}: {}", crate::stderr(&out));
        let rows = fetch(
            target,
            &env,
            &format!(
                "SELECT {}, {}, {} FROM {} ORDER BY {}, {}",
                target.text(&q("id")),
                target.text(&q("v")),
                target.text(&q("_del")),
                q(&tbl),
                q("id"),
                q("_seq")
            ),
        );
        let now_us = chrono::Utc::now().timestamp_micros() as f64;
        let got: Vec<(String, String, Option<f64>)> = rows
            .into_iter()
            .map(|r| {
                (
                    r[0].clone().unwrap(),
                    r[1].clone().unwrap(),
                    r[2].as_deref().map(|d| {
                        d.parse::<f64>()
                            .unwrap_or_else(|e| panic!("{target:?}: _del `{d}`: {e}"))
                    }),
                )
            })
            .collect();
        assert_eq!(got.len(), 4, "{target:?}: {got:?}");
        let ids: Vec<(&str, &str)> = got
            .iter()
            .map(|(i, v, _)| (i.as_str(), v.as_str()))
            .collect();
        let ids: Vec<(String, String)> = ids
            .into_iter()
            .map(|(i, v)| (i.split('.').next().unwrap().to_string(), v.to_string()))
            .collect();
        assert_eq!(
            ids,
            [("1", "a"), ("1", "a2"), ("2", "b"), ("3", "c")]
                .map(|(i, v)| (i.to_string(), v.to_string()))
                .to_vec(),
            "{target:?}"
        );
        let stamped: Vec<f64> = got.iter().filter_map(|g| g.2).collect();
        assert_eq!(stamped.len(), 1, "{target:?}: {got:?}");
        assert!(
            (now_us - stamped[0]).abs() < 600e6,
            "{target:?}: {stamped:?} vs {now_us}"
        );
        if target != Target::Sqlite {
            fetch(target, &env, &format!("DROP TABLE {}", q(&tbl)));
        }
    }
}

/// `audit: true`: every load of the table is a row of `_anchovies_loads` (its commit
/// range, rows, times, status), written with the load; a load that fails and rolls back
/// is recorded after it, with its error, and the retry that succeeds is recorded too.
/// The rows the records count are the rows in the table, on every database.
#[test]
fn audited_loads_are_recorded_in_the_target() {
    for target in ALL {
        let env = Env::new();
        let up = format!("aud_{target:?}_{}", env.nonce()).to_lowercase();
        env.write(
            "config.yaml",
            "tbls:\n  t:\n    path: in/*.csv\n    unique_by: id\n    columns: {id: int, v: int}\n",
        );
        env.write("upload.yaml", "tbls:\n  t:\n    audit: true\n");
        env.write("in/1.csv", "id,v\n1,10\n2,20\n3,30\n");
        download(&env, &up);
        upload_ok(&env, target, "wh", &up);
        env.write("in/2.csv", "id,v\n3,31\n4,40\n");
        download(&env, &up);
        upload_ok(&env, target, "wh", &up);
        // A unique index on v makes the next load fail (v 10 again): it rolls back.
        let table = target.table(&up, "t");
        let index = format!("ux_{up}");
        fetch(
            target,
            &env,
            &format!("CREATE UNIQUE INDEX {index} ON {table} (v)"),
        );
        env.write("in/3.csv", "id,v\n5,10\n");
        download(&env, &up);
        let out = upload(&env, target, "wh", &up, &[]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{target:?}: {}",
            crate::stderr(&out)
        );
        let drop = match target {
            Target::My => format!("DROP INDEX {index} ON {table}"),
            Target::Pg => format!("DROP INDEX \"{up}__tester\".{index}"),
            Target::Sqlite => format!("DROP INDEX {index}"),
        };
        fetch(target, &env, &drop);
        upload_ok(&env, target, "wh", &up);
        let rows = fetch(
            target,
            &env,
            &format!(
                "SELECT {}, {}, status, {}, {}, {}, CASE WHEN error IS NULL THEN 'no' ELSE 'yes' END, CASE WHEN finished_at >= started_at THEN 'ordered' ELSE 'not' END FROM _anchovies_loads WHERE target = '{}' ORDER BY started_at",
                target.text("first_seq"),
                target.text("last_seq"),
                target.text("rows_inserted"),
                target.text("rows_updated"),
                target.text("files"),
                table.replace('\'', "''"),
            ),
        );
        let row = |a: &str, b: &str, st: &str, ins: &str, upd: &str, f: &str, err: &str| {
            vec![
                s(a),
                s(b),
                s(st),
                s(ins),
                s(upd),
                s(f),
                s(err),
                s("ordered"),
            ]
        };
        assert_eq!(
            rows,
            vec![
                row("1", "1", "ok", "3", "0", "1", "no"),
                row("2", "2", "ok", "1", "1", "1", "no"),
                row("3", "3", "error", "0", "0", "0", "yes"),
                row("3", "3", "ok", "1", "0", "1", "no"),
            ],
            "{target:?}"
        );
        let err = fetch(
            target,
            &env,
            &format!(
                "SELECT error FROM _anchovies_loads WHERE target = '{}' AND status = 'error'",
                table.replace('\'', "''")
            ),
        );
        let err = err[0][0].clone().unwrap();
        assert!(
            err.to_lowercase().contains("unique") || err.contains("Duplicate"),
            "{target:?}: {err}"
        );
        // `anchovy logs --from-target` answers from the same table.
        let logs = |extra: &[&str]| {
            let mut c = env.cmd();
            c.args(["logs", "-op", "sql.Uploader", "--id", "wh", "--from-target"])
                .args(extra)
                .env("ACHVY_CNXN__DB__URI", target.url().unwrap());
            let out = c.output().unwrap();
            assert!(out.status.success(), "{target:?}: {}", crate::stderr(&out));
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        let text = logs(&["--json", "--table", &format!("{up}.t")]);
        let mine: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(mine.len(), 4, "{target:?}: {text}");
        assert_eq!(mine[0]["first_seq"], 1);
        let failed = logs(&["--status", "err", "--table", &format!("{up}.t")]);
        assert!(failed.starts_with("STARTED (UTC)"), "{failed}");
        assert_eq!(failed.lines().count(), 2, "{target:?}: {failed}");
        assert!(
            failed.contains(&format!("{up}.t")) && failed.contains("3..3"),
            "{failed}"
        );
        // `--limit` is the newest loads (in the database: no table filter here).
        let newest = logs(&["--json", "--limit", "1"]);
        let newest: serde_json::Value = serde_json::from_str(newest.trim()).unwrap();
        assert_eq!(
            (&newest["status"], &newest["first_seq"]),
            (&"ok".into(), &3.into()),
            "{newest}"
        );
        // A status that is neither OK nor ERR is refused, naming the flag.
        let bad = env
            .cmd()
            .args([
                "logs",
                "-op",
                "sql.Uploader",
                "--id",
                "wh",
                "--from-target",
                "--status",
                "maybe",
            ])
            .env("ACHVY_CNXN__DB__URI", target.url().unwrap())
            .output()
            .unwrap();
        assert_eq!(bad.status.code(), Some(2));
        assert!(
            crate::stderr(&bad).contains("--status"),
            "{}",
            crate::stderr(&bad)
        );
        // The records count what the table holds.
        let n = fetch(
            target,
            &env,
            &format!("SELECT {} FROM {table}", target.text("COUNT(*)")),
        );
        assert_eq!(n, vec![vec![s("5")]], "{target:?}");
    }
}
