//! Every `ACHVY_*` environment variable anchovies reads, in one place.
//!
//! The README's "Global configurations" table is generated from the same names; a test
//! checks that each constant here is mentioned in the README.

/// The anchovy identifier (`--id`).
pub const ID: &str = "ACHVY_ID";
/// The anchovy user (`--user`); `prod` for production.
pub const USER: &str = "ACHVY_USER";
/// `true` forces the user to `prod` (`--prod`).
pub const PROD: &str = "ACHVY_PROD";
/// The operator to run (`-op`).
pub const OPERATOR_CLS: &str = "ACHVY_OPERATOR_CLS";
/// `false` selects service mode (`-S`); task mode is the default.
pub const IS_TASK_EXECUTOR: &str = "ACHVY_IS_TASK_EXECUTOR";
/// The timeout of one batch (`-t`): seconds, or a number with `s`, `m` or `h`.
pub const EXECUTION_TIMEOUT: &str = "ACHVY_EXECUTION_TIMEOUT";
/// Upstream anchovy ids, comma separated (`-U`).
pub const UPSTREAM: &str = "ACHVY_UPSTREAM";
/// Enabled tables, comma separated (`-e`).
pub const ENABLED: &str = "ACHVY_ENABLED";
/// Disabled tables, comma separated (`-d`); wins over enabled.
pub const DISABLED: &str = "ACHVY_DISABLED";
/// The datastore location (`--datastore`): a path or `file://` URL.
pub const DATASTORE: &str = "ACHVY_DATASTORE";
/// The checkpoint store implementation (`--checkpoint-cls`).
pub const CHECKPOINT_CLS: &str = "ACHVY_CHECKPOINT_CLS";
/// The task log store implementation (`--task-store-cls`).
pub const TASK_STORE_CLS: &str = "ACHVY_TASK_STORE_CLS";
/// The table metadata store implementation (`--tbl-store-cls`).
pub const TBL_STORE_CLS: &str = "ACHVY_TBL_STORE_CLS";
/// The data file format (`--data-buffer-cls`).
pub const DATA_BUFFER_CLS: &str = "ACHVY_DATA_BUFFER_CLS";
/// The default datastore root when `ACHVY_DATASTORE` is not set (default `~/.anchovies`).
pub const HOME: &str = "ACHVY_HOME";
/// Log level: `error`, `warn`, `info` (default), `debug`, `trace`, or a tracing filter.
pub const LOG_LEVEL: &str = "ACHVY_LOG_LEVEL";
/// Log format: `text` (default) or `json`.
pub const LOG_FORMAT: &str = "ACHVY_LOG_FORMAT";
/// What a failing table does to its batch: `CONTINUE` (default) or `RAISE`.
pub const BATCH_POLICY: &str = "ACHVY_BATCH_POLICY";
/// `true` turns "matched nothing" warnings (`-e`/`-d` patterns, `-U` upstreams without
/// tables, configured tables not discovered) into exit 2 (`--strict`).
pub const STRICT: &str = "ACHVY_STRICT";
/// How many tables run at the same time (default 4).
pub const MAX_CONCURRENCY: &str = "ACHVY_MAX_CONCURRENCY";
/// Rows per in-flight batch between source and sinks (default 4096).
pub const BATCH_SIZE: &str = "ACHVY_BATCH_SIZE";
/// Uncompressed bytes after which a data file is rotated (default 128 MiB).
pub const FILE_MAX_BYTES: &str = "ACHVY_FILE_MAX_BYTES";
/// Seconds between commits while a table streams (default 5); the task end always commits.
pub const COMMIT_INTERVAL: &str = "ACHVY_COMMIT_INTERVAL";
/// Service mode: port of the health and metrics endpoint (`port`).
pub const PORT: &str = "ACHVY_PORT";
/// Service mode: address the endpoint binds to (`bind`).
pub const BIND: &str = "ACHVY_BIND";
/// Task mode: write the run's metrics to this Prometheus textfile (`metrics_file`).
pub const METRICS_FILE: &str = "ACHVY_METRICS_FILE";
/// Service mode: reuse discovered tables for this long (`discovery_ttl`).
pub const DISCOVERY_TTL: &str = "ACHVY_DISCOVERY_TTL";
/// Service mode: pause between batches (`service_pause`).
pub const SERVICE_PAUSE: &str = "ACHVY_SERVICE_PAUSE";
/// Service mode: how long a stop signal lets the current batch finish (`stop_grace`).
pub const STOP_GRACE: &str = "ACHVY_STOP_GRACE";
/// Budget: stop taking new work after this long (`max_duration`).
pub const MAX_DURATION: &str = "ACHVY_MAX_DURATION";
/// Budget: stop taking new work after this many rows (`max_rows`).
pub const MAX_ROWS: &str = "ACHVY_MAX_ROWS";
/// Budget: stop taking new work after this many bytes (`max_bytes`).
pub const MAX_BYTES: &str = "ACHVY_MAX_BYTES";
/// How long a run lease lives without renewal (`lease_ttl`).
pub const LEASE_TTL: &str = "ACHVY_LEASE_TTL";
/// The config file path when `--config-file` is not given (default `./config.yaml`).
pub const CONFIG_FILE: &str = "ACHVY_CONFIG_FILE";
/// The prefix of connection variables: `ACHVY_CNXN__<ID>__<ATTR>` or `ACHVY_CNXN__<ATTR>`.
pub const CNXN_PREFIX: &str = "ACHVY_CNXN__";
/// A misspelt connection prefix seen in the original README; accepted with a warning.
pub const CNXN_PREFIX_TYPO: &str = "ANCHY_CNXN__";

/// Every variable above except the connection prefixes, for docs and checks.
pub const ALL: &[&str] = &[
    ID,
    USER,
    PROD,
    OPERATOR_CLS,
    IS_TASK_EXECUTOR,
    EXECUTION_TIMEOUT,
    UPSTREAM,
    ENABLED,
    DISABLED,
    DATASTORE,
    CHECKPOINT_CLS,
    TASK_STORE_CLS,
    TBL_STORE_CLS,
    DATA_BUFFER_CLS,
    HOME,
    LOG_LEVEL,
    LOG_FORMAT,
    BATCH_POLICY,
    STRICT,
    MAX_CONCURRENCY,
    BATCH_SIZE,
    FILE_MAX_BYTES,
    COMMIT_INTERVAL,
    LEASE_TTL,
    PORT,
    BIND,
    METRICS_FILE,
    SERVICE_PAUSE,
    STOP_GRACE,
    DISCOVERY_TTL,
    MAX_DURATION,
    MAX_ROWS,
    MAX_BYTES,
    CONFIG_FILE,
];

/// Variables the core reads beyond the settings (tests and crash drills).
const OTHER: &[&str] = &[crate::failpoint::VAR];

/// Warnings for `ACHVY_*` variables that are no setting (a typo such as
/// `ACHVY_BATCHSIZE`), each naming the closest known variable.
pub fn unknown<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    vars.into_iter()
        .map(|(k, _)| k)
        .filter(|k| {
            k.starts_with("ACHVY_")
                && !k.starts_with(CNXN_PREFIX)
                && !ALL.contains(k)
                && !OTHER.contains(k)
        })
        .map(|k| {
            let lower: Vec<String> = ALL.iter().map(|a| a.to_ascii_lowercase()).collect();
            let hint = crate::config::closest(k, lower.iter().map(String::as_str))
                .map(|m| format!("; did you mean {}?", m.to_ascii_uppercase()))
                .unwrap_or_default();
            format!("{k} is set but is no anchovies setting, so it is ignored{hint}")
        })
        .collect()
}
