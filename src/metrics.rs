//! Counters and the publish-to-write latency histogram.
//!
//! Every metric has one child per shard (label `shard`), written only by that shard's thread, so
//! the per-message path never contends on a shared counter. `/api/stats` sums the children;
//! `/metrics` renders them all in Prometheus text format.

use std::time::Instant;

use prometheus::core::Metric as _;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Upper bounds of the publish-to-write latency buckets, seconds.
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// One shard's metric children.
pub struct ShardMetrics {
    pub connections: IntGauge,
    /// Channels whose state (offset, epoch) this shard owns; follows the channels in use.
    pub channel_states: IntGauge,
    /// Publishes refused with `overloaded` (nothing of them delivered).
    pub publishes_refused: IntCounter,
    pub messages_published: IntCounter,
    pub messages_delivered: IntCounter,
    pub slow_consumer_disconnects: IntCounter,
    pub heartbeat_expiries: IntCounter,
    pub rate_limited_upgrades: IntCounter,
    /// Connections closed with 4401: token expired without a refresh.
    pub token_expiries: IntCounter,
    /// Upgrades refused with 401 (bad, expired or missing token).
    pub auth_refused: IntCounter,
    /// Frames queued by recoveries (PROTOCOL.md §10).
    pub messages_replayed: IntCounter,
    /// Messages kept in the history of the channels this shard owns, and their bytes.
    pub history_messages: IntGauge,
    pub history_bytes: IntGauge,
    /// Seconds from publish (offset assigned) to the socket write that carried the frame.
    pub publish_to_write: Histogram,
}

/// Totals over all shards, as `/api/stats` reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub connections: u64,
    pub messages_published: u64,
    pub messages_delivered: u64,
    pub slow_consumer_disconnects: u64,
    pub heartbeat_expiries: u64,
    pub rate_limited_upgrades: u64,
}

/// All metrics of the process.
pub struct Metrics {
    registry: Registry,
    shards: Vec<ShardMetrics>,
    uptime: IntGauge,
    started: Instant,
}

impl Metrics {
    /// Registers every family with one child per shard.
    pub fn new(shards: usize) -> Metrics {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let v = IntGaugeVec::new(Opts::new(name, help), &["shard"]).expect("metric opts");
            registry.register(Box::new(v.clone())).expect("register");
            v
        };
        let counter = |name: &str, help: &str| {
            let v = IntCounterVec::new(Opts::new(name, help), &["shard"]).expect("metric opts");
            registry.register(Box::new(v.clone())).expect("register");
            v
        };
        let connections = gauge("huddle_connections", "Open WebSocket connections.");
        let channel_states = gauge(
            "huddle_channel_states",
            "Channels with state on the shard that owns them (freed after --history-ttl unused).",
        );
        let refused = counter(
            "huddle_publishes_refused_total",
            "Publishes refused with overloaded because an owner's --publish-queue was full.",
        );
        let published = counter(
            "huddle_messages_published_total",
            "Messages published (one per channel of a publish; broadcasts and user sends count once).",
        );
        let delivered = counter(
            "huddle_messages_delivered_total",
            "Channel, broadcast and user messages queued to connections (not replies).",
        );
        let slow = counter(
            "huddle_slow_consumer_disconnects_total",
            "Connections closed with 4008 because their send queue overflowed.",
        );
        let expiries = counter(
            "huddle_heartbeat_expiries_total",
            "Connections closed with 4001 after heartbeat-timeout of silence.",
        );
        let limited = counter(
            "huddle_rate_limited_upgrades_total",
            "Upgrade requests refused with 429 by --conn-rate.",
        );
        let token_expiries = counter(
            "huddle_token_expiries_total",
            "Connections closed with 4401 because their token expired without a refresh.",
        );
        let auth_refused = counter(
            "huddle_auth_refused_total",
            "Upgrade requests refused with 401: invalid, expired or (with --require-auth) missing token.",
        );
        let replayed = counter(
            "huddle_messages_replayed_total",
            "Frames queued to recovering subscriptions (subscribe with since).",
        );
        let history_messages = gauge(
            "huddle_history_messages",
            "Messages kept in channel history (--history-size, --history-ttl), per owner shard.",
        );
        let history_bytes = gauge(
            "huddle_history_bytes",
            "Bytes of the frames kept in channel history, per owner shard.",
        );
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "huddle_publish_to_write_seconds",
                "Time from publish (offset assigned) to the socket write of the frame, per shard.",
            )
            .buckets(LATENCY_BOUNDS.to_vec()),
            &["shard"],
        )
        .expect("histogram opts");
        registry
            .register(Box::new(latency.clone()))
            .expect("register");
        let uptime = IntGauge::new("huddle_uptime_seconds", "Seconds since start.").expect("gauge");
        registry
            .register(Box::new(uptime.clone()))
            .expect("register");

        let shards = (0..shards)
            .map(|i| {
                let l = i.to_string();
                let l = [l.as_str()];
                ShardMetrics {
                    connections: connections.with_label_values(&l),
                    channel_states: channel_states.with_label_values(&l),
                    publishes_refused: refused.with_label_values(&l),
                    messages_published: published.with_label_values(&l),
                    messages_delivered: delivered.with_label_values(&l),
                    slow_consumer_disconnects: slow.with_label_values(&l),
                    heartbeat_expiries: expiries.with_label_values(&l),
                    rate_limited_upgrades: limited.with_label_values(&l),
                    token_expiries: token_expiries.with_label_values(&l),
                    auth_refused: auth_refused.with_label_values(&l),
                    messages_replayed: replayed.with_label_values(&l),
                    history_messages: history_messages.with_label_values(&l),
                    history_bytes: history_bytes.with_label_values(&l),
                    publish_to_write: latency.with_label_values(&l),
                }
            })
            .collect();
        Metrics {
            registry,
            shards,
            uptime,
            started: Instant::now(),
        }
    }

    /// The children of shard `id`.
    pub fn shard(&self, id: usize) -> &ShardMetrics {
        &self.shards[id]
    }

    /// Per-shard open connections, in shard order.
    pub fn connections_per_shard(&self) -> impl Iterator<Item = u64> + '_ {
        self.shards
            .iter()
            .map(|s| u64::try_from(s.connections.get()).unwrap_or(0))
    }

    /// Sums over shards.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in &self.shards {
            t.connections += u64::try_from(s.connections.get()).unwrap_or(0);
            t.messages_published += s.messages_published.get();
            t.messages_delivered += s.messages_delivered.get();
            t.slow_consumer_disconnects += s.slow_consumer_disconnects.get();
            t.heartbeat_expiries += s.heartbeat_expiries.get();
            t.rate_limited_upgrades += s.rate_limited_upgrades.get();
        }
        t
    }

    /// The counters the dashboard follows, summed over shards (PROTOCOL.md §14); atomic reads
    /// only, no shard is asked.
    pub fn sample(&self) -> crate::stats::Sample {
        let t = self.totals();
        let mut latency = vec![0u64; LATENCY_BOUNDS.len() + 1];
        let mut token_expiries = 0;
        for s in &self.shards {
            token_expiries += s.token_expiries.get();
            let m = s.publish_to_write.metric();
            let h = m.get_histogram();
            for (slot, b) in latency.iter_mut().zip(h.get_bucket()) {
                *slot += b.get_cumulative_count();
            }
            latency[LATENCY_BOUNDS.len()] += h.get_sample_count();
        }
        crate::stats::Sample {
            connections: t.connections,
            messages_published: t.messages_published,
            messages_delivered: t.messages_delivered,
            slow_consumer_disconnects: t.slow_consumer_disconnects,
            heartbeat_expiries: t.heartbeat_expiries,
            token_expiries,
            rate_limited_upgrades: t.rate_limited_upgrades,
            latency,
        }
    }

    /// Whole seconds since the process started.
    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        self.uptime
            .set(i64::try_from(self.uptime_seconds()).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("metrics encoding failed: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_shards_and_render_lists_families() {
        let m = Metrics::new(2);
        m.shard(0).messages_delivered.inc_by(3);
        m.shard(1).messages_delivered.inc_by(4);
        m.shard(1).connections.inc();
        m.shard(0).publish_to_write.observe(0.0002);
        let t = m.totals();
        assert_eq!(t.messages_delivered, 7);
        assert_eq!(t.connections, 1);
        let text = m.render();
        assert!(text.contains("huddle_messages_delivered_total{shard=\"1\"} 4"));
        assert!(
            text.contains("huddle_publish_to_write_seconds_bucket{shard=\"0\",le=\"0.00025\"} 1")
        );
        assert!(text.contains("huddle_uptime_seconds"));
    }

    #[test]
    fn sample_sums_latency_buckets_cumulatively() {
        let m = Metrics::new(2);
        m.shard(0).publish_to_write.observe(0.0002); // ≤ 0.00025
        m.shard(1).publish_to_write.observe(0.003); // ≤ 0.005
        m.shard(1).publish_to_write.observe(7.0); // above every bound
        m.shard(1).token_expiries.inc();
        let s = m.sample();
        assert_eq!(s.latency.len(), LATENCY_BOUNDS.len() + 1);
        assert_eq!(s.latency[1], 0, "≤ 0.0001");
        assert_eq!(s.latency[2], 1, "≤ 0.00025");
        assert_eq!(s.latency[6], 2, "≤ 0.005");
        assert_eq!(s.latency[LATENCY_BOUNDS.len() - 1], 2, "≤ 1 s");
        assert_eq!(s.latency[LATENCY_BOUNDS.len()], 3, "all");
        assert_eq!(s.token_expiries, 1);
    }
}
