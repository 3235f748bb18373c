//! Shared test support: start the real `huddle` binary on 127.0.0.1:0, talk to it with
//! tokio-tungstenite, raw TCP and a tiny HTTP/1.1 client. Every wait has a timeout, so a broken
//! server fails a test instead of hanging it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod cdp;
pub mod jsprobe;
pub mod proxy;
pub mod redis;
pub mod tokens;

pub const API_KEY: &str = "test-key";
/// Upper bound on any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running server process; killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts with test defaults (2 shards, no connection rate limit, API key `test-key`);
    /// `args` are appended, so they override the defaults.
    pub fn start(args: &[&str]) -> Server {
        let mut all = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            API_KEY,
            "--shards",
            "2",
            "--conn-rate",
            "off",
        ];
        all.extend_from_slice(args);
        Self::start_raw(&all, &[])
    }

    /// Starts with exactly `args` and extra environment variables.
    pub fn start_raw(args: &[&str], env: &[(&str, &str)]) -> Server {
        // HUDDLE_TEST_BIN runs the suite against another build (e.g. to show a test failed before).
        let bin = std::env::var("HUDDLE_TEST_BIN")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_huddle").to_owned());
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn huddle");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        // Keep draining stderr for the whole run so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on ") {
                    let addr = line[i + "listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(WAIT) {
            Ok(a) => a.parse().expect("address in ready line"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not report ready; logs: {:?}",
                    logs.lock().unwrap()
                );
            }
        };
        Server { child, addr, logs }
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Connects to `path` and returns the client with its `connection_ack`.
    pub async fn connect(&self, path: &str) -> (Client, Value) {
        let mut c = self.connect_raw(path).await;
        let ack = c.recv_json().await;
        assert_eq!(ack["event_type"], "connection_ack", "first message: {ack}");
        (c, ack)
    }

    /// `connect` to a server known by its address (from a spawned task).
    pub async fn connect_to(addr: SocketAddr, path: &str) -> (Client, Value) {
        let url = format!("ws://{addr}{path}");
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .expect("connect");
        let mut c = Client { ws };
        let ack = c.recv_json().await;
        assert_eq!(ack["event_type"], "connection_ack", "first message: {ack}");
        (c, ack)
    }

    /// Connects without reading anything.
    pub async fn connect_raw(&self, path: &str) -> Client {
        let (ws, _) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(self.ws_url(path)))
                .await
                .expect("connect timed out")
                .expect("connect");
        Client { ws }
    }

    /// An HTTP request with `Connection: close`; headers as (name, value).
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        raw_http(self.addr, &req).await
    }

    /// POST with the API key and a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> HttpResponse {
        self.http(
            "POST",
            path,
            &[("X-API-Key", API_KEY), ("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await
    }

    /// GET with the API key.
    pub async fn get(&self, path: &str) -> HttpResponse {
        self.http(
            "GET",
            path,
            &[("Authorization", &format!("Bearer {API_KEY}"))],
            b"",
        )
        .await
    }

    pub async fn stats(&self) -> Value {
        let r = self.get("/api/stats").await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Polls `/api/stats` until `pred` holds (server-side state converges asynchronously after
    /// a client disconnects; there is no event to await from outside).
    pub async fn wait_stats(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.stats().await;
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; stats: {s}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL): nothing is flushed or answered.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`.
    pub async fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.logs().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}: {:?}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebSocket client (tokio-tungstenite).
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a client saw next.
#[derive(Debug)]
pub enum Received {
    Json(Value),
    Ping,
    Close(Option<(u16, String)>),
    /// The stream ended without a close frame.
    Ended,
}

impl Client {
    pub async fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws
            .send(Message::Text(s.to_owned()))
            .await
            .expect("send");
    }

    /// The next text message as JSON (pings are answered by tungstenite and skipped).
    pub async fn recv_json(&mut self) -> Value {
        match self.recv().await {
            Received::Json(v) => v,
            other => panic!("expected a JSON message, got {other:?}"),
        }
    }

    /// The next event of interest, skipping pongs; pings are returned.
    pub async fn recv(&mut self) -> Received {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a message");
            match next {
                Some(Ok(Message::Text(t))) => {
                    return Received::Json(serde_json::from_str(&t).expect("server sent JSON"))
                }
                Some(Ok(Message::Ping(_))) => return Received::Ping,
                Some(Ok(Message::Pong(_))) | Some(Ok(Message::Frame(_))) => {}
                Some(Ok(Message::Binary(b))) => panic!("unexpected binary message {b:?}"),
                Some(Ok(Message::Close(f))) => {
                    return Received::Close(f.map(|f| (u16::from(f.code), f.reason.into_owned())))
                }
                Some(Err(_)) | None => return Received::Ended,
            }
        }
    }

    /// Skips pings; returns the next JSON message.
    pub async fn next_json(&mut self) -> Value {
        loop {
            match self.recv().await {
                Received::Json(v) => return v,
                Received::Ping => {}
                other => panic!("expected a JSON message, got {other:?}"),
            }
        }
    }

    /// Waits for the server's close frame (skipping anything else) and returns its code.
    pub async fn recv_close(&mut self) -> (u16, String) {
        loop {
            match self.recv().await {
                Received::Close(Some(c)) => return c,
                Received::Close(None) => panic!("close frame without a code"),
                Received::Ended => panic!("stream ended without a close frame"),
                _ => {}
            }
        }
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.send_json(&serde_json::json!({
            "event_type": "user_subscription", "message_id": format!("sub-{channel}"),
            "data": {"channel": channel}
        }))
        .await;
        let r = self.next_json().await;
        assert_eq!(r["event_type"], "user_subscription", "{r}");
        assert_eq!(r["data"]["status"], "subscribed", "{r}");
        r
    }

    pub async fn close(&mut self, code: u16) {
        self.ws
            .close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "bye".into(),
            }))
            .await
            .expect("close");
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends raw request bytes and reads the response until the server closes.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("response timed out")
        .expect("read");
    parse_response(&buf)
}

/// Parses a whole HTTP/1.1 response (Content-Length bodies).
pub fn parse_response(buf: &[u8]) -> HttpResponse {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    }
}

/// A WebSocket connection over a plain TCP stream, for sending frames a real client library
/// refuses to produce.
pub struct RawWs {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl RawWs {
    /// Performs the upgrade by hand and reads the 101 head (and keeps any bytes after it).
    pub async fn connect(addr: SocketAddr, path: &str) -> RawWs {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::upgrade(stream, addr, path).await
    }

    /// Like `connect`, with a small kernel receive buffer, for a client that stops reading.
    pub async fn connect_small_rcvbuf(addr: SocketAddr, path: &str, rcvbuf: u32) -> RawWs {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connect");
        Self::upgrade(stream, addr, path).await
    }

    async fn upgrade(mut stream: TcpStream, addr: SocketAddr, path: &str) -> RawWs {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut raw = RawWs {
            stream,
            buf: Vec::new(),
        };
        let head_end = loop {
            if let Some(p) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            raw.fill().await;
        };
        let head = String::from_utf8_lossy(&raw.buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        raw.buf.drain(..head_end);
        raw
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("read timed out")
            .expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Sends a masked client frame.
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let frame = client_frame(fin, opcode, payload);
        self.stream.write_all(&frame).await.expect("write frame");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads the `connection_ack`. Once it has arrived, the endpoint's auto-subscriptions are
    /// in place: a publish the client causes afterwards reaches it.
    pub async fn read_ack(&mut self) {
        let (op, ack) = self.read_frame().await.expect("connection_ack");
        let text = String::from_utf8_lossy(&ack);
        assert!(
            op == 1 && text.contains("connection_ack"),
            "not an ack: {text}"
        );
    }

    /// Reads the next server frame: (opcode, payload); None on EOF.
    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((op, payload, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some((op, payload));
            }
            if self.fill().await == 0 {
                return None;
            }
        }
    }

    /// Reads frames until a close frame; returns its code (None for an empty body).
    pub async fn read_close(&mut self) -> Option<u16> {
        loop {
            match self.read_frame().await {
                Some((0x8, p)) if p.len() >= 2 => return Some(u16::from_be_bytes([p[0], p[1]])),
                Some((0x8, _)) => return None,
                Some(_) => {}
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// True once the server has closed the TCP connection (EOF or reset), draining frames.
    pub async fn wait_eof(&mut self) {
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => panic!("server did not close the TCP connection"),
            }
        }
    }
}

/// One complete unmasked server frame at the start of `buf`: (opcode, payload, bytes used).
pub fn parse_server_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, hdr): (usize, usize) = match (buf[1] & 0x7f) as usize {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (usize::try_from(u64::from_be_bytes(b)).ok()?, 10)
        }
        126 | 127 => return None,
        n => (n, 2),
    };
    let end = hdr.checked_add(len)?;
    (buf.len() >= end).then(|| (buf[0] & 0x0f, buf[hdr..end].to_vec(), end))
}

/// A masked client frame with a fixed mask key.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![(u8::from(fin) << 7) | opcode];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len < 65536 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A valid `odds_update` payload for game `game_id`.
pub fn odds(game_id: &str, seq: u64) -> Value {
    serde_json::json!({
        "game_id": game_id, "sportsbook": "fanduel", "home_team": "KC", "away_team": "BUF",
        "spread": -3.5, "moneyline_home": -150, "moneyline_away": 130, "over_under": 47.5,
        "updated_at": "2026-11-25T18:04:05Z", "seq": seq
    })
}
