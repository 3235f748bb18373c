//! `huddle serve --demo` (PROTOCOL.md §14): the built-in feed publishes through the ordinary
//! path, on the seed's channels, and the same seed gives the same games.
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Server, WAIT};

/// The first `n` messages of `channel`'s history, waiting until there are that many.
async fn first_messages(s: &Server, channel: &str, n: usize) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let h = s
            .get(&format!("/api/history/{channel}?since=0&limit={n}"))
            .await;
        assert_eq!(h.status, 200, "{}", h.text());
        let msgs = h.json()["messages"].as_array().cloned().unwrap_or_default();
        if msgs.len() >= n {
            return msgs;
        }
        assert!(
            t0.elapsed() < WAIT,
            "only {} messages on {channel}",
            msgs.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn demo(seed: &str) -> Server {
    Server::start(&[
        "--demo",
        "--demo-seed",
        seed,
        "--demo-interval",
        "20ms",
        "--history-size",
        "10000",
    ])
}

#[tokio::test]
async fn the_demo_feed_publishes_valid_games_odds_and_predictions() {
    let server = demo("7");
    let (mut c, ack) = server.connect("/ws/games").await;
    assert_eq!(ack["data"]["subscriptions"], serde_json::json!(["games"]));
    let mut last = 0;
    let mut kinds = std::collections::HashSet::new();
    for _ in 0..40 {
        let m = c.next_json().await;
        let offset = m["offset"].as_u64().expect("a channel message");
        assert!(offset > last, "in order: {m}");
        last = offset;
        kinds.insert(m["event_type"].as_str().unwrap().to_owned());
        if m["event_type"] == "game_update" {
            assert!(
                m["data"]["game_id"].is_string() && m["data"]["home_score"].is_i64(),
                "{m}"
            );
        }
    }
    assert!(kinds.contains("game_update"), "{kinds:?}");
    for ch in ["odds", "predictions"] {
        let msgs = first_messages(&server, ch, 5).await;
        let want = if ch == "odds" {
            "odds_update"
        } else {
            "prediction_update"
        };
        assert!(msgs.iter().all(|m| m["event_type"] == want), "{msgs:?}");
    }
    let s = server.stats().await;
    assert!(s["messages_published"].as_u64().unwrap_or(0) > 40, "{s}");
}

#[tokio::test]
async fn the_same_seed_plays_the_same_games() {
    let (a, b, c) = (demo("42"), demo("42"), demo("43"));
    let strip =
        |msgs: Vec<Value>| -> Vec<Value> { msgs.into_iter().map(|m| m["data"].clone()).collect() };
    let (ma, mb, mc) = (
        strip(first_messages(&a, "games", 60).await),
        strip(first_messages(&b, "games", 60).await),
        strip(first_messages(&c, "games", 60).await),
    );
    assert_eq!(ma, mb, "same seed, same messages");
    assert_ne!(ma, mc, "another seed, other games");
}
