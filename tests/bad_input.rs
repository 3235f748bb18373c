//! The bad-input battery: hostile or malformed handshakes (PROTOCOL.md §2), frames (§11) and
//! messages (§4), beyond the samples in `close_codes.rs`.
//!
//! Every case checks the exact HTTP status, close code or error code, and then, through
//! [`Witness`]: a connection opened before the bad input still gets heartbeat replies and channel
//! messages, a fresh connection still gets its `connection_ack`, and the server's connection
//! count returns to the witness alone (zero at the end of each test).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{client_frame, parse_response, Client, HttpResponse, RawWs, Server, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The RFC 6455 §1.3 sample key and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Channel the witness listens on.
const WITNESS_CHANNEL: &str = "witness";

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// The witness: open before the bad input, checked after it
// ---------------------------------------------------------------------------------------------

/// A connection opened before any bad input, subscribed to [`WITNESS_CHANNEL`].
struct Witness<'a> {
    server: &'a Server,
    client: Client,
    /// Messages published to the witness channel so far (= the offset of the last one).
    published: u64,
}

impl<'a> Witness<'a> {
    async fn open(server: &'a Server) -> Witness<'a> {
        let (mut client, _) = server.connect("/ws").await;
        client.subscribe(WITNESS_CHANNEL).await;
        Witness {
            server,
            client,
            published: 0,
        }
    }

    /// After one bad input (whose connection has ended): see [`Witness::check_with`].
    async fn check(&mut self, what: &str) {
        self.check_with(what, 0).await;
    }

    /// The witness answers a heartbeat and receives a published message, a fresh connection
    /// gets `connection_ack`, and the server counts the witness plus `others` connections.
    async fn check_with(&mut self, what: &str, others: u64) {
        assert_alive(&mut self.client, &format!("witness after {what}")).await;

        let r = self
            .server
            .post(
                "/api/publish",
                &json!({"channel": WITNESS_CHANNEL, "event_type": "probe", "data": {"after": what}}),
            )
            .await;
        assert_eq!(r.status, 200, "publish after {what}: {}", r.text());
        self.published += 1;
        let m = self.client.next_json().await;
        assert_eq!(m["event_type"], "probe", "witness after {what}: {m}");
        assert_eq!(m["channel"], WITNESS_CHANNEL, "{m}");
        assert_eq!(m["offset"], self.published, "witness after {what}: {m}");
        assert_eq!(m["data"]["after"], what, "{m}");

        // Server::connect asserts the connection_ack.
        let (fresh, _) = self.server.connect("/ws").await;
        drop(fresh);

        let want = 1 + others;
        self.server
            .wait_stats(&format!("{want} connection(s) after {what}"), |s| {
                s["connections"] == want
            })
            .await;
    }

    /// Closes the witness; the server must end at zero connections.
    async fn finish(self) {
        drop(self.client);
        self.server
            .wait_stats("zero connections", |s| s["connections"] == 0)
            .await;
    }
}

/// Sends a heartbeat with a `message_id` and expects its reply as the very next message.
async fn assert_alive(c: &mut Client, what: &str) {
    let id = format!("alive-{what}");
    c.send_json(&json!({"event_type": "heartbeat", "message_id": id}))
        .await;
    let r = c.next_json().await;
    assert_eq!(r["event_type"], "heartbeat", "{what}: {r}");
    assert_eq!(r["reply_to"], id, "{what}: {r}");
    assert!(r["data"]["server_time"].is_string(), "{what}: {r}");
}

/// A message cut to 300 characters for assertion output.
fn short(v: &Value) -> String {
    v.to_string().chars().take(300).collect()
}

/// Resident set size or peak (`VmRSS:` / `VmHWM:`) of a process, in bytes.
fn mem(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kib * 1024
}

// ---------------------------------------------------------------------------------------------
// Raw frames
// ---------------------------------------------------------------------------------------------

/// A masked frame with a hand-written length field (`len[0]` is the 7-bit length, without the
/// mask bit; extended length bytes follow), for encodings `client_frame` never produces.
fn frame_with_len(first: u8, len: &[u8], payload: &[u8]) -> Vec<u8> {
    let mask = [0x5au8, 0x11, 0xc3, 0x07];
    let mut f = vec![first, 0x80 | len[0]];
    f.extend_from_slice(&len[1..]);
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Takes one complete server frame off the front of `buf`: (opcode, payload).
fn take_frame(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames are never masked");
    let (len, hdr) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < hdr + len {
        return None;
    }
    let op = buf[0] & 0x0f;
    let payload = buf[hdr..hdr + len].to_vec();
    buf.drain(..hdr + len);
    Some((op, payload))
}

/// The next server frame; None once the TCP connection has ended (EOF or reset: the server
/// may reset a connection it closed while our bytes were still unread).
async fn next_frame(raw: &mut RawWs) -> Option<(u8, Vec<u8>)> {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Some(f) = take_frame(&mut raw.buf) {
            return Some(f);
        }
        match tokio::time::timeout(WAIT, raw.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => raw.buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("timed out waiting for a frame"),
        }
    }
}

/// Skips data frames up to the server's close frame; returns its code (None: empty body).
async fn close_code(raw: &mut RawWs, what: &str) -> Option<u16> {
    loop {
        match next_frame(raw).await {
            Some((0x8, p)) if p.len() >= 2 => return Some(u16::from_be_bytes([p[0], p[1]])),
            Some((0x8, _)) => return None,
            Some(_) => {}
            None => panic!("{what}: connection ended without a close frame"),
        }
    }
}

/// Expects the server to end the TCP connection without sending another frame.
async fn expect_end(raw: &mut RawWs, what: &str) {
    if let Some(f) = next_frame(raw).await {
        panic!("{what}: expected the end of the connection, got frame {f:?}");
    }
}

/// Opens a raw connection and reads its `connection_ack`.
async fn raw_connect(server: &Server) -> RawWs {
    let mut raw = RawWs::connect(server.addr, "/ws").await;
    let (op, p) = next_frame(&mut raw).await.expect("connection_ack");
    assert_eq!(op, 0x1);
    let v: Value = serde_json::from_slice(&p).expect("JSON ack");
    assert_eq!(v["event_type"], "connection_ack", "{v}");
    raw
}

/// On a raw connection: a heartbeat gets its reply (the connection is served).
async fn raw_alive(raw: &mut RawWs, id: &str) {
    let msg = json!({"event_type": "heartbeat", "message_id": id}).to_string();
    raw.send_frame(true, 0x1, msg.as_bytes()).await;
    loop {
        match next_frame(raw).await {
            Some((0x1, p)) => {
                let v: Value = serde_json::from_slice(&p).expect("JSON");
                if v["event_type"] == "heartbeat" {
                    assert_eq!(v["reply_to"], id, "{v}");
                    return;
                }
                panic!("{id}: unexpected message {v}");
            }
            Some((0x9 | 0xA, _)) => {}
            other => panic!("{id}: expected the heartbeat reply, got {other:?}"),
        }
    }
}

/// Opens a raw connection, sends `bytes` (write errors after the server closed are fine),
/// expects close `code` and the end of the connection, then checks the witness.
async fn closes_with(witness: &mut Witness<'_>, what: &str, bytes: &[u8], code: u16) {
    let mut raw = raw_connect(witness.server).await;
    let _ = raw.stream.write_all(bytes).await;
    assert_eq!(close_code(&mut raw, what).await, Some(code), "{what}");
    expect_end(&mut raw, what).await;
    drop(raw);
    witness.check(what).await;
}

// ---------------------------------------------------------------------------------------------
// Handshakes
// ---------------------------------------------------------------------------------------------

/// `GET /ws` with a Host header and then exactly `lines` as header lines.
fn request(addr: SocketAddr, lines: &[&[u8]]) -> Vec<u8> {
    let mut r = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n").into_bytes();
    for l in lines {
        r.extend_from_slice(l);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r
}

/// The header lines of a valid upgrade (after Host).
fn valid_lines() -> Vec<Vec<u8>> {
    [
        "Upgrade: websocket".to_owned(),
        "Connection: Upgrade".to_owned(),
        format!("Sec-WebSocket-Key: {KEY}"),
        "Sec-WebSocket-Version: 13".to_owned(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

/// Sends a request head and reads the response head plus its Content-Length body. Returns the
/// response and the connection with any bytes after the response (frames, after a 101).
async fn send_head(addr: SocketAddr, req: &[u8]) -> (HttpResponse, RawWs) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    send_head_on(stream, req).await
}

/// [`send_head`] on an already connected stream.
async fn send_head_on(mut stream: TcpStream, req: &[u8]) -> (HttpResponse, RawWs) {
    // The server may answer and close before it has read everything: ignore write errors.
    let _ = stream.write_all(req).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let mut resp = parse_response(&buf[..end + 4]);
            let body: usize = match resp.status {
                101 => 0,
                _ => resp
                    .header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            };
            if buf.len() >= end + 4 + body {
                resp.body = buf[end + 4..end + 4 + body].to_vec();
                let rest = buf[end + 4 + body..].to_vec();
                return (resp, RawWs { stream, buf: rest });
            }
        }
        match tokio::time::timeout(WAIT, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => panic!(
                "connection ended before a complete response: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no response; got {:?}", String::from_utf8_lossy(&buf)),
        }
    }
}

#[tokio::test]
async fn bad_upgrade_requests_get_the_documented_status() {
    let server = Server::start(&[]);
    let mut witness = Witness::open(&server).await;

    let key = format!("Sec-WebSocket-Key: {KEY}");
    let other_key = "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==";
    let common: [&[u8]; 2] = [b"Connection: Upgrade", b"Sec-WebSocket-Version: 13"];
    let with = |extra: &[&[u8]]| -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = common.iter().map(|l| l.to_vec()).collect();
        lines.extend(extra.iter().map(|l| l.to_vec()));
        lines
    };
    // 2,000 tiny headers: about 12 KiB, under the 16 KiB head limit, so the count alone is refused.
    let mut many = valid_lines();
    many.extend((0..2000).map(|_| b"a: b".to_vec()));

    let cases: Vec<(&str, Vec<Vec<u8>>, u16)> = vec![
        (
            "Upgrade: h2c",
            with(&[b"Upgrade: h2c", key.as_bytes()]),
            426,
        ),
        (
            "h2c upgrade with HTTP2-Settings",
            vec![
                b"Upgrade: h2c".to_vec(),
                b"Connection: Upgrade, HTTP2-Settings".to_vec(),
                b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA".to_vec(),
            ],
            426,
        ),
        (
            "two different Sec-WebSocket-Key headers",
            with(&[b"Upgrade: websocket", key.as_bytes(), other_key.as_bytes()]),
            400,
        ),
        (
            "the same Sec-WebSocket-Key twice",
            with(&[b"Upgrade: websocket", key.as_bytes(), key.as_bytes()]),
            400,
        ),
        (
            "Sec-WebSocket-Key of 15 bytes",
            with(&[
                b"Upgrade: websocket",
                b"Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4P",
            ]),
            400,
        ),
        (
            "Sec-WebSocket-Key of 17 bytes",
            with(&[
                b"Upgrade: websocket",
                b"Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEBE=",
            ]),
            400,
        ),
        ("2,000 headers", many, 431),
    ];
    for (what, lines, status) in cases {
        let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let req = request(server.addr, &lines);
        if what == "2,000 headers" {
            assert!(req.len() < 16 * 1024, "{what}: {} bytes", req.len());
        }
        let (resp, _conn) = send_head(server.addr, &req).await;
        assert_eq!(resp.status, status, "{what}: {}", resp.text());
        if status == 426 {
            // RFC 9110 §15.5.22: a 426 names the protocol to upgrade to.
            assert_eq!(resp.header("upgrade"), Some("websocket"), "{what}");
            assert_eq!(resp.header("sec-websocket-version"), Some("13"), "{what}");
        }
        assert_eq!(resp.header("sec-websocket-accept"), None, "{what}");
        witness.check(what).await;
    }

    // Control: the base request is accepted.
    let lines = valid_lines();
    let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    let (resp, conn) = send_head(server.addr, &request(server.addr, &lines)).await;
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("sec-websocket-accept"), Some(ACCEPT));
    drop(conn);
    witness.check("the valid control request").await;
    witness.finish().await;
}

#[tokio::test]
async fn request_head_trickled_byte_by_byte_is_cut_at_the_head_timeout() {
    let server = Server::start(&["--handshake-timeout", "500ms"]);
    let mut witness = Witness::open(&server).await;

    let t0 = Instant::now();
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    // A head that never ends: one byte every 10 ms, forever (bounded at 10 s).
    let writer = tokio::spawn(async move {
        let prefix = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Trickle: ";
        let mut sent = 0usize;
        let mut last_ok = Instant::now();
        for &b in prefix.iter().chain(std::iter::repeat(&b'a')).take(1000) {
            if wr.write_all(&[b]).await.is_err() {
                break;
            }
            sent += 1;
            last_ok = Instant::now();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (sent, last_ok)
    });
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut got)).await;
    let elapsed = t0.elapsed();
    assert!(ended.is_ok(), "still connected after 5 s of trickling");
    // The writer stops at its first failed write once the server has closed.
    let (sent, last_ok) = tokio::time::timeout(Duration::from_secs(2), writer)
        .await
        .expect("writes still succeed after the server closed")
        .expect("writer");
    let trickled_for = last_ok - t0;
    eprintln!(
        "trickled head: {sent} bytes over {trickled_for:?}, closed after {elapsed:?}, \
         server sent {:?}",
        String::from_utf8_lossy(&got)
    );
    // Bytes kept arriving up to the cut: progress does not extend the head timeout.
    assert!(
        trickled_for >= Duration::from_millis(350),
        "the trickle stopped after {trickled_for:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(450),
        "closed after only {elapsed:?}; the head timeout is 500 ms"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "closed only after {elapsed:?}; the head timeout is 500 ms"
    );
    assert!(
        !got.starts_with(b"HTTP/1.1 101"),
        "an unfinished head was upgraded"
    );

    witness.check("a trickled head").await;
    witness.finish().await;
}

#[tokio::test]
async fn megabyte_header_value_in_small_writes_gets_431_promptly() {
    let server = Server::start(&[]);
    let mut witness = Witness::open(&server).await;

    let t0 = Instant::now();
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        // A reset after the response is fine (the server closes with our bytes unread).
        let _ = tokio::time::timeout(WAIT, rd.read_to_end(&mut got)).await;
        (got, Instant::now())
    });
    let mut head = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Version: 13\r\nX-Huge: "
        .to_vec();
    head.extend(std::iter::repeat_n(b'v', 1 << 20));
    head.extend_from_slice(format!("\r\nSec-WebSocket-Key: {KEY}\r\n\r\n").as_bytes());
    let mut written = 0usize;
    for piece in head.chunks(1024) {
        if wr.write_all(piece).await.is_err() {
            break; // the server answered and closed: the rest is refused
        }
        written += piece.len();
        tokio::task::yield_now().await;
    }
    let (got, done) = reader.await.expect("reader");
    let elapsed = done - t0;
    eprintln!("1 MiB header: {written} bytes written, answered after {elapsed:?}");
    let resp = parse_response(&got);
    assert_eq!(resp.status, 431, "{}", resp.text());
    assert!(
        elapsed < Duration::from_secs(1),
        "a 1 MiB header in 1 KiB pieces took {elapsed:?} to refuse"
    );

    witness.check("a 1 MiB header").await;
    witness.finish().await;
}

#[tokio::test]
async fn junk_extension_and_subprotocol_offers_are_ignored() {
    let server = Server::start(&[]);
    let mut witness = Witness::open(&server).await;

    let mut lines = valid_lines();
    lines.push(
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=zzz, \
          x-webkit-deflate-frame, ;;;"
            .to_vec(),
    );
    // Tab and obs-text (0xE9, 0xFF) are valid header-value bytes (RFC 9110 §5.5), not tokens.
    lines.push(b"Sec-WebSocket-Protocol: ,, \tchat\xe9\xff".to_vec());
    let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    let (resp, mut raw) = send_head(server.addr, &request(server.addr, &lines)).await;
    assert_eq!(resp.status, 101, "{}", resp.text());
    assert_eq!(resp.header("sec-websocket-accept"), Some(ACCEPT));
    assert_eq!(resp.header("sec-websocket-extensions"), None, "{resp:?}");
    assert_eq!(resp.header("sec-websocket-protocol"), None, "{resp:?}");

    // A working connection: the ack, a heartbeat, and a normal close.
    let (op, ack) = next_frame(&mut raw).await.expect("connection_ack");
    assert_eq!(op, 0x1);
    let ack: Value = serde_json::from_slice(&ack).unwrap();
    assert_eq!(ack["event_type"], "connection_ack", "{ack}");
    raw_alive(&mut raw, "junk-offers").await;
    raw.send_frame(true, 0x8, &1000u16.to_be_bytes()).await;
    assert_eq!(close_code(&mut raw, "junk offers").await, Some(1000));
    expect_end(&mut raw, "junk offers").await;

    witness.check("junk extension and subprotocol offers").await;
    witness.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_reserved_opcode_closes_with_1002() {
    let server = Server::start(&[]);
    let mut witness = Witness::open(&server).await;
    for op in (0x3u8..=0x7).chain(0xB..=0xF) {
        let what = format!("reserved opcode {op:#x}");
        closes_with(&mut witness, &what, &client_frame(true, op, b"x"), 1002).await;
    }
    witness.finish().await;
}

#[tokio::test]
async fn malformed_frames_close_with_1002() {
    let server = Server::start(&[]);
    let mut witness = Witness::open(&server).await;

    // A close body of 126 bytes: valid code, valid UTF-8 reason, but over the control limit.
    let mut long_close = 1000u16.to_be_bytes().to_vec();
    long_close.extend_from_slice(&[b'r'; 124]);
    let mut text_in_fragmented = client_frame(false, 0x1, br#"{"event_type":"#);
    text_in_fragmented.extend(client_frame(true, 0x1, br#"{"event_type":"heartbeat"}"#));
    let mut binary_in_fragmented = client_frame(false, 0x1, br#"{"event_type":"#);
    binary_in_fragmented.extend(client_frame(true, 0x2, b"\x00"));

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "close frame with a 126-byte payload",
            client_frame(true, 0x8, &long_close),
        ),
        ("fragmented ping", client_frame(false, 0x9, b"ping")),
        ("fragmented pong", client_frame(false, 0xA, b"pong")),
        ("fragmented close", client_frame(false, 0x8, &[0x03, 0xe8])),
        (
            "new text frame inside a fragmented message",
            text_in_fragmented,
        ),
        (
            "new binary frame inside a fragmented message",
            binary_in_fragmented,
        ),
        (
            "16-bit length form for a 10-byte payload",
            frame_with_len(0x81, &[126, 0, 10], br#"{"a":"bc"}"#),
        ),
        (
            "64-bit length form for a 200-byte payload",
            frame_with_len(0x82, &[127, 0, 0, 0, 0, 0, 0, 0, 200], &[7; 200]),
        ),
        (
            "64-bit length with the most significant bit set",
            frame_with_len(0x82, &[127, 0x80, 0, 0, 0, 0, 0, 0, 5], b"hello"),
        ),
    ];
    for (what, bytes) in cases {
        closes_with(&mut witness, what, &bytes, 1002).await;
    }
    witness.finish().await;
}

#[tokio::test]
async fn a_flood_of_one_byte_fragments_closes_with_1009_in_bounded_memory() {
    let server = Server::start(&[]); // default --max-message-size 65536
    let mut witness = Witness::open(&server).await;
    let mut raw = raw_connect(&server).await;

    let mut flood = client_frame(false, 0x1, b"[");
    let one = client_frame(false, 0x0, b" ");
    flood.reserve(one.len() * 100_000);
    for _ in 1..100_000 {
        flood.extend_from_slice(&one);
    }
    let before = mem(server.pid(), "VmRSS:");
    // The server stops reading at the cap and resets the connection: write errors are expected.
    let write = raw.stream.write_all(&flood).await;
    assert_eq!(
        close_code(&mut raw, "100,000 fragments").await,
        Some(1009),
        "100,000 one-byte fragments"
    );
    expect_end(&mut raw, "100,000 fragments").await;
    let after = mem(server.pid(), "VmRSS:");
    let growth = after.saturating_sub(before);
    eprintln!(
        "fragment flood: write {:?}, VmRSS {before} -> {after} (+{growth} bytes)",
        write.map_err(|e| e.kind())
    );
    assert!(
        growth < 4 * MIB,
        "VmRSS grew by {growth} bytes on a 65536-byte message limit"
    );
    drop(raw);

    witness.check("100,000 one-byte fragments").await;
    witness.finish().await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007_at_the_first_bad_fragment() {
    let server = Server::start(&[]);
    let mut witness = Witness::open(&server).await;

    let sequences: [(&str, &[u8]); 5] = [
        ("UTF-16 surrogate ED A0 80", b"\xed\xa0\x80"),
        ("overlong C0 AF", b"\xc0\xaf"),
        ("overlong E0 80 AF", b"\xe0\x80\xaf"),
        ("code point above U+10FFFF", b"\xf4\x90\x80\x80"),
        ("lone continuation byte", b"\x80"),
    ];
    for (name, bad) in sequences {
        let mut text = br#"{"event_type":"heartbeat","message_id":""#.to_vec();
        text.extend_from_slice(bad);
        text.extend_from_slice(br#""}"#);
        // 1. One final frame.
        let what = format!("{name} in a text frame");
        closes_with(&mut witness, &what, &client_frame(true, 0x1, &text), 1007).await;

        // 2. The first fragment is already invalid; the rest never comes.
        // 3. A valid first fragment, then an invalid non-final continuation; nothing after.
        let mut second = client_frame(false, 0x1, br#"{"event_type":"#);
        second.extend(client_frame(false, 0x0, bad));
        for (how, bytes) in [
            ("first fragment", client_frame(false, 0x1, &text)),
            ("continuation", second),
        ] {
            let what = format!("{name} in an unfinished message's {how}");
            let mut raw = raw_connect(&server).await;
            raw.send_raw(&bytes).await;
            // Nothing else is sent: the close must come from these bytes alone.
            let code = tokio::time::timeout(Duration::from_secs(2), close_code(&mut raw, &what))
                .await
                .unwrap_or_else(|_| panic!("{what}: no close without the rest of the message"));
            assert_eq!(code, Some(1007), "{what}");
            expect_end(&mut raw, &what).await;
            drop(raw);
            witness.check(&what).await;
        }
    }
    witness.finish().await;
}

#[tokio::test]
async fn close_codes_are_checked_and_valid_ones_echoed() {
    let server = Server::start(&[]);
    let mut witness = Witness::open(&server).await;
    let invalid = [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
    ];
    let valid = [1000u16, 1001, 1003, 1007, 1011, 3000, 4999];
    let cases = invalid
        .iter()
        .map(|&c| (c, 1002))
        .chain(valid.iter().map(|&c| (c, c)));
    for (code, answer) in cases {
        let what = format!("client close code {code}");
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(b"bye");
        closes_with(&mut witness, &what, &client_frame(true, 0x8, &body), answer).await;
    }
    witness.finish().await;
}

#[tokio::test]
async fn frames_after_the_client_close_are_ignored() {
    let server = Server::start(&[]);
    let mut witness = Witness::open(&server).await;
    let mut raw = raw_connect(&server).await;

    let mut bytes = client_frame(true, 0x8, &1000u16.to_be_bytes());
    bytes.extend(client_frame(
        true,
        0x1,
        br#"{"event_type":"heartbeat","message_id":"late"}"#,
    ));
    bytes.extend(client_frame(true, 0x1, b"{not json"));
    bytes.extend(client_frame(true, 0x8, &4000u16.to_be_bytes()));
    raw.send_raw(&bytes).await;

    let mut frames = Vec::new();
    while let Some(f) = next_frame(&mut raw).await {
        frames.push(f);
    }
    assert_eq!(
        frames,
        vec![(0x8, 1000u16.to_be_bytes().to_vec())],
        "exactly one close (1000), nothing else, then EOF"
    );
    drop(raw);

    witness.check("frames after a close").await;
    witness.finish().await;
}

/// 50,000 pings of 125 bytes in one write, read only afterwards. The server must answer every
/// ping in order or close with 4008 once more than `--send-queue-bytes` is unsent; either way
/// its memory stays bounded. `rcvbuf`: the client's socket receive buffer (a small one makes the
/// server's queue fill up instead of the kernel buffers absorbing the pongs).
async fn ping_flood(witness: &mut Witness<'_>, rcvbuf: Option<u32>) {
    let server = witness.server;
    let what = format!("a ping flood (client SO_RCVBUF {rcvbuf:?})");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    let stream = socket.connect(server.addr).await.expect("connect");
    let lines = valid_lines();
    let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    let (resp, mut raw) = send_head_on(stream, &request(server.addr, &lines)).await;
    assert_eq!(resp.status, 101, "{what}");
    let (op, _) = next_frame(&mut raw).await.expect("connection_ack");
    assert_eq!(op, 0x1);

    const PINGS: u64 = 50_000;
    let mut flood = Vec::with_capacity(PINGS as usize * 131);
    for i in 0..PINGS {
        let mut p = [b'p'; 125];
        p[..8].copy_from_slice(&i.to_be_bytes());
        flood.extend(client_frame(true, 0x9, &p));
    }
    let slow_before = server.stats().await["slow_consumer_disconnects"]
        .as_u64()
        .expect("slow_consumer_disconnects");
    let before = mem(server.pid(), "VmRSS:");
    // One big write without reading a byte; after a 4008 the server may reset the connection.
    let write = raw.stream.write_all(&flood).await.map_err(|e| e.kind());

    let mut pongs = 0u64;
    let closed = loop {
        match next_frame(&mut raw).await {
            Some((0xA, p)) => {
                assert_eq!(p.len(), 125, "{what}: pong {pongs}");
                assert_eq!(p[..8], pongs.to_be_bytes(), "{what}: pongs in ping order");
                pongs += 1;
                if pongs == PINGS {
                    break None;
                }
            }
            Some((0x8, p)) => break Some(u16::from_be_bytes([p[0], p[1]])),
            Some((op, p)) => panic!(
                "{what}: unexpected frame {op:#x} {:?}",
                String::from_utf8_lossy(&p)
            ),
            None => panic!("{what}: connection ended after {pongs} pongs without a close frame"),
        }
    };
    let after = mem(server.pid(), "VmRSS:");
    let peak = mem(server.pid(), "VmHWM:");
    match closed {
        None => {
            eprintln!("{what}: all {PINGS} pings answered (write {write:?})");
            raw_alive(&mut raw, "after-flood").await;
            raw.send_frame(true, 0x8, &1000u16.to_be_bytes()).await;
            assert_eq!(close_code(&mut raw, &what).await, Some(1000));
        }
        Some(code) => {
            eprintln!("{what}: closed with {code} after {pongs} pongs (write {write:?})");
            assert_eq!(code, 4008, "{what}: after {pongs} pongs");
            let s = server.stats().await;
            assert_eq!(
                s["slow_consumer_disconnects"].as_u64(),
                Some(slow_before + 1),
                "{what}: {s}"
            );
        }
    }
    expect_end(&mut raw, &what).await;
    drop(raw);
    let growth = after.saturating_sub(before);
    let peak_growth = peak.saturating_sub(before);
    eprintln!("{what}: VmRSS {before} -> {after} (+{growth}), VmHWM {peak} (+{peak_growth})");
    assert!(growth < 32 * MIB, "{what}: VmRSS grew by {growth} bytes");
    assert!(
        peak_growth < 32 * MIB,
        "{what}: VmHWM is {peak_growth} bytes above the start"
    );
    witness.check(&what).await;
}

#[tokio::test]
async fn ping_flood_is_answered_or_closed_with_4008_in_bounded_memory() {
    let server = Server::start(&[]); // default --send-queue-bytes 1048576
    let mut witness = Witness::open(&server).await;
    ping_flood(&mut witness, None).await;
    ping_flood(&mut witness, Some(4096)).await;
    witness.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_messages_get_error_replies_and_the_connection_goes_on() {
    let server = Server::start(&[]); // default --max-subscriptions 256
    let mut witness = Witness::open(&server).await;
    let (mut c, _) = server.connect("/ws").await;

    let sub = |id: &str, data: Value| {
        json!({"event_type": "user_subscription", "message_id": id, "data": data}).to_string()
    };
    let long_id = "m".repeat(60 * 1024);
    // 10,000 distinct channel names of 1-3 bytes, so the request stays under 64 KiB.
    let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    let n = alphabet.len();
    let mut names: Vec<String> = Vec::with_capacity(10_000);
    for len in 1..=3u32 {
        for i in 0..n.pow(len) {
            let mut name = String::new();
            let mut k = i;
            for _ in 0..len {
                name.push(alphabet[k % n]);
                k /= n;
            }
            names.push(name);
        }
    }
    names.truncate(10_000);
    assert_eq!(names.len(), 10_000);
    let ten_thousand = sub("many", json!({ "channels": names }));
    assert!(ten_thousand.len() < 65536, "{}", ten_thousand.len());

    let invalid_names = [
        "".to_owned(),
        "c".repeat(129),
        "odds 7".to_owned(),
        "ödds".to_owned(),
        "odds/7".to_owned(),
    ];
    let mut cases: Vec<(String, String, &str, Option<String>)> = vec![
        (
            "truncated JSON".into(),
            r#"{"event_type":"heartbeat","message_id":"t1""#.into(),
            "invalid_message",
            None,
        ),
        (
            "trailing garbage".into(),
            r#"{"event_type":"heartbeat","message_id":"t2"} garbage"#.into(),
            "invalid_message",
            None,
        ),
        (
            "two objects".into(),
            r#"{"event_type":"heartbeat"}{"event_type":"heartbeat"}"#.into(),
            "invalid_message",
            None,
        ),
        (
            "10,000 nested [".into(),
            "[".repeat(10_000),
            "invalid_message",
            None,
        ),
        (
            "10,000 nested [ closed".into(),
            "[".repeat(10_000) + &"]".repeat(10_000),
            "invalid_message",
            None,
        ),
        (
            "a 60 KiB string of {".into(),
            "{".repeat(60 * 1024),
            "invalid_message",
            None,
        ),
        (
            "not an object".into(),
            r#"[{"event_type":"heartbeat"}]"#.into(),
            "invalid_message",
            None,
        ),
        (
            "event_type 5".into(),
            r#"{"event_type":5,"message_id":"w1"}"#.into(),
            "invalid_message",
            Some("w1".into()),
        ),
        (
            "no event_type".into(),
            r#"{"message_id":"w2","data":{}}"#.into(),
            "invalid_message",
            Some("w2".into()),
        ),
        (
            "data a string".into(),
            sub("w3", json!("x")),
            "invalid_message",
            Some("w3".into()),
        ),
        (
            "channels an object".into(),
            sub("w4", json!({"channels": {"a": 1}})),
            "invalid_message",
            Some("w4".into()),
        ),
        (
            "message_id a number".into(),
            r#"{"event_type":"heartbeat","message_id":7}"#.into(),
            "invalid_message",
            None,
        ),
        (
            "10,000 channels".into(),
            ten_thousand,
            "too_many_subscriptions",
            Some("many".into()),
        ),
        (
            "unknown event with a 60 KiB message_id".into(),
            json!({"event_type": "nope", "message_id": long_id}).to_string(),
            "unknown_event",
            Some(long_id.clone()),
        ),
        (
            "bad channel with a 60 KiB message_id".into(),
            sub(&long_id, json!({"channel": "a b"})),
            "invalid_channel",
            Some(long_id.clone()),
        ),
    ];
    for event in [
        "nope",
        "HEARTBEAT",
        "subscribe",
        "connection_ack",
        "error",
        "odds_update",
        "",
    ] {
        cases.push((
            format!("unknown event {event:?}"),
            json!({"event_type": event, "message_id": "u1", "data": {}}).to_string(),
            "unknown_event",
            Some("u1".into()),
        ));
    }
    for name in &invalid_names {
        let short = &name[..name.len().min(12)];
        cases.push((
            format!("subscribe to channel {short:?} ({} bytes)", name.len()),
            sub("ch1", json!({ "channel": name })),
            "invalid_channel",
            Some("ch1".into()),
        ));
        cases.push((
            format!("channel {short:?} in a list"),
            sub("ch2", json!({ "channels": ["odds", name] })),
            "invalid_channel",
            Some("ch2".into()),
        ));
        cases.push((
            format!("unsubscribe from channel {short:?}"),
            json!({"event_type": "user_unsubscription", "message_id": "ch3", "data": {"channel": name}})
                .to_string(),
            "invalid_channel",
            Some("ch3".into()),
        ));
    }

    for (what, text, code, reply_to) in &cases {
        assert!(text.len() <= 65536, "{what}: {} bytes", text.len());
        c.send_text(text).await;
        let e = c.next_json().await;
        assert_eq!(e["event_type"], "error", "{what}: {}", short(&e));
        assert_eq!(e["data"]["code"], *code, "{what}: {}", short(&e));
        let message = e["data"]["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "{what}: {}", short(&e));
        match reply_to {
            Some(id) => assert_eq!(e["reply_to"].as_str(), Some(id.as_str()), "{what}"),
            None => assert!(e.get("reply_to").is_none(), "{what}: {}", short(&e)),
        }
        assert!(
            e.get("channel").is_none() && e.get("offset").is_none(),
            "{}",
            short(&e)
        );
        // Exactly one error, no close: the next message is the heartbeat's reply.
        assert_alive(&mut c, what).await;
    }
    witness.check_with("bad messages", 1).await;

    // A long message_id on a valid request is only echoed (src/protocol/: any string).
    c.send_json(&json!({"event_type": "heartbeat", "message_id": long_id}))
        .await;
    let r = c.next_json().await;
    assert_eq!(r["event_type"], "heartbeat", "{}", short(&r));
    assert_eq!(r["reply_to"].as_str(), Some(long_id.as_str()));

    // Nothing of the refused requests was subscribed: only the witness's channel exists.
    let channels = server.get("/api/channels").await.json();
    assert_eq!(
        channels,
        json!({"channels": [{"channel": WITNESS_CHANNEL, "subscribers": 1}]})
    );
    // And the connection can still subscribe.
    c.subscribe("odds").await;

    drop(c);
    witness.check("the bad-message connection closed").await;
    witness.finish().await;
}
