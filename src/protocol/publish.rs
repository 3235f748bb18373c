//! Publish bodies (PROTOCOL.md §7): [`PublishRequest`] for `POST /api/publish` and WebSocket
//! publishes, with the default channels of typed events, and [`DirectMessage`] for
//! `/api/broadcast` and `/api/send`.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::json::parse_json;
use super::names::{
    bad_channel, is_server_channel, is_user_channel, is_valid_channel, MAX_MESSAGE_ID_LEN,
    SERVER_CHANNEL_PREFIX, USER_CHANNELS,
};
use super::validate::validate_payload;
use crate::error::PublishError;

/// A validated publish request (HTTP body of POST /api/publish, or `data` of a WS publish).
#[derive(Debug, Clone, PartialEq)]
pub struct PublishRequest {
    /// Target channels: validated, de-duplicated, never empty (explicit or default-routed).
    pub channels: Vec<String>,
    /// The event type, valid for publishing.
    pub event_type: String,
    /// The payload, checked against §3 for typed events.
    pub data: Map<String, Value>,
    /// The publisher's message id, forwarded to subscribers (else the server assigns one).
    pub message_id: Option<String>,
}

impl PublishRequest {
    /// Parses and validates an HTTP body (uses simd-json; `body` is mutated).
    pub fn parse(body: &mut [u8]) -> Result<PublishRequest, PublishError> {
        Self::from_value(parse_json(body).map_err(PublishError::Malformed)?)
    }

    /// Validates an already-parsed object. Default routing: when channel/channels are absent and
    /// event_type is game_update / odds_update / prediction_update, channels = [general, general_{game_id}]
    /// i.e. games + game_{id}, odds + odds_{id}, predictions + predictions_{id} (game_id from data).
    /// Absent channels for other events → Invalid("channel: required ..."). Both `channel` and `channels` → use union.
    pub fn from_value(v: Value) -> Result<PublishRequest, PublishError> {
        let mut obj = into_object(v)?;
        let common = Common::take(&mut obj)?;
        let mut names: Vec<String> = Vec::new();
        match obj.remove("channel") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => names.push(s),
            Some(_) => return Err(invalid("channel: must be a string")),
        }
        match obj.remove("channels") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                if list.is_empty() {
                    return Err(invalid("channels: must not be empty"));
                }
                names.reserve(list.len());
                for (i, item) in list.into_iter().enumerate() {
                    match item {
                        Value::String(s) => names.push(s),
                        _ => {
                            return Err(PublishError::Invalid(format!(
                                "channels[{i}]: must be a string"
                            )))
                        }
                    }
                }
            }
            Some(_) => return Err(invalid("channels: must be an array of strings")),
        }
        validate_payload(&common.event_type, &common.data).map_err(PublishError::Invalid)?;
        if names.is_empty() {
            names = default_channels(&common.event_type, &common.data).ok_or_else(|| {
                invalid(
                    "channel: required (or channels); only game_update, odds_update and \
                     prediction_update are routed by default",
                )
            })?;
        }
        let mut seen: HashSet<&str> = HashSet::with_capacity(names.len());
        let mut keep = Vec::with_capacity(names.len());
        for name in &names {
            if !is_valid_channel(name) {
                return Err(PublishError::InvalidChannel(bad_channel(name)));
            }
            if is_server_channel(name) {
                return Err(PublishError::InvalidChannel(format!(
                    "{name}: channels under {SERVER_CHANNEL_PREFIX} are written by the server only"
                )));
            }
            if is_user_channel(name) {
                return Err(PublishError::Invalid(format!(
                    "channel {name} is per user: send to one user with POST /api/send \
                     {{\"user_id\":…,\"channel\":\"{name}\",…}}"
                )));
            }
            keep.push(seen.insert(name.as_str()));
        }
        let mut flags = keep.into_iter();
        names.retain(|_| flags.next().unwrap_or(false));
        Ok(PublishRequest {
            channels: names,
            event_type: common.event_type,
            data: common.data,
            message_id: common.message_id,
        })
    }
}

/// The default channels of a typed event: the general channel and the game's channel.
fn default_channels(event_type: &str, data: &Map<String, Value>) -> Option<Vec<String>> {
    let (general, prefix) = match event_type {
        "game_update" => ("games", "game"),
        "odds_update" => ("odds", "odds"),
        "prediction_update" => ("predictions", "predictions"),
        _ => return None,
    };
    let game_id = data.get("game_id")?.as_str()?;
    Some(vec![general.to_owned(), format!("{prefix}_{game_id}")])
}

/// POST /api/broadcast body {"event_type","data", "message_id"?} and POST /api/send body {"user_id","event_type","data","message_id"?, "channel"?}.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectMessage {
    /// The target user (`/api/send` only; always `Some` there).
    pub user_id: Option<String>,
    /// The per-user channel the message is sent as, e.g. `bankroll` (`/api/send` only).
    pub channel: Option<String>,
    /// The event type, valid for publishing.
    pub event_type: String,
    /// The payload, checked against §3 for typed events.
    pub data: Map<String, Value>,
    /// The publisher's message id, forwarded to recipients (else the server assigns one).
    pub message_id: Option<String>,
}

impl DirectMessage {
    /// Parses and validates a `POST /api/broadcast` body (simd-json; `body` is mutated).
    pub fn parse_broadcast(body: &mut [u8]) -> Result<DirectMessage, PublishError> {
        let mut obj = into_object(parse_json(body).map_err(PublishError::Malformed)?)?;
        let common = Common::take(&mut obj)?;
        validate_payload(&common.event_type, &common.data).map_err(PublishError::Invalid)?;
        Ok(DirectMessage {
            user_id: None,
            channel: None,
            event_type: common.event_type,
            data: common.data,
            message_id: common.message_id,
        })
    }

    /// Parses and validates a `POST /api/send` body; `user_id` must be a non-empty string.
    pub fn parse_send(body: &mut [u8]) -> Result<DirectMessage, PublishError> {
        let mut obj = into_object(parse_json(body).map_err(PublishError::Malformed)?)?;
        let common = Common::take(&mut obj)?;
        let user_id = match obj.remove("user_id") {
            None | Some(Value::Null) => return Err(invalid("user_id: required")),
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(_) => return Err(invalid("user_id: must be a non-empty string")),
        };
        let channel = match obj.remove("channel") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(invalid("channel: must be a string")),
        };
        validate_payload(&common.event_type, &common.data).map_err(PublishError::Invalid)?;
        if let Some(c) = &channel {
            if !is_valid_channel(c) {
                return Err(PublishError::InvalidChannel(bad_channel(c)));
            }
            if !is_user_channel(c) {
                return Err(PublishError::Invalid(format!(
                    "channel: {c} is not a per-user channel ({}); publish to it with POST /api/publish",
                    USER_CHANNELS.join(", ")
                )));
            }
        }
        Ok(DirectMessage {
            user_id: Some(user_id),
            channel,
            event_type: common.event_type,
            data: common.data,
            message_id: common.message_id,
        })
    }
}

/// Shorthand for a 422 refusal.
fn invalid(m: &str) -> PublishError {
    PublishError::Invalid(m.to_owned())
}

/// The body must be an object.
fn into_object(v: Value) -> Result<Map<String, Value>, PublishError> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(invalid("body: must be a JSON object")),
    }
}

/// The fields every publish-like body shares.
struct Common {
    event_type: String,
    data: Map<String, Value>,
    message_id: Option<String>,
}

impl Common {
    /// Takes and type-checks `event_type`, `data` (default `{}`) and `message_id` out of `obj`.
    fn take(obj: &mut Map<String, Value>) -> Result<Common, PublishError> {
        let event_type = match obj.remove("event_type") {
            None | Some(Value::Null) => return Err(invalid("event_type: required")),
            Some(Value::String(s)) => s,
            Some(_) => return Err(invalid("event_type: must be a string")),
        };
        let data = match obj.remove("data") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(invalid("data: must be an object")),
        };
        let message_id = match obj.remove("message_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if (1..=MAX_MESSAGE_ID_LEN).contains(&s.len()) => Some(s),
            Some(Value::String(_)) => {
                return Err(PublishError::Invalid(format!(
                    "message_id: must be 1-{MAX_MESSAGE_ID_LEN} bytes"
                )))
            }
            Some(_) => return Err(invalid("message_id: must be a string")),
        };
        Ok(Common {
            event_type,
            data,
            message_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tests::{game, notification, obj, odds, prediction};
    use serde_json::json;

    fn publish(v: Value) -> Result<PublishRequest, PublishError> {
        PublishRequest::parse(&mut serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn default_routing() {
        let cases = [
            ("game_update", game(), ["games", "game_7"]),
            ("odds_update", odds(), ["odds", "odds_7"]),
            (
                "prediction_update",
                prediction(),
                ["predictions", "predictions_7"],
            ),
        ];
        for (event, data, channels) in cases {
            let req = publish(json!({"event_type": event, "data": data})).unwrap();
            assert_eq!(req.channels, channels, "{event}");
            assert_eq!(req.event_type, event);
            assert_eq!(req.message_id, None);
        }
    }

    #[test]
    fn explicit_channels_union_and_dedupe() {
        let req = publish(
            json!({"channel":"odds_7","channels":["odds","odds_7","lines"],
                                 "event_type":"odds_update","data":odds(),"message_id":"m1"}),
        )
        .unwrap();
        assert_eq!(req.channels, ["odds_7", "odds", "lines"]);
        assert_eq!(req.message_id.as_deref(), Some("m1"));
        let req =
            publish(json!({"channels":["eliminations"],"event_type":"bet_placed","data":{"a":1}}))
                .unwrap();
        assert_eq!(req.channels, ["eliminations"]);
        assert_eq!(req.data, obj(json!({"a":1})));
        // Per-user channels are reached through /api/send only.
        for c in ["bets", "bankroll"] {
            let e =
                publish(json!({"channels":["odds", c],"event_type":"x","data":{}})).unwrap_err();
            assert!(
                matches!(&e, PublishError::Invalid(m) if m.contains("/api/send")),
                "{e:?}"
            );
        }
    }

    #[test]
    fn publish_refusals() {
        let e = publish(json!({"event_type":"custom_thing","data":{}})).unwrap_err();
        assert!(
            matches!(&e, PublishError::Invalid(m) if m.starts_with("channel: required")),
            "{e:?}"
        );
        assert_eq!(e.http_status(), 422);
        // Missing data defaults to {}: custom events pass, typed ones name the first missing field.
        assert!(publish(json!({"channel":"x","event_type":"ping_all"})).is_ok());
        assert_eq!(
            publish(json!({"event_type":"odds_update"})),
            Err(PublishError::Invalid("data.game_id: required".into()))
        );
        let mut bad = obj(game());
        bad.insert("home_score".into(), json!(-2));
        assert_eq!(
            publish(json!({"event_type":"game_update","data":bad})),
            Err(PublishError::Invalid(
                "data.home_score: must be an integer >= 0".into()
            ))
        );
        for (body, prefix) in [
            (json!({"channel":"a","data":{}}), "event_type: required"),
            (
                json!({"channel":"a","event_type":5}),
                "event_type: must be a string",
            ),
            (
                json!({"channel":"a","event_type":"x","data":[1]}),
                "data: must be an object",
            ),
            (
                json!({"channel":1,"event_type":"x"}),
                "channel: must be a string",
            ),
            (
                json!({"channels":"a","event_type":"x"}),
                "channels: must be an array",
            ),
            (
                json!({"channels":[],"event_type":"x"}),
                "channels: must not be empty",
            ),
            (
                json!({"channels":["a",2],"event_type":"x"}),
                "channels[1]: must be a string",
            ),
            (
                json!({"channel":"a","event_type":"x","message_id":7}),
                "message_id: must be a string",
            ),
            (
                json!({"channel":"a","event_type":"x","message_id":""}),
                "message_id: must be 1-128",
            ),
            (
                json!({"channel":"a","event_type":"heartbeat"}),
                "event_type: heartbeat is reserved",
            ),
            (json!([1, 2]), "body: must be a JSON object"),
        ] {
            match publish(body.clone()) {
                Err(PublishError::Invalid(m)) => assert!(m.starts_with(prefix), "{body}: {m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        for channel in ["", "a b", "odds/7", "ñ"] {
            let e = publish(json!({"channel":channel,"event_type":"x"})).unwrap_err();
            assert!(
                matches!(e, PublishError::InvalidChannel(_)),
                "{channel:?}: {e:?}"
            );
            assert!(e.to_string().starts_with("invalid channel: "), "{e}");
        }
        // A default-routed game id that makes a bad channel name.
        let mut g = obj(game());
        g.insert("game_id".into(), json!("7 8"));
        let e = publish(json!({"event_type":"game_update","data":g})).unwrap_err();
        assert_eq!(
            e,
            PublishError::InvalidChannel(
                "\"game_7 8\" (must be 1-128 bytes of [A-Za-z0-9_.:@#-])".into()
            )
        );
    }

    #[test]
    fn malformed_bodies() {
        for body in [
            "",
            "   ",
            "{",
            "{\"a\":}",
            "nul",
            "[1,]",
            "{\"a\":1} x",
            "\u{1}",
        ] {
            let e = PublishRequest::parse(&mut body.as_bytes().to_vec()).unwrap_err();
            assert!(matches!(e, PublishError::Malformed(_)), "{body:?}: {e:?}");
            assert_eq!(e.http_status(), 400);
            assert_eq!(e.code(), "malformed_json");
            assert!(e.to_string().starts_with("malformed JSON: "));
        }
        let mut invalid_utf8 =
            b"{\"channel\":\"a\",\"event_type\":\"x\",\"data\":{\"s\":\"\xff\"}}".to_vec();
        assert!(matches!(
            PublishRequest::parse(&mut invalid_utf8),
            Err(PublishError::Malformed(_))
        ));
    }

    #[test]
    fn broadcast_and_send() {
        let mut b = serde_json::to_vec(&json!({"event_type":"notification","data":notification()}))
            .unwrap();
        let m = DirectMessage::parse_broadcast(&mut b).unwrap();
        assert_eq!(
            (m.user_id, m.channel, m.event_type.as_str()),
            (None, None, "notification")
        );
        let mut b =
            serde_json::to_vec(&json!({"event_type":"notification","data":{"level":"info"}}))
                .unwrap();
        assert_eq!(
            DirectMessage::parse_broadcast(&mut b),
            Err(PublishError::Invalid("data.message: required".into()))
        );

        let body = json!({"user_id":"u1","channel":"bankroll","event_type":"bankroll_update",
                          "data":{"balance":10},"message_id":"s1"});
        let m = DirectMessage::parse_send(&mut serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(m.user_id.as_deref(), Some("u1"));
        assert_eq!(m.channel.as_deref(), Some("bankroll"));
        assert_eq!(m.message_id.as_deref(), Some("s1"));
        for (body, want) in [
            (
                json!({"event_type":"x"}),
                PublishError::Invalid("user_id: required".into()),
            ),
            (
                json!({"user_id":"","event_type":"x"}),
                PublishError::Invalid("user_id: must be a non-empty string".into()),
            ),
            (
                json!({"user_id":5,"event_type":"x"}),
                PublishError::Invalid("user_id: must be a non-empty string".into()),
            ),
            (
                json!({"user_id":"u","channel":7,"event_type":"x"}),
                PublishError::Invalid("channel: must be a string".into()),
            ),
        ] {
            assert_eq!(
                DirectMessage::parse_send(&mut serde_json::to_vec(&body).unwrap()),
                Err(want)
            );
        }
        let body = json!({"user_id":"u","channel":"bank roll","event_type":"x"});
        assert!(matches!(
            DirectMessage::parse_send(&mut serde_json::to_vec(&body).unwrap()),
            Err(PublishError::InvalidChannel(_))
        ));
        assert!(matches!(
            DirectMessage::parse_send(&mut b"{".to_vec()),
            Err(PublishError::Malformed(_))
        ));
    }
}
