//! Cluster benchmark (PROTOCOL.md §12): the Redis engine against the embedded one, in one run.
//!
//! Everything runs on this machine over loopback: a `redis-server` this bench starts on a free
//! port (`--save "" --appendonly no`), huddle nodes (the release binary), and every client in
//! this process (tokio-tungstenite). The servers, Redis and the clients share the machine's cores,
//! so compare figures within one run, not with other machines.
//!
//! Scenarios, in this order:
//!
//! 1. **Publish round trip and throughput.** WebSocket publishers on `/ws?api_key=…` send
//!    `publish` messages to one channel and read the answers (`reply_to`, the offset), first one
//!    at a time (`CLUSTER_RTT_COUNT` (2,000) publishes, window 1: the round trip alone), then
//!    pipelined with at most `CLUSTER_WINDOW` (64, the server's `--max-inflight-publishes`)
//!    unanswered for `CLUSTER_SECS` (3) seconds. Latency runs from a publish's send to its
//!    answer. Setups:
//!    - `embedded`: one node without Redis, one publisher;
//!    - `embedded ×3`: the same node, three publishers on it at once;
//!    - `redis, 1 node`: one node with `--redis`, one publisher;
//!    - `redis, 3 nodes`: three nodes with `--redis`, one publisher per node at once, one channel.
//!
//!    Every node has `CLUSTER_SUBS_PER_NODE` (2) subscribers of the channel, so each publish is
//!    also delivered (and checked) on every node.
//! 2. **Redis commands per publish.** `INFO commandstats` and `INFO stats` before and after each
//!    Redis phase (read with a small RESP client here): `EVALSHA` per publish, the commands the
//!    script runs inside Redis (`hget`, `hincrby`, `pexpire`, `xadd`, `publish`, …: Redis counts
//!    them too), anything else (health `PING`s, (un)subscribes), network bytes and Redis CPU per
//!    publish. This bench's own `INFO` calls are left out.
//! 3. **Fan-out across nodes.** `CLUSTER_FANOUT_SUBS` (300) subscribers spread evenly over three
//!    Redis nodes, one publisher on the first node at `CLUSTER_FANOUT_RATE` (1,000) msg/s for
//!    `CLUSTER_FANOUT_SECS` (5) s, each payload carrying its send time (`SystemTime`, one clock
//!    for all clients here). p50/p99/max from send to receipt per node, against the same number of
//!    subscribers on one embedded node.
//!
//! Correctness, in every phase: every subscriber must receive every offset of the phase once, in
//! order, each carrying the payload whose publish was answered with that offset; every publish
//! must be answered, offsets must be unique and contiguous. The bench exits 1 on any fault.
//!
//! Other settings: `CLUSTER_SHARDS` (1: shards per node, the same for every node),
//! `CLUSTER_PAYLOAD` (100: bytes of padding per message), `HUDDLE_BIN` (a prebuilt server
//! binary instead of building target/release/huddle). The run takes about 30 s; a watchdog
//! kills every child and exits 2 after `CLUSTER_TIMEOUT` (240) s. Every child is stopped on the
//! way out, also after a panic (drop guards).
//!
//! Run with `cargo bench --bench cluster`; it prints markdown. CI only compiles it
//! (`cargo bench --no-run`).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::Value;
use support::{cpu_seconds, env_or, machine_busy_seconds, now_nanos, ready_addr};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const API_KEY: &str = "bench";
/// A publisher or subscriber with no progress for this long gives up (the phase then fails).
const STUCK: Duration = Duration::from_secs(10);
/// After its last expected offset, a subscriber keeps reading this long for stray duplicates.
const LINGER: Duration = Duration::from_millis(200);

type Ws = WebSocketStream<TcpStream>;

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

// ---------------------------------------------------------------- child processes

/// Pids of every child, for the watchdog.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A child process, stopped when dropped: SIGTERM, SIGKILL after 3 s.
struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    fn new(child: Child, name: String) -> Proc {
        CHILDREN.lock().expect("children").push(child.id());
        Proc { child, name }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut gone = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !gone {
            eprintln!("cluster: {} did not stop on SIGTERM; killing it", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        CHILDREN.lock().expect("children").retain(|&p| p != pid);
    }
}

/// Kills every child and exits 2 once the run has taken `limit`.
fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("cluster: the run took over {limit:?}: killing every child, exiting 2");
        for pid in CHILDREN.lock().map(|c| c.clone()).unwrap_or_default() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        std::process::exit(2);
    });
}

// ---------------------------------------------------------------- Redis

// A complete reader of RESP2 replies; only PING's and INFO's are looked at.
#[allow(dead_code)]
enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

/// `redis-server` on a free loopback port, no persistence, and a one-command-per-connection
/// RESP client for `INFO`.
struct Redis {
    proc: Proc,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed,
            "redis-server is not installed (apt-get install redis-server)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let r = Redis {
            proc: Proc::new(child, format!("redis-server :{port}")),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(r.command(&["PING"]), Ok(Resp::Simple(_))) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn command(&self, args: &[&str]) -> Result<Resp, String> {
        let mut s = StdStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        read_resp(&mut BufReader::new(s))
    }

    fn info(&self, section: &str) -> String {
        match self.command(&["INFO", section]) {
            Ok(Resp::Bulk(Some(b))) => String::from_utf8_lossy(&b).into_owned(),
            Ok(Resp::Error(e)) => panic!("INFO {section}: {e}"),
            Ok(_) => panic!("INFO {section}: unexpected reply"),
            Err(e) => panic!("INFO {section}: {e}"),
        }
    }

    fn version(&self) -> String {
        self.info("server")
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .trim()
            .to_owned()
    }

    fn snapshot(&self) -> RedisSnap {
        let mut calls = BTreeMap::new();
        for line in self.info("commandstats").lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let n = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            calls.insert(name.to_owned(), n);
        }
        let stats = self.info("stats");
        let field = |k: &str| {
            stats
                .lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(':')?.trim().parse().ok())
                .unwrap_or(0u64)
        };
        RedisSnap {
            calls,
            net_in: field("total_net_input_bytes"),
            net_out: field("total_net_output_bytes"),
            cpu: cpu_seconds(self.proc.pid()),
        }
    }
}

fn read_line(r: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    if line.is_empty() {
        return Err("connection closed".into());
    }
    Ok(line.trim_end().to_owned())
}

fn read_resp(r: &mut BufReader<StdStream>) -> Result<Resp, String> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(1);
    let num = |s: &str| s.parse::<i64>().map_err(|e| e.to_string());
    Ok(match kind {
        "+" => Resp::Simple(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Int(num(rest)?),
        "$" => {
            let n = num(rest)?;
            if n < 0 {
                Resp::Bulk(None)
            } else {
                let mut buf = vec![0; n as usize + 2];
                r.read_exact(&mut buf).map_err(|e| e.to_string())?;
                buf.truncate(n as usize);
                Resp::Bulk(Some(buf))
            }
        }
        "*" => {
            let n = num(rest)?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_resp(r)?);
            }
            Resp::Array(items)
        }
        _ => return Err(format!("bad RESP line {line:?}")),
    })
}

struct RedisSnap {
    calls: BTreeMap<String, u64>,
    net_in: u64,
    net_out: u64,
    cpu: f64,
}

/// Commands the two scripts (src/cluster/scripts.rs) run inside Redis.
const SCRIPT_COMMANDS: &[&str] = &[
    "hget", "hset", "del", "hincrby", "pexpire", "xadd", "publish", "get", "set", "xrange",
];

/// What Redis did between two snapshots, per publish.
struct RedisCost {
    publishes: u64,
    evalsha: f64,
    inside: f64,
    inside_detail: Vec<(String, f64)>,
    other: f64,
    other_detail: Vec<(String, u64)>,
    net_in: f64,
    net_out: f64,
    cpu_us: f64,
}

fn redis_cost(a: &RedisSnap, b: &RedisSnap, publishes: u64) -> RedisCost {
    let n = publishes.max(1) as f64;
    let mut c = RedisCost {
        publishes,
        evalsha: 0.0,
        inside: 0.0,
        inside_detail: Vec::new(),
        other: 0.0,
        other_detail: Vec::new(),
        net_in: b.net_in.saturating_sub(a.net_in) as f64 / n,
        net_out: b.net_out.saturating_sub(a.net_out) as f64 / n,
        cpu_us: (b.cpu - a.cpu) * 1e6 / n,
    };
    for (name, &after) in &b.calls {
        let d = after.saturating_sub(a.calls.get(name).copied().unwrap_or(0));
        if d == 0 || name == "info" {
            continue;
        }
        if name == "evalsha" {
            c.evalsha = d as f64 / n;
        } else if SCRIPT_COMMANDS.contains(&name.as_str()) {
            c.inside += d as f64 / n;
            c.inside_detail.push((name.clone(), d as f64 / n));
        } else {
            c.other += d as f64 / n;
            c.other_detail.push((name.clone(), d));
        }
    }
    c
}

// ---------------------------------------------------------------- huddle nodes

fn huddle_bin() -> std::path::PathBuf {
    std::env::var_os("HUDDLE_BIN").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/huddle"),
        std::path::PathBuf::from,
    )
}

struct Node {
    proc: Proc,
    addr: SocketAddr,
}

impl Node {
    fn start(redis: Option<&str>, shards: u16, name: &str) -> Node {
        let mut cmd = Command::new(huddle_bin());
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            API_KEY,
            "--conn-rate",
            "off",
            "--shards",
            &shards.to_string(),
            "--shutdown-grace",
            "1s",
        ]);
        if let Some(url) = redis {
            cmd.args(["--redis", url]);
        }
        let mut child = cmd
            .env("RUST_LOG", "warn,huddle=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn huddle");
        let stderr = child.stderr.take().expect("stderr");
        let proc = Proc::new(child, name.to_owned());
        let addr = ready_addr(stderr);
        let node = Node { proc, addr };
        // A Redis node is ready once /healthz says Redis answered.
        let deadline = Instant::now() + Duration::from_secs(15);
        while http_status(node.addr, "/healthz") != Some(200) {
            assert!(Instant::now() < deadline, "{name}: /healthz never 200");
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }
}

fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = StdStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

// ---------------------------------------------------------------- clients

async fn connect(addr: SocketAddr, path: &str) -> Ws {
    let tcp = tokio::time::timeout(STUCK, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    let (mut ws, _) = tokio::time::timeout(
        STUCK,
        tokio_tungstenite::client_async(format!("ws://{addr}{path}"), tcp),
    )
    .await
    .expect("upgrade timed out")
    .expect("upgrade");
    let ack = next_json(&mut ws).await;
    assert_eq!(ack["event_type"], "connection_ack", "{ack}");
    ws
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(STUCK, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).expect("JSON"),
            Ok(Some(Ok(Message::Close(f)))) => panic!("closed: {f:?}"),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("read: {e}"),
            Ok(None) => panic!("closed"),
            Err(_) => panic!("no message within {STUCK:?}"),
        }
    }
}

/// Subscribes and returns the channel's offset at the subscription.
async fn subscribe(ws: &mut Ws, channel: &str) -> u64 {
    let req = format!(
        r#"{{"event_type":"user_subscription","message_id":"s","data":{{"channel":"{channel}"}}}}"#
    );
    ws.send(Message::Text(req)).await.expect("send subscribe");
    let r = next_json(ws).await;
    assert_eq!(r["event_type"], "user_subscription", "{r}");
    assert_eq!(r["reply_to"], "s", "{r}");
    r["data"]["offset"].as_u64().expect("offset in the reply")
}

/// The number after `key` in `hay`, without parsing the JSON.
fn find_u64(hay: &[u8], key: &[u8]) -> Option<u64> {
    let pos = hay.windows(key.len()).position(|w| w == key)? + key.len();
    let mut v = 0u64;
    let mut any = false;
    for d in hay[pos..].iter().take_while(|b| b.is_ascii_digit()) {
        v = v * 10 + u64::from(d - b'0');
        any = true;
    }
    any.then_some(v)
}

/// How often a reading loop with no message looks at its exit conditions.
fn check_interval() -> tokio::time::Interval {
    let mut t = tokio::time::interval(Duration::from_millis(50));
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// The next item of `s`, or None when `tick` fires first. One timer per loop, not one per
/// message (a `timeout` per read would arm a timer for each of 300,000 messages a second).
async fn next_or_tick<S: futures_util::Stream + Unpin>(
    s: &mut S,
    tick: &mut tokio::time::Interval,
) -> Option<Option<S::Item>> {
    tokio::select! {
        m = s.next() => Some(m),
        _ = tick.tick() => None,
    }
}

#[derive(Clone)]
struct PubCfg {
    addr: SocketAddr,
    channel: String,
    p: u32,
    window: usize,
    /// Messages per second; 0: as fast as the window allows.
    rate: u64,
    duration: Duration,
    max: u64,
    pad: Arc<str>,
}

struct PubOut {
    p: u32,
    sent: u64,
    /// (seq, offset, recipients), in the order the answers arrived.
    answers: Vec<(u64, u64, u64)>,
    errors: Vec<String>,
    hist: Histogram<u64>,
    seconds: f64,
}

/// Publishes with at most `window` unanswered, until `duration` or `max`; reads every answer.
/// Each publish's `message_id` carries its send time, so the answer's `reply_to` gives the latency.
async fn publisher(cfg: PubCfg) -> PubOut {
    let ws = connect(cfg.addr, &format!("/ws?api_key={API_KEY}")).await;
    let (mut sink, mut stream) = ws.split();
    let window = Semaphore::new(cfg.window);
    let sent = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let t0 = Instant::now();
    let frame = |seq: u64| {
        let ts = now_nanos();
        Message::Text(format!(
            r#"{{"event_type":"publish","message_id":"{p}.{seq}.{ts}","data":{{"channel":"{ch}","event_type":"tick","data":{{"p":{p},"seq":{seq},"ts":{ts},"pad":"{pad}"}}}}}}"#,
            p = cfg.p,
            ch = cfg.channel,
            pad = cfg.pad,
        ))
    };
    let writer = async {
        let end = t0 + cfg.duration;
        let mut tick = (cfg.rate > 0).then(|| {
            let mut t = tokio::time::interval(Duration::from_nanos(1_000_000_000 / cfg.rate));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            t
        });
        let mut seq = 0u64;
        let mut error = None;
        'send: while seq < cfg.max && Instant::now() < end {
            if let Some(t) = tick.as_mut() {
                t.tick().await;
            }
            match tokio::time::timeout(STUCK, window.acquire()).await {
                Ok(Ok(p)) => p.forget(),
                _ => {
                    error = Some(format!("window full for {STUCK:?}"));
                    break;
                }
            }
            if let Err(e) = sink.feed(frame(seq)).await {
                error = Some(format!("send: {e}"));
                break;
            }
            seq += 1;
            // Unpaced: everything the window allows now goes in one flush.
            while tick.is_none() && seq < cfg.max {
                let Ok(p) = window.try_acquire() else { break };
                p.forget();
                if let Err(e) = sink.feed(frame(seq)).await {
                    error = Some(format!("send: {e}"));
                    sent.store(seq, Ordering::Release);
                    break 'send;
                }
                seq += 1;
            }
            sent.store(seq, Ordering::Release);
            if let Err(e) = sink.flush().await {
                error = Some(format!("flush: {e}"));
                break;
            }
        }
        sent.store(seq, Ordering::Release);
        done.store(true, Ordering::Release);
        error
    };
    let reader = async {
        let mut answers = Vec::new();
        let mut errors = Vec::new();
        let mut h = hist();
        let mut last_progress = Instant::now();
        let mut tick = check_interval();
        loop {
            if done.load(Ordering::Acquire)
                && answers.len() as u64 + errors.len() as u64 >= sent.load(Ordering::Acquire)
            {
                break;
            }
            if last_progress.elapsed() > STUCK {
                errors.push(format!("no answer for {STUCK:?}"));
                break;
            }
            let t = match next_or_tick(&mut stream, &mut tick).await {
                Some(Some(Ok(Message::Text(t)))) => t,
                Some(Some(Ok(Message::Close(f)))) => {
                    errors.push(format!("closed: {f:?}"));
                    break;
                }
                Some(Some(Ok(_))) | None => continue,
                Some(Some(Err(e))) => {
                    errors.push(format!("read: {e}"));
                    break;
                }
                Some(None) => {
                    errors.push("closed".into());
                    break;
                }
            };
            let now = now_nanos();
            last_progress = Instant::now();
            window.add_permits(1);
            let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
            let reply_to = v["reply_to"].as_str().unwrap_or("");
            let mut parts = reply_to.split('.').skip(1).map(|s| s.parse::<u64>().ok());
            let (Some(Some(seq)), Some(Some(ts))) = (parts.next(), parts.next()) else {
                errors.push(format!("unexpected message: {t}"));
                continue;
            };
            let result = &v["data"]["results"][0];
            match (v["event_type"].as_str(), result["offset"].as_u64()) {
                (Some("publish"), Some(offset)) => {
                    h.saturating_record(now.saturating_sub(ts) / 1000);
                    let recipients = result["recipients"].as_u64().unwrap_or(u64::MAX);
                    answers.push((seq, offset, recipients));
                }
                _ => errors.push(format!("publish refused: {t}")),
            }
        }
        (answers, errors, h)
    };
    let (write_error, (answers, mut errors, hist)) = tokio::join!(writer, reader);
    errors.extend(write_error);
    let seconds = t0.elapsed().as_secs_f64();
    let mut ws = sink.reunite(stream).expect("same stream");
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    PubOut {
        p: cfg.p,
        sent: sent.load(Ordering::Acquire),
        answers,
        errors,
        hist,
        seconds,
    }
}

/// Where a phase's subscribers learn the last offset: 0 until every publisher is done.
#[derive(Default)]
struct Top {
    offset: AtomicU64,
}

struct SubOut {
    node: usize,
    start: u64,
    /// (offset, p, seq) in arrival order.
    got: Vec<(u64, u32, u64)>,
    hist: Histogram<u64>,
    /// Messages that were not channel messages of the phase.
    unexpected: Vec<String>,
    closed: Option<String>,
}

/// Reads the channel until it has `top - start` messages (plus [`LINGER`]), or gives up
/// [`STUCK`] after the top is known (or after no message for that long).
async fn subscriber(mut ws: Ws, node: usize, start: u64, top: Arc<Top>) -> SubOut {
    let mut out = SubOut {
        node,
        start,
        got: Vec::new(),
        hist: hist(),
        unexpected: Vec::new(),
        closed: None,
    };
    let mut top_seen_at: Option<Instant> = None;
    let mut done_at: Option<Instant> = None;
    let mut last_msg = Instant::now();
    let mut tick = check_interval();
    loop {
        let t = top.offset.load(Ordering::Acquire);
        if t > 0 {
            let seen = *top_seen_at.get_or_insert_with(Instant::now);
            if done_at.is_none() && out.got.len() as u64 >= t - start {
                done_at = Some(Instant::now());
            }
            if done_at.is_some_and(|d| d.elapsed() > LINGER) || seen.elapsed() > STUCK {
                break;
            }
        } else if last_msg.elapsed() > STUCK * 3 {
            break;
        }
        let m = match next_or_tick(&mut ws, &mut tick).await {
            Some(Some(Ok(Message::Text(m)))) => m,
            Some(Some(Ok(Message::Close(f)))) => {
                out.closed = Some(format!("{f:?}"));
                break;
            }
            Some(Some(Ok(_))) | None => continue,
            Some(Some(Err(e))) => {
                out.closed = Some(e.to_string());
                break;
            }
            Some(None) => {
                out.closed = Some("closed".into());
                break;
            }
        };
        let now = now_nanos();
        last_msg = Instant::now();
        let b = m.as_bytes();
        let tick = b.starts_with(br#"{"event_type":"tick""#);
        match (
            tick,
            find_u64(b, br#""offset":"#),
            find_u64(b, br#""p":"#),
            find_u64(b, br#""seq":"#),
            find_u64(b, br#""ts":"#),
        ) {
            (true, Some(offset), Some(p), Some(seq), Some(ts)) => {
                out.hist.saturating_record(now.saturating_sub(ts) / 1000);
                out.got.push((offset, p as u32, seq));
            }
            _ => out.unexpected.push(m.chars().take(200).collect()),
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    out
}

// ---------------------------------------------------------------- checks

#[derive(Default, Clone, Copy)]
struct Faults {
    lost: u64,
    duplicated: u64,
    reordered: u64,
    wrong_payload: u64,
    /// Unexpected messages, or the connection closed.
    other: u64,
}

impl Faults {
    fn total(&self) -> u64 {
        self.lost + self.duplicated + self.reordered + self.wrong_payload + self.other
    }

    fn add(&mut self, o: Faults) {
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.wrong_payload += o.wrong_payload;
        self.other += o.other;
    }

    fn cell(&self) -> String {
        format!(
            "{} / {} / {} / {}",
            self.lost,
            self.duplicated,
            self.reordered,
            self.wrong_payload + self.other
        )
    }
}

/// The publishers' side: every publish answered, offsets unique and contiguous from `start`.
/// Returns the payload expected at each offset (index `offset - start - 1`), the top offset and
/// the problems.
/// The (publisher, seq) answered with each offset of a phase, index `offset - start - 1`.
type Expected = Vec<Option<(u32, u64)>>;

fn check_publishers(pubs: &[PubOut], start: u64) -> (Expected, u64, Vec<String>) {
    let mut problems = Vec::new();
    let top = pubs
        .iter()
        .flat_map(|p| p.answers.iter().map(|a| a.1))
        .max()
        .unwrap_or(start);
    let mut expected = vec![None; (top - start) as usize];
    for p in pubs {
        for e in &p.errors {
            problems.push(format!("publisher {}: {e}", p.p));
        }
        if p.answers.len() as u64 != p.sent {
            problems.push(format!(
                "publisher {}: {} sent, {} answered",
                p.p,
                p.sent,
                p.answers.len()
            ));
        }
        for &(seq, offset, _) in &p.answers {
            if offset <= start {
                problems.push(format!(
                    "publisher {}: offset {offset} ≤ start {start}",
                    p.p
                ));
                continue;
            }
            let slot = &mut expected[(offset - start - 1) as usize];
            if let Some((q, s)) = slot {
                problems.push(format!(
                    "offset {offset} answered twice: publisher {q} seq {s} and publisher {} seq {seq}",
                    p.p
                ));
            }
            *slot = Some((p.p, seq));
        }
    }
    let holes = expected.iter().filter(|e| e.is_none()).count();
    if holes > 0 {
        problems.push(format!(
            "{holes} offsets in {}..={top} answered to no publish",
            start + 1
        ));
    }
    (expected, top, problems)
}

/// One subscriber against the expected offsets: each once, in order, with its payload.
fn check_subscriber(s: &SubOut, start: u64, expected: &[Option<(u32, u64)>]) -> Faults {
    let mut f = Faults::default();
    if s.start != start {
        // It subscribed at another position than the other subscribers: its range differs.
        f.other += 1;
    }
    let mut seen = vec![false; expected.len()];
    let mut prev = 0u64;
    for &(offset, p, seq) in &s.got {
        let Some(i) = offset
            .checked_sub(start + 1)
            .map(|i| i as usize)
            .filter(|&i| i < expected.len())
        else {
            f.other += 1;
            continue;
        };
        if seen[i] {
            f.duplicated += 1;
            continue;
        }
        seen[i] = true;
        if offset < prev {
            f.reordered += 1;
        }
        prev = prev.max(offset);
        if expected[i] != Some((p, seq)) {
            f.wrong_payload += 1;
        }
    }
    f.lost = seen.iter().filter(|s| !**s).count() as u64;
    f.other += s.unexpected.len() as u64 + u64::from(s.closed.is_some());
    f
}

// ---------------------------------------------------------------- phases

/// CPU seconds of a set of processes, of this process and of the machine at one moment.
struct Cpu {
    nodes: f64,
    redis: f64,
    client: f64,
    machine: f64,
    at: Instant,
}

fn cpu_now(nodes: &[u32], redis: Option<u32>) -> Cpu {
    Cpu {
        nodes: nodes.iter().map(|&p| cpu_seconds(p)).sum(),
        redis: redis.map_or(0.0, cpu_seconds),
        client: cpu_seconds(std::process::id()),
        machine: machine_busy_seconds(),
        at: Instant::now(),
    }
}

/// Cores used between two readings: nodes, Redis, this client, and everything else on the
/// machine (other jobs).
#[derive(Clone, Copy)]
struct Cores {
    nodes: f64,
    redis: f64,
    client: f64,
    other: f64,
}

impl Cores {
    fn cell(&self) -> String {
        format!(
            "{:.2}, {:.2}, {:.2}, {:.2}",
            self.nodes, self.redis, self.client, self.other
        )
    }
}

fn cores(a: &Cpu, b: &Cpu) -> Cores {
    let t = (b.at - a.at).as_secs_f64().max(1e-9);
    let (nodes, redis, client) = (
        (b.nodes - a.nodes) / t,
        (b.redis - a.redis) / t,
        (b.client - a.client) / t,
    );
    Cores {
        nodes,
        redis,
        client,
        other: ((b.machine - a.machine) / t - nodes - redis - client).max(0.0),
    }
}

struct Setup<'a> {
    label: String,
    nodes: Vec<&'a Node>,
    redis: Option<&'a Redis>,
}

impl Setup<'_> {
    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.proc.pid()).collect()
    }
}

struct PublishRow {
    setup: String,
    window: usize,
    publishers: usize,
    publishes: u64,
    per_second: f64,
    hist: Histogram<u64>,
    faults: Faults,
    problems: Vec<String>,
    deliveries: u64,
    recipients_wrong: u64,
    in_send_order: bool,
    cores: Cores,
    node_cpu_us: f64,
    redis: Option<RedisCost>,
}

/// Subscribers on every node, then publishers (one per entry of `pub_nodes`, on that node),
/// then the checks.
#[allow(clippy::too_many_arguments)]
async fn publish_phase(
    setup: &Setup<'_>,
    channel: &str,
    pub_nodes: &[usize],
    subs_per_node: usize,
    window: usize,
    duration: Duration,
    max: u64,
    pad: Arc<str>,
) -> PublishRow {
    let top = Arc::new(Top::default());
    let mut subs = Vec::new();
    let mut start = None;
    for (i, n) in setup.nodes.iter().enumerate() {
        for _ in 0..subs_per_node {
            let mut ws = connect(n.addr, "/ws").await;
            let s = subscribe(&mut ws, channel).await;
            start.get_or_insert(s);
            subs.push(tokio::spawn(subscriber(ws, i, s, top.clone())));
        }
    }
    let start = start.unwrap_or(0);
    let before = setup.redis.map(Redis::snapshot);
    let cpu0 = cpu_now(&setup.pids(), setup.redis.map(|r| r.proc.pid()));
    let mut handles = Vec::new();
    for (p, &n) in pub_nodes.iter().enumerate() {
        handles.push(tokio::spawn(publisher(PubCfg {
            addr: setup.nodes[n].addr,
            channel: channel.to_owned(),
            p: p as u32,
            window,
            rate: 0,
            duration,
            max,
            pad: pad.clone(),
        })));
    }
    let mut pubs = Vec::new();
    for h in handles {
        pubs.push(h.await.expect("publisher task"));
    }
    let cpu1 = cpu_now(&setup.pids(), setup.redis.map(|r| r.proc.pid()));
    let (expected, top_offset, problems) = check_publishers(&pubs, start);
    top.offset
        .store(top_offset.max(start + 1), Ordering::Release);
    let mut faults = Faults::default();
    let mut deliveries = 0;
    for s in subs {
        let s = s.await.expect("subscriber task");
        deliveries += s.got.len() as u64;
        faults.add(check_subscriber(&s, start, &expected));
    }
    let after = setup.redis.map(Redis::snapshot);
    let publishes: u64 = pubs.iter().map(|p| p.answers.len() as u64).sum();
    let mut h = hist();
    for p in &pubs {
        h.add(&p.hist).expect("histogram add");
    }
    // `recipients` counts the publisher's node: its subscribers of the channel.
    let recipients_wrong = pubs
        .iter()
        .flat_map(|p| p.answers.iter())
        .filter(|a| a.2 != subs_per_node as u64)
        .count() as u64;
    let in_send_order = pubs.iter().all(|p| {
        let mut a = p.answers.clone();
        a.sort_unstable();
        a.windows(2).all(|w| w[0].1 < w[1].1)
    });
    let seconds = pubs.iter().map(|p| p.seconds).fold(0.0, f64::max);
    eprintln!(
        "cluster:   {publishes} publishes, {:.0}/s, p50 {}, p99 {}; lost / dup / reord / other {}{}",
        publishes as f64 / seconds.max(1e-9),
        us(p(&h, 0.5)),
        us(p(&h, 0.99)),
        faults.cell(),
        if problems.is_empty() {
            String::new()
        } else {
            format!("; {}", problems.join("; "))
        }
    );
    PublishRow {
        setup: setup.label.clone(),
        window,
        publishers: pub_nodes.len(),
        publishes,
        per_second: publishes as f64 / seconds.max(1e-9),
        hist: h,
        faults,
        problems,
        deliveries,
        recipients_wrong,
        in_send_order,
        cores: cores(&cpu0, &cpu1),
        node_cpu_us: (cpu1.nodes - cpu0.nodes) * 1e6 / publishes.max(1) as f64,
        redis: before
            .zip(after)
            .map(|(a, b)| redis_cost(&a, &b, publishes)),
    }
}

struct FanRow {
    setup: String,
    /// Per node: (subscribers, histogram, deliveries).
    per_node: Vec<(usize, Histogram<u64>, u64)>,
    all: Histogram<u64>,
    publishes: u64,
    answer_hist: Histogram<u64>,
    faults: Faults,
    problems: Vec<String>,
    cores: Cores,
}

async fn fanout_phase(
    setup: &Setup<'_>,
    channel: &str,
    subscribers: usize,
    rate: u64,
    duration: Duration,
    pad: Arc<str>,
) -> FanRow {
    let top = Arc::new(Top::default());
    let n = setup.nodes.len();
    // Connect in batches, spread round-robin over the nodes.
    let mut subs = Vec::new();
    let mut i = 0;
    while i < subscribers {
        let mut batch = Vec::new();
        for j in i..(i + 50).min(subscribers) {
            let (node, addr) = (j % n, setup.nodes[j % n].addr);
            let ch = channel.to_owned();
            batch.push(tokio::spawn(async move {
                let mut ws = connect(addr, "/ws").await;
                let s = subscribe(&mut ws, &ch).await;
                (ws, node, s)
            }));
        }
        for b in batch {
            let (ws, node, s) = b.await.expect("connect task");
            subs.push((node, s, ws));
        }
        i += 50;
    }
    let start = subs.first().map_or(0, |s| s.1);
    let subs: Vec<_> = subs
        .into_iter()
        .map(|(node, s, ws)| tokio::spawn(subscriber(ws, node, s, top.clone())))
        .collect();
    let cpu0 = cpu_now(&setup.pids(), setup.redis.map(|r| r.proc.pid()));
    let publisher = publisher(PubCfg {
        addr: setup.nodes[0].addr,
        channel: channel.to_owned(),
        p: 0,
        window: 64,
        rate,
        duration,
        max: rate * duration.as_secs().max(1) + 1,
        pad,
    })
    .await;
    let cpu1 = cpu_now(&setup.pids(), setup.redis.map(|r| r.proc.pid()));
    let pubs = [publisher];
    let (expected, top_offset, problems) = check_publishers(&pubs, start);
    top.offset
        .store(top_offset.max(start + 1), Ordering::Release);
    let mut per_node: Vec<(usize, Histogram<u64>, u64)> = (0..n).map(|_| (0, hist(), 0)).collect();
    let mut all = hist();
    let mut faults = Faults::default();
    for s in subs {
        let s = s.await.expect("subscriber task");
        faults.add(check_subscriber(&s, start, &expected));
        let row = &mut per_node[s.node];
        row.0 += 1;
        row.1.add(&s.hist).expect("histogram add");
        row.2 += s.got.len() as u64;
        all.add(&s.hist).expect("histogram add");
    }
    eprintln!(
        "cluster:   {} publishes, p50 {}, p99 {}; lost / dup / reord / other {}{}",
        pubs[0].answers.len(),
        us(p(&all, 0.5)),
        us(p(&all, 0.99)),
        faults.cell(),
        if problems.is_empty() {
            String::new()
        } else {
            format!("; {}", problems.join("; "))
        }
    );
    let [publisher] = pubs;
    FanRow {
        setup: setup.label.clone(),
        per_node,
        all,
        publishes: publisher.answers.len() as u64,
        answer_hist: publisher.hist,
        faults,
        problems,
        cores: cores(&cpu0, &cpu1),
    }
}

// ---------------------------------------------------------------- report

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1} ms", v as f64 / 1000.0)
    } else {
        format!("{v} µs")
    }
}

fn p(h: &Histogram<u64>, q: f64) -> u64 {
    h.value_at_quantile(q)
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

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn publish_table(rows: &[PublishRow]) -> String {
    let mut t = String::from(
        "| setup | window | publishers | publishes | publishes/s | p50 | p99 | max | lost / dup / reord / other | cores used (nodes, Redis, client, other jobs) | node CPU µs/publish |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for r in rows {
        t.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {:.1} |\n",
            r.setup,
            r.window,
            r.publishers,
            r.publishes,
            r.per_second,
            us(p(&r.hist, 0.5)),
            us(p(&r.hist, 0.99)),
            us(r.hist.max()),
            r.faults.cell(),
            r.cores.cell(),
            r.node_cpu_us,
        ));
    }
    t
}

fn ratio_table(rows: &[PublishRow]) -> String {
    let find = |setup: &str, window: usize| {
        rows.iter()
            .find(|r| r.setup.starts_with(setup) && r.window == window)
    };
    let f = |x: Option<f64>| {
        x.filter(|v| v.is_finite())
            .map_or("–".into(), |v| format!("{v:.2}"))
    };
    let mut t = String::from(
        "| compared | window | publishes/s ratio | p50 ratio | p99 ratio |\n|---|---:|---:|---:|---:|\n",
    );
    let windows: Vec<usize> = {
        let mut w: Vec<usize> = rows.iter().map(|r| r.window).collect();
        w.sort_unstable();
        w.dedup();
        w
    };
    for &w in &windows {
        for (a, b) in [
            ("redis, 1 node", "embedded, 1 node, 1"),
            ("redis, 3 nodes", "embedded, 1 node, 3"),
            ("redis, 3 nodes", "redis, 1 node"),
        ] {
            let (Some(x), Some(y)) = (find(a, w), find(b, w)) else {
                continue;
            };
            t.push_str(&format!(
                "| {} ÷ {} | {w} | {} | {} | {} |\n",
                x.setup,
                y.setup,
                f(Some(x.per_second / y.per_second)),
                f(Some(p(&x.hist, 0.5) as f64 / p(&y.hist, 0.5).max(1) as f64)),
                f(Some(
                    p(&x.hist, 0.99) as f64 / p(&y.hist, 0.99).max(1) as f64
                )),
            ));
        }
    }
    t
}

fn redis_table(rows: &[PublishRow]) -> String {
    let mut t = String::from(
        "| phase | publishes | EVALSHA / publish | inside the script / publish | other commands (whole phase) | Redis bytes in / out per publish | Redis CPU µs/publish |\n|---|---:|---:|---|---|---:|---:|\n",
    );
    for r in rows {
        let Some(c) = &r.redis else { continue };
        let inside: Vec<String> = c
            .inside_detail
            .iter()
            .map(|(n, v)| format!("{n} {v:.2}"))
            .collect();
        let other: Vec<String> = c
            .other_detail
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        t.push_str(&format!(
            "| {}, window {} | {} | {:.3} | {:.2} ({}) | {} | {:.0} / {:.0} | {:.1} |\n",
            r.setup,
            r.window,
            c.publishes,
            c.evalsha,
            c.inside,
            inside.join(", "),
            if other.is_empty() {
                "none".into()
            } else {
                other.join(", ")
            },
            c.net_in,
            c.net_out,
            c.cpu_us,
        ));
    }
    t
}

fn fan_table(rows: &[FanRow]) -> String {
    let mut t = String::from(
        "| setup | node | subscribers | publishes | deliveries | p50 | p99 | max | publish→answer p50 / p99 | lost / dup / reord / other | cores used (nodes, Redis, client, other jobs) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        for (i, (subs, h, d)) in r.per_node.iter().enumerate() {
            t.push_str(&format!(
                "| {} | {} | {subs} | | {d} | {} | {} | {} | | | |\n",
                r.setup,
                i + 1,
                us(p(h, 0.5)),
                us(p(h, 0.99)),
                us(h.max()),
            ));
        }
        t.push_str(&format!(
            "| {} | **all** | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |\n",
            r.setup,
            r.per_node.iter().map(|x| x.0).sum::<usize>(),
            r.publishes,
            r.per_node.iter().map(|x| x.2).sum::<u64>(),
            us(p(&r.all, 0.5)),
            us(p(&r.all, 0.99)),
            us(r.all.max()),
            us(p(&r.answer_hist, 0.5)),
            us(p(&r.answer_hist, 0.99)),
            r.faults.cell(),
            r.cores.cell(),
        ));
    }
    t
}

// ---------------------------------------------------------------- main

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs = env_or("CLUSTER_SECS", 3u64).max(1);
    let window = env_or("CLUSTER_WINDOW", 64usize).max(1);
    let rtt_count = env_or("CLUSTER_RTT_COUNT", 2000u64).max(1);
    let subs_per_node = env_or("CLUSTER_SUBS_PER_NODE", 2usize).max(1);
    let fan_subs = env_or("CLUSTER_FANOUT_SUBS", 300usize).max(3);
    let fan_rate = env_or("CLUSTER_FANOUT_RATE", 1000u64).max(1);
    let fan_secs = env_or("CLUSTER_FANOUT_SECS", 5u64).max(1);
    let shards = env_or("CLUSTER_SHARDS", 1u16).max(1);
    let pad: Arc<str> = "x".repeat(env_or("CLUSTER_PAYLOAD", 100usize)).into();
    watchdog(Duration::from_secs(env_or("CLUSTER_TIMEOUT", 240u64)));

    if std::env::var_os("HUDDLE_BIN").is_none() {
        let status = Command::new("cargo")
            .args(["build", "--release", "--bin", "huddle"])
            .status()
            .expect("cargo build");
        assert!(status.success(), "release build failed");
    }
    // What else the machine is doing: its busy cores over one second before anything starts.
    let (b0, t0) = (machine_busy_seconds(), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let busy_before = (machine_busy_seconds() - b0) / t0.elapsed().as_secs_f64();
    if busy_before > 0.2 {
        eprintln!("cluster: the machine is already busy ({busy_before:.2} cores) before the run: the figures will show it");
    }
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let mut publish_rows = Vec::new();
    let mut fan_rows = Vec::new();
    let rtt = Duration::from_secs(30);
    let piped = Duration::from_secs(secs);
    let unbounded = u64::MAX;

    // Embedded: one node, no Redis.
    {
        let node = Node::start(None, shards, "huddle embedded");
        let setup = Setup {
            label: "embedded, 1 node, 1 publisher".into(),
            nodes: vec![&node],
            redis: None,
        };
        let setup3 = Setup {
            label: "embedded, 1 node, 3 publishers".into(),
            nodes: vec![&node],
            redis: None,
        };
        eprintln!("cluster: embedded, publish round trip …");
        publish_rows.push(rt.block_on(publish_phase(
            &setup,
            "e_rtt",
            &[0],
            subs_per_node,
            1,
            rtt,
            rtt_count,
            pad.clone(),
        )));
        eprintln!("cluster: embedded, pipelined publishes …");
        publish_rows.push(rt.block_on(publish_phase(
            &setup,
            "e_pipe",
            &[0],
            subs_per_node,
            window,
            piped,
            unbounded,
            pad.clone(),
        )));
        eprintln!("cluster: embedded, three pipelined publishers …");
        publish_rows.push(rt.block_on(publish_phase(
            &setup3,
            "e_pipe3",
            &[0, 0, 0],
            subs_per_node,
            window,
            piped,
            unbounded,
            pad.clone(),
        )));
        eprintln!("cluster: embedded, fan-out to {fan_subs} …");
        let fan_setup = Setup {
            label: "embedded, 1 node".into(),
            nodes: vec![&node],
            redis: None,
        };
        fan_rows.push(rt.block_on(fanout_phase(
            &fan_setup,
            "e_fan",
            fan_subs,
            fan_rate,
            Duration::from_secs(fan_secs),
            pad.clone(),
        )));
    }

    // Redis: one node, then three.
    let redis = Redis::start();
    let redis_version = redis.version();
    let url = redis.url();
    {
        let a = Node::start(Some(&url), shards, "huddle node 1");
        let setup1 = Setup {
            label: "redis, 1 node, 1 publisher".into(),
            nodes: vec![&a],
            redis: Some(&redis),
        };
        eprintln!("cluster: redis, 1 node, publish round trip …");
        publish_rows.push(rt.block_on(publish_phase(
            &setup1,
            "r1_rtt",
            &[0],
            subs_per_node,
            1,
            rtt,
            rtt_count,
            pad.clone(),
        )));
        eprintln!("cluster: redis, 1 node, pipelined publishes …");
        publish_rows.push(rt.block_on(publish_phase(
            &setup1,
            "r1_pipe",
            &[0],
            subs_per_node,
            window,
            piped,
            unbounded,
            pad.clone(),
        )));
        let b = Node::start(Some(&url), shards, "huddle node 2");
        let c = Node::start(Some(&url), shards, "huddle node 3");
        let setup3 = Setup {
            label: "redis, 3 nodes, 1 publisher per node".into(),
            nodes: vec![&a, &b, &c],
            redis: Some(&redis),
        };
        eprintln!("cluster: redis, 3 nodes, publish round trip …");
        publish_rows.push(rt.block_on(publish_phase(
            &setup3,
            "r3_rtt",
            &[0, 1, 2],
            subs_per_node,
            1,
            rtt,
            rtt_count,
            pad.clone(),
        )));
        eprintln!("cluster: redis, 3 nodes, pipelined publishes …");
        publish_rows.push(rt.block_on(publish_phase(
            &setup3,
            "r3_pipe",
            &[0, 1, 2],
            subs_per_node,
            window,
            piped,
            unbounded,
            pad.clone(),
        )));
        eprintln!("cluster: redis, 3 nodes, fan-out to {fan_subs} …");
        let fan_setup = Setup {
            label: "redis, 3 nodes".into(),
            nodes: vec![&a, &b, &c],
            redis: Some(&redis),
        };
        fan_rows.push(rt.block_on(fanout_phase(
            &fan_setup,
            "r_fan",
            fan_subs,
            fan_rate,
            Duration::from_secs(fan_secs),
            pad.clone(),
        )));
    }
    drop(redis);
    drop(rt);
    let took = started.elapsed();

    let date = String::from_utf8(
        Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    let mut problems = Vec::new();
    let mut failures = 0;
    for r in &publish_rows {
        failures += r.faults.total() + r.problems.len() as u64;
        problems.extend(r.problems.iter().map(|p| format!("{}: {p}", r.setup)));
    }
    for r in &fan_rows {
        failures += r.faults.total() + r.problems.len() as u64;
        problems.extend(
            r.problems
                .iter()
                .map(|p| format!("{} fan-out: {p}", r.setup)),
        );
    }
    let mut notes = String::new();
    for r in &publish_rows {
        if r.recipients_wrong > 0 {
            notes.push_str(&format!(
                "- {}, window {}: {} of {} answers gave `recipients` other than the node's {} subscribers.\n",
                r.setup, r.window, r.recipients_wrong, r.publishes, subs_per_node
            ));
        }
        if !r.in_send_order {
            notes.push_str(&format!(
                "- {}, window {}: a publisher's offsets were not in its send order.\n",
                r.setup, r.window
            ));
        }
    }
    let deliveries: u64 = publish_rows.iter().map(|r| r.deliveries).sum::<u64>()
        + fan_rows.iter().map(|r| r.all.len()).sum::<u64>();
    let report = format!(
        "## {date} — `cargo bench --bench cluster`\n\n\
         Machine: {machine}. **The huddle nodes, redis-server ({redis_version}, `--save \"\" --appendonly no`) and the \
         bench client all share these cores**, so absolute figures are those of a crowded box: compare \
         within the run. Commit `{commit}`, `--shards {shards}` per node, payload {payload} B of padding, \
         {subs_per_node} subscribers of the channel on every node during the publish phases. The run took \
         {took:.1} s; other jobs kept {busy_before:.2} cores busy in the second before it (the \"other jobs\" \
         column: the machine's busy time minus that of the nodes, Redis and the client).\n\n\
         ### Publish: send → answer, one at a time (window 1) and pipelined (window {window}, {secs} s)\n\n{pt}\n\
         Ratios (same run):\n\n{rt}\n\
         ### Redis per publish (INFO commandstats / stats before and after each phase)\n\n{redt}\n\
         ### Fan-out: {fan_subs} subscribers, one publisher on node 1 at {fan_rate} msg/s for {fan_secs} s, send → receipt\n\n{ft}\n\
         Correctness: {verdict} ({deliveries} deliveries checked: every subscriber got every offset once, \
         in order, with the payload its publish was answered for).\n{notes}",
        date = date.trim(),
        machine = machine(),
        commit = git_commit(),
        payload = pad.len(),
        took = took.as_secs_f64(),
        pt = publish_table(&publish_rows),
        rt = ratio_table(&publish_rows),
        redt = redis_table(&publish_rows),
        ft = fan_table(&fan_rows),
        verdict = if failures == 0 { "PASS" } else { "FAIL" },
    );
    println!("{report}");
    for p in &problems {
        eprintln!("cluster: {p}");
    }
    if failures > 0 {
        eprintln!("cluster: {failures} faults (lost, duplicated, reordered or wrong deliveries, or unanswered publishes): see above");
        std::process::exit(1);
    }
}
