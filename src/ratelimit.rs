//! Per-IP token bucket for WebSocket upgrades (`--conn-rate`, PROTOCOL.md §9 [core]).
//!
//! Time is an argument ([`ConnRateLimiter::check`] takes `now`), so tests drive a fake clock.
//! One limiter is shared by all shards, so a client can't dodge the limit by landing on another
//! shard; [`ConnRateLimiter::check`] takes `&self` and locks only one of [`STRIPES`] stripes.
//!
//! # Invariants
//!
//! - **Stripes.** Each client key lives in exactly one stripe, chosen by a keyed (per-process
//!   random, SipHash) hash of the key, so outsiders can't aim all their keys at one stripe. A
//!   stripe is a `parking_lot::Mutex` around its own map and queue; `check` locks one stripe and
//!   nothing else, so shards contend only when two upgrades hash to the same stripe at once.
//! - **Key derivation.** An IPv4 address is its own key. An IPv6 address is keyed by its /64
//!   prefix (one subscriber's LAN; rotating the interface id doesn't buy more upgrades). An
//!   IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket reports for IPv4
//!   peers) is keyed as the IPv4 address `a.b.c.d`.
//! - **Token bucket.** Capacity `count`, refilled continuously at `count / per`; a check takes
//!   one token or returns the time until one is available. A bucket that has refilled to
//!   capacity is indistinguishable from no bucket, so it may be dropped at any time.
//! - **One queue entry per bucket.** Each stripe keeps a FIFO of `(key, time the bucket will be
//!   full)`. A bucket is queued when it is created and leaves the queue only when it is popped;
//!   a popped bucket is then either removed (it is full by now) or queued again at the back with
//!   its new full time. So the queue and the map always hold the same keys, one entry each
//!   (`queue.len() == buckets.len()`), and no bucket outlives its queue entry.
//! - **Eviction bound.** Every check pops at most [`MAX_POPS`] expired entries from the front of
//!   its stripe's queue, plus at most one more when the stripe is at its cap; no operation
//!   scans all buckets. A new bucket's full time is at most one `per` after it was queued, so
//!   a full bucket is dropped at most about one `per` (plus the drain lag of its stripe) after
//!   it filled, as long as upgrades keep arriving. Each check adds at most one bucket and can
//!   remove up to [`MAX_POPS`], so expired buckets drain faster than new ones arrive.
//! - **Memory bound.** A stripe holds at most its cap ([`STRIPE_CAP`] by default, so about 1M
//!   buckets in all); inserting into a full stripe first evicts the bucket at the front of its
//!   queue (the one queued longest ago), even if it is not full. An attacker with more than a
//!   million distinct keys (a large IPv6 allocation) can therefore reset buckets, but can't
//!   exhaust memory.

use std::collections::hash_map::{HashMap, RandomState};
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::Rate;

/// Number of independently locked stripes.
pub const STRIPES: usize = 64;

/// Most expired queue entries one check pops (re-queued or removed), besides the cap eviction.
pub const MAX_POPS: usize = 8;

/// Default most buckets per stripe (16,384 × 64 stripes ≈ 1M buckets).
pub const STRIPE_CAP: usize = 16_384;

/// Periods longer than this (about 100 years) are clamped, so `Instant + period` can't overflow.
const MAX_PER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What a bucket is keyed by: a whole IPv4 address, or the /64 prefix of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    V4(u32),
    V6Prefix(u64),
}

impl Key {
    fn of(ip: IpAddr) -> Key {
        match ip {
            IpAddr::V4(v4) => Key::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Key::V4(u32::from(v4)),
                None => Key::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    /// Time `tokens` was last brought up to date; never moves backwards.
    last: Instant,
}

impl Stripe {
    /// Records the queue entries one check popped (test-only instrumentation).
    fn note_pops(&mut self, pops: usize) {
        #[cfg(test)]
        {
            self.max_pops = self.max_pops.max(pops);
        }
        let _ = pops;
    }
}

#[derive(Debug, Default)]
struct Stripe {
    buckets: HashMap<Key, Bucket>,
    /// `(key, time its bucket is full)`, one entry per bucket in `buckets`, oldest first.
    queue: VecDeque<(Key, Instant)>,
    /// Most queue entries popped by a single check (test-only instrumentation).
    #[cfg(test)]
    max_pops: usize,
}

/// `count` upgrades per `per` for each client key, with a burst of `count`.
pub struct ConnRateLimiter {
    capacity: f64,
    per_second: f64,
    stripe_cap: usize,
    hasher: RandomState,
    stripes: Box<[Mutex<Stripe>]>,
}

impl std::fmt::Debug for ConnRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnRateLimiter")
            .field("capacity", &self.capacity)
            .field("per_second", &self.per_second)
            .field("stripe_cap", &self.stripe_cap)
            .finish_non_exhaustive()
    }
}

impl ConnRateLimiter {
    /// A limiter for `rate` (as parsed from `--conn-rate`). A `count` of 0 is treated as 1 and a
    /// `per` of 0 as 1 ns (the parser rejects both); `per` above ~100 years is clamped.
    pub fn new(rate: Rate) -> Self {
        Self::with_stripe_cap(rate, STRIPE_CAP)
    }

    /// Like [`new`](Self::new) with at most `stripe_cap` (at least 1) buckets per stripe.
    pub fn with_stripe_cap(rate: Rate, stripe_cap: usize) -> Self {
        let capacity = f64::from(rate.count.max(1));
        let per = rate.per.clamp(Duration::from_nanos(1), MAX_PER);
        ConnRateLimiter {
            capacity,
            per_second: capacity / per.as_secs_f64(),
            stripe_cap: stripe_cap.max(1),
            hasher: RandomState::new(),
            stripes: (0..STRIPES)
                .map(|_| Mutex::new(Stripe::default()))
                .collect(),
        }
    }

    /// Takes one token for `ip`'s key; on refusal returns how long until one is available.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = Key::of(ip);
        let mut guard = self.stripe(key).lock();
        let stripe = &mut *guard;
        let mut pops = self.expire(stripe, now);

        if !stripe.buckets.contains_key(&key) {
            if stripe.buckets.len() >= self.stripe_cap {
                if let Some((old, _)) = stripe.queue.pop_front() {
                    stripe.buckets.remove(&old);
                    pops += 1;
                }
            }
            // Queued with the time it will be full after this check takes its token (the
            // first check of a bucket always succeeds: capacity >= 1).
            stripe
                .queue
                .push_back((key, self.full_at(self.capacity - 1.0, now)));
        }
        stripe.note_pops(pops);
        let bucket = stripe.buckets.entry(key).or_insert(Bucket {
            tokens: self.capacity,
            last: now,
        });

        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }

    /// Number of live buckets, summed over stripes (locks each stripe in turn; for metrics and
    /// tests, not the upgrade path).
    pub fn bucket_count(&self) -> usize {
        self.stripes.iter().map(|s| s.lock().buckets.len()).sum()
    }

    fn stripe(&self, key: Key) -> &Mutex<Stripe> {
        let h = self.hasher.hash_one(key);
        // SipHash output is uniform, so any 32 of its bits pick a stripe evenly.
        &self.stripes[(h >> 32) as usize % STRIPES]
    }

    /// Pops up to [`MAX_POPS`] due entries from the front of `stripe`'s queue: a bucket full by
    /// `now` is removed, one that was used since it was queued goes to the back with its new
    /// full time. Returns the number popped.
    fn expire(&self, stripe: &mut Stripe, now: Instant) -> usize {
        let mut pops = 0;
        while pops < MAX_POPS {
            match stripe.queue.front() {
                Some(&(_, due)) if due <= now => {}
                _ => break,
            }
            let Some((key, _)) = stripe.queue.pop_front() else {
                break;
            };
            pops += 1;
            let Some(b) = stripe.buckets.get(&key) else {
                // Unreachable by the one-entry-per-bucket invariant; dropping it is harmless.
                continue;
            };
            let full_at = self.full_at(b.tokens, b.last);
            if full_at <= now {
                stripe.buckets.remove(&key);
            } else {
                stripe.queue.push_back((key, full_at));
            }
        }
        pops
    }

    /// When a bucket holding `tokens` at `at` will be full. The same function decides both the
    /// queued time and whether a popped bucket is full, so a due entry of an untouched bucket is
    /// always removed (no re-queue loop from rounding).
    fn full_at(&self, tokens: f64, at: Instant) -> Instant {
        let missing = (self.capacity - tokens).max(0.0);
        let wait = Duration::try_from_secs_f64(missing / self.per_second).unwrap_or(MAX_PER);
        at.checked_add(wait).unwrap_or(at)
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        if now > b.last {
            if self.full_at(b.tokens, b.last) <= now {
                b.tokens = self.capacity;
            } else {
                let elapsed = (now - b.last).as_secs_f64();
                b.tokens = (b.tokens + elapsed * self.per_second).min(self.capacity);
            }
            b.last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn limiter(count: u32, secs: u64) -> ConnRateLimiter {
        ConnRateLimiter::new(Rate {
            count,
            per: Duration::from_secs(secs),
        })
    }

    fn v4(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(i))
    }

    /// Checks the one-entry-per-bucket invariant and returns the largest stripe.
    fn check_invariants(l: &ConnRateLimiter) -> usize {
        let mut largest = 0;
        for s in l.stripes.iter() {
            let s = s.lock();
            assert_eq!(s.queue.len(), s.buckets.len(), "one queue entry per bucket");
            for (k, _) in &s.queue {
                assert!(s.buckets.contains_key(k));
            }
            largest = largest.max(s.buckets.len());
        }
        largest
    }

    fn max_pops(l: &ConnRateLimiter) -> usize {
        l.stripes.iter().map(|s| s.lock().max_pops).max().unwrap()
    }

    #[test]
    fn burst_then_refuse_then_refill() {
        let l = limiter(10, 60);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(l.check(ip, t0).is_ok());
        }
        let wait = l.check(ip, t0).unwrap_err();
        assert!(wait > Duration::from_secs(5) && wait <= Duration::from_secs(6));
        // Another address is unaffected.
        assert!(l.check("10.0.0.2".parse().unwrap(), t0).is_ok());
        // One token comes back after 6 s.
        assert!(l.check(ip, t0 + Duration::from_secs(6)).is_ok());
        assert!(l.check(ip, t0 + Duration::from_secs(6)).is_err());
        // A full period later the whole burst is back.
        let t1 = t0 + Duration::from_secs(66);
        for _ in 0..10 {
            assert!(l.check(ip, t1).is_ok());
        }
        assert!(l.check(ip, t1).is_err());
        check_invariants(&l);
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let l = limiter(2, 10);
        let ip = v4(1);
        let t0 = Instant::now() + Duration::from_secs(100);
        assert!(l.check(ip, t0).is_ok());
        assert!(l.check(ip, t0 - Duration::from_secs(50)).is_ok());
        assert!(l.check(ip, t0 - Duration::from_secs(60)).is_err());
        assert!(l.check(ip, t0 + Duration::from_secs(5)).is_ok());
        check_invariants(&l);
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_prefix() {
        let l = limiter(2, 60);
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:fffe".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(l.check(a, t0).is_ok());
        assert!(l.check(b, t0).is_ok());
        assert!(l.check(a, t0).is_err(), "same /64 shares the bucket");
        assert!(l.check(b, t0).is_err());
        assert!(l.check(other, t0).is_ok(), "another /64 has its own bucket");
        assert_eq!(l.bucket_count(), 2);
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_address() {
        let l = limiter(2, 60);
        let t0 = Instant::now();
        let plain: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(mapped, "::ffff:192.0.2.7".parse::<IpAddr>().unwrap());
        assert!(l.check(plain, t0).is_ok());
        assert!(l.check(mapped, t0).is_ok());
        assert!(
            l.check(plain, t0).is_err(),
            "mapped and plain share a bucket"
        );
        // Another mapped address in the same (::ffff:0:0/96) /64 is a different client.
        let neighbour = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 8).to_ipv6_mapped());
        assert!(l.check(neighbour, t0).is_ok());
        assert_eq!(Key::of(neighbour), Key::V4(0xc000_0208));
        assert_eq!(
            Key::of(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            Key::V6Prefix(0),
            "::1 is not IPv4-mapped"
        );
        assert_eq!(l.bucket_count(), 2);
    }

    /// 100k addresses arriving one per millisecond: the live buckets stay about one period's
    /// worth, and after a full period of other traffic almost everything has been dropped.
    #[test]
    fn buckets_are_evicted_over_time() {
        let l = limiter(5, 1);
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        for i in 0..100_000u32 {
            assert!(l.check(v4(i), t0 + ms * i).is_ok());
        }
        let live = l.bucket_count();
        // ~1,000 buckets are less than a period old; anything beyond is drain lag.
        assert!(live < 2_500, "{live} live buckets after 100k addresses");
        check_invariants(&l);

        // A burst of 100k at one instant, then a full period of traffic from 1,000 addresses.
        let t1 = t0 + Duration::from_secs(200);
        for i in 0..100_000u32 {
            let _ = l.check(v4(1 << 24 | i), t1);
        }
        assert!(l.bucket_count() >= 100_000);
        let t2 = t1 + Duration::from_secs(2);
        for i in 0..40_000u32 {
            let _ = l.check(v4(2 << 24 | (i % 1_000)), t2 + ms * (i / 1_000));
        }
        let live = l.bucket_count();
        assert!(live < 1_500, "{live} live buckets a period after the burst");
        check_invariants(&l);
    }

    #[test]
    fn stripe_cap_bounds_memory() {
        let l = ConnRateLimiter::with_stripe_cap(
            Rate {
                count: 1,
                per: Duration::from_secs(3600),
            },
            100,
        );
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let _ = l.check(v4(i), t0 + Duration::from_micros(u64::from(i)));
        }
        let largest = check_invariants(&l);
        assert!(largest <= 100, "stripe holds {largest} buckets");
        assert!(l.bucket_count() <= 100 * STRIPES);
        // The newest address still has its bucket (the oldest were evicted).
        let last = v4(99_999);
        assert!(l.check(last, t0 + Duration::from_secs(1)).is_err());
        assert!(max_pops(&l) <= MAX_POPS + 1);
    }

    /// No check does more than a constant amount of queue work, however many buckets exist and
    /// however many expire at the same instant.
    #[test]
    fn work_per_check_is_bounded() {
        let l = limiter(3, 10);
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let _ = l.check(v4(i), t0);
        }
        // Everything is due at once: each check still pops at most MAX_POPS.
        for i in 0..100_000u32 {
            let _ = l.check(v4(i ^ 0x5555), t0 + Duration::from_secs(11));
        }
        // Hammering keeps re-queueing (never full), still bounded.
        for s in 0..1_000u64 {
            let _ = l.check(
                v4(7),
                t0 + Duration::from_secs(30) + Duration::from_millis(s),
            );
        }
        assert!(max_pops(&l) <= MAX_POPS, "popped {}", max_pops(&l));
        check_invariants(&l);
    }

    #[test]
    fn degenerate_rates_do_not_panic() {
        let t0 = Instant::now();
        for (count, per) in [
            (0, Duration::ZERO),
            (u32::MAX, Duration::from_nanos(1)),
            (1, Duration::MAX),
        ] {
            let l = ConnRateLimiter::new(Rate { count, per });
            for i in 0..20u32 {
                let _ = l.check(v4(i % 3), t0 + Duration::from_secs(u64::from(i)));
            }
            check_invariants(&l);
        }
    }
}
