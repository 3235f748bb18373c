//! Process-wide state every shard can see (read-mostly). Nothing here is written on the
//! per-message path except each shard's own metric children and the admission counters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use super::mesh::{Admission, Inbox};
use super::users::UserIndex;
use crate::auth::{Auth, Policy};
use crate::config::ServeConfig;
use crate::glob::Pattern;
use crate::metrics::Metrics;
use crate::ratelimit::ConnRateLimiter;

/// What every shard can see.
pub struct Shared {
    pub config: ServeConfig,
    /// Every accepted API key (`--api-key`, repeatable).
    pub api_keys: Vec<String>,
    pub metrics: Metrics,
    /// Inbox of every shard, by shard id.
    pub inboxes: Vec<Inbox>,
    /// Channel messages in flight per owner shard (`--publish-queue`).
    pub admission: Vec<Arc<Admission>>,
    /// Connect path only: one lock per upgrade request.
    pub conn_limiter: Option<ConnRateLimiter>,
    /// Distinct users with a connection, for `/api/stats`; written on connect and disconnect.
    pub users: UserIndex,
    pub shutdown: Shutdown,
    /// The token verifier; None with tokens off (development).
    pub auth: Option<Auth>,
    /// Public channels and whether tokens are on (PROTOCOL.md §9).
    pub policy: Policy,
    /// `--presence-channels` (PROTOCOL.md §10).
    pub presence: Vec<Pattern>,
    /// Cluster mode (`--redis`): the Redis engine; None runs the embedded engine.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Set by a shard that queued a `huddle:stats` frame; the sampler reads and clears it to
    /// know whether to gather the channel table.
    pub stats_watched: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// The state for `inboxes.len()` shards: loads the token keys (the error names the flag).
    pub fn new(
        config: ServeConfig,
        api_keys: Vec<String>,
        inboxes: Vec<Inbox>,
    ) -> Result<Shared, String> {
        let n = inboxes.len();
        let settings = config.auth_settings();
        let auth = if settings.enabled() {
            Some(Auth::new(settings)?)
        } else {
            None
        };
        Ok(Shared {
            conn_limiter: config.conn_rate.0.map(ConnRateLimiter::new),
            admission: (0..n)
                .map(|_| Admission::new(config.publish_queue))
                .collect(),
            policy: Policy::new(auth.is_some(), &config.public_channels),
            presence: config
                .presence_channels
                .iter()
                .map(|p| Pattern::new(p))
                .collect(),
            auth,
            config,
            api_keys,
            metrics: Metrics::new(n),
            inboxes,
            users: UserIndex::default(),
            shutdown: Shutdown::new(n),
            cluster: None,
            stats_watched: Default::default(),
        })
    }

    /// Cluster mode: this node's id (in `connection_id`s).
    pub fn node_id(&self) -> Option<&str> {
        self.cluster.as_deref().map(|c| &*c.node_id)
    }

    /// True if `given` is one of the configured API keys (constant time per key).
    pub fn key_allowed(&self, given: &str) -> bool {
        !given.is_empty()
            && self
                .api_keys
                .iter()
                .fold(false, |ok, k| ok | key_matches(given, k))
    }
}

/// The shutdown signal: a flag and one wake per shard, delivered outside the inboxes so a
/// backlog can't delay it.
pub struct Shutdown {
    flag: AtomicBool,
    wakes: Vec<Arc<Notify>>,
}

impl Shutdown {
    pub fn new(shards: usize) -> Self {
        Shutdown {
            flag: AtomicBool::new(false),
            wakes: (0..shards).map(|_| Arc::new(Notify::new())).collect(),
        }
    }

    /// Starts the drain on every shard.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::Release);
        for w in &self.wakes {
            w.notify_one();
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Shard `id`'s wake (a stored permit, so a trigger before the wait is not lost).
    pub fn wake(&self, id: usize) -> Arc<Notify> {
        self.wakes[id].clone()
    }
}

/// Compares API keys in time independent of where they differ.
pub fn key_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(key_matches("abc", "abc"));
        assert!(!key_matches("abd", "abc"));
        assert!(!key_matches("ab", "abc"));
    }
}
