//! Subscription positions (sans-IO): which channels the application subscribed to, how, and the
//! last `(offset, epoch)` it was given of each; the subscribe requests that resume from there;
//! and the duplicate check every channel message goes through.
//!
//! Positions come from subscribe replies and from every delivered message (PROTOCOL.md §4, §10).
//! A channel message carries an offset but no epoch: its epoch is the one of the subscribe reply
//! that opened the subscription on this connection (the server sends that reply before any
//! message of the channel).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// How a channel is subscribed (PROTOCOL.md §4 filters, §10 `join_leave`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubOptions {
    /// `{"field": [allowed values…], …}`: only messages whose top-level `data` fields match.
    pub filter: Option<Map<String, Value>>,
    /// Also receive `join` / `leave` events of the channel.
    pub join_leave: bool,
}

/// A position in a channel: the last offset seen, in which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

#[derive(Debug)]
struct Tracked {
    options: SubOptions,
    position: Option<Position>,
}

/// What a subscribe reply means for the application.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyOutcome {
    /// The position the client holds now.
    pub position: Option<Position>,
    /// `recovered` as the server said it (absent on a subscribe without `since`).
    pub recovered: Option<bool>,
    /// A resume was refused (`recovered:false`): messages were missed, the app must reload.
    pub lost: bool,
}

/// The channels the application subscribed to, in name order.
#[derive(Debug, Default)]
pub struct Subscriptions {
    channels: BTreeMap<String, Tracked>,
}

impl Subscriptions {
    /// Starts (or changes the options of) a subscription; a known position is kept.
    pub fn add(&mut self, channel: &str, options: SubOptions) {
        match self.channels.get_mut(channel) {
            Some(t) => t.options = options,
            None => {
                self.channels.insert(
                    channel.to_owned(),
                    Tracked {
                        options,
                        position: None,
                    },
                );
            }
        }
    }

    /// Forgets a channel; true if it was subscribed.
    pub fn remove(&mut self, channel: &str) -> bool {
        self.channels.remove(channel).is_some()
    }

    pub fn contains(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }

    /// The subscribed channels, in name order (the resubscribe order after a reconnect).
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.channels.keys().map(String::as_str)
    }

    pub fn position(&self, channel: &str) -> Option<&Position> {
        self.channels.get(channel)?.position.as_ref()
    }

    /// The `user_subscription` request for `channel`, with `since` when `resume` is set and a
    /// position is known (after a reconnect; a live re-subscribe needs no replay).
    pub fn request(&self, channel: &str, message_id: &str, resume: bool) -> Option<Value> {
        let t = self.channels.get(channel)?;
        let mut data = Map::new();
        data.insert("channel".into(), Value::String(channel.to_owned()));
        if let Some(f) = &t.options.filter {
            data.insert("filter".into(), Value::Object(f.clone()));
        }
        if t.options.join_leave {
            data.insert("join_leave".into(), Value::Bool(true));
        }
        if let (true, Some(p)) = (resume, &t.position) {
            data.insert(
                "since".into(),
                json!({"offset": p.offset, "epoch": p.epoch}),
            );
        }
        Some(json!({
            "event_type": "user_subscription",
            "message_id": message_id,
            "data": Value::Object(data),
        }))
    }

    /// Applies a `subscribed` reply. `None` when the channel is no longer subscribed.
    ///
    /// - `recovered:true`: the replay of everything after our position follows, so our
    ///   position stays (the reply's `offset` is the channel's top, not where we are).
    /// - `recovered:false`: nothing is replayed; the reply's position is adopted and the
    ///   outcome says `lost`.
    /// - no `recovered` (a subscribe without `since`): nothing is replayed; the reply's
    ///   position is adopted, or kept if ours is further along in the same epoch (a live
    ///   re-subscribe, where every message up to the reply was already delivered).
    pub fn on_reply(
        &mut self,
        channel: &str,
        offset: Option<u64>,
        epoch: Option<&str>,
        recovered: Option<bool>,
    ) -> Option<ReplyOutcome> {
        let t = self.channels.get_mut(channel)?;
        let replied = match (offset, epoch) {
            (Some(offset), Some(epoch)) => Some(Position {
                offset,
                epoch: epoch.to_owned(),
            }),
            _ => None,
        };
        let lost = recovered == Some(false);
        t.position = match (recovered, t.position.take(), replied) {
            (Some(true), Some(ours), _) => Some(ours),
            (None, Some(ours), Some(r)) if ours.epoch == r.epoch => Some(Position {
                offset: ours.offset.max(r.offset),
                epoch: r.epoch,
            }),
            (_, _, replied) => replied,
        };
        Some(ReplyOutcome {
            position: t.position.clone(),
            recovered,
            lost,
        })
    }

    /// Whether a channel message at `offset` goes to the application: false for a duplicate
    /// (offset ≤ the known one in the current epoch); advances the position otherwise.
    /// Messages of channels not subscribed through this client (e.g. auto-subscribed by the
    /// URL path) are delivered untracked.
    pub fn on_message(&mut self, channel: &str, offset: u64) -> bool {
        let Some(p) = self
            .channels
            .get_mut(channel)
            .and_then(|t| t.position.as_mut())
        else {
            return true;
        };
        if offset <= p.offset {
            return false;
        }
        p.offset = offset;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(offset: u64, epoch: &str) -> Option<Position> {
        Some(Position {
            offset,
            epoch: epoch.into(),
        })
    }

    #[test]
    fn first_subscribe_has_no_since_then_resumes_from_the_last_message() {
        let mut s = Subscriptions::default();
        s.add("scores", SubOptions::default());
        let r = s.request("scores", "s1", true).unwrap();
        assert_eq!(
            r,
            json!({"event_type":"user_subscription","message_id":"s1","data":{"channel":"scores"}})
        );
        let out = s.on_reply("scores", Some(0), Some("E1"), None).unwrap();
        assert_eq!((out.position, out.lost), (pos(0, "E1"), false));
        for o in 1..=10 {
            assert!(s.on_message("scores", o));
        }
        let r = s.request("scores", "s2", true).unwrap();
        assert_eq!(r["data"]["since"], json!({"offset":10,"epoch":"E1"}));
        // A live re-subscribe does not ask for a replay.
        assert!(s.request("scores", "s3", false).unwrap()["data"]
            .get("since")
            .is_none());
    }

    #[test]
    fn duplicates_are_dropped_within_an_epoch() {
        let mut s = Subscriptions::default();
        s.add("c", SubOptions::default());
        s.on_reply("c", Some(5), Some("E"), None);
        assert!(!s.on_message("c", 5), "at the reply's offset: already seen");
        assert!(s.on_message("c", 6));
        assert!(!s.on_message("c", 6));
        assert!(!s.on_message("c", 3));
        // A gap (a filter skips messages) is not a duplicate.
        assert!(s.on_message("c", 9));
        assert_eq!(s.position("c"), pos(9, "E").as_ref());
    }

    #[test]
    fn recovered_keeps_our_position_so_the_replay_is_delivered() {
        let mut s = Subscriptions::default();
        s.add("c", SubOptions::default());
        s.on_reply("c", Some(0), Some("E"), None);
        assert!(s.on_message("c", 1) && s.on_message("c", 2));
        // Reconnected: the reply says top = 5, then 3..=5 are replayed.
        let out = s.on_reply("c", Some(5), Some("E"), Some(true)).unwrap();
        assert_eq!((out.position, out.lost), (pos(2, "E"), false));
        assert!(!s.on_message("c", 2));
        assert!(s.on_message("c", 3) && s.on_message("c", 4) && s.on_message("c", 5));
        assert!(!s.on_message("c", 4));
    }

    #[test]
    fn not_recovered_is_lost_and_adopts_the_new_epoch() {
        let mut s = Subscriptions::default();
        s.add("c", SubOptions::default());
        s.on_reply("c", Some(0), Some("E1"), None);
        assert!(s.on_message("c", 30));
        let out = s.on_reply("c", Some(0), Some("E2"), Some(false)).unwrap();
        assert!(out.lost);
        assert_eq!(out.position, pos(0, "E2"));
        // Offset 1 of the new epoch is new, though 1 ≤ 30.
        assert!(s.on_message("c", 1));
        assert_eq!(
            s.request("c", "x", true).unwrap()["data"]["since"],
            json!({"offset":1,"epoch":"E2"})
        );
    }

    #[test]
    fn live_resubscribe_never_moves_backwards_and_options_are_sent() {
        let mut s = Subscriptions::default();
        let mut filter = Map::new();
        filter.insert("game_id".into(), json!(["7"]));
        s.add(
            "odds",
            SubOptions {
                filter: Some(filter),
                join_leave: true,
            },
        );
        s.on_reply("odds", Some(4), Some("E"), None);
        assert!(s.on_message("odds", 8));
        s.on_reply("odds", Some(6), Some("E"), None);
        assert_eq!(s.position("odds"), pos(8, "E").as_ref());
        let r = s.request("odds", "s", true).unwrap();
        assert_eq!(r["data"]["filter"], json!({"game_id":["7"]}));
        assert_eq!(r["data"]["join_leave"], true);
    }

    #[test]
    fn untracked_channels_pass_and_replies_without_position_are_tolerated() {
        let mut s = Subscriptions::default();
        assert!(s.on_message("games", 1) && s.on_message("games", 1));
        assert!(s.on_reply("games", Some(1), Some("E"), None).is_none());
        s.add("c", SubOptions::default());
        let out = s.on_reply("c", None, None, Some(false)).unwrap();
        assert!(out.lost && out.position.is_none());
        assert!(s.on_message("c", 1));
        assert!(s.request("c", "x", true).unwrap()["data"]
            .get("since")
            .is_none());
        assert!(s.remove("c") && !s.remove("c") && !s.contains("c"));
        assert!(s.request("c", "x", true).is_none());
    }
}
