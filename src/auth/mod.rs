//! Tokens and rights (PROTOCOL.md §9): [`Auth`] verifies a JWT into an [`Identity`] (user,
//! expiry, compiled claim patterns); [`rights`] decides what a connection may subscribe to and
//! publish.
//!
//! `jsonwebtoken` holds the keys (PEM, JWK) and checks the signature (`crypto::verify`); the
//! header and the claims are read here, so that the rules are exactly RFC 7515/7519's and
//! PROTOCOL.md's: unknown header parameters of any type are ignored, `crit` is refused (huddle
//! implements no extension), `iss` is one string, and no claim is looked at before the signature
//! is good. Time comes in as an argument (`now` since the Unix epoch), so every rule is tested
//! with a fake clock: `exp` and `nbf` are checked with `--jwt-leeway` (default 0, where the
//! crate's own default is 60 s), and a token is expired from the second `exp + leeway` on
//! (RFC 7519 §4.1.4: "on or after").
//!
//! The key set sits behind a lock that only upgrades, refreshes and `SIGHUP` take (never the
//! per-message path); a reload swaps it whole, so a verification sees the old set or the new one.
//! Nothing here formats a token into an error: refusals are logged without it.

pub mod keys;
pub mod rights;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Algorithm;
use parking_lot::RwLock;
use serde_json::{Map, Value};

pub use crate::error::AuthError;
pub use keys::KeySet;
pub use rights::{Grants, Policy, Rights};

/// Longest token accepted (PROTOCOL.md §9); longer ones are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Most patterns one claim (`channels` or `publish`) may hold.
pub const MAX_CLAIM_PATTERNS: usize = 256;

/// Who a verified token says the connection is, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The `sub` claim: the connection's `user_id`.
    pub user: String,
    /// The `exp` claim (seconds since the Unix epoch).
    pub exp: u64,
    /// Time left until `exp + leeway`, when the connection is closed with 4401 (always > 0).
    pub valid_for: Duration,
    /// Whole seconds until `exp` (the `expires_in` of `connection_ack`).
    pub expires_in: u64,
    /// The `channels` and `publish` claims, compiled.
    pub grants: Grants,
}

/// Token settings from the command line.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub secret: Option<String>,
    pub public_key: Option<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    pub audience: Vec<String>,
    pub issuer: Vec<String>,
    pub leeway: Duration,
}

impl Settings {
    /// True when any key is configured: tokens are on.
    pub fn enabled(&self) -> bool {
        self.secret.is_some() || self.public_key.is_some() || self.jwks_file.is_some()
    }
}

/// The token verifier every shard shares.
pub struct Auth {
    settings: Settings,
    keys: RwLock<Arc<KeySet>>,
}

impl Auth {
    /// Loads the keys; the error names the flag and the file.
    pub fn new(settings: Settings) -> Result<Auth, String> {
        let keys = KeySet::load(
            settings.secret.as_deref(),
            settings.public_key.as_deref(),
            settings.jwks_file.as_deref(),
        )?;
        Ok(Self::with_keys(settings, keys))
    }

    /// A verifier over a key set built elsewhere (tests, benches).
    pub fn with_keys(settings: Settings, keys: KeySet) -> Auth {
        Auth {
            settings,
            keys: RwLock::new(Arc::new(keys)),
        }
    }

    /// Reads the key files again (`SIGHUP`); on error the old keys stay. Returns the number of
    /// JWKS keys now loaded.
    pub fn reload(&self) -> Result<usize, String> {
        let s = &self.settings;
        let keys = KeySet::load(
            s.secret.as_deref(),
            s.public_key.as_deref(),
            s.jwks_file.as_deref(),
        )?;
        let n = keys.jwks_len();
        *self.keys.write() = Arc::new(keys);
        Ok(n)
    }

    /// Verifies `token` at `now` (since the Unix epoch), layer by layer: size, shape, header
    /// (RFC 7515 §4: `alg`, `kid`, `crit`; other parameters ignored), key, signature (by
    /// `jsonwebtoken`), and only then the claims (RFC 7519 §4, PROTOCOL.md §9).
    pub fn verify(&self, token: &str, now: Duration) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLarge(MAX_TOKEN_LEN));
        }
        let malformed = |m: &str| AuthError::Malformed(m.into());
        let mut parts = token.split('.');
        let (Some(head), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected three dot-separated parts"));
        };
        let header = Header::parse(head)?;
        let keys = self.keys.read().clone();
        let key = keys.select(header.alg, header.kid.as_deref())?;
        let signed = &token.as_bytes()[..head.len() + 1 + payload.len()];
        match jsonwebtoken::crypto::verify(signature, signed, &key.key, header.alg) {
            Ok(true) => {}
            Ok(false) => return Err(AuthError::BadSignature),
            Err(e) if matches!(e.kind(), ErrorKind::Base64(_)) => {
                return Err(malformed("signature is not base64url"))
            }
            Err(_) => return Err(AuthError::BadSignature),
        }
        let bytes = B64
            .decode(payload)
            .map_err(|_| malformed("payload is not base64url"))?;
        let claims = match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(AuthError::BadClaim("claims must be a JSON object".into())),
            // Signed, so its author meant these claims: say what is wrong with them (a number
            // such as 1e400 that no f64 holds lands here too).
            Err(_) => {
                return Err(AuthError::BadClaim(
                    "claims are not JSON, or hold a number out of range".into(),
                ))
            }
        };
        self.identity(claims, now)
    }

    /// Checks the claims of a token whose signature is good.
    fn identity(&self, mut c: Map<String, Value>, now: Duration) -> Result<Identity, AuthError> {
        let bad = |m: &str| AuthError::BadClaim(m.into());
        let missing = |m: &str| AuthError::MissingClaim(m.into());
        let user = match c.remove("sub") {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::String(_)) => return Err(bad("sub: must not be empty")),
            None => return Err(missing("sub")),
            Some(_) => return Err(bad("sub: must be a string")),
        };
        let exp = match c.get("exp") {
            None => return Err(missing("exp")),
            Some(v) => seconds_claim("exp", v)?,
        };
        let leeway = self.settings.leeway;
        let end = Duration::from_secs(exp).saturating_add(leeway);
        if now >= end {
            return Err(AuthError::Expired);
        }
        match c.get("nbf") {
            None | Some(Value::Null) => {}
            Some(v) => {
                let nbf = seconds_claim("nbf", v)?;
                if Duration::from_secs(nbf) > now.saturating_add(leeway) {
                    return Err(AuthError::NotYetValid);
                }
            }
        }
        let s = &self.settings;
        if !s.audience.is_empty() {
            let listed = |a: &Value| {
                a.as_str()
                    .is_some_and(|a| s.audience.iter().any(|x| x == a))
            };
            match c.get("aud") {
                None => return Err(missing("aud")),
                Some(Value::String(_)) if listed(&c["aud"]) => {}
                Some(Value::String(_)) => return Err(AuthError::Audience),
                Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
                    if !list.iter().any(listed) {
                        return Err(AuthError::Audience);
                    }
                }
                Some(_) => return Err(bad("aud: must be a string or an array of strings")),
            }
        }
        if !s.issuer.is_empty() {
            // RFC 7519 §4.1.1: one StringOrURI, never a list.
            match c.get("iss") {
                None => return Err(missing("iss")),
                Some(Value::String(i)) if s.issuer.iter().any(|x| x == i) => {}
                Some(Value::String(_)) => return Err(AuthError::Issuer),
                Some(_) => return Err(bad("iss: must be a string")),
            }
        }
        Ok(Identity {
            user,
            exp,
            valid_for: end - now,
            expires_in: exp.saturating_sub(now.as_secs()),
            grants: Grants::new(
                &claim_patterns("channels", c.remove("channels"))?,
                &claim_patterns("publish", c.remove("publish"))?,
            ),
        })
    }
}

/// The header parameters huddle reads (RFC 7515 §4.1); every other one is ignored, whatever its
/// type.
struct Header {
    alg: Algorithm,
    kid: Option<String>,
}

impl Header {
    fn parse(head: &str) -> Result<Header, AuthError> {
        let malformed = |m: &str| AuthError::Malformed(m.into());
        let bytes = B64
            .decode(head)
            .map_err(|_| malformed("header is not base64url"))?;
        let Ok(Value::Object(h)) = serde_json::from_slice::<Value>(&bytes) else {
            return Err(malformed("header is not a JSON object"));
        };
        let alg = match h.get("alg") {
            Some(Value::String(a)) => a,
            None => return Err(malformed("header has no alg")),
            Some(_) => return Err(malformed("alg must be a string")),
        };
        if alg.eq_ignore_ascii_case("none") {
            return Err(AuthError::AlgNone);
        }
        let alg = alg
            .parse::<Algorithm>()
            .map_err(|_| malformed("unsupported alg"))?;
        // RFC 7515 §4.1.11: huddle implements no extension, so any critical one makes the token
        // invalid.
        if h.contains_key("crit") {
            return Err(malformed("crit header parameters are not supported"));
        }
        let kid = match h.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(malformed("kid must be a string")),
        };
        Ok(Header { alg, kid })
    }
}

/// A NumericDate (RFC 7519 §2) as whole seconds.
fn seconds_claim(name: &str, v: &Value) -> Result<u64, AuthError> {
    let v = v
        .as_f64()
        .ok_or_else(|| AuthError::BadClaim(format!("{name}: must be a number")))?;
    if (0.0..1e15).contains(&v) {
        Ok(v as u64)
    } else {
        Err(AuthError::BadClaim(format!(
            "{name}: must be seconds since 1970"
        )))
    }
}

/// A `channels`/`publish` claim: absent or an array of non-empty strings.
fn claim_patterns(name: &str, v: Option<serde_json::Value>) -> Result<Vec<String>, AuthError> {
    let bad = |m: &str| AuthError::BadClaim(format!("{name}: {m}"));
    let list = match v {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Array(list)) => list,
        Some(_) => return Err(bad("must be an array of patterns")),
    };
    if list.len() > MAX_CLAIM_PATTERNS {
        return Err(bad("too many patterns"));
    }
    list.into_iter()
        .map(|p| match p {
            serde_json::Value::String(s) if !s.is_empty() && s.len() <= 256 => Ok(s),
            _ => Err(bad("every pattern must be a string of 1 to 256 bytes")),
        })
        .collect()
}

/// The token of an upgrade request: `?token=` first, else `Authorization: Bearer` (scheme in any
/// case). `Some("")` for an empty one, which is refused as malformed.
pub fn bearer(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, token) = value.split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The claims of a development token (`huddle token`).
#[derive(Debug, serde::Serialize)]
pub struct DevClaims<'a> {
    pub sub: &'a str,
    pub exp: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub channels: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub publish: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<&'a str>,
}

/// Signs `claims` with HS256 (what `huddle token` prints).
pub fn mint_hs256(secret: &[u8], claims: &DevClaims<'_>) -> Result<String, String> {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
