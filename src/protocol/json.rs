//! JSON input: the nesting-depth check and the simd-json parse every entry point goes through.

use serde_json::Value;

use super::names::MAX_JSON_DEPTH;

/// Longest run of digits simd-json is trusted with: past 19 significant digits (more than a
/// u64 holds) its float parsing depends on where the number sits in the buffer (the
/// `client_json` fuzz target found `44…440.8`, 44 digits, read as 3.6e16 at one offset and
/// 4.4e43 at another). Such documents go to serde_json.
const MAX_TRUSTED_DIGITS: usize = 19;

/// What the linear pre-scan found.
struct Scan {
    /// A number with more digits in a row than [`MAX_TRUSTED_DIGITS`].
    long_number: bool,
}

/// Refuses nesting deeper than [`MAX_JSON_DEPTH`] with a linear scan, before any tree is built,
/// and notes numbers too long for simd-json.
fn check_depth(buf: &[u8]) -> Result<Scan, String> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut digits = 0usize;
    let mut long_number = false;
    for &b in buf {
        if !in_string && b.is_ascii_digit() {
            digits += 1;
            long_number |= digits > MAX_TRUSTED_DIGITS;
            continue;
        }
        digits = 0;
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
    Ok(Scan { long_number })
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
    if check_depth(buf)?.long_number {
        // Rare (a number past u64 precision): correct rather than fast.
        return serde_json::from_slice::<Value>(buf).map_err(|e| e.to_string());
    }
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
    fn numbers_past_u64_precision_read_the_same_wherever_they_sit() {
        // The client_json fuzz target's find: this document parsed as an HTTP publish, and the
        // same bytes wrapped in a WebSocket publish, gave 3.6e16 and 4.4e43 for one number.
        let body = r#"{"user_@d": "u1", "event_type": "notifiatcion", "data": {"m_ss_spreadfidence_level": 44444444444444444444444444444444444444444440.8, "moden_version": "v2.1", "updatedired": false}, "channel": "baCCCCCCCnkrolj"}"#;
        let want = 44444444444444444444444444444444444444444440.8_f64;
        let http = PublishRequest::parse(&mut body.as_bytes().to_vec()).unwrap();
        let got = http.data["m_ss_spreadfidence_level"].as_f64().unwrap();
        assert!((got - want).abs() <= want * 1e-15, "{got}");
        for pad in 0..64 {
            let mut wrapped = format!(
                r#"{}{{"event_type":"publish","data":{body}}}"#,
                " ".repeat(pad)
            )
            .into_bytes();
            let m = parse_client_message(&mut wrapped, 4).unwrap();
            let crate::protocol::ClientRequest::Publish(p) = m.request else {
                panic!("not a publish")
            };
            assert_eq!(p, http, "padding {pad}");
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
}
