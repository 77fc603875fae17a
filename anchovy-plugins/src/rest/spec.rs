//! What a table declares: spec files and their layering under config.yaml's entries,
//! and `${name}` substitution from the table's connection.

use std::collections::BTreeMap;

use anchovy_core::{SessionCtx, TableOptions, Tbl};

use super::{RestOptions, opt_err};
use crate::error::PluginError;

/// Options as written: key -> value.
type Options = serde_json::Map<String, serde_json::Value>;

/// Reads a spec file: its defaults and its tables.
fn read_spec(path: &str) -> Result<(Options, Vec<(String, Options)>), PluginError> {
    let text = std::fs::read_to_string(path).map_err(|source| PluginError::Io {
        op: "read the spec file",
        path: path.to_string(),
        source,
    })?;
    let doc: serde_json::Value =
        serde_saphyr::from_str(&text).map_err(|e| PluginError::Option {
            key: "spec".into(),
            message: format!("{path} is not valid YAML: {e}"),
        })?;
    let serde_json::Value::Object(mut doc) = doc else {
        return Err(PluginError::Option {
            key: "spec".into(),
            message: format!("{path} must be a map with `tbls:` (and defaults beside it)"),
        });
    };
    let tbls = match doc.remove("tbls") {
        Some(serde_json::Value::Object(m)) => m,
        _ => {
            return Err(PluginError::Option {
                key: "spec".into(),
                message: format!("{path} has no `tbls:` map of endpoints"),
            });
        }
    };
    let mut out = Vec::new();
    for (name, t) in tbls {
        let t = match t {
            serde_json::Value::Object(m) => m,
            serde_json::Value::Null => serde_json::Map::new(),
            _ => {
                return Err(PluginError::Option {
                    key: "spec".into(),
                    message: format!("{path}: tbls.{name} must be a map of options"),
                });
            }
        };
        out.push((name, t));
    }
    Ok((doc, out))
}

/// A table from layered option maps (later wins), its key from `primary_key`.
fn table_of(
    name: &str,
    layers: &[&serde_json::Map<String, serde_json::Value>],
) -> Result<Tbl, PluginError> {
    let mut m = serde_json::Map::new();
    for l in layers {
        for (k, v) in l.iter() {
            if k == "columns"
                && let (Some(serde_json::Value::Object(a)), serde_json::Value::Object(b)) =
                    (m.get_mut(k), v)
            {
                a.extend(b.clone());
                continue;
            }
            m.insert(k.clone(), v.clone());
        }
    }
    m.remove("spec");
    m.remove("include");
    m.remove("name");
    let mut t: Tbl = serde_json::from_value(serde_json::Value::Object(m))
        .map_err(|e| opt_err(name, "", e.to_string()))?;
    t.name = name.to_string();
    if let Some(pk) = t.options.get("primary_key").cloned()
        && t.unique_by.is_empty()
    {
        t.unique_by =
            serde_json::from_value(pk).map_err(|e| opt_err(name, "primary_key", e.to_string()))?;
    }
    Ok(t)
}

/// The run's tables: inline entries, and the tables of the spec files entries name.
pub(super) fn discover(sess: &SessionCtx) -> Result<Vec<Tbl>, PluginError> {
    let mut out: BTreeMap<String, Tbl> = BTreeMap::new();
    for cfg in sess.config_tbls.iter() {
        let own = match serde_json::to_value(cfg) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        let Some(spec) = cfg.options.get("spec").and_then(|v| v.as_str()) else {
            out.insert(cfg.name.clone(), table_of(&cfg.name, &[&own])?);
            continue;
        };
        let (defaults, tbls) = read_spec(spec).map_err(|e| match e {
            PluginError::Option { message, .. } => opt_err(&cfg.name, "spec", message),
            e => e,
        })?;
        let include: Vec<wildmatch::WildMatch> = RestOptions::of(cfg)
            .map_err(PluginError::from_option)?
            .include
            .map(|c| c.0.iter().map(|p| wildmatch::WildMatch::new(p)).collect())
            .unwrap_or_default();
        let named = tbls.iter().any(|(n, _)| *n == cfg.name);
        for (name, t) in &tbls {
            let take = if named {
                *name == cfg.name
            } else {
                include.is_empty() || include.iter().any(|p| p.matches(name))
            };
            if !take {
                continue;
            }
            let tbl = table_of(name, &[&defaults, t, &own]).map_err(|e| match e {
                PluginError::Option { key, message } => PluginError::Option {
                    key,
                    message: format!("{message} (in {spec})"),
                },
                e => e,
            })?;
            if out.contains_key(name) {
                tracing::warn!(table = %name, spec, "the spec's table is also configured or in another spec: the first one wins");
                continue;
            }
            out.insert(name.clone(), tbl);
        }
    }
    Ok(out.into_values().collect())
}
