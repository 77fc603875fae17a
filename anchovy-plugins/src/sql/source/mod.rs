//! `sql.Downloader`: tables and queries of PostgreSQL, MySQL/MariaDB and SQLite into
//! the datastore, incrementally by a cursor column or whole.
//!
//! - **What.** Each table reads `table: schema.name` (default: the entry's name, in the
//!   connection's default schema), or `query: SELECT ...`, from the connection named by
//!   `connection:` (default: the default connection, `ACHVY_CNXN__URI`). An entry with
//!   `include:` patterns (`public.*`, `sales.order_*`) is a selector: every source
//!   table matching one and no `exclude:` pattern becomes a table of the run (named
//!   after the source table; `<schema>_<table>` outside the default schema), so a new
//!   source table is picked up by the next run, with the selector's other options.
//! - **Keys and types** come from the source's catalog ([`catalog`]): the primary key
//!   becomes `unique_by` unless config.yaml sets one, and each column's type is
//!   recorded in `$tables` and decides how its values decode.
//! - **Incremental** with `cursor: <column>`: a run reads the rows whose cursor is
//!   greater than the committed value (minus `lookback:`), in cursor order, and commits
//!   the cursor in-band with the rows it covers, at most every `commit_interval`, only
//!   where the value changes (rows tying with the committed value are never skipped).
//!   Rows whose cursor is NULL are read by full reads only (the first run, or after
//!   the checkpoint is deleted), first. Without a cursor, every run reads the table
//!   whole (full refresh) and commits once, at the end, with a snapshot marker the
//!   uploader's `mode: replace` uses.
//! - **Consistent and bounded.** Each table is read in one read-only transaction
//!   (PostgreSQL REPEATABLE READ, MySQL WITH CONSISTENT SNAPSHOT, SQLite a read
//!   transaction), streamed in batches over the pipeline's bounded channel; statements
//!   are bounded by the connection's `STATEMENT_TIMEOUT`. Values are always bound,
//!   never pasted into SQL.

pub mod catalog;
pub mod cursor;
mod read;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anchovy_core::operator::OperatorKind;
use anchovy_core::tbl::ColSelect;
use anchovy_core::{
    BatchBuilder, BoxError, Emitter, Operator, OperatorSpec, OptionDoc, Schema, SessionCtx, Source,
    TableOptions, TaskCtx, TaskType, Tbl, Value, async_trait,
};
use futures::TryStreamExt;

use self::catalog::{Column, Read, SourceTable, safe};
use self::cursor::{Bound, CursorKind, CursorState, Lookback};
use super::db::{Db, Role, db_err};
use super::dialect::Dialect;
use crate::error::PluginError;

anchovy_core::table_options! {
    /// The options of a `sql.Downloader` table.
    pub struct SqlSourceOptions {
        /// the connection id (default: the default connection, `ACHVY_CNXN__URI`):
        /// `ACHVY_CNXN__<ID>__URI=postgres://... | mysql://... | sqlite://...`
        #[serde(default)]
        pub connection: Option<String>,
        /// the source table, `schema.name` or `name` (default: the entry's name, in
        /// the connection's default schema: `public`, the URL's database, `main`)
        #[serde(default)]
        pub table: Option<String>,
        /// a SELECT to read instead of a table (the cursor condition is added around
        /// it, with the committed value bound)
        #[serde(default)]
        pub query: Option<String>,
        /// the column that orders new rows (timestamp, date, integer, numeric, text):
        /// a run reads rows past the committed value; none = the whole table every run
        #[serde(default)]
        pub cursor: Option<String>,
        /// with cursor: re-read this far back (`10m`, `1d`, or a number for numeric
        /// cursors) to catch rows committed late in the source; unique_by turns the
        /// overlap into no-ops in the uploader
        #[serde(default)]
        pub lookback: Option<serde_json::Value>,
        /// a selector: source tables matching any of these patterns (`public.*`,
        /// `sales.order_*`) become tables of the run, with this entry's options
        #[serde(default)]
        pub include: Option<ColSelect>,
        /// with include: source tables matching any of these patterns are left out
        #[serde(default)]
        pub exclude: Option<ColSelect>,
        /// accepted for the original tool's configs: columns and keys always come from
        /// the source's catalog here (`false` is refused)
        #[serde(default)]
        pub autodiscover: Option<bool>,
    }
}

/// The registry entry.
pub const SPEC: OperatorSpec = OperatorSpec {
    name: "sql.Downloader",
    description: "Downloads tables and queries from PostgreSQL, MySQL/MariaDB or SQLite (connection per table; default ACHVY_CNXN__URI), incrementally by a cursor column or whole, each table in one consistent snapshot, with keys and types from the source's catalog; `include:` patterns pick up new source tables.",
    kind: OperatorKind::Downloader,
    connections: &[],
    env_vars: &[
        OptionDoc {
            key: "ACHVY_CNXN__URI",
            doc: "postgres://, mysql:// or sqlite:// URL of the default source connection (ACHVY_CNXN__<ID>__URI for `connection: <id>`); PG* variables fill what a postgres:// URL leaves out, as libpq does",
        },
        OptionDoc {
            key: "ACHVY_CNXN__<ID>__STATEMENT_TIMEOUT",
            doc: "the longest one statement may run on that connection (30s, 10m; default: no limit)",
        },
        OptionDoc {
            key: "ACHVY_CNXN__<ID>__<PARAM>",
            doc: "any other attribute is passed to the driver as a URL parameter: SSLMODE, SSLROOTCERT, SSLCERT, SSLKEY (PostgreSQL); SSL_MODE, SSL_CA (MySQL, as ssl-mode, ssl-ca); ...",
        },
    ],
    table_options: &[anchovy_core::OptionGroup {
        title: "",
        options: <SqlSourceOptions as TableOptions>::DOCS,
    }],
    build: |_| Ok(Arc::new(Downloader::default())),
};

/// Rows between two looks at the run budget and the cursor checkpoint, at least.
const CHECKPOINT_ROWS: usize = 10_000;

/// The operator: one connection pool per connection id, opened on first use.
#[derive(Default)]
pub struct Downloader {
    pools: Arc<tokio::sync::Mutex<HashMap<String, Db>>>,
}

/// The URL of connection `id` with its other attributes as URL parameters, and its
/// statement timeout.
///
/// # Errors
/// [`anchovy_core::Error::MissingConnection`] naming the variables to set;
/// [`PluginError::Option`] for a bad timeout.
pub fn source_url(sess: &SessionCtx, id: &str) -> Result<(String, Option<Duration>), PluginError> {
    let c = sess.connection(id)?;
    let uri = match c.get("uri").or_else(|| c.get("url")) {
        Some(u) => u.to_string(),
        None => c.require("uri")?.to_string(),
    };
    let var = |a: &str| anchovy_core::connection::var_name(id, a);
    let timeout = match c.get("statement_timeout") {
        None => None,
        Some(t) => Some(
            anchovy_core::config::parse_duration(t)
                .or_else(|| t.trim().parse::<u64>().ok().map(Duration::from_millis))
                .ok_or_else(|| PluginError::Option {
                    key: var("STATEMENT_TIMEOUT"),
                    message: format!("`{t}` is not a duration (30s, 10m) or milliseconds"),
                })?,
        ),
    };
    let mut url = uri;
    for a in c.attr_names() {
        if matches!(a, "uri" | "url" | "statement_timeout" | "jsondata") {
            continue;
        }
        let v = c.get(a).unwrap_or_default();
        // MySQL's parameters are spelt with dashes (ssl-mode, ssl-ca).
        let name = if url.starts_with("mysql") || url.starts_with("mariadb") {
            a.replace('_', "-")
        } else {
            a.to_string()
        };
        let encoded: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
        // The secret is registered as given; its encoded form, which messages about the
        // URL would show, is a secret too.
        if anchovy_core::secret::is_secret_attr(a) {
            anchovy_core::secret::register(&encoded);
        }
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&name);
        url.push('=');
        url.push_str(&encoded);
    }
    Ok((url, timeout))
}

impl Downloader {
    /// The pool of connection `id`, connecting on first use.
    async fn pool(&self, sess: &SessionCtx, id: &str) -> Result<Db, PluginError> {
        let mut pools = self.pools.lock().await;
        if let Some(db) = pools.get(id) {
            return Ok(db.clone());
        }
        let (url, statement_timeout) = source_url(sess, id)?;
        let key = anchovy_core::connection::var_name(id, "URI");
        let db = Db::connect_as(&url, &key, Role::Source { statement_timeout }).await?;
        tracing::info!(connection = id, source = %super::db::display_url(&url), "connected to the source database");
        pools.insert(id.to_string(), db.clone());
        Ok(db)
    }

    /// The run's tables: every explicit entry, with the source's columns and key laid
    /// under it, and every table a selector matches. An entry whose source cannot be
    /// described is kept as configured (its task fails with the reason).
    async fn discover(&self, sess: &SessionCtx) -> Vec<Tbl> {
        let mut out: BTreeMap<String, Tbl> = BTreeMap::new();
        // Each connection's catalog is listed once per discovery, whatever the tables.
        let mut listed: HashMap<String, Vec<catalog::TableInfo>> = HashMap::new();
        let explicit: Vec<&Tbl> = sess
            .config_tbls
            .iter()
            .filter(|t| !is_selector(t))
            .collect();
        for cfg in &explicit {
            let t = match self.describe(sess, cfg, &mut listed).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(table = %cfg.name, "cannot describe the table at the source: {}", anchovy_core::error::render_chain(&e));
                    (*cfg).clone()
                }
            };
            out.insert(t.name.clone(), t);
        }
        for sel in sess.config_tbls.iter().filter(|t| is_selector(t)) {
            match self.expand(sess, sel).await {
                Ok(found) => {
                    for t in found {
                        if out.contains_key(&t.name) {
                            tracing::warn!(table = %t.name, selector = %sel.name, "the selector's table is also configured or selected before: the first entry wins");
                            continue;
                        }
                        out.insert(t.name.clone(), t);
                    }
                }
                // The selector becomes a task of its own, which fails with the reason.
                Err(e) => {
                    tracing::warn!(selector = %sel.name, "cannot list the source's tables: {}", anchovy_core::error::render_chain(&e));
                    out.insert(sel.name.clone(), sel.clone());
                }
            }
        }
        out.into_values().collect()
    }

    /// An explicit entry with the source's columns and primary key beneath it.
    async fn describe(
        &self,
        sess: &SessionCtx,
        cfg: &Tbl,
        listed: &mut HashMap<String, Vec<catalog::TableInfo>>,
    ) -> Result<Tbl, PluginError> {
        let o = options(cfg)?;
        let db = self.pool(sess, o.connection_id()).await?;
        let rel = Relation::of(&db, cfg, &o).await?;
        let cols = catalog::columns(&db, &rel.sql, &rel.what, rel.table.as_ref()).await?;
        let mut t = Tbl::named(&cfg.name);
        t.columns = cols
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.col_type?)))
            .collect();
        if let Some(st) = &rel.table {
            let id = o.connection_id().to_string();
            if !listed.contains_key(&id) {
                listed.insert(id.clone(), catalog::list_tables(&db).await?);
            }
            let key = listed[&id]
                .iter()
                .find(|i| &i.table == st)
                .map(|i| i.key.clone());
            t.unique_by = ColSelect(key.unwrap_or_default());
        }
        Ok(cfg.merged_over(&t))
    }

    /// The tables a selector matches, named and described.
    async fn expand(&self, sess: &SessionCtx, sel: &Tbl) -> Result<Vec<Tbl>, PluginError> {
        let o = options(sel)?;
        let db = self.pool(sess, o.connection_id()).await?;
        let default = catalog::default_schema(&db).await?;
        let include = patterns(o.include.as_ref());
        let exclude = patterns(o.exclude.as_ref());
        let mut out = Vec::new();
        for info in catalog::list_tables(&db).await? {
            let full = info.table.to_string();
            let hit = |ps: &[wildmatch::WildMatch]| {
                ps.iter().any(|p| {
                    p.matches(&full)
                        || (info.table.schema == default && p.matches(&info.table.name))
                })
            };
            if !hit(&include) || hit(&exclude) {
                continue;
            }
            let name = if info.table.schema == default {
                info.table.name.clone()
            } else {
                format!("{}_{}", info.table.schema, info.table.name)
            };
            let mut t = sel.clone();
            t.name = name;
            t.options.remove("include");
            t.options.remove("exclude");
            t.options.insert("table".into(), full.clone().into());
            let cols = catalog::columns(
                &db,
                &info.table.sql(db.dialect()),
                &format!("table {full}"),
                Some(&info.table),
            )
            .await?;
            for c in cols {
                if let Some(ty) = c.col_type {
                    t.columns.entry(c.name).or_insert(ty);
                }
            }
            if t.unique_by.is_empty() {
                t.unique_by = ColSelect(info.key);
            }
            out.push(t);
        }
        Ok(out)
    }
}

fn is_selector(t: &Tbl) -> bool {
    t.options.contains_key("include")
}

fn patterns(p: Option<&ColSelect>) -> Vec<wildmatch::WildMatch> {
    p.map(|c| c.0.iter().map(|s| wildmatch::WildMatch::new(s)).collect())
        .unwrap_or_default()
}

fn options(t: &Tbl) -> Result<SqlSourceOptions, PluginError> {
    let o = SqlSourceOptions::of(t).map_err(PluginError::from_option)?;
    if o.autodiscover == Some(false) {
        return Err(PluginError::Option {
            key: format!("tbls.{}.autodiscover", t.name),
            message: "sql.Downloader always takes columns and keys from the source's catalog; remove `autodiscover: false` (set `columns:`/`unique_by:` to override what it finds)".into(),
        });
    }
    if o.table.is_some() && o.query.is_some() {
        return Err(PluginError::Option {
            key: format!("tbls.{}.query", t.name),
            message: "a table reads either `table:` or `query:`, not both".into(),
        });
    }
    if o.include.is_none() && o.exclude.is_some() {
        return Err(PluginError::Option {
            key: format!("tbls.{}.exclude", t.name),
            message: "exclude: applies to a selector; add `include:` patterns".into(),
        });
    }
    if o.lookback.is_some() && o.cursor.is_none() {
        return Err(PluginError::Option {
            key: format!("tbls.{}.lookback", t.name),
            message: "lookback: re-reads a window behind the cursor; add `cursor:`".into(),
        });
    }
    Ok(o)
}

impl SqlSourceOptions {
    fn connection_id(&self) -> &str {
        self.connection
            .as_deref()
            .unwrap_or(anchovy_core::connection::DEFAULT_ID)
    }
}

/// What a table reads: a quoted relation or `(<query>)`, and how messages name it.
struct Relation {
    sql: String,
    what: String,
    table: Option<SourceTable>,
}

impl Relation {
    async fn of(db: &Db, t: &Tbl, o: &SqlSourceOptions) -> Result<Relation, PluginError> {
        if let Some(q) = &o.query {
            let q = q.trim().trim_end_matches(';');
            return Ok(Relation {
                sql: format!("({q})"),
                what: format!("the query of table {}", t.name),
                table: None,
            });
        }
        let default = catalog::default_schema(db).await?;
        let st = SourceTable::parse(o.table.as_deref().unwrap_or(&t.name), &default);
        Ok(Relation {
            sql: st.sql(db.dialect()),
            what: format!("table {st}"),
            table: Some(st),
        })
    }
}

#[async_trait]
impl Operator for Downloader {
    fn sources(&self) -> Vec<Arc<dyn Source>> {
        vec![Arc::new(TableSource {
            op: Downloader {
                pools: self.pools.clone(),
            },
        })]
    }

    async fn on_task(&self, ctx: &TaskCtx) -> Result<(), BoxError> {
        match ctx.task_type {
            TaskType::Error => {
                for db in self.pools.lock().await.values() {
                    db.cancel_running().await;
                }
            }
            TaskType::Shutdown => {
                for (_, db) in self.pools.lock().await.drain() {
                    db.close().await;
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn discover_tbls(&self, ctx: &TaskCtx) -> Result<Option<Vec<Tbl>>, BoxError> {
        Ok(Some(self.discover(&ctx.session).await))
    }

    fn is_selector(&self, cfg: &Tbl) -> bool {
        is_selector(cfg)
    }

    async fn catalog(&self, sess: &SessionCtx) -> Result<Option<Vec<Tbl>>, BoxError> {
        // Every connection the tables name (the default one when none does).
        let mut ids: Vec<String> = Vec::new();
        for t in sess.config_tbls.iter() {
            let id = options(t)?.connection_id().to_string();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.is_empty() {
            ids.push(anchovy_core::connection::DEFAULT_ID.into());
        }
        let mut out = Vec::new();
        for id in ids {
            let db = self.pool(sess, &id).await?;
            for info in catalog::list_tables(&db).await? {
                let full = info.table.to_string();
                let mut t = Tbl::named(&full);
                let rel = info.table.sql(db.dialect());
                for c in
                    catalog::columns(&db, &rel, &format!("table {full}"), Some(&info.table)).await?
                {
                    // SQLite's declared types are shown, though values decide in `$tables`.
                    let declared = match c.read {
                        Read::Lite(h) => h,
                        _ => None,
                    };
                    if let Some(ty) = c.col_type.or(declared) {
                        t.columns.insert(c.name, ty);
                    }
                }
                t.unique_by = ColSelect(info.key);
                t.options.insert("connection".into(), id.clone().into());
                if let Some(n) = info.estimate {
                    t.options.insert("rows_estimate".into(), n.into());
                }
                out.push(t);
            }
        }
        Ok(Some(out))
    }

    async fn healthcheck(&self, sess: &SessionCtx) -> Vec<(String, Result<String, String>)> {
        let mut out = Vec::new();
        let render = |e: &PluginError| anchovy_core::error::render_chain(e);
        let mut listed: HashMap<String, Vec<catalog::TableInfo>> = HashMap::new();
        for t in self.discover(sess).await {
            let check = async {
                let o = options(&t)?;
                if o.include.is_some() {
                    // A selector left over: its listing failed.
                    self.expand(sess, &t).await?;
                    return Ok("matches no table".to_string());
                }
                let db = self.pool(sess, o.connection_id()).await?;
                let rel = Relation::of(&db, &t, &o).await?;
                catalog::probe(&db, &rel.sql, &rel.what).await?;
                let id = o.connection_id().to_string();
                if !listed.contains_key(&id) {
                    listed.insert(id.clone(), catalog::list_tables(&db).await?);
                }
                let est = match &rel.table {
                    Some(st) => catalog::estimate(&db, st, &listed[&id]).await?,
                    None => None,
                };
                Ok::<String, PluginError>(match est {
                    Some(n) => format!("{} readable, ~{n} rows", rel.what),
                    None => format!("{} readable", rel.what),
                })
            };
            out.push((
                format!("table {}", t.name),
                check.await.map_err(|e| render(&e)),
            ));
        }
        out
    }
}

/// The downloader's source: reads the task's table.
struct TableSource {
    op: Downloader,
}

#[async_trait]
impl Source for TableSource {
    async fn run(&self, ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError> {
        let tbl = ctx.tbl();
        let o = options(tbl)?;
        if o.include.is_some() {
            // The selector itself: discovery could not list the source's tables.
            self.op.expand(&ctx.session, tbl).await?;
            return Err(PluginError::Option {
                key: format!("tbls.{}.include", tbl.name),
                message: "the source's tables could not be listed when the run began; see the warning above".into(),
            }
            .into());
        }
        let db = self.op.pool(&ctx.session, o.connection_id()).await?;
        let rel = Relation::of(&db, tbl, &o).await?;
        let cols = catalog::columns(&db, &rel.sql, &rel.what, rel.table.as_ref()).await?;
        for c in cols.iter().filter(|c| c.as_text) {
            tracing::warn!(table = %tbl.name, column = %c.name, source_type = %c.source_type, "the datastore has no such type: the column loads as text");
        }
        let plan = Plan::new(&db, tbl, &o, &rel, cols, ctx)?;
        let mut load = Loader::new(ctx, out, &plan)?;
        read_all(&db, &plan, &mut load).await?;
        load.finish().await
    }
}

/// The statement of one read, its bound and cursor.
struct Plan {
    table: String,
    sql: String,
    columns: Vec<Column>,
    bound: Option<Bound>,
    cursor: Option<(usize, CursorKind)>,
    dialect: Dialect,
}

impl Plan {
    fn new(
        db: &Db,
        tbl: &Tbl,
        o: &SqlSourceOptions,
        rel: &Relation,
        columns: Vec<Column>,
        ctx: &TaskCtx,
    ) -> Result<Plan, PluginError> {
        let d = db.dialect();
        let exprs: Vec<String> = columns.iter().map(|c| c.expr.clone()).collect();
        let mut sql = format!("SELECT {} FROM {} AS q", exprs.join(", "), rel.sql);
        let mut bound = None;
        let mut cursor = None;
        if let Some(name) = &o.cursor {
            let i = columns
                .iter()
                .position(|c| &c.name == name)
                .or_else(|| {
                    columns
                        .iter()
                        .position(|c| c.name.eq_ignore_ascii_case(name))
                })
                .ok_or_else(|| PluginError::Option {
                    key: format!("tbls.{}.cursor", tbl.name),
                    message: format!(
                        "{} has no column `{name}`; its columns: {}",
                        rel.what,
                        columns
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
            let c = &columns[i];
            let kind = cursor_kind(c).ok_or_else(|| PluginError::Option {
                key: format!("tbls.{}.cursor", tbl.name),
                message: format!(
                    "column `{}` is {}, which has no order to resume by; use a timestamp, date, integer, numeric or text column",
                    c.name, c.source_type
                ),
            })?;
            let committed = ctx
                .checkpoint(&tbl.name)
                .and_then(|v| serde_json::from_value::<CursorState>(v).ok());
            let committed = match committed {
                Some(s) if s.cursor == c.name && s.kind == kind => Some(s.value),
                Some(s) => {
                    tracing::warn!(table = %tbl.name, "the committed cursor is for column `{}` ({:?}), not `{}` ({:?}): reading the table whole", s.cursor, s.kind, c.name, kind);
                    None
                }
                None => None,
            };
            let lookback = o
                .lookback
                .as_ref()
                .map(|v| Lookback::parse(&tbl.name, v))
                .transpose()?;
            bound = match (committed, lookback) {
                (Some(v), Some(w)) => Some(w.apply(&tbl.name, kind, &v)?),
                (v, _) => v,
            };
            let col = format!("q.{}", d.ident(&c.name));
            if bound.is_some() {
                // With a key, rows that tie with the committed value are read again (a
                // row committed later with that very value is not missed; the uploader
                // upserts the others as no-ops); without one, only greater values.
                let inclusive = !tbl.unique_by.is_empty() || o.lookback.is_some();
                sql.push_str(" WHERE ");
                sql.push_str(&kind.condition(d, &col, &d.param(1), inclusive));
            }
            // NULL cursors (read by full reads only) first: a checkpoint never passes them.
            sql.push_str(&format!(" ORDER BY {col}"));
            if d == Dialect::Postgres {
                sql.push_str(" NULLS FIRST");
            }
            cursor = Some((i, kind));
        }
        Ok(Plan {
            table: tbl.name.clone(),
            sql,
            columns,
            bound,
            cursor,
            dialect: d,
        })
    }

    fn cursor_name(&self) -> Option<&str> {
        self.cursor.map(|(i, _)| self.columns[i].name.as_str())
    }
}

/// The cursor kind of a column, `None` for unorderable ones.
fn cursor_kind(c: &Column) -> Option<CursorKind> {
    use anchovy_core::ColType as T;
    Some(match c.read {
        Read::Int => CursorKind::Int,
        Read::Float | Read::Float4 => CursorKind::Float,
        Read::Decimal => CursorKind::Decimal,
        Read::Text if !c.as_text => CursorKind::Text,
        Read::Date => CursorKind::Date,
        Read::Time | Read::TimeText => CursorKind::Time,
        Read::Timestamp => CursorKind::Timestamp,
        Read::Timestamptz => CursorKind::Timestamptz,
        Read::Lite(h) => match h {
            Some(T::Int) => CursorKind::Int,
            Some(T::Float) => CursorKind::Float,
            Some(T::Decimal) => CursorKind::Decimal,
            Some(T::Date) => CursorKind::Date,
            Some(T::DateTime) => CursorKind::Timestamp,
            Some(T::Time) => CursorKind::Time,
            Some(T::Bool | T::Bytes | T::Object) => return None,
            Some(T::Str) | None => CursorKind::Text,
        },
        _ => return None,
    })
}

/// The cursor value of the last row read.
enum Last {
    /// As decoded (PostgreSQL, MySQL).
    Value(Value),
    /// As stored (SQLite).
    Stored(Bound),
}

/// Batches rows for the pipeline and places the cursor checkpoints.
struct Loader<'a> {
    ctx: &'a TaskCtx,
    out: &'a mut Emitter,
    builder: BatchBuilder,
    batch_size: usize,
    /// The cursor value of the last row pushed: the decoded value (PostgreSQL, MySQL:
    /// cloned only when it changes, written as a bound only at a checkpoint) or
    /// SQLite's stored one.
    last: Option<Last>,
    /// PostgreSQL and MySQL: the cursor column, read from each row in place.
    typed_cursor: Option<usize>,
    dialect: Dialect,
    /// Rows since the last checkpoint.
    since: usize,
    rows: u64,
    checkpoints: u64,
    cursor: Option<(String, CursorKind)>,
    stopped: bool,
    /// Rows that could not be read, under the table's `on_bad_record`.
    rejects: anchovy_core::reject::Rejects,
    /// The column names, for a bad row's record.
    names: Vec<String>,
}

impl<'a> Loader<'a> {
    fn new(ctx: &'a TaskCtx, out: &'a mut Emitter, plan: &Plan) -> Result<Loader<'a>, PluginError> {
        let schema = Schema::new(plan.columns.iter().map(|c| c.name.as_str()));
        Ok(Loader {
            ctx,
            out,
            builder: BatchBuilder::with_schema(plan.table.as_str(), schema),
            batch_size: ctx.session.settings.batch_size.max(1),
            last: None,
            typed_cursor: plan
                .cursor
                .map(|(i, _)| i)
                .filter(|_| plan.dialect != Dialect::Sqlite),
            dialect: plan.dialect,
            since: 0,
            rows: 0,
            checkpoints: 0,
            cursor: plan.cursor_name().map(|n| {
                (
                    n.to_string(),
                    plan.cursor.map(|c| c.1).unwrap_or(CursorKind::Text),
                )
            }),
            stopped: false,
            rejects: ctx.rejects()?,
            names: plan.columns.iter().map(|c| c.name.clone()).collect(),
        })
    }

    /// Takes one row (and, on SQLite, its stored cursor value). False once the run
    /// budget stops the table: the rows so far are covered by a checkpoint and nothing
    /// more is read.
    async fn row(
        &mut self,
        row: Vec<Value>,
        stored: Option<Bound>,
        bad: Vec<read::DecodeError>,
    ) -> Result<bool, BoxError> {
        let changed = match (self.typed_cursor, stored) {
            (Some(i), _) => match (row.get(i), &self.last) {
                (None | Some(Value::Null), _) => None,
                (Some(v), Some(Last::Value(l))) if l == v => None,
                (Some(v), _) => Some(Last::Value(v.clone())),
            },
            (None, Some(b)) => match &self.last {
                Some(Last::Stored(l)) if *l == b => None,
                _ => Some(Last::Stored(b)),
            },
            (None, None) => None,
        };
        if let Some(b) = changed {
            // Every row of the previous value is pushed: a checkpoint may go here.
            if self.since >= CHECKPOINT_ROWS.max(self.batch_size) && self.last.is_some() {
                self.checkpoint().await?;
                let name = &self.ctx.tbl().name;
                if self.ctx.session.stop_for_budget(name, self.checkpoints) {
                    self.stopped = true;
                    return Ok(false);
                }
            }
            self.last = Some(b);
        }
        self.since += 1;
        self.rows += 1;
        if !bad.is_empty() {
            self.reject(row, bad)?;
            return Ok(true);
        }
        self.builder.push_row(row);
        if self.builder.len() >= self.batch_size {
            self.out.send_batch(self.builder.take()).await?;
        }
        Ok(true)
    }

    /// A row that could not be read whole, under the table's `on_bad_record`.
    fn reject(&mut self, row: Vec<Value>, bad: Vec<read::DecodeError>) -> Result<(), PluginError> {
        let reason = bad
            .iter()
            .map(|e| format!("column `{}` ({}): {}", e.column, e.source_type, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let raw: serde_json::Map<String, serde_json::Value> = self
            .names
            .iter()
            .zip(row.iter())
            .map(|(n, v)| (n.clone(), v.to_json()))
            .collect();
        let source = format!("table {}", self.ctx.tbl().name);
        self.rejects
            .reject(anchovy_core::reject::Reject {
                source: &source,
                line: self.rows,
                reason,
                raw: serde_json::Value::Object(raw).to_string(),
                header: None,
                format: "json",
            })
            .map_err(|(_, message)| PluginError::Data {
                location: format!("table {} row {}", self.ctx.tbl().name, self.rows),
                message,
            })
    }

    /// Sends the rows and quarantined records held here.
    async fn send(&mut self) -> Result<(), BoxError> {
        if !self.builder.is_empty() {
            self.out.send_batch(self.builder.take()).await?;
        }
        if let Some(b) = self.rejects.take_batch() {
            self.out.send_batch(b).await?;
        }
        Ok(())
    }

    async fn checkpoint(&mut self) -> Result<(), BoxError> {
        self.send().await?;
        if let (Some((cursor, kind)), Some(last)) = (&self.cursor, &self.last) {
            let state = CursorState {
                cursor: cursor.clone(),
                kind: *kind,
                value: match last {
                    Last::Value(v) => Bound::of_value(self.dialect, v),
                    Last::Stored(b) => b.clone(),
                },
            };
            let name = self.ctx.tbl().name.clone();
            self.out.checkpoint(&name, &state).await?;
        }
        self.ctx.session.budget.spend(self.since as u64, 0);
        self.checkpoints += 1;
        self.since = 0;
        Ok(())
    }

    async fn finish(mut self) -> Result<(), BoxError> {
        let name = self.ctx.tbl().name.clone();
        if self.cursor.is_some() {
            self.checkpoint().await?;
        } else {
            self.send().await?;
            // The whole table in one commit: the uploader's `mode: replace` takes it
            // as a complete snapshot.
            self.out
                .checkpoint(
                    &name,
                    serde_json::json!({"snapshot": self.ctx.session.session_id, "batch": self.ctx.batch_id, "rows": self.rows}),
                )
                .await?;
            self.ctx.session.budget.spend(self.since as u64, 0);
        }
        self.ctx.log("source_rows", self.rows);
        if self.stopped {
            self.ctx.log("stopped_by_budget", true);
        }
        Ok(())
    }
}

/// Which statement opens the read-only snapshot a table is read in.
fn begin(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        Dialect::MySql => "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
        Dialect::Sqlite => "BEGIN",
    }
}

/// Streams the plan's rows into the loader inside one snapshot.
async fn read_all(db: &Db, plan: &Plan, load: &mut Loader<'_>) -> Result<(), BoxError> {
    let d = plan.dialect;
    let ctx = |what: &str| format!("{what} {} at the source", plan.table);
    let text_bound = |b: &Bound| match b {
        Bound::Int(i) => i.to_string(),
        Bound::Real(f) => f.to_string(),
        Bound::Text(t) => t.clone(),
    };
    let width = plan.columns.len();
    // One body for the three drivers (their rows are typed per database): acquire a
    // connection, open the snapshot, stream the statement with its bound, decode each
    // row into the loader, close the snapshot.
    macro_rules! read_in_snapshot {
        ($pool:expr, $prelude:expr, $q:ident => $bind:expr, |$r:ident, $vals:ident, $errs:ident| $decode:expr) => {{
            let mut conn = $pool
                .acquire()
                .await
                .map_err(|e| db_err(ctx("connect to read"), e))?;
            if let Some(sql) = $prelude {
                sqlx::Executor::execute(&mut *conn, sql)
                    .await
                    .map_err(|e| db_err(ctx("open a snapshot of"), e))?;
            }
            let mut tx = sqlx::Connection::begin_with(&mut *conn, safe(begin(d)))
                .await
                .map_err(|e| db_err(ctx("open a snapshot of"), e))?;
            let $q = sqlx::query(safe(&plan.sql));
            let mut rows = $bind.fetch(&mut *tx);
            while let Some($r) = rows.try_next().await.map_err(|e| db_err(ctx("read"), e))? {
                let mut $vals = Vec::with_capacity(width);
                let mut $errs = Vec::new();
                let c = $decode;
                if !load.row($vals, c, $errs).await? {
                    break;
                }
            }
            drop(rows);
            tx.rollback()
                .await
                .map_err(|e| db_err(ctx("close the snapshot of"), e))?;
        }};
    }
    let bound = plan.bound.as_ref();
    match db {
        Db::Pg(p, _) => read_in_snapshot!(
            p,
            None::<&'static str>,
            q => match bound { Some(b) => q.bind(text_bound(b)), None => q },
            |r, vals, errs| {
                read::pg(&r, &plan.columns, &mut vals, &mut errs);
                None
            }
        ),
        // The snapshot needs REPEATABLE READ, whatever the server's default.
        Db::My(p, _) => read_in_snapshot!(
            p,
            Some("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ"),
            q => match bound { Some(b) => q.bind(text_bound(b)), None => q },
            |r, vals, errs| {
                read::my(&r, &plan.columns, &mut vals, &mut errs);
                None
            }
        ),
        // SQLite compares by storage class: the bound goes as it was stored.
        Db::Lite(p) => read_in_snapshot!(
            p,
            None::<&'static str>,
            q => match bound {
                Some(Bound::Int(i)) => q.bind(*i),
                Some(Bound::Real(f)) => q.bind(*f),
                Some(Bound::Text(t)) => q.bind(t.clone()),
                None => q,
            },
            |r, vals, errs| {
                match read::lite(&r, &plan.columns, plan.cursor.map(|(i, _)| i), &mut vals) {
                    Ok(c) => c,
                    Err(e) => {
                        vals.resize(width, Value::Null);
                        errs.push(e);
                        None
                    }
                }
            }
        ),
    }
    Ok(())
}
