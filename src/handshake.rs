//! RFC 6455 §4.2 opening-handshake checks, as a pure function of the request head.
//!
//! hyper has already parsed the request (and enforced the 16 KiB head limit and the head timeout);
//! this module decides whether it is an acceptable WebSocket upgrade and computes
//! `Sec-WebSocket-Accept`. Nothing here touches a socket, so every rule is unit-tested.

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Version};
use sha1::{Digest, Sha1};

/// The GUID of RFC 6455 §1.3, appended to the client key before hashing.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade request is refused; `crate::error` maps each to its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("WebSocket upgrade requires GET")]
    Method,
    #[error("WebSocket upgrade requires HTTP/1.1")]
    HttpVersion,
    #[error("missing Host header")]
    MissingHost,
    #[error("this path needs a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)")]
    NotUpgrade,
    #[error("unsupported Sec-WebSocket-Version (only 13)")]
    UnsupportedVersion,
    #[error("missing, duplicate or malformed Sec-WebSocket-Key")]
    BadKey,
    #[error("origin not allowed")]
    OriginNotAllowed,
    #[error("too many connections from this address; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
}

/// Checks an upgrade request; on success returns the `Sec-WebSocket-Accept` value.
///
/// `allowed_origins` empty means any origin. Checks run in the order a client would fix them:
/// method, HTTP version, Host, Upgrade/Connection, version, key, origin.
pub fn check(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    allowed_origins: &[String],
) -> Result<String, HandshakeError> {
    if method != Method::GET {
        return Err(HandshakeError::Method);
    }
    if version < Version::HTTP_11 {
        return Err(HandshakeError::HttpVersion);
    }
    if headers.get(header::HOST).is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return Err(HandshakeError::NotUpgrade);
    }
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes().trim_ascii() == b"13" => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k.as_bytes().trim_ascii(),
        _ => return Err(HandshakeError::BadKey),
    };
    if !valid_key(key) {
        return Err(HandshakeError::BadKey);
    }
    // No Origin: not a browser, so not a cross-site request (PROTOCOL.md §2).
    if let Some(origin) = headers.get(header::ORIGIN) {
        if !origin_allowed(origin.as_bytes(), allowed_origins) {
            return Err(HandshakeError::OriginNotAllowed);
        }
    }
    Ok(accept_key(key))
}

/// `origin` is in `allowed` (empty: any), compared case-insensitively, ignoring one trailing `/`.
pub fn origin_allowed(origin: &[u8], allowed: &[String]) -> bool {
    fn norm(s: &[u8]) -> &[u8] {
        let s = s.trim_ascii();
        s.strip_suffix(b"/").unwrap_or(s)
    }
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| norm(a.as_bytes()).eq_ignore_ascii_case(norm(origin)))
}

/// `Sec-WebSocket-Accept` = base64(SHA-1(key ++ GUID)) (RFC 6455 §4.2.2 item 5.4).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WS_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// A key is the base64 encoding of exactly 16 bytes (RFC 6455 §4.1 item 7).
fn valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k.len() == 16)
}

/// True if any comma-separated token of any `name` header equals `token`, ignoring ASCII case
/// (`Connection: keep-alive, Upgrade` counts).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v: &HeaderValue| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "localhost".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        h
    }

    fn run(h: &HeaderMap) -> Result<String, HandshakeError> {
        check(&Method::GET, Version::HTTP_11, h, &[])
    }

    #[test]
    fn rfc_example_accept_key() {
        // RFC 6455 §1.3 worked example.
        assert_eq!(
            run(&upgrade_headers()).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn method_and_version() {
        let h = upgrade_headers();
        assert_eq!(
            check(&Method::POST, Version::HTTP_11, &h, &[]),
            Err(HandshakeError::Method)
        );
        assert_eq!(
            check(&Method::GET, Version::HTTP_10, &h, &[]),
            Err(HandshakeError::HttpVersion)
        );
    }

    #[test]
    fn host_required() {
        let mut h = upgrade_headers();
        h.remove(header::HOST);
        assert_eq!(run(&h), Err(HandshakeError::MissingHost));
    }

    #[test]
    fn upgrade_and_connection_tokens() {
        let mut h = upgrade_headers();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        assert!(run(&h).is_ok());
        h.insert(header::UPGRADE, "h2c".parse().unwrap());
        assert_eq!(run(&h), Err(HandshakeError::NotUpgrade));
        let mut h = upgrade_headers();
        h.insert(header::CONNECTION, "keep-alive".parse().unwrap());
        assert_eq!(run(&h), Err(HandshakeError::NotUpgrade));
        let mut h = upgrade_headers();
        h.remove(header::UPGRADE);
        assert_eq!(run(&h), Err(HandshakeError::NotUpgrade));
    }

    #[test]
    fn version_must_be_13() {
        let mut h = upgrade_headers();
        h.insert(header::SEC_WEBSOCKET_VERSION, "8".parse().unwrap());
        assert_eq!(run(&h), Err(HandshakeError::UnsupportedVersion));
        h.remove(header::SEC_WEBSOCKET_VERSION);
        assert_eq!(run(&h), Err(HandshakeError::UnsupportedVersion));
    }

    #[test]
    fn key_rules() {
        let mut h = upgrade_headers();
        h.remove(header::SEC_WEBSOCKET_KEY);
        assert_eq!(run(&h), Err(HandshakeError::BadKey));
        h.insert(header::SEC_WEBSOCKET_KEY, "not base64!".parse().unwrap());
        assert_eq!(run(&h), Err(HandshakeError::BadKey));
        // Valid base64 of 15 bytes.
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            "AAAAAAAAAAAAAAAAAAAA".parse().unwrap(),
        );
        assert_eq!(run(&h), Err(HandshakeError::BadKey));
        let mut h = upgrade_headers();
        h.append(
            header::SEC_WEBSOCKET_KEY,
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        assert_eq!(run(&h), Err(HandshakeError::BadKey), "duplicate key");
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://ok.example".to_string()];
        let mut h = upgrade_headers();
        assert!(
            check(&Method::GET, Version::HTTP_11, &h, &allowed).is_ok(),
            "no Origin: not a browser, not refused"
        );
        for same in ["https://OK.example", "https://ok.example/"] {
            h.insert(header::ORIGIN, same.parse().unwrap());
            assert!(
                check(&Method::GET, Version::HTTP_11, &h, &allowed).is_ok(),
                "{same}"
            );
        }
        h.insert(header::ORIGIN, "https://ok.example.evil".parse().unwrap());
        assert_eq!(
            check(&Method::GET, Version::HTTP_11, &h, &allowed),
            Err(HandshakeError::OriginNotAllowed)
        );
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert_eq!(
            check(&Method::GET, Version::HTTP_11, &h, &allowed),
            Err(HandshakeError::OriginNotAllowed)
        );
        h.insert(header::ORIGIN, "https://ok.example".parse().unwrap());
        assert!(check(&Method::GET, Version::HTTP_11, &h, &allowed).is_ok());
    }
}
