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
    #[error("{context}")]
    Db {
        /// What was being done (never contains a password).
        context: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
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
    /// Anything from anchovy-core (its own source, so exit codes see through it).
    #[error("{0}")]
    Core(
        #[from]
        #[source]
        anchovy_core::Error,
    ),
}
