//! The one table from errors to wire codes: WebSocket close codes (PROTOCOL.md §11) and HTTP
//! statuses (§2, §7, §9). Every layer has its own error enum; only this file knows the numbers.

use http::StatusCode;

use crate::codec::CodecError;
use crate::handshake::HandshakeError;
use crate::protocol::PublishError;

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
}

impl CloseReason {
    /// The close code on the wire.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Echo(code) => code,
            CloseReason::ShuttingDown => 1001,
            CloseReason::Protocol => 1002,
            CloseReason::InvalidUtf8 => 1007,
            CloseReason::TooBig => 1009,
            CloseReason::HeartbeatTimeout => 4001,
            CloseReason::SlowConsumer => 4008,
        }
    }

    /// The close reason text sent with the code.
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::Echo(_) => "",
            CloseReason::ShuttingDown => "server shutting down",
            CloseReason::Protocol => "protocol error",
            CloseReason::InvalidUtf8 => "invalid utf-8",
            CloseReason::TooBig => "message too big",
            CloseReason::HeartbeatTimeout => "heartbeat timeout",
            CloseReason::SlowConsumer => "slow consumer",
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

/// HTTP status answering a refused upgrade.
pub fn handshake_status(e: &HandshakeError) -> StatusCode {
    match e {
        HandshakeError::Method => StatusCode::METHOD_NOT_ALLOWED,
        HandshakeError::HttpVersion | HandshakeError::MissingHost | HandshakeError::BadKey => {
            StatusCode::BAD_REQUEST
        }
        HandshakeError::NotUpgrade | HandshakeError::UnsupportedVersion => {
            StatusCode::UPGRADE_REQUIRED
        }
        HandshakeError::OriginNotAllowed => StatusCode::FORBIDDEN,
        HandshakeError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
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
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("server overloaded: too many messages in flight, retry shortly")]
    Overloaded { retry_after_secs: u64 },
    #[error("request body not received within --handshake-timeout")]
    BodyTimeout,
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
            ApiError::Publish(PublishError::Malformed(_)) => {
                (StatusCode::BAD_REQUEST, "malformed_json")
            }
            ApiError::Publish(PublishError::Invalid(_) | PublishError::InvalidChannel(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
            }
            ApiError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ApiError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_match_protocol_table() {
        let table = [
            (CloseReason::Echo(1000), 1000),
            (CloseReason::ShuttingDown, 1001),
            (CloseReason::Protocol, 1002),
            (CloseReason::InvalidUtf8, 1007),
            (CloseReason::TooBig, 1009),
            (CloseReason::HeartbeatTimeout, 4001),
            (CloseReason::SlowConsumer, 4008),
        ];
        for (reason, code) in table {
            assert_eq!(reason.code(), code, "{reason:?}");
        }
        assert_eq!(CloseReason::from(&CodecError::Protocol("x")).code(), 1002);
        assert_eq!(CloseReason::from(&CodecError::InvalidUtf8).code(), 1007);
        assert_eq!(CloseReason::from(&CodecError::TooBig).code(), 1009);
    }

    #[test]
    fn handshake_statuses() {
        assert_eq!(
            handshake_status(&HandshakeError::UnsupportedVersion),
            StatusCode::UPGRADE_REQUIRED
        );
        assert_eq!(
            handshake_status(&HandshakeError::BadKey),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            handshake_status(&HandshakeError::RateLimited {
                retry_after_secs: 1
            }),
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[test]
    fn api_statuses() {
        assert_eq!(
            ApiError::Publish(PublishError::Invalid("x".into()))
                .status_and_code()
                .0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            ApiError::Publish(PublishError::Malformed("x".into()))
                .status_and_code()
                .0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ApiError::TooLarge.status_and_code().0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
