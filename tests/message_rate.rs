//! `--message-rate` (PROTOCOL.md §9): excess client messages get `rate_limited` and are not
//! processed; refusals in each of 10 consecutive seconds close the connection with 4029.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Server, API_KEY};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn excess_messages_get_rate_limited_and_are_not_processed() {
    let server = Server::start(&["--message-rate", "5/s", "--message-burst", "5"]);
    let (mut c, _) = server.connect("/ws").await;
    for i in 0..20 {
        c.send_json(&json!({"event_type":"heartbeat","message_id":format!("h{i}")}))
            .await;
    }
    // Right behind them, with the bucket empty: a subscribe, refused and so not processed.
    c.send_json(
        &json!({"event_type":"user_subscription","message_id":"s","data":{"channel":"odds"}}),
    )
    .await;
    let (mut answered, mut limited) = (Vec::new(), 0);
    for _ in 0..21 {
        let m = c.next_json().await;
        match m["event_type"].as_str() {
            Some("heartbeat") => answered.push(m["reply_to"].as_str().unwrap().to_owned()),
            Some("error") => {
                assert_eq!(m["data"]["code"], "rate_limited", "{m}");
                limited += 1;
            }
            _ => panic!("unexpected {m}"),
        }
    }
    // The burst of 5 goes through (at most one more refills while the rest are sent).
    assert!((5..=6).contains(&answered.len()), "answered {answered:?}");
    assert_eq!(&answered[..5], ["h0", "h1", "h2", "h3", "h4"]);
    assert_eq!(limited, 21 - answered.len());
    let s = server.stats().await;
    assert_eq!(
        s["channels"], 0,
        "the refused subscribe was not processed: {s}"
    );
    // The connection goes on: once the bucket refills, messages are answered again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.send_json(&json!({"event_type":"heartbeat","message_id":"later"}))
        .await;
    loop {
        let m = c.next_json().await;
        if m["reply_to"] == "later" {
            assert_eq!(m["event_type"], "heartbeat");
            break;
        }
    }
}

#[tokio::test]
async fn api_key_publishers_are_not_rate_limited() {
    let server = Server::start(&["--message-rate", "5/s", "--message-burst", "5"]);
    let (mut p, _) = server.connect(&format!("/ws?api_key={API_KEY}")).await;
    for i in 0..30 {
        p.send_json(&json!({"event_type":"heartbeat","message_id":format!("h{i}")}))
            .await;
    }
    for i in 0..30 {
        let m = p.next_json().await;
        assert_eq!(m["event_type"], "heartbeat", "{m}");
        assert_eq!(m["reply_to"], format!("h{i}"));
    }
}

#[tokio::test]
async fn refusals_in_ten_consecutive_seconds_close_with_4029() {
    let server = Server::start(&["--message-rate", "1/s", "--message-burst", "1"]);
    let (c, _) = server.connect("/ws").await;
    let (mut sink, mut stream) = futures_util::StreamExt::split(c.ws);
    let start = Instant::now();
    // Three messages every 250 ms: over 1/s in every second.
    let writer = tokio::spawn(async move {
        use futures_util::SinkExt;
        while start.elapsed() < Duration::from_secs(14) {
            for _ in 0..3 {
                let m = json!({"event_type":"heartbeat"}).to_string();
                if sink.send(Message::Text(m)).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let code = loop {
        let next = tokio::time::timeout(support::WAIT, futures_util::StreamExt::next(&mut stream))
            .await
            .expect("a close within the wait");
        match next {
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(Message::Close(None))) | Some(Err(_)) | None => {
                panic!("ended without a close code")
            }
            Some(Ok(_)) => {}
        }
    };
    let after = start.elapsed();
    assert_eq!(code, 4029);
    assert!(
        after >= Duration::from_secs(8) && after <= Duration::from_millis(11_500),
        "closed {after:?} after the first refusal"
    );
    writer.abort();
}
