//! The one error type of anchovy-core.
//!
//! Every variant carries the data a user needs to act (the table, the file, the env var)
//! and renders as a lowercase message without a trailing period. Causes live in
//! `#[source]` and are not repeated in the message; the CLI prints the whole chain.
//! [`Error::exit_code`] maps each variant to the documented process exit code.

use std::path::PathBuf;

/// Result alias used across anchovy-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from a plugin or a user's operator.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Process exit codes, documented in the README ("Exit codes").
pub mod exit {
    /// The run finished and every task is OK.
    pub const OK: u8 = 0;
    /// The run finished with at least one failed task (status ERR).
    pub const FAILED: u8 = 1;
    /// Bad usage or configuration: flags, config.yaml, env vars, unknown operator,
    /// missing connection. Nothing was run.
    pub const CONFIG: u8 = 2;
    /// A batch hit the execution timeout (`-t` / `ACHVY_EXECUTION_TIMEOUT`).
    pub const TIMEOUT: u8 = 3;
    /// The datastore could not be read or written (startup or commit).
    pub const DATASTORE: u8 = 4;
    /// A budget (`--max-duration`, `--max-rows`, `--max-bytes`) stopped the run with
    /// work left: everything done is committed; run again to continue. Not a failure.
    pub const PENDING: u8 = 6;
    /// Another run of the same anchovy (user and id) holds the run lease: this run
    /// did nothing and wrote nothing. Also: this run lost its lease mid-run (another
    /// process took it over after it expired) and stopped before committing more.
    pub const LOCKED: u8 = 5;
    /// Interrupted by SIGINT/SIGTERM before the run finished.
    pub const INTERRUPTED: u8 = 130;
}

/// Errors produced by anchovy-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid.
    #[error("invalid configuration: {what}: {message}")]
    Config {
        /// What was being configured (`execution_timeout`, `--user`, `ACHVY_ENABLED`, ...).
        what: String,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// A key in the `config:` map (or a table entry) is not known.
    #[error("unknown key `{key}` in {place}{}", suggestion_text(.suggestion))]
    UnknownKey {
        /// The unknown key.
        key: String,
        /// Where it was found (`config: of ./config.yaml`).
        place: String,
        /// The closest valid key, if one is close.
        suggestion: Option<String>,
    },

    /// A YAML or JSON configuration document does not parse.
    #[error("cannot parse {origin}: {message}")]
    ConfigSyntax {
        /// The file path or `--config` text.
        origin: String,
        /// The parser's message (with line and column).
        message: String,
    },

    /// An operator name is not in the registry.
    #[error("unknown operator `{name}`; known operators: {}", .known.join(", "))]
    UnknownOperator {
        /// The name that was asked for.
        name: String,
        /// Every registered operator name.
        known: Vec<String>,
    },

    /// A connection the operator needs is not configured.
    #[error("connection \"{id}\" is not configured{}; set {}{hint}", describe_for(.needed_by), .vars.join(" or "))]
    MissingConnection {
        /// The connection id (`default` for `ACHVY_CNXN__<ATTR>`).
        id: String,
        /// The operator that needs it.
        needed_by: Option<String>,
        /// The exact environment variables that would configure it.
        vars: Vec<String>,
        /// A configured variable that looks like a typo of one of `vars`, as
        /// ` (ACHVY_CNXN__DB_URI is set: did you mean ACHVY_CNXN__DB__URI?)`, or empty.
        hint: String,
    },

    /// A connection attribute has an invalid value.
    #[error("connection \"{id}\": attribute {attr}: {message}")]
    ConnectionAttr {
        /// The connection id.
        id: String,
        /// The attribute (lowercase).
        attr: String,
        /// What is wrong.
        message: String,
    },

    /// A datastore operation failed.
    #[error("datastore {op} failed for `{key}`")]
    Datastore {
        /// The operation (`get`, `put`, `list`, ...).
        op: &'static str,
        /// The key (never contains secrets).
        key: String,
        /// The object_store error.
        #[source]
        source: object_store::Error,
    },

    /// The datastore location cannot be used at all (a file where a directory must be,
    /// a read-only file system, no permission).
    #[error("the datastore {location} cannot be used: {message}")]
    DatastoreUnusable {
        /// The datastore location as configured.
        location: String,
        /// What is wrong and the fix.
        message: String,
    },

    /// Another run of the same anchovy holds the run lease.
    #[error(
        "another run of this anchovy is in progress: {holder} holds the run lease of {store} until {expires_at} (it is renewed while that run lives; a killed run's lease expires and is taken over)"
    )]
    Locked {
        /// The anchovy's datastore area.
        store: String,
        /// Who holds it (host, pid, session).
        holder: String,
        /// When the holder's lease expires unless renewed (RFC 3339).
        expires_at: String,
    },

    /// This run's lease was taken over (it expired while the process was paused or cut
    /// off); the run stops before committing anything more.
    #[error(
        "this run lost the run lease of {store} (token {token}): another run took it over after it expired; nothing more is committed by this run"
    )]
    LeaseLost {
        /// The anchovy's datastore area.
        store: String,
        /// The fencing token this run held.
        token: u64,
    },

    /// A worker's claim on a table is no longer its own (`--workers`): its commits for
    /// that table stop, and the table is left to the claim's holder.
    #[error(
        "this worker lost table {table} of {store}: {reason}; nothing more of it is committed by this worker (the holder, or the next run, carries on from the committed state)"
    )]
    ClaimLost {
        /// The table.
        table: String,
        /// The anchovy's datastore area.
        store: String,
        /// What happened.
        reason: String,
    },

    /// Another process committed to the same anchovy at the same time.
    #[error(
        "commit {seq} already exists in {store}: another process is writing to this anchovy (same --user and --id); stop it or give this run another --id"
    )]
    CommitConflict {
        /// The commit sequence number that was taken.
        seq: u64,
        /// The datastore location of the anchovy.
        store: String,
    },

    /// A local file operation failed.
    #[error("{op} {}", .path.display())]
    Io {
        /// What was being done (`read`, `create`, ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The io error.
        #[source]
        source: std::io::Error,
    },

    /// A record could not be decoded or encoded.
    #[error("{location}: {message}")]
    Data {
        /// `file:line` or `table.column` of the bad value.
        location: String,
        /// What is wrong with it.
        message: String,
    },

    /// A table has no source in the operator.
    #[error("table `{table}` has no source in operator {operator}; its sources serve: {}", .patterns.join(", "))]
    NoSource {
        /// The table.
        table: String,
        /// The operator.
        operator: String,
        /// The wildcards of the operator's sources.
        patterns: Vec<String>,
    },

    /// A batch ran longer than the execution timeout.
    #[error(
        "AnchovyExecutionTimeout: batch {batch_id} exceeded the execution timeout of {seconds}s; raise -t/ACHVY_EXECUTION_TIMEOUT or limit the data one batch takes"
    )]
    ExecutionTimeout {
        /// The batch that timed out.
        batch_id: u64,
        /// The timeout in seconds.
        seconds: f64,
    },

    /// The run was cancelled (signal or a failure elsewhere under RAISE).
    #[error("cancelled: {reason}")]
    Cancelled {
        /// Why.
        reason: String,
    },

    /// An error raised by an operator (plugin or user code).
    #[error("{context}")]
    Operator {
        /// What the operator was doing (`table sales`, `hook xopen`).
        context: String,
        /// The operator's error.
        #[source]
        source: BoxError,
    },

    /// An HTTP request failed (after its retries): the request without secrets.
    #[error("{request}: {message}")]
    Http {
        /// `GET <url>`, the URL without credentials or secret parameters.
        request: String,
        /// What happened.
        message: String,
    },

    /// A JSON document could not be encoded or decoded.
    #[error("json in {what}")]
    Json {
        /// What was being (de)serialized.
        what: String,
        /// The serde_json error.
        #[source]
        source: serde_json::Error,
    },
}

fn suggestion_text(s: &Option<String>) -> String {
    match s {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

fn describe_for(op: &Option<String>) -> String {
    match op {
        Some(op) => format!(" (needed by {op})"),
        None => String::new(),
    }
}

impl Error {
    /// Shorthand for [`Error::Config`].
    pub fn config(what: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            what: what.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Data`].
    pub fn data(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Data {
            location: location.into(),
            message: message.into(),
        }
    }

    /// Wraps any error raised by operator code with what it was doing.
    pub fn operator(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Operator {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Wraps an object_store error.
    pub fn datastore(
        op: &'static str,
        key: impl Into<String>,
        source: object_store::Error,
    ) -> Self {
        Error::Datastore {
            op,
            key: key.into(),
            source,
        }
    }

    /// Wraps a serde_json error.
    pub fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Json {
            what: what.into(),
            source,
        }
    }

    /// The documented process exit code for this error when it ends a run.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config { .. }
            | Error::UnknownKey { .. }
            | Error::ConfigSyntax { .. }
            | Error::UnknownOperator { .. }
            | Error::MissingConnection { .. }
            | Error::ConnectionAttr { .. }
            | Error::NoSource { .. } => exit::CONFIG,
            Error::Datastore { .. }
            | Error::DatastoreUnusable { .. }
            | Error::CommitConflict { .. } => exit::DATASTORE,
            Error::Locked { .. } | Error::LeaseLost { .. } | Error::ClaimLost { .. } => {
                exit::LOCKED
            }
            Error::ExecutionTimeout { .. } => exit::TIMEOUT,
            Error::Cancelled { .. } => exit::INTERRUPTED,
            // A core error anywhere in an operator's chain keeps its own code (a missing
            // connection reported by a plugin is still a configuration error).
            Error::Operator { source, .. } => {
                let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
                while let Some(e) = cur {
                    if let Some(inner) = e.downcast_ref::<Error>() {
                        return inner.exit_code();
                    }
                    cur = e.source();
                }
                exit::FAILED
            }
            _ => exit::FAILED,
        }
    }

    /// The whole error chain on one line (`a: b: c`), with secrets redacted.
    pub fn chain(&self) -> String {
        render_chain(self)
    }
}

/// Renders an error and its sources as `a: b: c`, redacting registered secrets.
pub fn render_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    crate::secret::redact(&out).into_owned()
}
