//! The JSON messages of the huddle protocol and their validation (PROTOCOL.md §3, §4, §5, §7).
//!
//! Everything here is a pure function over bytes or [`serde_json::Value`]s: no sockets, no runtime,
//! no clocks except [`timestamp_now`]. The server calls:
//!
//! - [`parse_client_message`] for every text message a WebSocket client sends. Bad input is returned
//!   as a [`ClientError`] (code + message + `reply_to`) that the server turns into an `error` event; it
//!   never closes the connection by itself.
//! - [`PublishRequest::parse`], [`DirectMessage::parse_broadcast`] and [`DirectMessage::parse_send`]
//!   for the bodies of `POST /api/publish`, `/api/broadcast` and `/api/send`. A [`PublishError`] maps to
//!   HTTP 400 (malformed JSON) or 422 (a payload that breaks §3), see [`PublishError::http_status`].
//! - [`OutMessage`] to encode every server → client message exactly once; absent fields are omitted.
//!
//! Choices where PROTOCOL.md is silent (documented here so the project can point at them):
//!
//! - **Integers** (`home_score`, `quarter`, `moneyline_*`) must be JSON integers written without a
//!   fraction or exponent: `3` is accepted, `3.0`, `3.5` and `3e0` are refused. Floats (`spread`,
//!   probabilities, …) accept any JSON number, integers included.
//! - **`null` counts as absent** for optional envelope fields (`message_id`, `channel`, `channels`,
//!   `filter`, `data` of a publish, which then defaults to `{}`) and for the optional `title` of a
//!   notification. A required payload field that is `null` is refused with "must be …".
//! - **Unknown keys are ignored** everywhere (top level, `data` of a subscription — e.g. the later
//!   `since` — and payloads), so newer clients keep working against this server.
//! - `game_id` must be a non-empty string, because it names the default channels (`odds_{game_id}`).
//! - `updated_at` is checked by a strict RFC 3339 checker (date, `T`, time, optional fraction, `Z` or
//!   `±HH:MM`; calendar-valid days; second 60 allowed for leap seconds; `t`/`z` accepted as RFC 3339
//!   §5.6 permits). A naive timestamp without offset is refused.
//! - The probability sum check is inclusive: `|home + away − 1| ≤ 0.001` (plus 1e-9 for rounding).
//! - A `message_id` given by a publisher (it is forwarded to every subscriber) must be 1–128 bytes;
//!   the `message_id` of a client request (only echoed back as `reply_to`) may be any string.
//! - Subscribing: `channel` and `channels` may both be given (union, `channel` first); duplicates are
//!   removed, first one wins (with its filter). A request-level `filter` applies to every channel
//!   that has no per-channel `filter` of its own. The whole request is refused if any channel is
//!   invalid. `max_subscriptions` is checked after removing duplicates and only for subscriptions:
//!   an unsubscription can only shrink the connection's state.
//! - Filters: at most [`MAX_FILTER_KEYS`] keys and [`MAX_FILTER_VALUES`] values per key; a key's list
//!   must not be empty; values are strings, numbers or booleans. A data field that is missing, `null`,
//!   an array or an object never matches.
//! - JSON nesting deeper than [`MAX_JSON_DEPTH`] is refused as malformed before it is parsed, so a
//!   hostile message cannot exhaust the stack while the value tree is built or dropped (without the
//!   check, 30 000 `[` — well under the 64 KiB message limit — abort the process).
//! - simd-json refuses integers outside the i64/u64 range (e.g. `18446744073709551616`) and
//!   `1e400` as malformed JSON (HTTP 400 / `invalid_message`).
//! - Publishing has no cap on the number of channels beyond the body size; unknown client events
//!   (including `refresh`, which belongs to the not yet built [auth] section) answer `unknown_event`.

use std::collections::HashSet;
use std::fmt;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Number, Value};

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

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Error codes sent to clients in `error` events (PROTOCOL.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Malformed JSON, not an object, or a field of the wrong type or shape.
    InvalidMessage,
    /// An `event_type` a client may not send (not heartbeat/user_subscription/user_unsubscription/publish).
    UnknownEvent,
    /// A channel name outside `[A-Za-z0-9_.:@#-]{1,128}`.
    InvalidChannel,
    /// More channels than `--max-subscriptions` allows.
    TooManySubscriptions,
    /// The connection may not use that channel or publish (set by the server, [auth]).
    Forbidden,
    /// The connection exceeded its inbound message rate (set by the server, [auth]).
    RateLimited,
    /// The server cannot take the publish now; nothing of it was delivered.
    Overloaded,
}

impl ErrorCode {
    /// The wire spelling of the code, e.g. `"invalid_message"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::UnknownEvent => "unknown_event",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Overloaded => "overloaded",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A client message refused with an error reply; the connection stays open.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ClientError {
    /// What kind of refusal this is (the `data.code` of the error event).
    pub code: ErrorCode,
    /// Human-readable reason (the `data.message` of the error event).
    pub message: String,
    /// The client's `message_id`, when it could be read, to send back as `reply_to`.
    pub reply_to: Option<String>,
}

impl ClientError {
    /// Builds an error, e.g. for `forbidden` or `rate_limited` decided by the server.
    pub fn new(code: ErrorCode, message: impl Into<String>, reply_to: Option<String>) -> Self {
        ClientError {
            code,
            message: message.into(),
            reply_to,
        }
    }

    /// The `data` object of the `error` event: `{"code":"…","message":"…"}`.
    pub fn data(&self) -> Value {
        let mut m = Map::with_capacity(2);
        m.insert("code".into(), Value::String(self.code.as_str().into()));
        m.insert("message".into(), Value::String(self.message.clone()));
        Value::Object(m)
    }
}

/// Why a publish/broadcast/send body was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PublishError {
    /// The body is not JSON (HTTP 400).
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// The body breaks §3/§7, e.g. "data.home_score: must be an integer >= 0" (HTTP 422).
    #[error("{0}")]
    Invalid(String),
    /// A channel name is invalid; holds the quoted name and the rule (HTTP 422).
    #[error("invalid channel: {0}")]
    InvalidChannel(String),
}

impl PublishError {
    /// The HTTP status for this refusal: 400 for malformed JSON, 422 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            PublishError::Malformed(_) => 400,
            PublishError::Invalid(_) | PublishError::InvalidChannel(_) => 422,
        }
    }

    /// The `error.code` of the HTTP answer: `malformed_json` or `validation_failed`.
    pub fn code(&self) -> &'static str {
        match self {
            PublishError::Malformed(_) => "malformed_json",
            PublishError::Invalid(_) | PublishError::InvalidChannel(_) => "validation_failed",
        }
    }

    /// Turns a refusal of a WebSocket publish into the client error to send back.
    fn into_client_error(self, reply_to: Option<String>) -> ClientError {
        let code = match self {
            PublishError::InvalidChannel(_) => ErrorCode::InvalidChannel,
            PublishError::Malformed(_) | PublishError::Invalid(_) => ErrorCode::InvalidMessage,
        };
        let message = match self {
            PublishError::Invalid(m) => m,
            other => other.to_string(),
        };
        ClientError::new(code, message, reply_to)
    }
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

/// Channel names: 1–128 bytes of [A-Za-z0-9_.:@#-].
pub fn is_valid_channel(name: &str) -> bool {
    (1..=MAX_CHANNEL_LEN).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'#' | b'-')
        })
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
fn quoted(s: &str, max: usize) -> String {
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
fn bad_channel(name: &str) -> String {
    format!("{} ({CHANNEL_RULE})", quoted(name, MAX_CHANNEL_LEN))
}

// ---------------------------------------------------------------------------------------------
// JSON parsing
// ---------------------------------------------------------------------------------------------

/// Refuses nesting deeper than [`MAX_JSON_DEPTH`] with a linear scan, before any tree is built.
fn check_depth(buf: &[u8]) -> Result<(), String> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in buf {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_JSON_DEPTH {
                        return Err(format!("nesting deeper than {MAX_JSON_DEPTH} levels"));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    Ok(())
}

thread_local! {
    /// simd-json's scratch buffers, reused by every parse on this thread (one set per shard):
    /// allocating them per message was the largest part of parsing a small message.
    static JSON_BUFFERS: std::cell::RefCell<simd_json::Buffers> =
        std::cell::RefCell::new(simd_json::Buffers::default());
}

/// Parses one JSON document with simd-json (in place); the error is a short description.
fn parse_json(buf: &mut [u8]) -> Result<Value, String> {
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err("empty input".into());
    }
    check_depth(buf)?;
    JSON_BUFFERS
        .with(|buffers| match buffers.try_borrow_mut() {
            Ok(mut b) => simd_json::serde::from_slice_with_buffers::<Value>(buf, &mut b),
            // Not reachable (parsing does not re-enter), but never panic on input.
            Err(_) => simd_json::serde::from_slice::<Value>(buf),
        })
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------------

/// Client filter (PROTOCOL.md §4): for every key, the top-level data field of that name must equal one
/// of the listed values; strings compare exactly, numbers by value (7 == 7.0; "7" != 7).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    rules: Vec<(String, Vec<Value>)>,
}

impl Filter {
    /// From the JSON object; each value must be an array of strings/numbers/bools (a single scalar is accepted as a one-element list). Err(message) otherwise.
    pub fn from_value(v: &Value) -> Result<Filter, String> {
        filter_at(v, "filter")
    }

    /// True when every key's data field equals one of its listed values.
    pub fn matches(&self, data: &Map<String, Value>) -> bool {
        self.rules.iter().all(|(key, allowed)| {
            data.get(key)
                .is_some_and(|field| allowed.iter().any(|v| scalar_eq(field, v)))
        })
    }

    /// True when the filter has no keys (it matches everything).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Parses a filter object, naming `path` in error messages.
fn filter_at(v: &Value, path: &str) -> Result<Filter, String> {
    let Value::Object(m) = v else {
        return Err(format!(
            "{path}: must be an object mapping data fields to lists of values"
        ));
    };
    if m.len() > MAX_FILTER_KEYS {
        return Err(format!("{path}: at most {MAX_FILTER_KEYS} fields"));
    }
    let mut rules = Vec::with_capacity(m.len());
    for (key, val) in m {
        let values = match val {
            Value::Array(list) => {
                if list.is_empty() {
                    return Err(format!("{path}.{key}: must not be empty"));
                }
                if list.len() > MAX_FILTER_VALUES {
                    return Err(format!("{path}.{key}: at most {MAX_FILTER_VALUES} values"));
                }
                if !list.iter().all(is_scalar) {
                    return Err(format!(
                        "{path}.{key}: values must be strings, numbers or booleans"
                    ));
                }
                list.clone()
            }
            scalar if is_scalar(scalar) => vec![scalar.clone()],
            _ => {
                return Err(format!(
                    "{path}.{key}: must be a string, number, boolean or a list of them"
                ))
            }
        };
        rules.push((key.clone(), values));
    }
    Ok(Filter { rules })
}

/// Parses an optional filter; absent, `null` and `{}` all mean "no filter".
fn opt_filter_at(v: Option<&Value>, path: &str) -> Result<Option<Filter>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => filter_at(v, path).map(|f| (!f.is_empty()).then_some(f)),
    }
}

/// Strings, numbers and booleans may appear in filters.
fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// Filter equality: same JSON type, numbers compared by value.
fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        _ => false,
    }
}

/// An integer-valued JSON number, widened so i64 and u64 compare exactly.
fn as_int(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Exact numeric equality across integer and float representations (7 == 7.0).
fn number_eq(a: &Number, b: &Number) -> bool {
    match (as_int(a), as_int(b)) {
        (Some(x), Some(y)) => x == y,
        (Some(i), None) => float_eq_int(b.as_f64(), i),
        (None, Some(i)) => float_eq_int(a.as_f64(), i),
        (None, None) => a.as_f64() == b.as_f64(),
    }
}

/// True when the float is integral and equal to `i` (no precision loss on large integers).
fn float_eq_int(f: Option<f64>, i: i128) -> bool {
    match f {
        // `as` saturates; integral floats within ±1e38 convert exactly.
        Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e38 => f as i128 == i,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Client messages
// ---------------------------------------------------------------------------------------------

/// One channel in a subscribe/unsubscribe request.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscribeSpec {
    /// The validated channel name.
    pub channel: String,
    /// The filter for this channel (per-channel, else the request's), `None` = every message.
    pub filter: Option<Filter>,
}

/// A parsed client → server message (PROTOCOL.md §4, §5, §7).
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequest {
    /// `heartbeat`: answer with a heartbeat carrying `server_time`.
    Heartbeat,
    /// `user_subscription`: validated, de-duplicated channels with their filters.
    Subscribe(Vec<SubscribeSpec>),
    /// `user_unsubscription`: validated, de-duplicated channel names.
    Unsubscribe(Vec<String>),
    /// `publish`: a validated publish request (the connection's right to publish is the server's check).
    Publish(PublishRequest),
}

impl ClientRequest {
    /// The event type of this request, which is also the event type of its reply.
    pub fn event_type(&self) -> &'static str {
        match self {
            ClientRequest::Heartbeat => "heartbeat",
            ClientRequest::Subscribe(_) => "user_subscription",
            ClientRequest::Unsubscribe(_) => "user_unsubscription",
            ClientRequest::Publish(_) => "publish",
        }
    }
}

/// A parsed client message: the request plus the client's `message_id` for `reply_to`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientMessage {
    /// The client's `message_id`, echoed as `reply_to` on every reply.
    pub message_id: Option<String>,
    /// What the client asked for.
    pub request: ClientRequest,
}

/// A refusal before the `reply_to` is attached.
type Refusal = (ErrorCode, String);

/// Parses one text message from a client. `buf` is mutable because simd-json parses in place.
/// Malformed JSON / not an object / missing or non-string event_type / wrong field types → InvalidMessage;
/// an event_type that is not heartbeat|user_subscription|user_unsubscription|publish → UnknownEvent;
/// a bad channel name → InvalidChannel (message names the channel). `reply_to` in the error is the
/// client's message_id when it could be read. `max_subscriptions` caps the number of channels in one
/// request (more → TooManySubscriptions; the caller also checks the connection's total).
pub fn parse_client_message(
    buf: &mut [u8],
    max_subscriptions: usize,
) -> Result<ClientMessage, ClientError> {
    let value = parse_json(buf).map_err(|e| {
        ClientError::new(
            ErrorCode::InvalidMessage,
            format!("malformed JSON: {e}"),
            None,
        )
    })?;
    let Value::Object(mut obj) = value else {
        return Err(ClientError::new(
            ErrorCode::InvalidMessage,
            "message must be a JSON object",
            None,
        ));
    };
    let message_id = match obj.remove("message_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(ClientError::new(
                ErrorCode::InvalidMessage,
                "message_id: must be a string",
                None,
            ))
        }
    };
    match parse_request(&mut obj, max_subscriptions) {
        Ok(request) => Ok(ClientMessage {
            message_id,
            request,
        }),
        Err(Ok((code, message))) => Err(ClientError::new(code, message, message_id)),
        Err(Err(publish_error)) => Err(publish_error.into_client_error(message_id)),
    }
}

/// Dispatches on `event_type`; publish refusals are kept as [`PublishError`] for their mapping.
fn parse_request(
    obj: &mut Map<String, Value>,
    max_subscriptions: usize,
) -> Result<ClientRequest, Result<Refusal, PublishError>> {
    let event_type = match obj.remove("event_type") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => {
            return Err(Ok((
                ErrorCode::InvalidMessage,
                "event_type: required".into(),
            )))
        }
        Some(_) => {
            return Err(Ok((
                ErrorCode::InvalidMessage,
                "event_type: must be a string".into(),
            )))
        }
    };
    match event_type.as_str() {
        "heartbeat" => Ok(ClientRequest::Heartbeat),
        "user_subscription" => parse_channels(obj.get("data"), true)
            .and_then(|specs| {
                if specs.len() > max_subscriptions {
                    Err((
                        ErrorCode::TooManySubscriptions,
                        format!(
                            "{} channels in one request; at most {max_subscriptions} allowed",
                            specs.len()
                        ),
                    ))
                } else {
                    Ok(ClientRequest::Subscribe(specs))
                }
            })
            .map_err(Ok),
        "user_unsubscription" => parse_channels(obj.get("data"), false)
            .map(|specs| ClientRequest::Unsubscribe(specs.into_iter().map(|s| s.channel).collect()))
            .map_err(Ok),
        "publish" => match obj.remove("data") {
            Some(data @ Value::Object(_)) => PublishRequest::from_value(data)
                .map(ClientRequest::Publish)
                .map_err(Err),
            _ => Err(Ok((
                ErrorCode::InvalidMessage,
                "data: required; expected {\"channel\":…,\"event_type\":…,\"data\":{…}}".into(),
            ))),
        },
        other => Err(Ok((
            ErrorCode::UnknownEvent,
            format!(
                "unknown event_type {}; clients may send heartbeat, user_subscription, user_unsubscription, publish",
                quoted(other, MAX_EVENT_TYPE_LEN)
            ),
        ))),
    }
}

/// Recovery from an offset (PROTOCOL.md §10) is a later feature; until then a request for it is
/// refused rather than answered with a plain subscription the client would take as recovered.
const SINCE_UNAVAILABLE: &str =
    "{path}: history recovery (PROTOCOL.md §10) is not available in this version";

/// Parses the `data` of a (un)subscription: `channel` and/or `channels`, with filters when asked.
fn parse_channels(data: Option<&Value>, with_filters: bool) -> Result<Vec<SubscribeSpec>, Refusal> {
    let invalid = |m: String| (ErrorCode::InvalidMessage, m);
    let Some(Value::Object(data)) = data else {
        return Err(invalid(
            "data: required; expected {\"channel\":\"…\"} or {\"channels\":[…]}".into(),
        ));
    };
    if with_filters && data.contains_key("since") {
        return Err(invalid(SINCE_UNAVAILABLE.replace("{path}", "data.since")));
    }
    let common = if with_filters {
        opt_filter_at(data.get("filter"), "data.filter").map_err(invalid)?
    } else {
        None
    };
    // (name, own filter); `None` inherits the request's filter.
    let mut entries: Vec<(&str, Option<Filter>)> = Vec::new();
    match data.get("channel") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => entries.push((s, None)),
        Some(_) => return Err(invalid("data.channel: must be a string".into())),
    }
    match data.get("channels") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            if list.is_empty() {
                return Err(invalid("data.channels: must not be empty".into()));
            }
            entries.reserve(list.len());
            for (i, item) in list.iter().enumerate() {
                match item {
                    Value::String(s) => entries.push((s, None)),
                    Value::Object(o) => {
                        let name = match o.get("channel") {
                            Some(Value::String(s)) => s.as_str(),
                            None | Some(Value::Null) => {
                                return Err(invalid(format!(
                                    "data.channels[{i}].channel: required"
                                )))
                            }
                            Some(_) => {
                                return Err(invalid(format!(
                                    "data.channels[{i}].channel: must be a string"
                                )))
                            }
                        };
                        if with_filters && o.contains_key("since") {
                            let path = format!("data.channels[{i}].since");
                            return Err(invalid(SINCE_UNAVAILABLE.replace("{path}", &path)));
                        }
                        let own = if with_filters {
                            let path = format!("data.channels[{i}].filter");
                            opt_filter_at(o.get("filter"), &path).map_err(invalid)?
                        } else {
                            None
                        };
                        entries.push((name, own));
                    }
                    _ => {
                        return Err(invalid(format!(
                            "data.channels[{i}]: must be a channel name or {{\"channel\":…}}"
                        )))
                    }
                }
            }
        }
        Some(_) => return Err(invalid("data.channels: must be an array".into())),
    }
    if entries.is_empty() {
        return Err(invalid(
            "data: expected {\"channel\":\"…\"} or {\"channels\":[…]}".into(),
        ));
    }
    let mut seen: HashSet<&str> = HashSet::with_capacity(entries.len());
    let mut specs = Vec::with_capacity(entries.len());
    for (name, own) in entries {
        if !is_valid_channel(name) {
            return Err((
                ErrorCode::InvalidChannel,
                format!("invalid channel: {}", bad_channel(name)),
            ));
        }
        if seen.insert(name) {
            specs.push(SubscribeSpec {
                channel: name.to_owned(),
                filter: own.or_else(|| common.clone()),
            });
        }
    }
    Ok(specs)
}

// ---------------------------------------------------------------------------------------------
// Publishing
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Payload validation (§3)
// ---------------------------------------------------------------------------------------------

/// Validates `data` for `event_type` per PROTOCOL.md §3. Known types are checked field by field; any
/// other event_type matching [a-z][a-z0-9_]{0,63} is custom (data must be an object, nothing else checked).
/// Server-only types (connection_ack, heartbeat, error, user_subscription, user_unsubscription, publish, refresh) are refused for publishing.
/// Err message names the field path: "data.home_score: must be an integer >= 0", "data.quarter: must be an integer 0-5",
/// "data.game_status: must be one of scheduled|in_progress|halftime|final|postponed", "data.updated_at: must be an RFC 3339 timestamp",
/// "data.time_remaining: must be MM:SS", "data.moneyline_home: must be an integer with |v| >= 100",
/// "data.home_win_probability: ...", "data.home_win_probability + data.away_win_probability: must sum to 1 (±0.001)", "data.level: must be one of info|warning|error", "event_type: ..." etc.
/// Missing required field → "data.FIELD: required".
pub fn validate_payload(event_type: &str, data: &Map<String, Value>) -> Result<(), String> {
    if !is_valid_event_type(event_type) {
        return Err(format!(
            "event_type: {} must match [a-z][a-z0-9_]{{0,63}}",
            quoted(event_type, MAX_EVENT_TYPE_LEN)
        ));
    }
    if SERVER_ONLY_EVENTS.contains(&event_type) {
        return Err(format!(
            "event_type: {event_type} is reserved for the server and cannot be published"
        ));
    }
    let d = Fields(data);
    match event_type {
        "game_update" => {
            d.game_id()?;
            d.string("home_team")?;
            d.string("away_team")?;
            d.int("home_score", "must be an integer >= 0", |v| v >= 0)?;
            d.int("away_score", "must be an integer >= 0", |v| v >= 0)?;
            d.int("quarter", "must be an integer 0-5", |v| {
                (0..=5).contains(&v)
            })?;
            d.check("time_remaining", "must be MM:SS", |v| {
                v.as_str().is_some_and(is_mm_ss)
            })?;
            d.check(
                "game_status",
                "must be one of scheduled|in_progress|halftime|final|postponed",
                |v| {
                    matches!(
                        v.as_str(),
                        Some("scheduled" | "in_progress" | "halftime" | "final" | "postponed")
                    )
                },
            )?;
            d.updated_at()
        }
        "odds_update" => {
            d.game_id()?;
            d.string("sportsbook")?;
            d.string("home_team")?;
            d.string("away_team")?;
            d.number("spread", "must be a number", |_| true)?;
            let american = |v: i128| v.unsigned_abs() >= 100;
            d.int(
                "moneyline_home",
                "must be an integer with |v| >= 100",
                american,
            )?;
            d.int(
                "moneyline_away",
                "must be an integer with |v| >= 100",
                american,
            )?;
            d.number("over_under", "must be a number > 0", |v| v > 0.0)?;
            d.updated_at()
        }
        "prediction_update" => {
            d.game_id()?;
            d.string("home_team")?;
            d.string("away_team")?;
            let unit = |v: f64| (0.0..=1.0).contains(&v);
            let home = d.number("home_win_probability", "must be a number in [0, 1]", unit)?;
            let away = d.number("away_win_probability", "must be a number in [0, 1]", unit)?;
            if (home + away - 1.0).abs() > 0.001 + 1e-9 {
                return Err(
                    "data.home_win_probability + data.away_win_probability: must sum to 1 (±0.001)"
                        .into(),
                );
            }
            d.number("predicted_spread", "must be a number", |_| true)?;
            d.number("confidence_level", "must be a number in [0, 1]", unit)?;
            d.string("model_version")?;
            d.updated_at()
        }
        "notification" => {
            d.string("message")?;
            d.check("level", "must be one of info|warning|error", |v| {
                matches!(v.as_str(), Some("info" | "warning" | "error"))
            })?;
            if let Some(title) = data.get("title") {
                if !matches!(title, Value::String(_) | Value::Null) {
                    return Err("data.title: must be a string".into());
                }
            }
            if let Some(flag) = data.get("action_required") {
                if !flag.is_boolean() {
                    return Err("data.action_required: must be a boolean".into());
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Field-by-field checks over a payload, producing "data.FIELD: …" messages.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// The field, or "data.NAME: required".
    fn get(&self, name: &str) -> Result<&Value, String> {
        self.0
            .get(name)
            .ok_or_else(|| format!("data.{name}: required"))
    }

    /// The field must exist and satisfy `ok`, else "data.NAME: RULE".
    fn check(&self, name: &str, rule: &str, ok: impl Fn(&Value) -> bool) -> Result<(), String> {
        if ok(self.get(name)?) {
            Ok(())
        } else {
            Err(format!("data.{name}: {rule}"))
        }
    }

    /// A required string.
    fn string(&self, name: &str) -> Result<(), String> {
        self.check(name, "must be a string", Value::is_string)
    }

    /// `game_id`: a required non-empty string (it names the default channels).
    fn game_id(&self) -> Result<(), String> {
        self.check("game_id", "must be a non-empty string", |v| {
            v.as_str().is_some_and(|s| !s.is_empty())
        })
    }

    /// `updated_at`: a required RFC 3339 timestamp.
    fn updated_at(&self) -> Result<(), String> {
        self.check("updated_at", "must be an RFC 3339 timestamp", |v| {
            v.as_str().is_some_and(is_rfc3339)
        })
    }

    /// A required JSON integer (no fraction or exponent) satisfying `ok`.
    fn int(&self, name: &str, rule: &str, ok: impl Fn(i128) -> bool) -> Result<(), String> {
        self.check(name, rule, |v| match v {
            Value::Number(n) => as_int(n).is_some_and(&ok),
            _ => false,
        })
    }

    /// A required JSON number (integer or float) satisfying `ok`; returns its value.
    fn number(&self, name: &str, rule: &str, ok: impl Fn(f64) -> bool) -> Result<f64, String> {
        match self.get(name)?.as_f64() {
            Some(v) if v.is_finite() && ok(v) => Ok(v),
            _ => Err(format!("data.{name}: {rule}")),
        }
    }
}

/// `MM:SS`: two digits, a colon, two digits with seconds 00–59.
fn is_mm_ss(s: &str) -> bool {
    matches!(
        s.as_bytes(),
        [b'0'..=b'9', b'0'..=b'9', b':', b'0'..=b'5', b'0'..=b'9']
    )
}

/// Strict RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, calendar-checked.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<u32> {
        b.get(from..to)?.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let fields = (
        num(0, 4),
        num(5, 7),
        num(8, 10),
        num(11, 13),
        num(14, 16),
        num(17, 19),
    );
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = fields
    else {
        return false;
    };
    let separators = (b.get(4), b.get(7), b.get(10), b.get(13), b.get(16));
    if !matches!(
        separators,
        (
            Some(b'-'),
            Some(b'-'),
            Some(b'T' | b't'),
            Some(b':'),
            Some(b':')
        )
    ) {
        return false;
    }
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return false;
    }
    let mut rest = b.get(19..).unwrap_or_default();
    if let [b'.', tail @ ..] = rest {
        let digits = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        rest = tail.get(digits..).unwrap_or_default();
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            let digit = |c: &u8| c.is_ascii_digit().then(|| u32::from(c - b'0'));
            match (digit(h1), digit(h2), digit(m1), digit(m2)) {
                (Some(a), Some(b), Some(c), Some(d)) => a * 10 + b <= 23 && c * 10 + d <= 59,
                _ => false,
            }
        }
        _ => false,
    }
}

/// Days in `month` (1–12) of `year` in the proleptic Gregorian calendar.
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// ---------------------------------------------------------------------------------------------
// Server → client
// ---------------------------------------------------------------------------------------------

/// Server → client message, serialized exactly once per (message, channel). Fields that don't apply
/// are omitted (skip_serializing_if), never null. Field order on the wire: event_type, channel, offset,
/// message_id, reply_to, user_id, timestamp, data.
///
/// `data` is generic over any `Serialize` type (default [`Value`]) so replies like `connection_ack`
/// can be encoded from a struct or a [`Map`] without building a `Value` first.
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

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("test value is not an object"),
        }
    }

    fn client(s: &str) -> Result<ClientMessage, ClientError> {
        parse_client_message(&mut s.as_bytes().to_vec(), 4)
    }

    fn publish(v: Value) -> Result<PublishRequest, PublishError> {
        PublishRequest::parse(&mut serde_json::to_vec(&v).unwrap())
    }

    fn game() -> Value {
        json!({"game_id":"7","home_team":"KC","away_team":"BUF","home_score":21,"away_score":17,
               "quarter":4,"time_remaining":"02:05","game_status":"in_progress",
               "updated_at":"2026-11-25T18:04:05Z","extra":{"any":"thing"}})
    }

    fn odds() -> Value {
        json!({"game_id":"7","sportsbook":"fanduel","home_team":"KC","away_team":"BUF",
               "spread":-3.5,"moneyline_home":-150,"moneyline_away":130,"over_under":47.5,
               "updated_at":"2026-11-25T18:04:05.123Z"})
    }

    fn prediction() -> Value {
        json!({"game_id":"7","home_team":"KC","away_team":"BUF","home_win_probability":0.62,
               "away_win_probability":0.38,"predicted_spread":-3,"confidence_level":0.8,
               "model_version":"v2.1","updated_at":"2026-11-25T18:04:05+01:00"})
    }

    fn notification() -> Value {
        json!({"message":"Kickoff soon","level":"info","title":"Heads up","action_required":false})
    }

    /// Validates `base` with `field` replaced (`None` = removed).
    fn check_with(
        event: &str,
        base: &Value,
        field: &str,
        value: Option<Value>,
    ) -> Result<(), String> {
        let mut data = obj(base.clone());
        match value {
            Some(v) => {
                data.insert(field.to_owned(), v);
            }
            None => {
                data.remove(field);
            }
        }
        validate_payload(event, &data)
    }

    /// Asserts the good values pass and the bad ones fail with "data.FIELD: ", and absence → required.
    fn rule(event: &str, base: &Value, field: &str, good: &[Value], bad: &[Value]) {
        for g in good {
            assert_eq!(
                check_with(event, base, field, Some(g.clone())),
                Ok(()),
                "{event}.{field} = {g} should pass"
            );
        }
        let prefix = format!("data.{field}: ");
        for b in bad {
            let err = check_with(event, base, field, Some(b.clone())).unwrap_err();
            assert!(
                err.starts_with(&prefix),
                "{event}.{field} = {b}: got {err:?}"
            );
        }
        assert_eq!(
            check_with(event, base, field, None),
            Err(format!("data.{field}: required"))
        );
    }

    // --- names ------------------------------------------------------------------------------

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

    #[test]
    fn error_code_strings() {
        let all = [
            (ErrorCode::InvalidMessage, "invalid_message"),
            (ErrorCode::UnknownEvent, "unknown_event"),
            (ErrorCode::InvalidChannel, "invalid_channel"),
            (ErrorCode::TooManySubscriptions, "too_many_subscriptions"),
            (ErrorCode::Forbidden, "forbidden"),
            (ErrorCode::RateLimited, "rate_limited"),
        ];
        for (code, s) in all {
            assert_eq!(code.as_str(), s);
            assert_eq!(code.to_string(), s);
        }
        let e = ClientError::new(ErrorCode::Forbidden, "no", Some("c1".into()));
        assert_eq!(e.data(), json!({"code":"forbidden","message":"no"}));
    }

    // --- payload validation -----------------------------------------------------------------

    #[test]
    fn typed_examples_pass() {
        assert_eq!(validate_payload("game_update", &obj(game())), Ok(()));
        assert_eq!(validate_payload("odds_update", &obj(odds())), Ok(()));
        assert_eq!(
            validate_payload("prediction_update", &obj(prediction())),
            Ok(())
        );
        assert_eq!(
            validate_payload("notification", &obj(notification())),
            Ok(())
        );
        assert_eq!(validate_payload("my_custom_event", &Map::new()), Ok(()));
    }

    #[test]
    fn game_update_rules() {
        let g = game();
        let e = "game_update";
        rule(
            e,
            &g,
            "game_id",
            &[json!("7"), json!("2026_W12")],
            &[json!(""), json!(7), json!(null)],
        );
        rule(
            e,
            &g,
            "home_team",
            &[json!("KC")],
            &[json!(1), json!(null), json!(["KC"])],
        );
        rule(e, &g, "away_team", &[json!("BUF")], &[json!(true)]);
        rule(
            e,
            &g,
            "home_score",
            &[json!(0), json!(45)],
            &[json!(-1), json!(1.5), json!(3.0), json!("3")],
        );
        rule(e, &g, "away_score", &[json!(0)], &[json!(-7), json!(null)]);
        rule(
            e,
            &g,
            "quarter",
            &[json!(0), json!(5)],
            &[json!(6), json!(-1), json!(2.5)],
        );
        rule(
            e,
            &g,
            "time_remaining",
            &[json!("15:00"), json!("00:00"), json!("99:59")],
            &[
                json!("2:05"),
                json!("02:60"),
                json!("02-05"),
                json!("02:05 "),
                json!(125),
            ],
        );
        rule(
            e,
            &g,
            "game_status",
            &["scheduled", "in_progress", "halftime", "final", "postponed"].map(|s| json!(s)),
            &[json!("live"), json!("Final"), json!(1)],
        );
        rule(
            e,
            &g,
            "updated_at",
            &[
                json!("2026-11-25T18:04:05Z"),
                json!("2026-11-25T18:04:05.123Z"),
                json!("2026-11-25T18:04:05+01:00"),
                json!("2026-11-25T18:04:05.123456-05:30"),
                json!("2024-02-29t23:59:60z"),
            ],
            &[
                json!("2026-11-25T18:04:05"),
                json!("2026-11-25 18:04:05Z"),
                json!("2026-02-29T18:04:05Z"),
                json!("2026-13-01T00:00:00Z"),
                json!("2026-11-25T24:00:00Z"),
                json!("2026-11-25T18:04:05.Z"),
                json!("2026-11-25T18:04:05+1:00"),
                json!("2026-11-25T18:04:05+24:00"),
                json!("2026-11-25"),
                json!("yesterday"),
                json!(1_764_093_845),
            ],
        );
        assert_eq!(
            check_with(e, &g, "home_score", Some(json!(-1))),
            Err("data.home_score: must be an integer >= 0".into())
        );
        assert_eq!(
            check_with(e, &g, "quarter", Some(json!(9))),
            Err("data.quarter: must be an integer 0-5".into())
        );
        assert_eq!(
            check_with(e, &g, "game_status", Some(json!("x"))),
            Err(
                "data.game_status: must be one of scheduled|in_progress|halftime|final|postponed"
                    .into()
            )
        );
        assert_eq!(
            check_with(e, &g, "updated_at", Some(json!("x"))),
            Err("data.updated_at: must be an RFC 3339 timestamp".into())
        );
        assert_eq!(
            check_with(e, &g, "time_remaining", Some(json!("x"))),
            Err("data.time_remaining: must be MM:SS".into())
        );
    }

    #[test]
    fn odds_update_rules() {
        let o = odds();
        let e = "odds_update";
        rule(e, &o, "game_id", &[json!("7")], &[json!(""), json!(7)]);
        rule(e, &o, "sportsbook", &[json!("draftkings")], &[json!(1)]);
        rule(e, &o, "home_team", &[json!("KC")], &[json!(null)]);
        rule(e, &o, "away_team", &[json!("BUF")], &[json!({})]);
        rule(
            e,
            &o,
            "spread",
            &[json!(-3.5), json!(0), json!(7)],
            &[json!("-3.5"), json!(null)],
        );
        rule(
            e,
            &o,
            "moneyline_home",
            &[json!(-150), json!(100), json!(-100), json!(250)],
            &[
                json!(99),
                json!(-99),
                json!(0),
                json!(150.5),
                json!(-150.0),
                json!("-150"),
            ],
        );
        rule(e, &o, "moneyline_away", &[json!(130)], &[json!(50)]);
        rule(
            e,
            &o,
            "over_under",
            &[json!(47.5), json!(40)],
            &[json!(0), json!(-1.5), json!("47")],
        );
        rule(
            e,
            &o,
            "updated_at",
            &[json!("2026-11-25T18:04:05Z")],
            &[json!("nope")],
        );
        assert_eq!(
            check_with(e, &o, "moneyline_home", Some(json!(5))),
            Err("data.moneyline_home: must be an integer with |v| >= 100".into())
        );
        // i64::MIN must not overflow the |v| computation.
        assert_eq!(
            check_with(e, &o, "moneyline_home", Some(json!(i64::MIN))),
            Ok(())
        );
    }

    #[test]
    fn prediction_update_rules() {
        let p = prediction();
        let e = "prediction_update";
        rule(e, &p, "game_id", &[json!("7")], &[json!([])]);
        rule(e, &p, "home_team", &[json!("KC")], &[json!(0)]);
        rule(e, &p, "away_team", &[json!("BUF")], &[json!(0)]);
        // Changing one probability alone breaks the sum, so test the range with its partner adjusted.
        let mut both = obj(p.clone());
        both.insert("home_win_probability".into(), json!(1));
        both.insert("away_win_probability".into(), json!(0));
        assert_eq!(validate_payload(e, &both), Ok(()));
        rule(
            e,
            &p,
            "home_win_probability",
            &[json!(0.6205)],
            &[json!(1.5), json!(-0.1), json!("0.6")],
        );
        rule(
            e,
            &p,
            "away_win_probability",
            &[json!(0.379)],
            &[json!(2), json!(null)],
        );
        let sum = "data.home_win_probability + data.away_win_probability: must sum to 1 (±0.001)";
        assert_eq!(
            check_with(e, &p, "away_win_probability", Some(json!(0.3))),
            Err(sum.into())
        );
        assert_eq!(
            check_with(e, &p, "away_win_probability", Some(json!(0.381))),
            Ok(())
        );
        assert_eq!(
            check_with(e, &p, "away_win_probability", Some(json!(0.3785))),
            Err(sum.into())
        );
        rule(
            e,
            &p,
            "predicted_spread",
            &[json!(-3.5), json!(0)],
            &[json!("x")],
        );
        rule(
            e,
            &p,
            "confidence_level",
            &[json!(0), json!(1), json!(0.5)],
            &[json!(1.01), json!(-0.5)],
        );
        rule(e, &p, "model_version", &[json!("v3")], &[json!(3)]);
        rule(
            e,
            &p,
            "updated_at",
            &[json!("2026-11-25T18:04:05-08:00")],
            &[json!("2026-11-25")],
        );
        assert_eq!(
            check_with(e, &p, "confidence_level", Some(json!(2))),
            Err("data.confidence_level: must be a number in [0, 1]".into())
        );
    }

    #[test]
    fn notification_rules() {
        let n = notification();
        let e = "notification";
        rule(
            e,
            &n,
            "message",
            &[json!(""), json!("hi")],
            &[json!(1), json!(null)],
        );
        rule(
            e,
            &n,
            "level",
            &[json!("info"), json!("warning"), json!("error")],
            &[json!("debug"), json!("INFO")],
        );
        assert_eq!(
            check_with(e, &n, "level", Some(json!("fatal"))),
            Err("data.level: must be one of info|warning|error".into())
        );
        // Optional fields: absent or valid pass; wrong types fail.
        assert_eq!(check_with(e, &n, "title", None), Ok(()));
        assert_eq!(check_with(e, &n, "title", Some(json!(null))), Ok(()));
        assert_eq!(
            check_with(e, &n, "title", Some(json!(5))),
            Err("data.title: must be a string".into())
        );
        assert_eq!(check_with(e, &n, "action_required", None), Ok(()));
        assert_eq!(
            check_with(e, &n, "action_required", Some(json!(true))),
            Ok(())
        );
        assert_eq!(
            check_with(e, &n, "action_required", Some(json!("yes"))),
            Err("data.action_required: must be a boolean".into())
        );
    }

    #[test]
    fn event_type_rules() {
        let err = validate_payload("Bad-Type", &Map::new()).unwrap_err();
        assert!(err.starts_with("event_type: "), "{err}");
        for reserved in SERVER_ONLY_EVENTS {
            let err = validate_payload(reserved, &Map::new()).unwrap_err();
            assert!(
                err.starts_with("event_type: ") && err.contains("reserved"),
                "{err}"
            );
        }
        // Custom events: anything goes inside the object.
        assert_eq!(
            validate_payload("bets_settled", &obj(json!({"x":[1,{"y":null}]}))),
            Ok(())
        );
    }

    // --- publishing -------------------------------------------------------------------------

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
            publish(json!({"channels":["bets"],"event_type":"bet_placed","data":{"a":1}})).unwrap();
        assert_eq!(req.channels, ["bets"]);
        assert_eq!(req.data, obj(json!({"a":1})));
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

    // --- filters ----------------------------------------------------------------------------

    #[test]
    fn filters() {
        let f = Filter::from_value(&json!({"sportsbook":["fanduel","draftkings"]})).unwrap();
        assert!(f.matches(&obj(json!({"sportsbook":"fanduel","x":1}))));
        assert!(f.matches(&obj(json!({"sportsbook":"draftkings"}))));
        assert!(!f.matches(&obj(json!({"sportsbook":"FanDuel"}))));
        assert!(
            !f.matches(&obj(json!({"other":"fanduel"}))),
            "missing field never matches"
        );
        assert!(!f.matches(&obj(json!({"sportsbook":null}))));
        assert!(!f.matches(&obj(json!({"sportsbook":["fanduel"]}))));

        let n = Filter::from_value(&json!({"game_id":[7]})).unwrap();
        assert!(n.matches(&obj(json!({"game_id":7}))));
        assert!(n.matches(&obj(json!({"game_id":7.0}))));
        assert!(!n.matches(&obj(json!({"game_id":"7"}))), "\"7\" != 7");
        assert!(!n.matches(&obj(json!({"game_id":7.5}))));
        let s = Filter::from_value(&json!({"game_id":"7"})).unwrap();
        assert!(
            s.matches(&obj(json!({"game_id":"7"}))),
            "a scalar is a one-element list"
        );
        assert!(!s.matches(&obj(json!({"game_id":7}))));
        let fl = Filter::from_value(&json!({"line":[7.0, -3.5]})).unwrap();
        assert!(fl.matches(&obj(json!({"line":7}))));
        assert!(fl.matches(&obj(json!({"line":-3.5}))));
        let big = Filter::from_value(&json!({"id":[u64::MAX]})).unwrap();
        assert!(big.matches(&obj(json!({"id":u64::MAX}))));
        assert!(!big.matches(&obj(json!({"id":-1}))));
        // 2^53 + 1 is not equal to the float 2^53.
        let p = Filter::from_value(&json!({"id":[9_007_199_254_740_993_u64]})).unwrap();
        assert!(!p.matches(&obj(json!({"id":9_007_199_254_740_992.0_f64}))));
        let b = Filter::from_value(&json!({"live":true})).unwrap();
        assert!(b.matches(&obj(json!({"live":true}))));
        assert!(!b.matches(&obj(json!({"live":1}))));

        let multi =
            Filter::from_value(&json!({"sportsbook":["fanduel"],"game_id":["7","8"]})).unwrap();
        assert!(multi.matches(&obj(json!({"sportsbook":"fanduel","game_id":"8"}))));
        assert!(!multi.matches(&obj(json!({"sportsbook":"fanduel","game_id":"9"}))));
        assert!(!multi.matches(&obj(json!({"sportsbook":"bet365","game_id":"7"}))));
        assert!(!multi.matches(&obj(json!({"game_id":"7"}))));

        let empty = Filter::from_value(&json!({})).unwrap();
        assert!(empty.is_empty() && empty.matches(&Map::new()));
    }

    #[test]
    fn filter_refusals() {
        let too_many_keys: Map<String, Value> = (0..=MAX_FILTER_KEYS)
            .map(|i| (format!("k{i}"), json!(1)))
            .collect();
        let too_many_values = json!({"k": vec![1; MAX_FILTER_VALUES + 1]});
        for (v, want) in [
            (json!([1]), "filter: must be an object"),
            (json!("x"), "filter: must be an object"),
            (json!({"a":[]}), "filter.a: must not be empty"),
            (json!({"a":[null]}), "filter.a: values must be"),
            (json!({"a":[[1]]}), "filter.a: values must be"),
            (json!({"a":{"b":1}}), "filter.a: must be a string"),
            (json!({"a":null}), "filter.a: must be a string"),
            (Value::Object(too_many_keys), "filter: at most"),
            (too_many_values, "filter.k: at most"),
        ] {
            let e = Filter::from_value(&v).unwrap_err();
            assert!(e.starts_with(want), "{v}: {e}");
        }
    }

    // --- client messages --------------------------------------------------------------------

    #[test]
    fn heartbeat() {
        assert_eq!(
            client(r#"{"event_type":"heartbeat"}"#),
            Ok(ClientMessage {
                message_id: None,
                request: ClientRequest::Heartbeat
            })
        );
        let m =
            client(r#"{"event_type":"heartbeat","message_id":"h1","data":{"x":1},"extra":true}"#)
                .unwrap();
        assert_eq!(m.message_id.as_deref(), Some("h1"));
        assert_eq!(m.request.event_type(), "heartbeat");
        assert_eq!(
            client(r#"{"event_type":"heartbeat","message_id":null}"#)
                .unwrap()
                .message_id,
            None
        );
    }

    fn spec(channel: &str, filter: Option<Value>) -> SubscribeSpec {
        SubscribeSpec {
            channel: channel.into(),
            filter: filter.map(|f| Filter::from_value(&f).unwrap()),
        }
    }

    #[test]
    fn subscribe_shapes() {
        let m = client(
            r#"{"event_type":"user_subscription","message_id":"c1","data":{"channel":"odds"}}"#,
        )
        .unwrap();
        assert_eq!(m.message_id.as_deref(), Some("c1"));
        assert_eq!(
            m.request,
            ClientRequest::Subscribe(vec![spec("odds", None)])
        );

        let m = client(
            r#"{"event_type":"user_subscription","data":{"channels":["odds","games","odds"]}}"#,
        )
        .unwrap();
        assert_eq!(
            m.request,
            ClientRequest::Subscribe(vec![spec("odds", None), spec("games", None)])
        );

        let f = json!({"sportsbook":["fanduel","draftkings"],"game_id":["7"]});
        let m = client(
            r#"{"event_type":"user_subscription","data":{"channels":["odds","odds_7"],
                "filter":{"sportsbook":["fanduel","draftkings"],"game_id":["7"]}}}"#,
        )
        .unwrap();
        assert_eq!(
            m.request,
            ClientRequest::Subscribe(vec![
                spec("odds", Some(f.clone())),
                spec("odds_7", Some(f.clone()))
            ])
        );

        // `since` (recovery, not built yet) is refused with a clear message, not ignored.
        for body in [
            r#"{"event_type":"user_subscription","data":{"channel":"odds","since":{"offset":1}}}"#,
            r#"{"event_type":"user_subscription","data":{"channels":[{"channel":"odds","since":{"offset":17,"epoch":"e"}}]}}"#,
        ] {
            let e = client(body).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidMessage);
            assert!(e.message.contains("not available"), "{}", e.message);
        }
        // Per-channel objects, mixed with names; own filter wins, else the request's.
        let m = client(
            r#"{"event_type":"user_subscription","data":{"channel":"games","filter":{"game_id":"7"},
                "channels":[{"channel":"odds","filter":{"sportsbook":"fanduel"}},
                            "lines",{"channel":"games","filter":{"x":1}}]}}"#,
        )
        .unwrap();
        assert_eq!(
            m.request,
            ClientRequest::Subscribe(vec![
                spec("games", Some(json!({"game_id":"7"}))),
                spec("odds", Some(json!({"sportsbook":"fanduel"}))),
                spec("lines", Some(json!({"game_id":"7"}))),
            ])
        );
        // An empty filter is no filter.
        let m =
            client(r#"{"event_type":"user_subscription","data":{"channel":"odds","filter":{}}}"#)
                .unwrap();
        assert_eq!(
            m.request,
            ClientRequest::Subscribe(vec![spec("odds", None)])
        );
    }

    #[test]
    fn unsubscribe_shapes() {
        let m = client(
            r#"{"event_type":"user_unsubscription","message_id":"u1","data":{"channel":"odds"}}"#,
        )
        .unwrap();
        assert_eq!(m.request, ClientRequest::Unsubscribe(vec!["odds".into()]));
        assert_eq!(m.request.event_type(), "user_unsubscription");
        let m = client(
            r#"{"event_type":"user_unsubscription","data":{"channels":["a",{"channel":"b"},"a"],"filter":"ignored"}}"#,
        )
        .unwrap();
        assert_eq!(
            m.request,
            ClientRequest::Unsubscribe(vec!["a".into(), "b".into()])
        );
        // The per-request cap applies to subscriptions only.
        let m = client(
            r#"{"event_type":"user_unsubscription","data":{"channels":["a","b","c","d","e","f"]}}"#,
        );
        assert!(m.is_ok());
    }

    #[test]
    fn publish_over_websocket() {
        let text = json!({"event_type":"publish","message_id":"p1",
                          "data":{"channel":"odds_7","event_type":"odds_update","data":odds(),"message_id":"m9"}})
        .to_string();
        let m = client(&text).unwrap();
        assert_eq!(m.message_id.as_deref(), Some("p1"));
        match m.request {
            ClientRequest::Publish(p) => {
                assert_eq!(p.channels, ["odds_7"]);
                assert_eq!(p.message_id.as_deref(), Some("m9"));
                assert_eq!(p.event_type, "odds_update");
            }
            other => panic!("{other:?}"),
        }
        let text =
            json!({"event_type":"publish","data":{"event_type":"odds_update","data":odds()}})
                .to_string();
        match client(&text).unwrap().request {
            ClientRequest::Publish(p) => assert_eq!(p.channels, ["odds", "odds_7"]),
            other => panic!("{other:?}"),
        }
        let mut bad = obj(odds());
        bad.insert("moneyline_home".into(), json!(50));
        let text = json!({"event_type":"publish","message_id":"p2","data":{"channel":"odds","event_type":"odds_update","data":bad}}).to_string();
        assert_eq!(
            client(&text),
            Err(ClientError::new(
                ErrorCode::InvalidMessage,
                "data.moneyline_home: must be an integer with |v| >= 100",
                Some("p2".into())
            ))
        );
        let text = r#"{"event_type":"publish","message_id":"p3","data":{"channel":"a b","event_type":"x"}}"#;
        let e = client(text).unwrap_err();
        assert_eq!(
            (e.code, e.reply_to.as_deref()),
            (ErrorCode::InvalidChannel, Some("p3"))
        );
        assert!(
            e.message.starts_with("invalid channel: \"a b\""),
            "{}",
            e.message
        );
        for text in [
            r#"{"event_type":"publish","message_id":"p4"}"#,
            r#"{"event_type":"publish","message_id":"p4","data":[1]}"#,
        ] {
            let e = client(text).unwrap_err();
            assert_eq!(
                (e.code, e.reply_to.as_deref()),
                (ErrorCode::InvalidMessage, Some("p4"))
            );
        }
    }

    #[test]
    fn client_error_codes() {
        let code = |s: &str| client(s).map(|_| ()).unwrap_err();

        for s in [
            "{",
            "",
            "not json",
            "{\"event_type\":\"heartbeat\",}",
            "{\"a\":1}{}",
        ] {
            let e = code(s);
            assert_eq!(
                (e.code, e.reply_to.clone()),
                (ErrorCode::InvalidMessage, None),
                "{s:?}"
            );
            assert!(
                e.message.starts_with("malformed JSON"),
                "{s:?}: {}",
                e.message
            );
        }
        for s in [
            r#"[{"event_type":"heartbeat"}]"#,
            "42",
            "\"heartbeat\"",
            "null",
        ] {
            let e = code(s);
            assert_eq!(
                e,
                ClientError::new(
                    ErrorCode::InvalidMessage,
                    "message must be a JSON object",
                    None
                )
            );
        }
        let e = code(r#"{"message_id":"c9"}"#);
        assert_eq!(
            e,
            ClientError::new(
                ErrorCode::InvalidMessage,
                "event_type: required",
                Some("c9".into())
            )
        );
        let e = code(r#"{"message_id":"c9","event_type":["heartbeat"]}"#);
        assert_eq!(
            e,
            ClientError::new(
                ErrorCode::InvalidMessage,
                "event_type: must be a string",
                Some("c9".into())
            )
        );
        let e = code(r#"{"message_id":5,"event_type":"heartbeat"}"#);
        assert_eq!((e.code, e.reply_to), (ErrorCode::InvalidMessage, None));

        for s in ["game_update", "HEARTBEAT", "refresh", "subscribe"] {
            let e = code(&format!(r#"{{"event_type":"{s}","message_id":"x1"}}"#));
            assert_eq!(
                (e.code, e.reply_to.as_deref()),
                (ErrorCode::UnknownEvent, Some("x1")),
                "{s}"
            );
            assert!(e.message.contains(s), "{}", e.message);
        }

        for bad in ["", "odds 7", "odds/7", "ödds", &"x".repeat(129)] {
            let s = json!({"event_type":"user_subscription","message_id":"c2","data":{"channels":["odds", bad]}});
            let e = code(&s.to_string());
            assert_eq!(
                (e.code, e.reply_to.as_deref()),
                (ErrorCode::InvalidChannel, Some("c2")),
                "{bad:?}"
            );
            assert!(e.message.starts_with("invalid channel: "), "{}", e.message);
            assert!(
                e.message.contains(&bad[..bad.len().min(20)]),
                "{}",
                e.message
            );
        }

        let e = code(
            r#"{"event_type":"user_subscription","message_id":"c3","data":{"channels":["a","b","c","d","e"]}}"#,
        );
        assert_eq!(
            (e.code, e.reply_to.as_deref()),
            (ErrorCode::TooManySubscriptions, Some("c3"))
        );
        // Duplicates do not count against the cap.
        assert!(client(
            r#"{"event_type":"user_subscription","data":{"channels":["a","b","c","d","a","b"]}}"#
        )
        .is_ok());
        assert_eq!(
            parse_client_message(
                &mut br#"{"event_type":"user_subscription","data":{"channel":"a"}}"#.to_vec(),
                0
            )
            .unwrap_err()
            .code,
            ErrorCode::TooManySubscriptions
        );

        for (data, prefix) in [
            ("", "data: required"),
            (r#","data":null"#, "data: required"),
            (r#","data":"odds""#, "data: required"),
            (r#","data":{}"#, "data: expected"),
            (
                r#","data":{"since":{"offset":1}}"#,
                "data.since: history recovery",
            ),
            (r#","data":{"channel":5}"#, "data.channel: must be a string"),
            (
                r#","data":{"channels":"odds"}"#,
                "data.channels: must be an array",
            ),
            (
                r#","data":{"channels":[]}"#,
                "data.channels: must not be empty",
            ),
            (r#","data":{"channels":[5]}"#, "data.channels[0]: must be"),
            (
                r#","data":{"channels":["a",{"filter":{}}]}"#,
                "data.channels[1].channel: required",
            ),
            (
                r#","data":{"channels":[{"channel":1}]}"#,
                "data.channels[0].channel: must be a string",
            ),
            (
                r#","data":{"channel":"a","filter":[1]}"#,
                "data.filter: must be an object",
            ),
            (
                r#","data":{"channel":"a","filter":{"k":[]}}"#,
                "data.filter.k: must not be empty",
            ),
            (
                r#","data":{"channels":[{"channel":"a","filter":{"k":{}}}]}"#,
                "data.channels[0].filter.k: must be",
            ),
        ] {
            let e = code(&format!(
                r#"{{"event_type":"user_subscription","message_id":"c4"{data}}}"#
            ));
            assert_eq!(
                (e.code, e.reply_to.as_deref()),
                (ErrorCode::InvalidMessage, Some("c4")),
                "{data}"
            );
            assert!(e.message.starts_with(prefix), "{data}: {}", e.message);
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = "[".repeat(200_000);
        let e = parse_client_message(&mut deep.into_bytes(), 4).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidMessage);
        let mut body = format!(
            "{{\"channel\":\"a\",\"event_type\":\"x\",\"data\":{{\"d\":{}1{}}}}}",
            "[".repeat(5000),
            "]".repeat(5000)
        )
        .into_bytes();
        assert!(matches!(
            PublishRequest::parse(&mut body),
            Err(PublishError::Malformed(_))
        ));
        // Brackets inside strings do not count; moderate nesting is fine.
        let ok = format!(
            "{{\"channel\":\"a\",\"event_type\":\"x\",\"data\":{{\"s\":\"{}\\\"[\",\"d\":{}1{}}}}}",
            "[".repeat(500),
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(PublishRequest::parse(&mut ok.into_bytes()).is_ok());
    }

    /// Deterministic xorshift so the mutation test is reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn mutated_input_never_panics() {
        let seeds: Vec<Vec<u8>> = vec![
            br#"{"event_type":"user_subscription","message_id":"c1","data":{"channels":["odds",{"channel":"games","filter":{"game_id":[7,"7",7.0]}}],"filter":{"sportsbook":"fanduel"}}}"#.to_vec(),
            br#"{"event_type":"heartbeat","message_id":"h"}"#.to_vec(),
            json!({"event_type":"publish","message_id":"p","data":{"event_type":"prediction_update","data":prediction()}}).to_string().into_bytes(),
            json!({"channels":["odds","odds_7"],"event_type":"odds_update","data":odds(),"message_id":"m"}).to_string().into_bytes(),
            json!({"event_type":"game_update","data":game()}).to_string().into_bytes(),
            json!({"user_id":"u1","event_type":"notification","data":notification(),"channel":"bankroll"}).to_string().into_bytes(),
        ];
        let specials: &[u8] = b"{}[]\":,\\ 0-1.eE\xff\xc3\x00tfnu";
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut outcomes = [0usize; 2];
        for round in 0..800 {
            let mut bytes = seeds[round % seeds.len()].clone();
            match round % 5 {
                0 => bytes.truncate(rng.below(bytes.len() + 1)),
                1 => {
                    for _ in 0..1 + rng.below(4) {
                        let i = rng.below(bytes.len());
                        bytes[i] = specials[rng.below(specials.len())];
                    }
                }
                2 => {
                    let i = rng.below(bytes.len() + 1);
                    bytes.insert(i, specials[rng.below(specials.len())]);
                }
                3 => {
                    let i = rng.below(bytes.len());
                    bytes.remove(i);
                }
                _ => {
                    let i = rng.below(bytes.len());
                    bytes[i] = (rng.next() & 0xff) as u8;
                    let j = rng.below(bytes.len() + 1);
                    bytes.truncate(j);
                }
            }
            let ok = parse_client_message(&mut bytes.clone(), 8).is_ok();
            outcomes[usize::from(ok)] += 1;
            let _ = PublishRequest::parse(&mut bytes.clone());
            let _ = DirectMessage::parse_send(&mut bytes.clone());
            let _ = DirectMessage::parse_broadcast(&mut bytes);
        }
        // Sanity: the mutations exercised both accepting and refusing paths.
        assert!(outcomes[0] > 100 && outcomes[1] > 10, "{outcomes:?}");
    }

    // --- server → client --------------------------------------------------------------------

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
        assert!(SUPPORTED_EVENTS.contains(&"connection_ack") && SUPPORTED_EVENTS.len() == 10);
    }
}
