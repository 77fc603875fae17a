//! `anchovy healthcheck`: config, operator, connections, datastore read/write, and the
//! operator's own checks. One line per check; exit 0 when all pass, 1 otherwise.

use std::process::ExitCode;

use anchovy_core::error::exit;
use anchovy_core::session::open_store;
use anchovy_core::{Registry, Session};

use crate::Loaded;

/// Runs every check and prints `ok`/`FAIL` lines.
pub async fn run(registry: &Registry, loaded: Loaded) -> ExitCode {
    let mut lines: Vec<(bool, String, String)> = Vec::new();
    let s = &loaded.settings;
    lines.push((
        true,
        "config".into(),
        format!(
            "{} ({} tables); id={} user={}",
            if loaded.doc.origin.is_empty() {
                "no config file"
            } else {
                &loaded.doc.origin
            },
            loaded.doc.tbls.len(),
            s.id,
            s.user
        ),
    ));
    let spec = s.operator.as_deref().map(|n| registry.find(n));
    match &spec {
        None => lines.push((
            true,
            "operator".into(),
            "none given (-op); operator checks skipped".into(),
        )),
        Some(Err(e)) => lines.push((false, "operator".into(), e.chain())),
        Some(Ok(spec)) => {
            lines.push((true, "operator".into(), spec.name.to_string()));
            for c in spec.connections {
                match loaded.connections.require(c, spec.name) {
                    Ok(cn) => lines.push((true, format!("connection {}", c.id), cn.describe())),
                    Err(e) => lines.push((false, format!("connection {}", c.id), e.chain())),
                }
            }
        }
    }
    match open_store(s, &loaded.connections).await {
        Ok((_, store, _, last)) => match store.probe().await {
            Ok(()) => lines.push((
                true,
                "datastore".into(),
                format!("{} (read/write ok, {last} commits)", store.location()),
            )),
            Err(e) => lines.push((false, "datastore".into(), e.chain())),
        },
        Err(e) => lines.push((false, "datastore".into(), e.chain())),
    }
    if lines.iter().all(|l| l.0) && matches!(spec, Some(Ok(_))) {
        match Session::open(
            registry,
            loaded.settings.clone(),
            loaded.doc.clone(),
            loaded.connections.clone(),
        )
        .await
        {
            Ok(session) => {
                for (name, r) in session.operator().healthcheck(session.ctx()).await {
                    match r {
                        Ok(m) => lines.push((true, name, m)),
                        Err(m) => lines.push((false, name, m)),
                    }
                }
            }
            Err(e) => lines.push((false, "operator".into(), e.chain())),
        }
    }
    let ok = lines.iter().all(|l| l.0);
    for (good, name, msg) in &lines {
        println!(
            "{} {name}: {}",
            if *good { "ok  " } else { "FAIL" },
            anchovy_core::secret::redact(msg)
        );
    }
    ExitCode::from(if ok { exit::OK } else { exit::FAILED })
}
