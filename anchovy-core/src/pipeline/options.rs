//! Table options (`tbls.<name>.*`), declared once per operator or format as a typed
//! struct with [`table_options!`](crate::table_options): the struct's fields are the keys, their doc comments
//! the docs. The same declaration gives serde the struct (unknown keys refused), gives
//! `anchovy plugins` its lines, and gives the startup check ([`crate::Registry`]) the
//! keys it accepts, with a suggestion for a typo.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};

use crate::error::{Error, Result};
use crate::tbl::Tbl;

/// One table option: the key under `tbls.<name>` and what it does, with its default.
#[derive(Debug, Clone, Copy)]
pub struct OptionDoc {
    /// The key under `tbls.<name>`.
    pub key: &'static str,
    /// What it does, with its default.
    pub doc: &'static str,
}

/// A titled list of options (`format csv`), as `anchovy plugins` shows them; the title
/// is empty for an operator's own options.
#[derive(Debug, Clone, Copy)]
pub struct OptionGroup {
    /// What the options belong to (`format csv`), or empty.
    pub title: &'static str,
    /// The options.
    pub options: &'static [OptionDoc],
}

/// A typed struct of table options, declared with [`table_options!`](crate::table_options).
pub trait TableOptions: DeserializeOwned {
    /// Every option of the struct, in declaration order.
    const DOCS: &'static [OptionDoc];

    /// This struct's options of `tbl` (its other keys belong to the core or to other
    /// structs and are left alone).
    ///
    /// # Errors
    /// [`Error::Config`] naming `tbls.<table>.<key>` and what is wrong with the value.
    fn of(tbl: &Tbl) -> Result<Self> {
        let mut own = serde_json::Map::new();
        for d in Self::DOCS {
            if let Some(v) = tbl.options.get(d.key) {
                own.insert(d.key.to_string(), v.clone());
            }
        }
        parse(&tbl.name, own)
    }
}

/// Deserializes options into `T`; an error names the key it is about when one key alone
/// fails (serde's own messages name unknown and missing keys).
///
/// # Errors
/// [`Error::Config`] naming `tbls.<table>[.<key>]`.
pub fn parse<T: DeserializeOwned>(
    table: &str,
    options: serde_json::Map<String, serde_json::Value>,
) -> Result<T> {
    match serde_json::from_value::<T>(serde_json::Value::Object(options.clone())) {
        Ok(t) => Ok(t),
        Err(e) => {
            // Which key? Try each alone: the first that fails on its own is the culprit.
            let culprit = options.iter().find_map(|(k, v)| {
                let mut one = serde_json::Map::new();
                one.insert(k.clone(), v.clone());
                match serde_json::from_value::<T>(serde_json::Value::Object(one)) {
                    Err(e1) if !e1.to_string().starts_with("missing field") => {
                        Some((k.clone(), e1.to_string()))
                    }
                    _ => None,
                }
            });
            Err(match culprit {
                Some((key, message)) => Error::config(format!("tbls.{table}.{key}"), message),
                None => Error::config(format!("tbls.{table}"), e.to_string()),
            })
        }
    }
}

/// Declares a struct of table options once: a serde struct (unknown keys refused;
/// fields without a value take their `#[serde(default...)]`) and its
/// [`TableOptions::DOCS`] from the fields' doc comments. Doc comments come before any
/// `#[serde(...)]` attribute of a field.
///
/// ```
/// anchovy_core::table_options! {
///     /// Options of my operator.
///     pub struct MyOptions {
///         /// the endpoint path (required)
///         pub path: String,
///         /// rows per page (default 100)
///         #[serde(default)]
///         pub page_size: Option<u64>,
///     }
/// }
/// use anchovy_core::options::TableOptions;
/// assert_eq!(MyOptions::DOCS[1].key, "page_size");
/// ```
#[macro_export]
macro_rules! table_options {
    (
        $(#[doc = $sdoc:expr])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $doc:expr])*
                $(#[serde($($serde:tt)*)])*
                $fvis:vis $field:ident: $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        $vis struct $name {
            $(
                $(#[doc = $doc])*
                $(#[serde($($serde)*)])*
                $fvis $field: $ty,
            )*
        }

        impl $crate::options::TableOptions for $name {
            const DOCS: &'static [$crate::options::OptionDoc] = &[$(
                $crate::options::OptionDoc {
                    key: stringify!($field),
                    doc: $crate::options::trim_doc(concat!($($doc),*)),
                },
            )*];
        }
    };
}

/// A doc comment's text without the space `///` leaves in front (const, for
/// [`table_options!`](crate::table_options)).
pub const fn trim_doc(s: &'static str) -> &'static str {
    match s.as_bytes() {
        [b' ', rest @ ..] => match std::str::from_utf8(rest) {
            Ok(t) => t,
            Err(_) => s,
        },
        _ => s,
    }
}

/// Lenient value types for option fields: YAML users write `true` and `"true"`, `100`
/// and `"100"`, `3600` and `"1h"`.
pub mod de {
    use super::*;

    /// `true`/`false`, also as text (`yes`/`no`, `1`/`0`, `on`/`off`).
    ///
    /// # Errors
    /// A message naming the value.
    pub fn flag<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(b) => Ok(b),
            serde_json::Value::Null => Ok(false),
            v => {
                let t = text(&v);
                match t.trim().to_ascii_lowercase().as_str() {
                    "true" | "yes" | "1" | "on" => Ok(true),
                    "false" | "no" | "0" | "off" | "" => Ok(false),
                    _ => Err(D::Error::custom(format!("`{t}` is not true or false"))),
                }
            }
        }
    }

    /// A whole number, also as text (`2_000_000`).
    ///
    /// # Errors
    /// A message naming the value.
    pub fn count<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Null => Ok(None),
            v => {
                let t = text(&v);
                t.trim()
                    .replace('_', "")
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| D::Error::custom(format!("`{t}` is not a whole number")))
            }
        }
    }

    /// A duration: seconds (`3600`) or `90s`, `15m`, `12h`, `30d`.
    ///
    /// # Errors
    /// A message naming the value.
    pub fn duration<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<std::time::Duration>, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Null => Ok(None),
            v => {
                let t = text(&v);
                crate::config::parse_duration(&t).map(Some).ok_or_else(|| {
                    D::Error::custom(format!(
                        "`{t}` is not a duration; use seconds (3600) or 90s, 15m, 12h, 30d"
                    ))
                })
            }
        }
    }

    fn text(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::table_options! {
        /// Options for the test.
        struct Opts {
            /// a flag (default false)
            #[serde(default, deserialize_with = "de::flag")]
            on: bool,
            /// a duration
            #[serde(default, deserialize_with = "de::duration")]
            ttl: Option<std::time::Duration>,
            /// a count
            #[serde(default, deserialize_with = "de::count")]
            rows: Option<u64>,
        }
    }

    fn tbl(options: serde_json::Value) -> Tbl {
        let mut t = Tbl::named("t");
        t.options = options.as_object().unwrap().clone();
        t
    }

    #[test]
    fn docs_come_from_the_declaration() {
        let keys: Vec<&str> = Opts::DOCS.iter().map(|d| d.key).collect();
        assert_eq!(keys, ["on", "ttl", "rows"]);
        assert_eq!(Opts::DOCS[0].doc, "a flag (default false)");
    }

    #[test]
    fn values_parse_leniently_and_errors_name_the_key() {
        let o = Opts::of(&tbl(
            serde_json::json!({"on": "yes", "ttl": "12h", "rows": "2_000", "other": 1}),
        ))
        .unwrap();
        assert!(o.on);
        assert_eq!(o.ttl, Some(std::time::Duration::from_secs(12 * 3600)));
        assert_eq!(o.rows, Some(2000));
        let o = Opts::of(&tbl(serde_json::json!({"on": true, "ttl": 60}))).unwrap();
        assert!(o.on && o.ttl == Some(std::time::Duration::from_secs(60)) && o.rows.is_none());
        let e = Opts::of(&tbl(serde_json::json!({"on": true, "ttl": "soon"}))).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("tbls.t.ttl") && e.contains("`soon` is not a duration"),
            "{e}"
        );
        let e = Opts::of(&tbl(serde_json::json!({"on": "maybe"})))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tbls.t.on") && e.contains("`maybe` is not true or false"),
            "{e}"
        );
        let e = parse::<Opts>(
            "t",
            serde_json::json!({"rowz": 1}).as_object().unwrap().clone(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `rowz`"), "{e}");
    }

    #[test]
    fn every_core_option_is_a_core_key() {
        for g in [crate::tbl::OPTIONS, crate::reject::OPTIONS] {
            for o in g.options {
                assert!(crate::tbl::CORE_KEYS.contains(&o.key), "{}", o.key);
            }
        }
    }
}
