//! Channel patterns (PROTOCOL.md §9: `channels` and `publish` claims, `--public-channels`): `*`
//! matches any run of characters, including none; every other character matches itself.
//!
//! Matching is linear in the length of the text, whatever the pattern: the pattern is split at
//! its stars into literal segments; the first must be a prefix, the last a suffix, and each one
//! between is found leftmost after the previous (`str::find` is Two-Way, linear). Taking the
//! leftmost place for every middle segment leaves the most room for the rest, so if any match
//! exists this one does. No backtracking: `*a*a*a*…b` against `aaaa…` costs one pass.

/// A compiled pattern, shareable between connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    /// The pattern split at `*`; one element when it has no star.
    segments: Vec<Box<str>>,
}

impl Pattern {
    pub fn new(pattern: &str) -> Self {
        Pattern {
            segments: pattern.split('*').map(Box::from).collect(),
        }
    }

    /// True if `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        let Some((first, rest)) = self.segments.split_first() else {
            return text.is_empty();
        };
        let Some((last, middle)) = rest.split_last() else {
            return text == &**first;
        };
        let Some(mut tail) = text.strip_prefix(&**first) else {
            return false;
        };
        for seg in middle {
            match tail.find(&**seg) {
                Some(i) => tail = &tail[i + seg.len()..],
                None => return false,
            }
        }
        tail.ends_with(&**last)
    }
}

/// True if `text` matches `pattern` (compiling it on the spot).
pub fn matches(pattern: &str, text: &str) -> bool {
    Pattern::new(pattern).matches(text)
}

/// The obvious dynamic-programming matcher, O(pattern × text): the reference the fast one is
/// tested (and fuzzed) against.
pub fn matches_reference(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // row[j]: pattern[..i] matches text[..j].
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for &pc in &p {
        let mut next = vec![false; t.len() + 1];
        if pc == '*' {
            next[0] = row[0];
            for j in 1..=t.len() {
                next[j] = row[j] || next[j - 1];
            }
        } else {
            for j in 1..=t.len() {
                next[j] = row[j - 1] && t[j - 1] == pc;
            }
        }
        row = next;
    }
    row[t.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Lcg;

    #[test]
    fn examples() {
        for (p, t, want) in [
            ("odds", "odds", true),
            ("odds", "odds_7", false),
            ("odds_*", "odds_7", true),
            ("odds_*", "odds_", true),
            ("odds_*", "odds", false),
            ("game_*", "games", false),
            ("*", "", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "x", false),
            ("user:*:bets", "user:42:bets", true),
            ("user:*:bets", "user:42:bankroll", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "acb", false),
            ("*ab", "aab", true),
            ("ab*ab", "ab", false),
            ("ab*ab", "abab", true),
            ("**", "x", true),
        ] {
            assert_eq!(matches(p, t), want, "{p:?} vs {t:?}");
            assert_eq!(matches_reference(p, t), want, "reference: {p:?} vs {t:?}");
        }
    }

    #[test]
    fn agrees_with_the_reference_on_random_inputs() {
        let mut rng = Lcg(7);
        let alphabet = ['a', 'b', '*', '_'];
        for _ in 0..20_000 {
            let p: String = (0..rng.index(8)).map(|_| alphabet[rng.index(4)]).collect();
            let t: String = (0..rng.index(10))
                .map(|_| alphabet[[0, 1, 3][rng.index(3)]])
                .collect();
            assert_eq!(matches(&p, &t), matches_reference(&p, &t), "{p:?} vs {t:?}");
        }
    }

    #[test]
    fn pathological_patterns_finish() {
        // Exponential for a backtracking matcher; one pass here.
        let p = "*a".repeat(64) + "b";
        let t = "a".repeat(100_000);
        assert!(!matches(&p, &t));
        assert!(matches(&p, &(t + "b")));
    }
}
