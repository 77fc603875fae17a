//! Every setting, declared once: its key (and field), type, range, default, environment
//! variable, command-line flag and help. Parsing, precedence, `--help`, the README table
//! and `anchovy plugins` all read these declarations ([`setting`](super::setting)).
//!
//! To add a setting: one entry here (its doc comment is its help), then a row appears in
//! `--help`, `ACHVY_<KEY>` and the `config:` key work, and the README test asks for the
//! new table row.

use super::setting::{Flag, Kind, Setting, Unset, Vars, settings};
use super::*;

settings! {
    /// the anchovy id; **set it** (the datastore area is `<user>/<id>`)
    id: String {
        env: "ACHVY_ID",
        flag: Flag::Value("-i/--id", "ID"),
        unset: Unset::Computed("the host name; required under Kubernetes, ECS and AWS Batch", |r| {
            // A pod's or task's host name changes with every run: each run would find
            // an empty area and read everything again.
            if let Some(engine) = super::scheduler(r.vars()) {
                return Err(Error::config(
                    "--id",
                    format!("not set, and this runs under {engine}, where the default (the host name) changes with every pod or task, so each run would start from an empty datastore area and read everything again; set --id or ACHVY_ID (the recipes in examples/deploy/ do)"),
                ));
            }
            Ok(gethostname::gethostname().to_string_lossy().into_owned())
        }),
        check: Some(name),
    }
    /// the anchovy user; `prod` in production
    user: String {
        env: "ACHVY_USER",
        flag: Flag::Value("-u/--user", "USER"),
        unset: Unset::Computed("`$USER`, or `default` when it is unset (as in most containers)", |r| {
            Ok(r.vars()
                .get("USER")
                .or_else(|| r.vars().get("USERNAME"))
                .cloned()
                .unwrap_or_else(|| "default".into()))
        }),
        check: Some(name),
    }
    /// shorthand for `--user prod` (wins over `user` in the same place)
    prod: bool {
        env: "ACHVY_PROD",
        flag: Flag::Switch("--prod", true),
        kind: Kind::Bool,
        implies: Some(("user", "prod")),
    }
    /// the operator, e.g. `sftp.CsvDownloader` (`anchovy plugins` lists them)
    operator_cls: Option<String> {
        env: "ACHVY_OPERATOR_CLS",
        flag: Flag::Value("-op/--operator/--operator-cls", "NAME"),
        aliases: &["operator"],
    }
    /// service mode: loop batches until stopped (`-S`, or `false` here); `true` runs
    /// once
    is_task_executor: bool {
        env: "ACHVY_IS_TASK_EXECUTOR",
        flag: Flag::Switch("-S/--service", false),
        kind: Kind::Bool,
        unset: Unset::Value("true"),
    }
    /// timeout of one batch: `300`, `90s`, `15m`, `2h`
    execution_timeout: Option<Duration> {
        env: "ACHVY_EXECUTION_TIMEOUT",
        flag: Flag::Value("-t/--execution-timeout", "DURATION"),
        kind: Kind::Duration(Duration::from_millis(100), MAX_DURATION),
        aliases: &["timeout"],
    }
    /// upstream anchovy ids (for uploaders)
    upstream: Vec<String> {
        env: "ACHVY_UPSTREAM",
        flag: Flag::Repeat("-U/--upstream/-up", "ID"),
        kind: Kind::List,
    }
    /// only these tables (wildcards)
    enabled: Vec<String> {
        env: "ACHVY_ENABLED",
        flag: Flag::Repeat("-e/--enable/--enabled", "TABLE"),
        kind: Kind::List,
    }
    /// skip these tables; wins over `enabled`
    disabled: Vec<String> {
        env: "ACHVY_DISABLED",
        flag: Flag::Repeat("-d/--disable/--disabled", "TABLE"),
        kind: Kind::List,
    }
    /// datastore: a path, or a `file://`, `s3://`, `az://` or `gs://` URL
    datastore: String {
        env: "ACHVY_DATASTORE",
        flag: Flag::Value("--datastore", "LOCATION"),
        unset: Unset::Computed("`home`", |r| r.get::<String>("home")),
        check: Some(not_empty),
    }
    /// default datastore root, when `datastore` is not set
    home: String {
        env: "ACHVY_HOME",
        flag: Flag::Value("--home", "PATH"),
        unset: Unset::Value("~/.anchovies"),
        check: Some(home),
    }
    /// checkpoint store: `datastore` (checkpoints travel in the commit record, with the data)
    checkpoint_cls: String {
        env: "ACHVY_CHECKPOINT_CLS",
        flag: Flag::Value("--checkpoint-cls", "NAME"),
        unset: Unset::Value("datastore"),
        aliases: &["checpoint_cls"],
        check: Some(checkpoint_cls),
    }
    /// where task logs go: `datastore`, or a datastore URL of their own
    task_store_cls: String {
        env: "ACHVY_TASK_STORE_CLS",
        flag: Flag::Value("--task-store-cls", "NAME|URL"),
        unset: Unset::Value("datastore"),
        check: Some(store_cls),
    }
    /// where table metadata goes: `datastore`, or a datastore URL of its own
    tbl_store_cls: String {
        env: "ACHVY_TBL_STORE_CLS",
        flag: Flag::Value("--tbl-store-cls", "NAME|URL"),
        unset: Unset::Value("datastore"),
        check: Some(store_cls),
    }
    /// data file format (see "Data files"); `original` writes files the original
    /// tool's uploader reads; the original's `core.io.StatisticsBuffer` and its other
    /// buffer classes mean `ndjson.gz`
    data_buffer_cls: crate::data::DataFormat {
        env: "ACHVY_DATA_BUFFER_CLS",
        flag: Flag::Value("--data-buffer-cls", "FORMAT"),
        kind: Kind::Choice(crate::data::DataFormat::NAMES),
        unset: Unset::Value("ndjson.gz"),
    }
    /// `error` .. `trace`, or a tracing filter (`info,anchovy_plugins=debug`)
    log_level: String {
        env: "ACHVY_LOG_LEVEL",
        flag: Flag::Value("--log-level", "LEVEL"),
        unset: Unset::Value("info"),
        check: Some(log_level),
    }
    /// log lines on stderr: `text` or `json`
    log_format: LogFormat {
        env: "ACHVY_LOG_FORMAT",
        flag: Flag::Value("--log-format", "FORMAT"),
        kind: Kind::Choice(&["text", "json"]),
        unset: Unset::Value("text"),
    }
    /// what a failed table does to its batch: `CONTINUE` (the others finish) or `RAISE`
    batch_policy: BatchPolicy {
        env: "ACHVY_BATCH_POLICY",
        flag: Flag::Value("--batch-policy", "POLICY"),
        kind: Kind::Choice(&["CONTINUE", "RAISE"]),
        unset: Unset::Value("CONTINUE"),
    }
    /// `true`: an `-e`/`-d` pattern that matches no table, an upstream (`-U`) without
    /// tables, a configured table the operator did not discover, or an unknown `ACHVY_*`
    /// variable exits 2 instead of warning (for cron jobs, where nobody reads warnings)
    strict: bool {
        env: "ACHVY_STRICT",
        flag: Flag::Switch("--strict", true),
        kind: Kind::Bool,
    }
    /// tables at the same time
    max_concurrency: usize {
        env: "ACHVY_MAX_CONCURRENCY",
        flag: Flag::Value("--max-concurrency", "N"),
        kind: Kind::Count(1, 1024),
        unset: Unset::Value("4"),
    }
    /// rows per in-flight batch
    batch_size: usize {
        env: "ACHVY_BATCH_SIZE",
        flag: Flag::Value("--batch-size", "N"),
        kind: Kind::Count(1, 1_000_000),
        unset: Unset::Value("1024"),
    }
    /// uncompressed bytes before a data file rotates
    file_max_bytes: u64 {
        env: "ACHVY_FILE_MAX_BYTES",
        flag: Flag::Value("--file-max-bytes", "BYTES"),
        kind: Kind::Count(1 << 10, 1 << 40),
        unset: Unset::Value("134217728"),
    }
    /// uploaders whose upstream the original tool wrote (no commit records): how old a
    /// data file must be, by its name and its modification time, before it is loaded;
    /// longer than the original downloader's longest batch (see "Mixing with the
    /// original")
    original_settle: Duration {
        env: "ACHVY_ORIGINAL_SETTLE",
        flag: Flag::Value("--original-settle", "DURATION"),
        kind: Kind::Duration(Duration::ZERO, MAX_DURATION),
        unset: Unset::Value("10m"),
    }
    /// sql.Uploader: load into the database's default schema (PostgreSQL's search
    /// path, MySQL's URL database, SQLite's plain names), tables named as upstream,
    /// as the original tool's `ACHVY_SQL_NO_SCHEMA_NAME` does
    sql_no_schema_name: bool {
        env: "ACHVY_SQL_NO_SCHEMA_NAME",
        flag: Flag::Switch("--sql-no-schema-name", true),
        kind: Kind::Bool,
        unset: Unset::Value("false"),
    }
    /// least time between commits while a table streams (the task end always commits)
    commit_interval: Duration {
        env: "ACHVY_COMMIT_INTERVAL",
        flag: Flag::Value("--commit-interval", "DURATION"),
        kind: Kind::Duration(Duration::ZERO, MAX_DURATION),
        unset: Unset::Value("5s"),
    }
    /// how long a killed run's lease blocks the next start on an object store (renewed
    /// every third of it)
    lease_ttl: Duration {
        env: "ACHVY_LEASE_TTL",
        flag: Flag::Value("--lease-ttl", "DURATION"),
        kind: Kind::Duration(Duration::from_secs(1), MAX_DURATION),
        unset: Unset::Value("60s"),
    }
    /// workers sharing this anchovy's tables: a count `N` (with `worker_num`: a static
    /// split by a hash of the table name) or `auto` (every replica claims what is
    /// unclaimed); unset: one process, under the run lease
    workers: Option<String> {
        env: "ACHVY_WORKERS",
        flag: Flag::Value("--workers", "N|auto"),
        check: Some(workers),
    }
    /// this worker's number, 0 to N - 1, with `workers: N`; or `JOB_COMPLETION_INDEX`
    /// (Kubernetes Indexed Job) or `AWS_BATCH_JOB_ARRAY_INDEX` (AWS Batch array job) to
    /// read it from that variable
    worker_num: Option<String> {
        env: "ACHVY_WORKER_NUM",
        flag: Flag::Value("--worker-num", "I|VAR"),
        check: Some(worker_num),
    }
    /// outcomes that exit 0 instead of their own code, for schedulers that restart or
    /// retry a non-zero exit (Kubernetes Jobs, AWS Batch, ECS): `locked` (5: another
    /// run or workers hold the anchovy), `pending` (6: a budget left work); the run
    /// results and the log still say what happened
    exit_zero_on: Vec<String> {
        env: "ACHVY_EXIT_ZERO_ON",
        flag: Flag::Value("--exit-zero-on", "OUTCOMES"),
        kind: Kind::List,
    }
    /// service mode: port of `/healthz`, `/readyz`, `/metrics` (0 turns it off)
    port: u16 {
        env: "ACHVY_PORT",
        flag: Flag::Value("--port", "PORT"),
        kind: Kind::Count(0, u16::MAX as u64),
        unset: Unset::Value("8080"),
    }
    /// service mode: address the endpoint listens on (`0.0.0.0` in a container)
    bind: String {
        env: "ACHVY_BIND",
        flag: Flag::Value("--bind", "ADDR"),
        unset: Unset::Value("127.0.0.1"),
        check: Some(ip_address),
    }
    /// write the run's metrics to this Prometheus textfile at the end (node_exporter's
    /// textfile collector)
    metrics_file: Option<String> {
        env: "ACHVY_METRICS_FILE",
        flag: Flag::Value("--metrics-file", "PATH"),
    }
    /// service mode: pause between batches (doubles after failed batches, up to 5 min)
    service_pause: Duration {
        env: "ACHVY_SERVICE_PAUSE",
        flag: Flag::Value("--service-pause", "DURATION"),
        kind: Kind::Duration(Duration::ZERO, MAX_DURATION),
        unset: Unset::Value("10s"),
    }
    /// service mode: how long a stop signal (SIGTERM, SIGINT) lets the current batch
    /// finish before cancelling it
    stop_grace: Duration {
        env: "ACHVY_STOP_GRACE",
        flag: Flag::Value("--stop-grace", "DURATION"),
        kind: Kind::Duration(Duration::ZERO, MAX_DURATION),
        unset: Unset::Value("30s"),
    }
    /// service mode: reuse the tables an operator discovered for this long (`0s`: every
    /// batch)
    discovery_ttl: Duration {
        env: "ACHVY_DISCOVERY_TTL",
        flag: Flag::Value("--discovery-ttl", "DURATION"),
        kind: Kind::Duration(Duration::ZERO, MAX_DURATION),
        unset: Unset::Value("0s"),
    }
    /// budget: take no new file/object/commit after this long; the run exits 6 (more
    /// work pending)
    max_duration: Option<Duration> {
        env: "ACHVY_MAX_DURATION",
        flag: Flag::Value("--max-duration", "DURATION"),
        kind: Kind::Duration(Duration::ZERO, MAX_DURATION),
    }
    /// budget: take no new file/object/commit after this many rows; exits 6
    max_rows: Option<u64> {
        env: "ACHVY_MAX_ROWS",
        flag: Flag::Value("--max-rows", "N"),
        kind: Kind::Count(0, u64::MAX),
    }
    /// budget: take no new file/object/commit after this many bytes; exits 6
    max_bytes: Option<u64> {
        env: "ACHVY_MAX_BYTES",
        flag: Flag::Value("--max-bytes", "BYTES"),
        kind: Kind::Count(0, u64::MAX),
    }
}

/// The built-in implementation names for the `*_cls` settings.
pub const STORE_CLS: &[&str] = &["datastore"];

/// Ids and users become datastore path segments: safe characters only.
fn name(s: &Setting, v: String, _: &Vars) -> Result<String> {
    check_name(s.key, &v).map(|()| v)
}

fn not_empty(s: &Setting, v: String, _: &Vars) -> Result<String> {
    if v.trim().is_empty() {
        return Err(Error::config(
            s.key,
            "is empty; give a path or a URL (s3://, az://, gs://, file://), or unset it for \
             the default ~/.anchovies",
        ));
    }
    Ok(v)
}

fn home(_: &Setting, v: String, vars: &Vars) -> Result<String> {
    Ok(expand_home(&v, vars).to_string_lossy().into_owned())
}

fn checkpoint_cls(s: &Setting, v: String, _: &Vars) -> Result<String> {
    if v.contains("://") {
        return Err(Error::config(
            s.key,
            "checkpoints cannot live apart from the data: each commit record carries the \
             checkpoints of the data files it commits, in one atomic write; use `datastore` \
             (task_store_cls and tbl_store_cls take a URL)",
        ));
    }
    one_of(s.key, values::original_store_cls(s.key, v)?, STORE_CLS)
}

fn store_cls(s: &Setting, v: String, _: &Vars) -> Result<String> {
    values::store_cls(s.key, v)
}

fn workers(s: &Setting, v: String, _: &Vars) -> Result<String> {
    crate::worker::check_workers(s.key, v)
}

fn worker_num(s: &Setting, v: String, vars: &Vars) -> Result<String> {
    crate::worker::check_worker_num(s.key, v, vars)
}

fn log_level(_: &Setting, v: String, _: &Vars) -> Result<String> {
    check_log_level(v)
}

fn ip_address(s: &Setting, v: String, _: &Vars) -> Result<String> {
    if v.parse::<std::net::IpAddr>().is_err() {
        return Err(Error::config(
            s.key,
            format!("`{v}` is not an IP address (127.0.0.1, 0.0.0.0, ::)"),
        ));
    }
    Ok(v)
}
