//! `$tables/<tbl>.json`: the merged metadata of each table an anchovy writes.
//!
//! After a table task commits, its tables' entries are rewritten: the stored entry
//! (or an upstream's), with inferred column types widened by the new data, and the
//! config.yaml settings laid on top (config.yaml wins). Uploaders read these entries
//! for keys and types.

use std::collections::BTreeMap;

use crate::datastore::{Datastore, layout};
use crate::error::Result;
use crate::tbl::{ColType, Tbl};

/// Reads and writes table metadata in one anchovy's area.
#[derive(Clone)]
pub struct TblStore {
    ds: Datastore,
    original: bool,
}

impl TblStore {
    /// A store in an anchovy's area.
    pub fn new(ds: Datastore) -> TblStore {
        TblStore {
            ds,
            original: false,
        }
    }

    /// Entries written as the original tool reads them (`data_buffer_cls: original`):
    /// `cols` as its text (`"id int, note str"`) instead of `columns`, its keys
    /// `namespace`, `set_by`, `sort_by`, `deleted_ttl` and `data_change_timestamp_field`
    /// always present, and no `path` (the original takes a table's `path` for where its
    /// data files are). This project reads such entries as its own.
    pub fn original(mut self, on: bool) -> TblStore {
        self.original = on;
        self
    }

    /// A table's stored metadata.
    ///
    /// # Errors
    /// [`crate::Error::Datastore`] or [`crate::Error::Config`] for a bad entry.
    pub async fn get(&self, name: &str) -> Result<Option<Tbl>> {
        match self
            .ds
            .get_json::<serde_json::Value>(&layout::table_key(name))
            .await?
        {
            None => Ok(None),
            Some(v) => Tbl::from_json(name, v).map(Some),
        }
    }

    /// Every stored table.
    ///
    /// # Errors
    /// As [`TblStore::get`].
    pub async fn list(&self) -> Result<Vec<Tbl>> {
        let mut out = Vec::new();
        for e in self.ds.list(layout::TABLES).await? {
            if let Some(v) = self.ds.get_json::<serde_json::Value>(&e.key).await? {
                let name = v
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map(String::from)
                    .unwrap_or_else(|| {
                        e.key
                            .trim_start_matches("$tables/")
                            .trim_end_matches(".json")
                            .to_string()
                    });
                out.push(Tbl::from_json(&name, v)?);
            }
        }
        Ok(out)
    }

    /// Merges new information into a table's entry and writes it.
    ///
    /// # Errors
    /// [`crate::Error::Datastore`].
    pub async fn update(
        &self,
        configured: Option<&Tbl>,
        name: &str,
        inferred: &BTreeMap<String, ColType>,
    ) -> Result<Tbl> {
        // Read, widen and write in one step: parts of a table read by several workers
        // widen the same entry at once ([`Datastore::update_json`]).
        let mut merged = None;
        self.ds
            .update_json(&layout::table_key(name), |stored| {
                let mut t = match stored {
                    Some(v) => Tbl::from_json(name, v)?,
                    None => Tbl::named(name),
                };
                for (c, ty) in inferred {
                    let e = t.columns.entry(c.clone()).or_insert(*ty);
                    *e = e.widen(*ty);
                }
                if let Some(cfg) = configured {
                    t = cfg.merged_over(&t);
                }
                t.name = name.to_string();
                let mut v = serde_json::to_value(&t)
                    .map_err(|e| crate::Error::json("table metadata", e))?;
                // An option may hold a credential written inline (an operator registers
                // it as a secret): never stored.
                crate::secret::redact_json(&mut v);
                if let Some(o) = v.as_object_mut() {
                    if self.original {
                        as_original(o, &t);
                    }
                    o.insert("name".into(), name.into());
                    o.insert(
                        "updated_at".into(),
                        chrono::Utc::now()
                            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                            .into(),
                    );
                }
                merged = Some(t);
                Ok(v)
            })
            .await?;
        Ok(merged.unwrap_or_else(|| Tbl::named(name)))
    }
}

/// Rewrites an entry as the original tool reads it (see [`TblStore::original`]).
fn as_original(o: &mut serde_json::Map<String, serde_json::Value>, t: &Tbl) {
    o.remove("columns");
    o.remove("path");
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|(c, ty)| format!("{c} {ty}"))
        .collect();
    o.insert("cols".into(), cols.join(", ").into());
    for k in ["unique_by", "set_by", "sort_by"] {
        o.entry(k).or_insert_with(|| "".into());
    }
    for k in ["namespace", "deleted_ttl", "data_change_timestamp_field"] {
        o.entry(k).or_insert(serde_json::Value::Null);
    }
}
