//! sql.Downloader against the real PostgreSQL (PG_URL) and MariaDB (MYSQL_URL) that
//! script/test starts, and SQLite files: types value for value into the datastore and
//! on into the three targets, incremental runs held against a model (the source table
//! at the end equals the target, every row once) under kills at random moments and at
//! failpoints, late commits inside the lookback window, and selectors picking up new
//! tables.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use anchovy_core::Value;
use anchovy_core::testutil::Rng;

use crate::upload::{Target, fetch};
use crate::{Env, committed, need, results, tbl_data};

/// A source database.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Src {
    Pg,
    My,
    Lite,
}

impl Src {
    /// The connection URL (SQLite: a file in the scratch dir).
    fn url(self, env: &Env) -> String {
        match self {
            Src::Pg => need("PG_URL"),
            Src::My => need("MYSQL_URL"),
            Src::Lite => format!("sqlite://{}", env.path().join("source.sqlite").display()),
        }
    }

    /// The schema (PostgreSQL) or database (MySQL) of this test; SQLite has `main`.
    fn schema(self, env: &Env) -> String {
        match self {
            Src::Lite => "main".into(),
            _ => format!("src_{}", env.nonce()),
        }
    }

    /// The table option naming `name` in this test's schema.
    fn table(self, env: &Env, name: &str) -> String {
        format!("{}.{name}", self.schema(env))
    }

    fn q(self, env: &Env, name: &str) -> String {
        match self {
            Src::My => format!("`{}`.`{name}`", self.schema(env)),
            Src::Pg => format!("\"{}\".\"{name}\"", self.schema(env)),
            Src::Lite => format!("\"{name}\""),
        }
    }

    /// Runs statements, one after the other.
    fn exec(self, env: &Env, sqls: &[String]) {
        let url = self.url(env);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            macro_rules! run {
                ($pool:expr) => {{
                    let pool = $pool;
                    for s in sqls {
                        sqlx::query(sqlx::AssertSqlSafe(s.clone()))
                            .execute(&pool)
                            .await
                            .unwrap_or_else(|e| panic!("{s}: {e}"));
                    }
                    pool.close().await;
                }};
            }
            match self {
                Src::Pg => run!(sqlx::PgPool::connect(&url).await.unwrap()),
                Src::My => run!(sqlx::MySqlPool::connect(&url).await.unwrap()),
                Src::Lite => {
                    let o = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
                        .unwrap()
                        .create_if_missing(true);
                    run!(sqlx::SqlitePool::connect_with(o).await.unwrap())
                }
            }
        });
    }

    /// Creates this test's schema.
    fn create_schema(self, env: &Env) {
        let s = self.schema(env);
        match self {
            Src::Pg => self.exec(env, &[format!("CREATE SCHEMA \"{s}\"")]),
            Src::My => self.exec(env, &[format!("CREATE DATABASE `{s}`")]),
            Src::Lite => self.exec(env, &[]),
        }
    }
}

/// A scratch dir and a schema of its own in the test PostgreSQL, with `stmts` run in
/// it (`{s}` in them is the schema): the test's env, source and schema.
fn pg_scratch(stmts: &[&str]) -> (Env, Src, String) {
    let env = Env::new();
    let src = Src::Pg;
    src.create_schema(&env);
    let s = src.schema(&env);
    let sqls: Vec<String> = stmts.iter().map(|q| q.replace("{s}", &s)).collect();
    src.exec(&env, &sqls);
    (env, src, s)
}

fn download(env: &Env, src: Src, id: &str) -> std::process::Output {
    env.cmd()
        .args(["start", "-op", "sql.Downloader", "--id", id])
        .env("ACHVY_CNXN__URI", src.url(env))
        .output()
        .unwrap()
}

fn download_ok(env: &Env, src: Src, id: &str) -> serde_json::Value {
    let out = download(env, src, id);
    assert!(
        out.status.success(),
        "{src:?} download failed: {}\n{}",
        crate::stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    results(&out)
}

fn by_id(rows: &[BTreeMap<String, Value>]) -> BTreeMap<i64, BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for r in rows {
        let Value::Int(id) = r["id"] else {
            panic!("id is not an int: {r:?}")
        };
        out.insert(id, r.clone());
    }
    out
}

fn dt(s: &str) -> Value {
    anchovy_core::row::parse_datetime(s).unwrap()
}

fn d(s: &str) -> Value {
    Value::Date(s.parse().unwrap())
}

fn tm(s: &str) -> Value {
    Value::Time(chrono::NaiveTime::parse_from_str(s, "%H:%M:%S%.f").unwrap())
}

fn st(s: &str) -> Value {
    Value::String(s.into())
}

fn dec(s: &str) -> Value {
    Value::Decimal(s.into())
}

fn json(s: &str) -> Value {
    Value::Json(anchovy_core::row::Json::parse(s).unwrap())
}

/// The text of a target's column as [`same`] compares it (bytes as lowercase hex).
fn target_expr(target: Target, col: &str, want: &Value) -> String {
    let c = target.q(col);
    match (want, target) {
        (Value::Bytes(_), Target::Pg) => format!("encode({c}, 'hex')"),
        (Value::Bytes(_), Target::My) => format!("LOWER(HEX({c}))"),
        (Value::Bytes(_), Target::Sqlite) => format!("lower(hex({c}))"),
        _ => target.text(&c),
    }
}

/// A decimal's text without trailing fraction zeros (`1.500` -> `1.5`, `2.0` -> `2`).
fn trim_decimal(s: &str) -> String {
    if !s.contains('.') {
        return s.to_string();
    }
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A datetime as its UTC wall clock (naive values count as UTC, as the uploader reads
/// them).
fn utc(v: &Value) -> Option<chrono::NaiveDateTime> {
    match v {
        Value::DateTime(n) => Some(*n),
        Value::DateTimeTz(z) => Some(z.naive_utc()),
        _ => None,
    }
}

/// Whether a target's text of a value is that value.
fn same(got: &Option<String>, want: &Value) -> bool {
    let Some(g) = got else {
        return want.is_null();
    };
    match want {
        Value::Null => false,
        Value::Bool(b) => matches!(
            (b, g.as_str()),
            (true, "true" | "t" | "1") | (false, "false" | "f" | "0")
        ),
        Value::Int(i) => g.parse::<i64>().ok() == Some(*i),
        Value::Float(f) => g
            .parse::<f64>()
            .is_ok_and(|x| x == *f || (x.is_nan() && f.is_nan())),
        Value::Decimal(d) => trim_decimal(g) == trim_decimal(d),
        Value::String(s) => g == s,
        Value::Date(d) => g.get(..10) == Some(&d.format("%Y-%m-%d").to_string()),
        Value::Time(t) => chrono::NaiveTime::parse_from_str(g, "%H:%M:%S%.f").ok() == Some(*t),
        Value::DateTime(_) | Value::DateTimeTz(_) => {
            // PostgreSQL writes whole-hour offsets as `+00`.
            let b = g.as_bytes();
            let g = if b.len() > 3
                && matches!(b[b.len() - 3], b'+' | b'-')
                && b[b.len() - 2..].iter().all(u8::is_ascii_digit)
            {
                format!("{g}:00")
            } else {
                g.clone()
            };
            anchovy_core::row::parse_datetime(&g).and_then(|v| utc(&v)) == utc(want)
        }
        Value::Bytes(b) => *g == hex(b),
        Value::Json(v) => serde_json::from_str::<serde_json::Value>(g).ok() == Some(v.to_value()),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs the uploader `wh` over upstream `up` into `target` (only the tables of
/// `enable`, when given); it must succeed. The run results.
fn upload_only(env: &Env, target: Target, up: &str, enable: &[&str]) -> serde_json::Value {
    let mut c = env.cmd();
    c.args(crate::upload::upload_args("wh", up));
    for e in enable {
        c.args(["-e", e]);
    }
    let out = c
        .env("ACHVY_CNXN__DB__URI", target.url().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{target:?}: {}", crate::stderr(&out));
    results(&out)
}

fn upload_ok(env: &Env, target: Target, up: &str) -> serde_json::Value {
    upload_only(env, target, up, &[])
}

/// Uploads upstream `up` into `target` and holds every column of every row of `table`
/// (keyed by `id`) to the values the datastore holds for it.
fn assert_round_trip(env: &Env, target: Target, up: &str, table: &str) {
    upload_only(env, target, up, &[&format!("{up}.{table}")]);
    let rows = by_id(&committed(&env.home(), "tester", up)[table]);
    for (id, row) in &rows {
        let cols: Vec<(&String, &Value)> = row.iter().filter(|(c, _)| *c != "id").collect();
        let exprs: Vec<String> = cols
            .iter()
            .map(|(c, v)| target_expr(target, c, v))
            .collect();
        let got = fetch(
            target,
            env,
            &format!(
                "SELECT {} FROM {} WHERE id = {id}",
                exprs.join(", "),
                target.table(up, table)
            ),
        );
        assert_eq!(got.len(), 1, "{target:?}: row {id}");
        for ((c, want), g) in cols.iter().zip(&got[0]) {
            assert!(
                same(g, want),
                "{target:?}: {table} row {id} column {c}: the target holds {g:?}, the source said {want:?}"
            );
        }
    }
}

/// Downloads `config` from `src` as a new anchovy (`<prefix><nonce>`): its id, and
/// the committed rows of `all_types` by id (`rows` of them).
fn download_all_types(
    env: &Env,
    src: Src,
    prefix: &str,
    config: String,
    rows: u64,
) -> (String, BTreeMap<i64, BTreeMap<String, Value>>) {
    env.write("config.yaml", config);
    let up = format!("{prefix}{}", env.nonce());
    let r = download_ok(env, src, &up);
    assert_eq!(tbl_data(&r, "all_types")["rows"], rows, "{r}");
    let got = by_id(&committed(&env.home(), "tester", &up)["all_types"]);
    (up, got)
}

/// Each `(column, value)` of `want` is the row's.
fn assert_columns(row: &BTreeMap<String, Value>, want: &[(&str, Value)]) {
    for (c, v) in want {
        assert_eq!(&row[*c], v, "column {c}");
    }
}

/// Every PostgreSQL type of the issue, value for value into the datastore, then into
/// each target; the key and the types are recorded in `$tables`.
#[test]
fn postgres_types_land_value_for_value() {
    let env = Env::new();
    let src = Src::Pg;
    src.create_schema(&env);
    let s = src.schema(&env);
    src.exec(&env, &[
        format!("CREATE TYPE \"{s}\".mood AS ENUM ('sad', 'happy')"),
        format!("CREATE TABLE \"{s}\".all_types (id int8 PRIMARY KEY, i2 int2, i4 int4, n numeric(12,3), big numeric, f4 float4, f8 float8, b bool, t text, vc varchar(10), ch char(5), d date, tm time, ts timestamp, tstz timestamptz, iv interval, by bytea, j json, jb jsonb, u uuid, arr int4[], tarr text[], m \"{s}\".mood, ip inet)"),
        format!("INSERT INTO \"{s}\".all_types VALUES \
          (1, -32768, 2147483647, 123456789.125, 12345678901234567890.12345678901234567890, 0.1, 1e300, true, E'a,\"b\"\\nc 😀', 'vc', 'ab', '2024-02-29', '13:45:00.5', '2024-01-31 10:00:00.123456', '2024-01-31 10:00:00+02', '1 day 2 hours 3.5 seconds', '\\xdeadbeef', '{{\"a\":[1,2]}}', '{{\"b\": \"x\"}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{1,2,NULL}}', '{{\"x\",\"y z\"}}', 'happy', '10.0.0.1/8'), \
          (2, NULL, NULL, -0.001, -1, 'NaN', '-Infinity', false, '', NULL, NULL, '0001-01-01', '00:00:00', '1970-01-01 00:00:00', '2000-06-30 23:59:59.999999-07', 'PT0S', '\\x', 'null', '[]', NULL, '{{}}', NULL, 'sad', NULL), \
          (3, NULL, NULL, NULL, NULL, 'Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"),
    ]);
    let (up, rows) = download_all_types(
        &env,
        src,
        "pgt",
        format!(
            "tbls:\n  all_types:\n    table: {0}\n  finite:\n    query: SELECT * FROM {0} WHERE id = 1\n",
            src.table(&env, "all_types")
        ),
        3,
    );
    let one = &rows[&1];
    let want: Vec<(&str, Value)> = vec![
        ("i2", Value::Int(-32768)),
        ("i4", Value::Int(2147483647)),
        ("n", dec("123456789.125")),
        ("big", dec("12345678901234567890.12345678901234567890")),
        ("f4", Value::Float(0.1)),
        ("f8", Value::Float(1e300)),
        ("b", Value::Bool(true)),
        ("t", st("a,\"b\"\nc 😀")),
        ("vc", st("vc")),
        ("ch", st("ab   ")),
        ("d", d("2024-02-29")),
        ("tm", tm("13:45:00.5")),
        ("ts", dt("2024-01-31T10:00:00.123456")),
        ("tstz", dt("2024-01-31T08:00:00Z")),
        ("iv", st("P1DT2H3.5S")),
        ("by", Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef])),
        ("j", json(r#"{"a":[1,2]}"#)),
        ("jb", json(r#"{"b":"x"}"#)),
        ("u", st("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
        ("arr", json("[1,2,null]")),
        ("tarr", json(r#"["x","y z"]"#)),
        ("m", st("happy")),
        ("ip", st("10.0.0.1/8")),
    ];
    assert_columns(one, &want);
    let two = &rows[&2];
    assert!(matches!(two["f4"], Value::Float(f) if f.is_nan()));
    assert_eq!(two["f8"], Value::Float(f64::NEG_INFINITY));
    assert_eq!(two["tstz"], dt("2000-07-01T06:59:59.999999Z"));
    assert_eq!(two["by"], Value::Bytes(vec![]));
    assert_eq!(two["j"], Value::Null, "JSON null is null");
    assert_eq!(two["jb"], json("[]"));
    assert_eq!(two["arr"], json("[]"));
    assert_eq!(two["n"], dec("-0.001"));
    assert_eq!(rows[&3]["f4"], Value::Float(f64::INFINITY));
    assert!(rows[&3].values().filter(|v| v.is_null()).count() >= 20);

    let tbl: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.area("tester", &up).join("$tables/all_types.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(tbl["unique_by"], "id");
    for (c, ty) in [
        ("n", "decimal"),
        ("tstz", "datetime"),
        ("arr", "object"),
        ("by", "bytes"),
        ("ip", "str"),
        ("f4", "float"),
    ] {
        assert_eq!(tbl["columns"][c], ty, "{tbl}");
    }

    // On into every target, value for value. MySQL has no NaN or infinities: rows 2
    // and 3 fail its load naming the column, and row 1 alone (`finite`) goes there.
    env.write("upload.yaml", "tbls: {}\n");
    for target in [Target::Sqlite, Target::Pg] {
        assert_round_trip(&env, target, &up, "all_types");
    }
    assert_round_trip(&env, Target::My, &up, "finite");
    let out = env
        .cmd()
        .args(crate::upload::upload_args("wh", &up))
        .args(["-e", &format!("{up}.all_types")])
        .env("ACHVY_CNXN__DB__URI", Target::My.url().unwrap())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "MySQL took a NaN: {}",
        crate::output(&out)
    );
    assert!(
        crate::output(&out).contains("NaN"),
        "{}",
        crate::output(&out)
    );
}

/// MariaDB's own types, value for value into the datastore.
#[test]
fn mariadb_types_land_value_for_value() {
    let env = Env::new();
    let src = Src::My;
    src.create_schema(&env);
    let t = src.q(&env, "all_types");
    src.exec(&env, &[
        format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY, ti TINYINT, ub BIGINT UNSIGNED, n DECIMAL(12,3), f FLOAT, db DOUBLE, c CHAR(5), vc VARCHAR(20), tx TEXT, e ENUM('a','b'), d DATE, tm TIME(3), dtm DATETIME(6), ts TIMESTAMP(6) NULL, bin VARBINARY(8), bl BLOB, j JSON, y YEAR) CHARSET utf8mb4"),
        format!("INSERT INTO {t} VALUES (1, -128, 18446744073709551615, 123456789.125, 0.1, 1e300, 'ab', 'x,\"y\"', 'a\\nb 😀', 'b', '2024-02-29', '13:45:00.5', '2024-01-31 10:00:00.123456', '2024-01-31 10:00:00.5', X'DEADBEEF', X'00FF', '{{\"a\": [1, 2]}}', 2024)"),
        format!("INSERT INTO {t} (id) VALUES (2)"),
    ]);
    let config = format!(
        "tbls:\n  all_types:\n    table: {}\n",
        src.table(&env, "all_types")
    );
    let (up, rows) = download_all_types(&env, src, "myt", config, 2);
    let one = &rows[&1];
    let want: Vec<(&str, Value)> = vec![
        ("ti", Value::Int(-128)),
        ("ub", dec("18446744073709551615")),
        ("n", dec("123456789.125")),
        ("f", Value::Float(0.1)),
        ("db", Value::Float(1e300)),
        ("c", st("ab")),
        ("vc", st("x,\"y\"")),
        ("tx", st("a\nb 😀")),
        ("e", st("b")),
        ("d", d("2024-02-29")),
        ("tm", tm("13:45:00.5")),
        ("dtm", dt("2024-01-31T10:00:00.123456")),
        ("ts", dt("2024-01-31T10:00:00.5Z")),
        ("bin", Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef])),
        ("bl", Value::Bytes(vec![0, 255])),
        ("y", Value::Int(2024)),
    ];
    assert_columns(one, &want);
    // MariaDB's JSON is a LONGTEXT checked by json_valid: read as JSON all the same.
    assert_eq!(one["j"], json(r#"{"a":[1,2]}"#));
    assert!(
        rows[&2]
            .iter()
            .filter(|(k, _)| *k != "id")
            .all(|(_, v)| v.is_null()),
        "{:?}",
        rows[&2]
    );
    let tbl: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.area("tester", &up).join("$tables/all_types.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(tbl["unique_by"], "id");
    env.write("upload.yaml", "tbls: {}\n");
    for target in [Target::Sqlite, Target::Pg, Target::My] {
        assert_round_trip(&env, target, &up, "all_types");
    }
}

/// SQLite's declared types read its stored values; text that does not parse as its
/// declared type stays text.
#[test]
fn sqlite_types_land_value_for_value() {
    let env = Env::new();
    let src = Src::Lite;
    src.exec(&env, &[
        "CREATE TABLE all_types (id INTEGER PRIMARY KEY, n DECIMAL(10,2), f REAL, b BOOLEAN, t TEXT, d DATE, dtm DATETIME, tm TIME, bl BLOB, j JSON, anything)".into(),
        "INSERT INTO all_types VALUES (1, '12.50', 0.5, 1, 'x', '2024-02-29', '2024-01-31 10:00:00', '13:45:00', X'00FF', '{\"a\":1}', 7)".into(),
        "INSERT INTO all_types VALUES (2, 3, 2, 0, NULL, 'soon', '2024-01-31T10:00:00+02:00', NULL, NULL, 'not json', 'text')".into(),
    ]);
    env.write("config.yaml", "tbls:\n  all_types: {}\n");
    let up = format!("ltt{}", env.nonce());
    download_ok(&env, src, &up);
    let rows = by_id(&committed(&env.home(), "tester", &up)["all_types"]);
    let (one, two) = (&rows[&1], &rows[&2]);
    // SQLite stores '12.50' in a DECIMAL column as the real 12.5.
    assert_eq!(one["n"], dec("12.5"));
    assert_eq!(two["n"], dec("3"));
    assert_eq!(one["f"], Value::Float(0.5));
    assert_eq!(two["f"], Value::Float(2.0));
    assert_eq!(
        (one["b"].clone(), two["b"].clone()),
        (Value::Bool(true), Value::Bool(false))
    );
    assert_eq!(one["d"], d("2024-02-29"));
    assert_eq!(two["d"], st("soon"));
    assert_eq!(one["dtm"], dt("2024-01-31T10:00:00"));
    assert_eq!(two["dtm"], dt("2024-01-31T10:00:00+02:00"));
    assert_eq!(one["tm"], tm("13:45:00"));
    assert_eq!(one["bl"], Value::Bytes(vec![0, 255]));
    assert_eq!(one["j"], json(r#"{"a":1}"#));
    assert_eq!(two["j"], st("not json"));
    assert_eq!(
        (one["anything"].clone(), two["anything"].clone()),
        (Value::Int(7), st("text"))
    );
    env.write("upload.yaml", "tbls: {}\n");
    for target in [Target::Sqlite, Target::Pg, Target::My] {
        assert_round_trip(&env, target, &up, "all_types");
    }
}

/// One row of the model: what the source holds for an id.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    v: String,
    n: String,
    at: i64,
}

/// The timestamp text of logical clock tick `at` (ticks are seconds after 2024-01-01,
/// several rows may share one).
fn at_text(at: i64) -> String {
    let t = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        + chrono::Duration::seconds(at);
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Incremental runs under a seeded schedule of inserts, updates (some of them with a
/// cursor value behind the committed one, inside the lookback window: late commits),
/// ties, kills at random moments and at failpoints; then the uploader. The model is
/// the source table itself: at the end the target equals it, every row once.
fn incremental_against_the_model(src: Src, seed: u64) {
    let env = Env::new();
    let mut rng = Rng(seed);
    eprintln!("{src:?}: seed {seed}");
    src.create_schema(&env);
    let t = src.q(&env, "items");
    let (ts_type, text_type) = match src {
        Src::Pg => ("timestamp", "text"),
        Src::My => ("DATETIME", "VARCHAR(200)"),
        Src::Lite => ("DATETIME", "TEXT"),
    };
    src.exec(&env, &[format!(
        "CREATE TABLE {t} (id BIGINT PRIMARY KEY, v {text_type} NOT NULL, n DECIMAL(12,2) NOT NULL, updated_at {ts_type} NOT NULL)"
    )]);
    env.write("config.yaml", format!(
        "config:\n  commit_interval: 0\n  batch_size: 50\ntbls:\n  items:\n    table: {}\n    cursor: updated_at\n    lookback: 1h\n",
        src.table(&env, "items")
    ));
    let mut model: BTreeMap<i64, Item> = BTreeMap::new();
    let mut clock: i64 = 0;
    let mut next_id = 1;
    let id = "inc";
    for round in 0..8 {
        // Inserts and updates; the clock moves forward, with ties.
        let mut sqls = Vec::new();
        for _ in 0..rng.below(400) + 50 {
            if rng.chance(3) {
                clock += 1;
            }
            let late = rng.chance(5) && clock > 1200;
            // A late commit: a cursor value up to 20 minutes behind (inside `lookback`).
            let at = if late {
                clock - rng.below(1200) as i64
            } else {
                clock
            };
            let update = !model.is_empty() && rng.chance(30);
            let key = if update {
                *model
                    .keys()
                    .nth(rng.below(model.len() as u64) as usize)
                    .unwrap()
            } else {
                next_id += 1;
                next_id - 1
            };
            let item = Item {
                v: format!("r{round} '{}' \"q\"", rng.below(1000)),
                n: format!("{}.{:02}", rng.below(100000), rng.below(100)),
                at,
            };
            let v = item.v.replace('\'', "''");
            sqls.push(if update {
                format!(
                    "UPDATE {t} SET v = '{v}', n = {}, updated_at = '{}' WHERE id = {key}",
                    item.n,
                    at_text(at)
                )
            } else {
                format!(
                    "INSERT INTO {t} VALUES ({key}, '{v}', {}, '{}')",
                    item.n,
                    at_text(at)
                )
            });
            model.insert(key, item);
        }
        src.exec(&env, &sqls);
        // A run killed at a random moment or at a failpoint, then (sometimes) a clean one.
        match rng.below(3) {
            0 => {
                let mut child = env.spawn(
                    &["start", "-op", "sql.Downloader", "--id", id],
                    &[("ACHVY_CNXN__URI", &src.url(&env))],
                );
                std::thread::sleep(Duration::from_millis(rng.below(400)));
                let _ = child.kill();
                let _ = child.wait();
            }
            1 => {
                let point = rng.pick(&[
                    "commit.before",
                    "commit.after",
                    "datafile.finish",
                    "source.batch",
                ]);
                let n = rng.below(3) + 1;
                let _ = env
                    .cmd()
                    .args(["start", "-op", "sql.Downloader", "--id", id])
                    .env("ACHVY_CNXN__URI", src.url(&env))
                    .env("ACHVY_FAILPOINT", format!("{point}:{n}"))
                    .output()
                    .unwrap();
            }
            _ => {}
        }
        if rng.chance(60) {
            download_ok(&env, src, id);
        }
    }
    download_ok(&env, src, id);

    // Every row of the source is in the datastore (the last version of each key last).
    let rows = &committed(&env.home(), "tester", id)["items"];
    let mut last: BTreeMap<i64, &BTreeMap<String, Value>> = BTreeMap::new();
    for r in rows {
        let Value::Int(k) = r["id"] else { panic!() };
        last.insert(k, r);
    }
    assert_eq!(last.len(), model.len(), "{src:?} seed {seed}: rows lost");

    // The uploader's target equals the source.
    env.write("upload.yaml", "tbls: {}\n");
    let target = Target::Sqlite;
    upload_ok(&env, target, id);
    let got = fetch(
        target,
        &env,
        &format!(
            "SELECT {}, v, {}, {} FROM {} ORDER BY id",
            target.text("id"),
            target.text("n"),
            target.text("updated_at"),
            target.table(id, "items")
        ),
    );
    let want: Vec<(i64, String, String, String)> = model
        .iter()
        .map(|(k, i)| (*k, i.v.clone(), i.n.clone(), at_text(i.at)))
        .collect();
    assert_eq!(
        got.len(),
        want.len(),
        "{src:?} seed {seed}: the target differs in rows"
    );
    for (g, w) in got.iter().zip(&want) {
        let g: Vec<String> = g.iter().map(|v| v.clone().unwrap_or_default()).collect();
        assert_eq!(g[0], w.0.to_string(), "{src:?} seed {seed}");
        assert_eq!(g[1], w.1, "{src:?} seed {seed}: id {}", w.0);
        // SQLite keeps DECIMAL(12,2) as a real: 82388.80 reads back as 82388.8.
        assert_eq!(
            g[2].parse::<f64>().unwrap(),
            w.2.parse::<f64>().unwrap(),
            "{src:?} seed {seed}: id {}",
            w.0
        );
        assert_eq!(
            anchovy_core::row::parse_datetime(&g[3]).map(|v| v
                .text()
                .replace('T', " ")
                .trim_end_matches('Z')
                .to_string()),
            Some(w.3.clone()),
            "{src:?} seed {seed}: id {}",
            w.0
        );
    }
}

fn seed() -> u64 {
    anchovy_core::testutil::seed("SQL_SOURCE_SEED")
}

#[test]
fn incremental_postgres_against_the_model() {
    incremental_against_the_model(Src::Pg, seed());
}

#[test]
fn incremental_mariadb_against_the_model() {
    incremental_against_the_model(Src::My, seed());
}

#[test]
fn incremental_sqlite_against_the_model() {
    incremental_against_the_model(Src::Lite, seed());
}

/// Without a key, ties past the committed value are read once; a late row behind the
/// cursor and outside any lookback is not read (documented); a query reads its rows
/// with the cursor bound.
#[test]
fn a_query_reads_incrementally_and_a_late_row_needs_the_lookback() {
    let env = Env::new();
    let src = Src::Pg;
    src.create_schema(&env);
    let t = src.q(&env, "events");
    src.exec(&env, &[
        format!("CREATE TABLE {t} (seq int, kind text, at timestamptz)"),
        format!("INSERT INTO {t} VALUES (1, 'a', '2024-01-01T00:00:00Z'), (2, 'b', '2024-01-01T00:00:00Z'), (3, 'a', '2024-01-02T00:00:00Z')"),
    ]);
    env.write("config.yaml", format!(
        "tbls:\n  a_events:\n    query: SELECT seq, at FROM {t} WHERE kind = 'a'\n    cursor: at\n  all_events:\n    table: {}\n    cursor: seq\n",
        src.table(&env, "events")
    ));
    download_ok(&env, src, "q");
    src.exec(&env, &[format!(
        "INSERT INTO {t} VALUES (4, 'a', '2024-01-01T12:00:00Z'), (5, 'a', '2024-01-03T00:00:00Z'), (6, 'b', '2024-01-03T00:00:00Z')"
    )]);
    download_ok(&env, src, "q");
    let rows = committed(&env.home(), "tester", "q");
    let seqs = |t: &str| -> Vec<i64> {
        rows[t]
            .iter()
            .map(|r| match r["seq"] {
                Value::Int(i) => i,
                _ => panic!(),
            })
            .collect()
    };
    // seq 4 came late, behind the committed cursor, and no lookback re-reads it.
    assert_eq!(seqs("a_events"), vec![1, 3, 5]);
    assert_eq!(seqs("all_events"), vec![1, 2, 3, 4, 5, 6]);
    // A table without a key has no unique_by in $tables.
    let tbl: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.area("tester", "q").join("$tables/a_events.json")).unwrap(),
    )
    .unwrap();
    assert!(tbl["unique_by"].is_null(), "{tbl}");
}

/// A selector takes every matching table, names it after the source table, and picks
/// up a table created later; excluded tables stay out.
#[test]
fn a_selector_picks_up_new_tables() {
    let (env, src, s) = pg_scratch(&[
        "CREATE TABLE \"{s}\".orders (id int PRIMARY KEY, at timestamptz)",
        "CREATE TABLE \"{s}\".tmp_scratch (x int)",
        "INSERT INTO \"{s}\".orders VALUES (1, now())",
    ]);
    env.write(
        "config.yaml",
        format!("tbls:\n  crm:\n    include: [\"{s}.*\"]\n    exclude: [\"{s}.tmp_*\"]\n"),
    );
    let r = download_ok(&env, src, "sel");
    assert_eq!(tbl_data(&r, &format!("{s}_orders"))["rows"], 1, "{r}");
    assert!(!r.to_string().contains("tmp_scratch"), "{r}");
    src.exec(
        &env,
        &[
            format!("CREATE TABLE \"{s}\".customers (id int PRIMARY KEY, name text)"),
            format!("INSERT INTO \"{s}\".customers VALUES (1, 'Ada'), (2, 'Bob')"),
        ],
    );
    let r = download_ok(&env, src, "sel");
    assert_eq!(tbl_data(&r, &format!("{s}_customers"))["rows"], 2, "{r}");
    let tbl: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            env.area("tester", "sel")
                .join(format!("$tables/{s}_customers.json")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(tbl["unique_by"], "id", "{tbl}");
    assert_eq!(tbl["table"], format!("{s}.customers"), "{tbl}");

    // What the source offers, with keys and types.
    let out = env
        .cmd()
        .args([
            "tables",
            "--discover",
            "--json",
            "-op",
            "sql.Downloader",
            "--id",
            "sel",
        ])
        .env("ACHVY_CNXN__URI", src.url(&env))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|t: &serde_json::Value| t["name"].as_str().unwrap().starts_with(&format!("{s}.")))
        .collect();
    let names: Vec<&str> = listed.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            format!("{s}.customers"),
            format!("{s}.orders"),
            format!("{s}.tmp_scratch")
        ]
    );
    assert_eq!(listed[0]["unique_by"], "id");
    assert_eq!(listed[0]["columns"]["name"], "str");
    assert_eq!(listed[1]["columns"]["at"], "datetime");

    // The healthcheck reads every selected table; a table that is gone fails it.
    let hc = |env: &Env| {
        env.cmd()
            .args(["healthcheck", "-op", "sql.Downloader", "--id", "sel"])
            .env("ACHVY_CNXN__URI", src.url(env))
            .output()
            .unwrap()
    };
    let out = hc(&env);
    assert!(out.status.success(), "{}", crate::output(&out));
    assert!(
        crate::output(&out).contains(&format!(
            "ok   table {s}_customers: table {s}.customers readable"
        )),
        "{}",
        crate::output(&out)
    );
    env.write("config.yaml", format!(
        "tbls:\n  crm:\n    include: [\"{s}.*\"]\n    exclude: [\"{s}.tmp_*\"]\n  gone:\n    table: {s}.gone\n"
    ));
    let out = hc(&env);
    assert_eq!(out.status.code(), Some(1), "{}", crate::output(&out));
    assert!(
        crate::output(&out).contains(&format!("FAIL table gone: read table {s}.gone")),
        "{}",
        crate::output(&out)
    );
}

/// Bad input: a missing table, a cursor that is not a column, a wrong password, a
/// bad option each fail their table with the thing named; the others still load.
#[test]
fn bad_tables_fail_alone_with_the_thing_named() {
    let (env, src, s) = pg_scratch(&[
        "CREATE TABLE \"{s}\".good (id int PRIMARY KEY)",
        "INSERT INTO \"{s}\".good VALUES (1)",
    ]);
    env.write("config.yaml", format!(
        "config:\n  batch_policy: CONTINUE\ntbls:\n  good:\n    table: {s}.good\n  missing:\n    table: {s}.nope\n  badcursor:\n    table: {s}.good\n    cursor: nope\n  both:\n    table: {s}.good\n    query: SELECT 1\n  other:\n    table: {s}.good\n    connection: other\n  third:\n    table: {s}.good\n    connection: third\n  fourth:\n    table: {s}.good\n    connection: fourth\n"
    ));
    let out = env
        .cmd()
        .args(["start", "-op", "sql.Downloader", "--id", "bad"])
        .env("ACHVY_CNXN__URI", src.url(&env))
        .env(
            "ACHVY_CNXN__OTHER__URI",
            src.url(&env).replace("anchovies@", "wrongpw@"),
        )
        // A password given as its own attribute goes to the driver URL-encoded.
        .env(
            "ACHVY_CNXN__THIRD__URI",
            src.url(&env).replace(":anchovies@", "@"),
        )
        .env("ACHVY_CNXN__THIRD__PASSWORD", "anchovies")
        .env(
            "ACHVY_CNXN__FOURTH__URI",
            src.url(&env).replace(":anchovies@", "@"),
        )
        .env("ACHVY_CNXN__FOURTH__PASSWORD", "wr@ng pw")
        .output()
        .unwrap();
    let text = crate::output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let r = results(&out);
    assert_eq!(tbl_data(&r, "good")["rows"], 1);
    assert!(
        text.contains(&format!("{s}.nope")) && text.contains("does not exist"),
        "{text}"
    );
    assert!(text.contains("no column `nope`"), "{text}");
    assert!(text.contains("either `table:` or `query:`"), "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("wrongpw"), "a password was printed: {text}");
    assert!(
        !text.contains("wr@ng") && !text.contains("wr%40ng"),
        "a password was printed: {text}"
    );
    assert_eq!(
        tbl_data(&r, "third")["rows"],
        1,
        "the PASSWORD attribute reached the driver"
    );
    let fourth = crate::tbl_task(&r, "fourth");
    assert_eq!(fourth["status"], "ERR", "{fourth}");
    assert!(
        fourth
            .to_string()
            .contains("password authentication failed"),
        "{fourth}"
    );
}

/// `mode: replace` under a concurrent reader: every count the reader sees is a whole
/// snapshot (never empty, never half), and the target ends equal to the source,
/// deleted rows gone; on every target.
#[test]
fn replace_swaps_whole_snapshots_under_readers() {
    for target in [Target::Pg, Target::Sqlite, Target::My] {
        let env = Env::new();
        let src = Src::Pg;
        src.create_schema(&env);
        let t = src.q(&env, "snap");
        src.exec(
            &env,
            &[
                format!("CREATE TABLE {t} (id int PRIMARY KEY, round int)"),
                format!("INSERT INTO {t} SELECT g, 0 FROM generate_series(1, 3000) g"),
            ],
        );
        let up = format!("rep{}", env.nonce());
        env.write(
            "config.yaml",
            format!("tbls:\n  snap:\n    table: {}\n", src.table(&env, "snap")),
        );
        env.write("upload.yaml", "tbls:\n  snap:\n    mode: replace\n");
        let upload = |env: &Env| upload_ok(env, target, &up);
        download_ok(&env, src, &up);
        upload(&env);
        let tq = target.table(&up, "snap");
        let sql = format!(
            "SELECT {}, {}, {} FROM {tq}",
            target.text("COUNT(*)"),
            target.text("MIN(round)"),
            target.text("MAX(round)")
        );
        // Sizes of the snapshots, by round: round r keeps 3000 - 100 r rows.
        let url = match target {
            Target::Sqlite => target.sqlite_file(&env),
            _ => target.url().unwrap(),
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (stop, sql, url) = (stop.clone(), sql.clone(), url.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    seen.push(row_at(&url, &sql));
                }
                seen
            })
        };
        for round in 1..=4 {
            src.exec(
                &env,
                &[
                    format!("DELETE FROM {t} WHERE id <= {}", 100 * round),
                    format!("UPDATE {t} SET round = {round}"),
                ],
            );
            download_ok(&env, src, &up);
            let r = upload(&env);
            assert_eq!(
                tbl_data(&r, &format!("{up}.snap"))["rows_deleted"],
                3000 - 100 * (round - 1),
                "{r}"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = reader.join().unwrap();
        assert!(
            seen.len() > 3,
            "{target:?}: the reader saw too little: {seen:?}"
        );
        for row in &seen {
            let n: i64 = row[0].as_deref().unwrap().parse().unwrap();
            let lo: i64 = row[1].as_deref().unwrap_or("-1").parse().unwrap();
            let hi: i64 = row[2].as_deref().unwrap_or("-1").parse().unwrap();
            assert_eq!(
                lo, hi,
                "{target:?}: a reader saw two snapshots at once: {row:?}"
            );
            assert_eq!(
                n,
                3000 - 100 * lo,
                "{target:?}: a reader saw a partial snapshot: {row:?}"
            );
        }
        let end = row_at(&url, &sql);
        assert_eq!(
            end,
            vec![Some("2600".into()), Some("4".into()), Some("4".into())],
            "{target:?}"
        );
    }
}

/// The first row of a query whose columns are all text, on the database at `url`.
fn row_at(url: &str, sql: &str) -> Vec<Option<String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Row;
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        if url.starts_with("mysql") {
            let p = sqlx::MySqlPool::connect(url).await.unwrap();
            let r = sqlx::query(sql).fetch_one(&p).await.unwrap();
            p.close().await;
            return (0..r.len())
                .map(|i| {
                    r.get::<Option<Vec<u8>>, _>(i)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                })
                .collect();
        }
        if url.starts_with("sqlite") {
            let p = sqlx::SqlitePool::connect(url).await.unwrap();
            let r = sqlx::query(sql).fetch_one(&p).await.unwrap();
            p.close().await;
            return (0..r.len()).map(|i| r.get(i)).collect();
        }
        let p = sqlx::PgPool::connect(url).await.unwrap();
        let r = sqlx::query(sql).fetch_one(&p).await.unwrap();
        p.close().await;
        (0..r.len()).map(|i| r.get(i)).collect()
    })
}

/// `mode: replace_where`: each load replaces the stored rows within its `replace_by`
/// range and leaves the others; rows deleted inside the range at the source go.
#[test]
fn replace_where_replaces_the_range_of_each_load() {
    let env = Env::new();
    let src = Src::Pg;
    src.create_schema(&env);
    let t = src.q(&env, "events");
    src.exec(&env, &[
        format!("CREATE TABLE {t} (day int, id int, v text)"),
        format!("INSERT INTO {t} SELECT d, i, 'first' FROM generate_series(1, 5) d, generate_series(1, 10) i"),
    ]);
    let up = format!("rw{}", env.nonce());
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  events:\n    table: {}\n",
            src.table(&env, "events")
        ),
    );
    env.write(
        "upload.yaml",
        "tbls:\n  events:\n    mode: replace_where\n    replace_by: day\n",
    );
    let target = Target::Pg;
    let upload = |env: &Env| upload_ok(env, target, &up);
    download_ok(&env, src, &up);
    upload(&env);
    src.exec(
        &env,
        &[
            format!("DELETE FROM {t} WHERE day = 4 AND id % 2 = 1"),
            format!("UPDATE {t} SET v = 'second' WHERE day = 5"),
            format!("INSERT INTO {t} SELECT 6, i, 'new' FROM generate_series(1, 3) i"),
        ],
    );
    env.write(
        "config.yaml",
        format!("tbls:\n  events:\n    query: SELECT * FROM {t} WHERE day >= 4\n"),
    );
    download_ok(&env, src, &up);
    // A reader meanwhile sees the table before (50 rows) or after (48), nothing else.
    let count = format!(
        "SELECT {} FROM {}",
        target.text("COUNT(*)"),
        target.table(&up, "events")
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, count, url) = (stop.clone(), count.clone(), target.url().unwrap());
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                seen.insert(row_at(&url, &count)[0].clone().unwrap());
            }
            seen
        })
    };
    let r = upload(&env);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.join().unwrap();
    assert!(
        seen.iter().all(|n| n == "50" || n == "48"),
        "a reader saw a half-replaced range: {seen:?}"
    );
    assert_eq!(
        tbl_data(&r, &format!("{up}.events"))["rows_deleted"],
        20,
        "{r}"
    );
    let got = fetch(
        target,
        &env,
        &format!(
            "SELECT {}, {}, v FROM {} GROUP BY day, v ORDER BY day",
            target.text("day"),
            target.text("COUNT(*)"),
            target.table(&up, "events")
        ),
    );
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        got,
        vec![
            vec![s("1"), s("10"), s("first")],
            vec![s("2"), s("10"), s("first")],
            vec![s("3"), s("10"), s("first")],
            vec![s("4"), s("5"), s("first")],
            vec![s("5"), s("10"), s("second")],
            vec![s("6"), s("3"), s("new")],
        ]
    );
    // A replacing mode deletes stored rows; history keeps every version: one of them.
    env.write(
        "upload.yaml",
        "tbls:\n  events:\n    mode: replace\n    history: true\n    unique_by: day, id\n",
    );
    let out = env
        .cmd()
        .args(crate::upload::upload_args("wh", &up))
        .env("ACHVY_CNXN__DB__URI", target.url().unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", crate::output(&out));
    assert!(
        crate::output(&out).contains("choose one"),
        "{}",
        crate::output(&out)
    );
}

/// A bare `postgres://` takes the rest from libpq's variables; the connection's
/// `STATEMENT_TIMEOUT` stops a statement that runs too long, naming the cause; the
/// session is read-only.
#[test]
fn pg_variables_fill_the_url_and_the_statement_timeout_bounds_a_read() {
    let (env, src, s) = pg_scratch(&[
        "CREATE TABLE \"{s}\".t (id int PRIMARY KEY)",
        "INSERT INTO \"{s}\".t VALUES (1), (2)",
    ]);
    // postgres://user:password@host:port/database
    let pg = need("PG_URL");
    let rest = pg.split_once("://").unwrap().1;
    let (auth, rest) = rest.split_once('@').unwrap();
    let (user, password) = auth.split_once(':').unwrap();
    let (hostport, database) = rest.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    env.write("config.yaml", format!(
        "tbls:\n  t:\n    table: {s}.t\n  slow:\n    query: SELECT pg_sleep(3) AS z, 1 AS id\n  writes:\n    query: SELECT nextval('\"{s}\".seq') AS n\n"
    ));
    src.exec(&env, &[format!("CREATE SEQUENCE \"{s}\".seq")]);
    let out = env
        .cmd()
        .args([
            "start",
            "-op",
            "sql.Downloader",
            "--id",
            "pgv",
            "-d",
            "slow",
            "-d",
            "writes",
        ])
        .env("ACHVY_CNXN__URI", "postgres://")
        .env("PGHOST", host)
        .env("PGPORT", port)
        .env("PGUSER", user)
        .env("PGPASSWORD", password)
        .env("PGDATABASE", database.split('?').next().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::output(&out));
    assert_eq!(tbl_data(&results(&out), "t")["rows"], 2);
    let out = env
        .cmd()
        .args([
            "start",
            "-op",
            "sql.Downloader",
            "--id",
            "pgv",
            "-e",
            "slow",
            "-e",
            "writes",
        ])
        .env("ACHVY_CNXN__URI", need("PG_URL"))
        .env("ACHVY_CNXN__STATEMENT_TIMEOUT", "500ms")
        .env("ACHVY_BATCH_POLICY", "CONTINUE")
        .output()
        .unwrap();
    let text = crate::output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("statement timeout"), "{text}");
    assert!(text.contains("read-only transaction"), "{text}");
}

/// A value the datastore cannot take (PostgreSQL's `infinity`) is a bad record: by
/// default the table fails naming the row, column and type; under `on_bad_record:
/// quarantine` the row is quarantined and the others load, the cursor past it.
#[test]
fn an_unreadable_value_is_a_bad_record() {
    let env = Env::new();
    let src = Src::Pg;
    src.create_schema(&env);
    let t = src.q(&env, "ev");
    src.exec(
        &env,
        &[
            format!("CREATE TABLE {t} (id int PRIMARY KEY, at timestamp)"),
            format!("INSERT INTO {t} VALUES (1, '2024-01-01'), (2, 'infinity'), (3, '2024-01-03')"),
        ],
    );
    let table = src.table(&env, "ev");
    env.write(
        "config.yaml",
        format!("tbls:\n  ev:\n    table: {table}\n    cursor: id\n"),
    );
    let out = download(&env, src, "bad");
    let text = crate::output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("table ev row 2") && text.contains("column `at` (TIMESTAMP)"),
        "{text}"
    );
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  ev:\n    table: {table}\n    cursor: id\n    on_bad_record: quarantine\n"
        ),
    );
    let r = download_ok(&env, src, "bad");
    let d = tbl_data(&r, "ev");
    assert_eq!(
        (d["rows"].as_u64(), d["quarantined"].as_u64()),
        (Some(2), Some(1)),
        "{d}"
    );
    let rows = by_id(&committed(&env.home(), "tester", "bad")["ev"]);
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
    let out = env
        .cmd()
        .args(["rejects", "--id", "bad", "--json"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    let rec: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    let raw: serde_json::Value = serde_json::from_str(rec["raw"].as_str().unwrap()).unwrap();
    assert_eq!(raw, serde_json::json!({"id": 2, "at": null}), "{rec}");
    assert!(
        rec["reason"]
            .as_str()
            .unwrap()
            .contains("column `at` (TIMESTAMP)"),
        "{rec}"
    );
    // The cursor went past the quarantined row: nothing is read again.
    let r = download_ok(&env, src, "bad");
    assert_eq!(tbl_data(&r, "ev")["quarantined"].as_u64().unwrap_or(0), 0);
}

/// TLS as the connection's attributes say: `SSLMODE=verify-full` with the server's CA
/// as `SSLROOTCERT` connects; without the CA the certificate is refused, named.
#[test]
fn tls_modes_and_root_certificates_are_the_connections() {
    let (env, src, s) = pg_scratch(&[
        "CREATE TABLE \"{s}\".t (id int PRIMARY KEY)",
        "INSERT INTO \"{s}\".t VALUES (1)",
    ]);
    let ca = need("PG_TLS_CA");
    env.write("config.yaml", format!(
        "config:\n  batch_policy: CONTINUE\ntbls:\n  verified:\n    table: {s}.t\n    connection: verified\n  required:\n    table: {s}.t\n    connection: required\n  unknown_ca:\n    table: {s}.t\n    connection: unknown_ca\n"
    ));
    let url = src.url(&env);
    let out = env
        .cmd()
        .args(["start", "-op", "sql.Downloader", "--id", "tls"])
        .env("ACHVY_CNXN__VERIFIED__URI", &url)
        .env("ACHVY_CNXN__VERIFIED__SSLMODE", "verify-full")
        .env("ACHVY_CNXN__VERIFIED__SSLROOTCERT", &ca)
        .env(
            "ACHVY_CNXN__REQUIRED__URI",
            format!("{url}?sslmode=require"),
        )
        .env("ACHVY_CNXN__UNKNOWN_CA__URI", &url)
        .env("ACHVY_CNXN__UNKNOWN_CA__SSLMODE", "verify-full")
        .output()
        .unwrap();
    let text = crate::output(&out);
    let r = results(&out);
    assert_eq!(tbl_data(&r, "verified")["rows"], 1, "{text}");
    assert_eq!(tbl_data(&r, "required")["rows"], 1, "{text}");
    let refused = crate::tbl_task(&r, "unknown_ca");
    assert_eq!(refused["status"], "ERR", "{refused}");
    assert!(
        refused.to_string().to_lowercase().contains("certificate"),
        "{refused}"
    );
}
