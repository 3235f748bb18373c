//! Client → server messages on one connection (PROTOCOL.md §4, §5, §7): subscribe,
//! unsubscribe, heartbeat, publish, and the replies. Bad input gets an `error` reply and the
//! connection goes on.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::{encode, publish, Shard};
use crate::protocol::{
    parse_client_message, ClientMessage, ClientRequest, Credential, ErrorCode, OutMessage,
    PublishRequest, SUPPORTED_EVENTS,
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
            ClientRequest::Refresh(Credential::Token(token)) => self.refresh(key, &token, reply_to),
            ClientRequest::Refresh(Credential::ApiKey(k)) => {
                self.present_api_key(key, &k, reply_to)
            }
            ClientRequest::Subscribe(specs) => self.subscribe_request(key, specs, msg.message_id),
            ClientRequest::Unsubscribe(names) => {
                self.unsubscribe_request(key, names, msg.message_id)
            }
        }
    }

    /// `refresh` with an API key: from now on the connection has the rights of one opened with
    /// `?api_key=` (publish everywhere, any channel, `huddle:stats`). A wrong key changes
    /// nothing; guessing is bounded by `--message-rate` like every other message.
    fn present_api_key(&mut self, key: usize, given: &str, reply_to: Option<&str>) {
        if !self.shared.key_allowed(given) {
            tracing::info!(
                shard = self.id,
                "refresh refused: not an API key of this server"
            );
            let message = "refresh refused: not an API key of this server".to_string();
            self.reply_error(key, ErrorCode::Forbidden, message, reply_to);
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.api_key = true;
        self.reply(key, "refresh", reply_to, &json!({ "api_key": true }));
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
                    publish::Refused::Unavailable => ErrorCode::Unavailable,
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
            if results.failed() {
                let e = publish::Refused::Unavailable;
                shard.reply_error(
                    key,
                    ErrorCode::Unavailable,
                    e.to_string(),
                    message_id.as_deref(),
                );
            } else {
                let data = json!({ "results": results.results() });
                shard.reply(key, "publish", message_id.as_deref(), &data);
            }
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
            Some(c) => (
                c.public_id(self.shared.node_id()),
                c.user_id.as_deref().map(str::to_owned),
            ),
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
