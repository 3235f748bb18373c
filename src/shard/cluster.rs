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
//!   stream completed by the mirror, at the mirror's current offset; a client that saw more on
//!   another node than this node's mirror has released yet (nodes read the topic at their own
//!   pace) waits until the mirror gets there, once Redis confirmed the channel did;
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

/// A recovery whose `since` is above the mirror's position: this node is behind the node the
/// client came from. Answered once Redis confirmed the channel reached `since` (`confirmed`)
/// and the mirror released up to it; answered as a miss if Redis says the channel never got
/// there.
struct Behind {
    req: RecoverReq,
    confirmed: bool,
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
    behind: Vec<Behind>,
    claims: BTreeMap<u64, Claim>,
    filling: bool,
}

impl Follow {
    fn unused(&self) -> bool {
        self.interest.is_empty()
            && self.acks.is_empty()
            && self.recovers.is_empty()
            && self.behind.is_empty()
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
                    self.answer_shard(
                        shard,
                        ShardMsg::InterestAck {
                            channel,
                            offset,
                            epoch,
                        },
                    );
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
        let acks = std::mem::take(&mut f.acks);
        for &shard in &acks {
            f.interest.insert(shard);
        }
        // Publishes stored before the subscription began reached nobody here; they are still
        // answered with their offset.
        let later = f.claims.split_off(&(position.offset + 1));
        let early = std::mem::replace(&mut f.claims, later);
        let recovers = std::mem::take(&mut f.recovers);
        for (offset, c) in early {
            c.results.sequenced(c.index, offset, &c.epoch, 0);
            c.results.report(c.index, 0);
        }
        for shard in acks {
            self.answer_shard(
                shard,
                ShardMsg::InterestAck {
                    channel: channel.clone(),
                    offset: position.offset,
                    epoch: position.epoch.clone(),
                },
            );
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
        if out.is_empty() {
            return;
        }
        for (offset, frame) in out {
            self.deliver_one(channel, offset, frame);
        }
        self.wake_behind(channel);
    }

    /// The answer to the position read of a recovery waiting in `behind`, if `id` (shard, key,
    /// connection) is one: it waits on if the channel reached its `since` in Redis, or is
    /// answered as a miss (never reached, another epoch, or Redis unavailable).
    fn on_probed(
        &mut self,
        channel: &Arc<str>,
        id: (usize, usize, u64),
        result: &Result<Range, crate::cluster::Unavailable>,
    ) -> bool {
        let Some(f) = self.follows.get_mut(channel) else {
            return false;
        };
        let Some(i) = f
            .behind
            .iter()
            .position(|b| !b.confirmed && (b.req.shard, b.req.key, b.req.conn_id) == id)
        else {
            return false;
        };
        let since = &f.behind[i].req.since;
        let miss = match result {
            Err(_) => Some(Miss::Unavailable),
            Ok(r) if *r.position.epoch != *since.epoch => Some(Miss::Epoch),
            Ok(r) if r.position.offset < since.offset => Some(Miss::Ahead),
            Ok(_) => None,
        };
        match miss {
            None => {
                f.behind[i].confirmed = true;
                // The mirror may have got there while Redis answered.
                self.wake_behind(channel);
            }
            Some(miss) => {
                let b = f.behind.remove(i);
                self.answer_recover(channel, b.req, Err(miss));
            }
        }
        true
    }

    /// Decides the confirmed recoveries waiting in `behind` that the mirror has caught up with
    /// (or whose epoch it left).
    fn wake_behind(&mut self, channel: &Arc<str>) {
        let Some(f) = self.follows.get_mut(channel) else {
            return;
        };
        if f.behind.is_empty() {
            return;
        }
        let Some((top, epoch)) = f.mirror.position().map(|(o, e)| (o, e.clone())) else {
            return;
        };
        let (ready, wait): (Vec<Behind>, Vec<Behind>) =
            std::mem::take(&mut f.behind).into_iter().partition(|b| {
                b.confirmed && (b.req.since.offset <= top || *epoch != *b.req.since.epoch)
            });
        f.behind = wait;
        for b in ready {
            self.try_recover(channel, b.req);
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
        let Some(f) = self.follow(&channel) else {
            return;
        };
        if f.mirror.is_live() {
            self.try_recover(&channel, req);
        } else if redis_down {
            // Redis is unreachable: refuse the recovery now (never wait or replay part), and
            // acknowledge the subscription when Redis answers again.
            f.acks.push(req.shard);
            let answer = Answer {
                offset: 0,
                epoch: Arc::from(""),
                current: false,
                replay: Err(Miss::Unavailable),
            };
            let msg = ShardMsg::Recovered {
                channel,
                key: req.key,
                conn_id: req.conn_id,
                answer,
            };
            self.answer_shard(req.shard, msg);
        } else {
            f.recovers.push(req);
        }
    }

    /// Answers from the recent frames when they cover the range, else reads the stream.
    fn try_recover(&mut self, channel: &Arc<str>, req: RecoverReq) {
        let (max, ttl) = (
            self.shared.config.recovery_max,
            self.shared.config.history_ttl,
        );
        let redis_down = self
            .shared
            .cluster
            .as_ref()
            .is_some_and(|c| !c.is_healthy());
        let Some(f) = self.follows.get_mut(channel) else {
            return;
        };
        let Some((top, epoch)) = f.mirror.position() else {
            return;
        };
        let since = &req.since;
        if !redis_down && **epoch == *since.epoch && since.offset > top {
            // Not "never reached" yet: the client may come from a node that is ahead of this
            // one. Redis says whether the channel got there (a position read, limit 0).
            let probe = RangeFor::Recover {
                shard: req.shard,
                key: req.key,
                conn_id: req.conn_id,
                since: since.clone(),
            };
            let after = since.offset;
            f.behind.push(Behind {
                req,
                confirmed: false,
            });
            self.read_range(channel, after, 0, probe);
            return;
        }
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
        self.answer_shard(
            req.shard,
            ShardMsg::Recovered {
                channel: channel.clone(),
                key: req.key,
                conn_id: req.conn_id,
                answer: Answer {
                    offset,
                    epoch,
                    current: true,
                    replay,
                },
            },
        );
    }

    /// Sends an owner's answer (`InterestAck`, `Recovered`, `Lost`) to `shard`, or handles it
    /// at once when `shard` is this one. The owner fans a channel's messages out to its own
    /// subscribers directly, not through its inbox, so an answer queued to itself would be
    /// handled after messages above its offset were already fanned out without the new
    /// subscriber (a gap), or after new-epoch messages reached subscribers it closes.
    fn answer_shard(&mut self, shard: usize, msg: ShardMsg) {
        if shard == self.id {
            self.on_message(msg);
        } else {
            let _ = self.shared.inboxes[shard].send(msg);
        }
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
                if self.on_probed(&channel, (shard, key, conn_id), &result) {
                    return;
                }
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
        let shards: Vec<usize> = f.interest.iter().collect();
        for (offset, c) in std::mem::take(&mut f.claims) {
            c.results.sequenced(c.index, offset, &c.epoch, 0);
            c.results.report(c.index, 0);
        }
        f.mirror.reset(at.offset, at.epoch.clone());
        for shard in shards {
            self.answer_shard(
                shard,
                ShardMsg::Lost {
                    channel: channel.clone(),
                    offset: at.offset,
                    epoch: at.epoch.clone(),
                },
            );
        }
        // Recoveries waiting for the old epoch learn it is gone.
        self.wake_behind(channel);
    }

    /// Closes every local subscriber of `channel` with 4010 (its stream was lost); the view
    /// goes on at the new start (`offset`, `epoch`), as after an `InterestAck`, so whoever
    /// subscribes next (or a recovery in flight) gets the new epoch's messages.
    pub(super) fn on_lost(&mut self, channel: &str, offset: u64, epoch: Arc<str>) {
        if let Some(v) = self.views.get_mut(channel).filter(|v| v.acked) {
            v.tail = offset;
            v.epoch = epoch;
        }
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

#[cfg(test)]
mod tests {
    //! The owner's side against a fake Redis (the test answers each request): a connection on
    //! the owner shard itself, and recoveries from a client that is ahead of this node.
    use std::cell::RefCell;
    use std::io::Read;
    use std::rc::Rc;

    use serde_json::json;
    use tokio::sync::mpsc;

    use super::*;
    use crate::cluster::Settings;
    use crate::codec::{encode_masked_frame, text_frame, Decoder, OpCode};
    use crate::config::{parse_from, Command};
    use crate::protocol::Since;
    use crate::shard::mesh::{owner_of, Admission, PublishBody};
    use crate::shard::{ConnParams, Shared};

    const E: &str = "01TESTEPOCH000000000000000";

    struct Rig {
        shard: Rc<RefCell<Shard>>,
        shared: Arc<Shared>,
        inboxes: Vec<mpsc::UnboundedReceiver<ShardMsg>>,
        redis: mpsc::UnboundedReceiver<Request>,
    }

    /// Shard 0 of two, in cluster mode; the other shard's inbox is the test's.
    fn rig() -> Rig {
        let Command::Serve(config) = parse_from(["huddle", "serve"]).expect("flags").command else {
            unreachable!("serve was asked for")
        };
        let (senders, inboxes): (Vec<_>, Vec<_>) =
            (0..2).map(|_| mpsc::unbounded_channel()).unzip();
        let mut shared = Shared::new(*config, vec!["k".into()], senders).expect("shared");
        let (cluster, redis) = Cluster::fake(Settings {
            urls: vec![],
            prefix: "huddle".into(),
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            presence_ttl: Duration::from_secs(40),
        });
        shared.cluster = Some(cluster);
        let shared = Arc::new(shared);
        Rig {
            shard: Shard::new_cell(0, shared.clone()),
            shared,
            inboxes,
            redis,
        }
    }

    impl Rig {
        /// Handles everything waiting in shard 0's inbox.
        fn pump(&mut self) {
            while let Ok(m) = self.inboxes[0].try_recv() {
                self.shard.borrow_mut().on_message(m);
            }
            self.shard.borrow_mut().flush_dirty();
        }

        fn to_owner(&self, msg: ShardMsg) {
            let _ = self.shared.inboxes[0].send(msg);
        }

        fn request(&mut self) -> Request {
            self.redis.try_recv().expect("a request to Redis")
        }

        /// Answers the channel's topic subscription at `offset`.
        fn subscribed_at(&mut self, offset: u64) {
            let Request::Subscribe { reply, .. } = self.request() else {
                panic!("expected a subscription");
            };
            reply(Ok(Position {
                offset,
                epoch: Arc::from(E),
            }));
        }

        /// What shard 1 received, in order: ("deliver", offset), ("ack", offset),
        /// ("recovered", offset) or ("missed", offset).
        fn shard1(&mut self) -> Vec<(&'static str, u64)> {
            let mut out = Vec::new();
            while let Ok(m) = self.inboxes[1].try_recv() {
                out.push(match m {
                    ShardMsg::Deliver(m) => ("deliver", m.offset),
                    ShardMsg::InterestAck { offset, .. } => ("ack", offset),
                    ShardMsg::Recovered { answer, .. } if answer.replay.is_ok() => {
                        ("recovered", answer.offset)
                    }
                    ShardMsg::Recovered { answer, .. } => ("missed", answer.offset),
                    _ => ("other", 0),
                });
            }
            out
        }
    }

    /// A channel whose owner is shard 0.
    fn owned_channel() -> Arc<str> {
        (0..)
            .map(|i| format!("ch{i}"))
            .find(|c| owner_of(c, 2) == 0)
            .map(Arc::from)
            .expect("a name")
    }

    fn remote(channel: &Arc<str>, offset: u64) -> ShardMsg {
        let json = json!({"event_type":"tick","channel":&**channel,"offset":offset,"data":{}});
        ShardMsg::Remote {
            channel: channel.clone(),
            remote: Remote {
                offset,
                epoch: Arc::from(E),
                frame: text_frame(json.to_string().as_bytes()),
            },
        }
    }

    fn run<F: std::future::Future<Output = ()>>(f: F) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f);
    }

    /// A connection on shard 0 and the client's end of its socket.
    struct Peer {
        key: usize,
        client: std::net::TcpStream,
        buf: Vec<u8>,
    }

    impl Peer {
        async fn connect(rig: &Rig) -> Peer {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let params = ConnParams {
                echo: false,
                channels: vec![],
                user_id: None,
                api_key: false,
                token: None,
            };
            let (key, _io) = rig.shard.borrow_mut().register(server, params);
            rig.shard.borrow_mut().flush_dirty();
            let mut p = Peer {
                key,
                client,
                buf: Vec::new(),
            };
            assert_eq!(p.json()["event_type"], "connection_ack");
            p
        }

        fn send(&self, rig: &Rig, msg: serde_json::Value) {
            let frame = encode_masked_frame(true, OpCode::Text, msg.to_string().as_bytes(), [1; 4]);
            let mut shard = rig.shard.borrow_mut();
            shard.on_bytes(self.key, &mut Decoder::new(65536), &frame);
            shard.flush_dirty();
        }

        /// The next text frame (under 64 KiB).
        fn json(&mut self) -> serde_json::Value {
            loop {
                let b = &self.buf;
                let head = match b.get(1).map(|l| l & 0x7f) {
                    Some(126) if b.len() >= 4 => Some((4, u16::from_be_bytes([b[2], b[3]]).into())),
                    Some(n) if n < 126 => Some((2, usize::from(n))),
                    _ => None,
                };
                if let Some((h, len)) = head.filter(|(h, len)| b.len() >= h + len) {
                    let v = serde_json::from_slice(&b[h..h + len]).expect("JSON");
                    self.buf.drain(..h + len);
                    return v;
                }
                let mut chunk = [0u8; 4096];
                let n = self.client.read(&mut chunk).expect("a frame");
                assert!(n > 0, "EOF");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }

        /// The offsets of the next `n` channel messages.
        fn offsets(&mut self, n: usize) -> Vec<u64> {
            (0..n)
                .map(|_| self.json()["offset"].as_u64().expect("offset"))
                .collect()
        }
    }

    #[test]
    fn a_subscriber_on_the_owner_shard_misses_nothing_after_its_subscribe_reply() {
        run(async {
            let mut rig = rig();
            let ch = owned_channel();
            let mut peer = Peer::connect(&rig).await;
            peer.send(
                &rig,
                json!({"event_type":"user_subscription","message_id":"s","data":{"channel":&*ch}}),
            );
            rig.pump(); // the shard's Interest, to itself: the topic is subscribed
                        // 11 arrives before the position is known, 12 right after it: both are above it.
            rig.to_owner(remote(&ch, 11));
            rig.subscribed_at(10);
            rig.to_owner(remote(&ch, 12));
            rig.pump();
            let reply = peer.json();
            assert_eq!(reply["data"]["offset"], 10, "{reply}");
            assert_eq!(peer.offsets(2), [11, 12]);
        });
    }

    #[test]
    fn a_recovery_on_the_owner_shard_goes_live_without_a_gap() {
        run(async {
            let mut rig = rig();
            let ch = owned_channel();
            let mut peer = Peer::connect(&rig).await;
            peer.send(
                &rig,
                json!({"event_type":"user_subscription","message_id":"s",
                    "data":{"channel":&*ch,"since":{"offset":10,"epoch":E}}}),
            );
            rig.pump(); // the Recover, to itself
            rig.subscribed_at(10);
            rig.to_owner(remote(&ch, 11));
            rig.pump();
            rig.to_owner(remote(&ch, 12));
            rig.pump();
            let reply = peer.json();
            assert_eq!(
                (&reply["data"]["recovered"], &reply["data"]["offset"]),
                (&json!(true), &json!(10)),
                "{reply}"
            );
            assert_eq!(peer.offsets(2), [11, 12]);
        });
    }

    #[test]
    fn a_client_ahead_of_this_node_recovers_once_the_node_catches_up() {
        run(async {
            let mut rig = rig();
            let ch = owned_channel();
            rig.to_owner(ShardMsg::Interest {
                channel: ch.clone(),
                shard: 1,
                on: true,
            });
            rig.pump();
            rig.subscribed_at(10);
            rig.pump();
            assert_eq!(rig.shard1(), [("ack", 10)]);
            // The client saw 12 on a node that is ahead of this one.
            let recover = |offset| ShardMsg::Recover {
                channel: ch.clone(),
                shard: 1,
                key: 3,
                conn_id: offset,
                since: Since {
                    offset,
                    epoch: E.into(),
                },
            };
            rig.to_owner(recover(12));
            rig.pump();
            let Request::Range {
                since,
                limit,
                reply,
                ..
            } = rig.request()
            else {
                panic!("expected a position read");
            };
            assert_eq!((since, limit), (12, 0));
            assert!(rig.shard1().is_empty(), "not answered \"ahead\"");
            reply(Ok(Range {
                position: Position {
                    offset: 14,
                    epoch: Arc::from(E),
                },
                first: 0,
                frames: vec![],
            }));
            rig.pump();
            assert!(rig.shard1().is_empty(), "waits for the mirror");
            for o in 11..=14 {
                rig.to_owner(remote(&ch, o));
            }
            rig.pump();
            assert_eq!(
                rig.shard1(),
                [
                    ("deliver", 11),
                    ("deliver", 12),
                    ("recovered", 12),
                    ("deliver", 13),
                    ("deliver", 14)
                ]
            );
            // An offset the channel never reached is still refused, once Redis says so.
            rig.to_owner(recover(20));
            rig.pump();
            let Request::Range { reply, .. } = rig.request() else {
                panic!("expected a position read");
            };
            reply(Ok(Range {
                position: Position {
                    offset: 14,
                    epoch: Arc::from(E),
                },
                first: 0,
                frames: vec![],
            }));
            rig.pump();
            assert_eq!(rig.shard1(), [("missed", 14)]);
        });
    }

    #[test]
    fn a_publish_stored_before_the_subscription_began_is_answered_with_its_offset() {
        run(async {
            let mut rig = rig();
            let ch = owned_channel();
            rig.to_owner(ShardMsg::Interest {
                channel: ch.clone(),
                shard: 1,
                on: true,
            });
            rig.pump();
            let (results, mut done) = PublishGather::new(vec![ch.clone()]);
            let job = SequenceJob {
                channel: ch.clone(),
                body: Arc::new(PublishBody {
                    event_type: "tick".into(),
                    message_id: "m1".into(),
                    named: false,
                    data: Arc::new(json!({})),
                }),
                results: results.clone(),
                index: 0,
                permit: Admission::new(4).try_acquire().expect("a permit"),
            };
            // The script answered offset 7 before the subscription's position (9) was read.
            rig.to_owner(ShardMsg::Published {
                job,
                result: Ok(Position {
                    offset: 7,
                    epoch: Arc::from(E),
                }),
            });
            rig.pump();
            rig.subscribed_at(9);
            rig.pump();
            assert!(done.try_recv().is_ok(), "answered");
            let r = &results.results()[0];
            assert_eq!((r.offset, r.epoch.as_str(), r.recipients), (7, E, 0));
        });
    }
}
