//! History, recovery and presence on a shard (PROTOCOL.md §10): the owner's side of `Recover`,
//! the replay of missed frames, `/api/history`, `/api/presence`, and `join`/`leave` events.
//!
//! The ordering rule for recovery is written in [`super::mesh`]; the request side (taking a
//! request's channels in order, parking) is in `channels`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Value};

use super::mesh::{owner_of, Answer, HistoryPage, Present, ShardMsg};
use super::{encode, enqueue, Shard};
use crate::codec::frame_payload;
use crate::engine::ChannelEngine;
use crate::protocol::{wire_name, Filter, OutMessage, Since};

/// A presence entry as stored in Redis: (connection id, `{"user_id","connection_id"}`).
pub(super) fn presence_entry(who: &Present) -> (String, String) {
    let json = match &who.user_id {
        Some(u) => json!({ "user_id": u, "connection_id": who.connection_id }),
        None => json!({ "connection_id": who.connection_id }),
    };
    (who.connection_id.clone(), json.to_string())
}

/// Reads an entry written by [`presence_entry`] (any node's).
pub fn parse_presence_entry(raw: &[u8]) -> Option<Present> {
    let v: Value = serde_json::from_slice(raw).ok()?;
    Some(Present {
        user_id: v["user_id"].as_str().map(Box::from),
        connection_id: v["connection_id"].as_str()?.to_owned(),
    })
}

impl Shard {
    /// Cluster mode: renews the presence entries of this shard's connections in Redis (every
    /// quarter of `--presence-ttl`, from the tick), one request per channel.
    pub(super) fn renew_presence(&mut self, now: Instant) {
        let Some(cluster) = self.shared.cluster.clone() else {
            return;
        };
        if now < self.presence_renew_at {
            return;
        }
        self.presence_renew_at = now + self.shared.config.presence_ttl / 4;
        let node = self.shared.node_id();
        let mut by_channel: std::collections::HashMap<&str, Vec<(String, String)>> =
            std::collections::HashMap::new();
        for (_, conn) in self.conns.iter() {
            if !conn.state.is_open() {
                continue;
            }
            for sub in &conn.subs {
                let Some(name) = self.registry.name(sub.channel) else {
                    continue;
                };
                if !self
                    .shared
                    .presence
                    .iter()
                    .any(|p| p.matches(wire_name(name)))
                {
                    continue;
                }
                let who = Present {
                    user_id: conn.user_id.clone(),
                    connection_id: conn.public_id(node),
                };
                by_channel
                    .entry(name)
                    .or_default()
                    .push(presence_entry(&who));
            }
        }
        for (channel, entries) in by_channel {
            cluster.send(crate::cluster::Request::Presence {
                channel: Arc::from(channel),
                entries,
                on: true,
            });
        }
    }

    /// Owner side of `Recover`: registers the shard's interest, decides the recovery, and
    /// answers through the channel's FIFO (after every message up to the answer's offset).
    pub(super) fn on_recover(
        &mut self,
        channel: Arc<str>,
        shard: usize,
        key: usize,
        conn_id: u64,
        since: Since,
    ) {
        self.engine
            .set_interest(&channel, shard, true, Instant::now());
        let answer = self.recovery_answer(&channel, &since);
        let msg = ShardMsg::Recovered {
            channel,
            key,
            conn_id,
            answer,
        };
        let _ = self.shared.inboxes[shard].send(msg);
    }

    /// The recovery decision for `since` on this shard, the channel's owner (PROTOCOL.md §10).
    pub(super) fn recovery_answer(&self, stream: &str, since: &Since) -> Answer {
        let max = self.shared.config.recovery_max;
        let (position, replay) =
            self.engine
                .recover(stream, since.offset, &since.epoch, max, Instant::now());
        // The callers made the channel's state (interest), so a position exists.
        let (offset, epoch) =
            position.map_or_else(|| (0, crate::engine::new_epoch()), |p| (p.offset, p.epoch));
        Answer {
            offset,
            epoch,
            current: true,
            replay,
        }
    }

    /// Queues missed frames to `key` right after its `recovered` reply, as a subscription would
    /// have received them (its filter applies). They count toward `--send-queue-bytes` like any
    /// other frame: a replay a reader cannot take closes it with 4008.
    pub(super) fn replay(&mut self, key: usize, frames: Vec<Bytes>, filter: Option<&Filter>) {
        let limit = self.shared.config.send_queue_bytes;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut n = 0;
        for frame in frames {
            if let Some(f) = filter {
                if !frame_data(&frame).is_some_and(|d| f.matches(&d)) {
                    continue;
                }
            }
            enqueue(conn, key, frame, limit, &mut self.dirty);
            n += 1;
        }
        let over = conn.state.is_open() && conn.out.queued_bytes() > limit;
        self.metrics().messages_replayed.inc_by(n);
        if over {
            self.slow_consumer(key);
        }
    }

    /// A connection joined or left `stream`: tell the owner, which tells the subscriptions that
    /// asked for it, on every shard (PROTOCOL.md §10). Only for `--presence-channels`.
    pub(super) fn presence_event(&mut self, stream: &Arc<str>, key: usize, join: bool) {
        if !self
            .shared
            .presence
            .iter()
            .any(|p| p.matches(wire_name(stream)))
        {
            return;
        }
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let who = Present {
            user_id: conn.user_id.clone(),
            connection_id: conn.public_id(self.shared.node_id()),
        };
        if let Some(c) = &self.shared.cluster {
            c.send(crate::cluster::Request::Presence {
                channel: stream.clone(),
                entries: vec![presence_entry(&who)],
                on: join,
            });
        }
        let owner = owner_of(stream, self.shared.inboxes.len());
        if owner == self.id {
            self.on_join_leave(stream.clone(), join, who);
        } else {
            let _ = self.shared.inboxes[owner].send(ShardMsg::JoinLeave {
                channel: stream.clone(),
                join,
                who,
            });
        }
    }

    /// Owner side of `JoinLeave`: encodes the event once, if any shard listens, and hands it
    /// to those shards.
    pub(super) fn on_join_leave(&mut self, stream: Arc<str>, join: bool, who: Present) {
        let listened = self.listeners.get(&stream).is_some_and(|s| !s.is_empty());
        // Cluster mode: the other nodes' listeners may want it too.
        if !listened && self.shared.cluster.is_none() {
            return;
        }
        let mut data = json!({ "connection_id": who.connection_id });
        if let (Some(u), Some(obj)) = (who.user_id.as_deref(), data.as_object_mut()) {
            obj.insert("user_id".into(), json!(u));
        }
        let frame = encode(&OutMessage {
            event_type: if join { "join" } else { "leave" },
            channel: Some(wire_name(&stream)),
            offset: None,
            message_id: None,
            reply_to: None,
            user_id: None,
            timestamp: None,
            data: &data,
        });
        if let Some(c) = &self.shared.cluster {
            let json = frame_payload(&frame).map(Bytes::copy_from_slice);
            c.send(crate::cluster::Request::JoinLeave {
                channel: stream.clone(),
                json: json.unwrap_or_default(),
            });
        }
        self.hand_join_leave(&stream, frame);
    }

    /// Hands a `join`/`leave` frame (this node's or another's) to the listening shards.
    pub(super) fn hand_join_leave(&mut self, stream: &Arc<str>, frame: Bytes) {
        let shards: Vec<usize> = match self.listeners.get(stream) {
            Some(s) => s.iter().collect(),
            None => return,
        };
        for shard in shards {
            if shard == self.id {
                self.on_join_leave_frame(stream, frame.clone());
            } else {
                let _ = self.shared.inboxes[shard].send(ShardMsg::JoinLeaveFrame {
                    channel: stream.clone(),
                    frame: frame.clone(),
                });
            }
        }
    }

    /// Owner side of `Listen`.
    pub(super) fn on_listen(&mut self, stream: Arc<str>, shard: usize, on: bool) {
        if on {
            self.listeners.entry(stream).or_default().insert(shard);
        } else if let Some(s) = self.listeners.get_mut(&stream) {
            s.remove(shard);
            if s.is_empty() {
                self.listeners.remove(&stream);
            }
        }
    }

    /// Tells the owner whether this shard has subscriptions of `stream` that want its
    /// `join`/`leave` events (on the first one, and when the last one goes).
    pub(super) fn listen(&mut self, stream: &Arc<str>, on: bool) {
        let owner = owner_of(stream, self.shared.inboxes.len());
        if owner == self.id {
            self.on_listen(stream.clone(), self.id, on);
        } else {
            let _ = self.shared.inboxes[owner].send(ShardMsg::Listen {
                channel: stream.clone(),
                shard: self.id,
                on,
            });
        }
    }

    /// A `join`/`leave` frame for this shard's listening subscriptions of `stream`.
    pub(super) fn on_join_leave_frame(&mut self, stream: &Arc<str>, frame: Bytes) {
        let keys = match self.views.get(stream) {
            Some(v) if !v.join_leave.is_empty() => v.join_leave.clone(),
            _ => return,
        };
        for k in keys {
            self.queue(k, frame.clone());
        }
        self.flush_dirty();
    }

    /// `/api/history` on the owner.
    pub(super) fn history_page(
        &mut self,
        stream: &Arc<str>,
        since: u64,
        limit: usize,
    ) -> HistoryPage {
        let (position, stored) = self.engine.history(stream, since, limit, Instant::now());
        HistoryPage {
            offset: position.offset,
            epoch: position.epoch,
            frames: stored.into_iter().map(|(_, f)| f).collect(),
        }
    }

    /// This shard's subscribers of `stream`, for `/api/presence`.
    pub(super) fn present(&self, stream: &str) -> Vec<Present> {
        let Some(members) = self
            .registry
            .lookup(stream)
            .and_then(|c| self.registry.members(c))
        else {
            return Vec::new();
        };
        members
            .iter_ones()
            .filter_map(|k| self.conns.get(k))
            .filter(|c| c.state.is_open())
            .map(|c| Present {
                user_id: c.user_id.clone(),
                connection_id: c.public_id(self.shared.node_id()),
            })
            .collect()
    }
}

/// The `data` object of a stored frame, for a filter (the rare replay-with-filter path).
fn frame_data(frame: &[u8]) -> Option<serde_json::Map<String, Value>> {
    let mut v: Value = serde_json::from_slice(frame_payload(frame)?).ok()?;
    match v.get_mut("data")?.take() {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_of_every_header_size() {
        for n in [10usize, 200, 70_000] {
            let body = format!("{{\"data\":{{\"k\":\"{}\"}}}}", "x".repeat(n));
            let frame = crate::codec::text_frame_with(16, |b| b.extend_from_slice(body.as_bytes()));
            assert_eq!(frame_payload(&frame), Some(body.as_bytes()));
            assert_eq!(
                frame_data(&frame).map(|d| d["k"].as_str().map(str::len)),
                Some(Some(n))
            );
        }
    }
}
