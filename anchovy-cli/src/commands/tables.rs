//! `anchovy tables`: an anchovy's tables (from `$tables`) with their settings and their
//! last load (from the task logs).

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
    let names: Vec<String> = tbls.iter().map(|t| t.name.clone()).collect();
    let loads = match super::task_store(&loaded) {
        Ok(ds) => TaskStore::new(ds).last_loads_of(&names).await,
        Err(e) => Err(e),
    };
    let loads = match loads {
        Ok(l) => l,
        Err(e) => return crate::report(&e),
    };
    if args.json {
        for t in &tbls {
            let l = loads.get(&t.name);
            let v = serde_json::json!({
                "table": t,
                "last_load": l.and_then(|l| l.last.as_ref()),
                "last_ok_at": l.and_then(|l| l.last_ok.as_ref()).map(|t| t.timestamp.clone()),
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
                "LAST LOAD (UTC)",
                "STATUS",
                "ROWS",
                "LAST OK (UTC)"
            ],
            &rows
        )
    );
    ExitCode::from(exit::OK)
}
