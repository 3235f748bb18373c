//! A connection's record in its shard's slab: the plain state of `crate::conn` plus the socket.
//!
//! A record lives in exactly one shard's slab, under a key valid only on that shard. Only the
//! connection's own driver task removes it, so a key never changes owner while the task runs.

use std::rc::Rc;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::auth::{Grants, Rights};
use crate::conn::outbox::Outbox;
use crate::conn::state::ConnState;
use crate::conn::Subscription;
use crate::registry::ChannelId;
use crate::timer::TimerId;

/// The socket, shared by the slab record (fan-out writes to it directly) and the driver task.
pub struct ConnIo {
    pub stream: TcpStream,
    /// Wakes the driver when the outbox needs the socket's writable readiness, reading may
    /// resume, or the connection started closing.
    pub wake: Notify,
}

/// A connection's record in its shard's slab.
pub struct Conn {
    /// Unique across shards and time (shard id in the top bits).
    pub id: u64,
    pub io: Rc<ConnIo>,
    pub user_id: Option<Box<str>>,
    pub subs: Vec<Subscription>,
    /// True when any subscription carries a filter (skips the lookup on the fan-out path).
    pub has_filters: bool,
    /// Connected with an API key: may publish anywhere, exempt from `--message-rate`.
    pub api_key: bool,
    /// The token's `channels`/`publish` claims, shared with every local connection that
    /// presented the same ones (None: no token, or a token with neither claim).
    pub grants: Option<Arc<Grants>>,
    /// Phase, liveness and close handshake.
    pub state: ConnState,
    pub timer: Option<TimerId>,
    pub out: Outbox,
    /// Queued in the shard's dirty list, to be flushed at the end of the current batch.
    pub dirty: bool,
    /// The socket refused bytes; nothing is written until the driver sees it writable, so a
    /// stalled socket costs publishers a queue push and nothing more.
    pub blocked: bool,
    /// WebSocket publishes sent to owners and not yet answered (`--max-inflight-publishes`).
    pub inflight: u32,
    /// Reading stopped at `--max-inflight-publishes`; it resumes once half are answered, so a
    /// pipelining publisher refills in batches rather than one message per reply (a window
    /// that slides by one makes every fan-out a batch of one).
    pub publish_paused: bool,
    /// A subscription request waiting for owners' acks; reading is paused meanwhile.
    pub(crate) parked: Option<Box<super::Parked>>,
}

impl Conn {
    /// The subscription to `channel`, if any.
    pub fn subscription(&self, channel: ChannelId) -> Option<&Subscription> {
        self.subs.iter().find(|s| s.channel == channel)
    }

    /// What this connection may do (PROTOCOL.md §9).
    pub fn rights(&self) -> Rights<'_> {
        Rights {
            user: self.user_id.as_deref(),
            grants: self.grants.as_deref(),
            api_key: self.api_key,
        }
    }

    /// The connection came with a token (it has an expiry, and may `refresh`).
    pub fn has_token(&self) -> bool {
        self.state.expires_at().is_some()
    }

    /// The `connection_id` shown to clients.
    /// `{shard:x}-{seq:x}`, prefixed by `{node}.` in cluster mode so it is unique across nodes.
    pub fn public_id(&self, node: Option<&str>) -> String {
        let (shard, seq) = (self.id >> 48, self.id & 0xffff_ffff_ffff);
        match node {
            Some(n) => format!("{n}.{shard:x}-{seq:x}"),
            None => format!("{shard:x}-{seq:x}"),
        }
    }
}
