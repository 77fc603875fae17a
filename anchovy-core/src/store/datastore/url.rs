//! Object stores by URL: the one place that turns `s3://`, `az://`, `gs://`, `file://`
//! and plain paths into an [`ObjectStore`] and a prefix inside it. The datastore and
//! the blob downloaders both open their stores here.
//!
//! | URL | store |
//! |-----|-------|
//! | `/path`, `~/x`, `file:///path` | local filesystem (directory created when missing) |
//! | `s3://bucket/prefix`, `s3a://`, `https://s3.<region>.amazonaws.com/bucket/prefix` | Amazon S3 and S3-compatible servers |
//! | `az://container/prefix`, `abfs://`, `abfss://container@account.dfs.core.windows.net/prefix`, `https://<account>.blob.core.windows.net/container/prefix` | Azure Blob Storage (and Azurite) |
//! | `gs://bucket/prefix` | Google Cloud Storage |
//!
//! Credentials come from the providers' usual environment variables, as `object_store`
//! reads them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT`,
//! `AWS_REGION`, `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`,
//! `AZURE_STORAGE_SAS_KEY`, `AZURE_STORAGE_USE_EMULATOR`, `GOOGLE_SERVICE_ACCOUNT`,
//! ...), then from a named connection whose attributes are the same keys without the
//! provider prefix (`ACHVY_CNXN__LAKE__ACCESS_KEY_ID`, `..__ACCOUNT_KEY`, `..__ENDPOINT`);
//! a connection attribute wins over the environment. Secret values from either source
//! are registered for redaction.
//!
//! Every request is retried on 5xx, 429/503 throttling, timeouts and dropped
//! connections with jittered exponential backoff (0.1 s doubling up to 15 s, at most 6
//! retries, 3 minutes in all), then fails with the URL (never a credential) and status.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreScheme, RetryConfig};

use crate::connection::Connection;
use crate::error::{Error, Result};

/// An opened object store and the prefix a URL points at inside it.
#[derive(Clone)]
pub struct Opened {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// The prefix inside the store (empty for a bucket's root).
    pub prefix: Path,
    /// The URL without query string or credentials, for messages.
    pub location: String,
    /// The directory, for a local filesystem store.
    pub local: Option<PathBuf>,
}

/// Environment variables whose values are secrets, registered for redaction.
const SECRET_VARS: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_MASTER_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
];

/// The retry policy of every object store request.
pub fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 6,
        retry_timeout: Duration::from_secs(180),
    }
}

/// The default HTTP client, plus: a throttled response (429, 503) that says when to
/// come back (`Retry-After`, seconds or an HTTP date, read by the shared
/// [`crate::http::retry`] policy and capped at 30 s here) waits that long before
/// `object_store`'s own retry (with its jittered backoff) sends the request again.
#[derive(Debug, Default)]
pub struct RetryAfterConnector;

impl HttpConnector for RetryAfterConnector {
    fn connect(&self, options: &object_store::ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(RetryAfter { inner }))
    }
}

#[derive(Debug)]
struct RetryAfter {
    inner: HttpClient,
}

/// The object stores' `Retry-After` cap: `object_store`'s retry budget (3 minutes) is
/// shared by every wait of one request.
const OBJECT_STORE_RETRY_AFTER_CAP: Duration = Duration::from_secs(30);

#[async_trait::async_trait]
impl HttpService for RetryAfter {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let resp = self.inner.execute(req).await?;
        let policy = crate::http::RetryPolicy {
            retry_after_cap: OBJECT_STORE_RETRY_AFTER_CAP,
            ..crate::http::RetryPolicy::default()
        };
        if crate::http::retry::verdict(resp.status().as_u16())
            == crate::http::retry::Verdict::Throttled
            && let Some((wait, _)) = policy.throttle_wait(
                resp.headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
            )
        {
            tracing::info!(
                status = resp.status().as_u16(),
                wait_s = wait.as_secs_f64(),
                "throttled by the object store; waiting as Retry-After asks"
            );
            tokio::time::sleep(wait).await;
        }
        Ok(resp)
    }
}

/// Client timeouts, as config keys so the builders' own environment settings (proxy,
/// `allow_http`, ...) stay in place.
const TIMEOUTS: [(&str, &str); 2] = [("connect_timeout", "10s"), ("timeout", "120s")];

/// True when `location` names a remote object store rather than a local path.
pub fn is_remote(location: &str) -> bool {
    location
        .split_once("://")
        .is_some_and(|(scheme, _)| scheme != "file")
}

/// Opens the store a URL (or local path) points at.
///
/// # Errors
/// [`Error::Config`] naming the URL for an unknown scheme or a malformed URL, with the
/// forms accepted; [`Error::Io`] when a local directory cannot be created;
/// [`Error::Datastore`] when the provider's client cannot be built (missing region,
/// bad credentials format).
pub fn open(location: &str, conn: Option<&Connection>) -> Result<Opened> {
    for v in SECRET_VARS {
        if let Ok(s) = std::env::var(v) {
            crate::secret::register(&s);
        }
    }
    if !is_remote(location) {
        return open_local(location.strip_prefix("file://").unwrap_or(location));
    }
    let bad = |why: String| {
        Error::config(
            "datastore",
            format!(
                "`{}`: {why}; use s3://bucket/prefix, az://container/prefix, \
                 https://<account>.blob.core.windows.net/container/prefix, gs://bucket/prefix, \
                 file:///path or a local path",
                printable(location)
            ),
        )
    };
    let url = url::Url::parse(location).map_err(|e| bad(e.to_string()))?;
    let (scheme, prefix) = ObjectStoreScheme::parse(&url).map_err(|e| bad(e.to_string()))?;
    let attrs: Vec<(String, String)> = conn
        .map(|c| {
            c.attr_names()
                .filter(|a| *a != "uri" && *a != "url")
                .filter_map(|a| Some((a.to_string(), c.get(a)?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let id = conn.map(|c| c.id.clone()).unwrap_or_default();
    let unknown = |attr: &str| {
        Error::config(
            "connection",
            format!(
                "`ACHVY_CNXN__{}__{}` is not a setting of this object store; use the \
                 provider's key without its prefix (access_key_id, secret_access_key, \
                 endpoint, region, account_name, account_key, sas_key, use_emulator, ...)",
                id.to_ascii_uppercase(),
                attr.to_ascii_uppercase()
            ),
        )
    };
    // The three providers' builders share no trait: one macro gives each the same
    // environment, retries, timeouts and connection attributes (`prefix` + key, or
    // the key as given).
    macro_rules! build {
        ($builder:ty, $prefix:literal) => {{
            let mut b = <$builder>::from_env()
                .with_url(location)
                .with_retry(retry_config())
                .with_http_connector(RetryAfterConnector);
            for (k, v) in TIMEOUTS {
                if let Ok(key) = k.parse() {
                    b = b.with_config(key, v);
                }
            }
            for (k, v) in &attrs {
                let key = with_prefix($prefix, k)
                    .parse()
                    .or_else(|_| k.parse())
                    .map_err(|_| unknown(k))?;
                b = b.with_config(key, v);
            }
            Arc::new(
                b.build()
                    .map_err(|e| Error::datastore("open", printable(location), e))?,
            ) as Arc<dyn ObjectStore>
        }};
    }
    let store: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::AmazonS3 => build!(object_store::aws::AmazonS3Builder, "aws_"),
        ObjectStoreScheme::MicrosoftAzure => {
            build!(object_store::azure::MicrosoftAzureBuilder, "azure_storage_")
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            build!(object_store::gcp::GoogleCloudStorageBuilder, "google_")
        }
        ObjectStoreScheme::Local => return open_local(url.path()),
        other => return Err(bad(format!("{other:?} stores are not supported"))),
    };
    Ok(Opened {
        store,
        prefix,
        location: printable(location),
        local: None,
    })
}

fn with_prefix(prefix: &str, key: &str) -> String {
    let k = key.to_ascii_lowercase();
    if k.starts_with(prefix) {
        k
    } else {
        format!("{prefix}{k}")
    }
}

fn open_local(path: &str) -> Result<Opened> {
    let path = PathBuf::from(path);
    let unusable = |message: String| Error::DatastoreUnusable {
        location: path.display().to_string(),
        message,
    };
    // A file where the datastore directory (or one of its parents) must be.
    if let Some(file) = path.ancestors().find(|p| p.is_file()) {
        return Err(unusable(format!(
            "{} is a file, not a directory; point --datastore/ACHVY_DATASTORE at a directory \
             (it is created when missing)",
            file.display()
        )));
    }
    std::fs::create_dir_all(&path).map_err(|e| {
        unusable(match e.kind() {
            std::io::ErrorKind::PermissionDenied => format!(
                "permission denied creating the directory; give this user (uid {}) write access \
                 or choose another --datastore",
                current_uid()
            ),
            std::io::ErrorKind::ReadOnlyFilesystem => {
                "it is on a read-only file system; mount it read-write or choose another \
                 --datastore"
                    .into()
            }
            _ => format!("cannot create the directory: {e}"),
        })
    })?;

    let path = path.canonicalize().map_err(|source| Error::Io {
        op: "resolve datastore directory",
        path: path.clone(),
        source,
    })?;
    let fs = LocalFileSystem::new_with_prefix(&path)
        .map_err(|e| Error::datastore("open", path.display().to_string(), e))?
        .with_automatic_cleanup(true)
        // Every write is durable when it returns (file and directory entry fsynced), as
        // on an object store: a commit record can never survive a power cut that its
        // data files did not, and checkpoints never get ahead of durable data.
        .with_fsync(true);
    Ok(Opened {
        store: Arc::new(fs),
        prefix: Path::default(),
        location: format!("file://{}", path.display()),
        local: Some(path),
    })
}

/// A URL without its query string (SAS tokens) or user info (credentials).
pub fn printable(location: &str) -> String {
    match url::Url::parse(location) {
        Ok(mut u) if u.scheme() != "file" => {
            u.set_query(None);
            let _ = u.set_password(None);
            if !u.username().is_empty() && u.scheme() != "abfs" && u.scheme() != "abfss" {
                let _ = u.set_username("");
            }
            u.to_string()
        }
        _ => location.to_string(),
    }
}

/// Whether a local datastore directory can be written: a file created and removed.
///
/// # Errors
/// [`Error::DatastoreUnusable`] saying why (permissions, read-only, full) and the fix.
pub(crate) fn check_writable_local(path: &std::path::Path) -> Result<()> {
    let unusable = |message: String| Error::DatastoreUnusable {
        location: path.display().to_string(),
        message,
    };
    let probe = path.join(format!(".anchovy-write-probe-{}", std::process::id()));
    if let Err(e) = std::fs::write(&probe, b"").and_then(|_| std::fs::remove_file(&probe)) {
        return Err(unusable(match e.kind() {
            std::io::ErrorKind::PermissionDenied => format!(
                "the directory is not writable by this user (uid {}); fix its permissions or \
                 choose another --datastore",
                current_uid()
            ),
            std::io::ErrorKind::ReadOnlyFilesystem => {
                "it is on a read-only file system; mount it read-write or choose another \
                 --datastore"
                    .into()
            }
            std::io::ErrorKind::StorageFull => {
                "the file system is full; free space or choose another --datastore".into()
            }
            _ => format!("the directory cannot be written: {e}"),
        }));
    }
    Ok(())
}

/// The effective user id, for messages about permissions.
fn current_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(String::from))
        })
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that throttles the first request (503, `Retry-After: 1`) and then
    /// serves the object: the read waits the second it was asked to, then succeeds.
    #[tokio::test]
    async fn throttled_requests_wait_for_retry_after_then_succeed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for n in 0..2 {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 8192];
                let _ = sock.read(&mut buf).await.unwrap();
                let reply = if n == 0 {
                    "HTTP/1.1 503 Slow Down\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"e1\"\r\nLast-Modified: Mon, 23 Nov 2026 10:00:00 GMT\r\nConnection: close\r\n\r\nhello".to_string()
                };
                sock.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("b")
            .with_region("us-east-1")
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_allow_http(true)
            .with_access_key_id("k")
            .with_secret_access_key("s")
            .with_retry(retry_config())
            .with_http_connector(RetryAfterConnector)
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let got = object_store::ObjectStoreExt::get(&store, &Path::from("x"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&got[..], b"hello");
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        server.await.unwrap();
    }

    #[test]
    fn urls_users_paste_are_understood() {
        // Building needs no network; credentials for the builders come from here.
        let opened = open("s3://bucket/some/prefix", None).unwrap();
        assert_eq!(opened.prefix.as_ref(), "some/prefix");
        let opened = open("az://container/p", None);
        // Azure needs an account name: the error names the URL.
        if let Err(e) = opened {
            assert!(e.to_string().contains("az://container/p"), "{e}");
        }
        let e = open("ftp://x/y", None).err().unwrap().to_string();
        assert!(
            e.contains("ftp://x/y") && e.contains("s3://bucket/prefix"),
            "{e}"
        );
        assert_eq!(
            printable("https://acct.blob.core.windows.net/c/p?sv=2020&sig=SECRET"),
            "https://acct.blob.core.windows.net/c/p"
        );
        assert_eq!(printable("s3://key:secret@bucket/p"), "s3://bucket/p");
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/ds", dir.path().display());
        let o = open(&url, None).unwrap();
        assert!(o.local.unwrap().ends_with("ds"));
    }
}
