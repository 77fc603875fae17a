//! Delimited text (CSV, TSV, ...) to typed batches: the reader shared by every
//! downloader that reads files (local files today; SFTP and blob stores reuse it).
//!
//! RFC 4180 parsing is the `csv` crate's (quoted fields with delimiters, doubled quotes
//! and newlines). Around it: the table options users type ([`CsvOptions`]), text
//! decoding (UTF-8 with the BOM stripped, Latin-1/Windows-1252, any WHATWG label),
//! gzip (`.gz`) and zstd (`.zst`) by file extension, `columns:` types applied on read, and errors that name the
//! file, line, column and value. The reader is blocking: run it in `spawn_blocking`
//! and hand its batches out through a bounded channel.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;
use std::sync::Arc;

use anchovy_core::row::{canonical_decimal, parse_datetime, parse_typed_text};
use anchovy_core::{Batch, ColType, Schema, Value};

use super::io_err;
use crate::error::PluginError;
use anchovy_core::reject::{Reject, Rejects};

/// Bytes read from the (decoded) input at a time.
const READ_BUFFER: usize = 256 << 10;

anchovy_core::table_options! {
    /// The CSV options of a table (`tbls.<name>.*`).
    pub struct CsvOptions {
        /// field delimiter: `,` (default), one character, or `\t`, `/t`, `tab`, `comma`,
        /// `pipe`, `semicolon`
        #[serde(default = "default_delimiter")]
        pub delimiter: String,
        /// quote character (default `"`); `none` turns quoting off
        #[serde(default = "default_quote")]
        pub quote: String,
        /// whether the first line is a header (default true)
        #[serde(default = "default_true", deserialize_with = "anchovy_core::options::de::flag")]
        pub header: bool,
        /// column names when there is no header (default `column_1`, `column_2`, ...)
        #[serde(default)]
        pub names: Option<Vec<String>>,
        /// lines to skip before the header (default 0)
        #[serde(default)]
        pub skip_lines: usize,
        /// text encoding: `utf-8` (default; a BOM is stripped), `latin-1`,
        /// `windows-1252` or any WHATWG label
        #[serde(default = "default_encoding")]
        pub encoding: String,
        /// empty fields of text columns become null (typed columns always do; default
        /// false)
        #[serde(default, deserialize_with = "anchovy_core::options::de::flag")]
        pub empty_as_null: bool,
        /// add `_file` and `_line` (the line a record starts on) to every row (default
        /// false)
        #[serde(default, deserialize_with = "anchovy_core::options::de::flag")]
        pub provenance: bool,
        /// columns not in `columns:` take the type their values show, value by value,
        /// where the typed value writes back as the very same text (`42` int, `042`
        /// text; `12.50` decimal; `2024-01-31` date; ISO datetimes; `true`/`false`);
        /// default false: text
        #[serde(default, deserialize_with = "anchovy_core::options::de::flag")]
        pub autodiscover: bool,
        /// source column -> column name to use (`{_types: types}`): for names that are
        /// reserved (`_types`; `_file`/`_line` with `provenance`) or unwanted
        #[serde(default)]
        pub rename: BTreeMap<String, String>,
    }
}

fn default_delimiter() -> String {
    ",".into()
}
fn default_quote() -> String {
    "\"".into()
}
fn default_true() -> bool {
    true
}
fn default_encoding() -> String {
    "utf-8".into()
}

/// Parses the delimiter spellings users type.
///
/// # Errors
/// [`PluginError::Option`] when it is not one byte.
pub fn parse_delimiter(s: &str) -> Result<u8, PluginError> {
    let b = match s {
        "\\t" | "/t" | "\t" | "tab" | "TAB" => b'\t',
        "comma" => b',',
        "pipe" | "\\|" => b'|',
        "semicolon" => b';',
        "space" => b' ',
        other if other.len() == 1 => other.as_bytes()[0],
        other => {
            return Err(PluginError::Option {
                key: "delimiter".into(),
                message: format!(
                    "`{other}` is not one character; use e.g. `,`, `;`, `|`, `\\t` or `/t`"
                ),
            });
        }
    };
    Ok(b)
}

/// A prepared reader configuration.
#[derive(Debug, Clone)]
pub struct CsvFormat {
    delimiter: u8,
    quote: Option<u8>,
    header: bool,
    names: Option<Vec<String>>,
    skip_lines: usize,
    encoding: Option<&'static encoding_rs::Encoding>,
    empty_as_null: bool,
    autodiscover: bool,
    provenance: bool,
    columns: BTreeMap<String, ColType>,
    rename: BTreeMap<String, String>,
}

impl CsvFormat {
    /// Checks the options once per table.
    ///
    /// # Errors
    /// [`PluginError::Option`] naming the bad option.
    pub fn new(
        o: &CsvOptions,
        columns: &BTreeMap<String, ColType>,
    ) -> Result<CsvFormat, PluginError> {
        let quote = match o.quote.as_str() {
            "none" | "" => None,
            q if q.len() == 1 => Some(q.as_bytes()[0]),
            q => {
                return Err(PluginError::Option {
                    key: "quote".into(),
                    message: format!("`{q}` is not one character (or `none`)"),
                });
            }
        };
        let label = o.encoding.trim().to_ascii_lowercase();
        let encoding = match label.as_str() {
            "utf-8" | "utf8" | "utf-8-sig" | "utf_8_sig" | "utf8-bom" => None,
            "latin-1" | "latin1" | "iso-8859-1" => Some(encoding_rs::WINDOWS_1252),
            l => Some(encoding_rs::Encoding::for_label(l.as_bytes()).ok_or_else(|| PluginError::Option {
                key: "encoding".into(),
                message: format!("unknown encoding `{l}`; use utf-8, latin-1, windows-1252 or another WHATWG label"),
            })?),
        };
        Ok(CsvFormat {
            delimiter: parse_delimiter(&o.delimiter)?,
            quote,
            header: o.header,
            names: o.names.clone(),
            skip_lines: o.skip_lines,
            encoding,
            empty_as_null: o.empty_as_null,
            autodiscover: o.autodiscover,
            provenance: o.provenance,
            columns: columns.clone(),
            rename: o.rename.clone(),
        })
    }

    /// Reads one file's bytes into batches of `batch_size` rows for `table`, calling
    /// `emit` for each. `label` names the file in errors and in `_file`. `emit`
    /// returning false stops the read (the consumer went away). Gzip input is detected
    /// by `label` ending in `.gz`. Returns the number of rows read.
    ///
    /// # Errors
    /// [`PluginError::Data`] naming `label:line` for malformed or mistyped rows.
    ///
    /// A record that cannot be taken (a ragged row, a field that is not UTF-8 or holds
    /// a NUL, a value of a typed column that does not parse) goes to `rejects`, which
    /// fails the read, skips it or quarantines it per the table's `on_bad_record`;
    /// quarantined records are emitted as batches of the rejects table.
    pub fn read(
        &self,
        input: Box<dyn Read + Send>,
        label: &str,
        table: &str,
        batch_size: usize,
        rejects: &mut Rejects,
        emit: &mut dyn FnMut(Batch) -> bool,
    ) -> Result<u64, PluginError> {
        let mut input = input;
        // UTF-8 (the common case) passes through untouched, its BOM dropped; other
        // encodings, and UTF-16 files recognised by their BOM, are transcoded to UTF-8.
        let mut head = [0u8; 3];
        let mut got = 0;
        while got < head.len() {
            match input.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(label, e)),
            }
        }
        let head = &head[..got];
        let utf16 = head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]);
        let decoded: Box<dyn Read + Send> = if self.encoding.is_none() && !utf16 {
            let keep = if head.starts_with(&[0xEF, 0xBB, 0xBF]) {
                3
            } else {
                0
            };
            Box::new(std::io::Cursor::new(head[keep..].to_vec()).chain(input))
        } else {
            Box::new(
                encoding_rs_io::DecodeReaderBytesBuilder::new()
                    .encoding(self.encoding)
                    .bom_sniffing(true)
                    .strip_bom(true)
                    .utf8_passthru(true)
                    .build(std::io::Cursor::new(head.to_vec()).chain(input)),
            )
        };
        // The csv reader asks for whole buffers of this size, which BufReader hands
        // straight through once the skipped lines are consumed: no extra copy.
        let mut buffered = BufReader::with_capacity(READ_BUFFER, decoded);
        let mut skipped = 0u64;
        for _ in 0..self.skip_lines {
            let mut sink = Vec::new();
            if buffered
                .read_until(b'\n', &mut sink)
                .map_err(|e| io_err(label, e))?
                == 0
            {
                break;
            }
            skipped += 1;
        }
        let scan = Rc::new(RefCell::new(Scan::default()));
        let counter = LineCounter {
            inner: buffered,
            offset: 0,
            quote: self.quote,
            scan: scan.clone(),
        };
        let mut rdr = csv::ReaderBuilder::new()
            .delimiter(self.delimiter)
            .quoting(self.quote.is_some())
            .quote(self.quote.unwrap_or(b'"'))
            .has_headers(false)
            .flexible(true)
            .from_reader(counter);
        let mut lines_before = 0u64;
        // Quote characters before the current record, and where it starts.
        let (mut quotes_before, mut last_line) = (0u64, None::<u64>);

        let mut record = csv::ByteRecord::new();
        let mut first = true;
        let mut names: Vec<String> = Vec::new();
        let mut types: Vec<Option<ColType>> = Vec::new();
        let mut schema = Arc::new(Schema::default());
        let mut rows: Vec<Vec<Value>> = Vec::with_capacity(batch_size);
        let mut count = 0u64;
        let file_value = Value::String(label.to_string());
        let table: Arc<str> = Arc::from(table);
        loop {
            let more = rdr
                .read_byte_record(&mut record)
                .map_err(|e| csv_err(label, skipped, e))?;
            if !more {
                // A quoted field that never closes swallows the rest of the file into
                // one value: the quotes of the last record do not pair up.
                let total = scan.borrow().quotes;
                if let Some(line) = last_line
                    && (total - quotes_before) % 2 == 1
                {
                    return Err(PluginError::Data {
                        location: format!("{label}:{line}"),
                        message: "a quoted field opened on this line never closes (an unbalanced quote); if quotes are literal in this file, set `quote: none`".into(),
                    });
                }
                break;
            }
            // The line of the record's first byte. csv's own line count is wrong on CRLF input, and
            // its record start can point at the LF of a CRLF: a record never starts with LF,
            // so a newline at `start` belongs to the previous line.
            let start = record.position().map(|p| p.byte()).unwrap_or(0);
            {
                let mut sc = scan.borrow_mut();
                while sc.newlines.front().is_some_and(|(o, _)| *o <= start) {
                    if let Some((_, q)) = sc.newlines.pop_front() {
                        quotes_before = q;
                    }
                    lines_before += 1;
                }
            }
            let line = skipped + lines_before + 1;
            last_line = Some(line);
            if first {
                first = false;
                names = if self.header {
                    header_names(&record, label, line)?
                } else {
                    match &self.names {
                        Some(n) => n.clone(),
                        None => (1..=record.len()).map(|i| format!("column_{i}")).collect(),
                    }
                };
                if !self.rename.is_empty() {
                    for n in names.iter_mut() {
                        if let Some(to) = self.rename.get(n.as_str()) {
                            *n = to.clone();
                        }
                    }
                    let mut seen = std::collections::HashSet::new();
                    if let Some(d) = names.iter().find(|n| !seen.insert(n.as_str())) {
                        return Err(PluginError::Data {
                            location: format!("{label}:{line}"),
                            message: format!("after `rename:` the header has column `{d}` twice"),
                        });
                    }
                }
                if self.provenance
                    && let Some(r) = names.iter().find(|n| *n == "_file" || *n == "_line")
                {
                    return Err(PluginError::Data {
                        location: format!("{label}:{line}"),
                        message: format!(
                            "the file has a column `{r}`, which `provenance: true` adds itself; rename it (`rename: {{{r}: source{r}}}`) or turn provenance off"
                        ),
                    });
                }
                let mut all = names.clone();
                if self.provenance {
                    all.push("_file".into());
                    all.push("_line".into());
                }
                types = names.iter().map(|n| self.columns.get(n).copied()).collect();
                schema = Arc::new(Schema::new(&all));
                if self.header {
                    continue;
                }
            }
            if record.len() == 1 && record.get(0) == Some(b"") {
                continue; // a blank line
            }
            match self.row(&record, &names, &types, schema.len()) {
                Ok(mut row) => {
                    if self.provenance {
                        row.push(file_value.clone());
                        row.push(Value::Int(line as i64));
                    }
                    rows.push(row);
                    count += 1;
                }
                Err(reason) => {
                    let header = self
                        .header
                        .then(|| self.encode(names.iter().map(String::as_bytes)));
                    rejects
                        .reject(Reject {
                            source: label,
                            line,
                            reason,
                            raw: self.encode(record.iter()),
                            header,
                            format: "csv",
                        })
                        .map_err(|(location, message)| PluginError::Data { location, message })?;
                    if rejects.pending() >= batch_size
                        && let Some(b) = rejects.take_batch()
                        && !emit(b)
                    {
                        return Ok(count);
                    }
                }
            }
            if rows.len() >= batch_size {
                let b = Batch {
                    table: table.clone(),
                    schema: schema.clone(),
                    rows: std::mem::replace(&mut rows, Vec::with_capacity(batch_size)),
                };
                if !emit(b) {
                    return Ok(count);
                }
            }
        }
        if !rows.is_empty()
            && !emit(Batch {
                table,
                schema,
                rows,
            })
        {
            return Ok(count);
        }
        if let Some(b) = rejects.take_batch() {
            emit(b);
        }
        Ok(count)
    }

    /// One record's values, or why it cannot be taken.
    fn row(
        &self,
        record: &csv::ByteRecord,
        names: &[String],
        types: &[Option<ColType>],
        width: usize,
    ) -> Result<Vec<Value>, String> {
        if record.len() != names.len() {
            return Err(format!(
                "the row has {} fields but the header has {} (a ragged row or an unbalanced quote)",
                record.len(),
                names.len()
            ));
        }
        let mut row: Vec<Value> = Vec::with_capacity(width);
        // One check of the whole record (the common case: valid, no NUL); the field
        // that fails is looked for only when it does.
        let whole = std::str::from_utf8(record.as_slice())
            .ok()
            .filter(|_| memchr::memchr(0, record.as_slice()).is_none());
        for (i, field) in record.iter().enumerate() {
            let fast = whole.and_then(|w| w.get(record.range(i)?));
            let text = match fast {
                Some(t) => t,
                None => {
                    let text = std::str::from_utf8(field).map_err(|_| {
                        format!(
                            "column `{}` is not valid UTF-8; set `encoding:` (e.g. latin-1) for this table",
                            names[i]
                        )
                    })?;
                    if memchr::memchr(0, field).is_some() {
                        return Err(format!(
                            "column `{}` contains a NUL byte: not text (a binary file, or UTF-16 without a BOM?)",
                            names[i]
                        ));
                    }
                    text
                }
            };
            if self.autodiscover && types[i].is_none() {
                row.push(discover(text, self.empty_as_null));
                continue;
            }
            row.push(convert(text, types[i], self.empty_as_null).ok_or_else(|| {
                format!(
                    "column `{}`: `{}` is not a valid {}",
                    names[i],
                    truncate(text, 80),
                    types[i].map(|t| t.to_string()).unwrap_or_default()
                )
            })?);
        }
        Ok(row)
    }

    /// Fields as one line of this format (quoted where needed), for a reject's raw text.
    fn encode<'f>(&self, fields: impl Iterator<Item = &'f [u8]>) -> String {
        let mut w = csv::WriterBuilder::new()
            .delimiter(self.delimiter)
            .quote(self.quote.unwrap_or(b'"'))
            .quote_style(if self.quote.is_some() {
                csv::QuoteStyle::Necessary
            } else {
                csv::QuoteStyle::Never
            })
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        let _ = w.write_record(fields);
        let bytes = w.into_inner().unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        text.strip_suffix('\n').unwrap_or(&text).to_string()
    }
}

/// The registry entry (`format: csv`).
pub const SPEC: super::FormatSpec = super::FormatSpec {
    name: "csv",
    options: anchovy_core::OptionGroup {
        title: "format csv",
        options: <CsvOptions as anchovy_core::TableOptions>::DOCS,
    },
    build: |table, options, columns| {
        let o: CsvOptions = super::options(table, options)?;
        Ok(Arc::new(CsvFormat::new(&o, columns)?))
    },
};

super::input_format!(CsvFormat);

/// Reads quarantined CSV records again (`anchovy rejects replay`): the stored header
/// line and the record, under the table's current options.
impl anchovy_core::reject::RecordReader for CsvFormat {
    fn read(
        &self,
        text: String,
        source: &str,
        table: &str,
        rejects: &mut Rejects,
        emit: &mut dyn FnMut(Batch) -> bool,
    ) -> Result<u64, anchovy_core::BoxError> {
        // The text is the record itself: no lines to skip, nothing to decompress or
        // transcode (it was decoded when first read).
        let mut f = self.clone();
        f.skip_lines = 0;
        f.encoding = None;
        let input = Box::new(std::io::Cursor::new(text.into_bytes()));
        Ok(CsvFormat::read(
            &f,
            input,
            replay_label(source),
            table,
            1024,
            rejects,
            emit,
        )?)
    }
}

/// The label a quarantined record is read again under: its source's name without a
/// `.gz` (the text is no longer compressed). The replay puts the source's own name
/// back into `_file`.
pub(crate) fn replay_label(source: &str) -> &str {
    source.trim_end_matches(".gz").trim_end_matches(".GZ")
}

/// What [`LineCounter`] has seen: newline offsets not yet passed (bounded by the
/// read-ahead), each with the number of quote characters up to it, and all quotes.
#[derive(Default)]
struct Scan {
    newlines: VecDeque<(u64, u64)>,
    quotes: u64,
}

/// Records the offsets of newline bytes as they are read, so the reader can tell the
/// line of any record start, and counts quote characters, so it can tell a quoted
/// field that never closes.
struct LineCounter<R> {
    inner: R,
    offset: u64,
    quote: Option<u8>,
    scan: Rc<RefCell<Scan>>,
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut sc = self.scan.borrow_mut();
        match self.quote {
            Some(q) => {
                for i in memchr::memchr2_iter(b'\n', q, &buf[..n]) {
                    if buf[i] == q {
                        sc.quotes += 1;
                    } else {
                        let quotes = sc.quotes;
                        sc.newlines.push_back((self.offset + i as u64, quotes));
                    }
                }
            }
            None => {
                let base = self.offset;
                sc.newlines
                    .extend(memchr::memchr_iter(b'\n', &buf[..n]).map(|i| (base + i as u64, 0)));
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

fn header_names(
    record: &csv::ByteRecord,
    label: &str,
    line: u64,
) -> Result<Vec<String>, PluginError> {
    let mut names: Vec<String> = Vec::with_capacity(record.len());
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (i, f) in record.iter().enumerate() {
        let n = std::str::from_utf8(f).map_err(|_| PluginError::Data {
            location: format!("{label}:{line}"),
            message: "the header is not valid UTF-8; set `encoding:` for this table".into(),
        })?;
        let n = n.trim();
        let n = if n.is_empty() {
            format!("column_{}", i + 1)
        } else {
            n.to_string()
        };
        if !seen.insert(n.clone()) {
            return Err(PluginError::Data {
                location: format!("{label}:{line}"),
                message: format!("the header has column `{n}` twice"),
            });
        }
        names.push(n);
    }
    Ok(names)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

/// `autodiscover: true`: the field as the type it shows, only where that typed value
/// writes back as the same text (so a column that mixes types, widened to text by the
/// uploader, still reads exactly as written); anything else is text.
pub fn discover(text: &str, empty_as_null: bool) -> Value {
    let b = text.as_bytes();
    let first = b.first().copied().unwrap_or(b' ');
    let typed = if first == b'-' || first.is_ascii_digit() {
        if let Ok(i) = text.parse::<i64>() {
            // `042` and `-0` are not how the integer writes (`+1` never gets here).
            let digits = text.strip_prefix('-').unwrap_or(text);
            let canonical = !(digits.len() > 1 && digits.starts_with('0')) && text != "-0";
            canonical.then_some(Value::Int(i))
        } else if b.contains(&b'.') && canonical_decimal(text).as_deref() == Some(text) {
            Some(Value::Decimal(text.to_string()))
        } else if b.len() >= 10 && b[4] == b'-' {
            let v = if b.len() == 10 {
                parse_typed_text(text, "D")
            } else {
                parse_datetime(text)
            };
            v.filter(|v| v.text() == text)
        } else {
            None
        }
    } else {
        match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        }
    };
    typed.unwrap_or_else(|| {
        if empty_as_null && text.is_empty() {
            Value::Null
        } else {
            Value::String(text.to_string())
        }
    })
}

/// Converts a field to its column type; `None` when it does not parse.
pub fn convert(text: &str, ty: Option<ColType>, empty_as_null: bool) -> Option<Value> {
    let Some(ty) = ty else {
        return Some(if empty_as_null && text.is_empty() {
            Value::Null
        } else {
            Value::String(text.to_string())
        });
    };
    let t = text.trim();
    if t.is_empty() {
        return Some(if ty == ColType::Str && !empty_as_null {
            Value::String(String::new())
        } else {
            Value::Null
        });
    }
    Some(match ty {
        ColType::Str => Value::String(text.to_string()),
        ColType::Int => Value::Int(t.parse().ok()?),
        ColType::Float => Value::Float(t.parse().ok()?),
        ColType::Decimal => Value::Decimal(canonical_decimal(t)?),
        ColType::Bool => Value::Bool(match t.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" | "y" => true,
            "false" | "f" | "0" | "no" | "n" => false,
            _ => return None,
        }),
        ColType::Date => parse_typed_text(t, "D")?,
        ColType::DateTime => parse_datetime(t)?,
        ColType::Time => parse_typed_text(t, "T")?,
        ColType::Bytes => parse_typed_text(t, "B")?,
        ColType::Object => Value::from_json(serde_json::from_str(t).ok()?),
    })
}

fn csv_err(label: &str, skipped: u64, e: csv::Error) -> PluginError {
    let line = e.position().map(|p| p.line() + skipped);
    let location = match line {
        Some(l) => format!("{label}:{l}"),
        None => label.to_string(),
    };
    let message = match e.kind() {
        csv::ErrorKind::Io(io) => format!("read failed: {io}"),
        _ => e.to_string(),
    };
    PluginError::Data { location, message }
}

#[cfg(test)]
mod tests;
