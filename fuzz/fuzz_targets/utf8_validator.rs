//! Invariant: `codec::Utf8Validator` fed arbitrary bytes in arbitrary chunks agrees with
//! `std::str::from_utf8` on the joined bytes (`feed`s then `finish` succeed exactly when the
//! whole is valid), and it fails at exactly the chunk holding the first byte after which the
//! stream can no longer be valid UTF-8: not earlier (every earlier prefix is still a valid
//! prefix) and not later. Failure is sticky until `reset`, and a reset validator behaves like a
//! new one.
//!
//! Input layout: byte 0 = number of chunk lengths `n` (0..=31), then `n` chunk lengths, then the
//! bytes; whatever the lengths leave over is the last chunk.

#![no_main]

use huddle::codec::Utf8Validator;
use libfuzzer_sys::fuzz_target;

/// True when `bytes` is valid UTF-8 or a valid prefix of it (ends mid code point).
fn is_valid_prefix(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

fuzz_target!(|data: &[u8]| {
    let [n, rest @ ..] = data else { return };
    let n = usize::from(n & 31).min(rest.len());
    let (lens, bytes) = rest.split_at(n);
    let mut chunks: Vec<&[u8]> = Vec::with_capacity(n + 1);
    let mut tail = bytes;
    for &l in lens {
        let (head, t) = tail.split_at(usize::from(l).min(tail.len()));
        chunks.push(head);
        tail = t;
    }
    chunks.push(tail);

    let std_result = std::str::from_utf8(bytes);
    // Index of the first byte that makes the stream impossible to complete, if any. std reports
    // the bad sequence as [valid_up_to, valid_up_to + error_len); the byte that rules it out is
    // the first one whose prefix is no longer a valid prefix (at most 4 bytes further).
    let bad_byte = match std_result {
        Err(e) if e.error_len().is_some() => {
            let v = e.valid_up_to();
            let n = (v + 1..=bytes.len().min(v + 4))
                .find(|&n| !is_valid_prefix(&bytes[..n]))
                .expect("error_len is Some: some prefix within 4 bytes is invalid");
            Some(n - 1)
        }
        _ => None,
    };

    let mut v = Utf8Validator::new();
    let mut offset = 0;
    let mut failed = false;
    for (i, chunk) in chunks.iter().enumerate() {
        let end = offset + chunk.len();
        let r = v.feed(chunk);
        let should_fail = bad_byte.is_some_and(|b| b < end);
        assert_eq!(
            r.is_err(),
            should_fail,
            "chunk {i} ({offset}..{end}) of {chunks:x?}: feed {r:?}, first bad byte {bad_byte:?}"
        );
        if failed {
            assert!(r.is_err(), "failure is not sticky");
        }
        failed |= r.is_err();
        offset = end;
    }
    let fin = v.finish();
    assert_eq!(
        fin.is_ok(),
        std_result.is_ok(),
        "finish {fin:?} vs std {std_result:?} for {chunks:x?}"
    );
    assert!(
        v.finish().is_err() || std_result.is_ok(),
        "finish is not sticky"
    );

    // After reset, the joined bytes in one chunk give the same verdict.
    v.reset();
    let whole = v.feed(bytes).and_then(|()| v.finish());
    assert_eq!(
        whole.is_ok(),
        std_result.is_ok(),
        "single chunk after reset"
    );
});
