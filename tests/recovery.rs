//! History, recovery and presence (PROTOCOL.md §10) against the real server over real sockets.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{Client, Server, API_KEY};

/// The shard a connection lives on (`connection_id` is `{shard:x}-{seq:x}`).
fn shard_of(ack: &Value) -> String {
    let id = ack["data"]["connection_id"].as_str().unwrap_or("");
    id.split('-').next().unwrap_or("").to_owned()
}

/// One connection on each of the two shards (the kernel spreads connections; retry until).
async fn one_per_shard(server: &Server, path: &str) -> Vec<(String, Client)> {
    let mut found: Vec<(String, Client)> = Vec::new();
    for _ in 0..200 {
        let (c, ack) = server.connect(path).await;
        let shard = shard_of(&ack);
        if !found.iter().any(|(s, _)| *s == shard) {
            found.push((shard, c));
        }
        if found.len() == 2 {
            return found;
        }
    }
    panic!("could not reach both shards");
}

async fn publish(server: &Server, channel: &str, n: u64) -> Value {
    let r = server
        .post(
            "/api/publish",
            &json!({"channel": channel, "event_type": "tick", "data": {"n": n}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["results"][0].clone()
}

/// Subscribes with `since` and returns the reply.
async fn subscribe_since(c: &mut Client, channel: &str, offset: u64, epoch: &str) -> Value {
    c.send_json(&json!({"event_type":"user_subscription","message_id":"r",
        "data":{"channel":channel,"since":{"offset":offset,"epoch":epoch}}}))
        .await;
    let r = c.next_json().await;
    assert_eq!(r["event_type"], "user_subscription", "{r}");
    assert_eq!(r["reply_to"], "r", "{r}");
    r
}

/// Reads channel messages, asserting each is the next offset, until `last`.
async fn expect_offsets(c: &mut Client, channel: &str, from: u64, last: u64) -> Vec<Value> {
    let mut got = Vec::new();
    for want in from..=last {
        let m = c.next_json().await;
        assert_eq!(m["channel"], channel, "{m}");
        assert_eq!(m["offset"], want, "{m}");
        got.push(m);
    }
    got
}

/// The next message is the live one at `offset` (nothing was replayed before it).
async fn next_is_live(server: &Server, c: &mut Client, channel: &str, offset: u64) {
    let r = publish(server, channel, offset).await;
    assert_eq!(r["offset"], offset);
    let m = c.next_json().await;
    assert_eq!(
        (m["channel"].as_str(), m["offset"].as_u64()),
        (Some(channel), Some(offset)),
        "{m}"
    );
}

/// Three WebSocket publishers (API key), each publishing `per` messages to `channel` one
/// after the other, awaiting each answer.
fn spawn_publishers(server: &Server, channel: &str, per: u64) -> Vec<tokio::task::JoinHandle<()>> {
    let url = server.ws_url(&format!("/ws?api_key={API_KEY}"));
    (0..3)
        .map(|p| {
            let (url, channel) = (url.clone(), channel.to_owned());
            tokio::spawn(async move {
                let (ws, _) = tokio_tungstenite::connect_async(url)
                    .await
                    .expect("connect");
                let mut c = Client { ws };
                c.next_json().await;
                for i in 0..per {
                    c.send_json(
                        &json!({"event_type":"publish","message_id":format!("{p}-{i}"),
                        "data":{"channel":channel,"event_type":"tick","data":{"p":p,"i":i}}}),
                    )
                    .await;
                    let r = c.next_json().await;
                    assert_eq!(r["event_type"], "publish", "{r}");
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn recovery_replays_exactly_what_was_missed_on_either_shard() {
    let server = Server::start(&[]);
    let mut first = server.connect("/ws").await.0;
    let reply = first.subscribe("odds_7").await;
    let epoch = reply["data"]["epoch"].as_str().unwrap().to_owned();
    for n in 1..=3 {
        publish(&server, "odds_7", n).await;
    }
    let seen = expect_offsets(&mut first, "odds_7", 1, 3).await;
    drop(first);
    for n in 4..=9 {
        publish(&server, "odds_7", n).await;
    }
    // Whichever shard owns odds_7, one of these is on it and one is not.
    for (shard, mut c) in one_per_shard(&server, "/ws").await {
        let r = subscribe_since(&mut c, "odds_7", 3, &epoch).await;
        assert_eq!(r["data"]["recovered"], true, "shard {shard}: {r}");
        assert_eq!(r["data"]["epoch"], epoch.as_str());
        let top = r["data"]["offset"].as_u64().unwrap();
        let replayed = expect_offsets(&mut c, "odds_7", 4, top).await;
        assert_eq!(replayed.len() as u64, top - 3);
        assert!(top >= 9);
        // Exactly as first delivered: same message_id, timestamp and data as history has.
        let h = server.get("/api/history/odds_7?since=3").await.json();
        for (m, stored) in replayed.iter().zip(h["messages"].as_array().unwrap()) {
            assert_eq!(m, stored);
        }
        next_is_live(&server, &mut c, "odds_7", top + 1).await;
    }
    assert_eq!(seen[0]["data"]["n"], 1);
}

#[tokio::test]
async fn recovery_while_publishers_keep_publishing_has_no_gap_or_duplicate() {
    let server = Server::start(&["--history-size", "10000"]);
    let channel = "live";
    let mut watcher = server.connect("/ws").await.0;
    let epoch = watcher.subscribe(channel).await["data"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let publishers = spawn_publishers(&server, channel, 150);
    // While they publish: recover on each shard, from the watcher's position at that moment.
    let mut last = 0;
    for (shard, mut c) in one_per_shard(&server, "/ws").await {
        let until = last + 20;
        expect_offsets(&mut watcher, channel, last + 1, until).await;
        last = until;
        let r = subscribe_since(&mut c, channel, last, &epoch).await;
        assert_eq!(r["data"]["recovered"], true, "shard {shard}: {r}");
        // Replay up to the reply's offset, then live messages: one unbroken run.
        expect_offsets(&mut c, channel, last + 1, last + 60).await;
    }
    for p in publishers {
        p.await.unwrap();
    }
    expect_offsets(&mut watcher, channel, last + 1, 450).await;
}

#[tokio::test]
async fn every_cause_of_recovered_false_replays_nothing() {
    let server = Server::start(&["--history-size", "5", "--recovery-max", "3"]);
    let mut c = server.connect("/ws").await.0;
    let epoch = c.subscribe("games").await["data"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    for n in 1..=10 {
        publish(&server, "games", n).await;
    }
    expect_offsets(&mut c, "games", 1, 10).await;
    let mut next = 11;
    for (since, ep, why) in [
        (8, "01NOTTHEEPOCH0000000000000", "another epoch"),
        (2, epoch.as_str(), "trimmed by --history-size"),
        (6, epoch.as_str(), "more than --recovery-max"),
        (99, epoch.as_str(), "an offset never reached"),
    ] {
        let mut r = server.connect("/ws").await.0;
        let reply = subscribe_since(&mut r, "games", since, ep).await;
        assert_eq!(reply["data"]["recovered"], false, "{why}: {reply}");
        assert_eq!(
            reply["data"]["offset"],
            next - 1,
            "{why}: the current position"
        );
        assert_eq!(reply["data"]["epoch"], epoch.as_str(), "{why}");
        next_is_live(&server, &mut r, "games", next).await;
        c.next_json().await;
        next += 1;
    }
    // Within the limits, the same history recovers.
    let mut r = server.connect("/ws").await.0;
    let reply = subscribe_since(&mut r, "games", next - 3, &epoch).await;
    assert_eq!(reply["data"]["recovered"], true, "{reply}");
    expect_offsets(&mut r, "games", next - 2, next - 1).await;
}

#[tokio::test]
async fn expired_history_and_evicted_channels_come_back_under_a_new_epoch() {
    let server = Server::start(&["--history-ttl", "1s"]);
    let first = publish(&server, "eliminations", 1).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    // Nobody subscribed and nothing published for the TTL: the channel's state is freed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let h = server.get("/api/history/eliminations").await.json();
    assert_eq!(h["offset"], 0, "{h}");
    assert_ne!(h["epoch"], epoch.as_str(), "{h}");
    assert_eq!(h["messages"], json!([]));
    let mut c = server.connect("/ws").await.0;
    let r = subscribe_since(&mut c, "eliminations", 1, &epoch).await;
    assert_eq!(r["data"]["recovered"], false, "{r}");
    assert_eq!(r["data"]["epoch"], h["epoch"]);

    // With a subscriber the channel stays, but messages past the TTL are no longer replayed.
    let kept = publish(&server, "eliminations", 2).await;
    c.next_json().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut late = server.connect("/ws").await.0;
    let r = subscribe_since(
        &mut late,
        "eliminations",
        0,
        kept["epoch"].as_str().unwrap(),
    )
    .await;
    assert_eq!(r["data"]["recovered"], false, "{r}");
}

#[tokio::test]
async fn a_restart_changes_every_epoch() {
    let server = Server::start(&[]);
    let before = publish(&server, "lines", 1).await;
    drop(server);
    let server = Server::start(&[]);
    let mut c = server.connect("/ws").await.0;
    let r = subscribe_since(&mut c, "lines", 1, before["epoch"].as_str().unwrap()).await;
    assert_eq!(r["data"]["recovered"], false, "{r}");
    assert_ne!(r["data"]["epoch"], before["epoch"]);
    assert_eq!(r["data"]["offset"], 0);
}

#[tokio::test]
async fn history_api_lists_stored_messages() {
    let server = Server::start(&["--history-size", "4"]);
    let mut c = server.connect("/ws").await.0;
    c.subscribe("predictions").await;
    for n in 1..=6 {
        publish(&server, "predictions", n).await;
    }
    let delivered = expect_offsets(&mut c, "predictions", 1, 6).await;
    let h = server.get("/api/history/predictions").await.json();
    assert_eq!(h["offset"], 6);
    assert_eq!(
        h["messages"],
        json!(delivered[2..]),
        "the last 4, as delivered"
    );
    let h = server
        .get("/api/history/predictions?since=3&limit=2")
        .await
        .json();
    assert_eq!(h["messages"], json!(delivered[3..5]));
    let r = server.get("/api/history/bad%20name").await;
    assert_eq!(r.status, 422, "{}", r.text());
    let r = server.get("/api/history/bankroll").await;
    assert_eq!(r.status, 422, "per user: {}", r.text());
    let r = server
        .http("GET", "/api/history/predictions", &[], b"")
        .await;
    assert_eq!(r.status, 401);
    // A user's own stream.
    server
        .post(
            "/api/send",
            &json!({"user_id":"u9","channel":"bankroll","event_type":"bankroll_update","data":{"b":1}}),
        )
        .await;
    let h = server.get("/api/history/bankroll?user_id=u9").await.json();
    assert_eq!(
        (h["offset"].as_u64(), h["messages"][0]["data"]["b"].as_u64()),
        (Some(1), Some(1)),
        "{h}"
    );
}

#[tokio::test]
async fn a_replay_counts_toward_the_send_queue() {
    let server = Server::start(&["--send-queue-bytes", "16384", "--history-size", "1000"]);
    let first = publish(&server, "games", 0).await;
    let big = "x".repeat(2000);
    for _ in 0..40 {
        server
            .post(
                "/api/publish",
                &json!({"channel":"games","event_type":"tick","data":{"pad": big}}),
            )
            .await;
    }
    let mut c = server.connect("/ws").await.0;
    c.send_json(&json!({"event_type":"user_subscription","message_id":"r",
        "data":{"channel":"games","since":{"offset":0,"epoch":first["epoch"]}}}))
        .await;
    let (code, _) = c.recv_close().await;
    assert_eq!(code, 4008, "80 KB of replay over a 16 KiB queue");
    server
        .wait_stats("the 4008", |s| s["slow_consumer_disconnects"] == 1)
        .await;
}

#[tokio::test]
async fn presence_and_join_leave_across_shards() {
    let server = Server::start(&[]);
    let mut watchers = Vec::new();
    for (shard, mut c) in one_per_shard(&server, "/ws?user_id=watch").await {
        c.send_json(&json!({"event_type":"user_subscription","message_id":"w",
            "data":{"channel":"game_5","join_leave":true}}))
            .await;
        let r = c.next_json().await;
        assert_eq!(r["data"]["status"], "subscribed", "{r}");
        watchers.push((shard, c));
    }
    // The first watcher sees its own join and the second's; the second only its own.
    for (i, (_, c)) in watchers.iter_mut().enumerate() {
        for _ in 0..(2 - i) {
            let m = c.next_json().await;
            assert_eq!(
                (m["event_type"].as_str(), m["channel"].as_str()),
                (Some("join"), Some("game_5")),
                "{m}"
            );
            assert!(m.get("offset").is_none(), "not numbered: {m}");
        }
    }
    // A plain subscriber on each shard: every watcher sees both joins, then both leaves.
    let mut plain = Vec::new();
    for (_, mut c) in one_per_shard(&server, "/ws?user_id=alice").await {
        c.subscribe("game_5").await;
        plain.push(c);
    }
    let p = server.get("/api/presence/game_5").await.json();
    let clients = p["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 4, "{p}");
    assert!(clients.iter().all(|c| c["connection_id"].is_string()));
    let count = server.get("/api/presence/game_5?count=1").await.json();
    assert_eq!(count, json!({"channel":"game_5","clients":4,"users":2}));
    drop(plain);
    for (shard, c) in watchers.iter_mut() {
        let mut events = Vec::new();
        for _ in 0..4 {
            let m = c.next_json().await;
            assert_eq!(m["data"]["user_id"], "alice", "{m}");
            events.push(m["event_type"].as_str().unwrap().to_owned());
        }
        events.sort();
        assert_eq!(
            events,
            ["join", "join", "leave", "leave"],
            "watcher on {shard}"
        );
    }
    let count = server.get("/api/presence/game_5?count=1").await.json();
    assert_eq!(count["clients"], 2, "{count}");
    // Only --presence-channels.
    let server = Server::start(&["--presence-channels", "game_*"]);
    assert_eq!(server.get("/api/presence/odds").await.status, 422);
    assert_eq!(server.get("/api/presence/game_1").await.status, 200);
}

/// The soak: subscribers drop their connection and come back with `since`, over and over, while
/// three publishers publish; every subscriber must see offsets 1..=N once each, in order.
#[tokio::test]
async fn soak_reconnecting_subscribers_miss_nothing() {
    const PER_PUBLISHER: u64 = 600;
    const TOTAL: u64 = 3 * PER_PUBLISHER;
    let server = Server::start(&["--history-size", "5000"]);
    let epoch = publish(&server, "soak", 0).await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let publishers = spawn_publishers(&server, "soak", PER_PUBLISHER);
    let url = server.ws_url("/ws");
    let subscribers: Vec<_> = (0..4u64)
        .map(|s| {
            let (url, epoch) = (url.clone(), epoch.clone());
            tokio::spawn(async move {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(s + 1);
                let mut last = 1; // offset 1 is the setup publish above
                let mut reconnects = 0;
                while last < TOTAL + 1 {
                    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
                        .await
                        .expect("connect");
                    let mut c = Client { ws };
                    c.next_json().await;
                    let r = subscribe_since(&mut c, "soak", last, &epoch).await;
                    assert_eq!(r["data"]["recovered"], true, "subscriber {s}: {r}");
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let take = 20 + rng % 100;
                    let until = (last + take).min(TOTAL + 1);
                    expect_offsets(&mut c, "soak", last + 1, until).await;
                    last = until;
                    reconnects += 1;
                    // Dropped without a close: the server sees the connection vanish.
                }
                reconnects
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    for s in subscribers {
        let reconnects = s.await.unwrap();
        assert!(reconnects >= 10, "only {reconnects} reconnects");
    }
}
