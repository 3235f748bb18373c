//! A shard: one OS thread, one current-thread event loop, and the connections it accepted.
//!
//! Invariants:
//! - Everything in [`Shard`] is touched only by its own thread (it sits in an `Rc<RefCell>`;
//!   no borrow is held across an `.await`). Slab keys and `ChannelId`s are valid only here.
//! - Other shards reach it only through its inbox ([`mesh`], which states the ordering rule);
//!   the per-message path takes no lock shared with another shard.
//! - The shard owns the state of the channels `mesh::owner_of` gives it, in its channel engine;
//!   it keeps a *view* (last offset, epoch) of every other channel it has local subscribers of,
//!   learnt from the owner and kept current by the owner's in-order messages.
//! - Every operation that queues frames ends with [`Shard::flush_dirty`]: each touched
//!   connection gets one vectored write of everything it has pending. A connection whose socket
//!   refused bytes is `blocked` and skipped until the driver sees it writable again.
//! - Deadlines are timer wheels: a frame from the client only stamps the connection's
//!   `ConnState`, and the timer re-arms itself from `poll_timeout` when it fires (never a scan
//!   of all connections).

mod channels;
mod cluster;
mod conn;
pub mod driver;
pub mod listener;
pub mod mesh;
pub mod publish;
mod recovery;
pub mod runtime;
mod session;
mod shared;
pub mod stats;
#[cfg(test)]
mod tests;
mod tokens;
mod users;

pub use conn::{Conn, ConnIo};
pub use shared::{key_matches, Shared, Shutdown};
pub use tokens::unix_now;
pub use users::UserIndex;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use slab::Slab;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::codec;
use crate::conn::outbox::Outbox;
use crate::conn::state::{Admit, ConnState, FrameAction, Liveness, MessageRate, TimeoutAction};
use crate::conn::{Phase, Subscription};
use crate::engine::{ChannelEngine, MemoryEngine};
use crate::error::CloseReason;
use crate::protocol::OutMessage;
use crate::registry::Registry;
use crate::timer::TimerWheel;
use mesh::{owner_of, ChannelMessage, DirectMessage, SequenceJob, ShardMsg, ShardSnapshot};

/// Local subscribers from which a shard fans out its own copy of a frame (see `fan_out`).
const LOCAL_COPY_FROM: usize = 32;

/// Size of the shard-wide read buffer every connection reads through.
const SCRATCH: usize = 64 * 1024;

/// Socket reads per readable wake before the connection yields to the rest of the shard.
const READS_PER_WAKE: usize = 4;

/// Kernel send buffer of an upgraded socket. Small, so that what a slow consumer has not read
/// is counted in its outbox (where `--send-queue-bytes` sees it and 4008 can overtake it), not
/// hidden in an autotuned multi-MiB kernel buffer.
const SOCKET_SEND_BUFFER: usize = 32 * 1024;

/// What a timer carries: the slab key and the connection id (a key may be reused).
#[derive(Debug, Clone, Copy)]
struct TimerRef {
    key: usize,
    conn_id: u64,
}

/// This shard's knowledge of a channel it has local subscribers of.
struct View {
    /// Offset of the last message of the channel this shard has seen (or the ack's offset).
    tail: u64,
    epoch: Arc<str>,
    /// False between `Interest` and the owner's `InterestAck`: messages are ignored, and
    /// requests about the channel wait (parked on their connection, listed in `waiters`).
    acked: bool,
    waiters: Vec<(usize, u64)>,
    /// `Recover`s sent for this channel and not answered yet: the view stays while any is out,
    /// so the answer finds the interest it registered.
    recovering: u32,
    /// Local connections whose subscription asked for `join` / `leave` events.
    join_leave: Vec<usize>,
    /// Cluster mode: the owner could not follow the channel in time; until its ack, new
    /// requests about it are answered `unavailable` at once instead of waiting.
    refused: bool,
}

use channels::Parked;

impl View {
    /// A view whose owner has not answered yet.
    fn pending() -> View {
        View {
            tail: 0,
            epoch: Arc::from(""),
            acked: false,
            waiters: Vec::new(),
            recovering: 0,
            join_leave: Vec::new(),
            refused: false,
        }
    }
}

/// Shard-local state. See the module docs for the invariants.
pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    conns: Slab<Conn>,
    registry: Registry,
    wheel: TimerWheel<TimerRef>,
    liveness: Liveness,
    /// `--message-rate` (None: off).
    message_rate: Option<MessageRate>,
    /// State of the channels this shard owns.
    engine: MemoryEngine,
    /// Channels with local subscribers (or a pending interest), by name.
    views: HashMap<Arc<str>, View>,
    /// Local connections of each user, for `/api/send`.
    users: HashMap<Box<str>, Vec<usize>>,
    /// Owned channels: the shards with subscriptions that want `join`/`leave` events.
    listeners: HashMap<Arc<str>, crate::engine::ShardSet>,
    /// One compiled copy of each distinct pair of token claims in use on this shard.
    grants: std::collections::HashSet<Arc<crate::auth::Grants>>,
    dirty: Vec<usize>,
    /// Connections found over `--send-queue-bytes` during a fan-out, closed after it.
    slow: Vec<usize>,
    /// Other shards a message being sequenced goes to (reused buffer).
    targets: Vec<usize>,
    /// Cluster mode: the owned channels followed in Redis, and topics to let go, by deadline.
    follows: HashMap<Arc<str>, cluster::Follow>,
    releases: std::collections::VecDeque<(Instant, Arc<str>)>,
    refills: std::collections::VecDeque<(Instant, Arc<str>)>,
    /// Channels whose waiting interests are refused if still unanswered at the deadline.
    ack_checks: std::collections::VecDeque<(Instant, Arc<str>)>,
    /// Cluster mode: recent deliveries no publish answer of this node claimed yet.
    unclaimed: std::collections::VecDeque<cluster::Unclaimed>,
    /// Cluster mode: when this shard next renews its presence entries in Redis.
    presence_renew_at: Instant,
    scratch: Vec<u8>,
    next_seq: u64,
    draining: bool,
    /// Signalled when the last connection is removed while draining.
    pub drained: Rc<Notify>,
    /// Publish times of messages fanned out in the current batch (latency histogram).
    pending_latency: Vec<Instant>,
    expired: Vec<TimerRef>,
    this: Weak<RefCell<Shard>>,
}

/// What the driver should do after a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Keep reading when readable.
    Continue,
    /// The read budget of this wake is spent: yield to the shard's other tasks, then go on.
    Yield,
    /// Stop reading until woken: the connection has `--max-inflight-publishes` unanswered.
    Paused,
    /// Stop reading: the peer closed its side, errored, or broke the protocol.
    Stop,
}

/// What the driver should wait for.
#[derive(Debug, Clone, Copy)]
pub struct Wants {
    pub want_write: bool,
    /// False while the connection waits for publish replies or an owner's `InterestAck`.
    pub may_read: bool,
    pub phase: Phase,
}

/// Parameters of a new WebSocket connection, decided at the upgrade.
pub struct ConnParams {
    /// `/ws/echo`: echo every message, send nothing of the pub/sub protocol.
    pub echo: bool,
    pub channels: Vec<String>,
    /// The token's `sub`, or (tokens off) the `user_id` query parameter.
    pub user_id: Option<String>,
    pub api_key: bool,
    pub token: Option<TokenGrant>,
}

/// What a verified token gives a connection (PROTOCOL.md §9).
pub struct TokenGrant {
    /// Until the connection is closed with 4401 unless refreshed.
    pub valid_for: Duration,
    /// Whole seconds until `exp`, announced in `connection_ack`.
    pub expires_in: u64,
    pub grants: crate::auth::Grants,
}

impl TokenGrant {
    /// A verified token's user and what it grants the connection.
    pub fn from_identity(id: crate::auth::Identity) -> (String, TokenGrant) {
        let grant = TokenGrant {
            valid_for: id.valid_for,
            expires_in: id.expires_in,
            grants: id.grants,
        };
        (id.user, grant)
    }
}

impl Shard {
    /// A shard with no connections, wrapped for sharing among this thread's tasks.
    pub fn new_cell(id: usize, shared: Arc<Shared>) -> Rc<RefCell<Shard>> {
        let now = Instant::now();
        let tick = wheel_tick(shared.config.heartbeat_timeout);
        let span = shared
            .config
            .heartbeat_timeout
            .max(shared.config.heartbeat_interval);
        let slots = (span.as_nanos() / tick.as_nanos().max(1)).min(1 << 20) as usize + 2;
        let engine = MemoryEngine::new(shared.config.history_ttl, now)
            .with_history(shared.config.history_size);
        let liveness = Liveness {
            interval: shared.config.heartbeat_interval,
            timeout: shared.config.heartbeat_timeout,
        };
        let message_rate = shared.config.message_rate.0.map(|r| MessageRate {
            per_second: f64::from(r.count) / r.per.as_secs_f64(),
            burst: f64::from(shared.config.message_burst),
            origin: now,
        });
        Rc::new_cyclic(|this| {
            RefCell::new(Shard {
                id,
                shared,
                conns: Slab::new(),
                registry: Registry::new(),
                wheel: TimerWheel::new(tick, slots, now),
                liveness,
                message_rate,
                engine,
                views: HashMap::new(),
                users: HashMap::new(),
                grants: Default::default(),
                listeners: HashMap::new(),
                dirty: Vec::new(),
                slow: Vec::new(),
                targets: Vec::new(),
                follows: HashMap::new(),
                releases: std::collections::VecDeque::new(),
                refills: std::collections::VecDeque::new(),
                ack_checks: std::collections::VecDeque::new(),
                presence_renew_at: Instant::now(),
                unclaimed: std::collections::VecDeque::new(),
                scratch: vec![0; SCRATCH],
                next_seq: 0,
                draining: false,
                drained: Rc::new(Notify::new()),
                pending_latency: Vec::new(),
                expired: Vec::new(),
                this: this.clone(),
            })
        })
    }

    fn metrics(&self) -> &crate::metrics::ShardMetrics {
        self.shared.metrics.shard(self.id)
    }

    /// How often `on_tick` must run: the finer of the heartbeat and channel-eviction wheels.
    pub fn tick(&self) -> Duration {
        self.wheel.tick().min(self.engine.tick())
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Registers an upgraded socket: slab entry, auto-subscriptions, heartbeat timer, and
    /// `connection_ack` as the first frame. Returns the key and the socket for the driver.
    pub fn register(&mut self, stream: TcpStream, params: ConnParams) -> (usize, Rc<ConnIo>) {
        let now = Instant::now();
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SOCKET_SEND_BUFFER);
        let io = Rc::new(ConnIo {
            stream,
            wake: Notify::new(),
        });
        self.next_seq += 1;
        let conn_id = ((self.id as u64) << 48) | self.next_seq;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        entry.insert(Conn {
            id: conn_id,
            io: io.clone(),
            user_id: params.user_id.map(String::into_boxed_str),
            subs: Vec::new(),
            has_filters: false,
            api_key: params.api_key,
            grants: None,
            state: ConnState::new(now, params.echo),
            timer: None,
            out: Outbox::default(),
            dirty: false,
            blocked: false,
            inflight: 0,
            publish_paused: false,
            parked: None,
        });
        let expires_in = params.token.as_ref().map(|t| t.expires_in);
        if let Some(t) = params.token {
            self.grant(key, t, now);
        }
        let cfg = self.liveness;
        if let Some(c) = self.conns.get_mut(key) {
            c.timer = c
                .state
                .poll_timeout(&cfg)
                .map(|at| self.wheel.arm(at, TimerRef { key, conn_id }));
            if let Some(u) = &c.user_id {
                if self.shared.users.add(u) {
                    cluster::follow_user(&self.shared, u, true);
                }
                self.users.entry(u.clone()).or_default().push(key);
            }
        }
        let channels: Vec<Arc<str>> = params
            .channels
            .iter()
            .map(|c| Arc::from(c.as_str()))
            .collect();
        for ch in &channels {
            self.add_subscription(key, ch, None, false);
        }
        if !params.echo {
            let ack = self.connection_ack(key, &params.channels, expires_in);
            self.queue(key, ack);
        }
        for ch in &channels {
            self.presence_event(ch, key, true);
        }
        self.metrics().connections.inc();
        if self.draining {
            // Upgraded after shutdown began: close it like every other connection.
            self.close(key, CloseReason::ShuttingDown);
        }
        (key, io)
    }

    /// Drops the slab record; called only by the connection's driver when it ends.
    pub fn remove(&mut self, key: usize) {
        self.detach(key);
        if self.conns.try_remove(key).is_some() {
            self.metrics().connections.dec();
        }
        if self.draining && self.conns.is_empty() {
            self.drained.notify_one();
        }
    }

    /// Takes a connection out of every bitset, the user index and the wheel. Idempotent.
    fn detach(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let subs = std::mem::take(&mut conn.subs);
        conn.has_filters = false;
        for s in subs {
            self.leave_channel(s.channel, key);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let timer = conn.timer.take();
        let user = conn.user_id.take();
        let grants = conn.grants.take();
        self.release_grants(grants);
        if let Some(t) = timer {
            self.wheel.cancel(t);
        }
        if let Some(u) = user {
            if self.shared.users.remove(&u) {
                cluster::follow_user(&self.shared, &u, false);
            }
            if let Some(keys) = self.users.get_mut(&u) {
                keys.retain(|&k| k != key);
                if keys.is_empty() {
                    self.users.remove(&u);
                }
            }
        }
    }

    /// Takes `key` out of channel `cid`'s members; the last local member leaving ends this
    /// shard's interest in the channel.
    fn leave_channel(&mut self, cid: crate::registry::ChannelId, key: usize) {
        let name = self.registry.name(cid).map(Arc::<str>::from);
        self.registry.unsubscribe(cid, key);
        if let Some(name) = name {
            if let Some(v) = self.views.get_mut(&name) {
                let before = v.join_leave.is_empty();
                v.join_leave.retain(|&k| k != key);
                if !before && v.join_leave.is_empty() {
                    self.listen(&name, false);
                }
            }
            self.presence_event(&name, key, false);
            if self.registry.lookup(&name).is_none() {
                self.release_view(&name);
            }
        }
    }

    /// Queues `frame` to `key` and marks it for the end-of-batch flush.
    fn queue(&mut self, key: usize, frame: Bytes) {
        let limit = self.shared.config.send_queue_bytes;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if enqueue(c, key, frame, limit, &mut self.dirty) {
            self.slow_consumer(key);
        }
    }

    /// Closes `key` with 4008: the rest of its queue is dropped, the close frame goes next.
    fn slow_consumer(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        if !conn.state.is_open() {
            return;
        }
        tracing::info!(
            shard = self.id,
            conn = conn.public_id(self.shared.node_id()),
            queued = conn.out.queued_bytes(),
            "slow consumer: send queue over --send-queue-bytes"
        );
        self.metrics().slow_consumer_disconnects.inc();
        self.close(key, CloseReason::SlowConsumer);
    }

    /// Starts the close handshake with `reason`. Idempotent; only an `Open` connection closes.
    pub fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        if !conn.state.is_open() {
            return;
        }
        tracing::debug!(
            shard = self.id,
            conn = conn.public_id(self.shared.node_id()),
            code = reason.code(),
            "closing: {}",
            reason.text()
        );
        self.detach(key);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(frame) = conn.state.close(reason, Instant::now()) else {
            return;
        };
        if reason == CloseReason::SlowConsumer {
            conn.out.truncate_unstarted();
        }
        conn.io.wake.notify_one();
        self.queue(key, frame);
    }

    /// Reads what the socket has (through the shard's scratch buffer), decodes it and handles
    /// every complete event. Ends with a flush.
    pub fn on_readable(&mut self, key: usize, decoder: &mut codec::Decoder) -> ReadOutcome {
        let mut scratch = std::mem::take(&mut self.scratch);
        let outcome = self.read_into(key, decoder, &mut scratch);
        self.scratch = scratch;
        self.flush_dirty();
        outcome
    }

    fn read_into(
        &mut self,
        key: usize,
        decoder: &mut codec::Decoder,
        scratch: &mut [u8],
    ) -> ReadOutcome {
        // Bounded so one busy client can't starve the rest of the shard.
        for _ in 0..READS_PER_WAKE {
            let Some(conn) = self.conns.get_mut(key) else {
                return ReadOutcome::Stop;
            };
            let n = match conn.io.stream.try_read(scratch) {
                Ok(0) => return ReadOutcome::Stop,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return ReadOutcome::Continue
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return ReadOutcome::Stop,
            };
            match self.on_bytes(key, decoder, &scratch[..n]) {
                ReadOutcome::Continue | ReadOutcome::Yield => {}
                other => return other,
            }
        }
        ReadOutcome::Yield
    }

    /// Feeds bytes from the client to its decoder and handles every complete event, until the
    /// connection may not take more (in-flight publishes). Used for socket reads, for bytes
    /// hyper had already buffered past the upgrade request, and (with no bytes) to resume a
    /// paused connection.
    pub fn on_bytes(
        &mut self,
        key: usize,
        decoder: &mut codec::Decoder,
        bytes: &[u8],
    ) -> ReadOutcome {
        let max_inflight = self.shared.config.max_inflight_publishes;
        let Some(conn) = self.conns.get_mut(key) else {
            return ReadOutcome::Stop;
        };
        if !bytes.is_empty() {
            conn.state.on_activity(Instant::now());
            decoder.feed(bytes);
        }
        loop {
            match self.conns.get_mut(key) {
                None => return ReadOutcome::Stop,
                Some(c) if c.state.is_open() && c.inflight as usize >= max_inflight => {
                    c.publish_paused = true;
                    return ReadOutcome::Paused;
                }
                Some(c) if c.state.is_open() && (c.publish_paused || c.parked.is_some()) => {
                    return ReadOutcome::Paused
                }
                Some(_) => {}
            }
            match decoder.next_event() {
                Ok(Some(ev)) => {
                    if self.on_event(key, ev) == ReadOutcome::Stop {
                        return ReadOutcome::Stop;
                    }
                }
                Ok(None) => return ReadOutcome::Continue,
                Err(e) => {
                    tracing::info!(shard = self.id, "closing connection on bad frame: {e}");
                    self.close(key, CloseReason::from(&e));
                    return ReadOutcome::Stop;
                }
            }
        }
    }

    /// Handles one decoded frame from the client.
    fn on_event(&mut self, key: usize, ev: codec::Event) -> ReadOutcome {
        let Some(conn) = self.conns.get_mut(key) else {
            return ReadOutcome::Stop;
        };
        let action = conn.state.handle_frame(ev);
        // Connections opened with the API key are the operator's own publishers (they could
        // publish over HTTP at any rate): the message rate guards against everyone else.
        if matches!(action, FrameAction::Text(_) | FrameAction::Binary) && !conn.api_key {
            if let Some(rate) = &self.message_rate {
                match conn.state.admit_message(Instant::now(), rate) {
                    Admit::Accept => {}
                    Admit::Refuse => {
                        self.reply_error(
                            key,
                            crate::protocol::ErrorCode::RateLimited,
                            "over --message-rate: message not processed".into(),
                            None,
                        );
                        return ReadOutcome::Continue;
                    }
                    Admit::Close => {
                        tracing::info!(
                            shard = self.id,
                            "closing connection: message rate exceeded"
                        );
                        self.close(key, CloseReason::MessageRate);
                        return ReadOutcome::Stop;
                    }
                }
            }
        }
        match action {
            FrameAction::None => ReadOutcome::Continue,
            FrameAction::Send(frame) => {
                self.queue(key, frame);
                ReadOutcome::Continue
            }
            FrameAction::Text(text) => {
                self.on_text(key, text);
                ReadOutcome::Continue
            }
            FrameAction::Binary => {
                self.reply_error(
                    key,
                    crate::protocol::ErrorCode::InvalidMessage,
                    "binary messages are not supported; send JSON text".into(),
                    None,
                );
                ReadOutcome::Continue
            }
            FrameAction::Close(reason) => {
                self.close(key, reason);
                ReadOutcome::Stop
            }
            FrameAction::PeerClosed => {
                if let Some(c) = self.conns.get(key) {
                    c.io.wake.notify_one();
                }
                ReadOutcome::Stop
            }
        }
    }

    /// Writes pending frames of every connection touched since the last flush: one vectored
    /// write each; what the socket does not take stays queued, and the connection is `blocked`
    /// until the driver sees the socket writable.
    pub fn flush_dirty(&mut self) {
        // Observed just before the writes, so a client that has read a message can rely on
        // /metrics already counting it.
        if !self.pending_latency.is_empty() {
            let now = Instant::now();
            let h = &self.shared.metrics.shard(self.id).publish_to_write;
            for t in self.pending_latency.drain(..) {
                h.observe(now.saturating_duration_since(t).as_secs_f64());
            }
        }
        let limit = self.shared.config.send_queue_bytes;
        while let Some(key) = self.dirty.pop() {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.dirty = false;
            if conn.blocked {
                continue;
            }
            let drained = flush_conn(conn);
            let closing = !conn.state.is_open();
            match drained {
                Ok(true) => {
                    if closing {
                        conn.io.wake.notify_one();
                    }
                }
                Ok(false) => {
                    conn.blocked = true;
                    conn.io.wake.notify_one();
                    if !closing && conn.out.queued_bytes() > limit {
                        self.slow_consumer(key);
                    }
                }
                Err(_) => {
                    // The peer is gone; the driver sees the error on its next read and ends.
                    conn.out = Outbox::default();
                    conn.io.wake.notify_one();
                }
            }
        }
    }

    /// Called by the driver when the socket became writable.
    pub fn on_writable(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            c.blocked = false;
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(key);
            }
        }
        self.flush_dirty();
    }

    /// What the driver should wait for.
    pub fn wants(&self, key: usize) -> Option<Wants> {
        self.conns.get(key).map(|c| Wants {
            want_write: !c.out.is_empty(),
            may_read: !c.state.is_open() || (!c.publish_paused && c.parked.is_none()),
            phase: c.state.phase(),
        })
    }

    /// Advances the wheels: pings connections silent for `heartbeat-interval`, closes those
    /// silent for `heartbeat-timeout` with 4001, re-arms the rest from their `last_seen`; frees
    /// owned channels idle for `--history-ttl`.
    pub fn on_tick(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
        self.release_follows(now);
        self.renew_presence(now);
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.advance(now, &mut expired);
        let cfg = self.liveness;
        for t in expired.drain(..) {
            let Some(conn) = self.conns.get_mut(t.key) else {
                continue;
            };
            if conn.id != t.conn_id {
                continue;
            }
            conn.timer = None;
            conn.out.release_if_idle();
            match conn.state.handle_timeout(now, &cfg) {
                TimeoutAction::Expire => {
                    self.metrics().heartbeat_expiries.inc();
                    self.close(t.key, CloseReason::HeartbeatTimeout);
                    continue;
                }
                TimeoutAction::TokenExpired => {
                    self.metrics().token_expiries.inc();
                    self.close(t.key, CloseReason::TokenExpired);
                    continue;
                }
                TimeoutAction::Ping(frame) => self.queue(t.key, frame),
                TimeoutAction::None => {}
            }
            if let Some(conn) = self.conns.get_mut(t.key) {
                if let Some(next) = conn.state.poll_timeout(&cfg) {
                    conn.timer = Some(self.wheel.arm(next, t));
                }
            }
        }
        self.expired = expired;
        self.metrics().channel_states.set(self.engine.len() as i64);
        let (stored, bytes) = self.engine.stored();
        self.metrics().history_messages.set(stored as i64);
        self.metrics().history_bytes.set(bytes as i64);
        self.flush_dirty();
    }

    /// Whether `channel` lives in Redis: in cluster mode, every channel but the server's own
    /// (`huddle:stats` is per node, and must not depend on Redis being up).
    fn clustered(&self, channel: &str) -> bool {
        self.shared.cluster.is_some() && !crate::protocol::is_server_channel(channel)
    }

    /// Handles one inbox message.
    pub fn on_message(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Sequence(job) => self.sequence(job),
            ShardMsg::Deliver(m) => {
                let n = self.fan_out(&m);
                m.results.report(m.index, n);
            }
            ShardMsg::Interest { channel, shard, on } if self.clustered(&channel) => {
                self.cluster_interest(channel, shard, on)
            }
            ShardMsg::Interest { channel, shard, on } => {
                let pos = self
                    .engine
                    .set_interest(&channel, shard, on, Instant::now());
                if on {
                    let ack = ShardMsg::InterestAck {
                        channel,
                        offset: pos.offset,
                        epoch: pos.epoch,
                    };
                    let _ = self.shared.inboxes[shard].send(ack);
                }
            }
            ShardMsg::InterestAck {
                channel,
                offset,
                epoch,
            } => self.on_interest_ack(&channel, offset, epoch),
            ShardMsg::Direct(d) => {
                // Every shard sees it; one of them counts it.
                if self.id == 0 {
                    self.metrics().messages_published.inc();
                }
                let n = self.deliver_direct(&d);
                d.recipients.report(n);
            }
            ShardMsg::Snapshot(g) => g.report(self.snapshot()),
            ShardMsg::Recover {
                channel,
                shard,
                key,
                conn_id,
                since,
            } => {
                if self.clustered(&channel) {
                    let req = cluster::RecoverReq {
                        shard,
                        key,
                        conn_id,
                        since,
                    };
                    self.cluster_recover(channel, req)
                } else {
                    self.on_recover(channel, shard, key, conn_id, since)
                }
            }
            ShardMsg::Recovered {
                channel,
                key,
                conn_id,
                answer,
            } => self.on_recovered(&channel, key, conn_id, answer),
            ShardMsg::JoinLeave { channel, join, who } => self.on_join_leave(channel, join, who),
            ShardMsg::Listen { channel, shard, on } => self.on_listen(channel, shard, on),
            ShardMsg::JoinLeaveFrame { channel, frame } => {
                self.on_join_leave_frame(&channel, frame)
            }
            ShardMsg::Push { channel, frame } => self.on_push(&channel, frame),
            ShardMsg::History {
                channel,
                since,
                limit,
                reply,
            } => {
                let _ = reply.send(self.history_page(&channel, since, limit));
            }
            ShardMsg::Presence { channel, gather } => gather.report(self.present(&channel)),
            ShardMsg::Remote { channel, remote } => self.on_remote(channel, remote),
            ShardMsg::Subscribed { channel, position } => self.on_subscribed(channel, position),
            ShardMsg::Published { job, result } => self.on_published(job, result),
            ShardMsg::Ranged {
                channel,
                purpose,
                result,
            } => self.on_ranged(channel, purpose, result),
            ShardMsg::Resumed { channel } => self.on_resumed(channel),
            ShardMsg::InterestRefused { channel } => self.on_interest_refused(&channel),
            ShardMsg::RemoteJoinLeave { channel, frame } => self.hand_join_leave(&channel, frame),
            ShardMsg::Lost {
                channel,
                offset,
                epoch,
            } => self.on_lost(&channel, offset, epoch),
        }
    }

    /// Owner side of a publish: next offset, encode once, hand to the interested shards in order.
    fn sequence(&mut self, job: SequenceJob) {
        if let Some(cluster) = self.shared.cluster.clone() {
            return self.cluster_sequence(&cluster, job);
        }
        let now = Instant::now();
        let mut targets = std::mem::take(&mut self.targets);
        let (pos, interest) = self.engine.append(&job.channel, now);
        targets.clear();
        targets.extend(interest.iter());
        let local = targets.contains(&self.id);
        targets.retain(|&s| s != self.id);
        let timestamp = crate::protocol::timestamp_now();
        let frame = encode(&OutMessage {
            event_type: &job.body.event_type,
            channel: Some(crate::protocol::wire_name(&job.channel)),
            offset: Some(pos.offset),
            message_id: Some(&job.body.message_id),
            reply_to: None,
            user_id: None,
            timestamp: Some(&timestamp),
            data: &job.body.data,
        });
        self.engine
            .record(&job.channel, pos.offset, frame.clone(), now);
        job.results
            .sequenced(job.index, pos.offset, &pos.epoch, targets.len());
        self.metrics().messages_published.inc();
        let msg = Arc::new(ChannelMessage {
            channel: job.channel,
            offset: pos.offset,
            frame,
            data: job.body.data.clone(),
            published_at: now,
            results: job.results,
            index: job.index,
            _permit: Some(job.permit),
        });
        // Local subscribers need no queue round trip. Order holds: only this shard produces
        // this channel's messages, so none of them can be waiting in our own inbox.
        self.hand_out(msg, targets, local);
    }

    /// Sends a sequenced message to the other interested shards (`targets`, this shard's
    /// reused buffer) and fans it out here if `local`; each reports its count.
    fn hand_out(&mut self, msg: Arc<ChannelMessage>, targets: Vec<usize>, local: bool) {
        for &shard in &targets {
            if self.shared.inboxes[shard]
                .send(ShardMsg::Deliver(msg.clone()))
                .is_err()
            {
                // That shard's thread is gone (shutdown): it delivers nothing.
                msg.results.report(msg.index, 0);
            }
        }
        self.targets = targets;
        let n = if local { self.fan_out(&msg) } else { 0 };
        msg.results.report(msg.index, n);
    }

    /// Queues a channel message to every local subscriber whose filter matches. Returns how
    /// many it was queued to.
    fn fan_out(&mut self, m: &ChannelMessage) -> u64 {
        let Some(view) = self.views.get_mut(&*m.channel) else {
            return 0;
        };
        if !view.acked || m.offset <= view.tail {
            // Sent before this shard's current interest began (see the mesh ordering rule).
            return 0;
        }
        view.tail = m.offset;
        let Some(cid) = self.registry.lookup(&m.channel) else {
            return 0;
        };
        let Some(members) = self.registry.members(cid) else {
            return 0;
        };
        let data = m.data.as_object();
        // Every shard cloning the owner's frame would bounce one refcount cache line between
        // cores on every delivery; a wide fan-out gets this shard's own copy (still encoded once).
        let frame = if self.shared.inboxes.len() > 1 && members.len() >= LOCAL_COPY_FROM {
            Bytes::copy_from_slice(&m.frame)
        } else {
            m.frame.clone()
        };
        let limit = self.shared.config.send_queue_bytes;
        let mut n = 0;
        for key in members.iter_ones() {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.has_filters {
                let filter = conn.subscription(cid).and_then(|s| s.filter.as_deref());
                if let (Some(f), Some(d)) = (filter, data) {
                    if !f.matches(d) {
                        continue;
                    }
                }
            }
            if enqueue(conn, key, frame.clone(), limit, &mut self.dirty) {
                self.slow.push(key);
            }
            n += 1;
        }
        if n > 0 {
            self.metrics().messages_delivered.inc_by(n);
            self.pending_latency.push(m.published_at);
        }
        while let Some(key) = self.slow.pop() {
            self.slow_consumer(key);
        }
        n
    }

    /// Queues a broadcast to every open connection, or a user message to that user's.
    fn deliver_direct(&mut self, d: &DirectMessage) -> u64 {
        let keys: Vec<usize> = match &d.user_id {
            Some(u) => self.users.get(u.as_str()).cloned().unwrap_or_default(),
            None => self
                .conns
                .iter()
                .filter(|(_, c)| c.state.is_open() && !c.state.is_echo())
                .map(|(k, _)| k)
                .collect(),
        };
        for &k in &keys {
            self.queue(k, d.frame.clone());
        }
        let n = keys.len() as u64;
        if n > 0 {
            self.metrics().messages_delivered.inc_by(n);
            self.pending_latency.push(d.published_at);
        }
        n
    }

    fn snapshot(&self) -> ShardSnapshot {
        ShardSnapshot {
            shard: self.id,
            connections: self.conns.len() as u64,
            channels: self
                .registry
                .iter_shared()
                .map(|(name, n)| (name, n as u64))
                .collect(),
        }
    }

    /// Closes every connection with 1001; the runtime exits when they are gone.
    pub fn begin_shutdown(&mut self) {
        self.draining = true;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.close(k, CloseReason::ShuttingDown);
        }
        self.flush_dirty();
        if self.conns.is_empty() {
            self.drained.notify_one();
        }
    }

    /// Subscribes `key` to `channel` (idempotent; a repeat replaces the filter and the
    /// `join_leave` choice) and makes sure this shard follows the channel. True if the connection
    /// was not a member: the caller sends the `join` once its reply is queued. Replies are the caller's: a request only gets here once
    /// the view is current (`channel_request` parks it until then).
    fn add_subscription(
        &mut self,
        key: usize,
        channel: &Arc<str>,
        filter: Option<crate::protocol::Filter>,
        join_leave: bool,
    ) -> bool {
        let (cid, _) = self.registry.subscribe(channel, key);
        let mut joined = false;
        if let Some(conn) = self.conns.get_mut(key) {
            let filter = filter.map(Box::new);
            match conn.subs.iter_mut().find(|s| s.channel == cid) {
                Some(s) => {
                    s.filter = filter;
                    s.join_leave = join_leave;
                }
                None => {
                    joined = true;
                    conn.subs.push(Subscription {
                        channel: cid,
                        join_leave,
                        filter,
                    })
                }
            }
            conn.has_filters = conn.subs.iter().any(|s| s.filter.is_some());
        }
        self.ensure_view(channel);
        if let Some(v) = self.views.get_mut(channel) {
            let (listed, before) = (v.join_leave.contains(&key), v.join_leave.is_empty());
            if join_leave && !listed {
                v.join_leave.push(key);
            } else if !join_leave && listed {
                v.join_leave.retain(|&k| k != key);
            }
            if before != v.join_leave.is_empty() {
                self.listen(channel, before);
            }
        }
        joined
    }

    /// Makes sure this shard follows `channel`: on the owner at once, elsewhere by sending
    /// `Interest` to the owner. True if the view is current.
    fn ensure_view(&mut self, channel: &Arc<str>) -> bool {
        if let Some(v) = self.views.get(channel) {
            return v.acked;
        }
        let owner = owner_of(channel, self.shared.inboxes.len());
        // Cluster mode: the owner's own interest goes through its inbox like any shard's.
        if owner == self.id && !self.clustered(channel) {
            let pos = self
                .engine
                .set_interest(channel, self.id, true, Instant::now());
            self.views.insert(
                channel.clone(),
                View {
                    tail: pos.offset,
                    epoch: pos.epoch,
                    acked: true,
                    ..View::pending()
                },
            );
            return true;
        }
        let _ = self.shared.inboxes[owner].send(ShardMsg::Interest {
            channel: channel.clone(),
            shard: self.id,
            on: true,
        });
        self.views.insert(channel.clone(), View::pending());
        false
    }

    /// The last local subscriber of `channel` left: stop following it (once the owner's ack,
    /// if still awaited, has arrived).
    fn release_view(&mut self, channel: &Arc<str>) {
        match self.views.get(channel) {
            Some(v) if v.acked && v.recovering == 0 => {}
            _ => return,
        }
        self.views.remove(channel);
        let owner = owner_of(channel, self.shared.inboxes.len());
        if owner == self.id && !self.clustered(channel) {
            self.engine
                .set_interest(channel, self.id, false, Instant::now());
        } else {
            let _ = self.shared.inboxes[owner].send(ShardMsg::Interest {
                channel: channel.clone(),
                shard: self.id,
                on: false,
            });
        }
    }

    /// The owner's answer to this shard's `Interest`: the view is current from here on, and
    /// requests parked on it go on.
    fn on_interest_ack(&mut self, channel: &Arc<str>, offset: u64, epoch: Arc<str>) {
        let Some(view) = self.views.get_mut(channel) else {
            return;
        };
        view.acked = true;
        view.refused = false;
        view.tail = offset;
        view.epoch = epoch;
        let waiters = std::mem::take(&mut view.waiters);
        for (key, conn_id) in waiters {
            self.advance(key, conn_id);
        }
        if self.registry.lookup(channel).is_none()
            && self
                .views
                .get(channel)
                .is_some_and(|v| v.waiters.is_empty())
        {
            self.release_view(channel);
        }
        self.flush_dirty();
    }

    /// Last offset and epoch of `channel` as this shard knows it, for replies.
    fn position_of(&self, channel: &str) -> Option<(u64, Arc<str>)> {
        match self.views.get(channel) {
            Some(v) if v.acked => Some((v.tail, v.epoch.clone())),
            _ => self.engine.position(channel).map(|p| (p.offset, p.epoch)),
        }
    }
}

/// Pushes `frame` onto `conn`'s outbox. A connection that is not blocked joins the end-of-batch
/// flush; a blocked one is not touched again until writable. True when a blocked open connection
/// went over `limit`: a slow consumer, for the caller to close.
fn enqueue(
    conn: &mut Conn,
    key: usize,
    frame: Bytes,
    limit: usize,
    dirty: &mut Vec<usize>,
) -> bool {
    conn.out.push(frame);
    if conn.blocked {
        return conn.state.is_open() && conn.out.queued_bytes() > limit;
    }
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(key);
    }
    false
}

/// One vectored write loop of a connection's outbox.
///
/// Writes go straight to `sendmsg` on the socket: tokio's `try_write_vectored` adds a readiness
/// check on the socket's `ScheduledIo` (a cache miss per connection per batch: 5% of server CPU
/// at 10k subscribers, by `perf`) and the VFS `writev` entry. Only a `WouldBlock` goes through
/// tokio, so its readiness is cleared and the driver's `poll_write_ready` waits instead of
/// spinning.
fn flush_conn(conn: &mut Conn) -> std::io::Result<bool> {
    let stream = &conn.io.stream;
    let socket = socket2::SockRef::from(stream);
    conn.out.flush_with(|iov| match socket.send_vectored(iov) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => stream.try_write_vectored(iov),
        other => other,
    })
}

/// Serializes a server message once, straight into its frame.
pub fn encode(msg: &OutMessage<'_>) -> Bytes {
    codec::text_frame_with(256, |buf| {
        // Writing our own types to a Vec cannot fail.
        let _ = serde_json::to_writer(buf, msg);
    })
}

/// Wheel slot width: fine enough that expiry lands within timeout + 1 s (and much closer for
/// sub-second test timeouts), coarse enough to cost nothing.
fn wheel_tick(timeout: Duration) -> Duration {
    (timeout / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// A server-generated message id (ULID).
pub fn new_message_id() -> String {
    ulid::Ulid::new().to_string()
}
