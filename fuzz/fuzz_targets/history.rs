//! Invariant: `engine::history::History` (a channel's ring of frames, PROTOCOL.md §10) under
//! arbitrary push / trim / time-step / since / after sequences behaves like a naive model: a
//! `Vec` of every (offset, time, frame) ever pushed, filtered on demand.
//!
//! - After `push(offset, …, size)`: the ring holds the last `size` consecutive pushes (a push
//!   whose offset does not follow the newest one starts it over), `len`, `bytes` and
//!   `first_offset` agree with the model.
//! - `trim(now, ttl)` drops exactly the front entries aged `ttl` or more (the ring is in push
//!   order, so only a prefix can go).
//! - `since(s, top, now, ttl, max)` is all or nothing: `Ahead` if `s > top`; `Ok([])` if
//!   `s == top`; `TooMany` if `top - s > max`; otherwise `Ok(frames s+1..=top)` exactly when the
//!   ring's newest offset is `top`, it holds every offset from `s+1`, and none of those is aged
//!   `ttl` or more; else `Trimmed`.
//! - `after(s, limit, now, ttl)` lists the held entries with offset > s and age < ttl, oldest
//!   first, at most `limit`.
//!
//! Input: structured (`arbitrary`): a list of at most 300 operations; offsets mostly follow on
//! (`Push { gap: 0 }`) and sometimes jump, times only move forward.

#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use huddle::engine::history::{History, Miss};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Push {
        gap: u8,
        len: u8,
        size: u8,
    },
    Trim {
        ttl_ms: u16,
    },
    Step {
        ms: u16,
    },
    Since {
        back: u8,
        ahead: u8,
        ttl_ms: u16,
        max: u8,
    },
    After {
        back: u8,
        limit: u8,
        ttl_ms: u16,
    },
}

/// Everything the ring should hold, in push order.
#[derive(Default)]
struct Model {
    items: Vec<(u64, Instant, Bytes)>,
}

fn aged(now: Instant, at: Instant, ttl: Duration) -> bool {
    now.saturating_duration_since(at) >= ttl
}

fuzz_target!(|ops: Vec<Op>| {
    let t0 = Instant::now();
    let mut now = t0;
    let mut h = History::default();
    let mut m = Model::default();
    let mut next = 1u64;
    for op in ops.into_iter().take(300) {
        match op {
            Op::Push { gap, len, size } => {
                let offset = if gap % 8 == 0 {
                    next
                } else {
                    next + u64::from(gap)
                };
                let frame = Bytes::from(vec![offset as u8; usize::from(len)]);
                let size = usize::from(size % 16);
                if m.items.last().is_some_and(|(o, _, _)| o + 1 != offset) {
                    m.items.clear();
                }
                if size > 0 {
                    m.items.push((offset, now, frame.clone()));
                    let excess = m.items.len().saturating_sub(size);
                    m.items.drain(..excess);
                }
                h.push(offset, frame, now, size);
                next = offset + 1;
            }
            Op::Trim { ttl_ms } => {
                let ttl = Duration::from_millis(u64::from(ttl_ms % 2000));
                h.trim(now, ttl);
                let keep = m.items.iter().position(|(_, at, _)| !aged(now, *at, ttl));
                m.items.drain(..keep.unwrap_or(m.items.len()));
            }
            Op::Step { ms } => now += Duration::from_millis(u64::from(ms % 1000)),
            Op::Since {
                back,
                ahead,
                ttl_ms,
                max,
            } => {
                let top = next - 1 + u64::from(ahead % 4 == 3);
                let since = (top + u64::from(ahead % 2)).saturating_sub(u64::from(back % 32));
                let ttl = Duration::from_millis(u64::from(ttl_ms % 2000) + 1);
                let max = usize::from(max % 40);
                let want = if since > top {
                    Err(Miss::Ahead)
                } else if since == top {
                    Ok(Vec::new())
                } else if top - since > max as u64 {
                    Err(Miss::TooMany)
                } else {
                    let wanted: Vec<_> = m.items.iter().filter(|(o, _, _)| *o > since).collect();
                    let complete = m.items.last().is_some_and(|(o, _, _)| *o == top)
                        && wanted.len() as u64 == top - since
                        && wanted.iter().all(|(_, at, _)| !aged(now, *at, ttl));
                    if complete {
                        Ok(wanted.iter().map(|(_, _, f)| f.clone()).collect())
                    } else {
                        Err(Miss::Trimmed)
                    }
                };
                assert_eq!(
                    h.since(since, top, now, ttl, max),
                    want,
                    "since {since} top {top}"
                );
            }
            Op::After {
                back,
                limit,
                ttl_ms,
            } => {
                let since = next.saturating_sub(u64::from(back % 32));
                let ttl = Duration::from_millis(u64::from(ttl_ms % 2000) + 1);
                let limit = usize::from(limit % 20);
                let want: Vec<(u64, Bytes)> = m
                    .items
                    .iter()
                    .filter(|(o, at, _)| *o > since && !aged(now, *at, ttl))
                    .take(limit)
                    .map(|(o, _, f)| (*o, f.clone()))
                    .collect();
                assert_eq!(h.after(since, limit, now, ttl), want);
            }
        }
        assert_eq!(h.len(), m.items.len());
        assert_eq!(h.is_empty(), m.items.is_empty());
        assert_eq!(
            h.bytes(),
            m.items.iter().map(|(_, _, f)| f.len()).sum::<usize>()
        );
        assert_eq!(h.first_offset(), m.items.first().map(|(o, _, _)| *o));
    }
});
