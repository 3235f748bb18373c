//! Invariant: `handshake::check` on any request head (parsed by httparse, converted to `http`
//! types the way hyper would; heads those steps refuse are skipped) never panics and gives the
//! same verdict as an independent model of RFC 6455 §4.2.1 written here over the raw headers:
//! method GET, HTTP/1.1 or later, a Host, `Upgrade: websocket` and `Connection: upgrade` tokens,
//! exactly one `Sec-WebSocket-Version` that is `13`, exactly one `Sec-WebSocket-Key` that is 24
//! chars of canonical base64 for 16 bytes, and, when a list is configured and the request has an
//! Origin, an allowed one (case-insensitive, one trailing `/` ignored), in that order. On success the accept value equals `accept_key` of the trimmed key.
//! Each head is checked with no origin list and with a one-entry list.

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};
use huddle::handshake::{self, HandshakeError};
use libfuzzer_sys::fuzz_target;

const ALLOWED_ORIGIN: &str = "https://ok.example";

/// Values of every header named `name` (case-insensitive), in order.
fn values<'a>(raw: &'a [(String, Vec<u8>)], name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    raw.iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

fn has_token(raw: &[(String, Vec<u8>)], name: &str, token: &str) -> bool {
    values(raw, name).any(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Base64 (standard alphabet, padded, canonical) encoding of exactly 16 bytes: 22 alphabet chars
/// whose last one carries 2 data bits (its low 4 bits zero), then "==".
fn is_key(k: &[u8]) -> bool {
    fn sextet(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    k.len() == 24
        && &k[22..] == b"=="
        && k[..22].iter().all(|&c| sextet(c).is_some())
        && sextet(k[21]).is_some_and(|s| s & 0x0F == 0)
}

/// The model: RFC 6455 §4.2.1 checks in the documented order, over the raw header list.
fn model(
    method: &str,
    minor: u8,
    raw: &[(String, Vec<u8>)],
    origins: &[String],
) -> Result<Vec<u8>, HandshakeError> {
    if method != "GET" {
        return Err(HandshakeError::Method);
    }
    if minor < 1 {
        return Err(HandshakeError::HttpVersion);
    }
    if values(raw, "host").next().is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if !has_token(raw, "upgrade", "websocket") || !has_token(raw, "connection", "upgrade") {
        return Err(HandshakeError::NotUpgrade);
    }
    let versions: Vec<&[u8]> = values(raw, "sec-websocket-version").collect();
    if versions.len() != 1 || versions[0].trim_ascii() != b"13" {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let keys: Vec<&[u8]> = values(raw, "sec-websocket-key").collect();
    if keys.len() != 1 || !is_key(keys[0].trim_ascii()) {
        return Err(HandshakeError::BadKey);
    }
    // PROTOCOL.md §2: a request without Origin (not a browser) passes; the first Origin header
    // must equal an allowed one, ignoring ASCII case, surrounding whitespace and one trailing `/`.
    if let (false, Some(origin)) = (origins.is_empty(), values(raw, "origin").next()) {
        let norm = |s: &[u8]| -> Vec<u8> {
            let s = s.trim_ascii();
            s.strip_suffix(b"/").unwrap_or(s).to_ascii_lowercase()
        };
        if !origins.iter().any(|a| norm(a.as_bytes()) == norm(origin)) {
            return Err(HandshakeError::OriginNotAllowed);
        }
    }
    Ok(keys[0].trim_ascii().to_vec())
}

fuzz_target!(|data: &[u8]| {
    let mut storage = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut storage);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    let (Some(method_str), Some(minor)) = (req.method, req.version) else {
        return;
    };
    // What hyper would build; heads it would refuse never reach `check`.
    let Ok(method) = Method::from_bytes(method_str.as_bytes()) else {
        return;
    };
    let version = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let mut headers = HeaderMap::new();
    let mut raw = Vec::new();
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        headers.append(name, value);
        raw.push((h.name.to_owned(), h.value.to_vec()));
    }

    for origins in [Vec::new(), vec![ALLOWED_ORIGIN.to_owned()]] {
        let got = handshake::check(&method, version, &headers, &origins);
        let want = model(method_str, minor, &raw, &origins);
        match (&got, &want) {
            (Ok(accept), Ok(key)) => {
                assert_eq!(
                    *accept,
                    handshake::accept_key(key),
                    "accept of the trimmed key"
                );
                assert_eq!(accept.len(), 28, "base64 of a 20-byte SHA-1");
            }
            (Err(g), Err(w)) => assert_eq!(g, w, "origins {origins:?}, headers {raw:?}"),
            _ => panic!("check {got:?} vs model {want:?}; origins {origins:?}, headers {raw:?}"),
        }
    }
});
