//! `anchovy start` (alias `run`): run an operator and print the run results.

use std::process::ExitCode;

use anchovy_core::{CancellationToken, Registry, Session};

use crate::Loaded;
use crate::args::StartArgs;

/// Runs the session; SIGINT/SIGTERM cancel it (a second signal exits at once).
pub async fn run(registry: &Registry, loaded: Loaded, args: &StartArgs) -> ExitCode {
    let session =
        match Session::open(registry, loaded.settings, loaded.doc, loaded.connections).await {
            Ok(s) => s,
            Err(e) => return crate::report(&e),
        };
    let s = &session.ctx().settings;
    tracing::info!(
        operator = %session.ctx().operator,
        id = %s.id,
        user = %s.user,
        session = %session.ctx().session_id,
        datastore = %session.ctx().store.location(),
        "anchovy starting"
    );
    let cancel = CancellationToken::new();
    tokio::spawn(watch_signals(cancel.clone()));
    let result = session.run(cancel).await;
    let text = if args.compact {
        serde_json::to_string(&result)
    } else {
        serde_json::to_string_pretty(&result)
    }
    .unwrap_or_default();
    println!("{}", anchovy_core::secret::redact(&text));
    match &result.error {
        Some(e) => {
            tracing::error!(status = ?result.status, exit_code = result.exit_code, "run failed: {e}")
        }
        None => {
            tracing::info!(status = ?result.status, exit_code = result.exit_code, ms = result.duration, "run finished")
        }
    }
    ExitCode::from(result.exit_code)
}

async fn watch_signals(cancel: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        for n in 0..2 {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if n == 0 {
                tracing::warn!(
                    "signal received: stopping the current batch (send again to exit at once)"
                );
                cancel.cancel();
            } else {
                std::process::exit(anchovy_core::error::exit::INTERRUPTED as i32);
            }
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    }
}
