//! The destination seam: what every uploader shares, whatever it loads into.
//!
//! An uploader runs one table task per upstream table (`<upstream>.<table>`, found by
//! [`discover`]). Its task is [`load`], written once here: read the upstream's commit
//! records after the table's position, cut them into [`Unit`]s (consecutive commits,
//! at most `max_rows_per_load` rows, a bigger commit alone), and hand each unit to the
//! [`Destination`]'s [`TableLoader`], which loads it and advances the position **in one
//! atomic step** (one transaction in a database). Budgets, progress, the checkpoint
//! mirror of the position, lag and the task log fields are the loop's. A destination
//! owns its positions, in one place (the SQL uploader keeps them in the target, next to
//! the rows they describe); the loop only reads them through [`TableLoader::position`].
//!
//! Before loading, the loop checks the position is still true: a target table that
//! is gone although commits were loaded into it, or a position whose checkpoint the
//! user deleted (`anchovy checkpoints -D`), reloads the table from the first commit;
//! a position taken from another history of the upstream (its datastore was reset)
//! stops the table with the fix.
//!
//! An upstream the original tool wrote has no commit records: its data files stand
//! for them, numbered by name ([`crate::original`]), and the same loop loads them.

mod unit;

use async_trait::async_trait;

pub use self::unit::{BatchMap, Unit, UnitBatches, read_unit, snapshot_unit, unit_columns, units};
use crate::commit::read_commits;
use crate::context::{SessionCtx, TaskCtx};
use crate::datastore::Datastore;
use crate::error::{BoxError, Error};
use crate::options::TableOptions;
use crate::stream::Emitter;
use crate::tbl::Tbl;
use crate::tbl_store::TblStore;

/// Rows loaded in one unit at most by default (table option `max_rows_per_load`).
pub const UNIT_ROWS: u64 = 2_000_000;

/// The internal option of a `<table>__rejects` table: whose rejects it loads.
pub const REJECTS_OF: &str = "rejects_of";

/// One upstream table, as a destination loads it.
#[derive(Debug, Clone)]
pub struct LoadTable {
    /// The merged table (config over `$tables`), named `<upstream>.<table>`.
    pub tbl: Tbl,
    /// The upstream anchovy's id.
    pub upstream_id: String,
    /// `<user>/<upstream id>`: whose commits these are (positions are per upstream).
    pub upstream: String,
    /// `<user>/<uploader id>`: who loads.
    pub uploader: String,
    /// The table's name in the upstream.
    pub name: String,
    /// The table whose data files are loaded: `name`, or its rejects table.
    pub files_of: String,
    /// The upstream anchovy's area.
    pub ds: Datastore,
    /// Rows per batch when reading data files.
    pub batch_size: usize,
}

/// Where a table's load stands in its destination.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Position {
    /// The last upstream commit loaded (0: none).
    pub seq: u64,
    /// The upstream history it belongs to ([`crate::commit::origin`]); empty if unknown.
    pub origin: String,
    /// The uploader that moved it last.
    pub by: String,
}

/// What a load did, for the task log.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated.
    pub updated: u64,
    /// Rows deleted (replaced sets).
    pub deleted: u64,
    /// Rows that lost to a newer stored or incoming row.
    pub skipped: u64,
    /// Data files read.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Upstream commits loaded.
    pub commits: u64,
    /// Schema changes made (`created ...`, `added column ...`).
    pub schema_changes: Vec<String>,
}

/// The outcome of a unit.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    /// Loaded; the position is the unit's end.
    Done,
    /// Another uploader moved the position to `at` first; nothing of the unit was
    /// loaded (it is not loaded twice).
    Moved {
        /// The position found.
        at: u64,
        /// Who moved it.
        by: String,
    },
}

/// `anchovy migrate`: what the table tasks of an uploader do instead of loading.
///
/// For each table of an upstream the original tool wrote, the original uploader's
/// checkpoint `<upstream>.<table>.last.timestamp` (in the area of `from`) says which
/// data files it loaded: those modified before it. Their highest number becomes the
/// table's position in the target, so this uploader continues with the first file the
/// original did not load: nothing is loaded twice or skipped. The position is only
/// set where the target has none (or already the same); a table whose loaded files are
/// not a prefix of the files in name order (a file the original skipped lies below
/// one it loaded) is refused, naming the file.
#[derive(Debug, Clone)]
pub struct Migrate {
    /// The original uploader's id (its `$checkpoints` hold the timestamps).
    pub from: String,
    /// False: only say what would be done (`--dry-run`).
    pub apply: bool,
}

/// What [`TableLoader::adopt`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Adopted {
    /// The position was unset and is now the given one.
    Set,
    /// The position already was the given one.
    Same,
    /// The target holds another position for the table; nothing changed.
    Other(u64),
}

/// A system uploaders load into.
#[async_trait]
pub trait Destination: Send + Sync {
    /// Prepares the load of one table (no rows move yet).
    ///
    /// # Errors
    /// A bad table option, an unreachable destination.
    async fn table<'a>(
        &'a self,
        ctx: &TaskCtx,
        t: &LoadTable,
    ) -> Result<Box<dyn TableLoader + 'a>, BoxError>;
}

/// One table's load into a destination.
#[async_trait]
pub trait TableLoader: Send + Sync {
    /// The target as users see it (`"schema"."table"`), for logs.
    fn target(&self) -> String;

    /// The table's position.
    ///
    /// # Errors
    /// The destination cannot be read.
    async fn position(&self) -> Result<Position, BoxError>;

    /// Whether the target table exists.
    ///
    /// # Errors
    /// The destination cannot be read.
    async fn exists(&self) -> Result<bool, BoxError>;

    /// Deletes what was loaded for this upstream and the position (a reload follows).
    ///
    /// # Errors
    /// The destination refused.
    async fn reset(&self, exists: bool) -> Result<(), BoxError>;

    /// Sets the table's position to `seq` (stamped with `origin`) when the target
    /// holds none for it ([`Migrate`]), atomically.
    ///
    /// # Errors
    /// The destination refused.
    async fn adopt(&self, seq: u64, origin: &str) -> Result<Adopted, BoxError>;

    /// Evolves the schema for the unit's columns (create, add, widen), stages its
    /// files, merges them and advances the position from `expected` to `unit.end`
    /// (stamped with `origin`), atomically: all of it or none.
    ///
    /// # Errors
    /// Anything that stopped the unit; nothing of it is visible then.
    async fn load_unit(
        &self,
        unit: &Unit,
        expected: u64,
        origin: &str,
        totals: &mut Totals,
    ) -> Result<Loaded, BoxError>;
}

/// Splits a task name `<upstream>.<table>` by the known upstream ids (ids may contain
/// dots themselves; the longest matching id wins).
pub fn split_task_name<'a>(full: &'a str, upstreams: &[String]) -> Option<(&'a str, &'a str)> {
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

crate::table_options! {
    /// The table options every uploader reads.
    pub struct LoadOptions {
        /// rows per transaction unit of a load (default 2,000,000; a bigger commit is one
        /// unit)
        #[serde(default, deserialize_with = "crate::options::de::count")]
        pub max_rows_per_load: Option<u64>,
        /// also load the table's quarantined records (`on_bad_record: quarantine`) into
        /// `<table>__rejects`, appended (default false)
        #[serde(default, deserialize_with = "crate::options::de::flag")]
        pub load_rejects: bool,
        /// `merge` (default: what unique_by/set_by/sort_by say), `replace` (the newest
        /// snapshot becomes the whole table, atomically: a full read of sql.Downloader,
        /// else the newest commit's rows) or `replace_where` (each commit first deletes
        /// the stored rows whose `replace_by` value lies within the commit's range)
        #[serde(default)]
        pub mode: LoadMode,
        /// with mode replace_where: the column whose [min, max] over a commit's rows is
        /// deleted from the target before they are written
        #[serde(default)]
        pub replace_by: Option<String>,
        /// record every load of the table in the target's `_anchovies_loads` (commit
        /// range, rows, times, status, error), in the load's own transaction (default
        /// false)
        #[serde(default, deserialize_with = "crate::options::de::flag")]
        pub audit: bool,
    }
}

/// Whether a table's loads are recorded in the target (`audit: true`).
///
/// # Errors
/// [`Error::Data`] for a bad option value.
pub fn audit(tbl: &Tbl) -> Result<bool, Error> {
    Ok(load_options(tbl)?.audit)
}

/// How a load changes the target (`mode:`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    /// Append, upsert or replace sets, as the table's keys say.
    #[default]
    Merge,
    /// The newest snapshot replaces the table's content.
    Replace,
    /// Each commit replaces the stored rows within its `replace_by` range.
    ReplaceWhere,
}

/// A table's load mode, and for `replace_where` its range column.
///
/// # Errors
/// [`Error::Data`] for a bad value, or `replace_where` without `replace_by`.
pub fn load_mode(tbl: &Tbl) -> Result<(LoadMode, Option<String>), Error> {
    let o = load_options(tbl)?;
    match (o.mode, o.replace_by) {
        (LoadMode::ReplaceWhere, None) => Err(Error::data(
            "table option `replace_by`",
            format!(
                "table {} has mode: replace_where: name the column whose range each load replaces (replace_by: <column>)",
                tbl.name
            ),
        )),
        (LoadMode::ReplaceWhere, Some(c)) => Ok((LoadMode::ReplaceWhere, Some(c))),
        (_, Some(_)) => Err(Error::data(
            "table option `replace_by`",
            format!(
                "table {}: replace_by applies to mode: replace_where",
                tbl.name
            ),
        )),
        (m, None) => Ok((m, None)),
    }
}

/// The load options, as `anchovy plugins` lists them for every uploader.
pub const OPTIONS: crate::options::OptionGroup = crate::options::OptionGroup {
    title: "loads (every uploader)",
    options: <LoadOptions as TableOptions>::DOCS,
};

/// A table's load options; a bad one fails the table (exit 1), as a bad value in the
/// data would.
fn load_options(tbl: &Tbl) -> Result<LoadOptions, Error> {
    LoadOptions::of(tbl).map_err(|e| match e {
        Error::Config { what, message } => Error::data(format!("table option `{what}`"), message),
        other => other,
    })
}

/// The tables an uploader loads: every table of every upstream (`-U`), each merged
/// with the config entry of its name (`<table>` or `<upstream>.<table>`); with
/// `load_rejects: true` also `<table>__rejects`, the table's quarantined records.
///
/// # Errors
/// No upstream given; an upstream with no tables under `--strict`; a bad
/// `load_rejects`.
pub async fn discover(ctx: &TaskCtx) -> Result<Vec<Tbl>, BoxError> {
    let s = &ctx.session.settings;
    if s.upstream.is_empty() {
        // Exit 1, as before the seam (the README's exit code table).
        return Err(Error::data(
            "upstream",
            "an uploader loads the tables of upstream downloaders; pass -U <downloader id> (or ACHVY_UPSTREAM)",
        )
        .into());
    }
    let mut out = Vec::new();
    for up in &s.upstream {
        let tbls = TblStore::new(ctx.session.tbl_store(up)).list().await?;
        if tbls.is_empty() {
            crate::session::matched_nothing(
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
            let rejects = load_options(&merged)?.load_rejects;
            out.push(merged);
            if rejects {
                let mut r = Tbl::named(format!("{up}.{}__rejects", t.name));
                r.options.insert(REJECTS_OF.into(), t.name.clone().into());
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// `anchovy healthcheck` lines for an uploader's upstreams.
pub async fn upstream_health(ctx: &SessionCtx) -> Vec<(String, Result<String, String>)> {
    let mut out = Vec::new();
    for up in &ctx.settings.upstream {
        match TblStore::new(ctx.tbl_store(up)).list().await {
            Ok(t) => out.push((format!("upstream {up}"), Ok(format!("{} tables", t.len())))),
            Err(e) => out.push((format!("upstream {up}"), Err(e.chain()))),
        }
    }
    out
}

/// Loads the task's table into `dest`, unit by unit, each atomically with its
/// position (see the module doc).
///
/// # Errors
/// The first unit that failed (the units before it stay loaded), or a position that
/// belongs to another history of the upstream.
pub async fn load(
    dest: &dyn Destination,
    ctx: &TaskCtx,
    out: &mut Emitter,
) -> Result<(), BoxError> {
    let s = &ctx.session.settings;
    let full = ctx.tbl_name().to_string();
    let (up, name) = split_task_name(&full, &s.upstream).ok_or_else(|| {
        Error::data(
            "table option `table`",
            format!(
                "`{full}` is not <upstream>.<table> for any upstream of this uploader ({})",
                s.upstream.join(", ")
            ),
        )
    })?;
    let tbl = ctx.tbl();
    let t = LoadTable {
        tbl: tbl.clone(),
        upstream_id: up.to_string(),
        upstream: format!("{}/{up}", s.user),
        uploader: format!("{}/{}", s.user, s.id),
        name: name.to_string(),
        files_of: match tbl.option_str(REJECTS_OF) {
            Some(t) => crate::reject::rejects_table(&t),
            None => name.to_string(),
        },
        ds: ctx.session.upstream_store(up),
        batch_size: s.batch_size,
    };
    let max_rows = load_options(tbl)?.max_rows_per_load.unwrap_or(UNIT_ROWS);
    let (mode, _) = load_mode(tbl)?;
    let loader = dest.table(ctx, &t).await?;
    // The upstream's history: its commit records, or, when the original tool wrote it,
    // its data files by name ([`crate::original`]).
    let recorded = crate::commit::origin(&t.ds).await?;
    let original = match recorded {
        None => Some(
            crate::original::list(&t.ds, &t.files_of, s.original_settle, chrono::Utc::now())
                .await?,
        )
        .filter(crate::original::Listing::is_original),
        Some(_) => None,
    };
    if let Some(l) = &original {
        ctx.log("original_layout", true);
        ctx.log(
                "exactly_once",
                "no commit records: each of the original's data files loads once, by its name, once its name and modification time are older than original_settle (README: Mixing with the original)",
            );
        ctx.log("original_files_ignored", l.ignored);
    }
    let Position {
        seq: mut pos,
        origin: loaded_from,
        by,
    } = loader.position().await?;
    if let Some(m) = ctx.session.migrate.get() {
        return migrate(&*loader, ctx, &t, original.as_ref(), pos, m, out).await;
    }
    // The position is checked, not trusted: a position that says commits were loaded
    // into a table that is gone (dropped by hand), or a position of this uploader whose
    // checkpoint was deleted (`anchovy checkpoints -D`: "start over"), reloads the
    // table from the first commit; the datastore holds every commit.
    if pos > 0 {
        let exists = loader.exists().await?;
        // Deleted, not merely not yet written (a run killed between its load and its
        // checkpoint commit): the last change to the key in this uploader's own
        // commits is a deletion.
        let reset_by_user = by == t.uploader
            && ctx.checkpoint(&full).is_none()
            && read_commits(&ctx.session.store, 0)
                .await?
                .iter()
                .rev()
                .find_map(|c| c.checkpoints.get(&full))
                .is_some_and(|v| v.is_none());
        let had_rows = !exists
            && match &original {
                Some(l) => l.files.iter().any(|(seq, _, _)| *seq <= pos),
                // Commits collected by `anchovy gc` may have had rows of it.
                None => {
                    crate::commit::base(&t.ds).await?.is_some()
                        || read_commits(&t.ds, 0)
                            .await?
                            .iter()
                            .filter(|c| c.seq <= pos)
                            .any(|c| c.files.iter().any(|f| f.tbl == t.files_of))
                }
            };
        if reset_by_user || had_rows {
            tracing::warn!(
                table = %full,
                target = %loader.target(),
                position = pos,
                "{}; loading the table again from the first commit",
                if reset_by_user {
                    "this uploader's checkpoint of the table was deleted (anchovy checkpoints -D): its rows in the target are deleted"
                } else {
                    "the target table is missing although commits were loaded into it"
                }
            );
            ctx.log("reloaded_from_start", true);
            loader.reset(exists).await?;
            pos = 0;
        }
    }
    let origin = match original {
        Some(_) => Some(crate::original::ORIGIN.to_string()),
        None => recorded,
    };
    if pos > 0 && !loaded_from.is_empty() && origin.as_deref() != Some(loaded_from.as_str()) {
        return Err(Error::data(
            loader.target(),
            format!(
                "the upstream {} was reset: {} holds its commits up to {pos} from the history that began with {loaded_from}, but the datastore's history now {}; its commit numbers no longer mean the same data, so nothing was loaded. To load the new history from the start, delete the row of this table from the destination's positions (_anchovies_positions in a database; and the rows it loaded, or they may be loaded twice); to keep the old, point the uploader at the old datastore",
                t.upstream,
                loader.target(),
                origin.as_deref().map_or("has no commits".to_string(), |o| format!("begins with {o}")),
            ),
        )
        .into());
    }
    let origin = origin.unwrap_or_default();
    if original.is_none() {
        // Its lag is refreshed from the upstream's commits at every scrape.
        ctx.session.metrics.lag_from(&full, &t.ds);
    }
    let commits = match &original {
        Some(l) => {
            ctx.log("original_files_waiting", l.waiting(pos));
            crate::original::commits(&t.ds, &t.files_of, l, pos).await?
        }
        None => {
            // Commits after this position were collected by `anchovy gc`: their rows
            // cannot be loaded any more, and loading the rest would hide that.
            if let Some(b) = crate::commit::base(&t.ds).await?
                && pos < b.seq
            {
                return Err(Error::data(
                    format!("table {full}"),
                    format!(
                        "the target is at commit {pos} of upstream `{up}`, but `anchovy gc` collected its commits 1..={} on {} (it counted the uploaders that had passed them); this table cannot be loaded from commit {pos}: keep the target table (or restore it with its `_anchovies_positions` row), or load it from a new download of the source",
                        b.seq, b.collected_at
                    ),
                )
                .into());
            }
            read_commits(&t.ds, pos).await?
        }
    };
    let Some(last) = commits.last().map(|c| c.seq) else {
        ctx.log("position", pos);
        return Ok(());
    };
    let mut totals = Totals::default();
    let mut expected = pos;
    let planned = match mode {
        LoadMode::Merge => units(&commits, &t.files_of, last, max_rows),
        LoadMode::Replace => vec![snapshot_unit(&commits, &t.files_of, &t.name, last)],
        // One commit per unit: each replaces its own range.
        LoadMode::ReplaceWhere => units(&commits, &t.files_of, last, 0),
    };
    for (done, unit) in planned.into_iter().enumerate() {
        if ctx.session.stop_for_budget(&full, done as u64) {
            break;
        }
        let (rows0, bytes0) = (
            totals.inserted + totals.updated + totals.skipped,
            totals.bytes,
        );
        if let Loaded::Moved { at, by } = loader
            .load_unit(&unit, expected, &origin, &mut totals)
            .await?
        {
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
        out.checkpoint(
            &full,
            serde_json::json!({"seq": unit.end, "upstream": t.upstream}),
        )
        .await?;
    }
    if let Some(c) = commits
        .iter()
        .rev()
        .find(|c| c.files.iter().any(|f| f.tbl == t.files_of))
        && let Ok(at) = chrono::DateTime::parse_from_rfc3339(&c.committed_at)
    {
        let lag = chrono::Utc::now() - at.with_timezone(&chrono::Utc);
        ctx.log("lag_seconds", lag.num_milliseconds() as f64 / 1000.0);
    }
    ctx.log("target", loader.target());
    ctx.log("rows_inserted", totals.inserted);
    ctx.log("rows_updated", totals.updated);
    ctx.log("rows_deleted", totals.deleted);
    ctx.log("rows_skipped_older", totals.skipped);
    ctx.log("files_consumed", totals.files);
    ctx.log("bytes_read", totals.bytes);
    ctx.log("commits_consumed", totals.commits);
    ctx.log("position", expected);
    ctx.log("schema_changes", totals.schema_changes);
    Ok(())
}

/// The original uploader's checkpoint of a table: the modification time after which
/// it has not loaded the upstream's files.
pub fn original_checkpoint_key(upstream: &str, table: &str) -> String {
    format!("{upstream}.{table}.last.timestamp")
}

/// One table of `anchovy migrate` (see [`Migrate`]).
async fn migrate(
    loader: &dyn TableLoader,
    ctx: &TaskCtx,
    t: &LoadTable,
    original: Option<&crate::original::Listing>,
    pos: u64,
    m: &Migrate,
    out: &mut Emitter,
) -> Result<(), BoxError> {
    let full = ctx.tbl_name().to_string();
    ctx.log("migrate_from", m.from.clone());
    ctx.log("migrate_applied", false);
    if original.is_none() {
        ctx.log(
            "migrate",
            "the upstream has commit records: the original tool did not write it, nothing to migrate",
        );
        return Ok(());
    }
    let key = original_checkpoint_key(&t.upstream_id, &t.name);
    let s = &ctx.session.settings;
    let from = ctx.session.datastore.for_anchovy(&s.user, &m.from);
    let Some(cp) = crate::original::checkpoints(&from)
        .await?
        .into_iter()
        .find(|c| c.key == key)
    else {
        ctx.log(
            "migrate",
            format!(
                "no checkpoint {key} in {}: the original uploader never loaded this table; it loads from the first file",
                from.location()
            ),
        );
        return Ok(());
    };
    let ts = chrono::DateTime::parse_from_rfc3339(cp.text.trim())
        .or_else(|_| chrono::DateTime::parse_from_str(cp.text.trim(), "%Y-%m-%dT%H:%M:%S%.f%:z"))
        .map_err(|e| {
            Error::data(
                format!("{}: {key}", from.location()),
                format!("`{}` is not the original's timestamp: {e}", cp.text),
            )
        })?
        .with_timezone(&chrono::Utc);
    ctx.log("migrate_checkpoint", cp.text.clone());
    // Every file, settled or not: the original loaded by modification time only.
    let all = crate::original::list(
        &t.ds,
        &t.files_of,
        std::time::Duration::ZERO,
        chrono::DateTime::<chrono::Utc>::MAX_UTC,
    )
    .await?;
    let loaded: Vec<&(u64, crate::datastore::Entry, bool)> = all
        .files
        .iter()
        .filter(|(_, e, _)| e.modified < ts)
        .collect();
    let target = loaded.last().map_or(0, |(seq, _, _)| *seq);
    if let Some((_, skipped, _)) = all
        .files
        .iter()
        .find(|(seq, e, _)| *seq < target && e.modified >= ts)
    {
        return Err(Error::data(
            loader.target(),
            format!(
                "the original uploader loaded files up to {} by modification time, but {} lies below it in name order and was modified after ({}): a position cannot say which files are loaded; load this table from the start instead (a new target table), or move the original's checkpoint {key}",
                loaded.last().map_or("", |(_, e, _)| e.key.as_str()),
                skipped.key,
                skipped.modified.to_rfc3339()
            ),
        )
        .into());
    }
    ctx.log("migrate_files_loaded", loaded.len());
    ctx.log("migrate_files_left", all.files.len() - loaded.len());
    ctx.log("migrate_position", target);
    if !m.apply {
        ctx.log(
            "migrate",
            format!(
                "dry run: would set the position of {} to {target} (now {pos})",
                loader.target()
            ),
        );
        return Ok(());
    }
    match loader.adopt(target, crate::original::ORIGIN).await? {
        Adopted::Set | Adopted::Same => {
            ctx.log("migrate_applied", true);
            out.checkpoint(
                &full,
                serde_json::json!({"seq": target, "upstream": t.upstream}),
            )
            .await?;
            Ok(())
        }
        Adopted::Other(at) => Err(Error::data(
            loader.target(),
            format!(
                "the target already holds position {at} for this table (the original's checkpoint says {target}); nothing changed. This uploader has loaded it already: run it, not migrate"
            ),
        )
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile `mode`/`replace_by` values fail the table naming the option and the fix.
    #[test]
    fn load_modes_refuse_bad_values_by_name() {
        let tbl = |opts: serde_json::Value| Tbl::from_json("t", opts).unwrap();
        let err = |opts| load_mode(&tbl(opts)).unwrap_err().to_string();
        assert_eq!(
            load_mode(&tbl(serde_json::json!({}))).unwrap(),
            (LoadMode::Merge, None)
        );
        assert_eq!(
            load_mode(&tbl(
                serde_json::json!({"mode": "replace_where", "replace_by": "day"})
            ))
            .unwrap(),
            (LoadMode::ReplaceWhere, Some("day".into()))
        );
        let e = err(serde_json::json!({"mode": "swap"}));
        assert!(e.contains("mode") && e.contains("replace_where"), "{e}");
        let e = err(serde_json::json!({"mode": 3}));
        assert!(e.contains("mode"), "{e}");
        let e = err(serde_json::json!({"mode": "replace_where"}));
        assert!(e.contains("replace_by: <column>"), "{e}");
        let e = err(serde_json::json!({"mode": "replace", "replace_by": "day"}));
        assert!(e.contains("applies to mode: replace_where"), "{e}");
    }

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
