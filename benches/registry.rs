//! Channel registry: subscribe, unsubscribe and iterating a channel's subscribers, at
//! 10,000 connections spread over 1,000 channels (10 subscriptions each); plus fan-out over a
//! sparse channel whose one member has slab key 1,000,000 (a bitset would scan 15,625 words);
//! plus a shard's channel snapshot (what `/api/stats` and the dashboard's channel table ask
//! every shard for) at 50,000 channels: names shared (`iter_shared`) against names copied, as
//! the snapshot did before.
//!
//! `cargo bench --bench registry`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use huddle::registry::Registry;

const CONNS: usize = 10_000;
const CHANNELS: usize = 1_000;
const PER_CONN: usize = 10;

fn names() -> Vec<String> {
    (0..CHANNELS).map(|i| format!("odds_{i}")).collect()
}

fn populated(names: &[String]) -> Registry {
    let mut r = Registry::new();
    for key in 0..CONNS {
        for j in 0..PER_CONN {
            r.subscribe(&names[(key * 7 + j * 101) % CHANNELS], key);
        }
    }
    r
}

fn bench(c: &mut Criterion) {
    let names = names();
    let mut r = populated(&names);
    let mut g = c.benchmark_group("registry_10k_conns_1k_channels");
    g.bench_function("subscribe_then_unsubscribe", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % CHANNELS;
            let (id, added) = r.subscribe(&names[i], CONNS + 1);
            debug_assert!(added);
            black_box(r.unsubscribe(id, CONNS + 1))
        })
    });
    g.bench_function("lookup", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % CHANNELS;
            black_box(r.lookup(&names[i]))
        })
    });
    let busiest = r.lookup(&names[0]).expect("channel");
    let members = r.subscriber_count(busiest);
    g.bench_function(format!("iterate_{members}_subscribers"), |b| {
        b.iter(|| {
            black_box(
                r.members(busiest)
                    .map_or(0, |m| m.iter_ones().sum::<usize>()),
            )
        })
    });
    let all_ids: Vec<_> = (0..PER_CONN)
        .map(|j| r.lookup(&names[(j * 101) % CHANNELS]).expect("channel"))
        .collect();
    g.bench_function("remove_connection_with_10_channels", |b| {
        b.iter(|| {
            r.remove_connection(0, &all_ids);
            for j in 0..PER_CONN {
                r.subscribe(&names[(j * 101) % CHANNELS], 0);
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("registry_sparse_channel");
    let mut sparse = Registry::new();
    let (one, _) = sparse.subscribe("lonely", 1_000_000);
    g.bench_function("iterate_1_subscriber_with_key_1m", |b| {
        b.iter(|| {
            black_box(
                sparse
                    .members(black_box(one))
                    .map_or(0, |m| m.iter_ones().sum::<usize>()),
            )
        })
    });
    g.bench_function("subscribe_then_unsubscribe_key_1m", |b| {
        b.iter(|| {
            let (id, _) = sparse.subscribe("other", 1_000_001);
            black_box(sparse.unsubscribe(id, 1_000_001))
        })
    });
    g.finish();
}

/// The shard's share of a channel snapshot, 50,000 channels of 2 subscribers each.
fn snapshot(c: &mut Criterion) {
    const MANY: usize = 50_000;
    let mut r = Registry::new();
    for i in 0..MANY {
        let name = format!("c{}_{}", i / 250, i % 250);
        r.subscribe(&name, 2 * i);
        r.subscribe(&name, 2 * i + 1);
    }
    let mut g = c.benchmark_group("registry_snapshot_50k_channels");
    g.sample_size(20);
    g.bench_function("names_shared", |b| {
        b.iter(|| black_box(r.iter_shared().collect::<Vec<_>>()))
    });
    g.bench_function("names_copied", |b| {
        b.iter(|| {
            black_box(
                r.iter()
                    .map(|(name, n)| (Box::<str>::from(name), n))
                    .collect::<Vec<_>>(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench, snapshot);
criterion_main!(benches);
