//! Invariant: `engine::mirror::Mirror` (a node's copy of a channel whose offsets Redis assigns,
//! PROTOCOL.md §12) under arbitrary offer / start / reset / time-step / recent_since /
//! recent_after sequences agrees with a naive model: a `BTreeMap` of held messages, the last
//! released offset, the epoch (`None` before the first start or reset) and a `Vec` of every
//! frame released since the last start or reset. Frames are `"{epoch}:{offset}"`, so what comes
//! out can be checked on its own.
//!
//! - Before the first `start` or `reset`, `offer` holds every message, whatever its epoch (a
//!   later message at the same offset replaces the held one), releases nothing and returns
//!   `Taken`.
//! - `start(o, e)` sets the position to (o, e), drops what is held at or below `o` or of another
//!   epoch than `e`, forgets the recent frames, then releases what follows `o` without a gap.
//! - Once live, `offer` of another epoch than the mirror's returns `EpochChanged` and changes
//!   nothing; one of the mirror's epoch returns `Taken`, is dropped at or below the released
//!   offset, else held, and releases what now follows the released offset without a gap.
//! - `reset(o, e)` drops everything held and the recent frames and sets the position to (o, e),
//!   releasing nothing.
//! - Every call's released messages equal the model's. On their own, they are consecutive from
//!   the released offset before the call + 1, so above it, and their frames carry the mirror's
//!   epoch and their own offset. No (epoch, offset) is released twice between two starts or
//!   resets.
//! - After every op: `position()` is the model's (released, epoch) (`None` before the first
//!   start or reset), `is_live()` matches, and `gap()` is `Some((released, first held))` exactly
//!   when the mirror is live and the first held offset is above `released + 1`.
//! - The recent frames are the last `size` released since the last start or reset (`size` is
//!   fixed per run, as `--history-size` is). `recent_since(s, now, ttl, max)` is
//!   `History::since` with top = the released offset: `Ahead` if `s > top`, `Ok([])` if
//!   `s == top`, `TooMany` if `top - s > max`, otherwise the frames `s+1..=top` exactly when
//!   the kept frames end at `top`, include `s+1`, and none was released `ttl` or more before
//!   `now`; else `Trimmed`. `recent_after(s, now, ttl)` lists the kept frames above `s` released
//!   less than `ttl` before `now`, oldest first.
//!
//! Offsets are offered in a small window around the released offset (below it, at it, just
//! above it, or a few ahead so gaps form), with one of 3 epochs. Start and reset positions are
//! near the current one or within 3 of `u64::MAX` (no `+ 1` may overflow). Time is a fake
//! `Instant` moved forward by the input.
//!
//! Input: structured (`arbitrary`): `Input { size, ops }`, at most 300 ops.

#![no_main]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use huddle::engine::history::Miss;
use huddle::engine::mirror::{Mirror, Offer};
use libfuzzer_sys::fuzz_target;

const EPOCHS: [&str; 3] = ["A", "B", "C"];

#[derive(Arbitrary, Debug)]
enum Op {
    /// Offset `released - 3 + delta % 12`.
    Offer {
        delta: u8,
        epoch: u8,
    },
    Start {
        at: At,
        epoch: u8,
    },
    Reset {
        at: At,
        epoch: u8,
    },
    Step {
        ms: u16,
    },
    RecentSince {
        back: u8,
        ahead: u8,
        ttl_ms: u16,
        max: u8,
    },
    RecentAfter {
        back: u8,
        ttl_ms: u16,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum At {
    /// `released - 4 + n % 16`.
    Near(u8),
    /// `u64::MAX - n % 4`.
    Far(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    size: u8,
    ops: Vec<Op>,
}

#[derive(Default)]
struct Model {
    epoch: Option<&'static str>,
    released: u64,
    /// offset → (epoch, frame).
    held: BTreeMap<u64, (&'static str, Bytes)>,
    /// Every (offset, release time, frame) since the last start or reset.
    session: Vec<(u64, Instant, Bytes)>,
}

impl Model {
    /// Releases what follows `released` without a gap.
    fn release(&mut self, now: Instant) -> Vec<(u64, Bytes)> {
        let mut out = Vec::new();
        while let Some(next) = self.released.checked_add(1) {
            let Some((_, frame)) = self.held.remove(&next) else {
                break;
            };
            self.released = next;
            self.session.push((next, now, frame.clone()));
            out.push((next, frame));
        }
        out
    }

    /// The frames the mirror keeps: the last `size` released since the last start or reset.
    fn kept(&self, size: usize) -> &[(u64, Instant, Bytes)] {
        &self.session[self.session.len().saturating_sub(size)..]
    }

    fn gap(&self) -> Option<(u64, u64)> {
        self.epoch.as_ref()?;
        let (&first, _) = self.held.first_key_value()?;
        (first > self.released + 1).then_some((self.released, first))
    }
}

fn frame(epoch: &str, offset: u64) -> Bytes {
    Bytes::from(format!("{epoch}:{offset}"))
}

fn aged(now: Instant, at: Instant, ttl: Duration) -> bool {
    now.saturating_duration_since(at) >= ttl
}

fn position(released: u64, at: At) -> u64 {
    match at {
        At::Near(n) => released.saturating_sub(4).saturating_add(u64::from(n % 16)),
        At::Far(n) => u64::MAX - u64::from(n % 4),
    }
}

/// Checks one call's released messages on their own, then against the model's.
fn check_out(
    step: usize,
    got: &[(u64, Bytes)],
    want: &[(u64, Bytes)],
    before: u64,
    epoch: Option<&'static str>,
    seen: &mut HashSet<(&'static str, u64)>,
) {
    for (i, (o, f)) in got.iter().enumerate() {
        assert_eq!(
            Some(*o),
            before.checked_add(i as u64 + 1),
            "step {step}: released {o} is not consecutive from {before} (all: {got:?})"
        );
        let epoch = epoch.unwrap_or_else(|| panic!("step {step}: released {o} before start"));
        assert_eq!(
            *f,
            frame(epoch, *o),
            "step {step}: released a frame of another epoch or offset at {o}"
        );
        assert!(
            seen.insert((epoch, *o)),
            "step {step}: released {epoch}:{o} twice"
        );
    }
    assert_eq!(got, want, "step {step}: released messages");
}

fuzz_target!(|input: Input| {
    let size = usize::from(input.size % 16);
    let t0 = Instant::now();
    let mut now = t0;
    let mut mirror = Mirror::new();
    let mut m = Model::default();
    // (epoch, offset) released since the last start or reset.
    let mut seen = HashSet::new();
    for (step, op) in input.ops.into_iter().take(300).enumerate() {
        match op {
            Op::Offer { delta, epoch } => {
                let epoch = EPOCHS[usize::from(epoch) % EPOCHS.len()];
                let offset = m
                    .released
                    .saturating_sub(3)
                    .saturating_add(u64::from(delta % 12));
                let f = frame(epoch, offset);
                let mut out = Vec::new();
                let got = mirror.offer(offset, epoch, f.clone(), now, size, &mut out);
                let before = m.released;
                let (want, want_out) = match m.epoch {
                    None => {
                        m.held.insert(offset, (epoch, f));
                        (Offer::Taken, Vec::new())
                    }
                    Some(e) if e != epoch => (Offer::EpochChanged, Vec::new()),
                    Some(_) => {
                        if offset > m.released {
                            m.held.insert(offset, (epoch, f));
                        }
                        (Offer::Taken, m.release(now))
                    }
                };
                assert_eq!(got, want, "step {step}: offer {epoch}:{offset}");
                check_out(step, &out, &want_out, before, m.epoch, &mut seen);
            }
            Op::Start { at, epoch } => {
                let epoch = EPOCHS[usize::from(epoch) % EPOCHS.len()];
                let offset = position(m.released, at);
                let mut out = Vec::new();
                mirror.start(offset, Arc::from(epoch), now, size, &mut out);
                m.released = offset;
                m.epoch = Some(epoch);
                m.held.retain(|&o, (e, _)| o > offset && *e == epoch);
                m.session.clear();
                seen.clear();
                let want_out = m.release(now);
                check_out(step, &out, &want_out, offset, Some(epoch), &mut seen);
            }
            Op::Reset { at, epoch } => {
                let epoch = EPOCHS[usize::from(epoch) % EPOCHS.len()];
                let offset = position(m.released, at);
                mirror.reset(offset, Arc::from(epoch));
                m.released = offset;
                m.epoch = Some(epoch);
                m.held.clear();
                m.session.clear();
                seen.clear();
            }
            Op::Step { ms } => now += Duration::from_millis(u64::from(ms % 1000)),
            Op::RecentSince {
                back,
                ahead,
                ttl_ms,
                max,
            } => {
                let top = m.released;
                let since = top
                    .saturating_add(u64::from(ahead % 2))
                    .saturating_sub(u64::from(back % 32));
                let ttl = Duration::from_millis(u64::from(ttl_ms % 2000) + 1);
                let max = usize::from(max % 40);
                let want = if since > top {
                    Err(Miss::Ahead)
                } else if since == top {
                    Ok(Vec::new())
                } else if top - since > max as u64 {
                    Err(Miss::TooMany)
                } else {
                    let kept = m.kept(size);
                    let wanted: Vec<_> = kept.iter().filter(|(o, _, _)| *o > since).collect();
                    let complete = kept.last().is_some_and(|(o, _, _)| *o == top)
                        && wanted.len() as u64 == top - since
                        && wanted.iter().all(|(_, at, _)| !aged(now, *at, ttl));
                    if complete {
                        Ok(wanted.iter().map(|(_, _, f)| f.clone()).collect())
                    } else {
                        Err(Miss::Trimmed)
                    }
                };
                assert_eq!(
                    mirror.recent_since(since, now, ttl, max),
                    want,
                    "step {step}: recent_since {since} top {top}"
                );
            }
            Op::RecentAfter { back, ttl_ms } => {
                let since = m.released.saturating_sub(u64::from(back % 32));
                let ttl = Duration::from_millis(u64::from(ttl_ms % 2000) + 1);
                let want: Vec<(u64, Bytes)> = m
                    .kept(size)
                    .iter()
                    .filter(|(o, at, _)| *o > since && !aged(now, *at, ttl))
                    .map(|(o, _, f)| (*o, f.clone()))
                    .collect();
                assert_eq!(
                    mirror.recent_after(since, now, ttl),
                    want,
                    "step {step}: recent_after {since}"
                );
            }
        }
        let want = m.epoch.map(|e| (m.released, e));
        assert_eq!(
            mirror.position().map(|(o, e)| (o, &**e)),
            want,
            "step {step}: position"
        );
        assert_eq!(mirror.is_live(), m.epoch.is_some(), "step {step}: is_live");
        assert_eq!(mirror.gap(), m.gap(), "step {step}: gap");
    }
});
