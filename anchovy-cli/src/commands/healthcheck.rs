//! `anchovy healthcheck`: config, operator, connections, datastore read/write, and the
//! operator's own checks. One line per check; exit 0 when all pass, 1 otherwise.

use std::process::ExitCode;

use anchovy_core::Registry;
use anchovy_core::error::exit;
use anchovy_core::session::open_store;

use crate::Loaded;
use crate::args::HealthcheckArgs;

/// Runs every check and prints `ok`/`FAIL` lines.
pub async fn run(registry: &Registry, loaded: Loaded, args: &HealthcheckArgs) -> ExitCode {
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
    let spec = s.operator_cls.as_deref().map(|n| registry.find(n));
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
    if let Ok(store) = anchovy_core::session::open_datastore(s, &loaded.connections) {
        let area = store.for_anchovy(&s.user, &s.id);
        match area
            .get_json::<anchovy_core::lease::LeaseDoc>(anchovy_core::lease::LEASE_KEY)
            .await
        {
            Ok(Some(l)) if !l.released => {
                lines.push((
                    true,
                    "lease".into(),
                    format!(
                        "held by pid {} on {} (session {}, token {}) until {}",
                        l.pid, l.host, l.session_id, l.token, l.expires_at
                    ),
                ));
            }
            Ok(_) => lines.push((true, "lease".into(), "free".into())),
            Err(e) => lines.push((false, "lease".into(), e.chain())),
        }
        // Workers: who holds which table, and since when (`--workers`).
        match anchovy_core::lease::claims(&area).await {
            Ok(claims) if !claims.is_empty() => {
                // Held claims one by one; the rest counted (hundreds of tables).
                let idle = claims.iter().filter(|(_, c)| !c.live()).count();
                for (t, c) in claims.iter().filter(|(_, c)| c.live()) {
                    lines.push((true, format!("claim {t}"), super::tables::describe_claim(c)));
                }
                lines.push((
                    true,
                    "claims".into(),
                    format!(
                        "{} tables held by workers, {idle} free (`anchovy tables` shows each)",
                        claims.len() - idle
                    ),
                ));
            }
            Ok(_) => {}
            Err(e) => lines.push((false, "claims".into(), e.chain())),
        }
    }
    // The operator's own checks (its database, its upstreams) need a working
    // configuration and datastore, not a ready service or fresh tables: a failing
    // freshness check must not hide why the tables are stale.
    let can_open = lines.iter().all(|l| l.0);
    // `-S`: the service this probe runs next to must answer, and be ready.
    if s.service() {
        lines.push(if s.port == 0 {
            (
                false,
                "service".into(),
                "the endpoint is off (port 0), so the service cannot be checked; set \
                 --port/ACHVY_PORT to the service's port"
                    .into(),
            )
        } else {
            match readyz(&s.bind, s.port).await {
                Ok((200, body)) => (true, "service".into(), body.trim().to_string()),
                Ok((code, body)) => (
                    false,
                    "service".into(),
                    format!(
                        "/readyz on {}:{} says {code}: {}",
                        s.bind,
                        s.port,
                        body.trim()
                    ),
                ),
                Err(e) => (
                    false,
                    "service".into(),
                    format!(
                        "no service answers on {}:{} ({e}); is `anchovy start -S` running \
                         with this --port/--bind?",
                        s.bind, s.port
                    ),
                ),
            }
        });
    }
    freshness(&loaded, args, &mut lines).await;
    if can_open && matches!(spec, Some(Ok(_))) {
        match super::check_session(registry, &loaded).await {
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
        crate::outln!(
            "{} {name}: {}",
            if *good { "ok  " } else { "FAIL" },
            anchovy_core::secret::redact(msg)
        );
    }
    ExitCode::from(if ok { exit::OK } else { exit::FAILED })
}

/// Fails a table whose last successful load (per the task logs) is older than its
/// `max_lag` (table setting) or `--max-lag`.
async fn freshness(
    loaded: &Loaded,
    args: &HealthcheckArgs,
    lines: &mut Vec<(bool, String, String)>,
) {
    let default = match args.max_lag.as_deref().map(|v| {
        anchovy_core::config::parse_duration(v)
            .ok_or_else(|| format!("--max-lag `{v}` is not a duration"))
    }) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(m)) => {
            lines.push((false, "freshness".into(), m));
            return;
        }
    };
    let per_table: Vec<(String, std::time::Duration)> = loaded
        .doc
        .tbls
        .iter()
        .filter_map(|(name, t)| {
            let d = anchovy_core::config::parse_duration(t.max_lag.as_deref()?)?;
            Some((name.clone(), d))
        })
        .collect();
    if default.is_none() && per_table.is_empty() {
        return;
    }
    // The tables to look for: configured, in `$tables`, and each upstream's tables as
    // `<upstream>.<table>` (an uploader's). The task logs are read newest first until
    // each has its last successful load: a bounded read for healthy tables, whatever
    // the anchovy's age (only a table that never loaded reads them all).
    let names = match known_tables(loaded).await {
        Ok(n) => n,
        Err(e) => {
            lines.push((false, "freshness".into(), e.chain()));
            return;
        }
    };
    let loads = match super::task_store(loaded) {
        Ok(ds) => {
            anchovy_core::task::TaskStore::new(ds)
                .last_loads_of(&names)
                .await
        }
        Err(e) => Err(e),
    };
    let loads = match loads {
        Ok(l) => l,
        Err(e) => {
            lines.push((false, "freshness".into(), e.chain()));
            return;
        }
    };
    // Every known table and every other table with a load read; uploader tables are
    // `<upstream>.<table>` and take the setting of `<table>`.
    let mut names = names;
    names.extend(
        loads
            .keys()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let now = chrono::Utc::now();
    for name in names {
        let limit = per_table
            .iter()
            .find(|(t, _)| *t == name || name.ends_with(&format!(".{t}")))
            .map(|(_, d)| *d)
            .or(default);
        let Some(limit) = limit else { continue };
        let last_ok = loads
            .get(&name)
            .and_then(|l| l.last_ok.as_ref())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t.timestamp).ok());
        match last_ok {
            None => lines.push((
                false,
                format!("freshness {name}"),
                "never loaded successfully".into(),
            )),
            Some(t) => {
                let age = (now - t.with_timezone(&chrono::Utc))
                    .to_std()
                    .unwrap_or_default();
                lines.push((
                    age <= limit,
                    format!("freshness {name}"),
                    format!(
                        "last successful load {}s ago (max lag {}s)",
                        age.as_secs(),
                        limit.as_secs()
                    ),
                ));
            }
        }
    }
}

/// The task-log names of this anchovy's tables: an uploader's are its upstreams' (`-U`)
/// tables as `<upstream>.<table>`; a downloader's are the configured ones and those in
/// its `$tables`.
async fn known_tables(loaded: &Loaded) -> anchovy_core::Result<Vec<String>> {
    use anchovy_core::tbl_store::TblStore;
    let s = &loaded.settings;
    let root = super::meta_root(loaded, &s.tbl_store_cls)?;
    let mut names: Vec<String> = Vec::new();
    if s.upstream.is_empty() {
        names.extend(loaded.doc.tbls.keys().cloned());
        for t in TblStore::new(root.for_anchovy(&s.user, &s.id))
            .list()
            .await?
        {
            names.push(t.name);
        }
    }
    for up in &s.upstream {
        for t in TblStore::new(root.for_anchovy(&s.user, up)).list().await? {
            names.push(format!("{up}.{}", t.name));
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// `GET /readyz` of a local service: (status, body), within 3 s.
async fn readyz(bind: &str, port: u16) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = if bind == "0.0.0.0" || bind == "::" {
        "127.0.0.1"
    } else {
        bind
    };
    let fut = async {
        let mut s = tokio::net::TcpStream::connect((host, port)).await?;
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: anchovy\r\nConnection: close\r\n\r\n")
            .await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        Ok((code, body))
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), fut)
        .await
        .map_err(|_| std::io::Error::other("timed out"))?
}
