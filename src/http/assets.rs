//! Files compiled into the binary: the dashboard (`GET /`) and the JavaScript client
//! (`GET /huddle.js`), PROTOCOL.md §14. Nothing is read from disk at run time.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use super::Resp;

/// The dashboard: one self-contained page (inline CSS, a module importing `/huddle.js`).
pub const DASHBOARD: &str = include_str!("assets/dashboard.html");
/// The JavaScript client, one dependency-free ES module.
pub const CLIENT_JS: &str = include_str!("assets/huddle.js");

/// The dashboard may load only from this server: no CDN, no external request of any kind.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; \
    style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self' ws: wss:; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset at `path`, or None when `path` names none.
pub fn serve(method: &Method, path: &str) -> Option<Resp> {
    if path == "/favicon.ico" {
        // Browsers ask for it on every page; an empty answer keeps their consoles clean.
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=86400"),
        );
        return Some(r);
    }
    let (body, content_type) = match path {
        "/" | "/index.html" => (DASHBOARD, "text/html; charset=utf-8"),
        "/huddle.js" => (CLIENT_JS, "text/javascript; charset=utf-8"),
        _ => return None,
    };
    if method != Method::GET && method != Method::HEAD {
        return Some(super::api_error(&crate::error::ApiError::MethodNotAllowed));
    }
    let mut r = Response::new(Full::new(if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from_static(body.as_bytes())
    }));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if path == "/huddle.js" {
        // Pages on other origins import the client (PROTOCOL.md §14).
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    } else {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DASHBOARD_CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    Some(r)
}
