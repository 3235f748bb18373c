//! Fan-out benchmark: the same clients against three servers, in one run.
//!
//! - **huddle**: the release binary, subscribers on `/ws/games`, publishers publishing over
//!   the WebSocket (PROTOCOL.md §7).
//! - **baseline**: the obvious server, tokio-tungstenite on a multi-thread runtime, a task per
//!   connection and a `tokio::sync::broadcast` channel; each subscriber's task encodes its own copy.
//! - **raw**: no protocol at all: pre-encoded frames written to every accepted socket, one write
//!   per frame, a thread per core; the cost of the syscalls and the loopback itself.
//!
//! Both references are this bench binary re-executed as child processes (`FANOUT_ROLE`), so every
//! server's CPU time is read from `/proc/PID/stat`. All clients live in this process, so one clock
//! (`SystemTime`, the same kernel clock in every process) stamps sends and receipts.
//!
//! `cargo bench --bench fanout` runs every scenario and appends the table to BENCHMARKS.md.
//! Environment: `FANOUT_SCENARIOS=1k-200,10k-burst` (names below), `FANOUT_SECONDS=5`,
//! `FANOUT_SMOKE=1` (tiny sizes, for CI), `FANOUT_SERVERS=huddle,baseline,raw`,
//! `FANOUT_NO_WRITE=1` (print only), `FANOUT_SUBSCRIBERS` / `FANOUT_MESSAGES` (override sizes),
//! `FANOUT_HUDDLE_PREFIX` (run huddle under a tool such as valgrind).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use huddle::codec::{self, OpCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const API_KEY: &str = "bench";

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------- scenarios

#[derive(Clone, Debug)]
struct Scenario {
    name: &'static str,
    label: String,
    subscribers: usize,
    /// Publishers; with `publishers_subscribe` they are among the subscribers.
    publishers: usize,
    publishers_subscribe: bool,
    /// Messages per second per publisher; 0 = as fast as the server takes them.
    rate: u64,
    /// Messages per publisher.
    messages: u64,
    payload: usize,
    /// Memory only: connect, measure, disconnect.
    idle_only: bool,
}

fn scenarios(seconds: u64, smoke: bool) -> Vec<Scenario> {
    let k = |n: usize| if smoke { (n / 100).max(20) } else { n };
    let secs = if smoke { 1 } else { seconds };
    let s = |name, subs, pubs, psub, rate: u64, msgs: Option<u64>, idle| Scenario {
        name,
        label: String::new(),
        subscribers: k(subs),
        publishers: pubs,
        publishers_subscribe: psub,
        rate,
        messages: msgs.unwrap_or(rate * secs),
        payload: 100,
        idle_only: idle,
    };
    let mut all = vec![
        s("1k-200", 1000, 1, false, 200, None, false),
        s("1k-1000", 1000, 1, false, 1000, None, false),
        s(
            "10k-2",
            10_000,
            1,
            false,
            2,
            Some(if smoke { 2 } else { 2 * seconds.max(5) }),
            false,
        ),
        s(
            "10k-burst",
            10_000,
            1,
            false,
            0,
            Some(if smoke { 50 } else { 1000 }),
            false,
        ),
        s("100-all-publish", 100, 20, true, 50, None, false),
        s("idle-10k", 10_000, 0, false, 0, Some(0), true),
    ];
    for sc in &mut all {
        // Size overrides for profiling runs.
        if let Some(n) = std::env::var("FANOUT_SUBSCRIBERS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            sc.subscribers = n;
        }
        if let Some(m) = std::env::var("FANOUT_MESSAGES")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            sc.messages = m;
        }
        sc.label = match sc.name {
            "10k-burst" => format!("{}×burst {}×{}B", sc.subscribers, sc.messages, sc.payload),
            "100-all-publish" => format!(
                "{} × all-publish ({} pubs × {}/s)",
                sc.subscribers, sc.publishers, sc.rate
            ),
            "idle-10k" => format!("idle {}", sc.subscribers),
            _ => format!("{}×{}/s×{}B", sc.subscribers, sc.rate, sc.payload),
        };
    }
    all
}

// ---------------------------------------------------------------- servers

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Huddle,
    Baseline,
    Raw,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Huddle => "huddle",
            Kind::Baseline => "baseline",
            Kind::Raw => "raw",
        }
    }
}

struct ServerProc {
    child: Child,
    addr: SocketAddr,
    stdin: Option<ChildStdin>,
}

impl ServerProc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProc {
    /// SIGTERM first (huddle drains and exits 0; a profiler wrapper gets to write its output),
    /// SIGKILL if it is still there after 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads lines of `r` until one contains "listening on ADDR"; keeps draining it afterwards.
fn ready_addr<R: Read + Send + 'static>(r: R) -> SocketAddr {
    let mut lines = BufReader::new(r).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before ready")
            .expect("read");
        if let Some(i) = line.find("listening on ") {
            break line[i + 13..]
                .split_whitespace()
                .next()
                .expect("address")
                .parse()
                .expect("socket address");
        }
    };
    std::thread::spawn(move || for _ in lines {});
    addr
}

fn start_server(kind: Kind, sc: &Scenario) -> ServerProc {
    match kind {
        Kind::Huddle => {
            let bin =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/huddle");
            // FANOUT_HUDDLE_PREFIX runs the server under a tool, e.g.
            // "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out".
            let prefix = std::env::var("FANOUT_HUDDLE_PREFIX").unwrap_or_default();
            let mut words: Vec<String> = prefix.split_whitespace().map(str::to_owned).collect();
            words.push(bin.to_string_lossy().into_owned());
            let mut child = Command::new(&words[0])
                .args(&words[1..])
                .args([
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--api-key",
                    API_KEY,
                    "--conn-rate",
                    "off",
                ])
                .env("RUST_LOG", "warn,huddle=info")
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn huddle");
            let addr = ready_addr(child.stderr.take().expect("stderr"));
            ServerProc {
                child,
                addr,
                stdin: None,
            }
        }
        Kind::Baseline | Kind::Raw => {
            let exe = std::env::current_exe().expect("current exe");
            let mut child = Command::new(exe)
                .env("FANOUT_ROLE", kind.name())
                .env("FANOUT_RAW_CONNS", sc.subscribers.to_string())
                .env(
                    "FANOUT_RAW_MESSAGES",
                    (sc.messages * sc.publishers as u64).to_string(),
                )
                .env(
                    "FANOUT_RAW_RATE",
                    (sc.rate * sc.publishers as u64).to_string(),
                )
                .env("FANOUT_RAW_PUBLISHERS", sc.publishers.to_string())
                .env("FANOUT_RAW_PAYLOAD", sc.payload.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn reference server");
            let addr = ready_addr(child.stdout.take().expect("stdout"));
            let stdin = child.stdin.take();
            ServerProc { child, addr, stdin }
        }
    }
}

/// (utime + stime) of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- the client side

/// Opens a WebSocket with a hand-written upgrade; returns the stream and any bytes read past
/// the 101 head. The same code talks to every server.
async fn ws_connect(addr: SocketAddr, path: &str) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.set_nodelay(true);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write upgrade");
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = s.read(&mut chunk).await.expect("read upgrade");
        assert!(n > 0, "closed during upgrade");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(buf.starts_with(b"HTTP/1.1 101"), "upgrade refused");
            buf.drain(..p + 4);
            return (s, buf);
        }
    }
}

/// The number after `"key":` in a JSON payload, without parsing the JSON.
fn find_u64(hay: &[u8], key: &[u8]) -> Option<u64> {
    let pos = hay.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = hay[pos..].iter().take_while(|b| b.is_ascii_digit());
    let mut v = 0u64;
    let mut any = false;
    for d in digits {
        v = v * 10 + u64::from(d - b'0');
        any = true;
    }
    any.then_some(v)
}

#[derive(Default)]
struct SubResult {
    received: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    last_at: u64,
}

/// Reads frames until `expected` channel messages (from `publishers` publishers) arrived or the
/// deadline passed; records latency and order.
async fn subscriber(
    mut s: TcpStream,
    mut buf: Vec<u8>,
    publishers: usize,
    expected: u64,
    deadline: tokio::time::Instant,
    hist: &mut Histogram<u64>,
) -> SubResult {
    let mut next = vec![0u64; publishers.max(1)];
    let mut seen = vec![0u64; publishers.max(1)];
    let mut r = SubResult::default();
    // Small: 10k of these live at once, and frames here are ~200 bytes.
    let mut chunk = vec![0u8; 2048];
    while r.received < expected {
        // Parse every complete frame in `buf`.
        loop {
            if buf.len() < 2 {
                break;
            }
            let len7 = (buf[1] & 0x7f) as usize;
            let (len, hdr) = match len7 {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => break,
                n => (n, 2),
            };
            if buf.len() < hdr + len {
                break;
            }
            let payload = &buf[hdr..hdr + len];
            if buf[0] & 0x0f == 0x1 {
                if let (Some(seq), Some(ts)) = (
                    find_u64(payload, b"\"seq\":"),
                    find_u64(payload, b"\"ts\":"),
                ) {
                    let now = now_nanos();
                    let p = find_u64(payload, b"\"p\":").unwrap_or(0) as usize % next.len();
                    hist.saturating_record(now.saturating_sub(ts) / 1000);
                    r.received += 1;
                    r.last_at = now;
                    seen[p] += 1;
                    if seq == next[p] {
                        next[p] += 1;
                    } else if seq > next[p] {
                        r.lost += seq - next[p];
                        next[p] = seq + 1;
                    } else if seen[p] > seq + 1 {
                        r.duplicated += 1;
                    } else {
                        r.reordered += 1;
                    }
                }
            }
            buf.drain(..hdr + len);
        }
        if r.received >= expected {
            break;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    r.lost += expected.saturating_sub(r.received + r.lost);
    r
}

/// A `publish` frame for huddle and the baseline: channel `games`, custom event `tick`.
fn publish_frame(p: usize, seq: u64, pad: &str) -> Vec<u8> {
    let json = format!(
        "{{\"event_type\":\"publish\",\"data\":{{\"channel\":\"games\",\"event_type\":\"tick\",\"data\":{{\"p\":{p},\"seq\":{seq},\"ts\":{},\"pad\":\"{pad}\"}}}}}}",
        now_nanos()
    );
    codec::encode_masked_frame(true, OpCode::Text, json.as_bytes(), [9, 8, 7, 6]).to_vec()
}

/// Publishes `messages` at `rate`/s (0: as fast as the socket takes them), draining replies.
async fn publisher(mut s: TcpStream, p: usize, sc: Scenario, read_replies: bool) {
    let pad = "x".repeat(sc.payload);
    let (mut rd, mut wr) = s.split();
    // The socket stays open, replies drained, until the scenario aborts this task: closing it
    // with unread replies would make the kernel send RST and drop publishes the server has not
    // read yet.
    let drain = async {
        if !read_replies {
            // Another task reads this socket.
            return;
        }
        let mut sink = vec![0u8; 64 * 1024];
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let send = async {
        if let Some(period) = 1_000_000_000u64.checked_div(sc.rate) {
            let mut tick = tokio::time::interval(Duration::from_nanos(period));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for seq in 0..sc.messages {
                tick.tick().await;
                if wr.write_all(&publish_frame(p, seq, &pad)).await.is_err() {
                    break;
                }
            }
        } else {
            for seq in 0..sc.messages {
                if wr.write_all(&publish_frame(p, seq, &pad)).await.is_err() {
                    break;
                }
            }
        }
    };
    tokio::join!(send, drain);
    std::future::pending::<()>().await;
}

struct RunResult {
    deliveries: u64,
    seconds: f64,
    hist: Histogram<u64>,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    cpu: f64,
    rss_per_conn: f64,
}

async fn run_one(kind: Kind, sc: &Scenario) -> RunResult {
    let mut server = start_server(kind, sc);
    let addr = server.addr;
    let pid = server.pid();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = vm_rss_kib(pid);
    // Subscribers (and publishers that also subscribe) use /ws/games; pure publishers use /ws.
    let path = |publisher: bool, subscribes: bool| match (publisher, subscribes) {
        (true, true) => format!("/ws/games?api_key={API_KEY}"),
        (true, false) => format!("/ws?api_key={API_KEY}"),
        _ => "/ws/games".to_owned(),
    };
    // Connect every subscriber (publishers that subscribe are the first `publishers`).
    let conns: Vec<(TcpStream, Vec<u8>)> = futures_util::stream::iter(0..sc.subscribers)
        .map(|i| {
            let p = path(sc.publishers_subscribe && i < sc.publishers, true);
            async move { ws_connect(addr, &p).await }
        })
        // `buffered`, not `buffer_unordered`: index i must stay connection i (publishers first).
        .buffered(128)
        .collect()
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = vm_rss_kib(pid);
    let rss_per_conn =
        (rss_after.saturating_sub(rss_before) as f64 * 1024.0) / sc.subscribers.max(1) as f64;
    if sc.idle_only {
        drop(conns);
        return RunResult {
            deliveries: 0,
            seconds: 0.0,
            hist: Histogram::new(3).expect("histogram"),
            lost: 0,
            duplicated: 0,
            reordered: 0,
            cpu: 0.0,
            rss_per_conn,
        };
    }
    let expected = sc.messages * sc.publishers as u64;
    // Paced: the schedule plus slack. Burst: enough for the raw sender's one-write-per-frame
    // pace (~100k deliveries/s here) plus slack.
    let budget = sc.messages.checked_div(sc.rate).map_or_else(
        || Duration::from_secs(expected * sc.subscribers as u64 / 100_000 + 30),
        |s| Duration::from_secs(s + 15),
    );
    let deadline = tokio::time::Instant::now() + budget;

    // Split: publisher connections that also subscribe need their read side for replies too;
    // for those, the subscriber reader also consumes replies (frames without "seq" are skipped).
    let mut readers = Vec::new();
    let mut pub_streams = Vec::new();
    for (i, (s, buf)) in conns.into_iter().enumerate() {
        if sc.publishers_subscribe && i < sc.publishers && kind != Kind::Raw {
            let std = s.into_std().expect("into_std");
            let write_half = StdStream::try_clone(&std).expect("clone");
            pub_streams.push(TcpStream::from_std(write_half).expect("from_std"));
            readers.push((TcpStream::from_std(std).expect("from_std"), buf));
        } else {
            readers.push((s, buf));
        }
    }
    let cpu_before = cpu_seconds(pid);
    let start_ns = now_nanos();
    let mut tasks = Vec::new();
    for (s, buf) in readers {
        let publishers = sc.publishers;
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let r = subscriber(s, buf, publishers, expected, deadline, &mut h).await;
            (r, h)
        }));
    }
    let mut pubs = Vec::new();
    match kind {
        Kind::Raw => {
            if let Some(stdin) = server.stdin.as_mut() {
                let _ = stdin.write_all(b"go\n");
                let _ = stdin.flush();
            }
        }
        _ if sc.publishers_subscribe => {
            for (p, s) in pub_streams.into_iter().enumerate() {
                pubs.push(tokio::spawn(publisher(s, p, sc.clone(), false)));
            }
        }
        _ => {
            for p in 0..sc.publishers {
                let (s, _) = ws_connect(addr, &path(true, false)).await;
                pubs.push(tokio::spawn(publisher(s, p, sc.clone(), true)));
            }
        }
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut deliveries, mut lost, mut duplicated, mut reordered, mut last) =
        (0, 0, 0, 0, start_ns);
    for t in tasks {
        let (r, h) = t.await.expect("subscriber task");
        hist.add(h).expect("merge histogram");
        deliveries += r.received;
        lost += r.lost;
        duplicated += r.duplicated;
        reordered += r.reordered;
        last = last.max(r.last_at);
    }
    let cpu = cpu_seconds(pid) - cpu_before;
    for p in pubs {
        p.abort();
    }
    RunResult {
        deliveries,
        seconds: (last.saturating_sub(start_ns)) as f64 / 1e9,
        hist,
        lost,
        duplicated,
        reordered,
        cpu,
        rss_per_conn,
    }
}

// ---------------------------------------------------------------- reference servers

/// The obvious server: tokio-tungstenite, task per connection, `broadcast` fan-out.
// The handshake callback's error type is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
fn baseline_serve() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("listening on {}", listener.local_addr().expect("addr"));
        let (tx, _) = tokio::sync::broadcast::channel::<Arc<str>>(1 << 16);
        let offset = Arc::new(AtomicU64::new(0));
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let tx = tx.clone();
            let offset = offset.clone();
            tokio::spawn(async move {
                let (mut publisher, mut subscriber) = (false, false);
                let cb = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                          resp| {
                    publisher = req.uri().query().is_some_and(|q| q.contains("api_key"));
                    subscriber = req.uri().path() == "/ws/games";
                    Ok(resp)
                };
                let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, cb).await else { return };
                let (mut sink, mut stream) = ws.split();
                use tokio_tungstenite::tungstenite::Message;
                let ack = serde_json::json!({"event_type":"connection_ack","data":{"subscriptions":["games"]}});
                if sink.send(Message::Text(ack.to_string())).await.is_err() {
                    return;
                }
                let mut rx = tx.subscribe();
                let forward = async move {
                    loop {
                        match rx.recv().await {
                            Ok(m) => {
                                if sink.send(Message::Text(m.to_string())).await.is_err() {
                                    break;
                                }
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(_) => break,
                        }
                    }
                };
                if subscriber {
                    tokio::spawn(forward);
                } else {
                    drop(forward);
                }
                while let Some(Ok(msg)) = stream.next().await {
                    if !publisher {
                        continue;
                    }
                    let Message::Text(t) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) else { continue };
                    let d = &v["data"];
                    let out = serde_json::json!({
                        "event_type": d["event_type"], "channel": d["channel"],
                        "offset": offset.fetch_add(1, Ordering::Relaxed) + 1,
                        "data": d["data"],
                    });
                    let _ = tx.send(Arc::from(out.to_string()));
                }
            });
        }
    });
}

/// The machine's cost: accept N sockets, answer the upgrade with a canned 101, then write each
/// pre-encoded frame to every socket with one write each, a thread per core.
fn raw_serve() {
    let n: usize = env_or("FANOUT_RAW_CONNS", 1000);
    let total: u64 = env_or("FANOUT_RAW_MESSAGES", 100);
    let rate: u64 = env_or("FANOUT_RAW_RATE", 0);
    let publishers: usize = env_or("FANOUT_RAW_PUBLISHERS", 1);
    let payload: usize = env_or("FANOUT_RAW_PAYLOAD", 100);
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    println!("listening on {}", listener.local_addr().expect("addr"));
    let _ = std::io::stdout().flush();
    let mut socks = Vec::with_capacity(n);
    while socks.len() < n {
        let Ok((mut s, _)) = listener.accept() else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let mut head = Vec::new();
        let mut b = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(k) => head.extend_from_slice(&b[..k]),
            }
        }
        let _ = s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        );
        socks.push(s);
    }
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let threads = std::thread::available_parallelism().map_or(1, |c| c.get());
    let per = n.div_ceil(threads).max(1);
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    let mut it = socks.into_iter();
    loop {
        let group: Vec<StdStream> = it.by_ref().take(per).collect();
        if group.is_empty() {
            break;
        }
        let (tx, rx) = std::sync::mpsc::channel::<Arc<Vec<u8>>>();
        senders.push(tx);
        handles.push(std::thread::spawn(move || {
            let mut group = group;
            while let Ok(frame) = rx.recv() {
                for s in &mut group {
                    let _ = s.write_all(&frame);
                }
            }
        }));
    }
    let pad = "x".repeat(payload);
    let started = Instant::now();
    for i in 0..total {
        if let Some(at) = (i * 1_000_000_000).checked_div(rate) {
            let due = started + Duration::from_nanos(at);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let p = i as usize % publishers.max(1);
        let seq = i / publishers.max(1) as u64;
        let json = format!(
            "{{\"event_type\":\"tick\",\"channel\":\"games\",\"offset\":{},\"data\":{{\"p\":{p},\"seq\":{seq},\"ts\":{},\"pad\":\"{pad}\"}}}}",
            i + 1,
            now_nanos()
        );
        let frame = Arc::new(codec::encode_frame(true, OpCode::Text, json.as_bytes()).to_vec());
        for tx in &senders {
            let _ = tx.send(frame.clone());
        }
    }
    drop(senders);
    for h in handles {
        let _ = h.join();
    }
    // Stay alive until killed, so sockets are not closed under the readers.
    std::thread::sleep(Duration::from_secs(3600));
}

// ---------------------------------------------------------------- report

struct Row {
    scenario: String,
    server: Kind,
    r: RunResult,
}

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1} ms", v as f64 / 1000.0)
    } else {
        format!("{v} µs")
    }
}

fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| scenario | server | deliveries/s | p50 | p99 | p99.9 | max | lost / dup / reord | server CPU µs/delivery | RSS/conn |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let r = &row.r;
        if r.deliveries == 0 && r.seconds == 0.0 {
            t.push_str(&format!(
                "| {} | {} | | | | | | | | {:.0} B |\n",
                row.scenario,
                row.server.name(),
                r.rss_per_conn
            ));
            continue;
        }
        let dps = r.deliveries as f64 / r.seconds.max(1e-9);
        let cpu_per = r.cpu * 1e6 / (r.deliveries.max(1) as f64);
        t.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} / {} / {} | {:.2} | {:.0} B |\n",
            row.scenario,
            row.server.name(),
            dps,
            us(r.hist.value_at_quantile(0.5)),
            us(r.hist.value_at_quantile(0.99)),
            us(r.hist.value_at_quantile(0.999)),
            us(r.hist.max()),
            r.lost,
            r.duplicated,
            r.reordered,
            cpu_per,
            r.rss_per_conn
        ));
    }
    t
}

fn ratios(rows: &[Row]) -> String {
    let mut by: HashMap<(&str, Kind), &RunResult> = HashMap::new();
    for r in rows {
        by.insert((r.scenario.as_str(), r.server), &r.r);
    }
    let mut scen: Vec<&str> = Vec::new();
    for r in rows {
        if !scen.contains(&r.scenario.as_str()) {
            scen.push(&r.scenario);
        }
    }
    let mut t = String::from(
        "| scenario | deliveries/s huddle÷baseline | huddle÷raw | CPU/delivery huddle÷baseline | huddle÷raw | p99 huddle÷baseline | p99.9÷p99 (huddle) | RSS/conn huddle÷baseline |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let dps = |r: &RunResult| r.deliveries as f64 / r.seconds.max(1e-9);
    let cpu = |r: &RunResult| r.cpu / r.deliveries.max(1) as f64;
    let f = |x: Option<f64>| {
        x.filter(|v| v.is_finite())
            .map_or("–".into(), |v| format!("{v:.2}"))
    };
    for s in scen {
        let h = by.get(&(s, Kind::Huddle));
        let b = by.get(&(s, Kind::Baseline));
        let w = by.get(&(s, Kind::Raw));
        let Some(h) = h else { continue };
        let live = h.deliveries > 0;
        t.push_str(&format!(
            "| {s} | {} | {} | {} | {} | {} | {} | {} |\n",
            f(b.filter(|_| live).map(|b| dps(h) / dps(b))),
            f(w.filter(|_| live).map(|w| dps(h) / dps(w))),
            f(b.filter(|_| live).map(|b| cpu(h) / cpu(b))),
            f(w.filter(|_| live).map(|w| cpu(h) / cpu(w))),
            f(b.filter(|_| live).map(|b| {
                h.hist.value_at_quantile(0.99) as f64 / b.hist.value_at_quantile(0.99).max(1) as f64
            })),
            f(live.then(|| {
                h.hist.value_at_quantile(0.999) as f64
                    / h.hist.value_at_quantile(0.99).max(1) as f64
            })),
            f(b.map(|b| h.rss_per_conn / b.rss_per_conn.max(1.0))),
        ));
    }
    t
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    format!("{cores} cores (nproc), {cpu}")
}

fn main() {
    match std::env::var("FANOUT_ROLE").as_deref() {
        Ok("baseline") => return baseline_serve(),
        Ok("raw") => return raw_serve(),
        _ => {}
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let smoke = std::env::var("FANOUT_SMOKE").is_ok_and(|v| v == "1");
    let seconds: u64 = env_or("FANOUT_SECONDS", 5);
    let wanted: Option<Vec<String>> = std::env::var("FANOUT_SCENARIOS")
        .ok()
        .map(|v| v.split(',').map(str::to_owned).collect());
    let servers: Vec<Kind> = std::env::var("FANOUT_SERVERS")
        .unwrap_or_else(|_| "huddle,baseline,raw".into())
        .split(',')
        .filter_map(|s| match s {
            "huddle" => Some(Kind::Huddle),
            "baseline" => Some(Kind::Baseline),
            "raw" => Some(Kind::Raw),
            _ => None,
        })
        .collect();
    let status = Command::new("cargo")
        .args(["build", "--release", "--bin", "huddle"])
        .status()
        .expect("cargo build");
    assert!(status.success(), "release build failed");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    for sc in scenarios(seconds, smoke) {
        if wanted
            .as_ref()
            .is_some_and(|w| !w.iter().any(|n| n == sc.name))
        {
            continue;
        }
        for &kind in &servers {
            if sc.idle_only && kind == Kind::Raw {
                continue;
            }
            eprintln!("fanout: {} against {} …", sc.label, kind.name());
            let r = rt.block_on(run_one(kind, &sc));
            rows.push(Row {
                scenario: sc.label.clone(),
                server: kind,
                r,
            });
        }
    }
    let date = String::from_utf8(
        Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d %H:%M UTC")
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    let cmd = if smoke {
        "FANOUT_SMOKE=1 cargo bench --bench fanout".to_owned()
    } else {
        format!("FANOUT_SECONDS={seconds} cargo bench --bench fanout")
    };
    let report = format!(
        "## {} — `{}`\n\nMachine: {}. Clients and servers share the machine; compare ratios within one run.\n\n{}\nRatios (same run):\n\n{}\n",
        date.trim(),
        cmd,
        machine(),
        table(&rows),
        ratios(&rows)
    );
    println!("{report}");
    let failures: u64 = rows
        .iter()
        .filter(|r| r.server == Kind::Huddle)
        .map(|r| r.r.lost + r.r.duplicated + r.r.reordered)
        .sum();
    if !smoke && std::env::var("FANOUT_NO_WRITE").is_err() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let (head, rest) = match old.find("\n## ") {
            Some(i) => (old[..i + 1].to_owned(), old[i + 1..].to_owned()),
            None if old.is_empty() => (
                "# Benchmarks\n\nNewest first. Produced by `cargo bench --bench fanout`.\n\n"
                    .to_owned(),
                String::new(),
            ),
            None => (old.clone(), String::new()),
        };
        let _ = std::fs::write(&path, format!("{head}{report}\n{rest}"));
    }
    if failures > 0 {
        eprintln!("fanout: huddle lost, duplicated or reordered {failures} deliveries");
        std::process::exit(1);
    }
}
