//! `anchovy logs`: an anchovy's task logs, filtered, as a table or JSON.

use std::process::ExitCode;

use anchovy_core::error::exit;
use anchovy_core::task::{Status, TaskStore};

use crate::Loaded;
use crate::args::LogsArgs;

/// Lists the task logs that pass the filters, oldest first (the last `--limit`).
pub async fn run(loaded: Loaded, args: &LogsArgs) -> ExitCode {
    let since = match args.since.as_deref().map(parse_since).transpose() {
        Ok(s) => s,
        Err(e) => return crate::report(&e),
    };
    let store = match super::task_store(&loaded) {
        Ok(s) => s,
        Err(e) => return crate::report(&e),
    };
    let logs = match TaskStore::new(store).read_since(since).await {
        Ok(l) => l,
        Err(e) => return crate::report(&e),
    };
    if logs.is_empty() && since.is_none() {
        super::found_nothing(&loaded, "task logs").await;
    }
    let want_status = args.status.as_deref().map(str::to_ascii_uppercase);
    let want_type = args.task_type.as_deref().map(str::to_ascii_uppercase);
    let mut logs: Vec<_> = logs
        .into_iter()
        .filter(|l| {
            args.table.as_deref().is_none_or(|t| {
                l.tbl
                    .as_deref()
                    .is_some_and(|n| wildmatch::WildMatch::new(t).matches(n))
            })
        })
        .filter(|l| {
            want_status.as_deref().is_none_or(|s| {
                (s == "OK" && l.status == Status::Ok) || (s == "ERR" && l.status == Status::Err)
            })
        })
        .filter(|l| {
            want_type
                .as_deref()
                .is_none_or(|t| type_name(l.task_type).eq_ignore_ascii_case(t))
        })
        .collect();
    if logs.len() > args.limit {
        logs.drain(..logs.len() - args.limit);
    }
    if args.json {
        for l in &logs {
            crate::outln!("{}", serde_json::to_string(l).unwrap_or_default());
        }
        return ExitCode::from(exit::OK);
    }
    let rows: Vec<Vec<String>> = logs
        .iter()
        .map(|l| {
            vec![
                l.timestamp.chars().take(19).collect(),
                l.session_id.clone(),
                l.batch_id.to_string(),
                type_name(l.task_type),
                l.tbl.clone().unwrap_or_default(),
                format!("{:?}", l.status).to_ascii_uppercase(),
                l.duration.to_string(),
                l.data
                    .get("rows")
                    .or_else(|| l.data.get("rows_inserted"))
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                l.error
                    .as_deref()
                    .map(|e| e.chars().take(80).collect())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    crate::out!(
        "{}",
        super::table(
            &[
                "TIME (UTC)",
                "SESSION",
                "BATCH",
                "TASK",
                "TABLE",
                "STATUS",
                "MS",
                "ROWS",
                "ERROR"
            ],
            &rows
        )
    );
    ExitCode::from(exit::OK)
}

/// `1h`, `30m`, `2d` ago, or an RFC 3339 / `YYYY-MM-DD[THH:MM[:SS]]` UTC time.
fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, anchovy_core::Error> {
    if let Some(d) = anchovy_core::config::parse_duration(s) {
        return Ok(chrono::Utc::now() - chrono::Duration::from_std(d).unwrap_or_default());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    Err(anchovy_core::Error::config(
        "--since",
        format!("`{s}` is neither a duration (1h, 30m, 2d) nor a UTC time (2026-11-23T10:00)"),
    ))
}

/// The task type as the task logs spell it (`STARTUP`, `TBL`, ...).
fn type_name(t: anchovy_core::task::TaskType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// `logs --from-target`: an uploader's loads as its target database recorded them
/// (`_anchovies_loads`, tables with `audit: true`), oldest first (the last `--limit`),
/// with the same filters; tables are named `<upstream>.<table>` as in its task logs.
pub async fn from_target(
    registry: &anchovy_core::Registry,
    loaded: Loaded,
    args: &LogsArgs,
) -> ExitCode {
    let since = match args.since.as_deref().map(parse_since).transpose() {
        Ok(s) => s.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        Err(e) => return crate::report(&e),
    };
    if args.task_type.is_some() {
        return crate::report(&anchovy_core::Error::config(
            "--type",
            "the target records loads (TBL tasks) only; drop --type with --from-target",
        ));
    }
    // The task logs' OK/ERR are the target's ok/error.
    let status = match args
        .status
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None => None,
        Some("OK") => Some("ok"),
        Some("ERR") => Some("error"),
        Some(other) => {
            return crate::report(&anchovy_core::Error::config(
                "--status",
                format!("`{other}` is neither OK nor ERR"),
            ));
        }
    };
    let anchovy = format!("{}/{}", loaded.settings.user, loaded.settings.id);
    let session = match super::check_session(registry, &loaded).await {
        Ok(s) => s,
        Err(e) => return crate::report(&e),
    };
    if session.ctx().operator != anchovy_plugins::sql::SPEC.name {
        return crate::report(&anchovy_core::Error::config(
            "--from-target",
            format!(
                "reads the target database of an uploader; this anchovy runs {} (use -op {})",
                session.ctx().operator,
                anchovy_plugins::sql::SPEC.name
            ),
        ));
    }
    let history = async {
        let url = anchovy_plugins::sql::target_url(session.ctx())?;
        let db = anchovy_plugins::sql::db::Db::connect(&url).await?;
        // A table wildcard is matched here, on `<upstream>.<table>`: only then is the
        // whole (status and time filtered) history read.
        let limit = if args.table.is_some() {
            usize::MAX >> 1
        } else {
            args.limit
        };
        let rows = db
            .load_history(&anchovy, since.as_deref(), status, limit)
            .await;
        db.close().await;
        rows
    }
    .await;
    let rows = match history {
        Ok(r) => r,
        Err(e) => {
            crate::errln!(
                "anchovy: error: {} (is `audit: true` set on the uploader's tables?)",
                anchovy_core::error::render_chain(&e)
            );
            return ExitCode::from(exit::FAILED);
        }
    };
    let text = |m: &serde_json::Map<String, serde_json::Value>, k: &str| {
        m.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let mut rows: Vec<(String, serde_json::Map<String, serde_json::Value>)> = rows
        .into_iter()
        .map(|m| {
            let up = text(&m, "upstream");
            let up = up.rsplit('/').next().unwrap_or_default().to_string();
            (format!("{up}.{}", text(&m, "tbl")), m)
        })
        .filter(|(name, _)| {
            args.table
                .as_deref()
                .is_none_or(|t| wildmatch::WildMatch::new(t).matches(name))
        })
        .collect();
    rows.truncate(args.limit);
    rows.reverse();
    if args.json {
        for (_, m) in &rows {
            crate::outln!("{}", serde_json::Value::Object(m.clone()));
        }
        return ExitCode::from(exit::OK);
    }
    let num = |m: &serde_json::Map<String, serde_json::Value>, k: &str| {
        m.get(k).map(|v| v.to_string()).unwrap_or_default()
    };
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, m)| {
            vec![
                text(m, "started_at").chars().take(19).collect(),
                name.clone(),
                format!("{}..{}", num(m, "first_seq"), num(m, "last_seq")),
                if text(m, "status") == "ok" {
                    "OK"
                } else {
                    "ERR"
                }
                .to_string(),
                num(m, "rows_inserted"),
                num(m, "rows_updated"),
                num(m, "rows_deleted"),
                text(m, "error").chars().take(80).collect(),
            ]
        })
        .collect();
    crate::out!(
        "{}",
        super::table(
            &[
                "STARTED (UTC)",
                "TABLE",
                "COMMITS",
                "STATUS",
                "INSERTED",
                "UPDATED",
                "DELETED",
                "ERROR"
            ],
            &lines
        )
    );
    ExitCode::from(exit::OK)
}
