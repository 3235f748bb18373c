//! Subscribe and unsubscribe requests (PROTOCOL.md §4, §9, §10): rights, the owners' answers,
//! recovery, and the replies in request order.
//!
//! A request is taken one channel at a time, in the order the client listed them. A channel is
//! *ready* when this shard follows it (its owner acknowledged our interest) or, for a
//! subscription with `since`, when the owner's `Recovered` answer is in. While the next channel
//! is not ready the request is parked on the connection and the connection is not read, so the
//! replies of one request, and of the requests after it, keep their order. Views of the plain
//! channels are asked for up front so their round trips overlap; a `Recover` is sent only when
//! its channel is next (see the recovery rule in [`super::mesh`]).

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::json;

use super::mesh::{owner_of, Answer, ShardMsg};
use super::{Conn, Shard, View};
use crate::protocol::{ErrorCode, Filter, Since, SubscribeSpec};

/// A subscribe or unsubscribe request with its channels resolved to streams, taken from the
/// front.
pub(crate) struct ChannelOp {
    subscribe: bool,
    entries: VecDeque<Resolved>,
}

/// One channel of a request: the name the client used, the stream it maps to (a user's own
/// stream for `bets`/`bankroll`) or why the connection may not have it, and its options.
pub(crate) struct Resolved {
    name: String,
    stream: Result<Arc<str>, String>,
    filter: Option<Filter>,
    join_leave: bool,
    recovery: Recovery,
    /// Cluster mode: the owner could not follow the channel in time (Redis unreachable).
    refused: bool,
}

/// Where a subscription with `since` stands.
enum Recovery {
    /// No `since`.
    None,
    /// Not asked yet (it is not the request's next channel).
    Wanted(Since),
    /// `Recover` sent to the owner.
    Asked,
    /// The owner's answer (or this shard's own, when it owns the channel).
    Answered(Answer),
}

/// A request waiting for a channel's answer.
pub(crate) struct Parked {
    op: ChannelOp,
    reply_to: Option<String>,
}

impl Shard {
    /// A subscribe request: rights first, then the owners' answers, then the replies.
    pub(super) fn subscribe_request(
        &mut self,
        key: usize,
        specs: Vec<SubscribeSpec>,
        reply_to: Option<String>,
    ) {
        let rights = self.conns.get(key).map(Conn::rights).unwrap_or_default();
        let policy = &self.shared.policy;
        let entries: VecDeque<Resolved> = specs
            .into_iter()
            .map(|spec| Resolved {
                stream: policy
                    .subscribe_key(&spec.channel, &rights)
                    .map(|k| Arc::from(&*k)),
                name: spec.channel,
                filter: spec.filter,
                join_leave: spec.join_leave,
                recovery: spec.since.map_or(Recovery::None, Recovery::Wanted),
                refused: false,
            })
            .collect();
        // Overlap the round trips of the plain channels.
        for r in &entries {
            if let (Ok(stream), Recovery::None) = (&r.stream, &r.recovery) {
                self.ensure_view(stream);
            }
        }
        let op = ChannelOp {
            subscribe: true,
            entries,
        };
        self.start(key, op, reply_to);
    }

    /// An unsubscribe request (leaving needs no right).
    pub(super) fn unsubscribe_request(
        &mut self,
        key: usize,
        names: Vec<String>,
        reply_to: Option<String>,
    ) {
        let rights = self.conns.get(key).map(Conn::rights).unwrap_or_default();
        let policy = &self.shared.policy;
        let entries = names
            .into_iter()
            .map(|name| Resolved {
                stream: Ok(Arc::from(&*policy.unsubscribe_key(&name, &rights))),
                name,
                filter: None,
                join_leave: false,
                recovery: Recovery::None,
                refused: false,
            })
            .collect();
        let op = ChannelOp {
            subscribe: false,
            entries,
        };
        self.start(key, op, reply_to);
    }

    fn start(&mut self, key: usize, op: ChannelOp, reply_to: Option<String>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let conn_id = conn.id;
        conn.parked = Some(Box::new(Parked { op, reply_to }));
        self.advance(key, conn_id);
    }

    /// Runs the parked request of `key` as far as its channels are ready; when it is done the
    /// connection is read again.
    pub(super) fn advance(&mut self, key: usize, conn_id: u64) {
        loop {
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.id == conn_id) else {
                return;
            };
            let Some(mut parked) = conn.parked.take() else {
                return;
            };
            let Some(head) = parked.op.entries.front_mut() else {
                conn.io.wake.notify_one();
                return;
            };
            let ready = if parked.op.subscribe {
                self.subscribe_ready(key, conn_id, head)
            } else {
                self.unsubscribe_ready(key, conn_id, head)
            };
            let next = if ready {
                parked.op.entries.pop_front()
            } else {
                None
            };
            let (subscribe, reply_to) = (parked.op.subscribe, parked.reply_to.clone());
            if let Some(c) = self.conns.get_mut(key) {
                c.parked = Some(parked);
            }
            match next {
                None => return,
                Some(r) if subscribe => self.subscribe_one(key, r, reply_to.as_deref()),
                Some(r) => self.unsubscribe_one(key, r, reply_to.as_deref()),
            }
        }
    }

    /// Whether the next channel of a subscribe can be answered now; if not, makes sure its
    /// answer is coming and that it wakes this request.
    fn subscribe_ready(&mut self, key: usize, conn_id: u64, r: &mut Resolved) -> bool {
        let Ok(stream) = &r.stream else {
            return true;
        };
        if r.refused {
            return true;
        }
        match std::mem::replace(&mut r.recovery, Recovery::None) {
            Recovery::None => {
                if self.ensure_view(stream) {
                    return true;
                }
                if self.views.get(stream).is_some_and(|v| v.refused) {
                    r.refused = true;
                    return true;
                }
                self.wait_on(stream, key, conn_id);
                false
            }
            Recovery::Wanted(since) => {
                let owner = owner_of(stream, self.shared.inboxes.len());
                if owner == self.id && !self.clustered(stream) {
                    self.ensure_view(stream);
                    r.recovery = Recovery::Answered(self.recovery_answer(stream, &since));
                    return true;
                }
                let view = self
                    .views
                    .entry(stream.clone())
                    .or_insert_with(View::pending);
                view.recovering += 1;
                let _ = self.shared.inboxes[owner].send(ShardMsg::Recover {
                    channel: stream.clone(),
                    shard: self.id,
                    key,
                    conn_id,
                    since,
                });
                r.recovery = Recovery::Asked;
                false
            }
            Recovery::Asked => {
                r.recovery = Recovery::Asked;
                false
            }
            answered @ Recovery::Answered(_) => {
                r.recovery = answered;
                true
            }
        }
    }

    fn unsubscribe_ready(&mut self, key: usize, conn_id: u64, r: &Resolved) -> bool {
        let Ok(stream) = &r.stream else {
            return true;
        };
        if self.views.get(stream).is_none_or(|v| v.acked) {
            return true;
        }
        self.wait_on(stream, key, conn_id);
        false
    }

    /// Cluster mode: the owner could not follow `channel` in time. Requests waiting on it get
    /// an `unavailable` error for it and go on; the view stays pending (the owner's ack comes
    /// when Redis answers, for the connections subscribed at connect).
    pub(super) fn on_interest_refused(&mut self, channel: &Arc<str>) {
        let Some(view) = self.views.get_mut(channel).filter(|v| !v.acked) else {
            return;
        };
        view.refused = true;
        for (key, conn_id) in std::mem::take(&mut view.waiters) {
            if let Some(r) = self.parked_head(key, conn_id, channel) {
                r.refused = true;
            }
            self.advance(key, conn_id);
        }
        self.flush_dirty();
    }

    /// The next channel of connection `conn_id`'s parked request, if it is `channel`.
    fn parked_head(&mut self, key: usize, conn_id: u64, channel: &str) -> Option<&mut Resolved> {
        self.conns
            .get_mut(key)
            .filter(|c| c.id == conn_id)
            .and_then(|c| c.parked.as_mut())
            .and_then(|p| p.op.entries.front_mut())
            .filter(|r| r.stream.as_ref().is_ok_and(|s| &**s == channel))
    }

    fn wait_on(&mut self, stream: &Arc<str>, key: usize, conn_id: u64) {
        if let Some(v) = self.views.get_mut(stream) {
            if !v.waiters.contains(&(key, conn_id)) {
                v.waiters.push((key, conn_id));
            }
        }
    }

    /// The owner's `Recovered` for connection `conn_id`: acknowledges the view if it was new,
    /// then lets the request go on with the answer.
    pub(super) fn on_recovered(
        &mut self,
        channel: &Arc<str>,
        key: usize,
        conn_id: u64,
        answer: Answer,
    ) {
        if answer.current && self.views.get(channel).is_some_and(|v| !v.acked) {
            self.on_interest_ack(channel, answer.offset, answer.epoch.clone());
        }
        if let Some(r) = self.parked_head(key, conn_id, channel) {
            if matches!(r.recovery, Recovery::Asked) {
                r.recovery = Recovery::Answered(answer);
            }
        }
        self.advance(key, conn_id);
        if let Some(v) = self.views.get_mut(channel) {
            v.recovering = v.recovering.saturating_sub(1);
        }
        if self.registry.lookup(channel).is_none() {
            self.release_view(channel);
        }
        self.flush_dirty();
    }

    fn subscribe_one(&mut self, key: usize, r: Resolved, reply_to: Option<&str>) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let stream = match r.stream {
            Ok(s) => s,
            Err(why) => {
                self.reply_error(key, ErrorCode::Forbidden, why, reply_to);
                return;
            }
        };
        if r.refused {
            let why = format!(
                "{}: the Redis engine is unavailable; subscribe again later",
                r.name
            );
            self.reply_error(key, ErrorCode::Unavailable, why, reply_to);
            return;
        }
        let max = self.shared.config.max_subscriptions;
        let already = self
            .registry
            .lookup(&stream)
            .is_some_and(|cid| conn.subscription(cid).is_some());
        if !already && conn.subs.len() >= max {
            self.reply_error(
                key,
                ErrorCode::TooManySubscriptions,
                format!("{}: at most {max} subscriptions per connection", r.name),
                reply_to,
            );
            // The view asked for it may have no member now.
            if self.registry.lookup(&stream).is_none() {
                self.release_view(&stream);
            }
            return;
        }
        let replay_filter = r.filter.clone();
        let joined = self.add_subscription(key, &stream, r.filter, r.join_leave);
        match r.recovery {
            Recovery::Answered(answer) => {
                let recovered = answer.replay.is_ok();
                let position = answer.current.then_some((answer.offset, answer.epoch));
                self.render_channel_reply(key, &r.name, true, reply_to, position, Some(recovered));
                if let Ok(frames) = answer.replay {
                    self.replay(key, frames, replay_filter.as_ref());
                }
            }
            _ => {
                let position = self.position_of(&stream);
                self.render_channel_reply(key, &r.name, true, reply_to, position, None);
            }
        }
        if joined {
            self.presence_event(&stream, key, true);
        }
    }

    fn unsubscribe_one(&mut self, key: usize, r: Resolved, reply_to: Option<&str>) {
        let Ok(stream) = r.stream else {
            return;
        };
        // Answered with the position before leaving: no message of the channel follows.
        let position = self.position_of(&stream);
        if let Some(cid) = self.registry.lookup(&stream) {
            if let Some(conn) = self.conns.get_mut(key) {
                if let Some(i) = conn.subs.iter().position(|s| s.channel == cid) {
                    conn.subs.swap_remove(i);
                    conn.has_filters = conn.subs.iter().any(|s| s.filter.is_some());
                    self.leave_channel(cid, key);
                }
            }
        }
        self.render_channel_reply(key, &r.name, false, reply_to, position, None);
    }

    /// A `user_subscription` / `user_unsubscription` reply for `channel` as the client named it.
    fn render_channel_reply(
        &mut self,
        key: usize,
        channel: &str,
        subscribed: bool,
        reply_to: Option<&str>,
        position: Option<(u64, Arc<str>)>,
        recovered: Option<bool>,
    ) {
        let (event, status) = if subscribed {
            ("user_subscription", "subscribed")
        } else {
            ("user_unsubscription", "unsubscribed")
        };
        let mut data = json!({ "channel": channel, "status": status });
        if let Some(obj) = data.as_object_mut() {
            if let Some((offset, epoch)) = position {
                obj.insert("offset".into(), json!(offset));
                obj.insert("epoch".into(), json!(&*epoch));
            }
            if let Some(r) = recovered {
                obj.insert("recovered".into(), json!(r));
            }
        }
        self.reply(key, event, reply_to, &data);
    }
}
