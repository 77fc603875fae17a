//! One response body: its records streamed to a callback as they are parsed, and the
//! few other fields pagination needs (`meta.next_cursor`, `links.next`, a total)
//! captured on the way, wherever they appear in the body.
//!
//! The body arrives in chunks over a bounded channel ([`ChunkReader`]) and is parsed on
//! a blocking thread as it comes: a page is never held whole, only its rows.

use std::io::Read;

use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Where a page's records are and what else to capture.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// The path of the array of records (empty: the body is the array).
    pub records: Vec<String>,
    /// Paths of single values to capture.
    pub captures: Vec<Vec<String>>,
}

/// What a page held besides its records.
#[derive(Debug, Default)]
pub struct Page {
    /// Records seen.
    pub records: u64,
    /// The captured values, by the position of their path in [`Shape::captures`].
    pub captured: Vec<Option<serde_json::Value>>,
}

/// Called with each record's JSON text and 1-based position; `Err` stops the parse.
pub type OnRecord<'f> = dyn FnMut(&str, u64) -> Result<(), String> + 'f;

/// Parses one body from `input`.
///
/// # Errors
/// A message with the parser's line and column and the JSON path it was at
/// (`data.items[41]`) for malformed JSON, records that are not an array, a body
/// without the records path, or the callback's error.
pub fn parse(input: impl Read, shape: &Shape, on: &mut OnRecord<'_>) -> Result<Page, String> {
    // The parser reads a byte at a time: through a buffer, not the channel.
    let input = std::io::BufReader::with_capacity(64 << 10, input);
    let mut ctx = Ctx {
        shape,
        page: Page {
            records: 0,
            captured: vec![None; shape.captures.len()],
        },
        on,
        found: false,
        at: String::new(),
    };
    let mut de = serde_json::Deserializer::from_reader(input);
    let res = Walk {
        ctx: &mut ctx,
        depth: 0,
        path: Vec::new(),
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Err(e) = res {
        let at = if ctx.at.is_empty() {
            "the top".to_string()
        } else {
            format!("`{}`", ctx.at)
        };
        return Err(format!("{e} (at {at} of the response)"));
    }
    if !ctx.found {
        return Err(format!(
            "the response has no `{}` (records:); check the path against a response of the API",
            shape.records.join(".")
        ));
    }
    Ok(ctx.page)
}

struct Ctx<'s, 'f> {
    shape: &'s Shape,
    page: Page,
    on: &'f mut OnRecord<'f>,
    found: bool,
    /// The JSON path being parsed, for messages.
    at: String,
}

struct Walk<'c, 's, 'f> {
    ctx: &'c mut Ctx<'s, 'f>,
    depth: usize,
    path: Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.path == self.ctx.shape.records {
            d.deserialize_any(RecordsV { ctx: self.ctx })
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let _ = self.depth;
        while let Some(key) = map.next_key::<String>()? {
            let mut child = self.path.clone();
            child.push(key);
            let shape = self.ctx.shape;
            if let Some(i) = shape.captures.iter().position(|c| *c == child)
                && child != shape.records
            {
                let v: serde_json::Value = map.next_value()?;
                self.ctx.page.captured[i] = Some(v);
            } else if shape.records.starts_with(&child)
                || shape.captures.iter().any(|c| c.starts_with(&child))
            {
                self.ctx.at = child.join(".");
                map.next_value_seed(Walk {
                    ctx: &mut *self.ctx,
                    depth: self.depth + 1,
                    path: child,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

/// The array of records: each element handed over as it is parsed.
struct RecordsV<'c, 's, 'f> {
    ctx: &'c mut Ctx<'s, 'f>,
}

impl RecordsV<'_, '_, '_> {
    fn what(&self) -> String {
        if self.ctx.shape.records.is_empty() {
            "the response".into()
        } else {
            format!("`{}`", self.ctx.shape.records.join("."))
        }
    }
}

impl<'de> Visitor<'de> for RecordsV<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an array of records in {}", self.what())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error;
        self.ctx.found = true;
        let base = self.ctx.shape.records.join(".");
        let mut pos = 0u64;
        loop {
            self.ctx.at = format!("{base}[{pos}]");
            let Some(v) = seq.next_element::<Box<RawValue>>()? else {
                break;
            };
            pos += 1;
            (self.ctx.on)(v.get(), pos).map_err(A::Error::custom)?;
        }
        self.ctx.page.records = pos;
        self.ctx.at = base;
        Ok(())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        // `null`: no records on this page.
        self.ctx.found = true;
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error;
        let mut keys = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            if keys.len() < 12 {
                keys.push(k);
            }
            map.next_value::<IgnoredAny>()?;
        }
        let hint = if self.ctx.shape.records.is_empty() {
            "set `records:` to the path of its array of records"
        } else {
            "point `records:` at the array of records inside it"
        };
        Err(A::Error::custom(format!(
            "{} is a JSON object (keys: {}), not an array of records; {hint}",
            self.what(),
            keys.join(", ")
        )))
    }
}

/// A [`Read`] over body chunks sent from the async side; an `Err` chunk is the
/// transport's failure, the channel's end is the body's end.
pub struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    cur: Bytes,
}

impl ChunkReader {
    /// A reader of what `rx` receives.
    pub fn new(rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>) -> ChunkReader {
        ChunkReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &str, records: &str, captures: &[&str]) -> Result<(Vec<String>, Page), String> {
        let shape = Shape {
            records: records
                .split('.')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            captures: captures
                .iter()
                .map(|c| c.split('.').map(String::from).collect())
                .collect(),
        };
        let mut got = Vec::new();
        // Small reads, as a network gives them.
        struct Slow<'a>(&'a [u8]);
        impl Read for Slow<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(3);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let page = parse(Slow(body.as_bytes()), &shape, &mut |t, _| {
            got.push(t.to_string());
            Ok(())
        })?;
        Ok((got, page))
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
    }

    #[test]
    fn bad_bodies_say_where() {
        let e = run(r#"{"data":[{"id":1},{"id":2,]}"#, "data", &[]).unwrap_err();
        assert!(e.contains("`data[1]`") && e.contains("column"), "{e}");
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
    }
}
