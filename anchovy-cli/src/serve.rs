//! The health and metrics endpoint of a service (`start -S`): `/healthz` (the process
//! answers), `/readyz` (started, lease held, last batch OK; 503 otherwise) and
//! `/metrics` (Prometheus text). HTTP/1.1 on `bind:port`, served by hyper.

use std::convert::Infallible;
use std::sync::Arc;

use anchovy_core::Session;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

/// Binds `bind:port` and serves until the process ends.
///
/// # Errors
/// The bind error (port in use, address not local), for the caller to report.
pub async fn spawn(
    session: Arc<Session>,
    bind: &str,
    port: u16,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind((bind, port)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let session = session.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| answer(session.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn answer(
    session: Arc<Session>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let m = &session.ctx().metrics;
    let (status, ctype, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" => {
            let (ready, why) = m.ready();
            let held = session.lease_held();
            if ready && held {
                (StatusCode::OK, "text/plain", format!("ready: {why}\n"))
            } else {
                let why = if held {
                    why
                } else {
                    "the run lease is lost".into()
                };
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {why}\n"),
                )
            }
        }
        "/metrics" => {
            m.refresh_lag().await;
            (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                m.render(session.lease_held()),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: /healthz, /readyz, /metrics\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(resp)
}
