//! Tokens and rights (PROTOCOL.md §9) against the real server over real sockets, with tokens
//! signed by the `jsonwebtoken` crate (HS256, and RS256 / ES256 keys generated per run).

mod support;

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use support::tokens::{self, claims, crafted, hs256, KeyPair, SECRET};
use support::{raw_http, Client, HttpResponse, Server, API_KEY, WAIT};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn token_server(extra: &[&str]) -> Server {
    let mut args = vec!["--jwt-secret", SECRET];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// An upgrade request that asks the server to close after answering, for refusals.
async fn upgrade(server: &Server, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        server.addr
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw_http(server.addr, req.as_bytes()).await
}

/// Asserts a 401 `unauthorized` whose message names `why`.
async fn assert_refused(server: &Server, path: &str, headers: &[(&str, &str)], why: &str) {
    let r = upgrade(server, path, headers).await;
    assert_eq!(r.status, 401, "{path}: {}", r.text());
    let body = r.json();
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(why), "{path}: {message:?} lacks {why:?}");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{:?}",
        r.headers
    );
}

/// Asserts that an upgrade with `?token=` is refused with 401 naming `why`.
async fn refused_token(server: &Server, token: &str, why: &str) {
    assert_refused(server, &format!("/ws?token={token}"), &[], why).await;
}

async fn connect_token(server: &Server, path: &str, token: &str) -> (Client, Value) {
    let sep = if path.contains('?') { '&' } else { '?' };
    server.connect(&format!("{path}{sep}token={token}")).await
}

async fn connect_bearer(server: &Server, path: &str, token: &str) -> (Client, Value) {
    let mut req = server.ws_url(path).into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("bEaReR {token}").parse().expect("header"),
    );
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("connect timed out")
        .expect("connect");
    let mut c = Client { ws };
    let ack = c.recv_json().await;
    assert_eq!(ack["event_type"], "connection_ack", "{ack}");
    (c, ack)
}

/// Sends a subscribe and returns the reply (a `user_subscription` or an `error`).
async fn try_subscribe(c: &mut Client, channel: &str) -> Value {
    c.send_json(
        &json!({"event_type":"user_subscription","message_id":format!("s-{channel}"),
        "data":{"channel":channel}}),
    )
    .await;
    let r = c.next_json().await;
    assert_eq!(r["reply_to"], format!("s-{channel}"), "{r}");
    r
}

fn assert_forbidden(r: &Value) {
    assert_eq!(r["event_type"], "error", "{r}");
    assert_eq!(r["data"]["code"], "forbidden", "{r}");
}

/// A heartbeat round trip: the connection is open and served.
async fn alive(c: &mut Client) {
    c.send_json(&json!({"event_type":"heartbeat","message_id":"alive"}))
        .await;
    loop {
        let m = c.next_json().await;
        if m["reply_to"] == "alive" {
            assert_eq!(m["event_type"], "heartbeat");
            return;
        }
    }
}

/// The shard a connection lives on (`connection_id` is `{shard:x}-{seq:x}`).
fn shard_of(ack: &Value) -> String {
    let id = ack["data"]["connection_id"].as_str().unwrap_or("");
    id.split('-').next().unwrap_or("").to_owned()
}

#[tokio::test]
async fn every_bad_token_is_refused_with_401_before_the_upgrade() {
    let server = token_server(&["--jwt-audience", "huddle", "--jwt-issuer", "https://issuer"]);
    let good = json!({"aud": "huddle", "iss": "https://issuer"});
    let now = tokens::unix_now();
    let other = EncodingKey::from_secret(b"some-other-secret-0123456789");
    let cases: Vec<(String, &str)> = vec![
        (
            crafted(
                &json!({"alg":"none","typ":"JWT"}),
                &claims("u1", good.clone()),
                "",
            ),
            "none",
        ),
        (
            tokens::sign(Algorithm::HS256, None, &other, &claims("u1", good.clone())),
            "bad signature",
        ),
        (
            hs256(&claims(
                "u1",
                json!({"aud":"huddle","iss":"https://issuer","exp": now - 1}),
            )),
            "expired",
        ),
        (
            hs256(&claims(
                "u1",
                json!({"aud":"huddle","iss":"https://issuer","nbf": now + 600}),
            )),
            "not valid yet",
        ),
        (
            hs256(&claims("u1", json!({"aud":"other","iss":"https://issuer"}))),
            "audience",
        ),
        (
            hs256(&claims("u1", json!({"aud":"huddle","iss":"https://evil"}))),
            "issuer",
        ),
        (
            crafted(&json!({"alg":"RS256"}), &claims("u1", good.clone()), "c2ln"),
            "not allowed",
        ),
        ("not.a.jwt".into(), "malformed"),
        ("garbage".into(), "malformed"),
        (
            format!("{}.{}.x", "a".repeat(4500), "b".repeat(4500)),
            "longer than 8192",
        ),
    ];
    for (token, why) in &cases {
        refused_token(&server, token, why).await;
    }
    // The same through the header, scheme in any case.
    let (token, why) = &cases[1];
    let bearer = format!("BEARER {token}");
    assert_refused(&server, "/ws", &[("Authorization", &bearer)], why).await;
    // A wrong API key is refused too, not quietly ignored.
    let r = upgrade(&server, "/ws?api_key=not-the-key-4711", &[]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    // A good token still gets in.
    let (_c, ack) = connect_token(&server, "/ws", &hs256(&claims("u1", good))).await;
    assert_eq!(ack["user_id"], "u1");

    // No log line carries a token, its signature or the API key.
    let logs = server.logs().join("\n");
    assert!(logs.contains("upgrade refused"), "{logs}");
    for (token, _) in &cases {
        if let Some(sig) = token.rsplit('.').next().filter(|s| s.len() > 8) {
            assert!(!logs.contains(sig), "a signature was logged");
        }
        let head = &token[..token.len().min(24)];
        assert!(!logs.contains(head), "a token was logged: {head}");
    }
    assert!(
        !logs.contains("not-the-key-4711") && !logs.contains(API_KEY),
        "{logs}"
    );
    let metrics = server.http("GET", "/metrics", &[], b"").await.text();
    assert!(
        metrics
            .lines()
            .filter(|l| l.starts_with("huddle_auth_refused_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
            >= cases.len() as u64 + 2,
        "{metrics}"
    );
}

/// A server verifying with `keys`' public key (`--jwt-public-key`), and the file's folder.
fn pem_server(tag: &str, keys: &KeyPair) -> (Server, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("huddle-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("public.pem");
    std::fs::write(&pem, &keys.public_pem).unwrap();
    (
        Server::start(&["--jwt-public-key", pem.to_str().unwrap()]),
        dir,
    )
}

#[tokio::test]
async fn rs256_key_refuses_the_hs256_algorithm_confusion() {
    let keys = KeyPair::rsa();
    let (server, dir) = pem_server("rsa", &keys);
    let c = claims("rsa-user", json!({}));
    let (_conn, ack) = connect_token(&server, "/ws", &keys.sign(Algorithm::RS256, &c)).await;
    assert_eq!(ack["user_id"], "rsa-user");
    connect_token(&server, "/ws", &keys.sign(Algorithm::PS256, &c)).await;
    let confused = keys.confused(&c);
    refused_token(&server, &confused, "HS256").await;
    // Signed by another RSA key.
    let forged = KeyPair::rsa().sign(Algorithm::RS256, &c);
    refused_token(&server, &forged, "bad signature").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn es256_tokens_through_the_header() {
    let keys = KeyPair::p256();
    let (server, dir) = pem_server("ec", &keys);
    let c = claims("ec-user", json!({}));
    let (_conn, ack) = connect_bearer(&server, "/ws", &keys.sign(Algorithm::ES256, &c)).await;
    assert_eq!(ack["user_id"], "ec-user");
    let confused = keys.confused(&c);
    refused_token(&server, &confused, "not allowed").await;
    let forged = KeyPair::p256().sign(Algorithm::ES256, &c);
    refused_token(&server, &forged, "bad signature").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn require_auth_refuses_anonymous_upgrades() {
    let server = token_server(&["--require-auth"]);
    assert_refused(&server, "/ws", &[], "token required").await;
    assert_refused(&server, "/ws/odds?user_id=u1", &[], "token required").await;
    // The operator's publishers come with the API key.
    server.connect(&format!("/ws?api_key={API_KEY}")).await;
    let (_c, ack) = connect_token(&server, "/ws", &hs256(&claims("u1", json!({})))).await;
    assert_eq!(ack["user_id"], "u1");
}

#[tokio::test]
async fn identity_comes_from_sub_only() {
    let server = token_server(&[]);
    let t = hs256(&claims("alice", json!({})));
    let (mut alice, ack) = connect_token(&server, "/ws?user_id=mallory", &t).await;
    assert_eq!(ack["user_id"], "alice", "{ack}");
    let expires_in = ack["data"]["expires_in"].as_u64().expect("expires_in");
    assert!((3590..=3600).contains(&expires_in), "{ack}");
    // Anonymous with a user_id: ignored, the connection has no user.
    let (mut anon, ack) = server.connect("/ws?user_id=alice").await;
    assert!(ack.get("user_id").is_none(), "{ack}");
    assert!(ack["data"].get("expires_in").is_none(), "{ack}");
    let r = server
        .post(
            "/api/send",
            &json!({"user_id":"alice","event_type":"notification",
                "data":{"message":"hi","level":"info"}}),
        )
        .await;
    assert_eq!(r.json()["recipients"], 1, "{}", r.text());
    let m = alice.next_json().await;
    assert_eq!(m["data"]["message"], "hi");
    // The anonymous one got nothing: its next message is the reply to this heartbeat.
    alive(&mut anon).await;
}

#[tokio::test]
async fn channel_rights_follow_public_channels_and_claims() {
    let server = token_server(&[]);
    let (mut anon, _) = server.connect("/ws").await;
    for ch in ["odds", "game_7", "predictions_9", "lines", "eliminations"] {
        assert_eq!(
            try_subscribe(&mut anon, ch).await["data"]["status"],
            "subscribed"
        );
    }
    for ch in ["vip_1", "bankroll", "bets", "admin"] {
        assert_forbidden(&try_subscribe(&mut anon, ch).await);
    }
    let t = hs256(&claims("bob", json!({"channels": ["vip_*", "box:*:live"]})));
    let (mut bob, _) = connect_token(&server, "/ws", &t).await;
    for ch in ["vip_1", "box:7:live", "odds", "bankroll"] {
        assert_eq!(
            try_subscribe(&mut bob, ch).await["data"]["status"],
            "subscribed",
            "{ch}"
        );
    }
    for ch in ["vip", "box:7:replay", "admin"] {
        assert_forbidden(&try_subscribe(&mut bob, ch).await);
    }
    // In one request: each channel answered in order, the forbidden one with an error.
    bob.send_json(
        &json!({"event_type":"user_subscription","message_id":"many",
        "data":{"channels":["vip_2","admin","games"]}}),
    )
    .await;
    let replies: Vec<Value> = vec![
        bob.next_json().await,
        bob.next_json().await,
        bob.next_json().await,
    ];
    assert_eq!(replies[0]["data"]["channel"], "vip_2");
    assert_forbidden(&replies[1]);
    assert_eq!(replies[2]["data"]["channel"], "games");
    // An API-key connection may subscribe anywhere.
    let (mut op, _) = server.connect(&format!("/ws?api_key={API_KEY}")).await;
    assert_eq!(
        try_subscribe(&mut op, "admin").await["data"]["status"],
        "subscribed"
    );
}

#[tokio::test]
async fn endpoints_outside_the_public_channels_answer_403() {
    let server = token_server(&["--public-channels", "games,odds,odds_*"]);
    let r = upgrade(&server, "/ws/predictions", &[]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "forbidden");
    let r = upgrade(&server, "/ws/game/7", &[]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    server.connect("/ws/odds").await;
    let t = hs256(&claims("c", json!({"channels": ["predictions"]})));
    let (_c, ack) = connect_token(&server, "/ws/predictions", &t).await;
    assert_eq!(ack["data"]["subscriptions"], json!(["predictions"]));
}

#[tokio::test]
async fn tokens_off_every_channel_is_open_and_the_server_warns() {
    let server = Server::start(&[]);
    server.wait_log("tokens are off").await;
    let (mut c, ack) = server.connect("/ws?user_id=dev").await;
    assert_eq!(ack["user_id"], "dev");
    for ch in ["admin", "vip_1", "bankroll"] {
        assert_eq!(
            try_subscribe(&mut c, ch).await["data"]["status"],
            "subscribed"
        );
    }
    c.send_json(&json!({"event_type":"refresh","message_id":"r","data":{"token":"x.y.z"}}))
        .await;
    assert_forbidden(&c.next_json().await);
}

#[tokio::test]
async fn publish_needs_the_api_key_or_a_publish_claim() {
    let server = token_server(&[]);
    let (mut sub, _) = server.connect("/ws").await;
    sub.subscribe("odds_7").await;
    let t = hs256(&claims("feed", json!({"publish": ["odds_*"]})));
    let (mut feed, _) = connect_token(&server, "/ws", &t).await;
    let publish = |id: &str, channel: &str| {
        json!({"event_type":"publish","message_id":id,
            "data":{"channel":channel,"event_type":"line_move","data":{"v":1}}})
    };
    feed.send_json(&publish("p1", "odds_7")).await;
    let r = feed.next_json().await;
    assert_eq!(r["event_type"], "publish", "{r}");
    assert_eq!(r["data"]["results"][0]["offset"], 1);
    let m = sub.next_json().await;
    assert_eq!(
        (m["channel"].as_str(), m["offset"].as_u64()),
        (Some("odds_7"), Some(1))
    );
    // Not in the claim: refused whole, nothing delivered.
    feed.send_json(&json!({"event_type":"publish","message_id":"p2",
        "data":{"channels":["odds_7","games"],"event_type":"line_move","data":{}}}))
        .await;
    let r = feed.next_json().await;
    assert_forbidden(&r);
    assert_eq!(r["reply_to"], "p2");
    let (mut anon, _) = server.connect("/ws").await;
    anon.send_json(&publish("p3", "odds_7")).await;
    assert_forbidden(&anon.next_json().await);
    // The API key publishes anywhere; the subscriber's next message is offset 2, so neither
    // refused publish reached it.
    let (mut op, _) = server.connect(&format!("/ws?api_key={API_KEY}")).await;
    op.send_json(&publish("p4", "odds_7")).await;
    assert_eq!(op.next_json().await["event_type"], "publish");
    let m = sub.next_json().await;
    assert_eq!(m["offset"], 2, "{m}");
}

#[tokio::test]
async fn per_user_channels_reach_only_their_user_across_shards() {
    let server = token_server(&[]);
    let token = |u: &str| hs256(&claims(u, json!({"channels": ["*"]})));
    // One connection of each user on each shard (the kernel spreads connections; retry until).
    let mut found: Vec<(String, String, Client)> = Vec::new();
    for _ in 0..200 {
        for user in ["u1", "u2"] {
            let (c, ack) = connect_token(&server, "/ws", &token(user)).await;
            let shard = shard_of(&ack);
            if !found.iter().any(|(u, s, _)| u == user && *s == shard) {
                found.push((user.to_owned(), shard, c));
            }
        }
        if found.len() == 4 {
            break;
        }
    }
    assert_eq!(found.len(), 4, "could not place both users on both shards");
    for (_, _, c) in found.iter_mut() {
        let r = try_subscribe(c, "bankroll").await;
        assert_eq!(r["data"]["channel"], "bankroll", "{r}");
        assert_eq!(r["data"]["offset"], 0, "{r}");
    }
    let send = |user: &str, amount: u64| {
        json!({"user_id":user,"channel":"bankroll","event_type":"bankroll_update",
            "data":{"balance":amount}})
    };
    let r = server.post("/api/send", &send("u1", 100)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["recipients"], 2, "{body}");
    assert_eq!(body["results"][0]["channel"], "bankroll", "{body}");
    assert_eq!(body["results"][0]["offset"], 1, "{body}");
    let r = server.post("/api/send", &send("u2", 7)).await;
    assert_eq!(r.json()["recipients"], 2);
    for (user, _, c) in found.iter_mut() {
        let m = c.next_json().await;
        assert_eq!(m["channel"], "bankroll", "{m}");
        assert_eq!(m["offset"], 1, "each user's stream starts at 1: {m}");
        let want = if user == "u1" { 100 } else { 7 };
        assert_eq!(m["data"]["balance"], want, "{user} got {m}");
    }
    // `bankroll` is not publishable as a shared channel, and a non-user channel is not sendable.
    let r = server
        .post(
            "/api/publish",
            &json!({"channel":"bankroll","event_type":"x","data":{}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let r = server
        .post(
            "/api/send",
            &json!({"user_id":"u1","channel":"odds","event_type":"x","data":{}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    // Unsubscribing from one's own stream works like any channel.
    let (_, _, c) = &mut found[0];
    c.send_json(&json!({"event_type":"user_unsubscription","message_id":"u",
        "data":{"channel":"bankroll"}}))
        .await;
    let r = c.next_json().await;
    assert_eq!(
        (r["data"]["status"].as_str(), r["data"]["offset"].as_u64()),
        (Some("unsubscribed"), Some(1)),
        "{r}"
    );
}

#[tokio::test]
async fn an_expired_token_closes_with_4401_at_its_second() {
    let server = token_server(&["--heartbeat-interval", "1s", "--heartbeat-timeout", "5s"]);
    let exp = tokens::unix_now() + 2;
    let (mut c, ack) =
        connect_token(&server, "/ws", &hs256(&json!({"sub":"short","exp":exp}))).await;
    assert!(ack["data"]["expires_in"].as_u64().unwrap() <= 2, "{ack}");
    let (code, reason) = c.recv_close().await;
    let closed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!((code, reason.as_str()), (4401, "token expired"));
    assert!(
        closed_at >= exp as f64 - 0.01 && closed_at < exp as f64 + 1.0,
        "closed at {closed_at}, exp {exp}"
    );
    let metrics = server.http("GET", "/metrics", &[], b"").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("huddle_token_expiries_total") && l.ends_with(" 1")),
        "{metrics}"
    );
}

#[tokio::test]
async fn refresh_before_expiry_keeps_the_connection() {
    let server = token_server(&["--heartbeat-interval", "1s", "--heartbeat-timeout", "5s"]);
    let exp = tokens::unix_now() + 2;
    let (mut c, _) = connect_token(&server, "/ws", &hs256(&json!({"sub":"r","exp":exp}))).await;
    // The fresh token also widens the rights.
    let fresh = hs256(&claims("r", json!({"channels": ["vip_*"]})));
    c.send_json(&json!({"event_type":"refresh","message_id":"f","data":{"token":fresh}}))
        .await;
    let r = c.next_json().await;
    assert_eq!(
        (r["event_type"].as_str(), r["reply_to"].as_str()),
        (Some("refresh"), Some("f"))
    );
    assert!(r["data"]["expires_in"].as_u64().unwrap() > 3500, "{r}");
    // Past the old expiry, the connection is still served.
    let left = exp as f64 + 1.2
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(left.max(0.0))).await;
    alive(&mut c).await;
    assert_eq!(
        try_subscribe(&mut c, "vip_3").await["data"]["status"],
        "subscribed"
    );
}

#[tokio::test]
async fn refresh_for_another_sub_is_forbidden_and_changes_nothing() {
    let server = token_server(&["--heartbeat-interval", "1s", "--heartbeat-timeout", "5s"]);
    let exp = tokens::unix_now() + 2;
    let (mut c, _) = connect_token(&server, "/ws", &hs256(&json!({"sub":"me","exp":exp}))).await;
    let started = Instant::now();
    let theirs = hs256(&claims("someone-else", json!({})));
    c.send_json(&json!({"event_type":"refresh","message_id":"x","data":{"token":theirs}}))
        .await;
    let r = c.next_json().await;
    assert_forbidden(&r);
    assert!(
        r["data"]["message"]
            .as_str()
            .unwrap()
            .contains("another sub"),
        "{r}"
    );
    let expired = hs256(&json!({"sub":"me","exp": tokens::unix_now() - 5}));
    c.send_json(&json!({"event_type":"refresh","message_id":"y","data":{"token":expired}}))
        .await;
    assert_forbidden(&c.next_json().await);
    let (code, _) = c.recv_close().await;
    assert_eq!(code, 4401);
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn jwks_keys_rotate_on_sighup_with_connections_kept() {
    let dir = std::env::temp_dir().join(format!("huddle-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    let (k1, k2) = ("secret-one-0123456789abcdef", "secret-two-0123456789abcdef");
    std::fs::write(&file, tokens::oct_jwks(&[("k1", k1)])).unwrap();
    let server = Server::start(&["--jwt-jwks-file", file.to_str().unwrap()]);
    let with = |kid: &str, secret: &str| {
        tokens::sign(
            Algorithm::HS256,
            Some(kid),
            &EncodingKey::from_secret(secret.as_bytes()),
            &claims("rot", json!({})),
        )
    };
    let (mut old, _) = connect_token(&server, "/ws", &with("k1", k1)).await;
    refused_token(&server, &with("k2", k2), "unknown kid").await;
    refused_token(&server, &hs256(&claims("rot", json!({}))), "no kid").await;

    std::fs::write(&file, tokens::oct_jwks(&[("k2", k2)])).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    server.wait_log("token keys reloaded").await;
    connect_token(&server, "/ws", &with("k2", k2)).await;
    refused_token(&server, &with("k1", k1), "unknown kid").await;
    alive(&mut old).await;

    // A broken file keeps the keys in use.
    std::fs::write(&file, "{not json").unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    server.wait_log("keeping the old ones").await;
    connect_token(&server, "/ws", &with("k2", k2)).await;
    alive(&mut old).await;
    let _ = std::fs::remove_dir_all(&dir);
}
