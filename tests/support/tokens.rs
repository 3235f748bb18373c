//! Real JWTs for the tests: signed by the `jsonwebtoken` crate, with RSA and P-256 keys generated
//! at run time.
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The HMAC secret the auth tests start the server with.
pub const SECRET: &str = "test-secret-0123456789abcdef";

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Claims for `sub`, valid for an hour, with `extra` merged in.
pub fn claims(sub: &str, extra: Value) -> Value {
    let mut c = json!({"sub": sub, "exp": unix_now() + 3600});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

pub fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    encode(&h, claims, key).expect("sign")
}

/// HS256 with [`SECRET`].
pub fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

/// A key pair as PEM: the private key signs (`jsonwebtoken`), the public one goes to the server.
pub struct KeyPair {
    pub private_pem: String,
    pub public_pem: String,
}

impl KeyPair {
    pub fn rsa() -> KeyPair {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("rsa key");
        KeyPair {
            private_pem: key.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string(),
            public_pem: key
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("pem"),
        }
    }

    pub fn p256() -> KeyPair {
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
        KeyPair {
            private_pem: key.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string(),
            public_pem: key
                .public_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("pem"),
        }
    }

    /// A token signed with the private key.
    pub fn sign(&self, alg: Algorithm, claims: &Value) -> String {
        sign(alg, None, &self.encoding_key(alg), claims)
    }

    /// The classic algorithm confusion: HS256 "signed" with the public key's PEM as the secret.
    pub fn confused(&self, claims: &Value) -> String {
        sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(self.public_pem.as_bytes()),
            claims,
        )
    }

    pub fn encoding_key(&self, alg: Algorithm) -> EncodingKey {
        match alg {
            Algorithm::ES256 | Algorithm::ES384 => {
                EncodingKey::from_ec_pem(self.private_pem.as_bytes()).expect("ec key")
            }
            _ => EncodingKey::from_rsa_pem(self.private_pem.as_bytes()).expect("rsa key"),
        }
    }
}

/// An unsigned token with this header and payload, as an attacker crafts one by hand.
pub fn crafted(header: &Value, payload: &Value, signature: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    format!(
        "{}.{}.{signature}",
        B64.encode(header.to_string()),
        B64.encode(payload.to_string())
    )
}

/// A JWKS document of HMAC keys, `(kid, secret)`.
pub fn oct_jwks(keys: &[(&str, &str)]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, secret)| json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": B64.encode(secret)}))
        .collect();
    json!({ "keys": keys }).to_string()
}
