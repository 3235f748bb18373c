//! The one table from errors to wire codes: WebSocket close codes (PROTOCOL.md §11), the client
//! error codes of `error` events (§4) and HTTP statuses with their `error.code` (§2, §7, §9).
//! Every layer has its own error enum; only this file knows the numbers and the wire spellings.
//!
//! **Close codes** ([`CloseReason::code`], [`CloseReason::text`]):
//!
//! | [`CloseReason`] | code | text |
//! |---|---|---|
//! | `Echo(c)` | `c`, 1000 when the client sent none | (empty) |
//! | `ShuttingDown` | 1001 | `server shutting down` |
//! | `Protocol` | 1002 | `protocol error` |
//! | `InvalidUtf8` | 1007 | `invalid utf-8` |
//! | `TooBig` | 1009 | `message too big` |
//! | `HeartbeatTimeout` | 4001 | `heartbeat timeout` |
//! | `SlowConsumer` | 4008 | `slow consumer` |
//! | `InsufficientState` | 4010 | `insufficient state` |
//! | `MessageRate` | 4029 | `message rate exceeded` |
//! | `TokenExpired` | 4401 | `token expired` |
//!
//! **Client error codes** (`data.code` of an `error` event, [`ErrorCode::as_str`]):
//! `InvalidMessage` → `invalid_message`, `UnknownEvent` → `unknown_event`, `InvalidChannel` →
//! `invalid_channel`, `TooManySubscriptions` → `too_many_subscriptions`, `Forbidden` → `forbidden`,
//! `RateLimited` → `rate_limited`, `Overloaded` → `overloaded`, `Unavailable` → `unavailable`
//! (cluster mode: Redis did not store the publish, §12). A refused WebSocket publish
//! ([`PublishError::client_code`]): `InvalidChannel` → `invalid_channel`, else `invalid_message`.
//!
//! **Refused upgrades** ([`upgrade_status`], which takes [`handshake_status`] for the handshake
//! itself; status and `error.code`):
//!
//! | [`HandshakeError`] | status | code |
//! |---|---|---|
//! | `Method` | 405 | `bad_handshake` |
//! | `HttpVersion`, `MissingHost`, `BadKey` | 400 | `bad_handshake` |
//! | `NotUpgrade`, `UnsupportedVersion` | 426 | `bad_handshake` |
//! | `OriginNotAllowed` | 403 | `forbidden_origin` |
//! | `RateLimited` | 429 (+ `Retry-After`) | `rate_limited` |
//! | [`UpgradeError`]`::Unauthorized` (an [`AuthError`]), `BadApiKey` | 401 (+ `WWW-Authenticate: Bearer`) | `unauthorized` |
//! | [`UpgradeError`]`::Forbidden` (an endpoint's channels) | 403 | `forbidden` |
//!
//! **Refused `/api/*` requests** ([`ApiError::status_and_code`], [`ApiError::extra_headers`]):
//!
//! | [`ApiError`] | status | code |
//! |---|---|---|
//! | `Unauthorized` | 401 | `unauthorized` |
//! | `NotFound` | 404 | `not_found` |
//! | `MethodNotAllowed` | 405 | `method_not_allowed` |
//! | `BodyTimeout` | 408 | `request_timeout` |
//! | `TooLarge` | 413 | `payload_too_large` |
//! | `Body` | 400 | `bad_request` |
//! | `Publish(Malformed)` | 400 | `malformed_json` |
//! | `Publish(Invalid)`, `Publish(InvalidChannel)` | 422 | `validation_failed` |
//! | `NotImplemented` | 501 | `not_implemented` |
//! | `Overloaded` | 503 (+ `Retry-After`) | `overloaded` |
//! | `ShuttingDown` | 503 | `shutting_down` |
//! | `Unavailable` (cluster mode: Redis unreachable, §12) | 503 | `unavailable` |

use std::fmt;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::StatusCode;
use serde::Serialize;

use crate::codec::CodecError;
use crate::handshake::HandshakeError;

// ---------------------------------------------------------------------------------------------
// WebSocket close codes (§11)
// ---------------------------------------------------------------------------------------------

/// Why the server closes a WebSocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Reply to a client close: its own (valid) code echoed, 1000 when it sent none.
    Echo(u16),
    /// SIGTERM/SIGINT drain.
    ShuttingDown,
    /// A frame broke RFC 6455 §5.
    Protocol,
    /// Text or close reason that is not UTF-8.
    InvalidUtf8,
    /// Message larger than `--max-message-size`.
    TooBig,
    /// No frame for `--heartbeat-timeout`.
    HeartbeatTimeout,
    /// Unsent bytes exceeded `--send-queue-bytes`.
    SlowConsumer,
    /// The server lost part of a channel's stream and cannot fill the gap ([cluster], §12).
    InsufficientState,
    /// Messages refused for the inbound rate in 10 consecutive seconds ([auth], §9).
    MessageRate,
    /// The connection's token expired without a `refresh` ([auth], §9).
    TokenExpired,
}

impl CloseReason {
    /// The close code on the wire.
    pub fn code(self) -> u16 {
        self.row().0
    }

    /// The close reason text sent with the code.
    pub fn text(self) -> &'static str {
        self.row().1
    }

    /// The row of the close table: (code, text).
    fn row(self) -> (u16, &'static str) {
        match self {
            CloseReason::Echo(code) => (code, ""),
            CloseReason::ShuttingDown => (1001, "server shutting down"),
            CloseReason::Protocol => (1002, "protocol error"),
            CloseReason::InvalidUtf8 => (1007, "invalid utf-8"),
            CloseReason::TooBig => (1009, "message too big"),
            CloseReason::HeartbeatTimeout => (4001, "heartbeat timeout"),
            CloseReason::SlowConsumer => (4008, "slow consumer"),
            CloseReason::InsufficientState => (4010, "insufficient state"),
            CloseReason::MessageRate => (4029, "message rate exceeded"),
            CloseReason::TokenExpired => (4401, "token expired"),
        }
    }
}

impl From<&CodecError> for CloseReason {
    fn from(e: &CodecError) -> Self {
        match e {
            CodecError::Protocol(_) => CloseReason::Protocol,
            CodecError::InvalidUtf8 => CloseReason::InvalidUtf8,
            CodecError::TooBig => CloseReason::TooBig,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client error codes (§4)
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
    /// The server cannot take a publish at all right now; nothing of it is delivered (§7).
    Overloaded,
    /// Cluster mode: Redis did not answer; the publish may be retried with its `message_id`.
    Unavailable,
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
            ErrorCode::Unavailable => "unavailable",
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

// ---------------------------------------------------------------------------------------------
// Refused publishes (§7): HTTP and WebSocket
// ---------------------------------------------------------------------------------------------

/// Why a publish/broadcast/send body was refused (made by `crate::protocol`, re-exported there).
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
    /// HTTP status and `error.code`: 400 `malformed_json`, else 422 `validation_failed`.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            PublishError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            PublishError::Invalid(_) | PublishError::InvalidChannel(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
            }
        }
    }

    /// The client error code of a refused WebSocket publish.
    pub fn client_code(&self) -> ErrorCode {
        match self {
            PublishError::InvalidChannel(_) => ErrorCode::InvalidChannel,
            PublishError::Malformed(_) | PublishError::Invalid(_) => ErrorCode::InvalidMessage,
        }
    }

    /// The HTTP status for this refusal: 400 for malformed JSON, 422 otherwise.
    pub fn http_status(&self) -> u16 {
        self.status_and_code().0.as_u16()
    }

    /// The `error.code` of the HTTP answer: `malformed_json` or `validation_failed`.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP: refused upgrades (§2, §9) and `/api/*` (§7, §8)
// ---------------------------------------------------------------------------------------------

/// HTTP status and `error.code` answering a refused upgrade.
pub fn handshake_status(e: &HandshakeError) -> (StatusCode, &'static str) {
    match e {
        HandshakeError::Method => (StatusCode::METHOD_NOT_ALLOWED, "bad_handshake"),
        HandshakeError::HttpVersion | HandshakeError::MissingHost | HandshakeError::BadKey => {
            (StatusCode::BAD_REQUEST, "bad_handshake")
        }
        HandshakeError::NotUpgrade | HandshakeError::UnsupportedVersion => {
            (StatusCode::UPGRADE_REQUIRED, "bad_handshake")
        }
        HandshakeError::OriginNotAllowed => (StatusCode::FORBIDDEN, "forbidden_origin"),
        HandshakeError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
    }
}

// ---------------------------------------------------------------------------------------------
// Refused tokens and upgrades (§2, §9)
// ---------------------------------------------------------------------------------------------

/// Why a token was refused (HTTP 401 at the upgrade, `forbidden` for a `refresh`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token required (--require-auth)")]
    Required,
    /// Longer than `auth::MAX_TOKEN_LEN` (8 KiB), refused before any decoding.
    #[error("token longer than {0} bytes")]
    TooLarge(usize),
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("alg \"none\" is never accepted")]
    AlgNone,
    #[error("algorithm {0:?} is not allowed for the configured keys")]
    AlgorithmNotAllowed(jsonwebtoken::Algorithm),
    #[error("unknown kid")]
    UnknownKid,
    #[error("token has no kid (needed with --jwt-jwks-file)")]
    MissingKid,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("wrong audience")]
    Audience,
    #[error("wrong issuer")]
    Issuer,
    #[error("missing claim {0:?}")]
    MissingClaim(String),
    #[error("bad claim: {0}")]
    BadClaim(String),
}

/// Why an upgrade request is refused: the handshake itself, or who is asking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// A missing (with `--require-auth`) or invalid token.
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    /// An `api_key` / `X-API-Key` that is not one of the configured keys.
    #[error("invalid API key")]
    BadApiKey,
    /// An endpoint's channels are not open to this connection.
    #[error("{0}")]
    Forbidden(String),
}

/// HTTP status and `error.code` of a refused upgrade.
pub fn upgrade_status(e: &UpgradeError) -> (StatusCode, &'static str) {
    match e {
        UpgradeError::Handshake(h) => handshake_status(h),
        UpgradeError::Unauthorized(_) | UpgradeError::BadApiKey => {
            (StatusCode::UNAUTHORIZED, "unauthorized")
        }
        UpgradeError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
    }
}

/// Why an `/api/*` request is refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong API key")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("body larger than 1 MiB")]
    TooLarge,
    #[error("cannot read body: {0}")]
    Body(String),
    /// The body did not arrive within `--handshake-timeout` of the head (§7).
    #[error("request body not received in time")]
    BodyTimeout,
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// A feature of a section not built yet; the message names it.
    #[error("{0}")]
    NotImplemented(&'static str),
    /// The server cannot take the publish now; the answer carries `Retry-After` (§7).
    #[error("server overloaded; retry in {retry_after_secs} s")]
    Overloaded { retry_after_secs: u64 },
    #[error("server is shutting down")]
    ShuttingDown,
    /// Cluster mode: Redis is unreachable (PROTOCOL.md §12).
    #[error("the Redis engine is unavailable")]
    Unavailable,
}

impl ApiError {
    /// HTTP status and the `error.code` of the JSON body.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Body(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Publish(e) => e.status_and_code(),
            ApiError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
            ApiError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }

    /// Headers the answer must carry besides the JSON body: `Retry-After` for `Overloaded`.
    pub fn extra_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        match self {
            ApiError::Overloaded { retry_after_secs } => {
                vec![(RETRY_AFTER, HeaderValue::from(*retry_after_secs))]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails to compile when a variant is added, until its row is added to the tests below.
    fn _every_variant_has_a_row(c: CloseReason, e: ErrorCode, h: &HandshakeError, a: &ApiError) {
        match c {
            CloseReason::Echo(_)
            | CloseReason::ShuttingDown
            | CloseReason::Protocol
            | CloseReason::InvalidUtf8
            | CloseReason::TooBig
            | CloseReason::HeartbeatTimeout
            | CloseReason::SlowConsumer
            | CloseReason::InsufficientState
            | CloseReason::MessageRate
            | CloseReason::TokenExpired => {}
        }
        match e {
            ErrorCode::InvalidMessage
            | ErrorCode::UnknownEvent
            | ErrorCode::InvalidChannel
            | ErrorCode::TooManySubscriptions
            | ErrorCode::Forbidden
            | ErrorCode::RateLimited
            | ErrorCode::Overloaded
            | ErrorCode::Unavailable => {}
        }
        match h {
            HandshakeError::Method
            | HandshakeError::HttpVersion
            | HandshakeError::MissingHost
            | HandshakeError::NotUpgrade
            | HandshakeError::UnsupportedVersion
            | HandshakeError::BadKey
            | HandshakeError::OriginNotAllowed
            | HandshakeError::RateLimited { .. } => {}
        }
        match a {
            ApiError::Unauthorized
            | ApiError::NotFound
            | ApiError::MethodNotAllowed
            | ApiError::TooLarge
            | ApiError::Body(_)
            | ApiError::BodyTimeout
            | ApiError::Publish(_)
            | ApiError::NotImplemented(_)
            | ApiError::Overloaded { .. }
            | ApiError::ShuttingDown
            | ApiError::Unavailable => {}
        }
    }

    /// The whole table against PROTOCOL.md: §11 close codes, §4 client codes, §2/§7/§9 statuses.
    #[test]
    fn table_matches_protocol() {
        // §11, every row.
        let close = [
            (CloseReason::Echo(1000), 1000),
            (CloseReason::ShuttingDown, 1001),
            (CloseReason::Protocol, 1002),
            (CloseReason::InvalidUtf8, 1007),
            (CloseReason::TooBig, 1009),
            (CloseReason::HeartbeatTimeout, 4001),
            (CloseReason::SlowConsumer, 4008),
            (CloseReason::InsufficientState, 4010),
            (CloseReason::MessageRate, 4029),
            (CloseReason::TokenExpired, 4401),
        ];
        for (reason, code) in close {
            assert_eq!(reason.code(), code, "{reason:?}");
            // A close reason fits a control frame (RFC 6455 §5.5: 125 bytes with the code).
            assert!(reason.text().len() <= 123, "{reason:?}");
            assert_eq!(
                reason.text().is_empty(),
                matches!(reason, CloseReason::Echo(_))
            );
        }
        assert_eq!(CloseReason::Echo(4000).code(), 4000);
        assert_eq!(CloseReason::from(&CodecError::Protocol("x")).code(), 1002);
        assert_eq!(CloseReason::from(&CodecError::InvalidUtf8).code(), 1007);
        assert_eq!(CloseReason::from(&CodecError::TooBig).code(), 1009);

        // §4: `invalid_message|unknown_event|invalid_channel|too_many_subscriptions|forbidden|rate_limited|overloaded`.
        let client = [
            (ErrorCode::InvalidMessage, "invalid_message"),
            (ErrorCode::UnknownEvent, "unknown_event"),
            (ErrorCode::InvalidChannel, "invalid_channel"),
            (ErrorCode::TooManySubscriptions, "too_many_subscriptions"),
            (ErrorCode::Forbidden, "forbidden"),
            (ErrorCode::RateLimited, "rate_limited"),
            (ErrorCode::Overloaded, "overloaded"),
            // §12.
            (ErrorCode::Unavailable, "unavailable"),
        ];
        for (code, s) in client {
            assert_eq!(code.as_str(), s);
            assert_eq!(code.to_string(), s);
            assert_eq!(serde_json::to_value(code).unwrap(), s);
        }

        // §2 (426, 400, 403), §9 (429 + Retry-After).
        let handshake = [
            (HandshakeError::Method, 405, "bad_handshake"),
            (HandshakeError::HttpVersion, 400, "bad_handshake"),
            (HandshakeError::MissingHost, 400, "bad_handshake"),
            (HandshakeError::NotUpgrade, 426, "bad_handshake"),
            (HandshakeError::UnsupportedVersion, 426, "bad_handshake"),
            (HandshakeError::BadKey, 400, "bad_handshake"),
            (HandshakeError::OriginNotAllowed, 403, "forbidden_origin"),
            (
                HandshakeError::RateLimited {
                    retry_after_secs: 1,
                },
                429,
                "rate_limited",
            ),
        ];
        for (e, status, code) in handshake {
            assert_eq!(handshake_status(&e), (status_of(status), code), "{e:?}");
            let up = UpgradeError::from(e);
            assert_eq!(upgrade_status(&up), (status_of(status), code), "{up:?}");
        }
        // §9: 401 for tokens and API keys, 403 for an endpoint's channels.
        let upgrade = [
            (UpgradeError::from(AuthError::Expired), 401, "unauthorized"),
            (UpgradeError::from(AuthError::Required), 401, "unauthorized"),
            (UpgradeError::BadApiKey, 401, "unauthorized"),
            (UpgradeError::Forbidden("odds".into()), 403, "forbidden"),
        ];
        for (e, status, code) in upgrade {
            assert_eq!(upgrade_status(&e), (status_of(status), code), "{e:?}");
        }

        // §7 (401, 413, 400, 422 validation_failed, 503 overloaded + Retry-After, 408,
        // shutting_down), §2 (404), §1 (sections not built answer a clear error).
        let api = [
            (ApiError::Unauthorized, 401, "unauthorized"),
            (ApiError::NotFound, 404, "not_found"),
            (ApiError::MethodNotAllowed, 405, "method_not_allowed"),
            (ApiError::TooLarge, 413, "payload_too_large"),
            (ApiError::Body("x".into()), 400, "bad_request"),
            (ApiError::BodyTimeout, 408, "request_timeout"),
            (
                ApiError::Publish(PublishError::Malformed("x".into())),
                400,
                "malformed_json",
            ),
            (
                ApiError::Publish(PublishError::Invalid("x".into())),
                422,
                "validation_failed",
            ),
            (
                ApiError::Publish(PublishError::InvalidChannel("x".into())),
                422,
                "validation_failed",
            ),
            (ApiError::NotImplemented("x"), 501, "not_implemented"),
            (
                ApiError::Overloaded {
                    retry_after_secs: 2,
                },
                503,
                "overloaded",
            ),
            (ApiError::ShuttingDown, 503, "shutting_down"),
            (ApiError::Unavailable, 503, "unavailable"),
        ];
        for (e, status, code) in api {
            assert_eq!(e.status_and_code(), (status_of(status), code), "{e:?}");
            let headers = e.extra_headers();
            if let ApiError::Overloaded { retry_after_secs } = e {
                assert_eq!(
                    headers,
                    [(RETRY_AFTER, HeaderValue::from(retry_after_secs))]
                );
            } else {
                assert!(headers.is_empty(), "{e:?}");
            }
            if let ApiError::Publish(p) = &e {
                assert_eq!((p.http_status(), p.code()), (status, code));
            }
        }

        // A refused WebSocket publish answers with the §4 code of its kind.
        let ws_publish = [
            (
                PublishError::Malformed("x".into()),
                ErrorCode::InvalidMessage,
            ),
            (PublishError::Invalid("x".into()), ErrorCode::InvalidMessage),
            (
                PublishError::InvalidChannel("x".into()),
                ErrorCode::InvalidChannel,
            ),
        ];
        for (e, code) in ws_publish {
            assert_eq!(e.client_code(), code, "{e:?}");
        }
    }

    fn status_of(n: u16) -> StatusCode {
        StatusCode::from_u16(n).unwrap()
    }
}
