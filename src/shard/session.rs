//! Client → server messages on one connection (PROTOCOL.md §4, §5, §7): subscribe,
//! unsubscribe, heartbeat, publish, and the replies. Bad input gets an `error` reply and the
//! connection goes on.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::{encode, publish, Conn, Parked, Shard};
use crate::protocol::{
    parse_client_message, ClientMessage, ClientRequest, ErrorCode, Filter, OutMessage,
    PublishRequest, SubscribeSpec, SUPPORTED_EVENTS,
};

impl Shard {
    /// A complete text message from the client.
    pub(super) fn on_text(&mut self, key: usize, text: Bytes) {
        let mut buf = text
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        match parse_client_message(&mut buf, self.shared.config.max_subscriptions) {
            Ok(msg) => self.on_request(key, msg),
            Err(e) => {
                tracing::debug!(
                    shard = self.id,
                    code = e.code.as_str(),
                    "client error: {}",
                    e.message
                );
                self.reply_error(key, e.code, e.message, e.reply_to.as_deref());
            }
        }
    }

    fn on_request(&mut self, key: usize, msg: ClientMessage) {
        let reply_to = msg.message_id.as_deref();
        match msg.request {
            ClientRequest::Heartbeat => {
                let data = json!({ "server_time": crate::protocol::timestamp_now() });
                self.reply(key, "heartbeat", reply_to, &data);
            }
            ClientRequest::Publish(req) => self.publish_from(key, req, msg.message_id),
            ClientRequest::Refresh(token) => self.refresh(key, &token, reply_to),
            ClientRequest::Subscribe(specs) => {
                let op = self.resolve(key, ChannelRequest::Subscribe(specs));
                self.channel_request(key, op, msg.message_id)
            }
            ClientRequest::Unsubscribe(names) => {
                let op = self.resolve(key, ChannelRequest::Unsubscribe(names));
                self.channel_request(key, op, msg.message_id)
            }
        }
    }

    /// Each channel of a (un)subscribe request with the stream it reads, or why it may not
    /// (leaving needs no right).
    fn resolve(&self, key: usize, request: ChannelRequest) -> ChannelOp {
        let rights = self.conns.get(key).map(Conn::rights).unwrap_or_default();
        let policy = &self.shared.policy;
        let stream = |k: std::borrow::Cow<'_, str>| Arc::from(&*k);
        match request {
            ChannelRequest::Subscribe(specs) => ChannelOp::Subscribe(
                specs
                    .into_iter()
                    .map(|spec| Resolved {
                        stream: policy.subscribe_key(&spec.channel, &rights).map(stream),
                        name: spec.channel,
                        filter: spec.filter,
                    })
                    .collect(),
            ),
            ChannelRequest::Unsubscribe(names) => ChannelOp::Unsubscribe(
                names
                    .into_iter()
                    .map(|name| Resolved {
                        stream: Ok(stream(policy.unsubscribe_key(&name, &rights))),
                        name,
                        filter: None,
                    })
                    .collect(),
            ),
        }
    }

    /// A subscribe or unsubscribe. Streams this shard does not follow yet are asked of their
    /// owners first; the request is parked (and the connection not read) until every answer
    /// is in, so its replies carry exact offsets and come in request order.
    fn channel_request(&mut self, key: usize, op: ChannelOp, reply_to: Option<String>) {
        let Some(conn_id) = self.conns.get(key).map(|c| c.id) else {
            return;
        };
        let subscribing = matches!(op, ChannelOp::Subscribe(_));
        let mut waiting = false;
        for stream in op.streams() {
            let acked = if subscribing {
                self.ensure_view(stream)
            } else {
                self.views.get(stream).is_none_or(|v| v.acked)
            };
            if !acked {
                waiting = true;
                if let Some(v) = self.views.get_mut(stream) {
                    if !v.waiters.contains(&(key, conn_id)) {
                        v.waiters.push((key, conn_id));
                    }
                }
            }
        }
        if waiting {
            if let Some(c) = self.conns.get_mut(key) {
                c.parked = Some(Box::new(Parked { op, reply_to }));
            }
            return;
        }
        self.run_channel_request(key, op, reply_to.as_deref());
    }

    /// Resumes a parked request once every stream it names is followed.
    pub(super) fn unpark(&mut self, key: usize, conn_id: u64) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.id == conn_id) else {
            return;
        };
        let Some(parked) = conn.parked.take() else {
            return;
        };
        let still_waiting = parked
            .op
            .streams()
            .any(|n| self.views.get(n).is_some_and(|v| !v.acked));
        if still_waiting {
            // Another channel's ack resumes it.
            if let Some(c) = self.conns.get_mut(key) {
                c.parked = Some(parked);
            }
            return;
        }
        if let Some(c) = self.conns.get_mut(key) {
            c.io.wake.notify_one();
        }
        let Parked { op, reply_to } = *parked;
        self.run_channel_request(key, op, reply_to.as_deref());
    }

    fn run_channel_request(&mut self, key: usize, op: ChannelOp, reply_to: Option<&str>) {
        match op {
            ChannelOp::Subscribe(list) => self.subscribe(key, list, reply_to),
            ChannelOp::Unsubscribe(list) => self.unsubscribe(key, list, reply_to),
        }
    }

    fn subscribe(&mut self, key: usize, list: Vec<Resolved>, reply_to: Option<&str>) {
        let max = self.shared.config.max_subscriptions;
        for r in list {
            let Some(conn) = self.conns.get(key) else {
                return;
            };
            let stream = match r.stream {
                Ok(s) => s,
                Err(why) => {
                    self.reply_error(key, ErrorCode::Forbidden, why, reply_to);
                    continue;
                }
            };
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
                continue;
            }
            self.add_subscription(key, &stream, r.filter);
            self.channel_reply(key, &r.name, &stream, true, reply_to);
        }
    }

    fn unsubscribe(&mut self, key: usize, list: Vec<Resolved>, reply_to: Option<&str>) {
        for r in list {
            let Ok(stream) = r.stream else {
                continue;
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
            self.render_channel_reply(key, &r.name, false, reply_to, position);
        }
    }

    /// A `user_subscription` / `user_unsubscription` reply for `channel` (as the client named
    /// it) with the current position of `stream`.
    pub(super) fn channel_reply(
        &mut self,
        key: usize,
        channel: &str,
        stream: &str,
        subscribed: bool,
        reply_to: Option<&str>,
    ) {
        let position = self.position_of(stream);
        self.render_channel_reply(key, channel, subscribed, reply_to, position);
    }

    fn render_channel_reply(
        &mut self,
        key: usize,
        channel: &str,
        subscribed: bool,
        reply_to: Option<&str>,
        position: Option<(u64, Arc<str>)>,
    ) {
        let (event, status) = if subscribed {
            ("user_subscription", "subscribed")
        } else {
            ("user_unsubscription", "unsubscribed")
        };
        let mut data = json!({ "channel": channel, "status": status });
        if let (Some((offset, epoch)), Some(obj)) = (position, data.as_object_mut()) {
            obj.insert("offset".into(), json!(offset));
            obj.insert("epoch".into(), json!(&*epoch));
        }
        self.reply(key, event, reply_to, &data);
    }

    /// Publish over the WebSocket: needs the API key at connect or a token's `publish` claim. Refused whole with
    /// `overloaded` when an owner's budget is spent; otherwise sequenced (in place for channels
    /// this shard owns) and answered from a task once every interested shard has queued it. The
    /// connection stops being read at `--max-inflight-publishes` unanswered, until half are.
    fn publish_from(&mut self, key: usize, req: PublishRequest, message_id: Option<String>) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        if let Err(why) = self
            .shared
            .policy
            .may_publish(&req.channels, &conn.rights())
        {
            self.reply_error(key, ErrorCode::Forbidden, why, message_id.as_deref());
            return;
        }
        let conn_id = conn.id;
        let shared = self.shared.clone();
        let prepared = match publish::admit(&shared, req) {
            Ok(p) => p,
            Err(e) => {
                let code = match e {
                    publish::Refused::Overloaded => ErrorCode::Overloaded,
                    publish::Refused::ShuttingDown => ErrorCode::InvalidMessage,
                };
                self.reply_error(key, code, e.to_string(), message_id.as_deref());
                return;
            }
        };
        if let Some(c) = self.conns.get_mut(key) {
            c.inflight += 1;
        }
        let (results, done) = (prepared.results.clone(), prepared.done);
        // One connection's publishes are still sequenced in the order they were read.
        for (owner, job) in prepared.jobs {
            if owner == self.id {
                self.sequence(job);
            } else {
                publish::send_job(&shared, owner, job);
            }
        }
        let this = self.this.clone();
        let max_inflight = shared.config.max_inflight_publishes;
        tokio::task::spawn_local(async move {
            // Every job holds a permit and is in an inbox, so the gather completes unless the
            // process is exiting.
            let _ = done.await;
            let Some(cell) = this.upgrade() else {
                return;
            };
            let mut shard = cell.borrow_mut();
            let Some(c) = shard.conns.get_mut(key).filter(|c| c.id == conn_id) else {
                return;
            };
            c.inflight = c.inflight.saturating_sub(1);
            if c.publish_paused && c.inflight as usize <= max_inflight / 2 {
                c.publish_paused = false;
                c.io.wake.notify_one();
            }
            let data = json!({ "results": results.results() });
            shard.reply(key, "publish", message_id.as_deref(), &data);
            shard.flush_dirty();
        });
    }

    /// Queues a reply (never a channel message) to `key` if it is still open.
    pub(super) fn reply(
        &mut self,
        key: usize,
        event_type: &str,
        reply_to: Option<&str>,
        data: &Value,
    ) {
        if self.conns.get(key).is_none_or(|c| !c.state.is_open()) {
            return;
        }
        let frame = encode(&OutMessage {
            event_type,
            channel: None,
            offset: None,
            message_id: None,
            reply_to,
            user_id: None,
            timestamp: None,
            data,
        });
        self.queue(key, frame);
    }

    /// An `error` event; the connection stays open.
    pub(super) fn reply_error(
        &mut self,
        key: usize,
        code: ErrorCode,
        message: String,
        reply_to: Option<&str>,
    ) {
        let data = json!({ "code": code.as_str(), "message": message });
        self.reply(key, "error", reply_to, &data);
    }

    /// The first frame of every connection.
    pub(super) fn connection_ack(
        &self,
        key: usize,
        channels: &[String],
        expires_in: Option<u64>,
    ) -> Bytes {
        let config = &self.shared.config;
        let (id, user) = match self.conns.get(key) {
            Some(c) => (c.public_id(), c.user_id.as_deref().map(str::to_owned)),
            None => (String::new(), None),
        };
        let mut data = json!({
            "connection_id": id,
            "server_time": crate::protocol::timestamp_now(),
            "heartbeat_interval": seconds(config.heartbeat_interval),
            "heartbeat_timeout": seconds(config.heartbeat_timeout),
            "supported_events": SUPPORTED_EVENTS,
            "subscriptions": channels,
        });
        if let (Some(n), Some(obj)) = (expires_in, data.as_object_mut()) {
            obj.insert("expires_in".into(), json!(n));
        }
        encode(&OutMessage {
            event_type: "connection_ack",
            channel: None,
            offset: None,
            message_id: None,
            reply_to: None,
            user_id: user.as_deref(),
            timestamp: None,
            data: &data,
        })
    }
}

/// Whole seconds as an integer, fractional seconds (below one second, or uneven) as a float.
fn seconds(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        json!(d.as_secs())
    } else {
        json!(d.as_secs_f64())
    }
}

/// A subscribe or unsubscribe request as the client sent it.
enum ChannelRequest {
    Subscribe(Vec<SubscribeSpec>),
    Unsubscribe(Vec<String>),
}

/// A subscribe or unsubscribe request with its channels resolved to streams.
pub(crate) enum ChannelOp {
    Subscribe(Vec<Resolved>),
    Unsubscribe(Vec<Resolved>),
}

/// One channel of a request: the name the client used, the stream it maps to (a user's own
/// stream for `bets`/`bankroll`) or why the connection may not have it, and its filter.
pub(crate) struct Resolved {
    name: String,
    stream: Result<Arc<str>, String>,
    filter: Option<Filter>,
}

impl ChannelOp {
    /// The streams the request is about (refused channels have none).
    fn streams(&self) -> impl Iterator<Item = &Arc<str>> {
        let (ChannelOp::Subscribe(list) | ChannelOp::Unsubscribe(list)) = self;
        list.iter().filter_map(|r| r.stream.as_ref().ok())
    }
}
