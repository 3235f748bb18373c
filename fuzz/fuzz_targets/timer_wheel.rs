//! Invariant: `timer::TimerWheel<u32>` under arbitrary arm / reset / cancel / advance sequences
//! (bounded time steps, time going backwards, deadlines in the past, before the wheel's start and
//! many rotations ahead, ids kept after they fire or are cancelled) behaves like a naive model:
//!
//! - a deadline becomes the tick `ceil((deadline - start) / tick)` (0 before start), `now` the
//!   tick `floor((now - start) / tick)`, and the wheel's time never goes backwards, so each
//!   `advance` fires exactly the live timers whose deadline tick is <= the largest now-tick seen;
//! - `reset` is true and `cancel` returns the value exactly for live ids; ids of fired or
//!   cancelled timers are stale forever (even once their slab key is reused) and change nothing;
//! - `len` is the number of live timers after every operation.

#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use huddle::timer::{TimerId, TimerWheel};
use libfuzzer_sys::fuzz_target;

/// Tick widths in nanoseconds: 1 ns makes every deadline land on a tick boundary, the others
/// exercise rounding; 1 ms is the production order of magnitude.
const TICKS: [u64; 6] = [1, 3, 10, 1_000, 7_919, 1_000_000];

#[derive(Arbitrary, Debug)]
enum Op {
    /// Deadline = now + offset nanoseconds (may be in the past or before start).
    Arm {
        offset: i32,
    },
    /// `which` picks any id ever issued (live or stale).
    Reset {
        which: u16,
        offset: i32,
    },
    Cancel {
        which: u16,
    },
    /// Time moves forward by `step` nanoseconds (scaled by `scale` ticks when set).
    Advance {
        step: u32,
        scale: bool,
    },
    /// `advance` with a `now` earlier than the current time (time is not moved back).
    AdvanceBack {
        back: u32,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    tick: u8,
    slots: u8,
    ops: Vec<Op>,
}

struct Model {
    tick: u64,
    /// Current time, nanoseconds since start.
    now: u64,
    /// Largest now-tick passed to `advance`, if any.
    seen: Option<u64>,
    /// id -> (value, deadline tick) of live timers.
    live: HashMap<TimerId, (u32, u64)>,
}

impl Model {
    fn deadline_tick(&self, offset: i128) -> u64 {
        if offset <= 0 {
            0
        } else {
            (offset as u64).div_ceil(self.tick)
        }
    }
}

fuzz_target!(|input: Input| {
    let tick_nanos = TICKS[usize::from(input.tick) % TICKS.len()];
    let start = Instant::now();
    let mut wheel: TimerWheel<u32> = TimerWheel::new(
        Duration::from_nanos(tick_nanos),
        usize::from(input.slots % 65),
        start,
    );
    let mut model = Model {
        tick: tick_nanos,
        now: 0,
        seen: None,
        live: HashMap::new(),
    };
    let mut ids: Vec<TimerId> = Vec::new();
    let mut next_value = 0u32;
    let mut expired = Vec::new();

    // The instant `offset` ns after start; before start when negative (clamped to what the
    // platform's Instant can represent, which the wheel treats as tick 0 either way).
    let at = |offset: i128| -> Instant {
        if offset >= 0 {
            start + Duration::from_nanos(offset as u64)
        } else {
            start
                .checked_sub(Duration::from_nanos(offset.unsigned_abs() as u64))
                .unwrap_or(start)
        }
    };

    for (step, op) in input.ops.iter().take(2_000).enumerate() {
        match *op {
            Op::Arm { offset } => {
                let off = i128::from(model.now) + i128::from(offset);
                let id = wheel.arm(at(off), next_value);
                assert!(
                    !model.live.contains_key(&id),
                    "step {step}: arm returned a live id"
                );
                model
                    .live
                    .insert(id, (next_value, model.deadline_tick(off)));
                ids.push(id);
                next_value += 1;
            }
            Op::Reset { which, offset } => {
                if ids.is_empty() {
                    continue;
                }
                let id = ids[usize::from(which) % ids.len()];
                let off = i128::from(model.now) + i128::from(offset);
                let ok = wheel.reset(id, at(off));
                let dt = model.deadline_tick(off);
                match model.live.get_mut(&id) {
                    Some(entry) => {
                        assert!(ok, "step {step}: reset of a live id failed");
                        entry.1 = dt;
                    }
                    None => assert!(!ok, "step {step}: reset of a stale id succeeded"),
                }
            }
            Op::Cancel { which } => {
                if ids.is_empty() {
                    continue;
                }
                let id = ids[usize::from(which) % ids.len()];
                let got = wheel.cancel(id);
                let want = model.live.remove(&id).map(|(v, _)| v);
                assert_eq!(got, want, "step {step}: cancel");
            }
            Op::Advance { step: s, scale } => {
                let delta = if scale {
                    u64::from(s % 4096) * tick_nanos
                } else {
                    u64::from(s)
                };
                model.now += delta;
                let (now, now_tick) = (at(i128::from(model.now)), model.now / tick_nanos);
                fire(&mut wheel, &mut model, &mut expired, now, now_tick, step);
            }
            Op::AdvanceBack { back } => {
                let off = i128::from(model.now) - i128::from(back);
                let now_tick = if off <= 0 { 0 } else { off as u64 / tick_nanos };
                fire(
                    &mut wheel,
                    &mut model,
                    &mut expired,
                    at(off),
                    now_tick,
                    step,
                );
            }
        }
        assert_eq!(wheel.len(), model.live.len(), "step {step}: len");
        assert_eq!(wheel.is_empty(), model.live.is_empty());
    }
});

fn fire(
    wheel: &mut TimerWheel<u32>,
    model: &mut Model,
    expired: &mut Vec<u32>,
    now: Instant,
    now_tick: u64,
    step: usize,
) {
    let horizon = model.seen.map_or(now_tick, |s| s.max(now_tick));
    model.seen = Some(horizon);
    expired.clear();
    wheel.advance(now, expired);
    expired.sort_unstable();
    let mut want: Vec<u32> = Vec::new();
    model.live.retain(|_, &mut (value, dt)| {
        let due = dt <= horizon;
        if due {
            want.push(value);
        }
        !due
    });
    want.sort_unstable();
    assert_eq!(
        *expired, want,
        "step {step}: fired set at now tick {now_tick} (horizon {horizon})"
    );
}
