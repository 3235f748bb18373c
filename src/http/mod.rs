//! The hyper side: one HTTP/1.1 connection per accepted socket, routed to the WebSocket
//! upgrade (`ws`) or the API (`api`). hyper parses heads (16 KiB cap → 431, head timeout) and
//! is out of the picture once a connection is upgraded.

mod api;
mod assets;
mod ws;

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpStream;

use crate::error::ApiError;
use crate::shard::Shard;

/// Largest request head (request line + headers), PROTOCOL.md §2.
const MAX_HEAD: usize = 16 * 1024;

/// Response type of every handler.
pub type Resp = Response<Full<Bytes>>;

/// Serves one accepted TCP connection until it closes or is upgraded.
pub async fn serve(cell: Rc<RefCell<Shard>>, stream: TcpStream, peer: SocketAddr) {
    let shared = cell.borrow().shared.clone();
    let timeout = shared.config.handshake_timeout;
    let svc = service_fn(move |req| {
        let cell = cell.clone();
        async move { Ok::<_, Infallible>(route(cell, peer, req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_header_size(MAX_HEAD);
    let conn = builder
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, "http connection ended: {e}");
    }
}

async fn route(cell: Rc<RefCell<Shard>>, peer: SocketAddr, req: http::Request<Incoming>) -> Resp {
    let path = req.uri().path();
    if path == "/ws" || path.starts_with("/ws/") {
        return ws::upgrade(cell, peer, req);
    }
    let (shared, shard) = {
        let s = cell.borrow();
        (s.shared.clone(), s.id)
    };
    match path {
        // Cluster mode: 503 while Redis is unreachable, so balancers send new clients elsewhere.
        "/healthz" => match &shared.cluster {
            Some(c) if !c.is_healthy() => {
                text(StatusCode::SERVICE_UNAVAILABLE, "redis unavailable")
            }
            _ => text(StatusCode::OK, "ok"),
        },
        "/metrics" => {
            let mut r = text(StatusCode::OK, shared.metrics.render());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        p if p.starts_with("/api/") => api::handle(&shared, shard, req).await,
        p => assets::serve(req.method(), p)
            .unwrap_or_else(|| error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")),
    }
}

/// A plain-text response.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A JSON response.
fn json_response(status: StatusCode, body: &serde_json::Value) -> Resp {
    json_bytes(status, body.to_string().into_bytes())
}

/// A response whose body is JSON text built elsewhere.
fn json_bytes(status: StatusCode, body: Vec<u8>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// `{"error":{"code":…,"message":…}}` with `status`.
fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Resp {
    json_response(
        status,
        &json!({ "error": { "code": code, "message": message.to_string() } }),
    )
}

/// The answer to a refused `/api/*` request: status, code and headers from the error table.
fn api_error(e: &ApiError) -> Resp {
    let (status, code) = e.status_and_code();
    let mut r = error(status, code, e);
    let h = r.headers_mut();
    for (name, value) in e.extra_headers() {
        h.insert(name, value);
    }
    r
}
