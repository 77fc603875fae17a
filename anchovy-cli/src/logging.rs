//! Logging to stderr, as text or JSON lines, with every registered secret redacted.

use std::io::{IsTerminal, Write};

use anchovy_core::LogFormat;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Stderr, with secrets replaced by `***` in every line.
#[derive(Clone, Copy)]
pub struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let text = anchovy_core::secret::redact(&text);
        match crate::progress::MULTI.get() {
            // Above the progress bars, which are redrawn below.
            Some(m) => m.suspend(|| std::io::stderr().write_all(text.as_bytes()))?,
            None => std::io::stderr().write_all(text.as_bytes())?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingStderr;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Installs the global subscriber. `level` is a level or a tracing filter.
pub fn init(level: &str, format: LogFormat) {
    let filter = match level.to_ascii_lowercase().as_str() {
        l @ ("error" | "warn" | "info" | "debug" | "trace") => EnvFilter::new(format!(
            "{l},object_store=warn,hyper=warn,hyper_util=warn,reqwest=warn,sqlx=error,h2=warn,rustls=warn"
        )),
        other => EnvFilter::try_new(other).unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactingStderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}
