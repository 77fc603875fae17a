//! JSON records to typed batches: the reader of `blob.JsonDownloader` (and of any
//! downloader that gets JSON files).
//!
//! A file is read in one of three shapes, told apart by its first bytes:
//! - **NDJSON**: one object per line (blank lines skipped); `_line` is the line;
//! - **a JSON array** of objects (`[{...}, {...}]`), streamed element by element, never
//!   held whole; `_line` is the element's position (1-based);
//! - **JSON documents**: one object per file (pretty-printed or not), or several in a
//!   row; `_line` is the document's position.
//!
//! With `records: <field>` each document's `<field>` (a dotted path) holds the array of
//! records, and the document's other top-level scalar fields are copied into every
//! record (e.g. a session id beside its events). Nested objects and arrays stay JSON
//! ([`Value::Json`]); `columns:` types convert text values (dates, decimals, ...) on read,
//! with an error naming the file, record, column and value when one does not parse.
//! `.gz` and `.zst` files are decompressed as they stream.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use anchovy_core::row::{
    BatchBuilder, Member, ReadError, Row, TYPES_FIELD, put, read_object, read_object_at,
};
use anchovy_core::{Batch, ColType, Value};

use super::csv::convert;
use super::io_err;
use super::json_stream;
use crate::error::PluginError;
use anchovy_core::reject::{Reject, Rejects};

anchovy_core::table_options! {
    /// The JSON options of a table (`tbls.<name>.*`).
    pub struct JsonOptions {
        /// dotted path of the array of records inside each document; the document's
        /// top-level scalars are copied into each record
        #[serde(default)]
        pub records: Option<String>,
        /// add `_file` and `_line` (line, or record position) columns (default false)
        #[serde(default, deserialize_with = "anchovy_core::options::de::flag")]
        pub provenance: bool,
    }
}

/// How one table's JSON files become rows.
#[derive(Debug, Clone)]
pub struct JsonFormat {
    records: Option<Vec<String>>,
    provenance: bool,
    columns: BTreeMap<String, ColType>,
}

/// Bytes read at a time.
const READ_BUFFER: usize = 256 << 10;

impl JsonFormat {
    /// The format of a table: its options and `columns:` types.
    pub fn new(o: &JsonOptions, columns: &BTreeMap<String, ColType>) -> JsonFormat {
        JsonFormat {
            records: o
                .records
                .as_ref()
                .map(|r| r.split('.').map(String::from).collect()),
            provenance: o.provenance,
            columns: columns.clone(),
        }
    }

    /// Reads one file into batches of `batch_size` rows for `table`; `emit` returning
    /// false stops the read. Returns the number of records.
    ///
    /// # Errors
    /// [`PluginError::Data`] naming `label:line` (or the record's position) for
    /// malformed JSON, a record that is not an object, or a value of a typed column
    /// that does not parse.
    pub fn read(
        &self,
        input: Box<dyn Read + Send>,
        label: &str,
        table: &str,
        batch_size: usize,
        rejects: &mut Rejects,
        emit: &mut dyn FnMut(Batch) -> bool,
    ) -> Result<u64, PluginError> {
        let mut input = BufReader::with_capacity(READ_BUFFER, input);
        let mut out = Records::new(self, label, table, batch_size, rejects, emit);
        // Skip a UTF-8 BOM and leading whitespace to see the shape.
        let first = loop {
            let buf = input.fill_buf().map_err(|e| io_err(label, e))?;
            if buf.is_empty() {
                return Ok(0);
            }
            let skip = if buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
                3
            } else {
                buf.iter().take_while(|b| b.is_ascii_whitespace()).count()
            };
            if skip == 0 {
                break buf[0];
            }
            input.consume(skip);
        };
        if first == b'[' && self.records.is_none() {
            // The shared streaming scanner: each element cut out and parsed once.
            let shape = json_stream::Shape {
                body: "the file",
                ..json_stream::Shape::default()
            };
            let mut on = BodyRecords {
                recs: &mut out,
                inherited: &[],
                failed: None,
            };
            let res = json_stream::parse_reader(input, &shape, &mut on);
            if let Some(e) = on.failed {
                return Err(e);
            }
            if out.stopped {
                return Ok(out.count);
            }
            res.map_err(|e| match e {
                json_stream::PageError::Cut(m) => io_err(label, std::io::Error::other(m)),
                json_stream::PageError::Bad(m) => PluginError::Data {
                    location: label.to_string(),
                    message: format!("malformed JSON: {m}"),
                },
            })?;
        } else if self.records.is_none() && self.ndjson(&mut input)? {
            let mut line = String::new();
            let mut n = 0u64;
            loop {
                line.clear();
                let got = input.read_line(&mut line).map_err(|e| io_err(label, e))?;
                if got == 0 {
                    break;
                }
                n += 1;
                if line.trim().is_empty() {
                    continue;
                }
                match out.take(&line, n, &[], true) {
                    Ok(_) => {}
                    Err(ReadError::Syntax(e)) => {
                        out.bad(n, &line, format!("malformed JSON: {e}"))?
                    }
                    Err(ReadError::Member(reason)) => out.bad(n, &line, reason)?,
                }
                if out.stopped {
                    return Ok(out.count);
                }
            }
        } else {
            let stream = serde_json::Deserializer::from_reader(input)
                .into_iter::<Box<serde_json::value::RawValue>>();
            for (i, doc) in stream.enumerate() {
                let doc = doc.map_err(|e| json_err(label, &e))?;
                out.document(&doc, i as u64 + 1)?;
                if out.stopped {
                    return Ok(out.count);
                }
            }
        }
        out.flush();
        Ok(out.count)
    }

    /// True when the first line is a complete JSON value (NDJSON); false for a
    /// document spread over lines. Looks without consuming.
    fn ndjson(&self, input: &mut BufReader<Box<dyn Read + Send>>) -> Result<bool, PluginError> {
        let buf = input.fill_buf().map_err(|e| io_err("", e))?;
        let end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
        Ok(
            serde_json::from_slice::<serde::de::IgnoredAny>(&buf[..end]).is_ok()
                && memchr::memchr(b'\n', buf).is_some(),
        )
    }
}

/// The records of one body, as the streaming parser hands them over
/// ([`json_stream::OnRecord`]): each taken in one pass where it is whole in the chunk
/// at hand. A bad record's error is kept in `failed` (its message stops the parse).
pub struct BodyRecords<'r, 'a, E: FnMut(Batch) -> bool + ?Sized> {
    /// Where the rows go.
    pub recs: &'r mut Records<'a, E>,
    /// Fields copied into every record.
    pub inherited: &'r [(String, Value)],
    /// The error that stopped the parse, when a record's.
    pub failed: Option<PluginError>,
}

impl<E: FnMut(Batch) -> bool + ?Sized> json_stream::OnRecord for BodyRecords<'_, '_, E> {
    fn record_at(&mut self, text: &str, pos: u64) -> Option<usize> {
        if self.recs.stopped {
            return None;
        }
        self.recs.record_at(text, pos, self.inherited)
    }

    fn record(&mut self, text: &str, pos: u64) -> Result<(), String> {
        if self.recs.stopped {
            return Err(String::new());
        }
        self.recs.record(text, pos, self.inherited).map_err(|e| {
            let m = e.to_string();
            self.failed = Some(e);
            m
        })
    }
}

/// What [`Records::watch`] calls with a field's raw value.
pub type Watcher<'a> = dyn FnMut(&Value) + Send + 'a;

/// Records to rows: one record's JSON text at a time, typed by `columns:`, into
/// batches for `emit`; bad records go to `rejects`. The JSON files' reader and the
/// REST downloader's pages share it.
pub struct Records<'a, E: FnMut(Batch) -> bool + ?Sized = dyn FnMut(Batch) -> bool> {
    fmt: &'a JsonFormat,
    label: &'a str,
    b: BatchBuilder,
    batch_size: usize,
    rejects: &'a mut Rejects,
    emit: &'a mut E,
    count: u64,
    stopped: bool,
    /// A field whose raw value (before `columns:` conversion) goes to the callback,
    /// record by record.
    watch: Option<(&'a str, &'a mut Watcher<'a>)>,
    /// The `columns:` type of each column of the builder's schema so far.
    kinds: Vec<Option<ColType>>,
}

/// The `columns:` type of column `i` of `b`'s schema (`kinds` caches them by position:
/// a builder's columns keep their positions).
#[inline]
fn kind(
    kinds: &mut Vec<Option<ColType>>,
    columns: &BTreeMap<String, ColType>,
    b: &BatchBuilder,
    i: usize,
) -> Option<ColType> {
    if columns.is_empty() {
        return None;
    }
    while kinds.len() <= i {
        let name = &b.schema().names()[kinds.len()];
        kinds.push(columns.get(&**name).copied());
    }
    kinds[i]
}

/// A member of a column declared `t`: text converted, a number of a `decimal` column
/// kept digit for digit, anything else as read.
fn typed(k: &str, m: Member<'_>, t: ColType) -> Result<Value, String> {
    match m {
        Member::Str(s) => convert(&s, Some(t), false)
            .ok_or_else(|| format!("column `{k}`: `{s}` is not a valid {t}")),
        Member::Number(n) if t == ColType::Decimal => anchovy_core::row::canonical_decimal(n)
            .map(Value::Decimal)
            .ok_or_else(|| format!("column `{k}`: `{n}` is not a valid {t}")),
        m => Ok(Value::from(m)),
    }
}

impl<'a, E: FnMut(Batch) -> bool + ?Sized> Records<'a, E> {
    /// A writer of `table`'s records in batches of `batch_size`.
    pub fn new(
        fmt: &'a JsonFormat,
        label: &'a str,
        table: &str,
        batch_size: usize,
        rejects: &'a mut Rejects,
        emit: &'a mut E,
    ) -> Records<'a, E> {
        Records {
            fmt,
            label,
            b: BatchBuilder::new(Arc::<str>::from(table)),
            batch_size,
            rejects,
            emit,
            count: 0,
            stopped: false,
            watch: None,
            kinds: Vec::new(),
        }
    }

    /// Shows `field`'s raw value of every record taken to `cb`.
    pub fn watch(&mut self, field: &'a str, cb: &'a mut Watcher<'a>) {
        self.watch = Some((field, cb));
    }

    /// Records taken.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// True once `emit` asked to stop.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// One record from its JSON text; `inherited` are fields copied from its document.
    ///
    /// # Errors
    /// [`PluginError::Data`] for a bad record when the table's `on_bad_record` fails.
    pub fn record(
        &mut self,
        text: &str,
        pos: u64,
        inherited: &[(String, Value)],
    ) -> Result<(), PluginError> {
        match self.take(text, pos, inherited, true) {
            Ok(_) => Ok(()),
            Err(ReadError::Syntax(e)) => {
                self.bad(pos, text, format!("malformed JSON in record {pos}: {e}"))
            }
            Err(ReadError::Member(reason)) => self.bad(pos, text, reason),
        }
    }

    /// Takes the record `text` starts with (more may follow it) when it is whole and
    /// good: its length. `None` otherwise, with nothing kept: the caller hands it to
    /// [`Records::record`] as exactly its text, which says what is wrong.
    pub fn record_at(
        &mut self,
        text: &str,
        pos: u64,
        inherited: &[(String, Value)],
    ) -> Option<usize> {
        self.take(text, pos, inherited, false).ok()
    }

    /// A record that cannot be taken: fails, is skipped or quarantined (`on_bad_record`).
    fn bad(&mut self, pos: u64, raw: &str, reason: String) -> Result<(), PluginError> {
        self.rejects
            .reject(Reject {
                source: self.label,
                line: pos,
                reason,
                raw: raw.trim_end().to_string(),
                header: None,
                format: "json",
            })
            .map_err(|(location, message)| PluginError::Data { location, message })?;
        if self.rejects.pending() >= self.batch_size
            && let Some(b) = self.rejects.take_batch()
        {
            self.stopped = !(self.emit)(b);
        }
        Ok(())
    }

    /// One record read into a row in one pass: the inherited fields, the record's
    /// members (integers exact; values of typed columns converted from their text, a
    /// number of a `decimal` column digit for digit), then `_file`/`_line`. `whole`:
    /// `text` is exactly the record; otherwise it starts with it. Returns the record's
    /// length; `ReadError::Member` is why the record cannot be taken, and a record not
    /// taken leaves nothing behind.
    fn take(
        &mut self,
        text: &str,
        pos: u64,
        inherited: &[(String, Value)],
        whole: bool,
    ) -> Result<usize, ReadError<String>> {
        let Records {
            fmt,
            label,
            b,
            kinds,
            watch,
            ..
        } = self;
        // A record not taken leaves no column behind (it would reach the target).
        let columns = b.schema().len();
        let undo = |b: &mut BatchBuilder, kinds: &mut Vec<Option<ColType>>| {
            b.schema_mut().truncate(columns);
            kinds.truncate(columns);
        };
        let field = watch.as_ref().map(|(f, _)| *f);
        let mut row: Row = Vec::with_capacity(b.schema().len());
        let mut next = 0;
        // The watched field's raw value, shown once the record is taken.
        let mut seen_inherited = None;
        for (k, v) in inherited {
            if field == Some(k.as_str()) {
                seen_inherited = Some(v);
            }
            let i = b.column(k, next);
            next = i + 1;
            let v = match (kind(kinds, &fmt.columns, b, i), v) {
                (Some(t), Value::String(s)) => match typed(k, Member::Str(Cow::Borrowed(s)), t) {
                    Ok(v) => v,
                    Err(e) => {
                        undo(b, kinds);
                        return Err(ReadError::Member(e));
                    }
                },
                _ => v.clone(),
            };
            put(&mut row, i, v);
        }
        let mut seen = None;
        let mut member = |k: Cow<'_, str>, m: Member<'_>| {
            if k == TYPES_FIELD {
                return Err(format!(
                    "the field `{TYPES_FIELD}` is reserved by the datastore format; rename it at the source"
                ));
            }
            if field == Some(k.as_ref()) {
                seen = Some(Value::from(m.clone()));
            }
            let i = b.column(&k, next);
            next = i + 1;
            let v = match kind(kinds, &fmt.columns, b, i) {
                None => Value::from(m),
                Some(t) => typed(&k, m, t)?,
            };
            put(&mut row, i, v);
            Ok(())
        };
        let read = if whole {
            read_object(text, &mut member).map(|()| text.len())
        } else {
            read_object_at(text, &mut member)
        };
        let len = match read {
            Ok(len) => len,
            Err(e) => {
                undo(b, kinds);
                return Err(e);
            }
        };
        if fmt.provenance {
            let i = b.column("_file", next);
            put(&mut row, i, Value::String(label.to_string()));
            let i = b.column("_line", i + 1);
            put(&mut row, i, Value::Int(pos as i64));
        }
        if let Some((_, cb)) = watch {
            seen_inherited.into_iter().chain(seen.as_ref()).for_each(cb);
        }
        b.push_row(row);
        self.count += 1;
        if self.b.len() >= self.batch_size {
            self.stopped = !(self.emit)(self.b.take());
        }
        Ok(len)
    }

    /// One document: a record, or (with `records:`) the records inside it.
    fn document(&mut self, raw: &serde_json::value::RawValue, pos: u64) -> Result<(), PluginError> {
        let Some(path) = &self.fmt.records else {
            return self.record(raw.get(), pos, &[]);
        };
        let text = raw.get();
        // The document's top-level scalars, exactly as written, go into every record.
        let mut inherited = Vec::new();
        let read = read_object(text, |k, m| {
            if k != path[0].as_str() && !matches!(m, Member::Nested(_)) {
                inherited.push((k.into_owned(), Value::from(m)));
            }
            Ok::<(), ()>(())
        });
        if read.is_err() {
            inherited.clear(); // not an object: the records path says what is wrong
        }
        // The records array read by the streaming parser, as a file's array is.
        let shape = json_stream::Shape {
            records: path.clone(),
            captures: Vec::new(),
            body: "the document",
        };
        let label = self.label;
        let mut on = BodyRecords {
            recs: self,
            inherited: &inherited,
            failed: None,
        };
        let res = json_stream::parse_reader(text.as_bytes(), &shape, &mut on);
        if let Some(e) = on.failed {
            return Err(e);
        }
        if self.stopped {
            return Ok(());
        }
        res.map(drop).map_err(|e| match e {
            json_stream::PageError::Cut(m) | json_stream::PageError::Bad(m) => PluginError::Data {
                location: format!("{label}:{pos}"),
                message: format!("document {pos}: {m}"),
            },
        })
    }

    /// Emits the rows and bad records still held.
    pub fn flush(&mut self) {
        if !self.b.is_empty() && !self.stopped {
            self.stopped = !(self.emit)(self.b.take());
        }
        if !self.stopped
            && let Some(b) = self.rejects.take_batch()
        {
            (self.emit)(b);
        }
    }
}

fn json_err(label: &str, e: &serde_json::Error) -> PluginError {
    PluginError::Data {
        location: if e.line() > 0 {
            format!("{label}:{}", e.line())
        } else {
            label.to_string()
        },
        message: format!("malformed JSON: {e}"),
    }
}

/// The registry entry (`format: json`).
pub const SPEC: super::FormatSpec = super::FormatSpec {
    name: "json",
    options: anchovy_core::OptionGroup {
        title: "format json",
        options: <JsonOptions as anchovy_core::TableOptions>::DOCS,
    },
    build: |table, options, columns| {
        let o: JsonOptions = super::options(table, options)?;
        Ok(Arc::new(JsonFormat::new(&o, columns)))
    },
};

super::input_format!(JsonFormat);

/// Reads quarantined JSON records again (`anchovy rejects replay`): each raw record
/// as one NDJSON line, under the table's current options.
impl anchovy_core::reject::RecordReader for JsonFormat {
    fn read(
        &self,
        text: String,
        source: &str,
        table: &str,
        rejects: &mut Rejects,
        emit: &mut dyn FnMut(Batch) -> bool,
    ) -> Result<u64, anchovy_core::BoxError> {
        // The raw text is one record (also one of a `records:` document): read as
        // such, so that a record still malformed is rejected again, not the whole read.
        let label = super::csv::replay_label(source);
        let mut out = Records::new(self, label, table, 1024, rejects, emit);
        out.record(text.trim_end(), 1, &[])?;
        out.flush();
        Ok(out.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(data: &[u8], opts: serde_json::Value, label: &str) -> Result<Vec<Batch>, PluginError> {
        read_with(data, opts, label, &mut Rejects::failing("t"), 2)
    }

    /// Reads `data` with `columns: {at: datetime, amount: decimal}` in batches of
    /// `batch_size`, bad records going to `rejects`.
    fn read_with(
        data: &[u8],
        opts: serde_json::Value,
        label: &str,
        rejects: &mut Rejects,
        batch_size: usize,
    ) -> Result<Vec<Batch>, PluginError> {
        let mut o = serde_json::json!({});
        o.as_object_mut()
            .unwrap()
            .extend(opts.as_object().unwrap().clone());
        let o: JsonOptions = serde_json::from_value(o).unwrap();
        let mut cols = BTreeMap::new();
        cols.insert("at".to_string(), ColType::DateTime);
        cols.insert("amount".to_string(), ColType::Decimal);
        let f = JsonFormat::new(&o, &cols);
        let mut out = vec![];
        f.read(
            super::super::decompressed(Box::new(std::io::Cursor::new(data.to_vec())), label)?,
            label,
            "t",
            batch_size,
            rejects,
            &mut |b| {
                out.push(b);
                true
            },
        )?;
        Ok(out)
    }

    fn rows(bs: &[Batch]) -> Vec<Vec<(String, Value)>> {
        bs.iter().flat_map(|b| b.records()).collect()
    }

    #[test]
    fn ndjson_arrays_and_documents() {
        let nd = b"{\"id\":1,\"at\":\"2024-01-02T03:04:05Z\"}\n\n{\"id\":2,\"tags\":[\"a\"]}\n{\"id\":3}\n";
        let r = rows(&read(nd, serde_json::json!({"provenance": true}), "f.ndjson").unwrap());
        assert_eq!(r.len(), 3);
        assert!(matches!(r[0][1].1, Value::DateTimeTz(_)));
        assert_eq!(
            r[2].iter().find(|(k, _)| k == "_line").unwrap().1,
            Value::Int(4)
        );
        let arr = b" [ {\"id\": 1}, {\"id\": 2, \"n\": {\"x\": 1}} ] ";
        let r = rows(&read(arr, serde_json::json!({}), "f.json").unwrap());
        assert_eq!(r.len(), 2);
        assert!(matches!(r[1][1].1, Value::Json(_)));
        let doc = b"{\n  \"session\": \"s1\",\n  \"user\": \"u\",\n  \"events\": [\n    {\"id\": \"e1\"}, {\"id\": \"e2\"}\n  ]\n}\n";
        let r = rows(&read(doc, serde_json::json!({}), "s.json").unwrap());
        assert_eq!(r.len(), 1);
        let r = rows(&read(doc, serde_json::json!({"records": "events"}), "s.json").unwrap());
        assert_eq!(r.len(), 2);
        assert!(r[1].contains(&("session".to_string(), Value::String("s1".into()))));
        assert!(r[1].contains(&("id".to_string(), Value::String("e2".into()))));
        assert!(rows(&read(b"", serde_json::json!({}), "e.json").unwrap()).is_empty());
    }

    /// Records inside documents (`records:`) keep every digit, theirs and the
    /// document's scalars copied into them; a missing path names the document.
    #[test]
    fn records_inside_documents_keep_their_digits() {
        let doc = br#"{"session": 12345678901234567890123, "meta": {"x": 1},
            "events": [{"id": 98765432109876543210, "n": {"big": 12345678901234567890}}, {"id": 2}]}"#;
        let r = rows(&read(doc, serde_json::json!({"records": "events"}), "s.json").unwrap());
        assert_eq!(r.len(), 2);
        let get = |i: usize, k: &str| r[i].iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(
            get(0, "session"),
            Some(Value::Decimal("12345678901234567890123".into()))
        );
        assert_eq!(
            get(0, "id"),
            Some(Value::Decimal("98765432109876543210".into()))
        );
        assert_eq!(
            get(0, "n").map(|v| v.text().into_owned()),
            Some(r#"{"big":12345678901234567890}"#.to_string())
        );
        assert_eq!(get(1, "id"), Some(Value::Int(2)));
        assert_eq!(get(1, "meta"), None);
        let e = read(doc, serde_json::json!({"records": "evts"}), "s.json").unwrap_err();
        assert!(
            e.to_string().contains("s.json:1") && e.to_string().contains("has no `evts`"),
            "{e}"
        );
        let none = br#"{"session": 1, "events": null}"#;
        assert!(
            rows(&read(none, serde_json::json!({"records": "events"}), "s.json").unwrap())
                .is_empty()
        );
    }

    /// A record that is not taken (ill-formed, or a typed value that does not parse)
    /// adds no column: none of its names reaches the batch's schema.
    #[test]
    fn bad_records_leave_no_columns_behind() {
        for data in [
            &b"[{\"id\":1},{\"id\":2,\"typo\":1,\"at\":\"no date\"},{\"id\":3,\"x\":tru},{\"id\":4}]"[..],
            b"{\"id\":1}\n{\"id\":2,\"typo\":1,\"at\":\"no date\"}\n{\"id\":3,\"x\":tru}\n{\"id\":4}\n",
        ] {
            let mut rejects = Rejects::new(
                "t",
                anchovy_core::reject::RejectPolicy {
                    on_bad_record: anchovy_core::reject::OnBadRecord::Skip,
                    max_rejects: None,
                },
            );
            let out = read_with(data, serde_json::json!({}), "f.json", &mut rejects, 100).unwrap();
            let b = out.iter().find(|b| b.table.as_ref() == "t").unwrap();
            assert_eq!(b.len(), 2);
            assert_eq!(b.schema.names().len(), 1, "{:?}", b.schema.names());
        }
    }

    /// A number in a `decimal` column keeps its digits (exponents expanded); text is
    /// converted as before; what is neither stays as read; a string that is no number
    /// is a bad record naming the column and value.
    #[test]
    fn decimal_columns_keep_a_numbers_digits() {
        let nd = b"{\"amount\":0.1000000000000000055}\n{\"amount\":-1.5e3}\n{\"amount\":123456789012345678901234.50}\n{\"amount\":\"7.10\"}\n{\"amount\":null}\n{\"amount\":true}\n";
        let r = rows(&read(nd, serde_json::json!({}), "f.ndjson").unwrap());
        let got: Vec<Value> = r.iter().map(|row| row[0].1.clone()).collect();
        assert_eq!(
            got,
            vec![
                Value::Decimal("0.1000000000000000055".into()),
                Value::Decimal("-1500".into()),
                Value::Decimal("123456789012345678901234.50".into()),
                Value::Decimal("7.10".into()),
                Value::Null,
                Value::Bool(true),
            ]
        );
        for bad in [
            &b"{\"amount\":\"12,5\"}\n"[..],
            b"{\"amount\":\"1e99999\"}\n",
        ] {
            let e = read(bad, serde_json::json!({}), "f.ndjson").unwrap_err();
            assert!(e.to_string().contains("column `amount`"), "{e}");
        }
    }

    #[test]
    fn bad_json_names_file_and_line() {
        let e = read(b"{\"id\":1}\n{\"id\":\n", serde_json::json!({}), "f.ndjson").unwrap_err();
        assert!(e.to_string().contains("f.ndjson:2"), "{e}");
        let e = read(b"[{\"id\":1}, 7]", serde_json::json!({}), "a.json").unwrap_err();
        assert!(e.to_string().contains("expected a JSON object"), "{e}");
        let e = read(
            b"{\"at\":\"yesterday\"}\n",
            serde_json::json!({}),
            "f.ndjson",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("`yesterday` is not a valid datetime"),
            "{e}"
        );
        let e = read(b"{\"a\":[1,2", serde_json::json!({}), "t.json").unwrap_err();
        assert!(e.to_string().contains("t.json"), "{e}");
        // An array's element that is balanced but not JSON is a bad record (quarantined
        // under `on_bad_record: quarantine`); a broken structure fails the file.
        let e = read(b"[{\"id\":1},\n{\"id\":}]", serde_json::json!({}), "a.json").unwrap_err();
        assert!(e.to_string().contains("malformed JSON in record 2"), "{e}");
        let e = read(
            b"[{\"id\":1},\n {\"id\":2]",
            serde_json::json!({}),
            "a.json",
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("a.json")
                && m.contains("line 2 column 9")
                && m.contains("`[1]` of the file"),
            "{m}"
        );
        let e = read(b"[{\"id\":1}] [", serde_json::json!({}), "a.json").unwrap_err();
        assert!(e.to_string().contains("trailing"), "{e}");
    }
}
