//! Token verification (PROTOCOL.md §9): the cost of one `Auth::verify` call, which every upgrade
//! with `?token=` (and every `refresh`) pays before anything else.
//!
//! Three cases, each with the claims `{"sub":"user-42","exp":now+3600,"channels":["vip_*"]}`:
//! - `hs256_valid`: an HS256 token against a 32-byte secret;
//! - `es256_valid`: an ES256 token against a P-256 public key (PEM) generated at bench start;
//! - `hs256_bad_signature`: the same HS256 claims signed with another secret of the same length,
//!   refused with `BadSignature`: a refusal pays the same header decoding and full HMAC as an
//!   acceptance, and skips only the claims work that follows a good signature (parsing them,
//!   compiling the `channels` patterns), so it is no dearer than an acceptance.
//!
//! Each case is checked (accepted or refused as expected) before it is measured.
//!
//! `cargo bench --bench jwt` (about 20 s: 1 s warm-up, 3 s measurement, 50 samples per case).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use huddle::auth::{Auth, AuthError, KeySet, Settings};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use serde_json::json;

const SECRET: &[u8; 32] = b"huddle-bench-jwt-secret-32-bytes";
const WRONG_SECRET: &[u8; 32] = b"huddle-bench-jwt-WRONG-32-bytes!";

fn bench(c: &mut Criterion) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let claims = json!({
        "sub": "user-42",
        "exp": now.as_secs() + 3600,
        "channels": ["vip_*"],
    });

    let hs = Auth::with_keys(Settings::default(), KeySet::from_secret(SECRET));
    let hs_token = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let hs_bad = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(WRONG_SECRET),
    )
    .unwrap();
    assert_eq!(hs_bad.len(), hs_token.len());

    let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let private_pem = sk.to_pkcs8_pem(LineEnding::LF).unwrap();
    let public_pem = sk.public_key().to_public_key_pem(LineEnding::LF).unwrap();
    let es = Auth::with_keys(
        Settings::default(),
        KeySet::from_pem(public_pem.as_bytes()).unwrap(),
    );
    let es_token = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
    )
    .unwrap();

    let id = hs.verify(&hs_token, now).expect("HS256 token accepted");
    assert_eq!(id.user, "user-42");
    assert!(id.grants.may_subscribe("vip_7"));
    let id = es.verify(&es_token, now).expect("ES256 token accepted");
    assert_eq!(id.user, "user-42");
    assert_eq!(hs.verify(&hs_bad, now), Err(AuthError::BadSignature));

    let mut g = c.benchmark_group("jwt_verify");
    g.bench_function("hs256_valid", |b| {
        b.iter(|| black_box(hs.verify(black_box(&hs_token), now)))
    });
    g.bench_function("es256_valid", |b| {
        b.iter(|| black_box(es.verify(black_box(&es_token), now)))
    });
    g.bench_function("hs256_bad_signature", |b| {
        b.iter(|| black_box(hs.verify(black_box(&hs_bad), now)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = bench
}
criterion_main!(benches);
