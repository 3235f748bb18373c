//! A bounded soak of cluster mode (PROTOCOL.md §10, §12): three nodes over one real Redis,
//! WebSocket publishers on every node pipelining up to `--max-inflight-publishes`, subscribers
//! of every channel on every node. In the middle one node is killed with SIGKILL and a new one
//! started; the killed node's subscribers come back on other nodes with `since`, its publishers
//! on the new node, retrying what was not answered with the same `message_id`. Every other
//! subscriber also drops its connection and comes back with `since` now and then.
//!
//! At the end, per subscriber and channel: every offset from the subscription's start to the
//! channel's top exactly once and in order (no gap, duplicate or reorder), every recovery
//! `recovered:true`, and at every offset the message whose publish was answered with it.
//!
//! Like `tests/cluster.rs`, it is skipped outside CI when `redis-server` is not installed.
mod support;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use support::redis::Redis;
use support::{Server, API_KEY, WAIT};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const CHANNELS: [&str; 4] = ["soak_a", "soak_b", "soak_c", "soak_d"];
const NODES: usize = 3;
const PUBLISHERS_PER_NODE: usize = 2;
const SUBSCRIBERS_PER_NODE: usize = 3;
const PUBLISHERS: usize = NODES * PUBLISHERS_PER_NODE;
const SUBSCRIBERS: usize = NODES * SUBSCRIBERS_PER_NODE;
/// 6 × 17,000 = 102,000 publications.
const PER_PUBLISHER: u64 = 17_000;
const TOTAL: u64 = PUBLISHERS as u64 * PER_PUBLISHER;
/// Publishes one publisher keeps in flight: the node's `--max-inflight-publishes`.
const WINDOW: usize = 64;
/// The node is killed once this many publishes were answered.
const KILL_AT: u64 = TOTAL * 45 / 100;
/// A subscriber drops its connection after a random number of messages in this range.
const DROP_EVERY: (u64, u64) = (8_000, 24_000);
/// No message for this long while a subscriber still expects some fails the soak.
const STALL: Duration = Duration::from_secs(20);
/// Every node; recoveries after a kill or a drop fit in the history and in `--recovery-max`,
/// and a replay of all four channels fits in the send queue.
const NODE_ARGS: [&str; 10] = [
    "--history-size",
    "20000",
    "--recovery-max",
    "20000",
    "--max-inflight-publishes",
    "64",
    "--message-rate",
    "off",
    "--send-queue-bytes",
    "33554432",
];

async fn node(redis: &Redis) -> Server {
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str()];
    args.extend_from_slice(&NODE_ARGS);
    let s = Server::start(&args);
    wait_healthy(&s).await;
    s
}

async fn wait_healthy(s: &Server) {
    let t0 = Instant::now();
    while s.get("/healthz").await.status != 200 {
        assert!(t0.elapsed() < WAIT, "/healthz never answered 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A WebSocket connection past its `connection_ack`; None if the node is not there.
async fn connect(addr: SocketAddr, path: &str) -> Option<Ws> {
    let url = format!("ws://{addr}{path}");
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .ok()?
        .ok()?;
    match tokio::time::timeout(WAIT, ws.next()).await.ok()?? {
        Ok(Message::Text(t)) if t.contains("\"connection_ack\"") => Some(ws),
        _ => None,
    }
}

/// The fields of a frame the soak looks at (the rest is skipped, not parsed).
#[derive(Deserialize)]
struct Frame<'a> {
    event_type: &'a str,
    #[serde(default)]
    channel: Option<&'a str>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    message_id: Option<&'a str>,
}

fn channel_index(name: &str) -> usize {
    CHANNELS
        .iter()
        .position(|c| *c == name)
        .unwrap_or_else(|| panic!("unexpected channel {name}"))
}

/// Publisher `p`'s message `seq`: its channel, its `message_id`, and the id the soak tracks.
fn channel_of(p: usize, seq: u64) -> usize {
    (seq as usize + p) % CHANNELS.len()
}
fn message_id(p: usize, seq: u64) -> String {
    format!("p{p}-{seq}")
}
fn id_of(p: usize, seq: u64) -> u64 {
    ((p as u64 + 1) << 32) | seq
}
fn parse_id(message_id: &str) -> u64 {
    let parsed = message_id.strip_prefix('p').and_then(|r| {
        let (p, s) = r.split_once('-')?;
        Some(id_of(p.parse().ok()?, s.parse().ok()?))
    });
    parsed.unwrap_or_else(|| panic!("not a soak message_id: {message_id}"))
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// A random node of the live ones, another than `avoid` when there is one.
fn pick(
    live: &watch::Receiver<Vec<SocketAddr>>,
    rng: &mut u64,
    avoid: Option<SocketAddr>,
) -> SocketAddr {
    let nodes = live.borrow().clone();
    let others: Vec<SocketAddr> = nodes
        .iter()
        .copied()
        .filter(|a| Some(*a) != avoid)
        .collect();
    let from = if others.is_empty() { &nodes } else { &others };
    from[(xorshift(rng) % from.len() as u64) as usize]
}

/// One publish answered with an offset.
struct Answered {
    channel: usize,
    offset: u64,
    id: u64,
}

#[derive(Default)]
struct PublisherReport {
    answered: Vec<Answered>,
    reconnects: u64,
    retried: u64,
    refused: u64,
    /// A connection's own (not retried) publishes of one channel got decreasing offsets.
    order_violations: u64,
    wrong_epoch: u64,
}

/// Publishes `PER_PUBLISHER` messages over the WebSocket, `WINDOW` in flight, spread over the
/// channels. A lost connection (its node killed) is replaced by one to the node that took the
/// dead one's place, and everything unanswered is sent again with the same `message_id`.
async fn publisher(
    p: usize,
    mut addr: SocketAddr,
    epochs: Arc<Vec<String>>,
    mut live: watch::Receiver<Vec<SocketAddr>>,
    progress: Arc<AtomicU64>,
) -> PublisherReport {
    let mut r = PublisherReport::default();
    let mut next = 0u64;
    let mut again: VecDeque<u64> = VecDeque::new();
    let path = format!("/ws?api_key={API_KEY}");
    while (r.answered.len() as u64) < PER_PUBLISHER {
        let Some(mut ws) = connect(addr, &path).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // seq → sent again (a retry).
        let mut inflight: HashMap<u64, bool> = HashMap::new();
        // This connection's first sends, in order, and the offsets they were answered with.
        let mut sent: Vec<u64> = Vec::new();
        let mut offsets: HashMap<u64, u64> = HashMap::new();
        let mut lost = false;
        'conn: loop {
            let mut fed = false;
            while inflight.len() < WINDOW {
                let (seq, retry) = match again.pop_front() {
                    Some(s) => (s, true),
                    None if next < PER_PUBLISHER => {
                        next += 1;
                        (next - 1, false)
                    }
                    None => break,
                };
                r.retried += u64::from(retry);
                if !retry {
                    sent.push(seq);
                }
                inflight.insert(seq, retry);
                // The outer message_id names the request (`reply_to`), the inner one the
                // message (what subscribers see, and what makes a retry idempotent).
                let id = message_id(p, seq);
                let msg = json!({"event_type":"publish","message_id":id,
                    "data":{"channel":CHANNELS[channel_of(p, seq)],"event_type":"tick",
                    "message_id":id,"data":{"p":p,"s":seq}}});
                if ws.feed(Message::Text(msg.to_string())).await.is_err() {
                    lost = true;
                    break 'conn;
                }
                fed = true;
            }
            if fed && ws.flush().await.is_err() {
                lost = true;
                break;
            }
            if inflight.is_empty() {
                break;
            }
            let text = match tokio::time::timeout(WAIT, ws.next()).await {
                Err(_) => panic!(
                    "publisher {p}: no answer within {WAIT:?} ({} in flight)",
                    inflight.len()
                ),
                Ok(Some(Ok(Message::Text(t)))) => t,
                Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => {
                    lost = true;
                    break;
                }
                Ok(Some(Ok(_))) => continue,
            };
            let v: Value = serde_json::from_str(&text).expect("JSON");
            let seq = v["reply_to"]
                .as_str()
                .and_then(|m| m.strip_prefix(&format!("p{p}-")))
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("publisher {p}: not a reply to a publish: {v}"));
            let retry = inflight
                .remove(&seq)
                .unwrap_or_else(|| panic!("publisher {p}: answered twice: {v}"));
            match v["event_type"].as_str() {
                Some("publish") => {
                    let res = &v["data"]["results"][0];
                    let channel = channel_of(p, seq);
                    let offset = res["offset"].as_u64().expect("offset");
                    assert_eq!(res["channel"], CHANNELS[channel], "{v}");
                    if res["epoch"] != epochs[channel].as_str() {
                        r.wrong_epoch += 1;
                    }
                    if !retry {
                        offsets.insert(seq, offset);
                    }
                    r.answered.push(Answered {
                        channel,
                        offset,
                        id: id_of(p, seq),
                    });
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                // Refused whole (nothing delivered): sent again later with the same message_id.
                Some("error")
                    if matches!(
                        v["data"]["code"].as_str(),
                        Some("overloaded" | "unavailable")
                    ) =>
                {
                    r.refused += 1;
                    again.push_back(seq);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => panic!("publisher {p}: unexpected answer {v}"),
            }
        }
        // Answers may come in any order, but one connection's publishes of a channel are
        // stored in the order they were sent.
        let mut last = [0u64; CHANNELS.len()];
        for seq in sent {
            if let Some(&o) = offsets.get(&seq) {
                let c = channel_of(p, seq);
                if o <= last[c] {
                    r.order_violations += 1;
                    if r.order_violations <= 5 {
                        eprintln!(
                            "publisher {p}: seq {seq} on {} answered {o} after {}",
                            CHANNELS[c], last[c]
                        );
                    }
                }
                last[c] = o;
            }
        }
        if !lost {
            continue;
        }
        // The node is gone: what it did not answer may or may not be stored; the same
        // message_id makes the retry safe either way.
        r.reconnects += 1;
        let mut unanswered: Vec<u64> = inflight.into_keys().collect();
        unanswered.sort_unstable();
        again.extend(unanswered);
        let dead = addr;
        loop {
            {
                let nodes = live.borrow_and_update();
                if nodes.len() == NODES && !nodes.contains(&dead) {
                    addr = *nodes.last().expect("a node");
                    break;
                }
            }
            tokio::time::timeout(WAIT * 2, live.changed())
                .await
                .expect("a node replaced the dead one")
                .expect("live list kept");
        }
    }
    r
}

/// What one subscriber saw of every channel.
struct Track {
    epochs: Vec<String>,
    /// The offset of the first subscription (its reply).
    start: Vec<u64>,
    /// At `[c][o - start - 1]` the id of the message at offset `o`; 0 while missing.
    ids: Vec<Vec<u64>>,
    missing: u64,
    gaps: u64,
    duplicates: u64,
    reorders: u64,
    /// A channel message before its subscription's reply on the connection.
    early: u64,
    not_recovered: u64,
    wrong_epoch: u64,
    recoveries: u64,
    replayed: u64,
    reconnects: u64,
    /// Reconnects after the connection was lost, or could not be made (the node killed),
    /// rather than dropped.
    lost: u64,
    /// Times it left the killed node (lost, or dropped while draining what the dead node had
    /// sent) and came back on another one.
    left_killed: u64,
    closes: BTreeMap<u16, u64>,
}

impl Track {
    fn new() -> Track {
        let n = CHANNELS.len();
        Track {
            epochs: vec![String::new(); n],
            start: vec![0; n],
            ids: vec![Vec::new(); n],
            missing: 0,
            gaps: 0,
            duplicates: 0,
            reorders: 0,
            early: 0,
            not_recovered: 0,
            wrong_epoch: 0,
            recoveries: 0,
            replayed: 0,
            reconnects: 0,
            lost: 0,
            left_killed: 0,
            closes: BTreeMap::new(),
        }
    }

    /// The highest offset seen on `c` (the `since` of the next recovery).
    fn last(&self, c: usize) -> u64 {
        self.start[c] + self.ids[c].len() as u64
    }

    fn accept(&mut self, c: usize, offset: u64, id: u64) {
        if offset <= self.start[c] {
            self.duplicates += 1;
            return;
        }
        let ids = &mut self.ids[c];
        let i = (offset - self.start[c] - 1) as usize;
        if i == ids.len() {
            ids.push(id);
        } else if i > ids.len() {
            self.gaps += 1;
            self.missing += (i - ids.len()) as u64;
            ids.resize(i, 0);
            ids.push(id);
        } else if ids[i] == 0 {
            self.reorders += 1;
            self.missing -= 1;
            ids[i] = id;
        } else {
            self.duplicates += 1;
        }
    }

    fn done(&self, targets: &Option<Vec<u64>>) -> bool {
        targets
            .as_ref()
            .is_some_and(|t| (0..CHANNELS.len()).all(|c| self.last(c) >= t[c]))
    }
}

/// Why a connection ended.
enum End {
    Done,
    Dropped,
    Lost,
}

/// Subscribes every channel and reads until each reaches its target (the channel's top once
/// the publishers are done). Drops its connection now and then and comes back to a random
/// live node with `since` (the subscribers of the node to be killed come back to it until it
/// is killed); a lost connection (its node killed) comes back on another node.
async fn subscriber(
    s: usize,
    mut addr: SocketAddr,
    live: watch::Receiver<Vec<SocketAddr>>,
    mut targets: watch::Receiver<Option<Vec<u64>>>,
    ready: mpsc::UnboundedSender<Vec<String>>,
) -> Track {
    let (home, pinned) = (addr, s.is_multiple_of(NODES));
    let mut t = Track::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(s as u64 + 1);
    let mut ready = Some(ready);
    let mut generation = 0u64;
    loop {
        let mut ws = loop {
            if let Some(ws) = connect(addr, "/ws").await {
                break ws;
            }
            // Its node died while it was coming back.
            t.lost += 1;
            t.left_killed += u64::from(!live.borrow().contains(&addr));
            tokio::time::sleep(Duration::from_millis(50)).await;
            addr = pick(&live, &mut rng, Some(addr));
        };
        generation += 1;
        let sub_id = format!("s{s}-{generation}");
        let first = ready.is_some();
        let since: Vec<u64> = (0..CHANNELS.len()).map(|c| t.last(c)).collect();
        let specs: Vec<Value> = (0..CHANNELS.len())
            .map(|c| {
                if first {
                    json!({"channel": CHANNELS[c]})
                } else {
                    json!({"channel": CHANNELS[c],
                        "since": {"offset": since[c], "epoch": t.epochs[c]}})
                }
            })
            .collect();
        let sub = json!({"event_type":"user_subscription","message_id":sub_id,
            "data":{"channels":specs}});
        let mut awaiting = vec![true; CHANNELS.len()];
        let mut counts = vec![0u64; CHANNELS.len()];
        let mut budget = DROP_EVERY.0 + xorshift(&mut rng) % (DROP_EVERY.1 - DROP_EVERY.0);
        let end = if ws.send(Message::Text(sub.to_string())).await.is_err() {
            End::Lost
        } else {
            loop {
                let waiting = awaiting.iter().any(|&w| w);
                if !waiting && t.done(&targets.borrow()) {
                    break End::Done;
                }
                if !waiting && budget == 0 && targets.borrow().is_none() {
                    break End::Dropped;
                }
                let next = tokio::select! {
                    n = tokio::time::timeout(STALL, ws.next()) => n,
                    _ = targets.changed() => continue,
                };
                let text = match next {
                    Err(_) => panic!(
                        "subscriber {s}: nothing for {STALL:?} on {addr} (at {:?}, targets {:?})",
                        (0..CHANNELS.len()).map(|c| t.last(c)).collect::<Vec<_>>(),
                        *targets.borrow()
                    ),
                    Ok(Some(Ok(Message::Text(text)))) => text,
                    Ok(Some(Ok(Message::Close(f)))) => {
                        *t.closes
                            .entry(f.map_or(0, |f| u16::from(f.code)))
                            .or_default() += 1;
                        break End::Lost;
                    }
                    Ok(Some(Err(_))) | Ok(None) => break End::Lost,
                    Ok(Some(Ok(_))) => continue,
                };
                let f: Frame = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("subscriber {s}: {e}: {text}"));
                match (f.event_type, f.channel, f.offset) {
                    ("user_subscription", _, _) => {
                        let v: Value = serde_json::from_str(&text).expect("JSON");
                        assert_eq!(v["reply_to"], sub_id.as_str(), "subscriber {s}: {v}");
                        let d = &v["data"];
                        assert_eq!(d["status"], "subscribed", "subscriber {s}: {v}");
                        let c = channel_index(d["channel"].as_str().expect("channel"));
                        let top = d["offset"].as_u64().expect("offset");
                        let epoch = d["epoch"].as_str().expect("epoch");
                        awaiting[c] = false;
                        if first {
                            t.start[c] = top;
                            t.epochs[c] = epoch.to_owned();
                        } else if d["recovered"] != true {
                            t.not_recovered += 1;
                            eprintln!(
                                "subscriber {s}: not recovered on {addr}: {v} (since {})",
                                since[c]
                            );
                        } else {
                            t.recoveries += 1;
                            t.replayed += top.saturating_sub(since[c]);
                            if epoch != t.epochs[c] {
                                t.wrong_epoch += 1;
                            }
                        }
                        if first && !awaiting.iter().any(|&w| w) {
                            if let Some(r) = ready.take() {
                                let _ = r.send(t.epochs.clone());
                            }
                        }
                    }
                    (_, Some(channel), Some(offset)) => {
                        let c = channel_index(channel);
                        if awaiting[c] {
                            t.early += 1;
                        }
                        let id = parse_id(f.message_id.expect("message_id"));
                        let expected = t.last(c) + 1;
                        if offset != expected {
                            eprintln!(
                                "subscriber {s}: {channel} offset {offset}, expected {expected}, \
                                 on {addr} (connection {generation}, since {}, first? {first}, \
                                 {} messages into it)",
                                since[c], counts[c]
                            );
                        }
                        counts[c] += 1;
                        t.accept(c, offset, id);
                        budget = budget.saturating_sub(1);
                    }
                    _ => panic!("subscriber {s}: unexpected {text}"),
                }
            }
        };
        if !matches!(end, End::Done) && !live.borrow().contains(&addr) {
            t.left_killed += 1;
        }
        match end {
            End::Done => return t,
            End::Dropped => {
                t.reconnects += 1;
                // Sometimes a clean close, mostly a vanished connection.
                if xorshift(&mut rng).is_multiple_of(3) {
                    let _ = ws.close(None).await;
                }
                drop(ws);
                // The doomed node's subscribers stay on it until it is killed.
                addr = if pinned && live.borrow().contains(&home) {
                    home
                } else {
                    pick(&live, &mut rng, None)
                };
            }
            End::Lost => {
                t.reconnects += 1;
                t.lost += 1;
                drop(ws);
                addr = pick(&live, &mut rng, Some(addr));
            }
        }
    }
}

/// A channel's top offset in Redis.
fn top_in_redis(redis: &Redis, channel: &str) -> u64 {
    let v = redis.command(&["HGET", &format!("huddle:meta:{{{channel}}}"), "o"]);
    v.first().and_then(|o| o.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_a_node_killed_while_publishers_and_reconnecting_subscribers_run() {
    let Some(redis) = Redis::start() else { return };
    let t0 = Instant::now();
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(node(&redis).await);
    }
    let (live_tx, live) = watch::channel(nodes.iter().map(|n| n.addr).collect::<Vec<_>>());
    let (targets_tx, targets) = watch::channel(None::<Vec<u64>>);

    // Subscribers first, everyone from offset 0 of every channel.
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|s| {
            tokio::spawn(subscriber(
                s,
                nodes[s % NODES].addr,
                live.clone(),
                targets.clone(),
                ready_tx.clone(),
            ))
        })
        .collect();
    drop(ready_tx);
    let mut epochs: Option<Vec<String>> = None;
    for _ in 0..SUBSCRIBERS {
        let e = tokio::time::timeout(WAIT, ready_rx.recv())
            .await
            .expect("subscribers ready")
            .expect("a subscriber failed to subscribe");
        match &epochs {
            None => epochs = Some(e),
            Some(first) => assert_eq!(*first, e, "one epoch per channel on every node"),
        }
    }
    let epochs = Arc::new(epochs.expect("epochs"));

    let progress = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            tokio::spawn(publisher(
                p,
                nodes[p % NODES].addr,
                epochs.clone(),
                live.clone(),
                progress.clone(),
            ))
        })
        .collect();

    // In the middle: node 0 dies without a word, a new node takes its place.
    while progress.load(Ordering::Relaxed) < KILL_AT {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "publishers stalled at {}",
            progress.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed_at = progress.load(Ordering::Relaxed);
    let dead = nodes[0].addr;
    live_tx.send_modify(|l| l.retain(|a| *a != dead));
    nodes[0].sigkill();
    let url = redis.url();
    let fresh = tokio::task::spawn_blocking(move || {
        let mut args = vec!["--redis", url.as_str()];
        args.extend_from_slice(&NODE_ARGS);
        Server::start(&args)
    })
    .await
    .expect("start a node");
    wait_healthy(&fresh).await;
    live_tx.send_modify(|l| l.push(fresh.addr));
    nodes.push(fresh);

    let mut reports = Vec::new();
    for p in publishers {
        reports.push(p.await.expect("publisher"));
    }
    let published_in = started.elapsed();
    // Every publish is answered (retries included), so the tops are the answered ones.
    let tops: Vec<u64> = CHANNELS.iter().map(|c| top_in_redis(&redis, c)).collect();
    targets_tx.send_replace(Some(tops.clone()));
    let mut tracks = Vec::new();
    for s in subscribers {
        tracks.push(s.await.expect("subscriber"));
    }
    let elapsed = started.elapsed();

    // Publishers: every message answered once, offsets per channel 1..=top, each once.
    let mut at: Vec<Vec<u64>> = tops.iter().map(|&t| vec![0; t as usize]).collect();
    let mut answered = 0u64;
    for (p, r) in reports.iter().enumerate() {
        assert_eq!(r.answered.len() as u64, PER_PUBLISHER, "publisher {p}");
        if p.is_multiple_of(NODES) {
            assert!(r.reconnects >= 1, "publisher {p}: its node was killed");
        }
        assert_eq!(
            r.order_violations, 0,
            "publisher {p}: own offsets out of order"
        );
        assert_eq!(r.wrong_epoch, 0, "publisher {p}: answered in another epoch");
        for a in &r.answered {
            let slot = &mut at[a.channel][(a.offset - 1) as usize];
            assert_eq!(
                *slot, 0,
                "{} offset {} answered twice",
                CHANNELS[a.channel], a.offset
            );
            *slot = a.id;
            answered += 1;
        }
    }
    assert_eq!(answered, TOTAL);
    for (c, ids) in at.iter().enumerate() {
        assert!(
            ids.iter().all(|&i| i != 0),
            "{}: an offset no publish was answered with",
            CHANNELS[c]
        );
    }
    // Subscribers: everything from their start to the top, once, in order, as answered.
    let left_killed: u64 = tracks.iter().map(|t| t.left_killed).sum();
    let lost: u64 = tracks.iter().map(|t| t.lost).sum();
    for (s, t) in tracks.iter().enumerate() {
        let what = format!(
            "subscriber {s}: gaps {} ({} missing), duplicates {}, reorders {}, early {}, \
             not recovered {}, wrong epoch {}, closes {:?}",
            t.gaps,
            t.missing,
            t.duplicates,
            t.reorders,
            t.early,
            t.not_recovered,
            t.wrong_epoch,
            t.closes
        );
        assert_eq!(
            (t.gaps, t.missing, t.duplicates, t.reorders, t.early),
            (0, 0, 0, 0, 0),
            "{what}"
        );
        assert_eq!((t.not_recovered, t.wrong_epoch), (0, 0), "{what}");
        assert!(
            t.closes.keys().all(|&code| code == 4008),
            "only a slow consumer may be closed: {what}"
        );
        for c in 0..CHANNELS.len() {
            assert_eq!(t.start[c], 0, "{what}");
            assert_eq!(t.last(c), tops[c], "{what}: {}", CHANNELS[c]);
            if let Some(o) = (0..tops[c] as usize).find(|&o| t.ids[c][o] != at[c][o]) {
                panic!(
                    "subscriber {s}: {} offset {} is {:#x}, answered {:#x}",
                    CHANNELS[c],
                    o + 1,
                    t.ids[c][o],
                    at[c][o]
                );
            }
        }
        if s.is_multiple_of(NODES) {
            assert!(t.left_killed >= 1, "{what}: its node was killed");
        }
    }
    let reconnects: u64 = tracks.iter().map(|t| t.reconnects).sum();
    let recoveries: u64 = tracks.iter().map(|t| t.recoveries).sum();
    let replayed: u64 = tracks.iter().map(|t| t.replayed).sum();
    let retried: u64 = reports.iter().map(|r| r.retried).sum();
    let refused: u64 = reports.iter().map(|r| r.refused).sum();
    let slow: u64 = tracks.iter().filter_map(|t| t.closes.get(&4008)).sum();
    assert!(
        reconnects >= SUBSCRIBERS as u64 * 2,
        "only {reconnects} reconnects"
    );
    println!(
        "cluster soak: {answered} publications ({PUBLISHERS} WebSocket publishers, {} channels) \
         to {SUBSCRIBERS} subscribers in {:.1}s (published in {:.1}s, total with setup {:.1}s); \
         node killed at {killed_at} answered; {reconnects} subscriber reconnects \
         ({left_killed} off the killed node, {lost} lost connections, {slow} slow consumers), \
         {recoveries} recoveries replaying {replayed} messages; {retried} publishes retried \
         ({refused} refused)",
        CHANNELS.len(),
        elapsed.as_secs_f64(),
        published_in.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
    );
}
