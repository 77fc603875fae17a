//! `anchovy rejects`: a downloader's quarantined records (`on_bad_record:
//! quarantine`), read from its committed `$rejects/<table>/` files; `anchovy rejects
//! replay` reads them again with the table's current options.

use std::process::ExitCode;

use anchovy_core::commit::read_commits;
use anchovy_core::error::exit;
use anchovy_core::reject::{rejected_table, replayed_key};
use anchovy_core::session::open_store;
use anchovy_core::{Registry, Value};

use crate::Loaded;
use crate::args::{RejectsAction, RejectsArgs, StartArgs};

/// Lists the rejects, or replays them.
pub async fn run(registry: &Registry, mut loaded: Loaded, args: &RejectsArgs) -> ExitCode {
    if let Some(RejectsAction::Replay(r)) = &args.action {
        if let Some(t) = &r.table {
            loaded.settings.enabled = vec![t.clone()];
        }
        let start = StartArgs {
            config: Default::default(),
            compact: r.compact,
            no_progress: true,
        };
        return super::start::run_session(
            registry,
            loaded,
            &start,
            super::start::Mode::ReplayRejects,
        )
        .await;
    }
    let s = &loaded.settings;
    let (_, store, cps, _) = match open_store(s, &loaded.connections).await {
        Ok(o) => o,
        Err(e) => return crate::report(&e),
    };
    let commits = match read_commits(&store, 0).await {
        Ok(c) => c,
        Err(e) => return crate::report(&e),
    };
    let want = args.table.as_deref().map(wildmatch::WildMatch::new);
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut count = 0u64;
    for c in &commits {
        for f in &c.files {
            let Some(table) = rejected_table(&f.tbl) else {
                continue;
            };
            if want.as_ref().is_some_and(|w| !w.matches(table)) {
                continue;
            }
            let replayed = cps.get(&replayed_key(table, &f.key)).is_some();
            if replayed && !args.all {
                continue;
            }
            let mut r = match anchovy_core::data::open_committed(&store, f, c.seq, 1024).await {
                Ok(r) => r,
                Err(e) => return crate::report(&e),
            };
            loop {
                let batch = match r.next_batch().await {
                    Ok(Some(b)) => b,
                    Ok(None) => break,
                    Err(e) => return crate::report(&e),
                };
                let col = |row: &[Value], name: &str| {
                    batch
                        .schema
                        .index_of(name)
                        .map(|i| row[i].text().into_owned())
                        .unwrap_or_default()
                };
                for row in &batch.rows {
                    count += 1;
                    if args.json {
                        let v = serde_json::json!({
                            "table": table,
                            "source": col(row, "source"),
                            "line": col(row, "line").parse::<u64>().unwrap_or(0),
                            "reason": col(row, "reason"),
                            "raw": col(row, "raw"),
                            "header": col(row, "header"),
                            "commit": c.seq,
                            "committed_at": c.committed_at,
                            "replayed": replayed,
                        });
                        crate::outln!("{}", anchovy_core::secret::redact(&v.to_string()));
                    } else {
                        rows.push(vec![
                            table.to_string(),
                            format!("{}:{}", col(row, "source"), col(row, "line")),
                            short(&col(row, "reason"), 70),
                            short(&col(row, "raw"), 50),
                            if replayed {
                                "replayed".into()
                            } else {
                                String::new()
                            },
                        ]);
                    }
                }
            }
        }
    }
    if !args.json {
        if rows.is_empty() {
            crate::errln!(
                "no {}quarantined records{}",
                if args.all { "" } else { "pending " },
                args.table
                    .as_deref()
                    .map(|t| format!(" for tables matching `{t}`"))
                    .unwrap_or_default()
            );
        } else {
            crate::out!(
                "{}",
                anchovy_core::secret::redact(&super::table(
                    &["TABLE", "SOURCE:LINE", "REASON", "RAW", ""],
                    &rows
                ))
            );
            crate::errln!(
                "{count} records; fix the source or the table's options, then `anchovy rejects replay`"
            );
        }
    }
    ExitCode::from(exit::OK)
}

/// One line, at most `n` characters.
fn short(text: &str, n: usize) -> String {
    let one: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one.chars().count() > n {
        format!("{}...", one.chars().take(n).collect::<String>())
    } else {
        one
    }
}
