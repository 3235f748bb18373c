//! Start and stop: binds the listeners, builds the state every shard sees, starts one thread
//! per shard with the HTTP layer as its connection handler, and bounds the shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config::ServeConfig;
use crate::shard::Shared;

/// A running server.
pub struct ServerHandle {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// Binds the listeners and starts one thread per shard. Returns once the port is bound, so
/// connections made after this are queued even if a shard is still starting.
pub fn start(config: ServeConfig, api_keys: Vec<String>) -> std::io::Result<ServerHandle> {
    let n = config.shard_count();
    let listeners = crate::shard::listener::bind(config.listen, n)?;
    let addr = listeners[0].local_addr()?;
    let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::unbounded_channel()).unzip();
    let cluster = start_cluster(&config, &inboxes).map_err(std::io::Error::other)?;
    let mut shared = Shared::new(config, api_keys, inboxes).map_err(std::io::Error::other)?;
    shared.cluster = cluster;
    let shared = Arc::new(shared);
    let mut threads = Vec::with_capacity(n);
    for (id, (listener, rx)) in listeners.into_iter().zip(receivers).enumerate() {
        threads.push(crate::shard::runtime::spawn(
            id,
            shared.clone(),
            listener,
            rx,
            |cell, stream, peer| Box::pin(crate::http::serve(cell, stream, peer)),
        )?);
    }
    crate::shard::stats::spawn(shared.clone())?;
    if shared.config.demo {
        // Not joined at shutdown: it stops publishing once shutdown begins, and ends with the
        // process.
        start_demo(shared.clone())?;
    }
    Ok(ServerHandle {
        addr,
        shared,
        threads,
    })
}

/// `--demo`: a thread that steps the demo feed every `--demo-interval` and publishes each
/// message through the ordinary publish path (validated and sequenced like any other), until
/// shutdown.
fn start_demo(shared: Arc<Shared>) -> std::io::Result<()> {
    let seed = shared.config.demo_seed.unwrap_or_else(rand::random);
    let every = shared.config.demo_interval;
    tracing::info!(seed, interval = ?every, "demo feed on: games, odds and predictions (--demo-seed {seed} repeats them)");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("huddle-demo".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut demo = crate::demo::Demo::new(seed);
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !shared.shutdown.is_triggered() {
                    tick.tick().await;
                    for body in demo.step() {
                        let req = match crate::protocol::PublishRequest::from_value(body) {
                            Ok(r) => r,
                            Err(e) => {
                                tracing::error!("demo message refused by validation: {e}");
                                continue;
                            }
                        };
                        if let Err(e) = crate::shard::publish::publish(&shared, req).await {
                            tracing::debug!("demo publish refused: {e}");
                        }
                    }
                }
            })
        })?;
    Ok(())
}

/// Cluster mode (`--redis`): starts the Redis bridge, which hands each topic's messages to the
/// channel's owner shard.
fn start_cluster(
    config: &ServeConfig,
    inboxes: &[crate::shard::mesh::Inbox],
) -> Result<Option<Arc<crate::cluster::Cluster>>, String> {
    use crate::shard::mesh::{owner_of, ShardMsg};
    if config.redis.is_empty() {
        return Ok(None);
    }
    let settings = crate::cluster::Settings {
        urls: config.redis.clone(),
        prefix: config.cluster_name.clone(),
        history_size: config.history_size,
        history_ttl: config.history_ttl,
        presence_ttl: config.presence_ttl,
    };
    let to_owner = {
        let inboxes = inboxes.to_vec();
        move |channel: &Arc<str>, msg: ShardMsg| {
            let _ = inboxes[owner_of(channel, inboxes.len())].send(msg);
        }
    };
    let deliver = {
        let to_owner = to_owner.clone();
        Arc::new(move |channel: Arc<str>, remote| {
            to_owner(&channel.clone(), ShardMsg::Remote { channel, remote })
        })
    };
    let resumed = {
        let to_owner = to_owner.clone();
        Arc::new(move |channel: Arc<str>| to_owner(&channel.clone(), ShardMsg::Resumed { channel }))
    };
    let direct = {
        let inboxes = inboxes.to_vec();
        Arc::new(move |user_id: Option<String>, frame: bytes::Bytes| {
            // Another node's message: delivered here, counted there.
            let (recipients, _) = crate::shard::mesh::Gather::new(inboxes.len());
            let msg = Arc::new(crate::shard::mesh::DirectMessage {
                user_id,
                frame,
                published_at: Instant::now(),
                recipients,
                _permit: None,
            });
            for inbox in &inboxes {
                let _ = inbox.send(ShardMsg::Direct(msg.clone()));
            }
        })
    };
    let join_leave = Arc::new(move |channel: Arc<str>, frame| {
        to_owner(
            &channel.clone(),
            ShardMsg::RemoteJoinLeave { channel, frame },
        )
    });
    let callbacks = crate::cluster::Callbacks {
        deliver,
        resumed,
        direct,
        join_leave,
    };
    let cluster = crate::cluster::Cluster::start(settings, callbacks)?;
    tracing::info!(
        instances = config.redis.len(),
        cluster = %config.cluster_name,
        "cluster mode: channels, offsets and history live in Redis"
    );
    Ok(Some(cluster))
}

impl ServerHandle {
    /// Asks every shard to close its connections with 1001 and stop.
    pub fn shutdown(&self) {
        self.shared.shutdown.trigger();
    }

    /// `SIGHUP`: reads the token key files again (PROTOCOL.md §9); connections are kept, and
    /// new upgrades and refreshes use the new keys. On error the old keys stay.
    pub fn reload_keys(&self) {
        let Some(auth) = &self.shared.auth else {
            tracing::info!("SIGHUP: tokens are off, nothing to reload");
            return;
        };
        match auth.reload() {
            Ok(jwks) => tracing::info!(jwks_keys = jwks, "SIGHUP: token keys reloaded"),
            Err(e) => tracing::error!("SIGHUP: token keys not reloaded, keeping the old ones: {e}"),
        }
    }

    /// Waits for every shard thread to finish, at most `limit`; false if some were still
    /// running (the caller exits anyway, dropping their connections).
    pub fn join_within(self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.threads.iter().any(|t| !t.is_finished()) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for t in self.threads {
            let _ = t.join();
        }
        true
    }
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
    fn random_keys_differ() {
        let k = random_key();
        assert_eq!(k.len(), 32);
        assert_ne!(k, random_key());
    }
}
