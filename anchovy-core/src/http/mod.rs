//! The one HTTP client of anchovies' operators: retries, backoff, `Retry-After`,
//! request rate limits, timeouts and secret-free URLs in every message.
//!
//! [`Client::send`] sends a request and retries it under the table's [`RetryPolicy`]
//! ([`retry`]): 429/503 wait as `Retry-After` asks (capped), 408/5xx and failed
//! connections back off with jitter; every retry is logged (status, attempt, wait, the
//! URL without secrets) and counted in [`Stats`]. A response that is final (2xx, 3xx,
//! a 4xx other than 408/429) is returned as it is: the caller reads its body as it
//! arrives ([`reqwest::Response::chunk`]) and, when the body is cut short, asks
//! [`Client::next_wait`] whether the same policy allows another attempt.
//!
//! The object stores' client keeps `object_store`'s own retry loop but takes its
//! `Retry-After` reading from here ([`retry::parse_retry_after`]).

pub mod retry;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use reqwest;
pub use retry::RetryPolicy;
use retry::Verdict;

use crate::error::{Error, Result};

/// How a [`Client`] behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// One request, from sending to the last byte of its body.
    pub timeout: Duration,
    /// Establishing a connection.
    pub connect_timeout: Duration,
    /// Retries and waits.
    pub policy: RetryPolicy,
}

impl Default for ClientOptions {
    /// 60 s per request, 10 s to connect, the default [`RetryPolicy`].
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            policy: RetryPolicy::default(),
        }
    }
}

/// Counts of what a client did, for task logs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests sent (every attempt).
    pub requests: AtomicU64,
    /// Attempts after a first one.
    pub retries: AtomicU64,
    /// Responses that were throttled (429, 503).
    pub throttled: AtomicU64,
    /// Milliseconds spent waiting before retries.
    pub waited_ms: AtomicU64,
}

/// Spaces requests evenly: at most `per_second` requests start in any second. Shared
/// by every table that talks to one host.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: tokio::sync::Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A limiter of `per_second` requests a second (`None` for a rate that is not
    /// positive and finite).
    pub fn new(per_second: f64) -> Option<RateLimiter> {
        (per_second.is_finite() && per_second > 0.0).then(|| RateLimiter {
            interval: Duration::from_secs_f64(1.0 / per_second),
            next: tokio::sync::Mutex::new(None),
        })
    }

    /// Waits for the next request's turn.
    pub async fn wait(&self) {
        let mut next = self.next.lock().await;
        let now = Instant::now();
        let at = next.map_or(now, |n| n.max(now));
        *next = Some(at + self.interval);
        drop(next);
        if at > now {
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

/// An HTTP client with the retry policy, rate limit and counters of one table.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    policy: RetryPolicy,
    limiter: Option<Arc<RateLimiter>>,
    stats: Arc<Stats>,
}

impl Client {
    /// A client with these options.
    ///
    /// # Errors
    /// [`Error::Config`] when the TLS backend cannot start.
    pub fn new(o: &ClientOptions) -> Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(o.timeout)
            .connect_timeout(o.connect_timeout)
            .user_agent(concat!("anchovies/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::config("HTTP client", e.to_string()))?;
        Ok(Client {
            http,
            policy: o.policy,
            limiter: None,
            stats: Arc::new(Stats::default()),
        })
    }

    /// The same client, its requests spaced by `limiter`.
    pub fn limited(mut self, limiter: Option<Arc<RateLimiter>>) -> Client {
        self.limiter = limiter;
        self
    }

    /// The underlying client, to build requests with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// What this client (and its clones) did.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The wait before attempt `attempt + 1` of a request first sent at `since`, or
    /// `None` when the policy allows no more.
    pub fn next_wait(&self, attempt: u32, since: Instant) -> Option<Duration> {
        let wait = self.policy.backoff(attempt);
        self.allowed(attempt, since, wait)
    }

    fn allowed(&self, attempt: u32, since: Instant, wait: Duration) -> Option<Duration> {
        (attempt <= self.policy.max_retries && since.elapsed() + wait <= self.policy.max_elapsed)
            .then_some(wait)
    }

    /// Sends `req`, retrying throttled and transient failures under the policy.
    /// Returns the first final response, or the last retryable one when the retries
    /// are spent (the caller reports its status and body).
    ///
    /// # Errors
    /// [`Error::Http`] when no response came (connection refused or reset, timeout)
    /// and the retries are spent, or for a request that cannot be sent at all.
    pub async fn send(&self, req: reqwest::Request) -> Result<reqwest::Response> {
        let since = Instant::now();
        let method = req.method().clone();
        let shown = display_url(req.url());
        let mut attempt = 0u32;
        loop {
            let Some(this) = req.try_clone() else {
                return Err(Error::Http {
                    request: format!("{method} {shown}"),
                    message: "the request body cannot be sent twice".into(),
                });
            };
            if let Some(l) = &self.limiter {
                l.wait().await;
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            attempt += 1;
            let (wait, why, status) = match self.http.execute(this).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match retry::verdict(status) {
                        Verdict::Final => return Ok(resp),
                        Verdict::Throttled => {
                            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                            let asked = resp
                                .headers()
                                .get(reqwest::header::RETRY_AFTER)
                                .and_then(|v| v.to_str().ok());
                            match self.policy.throttle_wait(asked) {
                                Some((wait, capped)) => {
                                    if capped {
                                        tracing::warn!(url = %shown, asked = asked.unwrap_or_default(), cap_s = self.policy.retry_after_cap.as_secs(), "Retry-After is longer than the cap: waiting the cap");
                                    }
                                    match self.allowed(attempt, since, wait) {
                                        Some(w) => (
                                            w,
                                            "throttled; waiting as Retry-After asks",
                                            Some(status),
                                        ),
                                        None => return Ok(resp),
                                    }
                                }
                                None => match self.next_wait(attempt, since) {
                                    Some(w) => (w, "throttled; backing off", Some(status)),
                                    None => return Ok(resp),
                                },
                            }
                        }
                        Verdict::Transient => match self.next_wait(attempt, since) {
                            Some(w) => (w, "server error; backing off", Some(status)),
                            None => return Ok(resp),
                        },
                    }
                }
                Err(e) if transient(&e) => match self.next_wait(attempt, since) {
                    Some(w) => (w, "no response; backing off", None),
                    None => {
                        return Err(Error::Http {
                            request: format!("{method} {shown}"),
                            message: format!(
                                "{} (gave up after {attempt} attempts in {:.1}s)",
                                describe(&e),
                                since.elapsed().as_secs_f64()
                            ),
                        });
                    }
                },
                Err(e) => {
                    return Err(Error::Http {
                        request: format!("{method} {shown}"),
                        message: describe(&e),
                    });
                }
            };
            tracing::warn!(url = %shown, status, attempt, wait_ms = wait.as_millis() as u64, "{why}");
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            self.stats
                .waited_ms
                .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
    }
}

/// True for failures a retry may cure: timeouts, refused or reset connections.
pub fn transient(e: &reqwest::Error) -> bool {
    e.is_timeout() || e.is_connect() || e.is_request() || e.is_body()
}

/// A transport error in words, without the URL (messages add it, without secrets).
pub fn describe(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    crate::secret::redact(&out).into_owned()
}

/// Query parameter names whose values are never shown.
const SECRET_PARAMS: [&str; 8] = [
    "key",
    "token",
    "secret",
    "sig",
    "signature",
    "password",
    "auth",
    "code",
];

/// `url` for messages: no user or password, and the values of query parameters that
/// look secret (`api_key`, `access_token`, `sig`, ...) or hold a registered secret
/// shown as `***`.
pub fn display_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let lower = k.to_ascii_lowercase();
                let secret = SECRET_PARAMS.iter().any(|m| lower.contains(m))
                    || crate::secret::is_secret_attr(&lower);
                let v = if secret {
                    "***".to_string()
                } else {
                    crate::secret::redact(&v).into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    crate::secret::redact(u.as_str()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server answering each connection with the next of `replies`.
    async fn serve(replies: Vec<&'static str>) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/x?api_key=K3y&page=2",
            listener.local_addr().unwrap()
        );
        let h = tokio::spawn(async move {
            for r in replies {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 8192];
                let _ = sock.read(&mut buf).await.unwrap();
                if r.is_empty() {
                    drop(sock); // reset: no response at all
                    continue;
                }
                sock.write_all(r.as_bytes()).await.unwrap();
            }
        });
        (url, h)
    }

    fn fast() -> Client {
        Client::new(&ClientOptions {
            policy: RetryPolicy {
                initial_backoff: Duration::from_millis(20),
                ..RetryPolicy::default()
            },
            ..ClientOptions::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn retries_throttling_errors_and_resets_then_succeeds() {
        let (url, h) = serve(vec![
            "HTTP/1.1 429 Too Many\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        ])
        .await;
        let c = fast();
        let started = Instant::now();
        let resp = c.send(c.http().get(&url).build().unwrap()).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(&resp.bytes().await.unwrap()[..], b"ok");
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_eq!(c.stats().requests.load(Ordering::Relaxed), 4);
        assert_eq!(c.stats().retries.load(Ordering::Relaxed), 3);
        assert_eq!(c.stats().throttled.load(Ordering::Relaxed), 1);
        h.await.unwrap();
    }

    #[tokio::test]
    async fn client_errors_are_final_and_retries_are_bounded() {
        let (url, h) = serve(vec![
            "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope",
        ])
        .await;
        let c = fast();
        let resp = c.send(c.http().get(&url).build().unwrap()).await.unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(c.stats().retries.load(Ordering::Relaxed), 0);
        h.await.unwrap();
        let c = Client::new(&ClientOptions {
            policy: RetryPolicy {
                max_retries: 2,
                initial_backoff: Duration::from_millis(10),
                ..RetryPolicy::default()
            },
            ..ClientOptions::default()
        })
        .unwrap();
        // Nothing listens there: refused three times, then an error naming the URL
        // without its key.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = c
            .send(
                c.http()
                    .get(format!("http://{dead}/y?api_key=K3y"))
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("gave up after 3 attempts"), "{e}");
        assert!(e.contains("api_key=***") && !e.contains("K3y"), "{e}");
    }

    #[tokio::test]
    async fn limiter_spaces_requests() {
        let l = RateLimiter::new(20.0).unwrap();
        let started = Instant::now();
        for _ in 0..5 {
            l.wait().await;
        }
        // The first goes at once, the other four 50 ms apart.
        assert!(started.elapsed() >= Duration::from_millis(195));
        assert!(RateLimiter::new(0.0).is_none());
    }

    #[test]
    fn urls_hide_credentials() {
        let u =
            url::Url::parse("https://me:pw@api.x.com/a?access_token=abc&page=3&client_secret=s")
                .unwrap();
        assert_eq!(
            display_url(&u),
            "https://api.x.com/a?access_token=***&page=3&client_secret=***"
        );
    }
}
