//! Progress bars on a terminal: one line per running table (rows, bytes, files, rate;
//! a downloader's bytes are its rows' text before compression, `raw` as in the task
//! log's `raw_bytes_written`, an uploader's the data files it `read`),
//! drawn on stderr by indicatif. Log lines are printed above the bars (the log writer
//! suspends them), and nothing is drawn when stderr is not a terminal, with
//! `--no-progress`, or with JSON logs.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use anchovy_core::context::Progress;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressStyle};

/// The bars, once drawn; the log writer prints through it.
pub static MULTI: OnceLock<MultiProgress> = OnceLock::new();

struct Line {
    bar: ProgressBar,
    rows: u64,
    bytes: u64,
    files: u64,
    started: Instant,
}

/// indicatif bars for table tasks.
pub struct Bars {
    multi: MultiProgress,
    lines: Mutex<HashMap<String, Line>>,
    /// What the bytes are: `raw` (a downloader's rows before compression) or `read`
    /// (an uploader's data files).
    bytes_are: &'static str,
}

impl Bars {
    /// Bars on stderr for an operator of `kind`.
    pub fn new(kind: anchovy_core::operator::OperatorKind) -> Bars {
        let multi = MULTI.get_or_init(MultiProgress::new).clone();
        Bars {
            multi,
            lines: Mutex::new(HashMap::new()),
            bytes_are: match kind {
                anchovy_core::operator::OperatorKind::Uploader => "read",
                _ => "raw",
            },
        }
    }

    fn message(&self, l: &Line) -> String {
        let secs = l.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "{} rows  {} {}  {} files  {:.0} rows/s",
            l.rows,
            HumanBytes(l.bytes),
            self.bytes_are,
            l.files,
            l.rows as f64 / secs
        )
    }
}

impl Progress for Bars {
    fn start(&self, table: &str) {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:24!} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(table.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        let line = Line {
            bar,
            rows: 0,
            bytes: 0,
            files: 0,
            started: Instant::now(),
        };
        line.bar.set_message(self.message(&line));
        if let Ok(mut m) = self.lines.lock() {
            m.insert(table.to_string(), line);
        }
    }

    fn advance(&self, table: &str, rows: u64, bytes: u64, file: bool) {
        if let Ok(mut m) = self.lines.lock()
            && let Some(l) = m.get_mut(table)
        {
            l.rows += rows;
            l.bytes += bytes;
            l.files += u64::from(file);
            l.bar.set_message(self.message(l));
        }
    }

    fn finish(&self, table: &str, ok: bool) {
        if let Ok(mut m) = self.lines.lock()
            && let Some(l) = m.remove(table)
        {
            let msg = format!(
                "{} {}",
                if ok { "done:" } else { "FAILED:" },
                self.message(&l)
            );
            l.bar.finish_with_message(msg);
        }
    }
}
