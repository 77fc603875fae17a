//! `anchovy checkpoints [GLOB]`: list an anchovy's checkpoints; `-D` deletes them
//! (through a commit, like any checkpoint change) after a confirmation.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anchovy_core::checkpoint::Checkpoints;
use anchovy_core::commit::{CommitMeta, Committer};
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
    let entries = cps.list(&args.glob);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        );
    } else if entries.is_empty() {
        eprintln!(
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
                vec![e.key.clone(), v, e.commit.to_string(), e.updated_at.clone()]
            })
            .collect();
        print!(
            "{}",
            super::table(&["KEY", "VALUE", "COMMIT", "UPDATED_AT"], &rows)
        );
    }
    if !args.delete || entries.is_empty() {
        return ExitCode::from(exit::OK);
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "anchovy: error: refusing to delete {} checkpoints without confirmation; pass -y",
                entries.len()
            );
            return ExitCode::from(exit::CONFIG);
        }
        eprint!(
            "Delete {} checkpoints of {}/{}? The next run starts over for them. [y/N] ",
            entries.len(),
            s.user,
            s.id
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing deleted");
            return ExitCode::from(exit::OK);
        }
    }
    // Like a run, a deletion holds the run lease: it never races a running anchovy.
    let lease = match Lease::acquire(&store, "anchovy-checkpoints-cli", s.lease_ttl).await {
        Ok(l) => l,
        Err(e) => return crate::report(&e),
    };
    // Reload under the lease: a run may have committed since the listing.
    let (cps, last) = match Checkpoints::load(&store).await {
        Ok(x) => x,
        Err(e) => return crate::report(&e),
    };
    let entries = cps.list(&args.glob);
    let committer = Committer::new(store.clone(), Arc::new(cps), last).with_lease(lease.clone());
    let meta = CommitMeta {
        anchovy_id: s.id.clone(),
        anchovy_user: s.user.clone(),
        session_id: "anchovy-checkpoints-cli".into(),
        batch_id: 0,
        tbl: None,
    };
    match committer
        .commit(
            &meta,
            Vec::new(),
            entries.iter().map(|e| (e.key.clone(), None)).collect(),
        )
        .await
    {
        Ok(rec) => {
            let _ = lease.release().await;
            eprintln!("deleted {} checkpoints (commit {})", entries.len(), rec.seq);
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            let _ = lease.release().await;
            crate::report(&e)
        }
    }
}
