//! Close codes (PROTOCOL.md §11) for every kind of bad or closing client input, and the HTTP
//! answers to refused upgrades (§2, §9 first line): each bad input affects only its own connection.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use support::{client_frame, Client, HttpResponse, RawWs, Received, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// The RFC 6455 §1.3 sample key and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Sends a heartbeat with `id` and expects its reply: the connection is still served.
async fn assert_alive(c: &mut Client, id: &str) {
    c.send_json(&json!({"event_type": "heartbeat", "message_id": id}))
        .await;
    let r = c.next_json().await;
    assert_eq!(r["event_type"], "heartbeat", "{id}: {r}");
    assert_eq!(r["reply_to"], id, "{id}: {r}");
}

/// Opens a raw connection, sends `bytes`, and expects close `code` then the end of the TCP
/// connection; `witness` (opened earlier) must still be served afterwards.
async fn closes_with(server: &Server, witness: &mut Client, what: &str, bytes: &[u8], code: u16) {
    let mut raw = RawWs::connect(server.addr, "/ws").await;
    raw.send_raw(bytes).await;
    assert_eq!(raw.read_close().await, Some(code), "{what}");
    raw.wait_eof().await;
    assert_alive(witness, what).await;
}

/// Waits until the server reports no connection left (the clients were dropped by the caller).
async fn wait_no_connections(server: &Server) {
    server
        .wait_stats("zero connections", |s| s["connections"] == 0)
        .await;
}

#[tokio::test]
async fn client_close_codes_are_echoed() {
    let server = Server::start(&[]);
    let (mut witness, _) = server.connect("/ws").await;

    for code in [1000u16, 4321] {
        let (mut c, _) = server.connect("/ws/games").await;
        c.close(code).await;
        match c.recv().await {
            Received::Close(Some((got, _))) => assert_eq!(got, code),
            other => panic!("expected close {code}, got {other:?}"),
        }
        assert!(matches!(c.recv().await, Received::Ended));
    }

    // The same over raw TCP, where the end of the TCP connection is visible.
    for code in [1000u16, 4321] {
        let mut raw = RawWs::connect(server.addr, "/ws").await;
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(b"done");
        raw.send_frame(true, 0x8, &body).await;
        assert_eq!(raw.read_close().await, Some(code));
        raw.wait_eof().await;
    }

    // An empty close body is answered with an empty close body.
    let mut raw = RawWs::connect(server.addr, "/ws").await;
    raw.send_frame(true, 0x8, b"").await;
    assert_eq!(raw.read_close().await, None, "empty close echoed empty");
    raw.wait_eof().await;

    assert_alive(&mut witness, "after closes").await;
    drop(witness);
    wait_no_connections(&server).await;
}

#[tokio::test]
async fn protocol_errors_close_with_1002() {
    let server = Server::start(&[]);
    let (mut witness, _) = server.connect("/ws").await;

    // Unmasked text frame "hi".
    closes_with(
        &server,
        &mut witness,
        "unmasked",
        &[0x81, 0x02, b'h', b'i'],
        1002,
    )
    .await;

    let mut rsv1 = client_frame(true, 0x1, b"{}");
    rsv1[0] |= 0x40;
    closes_with(&server, &mut witness, "rsv1", &rsv1, 1002).await;

    for op in [0x3u8, 0xB] {
        let what = format!("opcode {op:#x}");
        closes_with(
            &server,
            &mut witness,
            &what,
            &client_frame(true, op, b""),
            1002,
        )
        .await;
    }

    let big_ping = client_frame(true, 0x9, &[b'p'; 126]);
    closes_with(&server, &mut witness, "ping of 126 bytes", &big_ping, 1002).await;

    let cont = client_frame(true, 0x0, b"orphan");
    closes_with(
        &server,
        &mut witness,
        "continuation without start",
        &cont,
        1002,
    )
    .await;

    let one_byte_close = client_frame(true, 0x8, &[0x03]);
    closes_with(
        &server,
        &mut witness,
        "close body of 1 byte",
        &one_byte_close,
        1002,
    )
    .await;

    for code in [1005u16, 999] {
        let what = format!("close code {code}");
        let frame = client_frame(true, 0x8, &code.to_be_bytes());
        closes_with(&server, &mut witness, &what, &frame, 1002).await;
    }

    drop(witness);
    wait_no_connections(&server).await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let server = Server::start(&[]);
    let (mut witness, _) = server.connect("/ws").await;

    // "κόσμε" with a UTF-16 surrogate (ED A0 80) appended: not UTF-8.
    let bad = [
        0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80,
    ];
    let text = client_frame(true, 0x1, &bad);
    closes_with(&server, &mut witness, "text not utf-8", &text, 1007).await;

    let close = client_frame(true, 0x8, &[0x03, 0xe8, b'o', b'k', 0xff, 0xfe]);
    closes_with(
        &server,
        &mut witness,
        "close reason not utf-8",
        &close,
        1007,
    )
    .await;

    drop(witness);
    wait_no_connections(&server).await;
}

#[tokio::test]
async fn oversized_messages_close_with_1009() {
    let server = Server::start(&["--max-message-size", "1024"]);
    let (mut witness, _) = server.connect("/ws").await;

    // Control: a message just under the limit is served.
    let mut raw = RawWs::connect(server.addr, "/ws").await;
    let pad = "x".repeat(900);
    let ok = json!({"event_type": "heartbeat", "message_id": "fits", "data": {"pad": pad}});
    let ok = ok.to_string();
    assert!(ok.len() < 1024);
    raw.send_frame(true, 0x1, ok.as_bytes()).await;
    let reply = loop {
        match raw.read_frame().await {
            Some((0x1, p)) => {
                let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
                if v["event_type"] == "heartbeat" {
                    break v;
                }
            }
            Some((0x8, p)) => panic!("closed on a message under the limit: {p:?}"),
            Some(_) => {}
            None => panic!("connection ended"),
        }
    };
    assert_eq!(reply["reply_to"], "fits");
    drop(raw);

    let big = client_frame(true, 0x1, &[b'a'; 2000]);
    closes_with(&server, &mut witness, "2000-byte message", &big, 1009).await;

    // Only a header announcing 2^32 bytes (64-bit length, masked): refused without the payload.
    let mut header = vec![0x81u8, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 32).to_be_bytes());
    header.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    closes_with(&server, &mut witness, "4 GiB header", &header, 1009).await;

    // Two fragments of 600 bytes: each fits, their sum does not.
    let mut frags = client_frame(false, 0x1, &[b'a'; 600]);
    frags.extend(client_frame(true, 0x0, &[b'a'; 600]));
    closes_with(
        &server,
        &mut witness,
        "fragments over the limit",
        &frags,
        1009,
    )
    .await;

    drop(witness);
    wait_no_connections(&server).await;
}

#[tokio::test]
async fn code_point_split_across_fragments_is_accepted() {
    let server = Server::start(&[]);
    let mut raw = RawWs::connect(server.addr, "/ws").await;
    let msg = r#"{"event_type":"heartbeat","message_id":"é"}"#.as_bytes();
    let split = msg.iter().position(|&b| b == 0xc3).unwrap() + 1;
    raw.send_frame(false, 0x1, &msg[..split]).await;
    raw.send_frame(true, 0x0, &msg[split..]).await;
    loop {
        match raw.read_frame().await {
            Some((0x1, p)) => {
                let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
                if v["event_type"] == "heartbeat" {
                    assert_eq!(v["reply_to"], "é", "{v}");
                    break;
                }
                assert_eq!(v["event_type"], "connection_ack", "{v}");
            }
            other => panic!("expected the heartbeat reply, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn client_ping_gets_pong_with_same_payload() {
    let server = Server::start(&[]);
    let mut raw = RawWs::connect(server.addr, "/ws").await;
    raw.send_frame(true, 0x9, b"are you there?").await;
    loop {
        match raw.read_frame().await {
            Some((0xA, p)) => {
                assert_eq!(p, b"are you there?");
                break;
            }
            Some((0x1, _)) => {} // connection_ack
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    // An empty ping gets an empty pong.
    raw.send_frame(true, 0x9, b"").await;
    assert_eq!(raw.read_frame().await, Some((0xA, Vec::new())));
}

#[tokio::test]
async fn binary_message_is_an_error_event_not_a_close() {
    let server = Server::start(&[]);
    let (mut c, _) = server.connect("/ws").await;
    c.ws.send(Message::Binary(vec![1, 2, 3])).await.unwrap();
    let e = c.next_json().await;
    assert_eq!(e["event_type"], "error", "{e}");
    assert_eq!(e["data"]["code"], "invalid_message", "{e}");
    assert!(e["data"]["message"].is_string(), "{e}");
    assert_alive(&mut c, "after binary").await;
}

/// An upgrade request head, editable header by header.
struct Upgrade {
    method: &'static str,
    path: &'static str,
    version: &'static str,
    headers: Vec<(String, String)>,
}

impl Upgrade {
    fn new(server: &Server) -> Upgrade {
        let headers = [
            ("Host", server.addr.to_string()),
            ("Upgrade", "websocket".into()),
            ("Connection", "Upgrade".into()),
            ("Sec-WebSocket-Key", KEY.into()),
            ("Sec-WebSocket-Version", "13".into()),
        ];
        Upgrade {
            method: "GET",
            path: "/ws",
            version: "HTTP/1.1",
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }
    }

    fn set(mut self, name: &str, value: &str) -> Upgrade {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn without(mut self, name: &str) -> Upgrade {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {} {}\r\n", self.method, self.path, self.version);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    /// Sends the request and reads the response head (plus a Content-Length body). Does not wait
    /// for the connection to end: a 101 keeps it open.
    async fn send(&self, server: &Server) -> HttpResponse {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        // The server may answer (and close) before reading an oversized head: ignore write errors.
        let _ = s.write_all(&self.bytes()).await;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let resp = support::parse_response(&buf);
                let want: usize = resp
                    .header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + want {
                    return resp;
                }
            }
            match tokio::time::timeout(support::WAIT, s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return support::parse_response(&buf),
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => panic!("no response; got {:?}", String::from_utf8_lossy(&buf)),
            }
        }
    }
}

#[tokio::test]
async fn bad_handshakes_are_refused_with_the_right_status() {
    let server = Server::start(&[]);
    let (mut witness, _) = server.connect("/ws").await;

    let ok = Upgrade::new(&server).send(&server).await;
    assert_eq!(ok.status, 101, "control: the base request is valid");
    assert_eq!(ok.header("sec-websocket-accept"), Some(ACCEPT));

    let r = Upgrade::new(&server)
        .set("Sec-WebSocket-Version", "8")
        .send(&server)
        .await;
    assert_eq!(r.status, 426, "version 8: {}", r.text());
    assert_eq!(r.header("sec-websocket-version"), Some("13"));

    let r = Upgrade::new(&server)
        .without("Sec-WebSocket-Key")
        .send(&server)
        .await;
    assert_eq!(r.status, 400, "missing key: {}", r.text());

    let r = Upgrade::new(&server)
        .set("Sec-WebSocket-Key", "not-a-valid-key")
        .send(&server)
        .await;
    assert_eq!(r.status, 400, "malformed key: {}", r.text());

    let mut post = Upgrade::new(&server);
    post.method = "POST";
    let r = post.set("Content-Length", "0").send(&server).await;
    assert_eq!(r.status, 405, "POST: {}", r.text());

    let mut old = Upgrade::new(&server);
    old.version = "HTTP/1.0";
    let r = old.send(&server).await;
    assert_eq!(r.status, 400, "HTTP/1.0: {}", r.text());

    let r = Upgrade::new(&server).without("Host").send(&server).await;
    assert_eq!(r.status, 400, "missing Host: {}", r.text());

    let r = Upgrade::new(&server)
        .set("Connection", "keep-alive, Upgrade")
        .send(&server)
        .await;
    assert_eq!(r.status, 101, "Connection: keep-alive, Upgrade");
    assert_eq!(r.header("sec-websocket-accept"), Some(ACCEPT));

    let big = "a".repeat(20 * 1024);
    let r = Upgrade::new(&server).set("X-Big", &big).send(&server).await;
    assert_eq!(r.status, 431, "20 KiB header: {}", r.text());

    // The same checks also hold through the plain helper (Connection: close, no upgrade): 426.
    let r = server.http("GET", "/ws/odds", &[], b"").await;
    assert_eq!(r.status, 426);

    assert_alive(&mut witness, "after refusals").await;
    drop(witness);
    wait_no_connections(&server).await;
}

#[tokio::test]
async fn origins_outside_the_allowed_list_get_403() {
    let server = Server::start(&["--allowed-origins", "https://ok.example"]);
    let r = Upgrade::new(&server)
        .set("Origin", "https://evil.example")
        .send(&server)
        .await;
    assert_eq!(r.status, 403, "evil origin: {}", r.text());
    // No Origin header: not a browser, so not a cross-site request (PROTOCOL.md §2).
    let r = Upgrade::new(&server).send(&server).await;
    assert_eq!(r.status, 101, "no origin: {}", r.text());
    for same in [
        "https://ok.example",
        "https://OK.Example",
        "https://ok.example/",
    ] {
        let r = Upgrade::new(&server)
            .set("Origin", same)
            .send(&server)
            .await;
        assert_eq!(r.status, 101, "allowed origin {same}");
    }
    wait_no_connections(&server).await;
}

#[tokio::test]
async fn upgrades_beyond_conn_rate_get_429_with_retry_after() {
    let server = Server::start(&["--conn-rate", "2/min"]);
    let (mut a, _) = server.connect("/ws").await;
    let (b, _) = server.connect("/ws/odds").await;
    drop(b);

    let r = Upgrade::new(&server).send(&server).await;
    assert_eq!(r.status, 429, "third upgrade: {}", r.text());
    let retry = r.header("retry-after").expect("Retry-After header");
    let secs: u64 = retry
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After {retry:?}"));
    assert!(secs > 0 && secs <= 60, "Retry-After {secs}");

    let s = server.stats().await;
    assert!(s["rate_limited_upgrades"].as_u64().unwrap() >= 1, "{s}");

    // Plain HTTP is not rate limited.
    for _ in 0..5 {
        let h = server.http("GET", "/healthz", &[], b"").await;
        assert_eq!(h.status, 200);
        assert_eq!(server.get("/api/channels").await.status, 200);
    }
    // The connection that got in is unaffected.
    assert_alive(&mut a, "after 429").await;
    drop(a);
    wait_no_connections(&server).await;
}

#[tokio::test]
async fn bad_frame_does_not_disturb_a_busy_neighbour() {
    // A neighbour in the middle of a fragmented message keeps its state while another
    // connection is failed.
    let server = Server::start(&[]);
    let mut neighbour = RawWs::connect(server.addr, "/ws").await;
    let msg = br#"{"event_type":"heartbeat","message_id":"n1"}"#;
    neighbour.send_frame(false, 0x1, &msg[..10]).await;

    let mut bad = RawWs::connect(server.addr, "/ws").await;
    bad.send_raw(&[0x81, 0x01, b'x']).await; // unmasked
    assert_eq!(bad.read_close().await, Some(1002));
    bad.wait_eof().await;

    neighbour.send_frame(true, 0x0, &msg[10..]).await;
    let reply = loop {
        match tokio::time::timeout(Duration::from_secs(5), neighbour.read_frame()).await {
            Ok(Some((0x1, p))) => {
                let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
                if v["event_type"] == "heartbeat" {
                    break v;
                }
            }
            other => panic!("expected the heartbeat reply, got {other:?}"),
        }
    };
    assert_eq!(reply["reply_to"], "n1");
}

#[tokio::test]
async fn many_small_headers_over_16_kib_get_431() {
    let server = Server::start(&[]);
    let mut req = Upgrade::new(&server);
    // 90 headers of ~200 bytes: under hyper's header-count limit, over 16 KiB in total.
    for i in 0..90 {
        req = req.set(&format!("X-Filler-{i}"), &"f".repeat(190));
    }
    assert!(req.bytes().len() > 16 * 1024);
    let r = req.send(&server).await;
    assert_eq!(r.status, 431, "{}", r.text());
}

#[tokio::test]
async fn slow_request_heads_are_disconnected() {
    let server = Server::start(&["--handshake-timeout", "500ms"]);
    for (what, partial) in [
        ("partial head", &b"GET /ws HTTP/1.1\r\nHost: x\r\n"[..]),
        ("nothing sent", &b""[..]),
    ] {
        let t0 = std::time::Instant::now();
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(partial).await.unwrap();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "{what}: still connected after 5 s");
        assert!(
            t0.elapsed() >= Duration::from_millis(400),
            "{what}: closed after {:?}",
            t0.elapsed()
        );
    }
}
