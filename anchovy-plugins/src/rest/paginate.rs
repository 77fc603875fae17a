//! Pagination strategies: how the request for the next page is made from the last
//! response, and when there is none.
//!
//! | `type` | next page | stops on |
//! |--------|-----------|----------|
//! | `none` (default) | - | the first page |
//! | `page_number` | `page_param` (default `page`) + 1, from `start` (default 1); `size_param`=`size` sent when both are set | an empty page; a page shorter than `size`; `total_path` (records) or `total_pages_path` reached |
//! | `offset` | `offset_param` (default `offset`) + the records of the page, `limit_param` (default `limit`) = `limit` (default 100) | an empty page; a page shorter than `limit`; `total_path` reached |
//! | `cursor` | `param` (default `cursor`) = the value at `cursor_path` | no value (missing, `null`, `""`); an empty page |
//! | `next_url` | the URL at `next_path` (relative ones resolved against the request) | no URL |
//! | `link_header` | the `Link: <...>; rel="next"` header's URL | no such link |
//!
//! A cursor or URL that repeats the previous one is an error (the API would be read in
//! a loop). Short-page stops need `size`/`limit` not above what the API serves per
//! page: a server that caps it lower ends the read early.

use serde::Deserialize;

/// A table's `pagination:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One page.
    None,
    /// `?page=N`.
    PageNumber {
        /// The page parameter.
        #[serde(default = "page")]
        page_param: String,
        /// The page size parameter.
        #[serde(default)]
        size_param: Option<String>,
        /// The page size.
        #[serde(default)]
        size: Option<u64>,
        /// The first page's number.
        #[serde(default = "one", alias = "start_page")]
        start: u64,
        /// Path of the total number of records in the body.
        #[serde(default)]
        total_path: Option<String>,
        /// Path of the total number of pages in the body.
        #[serde(default)]
        total_pages_path: Option<String>,
    },
    /// `?offset=N&limit=M`.
    Offset {
        /// The offset parameter.
        #[serde(default = "offset")]
        offset_param: String,
        /// The limit parameter.
        #[serde(default = "limit")]
        limit_param: String,
        /// Records per page.
        #[serde(default = "hundred")]
        limit: u64,
        /// Path of the total number of records in the body.
        #[serde(default)]
        total_path: Option<String>,
    },
    /// A cursor from the body, sent as a parameter.
    Cursor {
        /// Path of the next cursor in the body.
        cursor_path: String,
        /// The parameter it is sent as.
        #[serde(default = "cursor")]
        param: String,
    },
    /// The next page's URL from the body.
    NextUrl {
        /// Path of the URL in the body.
        next_path: String,
    },
    /// The next page's URL from the `Link` header.
    LinkHeader,
}

fn page() -> String {
    "page".into()
}
fn offset() -> String {
    "offset".into()
}
fn limit() -> String {
    "limit".into()
}
fn cursor() -> String {
    "cursor".into()
}
fn one() -> u64 {
    1
}
fn hundred() -> u64 {
    100
}

/// The next request.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// The endpoint's URL with these parameters set (over the table's `params`).
    Params(Vec<(String, String)>),
    /// This URL, as the server gave it.
    Url(url::Url),
    /// No more pages.
    Done,
}

/// Where a read is in its pages.
#[derive(Debug)]
pub struct Pager {
    p: Pagination,
    page: u64,
    offset: u64,
    seen: u64,
    last_token: Option<String>,
}

fn split(p: &str) -> Vec<String> {
    p.split('.').map(String::from).collect()
}

fn as_u64(v: &Option<serde_json::Value>) -> Option<u64> {
    match v.as_ref()? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_token(v: &Option<serde_json::Value>) -> Option<String> {
    match v.as_ref()? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Pager {
    /// A read from the first page.
    pub fn new(p: Pagination) -> Pager {
        let page = match &p {
            Pagination::PageNumber { start, .. } => *start,
            _ => 0,
        };
        Pager {
            p,
            page,
            offset: 0,
            seen: 0,
            last_token: None,
        }
    }

    /// The body paths this strategy reads (see [`crate::formats::json_stream::Shape::captures`]), in
    /// the order [`Pager::next`] expects them.
    pub fn captures(&self) -> Vec<Vec<String>> {
        match &self.p {
            Pagination::PageNumber {
                total_path,
                total_pages_path,
                ..
            } => vec![
                total_path.as_deref().map(split).unwrap_or_default(),
                total_pages_path.as_deref().map(split).unwrap_or_default(),
            ],
            Pagination::Offset { total_path, .. } => {
                vec![total_path.as_deref().map(split).unwrap_or_default()]
            }
            Pagination::Cursor { cursor_path, .. } => vec![split(cursor_path)],
            Pagination::NextUrl { next_path } => vec![split(next_path)],
            _ => vec![],
        }
    }

    /// The parameters of the first request.
    pub fn first(&self) -> Vec<(String, String)> {
        match &self.p {
            Pagination::PageNumber {
                page_param,
                size_param,
                size,
                ..
            } => {
                let mut v = vec![(page_param.clone(), self.page.to_string())];
                if let (Some(sp), Some(s)) = (size_param, size) {
                    v.push((sp.clone(), s.to_string()));
                }
                v
            }
            Pagination::Offset {
                offset_param,
                limit_param,
                limit,
                ..
            } => vec![
                (offset_param.clone(), "0".into()),
                (limit_param.clone(), limit.to_string()),
            ],
            _ => vec![],
        }
    }

    /// The request after a page of `records` records, its captured values (in
    /// [`Pager::captures`] order) and its `Link` headers, fetched from `current`.
    ///
    /// # Errors
    /// A message when the API hands back the cursor or URL it was just given.
    pub fn next(
        &mut self,
        records: u64,
        captured: &[Option<serde_json::Value>],
        link: &[String],
        current: &url::Url,
    ) -> Result<Next, String> {
        self.seen += records;
        let cap = |i: usize| captured.get(i).cloned().flatten();
        Ok(match &self.p {
            Pagination::None => Next::Done,
            Pagination::PageNumber {
                page_param,
                size_param,
                size,
                total_path,
                total_pages_path,
                ..
            } => {
                let short = size.is_some_and(|s| records < s);
                let total = total_path
                    .as_ref()
                    .and(as_u64(&Some(cap(0).unwrap_or_default())));
                let pages = total_pages_path
                    .as_ref()
                    .and(as_u64(&Some(cap(1).unwrap_or_default())));
                if records == 0
                    || short
                    || total.is_some_and(|t| self.seen >= t)
                    || pages.is_some_and(|p| self.page >= p)
                {
                    Next::Done
                } else {
                    self.page += 1;
                    let mut v = vec![(page_param.clone(), self.page.to_string())];
                    if let (Some(sp), Some(s)) = (size_param, size) {
                        v.push((sp.clone(), s.to_string()));
                    }
                    Next::Params(v)
                }
            }
            Pagination::Offset {
                offset_param,
                limit_param,
                limit,
                total_path,
            } => {
                let total = total_path
                    .as_ref()
                    .and(as_u64(&Some(cap(0).unwrap_or_default())));
                if records == 0 || records < *limit || total.is_some_and(|t| self.seen >= t) {
                    Next::Done
                } else {
                    self.offset += records;
                    Next::Params(vec![
                        (offset_param.clone(), self.offset.to_string()),
                        (limit_param.clone(), limit.to_string()),
                    ])
                }
            }
            Pagination::Cursor { param, cursor_path } => match as_token(&cap(0)) {
                Some(_) if records == 0 => Next::Done,
                Some(t) => {
                    if self.last_token.as_deref() == Some(t.as_str()) {
                        return Err(format!(
                            "the API returned the same cursor twice at `{cursor_path}`; it would be read in a loop"
                        ));
                    }
                    self.last_token = Some(t.clone());
                    Next::Params(vec![(param.clone(), t)])
                }
                None => Next::Done,
            },
            Pagination::NextUrl { next_path } => match as_token(&cap(0)) {
                Some(u) => {
                    let next = current
                        .join(&u)
                        .map_err(|e| format!("`{next_path}` is not a URL: {e}"))?;
                    if &next == current {
                        return Err(format!(
                            "`{next_path}` names the page just read; the API would be read in a loop"
                        ));
                    }
                    Next::Url(next)
                }
                None => Next::Done,
            },
            Pagination::LinkHeader => match link.iter().find_map(|h| next_link(h)) {
                Some(u) => {
                    let next = current
                        .join(&u)
                        .map_err(|e| format!("the Link header's next is not a URL: {e}"))?;
                    if &next == current {
                        return Err(
                            "the Link header's next names the page just read; the API would be read in a loop"
                                .into(),
                        );
                    }
                    Next::Url(next)
                }
                None => Next::Done,
            },
        })
    }
}

/// The `rel="next"` target of a `Link` header value (RFC 8288):
/// `<https://x/?page=2>; rel="next", <https://x/?page=9>; rel="last"`.
pub fn next_link(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let end = start + rest[start..].find('>')?;
        let target = &rest[start + 1..end];
        let params_end = rest[end..].find('<').map_or(rest.len(), |i| end + i);
        let params = &rest[end + 1..params_end];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            })
        });
        if is_next {
            return Some(target.to_string());
        }
        rest = &rest[params_end..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn link_headers() {
        let h = r#"<http://x/u?_page=1&_limit=2>; rel="first", <http://x/u?_page=3&_limit=2>; rel="next", <http://x/u?_page=9>; rel="last""#;
        assert_eq!(next_link(h).unwrap(), "http://x/u?_page=3&_limit=2");
        assert_eq!(next_link(r#"</p/2>; rel=next"#).unwrap(), "/p/2");
        assert_eq!(next_link(r#"<a>; rel="prev next""#).unwrap(), "a");
        assert!(next_link(r#"<http://x/u?_page=1>; rel="first""#).is_none());
        assert!(next_link("").is_none());
    }

    #[test]
    fn page_numbers_stop_on_short_empty_or_total() {
        let p: Pagination = serde_json::from_value(serde_json::json!(
            {"type": "page_number", "page_param": "_page", "size_param": "_limit", "size": 2}))
        .unwrap();
        let mut pg = Pager::new(p);
        let u = url("http://x/");
        assert_eq!(
            pg.first(),
            vec![("_page".into(), "1".into()), ("_limit".into(), "2".into())]
        );
        assert_eq!(
            pg.next(2, &[None, None], &[], &u).unwrap(),
            Next::Params(vec![
                ("_page".into(), "2".into()),
                ("_limit".into(), "2".into())
            ])
        );
        assert_eq!(pg.next(1, &[None, None], &[], &u).unwrap(), Next::Done);
        let p: Pagination = serde_json::from_value(serde_json::json!(
            {"type": "page_number", "total_path": "meta.total"}))
        .unwrap();
        let mut pg = Pager::new(p);
        assert_eq!(pg.captures()[0], vec!["meta", "total"]);
        let t = [Some(serde_json::json!(5)), None];
        assert!(matches!(pg.next(3, &t, &[], &u).unwrap(), Next::Params(_)));
        assert_eq!(pg.next(2, &t, &[], &u).unwrap(), Next::Done);
    }

    #[test]
    fn offsets_cursors_and_urls() {
        let p: Pagination = serde_json::from_value(serde_json::json!(
            {"type": "offset", "offset_param": "_start", "limit_param": "_limit", "limit": 3}))
        .unwrap();
        let mut pg = Pager::new(p);
        let u = url("http://x/a?b=1");
        assert_eq!(
            pg.next(3, &[None], &[], &u).unwrap(),
            Next::Params(vec![
                ("_start".into(), "3".into()),
                ("_limit".into(), "3".into())
            ])
        );
        assert_eq!(pg.next(0, &[None], &[], &u).unwrap(), Next::Done);
        let p: Pagination = serde_json::from_value(
            serde_json::json!({"type": "cursor", "cursor_path": "meta.next"}),
        )
        .unwrap();
        let mut pg = Pager::new(p);
        let c = [Some(serde_json::json!("abc"))];
        assert_eq!(
            pg.next(5, &c, &[], &u).unwrap(),
            Next::Params(vec![("cursor".into(), "abc".into())])
        );
        assert!(pg.next(5, &c, &[], &u).unwrap_err().contains("same cursor"));
        assert_eq!(
            pg.next(5, &[Some(serde_json::json!(""))], &[], &u).unwrap(),
            Next::Done
        );
        let p: Pagination = serde_json::from_value(
            serde_json::json!({"type": "next_url", "next_path": "links.next"}),
        )
        .unwrap();
        let mut pg = Pager::new(p);
        assert_eq!(
            pg.next(1, &[Some(serde_json::json!("/a?page=2"))], &[], &u)
                .unwrap(),
            Next::Url(url("http://x/a?page=2"))
        );
        assert_eq!(
            pg.next(1, &[Some(serde_json::Value::Null)], &[], &u)
                .unwrap(),
            Next::Done
        );
        let e = serde_json::from_value::<Pagination>(serde_json::json!({"type": "pages"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("page_number"), "{e}");
    }
}
