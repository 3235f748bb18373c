//! Server → client messages: [`OutMessage`], encoded once per message, and [`timestamp_now`].

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

/// Server → client message, serialized exactly once per (message, channel). Fields that don't apply
/// are omitted (skip_serializing_if), never null. Field order on the wire: event_type, channel, offset,
/// message_id, reply_to, user_id, timestamp, data.
///
/// `data` is generic over any `Serialize` type (default [`Value`]) so replies like `connection_ack`
/// can be encoded from a struct or a [`Map`](serde_json::Map) without building a `Value` first.
#[derive(Debug, Serialize)]
pub struct OutMessage<'a, D = Value> {
    /// The event type, e.g. `odds_update` or `error`.
    pub event_type: &'a str,
    /// The channel a channel message was published to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'a str>,
    /// The message's position in its channel (channel messages only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The message's unique id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<&'a str>,
    /// The `message_id` of the client message this replies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<&'a str>,
    /// The user a direct message was sent to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<&'a str>,
    /// When the server accepted the message (RFC 3339 UTC, milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<&'a str>,
    /// The payload (always present; `{}` when empty).
    pub data: &'a D,
}

impl<'a, D: Serialize> OutMessage<'a, D> {
    /// A message with only `event_type` and `data`; set the other fields with struct update syntax.
    pub fn new(event_type: &'a str, data: &'a D) -> Self {
        OutMessage {
            event_type,
            channel: None,
            offset: None,
            message_id: None,
            reply_to: None,
            user_id: None,
            timestamp: None,
            data,
        }
    }

    /// Encodes the message as one JSON text (fails only if `D`'s own `Serialize` fails).
    pub fn to_vec(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }
}

/// RFC 3339 UTC with milliseconds, e.g. 2026-11-25T18:04:05.123Z.
pub fn timestamp_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::names::SUPPORTED_EVENTS;
    use crate::protocol::validate::is_rfc3339;
    use serde_json::json;

    #[test]
    fn out_message_omits_none_and_keeps_order() {
        let data = json!({"channel":"odds","status":"subscribed"});
        let bare = OutMessage::new("heartbeat", &data);
        assert_eq!(
            String::from_utf8(bare.to_vec().unwrap()).unwrap(),
            r#"{"event_type":"heartbeat","data":{"channel":"odds","status":"subscribed"}}"#
        );
        let empty = json!({});
        let full = OutMessage {
            channel: Some("odds_7"),
            offset: Some(17),
            message_id: Some("01JDX8V4T0Q6M2"),
            reply_to: Some("c1"),
            user_id: Some("u1"),
            timestamp: Some("2026-11-25T18:04:05.123Z"),
            ..OutMessage::new("odds_update", &empty)
        };
        assert_eq!(
            serde_json::to_string(&full).unwrap(),
            r#"{"event_type":"odds_update","channel":"odds_7","offset":17,"message_id":"01JDX8V4T0Q6M2","reply_to":"c1","user_id":"u1","timestamp":"2026-11-25T18:04:05.123Z","data":{}}"#
        );
        let partial = OutMessage {
            reply_to: Some("c1"),
            ..OutMessage::new("error", &empty)
        };
        let text = serde_json::to_string(&partial).unwrap();
        assert_eq!(text, r#"{"event_type":"error","reply_to":"c1","data":{}}"#);
        assert!(!text.contains("null"));
        // Generic data: any Serialize type.
        #[derive(Serialize)]
        struct Ack {
            heartbeat_interval: f64,
        }
        let ack = Ack {
            heartbeat_interval: 0.25,
        };
        assert_eq!(
            serde_json::to_string(&OutMessage::new("connection_ack", &ack)).unwrap(),
            r#"{"event_type":"connection_ack","data":{"heartbeat_interval":0.25}}"#
        );
    }

    #[test]
    fn timestamps() {
        let now = timestamp_now();
        assert_eq!(now.len(), "2026-11-25T18:04:05.123Z".len(), "{now}");
        assert!(now.ends_with('Z') && is_rfc3339(&now), "{now}");
        assert!(SUPPORTED_EVENTS.contains(&"connection_ack") && SUPPORTED_EVENTS.len() == 11);
    }
}
