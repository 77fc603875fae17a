//! `rest.Downloader`: HTTP JSON APIs declared in YAML, endpoint by endpoint, into the
//! datastore.
//!
//! - **What.** Each table is an endpoint: `path` under `base_url` (or the
//!   connection's `BASE_URL`), with `params` and `headers` sent on every request, `auth` ([`auth`]),
//!   `records` (the dotted path of the array of records in a response; omitted = the
//!   body is the array), `primary_key` (the table's `unique_by`), `columns` types and
//!   `pagination` ([`paginate`]). `${name}` in any of these is the attribute `name` of
//!   the table's connection (`connection:`, default: the anchovy's `--id`), as
//!   `ACHVY_CNXN__<ID>__<NAME>`; values put into `auth`, `headers` and `params` are
//!   registered as secrets.
//! - **Spec files.** `spec: connectors/shop.yaml` reads the endpoints from a file (its
//!   top-level keys are defaults of its `tbls:`), so one spec serves many anchovies:
//!   an entry named after one of its tables takes that table, any other entry takes
//!   them all (or those its `include:` patterns match); the entry's own keys win.
//! - **Child endpoints.** `parent: customers` with `path: /customers/{id}/orders`
//!   reads the parent endpoint and, for each of its records, the child path with the
//!   parent's fields put in; each placeholder's value is carried into the child rows
//!   as `<parent>_<field>`.
//! - **Incremental** ([`cursor`]): `incremental: {cursor, param, start, lookback,
//!   sorted}` sends the committed cursor as a request parameter and commits the
//!   greatest value read, in-band with the rows it covers: at the end of the read, or
//!   page by page with `sorted: true`. Without `incremental`, every run reads the
//!   endpoint whole and commits once, at the end, with the snapshot marker the
//!   uploader's `mode: replace` uses.
//! - **Exactly once.** A page's rows are held until the page is whole (a body cut
//!   short is fetched again and its partial rows dropped); nothing of a failed read is
//!   kept past the last commit, and the next run starts at the committed cursor.
//! - **Politeness** ([`anchovy_core::http`]): 429/503 wait as `Retry-After` asks,
//!   408/5xx and dropped connections back off with jitter, `max_requests_per_second`
//!   spaces the requests of every table on one host; other 4xx fail the table with the
//!   status, the URL (without secrets) and the first bytes of the body.

pub mod auth;
pub mod cursor;
mod endpoint;
pub mod page;
pub mod paginate;
mod spec;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anchovy_core::http::{self, RateLimiter};
use anchovy_core::operator::OperatorKind;
use anchovy_core::tbl::ColSelect;
use anchovy_core::{
    BoxError, Emitter, Operator, OperatorSpec, OptionDoc, SessionCtx, Source, TableOptions,
    TaskCtx, Tbl, Value, async_trait,
};

use self::auth::OAuth2;
use self::cursor::{CursorState, Max};
use self::endpoint::{Ahead, Endpoint, PageCtx, placeholders};
use self::paginate::{Next, Pager};
use crate::error::PluginError;
use crate::formats::json::{JsonFormat, JsonOptions};

anchovy_core::table_options! {
    /// The options of a `rest.Downloader` table (also the keys of a spec file).
    pub struct RestOptions {
        /// the connection whose attributes `${name}` stands for, and whose `BASE_URL`
        /// is the default base_url (default: the anchovy's id, `ACHVY_CNXN__<ID>__*`)
        #[serde(default)]
        pub connection: Option<String>,
        /// a YAML file of endpoints (`tbls:`, with defaults as top-level keys),
        /// relative to the working directory
        #[serde(default)]
        pub spec: Option<String>,
        /// with spec: only the spec's tables matching one of these patterns
        #[serde(default)]
        pub include: Option<ColSelect>,
        /// the API's root URL (`https://api.example.com/v1`)
        #[serde(default)]
        pub base_url: Option<String>,
        /// the endpoint's path under base_url (`/orders`, `/customers/{id}/orders`
        /// with parent:), or a whole URL
        #[serde(default)]
        pub path: Option<String>,
        /// query parameters sent with every request (`{per_page: 100}`)
        #[serde(default)]
        pub params: Option<serde_json::Map<String, serde_json::Value>>,
        /// headers sent with every request (`{Accept: application/json}`)
        #[serde(default)]
        pub headers: Option<serde_json::Map<String, serde_json::Value>>,
        /// credentials: `{type: bearer, token}`, `{type: basic, username, password}`,
        /// `{type: api_key, name, value, in: header|query}`, `{type:
        /// oauth2_client_credentials, token_url, client_id, client_secret, scope}`
        #[serde(default)]
        pub auth: Option<serde_json::Value>,
        /// dotted path of the array of records in a response (omitted: the body is
        /// the array)
        #[serde(default)]
        pub records: Option<String>,
        /// the records' key (becomes unique_by): the uploader merges by it
        #[serde(default)]
        pub primary_key: Option<ColSelect>,
        /// `{type: none | page_number | offset | cursor | next_url | link_header, ...}`
        /// (see the README's table of strategies)
        #[serde(default)]
        pub pagination: Option<serde_json::Value>,
        /// `{cursor: updated_at, param: updated_since, value: "{cursor}", start,
        /// lookback: 10m, sorted: false}`: read only what changed since the last run
        #[serde(default)]
        pub incremental: Option<serde_json::Value>,
        /// the table whose records fill the `{field}` placeholders of path
        #[serde(default)]
        pub parent: Option<String>,
        /// at most this many requests a second to the endpoint's host (shared by the
        /// tables on one host)
        #[serde(default)]
        pub max_requests_per_second: Option<serde_json::Value>,
        /// one request, until its last byte (default 60s)
        #[serde(default)]
        pub timeout: Option<serde_json::Value>,
        /// the table's whole read (default: none; the run's -t still applies)
        #[serde(default)]
        pub total_timeout: Option<serde_json::Value>,
        /// `{max_retries: 8, initial_backoff: 0.5s, max_backoff: 30s, max_elapsed: 5m,
        /// retry_after_cap: 2m}`
        #[serde(default)]
        pub retry: Option<serde_json::Value>,
    }
}

/// The registry entry.
pub const SPEC: OperatorSpec = OperatorSpec {
    name: "rest.Downloader",
    description: "Downloads HTTP JSON APIs declared in YAML (inline or `spec:` files): endpoints as tables, bearer/basic/API key/OAuth2 client credentials, page number/offset/cursor/next URL/Link header pagination, child endpoints, incremental cursors committed in-band, Retry-After and backoff, request rate limits.",
    kind: OperatorKind::Downloader,
    connections: &[],
    env_vars: &[
        OptionDoc {
            key: "ACHVY_CNXN__<ID>__<NAME>",
            doc: "the value `${name}` stands for in a table's base_url, path, params, headers and auth (<ID>: the table's connection, default the anchovy's id); always redacted in auth, headers and params",
        },
        OptionDoc {
            key: "ACHVY_CNXN__<ID>__BASE_URL",
            doc: "the base URL of tables without base_url",
        },
    ],
    table_options: &[anchovy_core::OptionGroup {
        title: "",
        options: <RestOptions as TableOptions>::DOCS,
    }],
    build: |_| Ok(Arc::new(Downloader::default())),
};

/// A host's request rate and its limiter.
type HostLimit = (f64, Arc<RateLimiter>);

/// The operator: the rate limiters of the hosts and the OAuth2 tokens its tables share.
#[derive(Default, Clone)]
pub struct Downloader {
    limiters: Arc<std::sync::Mutex<HashMap<String, HostLimit>>>,
    tokens: Arc<std::sync::Mutex<HashMap<String, Arc<OAuth2>>>>,
}

fn opt_err(table: &str, key: &str, message: impl Into<String>) -> PluginError {
    PluginError::Option {
        key: format!("tbls.{table}.{key}"),
        message: message.into(),
    }
}

#[async_trait]
impl Operator for Downloader {
    fn sources(&self) -> Vec<Arc<dyn Source>> {
        vec![Arc::new(EndpointSource { op: self.clone() })]
    }

    async fn discover_tbls(&self, ctx: &TaskCtx) -> Result<Option<Vec<Tbl>>, BoxError> {
        Ok(Some(spec::discover(&ctx.session)?))
    }

    /// An entry with `spec:` stands for the spec file's tables.
    fn is_selector(&self, cfg: &Tbl) -> bool {
        cfg.options.contains_key("spec")
    }

    /// Quarantined records are JSON records: read again with the table's `columns:`.
    fn record_reader(
        &self,
        tbl: &Tbl,
    ) -> Result<Option<Arc<dyn anchovy_core::reject::RecordReader>>, BoxError> {
        Ok(Some(Arc::new(JsonFormat::new(
            &JsonOptions {
                records: None,
                provenance: false,
            },
            &tbl.columns,
        ))))
    }

    async fn healthcheck(&self, sess: &SessionCtx) -> Vec<(String, Result<String, String>)> {
        let tbls = match spec::discover(sess) {
            Ok(t) => t,
            Err(e) => return vec![("tables".into(), Err(anchovy_core::error::render_chain(&e)))],
        };
        let mut out = Vec::new();
        for t in tbls {
            let check = async {
                let ep = self.endpoint(sess, &t)?;
                if let Some(p) = &ep.parent {
                    return Ok(format!("a child of {p}"));
                }
                let pager = Pager::new(ep.pagination.clone());
                let url = ep.url_with(&[], &pager.first())?;
                let mut rj = Some(anchovy_core::reject::Rejects::failing(&t.name));
                let got = ep
                    .fetch(
                        &url,
                        &PageCtx {
                            inherited: &[],
                            cursor: None,
                            batch_size: 1024,
                        },
                        &mut rj,
                        None,
                    )
                    .await?;
                Ok::<String, PluginError>(format!(
                    "GET {}: {} records on the first page",
                    http::display_url(&url),
                    got.page.records
                ))
            };
            out.push((
                format!("table {}", t.name),
                check
                    .await
                    .map_err(|e| anchovy_core::error::render_chain(&e)),
            ));
        }
        out
    }
}

/// The downloader's source: reads the task's endpoint.
struct EndpointSource {
    op: Downloader,
}

#[async_trait]
impl Source for EndpointSource {
    async fn run(&self, ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError> {
        let tbl = ctx.tbl();
        let ep = self.op.endpoint(&ctx.session, tbl)?;
        let parent = match &ep.parent {
            None => None,
            Some(p) => {
                let all = spec::discover(&ctx.session)?;
                let pt = all.iter().find(|t| &t.name == p).ok_or_else(|| {
                    opt_err(
                        &tbl.name,
                        "parent",
                        format!(
                            "no table `{p}` is configured (tables: {})",
                            all.iter()
                                .map(|t| t.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?;
                let pe = self.op.endpoint(&ctx.session, pt)?;
                if pe.parent.is_some() {
                    return Err(opt_err(&tbl.name, "parent", format!("`{p}` is a child endpoint itself; a parent must be a top-level endpoint")).into());
                }
                Some(pe)
            }
        };
        let mut load = Loader::new(ctx, out, &ep)?;
        let read = load.read(&ep, parent.as_ref());
        let res = match ep.total_timeout {
            Some(d) => match tokio::time::timeout(d, read).await {
                Ok(r) => r,
                Err(_) => Err(anchovy_core::Error::Http {
                    request: format!("table {}", tbl.name),
                    message: format!("the read took longer than total_timeout ({}s); nothing after the last commit is kept", d.as_secs_f64()),
                }
                .into()),
            },
            None => read.await,
        };
        let s = ep.client.stats();
        ctx.log("http_requests", s.requests.load(Ordering::Relaxed));
        ctx.log("http_retries", s.retries.load(Ordering::Relaxed));
        ctx.log("http_throttled", s.throttled.load(Ordering::Relaxed));
        ctx.log("http_wait_ms", s.waited_ms.load(Ordering::Relaxed));
        if let Some(p) = &parent {
            let ps = p.client.stats();
            ctx.log("parent_http_requests", ps.requests.load(Ordering::Relaxed));
            ctx.log("parent_http_retries", ps.retries.load(Ordering::Relaxed));
        }
        ctx.log("pages", load.pages);
        res?;
        load.finish().await
    }
}

/// Sends pages on and places the cursor checkpoints.
struct Loader<'a> {
    ctx: &'a TaskCtx,
    out: &'a mut Emitter,
    rejects: Option<anchovy_core::reject::Rejects>,
    batch_size: usize,
    /// The committed cursor (before lookback), if any.
    committed: Option<serde_json::Value>,
    max: Max,
    rows: u64,
    pages: u64,
    checkpoints: u64,
    stopped: bool,
}

impl<'a> Loader<'a> {
    fn new(
        ctx: &'a TaskCtx,
        out: &'a mut Emitter,
        ep: &Endpoint,
    ) -> Result<Loader<'a>, PluginError> {
        let committed = match &ep.incremental {
            None => None,
            Some(i) => match ctx
                .checkpoint(&ep.table)
                .map(serde_json::from_value::<CursorState>)
            {
                Some(Ok(s)) if s.cursor == i.cursor => Some(s.value),
                Some(Ok(s)) => {
                    tracing::warn!(table = %ep.table, "the committed cursor is for field `{}`, not `{}`: reading from the start", s.cursor, i.cursor);
                    None
                }
                // A snapshot marker of a full read before, or nothing.
                _ => None,
            },
        };
        Ok(Loader {
            ctx,
            out,
            rejects: Some(ctx.rejects()?),
            batch_size: ctx.session.settings.batch_size.max(1),
            committed,
            max: Max::default(),
            rows: 0,
            pages: 0,
            checkpoints: 0,
            stopped: false,
        })
    }

    /// The incremental parameter of this run, if any.
    fn cursor_param(&self, ep: &Endpoint) -> Result<Option<(String, String)>, PluginError> {
        let Some(i) = &ep.incremental else {
            return Ok(None);
        };
        let from = match (&self.committed, &i.start) {
            (Some(v), _) => match &i.lookback {
                Some(lb) => cursor::look_back(v, lb)
                    .map_err(|m| opt_err(&ep.table, "incremental.lookback", m))?,
                None => v.clone(),
            },
            (None, Some(s)) => s.clone(),
            (None, None) => return Ok(None),
        };
        Ok(Some((i.param.clone(), i.param_value(&from))))
    }

    async fn read(&mut self, ep: &Endpoint, parent: Option<&Endpoint>) -> Result<(), BoxError> {
        let since = self.cursor_param(ep)?;
        let Some(pe) = parent else {
            return self
                .read_pages(
                    ep,
                    &[],
                    &[],
                    since.as_ref(),
                    ep.incremental.as_ref().is_some_and(|i| i.sorted),
                )
                .await;
        };
        let fields = placeholders(&ep.url);
        if fields.is_empty() {
            return Err(opt_err(&ep.table, "path", format!("a child endpoint's path names the parent's fields in braces (`/customers/{{id}}/orders`); `{}` names none", ep.url)).into());
        }
        let pname = pe.table.clone();
        // The parent's pages, each parent record's child pages in turn.
        let mut pager = Pager::new(pe.pagination.clone());
        let mut next = Next::Params(pager.first());
        let mut prj = Some(anchovy_core::reject::Rejects::failing(&pname));
        loop {
            let url = match next {
                Next::Params(p) => pe.url_with(&[], &p)?,
                Next::Url(u) => u,
                Next::Done => break,
            };
            let got = pe
                .fetch(
                    &url,
                    &PageCtx {
                        inherited: &[],
                        cursor: None,
                        batch_size: self.batch_size,
                    },
                    &mut prj,
                    None,
                )
                .await?;
            for b in &got.batches {
                for i in 0..b.len() {
                    let mut vars = Vec::with_capacity(fields.len());
                    let mut carried = Vec::with_capacity(fields.len());
                    for f in &fields {
                        let v = b.get(i, f);
                        if v.is_null() {
                            return Err(PluginError::Data {
                                location: format!("GET {}", http::display_url(&url)),
                                message: format!("a record of parent `{pname}` has no `{f}`, which the path of `{}` needs", ep.table),
                            }
                            .into());
                        }
                        vars.push((f.clone(), v.text().into_owned()));
                        carried.push((format!("{pname}_{f}"), v.clone()));
                    }
                    self.read_pages(ep, &vars, &carried, since.as_ref(), false)
                        .await?;
                    if self.stopped {
                        return Ok(());
                    }
                }
            }
            next = pager
                .next(got.page.records, &got.page.captured, &got.links, &url)
                .map_err(|m| PluginError::Data {
                    location: format!("GET {}", http::display_url(&url)),
                    message: m,
                })?;
        }
        Ok(())
    }

    /// Every page of the endpoint (with `vars` in its path, `carried` added to its
    /// rows); `sorted`: the cursor is committed after each page.
    async fn read_pages(
        &mut self,
        ep: &Endpoint,
        vars: &[(String, String)],
        carried: &[(String, Value)],
        since: Option<&(String, String)>,
        sorted: bool,
    ) -> Result<(), BoxError> {
        let mut pager = Pager::new(ep.pagination.clone());
        let mut first = pager.first();
        if let Some(p) = since {
            first.insert(0, p.clone());
        }
        let mut next = Next::Params(first);
        let mut ahead: Option<Ahead> = None;
        let cursor = ep.incremental.as_ref().map(|i| i.cursor.as_str());
        let mut sorted = sorted;
        loop {
            let url = match next {
                Next::Params(p) => ep.url_with(vars, &p)?,
                Next::Url(u) => u,
                Next::Done => break,
            };
            let got = ep
                .fetch(
                    &url,
                    &PageCtx {
                        inherited: carried,
                        cursor,
                        batch_size: self.batch_size,
                    },
                    &mut self.rejects,
                    ahead.take(),
                )
                .await?;
            self.pages += 1;
            ahead = got.ahead;
            for b in got.batches {
                if *b.table == *ep.table {
                    self.rows += b.len() as u64;
                }
                self.out.send_batch(b).await?;
            }
            if let Some(v) = got.max.value() {
                if sorted
                    && (got.max.descents > 0
                        || self.max.value().is_some_and(|m| {
                            let mut probe = Max::default();
                            probe.see(m);
                            probe.see(v);
                            probe.value() == Some(m) && m != v
                        }))
                {
                    tracing::warn!(table = %ep.table, url = %http::display_url(&url), "records are not in ascending cursor order although `sorted: true`: the cursor is committed only at the end of this read");
                    sorted = false;
                }
                self.max.see(v);
            }
            if sorted && got.page.records > 0 {
                self.checkpoint(&ep.table, cursor).await?;
                if self
                    .ctx
                    .session
                    .stop_for_budget(&ep.table, self.checkpoints)
                {
                    self.stopped = true;
                    return Ok(());
                }
            }
            next = pager
                .next(got.page.records, &got.page.captured, &got.links, &url)
                .map_err(|m| PluginError::Data {
                    location: format!("GET {}", http::display_url(&url)),
                    message: m,
                })?;
        }
        Ok(())
    }

    /// Commits the greatest cursor so far, in-band after the rows it covers.
    async fn checkpoint(&mut self, table: &str, cursor: Option<&str>) -> Result<(), BoxError> {
        if let Some(rb) = self.rejects.as_mut().and_then(|r| r.take_batch()) {
            self.out.send_batch(rb).await?;
        }
        // Never behind the committed value: a read of only older records (a lookback
        // window with nothing new) keeps it.
        let mut best = Max::default();
        for v in self.committed.iter().chain(self.max.value()) {
            best.see(v);
        }
        if let (Some(c), Some(v)) = (cursor, self.max.value().and(best.value())) {
            let state = CursorState {
                cursor: c.to_string(),
                value: v.clone(),
            };
            self.out.checkpoint(table, &state).await?;
            self.checkpoints += 1;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(), BoxError> {
        let tbl = self.ctx.tbl().name.clone();
        let cursor = self
            .ctx
            .tbl()
            .options
            .get("incremental")
            .and_then(|i| i.get("cursor"))
            .and_then(|c| c.as_str())
            .map(String::from);
        match cursor {
            Some(c) => self.checkpoint(&tbl, Some(&c)).await?,
            None => {
                if let Some(rb) = self.rejects.as_mut().and_then(|r| r.take_batch()) {
                    self.out.send_batch(rb).await?;
                }
                // The whole endpoint in one commit: the uploader's `mode: replace`
                // takes it as a complete snapshot.
                self.out
                    .checkpoint(&tbl, serde_json::json!({"snapshot": self.ctx.session.session_id, "batch": self.ctx.batch_id, "rows": self.rows}))
                    .await?;
            }
        }
        self.ctx.session.budget.spend(self.rows, 0);
        self.ctx.log("source_rows", self.rows);
        if self.stopped {
            self.ctx.log("stopped_by_budget", true);
        }
        Ok(())
    }
}
