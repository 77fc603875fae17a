//! One table's load into a SQL database: the [`TableLoader`] of `sql.Uploader`.
//!
//! Each unit is one transaction: lock the table's position row (it must still be
//! where the loop expects it), evolve the schema (create, add, widen: DDL first and
//! outside the transaction, as MySQL commits on DDL), stage the unit's files (COPY on
//! PostgreSQL, multi-row INSERTs elsewhere), merge with set-based statements, advance
//! the position, commit. Column names are mapped to names the target can hold
//! ([`Names`]).

use std::sync::Arc;

use anchovy_core::destination::{
    self, Adopted, Destination, LoadTable, Loaded, Position, TableLoader, Totals, Unit,
    UnitBatches, unit_columns,
};
use anchovy_core::{BoxError, ColType, Datastore, TaskCtx, Tbl, async_trait};

use super::copy_binary::PgType;
use super::db::{self, Db};
use super::dialect::{self, Dialect, MergeSpec, TableRef, widen};
use super::schema_for;
use super::stage::Staged;
use crate::error::PluginError;

anchovy_core::table_options! {
    /// The SQL uploader's own table options.
    pub struct SqlOptions {
        /// with unique_by: keep every version of a key (valid_from/valid_to) instead of
        /// overwriting (default false)
        #[serde(default, deserialize_with = "anchovy_core::options::de::flag")]
        pub history: bool,
        /// with history: drop superseded versions older than this (12h, 30d)
        #[serde(default, deserialize_with = "anchovy_core::options::de::duration")]
        pub deleted_ttl: Option<std::time::Duration>,
    }
}

/// The `history` and `deleted_ttl` table options.
fn history_option(tbl: &Tbl) -> Result<Option<Option<u64>>, PluginError> {
    use anchovy_core::TableOptions;
    let o = SqlOptions::of(tbl).map_err(PluginError::from_option)?;
    let (on, ttl) = (o.history, o.deleted_ttl.map(|d| d.as_secs()));
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
) -> Result<(), anchovy_core::Error> {
    for k in keys {
        let i = b.schema.index_of(k);
        if let Some(n) = b.rows.iter().position(|r| {
            i.is_none_or(|i| matches!(r.get(i), None | Some(anchovy_core::Value::Null)))
        }) {
            return Err(anchovy_core::Error::data(
                format!("{file}:{} (commit {seq})", row0 + n as u64 + 1),
                format!(
                    "the row has no value in unique_by column `{k}`; a row without its key cannot be merged, so nothing of this load was written. Take `{k}` out of unique_by in the uploader's tbls:"
                ),
            ));
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

/// A SQL database as a [`Destination`].
pub(super) struct SqlDestination<'d> {
    pub(super) db: &'d Db,
}

#[async_trait]
impl Destination for SqlDestination<'_> {
    async fn table<'a>(
        &'a self,
        ctx: &TaskCtx,
        t: &LoadTable,
    ) -> Result<Box<dyn TableLoader + 'a>, BoxError> {
        let d = self.db.dialect();
        let tbl = &t.tbl;
        let audit = destination::audit(tbl)?;
        if audit {
            // Outside any load's transaction (MySQL commits implicitly on DDL).
            if let Err(e) = self.db.exec(&d.create_loads()).await
                && !e.is_concurrent_ddl()
            {
                return Err(e.into());
            }
        }
        Ok(Box::new(Job {
            db: self.db,
            d,
            ds: t.ds.clone(),
            uploader: t.uploader.clone(),
            upstream: t.upstream.clone(),
            name: t.name.clone(),
            target: TableRef {
                schema: d.fit(&schema_for(&ctx.session, &t.upstream_id)),
                name: d.fit(&t.name),
            },
            spec: MergeSpec {
                keys: tbl.unique_by.0.clone(),
                sets: tbl.set_by.0.clone(),
                sort: tbl.sort_by.0.clone(),
                sort_types: Vec::new(),
            },
            batch_size: t.batch_size,
            history: match (history_option(tbl)?, destination::load_mode(tbl)?.0) {
                (Some(_), m) if m != destination::LoadMode::Merge => {
                    return Err(PluginError::Option {
                        key: "history".into(),
                        message: format!(
                            "table {} keeps every version (history: true) but its mode (replace, replace_where) deletes stored rows; choose one",
                            tbl.name
                        ),
                    }
                    .into());
                }
                (h, _) => h,
            },
            replace_by: destination::load_mode(tbl)?.1,
            original_layout: std::sync::atomic::AtomicBool::new(false),
            audit,
            tbl: tbl.clone(),
        }))
    }
}

/// One table's load into the database.
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
    /// `mode: replace_where`: the column whose range each commit replaces.
    replace_by: Option<String>,
    /// The history table has the original tool's layout (`_del` a number: epoch
    /// microseconds, not a timestamp); found when the table is first seen.
    original_layout: std::sync::atomic::AtomicBool,
    /// `audit: true`: every load recorded in `_anchovies_loads`.
    audit: bool,
    tbl: Tbl,
}

#[async_trait]
impl TableLoader for Job<'_> {
    fn target(&self) -> String {
        self.d.table(&self.target)
    }

    async fn position(&self) -> Result<Position, BoxError> {
        let (seq, origin, by) = self
            .db
            .position(&self.d.table(&self.target), &self.upstream)
            .await?;
        Ok(Position { seq, origin, by })
    }

    async fn exists(&self) -> Result<bool, BoxError> {
        Ok(self.db.columns(&self.target).await?.is_some())
    }

    async fn reset(&self, exists: bool) -> Result<(), BoxError> {
        Ok(self
            .db
            .reset(
                &self.target,
                &self.d.table(&self.target),
                &self.upstream,
                exists,
            )
            .await?)
    }

    async fn adopt(&self, seq: u64, origin: &str) -> Result<Adopted, BoxError> {
        let target = self.d.table(&self.target);
        let mut tx = self.db.begin().await?;
        let (cur, _) = tx
            .lock_position(&target, &self.upstream, &self.name, &self.uploader)
            .await?;
        let r = match cur {
            c if c == seq => Adopted::Same,
            0 => {
                tx.set_position(&target, &self.upstream, seq, &self.uploader, origin)
                    .await?;
                Adopted::Set
            }
            c => Adopted::Other(c),
        };
        tx.commit().await?;
        Ok(r)
    }

    async fn load_unit(
        &self,
        unit: &Unit,
        expected: u64,
        origin: &str,
        totals: &mut Totals,
    ) -> Result<Loaded, BoxError> {
        let started = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let before = totals.clone();
        let r = self.load(unit, expected, origin, totals, &started).await;
        if let (true, Err(e)) = (self.audit, &r) {
            // The load rolled back: its record is written on its own, after it.
            let rec = self.record(unit, expected, &before, totals, &started, Some(e));
            let written = async {
                let mut tx = self.db.begin().await?;
                tx.record_load(&rec).await?;
                tx.commit().await
            }
            .await;
            if let Err(w) = written {
                tracing::warn!(table = %self.name, error = %anchovy_core::error::render_chain(&w), "the failed load could not be recorded in _anchovies_loads");
            }
        }
        Ok(r?)
    }
}

impl Job<'_> {
    /// One transaction: lock the position (it must still be `expected`), stage the
    /// unit's files, merge, advance the position, commit. [`Loaded::Moved`] when
    /// another uploader moved the position past `expected` meanwhile (nothing of the
    /// unit is loaded then).
    async fn load(
        &self,
        unit: &Unit,
        expected: u64,
        origin: &str,
        totals: &mut Totals,
        started: &str,
    ) -> Result<Loaded, PluginError> {
        let before = totals.clone();
        let (cols, names) = if unit.files.is_empty() {
            (Vec::new(), Names::default())
        } else {
            let src = unit_columns(unit, &self.tbl);
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
        // `mode: replace`: the snapshot replaces what is stored, in the transaction that
        // writes it (readers see the old rows or the new, never none or half).
        let empty_first = unit.replace && self.db.columns(&self.target).await?.is_some();
        let mut tx = self.db.begin().await?;
        let (at, by) = tx
            .lock_position(&target, &self.upstream, &self.name, &self.uploader)
            .await?;
        if at > expected {
            drop(tx); // rolled back: nothing of this run was written
            return Ok(Loaded::Moved { at, by });
        }
        if at != expected {
            return Err(PluginError::Conflict {
                message: format!(
                    "the position of {} in {target} went back from commit {expected} to {at} while loading (changed by {by}); nothing was loaded, rerun to continue",
                    self.name
                ),
            });
        }
        if empty_first {
            totals.deleted += tx.exec(&format!("DELETE FROM {target}")).await?;
        }
        if !unit.files.is_empty() {
            self.stage_and_merge(&mut tx, &cols, &names, unit, totals)
                .await?;
        }
        tx.set_position(&target, &self.upstream, unit.end, &self.uploader, origin)
            .await?;
        if self.audit {
            let rec = self.record(unit, expected, &before, totals, started, None);
            tx.record_load(&rec).await?;
        }
        anchovy_core::failpoint::hit("upload.before_commit")?;
        tx.commit().await?;
        anchovy_core::failpoint::hit("upload.after_commit")?;
        totals.commits += unit.commits;
        Ok(Loaded::Done)
    }

    /// The `_anchovies_loads` row of a load of `unit` from position `expected`: what
    /// `totals` gained since `before`, or for a failed load (`error`) nothing but the
    /// error.
    fn record(
        &self,
        unit: &Unit,
        expected: u64,
        before: &Totals,
        totals: &Totals,
        started: &str,
        error: Option<&PluginError>,
    ) -> crate::sql::db::LoadRecord {
        let ok = error.is_none();
        let delta = |now: u64, then: u64| if ok { now.saturating_sub(then) } else { 0 };
        crate::sql::db::LoadRecord {
            anchovy: self.uploader.clone(),
            upstream: self.upstream.clone(),
            tbl: self.name.clone(),
            target: self.d.table(&self.target),
            first_seq: expected + 1,
            last_seq: unit.end,
            inserted: delta(totals.inserted, before.inserted),
            updated: delta(totals.updated, before.updated),
            deleted: delta(totals.deleted, before.deleted),
            skipped: delta(totals.skipped, before.skipped),
            files: delta(totals.files, before.files),
            started_at: started.to_string(),
            status: if ok { "ok" } else { "error" },
            error: error.map(|e| {
                anchovy_core::secret::redact(&anchovy_core::error::render_chain(e)).into_owned()
            }),
        }
    }

    /// The unit's batches, renamed to target columns and checked for NULL keys, read
    /// in their own task ([`destination::read_unit`]).
    fn read_unit(&self, unit: &Unit, names: &Names) -> (UnitBatches, tokio::task::JoinHandle<()>) {
        let keys = names.spec(&self.spec).keys;
        let names = names.clone();
        let map: destination::BatchMap = Arc::new(move |b, file, seq, row0| {
            let b = names.apply(b);
            null_keys(&b, &keys, file, seq, row0)?;
            Ok(b)
        });
        destination::read_unit(&self.ds, unit, self.batch_size, map)
    }

    /// Writes the unit's rows into `into` (the target or a staging table; `with_ord`
    /// for the latter) and returns how many. On PostgreSQL the COPY is binary when
    /// every column's type allows it; should a value have no exact binary form (data
    /// files from before a column got its type), the COPY is rolled back to a
    /// savepoint and the unit is read again and sent as CSV, so the server's own
    /// parser decides as it always did.
    async fn stage_unit(
        &self,
        tx: &mut db::Tx,
        into: &str,
        cols: &[(String, ColType)],
        with_ord: bool,
        unit: &Unit,
        names: &Names,
    ) -> Result<i64, PluginError> {
        let mut columns: Vec<&str> = cols.iter().map(|(c, _)| c.as_str()).collect();
        if with_ord {
            columns.extend([dialect::ORD, dialect::VER]);
        }
        let types = tx.copy_types(into, &columns).await?;
        // The order and version columns of a staging table go as bigints.
        let types = types.filter(|t| t[cols.len()..].iter().all(|t| *t == PgType::Int8));
        if let Some(types) = types {
            tx.exec("SAVEPOINT anchovies_binary").await?;
            let (mut rx, reader) = self.read_unit(unit, names);
            let r = tx.stage_binary(into, cols, with_ord, &mut rx, &types).await;
            reader.abort();
            match r? {
                Staged::Rows(n) => {
                    tx.exec("RELEASE SAVEPOINT anchovies_binary").await?;
                    return Ok(n);
                }
                Staged::NotBinary { column } => {
                    tracing::debug!(table = %self.name, %column, "a value has no exact binary form: loading as CSV");
                    tx.exec("ROLLBACK TO SAVEPOINT anchovies_binary").await?;
                }
            }
        }
        let (mut rx, reader) = self.read_unit(unit, names);
        let r = tx.stage(into, cols, with_ord, &mut rx).await;
        reader.abort();
        r
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
        // `mode: replace_where` stages first: the range to replace is the staged rows'.
        let range = self.replace_by.as_ref().map(|c| names.get(c));
        // Append tables need no staging: the rows go straight into the target.
        if spec.keys.is_empty() && spec.sets.is_empty() && self.history.is_none() && range.is_none()
        {
            let n = self
                .stage_unit(tx, &d.table(&self.target), cols, false, unit, names)
                .await?;
            totals.inserted += n as u64;
            return Ok(());
        }
        // A keyed load into an empty table (the first backfill) is written straight into
        // the target too; if the data repeats a key, it falls back to stage-and-merge.
        if spec.sets.is_empty() && self.history.is_none() && range.is_none() {
            let probe = format!(
                "SELECT COUNT(*) FROM (SELECT 1 FROM {} LIMIT 1) _e",
                d.table(&self.target)
            );
            if tx.scalar(&probe).await? == 0 {
                tx.exec("SAVEPOINT anchovies_direct").await?;
                let r = self
                    .stage_unit(tx, &d.table(&self.target), cols, false, unit, names)
                    .await;
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
        let ord = self
            .stage_unit(tx, &d.ident(&stage), cols, true, unit, names)
            .await?;
        tracing::debug!(rows = ord, ms = t0.elapsed().as_millis() as u64, table = %self.name, "staged");
        if let Some(c) = &range {
            totals.deleted += tx.exec(&d.delete_range(&self.target, &stage, c)).await?;
        }
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
            let original = self
                .original_layout
                .load(std::sync::atomic::Ordering::Relaxed);
            for (k, ver) in vers.into_iter().enumerate() {
                let (stmts, supersede, insert) = d.merge_history(
                    &self.target,
                    &stage,
                    &names,
                    spec,
                    unique,
                    (ver, ttl),
                    original.then_some(k),
                );
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
            .chain(&self.replace_by)
        {
            if !cols.iter().any(|(c, _)| c == k) {
                return Err(PluginError::Option {
                    key: "unique_by/set_by/sort_by/replace_by".into(),
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
        // The original tool's history tables keep `_del` as epoch microseconds.
        let numeric_del = existing.iter().any(|(c, t)| {
            c == dialect::DEL && matches!(d.col_type_of(t), ColType::Int | ColType::Decimal)
        });
        self.original_layout
            .store(numeric_del, std::sync::atomic::Ordering::Relaxed);
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
