//! Liveness (PROTOCOL.md §5): heartbeat replies, server pings after silence, and expiry with
//! close code 4001 for connections that send no frame for `--heartbeat-timeout`.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Client, RawWs, Received, Server};

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[b.len() - 1] == b'Z'
        && (b.len() == 20 || (b[19] == b'.' && b.len() > 21 && digits(20..b.len() - 1)))
}

async fn heartbeat(c: &mut Client, id: &str) {
    c.send_json(&json!({"event_type": "heartbeat", "message_id": id}))
        .await;
    let r = c.next_json().await;
    assert_eq!(r["event_type"], "heartbeat", "{r}");
    assert_eq!(r["reply_to"], id, "{r}");
}

#[tokio::test]
async fn heartbeat_is_answered_with_server_time() {
    let server = Server::start(&[]);
    let (mut c, _) = server.connect("/ws").await;
    c.send_json(&json!({"event_type": "heartbeat", "message_id": "h1"}))
        .await;
    let r = c.next_json().await;
    assert_eq!(r["event_type"], "heartbeat", "{r}");
    assert_eq!(r["reply_to"], "h1", "{r}");
    let t = r["data"]["server_time"].as_str().expect("server_time");
    assert!(is_rfc3339_utc(t), "server_time {t:?}");
    assert!(&t[..4] >= "2024", "server_time {t:?}");

    c.send_json(&json!({"event_type": "heartbeat"})).await;
    let r = c.next_json().await;
    assert_eq!(r["event_type"], "heartbeat", "{r}");
    assert!(
        r.get("reply_to").is_none(),
        "no message_id, no reply_to: {r}"
    );
    assert!(
        r["data"]["server_time"]
            .as_str()
            .is_some_and(is_rfc3339_utc),
        "{r}"
    );
}

#[test]
fn rfc3339_check_itself() {
    assert!(is_rfc3339_utc("2026-11-25T18:04:05.123Z"));
    assert!(is_rfc3339_utc("2026-11-25T18:04:05Z"));
    assert!(!is_rfc3339_utc("2026-11-25T18:04:05.123+00:00"));
    assert!(!is_rfc3339_utc("2026-11-25 18:04:05Z"));
    assert!(!is_rfc3339_utc("2026-11-25T18:04:05.Z"));
}

#[tokio::test]
async fn ack_reports_fractional_seconds() {
    let server = Server::start(&[
        "--heartbeat-interval",
        "250ms",
        "--heartbeat-timeout",
        "750ms",
    ]);
    let (_c, ack) = server.connect("/ws").await;
    assert_eq!(ack["data"]["heartbeat_interval"], json!(0.25), "{ack}");
    assert_eq!(ack["data"]["heartbeat_timeout"], json!(0.75), "{ack}");
}

#[tokio::test]
async fn server_pings_after_heartbeat_interval_of_silence() {
    let server = Server::start(&[
        "--heartbeat-interval",
        "300ms",
        "--heartbeat-timeout",
        "10s",
    ]);
    let t0 = Instant::now();
    let (mut c, _) = server.connect("/ws").await;
    match c.recv().await {
        Received::Ping => {}
        other => panic!("expected a server ping, got {other:?}"),
    }
    let after = t0.elapsed();
    assert!(after >= Duration::from_millis(300), "ping after {after:?}");
    // Answering it (tungstenite does on the next read) keeps the connection served.
    heartbeat(&mut c, "after ping").await;
}

#[tokio::test]
async fn silent_connection_expires_with_4001() {
    let server = Server::start(&["--heartbeat-timeout", "1s", "--heartbeat-interval", "30s"]);
    let t0 = Instant::now();
    // RawWs never answers pings (and with a 30 s interval none is sent before the timeout).
    let mut raw = RawWs::connect(server.addr, "/ws/odds").await;
    assert_eq!(raw.read_close().await, Some(4001));
    let after = t0.elapsed();
    assert!(
        after >= Duration::from_secs(1) && after <= Duration::from_millis(2500),
        "4001 after {after:?}"
    );
    raw.wait_eof().await;
    drop(raw);
    let s = server
        .wait_stats("zero connections", |s| s["connections"] == 0)
        .await;
    assert_eq!(s["heartbeat_expiries"], 1, "{s}");
    assert_eq!(s["channels"], 0, "its subscription is freed: {s}");
}

#[tokio::test]
async fn pings_from_the_client_keep_it_alive() {
    let server = Server::start(&["--heartbeat-timeout", "1s", "--heartbeat-interval", "30s"]);
    let mut raw = RawWs::connect(server.addr, "/ws").await;
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(3) {
        let payload = format!("p{i}");
        raw.send_frame(true, 0x9, payload.as_bytes()).await;
        loop {
            match raw.read_frame().await {
                Some((0xA, p)) if p == payload.as_bytes() => break,
                Some((0x8, p)) => panic!("closed while pinging after {:?}: {p:?}", start.elapsed()),
                Some(_) => {}
                None => panic!("connection ended while pinging"),
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(i >= 5, "{i} pings sent");
    let stopped = Instant::now();
    assert_eq!(raw.read_close().await, Some(4001));
    let after = stopped.elapsed();
    assert!(
        after <= Duration::from_millis(2500),
        "4001 {after:?} after the last ping"
    );
    raw.wait_eof().await;
}

#[tokio::test]
async fn unsolicited_pongs_keep_it_alive() {
    let server = Server::start(&["--heartbeat-timeout", "1s", "--heartbeat-interval", "30s"]);
    let mut raw = RawWs::connect(server.addr, "/ws").await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        raw.send_frame(true, 0xA, b"still here").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Nothing was read meanwhile: a 4001 would come before the answer to this ping.
    raw.send_frame(true, 0x9, b"check").await;
    loop {
        match raw.read_frame().await {
            Some((0xA, p)) => {
                assert_eq!(p, b"check");
                break;
            }
            Some((0x1, _)) => {} // connection_ack
            other => panic!("expected the pong, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn heartbeat_messages_keep_it_alive() {
    let server = Server::start(&["--heartbeat-timeout", "1s", "--heartbeat-interval", "30s"]);
    let (mut c, _) = server.connect("/ws").await;
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(3) {
        heartbeat(&mut c, &format!("hb{i}")).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let stopped = Instant::now();
    assert_eq!(c.recv_close().await.0, 4001);
    let after = stopped.elapsed();
    assert!(
        after <= Duration::from_millis(2500),
        "4001 {after:?} after the last heartbeat"
    );
}

#[tokio::test]
async fn client_answering_server_pings_stays_connected() {
    let server = Server::start(&["--heartbeat-interval", "300ms", "--heartbeat-timeout", "1s"]);
    let (mut c, _) = server.connect("/ws").await;
    let end = Instant::now() + Duration::from_secs(3);
    let mut pings = 0;
    // Keep reading (tungstenite answers pings while it reads) but send nothing ourselves.
    while let Ok(next) = tokio::time::timeout_at(end.into(), c.recv()).await {
        match next {
            Received::Ping => pings += 1,
            other => panic!("expected only pings, got {other:?}"),
        }
    }
    assert!(pings >= 2, "{pings} server pings in 3 s");
    heartbeat(&mut c, "still here").await;
    let s = server.stats().await;
    assert_eq!(s["heartbeat_expiries"], 0, "{s}");
}
