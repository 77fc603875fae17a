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
    /// The schema (or prefix).
    pub schema: String,
    /// The table name.
    pub name: String,
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
        Some(match scheme.as_str() {
            "postgres" | "postgresql" => Dialect::Postgres,
            "mysql" | "mariadb" => Dialect::MySql,
            "sqlite" => Dialect::Sqlite,
            _ => return None,
        })
    }

    /// The target's identifier limit: PostgreSQL 63 bytes, MySQL 64 characters,
    /// SQLite none.
    fn ident_limit(self) -> Option<usize> {
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

    fn ident_len(self, s: &str) -> usize {
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
            Dialect::Sqlite => self.ident(&format!("{}__{}", t.schema, t.name)),
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

    /// `CREATE SCHEMA` (PostgreSQL), `CREATE DATABASE` (MySQL), nothing for SQLite.
    pub fn create_schema(self, schema: &str) -> Option<String> {
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
    fn column_defs(self, cols: &[(String, ColType)], keys: &[String]) -> Vec<String> {
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

    fn list(self, cols: &[String]) -> String {
        cols.iter()
            .map(|c| self.ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn qualified(self, alias: &str, cols: &[String]) -> String {
        cols.iter()
            .map(|c| format!("{alias}.{}", self.ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Null-safe equality.
    fn eq(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Postgres => format!("{a} IS NOT DISTINCT FROM {b}"),
            Dialect::MySql => format!("{a} <=> {b}"),
            Dialect::Sqlite => format!("{a} IS {b}"),
        }
    }

    /// The `COLLATE` clause that makes SQLite compare a column by its type.
    pub fn collate(self, ty: ColType) -> String {
        match (self, ty) {
            (Dialect::Sqlite, ColType::Decimal) => format!(" COLLATE {DECIMAL_COLLATION}"),
            (Dialect::Sqlite, ColType::DateTime) => format!(" COLLATE {DATETIME_COLLATION}"),
            _ => String::new(),
        }
    }

    /// The sort columns with the collation of their type.
    fn sort_cols(self, m: &MergeSpec) -> impl Iterator<Item = (&SortCol, String)> {
        m.sort.iter().enumerate().map(move |(i, s)| {
            let ty = m.sort_types.get(i).copied().unwrap_or(ColType::Str);
            (s, self.collate(ty))
        })
    }

    /// `ORDER BY` terms: sort_by (nulls last), then the latest row first.
    fn order_terms(self, m: &MergeSpec, alias: &str) -> String {
        let mut terms: Vec<String> = Vec::new();
        for (s, coll) in self.sort_cols(m) {
            let c = format!("{alias}{}", self.ident(&s.name));
            terms.push(format!("CASE WHEN {c} IS NULL THEN 1 ELSE 0 END"));
            terms.push(format!(
                "{c}{coll} {}",
                if s.descending { "DESC" } else { "ASC" }
            ));
        }
        terms.push(format!("{alias}{} DESC", self.ident(ORD)));
        terms.join(", ")
    }

    /// The staged rows a merge reads, as a `FROM` item: the whole stage, or with
    /// `set_by` only each set's newest version (the rows of the last commit that
    /// delivered the set: an older commit's rows of that set are replaced by it).
    /// `only_ver` restricts it to one commit (history loads version by version).
    pub fn source(self, stage: &str, m: &MergeSpec, only_ver: Option<u64>) -> String {
        let s = self.ident(stage);
        let v = self.ident(VER);
        if let Some(ver) = only_ver {
            return format!("(SELECT * FROM {s} WHERE {v} = {ver}) _src");
        }
        if m.sets.is_empty() {
            return s;
        }
        format!(
            "(SELECT * FROM (SELECT _x.*, MAX(_x.{v}) OVER (PARTITION BY {}) AS _anchovies_mv FROM {s} _x) _v WHERE {v} = _anchovies_mv) _src",
            self.qualified("_x", &m.sets)
        )
    }

    /// The rows of `src` (a [`Dialect::source`]), one per key: the first by `sort_by`,
    /// ties to the latest. Without keys: every row in arrival order.
    pub fn deduped(self, src: &str, cols: &[String], m: &MergeSpec) -> String {
        let list = self.list(cols);
        if m.keys.is_empty() {
            return format!("SELECT {list} FROM {src} ORDER BY {}", self.ident(ORD));
        }
        format!(
            "SELECT {list} FROM (SELECT {list}, ROW_NUMBER() OVER (PARTITION BY {} ORDER BY {}) AS _anchovies_rn FROM {src}) _d WHERE _anchovies_rn = 1",
            self.list(&m.keys),
            self.order_terms(m, ""),
        )
    }

    /// True when row `n` (new) sorts first or ties with row `o` (old) by `sort_by`,
    /// comparing each column by its type.
    fn sorts_first(self, m: &MergeSpec, n: &str, o: &str) -> String {
        // Built from the last column backwards: first(i) = better(i) OR (equal(i) AND first(i+1)).
        let mut expr = "1=1".to_string();
        let cols: Vec<_> = self.sort_cols(m).collect();
        for (s, coll) in cols.into_iter().rev() {
            let (nc, oc) = (
                format!("{n}.{}", self.ident(&s.name)),
                format!("{o}.{}", self.ident(&s.name)),
            );
            let op = if s.descending { ">" } else { "<" };
            // Never NULL (three-valued logic would make `NOT first` keep a loser):
            // a NULL sorts last.
            let better = format!("({nc} IS NOT NULL AND ({oc} IS NULL OR {nc}{coll} {op} {oc}))");
            expr = format!(
                "({better} OR ({} AND {expr}))",
                self.eq(&format!("{nc}{coll}"), &oc)
            );
        }
        expr
    }

    /// Statements that merge the staging table into the target, in order. The last
    /// statement's affected-row count is the rows written. `keys_unique`: the staged
    /// rows already hold one row per key, so no winner needs picking.
    pub fn merge(
        self,
        target: &TableRef,
        stage: &str,
        cols: &[String],
        m: &MergeSpec,
        keys_unique: bool,
    ) -> Vec<String> {
        let t = self.table(target);
        let s = self.ident(stage);
        let src = self.source(stage, m, None);
        let list = self.list(cols);
        let mut out = Vec::new();
        if !m.sets.is_empty() {
            let cond: Vec<String> = m
                .sets
                .iter()
                .map(|c| {
                    self.eq(
                        &format!("_t.{}", self.ident(c)),
                        &format!("_s.{}", self.ident(c)),
                    )
                })
                .collect();
            out.push(match self {
                Dialect::MySql => format!(
                    "DELETE _t FROM {t} AS _t WHERE EXISTS (SELECT 1 FROM {s} AS _s WHERE {})",
                    cond.join(" AND ")
                ),
                _ => format!(
                    "DELETE FROM {t} AS _t WHERE EXISTS (SELECT 1 FROM {s} AS _s WHERE {})",
                    cond.join(" AND ")
                )
                .replace(
                    &format!("DELETE FROM {t} AS _t"),
                    &format!("DELETE FROM {t} AS _t"),
                ),
            });
        }
        if m.keys.is_empty() {
            out.push(format!(
                "INSERT INTO {t} ({list}) {}",
                self.deduped(&src, cols, m)
            ));
            return out;
        }
        let deduped = if keys_unique {
            format!("SELECT {list} FROM {src}")
        } else {
            self.deduped(&src, cols, m)
        };
        match self {
            Dialect::Postgres | Dialect::Sqlite => {
                let non_keys: Vec<&String> = cols.iter().filter(|c| !m.keys.contains(c)).collect();
                let action = if non_keys.is_empty() {
                    "DO NOTHING".to_string()
                } else {
                    let sets: Vec<String> = non_keys
                        .iter()
                        .map(|c| format!("{0} = excluded.{0}", self.ident(c)))
                        .collect();
                    let guard = if m.sort.is_empty() {
                        String::new()
                    } else {
                        format!(" WHERE {}", self.sorts_first(m, "excluded", "_t"))
                    };
                    format!("DO UPDATE SET {}{guard}", sets.join(", "))
                };
                out.push(format!(
                    "INSERT INTO {t} AS _t ({list}) SELECT {list} FROM ({deduped}) _n WHERE 1=1 ON CONFLICT ({}) {action}",
                    self.list(&m.keys)
                ));
            }
            Dialect::MySql => {
                // MySQL evaluates ON DUPLICATE KEY assignments one by one, so a guarded
                // update is done as: keep the winners, delete the stored rows they
                // replace, insert them.
                let keyeq: Vec<String> = m
                    .keys
                    .iter()
                    .map(|k| format!("_t.{0} = _n.{0}", self.ident(k)))
                    .collect();
                let win = format!("{stage}_win");
                out.push(format!(
                    "DROP TEMPORARY TABLE IF EXISTS {}",
                    self.ident(&win)
                ));
                out.push(format!(
                    "CREATE TEMPORARY TABLE {} AS {deduped}",
                    self.ident(&win)
                ));
                let w = self.ident(&win);
                if !m.sort.is_empty() {
                    out.push(format!(
                        "DELETE _n FROM {w} AS _n JOIN {t} AS _t ON {} WHERE NOT ({})",
                        keyeq.join(" AND "),
                        self.sorts_first(m, "_n", "_t")
                    ));
                }
                out.push(format!(
                    "DELETE _t FROM {t} AS _t JOIN {w} AS _n ON {}",
                    keyeq.join(" AND ")
                ));
                out.push(format!(
                    "INSERT INTO {t} ({list}) SELECT {} FROM {w} AS _n",
                    self.qualified("_n", cols)
                ));
            }
        }
        out
    }

    /// The SQL type of the `_del` column.
    pub fn del_type(self) -> &'static str {
        match self {
            Dialect::Postgres => "TIMESTAMPTZ",
            Dialect::MySql => "DATETIME(6)",
            Dialect::Sqlite => "TEXT",
        }
    }

    /// The current UTC time, `secs_ago` seconds back, in the `_del` column's type.
    fn now_minus(self, secs_ago: u64) -> String {
        match self {
            Dialect::Postgres => format!("(now() - interval '{secs_ago} seconds')"),
            Dialect::MySql => format!("(UTC_TIMESTAMP(6) - INTERVAL {secs_ago} SECOND)"),
            Dialect::Sqlite => {
                format!("strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-{secs_ago} seconds')")
            }
        }
    }

    /// `CREATE TABLE` of a history table: the columns plus `_seq` and `_del`, with the
    /// key plus `_seq` as primary key.
    pub fn create_history_table(
        self,
        t: &TableRef,
        cols: &[(String, ColType)],
        keys: &[String],
    ) -> String {
        let mut parts = self.column_defs(cols, keys);
        parts.push(format!("{} BIGINT NOT NULL", self.ident(SEQ)));
        parts.push(format!("{} {}", self.ident(DEL), self.del_type()));
        let mut pk: Vec<String> = keys.to_vec();
        pk.push(SEQ.to_string());
        parts.push(format!("PRIMARY KEY ({})", self.list(&pk)));
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.table(t),
            parts.join(", ")
        )
    }

    /// Statements of a history merge of the staged rows of one upstream commit `seq`:
    /// pick one winner per key, drop winners older than the current stored version
    /// (`sort_by`), stamp `_del` on the versions they supersede, insert them as version
    /// `seq`, and drop versions superseded longer than `ttl` seconds ago (`(seq, ttl)`).
    /// A load of several commits runs these once per commit, oldest first. Returns the
    /// statements and the indexes of the supersede and insert statements (for counting).
    pub fn merge_history(
        self,
        target: &TableRef,
        stage: &str,
        cols: &[String],
        m: &MergeSpec,
        keys_unique: bool,
        (seq, ttl): (u64, Option<u64>),
    ) -> (Vec<String>, usize, usize) {
        let t = self.table(target);
        let win = self.ident(&format!("{stage}_win"));
        let list = self.list(cols);
        let src = self.source(stage, m, Some(seq));
        let deduped = if keys_unique {
            format!("SELECT {list} FROM {src}")
        } else {
            self.deduped(&src, cols, m)
        };
        let keyeq: Vec<String> = m
            .keys
            .iter()
            .map(|k| format!("_t.{0} = _n.{0}", self.ident(k)))
            .collect();
        let keyeq = keyeq.join(" AND ");
        let del = self.ident(DEL);
        let mut out = vec![
            match self {
                Dialect::MySql => format!("DROP TEMPORARY TABLE IF EXISTS {win}"),
                Dialect::Postgres => format!("DROP TABLE IF EXISTS {win}"),
                Dialect::Sqlite => format!("DROP TABLE IF EXISTS temp.{win}"),
            },
            match self {
                Dialect::MySql => format!("CREATE TEMPORARY TABLE {win} AS {deduped}"),
                _ => format!("CREATE TEMP TABLE {win} AS {deduped}"),
            },
        ];
        if !m.sort.is_empty() {
            let first = self.sorts_first(m, "_n", "_t");
            out.push(match self {
                Dialect::MySql => format!("DELETE _n FROM {win} AS _n JOIN {t} AS _t ON {keyeq} AND _t.{del} IS NULL WHERE NOT ({first})"),
                _ => format!("DELETE FROM {win} AS _n WHERE EXISTS (SELECT 1 FROM {t} AS _t WHERE {keyeq} AND _t.{del} IS NULL AND NOT ({first}))"),
            });
        }
        let now = self.now_minus(0);
        let supersede = out.len();
        out.push(match self {
            Dialect::MySql => format!("UPDATE {t} AS _t JOIN {win} AS _n ON {keyeq} SET _t.{del} = {now} WHERE _t.{del} IS NULL"),
            _ => format!("UPDATE {t} AS _t SET {del} = {now} WHERE _t.{del} IS NULL AND EXISTS (SELECT 1 FROM {win} AS _n WHERE {keyeq})"),
        });
        let insert = out.len();
        out.push(format!(
            "INSERT INTO {t} ({list}, {}) SELECT {list}, {seq} FROM {win}",
            self.ident(SEQ)
        ));
        if let Some(ttl) = ttl {
            out.push(format!(
                "DELETE FROM {t} WHERE {del} IS NOT NULL AND {del} < {}",
                self.now_minus(ttl)
            ));
        }
        out.push(match self {
            Dialect::MySql => format!("DROP TEMPORARY TABLE IF EXISTS {win}"),
            Dialect::Postgres => format!("DROP TABLE IF EXISTS {win}"),
            Dialect::Sqlite => format!("DROP TABLE IF EXISTS temp.{win}"),
        });
        (out, supersede, insert)
    }

    /// Counts staged keys already stored (to split written rows into inserts and updates).
    pub fn count_existing(self, target: &TableRef, stage: &str, m: &MergeSpec) -> Option<String> {
        if m.keys.is_empty() {
            return None;
        }
        let keyeq: Vec<String> = m
            .keys
            .iter()
            .map(|k| format!("_t.{0} = _s.{0}", self.ident(k)))
            .collect();
        Some(format!(
            "SELECT COUNT(*) FROM (SELECT DISTINCT {} FROM {} _s) _s WHERE EXISTS (SELECT 1 FROM {} _t WHERE {})",
            self.list(&m.keys),
            self.ident(stage),
            self.table(target),
            keyeq.join(" AND ")
        ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use anchovy_core::tbl::SortedColSelect;

    #[test]
    fn identifiers_are_quoted_and_cannot_break_out() {
        assert_eq!(Dialect::Postgres.ident("order"), "\"order\"");
        assert_eq!(
            Dialect::Postgres.ident("a\"; DROP TABLE x; --"),
            "\"a\"\"; DROP TABLE x; --\""
        );
        assert_eq!(Dialect::MySql.ident("we`ird"), "`we``ird`");
        let t = TableRef {
            schema: "s".into(),
            name: "my table".into(),
        };
        assert_eq!(Dialect::Sqlite.table(&t), "\"s__my table\"");
        assert_eq!(Dialect::Postgres.table(&t), "\"s\".\"my table\"");
    }

    #[test]
    fn long_names_are_cut_with_a_hash_of_the_whole_name() {
        let a = format!("{}_alpha", "x".repeat(60));
        let b = format!("{}_beta", "x".repeat(60));
        let (fa, fb) = (Dialect::Postgres.fit(&a), Dialect::Postgres.fit(&b));
        assert_eq!(fa.len(), 63);
        assert_ne!(fa, fb);
        assert_eq!(fa, format!("{}_{:08x}", "x".repeat(54), name_hash(&a)));
        assert_eq!(Dialect::Postgres.fit("short"), "short");
        assert_eq!(Dialect::Sqlite.fit(&a), a);
        // Multi-byte characters: PostgreSQL counts bytes and never cuts a character.
        let e = "é".repeat(40);
        let fe = Dialect::Postgres.fit(&e);
        assert!(fe.len() <= 63, "{fe}");
        assert_eq!(Dialect::MySql.fit(&e), e, "MySQL counts characters");
        // Pinned: the rule must never change for existing tables.
        assert_eq!(name_hash("orders"), 0x325e_96ec);
    }

    #[test]
    fn widening_follows_int_decimal_text_and_date_datetime() {
        use ColType::*;
        assert_eq!(widen(Int, Decimal), Some(Decimal));
        assert_eq!(widen(Int, Float), Some(Decimal));
        assert_eq!(widen(Decimal, Str), Some(Str));
        assert_eq!(widen(Date, DateTime), Some(DateTime));
        assert_eq!(widen(DateTime, Date), None);
        assert_eq!(widen(Decimal, Int), None);
        assert_eq!(widen(Str, Int), None);
        assert_eq!(widen(Bool, Int), Some(Str));
    }

    #[test]
    fn sort_guard_and_dedup() {
        let m = MergeSpec {
            keys: vec!["id".into()],
            sets: vec![],
            sort: SortedColSelect::parse("-updated_at").0,
            sort_types: vec![ColType::DateTime],
        };
        let sql = Dialect::Postgres.merge(
            &TableRef {
                schema: "s".into(),
                name: "t".into(),
            },
            "stage",
            &["id".into(), "updated_at".into()],
            &m,
            false,
        );
        assert_eq!(sql.len(), 1);
        assert!(
            sql[0].contains(
                "ON CONFLICT (\"id\") DO UPDATE SET \"updated_at\" = excluded.\"updated_at\" WHERE"
            ),
            "{}",
            sql[0]
        );
        assert!(
            sql[0].contains("excluded.\"updated_at\" > _t.\"updated_at\""),
            "{}",
            sql[0]
        );
        assert!(
            sql[0].contains("PARTITION BY \"id\" ORDER BY CASE WHEN \"updated_at\" IS NULL"),
            "{}",
            sql[0]
        );
        let my = Dialect::MySql.merge(
            &TableRef {
                schema: "s".into(),
                name: "t".into(),
            },
            "stage",
            &["id".into(), "updated_at".into()],
            &m,
            false,
        );
        assert!(
            my.iter()
                .any(|s| s.starts_with("DELETE _n FROM `stage_win`")),
            "{my:?}"
        );
    }
}
