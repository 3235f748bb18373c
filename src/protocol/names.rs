//! Names and limits: channel and event-type rules, the size limits and the event lists
//! (PROTOCOL.md §3, §4).

/// Longest channel name in bytes (PROTOCOL.md §4).
pub const MAX_CHANNEL_LEN: usize = 128;
/// Longest event type in bytes (`[a-z][a-z0-9_]{0,63}`, PROTOCOL.md §3).
pub const MAX_EVENT_TYPE_LEN: usize = 64;
/// Deepest JSON nesting accepted from clients and publishers; deeper input is refused as malformed.
pub const MAX_JSON_DEPTH: usize = 128;
/// Most keys one client filter may have, to bound the per-message cost of filtering.
pub const MAX_FILTER_KEYS: usize = 16;
/// Most values one filter key may list, to bound the per-message cost of filtering.
pub const MAX_FILTER_VALUES: usize = 256;
/// Longest `message_id` a publisher may set (it is forwarded to every subscriber).
pub const MAX_MESSAGE_ID_LEN: usize = 128;

/// Event types listed in connection_ack's supported_events.
pub const SUPPORTED_EVENTS: &[&str] = &[
    "connection_ack",
    "heartbeat",
    "game_update",
    "odds_update",
    "prediction_update",
    "notification",
    "user_subscription",
    "user_unsubscription",
    "error",
    "publish",
    "refresh",
];

/// Event types only the server may emit; publishing them is refused so clients can trust them.
pub const SERVER_ONLY_EVENTS: &[&str] = &[
    "connection_ack",
    "heartbeat",
    "error",
    "user_subscription",
    "user_unsubscription",
    "publish",
    "refresh",
];

/// The channel-name rule, quoted in error messages.
const CHANNEL_RULE: &str = "must be 1-128 bytes of [A-Za-z0-9_.:@#-]";

/// Channel names: 1–128 bytes of [A-Za-z0-9_.:@#-].
pub fn is_valid_channel(name: &str) -> bool {
    (1..=MAX_CHANNEL_LEN).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'#' | b'-')
        })
}

/// Per-user channels (PROTOCOL.md §9): a subscriber reads only its own user's stream.
pub const USER_CHANNELS: &[&str] = &["bets", "bankroll"];

/// True for `bets` and `bankroll`.
pub fn is_user_channel(name: &str) -> bool {
    USER_CHANNELS.contains(&name)
}

/// Channels under `huddle:` are the server's own: only the server writes them, and only
/// connections holding the API key read them (an extension to PROTOCOL.md §4).
pub const SERVER_CHANNEL_PREFIX: &str = "huddle:";

/// Once a second while anyone listens: the server's numbers for the dashboard
/// (`event_type` `stats`, no offset, not in history).
pub const STATS_CHANNEL: &str = "huddle:stats";

/// True for the server's own channels (`huddle:…`).
pub fn is_server_channel(name: &str) -> bool {
    name.starts_with(SERVER_CHANNEL_PREFIX)
}

/// The internal stream name of `user`'s own `channel`. `/` is never in a client's channel name,
/// so no name a client can subscribe to or publish to collides with it.
pub fn user_channel_key(channel: &str, user: &str) -> String {
    format!("{channel}/{user}")
}

/// The channel name clients see for an internal stream name (the name itself, except for a
/// user's stream, which shows as its channel).
pub fn wire_name(key: &str) -> &str {
    key.split_once('/').map_or(key, |(channel, _)| channel)
}

/// Custom event types: [a-z][a-z0-9_]{0,63}.
pub fn is_valid_event_type(name: &str) -> bool {
    let b = name.as_bytes();
    matches!(b.first(), Some(b'a'..=b'z'))
        && b.len() <= MAX_EVENT_TYPE_LEN
        && b.iter()
            .skip(1)
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// Debug-quotes `s`, cut to at most `max` bytes (on a char boundary), for echoing in messages.
pub(super) fn quoted(s: &str, max: usize) -> String {
    if s.len() <= max {
        return format!("{s:?}");
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}…", &s[..end])
}

/// Describes a bad channel name: the quoted (truncated) name and the rule.
pub(super) fn bad_channel(name: &str) -> String {
    format!("{} ({CHANNEL_RULE})", quoted(name, MAX_CHANNEL_LEN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        for ok in [
            "odds_2026_W12_KC_BUF",
            "a:b@c#d-e.f",
            "a",
            "games",
            &"x".repeat(128),
        ] {
            assert!(is_valid_channel(ok), "{ok}");
        }
        let long = "x".repeat(129);
        for bad in [
            "",
            long.as_str(),
            "odds 7",
            "odds/7",
            "cañón",
            "ödds",
            "a\nb",
            "a*",
            "a\"b",
        ] {
            assert!(!is_valid_channel(bad), "{bad:?}");
        }
    }

    #[test]
    fn event_type_names() {
        for ok in ["odds_update", "a", "x9_", &format!("a{}", "b".repeat(63))] {
            assert!(is_valid_event_type(ok), "{ok}");
        }
        for bad in [
            "",
            "9a",
            "_a",
            "Odds",
            "odds-update",
            "odds update",
            &"a".repeat(65),
            "é",
        ] {
            assert!(!is_valid_event_type(bad), "{bad:?}");
        }
    }
}
