//! Workers: several processes of one anchovy (`<user>/<id>`) sharing its tables, with
//! the datastore as the only shared state (`--workers`, `--worker-num`).
//!
//! Without `--workers` a run is the only writer of its anchovy: it takes the run lease
//! ([`crate::lease`]) and runs every table. With it, a process is a **worker**: it takes
//! no run lease; it runs a table only while it holds that table's **claim** (a lease at
//! `$locks/tables/<table>.json` with its own fencing token, [`crate::lease::Spot::table`]),
//! taken when the table task starts and released when it ends. Which tables a worker
//! tries:
//!
//! - **static** (`--workers N --worker-num I`): the tables whose [`shard`] is `I`, a
//!   stable hash of the name, so each worker knows its share without talking to the
//!   others (the claim still guards against two workers given the same index);
//! - **dynamic** (`--workers auto`): every table, in an order of its own (so replicas
//!   start on different tables); a table another worker holds is skipped, and a table
//!   released after this worker's batch began was done in this round and is skipped too.
//!   A killed worker's claims expire after `lease_ttl` and the next batch of any
//!   replica takes them over.
//!
//! Commits of several workers go to the one commit sequence of the anchovy by
//! conditional create and retry ([`crate::commit::Committer`]): a worker that finds its
//! sequence number taken reads the commits it missed, applies them, and takes the next.
//! Before each commit a worker renews the table's claim; a worker whose claim was taken
//! over, or whose table's checkpoints another writer changed since it read them, commits
//! nothing more of the table ([`crate::Error::ClaimLost`]).

use crate::config::Settings;
use crate::error::{Error, Result};

/// One part of a table whose work splits into `count` parts ([`crate::Operator::parts`]):
/// a unit of work of its own, named `<table>#<index>`, that holds the items (files,
/// objects) whose names' [`shard`] is `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// From 0 to `count - 1`.
    pub index: u32,
    /// How many parts the table has (2 or more).
    pub count: u32,
}

impl Part {
    /// True when the item `name` (a file's name) belongs to this part.
    pub fn holds(&self, name: &str) -> bool {
        shard(name, self.count) == self.index
    }

    /// The unit's name: `<table>#<index>`.
    pub fn unit(&self, table: &str) -> String {
        format!("{table}#{}", self.index)
    }
}

/// The most parts of one table.
pub const MAX_PARTS: u32 = 1024;

/// How the tables are split among workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `--workers N --worker-num I`: this worker runs the tables whose [`shard`] is `index`.
    Static {
        /// N.
        count: u32,
        /// I, from 0 to N - 1.
        index: u32,
    },
    /// `--workers auto`: every replica claims whatever is unclaimed.
    Auto,
}

/// This process as one worker of its anchovy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// The split.
    pub split: Split,
    /// Its name in claims, task logs, results and metrics: `I-of-N` (static), or the
    /// host name and process id (dynamic; a pod's name in Kubernetes).
    pub name: String,
}

/// The most workers of one anchovy.
pub const MAX_WORKERS: u32 = 1024;

/// The variables `--worker-num` may name to read the index from: a Kubernetes Indexed
/// Job's and an AWS Batch array job's.
pub const INDEX_VARS: &[&str] = &["JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX"];

/// The shard of a table among `count` static workers: the FNV-1a 64-bit hash of the
/// table's name (its UTF-8 bytes) modulo `count`. Stable across versions, machines and
/// runs: part of the documented interface.
pub fn shard(table: &str, count: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in table.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(count.max(1))) as u32
}

impl Worker {
    /// The worker the settings describe (`None`: the single-process default).
    ///
    /// # Errors
    /// [`Error::Config`] when `workers` and `worker_num` do not fit together.
    pub fn from_settings(s: &Settings) -> Result<Option<Worker>> {
        let num = s
            .worker_num
            .as_deref()
            .map(|n| n.parse::<u32>().unwrap_or(u32::MAX));
        let split = match (s.workers.as_deref(), num) {
            (None, None) => return Ok(None),
            (None, Some(_)) => {
                return Err(Error::config(
                    "worker_num",
                    "is set without `workers`; pass --workers N with it (N workers, this one \
                     numbered from 0), or --workers auto without it",
                ));
            }
            (Some("auto"), None) => Split::Auto,
            (Some("auto"), Some(_)) => {
                return Err(Error::config(
                    "worker_num",
                    "is set with `workers: auto`: dynamic workers have no number; remove \
                     --worker-num, or give --workers a count for a static split",
                ));
            }
            (Some(n), None) => {
                return Err(Error::config(
                    "workers",
                    format!(
                        "is {n} but `worker_num` is not set; pass --worker-num I (0 to {}), \
                         or --worker-num JOB_COMPLETION_INDEX in a Kubernetes Indexed Job, \
                         AWS_BATCH_JOB_ARRAY_INDEX in an AWS Batch array job; or use \
                         --workers auto",
                        n.parse::<u32>().unwrap_or(1).saturating_sub(1)
                    ),
                ));
            }
            (Some(n), Some(i)) => {
                let count: u32 = n.parse().unwrap_or(0);
                if i >= count {
                    return Err(Error::config(
                        "worker_num",
                        format!(
                            "is {i}, but workers are numbered from 0 to {} (--workers {count})",
                            count.saturating_sub(1)
                        ),
                    ));
                }
                Split::Static { count, index: i }
            }
        };
        let name = match split {
            Split::Static { count, index } => format!("{index}-of-{count}"),
            Split::Auto => format!(
                "{}-{}",
                gethostname::gethostname().to_string_lossy(),
                std::process::id()
            ),
        };
        Ok(Some(Worker { split, name }))
    }

    /// True when this worker tries `table` at all (static: its shard; dynamic: all).
    pub fn assigned(&self, table: &str) -> bool {
        match self.split {
            Split::Static { count, index } => shard(table, count) == index,
            Split::Auto => true,
        }
    }

    /// The units (tables, parts) this worker tries, in its order: for a static worker
    /// its shard in the given order; for a dynamic one all of them, rotated by a hash
    /// of its name, so replicas that start together begin on different units instead
    /// of racing for the first.
    pub fn order<T>(&self, units: Vec<T>, name_of: impl Fn(&T) -> &str) -> Vec<T> {
        let mut mine: Vec<T> = units
            .into_iter()
            .filter(|t| self.assigned(name_of(t)))
            .collect();
        if let (Split::Auto, false) = (self.split, mine.is_empty()) {
            let n = mine.len();
            let k = (shard(&self.name, u32::MAX) as usize) % n;
            mine.rotate_left(k);
        }
        mine
    }
}

/// Checks a `workers` value: `auto`, or a count from 1 to [`MAX_WORKERS`].
///
/// # Errors
/// [`Error::Config`] naming the accepted values.
pub fn check_workers(key: &str, v: String) -> Result<String> {
    let t = v.trim();
    if t.eq_ignore_ascii_case("auto") {
        return Ok("auto".into());
    }
    match t.parse::<u32>() {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n.to_string()),
        _ => Err(Error::config(
            key,
            format!("`{t}` is neither `auto` nor a number of workers from 1 to {MAX_WORKERS}"),
        )),
    }
}

/// Checks a `worker_num` value: a number, or the name of a variable that holds it
/// ([`INDEX_VARS`]), read from `vars`.
///
/// # Errors
/// [`Error::Config`] for anything else, or a named variable that is unset or not a
/// number.
pub fn check_worker_num(
    key: &str,
    v: String,
    vars: &std::collections::BTreeMap<String, String>,
) -> Result<String> {
    let t = v.trim();
    let (text, from) = match INDEX_VARS.iter().find(|n| n.eq_ignore_ascii_case(t)) {
        Some(var) => match vars.get(*var) {
            Some(x) => (x.trim().to_string(), format!(" (from ${var})")),
            None => {
                return Err(Error::config(
                    key,
                    format!(
                        "names ${var}, which is not set: the scheduler sets it in an {} only",
                        if *var == "JOB_COMPLETION_INDEX" {
                            "Indexed Job of Kubernetes (completionMode: Indexed)"
                        } else {
                            "array job of AWS Batch (arrayProperties.size)"
                        }
                    ),
                ));
            }
        },
        None => (t.to_string(), String::new()),
    };
    match text.parse::<u32>() {
        Ok(n) if n < MAX_WORKERS => Ok(n.to_string()),
        _ => Err(Error::config(
            key,
            format!(
                "`{text}`{from} is not a worker number (0 to {}) nor one of {}",
                MAX_WORKERS - 1,
                INDEX_VARS.join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented hash: fixed values, so a change of it (which would move tables
    /// between the workers of a running deployment) fails here.
    #[test]
    fn the_shard_hash_is_stable_and_spreads() {
        assert_eq!(shard("", 7), (0xcbf2_9ce4_8422_2325u64 % 7) as u32);
        assert_eq!(shard("a", 1000), (0xaf63_dc4c_8601_ec8cu64 % 1000) as u32);
        let mut per = [0u32; 4];
        for i in 0..4000 {
            per[shard(&format!("schema.table_{i}"), 4) as usize] += 1;
        }
        assert!(per.iter().all(|&n| (800..1200).contains(&n)), "{per:?}");
    }

    #[test]
    fn worker_numbers_come_from_the_scheduler_when_asked() {
        let mut vars = std::collections::BTreeMap::new();
        assert_eq!(
            check_worker_num("worker_num", "3".into(), &vars).unwrap(),
            "3"
        );
        let e = check_worker_num("worker_num", "JOB_COMPLETION_INDEX".into(), &vars).unwrap_err();
        assert!(e.to_string().contains("Indexed Job"), "{e}");
        vars.insert("AWS_BATCH_JOB_ARRAY_INDEX".into(), "5".into());
        assert_eq!(
            check_worker_num("worker_num", "aws_batch_job_array_index".into(), &vars).unwrap(),
            "5"
        );
        vars.insert("JOB_COMPLETION_INDEX".into(), "x".into());
        let e = check_worker_num("worker_num", "JOB_COMPLETION_INDEX".into(), &vars).unwrap_err();
        assert!(e.to_string().contains("$JOB_COMPLETION_INDEX"), "{e}");
        assert_eq!(check_workers("workers", " AUTO ".into()).unwrap(), "auto");
        assert!(check_workers("workers", "0".into()).is_err());
        assert!(check_workers("workers", "2000".into()).is_err());
    }
}
