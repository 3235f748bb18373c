//! Per-IP token bucket for WebSocket upgrades (`--conn-rate`, PROTOCOL.md §9 [core]).
//!
//! Time is an argument. Upgrades are on the connect path, not the message path, so one map
//! behind a mutex (held by the caller) is shared by all shards: a client can't dodge the limit
//! by landing on another shard.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::Rate;

/// Buckets kept before full (idle) ones are swept, bounding memory under many addresses.
const SWEEP_ABOVE: usize = 4096;

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// `count` upgrades per `per`, with a burst of `count`.
pub struct ConnRateLimiter {
    capacity: f64,
    per_second: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

impl ConnRateLimiter {
    pub fn new(rate: Rate) -> Self {
        let capacity = f64::from(rate.count);
        ConnRateLimiter {
            capacity,
            per_second: capacity / rate.per.as_secs_f64(),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `ip`; on refusal returns how long until one is available.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() > SWEEP_ABOVE {
            let (cap, rate) = (self.capacity, self.per_second);
            self.buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < cap
            });
        }
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: self.capacity,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.capacity);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(count: u32, secs: u64) -> ConnRateLimiter {
        ConnRateLimiter::new(Rate {
            count,
            per: Duration::from_secs(secs),
        })
    }

    #[test]
    fn burst_then_refuse_then_refill() {
        let mut l = limiter(10, 60);
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
    }

    #[test]
    fn sweep_keeps_only_partial_buckets() {
        let mut l = limiter(1, 1);
        let t0 = Instant::now();
        for i in 0..5000u32 {
            let _ = l.check(IpAddr::from(i.to_be_bytes()), t0);
        }
        let _ = l.check("10.9.9.9".parse().unwrap(), t0 + Duration::from_secs(5));
        assert!(l.buckets.len() < 10);
    }
}
