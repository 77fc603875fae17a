//! Command-line arguments. `-op` (two letters after one dash, as the README writes it)
//! is rewritten to `--operator` before clap sees it.

use std::path::PathBuf;

use anchovy_core::Layer;
use clap::{Args, Parser, Subcommand};

/// anchovy: a lightweight extract-load tool. One anchovy downloads data as-is into the
/// datastore, or uploads what downloaders committed into a database.
#[derive(Debug, Parser)]
#[command(name = "anchovy", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Exit codes, shown under `--help` and documented in the README.
pub const EXIT_CODES: &str = "Exit codes:
  0  the run finished and every task is OK
  1  the run finished with a failed task (or a healthcheck failed)
  2  bad usage or configuration (flags, config.yaml, env vars, unknown operator, missing connection)
  3  a batch hit the execution timeout (-t / ACHVY_EXECUTION_TIMEOUT)
  4  the datastore could not be read or written
  5  another run of this anchovy holds the run lease (or this run lost it)
  6  a budget (--max-duration/--max-rows/--max-bytes) stopped the run with work pending
  130 interrupted (SIGINT/SIGTERM; in service mode a second signal)";

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an operator: once (task mode) or in a loop (-S, service mode).
    #[command(visible_alias = "run", after_help = EXIT_CODES)]
    Start(StartArgs),
    /// Check configuration, connections and datastore read/write; exit 0 when healthy.
    Healthcheck(HealthcheckArgs),
    /// List (or delete with -D) an anchovy's checkpoints.
    Checkpoints(CheckpointsArgs),
    /// List every operator: what it does, the variables it reads, its table options.
    Plugins(PluginsArgs),
    /// List an anchovy's task logs (filter by table, status, task type, time).
    Logs(LogsArgs),
    /// List an anchovy's tables with their settings and last load.
    Tables(TablesArgs),
    /// Run a set of anchovies (a school) as a DAG ordered by their -U upstreams.
    School(SchoolArgs),
    /// List a downloader's quarantined records (on_bad_record: quarantine), or replay
    /// them after the source or the table's options are fixed.
    Rejects(Box<RejectsArgs>),
}

/// Arguments of `anchovy rejects`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RejectsArgs {
    /// `replay`: read the records again.
    #[command(subcommand)]
    pub action: Option<RejectsAction>,
    /// Only rejects of tables matching this wildcard.
    #[arg(value_name = "TABLE")]
    pub table: Option<String>,
    /// Also list records already replayed.
    #[arg(long)]
    pub all: bool,
    /// One JSON object per record instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Settings shared by every verb.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `anchovy rejects` verbs.
#[derive(Debug, clap::Subcommand)]
pub enum RejectsAction {
    /// Read every quarantined record not yet replayed again, with the table's current
    /// options (a fixed `columns:` type, `delimiter:` or `quote:`): the records that
    /// read now land in the table, those still bad are quarantined again, each record
    /// exactly once. Runs like `start` (lease, commit, results; -op is the downloader).
    Replay(ReplayArgs),
}

/// Arguments of `anchovy rejects replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Only tables matching this wildcard (default: every table).
    #[arg(value_name = "TABLE")]
    pub table: Option<String>,
    /// Print the run results as one JSON line.
    #[arg(long)]
    pub compact: bool,
    /// Settings shared by every verb.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Arguments of `anchovy school`.
#[derive(Debug, Args)]
pub struct SchoolArgs {
    /// What to do with the school.
    #[command(subcommand)]
    pub command: SchoolCommand,
}

/// `anchovy school` verbs.
#[derive(Debug, clap::Subcommand)]
pub enum SchoolCommand {
    /// Run every member once, upstreams first, independent ones side by side.
    Run(SchoolRunArgs),
}

/// Arguments of `anchovy school run`.
#[derive(Debug, Args)]
pub struct SchoolRunArgs {
    /// The school file (YAML): `anchovies:` (command lines), `parallel:`, `policy:`, `env:`.
    #[arg(short = 'f', long = "file", value_name = "SCHOOL_YAML")]
    pub file: std::path::PathBuf,
    /// Members at the same time (overrides `parallel:`; default 4).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// RAISE (start nothing new after a failure) or CONTINUE (default; skip only the
    /// failed members' dependents).
    #[arg(long)]
    pub policy: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `anchovy logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only tasks of tables matching this wildcard.
    #[arg(long, short = 'T')]
    pub table: Option<String>,
    /// Only OK or ERR tasks.
    #[arg(long)]
    pub status: Option<String>,
    /// Only this task type: STARTUP, XOPEN, TBL, XCLOSE, ERROR, SHUTDOWN.
    #[arg(long = "type", value_name = "TASK_TYPE")]
    pub task_type: Option<String>,
    /// Only tasks since a duration ago (1h, 2d) or a UTC time (2026-11-23T10:00).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
    /// One JSON task log per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Settings shared by every verb.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Arguments of `anchovy tables`.
#[derive(Debug, Args)]
pub struct TablesArgs {
    /// One JSON object per table instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Settings shared by every verb.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Arguments of `anchovy plugins`.
#[derive(Debug, Args)]
pub struct PluginsArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `anchovy start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Settings shared by every verb.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print the run results as one JSON line instead of pretty JSON.
    #[arg(long)]
    pub compact: bool,
    /// No progress bars (they are drawn only when stderr is a terminal and logs are text).
    #[arg(long)]
    pub no_progress: bool,
}

/// Arguments of `anchovy healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Fail when a table's last successful load is older than this (`30m`, `2h`);
    /// `tbls.<name>.max_lag` sets it per table. For Kubernetes probes and cron alerts.
    #[arg(long, value_name = "DURATION")]
    pub max_lag: Option<String>,
    /// Settings shared by every verb.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Arguments of `anchovy checkpoints`.
#[derive(Debug, Args)]
pub struct CheckpointsArgs {
    /// Only checkpoints whose key matches this wildcard (`*` for all).
    #[arg(default_value = "*")]
    pub glob: String,
    /// Delete the matching checkpoints (asks first): the next run starts over for them.
    /// A downloader reads those sources again; an uploader deletes the table's rows in
    /// the target and loads it again from the first upstream commit.
    #[arg(short = 'D', long)]
    pub delete: bool,
    /// Set a checkpoint: `KEY=VALUE`, VALUE as JSON (or text); repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Put back the values the last change (-D, --set, --undo) replaced.
    #[arg(long, conflicts_with_all = ["delete", "set"])]
    pub undo: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Settings shared by every verb.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Global settings: each also comes from an `ACHVY_*` variable or the `config:` map of
/// config.yaml (precedence: command line > environment > config file > default).
#[derive(Debug, Args, Default)]
pub struct ConfigArgs {
    /// The anchovy id [env: ACHVY_ID] (default: the host name).
    #[arg(short = 'i', long)]
    pub id: Option<String>,
    /// The anchovy user [env: ACHVY_USER] (default: $USER).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Run as the `prod` user [env: ACHVY_PROD].
    #[arg(long)]
    pub prod: bool,
    /// The config document as YAML or JSON text (replaces the config file).
    #[arg(long, value_name = "YAML|JSON")]
    pub config: Option<String>,
    /// The config file [env: ACHVY_CONFIG_FILE] (default: ./config.yaml when present).
    #[arg(short = 'c', long, value_name = "PATH")]
    pub config_file: Option<PathBuf>,
    /// The operator to run, e.g. files.CsvDownloader; `-op` works too [env: ACHVY_OPERATOR_CLS].
    #[arg(long = "operator", value_name = "NAME")]
    pub operator: Option<String>,
    /// Service mode: loop batches until stopped [env: ACHVY_IS_TASK_EXECUTOR=false].
    #[arg(short = 'S', long)]
    pub service: bool,
    /// Timeout of one batch: seconds or 90s, 15m, 2h [env: ACHVY_EXECUTION_TIMEOUT].
    #[arg(short = 't', long, value_name = "DURATION")]
    pub execution_timeout: Option<String>,
    /// An upstream anchovy id; repeatable [env: ACHVY_UPSTREAM, comma separated].
    #[arg(short = 'U', long, value_name = "ID")]
    pub upstream: Vec<String>,
    /// Only run this table (wildcards allowed); repeatable [env: ACHVY_ENABLED].
    #[arg(short = 'e', long = "enable", value_name = "TABLE")]
    pub enabled: Vec<String>,
    /// Skip this table; repeatable; wins over --enable [env: ACHVY_DISABLED].
    #[arg(short = 'd', long = "disable", value_name = "TABLE")]
    pub disabled: Vec<String>,
    /// Datastore location: a path or file:// URL [env: ACHVY_DATASTORE] (default: ACHVY_HOME).
    #[arg(long, value_name = "LOCATION")]
    pub datastore: Option<String>,
    /// Default datastore root [env: ACHVY_HOME] (default: ~/.anchovies).
    #[arg(long, value_name = "PATH")]
    pub home: Option<String>,
    /// Checkpoint store implementation [env: ACHVY_CHECKPOINT_CLS] (datastore).
    #[arg(long, value_name = "NAME")]
    pub checkpoint_cls: Option<String>,
    /// Task log store implementation [env: ACHVY_TASK_STORE_CLS] (datastore).
    #[arg(long, value_name = "NAME")]
    pub task_store_cls: Option<String>,
    /// Table metadata store implementation [env: ACHVY_TBL_STORE_CLS] (datastore).
    #[arg(long, value_name = "NAME")]
    pub tbl_store_cls: Option<String>,
    /// Data file format [env: ACHVY_DATA_BUFFER_CLS] (ndjson.gz).
    #[arg(long, value_name = "NAME")]
    pub data_buffer_cls: Option<String>,
    /// error, warn, info, debug, trace or a tracing filter [env: ACHVY_LOG_LEVEL].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// text or json log lines on stderr [env: ACHVY_LOG_FORMAT].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// CONTINUE or RAISE when a table fails [env: ACHVY_BATCH_POLICY].
    #[arg(long, value_name = "POLICY")]
    pub batch_policy: Option<String>,
    /// Exit 2 when -e/-d match no table or an upstream (-U) has no tables, instead of
    /// a warning; for cron jobs [env: ACHVY_STRICT].
    #[arg(long)]
    pub strict: bool,
    /// Tables run at the same time [env: ACHVY_MAX_CONCURRENCY] (4).
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<String>,
    /// Rows per in-flight batch [env: ACHVY_BATCH_SIZE] (4096).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<String>,
    /// Uncompressed bytes before a data file rotates [env: ACHVY_FILE_MAX_BYTES].
    #[arg(long, value_name = "BYTES")]
    pub file_max_bytes: Option<String>,
    /// Time between commits while a table streams [env: ACHVY_COMMIT_INTERVAL] (5s).
    #[arg(long, value_name = "DURATION")]
    pub commit_interval: Option<String>,
    /// How long a killed run's lease blocks the next start on an object store
    /// [env: ACHVY_LEASE_TTL] (60s).
    #[arg(long, value_name = "DURATION")]
    pub lease_ttl: Option<String>,
    /// Service mode: port of /healthz, /readyz, /metrics [env: ACHVY_PORT] (8080; 0 = off).
    #[arg(long, value_name = "PORT")]
    pub port: Option<String>,
    /// Service mode: address the endpoint listens on [env: ACHVY_BIND] (127.0.0.1).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Write the run's metrics to this Prometheus textfile [env: ACHVY_METRICS_FILE].
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<String>,
    /// Service mode: pause between batches [env: ACHVY_SERVICE_PAUSE] (10s).
    #[arg(long, value_name = "DURATION")]
    pub service_pause: Option<String>,
    /// Service mode: how long a stop signal lets the current batch finish
    /// [env: ACHVY_STOP_GRACE] (30s).
    #[arg(long, value_name = "DURATION")]
    pub stop_grace: Option<String>,
    /// Service mode: reuse discovered tables for this long [env: ACHVY_DISCOVERY_TTL] (0s).
    #[arg(long, value_name = "DURATION")]
    pub discovery_ttl: Option<String>,
    /// Budget: take no new work after this long; exit 6 = more work pending
    /// [env: ACHVY_MAX_DURATION].
    #[arg(long, value_name = "DURATION")]
    pub max_duration: Option<String>,
    /// Budget: take no new work after this many rows [env: ACHVY_MAX_ROWS].
    #[arg(long, value_name = "N")]
    pub max_rows: Option<String>,
    /// Budget: take no new work after this many bytes [env: ACHVY_MAX_BYTES].
    #[arg(long, value_name = "BYTES")]
    pub max_bytes: Option<String>,
}

impl ConfigArgs {
    /// The command-line settings layer.
    pub fn layer(&self) -> Layer {
        let mut l = Layer::new("command line");
        l.set_opt("id", self.id.clone())
            .set_opt("user", self.user.clone())
            .set_opt("prod", self.prod.then_some(true))
            .set_opt("operator_cls", self.operator.clone())
            .set_opt("is_task_executor", self.service.then_some(false))
            .set_opt("execution_timeout", self.execution_timeout.clone())
            .set_opt("upstream", Some(self.upstream.clone()))
            .set_opt("enabled", Some(self.enabled.clone()))
            .set_opt("disabled", Some(self.disabled.clone()))
            .set_opt("datastore", self.datastore.clone())
            .set_opt("home", self.home.clone())
            .set_opt("checkpoint_cls", self.checkpoint_cls.clone())
            .set_opt("task_store_cls", self.task_store_cls.clone())
            .set_opt("tbl_store_cls", self.tbl_store_cls.clone())
            .set_opt("data_buffer_cls", self.data_buffer_cls.clone())
            .set_opt("log_level", self.log_level.clone())
            .set_opt("log_format", self.log_format.clone())
            .set_opt("batch_policy", self.batch_policy.clone())
            .set_opt("strict", self.strict.then_some(true))
            .set_opt("max_concurrency", self.max_concurrency.clone())
            .set_opt("batch_size", self.batch_size.clone())
            .set_opt("file_max_bytes", self.file_max_bytes.clone())
            .set_opt("commit_interval", self.commit_interval.clone())
            .set_opt("lease_ttl", self.lease_ttl.clone())
            .set_opt("port", self.port.clone())
            .set_opt("bind", self.bind.clone())
            .set_opt("metrics_file", self.metrics_file.clone())
            .set_opt("service_pause", self.service_pause.clone())
            .set_opt("stop_grace", self.stop_grace.clone())
            .set_opt("discovery_ttl", self.discovery_ttl.clone())
            .set_opt("max_duration", self.max_duration.clone())
            .set_opt("max_rows", self.max_rows.clone())
            .set_opt("max_bytes", self.max_bytes.clone());
        l
    }
}

/// Rewrites the README's `-op NAME` / `-op=NAME` to `--operator`.
pub fn rewrite_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.into_iter()
        .map(|a| match a.to_str() {
            Some("-op") => "--operator".into(),
            Some(s) if s.starts_with("-op=") => format!("--operator={}", &s[4..]).into(),
            _ => a,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_command_line_parses() {
        let args = rewrite_args(
            [
                "anchovy",
                "start",
                "-op",
                "sftp.CsvDownloader",
                "--id",
                "sales_sftp",
                "-U",
                "a",
                "-U",
                "b",
                "-e",
                "x",
                "-d",
                "y",
                "-S",
                "-t",
                "90",
            ]
            .map(Into::into),
        );
        let cli = Cli::try_parse_from(args).unwrap();
        let Command::Start(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.config.operator.as_deref(), Some("sftp.CsvDownloader"));
        assert_eq!(s.config.id.as_deref(), Some("sales_sftp"));
        assert_eq!(s.config.upstream, vec!["a", "b"]);
        assert!(s.config.service);
        let cli = Cli::try_parse_from(rewrite_args(
            ["anchovy", "run", "-op=files.CsvDownloader"].map(Into::into),
        ))
        .unwrap();
        let Command::Start(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.config.operator.as_deref(), Some("files.CsvDownloader"));
    }

    #[test]
    fn every_settings_key_has_a_flag() {
        let a = ConfigArgs {
            id: Some("x".into()),
            ..Default::default()
        };
        let l = a.layer();
        assert_eq!(l.origin, "command line");
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
