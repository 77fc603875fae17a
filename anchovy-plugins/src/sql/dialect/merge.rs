//! The merge statements: picking one row per key (`sort_by`), upserts, replaced sets
//! and history versions, as set-based SQL of each dialect.

use super::*;

impl Dialect {
    pub(super) fn list(self, cols: &[String]) -> String {
        cols.iter()
            .map(|c| self.ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(super) fn qualified(self, alias: &str, cols: &[String]) -> String {
        cols.iter()
            .map(|c| format!("{alias}.{}", self.ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Null-safe equality.
    pub(super) fn eq(self, a: &str, b: &str) -> String {
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
    pub(super) fn sort_cols(self, m: &MergeSpec) -> impl Iterator<Item = (&SortCol, String)> {
        m.sort.iter().enumerate().map(move |(i, s)| {
            let ty = m.sort_types.get(i).copied().unwrap_or(ColType::Str);
            (s, self.collate(ty))
        })
    }

    /// `ORDER BY` terms: sort_by (nulls last), then the latest row first.
    pub(super) fn order_terms(self, m: &MergeSpec, alias: &str) -> String {
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
    pub(super) fn sorts_first(self, m: &MergeSpec, n: &str, o: &str) -> String {
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

    /// `mode: replace_where`: deletes the stored rows whose `col` lies within the
    /// staged rows' [min, max] (nothing when the stage is empty). MySQL may read a
    /// temporary table once per statement, hence its join.
    pub fn delete_range(self, target: &TableRef, stage: &str, col: &str) -> String {
        let (t, s, c) = (self.table(target), self.ident(stage), self.ident(col));
        match self {
            Dialect::MySql => format!(
                "DELETE _t FROM {t} AS _t JOIN (SELECT MIN({c}) AS _lo, MAX({c}) AS _hi FROM {s}) AS _r ON _t.{c} >= _r._lo AND _t.{c} <= _r._hi"
            ),
            _ => format!(
                "DELETE FROM {t} WHERE {c} >= (SELECT MIN({c}) FROM {s}) AND {c} <= (SELECT MAX({c}) FROM {s})"
            ),
        }
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
    pub(super) fn now_minus(self, secs_ago: u64) -> String {
        match self {
            Dialect::Postgres => format!("(now() - interval '{secs_ago} seconds')"),
            Dialect::MySql => format!("(UTC_TIMESTAMP(6) - INTERVAL {secs_ago} SECOND)"),
            Dialect::Sqlite => {
                format!("strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-{secs_ago} seconds')")
            }
        }
    }

    /// The current time, `secs_ago` seconds back, as epoch microseconds: the `_del` of
    /// the original tool's history tables (a number).
    pub(super) fn now_micros_minus(self, secs_ago: u64) -> String {
        let back = secs_ago.saturating_mul(1_000_000);
        match self {
            Dialect::Postgres => {
                format!("(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000) - {back})")
            }
            Dialect::MySql => format!("(FLOOR(UNIX_TIMESTAMP(NOW(6)) * 1000000) - {back})"),
            Dialect::Sqlite => format!(
                "(CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) - {back})"
            ),
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
    /// `original`: the table has the original tool's layout, and this commit is the
    /// k-th of the load: `_del` is stamped in epoch microseconds and `_seq` is epoch
    /// microseconds plus k, as the original numbers versions (newer is larger, also
    /// against the versions it wrote), instead of the commit's number.
    #[allow(clippy::too_many_arguments)]
    pub fn merge_history(
        self,
        target: &TableRef,
        stage: &str,
        cols: &[String],
        m: &MergeSpec,
        keys_unique: bool,
        (seq, ttl): (u64, Option<u64>),
        original: Option<usize>,
    ) -> (Vec<String>, usize, usize) {
        let stamp = |secs: u64| {
            if original.is_some() {
                self.now_micros_minus(secs)
            } else {
                self.now_minus(secs)
            }
        };
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
        let now = stamp(0);
        let supersede = out.len();
        out.push(match self {
            Dialect::MySql => format!("UPDATE {t} AS _t JOIN {win} AS _n ON {keyeq} SET _t.{del} = {now} WHERE _t.{del} IS NULL"),
            _ => format!("UPDATE {t} AS _t SET {del} = {now} WHERE _t.{del} IS NULL AND EXISTS (SELECT 1 FROM {win} AS _n WHERE {keyeq})"),
        });
        let insert = out.len();
        let version = match original {
            Some(k) => format!("({} + {k})", self.now_micros_minus(0)),
            None => seq.to_string(),
        };
        out.push(format!(
            "INSERT INTO {t} ({list}, {}) SELECT {list}, {version} FROM {win}",
            self.ident(SEQ)
        ));
        if let Some(ttl) = ttl {
            out.push(format!(
                "DELETE FROM {t} WHERE {del} IS NOT NULL AND {del} < {}",
                stamp(ttl)
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
}
