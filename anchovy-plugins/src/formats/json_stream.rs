//! A JSON body streamed into records: the records at a path handed to a callback as
//! they are parsed, and a few other fields (`meta.next_cursor`, `links.next`, a total)
//! captured on the way, wherever they appear in the body. The REST downloader's pages
//! and the JSON files that are one top-level array both go through it.
//!
//! The body is pulled chunk by chunk ([`Body`]) and parsed as it arrives, on the task
//! that reads it ([`parse`]), or on a blocking thread from a reader
//! ([`parse_reader`]): a body is never held whole, only the record being cut out.
//!
//! **How.** A byte scanner walks the structure, eight bytes at a time: inside a value
//! it jumps to the next quote or bracket, inside a string to the next quote or
//! backslash; brackets are matched on a stack, and each record's bytes (a slice of the
//! chunk, or copied together when it straddles chunks) go to the callback, which
//! parses the record once, in full ([`anchovy_core::row::read_object`]). The scanner
//! checks what it walks for balance (brackets, strings), not every grammar rule: JSON
//! outside the records and captured values that is balanced but ill-formed
//! (`{"x": 1 2}`) is skipped, a record that is balanced but ill-formed is a bad record
//! of its own, and every record and captured value is parsed in full, so nothing
//! malformed reaches a row.

use anchovy_core::row::{quote_or_backslash, quote_or_bracket};
use bytes::Bytes;
use std::future::Future;

/// Where a body's records are and what else to capture.
#[derive(Debug, Clone)]
pub struct Shape {
    /// The path of the array of records (empty: the body is the array).
    pub records: Vec<String>,
    /// Paths of single values to capture (an empty one captures nothing).
    pub captures: Vec<Vec<String>>,
    /// What messages call the body (`the response`, `the file`).
    pub body: &'static str,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            records: Vec::new(),
            captures: Vec::new(),
            body: "the response",
        }
    }
}

/// What a page held besides its records.
#[derive(Debug, Default)]
pub struct Page {
    /// Records seen.
    pub records: u64,
    /// The captured values, by the position of their path in [`Shape::captures`].
    pub captured: Vec<Option<serde_json::Value>>,
}

/// A response body, pulled a piece at a time.
pub trait Body: Send {
    /// The next piece; `Ok(None)` at the body's end, `Err` when the transport failed.
    fn chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>, String>> + Send;
}

/// What [`parse`] hands the records to.
pub trait OnRecord {
    /// Takes the record `text` starts with (`text` goes on past it, to the end of the
    /// chunk at hand) when it is whole there and can be taken in one pass: returns its
    /// length in bytes. `None` when not (cut by the chunk's end, ill-formed, refused):
    /// nothing of it was kept, and it comes again, exactly its text, through
    /// [`OnRecord::record`]. By default nothing is taken here.
    fn record_at(&mut self, text: &str, pos: u64) -> Option<usize> {
        let _ = (text, pos);
        None
    }

    /// One record, exactly its JSON text, and its 1-based position; `Err` stops the
    /// parse with that message.
    ///
    /// # Errors
    /// Why the parse must stop.
    fn record(&mut self, text: &str, pos: u64) -> Result<(), String>;
}

impl<F: FnMut(&str, u64) -> Result<(), String>> OnRecord for F {
    fn record(&mut self, text: &str, pos: u64) -> Result<(), String> {
        self(text, pos)
    }
}

/// Why a page could not be parsed.
#[derive(Debug)]
pub enum PageError {
    /// The transport failed before the body's end (the page may be fetched again).
    Cut(String),
    /// The body is not what the table's shape says, or the callback failed: final.
    Bad(String),
}

/// Parses one body.
///
/// # Errors
/// [`PageError::Bad`] with the line and column and the JSON path it was at
/// (`data.items[41]`) for malformed JSON, records that are not an array, a body
/// without the records path, or the callback's error; [`PageError::Cut`] when `body`
/// failed.
///
/// `on` gets each record and its 1-based position ([`OnRecord`]); its `Err` stops the
/// parse.
pub async fn parse<B: Body, F: OnRecord + ?Sized>(
    body: &mut B,
    shape: &Shape,
    on: &mut F,
) -> Result<Page, PageError> {
    let mut p = Parser {
        inp: Input::new(body),
        shape,
        page: Page {
            records: 0,
            captured: vec![None; shape.captures.len()],
        },
        found: false,
        at: String::new(),
    };
    let res = p.body(on).await;
    let Parser {
        mut inp,
        found,
        at,
        page,
        ..
    } = p;
    match res {
        Ok(()) => {}
        Err(Fail::Cut(m)) => return Err(PageError::Cut(m)),
        Err(Fail::Bad(m)) => {
            let at = if at.is_empty() {
                "the top".to_string()
            } else {
                format!("`{at}`")
            };
            return Err(PageError::Bad(format!("{m} (at {at} of {})", shape.body)));
        }
        Err(Fail::Record(m)) => return Err(PageError::Bad(m)),
    }
    // Anything but whitespace after the value is an error.
    match inp.peek_ws().await {
        Ok(None) => {}
        Ok(Some(_)) => {
            return Err(PageError::Bad(format!(
                "trailing characters after the JSON value at {} of {}",
                inp.place(),
                shape.body
            )));
        }
        Err(Fail::Cut(m)) => return Err(PageError::Cut(m)),
        Err(Fail::Bad(m) | Fail::Record(m)) => return Err(PageError::Bad(m)),
    }
    if !found {
        let against = if shape.body == "the response" {
            "a response of the API"
        } else {
            shape.body
        };
        return Err(PageError::Bad(format!(
            "{} has no `{}` (records:); check the path against {against}",
            shape.body,
            shape.records.join(".")
        )));
    }
    Ok(page)
}

/// A blocking reader as a [`Body`] (its pieces are ready at once).
struct Reader<R>(R);

impl<R: std::io::Read + Send> Body for Reader<R> {
    async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            return match self.0.read(&mut buf) {
                Ok(0) => Ok(None),
                Ok(n) => {
                    buf.truncate(n);
                    Ok(Some(Bytes::from(buf)))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e.to_string()),
            };
        }
    }
}

/// [`parse`] from a blocking reader, on the calling thread.
///
/// # Errors
/// As [`parse`]; [`PageError::Cut`] is the reader's error.
pub fn parse_reader<F: OnRecord + ?Sized>(
    input: impl std::io::Read + Send,
    shape: &Shape,
    on: &mut F,
) -> Result<Page, PageError> {
    let mut body = Reader(input);
    let mut fut = std::pin::pin!(parse(&mut body, shape, on));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // Every piece of a reader is ready: the parse never waits, so polling again
    // after an (impossible) pending is no busy wait in practice.
    loop {
        if let std::task::Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
            return r;
        }
        std::thread::yield_now();
    }
}

/// Why the parse stopped, before the response's place is added.
enum Fail {
    Cut(String),
    /// Malformed or unexpected JSON; the JSON path is added.
    Bad(String),
    /// The callback's error, final as it is.
    Record(String),
}

/// The bytes of a value just scanned: in the current chunk, or copied together.
enum Span {
    Chunk(usize, usize),
    Acc,
}

/// A resumable scan of one JSON value's extent.
#[derive(Default)]
struct Scan {
    /// The closers of the open brackets.
    stack: Vec<u8>,
    in_str: bool,
    esc: bool,
    scalar: bool,
}

enum Step {
    /// The value ends before this offset.
    Done(usize),
    /// The slice ended inside the value.
    More,
    /// A byte at this offset cannot be here.
    Bad(usize, &'static str),
}

/// Bytes a number, `true`, `false` or `null` is made of.
fn scalar_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')
}

impl Scan {
    /// Scans `s` from where the last call left off.
    fn scan(&mut self, s: &[u8]) -> Step {
        let mut i = 0;
        while i < s.len() {
            if self.in_str {
                if self.esc {
                    self.esc = false;
                    i += 1;
                    continue;
                }
                i = quote_or_backslash(s, i);
                if i == s.len() {
                    return Step::More;
                }
                i += 1;
                if s[i - 1] == b'\\' {
                    self.esc = true;
                } else {
                    self.in_str = false;
                    if self.stack.is_empty() {
                        return Step::Done(i);
                    }
                }
                continue;
            }
            if !self.stack.is_empty() {
                // Inside brackets only quotes and brackets matter here (a record's
                // grammar is checked when it is read).
                i = quote_or_bracket(s, i);
                if i == s.len() {
                    return Step::More;
                }
            }
            let c = s[i];
            if self.scalar {
                if scalar_byte(c) {
                    i += 1;
                    continue;
                }
                self.scalar = false;
                return Step::Done(i);
            }
            match c {
                b'"' => self.in_str = true,
                b'{' => self.stack.push(b'}'),
                b'[' => self.stack.push(b']'),
                b'}' | b']' => {
                    if self.stack.pop() != Some(c) {
                        return Step::Bad(i, "a closing bracket that matches no opening one");
                    }
                    if self.stack.is_empty() {
                        return Step::Done(i + 1);
                    }
                }
                c if scalar_byte(c) => self.scalar = true,
                _ => return Step::Bad(i, "a value was expected"),
            }
            i += 1;
        }
        Step::More
    }
}

/// The body as it arrives, with the place in it for messages.
struct Input<'b, B> {
    body: &'b mut B,
    /// The current chunk, decoded (UTF-8 checked once, here).
    cur: String,
    /// The bytes of a character cut by the end of the last chunk.
    carry: Vec<u8>,
    pos: usize,
    eof: bool,
    /// Newlines before `cur`, and the bytes after the last of them.
    lines: u64,
    col: u64,
    /// A value that straddles chunks, copied together.
    acc: Vec<u8>,
    scan: Scan,
}

impl<'b, B: Body> Input<'b, B> {
    fn new(body: &'b mut B) -> Self {
        Input {
            body,
            cur: String::new(),
            carry: Vec::new(),
            pos: 0,
            eof: false,
            lines: 0,
            col: 0,
            acc: Vec::new(),
            scan: Scan::default(),
        }
    }

    /// Makes sure a byte is at `pos`; false at the body's end.
    async fn fill(&mut self) -> Result<bool, Fail> {
        while self.pos >= self.cur.len() {
            if self.eof {
                return Ok(false);
            }
            match memchr::memrchr(b'\n', self.cur.as_bytes()) {
                Some(last) => {
                    self.lines += memchr::memchr_iter(b'\n', self.cur.as_bytes()).count() as u64;
                    self.col = (self.cur.len() - last - 1) as u64;
                }
                None => self.col += self.cur.len() as u64,
            }
            self.pos = 0;
            match self.body.chunk().await {
                Ok(Some(b)) => self.cur = self.decode(b)?,
                Ok(None) => {
                    self.eof = true;
                    self.cur = String::new();
                    if !self.carry.is_empty() {
                        return Err(Fail::Bad(
                            "the body is not UTF-8 text, as JSON must be: it ends inside a character"
                                .into(),
                        ));
                    }
                }
                Err(m) => return Err(Fail::Cut(m)),
            }
        }
        Ok(true)
    }

    /// A chunk as text: the character cut at its end waits for the next one.
    fn decode(&mut self, b: Bytes) -> Result<String, Fail> {
        let v = if self.carry.is_empty() {
            Vec::from(b)
        } else {
            let mut v = std::mem::take(&mut self.carry);
            v.extend_from_slice(&b);
            v
        };
        let bad = |e: std::str::Utf8Error| {
            Fail::Bad(format!(
                "the body is not UTF-8 text, as JSON must be ({e}); convert it to UTF-8 (or ask the API for charset=utf-8)"
            ))
        };
        match String::from_utf8(v) {
            Ok(t) => Ok(t),
            Err(e) if e.utf8_error().error_len().is_some() => Err(bad(e.utf8_error())),
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let mut v = e.into_bytes();
                self.carry = v.split_off(valid);
                String::from_utf8(v).map_err(|e| bad(e.utf8_error()))
            }
        }
    }

    /// The byte at `pos` when it is in the chunk and not whitespace (the common case,
    /// without waiting); `None` otherwise (ask [`Input::peek_ws`]).
    #[inline]
    fn peek_now(&self) -> Option<u8> {
        self.cur
            .as_bytes()
            .get(self.pos)
            .copied()
            .filter(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    }

    /// The next byte that is not whitespace, not consumed; `None` at the end.
    async fn peek_ws(&mut self) -> Result<Option<u8>, Fail> {
        loop {
            if !self.fill().await? {
                return Ok(None);
            }
            let rest = &self.cur.as_bytes()[self.pos..];
            match rest
                .iter()
                .position(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
            {
                Some(k) => {
                    self.pos += k;
                    return Ok(Some(rest[k]));
                }
                None => self.pos = self.cur.len(),
            }
        }
    }

    /// `line L column C` of the byte at `pos`.
    fn place(&self) -> String {
        let head = &self.cur.as_bytes()[..self.pos.min(self.cur.len())];
        let (line, col) = match memchr::memrchr(b'\n', head) {
            Some(last) => (
                self.lines + memchr::memchr_iter(b'\n', head).count() as u64,
                (head.len() - last - 1) as u64,
            ),
            None => (self.lines, self.col + head.len() as u64),
        };
        format!("line {} column {}", line + 1, col + 1)
    }

    /// An unexpected byte (or the end) where `want` should be.
    fn unexpected(&self, got: Option<u8>, want: &str) -> Fail {
        match got {
            None => Fail::Bad(format!(
                "the body ended early (EOF) where {want} was expected, at {}",
                self.place()
            )),
            Some(c) => Fail::Bad(format!(
                "expected {want}, found {} at {}",
                shown(c),
                self.place()
            )),
        }
    }

    /// Consumes the next value (after whitespace); with `keep`, its bytes are
    /// [`Input::span`] until the next read.
    async fn value(&mut self, keep: bool) -> Result<Span, Fail> {
        if self.peek_ws().await?.is_none() {
            return Err(self.unexpected(None, "a JSON value"));
        }
        self.scan.stack.clear();
        self.scan.in_str = false;
        self.scan.esc = false;
        self.scan.scalar = false;
        self.acc.clear();
        let mut straddled = false;
        loop {
            let start = self.pos;
            match self.scan.scan(&self.cur.as_bytes()[start..]) {
                Step::Done(n) => {
                    self.pos += n;
                    if !straddled {
                        return Ok(Span::Chunk(start, self.pos));
                    }
                    if keep {
                        self.acc
                            .extend_from_slice(&self.cur.as_bytes()[start..self.pos]);
                    }
                    return Ok(Span::Acc);
                }
                Step::Bad(n, what) => {
                    self.pos += n;
                    return Err(Fail::Bad(format!(
                        "malformed JSON: {what} ({}) at {}",
                        shown(self.cur.as_bytes()[self.pos]),
                        self.place()
                    )));
                }
                Step::More => {
                    if keep {
                        self.acc.extend_from_slice(&self.cur.as_bytes()[start..]);
                    }
                    self.pos = self.cur.len();
                    straddled = true;
                    if !self.fill().await? {
                        if self.scan.scalar && self.scan.stack.is_empty() {
                            return Ok(Span::Acc);
                        }
                        return Err(Fail::Bad(format!(
                            "the body ended early (EOF) inside a value, at {}",
                            self.place()
                        )));
                    }
                }
            }
        }
    }

    fn span(&self, s: &Span) -> &[u8] {
        match *s {
            Span::Chunk(a, b) => &self.cur.as_bytes()[a..b],
            Span::Acc => &self.acc,
        }
    }

    /// Consumes `c` (after whitespace), or says what came instead.
    async fn expect(&mut self, c: u8, want: &str) -> Result<(), Fail> {
        match self.peek_ws().await? {
            Some(got) if got == c => {
                self.pos += 1;
                Ok(())
            }
            got => Err(self.unexpected(got, want)),
        }
    }

    /// A member's key.
    async fn key(&mut self) -> Result<String, Fail> {
        match self.peek_ws().await? {
            Some(b'"') => {}
            got => return Err(self.unexpected(got, "a key in double quotes")),
        }
        let s = self.value(true).await?;
        serde_json::from_slice(self.span(&s))
            .map_err(|e| Fail::Bad(format!("malformed key: {e} (before {})", self.place())))
    }

    /// Consumes a value that is not wanted; a scalar is checked to be JSON.
    async fn skip(&mut self) -> Result<(), Fail> {
        let scalar = !matches!(self.peek_ws().await?, Some(b'{' | b'[' | b'"'));
        let s = self.value(scalar).await?;
        if scalar {
            serde_json::from_slice::<serde::de::IgnoredAny>(self.span(&s))
                .map_err(|e| Fail::Bad(format!("malformed JSON: {e} (before {})", self.place())))?;
        }
        Ok(())
    }
}

/// A byte as a message shows it.
fn shown(c: u8) -> String {
    if c.is_ascii_graphic() {
        format!("`{}`", c as char)
    } else {
        format!("byte 0x{c:02x}")
    }
}

/// The walk over one body.
struct Parser<'b, 's, B> {
    inp: Input<'b, B>,
    shape: &'s Shape,
    page: Page,
    found: bool,
    /// The JSON path being parsed, for messages.
    at: String,
}

/// Where the walk is in the objects on the way to the records and captures.
enum At {
    /// Before a value at `path`.
    Value,
    /// Just inside an object: its first key or its end.
    FirstKey,
    /// Before a key.
    Key,
    /// After a value: a comma, or the end of the object holding it.
    After,
}

impl<B: Body> Parser<'_, '_, B> {
    /// Walks the body's value: into the objects on the paths of the records and the
    /// captures, over everything else.
    async fn body<F: OnRecord + ?Sized>(&mut self, on: &mut F) -> Result<(), Fail> {
        let mut path: Vec<String> = Vec::new();
        let mut depth = 0usize;
        let mut at = At::Value;
        loop {
            at = match at {
                At::Value => {
                    self.at = path.join(".");
                    let shape = self.shape;
                    if path == shape.records {
                        self.records(on).await?;
                    } else if let Some(i) = shape
                        .captures
                        .iter()
                        .position(|c| !c.is_empty() && *c == path)
                    {
                        let s = self.inp.value(true).await?;
                        let v = serde_json::from_slice(self.inp.span(&s)).map_err(|e| {
                            Fail::Bad(format!("malformed JSON: {e} (before {})", self.inp.place()))
                        })?;
                        self.page.captured[i] = Some(v);
                    } else if (shape.records.starts_with(&path)
                        || shape.captures.iter().any(|c| c.starts_with(&path)))
                        && self.inp.peek_ws().await? == Some(b'{')
                    {
                        self.inp.pos += 1;
                        depth += 1;
                        self.at = path.join(".");
                        at = At::FirstKey;
                        continue;
                    } else {
                        self.inp.skip().await?;
                    }
                    At::After
                }
                At::FirstKey => {
                    if self.inp.peek_ws().await? == Some(b'}') {
                        self.inp.pos += 1;
                        depth -= 1;
                        At::After
                    } else {
                        At::Key
                    }
                }
                At::Key => {
                    let k = self.inp.key().await?;
                    self.inp.expect(b':', "`:`").await?;
                    path.push(k);
                    At::Value
                }
                At::After => {
                    if depth == 0 {
                        return Ok(());
                    }
                    path.pop();
                    self.at = path.join(".");
                    match self.inp.peek_ws().await? {
                        Some(b',') => {
                            self.inp.pos += 1;
                            At::Key
                        }
                        Some(b'}') => {
                            self.inp.pos += 1;
                            depth -= 1;
                            At::After
                        }
                        got => return Err(self.inp.unexpected(got, "`,` or `}`")),
                    }
                }
            };
        }
    }

    /// What [`Shape::records`] names: each element of its array to `on`.
    async fn records<F: OnRecord + ?Sized>(&mut self, on: &mut F) -> Result<(), Fail> {
        let base = self.shape.records.join(".");
        let what = || {
            if base.is_empty() {
                self.shape.body.to_string()
            } else {
                format!("`{base}`")
            }
        };
        match self.inp.peek_ws().await? {
            Some(b'[') => {
                self.inp.pos += 1;
                self.found = true;
                let mut n = 0u64;
                if self.inp.peek_ws().await? == Some(b']') {
                    self.inp.pos += 1;
                    return Ok(());
                }
                let res = loop {
                    // The record parsed straight from the chunk when it is whole there;
                    // else cut out (copied together across chunks) and handed over.
                    let next = match self.inp.peek_now() {
                        Some(c) => Ok(Some(c)),
                        None => self.inp.peek_ws().await,
                    };
                    let taken = match next {
                        Ok(Some(b'{')) => on.record_at(&self.inp.cur[self.inp.pos..], n + 1),
                        Ok(_) => None,
                        Err(e) => break Err(e),
                    };
                    match taken {
                        Some(len) => self.inp.pos += len,
                        None => {
                            let s = match self.inp.value(true).await {
                                Ok(s) => s,
                                Err(e) => break Err(e),
                            };
                            let text = match std::str::from_utf8(self.inp.span(&s)) {
                                Ok(t) => t,
                                Err(e) => {
                                    break Err(Fail::Bad(format!(
                                        "the record is not UTF-8 text: {e}"
                                    )));
                                }
                            };
                            if let Err(m) = on.record(text, n + 1) {
                                n += 1;
                                break Err(Fail::Record(m));
                            }
                        }
                    }
                    n += 1;
                    let next = match self.inp.peek_now() {
                        Some(c) => Ok(Some(c)),
                        None => self.inp.peek_ws().await,
                    };
                    match next {
                        Ok(Some(b',')) => self.inp.pos += 1,
                        Ok(Some(b']')) => {
                            self.inp.pos += 1;
                            break Ok(());
                        }
                        Ok(got) => break Err(self.inp.unexpected(got, "`,` or `]`")),
                        Err(e) => break Err(e),
                    }
                };
                if res.is_err() {
                    // The element being read (or the separator after the last one).
                    self.at = format!("{base}[{n}]");
                }
                self.page.records = n;
                res
            }
            Some(b'n') => {
                let s = self.inp.value(true).await?;
                if self.inp.span(&s) != b"null" {
                    return Err(self
                        .inp
                        .unexpected(Some(b'n'), "an array of records or null"));
                }
                // `null`: no records on this page.
                self.found = true;
                Ok(())
            }
            Some(b'{') => {
                self.inp.pos += 1;
                let mut keys = Vec::new();
                if self.inp.peek_ws().await? != Some(b'}') {
                    loop {
                        let k = self.inp.key().await?;
                        if keys.len() < 12 {
                            keys.push(k);
                        }
                        self.inp.expect(b':', "`:`").await?;
                        self.inp.skip().await?;
                        if self.inp.peek_ws().await? != Some(b',') {
                            break;
                        }
                        self.inp.pos += 1;
                    }
                }
                let hint = if base.is_empty() {
                    "set `records:` to the path of its array of records"
                } else {
                    "point `records:` at the array of records inside it"
                };
                Err(Fail::Bad(format!(
                    "{} is a JSON object (keys: {}), not an array of records; {hint}",
                    what(),
                    keys.join(", ")
                )))
            }
            got => Err(self
                .inp
                .unexpected(got, &format!("an array of records in {}", what()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body in pieces of the given sizes (the last one repeated).
    struct Pieces {
        rest: Bytes,
        sizes: Vec<usize>,
        i: usize,
    }

    impl Body for Pieces {
        async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
            if self.rest.is_empty() {
                return Ok(None);
            }
            let n = self.sizes[self.i.min(self.sizes.len() - 1)].clamp(1, self.rest.len());
            self.i += 1;
            Ok(Some(self.rest.split_to(n)))
        }
    }

    fn shape(records: &str, captures: &[&str]) -> Shape {
        Shape {
            records: records
                .split('.')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            captures: captures
                .iter()
                .map(|c| c.split('.').map(String::from).collect())
                .collect(),
            ..Shape::default()
        }
    }

    fn parse_in(
        body: &[u8],
        sizes: Vec<usize>,
        shape: &Shape,
    ) -> Result<(Vec<String>, Page), String> {
        let mut got = Vec::new();
        let mut b = Pieces {
            rest: Bytes::copy_from_slice(body),
            sizes,
            i: 0,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // Half the cases also take records straight from the chunk where they are whole.
        let mut on = Collect {
            got: &mut got,
            at: b.sizes[0].is_multiple_of(2),
        };
        let page = rt
            .block_on(parse(&mut b, shape, &mut on))
            .map_err(|e| match e {
                PageError::Cut(m) | PageError::Bad(m) => m,
            })?;
        Ok((got, page))
    }

    /// Collects the records' texts.
    struct Collect<'a> {
        got: &'a mut Vec<String>,
        /// Take whole objects at the start of a chunk's rest, as `Records` does.
        at: bool,
    }

    impl OnRecord for Collect<'_> {
        fn record_at(&mut self, text: &str, _pos: u64) -> Option<usize> {
            if !self.at {
                return None;
            }
            let n = anchovy_core::row::read_object_at(text, |_, _| Ok::<(), ()>(())).ok()?;
            self.got.push(text[..n].to_string());
            Some(n)
        }

        fn record(&mut self, text: &str, _pos: u64) -> Result<(), String> {
            self.got.push(text.to_string());
            Ok(())
        }
    }

    fn run(body: &str, records: &str, captures: &[&str]) -> Result<(Vec<String>, Page), String> {
        // Small pieces, as a network may give them.
        parse_in(body.as_bytes(), vec![3], &shape(records, captures))
    }

    #[test]
    fn records_and_captures_in_any_order() {
        let (r, p) = run(r#"[{"id":1},{"id":2,"s":"a\"b"}]"#, "", &[]).unwrap();
        assert_eq!(r, vec![r#"{"id":1}"#, r#"{"id":2,"s":"a\"b"}"#]);
        assert_eq!(p.records, 2);
        let body = r#"{"meta":{"next_cursor":"c2","total":7},"data":{"items":[{"id":1}],"x":[1,{"y":2}]},"links":{"next":null}}"#;
        let (r, p) = run(
            body,
            "data.items",
            &["meta.next_cursor", "links.next", "meta.total"],
        )
        .unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(p.captured[0], Some(serde_json::json!("c2")));
        assert_eq!(p.captured[1], Some(serde_json::Value::Null));
        assert_eq!(p.captured[2], Some(serde_json::json!(7)));
        // Captures after the records are seen too.
        let (_, p) = run(r#"{"data":[],"next":"u"}"#, "data", &["next"]).unwrap();
        assert_eq!(p.captured[0], Some(serde_json::json!("u")));
        let (r, _) = run(r#"{"data":null}"#, "data", &[]).unwrap();
        assert!(r.is_empty());
        // An empty capture path (a strategy's unset field) captures nothing.
        let mut sh = shape("data", &["n"]);
        sh.captures.insert(0, Vec::new());
        let (r, p) = parse_in(br#"{"n":1,"data":[{}]}"#, vec![2], &sh).unwrap();
        assert_eq!(
            (r.len(), &p.captured[..]),
            (1, &[None, Some(serde_json::json!(1))][..])
        );
        let (r, _) = run(" \n[ 1 , \"x\" ,{} ] \n", "", &[]).unwrap();
        assert_eq!(r, vec!["1", "\"x\"", "{}"]);
        let (_, p) = run(r#"{"n": -1.5e3, "data": []}"#, "data", &["n"]).unwrap();
        assert_eq!(p.captured[0], Some(serde_json::json!(-1500.0)));
    }

    #[test]
    fn bad_bodies_say_where() {
        let e = run(r#"{"data":[{"id":1},{"id":2,]}"#, "data", &[]).unwrap_err();
        assert!(e.contains("`data[1]`") && e.contains("column"), "{e}");
        let e = run("[{\"id\":1},\n{\"id\":2},]", "", &[]).unwrap_err();
        assert!(e.contains("`[2]`") && e.contains("line 2 column 10"), "{e}");
        let e = run(r#"{"items":[], "page": 2}"#, "", &[]).unwrap_err();
        assert!(
            e.contains("keys: items, page") && e.contains("records:"),
            "{e}"
        );
        let e = run(r#"{"items":[]}"#, "data.items", &[]).unwrap_err();
        assert!(e.contains("no `data.items`"), "{e}");
        let e = run(r#"[{"id":1}] x"#, "", &[]).unwrap_err();
        assert!(e.contains("trailing"), "{e}");
        let e = run(r#"[{"id":1}"#, "", &[]).unwrap_err();
        assert!(e.contains("EOF"), "{e}");
        let e = run("", "", &[]).unwrap_err();
        assert!(e.contains("EOF"), "{e}");
        let e = run(r#"{"data": 7}"#, "data", &[]).unwrap_err();
        assert!(e.contains("an array of records in `data`"), "{e}");
        let e = run(r#"{"x": tru, "data": []}"#, "data", &[]).unwrap_err();
        assert!(e.contains("malformed JSON") && e.contains("`x`"), "{e}");
        let e = run(r#"{"x": [1}, "data": []}"#, "data", &[]).unwrap_err();
        assert!(e.contains("closing bracket"), "{e}");
        let e = run(r#"{"data" 1}"#, "data", &[]).unwrap_err();
        assert!(e.contains("expected `:`"), "{e}");
        let e = parse_in(b"[\"a\xff\"]", vec![2], &shape("", &[])).unwrap_err();
        assert!(e.contains("UTF-8"), "{e}");
    }

    /// A seeded random generator (SplitMix64).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn text(r: &mut Rng) -> String {
        const PARTS: &[&str] = &[
            "a", "é", "🦀", "\"", "\\", "\n", "{", "]", ",", ":", " ", "\u{1}", "id",
        ];
        (0..r.below(6))
            .map(|_| PARTS[r.below(PARTS.len() as u64) as usize])
            .collect()
    }

    fn value(r: &mut Rng, depth: u32) -> serde_json::Value {
        use serde_json::Value as V;
        match r.below(if depth > 3 { 5 } else { 7 }) {
            0 => V::Null,
            1 => V::Bool(r.below(2) == 1),
            2 => serde_json::json!(r.next() as i64 >> r.below(60)),
            3 => serde_json::json!((r.next() % 100_000) as f64 / 7.0),
            4 => V::String(text(r)),
            5 => V::Array((0..r.below(4)).map(|_| value(r, depth + 1)).collect()),
            _ => V::Object(
                (0..r.below(4))
                    .map(|_| (text(r), value(r, depth + 1)))
                    .collect(),
            ),
        }
    }

    /// A body of the given shape around `records`, with noise around both.
    fn body(
        r: &mut Rng,
        path: &[&str],
        records: serde_json::Value,
        captured: &serde_json::Value,
    ) -> serde_json::Value {
        let mut v = records;
        for (i, k) in path.iter().enumerate().rev() {
            let mut m = serde_json::Map::new();
            for _ in 0..r.below(3) {
                m.insert(format!("noise{}", r.below(9)), value(r, 2));
            }
            if i == 0 {
                m.insert("next".into(), captured.clone());
            }
            m.insert((*k).into(), v);
            v = serde_json::Value::Object(m);
        }
        v
    }

    /// The records and captured value of random bodies, cut at random places and
    /// pretty or compact, equal what serde_json reads from the whole body.
    #[test]
    fn seeded_bodies_parse_as_serde_json_reads_them() {
        let seed: u64 = std::env::var("PAGE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(17);
        let mut r = Rng(seed);
        for case in 0..400 {
            let recs: Vec<serde_json::Value> = (0..r.below(8)).map(|_| value(&mut r, 0)).collect();
            let path: &[&str] =
                [&[][..], &["data"][..], &["data", "items"][..]][r.below(3) as usize];
            let cap = value(&mut r, 1);
            let doc = body(&mut r, path, serde_json::Value::Array(recs.clone()), &cap);
            let text = if r.below(2) == 0 {
                serde_json::to_vec(&doc).unwrap()
            } else {
                serde_json::to_vec_pretty(&doc).unwrap()
            };
            let sizes: Vec<usize> = (0..5).map(|_| 1 + r.below(40) as usize).collect();
            let captures: &[&str] = if path.is_empty() { &[] } else { &["next"] };
            let sh = shape(&path.join("."), captures);
            let (got, page) = parse_in(&text, sizes.clone(), &sh).unwrap_or_else(|e| {
                panic!(
                    "seed {seed} case {case}: {e}\n{}",
                    String::from_utf8_lossy(&text)
                )
            });
            let got: Vec<serde_json::Value> = got
                .iter()
                .map(|t| serde_json::from_str(t).unwrap())
                .collect();
            assert_eq!(got, recs, "seed {seed} case {case}");
            assert_eq!(page.records, recs.len() as u64);
            if !path.is_empty() {
                assert_eq!(
                    page.captured[0].as_ref(),
                    Some(&cap),
                    "seed {seed} case {case}"
                );
            }
            // Any cut of a valid body is an error, never a panic or a short page.
            let cut = r.below(text.len() as u64) as usize;
            if let Ok((got, _)) = parse_in(&text[..cut], sizes.clone(), &sh) {
                let whole = serde_json::from_slice::<serde_json::Value>(&text[..cut]);
                assert!(
                    whole.is_ok(),
                    "seed {seed} case {case}: a cut body parsed: {got:?}"
                );
            }
            // A byte changed anywhere: an error or a parse, never a panic.
            let mut bad = text.clone();
            let i = r.below(bad.len() as u64) as usize;
            bad[i] = b"{}[],:\"\\x1 "[r.below(11) as usize];
            let _ = parse_in(&bad, sizes, &sh);
        }
    }
}
