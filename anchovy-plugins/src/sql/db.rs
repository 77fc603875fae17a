//! Connections to the target database and the few operations the uploader needs, for
//! PostgreSQL, MySQL/MariaDB and SQLite. The merge logic is written once against
//! [`Tx`]; each method here is a small match over the three backends.
//!
//! Staging is the bulk path: PostgreSQL gets `COPY ... FROM STDIN (FORMAT csv)`, MySQL
//! and SQLite multi-row `INSERT`s with bind parameters (as many rows per statement as
//! their parameter limits allow). No statement ever runs per row.

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{MySql, Postgres, Sqlite};

use super::dialect::{Dialect, TableRef};
use crate::error::PluginError;

/// How long to wait for a connection before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A connection pool to the target.
#[derive(Clone)]
pub enum Db {
    /// PostgreSQL, and how to cancel its running statements.
    Pg(sqlx::PgPool, std::sync::Arc<Canceller>),
    /// MySQL or MariaDB, and how to cancel its running statements.
    My(sqlx::MySqlPool, std::sync::Arc<Canceller>),
    /// SQLite.
    Lite(sqlx::SqlitePool),
}

/// An open transaction on the target.
pub enum Tx {
    /// PostgreSQL.
    Pg(sqlx::Transaction<'static, Postgres>),
    /// MySQL or MariaDB.
    My(sqlx::Transaction<'static, MySql>),
    /// SQLite.
    Lite(sqlx::Transaction<'static, Sqlite>),
}

/// Expands the same code for each backend of a [`Tx`] (sqlx pools are typed per
/// database, so a body is written once and compiled three times).
macro_rules! each_tx {
    ($tx:expr, $t:ident => $body:expr) => {
        match $tx {
            Tx::Pg($t) => $body,
            Tx::My($t) => $body,
            Tx::Lite($t) => $body,
        }
    };
}

/// The same for a [`Db`] pool.
macro_rules! each_db {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            Db::Pg($p, _) => $body,
            Db::My($p, _) => $body,
            Db::Lite($p) => $body,
        }
    };
}

pub(crate) fn db_err(context: impl Into<String>, e: sqlx::Error) -> PluginError {
    PluginError::Db {
        context: context.into(),
        cause: e,
    }
}

/// A URL with its password masked, for messages.
pub fn display_url(url: &str) -> String {
    anchovy_core::secret::redact(url).into_owned()
}

impl Db {
    /// Connects (and checks the connection) with a timeout.
    ///
    /// # Errors
    /// [`PluginError::Db`] naming the (redacted) URL: unreachable host, bad password,
    /// missing database.
    pub async fn connect(url: &str) -> Result<Db, PluginError> {
        Db::connect_as(url, "ACHVY_CNXN__DB__URI", Role::Target).await
    }

    /// Connects for `role`; `key` names the setting the URL came from (in messages).
    ///
    /// A [`Role::Source`] session is read-only and bounded: PostgreSQL sessions start
    /// with `default_transaction_read_only`, `IntervalStyle=iso_8601` and the
    /// statement timeout; MySQL sessions set `max_execution_time` (MariaDB
    /// `max_statement_time`); SQLite files open read-only and are never created or
    /// switched to WAL. Every session reads times in UTC.
    ///
    /// # Errors
    /// As [`Db::connect`].
    pub async fn connect_as(url: &str, key: &str, role: Role) -> Result<Db, PluginError> {
        let url = &without_driver(url);
        let dialect = Dialect::from_url(url).ok_or_else(|| PluginError::Option {
            key: key.into(),
            message: format!(
                "`{}` is not a postgres://, mysql:// or sqlite:// URL",
                display_url(url)
            ),
        })?;
        let ctx = || format!("connect to {}", display_url(url));
        let db = match dialect {
            Dialect::Postgres => {
                // A name of this pool's own, so that a cancel finds its sessions.
                let app = unique_app_name();
                let mut opts = PgConnectOptions::from_str(url)
                    .map_err(|e| db_err(ctx(), e))?
                    .options([("TimeZone", "UTC")])
                    .application_name(&app);
                if let Role::Source { statement_timeout } = role {
                    opts = opts.options([
                        ("IntervalStyle", "iso_8601".to_string()),
                        ("default_transaction_read_only", "on".to_string()),
                        (
                            "statement_timeout",
                            statement_timeout.map_or(0, |d| d.as_millis()).to_string(),
                        ),
                    ]);
                }
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect_with(opts.clone())
                    .await
                    .map_err(|e| db_err(ctx(), e))?;
                let canceller = Canceller {
                    pg: Some((opts, app)),
                    ..Canceller::default()
                };
                Db::Pg(pool, std::sync::Arc::new(canceller))
            }
            Dialect::MySql => {
                let url = url.replacen("mariadb://", "mysql://", 1);
                let opts = MySqlConnectOptions::from_str(&url)
                    .map_err(|e| db_err(ctx(), e))?
                    .timezone(Some("+00:00".into()));
                let canceller = std::sync::Arc::new(Canceller {
                    my: Some(opts.clone()),
                    ..Canceller::default()
                });
                let ids = canceller.clone();
                let pool = MySqlPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .after_connect(move |conn, _| {
                        let ids = ids.clone();
                        Box::pin(async move {
                            if let Role::Source {
                                statement_timeout: Some(t),
                            } = role
                            {
                                set_mysql_timeout(conn, t).await?;
                            }
                            let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
                                .fetch_one(&mut *conn)
                                .await?;
                            ids.my_ids
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(id);
                            Ok(())
                        })
                    })
                    .connect_with(opts)
                    .await
                    .map_err(|e| db_err(ctx(), e))?;
                Db::My(pool, canceller)
            }
            Dialect::Sqlite => {
                let opts = SqliteConnectOptions::from_str(url).map_err(|e| db_err(ctx(), e))?;
                let opts = match role {
                    Role::Target => opts
                        .create_if_missing(true)
                        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal),
                    Role::Source { .. } => opts.read_only(true).create_if_missing(false),
                };
                let opts = opts
                    .busy_timeout(Duration::from_secs(30))
                    .collation(super::dialect::DECIMAL_COLLATION, super::collate::decimal)
                    .collation(super::dialect::DATETIME_COLLATION, super::collate::datetime);
                // Another process opening the same file at the same moment (two
                // uploaders sharing the default SQLite target) can make the switch to
                // WAL fail with SQLITE_BUSY before any busy handler applies: retry.
                let started = std::time::Instant::now();
                let mut pause = Duration::from_millis(50);
                let pool = loop {
                    match SqlitePoolOptions::new()
                        .max_connections(4)
                        .acquire_timeout(CONNECT_TIMEOUT)
                        .connect_with(opts.clone())
                        .await
                    {
                        Err(sqlx::Error::Database(d))
                            if d.code().as_deref() == Some("5")
                                && started.elapsed() < CONNECT_TIMEOUT =>
                        {
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(1));
                        }
                        r => break r.map_err(|e| db_err(ctx(), e))?,
                    }
                };
                Db::Lite(pool)
            }
        };
        Ok(db)
    }

    /// The SQL dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Pg(..) => Dialect::Postgres,
            Db::My(..) => Dialect::MySql,
            Db::Lite(_) => Dialect::Sqlite,
        }
    }

    /// Runs one statement outside a transaction (DDL).
    ///
    /// # Errors
    /// [`PluginError::Db`] with the statement.
    pub async fn exec(&self, sql: &str) -> Result<u64, PluginError> {
        each_db!(self, p => sqlx::query(safe(sql)).execute(p).await.map(|r| r.rows_affected()))
            .map_err(|e| db_err(format!("run `{}`", short(sql)), e))
    }
    /// The columns of a table (name, SQL type), or `None` when it does not exist.
    ///
    /// # Errors
    /// [`PluginError::Db`].
    pub async fn columns(
        &self,
        t: &TableRef,
    ) -> Result<Option<Vec<(String, String)>>, PluginError> {
        let ctx = || format!("describe table {}", self.dialect().table(t));
        let rows: Vec<(String, String)> = match self {
            Db::Pg(p, _) => sqlx::query_as(
                "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = COALESCE(NULLIF($1, ''), current_schema()) AND table_name = $2 ORDER BY ordinal_position",
            )
            .bind(&t.schema)
            .bind(&t.name)
            .fetch_all(p)
            .await
            .map_err(|e| db_err(ctx(), e))?,
            Db::My(p, _) => {
                let rows: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
                    "SELECT CAST(column_name AS BINARY), CAST(column_type AS BINARY) FROM information_schema.columns WHERE table_schema = COALESCE(NULLIF(?, ''), DATABASE()) AND table_name = ? ORDER BY ordinal_position",
                )
                .bind(&t.schema)
                .bind(&t.name)
                .fetch_all(p)
                .await
                .map_err(|e| db_err(ctx(), e))?;
                rows.into_iter()
                    .map(|(a, b)| (String::from_utf8_lossy(&a).into_owned(), String::from_utf8_lossy(&b).into_owned()))
                    .collect()
            }
            Db::Lite(p) => {
                let name = t.sqlite_name();
                sqlx::query_as("SELECT name, type FROM pragma_table_info(?) ORDER BY cid")
                    .bind(name)
                    .fetch_all(p)
                    .await
                    .map_err(|e| db_err(ctx(), e))?
            }
        };
        Ok(if rows.is_empty() { None } else { Some(rows) })
    }

    /// On SQLite, which compares table names without regard to case: the name of a
    /// table that equals `t` but for case (`Orders` for `orders`), if there is one.
    /// `None` on the other databases (PostgreSQL's quoted names are case-sensitive;
    /// MySQL's follow its `lower_case_table_names`).
    ///
    /// # Errors
    /// [`PluginError::Db`].
    pub async fn table_differing_in_case(
        &self,
        t: &TableRef,
    ) -> Result<Option<String>, PluginError> {
        let Db::Lite(p) = self else {
            return Ok(None);
        };
        let name = t.sqlite_name();
        let found: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE AND name <> ?",
        )
        .bind(&name)
        .bind(&name)
        .fetch_optional(p)
        .await
        .map_err(|e| db_err("look up the table name", e))?;
        Ok(found)
    }

    /// Starts a transaction.
    ///
    /// # Errors
    /// [`PluginError::Db`].
    pub async fn begin(&self) -> Result<Tx, PluginError> {
        let r = match self {
            Db::Pg(p, _) => p.begin().await.map(Tx::Pg),
            Db::My(p, _) => p.begin().await.map(Tx::My),
            Db::Lite(p) => p.begin().await.map(Tx::Lite),
        };
        r.map_err(|e| db_err("begin a transaction", e))
    }

    /// Reads the committed position of `upstream` in `target` (a quoted table name)
    /// and the upstream origin it counts in (empty before the first load).
    ///
    /// # Errors
    /// [`PluginError::Db`].
    pub async fn position(
        &self,
        target: &str,
        upstream: &str,
    ) -> Result<(u64, String, String), PluginError> {
        let sql = position_select(self.dialect(), false);
        let r: Option<(i64, String, String)> = each_db!(self, p => {
            sqlx::query_as(safe(&sql)).bind(target).bind(upstream).fetch_optional(p).await
        })
        .map_err(|e| db_err("read the upload position", e))?;
        Ok(r.map_or((0, String::new(), String::new()), |(s, by, o)| {
            (s.max(0) as u64, o, by)
        }))
    }

    /// Starts a table over, in one transaction: deletes its rows (when it exists) and
    /// its position, so the next load begins at the first upstream commit.
    ///
    /// # Errors
    /// [`PluginError::Db`].
    pub async fn reset(
        &self,
        t: &TableRef,
        target: &str,
        upstream: &str,
        exists: bool,
    ) -> Result<(), PluginError> {
        let d = self.dialect();
        let mut tx = self.begin().await?;
        if exists {
            tx.exec(&format!("DELETE FROM {}", d.table(t))).await?;
        }
        let sql = format!(
            "DELETE FROM {} WHERE target = {} AND upstream = {}",
            d.ident(super::dialect::POSITIONS),
            d.param(1),
            d.param(2)
        );
        let r = each_tx!(&mut tx, c => {
            sqlx::query(safe(&sql)).bind(target).bind(upstream).execute(&mut **c).await.map(|_| ())
        });
        r.map_err(|e| db_err("reset the upload position", e))?;
        tx.commit().await
    }

    /// Checks that `_anchovies_positions` has the current shape (a table made by a
    /// build before positions were keyed by target table has no `target` column).
    ///
    /// # Errors
    /// [`PluginError::Conflict`] naming the table and the fix.
    pub async fn check_positions(&self) -> Result<(), PluginError> {
        let d = self.dialect();
        let sql = format!(
            "SELECT target, upstream, tbl, seq, updated_at, uploader, origin FROM {} WHERE 1 = 0",
            d.ident(super::dialect::POSITIONS)
        );
        let Err(e) = self.exec(&sql).await else {
            return Ok(());
        };
        // Only a missing column means the old layout; anything else (a dropped
        // connection, a permission) is reported as itself.
        let missing_column = matches!(&e, PluginError::Db { cause: sqlx::Error::Database(d), .. }
            if matches!(d.code().as_deref(), Some("42703") | Some("1054"))
                || d.message().contains("no such column"));
        if !missing_column {
            return Err(e);
        }
        Err(PluginError::Conflict {
            message: format!(
                "the target's {} table has an older layout (before positions were keyed by target table and upstream history); rename it (e.g. to {}_old), and the tables it tracked load again from the start (empty them first), or point the uploader at another database",
                super::dialect::POSITIONS,
                super::dialect::POSITIONS
            ),
        })
    }
    /// Closes the pool, waiting at most a second for connections still busy (a
    /// statement stuck on a lock after a cancel must not hold the process).
    pub async fn close(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            each_db!(self, p => p.close().await)
        })
        .await;
    }

    /// Cancels the statements this pool's connections are running (a timeout or a
    /// signal stopped the batch whose futures issued them): PostgreSQL's cancel
    /// request (`pg_cancel_backend`) for the sessions of this pool's own
    /// `application_name`, MySQL's `KILL QUERY` for this pool's busy connections, over
    /// a fresh connection, within 2 s. Their transactions roll back. SQLite runs in
    /// this process: its statements end with it ([`Db::close`] does not wait on them).
    pub async fn cancel_running(&self) {
        let work = async {
            match self {
                Db::Pg(_, c) => {
                    let Some((opts, app)) = &c.pg else {
                        return Ok(0);
                    };
                    let mut conn =
                        <sqlx::PgConnection as sqlx::Connection>::connect_with(opts).await?;
                    let n: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM (SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = $1 AND state <> 'idle' AND pid <> pg_backend_pid()) c",
                    )
                    .bind(app)
                    .fetch_one(&mut conn)
                    .await?;
                    let _ = sqlx::Connection::close(conn).await;
                    Ok(n as usize)
                }
                Db::My(_, c) => {
                    let Some(opts) = &c.my else { return Ok(0) };
                    let ids: Vec<u64> = c.my_ids.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if ids.is_empty() {
                        return Ok(0);
                    }
                    let mut conn =
                        <sqlx::MySqlConnection as sqlx::Connection>::connect_with(opts).await?;
                    let list: Vec<String> = ids.iter().map(u64::to_string).collect();
                    // Only connections running something: KILL QUERY is for statements.
                    let busy: Vec<u64> = sqlx::query_scalar(safe(&format!(
                        "SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({}) \
                         AND COMMAND <> 'Sleep'",
                        list.join(",")
                    )))
                    .fetch_all(&mut conn)
                    .await?;
                    for id in &busy {
                        let _ = sqlx::query(safe(&format!("KILL QUERY {id}")))
                            .execute(&mut conn)
                            .await;
                    }
                    let _ = sqlx::Connection::close(conn).await;
                    Ok(busy.len())
                }
                Db::Lite(_) => Ok::<usize, sqlx::Error>(0),
            }
        };
        match tokio::time::timeout(Duration::from_secs(2), work).await {
            Ok(Ok(n)) if n > 0 => {
                tracing::info!(statements = n, "cancelled the running statements")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::error::describe_db_error(&e), "could not cancel the running statements")
            }
            Err(_) => tracing::warn!("could not cancel the running statements within 2 s"),
        }
    }
}

/// What a pool is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The uploader's target: read-write, created if missing (SQLite).
    Target,
    /// A downloader's source: read-only, statements bounded by `statement_timeout`.
    Source {
        /// The longest a statement may run (`None`: no limit).
        statement_timeout: Option<Duration>,
    },
}

/// MySQL's `max_execution_time` (milliseconds, SELECTs only), or MariaDB's
/// `max_statement_time` (seconds) where MySQL's is unknown.
async fn set_mysql_timeout(
    conn: &mut sqlx::MySqlConnection,
    t: Duration,
) -> Result<(), sqlx::Error> {
    let ms = t.as_millis().max(1) as u64;
    let mysql = format!("SET SESSION max_execution_time = {ms}");
    if sqlx::query(safe(&mysql)).execute(&mut *conn).await.is_ok() {
        return Ok(());
    }
    let maria = format!("SET SESSION max_statement_time = {}", ms as f64 / 1000.0);
    sqlx::query(safe(&maria))
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// `anchovy-<pid>-<time>-<n>`: unique per pool across the hosts sharing a server.
fn unique_app_name() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "anchovy-{}-{:x}-{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// What [`Db::cancel_running`] needs: how to open a side connection and whom to
/// cancel.
#[derive(Debug, Default)]
pub struct Canceller {
    /// PostgreSQL: the options and the pool's unique `application_name`.
    pg: Option<(PgConnectOptions, String)>,
    /// MySQL: the options.
    my: Option<MySqlConnectOptions>,
    /// MySQL: the connection ids of the pool (ids are never reused by a server).
    my_ids: std::sync::Mutex<Vec<u64>>,
}

/// Marks generated SQL as audited: every identifier in it went through
/// [`Dialect::ident`] and every value is a bind parameter or COPY data.
fn safe(sql: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql.to_string())
}

fn position_select(d: Dialect, lock: bool) -> String {
    format!(
        "SELECT seq, uploader, origin FROM {} WHERE target = {} AND upstream = {}{}",
        d.ident(super::dialect::POSITIONS),
        d.param(1),
        d.param(2),
        if lock && d != Dialect::Sqlite {
            " FOR UPDATE"
        } else {
            ""
        }
    )
}

fn short(sql: &str) -> String {
    if sql.len() > 300 {
        format!(
            "{}...",
            &sql[..sql
                .char_indices()
                .nth(300)
                .map(|(i, _)| i)
                .unwrap_or(sql.len())]
        )
    } else {
        sql.to_string()
    }
}

impl PluginError {
    /// True for a primary-key or unique-constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, PluginError::Db { cause: sqlx::Error::Database(e), .. } if e.is_unique_violation())
    }

    /// True when a DDL statement lost a race with the same DDL from another process
    /// (two uploaders creating one schema, table or column at the same moment):
    /// PostgreSQL's catalog unique violation or duplicate object, MySQL's "already
    /// exists"/duplicate column, SQLite's "already exists"/"duplicate column".
    pub fn is_concurrent_ddl(&self) -> bool {
        let PluginError::Db {
            cause: sqlx::Error::Database(e),
            ..
        } = self
        else {
            return false;
        };
        let code = e.code().unwrap_or_default();
        let msg = e.message();
        e.is_unique_violation()
            || matches!(
                code.as_ref(),
                "42P06" | "42P07" | "42701" | "42710" | "1050" | "1060" | "1007"
            )
            || msg.contains("already exists")
            || msg.contains("duplicate column")
    }
}

impl Tx {
    pub(super) fn dialect(&self) -> Dialect {
        match self {
            Tx::Pg(_) => Dialect::Postgres,
            Tx::My(_) => Dialect::MySql,
            Tx::Lite(_) => Dialect::Sqlite,
        }
    }

    /// Runs one statement; returns the affected rows.
    ///
    /// # Errors
    /// [`PluginError::Db`] with the statement.
    pub async fn exec(&mut self, sql: &str) -> Result<u64, PluginError> {
        each_tx!(self, t => sqlx::query(safe(sql)).execute(&mut **t).await.map(|r| r.rows_affected()))
            .map_err(|e| db_err(format!("run `{}`", short(sql)), e))
    }
    /// Runs a `SELECT COUNT(*)`-style query.
    ///
    /// # Errors
    /// [`PluginError::Db`].
    pub async fn scalar(&mut self, sql: &str) -> Result<i64, PluginError> {
        let r: Result<i64, sqlx::Error> =
            each_tx!(self, t => sqlx::query_scalar(safe(sql)).fetch_one(&mut **t).await);
        r.map_err(|e| db_err(format!("run `{}`", short(sql)), e))
    }
    /// Runs a query returning one row of two integers.
    ///
    /// # Errors
    /// [`PluginError::Db`].
    pub async fn scalar2(&mut self, sql: &str) -> Result<(i64, i64), PluginError> {
        let r: Result<(i64, i64), sqlx::Error> =
            each_tx!(self, t => sqlx::query_as(safe(sql)).fetch_one(&mut **t).await);
        r.map_err(|e| db_err(format!("run `{}`", short(sql)), e))
    }
    /// Locks the position row of `upstream` in `target` (creating it at 0) and returns
    /// its value and the uploader that set it. Concurrent loads of one target table wait
    /// here (SQLite: the write transaction); the one that finds the position moved stops.
    ///
    /// # Errors
    /// [`PluginError::Db`].
    pub async fn lock_position(
        &mut self,
        target: &str,
        upstream: &str,
        tbl: &str,
        uploader: &str,
    ) -> Result<(u64, String), PluginError> {
        let d = self.dialect();
        let now = chrono::Utc::now().to_rfc3339();
        let insert = match d {
            Dialect::MySql => format!(
                "INSERT IGNORE INTO {} (target, upstream, tbl, seq, updated_at, uploader, origin) VALUES (?, ?, ?, 0, ?, ?, '')",
                d.ident(super::dialect::POSITIONS)
            ),
            _ => format!(
                "INSERT INTO {} (target, upstream, tbl, seq, updated_at, uploader, origin) VALUES ({}, {}, {}, 0, {}, {}, '') ON CONFLICT DO NOTHING",
                d.ident(super::dialect::POSITIONS),
                d.param(1),
                d.param(2),
                d.param(3),
                d.param(4),
                d.param(5)
            ),
        };
        let select = position_select(d, true);
        let r: Result<(i64, String, String), sqlx::Error> = each_tx!(self, t => {
            match sqlx::query(safe(&insert)).bind(target).bind(upstream).bind(tbl).bind(&now).bind(uploader).execute(&mut **t).await {
                Ok(_) => sqlx::query_as(safe(&select)).bind(target).bind(upstream).fetch_one(&mut **t).await,
                Err(e) => Err(e),
            }
        });
        let (seq, by, _) = r.map_err(|e| db_err("lock the upload position", e))?;
        Ok((seq.max(0) as u64, by))
    }

    /// Records one load in `_anchovies_loads` (`audit: true`): inside the load's
    /// transaction for a load that commits, so the record and the rows land together.
    ///
    /// # Errors
    /// [`PluginError::Db`].
    pub async fn record_load(&mut self, r: &LoadRecord) -> Result<(), PluginError> {
        let d = self.dialect();
        let params: Vec<String> = (1..=15).map(|n| d.param(n)).collect();
        let sql = format!(
            "INSERT INTO {} (anchovy, upstream, tbl, target, first_seq, last_seq, rows_inserted, rows_updated, rows_deleted, rows_skipped, files, started_at, finished_at, status, error) VALUES ({})",
            d.ident(super::dialect::LOADS),
            params.join(", ")
        );
        let n = |v: u64| v.min(i64::MAX as u64) as i64;
        let finished = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let res = each_tx!(self, t => {
            sqlx::query(safe(&sql))
                .bind(&r.anchovy)
                .bind(&r.upstream)
                .bind(&r.tbl)
                .bind(&r.target)
                .bind(n(r.first_seq))
                .bind(n(r.last_seq))
                .bind(n(r.inserted))
                .bind(n(r.updated))
                .bind(n(r.deleted))
                .bind(n(r.skipped))
                .bind(n(r.files))
                .bind(&r.started_at)
                .bind(&finished)
                .bind(r.status)
                .bind(r.error.as_deref())
                .execute(&mut **t)
                .await
                .map(|_| ())
        });
        res.map_err(|e| db_err("record the load in _anchovies_loads", e))
    }

    /// Sets the position (inside the load's transaction).
    ///
    /// # Errors
    /// [`PluginError::Db`].
    pub async fn set_position(
        &mut self,
        target: &str,
        upstream: &str,
        seq: u64,
        uploader: &str,
        origin: &str,
    ) -> Result<(), PluginError> {
        let d = self.dialect();
        let sql = format!(
            "UPDATE {} SET seq = {}, updated_at = {}, uploader = {}, origin = {} WHERE target = {} AND upstream = {}",
            d.ident(super::dialect::POSITIONS),
            d.param(1),
            d.param(2),
            d.param(3),
            d.param(4),
            d.param(5),
            d.param(6)
        );
        let now = chrono::Utc::now().to_rfc3339();
        let seq = seq as i64;
        let r = each_tx!(self, t => {
            sqlx::query(safe(&sql)).bind(seq).bind(&now).bind(uploader).bind(origin).bind(target).bind(upstream).execute(&mut **t).await.map(|_| ())
        });
        r.map_err(|e| db_err("advance the upload position", e))
    }

    /// Commits.
    ///
    /// # Errors
    /// [`PluginError::Db`].
    pub async fn commit(self) -> Result<(), PluginError> {
        each_tx!(self, t => t.commit().await).map_err(|e| db_err("commit the load", e))
    }
}

impl Db {
    /// The loads of uploader `anchovy` recorded in `_anchovies_loads` (`audit: true`),
    /// newest first, at most `limit`, started at or after `since` (RFC 3339 UTC text,
    /// which compares as time), of `status` (`ok`, `error`) when given: one JSON object
    /// per load, with the table's columns. The filters run in the database, so a long
    /// history is not read whole.
    ///
    /// # Errors
    /// [`PluginError::Db`] (also when the table does not exist: no table was audited).
    pub async fn load_history(
        &self,
        anchovy: &str,
        since: Option<&str>,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, PluginError> {
        use sqlx::Row;
        let d = self.dialect();
        let sql = format!(
            "SELECT anchovy, upstream, tbl, target, first_seq, last_seq, rows_inserted, rows_updated, rows_deleted, rows_skipped, files, started_at, finished_at, status, error FROM {} WHERE anchovy = {} AND started_at >= {} AND ({} = '' OR status = {}) ORDER BY started_at DESC LIMIT {}",
            d.ident(super::dialect::LOADS),
            d.param(1),
            d.param(2),
            d.param(3),
            d.param(4),
            limit.min(i64::MAX as usize)
        );
        let since = since.unwrap_or("");
        let status = status.unwrap_or("");
        const TEXT: [&str; 4] = ["anchovy", "upstream", "tbl", "target"];
        const NUMS: [&str; 7] = [
            "first_seq",
            "last_seq",
            "rows_inserted",
            "rows_updated",
            "rows_deleted",
            "rows_skipped",
            "files",
        ];
        const TAIL: [&str; 4] = ["started_at", "finished_at", "status", "error"];
        let rows: Result<Vec<serde_json::Map<String, serde_json::Value>>, sqlx::Error> = each_db!(self, p => {
            match sqlx::query(safe(&sql)).bind(anchovy).bind(since).bind(status).bind(status).fetch_all(p).await {
                Ok(rows) => rows
                    .iter()
                    .map(|r| {
                        let mut m = serde_json::Map::new();
                        for (i, c) in TEXT.iter().enumerate() {
                            m.insert(c.to_string(), r.try_get::<String, _>(i)?.into());
                        }
                        for (i, c) in NUMS.iter().enumerate() {
                            m.insert(c.to_string(), r.try_get::<i64, _>(i + TEXT.len())?.into());
                        }
                        for (i, c) in TAIL.iter().enumerate() {
                            let v: Option<String> = r.try_get(i + TEXT.len() + NUMS.len())?;
                            m.insert(c.to_string(), v.map_or(serde_json::Value::Null, Into::into));
                        }
                        Ok(m)
                    })
                    .collect(),
                Err(e) => Err(e),
            }
        });
        rows.map_err(|e| db_err(format!("read {}", super::dialect::LOADS), e))
    }
}

/// One row of `_anchovies_loads` (`audit: true`).
#[derive(Debug, Clone)]
pub struct LoadRecord {
    /// The uploader's id.
    pub anchovy: String,
    /// The upstream (as in `_anchovies_positions`).
    pub upstream: String,
    /// The upstream table.
    pub tbl: String,
    /// The target table, quoted as the database names it.
    pub target: String,
    /// The first upstream commit of the load.
    pub first_seq: u64,
    /// The last (the position after it).
    pub last_seq: u64,
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated.
    pub updated: u64,
    /// Rows deleted (replaced sets, replaced snapshots and ranges).
    pub deleted: u64,
    /// Rows that lost to a newer stored or incoming row.
    pub skipped: u64,
    /// Data files read.
    pub files: u64,
    /// When the load began (RFC 3339 UTC).
    pub started_at: String,
    /// `ok` or `error`.
    pub status: &'static str,
    /// The error of a failed load (secrets redacted).
    pub error: Option<String>,
}

/// A SQLAlchemy URL's scheme without its driver (`postgresql+psycopg2://` ->
/// `postgresql://`, `mysql+pymysql://` -> `mysql://`), as the original tool's
/// `ACHVY_CNXN__DB__URL` often names one; other URLs unchanged.
pub fn without_driver(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.contains('+') => {
            let base = scheme.split('+').next().unwrap_or(scheme);
            format!("{base}://{rest}")
        }
        _ => url.to_string(),
    }
}
