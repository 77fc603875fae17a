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

/// One known setting: its canonical key, env var, CLI flag and doc.
#[derive(Debug, Clone, Copy)]
pub struct KeyDef {
    /// The key in the `config:` map.
    pub key: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The CLI flag(s), for docs.
    pub cli: &'static str,
    /// Whether the value is a list (comma separated in env).
    pub list: bool,
    /// One line of documentation.
    pub doc: &'static str,
}

/// Every setting, in README order. The README appendix and `--help` follow this list.
pub const KEYS: &[KeyDef] = &[
    KeyDef {
        key: "id",
        env: env::ID,
        cli: "-i/--id",
        list: false,
        doc: "the anchovy identifier (default: the host name)",
    },
    KeyDef {
        key: "user",
        env: env::USER,
        cli: "-u/--user",
        list: false,
        doc: "the anchovy user (default: $USER); `prod` in production",
    },
    KeyDef {
        key: "prod",
        env: env::PROD,
        cli: "--prod",
        list: false,
        doc: "shorthand for --user prod",
    },
    KeyDef {
        key: "operator_cls",
        env: env::OPERATOR_CLS,
        cli: "-op/--operator",
        list: false,
        doc: "the operator to run, e.g. sftp.CsvDownloader",
    },
    KeyDef {
        key: "is_task_executor",
        env: env::IS_TASK_EXECUTOR,
        cli: "-S/--service (sets false)",
        list: false,
        doc: "true: run once (task mode, default); false: loop as a service",
    },
    KeyDef {
        key: "execution_timeout",
        env: env::EXECUTION_TIMEOUT,
        cli: "-t/--execution-timeout",
        list: false,
        doc: "timeout of one batch: seconds or 90s, 15m, 2h",
    },
    KeyDef {
        key: "upstream",
        env: env::UPSTREAM,
        cli: "-U/--upstream (repeatable)",
        list: true,
        doc: "upstream anchovy ids",
    },
    KeyDef {
        key: "enabled",
        env: env::ENABLED,
        cli: "-e/--enable (repeatable)",
        list: true,
        doc: "only these tables (wildcards allowed)",
    },
    KeyDef {
        key: "disabled",
        env: env::DISABLED,
        cli: "-d/--disable (repeatable)",
        list: true,
        doc: "skip these tables; wins over enabled",
    },
    KeyDef {
        key: "datastore",
        env: env::DATASTORE,
        cli: "--datastore",
        list: false,
        doc: "datastore location: a path or file:// URL (default: ACHVY_HOME)",
    },
    KeyDef {
        key: "checkpoint_cls",
        env: env::CHECKPOINT_CLS,
        cli: "--checkpoint-cls",
        list: false,
        doc: "checkpoint store implementation (datastore)",
    },
    KeyDef {
        key: "task_store_cls",
        env: env::TASK_STORE_CLS,
        cli: "--task-store-cls",
        list: false,
        doc: "where task logs go: datastore (default) or a datastore URL of their own",
    },
    KeyDef {
        key: "tbl_store_cls",
        env: env::TBL_STORE_CLS,
        cli: "--tbl-store-cls",
        list: false,
        doc: "where table metadata goes: datastore (default) or a datastore URL of its own",
    },
    KeyDef {
        key: "data_buffer_cls",
        env: env::DATA_BUFFER_CLS,
        cli: "--data-buffer-cls",
        list: false,
        doc: "data file format: ndjson.gz (default) or parquet",
    },
    KeyDef {
        key: "home",
        env: env::HOME,
        cli: "--home",
        list: false,
        doc: "default datastore root (default ~/.anchovies)",
    },
    KeyDef {
        key: "log_level",
        env: env::LOG_LEVEL,
        cli: "--log-level",
        list: false,
        doc: "error, warn, info (default), debug, trace or a tracing filter",
    },
    KeyDef {
        key: "log_format",
        env: env::LOG_FORMAT,
        cli: "--log-format",
        list: false,
        doc: "text (default) or json",
    },
    KeyDef {
        key: "batch_policy",
        env: env::BATCH_POLICY,
        cli: "--batch-policy",
        list: false,
        doc: "CONTINUE (default) or RAISE when a table fails",
    },
    KeyDef {
        key: "strict",
        env: env::STRICT,
        cli: "--strict",
        list: false,
        doc: "exit 2 when -e/-d match no table or an upstream (-U) has no tables",
    },
    KeyDef {
        key: "max_concurrency",
        env: env::MAX_CONCURRENCY,
        cli: "--max-concurrency",
        list: false,
        doc: "tables run at the same time (default 4)",
    },
    KeyDef {
        key: "batch_size",
        env: env::BATCH_SIZE,
        cli: "--batch-size",
        list: false,
        doc: "rows per in-flight batch (default 4096)",
    },
    KeyDef {
        key: "file_max_bytes",
        env: env::FILE_MAX_BYTES,
        cli: "--file-max-bytes",
        list: false,
        doc: "uncompressed bytes before a data file rotates (default 134217728)",
    },
    KeyDef {
        key: "commit_interval",
        env: env::COMMIT_INTERVAL,
        cli: "--commit-interval",
        list: false,
        doc: "time between commits while a table streams (default 5s)",
    },
    KeyDef {
        key: "lease_ttl",
        env: env::LEASE_TTL,
        cli: "--lease-ttl",
        list: false,
        doc: "how long a killed run's lease blocks the next start on an object store (default 60s; renewed every third of it)",
    },
    KeyDef {
        key: "port",
        env: env::PORT,
        cli: "--port",
        list: false,
        doc: "service mode: port of /healthz, /readyz and /metrics (default 8080; 0 turns the endpoint off)",
    },
    KeyDef {
        key: "bind",
        env: env::BIND,
        cli: "--bind",
        list: false,
        doc: "service mode: address the endpoint listens on (default 127.0.0.1; 0.0.0.0 in a container)",
    },
    KeyDef {
        key: "metrics_file",
        env: env::METRICS_FILE,
        cli: "--metrics-file",
        list: false,
        doc: "write the run's metrics to this Prometheus textfile at the end (node_exporter's textfile collector)",
    },
    KeyDef {
        key: "service_pause",
        env: env::SERVICE_PAUSE,
        cli: "--service-pause",
        list: false,
        doc: "service mode: pause between batches (default 10s; doubles after each failed batch, up to 5m)",
    },
    KeyDef {
        key: "stop_grace",
        env: env::STOP_GRACE,
        cli: "--stop-grace",
        list: false,
        doc: "service mode: how long SIGTERM/SIGINT lets the current batch finish before cancelling it (default 30s)",
    },
    KeyDef {
        key: "discovery_ttl",
        env: env::DISCOVERY_TTL,
        cli: "--discovery-ttl",
        list: false,
        doc: "service mode: reuse the tables an operator discovered for this long (default 0s: discover every batch)",
    },
    KeyDef {
        key: "max_duration",
        env: env::MAX_DURATION,
        cli: "--max-duration",
        list: false,
        doc: "budget: take no new file/object/commit after this long; the run exits 6 (more work pending)",
    },
    KeyDef {
        key: "max_rows",
        env: env::MAX_ROWS,
        cli: "--max-rows",
        list: false,
        doc: "budget: take no new file/object/commit after this many rows; exits 6",
    },
    KeyDef {
        key: "max_bytes",
        env: env::MAX_BYTES,
        cli: "--max-bytes",
        list: false,
        doc: "budget: take no new file/object/commit after this many bytes; exits 6",
    },
];

/// Accepted spellings that map to a canonical key (the original README's typo included).
const ALIASES: &[(&str, &str)] = &[
    ("checpoint_cls", "checkpoint_cls"),
    ("operator", "operator_cls"),
    ("timeout", "execution_timeout"),
];

/// The built-in implementation names for the `*_cls` settings.
pub const STORE_CLS: &[&str] = &["datastore"];

/// Values for some settings from one source.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    /// Where the values came from (`command line`, `environment`, `config: of ./config.yaml`).
    pub origin: String,
    values: BTreeMap<&'static str, serde_json::Value>,
}

impl Layer {
    /// An empty layer.
    pub fn new(origin: impl Into<String>) -> Layer {
        Layer {
            origin: origin.into(),
            values: BTreeMap::new(),
        }
    }

    /// Sets a known key.
    ///
    /// # Panics
    /// When `key` is not in [`KEYS`] (a programming error).
    pub fn set(&mut self, key: &str, value: impl Into<serde_json::Value>) -> &mut Self {
        let def = KEYS
            .iter()
            .find(|k| k.key == key)
            .unwrap_or_else(|| panic!("unknown settings key {key}"));
        self.values.insert(def.key, value.into());
        self
    }

    /// Sets a key when `value` is `Some` (lists: when non-empty).
    pub fn set_opt<V: Into<serde_json::Value>>(
        &mut self,
        key: &str,
        value: Option<V>,
    ) -> &mut Self {
        if let Some(v) = value {
            let v = v.into();
            if !matches!(&v, serde_json::Value::Array(a) if a.is_empty()) {
                self.set(key, v);
            }
        }
        self
    }

    /// The layer of the `ACHVY_*` variables in `vars`.
    pub fn from_env<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Layer {
        let mut l = Layer::new("environment");
        let vars: BTreeMap<&str, &str> = vars.into_iter().collect();
        for def in KEYS {
            if let Some(v) = vars.get(def.env) {
                if def.list {
                    let items: Vec<serde_json::Value> = v
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| s.into())
                        .collect();
                    l.values.insert(def.key, items.into());
                } else {
                    l.values.insert(def.key, (*v).into());
                }
            }
        }
        l
    }

    /// The layer of a `config:` map; unknown keys are errors with a suggestion.
    ///
    /// # Errors
    /// [`Error::UnknownKey`].
    pub fn from_map(
        map: &serde_json::Map<String, serde_json::Value>,
        origin: &str,
    ) -> Result<Layer> {
        let mut l = Layer::new(format!("config: of {origin}"));
        for (k, v) in map {
            let canon = ALIASES
                .iter()
                .find(|(a, _)| a == k)
                .map(|(_, c)| *c)
                .unwrap_or(k.as_str());
            match KEYS.iter().find(|d| d.key == canon) {
                Some(def) => {
                    l.values.insert(def.key, v.clone());
                }
                None => {
                    return Err(Error::UnknownKey {
                        key: k.clone(),
                        place: format!("the config: map of {origin}"),
                        suggestion: closest(k, KEYS.iter().map(|d| d.key)),
                    });
                }
            }
        }
        Ok(l)
    }

    fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.values.get(key)
    }
}

/// The closest candidate to `word`, if it is close enough to be a plausible typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let w = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&w, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_string())
}

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

fn as_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn parse_bool(v: &serde_json::Value, key: &str, origin: &str) -> Result<bool> {
    match v {
        serde_json::Value::Bool(b) => Ok(*b),
        other => match as_string(other).trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "y" | "on" => Ok(true),
            "0" | "false" | "no" | "n" | "off" | "" => Ok(false),
            s => Err(Error::config(
                key,
                format!("`{s}` from {origin} is not a boolean; use true or false"),
            )),
        },
    }
}

/// The longest duration any setting takes: one year. Longer values are typos (a
/// duration in milliseconds given as seconds) and would overflow deadlines.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// Parses a duration setting and checks it against `range` (inclusive).
fn duration_in(
    key: &str,
    text: &str,
    origin: &str,
    range: (Duration, Duration),
) -> Result<Duration> {
    let (min, max) = range;
    let show = human_duration;
    match duration_secs(text) {
        Some(secs) if secs >= min.as_secs_f64() && secs <= max.as_secs_f64() => {
            Ok(Duration::from_secs_f64(secs))
        }
        Some(_) => Err(Error::config(
            key,
            format!(
                "`{}` from {origin} is out of range; use a duration from {} to {}",
                printable(text),
                show(min),
                show(max)
            ),
        )),
        None => Err(Error::config(
            key,
            format!(
                "`{}` from {origin} is not a duration; use seconds (300) or 90s, 15m, 2h, 1d \
                 (from {} to {})",
                printable(text),
                show(min),
                show(max)
            ),
        )),
    }
}

/// Parses a whole-number setting (`_` separators allowed) and checks it against `range`.
fn number_in(key: &str, text: &str, origin: &str, range: (u64, u64)) -> Result<u64> {
    let (min, max) = range;
    let bounds = if max == u64::MAX {
        format!("{min} or more")
    } else {
        format!("from {min} to {max}")
    };
    match text.trim().replace('_', "").parse::<u64>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        Ok(_) => Err(Error::config(
            key,
            format!(
                "`{}` from {origin} is out of range; use a whole number {bounds}",
                printable(text)
            ),
        )),
        Err(_) => Err(Error::config(
            key,
            format!(
                "`{}` from {origin} is not a whole number; use one {bounds}",
                printable(text)
            ),
        )),
    }
}

/// A user's value quoted in a message: control characters escaped, long values cut.
fn printable(text: &str) -> String {
    let escaped: String = text.chars().flat_map(char::escape_debug).collect();
    if escaped.chars().count() > 60 {
        format!("{}...", escaped.chars().take(60).collect::<String>())
    } else {
        escaped
    }
}

/// `error`..`trace`, or a tracing filter (`info,anchovy_plugins=debug`): directives of
/// `target=level` separated by commas. Anything else is refused here rather than
/// silently logging at `info`.
fn check_log_level(level: String) -> Result<String> {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    let ok = !level.trim().is_empty()
        && level.split(',').all(|d| {
            let d = d.trim();
            let (target, lvl) = match d.rsplit_once('=') {
                Some((t, l)) => (t, Some(l)),
                None if LEVELS.contains(&d.to_ascii_lowercase().as_str()) => ("", None),
                None => (d, None),
            };
            let target_ok = target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'));
            let level_ok =
                lvl.is_none_or(|l| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str()));
            !d.is_empty() && target_ok && level_ok
        });
    if ok {
        Ok(level)
    } else {
        Err(Error::config(
            "log_level",
            format!(
                "`{}` is not a log level; use error, warn, info, debug or trace, or a filter \
                 such as info,anchovy_plugins=debug",
                printable(&level)
            ),
        ))
    }
}

/// `datastore`, or a datastore URL/path of its own for this kind of metadata.
fn store_cls(key: &str, v: String) -> Result<String> {
    if v.contains("://") || v.starts_with('/') {
        Ok(v)
    } else {
        one_of(key, v, STORE_CLS)
    }
}

fn one_of(key: &str, v: String, allowed: &[&str]) -> Result<String> {
    if allowed.contains(&v.as_str()) {
        Ok(v)
    } else {
        Err(not_one_of(key, &v, allowed))
    }
}

fn not_one_of(key: &str, v: &str, allowed: &[&str]) -> Error {
    Error::config(
        key,
        format!(
            "`{v}` is not available; built-in: {}{}",
            allowed.join(", "),
            closest(v, allowed.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default()
        ),
    )
}

/// Ids and users become datastore path segments: keep them to safe characters.
fn check_name(key: &str, v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v != "."
        && v != ".."
        && v.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("`{v}` is not a valid {key}; use letters, digits, '-', '_', '.' or '@'"),
        ))
    }
}

/// Parses `300`, `1.5`, `90s`, `500ms`, `15m`, `2h`, `7d`. `None` for anything else,
/// including anything over 100 years, so that adding the result to a clock or a
/// deadline can never overflow.
pub fn parse_duration(s: &str) -> Option<Duration> {
    const CENTURY: f64 = 100.0 * 366.0 * 86_400.0;
    duration_secs(s)
        .filter(|n| *n <= CENTURY)
        .map(Duration::from_secs_f64)
}

/// The seconds a duration text stands for (finite, not negative), unbounded.
fn duration_secs(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix('d') {
        (n, 86_400.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let num = num.trim();
    // Digits, one dot, an exponent: no `inf`, `nan` or `+` spellings.
    if num.is_empty()
        || !num
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-'))
    {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let secs = n * mult;
    (secs.is_finite() && secs >= 0.0).then_some(secs)
}

/// `250ms`, `90s`, `15m`, `2h`, `366d`: the largest unit that divides evenly.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, name) in [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ] {
        if ms >= unit && ms.is_multiple_of(unit) {
            return format!("{}{name}", ms / unit);
        }
    }
    format!("{ms}ms")
}

fn expand_home(p: &str, vars: &BTreeMap<String, String>) -> PathBuf {
    match p.strip_prefix("~/").or_else(|| (p == "~").then_some("")) {
        Some(rest) => {
            PathBuf::from(vars.get("HOME").cloned().unwrap_or_else(|| "/".into())).join(rest)
        }
        None => PathBuf::from(p),
    }
}

/// Parser limits for config files, which are small: 2,000 tables sharing one anchored
/// entry are well inside them, while an alias bomb stops after 100,000 replayed events
/// (40 MiB and 0.06 s for the whole failed run, instead of 91 MiB and 0.15 s with the
/// library's general-purpose 1,000,000). Duplicate keys are errors (the default).
fn yaml_options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.alias_limits.max_total_replayed_events = 100_000;
    let mut b = serde_saphyr::Budget::default();
    b.max_nodes = 200_000;
    b.max_aliases = 10_000;
    // The library's default also refuses more than 10 aliases per anchor (past 100),
    // which breaks the common "one anchored defaults entry merged into every table":
    // the absolute caps above bound the work instead.
    b.enforce_alias_anchor_ratio = false;
    o.budget = Some(b);
    o
}

/// The config document: `config:` settings and `tbls:` tables.
#[derive(Debug, Clone, Default)]
pub struct ConfigDoc {
    /// Where it came from (a path or `--config`).
    pub origin: String,
    /// The `config:` map.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// The `tbls:` entries, by name.
    pub tbls: BTreeMap<String, Tbl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoc {
    #[serde(default)]
    config: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    tbls: Option<BTreeMap<String, serde_json::Value>>,
}

const TOP_KEYS: &[&str] = &["config", "tbls"];

impl ConfigDoc {
    /// Parses YAML or JSON text (JSON is YAML). Anchors, aliases and merge keys work;
    /// alias expansion is bounded (no "billion laughs").
    ///
    /// # Errors
    /// [`Error::ConfigSyntax`] with line and column; [`Error::UnknownKey`] for an
    /// unknown top-level key; [`Error::Config`] for a bad table entry.
    pub fn parse(text: &str, origin: &str) -> Result<ConfigDoc> {
        if text.trim().is_empty() {
            return Ok(ConfigDoc {
                origin: origin.to_string(),
                ..Default::default()
            });
        }
        let value: serde_json::Value = serde_saphyr::from_str_with_options(text, yaml_options())
            .map_err(|e| Error::ConfigSyntax {
                origin: origin.to_string(),
                message: e.to_string(),
            })?;
        let obj = match value {
            serde_json::Value::Object(o) => o,
            serde_json::Value::Null => Default::default(),
            other => {
                return Err(Error::ConfigSyntax {
                    origin: origin.to_string(),
                    message: format!(
                        "expected a map with `config:` and `tbls:`, found {}",
                        json_kind(&other)
                    ),
                });
            }
        };
        for k in obj.keys() {
            if !TOP_KEYS.contains(&k.as_str()) {
                let hint = if k == "cnxns" || k == "connections" {
                    Some("connections are not read from config files; use ACHVY_CNXN__<ID>__<ATTR> variables".to_string())
                } else {
                    None
                };
                return Err(match hint {
                    Some(h) => Error::config(format!("`{k}` in {origin}"), h),
                    None => Error::UnknownKey {
                        key: k.clone(),
                        place: origin.to_string(),
                        suggestion: closest(k, TOP_KEYS.iter().copied()),
                    },
                });
            }
        }
        let raw: RawDoc = serde_json::from_value(serde_json::Value::Object(obj)).map_err(|e| {
            Error::ConfigSyntax {
                origin: origin.to_string(),
                message: e.to_string(),
            }
        })?;
        let mut tbls = BTreeMap::new();
        for (name, v) in raw.tbls.unwrap_or_default() {
            if name.trim().is_empty() {
                return Err(Error::config(
                    format!("tbls of {origin}"),
                    "a table name is empty; give every table a name",
                ));
            }
            tbls.insert(name.clone(), Tbl::from_json(&name, v)?);
        }
        Ok(ConfigDoc {
            origin: origin.to_string(),
            config: raw.config.unwrap_or_default(),
            tbls,
        })
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read, else as [`ConfigDoc::parse`].
    pub fn load(path: &Path) -> Result<ConfigDoc> {
        let shown = path.display().to_string();
        let refuse = |message: String| Error::Config {
            what: format!("config file {shown}"),
            message,
        };
        if path.is_dir() {
            return Err(refuse(
                "is a directory; give the YAML file itself (-c dir/config.yaml)".into(),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| {
            refuse(match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "does not exist; check the path given to -c/--config-file or \
                     ACHVY_CONFIG_FILE (relative paths start at the working directory)"
                        .into()
                }
                std::io::ErrorKind::PermissionDenied => {
                    "cannot be read: permission denied; make it readable by this user".into()
                }
                _ => format!("cannot be read: {e}"),
            })
        })?;
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
        let utf16 = bytes.starts_with(b"\xFF\xFE")
            || bytes.starts_with(b"\xFE\xFF")
            || bytes.iter().take(64).any(|b| *b == 0);
        let text = match std::str::from_utf8(bytes) {
            Ok(_) if utf16 => None,
            Ok(t) => Some(t),
            Err(_) => None,
        };
        let Some(text) = text else {
            return Err(refuse(if utf16 {
                "is UTF-16 text; save it as UTF-8 (in PowerShell: Set-Content -Encoding utf8, \
                 or iconv -f UTF-16 -t UTF-8)"
                    .into()
            } else {
                "is not UTF-8 text; save it as UTF-8".into()
            }));
        };
        ConfigDoc::parse(text, &shown)
    }

    /// The `config:` map as a settings layer.
    ///
    /// # Errors
    /// [`Error::UnknownKey`] for an unknown key.
    pub fn layer(&self) -> Result<Layer> {
        Layer::from_map(&self.config, &self.origin)
    }

    /// The configured tables.
    pub fn tbl_set(&self) -> TblSet {
        TblSet::new(self.tbls.values().cloned())
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "nothing",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("HOME", "/home/me"), ("USER", "me")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn precedence_cli_env_file_default() {
        let doc = ConfigDoc::parse(
            "config:\n  id: from_file\n  user: fileuser\n  execution_timeout: 60\n  batch_policy: raise\n  enabled: [a, b]\n",
            "config.yaml",
        )
        .unwrap();
        let file = doc.layer().unwrap();
        let env = Layer::from_env([
            ("ACHVY_ID", "from_env"),
            ("ACHVY_EXECUTION_TIMEOUT", "2m"),
            ("ACHVY_UPSTREAM", "x, y"),
        ]);
        let mut cli = Layer::new("command line");
        cli.set("id", "from_cli");
        let s = Settings::resolve(&[&cli, &env, &file], &vars()).unwrap();
        assert_eq!(s.id, "from_cli");
        assert_eq!(s.user, "fileuser");
        assert_eq!(s.execution_timeout, Some(Duration::from_secs(120)));
        assert_eq!(s.batch_policy, BatchPolicy::Raise);
        assert_eq!(s.enabled, vec!["a", "b"]);
        assert_eq!(s.upstream, vec!["x", "y"]);
        assert_eq!(s.datastore, "/home/me/.anchovies");
        assert_eq!(s.origins["id"], "command line");
        assert_eq!(s.origins["execution_timeout"], "environment");
        let s = Settings::resolve(&[&env, &file], &vars()).unwrap();
        assert_eq!(s.id, "from_env");
        let s = Settings::resolve(&[&file], &vars()).unwrap();
        assert_eq!(s.id, "from_file");
        let s = Settings::resolve(&[], &vars()).unwrap();
        assert_eq!(s.user, "me");
        assert_eq!(s.batch_policy, BatchPolicy::Continue);
        assert!(!s.service);
    }

    #[test]
    fn prod_wins_over_user_in_its_layer() {
        let env = Layer::from_env([("ACHVY_USER", "bob"), ("ACHVY_PROD", "true")]);
        assert_eq!(Settings::resolve(&[&env], &vars()).unwrap().user, "prod");
        let mut cli = Layer::new("command line");
        cli.set("user", "alice");
        assert_eq!(
            Settings::resolve(&[&cli, &env], &vars()).unwrap().user,
            "alice"
        );
    }

    #[test]
    fn unknown_config_key_suggests_the_closest() {
        let doc = ConfigDoc::parse("config:\n  executon_timeout: 5\n", "./config.yaml").unwrap();
        let e = doc.layer().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown key `executon_timeout` in the config: map of ./config.yaml; did you mean `execution_timeout`?"
        );
        let e = ConfigDoc::parse("tbl:\n  a: {}\n", "c.yaml").unwrap_err();
        assert!(e.to_string().contains("did you mean `tbls`?"), "{e}");
    }

    #[test]
    fn the_readme_typo_is_accepted() {
        let doc =
            ConfigDoc::parse(r#"{"config": {"checpoint_cls": "datastore"}}"#, "--config").unwrap();
        let s = Settings::resolve(&[&doc.layer().unwrap()], &vars()).unwrap();
        assert_eq!(s.checkpoint_cls, "datastore");
        let doc =
            ConfigDoc::parse(r#"{"config": {"checkpoint_cls": "redis"}}"#, "--config").unwrap();
        let e = Settings::resolve(&[&doc.layer().unwrap()], &vars()).unwrap_err();
        assert!(e.to_string().contains("built-in: datastore"), "{e}");
    }

    #[test]
    fn bad_values_name_key_and_origin() {
        let env = Layer::from_env([("ACHVY_EXECUTION_TIMEOUT", "soon")]);
        let e = Settings::resolve(&[&env], &vars()).unwrap_err();
        assert!(
            e.to_string()
                .contains("`soon` from environment is not a duration"),
            "{e}"
        );
        let env = Layer::from_env([("ACHVY_ID", "../etc")]);
        assert!(Settings::resolve(&[&env], &vars()).is_err());
        let env = Layer::from_env([("ACHVY_MAX_CONCURRENCY", "many")]);
        assert!(
            Settings::resolve(&[&env], &vars())
                .unwrap_err()
                .to_string()
                .contains("not a whole number")
        );
    }

    #[test]
    fn yaml_merge_keys_and_syntax_errors() {
        let doc = ConfigDoc::parse(
            "defaults: &d\n  delimiter: ';'\ntbls:\n  a:\n    <<: *d\n    path: /x/*.csv\n",
            "c.yaml",
        );
        // `defaults` is not a top-level key: anchors must live inside known maps.
        assert!(doc.is_err());
        let doc = ConfigDoc::parse(
            "tbls:\n  a: &d\n    delimiter: ';'\n    path: /x/*.csv\n  b:\n    <<: *d\n    path: /y/*.csv\n",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(doc.tbls["b"].option_str("delimiter").unwrap(), ";");
        assert_eq!(doc.tbls["b"].option_str("path").unwrap(), "/y/*.csv");
        let e = ConfigDoc::parse("tbls:\n  a: [\n", "bad.yaml").unwrap_err();
        assert!(e.to_string().starts_with("cannot parse bad.yaml"), "{e}");
    }

    /// The parser limits leave room for big real configs: 2,000 tables sharing one
    /// anchored entry of options by merge key.
    #[test]
    fn a_big_config_with_anchors_fits_the_parser_limits() {
        let mut y = String::from(
            "tbls:\n  t0: &base\n    path: /in/0/*.csv\n    delimiter: ';'\n    unique_by: id\n    sort_by: -updated_at\n    columns: {id: int, qty: int, price: decimal, updated_at: datetime}\n",
        );
        for i in 1..2000 {
            y.push_str(&format!(
                "  t{i}:\n    <<: *base\n    path: /in/{i}/*.csv\n"
            ));
        }
        let doc = ConfigDoc::parse(&y, "big.yaml").unwrap();
        assert_eq!(doc.tbls.len(), 2000);
        assert_eq!(doc.tbls["t1999"].option_str("delimiter").unwrap(), ";");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("-1"), None);
        assert_eq!(parse_duration("x"), None);
        for hostile in [
            "1e30",
            "99999999999999999999",
            "NaN",
            "inf",
            "",
            "1e30s",
            "-0.5",
            "5 s s",
        ] {
            assert_eq!(parse_duration(hostile), None, "{hostile}");
        }
        assert_eq!(human_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(human_duration(MAX_DURATION), "366d");
    }
}
