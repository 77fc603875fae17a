//! One module per verb.

pub mod checkpoints;
pub mod gc;
pub mod healthcheck;
pub mod logs;
pub mod plugins;
pub mod rejects;
pub mod school;
pub mod start;
pub mod tables;

use anchovy_core::{Datastore, Error};

use crate::Loaded;

/// The root where metadata of a `*_store_cls` setting lives: the datastore, or its own
/// URL.
pub fn meta_root(loaded: &Loaded, cls: &str) -> Result<Datastore, Error> {
    if cls == "datastore" {
        anchovy_core::session::open_datastore(&loaded.settings, &loaded.connections)
    } else {
        Datastore::open_with(
            cls,
            loaded
                .connections
                .get(anchovy_core::session::DATASTORE_CONNECTION),
        )
    }
}

/// When a verb that reads an anchovy found nothing: says on stderr which anchovy it
/// looked at (user, id, where) and how to pick another, with the anchovies of that
/// user the datastore holds.
pub async fn found_nothing(loaded: &Loaded, what: &str) {
    let s = &loaded.settings;
    let root = anchovy_core::session::open_datastore(s, &loaded.connections);
    let (area, others) = match &root {
        Ok(r) => (
            r.for_anchovy(&s.user, &s.id).location(),
            r.child(&[&s.user]).children().await.unwrap_or_default(),
        ),
        Err(_) => (s.datastore.clone(), Vec::new()),
    };
    let others: Vec<&String> = others.iter().filter(|o| **o != s.id).collect();
    let hint = if others.is_empty() {
        format!("no anchovy of user {} is there", s.user)
    } else {
        format!(
            "anchovies of user {} there: {}",
            s.user,
            others
                .iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    crate::errln!(
        "anchovy: no {what} for {}/{} in {area} ({}); pick one with --id (and --user, --datastore): {hint}",
        s.user,
        s.id,
        s.origins
            .get("id")
            .map(|o| format!("id from {o}"))
            .unwrap_or_else(|| "the id defaults to the host name".into())
    );
}

/// A session of this anchovy's operator for checks and catalogs (no run lease; it is
/// never run): what `healthcheck`, `tables --discover` and `logs --from-target` ask.
///
/// # Errors
/// As [`anchovy_core::Session::open_for_check`].
pub async fn check_session(
    registry: &anchovy_core::Registry,
    loaded: &Loaded,
) -> Result<anchovy_core::Session, Error> {
    anchovy_core::Session::open_for_check(
        registry,
        loaded.settings.clone(),
        loaded.doc.clone(),
        loaded.connections.clone(),
    )
    .await
}

/// This anchovy's task log area.
pub fn task_store(loaded: &Loaded) -> Result<Datastore, Error> {
    let s = &loaded.settings;
    Ok(meta_root(loaded, &s.task_store_cls)?.for_anchovy(&s.user, &s.id))
}

/// Renders rows as an aligned text table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            out.push_str(c);
            if i + 1 < n {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}
