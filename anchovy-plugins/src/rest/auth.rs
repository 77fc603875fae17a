//! `auth:` of a table: how requests prove who sends them.
//!
//! | `type` | keys | sent as |
//! |--------|------|---------|
//! | `bearer` | `token` | `Authorization: Bearer <token>` |
//! | `basic` | `username`, `password` | `Authorization: Basic ...` |
//! | `api_key` | `name`, `value`, `in: header` (default) or `query` | a header or query parameter |
//! | `oauth2_client_credentials` | `token_url`, `client_id`, `client_secret`, `scope`, `client_auth: basic` (default) or `body` | a bearer token fetched from `token_url` (RFC 6749 4.4), cached, fetched again a minute before it expires (or at 90% of a shorter life) and once more when the API answers 401 |
//!
//! Every value may name connection attributes (`${token}`); all of them are
//! registered as secrets, so no message, log or task log shows them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anchovy_core::http::{Client, reqwest};
use serde::Deserialize;

use crate::error::PluginError;

/// A table's `auth:`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthSpec {
    /// No credentials.
    None,
    /// A bearer token.
    Bearer {
        /// The token.
        token: String,
    },
    /// HTTP basic authentication.
    Basic {
        /// The user.
        username: String,
        /// The password.
        #[serde(default)]
        password: Option<String>,
    },
    /// An API key in a header or query parameter.
    ApiKey {
        /// The header or parameter name.
        name: String,
        /// The key.
        value: String,
        /// `header` or `query`.
        #[serde(default, rename = "in")]
        location: Option<String>,
    },
    /// OAuth2 client credentials.
    Oauth2ClientCredentials {
        /// The token endpoint.
        token_url: String,
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: String,
        /// Scopes, space-separated.
        #[serde(default)]
        scope: Option<String>,
        /// `basic` (default) or `body`: how the client's credentials are sent.
        #[serde(default)]
        client_auth: Option<String>,
    },
}

/// Credentials ready to apply.
#[derive(Clone)]
pub enum Auth {
    /// None.
    None,
    /// A fixed header value (`Authorization: ...`, or an API key's header).
    Header(String, String),
    /// A query parameter.
    Query(String, String),
    /// A token from an OAuth2 token endpoint.
    OAuth2(Arc<OAuth2>),
}

/// The secrets an `auth:` holds (registered for redaction).
pub fn secrets(spec: &AuthSpec) -> Vec<&str> {
    match spec {
        AuthSpec::None => vec![],
        AuthSpec::Bearer { token } => vec![token],
        AuthSpec::Basic { password, .. } => password.as_deref().into_iter().collect(),
        AuthSpec::ApiKey { value, .. } => vec![value],
        AuthSpec::Oauth2ClientCredentials { client_secret, .. } => vec![client_secret],
    }
}

impl Auth {
    /// Credentials from their spec; `tokens` caches OAuth2 clients by token URL and
    /// client id, so the tables of one API share a token.
    ///
    /// # Errors
    /// [`PluginError::Option`] for an unknown `in:`/`client_auth:` or a bad URL.
    pub fn new(
        table: &str,
        spec: &AuthSpec,
        client: &Client,
        tokens: &std::sync::Mutex<std::collections::HashMap<String, Arc<OAuth2>>>,
    ) -> Result<Auth, PluginError> {
        use base64::Engine;
        let opt = |m: String| PluginError::Option {
            key: format!("tbls.{table}.auth"),
            message: m,
        };
        Ok(match spec {
            AuthSpec::None => Auth::None,
            AuthSpec::Bearer { token } => {
                Auth::Header("authorization".into(), format!("Bearer {token}"))
            }
            AuthSpec::Basic { username, password } => {
                let raw = format!("{username}:{}", password.as_deref().unwrap_or_default());
                let enc = base64::engine::general_purpose::STANDARD.encode(raw);
                anchovy_core::secret::register(&enc);
                Auth::Header("authorization".into(), format!("Basic {enc}"))
            }
            AuthSpec::ApiKey {
                name,
                value,
                location,
            } => match location.as_deref().unwrap_or("header") {
                "header" => Auth::Header(name.clone(), value.clone()),
                "query" => Auth::Query(name.clone(), value.clone()),
                other => {
                    return Err(opt(format!(
                        "`in: {other}`: an API key goes in `header` or `query`"
                    )));
                }
            },
            AuthSpec::Oauth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
                client_auth,
            } => {
                let basic = match client_auth.as_deref().unwrap_or("basic") {
                    "basic" => true,
                    "body" => false,
                    other => {
                        return Err(opt(format!(
                            "`client_auth: {other}`: use `basic` or `body`"
                        )));
                    }
                };
                let url = url::Url::parse(token_url)
                    .map_err(|e| opt(format!("token_url `{token_url}` is not a URL: {e}")))?;
                let key = format!("{token_url}\u{0}{client_id}\u{0}{scope:?}\u{0}{basic}");
                let mut cache = tokens.lock().unwrap_or_else(|p| p.into_inner());
                let o = cache
                    .entry(key)
                    .or_insert_with(|| {
                        Arc::new(OAuth2 {
                            url,
                            client_id: client_id.clone(),
                            client_secret: client_secret.clone(),
                            scope: scope.clone(),
                            basic,
                            client: client.clone(),
                            state: tokio::sync::Mutex::new(None),
                            fetched: std::sync::atomic::AtomicU64::new(0),
                        })
                    })
                    .clone();
                Auth::OAuth2(o)
            }
        })
    }

    /// Adds the credentials to a request.
    ///
    /// # Errors
    /// An OAuth2 token that cannot be had.
    pub async fn apply(&self, req: &mut reqwest::Request) -> Result<(), PluginError> {
        match self {
            Auth::None => {}
            Auth::Header(k, v) => set_header(req, k, v)?,
            Auth::Query(k, v) => {
                let kept: Vec<(String, String)> = req
                    .url()
                    .query_pairs()
                    .filter(|(n, _)| n != k)
                    .map(|(a, b)| (a.into_owned(), b.into_owned()))
                    .collect();
                req.url_mut()
                    .query_pairs_mut()
                    .clear()
                    .extend_pairs(kept)
                    .append_pair(k, v);
            }
            Auth::OAuth2(o) => {
                let t = o.token(false).await?;
                set_header(req, "authorization", &format!("Bearer {t}"))?;
            }
        }
        Ok(())
    }

    /// After a 401: true when fresh credentials may cure it (an OAuth2 token is
    /// fetched again; once per request).
    pub async fn refresh(&self) -> Result<bool, PluginError> {
        match self {
            Auth::OAuth2(o) => {
                o.token(true).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

fn set_header(req: &mut reqwest::Request, k: &str, v: &str) -> Result<(), PluginError> {
    let name =
        reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| PluginError::Option {
            key: "auth".into(),
            message: format!("`{k}` is not a valid header name"),
        })?;
    let mut value = reqwest::header::HeaderValue::from_str(v).map_err(|_| PluginError::Option {
        key: "auth".into(),
        message: format!("the value of header `{k}` has characters a header cannot carry"),
    })?;
    value.set_sensitive(true);
    req.headers_mut().insert(name, value);
    Ok(())
}

/// An OAuth2 client-credentials token, fetched when needed and shared.
pub struct OAuth2 {
    url: url::Url,
    client_id: String,
    client_secret: String,
    scope: Option<String>,
    basic: bool,
    client: Client,
    state: tokio::sync::Mutex<Option<(String, Instant)>>,
    /// Tokens fetched (for task logs and tests).
    pub fetched: std::sync::atomic::AtomicU64,
}

/// Lifetime assumed when the token endpoint does not say (`expires_in`).
const DEFAULT_LIFE: Duration = Duration::from_secs(3600);

impl OAuth2 {
    /// The current token; a new one when `force`, when none is held or when the held
    /// one expires within its refresh margin.
    async fn token(&self, force: bool) -> Result<String, PluginError> {
        let mut st = self.state.lock().await;
        if !force
            && let Some((t, refresh_at)) = &*st
            && Instant::now() < *refresh_at
        {
            return Ok(t.clone());
        }
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(s) = &self.scope {
                form.append_pair("scope", s);
            }
            if !self.basic {
                form.append_pair("client_id", &self.client_id);
                form.append_pair("client_secret", &self.client_secret);
            }
            form.finish()
        };
        let mut rb = self
            .client
            .http()
            .post(self.url.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body);
        if self.basic {
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            rb = rb.basic_auth(enc(&self.client_id), Some(enc(&self.client_secret)));
        }
        let req = rb.build().map_err(|e| PluginError::Auth {
            message: format!("cannot build the OAuth2 token request: {e}"),
        })?;
        let shown = anchovy_core::http::display_url(&self.url);
        let resp = self.client.send(req).await?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| PluginError::Auth {
            message: format!(
                "OAuth2 token from {shown}: {}",
                anchovy_core::http::describe(&e)
            ),
        })?;
        if !status.is_success() {
            return Err(PluginError::Auth {
                message: format!(
                    "OAuth2 token from {shown}: {status}: {}; check the client id and secret",
                    super::endpoint::excerpt(&body)
                ),
            });
        }
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
            #[serde(default)]
            expires_in: Option<serde_json::Value>,
        }
        let t: Token = serde_json::from_slice(&body).map_err(|e| PluginError::Auth {
            message: format!("OAuth2 token from {shown}: the response has no access_token ({e})"),
        })?;
        anchovy_core::secret::register(&t.access_token);
        let life = t
            .expires_in
            .and_then(|v| {
                v.as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(DEFAULT_LIFE, Duration::from_secs_f64);
        let margin = Duration::from_secs(60).min(life / 10);
        *st = Some((t.access_token.clone(), Instant::now() + life - margin));
        self.fetched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(token_url = %shown, expires_in_s = life.as_secs(), "fetched an OAuth2 token");
        Ok(t.access_token)
    }
}
