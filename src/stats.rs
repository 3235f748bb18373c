//! The dashboard's numbers (PROTOCOL.md §14): a minute of one-second samples of the server's
//! counters, turned into per-second rates and the publish-to-write latency distribution of
//! that minute. Pure: samples in, the `data` of a `stats` message out.
//!
//! Counters are cumulative, so a rate is the difference of two samples: a sample that is
//! missed (a slow second) widens one interval and loses nothing. A counter that goes back
//! (never, short of a restart) reads as 0 for that interval.

use std::collections::VecDeque;

use serde_json::{json, Value};

/// Samples kept: one minute of intervals.
pub const WINDOW: usize = 60;

/// Channels listed in `top_channels`.
pub const TOP_CHANNELS: usize = 50;

/// The server's counters at one instant, summed over shards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub connections: u64,
    pub messages_published: u64,
    pub messages_delivered: u64,
    pub slow_consumer_disconnects: u64,
    pub heartbeat_expiries: u64,
    pub token_expiries: u64,
    pub rate_limited_upgrades: u64,
    /// Cumulative count of observations ≤ each bound of [`Window::new`], then the total.
    pub latency: Vec<u64>,
}

/// What a sample does not hold: numbers read less often or from elsewhere.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    pub users: u64,
    pub uptime_seconds: u64,
    pub shard_connections: Vec<u64>,
    /// From the latest snapshot of every shard.
    pub channels: Option<ChannelTable>,
}

/// Channels with subscribers, reduced once per snapshot to what a push shows: how many, and
/// the [`TOP_CHANNELS`] with the most subscribers (then by name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelTable {
    pub count: usize,
    pub top: Vec<(String, u64)>,
}

impl ChannelTable {
    /// From (channel, subscribers) over every shard, one entry per channel.
    pub fn new(mut channels: Vec<(String, u64)>) -> ChannelTable {
        let count = channels.len();
        channels.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        channels.truncate(TOP_CHANNELS);
        ChannelTable {
            count,
            top: channels,
        }
    }
}

/// The last minute of samples.
#[derive(Debug, Clone)]
pub struct Window {
    /// Upper bounds of the latency buckets, seconds.
    bounds: Vec<f64>,
    samples: VecDeque<Sample>,
}

impl Window {
    pub fn new(bounds: Vec<f64>) -> Window {
        Window {
            bounds,
            samples: VecDeque::with_capacity(WINDOW + 1),
        }
    }

    /// Adds the newest sample, forgetting the oldest beyond one minute.
    pub fn push(&mut self, s: Sample) {
        if self.samples.len() > WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    /// Per-interval increase of `f`, oldest first (empty before the second sample).
    fn rates(&self, f: impl Fn(&Sample) -> u64) -> Vec<u64> {
        let v: Vec<u64> = self.samples.iter().map(f).collect();
        v.windows(2).map(|w| w[1].saturating_sub(w[0])).collect()
    }

    /// Observations per bucket (not cumulative) over the window; the last bucket is above
    /// every bound.
    pub fn latency_counts(&self) -> Vec<u64> {
        let n = self.bounds.len() + 1;
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return vec![0; n];
        };
        let cumulative: Vec<u64> = (0..n)
            .map(|i| {
                let at = |s: &Sample| s.latency.get(i).copied().unwrap_or(0);
                at(last).saturating_sub(at(first))
            })
            .collect();
        let mut prev = 0;
        cumulative
            .iter()
            .map(|&c| {
                let own = c.saturating_sub(prev);
                prev = prev.max(c);
                own
            })
            .collect()
    }

    /// The bound under which a fraction `q` of the window's observations fall (None without
    /// observations; `f64::INFINITY` past the last bound).
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        let counts = self.latency_counts();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(self.bounds.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }

    /// The `data` of a `stats` message.
    pub fn data(&self, extra: &Extra) -> Value {
        let last = self.samples.back().cloned().unwrap_or_default();
        let seconds = |q| self.latency_quantile(q).filter(|v| v.is_finite());
        let top = extra.channels.as_ref().map_or(&[][..], |t| &t.top[..]);
        let channel_count = extra.channels.as_ref().map(|t| t.count);
        json!({
            "connections": last.connections,
            "users": extra.users,
            "channels": channel_count,
            "shards": extra.shard_connections,
            "messages_published": last.messages_published,
            "messages_delivered": last.messages_delivered,
            "slow_consumer_disconnects": last.slow_consumer_disconnects,
            "heartbeat_expiries": last.heartbeat_expiries,
            "token_expiries": last.token_expiries,
            "rate_limited_upgrades": last.rate_limited_upgrades,
            "uptime_seconds": extra.uptime_seconds,
            "per_second": {
                "published": self.rates(|s| s.messages_published),
                "delivered": self.rates(|s| s.messages_delivered),
                "connections": self.samples.iter().skip(1).map(|s| s.connections).collect::<Vec<_>>(),
            },
            "latency": {
                "le": self.bounds,
                "counts": self.latency_counts(),
                "p50": seconds(0.5),
                "p99": seconds(0.99),
            },
            "top_channels": top
                .iter()
                .map(|(c, n)| json!({ "channel": c, "subscribers": n }))
                .collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(published: u64, latency: [u64; 3]) -> Sample {
        Sample {
            connections: 2,
            messages_published: published,
            messages_delivered: published * 3,
            latency: latency.to_vec(),
            ..Sample::default()
        }
    }

    #[test]
    fn rates_are_differences_of_consecutive_samples() {
        let mut w = Window::new(vec![0.001, 0.01]);
        for p in [10, 15, 15, 40] {
            w.push(sample(p, [0, 0, 0]));
        }
        let d = w.data(&Extra::default());
        assert_eq!(d["per_second"]["published"], json!([5, 0, 25]));
        assert_eq!(d["per_second"]["delivered"], json!([15, 0, 75]));
        assert_eq!(d["messages_published"], 40);
        assert_eq!(d["channels"], Value::Null, "no snapshot yet");
    }

    #[test]
    fn the_window_holds_one_minute() {
        let mut w = Window::new(vec![]);
        for p in 0..200 {
            w.push(sample(p * 2, [0, 0, 0]));
        }
        let d = w.data(&Extra::default());
        let rates = d["per_second"]["published"].as_array().unwrap();
        assert_eq!(rates.len(), WINDOW);
        assert!(rates.iter().all(|r| r == 2));
    }

    #[test]
    fn latency_is_the_minutes_observations_per_bucket() {
        let mut w = Window::new(vec![0.001, 0.01]);
        // Cumulative: ≤1 ms, ≤10 ms, all.
        w.push(sample(0, [100, 150, 160]));
        w.push(sample(0, [190, 250, 261]));
        assert_eq!(w.latency_counts(), vec![90, 10, 1]);
        assert_eq!(w.latency_quantile(0.5), Some(0.001));
        assert_eq!(w.latency_quantile(0.95), Some(0.01));
        assert_eq!(w.latency_quantile(1.0), Some(f64::INFINITY));
        let d = w.data(&Extra::default());
        assert_eq!(d["latency"]["p50"], 0.001);
        assert_eq!(d["latency"]["counts"], json!([90, 10, 1]));
        assert_eq!(Window::new(vec![0.1]).latency_quantile(0.5), None);
    }

    #[test]
    fn counters_going_back_read_as_zero() {
        let mut w = Window::new(vec![0.001]);
        w.push(sample(50, [5, 9, 9]));
        w.push(sample(10, [1, 2, 2]));
        assert_eq!(
            w.data(&Extra::default())["per_second"]["published"],
            json!([0])
        );
        assert_eq!(w.latency_counts(), vec![0, 0]);
    }

    #[test]
    fn top_channels_by_subscribers_then_name() {
        let mut w = Window::new(vec![]);
        w.push(Sample::default());
        let mut channels: Vec<(String, u64)> =
            (0..80).map(|i| (format!("c{i:02}"), i % 7)).collect();
        channels.push(("odds".into(), 1000));
        let d = w.data(&Extra {
            channels: Some(ChannelTable::new(channels)),
            ..Extra::default()
        });
        assert_eq!(d["channels"], 81);
        let top = d["top_channels"].as_array().unwrap();
        assert_eq!(top.len(), TOP_CHANNELS);
        assert_eq!(top[0], json!({"channel":"odds","subscribers":1000}));
        assert_eq!(top[1], json!({"channel":"c06","subscribers":6}));
        assert_eq!(top[2], json!({"channel":"c13","subscribers":6}));
    }
}
