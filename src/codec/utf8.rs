//! Incremental UTF-8 validation across message fragments (RFC 6455 §8.1: "When an endpoint is to
//! interpret a byte stream as UTF-8 but finds that the byte stream is not, in fact, a valid UTF-8
//! stream, that endpoint MUST _Fail the WebSocket Connection_").
//!
//! Invariant: after every successful [`Utf8Validator::feed`], the bytes fed so far are valid UTF-8
//! followed by at most 3 `pending` bytes that are a proper prefix of one valid encoded code point.
//! The validation itself is `std::str::from_utf8`, which rejects an overlong form, a surrogate
//! or a value above U+10FFFF at the first byte that rules it out (`Utf8Error::error_len` is
//! `Some`), while `error_len() == None` means "valid so far, input ended mid code point".

/// Validates a UTF-8 byte stream delivered in arbitrary chunks, failing at the first chunk that
/// makes it invalid rather than at the end.
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    /// Bytes of an incomplete code point carried over from the previous chunk.
    pending: [u8; 4],
    /// How many of `pending` are in use (0..=3).
    pending_len: usize,
    /// Sticky failure: once the stream is invalid it stays invalid until `reset`.
    failed: bool,
}

/// Encoded length of the code point a lead byte starts (0 for bytes that cannot start one).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 0,
    }
}

impl Utf8Validator {
    /// A validator at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next chunk. `Err(())` as soon as the bytes so far cannot be the prefix of valid
    /// UTF-8; after that every call fails until [`Utf8Validator::reset`].
    #[allow(clippy::result_unit_err)] // API fixed by callers; they map Err to CodecError::InvalidUtf8.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ()> {
        if self.failed {
            return Err(());
        }
        let result = self.feed_inner(chunk);
        self.failed = result.is_err();
        result
    }

    fn feed_inner(&mut self, chunk: &[u8]) -> Result<(), ()> {
        let mut rest = chunk;
        if self.pending_len > 0 {
            // Complete the carried code point with as many bytes as it still needs.
            let need = sequence_len(self.pending[0]).saturating_sub(self.pending_len);
            let take = need.min(rest.len());
            let (head, tail) = rest.split_at(take);
            let end = self.pending_len + take;
            let Some(slot) = self.pending.get_mut(self.pending_len..end) else {
                return Err(());
            };
            slot.copy_from_slice(head);
            self.pending_len = end;
            rest = tail;
            let candidate = self.pending.get(..end).ok_or(())?;
            match std::str::from_utf8(candidate) {
                Ok(_) => self.pending_len = 0,
                // Still a valid prefix, and the chunk is exhausted.
                Err(e) if e.error_len().is_none() && rest.is_empty() => return Ok(()),
                Err(_) => return Err(()),
            }
        }
        match std::str::from_utf8(rest) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = rest.get(e.valid_up_to()..).ok_or(())?;
                let slot = self.pending.get_mut(..tail.len()).ok_or(())?;
                slot.copy_from_slice(tail);
                self.pending_len = tail.len();
                Ok(())
            }
            Err(_) => Err(()),
        }
    }

    /// Ends the stream: `Err(())` if it failed earlier or stops in the middle of a code point.
    #[allow(clippy::result_unit_err)] // API fixed by callers; they map Err to CodecError::InvalidUtf8.
    pub fn finish(&mut self) -> Result<(), ()> {
        if self.failed || self.pending_len > 0 {
            self.failed = true;
            return Err(());
        }
        Ok(())
    }

    /// Forgets all state, ready for a new stream.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid and invalid inputs chosen to hit every branch of UTF-8 decoding.
    fn samples() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"plain ascii".to_vec(),
            "héllo wörld".as_bytes().to_vec(),
            "€ and 中文 and 𝄞 and 😀!".as_bytes().to_vec(),
            "\u{7F}\u{80}\u{7FF}\u{800}\u{FFFF}\u{10000}\u{10FFFF}"
                .as_bytes()
                .to_vec(),
            "\u{D7FF}\u{E000}".as_bytes().to_vec(),
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5".to_vec(),
        ];
        let invalid: [&[u8]; 19] = [
            b"\xff",
            b"ab\xfe",
            b"\x80",
            b"a\xbfb",
            b"\xc0\x80",         // overlong NUL
            b"\xc1\xbf",         // overlong
            b"\xe0\x80\x80",     // overlong 3-byte
            b"\xe0\x9f\xbf",     // overlong 3-byte, max
            b"\xf0\x80\x80\x80", // overlong 4-byte
            b"\xf0\x8f\xbf\xbf", // overlong 4-byte, max
            b"\xed\xa0\x80",     // U+D800
            b"\xed\xbf\xbf",     // U+DFFF
            b"\xf4\x90\x80\x80", // U+110000
            b"\xf5\x80\x80\x80", // lead byte beyond range
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            b"\xe2\x82",             // truncated at end
            b"ok\xf0\x9f\x98",       // truncated 4-byte at end
            b"\xe2\x28\xa1",         // bad continuation
            b"\xf0\x9f\x98\x80\x80", // stray continuation after a complete char
        ];
        v.extend(invalid.iter().map(|s| s.to_vec()));
        v
    }

    fn validate_in(parts: &[&[u8]]) -> Result<(), ()> {
        let mut v = Utf8Validator::new();
        for p in parts {
            v.feed(p)?;
        }
        v.finish()
    }

    #[test]
    fn agrees_with_std_for_every_split() {
        for s in samples() {
            let expected = std::str::from_utf8(&s).is_ok();
            // One split point.
            for i in 0..=s.len() {
                let (a, b) = s.split_at(i);
                assert_eq!(validate_in(&[a, b]).is_ok(), expected, "{s:x?} at {i}");
            }
            // Two split points, including empty middle parts.
            for i in 0..=s.len() {
                for j in i..=s.len() {
                    let parts = [&s[..i], &s[i..j], &s[j..]];
                    assert_eq!(validate_in(&parts).is_ok(), expected, "{s:x?} at {i},{j}");
                }
            }
            // Byte by byte.
            let bytes: Vec<&[u8]> = s.chunks(1).collect();
            assert_eq!(validate_in(&bytes).is_ok(), expected, "{s:x?} bytewise");
        }
    }

    /// Whether `bytes` can still be extended into valid UTF-8, according to std.
    fn is_valid_prefix(bytes: &[u8]) -> bool {
        match std::str::from_utf8(bytes) {
            Ok(_) => true,
            Err(e) => e.error_len().is_none(),
        }
    }

    #[test]
    fn fails_at_first_bad_byte_not_at_finish() {
        for s in samples() {
            // The first prefix that std says can never become valid.
            let Some(fail_at) = (1..=s.len()).find(|&n| !is_valid_prefix(&s[..n])) else {
                continue; // valid, or only truncated at the end: checked by the split test
            };
            let mut v = Utf8Validator::new();
            for (i, b) in s.iter().enumerate() {
                let r = v.feed(std::slice::from_ref(b));
                if i + 1 < fail_at {
                    assert!(r.is_ok(), "{s:x?}: early failure at byte {i}");
                } else {
                    assert!(r.is_err(), "{s:x?}: no failure at byte {i}");
                    break;
                }
            }
        }
    }

    #[test]
    fn surrogate_fails_at_second_byte() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xed"), Ok(()));
        assert_eq!(v.feed(b"\xa0"), Err(()));
    }

    #[test]
    fn truncated_sequence_fails_only_at_finish() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"a\xf0\x9f"), Ok(()));
        assert_eq!(v.feed(b"\x98"), Ok(()));
        assert_eq!(v.finish(), Err(()));
    }

    #[test]
    fn failure_is_sticky_until_reset() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xff"), Err(()));
        assert_eq!(v.feed(b"a"), Err(()));
        assert_eq!(v.finish(), Err(()));
        v.reset();
        assert_eq!(v.feed(b"a"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn reset_drops_pending_bytes() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xe2\x82"), Ok(()));
        v.reset();
        assert_eq!(v.feed(b"x"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }
}
