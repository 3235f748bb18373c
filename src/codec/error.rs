//! Decoder errors and the close code each one maps to.
//!
//! Every way a client's bytes can be rejected is one of three variants, and each variant has
//! exactly one close code (RFC 6455 §7.4.1). This is the only place that mapping lives.

/// Why the decoder rejected the client's bytes; the connection must be closed with
/// [`CodecError::close_code`].
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// A frame breaks RFC 6455 framing rules (close 1002). The text says which rule.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A text message or a close reason is not valid UTF-8 (close 1007, RFC 6455 §8.1).
    #[error("invalid UTF-8 in text message or close reason")]
    InvalidUtf8,
    /// A message is larger than the configured limit (close 1009).
    #[error("message too big")]
    TooBig,
}

impl CodecError {
    /// The close code to send for this error: 1002 protocol error, 1007 invalid payload data,
    /// 1009 message too big (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> u16 {
        match self {
            CodecError::Protocol(_) => 1002,
            CodecError::InvalidUtf8 => 1007,
            CodecError::TooBig => 1009,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes() {
        assert_eq!(CodecError::Protocol("x").close_code(), 1002);
        assert_eq!(CodecError::InvalidUtf8.close_code(), 1007);
        assert_eq!(CodecError::TooBig.close_code(), 1009);
    }

    #[test]
    fn display() {
        assert_eq!(
            CodecError::Protocol("unmasked frame").to_string(),
            "protocol error: unmasked frame"
        );
        assert_eq!(CodecError::TooBig.to_string(), "message too big");
    }
}
