//! What a program writes on stdout, line by line, into tables: the Singer
//! specification's messages, or plain NDJSON rows.
//!
//! - **Singer** (<https://hub.meltano.com/singer/spec>): `SCHEMA` declares a stream
//!   (its JSON Schema gives the column types, `key_properties` the table's
//!   `unique_by`); `RECORD` is a row of a declared stream; `STATE` is the program's
//!   position, recorded as a checkpoint in-band after every row before it
//!   ([`STATE_FIELD`] of the entry's checkpoint), and handed back to the program on
//!   the next run. A later `SCHEMA` of a stream changes its types from there on (new
//!   columns are added; the table's entry widens). `ACTIVATE_VERSION` is counted and
//!   otherwise ignored; `BATCH` (records in files elsewhere) is refused.
//! - **NDJSON**: every line is a row of the entry's table, typed by its `columns:`.
//!
//! A line that is not a message (not JSON, no `type`, a `RECORD` of a stream without
//! `SCHEMA`, a record that does not fit its types) is a bad record of the entry:
//! `on_bad_record` fails the table (default), skips it or quarantines it, in the same
//! commit as the rows around it.
//!
//! Records of one stream in a row travel together through the JSON record reader
//! ([`Records`]), in runs of at most `batch_size`: no allocation per record beyond
//! the row itself.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use anchovy_core::reject::{Reject, Rejects};
use anchovy_core::tbl::{ColSelect, ColType};
use anchovy_core::{Batch, BoxError, Emitter, TaskCtx, Tbl};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::PluginError;
use crate::formats::json::{JsonFormat, JsonOptions, Records};

/// The field of the entry's checkpoint that holds the program's last `STATE` value.
pub const STATE_FIELD: &str = "singer_state";

/// How stdout is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The Singer specification's messages.
    Singer,
    /// One JSON object per line, rows of the entry's table.
    Ndjson,
}

/// One Singer message, borrowed from its line.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    stream: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    record: Option<&'a RawValue>,
    #[serde(default, borrow)]
    schema: Option<&'a RawValue>,
    #[serde(default)]
    key_properties: Option<Vec<String>>,
    #[serde(default, borrow)]
    value: Option<&'a RawValue>,
}

/// One stream: its table and how its records are typed.
struct Stream {
    name: String,
    table: String,
    fmt: JsonFormat,
    /// Excluded by `streams:`: its records are dropped (counted).
    skip: bool,
    records: u64,
}

/// Records of one stream waiting to be read into rows together.
#[derive(Default)]
struct Run {
    stream: usize,
    text: String,
    /// (start, end, stdout line) of each record in `text`.
    spans: Vec<(usize, usize, u64)>,
}

/// Counts for the task log.
#[derive(Debug, Default)]
pub struct Counts {
    /// Lines read from stdout.
    pub lines: u64,
    /// Records read into rows (or rejected).
    pub records: u64,
    /// `SCHEMA` messages.
    pub schemas: u64,
    /// `STATE` messages (each a checkpoint).
    pub states: u64,
    /// Records of streams `streams:` leaves out.
    pub dropped: u64,
    /// `ACTIVATE_VERSION` messages.
    pub activate_version: u64,
    /// Messages of a type the specification does not have.
    pub unknown: u64,
}

/// Reads a program's stdout, line by line, into the task's tables.
pub struct Reader {
    dialect: Dialect,
    /// The entry's name: the checkpoint key, and the table of NDJSON rows.
    entry: String,
    label: String,
    batch_size: usize,
    streams: Vec<Stream>,
    by_name: HashMap<String, usize>,
    include: Vec<wildmatch::WildMatch>,
    prefix: String,
    run: Run,
    rejects: Rejects,
    /// The counts so far.
    pub counts: Counts,
    warned_unknown: bool,
}

impl Reader {
    /// A reader of the program `label` for the task's entry.
    pub fn new(
        ctx: &TaskCtx,
        dialect: Dialect,
        label: String,
        include: Option<&ColSelect>,
        prefix: Option<&str>,
    ) -> Result<Reader, BoxError> {
        let tbl = ctx.tbl();
        let mut r = Reader {
            dialect,
            entry: tbl.name.clone(),
            label,
            batch_size: ctx.session.settings.batch_size.max(1),
            streams: Vec::new(),
            by_name: HashMap::new(),
            include: include
                .map(|c| c.0.iter().map(|p| wildmatch::WildMatch::new(p)).collect())
                .unwrap_or_default(),
            prefix: prefix.unwrap_or("").to_string(),
            run: Run::default(),
            rejects: ctx.rejects()?,
            counts: Counts::default(),
            warned_unknown: false,
        };
        if dialect == Dialect::Ndjson {
            r.streams.push(Stream {
                name: tbl.name.clone(),
                table: tbl.name.clone(),
                fmt: JsonFormat::new(&plain(), &tbl.columns),
                skip: false,
                records: 0,
            });
        }
        Ok(r)
    }

    /// Rows read by stream, for the task log.
    pub fn per_stream(&self) -> serde_json::Map<String, serde_json::Value> {
        self.streams
            .iter()
            .map(|s| (s.name.clone(), s.records.into()))
            .collect()
    }

    /// One line of stdout (`n`: its number, from 1). Returns true when a checkpoint
    /// was recorded.
    ///
    /// # Errors
    /// A bad line under `on_bad_record: fail`, a `BATCH` message, two streams of one
    /// table name; the pipeline stopped.
    pub async fn line(
        &mut self,
        ctx: &TaskCtx,
        line: &str,
        n: u64,
        out: &mut Emitter,
    ) -> Result<bool, BoxError> {
        self.counts.lines += 1;
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            return Ok(false);
        }
        if self.dialect == Dialect::Ndjson {
            self.push_record(0, line, n, out).await?;
            return Ok(false);
        }
        let msg: Message<'_> = match serde_json::from_str(line) {
            Ok(m) => m,
            Err(e) => {
                self.bad(
                    line,
                    n,
                    format!("not a Singer message (one JSON object with a `type` per line): {e}"),
                )?;
                return Ok(false);
            }
        };
        match msg.kind.as_ref() {
            "RECORD" => {
                let (Some(stream), Some(record)) = (&msg.stream, msg.record) else {
                    self.bad(line, n, "a RECORD message needs `stream` and `record`".into())?;
                    return Ok(false);
                };
                let Some(&i) = self.by_name.get(stream.as_ref()) else {
                    self.bad(
                        line,
                        n,
                        format!("a RECORD of stream `{stream}` before its SCHEMA message (the program must declare a stream first)"),
                    )?;
                    return Ok(false);
                };
                if self.streams[i].skip {
                    self.counts.dropped += 1;
                    return Ok(false);
                }
                self.push_record(i, record.get(), n, out).await?;
                Ok(false)
            }
            "SCHEMA" => {
                let (Some(stream), Some(schema)) = (&msg.stream, msg.schema) else {
                    self.bad(line, n, "a SCHEMA message needs `stream` and `schema`".into())?;
                    return Ok(false);
                };
                let stream = stream.to_string();
                let keys = msg.key_properties.unwrap_or_default();
                self.schema(ctx, &stream, schema, keys, line, n, out).await?;
                Ok(false)
            }
            "STATE" => {
                let Some(value) = msg.value else {
                    self.bad(line, n, "a STATE message needs `value`".into())?;
                    return Ok(false);
                };
                let value: serde_json::Value = serde_json::from_str(value.get())
                    .map_err(|e| anchovy_core::Error::json(format!("{}:{n}", self.label), e))?;
                self.flush(out).await?;
                out.checkpoint(&self.entry, serde_json::json!({ STATE_FIELD: value }))
                    .await?;
                self.counts.states += 1;
                Ok(true)
            }
            "ACTIVATE_VERSION" => {
                self.counts.activate_version += 1;
                Ok(false)
            }
            "BATCH" => Err(PluginError::Data {
                location: format!("{}:{n}", self.label),
                message: "a BATCH message (records in files elsewhere) is not supported: turn off `batch_config` in the tap's configuration so that it writes RECORD messages".into(),
            }
            .into()),
            other => {
                self.counts.unknown += 1;
                if !self.warned_unknown {
                    self.warned_unknown = true;
                    tracing::warn!(table = %self.entry, at = %format!("{}:{n}", self.label), "a message of type `{other}` is not in the Singer specification: ignored (and any more like it)");
                }
                Ok(false)
            }
        }
    }

    /// A SCHEMA message: declares (or changes) a stream and its table.
    #[allow(clippy::too_many_arguments)]
    async fn schema(
        &mut self,
        ctx: &TaskCtx,
        stream: &str,
        schema: &RawValue,
        keys: Vec<String>,
        line: &str,
        n: u64,
        out: &mut Emitter,
    ) -> Result<(), BoxError> {
        let schema: serde_json::Value = match serde_json::from_str(schema.get()) {
            Ok(s) => s,
            Err(e) => return self.bad(line, n, format!("the SCHEMA is not JSON: {e}")),
        };
        let columns = columns_of(&schema);
        for k in &keys {
            if !columns.contains_key(k) && schema.get("properties").is_some() {
                tracing::warn!(table = %self.entry, stream, "key property `{k}` is not among the schema's properties");
            }
        }
        let table = format!("{}{}", self.prefix, table_name(stream));
        if let Some(other) = self
            .streams
            .iter()
            .find(|s| s.table == table && s.name != stream)
        {
            return Err(PluginError::Data {
                location: format!("{}:{n}", self.label),
                message: format!(
                    "streams `{}` and `{stream}` both become table `{table}`; set `table_prefix` or leave one out with `streams:`",
                    other.name
                ),
            }
            .into());
        }
        let skip = !self.include.is_empty() && !self.include.iter().any(|p| p.matches(stream));
        // Records of the stream read so far keep the types they were read with.
        if let Some(&i) = self.by_name.get(stream)
            && self.run.stream == i
        {
            self.flush_run(out).await?;
        }
        self.counts.schemas += 1;
        if !skip {
            let mut t = Tbl::named(table.clone());
            t.columns = columns.clone();
            t.unique_by = ColSelect(keys);
            ctx.declare(t);
        }
        let s = Stream {
            name: stream.to_string(),
            table,
            fmt: JsonFormat::new(&plain(), &columns),
            skip,
            records: 0,
        };
        match self.by_name.get(stream) {
            Some(&i) => {
                let records = self.streams[i].records;
                self.streams[i] = Stream { records, ..s };
            }
            None => {
                self.by_name.insert(stream.to_string(), self.streams.len());
                self.streams.push(s);
            }
        }
        Ok(())
    }

    /// A record of stream `i`: joins the run (read once the run is whole).
    async fn push_record(
        &mut self,
        i: usize,
        text: &str,
        n: u64,
        out: &mut Emitter,
    ) -> Result<(), BoxError> {
        if !self.run.spans.is_empty()
            && (self.run.stream != i || self.run.spans.len() >= self.batch_size)
        {
            self.flush_run(out).await?;
        }
        self.run.stream = i;
        let start = self.run.text.len();
        self.run.text.push_str(text);
        self.run.spans.push((start, self.run.text.len(), n));
        Ok(())
    }

    /// Reads the waiting run into rows and sends them (with any rejected records).
    async fn flush_run(&mut self, out: &mut Emitter) -> Result<(), BoxError> {
        let mut batches: Vec<Batch> = Vec::new();
        if !self.run.spans.is_empty() {
            let s = &mut self.streams[self.run.stream];
            let mut emit = |b: Batch| {
                batches.push(b);
                true
            };
            let mut recs = Records::new(
                &s.fmt,
                &self.label,
                &s.table,
                self.batch_size,
                &mut self.rejects,
                &mut emit,
            );
            for &(a, b, n) in &self.run.spans {
                recs.record(&self.run.text[a..b], n, &[])?;
            }
            recs.flush();
            let taken = recs.count();
            s.records += taken;
            self.counts.records += self.run.spans.len() as u64;
            self.run.text.clear();
            self.run.spans.clear();
        }
        if let Some(b) = self.rejects.take_batch() {
            batches.push(b);
        }
        for b in batches {
            out.send_batch(b).await?;
        }
        Ok(())
    }

    /// Sends every row read so far on.
    ///
    /// # Errors
    /// The pipeline stopped.
    pub async fn flush(&mut self, out: &mut Emitter) -> Result<(), BoxError> {
        self.flush_run(out).await?;
        out.flush().await?;
        Ok(())
    }

    /// A line that is no row: fails, is skipped or quarantined (`on_bad_record`).
    fn bad(&mut self, line: &str, n: u64, reason: String) -> Result<(), BoxError> {
        self.rejects
            .reject(Reject {
                source: &self.label,
                line: n,
                reason,
                raw: line.to_string(),
                header: None,
                format: "json",
            })
            .map_err(|(location, message)| PluginError::Data { location, message })?;
        Ok(())
    }

    /// Records rejected so far.
    pub fn rejected(&self) -> u64 {
        self.rejects.count
    }
}

fn plain() -> JsonOptions {
    JsonOptions {
        records: None,
        provenance: false,
    }
}

/// Selects the streams of a discovered catalog that `include` matches (by
/// `tap_stream_id` or `stream`; all when `None`), every property of them, and
/// deselects the others: what Singer taps read. Returns the selected streams' ids.
pub fn select(catalog: &mut serde_json::Value, include: Option<&ColSelect>) -> Vec<String> {
    let pats: Vec<wildmatch::WildMatch> = include
        .map(|c| c.0.iter().map(|p| wildmatch::WildMatch::new(p)).collect())
        .unwrap_or_default();
    let mut picked = Vec::new();
    let Some(streams) = catalog.get_mut("streams").and_then(|s| s.as_array_mut()) else {
        return picked;
    };
    for s in streams {
        let id = s
            .get("tap_stream_id")
            .or_else(|| s.get("stream"))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let name = s
            .get("stream")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let on = pats.is_empty() || pats.iter().any(|p| p.matches(&id) || p.matches(&name));
        if let Some(md) = s.get_mut("metadata").and_then(|m| m.as_array_mut()) {
            for e in md {
                let top = e
                    .get("breadcrumb")
                    .and_then(|b| b.as_array())
                    .is_some_and(|b| b.is_empty());
                if let Some(m) = e.get_mut("metadata").and_then(|m| m.as_object_mut())
                    && (top || on)
                {
                    m.insert("selected".into(), on.into());
                }
            }
        }
        // Taps of the older convention read `selected` off the stream's schema.
        if let Some(schema) = s.get_mut("schema").and_then(|x| x.as_object_mut()) {
            schema.insert("selected".into(), on.into());
        }
        if on {
            picked.push(id);
        }
    }
    picked
}

/// A catalog stream's key: its `key_properties`, or its top-level metadata's
/// `table-key-properties`.
pub fn key_properties(stream: &serde_json::Value) -> Vec<String> {
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    };
    if let Some(k) = stream.get("key_properties") {
        return names(k);
    }
    stream
        .get("metadata")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
        .find(|e| {
            e.get("breadcrumb")
                .and_then(|b| b.as_array())
                .is_some_and(|b| b.is_empty())
        })
        .and_then(|e| e.get("metadata")?.get("table-key-properties"))
        .map(names)
        .unwrap_or_default()
}

/// A stream's table name: characters other than letters, digits and `_` become `_`
/// (`public-users` -> `public_users`).
pub fn table_name(stream: &str) -> String {
    let t: String = stream
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() { "_".into() } else { t }
}

/// The column types of a stream's JSON Schema (`properties`); a property whose type
/// says nothing certain is left to inference.
pub fn columns_of(schema: &serde_json::Value) -> BTreeMap<String, ColType> {
    let mut out = BTreeMap::new();
    if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
        for (k, v) in props {
            if let Some(t) = col_type(v) {
                out.insert(k.clone(), t);
            }
        }
    }
    out
}

/// A property's column type: `integer` int, `number` decimal (digit for digit),
/// `boolean` bool, `string` str (or date-time/date/time by `format`), `object` and
/// `array` object; a union (`["null", "integer"]`, `anyOf`) is its types widened,
/// `null` left out.
pub fn col_type(p: &serde_json::Value) -> Option<ColType> {
    let mut found: Option<ColType> = None;
    let mut see = |t: ColType| {
        found = Some(match found {
            None => t,
            Some(f) => f.widen(t),
        });
    };
    for alt in ["anyOf", "oneOf"] {
        if let Some(subs) = p.get(alt).and_then(|a| a.as_array()) {
            for s in subs {
                if let Some(t) = col_type(s) {
                    see(t);
                }
            }
        }
    }
    let format = p.get("format").and_then(|f| f.as_str());
    let names: Vec<&str> = match p.get("type") {
        Some(serde_json::Value::String(s)) => vec![s.as_str()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_str()).collect(),
        _ => Vec::new(),
    };
    for name in names {
        let t = match name {
            "null" => continue,
            "integer" => ColType::Int,
            "number" => ColType::Decimal,
            "boolean" => ColType::Bool,
            "object" | "array" => ColType::Object,
            "string" => match format {
                Some("date-time") => ColType::DateTime,
                Some("date") => ColType::Date,
                Some("time") => ColType::Time,
                _ => ColType::Str,
            },
            _ => ColType::Str,
        };
        see(t);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_schema_types_become_column_types() {
        let s = json!({"properties": {
            "id": {"type": ["null", "integer"]},
            "price": {"type": "number"},
            "ok": {"type": "boolean"},
            "at": {"type": ["string", "null"], "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "meta": {"type": "object"},
            "any": {},
            "mixed": {"anyOf": [{"type": "integer"}, {"type": "number"}]},
            "text_or_int": {"type": ["string", "integer"]},
        }});
        let c = columns_of(&s);
        assert_eq!(c["id"], ColType::Int);
        assert_eq!(c["price"], ColType::Decimal);
        assert_eq!(c["ok"], ColType::Bool);
        assert_eq!(c["at"], ColType::DateTime);
        assert_eq!(c["day"], ColType::Date);
        assert_eq!(c["tags"], ColType::Object);
        assert_eq!(c["meta"], ColType::Object);
        assert!(!c.contains_key("any"));
        assert_eq!(c["mixed"], ColType::Decimal);
        assert_eq!(c["text_or_int"], ColType::Str);
    }

    #[test]
    fn discovery_selects_the_streams_asked_for_and_every_property() {
        let mut c = json!({"streams": [
            {"tap_stream_id": "public-items", "stream": "items", "schema": {"properties": {}},
             "metadata": [{"breadcrumb": [], "metadata": {"inclusion": "available"}},
                          {"breadcrumb": ["properties", "n"], "metadata": {"inclusion": "available"}}]},
            {"tap_stream_id": "public-other", "stream": "other", "schema": {},
             "metadata": [{"breadcrumb": [], "metadata": {"selected": true}}]},
        ]});
        let picked = select(&mut c, Some(&ColSelect(vec!["public-it*".into()])));
        assert_eq!(picked, ["public-items"]);
        assert_eq!(c["streams"][0]["metadata"][0]["metadata"]["selected"], true);
        assert_eq!(c["streams"][0]["metadata"][1]["metadata"]["selected"], true);
        assert_eq!(
            c["streams"][1]["metadata"][0]["metadata"]["selected"],
            false
        );
        assert_eq!(select(&mut c, None).len(), 2);
    }

    #[test]
    fn stream_names_become_safe_table_names() {
        assert_eq!(table_name("public-users"), "public_users");
        assert_eq!(table_name("a.b c"), "a_b_c");
        assert_eq!(table_name("orders_2024"), "orders_2024");
        assert_eq!(table_name(""), "_");
    }
}
