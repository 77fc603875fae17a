//! One endpoint, resolved from its table's options and ready to read: its URL,
//! credentials, client (retries, rate limit) and pages, fetched and parsed one by one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anchovy_core::http::{self, Client, ClientOptions, RateLimiter, RetryPolicy, reqwest};
use anchovy_core::{Batch, SessionCtx, TableOptions, Tbl, Value};

use super::auth::{self, Auth, AuthSpec};
use super::cursor::{Incremental, Max};
use super::paginate::{self, Pager, Pagination};
use super::{Downloader, RestOptions, opt_err};
use crate::error::PluginError;
use crate::formats::json::{BodyRecords, JsonFormat, JsonOptions, Records};
use crate::formats::json_stream::{self as page, Shape};
use anchovy_core::connection::{Missing, substitute, substitute_tree};

/// Bytes of an error response shown in messages.
const EXCERPT: usize = 300;

/// The first bytes of a body, as text on one line.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(EXCERPT)];
    let mut s = String::from_utf8_lossy(cut).replace(['\n', '\r'], " ");
    if body.len() > EXCERPT {
        s.push_str("...");
    }
    if s.trim().is_empty() {
        s = "(empty body)".into();
    }
    anchovy_core::secret::redact(&s).into_owned()
}

impl Downloader {
    /// The endpoint of table `t` (one of the tables `spec::discover` lists).
    pub(super) fn endpoint(&self, sess: &SessionCtx, t: &Tbl) -> Result<Endpoint, PluginError> {
        let o = RestOptions::of(t).map_err(PluginError::from_option)?;
        let conn_id = o
            .connection
            .clone()
            .unwrap_or_else(|| sess.settings.id.clone());
        let conn = sess.connections.get(&conn_id);
        let sub = |text: &str, key: &str, secret: bool| -> Result<String, PluginError> {
            substitute(text, &conn_id, conn, secret).map_err(|m| match m {
                Missing::Conn(e) => PluginError::Core(e),
                Missing::Syntax(m) => opt_err(&t.name, key, m),
            })
        };
        let base = match (&o.base_url, conn.and_then(|c| c.get("base_url"))) {
            (Some(b), _) => sub(b, "base_url", false)?,
            (None, Some(b)) => b.to_string(),
            (None, None) => match &o.path {
                Some(p) if p.starts_with("http://") || p.starts_with("https://") => String::new(),
                _ => {
                    return Err(opt_err(
                        &t.name,
                        "base_url",
                        format!(
                            "no base URL: set `base_url:` or {}",
                            anchovy_core::connection::var_name(&conn_id, "BASE_URL")
                        ),
                    ));
                }
            },
        };
        let path = sub(o.path.as_deref().unwrap_or(""), "path", false)?;
        let full = if path.starts_with("http://") || path.starts_with("https://") {
            path
        } else if path.is_empty() {
            base
        } else {
            format!(
                "{}/{}",
                base.trim_end_matches('/'),
                path.trim_start_matches('/')
            )
        };
        // Placeholders stay in the template; the rest must be a URL.
        let probe = full.replace(['{', '}'], "");
        url::Url::parse(&probe)
            .map_err(|e| opt_err(&t.name, "path", format!("`{full}` is not a URL: {e}")))?;
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut params = Vec::new();
        for (k, v) in o.params.iter().flatten() {
            params.push((k.clone(), sub(&text(v), "params", true)?));
        }
        let mut headers = Vec::new();
        for (k, v) in o.headers.iter().flatten() {
            let v = sub(&text(v), "headers", true)?;
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| opt_err(&t.name, "headers", format!("`{k}` is not a header name")))?;
            let mut value = reqwest::header::HeaderValue::from_str(&v).map_err(|_| {
                opt_err(
                    &t.name,
                    "headers",
                    format!("the value of `{k}` cannot be sent in a header"),
                )
            })?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        let mut policy = RetryPolicy::default();
        if let Some(r) = &o.retry {
            let r = r.as_object().ok_or_else(|| opt_err(&t.name, "retry", "a map: {max_retries, initial_backoff, max_backoff, max_elapsed, retry_after_cap}"))?;
            for (k, v) in r {
                let dur = || duration(&t.name, &format!("retry.{k}"), v);
                match k.as_str() {
                    "max_retries" => {
                        policy.max_retries = v
                            .as_u64()
                            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                            .and_then(|n| u32::try_from(n).ok())
                            .ok_or_else(|| {
                                opt_err(&t.name, "retry.max_retries", "a whole number")
                            })?
                    }
                    "initial_backoff" => policy.initial_backoff = dur()?,
                    "max_backoff" => policy.max_backoff = dur()?,
                    "max_elapsed" => policy.max_elapsed = dur()?,
                    "retry_after_cap" => policy.retry_after_cap = dur()?,
                    other => {
                        return Err(opt_err(
                            &t.name,
                            "retry",
                            format!(
                                "unknown key `{other}`; use max_retries, initial_backoff, max_backoff, max_elapsed, retry_after_cap"
                            ),
                        ));
                    }
                }
            }
        }
        let timeout = match &o.timeout {
            Some(v) => duration(&t.name, "timeout", v)?,
            None => ClientOptions::default().timeout,
        };
        let total_timeout = o
            .total_timeout
            .as_ref()
            .map(|v| duration(&t.name, "total_timeout", v))
            .transpose()?;
        let client = Client::new(&ClientOptions {
            timeout,
            policy,
            ..ClientOptions::default()
        })?;
        let host = url::Url::parse(&probe).ok().map(|u| {
            format!(
                "{}:{}",
                u.host_str().unwrap_or(""),
                u.port_or_known_default().unwrap_or(0)
            )
        });
        let limiter = match (&o.max_requests_per_second, host) {
            (Some(v), Some(host)) => {
                let rate = v
                    .as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| {
                        opt_err(
                            &t.name,
                            "max_requests_per_second",
                            format!("`{v}` is not a positive number"),
                        )
                    })?;
                let mut l = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
                match l.get(&host) {
                    Some((r, lim)) => {
                        if *r != rate {
                            tracing::warn!(table = %t.name, host = %host, rate, shared = *r, "another table set another max_requests_per_second for this host: the tables share the first one's");
                        }
                        Some(lim.clone())
                    }
                    None => {
                        let lim = Arc::new(RateLimiter::new(rate).ok_or_else(|| {
                            opt_err(&t.name, "max_requests_per_second", "must be positive")
                        })?);
                        l.insert(host, (rate, lim.clone()));
                        Some(lim)
                    }
                }
            }
            _ => None,
        };
        let client = client.limited(limiter);
        let auth_spec = match &o.auth {
            None => AuthSpec::None,
            Some(v) => {
                let v = substitute_tree(v, &conn_id, conn, false).map_err(|m| match m {
                    Missing::Conn(e) => PluginError::Core(e),
                    Missing::Syntax(m) => opt_err(&t.name, "auth", m),
                })?;
                serde_json::from_value::<AuthSpec>(v).map_err(|e| {
                    opt_err(
                        &t.name,
                        "auth",
                        format!("{e}; types: bearer, basic, api_key, oauth2_client_credentials"),
                    )
                })?
            }
        };
        for s in auth::secrets(&auth_spec) {
            anchovy_core::secret::register(s);
        }
        let auth = Auth::new(&t.name, &auth_spec, &client, &self.tokens)?;
        let pagination = match &o.pagination {
            None => Pagination::None,
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                opt_err(
                    &t.name,
                    "pagination",
                    format!("{e}; types: none, page_number, offset, cursor, next_url, link_header"),
                )
            })?,
        };
        // A page size among the params is the page size.
        let pagination = match pagination {
            Pagination::PageNumber {
                page_param,
                size_param,
                size: None,
                start,
                total_path,
                total_pages_path,
            } => {
                let size = size_param
                    .as_ref()
                    .and_then(|sp| params.iter().find(|(k, _)| k == sp))
                    .and_then(|(_, v)| v.parse().ok());
                Pagination::PageNumber {
                    page_param,
                    size_param,
                    size,
                    start,
                    total_path,
                    total_pages_path,
                }
            }
            p => p,
        };
        let incremental = o
            .incremental
            .as_ref()
            .map(|v| {
                serde_json::from_value::<Incremental>(v.clone())
                    .map_err(|e| opt_err(&t.name, "incremental", e.to_string()))
            })
            .transpose()?;
        // The lookback applies from the second run on: checked now, not then.
        if let Some(lb) = incremental.as_ref().and_then(|i| i.lookback.as_ref()) {
            let text = match lb {
                serde_json::Value::String(x) => x.trim().to_string(),
                other => other.to_string(),
            };
            let number = text.parse::<f64>().is_ok_and(|n| n.is_finite() && n >= 0.0);
            if !number && anchovy_core::config::parse_duration(&text).is_none() {
                return Err(opt_err(
                    &t.name,
                    "incremental.lookback",
                    format!("`{text}` is neither a duration (10m, 2h, 1d) nor a number"),
                ));
            }
        }
        if let (Some(i), Some(p)) = (&incremental, &o.parent)
            && i.sorted
        {
            tracing::warn!(table = %t.name, parent = %p, "`sorted: true` does not apply to a child endpoint (its records come parent by parent): the cursor is committed at the end of the read");
        }
        let json = JsonFormat::new(
            &JsonOptions {
                records: None,
                provenance: false,
            },
            &t.columns,
        );
        Ok(Endpoint {
            table: t.name.clone(),
            url: full,
            params,
            headers,
            auth,
            records: o
                .records
                .as_deref()
                .map(|r| {
                    r.split('.')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            pagination,
            incremental,
            parent: o.parent.clone(),
            client,
            total_timeout,
            json: Arc::new(json),
        })
    }
}

fn duration(table: &str, key: &str, v: &serde_json::Value) -> Result<Duration, PluginError> {
    let text = match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    anchovy_core::config::parse_duration(&text).ok_or_else(|| {
        opt_err(
            table,
            key,
            format!("`{text}` is not a duration (30s, 5m, 1h)"),
        )
    })
}

/// One endpoint, ready to read.
pub(super) struct Endpoint {
    pub(super) table: String,
    /// The URL, `{field}` placeholders unresolved.
    pub(super) url: String,
    pub(super) params: Vec<(String, String)>,
    pub(super) headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    pub(super) auth: Auth,
    pub(super) records: Vec<String>,
    pub(super) pagination: Pagination,
    pub(super) incremental: Option<Incremental>,
    pub(super) parent: Option<String>,
    pub(super) client: Client,
    pub(super) total_timeout: Option<Duration>,
    pub(super) json: Arc<JsonFormat>,
}

/// The placeholders of a URL template (`{id}`).
pub(super) fn placeholders(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = url;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else { break };
        out.push(rest[i + 1..i + j].to_string());
        rest = &rest[i + j + 1..];
    }
    out
}

/// How a fetch failed.
enum Fetch {
    /// The body was cut short: the page may be fetched again.
    Transport(String),
    /// Final.
    Fail(PluginError),
}

/// What the rows of a read's pages get: columns carried from a parent, the cursor
/// field to watch, the batch size.
pub(super) struct PageCtx<'a> {
    pub(super) inherited: &'a [(String, Value)],
    pub(super) cursor: Option<&'a str>,
    pub(super) batch_size: usize,
}

/// One page, parsed.
pub(super) struct Got {
    pub(super) page: page::Page,
    pub(super) batches: Vec<Batch>,
    pub(super) links: Vec<String>,
    pub(super) max: Max,
    /// The next page's request, sent as soon as this page's body was whole.
    pub(super) ahead: Option<Ahead>,
}

/// A request sent before its page is wanted: with `link_header` pagination the next
/// URL is known from the headers, so it goes out the moment the current body has
/// arrived (one request in flight, as before) and its answer comes while the current
/// page is parsed. Dropped unused, it is aborted.
pub(super) struct Ahead {
    pub(super) url: url::Url,
    pub(super) handle: Option<tokio::task::JoinHandle<Result<reqwest::Response, PluginError>>>,
}

impl Ahead {
    /// The response, if this is the request for `url`.
    fn take_for(
        mut self,
        url: &url::Url,
    ) -> Option<tokio::task::JoinHandle<Result<reqwest::Response, PluginError>>> {
        if &self.url == url {
            self.handle.take()
        } else {
            None
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// A [`page::Body`] over a `reqwest` response.
struct Response(reqwest::Response);

impl page::Body for Response {
    async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, String> {
        self.0.chunk().await.map_err(|e| http::describe(&e))
    }
}

/// A page's body, which sends the next page's request the moment it has arrived:
/// with a `Content-Length`, as its last bytes come, before they are parsed, so the
/// server prepares the next page while this one is parsed.
struct Streamed<'e> {
    resp: Response,
    ep: &'e Endpoint,
    next: Option<url::Url>,
    ahead: Option<Result<Ahead, PluginError>>,
    /// Bytes still to come, when the length is known.
    left: Option<u64>,
    /// The body's end, seen early.
    ended: bool,
}

impl<'e> Streamed<'e> {
    fn new(resp: reqwest::Response, ep: &'e Endpoint, next: Option<url::Url>) -> Self {
        Streamed {
            left: resp.content_length(),
            resp: Response(resp),
            ep,
            next,
            ahead: None,
            ended: false,
        }
    }

    /// The body has ended: the connection is free for the next page's request.
    async fn send_ahead(&mut self) {
        if let Some(n) = self.next.take() {
            self.ahead = Some(self.ep.send_ahead(n));
            // Let the request go out before this task parses again.
            tokio::task::yield_now().await;
        }
    }
}

impl page::Body for Streamed<'_> {
    async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, String> {
        if self.ended {
            return Ok(None);
        }
        let c = self.resp.chunk().await?;
        match &c {
            None => {
                self.ended = true;
                self.send_ahead().await;
            }
            Some(b) => {
                if let Some(left) = &mut self.left {
                    *left = left.saturating_sub(b.len() as u64);
                    if *left == 0 {
                        // The last bytes: the end is known now, no need to wait for it.
                        if self.resp.chunk().await?.is_none() {
                            self.ended = true;
                            self.send_ahead().await;
                        } else {
                            return Err("the body is longer than its Content-Length".into());
                        }
                    }
                }
            }
        }
        Ok(c)
    }
}

impl Endpoint {
    /// The URL with placeholders filled and the parameters set (later pairs win).
    pub(super) fn url_with(
        &self,
        vars: &[(String, String)],
        params: &[(String, String)],
    ) -> Result<url::Url, PluginError> {
        let mut u = self.url.clone();
        for (k, v) in vars {
            let enc: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
            u = u.replace(&format!("{{{k}}}"), &enc);
        }
        let mut url = url::Url::parse(&u)
            .map_err(|e| opt_err(&self.table, "path", format!("`{u}` is not a URL: {e}")))?;
        let mut merged: Vec<(String, String)> = url
            .query_pairs()
            .map(|(a, b)| (a.into_owned(), b.into_owned()))
            .collect();
        for (k, v) in self.params.iter().chain(params) {
            merged.retain(|(a, _)| a != k);
            merged.push((k.clone(), v.clone()));
        }
        if merged.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(merged);
        }
        Ok(url)
    }

    /// Fetches and parses one page, again when its body is cut short.
    /// A GET of `url` with the table's headers (credentials are added when sent).
    fn request(&self, url: &url::Url) -> Result<reqwest::Request, PluginError> {
        let mut req = self
            .client
            .http()
            .get(url.clone())
            .build()
            .map_err(|e| opt_err(&self.table, "path", e.to_string()))?;
        for (k, v) in &self.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        if !req.headers().contains_key(reqwest::header::ACCEPT) {
            req.headers_mut().insert(
                reqwest::header::ACCEPT,
                reqwest::header::HeaderValue::from_static("application/json"),
            );
        }
        Ok(req)
    }

    /// Sends the request for `url` now, to be taken by the next [`Endpoint::fetch`].
    fn send_ahead(&self, url: url::Url) -> Result<Ahead, PluginError> {
        let mut req = self.request(&url)?;
        let (auth, client) = (self.auth.clone(), self.client.clone());
        let handle = tokio::spawn(async move {
            auth.apply(&mut req).await?;
            Ok(client.send(req).await?)
        });
        Ok(Ahead {
            url,
            handle: Some(handle),
        })
    }

    pub(super) async fn fetch(
        &self,
        url: &url::Url,
        pc: &PageCtx<'_>,
        rejects: &mut anchovy_core::reject::Rejects,
        ahead: Option<Ahead>,
    ) -> Result<Got, PluginError> {
        let since = Instant::now();
        let mut attempt = 0u32;
        let mut refreshed = false;
        let shown = http::display_url(url);
        let mut pre = ahead.and_then(|a| a.take_for(url));
        loop {
            attempt += 1;
            let resp = match pre.take() {
                Some(h) => h.await.map_err(|e| PluginError::Data {
                    location: format!("GET {shown}"),
                    message: format!("the request stopped: {e}"),
                })??,
                None => {
                    let mut req = self.request(url)?;
                    self.auth.apply(&mut req).await?;
                    self.client.send(req).await?
                }
            };
            let status = resp.status();
            if status.as_u16() == 401 && !refreshed && self.auth.refresh().await? {
                tracing::info!(url = %shown, "401 Unauthorized: fetched a new token; sending again");
                refreshed = true;
                continue;
            }
            if !status.is_success() {
                let body = read_some(resp).await;
                let hint = match status.as_u16() {
                    401 | 403 => "; check the credentials (auth:) and their connection attributes",
                    404 => "; check base_url and path",
                    _ => "",
                };
                return Err(anchovy_core::Error::Http {
                    request: format!("GET {shown}"),
                    message: format!("{status}: {}{hint}", excerpt(&body)),
                }
                .into());
            }
            let links: Vec<String> = resp
                .headers()
                .get_all(reqwest::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok().map(String::from))
                .collect();
            let next = match self.pagination {
                Pagination::LinkHeader => links
                    .iter()
                    .find_map(|h| paginate::next_link(h))
                    .and_then(|n| url.join(&n).ok())
                    .filter(|n| n != url),
                _ => None,
            };
            match self.parse(resp, &shown, pc, rejects, next).await {
                Ok((page, batches, max, ahead)) => {
                    return Ok(Got {
                        page,
                        batches,
                        links,
                        max,
                        ahead,
                    });
                }
                Err(Fetch::Fail(e)) => return Err(e),
                Err(Fetch::Transport(m)) => {
                    match self.client.next_wait(attempt, since) {
                        Some(w) => {
                            tracing::warn!(url = %shown, attempt, wait_ms = w.as_millis() as u64, "the response was cut short ({m}); fetching the page again");
                            self.client.stats().retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(w).await;
                        }
                        None => {
                            return Err(anchovy_core::Error::Http {
                            request: format!("GET {shown}"),
                            message: format!("the response was cut short: {m} (gave up after {attempt} attempts)"),
                        }
                        .into());
                        }
                    }
                }
            }
        }
    }

    /// Parses a body as it arrives; the page's rows come back whole or not at all.
    async fn parse(
        &self,
        resp: reqwest::Response,
        shown: &str,
        pc: &PageCtx<'_>,
        rejects: &mut anchovy_core::reject::Rejects,
        next: Option<url::Url>,
    ) -> Result<(page::Page, Vec<Batch>, Max, Option<Ahead>), Fetch> {
        let shape = Shape {
            records: self.records.clone(),
            captures: Pager::new(self.pagination.clone()).captures(),
            ..Shape::default()
        };
        let label = format!("GET {shown}");
        let rj = &mut *rejects;
        // A body cut short is read again: what this read rejected must not count twice.
        let mark = rj.mark();
        let mut body = Streamed::new(resp, self, next);
        let mut batches = Vec::new();
        let mut max = Max::default();
        let failed;
        let res = {
            let mut emit = |b: Batch| {
                batches.push(b);
                true
            };
            let mut see = |v: &Value| max.see_value(v);
            let mut recs = Records::new(
                &self.json,
                &label,
                &self.table,
                pc.batch_size,
                rj,
                &mut emit,
            );
            if let Some(c) = pc.cursor {
                recs.watch(c, &mut see);
            }
            let mut on = BodyRecords {
                recs: &mut recs,
                inherited: pc.inherited,
                failed: None,
            };
            let res = page::parse(&mut body, &shape, &mut on).await;
            failed = on.failed;
            recs.flush();
            res
        };
        let ahead = body.ahead.transpose().map_err(Fetch::Fail)?;
        // A bad record's own error names the page and the record already.
        if let Some(e) = failed {
            return Err(Fetch::Fail(e));
        }
        match res {
            Ok(p) => Ok((p, batches, max, ahead)),
            Err(page::PageError::Cut(m)) => {
                rejects.rollback(mark);
                Err(Fetch::Transport(m))
            }
            Err(page::PageError::Bad(m)) => Err(Fetch::Fail(PluginError::Data {
                location: label,
                message: m,
            })),
        }
    }
}

/// Up to a few KiB of an error response's body.
async fn read_some(mut resp: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < 4096 {
        match resp.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c),
            _ => break,
        }
    }
    out
}
