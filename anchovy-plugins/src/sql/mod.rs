//! `sql.Uploader`: merges what upstream downloaders committed into PostgreSQL,
//! MySQL/MariaDB or SQLite, every committed row exactly once.
//!
//! - **Tables.** One TBL task per upstream table, named `<upstream id>.<table>`, from
//!   the upstream `$tables/` merged with `tbls:` of config.yaml (an entry named
//!   `<table>` applies to that table of every upstream; `<upstream>.<table>` to one).
//! - **Where.** Upstream id `U` loads into schema `U` (PostgreSQL), database `U` (MySQL)
//!   or tables prefixed `U__` (SQLite). `ACHVY_CNXN__SCHEMAS__<U>=<name>` renames it;
//!   for any user but `prod` the schema gets a `__<user>` suffix.
//! - **Exactly once.** The position (last upstream commit loaded) of each target table
//!   lives in `_anchovies_positions` in the target and advances in the same transaction
//!   as the merge. It is keyed by the target table, not the uploader id: two uploaders
//!   loading one upstream into the same target share it (the second loads only what
//!   the first has not; at the same moment, one waits for the other's transaction and
//!   then stops that table). Commits are loaded in order; files not in a commit are
//!   never read.
//! - **Merge.** no keys: append; `unique_by`: upsert; `+ sort_by`: the first row by
//!   `sort_by` wins, within the data and against stored rows; `set_by`: the incoming
//!   sets replace the stored ones. Everything is staged (COPY on PostgreSQL) and merged
//!   with set-based statements.

pub mod collate;
pub mod db;
pub mod dialect;

use std::sync::Arc;

use anchovy_core::commit::{CommitRecord, read_commits};
use anchovy_core::data::FileEntry;
use anchovy_core::operator::OperatorKind;
use anchovy_core::tbl_store::TblStore;
use anchovy_core::{
    BoxError, ColType, Datastore, Emitter, Operator, OperatorSpec, OptionDoc, SessionCtx, Source,
    TaskCtx, TaskType, Tbl, async_trait,
};
use serde_json::json;

use self::db::Db;
use self::dialect::{Dialect, MergeSpec, TableRef, widen};
use crate::error::PluginError;

/// Rows loaded in one transaction at most by default (table option `max_rows_per_load`).
pub const UNIT_ROWS: u64 = 2_000_000;

/// The registry entry.
pub const SPEC: OperatorSpec = OperatorSpec {
    name: "sql.Uploader",
    description: "Merges the tables of upstream downloaders (-U) from the datastore into PostgreSQL, MySQL/MariaDB or SQLite (ACHVY_CNXN__DB__URI, required; sqlite:// alone is the embedded SQLite file in the datastore), every committed row exactly once.",
    kind: OperatorKind::Uploader,
    connections: &[anchovy_core::ConnectionSpec {
        id: "db",
        required_any: &["uri"],
        optional: &[],
        description: "the target database: postgres://, mysql:// or sqlite:// URL (URL is accepted for URI)",
    }],
    env_vars: &[
        OptionDoc {
            key: "ACHVY_CNXN__DB__URI",
            doc: "postgres://, mysql:// or sqlite:// URL of the target (required; `ACHVY_CNXN__DB__URL` is accepted too); `sqlite://` alone means the embedded SQLite file <datastore>/<user>/warehouse.sqlite",
        },
        OptionDoc {
            key: "ACHVY_CNXN__SCHEMAS__<UPSTREAM>",
            doc: "load upstream <UPSTREAM> into this schema instead of its id",
        },
    ],
    table_options: &[
        OptionDoc {
            key: "unique_by",
            doc: "key columns: upsert (primary key of the table)",
        },
        OptionDoc {
            key: "sort_by",
            doc: "with unique_by: the first row by this order wins (-col = descending); an older row never overwrites a newer one",
        },
        OptionDoc {
            key: "set_by",
            doc: "replace whole sets: stored rows of every incoming set are deleted, the incoming rows inserted",
        },
        OptionDoc {
            key: "columns",
            doc: "column -> type; overrides the types inferred from the data",
        },
        OptionDoc {
            key: "history",
            doc: "with unique_by: keep every version of a key (valid_from/valid_to) instead of overwriting (default false)",
        },
        OptionDoc {
            key: "deleted_ttl",
            doc: "with history: drop superseded versions older than this (12h, 30d)",
        },
        OptionDoc {
            key: "max_rows_per_load",
            doc: "rows per transaction unit of a load (default 2,000,000; a bigger commit is one unit)",
        },
        OptionDoc {
            key: "load_rejects",
            doc: "also load the table's quarantined records (on_bad_record: quarantine) into <table>__rejects, appended (default false)",
        },
    ],
    build: |_| Ok(Arc::new(Uploader::default())),
};

/// The operator.
#[derive(Default)]
pub struct Uploader {
    db: Arc<tokio::sync::OnceCell<Db>>,
}

/// The target URL: `ACHVY_CNXN__DB__URI` (required; the startup check names it when
/// missing). `sqlite://` (or `sqlite:`) alone opts in to the embedded default, a SQLite
/// file next to the datastore: `<datastore>/<user>/warehouse.sqlite`.
pub fn target_url(ctx: &SessionCtx) -> Result<String, PluginError> {
    let u = ctx.connection("db")?.require("uri")?;
    if !matches!(u.trim(), "sqlite://" | "sqlite:" | "sqlite") {
        return Ok(u.to_string());
    }
    let loc = ctx.datastore.location();
    let root = loc.strip_prefix("file://").ok_or_else(|| PluginError::Option {
        key: "ACHVY_CNXN__DB__URI".into(),
        message: format!("`sqlite://` alone is a SQLite file in a local datastore, and the datastore {loc} is not local; give the file: ACHVY_CNXN__DB__URI=sqlite:///path/to/warehouse.sqlite"),
    })?;
    let dir = std::path::Path::new(root).join(&ctx.settings.user);
    std::fs::create_dir_all(&dir).map_err(|source| PluginError::Io {
        op: "create",
        path: dir.display().to_string(),
        source,
    })?;
    Ok(format!(
        "sqlite://{}",
        dir.join("warehouse.sqlite").display()
    ))
}

/// The schema (or SQLite prefix) of an upstream anchovy.
pub fn schema_for(ctx: &SessionCtx, upstream: &str) -> String {
    let base = ctx
        .connections
        .get("schemas")
        .and_then(|c| c.get(upstream))
        .map(str::to_string)
        .unwrap_or_else(|| upstream.to_string());
    if ctx.settings.user == "prod" {
        base
    } else {
        format!("{base}__{}", ctx.settings.user)
    }
}

/// Connects once per session (at XOPEN) and creates the position table.
async fn connect_once<'a>(
    cell: &'a tokio::sync::OnceCell<Db>,
    ctx: &SessionCtx,
) -> Result<&'a Db, PluginError> {
    cell.get_or_try_init(|| async {
        let url = target_url(ctx)?;
        let db = Db::connect(&url).await?;
        let create = db.dialect().create_positions();
        if let Err(e) = db.exec(&create).await {
            // Another uploader created it at the same moment: it exists now.
            if !e.is_concurrent_ddl() {
                return Err(e);
            }
        }
        db.check_positions().await?;
        tracing::info!(target = %db::display_url(&url), "connected to the target database");
        Ok::<Db, PluginError>(db)
    })
    .await
}

#[async_trait]
impl Operator for Uploader {
    fn sources(&self) -> Vec<Arc<dyn Source>> {
        vec![Arc::new(LoadSource {
            db: self.db.clone(),
        })]
    }

    async fn on_task(&self, ctx: &TaskCtx) -> Result<(), BoxError> {
        match ctx.task_type {
            TaskType::Xopen => {
                connect_once(&self.db, &ctx.session).await?;
            }
            // A timeout, a signal or a failure stopped the batch: its futures are gone,
            // but the statements they sent may still wait on a lock in the server.
            TaskType::Error => {
                if let Some(db) = self.db.get() {
                    db.cancel_running().await;
                }
            }
            TaskType::Shutdown => {
                if let Some(db) = self.db.get() {
                    db.close().await;
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn discover_tbls(&self, ctx: &TaskCtx) -> Result<Option<Vec<Tbl>>, BoxError> {
        let s = &ctx.session.settings;
        if s.upstream.is_empty() {
            return Err(PluginError::Option {
                key: "upstream".into(),
                message: "sql.Uploader loads the tables of upstream downloaders; pass -U <downloader id> (or ACHVY_UPSTREAM)".into(),
            }
            .into());
        }
        let mut out = Vec::new();
        for up in &s.upstream {
            let tbls = TblStore::new(ctx.session.tbl_store(up)).list().await?;
            if tbls.is_empty() {
                anchovy_core::session::matched_nothing(
                    s,
                    "--upstream",
                    format!(
                        "the upstream anchovy `{up}` has no tables in {} (a typo in -U, another --user, or it has not run yet)",
                        ctx.session.upstream_store(up).location()
                    ),
                )?;
            }
            for t in tbls {
                let mut merged = match ctx.session.config_tbls.get(&t.name) {
                    Some(cfg) => cfg.merged_over(&t),
                    None => t.clone(),
                };
                merged.name = format!("{up}.{}", t.name);
                // `load_rejects: true`: the table's quarantined records, appended to
                // `<table>__rejects` like a table of their own.
                let rejects = merged
                    .option_str("load_rejects")
                    .map(|v| match v.trim() {
                        "true" | "yes" | "1" => Ok(true),
                        "false" | "no" | "0" => Ok(false),
                        other => Err(PluginError::Option {
                            key: "load_rejects".into(),
                            message: format!("`{other}` is not true or false"),
                        }),
                    })
                    .transpose()?
                    .unwrap_or(false);
                out.push(merged);
                if rejects {
                    let mut r = Tbl::named(format!("{up}.{}__rejects", t.name));
                    r.options.insert(REJECTS_OF.into(), t.name.clone().into());
                    out.push(r);
                }
            }
        }
        Ok(Some(out))
    }

    async fn healthcheck(&self, ctx: &SessionCtx) -> Vec<(String, Result<String, String>)> {
        let mut out = Vec::new();
        match connect_once(&self.db, ctx).await {
            Ok(db) => match db.exec("SELECT 1").await {
                Ok(_) => out.push((
                    "target database".into(),
                    Ok(format!("{:?} reachable", db.dialect())),
                )),
                Err(e) => out.push((
                    "target database".into(),
                    Err(anchovy_core::error::render_chain(&e)),
                )),
            },
            Err(e) => out.push((
                "target database".into(),
                Err(anchovy_core::error::render_chain(&e)),
            )),
        }
        for up in &ctx.settings.upstream {
            match TblStore::new(ctx.tbl_store(up)).list().await {
                Ok(t) => out.push((format!("upstream {up}"), Ok(format!("{} tables", t.len())))),
                Err(e) => out.push((format!("upstream {up}"), Err(e.chain()))),
            }
        }
        out
    }
}

/// The uploader's only source: it loads its table into the target and emits nothing
/// but its position (mirrored to `$checkpoints` as `<upstream>.<table>`).
struct LoadSource {
    db: Arc<tokio::sync::OnceCell<Db>>,
}

/// Totals of one table task.
#[derive(Debug, Default)]
struct Totals {
    inserted: u64,
    updated: u64,
    deleted: u64,
    skipped: u64,
    files: u64,
    bytes: u64,
    commits: u64,
    schema_changes: Vec<String>,
}

#[async_trait]
impl Source for LoadSource {
    async fn run(&self, ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError> {
        let db = connect_once(&self.db, &ctx.session).await?;
        load_table(db, ctx, out).await
    }
}

/// The internal option of a `<table>__rejects` table: whose rejects it loads.
const REJECTS_OF: &str = "rejects_of";

/// Loads one table of one upstream, unit by unit, each in one transaction.
async fn load_table(db: &Db, ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError> {
    let s = &ctx.session.settings;
    let full = ctx.tbl_name().to_string();
    let (up, name) = split_task_name(&full, &s.upstream).ok_or_else(|| PluginError::Option {
        key: "table".into(),
        message: format!(
            "`{full}` is not <upstream>.<table> for any upstream of this uploader ({})",
            s.upstream.join(", ")
        ),
    })?;
    let tbl = ctx.tbl();
    // The data files this table loads: its own, or another table's quarantined records.
    let files_of = match tbl.option_str(REJECTS_OF) {
        Some(t) => anchovy_core::reject::rejects_table(&t),
        None => name.to_string(),
    };
    let mut job = Job {
        db,
        d: db.dialect(),
        ds: ctx.session.upstream_store(up),
        uploader: format!("{}/{}", s.user, s.id),
        upstream: format!("{}/{up}", s.user),
        name: name.to_string(),
        target: {
            let d = db.dialect();
            TableRef {
                schema: d.fit(&schema_for(&ctx.session, up)),
                name: d.fit(name),
            }
        },
        spec: MergeSpec {
            keys: tbl.unique_by.0.clone(),
            sets: tbl.set_by.0.clone(),
            sort: tbl.sort_by.0.clone(),
            sort_types: Vec::new(),
        },
        batch_size: s.batch_size,
        history: history_option(tbl)?,
        origin: String::new(),
    };
    let (mut pos, loaded_from, by) = db
        .position(&job.d.table(&job.target), &job.upstream)
        .await?;
    // The target is checked, not trusted: a position that says commits were loaded
    // into a table that is gone (dropped by hand), or a position of this uploader whose
    // checkpoint was deleted (`anchovy checkpoints -D`: "start over"), reloads the
    // table from the first commit; the datastore holds every commit.
    if pos > 0 {
        let exists = db.columns(&job.target).await?.is_some();
        // Deleted, not merely not yet written (a run killed between its load and its
        // checkpoint commit): the last change to the key in this uploader's own
        // commits is a deletion.
        let reset_by_user = by == job.uploader
            && ctx.checkpoint(&full).is_none()
            && read_commits(&ctx.session.store, 0)
                .await?
                .iter()
                .rev()
                .find_map(|c| c.checkpoints.get(&full))
                .is_some_and(|v| v.is_none());
        let had_rows = !exists && {
            let past = read_commits(&job.ds, 0).await?;
            past.iter()
                .filter(|c| c.seq <= pos)
                .any(|c| c.files.iter().any(|f| f.tbl == files_of))
        };
        if reset_by_user || had_rows {
            tracing::warn!(
                table = %full,
                target = %job.d.table(&job.target),
                position = pos,
                "{}; loading the table again from the first commit",
                if reset_by_user {
                    "this uploader's checkpoint of the table was deleted (anchovy checkpoints -D): its rows in the target are deleted"
                } else {
                    "the target table is missing although commits were loaded into it"
                }
            );
            ctx.log("reloaded_from_start", true);
            db.reset(
                &job.target,
                &job.d.table(&job.target),
                &job.upstream,
                exists,
            )
            .await?;
            pos = 0;
        }
    }
    let origin = anchovy_core::commit::origin(&job.ds).await?;
    if pos > 0 && !loaded_from.is_empty() && origin.as_deref() != Some(loaded_from.as_str()) {
        return Err(PluginError::Conflict {
            message: format!(
                "the upstream {} was reset: {} holds its commits up to {pos} from the history that began with {loaded_from}, but the datastore's history now {}; its commit numbers no longer mean the same data, so nothing was loaded. To load the new history from the start, delete the row of this table from {} (and the rows it loaded, or they may be loaded twice); to keep the old, point the uploader at the old datastore",
                job.upstream,
                job.d.table(&job.target),
                origin.map_or("has no commits".to_string(), |o| format!("begins with {o}")),
                dialect::POSITIONS
            ),
        }
        .into());
    }
    job.origin = origin.unwrap_or_default();
    let commits = read_commits(&job.ds, pos).await?;
    let Some(last) = commits.last().map(|c| c.seq) else {
        ctx.log("position", pos);
        return Ok(());
    };
    let mut totals = Totals::default();
    let mut expected = pos;
    let max_rows = match tbl.option_str("max_rows_per_load") {
        Some(v) => v.parse::<u64>().map_err(|_| PluginError::Option {
            key: "max_rows_per_load".into(),
            message: format!("`{v}` is not a whole number"),
        })?,
        None => UNIT_ROWS,
    };
    for (done, unit) in units(&commits, &files_of, last, max_rows)
        .into_iter()
        .enumerate()
    {
        if ctx.session.stop_for_budget(&full, done as u64) {
            break;
        }
        let (rows0, bytes0) = (
            totals.inserted + totals.updated + totals.skipped,
            totals.bytes,
        );
        if let Some((at, by)) = job.load_unit(tbl, &unit, expected, &mut totals).await? {
            // Another uploader loads the same target table and got there first: what it
            // loaded is not loaded again; the next run continues from its position.
            tracing::warn!(
                table = %full,
                position = at,
                by = %by,
                "another uploader loaded commits of this table into the same target meanwhile; stopping this table here (nothing is loaded twice, the next run continues)"
            );
            ctx.log("position_moved_by", by);
            expected = at;
            break;
        }
        let (rows, bytes) = (
            totals.inserted + totals.updated + totals.skipped - rows0,
            totals.bytes - bytes0,
        );
        ctx.session.budget.spend(rows, bytes);
        ctx.session.progress(&full, rows, bytes, true);
        expected = unit.end;
        out.checkpoint(&full, json!({"seq": unit.end, "upstream": job.upstream}))
            .await?;
    }
    if let Some(c) = commits
        .iter()
        .rev()
        .find(|c| c.files.iter().any(|f| f.tbl == files_of))
        && let Ok(at) = chrono::DateTime::parse_from_rfc3339(&c.committed_at)
    {
        let lag = chrono::Utc::now() - at.with_timezone(&chrono::Utc);
        ctx.log("lag_seconds", lag.num_milliseconds() as f64 / 1000.0);
    }
    ctx.log("target", job.d.table(&job.target));
    ctx.log("rows_inserted", totals.inserted);
    ctx.log("rows_updated", totals.updated);
    ctx.log("rows_deleted", totals.deleted);
    ctx.log("rows_skipped_older", totals.skipped);
    ctx.log("files_consumed", totals.files);
    ctx.log("bytes_consumed", totals.bytes);
    ctx.log("commits_consumed", totals.commits);
    ctx.log("position", expected);
    ctx.log("schema_changes", totals.schema_changes);
    Ok(())
}

/// Splits a task name `<upstream>.<table>` by the known upstream ids (ids may contain
/// dots themselves; the longest matching id wins).
fn split_task_name<'a>(full: &'a str, upstreams: &[String]) -> Option<(&'a str, &'a str)> {
    upstreams
        .iter()
        .filter(|u| {
            full.len() > u.len() + 1
                && full.starts_with(u.as_str())
                && full.as_bytes()[u.len()] == b'.'
        })
        .max_by_key(|u| u.len())
        .map(|u| (&full[..u.len()], &full[u.len() + 1..]))
}

/// The `history` and `deleted_ttl` table options.
fn history_option(tbl: &Tbl) -> Result<Option<Option<u64>>, PluginError> {
    let on = match tbl.option_str("history").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(PluginError::Option {
                key: "history".into(),
                message: format!("`{v}` is not true or false"),
            });
        }
    };
    let ttl = match tbl.option_str("deleted_ttl") {
        None => None,
        Some(v) => Some(
            anchovy_core::config::parse_duration(&v)
                .ok_or_else(|| PluginError::Option {
                    key: "deleted_ttl".into(),
                    message: format!("`{v}` is not a duration; use e.g. 3600, 12h or 30d"),
                })?
                .as_secs(),
        ),
    };
    if !on {
        if ttl.is_some() {
            return Err(PluginError::Option {
                key: "deleted_ttl".into(),
                message: "deleted_ttl applies to history tables; add `history: true`".into(),
            });
        }
        return Ok(None);
    }
    if tbl.unique_by.is_empty() {
        return Err(PluginError::Option {
            key: "history".into(),
            message: format!("table {} keeps versions per key: set unique_by", tbl.name),
        });
    }
    Ok(Some(ttl))
}

/// Consecutive commits loaded in one transaction.
struct Unit {
    /// The table's files with the upstream commit each belongs to, in commit order.
    files: Vec<(u64, FileEntry)>,
    end: u64,
    commits: u64,
}

/// Splits the commits after the position into units of at most `max_rows` rows
/// (a single bigger commit is one unit). The last unit ends at the last commit, even
/// when the table has no files in it, so the position moves past unrelated commits.
fn units(commits: &[CommitRecord], tbl: &str, last: u64, max_rows: u64) -> Vec<Unit> {
    let mut out: Vec<Unit> = Vec::new();
    let mut cur = Unit {
        files: vec![],
        end: 0,
        commits: 0,
    };
    let mut rows = 0u64;
    for c in commits {
        let files: Vec<(u64, FileEntry)> = c
            .files
            .iter()
            .filter(|f| f.tbl == tbl)
            .map(|f| (c.seq, f.clone()))
            .collect();
        let n: u64 = files.iter().map(|(_, f)| f.rows).sum();
        if rows > 0 && rows + n > max_rows {
            out.push(std::mem::replace(
                &mut cur,
                Unit {
                    files: vec![],
                    end: 0,
                    commits: 0,
                },
            ));
            rows = 0;
        }
        rows += n;
        cur.files.extend(files);
        cur.end = c.seq;
        cur.commits += 1;
    }
    cur.end = last;
    out.push(cur);
    out
}

/// The columns of a unit in first-seen order, typed: declared type, else inferred.
fn unit_columns(unit: &Unit, tbl: &Tbl) -> Vec<(String, ColType)> {
    let mut cols: Vec<(String, ColType)> = Vec::new();
    for (_, f) in &unit.files {
        for (c, t) in &f.columns {
            match cols.iter_mut().find(|(n, _)| n == c) {
                Some((_, e)) => *e = e.widen(*t),
                None => cols.push((c.clone(), *t)),
            }
        }
    }
    for (c, t) in cols.iter_mut() {
        if let Some(declared) = tbl.columns.get(c) {
            *t = *declared;
        }
    }
    // A declared column whose values were all NULL in this unit is still a column.
    for (c, t) in &tbl.columns {
        if !cols.iter().any(|(n, _)| n == c) {
            cols.push((c.clone(), *t));
        }
    }
    cols
}

/// Refuses a batch with a NULL `unique_by` value (downloaders refuse them before
/// committing; this guards data committed by older builds or other writers, and keys
/// added by the uploader's own config): a row without its key cannot be merged, and
/// is never dropped silently.
fn null_keys(
    b: &anchovy_core::Batch,
    keys: &[String],
    file: &str,
    seq: u64,
    row0: u64,
) -> Result<(), PluginError> {
    for k in keys {
        let i = b.schema.index_of(k);
        if let Some(n) = b.rows.iter().position(|r| {
            i.is_none_or(|i| matches!(r.get(i), None | Some(anchovy_core::Value::Null)))
        }) {
            return Err(PluginError::Data {
                location: format!("{file}:{} (commit {seq})", row0 + n as u64 + 1),
                message: format!(
                    "the row has no value in unique_by column `{k}`; a row without its key cannot be merged, so nothing of this load was written. Take `{k}` out of unique_by in the uploader's tbls:"
                ),
            });
        }
    }
    Ok(())
}

/// Source column names -> target column names, by the documented rule: a name is
/// kept when the target can hold it as it is ([`Dialect::fit`] cuts a too-long name
/// and appends a hash of it); a name that would still collide with another column of
/// the table (one differing only by case, on SQLite and MySQL, which compare column
/// names without regard to case; or a column the uploader reserves: `_seq`/`_del` of
/// history tables, its staging columns) gets `_<hash>` appended instead. A stored
/// column keeps its name, so the mapping of an existing table never changes.
#[derive(Debug, Clone, Default)]
struct Names {
    map: std::collections::HashMap<String, String>,
}

impl Names {
    fn new(
        d: Dialect,
        src: &[(String, ColType)],
        existing: &[(String, String)],
        history: bool,
    ) -> Names {
        let fold = |s: &str| {
            if d.folds_column_case() {
                s.to_lowercase()
            } else {
                s.to_string()
            }
        };
        let mut reserved: Vec<&str> = vec![dialect::ORD, dialect::VER];
        if history {
            reserved.extend([dialect::SEQ, dialect::DEL]);
        }
        let mut taken: std::collections::HashSet<String> =
            existing.iter().map(|(c, _)| fold(c)).collect();
        taken.extend(reserved.iter().map(|r| fold(r)));
        let mut map = std::collections::HashMap::new();
        for (c, _) in src {
            let base = d.fit(c);
            let stored = existing.iter().any(|(e, _)| *e == base)
                && !reserved.iter().any(|r| fold(r) == fold(&base));
            let name = if stored || !taken.contains(&fold(&base)) {
                base
            } else {
                d.suffixed(c)
            };
            taken.insert(fold(&name));
            if name != *c {
                map.insert(c.clone(), name);
            }
        }
        Names { map }
    }

    fn get(&self, c: &str) -> String {
        self.map.get(c).cloned().unwrap_or_else(|| c.to_string())
    }

    /// The merge spec in target names.
    fn spec(&self, m: &MergeSpec) -> MergeSpec {
        MergeSpec {
            keys: m.keys.iter().map(|k| self.get(k)).collect(),
            sets: m.sets.iter().map(|k| self.get(k)).collect(),
            sort: m
                .sort
                .iter()
                .map(|s| anchovy_core::tbl::SortCol {
                    name: self.get(&s.name),
                    descending: s.descending,
                })
                .collect(),
            sort_types: m.sort_types.clone(),
        }
    }

    /// A batch with its columns renamed (once per batch, not per row).
    fn apply(&self, mut b: anchovy_core::Batch) -> anchovy_core::Batch {
        if self.map.is_empty() || !b.schema.names().iter().any(|n| self.map.contains_key(&**n)) {
            return b;
        }
        let names: Vec<String> = b.schema.names().iter().map(|n| self.get(n)).collect();
        b.schema = Arc::new(anchovy_core::Schema::new(names));
        b
    }
}

/// Batches of a unit's files, each with the upstream commit it belongs to.
type Versioned = tokio::sync::mpsc::Receiver<Result<(u64, anchovy_core::Batch), PluginError>>;

/// Everything one table's load needs.
struct Job<'a> {
    db: &'a Db,
    d: Dialect,
    ds: Datastore,
    uploader: String,
    upstream: String,
    name: String,
    target: TableRef,
    spec: MergeSpec,
    batch_size: usize,
    /// `history: true`: keep superseded versions; `Some(ttl seconds)` drops old ones.
    history: Option<Option<u64>>,
    /// The upstream's commit history ([`anchovy_core::commit::origin`]), stored with
    /// the position.
    origin: String,
}

impl Job<'_> {
    /// One transaction: lock the position (it must still be `expected`), stage the
    /// unit's files, merge, advance the position, commit. `Some((position, uploader))`
    /// when another uploader moved the position past `expected` meanwhile (nothing of
    /// the unit is loaded then).
    async fn load_unit(
        &self,
        tbl: &Tbl,
        unit: &Unit,
        expected: u64,
        totals: &mut Totals,
    ) -> Result<Option<(u64, String)>, PluginError> {
        let (cols, names) = if unit.files.is_empty() {
            (Vec::new(), Names::default())
        } else {
            let src = unit_columns(unit, tbl);
            self.check_keys(&src)?;
            self.check_table_name().await?;
            let existing = self.db.columns(&self.target).await?.unwrap_or_default();
            let names = Names::new(self.d, &src, &existing, self.history.is_some());
            let mapped: Vec<(String, ColType)> =
                src.iter().map(|(c, t)| (names.get(c), *t)).collect();
            // DDL first, outside the transaction: MySQL commits implicitly on DDL.
            let spec = names.spec(&self.spec);
            let cols = self.ensure_table(&mapped, &spec, totals).await?;
            // Again after the DDL: two tables differing only by case created at once.
            self.check_table_name().await?;
            (cols, names)
        };
        let target = self.d.table(&self.target);
        let mut tx = self.db.begin().await?;
        let (at, by) = tx
            .lock_position(&target, &self.upstream, &self.name, &self.uploader)
            .await?;
        if at > expected {
            drop(tx); // rolled back: nothing of this run was written
            return Ok(Some((at, by)));
        }
        if at != expected {
            return Err(PluginError::Conflict {
                message: format!(
                    "the position of {} in {target} went back from commit {expected} to {at} while loading (changed by {by}); nothing was loaded, rerun to continue",
                    self.name
                ),
            });
        }
        if !unit.files.is_empty() {
            self.stage_and_merge(&mut tx, &cols, &names, unit, totals)
                .await?;
        }
        tx.set_position(
            &target,
            &self.upstream,
            unit.end,
            &self.uploader,
            &self.origin,
        )
        .await?;
        anchovy_core::failpoint::hit("upload.before_commit")?;
        tx.commit().await?;
        anchovy_core::failpoint::hit("upload.after_commit")?;
        totals.commits += unit.commits;
        Ok(None)
    }

    /// Reads and decodes the unit's files in their own task, handing batches over a
    /// bounded channel, so the database ingests while the next batch is decoded.
    fn read_unit(&self, unit: &Unit, names: &Names) -> (Versioned, tokio::task::JoinHandle<()>) {
        let (txb, rxb) =
            tokio::sync::mpsc::channel::<Result<(u64, anchovy_core::Batch), PluginError>>(4);
        let (ds, batch_size) = (self.ds.clone(), self.batch_size);
        let files: Vec<(u64, FileEntry)> = unit.files.clone();
        let names = names.clone();
        let keys = names.spec(&self.spec).keys;
        let reader = tokio::spawn(async move {
            for (seq, f) in files {
                let mut row0 = 0u64;
                let mut r = match anchovy_core::data::open_committed(&ds, &f, seq, batch_size).await
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = txb.send(Err(e.into())).await;
                        return;
                    }
                };
                loop {
                    match r.next_batch().await {
                        Ok(Some(b)) => {
                            let b = names.apply(b);
                            if let Err(e) = null_keys(&b, &keys, &f.key, seq, row0) {
                                let _ = txb.send(Err(e)).await;
                                return;
                            }
                            row0 += b.rows.len() as u64;
                            if txb.send(Ok((seq, b))).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = txb.send(Err(e.into())).await;
                            return;
                        }
                    }
                }
                if let Err(e) = anchovy_core::failpoint::hit("upload.staged_file") {
                    let _ = txb.send(Err(e.into())).await;
                    return;
                }
            }
        });
        (rxb, reader)
    }

    async fn stage_and_merge(
        &self,
        tx: &mut db::Tx,
        cols: &[(String, ColType)],
        names: &Names,
        unit: &Unit,
        totals: &mut Totals,
    ) -> Result<(), PluginError> {
        let d = self.d;
        let mut typed = names.spec(&self.spec);
        typed.sort_types = typed
            .sort
            .iter()
            .map(|s| {
                cols.iter()
                    .find(|(c, _)| *c == s.name)
                    .map_or(ColType::Str, |(_, t)| *t)
            })
            .collect();
        let spec = &typed;
        for (_, f) in &unit.files {
            totals.files += 1;
            totals.bytes += f.bytes;
        }
        // Append tables need no staging: the rows go straight into the target.
        if spec.keys.is_empty() && spec.sets.is_empty() && self.history.is_none() {
            let (mut rx, reader) = self.read_unit(unit, names);
            let n = tx.stage(&d.table(&self.target), cols, false, &mut rx).await;
            reader.abort();
            totals.inserted += n? as u64;
            return Ok(());
        }
        // A keyed load into an empty table (the first backfill) is written straight into
        // the target too; if the data repeats a key, it falls back to stage-and-merge.
        if spec.sets.is_empty() && self.history.is_none() {
            let probe = format!(
                "SELECT COUNT(*) FROM (SELECT 1 FROM {} LIMIT 1) _e",
                d.table(&self.target)
            );
            if tx.scalar(&probe).await? == 0 {
                tx.exec("SAVEPOINT anchovies_direct").await?;
                let (mut rx, reader) = self.read_unit(unit, names);
                let r = tx.stage(&d.table(&self.target), cols, false, &mut rx).await;
                reader.abort();
                match r {
                    Ok(n) => {
                        tx.exec("RELEASE SAVEPOINT anchovies_direct").await?;
                        totals.inserted += n as u64;
                        return Ok(());
                    }
                    Err(e) if e.is_unique_violation() => {
                        tracing::debug!(table = %self.name, "keys repeat in the data: staging and merging instead");
                        tx.exec("ROLLBACK TO SAVEPOINT anchovies_direct").await?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let stage = format!("_anchovies_stage_{}", std::process::id());
        if let Some(sql) = d.drop_stage(&stage) {
            tx.exec(&sql).await?;
        }
        tx.exec(&d.create_stage(&stage, cols)).await?;
        let t0 = std::time::Instant::now();
        let (mut rxb, reader) = self.read_unit(unit, names);
        let staged = tx.stage(&d.ident(&stage), cols, true, &mut rxb).await;
        reader.abort();
        let ord = staged?;
        tracing::debug!(rows = ord, ms = t0.elapsed().as_millis() as u64, table = %self.name, "staged");
        let names: Vec<String> = cols.iter().map(|(c, _)| c.clone()).collect();
        let incoming = if spec.keys.is_empty() {
            ord as u64
        } else {
            let distinct = format!(
                "SELECT COUNT(*) FROM (SELECT DISTINCT {} FROM {}) _k",
                spec.keys
                    .iter()
                    .map(|k| d.ident(k))
                    .collect::<Vec<_>>()
                    .join(", "),
                d.ident(&stage)
            );
            let t1 = std::time::Instant::now();
            let n = tx.scalar(&distinct).await?.max(0) as u64;
            tracing::debug!(
                ms = t1.elapsed().as_millis() as u64,
                "counted distinct keys"
            );
            n
        };
        // Keys already unique in the data: no need to pick a winner per key.
        let unique = !spec.keys.is_empty() && incoming == ord as u64;
        // A plain upsert on PostgreSQL counts its inserts and updates itself.
        let pg_upsert = d == Dialect::Postgres
            && !spec.keys.is_empty()
            && spec.sets.is_empty()
            && self.history.is_none();
        let existing = match d.count_existing(&self.target, &stage, spec) {
            Some(sql) if spec.sets.is_empty() && !pg_upsert => tx.scalar(&sql).await?.max(0) as u64,
            _ => 0,
        };
        if let Some(ttl) = self.history {
            // One version per upstream commit, oldest first: each commit's winner per
            // key supersedes the version before it.
            let mut vers: Vec<u64> = unit.files.iter().map(|(seq, _)| *seq).collect();
            vers.dedup();
            // Each commit reads its slice of the stage: index it when there are many.
            if vers.len() > 4 {
                tx.exec(&d.index_stage_versions(&stage)).await?;
            }
            // One candidate per key and commit.
            let incoming = if vers.len() > 1 {
                let sql = format!(
                    "SELECT COUNT(*) FROM (SELECT DISTINCT {}, {} FROM {}) _k",
                    spec.keys
                        .iter()
                        .map(|k| d.ident(k))
                        .collect::<Vec<_>>()
                        .join(", "),
                    d.ident(dialect::VER),
                    d.ident(&stage)
                );
                tx.scalar(&sql).await?.max(0) as u64
            } else {
                incoming
            };
            let (mut superseded, mut versions) = (0, 0);
            for ver in vers {
                let (stmts, supersede, insert) =
                    d.merge_history(&self.target, &stage, &names, spec, unique, (ver, ttl));
                for (i, sql) in stmts.iter().enumerate() {
                    let n = tx.exec(sql).await?;
                    if i == supersede {
                        superseded += n;
                    } else if i == insert {
                        versions += n;
                    }
                }
            }
            if let Some(sql) = d.drop_stage(&stage) {
                tx.exec(&sql).await?;
            }
            totals.inserted += versions.saturating_sub(superseded);
            totals.updated += superseded;
            totals.skipped += incoming.saturating_sub(versions);
            return Ok(());
        }
        let stmts = d.merge(&self.target, &stage, &names, spec, unique);
        if pg_upsert && stmts.len() == 1 {
            let sql = format!(
                "WITH _m AS ({} RETURNING (xmax = 0) AS _ins) SELECT COUNT(*) FILTER (WHERE _ins), COUNT(*) FILTER (WHERE NOT _ins) FROM _m",
                stmts[0]
            );
            let (inserted, updated) = tx.scalar2(&sql).await?;
            let (inserted, updated) = (inserted.max(0) as u64, updated.max(0) as u64);
            totals.inserted += inserted;
            totals.updated += updated;
            totals.skipped += incoming.saturating_sub(inserted + updated);
            return Ok(());
        }
        let mut deleted = 0;
        let mut written = 0;
        for (i, sql) in stmts.iter().enumerate() {
            let t1 = std::time::Instant::now();
            let n = tx.exec(sql).await?;
            tracing::debug!(
                rows = n,
                ms = t1.elapsed().as_millis() as u64,
                statement = i,
                "merged"
            );
            if i == 0 && !spec.sets.is_empty() {
                deleted = n;
            }
            written = n;
        }
        if let Some(sql) = d.drop_stage(&stage) {
            tx.exec(&sql).await?;
        }
        if spec.keys.is_empty() || !spec.sets.is_empty() {
            totals.inserted += written;
            totals.deleted += deleted;
            if spec.keys.is_empty() {
                // Rows of a set that a newer commit of the same load replaced.
                totals.skipped += (ord as u64).saturating_sub(written);
            }
        } else {
            // Upserts: keys not stored before are inserts; stored keys that were
            // written are updates; stored keys not written lost to a newer stored row.
            let inserted = incoming.saturating_sub(existing);
            // `written` counts inserted plus replaced rows on every backend (the upsert's
            // affected rows; on MySQL the insert of the winners).
            let updated = written.saturating_sub(inserted);
            totals.inserted += inserted;
            totals.updated += updated;
            totals.skipped += existing.saturating_sub(updated);
        }
        Ok(())
    }

    /// `unique_by`, `set_by` and `sort_by` name columns of the data.
    fn check_keys(&self, cols: &[(String, ColType)]) -> Result<(), PluginError> {
        let spec = &self.spec;
        for k in spec
            .keys
            .iter()
            .chain(&spec.sets)
            .chain(spec.sort.iter().map(|s| &s.name))
        {
            if !cols.iter().any(|(c, _)| c == k) {
                return Err(PluginError::Option {
                    key: "unique_by/set_by/sort_by".into(),
                    message: format!(
                        "column `{k}` is not in the data of {}; its columns are: {}",
                        self.d.table(&self.target),
                        cols.iter()
                            .map(|c| c.0.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    /// SQLite compares table names without regard to case: a table that differs from
    /// this one only by case belongs to another source table, and loading into it
    /// would merge the two. Refused, with both names and the fix.
    async fn check_table_name(&self) -> Result<(), PluginError> {
        let Some(other) = self.db.table_differing_in_case(&self.target).await? else {
            return Ok(());
        };
        Err(PluginError::Conflict {
            message: format!(
                "the upstream table `{}` would load into {}, but the database compares table names without regard to case and already holds `{other}` (from another source table): the two would become one. Rename one of the tables in the downloader's tbls:, or load this upstream into another schema (ACHVY_CNXN__SCHEMAS__<upstream>)",
                self.name,
                self.d.table(&self.target)
            ),
        })
    }

    /// Creates the schema and table, adds new columns and widens changed ones. Returns
    /// the columns as they are in the target after the changes. DDL that loses a race
    /// with another uploader's identical DDL is redone against the new state.
    async fn ensure_table(
        &self,
        cols: &[(String, ColType)],
        spec: &MergeSpec,
        totals: &mut Totals,
    ) -> Result<Vec<(String, ColType)>, PluginError> {
        let mut attempt = 0;
        loop {
            match self.ensure_table_once(cols, spec, totals).await {
                Err(e) if e.is_concurrent_ddl() && attempt < 3 => {
                    attempt += 1;
                    tracing::debug!(error = %e, "DDL raced with another uploader; looking again");
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
                r => return r,
            }
        }
    }

    async fn ensure_table_once(
        &self,
        cols: &[(String, ColType)],
        spec: &MergeSpec,
        totals: &mut Totals,
    ) -> Result<Vec<(String, ColType)>, PluginError> {
        let (d, target) = (self.d, &self.target);
        if let Some(sql) = d.create_schema(&target.schema) {
            self.db.exec(&sql).await?;
        }
        let Some(existing) = self.db.columns(target).await? else {
            let create = match self.history {
                Some(_) => d.create_history_table(target, cols, &spec.keys),
                None => d.create_table(target, cols, &spec.keys),
            };
            self.db.exec(&create).await?;
            if !spec.sets.is_empty() {
                self.db
                    .exec(&d.create_set_index(target, &spec.sets))
                    .await?;
            }
            totals
                .schema_changes
                .push(format!("created {}", d.table(target)));
            return Ok(cols.to_vec());
        };
        let has_history = existing.iter().any(|(c, _)| c == dialect::SEQ);
        if self.history.is_some() != has_history {
            return Err(PluginError::Option {
                key: "history".into(),
                message: format!(
                    "{} already exists {} history columns; history cannot be switched on or off for an existing table: rename or drop it, or change `history:` back",
                    d.table(target),
                    if has_history { "with" } else { "without" }
                ),
            });
        }
        let mut out = Vec::with_capacity(existing.len().max(cols.len()));
        for (c, want) in cols {
            match existing.iter().find(|(n, _)| n == c) {
                None => {
                    self.db.exec(&d.add_column(target, c, *want)).await?;
                    totals
                        .schema_changes
                        .push(format!("added column {c} {want}"));
                    out.push((c.clone(), *want));
                }
                Some((_, sql_type)) => {
                    let cur = d.col_type_of(sql_type);
                    match widen(cur, *want) {
                        None => out.push((c.clone(), cur)),
                        Some(w) => {
                            // SQLite widens in four statements (add, copy, drop,
                            // rename): one transaction on one connection, so a
                            // concurrent load or a failure never sees it half done.
                            let steps = d.alter_type(target, c, w, spec.keys.contains(c));
                            if steps.len() > 1 {
                                let mut tx = self.db.begin().await?;
                                for sql in &steps {
                                    tx.exec(sql).await?;
                                }
                                tx.commit().await?;
                            } else {
                                for sql in &steps {
                                    self.db.exec(sql).await?;
                                }
                            }
                            totals
                                .schema_changes
                                .push(format!("widened column {c} from {cur} to {w}"));
                            out.push((c.clone(), w));
                        }
                    }
                }
            }
        }
        // Stored columns this unit has no value for are NULL in its rows: staged as
        // such, so an upsert replaces the whole row, not only the columns it carried.
        for (c, sql_type) in &existing {
            if c != dialect::SEQ && c != dialect::DEL && !out.iter().any(|(n, _)| n == c) {
                out.push((c.clone(), d.col_type_of(sql_type)));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_split_by_known_upstreams() {
        let ups = vec!["sales".to_string(), "sales.v2".to_string()];
        assert_eq!(
            split_task_name("sales.orders", &ups),
            Some(("sales", "orders"))
        );
        assert_eq!(
            split_task_name("sales.v2.orders", &ups),
            Some(("sales.v2", "orders"))
        );
        assert_eq!(
            split_task_name("sales.v2.a.b", &ups),
            Some(("sales.v2", "a.b"))
        );
        assert_eq!(split_task_name("crm.orders", &ups), None);
        assert_eq!(split_task_name("sales.", &ups), None);
    }
}
