//! What a source database offers, and how each column of a table or query is read.
//!
//! A relation's columns come from the database itself (the statement is prepared, so a
//! `query:` is described exactly as a table is), and each becomes a [`Column`]: the
//! expression selected and how its values decode. Types map exactly where the datastore
//! has the type, and through text where it has not:
//!
//! | source type | PostgreSQL | MySQL / MariaDB | SQLite (declared) | value |
//! |---|---|---|---|---|
//! | integers | int2, int4, int8, oid | tinyint..bigint, year, bit | `*INT*` | int |
//! | exact decimals | numeric (NaN, ±Infinity as floats), money | decimal, bigint unsigned | decimal, numeric | decimal, digit for digit |
//! | floats | float4, float8 (NaN, ±inf) | float, double | real, float, double | float (float4 by its shortest text) |
//! | booleans | bool | - (tinyint(1) is an int) | bool, boolean | bool |
//! | text | text, varchar, char(n) (padding kept), name, citext | char, varchar, *text, enum, set | text, char, clob | text |
//! | dates and times | date, time, timestamp, timestamptz | date, time, datetime, timestamp | date, time, datetime, timestamp (text parsed) | date, time, datetime, datetime with offset (UTC) |
//! | interval | ISO-8601 duration text (`P1DT2H`) | - | - | text |
//! | binary | bytea | binary, varbinary, *blob | blob | bytes |
//! | JSON | json, jsonb | json | json | object |
//! | uuid, enums | text form | - | - | text |
//! | arrays, composites | `to_jsonb` | - | - | object (JSON array / object) |
//!
//! Any other type (PostgreSQL's inet, xml, ranges, geometric types, timetz, bit
//! strings; MySQL's spatial types as WKT) **loads as text with a warning** naming the
//! column and its type; the table does not fail. SQLite's values are decoded by what is
//! stored (a column may mix classes): the declared type only decides how text and
//! numbers are read (dates parsed, decimals kept digit for digit), and a text that does
//! not parse as its declared type loads as text.

use anchovy_core::ColType;
use futures::TryStreamExt;
use sqlx::{Column as _, Executor, Row, SqlSafeStr as _, Statement, TypeInfo};

use crate::error::PluginError;
use crate::sql::db::{Db, db_err};
use crate::sql::dialect::Dialect;

/// How a column's values are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// `i64`.
    Int,
    /// `f64`.
    Float,
    /// `f32`, widened by its shortest text (0.1f32 reads as 0.1).
    Float4,
    /// `bool`.
    Bool,
    /// Text holding an exact decimal (PostgreSQL's NaN and infinities read as floats).
    Decimal,
    /// Text.
    Text,
    /// A date.
    Date,
    /// A time of day.
    Time,
    /// Text holding a time of day (MySQL's TIME, which may leave 00:00..24:00).
    TimeText,
    /// A timestamp without offset.
    Timestamp,
    /// An instant (read in UTC).
    Timestamptz,
    /// Bytes.
    Bytes,
    /// Text holding JSON.
    Json,
    /// SQLite: by the stored class, read as the declared type says.
    Lite(Option<ColType>),
}

/// One column of a relation, as it is read.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The column name.
    pub name: String,
    /// The type as the source names it.
    pub source_type: String,
    /// How values decode.
    pub read: Read,
    /// The expression selected over the relation aliased `q`.
    pub expr: String,
    /// The type recorded in `$tables` (`None`: left to the values, as for every
    /// SQLite column).
    pub col_type: Option<ColType>,
    /// True when the type is not one the datastore has and the values load as text.
    pub as_text: bool,
}

/// A table of the source: schema (MySQL: database; SQLite: `main`) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceTable {
    /// The schema.
    pub schema: String,
    /// The name.
    pub name: String,
}

impl SourceTable {
    /// Parses `schema.name` or `name` (in `default_schema`); quotes are not needed
    /// and not taken (names are used exactly).
    pub fn parse(s: &str, default_schema: &str) -> SourceTable {
        match s.split_once('.') {
            Some((a, b)) => SourceTable {
                schema: a.to_string(),
                name: b.to_string(),
            },
            None => SourceTable {
                schema: default_schema.to_string(),
                name: s.to_string(),
            },
        }
    }

    /// The quoted relation.
    pub fn sql(&self, d: Dialect) -> String {
        match d {
            Dialect::Sqlite if self.schema == "main" => d.ident(&self.name),
            _ => format!("{}.{}", d.ident(&self.schema), d.ident(&self.name)),
        }
    }
}

impl std::fmt::Display for SourceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// What `tbls --discover` and the pattern selection see of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    /// The table.
    pub table: SourceTable,
    /// The primary key columns, in key order.
    pub key: Vec<String>,
    /// The server's row estimate, when it keeps one.
    pub estimate: Option<i64>,
}

/// Marks generated SQL as audited: identifiers went through [`Dialect::ident`], values
/// are bind parameters; a user's `query:` is the user's own SQL.
pub(crate) fn safe(sql: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql.to_string())
}

/// The schema names without a table prefix: PostgreSQL `public`, MySQL the
/// connection's database, SQLite `main`.
///
/// # Errors
/// [`PluginError::Db`].
pub async fn default_schema(db: &Db) -> Result<String, PluginError> {
    match db {
        Db::Pg(p, _) => sqlx::query_scalar::<_, String>("SELECT current_schema()::text")
            .fetch_one(p)
            .await
            .map_err(|e| db_err("read the current schema", e)),
        Db::My(p, _) => sqlx::query_scalar::<_, Option<String>>("SELECT DATABASE()")
            .fetch_one(p)
            .await
            .map_err(|e| db_err("read the current database", e))?
            .ok_or_else(|| PluginError::Option {
                key: "connection".into(),
                message: "the MySQL URL names no database (mysql://user@host/<database>); name one, or write tables as database.table".into(),
            }),
        Db::Lite(_) => Ok("main".into()),
    }
}

/// PostgreSQL's table listing: schema, name, key columns, row estimate.
type PgTableRow = (String, String, Option<Vec<String>>, Option<f32>);
/// MySQL's table listing (bytes: information_schema's collations vary).
type MyTableRow = (Vec<u8>, Vec<u8>, Option<Vec<u8>>, Option<u64>);

/// Every base table and view the connection may read (system schemas left out), with
/// primary keys and row estimates, sorted.
///
/// # Errors
/// [`PluginError::Db`].
pub async fn list_tables(db: &Db) -> Result<Vec<TableInfo>, PluginError> {
    let ctx = "list the tables of the source";
    let mut out: Vec<TableInfo> = match db {
        Db::Pg(p, _) => {
            let rows: Vec<PgTableRow> = sqlx::query_as(
                "SELECT n.nspname::text, c.relname::text, \
                   (SELECT array_agg(a.attname::text ORDER BY k.ord) \
                      FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(att, ord) \
                      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.att \
                     WHERE i.indrelid = c.oid AND i.indisprimary), \
                   c.reltuples \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition \
                  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' \
                  AND has_table_privilege(c.oid, 'SELECT')",
            )
            .fetch_all(p)
            .await
            .map_err(|e| db_err(ctx, e))?;
            rows.into_iter()
                .map(|(schema, name, key, est)| TableInfo {
                    table: SourceTable { schema, name },
                    key: key.unwrap_or_default(),
                    estimate: est.filter(|e| *e >= 0.0).map(|e| e as i64),
                })
                .collect()
        }
        Db::My(p, _) => {
            let rows: Vec<MyTableRow> = sqlx::query_as(
                "SELECT CAST(t.table_schema AS BINARY), CAST(t.table_name AS BINARY), \
                   (SELECT CAST(GROUP_CONCAT(k.column_name ORDER BY k.ordinal_position SEPARATOR '\\n') AS BINARY) \
                      FROM information_schema.key_column_usage k \
                     WHERE k.table_schema = t.table_schema AND k.table_name = t.table_name AND k.constraint_name = 'PRIMARY'), \
                   CAST(t.table_rows AS UNSIGNED) \
                 FROM information_schema.tables t \
                WHERE t.table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')",
            )
            .fetch_all(p)
            .await
            .map_err(|e| db_err(ctx, e))?;
            let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
            rows.into_iter()
                .map(|(schema, name, key, est)| TableInfo {
                    table: SourceTable {
                        schema: text(schema),
                        name: text(name),
                    },
                    key: key
                        .map(|k| text(k).split('\n').map(String::from).collect())
                        .unwrap_or_default(),
                    estimate: est.map(|e| e as i64),
                })
                .collect()
        }
        Db::Lite(p) => {
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
            )
            .fetch_all(p)
            .await
            .map_err(|e| db_err(ctx, e))?;
            let mut out = Vec::new();
            for name in names {
                let key: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT pk, name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk",
                )
                .bind(&name)
                .fetch_all(p)
                .await
                .map_err(|e| db_err(ctx, e))?;
                out.push(TableInfo {
                    table: SourceTable {
                        schema: "main".into(),
                        name,
                    },
                    key: key.into_iter().map(|(_, n)| n).collect(),
                    estimate: None,
                });
            }
            out
        }
    };
    out.sort_by(|a, b| a.table.cmp(&b.table));
    Ok(out)
}

/// The columns of `relation` (a quoted table, or `(<query>)`), as they will be read.
///
/// # Errors
/// [`PluginError::Db`] when the relation does not exist or cannot be read (the
/// driver's message names it).
pub async fn columns(
    db: &Db,
    relation: &str,
    what: &str,
    table: Option<&SourceTable>,
) -> Result<Vec<Column>, PluginError> {
    let d = db.dialect();
    let sql = format!("SELECT * FROM {relation} AS q");
    let ctx = || format!("describe {what}");
    let described: Vec<(String, String, Option<PgKind>)> = match db {
        Db::Pg(p, _) => {
            let mut conn = p.acquire().await.map_err(|e| db_err(ctx(), e))?;
            let st = (&mut *conn)
                .prepare(safe(&sql).into_sql_str())
                .await
                .map_err(|e| db_err(ctx(), e))?;
            st.columns()
                .iter()
                .map(|c| {
                    (
                        c.name().to_string(),
                        c.type_info().name().to_string(),
                        Some(pg_kind(c.type_info())),
                    )
                })
                .collect()
        }
        Db::My(p, _) => {
            let mut conn = p.acquire().await.map_err(|e| db_err(ctx(), e))?;
            let st = (&mut *conn)
                .prepare(safe(&sql).into_sql_str())
                .await
                .map_err(|e| db_err(ctx(), e))?;
            let mut cols: Vec<(String, String, Option<PgKind>)> = st
                .columns()
                .iter()
                .map(|c| (c.name().to_string(), c.type_info().name().to_string(), None))
                .collect();
            // A table's declared types win over the wire's: the protocol flags text
            // of a `_bin` collation (and MariaDB's JSON, a checked LONGTEXT) as binary.
            if let Some(t) = table {
                let declared = my_declared(&mut conn, t).await;
                for (name, ty, _) in &mut cols {
                    if let Some((_, d)) = declared.iter().find(|(n, _)| n == name) {
                        *ty = d.clone();
                    }
                }
            }
            cols
        }
        Db::Lite(p) => {
            let mut conn = p.acquire().await.map_err(|e| db_err(ctx(), e))?;
            // Declared types, as written in the schema (`DECIMAL(10,2)`, `DATETIME`).
            let st = (&mut *conn)
                .prepare(safe(&sql).into_sql_str())
                .await
                .map_err(|e| db_err(ctx(), e))?;
            let names: Vec<String> = st.columns().iter().map(|c| c.name().to_string()).collect();
            let declared = lite_declared(&mut conn, relation).await;
            names
                .into_iter()
                .map(|n| {
                    let t = declared
                        .iter()
                        .find(|(c, _)| c == &n)
                        .map(|(_, t)| t.clone())
                        .unwrap_or_default();
                    (n, t, None)
                })
                .collect()
        }
    };
    Ok(described
        .into_iter()
        .map(|(name, ty, kind)| plan(d, name, ty, kind))
        .collect())
}

/// MySQL: a table's column types as declared (`varchar`, `bigint unsigned`, `json`;
/// MariaDB's JSON columns, LONGTEXT checked by `json_valid`, as `json`). Empty when
/// the catalog cannot be read (the wire's types are used then).
async fn my_declared(conn: &mut sqlx::MySqlConnection, t: &SourceTable) -> Vec<(String, String)> {
    let rows: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT CAST(column_name AS BINARY), CAST(column_type AS BINARY) FROM information_schema.columns \
          WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
    )
    .bind(&t.schema)
    .bind(&t.name)
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    // MariaDB only (MySQL 8's table has no TABLE_NAME; its JSON is its own type).
    let checks: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT CAST(check_clause AS BINARY) FROM information_schema.check_constraints \
          WHERE constraint_schema = ? AND table_name = ?",
    )
    .bind(&t.schema)
    .bind(&t.name)
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    let checks: Vec<String> = checks
        .iter()
        .map(|c| String::from_utf8_lossy(c).to_ascii_lowercase())
        .collect();
    rows.into_iter()
        .map(|(n, ty)| {
            let n = String::from_utf8_lossy(&n).into_owned();
            let mut ty = String::from_utf8_lossy(&ty).into_owned();
            let json_check = format!("json_valid(`{}`)", n.to_ascii_lowercase());
            if ty.eq_ignore_ascii_case("longtext") && checks.iter().any(|c| c.contains(&json_check))
            {
                ty = "json".into();
            }
            (n, ty)
        })
        .collect()
}

/// SQLite: the declared types of a plain table's columns (none for a query).
async fn lite_declared(conn: &mut sqlx::SqliteConnection, relation: &str) -> Vec<(String, String)> {
    // `relation` is a quoted identifier for tables; a query starts with `(`.
    if relation.starts_with('(') {
        return Vec::new();
    }
    let name = relation.trim_matches('"').replace("\"\"", "\"");
    sqlx::query_as::<_, (String, String)>("SELECT name, type FROM pragma_table_info(?)")
        .bind(name)
        .fetch(&mut *conn)
        .try_collect()
        .await
        .unwrap_or_default()
}

/// PostgreSQL's type kind, as far as reading goes.
#[derive(Debug, Clone, PartialEq)]
pub enum PgKind {
    /// A base type.
    Simple,
    /// An array or a composite: read through `to_jsonb`.
    Nested,
    /// An enum: read as text.
    Enum,
    /// A domain over this base type.
    Domain(String, Box<PgKind>),
    /// Ranges and pseudo-types: text.
    Other,
}

fn pg_kind(t: &sqlx::postgres::PgTypeInfo) -> PgKind {
    use sqlx::postgres::PgTypeKind as K;
    match t.kind() {
        K::Simple => PgKind::Simple,
        K::Array(_) | K::Composite(_) => PgKind::Nested,
        K::Enum(_) => PgKind::Enum,
        K::Domain(base) => PgKind::Domain(base.name().to_string(), Box::new(pg_kind(base))),
        _ => PgKind::Other,
    }
}

/// The reading plan of one column.
pub fn plan(d: Dialect, name: String, source_type: String, kind: Option<PgKind>) -> Column {
    let q = format!("q.{}", d.ident(&name));
    let col = |read, expr: String, ty: Option<ColType>| Column {
        name: name.clone(),
        source_type: source_type.clone(),
        read,
        expr,
        col_type: ty,
        as_text: false,
    };
    let text = |expr: String| Column {
        as_text: true,
        ..col(Read::Text, expr, Some(ColType::Str))
    };
    match d {
        Dialect::Postgres => {
            let (base, kind) = match kind.unwrap_or(PgKind::Simple) {
                PgKind::Domain(base, k) => (base, *k),
                k => (source_type.clone(), k),
            };
            match kind {
                PgKind::Nested => {
                    return col(
                        Read::Json,
                        format!("to_jsonb({q})::text"),
                        Some(ColType::Object),
                    );
                }
                PgKind::Enum => return col(Read::Text, format!("{q}::text"), Some(ColType::Str)),
                PgKind::Other => return text(format!("{q}::text")),
                _ => {}
            }
            match base.to_ascii_uppercase().as_str() {
                "INT2" | "INT4" | "INT8" | "OID" => {
                    col(Read::Int, format!("{q}::int8"), Some(ColType::Int))
                }
                "FLOAT4" => col(Read::Float4, format!("{q}::float4"), Some(ColType::Float)),
                "FLOAT8" => col(Read::Float, format!("{q}::float8"), Some(ColType::Float)),
                "NUMERIC" => col(Read::Decimal, format!("{q}::text"), Some(ColType::Decimal)),
                "MONEY" => col(
                    Read::Decimal,
                    format!("{q}::numeric::text"),
                    Some(ColType::Decimal),
                ),
                "BOOL" => col(Read::Bool, format!("{q}::bool"), Some(ColType::Bool)),
                // `CHAR` is char(n) (bpchar; read as is, padding kept: a cast to text
                // would strip it), `"CHAR"` the one-byte internal type.
                "TEXT" | "VARCHAR" | "BPCHAR" | "CHAR" | "NAME" => {
                    col(Read::Text, q.clone(), Some(ColType::Str))
                }
                "CITEXT" | "UUID" | "INTERVAL" | "\"CHAR\"" => {
                    col(Read::Text, format!("{q}::text"), Some(ColType::Str))
                }
                "DATE" => col(Read::Date, format!("{q}::date"), Some(ColType::Date)),
                "TIME" => col(Read::Time, format!("{q}::time"), Some(ColType::Time)),
                "TIMESTAMP" => col(
                    Read::Timestamp,
                    format!("{q}::timestamp"),
                    Some(ColType::DateTime),
                ),
                "TIMESTAMPTZ" => col(
                    Read::Timestamptz,
                    format!("{q}::timestamptz"),
                    Some(ColType::DateTime),
                ),
                "BYTEA" => col(Read::Bytes, format!("{q}::bytea"), Some(ColType::Bytes)),
                "JSON" | "JSONB" => col(Read::Json, format!("{q}::text"), Some(ColType::Object)),
                _ => text(format!("{q}::text")),
            }
        }
        Dialect::MySql => {
            let t = source_type.to_ascii_lowercase();
            let base = t.split(['(', ' ']).next().unwrap_or("");
            let unsigned = t.contains("unsigned");
            let chars = format!("CAST({q} AS CHAR)");
            match base {
                "bigint" if unsigned => col(Read::Decimal, chars, Some(ColType::Decimal)),
                "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year"
                | "boolean" | "bool" => col(
                    Read::Int,
                    format!("CAST({q} AS SIGNED)"),
                    Some(ColType::Int),
                ),
                "bit" => col(
                    Read::Int,
                    format!("CAST({q} AS UNSIGNED)"),
                    Some(ColType::Int),
                ),
                "decimal" | "numeric" | "dec" | "fixed" => {
                    col(Read::Decimal, chars, Some(ColType::Decimal))
                }
                "float" => col(Read::Float4, q.clone(), Some(ColType::Float)),
                "double" | "real" => col(Read::Float, q.clone(), Some(ColType::Float)),
                "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum"
                | "set" => col(Read::Text, chars, Some(ColType::Str)),
                "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                    col(Read::Bytes, q.clone(), Some(ColType::Bytes))
                }
                "date" => col(Read::Date, q.clone(), Some(ColType::Date)),
                "datetime" => col(Read::Timestamp, q.clone(), Some(ColType::DateTime)),
                "timestamp" => col(Read::Timestamptz, q.clone(), Some(ColType::DateTime)),
                "time" => col(Read::TimeText, chars, Some(ColType::Time)),
                "json" => col(Read::Json, chars, Some(ColType::Object)),
                "geometry" | "point" | "linestring" | "polygon" | "multipoint"
                | "multilinestring" | "multipolygon" | "geometrycollection" => {
                    text(format!("ST_AsText({q})"))
                }
                _ => text(chars),
            }
        }
        Dialect::Sqlite => {
            let t = source_type.to_ascii_lowercase();
            let hint = if t.is_empty() {
                None
            } else if t.contains("bool") {
                Some(ColType::Bool)
            } else if t.contains("int") {
                Some(ColType::Int)
            } else if t.starts_with("datetime") || t.starts_with("timestamp") {
                Some(ColType::DateTime)
            } else if t.starts_with("date") {
                Some(ColType::Date)
            } else if t.starts_with("time") {
                Some(ColType::Time)
            } else if t.contains("dec") || t.contains("num") || t.contains("money") {
                Some(ColType::Decimal)
            } else if t.contains("json") {
                Some(ColType::Object)
            } else if t.contains("char") || t.contains("clob") || t.contains("text") {
                Some(ColType::Str)
            } else if t.contains("real") || t.contains("floa") || t.contains("doub") {
                Some(ColType::Float)
            } else if t.contains("blob") {
                Some(ColType::Bytes)
            } else {
                None
            };
            // SQLite keeps any value in any column: `$tables` takes the types from the
            // values read (a DATE column holding 'soon' is text), not from the schema.
            col(Read::Lite(hint), q.clone(), None)
        }
    }
}

/// Checks that every column can be read (a privilege or a broken view shows here),
/// running the table's select for no rows.
///
/// # Errors
/// [`PluginError::Db`].
pub async fn probe(db: &Db, relation: &str, what: &str) -> Result<(), PluginError> {
    let sql = format!("SELECT * FROM {relation} AS q LIMIT 0");
    let ctx = || format!("read {what}");
    match db {
        Db::Pg(p, _) => p.fetch_optional(safe(&sql)).await.map(|_| ()),
        Db::My(p, _) => p.fetch_optional(safe(&sql)).await.map(|_| ()),
        Db::Lite(p) => p.fetch_optional(safe(&sql)).await.map(|_| ()),
    }
    .map_err(|e| db_err(ctx(), e))
}

/// A row count estimate of a table: the server's statistics (from `listed`, the
/// connection's [`list_tables`]), or on SQLite a count.
///
/// # Errors
/// [`PluginError::Db`].
pub async fn estimate(
    db: &Db,
    t: &SourceTable,
    listed: &[TableInfo],
) -> Result<Option<i64>, PluginError> {
    if let Db::Lite(p) = db {
        let sql = format!("SELECT count(*) FROM {}", t.sql(Dialect::Sqlite));
        let n: i64 = sqlx::query(safe(&sql))
            .fetch_one(p)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| db_err(format!("count the rows of {t}"), e))?;
        return Ok(Some(n));
    }
    Ok(listed
        .iter()
        .find(|i| &i.table == t)
        .and_then(|i| i.estimate))
}
