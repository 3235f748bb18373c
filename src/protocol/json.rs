//! JSON input: the nesting-depth check and the simd-json parse every entry point goes through.

use serde_json::Value;

use super::names::MAX_JSON_DEPTH;

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
pub(super) fn parse_json(buf: &mut [u8]) -> Result<Value, String> {
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

#[cfg(test)]
mod tests {
    use crate::protocol::{parse_client_message, ErrorCode, PublishError, PublishRequest};

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
}
