//! The typed NDJSON codec of the datastore's `ndjson.gz` data files (see the
//! annotation table in [`super`]).

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::{NaiveDate, NaiveTime};

use super::*;
use crate::error::{Error, Result};

/// Appends one row as a JSON line (with `\n`) to `out`.
pub fn encode_row(schema: &Schema, row: &[Value], out: &mut Vec<u8>) {
    let mut s = String::with_capacity(64 + row.len() * 16);
    encode_row_into(schema, row, &mut s);
    out.extend_from_slice(s.as_bytes());
}

/// Appends one row as a JSON line (with `\n`) to a reusable text buffer (no allocation
/// per row beyond the buffer's growth).
pub fn encode_row_into(schema: &Schema, row: &[Value], s: &mut String) {
    RowEncoder::default().encode(schema, row, s);
}

/// Encodes rows of one stream, remembering the `_types` suffix of the previous row: in
/// a typed stream every row carries the same annotations, so they are written once per
/// change, not escaped again for every row.
#[derive(Debug, Default)]
pub struct RowEncoder {
    types: Vec<(usize, &'static str)>,
    last_types: Vec<(usize, &'static str)>,
    suffix: String,
    /// Rows as the original tool writes and reads them ([`RowEncoder::original`]).
    original: bool,
}

impl RowEncoder {
    /// An encoder of rows as the original tool writes them, for its uploader to read:
    /// `_types` as one space-separated string on every row (`""` for none), only its
    /// codes `D`, `DT` and `B`; a decimal as a JSON number with its digits (the
    /// original reads it as a float), a time and a NaN/infinite float as plain text. A
    /// column whose name holds a space or `@` cannot be annotated in that string: its
    /// dates and bytes arrive as text.
    pub fn original() -> RowEncoder {
        RowEncoder {
            original: true,
            ..RowEncoder::default()
        }
    }

    /// Appends one row as a JSON line (with `\n`) to `s`.
    pub fn encode(&mut self, schema: &Schema, row: &[Value], s: &mut String) {
        s.push('{');
        self.types.clear();
        for (i, key) in schema.json_keys.iter().enumerate() {
            let v = row.get(i).unwrap_or(&Value::Null);
            if i > 0 {
                s.push(',');
            }
            s.push_str(key);
            if self.original {
                match v {
                    // A whole number past 64 bits is text: the original's JSON reader
                    // (orjson) refuses such integers.
                    Value::Decimal(d) if !d.contains('.') && d.parse::<i64>().is_err() => {
                        write_json_str(s, d)
                    }
                    Value::Decimal(d) => s.push_str(d),
                    Value::Date(_)
                    | Value::DateTime(_)
                    | Value::DateTimeTz(_)
                    | Value::Bytes(_) => {
                        let name = &schema.names()[i];
                        if !name.contains([' ', '@']) {
                            self.types.push((i, v.annotation().unwrap_or_default()));
                        }
                        write_json_value(s, v);
                    }
                    _ => write_json_value(s, v),
                }
                continue;
            }
            if let Some(code) = v.annotation() {
                self.types.push((i, code));
            }
            write_json_value(s, v);
        }
        if self.original {
            self.original_suffix(schema, s);
        } else if !self.types.is_empty() {
            if self.types != self.last_types {
                self.suffix.clear();
                if !schema.is_empty() {
                    self.suffix.push(',');
                }
                write_json_str(&mut self.suffix, TYPES_FIELD);
                self.suffix.push_str(":[");
                for (n, (i, code)) in self.types.iter().enumerate() {
                    if n > 0 {
                        self.suffix.push(',');
                    }
                    let mut entry = String::with_capacity(schema.names()[*i].len() + 3);
                    entry.push_str(&schema.names()[*i]);
                    entry.push('@');
                    entry.push_str(code);
                    write_json_str(&mut self.suffix, &entry);
                }
                self.suffix.push(']');
                std::mem::swap(&mut self.types, &mut self.last_types);
                self.types.clone_from(&self.last_types);
            }
            s.push_str(&self.suffix);
        }
        s.push_str("}\n");
    }

    /// The original's `"_types":"a@D b@DT"` (on every row), rebuilt only when the
    /// annotated columns change.
    fn original_suffix(&mut self, schema: &Schema, s: &mut String) {
        if self.types != self.last_types || self.suffix.is_empty() {
            self.suffix.clear();
            if !schema.is_empty() {
                self.suffix.push(',');
            }
            write_json_str(&mut self.suffix, TYPES_FIELD);
            self.suffix.push(':');
            let mut text = String::new();
            for (n, (i, code)) in self.types.iter().enumerate() {
                if n > 0 {
                    text.push(' ');
                }
                text.push_str(&schema.names()[*i]);
                text.push('@');
                text.push_str(code);
            }
            write_json_str(&mut self.suffix, &text);
            std::mem::swap(&mut self.types, &mut self.last_types);
            self.types.clone_from(&self.last_types);
        }
        s.push_str(&self.suffix);
    }
}

/// Writes a value's JSON form (annotated values as strings).
pub(super) fn write_json_value(s: &mut String, v: &Value) {
    match v {
        Value::Null => s.push_str("null"),
        Value::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => s.push_str(itoa::Buffer::new().format(*i)),
        Value::Float(f) if f.is_finite() => {
            if let Some(n) = serde_json::Number::from_f64(*f) {
                let _ = write!(s, "{n}");
            }
        }
        Value::String(t) | Value::Decimal(t) => write_json_str(s, t),
        Value::Json(j) => s.push_str(j.as_str()),
        Value::Date(_) | Value::DateTime(_) | Value::DateTimeTz(_) => {
            s.push('"');
            if write_temporal(s, v) {
                s.push('"');
            } else {
                s.pop();
                write_json_str(s, &v.text());
            }
        }
        other => write_json_str(s, &other.text()),
    }
}

/// The text form ([`Value::text`]) of a date, a datetime or a datetime with offset
/// (`to_rfc3339_opts(SecondsFormat::AutoSi, true)`), unquoted, without allocating.
/// False (nothing written) for other values and what the fast form does not cover:
/// years outside 0..=9999, leap seconds, offsets with seconds.
pub(super) fn write_temporal(s: &mut String, v: &Value) -> bool {
    match v {
        Value::Date(d) if (0..=9999).contains(&d.year()) => write_date(s, *d),
        Value::DateTime(dt)
            if (0..=9999).contains(&dt.year()) && dt.nanosecond() < 1_000_000_000 =>
        {
            write_date(s, dt.date());
            s.push('T');
            write_time(s, dt.time());
        }
        Value::DateTimeTz(dt) => {
            let off = dt.offset().local_minus_utc();
            let local = dt.naive_local();
            if !(0..=9999).contains(&local.year())
                || local.nanosecond() >= 1_000_000_000
                || off % 60 != 0
            {
                return false;
            }
            write_date(s, local.date());
            s.push('T');
            write_time(s, local.time());
            if off == 0 {
                s.push('Z');
            } else {
                let m = off.unsigned_abs() / 60;
                let mut b = [0u8; 6];
                b[0] = if off < 0 { b'-' } else { b'+' };
                put_digits(&mut b[1..3], m / 60);
                b[3] = b':';
                put_digits(&mut b[4..6], m % 60);
                s.push_str(std::str::from_utf8(&b).unwrap_or_default());
            }
        }
        _ => return false,
    }
    true
}

/// `YYYY-MM-DD` for years 0..=9999, as chrono's `%Y-%m-%d` writes them.
fn write_date(s: &mut String, d: NaiveDate) {
    let mut b = [0u8; 10];
    put_digits(&mut b[0..4], d.year() as u32);
    b[4] = b'-';
    put_digits(&mut b[5..7], d.month());
    b[7] = b'-';
    put_digits(&mut b[8..10], d.day());
    s.push_str(std::str::from_utf8(&b).unwrap_or_default());
}

/// `HH:MM:SS[.fff|.ffffff|.fffffffff]`, as chrono's `%H:%M:%S%.f` writes it (no
/// fraction when zero; 3, 6 or 9 digits otherwise). Leap seconds are not handled here.
fn write_time(s: &mut String, t: NaiveTime) {
    let mut b = [0u8; 18];
    put_digits(&mut b[0..2], t.hour());
    b[2] = b':';
    put_digits(&mut b[3..5], t.minute());
    b[5] = b':';
    put_digits(&mut b[6..8], t.second());
    let ns = t.nanosecond();
    let n = if ns == 0 {
        8
    } else {
        b[8] = b'.';
        if ns.is_multiple_of(1_000_000) {
            put_digits(&mut b[9..12], ns / 1_000_000);
            12
        } else if ns.is_multiple_of(1_000) {
            put_digits(&mut b[9..15], ns / 1_000);
            15
        } else {
            put_digits(&mut b[9..18], ns);
            18
        }
    };
    s.push_str(std::str::from_utf8(&b[..n]).unwrap_or_default());
}

/// Writes `v` as exactly `out.len()` decimal digits, zero-padded.
fn put_digits(out: &mut [u8], mut v: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Appends `text` as a JSON string: runs without escapes are copied whole.
pub(super) fn write_json_str(s: &mut String, text: &str) {
    s.push('"');
    let bytes = text.as_bytes();
    // Most text has nothing to escape: one branch-free pass (vectorized) says so.
    let plain = bytes
        .iter()
        .fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        s.push_str(text);
        s.push('"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // Escaped bytes are ASCII, so `i` is a char boundary.
        s.push_str(&text[start..i]);
        if esc.is_empty() {
            let _ = write!(s, "\\u{:04x}", b);
        } else {
            s.push_str(esc);
        }
        start = i + 1;
    }
    s.push_str(&text[start..]);
    s.push('"');
}

/// The general decoding of one line: its members kept as written until its `_types`
/// are known, then each converted once with its annotation.
fn decode_row_types(
    line: &str,
    builder: &mut BatchBuilder,
    location: &dyn Fn() -> String,
) -> Result<(Vec<String>, Option<String>)> {
    let mut members: Vec<(Cow<'_, str>, Member<'_>)> = Vec::with_capacity(builder.schema.len() + 1);
    let mut types: Option<Member<'_>> = None;
    read_object(line, |k, m| {
        if k == TYPES_FIELD {
            types = Some(m);
        } else {
            members.push((k, m));
        }
        Ok::<(), ()>(())
    })
    .map_err(|e| match e {
        ReadError::Syntax(m) => Error::data(location(), format!("not a JSON object: {m}")),
        ReadError::Member(()) => Error::data(location(), "not a JSON object"),
    })?;
    let text = match &types {
        Some(Member::Str(t)) => Some(t.to_string()),
        _ => None,
    };
    let types: Vec<String> = match types {
        None | Some(Member::Null) => Vec::new(),
        Some(Member::Nested(t)) => serde_json::from_str(t).map_err(|e| {
            Error::data(
                location(),
                format!("`{TYPES_FIELD}` is not an array of `column@CODE` strings: {e}"),
            )
        })?,
        Some(Member::Str(t)) => legacy_types(&t).map(String::from).collect(),
        Some(_) => {
            return Err(Error::data(
                location(),
                format!(
                    "`{TYPES_FIELD}` is neither an array of `column@CODE` strings nor the original tool's space-separated text"
                ),
            ));
        }
    };
    let mut row: Row = Vec::with_capacity(builder.schema.len());
    let mut next = 0;
    for (k, m) in members {
        // The first entry for a column wins.
        let code = types.iter().find_map(|t| {
            let (c, code) = t.rsplit_once('@')?;
            (c == k.as_ref()).then_some(code)
        });
        let v = match code {
            None => Value::from(m),
            Some(code) => annotated(m, code).ok_or_else(|| {
                Error::data(
                    location(),
                    format!("column `{k}`: not a valid @{code} value"),
                )
            })?,
        };
        let i = builder.column(&k, next);
        next = i + 1;
        put(&mut row, i, v);
    }
    builder.rows.push(row);
    Ok((types, text))
}

/// The entries of `_types` in the original tool's form, one string of
/// space-separated `column@CODE` entries (`"born@D ts@DT"`, `""` for none). As the
/// original reads it, an entry that does not split at `@` into exactly two parts is
/// ignored: a column whose name holds a space or `@` cannot be annotated in this form.
pub(crate) fn legacy_types(text: &str) -> impl Iterator<Item = &str> {
    text.split(' ').filter(|e| e.split('@').count() == 2)
}

/// A member of a column annotated with `code`: null, the code's text form, or (older
/// writers put decimals as JSON numbers) a number under `N`, digit for digit.
fn annotated(m: Member<'_>, code: &str) -> Option<Value> {
    match m {
        Member::Null => Some(Value::Null),
        Member::Str(text) => parse_typed_text(&text, code),
        Member::Number(n) if code == "N" => canonical_decimal(n).map(Value::Decimal),
        _ => None,
    }
}

/// Decodes one JSON line into `builder` (columns are added as they appear).
///
/// # Errors
/// [`Error::Data`] naming `location` when the line is not a JSON object or an
/// annotated value does not parse as its type.
pub fn decode_row(
    line: &str,
    builder: &mut BatchBuilder,
    location: &dyn Fn() -> String,
) -> Result<()> {
    decode_row_types(line, builder, location).map(drop)
}

/// Decodes the lines of one stream, remembering the last line's `_types`: in a typed
/// stream every line carries the same annotations, so once they are known each line is
/// read in one pass (annotated values typed straight from the JSON text, nothing kept
/// aside). A line whose `_types` text differs, or whose value does not fit the
/// annotation expected, is decoded the general way ([`decode_row`]), which also gives
/// its error: both ways give the same row for every line.
#[derive(Debug, Default)]
pub struct RowDecoder {
    /// The `_types` text the codes below are for: an array's JSON text, or the original
    /// tool's text form after a space (`""`: lines without `_types`;
    /// `None`: nothing known yet).
    types: Option<String>,
    /// Lines decoded in one pass (for tests: the fast way is taken).
    pub(super) fast_lines: u64,
    /// The annotation code of each column of the builder's schema.
    codes: Vec<Option<&'static str>>,
}

impl RowDecoder {
    /// Decodes one JSON line into `builder`, as [`decode_row`] does.
    ///
    /// # Errors
    /// As [`decode_row`].
    pub fn decode(
        &mut self,
        line: &str,
        builder: &mut BatchBuilder,
        location: &dyn Fn() -> String,
    ) -> Result<()> {
        if let Some(expected) = &self.types {
            let mut row: Row = Vec::with_capacity(builder.schema.len());
            let mut types: Option<Member<'_>> = None;
            let mut next = 0;
            let read = read_object(line, |k, m| {
                if k == TYPES_FIELD {
                    types = Some(m);
                    return Ok::<(), ()>(());
                }
                let i = builder.column(&k, next);
                next = i + 1;
                let v = match self.codes.get(i).copied().flatten() {
                    None => Value::from(m),
                    Some(code) => annotated(m, code).ok_or(())?,
                };
                put(&mut row, i, v);
                Ok(())
            });
            // The array form is remembered as its JSON text, the original's text
            // form with a leading space (no JSON array starts so); both empty: none.
            let same = match &types {
                None | Some(Member::Null) => expected.is_empty(),
                Some(Member::Nested(t)) => t == expected,
                Some(Member::Str(t)) if t.is_empty() => expected.is_empty(),
                Some(Member::Str(t)) => expected.strip_prefix(' ') == Some(t.as_ref()),
                Some(_) => false,
            };
            if read.is_ok() && same {
                builder.rows.push(row);
                self.fast_lines += 1;
                return Ok(());
            }
        }
        let (types, text) = decode_row_types(line, builder, location)?;
        self.learn(&types, text.as_deref(), &builder.schema);
        Ok(())
    }

    /// Remembers a line's annotations for the lines after it (none: `""`, the lines
    /// of an untyped stream; nothing is remembered when a code is unknown or names a
    /// column the schema does not have yet).
    fn learn(&mut self, types: &[String], text: Option<&str>, schema: &Schema) {
        self.types = None;
        if types.is_empty() {
            self.codes.clear();
            self.types = Some(String::new());
            return;
        }
        let mut codes = vec![None; schema.len()];
        for t in types {
            let Some((col, code)) = t.rsplit_once('@') else {
                return;
            };
            let Some(code) = ["D", "DT", "T", "B", "N", "F"]
                .into_iter()
                .find(|c| *c == code)
            else {
                return;
            };
            let Some(i) = schema.index_of(col) else {
                return;
            };
            // The first entry for a column wins, as in `decode_row`.
            codes[i].get_or_insert(code);
        }
        self.codes = codes;
        self.types = match text {
            Some(t) => Some(format!(" {t}")),
            None => serde_json::to_string(types).ok(),
        };
    }
}
