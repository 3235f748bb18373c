//! The embedded in-memory engine: one shard's owned channels in a slab, idle ones freed by a
//! timer wheel.
//!
//! A channel is *idle* while no shard is interested in it. An idle channel has a wheel timer at
//! `last_active + idle_ttl`; an append only stamps `last_active` (no wheel operation), and the
//! timer re-arms itself from that stamp when it fires, as heartbeats do. A channel with interest
//! has no timer; losing its last interested shard arms one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use slab::Slab;

use super::history::{History, Miss};
use super::{new_epoch, ChannelEngine, Position, ShardSet};
use crate::timer::{TimerId, TimerWheel};

struct Entry {
    name: Arc<str>,
    offset: u64,
    epoch: Arc<str>,
    interest: ShardSet,
    last_active: Instant,
    timer: Option<TimerId>,
    history: History,
}

/// Channel state of the channels one shard owns, in memory.
pub struct MemoryEngine {
    by_name: HashMap<Arc<str>, usize>,
    entries: Slab<Entry>,
    wheel: TimerWheel<usize>,
    idle_ttl: Duration,
    /// Messages kept per channel (`--history-size`); each for `idle_ttl` (`--history-ttl`).
    history_size: usize,
    /// Frames kept over all channels, and their bytes.
    stored: (usize, usize),
    expired: Vec<usize>,
}

impl MemoryEngine {
    /// An engine freeing channels idle for `idle_ttl`; `now` starts its wheel.
    pub fn new(idle_ttl: Duration, now: Instant) -> Self {
        let tick = (idle_ttl / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let slots = (idle_ttl.as_nanos() / tick.as_nanos().max(1)).min(1 << 16) as usize + 2;
        MemoryEngine {
            by_name: HashMap::new(),
            entries: Slab::new(),
            wheel: TimerWheel::new(tick, slots, now),
            idle_ttl,
            history_size: 0,
            stored: (0, 0),
            expired: Vec::new(),
        }
    }

    /// Keeps the last `size` messages of every channel (0: none).
    pub fn with_history(mut self, size: usize) -> Self {
        self.history_size = size;
        self
    }

    /// Frames kept over all channels, and their bytes (for `/metrics`).
    pub fn stored(&self) -> (usize, usize) {
        self.stored
    }

    /// Adjusts the totals around a change of one history.
    fn account(stored: &mut (usize, usize), before: (usize, usize), h: &History) {
        stored.0 = stored.0 + h.len() - before.0;
        stored.1 = stored.1 + h.bytes() - before.1;
    }

    /// Wheel resolution: how often `handle_timeout` needs calling.
    pub fn tick(&self) -> Duration {
        self.wheel.tick()
    }

    fn entry(&mut self, channel: &Arc<str>, now: Instant) -> usize {
        if let Some(&k) = self.by_name.get(channel) {
            return k;
        }
        let k = self.entries.insert(Entry {
            name: channel.clone(),
            offset: 0,
            epoch: new_epoch(),
            interest: ShardSet::new(),
            last_active: now,
            timer: None,
            history: History::default(),
        });
        self.by_name.insert(channel.clone(), k);
        self.arm_if_idle(k);
        k
    }

    fn arm_if_idle(&mut self, k: usize) {
        let ttl = self.idle_ttl;
        let Some(e) = self.entries.get_mut(k) else {
            return;
        };
        if e.interest.is_empty() && e.timer.is_none() {
            let at = e.last_active.checked_add(ttl).unwrap_or(e.last_active);
            e.timer = Some(self.wheel.arm(at, k));
        }
    }
}

impl ChannelEngine for MemoryEngine {
    fn append(&mut self, channel: &Arc<str>, now: Instant) -> (Position, &ShardSet) {
        let k = self.entry(channel, now);
        let e = &mut self.entries[k];
        e.offset += 1;
        e.last_active = now;
        let e = &self.entries[k];
        (
            Position {
                offset: e.offset,
                epoch: e.epoch.clone(),
            },
            &e.interest,
        )
    }

    fn set_interest(
        &mut self,
        channel: &Arc<str>,
        shard: usize,
        on: bool,
        now: Instant,
    ) -> Position {
        if !on && !self.by_name.contains_key(channel) {
            return Position {
                offset: 0,
                epoch: new_epoch(),
            };
        }
        let k = self.entry(channel, now);
        let e = &mut self.entries[k];
        e.last_active = now;
        if on {
            e.interest.insert(shard);
            if let Some(t) = e.timer.take() {
                self.wheel.cancel(t);
            }
        } else {
            e.interest.remove(shard);
            self.arm_if_idle(k);
        }
        let e = &self.entries[k];
        Position {
            offset: e.offset,
            epoch: e.epoch.clone(),
        }
    }

    fn position(&self, channel: &str) -> Option<Position> {
        let e = &self.entries[*self.by_name.get(channel)?];
        Some(Position {
            offset: e.offset,
            epoch: e.epoch.clone(),
        })
    }

    fn handle_timeout(&mut self, now: Instant) -> usize {
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.advance(now, &mut expired);
        let mut freed = 0;
        for k in expired.drain(..) {
            let Some(e) = self.entries.get_mut(k) else {
                continue;
            };
            e.timer = None;
            if !e.interest.is_empty() {
                continue;
            }
            let due = e.last_active.checked_add(self.idle_ttl).unwrap_or(now);
            if due <= now {
                let e = self.entries.remove(k);
                self.stored.0 -= e.history.len();
                self.stored.1 -= e.history.bytes();
                self.by_name.remove(&e.name);
                freed += 1;
            } else {
                e.timer = Some(self.wheel.arm(due, k));
            }
        }
        self.expired = expired;
        freed
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn record(&mut self, channel: &str, offset: u64, frame: Bytes, now: Instant) {
        if self.history_size == 0 {
            return;
        }
        let Some(&k) = self.by_name.get(channel) else {
            return;
        };
        let e = &mut self.entries[k];
        if e.offset != offset {
            return;
        }
        let before = (e.history.len(), e.history.bytes());
        e.history.trim(now, self.idle_ttl);
        e.history.push(offset, frame, now, self.history_size);
        Self::account(&mut self.stored, before, &e.history);
    }

    fn recover(
        &self,
        channel: &str,
        since: u64,
        epoch: &str,
        max: usize,
        now: Instant,
    ) -> (Option<Position>, Result<Vec<Bytes>, Miss>) {
        let Some(&k) = self.by_name.get(channel) else {
            return (None, Err(Miss::Epoch));
        };
        let e = &self.entries[k];
        let position = Position {
            offset: e.offset,
            epoch: e.epoch.clone(),
        };
        let replay = if *e.epoch != *epoch {
            Err(Miss::Epoch)
        } else {
            e.history.since(since, e.offset, now, self.idle_ttl, max)
        };
        (Some(position), replay)
    }

    fn history(
        &mut self,
        channel: &Arc<str>,
        since: u64,
        limit: usize,
        now: Instant,
    ) -> (Position, Vec<(u64, Bytes)>) {
        let k = self.entry(channel, now);
        let e = &self.entries[k];
        let position = Position {
            offset: e.offset,
            epoch: e.epoch.clone(),
        };
        (position, e.history.after(since, limit, now, self.idle_ttl))
    }

    fn interest(&self, channel: &str) -> Option<&ShardSet> {
        Some(&self.entries[*self.by_name.get(channel)?].interest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn ch(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn offsets_count_from_one_per_channel() {
        let t0 = Instant::now();
        let mut e = MemoryEngine::new(TTL, t0);
        let (a, c) = (ch("a"), ch("b"));
        assert_eq!(e.append(&a, t0).0.offset, 1);
        assert_eq!(e.append(&a, t0).0.offset, 2);
        assert_eq!(e.append(&c, t0).0.offset, 1);
        assert_ne!(
            e.position("a").unwrap().epoch,
            e.position("b").unwrap().epoch
        );
        assert_eq!(e.position("zzz"), None);
    }

    #[test]
    fn idle_channel_is_freed_after_ttl_and_returns_with_a_new_epoch() {
        let t0 = Instant::now();
        let mut e = MemoryEngine::new(TTL, t0);
        let a = ch("a");
        let (p, _) = e.append(&a, t0);
        let first_epoch = p.epoch;
        // A later append pushes the deadline back: the first firing only re-arms.
        e.append(&a, t0 + Duration::from_secs(5));
        assert_eq!(e.handle_timeout(t0 + Duration::from_secs(11)), 0);
        assert_eq!(e.len(), 1);
        assert_eq!(e.handle_timeout(t0 + Duration::from_secs(16)), 1);
        assert!(e.is_empty());
        let (p, _) = e.append(&a, t0 + Duration::from_secs(17));
        assert_eq!(p.offset, 1);
        assert_ne!(p.epoch, first_epoch);
    }

    #[test]
    fn interest_pins_a_channel_until_the_last_shard_leaves() {
        let t0 = Instant::now();
        let mut e = MemoryEngine::new(TTL, t0);
        let a = ch("a");
        let p = e.set_interest(&a, 1, true, t0);
        assert_eq!(p.offset, 0);
        e.set_interest(&a, 0, true, t0);
        let (p2, shards) = e.append(&a, t0);
        assert_eq!(p2.epoch, p.epoch);
        assert_eq!(shards.iter().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(e.handle_timeout(t0 + Duration::from_secs(100)), 0);
        e.set_interest(&a, 1, false, t0 + Duration::from_secs(100));
        assert_eq!(
            e.handle_timeout(t0 + Duration::from_secs(200)),
            0,
            "shard 0 is still in"
        );
        e.set_interest(&a, 0, false, t0 + Duration::from_secs(200));
        assert_eq!(e.handle_timeout(t0 + Duration::from_secs(205)), 0);
        assert_eq!(e.handle_timeout(t0 + Duration::from_secs(211)), 1);
        assert!(e.position("a").is_none());
    }

    #[test]
    fn memory_follows_channels_in_use() {
        let t0 = Instant::now();
        let mut e = MemoryEngine::new(TTL, t0);
        for i in 0..10_000 {
            e.append(&ch(&format!("c{i}")), t0);
        }
        assert_eq!(e.len(), 10_000);
        assert_eq!(e.handle_timeout(t0 + Duration::from_secs(12)), 10_000);
        assert!(e.is_empty());
        assert!(e.by_name.is_empty());
        assert!(e.wheel.is_empty());
    }

    #[test]
    fn history_is_kept_per_channel_and_recovers_all_or_nothing() {
        let t0 = Instant::now();
        let mut e = MemoryEngine::new(TTL, t0).with_history(3);
        let a = ch("a");
        for _ in 0..5 {
            let (p, _) = e.append(&a, t0);
            e.record(&a, p.offset, Bytes::from(format!("f{}", p.offset)), t0);
        }
        // A stale record (not the channel's latest offset) is ignored.
        e.record(&a, 2, Bytes::from_static(b"late"), t0);
        assert_eq!(e.stored(), (3, 6));
        let epoch = e.position("a").unwrap().epoch;
        let (pos, replay) = e.recover("a", 3, &epoch, 100, t0);
        assert_eq!(pos.map(|p| p.offset), Some(5));
        assert_eq!(replay, Ok(vec![Bytes::from("f4"), Bytes::from("f5")]));
        assert_eq!(e.recover("a", 1, &epoch, 100, t0).1, Err(Miss::Trimmed));
        assert_eq!(e.recover("a", 3, "other", 100, t0).1, Err(Miss::Epoch));
        assert_eq!(e.recover("nope", 0, &epoch, 100, t0).0, None);
        let (_, listed) = e.history(&a, 0, 2, t0);
        assert_eq!(listed.iter().map(|m| m.0).collect::<Vec<_>>(), [3, 4]);
        // Freed with its channel.
        assert_eq!(e.handle_timeout(t0 + Duration::from_secs(11)), 1);
        assert_eq!(e.stored(), (0, 0));
    }

    #[test]
    fn uninterest_of_an_unknown_channel_creates_nothing() {
        let t0 = Instant::now();
        let mut e = MemoryEngine::new(TTL, t0);
        let p = e.set_interest(&ch("x"), 3, false, t0);
        assert_eq!(p.offset, 0);
        assert!(e.is_empty());
    }
}
