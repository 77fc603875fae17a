//! Settings: CLI > environment > config.yaml `config:` map > defaults, in one combine step.
//!
//! Each source is turned into a [`Layer`] (canonical key -> JSON value); [`Settings::resolve`]
//! takes, for every known key, the value of the first layer that has it and parses it
//! once. Unknown keys in `config:` are errors that suggest the closest known key.
//! The config document itself ([`ConfigDoc`]) is YAML or JSON with two top-level maps:
//! `config:` (these settings) and `tbls:` (tables).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::env;
use crate::error::{Error, Result};
use crate::tbl::{Tbl, TblSet};

/// What a failing table does to its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BatchPolicy {
    /// Log the table as ERR and let the others finish (default).
    Continue,
    /// Stop the batch at the first failed table.
    Raise,
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (default).
    Text,
    /// One JSON object per line.
    Json,
}

mod doc;
mod keys;
mod layer;
#[cfg(test)]
mod tests;
mod values;

pub use self::doc::ConfigDoc;
use self::keys::ALIASES;
pub use self::keys::{KEYS, KeyDef, STORE_CLS};
pub use self::layer::{Layer, closest};
use self::values::*;
pub use self::values::{MAX_DURATION, human_duration, parse_duration};

/// The resolved settings of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The anchovy id.
    pub id: String,
    /// The anchovy user (`prod` in production).
    pub user: String,
    /// The operator name as given (resolved against the registry later).
    pub operator: Option<String>,
    /// True for service mode (`-S`).
    pub service: bool,
    /// Timeout of one batch.
    pub execution_timeout: Option<Duration>,
    /// Upstream anchovy ids.
    pub upstream: Vec<String>,
    /// Enabled table wildcards (empty = all).
    pub enabled: Vec<String>,
    /// Disabled table wildcards.
    pub disabled: Vec<String>,
    /// The datastore location (a path or URL).
    pub datastore: String,
    /// Checkpoint store implementation.
    pub checkpoint_cls: String,
    /// Task log store implementation.
    pub task_store_cls: String,
    /// Table metadata store implementation.
    pub tbl_store_cls: String,
    /// Data file format.
    pub data_buffer_cls: crate::data::DataFormat,
    /// Log level or tracing filter.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Batch policy.
    pub batch_policy: BatchPolicy,
    /// "Matched nothing" (`-e`, `-d`, `-U`, undiscovered tables) is an error, not a
    /// warning.
    pub strict: bool,
    /// Tables at once.
    pub max_concurrency: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// Bytes before a data file rotates.
    pub file_max_bytes: u64,
    /// Time between commits while streaming.
    pub commit_interval: Duration,
    /// Run lease time to live.
    pub lease_ttl: Duration,
    /// Service mode: endpoint port (0: off).
    pub port: u16,
    /// Service mode: endpoint address.
    pub bind: String,
    /// A Prometheus textfile to write at the end of the run.
    pub metrics_file: Option<String>,
    /// Service mode: pause between batches.
    pub service_pause: Duration,
    /// Service mode: grace period after a stop signal.
    pub stop_grace: Duration,
    /// Service mode: how long discovered tables are reused.
    pub discovery_ttl: Duration,
    /// Budget: wall time.
    pub max_duration: Option<Duration>,
    /// Budget: rows.
    pub max_rows: Option<u64>,
    /// Budget: bytes.
    pub max_bytes: Option<u64>,
    /// Which layer each key came from (key -> origin), for `--explain`-style output.
    pub origins: BTreeMap<String, String>,
    /// `anchovy rejects replay`: table tasks read their quarantined records again
    /// instead of the source ([`crate::reject::ReplaySource`]). Not a setting.
    pub replay_rejects: bool,
}

impl Settings {
    /// Combines layers, earlier layers winning (pass CLI, env, file in that order), and
    /// fills defaults. `vars` supplies `HOME`/`USER` for the defaults.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key, its origin and the accepted values.
    pub fn resolve(layers: &[&Layer], vars: &BTreeMap<String, String>) -> Result<Settings> {
        let mut origins = BTreeMap::new();
        let pick = |key: &str,
                    origins: &mut BTreeMap<String, String>|
         -> Option<(serde_json::Value, String)> {
            layers.iter().find_map(|l| {
                l.get(key).map(|v| {
                    origins.insert(key.to_string(), l.origin.clone());
                    (v.clone(), l.origin.clone())
                })
            })
        };
        // `prod` beats `user` within a layer; across layers, the earlier layer wins.
        let user = layers.iter().find_map(|l| {
            let prod = l
                .get("prod")
                .map(|v| parse_bool(v, "prod", &l.origin))
                .transpose();
            match prod {
                Err(e) => Some(Err(e)),
                Ok(Some(true)) => Some(Ok(("prod".to_string(), l.origin.clone()))),
                _ => l.get("user").map(|v| Ok((as_string(v), l.origin.clone()))),
            }
        });
        let user = match user {
            Some(Ok((u, origin))) => {
                origins.insert("user".to_string(), origin);
                Some(Ok(u))
            }
            Some(Err(e)) => Some(Err(e)),
            None => None,
        };
        let user = match user {
            Some(u) => u?,
            None => vars
                .get("USER")
                .or_else(|| vars.get("USERNAME"))
                .cloned()
                .unwrap_or_else(|| "default".into()),
        };
        check_name("user", &user)?;

        let id = match pick("id", &mut origins) {
            Some((v, _)) => as_string(&v),
            None => gethostname::gethostname().to_string_lossy().into_owned(),
        };
        check_name("id", &id)?;

        let string = |key: &str, default: &str, origins: &mut BTreeMap<String, String>| -> String {
            pick(key, origins)
                .map(|(v, _)| as_string(&v))
                .unwrap_or_else(|| default.to_string())
        };
        let list = |key: &str, origins: &mut BTreeMap<String, String>| -> Vec<String> {
            match pick(key, origins) {
                Some((serde_json::Value::Array(a), _)) => a.iter().map(as_string).collect(),
                Some((v, _)) => as_string(&v)
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                None => Vec::new(),
            }
        };

        let service = match pick("is_task_executor", &mut origins) {
            Some((v, o)) => !parse_bool(&v, "is_task_executor", &o)?,
            None => false,
        };
        // Every number and duration is range-checked here, where it is parsed: a value
        // outside its range is a configuration error (exit 2) naming the range, never a
        // panic or a silent clamp further in.
        let duration =
            |key: &str, range: (Duration, Duration), origins: &mut BTreeMap<String, String>| {
                pick(key, origins)
                    .map(|(v, o)| duration_in(key, &as_string(&v), &o, range))
                    .transpose()
            };
        let number = |key: &str, range: (u64, u64), origins: &mut BTreeMap<String, String>| {
            pick(key, origins)
                .map(|(v, o)| number_in(key, &as_string(&v), &o, range))
                .transpose()
        };
        let execution_timeout = duration(
            "execution_timeout",
            (Duration::from_millis(100), MAX_DURATION),
            &mut origins,
        )?;
        let home = match pick("home", &mut origins) {
            Some((v, _)) => expand_home(&as_string(&v), vars),
            None => expand_home("~/.anchovies", vars),
        };
        let datastore = match pick("datastore", &mut origins) {
            Some((v, _)) => as_string(&v),
            None => home.to_string_lossy().into_owned(),
        };
        if datastore.trim().is_empty() {
            return Err(Error::config(
                "datastore",
                "is empty; give a path or a URL (s3://, az://, gs://, file://), or unset it                  for the default ~/.anchovies",
            ));
        }
        let checkpoint_cls = string("checkpoint_cls", "datastore", &mut origins);
        if checkpoint_cls.contains("://") {
            return Err(Error::config(
                "checkpoint_cls",
                "checkpoints cannot live apart from the data: each commit record carries the \
                 checkpoints of the data files it commits, in one atomic write; use `datastore` \
                 (task_store_cls and tbl_store_cls take a URL)",
            ));
        }
        let checkpoint_cls = one_of("checkpoint_cls", checkpoint_cls, STORE_CLS)?;
        let task_store_cls = store_cls(
            "task_store_cls",
            string("task_store_cls", "datastore", &mut origins),
        )?;
        let tbl_store_cls = store_cls(
            "tbl_store_cls",
            string("tbl_store_cls", "datastore", &mut origins),
        )?;
        let data_buffer_cls = {
            let v = string("data_buffer_cls", "ndjson.gz", &mut origins);
            match crate::data::DataFormat::parse(&v) {
                Some(f) => f,
                None => {
                    return Err(not_one_of(
                        "data_buffer_cls",
                        &v,
                        crate::data::DataFormat::NAMES,
                    ));
                }
            }
        };
        let log_level = check_log_level(string("log_level", "info", &mut origins))?;
        let log_format = match string("log_format", "text", &mut origins)
            .to_ascii_lowercase()
            .as_str()
        {
            "text" | "pretty" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(Error::config(
                    "log_format",
                    format!("`{other}` is not a log format; use text or json"),
                ));
            }
        };
        let batch_policy = match string("batch_policy", "CONTINUE", &mut origins)
            .to_ascii_uppercase()
            .as_str()
        {
            "CONTINUE" => BatchPolicy::Continue,
            "RAISE" => BatchPolicy::Raise,
            other => {
                return Err(Error::config(
                    "batch_policy",
                    format!("`{other}` is not a batch policy; use CONTINUE or RAISE"),
                ));
            }
        };
        let strict = match pick("strict", &mut origins) {
            Some((v, o)) => parse_bool(&v, "strict", &o)?,
            None => false,
        };
        let max_concurrency =
            number("max_concurrency", (1, 1024), &mut origins)?.unwrap_or(4) as usize;
        let batch_size =
            number("batch_size", (1, 1_000_000), &mut origins)?.unwrap_or(4096) as usize;
        let file_max_bytes =
            number("file_max_bytes", (1 << 10, 1 << 40), &mut origins)?.unwrap_or(128 << 20);
        let commit_interval = duration(
            "commit_interval",
            (Duration::ZERO, MAX_DURATION),
            &mut origins,
        )?
        .unwrap_or(Duration::from_secs(5));
        let lease_ttl = duration(
            "lease_ttl",
            (Duration::from_secs(1), MAX_DURATION),
            &mut origins,
        )?
        .unwrap_or(Duration::from_secs(60));
        let port = number("port", (0, u16::MAX.into()), &mut origins)?.unwrap_or(8080) as u16;
        let bind = string("bind", "127.0.0.1", &mut origins);
        if bind.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::config(
                "bind",
                format!("`{bind}` is not an IP address (127.0.0.1, 0.0.0.0, ::)"),
            ));
        }
        let metrics_file = pick("metrics_file", &mut origins).map(|(v, _)| as_string(&v));
        let service_pause = duration(
            "service_pause",
            (Duration::ZERO, MAX_DURATION),
            &mut origins,
        )?
        .unwrap_or(Duration::from_secs(10));
        let stop_grace = duration("stop_grace", (Duration::ZERO, MAX_DURATION), &mut origins)?
            .unwrap_or(Duration::from_secs(30));
        let discovery_ttl = duration(
            "discovery_ttl",
            (Duration::ZERO, MAX_DURATION),
            &mut origins,
        )?
        .unwrap_or(Duration::ZERO);
        let max_duration = duration("max_duration", (Duration::ZERO, MAX_DURATION), &mut origins)?;
        let max_rows = number("max_rows", (0, u64::MAX), &mut origins)?;
        let max_bytes = number("max_bytes", (0, u64::MAX), &mut origins)?;
        // A SAS signature or a password in a store URL is a secret like any other.
        for url in [&datastore, &task_store_cls, &tbl_store_cls] {
            for s in crate::connection::uri_secrets(url) {
                crate::secret::register(&s);
            }
        }
        Ok(Settings {
            id,
            user,
            operator: pick("operator_cls", &mut origins).map(|(v, _)| as_string(&v)),
            service,
            execution_timeout,
            upstream: list("upstream", &mut origins),
            enabled: list("enabled", &mut origins),
            disabled: list("disabled", &mut origins),
            datastore,
            checkpoint_cls,
            task_store_cls,
            tbl_store_cls,
            data_buffer_cls,
            log_level,
            log_format,
            batch_policy,
            strict,
            max_concurrency,
            batch_size,
            file_max_bytes,
            commit_interval,
            lease_ttl,
            port,
            bind,
            metrics_file,
            service_pause,
            stop_grace,
            discovery_ttl,
            max_duration,
            max_rows,
            max_bytes,
            origins,
            replay_rejects: false,
        })
    }
}
