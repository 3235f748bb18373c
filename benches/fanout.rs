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
//! Three more scenarios run against huddle only:
//!
//! - **flood**: one WebSocket publisher pipelining publishes as fast as it can for
//!   `FANOUT_FLOOD_SECS` (10) against `FANOUT_FLOOD_SUBSCRIBERS` (2,000) subscribers that read as
//!   fast as they can, 2 shards. Samples the server's VmRSS every 100 ms and `/healthz` latency;
//!   checks that every subscriber that kept up got offsets 1..=N (N: the highest offset in the
//!   publisher's replies) with no gap, duplicate or reordering. Bounds (issue text): RSS within
//!   64 MiB of the pre-flood level during the flood, within 8 MiB 3 s after it.
//! - **stalled**: the 1k×200/s fan-out run twice, once with every subscriber reading and once
//!   with 10% of them connected with a 4 KiB `SO_RCVBUF` and never reading; compares the fast
//!   readers' p99 and the server CPU per delivery (targets: within 1.2× and 1.1×).
//! - **storm**: a reconnect storm (PROTOCOL.md §10), 2 shards (`FANOUT_STORM_SHARDS`), `--history-size 100 --recovery-max
//!   1000` (raised to the gap if it is larger). `FANOUT_STORM_LIVE` (500) subscribers read the
//!   channel `live`, published at `FANOUT_STORM_RATE` (1,000) msg/s over the WebSocket, with the
//!   latency method above. `FANOUT_STORM_CLIENTS` (1,000) clients subscribe to `storm`, note
//!   offset and epoch, and disconnect; `FANOUT_STORM_MISSED` (100) messages are published to
//!   `storm`; after 2 s of quiet all of them reconnect at once and subscribe with `since`.
//!   Reports the time from the first reconnect to the last client holding its `recovered:true`
//!   reply and every missed message, per-client p50/p99, and the live channel's latency during
//!   the storm against the same-length window just before it. Fails unless every client gets
//!   `recovered:true` and exactly offsets since+1..=top in order, each the frame a witness (a
//!   `storm` subscriber that never leaves) received live, then the next live offset; and on any
//!   fault in the live channel's delivery. It holds about clients + subscribers sockets in this
//!   process and as many in the server: `ulimit -n 20000` (the soft limit is raised to the hard
//!   one here).
//!
//! `cargo bench --bench fanout` runs every scenario and appends the tables to BENCHMARKS.md.
//! Environment: `FANOUT_SCENARIOS=1k-200,10k-burst,flood,stalled,storm` (names below;
//! `FANOUT_SCENARIO` is accepted too), `FANOUT_SECONDS=5`, `FANOUT_SMOKE=1` (tiny sizes, for CI),
//! `FANOUT_SERVERS=huddle,baseline,raw`, `FANOUT_NO_WRITE=1` (print only), `FANOUT_SUBSCRIBERS` /
//! `FANOUT_MESSAGES` (override sizes), `FANOUT_FLOOD_SECS` / `FANOUT_FLOOD_SUBSCRIBERS` (flood
//! sizes), `FANOUT_FLOOD_RSS_CAP_MIB` (4096; smoke 256: a safety stop, the publisher stops
//! early once the server's RSS passes it), `FANOUT_RSS_REPORT_ONLY=1` (a full run does not fail
//! on the flood's RSS bounds; smoke runs never do), `FANOUT_STORM_CLIENTS` /
//! `FANOUT_STORM_MISSED` / `FANOUT_STORM_LIVE` / `FANOUT_STORM_RATE` (storm sizes; smoke: 20,
//! 10, 20, 200), `FANOUT_STORM_SHARDS` (2), `HUDDLE_BIN` (a prebuilt server binary instead of building
//! target/release/huddle), `FANOUT_HUDDLE_PREFIX` (run huddle under a tool
//! such as valgrind). Any run fails on lost, duplicated or reordered deliveries.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use huddle::codec::{self, OpCode};
use support::{cpu_seconds, env_or, machine_busy_seconds, now_nanos, ready_addr, vm_rss_kib};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const API_KEY: &str = "bench";

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
    /// The last `stalled` subscribers connect with a 4 KiB receive buffer and never read; they
    /// get no reader task and are not counted in deliveries or latency (huddle only).
    stalled: usize,
    /// Extra `huddle serve` flags.
    huddle_args: Vec<String>,
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
        stalled: 0,
        huddle_args: Vec::new(),
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

/// The server binary: `HUDDLE_BIN`, or this checkout's release build.
fn huddle_bin() -> std::path::PathBuf {
    std::env::var_os("HUDDLE_BIN").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/huddle"),
        std::path::PathBuf::from,
    )
}

fn start_server(kind: Kind, sc: &Scenario) -> ServerProc {
    match kind {
        Kind::Huddle => {
            let bin = huddle_bin();
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
                .args(&sc.huddle_args)
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

// ---------------------------------------------------------------- the client side

/// Opens a WebSocket with a hand-written upgrade; returns the stream and any bytes read past
/// the 101 head. The same code talks to every server.
async fn ws_connect(addr: SocketAddr, path: &str) -> (TcpStream, Vec<u8>) {
    ws_connect_rcvbuf(addr, path, None).await
}

/// [`ws_connect`], with `SO_RCVBUF` set before the connect when `rcvbuf` is given (so the
/// window the kernel advertises stays that small).
async fn ws_connect_rcvbuf(
    addr: SocketAddr,
    path: &str,
    rcvbuf: Option<u32>,
) -> (TcpStream, Vec<u8>) {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .expect("socket");
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n).expect("SO_RCVBUF");
    }
    let mut s = tokio::time::timeout(Duration::from_secs(10), sock.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let _ = s.set_nodelay(true);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write upgrade");
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("upgrade answer timed out")
            .expect("read upgrade");
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

/// The first complete frame (unmasked, as servers send them) at the start of `buf`:
/// (opcode, header length, payload length); `None` until all of it is there.
fn frame_at(buf: &[u8]) -> Option<(u8, usize, usize)> {
    if buf.len() < 2 {
        return None;
    }
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
    (buf.len() >= hdr + len).then_some((buf[0] & 0x0f, hdr, len))
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
        while let Some((opcode, hdr, len)) = frame_at(&buf) {
            let payload = &buf[hdr..hdr + len];
            if opcode == 0x1 {
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

#[derive(Clone)]
struct RunResult {
    deliveries: u64,
    seconds: f64,
    hist: Histogram<u64>,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    cpu: f64,
    rss_per_conn: f64,
    /// Stalled subscribers that turned out, once read after the run, to have been closed with
    /// 4008; and those whose stream ended some other way (EOF, another close code).
    stalled_4008: usize,
    stalled_other_close: usize,
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
    let first_stalled = sc.subscribers.saturating_sub(sc.stalled);
    let mut conns: Vec<(TcpStream, Vec<u8>)> = futures_util::stream::iter(0..sc.subscribers)
        .map(|i| {
            let p = path(sc.publishers_subscribe && i < sc.publishers, true);
            let rcvbuf = (i >= first_stalled).then_some(STALLED_RCVBUF);
            async move { ws_connect_rcvbuf(addr, &p, rcvbuf).await }
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
            stalled_4008: 0,
            stalled_other_close: 0,
        };
    }
    // Stalled subscribers: connected and subscribed, never read until the run is over.
    let stalled: Vec<(TcpStream, Vec<u8>)> = conns.split_off(first_stalled);
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
    let (mut stalled_4008, mut stalled_other_close) = (0, 0);
    let ends =
        futures_util::future::join_all(stalled.into_iter().map(|(s, b)| drain_until_close(s, b)));
    for end in ends.await {
        match end {
            StreamEnd::Close(4008) => stalled_4008 += 1,
            StreamEnd::StillOpen => {}
            _ => stalled_other_close += 1,
        }
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
        stalled_4008,
        stalled_other_close,
    }
}

/// Receive buffer of a stalled subscriber's socket (the kernel doubles it).
const STALLED_RCVBUF: u32 = 4096;

/// How a connection's stream ended, as far as the client saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    /// A close frame with this code (1005 when it carried none).
    Close(u16),
    /// EOF or a read error without a close frame.
    Eof,
    /// Nothing more arrived for a while and the socket is still open.
    StillOpen,
}

/// The close code of a close frame's payload (1005: none given).
fn close_code(payload: &[u8]) -> u16 {
    if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]])
    } else {
        1005
    }
}

/// Reads a (stalled) connection's backlog until a close frame, EOF, 1 s of silence or 15 s in
/// all, whichever comes first.
async fn drain_until_close(mut s: TcpStream, mut buf: Vec<u8>) -> StreamEnd {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut at = 0;
    loop {
        while let Some((opcode, hdr, len)) = frame_at(&buf[at..]) {
            if opcode == 0x8 {
                return StreamEnd::Close(close_code(&buf[at + hdr..at + hdr + len]));
            }
            at += hdr + len;
        }
        buf.drain(..at);
        at = 0;
        let wait = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
        match tokio::time::timeout_at(wait, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => return StreamEnd::Eof,
            Err(_) => return StreamEnd::StillOpen,
        }
    }
}

// ---------------------------------------------------------------- publish flood

/// Sizes of the publish flood.
#[derive(Clone, Debug)]
struct FloodConfig {
    subscribers: usize,
    seconds: u64,
    /// Safety stop, not a bound: the publisher stops early once the server's RSS passes this, so
    /// a server that buffers without limit cannot take the (shared) machine's memory.
    rss_cap_mib: u64,
}

/// Bounds from the issue: RSS over the pre-flood level, during the flood and 3 s after it.
const FLOOD_RSS_DURING_MIB: f64 = 64.0;
const FLOOD_RSS_AFTER_MIB: f64 = 8.0;
/// RSS is sampled this long after the flood stops; the "after" figure is the last sample.
const FLOOD_AFTER: Duration = Duration::from_secs(3);
/// Readers and the publisher's reply reader give up this long after the flood stops.
const FLOOD_DRAIN: Duration = Duration::from_secs(30);
/// `/healthz` requests spread over the flood, and how long each may take.
const FLOOD_HEALTHZ_GETS: u32 = 5;
const HEALTHZ_TIMEOUT: Duration = Duration::from_secs(20);

/// One flood subscriber's view of the channel.
#[derive(Default)]
struct FloodReader {
    received: u64,
    /// Highest offset seen.
    last: u64,
    /// Offsets skipped over (a gap before a later offset, or from 1 to the first one).
    lost: u64,
    /// Offsets at or below one already seen.
    dup_or_reordered: u64,
    end: Option<StreamEnd>,
}

/// Shared by the flood's readers.
struct FloodSignals {
    /// Readers that have their `connection_ack`.
    ready: AtomicU64,
    /// The highest offset the publisher was answered with, once all replies are in;
    /// `u64::MAX` until then.
    target: AtomicU64,
    /// Give up now (the drain time is over).
    stop: std::sync::atomic::AtomicBool,
}

/// Waits for `connection_ack` (then counts itself in `ready`), and reads channel messages as
/// fast as it can until it has offset `target`, the server closes it, `stop` is set, or
/// `deadline` (a backstop) passes.
async fn flood_reader(
    mut s: TcpStream,
    mut buf: Vec<u8>,
    sig: Arc<FloodSignals>,
    deadline: tokio::time::Instant,
) -> FloodReader {
    let mut r = FloodReader::default();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut at = 0;
    let mut acked = false;
    loop {
        while let Some((opcode, hdr, len)) = frame_at(&buf[at..]) {
            let payload = &buf[at + hdr..at + hdr + len];
            at += hdr + len;
            match opcode {
                0x8 => r.end = Some(StreamEnd::Close(close_code(payload))),
                0x1 if !acked && payload.starts_with(b"{\"event_type\":\"connection_ack\"") => {
                    acked = true;
                    sig.ready.fetch_add(1, Ordering::Relaxed);
                }
                0x1 => {
                    let Some(off) = find_u64(payload, b"\"offset\":") else {
                        continue;
                    };
                    r.received += 1;
                    if off > r.last {
                        r.lost += off - r.last - 1;
                        r.last = off;
                    } else {
                        r.dup_or_reordered += 1;
                    }
                }
                _ => {}
            }
        }
        buf.drain(..at);
        at = 0;
        if r.end.is_some() || r.last >= sig.target.load(Ordering::Relaxed) {
            return r;
        }
        // Short reads so that a target or stop set meanwhile is seen soon.
        let wait = (tokio::time::Instant::now() + Duration::from_millis(200)).min(deadline);
        match tokio::time::timeout_at(wait, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => {
                r.end = Some(StreamEnd::Eof);
                return r;
            }
            Err(_)
                if sig.stop.load(Ordering::Relaxed) || tokio::time::Instant::now() >= deadline =>
            {
                r.end = Some(StreamEnd::StillOpen);
                return r;
            }
            Err(_) => {}
        }
    }
}

/// What the flooding publisher sent and was answered.
#[derive(Default, Debug)]
struct FloodPublisher {
    sent: u64,
    /// How long the writer wrote.
    wrote_for: Duration,
    /// `publish` replies, and the highest offset among them.
    published: u64,
    highest_offset: u64,
    /// `error` replies with code `overloaded`.
    overloaded: u64,
    /// Any other reply, with the first one kept for the report.
    other: u64,
    first_other: Option<String>,
    /// Why writing or reading stopped early, if it did.
    problem: Option<String>,
}

impl FloodPublisher {
    fn answered(&self) -> u64 {
        self.published + self.overloaded + self.other
    }
}

/// The publish frame of the flood: channel `games`, custom event `score`, a small payload.
fn flood_frame(n: u64, out: &mut Vec<u8>) {
    let json = format!(
        "{{\"event_type\":\"publish\",\"message_id\":\"p{n}\",\"data\":{{\"channel\":\"games\",\"event_type\":\"score\",\"data\":{{\"home\":{},\"away\":{},\"n\":{n}}}}}}}",
        n % 50,
        n % 7
    );
    out.extend_from_slice(&codec::encode_masked_frame(
        true,
        OpCode::Text,
        json.as_bytes(),
        [1, 2, 3, 4],
    ));
}

/// Pipelines publishes on `s` until `until` (a writer that never waits for replies, in batches
/// of 64 frames, each batch written whole so no frame is cut), while a reader counts the replies;
/// returns once every publish is answered or `FLOOD_DRAIN` after `until`.
/// Stops early when `capped` is set.
async fn flood_publisher(
    s: TcpStream,
    mut buf: Vec<u8>,
    until: Instant,
    capped: Arc<std::sync::atomic::AtomicBool>,
) -> FloodPublisher {
    let (mut rd, mut wr) = s.into_split();
    let sent = Arc::new(AtomicU64::new(0));
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (sent, writing) = (sent.clone(), writing.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut batch = Vec::with_capacity(64 * 160);
            let mut n = 0u64;
            let mut problem = None;
            while Instant::now() < until && !capped.load(Ordering::Relaxed) {
                batch.clear();
                for _ in 0..64 {
                    n += 1;
                    flood_frame(n, &mut batch);
                }
                match tokio::time::timeout(FLOOD_DRAIN, wr.write_all(&batch)).await {
                    Ok(Ok(())) => sent.store(n, Ordering::Relaxed),
                    Ok(Err(e)) => {
                        problem = Some(format!("publisher write failed: {e}"));
                        break;
                    }
                    Err(_) => {
                        problem = Some(format!(
                            "publisher write blocked for {} s",
                            FLOOD_DRAIN.as_secs()
                        ));
                        break;
                    }
                }
            }
            writing.store(false, Ordering::Release);
            // `wr` stays open until here; the reader keeps its half.
            (wr, problem, started.elapsed())
        })
    };
    let mut r = FloodPublisher::default();
    let deadline = tokio::time::Instant::from_std(until + FLOOD_DRAIN);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut at = 0;
    'read: loop {
        while let Some((opcode, hdr, len)) = frame_at(&buf[at..]) {
            let payload = &buf[at + hdr..at + hdr + len];
            at += hdr + len;
            if opcode == 0x8 {
                r.problem = Some(format!(
                    "publisher closed by the server with {}",
                    close_code(payload)
                ));
                break 'read;
            }
            if opcode != 0x1 || payload.starts_with(b"{\"event_type\":\"connection_ack\"") {
                continue;
            }
            if payload.starts_with(b"{\"event_type\":\"publish\"") {
                r.published += 1;
                let off = find_u64(payload, b"\"offset\":").unwrap_or(0);
                r.highest_offset = r.highest_offset.max(off);
            } else if payload.starts_with(b"{\"event_type\":\"error\"")
                && payload.windows(22).any(|w| w == b"\"code\":\"overloaded\"")
            {
                r.overloaded += 1;
            } else {
                r.other += 1;
                if r.first_other.is_none() {
                    r.first_other = Some(String::from_utf8_lossy(payload).into_owned());
                }
            }
        }
        buf.drain(..at);
        at = 0;
        if !writing.load(Ordering::Acquire) && r.answered() >= sent.load(Ordering::Relaxed) {
            break;
        }
        let wait = (tokio::time::Instant::now() + Duration::from_millis(200)).min(deadline);
        match tokio::time::timeout_at(wait, rd.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => {
                r.problem = Some("publisher connection ended (EOF)".into());
                break;
            }
            Err(_) if tokio::time::Instant::now() >= deadline => {
                r.problem = Some(format!(
                    "publish replies still missing {} s after the flood",
                    FLOOD_DRAIN.as_secs()
                ));
                break;
            }
            Err(_) => {}
        }
    }
    writing.store(false, Ordering::Release);
    match tokio::time::timeout(FLOOD_DRAIN, writer).await {
        Ok(Ok((_wr, problem, wrote_for))) => {
            r.wrote_for = wrote_for;
            if let Some(p) = problem {
                r.problem.get_or_insert(p);
            }
        }
        Ok(Err(e)) => {
            r.problem
                .get_or_insert(format!("publisher writer task failed: {e}"));
        }
        Err(_) => {
            r.problem
                .get_or_insert("publisher writer did not stop".into());
        }
    }
    r.sent = sent.load(Ordering::Relaxed);
    r
}

/// One `GET /healthz` on a fresh connection; the time to the whole answer, or why it failed.
fn healthz_once(addr: SocketAddr) -> Result<Duration, String> {
    let t = Instant::now();
    let io = |what: &str, e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("no {what} within {} s", HEALTHZ_TIMEOUT.as_secs())
        }
        _ => format!("{what}: {e}"),
    };
    let mut s = StdStream::connect_timeout(&addr, HEALTHZ_TIMEOUT).map_err(|e| io("connect", e))?;
    let _ = s.set_read_timeout(Some(HEALTHZ_TIMEOUT));
    let _ = s.set_write_timeout(Some(HEALTHZ_TIMEOUT));
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .map_err(|e| io("write", e))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).map_err(|e| io("answer", e))?;
    if answer.starts_with(b"HTTP/1.1 200") {
        Ok(t.elapsed())
    } else {
        Err(format!(
            "answer {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(40)])
        ))
    }
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.1} ms")
    }
}

/// What a flood run found, and whether it failed.
struct FloodOutcome {
    report: String,
    /// Lost, duplicated or reordered deliveries to readers that kept up, and other breaches
    /// of §6/§7 that make the run fail.
    failures: u64,
    rss_pass: bool,
}

/// Starts huddle (2 shards), connects the subscribers to `/ws/games` and the publisher to
/// `/ws?api_key=…`, floods for `cfg.seconds`, and reports RSS over time, `/healthz` latency and
/// delivery.
async fn run_flood(cfg: &FloodConfig) -> FloodOutcome {
    let sc = Scenario {
        name: "flood",
        label: String::new(),
        subscribers: cfg.subscribers,
        publishers: 1,
        publishers_subscribe: false,
        rate: 0,
        messages: 0,
        payload: 0,
        idle_only: false,
        stalled: 0,
        huddle_args: vec!["--shards".into(), "2".into()],
    };
    let server = start_server(Kind::Huddle, &sc);
    let (addr, pid) = (server.addr, server.pid());
    let conns: Vec<(TcpStream, Vec<u8>)> = futures_util::stream::iter(0..cfg.subscribers)
        .map(|_| ws_connect(addr, "/ws/games"))
        .buffer_unordered(128)
        .collect()
        .await;
    let sig = Arc::new(FloodSignals {
        ready: AtomicU64::new(0),
        target: AtomicU64::new(u64::MAX),
        stop: std::sync::atomic::AtomicBool::new(false),
    });
    let flood_secs = Duration::from_secs(cfg.seconds);
    // A backstop only: readers are stopped through `sig.stop` once the drain time is over.
    let backstop = tokio::time::Instant::now() + Duration::from_secs(60) + flood_secs + FLOOD_DRAIN;
    let readers: Vec<_> = conns
        .into_iter()
        .map(|(s, b)| tokio::spawn(flood_reader(s, b, sig.clone(), backstop)))
        .collect();
    // Every subscriber has its `connection_ack`, so it is subscribed before offset 1 exists.
    let wait_until = Instant::now() + Duration::from_secs(10);
    while sig.ready.load(Ordering::Relaxed) < cfg.subscribers as u64 && Instant::now() < wait_until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let acked = sig.ready.load(Ordering::Relaxed);
    let (pub_stream, pub_buf) = ws_connect(addr, &format!("/ws?api_key={API_KEY}")).await;
    let healthz_idle = healthz_once(addr);

    // RSS sampler and /healthz prober: threads of their own, so the readers' load on this
    // process's runtime does not delay them. Samples from 1 s before the flood to 3 s after.
    let t0 = Instant::now() + Duration::from_secs(1);
    let flood_end = t0 + flood_secs;
    let capped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cap_kib = cfg.rss_cap_mib * 1024;
    let cap_flag = capped.clone();
    let sampler = std::thread::spawn(move || {
        let mut samples = Vec::new();
        let mut capped_at = None;
        let mut at = t0 - Duration::from_secs(1);
        let stop = flood_end + FLOOD_AFTER;
        while at <= stop {
            if let Some(w) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            let now = Instant::now();
            // Seconds from t0, negative before it.
            let t = now.saturating_duration_since(t0).as_secs_f64()
                - t0.saturating_duration_since(now).as_secs_f64();
            let rss = vm_rss_kib(pid);
            if rss > cap_kib && capped_at.is_none() {
                cap_flag.store(true, Ordering::Relaxed);
                capped_at = Some(t);
            }
            samples.push((t, rss));
            at += Duration::from_millis(100);
        }
        (samples, capped_at)
    });
    // One thread per GET, each started at its time, so a slow answer does not delay the next.
    let every = flood_secs / FLOOD_HEALTHZ_GETS;
    let probers: Vec<_> = (0..FLOOD_HEALTHZ_GETS)
        .map(|i| {
            let due = t0 + every * i + every / 2;
            std::thread::spawn(move || {
                if let Some(w) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(w);
                }
                let at = Instant::now().saturating_duration_since(t0);
                (at, healthz_once(addr))
            })
        })
        .collect();
    if let Some(w) = t0.checked_duration_since(Instant::now()) {
        tokio::time::sleep(w).await;
    }
    let cpu_before = cpu_seconds(pid);
    let publisher = flood_publisher(pub_stream, pub_buf, flood_end, capped).await;
    let replies_done = Instant::now();
    sig.target
        .store(publisher.highest_offset, Ordering::Relaxed);
    let drain_until = flood_end + FLOOD_DRAIN;
    while !readers.iter().all(|t| t.is_finished()) && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sig.stop.store(true, Ordering::Relaxed);
    let mut rs = Vec::with_capacity(readers.len());
    for t in readers {
        // Each reader sees `stop` within 200 ms; the timeout only guards against a bug here.
        match tokio::time::timeout(Duration::from_secs(5), t).await {
            Ok(Ok(r)) => rs.push(r),
            _ => rs.push(FloodReader {
                end: Some(StreamEnd::StillOpen),
                ..FloodReader::default()
            }),
        }
    }
    let drained = Instant::now();
    let cpu = cpu_seconds(pid) - cpu_before;
    // Joining blocks this thread for at most the rest of the sampling window.
    let (samples, capped_at) = sampler.join().unwrap_or_default();
    let probes: Vec<(Duration, Result<Duration, String>)> = probers
        .into_iter()
        .map(|p| {
            p.join()
                .unwrap_or((Duration::ZERO, Err("prober thread panicked".into())))
        })
        .collect();
    drop(server);

    // ---- delivery
    let n = publisher.highest_offset;
    let (mut kept_up, mut slow, mut other_close, mut behind) = (0usize, 0usize, 0usize, 0usize);
    let mut behind_at = u64::MAX;
    let (mut lost, mut disorder, mut slow_lost, mut slow_disorder) = (0u64, 0u64, 0u64, 0u64);
    let mut deliveries = 0u64;
    let mut other_ends: Vec<String> = Vec::new();
    let mut beyond = 0usize;
    for r in &rs {
        deliveries += r.received;
        if r.last > n {
            beyond += 1;
        }
        match r.end {
            Some(StreamEnd::Close(4008)) => {
                slow += 1;
                slow_lost += r.lost;
                slow_disorder += r.dup_or_reordered;
            }
            Some(StreamEnd::Close(code)) => {
                other_close += 1;
                lost += r.lost + n.saturating_sub(r.last);
                disorder += r.dup_or_reordered;
                other_ends.push(format!("close {code}"));
            }
            Some(StreamEnd::Eof) => {
                other_close += 1;
                lost += r.lost + n.saturating_sub(r.last);
                disorder += r.dup_or_reordered;
                other_ends.push("EOF".into());
            }
            // Returned on reaching `n`, or still open at the deadline without it: then it is
            // behind (the server still had its backlog), which is not proof of loss.
            _ => {
                lost += r.lost;
                disorder += r.dup_or_reordered;
                if r.last < n {
                    behind += 1;
                    behind_at = behind_at.min(r.last);
                } else if r.lost == 0 && r.dup_or_reordered == 0 {
                    kept_up += 1;
                }
            }
        }
    }
    other_ends.sort();
    other_ends.dedup();
    let mut failures = lost + disorder + other_close as u64 + beyond as u64;
    let mut out = String::new();
    let w = |out: &mut String, s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    w(
        &mut out,
        format!(
            "### Publish flood — {} subscribers on `games` (`/ws/games`), one WebSocket publisher pipelining for {} s, 2 shards\n",
            cfg.subscribers, cfg.seconds
        ),
    );
    if acked < cfg.subscribers as u64 {
        w(
            &mut out,
            format!("- **Only {acked} of {} subscribers had their `connection_ack` within 10 s** when the flood started.", cfg.subscribers),
        );
    }
    w(
        &mut out,
        format!(
            "- Publisher: sent {} publishes ({:.0}/s); replies: {} `publish` (highest offset {}), {} `overloaded`, {} other, {} unanswered; all answered {:.1} s after the flood stopped.",
            publisher.sent,
            publisher.sent as f64 / publisher.wrote_for.as_secs_f64().max(1e-3),
            publisher.published,
            publisher.highest_offset,
            publisher.overloaded,
            publisher.other,
            publisher.sent.saturating_sub(publisher.answered()),
            replies_done.saturating_duration_since(flood_end).as_secs_f64(),
        ),
    );
    if let Some(t) = capped_at {
        w(
            &mut out,
            format!(
                "  **The publisher was stopped early, at t = {t:.1} s: server RSS passed the safety cap of {} MiB** (`FANOUT_FLOOD_RSS_CAP_MIB`).",
                cfg.rss_cap_mib
            ),
        );
    }
    if let Some(o) = &publisher.first_other {
        w(&mut out, format!("  First other reply: `{o}`"));
    }
    if let Some(p) = &publisher.problem {
        failures += 1;
        w(&mut out, format!("  **Problem:** {p}."));
    }
    if publisher.published != publisher.highest_offset {
        failures += 1;
        w(
            &mut out,
            format!(
                "  **{} publishes answered as published, but the highest offset is {}** (one publisher on a fresh channel: they should match).",
                publisher.published, publisher.highest_offset
            ),
        );
    }
    w(
        &mut out,
        format!(
            "- Subscribers: {} kept up (offsets 1..={n}, no gap, duplicate or reordering); {slow} closed with 4008 slow consumer (did not keep up); {other_close} ended otherwise{}; {behind} still open but behind {} s after the flood{}.",
            kept_up,
            if other_ends.is_empty() { String::new() } else { format!(" ({})", other_ends.join(", ")) },
            FLOOD_DRAIN.as_secs(),
            if behind > 0 { format!(" (the furthest behind at offset {behind_at} of {n})") } else { String::new() },
        ),
    );
    w(
        &mut out,
        format!(
            "- Delivery faults among readers that did not get 4008: {lost} lost, {disorder} duplicated or reordered{}. Among the 4008 readers, before their close: {slow_lost} lost, {slow_disorder} duplicated or reordered.",
            if beyond > 0 { format!(", {beyond} readers saw offsets above the publisher's highest") } else { String::new() }
        ),
    );
    w(
        &mut out,
        format!(
            "- Deliveries: {deliveries} in {:.1} s from the flood's start to the last reader done; server CPU {:.1} s ({:.2} µs per delivery).",
            drained.saturating_duration_since(t0).as_secs_f64(),
            cpu,
            cpu * 1e6 / deliveries.max(1) as f64
        ),
    );
    let probe_text: Vec<String> = probes
        .iter()
        .map(|(at, p)| match p {
            Ok(d) => format!("{} (t = {:.1} s)", ms(*d), at.as_secs_f64()),
            Err(e) => format!("failed: {e} (t = {:.1} s)", at.as_secs_f64()),
        })
        .collect();
    // A GET that got no answer counts as at least the timeout.
    let unanswered = probes
        .iter()
        .filter(|(_, p)| p.as_ref().is_err_and(|e| e.starts_with("no ")))
        .count();
    let probe_max = if unanswered > 0 {
        format!("> {} ({unanswered} unanswered)", ms(HEALTHZ_TIMEOUT))
    } else {
        probes
            .iter()
            .filter_map(|(_, p)| p.as_ref().ok())
            .max()
            .map_or("–".into(), |d| ms(*d))
    };
    w(
        &mut out,
        format!(
            "- `/healthz` before the flood: {}; during it ({} GETs): {}; max {}.",
            healthz_idle
                .as_ref()
                .map_or_else(|e| format!("failed ({e})"), |d| ms(*d)),
            probes.len(),
            probe_text.join(", "),
            probe_max,
        ),
    );

    // ---- RSS
    let mib = |kib: u64| kib as f64 / 1024.0;
    let pre: Vec<u64> = samples.iter().filter(|s| s.0 < 0.0).map(|s| s.1).collect();
    let pre = pre.iter().sum::<u64>() / pre.len().max(1) as u64;
    let during = samples
        .iter()
        .filter(|s| s.0 >= 0.0 && s.0 <= cfg.seconds as f64)
        .map(|s| s.1)
        .max()
        .unwrap_or(0);
    let after = samples.last().map_or(0, |s| s.1);
    let d_during = mib(during) - mib(pre);
    let d_after = mib(after) - mib(pre);
    let pass_during = d_during <= FLOOD_RSS_DURING_MIB;
    let pass_after = d_after <= FLOOD_RSS_AFTER_MIB;
    let verdict = |p: bool| if p { "PASS" } else { "FAIL" };
    w(&mut out, String::new());
    w(
        &mut out,
        "| server VmRSS | MiB | over pre-flood | bound | result |\n|---|---:|---:|---:|---|".into(),
    );
    w(
        &mut out,
        format!("| pre-flood (mean of 1 s) | {:.1} | | | |", mib(pre)),
    );
    w(
        &mut out,
        format!(
            "| max during the flood | {:.1} | {d_during:+.1} | ≤ {FLOOD_RSS_DURING_MIB} | {} |",
            mib(during),
            verdict(pass_during)
        ),
    );
    w(
        &mut out,
        format!(
            "| {} s after the flood | {:.1} | {d_after:+.1} | ≤ {FLOOD_RSS_AFTER_MIB} | {} |",
            FLOOD_AFTER.as_secs(),
            mib(after),
            verdict(pass_after)
        ),
    );
    w(&mut out, String::new());
    w(
        &mut out,
        format!("RSS over time (MiB, every 100 ms; t = 0 at the flood's start, it stops at {} s):\n\n```", cfg.seconds),
    );
    for row in samples.chunks(10) {
        let line: Vec<String> = row.iter().map(|s| format!("{:6.1}", mib(s.1))).collect();
        w(&mut out, format!("t={:+5.1}s {}", row[0].0, line.join("")));
    }
    w(&mut out, "```".into());
    FloodOutcome {
        report: out,
        failures,
        rss_pass: pass_during && pass_after,
    }
}

// ---------------------------------------------------------------- stalled readers

/// The `1k-200` scenario twice: every subscriber reading, then 10% stalled. When the stalled
/// connections' backlog over the run could come near the default `--send-queue-bytes` (1 MiB),
/// both runs get a larger limit, so the stalled sockets stay open (not yet closed) throughout;
/// the note says which.
fn stalled_pair(base: &Scenario) -> (Scenario, Scenario, String) {
    const DEFAULT_LIMIT: u64 = 1 << 20;
    // A delivered frame is the payload plus ~150 bytes of envelope; 200 to be safe.
    let backlog = base.messages * base.publishers as u64 * (base.payload as u64 + 200);
    let mut all = base.clone();
    let note = if backlog * 4 > DEFAULT_LIMIT * 3 {
        let limit = (backlog * 2).max(DEFAULT_LIMIT);
        all.huddle_args = vec!["--send-queue-bytes".into(), limit.to_string()];
        format!(
            "a stalled connection's backlog over the run is up to ~{} KiB, near the default 1 MiB `--send-queue-bytes`, so both runs use `--send-queue-bytes {limit}`",
            backlog / 1024
        )
    } else {
        format!(
            "a stalled connection's backlog over the run is up to ~{} KiB, under the default 1 MiB `--send-queue-bytes` (kept), so stalled sockets stay open until the end",
            backlog / 1024
        )
    };
    all.label = format!("{}, all reading", base.label);
    let mut stalled = all.clone();
    stalled.stalled = (base.subscribers / 10).max(1);
    stalled.label = format!("{}, {} of them stalled", base.label, stalled.stalled);
    (all, stalled, note)
}

/// The comparison of the two stalled-readers runs, against the targets.
fn stalled_report(all: &Row, stalled: &Row, sc: &Scenario, note: &str) -> String {
    let (a, s) = (&all.r, &stalled.r);
    let p99 = |r: &RunResult| r.hist.value_at_quantile(0.99);
    let cpu = |r: &RunResult| r.cpu * 1e6 / r.deliveries.max(1) as f64;
    // Counting the messages queued to stalled connections as deliveries too.
    let queued = s.deliveries + sc.stalled as u64 * sc.messages * sc.publishers as u64;
    let p99_ratio = p99(s) as f64 / p99(a).max(1) as f64;
    let cpu_ratio = cpu(s) / cpu(a).max(1e-9);
    let met = |ok: bool| if ok { "yes" } else { "no" };
    format!(
        "### Stalled readers — {} subscribers, {} stalled (`SO_RCVBUF` {STALLED_RCVBUF} before connect, never read)\n\n\
         Stalled connections: {note}. After the run {} of {} stalled connections turned out to have been closed with 4008 and {} to have ended otherwise.\n\n\
         {}\n\
         | measure | all reading | 10% stalled | ratio | target | met |\n|---|---:|---:|---:|---:|---|\n\
         | fast readers' p99 | {} | {} | {p99_ratio:.2} | ≤ 1.2 | {} |\n\
         | server CPU µs per delivery (to fast readers) | {:.2} | {:.2} | {cpu_ratio:.2} | ≤ 1.1 | {} |\n\
         | server CPU µs per queued delivery (stalled included) | {:.2} | {:.2} | {:.2} | | |\n",
        sc.subscribers,
        sc.stalled,
        s.stalled_4008,
        sc.stalled,
        s.stalled_other_close,
        table(&[
            Row { scenario: all.scenario.clone(), server: all.server, r: a.clone() },
            Row { scenario: stalled.scenario.clone(), server: stalled.server, r: s.clone() },
        ]),
        us(p99(a)),
        us(p99(s)),
        met(p99_ratio <= 1.2),
        cpu(a),
        cpu(s),
        met(cpu_ratio <= 1.1),
        cpu(a),
        s.cpu * 1e6 / queued.max(1) as f64,
        (s.cpu / queued.max(1) as f64) / (a.cpu / a.deliveries.max(1) as f64).max(1e-15),
    )
}

// ---------------------------------------------------------------- reconnect storm

/// Sizes of the reconnect storm.
#[derive(Clone, Debug)]
struct StormConfig {
    /// Clients that subscribe to `storm`, all disconnect, and all reconnect at once with `since`.
    clients: usize,
    /// Messages published to `storm` while they are away: what each of them recovers.
    missed: u64,
    /// Subscribers of `live`, and its publish rate (messages per second).
    live: usize,
    rate: u64,
    /// `--shards` of the server (2; 1 when it is pinned to one core with `FANOUT_HUDDLE_PREFIX`).
    shards: usize,
    /// From the last missed publish to the storm, and from the storm's end to the live
    /// publisher's stop.
    quiet: Duration,
    after: Duration,
}

impl StormConfig {
    /// `--history-size` and `--recovery-max`: the defaults (100, 1000), or the gap when larger.
    fn history_size(&self) -> u64 {
        self.missed.max(100)
    }

    fn recovery_max(&self) -> u64 {
        self.missed.max(1000)
    }

    /// Sockets the bench process holds at once (the server holds as many).
    fn sockets(&self) -> u64 {
        (self.clients + self.live) as u64 + 16
    }
}

/// Messages on `storm` before its clients first subscribe, so the offset they note is not 0.
const STORM_PRELOAD: u64 = 5;
/// How long the storm may take before the clients still waiting count as failed.
const STORM_TIMEOUT: Duration = Duration::from_secs(60);
/// Setup steps (connects, subscribes, publishes) give up after this.
const STORM_STEP: Duration = Duration::from_secs(30);
/// Payload padding of a live message (as in the fan-out scenarios).
const STORM_LIVE_PAD: usize = 100;

/// A client connection of the storm scenario: frames parsed from a buffer with a cursor, pings
/// answered.
struct WsClient {
    s: TcpStream,
    buf: Vec<u8>,
    at: usize,
}

impl WsClient {
    async fn connect(addr: SocketAddr, path: &str) -> Self {
        let (s, buf) = ws_connect(addr, path).await;
        WsClient { s, buf, at: 0 }
    }

    async fn send_text(&mut self, json: &str) -> std::io::Result<()> {
        let frame = codec::encode_masked_frame(true, OpCode::Text, json.as_bytes(), [5, 6, 7, 8]);
        self.s.write_all(&frame).await
    }

    /// The next text frame's payload; a close frame, EOF or `deadline` ends it.
    async fn next_text(&mut self, deadline: tokio::time::Instant) -> Result<Vec<u8>, StreamEnd> {
        let mut chunk = [0u8; 8192];
        loop {
            while let Some((opcode, hdr, len)) = frame_at(&self.buf[self.at..]) {
                let payload = self.at + hdr..self.at + hdr + len;
                self.at = payload.end;
                match opcode {
                    0x1 => return Ok(self.buf[payload].to_vec()),
                    0x8 => return Err(StreamEnd::Close(close_code(&self.buf[payload]))),
                    0x9 => {
                        let pong = codec::encode_masked_frame(
                            true,
                            OpCode::Pong,
                            &self.buf[payload],
                            [1, 2, 3, 4],
                        );
                        let _ = self.s.write_all(&pong).await;
                    }
                    _ => {}
                }
            }
            self.buf.drain(..self.at);
            self.at = 0;
            match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                Ok(_) => return Err(StreamEnd::Eof),
                Err(_) => return Err(StreamEnd::StillOpen),
            }
        }
    }

    /// The socket and the bytes read but not parsed yet.
    fn into_parts(mut self) -> (TcpStream, Vec<u8>) {
        self.buf.drain(..self.at);
        (self.s, self.buf)
    }
}

fn is_ack(payload: &[u8]) -> bool {
    payload.starts_with(b"{\"event_type\":\"connection_ack\"")
}

/// Subscribes `c` to `channel` (with `since` when given) and returns the reply's `data`. The
/// reply must be the first message after `connection_ack`.
async fn storm_subscribe(
    c: &mut WsClient,
    id: &str,
    channel: &str,
    since: Option<(u64, &str)>,
) -> Result<serde_json::Value, String> {
    let mut data = serde_json::json!({ "channel": channel });
    if let Some((offset, epoch)) = since {
        data["since"] = serde_json::json!({ "offset": offset, "epoch": epoch });
    }
    let msg =
        serde_json::json!({"event_type": "user_subscription", "message_id": id, "data": data});
    c.send_text(&msg.to_string())
        .await
        .map_err(|e| format!("subscribe write: {e}"))?;
    let deadline = tokio::time::Instant::now() + STORM_STEP;
    loop {
        let p = c
            .next_text(deadline)
            .await
            .map_err(|end| format!("no subscribe reply ({end:?})"))?;
        if is_ack(&p) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap_or_default();
        if v["event_type"] == "user_subscription" && v["reply_to"] == id {
            return Ok(v["data"].clone());
        }
        return Err(format!(
            "before the subscribe reply: {}",
            String::from_utf8_lossy(&p)
        ));
    }
}

/// Publishes one message per `(message_id, data)` to `storm` over `c` (pipelined), and returns
/// the offset and epoch of each answer, in order.
async fn storm_publish(
    c: &mut WsClient,
    items: &[(String, serde_json::Value)],
) -> Result<Vec<(u64, String)>, String> {
    let mut frames = Vec::new();
    for (id, data) in items {
        let msg = serde_json::json!({"event_type": "publish", "message_id": id,
            "data": {"channel": "storm", "event_type": "storm", "data": data}});
        frames.extend_from_slice(&codec::encode_masked_frame(
            true,
            OpCode::Text,
            msg.to_string().as_bytes(),
            [3, 1, 4, 1],
        ));
    }
    c.s.write_all(&frames)
        .await
        .map_err(|e| format!("publish write: {e}"))?;
    let mut answers: HashMap<String, (u64, String)> = HashMap::new();
    let deadline = tokio::time::Instant::now() + STORM_STEP;
    while answers.len() < items.len() {
        let p = c
            .next_text(deadline)
            .await
            .map_err(|end| format!("publish replies missing ({end:?})"))?;
        if is_ack(&p) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap_or_default();
        let r = &v["data"]["results"][0];
        match (
            v["reply_to"].as_str(),
            r["offset"].as_u64(),
            r["epoch"].as_str(),
        ) {
            (Some(id), Some(off), Some(epoch)) if v["event_type"] == "publish" => {
                answers.insert(id.to_owned(), (off, epoch.to_owned()));
            }
            _ => return Err(format!("publish answered {}", String::from_utf8_lossy(&p))),
        }
    }
    items
        .iter()
        .map(|(id, _)| {
            answers
                .remove(id)
                .ok_or_else(|| format!("no answer to {id}"))
        })
        .collect()
}

/// Reads `storm` messages on the witness (a subscriber that never leaves) until offset `upto`,
/// keeping each payload as first delivered.
async fn witness_read(
    c: &mut WsClient,
    seen: &mut Vec<(u64, Vec<u8>)>,
    upto: u64,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + STORM_STEP;
    while seen.last().map_or(0, |s| s.0) < upto {
        let p = c
            .next_text(deadline)
            .await
            .map_err(|end| format!("witness stream ended ({end:?}) before offset {upto}"))?;
        if let Some(off) = find_u64(&p, b"\"offset\":") {
            seen.push((off, p));
        }
    }
    Ok(())
}

/// Counts itself in `done` when told to or when dropped, so a client that fails or panics does
/// not keep the run waiting.
struct CountOnDrop(Option<Arc<AtomicU64>>);

impl CountOnDrop {
    fn count(&mut self) {
        if let Some(c) = self.0.take() {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for CountOnDrop {
    fn drop(&mut self) {
        self.count();
    }
}

/// One storm client's reconnect, as it saw it.
#[derive(Default)]
struct StormClient {
    /// Nanoseconds since the Unix epoch: connect started, subscribe reply, last replayed message.
    started: u64,
    replied: Option<u64>,
    done: Option<u64>,
    /// `data.recovered` of the reply.
    recovered: Option<bool>,
    /// Replayed messages in arrival order (compared with the witness's afterwards).
    replayed: Vec<(u64, Vec<u8>)>,
    /// The first message after the replay was the one published after the storm (`top + 1`).
    next_live: bool,
    problem: Option<String>,
    /// Kept open until the scenario ends.
    conn: Option<WsClient>,
}

/// Waits for `start`, reconnects, subscribes to `storm` with `since`, and reads the reply and
/// the replay (counting itself in `done` then), then the next live message.
async fn storm_client(
    addr: SocketAddr,
    i: usize,
    since: (u64, Arc<str>),
    top: u64,
    start: tokio::time::Instant,
    done: Arc<AtomicU64>,
) -> StormClient {
    let mut done = CountOnDrop(Some(done));
    tokio::time::sleep_until(start).await;
    let mut r = StormClient {
        started: now_nanos(),
        ..StormClient::default()
    };
    let deadline = start + STORM_TIMEOUT;
    let mut c = WsClient::connect(addr, "/ws").await;
    let since_at = Some((since.0, &*since.1));
    let d = match storm_subscribe(&mut c, &format!("r{i}"), "storm", since_at).await {
        Ok(d) => d,
        Err(e) => {
            r.problem = Some(e);
            return r;
        }
    };
    r.replied = Some(now_nanos());
    r.recovered = d["recovered"].as_bool();
    if r.recovered != Some(true)
        || d["offset"].as_u64() != Some(top)
        || d["epoch"].as_str() != Some(&*since.1)
    {
        r.problem = Some(format!("reply {d} (expected recovered:true, offset {top})"));
        return r;
    }
    if top == since.0 {
        r.done = r.replied;
    }
    let mut next = since.0 + 1;
    while r.done.is_none() {
        let p = match c.next_text(deadline).await {
            Ok(p) => p,
            Err(end) => {
                r.problem = Some(format!(
                    "stream ended ({end:?}) with {} of {} messages replayed",
                    next - since.0 - 1,
                    top - since.0
                ));
                return r;
            }
        };
        match find_u64(&p, b"\"offset\":") {
            Some(off) if off == next => {
                r.replayed.push((off, p));
                next += 1;
                if off == top {
                    r.done = Some(now_nanos());
                }
            }
            other => {
                r.problem = Some(format!(
                    "expected offset {next}, got {}",
                    other.map_or_else(
                        || String::from_utf8_lossy(&p).into_owned(),
                        |o| o.to_string()
                    )
                ));
                return r;
            }
        }
    }
    done.count();
    // Then live messages: the next one must be `top + 1`, published once every client is done.
    match c.next_text(deadline + STORM_STEP).await {
        Ok(p) if find_u64(&p, b"\"offset\":") == Some(top + 1) => r.next_live = true,
        Ok(p) => {
            r.problem = Some(format!(
                "after the replay, expected offset {}, got {}",
                top + 1,
                String::from_utf8_lossy(&p)
            ))
        }
        Err(end) => r.problem = Some(format!("no live message after the replay ({end:?})")),
    }
    r.conn = Some(c);
    r
}

/// Shared by the live channel's readers.
struct LiveSignals {
    /// The highest offset the live publisher was answered with, once it stopped; `u64::MAX`
    /// until then.
    target: AtomicU64,
    stop: std::sync::atomic::AtomicBool,
}

/// One subscriber of `live`.
#[derive(Default)]
struct LiveReader {
    /// Publish→receive latency in µs, by the publisher's `seq` (`u32::MAX`: not received).
    lat_us: Vec<u32>,
    received: u64,
    last: u64,
    lost: u64,
    dup_or_reordered: u64,
    end: Option<StreamEnd>,
}

/// Reads `live` as fast as it can from the offset after `first` (the subscribe reply's) until
/// it has `target`, the server closes it, `stop` is set, or `backstop` passes.
async fn live_reader(
    mut s: TcpStream,
    mut buf: Vec<u8>,
    first: u64,
    sig: Arc<LiveSignals>,
    backstop: tokio::time::Instant,
) -> LiveReader {
    let mut r = LiveReader {
        last: first,
        ..LiveReader::default()
    };
    let mut chunk = vec![0u8; 16 * 1024];
    let mut at = 0;
    let mut pongs: Vec<u8> = Vec::new();
    loop {
        while let Some((opcode, hdr, len)) = frame_at(&buf[at..]) {
            let payload = &buf[at + hdr..at + hdr + len];
            at += hdr + len;
            match opcode {
                0x8 => r.end = Some(StreamEnd::Close(close_code(payload))),
                0x9 => pongs.extend_from_slice(&codec::encode_masked_frame(
                    true,
                    OpCode::Pong,
                    payload,
                    [1, 2, 3, 4],
                )),
                0x1 => {
                    let (Some(off), Some(seq), Some(ts)) = (
                        find_u64(payload, b"\"offset\":"),
                        find_u64(payload, b"\"seq\":"),
                        find_u64(payload, b"\"ts\":"),
                    ) else {
                        continue;
                    };
                    let lat = (now_nanos().saturating_sub(ts) / 1000).min(u64::from(u32::MAX - 1));
                    let seq = seq as usize;
                    if r.lat_us.len() <= seq {
                        r.lat_us.resize(seq + 1, u32::MAX);
                    }
                    r.lat_us[seq] = lat as u32;
                    r.received += 1;
                    if off > r.last {
                        r.lost += off - r.last - 1;
                        r.last = off;
                    } else {
                        r.dup_or_reordered += 1;
                    }
                }
                _ => {}
            }
        }
        buf.drain(..at);
        at = 0;
        if !pongs.is_empty() {
            let _ = s.write_all(&pongs).await;
            pongs.clear();
        }
        if r.end.is_some() || r.last >= sig.target.load(Ordering::Relaxed) {
            return r;
        }
        let wait = (tokio::time::Instant::now() + Duration::from_millis(200)).min(backstop);
        match tokio::time::timeout_at(wait, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => {
                r.end = Some(StreamEnd::Eof);
                return r;
            }
            Err(_)
                if sig.stop.load(Ordering::Relaxed) || tokio::time::Instant::now() >= backstop =>
            {
                r.end = Some(StreamEnd::StillOpen);
                return r;
            }
            Err(_) => {}
        }
    }
}

/// What the live publisher sent and was answered.
#[derive(Default)]
struct LivePublisher {
    /// Send time (ns since the Unix epoch) of each `seq`.
    sent_at: Vec<u64>,
    published: u64,
    highest_offset: u64,
    /// Any other answer (`overloaded` included), with the first kept for the report.
    refused: u64,
    first_refusal: Option<String>,
    problem: Option<String>,
}

/// Publishes to `live` at `rate`/s (each message stamped with its send time, as in the fan-out
/// scenarios) until `stop`, reading the answers; returns once every publish is answered or
/// `STORM_STEP` after the stop.
async fn live_publisher(
    c: WsClient,
    rate: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> LivePublisher {
    let (s, mut buf) = c.into_parts();
    let (mut rd, mut wr) = s.into_split();
    let pad = "x".repeat(STORM_LIVE_PAD);
    let sent = AtomicU64::new(0);
    let writing = std::sync::atomic::AtomicBool::new(true);
    let write = async {
        let mut sent_at = Vec::new();
        let mut problem = None;
        let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let seq = sent_at.len();
            let ts = now_nanos();
            let json = format!(
                "{{\"event_type\":\"publish\",\"message_id\":\"l{seq}\",\"data\":{{\"channel\":\"live\",\"event_type\":\"tick\",\"data\":{{\"seq\":{seq},\"ts\":{ts},\"pad\":\"{pad}\"}}}}}}"
            );
            let frame =
                codec::encode_masked_frame(true, OpCode::Text, json.as_bytes(), [9, 8, 7, 6]);
            if let Err(e) = wr.write_all(&frame).await {
                problem = Some(format!("live publisher write failed: {e}"));
                break;
            }
            sent_at.push(ts);
            sent.store(sent_at.len() as u64, Ordering::Relaxed);
        }
        writing.store(false, Ordering::Release);
        (sent_at, problem, wr)
    };
    let read = async {
        let mut r = LivePublisher::default();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut at = 0;
        let mut deadline = None;
        loop {
            while let Some((opcode, hdr, len)) = frame_at(&buf[at..]) {
                let payload = &buf[at + hdr..at + hdr + len];
                at += hdr + len;
                if opcode == 0x8 {
                    r.problem = Some(format!(
                        "live publisher closed with {}",
                        close_code(payload)
                    ));
                    return r;
                }
                if opcode != 0x1 || is_ack(payload) {
                    continue;
                }
                if payload.starts_with(b"{\"event_type\":\"publish\"") {
                    r.published += 1;
                    let off = find_u64(payload, b"\"offset\":").unwrap_or(0);
                    r.highest_offset = r.highest_offset.max(off);
                } else {
                    r.refused += 1;
                    if r.first_refusal.is_none() {
                        r.first_refusal = Some(String::from_utf8_lossy(payload).into_owned());
                    }
                }
            }
            buf.drain(..at);
            at = 0;
            if !writing.load(Ordering::Acquire) {
                if r.published + r.refused >= sent.load(Ordering::Relaxed) {
                    return r;
                }
                deadline.get_or_insert(Instant::now() + STORM_STEP);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                r.problem = Some("live publish answers missing".into());
                return r;
            }
            match tokio::time::timeout(Duration::from_millis(200), rd.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                Ok(_) => {
                    r.problem = Some("live publisher connection ended (EOF)".into());
                    return r;
                }
                Err(_) => {}
            }
        }
    };
    let ((sent_at, problem, _wr), mut r) = tokio::join!(write, read);
    r.sent_at = sent_at;
    if let Some(p) = problem {
        r.problem.get_or_insert(p);
    }
    r
}

/// The body of `GET path` with the API key (HTTP/1.0, so the body is never chunked).
fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s = StdStream::connect_timeout(&addr, HEALTHZ_TIMEOUT)
        .map_err(|e| format!("GET {path}: connect: {e}"))?;
    let _ = s.set_read_timeout(Some(HEALTHZ_TIMEOUT));
    s.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: bench\r\nX-API-Key: {API_KEY}\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("GET {path}: write: {e}"))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .map_err(|e| format!("GET {path}: read: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if head.split_whitespace().nth(1) != Some("200") {
        return Err(format!("GET {path}: {}", head.lines().next().unwrap_or("")));
    }
    Ok(body.to_owned())
}

/// Subscribers of `channel` in `/api/channels` (0 when it is not listed).
fn channel_subscribers(addr: SocketAddr, channel: &str) -> Result<u64, String> {
    let body = http_get(addr, "/api/channels")?;
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("/api/channels: {e}"))?;
    Ok(v["channels"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["channel"] == channel))
        .and_then(|c| c["subscribers"].as_u64())
        .unwrap_or(0))
}

/// CPU counters and two of the server's metrics at one moment of the storm scenario.
struct StormSnap {
    at: Instant,
    server_cpu: f64,
    client_cpu: f64,
    /// Busy seconds of the whole machine (other sessions' processes included).
    machine_busy: f64,
    /// `huddle_publish_to_write_seconds` buckets summed over the shards: (le, cumulative count).
    p2w: Vec<(f64, f64)>,
    /// `huddle_messages_replayed_total`, summed over the shards.
    replayed: Option<f64>,
}

impl StormSnap {
    /// Takes the CPU counters again, now.
    fn cpu_now(&mut self, pid: u32) {
        self.at = Instant::now();
        self.server_cpu = cpu_seconds(pid);
        self.client_cpu = cpu_seconds(std::process::id());
        self.machine_busy = machine_busy_seconds();
    }
}

fn storm_snap(addr: SocketAddr, pid: u32) -> StormSnap {
    let at = Instant::now();
    let (server_cpu, client_cpu) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    let machine_busy = machine_busy_seconds();
    let body = http_get(addr, "/metrics").unwrap_or_default();
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let mut replayed = None;
    for line in body.lines() {
        let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        if line.starts_with("huddle_messages_replayed_total") {
            *replayed.get_or_insert(0.0) += v;
        } else if line.starts_with("huddle_publish_to_write_seconds_bucket{") {
            let le = line
                .split_once("le=\"")
                .and_then(|(_, r)| r.split_once('"'))
                .map(|(le, _)| {
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or(f64::NAN)
                    }
                });
            if let Some(le) = le.filter(|le| !le.is_nan()) {
                match buckets.iter_mut().find(|b| b.0 == le) {
                    Some(b) => b.1 += v,
                    None => buckets.push((le, v)),
                }
            }
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    StormSnap {
        at,
        server_cpu,
        client_cpu,
        machine_busy,
        p2w: buckets,
        replayed,
    }
}

/// Cores busy between two snapshots: the server, this process, the whole machine.
fn cores_between(a: &StormSnap, b: &StormSnap) -> String {
    let secs = b.at.saturating_duration_since(a.at).as_secs_f64();
    if secs < 0.1 {
        // /proc counts in 10 ms ticks.
        return "– (under 100 ms, too short to sample)".into();
    }
    format!(
        "server {:.2}, bench client {:.2}, whole machine {:.2}",
        (b.server_cpu - a.server_cpu) / secs,
        (b.client_cpu - a.client_cpu) / secs,
        (b.machine_busy - a.machine_busy) / secs
    )
}

/// p50 and p99 of the publish-to-write histogram between two snapshots, as bucket bounds.
fn p2w_between(a: &StormSnap, b: &StormSnap) -> String {
    let delta: Vec<(f64, f64)> = b
        .p2w
        .iter()
        .map(|&(le, n)| {
            let before = a.p2w.iter().find(|x| x.0 == le).map_or(0.0, |x| x.1);
            (le, n - before)
        })
        .collect();
    let total = delta.last().map_or(0.0, |d| d.1);
    if total <= 0.0 {
        return "no observations".into();
    }
    let bound = |le: f64| {
        let us = (le * 1e6).round() as u64;
        match us {
            0..=999 => format!("{us} µs"),
            _ if us.is_multiple_of(1000) => format!("{} ms", us / 1000),
            _ => format!("{:.1} ms", us as f64 / 1000.0),
        }
    };
    let q = |q: f64| {
        let i = delta.iter().position(|d| d.1 >= q * total).unwrap_or(0);
        match delta[i].0 {
            le if le.is_infinite() => format!("> {}", bound(delta[i.saturating_sub(1)].0)),
            le => format!("≤ {}", bound(le)),
        }
    };
    format!("p50 {}, p99 {} ({total:.0} observations)", q(0.5), q(0.99))
}

fn pct(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// What a storm run found, and how many of its checks failed.
struct StormOutcome {
    report: String,
    failures: u64,
}

/// Starts huddle (`cfg.shards`), runs the live channel, then the reconnect storm; reports the
/// recovery time, the live channel's latency before and during the storm, and correctness.
///
/// The live side (readers, publisher) and the storm side (witness, storm publisher, clients)
/// each have a runtime of their own, so one side's tasks never wait in the other's run queue
/// (they still share the machine's cores with each other and the server).
fn run_storm(cfg: &StormConfig) -> StormOutcome {
    let sc = Scenario {
        name: "storm",
        label: String::new(),
        subscribers: cfg.live,
        publishers: 1,
        publishers_subscribe: false,
        rate: cfg.rate,
        messages: 0,
        payload: STORM_LIVE_PAD,
        idle_only: false,
        stalled: 0,
        huddle_args: vec![
            "--shards".into(),
            cfg.shards.to_string(),
            "--history-size".into(),
            cfg.history_size().to_string(),
            "--recovery-max".into(),
            cfg.recovery_max().to_string(),
        ],
    };
    let server = start_server(Kind::Huddle, &sc);
    let (addr, pid) = (server.addr, server.pid());
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let (live_rt, storm_rt) = (runtime("fanout-live"), runtime("fanout-storm"));
    let mut problems: Vec<String> = Vec::new();

    // ---- the live channel: subscribers, then the publisher
    let live_conns: Vec<Result<(WsClient, serde_json::Value), String>> = live_rt.block_on(
        futures_util::stream::iter(0..cfg.live)
            .map(|i| async move {
                let mut c = WsClient::connect(addr, "/ws").await;
                let d = storm_subscribe(&mut c, &format!("l{i}"), "live", None).await?;
                Ok((c, d))
            })
            .buffer_unordered(128)
            .collect(),
    );
    let sig = Arc::new(LiveSignals {
        target: AtomicU64::new(u64::MAX),
        stop: std::sync::atomic::AtomicBool::new(false),
    });
    let backstop = tokio::time::Instant::now() + STORM_TIMEOUT * 3;
    let mut live_failed_subscribe = 0usize;
    let readers: Vec<_> = live_conns
        .into_iter()
        .filter_map(|r| match r {
            Ok((c, d)) => {
                let first = d["offset"].as_u64().unwrap_or(0);
                let (s, buf) = c.into_parts();
                Some(live_rt.spawn(live_reader(s, buf, first, sig.clone(), backstop)))
            }
            Err(e) => {
                live_failed_subscribe += 1;
                if live_failed_subscribe == 1 {
                    problems.push(format!("a live subscriber: {e}"));
                }
                None
            }
        })
        .collect();
    let stop_live = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let live_pub = {
        let (stop, rate) = (stop_live.clone(), cfg.rate);
        live_rt.spawn(async move {
            let c = WsClient::connect(addr, &format!("/ws?api_key={API_KEY}")).await;
            live_publisher(c, rate, stop).await
        })
    };

    // ---- the storm channel: witness, first subscribe, disconnect, missed messages
    let setup = storm_rt.block_on(async {
        let mut publisher = WsClient::connect(addr, &format!("/ws?api_key={API_KEY}")).await;
        let mut witness = WsClient::connect(addr, "/ws").await;
        storm_subscribe(&mut witness, "w", "storm", None).await?;
        let items = |from: u64, to: u64| -> Vec<(String, serde_json::Value)> {
            (from..=to)
                .map(|i| (format!("s{i}"), serde_json::json!({ "i": i })))
                .collect()
        };
        let preload = storm_publish(&mut publisher, &items(1, STORM_PRELOAD)).await?;
        let mut seen = Vec::new();
        witness_read(&mut witness, &mut seen, STORM_PRELOAD).await?;
        let (since, epoch) = preload
            .last()
            .cloned()
            .ok_or_else(|| "no answer to the preload".to_owned())?;
        let first: Vec<Result<(WsClient, serde_json::Value), String>> =
            futures_util::stream::iter(0..cfg.clients)
                .map(|i| async move {
                    let mut c = WsClient::connect(addr, "/ws").await;
                    let d = storm_subscribe(&mut c, &format!("f{i}"), "storm", None).await?;
                    Ok((c, d))
                })
                .buffer_unordered(128)
                .collect()
                .await;
        let mut noted = HashMap::new();
        for r in &first {
            let key = match r {
                Ok((_, d)) => format!(
                    "offset {} epoch {}",
                    d["offset"],
                    d["epoch"].as_str().unwrap_or("?")
                ),
                Err(e) => e.clone(),
            };
            *noted.entry(key).or_insert(0usize) += 1;
        }
        let expected = format!("offset {since} epoch {epoch}");
        if noted.get(&expected) != Some(&cfg.clients) {
            return Err(format!(
                "first subscribe: expected {} × `{expected}`, got {noted:?}",
                cfg.clients
            ));
        }
        drop(first);
        Ok::<_, String>((publisher, witness, seen, since, epoch))
    });
    let (mut publisher, mut witness, mut seen, since, epoch) = match setup {
        Ok(s) => s,
        Err(e) => {
            return storm_abort(cfg, e);
        }
    };
    // Every storm client is gone (the witness stays).
    let gone_by = Instant::now() + STORM_STEP;
    loop {
        match channel_subscribers(addr, "storm") {
            Ok(1) => break,
            Ok(n) if Instant::now() >= gone_by => {
                return storm_abort(
                    cfg,
                    format!(
                        "`storm` still has {n} subscribers {} s after the disconnect",
                        STORM_STEP.as_secs()
                    ),
                );
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return storm_abort(cfg, e),
        }
    }
    let top = since + cfg.missed;
    let missed = storm_rt.block_on(async {
        let items: Vec<(String, serde_json::Value)> = (STORM_PRELOAD + 1
            ..=STORM_PRELOAD + cfg.missed)
            .map(|i| (format!("s{i}"), serde_json::json!({ "i": i })))
            .collect();
        let answers = storm_publish(&mut publisher, &items).await?;
        let want: Vec<(u64, String)> = (since + 1..=top).map(|o| (o, epoch.clone())).collect();
        if answers != want {
            return Err(format!(
                "missed publishes answered {:?}…, expected offsets {}..={top} in epoch {epoch}",
                &answers[..answers.len().min(3)],
                since + 1
            ));
        }
        witness_read(&mut witness, &mut seen, top).await
    });
    if let Err(e) = missed {
        return storm_abort(cfg, e);
    }
    let quiet_from = now_nanos();
    let snap_quiet = storm_snap(addr, pid);
    std::thread::sleep(cfg.quiet);

    // ---- the storm
    let done = Arc::new(AtomicU64::new(0));
    let epoch_arc: Arc<str> = Arc::from(epoch.as_str());
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let clients: Vec<_> = (0..cfg.clients)
        .map(|i| {
            storm_rt.spawn(storm_client(
                addr,
                i,
                (since, epoch_arc.clone()),
                top,
                start,
                done.clone(),
            ))
        })
        .collect();
    // The metrics before any client can be served; the CPU counters at the start itself.
    let mut snap_start = storm_snap(addr, pid);
    if let Some(w) = start.into_std().checked_duration_since(Instant::now()) {
        std::thread::sleep(w);
    }
    snap_start.cpu_now(pid);
    let give_up = Instant::now() + STORM_TIMEOUT;
    while done.load(Ordering::Relaxed) < cfg.clients as u64 && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(1));
    }
    let snap_end = storm_snap(addr, pid);
    let all_done = done.load(Ordering::Relaxed) >= cfg.clients as u64;
    // One more message: every client's next one must be it.
    let after = storm_rt.block_on(async {
        let a = storm_publish(
            &mut publisher,
            &[(format!("s{}", top + 1), serde_json::json!({"i": top + 1}))],
        )
        .await?;
        if a.first().map(|a| a.0) != Some(top + 1) {
            return Err(format!("the message after the storm answered {a:?}"));
        }
        witness_read(&mut witness, &mut seen, top + 1).await
    });
    if let Err(e) = after {
        problems.push(e);
    }
    let results: Vec<StormClient> = storm_rt.block_on(async {
        let mut out = Vec::with_capacity(clients.len());
        for t in clients {
            out.push(match t.await {
                Ok(r) => r,
                Err(e) => StormClient {
                    problem: Some(format!("client task failed: {e}")),
                    ..StormClient::default()
                },
            });
        }
        out
    });

    // ---- the live channel's end
    std::thread::sleep(cfg.after);
    stop_live.store(true, Ordering::Relaxed);
    let live = live_rt
        .block_on(live_pub)
        .unwrap_or_else(|e| LivePublisher {
            problem: Some(format!("live publisher task failed: {e}")),
            ..LivePublisher::default()
        });
    sig.target.store(live.highest_offset, Ordering::Relaxed);
    let drain_until = Instant::now() + STORM_STEP;
    while !readers.iter().all(|t| t.is_finished()) && Instant::now() < drain_until {
        std::thread::sleep(Duration::from_millis(20));
    }
    sig.stop.store(true, Ordering::Relaxed);
    let live_readers: Vec<LiveReader> = live_rt.block_on(async {
        let mut out = Vec::with_capacity(readers.len());
        for t in readers {
            out.push(
                match tokio::time::timeout(Duration::from_secs(5), t).await {
                    Ok(Ok(r)) => r,
                    _ => LiveReader {
                        end: Some(StreamEnd::StillOpen),
                        ..LiveReader::default()
                    },
                },
            );
        }
        out
    });
    // Clients close before the server, so its shutdown does not wait for them.
    let mut results = results;
    for r in &mut results {
        r.conn = None;
    }
    drop((publisher, witness));
    drop(server);

    storm_report(StormRun {
        cfg,
        problems,
        since,
        top,
        epoch: &epoch,
        witness: &seen,
        clients: &results,
        all_done,
        snaps: [snap_quiet, snap_start, snap_end],
        quiet_from,
        live: &live,
        live_readers: &live_readers,
        live_failed_subscribe,
    })
}

/// A storm run that could not get to the storm: the report says why.
fn storm_abort(cfg: &StormConfig, why: String) -> StormOutcome {
    StormOutcome {
        report: format!(
            "{}\n- **FAIL: the scenario stopped before the storm:** {why}.\n",
            storm_heading(cfg)
        ),
        failures: 1,
    }
}

fn storm_heading(cfg: &StormConfig) -> String {
    format!(
        "### Reconnect storm — {} clients recover {} messages each on `storm` while {} subscribers read `live` at {} msg/s, {} shard(s)\n",
        cfg.clients, cfg.missed, cfg.live, cfg.rate, cfg.shards
    )
}

/// Everything a storm run measured, for the report.
struct StormRun<'a> {
    cfg: &'a StormConfig,
    /// Failures outside the clients and readers (setup, the message after the storm).
    problems: Vec<String>,
    since: u64,
    top: u64,
    epoch: &'a str,
    witness: &'a [(u64, Vec<u8>)],
    clients: &'a [StormClient],
    all_done: bool,
    /// At the quiet period's start, the storm's start and its end.
    snaps: [StormSnap; 3],
    quiet_from: u64,
    live: &'a LivePublisher,
    live_readers: &'a [LiveReader],
    live_failed_subscribe: usize,
}

fn storm_report(run: StormRun) -> StormOutcome {
    let cfg = run.cfg;
    let mut failures = run.problems.len() as u64 + run.live_failed_subscribe as u64;
    // ---- the storm clients, against the witness
    let witness: HashMap<u64, (&[u8], serde_json::Value)> = run
        .witness
        .iter()
        .map(|(o, p)| {
            (
                *o,
                (p.as_slice(), serde_json::from_slice(p).unwrap_or_default()),
            )
        })
        .collect();
    let witness_complete = run.witness.len() as u64 == run.top + 1
        && run.witness.iter().zip(1..).all(|((o, _), want)| *o == want);
    if !witness_complete {
        failures += 1;
    }
    let t0 = run
        .clients
        .iter()
        .map(|c| c.started)
        .filter(|&s| s > 0)
        .min()
        .unwrap_or(0);
    let t_end = run
        .clients
        .iter()
        .filter_map(|c| c.done)
        .max()
        .unwrap_or(t0);
    let (mut ok, mut recovered_false, mut failed, mut next_live) = (0usize, 0usize, 0usize, 0usize);
    let (mut bytes_same, mut fields_same, mut differ) = (0u64, 0u64, 0u64);
    let mut first_problem = None;
    let mut to_done: Vec<u64> = Vec::new();
    let mut to_reply: Vec<u64> = Vec::new();
    for c in run.clients {
        if c.recovered == Some(false) {
            recovered_false += 1;
        }
        if let Some(p) = &c.problem {
            failed += 1;
            first_problem.get_or_insert_with(|| p.clone());
        }
        if c.next_live {
            next_live += 1;
        }
        if let Some(d) = c.done {
            to_done.push(d.saturating_sub(c.started) / 1000);
            if c.problem.is_none() && c.replayed.len() as u64 == cfg.missed {
                ok += 1;
            }
        }
        if let Some(r) = c.replied {
            to_reply.push(r.saturating_sub(c.started) / 1000);
        }
        for (o, p) in &c.replayed {
            match witness.get(o) {
                Some((wb, _)) if *wb == p.as_slice() => bytes_same += 1,
                Some((_, wv))
                    if serde_json::from_slice::<serde_json::Value>(p).is_ok_and(|v| v == *wv) =>
                {
                    fields_same += 1
                }
                _ => differ += 1,
            }
        }
    }
    to_done.sort_unstable();
    to_reply.sort_unstable();
    failures += failed as u64 + differ + u64::from(!run.all_done);
    failures += (cfg.clients - ok.min(cfg.clients)) as u64;
    // ---- the live channel
    let n = run.live.highest_offset;
    let (mut lost, mut disorder, mut complete, mut short) = (0u64, 0u64, 0usize, 0usize);
    for r in run.live_readers {
        lost += r.lost + n.saturating_sub(r.last);
        disorder += r.dup_or_reordered;
        if r.last < n {
            short += 1;
        } else if r.lost == 0 && r.dup_or_reordered == 0 {
            complete += 1;
        }
    }
    let live_problem = run.live.problem.is_some() || run.live.published != n;
    failures += lost + disorder + u64::from(live_problem);
    let window = t_end.saturating_sub(t0);
    let before_from = t0.saturating_sub(window);
    let new_hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut before, mut during, mut quiet) = (new_hist(), new_hist(), new_hist());
    for r in run.live_readers {
        for (seq, &lat) in r.lat_us.iter().enumerate() {
            let Some(&ts) = run.live.sent_at.get(seq) else {
                continue;
            };
            if lat == u32::MAX {
                continue;
            }
            let lat = u64::from(lat);
            if (t0..=t_end).contains(&ts) {
                during.saturating_record(lat);
            } else if (before_from..t0).contains(&ts) {
                before.saturating_record(lat);
            }
            if (run.quiet_from..t0).contains(&ts) {
                quiet.saturating_record(lat);
            }
        }
    }

    // ---- report
    let d = |ns: u64| ms(Duration::from_nanos(ns));
    let dus = |v: u64| us(v);
    let verdict = if failures == 0 { "PASS" } else { "FAIL" };
    let mut out = storm_heading(cfg);
    let w = |out: &mut String, s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    w(&mut out, String::new());
    w(
        &mut out,
        format!(
            "- Server: `--shards {} --history-size {} --recovery-max {}`, default `--send-queue-bytes` (1 MiB; a replay is about {} KiB per client). `live` is owned by shard {}, `storm` by shard {}; connections spread over all shards.",
            cfg.shards,
            cfg.history_size(),
            cfg.recovery_max(),
            run.witness.iter().filter(|(o, _)| *o > run.since && *o <= run.top).map(|(_, p)| p.len() as u64 + 4).sum::<u64>() / 1024,
            huddle::shard::mesh::owner_of("live", cfg.shards),
            huddle::shard::mesh::owner_of("storm", cfg.shards),
        ),
    );
    w(
        &mut out,
        format!(
            "- Storm: {} clients on `/ws` subscribed to `storm` at offset {} (epoch `{}`) and disconnected; {} messages were published (offsets {}..={}); after {} of quiet all {} reconnected at once, each subscribing with `since` right after its upgrade.",
            cfg.clients, run.since, run.epoch, cfg.missed, run.since + 1, run.top, ms(cfg.quiet), cfg.clients
        ),
    );
    w(
        &mut out,
        format!(
            "- **Recovery time: {}** from the first reconnect to the last client holding its `recovered:true` reply and all {} messages{}. Per client, from its own connect: reply p50 {}, p99 {}; all replayed p50 {}, p99 {}, max {}.",
            d(window),
            cfg.missed,
            if run.all_done { String::new() } else { format!(" (**only {} of {} clients finished within {} s**)", to_done.len(), cfg.clients, STORM_TIMEOUT.as_secs()) },
            dus(pct(&to_reply, 0.5)),
            dus(pct(&to_reply, 0.99)),
            dus(pct(&to_done, 0.5)),
            dus(pct(&to_done, 0.99)),
            dus(to_done.last().copied().unwrap_or(0)),
        ),
    );
    let [q, s0, s1] = &run.snaps;
    let storm_cpu = s1.server_cpu - s0.server_cpu;
    w(
        &mut out,
        format!(
            "- Server CPU during the storm: {:.2} s, all it did in that window (the live fan-out, {} upgrades and subscribes, the recoveries); messages it replayed (`huddle_messages_replayed_total`): {}.",
            storm_cpu,
            cfg.clients,
            s0.replayed.zip(s1.replayed).map_or("–".into(), |(a, b)| format!("{:.0} (expected {})", b - a, cfg.missed * cfg.clients as u64)),
        ),
    );
    w(
        &mut out,
        format!(
            "- CPU in use, in cores (of {}): quiet period {}; storm {}.",
            std::thread::available_parallelism().map_or(1, |c| c.get()),
            cores_between(q, s0),
            cores_between(s0, s1),
        ),
    );
    w(
        &mut out,
        format!(
            "- Server side, `huddle_publish_to_write_seconds` (offset assigned → the shard's flush of its frames, once per message per shard; bucket bounds): quiet period {}; storm {}.",
            p2w_between(q, s0),
            p2w_between(s0, s1),
        ),
    );
    w(
        &mut out,
        format!(
            "- Correctness: **{verdict}**. {ok} of {} clients got `recovered:true` at offset {} and then exactly offsets {}..={} in order; {recovered_false} replies said `recovered:false`; {failed} clients failed{}. Replayed messages against the witness (a `storm` subscriber that never left): {bytes_same} byte for byte the frame it received live, {fields_same} equal as JSON only, {differ} different. {next_live} clients then got the live offset {} next.{}",
            cfg.clients,
            run.top,
            run.since + 1,
            run.top,
            first_problem.map_or(String::new(), |p| format!(" (first: {p})")),
            run.top + 1,
            if witness_complete { "" } else { " **The witness did not get every offset.**" },
        ),
    );
    for p in &run.problems {
        w(&mut out, format!("  **Problem:** {p}."));
    }
    w(
        &mut out,
        format!(
            "- Live channel: {} publishes answered with an offset, {} refused{}; {complete} of {} subscribers got offsets 1..={n} with no gap, duplicate or reordering ({lost} lost, {disorder} duplicated or reordered, {short} short of {n}{}).{}",
            run.live.published,
            run.live.refused,
            run.live.first_refusal.as_ref().map_or(String::new(), |f| format!(" (first: `{f}`)")),
            cfg.live,
            if run.live_failed_subscribe > 0 { format!(", {} could not subscribe", run.live_failed_subscribe) } else { String::new() },
            run.live.problem.as_ref().map_or(String::new(), |p| format!(" **Problem:** {p}.")),
        ),
    );
    w(&mut out, String::new());
    w(
        &mut out,
        "| `live` publish→receive latency, by publish time | deliveries | p50 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|---:|".into(),
    );
    let row = |name: String, h: &Histogram<u64>| {
        if h.is_empty() {
            return format!("| {name} | 0 | – | – | – | – |");
        }
        format!(
            "| {name} | {} | {} | {} | {} | {} |",
            h.len(),
            us(h.value_at_quantile(0.5)),
            us(h.value_at_quantile(0.99)),
            us(h.value_at_quantile(0.999)),
            us(h.max())
        )
    };
    let overlap = before_from < run.quiet_from;
    w(
        &mut out,
        row(
            format!(
                "the {} just before the storm{}",
                d(window),
                if overlap {
                    " (longer than the quiet period: includes the missed publishes)"
                } else {
                    ""
                }
            ),
            &before,
        ),
    );
    w(
        &mut out,
        row(format!("during the storm ({})", d(window)), &during),
    );
    let ratio = |q: Option<f64>| {
        let (a, b) = match q {
            Some(q) => (during.value_at_quantile(q), before.value_at_quantile(q)),
            None => (during.max(), before.max()),
        };
        if before.is_empty() || during.is_empty() {
            "–".to_owned()
        } else {
            format!("{:.2}", a as f64 / b.max(1) as f64)
        }
    };
    w(
        &mut out,
        format!(
            "| ratio during ÷ before | | {} | {} | {} | {} |",
            ratio(Some(0.5)),
            ratio(Some(0.99)),
            ratio(Some(0.999)),
            ratio(None)
        ),
    );
    w(
        &mut out,
        row(
            format!(
                "the whole quiet period before the storm ({})",
                d(t0.saturating_sub(run.quiet_from))
            ),
            &quiet,
        ),
    );
    StormOutcome {
        report: out,
        failures,
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (children inherit it); returns the limit.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn raise_nofile() -> Option<u64> {
    #[repr(C)]
    struct RLimit {
        cur: u64,
        max: u64,
    }
    extern "C" {
        fn getrlimit(resource: i32, rlim: *mut RLimit) -> i32;
        fn setrlimit(resource: i32, rlim: *const RLimit) -> i32;
    }
    const RLIMIT_NOFILE: i32 = 7;
    let mut l = RLimit { cur: 0, max: 0 };
    // SAFETY: `l` is a valid `struct rlimit` (two `rlim_t`, u64 on 64-bit Linux).
    if unsafe { getrlimit(RLIMIT_NOFILE, &mut l) } != 0 {
        return None;
    }
    if l.cur < l.max {
        let want = RLimit {
            cur: l.max,
            max: l.max,
        };
        // SAFETY: as above.
        if unsafe { setrlimit(RLIMIT_NOFILE, &want) } == 0 {
            return Some(l.max);
        }
    }
    Some(l.cur)
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn raise_nofile() -> Option<u64> {
    None
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
    // Before any server starts, so they inherit it too.
    let nofile = raise_nofile();
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
        .or_else(|_| std::env::var("FANOUT_SCENARIO"))
        .ok()
        .map(|v| v.split(',').map(|n| n.trim().to_owned()).collect());
    let selected = |name: &str| wanted.as_ref().is_none_or(|w| w.iter().any(|n| n == name));
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
    if std::env::var_os("HUDDLE_BIN").is_none() {
        let status = Command::new("cargo")
            .args(["build", "--release", "--bin", "huddle"])
            .status()
            .expect("cargo build");
        assert!(status.success(), "release build failed");
    }
    if let Some(n) = nofile {
        eprintln!("fanout: RLIMIT_NOFILE {n}");
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    let all = scenarios(seconds, smoke);
    for sc in all.clone() {
        if !selected(sc.name) {
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
    let huddle = servers.contains(&Kind::Huddle);
    let mut extra = String::new();
    let mut failures: u64 = 0;
    if huddle && selected("stalled") {
        let base = all
            .iter()
            .find(|s| s.name == "1k-200")
            .expect("the 1k-200 scenario");
        let (sc_all, sc_stalled, note) = stalled_pair(base);
        let mut pair = Vec::new();
        for sc in [&sc_all, &sc_stalled] {
            eprintln!("fanout: stalled readers: {} against huddle …", sc.label);
            let r = rt.block_on(run_one(Kind::Huddle, sc));
            failures += r.lost + r.duplicated + r.reordered;
            pair.push(Row {
                scenario: sc.label.clone(),
                server: Kind::Huddle,
                r,
            });
        }
        extra.push_str(&stalled_report(&pair[0], &pair[1], &sc_stalled, &note));
        extra.push('\n');
    }
    let mut rss_failed = false;
    if huddle && selected("flood") {
        let cfg = FloodConfig {
            subscribers: env_or("FANOUT_FLOOD_SUBSCRIBERS", if smoke { 50 } else { 2000 }),
            seconds: env_or("FANOUT_FLOOD_SECS", if smoke { 2 } else { 10 }).max(1),
            rss_cap_mib: env_or("FANOUT_FLOOD_RSS_CAP_MIB", if smoke { 256 } else { 4096 }),
        };
        eprintln!(
            "fanout: publish flood, {} subscribers, {} s, against huddle …",
            cfg.subscribers, cfg.seconds
        );
        let f = rt.block_on(run_flood(&cfg));
        failures += f.failures;
        rss_failed = !f.rss_pass;
        extra.push_str(&f.report);
        extra.push('\n');
    }
    if huddle && selected("storm") {
        let cfg = StormConfig {
            clients: env_or("FANOUT_STORM_CLIENTS", if smoke { 20 } else { 1000 }),
            missed: env_or("FANOUT_STORM_MISSED", if smoke { 10 } else { 100 }),
            live: env_or("FANOUT_STORM_LIVE", if smoke { 20 } else { 500 }),
            rate: env_or("FANOUT_STORM_RATE", if smoke { 200 } else { 1000 }).max(1),
            shards: env_or("FANOUT_STORM_SHARDS", 2).max(1),
            quiet: Duration::from_millis(if smoke { 500 } else { 2000 }),
            after: Duration::from_millis(if smoke { 300 } else { 1000 }),
        };
        if let Some(n) = nofile.filter(|&n| n < cfg.sockets()) {
            eprintln!(
                "fanout: the storm holds about {} sockets here and as many in the server, over RLIMIT_NOFILE {n}: run `ulimit -n 20000` first",
                cfg.sockets()
            );
        }
        eprintln!(
            "fanout: reconnect storm, {} clients × {} missed messages, {} live subscribers at {}/s, against huddle …",
            cfg.clients, cfg.missed, cfg.live, cfg.rate
        );
        let s = run_storm(&cfg);
        failures += s.failures;
        extra.push_str(&s.report);
        extra.push('\n');
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
    let only = wanted.as_ref().map_or(String::new(), |w| {
        format!("FANOUT_SCENARIOS={} ", w.join(","))
    });
    let cmd = if smoke {
        format!("FANOUT_SMOKE=1 {only}cargo bench --bench fanout")
    } else {
        format!("FANOUT_SECONDS={seconds} {only}cargo bench --bench fanout")
    };
    let tables = if rows.is_empty() {
        String::new()
    } else {
        format!(
            "{}\nRatios (same run):\n\n{}\n",
            table(&rows),
            ratios(&rows)
        )
    };
    let report = format!(
        "## {} — `{}`\n\nMachine: {}. Clients and servers share the machine; compare ratios within one run.\n\n{tables}{extra}",
        date.trim(),
        cmd,
        machine(),
    );
    println!("{report}");
    failures += rows
        .iter()
        .filter(|r| r.server == Kind::Huddle)
        .map(|r| r.r.lost + r.r.duplicated + r.r.reordered)
        .sum::<u64>();
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
        eprintln!("fanout: huddle lost, duplicated or reordered {failures} deliveries (or broke §6/§7 in the flood or §10 in the storm: see above)");
        std::process::exit(1);
    }
    if rss_failed {
        if smoke || std::env::var("FANOUT_RSS_REPORT_ONLY").is_ok_and(|v| v == "1") {
            eprintln!("fanout: the flood missed its RSS bounds (reported only)");
        } else {
            eprintln!(
                "fanout: the flood missed its RSS bounds (FANOUT_RSS_REPORT_ONLY=1 reports only)"
            );
            std::process::exit(1);
        }
    }
}
