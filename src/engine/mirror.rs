//! A node's copy of one channel whose offsets are assigned elsewhere (the Redis engine,
//! PROTOCOL.md §12): it takes messages in any order, from the topic or from a range read to
//! fill a gap, and releases them in offset order, each exactly once.
//!
//! Invariants: released offsets are consecutive and increasing from the start position; a
//! message at or below the last released offset, or of another epoch than the mirror's, is
//! never released (another epoch is reported: the stream restarted, and subscribers must be told);
//! the recent released frames are kept (`--history-size`) so most recoveries need no Redis read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::history::{History, Miss};

/// What [`Mirror::offer`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Taken (released now, held for a gap, or dropped as already released).
    Taken,
    /// The message belongs to another epoch: Redis lost the channel and started it over.
    EpochChanged,
}

/// A channel's stream as this node has seen it.
#[derive(Debug, Default)]
pub struct Mirror {
    /// None until the subscription's start position is known.
    epoch: Option<Arc<str>>,
    released: u64,
    /// Offsets above `released + 1` waiting for the gap below them, with their epoch.
    held: BTreeMap<u64, (Arc<str>, Bytes)>,
    recent: History,
}

impl Mirror {
    /// A mirror that holds everything until [`start`](Self::start).
    pub fn new() -> Mirror {
        Mirror::default()
    }

    /// The start position is known.
    pub fn is_live(&self) -> bool {
        self.epoch.is_some()
    }

    /// Last released offset and the epoch (None before `start`).
    pub fn position(&self) -> Option<(u64, &Arc<str>)> {
        self.epoch.as_ref().map(|e| (self.released, e))
    }

    /// The subscription starts at (`offset`, `epoch`): messages held at or below it, or of
    /// another epoch, are dropped; what follows it without a gap is released into `out`.
    pub fn start(
        &mut self,
        offset: u64,
        epoch: Arc<str>,
        now: Instant,
        size: usize,
        out: &mut Vec<(u64, Bytes)>,
    ) {
        self.released = offset;
        self.recent.clear();
        self.held.retain(|&o, (e, _)| o > offset && *e == epoch);
        self.epoch = Some(epoch);
        self.release(now, size, out);
    }

    /// A message of the channel. Released messages are appended to `out` in offset order.
    pub fn offer(
        &mut self,
        offset: u64,
        epoch: &str,
        frame: Bytes,
        now: Instant,
        size: usize,
        out: &mut Vec<(u64, Bytes)>,
    ) -> Offer {
        match &self.epoch {
            None => {
                self.held.insert(offset, (Arc::from(epoch), frame));
                Offer::Taken
            }
            Some(e) if &**e != epoch => Offer::EpochChanged,
            Some(_) => {
                if offset > self.released {
                    let e = self.epoch.clone().unwrap_or_else(|| Arc::from(epoch));
                    self.held.insert(offset, (e, frame));
                    self.release(now, size, out);
                }
                Offer::Taken
            }
        }
    }

    fn release(&mut self, now: Instant, size: usize, out: &mut Vec<(u64, Bytes)>) {
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() != self.released + 1 {
                break;
            }
            let (offset, (_, frame)) = entry.remove_entry();
            self.released = offset;
            self.recent.push(offset, frame.clone(), now, size);
            out.push((offset, frame));
        }
    }

    /// The missing range `(after, before)` (exclusive) when messages are held behind a gap.
    pub fn gap(&self) -> Option<(u64, u64)> {
        self.epoch.as_ref()?;
        let (&first, _) = self.held.first_key_value()?;
        (first > self.released + 1).then_some((self.released, first))
    }

    /// Drops what is held and starts over at (`offset`, `epoch`), releasing nothing (after the
    /// stream restarted, or a gap that cannot be filled).
    pub fn reset(&mut self, offset: u64, epoch: Arc<str>) {
        self.held.clear();
        self.recent.clear();
        self.released = offset;
        self.epoch = Some(epoch);
    }

    /// The released frames after `since` from the recent ones kept here (all or a miss).
    pub fn recent_since(
        &self,
        since: u64,
        now: Instant,
        ttl: Duration,
        max: usize,
    ) -> Result<Vec<Bytes>, Miss> {
        self.recent.since(since, self.released, now, ttl, max)
    }

    /// The kept frames after `since`, oldest first (to complete a range read from Redis).
    pub fn recent_after(&self, since: u64, now: Instant, ttl: Duration) -> Vec<(u64, Bytes)> {
        self.recent.after(since, usize::MAX, now, ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: usize = 100;

    fn f(o: u64) -> Bytes {
        Bytes::from(format!("m{o}"))
    }

    fn offsets(out: &[(u64, Bytes)]) -> Vec<u64> {
        out.iter().map(|(o, _)| *o).collect()
    }

    #[test]
    fn holds_until_start_then_releases_what_follows_the_start() {
        let now = Instant::now();
        let mut m = Mirror::new();
        let mut out = Vec::new();
        for o in [4, 5, 7] {
            assert_eq!(m.offer(o, "E", f(o), now, SIZE, &mut out), Offer::Taken);
        }
        assert!(out.is_empty() && !m.is_live());
        m.start(4, Arc::from("E"), now, SIZE, &mut out);
        assert_eq!(offsets(&out), [5]);
        assert_eq!(m.gap(), Some((5, 7)));
        out.clear();
        m.offer(6, "E", f(6), now, SIZE, &mut out);
        assert_eq!(offsets(&out), [6, 7]);
        assert_eq!(m.gap(), None);
    }

    #[test]
    fn duplicates_and_old_offsets_are_dropped() {
        let now = Instant::now();
        let mut m = Mirror::new();
        let mut out = Vec::new();
        m.start(0, Arc::from("E"), now, SIZE, &mut out);
        for o in [1, 1, 2, 1, 3, 2] {
            m.offer(o, "E", f(o), now, SIZE, &mut out);
        }
        assert_eq!(offsets(&out), [1, 2, 3]);
        assert_eq!(m.position().map(|(o, _)| o), Some(3));
    }

    #[test]
    fn another_epoch_is_reported_not_released() {
        let now = Instant::now();
        let mut m = Mirror::new();
        let mut out = Vec::new();
        m.offer(1, "OLD", f(1), now, SIZE, &mut out);
        m.start(0, Arc::from("NEW"), now, SIZE, &mut out);
        assert!(
            out.is_empty(),
            "held messages of another epoch are dropped at start"
        );
        assert_eq!(
            m.offer(1, "OTHER", f(1), now, SIZE, &mut out),
            Offer::EpochChanged
        );
        assert!(out.is_empty());
        m.reset(0, Arc::from("OTHER"));
        m.offer(1, "OTHER", f(1), now, SIZE, &mut out);
        assert_eq!(offsets(&out), [1]);
    }

    #[test]
    fn recent_frames_answer_recoveries() {
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        let mut m = Mirror::new();
        let mut out = Vec::new();
        m.start(10, Arc::from("E"), now, 3, &mut out);
        for o in 11..=15 {
            m.offer(o, "E", f(o), now, 3, &mut out);
        }
        assert_eq!(
            m.recent_since(12, now, ttl, 100).unwrap(),
            [f(13), f(14), f(15)]
        );
        assert_eq!(m.recent_since(11, now, ttl, 100), Err(Miss::Trimmed));
        assert_eq!(m.recent_since(16, now, ttl, 100), Err(Miss::Ahead));
        assert_eq!(offsets(&m.recent_after(13, now, ttl)), [14, 15]);
    }
}
