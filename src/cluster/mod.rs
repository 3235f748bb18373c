//! The Redis engine client (PROTOCOL.md §12): one thread per node that talks to the Redis
//! instances, so several nodes serve one channel space.
//!
//! What it owns and what it does not:
//! - It assigns nothing itself: offsets and epochs come from one script per publish in the
//!   channel's Redis instance ([`scripts`]), which also appends to the channel's stream and
//!   publishes to its topic in the same atomic step.
//! - It knows no shard. Requests arrive with a reply callback ([`Reply`]); messages from a
//!   topic go to the `deliver` callback the server gives at start, which hands them to the
//!   channel's owner shard. Each instance's topics are read from one connection, so a node sees
//!   a channel's offsets in order; an owner that sees a jump asks for the missing range.
//! - Health: a `PING` every second; an instance that does not answer within 2 s (or refuses
//!   connections) is unavailable, and every request to it fails fast with [`Unavailable`]
//!   until it answers again.
//!
//! Channels are spread over several `--redis` URLs by a fixed hash of the name; each channel
//! lives on exactly one instance.

mod bridge;
pub mod scripts;
pub mod wire;

use std::hash::Hasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

/// How long a request may wait for Redis before it fails with [`Unavailable`].
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Redis did not answer (refused, silent for [`TIMEOUT`], or errored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Redis engine is unavailable")]
pub struct Unavailable;

/// A request's answer, called once on the bridge thread (it must not block).
pub type Reply<T> = Box<dyn FnOnce(Result<T, Unavailable>) + Send>;

/// A channel's position in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: Arc<str>,
}

/// The answer to [`Request::Range`]: the position, the oldest offset the stream still holds
/// (0: none), and the stored messages after `since` as complete frames, oldest first.
#[derive(Debug)]
pub struct Range {
    pub position: Position,
    pub first: u64,
    pub frames: Vec<(u64, Bytes)>,
}

/// A message read from a channel's topic: its offset, epoch and WebSocket frame (encoded once
/// per node, on the bridge thread).
#[derive(Debug, Clone)]
pub struct Remote {
    pub offset: u64,
    pub epoch: Arc<str>,
    pub frame: Bytes,
}

/// Work for the bridge.
pub enum Request {
    /// Runs the publish script: `prefix .. offset .. suffix` is the message's JSON.
    Publish {
        channel: Arc<str>,
        prefix: Bytes,
        suffix: Bytes,
        /// Set when the publisher named the message: a retry within the history TTL is not
        /// published again and answers the first offset.
        message_id: Option<String>,
        reply: Reply<Position>,
    },
    /// Subscribes to the channel's topic, then reads its position: every message above it
    /// arrives through `deliver`.
    Subscribe {
        channel: Arc<str>,
        reply: Reply<Position>,
    },
    /// Lets go of the channel's topic.
    Unsubscribe { channel: Arc<str> },
    /// The position and at most `limit` stored messages after `since`.
    Range {
        channel: Arc<str>,
        since: u64,
        limit: usize,
        reply: Reply<Range>,
    },
    /// A message to every connection of `user` (None: of every user) on the other nodes;
    /// answered once Redis took it.
    Direct {
        user: Option<String>,
        json: Bytes,
        reply: Reply<()>,
    },
    /// A `join`/`leave` event of this node's connection, for the other nodes' listeners (on
    /// the channel's topic; not stored, not numbered).
    JoinLeave { channel: Arc<str>, json: Bytes },
    /// This node has (`on`) or no longer has a connection of `user`: follow its topic.
    FollowUser { user: String, on: bool },
    /// Presence entries of this node's connections (connection id, JSON): added or renewed
    /// (`on`), or removed.
    Presence {
        channel: Arc<str>,
        entries: Vec<(String, String)>,
        on: bool,
    },
    /// The channel's live presence entries (JSON), every node's.
    PresenceGet {
        channel: Arc<str>,
        reply: Reply<Vec<Bytes>>,
    },
}

impl Request {
    /// The name that picks the instance: the channel, or the user (broadcasts: every
    /// instance is subscribed to its own broadcast topic; they go to the first).
    fn key(&self) -> &str {
        match self {
            Request::Publish { channel, .. }
            | Request::Subscribe { channel, .. }
            | Request::Unsubscribe { channel }
            | Request::Range { channel, .. }
            | Request::Presence { channel, .. }
            | Request::JoinLeave { channel, .. }
            | Request::PresenceGet { channel, .. } => channel,
            Request::Direct { user, .. } => user.as_deref().unwrap_or(""),
            Request::FollowUser { user, .. } => user,
        }
    }

    /// Answers the request with [`Unavailable`].
    fn fail(self) {
        match self {
            Request::Publish { reply, .. } | Request::Subscribe { reply, .. } => {
                reply(Err(Unavailable))
            }
            Request::Range { reply, .. } => reply(Err(Unavailable)),
            Request::Direct { reply, .. } => reply(Err(Unavailable)),
            Request::PresenceGet { reply, .. } => reply(Err(Unavailable)),
            Request::Unsubscribe { .. }
            | Request::FollowUser { .. }
            | Request::Presence { .. }
            | Request::JoinLeave { .. } => {}
        }
    }
}

/// Where the bridge hands what it reads; each is called on the bridge thread and must not block.
#[derive(Clone)]
pub struct Callbacks {
    /// A channel message: (channel, message).
    pub deliver: Arc<dyn Fn(Arc<str>, Remote) + Send + Sync>,
    /// An instance came back (reconnected): the channel's topic was subscribed again, and its
    /// owner should check for a gap.
    pub resumed: Arc<dyn Fn(Arc<str>) + Send + Sync>,
    /// A message of another node to every connection of a user (None: to every connection),
    /// as a complete frame.
    pub direct: Arc<dyn Fn(Option<String>, Bytes) + Send + Sync>,
    /// Another node's `join`/`leave` frame of a channel.
    pub join_leave: Arc<dyn Fn(Arc<str>, Bytes) + Send + Sync>,
}

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct Settings {
    pub urls: Vec<String>,
    /// `--cluster-name`: the key prefix.
    pub prefix: String,
    pub history_size: usize,
    pub history_ttl: Duration,
    /// `--presence-ttl`: a presence entry not renewed for this long is dropped.
    pub presence_ttl: Duration,
}

/// The shards' handle on the bridge. Cheap to share; sending never blocks.
pub struct Cluster {
    instances: Vec<Instance>,
    pub settings: Settings,
    /// This node's id (random per start): in `connection_id`s and on its user messages and
    /// broadcasts, so it skips its own.
    pub node_id: Arc<str>,
}

struct Instance {
    requests: mpsc::UnboundedSender<Request>,
    healthy: Arc<AtomicBool>,
}

impl Cluster {
    /// Starts the bridge thread. Fails only on a URL that does not parse; an instance that is
    /// down at start is unavailable until it answers.
    pub fn start(settings: Settings, callbacks: Callbacks) -> Result<Arc<Cluster>, String> {
        let node_id: Arc<str> = Arc::from(format!("{:016x}", rand::random::<u64>()));
        let mut instances = Vec::new();
        let mut ends = Vec::new();
        for url in &settings.urls {
            let client = redis::Client::open(url.as_str())
                .map_err(|e| format!("--redis {}: {e}", redact(url)))?;
            let (tx, rx) = mpsc::unbounded_channel();
            let healthy = Arc::new(AtomicBool::new(false));
            instances.push(Instance {
                requests: tx,
                healthy: healthy.clone(),
            });
            ends.push(bridge::InstanceEnd {
                client,
                requests: rx,
                healthy,
                name: redact(url),
            });
        }
        bridge::spawn(settings.clone(), node_id.clone(), ends, callbacks)
            .map_err(|e| format!("cannot start the Redis bridge: {e}"))?;
        Ok(Arc::new(Cluster {
            instances,
            settings,
            node_id,
        }))
    }

    /// Hands `req` to its channel's instance. A publish or range read is answered
    /// `Unavailable` at once if that instance is known to be down (so it never waits on a dead
    /// Redis); a subscription waits for the instance to come back.
    pub fn send(&self, req: Request) {
        let i = &self.instances[instance_of(req.key(), self.instances.len())];
        let fails_fast = matches!(
            req,
            Request::Publish { .. }
                | Request::Range { .. }
                | Request::Direct { .. }
                | Request::Presence { .. }
                | Request::PresenceGet { .. }
        );
        if fails_fast && !i.healthy.load(Ordering::Acquire) {
            req.fail();
            return;
        }
        if let Err(e) = i.requests.send(req) {
            e.0.fail();
        }
    }

    /// Every instance answered its last health check.
    pub fn is_healthy(&self) -> bool {
        self.instances
            .iter()
            .all(|i| i.healthy.load(Ordering::Acquire))
    }
}

#[cfg(test)]
impl Cluster {
    /// One healthy instance played by the test: it receives the requests and answers them
    /// through their reply callbacks (no thread, no Redis).
    pub fn fake(settings: Settings) -> (Arc<Cluster>, mpsc::UnboundedReceiver<Request>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let instance = Instance {
            requests: tx,
            healthy: Arc::new(AtomicBool::new(true)),
        };
        let cluster = Cluster {
            instances: vec![instance],
            settings,
            node_id: Arc::from("fake"),
        };
        (Arc::new(cluster), rx)
    }
}

/// The instance of `channel` among `n`: a fixed hash, the same on every node.
pub fn instance_of(channel: &str, n: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(channel.as_bytes());
    (h.finish() % n.max(1) as u64) as usize
}

/// `url` without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_a_log() {
        assert_eq!(redact("redis://u:secret@h:6379/0"), "redis://…@h:6379/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn instance_is_stable_and_in_range() {
        for n in 1..5 {
            for c in ["odds", "games", "x"] {
                assert!(instance_of(c, n) < n);
                assert_eq!(instance_of(c, n), instance_of(c, n));
            }
        }
    }
}
