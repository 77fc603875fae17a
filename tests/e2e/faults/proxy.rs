//! A fault-injecting HTTP proxy in front of an object store (Azurite): errors,
//! lost answers, an outage, and bodies cut short.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

/// Passes every request through.
pub(super) const PASS_ALL: u8 = 0;
/// Every 5th request: 500; every 11th: 503 with `Retry-After: 1`; every 13th: 429 with
/// `Retry-After: 1`; every 17th is forwarded but its answer replaced by a 500 (the
/// write happened, the client thinks it failed).
pub(super) const FLAKY: u8 = 1;
/// Every request: 500.
pub(super) const DOWN: u8 = 2;
/// The first [`CUTS_PER_OBJECT`] GETs of each `.csv` object answer their status and
/// headers, then only the first half of the body before the connection ends: reads
/// dropped mid-object, more times than object_store resumes on its own (its 6
/// retries), so the file source's resume has to take over.
pub(super) const CUT: u8 = 3;
pub(super) const CUTS_PER_OBJECT: u32 = 8;

pub(super) struct FaultProxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    pub(super) injected: Arc<AtomicU64>,
    pub(super) requests: Arc<AtomicU64>,
    _rt: tokio::runtime::Runtime,
}

/// GETs cut so far, by object path ([`CUT`]).
type Cuts = Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>;

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

fn fault(code: u16) -> hyper::Response<Body> {
    use http_body_util::BodyExt;
    let mut r = hyper::Response::builder().status(code);
    if code == 429 || code == 503 {
        r = r.header("Retry-After", "1");
    }
    r.body(
        http_body_util::Full::new(bytes::Bytes::from_static(b"injected fault"))
            .map_err(|never| match never {})
            .boxed(),
    )
    .unwrap()
}

impl FaultProxy {
    /// A proxy on 127.0.0.1 forwarding to `upstream` (`http://host:port`).
    pub(super) fn start(upstream: &str) -> FaultProxy {
        let up: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("upstream host:port");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, injected, requests) = (
            Arc::new(AtomicU8::new(PASS_ALL)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let (m, inj, n) = (mode.clone(), injected.clone(), requests.clone());
        let cuts = Cuts::default();
        rt.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let (m, inj, n, c) = (m.clone(), inj.clone(), n.clone(), cuts.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (m, inj, n, c) = (m.clone(), inj.clone(), n.clone(), c.clone());
                        handle(req, up, m, inj, n, c)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        FaultProxy {
            addr,
            mode,
            injected,
            requests,
            _rt: rt,
        }
    }

    pub(super) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(super) fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    up: SocketAddr,
    mode: Arc<AtomicU8>,
    injected: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    cuts: Cuts,
) -> Result<hyper::Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    use http_body_util::BodyExt;
    let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
    let m = mode.load(Ordering::SeqCst);
    let before = match m {
        DOWN => Some(500),
        FLAKY if n.is_multiple_of(5) => Some(500),
        FLAKY if n.is_multiple_of(11) => Some(503),
        FLAKY if n.is_multiple_of(13) => Some(429),
        _ => None,
    };
    if let Some(code) = before {
        injected.fetch_add(1, Ordering::SeqCst);
        return Ok(fault(code));
    }
    let cut =
        m == CUT && req.method() == hyper::Method::GET && req.uri().path().ends_with(".csv") && {
            let mut cuts = cuts.lock().unwrap();
            let n = cuts.entry(req.uri().path().to_string()).or_default();
            *n += 1;
            *n <= CUTS_PER_OBJECT
        };
    let stream = tokio::net::TcpStream::connect(up).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    if cut && resp.status().is_success() {
        // The headers promise the whole object (Content-Length); half of it comes.
        let (parts, body) = resp.into_parts();
        let all = body.collect().await?.to_bytes();
        injected.fetch_add(1, Ordering::SeqCst);
        // A stream body (no exact size), so hyper writes the promised length as given
        // and ends the connection when the stream ends short of it (a moment after the
        // half is flushed).
        use futures::StreamExt;
        let frames = futures::stream::iter([Ok::<_, hyper::Error>(hyper::body::Frame::data(
            all.slice(..all.len() / 2),
        ))])
        .chain(
            futures::stream::once(tokio::time::sleep(Duration::from_millis(200)))
                .filter_map(|()| async { None }),
        );
        let half = BodyExt::boxed(http_body_util::StreamBody::new(frames));
        return Ok(hyper::Response::from_parts(parts, half));
    }
    if m == FLAKY && n.is_multiple_of(17) {
        // The request reached the server; its answer is lost.
        let _ = resp.into_body().collect().await;
        injected.fetch_add(1, Ordering::SeqCst);
        return Ok(fault(500));
    }
    Ok(resp.map(|b| b.boxed()))
}
