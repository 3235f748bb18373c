//! Messages between shards, and the gathers that collect one answer per shard.
//!
//! Every shard owns an unbounded inbox (tokio mpsc: a send wakes the receiving shard, which
//! drains a batch per wake). Ordering rule: a channel's offsets are assigned by exactly one shard,
//! its *owner* (`owner_of`), which fans out to its own subscribers directly and sends every
//! `Deliver` of that channel to every other shard's inbox in
//! offset order. Inboxes are FIFO per sender, so every shard sees a channel's messages in offset
//! order whatever the number of concurrent publishers, and no lock is taken to get there.
//!
//! Gathers are the only state shards touch together: per publish, one atomic add per shard, and a
//! one-time hand-off of the answer to the waiting request.

use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// Sending half of a shard's inbox.
pub type Inbox = mpsc::UnboundedSender<ShardMsg>;

/// Work for a shard.
pub enum ShardMsg {
    /// To the channel's owner: assign the next offset, encode once, send `Deliver` to all shards.
    Sequence(SequenceJob),
    /// A sequenced channel message to fan out to local subscribers.
    Deliver(Arc<ChannelMessage>),
    /// A non-channel message (broadcast, or to one user) to fan out.
    Direct(Arc<DirectMessage>),
    /// Report this shard's connections, users and channels.
    Snapshot(Arc<Gather<ShardSnapshot>>),
    /// Stop accepting, close every connection with 1001, exit when drained.
    Shutdown,
}

/// The part of a publish that is the same for every channel it goes to.
pub struct PublishBody {
    pub event_type: String,
    pub message_id: String,
    /// Always a JSON object; kept parsed so client filters compare fields without re-parsing.
    pub data: Arc<Value>,
}

/// One channel of one publish, on its way to the owner shard.
pub struct SequenceJob {
    pub channel: Arc<str>,
    pub body: Arc<PublishBody>,
    pub results: Arc<PublishGather>,
    /// Index of this channel in `results`.
    pub index: usize,
}

/// A message with its offset and its complete frame, shared by every shard and subscriber.
pub struct ChannelMessage {
    pub channel: Arc<str>,
    pub offset: u64,
    /// Header + JSON, encoded once by the owner.
    pub frame: Bytes,
    pub data: Arc<Value>,
    pub published_at: Instant,
    pub results: Arc<PublishGather>,
    pub index: usize,
}

/// A broadcast (`user_id` None) or a message to every connection of one user.
pub struct DirectMessage {
    pub user_id: Option<String>,
    pub frame: Bytes,
    pub published_at: Instant,
    pub recipients: Arc<Gather<u64>>,
}

/// One shard's view for `/api/stats` and `/api/channels`.
#[derive(Debug, Default)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub connections: u64,
    pub users: Vec<Box<str>>,
    pub channels: Vec<(Box<str>, u64)>,
}

/// Result of one channel of a publish (PROTOCOL.md §7).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChannelResult {
    pub channel: String,
    pub offset: u64,
    pub epoch: String,
    pub recipients: u64,
}

/// Collects offsets and recipient counts of a publish from every shard, lock-free until the
/// last shard reports.
pub struct PublishGather {
    channels: Vec<Arc<str>>,
    offsets: Vec<AtomicU64>,
    recipients: Vec<AtomicU64>,
    remaining: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

impl PublishGather {
    /// A gather expecting one report per (channel, shard).
    pub fn new(channels: Vec<Arc<str>>, shards: usize) -> (Arc<Self>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let n = channels.len();
        let g = PublishGather {
            offsets: (0..n).map(|_| AtomicU64::new(0)).collect(),
            recipients: (0..n).map(|_| AtomicU64::new(0)).collect(),
            remaining: AtomicUsize::new(n * shards),
            channels,
            done: Mutex::new(Some(tx)),
        };
        (Arc::new(g), rx)
    }

    /// Recorded by the owner before it sends the `Deliver`s.
    pub fn set_offset(&self, index: usize, offset: u64) {
        self.offsets[index].store(offset, Ordering::Relaxed);
    }

    /// One shard's count for one channel; the last report completes the gather.
    pub fn report(&self, index: usize, recipients: u64) {
        self.recipients[index].fetch_add(recipients, Ordering::Relaxed);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            complete(&self.done);
        }
    }

    /// The answer, once the receiver returned by `new` has fired.
    pub fn results(&self, epoch: &str) -> Vec<ChannelResult> {
        self.channels
            .iter()
            .enumerate()
            .map(|(i, c)| ChannelResult {
                channel: c.to_string(),
                offset: self.offsets[i].load(Ordering::Relaxed),
                epoch: epoch.to_owned(),
                recipients: self.recipients[i].load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// Collects one value per shard.
pub struct Gather<T> {
    items: Mutex<Vec<T>>,
    remaining: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

impl<T> Gather<T> {
    pub fn new(shards: usize) -> (Arc<Self>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let g = Gather {
            items: Mutex::new(Vec::with_capacity(shards)),
            remaining: AtomicUsize::new(shards),
            done: Mutex::new(Some(tx)),
        };
        (Arc::new(g), rx)
    }

    /// One shard's answer; the last completes the gather.
    pub fn report(&self, item: T) {
        if let Ok(mut items) = self.items.lock() {
            items.push(item);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            complete(&self.done);
        }
    }

    /// Every answer, once complete.
    pub fn take(&self) -> Vec<T> {
        self.items
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

fn complete(done: &Mutex<Option<oneshot::Sender<()>>>) {
    if let Some(tx) = done.lock().ok().and_then(|mut d| d.take()) {
        let _ = tx.send(());
    }
}

/// The shard that assigns offsets for `channel`. Fixed hash keys: every shard must agree.
pub fn owner_of(channel: &str, shards: usize) -> usize {
    // DefaultHasher::new() has fixed keys, unlike RandomState.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(channel.as_bytes());
    (h.finish() % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_in_range() {
        for n in 1..8 {
            for c in ["odds", "games", "game_7", "x"] {
                let o = owner_of(c, n);
                assert!(o < n);
                assert_eq!(o, owner_of(c, n));
            }
        }
    }

    #[test]
    fn publish_gather_completes_on_last_report() {
        let (g, mut rx) = PublishGather::new(vec!["a".into(), "b".into()], 2);
        g.set_offset(0, 5);
        g.set_offset(1, 9);
        g.report(0, 3);
        g.report(1, 1);
        g.report(0, 4);
        assert!(rx.try_recv().is_err());
        g.report(1, 2);
        assert!(rx.try_recv().is_ok());
        let r = g.results("e");
        assert_eq!(r[0].offset, 5);
        assert_eq!(r[0].recipients, 7);
        assert_eq!(r[1].recipients, 3);
    }

    #[test]
    fn gather_collects_each_shard() {
        let (g, mut rx) = Gather::<u64>::new(3);
        g.report(1);
        g.report(2);
        assert!(rx.try_recv().is_err());
        g.report(3);
        assert!(rx.try_recv().is_ok());
        assert_eq!(g.take().iter().sum::<u64>(), 6);
    }
}
