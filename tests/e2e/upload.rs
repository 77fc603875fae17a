//! sql.Uploader against real SQLite, PostgreSQL (PG_URL) and MariaDB (MYSQL_URL),
//! which script/test starts. A missing server fails the test; it never passes silently.

use std::str::FromStr;

use crate::{Env, results, tbl_task};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    Sqlite,
    Pg,
    My,
}

const ALL: [Target; 3] = [Target::Sqlite, Target::Pg, Target::My];

fn server_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with script/test, which starts PostgreSQL and MariaDB (see script/services.sh)")
    })
}

impl Target {
    /// The target URL; for SQLite `sqlite://`, the opt-in to the uploader's embedded
    /// default (a file in the datastore).
    pub fn url(self) -> Option<String> {
        match self {
            Target::Sqlite => Some("sqlite://".into()),
            Target::Pg => Some(server_url("PG_URL")),
            Target::My => Some(server_url("MYSQL_URL")),
        }
    }

    pub fn sqlite_file(self, env: &Env) -> String {
        format!(
            "sqlite://{}",
            env.home().join("tester/warehouse.sqlite").display()
        )
    }

    /// The quoted table of upstream `up` for user `tester`.
    pub fn table(self, up: &str, tbl: &str) -> String {
        match self {
            Target::Sqlite => format!("\"{up}__tester__{tbl}\""),
            Target::Pg => format!("\"{up}__tester\".\"{tbl}\""),
            Target::My => format!("`{up}__tester`.`{tbl}`"),
        }
    }

    pub fn text(self, col: &str) -> String {
        match self {
            Target::Sqlite => format!("CAST({col} AS TEXT)"),
            Target::Pg => format!("({col})::text"),
            Target::My => format!("CAST({col} AS CHAR)"),
        }
    }

    pub fn q(self, ident: &str) -> String {
        match self {
            Target::My => format!("`{}`", ident.replace('`', "``")),
            _ => format!("\"{}\"", ident.replace('"', "\"\"")),
        }
    }
}

/// Runs a query whose columns are all text (use [`Target::text`]) and returns the rows.
pub fn fetch(target: Target, env: &Env, sql: &str) -> Vec<Vec<Option<String>>> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Row;
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match target {
            Target::Sqlite => {
                let opts =
                    sqlx::sqlite::SqliteConnectOptions::from_str(&target.sqlite_file(env)).unwrap();
                let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
                let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.get::<Option<String>, _>(i))
                            .collect()
                    })
                    .collect()
            }
            Target::Pg => {
                let pool = sqlx::PgPool::connect(&target.url().unwrap()).await.unwrap();
                let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.get::<Option<String>, _>(i))
                            .collect()
                    })
                    .collect()
            }
            Target::My => {
                let pool = sqlx::MySqlPool::connect(&target.url().unwrap())
                    .await
                    .unwrap();
                let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| {
                                r.get::<Option<Vec<u8>>, _>(i)
                                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    })
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

/// Runs the downloader `id` over `config.yaml`.
pub fn download(env: &Env, id: &str) {
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "download failed: {}",
        crate::stderr(&out)
    );
}

/// The command line of uploader `id` over upstream `up` with `upload.yaml`.
pub fn upload_args<'a>(id: &'a str, up: &'a str) -> [&'a str; 9] {
    [
        "start",
        "-op",
        "sql.Uploader",
        "--id",
        id,
        "-U",
        up,
        "-c",
        "upload.yaml",
    ]
}

/// Runs the uploader `id` over upstream `up`; returns the results.
pub fn upload(
    env: &Env,
    target: Target,
    id: &str,
    up: &str,
    extra: &[(&str, &str)],
) -> std::process::Output {
    let mut c = env.cmd();
    c.args(upload_args(id, up));
    if let Some(u) = target.url() {
        c.env("ACHVY_CNXN__DB__URI", u);
    }
    for (k, v) in extra {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn upload_ok(env: &Env, target: Target, id: &str, up: &str) -> serde_json::Value {
    let out = upload(env, target, id, up, &[]);
    assert!(
        out.status.success(),
        "{target:?} upload failed: {}\n{}",
        crate::stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    results(&out)
}

fn merge_scenario(target: Target) {
    let env = Env::new();
    let up = format!("src_{target:?}_{}", env.nonce()).to_lowercase();
    env.write(
        "config.yaml",
        "tbls:\n  events:\n    path: ev/*.csv\n    columns: {n: int}\n  orders:\n    path: or/*.csv\n    unique_by: id\n    sort_by: -updated_at\n    columns: {id: int, updated_at: datetime}\n  lines:\n    path: li/*.csv\n    set_by: order_id\n    columns: {order_id: int, line: int}\n  customers:\n    path: cu/*.csv\n    unique_by: id\n    columns: {id: int}\n",
    );
    env.write("upload.yaml", "tbls: {}\n");
    env.write("ev/1.csv", "n,what\n1,a\n2,b\n");
    env.write("or/1.csv", "id,status,updated_at\n1,new,2024-01-01T00:00:00Z\n2,new,2024-01-05T00:00:00Z\n2,paid,2024-01-06T00:00:00Z\n");
    env.write("li/1.csv", "order_id,line,sku\n10,1,A\n10,2,B\n11,1,C\n");
    env.write("cu/1.csv", "id,name\n1,Ada\n2,Bob\n");
    download(&env, &up);
    let r = upload_ok(&env, target, "wh", &up);
    let o = tbl_task(&r, &format!("{up}.orders"));
    assert_eq!(o["data"]["rows_inserted"], 2, "{o}");

    let q = |sql: String| fetch(target, &env, &sql);
    let t = |tbl: &str| target.table(&up, tbl);
    let orders = || {
        q(format!(
            "SELECT {}, status FROM {} ORDER BY id",
            target.text("id"),
            t("orders")
        ))
    };
    // Within one delivery the first row by sort_by (newest updated_at) wins.
    assert_eq!(
        orders(),
        vec![vec![s("1"), s("new")], vec![s("2"), s("paid")]]
    );

    // Second delivery: a newer order 1, a late older order 2 (must not win), a new order 3;
    // set 10 replaced by one line; customer 1 renamed; two more events.
    env.write("ev/2.csv", "n,what\n3,c\n4,d\n");
    env.write("or/2.csv", "id,status,updated_at\n1,shipped,2024-02-01T00:00:00Z\n2,stale,2024-01-02T00:00:00Z\n3,new,2024-02-02T00:00:00Z\n");
    env.write("li/2.csv", "order_id,line,sku\n10,1,Z\n");
    env.write("cu/2.csv", "id,name\n1,Ada L.\n");
    download(&env, &up);
    let r = upload_ok(&env, target, "wh", &up);
    let o = &tbl_task(&r, &format!("{up}.orders"))["data"];
    assert_eq!(
        (
            o["rows_inserted"].as_u64(),
            o["rows_updated"].as_u64(),
            o["rows_skipped_older"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{o}"
    );
    assert_eq!(
        orders(),
        vec![
            vec![s("1"), s("shipped")],
            vec![s("2"), s("paid")],
            vec![s("3"), s("new")]
        ]
    );
    assert_eq!(
        q(format!(
            "SELECT {}, {}, sku FROM {} ORDER BY order_id, line",
            target.text("order_id"),
            target.text("line"),
            t("lines")
        )),
        vec![vec![s("10"), s("1"), s("Z")], vec![s("11"), s("1"), s("C")]]
    );
    assert_eq!(
        tbl_task(&r, &format!("{up}.lines"))["data"]["rows_deleted"],
        2
    );
    assert_eq!(
        q(format!("SELECT name FROM {} ORDER BY id", t("customers"))),
        vec![vec![s("Ada L.")], vec![s("Bob")]]
    );
    assert_eq!(
        q(format!(
            "SELECT {} FROM {} ORDER BY n",
            target.text("n"),
            t("events")
        ))
        .len(),
        4
    );

    // Nothing new: nothing changes.
    let r = upload_ok(&env, target, "wh", &up);
    for tbl in ["events", "orders", "lines", "customers"] {
        assert!(
            tbl_task(&r, &format!("{up}.{tbl}"))["data"]["rows_inserted"].is_null(),
            "{r}"
        );
    }
    assert_eq!(
        q(format!(
            "SELECT {} FROM {} ORDER BY n",
            target.text("n"),
            t("events")
        ))
        .len(),
        4
    );
    // The position is mirrored to the uploader's checkpoints.
    let out = env
        .cmd()
        .args(["checkpoints", "--id", "wh", "--json"])
        .output()
        .unwrap();
    let cps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cps.as_array().unwrap().len(), 4, "{cps}");
}

#[test]
fn merge_modes_sqlite() {
    merge_scenario(Target::Sqlite);
}

#[test]
fn merge_modes_postgres() {
    merge_scenario(Target::Pg);
}

#[test]
fn merge_modes_mariadb() {
    merge_scenario(Target::My);
}

#[test]
fn schema_evolution_and_names_that_need_quotes() {
    for target in ALL {
        let env = Env::new();
        let up = format!("evo_{target:?}_{}", env.nonce()).to_lowercase();
        env.write("upload.yaml", "tbls: {}\n");
        let cfg = |qty: &str| {
            format!(
                "tbls:\n  order:\n    path: in/*.csv\n    unique_by: id\n    columns: {{id: int{qty}}}\n"
            )
        };
        env.write("config.yaml", cfg(", qty: int"));
        env.write("in/1.csv", "id,a b,qty\n1,x,5\n");
        download(&env, &up);
        upload_ok(&env, target, "wh", &up);
        // qty becomes a decimal and a column with a quote in its name appears.
        env.write("config.yaml", cfg(", qty: decimal"));
        env.write("in/2.csv", "id,a b,qty,we\"ird\n2,y,2.5,q\n");
        download(&env, &up);
        let r = upload_ok(&env, target, "wh", &up);
        let changes = tbl_task(&r, &format!("{up}.order"))["data"]["schema_changes"].to_string();
        assert!(
            changes.contains("widened column qty from int to decimal"),
            "{target:?}: {changes}"
        );
        assert!(
            changes.contains("added column we\\\"ird str"),
            "{target:?}: {changes}"
        );
        // Then text arrives in qty: widened to text, nothing lost.
        env.write("config.yaml", cfg(""));
        env.write("in/3.csv", "id,a b,qty\n3,z,lots\n");
        download(&env, &up);
        let r = upload_ok(&env, target, "wh", &up);
        let changes = tbl_task(&r, &format!("{up}.order"))["data"]["schema_changes"].to_string();
        // SQLite too: its decimal column is declared `DECIMAL TEXT` (ordered as numbers).
        assert!(
            changes.contains("widened column qty from decimal to str"),
            "{target:?}: {changes}"
        );
        let rows = fetch(
            target,
            &env,
            &format!(
                "SELECT {}, {}, {}, {} FROM {} ORDER BY id",
                target.text("id"),
                target.q("a b"),
                target.text("qty"),
                target.q("we\"ird"),
                target.table(&up, "order")
            ),
        );
        let qty: Vec<String> = rows.iter().map(|r| r[2].clone().unwrap()).collect();
        assert_eq!(rows.len(), 3, "{target:?}");
        assert_eq!(rows[0][1], s("x"));
        assert_eq!(rows[1][3], s("q"));
        assert!(
            qty[0] == "5" || qty[0].starts_with("5."),
            "{target:?}: {qty:?}"
        );
        assert!(qty[1].starts_with("2.5"), "{target:?}: {qty:?}");
        assert_eq!(qty[2], "lots");
    }
}

#[test]
fn typed_values_arrive_with_sql_types() {
    for target in ALL {
        let env = Env::new();
        let up = format!("typ_{target:?}_{}", env.nonce()).to_lowercase();
        env.write("upload.yaml", "tbls: {}\n");
        env.write(
            "config.yaml",
            "tbls:\n  t:\n    path: in/*.csv\n    unique_by: id\n    columns: {id: int, d: date, dt: datetime, b: bytes, n: decimal, j: object, f: float, ok: bool}\n",
        );
        env.write(
            "in/1.csv",
            "id,d,dt,b,n,j,f,ok\n1,2024-02-29,2024-02-29T13:45:01.5+02:00,00ff10,12345678901234567890.123456789,\"{\"\"a\"\": [1, 2]}\",2.5,true\n2,,,,,,,\n",
        );
        download(&env, &up);
        upload_ok(&env, target, "wh", &up);
        let rows = fetch(
            target,
            &env,
            &format!(
                "SELECT {}, {}, {}, {}, {} FROM {} ORDER BY id",
                target.text("d"),
                target.text("n"),
                target.text("f"),
                match target {
                    Target::Pg => "encode(b, 'hex')".to_string(),
                    _ => "CASE WHEN b IS NULL THEN NULL ELSE LOWER(HEX(b)) END".to_string(),
                },
                target.text("j"),
                target.table(&up, "t")
            ),
        );
        assert_eq!(rows[0][0], s("2024-02-29"), "{target:?}");
        assert!(
            rows[0][1]
                .as_deref()
                .unwrap()
                .starts_with("12345678901234567890.123456789"),
            "{target:?}: {:?}",
            rows[0][1]
        );
        assert_eq!(rows[0][2], s("2.5"), "{target:?}");
        assert_eq!(rows[0][3], s("00ff10"), "{target:?}");
        let j: serde_json::Value = serde_json::from_str(rows[0][4].as_deref().unwrap()).unwrap();
        assert_eq!(j, serde_json::json!({"a": [1, 2]}), "{target:?}");
        assert_eq!(
            rows[1],
            vec![None, None, None, None, None],
            "{target:?}: nulls stay null"
        );
        if target == Target::Pg {
            let types = fetch(
                target,
                &env,
                &format!(
                    "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = '{up}__tester' AND table_name = 't' ORDER BY ordinal_position"
                ),
            );
            let types: Vec<(String, String)> = types
                .into_iter()
                .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
                .collect();
            let want = [
                ("id", "bigint"),
                ("d", "date"),
                ("dt", "timestamp with time zone"),
                ("b", "bytea"),
                ("n", "numeric"),
                ("j", "jsonb"),
                ("f", "double precision"),
                ("ok", "boolean"),
            ];
            for (c, t) in want {
                assert!(
                    types.contains(&(c.to_string(), t.to_string())),
                    "{c} is not {t}: {types:?}"
                );
            }
            let dt = fetch(
                target,
                &env,
                &format!(
                    "SELECT dt::text FROM {} WHERE id = 1",
                    target.table(&up, "t")
                ),
            );
            assert_eq!(dt[0][0], s("2024-02-29 11:45:01.5+00"));
        }
    }
}

#[test]
fn exactly_once_when_killed_at_any_load_point() {
    for target in ALL {
        let env = Env::new();
        let up = format!("kill_{target:?}_{}", env.nonce()).to_lowercase();
        // Append-only: a doubled row would show as a duplicate id.
        env.write(
            "config.yaml",
            "tbls:\n  ev:\n    path: in/*.csv\n    columns: {id: int}\n",
        );
        env.write("upload.yaml", "tbls:\n  ev:\n    max_rows_per_load: 250\n");
        for f in 0..8 {
            let mut body = String::from("id\n");
            for i in 0..100 {
                body.push_str(&format!("{}\n", f * 100 + i));
            }
            env.write(&format!("in/{f}.csv"), body);
            // One downloader run per file: one upstream commit each.
            download(&env, &up);
        }
        for (n, fp) in [
            "upload.staged_file:2",
            "upload.before_commit:2",
            "upload.after_commit:1",
            "upload.before_commit:1",
        ]
        .iter()
        .enumerate()
        {
            let out = upload(&env, target, "wh", &up, &[("ACHVY_FAILPOINT", fp)]);
            assert_eq!(
                out.status.code(),
                Some(86),
                "{target:?} {fp} (kill {n}) did not fire: {}",
                crate::stderr(&out)
            );
        }
        upload_ok(&env, target, "wh", &up);
        let ids = fetch(
            target,
            &env,
            &format!(
                "SELECT {} FROM {} ORDER BY id",
                target.text("id"),
                target.table(&up, "ev")
            ),
        );
        let mut ids: Vec<i64> = ids
            .iter()
            .map(|r| r[0].as_deref().unwrap().parse().unwrap())
            .collect();
        ids.sort();
        assert_eq!(
            ids,
            (0..800).collect::<Vec<_>>(),
            "{target:?}: rows lost or doubled"
        );
        // Running the same upload again changes nothing.
        upload_ok(&env, target, "wh", &up);
        let n = fetch(
            target,
            &env,
            &format!(
                "SELECT {} FROM {}",
                target.text("COUNT(*)"),
                target.table(&up, "ev")
            ),
        );
        assert_eq!(n[0][0], s("800"));
    }
}

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

/// SIGKILL at random moments of many loads, then a clean run: every row exactly once.
#[test]
fn exactly_once_when_killed_at_random() {
    let target = Target::Pg;
    let env = Env::new();
    let up = format!("rnd_{}", env.nonce());
    env.write(
        "config.yaml",
        "tbls:\n  ev:\n    path: in/*.csv\n    columns: {id: int}\n",
    );
    env.write("upload.yaml", "tbls:\n  ev:\n    max_rows_per_load: 500\n");
    // 40 upstream commits of 500 rows: 40 separate loads (transactions) per full run.
    for f in 0..40 {
        let mut body = String::from("id,pad\n");
        for i in 0..500 {
            body.push_str(&format!("{},{}\n", f * 500 + i, "x".repeat(40)));
        }
        env.write(&format!("in/{f:02}.csv"), body);
        download(&env, &up);
    }
    // Deterministic "random" delays (an LCG seeded by the test's directory name).
    let mut seed: u64 = env
        .nonce()
        .bytes()
        .fold(7, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
    let url = target.url().unwrap();
    let mut killed = 0;
    for _ in 0..12 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = std::time::Duration::from_millis(5 + (seed >> 33) % 60);
        let mut child = env.spawn(&upload_args("wh", &up), &[("ACHVY_CNXN__DB__URI", &url)]);
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
    }
    upload_ok(&env, target, "wh", &up);
    let rows = fetch(
        target,
        &env,
        &format!(
            "SELECT COUNT(*)::text, COUNT(DISTINCT id)::text FROM {}",
            target.table(&up, "ev")
        ),
    );
    assert_eq!(
        rows[0],
        vec![s("20000"), s("20000")],
        "rows lost or doubled after {killed} kills"
    );
    assert!(killed > 0, "no run was killed: the test proves nothing");
}

/// An upstream whose datastore area was wiped and written again restarts its commit
/// numbers: the uploader refuses (it would otherwise skip the new commits as already
/// loaded), names the fix, and after it loads the new history.
#[test]
fn a_reset_upstream_is_refused_not_skipped() {
    let env = Env::new();
    let up = format!("reset_{}", env.nonce());
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/*.csv\n    columns: {id: int}\n",
    );
    env.write("upload.yaml", "tbls: {}\n");
    env.write("in/1.csv", "id\n1\n2\n");
    download(&env, &up);
    upload_ok(&env, Target::Sqlite, "wh", &up);
    std::fs::remove_dir_all(env.area("tester", &up)).unwrap();
    std::fs::remove_file(env.path().join("in/1.csv")).unwrap();
    env.write("in/2.csv", "id\n3\n");
    download(&env, &up);
    let out = upload(&env, Target::Sqlite, "wh", &up, &[]);
    let err = crate::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("was reset") && err.contains("_anchovies_positions"),
        "{err}"
    );
    let ids = |env: &Env| {
        fetch(
            Target::Sqlite,
            env,
            &format!(
                "SELECT CAST(id AS TEXT) FROM {} ORDER BY id",
                Target::Sqlite.table(&up, "t")
            ),
        )
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&env),
        ["1", "2"],
        "the refused upload changed the target"
    );
    // The fix the error names: forget the position, then the new history loads.
    fetch(
        Target::Sqlite,
        &env,
        &format!("DELETE FROM _anchovies_positions WHERE upstream = 'tester/{up}'"),
    );
    upload_ok(&env, Target::Sqlite, "wh", &up);
    assert_eq!(ids(&env), ["1", "2", "3"]);
}

/// A target whose `_anchovies_positions` has the layout of older builds (keyed by
/// uploader id) is refused with the migration to do, before anything loads.
#[test]
fn a_positions_table_of_the_old_layout_is_refused_with_the_fix() {
    let env = Env::new();
    let up = format!("old_{}", env.nonce());
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    env.write("upload.yaml", "tbls: {}\n");
    env.write("in/1.csv", "id\n1\n");
    download(&env, &up);
    upload_ok(&env, Target::Sqlite, "wh", &up);
    fetch(Target::Sqlite, &env, "DROP TABLE _anchovies_positions");
    fetch(
        Target::Sqlite,
        &env,
        "CREATE TABLE _anchovies_positions (uploader TEXT NOT NULL, upstream TEXT NOT NULL, tbl TEXT NOT NULL, seq BIGINT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (uploader, upstream, tbl))",
    );
    let out = upload(&env, Target::Sqlite, "wh", &up, &[]);
    let err = crate::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("older layout") && err.contains("rename it"),
        "{err}"
    );
}

#[test]
fn a_data_file_cut_after_its_commit_is_refused_before_anything_loads() {
    let env = Env::new();
    let up = format!("cut_{}", env.nonce());
    env.write(
        "config.yaml",
        "tbls:\n  ev:\n    path: in/*.csv\n    columns: {n: int}\n",
    );
    env.write("upload.yaml", "tbls: {}\n");
    let mut csv = String::from("n,note\n");
    for i in 0..20_000 {
        csv += &format!("{i},a note long enough to need several gzip members - row {i}\n");
    }
    env.write("in/1.csv", csv);
    download(&env, &up);
    let dir = env.area("tester", &up).join("data/ev");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let whole = std::fs::read(&file).unwrap();
    // Cut at the start of the second gzip member: what is left is a valid gzip stream
    // of fewer rows, which a reader that trusts the file loads without a word.
    let cut = 1 + whole[1..]
        .windows(3)
        .position(|w| w == [0x1f, 0x8b, 0x08])
        .expect("several gzip members");
    std::fs::write(&file, &whole[..cut]).unwrap();
    let out = upload(&env, Target::Sqlite, "wh", &up, &[]);
    let all = crate::output(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("does not match commit record 1")
            && all.contains(&format!("bytes stored, the record says {}", whole.len())),
        "{all}"
    );
    let count = || {
        fetch(
            Target::Sqlite,
            &env,
            &format!(
                "SELECT CAST(COUNT(*) AS TEXT) FROM {}",
                Target::Sqlite.table(&up, "ev")
            ),
        )[0][0]
            .clone()
    };
    assert_eq!(count(), s("0"), "nothing of the cut file is loaded");
    // Same size, one byte changed: the checksum says so.
    let mut flipped = whole.clone();
    flipped[cut + 20] ^= 0x55;
    std::fs::write(&file, &flipped).unwrap();
    let out = upload(&env, Target::Sqlite, "wh", &up, &[]);
    let all = crate::output(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("CRC-32"), "{all}");
    assert_eq!(count(), s("0"));
    // Restored: every row loads once.
    std::fs::write(&file, &whole).unwrap();
    upload_ok(&env, Target::Sqlite, "wh", &up);
    assert_eq!(count(), s("20000"));
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

#[test]
fn the_target_is_checked_not_trusted() {
    for target in [Target::Sqlite, Target::Pg] {
        let env = Env::new();
        let up = format!("chk_{target:?}_{}", env.nonce()).to_lowercase();
        env.write(
            "config.yaml",
            "tbls:\n  ev:\n    path: ev/*.csv\n  cu:\n    path: cu/*.csv\n    unique_by: id\n",
        );
        env.write("upload.yaml", "tbls: {}\n");
        env.write("ev/1.csv", "n\n1\n2\n");
        env.write("cu/1.csv", "id,name\n1,Ada\n");
        download(&env, &up);
        upload_ok(&env, target, "wh", &up);
        env.write("ev/2.csv", "n\n3\n");
        download(&env, &up);
        upload_ok(&env, target, "wh", &up);
        let count = |t: &str| {
            fetch(
                target,
                &env,
                &format!(
                    "SELECT {} FROM {}",
                    target.text("COUNT(*)"),
                    target.table(&up, t)
                ),
            )[0][0]
                .clone()
        };
        assert_eq!(count("ev"), s("3"));
        // Dropped by hand: the next run says so and loads it again, whole.
        fetch(
            target,
            &env,
            &format!("DROP TABLE {}", target.table(&up, "ev")),
        );
        let out = upload(&env, target, "wh", &up, &[]);
        assert!(out.status.success(), "{}", crate::stderr(&out));
        assert!(
            crate::stderr(&out)
                .contains("the target table is missing although commits were loaded into it"),
            "{}",
            crate::stderr(&out)
        );
        assert_eq!(
            tbl_task(&results(&out), &format!("{up}.ev"))["data"]["reloaded_from_start"],
            true
        );
        assert_eq!(count("ev"), s("3"));
        assert_eq!(count("cu"), s("1"));
        // `checkpoints -D` on the uploader starts the table over: rows once, not twice.
        let out = env
            .cmd()
            .args(["checkpoints", "--id", "wh", "-D", "-y", &format!("{up}.ev")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", crate::stderr(&out));
        let out = upload(&env, target, "wh", &up, &[]);
        assert!(out.status.success(), "{}", crate::stderr(&out));
        assert!(crate::stderr(&out).contains("checkpoint of the table was deleted"));
        assert_eq!(count("ev"), s("3"));
        // And only that table.
        let r = results(&out);
        assert!(tbl_task(&r, &format!("{up}.cu"))["data"]["reloaded_from_start"].is_null());
    }
}
