//! Delivery guarantees of PROTOCOL.md §6: per-channel order with no gaps or duplicates under
//! concurrent publishers on different shards, and slow consumers closed with 4008 while
//! everyone else keeps up.

mod support;

use std::collections::HashMap;

use serde_json::json;
use support::{Client, RawWs, Server, API_KEY};

/// A WebSocket publisher that pipelines `count` publishes to `channel`, then reads every reply.
async fn ws_publisher(server: &Server, id: u64, channel: &str, count: u64) -> Vec<u64> {
    let (mut p, _) = server.connect(&format!("/ws?api_key={API_KEY}")).await;
    for seq in 0..count {
        p.send_json(
            &json!({"event_type":"publish","message_id":format!("{id}-{seq}"),
            "data":{"channel":channel,"event_type":"tick","data":{"publisher":id,"seq":seq}}}),
        )
        .await;
    }
    let mut offsets = Vec::new();
    for _ in 0..count {
        let r = p.next_json().await;
        assert_eq!(r["event_type"], "publish", "{r}");
        offsets.push(r["data"]["results"][0]["offset"].as_u64().unwrap());
    }
    offsets
}

/// Reads `count` channel messages and checks offsets are exactly 1..=count and each
/// publisher's sequence numbers increase.
async fn read_in_order(c: &mut Client, count: u64) {
    let mut last_seq: HashMap<u64, u64> = HashMap::new();
    for expected in 1..=count {
        let m = c.next_json().await;
        assert_eq!(m["offset"], expected, "gap, duplicate or reorder: {m}");
        let p = m["data"]["publisher"].as_u64().unwrap();
        let seq = m["data"]["seq"].as_u64().unwrap();
        if let Some(prev) = last_seq.insert(p, seq) {
            assert_eq!(seq, prev + 1, "publisher {p} out of order");
        } else {
            assert_eq!(seq, 0);
        }
    }
}

#[tokio::test]
async fn three_concurrent_publishers_fifty_subscribers_two_shards_in_order() {
    let server = Server::start(&["--shards", "2"]);
    let mut subs = Vec::new();
    for _ in 0..50 {
        let (mut c, _) = server.connect("/ws").await;
        c.subscribe("scores").await;
        subs.push(c);
    }
    let s = server.stats().await;
    let shards = s["shards"].as_array().unwrap();
    assert!(
        shards
            .iter()
            .all(|x| x["connections"].as_u64().unwrap() > 0),
        "subscribers spread over both shards: {s}"
    );
    const PER: u64 = 200;
    let (a, b, c) = tokio::join!(
        ws_publisher(&server, 0, "scores", PER),
        ws_publisher(&server, 1, "scores", PER),
        ws_publisher(&server, 2, "scores", PER),
    );
    let mut all: Vec<u64> = a.into_iter().chain(b).chain(c).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=3 * PER).collect::<Vec<_>>(),
        "offsets assigned once each"
    );
    let readers = subs.into_iter().map(|mut c| {
        tokio::spawn(async move {
            read_in_order(&mut c, 3 * PER).await;
            c
        })
    });
    for r in readers {
        r.await.expect("subscriber task");
    }
    let s = server.stats().await;
    assert_eq!(s["messages_published"], 3 * PER);
    assert_eq!(s["messages_delivered"], 50 * 3 * PER);
}

#[tokio::test]
async fn joining_mid_stream_continues_right_after_the_reply_offset() {
    let server = Server::start(&[]);
    const TOTAL: u64 = 300;
    let publisher = {
        let (mut p, _) = server.connect(&format!("/ws?api_key={API_KEY}")).await;
        tokio::spawn(async move {
            for seq in 0..TOTAL {
                p.send_json(&json!({"event_type":"publish","message_id":seq.to_string(),
                    "data":{"channel":"live","event_type":"tick","data":{"publisher":0,"seq":seq}}}))
                    .await;
            }
            for _ in 0..TOTAL {
                p.next_json().await;
            }
        })
    };
    let mut joiners = Vec::new();
    for _ in 0..10 {
        let (mut c, _) = server.connect("/ws").await;
        let r = c.subscribe("live").await;
        joiners.push((c, r["data"]["offset"].as_u64().unwrap()));
    }
    publisher.await.unwrap();
    for (c, from) in &mut joiners {
        for expected in *from + 1..=TOTAL {
            let m = c.next_json().await;
            assert_eq!(m["offset"], expected, "joined after offset {from}: {m}");
        }
    }
}

#[tokio::test]
async fn slow_consumer_is_closed_and_others_get_everything_in_order() {
    let server = Server::start(&["--send-queue-bytes", "262144"]);
    // A subscriber that never reads. Its kernel buffers absorb a few MB (loopback: the server's
    // send buffer grows to 4 MiB, the unread receive window stays near 128 KiB).
    let mut stuck = RawWs::connect(server.addr, "/ws/games").await;
    stuck.read_ack().await;
    let (mut good, _) = server.connect("/ws/games").await;
    // 800 × 16 KiB ≈ 13 MB, in chunks paced on the good reader's progress, so the good reader
    // is never more than one chunk (128 KiB) behind while the stuck one falls behind for good.
    const COUNT: u64 = 800;
    const CHUNK: u64 = 8;
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        for expected in 1..=COUNT {
            let m = good.next_json().await;
            assert_eq!(m["offset"], expected, "gap, duplicate or reorder: {m}");
            let _ = progress_tx.send(expected);
        }
        good
    });
    let (mut p, _) = server.connect(&format!("/ws?api_key={API_KEY}")).await;
    let pad = "x".repeat(16 * 1024);
    for chunk in 0..COUNT / CHUNK {
        for seq in chunk * CHUNK..(chunk + 1) * CHUNK {
            p.send_json(&json!({"event_type":"publish","message_id":seq.to_string(),
                "data":{"channel":"games","event_type":"tick","data":{"seq":seq,"pad":pad}}}))
                .await;
        }
        for _ in 0..CHUNK {
            assert_eq!(p.next_json().await["event_type"], "publish");
        }
        let target = (chunk + 1) * CHUNK;
        tokio::time::timeout(support::WAIT, progress.wait_for(|&n| n >= target))
            .await
            .expect("good reader kept up")
            .expect("reader alive");
    }
    let mut good = reader.await.expect("good subscriber got all");

    let s = server
        .wait_stats("slow consumer closed", |s| {
            s["slow_consumer_disconnects"] == 1
        })
        .await;
    assert_eq!(s["slow_consumer_disconnects"], 1);
    // The stuck client now reads what reached it: a gapless prefix, then the end.
    let mut expected = 1;
    loop {
        match stuck.read_frame().await {
            Some((0x1, payload)) => {
                let m: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                assert_eq!(m["offset"], expected);
                expected += 1;
            }
            Some((0x8, payload)) => {
                assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4008);
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    assert!(expected <= COUNT, "the stuck client did not get everything");
    // The good client is still served.
    good.send_json(&json!({"event_type":"heartbeat","message_id":"still"}))
        .await;
    assert_eq!(good.next_json().await["reply_to"], "still");
    server
        .wait_stats("stuck connection freed", |s| s["connections"] == 2)
        .await;
}
