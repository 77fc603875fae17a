//! Named failpoints for crash tests: `ACHVY_FAILPOINT=<name>[:<action>]`.
//!
//! Actions: `exit` (default: the process exits at once with code 86, as a kill -9
//! would leave it, no cleanup), `error` (the operation fails with an error),
//! `sleep-<ms>` (print `anchovy failpoint <name> sleeping` on stderr, then the calling
//! thread pauses, to open a race window on purpose or to stop the process there),
//! `<n>` a number: exit on the n-th hit, or `pause@<n>`: on the n-th hit print
//! `anchovy failpoint <name> paused` on stderr and block the calling thread for good, so
//! a test can `kill -9` the process at exactly that point while its other threads run
//! on. Names used by the core: `commit.before`, `commit.after`, `checkpoint.mirrors`,
//! `datafile.finish`, `source.batch`, `tasklog.write`, `session.shutdown`, `claim.taken`; plugins add
//! their own (`upload.*`, `sftp.listed`, `sftp.chunk` after each 1 MiB read).
//! Compiled only with the `failpoints` feature, which the test builds turn on
//! (anchovy-cli's dev-dependencies): in a release build [`hit`] is an empty inline
//! function and `ACHVY_FAILPOINT` does nothing.

#[cfg(feature = "failpoints")]
use std::sync::OnceLock;
#[cfg(feature = "failpoints")]
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(feature = "failpoints")]
use crate::error::Error;
use crate::error::Result;

/// The variable that arms a failpoint.
pub const VAR: &str = "ACHVY_FAILPOINT";

#[cfg(feature = "failpoints")]
static ARMED: OnceLock<Option<(String, String)>> = OnceLock::new();
#[cfg(feature = "failpoints")]
static HITS: AtomicU64 = AtomicU64::new(0);

/// Passes through (a build without the `failpoints` feature).
///
/// # Errors
/// Never.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) -> Result<()> {
    Ok(())
}

/// Passes through unless the failpoint `name` is armed.
///
/// # Errors
/// An [`Error::Cancelled`] when armed with `error`.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) -> Result<()> {
    let armed = ARMED.get_or_init(|| {
        std::env::var(VAR).ok().map(|v| match v.split_once(':') {
            Some((n, a)) => (n.to_string(), a.to_string()),
            None => (v, "exit".to_string()),
        })
    });
    let Some((n, action)) = armed else {
        return Ok(());
    };
    if n != name {
        return Ok(());
    }
    match action.as_str() {
        "error" => Err(Error::Cancelled {
            reason: format!("failpoint {name}"),
        }),
        "exit" => std::process::exit(86),
        a if a.starts_with("pause") => {
            let want: u64 = a
                .strip_prefix("pause@")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            if HITS.fetch_add(1, Ordering::SeqCst) + 1 == want {
                eprintln!("anchovy failpoint {name} paused");
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
            Ok(())
        }
        a if a.starts_with("sleep-") => {
            let ms: u64 = a["sleep-".len()..].parse().unwrap_or(1000);
            eprintln!("anchovy failpoint {name} sleeping");
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(())
        }
        count => {
            let want: u64 = count.parse().unwrap_or(1);
            if HITS.fetch_add(1, Ordering::SeqCst) + 1 >= want {
                std::process::exit(86);
            }
            Ok(())
        }
    }
}
