//! Logging to stderr, as text or JSON lines, with every registered secret redacted.

use std::io::{IsTerminal, Write};

use anchovy_core::LogFormat;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Stderr, with secrets replaced by `***` in every line; in JSON, a field whose value
/// is a JSON object's text (a task's `data`) is written as that object, not a string.
#[derive(Clone, Copy)]
pub struct RedactingStderr {
    json: bool,
}

/// The fields of a JSON log line whose text is a JSON object of its own.
const OBJECT_FIELDS: &[&str] = &["data"];

/// `line` (one JSON log event) with each of [`OBJECT_FIELDS`] that holds an object's
/// text turned into that object; any other line as it is.
fn objects_in_json_line(line: &str) -> std::borrow::Cow<'_, str> {
    if !OBJECT_FIELDS
        .iter()
        .any(|f| line.contains(&format!("\"{f}\":\"{{")))
    {
        return line.into();
    }
    let Ok(serde_json::Value::Object(mut event)) = serde_json::from_str(line.trim_end()) else {
        return line.into();
    };
    let mut changed = false;
    for f in OBJECT_FIELDS {
        if let Some(serde_json::Value::String(text)) = event.get(*f)
            && let Ok(v @ serde_json::Value::Object(_)) = serde_json::from_str(text)
        {
            event.insert(f.to_string(), v);
            changed = true;
        }
    }
    if !changed {
        return line.into();
    }
    format!("{}\n", serde_json::Value::Object(event)).into()
}

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let text = if self.json {
            objects_in_json_line(&text)
        } else {
            text
        };
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
        .with_writer(RedactingStderr {
            json: format == LogFormat::Json,
        })
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

#[cfg(test)]
mod tests {
    use super::objects_in_json_line;

    #[test]
    fn a_task_s_data_is_an_object_in_json_logs() {
        let line = r#"{"timestamp":"t","level":"INFO","message":"table done","data":"{\"rows\":2,\"note\":\"a \\\"b\\\"\"}","table":"t"}"#;
        let v: serde_json::Value =
            serde_json::from_str(&objects_in_json_line(&format!("{line}\n"))).unwrap();
        assert_eq!(v["data"]["rows"], 2);
        assert_eq!(v["data"]["note"], "a \"b\"");
        assert_eq!(v["table"], "t");
        // Not an object's text, or not JSON: the line as it was.
        for other in [
            r#"{"message":"m","data":"{not json"}"#,
            r#"{"message":"m","data":"[1]"}"#,
            "plain text",
        ] {
            assert_eq!(objects_in_json_line(other), other);
        }
    }
}
