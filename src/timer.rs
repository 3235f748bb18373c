//! Hashed timer wheel, one per shard; drives heartbeat expiry.
//!
//! Sans-IO: the wheel never reads the clock. Callers pass `now` to [`TimerWheel::advance`] and
//! absolute deadlines to [`TimerWheel::arm`] / [`TimerWheel::reset`].
//!
//! # Layout
//!
//! Timers live in a [`Slab`] of nodes. Each of the `slots` (a power of two) has the head of an
//! intrusive doubly linked list threaded through the slab, so arm, reset and cancel unlink and
//! link in O(1) without scanning. One extra list, the *overdue* list, holds timers armed with a
//! deadline tick that has already been processed.
//!
//! # Invariants
//!
//! - Time is measured in whole ticks since `start`. A deadline is rounded **up**
//!   (`ceil((deadline - start) / tick)`) and `now` is rounded **down**, so a timer with deadline
//!   tick `d` fires at the first `advance` whose now-tick is `>= d`: never before its deadline,
//!   and at most one tick after it when `advance` is called every tick.
//! - `cursor` is the first tick not yet processed. Between calls, every live timer with
//!   `deadline_tick >= cursor` is in the list of slot `deadline_tick & mask`, and every live
//!   timer with `deadline_tick < cursor` is in the overdue list (emptied by every `advance`).
//!   Timers more than one rotation away simply stay in their slot and are skipped, by comparing
//!   their tick, until a visit finds them due.
//! - `generations[k]` is the generation of the timer at slab key `k` and is bumped whenever
//!   that timer is removed (fired or cancelled). A [`TimerId`] is live only if its slab key is
//!   occupied and its generation matches, so a stale id never touches a later timer that reuses
//!   the key (until the same key has been reused 2^32 times while the stale id is held).
//! - `now` never goes backwards for the wheel: an `advance` with an earlier `now` than a
//!   previous one only fires overdue timers.

use slab::Slab;
use std::time::{Duration, Instant};

/// End-of-list marker for the intrusive lists.
const NIL: u32 = u32::MAX;
/// Upper bound on the slot count so the head array stays sane (4 MiB of heads).
const MAX_SLOTS: usize = 1 << 20;
/// Largest representable tick; keeps `cursor = now_tick + 1` from overflowing.
const MAX_TICK: u64 = u64::MAX / 2;

/// Handle to an armed timer. Carries a generation so a stale handle (timer already fired or
/// cancelled, slot reused) is detected and ignored rather than touching another timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

/// One armed timer, linked into exactly one list (a slot's or the overdue list).
#[derive(Debug)]
struct Node<T> {
    value: T,
    deadline_tick: u64,
    list: u32,
    prev: u32,
    next: u32,
}

/// Hashed timer wheel with O(1) arm/reset/cancel and advance cost proportional to slots passed.
#[derive(Debug)]
pub struct TimerWheel<T> {
    nodes: Slab<Node<T>>,
    generations: Vec<u32>,
    /// List heads: `slots` wheel slots followed by the overdue list.
    heads: Box<[u32]>,
    mask: u64,
    tick: Duration,
    tick_nanos: u128,
    start: Instant,
    cursor: u64,
    /// Slot lists walked by `advance`, to test that a long jump visits each slot once.
    #[cfg(test)]
    slot_visits: usize,
}

impl<T> TimerWheel<T> {
    /// `tick`: slot width; `slots`: rounded up to a power of two; `start`: time of tick 0.
    ///
    /// A zero `tick` is treated as 1ns; `slots` is clamped to `1..=2^20`.
    pub fn new(tick: Duration, slots: usize, start: Instant) -> Self {
        let tick = tick.max(Duration::from_nanos(1));
        let slots = slots.clamp(1, MAX_SLOTS).next_power_of_two();
        Self {
            nodes: Slab::new(),
            generations: Vec::new(),
            heads: vec![NIL; slots + 1].into_boxed_slice(),
            mask: slots as u64 - 1,
            tick,
            tick_nanos: tick.as_nanos(),
            start,
            cursor: 0,
            #[cfg(test)]
            slot_visits: 0,
        }
    }

    /// O(1). The timer fires at the first `advance(now)` with now >= deadline rounded up to a
    /// whole tick: never before the deadline, and no later than one tick after it when advance
    /// is called every tick.
    ///
    /// # Panics
    ///
    /// Only if `u32::MAX` timers are live at once (memory runs out long before).
    pub fn arm(&mut self, deadline: Instant, value: T) -> TimerId {
        let deadline_tick = self.ticks_ceil(deadline);
        let list = self.list_for(deadline_tick);
        let key = self.nodes.insert(Node {
            value,
            deadline_tick,
            list,
            prev: NIL,
            next: NIL,
        });
        let index = u32::try_from(key)
            .ok()
            .filter(|&i| i != NIL)
            .expect("more than u32::MAX - 1 live timers");
        if self.generations.len() <= key {
            self.generations.resize(key + 1, 0);
        }
        self.link(index, list);
        TimerId {
            index,
            generation: self.generations[key],
        }
    }

    /// O(1). Moves a live timer to a new deadline; false if the id is stale.
    pub fn reset(&mut self, id: TimerId, deadline: Instant) -> bool {
        if !self.is_live(id) {
            return false;
        }
        self.unlink(id.index);
        let deadline_tick = self.ticks_ceil(deadline);
        let list = self.list_for(deadline_tick);
        self.nodes[id.index as usize].deadline_tick = deadline_tick;
        self.link(id.index, list);
        true
    }

    /// O(1). Removes a live timer and returns its value; None if stale.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        self.is_live(id).then(|| self.remove(id.index))
    }

    /// Pushes every timer due at `now` into `expired` (in deadline order is NOT required) and
    /// removes them. Cost is proportional to the slots passed plus timers due (plus timers
    /// that are in a passed slot but belong to a later rotation), never to all timers.
    pub fn advance(&mut self, now: Instant, expired: &mut Vec<T>) {
        let now_tick = self.ticks_floor(now);
        let overdue = self.heads.len() - 1;
        self.drain(overdue, u64::MAX, expired);
        if now_tick < self.cursor {
            return;
        }
        if now_tick - self.cursor >= self.mask {
            // A full rotation or more has elapsed: every slot is passed, visit each once.
            for slot in 0..overdue {
                self.drain(slot, now_tick, expired);
            }
        } else {
            for tick in self.cursor..=now_tick {
                self.drain((tick & self.mask) as usize, now_tick, expired);
            }
        }
        self.cursor = now_tick + 1;
    }

    /// Number of live timers.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Slot width, the wheel's resolution.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// Whole ticks from `start` to `t`, rounded up (deadlines must never fire early).
    fn ticks_ceil(&self, t: Instant) -> u64 {
        let nanos = t.saturating_duration_since(self.start).as_nanos();
        Self::clamp_tick(nanos.div_ceil(self.tick_nanos))
    }

    /// Whole ticks from `start` to `t`, rounded down (only completed ticks are processed).
    fn ticks_floor(&self, t: Instant) -> u64 {
        let nanos = t.saturating_duration_since(self.start).as_nanos();
        Self::clamp_tick(nanos / self.tick_nanos)
    }

    fn clamp_tick(ticks: u128) -> u64 {
        u64::try_from(ticks).map_or(MAX_TICK, |t| t.min(MAX_TICK))
    }

    /// List a timer with this deadline tick belongs in (see the module invariants).
    fn list_for(&self, deadline_tick: u64) -> u32 {
        let list = if deadline_tick < self.cursor {
            self.heads.len() - 1
        } else {
            (deadline_tick & self.mask) as usize
        };
        list as u32
    }

    fn is_live(&self, id: TimerId) -> bool {
        let key = id.index as usize;
        self.generations.get(key) == Some(&id.generation) && self.nodes.contains(key)
    }

    /// Pushes node `index` (currently unlinked) onto the front of `list`.
    fn link(&mut self, index: u32, list: u32) {
        let head = self.heads[list as usize];
        let node = &mut self.nodes[index as usize];
        node.list = list;
        node.prev = NIL;
        node.next = head;
        if head != NIL {
            self.nodes[head as usize].prev = index;
        }
        self.heads[list as usize] = index;
    }

    /// Detaches node `index` from its list.
    fn unlink(&mut self, index: u32) {
        let node = &self.nodes[index as usize];
        let (prev, next, list) = (node.prev, node.next, node.list);
        if prev == NIL {
            self.heads[list as usize] = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
    }

    /// Unlinks and frees node `index`, retiring its generation so old ids go stale.
    fn remove(&mut self, index: u32) -> T {
        self.unlink(index);
        let key = index as usize;
        self.generations[key] = self.generations[key].wrapping_add(1);
        self.nodes.remove(key).value
    }

    /// Fires every timer in `list` whose deadline tick is `<= now_tick`; keeps the rest.
    fn drain(&mut self, list: usize, now_tick: u64, expired: &mut Vec<T>) {
        #[cfg(test)]
        {
            self.slot_visits += 1;
        }
        let mut cursor = self.heads[list];
        while cursor != NIL {
            let node = &self.nodes[cursor as usize];
            let (index, due) = (cursor, node.deadline_tick <= now_tick);
            cursor = node.next;
            if due {
                expired.push(self.remove(index));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    use crate::test_rng::Lcg;

    /// The model's deadline tick: `ceil((deadline - start) / tick)`, with nanosecond offsets.
    fn model_tick(offset_nanos: u64, tick: Duration) -> u64 {
        offset_nanos.div_ceil(tick.as_nanos() as u64)
    }

    fn fire<T>(wheel: &mut TimerWheel<T>, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        wheel.advance(now, &mut out);
        out
    }

    fn sorted(mut v: Vec<u64>) -> Vec<u64> {
        v.sort_unstable();
        v
    }

    #[test]
    fn fires_not_before_deadline_and_within_one_tick() {
        let start = Instant::now();
        let mut wheel = TimerWheel::new(10 * MS, 8, start);
        wheel.arm(start + 25 * MS, "a");
        assert!(fire(&mut wheel, start + 20 * MS).is_empty());
        assert!(
            fire(&mut wheel, start + 25 * MS).is_empty(),
            "25ms is mid-tick 2"
        );
        assert!(fire(&mut wheel, start + 29 * MS).is_empty());
        assert_eq!(fire(&mut wheel, start + 30 * MS), vec!["a"]);
        assert!(wheel.is_empty());

        // Sub-tick offsets, advancing once per tick: fire time is in [deadline, deadline + tick).
        let tick = 10 * MS;
        let mut wheel = TimerWheel::new(tick, 4, start);
        let deadlines: Vec<Duration> = (0..200).map(|i| Duration::from_micros(i * 1_337)).collect();
        for (i, d) in deadlines.iter().enumerate() {
            wheel.arm(start + *d, i);
        }
        for k in 0..=30u32 {
            let now = start + tick * k;
            for i in fire(&mut wheel, now) {
                let deadline = start + deadlines[i];
                assert!(now >= deadline, "timer {i} fired early");
                assert!(
                    now - deadline < tick,
                    "timer {i} fired more than a tick late"
                );
            }
        }
        assert!(wheel.is_empty());
    }

    #[test]
    fn deadline_on_tick_boundary_and_at_start() {
        let start = Instant::now();
        let mut wheel = TimerWheel::new(MS, 8, start);
        wheel.arm(start + 3 * MS, 3);
        wheel.arm(start, 0);
        wheel.arm(start - 5 * MS, -5);
        assert_eq!(sorted_i(fire(&mut wheel, start)), vec![-5, 0]);
        assert!(fire(&mut wheel, start + 2 * MS).is_empty());
        assert_eq!(fire(&mut wheel, start + 3 * MS), vec![3]);
    }

    fn sorted_i(mut v: Vec<i32>) -> Vec<i32> {
        v.sort_unstable();
        v
    }

    #[test]
    fn past_deadline_fires_at_next_advance() {
        let start = Instant::now();
        let mut wheel = TimerWheel::new(MS, 8, start);
        let now = start + 10 * MS;
        assert!(fire(&mut wheel, now).is_empty());
        wheel.arm(start + 2 * MS, "late");
        wheel.arm(now, "now");
        // Same `now` again: both deadlines are <= now.
        assert_eq!(fire(&mut wheel, now).len(), 2);
        // Time going backwards is harmless.
        wheel.arm(start + 20 * MS, "future");
        assert!(fire(&mut wheel, start).is_empty());
        assert_eq!(fire(&mut wheel, start + 20 * MS), vec!["future"]);
    }

    #[test]
    fn reset_extends_and_shortens() {
        let start = Instant::now();
        let mut wheel = TimerWheel::new(MS, 16, start);
        let a = wheel.arm(start + 5 * MS, "a");
        let b = wheel.arm(start + 50 * MS, "b");
        assert!(wheel.reset(a, start + 40 * MS), "extend");
        assert!(wheel.reset(b, start + 3 * MS), "shorten");
        assert!(fire(&mut wheel, start + 2 * MS).is_empty());
        assert_eq!(fire(&mut wheel, start + 3 * MS), vec!["b"]);
        assert!(
            fire(&mut wheel, start + 39 * MS).is_empty(),
            "a no longer at 5ms"
        );
        assert_eq!(fire(&mut wheel, start + 40 * MS), vec!["a"]);

        // Resetting into the past fires at the next advance.
        let c = wheel.arm(start + 100 * MS, "c");
        assert!(wheel.reset(c, start));
        assert_eq!(fire(&mut wheel, start + 40 * MS), vec!["c"]);
    }

    #[test]
    fn cancel_removes_timer() {
        let start = Instant::now();
        let mut wheel = TimerWheel::new(MS, 4, start);
        let a = wheel.arm(start + 2 * MS, 1);
        let b = wheel.arm(start + 2 * MS, 2);
        let c = wheel.arm(start + 2 * MS, 3);
        assert_eq!(wheel.len(), 3);
        // Cancel the middle of a slot's list, then its head.
        assert_eq!(wheel.cancel(b), Some(2));
        assert_eq!(wheel.cancel(c), Some(3));
        assert_eq!(wheel.cancel(c), None);
        assert_eq!(wheel.len(), 1);
        assert_eq!(fire(&mut wheel, start + 10 * MS), vec![1]);
        assert_eq!(wheel.cancel(a), None);
        assert!(wheel.is_empty());
    }

    #[test]
    fn stale_ids_are_rejected_after_slot_reuse() {
        let start = Instant::now();
        let mut wheel = TimerWheel::new(MS, 4, start);
        let a = wheel.arm(start + MS, "a");
        assert_eq!(wheel.cancel(a), Some("a"));
        let b = wheel.arm(start + 2 * MS, "b");
        assert_eq!(a.index, b.index, "slab key reused");
        assert_ne!(a, b);
        assert_eq!(wheel.cancel(a), None);
        assert!(!wheel.reset(a, start + 100 * MS));

        // After firing, b's id is stale too, even once c takes its key.
        assert_eq!(fire(&mut wheel, start + 2 * MS), vec!["b"]);
        let c = wheel.arm(start + 3 * MS, "c");
        assert_eq!(b.index, c.index);
        assert!(!wheel.reset(b, start + 100 * MS));
        assert_eq!(wheel.cancel(b), None);
        assert_eq!(wheel.cancel(a), None);
        assert_eq!(fire(&mut wheel, start + 3 * MS), vec!["c"], "c untouched");

        // An id from another wheel (key never used here) is ignored as well.
        let mut other = TimerWheel::new(MS, 4, start);
        for _ in 0..10 {
            other.arm(start, ());
        }
        let foreign = other.arm(start, ());
        assert_eq!(wheel.cancel(foreign), None);
        assert!(!wheel.reset(foreign, start));
    }

    #[test]
    fn deadlines_beyond_one_rotation() {
        let start = Instant::now();
        let mut wheel = TimerWheel::new(MS, 4, start);
        wheel.arm(start + 10 * MS, 10);
        wheel.arm(start + 2 * MS, 2);
        wheel.arm(start + 6 * MS, 6);
        wheel.arm(start + 1_000 * MS, 1_000);
        let mut fired_at = Vec::new();
        for k in 0..=1_000u32 {
            for v in fire(&mut wheel, start + MS * k) {
                fired_at.push((v, k));
            }
        }
        assert_eq!(fired_at, vec![(2, 2), (6, 6), (10, 10), (1_000, 1_000)]);
    }

    #[test]
    fn huge_jump_visits_each_slot_once() {
        let start = Instant::now();
        let mut wheel = TimerWheel::new(MS, 16, start);
        for i in 0..1_000u32 {
            wheel.arm(start + MS * (i % 200), i);
        }
        let day = Duration::from_secs(86_400);
        wheel.slot_visits = 0;
        let fired = fire(&mut wheel, start + day);
        assert_eq!(fired.len(), 1_000);
        assert!(wheel.is_empty());
        assert_eq!(wheel.slot_visits, 16 + 1, "16 slots plus the overdue list");

        // The wheel keeps working from the new position.
        wheel.arm(start + day + 5 * MS, 7);
        wheel.arm(start + day - 5 * MS, 8);
        assert_eq!(fire(&mut wheel, start + day), vec![8]);
        assert!(fire(&mut wheel, start + day + 4 * MS).is_empty());
        assert_eq!(fire(&mut wheel, start + day + 5 * MS), vec![7]);

        // A jump past the representable range saturates instead of overflowing.
        let mut tiny = TimerWheel::new(Duration::from_nanos(1), 8, start);
        tiny.arm(start + day, 1);
        // ~400 years of 1ns ticks exceeds MAX_TICK.
        let far = start + Duration::from_secs(400 * 365 * 86_400);
        assert_eq!(fire(&mut tiny, far), vec![1]);
        tiny.arm(far, 2);
        assert_eq!(fire(&mut tiny, far), vec![2]);
    }

    #[test]
    fn degenerate_parameters_do_not_panic() {
        let start = Instant::now();
        let mut wheel = TimerWheel::new(Duration::ZERO, 0, start);
        assert_eq!(wheel.tick(), Duration::from_nanos(1));
        wheel.arm(start + Duration::from_nanos(3), 1);
        assert!(fire(&mut wheel, start + Duration::from_nanos(2)).is_empty());
        assert_eq!(fire(&mut wheel, start + Duration::from_nanos(3)), vec![1]);
        let wheel: TimerWheel<()> = TimerWheel::new(MS, 5, start);
        assert_eq!(wheel.heads.len(), 8 + 1, "5 slots round up to 8");
    }

    /// 100k timers with pseudo-random deadlines, advanced in small irregular steps; each step
    /// must fire exactly the timers whose deadline tick is <= the now tick.
    #[test]
    fn matches_model_for_100k_timers() {
        let tick = MS;
        let tick_nanos = tick.as_nanos() as u64;
        let start = Instant::now();
        let mut wheel = TimerWheel::new(tick, 256, start);
        let mut rng = Lcg(7);
        let mut model: Vec<(u64, u64)> = Vec::with_capacity(100_000);
        for value in 0..100_000u64 {
            // Up to ~4 rotations ahead, at nanosecond resolution.
            let offset = rng.below(1_000 * tick_nanos);
            wheel.arm(start + Duration::from_nanos(offset), value);
            model.push((model_tick(offset, tick), value));
        }
        model.sort_unstable();
        assert_eq!(wheel.len(), 100_000);

        let mut now_nanos = 0u64;
        let mut next = 0;
        let mut expired = Vec::new();
        while next < model.len() {
            now_nanos += rng.below(3 * tick_nanos);
            let now_tick = now_nanos / tick_nanos;
            expired.clear();
            wheel.advance(start + Duration::from_nanos(now_nanos), &mut expired);
            let end = next + model[next..].partition_point(|&(t, _)| t <= now_tick);
            let want = sorted(model[next..end].iter().map(|&(_, v)| v).collect());
            assert_eq!(sorted(expired.clone()), want, "at now_tick {now_tick}");
            next = end;
            assert_eq!(wheel.len(), model.len() - next);
        }
        assert!(wheel.is_empty());
    }

    /// Random interleavings of arm / reset / cancel / advance (and stale-id use) vs a model.
    #[test]
    fn matches_model_for_random_interleavings() {
        let tick = MS;
        let tick_nanos = tick.as_nanos() as u64;
        let start = Instant::now();
        let mut wheel = TimerWheel::new(tick, 8, start);
        let mut rng = Lcg(0xdead_beef);
        // (value, id, deadline tick) of every live timer.
        let mut live: Vec<(u64, TimerId, u64)> = Vec::new();
        let mut dead: Vec<TimerId> = Vec::new();
        let mut now_nanos = 0u64;
        let mut next_value = 0u64;
        let mut expired = Vec::new();

        // A deadline from a few ticks in the past to ~5 rotations ahead (or before `start`).
        let pick_deadline = |rng: &mut Lcg, now_nanos: u64| -> (Instant, u64) {
            let ahead = rng.below(45 * tick_nanos);
            let offset = (now_nanos + ahead).saturating_sub(5 * tick_nanos);
            (
                start + Duration::from_nanos(offset),
                model_tick(offset, tick),
            )
        };

        for step in 0..40_000 {
            match rng.below(100) {
                0..=34 => {
                    let (deadline, dt) = pick_deadline(&mut rng, now_nanos);
                    let id = wheel.arm(deadline, next_value);
                    live.push((next_value, id, dt));
                    next_value += 1;
                }
                35..=54 if !live.is_empty() => {
                    let i = rng.below(live.len() as u64) as usize;
                    let (deadline, dt) = pick_deadline(&mut rng, now_nanos);
                    assert!(wheel.reset(live[i].1, deadline));
                    live[i].2 = dt;
                }
                55..=69 if !live.is_empty() => {
                    let i = rng.below(live.len() as u64) as usize;
                    let (value, id, _) = live.swap_remove(i);
                    assert_eq!(wheel.cancel(id), Some(value));
                    dead.push(id);
                }
                70..=79 if !dead.is_empty() => {
                    let id = dead[rng.below(dead.len() as u64) as usize];
                    if rng.below(2) == 0 {
                        assert_eq!(wheel.cancel(id), None, "stale cancel at step {step}");
                    } else {
                        let (deadline, _) = pick_deadline(&mut rng, now_nanos);
                        assert!(!wheel.reset(id, deadline), "stale reset at step {step}");
                    }
                }
                _ => {
                    now_nanos += if rng.below(50) == 0 {
                        rng.below(200 * tick_nanos)
                    } else {
                        rng.below(3 * tick_nanos)
                    };
                    let now_tick = now_nanos / tick_nanos;
                    expired.clear();
                    wheel.advance(start + Duration::from_nanos(now_nanos), &mut expired);
                    let mut want = Vec::new();
                    live.retain(|&(value, id, dt)| {
                        let due = dt <= now_tick;
                        if due {
                            want.push(value);
                            dead.push(id);
                        }
                        !due
                    });
                    assert_eq!(sorted(expired.clone()), sorted(want), "step {step}");
                }
            }
            assert_eq!(wheel.len(), live.len(), "len at step {step}");
        }
    }
}
