//! Cluster mode on the owner shard (PROTOCOL.md §12): the channels this shard owns on this node
//! follow their Redis stream instead of an embedded engine.
//!
//! The owner still is the only shard of the node that hands a channel's messages to the
//! node's interested shards, in offset order, through the same FIFOs as in one-node mode, so
//! the ordering rules of [`super::mesh`] hold unchanged. What differs is where the messages
//! come from:
//! - every message, this node's publishes included, arrives from the channel's Redis topic
//!   (or from a range read that fills a gap) and goes through a [`Mirror`], which releases
//!   each offset once, in order;
//! - the first interest in a channel subscribes its topic; the answer's position (read after
//!   the subscription was confirmed) is the `InterestAck` offset, so every later message
//!   arrives through the topic: no gap, no duplicate;
//! - a publish of this node gets its offset from the script; its `recipients` are counted when
//!   the message is fanned out here (its gather rides the delivered message, or waits for it
//!   if the message came first);
//! - a recovery is answered from the mirror's recent frames, or from a range read of the
//!   stream completed by the mirror, at the mirror's current offset;
//! - a gap the stream cannot fill, or a new epoch (Redis lost the channel), closes the
//!   channel's subscribers on this node with 4010 so their clients reconnect and recover;
//! - the topic is let go [`RELEASE_AFTER`] after the last interest went, if none came back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;

use super::mesh::{Answer, ChannelMessage, Permit, PublishGather, RangeFor, SequenceJob, ShardMsg};
use super::{encode, Shard};
use crate::cluster::{Cluster, Position, Range, Remote, Request};
use crate::codec::frame_payload;
use crate::engine::mirror::{Mirror, Offer};
use crate::engine::{Miss, ShardSet};
use crate::error::CloseReason;
use crate::protocol::{OutMessage, Since};

/// How long a channel's topic stays subscribed after its last local subscriber left.
pub const RELEASE_AFTER: Duration = Duration::from_secs(5);
/// A range read to fill a gap that failed (Redis unavailable) is tried again after this.
const REFILL_AFTER: Duration = Duration::from_secs(1);
/// Delivered messages a shard keeps (over all its channels) for a publish answer of this node
/// that arrives after its message; an answer later than that counts 0 recipients.
const UNCLAIMED_KEEP: usize = 1024;

/// A connection's recovery waiting for its channel's start position or a range read.
pub struct RecoverReq {
    pub shard: usize,
    pub key: usize,
    pub conn_id: u64,
    pub since: Since,
}

/// A publish of this node, stored at `offset` in `epoch`, waiting for its message to arrive.
struct Claim {
    epoch: Arc<str>,
    results: Arc<PublishGather>,
    index: usize,
    permit: Permit,
}

/// A message delivered before any publish of this node claimed it: its recipients' gather.
pub struct Unclaimed {
    channel: Arc<str>,
    offset: u64,
    gather: Arc<PublishGather>,
    done: oneshot::Receiver<()>,
}

/// One followed channel on its owner shard.
#[derive(Default)]
pub struct Follow {
    mirror: Mirror,
    interest: ShardSet,
    /// Shards whose `InterestAck` waits for the start position.
    acks: Vec<usize>,
    recovers: Vec<RecoverReq>,
    claims: BTreeMap<u64, Claim>,
    filling: bool,
}

impl Follow {
    fn unused(&self) -> bool {
        self.interest.is_empty()
            && self.acks.is_empty()
            && self.recovers.is_empty()
            && self.claims.is_empty()
    }
}

/// This node's first connection of `user` opened (`on`) or its last closed: follow the user's
/// topic, for `/api/send` on other nodes.
pub(super) fn follow_user(shared: &super::Shared, user: &str, on: bool) {
    if let Some(c) = &shared.cluster {
        c.send(Request::FollowUser {
            user: user.to_owned(),
            on,
        });
    }
}

impl Shard {
    fn cluster(&self) -> Option<Arc<Cluster>> {
        self.shared.cluster.clone()
    }

    /// The followed channel, created (and its topic subscribed) on first use.
    fn follow(&mut self, channel: &Arc<str>) -> Option<&mut Follow> {
        let cluster = self.cluster()?;
        if !self.follows.contains_key(channel) {
            self.follows.insert(channel.clone(), Follow::default());
            let inbox = self.shared.inboxes[self.id].clone();
            let ch = channel.clone();
            cluster.send(Request::Subscribe {
                channel: channel.clone(),
                reply: Box::new(move |r| {
                    if let Ok(position) = r {
                        let _ = inbox.send(ShardMsg::Subscribed {
                            channel: ch,
                            position,
                        });
                    }
                }),
            });
        }
        self.follows.get_mut(channel)
    }

    /// A shard has (`on`) or no longer has subscribers of `channel`.
    pub(super) fn cluster_interest(&mut self, channel: Arc<str>, shard: usize, on: bool) {
        if on {
            let Some(f) = self.follow(&channel) else {
                return;
            };
            match f.mirror.position() {
                Some((offset, epoch)) => {
                    let epoch = epoch.clone();
                    f.interest.insert(shard);
                    let _ = self.shared.inboxes[shard].send(ShardMsg::InterestAck {
                        channel,
                        offset,
                        epoch,
                    });
                }
                None => {
                    f.acks.push(shard);
                    self.ack_checks
                        .push_back((Instant::now() + crate::cluster::TIMEOUT, channel));
                }
            }
        } else if let Some(f) = self.follows.get_mut(&channel) {
            f.interest.remove(shard);
            f.acks.retain(|&s| s != shard);
            if f.unused() {
                self.releases
                    .push_back((Instant::now() + RELEASE_AFTER, channel));
            }
        }
    }

    /// The topic is subscribed: interest waiting for it is acknowledged at `position`, then
    /// what arrived meanwhile above it is delivered, then waiting recoveries are answered.
    pub(super) fn on_subscribed(&mut self, channel: Arc<str>, position: Position) {
        let (size, now) = (self.shared.config.history_size, Instant::now());
        let Some(f) = self.follows.get_mut(&channel) else {
            return;
        };
        let mut out = Vec::new();
        f.mirror
            .start(position.offset, position.epoch.clone(), now, size, &mut out);
        for shard in std::mem::take(&mut f.acks) {
            f.interest.insert(shard);
            let _ = self.shared.inboxes[shard].send(ShardMsg::InterestAck {
                channel: channel.clone(),
                offset: position.offset,
                epoch: position.epoch.clone(),
            });
        }
        // Publishes stored before the subscription began reached nobody here.
        let early: Vec<u64> = f
            .claims
            .range(..=position.offset)
            .map(|(o, _)| *o)
            .collect();
        let early: Vec<Claim> = early.iter().filter_map(|o| f.claims.remove(o)).collect();
        let recovers = std::mem::take(&mut f.recovers);
        for c in early {
            c.results.report(c.index, 0);
        }
        self.deliver_released(&channel, out);
        for r in recovers {
            self.try_recover(&channel, r);
        }
        self.check_gap(&channel);
    }

    /// A message from the channel's topic.
    pub(super) fn on_remote(&mut self, channel: Arc<str>, remote: Remote) {
        let (size, now) = (self.shared.config.history_size, Instant::now());
        let Some(f) = self.follows.get_mut(&channel) else {
            return;
        };
        let mut out = Vec::new();
        let offer = f.mirror.offer(
            remote.offset,
            &remote.epoch,
            remote.frame.clone(),
            now,
            size,
            &mut out,
        );
        if offer == Offer::EpochChanged {
            // Redis lost the channel and started it over: this message opens the new epoch.
            self.lose(
                &channel,
                Position {
                    offset: remote.offset - 1,
                    epoch: remote.epoch.clone(),
                },
            );
            if let Some(f) = self.follows.get_mut(&channel) {
                f.mirror.offer(
                    remote.offset,
                    &remote.epoch,
                    remote.frame,
                    now,
                    size,
                    &mut out,
                );
            }
        }
        self.deliver_released(&channel, out);
        self.check_gap(&channel);
    }

    fn deliver_released(&mut self, channel: &Arc<str>, out: Vec<(u64, Bytes)>) {
        for (offset, frame) in out {
            self.deliver_one(channel, offset, frame);
        }
    }

    /// Fans one released message out to the node's interested shards, as `sequence` does in
    /// one-node mode.
    fn deliver_one(&mut self, channel: &Arc<str>, offset: u64, frame: Bytes) {
        let Some(f) = self.follows.get_mut(channel) else {
            return;
        };
        let Some(epoch) = f.mirror.position().map(|(_, e)| e.clone()) else {
            return;
        };
        let (results, index, permit) = match f.claims.remove(&offset) {
            Some(c) => {
                if f.unused() {
                    // The interest went while this publish was in flight.
                    self.releases
                        .push_back((Instant::now() + RELEASE_AFTER, channel.clone()));
                }
                (c.results, c.index, Some(c.permit))
            }
            None => {
                let (gather, done) = PublishGather::new(vec![channel.clone()]);
                self.unclaimed.push_back(Unclaimed {
                    channel: channel.clone(),
                    offset,
                    gather: gather.clone(),
                    done,
                });
                if self.unclaimed.len() > UNCLAIMED_KEEP {
                    self.unclaimed.pop_front();
                }
                (gather, 0, None)
            }
        };
        let Some(f) = self.follows.get(channel) else {
            return;
        };
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        targets.extend(f.interest.iter());
        let local = targets.contains(&self.id);
        targets.retain(|&s| s != self.id);
        results.sequenced(index, offset, &epoch, targets.len());
        let data = frame_payload(&frame)
            .and_then(|p| serde_json::from_slice::<Value>(p).ok())
            .and_then(|mut v| v.get_mut("data").map(Value::take))
            .unwrap_or(Value::Null);
        self.metrics().messages_published.inc();
        let msg = Arc::new(ChannelMessage {
            channel: channel.clone(),
            offset,
            frame,
            data: Arc::new(data),
            published_at: Instant::now(),
            results,
            index,
            _permit: permit,
        });
        self.hand_out(msg, targets, local);
    }

    /// Owner side of a publish in cluster mode: the script assigns the offset.
    pub(super) fn cluster_sequence(&mut self, cluster: &Cluster, job: SequenceJob) {
        let timestamp = crate::protocol::timestamp_now();
        let json = encode(&OutMessage {
            event_type: &job.body.event_type,
            channel: Some(crate::protocol::wire_name(&job.channel)),
            offset: Some(u64::MAX),
            message_id: Some(&job.body.message_id),
            reply_to: None,
            user_id: None,
            timestamp: Some(&timestamp),
            data: &job.body.data,
        });
        let Some((prefix, suffix)) =
            frame_payload(&json).and_then(crate::cluster::wire::split_at_offset)
        else {
            job.results.fail(job.index);
            return;
        };
        let inbox = self.shared.inboxes[self.id].clone();
        let channel = job.channel.clone();
        let message_id = job.body.named.then(|| job.body.message_id.clone());
        cluster.send(Request::Publish {
            channel,
            prefix,
            suffix,
            message_id,
            reply: Box::new(move |result| {
                let _ = inbox.send(ShardMsg::Published { job, result });
            }),
        });
    }

    /// The script's answer to a publish of this node.
    pub(super) fn on_published(
        &mut self,
        job: SequenceJob,
        result: Result<Position, crate::cluster::Unavailable>,
    ) {
        let Ok(pos) = result else {
            job.results.fail(job.index);
            return;
        };
        let Some(f) = self.follows.get_mut(&job.channel) else {
            // No subscriber on this node.
            job.results.sequenced(job.index, pos.offset, &pos.epoch, 0);
            job.results.report(job.index, 0);
            return;
        };
        let pending = match f.mirror.position() {
            None => true,
            Some((released, e)) => *e == pos.epoch && released < pos.offset,
        };
        if pending {
            f.claims.insert(
                pos.offset,
                Claim {
                    epoch: pos.epoch,
                    results: job.results,
                    index: job.index,
                    permit: job.permit,
                },
            );
            return;
        }
        job.results.sequenced(job.index, pos.offset, &pos.epoch, 0);
        // Most recent first: the answer is usually right behind its message.
        let delivered = self
            .unclaimed
            .iter()
            .rposition(|u| u.offset == pos.offset && u.channel == job.channel)
            .and_then(|i| self.unclaimed.remove(i));
        match delivered {
            // The message came first: count its recipients once every shard reported them.
            Some(Unclaimed { gather, done, .. }) => {
                tokio::task::spawn_local(async move {
                    let _ = done.await;
                    job.results.report(job.index, gather.recipients(0));
                });
            }
            None => job.results.report(job.index, 0),
        }
    }

    /// Owner side of `Recover` in cluster mode.
    pub(super) fn cluster_recover(&mut self, channel: Arc<str>, req: RecoverReq) {
        let redis_down = self
            .shared
            .cluster
            .as_ref()
            .is_some_and(|c| !c.is_healthy());
        let inbox = self.shared.inboxes[req.shard].clone();
        let Some(f) = self.follow(&channel) else {
            return;
        };
        if !f.mirror.is_live() {
            if redis_down {
                // Redis is unreachable: refuse the recovery now (never wait or replay part),
                // and acknowledge the subscription when Redis answers again.
                f.acks.push(req.shard);
                let _ = inbox.send(ShardMsg::Recovered {
                    channel,
                    key: req.key,
                    conn_id: req.conn_id,
                    answer: Answer {
                        offset: 0,
                        epoch: Arc::from(""),
                        current: false,
                        replay: Err(Miss::Unavailable),
                    },
                });
            } else {
                f.recovers.push(req);
            }
            return;
        }
        self.try_recover(&channel, req);
    }

    /// Answers from the recent frames when they cover the range, else reads the stream.
    fn try_recover(&mut self, channel: &Arc<str>, req: RecoverReq) {
        let (max, ttl) = (
            self.shared.config.recovery_max,
            self.shared.config.history_ttl,
        );
        let Some(f) = self.follows.get(channel) else {
            return;
        };
        let Some((top, epoch)) = f.mirror.position() else {
            return;
        };
        let since = &req.since;
        let redis_down = self
            .shared
            .cluster
            .as_ref()
            .is_some_and(|c| !c.is_healthy());
        // While Redis is unreachable this node may lack what other nodes stored just before:
        // never a partial replay, so no recovery at all (PROTOCOL.md §12).
        let decided = if redis_down {
            Some(Err(Miss::Unavailable))
        } else if **epoch != *since.epoch {
            Some(Err(Miss::Epoch))
        } else if since.offset > top {
            Some(Err(Miss::Ahead))
        } else if top - since.offset > max as u64 {
            Some(Err(Miss::TooMany))
        } else {
            f.mirror
                .recent_since(since.offset, Instant::now(), ttl, max)
                .ok()
                .map(Ok)
        };
        match decided {
            Some(replay) => self.answer_recover(channel, req, replay),
            None => {
                let limit = (top - since.offset) as usize;
                self.read_range(
                    channel,
                    req.since.offset,
                    limit,
                    RangeFor::Recover {
                        shard: req.shard,
                        key: req.key,
                        conn_id: req.conn_id,
                        since: req.since,
                    },
                );
            }
        }
    }

    /// Registers the shard's interest and answers at the mirror's current offset, through the
    /// channel's FIFO (mesh ordering rule).
    fn answer_recover(
        &mut self,
        channel: &Arc<str>,
        req: RecoverReq,
        replay: Result<Vec<Bytes>, Miss>,
    ) {
        let Some(f) = self.follows.get_mut(channel) else {
            return;
        };
        let Some((offset, epoch)) = f.mirror.position().map(|(o, e)| (o, e.clone())) else {
            return;
        };
        f.interest.insert(req.shard);
        let _ = self.shared.inboxes[req.shard].send(ShardMsg::Recovered {
            channel: channel.clone(),
            key: req.key,
            conn_id: req.conn_id,
            answer: Answer {
                offset,
                epoch,
                current: true,
                replay,
            },
        });
    }

    fn read_range(&mut self, channel: &Arc<str>, since: u64, limit: usize, purpose: RangeFor) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let inbox = self.shared.inboxes[self.id].clone();
        let ch = channel.clone();
        cluster.send(Request::Range {
            channel: channel.clone(),
            since,
            limit,
            reply: Box::new(move |result| {
                let _ = inbox.send(ShardMsg::Ranged {
                    channel: ch,
                    purpose,
                    result,
                });
            }),
        });
    }

    /// A range read came back.
    pub(super) fn on_ranged(
        &mut self,
        channel: Arc<str>,
        purpose: RangeFor,
        result: Result<Range, crate::cluster::Unavailable>,
    ) {
        match purpose {
            RangeFor::Recover {
                shard,
                key,
                conn_id,
                since,
            } => {
                let replay = match result {
                    Err(_) => Err(Miss::Unavailable),
                    Ok(range) => self.complete_recovery(&channel, &since, range),
                };
                let req = RecoverReq {
                    shard,
                    key,
                    conn_id,
                    since,
                };
                self.answer_recover(&channel, req, replay);
            }
            RangeFor::Fill => {
                if let Some(f) = self.follows.get_mut(&channel) {
                    f.filling = false;
                }
                match result {
                    Ok(range) => self.fill(&channel, range),
                    Err(_) => self
                        .refills
                        .push_back((Instant::now() + REFILL_AFTER, channel)),
                }
            }
        }
    }

    /// The frames after `since` up to the mirror's current offset: the stream's, then the
    /// mirror's recent ones for what arrived after the read. All or a miss.
    fn complete_recovery(
        &self,
        channel: &Arc<str>,
        since: &Since,
        range: Range,
    ) -> Result<Vec<Bytes>, Miss> {
        let (max, ttl) = (
            self.shared.config.recovery_max,
            self.shared.config.history_ttl,
        );
        let f = self.follows.get(channel).ok_or(Miss::Trimmed)?;
        let (top, epoch) = f.mirror.position().ok_or(Miss::Trimmed)?;
        if range.position.epoch != *epoch || **epoch != *since.epoch {
            return Err(Miss::Epoch);
        }
        if top < since.offset {
            return Err(Miss::Ahead);
        }
        if top - since.offset > max as u64 {
            return Err(Miss::TooMany);
        }
        let mut out = Vec::with_capacity((top - since.offset) as usize);
        let mut next = since.offset + 1;
        take_run(&mut out, &mut next, top, range.frames)?;
        if next <= top {
            let recent = f.mirror.recent_after(next - 1, Instant::now(), ttl);
            take_run(&mut out, &mut next, top, recent)?;
        }
        if next == top + 1 {
            Ok(out)
        } else {
            Err(Miss::Trimmed)
        }
    }

    /// Asks for the missing range when messages are held behind a gap.
    fn check_gap(&mut self, channel: &Arc<str>) {
        let size = self.shared.config.history_size.max(1);
        let Some(f) = self.follows.get_mut(channel) else {
            return;
        };
        if f.filling {
            return;
        }
        let Some((after, _)) = f.mirror.gap() else {
            return;
        };
        f.filling = true;
        self.read_range(channel, after, size, RangeFor::Fill);
    }

    /// The topic was subscribed again after a lost connection: read what may have been missed.
    pub(super) fn on_resumed(&mut self, channel: Arc<str>) {
        let size = self.shared.config.history_size.max(1);
        let Some(f) = self.follows.get_mut(&channel) else {
            return;
        };
        let Some((released, _)) = f.mirror.position() else {
            return;
        };
        if f.filling {
            return;
        }
        f.filling = true;
        self.read_range(&channel, released, size, RangeFor::Fill);
    }

    /// Offers the stream's messages to the mirror; what the stream no longer holds, or a new
    /// epoch, loses the channel here (4010).
    fn fill(&mut self, channel: &Arc<str>, range: Range) {
        let (size, now) = (self.shared.config.history_size, Instant::now());
        let Some(f) = self.follows.get_mut(channel) else {
            return;
        };
        let Some(epoch) = f.mirror.position().map(|(_, e)| e.clone()) else {
            return;
        };
        if range.position.epoch != epoch {
            self.lose(channel, range.position);
            return;
        }
        let mut out = Vec::new();
        for (o, frame) in range.frames {
            f.mirror.offer(o, &epoch, frame, now, size, &mut out);
        }
        let released = f.mirror.position().map_or(0, |(o, _)| o);
        self.deliver_released(channel, out);
        if released < range.position.offset {
            self.lose(channel, range.position);
        } else {
            self.check_gap(channel);
        }
    }

    /// The stream cannot be continued on this node: every shard closes its subscribers of the
    /// channel with 4010, and the mirror starts over at `at`.
    fn lose(&mut self, channel: &Arc<str>, at: Position) {
        let Some(f) = self.follows.get_mut(channel) else {
            return;
        };
        tracing::warn!(
            shard = self.id,
            channel = %channel,
            epoch = %at.epoch,
            offset = at.offset,
            "stream lost in Redis: subscribers closed with 4010"
        );
        for shard in f.interest.iter() {
            let _ = self.shared.inboxes[shard].send(ShardMsg::Lost {
                channel: channel.clone(),
            });
        }
        for (offset, c) in std::mem::take(&mut f.claims) {
            c.results.sequenced(c.index, offset, &c.epoch, 0);
            c.results.report(c.index, 0);
        }
        f.mirror.reset(at.offset, at.epoch);
    }

    /// Closes every local subscriber of `channel` with 4010 (its stream was lost).
    pub(super) fn on_lost(&mut self, channel: &str) {
        let Some(cid) = self.registry.lookup(channel) else {
            return;
        };
        let keys: Vec<usize> = self
            .registry
            .members(cid)
            .map(|m| m.iter_ones().collect())
            .unwrap_or_default();
        for key in keys {
            self.close(key, CloseReason::InsufficientState);
        }
    }

    /// Lets go of topics whose last interest left [`RELEASE_AFTER`] ago, and tries again the
    /// range reads that failed [`REFILL_AFTER`] ago (equal delays: each queue is in deadline
    /// order, no scan).
    pub(super) fn release_follows(&mut self, now: Instant) {
        while self.ack_checks.front().is_some_and(|(at, _)| *at <= now) {
            let Some((_, channel)) = self.ack_checks.pop_front() else {
                break;
            };
            let Some(f) = self.follows.get(&channel).filter(|f| !f.mirror.is_live()) else {
                continue;
            };
            // Still waiting for Redis: waiting requests are answered now; the acks stay.
            let mut shards = f.acks.clone();
            shards.sort_unstable();
            shards.dedup();
            for shard in shards {
                let _ = self.shared.inboxes[shard].send(ShardMsg::InterestRefused {
                    channel: channel.clone(),
                });
            }
        }
        while self.refills.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, channel)) = self.refills.pop_front() {
                self.on_resumed(channel);
            }
        }
        while self.releases.front().is_some_and(|(at, _)| *at <= now) {
            let Some((_, channel)) = self.releases.pop_front() else {
                break;
            };
            if !self.follows.get(&channel).is_some_and(Follow::unused) {
                continue;
            }
            self.follows.remove(&channel);
            if let Some(c) = self.cluster() {
                c.send(Request::Unsubscribe { channel });
            }
        }
    }
}

/// Appends the frames of `frames` from offset `*next` up to `top` to `out`, consecutively; a
/// hole is a miss.
fn take_run(
    out: &mut Vec<Bytes>,
    next: &mut u64,
    top: u64,
    frames: Vec<(u64, Bytes)>,
) -> Result<(), Miss> {
    for (o, frame) in frames {
        if o > top {
            break;
        }
        if o != *next {
            return Err(Miss::Trimmed);
        }
        out.push(frame);
        *next += 1;
    }
    Ok(())
}
