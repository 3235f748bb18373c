//! What huddle keeps in Redis and how it reads it back: key names, the pub/sub payload, and the
//! split of a message's JSON around its offset (which only Redis knows when the script runs).
//!
//! Keys of channel `c` under `--cluster-name` `p` (the name is a key prefix):
//! - `p:meta:{c}`: hash `o` (last offset), `e` (epoch);
//! - `p:stream:{c}`: stream of `d` (the message JSON), entry id `<offset>-0`;
//! - `p:idem:{c}:<message_id>`: `"<offset> <epoch>"`, for a publisher's retry;
//! - `p:presence:{c}` (connection id → `{"user_id","connection_id"}`) and `p:presence-exp:{c}`
//!   (connection id → expiry, Redis time in ms): presence, renewed by each node for its own
//!   connections, so a dead node's entries expire;
//! - `p:ch:{c}`: the pub/sub topic; a payload is `"<offset> <epoch> <json>"`, or
//!   `"jl <node id> <json>"` for a `join`/`leave` event (not numbered);
//! - `p:user:{u}`: messages to every connection of user `u` (`/api/send` without a channel),
//!   and `p:bc`: broadcasts; a payload is `"<node id> <json>"`, so the sending node, which has
//!   already delivered it, skips its own.
//!
//! The braces make `{c}` the Redis Cluster hash tag, so one channel's keys stay on one slot.

use bytes::Bytes;

/// The keys and topic of one channel.
pub struct Keys {
    pub meta: String,
    pub stream: String,
    pub topic: String,
}

impl Keys {
    pub fn new(prefix: &str, channel: &str) -> Keys {
        Keys {
            meta: format!("{prefix}:meta:{{{channel}}}"),
            stream: format!("{prefix}:stream:{{{channel}}}"),
            topic: topic(prefix, channel),
        }
    }

    pub fn idem(prefix: &str, channel: &str, message_id: &str) -> String {
        format!("{prefix}:idem:{{{channel}}}:{message_id}")
    }
}

/// The pub/sub topic of `channel`.
pub fn topic(prefix: &str, channel: &str) -> String {
    format!("{prefix}:ch:{{{channel}}}")
}

/// The presence keys of `channel`: (hash, expiry zset).
pub fn presence_keys(prefix: &str, channel: &str) -> (String, String) {
    (
        format!("{prefix}:presence:{{{channel}}}"),
        format!("{prefix}:presence-exp:{{{channel}}}"),
    )
}

/// The channel a topic belongs to, if it is one of ours.
pub fn channel_of_topic<'a>(prefix: &str, topic: &'a str) -> Option<&'a str> {
    topic
        .strip_prefix(prefix)?
        .strip_prefix(":ch:{")?
        .strip_suffix('}')
}

/// The topic of messages to user `user`.
pub fn user_topic(prefix: &str, user: &str) -> String {
    format!("{prefix}:user:{{{user}}}")
}

/// The topic of broadcasts.
pub fn broadcast_topic(prefix: &str) -> String {
    format!("{prefix}:bc")
}

/// What a topic carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Topic<'a> {
    Channel(&'a str),
    User(&'a str),
    Broadcast,
}

/// Reads one of our topic names.
pub fn parse_topic<'a>(prefix: &str, topic: &'a str) -> Option<Topic<'a>> {
    let rest = topic.strip_prefix(prefix)?;
    if rest == ":bc" {
        return Some(Topic::Broadcast);
    }
    if let Some(c) = rest.strip_prefix(":ch:{").and_then(|r| r.strip_suffix('}')) {
        return Some(Topic::Channel(c));
    }
    let u = rest.strip_prefix(":user:{")?.strip_suffix('}')?;
    Some(Topic::User(u))
}

/// A `join`/`leave` event on a channel topic: `"jl <node id> <json>"`.
pub fn parse_join_leave(raw: &[u8]) -> Option<(&str, &[u8])> {
    parse_direct(raw.strip_prefix(b"jl ")?)
}

/// Reads `"<node id> <json>"` (a user message or a broadcast).
pub fn parse_direct(raw: &[u8]) -> Option<(&str, &[u8])> {
    let sp = raw.iter().position(|&b| b == b' ')?;
    let node = std::str::from_utf8(&raw[..sp]).ok()?;
    (!node.is_empty()).then_some((node, &raw[sp + 1..]))
}

/// A channel message as a node receives it from the topic.
#[derive(Debug, PartialEq, Eq)]
pub struct Payload<'a> {
    pub offset: u64,
    pub epoch: &'a str,
    pub json: &'a [u8],
}

/// Reads `"<offset> <epoch> <json>"`; None if it is not that shape.
pub fn parse_payload(raw: &[u8]) -> Option<Payload<'_>> {
    let sp = raw.iter().position(|&b| b == b' ')?;
    let offset = std::str::from_utf8(&raw[..sp]).ok()?.parse().ok()?;
    let rest = &raw[sp + 1..];
    let sp = rest.iter().position(|&b| b == b' ')?;
    let epoch = std::str::from_utf8(&rest[..sp]).ok()?;
    if epoch.is_empty() || offset == 0 {
        return None;
    }
    Some(Payload {
        offset,
        epoch,
        json: &rest[sp + 1..],
    })
}

/// The placeholder the encoder writes where the offset goes; no real offset is this large.
const PLACEHOLDER: &str = "18446744073709551615";

/// Splits a message encoded with offset `u64::MAX` around that offset: the script writes
/// `prefix .. offset .. suffix`. The first occurrence is the field: it follows `event_type` and
/// `channel`, whose characters are validated and cannot contain it.
pub fn split_at_offset(json: &[u8]) -> Option<(Bytes, Bytes)> {
    let needle = format!("\"offset\":{PLACEHOLDER}");
    let at = json
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())?;
    let cut = at + needle.len() - PLACEHOLDER.len();
    Some((
        Bytes::copy_from_slice(&json[..cut]),
        Bytes::copy_from_slice(&json[cut + PLACEHOLDER.len()..]),
    ))
}

/// The offset of a stream entry id `"<offset>-0"`.
pub fn offset_of_id(id: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(id).ok()?;
    s.strip_suffix("-0")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_channel_hash_tag() {
        let k = Keys::new("huddle", "odds_7");
        assert_eq!(k.meta, "huddle:meta:{odds_7}");
        assert_eq!(k.stream, "huddle:stream:{odds_7}");
        assert_eq!(k.topic, "huddle:ch:{odds_7}");
        assert_eq!(
            Keys::idem("huddle", "odds_7", "m1"),
            "huddle:idem:{odds_7}:m1"
        );
        assert_eq!(channel_of_topic("huddle", &k.topic), Some("odds_7"));
        assert_eq!(channel_of_topic("other", &k.topic), None);
        assert_eq!(channel_of_topic("huddle", "huddle:meta:{x}"), None);
    }

    #[test]
    fn topics_name_what_they_carry() {
        let p = "huddle";
        assert_eq!(
            parse_topic(p, &topic(p, "odds")),
            Some(Topic::Channel("odds"))
        );
        assert_eq!(
            parse_topic(p, &user_topic(p, "u 1")),
            Some(Topic::User("u 1"))
        );
        assert_eq!(parse_topic(p, &broadcast_topic(p)), Some(Topic::Broadcast));
        assert_eq!(parse_topic(p, "other:bc"), None);
        assert_eq!(parse_topic(p, "huddle:meta:{odds}"), None);
        assert_eq!(
            parse_direct(b"n1 {\"a\":1}"),
            Some(("n1", &b"{\"a\":1}"[..]))
        );
        assert_eq!(parse_direct(b" {}"), None);
        assert_eq!(parse_direct(b"n1"), None);
    }

    #[test]
    fn payload_round_trip_and_refusals() {
        let p = parse_payload(b"42 01ABC {\"a\": 1}").expect("parses");
        assert_eq!(
            p,
            Payload {
                offset: 42,
                epoch: "01ABC",
                json: b"{\"a\": 1}"
            }
        );
        for bad in [&b""[..], b"42", b"42 E", b"x E {}", b"0 E {}", b"42  {}"] {
            assert_eq!(
                parse_payload(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn split_puts_the_offset_back_where_it_was() {
        let json = br#"{"event_type":"tick","channel":"c","offset":18446744073709551615,"data":{"offset":18446744073709551615}}"#;
        let (a, b) = split_at_offset(json).expect("found");
        let joined = [&a[..], b"7", &b[..]].concat();
        assert_eq!(
            joined,
            br#"{"event_type":"tick","channel":"c","offset":7,"data":{"offset":18446744073709551615}}"#
        );
        assert!(split_at_offset(br#"{"offset":1}"#).is_none());
    }

    #[test]
    fn stream_ids() {
        assert_eq!(offset_of_id(b"17-0"), Some(17));
        assert_eq!(offset_of_id(b"17-1"), None);
        assert_eq!(offset_of_id(b"x-0"), None);
    }
}
