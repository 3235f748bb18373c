//! Invariant: `engine::MemoryEngine` under arbitrary append / set_interest / time-step /
//! handle_timeout sequences (8 channel names, 8 shard ids on both sides of the 64-bit word
//! boundaries of `ShardSet`, `off` for shards and channels that are not there) agrees with a
//! model `HashMap<String, {offset, epoch, interest: BTreeSet<usize>, last_active}>` after every
//! operation. Time is a fake `Instant` (`start` + accumulated nanoseconds) that moves forward by
//! bounded steps, sometimes zero, never backwards (a shard's clock is monotonic).
//!
//! - `append(ch)` returns the previous offset + 1 (1 for a channel without state) and the
//!   epoch of the channel's state; the returned interest set is the model's. It stamps
//!   `last_active`.
//! - `set_interest(ch, shard, on)` returns the channel's current (offset, epoch), then adds or
//!   removes `shard` and stamps `last_active`. An `off` for a channel without state creates
//!   nothing and returns offset 0 at an epoch no channel state has ever had.
//! - A channel's epoch never changes while it has state. State created for a channel (first
//!   use, or use after it was freed) starts at offset 0 before the op and gets an epoch that
//!   differs from every epoch ever issued, to this or any other channel.
//! - Channels go away only in `handle_timeout(now)`, and then only if they have no interest
//!   and `last_active + idle_ttl <= now` (never early). After `handle_timeout(now)`, every
//!   channel with no interest and `last_active + idle_ttl + 2 * tick() <= now` is gone (the
//!   wheel rounds deadlines up and `now` down to whole ticks). A channel with interest is never
//!   freed. The return value is the number of channels freed.
//! - `position(ch)` is `Some` exactly for channels with state, with the model's (offset,
//!   epoch); `len()` and `is_empty()` match the model's count.
//!
//! `idle_ttl` is one of a few values: 1 ms, 10 ms and 35 ms (tick clamped to 10 ms, so the TTL
//! is less than, equal to, or not a multiple of a tick), 1 s (tick 125 ms) and 300 s, the
//! default (tick 1 s, 512 slots).
//! Steps are measured in the engine's ticks so eviction, re-arming after an append and wheel
//! wrap-around all happen within a run.
//!
//! Input: structured (`arbitrary`): `Input { ttl, ops }`, at most 1000 ops.

#![no_main]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use huddle::engine::{ChannelEngine, MemoryEngine};
use libfuzzer_sys::fuzz_target;

const NAMES: usize = 8;
/// Shard ids: packed ones, and ones in the second, third and last words of a `ShardSet`.
const SHARDS: [usize; 8] = [0, 1, 2, 3, 63, 64, 129, 1023];
const TTLS: [Duration; 5] = [
    Duration::from_millis(1),
    Duration::from_millis(10),
    Duration::from_millis(35),
    Duration::from_secs(1),
    Duration::from_secs(300),
];

#[derive(Arbitrary, Debug)]
enum Op {
    Append {
        ch: u8,
    },
    Interest {
        ch: u8,
        shard: u8,
        on: bool,
    },
    /// Time moves forward; `handle_timeout` runs at the new time when `timeout` is set.
    Advance {
        step: Step,
        timeout: bool,
    },
    /// `handle_timeout` at the current time (again, if it just ran).
    Timeout,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Step {
    Zero,
    /// Up to 64 µs: many ops within one tick.
    Nanos(u16),
    /// `whole % 8` ticks plus `frac / 65536` of a tick.
    Ticks {
        whole: u8,
        frac: u16,
    },
    /// Up to 256 ticks: long jumps, several wheel rotations.
    Far(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    ttl: u8,
    ops: Vec<Op>,
}

struct Chan {
    offset: u64,
    epoch: Arc<str>,
    interest: BTreeSet<usize>,
    /// Nanoseconds since start of the last append or set_interest.
    last_active: u64,
}

struct Model {
    channels: HashMap<String, Chan>,
    /// Every epoch any channel state ever had.
    epochs: HashSet<Arc<str>>,
}

impl Model {
    /// The state an op creates for `name` (it has none): offset 0 at the engine's new epoch.
    fn create(&mut self, name: &str, epoch: &Arc<str>, step: usize) -> &mut Chan {
        assert!(
            self.epochs.insert(epoch.clone()),
            "step {step}: {name} got a new state at an epoch issued before ({epoch})"
        );
        self.channels.entry(name.to_owned()).or_insert(Chan {
            offset: 0,
            epoch: epoch.clone(),
            interest: BTreeSet::new(),
            last_active: 0,
        })
    }
}

fn name(i: u8) -> String {
    format!("chan:{}", usize::from(i) % NAMES)
}

fn check(engine: &MemoryEngine, model: &Model, step: usize) {
    assert_eq!(engine.len(), model.channels.len(), "step {step}: len");
    assert_eq!(engine.is_empty(), model.channels.is_empty());
    for i in 0..NAMES as u8 {
        let n = name(i);
        let got = engine.position(&n).map(|p| (p.offset, p.epoch));
        let want = model.channels.get(&n).map(|c| (c.offset, c.epoch.clone()));
        assert_eq!(got, want, "step {step}: position of {n}");
    }
}

fn run(input: Input) {
    let ttl = TTLS[usize::from(input.ttl) % TTLS.len()];
    let start = Instant::now();
    let mut engine = MemoryEngine::new(ttl, start);
    let tick = engine.tick();
    let (ttl_ns, tick_ns) = (ttl.as_nanos() as u64, tick.as_nanos() as u64);
    assert!(
        tick >= Duration::from_millis(10),
        "tick {tick:?} below 10 ms"
    );
    let mut model = Model {
        channels: HashMap::new(),
        epochs: HashSet::new(),
    };
    // Nanoseconds since start.
    let mut now_ns = 0u64;

    for (step, op) in input.ops.into_iter().take(1_000).enumerate() {
        let now = start + Duration::from_nanos(now_ns);
        match op {
            Op::Append { ch } => {
                let n = name(ch);
                let (pos, shards) = engine.append(&Arc::from(n.as_str()), now);
                let contains: Vec<bool> = SHARDS.iter().map(|&s| shards.contains(s)).collect();
                let (len, shards): (usize, Vec<usize>) = (shards.len(), shards.iter().collect());
                let c = match model.channels.get_mut(&n) {
                    Some(c) => c,
                    None => model.create(&n, &pos.epoch, step),
                };
                c.offset += 1;
                c.last_active = now_ns;
                assert_eq!(pos.offset, c.offset, "step {step}: offset of append to {n}");
                assert_eq!(pos.epoch, c.epoch, "step {step}: epoch of append to {n}");
                assert!(
                    shards.iter().eq(c.interest.iter()),
                    "step {step}: interest of {n}: engine {shards:?}, model {:?}",
                    c.interest
                );
                assert_eq!(len, c.interest.len(), "step {step}: interest count of {n}");
                for (&s, has) in SHARDS.iter().zip(contains) {
                    assert_eq!(
                        has,
                        c.interest.contains(&s),
                        "step {step}: {n} contains {s}"
                    );
                }
            }
            Op::Interest { ch, shard, on } => {
                let (n, shard) = (name(ch), SHARDS[usize::from(shard) % SHARDS.len()]);
                let pos = engine.set_interest(&Arc::from(n.as_str()), shard, on, now);
                if !on && !model.channels.contains_key(&n) {
                    assert_eq!(pos.offset, 0, "step {step}: off for stateless {n}");
                    assert!(
                        !model.epochs.contains(&pos.epoch),
                        "step {step}: off for stateless {n} returned an old epoch"
                    );
                } else {
                    let c = match model.channels.get_mut(&n) {
                        Some(c) => c,
                        None => model.create(&n, &pos.epoch, step),
                    };
                    assert_eq!(
                        (pos.offset, &pos.epoch),
                        (c.offset, &c.epoch),
                        "step {step}: position returned by set_interest({n}, {shard}, {on})"
                    );
                    if on {
                        c.interest.insert(shard);
                    } else {
                        c.interest.remove(&shard);
                    }
                    c.last_active = now_ns;
                }
            }
            Op::Advance { step: s, timeout } => {
                now_ns += match s {
                    Step::Zero => 0,
                    Step::Nanos(n) => u64::from(n),
                    Step::Ticks { whole, frac } => {
                        u64::from(whole % 8) * tick_ns + u64::from(frac) * tick_ns / 65_536
                    }
                    Step::Far(n) => (u64::from(n) + 1) * tick_ns,
                };
                if timeout {
                    handle_timeout(
                        &mut engine,
                        &mut model,
                        now_ns,
                        start,
                        ttl_ns,
                        tick_ns,
                        step,
                    );
                }
            }
            Op::Timeout => handle_timeout(
                &mut engine,
                &mut model,
                now_ns,
                start,
                ttl_ns,
                tick_ns,
                step,
            ),
        }
        check(&engine, &model, step);
    }
}

fn handle_timeout(
    engine: &mut MemoryEngine,
    model: &mut Model,
    now_ns: u64,
    start: Instant,
    ttl_ns: u64,
    tick_ns: u64,
    step: usize,
) {
    let freed = engine.handle_timeout(start + Duration::from_nanos(now_ns));
    let mut gone = 0;
    model.channels.retain(|n, c| {
        let due = c.last_active + ttl_ns;
        if engine.position(n).is_none() {
            assert!(
                c.interest.is_empty(),
                "step {step}: {n} freed with interest {:?}",
                c.interest
            );
            assert!(
                due <= now_ns,
                "step {step}: {n} freed early: last active {} ns + ttl {ttl_ns} ns > now {now_ns} ns",
                c.last_active
            );
            gone += 1;
            false
        } else {
            assert!(
                !(c.interest.is_empty() && due + 2 * tick_ns <= now_ns),
                "step {step}: idle {n} not freed: last active {} ns + ttl {ttl_ns} ns + 2 ticks \
                 of {tick_ns} ns <= now {now_ns} ns",
                c.last_active
            );
            true
        }
    });
    assert_eq!(freed, gone, "step {step}: handle_timeout's count");
}

fuzz_target!(|input: Input| run(input));
