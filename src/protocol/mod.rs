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
//!   answer `unknown_event`.
//!
//! Layout, one file per concern (callers use the re-exports below, `crate::protocol::X`):
//! `names` (channel and event-type rules, limits, event lists), `json` (depth check, simd-json
//! parse), `filter` ([`Filter`] and scalar comparison), `validate` (the typed payloads of §3,
//! RFC 3339, `MM:SS`), `publish` ([`PublishRequest`], [`DirectMessage`], default channels),
//! `client` (client → server messages), `out` ([`OutMessage`], [`timestamp_now`]). The error codes
//! ([`ErrorCode`], [`PublishError`]) live in [`crate::error`], the one table from errors to wire
//! codes, and are re-exported here.

mod client;
mod filter;
mod json;
mod names;
mod out;
mod publish;
#[cfg(test)]
mod tests;
mod validate;

pub use crate::error::{ErrorCode, PublishError};
pub use client::{
    parse_client_message, ClientError, ClientMessage, ClientRequest, Credential, Since,
    SubscribeSpec,
};
pub use filter::Filter;
pub use names::{
    is_server_channel, is_user_channel, is_valid_channel, is_valid_event_type, user_channel_key,
    wire_name, MAX_CHANNEL_LEN, MAX_EVENT_TYPE_LEN, MAX_FILTER_KEYS, MAX_FILTER_VALUES,
    MAX_JSON_DEPTH, MAX_MESSAGE_ID_LEN, SERVER_CHANNEL_PREFIX, SERVER_ONLY_EVENTS, STATS_CHANNEL,
    SUPPORTED_EVENTS, USER_CHANNELS,
};
pub use out::{timestamp_now, OutMessage};
pub use publish::{DirectMessage, PublishRequest};
pub use validate::validate_payload;
