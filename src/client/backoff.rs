//! Reconnect delays: exponential backoff with full jitter (sans-IO; the RNG is an argument).
//!
//! The n-th consecutive failed attempt (counting from 0) waits a duration drawn uniformly from
//! `[0, min(max, min_delay · 2^n)]` ("full jitter", as in the AWS architecture blog's
//! *Exponential Backoff And Jitter*): clients cut off together do not come back together.
//! [`Backoff::reset`] is called once a connection got its `connection_ack`.

use std::time::Duration;

use rand::Rng;

/// The attempt counter and the two bounds of the delay.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A counter at attempt 0.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            attempt: 0,
        }
    }

    /// Consecutive failures so far.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The largest delay the next attempt may draw: `min(max, min · 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// Draws the delay before the next attempt and counts this failure.
    pub fn next_delay<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let ceiling = u64::try_from(self.ceiling().as_nanos()).unwrap_or(u64::MAX);
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_nanos(rng.gen_range(0..=ceiling))
    }

    /// Back to attempt 0 (after a connection that was acknowledged).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(15);

    #[test]
    fn ceiling_doubles_up_to_max() {
        let mut b = Backoff::new(MIN, MAX);
        let mut rng = StdRng::seed_from_u64(1);
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay(&mut rng);
        }
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
    }

    #[test]
    fn seeded_delays_stay_within_bounds_and_spread() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut b = Backoff::new(MIN, MAX);
        let mut top_half = 0;
        let mut bottom_half = 0;
        for i in 0..2000u32 {
            let ceiling = b.ceiling();
            let d = b.next_delay(&mut rng);
            assert!(d <= ceiling, "attempt {i}: {d:?} > {ceiling:?}");
            assert!(d <= MAX);
            if d > ceiling / 2 {
                top_half += 1;
            } else {
                bottom_half += 1;
            }
            if i % 10 == 9 {
                b.reset();
            }
        }
        // Full jitter: uniform over [0, ceiling], so both halves are well used.
        assert!(
            top_half > 800 && bottom_half > 800,
            "{top_half} / {bottom_half}"
        );
    }

    #[test]
    fn same_seed_same_delays_and_reset_restarts() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut b = Backoff::new(MIN, MAX);
            (0..5).map(|_| b.next_delay(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        let mut b = Backoff::new(MIN, MAX);
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..5 {
            b.next_delay(&mut rng);
        }
        assert_eq!(b.attempt(), 5);
        b.reset();
        assert_eq!((b.attempt(), b.ceiling()), (0, MIN));
    }

    #[test]
    fn extreme_attempts_do_not_overflow() {
        let mut b = Backoff::new(MIN, Duration::MAX);
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..100 {
            b.next_delay(&mut rng);
        }
        assert!(b.ceiling() >= MIN);
        let mut zero = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.next_delay(&mut rng), Duration::ZERO);
    }
}
