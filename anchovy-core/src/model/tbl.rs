//! Tables: [`Tbl`] (one table's settings), column selections and the [`TblSet`] of a run.
//!
//! A table's settings come from `tbls:` in config.yaml, merged over the upstream
//! anchovy's `$tables/<tbl>.json` (config.yaml wins). Core keys are typed; every other
//! key is kept in [`Tbl::options`] for the plugin that runs the table.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A column type, as written in `tbls.<name>.columns` (the original's Python names
/// and common SQL names are both accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColType {
    /// Text (`str`, `string`, `text`, `varchar`).
    Str,
    /// 64-bit integer (`int`, `integer`, `bigint`).
    Int,
    /// Float (`float`, `double`, `real`).
    Float,
    /// Exact decimal (`decimal`, `numeric`).
    Decimal,
    /// Boolean (`bool`, `boolean`).
    Bool,
    /// Date (`date`).
    Date,
    /// Date and time (`datetime`, `timestamp`).
    DateTime,
    /// Time of day (`time`).
    Time,
    /// Binary (`bytes`, `binary`, `blob`); text input is hex.
    Bytes,
    /// Nested JSON (`object`, `json`, `dict`, `list`).
    Object,
}

impl ColType {
    /// Every accepted spelling, for error messages.
    pub const NAMES: &'static str =
        "str, int, float, decimal, bool, date, datetime, time, bytes, object";

    /// Parses a type name.
    ///
    /// # Errors
    /// [`Error::Config`] naming the accepted names.
    pub fn parse(name: &str) -> Result<ColType> {
        let n = name.trim().to_ascii_lowercase();
        let base = n.split('(').next().unwrap_or("").trim();
        Ok(match base {
            "str" | "string" | "text" | "varchar" | "char" => ColType::Str,
            "int" | "integer" | "bigint" | "smallint" | "long" => ColType::Int,
            "float" | "double" | "real" | "float64" => ColType::Float,
            "decimal" | "numeric" | "number" => ColType::Decimal,
            "bool" | "boolean" => ColType::Bool,
            "date" => ColType::Date,
            "datetime" | "timestamp" | "timestamptz" => ColType::DateTime,
            "time" => ColType::Time,
            "bytes" | "binary" | "blob" | "bytea" => ColType::Bytes,
            "object" | "json" | "dict" | "list" | "jsonb" => ColType::Object,
            _ => {
                return Err(Error::config(
                    "column type",
                    format!("unknown type `{name}`; use one of {}", ColType::NAMES),
                ));
            }
        })
    }

    /// The wider of two types when a column holds both (for inference): int+float ->
    /// float, int+decimal -> decimal, date+datetime -> datetime, anything else -> str.
    pub fn widen(self, other: ColType) -> ColType {
        use ColType::*;
        if self == other {
            return self;
        }
        match (self.min(other), self.max(other)) {
            (Int, Float) => Float,
            (Int, Decimal) | (Float, Decimal) => Decimal,
            (Date, DateTime) => DateTime,
            _ => Str,
        }
    }
}

impl fmt::Display for ColType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ColType::Str => "str",
            ColType::Int => "int",
            ColType::Float => "float",
            ColType::Decimal => "decimal",
            ColType::Bool => "bool",
            ColType::Date => "date",
            ColType::DateTime => "datetime",
            ColType::Time => "time",
            ColType::Bytes => "bytes",
            ColType::Object => "object",
        };
        f.write_str(s)
    }
}

/// A comma-separated list of column names (`unique_by`, `set_by`); YAML lists work too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColSelect(pub Vec<String>);

impl ColSelect {
    /// Parses `a, b ,c`.
    pub fn parse(s: &str) -> ColSelect {
        ColSelect(
            s.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect(),
        )
    }

    /// True when no column is selected.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for ColSelect {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.join(", "))
    }
}

impl<'de> Deserialize<'de> for ColSelect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Either::deserialize(d)? {
            Either::One(s) => ColSelect::parse(&s),
            Either::Many(v) => ColSelect(v.iter().flat_map(|s| ColSelect::parse(s).0).collect()),
        })
    }
}

/// One `sort_by` column: a name and a direction (`-col` is descending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortCol {
    /// The column name.
    pub name: String,
    /// True for `-col`.
    pub descending: bool,
}

/// A `sort_by` list: `-trans_num, line_item_num, -updated_at`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SortedColSelect(pub Vec<SortCol>);

impl SortedColSelect {
    /// Parses `-a, b`.
    pub fn parse(s: &str) -> SortedColSelect {
        SortedColSelect(
            ColSelect::parse(s)
                .0
                .into_iter()
                .map(|c| match c.strip_prefix('-') {
                    Some(n) => SortCol {
                        name: n.trim().to_string(),
                        descending: true,
                    },
                    None => SortCol {
                        name: c.strip_prefix('+').unwrap_or(&c).trim().to_string(),
                        descending: false,
                    },
                })
                .collect(),
        )
    }

    /// True when no column is selected.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for SortedColSelect {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|c| format!("{}{}", if c.descending { "-" } else { "" }, c.name))
            .collect();
        s.serialize_str(&parts.join(", "))
    }
}

impl<'de> Deserialize<'de> for SortedColSelect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let c = ColSelect::deserialize(d)?;
        Ok(SortedColSelect::parse(&c.0.join(",")))
    }
}

/// The table keys every operator reads (fields of [`Tbl`]), as `anchovy plugins`
/// lists them.
pub const OPTIONS: crate::options::OptionGroup = crate::options::OptionGroup {
    title: "",
    options: &[
        crate::options::OptionDoc {
            key: "columns",
            doc: "column -> type (str, int, float, decimal, bool, date, datetime, time, bytes, object); a downloader converts values on read, an uploader creates its columns so",
        },
        crate::options::OptionDoc {
            key: "unique_by",
            doc: "key columns: the uploader upserts by them (the target's primary key); a downloader records them in $tables and refuses rows without them",
        },
        crate::options::OptionDoc {
            key: "sort_by",
            doc: "with unique_by: the first row by this order wins (-col = descending); an older row never overwrites a newer one",
        },
        crate::options::OptionDoc {
            key: "set_by",
            doc: "replace whole sets: stored rows of every incoming set are deleted, the incoming rows inserted",
        },
        crate::options::OptionDoc {
            key: "max_lag",
            doc: "anchovy healthcheck fails when the table's last successful load is older than this (30m, 2h)",
        },
    ],
};

/// The table keys the core reads for every operator (a test holds [`OPTIONS`] and the
/// bad-record options to this list).
pub const CORE_KEYS: &[&str] = &[
    "columns",
    "unique_by",
    "set_by",
    "sort_by",
    "max_lag",
    "on_bad_record",
    "max_rejects",
    "name",
    "updated_at",
];

/// One table's settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tbl {
    /// The table name (the key under `tbls:`).
    #[serde(default)]
    pub name: String,
    /// Column name -> type; applied on read by downloaders that parse text. Also read
    /// from the original tool's `cols`, a map or its text form `"a int, b str"`.
    #[serde(
        default,
        alias = "cols",
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "de_columns"
    )]
    pub columns: BTreeMap<String, ColType>,
    /// The primary/alternate key.
    #[serde(default, skip_serializing_if = "ColSelect::is_empty")]
    pub unique_by: ColSelect,
    /// Rows are replaced in whole sets by these columns.
    #[serde(default, skip_serializing_if = "ColSelect::is_empty")]
    pub set_by: ColSelect,
    /// Sort order among rows (`-col` descending).
    #[serde(default, skip_serializing_if = "SortedColSelect::is_empty")]
    pub sort_by: SortedColSelect,
    /// Freshness: `anchovy healthcheck` fails when the table's last successful load is
    /// older than this (`30m`, `2h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag: Option<String>,
    /// Plugin-specific keys (`path`, `delimiter`, ...), kept as given.
    #[serde(flatten)]
    pub options: serde_json::Map<String, serde_json::Value>,
}

fn de_columns<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<BTreeMap<String, ColType>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Map(BTreeMap<String, String>),
        /// The original's text form: `"a int, b str"` (`""`: none).
        Text(String),
    }
    let raw: Option<Raw> = Option::deserialize(d)?;
    let pairs: Vec<(String, String)> = match raw {
        None => Vec::new(),
        Some(Raw::Map(m)) => m.into_iter().collect(),
        Some(Raw::Text(t)) => t
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| match c.split_once(char::is_whitespace) {
                Some((k, v)) => Ok((k.to_string(), v.trim().to_string())),
                None => Err(serde::de::Error::custom(format!(
                    "`{c}` is not `<column> <type>` (columns as text: \"a int, b str\")"
                ))),
            })
            .collect::<std::result::Result<_, _>>()?,
    };
    pairs
        .into_iter()
        .map(|(k, v)| {
            ColType::parse(&v)
                .map(|t| (k, t))
                .map_err(serde::de::Error::custom)
        })
        .collect()
}

impl Tbl {
    /// A table with just a name.
    pub fn named(name: impl Into<String>) -> Tbl {
        Tbl {
            name: name.into(),
            ..Tbl::default()
        }
    }

    /// Builds a table from a `tbls:` entry (a map, or null for "all defaults").
    ///
    /// # Errors
    /// [`Error::Config`] when a core key has the wrong type.
    pub fn from_json(name: &str, value: serde_json::Value) -> Result<Tbl> {
        let value = match value {
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            v => v,
        };
        let mut t: Tbl = serde_json::from_value(value)
            .map_err(|e| Error::config(format!("tbls.{name}"), e.to_string()))?;
        t.name = name.to_string();
        t.options.remove("name");
        t.options.remove("updated_at");
        Ok(t)
    }

    /// A plugin option as a string (numbers and bools are rendered).
    pub fn option_str(&self, key: &str) -> Option<String> {
        match self.options.get(key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            v => Some(v.to_string()),
        }
    }

    /// This table's settings laid over `base` (self wins; options merge key by key).
    pub fn merged_over(&self, base: &Tbl) -> Tbl {
        let mut out = base.clone();
        out.name = self.name.clone();
        for (k, v) in &self.columns {
            out.columns.insert(k.clone(), *v);
        }
        if !self.unique_by.is_empty() {
            out.unique_by = self.unique_by.clone();
        }
        if !self.set_by.is_empty() {
            out.set_by = self.set_by.clone();
        }
        if !self.sort_by.is_empty() {
            out.sort_by = self.sort_by.clone();
        }
        for (k, v) in &self.options {
            out.options.insert(k.clone(), v.clone());
        }
        out
    }
}

/// The tables of a run, in name order, after enabled/disabled filtering.
#[derive(Debug, Clone, Default)]
pub struct TblSet {
    tbls: BTreeMap<String, Tbl>,
}

impl TblSet {
    /// A set from tables.
    pub fn new(tbls: impl IntoIterator<Item = Tbl>) -> TblSet {
        TblSet {
            tbls: tbls.into_iter().map(|t| (t.name.clone(), t)).collect(),
        }
    }

    /// Keeps the tables matching any `enabled` wildcard (all when empty) and none of the
    /// `disabled` wildcards: disabled wins.
    pub fn filter(self, enabled: &[String], disabled: &[String]) -> TblSet {
        let en: Vec<wildmatch::WildMatch> = enabled
            .iter()
            .map(|p| wildmatch::WildMatch::new(p))
            .collect();
        let dis: Vec<wildmatch::WildMatch> = disabled
            .iter()
            .map(|p| wildmatch::WildMatch::new(p))
            .collect();
        TblSet {
            tbls: self
                .tbls
                .into_iter()
                .filter(|(n, _)| {
                    (en.is_empty() || en.iter().any(|w| w.matches(n)))
                        && !dis.iter().any(|w| w.matches(n))
                })
                .collect(),
        }
    }

    /// The patterns that match no table of this set (typos in `-e`/`-d`).
    pub fn unmatched<'a>(&self, patterns: &'a [String]) -> Vec<&'a str> {
        patterns
            .iter()
            .filter(|p| {
                let w = wildmatch::WildMatch::new(p);
                !self.tbls.keys().any(|n| w.matches(n))
            })
            .map(String::as_str)
            .collect()
    }

    /// Whether a table name passes the same enabled/disabled rule.
    pub fn allows(name: &str, enabled: &[String], disabled: &[String]) -> bool {
        (enabled.is_empty()
            || enabled
                .iter()
                .any(|p| wildmatch::WildMatch::new(p).matches(name)))
            && !disabled
                .iter()
                .any(|p| wildmatch::WildMatch::new(p).matches(name))
    }

    /// The table named `name`.
    pub fn get(&self, name: &str) -> Option<&Tbl> {
        self.tbls.get(name)
    }

    /// All tables in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Tbl> {
        self.tbls.values()
    }

    /// The number of tables.
    pub fn len(&self) -> usize {
        self.tbls.len()
    }

    /// True when there are no tables.
    pub fn is_empty(&self) -> bool {
        self.tbls.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_table_parses() {
        let v = serde_json::json!({
            "path": "/sales/*.tsv", "delimiter": "/t", "autodiscover": true,
            "set_by": "order_num", "sort_by": "-trans_num, line_item_num, -updated_at",
            "columns": {"order_num": "int", "updated_at": "datetime"}
        });
        let t = Tbl::from_json("sales", v).unwrap();
        assert_eq!(t.set_by.0, vec!["order_num"]);
        assert_eq!(
            t.sort_by.0,
            vec![
                SortCol {
                    name: "trans_num".into(),
                    descending: true
                },
                SortCol {
                    name: "line_item_num".into(),
                    descending: false
                },
                SortCol {
                    name: "updated_at".into(),
                    descending: true
                },
            ]
        );
        assert_eq!(t.columns["order_num"], ColType::Int);
        assert_eq!(t.option_str("path").unwrap(), "/sales/*.tsv");
        assert_eq!(t.option_str("autodiscover").unwrap(), "true");
        assert!(!t.options.contains_key("set_by"));
        // Round trip through $tables JSON.
        let back = Tbl::from_json("sales", serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn bad_column_type_is_named() {
        let e = Tbl::from_json("t", serde_json::json!({"columns": {"a": "integr"}})).unwrap_err();
        assert!(e.to_string().contains("unknown type `integr`"), "{e}");
    }

    #[test]
    fn disabled_wins_over_enabled() {
        let set = TblSet::new(["a", "ab", "b"].map(Tbl::named));
        let names: Vec<_> = set
            .filter(&["a*".into(), "b".into()], &["ab".into()])
            .iter()
            .map(|t| t.name.clone())
            .collect();
        assert_eq!(names, vec!["a", "b"]);
    }

    #[test]
    fn config_wins_when_merged_over_upstream() {
        let mut up = Tbl::named("t");
        up.unique_by = ColSelect::parse("id");
        up.options.insert("x".into(), 1.into());
        let mut mine = Tbl::named("t");
        mine.sort_by = SortedColSelect::parse("-v");
        mine.options.insert("x".into(), 2.into());
        let m = mine.merged_over(&up);
        assert_eq!(m.unique_by.0, vec!["id"]);
        assert_eq!(m.options["x"], 2);
        assert!(m.sort_by.0[0].descending);
    }
}
