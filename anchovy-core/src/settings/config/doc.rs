//! The config document: YAML or JSON with `config:` and `tbls:`.

use super::*;

/// Parser limits for config files, which are small: 2,000 tables sharing one anchored
/// entry are well inside them, while an alias bomb stops after 100,000 replayed events
/// (40 MiB and 0.06 s for the whole failed run, instead of 91 MiB and 0.15 s with the
/// library's general-purpose 1,000,000). Duplicate keys are errors (the default).
pub(super) fn yaml_options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.alias_limits.max_total_replayed_events = 100_000;
    let mut b = serde_saphyr::Budget::default();
    b.max_nodes = 200_000;
    b.max_aliases = 10_000;
    // The library's default also refuses more than 10 aliases per anchor (past 100),
    // which breaks the common "one anchored defaults entry merged into every table":
    // the absolute caps above bound the work instead.
    b.enforce_alias_anchor_ratio = false;
    o.budget = Some(b);
    o
}

/// The config document: `config:` settings and `tbls:` tables.
#[derive(Debug, Clone, Default)]
pub struct ConfigDoc {
    /// Where it came from (a path or `--config`).
    pub origin: String,
    /// The `config:` map.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// The `tbls:` entries, by name.
    pub tbls: BTreeMap<String, Tbl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDoc {
    #[serde(default)]
    config: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    tbls: Option<BTreeMap<String, serde_json::Value>>,
}

pub(super) const TOP_KEYS: &[&str] = &["config", "tbls"];

impl ConfigDoc {
    /// Parses YAML or JSON text (JSON is YAML). Anchors, aliases and merge keys work;
    /// alias expansion is bounded (no "billion laughs").
    ///
    /// # Errors
    /// [`Error::ConfigSyntax`] with line and column; [`Error::UnknownKey`] for an
    /// unknown top-level key; [`Error::Config`] for a bad table entry.
    pub fn parse(text: &str, origin: &str) -> Result<ConfigDoc> {
        if text.trim().is_empty() {
            return Ok(ConfigDoc {
                origin: origin.to_string(),
                ..Default::default()
            });
        }
        let value: serde_json::Value = serde_saphyr::from_str_with_options(text, yaml_options())
            .map_err(|e| Error::ConfigSyntax {
                origin: origin.to_string(),
                message: e.to_string(),
            })?;
        let obj = match value {
            serde_json::Value::Object(o) => o,
            serde_json::Value::Null => Default::default(),
            other => {
                return Err(Error::ConfigSyntax {
                    origin: origin.to_string(),
                    message: format!(
                        "expected a map with `config:` and `tbls:`, found {}",
                        json_kind(&other)
                    ),
                });
            }
        };
        for k in obj.keys() {
            if !TOP_KEYS.contains(&k.as_str()) {
                let hint = if k == "cnxns" || k == "connections" {
                    Some("connections are not read from config files; use ACHVY_CNXN__<ID>__<ATTR> variables".to_string())
                } else {
                    None
                };
                return Err(match hint {
                    Some(h) => Error::config(format!("`{k}` in {origin}"), h),
                    None => Error::UnknownKey {
                        key: k.clone(),
                        place: origin.to_string(),
                        suggestion: closest(k, TOP_KEYS.iter().copied()),
                    },
                });
            }
        }
        let raw: RawDoc = serde_json::from_value(serde_json::Value::Object(obj)).map_err(|e| {
            Error::ConfigSyntax {
                origin: origin.to_string(),
                message: e.to_string(),
            }
        })?;
        let mut tbls = BTreeMap::new();
        for (name, v) in raw.tbls.unwrap_or_default() {
            if name.trim().is_empty() {
                return Err(Error::config(
                    format!("tbls of {origin}"),
                    "a table name is empty; give every table a name",
                ));
            }
            tbls.insert(name.clone(), Tbl::from_json(&name, v)?);
        }
        Ok(ConfigDoc {
            origin: origin.to_string(),
            config: raw.config.unwrap_or_default(),
            tbls,
        })
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read, else as [`ConfigDoc::parse`].
    pub fn load(path: &Path) -> Result<ConfigDoc> {
        let shown = path.display().to_string();
        let refuse = |message: String| Error::Config {
            what: format!("config file {shown}"),
            message,
        };
        if path.is_dir() {
            return Err(refuse(
                "is a directory; give the YAML file itself (-c dir/config.yaml)".into(),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| {
            refuse(match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "does not exist; check the path given to -c/--config-file or \
                     ACHVY_CONFIG_FILE (relative paths start at the working directory)"
                        .into()
                }
                std::io::ErrorKind::PermissionDenied => {
                    "cannot be read: permission denied; make it readable by this user".into()
                }
                _ => format!("cannot be read: {e}"),
            })
        })?;
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
        let utf16 = bytes.starts_with(b"\xFF\xFE")
            || bytes.starts_with(b"\xFE\xFF")
            || bytes.iter().take(64).any(|b| *b == 0);
        let text = match std::str::from_utf8(bytes) {
            Ok(_) if utf16 => None,
            Ok(t) => Some(t),
            Err(_) => None,
        };
        let Some(text) = text else {
            return Err(refuse(if utf16 {
                "is UTF-16 text; save it as UTF-8 (in PowerShell: Set-Content -Encoding utf8, \
                 or iconv -f UTF-16 -t UTF-8)"
                    .into()
            } else {
                "is not UTF-8 text; save it as UTF-8".into()
            }));
        };
        ConfigDoc::parse(text, &shown)
    }

    /// The `config:` map as a settings layer.
    ///
    /// # Errors
    /// [`Error::UnknownKey`] for an unknown key.
    pub fn layer(&self) -> Result<Layer> {
        Layer::from_map(&self.config, &self.origin)
    }

    /// The configured tables.
    pub fn tbl_set(&self) -> TblSet {
        TblSet::new(self.tbls.values().cloned())
    }
}

pub(super) fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "nothing",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a map",
    }
}
