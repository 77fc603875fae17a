//! The reference model of the merge semantics, and canonical values to compare by.

use anchovy_core::Value;

// ---------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------

/// The columns every generated row has, with their declared types.
pub(crate) const COLS: [(&str, Ty); 6] = [
    ("k", Ty::Int),
    ("g", Ty::Int),
    ("d", Ty::Dec),
    ("ts", Ty::Ts),
    ("s", Ty::Text),
    ("n", Ty::Int),
];

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Ty {
    Int,
    Dec,
    Ts,
    Text,
}

/// A value as the model compares it: canonical text (decimals without trailing zeros,
/// datetimes as the UTC instant), `None` for NULL.
pub(crate) type Cell = Option<String>;
/// A row in [`COLS`] order.
pub(crate) type Row = Vec<Cell>;

/// What a table does on load.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) keys: Vec<usize>,
    pub(crate) sets: Vec<usize>,
    /// (column, descending)
    pub(crate) sort: Vec<(usize, bool)>,
    pub(crate) history: bool,
}

impl Spec {
    pub(crate) fn yaml(&self) -> String {
        let names = |v: &[usize]| {
            v.iter()
                .map(|i| COLS[*i].0.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut y = String::from(
            "tbls:\n  t:\n    columns: {k: int, g: int, d: decimal, ts: datetime, s: str, n: int}\n",
        );
        if !self.keys.is_empty() {
            y += &format!("    unique_by: [{}]\n", names(&self.keys));
        }
        if !self.sets.is_empty() {
            y += &format!("    set_by: [{}]\n", names(&self.sets));
        }
        if !self.sort.is_empty() {
            let s: Vec<String> = self
                .sort
                .iter()
                .map(|(i, desc)| format!("{}{}", if *desc { "-" } else { "" }, COLS[*i].0))
                .collect();
            y += &format!("    sort_by: \"{}\"\n", s.join(", "));
        }
        if self.history {
            y += "    history: true\n";
        }
        y
    }
}

/// Compares two non-null cells of a type.
pub(crate) fn cmp_typed(ty: Ty, a: &str, b: &str) -> std::cmp::Ordering {
    match ty {
        Ty::Int => a.parse::<i64>().unwrap().cmp(&b.parse::<i64>().unwrap()),
        Ty::Dec => dec_cmp(a, b),
        // Canonical instants are fixed-width UTC text: text order is time order.
        Ty::Ts | Ty::Text => a.cmp(b),
    }
}

pub(crate) fn dec_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| -> (bool, String, String) {
        let (neg, body) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
        let (i, f) = body.split_once('.').unwrap_or((body, ""));
        (neg, i.trim_start_matches('0').to_string(), f.to_string())
    };
    let (an, ai, af) = split(a);
    let (bn, bi, bf) = split(b);
    if an != bn {
        return if an {
            std::cmp::Ordering::Less
        } else {
            std::cmp::Ordering::Greater
        };
    }
    let width = af.len().max(bf.len());
    let m = ai
        .len()
        .cmp(&bi.len())
        .then(ai.cmp(&bi))
        .then(format!("{af:0<width$}").cmp(&format!("{bf:0<width$}")));
    if an { m.reverse() } else { m }
}

/// `sort_by`: true when `n` sorts first or ties with `o` (NULLs last, typed, `-col`
/// descending). A tie goes to the newer row.
pub(crate) fn first_or_tie(spec: &Spec, n: &Row, o: &Row) -> bool {
    for &(c, desc) in &spec.sort {
        match (&n[c], &o[c]) {
            (None, None) => continue,
            (None, Some(_)) => return false,
            (Some(_), None) => return true,
            (Some(a), Some(b)) => {
                let mut ord = cmp_typed(COLS[c].1, a, b);
                if desc {
                    ord = ord.reverse();
                }
                match ord {
                    std::cmp::Ordering::Less => return true,
                    std::cmp::Ordering::Greater => return false,
                    std::cmp::Ordering::Equal => continue,
                }
            }
        }
    }
    true
}

pub(crate) fn key_of(cols: &[usize], r: &Row) -> Vec<Cell> {
    cols.iter().map(|c| r[*c].clone()).collect()
}

/// The target as the model says it is: a row plus, for history tables, its `_seq` and
/// whether it is superseded (`_del` set).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TRow {
    pub(crate) row: Row,
    pub(crate) seq: Option<u64>,
    pub(crate) del: bool,
}

/// Upserts one row by key: a new key is inserted; a stored key is replaced unless
/// `sort_by` says the stored row comes first.
pub(crate) fn upsert(spec: &Spec, target: &mut Vec<TRow>, r: &Row) {
    let k = key_of(&spec.keys, r);
    match target.iter_mut().find(|t| key_of(&spec.keys, &t.row) == k) {
        None => target.push(TRow {
            row: r.clone(),
            seq: None,
            del: false,
        }),
        Some(t) => {
            if first_or_tie(spec, r, &t.row) {
                t.row = r.clone();
            }
        }
    }
}

/// Applies one upstream commit (its rows in order) to the model target: the whole
/// semantics of the merge modes.
///
/// - append (no keys): every row is added.
/// - `unique_by`: one row per key; a later row replaces the stored one unless
///   `sort_by` puts the stored row first (ties: the later row).
/// - `set_by`: every set the commit delivers replaces the stored rows of that set
///   (NULL is a set of its own); with `unique_by` too, the set's rows are upserted.
/// - `history`: per key, the commit's winner (as `unique_by`) becomes the current
///   version (`_seq` = the commit) and supersedes the previous current one, unless
///   `sort_by` puts the previous one first (then the commit's version is dropped).
pub(crate) fn apply(spec: &Spec, target: &mut Vec<TRow>, seq: u64, rows: &[Row]) {
    if spec.history {
        let mut winners: Vec<TRow> = Vec::new();
        for r in rows {
            upsert(spec, &mut winners, r);
        }
        for w in winners {
            let k = key_of(&spec.keys, &w.row);
            let cur = target
                .iter_mut()
                .find(|t| !t.del && key_of(&spec.keys, &t.row) == k);
            if let Some(cur) = cur {
                if !spec.sort.is_empty() && !first_or_tie(spec, &w.row, &cur.row) {
                    continue;
                }
                cur.del = true;
            }
            target.push(TRow {
                row: w.row,
                seq: Some(seq),
                del: false,
            });
        }
        return;
    }
    if !spec.sets.is_empty() {
        let sets: Vec<Vec<Cell>> = rows.iter().map(|r| key_of(&spec.sets, r)).collect();
        target.retain(|t| !sets.contains(&key_of(&spec.sets, &t.row)));
    }
    for r in rows {
        if spec.keys.is_empty() {
            target.push(TRow {
                row: r.clone(),
                seq: None,
                del: false,
            });
        } else {
            upsert(spec, target, r);
        }
    }
}

// ---------------------------------------------------------------------------------
// Canonical values
// ---------------------------------------------------------------------------------

pub(crate) fn canon_dec(s: &str) -> String {
    let (neg, body) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (i, f) = body.split_once('.').unwrap_or((body, ""));
    let i = i.trim_start_matches('0');
    let f = f.trim_end_matches('0');
    let i = if i.is_empty() { "0" } else { i };
    let mut out = String::new();
    if neg && !(i == "0" && f.is_empty()) {
        out.push('-');
    }
    out.push_str(i);
    if !f.is_empty() {
        out.push('.');
        out.push_str(f);
    }
    out
}

pub(crate) fn canon_ts(s: &str) -> String {
    use chrono::{DateTime, NaiveDateTime};
    let s = s.trim();
    let utc = if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        d.naive_utc()
    } else if let Ok(d) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z") {
        d.naive_utc()
    } else if let Ok(d) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        d
    } else {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
            .unwrap_or_else(|e| panic!("`{s}` is not a datetime: {e}"))
    };
    utc.format("%Y-%m-%dT%H:%M:%S%.9f").to_string()
}

pub(crate) fn canon(ty: Ty, s: &str) -> String {
    match ty {
        Ty::Int => s
            .parse::<i64>()
            .unwrap_or_else(|_| panic!("`{s}` is not an int"))
            .to_string(),
        Ty::Dec => canon_dec(s),
        Ty::Ts => canon_ts(s),
        Ty::Text => s.to_string(),
    }
}

pub(crate) fn canon_value(ty: Ty, v: &Value) -> Cell {
    match v {
        Value::Null => None,
        Value::Int(i) => Some(i.to_string()),
        Value::Decimal(d) => Some(canon_dec(d)),
        Value::String(s) => Some(canon(ty, s)),
        Value::DateTimeTz(d) => Some(d.naive_utc().format("%Y-%m-%dT%H:%M:%S%.9f").to_string()),
        Value::DateTime(d) => Some(d.format("%Y-%m-%dT%H:%M:%S%.9f").to_string()),
        other => panic!("unexpected value {other:?}"),
    }
}
