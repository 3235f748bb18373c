//! Close codes and close frame bodies (RFC 6455 §5.5.1, §7.4).
//!
//! A close body is either empty or a 2-byte big-endian status code followed by a UTF-8 reason.
//! Only codes that an endpoint may actually put on the wire are accepted: 1005, 1006 and 1015 are
//! reserved for reporting ("MUST NOT be set as a status code in a Close control frame by an
//! endpoint", §7.4.1), and the unassigned ranges are rejected too.

use super::decoder::CloseFrame;
use super::error::CodecError;

/// Whether `code` may appear in a close frame on the wire: 1000–1003, 1007–1014 (IANA-registered)
/// and 3000–4999 (libraries and applications). Everything else is a protocol error (close 1002).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Parses an (already unmasked) close frame body.
///
/// Empty → `None`; 1 byte → protocol error ("If there is a body, the first two bytes of the body
/// MUST be a 2-byte unsigned integer", §5.5.1); invalid code → protocol error; reason that is not
/// UTF-8 → [`CodecError::InvalidUtf8`].
pub(crate) fn parse_close_body(body: &[u8]) -> Result<Option<CloseFrame>, CodecError> {
    match body {
        [] => Ok(None),
        [_] => Err(CodecError::Protocol("close frame body of 1 byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(CodecError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| CodecError::InvalidUtf8)?;
            Ok(Some(CloseFrame {
                code,
                reason: reason.to_owned(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_code_table() {
        let invalid = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000];
        let valid = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4001, 4008, 4999,
        ];
        for code in invalid {
            assert!(!is_valid_close_code(code), "{code} must be invalid");
        }
        for code in valid {
            assert!(is_valid_close_code(code), "{code} must be valid");
        }
    }

    #[test]
    fn body_empty_is_none() {
        assert_eq!(parse_close_body(&[]), Ok(None));
    }

    #[test]
    fn body_one_byte_is_protocol_error() {
        assert!(matches!(
            parse_close_body(&[0x03]),
            Err(CodecError::Protocol(_))
        ));
    }

    #[test]
    fn body_code_only_and_with_reason() {
        assert_eq!(
            parse_close_body(&[0x03, 0xE8]),
            Ok(Some(CloseFrame {
                code: 1000,
                reason: String::new()
            }))
        );
        assert_eq!(
            parse_close_body(b"\x0f\xa1bye \xc3\xa9"),
            Ok(Some(CloseFrame {
                code: 4001,
                reason: "bye é".to_owned()
            }))
        );
    }

    #[test]
    fn body_invalid_code_is_protocol_error() {
        for code in [1005u16, 1006, 999, 5000] {
            let body = code.to_be_bytes();
            assert!(matches!(
                parse_close_body(&body),
                Err(CodecError::Protocol(_))
            ));
        }
    }

    #[test]
    fn body_invalid_reason_is_invalid_utf8() {
        assert_eq!(
            parse_close_body(b"\x03\xe8ok\xff"),
            Err(CodecError::InvalidUtf8)
        );
        // A reason cut in the middle of a code point is invalid too.
        assert_eq!(
            parse_close_body(b"\x03\xe8\xc3"),
            Err(CodecError::InvalidUtf8)
        );
    }
}
