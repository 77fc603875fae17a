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

mod exactly_once;
mod targets;

/// PostgreSQL's binary COPY meets a value that is not of its column's type (an int from
/// before the column became text, loaded in one unit with the text): the unit is sent
/// again as CSV, and every value lands as the server parses its text.
#[test]
fn a_value_without_a_binary_form_reloads_the_unit_as_csv() {
    let target = Target::Pg;
    let env = Env::new();
    let up = format!("bin_{}", env.nonce()).to_lowercase();
    env.write("upload.yaml", "tbls: {}\n");
    let cfg = |qty: &str| {
        format!(
            "tbls:\n  t:\n    path: in/*.csv\n    unique_by: id\n    columns: {{id: int{qty}}}\n"
        )
    };
    env.write("config.yaml", cfg(", qty: int"));
    env.write("in/1.csv", "id,qty,at\n1,5,2024-05-11T09:38:53.5+00:00\n");
    download(&env, &up);
    env.write("config.yaml", cfg(""));
    env.write("in/2.csv", "id,qty,at\n2,lots,x\n");
    download(&env, &up);
    let out = upload(&env, target, "wh", &up, &[("ACHVY_LOG_LEVEL", "debug")]);
    let err = crate::stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("no exact binary form"), "{err}");
    let rows = fetch(
        target,
        &env,
        &format!(
            "SELECT {}, {}, {} FROM {} ORDER BY id",
            target.text("id"),
            target.text("qty"),
            target.text("at"),
            target.table(&up, "t")
        ),
    );
    assert_eq!(
        rows,
        vec![
            vec![s("1"), s("5"), s("2024-05-11T09:38:53.5+00:00")],
            vec![s("2"), s("lots"), s("x")],
        ]
    );
    // A later unit of values of their columns' types goes in binary again.
    env.write("in/3.csv", "id,qty,at\n3,7,y\n");
    download(&env, &up);
    let out = upload(&env, target, "wh", &up, &[("ACHVY_LOG_LEVEL", "debug")]);
    let err = crate::stderr(&out);
    assert!(
        out.status.success() && !err.contains("no exact binary form"),
        "{err}"
    );
}
