//! Several nodes over a real Redis (PROTOCOL.md §12): every test starts its own `redis-server`
//! on a free port and three huddle nodes pointing at it.
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::redis::Redis;
use support::{Client, Server, API_KEY, WAIT};

/// A node of the cluster on `redis`, ready (its `/healthz` answers 200: Redis reached).
async fn node(redis: &Redis, extra: &[&str]) -> Server {
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str()];
    args.extend_from_slice(extra);
    let s = Server::start(&args);
    wait_health(&s, 200).await;
    s
}

async fn wait_health(s: &Server, want: u16) -> Duration {
    let t0 = Instant::now();
    loop {
        let r = s.get("/healthz").await;
        if r.status == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < WAIT,
            "/healthz stayed {} ({})",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish(s: &Server, channel: &str, body: Value) -> (u16, Value) {
    let mut req = json!({"channel": channel, "event_type": "tick", "data": body});
    if let Some(id) = req["data"]["id"].as_str().map(str::to_owned) {
        req["message_id"] = json!(id);
    }
    let r = s.post("/api/publish", &req).await;
    (r.status, r.json())
}

async fn subscribe_since(c: &mut Client, channel: &str, offset: u64, epoch: &str) -> Value {
    c.send_json(&json!({"event_type":"user_subscription","message_id":"r",
        "data":{"channel":channel,"since":{"offset":offset,"epoch":epoch}}}))
        .await;
    let r = c.next_json().await;
    assert_eq!(r["reply_to"], "r", "{r}");
    r
}

/// A subscriber of `odds` on `n` that got offset 1 (published through `n`), with the epoch.
async fn odds_subscriber_at_1(n: &Server) -> (Client, String) {
    let (mut c, _) = n.connect("/ws").await;
    let r = c.subscribe("odds").await;
    let epoch = r["data"]["epoch"].as_str().unwrap().to_owned();
    let (status, body) = publish(n, "odds", json!({"n": 1})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(c.next_json().await["offset"], 1);
    (c, epoch)
}

/// Topics Redis has subscribers for.
fn topics(redis: &Redis) -> HashSet<String> {
    redis
        .command(&["PUBSUB", "CHANNELS", "*"])
        .into_iter()
        .collect()
}

#[tokio::test]
async fn publishers_on_every_node_reach_subscribers_on_every_node_in_one_order() {
    let Some(redis) = Redis::start() else { return };
    let nodes = [
        node(&redis, &[]).await,
        node(&redis, &[]).await,
        node(&redis, &[]).await,
    ];
    let mut subs = Vec::new();
    for n in &nodes {
        let (mut c, _) = n.connect("/ws").await;
        let r = c.subscribe("odds").await;
        assert_eq!(r["data"]["offset"], 0, "{r}");
        subs.push(c);
    }
    const PER: u64 = 40;
    let mut publishers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let addr = n.addr;
        publishers.push(tokio::spawn(async move {
            let (mut p, _) =
                support::Server::connect_to(addr, &format!("/ws?api_key={API_KEY}")).await;
            let mut offsets = Vec::new();
            for seq in 0..PER {
                p.send_json(
                    &json!({"event_type":"publish","message_id":format!("n{i}-{seq}"),
                    "data":{"channel":"odds","event_type":"tick","data":{"node":i,"seq":seq}}}),
                )
                .await;
                let r = p.next_json().await;
                assert_eq!(r["event_type"], "publish", "{r}");
                offsets.push(r["data"]["results"][0]["offset"].as_u64().expect("offset"));
            }
            offsets
        }));
    }
    let mut all = Vec::new();
    for p in publishers {
        let offsets = p.await.expect("publisher");
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "one publisher's offsets grow: {offsets:?}"
        );
        all.extend(offsets);
    }
    all.sort_unstable();
    let total = 3 * PER;
    assert_eq!(
        all,
        (1..=total).collect::<Vec<_>>(),
        "global offsets, none shared"
    );
    // Every subscriber on every node: offsets 1..=total in order, the same message at each.
    let mut reference: Vec<Value> = Vec::new();
    for (i, c) in subs.iter_mut().enumerate() {
        for want in 1..=total {
            let m = c.next_json().await;
            assert_eq!(m["offset"], want, "node {i}: {m}");
            if i == 0 {
                reference.push(m["data"].clone());
            } else {
                assert_eq!(
                    m["data"],
                    reference[want as usize - 1],
                    "node {i}, offset {want}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_client_recovers_on_another_node_after_its_node_was_killed() {
    let Some(redis) = Redis::start() else { return };
    let mut a = node(&redis, &[]).await;
    let b = node(&redis, &[]).await;
    let c = node(&redis, &[]).await;
    let (mut sub, _) = a.connect("/ws").await;
    let r = sub.subscribe("scores").await;
    let epoch = r["data"]["epoch"].as_str().expect("epoch").to_owned();
    let (status, first) = publish(&b, "scores", json!({"n": 1})).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(sub.next_json().await["offset"], 1);
    a.sigkill();
    drop(sub);
    let mut sent = Vec::new();
    for n in 2..=6 {
        let (status, r) = publish(&b, "scores", json!({"n": n})).await;
        assert_eq!(status, 200, "{r}");
        sent.push(r["results"][0]["offset"].as_u64().unwrap());
    }
    assert_eq!(sent, [2, 3, 4, 5, 6]);
    // Back on another node, with the position it last saw.
    let (mut again, _) = c.connect("/ws").await;
    let reply = subscribe_since(&mut again, "scores", 1, &epoch).await;
    assert_eq!(reply["data"]["recovered"], true, "{reply}");
    assert_eq!(reply["data"]["offset"], 6, "{reply}");
    for want in 2..=6u64 {
        let m = again.next_json().await;
        assert_eq!(
            (m["offset"].as_u64(), m["data"]["n"].as_u64()),
            (Some(want), Some(want)),
            "{m}"
        );
    }
    let (_, r) = publish(&b, "scores", json!({"n": 7})).await;
    assert_eq!(r["results"][0]["offset"], 7);
    assert_eq!(
        again.next_json().await["offset"],
        7,
        "live follows the replay"
    );
    // A stale epoch is told plainly.
    let (mut stale, _) = c.connect("/ws").await;
    let reply = subscribe_since(&mut stale, "scores", 1, "01OLDEPOCH0000000000000000").await;
    assert_eq!(reply["data"]["recovered"], false, "{reply}");
    // /api/history answers from Redis on any node.
    let h = c.get("/api/history/scores?since=4&limit=10").await;
    assert_eq!(h.status, 200, "{}", h.text());
    let h = h.json();
    assert_eq!(h["epoch"], epoch.as_str(), "{h}");
    let got: Vec<u64> = h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [5, 6, 7], "{h}");
}

#[tokio::test]
async fn a_node_holds_topics_only_for_channels_in_use() {
    let Some(redis) = Redis::start() else { return };
    let a = node(&redis, &[]).await;
    let b = node(&redis, &[]).await;
    let (mut c, _) = a.connect("/ws").await;
    c.subscribe("lines").await;
    let want = "huddle:ch:{lines}".to_owned();
    assert!(topics(&redis).contains(&want), "{:?}", topics(&redis));
    let channel_topics: Vec<String> = topics(&redis)
        .into_iter()
        .filter(|t| t.starts_with("huddle:ch:"))
        .collect();
    assert_eq!(
        channel_topics,
        std::slice::from_ref(&want),
        "only the channel in use (and the broadcast topic)"
    );
    // A publish through a node without subscribers is delivered through the topic.
    let (status, r) = publish(&b, "lines", json!({"n": 1})).await;
    assert_eq!(
        (status, r["results"][0]["recipients"].as_u64()),
        (200, Some(0)),
        "{r}"
    );
    assert_eq!(c.next_json().await["offset"], 1);
    c.close(1000).await;
    let t0 = Instant::now();
    while topics(&redis).contains(&want) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "topic kept past 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        t0.elapsed() >= Duration::from_secs(4),
        "released lazily, not at once: {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn recipients_count_this_node_and_a_retried_message_id_is_published_once() {
    let Some(redis) = Redis::start() else { return };
    let a = node(&redis, &[]).await;
    let b = node(&redis, &[]).await;
    let (mut on_a, _) = a.connect("/ws").await;
    on_a.subscribe("games").await;
    let (mut on_a2, _) = a.connect("/ws").await;
    on_a2.subscribe("games").await;
    let (mut on_b, _) = b.connect("/ws").await;
    on_b.subscribe("games").await;
    let (status, r) = publish(&a, "games", json!({"id": "m-1"})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r["results"][0]["recipients"], 2,
        "this node's subscribers: {r}"
    );
    let first = r["results"][0]["offset"].clone();
    // The publisher retries (e.g. after a timeout): same offset, not delivered again.
    let (status, again) = publish(&b, "games", json!({"id": "m-1"})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["results"][0]["offset"], first, "{again}");
    let (_, next) = publish(&b, "games", json!({"id": "m-2"})).await;
    for c in [&mut on_a, &mut on_a2, &mut on_b] {
        assert_eq!(c.next_json().await["offset"], first);
        assert_eq!(
            c.next_json().await["offset"],
            next["results"][0]["offset"],
            "no duplicate"
        );
    }
}

#[tokio::test]
async fn redis_paused_means_503_fast_and_connections_kept_then_recovers() {
    let Some(redis) = Redis::start() else { return };
    let a = node(&redis, &[]).await;
    let b = node(&redis, &[]).await;
    let (mut c, epoch) = odds_subscriber_at_1(&a).await;

    redis.pause();
    let noticed = wait_health(&a, 503).await;
    assert!(
        noticed <= Duration::from_secs(4),
        "noticed after {noticed:?}"
    );
    let t0 = Instant::now();
    let (status, body) = publish(&a, "odds", json!({"n": 2})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "answered in {:?}",
        t0.elapsed()
    );
    // The connection is still served.
    c.send_json(&json!({"event_type":"heartbeat","message_id":"hb"}))
        .await;
    assert_eq!(c.next_json().await["reply_to"], "hb");
    // A recovery cannot be trusted now: it is refused, never partial.
    let (mut late, _) = a.connect("/ws").await;
    let reply = subscribe_since(&mut late, "odds", 0, &epoch).await;
    assert_eq!(reply["data"]["recovered"], false, "{reply}");
    // The same on a node that did not follow the channel yet: answered at once, without a
    // position it cannot know; live messages follow once Redis is back.
    wait_health(&b, 503).await;
    let (mut elsewhere, _) = b.connect("/ws").await;
    let t0 = Instant::now();
    let reply = subscribe_since(&mut elsewhere, "odds", 1, &epoch).await;
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(
        (
            reply["data"]["status"].as_str(),
            reply["data"]["recovered"].as_bool()
        ),
        (Some("subscribed"), Some(false)),
        "{reply}"
    );
    assert!(
        reply["data"].get("offset").is_none(),
        "no position while Redis is away: {reply}"
    );

    redis.resume();
    wait_health(&a, 200).await;
    let (status, r) = publish(&a, "odds", json!({"n": 3})).await;
    assert_eq!(status, 200, "{r}");
    let m = c.next_json().await;
    assert_eq!(
        (m["offset"].clone(), m["data"]["n"].clone()),
        (r["results"][0]["offset"].clone(), json!(3)),
        "{m}"
    );
    // Node b follows `odds` once Redis answers; its subscriber, told nothing of a position,
    // then gets every message from some point on, in order, up to the last one.
    let mut n = 3;
    let mut last = r["results"][0]["offset"].as_u64().unwrap();
    let mut seen =
        match tokio::time::timeout(Duration::from_millis(200), elsewhere.next_json()).await {
            Ok(m) => Some(m["offset"].as_u64().unwrap()),
            Err(_) => None,
        };
    while seen.is_none() {
        n += 1;
        assert!(n < 60, "node b never delivered after Redis came back");
        let (status, r) = publish(&a, "odds", json!({"n": n})).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(c.next_json().await["data"]["n"], n);
        last = r["results"][0]["offset"].as_u64().unwrap();
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(200), elsewhere.next_json()).await
        {
            seen = m["offset"].as_u64();
        }
    }
    let mut at = seen.unwrap();
    while at < last {
        let m = elsewhere.next_json().await;
        assert_eq!(m["offset"].as_u64(), Some(at + 1), "in order, no gap: {m}");
        at += 1;
    }
    let (_, r) = publish(&a, "odds", json!({"n": n + 1})).await;
    assert_eq!(
        elsewhere.next_json().await["offset"],
        r["results"][0]["offset"]
    );
}

#[tokio::test]
async fn redis_restarted_empty_closes_subscribers_with_4010() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let a = node(&redis, &[]).await;
    let (mut c, epoch) = odds_subscriber_at_1(&a).await;

    redis.restart_empty();
    wait_health(&a, 200).await;
    // The node resubscribes, finds the stream gone (new epoch) and tells the subscriber.
    let (code, _) = c.recv_close().await;
    assert_eq!(code, 4010);
    let (mut back, _) = a.connect("/ws").await;
    let reply = subscribe_since(&mut back, "odds", 1, &epoch).await;
    assert_eq!(reply["data"]["recovered"], false, "{reply}");
    assert_ne!(reply["data"]["epoch"], epoch.as_str(), "{reply}");
}

/// Nodes subscribed to `topic` in Redis.
fn numsub(redis: &Redis, topic: &str) -> u64 {
    let r = redis.command(&["PUBSUB", "NUMSUB", topic]);
    r.get(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

async fn wait_numsub(redis: &Redis, topic: &str, want: u64) {
    let t0 = Instant::now();
    while numsub(redis, topic) != want {
        assert!(
            t0.elapsed() < WAIT,
            "{topic}: {} nodes, want {want}",
            numsub(redis, topic)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn send_and_broadcast_reach_connections_on_every_node() {
    let Some(redis) = Redis::start() else { return };
    let a = node(&redis, &[]).await;
    let b = node(&redis, &[]).await;
    let (mut u1_a, ack_a) = a.connect("/ws?user_id=u1").await;
    let (mut u1_b, ack_b) = b.connect("/ws?user_id=u1").await;
    let (mut u2_b, _) = b.connect("/ws?user_id=u2").await;
    let (ida, idb) = (
        ack_a["data"]["connection_id"].as_str().unwrap().to_owned(),
        ack_b["data"]["connection_id"].as_str().unwrap().to_owned(),
    );
    assert_ne!(
        ida.split('.').next(),
        idb.split('.').next(),
        "node ids differ: {ida} {idb}"
    );
    // Each node follows the users it has.
    wait_numsub(&redis, "huddle:user:{u1}", 2).await;
    wait_numsub(&redis, "huddle:user:{u2}", 1).await;

    let body = json!({"user_id": "u1", "event_type": "notification",
        "data": {"message": "bet settled", "level": "info"}});
    let r = a.post("/api/send", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["recipients"], 1, "this node's connections of u1");
    for c in [&mut u1_a, &mut u1_b] {
        let m = c.next_json().await;
        assert_eq!(
            (m["event_type"].as_str(), m["data"]["message"].as_str()),
            (Some("notification"), Some("bet settled")),
            "{m}"
        );
    }
    let r = b
        .post(
            "/api/broadcast",
            &json!({"event_type": "notification",
            "data": {"message": "maintenance", "level": "warning"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["recipients"], 2, "{}", r.text());
    for c in [&mut u1_a, &mut u1_b, &mut u2_b] {
        let m = c.next_json().await;
        assert_eq!(
            m["data"]["message"], "maintenance",
            "exactly once, no other before: {m}"
        );
    }
    // u2 got nothing of u1's message: the broadcast was its next message (checked above).
    // The last connection of a user gone: the node lets go of the user's topic.
    u2_b.close(1000).await;
    wait_numsub(&redis, "huddle:user:{u2}", 0).await;
}

async fn presence_ids(s: &Server, channel: &str) -> Vec<String> {
    let r = s.get(&format!("/api/presence/{channel}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut ids: Vec<String> = r.json()["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| c["connection_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn presence_covers_every_node_and_a_dead_nodes_entries_expire() {
    let Some(redis) = Redis::start() else { return };
    let ttl = ["--presence-ttl", "2s"];
    let a = node(&redis, &ttl).await;
    let mut b = node(&redis, &ttl).await;
    let (mut on_a, ack_a) = a.connect("/ws?user_id=ann").await;
    on_a.subscribe("games").await;
    let (mut on_b, ack_b) = b.connect("/ws?user_id=bob").await;
    on_b.subscribe("games").await;
    let id = |ack: &Value| ack["data"]["connection_id"].as_str().unwrap().to_owned();
    let mut both = vec![id(&ack_a), id(&ack_b)];
    both.sort();
    // Presence writes are asynchronous; the subscribe replies came first.
    let t0 = Instant::now();
    while presence_ids(&a, "games").await != both {
        assert!(t0.elapsed() < WAIT, "{:?}", presence_ids(&a, "games").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        presence_ids(&b, "games").await,
        both,
        "the same on every node"
    );
    let count = a.get("/api/presence/games?count=1").await.json();
    assert_eq!(
        (count["clients"].as_u64(), count["users"].as_u64()),
        (Some(2), Some(2)),
        "{count}"
    );
    // Entries outlive several TTLs while their node renews them.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(presence_ids(&a, "games").await, both, "renewed");
    // A node killed without a word: its entries are gone within the TTL.
    b.sigkill();
    let t0 = Instant::now();
    while presence_ids(&a, "games").await != [id(&ack_a)] {
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "{:?}",
            presence_ids(&a, "games").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A clean leave is removed at once.
    on_a.send_json(
        &json!({"event_type":"user_unsubscription","message_id":"u","data":{"channel":"games"}}),
    )
    .await;
    assert_eq!(on_a.next_json().await["data"]["status"], "unsubscribed");
    let t0 = Instant::now();
    while !presence_ids(&a, "games").await.is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "leave removed promptly"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn several_redis_urls_spread_channels_each_on_one_instance() {
    let (Some(r1), Some(r2)) = (Redis::start(), Redis::start()) else {
        return;
    };
    let urls = format!("{},{}", r1.url(), r2.url());
    let args = ["--redis", urls.as_str()];
    let a = Server::start(&args);
    wait_health(&a, 200).await;
    let b = Server::start(&args);
    wait_health(&b, 200).await;
    let channels: Vec<String> = (0..12).map(|i| format!("game_{i}")).collect();
    let mut subs = Vec::new();
    for ch in &channels {
        let (mut c, _) = b.connect("/ws").await;
        c.subscribe(ch).await;
        subs.push(c);
    }
    for ch in &channels {
        let (status, r) = publish(&a, ch, json!({"ch": ch})).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["results"][0]["offset"], 1, "{r}");
    }
    let mut on = [0, 0];
    for (ch, c) in channels.iter().zip(&mut subs) {
        let m = c.next_json().await;
        assert_eq!(
            (m["offset"].as_u64(), m["data"]["ch"].as_str()),
            (Some(1), Some(ch.as_str())),
            "{m}"
        );
        let key = format!("huddle:meta:{{{ch}}}");
        let held: Vec<bool> = [&r1, &r2]
            .iter()
            .map(|r| r.command(&["EXISTS", &key]) == ["1"])
            .collect();
        assert_eq!(
            held.iter().filter(|h| **h).count(),
            1,
            "{ch} on exactly one instance: {held:?}"
        );
        on[usize::from(held[1])] += 1;
    }
    assert!(on[0] > 0 && on[1] > 0, "both instances used: {on:?}");
}

#[tokio::test]
async fn join_and_leave_events_cross_nodes_once() {
    let Some(redis) = Redis::start() else { return };
    let a = node(&redis, &[]).await;
    let b = node(&redis, &[]).await;
    let (mut listener, _) = a.connect("/ws").await;
    listener
        .send_json(&json!({"event_type":"user_subscription","message_id":"l",
            "data":{"channel":"game_5","join_leave":true}}))
        .await;
    assert_eq!(listener.next_json().await["data"]["status"], "subscribed");
    // As on one node, a watcher sees its own join first.
    let own = listener.next_json().await;
    assert_eq!(own["event_type"], "join", "{own}");
    let (mut guest, ack) = b.connect("/ws?user_id=gus").await;
    guest.subscribe("game_5").await;
    let id = ack["data"]["connection_id"].as_str().unwrap().to_owned();
    let m = listener.next_json().await;
    assert_eq!(
        (
            m["event_type"].as_str(),
            m["channel"].as_str(),
            m["data"]["connection_id"].as_str(),
            m["data"]["user_id"].as_str()
        ),
        (Some("join"), Some("game_5"), Some(id.as_str()), Some("gus")),
        "{m}"
    );
    assert!(m.get("offset").is_none(), "not numbered: {m}");
    guest.close(1000).await;
    let m = listener.next_json().await;
    assert_eq!(
        (
            m["event_type"].as_str(),
            m["data"]["connection_id"].as_str()
        ),
        (Some("leave"), Some(id.as_str())),
        "{m}"
    );
    // Exactly once: the next message is a live one.
    let (status, r) = publish(&b, "game_5", json!({"n": 1})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(listener.next_json().await["offset"], 1);
}

#[tokio::test]
async fn a_plain_subscription_while_redis_is_away_is_refused_in_bounded_time() {
    let Some(redis) = Redis::start() else { return };
    let a = node(&redis, &[]).await;
    redis.pause();
    wait_health(&a, 503).await;
    let (mut c, _) = a.connect("/ws").await;
    let t0 = Instant::now();
    c.send_json(
        &json!({"event_type":"user_subscription","message_id":"s1","data":{"channel":"lines"}}),
    )
    .await;
    let r = c.next_json().await;
    assert_eq!(
        (
            r["event_type"].as_str(),
            r["reply_to"].as_str(),
            r["data"]["code"].as_str()
        ),
        (Some("error"), Some("s1"), Some("unavailable")),
        "{r}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "refused after {:?}",
        t0.elapsed()
    );
    // Asked again while Redis is still away: refused at once, and the connection is served.
    c.send_json(
        &json!({"event_type":"user_subscription","message_id":"s2","data":{"channel":"lines"}}),
    )
    .await;
    assert_eq!(c.next_json().await["data"]["code"], "unavailable");
    c.send_json(&json!({"event_type":"heartbeat","message_id":"hb"}))
        .await;
    assert_eq!(c.next_json().await["reply_to"], "hb");
    redis.resume();
    wait_health(&a, 200).await;
    // Once the owner follows the channel again, subscribing works.
    let t0 = Instant::now();
    loop {
        c.send_json(
            &json!({"event_type":"user_subscription","message_id":"s3","data":{"channel":"lines"}}),
        )
        .await;
        let r = c.next_json().await;
        if r["data"]["status"] == "subscribed" {
            assert_eq!(r["data"]["offset"], 0, "{r}");
            break;
        }
        assert_eq!(r["data"]["code"], "unavailable", "{r}");
        assert!(
            t0.elapsed() < WAIT,
            "never subscribed after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, r) = publish(&a, "lines", json!({"n": 1})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(c.next_json().await["offset"], 1);
}
