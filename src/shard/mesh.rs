//! Messages between shards, the admission budget that bounds them, and the gathers that collect
//! the answer of a publish.
//!
//! # Ordering rule
//!
//! A channel's offsets are assigned by exactly one shard, its *owner* (`owner_of`). The owner
//! sends a channel's messages, in offset order, only to the shards that registered *interest*
//! in it, and fans out to its own subscribers directly. Inboxes are FIFO per sender, so every
//! shard sees a channel's messages in offset order whatever the number of publishers.
//!
//! A shard's first local subscriber of a channel it does not own sends `Interest` to the owner
//! and holds the subscribe reply back. The owner adds the shard to the channel's interest set
//! and answers `InterestAck { offset }` through the *same* FIFO as the channel's `Deliver`s: every
//! message with an offset above the ack follows the ack, every message at or below it was sent
//! before it. The subscriber shard therefore ignores `Deliver`s of a channel whose ack it is
//! still waiting for, answers the subscribe with the ack's offset, and delivers what follows:
//! no gap and no duplicate. The last local subscriber leaving sends `Uninterest`.
//!
//! # Recovery (PROTOCOL.md §10)
//!
//! Only the owner holds a channel's history. A subscription with `since` on another shard sends
//! `Recover { since, epoch }` to the owner, which registers interest (as `Interest` would), takes
//! the frames after `since` up to its current offset `top` from the history, and answers
//! `Recovered { top, replay }` through the same FIFO as the channel's `Deliver`s. So every
//! message at or below `top` reached the subscriber shard before the answer, and every message
//! above `top` comes after it. The subscriber shard handles the answer in one step: it queues the
//! reply (`recovered`), then the replayed frames (offsets `since+1..=top`), then makes the
//! connection a member, so the next `Deliver` it gets is `top + 1`: no gap, no duplicate, and
//! nothing live before the replay. The connection is not read while the answer is awaited, and
//! the channels of one request are taken in order, a `Recover` being sent only when its channel
//! is next, so no live message of a recovered channel can be missed while an earlier channel of
//! the request waits. On the owner itself the same steps run at once.
//!
//! `join`/`leave` events go from the subscriber's shard to the owner (`JoinLeave`). The owner
//! knows which shards have subscriptions that asked for them (`Listen`, sent when a shard's
//! first such subscription of the channel appears and when its last goes), encodes the event
//! once only if any do, and hands the frame to those shards (`JoinLeaveFrame`), which queue it to
//! those subscriptions. Events carry no offset, are not stored, and are sent at most once.
//!
//! # Bounds
//!
//! Every channel message in flight holds a [`Permit`] of its owner's [`Admission`] budget
//! (`--publish-queue`), taken before anything of the publish is sequenced and given back when
//! the last shard has fanned the message out (the permit lives in the shared `ChannelMessage`).
//! A message sits in at most one inbox per shard, so inbox length is bounded by the budgets; a
//! publish that cannot get a permit for every one of its channels is refused whole (`overloaded`)
//! and delivered nowhere. Broadcasts and user sends hold a permit of the shard that accepted them.
//!
//! # Gathers
//!
//! The only state shards touch together: per publish, a few atomic operations per interested
//! shard, and a one-time hand-off of the answer to the waiting request.

use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// Sending half of a shard's inbox. Unbounded as a channel type; bounded by the admission
/// budgets described in the module docs.
pub type Inbox = mpsc::UnboundedSender<ShardMsg>;

/// Work for a shard.
pub enum ShardMsg {
    /// To the channel's owner: assign the next offset, encode once, send to interested shards.
    Sequence(SequenceJob),
    /// A sequenced channel message to fan out to local subscribers.
    Deliver(Arc<ChannelMessage>),
    /// To the owner: `shard` has (`on`) or no longer has local subscribers of `channel`.
    Interest {
        channel: Arc<str>,
        shard: usize,
        on: bool,
    },
    /// From the owner: `channel` is at `offset` in `epoch`; every later message follows.
    InterestAck {
        channel: Arc<str>,
        offset: u64,
        epoch: Arc<str>,
    },
    /// A non-channel message (broadcast, or to one user) to fan out.
    Direct(Arc<DirectMessage>),
    /// Report this shard's connections and channels.
    Snapshot(Arc<Gather<ShardSnapshot>>),
    /// To the owner: connection `conn_id` (slab `key`) of `shard` recovers `channel` from
    /// (`since`, `epoch`). Registers the shard's interest like `Interest { on: true }`.
    Recover {
        channel: Arc<str>,
        shard: usize,
        key: usize,
        conn_id: u64,
        since: crate::protocol::Since,
    },
    /// From the owner, in the channel's FIFO: its position and the frames after `since`.
    Recovered {
        channel: Arc<str>,
        key: usize,
        conn_id: u64,
        answer: Answer,
    },
    /// To the owner: a connection joined (`join`) or left `channel`.
    JoinLeave {
        channel: Arc<str>,
        join: bool,
        who: Present,
    },
    /// To the owner: `shard` has (`on`) or no longer has subscriptions that want `channel`'s
    /// `join`/`leave` events.
    Listen {
        channel: Arc<str>,
        shard: usize,
        on: bool,
    },
    /// From the owner to a listening shard: a `join`/`leave` frame to queue.
    JoinLeaveFrame { channel: Arc<str>, frame: Bytes },
    /// A server frame (no offset, no history) for every local subscriber of `channel`, e.g.
    /// `huddle:stats`; the same bytes go to every shard.
    Push { channel: Arc<str>, frame: Bytes },
    /// `/api/history`: the owner's stored messages of `channel` after `since`.
    History {
        channel: Arc<str>,
        since: u64,
        limit: usize,
        reply: oneshot::Sender<HistoryPage>,
    },
    /// `/api/presence`: each shard's subscribers of `channel`.
    Presence {
        channel: Arc<str>,
        gather: Arc<Gather<Vec<Present>>>,
    },
    /// Cluster mode, to the owner: a message of `channel` read from its Redis topic.
    Remote {
        channel: Arc<str>,
        remote: crate::cluster::Remote,
    },
    /// Cluster mode, to the owner: the channel's topic is subscribed at `position`.
    Subscribed {
        channel: Arc<str>,
        position: crate::cluster::Position,
    },
    /// Cluster mode, to the owner: the publish script ran (its offset), or Redis failed.
    Published {
        job: SequenceJob,
        result: Result<crate::cluster::Position, crate::cluster::Unavailable>,
    },
    /// Cluster mode, to the owner: stored messages read from Redis, for `purpose`.
    Ranged {
        channel: Arc<str>,
        purpose: RangeFor,
        result: Result<crate::cluster::Range, crate::cluster::Unavailable>,
    },
    /// Cluster mode, from the owner: it could not follow `channel` within the Redis timeout;
    /// requests waiting for it are answered `unavailable` (its `InterestAck` comes later).
    InterestRefused { channel: Arc<str> },
    /// Cluster mode, to the owner: another node's `join`/`leave` frame of `channel`.
    RemoteJoinLeave { channel: Arc<str>, frame: Bytes },
    /// Cluster mode, to the owner: the topic was subscribed again after a lost connection.
    Resumed { channel: Arc<str> },
    /// Cluster mode, from the owner: `channel`'s stream cannot be continued (a gap Redis could
    /// not fill, or Redis lost it): close its local subscribers with 4010; it goes on at
    /// (`offset`, `epoch`).
    Lost {
        channel: Arc<str>,
        offset: u64,
        epoch: Arc<str>,
    },
}

/// Why the owner read a range from Redis.
pub enum RangeFor {
    /// To fill a gap in the offsets it received.
    Fill,
    /// To answer a `Recover` of a connection of `shard`.
    Recover {
        shard: usize,
        key: usize,
        conn_id: u64,
        since: crate::protocol::Since,
    },
}

/// A channel's position and the frames a client missed, or why they cannot be replayed.
pub struct Answer {
    pub offset: u64,
    pub epoch: Arc<str>,
    /// `offset`/`epoch` are the channel's position, and the answer acknowledges the view.
    /// False only in cluster mode when Redis is unreachable and the owner does not follow the
    /// channel yet: the reply then has no position, and the owner's `InterestAck` comes later.
    pub current: bool,
    pub replay: Result<Vec<Bytes>, crate::engine::Miss>,
}

/// What the owner answers to `/api/history`.
pub struct HistoryPage {
    pub offset: u64,
    pub epoch: Arc<str>,
    /// Frames as sent, oldest first.
    pub frames: Vec<Bytes>,
}

/// One subscriber in `/api/presence`.
#[derive(Debug, Clone)]
pub struct Present {
    pub user_id: Option<Box<str>>,
    pub connection_id: String,
}

/// A shard's budget of channel messages in flight (`--publish-queue`).
pub struct Admission {
    in_flight: AtomicUsize,
    cap: usize,
}

/// One message's share of an [`Admission`] budget; given back on drop.
pub struct Permit(Arc<Admission>);

impl Admission {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Admission {
            in_flight: AtomicUsize::new(0),
            cap: cap.max(1),
        })
    }

    /// A permit, or None when `cap` messages are already in flight.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= self.cap {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Permit(self.clone()))
    }

    /// Messages in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The part of a publish that is the same for every channel it goes to.
pub struct PublishBody {
    pub event_type: String,
    pub message_id: String,
    /// The publisher named the message (a retry with the same id is not published twice in
    /// cluster mode).
    pub named: bool,
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
    pub permit: Permit,
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
    /// Held until the last shard drops the message (None: read from Redis, not admitted here).
    pub _permit: Option<Permit>,
}

/// A broadcast (`user_id` None) or a message to every connection of one user.
pub struct DirectMessage {
    pub user_id: Option<String>,
    pub frame: Bytes,
    pub published_at: Instant,
    pub recipients: Arc<Gather<u64>>,
    /// None: another node's message, read from Redis.
    pub _permit: Option<Permit>,
}

/// One shard's view for `/api/stats` and `/api/channels`.
#[derive(Debug, Default)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub connections: u64,
    /// Local subscribers per stream; a per-user stream (`bankroll/u1`) is named by its key, so
    /// readers map it to the channel with [`crate::protocol::wire_name`].
    pub channels: Vec<(Arc<str>, u64)>,
}

/// Result of one channel of a publish (PROTOCOL.md §7).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChannelResult {
    pub channel: String,
    pub offset: u64,
    pub epoch: String,
    pub recipients: u64,
}

/// Collects offsets and recipient counts of a publish, lock-free until it completes.
///
/// Each channel starts with one pending report (its owner's). The owner adds one per other
/// interested shard *before* sending them the message, then reports its own count, so a
/// channel's count reaches zero exactly when every shard that got it has reported.
pub struct PublishGather {
    channels: Vec<Arc<str>>,
    offsets: Vec<AtomicU64>,
    /// Set once per channel by its owner: no lock on the per-message path.
    epochs: Vec<OnceLock<Arc<str>>>,
    recipients: Vec<AtomicU64>,
    pending: Vec<AtomicUsize>,
    remaining: AtomicUsize,
    /// Some channel could not be stored (cluster mode: Redis unavailable).
    failed: std::sync::atomic::AtomicBool,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

impl PublishGather {
    pub fn new(channels: Vec<Arc<str>>) -> (Arc<Self>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let n = channels.len();
        let g = PublishGather {
            offsets: (0..n).map(|_| AtomicU64::new(0)).collect(),
            epochs: (0..n).map(|_| OnceLock::new()).collect(),
            recipients: (0..n).map(|_| AtomicU64::new(0)).collect(),
            pending: (0..n).map(|_| AtomicUsize::new(1)).collect(),
            remaining: AtomicUsize::new(n),
            failed: std::sync::atomic::AtomicBool::new(false),
            channels,
            done: Mutex::new(Some(tx)),
        };
        (Arc::new(g), rx)
    }

    /// Recorded by the owner when it assigns the offset, with the number of other shards the
    /// message is about to be sent to.
    pub fn sequenced(&self, index: usize, offset: u64, epoch: &Arc<str>, other_shards: usize) {
        self.offsets[index].store(offset, Ordering::Relaxed);
        let _ = self.epochs[index].set(epoch.clone());
        self.pending[index].fetch_add(other_shards, Ordering::AcqRel);
    }

    /// One shard's count for one channel; the last report of the last channel completes it.
    pub fn report(&self, index: usize, recipients: u64) {
        self.recipients[index].fetch_add(recipients, Ordering::Relaxed);
        if self.pending[index].fetch_sub(1, Ordering::AcqRel) == 1
            && self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
        {
            complete(&self.done);
        }
    }

    /// Channel `index` was not stored: the publish answers `unavailable` (cluster mode).
    pub fn fail(&self, index: usize) {
        self.failed.store(true, Ordering::Release);
        self.report(index, 0);
    }

    /// Whether some channel was not stored.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Recipients counted so far for channel `index` (all of them once it completed).
    pub fn recipients(&self, index: usize) -> u64 {
        self.recipients[index].load(Ordering::Relaxed)
    }

    /// The answer, once the receiver returned by `new` has fired.
    pub fn results(&self) -> Vec<ChannelResult> {
        self.channels
            .iter()
            .enumerate()
            .map(|(i, c)| ChannelResult {
                channel: crate::protocol::wire_name(c).to_owned(),
                offset: self.offsets[i].load(Ordering::Relaxed),
                epoch: self.epochs[i]
                    .get()
                    .map_or_else(String::new, |e| e.to_string()),
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
    fn publish_gather_waits_for_every_interested_shard() {
        let (g, mut rx) = PublishGather::new(vec!["a".into(), "b".into()]);
        let e: Arc<str> = Arc::from("E");
        // Channel a goes to 2 other shards, b to none.
        g.sequenced(0, 5, &e, 2);
        g.sequenced(1, 9, &e, 0);
        g.report(0, 3);
        g.report(1, 1);
        assert!(rx.try_recv().is_err());
        g.report(0, 4);
        assert!(rx.try_recv().is_err());
        g.report(0, 0);
        assert!(rx.try_recv().is_ok());
        let r = g.results();
        assert_eq!((r[0].offset, r[0].recipients), (5, 7));
        assert_eq!((r[1].offset, r[1].recipients), (9, 1));
        assert_eq!(r[1].epoch, "E");
    }

    #[test]
    fn admission_is_bounded_and_permits_return_on_drop() {
        let a = Admission::new(2);
        let p1 = a.try_acquire().expect("first");
        let p2 = a.try_acquire().expect("second");
        assert!(a.try_acquire().is_none());
        assert_eq!(a.in_flight(), 2);
        drop(p1);
        let p3 = a.try_acquire().expect("freed by drop");
        drop((p2, p3));
        assert_eq!(a.in_flight(), 0);
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
