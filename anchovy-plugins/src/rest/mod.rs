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
pub mod page;
pub mod paginate;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anchovy_core::http::{self, Client, ClientOptions, RateLimiter, RetryPolicy, reqwest};
use anchovy_core::operator::OperatorKind;
use anchovy_core::tbl::ColSelect;
use anchovy_core::{
    Batch, BoxError, Emitter, Operator, OperatorSpec, OptionDoc, SessionCtx, Source, TableOptions,
    TaskCtx, Tbl, Value, async_trait,
};

use self::auth::{Auth, AuthSpec, OAuth2};
use self::cursor::{CursorState, Incremental, Max};
use self::page::{ChunkReader, Shape};
use self::paginate::{Next, Pager, Pagination};
use crate::error::PluginError;
use crate::formats::json::{JsonFormat, JsonOptions, Records};

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

/// Options as written: key -> value.
type Options = serde_json::Map<String, serde_json::Value>;

/// Reads a spec file: its defaults and its tables.
fn read_spec(path: &str) -> Result<(Options, Vec<(String, Options)>), PluginError> {
    let text = std::fs::read_to_string(path).map_err(|source| PluginError::Io {
        op: "read the spec file",
        path: path.to_string(),
        source,
    })?;
    let doc: serde_json::Value =
        serde_saphyr::from_str(&text).map_err(|e| PluginError::Option {
            key: "spec".into(),
            message: format!("{path} is not valid YAML: {e}"),
        })?;
    let serde_json::Value::Object(mut doc) = doc else {
        return Err(PluginError::Option {
            key: "spec".into(),
            message: format!("{path} must be a map with `tbls:` (and defaults beside it)"),
        });
    };
    let tbls = match doc.remove("tbls") {
        Some(serde_json::Value::Object(m)) => m,
        _ => {
            return Err(PluginError::Option {
                key: "spec".into(),
                message: format!("{path} has no `tbls:` map of endpoints"),
            });
        }
    };
    let mut out = Vec::new();
    for (name, t) in tbls {
        let t = match t {
            serde_json::Value::Object(m) => m,
            serde_json::Value::Null => serde_json::Map::new(),
            _ => {
                return Err(PluginError::Option {
                    key: "spec".into(),
                    message: format!("{path}: tbls.{name} must be a map of options"),
                });
            }
        };
        out.push((name, t));
    }
    Ok((doc, out))
}

/// A table from layered option maps (later wins), its key from `primary_key`.
fn table_of(
    name: &str,
    layers: &[&serde_json::Map<String, serde_json::Value>],
) -> Result<Tbl, PluginError> {
    let mut m = serde_json::Map::new();
    for l in layers {
        for (k, v) in l.iter() {
            if k == "columns"
                && let (Some(serde_json::Value::Object(a)), serde_json::Value::Object(b)) =
                    (m.get_mut(k), v)
            {
                a.extend(b.clone());
                continue;
            }
            m.insert(k.clone(), v.clone());
        }
    }
    m.remove("spec");
    m.remove("include");
    m.remove("name");
    let mut t: Tbl = serde_json::from_value(serde_json::Value::Object(m))
        .map_err(|e| opt_err(name, "", e.to_string()))?;
    t.name = name.to_string();
    if let Some(pk) = t.options.get("primary_key").cloned()
        && t.unique_by.is_empty()
    {
        t.unique_by =
            serde_json::from_value(pk).map_err(|e| opt_err(name, "primary_key", e.to_string()))?;
    }
    Ok(t)
}

impl Downloader {
    /// The run's tables: inline entries, and the tables of the spec files entries name.
    fn discover(&self, sess: &SessionCtx) -> Result<Vec<Tbl>, PluginError> {
        let mut out: BTreeMap<String, Tbl> = BTreeMap::new();
        for cfg in sess.config_tbls.iter() {
            let own = match serde_json::to_value(cfg) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            };
            let Some(spec) = cfg.options.get("spec").and_then(|v| v.as_str()) else {
                out.insert(cfg.name.clone(), table_of(&cfg.name, &[&own])?);
                continue;
            };
            let (defaults, tbls) = read_spec(spec).map_err(|e| match e {
                PluginError::Option { message, .. } => opt_err(&cfg.name, "spec", message),
                e => e,
            })?;
            let include: Vec<wildmatch::WildMatch> = RestOptions::of(cfg)
                .map_err(PluginError::from_option)?
                .include
                .map(|c| c.0.iter().map(|p| wildmatch::WildMatch::new(p)).collect())
                .unwrap_or_default();
            let named = tbls.iter().any(|(n, _)| *n == cfg.name);
            for (name, t) in &tbls {
                let take = if named {
                    *name == cfg.name
                } else {
                    include.is_empty() || include.iter().any(|p| p.matches(name))
                };
                if !take {
                    continue;
                }
                let tbl = table_of(name, &[&defaults, t, &own]).map_err(|e| match e {
                    PluginError::Option { key, message } => PluginError::Option {
                        key,
                        message: format!("{message} (in {spec})"),
                    },
                    e => e,
                })?;
                if out.contains_key(name) {
                    tracing::warn!(table = %name, spec, "the spec's table is also configured or in another spec: the first one wins");
                    continue;
                }
                out.insert(name.clone(), tbl);
            }
        }
        Ok(out.into_values().collect())
    }

    /// The endpoint of table `t` (one of [`Downloader::discover`]'s).
    fn endpoint(&self, sess: &SessionCtx, t: &Tbl) -> Result<Endpoint, PluginError> {
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
                let v = substitute_tree(v, &conn_id, conn).map_err(|m| match m {
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

enum Missing {
    Conn(anchovy_core::Error),
    Syntax(String),
}

/// `text` with each `${name}` replaced by attribute `name` of connection `id`;
/// replaced values registered as secrets when `secret`.
fn substitute(
    text: &str,
    id: &str,
    conn: Option<&anchovy_core::Connection>,
    secret: bool,
) -> Result<String, Missing> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| Missing::Syntax(format!("`${{` without `}}` in `{text}`")))?;
        let name = after[..end].trim();
        if name.is_empty() {
            return Err(Missing::Syntax(format!(
                "`${{}}` names no attribute in `{text}`"
            )));
        }
        let value = conn.and_then(|c| c.get(name)).ok_or_else(|| {
            Missing::Conn(anchovy_core::Error::MissingConnection {
                id: id.to_string(),
                needed_by: Some(format!("`${{{name}}}`")),
                vars: vec![anchovy_core::connection::var_name(id, name)],
                hint: String::new(),
            })
        })?;
        if secret || anchovy_core::secret::is_secret_attr(name) {
            anchovy_core::secret::register(value);
        }
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// [`substitute`] over every string of a JSON value (`auth:`: the values of secret
/// attributes are registered here, the credentials themselves by [`auth::secrets`]).
fn substitute_tree(
    v: &serde_json::Value,
    id: &str,
    conn: Option<&anchovy_core::Connection>,
) -> Result<serde_json::Value, Missing> {
    Ok(match v {
        serde_json::Value::String(s) => serde_json::Value::String(substitute(s, id, conn, false)?),
        serde_json::Value::Object(m) => {
            let mut o = serde_json::Map::new();
            for (k, v) in m {
                o.insert(k.clone(), substitute_tree(v, id, conn)?);
            }
            serde_json::Value::Object(o)
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(
            a.iter()
                .map(|x| substitute_tree(x, id, conn))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

/// One endpoint, ready to read.
struct Endpoint {
    table: String,
    /// The URL, `{field}` placeholders unresolved.
    url: String,
    params: Vec<(String, String)>,
    headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    auth: Auth,
    records: Vec<String>,
    pagination: Pagination,
    incremental: Option<Incremental>,
    parent: Option<String>,
    client: Client,
    total_timeout: Option<Duration>,
    json: Arc<JsonFormat>,
}

/// The placeholders of a URL template (`{id}`).
fn placeholders(url: &str) -> Vec<String> {
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
struct PageCtx<'a> {
    inherited: &'a [(String, Value)],
    cursor: Option<&'a str>,
    batch_size: usize,
}

/// One page, parsed.
struct Got {
    page: page::Page,
    batches: Vec<Batch>,
    links: Vec<String>,
    max: Max,
    /// The next page's request, sent as soon as this page's body was whole.
    ahead: Option<Ahead>,
}

/// A request sent before its page is wanted: with `link_header` pagination the next
/// URL is known from the headers, so it goes out the moment the current body has
/// arrived (one request in flight, as before) and its answer comes while the current
/// page is parsed. Dropped unused, it is aborted.
struct Ahead {
    url: url::Url,
    handle: Option<tokio::task::JoinHandle<Result<reqwest::Response, PluginError>>>,
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

impl Endpoint {
    /// The URL with placeholders filled and the parameters set (later pairs win).
    fn url_with(
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

    async fn fetch(
        &self,
        url: &url::Url,
        pc: &PageCtx<'_>,
        rejects: &mut Option<anchovy_core::reject::Rejects>,
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

    /// Streams a body into the parser on a blocking thread; the page's rows come back
    /// whole or not at all.
    async fn parse(
        &self,
        mut resp: reqwest::Response,
        shown: &str,
        pc: &PageCtx<'_>,
        rejects: &mut Option<anchovy_core::reject::Rejects>,
        next: Option<url::Url>,
    ) -> Result<(page::Page, Vec<Batch>, Max, Option<Ahead>), Fetch> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, String>>(8);
        let shape = Shape {
            records: self.records.clone(),
            captures: Pager::new(self.pagination.clone()).captures(),
        };
        let fmt = self.json.clone();
        let label = format!("GET {shown}");
        let table = self.table.clone();
        let inherited = pc.inherited.to_vec();
        let cursor = pc.cursor.map(String::from);
        let batch_size = pc.batch_size;
        // Held between pages; gone only after a parser that stopped, which ends the read.
        let mut rj = rejects.take().ok_or_else(|| {
            Fetch::Fail(PluginError::Data {
                location: format!("GET {shown}"),
                message: "the bad-record store was lost with an earlier page".into(),
            })
        })?;
        let job = tokio::task::spawn_blocking(move || {
            let mut batches = Vec::new();
            let mut max = Max::default();
            let res = {
                let mut emit = |b: Batch| {
                    batches.push(b);
                    true
                };
                let mut see = |v: &Value| max.see(&v.to_json());
                let mut recs = Records::new(&fmt, &label, &table, batch_size, &mut rj, &mut emit);
                if let Some(c) = &cursor {
                    recs.watch(c, &mut see);
                }
                let res = page::parse(ChunkReader::new(rx), &shape, &mut |text, pos| {
                    recs.record(text, pos, &inherited)
                        .map_err(|e| e.to_string())
                });
                recs.flush();
                res
            };
            (res, batches, max, rj)
        });
        let mut cut = None;
        let mut ahead = None;
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if tx.send(Ok(c)).await.is_err() {
                        break;
                    }
                }
                Ok(None) => {
                    // The body is whole and the connection free: the next page's
                    // request goes out while this one is parsed.
                    if let Some(n) = next {
                        ahead = Some(self.send_ahead(n).map_err(Fetch::Fail)?);
                    }
                    break;
                }
                Err(e) => {
                    let m = http::describe(&e);
                    let _ = tx.send(Err(m.clone())).await;
                    cut = Some(m);
                    break;
                }
            }
        }
        drop(tx);
        let (res, batches, max, rj) = job.await.map_err(|e| {
            Fetch::Fail(PluginError::Data {
                location: format!("GET {shown}"),
                message: format!("the page parser stopped: {e}"),
            })
        })?;
        *rejects = Some(rj);
        if let Some(m) = cut {
            return Err(Fetch::Transport(m));
        }
        match res {
            Ok(p) => Ok((p, batches, max, ahead)),
            Err(m) => Err(Fetch::Fail(PluginError::Data {
                location: format!("GET {shown}"),
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

#[async_trait]
impl Operator for Downloader {
    fn sources(&self) -> Vec<Arc<dyn Source>> {
        vec![Arc::new(EndpointSource { op: self.clone() })]
    }

    async fn discover_tbls(&self, ctx: &TaskCtx) -> Result<Option<Vec<Tbl>>, BoxError> {
        Ok(Some(self.discover(&ctx.session)?))
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
        let tbls = match self.discover(sess) {
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
                let all = self.op.discover(&ctx.session)?;
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
        if let (Some(c), Some(v)) = (cursor, self.max.value()) {
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
