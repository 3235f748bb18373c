//! Process-wide state shared by all shards (read-mostly), and start/stop of the shard threads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::ratelimit::ConnRateLimiter;
use crate::shard::mesh::{Inbox, ShardMsg};

/// What every shard can see. Nothing here is written on the per-message path except each
/// shard's own metric children.
pub struct Shared {
    pub config: ServeConfig,
    /// Every accepted API key (PROTOCOL.md §7: several, for rotation). Check with
    /// [`Shared::key_allowed`], never by comparing directly.
    pub api_keys: Vec<String>,
    /// Changes on every start: offsets restart at 1 with no shared history (PROTOCOL.md §3).
    pub epoch: String,
    pub metrics: Metrics,
    /// Inbox of every shard, by shard id.
    pub inboxes: Vec<Inbox>,
    /// Connect path only: one lock per upgrade request.
    pub conn_limiter: Option<Mutex<ConnRateLimiter>>,
}

/// A running server.
pub struct ServerHandle {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// Binds the listeners and starts one thread per shard. Returns once the port is bound, so
/// connections made after this are queued even if a shard is still starting.
/// `api_keys` are the accepted API keys (`main` generates one when none is configured; an empty
/// list accepts none).
pub fn start(config: ServeConfig, api_keys: Vec<String>) -> std::io::Result<ServerHandle> {
    let n = config.shard_count();
    let listeners = crate::shard::listener::bind(config.listen, n)?;
    let addr = listeners[0].local_addr()?;
    let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::unbounded_channel()).unzip();
    let shared = Arc::new(Shared {
        conn_limiter: config
            .conn_rate
            .0
            .map(|r| Mutex::new(ConnRateLimiter::new(r))),
        config,
        api_keys,
        epoch: ulid::Ulid::new().to_string(),
        metrics: Metrics::new(n),
        inboxes,
    });
    let mut threads = Vec::with_capacity(n);
    for (id, (listener, rx)) in listeners.into_iter().zip(receivers).enumerate() {
        threads.push(crate::shard::runtime::spawn(
            id,
            shared.clone(),
            listener,
            rx,
        )?);
    }
    Ok(ServerHandle {
        addr,
        shared,
        threads,
    })
}

impl Shared {
    /// Whether `given` is one of the configured API keys. Compares against every key, each in
    /// constant time, so the timing says neither which key matched nor where one differs.
    pub fn key_allowed(&self, given: &str) -> bool {
        keys_allow(&self.api_keys, given)
    }
}

fn keys_allow(keys: &[String], given: &str) -> bool {
    !given.is_empty()
        && keys
            .iter()
            .fold(false, |found, k| found | key_matches(given, k))
}

impl ServerHandle {
    /// Asks every shard to close its connections with 1001 and stop.
    pub fn shutdown(&self) {
        for inbox in &self.shared.inboxes {
            let _ = inbox.send(ShardMsg::Shutdown);
        }
    }

    /// Waits for every shard thread to finish.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
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

/// A random API key: 32 hex characters.
pub fn random_key() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(key_matches("abc", "abc"));
        assert!(!key_matches("abd", "abc"));
        assert!(!key_matches("ab", "abc"));
        let keys = vec!["old".to_string(), "new".to_string()];
        assert!(keys_allow(&keys, "old"));
        assert!(keys_allow(&keys, "new"));
        assert!(!keys_allow(&keys, "other"));
        assert!(!keys_allow(&keys, ""));
        assert!(
            !keys_allow(&[String::new()], ""),
            "an empty key never matches"
        );
        assert!(!keys_allow(&[], "old"));
        let k = random_key();
        assert_eq!(k.len(), 32);
        assert_ne!(k, random_key());
    }
}
