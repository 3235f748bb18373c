//! Verification rules with a fake clock and tokens signed by `jsonwebtoken` itself.

use std::time::Duration;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;

const SECRET: &[u8] = b"test-secret";
/// "Now" for every test: 2026-12-01T00:00:00Z.
const NOW: u64 = 1_796_083_200;

fn now() -> Duration {
    Duration::from_secs(NOW)
}

fn hs(alg: Algorithm, claims: &Value) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

fn auth(settings: Settings) -> Auth {
    Auth::with_keys(settings, KeySet::from_secret(SECRET))
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"sub": "u1", "exp": NOW + 60});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

/// An unsigned token with this header and payload (what an attacker crafts by hand).
fn crafted(header: &Value, payload: &Value, sig: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    format!(
        "{}.{}.{sig}",
        B64.encode(header.to_string()),
        B64.encode(payload.to_string())
    )
}

#[test]
fn a_valid_token_gives_identity_and_grants() {
    let a = auth(Settings::default());
    let t = hs(
        Algorithm::HS256,
        &claims(json!({"channels": ["vip_*"], "publish": ["odds_*"]})),
    );
    let id = a.verify(&t, now()).unwrap();
    assert_eq!(id.user, "u1");
    assert_eq!(id.expires_in, 60);
    assert_eq!(id.valid_for, Duration::from_secs(60));
    assert!(id.grants.may_subscribe("vip_7") && !id.grants.may_subscribe("vip"));
    assert!(id.grants.may_publish("odds_7") && !id.grants.may_publish("games"));
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        assert!(a.verify(&hs(alg, &claims(json!({}))), now()).is_ok());
    }
}

#[test]
fn expiry_is_exact_with_no_default_leeway() {
    let a = auth(Settings::default());
    let t = hs(Algorithm::HS256, &claims(json!({})));
    let at = |s: u64| a.verify(&t, Duration::from_secs(s)).map(|i| i.valid_for);
    assert_eq!(at(NOW + 59), Ok(Duration::from_secs(1)));
    assert_eq!(at(NOW + 60), Err(AuthError::Expired), "on or after exp");
    assert_eq!(
        a.verify(&t, Duration::from_millis((NOW + 59) * 1000 + 999))
            .map(|i| i.valid_for),
        Ok(Duration::from_millis(1))
    );
    let lenient = auth(Settings {
        leeway: Duration::from_secs(30),
        ..Settings::default()
    });
    let id = lenient.verify(&t, Duration::from_secs(NOW + 80)).unwrap();
    assert_eq!((id.valid_for.as_secs(), id.expires_in), (10, 0));
    assert_eq!(
        lenient.verify(&t, Duration::from_secs(NOW + 90)),
        Err(AuthError::Expired)
    );
}

#[test]
fn not_before_and_claim_shapes() {
    let a = auth(Settings::default());
    let v = |c: Value| a.verify(&hs(Algorithm::HS256, &c), now());
    assert_eq!(
        v(claims(json!({"nbf": NOW + 5}))),
        Err(AuthError::NotYetValid)
    );
    assert!(v(claims(json!({"nbf": NOW}))).is_ok());
    assert!(matches!(
        v(json!({"exp": NOW + 60})),
        Err(AuthError::MissingClaim(c)) if c == "sub"
    ));
    assert!(matches!(
        v(json!({"sub": "u"})),
        Err(AuthError::MissingClaim(c)) if c == "exp"
    ));
    for bad in [
        json!({"channels": "odds"}),
        json!({"channels": [1]}),
        json!({"publish": [""]}),
        json!({"sub": ""}),
        json!({"sub": 5}),
        json!({"exp": "tomorrow"}),
    ] {
        let r = v(claims(bad.clone()));
        assert!(matches!(r, Err(AuthError::BadClaim(_))), "{bad}: {r:?}");
    }
}

#[test]
fn hostile_tokens_are_refused_for_the_right_reason() {
    let a = auth(Settings::default());
    let good = hs(Algorithm::HS256, &claims(json!({})));
    let payload = claims(json!({}));
    let none = crafted(&json!({"alg": "none", "typ": "JWT"}), &payload, "");
    assert_eq!(a.verify(&none, now()), Err(AuthError::AlgNone));
    let none_upper = crafted(&json!({"alg": "NONE"}), &payload, "x");
    assert_eq!(a.verify(&none_upper, now()), Err(AuthError::AlgNone));
    // Signature of another secret.
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &payload,
        &EncodingKey::from_secret(b"other"),
    )
    .unwrap();
    assert_eq!(a.verify(&forged, now()), Err(AuthError::BadSignature));
    // Payload swapped under a valid signature.
    let mut parts: Vec<&str> = good.split('.').collect();
    let tampered_payload = crafted(&json!({}), &claims(json!({"sub": "admin"})), "");
    parts[1] = tampered_payload.split('.').nth(1).unwrap();
    assert_eq!(
        a.verify(&parts.join("."), now()),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        a.verify(
            &hs(Algorithm::HS256, &claims(json!({}))).replacen('.', "", 1),
            now()
        )
        .map(|_| ()),
        Err(AuthError::Malformed(
            "expected three dot-separated parts".into()
        ))
    );
    for junk in ["", "a.b.c", "....", "e30.e30.", "!!!.e30.x"] {
        assert!(
            matches!(a.verify(junk, now()), Err(AuthError::Malformed(_))),
            "{junk:?}"
        );
    }
    let long = "a".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(
        a.verify(&long, now()),
        Err(AuthError::TooLarge(MAX_TOKEN_LEN))
    );
    // RS256 with only a secret configured.
    let rs = crafted(&json!({"alg": "RS256"}), &payload, "AAAA");
    assert_eq!(
        a.verify(&rs, now()),
        Err(AuthError::AlgorithmNotAllowed(Algorithm::RS256))
    );
}

#[test]
fn audience_and_issuer() {
    let a = auth(Settings {
        audience: vec!["huddle".into()],
        issuer: vec!["https://auth.example".into()],
        ..Settings::default()
    });
    let v = |c: Value| a.verify(&hs(Algorithm::HS256, &c), now()).map(|_| ());
    let ok = json!({"aud": "huddle", "iss": "https://auth.example"});
    assert_eq!(v(claims(ok)), Ok(()));
    assert_eq!(
        v(claims(
            json!({"aud": ["other", "huddle"], "iss": "https://auth.example"})
        )),
        Ok(())
    );
    assert_eq!(
        v(claims(
            json!({"aud": "other", "iss": "https://auth.example"})
        )),
        Err(AuthError::Audience)
    );
    assert_eq!(
        v(claims(
            json!({"aud": "huddle", "iss": "https://evil.example"})
        )),
        Err(AuthError::Issuer)
    );
    assert!(matches!(
        v(claims(json!({"iss": "https://auth.example"}))),
        Err(AuthError::MissingClaim(c)) if c == "aud"
    ));
    // Without --jwt-audience, an aud claim is not checked.
    let plain = auth(Settings::default());
    assert!(plain
        .verify(&hs(Algorithm::HS256, &claims(json!({"aud": "x"}))), now())
        .is_ok());
}

#[test]
fn es256_and_eddsa_keys_from_pem() {
    use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
    use p256::pkcs8::LineEnding;
    let mut rng = rand::rngs::OsRng;
    let ec = p256::SecretKey::random(&mut rng);
    let ec_private = ec.to_pkcs8_pem(LineEnding::LF).unwrap();
    let ec_public = ec.public_key().to_public_key_pem(LineEnding::LF).unwrap();
    let a = Auth::with_keys(
        Settings::default(),
        KeySet::from_pem(ec_public.as_bytes()).unwrap(),
    );
    let key = EncodingKey::from_ec_pem(ec_private.as_bytes()).unwrap();
    let t = encode(&Header::new(Algorithm::ES256), &claims(json!({})), &key).unwrap();
    assert_eq!(a.verify(&t, now()).map(|i| i.user), Ok("u1".into()));
    // The classic confusion: HS256 "signed" with the public key's PEM as the secret.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(ec_public.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        a.verify(&confused, now()),
        Err(AuthError::AlgorithmNotAllowed(Algorithm::HS256))
    );

    let ed = ed25519_dalek::SigningKey::generate(&mut rng);
    let ed_private = ed.to_pkcs8_pem(LineEnding::LF).unwrap();
    let ed_public = ed
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let a = Auth::with_keys(
        Settings::default(),
        KeySet::from_pem(ed_public.as_bytes()).unwrap(),
    );
    let key = EncodingKey::from_ed_pem(ed_private.as_bytes()).unwrap();
    let t = encode(&Header::new(Algorithm::EdDSA), &claims(json!({})), &key).unwrap();
    assert!(a.verify(&t, now()).is_ok());
}

#[test]
fn jwks_keys_by_kid() {
    let jwks = br#"{"keys":[{"kty":"oct","kid":"k1","k":"dGVzdC1zZWNyZXQ","alg":"HS256"}]}"#;
    let a = Auth::with_keys(Settings::default(), KeySet::from_jwks(jwks).unwrap());
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let t = encode(&h, &claims(json!({})), &EncodingKey::from_secret(SECRET)).unwrap();
    assert!(a.verify(&t, now()).is_ok());
    h.kid = Some("k2".into());
    let t = encode(&h, &claims(json!({})), &EncodingKey::from_secret(SECRET)).unwrap();
    assert_eq!(a.verify(&t, now()), Err(AuthError::UnknownKid));
    let t = hs(Algorithm::HS256, &claims(json!({})));
    assert_eq!(a.verify(&t, now()), Err(AuthError::MissingKid));
}

#[test]
fn bearer_scheme() {
    assert_eq!(bearer("Bearer abc"), Some("abc"));
    assert_eq!(bearer("  bEaReR\tabc  "), Some("abc"));
    assert_eq!(bearer("Basic abc"), None);
    assert_eq!(bearer("Bearer "), None);
    assert_eq!(bearer("Bearerabc"), None);
}

#[test]
fn errors_never_carry_the_token() {
    let a = auth(Settings::default());
    let t = hs(Algorithm::HS256, &claims(json!({"exp": NOW - 1})));
    let e = a.verify(&t, now()).unwrap_err();
    assert!(!e.to_string().contains(&t[..20]));
}

#[test]
fn minted_development_tokens_verify() {
    let channels = vec!["vip_*".to_string()];
    let t = mint_hs256(
        SECRET,
        &DevClaims {
            sub: "dev",
            exp: NOW + 10,
            channels: &channels,
            publish: &[],
            aud: None,
            iss: None,
        },
    )
    .unwrap();
    let id = auth(Settings::default()).verify(&t, now()).unwrap();
    assert_eq!((id.user.as_str(), id.expires_in), ("dev", 10));
    assert!(id.grants.may_subscribe("vip_1") && id.grants.publish.is_empty());
}

#[test]
fn header_rules_of_rfc_7515() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    let a = auth(Settings {
        issuer: vec!["https://auth.example".into()],
        ..Settings::default()
    });
    let sign = |header: &Value, payload: &Value| {
        let msg = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(payload.to_string())
        );
        let sig = jsonwebtoken::crypto::sign(
            msg.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{msg}.{sig}")
    };
    let good = claims(json!({"iss": "https://auth.example"}));
    // Unknown parameters are ignored, whatever their type (§4).
    let t = sign(&json!({"alg":"HS256","x-custom":1,"y":{"z":null}}), &good);
    assert!(a.verify(&t, now()).is_ok());
    // A critical extension huddle does not implement makes the token invalid (§4.1.11).
    let t = sign(&json!({"alg":"HS256","crit":["x"],"x":"v"}), &good);
    assert!(matches!(a.verify(&t, now()), Err(AuthError::Malformed(m)) if m.contains("crit")));
    // Registered parameters of the wrong type are the header's fault, not the claims'.
    let t = sign(&json!({"alg":"HS256","kid":1}), &good);
    assert!(matches!(a.verify(&t, now()), Err(AuthError::Malformed(m)) if m.contains("kid")));
    let t = sign(&json!(["HS256"]), &good);
    assert!(matches!(a.verify(&t, now()), Err(AuthError::Malformed(_))));
    // `iss` is one string (RFC 7519 §4.1.1), never a list that happens to contain ours.
    let t = sign(
        &json!({"alg":"HS256"}),
        &claims(json!({"iss": ["https://evil.example", "https://auth.example"]})),
    );
    assert!(matches!(a.verify(&t, now()), Err(AuthError::BadClaim(m)) if m.contains("iss")));
}
