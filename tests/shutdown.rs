//! Graceful shutdown (PROTOCOL.md §1): on SIGTERM every client gets close code 1001 and the
//! process exits 0 within `--shutdown-grace`, even when a client never reads.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{client_frame, RawWs, Server};

/// `--shutdown-grace` used by these tests, and the slack allowed on top of it before exit.
const GRACE: Duration = Duration::from_secs(2);
const SLACK: Duration = Duration::from_secs(2);

#[tokio::test]
async fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let mut server = Server::start(&["--shutdown-grace", "2s"]);
    let addr = server.addr;
    let (mut a, _) = server.connect("/ws").await;
    let (mut b, _) = server.connect("/ws/games").await;
    let (mut c, _) = server.connect("/ws/game/7?user_id=u1").await;
    let mut raw = RawWs::connect(addr, "/ws").await;
    let sub = json!({"event_type": "user_subscription", "message_id": "s1",
                     "data": {"channel": "odds"}});
    raw.send_frame(true, 0x1, sub.to_string().as_bytes()).await;
    loop {
        let (op, p) = raw.read_frame().await.expect("subscribe reply");
        assert_eq!(op, 0x1);
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        if v["event_type"] == "user_subscription" {
            assert_eq!(v["data"]["status"], "subscribed", "{v}");
            break;
        }
    }
    let s = server.stats().await;
    assert_eq!(s["connections"], 4, "{s}");

    let t0 = Instant::now();
    server.sigterm();
    for (name, client) in [
        ("/ws", &mut a),
        ("/ws/games", &mut b),
        ("/ws/game/7", &mut c),
    ] {
        let (code, _) = client.recv_close().await;
        assert_eq!(code, 1001, "{name}");
    }
    assert_eq!(raw.read_close().await, Some(1001), "raw subscriber");
    // Answer like a well-behaved client, then hang up.
    raw.send_raw(&client_frame(true, 0x8, &1001u16.to_be_bytes()))
        .await;
    raw.wait_eof().await;
    drop((a, b, c, raw));

    let status = server.wait_exit((GRACE + SLACK).saturating_sub(t0.elapsed()));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "connect after exit succeeded");
}

#[tokio::test]
async fn client_that_never_reads_does_not_hold_shutdown() {
    // A large send queue so the stuck client is not closed as a slow consumer first.
    let mut server = Server::start(&["--shutdown-grace", "2s", "--send-queue-bytes", "268435456"]);
    let mut stuck = RawWs::connect(server.addr, "/ws/odds").await;
    stuck.read_ack().await;
    let (mut reader, _) = server.connect("/ws").await;
    // Fill the stuck client's socket buffers and leave frames queued in the server behind them.
    let pad = "x".repeat(512 * 1024);
    let published = 24;
    for i in 0..published {
        let r = server
            .post(
                "/api/publish",
                &json!({"channel": "odds", "event_type": "bulk", "data": {"i": i, "pad": pad}}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["results"][0]["recipients"], 1, "{}", r.text());
    }
    let s = server.stats().await;
    assert_eq!(
        s["connections"], 2,
        "the stuck client is still connected: {s}"
    );

    let t0 = Instant::now();
    server.sigterm();
    assert_eq!(reader.recv_close().await.0, 1001);
    drop(reader);
    let status = server.wait_exit(GRACE + SLACK);
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(
        t0.elapsed() <= GRACE + SLACK,
        "exit after {:?}",
        t0.elapsed()
    );
    // The stuck client's connection ends with the process, and what it can still read is less
    // than what was published: the server did not wait to flush it.
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        use tokio::io::AsyncReadExt;
        match tokio::time::timeout(support::WAIT, stuck.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received += n,
            Err(_) => panic!("stuck client's TCP connection did not end"),
        }
    }
    let total = published * pad.len();
    assert!(received < total, "received {received} of {total} bytes");
}
