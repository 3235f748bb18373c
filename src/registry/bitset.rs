//! Growable bitset over slab keys, used for channel membership.
//!
//! # Invariants
//!
//! - `words` never ends in a zero word: `remove` trims trailing zero words, so the length of
//!   `words` is `max(set bit) / 64 + 1`, or 0 when the set is empty. Memory therefore follows the
//!   highest member key, not the highest key ever inserted.
//! - `ones` always equals the number of set bits, so `len` is O(1).

/// Bits per storage word.
pub(super) const WORD_BITS: usize = u64::BITS as usize;

/// Growable bitset over slab keys (usize). Words are u64.
#[derive(Debug, Default, Clone)]
pub struct BitSet {
    words: Vec<u64>,
    ones: usize,
}

impl BitSet {
    /// Creates an empty set without allocating.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates an empty set with room for `words` words (bits `0..64 * words`).
    pub fn with_word_capacity(words: usize) -> Self {
        BitSet {
            words: Vec::with_capacity(words),
            ones: 0,
        }
    }

    /// Length of the word storage: `max(set bit) / 64 + 1`, or 0 when empty.
    pub fn word_len(&self) -> usize {
        self.words.len()
    }

    /// Heap bytes held (allocated capacity).
    pub fn heap_bytes(&self) -> usize {
        self.words.capacity() * std::mem::size_of::<u64>()
    }

    /// Sets bit `i`, growing storage as needed; returns true if it was not set before.
    ///
    /// Storage grows to `i / 64 + 1` words, so a huge `i` allocates accordingly (and panics on
    /// capacity overflow near `usize::MAX`); [`Members`](super::Members) never does that.
    pub fn insert(&mut self, i: usize) -> bool {
        let (word, mask) = (i / WORD_BITS, 1u64 << (i % WORD_BITS));
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let slot = &mut self.words[word];
        if *slot & mask != 0 {
            return false;
        }
        *slot |= mask;
        self.ones += 1;
        true
    }

    /// Clears bit `i`; returns true if it was set. Trims trailing zero words (and releases
    /// excess capacity) so storage shrinks when the highest member leaves.
    pub fn remove(&mut self, i: usize) -> bool {
        let (word, mask) = (i / WORD_BITS, 1u64 << (i % WORD_BITS));
        let Some(slot) = self.words.get_mut(word) else {
            return false;
        };
        if *slot & mask == 0 {
            return false;
        }
        *slot &= !mask;
        self.ones -= 1;
        while self.words.last() == Some(&0) {
            self.words.pop();
        }
        // Shrink only when well over-allocated, so insert/remove at a word boundary cannot
        // reallocate on every call.
        if self.words.capacity() > 4 * self.words.len() + 4 {
            self.words.shrink_to_fit();
        }
        true
    }

    /// Returns true if bit `i` is set.
    pub fn contains(&self, i: usize) -> bool {
        self.words
            .get(i / WORD_BITS)
            .is_some_and(|w| w & (1u64 << (i % WORD_BITS)) != 0)
    }

    /// Number of set bits, kept as a counter so this is O(1).
    pub fn len(&self) -> usize {
        self.ones
    }

    /// True when no bit is set.
    pub fn is_empty(&self) -> bool {
        self.ones == 0
    }

    /// Ascending iterator over set bits using trailing_zeros per word (skips zero words fast).
    pub fn iter_ones(&self) -> IterOnes<'_> {
        IterOnes {
            words: &self.words,
            next_word: 0,
            current: 0,
            remaining: self.ones,
        }
    }
}

/// Ascending iterator over the set bits of a [`BitSet`], returned by [`BitSet::iter_ones`].
#[derive(Debug, Clone)]
pub struct IterOnes<'a> {
    words: &'a [u64],
    /// Index of the next word to load; the word in `current` is `next_word - 1`.
    next_word: usize,
    /// Not-yet-yielded bits of the current word.
    current: u64,
    /// Set bits not yet yielded, for an exact `size_hint`.
    remaining: usize,
}

impl Iterator for IterOnes<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.current == 0 {
            self.current = *self.words.get(self.next_word)?;
            self.next_word += 1;
        }
        let bit = self.current.trailing_zeros() as usize;
        self.current &= self.current - 1;
        self.remaining -= 1;
        Some((self.next_word - 1) * WORD_BITS + bit)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for IterOnes<'_> {}

impl std::iter::FusedIterator for IterOnes<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    use crate::test_rng::Lcg;

    fn expected_words(model: &BTreeSet<usize>) -> usize {
        model.last().map_or(0, |&max| max / WORD_BITS + 1)
    }

    #[test]
    fn empty_set() {
        let set = BitSet::new();
        assert!(set.is_empty());
        assert_eq!(set.len(), 0);
        assert!(!set.contains(0));
        assert!(!set.contains(usize::MAX));
        assert_eq!(set.iter_ones().next(), None);
    }

    #[test]
    fn insert_remove_contains() {
        let mut set = BitSet::new();
        assert!(set.insert(5));
        assert!(!set.insert(5));
        assert!(set.contains(5));
        assert!(!set.contains(4));
        assert_eq!(set.len(), 1);
        assert!(set.remove(5));
        assert!(!set.remove(5));
        assert!(!set.remove(1_000_000));
        assert!(set.is_empty());
        assert!(set.words.is_empty());
    }

    #[test]
    fn iter_ones_is_ascending_across_words() {
        let mut set = BitSet::new();
        for i in [700, 0, 63, 64, 65, 127, 128, 1, 100_000, 4095] {
            set.insert(i);
        }
        let got: Vec<usize> = set.iter_ones().collect();
        assert_eq!(got, vec![0, 1, 63, 64, 65, 127, 128, 700, 4095, 100_000]);
        assert_eq!(set.iter_ones().len(), 10);
        let mut it = set.iter_ones();
        it.nth(8);
        assert_eq!(it.size_hint(), (1, Some(1)));
        assert_eq!(it.next(), Some(100_000));
        assert_eq!(it.next(), None);
        assert_eq!(it.next(), None);
    }

    #[test]
    fn trims_trailing_zero_words() {
        let mut set = BitSet::new();
        set.insert(3);
        set.insert(100_000);
        assert_eq!(set.words.len(), 100_000 / 64 + 1);
        set.remove(100_000);
        assert_eq!(set.words.len(), 1);
        assert!(set.words.capacity() <= 8, "excess capacity released");
        set.remove(3);
        assert!(set.words.is_empty());
    }

    #[test]
    fn matches_btreeset_model() {
        let mut rng = Lcg(0x5eed);
        let mut set = BitSet::new();
        let mut model = BTreeSet::new();
        for step in 0..50_000 {
            let i = match rng.below(100) {
                0 => 100_000 + rng.below(64) as usize,
                1..=4 => rng.below(5_000) as usize,
                _ => rng.below(300) as usize,
            };
            if rng.below(100) < 55 {
                assert_eq!(set.insert(i), model.insert(i), "insert {i} at step {step}");
            } else {
                assert_eq!(set.remove(i), model.remove(&i), "remove {i} at step {step}");
            }
            assert_eq!(set.contains(i), model.contains(&i));
            assert_eq!(set.len(), model.len());
            assert_eq!(set.is_empty(), model.is_empty());
            assert_eq!(
                set.words.len(),
                expected_words(&model),
                "trimmed at step {step}"
            );
            if step % 97 == 0 {
                assert!(set.iter_ones().eq(model.iter().copied()));
            }
        }
        // Drain everything and check storage goes back to nothing.
        for i in model.iter().copied().collect::<Vec<_>>() {
            assert!(set.remove(i));
            model.remove(&i);
            assert_eq!(set.words.len(), expected_words(&model));
        }
        assert!(set.is_empty());
        assert!(set.words.is_empty());
    }
}
