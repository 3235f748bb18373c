//! The `huddle:stats` channel (PROTOCOL.md §14, the dashboard's live numbers).
//!
//! A sampler thread reads the metrics once a second (atomic reads: no shard is asked), keeps the
//! last minute in a [`Window`], encodes one `stats` frame and hands the same bytes to every
//! shard (`ShardMsg::Push`), which queues them to its local subscribers of the channel. The
//! channel table comes from one snapshot of every shard, at most every [`TABLE_EVERY`] and only
//! while somebody watches: dashboards cost the shards one inbox message a second each between
//! them, however many are open.
//!
//! Stats frames carry no offset, are kept in no history and are not counted in
//! `messages_delivered`: they are the server's own notices, like `join`/`leave`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::mesh::ShardMsg;
use super::{encode, publish, Shard, Shared};
use crate::protocol::{OutMessage, STATS_CHANNEL};
use crate::stats::{ChannelTable, Extra, Window};

/// One sample, one push.
const EVERY: Duration = Duration::from_secs(1);
/// Longest the channel table goes unrefreshed while watched.
const TABLE_EVERY: Duration = Duration::from_secs(5);

impl Shard {
    /// `Push`: a server frame for every local subscriber of `channel`.
    pub(super) fn on_push(&mut self, channel: &str, frame: Bytes) {
        let keys: Vec<usize> = match self
            .registry
            .lookup(channel)
            .and_then(|c| self.registry.members(c))
        {
            Some(m) => m.iter_ones().collect(),
            None => return,
        };
        if keys.is_empty() {
            return;
        }
        self.shared.stats_watched.store(true, Ordering::Relaxed);
        for k in keys {
            self.queue(k, frame.clone());
        }
        self.flush_dirty();
    }
}

/// Starts the sampler thread; it ends at shutdown.
pub fn spawn(shared: Arc<Shared>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("huddle-stats".into())
        .spawn(move || rt.block_on(sample_forever(shared)))?;
    Ok(())
}

async fn sample_forever(shared: Arc<Shared>) {
    let mut window = Window::new(crate::metrics::LATENCY_BOUNDS.to_vec());
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut table: Option<(Instant, ChannelTable)> = None;
    let channel: Arc<str> = Arc::from(STATS_CHANNEL);
    while !shared.shutdown.is_triggered() {
        tick.tick().await;
        window.push(shared.metrics.sample());
        let watched = shared.stats_watched.swap(false, Ordering::Relaxed);
        if !watched {
            table = None;
        } else if table
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= TABLE_EVERY)
        {
            if let Ok(snaps) = publish::snapshots(&shared).await {
                table = Some((Instant::now(), ChannelTable::new(merge(snaps))));
            }
        }
        let extra = Extra {
            users: shared.users.count() as u64,
            uptime_seconds: shared.metrics.uptime_seconds(),
            shard_connections: shared.metrics.connections_per_shard().collect(),
            channels: table.as_ref().map(|(_, t)| t.clone()),
        };
        let timestamp = crate::protocol::timestamp_now();
        let frame = encode(&OutMessage {
            event_type: "stats",
            channel: Some(STATS_CHANNEL),
            offset: None,
            message_id: None,
            reply_to: None,
            user_id: None,
            timestamp: Some(&timestamp),
            data: &window.data(&extra),
        });
        for inbox in &shared.inboxes {
            let _ = inbox.send(ShardMsg::Push {
                channel: channel.clone(),
                frame: frame.clone(),
            });
        }
    }
}

/// Subscribers per channel over every shard.
fn merge(snaps: Vec<super::mesh::ShardSnapshot>) -> Vec<(String, u64)> {
    let mut merged: std::collections::BTreeMap<String, u64> = Default::default();
    for s in snaps {
        for (c, n) in s.channels {
            let name = crate::protocol::wire_name(&c);
            match merged.get_mut(name) {
                Some(total) => *total += n,
                None => {
                    merged.insert(name.to_owned(), n);
                }
            }
        }
    }
    merged.into_iter().collect()
}
