//! Command-line arguments. The verbs and their own flags are clap derives; the flags of
//! the settings are built from the settings' declarations ([`SETTINGS`]). `-op` (two
//! letters after one dash, as the original README writes it) is rewritten to
//! `--operator` before clap sees it.

use std::path::PathBuf;

use anchovy_core::Layer;
use anchovy_core::config::{Flag, SETTINGS, Setting};
use clap::{Arg, ArgAction, ArgMatches, Args, Parser, Subcommand};

/// anchovy: a lightweight extract-load tool. One anchovy downloads data as-is into the
/// datastore, or uploads what downloaders committed into a database.
#[derive(Debug, Parser)]
#[command(name = "anchovy", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The settings a verb that reads an anchovy (but runs no operator batch) shows in its
/// `--help`: which anchovy, where its datastore is, and how to log.
const READ_SETTINGS: &[&str] = &[
    "id",
    "user",
    "prod",
    "datastore",
    "home",
    "checkpoint_cls",
    "task_store_cls",
    "tbl_store_cls",
    "log_level",
    "log_format",
];

/// The settings' flags a verb shows in its `--help` when it takes only some of them
/// (`None`: all). A verb still accepts the others, so a command line or an `ACHVY_*`
/// environment shared with `start` works unchanged; they are only not listed.
fn own_settings(verb: &str) -> Option<Vec<&'static str>> {
    let with = |more: &[&'static str]| Some([READ_SETTINGS, more].concat());
    match verb {
        "logs" => with(&["operator_cls"]),
        "tables" => with(&[]),
        // A collection takes the run lease.
        "gc" => with(&["lease_ttl"]),
        // A change takes the run lease.
        "checkpoints" => with(&["lease_ttl"]),
        "healthcheck" => with(&[
            "operator_cls",
            "upstream",
            "enabled",
            "disabled",
            "is_task_executor",
            "port",
            "bind",
            "sql_no_schema_name",
        ]),
        "plugins" | "completions" | "man" => Some(Vec::new()),
        _ => None,
    }
}

/// The command line: the clap derive, with each verb's `--help` listing only the
/// settings it uses (the others are hidden there, still accepted).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let verbs: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    for verb in verbs {
        let Some(keep) = own_settings(&verb) else {
            continue;
        };
        cmd = cmd.mut_subcommand(&verb, |mut sc| {
            for s in SETTINGS.iter().filter(|s| !keep.contains(&s.key)) {
                if sc.get_arguments().any(|a| a.get_id() == s.key) {
                    sc = sc.mut_arg(s.key, |a| a.hide(true));
                }
            }
            sc
        });
    }
    cmd
}

impl Cli {
    /// Parses `argv` (after [`rewrite_args`]) with [`command`].
    ///
    /// # Errors
    /// Clap's: bad usage, or `--help`/`--version` (printed by the caller).
    pub fn parse_args(
        argv: impl IntoIterator<Item = std::ffi::OsString>,
    ) -> Result<Cli, clap::Error> {
        use clap::FromArgMatches;
        Cli::from_arg_matches(&command().try_get_matches_from(argv)?)
    }
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
    #[command(visible_alias = "checkpoint")]
    Checkpoints(CheckpointsArgs),
    /// List every operator: what it does, the variables it reads, its table options.
    #[command(visible_alias = "plugin")]
    Plugins(PluginsArgs),
    /// List an anchovy's task logs (filter by table, status, task type, time).
    Logs(LogsArgs),
    /// List an anchovy's tables with their settings and last load.
    Tables(TablesArgs),
    /// Collect what no reader needs: orphan data files of killed runs (older than
    /// --grace), task logs and worker results older than --keep, and commit records
    /// older than --keep-commits that every uploader has loaded past, with their files.
    /// A dry run unless --delete (then under the run lease).
    Gc(GcArgs),
    /// Run a set of anchovies (a school) as a DAG ordered by their -U upstreams.
    School(SchoolArgs),
    /// List a downloader's quarantined records (on_bad_record: quarantine), or replay
    /// them after the source or the table's options are fixed.
    Rejects(Box<RejectsArgs>),
    /// Take over from the original tool: an uploader's tables start where the original
    /// uploader's checkpoints say it stopped (runs like `start`: -op is the uploader,
    /// -U its upstreams, the same target); a downloader takes over the original
    /// downloader's checkpoints. Under the lease; `--dry-run` only prints.
    Migrate(MigrateArgs),
    /// Print a shell completion script: `anchovy completions bash >
    /// /etc/bash_completion.d/anchovy` (also zsh, fish, powershell, elvish).
    Completions(CompletionsArgs),
    /// Print a manual page (roff): `anchovy man > anchovy.1`, `anchovy man start >
    /// anchovy-start.1`, or read it at once: `anchovy man start | man -l -`.
    Man(ManArgs),
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
    /// The school file (YAML): `anchovies:` (command lines), `parallel:`, `policy:`,
    /// `env:`; or the original tool's school file, a list of command lines (run one at
    /// a time, in order).
    #[arg(
        short = 'f',
        long = "file",
        visible_alias = "school-file",
        value_name = "SCHOOL_YAML",
        required_unless_present = "data"
    )]
    pub file: Option<std::path::PathBuf>,
    /// The school file's text instead of a file (the original tool's `--school-data`).
    #[arg(
        short = 'd',
        long = "school-data",
        value_name = "YAML|JSON",
        conflicts_with = "file",
        allow_hyphen_values = true
    )]
    pub data: Option<String>,
    /// The original tool's `--anchovy-executable`: refused (members run this binary).
    #[arg(long, hide = true, value_name = "PATH")]
    pub anchovy_executable: Option<String>,
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
    /// An uploader's loads as its target database recorded them (`_anchovies_loads`,
    /// tables with `audit: true`) instead of the task logs: needs -op sql.Uploader and
    /// its ACHVY_CNXN__DB__URI.
    #[arg(long)]
    pub from_target: bool,
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
    /// List what the operator's source offers (-op; e.g. every table a sql.Downloader
    /// connection may read, with keys, column types and row estimates) instead of the
    /// anchovy's own tables.
    #[arg(long)]
    pub discover: bool,
    /// Settings shared by every verb.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Arguments of `anchovy gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Delete what is found (under the run lease); without it, only list it.
    #[arg(long)]
    pub delete: bool,
    /// Orphan data files younger than this are kept (a run may still be writing them;
    /// 1h, 2d).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub grace: String,
    /// Task logs and worker results younger than this are kept (30d, 12h).
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub keep: String,
    /// Commit records (and the data files they list) younger than this are kept;
    /// older ones go once every uploader of the anchovy has loaded past them (`all`:
    /// keep every commit).
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub keep_commits: String,
    /// One JSON object instead of text.
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

/// Arguments of `anchovy completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `anchovy man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// A verb's page (`start`, `school`, ...): `anchovy-<verb>(1)`; default `anchovy(1)`.
    pub verb: Option<String>,
}

/// Arguments of `anchovy migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The id of the original anchovy taken over, whose `$checkpoints/` are read (an
    /// uploader's `<upstream>.<table>.last.timestamp` say what it loaded) (default:
    /// this --id).
    #[arg(long, value_name = "ID")]
    pub from: Option<String>,
    /// Print what would be set; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the run results as one JSON line.
    #[arg(long)]
    pub compact: bool,
    /// Settings shared by every verb.
    #[command(flatten)]
    pub config: ConfigArgs,
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
    /// Do not ask for confirmation (the original tool's `--confirm`).
    #[arg(short = 'y', long, visible_alias = "confirm")]
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
    /// The config document as YAML or JSON text (replaces the config file), as the
    /// original tool's `-c`; a value naming an existing file reads that file instead.
    #[arg(short = 'c', long, value_name = "YAML|JSON|PATH")]
    pub config: Option<String>,
    /// The config file [env: ACHVY_CONFIG_FILE] (default: ./config.yaml when present).
    #[arg(short = 'f', long, value_name = "PATH")]
    pub config_file: Option<PathBuf>,
    /// Every declared setting's flag.
    #[command(flatten)]
    pub settings: SettingArgs,
}

impl ConfigArgs {
    /// The command-line settings layer.
    pub fn layer(&self) -> Layer {
        self.settings.0.clone()
    }
}

/// The flags of every setting, built from its declaration ([`SETTINGS`]): name, value
/// name, help with the variable, default and range. Parsed into the command-line
/// [`Layer`].
#[derive(Debug, Clone, Default)]
pub struct SettingArgs(pub Layer);

impl clap::FromArgMatches for SettingArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut l = Layer::new("command line");
        for s in SETTINGS {
            match s.flag {
                Flag::Switch(_, sets) => {
                    if m.get_flag(s.key) {
                        l.set(s.key, sets);
                    }
                }
                Flag::Repeat(..) => {
                    let v: Vec<String> = m
                        .get_many::<String>(s.key)
                        .map(|v| v.cloned().collect())
                        .unwrap_or_default();
                    l.set_opt(s.key, Some(v));
                }
                Flag::Value(..) => {
                    l.set_opt(s.key, m.get_one::<String>(s.key).cloned());
                }
            }
        }
        Ok(SettingArgs(l))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = SettingArgs::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for SettingArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        SETTINGS.iter().fold(cmd, |cmd, s| cmd.arg(arg(s)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        SettingArgs::augment_args(cmd)
    }
}

/// A setting's flag.
fn arg(s: &Setting) -> Arg {
    let (short, long, _) = s.flag.names();
    let mut a = Arg::new(s.key).help(s.help_line());
    if let Some(c) = short {
        a = a.short(c);
    }
    if let Some(l) = long {
        a = a.long(l);
    }
    for alias in s.flag.long_aliases() {
        a = a.visible_alias(alias);
    }
    match s.flag {
        Flag::Switch(..) => a.action(ArgAction::SetTrue),
        Flag::Repeat(_, name) => a.action(ArgAction::Append).value_name(name),
        Flag::Value(_, name) => a.action(ArgAction::Set).value_name(name),
    }
}

/// Rewrites the original tool's several-letter single-dash flags (`-op NAME`,
/// `-op=NAME`, declared in [`SETTINGS`]) to their long spelling.
pub fn rewrite_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let dashed: Vec<(&str, &str)> = SETTINGS
        .iter()
        .filter_map(|s| match s.flag.names() {
            (_, Some(long), Some(dash)) => Some((dash, long)),
            _ => None,
        })
        .collect();
    args.into_iter()
        .map(|a| {
            let Some(s) = a.to_str() else { return a };
            for (dash, long) in &dashed {
                if s == *dash {
                    return format!("--{long}").into();
                }
                if let Some(v) = s.strip_prefix(dash).and_then(|r| r.strip_prefix('=')) {
                    return format!("--{long}={v}").into();
                }
            }
            a
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
        let l = s.config.layer();
        assert_eq!(l.get("operator_cls"), Some(&"sftp.CsvDownloader".into()));
        assert_eq!(l.get("id"), Some(&"sales_sftp".into()));
        assert_eq!(l.get("upstream"), Some(&serde_json::json!(["a", "b"])));
        assert_eq!(l.get("is_task_executor"), Some(&false.into()));
        let cli = Cli::try_parse_from(rewrite_args(
            ["anchovy", "run", "-op=files.CsvDownloader"].map(Into::into),
        ))
        .unwrap();
        let Command::Start(s) = cli.command else {
            panic!()
        };
        let l = s.config.layer();
        assert_eq!(l.get("operator_cls"), Some(&"files.CsvDownloader".into()));
    }

    #[test]
    fn every_setting_has_a_flag_with_its_help() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let mut start = Cli::command();
        let start = start.find_subcommand_mut("start").unwrap();
        for s in SETTINGS {
            let arg = start
                .get_arguments()
                .find(|a| a.get_id() == s.key)
                .unwrap_or_else(|| panic!("{} has no flag", s.key));
            let help = arg.get_help().unwrap().to_string();
            assert!(help.contains(s.env), "{}: {help}", s.key);
        }
    }
}
