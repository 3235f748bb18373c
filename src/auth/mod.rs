//! Tokens and rights (PROTOCOL.md §9): [`Auth`] verifies a JWT into an [`Identity`] (user,
//! expiry, compiled claim patterns); [`rights`] decides what a connection may subscribe to and
//! publish.
//!
//! Time comes in as an argument (`now` since the Unix epoch), so every rule is tested with a fake
//! clock. `exp` and `nbf` are checked here, not by `jsonwebtoken`, with `--jwt-leeway` (default 0,
//! where the crate's own default is 60 s): a token is expired from the second `exp + leeway` on
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

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation};
use parking_lot::RwLock;
use serde::Deserialize;

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
    /// One per algorithm family (the crate checks every listed algorithm against the key's
    /// family); see [`validation`].
    validations: [Validation; 4],
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
        let validations = [
            AlgorithmFamily::Hmac,
            AlgorithmFamily::Rsa,
            AlgorithmFamily::Ec,
            AlgorithmFamily::Ed,
        ]
        .map(|family| validation(&settings, family));
        Auth {
            settings,
            keys: RwLock::new(Arc::new(keys)),
            validations,
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

    /// Verifies `token` at `now` (since the Unix epoch).
    pub fn verify(&self, token: &str, now: Duration) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLarge(MAX_TOKEN_LEN));
        }
        let alg = header_alg(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| map_error(&e))?;
        debug_assert_eq!(header.alg, alg);
        let keys = self.keys.read().clone();
        let key = keys.select(header.alg, header.kid.as_deref())?;
        let validation = &self.validations[family_index(header.alg.family())];
        let data = jsonwebtoken::decode::<RawClaims>(token, &key.key, validation)
            .map_err(|e| map_error(&e))?;
        self.identity(data.claims, now)
    }

    /// Checks time and shape of verified claims.
    fn identity(&self, c: RawClaims, now: Duration) -> Result<Identity, AuthError> {
        let leeway = self.settings.leeway;
        let exp = seconds_claim(
            "exp",
            c.exp.ok_or_else(|| AuthError::MissingClaim("exp".into()))?,
        )?;
        let end = Duration::from_secs(exp).saturating_add(leeway);
        if now >= end {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = c.nbf {
            let nbf = seconds_claim("nbf", nbf)?;
            if Duration::from_secs(nbf) > now.saturating_add(leeway) {
                return Err(AuthError::NotYetValid);
            }
        }
        let user = c.sub.ok_or_else(|| AuthError::MissingClaim("sub".into()))?;
        if user.is_empty() {
            return Err(AuthError::BadClaim("sub: must not be empty".into()));
        }
        Ok(Identity {
            user,
            exp,
            valid_for: end - now,
            expires_in: exp.saturating_sub(now.as_secs()),
            grants: Grants::new(
                &claim_patterns("channels", c.channels)?,
                &claim_patterns("publish", c.publish)?,
            ),
        })
    }
}

/// What the crate checks: the signature, `sub` and `exp` present, `aud` and `iss` when
/// configured. Time is checked by [`Auth::identity`]; key selection has already bound the
/// algorithm to the key, so every algorithm of the family is let through to the signature check.
fn validation(settings: &Settings, family: AlgorithmFamily) -> Validation {
    let mut v = Validation::new_for_family(family);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    let mut required = vec!["sub", "exp"];
    v.validate_aud = !settings.audience.is_empty();
    if v.validate_aud {
        v.set_audience(&settings.audience);
        required.push("aud");
    }
    if !settings.issuer.is_empty() {
        v.set_issuer(&settings.issuer);
        required.push("iss");
    }
    v.set_required_spec_claims(&required);
    v
}

fn family_index(f: AlgorithmFamily) -> usize {
    match f {
        AlgorithmFamily::Hmac => 0,
        AlgorithmFamily::Rsa => 1,
        AlgorithmFamily::Ec => 2,
        AlgorithmFamily::Ed => 3,
    }
}

/// The claims huddle reads; others are ignored. `sub` and `exp` are required by the validation.
#[derive(Deserialize)]
struct RawClaims {
    // Optional here so that a missing one is reported by the crate's check as missing.
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    channels: Option<serde_json::Value>,
    #[serde(default)]
    publish: Option<serde_json::Value>,
}

/// A NumericDate (RFC 7519 §2) as whole seconds.
fn seconds_claim(name: &str, v: f64) -> Result<u64, AuthError> {
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

/// The `alg` of the token's header, read before `jsonwebtoken` (which cannot name `none`), so
/// `alg: none` gets its own refusal.
fn header_alg(token: &str) -> Result<Algorithm, AuthError> {
    #[derive(Deserialize)]
    struct Head {
        alg: Option<String>,
    }
    let malformed = |m: &str| AuthError::Malformed(m.into());
    let mut parts = token.split('.');
    let (Some(head), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected three dot-separated parts"));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| malformed("header is not base64url"))?;
    let head: Head =
        serde_json::from_slice(&bytes).map_err(|_| malformed("header is not a JSON object"))?;
    let alg = head.alg.ok_or_else(|| malformed("header has no alg"))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(AuthError::AlgNone);
    }
    alg.parse::<Algorithm>()
        .map_err(|_| malformed("unsupported alg"))
}

fn map_error(e: &jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::Malformed("unsupported alg".into())
        }
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::Audience,
        ErrorKind::InvalidIssuer => AuthError::Issuer,
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => AuthError::BadClaim(c.clone()),
        ErrorKind::Json(_) => AuthError::BadClaim("claims do not have the expected types".into()),
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
            AuthError::Malformed("not a JWT".into())
        }
        _ => AuthError::BadSignature,
    }
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
