//! Timer wheel with 100,000 live timers (one per connection): arm+cancel, reset, and an
//! advance of one tick.
//!
//! `cargo bench --bench timer`

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use huddle::timer::TimerWheel;

const TIMERS: u64 = 100_000;
const TICK: Duration = Duration::from_millis(100);

fn bench(c: &mut Criterion) {
    let start = Instant::now();
    let mut wheel = TimerWheel::new(TICK, 1024, start);
    let ids: Vec<_> = (0..TIMERS)
        .map(|i| wheel.arm(start + Duration::from_millis(60_000 + i % 30_000), i))
        .collect();
    let mut g = c.benchmark_group("timer_wheel_100k");
    g.bench_function("arm_then_cancel", |b| {
        b.iter(|| {
            let id = wheel.arm(start + Duration::from_secs(61), u64::MAX);
            black_box(wheel.cancel(id))
        })
    });
    g.bench_function("reset", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % ids.len();
            black_box(wheel.reset(
                ids[i],
                start + Duration::from_millis(60_000 + (i as u64 * 7) % 30_000),
            ))
        })
    });
    g.bench_function("advance_one_tick_nothing_due", |b| {
        let mut expired = Vec::new();
        let mut now = start;
        b.iter(|| {
            now += TICK;
            if now > start + Duration::from_secs(50) {
                now = start;
            }
            wheel.advance(now, &mut expired);
            black_box(expired.len())
        })
    });
    g.finish();
    let mut expired = Vec::new();
    c.bench_function("timer_wheel_100k/advance_expiring_all", |b| {
        b.iter_batched(
            || {
                let mut w = TimerWheel::new(TICK, 1024, start);
                for i in 0..TIMERS {
                    w.arm(start + Duration::from_millis(1000 + i % 100), i);
                }
                w
            },
            |mut w| {
                expired.clear();
                w.advance(start + Duration::from_secs(2), &mut expired);
                black_box(expired.len())
            },
            criterion::BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
