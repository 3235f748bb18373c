//! One WebSocket connection: its slab record (`Conn`), its socket (`ConnIo`) and the task that
//! drives it (`driver`).
//!
//! Invariants:
//! - A `Conn` lives in exactly one shard's slab, under a key valid only on that shard. Only the
//!   connection's own driver task removes it, so a key never changes owner while the task runs.
//! - While `Open`, the connection is in the registry bitsets of its subscriptions. Closing
//!   detaches it first (bitsets, users, timer), so no fan-out reaches a closing connection and a
//!   reused key starts clean.
//! - Idle cost: no read buffer (reads go through the shard's scratch buffer), an empty outbox
//!   holds no heap, subscriptions are a small Vec.

pub mod driver;
pub mod outbox;

use std::time::Instant;

use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::protocol::Filter;
use crate::registry::ChannelId;
use crate::timer::TimerId;
use outbox::Outbox;

/// The socket, shared by the slab record (fan-out writes to it directly) and the driver task.
pub struct ConnIo {
    pub stream: TcpStream,
    /// Wakes the driver when the outbox needs the socket's writable readiness or the
    /// connection started closing.
    pub wake: Notify,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Open,
    /// A close frame is queued; `peer_closed` when the client's close was already received.
    Closing {
        peer_closed: bool,
        since: Instant,
    },
}

/// One channel a connection is subscribed to, with its optional client filter.
pub struct Subscription {
    pub channel: ChannelId,
    pub filter: Option<Box<Filter>>,
}

/// A connection's record in its shard's slab.
pub struct Conn {
    /// Unique across shards and time (shard id in the top bits).
    pub id: u64,
    pub io: std::rc::Rc<ConnIo>,
    pub user_id: Option<Box<str>>,
    pub subs: Vec<Subscription>,
    /// True when any subscription carries a filter (skips the lookup on the fan-out path).
    pub has_filters: bool,
    pub can_publish: bool,
    /// Echo endpoint connection (conformance runs only).
    pub echo: bool,
    /// Last time any byte arrived from the client.
    pub last_seen: Instant,
    /// A server ping was sent since `last_seen`.
    pub pinged: bool,
    pub timer: Option<TimerId>,
    pub out: Outbox,
    /// Queued in the shard's dirty list, to be flushed at the end of the current batch.
    pub dirty: bool,
    pub phase: Phase,
}

impl Conn {
    /// The subscription to `channel`, if any.
    pub fn subscription(&self, channel: ChannelId) -> Option<&Subscription> {
        self.subs.iter().find(|s| s.channel == channel)
    }

    /// The `connection_id` shown to clients.
    pub fn public_id(&self) -> String {
        format!("{:x}-{:x}", self.id >> 48, self.id & 0xffff_ffff_ffff)
    }
}
