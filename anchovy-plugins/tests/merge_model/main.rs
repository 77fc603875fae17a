//! The merge semantics of `sql.Uploader`, written down as a small reference model, and
//! a seeded differential test that holds the real uploader against it on SQLite,
//! PostgreSQL and MariaDB.
//!
//! A schedule is a random sequence of downloads (each commits a random batch of rows:
//! repeated keys, NULLs, ties, out-of-order versions, decimals of many scales,
//! datetimes with offsets and fractions) and uploads, either of which may be
//! interrupted at a random moment (the session is cancelled mid-work: whatever it had
//! not committed must leave no trace). After every upload the target must equal the
//! model applied to the upstream commits up to the uploader's position, row for row and
//! value for value; at the end a clean upload must reach the last commit.
//!
//! `MERGE_SCHEDULES` (per database, default 60 SQLite / 40 PostgreSQL / 40 MariaDB) and
//! `MERGE_SEED` (the first seed; each failure prints the seed that replays it) scale it:
//! `script/merge-model` runs thousands.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anchovy_core::chrono::{self, FixedOffset, NaiveDate, TimeZone};
use anchovy_core::operator::OperatorKind;
use anchovy_core::testutil::Rng;
use anchovy_core::{
    BoxError, CancellationToken, ConfigDoc, Connections, Emitter, Layer, Operator, OperatorSpec,
    Session, Settings, Source, TaskCtx, Value, async_trait,
};
use anchovy_plugins::sql::db::Db;
use anchovy_plugins::sql::dialect::TableRef;

mod model;

use self::model::*;

// ---------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------

fn gen_spec(r: &mut Rng) -> Spec {
    let sorts: Vec<Vec<(usize, bool)>> = vec![
        vec![],
        vec![(2, true)],
        vec![(3, false)],
        vec![(3, true), (5, false)],
        vec![(2, false), (5, true)],
        vec![(3, true)],
    ];
    match r.below(5) {
        0 => Spec {
            keys: vec![],
            sets: vec![],
            sort: vec![],
            history: false,
        },
        1 => Spec {
            keys: if r.chance(70) { vec![0] } else { vec![0, 1] },
            sets: vec![],
            sort: r.pick(&sorts),
            history: false,
        },
        2 => Spec {
            keys: vec![],
            sets: vec![1],
            sort: vec![],
            history: false,
        },
        3 => Spec {
            keys: vec![1, 0],
            sets: vec![1],
            sort: r.pick(&sorts),
            history: false,
        },
        _ => Spec {
            keys: vec![0],
            sets: vec![],
            sort: r.pick(&sorts),
            history: true,
        },
    }
}

fn gen_value(r: &mut Rng, col: usize, spec: &Spec) -> Value {
    let key = spec.keys.contains(&col);
    let nullable = !key;
    if nullable && r.chance(12) {
        return Value::Null;
    }
    match col {
        0 => Value::Int(r.below(5) as i64),
        1 => Value::Int(r.below(3) as i64),
        2 => {
            // Decimals of many scales, with ties in value but not in text (9.5 / 9.50).
            let int = r.below(12) as i64 - 2;
            let scale = r.below(4) as usize;
            let frac: String = (0..scale)
                .map(|i| {
                    if i == 0 {
                        r.pick(&['0', '5'])
                    } else {
                        r.pick(&['0', '0', '3'])
                    }
                })
                .collect();
            let s = if scale == 0 {
                int.to_string()
            } else {
                format!("{int}.{frac}")
            };
            Value::Decimal(s)
        }
        3 => {
            // Instants from a small set (ties), spelled with different offsets and
            // fractions; some without offset (read as UTC).
            let base = NaiveDate::from_ymd_opt(2024, 3, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap();
            let secs = r.below(6) as i64 * 3600 + r.pick(&[0i64, 0, 1, 59]);
            let nanos = r.pick(&[0u32, 0, 500_000_000, 123_456_000]);
            let t = base
                + chrono::Duration::seconds(secs)
                + chrono::Duration::nanoseconds(nanos as i64);
            let off = r.pick(&[
                None,
                Some(0),
                Some(-5 * 3600),
                Some(2 * 3600),
                Some(5 * 3600 + 1800),
            ]);
            match off {
                None => Value::DateTime(t),
                Some(o) => {
                    let fo = FixedOffset::east_opt(o).unwrap();
                    Value::DateTimeTz(fo.from_utc_datetime(&t))
                }
            }
        }
        4 => Value::String(
            r.pick(&["a", "b,c", "say \"hi\"", "", "ünï", "line\nbreak"])
                .to_string(),
        ),
        _ => Value::Int(r.below(4) as i64 - 1),
    }
}

fn gen_rows(r: &mut Rng, spec: &Spec) -> Vec<Vec<Value>> {
    let n = r.below(7);
    (0..n)
        .map(|_| (0..COLS.len()).map(|c| gen_value(r, c, spec)).collect())
        .collect()
}

// ---------------------------------------------------------------------------------
// The downloader side: a test operator that commits the rows it is handed
// ---------------------------------------------------------------------------------

/// Rows for the next download of each anchovy id.
static FEED: Mutex<BTreeMap<String, Vec<Vec<Value>>>> = Mutex::new(BTreeMap::new());

struct Feed(Vec<Vec<Value>>);

#[async_trait]
impl Source for Feed {
    async fn run(&self, ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError> {
        for row in &self.0 {
            out.push(COLS.iter().map(|c| c.0).zip(row.iter().cloned()))
                .await?;
        }
        let n = ctx.checkpoint("runs").and_then(|v| v.as_u64()).unwrap_or(0);
        out.checkpoint("runs", n + 1).await?;
        Ok(())
    }
}

struct FeedOp(Vec<Vec<Value>>);

#[async_trait]
impl Operator for FeedOp {
    fn sources(&self) -> Vec<Arc<dyn Source>> {
        vec![Arc::new(Feed(self.0.clone()))]
    }
}

const FEED_SPEC: OperatorSpec = OperatorSpec {
    name: "test.Feed",
    description: "commits the rows the test hands it",
    kind: OperatorKind::Downloader,
    connections: &[],
    table_options: &[],
    env_vars: &[],
    build: |ctx| {
        let rows = FEED
            .lock()
            .unwrap()
            .remove(&ctx.settings.id)
            .unwrap_or_default();
        Ok(Arc::new(FeedOp(rows)))
    },
};

// ---------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    Sqlite,
    Postgres,
    MariaDb,
}

struct Schedule {
    seed: u64,
    target: Target,
    dir: tempfile::TempDir,
    id: String,
    url: String,
    spec: Spec,
}

impl Schedule {
    fn settings(&self, op: &str) -> Settings {
        let mut l = Layer::new("test");
        l.set(
            "id",
            if op == "test.Feed" {
                self.id.clone()
            } else {
                format!("{}_up", self.id)
            },
        )
        .set("user", "tester")
        .set("operator_cls", op)
        .set("commit_interval", "0s")
        .set("upstream", serde_json::json!([self.id]))
        .set("datastore", self.dir.path().to_str().unwrap());
        Settings::resolve(&[&l], &BTreeMap::new()).unwrap()
    }

    /// Runs one session, cancelled after `kill_after_ms` when set.
    async fn run(&self, op: &str, kill_after_ms: Option<u64>) {
        let registry = anchovy_plugins::registry().with(FEED_SPEC);
        let doc = ConfigDoc::parse(&self.spec.yaml(), "schedule.yaml").unwrap();
        let conns = Connections::from_env([("ACHVY_CNXN__DB__URI", self.url.as_str())]).unwrap();
        // A cancelled session of the same anchovy may still be letting go of its run
        // lease (in one process the lock goes with the last handle): wait, as a rerun
        // after a kill would.
        let mut tries = 0;
        let session = loop {
            match Session::open(&registry, self.settings(op), doc.clone(), conns.clone()).await {
                Ok(s) => break s,
                Err(anchovy_core::Error::Locked { .. }) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("seed {}: {op} did not start: {e}", self.seed),
            }
        };
        let stop = CancellationToken::new();
        if let Some(ms) = kill_after_ms {
            let s = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                s.cancel();
            });
        }
        let r = session.run_with(stop, CancellationToken::new()).await;
        if kill_after_ms.is_none() {
            let failed: Vec<String> = r
                .all_tasks()
                .iter()
                .filter(|t| t.status == anchovy_core::Status::Err)
                .map(|t| format!("{:?} {:?}: {:?}", t.task_type, t.tbl, t.error))
                .collect();
            assert!(
                failed.is_empty(),
                "seed {}: {op} failed: {failed:?}",
                self.seed
            );
        }
    }

    /// Every upstream commit of table `t` with its rows, in order.
    async fn commits(&self) -> Vec<(u64, Vec<Row>)> {
        let ds = anchovy_core::Datastore::open(self.dir.path().to_str().unwrap())
            .unwrap()
            .for_anchovy("tester", &self.id);
        let mut out = Vec::new();
        for rec in anchovy_core::commit::read_commits(&ds, 0).await.unwrap() {
            let mut rows = Vec::new();
            for f in rec.files.iter().filter(|f| f.tbl == "t") {
                let r = anchovy_core::data::open_committed(&ds, f, rec.seq, 1024)
                    .await
                    .unwrap();
                for b in anchovy_core::data::read_all(r).await.unwrap() {
                    for row in &b.rows {
                        rows.push(
                            COLS.iter()
                                .map(|(c, ty)| {
                                    let v = b.schema.index_of(c).map_or(&Value::Null, |i| &row[i]);
                                    canon_value(*ty, v)
                                })
                                .collect(),
                        );
                    }
                }
            }
            out.push((rec.seq, rows));
        }
        out
    }

    fn table(&self) -> TableRef {
        TableRef {
            schema: format!("{}__tester", self.id),
            name: "t".into(),
        }
    }

    /// The uploader's position and the target's rows, canonical.
    async fn target(&self, db: &Db) -> (u64, Vec<TRow>) {
        let t = self.table();
        let d = db.dialect();
        let pos_sql = format!(
            "SELECT seq FROM {} WHERE upstream = {}",
            d.ident("_anchovies_positions"),
            d.param(1)
        );
        let up = format!("tester/{}", self.id);
        let pos: Option<i64> = match db {
            Db::Pg(p, _) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(pos_sql))
                    .bind(&up)
                    .fetch_optional(p)
                    .await
            }
            Db::My(p, _) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(pos_sql))
                    .bind(&up)
                    .fetch_optional(p)
                    .await
            }
            Db::Lite(p) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(pos_sql))
                    .bind(&up)
                    .fetch_optional(p)
                    .await
            }
        }
        .unwrap_or(None);
        let Some(existing) = db.columns(&t).await.unwrap() else {
            return (pos.unwrap_or(0) as u64, Vec::new());
        };
        let has = |c: &str| existing.iter().any(|(n, _)| n == c);
        let cast = |c: &str| -> String {
            if !has(c) {
                return "NULL".into();
            }
            match d {
                anchovy_plugins::sql::dialect::Dialect::MySql => {
                    format!("CAST({} AS CHAR)", d.ident(c))
                }
                _ => format!("CAST({} AS TEXT)", d.ident(c)),
            }
        };
        let mut sel: Vec<String> = COLS.iter().map(|(c, _)| cast(c)).collect();
        sel.push(cast("_seq"));
        sel.push(cast("_del"));
        let sql = format!("SELECT {} FROM {}", sel.join(", "), d.table(&t));
        type R = Vec<Option<String>>;
        macro_rules! text_rows {
            ($p:expr) => {{
                use sqlx::Row as _;
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all($p)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (0..8).map(|i| r.get::<Option<String>, _>(i)).collect())
                    .collect()
            }};
        }
        let rows: Vec<R> = match db {
            Db::Pg(p, _) => text_rows!(p),
            Db::My(p, _) => text_rows!(p),
            Db::Lite(p) => text_rows!(p),
        };
        let rows = rows
            .into_iter()
            .map(|r| TRow {
                row: COLS
                    .iter()
                    .enumerate()
                    .map(|(i, (_, ty))| r[i].as_deref().map(|v| canon(*ty, v)))
                    .collect(),
                seq: r[6].as_deref().map(|s| s.parse().unwrap()),
                del: r[7].is_some(),
            })
            .collect();
        (pos.unwrap_or(0) as u64, rows)
    }

    async fn check(&self, db: &Db, when: &str) -> u64 {
        let (pos, mut got) = self.target(db).await;
        let mut want: Vec<TRow> = Vec::new();
        for (seq, rows) in self.commits().await.iter().filter(|(s, _)| *s <= pos) {
            apply(&self.spec, &mut want, *seq, rows);
        }
        got.sort();
        want.sort();
        if got != want {
            let show = |v: &[TRow]| {
                v.iter()
                    .map(|t| format!("  {:?} seq={:?} del={}", t.row, t.seq, t.del))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let commits: Vec<String> = self
                .commits()
                .await
                .iter()
                .map(|(s, rows)| format!("  commit {s}: {rows:?}"))
                .collect();
            panic!(
                "seed {} ({:?}): {when}: the target differs from the model at position {pos}\nspec: {}\nwant ({}):\n{}\ngot ({}):\n{}\ncommits:\n{}",
                self.seed,
                self.target,
                self.spec.yaml().replace('\n', " | "),
                want.len(),
                show(&want),
                got.len(),
                show(&got),
                commits.join("\n")
            );
        }
        pos
    }
}

fn url_for(target: Target, dir: &std::path::Path) -> String {
    match target {
        Target::Sqlite => format!("sqlite://{}", dir.join("target.sqlite").display()),
        Target::Postgres => need("PG_URL"),
        Target::MariaDb => need("MYSQL_URL"),
    }
}

fn need(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with script/test, which starts the services (see script/services.sh)")
    })
}

/// Runs one schedule end to end and checks it.
async fn schedule(seed: u64, target: Target) {
    let mut r = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let spec = gen_spec(&mut r);
    let s = Schedule {
        seed,
        target,
        url: url_for(target, dir.path()),
        id: format!("m{seed}_{}", std::process::id()),
        dir,
        spec,
    };
    let db = Db::connect(&s.url).await.unwrap();
    let steps = 2 + r.below(8);
    for step in 0..steps {
        if r.chance(60) {
            let rows = gen_rows(&mut r, &s.spec);
            FEED.lock().unwrap().insert(s.id.clone(), rows);
            let kill = r.chance(15).then(|| r.below(15));
            s.run("test.Feed", kill).await;
        } else {
            let kill = r.chance(30).then(|| r.below(40));
            s.run("sql.Uploader", kill).await;
            s.check(&db, &format!("after upload step {step}")).await;
        }
    }
    s.run("sql.Uploader", None).await;
    let pos = s.check(&db, "after the final upload").await;
    let last = s.commits().await.last().map_or(0, |c| c.0);
    assert_eq!(
        pos, last,
        "seed {seed}: the final upload did not reach the last commit"
    );
    // Leave shared servers tidy.
    let t = s.table();
    let d = db.dialect();
    let drop = match target {
        Target::Sqlite => None,
        Target::Postgres => Some(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            d.ident(&t.schema)
        )),
        Target::MariaDb => Some(format!("DROP DATABASE IF EXISTS {}", d.ident(&t.schema))),
    };
    if let Some(sql) = drop {
        let _ = db.exec(&sql).await;
    }
    db.close().await;
}

async fn many(target: Target, default: u64) {
    let n: u64 = std::env::var("MERGE_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let first: u64 = std::env::var("MERGE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for seed in first..first + n {
        schedule(seed, target).await;
    }
    eprintln!(
        "merge model: {n} schedules on {target:?} (seeds {first}..{}) match",
        first + n
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_matches_the_model() {
    many(Target::Sqlite, 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_matches_the_model() {
    many(Target::Postgres, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_matches_the_model() {
    many(Target::MariaDb, 40).await;
}

// ---------------------------------------------------------------------------------
// The cases that failed for users, kept as fixed schedules: several downloads, then
// one upload, on every database.
// ---------------------------------------------------------------------------------

/// Downloads each of `commits`, uploads once, checks the model and returns the target.
async fn fixed(target: Target, spec: Spec, commits: Vec<Vec<Vec<Value>>>) -> Vec<TRow> {
    let dir = tempfile::tempdir().unwrap();
    let seed = NEXT_FIXED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let s = Schedule {
        seed,
        target,
        url: url_for(target, dir.path()),
        id: format!("f{seed}_{}", std::process::id()),
        dir,
        spec,
    };
    for rows in commits {
        FEED.lock().unwrap().insert(s.id.clone(), rows);
        s.run("test.Feed", None).await;
    }
    s.run("sql.Uploader", None).await;
    let db = Db::connect(&s.url).await.unwrap();
    s.check(&db, "after one upload of every commit").await;
    let (_, mut rows) = s.target(&db).await;
    rows.sort();
    db.close().await;
    rows
}

static NEXT_FIXED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1_000_000);

fn row(k: i64, g: i64, d: &str, ts: &str, s: &str) -> Vec<Value> {
    let ts = if ts.is_empty() {
        Value::Null
    } else {
        anchovy_core::row::parse_datetime(ts).unwrap()
    };
    vec![
        Value::Int(k),
        Value::Int(g),
        Value::Decimal(d.into()),
        ts,
        Value::String(s.into()),
        Value::Null,
    ]
}

fn spec(keys: &[usize], sets: &[usize], sort: &[(usize, bool)], history: bool) -> Spec {
    Spec {
        keys: keys.to_vec(),
        sets: sets.to_vec(),
        sort: sort.to_vec(),
        history,
    }
}

async fn regressions(t: Target) {
    // set_by across commits: `1,1,10 / 1,2,20` then `1,1,99`, one upload: the set
    // o=1 is the single row of the newest commit.
    let rows = fixed(
        t,
        spec(&[], &[0], &[], false),
        vec![
            vec![row(1, 1, "10", "", "a"), row(1, 2, "20", "", "b")],
            vec![row(1, 1, "99", "", "c")],
        ],
    )
    .await;
    assert_eq!(rows.len(), 1, "{t:?}: {rows:?}");
    assert_eq!(rows[0].row[2].as_deref(), Some("99"));
    // history across commits: v1 .. v6 of one key, one upload: six versions (more
    // than four commits: the load indexes its stage by commit).
    let rows = fixed(
        t,
        spec(&[0], &[], &[], true),
        (1..=6)
            .map(|i| vec![row(1, 0, &i.to_string(), "", &format!("v{i}"))])
            .collect(),
    )
    .await;
    let versions: Vec<_> = rows
        .iter()
        .map(|r| (r.row[4].clone().unwrap(), r.del))
        .collect();
    let want: Vec<(String, bool)> = (1..=6).map(|i| (format!("v{i}"), i < 6)).collect();
    assert_eq!(versions, want, "{t:?}");
    // sort_by on a decimal: 10.5 beats 9.5 (text order says otherwise), in one load and
    // across loads.
    let rows = fixed(
        t,
        spec(&[0], &[], &[(2, true)], false),
        vec![
            vec![row(1, 0, "10.5", "", "ten")],
            vec![row(1, 0, "9.5", "", "nine")],
        ],
    )
    .await;
    assert_eq!(rows[0].row[4].as_deref(), Some("ten"), "{t:?}");
    // sort_by on datetimes with offsets and fractions.
    let rows = fixed(
        t,
        spec(&[0], &[], &[(3, true)], false),
        vec![
            vec![
                row(1, 0, "0", "2024-01-01T02:30:00-05:00", "later"),
                row(1, 0, "0", "2024-01-01T05:00:00Z", "earlier"),
            ],
            vec![
                row(2, 0, "0", "2024-01-01T00:00:00.5Z", "later"),
                row(2, 0, "0", "2024-01-01T00:00:00Z", "earlier"),
            ],
        ],
    )
    .await;
    assert!(
        rows.iter().all(|r| r.row[4].as_deref() == Some("later")),
        "{t:?}: {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_reported_schedules_on_every_database() {
    regressions(Target::Sqlite).await;
    regressions(Target::Postgres).await;
    regressions(Target::MariaDb).await;
}
