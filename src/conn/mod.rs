//! One WebSocket connection's plain data: its protocol state machine ([`state`]: phase,
//! liveness, close handshake), its subscriptions, and its unsent frames ([`outbox`]). No sockets here: the shard owns the slab
//! record that holds these with the socket, and `shard::driver` is the only code that waits on
//! the socket.
//!
//! Invariants:
//! - While `Open`, a connection is in the registry bitsets of its subscriptions. Closing
//!   detaches it first (bitsets, users, timer), so no fan-out reaches a closing connection and a
//!   reused slab key starts clean.
//! - Idle cost: no read buffer (reads go through the shard's scratch buffer), an empty outbox
//!   holds no heap, subscriptions are a small Vec.

pub mod outbox;
pub mod state;

use std::time::{Duration, Instant};

use crate::error::CloseReason;
use crate::protocol::Filter;
use crate::registry::ChannelId;

/// Longest a closing connection waits for the client's close once its close frame is out
/// (PROTOCOL.md §6), however much the client keeps sending.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Open,
    /// A close frame is queued; `peer_closed` when the client's close was already received.
    Closing {
        peer_closed: bool,
        since: Instant,
        reason: CloseReason,
    },
}

impl Phase {
    /// When a closing connection is dropped whatever the client does: [`CLOSE_LINGER`] after the
    /// close started, or, for the shutdown drain (whose queue may take up to `--shutdown-grace`
    /// to flush), after the close frame was written (`flushed_at`). None while open, or while a
    /// shutdown close is still flushing.
    pub fn linger_deadline(&self, flushed_at: Option<Instant>) -> Option<Instant> {
        match *self {
            Phase::Open => None,
            Phase::Closing {
                reason: CloseReason::ShuttingDown,
                ..
            } => flushed_at.map(|t| t + CLOSE_LINGER),
            Phase::Closing { since, .. } => Some(since + CLOSE_LINGER),
        }
    }
}

/// One channel a connection is subscribed to, with its optional client filter.
pub struct Subscription {
    pub channel: ChannelId,
    /// Also receives the channel's `join` / `leave` events.
    pub join_leave: bool,
    pub filter: Option<Box<Filter>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linger_bounds() {
        let t0 = Instant::now();
        assert_eq!(Phase::Open.linger_deadline(Some(t0)), None);
        let slow = Phase::Closing {
            peer_closed: false,
            since: t0,
            reason: CloseReason::SlowConsumer,
        };
        let later = t0 + Duration::from_secs(5);
        assert_eq!(slow.linger_deadline(Some(later)), Some(t0 + CLOSE_LINGER));
        let drain = Phase::Closing {
            peer_closed: false,
            since: t0,
            reason: CloseReason::ShuttingDown,
        };
        assert_eq!(
            drain.linger_deadline(None),
            None,
            "flushing within the grace"
        );
        assert_eq!(
            drain.linger_deadline(Some(later)),
            Some(later + CLOSE_LINGER)
        );
    }
}
