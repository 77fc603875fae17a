//! SQL text for PostgreSQL, MySQL/MariaDB and SQLite: identifier quoting, column types,
//! widening, and the set-based merge statements. Pure functions, no I/O.
//!
//! Every identifier goes through [`Dialect::ident`]; values never appear in SQL text
//! (they travel by COPY or bind parameters), so table and column names cannot change
//! the statements that run.

use anchovy_core::ColType;
use anchovy_core::tbl::SortCol;

/// The SQL flavour of a target database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
    /// SQLite.
    Sqlite,
}

/// A table in the target: schema (PostgreSQL/MySQL) and name. SQLite has no schemas;
/// the schema becomes a name prefix (`<schema>__<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    /// The schema (or prefix); empty: the database's default schema.
    pub schema: String,
    /// The table name.
    pub name: String,
}

impl TableRef {
    /// Its name in SQLite, which has no schemas: `<schema>__<name>`, or the name alone
    /// without a schema.
    pub fn sqlite_name(&self) -> String {
        if self.schema.is_empty() {
            self.name.clone()
        } else {
            format!("{}__{}", self.schema, self.name)
        }
    }
}

/// What a merge does, from the table's `unique_by`, `set_by` and `sort_by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeSpec {
    /// Key columns (`unique_by`), empty for append.
    pub keys: Vec<String>,
    /// Set columns (`set_by`): whole sets are replaced.
    pub sets: Vec<String>,
    /// Sort order (`sort_by`): the first row wins within the data and against stored rows.
    pub sort: Vec<SortCol>,
    /// The type of each `sort` column (same order; missing = text). Ordering follows
    /// the type: on SQLite, decimals and datetimes compare through the collations of
    /// [`super::collate`], never as text of unequal shape.
    pub sort_types: Vec<ColType>,
}

/// The staging table's version column: the upstream commit a row came in. `set_by`
/// keeps each set's newest version, `history` inserts one version per commit.
pub const VER: &str = "_anchovies_ver";

/// SQLite collation comparing decimal text as numbers (registered on every connection).
pub const DECIMAL_COLLATION: &str = "anchovies_decimal";
/// SQLite collation comparing datetime text as instants (a value without an offset
/// counts as UTC, as PostgreSQL's `timestamptz` with `TimeZone=UTC` reads it).
pub const DATETIME_COLLATION: &str = "anchovies_datetime";

/// The staging table's row-order column.
pub const ORD: &str = "_anchovies_ord";

impl Dialect {
    /// The dialect of a sqlx URL.
    pub fn from_url(url: &str) -> Option<Dialect> {
        let scheme = url.split(':').next()?.to_ascii_lowercase();
        // A SQLAlchemy driver suffix (`postgresql+psycopg2`) names the same database.
        let scheme = scheme.split('+').next().unwrap_or_default();
        Some(match scheme {
            "postgres" | "postgresql" => Dialect::Postgres,
            "mysql" | "mariadb" => Dialect::MySql,
            "sqlite" => Dialect::Sqlite,
            _ => return None,
        })
    }

    /// The target's identifier limit: PostgreSQL 63 bytes, MySQL 64 characters,
    /// SQLite none.
    pub(super) fn ident_limit(self) -> Option<usize> {
        match self {
            Dialect::Postgres => Some(63),
            Dialect::MySql => Some(64),
            Dialect::Sqlite => None,
        }
    }

    /// True when the target compares column names without regard to case (SQLite
    /// and MySQL; PostgreSQL's quoted names are case-sensitive).
    pub fn folds_column_case(self) -> bool {
        self != Dialect::Postgres
    }

    /// A source name as the target can hold it, by one deterministic rule: a name
    /// within the target's identifier limit is kept as it is; a longer one is cut and
    /// gets `_` plus 8 hex digits of a hash of the whole name ([`name_hash`]), so two
    /// long names that share a prefix never become one (the database would otherwise
    /// truncate both to the same identifier).
    pub fn fit(self, name: &str) -> String {
        match self.ident_limit() {
            Some(limit) if self.ident_len(name) > limit => self.suffixed(name),
            _ => name.to_string(),
        }
    }

    /// `name` cut to fit with `_<hash>` appended (always), for long names and for a
    /// name that would collide with another in the target.
    pub fn suffixed(self, name: &str) -> String {
        let tail = format!("_{:08x}", name_hash(name));
        let Some(limit) = self.ident_limit() else {
            return format!("{name}{tail}");
        };
        let room = limit - tail.len();
        let mut cut = String::new();
        for c in name.chars() {
            if self.ident_len(&cut) + self.ident_len(c.encode_utf8(&mut [0; 4])) > room {
                break;
            }
            cut.push(c);
        }
        format!("{cut}{tail}")
    }

    pub(super) fn ident_len(self, s: &str) -> usize {
        match self {
            Dialect::MySql => s.chars().count(),
            _ => s.len(),
        }
    }

    /// Quotes an identifier (doubling the quote character inside it).
    pub fn ident(self, name: &str) -> String {
        match self {
            Dialect::MySql => format!("`{}`", name.replace('`', "``")),
            _ => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    /// The quoted, schema-qualified table name.
    pub fn table(self, t: &TableRef) -> String {
        match self {
            Dialect::Sqlite => self.ident(&t.sqlite_name()),
            _ if t.schema.is_empty() => self.ident(&t.name),
            _ => format!("{}.{}", self.ident(&t.schema), self.ident(&t.name)),
        }
    }

    /// The SQL type for a column type. `key` columns get an indexable type on MySQL.
    pub fn sql_type(self, t: ColType, key: bool) -> &'static str {
        use ColType::*;
        match self {
            Dialect::Postgres => match t {
                Str => "TEXT",
                Int => "BIGINT",
                Float => "DOUBLE PRECISION",
                Decimal => "NUMERIC",
                Bool => "BOOLEAN",
                Date => "DATE",
                DateTime => "TIMESTAMPTZ",
                Time => "TIME",
                Bytes => "BYTEA",
                Object => "JSONB",
            },
            Dialect::MySql => match t {
                Str if key => "VARCHAR(255)",
                Str => "LONGTEXT",
                Int => "BIGINT",
                Float => "DOUBLE",
                Decimal => "DECIMAL(65,20)",
                Bool => "BOOLEAN",
                Date => "DATE",
                DateTime => "DATETIME(6)",
                Time => "TIME(6)",
                Bytes if key => "VARBINARY(255)",
                Bytes => "LONGBLOB",
                Object => "JSON",
            },
            // SQLite is dynamically typed: exact decimals, dates and times stay text
            // (TEXT affinity: the declared name contains TEXT and no INT), and the
            // name says which type they hold, so the uploader reads it back and
            // orders them by type.
            Dialect::Sqlite => match t {
                Int | Bool => "INTEGER",
                Float => "REAL",
                Bytes => "BLOB",
                Str => "TEXT",
                Decimal => "DECIMAL TEXT",
                Date => "DATE TEXT",
                DateTime => "DATETIME TEXT",
                Time => "TIME TEXT",
                Object => "JSON TEXT",
            },
        }
    }

    /// Maps a type reported by the database back to a column type.
    pub fn col_type_of(self, sql_type: &str) -> ColType {
        let t = sql_type.to_ascii_lowercase();
        let t = t.trim();
        if t.starts_with("bigint")
            || t.starts_with("integer")
            || t.starts_with("int")
            || t == "smallint"
        {
            return ColType::Int;
        }
        if t.starts_with("tinyint(1)") || t.starts_with("bool") {
            return ColType::Bool;
        }
        if t.starts_with("double") || t == "real" || t.starts_with("float") {
            return ColType::Float;
        }
        if t.starts_with("numeric") || t.starts_with("decimal") {
            return ColType::Decimal;
        }
        if t.starts_with("timestamp") || t.starts_with("datetime") {
            return ColType::DateTime;
        }
        if t == "date" || t.starts_with("date ") {
            return ColType::Date;
        }
        if t.starts_with("time") {
            return ColType::Time;
        }
        if t == "bytea" || t.contains("blob") || t.contains("binary") {
            return ColType::Bytes;
        }
        if t.starts_with("json") {
            return ColType::Object;
        }
        ColType::Str
    }

    /// `CREATE SCHEMA` (PostgreSQL), `CREATE DATABASE` (MySQL), nothing for SQLite or
    /// the default schema (an empty name).
    pub fn create_schema(self, schema: &str) -> Option<String> {
        if schema.is_empty() {
            return None;
        }
        match self {
            Dialect::Postgres => Some(format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                self.ident(schema)
            )),
            Dialect::MySql => Some(format!(
                "CREATE DATABASE IF NOT EXISTS {}",
                self.ident(schema)
            )),
            Dialect::Sqlite => None,
        }
    }

    /// Column definitions; key columns are NOT NULL (and indexable on MySQL).
    pub(super) fn column_defs(self, cols: &[(String, ColType)], keys: &[String]) -> Vec<String> {
        cols.iter()
            .map(|(c, ty)| {
                let key = keys.contains(c);
                format!(
                    "{} {}{}",
                    self.ident(c),
                    self.sql_type(*ty, key),
                    if key { " NOT NULL" } else { "" }
                )
            })
            .collect()
    }

    /// `CREATE TABLE` with the key as primary key.
    pub fn create_table(self, t: &TableRef, cols: &[(String, ColType)], keys: &[String]) -> String {
        let mut parts = self.column_defs(cols, keys);
        if !keys.is_empty() {
            parts.push(format!("PRIMARY KEY ({})", self.list(keys)));
        }
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.table(t),
            parts.join(", ")
        )
    }

    /// `ALTER TABLE ... ADD COLUMN`.
    pub fn add_column(self, t: &TableRef, col: &str, ty: ColType) -> String {
        format!(
            "ALTER TABLE {} ADD COLUMN {} {}",
            self.table(t),
            self.ident(col),
            self.sql_type(ty, false)
        )
    }

    /// Statements that widen a column to a new type. SQLite cannot change a declared
    /// type, and its affinity would turn a long decimal into a lossy float, so there the
    /// column is rebuilt: a new column, a copy, a drop and a rename (key columns, which
    /// SQLite cannot drop, keep their declared type).
    pub fn alter_type(self, t: &TableRef, col: &str, ty: ColType, key: bool) -> Vec<String> {
        let c = self.ident(col);
        let st = self.sql_type(ty, key);
        let table = self.table(t);
        match self {
            Dialect::Postgres => {
                let using = match ty {
                    ColType::Str => format!("{c}::text"),
                    _ => format!("{c}::{st}"),
                };
                vec![format!(
                    "ALTER TABLE {table} ALTER COLUMN {c} TYPE {st} USING {using}"
                )]
            }
            Dialect::MySql => vec![format!(
                "ALTER TABLE {table} MODIFY COLUMN {c} {st}{}",
                if key { " NOT NULL" } else { "" }
            )],
            Dialect::Sqlite if key => Vec::new(),
            Dialect::Sqlite => {
                let tmp = self.ident("_anchovies_widen");
                vec![
                    format!("ALTER TABLE {table} ADD COLUMN {tmp} {st}"),
                    format!("UPDATE {table} SET {tmp} = {c}"),
                    format!("ALTER TABLE {table} DROP COLUMN {c}"),
                    format!("ALTER TABLE {table} RENAME COLUMN {tmp} TO {c}"),
                ]
            }
        }
    }

    /// An index on the set columns, for the set-replace delete.
    pub fn create_set_index(self, t: &TableRef, sets: &[String]) -> String {
        let name = format!("ix_{}_{}_set", t.schema, t.name);
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(60)
            .collect();
        let on = match self {
            Dialect::Sqlite => self.table(t),
            _ => self.table(t),
        };
        let if_not = match self {
            Dialect::MySql => "",
            _ => "IF NOT EXISTS ",
        };
        format!(
            "CREATE INDEX {if_not}{} ON {on} ({})",
            self.ident(&name),
            self.list(sets)
        )
    }

    /// A temporary staging table shaped like the target plus the row-order column.
    pub fn create_stage(self, stage: &str, cols: &[(String, ColType)]) -> String {
        let mut parts: Vec<String> = cols
            .iter()
            .map(|(c, ty)| format!("{} {}", self.ident(c), self.sql_type(*ty, false)))
            .collect();
        parts.push(format!("{} BIGINT", self.ident(ORD)));
        parts.push(format!("{} BIGINT", self.ident(VER)));
        let temp = match self {
            Dialect::Postgres => "CREATE TEMPORARY TABLE",
            Dialect::MySql => "CREATE TEMPORARY TABLE",
            Dialect::Sqlite => "CREATE TEMP TABLE",
        };
        let tail = if self == Dialect::Postgres {
            " ON COMMIT DROP"
        } else {
            ""
        };
        format!("{temp} {} ({}){tail}", self.ident(stage), parts.join(", "))
    }

    /// An index on the staging table's version column, for loads that read the stage
    /// commit by commit (history over many commits).
    pub fn index_stage_versions(self, stage: &str) -> String {
        let (s, v) = (self.ident(stage), self.ident(VER));
        let ix = self.ident(&format!("{stage}_ver"));
        match self {
            Dialect::Postgres => format!("CREATE INDEX ON {s} ({v})"),
            Dialect::MySql => format!("CREATE INDEX {ix} ON {s} ({v})"),
            Dialect::Sqlite => format!("CREATE INDEX temp.{ix} ON {s} ({v})"),
        }
    }

    /// `DROP TABLE` of the staging table (MySQL and SQLite keep temp tables per connection).
    pub fn drop_stage(self, stage: &str) -> Option<String> {
        match self {
            Dialect::Postgres => None,
            Dialect::MySql => Some(format!(
                "DROP TEMPORARY TABLE IF EXISTS {}",
                self.ident(stage)
            )),
            Dialect::Sqlite => Some(format!("DROP TABLE IF EXISTS temp.{}", self.ident(stage))),
        }
    }
    /// The position table: one row per (target table, upstream). Keyed by the table
    /// the rows land in, not by the uploader: any uploader that loads one upstream table
    /// into the same target table continues from the same position, so no commit is
    /// loaded twice whatever the uploader ids. `uploader` records who advanced it last,
    /// `origin` the upstream's commit history it counts in ([`anchovy_core::commit::origin`]).
    pub fn create_positions(self) -> String {
        let txt = if self == Dialect::MySql {
            "VARCHAR(255)"
        } else {
            "TEXT"
        };
        format!(
            "CREATE TABLE IF NOT EXISTS {} (target {txt} NOT NULL, upstream {txt} NOT NULL, tbl {txt} NOT NULL, seq BIGINT NOT NULL, updated_at {txt} NOT NULL, uploader {txt} NOT NULL, origin {txt} NOT NULL, PRIMARY KEY (target, upstream))",
            self.ident(POSITIONS)
        )
    }

    /// The load history (`audit: true`): one row per load of a table, written in the
    /// load's transaction (`status` ok) or, for a load that failed and rolled back,
    /// after it (`status` error, with the error). Times are RFC 3339 UTC text, which
    /// sorts and compares as time.
    pub fn create_loads(self) -> String {
        let txt = if self == Dialect::MySql {
            "VARCHAR(255)"
        } else {
            "TEXT"
        };
        let long = if self == Dialect::MySql { "TEXT" } else { txt };
        format!(
            "CREATE TABLE IF NOT EXISTS {} (anchovy {txt} NOT NULL, upstream {txt} NOT NULL, tbl {txt} NOT NULL, target {txt} NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL, rows_inserted BIGINT NOT NULL, rows_updated BIGINT NOT NULL, rows_deleted BIGINT NOT NULL, rows_skipped BIGINT NOT NULL, files BIGINT NOT NULL, started_at {txt} NOT NULL, finished_at {txt} NOT NULL, status {txt} NOT NULL, error {long})",
            self.ident(LOADS)
        )
    }

    /// A bind placeholder.
    pub fn param(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            _ => "?".to_string(),
        }
    }
}

/// History column: the upstream commit that delivered a version.
pub const SEQ: &str = "_seq";
/// History column: when a version was superseded (null for the current version).
pub const DEL: &str = "_del";

/// FNV-1a (32 bits) of a name: the stable hash of [`Dialect::fit`]'s rule (it never
/// changes between versions, so a mapped name never changes for an existing table).
pub fn name_hash(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The name of the position table in the target's default schema.
pub const POSITIONS: &str = "_anchovies_positions";

/// The name of the load history table (`audit: true`) in the target's default schema.
pub const LOADS: &str = "_anchovies_loads";

/// The type a column must become to hold both its current and an incoming type:
/// int -> decimal -> text, float -> decimal, date -> datetime; anything else -> text.
/// `None` when the current type already holds the incoming one.
pub fn widen(current: ColType, incoming: ColType) -> Option<ColType> {
    use ColType::*;
    if current == incoming {
        return None;
    }
    let holds = matches!(
        (current, incoming),
        (Str, _) | (Decimal, Int) | (Float, Int) | (DateTime, Date) | (Object, _)
    );
    if holds {
        return None;
    }
    Some(match (current, incoming) {
        (Int, Decimal) | (Int, Float) | (Float, Decimal) | (Decimal, Float) => Decimal,
        (Date, DateTime) => DateTime,
        _ => Str,
    })
}

mod merge;
#[cfg(test)]
mod tests;
