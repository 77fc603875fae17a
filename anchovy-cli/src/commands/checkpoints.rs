//! `anchovy checkpoints [GLOB]`: list an anchovy's checkpoints; `-D` deletes them,
//! `--set KEY=VALUE` sets them, `--undo` puts back the values the last change replaced;
//! every change goes through a commit (like any checkpoint change), holds the run
//! lease, and asks first.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anchovy_core::commit::{CommitMeta, Committer, LoadAs};
use anchovy_core::error::exit;
use anchovy_core::lease::Lease;
use anchovy_core::session::open_store;

use crate::Loaded;
use crate::args::CheckpointsArgs;

/// Lists or deletes checkpoints.
pub async fn run(loaded: Loaded, args: &CheckpointsArgs) -> ExitCode {
    let s = &loaded.settings;
    let (_, store, cps, _) = match open_store(s, &loaded.connections).await {
        Ok(x) => x,
        Err(e) => return crate::report(&e),
    };
    let mut entries = cps.list(&args.glob);
    // The original tool's checkpoints (raw text without `.json`), listed beside ours:
    // commit 0, as no commit record set them.
    let glob = wildmatch::WildMatch::new(&args.glob);
    let original: Vec<_> = match anchovy_core::original::checkpoints(&store).await {
        Ok(o) => o.into_iter().filter(|c| glob.matches(&c.key)).collect(),
        Err(e) => return crate::report(&e),
    };
    entries.extend(
        original
            .iter()
            .map(|c| anchovy_core::checkpoint::CheckpointEntry {
                key: c.key.clone(),
                value: serde_json::Value::String(c.text.clone()),
                commit: 0,
                updated_at: c.modified.to_rfc3339(),
            }),
    );
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        );
    } else if entries.is_empty() {
        crate::errln!(
            "no checkpoints match `{}` in {}",
            args.glob,
            store.location()
        );
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                let v = e.value.to_string();
                let v = if v.chars().count() > 60 {
                    format!("{}...", v.chars().take(57).collect::<String>())
                } else {
                    v
                };
                let commit = match e.commit {
                    0 => "original".to_string(),
                    c => c.to_string(),
                };
                vec![e.key.clone(), v, commit, e.updated_at.clone()]
            })
            .collect();
        crate::out!(
            "{}",
            super::table(&["KEY", "VALUE", "COMMIT", "UPDATED_AT"], &rows)
        );
    }
    let undo_key = "$undo/checkpoints.json";
    // What to change: delete (-D), set (--set KEY=VALUE), or undo the last change.
    let (verb, changes): (&str, BTreeMap<String, Option<serde_json::Value>>) = if args.undo {
        match store.get_json::<Undo>(undo_key).await {
            Ok(Some(u)) => ("restore", u.previous),
            Ok(None) => {
                crate::errln!("nothing to undo in {}", store.location());
                return ExitCode::from(exit::OK);
            }
            Err(e) => return crate::report(&e),
        }
    } else if !args.set.is_empty() {
        let mut m = BTreeMap::new();
        for kv in &args.set {
            let Some((k, v)) = kv.split_once('=') else {
                return crate::report(&anchovy_core::Error::config(
                    "--set",
                    format!("`{kv}` is not KEY=VALUE (VALUE is JSON, or taken as text)"),
                ));
            };
            let v = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
            m.insert(k.to_string(), Some(v));
        }
        ("set", m)
    } else if args.delete && !entries.is_empty() {
        (
            "delete",
            entries.iter().map(|e| (e.key.clone(), None)).collect(),
        )
    } else {
        return ExitCode::from(exit::OK);
    };
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            crate::errln!(
                "anchovy: error: refusing to {verb} {} checkpoints without confirmation; pass -y",
                changes.len()
            );
            return ExitCode::from(exit::CONFIG);
        }
        let _ = write!(
            std::io::stderr(),
            "{verb} {} checkpoints of {}/{}? The next run continues from the new values. [y/N] ",
            changes.len(),
            s.user,
            s.id
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            crate::errln!("nothing changed");
            return ExitCode::from(exit::OK);
        }
    }
    // Like a run, a change holds the run lease: it never races a running anchovy.
    let lease = match Lease::acquire(&store, "anchovy-checkpoints-cli", s.lease_ttl).await {
        Ok(l) => l,
        Err(e) => return crate::report(&e),
    };
    // Reload under the lease: a run may have committed since the listing.
    let (committer, meta) = match committer(&store, s, &lease, "anchovy-checkpoints-cli").await {
        Ok(x) => x,
        Err(e) => {
            let _ = lease.release().await;
            return crate::report(&e);
        }
    };
    let previous: BTreeMap<String, Option<serde_json::Value>> = changes
        .keys()
        .map(|k| (k.clone(), committer.checkpoints().get(k)))
        .collect();
    let n = changes.len();
    let result = committer.commit(&meta, Vec::new(), changes).await;
    let code = match result {
        Ok(rec) => {
            // The original tool's checkpoints are deleted as it deletes them (no
            // commit record holds them, so --undo cannot restore these).
            if verb == "delete" {
                for c in &original {
                    if let Err(e) = store.delete(&c.object).await {
                        let _ = lease.release().await;
                        return crate::report(&e);
                    }
                }
            }
            // The values before this change, for `--undo` (an undo can be undone too).
            let undo = Undo {
                commit: rec.seq,
                previous,
            };
            if let Err(e) = store.put_json(undo_key, &undo).await {
                tracing::warn!(error = %e.chain(), "cannot keep the previous values for --undo");
            }
            let past = match verb {
                "delete" => "deleted",
                "restore" => "restored",
                _ => "set",
            };
            crate::errln!(
                "{past} {n} checkpoints (commit {}); `anchovy checkpoints --undo` puts the previous values back",
                rec.seq
            );
            ExitCode::from(exit::OK)
        }
        Err(e) => crate::report(&e),
    };
    let _ = lease.release().await;
    code
}

/// What a command that changes checkpoints itself (`checkpoints`, `migrate`) commits
/// with: a committer fenced by `lease` (the run lease, already held) over the state
/// loaded under it, and the record's stamp (`session`: the command's name).
///
/// # Errors
/// As [`anchovy_core::commit::load_checkpoints`].
pub(crate) async fn committer(
    store: &anchovy_core::Datastore,
    s: &anchovy_core::Settings,
    lease: &Arc<Lease>,
    session: &str,
) -> Result<(Committer, CommitMeta), anchovy_core::Error> {
    let (cps, last) = anchovy_core::commit::load_checkpoints(store, LoadAs::SoleWriter).await?;
    let committer = Committer::new(store.clone(), Arc::new(cps), last).with_lease(lease.clone());
    let meta = CommitMeta {
        anchovy_id: s.id.clone(),
        anchovy_user: s.user.clone(),
        session_id: session.into(),
        batch_id: 0,
        tbl: None,
        worker: None,
        claim: None,
    };
    Ok((committer, meta))
}

/// The values a checkpoint change replaced (`null`: the key did not exist).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Undo {
    commit: u64,
    previous: BTreeMap<String, Option<serde_json::Value>>,
}
