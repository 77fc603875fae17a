//! Every setting's key, environment variable, command-line flag and help text.

use super::*;

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
pub(super) const ALIASES: &[(&str, &str)] = &[
    ("checpoint_cls", "checkpoint_cls"),
    ("operator", "operator_cls"),
    ("timeout", "execution_timeout"),
];

/// The built-in implementation names for the `*_cls` settings.
pub const STORE_CLS: &[&str] = &["datastore"];
