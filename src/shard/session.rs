//! Client → server messages on one connection (PROTOCOL.md §4, §5, §7): subscribe,
//! unsubscribe, heartbeat, publish, and the replies. Bad input gets an `error` reply and the
//! connection goes on.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::{encode, publish, Parked, Shard};
use crate::protocol::{
    parse_client_message, ClientMessage, ClientRequest, ErrorCode, OutMessage, PublishRequest,
    SubscribeSpec, SUPPORTED_EVENTS,
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
            request => self.channel_request(key, request, msg.message_id),
        }
    }

    /// A subscribe or unsubscribe. Channels this shard does not follow yet are asked of their
    /// owners first; the request is parked (and the connection not read) until every answer
    /// is in, so its replies carry exact offsets and come in request order.
    fn channel_request(&mut self, key: usize, request: ClientRequest, reply_to: Option<String>) {
        let Some(conn_id) = self.conns.get(key).map(|c| c.id) else {
            return;
        };
        let subscribing = matches!(request, ClientRequest::Subscribe(_));
        let channels: Vec<Arc<str>> = request_channels(&request)
            .into_iter()
            .map(Arc::from)
            .collect();
        let mut waiting = false;
        for ch in &channels {
            let acked = if subscribing {
                self.ensure_view(ch)
            } else {
                self.views.get(ch).is_none_or(|v| v.acked)
            };
            if !acked {
                waiting = true;
                if let Some(v) = self.views.get_mut(ch) {
                    if !v.waiters.contains(&(key, conn_id)) {
                        v.waiters.push((key, conn_id));
                    }
                }
            }
        }
        if waiting {
            if let Some(c) = self.conns.get_mut(key) {
                c.parked = Some(Box::new(Parked { request, reply_to }));
            }
            return;
        }
        self.run_channel_request(key, request, reply_to.as_deref());
    }

    /// Resumes a parked request once every channel it names is followed.
    pub(super) fn unpark(&mut self, key: usize, conn_id: u64) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.id == conn_id) else {
            return;
        };
        let Some(parked) = conn.parked.take() else {
            return;
        };
        let still_waiting = request_channels(&parked.request)
            .into_iter()
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
        let Parked { request, reply_to } = *parked;
        self.run_channel_request(key, request, reply_to.as_deref());
    }

    fn run_channel_request(&mut self, key: usize, request: ClientRequest, reply_to: Option<&str>) {
        match request {
            ClientRequest::Subscribe(specs) => self.subscribe(key, specs, reply_to),
            ClientRequest::Unsubscribe(channels) => self.unsubscribe(key, channels, reply_to),
            _ => {}
        }
    }

    fn subscribe(&mut self, key: usize, specs: Vec<SubscribeSpec>, reply_to: Option<&str>) {
        let max = self.shared.config.max_subscriptions;
        for spec in specs {
            let Some(conn) = self.conns.get(key) else {
                return;
            };
            let channel: Arc<str> = Arc::from(spec.channel.as_str());
            let already = self
                .registry
                .lookup(&channel)
                .is_some_and(|cid| conn.subscription(cid).is_some());
            if !already && conn.subs.len() >= max {
                self.reply_error(
                    key,
                    ErrorCode::TooManySubscriptions,
                    format!("{channel}: at most {max} subscriptions per connection"),
                    reply_to,
                );
                // The view asked for it may have no member now.
                if self.registry.lookup(&channel).is_none() {
                    self.release_view(&channel);
                }
                continue;
            }
            self.add_subscription(key, &channel, spec.filter);
            self.channel_reply(key, &channel, true, reply_to);
        }
    }

    fn unsubscribe(&mut self, key: usize, channels: Vec<String>, reply_to: Option<&str>) {
        for channel in channels {
            // Answered with the position before leaving: no message of the channel follows.
            let position = self.position_of(&channel);
            if let Some(cid) = self.registry.lookup(&channel) {
                if let Some(conn) = self.conns.get_mut(key) {
                    if let Some(i) = conn.subs.iter().position(|s| s.channel == cid) {
                        conn.subs.swap_remove(i);
                        conn.has_filters = conn.subs.iter().any(|s| s.filter.is_some());
                        self.leave_channel(cid, key);
                    }
                }
            }
            self.render_channel_reply(key, &channel, false, reply_to, position);
        }
    }

    /// A `user_subscription` / `user_unsubscription` reply with the channel's current position.
    pub(super) fn channel_reply(
        &mut self,
        key: usize,
        channel: &str,
        subscribed: bool,
        reply_to: Option<&str>,
    ) {
        let position = self.position_of(channel);
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

    /// Publish over the WebSocket: needs the API key at connect. Refused whole with
    /// `overloaded` when an owner's budget is spent; otherwise sequenced (in place for channels
    /// this shard owns) and answered from a task once every interested shard has queued it. The
    /// connection stops being read at `--max-inflight-publishes` unanswered, until half are.
    fn publish_from(&mut self, key: usize, req: PublishRequest, message_id: Option<String>) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        if !conn.can_publish {
            self.reply_error(
                key,
                ErrorCode::Forbidden,
                "publishing needs the API key: connect with ?api_key=KEY or an X-API-Key header"
                    .into(),
                message_id.as_deref(),
            );
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
    pub(super) fn connection_ack(&self, key: usize, channels: &[String]) -> Bytes {
        let config = &self.shared.config;
        let (id, user) = match self.conns.get(key) {
            Some(c) => (c.public_id(), c.user_id.as_deref().map(str::to_owned)),
            None => (String::new(), None),
        };
        let data = json!({
            "connection_id": id,
            "server_time": crate::protocol::timestamp_now(),
            "heartbeat_interval": seconds(config.heartbeat_interval),
            "heartbeat_timeout": seconds(config.heartbeat_timeout),
            "supported_events": SUPPORTED_EVENTS,
            "subscriptions": channels,
        });
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

/// The channel names a subscribe or unsubscribe request is about.
fn request_channels(request: &ClientRequest) -> Vec<&str> {
    match request {
        ClientRequest::Subscribe(specs) => specs.iter().map(|s| s.channel.as_str()).collect(),
        ClientRequest::Unsubscribe(channels) => channels.iter().map(String::as_str).collect(),
        _ => Vec::new(),
    }
}
