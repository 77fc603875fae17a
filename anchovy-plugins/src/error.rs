//! The one error type of anchovy-plugins.

/// Errors raised by the built-in operators.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// A table option is invalid.
    #[error("table option `{key}`: {message}")]
    Option {
        /// The option key.
        key: String,
        /// What is wrong and what to use instead.
        message: String,
    },
    /// A record could not be read.
    #[error("{location}: {message}")]
    Data {
        /// `file:line`.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// A local file operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A database operation failed.
    #[cfg(feature = "sql")]
    #[error("{context}: {}", describe_db_error(.cause))]
    Db {
        /// What was being done (never contains a password).
        context: String,
        /// The driver's error (shown as a sentence, without the server's source line).
        cause: sqlx::Error,
    },
    /// A server's host key is unknown or changed.
    #[error("{message}")]
    HostKey {
        /// What happened, the fingerprint and how to trust it.
        message: String,
    },
    /// Authentication was refused.
    #[error("{message}")]
    Auth {
        /// Who, what was tried, and what to check.
        message: String,
    },
    /// Another process changed shared state while this one worked.
    #[error("{message}")]
    Conflict {
        /// What happened and what to do.
        message: String,
    },
    /// A program run as a source failed or could not start.
    #[error("program `{program}`: {message}")]
    Program {
        /// The program, as configured.
        program: String,
        /// What happened (its exit, the end of its stderr) and what to do.
        message: String,
    },
    /// Anything from anchovy-core (its own source, so exit codes see through it).
    #[error("{0}")]
    Core(
        #[from]
        #[source]
        anchovy_core::Error,
    ),
}

impl PluginError {
    /// A core table-option error ([`anchovy_core::TableOptions::of`]) as an option
    /// error of the table (its key kept); other core errors as they are.
    pub fn from_option(e: anchovy_core::Error) -> PluginError {
        match e {
            anchovy_core::Error::Config { what, message } => {
                PluginError::Option { key: what, message }
            }
            other => PluginError::Core(other),
        }
    }
}

/// A driver error as a user reads it: the server's message with its detail, hint and
/// SQLSTATE, without the driver's prefixes or the server's internal source line
/// (`... at line 334`).
#[cfg(feature = "sql")]
pub fn describe_db_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => {
            let mut out = d.message().trim_end_matches('.').to_string();
            if let Some(pg) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(detail) = pg.detail() {
                    out.push_str(&format!("; {}", detail.trim_end_matches('.')));
                }
                if let Some(hint) = pg.hint() {
                    out.push_str(&format!("; hint: {}", hint.trim_end_matches('.')));
                }
            }
            if let Some(code) = d.code() {
                out.push_str(&format!(" (SQLSTATE {code})"));
            }
            out
        }
        sqlx::Error::Io(io) => format!("the connection to the database was lost ({io})"),
        sqlx::Error::PoolTimedOut => {
            "no connection within the connect timeout (is the server up and reachable?)".into()
        }
        sqlx::Error::Configuration(c) => format!(
            "the connection URI is not valid: {c}; characters such as # / ? @ : in the user \
             or password must be percent-encoded (# as %23, / as %2F, ? as %3F, @ as %40, \
             : as %3A)"
        ),
        other => other.to_string(),
    }
}
