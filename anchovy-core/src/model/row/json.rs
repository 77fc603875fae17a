//! The one reader of JSON records: a single pass over an object's text, member by
//! member, with nothing built but what the caller keeps.
//!
//! Every JSON record anchovies reads goes through [`read_object`]: the datastore's
//! NDJSON lines, NDJSON and array files of the file downloaders, the records of REST
//! pages. It checks the whole JSON grammar (RFC 8259: strings with their escapes and no
//! raw control characters, the number grammar, literals, nesting up to
//! [`MAX_DEPTH`] levels) and hands each member to a callback as written:
//! names and strings borrowed from the text unless they have escapes, numbers as their
//! text (so no digit is lost before the caller decides what a number becomes), nested
//! arrays and objects as their text ([`Json`] keeps them so). Errors read like
//! serde_json's: `expected `:` at line 1 column 7`.

use std::borrow::Cow;
use std::fmt;

/// The deepest nesting read (the record's own object counts as one level), as
/// serde_json's recursion limit: deeper input is an error, not a stack overflow.
pub const MAX_DEPTH: usize = 128;

/// A member's value as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Member<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number's text, checked against the JSON number grammar.
    Number(&'a str),
    /// A string, its escapes decoded (borrowed when it has none).
    Str(Cow<'a, str>),
    /// A nested array or object: its text as written (whitespace included), checked.
    Nested(&'a str),
}

/// Why an object could not be read: its text is not JSON (or not an object), or the
/// callback refused a member.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadError<E> {
    /// The text, with the line and column: `expected value at line 1 column 9`.
    Syntax(String),
    /// What the callback returned.
    Member(E),
}

/// A syntax error at a byte offset of the text.
struct Syntax {
    what: &'static str,
    at: usize,
}

impl Syntax {
    /// The message with serde_json's `at line L column C` (1-based; columns count
    /// bytes of the line).
    fn message(&self, text: &str) -> String {
        let at = self.at.min(text.len());
        let before = &text.as_bytes()[..at];
        let line = 1 + memchr::memchr_iter(b'\n', before).count();
        let column = at - memchr::memrchr(b'\n', before).map_or(0, |i| i + 1) + 1;
        format!("{} at line {line} column {column}", self.what)
    }
}

/// Reads the JSON object `text` (whitespace around it allowed), calling `member` with
/// each member's name and value in the order written (duplicates included). The
/// callback may see members of an object whose text turns out bad further on: keep
/// what it builds until this returns `Ok`.
///
/// # Errors
/// [`ReadError::Syntax`] when `text` is not one JSON object (a value of another type
/// says which: `expected a JSON object, found an array`); [`ReadError::Member`] with
/// the callback's error, which stops the read.
pub fn read_object<'a, E>(
    text: &'a str,
    member: impl FnMut(Cow<'a, str>, Member<'a>) -> Result<(), E>,
) -> Result<(), ReadError<E>> {
    let mut c = Cursor::new(text);
    c.ws();
    if c.peek() != Some(b'{') {
        let found = match c.peek() {
            Some(b'[') => "an array",
            Some(b'"') => "a string",
            Some(b'-' | b'0'..=b'9') => "a number",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            Some(_) => return Err(ReadError::Syntax(c.err("expected value").message(text))),
            None => {
                return Err(ReadError::Syntax(
                    c.err("EOF while parsing a value").message(text),
                ));
            }
        };
        // Not an object, but say so only of valid JSON.
        c.value()
            .and_then(|_| c.end())
            .map_err(|e| ReadError::Syntax(e.message(text)))?;
        return Err(ReadError::Syntax(format!(
            "expected a JSON object, found {found}"
        )));
    }
    c.object(member)?;
    c.end().map_err(|e| ReadError::Syntax(e.message(text)))
}

/// [`read_object`] of the object `text` starts with (at its `{`), whatever follows
/// it: returns the object's length in bytes.
///
/// # Errors
/// As [`read_object`]; an object cut short by the end of `text` is an `EOF while
/// parsing ...` syntax error.
pub fn read_object_at<'a, E>(
    text: &'a str,
    member: impl FnMut(Cow<'a, str>, Member<'a>) -> Result<(), E>,
) -> Result<usize, ReadError<E>> {
    let mut c = Cursor::new(text);
    if c.peek() != Some(b'{') {
        return Err(ReadError::Syntax(c.err("expected `{`").message(text)));
    }
    c.object(member)?;
    Ok(c.i)
}

/// Checks that `text` is one JSON value (whitespace around it allowed).
///
/// # Errors
/// The syntax error, with its line and column.
pub fn check_value(text: &str) -> Result<(), String> {
    let mut c = Cursor::new(text);
    c.ws();
    c.value().and_then(|_| c.end()).map_err(|e| e.message(text))
}

/// A checked JSON value's text without the whitespace between its tokens (strings
/// untouched): the compact form, borrowed when it is already compact.
pub fn compact(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    if !b.iter().any(|c| matches!(c, b' ' | b'\n' | b'\t' | b'\r')) {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\n' | b'\t' | b'\r' => i += 1,
            b'"' => {
                let end = string_end(b, i + 1);
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    // Only ASCII whitespace was taken out between tokens: still UTF-8.
    Cow::Owned(String::from_utf8(out).unwrap_or_default())
}

/// The index after the closing quote of the string that starts before `i` (the text
/// is checked JSON; the end of the text when it is not closed).
fn string_end(b: &[u8], mut i: usize) -> usize {
    loop {
        match memchr::memchr2(b'"', b'\\', b.get(i..).unwrap_or(&[])) {
            Some(k) if b[i + k] == b'\\' => i += k + 2,
            Some(k) => return i + k + 1,
            None => return b.len(),
        }
    }
}

/// A position in the text being read.
struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Cursor<'a> {
        Cursor {
            s,
            b: s.as_bytes(),
            i: 0,
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn err(&self, what: &'static str) -> Syntax {
        Syntax { what, at: self.i }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// An object's members (at its `{`), each handed to `member`.
    #[inline]
    fn object<E>(
        &mut self,
        mut member: impl FnMut(Cow<'a, str>, Member<'a>) -> Result<(), E>,
    ) -> Result<(), ReadError<E>> {
        let text = self.s;
        let syntax = |e: Syntax| ReadError::Syntax(e.message(text));
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            let key = self.key().map_err(syntax)?;
            let value = self.value().map_err(syntax)?;
            member(key, value).map_err(ReadError::Member)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(_) => return Err(syntax(self.err("expected `,` or `}`"))),
                None => return Err(syntax(self.err("EOF while parsing an object"))),
            }
        }
    }

    /// Only whitespace is left.
    fn end(&mut self) -> Result<(), Syntax> {
        self.ws();
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.err("trailing characters")),
        }
    }

    /// A member's name and the `:` after it (at the name's opening quote).
    #[inline]
    fn key(&mut self) -> Result<Cow<'a, str>, Syntax> {
        match self.peek() {
            Some(b'"') => self.i += 1,
            Some(b'}') => return Err(self.err("trailing comma")),
            Some(_) => return Err(self.err("key must be a string")),
            None => return Err(self.err("EOF while parsing an object")),
        }
        let key = self.string()?;
        self.ws();
        match self.peek() {
            Some(b':') => self.i += 1,
            Some(_) => return Err(self.err("expected `:`")),
            None => return Err(self.err("EOF while parsing an object")),
        }
        self.ws();
        Ok(key)
    }

    /// One value (at its first byte).
    #[inline]
    fn value(&mut self) -> Result<Member<'a>, Syntax> {
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                self.string().map(Member::Str)
            }
            Some(b'-' | b'0'..=b'9') => self.number().map(Member::Number),
            Some(b'{' | b'[') => {
                let start = self.i;
                self.nested()?;
                Ok(Member::Nested(&self.s[start..self.i]))
            }
            Some(b'n') => self.literal(b"null").map(|()| Member::Null),
            Some(b't') => self.literal(b"true").map(|()| Member::Bool(true)),
            Some(b'f') => self.literal(b"false").map(|()| Member::Bool(false)),
            Some(_) => Err(self.err("expected value")),
            None => Err(self.err("EOF while parsing a value")),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Syntax> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else if word.starts_with(&self.b[self.i..]) {
            self.i = self.b.len();
            Err(self.err("EOF while parsing a value"))
        } else {
            Err(self.err("expected value"))
        }
    }

    /// A number's text (at its first byte).
    fn number(&mut self) -> Result<&'a str, Syntax> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            Some(_) => return Err(self.err("invalid number")),
            None => return Err(self.err("EOF while parsing a value")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        Ok(&self.s[start..self.i])
    }

    #[inline]
    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    /// A string's content (after its opening quote), escapes decoded.
    #[inline]
    fn string(&mut self) -> Result<Cow<'a, str>, Syntax> {
        let start = self.i;
        self.i = plain_end(self.b, self.i);
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                Ok(Cow::Borrowed(&self.s[start..self.i - 1]))
            }
            Some(b'\\') => {
                let mut out = String::with_capacity(self.i - start + 16);
                out.push_str(&self.s[start..self.i]);
                self.string_rest(Some(&mut out))?;
                Ok(Cow::Owned(out))
            }
            Some(_) => {
                Err(self.err("control character (\\u0000-\\u001F) found while parsing a string"))
            }
            None => Err(self.err("EOF while parsing a string")),
        }
    }

    /// The rest of a string from an escape or its closing quote on, decoded into
    /// `out` when given (only checked otherwise).
    fn string_rest(&mut self, mut out: Option<&mut String>) -> Result<(), Syntax> {
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => self.escape(out.as_deref_mut())?,
                Some(_) => {
                    return Err(self
                        .err("control character (\\u0000-\\u001F) found while parsing a string"));
                }
                None => return Err(self.err("EOF while parsing a string")),
            }
            let start = self.i;
            self.i = plain_end(self.b, self.i);
            if let Some(o) = out.as_deref_mut() {
                o.push_str(&self.s[start..self.i]);
            }
        }
    }

    /// One escape (at its backslash).
    fn escape(&mut self, out: Option<&mut String>) -> Result<(), Syntax> {
        self.i += 1;
        let c = match self.peek() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.i += 1;
                let hi = self.hex4()?;
                let code = match hi {
                    0xD800..=0xDBFF => {
                        if !self.b[self.i..].starts_with(b"\\u") {
                            return Err(self.err("lone leading surrogate in hex escape"));
                        }
                        self.i += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(self.err("lone leading surrogate in hex escape"));
                        }
                        0x10000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00)
                    }
                    0xDC00..=0xDFFF => {
                        return Err(self.err("lone trailing surrogate in hex escape"));
                    }
                    n => u32::from(n),
                };
                let ch =
                    char::from_u32(code).ok_or_else(|| self.err("invalid unicode code point"))?;
                if let Some(o) = out {
                    o.push(ch);
                }
                return Ok(());
            }
            Some(_) => return Err(self.err("invalid escape")),
            None => return Err(self.err("EOF while parsing a string")),
        };
        self.i += 1;
        if let Some(o) = out {
            o.push(c);
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u16, Syntax> {
        let mut n: u16 = 0;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                Some(_) => return Err(self.err("invalid escape")),
                None => return Err(self.err("EOF while parsing a string")),
            };
            n = n << 4 | u16::from(d);
            self.i += 1;
        }
        Ok(n)
    }

    /// A nested array or object (at its opening bracket), checked, without recursion:
    /// the open brackets are bits of a 128-bit stack.
    fn nested(&mut self) -> Result<(), Syntax> {
        // Bit d set: level d is an object. The record's own object is level 0.
        let mut objects: u128 = 0;
        let mut depth = 0usize;
        'value: loop {
            // At a value.
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    depth += 1;
                    if depth >= MAX_DEPTH {
                        return Err(self.err("recursion limit exceeded"));
                    }
                    let object = open == b'{';
                    objects = objects & !(1 << depth) | (u128::from(object) << depth);
                    self.i += 1;
                    self.ws();
                    match self.peek() {
                        Some(b'}') if object => self.i += 1,
                        Some(b']') if !object => self.i += 1,
                        _ => {
                            if object {
                                self.key()?;
                            }
                            continue 'value;
                        }
                    }
                    // An empty one: closed at once.
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                Some(b'"') => {
                    self.i += 1;
                    self.i = plain_end(self.b, self.i);
                    self.string_rest(None)?;
                }
                _ => {
                    self.value()?;
                }
            }
            // After a value: commas and closing brackets.
            loop {
                self.ws();
                let object = objects >> depth & 1 == 1;
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        self.ws();
                        if object {
                            self.key()?;
                        } else if self.peek() == Some(b']') {
                            return Err(self.err("trailing comma"));
                        }
                        continue 'value;
                    }
                    Some(b'}') if object => self.i += 1,
                    Some(b']') if !object => self.i += 1,
                    Some(_) if object => return Err(self.err("expected `,` or `}`")),
                    Some(_) => return Err(self.err("expected `,` or `]`")),
                    None if object => return Err(self.err("EOF while parsing an object")),
                    None => return Err(self.err("EOF while parsing a list")),
                }
                depth -= 1;
                if depth == 0 {
                    return Ok(());
                }
            }
        }
    }
}

/// The index of the first byte at or after `i` that ends a string's plain run: a
/// quote, a backslash or a control character (or the end).
#[inline]
fn plain_end(b: &[u8], i: usize) -> usize {
    find(
        b,
        i,
        |x| bytes_eq(x, b'"') | bytes_eq(x, b'\\') | bytes_below(x, 0x20),
        |c| c == b'"' || c == b'\\' || c < 0x20,
    )
}

/// The next quote or backslash at or after `i` (`s.len()`: none): where a string's
/// scan stops when its escapes are not checked.
pub fn quote_or_backslash(s: &[u8], i: usize) -> usize {
    find(
        s,
        i,
        |x| bytes_eq(x, b'"') | bytes_eq(x, b'\\'),
        |c| c == b'"' || c == b'\\',
    )
}

/// The next quote or bracket at or after `i` (`s.len()`: none). `[` and `{` differ by
/// one bit, 0x20, as `]` and `}` do.
pub fn quote_or_bracket(s: &[u8], i: usize) -> usize {
    find(
        s,
        i,
        |x| {
            let y = x | (ONES * 0x20);
            bytes_eq(x, b'"') | bytes_eq(y, b'{') | bytes_eq(y, b'}')
        },
        |c| matches!(c, b'"' | b'{' | b'}' | b'[' | b']'),
    )
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// The high bit of each byte of `x` that equals `c`. Exact for the lowest one: a false
/// flag only follows a true one (a borrow), so the first flagged byte is a match.
#[inline]
fn bytes_eq(x: u64, c: u8) -> u64 {
    bytes_below(x ^ (ONES * u64::from(c)), 1)
}

/// The high bit of each byte of `x` below `n` (`n` <= 0x80), exact for the lowest one.
#[inline]
fn bytes_below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & (ONES << 7)
}

/// The first index at or after `i` whose byte `flags` marks (eight bytes at a time),
/// or `matches` (byte by byte, for the tail); `s.len()` when none.
#[inline]
fn find(s: &[u8], mut i: usize, flags: impl Fn(u64) -> u64, matches: impl Fn(u8) -> bool) -> usize {
    while let Some(w) = s.get(i..i + 8) {
        let m = flags(u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    let i = i.min(s.len());
    i + s[i..]
        .iter()
        .position(|&c| matches(c))
        .unwrap_or(s.len() - i)
}

/// A nested JSON array or object, kept as its compact text: checked JSON without
/// whitespace between tokens, exactly as the source wrote it otherwise (member order,
/// duplicate names, every digit of its numbers, its escapes). Two values are equal
/// when their texts are.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Json(Box<str>);

impl Json {
    /// A JSON array or object from its text (whitespace between tokens dropped).
    ///
    /// # Errors
    /// The syntax error (with line and column), or that the value is a scalar.
    pub fn parse(text: &str) -> Result<Json, String> {
        let t = text.trim_matches([' ', '\n', '\t', '\r']);
        if !t.starts_with(['{', '[']) {
            check_value(t)?;
            return Err("expected a JSON array or object".into());
        }
        check_value(t)?;
        Ok(Json(compact(t).into()))
    }

    /// From text [`read_object`] checked as [`Member::Nested`].
    pub(crate) fn from_checked(text: &str) -> Json {
        Json(compact(text).into())
    }

    /// The compact text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// As a serde_json value (numbers beyond f64 lose digits there).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

impl From<serde_json::Value> for Json {
    fn from(v: serde_json::Value) -> Json {
        Json::from(&v)
    }
}

impl From<&serde_json::Value> for Json {
    fn from(v: &serde_json::Value) -> Json {
        Json(v.to_string().into())
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Json({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;
    use serde_json::value::RawValue;

    /// The reference: serde_json says whether `text` is a JSON object and, member by
    /// member, what each value is (its raw text kept exactly by `RawValue`).
    fn reference(text: &str) -> Option<Vec<(String, Member<'static>)>> {
        struct Members(Vec<(String, Box<RawValue>)>);
        impl<'de> serde::Deserialize<'de> for Members {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Members;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<M: serde::de::MapAccess<'de>>(
                        self,
                        mut m: M,
                    ) -> Result<Members, M::Error> {
                        let mut out = Vec::new();
                        while let Some(k) = m.next_key::<String>()? {
                            out.push((k, m.next_value()?));
                        }
                        Ok(Members(out))
                    }
                }
                d.deserialize_map(V)
            }
        }
        // Validity from a full parse (escapes and surrogates decoded everywhere).
        if !serde_json::from_str::<serde_json::Value>(text)
            .ok()?
            .is_object()
        {
            return None;
        }
        let m: Members = serde_json::from_str(text).ok()?;
        Some(
            m.0.into_iter()
                .map(|(k, raw)| {
                    let t = raw.get().to_string();
                    let v = match t.as_bytes()[0] {
                        b'n' => Member::Null,
                        b't' => Member::Bool(true),
                        b'f' => Member::Bool(false),
                        b'"' => Member::Str(Cow::Owned(serde_json::from_str(&t).unwrap())),
                        b'{' | b'[' => Member::Nested(Box::leak(t.into_boxed_str())),
                        _ => Member::Number(Box::leak(t.into_boxed_str())),
                    };
                    (k, v)
                })
                .collect(),
        )
    }

    fn ws(r: &mut Rng) -> &'static str {
        r.pick(&["", "", "", " ", "\n", "\t", "\r\n  "])
    }

    /// Random JSON text in forms serde_json does not write (exponents, escapes of
    /// every kind, surrogate pairs, long integers, whitespace anywhere).
    fn value(r: &mut Rng, depth: u32, out: &mut String) {
        match r.below(if depth > 3 { 5 } else { 7 }) {
            0 => out.push_str(r.pick(&["null", "true", "false"])),
            1 | 2 => out.push_str(r.pick(&[
                "0",
                "-0",
                "12",
                "-7",
                "9223372036854775807",
                "-9223372036854775809",
                "123456789012345678901234567890",
                "1.5",
                "-0.000",
                "1e5",
                "-2.5E-3",
                "6.02e+23",
            ])),
            3 | 4 => string(r, out),
            5 => {
                out.push('[');
                for i in 0..r.below(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(ws(r));
                    value(r, depth + 1, out);
                    out.push_str(ws(r));
                }
                out.push(']');
            }
            _ => object(r, depth + 1, out),
        }
    }

    fn string(r: &mut Rng, out: &mut String) {
        out.push('"');
        for _ in 0..r.below(5) {
            out.push_str(r.pick(&[
                "a",
                "é",
                "😀",
                "\\\"",
                "\\\\",
                "\\/",
                "\\b",
                "\\f",
                "\\n",
                "\\r",
                "\\t",
                "\\u00e9",
                "\\u0000",
                "\\ud83d\\ude00",
                "\\uD83D\\uDE00",
                " ",
                ",",
                ":",
                "{",
                "]",
                "plain text of some length",
            ]));
        }
        out.push('"');
    }

    fn object(r: &mut Rng, depth: u32, out: &mut String) {
        out.push('{');
        for i in 0..r.below(6) {
            if i > 0 {
                out.push(',');
            }
            out.push_str(ws(r));
            // Duplicate names on purpose; one spelled with an escape.
            out.push_str(r.pick(&["\"a\"", "\"b\"", "\"c\"", "\"a\\u0031\"", "\"\""]));
            out.push_str(ws(r));
            out.push(':');
            out.push_str(ws(r));
            value(r, depth, out);
            out.push_str(ws(r));
        }
        out.push('}');
    }

    fn read(text: &str) -> Option<Vec<(String, Member<'_>)>> {
        let mut got = Vec::new();
        read_object(text, |k, m| {
            got.push((k.into_owned(), m));
            Ok::<(), ()>(())
        })
        .ok()
        .map(|()| got)
    }

    /// Seeded differential test: random objects, valid and then corrupted (a byte
    /// deleted, inserted or the text cut), are read exactly as serde_json reads them:
    /// the same ones refused, the same members in the same order for the rest.
    #[test]
    fn reads_objects_as_serde_json_does() {
        let seed = std::env::var("JSON_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x0b1ec7);
        let mut r = Rng(seed);
        let (mut valid, mut refused) = (0, 0);
        for n in 0..30_000 {
            let mut text = String::new();
            text.push_str(ws(&mut r));
            object(&mut r, 1, &mut text);
            text.push_str(ws(&mut r));
            if n % 3 > 0 {
                for _ in 0..1 + r.below(2) {
                    let cuts: Vec<usize> = (0..=text.len())
                        .filter(|&i| text.is_char_boundary(i))
                        .collect();
                    let at = r.pick(&cuts);
                    match r.below(3) {
                        0 if at < text.len() && text.as_bytes()[at].is_ascii() => {
                            text.remove(at);
                        }
                        1 => text.insert(
                            at,
                            r.pick(&[
                                '"', '\\', ',', ':', '{', '}', '[', ']', '0', '-', 'e', '.', 'x',
                                ' ', '\u{1}', 'n', 'u',
                            ]),
                        ),
                        _ => text.truncate(at),
                    }
                }
            }
            // serde_json refuses a float beyond f64 (`1e400`), which is JSON all the
            // same: such cases are left out here (see `numbers_beyond_f64_are_json`).
            if serde_json::from_str::<serde_json::Value>(&text)
                .is_err_and(|e| e.to_string().starts_with("number out of range"))
            {
                continue;
            }
            let want = reference(&text);
            let got = read(&text);
            assert_eq!(got, want, "seed {seed} case {n}: {text:?}");
            // At the start of a longer text: the same members, and where it ends.
            let t = text.trim_matches([' ', '\n', '\t', '\r']);
            if t.starts_with('{') {
                let longer = format!("{t},{{\"next\":1}}]");
                let mut members = Vec::new();
                let at = read_object_at(&longer, |k, m| {
                    members.push((k.into_owned(), m));
                    Ok::<(), ()>(())
                });
                match &want {
                    Some(w) => {
                        assert_eq!(at, Ok(t.len()), "seed {seed} case {n}: {text:?}");
                        assert_eq!(&members, w, "seed {seed} case {n}: {text:?}");
                    }
                    // What ends early as an object may be a whole one followed by junk.
                    None => assert!(at.is_err() || at.is_ok_and(|l| l < t.len()), "{text:?}"),
                }
            }
            if got.is_some() {
                valid += 1;
            } else {
                refused += 1;
            }
        }
        // Both kinds well represented.
        assert!(
            valid > 10_000 && refused > 5_000,
            "{valid} valid, {refused} refused"
        );
    }

    #[test]
    fn numbers_beyond_f64_are_json() {
        let got = read(r#"{"a":1e400,"b":-2.5E+999}"#).unwrap();
        assert_eq!(got[0].1, Member::Number("1e400"));
        let v = crate::row::Value::from(got[1].1.clone());
        assert_eq!(
            v,
            crate::row::Value::Decimal(format!("-25{}", "0".repeat(998)))
        );
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = |t: &str| match read_object(t, |_, _| Ok::<(), ()>(())) {
            Err(ReadError::Syntax(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(e(r#"{"a" 1}"#), "expected `:` at line 1 column 6");
        assert_eq!(e("{\"a\":1,\n\"b\":}"), "expected value at line 2 column 5");
        assert_eq!(e(r#"{"a":1,}"#), "trailing comma at line 1 column 8");
        assert_eq!(e(r#"{"a":[1,]}"#), "trailing comma at line 1 column 9");
        assert_eq!(e(r#"{"a":1} x"#), "trailing characters at line 1 column 9");
        assert_eq!(
            e(r#"{"a":"#),
            "EOF while parsing a value at line 1 column 6"
        );
        assert_eq!(
            e(r#"{"a":"x"#),
            "EOF while parsing a string at line 1 column 8"
        );
        assert_eq!(e(r#"{"a":01}"#), "expected `,` or `}` at line 1 column 7");
        assert_eq!(
            e(r#"{"a":"\ud800"}"#),
            "lone leading surrogate in hex escape at line 1 column 13"
        );
        assert_eq!(e("[1,2]"), "expected a JSON object, found an array");
        assert_eq!(e(""), "EOF while parsing a value at line 1 column 1");
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(e(&deep).starts_with("recursion limit exceeded"));
        let ok = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(MAX_DEPTH - 2),
            "]".repeat(MAX_DEPTH - 2)
        );
        assert!(read(&ok).is_some());
        // The callback's refusal stops the read.
        let r = read_object(r#"{"a":1,"b":2}"#, |k, _| {
            if k == "b" { Err("no b") } else { Ok(()) }
        });
        assert_eq!(r, Err(ReadError::Member("no b")));
    }

    /// The eight-bytes-at-a-time searches stop where a byte-by-byte search stops
    /// (seeded: every start of random strings of the bytes that matter and others).
    #[test]
    fn word_searches_match_a_byte_by_byte_search() {
        let mut r = Rng(0x5ca1);
        let bytes = b"\"\\{}[]aZ{ \x7b\x5b\xdb\xfb\x00\x80\x1f";
        for _ in 0..5_000 {
            let s: Vec<u8> = (0..r.below(40))
                .map(|_| bytes[r.below(bytes.len() as u64) as usize])
                .collect();
            for i in 0..=s.len() {
                let first =
                    |f: &dyn Fn(u8) -> bool| (i..s.len()).find(|&j| f(s[j])).unwrap_or(s.len());
                assert_eq!(
                    quote_or_backslash(&s, i),
                    first(&|c| c == b'"' || c == b'\\'),
                    "{s:?} {i}"
                );
                assert_eq!(
                    quote_or_bracket(&s, i),
                    first(&|c| matches!(c, b'"' | b'{' | b'}' | b'[' | b']')),
                    "{s:?} {i}"
                );
            }
        }
    }

    #[test]
    fn plain_runs_end_where_a_byte_by_byte_scan_ends_them() {
        let mut r = Rng(0x91a1);
        for _ in 0..20_000 {
            let s: String = (0..r.below(40))
                .map(|_| r.pick(&["a", "\"", "\\", "\u{1f}", "\u{7f}", "é", " ", "~", "\u{0}"]))
                .collect();
            let b = s.as_bytes();
            for i in 0..=b.len() {
                let want = (i..b.len())
                    .find(|&j| b[j] == b'"' || b[j] == b'\\' || b[j] < 0x20)
                    .unwrap_or(b.len());
                assert_eq!(plain_end(b, i), want, "{s:?} from {i}");
            }
        }
    }
}
