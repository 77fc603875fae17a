//! `anchovy start` (alias `run`): run an operator and print the run results.

use std::process::ExitCode;

use anchovy_core::{CancellationToken, Registry, Session};

use crate::Loaded;
use crate::args::{MigrateArgs, StartArgs};

/// Runs the session; SIGINT/SIGTERM cancel it (a second signal exits at once).
pub async fn run(registry: &Registry, loaded: Loaded, args: &StartArgs) -> ExitCode {
    run_session(registry, loaded, args, Mode::Start).await
}

/// `anchovy migrate`: an uploader's run whose table tasks take over the original
/// uploader's positions ([`anchovy_core::destination::Migrate`]).
pub async fn migrate(registry: &Registry, loaded: Loaded, args: &MigrateArgs) -> ExitCode {
    let kind = loaded
        .settings
        .operator_cls
        .as_deref()
        .and_then(|op| registry.find(op).ok())
        .map(|spec| spec.kind);
    if kind == Some(anchovy_core::OperatorKind::Downloader) {
        return migrate_checkpoints(loaded, args).await;
    }
    let m = anchovy_core::destination::Migrate {
        from: args
            .from
            .clone()
            .unwrap_or_else(|| loaded.settings.id.clone()),
        apply: !args.dry_run,
    };
    let start = StartArgs {
        config: Default::default(),
        compact: args.compact,
        no_progress: true,
    };
    run_session(registry, loaded, &start, Mode::Migrate(m)).await
}

/// `anchovy migrate` of a downloader: the original downloader's checkpoints
/// (`$checkpoints/<key>`, raw text, in the area of `--from`) become this anchovy's,
/// key for key (a value that is JSON as its JSON, else as text), in one commit under
/// the run lease; a key this anchovy already has is kept. A downloader of this binary
/// that reads the same keys (one written with the SDK to replace the original's)
/// continues where the original stopped. `--dry-run` only prints the table.
async fn migrate_checkpoints(loaded: Loaded, args: &MigrateArgs) -> ExitCode {
    use std::collections::BTreeMap;
    let s = &loaded.settings;
    let from = args.from.clone().unwrap_or_else(|| s.id.clone());
    let root = match anchovy_core::session::open_datastore(s, &loaded.connections) {
        Ok(r) => r,
        Err(e) => return crate::report(&e),
    };
    let store = root.for_anchovy(&s.user, &s.id);
    let original =
        match anchovy_core::original::checkpoints(&root.for_anchovy(&s.user, &from)).await {
            Ok(o) => o,
            Err(e) => return crate::report(&e),
        };
    if original.is_empty() {
        crate::errln!(
            "no checkpoints of the original in {}",
            root.for_anchovy(&s.user, &from).location()
        );
    }
    // Under the lease: no run of this anchovy commits meanwhile (a dry run reads only).
    let lease = if args.dry_run {
        None
    } else {
        match anchovy_core::lease::Lease::acquire(&store, "anchovy-migrate", s.lease_ttl).await {
            Ok(l) => Some(l),
            Err(e) => return crate::report(&e),
        }
    };
    let result = async {
        let current = match &lease {
            Some(l) => Some(super::checkpoints::committer(&store, s, l, "anchovy-migrate").await?),
            None => None,
        };
        let cps = match &current {
            Some((c, _)) => c.checkpoints().clone(),
            None => std::sync::Arc::new(
                anchovy_core::commit::load_checkpoints(
                    &store,
                    anchovy_core::commit::LoadAs::Shared,
                )
                .await?
                .0,
            ),
        };
        let mut changes: BTreeMap<String, Option<serde_json::Value>> = BTreeMap::new();
        let mut rows = Vec::new();
        for c in &original {
            let value = serde_json::from_str(c.text.trim())
                .unwrap_or_else(|_| serde_json::Value::String(c.text.clone()));
            let action = if cps.get(&c.key).is_some() {
                "kept (already set here)"
            } else if args.dry_run {
                "would set"
            } else {
                changes.insert(c.key.clone(), Some(value.clone()));
                "set"
            };
            rows.push(vec![c.key.clone(), value.to_string(), action.to_string()]);
        }
        crate::out!("{}", super::table(&["KEY", "VALUE", "ACTION"], &rows));
        if let Some((committer, meta)) = current
            && !changes.is_empty()
        {
            let n = changes.len();
            let rec = committer.commit(&meta, Vec::new(), changes).await?;
            crate::errln!("set {n} checkpoints from the original (commit {})", rec.seq);
        }
        Ok::<(), anchovy_core::Error>(())
    }
    .await;
    if let Some(l) = lease {
        let _ = l.release().await;
    }
    match result {
        Ok(()) => ExitCode::from(anchovy_core::error::exit::OK),
        Err(e) => crate::report(&e),
    }
}

/// What the table tasks of a session do.
pub enum Mode {
    /// Run as `anchovy start`.
    Start,
    /// Read the tables' quarantined records instead of their sources (`anchovy
    /// rejects replay`).
    ReplayRejects,
    /// Take over the original uploader's positions (`anchovy migrate`).
    Migrate(anchovy_core::destination::Migrate),
}

/// [`run`] in a [`Mode`].
pub async fn run_session(
    registry: &Registry,
    loaded: Loaded,
    args: &StartArgs,
    mode: Mode,
) -> ExitCode {
    let settings = loaded.settings.clone();
    let session = match Session::open(registry, loaded.settings, loaded.doc, loaded.connections)
        .await
    {
        Ok(s) => match mode {
            Mode::Start => s,
            Mode::ReplayRejects => s.replaying_rejects(),
            Mode::Migrate(m) => {
                if s.ctx().kind != anchovy_core::OperatorKind::Uploader {
                    return crate::report(&anchovy_core::Error::config(
                        "-op",
                        format!(
                            "anchovy migrate takes over an uploader's positions, and {} is not an uploader; pass the uploader that replaces the original's (-op sql.Uploader)",
                            s.ctx().operator
                        ),
                    ));
                }
                let _ = s.ctx().migrate.set(m);
                s
            }
        },
        Err(e) => {
            let code = crate::report(&e);
            let soft = settings.exit_code(e.exit_code());
            if soft != e.exit_code() {
                tracing::info!(
                    exit_code = e.exit_code(),
                    "exiting 0 instead (exit_zero_on)"
                );
                return ExitCode::from(soft);
            }
            return code;
        }
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
    let (stop, cancel) = (CancellationToken::new(), CancellationToken::new());
    let grace = s.service().then_some(s.stop_grace);
    let (service, bind, port, metrics_file) =
        (s.service(), s.bind.clone(), s.port, s.metrics_file.clone());
    let session = std::sync::Arc::new(session);
    if service && port > 0 {
        match crate::serve::spawn(session.clone(), &bind, port).await {
            Ok(addr) => {
                tracing::info!(%addr, "health and metrics endpoint: /healthz /readyz /metrics")
            }
            Err(e) => {
                return crate::report(&anchovy_core::Error::config(
                    "port",
                    format!(
                        "cannot listen on {bind}:{port}: {e}; set --port/ACHVY_PORT (0 turns the endpoint off)"
                    ),
                ));
            }
        }
    }
    if !args.no_progress
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
        && session.ctx().settings.log_format == anchovy_core::LogFormat::Text
    {
        let _ = session
            .ctx()
            .progress
            .set(std::sync::Arc::new(crate::progress::Bars::new(
                session.ctx().kind,
            )));
    }
    tokio::spawn(watch_signals(stop.clone(), cancel.clone(), grace));
    let result = session.run_with(stop, cancel).await;
    if let Some(path) = metrics_file {
        session.ctx().metrics.refresh_lag().await;
        let text = session.ctx().metrics.render(session.lease_held());
        let tmp = format!("{path}.tmp.{}", std::process::id());
        // Written whole then renamed, so a collector never reads half a file.
        let written = match tokio::fs::write(&tmp, text).await {
            Ok(()) => tokio::fs::rename(&tmp, &path).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::error!(path = %path, error = %e, "cannot write the metrics file");
        }
    }
    let text = if args.compact {
        serde_json::to_string(&result)
    } else {
        serde_json::to_string_pretty(&result)
    }
    .unwrap_or_default();
    crate::outln!("{}", anchovy_core::secret::redact(&text));
    match &result.error {
        // A clean stop (a service asked to stop between or after its batches).
        Some(e) if result.exit_code == anchovy_core::error::exit::OK => {
            tracing::info!(status = ?result.status, exit_code = result.exit_code, "run stopped: {e}")
        }
        Some(e) => {
            tracing::error!(status = ?result.status, exit_code = result.exit_code, "run failed: {e}")
        }
        None => {
            tracing::info!(status = ?result.status, exit_code = result.exit_code, ms = result.duration, "run finished")
        }
    }
    let code = session.ctx().settings.exit_code(result.exit_code);
    if code != result.exit_code {
        tracing::info!(
            exit_code = result.exit_code,
            "exiting 0 instead (exit_zero_on)"
        );
    }
    ExitCode::from(code)
}

/// The first SIGINT/SIGTERM stops the run: a service (`grace` set) finishes its current
/// batch, cancelling it only once the grace period is over; a task-mode run cancels at
/// once. A second signal exits at once (code 130).
async fn watch_signals(
    stop: CancellationToken,
    cancel: CancellationToken,
    grace: Option<std::time::Duration>,
) {
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
            if n > 0 {
                std::process::exit(anchovy_core::error::exit::INTERRUPTED as i32);
            }
            stop.cancel();
            match grace {
                Some(g) => {
                    tracing::warn!(
                        grace_s = g.as_secs_f64(),
                        "signal received: finishing the current batch, then stopping (send again to exit at once)"
                    );
                    let cancel = cancel.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(g).await;
                        tracing::warn!("grace period over: cancelling the current batch");
                        cancel.cancel();
                    });
                }
                None => {
                    tracing::warn!(
                        "signal received: stopping the current batch (send again to exit at once)"
                    );
                    cancel.cancel();
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = grace;
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.cancel();
            cancel.cancel();
        }
    }
}
