//! A channel's history (PROTOCOL.md §10): its last `--history-size` messages, each kept for
//! `--history-ttl`, as the frames that were sent (shared `Bytes`: one copy of a message in memory
//! whatever the number of shards and subscribers that got it).
//!
//! Invariants: stored offsets are consecutive and increasing (the newest is the channel's top);
//! nothing older than the TTL is returned; a range is answered whole or not at all.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// One stored message: its offset, when it was appended, and its encoded frame.
#[derive(Debug, Clone)]
struct Stored {
    offset: u64,
    at: Instant,
    frame: Bytes,
}

/// Why a `since` position cannot be recovered (the reply says `"recovered":false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The client's epoch is not the channel's: the stream restarted.
    Epoch,
    /// The client claims an offset the channel never reached.
    Ahead,
    /// Part of the range was trimmed (by size or age).
    Trimmed,
    /// More than `--recovery-max` messages are missing.
    TooMany,
    /// Cluster mode: Redis could not be read.
    Unavailable,
}

impl Miss {
    /// Wire spelling, for logs and the reply's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Miss::Epoch => "epoch_changed",
            Miss::Ahead => "offset_ahead",
            Miss::Trimmed => "history_trimmed",
            Miss::TooMany => "over_recovery_max",
            Miss::Unavailable => "engine_unavailable",
        }
    }
}

/// The history ring of one channel.
#[derive(Debug, Default)]
pub struct History {
    items: VecDeque<Stored>,
    /// Sum of the stored frames' lengths.
    bytes: usize,
}

impl History {
    /// Appends the frame of `offset`, which must follow the newest stored one (an offset that
    /// does not starts the ring over, keeping the consecutive-offsets invariant), then trims to
    /// `size` messages. `size` 0 keeps nothing.
    pub fn push(&mut self, offset: u64, frame: Bytes, now: Instant, size: usize) {
        if self.items.back().is_some_and(|s| s.offset + 1 != offset) {
            self.clear();
        }
        if size == 0 {
            return;
        }
        self.bytes += frame.len();
        self.items.push_back(Stored {
            offset,
            at: now,
            frame,
        });
        while self.items.len() > size {
            self.pop_front();
        }
    }

    /// Drops messages appended `ttl` or longer before `now`.
    pub fn trim(&mut self, now: Instant, ttl: Duration) {
        while self
            .items
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) >= ttl)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(s) = self.items.pop_front() {
            self.bytes -= s.frame.len();
        }
    }

    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
    }

    /// Stored messages.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes of stored frames.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Offset of the oldest stored message.
    pub fn first_offset(&self) -> Option<u64> {
        self.items.front().map(|s| s.offset)
    }

    /// The frames after `since` up to `top` (the channel's current offset), all of them or a
    /// [`Miss`]: the recovery decision of PROTOCOL.md §10. `now`/`ttl` hide messages past their
    /// age even if not trimmed yet; at most `max` messages are replayed.
    pub fn since(
        &self,
        since: u64,
        top: u64,
        now: Instant,
        ttl: Duration,
        max: usize,
    ) -> Result<Vec<Bytes>, Miss> {
        if since > top {
            return Err(Miss::Ahead);
        }
        let missing = top - since;
        if missing == 0 {
            return Ok(Vec::new());
        }
        if missing > max as u64 {
            return Err(Miss::TooMany);
        }
        // Stored offsets are consecutive and end at `top` when the ring is current.
        let (Some(first), Some(last)) = (self.items.front(), self.items.back()) else {
            return Err(Miss::Trimmed);
        };
        if last.offset != top || first.offset > since + 1 {
            return Err(Miss::Trimmed);
        }
        let start = (since + 1 - first.offset) as usize;
        let range = self.items.range(start..);
        let mut out = Vec::with_capacity(missing as usize);
        for s in range {
            if now.saturating_duration_since(s.at) >= ttl {
                return Err(Miss::Trimmed);
            }
            out.push(s.frame.clone());
        }
        Ok(out)
    }

    /// Stored frames with offset > `since`, oldest first, at most `limit`, not past their age
    /// (`GET /api/history`).
    pub fn after(
        &self,
        since: u64,
        limit: usize,
        now: Instant,
        ttl: Duration,
    ) -> Vec<(u64, Bytes)> {
        self.items
            .iter()
            .filter(|s| s.offset > since && now.saturating_duration_since(s.at) < ttl)
            .take(limit)
            .map(|s| (s.offset, s.frame.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);

    fn frame(offset: u64) -> Bytes {
        Bytes::from(format!("m{offset}"))
    }

    fn filled(t0: Instant, n: u64, size: usize) -> History {
        let mut h = History::default();
        for o in 1..=n {
            h.push(o, frame(o), t0 + Duration::from_secs(o), size);
        }
        h
    }

    #[test]
    fn keeps_the_last_size_messages_and_counts_their_bytes() {
        let t0 = Instant::now();
        let h = filled(t0, 150, 100);
        assert_eq!((h.len(), h.first_offset()), (100, Some(51)));
        let want: usize = (51..=150).map(|o| frame(o).len()).sum();
        assert_eq!(h.bytes(), want);
        let mut none = History::default();
        none.push(1, frame(1), t0, 0);
        assert!(none.is_empty() && none.bytes() == 0);
    }

    #[test]
    fn recovery_is_all_or_nothing() {
        let t0 = Instant::now();
        let h = filled(t0, 150, 100);
        let now = t0 + Duration::from_secs(151);
        let got = h.since(140, 150, now, TTL, 1000).unwrap();
        assert_eq!(got, (141..=150).map(frame).collect::<Vec<_>>());
        assert_eq!(h.since(150, 150, now, TTL, 1000), Ok(vec![]));
        assert_eq!(h.since(50, 150, now, TTL, 1000).unwrap().len(), 100);
        assert_eq!(h.since(49, 150, now, TTL, 1000), Err(Miss::Trimmed));
        assert_eq!(h.since(151, 150, now, TTL, 1000), Err(Miss::Ahead));
        assert_eq!(h.since(140, 150, now, TTL, 9), Err(Miss::TooMany));
        assert_eq!(h.since(141, 150, now, TTL, 9).unwrap().len(), 9);
        // Top moved on without the ring (it restarted): nothing is trusted.
        assert_eq!(h.since(140, 151, now, TTL, 1000), Err(Miss::Trimmed));
        assert_eq!(
            History::default().since(0, 3, now, TTL, 1000),
            Err(Miss::Trimmed)
        );
    }

    #[test]
    fn age_trims_and_hides() {
        let t0 = Instant::now();
        let mut h = filled(t0, 10, 100);
        let ttl = Duration::from_secs(5);
        // At t0+8, messages appended at t0+1..=t0+3 are 5 s old or more.
        let now = t0 + Duration::from_secs(8);
        assert_eq!(h.since(3, 10, now, ttl, 100).unwrap().len(), 7);
        assert_eq!(h.since(2, 10, now, ttl, 100), Err(Miss::Trimmed), "hidden");
        assert_eq!(h.after(0, 100, now, ttl).first().map(|m| m.0), Some(4));
        h.trim(now, ttl);
        assert_eq!(h.first_offset(), Some(4));
        assert_eq!(
            h.after(5, 2, now, ttl)
                .iter()
                .map(|m| m.0)
                .collect::<Vec<_>>(),
            [6, 7]
        );
        h.trim(t0 + Duration::from_secs(100), ttl);
        assert!(h.is_empty() && h.bytes() == 0);
    }

    #[test]
    fn a_gap_starts_the_ring_over() {
        let t0 = Instant::now();
        let mut h = filled(t0, 5, 100);
        h.push(9, frame(9), t0, 100);
        assert_eq!((h.len(), h.first_offset()), (1, Some(9)));
        assert_eq!(h.since(8, 9, t0, TTL, 100).unwrap(), vec![frame(9)]);
        assert_eq!(h.since(5, 9, t0, TTL, 100), Err(Miss::Trimmed));
    }
}
