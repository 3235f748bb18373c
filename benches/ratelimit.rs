//! `--conn-rate` limiter: one `check` (one upgrade) with 100 and with 100,000 distinct source
//! addresses cycling, on a fake clock advancing 10 µs per check (10 upgrades/min per address).
//!
//! `cargo bench --bench ratelimit`

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use huddle::config::Rate;
use huddle::ratelimit::ConnRateLimiter;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("conn_rate_check");
    for addrs in [100u32, 100_000] {
        let limiter = ConnRateLimiter::new(Rate {
            count: 10,
            per: Duration::from_secs(60),
        });
        let ips: Vec<IpAddr> = (0..addrs)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)))
            .collect();
        let t0 = Instant::now();
        let mut now = t0;
        // Warm up: every address has a bucket before measuring.
        for ip in &ips {
            let _ = limiter.check(*ip, now);
        }
        let mut i = 0usize;
        g.bench_function(BenchmarkId::from_parameter(format!("{addrs}_addrs")), |b| {
            b.iter(|| {
                i = (i + 1) % ips.len();
                now += Duration::from_micros(10);
                black_box(limiter.check(ips[i], now)).is_ok()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
