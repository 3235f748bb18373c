//! Invariant: `glob::Pattern::matches` (split at `*`, prefix, leftmost middles, suffix) gives
//! the same answer as `glob::matches_reference`, the obvious O(pattern × text) dynamic program,
//! for any pattern and text (each cut to 256 chars so the reference stays cheap), over a small
//! alphabet so stars, repeats and overlaps are common. A compiled pattern answers the same as
//! `glob::matches`. Long pathological inputs (`*a*a*…` against `aaa…`, up to 64 KiB) must finish
//! well inside libFuzzer's 1 s timeout: matching is linear in the text.
//!
//! Input: structured (`arbitrary`): `Input { pattern, text, long }`; bytes are mapped onto
//! `a b * _ é` (a two-byte char, so slicing stays on char boundaries).

#![no_main]

use arbitrary::Arbitrary;
use huddle::glob::{matches, matches_reference, Pattern};
use libfuzzer_sys::fuzz_target;

const ALPHABET: [char; 5] = ['a', 'b', '*', '_', 'é'];

#[derive(Arbitrary, Debug)]
struct Input {
    pattern: Vec<u8>,
    text: Vec<u8>,
    /// Also run a long pathological case built from the pattern.
    long: Option<u16>,
}

fn chars(bytes: &[u8], stars: bool) -> String {
    bytes
        .iter()
        .take(256)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()])
        .filter(|&c| stars || c != '*')
        .collect()
}

fuzz_target!(|input: Input| {
    let pattern = chars(&input.pattern, true);
    let text = chars(&input.text, false);
    let compiled = Pattern::new(&pattern);
    let got = compiled.matches(&text);
    assert_eq!(
        got,
        matches_reference(&pattern, &text),
        "{pattern:?} vs {text:?}"
    );
    assert_eq!(got, matches(&pattern, &text));
    if let Some(n) = input.long {
        // `*x*x*…*x` + suffix against a long run of one letter: exponential for backtracking.
        let reps = usize::from(n % 128) + 1;
        let long_pattern = "*a".repeat(reps) + &pattern.replace('*', "");
        let long_text = "a".repeat(usize::from(n) % 65_536);
        let _ = Pattern::new(&long_pattern).matches(&long_text);
    }
});
