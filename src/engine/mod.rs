//! The channel engine seam: per-channel state (offset, epoch, last activity, which shards want
//! the channel's messages) behind one interface.
//!
//! Each shard holds one engine for the channels it *owns* (`shard::mesh::owner_of`); nothing
//! else assigns offsets. The embedded [`MemoryEngine`] implements it. In cluster mode
//! (`--redis`) Redis assigns offsets instead, asynchronously, and the owner follows each
//! channel through a [`mirror::Mirror`] (`shard::cluster`); this trait is then unused.
//!
//! Invariants (sans-IO: time is an argument, nothing here touches a socket or the clock):
//! - Offsets of a channel start at 1 and grow by one per `append`, never reused within one epoch.
//! - A channel's state is freed only when no shard is interested in it and it saw no activity
//!   (an append or an interest change) for `idle_ttl`. It comes back at offset 0 with a **new epoch**, so a client holding an old
//!   (offset, epoch) pair learns that the stream restarted (PROTOCOL.md §10).
//! - Memory follows the channels in use: idle channels are found by a timer wheel, never a scan.
//! - History holds the frames as sent (shared `Bytes`), at most `--history-size` per channel and
//!   none older than `--history-ttl`; a recovery is answered whole or refused ([`history`]).

pub mod history;
mod memory;
pub mod mirror;
mod shards;

pub use memory::MemoryEngine;
pub use shards::ShardSet;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
pub use history::Miss;

/// Where a channel's stream stands: the last offset assigned and the epoch it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: Arc<str>,
}

/// Per-channel state of the channels one shard owns.
pub trait ChannelEngine {
    /// Assigns the next offset of `channel` (creating its state at a new epoch if it has none).
    /// Returns the new position and the shards interested in the channel.
    fn append(&mut self, channel: &Arc<str>, now: Instant) -> (Position, &ShardSet);

    /// Records that `shard` now has (`on`) or no longer has subscribers of `channel`; returns
    /// the channel's current position, which the shard uses as the offset of its subscribe
    /// replies until the next message arrives.
    fn set_interest(
        &mut self,
        channel: &Arc<str>,
        shard: usize,
        on: bool,
        now: Instant,
    ) -> Position;

    /// Current position of `channel` without changing anything; None if it has no state.
    fn position(&self, channel: &str) -> Option<Position>;

    /// Frees channels idle past the TTL; returns how many were freed.
    fn handle_timeout(&mut self, now: Instant) -> usize;

    /// Keeps `frame` as the message at `offset` of `channel`, the offset `append` just gave
    /// (anything else is ignored), in the channel's history.
    fn record(&mut self, channel: &str, offset: u64, frame: Bytes, now: Instant);

    /// The recovery decision for a client at (`since`, `epoch`): the channel's position and
    /// every frame after `since`, or why not (PROTOCOL.md §10). Position None: no state.
    fn recover(
        &self,
        channel: &str,
        since: u64,
        epoch: &str,
        max: usize,
        now: Instant,
    ) -> (Option<Position>, Result<Vec<Bytes>, Miss>);

    /// Stored messages after `since`, oldest first, at most `limit`, with the channel's
    /// position (a channel without state gets it, at a new epoch, as `append` would).
    fn history(
        &mut self,
        channel: &Arc<str>,
        since: u64,
        limit: usize,
        now: Instant,
    ) -> (Position, Vec<(u64, Bytes)>);

    /// The shards interested in `channel`; None: no state.
    fn interest(&self, channel: &str) -> Option<&ShardSet>;

    /// Channels with state.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A fresh epoch: a ULID, unique across restarts and evictions.
pub fn new_epoch() -> Arc<str> {
    Arc::from(ulid::Ulid::new().to_string())
}
