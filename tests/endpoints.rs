//! Every endpoint of PROTOCOL.md §2 and the stats/metrics of §8, against the real server.

mod support;

use serde_json::json;
use support::{Server, API_KEY};

#[tokio::test]
async fn each_websocket_endpoint_acks_with_its_auto_subscriptions() {
    let server = Server::start(&[]);
    let cases: [(&str, &[&str]); 5] = [
        ("/ws", &[]),
        ("/ws/games", &["games"]),
        ("/ws/odds", &["odds"]),
        ("/ws/predictions", &["predictions"]),
        (
            "/ws/game/2026_W12_KC_BUF",
            &[
                "game_2026_W12_KC_BUF",
                "odds_2026_W12_KC_BUF",
                "predictions_2026_W12_KC_BUF",
            ],
        ),
    ];
    for (path, channels) in cases {
        let (_c, ack) = server.connect(path).await;
        let data = &ack["data"];
        assert_eq!(data["subscriptions"], json!(channels), "{path}: {ack}");
        assert_eq!(data["heartbeat_interval"], 30);
        assert_eq!(data["heartbeat_timeout"], 60);
        assert!(data["connection_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
        assert!(data["server_time"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z')));
        let events = data["supported_events"].as_array().unwrap();
        for e in [
            "connection_ack",
            "heartbeat",
            "game_update",
            "odds_update",
            "prediction_update",
            "notification",
            "user_subscription",
        ] {
            assert!(events.contains(&json!(e)), "{e} missing from {events:?}");
        }
        assert!(
            ack.get("channel").is_none(),
            "fields that do not apply are omitted"
        );
    }
}

#[tokio::test]
async fn connection_ids_are_unique() {
    let server = Server::start(&[]);
    let mut ids = std::collections::HashSet::new();
    let mut keep = Vec::new();
    for _ in 0..20 {
        let (c, ack) = server.connect("/ws").await;
        assert!(ids.insert(ack["data"]["connection_id"].as_str().unwrap().to_owned()));
        keep.push(c);
    }
}

#[tokio::test]
async fn user_id_from_query_is_echoed_in_ack() {
    let server = Server::start(&[]);
    let (_c, ack) = server.connect("/ws/games?user_id=u%2042").await;
    assert_eq!(ack["user_id"], "u 42");
}

#[tokio::test]
async fn plain_get_on_websocket_path_is_426() {
    let server = Server::start(&[]);
    let r = server.http("GET", "/ws/games", &[], b"").await;
    assert_eq!(r.status, 426);
    assert_eq!(r.header("upgrade"), Some("websocket"));
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let server = Server::start(&[]);
    assert_eq!(server.http("GET", "/nope", &[], b"").await.status, 404);
    assert_eq!(server.http("GET", "/ws/game/", &[], b"").await.status, 404);
    assert_eq!(server.get("/api/nope").await.status, 404);
    // The echo endpoint exists only with --echo-endpoint (a later issue).
    assert_eq!(server.http("GET", "/ws/echo", &[], b"").await.status, 404);
}

#[tokio::test]
async fn healthz_needs_no_key() {
    let server = Server::start(&[]);
    let r = server.http("GET", "/healthz", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
}

#[tokio::test]
async fn api_needs_the_key_in_either_header() {
    let server = Server::start(&[]);
    assert_eq!(server.http("GET", "/api/stats", &[], b"").await.status, 401);
    assert_eq!(
        server
            .http("GET", "/api/stats", &[("X-API-Key", "wrong")], b"")
            .await
            .status,
        401
    );
    assert_eq!(
        server
            .http(
                "GET",
                "/api/stats",
                &[("Authorization", "Bearer wrong")],
                b""
            )
            .await
            .status,
        401
    );
    let unauth = server.http("POST", "/api/publish", &[], b"{}").await;
    assert_eq!(unauth.status, 401);
    assert_eq!(unauth.json()["error"]["code"], "unauthorized");
    assert_eq!(
        server
            .http("GET", "/api/stats", &[("X-API-Key", API_KEY)], b"")
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .http(
                "GET",
                "/api/stats",
                &[("Authorization", &format!("Bearer {API_KEY}"))],
                b""
            )
            .await
            .status,
        200
    );
    assert_eq!(server.get("/api/publish").await.status, 405);
}

#[tokio::test]
async fn stats_and_channels_count_connections_users_and_channels() {
    let server = Server::start(&[]);
    let (_a, _) = server.connect("/ws/game/7?user_id=alice").await;
    let (_b, _) = server.connect("/ws/odds?user_id=alice").await;
    let (_c, _) = server.connect("/ws/odds?user_id=bob").await;
    let (_d, _) = server.connect("/ws").await;
    let s = server.stats().await;
    assert_eq!(s["connections"], 4, "{s}");
    assert_eq!(s["users"], 2, "{s}");
    // game_7, odds_7, predictions_7, odds
    assert_eq!(s["channels"], 4, "{s}");
    let shards = s["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2);
    let per_shard: u64 = shards
        .iter()
        .map(|x| x["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(per_shard, 4);
    for key in [
        "messages_published",
        "messages_delivered",
        "slow_consumer_disconnects",
        "heartbeat_expiries",
        "rate_limited_upgrades",
        "uptime_seconds",
    ] {
        assert!(s[key].is_u64(), "{key} in {s}");
    }
    let ch = server.get("/api/channels").await.json();
    let list = ch["channels"].as_array().unwrap();
    let odds = list
        .iter()
        .find(|c| c["channel"] == "odds")
        .expect("odds listed");
    assert_eq!(odds["subscribers"], 2);
    assert!(list
        .iter()
        .any(|c| c["channel"] == "predictions_7" && c["subscribers"] == 1));
}

#[tokio::test]
async fn stats_return_to_zero_after_clients_leave() {
    let server = Server::start(&[]);
    {
        let (mut a, _) = server.connect("/ws/games").await;
        let (_b, _) = server.connect("/ws/odds?user_id=x").await;
        a.close(1000).await;
    }
    let s = server
        .wait_stats("zero connections", |s| s["connections"] == 0)
        .await;
    assert_eq!(s["users"], 0);
    assert_eq!(s["channels"], 0);
    let ch = server.get("/api/channels").await.json();
    assert_eq!(ch["channels"], json!([]));
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_latency_histogram() {
    let server = Server::start(&[]);
    let (mut c, _) = server.connect("/ws/odds").await;
    let r = server
        .post(
            "/api/publish",
            &json!({"channel": "odds", "event_type": "odds_update", "data": support::odds("7", 1)}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    c.next_json().await;
    let m = server.http("GET", "/metrics", &[], b"").await;
    assert_eq!(m.status, 200);
    let text = m.text();
    assert!(
        text.contains("# TYPE huddle_publish_to_write_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("huddle_publish_to_write_seconds_count"));
    assert!(text.contains("huddle_messages_delivered_total"));
    assert!(text.contains("huddle_connections{shard=\"0\"}"));
    let count: f64 = text
        .lines()
        .filter(|l| l.starts_with("huddle_publish_to_write_seconds_count"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(count >= 1.0, "one write observed: {text}");
}
