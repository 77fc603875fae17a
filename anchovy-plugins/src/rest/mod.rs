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
pub mod paginate;
mod spec;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anchovy_core::http::{self, RateLimiter};
use anchovy_core::operator::OperatorKind;
use anchovy_core::tbl::ColSelect;
use anchovy_core::{
    Batch, BatchBuilder, BoxError, Emitter, Operator, OperatorSpec, OptionDoc, SessionCtx, Source,
    TableOptions, TaskCtx, Tbl, Value, async_trait,
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
                let mut rj = anchovy_core::reject::Rejects::failing(&t.name);
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

/// What the reading thread hands the table's task, in order.
enum Out {
    Batch(Batch),
    Checkpoint(String, serde_json::Value),
}

/// What the reading thread reports at its end, for the task log.
#[derive(Default)]
struct Report {
    requests: [u64; 4],
    parent: Option<[u64; 2]>,
    pages: u64,
    rows: u64,
    stopped: bool,
}

#[async_trait]
impl Source for EndpointSource {
    /// The endpoint is read on a thread of its own with a single-threaded runtime: the
    /// requests, their connections and the parsing of pages share one thread (no
    /// hand-off between worker threads per page), while the table's task writes what
    /// comes, in batches of `batch_size` rows.
    async fn run(&self, ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError> {
        let tbl = ctx.tbl().clone();
        let cursor = tbl
            .options
            .get("incremental")
            .and_then(|i| i.get("cursor"))
            .and_then(|c| c.as_str())
            .map(String::from);
        let rejects = ctx.rejects()?;
        let job = Job {
            op: self.op.clone(),
            session: ctx.session.clone(),
            committed: ctx.checkpoint(&tbl.name),
            batch_id: ctx.batch_id,
            cursor,
            tbl,
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Out>(anchovy_core::stream::CHANNEL_BATCHES);
        let (done_tx, done) = tokio::sync::oneshot::channel::<(Report, Result<(), BoxError>)>();
        // The thread's log lines belong to the table like the task's.
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("anchovy-rest".into())
            .spawn(move || {
                let res = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(tracing::Instrument::instrument(
                        async move {
                            // The task gone (failed, stopped), the read stops at once.
                            let gone = tx.clone();
                            tokio::select! {
                                r = job.run(rejects, tx) => r,
                                () = gone.closed() => (Report::default(), Err("the table task stopped".into())),
                            }
                        },
                        span,
                    )),
                    Err(e) => (
                        Report::default(),
                        Err(format!("cannot start the reading thread's runtime: {e}").into()),
                    ),
                };
                let _ = done_tx.send(res);
            })
            .map_err(|e| format!("cannot start the reading thread: {e}"))?;
        while let Some(o) = rx.recv().await {
            match o {
                Out::Batch(b) => out.send_batch(b).await?,
                Out::Checkpoint(k, v) => out.checkpoint(&k, v).await?,
            }
        }
        let (r, res) = done
            .await
            .map_err(|_| "the reading thread stopped without a word (a panic: see the log)")?;
        let [req, retries, throttled, waited] = r.requests;
        ctx.log("http_requests", req);
        ctx.log("http_retries", retries);
        ctx.log("http_throttled", throttled);
        ctx.log("http_wait_ms", waited);
        if let Some([pr, pretries]) = r.parent {
            ctx.log("parent_http_requests", pr);
            ctx.log("parent_http_retries", pretries);
        }
        ctx.log("pages", r.pages);
        res?;
        ctx.session.budget.spend(r.rows, 0);
        ctx.log("source_rows", r.rows);
        if r.stopped {
            ctx.log("stopped_by_budget", true);
        }
        Ok(())
    }
}

/// One table's read, moved to its thread.
struct Job {
    op: Downloader,
    session: Arc<SessionCtx>,
    tbl: Tbl,
    committed: Option<serde_json::Value>,
    batch_id: u64,
    /// `incremental.cursor`, as configured.
    cursor: Option<String>,
}

impl Job {
    /// Reads the table; the report holds what was counted, whatever the outcome.
    async fn run(
        self,
        rejects: anchovy_core::reject::Rejects,
        tx: tokio::sync::mpsc::Sender<Out>,
    ) -> (Report, Result<(), BoxError>) {
        let mut report = Report::default();
        let res = self.read(rejects, tx, &mut report).await;
        (report, res)
    }

    async fn read(
        &self,
        rejects: anchovy_core::reject::Rejects,
        tx: tokio::sync::mpsc::Sender<Out>,
        report: &mut Report,
    ) -> Result<(), BoxError> {
        let tbl = &self.tbl;
        let ep = self.op.endpoint(&self.session, tbl)?;
        let parent = match &ep.parent {
            None => None,
            Some(p) => {
                let all = spec::discover(&self.session)?;
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
                let pe = self.op.endpoint(&self.session, pt)?;
                if pe.parent.is_some() {
                    return Err(opt_err(&tbl.name, "parent", format!("`{p}` is a child endpoint itself; a parent must be a top-level endpoint")).into());
                }
                Some(pe)
            }
        };
        let mut load = Loader::new(self, rejects, tx, &ep);
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
        *report = Report {
            requests: [
                s.requests.load(Ordering::Relaxed),
                s.retries.load(Ordering::Relaxed),
                s.throttled.load(Ordering::Relaxed),
                s.waited_ms.load(Ordering::Relaxed),
            ],
            parent: parent.as_ref().map(|p| {
                let ps = p.client.stats();
                [
                    ps.requests.load(Ordering::Relaxed),
                    ps.retries.load(Ordering::Relaxed),
                ]
            }),
            pages: load.pages,
            ..Report::default()
        };
        res?;
        load.finish().await?;
        report.rows = load.rows;
        report.stopped = load.stopped;
        Ok(())
    }
}

/// Sends pages on and places the cursor checkpoints.
struct Loader<'a> {
    job: &'a Job,
    tx: tokio::sync::mpsc::Sender<Out>,
    /// Rows of the table waiting to travel in a batch of `batch_size`.
    pending: BatchBuilder,
    rejects: anchovy_core::reject::Rejects,
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
        job: &'a Job,
        rejects: anchovy_core::reject::Rejects,
        tx: tokio::sync::mpsc::Sender<Out>,
        ep: &Endpoint,
    ) -> Loader<'a> {
        let committed = match &ep.incremental {
            None => None,
            Some(i) => match job
                .committed
                .clone()
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
        Loader {
            job,
            tx,
            pending: BatchBuilder::new(job.tbl.name.as_str()),
            rejects,
            batch_size: job.session.settings.batch_size.max(1),
            committed,
            max: Max::default(),
            rows: 0,
            pages: 0,
            checkpoints: 0,
            stopped: false,
        }
    }

    async fn send(&self, o: Out) -> Result<(), BoxError> {
        self.tx.send(o).await.map_err(|_| {
            Box::new(anchovy_core::Error::Cancelled {
                reason: "the table task stopped".into(),
            }) as BoxError
        })
    }

    /// A page's batch: joins the pending rows of its table, which travel once there
    /// are `batch_size` of them; another table's (bad records) goes after them.
    async fn emit(&mut self, b: Batch) -> Result<(), BoxError> {
        if *b.table == *self.pending.table() {
            self.pending.append(b);
            if self.pending.len() < self.batch_size {
                return Ok(());
            }
            let b = self.pending.take();
            return self.send(Out::Batch(b)).await;
        }
        self.flush().await?;
        self.send(Out::Batch(b)).await
    }

    /// Sends the pending rows.
    async fn flush(&mut self) -> Result<(), BoxError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let b = self.pending.take();
        self.send(Out::Batch(b)).await
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
        let mut prj = anchovy_core::reject::Rejects::failing(&pname);
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
                self.emit(b).await?;
            }
            // The page's quarantined records follow its rows: the next page starts
            // with none pending (a cut page forgets only its own).
            if let Some(rb) = self.rejects.take_batch() {
                self.emit(rb).await?;
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
                    .job
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
        if let Some(rb) = self.rejects.take_batch() {
            self.emit(rb).await?;
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
            self.flush().await?;
            let v = serde_json::to_value(&state)
                .map_err(|e| anchovy_core::Error::json(format!("checkpoint {table}"), e))?;
            self.send(Out::Checkpoint(table.to_string(), v)).await?;
            self.checkpoints += 1;
        }
        Ok(())
    }

    /// The last commit of the read: the cursor, or the snapshot marker of a full read.
    async fn finish(&mut self) -> Result<(), BoxError> {
        let tbl = self.job.tbl.name.clone();
        match self.job.cursor.clone() {
            Some(c) => self.checkpoint(&tbl, Some(&c)).await?,
            None => {
                if let Some(rb) = self.rejects.take_batch() {
                    self.emit(rb).await?;
                }
                self.flush().await?;
                // The whole endpoint in one commit: the uploader's `mode: replace`
                // takes it as a complete snapshot.
                let marker = serde_json::json!({"snapshot": self.job.session.session_id, "batch": self.job.batch_id, "rows": self.rows});
                self.send(Out::Checkpoint(tbl, marker)).await?;
            }
        }
        // Rows after the last commit (none unless a checkpoint was not due).
        self.flush().await
    }
}
