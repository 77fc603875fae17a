//! `process.Downloader`: any program as a source. A table entry runs a program and
//! reads what it writes on stdout ([`singer`]): Singer taps (hundreds of them, from
//! PyPI and Meltano Hub) or any program writing NDJSON.
//!
//! - **Run.** `command: ["tap-github", "--config", "tap.json"]` (found on PATH or
//!   relative to the working directory; `cwd:` changes it). The program gets a clean
//!   environment: `PATH`, `HOME`, `USER`, `LANG`, `LC_*`, `TZ`, `TMPDIR` (all of
//!   anchovy's but `ACHVY_*` with `inherit_env: true`), the attributes of the table's
//!   `connection:` as variables of their own name (`ACHVY_CNXN__GH__GITHUB_TOKEN` ->
//!   `GITHUB_TOKEN`), and `env:` (`${name}` is attribute `name` of the connection).
//!   The connection's secrets (attributes named like `TOKEN`, `PASSWORD`, `SECRET`,
//!   `KEY`, and passwords inside URLs) are redacted in every log, task log and error.
//! - **Singer** (`dialect: singer`, the default): the streams are the tables (named
//!   after the stream, `table_prefix` in front; `streams:` picks some). `config:`
//!   (an object, `${name}` filled in) is written to a private temporary file passed as
//!   `--config <file>`; the last committed `STATE` is passed as `--state <file>`
//!   (`state_arg`). Each `STATE` is a checkpoint committed in-band after the records
//!   before it, so a failed run keeps everything up to its last committed state and
//!   the next run resumes from there.
//! - **NDJSON** (`dialect: ndjson`): every line is a row of the entry's table; a run
//!   reads the program's whole output and commits it once, at the end, with the
//!   snapshot marker the uploader's `mode: replace` uses.
//! - **Ends.** stderr is logged line by line (redacted) and its last lines go into
//!   the task log (`stderr`); a non-zero exit, a signal or `timeout` fails the table
//!   and keeps nothing after the last commit; the run's `-t` and a stopped run kill the
//!   program. A spent budget (`--max-rows`...) stops the program after a `STATE`.

pub mod singer;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchovy_core::operator::OperatorKind;
use anchovy_core::tbl::ColSelect;
use anchovy_core::{
    BoxError, Emitter, Operator, OperatorSpec, OptionDoc, SessionCtx, Source, TableOptions,
    TaskCtx, Tbl, async_trait,
};
use tokio::io::{AsyncBufReadExt, BufReader};

use self::singer::{Dialect, Reader, STATE_FIELD};
use crate::error::PluginError;

anchovy_core::table_options! {
    /// The options of a `process.Downloader` table.
    pub struct ProcessOptions {
        /// the program and its arguments (`["tap-github", "--config", "tap.json"]`; a
        /// string is split at spaces), found on PATH or relative to the working
        /// directory
        #[serde(default)]
        pub command: Option<serde_json::Value>,
        /// what the program writes on stdout: `singer` (default: SCHEMA, RECORD and
        /// STATE messages, a table per stream) or `ndjson` (one JSON object per line,
        /// rows of this table)
        #[serde(default)]
        pub dialect: Option<String>,
        /// the connection whose attributes become the program's environment variables
        /// and what `${name}` stands for (default: the anchovy's id, whose attributes
        /// are not exported)
        #[serde(default)]
        pub connection: Option<String>,
        /// more environment variables of the program (`{LOG_LEVEL: warn, TOKEN:
        /// "${token}"}`)
        #[serde(default)]
        pub env: Option<serde_json::Map<String, serde_json::Value>>,
        /// pass anchovy's whole environment (but `ACHVY_*`) to the program (default
        /// false: PATH, HOME, USER, LANG, LC_*, TZ and TMPDIR only)
        #[serde(default, deserialize_with = "anchovy_core::options::de::flag")]
        pub inherit_env: bool,
        /// the program's working directory (default: anchovy's)
        #[serde(default)]
        pub cwd: Option<String>,
        /// singer: the tap's configuration (`${name}` filled in), passed as `--config
        /// <file>` in a private temporary file
        #[serde(default)]
        pub config: Option<serde_json::Value>,
        /// singer: the streams to read, for taps that read none unless told (SQL taps):
        /// `discover` runs the program with `--discover` first and selects the streams
        /// `streams:` matches (all by default, every property), or a catalog file's path;
        /// passed as `--catalog <file>`
        #[serde(default)]
        pub catalog: Option<String>,
        /// singer: the argument before the file of the last committed state (default
        /// `--state`)
        #[serde(default)]
        pub state_arg: Option<String>,
        /// singer: only the streams matching one of these patterns (default: all)
        #[serde(default)]
        pub streams: Option<ColSelect>,
        /// singer: put in front of each stream's table name (`github_`)
        #[serde(default)]
        pub table_prefix: Option<String>,
        /// the program's whole run (`30m`; default none, the run's -t still applies)
        #[serde(default, deserialize_with = "anchovy_core::options::de::duration")]
        pub timeout: Option<Duration>,
    }
}

/// The registry entry.
pub const SPEC: OperatorSpec = OperatorSpec {
    name: "process.Downloader",
    description: "Runs any program and loads what it writes on stdout: Singer taps (SCHEMA/RECORD/STATE; streams as tables, key properties as unique_by, STATE committed in-band and handed back as the state file) or NDJSON rows. Clean environment with the connection's attributes as variables (redacted), stderr to the log and the task log, a non-zero exit keeps nothing after the last commit.",
    kind: OperatorKind::Downloader,
    connections: &[],
    env_vars: &[OptionDoc {
        key: "ACHVY_CNXN__<ID>__<NAME>",
        doc: "with `connection: <id>`: the program's environment variable <NAME>, and the value `${name}` stands for in `env` and `config`; redacted when its name says it is a secret (TOKEN, PASSWORD, SECRET, KEY, ...) and in URLs' passwords",
    }],
    table_options: &[anchovy_core::OptionGroup {
        title: "",
        options: <ProcessOptions as TableOptions>::DOCS,
    }],
    build: |_| Ok(Arc::new(Downloader)),
};

/// The operator.
#[derive(Default, Clone)]
pub struct Downloader;

/// Lines of stderr kept for the task log and error messages.
const STDERR_TAIL: usize = 20;
/// Characters of one stderr line kept.
const STDERR_LINE: usize = 500;

fn opt_err(table: &str, key: &str, message: impl Into<String>) -> PluginError {
    PluginError::Option {
        key: format!("tbls.{table}.{key}"),
        message: message.into(),
    }
}

/// A table's program, ready to start.
struct Program {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    dialect: Dialect,
    opts: ProcessOptions,
    /// Where the state's arguments start in `argv`, if given.
    state_at: Option<usize>,
    /// Temporary files (config, state) that live as long as the program runs.
    files: Vec<tempfile::NamedTempFile>,
}

impl Program {
    /// The program of `tbl`: its arguments, environment and files.
    fn of(
        sess: &SessionCtx,
        tbl: &Tbl,
        state: Option<&serde_json::Value>,
    ) -> Result<Program, PluginError> {
        let opts = ProcessOptions::of(tbl).map_err(PluginError::from_option)?;
        let dialect = match opts.dialect.as_deref().map(str::trim) {
            None | Some("singer") => Dialect::Singer,
            Some("ndjson") => Dialect::Ndjson,
            Some(other) => {
                return Err(opt_err(
                    &tbl.name,
                    "dialect",
                    format!("`{other}` is not a dialect; use singer or ndjson"),
                ));
            }
        };
        let mut argv: Vec<String> = match &opts.command {
            None => {
                return Err(opt_err(&tbl.name, "command", "a process.Downloader table runs a program: set `command: [program, arg, ...]`"));
            }
            Some(serde_json::Value::String(s)) => s.split_whitespace().map(String::from).collect(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|x| match x {
                    serde_json::Value::String(s) => Ok(s.clone()),
                    // YAML reads `10` and `true` as a number and a boolean: as written.
                    serde_json::Value::Number(n) => Ok(n.to_string()),
                    serde_json::Value::Bool(b) => Ok(b.to_string()),
                    other => Err(opt_err(&tbl.name, "command", format!("`{other}` is not an argument; give the program and its arguments as text"))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(opt_err(&tbl.name, "command", format!("`{other}` is not a command; use `[program, arg, ...]`")));
            }
        };
        if argv.is_empty() || argv[0].trim().is_empty() {
            return Err(opt_err(
                &tbl.name,
                "command",
                "the command is empty: name the program to run",
            ));
        }
        let conn_id = opts
            .connection
            .clone()
            .unwrap_or_else(|| sess.settings.id.clone());
        let conn = sess.connections.get(&conn_id);
        let fill = |key: &str, v: &serde_json::Value| {
            anchovy_core::connection::substitute_tree(v, &conn_id, conn, false).map_err(|m| match m
            {
                anchovy_core::connection::Missing::Conn(e) => PluginError::Core(e),
                anchovy_core::connection::Missing::Syntax(m) => opt_err(&tbl.name, key, m),
            })
        };
        // The environment: a few of anchovy's, the connection's attributes, `env:`.
        let mut env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| {
                !k.starts_with("ACHVY_")
                    && (opts.inherit_env
                        || matches!(
                            k.as_str(),
                            "PATH"
                                | "HOME"
                                | "USER"
                                | "LOGNAME"
                                | "LANG"
                                | "TZ"
                                | "TMPDIR"
                                | "SYSTEMROOT"
                        )
                        || k.starts_with("LC_"))
            })
            .collect();
        if opts.connection.is_some()
            && let Some(c) = conn
        {
            for a in c.attr_names() {
                if let Some(v) = c.get(a) {
                    env.push((a.to_ascii_uppercase(), v.to_string()));
                }
            }
        }
        for (k, v) in opts.env.iter().flatten() {
            let v = match fill(&format!("env.{k}"), v)? {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            env.push((k.clone(), v));
        }
        let mut files = Vec::new();
        let mut state_at = None;
        if dialect == Dialect::Singer {
            if let Some(cfg) = &opts.config {
                let cfg = fill("config", cfg)?;
                let f = temp_json(&tbl.name, "config", &cfg)?;
                argv.push("--config".into());
                argv.push(f.path().display().to_string());
                files.push(f);
            }
            if let Some(s) = state.and_then(|s| s.get(STATE_FIELD)) {
                let f = temp_json(&tbl.name, "state", s)?;
                state_at = Some(argv.len());
                argv.push(opts.state_arg.clone().unwrap_or_else(|| "--state".into()));
                argv.push(f.path().display().to_string());
                files.push(f);
            }
        }
        Ok(Program {
            argv,
            env,
            cwd: opts.cwd.as_ref().map(PathBuf::from),
            dialect,
            opts,
            state_at,
            files,
        })
    }

    /// The program's name, for messages.
    fn name(&self) -> &str {
        &self.argv[0]
    }

    /// `catalog:`: the catalog's file handed to the program as `--catalog <file>`;
    /// with `discover`, the program's own catalog (`--discover`) with the streams of
    /// `streams:` selected.
    async fn catalog(&mut self, ctx: &TaskCtx) -> Result<(), BoxError> {
        let Some(c) = self.opts.catalog.clone() else {
            return Ok(());
        };
        if self.dialect != Dialect::Singer {
            return Err(opt_err(
                ctx.tbl_name(),
                "catalog",
                "a catalog is for Singer taps (dialect: singer)",
            )
            .into());
        }
        if c.trim() != "discover" {
            self.args_before_state(["--catalog".to_string(), c]);
            return Ok(());
        }
        let mut catalog = self.discover().await?;
        let picked = singer::select(&mut catalog, self.opts.streams.as_ref());
        ctx.log("catalog_streams", picked.len());
        if picked.is_empty() {
            tracing::warn!(table = %ctx.tbl_name(), "the discovered catalog has no stream `streams:` matches: nothing is read");
        }
        let f = temp_json(ctx.tbl_name(), "catalog", &catalog)?;
        self.args_before_state(["--catalog".to_string(), f.path().display().to_string()]);
        self.files.push(f);
        Ok(())
    }

    /// The program's catalog: its stdout when run with `--discover` (and without the
    /// state: a discovery reads no data).
    async fn discover(&self) -> Result<serde_json::Value, PluginError> {
        let state_at = self.state_at.unwrap_or(self.argv.len());
        let mut cmd = tokio::process::Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..state_at])
            .arg("--discover")
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(d) = &self.cwd {
            cmd.current_dir(d);
        }
        let name = self.name().to_string();
        let out = cmd.output().await.map_err(|e| PluginError::Program {
            program: name.clone(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                not_found(&name)
            } else {
                format!("cannot start its discovery: {e}")
            },
        })?;
        if !out.status.success() {
            let mut tail = Tail::default();
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .for_each(|l| tail.push(l));
            return Err(PluginError::Program {
                program: name,
                message: format!(
                    "its discovery (`--discover`) failed ({}); its stderr ended with:\n{}",
                    out.status,
                    tail.text()
                ),
            });
        }
        serde_json::from_slice(&out.stdout).map_err(|e| PluginError::Program {
            program: name,
            message: format!("its discovery (`--discover`) wrote no JSON catalog on stdout: {e}"),
        })
    }

    /// Puts arguments before the state's (at the end when there is none).
    fn args_before_state(&mut self, args: [String; 2]) {
        let at = self.state_at.unwrap_or(self.argv.len());
        self.argv.splice(at..at, args);
        if let Some(s) = &mut self.state_at {
            *s += 2;
        }
    }
}

/// A private temporary JSON file (mode 0600) holding `v`.
fn temp_json(
    table: &str,
    what: &str,
    v: &serde_json::Value,
) -> Result<tempfile::NamedTempFile, PluginError> {
    use std::io::Write;
    let mut f = tempfile::Builder::new()
        .prefix(&format!("anchovy-{what}-"))
        .suffix(".json")
        .tempfile()
        .map_err(|e| PluginError::Io {
            op: "create a temporary file for",
            path: format!("table {table}'s {what}"),
            source: e,
        })?;
    f.write_all(v.to_string().as_bytes())
        .and_then(|()| f.flush())
        .map_err(|e| PluginError::Io {
            op: "write",
            path: f.path().display().to_string(),
            source: e,
        })?;
    Ok(f)
}

/// The last lines of stderr, redacted and cut.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    count: u64,
}

impl Tail {
    /// Keeps a line of stderr (redacted, cut to [`STDERR_LINE`] characters), the last
    /// [`STDERR_TAIL`] of them.
    fn push(&mut self, line: &str) {
        self.count += 1;
        if self.lines.len() == STDERR_TAIL {
            self.lines.pop_front();
        }
        let l = anchovy_core::secret::redact(line);
        self.lines.push_back(l.chars().take(STDERR_LINE).collect());
    }

    fn text(&self) -> String {
        self.lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

#[async_trait]
impl Operator for Downloader {
    fn sources(&self) -> Vec<Arc<dyn Source>> {
        vec![Arc::new(ProgramSource)]
    }

    /// `anchovy tables --discover`: the streams each Singer program's discovery
    /// (`--discover`) offers, as the tables they would become, with their key and
    /// types.
    async fn catalog(&self, sess: &SessionCtx) -> Result<Option<Vec<Tbl>>, BoxError> {
        let mut out = Vec::new();
        for t in sess.config_tbls.iter() {
            let p = Program::of(sess, t, None)?;
            if p.dialect != Dialect::Singer {
                out.push(t.clone());
                continue;
            }
            let catalog = p.discover().await?;
            for s in catalog
                .get("streams")
                .and_then(|s| s.as_array())
                .into_iter()
                .flatten()
            {
                let id = s
                    .get("tap_stream_id")
                    .or_else(|| s.get("stream"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("");
                let mut tbl = Tbl::named(format!(
                    "{}{}",
                    p.opts.table_prefix.as_deref().unwrap_or(""),
                    singer::table_name(id)
                ));
                if let Some(schema) = s.get("schema") {
                    tbl.columns = singer::columns_of(schema);
                }
                tbl.unique_by = ColSelect(singer::key_properties(s));
                tbl.options.insert("program".into(), t.name.clone().into());
                tbl.options.insert("stream".into(), id.into());
                out.push(tbl);
            }
        }
        Ok(Some(out))
    }

    /// Every configured program can be started: found, and executable.
    async fn healthcheck(&self, sess: &SessionCtx) -> Vec<(String, Result<String, String>)> {
        let mut out = Vec::new();
        for t in sess.config_tbls.iter() {
            let check = Program::of(sess, t, None)
                .map_err(|e| anchovy_core::error::render_chain(&e))
                .and_then(|p| {
                    let cwd = p.cwd.clone().unwrap_or_else(|| PathBuf::from("."));
                    let dialect = match p.dialect {
                        Dialect::Singer => "singer",
                        Dialect::Ndjson => "ndjson",
                    };
                    which(p.name(), &cwd, &p.env)
                        .map(|path| format!("{} ({dialect})", path.display()))
                        .ok_or_else(|| not_found(p.name()))
                });
            out.push((format!("table {}", t.name), check));
        }
        out
    }
}

fn not_found(program: &str) -> String {
    format!(
        "`{program}` is not an executable file here nor on the PATH; install it (a Singer tap: `pipx install {program}`, or into a venv) or give its full path in `command`"
    )
}

/// The executable `program` resolves to: a path (relative to `cwd`) or a name on the
/// program's `PATH`.
fn which(program: &str, cwd: &std::path::Path, env: &[(String, String)]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = cwd.join(program);
        return runnable(&p).then_some(p);
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    std::env::split_paths(path)
        .map(|d| cwd.join(d).join(program))
        .find(|p| runnable(p))
}

/// The source: runs the task's program.
struct ProgramSource;

#[async_trait]
impl Source for ProgramSource {
    async fn run(&self, ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError> {
        let tbl = ctx.tbl().clone();
        let mut prog = Program::of(&ctx.session, &tbl, ctx.checkpoint(&tbl.name).as_ref())?;
        prog.catalog(ctx).await?;
        if prog.dialect == Dialect::Singer {
            ctx.not_a_table();
        }
        let label = format!("{} stdout", prog.name());
        let mut reader = Reader::new(
            ctx,
            prog.dialect,
            label,
            prog.opts.streams.as_ref(),
            prog.opts.table_prefix.as_deref(),
        )?;
        let tail = Arc::new(Mutex::new(Tail::default()));
        let run = run_program(ctx, &prog, &mut reader, out, tail.clone());
        let res = match prog.opts.timeout {
            Some(d) => match tokio::time::timeout(d, run).await {
                Ok(r) => r,
                Err(_) => Err(PluginError::Program {
                    program: prog.name().to_string(),
                    message: format!("ran longer than the table's timeout ({}s) and was stopped; nothing after the last commit is kept", d.as_secs_f64()),
                }
                .into()),
            },
            None => run.await,
        };
        let c = &reader.counts;
        ctx.log("program", prog.name());
        ctx.log("stdout_lines", c.lines);
        ctx.log("source_rows", c.records);
        if prog.dialect == Dialect::Singer {
            ctx.log("schemas", c.schemas);
            ctx.log("states", c.states);
            ctx.log("streams", serde_json::Value::Object(reader.per_stream()));
            if c.dropped > 0 {
                ctx.log("dropped_records", c.dropped);
            }
            if c.activate_version > 0 {
                ctx.log("activate_version_messages", c.activate_version);
            }
            if c.unknown > 0 {
                ctx.log("unknown_messages", c.unknown);
            }
        }
        {
            let t = tail.lock().unwrap_or_else(|p| p.into_inner());
            ctx.log("stderr_lines", t.count);
            if t.count > 0 {
                ctx.log("stderr", t.text());
            }
        }
        let stopped = res?;
        if stopped {
            ctx.log("stopped_by_budget", true);
        }
        Ok(())
    }
}

/// Starts the program, reads its stdout to the end and checks how it ended. Returns
/// true when a spent budget stopped it.
async fn run_program(
    ctx: &TaskCtx,
    prog: &Program,
    reader: &mut Reader,
    out: &mut Emitter,
    tail: Arc<Mutex<Tail>>,
) -> Result<bool, BoxError> {
    let name = prog.name().to_string();
    let mut cmd = tokio::process::Command::new(&prog.argv[0]);
    cmd.args(&prog.argv[1..])
        .env_clear()
        .envs(prog.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(d) = &prog.cwd {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().map_err(|e| PluginError::Program {
        program: name.clone(),
        message: if e.kind() == std::io::ErrorKind::NotFound {
            not_found(&name)
        } else {
            format!("cannot start it: {e}")
        },
    })?;
    tracing::info!(table = %ctx.tbl_name(), program = %name, pid = child.id().unwrap_or(0), "program started");
    let stderr = child.stderr.take().expect("stderr is piped");
    let table = ctx.tbl_name().to_string();
    let t2 = tail.clone();
    let errs = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            tracing::info!(table = %table, "stderr: {}", anchovy_core::secret::redact(&l));
            t2.lock().unwrap_or_else(|p| p.into_inner()).push(&l);
        }
    });
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stdout = BufReader::with_capacity(256 << 10, stdout);
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut n = 0u64;
    let mut checkpoints = 0u64;
    let mut stopped = false;
    // Rows counted against the run's budget so far.
    let mut spent = 0u64;
    let read: Result<(), BoxError> = async {
        loop {
            buf.clear();
            let got =
                stdout
                    .read_until(b'\n', &mut buf)
                    .await
                    .map_err(|e| PluginError::Program {
                        program: name.clone(),
                        message: format!("reading its stdout failed: {e}"),
                    })?;
            if got == 0 {
                return Ok(());
            }
            n += 1;
            let line = match std::str::from_utf8(&buf) {
                Ok(l) => l,
                Err(e) => {
                    return Err(PluginError::Data {
                        location: format!("{name} stdout:{n}"),
                        message: format!(
                            "the line is not UTF-8 ({e}); the program must write UTF-8 JSON"
                        ),
                    }
                    .into());
                }
            };
            if reader.line(ctx, line, n, out).await? {
                checkpoints += 1;
                ctx.session.budget.spend(reader.counts.records - spent, 0);
                spent = reader.counts.records;
                if ctx.session.stop_for_budget(ctx.tbl_name(), checkpoints) {
                    stopped = true;
                    return Ok(());
                }
            }
        }
    }
    .await;
    if read.is_err() || stopped {
        // Nothing more of it is read: it stops now (its output after this is not kept).
        let _ = child.start_kill();
    }
    let status = child.wait().await.map_err(|e| PluginError::Program {
        program: name.clone(),
        message: format!("waiting for it failed: {e}"),
    })?;
    // stderr ends with the program (a grandchild holding it open is not waited for).
    let _ = tokio::time::timeout(Duration::from_secs(2), errs).await;
    read?;
    if stopped {
        return Ok(true);
    }
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        let how = match (status.code(), status.signal()) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            _ => "failed".to_string(),
        };
        let t = tail.lock().unwrap_or_else(|p| p.into_inner()).text();
        return Err(PluginError::Program {
            program: name,
            message: format!(
                "{how}; nothing it wrote after the last commit is kept, the next run starts from there{}",
                if t.is_empty() {
                    " (it wrote nothing on stderr)".to_string()
                } else {
                    format!("; its stderr ended with:\n{t}")
                }
            ),
        }
        .into());
    }
    reader.flush(out).await?;
    ctx.session.budget.spend(reader.counts.records - spent, 0);
    if prog.dialect == Dialect::Ndjson {
        // The program's whole output in one commit: a complete snapshot of the table.
        let marker = serde_json::json!({"snapshot": ctx.session.session_id, "batch": ctx.batch_id, "rows": reader.counts.records});
        out.checkpoint(ctx.tbl_name(), marker).await?;
    }
    Ok(false)
}
