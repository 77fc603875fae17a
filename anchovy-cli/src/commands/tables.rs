//! `anchovy tables`: an anchovy's tables (from `$tables`) with their settings, their
//! last load (from the task logs) and, for workers (`--workers`), who holds or last held
//! each table's claim.

use std::process::ExitCode;

use anchovy_core::error::exit;
use anchovy_core::task::TaskStore;
use anchovy_core::tbl_store::TblStore;

use crate::Loaded;
use crate::args::TablesArgs;

/// Prints one line (or JSON object) per table.
pub async fn run(loaded: Loaded, args: &TablesArgs) -> ExitCode {
    let s = &loaded.settings;
    let tbl_root = match super::meta_root(&loaded, &s.tbl_store_cls) {
        Ok(r) => r,
        Err(e) => return crate::report(&e),
    };
    let tbls = match TblStore::new(tbl_root.for_anchovy(&s.user, &s.id))
        .list()
        .await
    {
        Ok(t) => t,
        Err(e) => return crate::report(&e),
    };
    if tbls.is_empty() {
        super::found_nothing(&loaded, "tables").await;
    }
    let names: Vec<String> = tbls.iter().map(|t| t.name.clone()).collect();
    let loads = match super::task_store(&loaded) {
        Ok(ds) => TaskStore::new(ds).last_loads_of(&names).await,
        Err(e) => Err(e),
    };
    let loads = match loads {
        Ok(l) => l,
        Err(e) => return crate::report(&e),
    };
    let claims: std::collections::BTreeMap<String, anchovy_core::lease::LeaseDoc> =
        match anchovy_core::session::open_datastore(s, &loaded.connections) {
            Ok(root) => anchovy_core::lease::claims(&root.for_anchovy(&s.user, &s.id))
                .await
                .unwrap_or_default()
                .into_iter()
                .collect(),
            Err(e) => return crate::report(&e),
        };
    let claim_text = |t: &str| -> String {
        if let Some(c) = claims.get(t) {
            return describe_claim(c);
        }
        // A table split into parts: one claim per part (`<table>#<part>`).
        let parts: Vec<&anchovy_core::lease::LeaseDoc> = claims
            .iter()
            .filter(|(k, _)| part_of(k, t))
            .map(|(_, c)| c)
            .collect();
        if parts.is_empty() {
            return String::new();
        }
        let mut held: Vec<String> = parts
            .iter()
            .filter(|c| c.live())
            .map(|c| c.worker.clone().unwrap_or_else(|| c.host.clone()))
            .collect();
        held.sort();
        held.dedup();
        format!(
            "{} parts: {} held{}",
            parts.len(),
            parts.iter().filter(|c| c.live()).count(),
            if held.is_empty() {
                String::new()
            } else {
                format!(" by {}", held.join(", "))
            }
        )
    };
    if args.json {
        for t in &tbls {
            let l = loads.get(&t.name);
            let v = serde_json::json!({
                "table": t,
                "last_load": l.and_then(|l| l.last.as_ref()),
                "last_ok_at": l.and_then(|l| l.last_ok.as_ref()).map(|t| t.timestamp.clone()),
                "claim": claims.get(&t.name),
                "part_claims": claims
                    .iter()
                    .filter(|(k, _)| part_of(k, &t.name))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            });
            crate::outln!("{v}");
        }
        return ExitCode::from(exit::OK);
    }
    let rows: Vec<Vec<String>> = tbls
        .iter()
        .map(|t| {
            let l = loads.get(&t.name);
            let last = l.and_then(|l| l.last.as_ref());
            vec![
                t.name.clone(),
                t.columns.len().to_string(),
                t.unique_by.0.join(","),
                t.sort_by
                    .0
                    .iter()
                    .map(|c| format!("{}{}", if c.descending { "-" } else { "" }, c.name))
                    .collect::<Vec<_>>()
                    .join(","),
                t.set_by.0.join(","),
                match t.options.get("history") {
                    Some(serde_json::Value::Bool(true)) => "yes".into(),
                    _ => String::new(),
                },
                last.map(|x| x.timestamp.chars().take(19).collect())
                    .unwrap_or_else(|| "never".into()),
                last.map(|x| format!("{:?}", x.status).to_ascii_uppercase())
                    .unwrap_or_default(),
                last.and_then(|x| x.data.get("rows").or_else(|| x.data.get("rows_inserted")))
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                l.and_then(|l| l.last_ok.as_ref())
                    .map(|x| x.timestamp.chars().take(19).collect())
                    .unwrap_or_else(|| "never".into()),
                claim_text(&t.name),
            ]
        })
        .collect();
    crate::out!(
        "{}",
        super::table(
            &[
                "TABLE",
                "COLUMNS",
                "UNIQUE_BY",
                "SORT_BY",
                "SET_BY",
                "HISTORY",
                "LAST LOAD (UTC)",
                "STATUS",
                "ROWS",
                "LAST OK (UTC)",
                "CLAIM (workers)"
            ],
            &rows
        )
    );
    ExitCode::from(exit::OK)
}

/// True when `claim` names a part of `table` (`<table>#<n>`).
fn part_of(claim: &str, table: &str) -> bool {
    claim
        .strip_prefix(table)
        .and_then(|r| r.strip_prefix('#'))
        .is_some_and(|n| n.parse::<u32>().is_ok())
}

/// A table's claim for people: `held by <worker> since <t> (token N)`, `released by
/// <worker> at <t>`, or `expired: <worker> stopped renewing at <t>`.
pub fn describe_claim(c: &anchovy_core::lease::LeaseDoc) -> String {
    let who = c.worker.clone().unwrap_or_else(|| c.host.clone());
    let at = |t: &chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    if c.released {
        format!("released by {who} at {}", at(&c.renewed_at))
    } else if c.live() {
        format!(
            "held by {who} since {} (token {})",
            at(&c.acquired_at),
            c.token
        )
    } else {
        format!("expired: {who} stopped renewing at {}", at(&c.renewed_at))
    }
}

/// `anchovy tables --discover -op <operator>`: what the operator's source offers.
pub async fn discover(
    registry: &anchovy_core::Registry,
    loaded: Loaded,
    args: &TablesArgs,
) -> ExitCode {
    if loaded.settings.operator_cls.is_none() {
        let e = anchovy_core::Error::config(
            "--discover",
            "name the operator whose source to list: anchovy tables --discover -op sql.Downloader",
        );
        return crate::report(&e);
    }
    let session = match super::check_session(registry, &loaded).await {
        Ok(s) => s,
        Err(e) => return crate::report(&e),
    };
    let found = match session.operator().catalog(session.ctx()).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            let e = anchovy_core::Error::config(
                "--discover",
                format!(
                    "{} cannot list its source; its tables are those of config.yaml",
                    session.ctx().operator
                ),
            );
            return crate::report(&e);
        }
        Err(e) => {
            let e = anchovy_core::Error::data("--discover", anchovy_core::error::render_chain(&*e));
            return crate::report(&e);
        }
    };
    if args.json {
        for t in &found {
            crate::outln!("{}", serde_json::json!(t));
        }
        return ExitCode::from(exit::OK);
    }
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.unique_by.0.join(","),
                t.option_str("rows_estimate").unwrap_or_default(),
                t.columns
                    .iter()
                    .map(|(c, ty)| format!("{c}:{ty}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    crate::out!(
        "{}",
        super::table(&["SOURCE TABLE", "KEY", "ROWS (EST.)", "COLUMNS"], &rows)
    );
    ExitCode::from(exit::OK)
}
