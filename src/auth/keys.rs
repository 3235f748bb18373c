//! Verification keys (PROTOCOL.md §9): an HMAC secret (`--jwt-secret`), a PEM public key
//! (`--jwt-public-key`) and a JWKS document (`--jwt-jwks-file`, keys chosen by `kid`).
//!
//! Every key carries the algorithms it may verify, fixed by the kind of key, never by the
//! token: an RSA key verifies RS*/PS* only, so an HS256 token "signed" with the RSA public key as
//! its secret (the classic algorithm confusion) finds no key for HS256 and is refused.

use std::collections::HashMap;
use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::AuthError;

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
const ED: &[Algorithm] = &[Algorithm::EdDSA];

/// One verification key and the algorithms it may check.
pub struct Key {
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

/// Every configured key: the static ones (secret, PEM) chosen by algorithm, the JWKS ones by `kid`.
#[derive(Default)]
pub struct KeySet {
    statics: Vec<Key>,
    by_kid: HashMap<String, Key>,
}

impl KeySet {
    /// Loads the configured keys; the error names the flag and the file.
    pub fn load(
        secret: Option<&str>,
        public_key: Option<&Path>,
        jwks: Option<&Path>,
    ) -> Result<KeySet, String> {
        let mut set = KeySet::default();
        if let Some(s) = secret {
            set.statics.push(Key {
                key: DecodingKey::from_secret(s.as_bytes()),
                algorithms: HMAC.to_vec(),
            });
        }
        if let Some(path) = public_key {
            let pem = std::fs::read(path)
                .map_err(|e| format!("--jwt-public-key {}: {e}", path.display()))?;
            set.statics.push(
                key_from_pem(&pem)
                    .map_err(|e| format!("--jwt-public-key {}: {e}", path.display()))?,
            );
        }
        if let Some(path) = jwks {
            let text = std::fs::read(path)
                .map_err(|e| format!("--jwt-jwks-file {}: {e}", path.display()))?;
            set.by_kid = keys_from_jwks(&text)
                .map_err(|e| format!("--jwt-jwks-file {}: {e}", path.display()))?;
        }
        Ok(set)
    }

    /// A set of one HMAC secret (tests, benches).
    pub fn from_secret(secret: &[u8]) -> KeySet {
        KeySet {
            statics: vec![Key {
                key: DecodingKey::from_secret(secret),
                algorithms: HMAC.to_vec(),
            }],
            by_kid: HashMap::new(),
        }
    }

    /// A set of one PEM public key (tests, benches).
    pub fn from_pem(pem: &[u8]) -> Result<KeySet, String> {
        Ok(KeySet {
            statics: vec![key_from_pem(pem)?],
            by_kid: HashMap::new(),
        })
    }

    /// A set of JWKS keys only (tests).
    pub fn from_jwks(json: &[u8]) -> Result<KeySet, String> {
        Ok(KeySet {
            statics: Vec::new(),
            by_kid: keys_from_jwks(json)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.statics.is_empty() && self.by_kid.is_empty()
    }

    /// Number of keys in the JWKS part.
    pub fn jwks_len(&self) -> usize {
        self.by_kid.len()
    }

    /// The key for a token with this header. A `kid` is looked up in the JWKS when one is
    /// configured (unknown → refused); otherwise the static key that allows `alg`.
    pub fn select(&self, alg: Algorithm, kid: Option<&str>) -> Result<&Key, AuthError> {
        let key = match kid {
            Some(kid) if !self.by_kid.is_empty() => {
                self.by_kid.get(kid).ok_or(AuthError::UnknownKid)?
            }
            None if self.statics.is_empty() => return Err(AuthError::MissingKid),
            _ => self
                .statics
                .iter()
                .find(|k| k.algorithms.contains(&alg))
                .ok_or(AuthError::AlgorithmNotAllowed(alg))?,
        };
        if key.algorithms.contains(&alg) {
            Ok(key)
        } else {
            Err(AuthError::AlgorithmNotAllowed(alg))
        }
    }
}

/// A PEM public key: RSA (RS*, PS*), EC (ES256, ES384) or Ed25519 (EdDSA).
fn key_from_pem(pem: &[u8]) -> Result<Key, String> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok(Key {
            key,
            algorithms: RSA.to_vec(),
        });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok(Key {
            key,
            algorithms: EC.to_vec(),
        });
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Ok(Key {
            key,
            algorithms: ED.to_vec(),
        });
    }
    Err("not a PEM RSA, EC or Ed25519 public key".into())
}

/// The signing keys of a JWKS document, by `kid`. Encryption keys (`"use":"enc"`) are skipped;
/// a signing key without a `kid` or of an unsupported kind is an error, so a typo is seen at
/// load time rather than as refused tokens.
fn keys_from_jwks(json: &[u8]) -> Result<HashMap<String, Key>, String> {
    let set: JwkSet = serde_json::from_slice(json).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = HashMap::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.iter().enumerate() {
        if matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        ) {
            continue;
        }
        let kid = jwk
            .common
            .key_id
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| format!("key {i} has no \"kid\""))?;
        let algorithms = jwk_algorithms(jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
        if keys.insert(kid.clone(), Key { key, algorithms }).is_some() {
            return Err(format!("kid {kid:?} appears twice"));
        }
    }
    Ok(keys)
}

/// The algorithms a JWK may verify: its `alg` when it has one (and it fits the key), else the
/// family of its key type.
fn jwk_algorithms(jwk: &Jwk) -> Result<Vec<Algorithm>, String> {
    let family: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return Err("unsupported curve (P-256 and P-384 only)".into()),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => ED,
            _ => return Err("unsupported OKP curve (Ed25519 only)".into()),
        },
        AlgorithmParameters::OctetKey(_) => HMAC,
    };
    let Some(ka) = jwk.common.key_algorithm else {
        return Ok(family.to_vec());
    };
    let alg = match ka {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        other => return Err(format!("\"alg\" {other:?} is not a signature algorithm")),
    };
    if family.contains(&alg) {
        Ok(vec![alg])
    } else {
        Err(format!("\"alg\" {alg:?} does not fit the key type"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_allows_hmac_only() {
        let set = KeySet::from_secret(b"s");
        assert!(set.select(Algorithm::HS384, None).is_ok());
        assert_eq!(
            set.select(Algorithm::RS256, None).err(),
            Some(AuthError::AlgorithmNotAllowed(Algorithm::RS256))
        );
        // No JWKS: a kid is not looked up.
        assert!(set.select(Algorithm::HS256, Some("k1")).is_ok());
    }

    #[test]
    fn jwks_by_kid() {
        let jwks = br#"{"keys":[
            {"kty":"oct","kid":"a","k":"c2VjcmV0","alg":"HS256"},
            {"kty":"oct","kid":"enc","use":"enc","k":"eA"}
        ]}"#;
        let set = KeySet::from_jwks(jwks).unwrap();
        assert_eq!(set.jwks_len(), 1, "the encryption key is skipped");
        assert!(set.select(Algorithm::HS256, Some("a")).is_ok());
        assert_eq!(
            set.select(Algorithm::HS512, Some("a")).err(),
            Some(AuthError::AlgorithmNotAllowed(Algorithm::HS512)),
            "the key's own alg binds"
        );
        assert_eq!(
            set.select(Algorithm::HS256, Some("b")).err(),
            Some(AuthError::UnknownKid)
        );
        assert_eq!(
            set.select(Algorithm::HS256, None).err(),
            Some(AuthError::MissingKid)
        );
    }

    #[test]
    fn bad_jwks_are_refused_at_load() {
        for (doc, want) in [
            (&br#"{"keys":[{"kty":"oct","k":"eA"}]}"#[..], "no \"kid\""),
            (
                br#"{"keys":[{"kty":"oct","kid":"a","k":"eA","alg":"RS256"}]}"#,
                "does not fit",
            ),
            (
                br#"{"keys":[{"kty":"oct","kid":"a","k":"eA"},{"kty":"oct","kid":"a","k":"eQ"}]}"#,
                "twice",
            ),
            (b"[]", "not a JWKS"),
        ] {
            let e = KeySet::from_jwks(doc).err().unwrap_or_default();
            assert!(e.contains(want), "{e}");
        }
        assert!(
            KeySet::from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .is_err()
        );
    }
}
