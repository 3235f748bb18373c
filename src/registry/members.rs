//! Channel membership: a sorted `Vec<u32>` of slab keys while sparse, a [`BitSet`] when dense.
//!
//! A bitset costs memory in proportion to the highest member key (one connection with slab key
//! 1,000,000 makes a 122 KiB bitset for every channel it joins) and fan-out over it scans
//! `max_key / 64` words. A sorted vector costs 4 bytes per member whatever the keys are, but
//! inserting into a big one moves memory. [`Members`] keeps whichever fits.
//!
//! # Invariants
//!
//! - `words` below means `max_key / 64 + 1`, the length of a trimmed bitset holding the keys.
//! - **Sparse** (`Vec<u32>`, strictly ascending) is the starting form. After an insert it
//!   becomes dense when the bitset would be no bigger than the vector (`len > 2 * words`), or,
//!   for big sets (`len >= LARGE`), when the bitset is at most 4× the vector (`2 * len >=
//!   words`), so big dense channels get O(1) insert/remove instead of a memmove.
//! - **Dense** ([`BitSet`]) always satisfies `4 * len >= words`: the bitset is at most 8× the
//!   vector, so memory is O(len) in both forms whatever the keys. A remove, or an insert of a
//!   key high enough to break this (which would otherwise allocate up to 512 MiB), turns it
//!   back into a vector first, so a huge bitset is never allocated.
//! - **Hysteresis.** Going dense needs `len / words > 2` (or `>= 1/2` when large), going sparse
//!   needs `< 1/4`, so one insert or remove of an ordinary key can't flip the form back and forth.
//!   The one thing that changes `words` a lot in one step is a key far above the others; to
//!   keep even that from converting on every operation, going dense also needs at least
//!   `max(len / 2, 32)` inserts and removes since the last conversion. Each conversion is
//!   O(len), so conversions cost O(1) amortized.
//! - **Keys above `u32::MAX`** (impossible for a slab in practice, possible for the API) live in a
//!   separate sorted `Vec<usize>` beside either form; they are all larger than any key of the
//!   main form, so iterating the main form then this vector stays ascending. Nothing panics or
//!   allocates out of proportion for any key.
//! - Sparse storage releases capacity when more than 4× over-allocated, like [`BitSet`]; so
//!   [`Members::heap_bytes`] stays within `160 * len + 64` bytes (checked by the tests).

use super::bitset::{BitSet, IterOnes, WORD_BITS};

/// Sets of at least this many members may go dense when the bitset is up to 4× the vector.
const LARGE: usize = 1024;

/// Fewest inserts and removes between two conversions (besides `len / 2`); small sets are
/// cheap as vectors, so they wait at least this long.
const MIN_GUARD: usize = 32;

#[derive(Debug, Clone)]
enum Repr {
    Sparse(Vec<u32>),
    Dense(BitSet),
}

/// Set of slab keys subscribed to one channel; iterates in ascending order.
#[derive(Debug, Clone)]
pub struct Members {
    repr: Repr,
    /// Keys above `u32::MAX`, ascending (empty, without allocating, in practice).
    big: Vec<usize>,
    /// Inserts and removes since the last change of representation (saturating).
    since_flip: u32,
}

impl Default for Members {
    fn default() -> Self {
        Self::new()
    }
}

/// Words a trimmed bitset needs to hold `max_key`.
fn words_for(max_key: usize) -> usize {
    max_key / WORD_BITS + 1
}

impl Members {
    /// Creates an empty set without allocating.
    pub fn new() -> Self {
        Members {
            repr: Repr::Sparse(Vec::new()),
            big: Vec::new(),
            since_flip: 0,
        }
    }

    /// Adds `key`; returns true if it was not a member.
    pub fn insert(&mut self, key: usize) -> bool {
        let Ok(small) = u32::try_from(key) else {
            return match self.big.binary_search(&key) {
                Ok(_) => false,
                Err(pos) => {
                    self.big.insert(pos, key);
                    true
                }
            };
        };
        let added = match &mut self.repr {
            Repr::Sparse(v) => match v.binary_search(&small) {
                Ok(_) => false,
                Err(pos) => {
                    v.insert(pos, small);
                    true
                }
            },
            Repr::Dense(b) => {
                if b.contains(key) {
                    false
                } else {
                    let words = b.word_len().max(words_for(key));
                    if 4 * (b.len() + 1) < words {
                        // The bitset would grow out of proportion: back to a vector first.
                        let mut v = self.to_sorted_vec();
                        let pos = v.partition_point(|&k| k < small);
                        v.insert(pos, small);
                        self.repr = Repr::Sparse(v);
                        self.since_flip = 0;
                    } else {
                        b.insert(key);
                    }
                    true
                }
            }
        };
        if added {
            self.since_flip = self.since_flip.saturating_add(1);
            self.maybe_densify();
        }
        added
    }

    /// Removes `key`; returns true if it was a member.
    pub fn remove(&mut self, key: usize) -> bool {
        let Ok(small) = u32::try_from(key) else {
            return match self.big.binary_search(&key) {
                Ok(pos) => {
                    self.big.remove(pos);
                    shrink(&mut self.big);
                    true
                }
                Err(_) => false,
            };
        };
        let removed = match &mut self.repr {
            Repr::Sparse(v) => match v.binary_search(&small) {
                Ok(pos) => {
                    v.remove(pos);
                    shrink(v);
                    true
                }
                Err(_) => false,
            },
            Repr::Dense(b) => {
                if !b.remove(key) {
                    false
                } else {
                    if b.is_empty() || 4 * b.len() < b.word_len() {
                        self.repr = Repr::Sparse(self.to_sorted_vec());
                        self.since_flip = 0;
                    }
                    true
                }
            }
        };
        if removed {
            self.since_flip = self.since_flip.saturating_add(1);
        }
        removed
    }

    /// True if `key` is a member.
    pub fn contains(&self, key: usize) -> bool {
        let Ok(small) = u32::try_from(key) else {
            return self.big.binary_search(&key).is_ok();
        };
        match &self.repr {
            Repr::Sparse(v) => v.binary_search(&small).is_ok(),
            Repr::Dense(b) => b.contains(key),
        }
    }

    /// Number of members, O(1).
    pub fn len(&self) -> usize {
        self.main_len() + self.big.len()
    }

    /// True when there are no members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Members in ascending order.
    pub fn iter_ones(&self) -> MembersIter<'_> {
        let main = match &self.repr {
            Repr::Sparse(v) => Main::Sparse(v.iter()),
            Repr::Dense(b) => Main::Dense(b.iter_ones()),
        };
        MembersIter {
            main,
            big: self.big.iter(),
        }
    }

    /// True while stored as a bitset (for tests and diagnostics).
    pub fn is_dense(&self) -> bool {
        matches!(self.repr, Repr::Dense(_))
    }

    /// Heap bytes held (allocated capacity, not just used length).
    pub fn heap_bytes(&self) -> usize {
        let main = match &self.repr {
            Repr::Sparse(v) => v.capacity() * std::mem::size_of::<u32>(),
            Repr::Dense(b) => b.heap_bytes(),
        };
        main + self.big.capacity() * std::mem::size_of::<usize>()
    }

    fn main_len(&self) -> usize {
        match &self.repr {
            Repr::Sparse(v) => v.len(),
            Repr::Dense(b) => b.len(),
        }
    }

    /// Keys of the main form (all <= u32::MAX) as an exactly sized ascending vector.
    fn to_sorted_vec(&self) -> Vec<u32> {
        match &self.repr {
            Repr::Sparse(v) => v.clone(),
            Repr::Dense(b) => {
                let mut v = Vec::with_capacity(b.len() + 1);
                // Dense keys came from u32 keys, so the conversion can't fail.
                v.extend(b.iter_ones().filter_map(|k| u32::try_from(k).ok()));
                v
            }
        }
    }

    /// Turns a sparse vector into a bitset if the rules in the module docs allow it.
    fn maybe_densify(&mut self) {
        let Repr::Sparse(v) = &self.repr else {
            return;
        };
        let Some(&max) = v.last() else {
            return;
        };
        let (len, words) = (v.len(), words_for(max as usize));
        let worth = len > 2 * words || (len >= LARGE && 2 * len >= words);
        if !worth || (self.since_flip as usize) < (len / 2).max(MIN_GUARD) {
            return;
        }
        let mut b = BitSet::with_word_capacity(words);
        for &k in v {
            b.insert(k as usize);
        }
        self.repr = Repr::Dense(b);
        self.since_flip = 0;
    }
}

/// Releases capacity when a vector is empty or more than 4× over-allocated (not on every call
/// at a boundary: shrinking leaves exactly `len`, and growing doubles).
fn shrink<T>(v: &mut Vec<T>) {
    if v.is_empty() || v.capacity() > 4 * v.len() + 4 {
        v.shrink_to_fit();
    }
}

#[derive(Debug, Clone)]
enum Main<'a> {
    Sparse(std::slice::Iter<'a, u32>),
    Dense(IterOnes<'a>),
}

/// Ascending iterator over the members of a [`Members`], returned by [`Members::iter_ones`].
#[derive(Debug, Clone)]
pub struct MembersIter<'a> {
    main: Main<'a>,
    big: std::slice::Iter<'a, usize>,
}

impl Iterator for MembersIter<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        let next = match &mut self.main {
            Main::Sparse(it) => it.next().map(|&k| k as usize),
            Main::Dense(it) => it.next(),
        };
        next.or_else(|| self.big.next().copied())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let main = match &self.main {
            Main::Sparse(it) => it.len(),
            Main::Dense(it) => it.len(),
        };
        let n = main + self.big.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for MembersIter<'_> {}

impl std::iter::FusedIterator for MembersIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    use crate::test_rng::Lcg;

    fn heap_bound(m: &Members) -> usize {
        160 * m.len() + 64
    }

    fn assert_matches(m: &Members, model: &BTreeSet<usize>, step: usize) {
        assert_eq!(m.len(), model.len(), "len at step {step}");
        assert_eq!(m.is_empty(), model.is_empty());
        let it = m.iter_ones();
        assert_eq!(it.len(), model.len(), "size_hint at step {step}");
        assert!(it.eq(model.iter().copied()), "members at step {step}");
        assert!(
            m.heap_bytes() <= heap_bound(m),
            "{} heap bytes for {} members at step {step}",
            m.heap_bytes(),
            m.len()
        );
        if let Repr::Dense(b) = &m.repr {
            assert!(
                4 * b.len() >= b.word_len(),
                "dense invariant at step {step}"
            );
        }
    }

    #[test]
    fn starts_sparse_and_empty() {
        let m = Members::new();
        assert!(m.is_empty());
        assert!(!m.is_dense());
        assert_eq!(m.heap_bytes(), 0);
        assert_eq!(m.iter_ones().next(), None);
        assert!(!m.contains(usize::MAX));
    }

    #[test]
    fn consecutive_keys_become_dense() {
        let mut m = Members::new();
        for k in 0..10_000 {
            assert!(m.insert(k));
        }
        assert!(m.is_dense());
        assert!(m.heap_bytes() <= 2 * 10_000 / 8 + 64, "{}", m.heap_bytes());
        assert!(m.iter_ones().eq(0..10_000));
        // Emptying it from the top goes back to a vector before the end.
        for k in (0..10_000).rev() {
            assert!(m.remove(k));
        }
        assert!(m.is_empty());
        assert!(!m.is_dense());
    }

    #[test]
    fn one_high_key_stays_sparse() {
        let mut m = Members::new();
        m.insert(1_000_000);
        assert!(!m.is_dense());
        assert!(m.heap_bytes() <= 64);
        assert_eq!(m.iter_ones().collect::<Vec<_>>(), vec![1_000_000]);
    }

    #[test]
    fn high_key_into_dense_set_goes_sparse_without_huge_alloc() {
        let mut m = Members::new();
        for k in 0..2_000 {
            m.insert(k);
        }
        assert!(m.is_dense());
        assert!(m.insert(u32::MAX as usize));
        assert!(!m.is_dense(), "a 512 MiB bitset would have been needed");
        assert!(m.heap_bytes() <= heap_bound(&m));
        assert_eq!(m.iter_ones().last(), Some(u32::MAX as usize));
        assert!(m.remove(u32::MAX as usize));
        // Inserting and removing ordinary keys right after does not flip back at once...
        assert!(m.insert(2_000));
        assert!(!m.is_dense());
        // ...but after enough operations the set is dense again.
        for k in 2_001..4_200 {
            m.insert(k);
        }
        assert!(m.is_dense());
    }

    #[test]
    fn keys_above_u32_max_do_not_panic() {
        let mut m = Members::new();
        let keys = [usize::MAX, 5, u32::MAX as usize, 1 << 40, 0];
        for k in keys {
            assert!(m.insert(k));
            assert!(!m.insert(k));
        }
        let mut want: Vec<usize> = keys.to_vec();
        want.sort_unstable();
        assert_eq!(m.iter_ones().collect::<Vec<_>>(), want);
        assert_eq!(m.iter_ones().len(), 5);
        assert!(m.contains(usize::MAX) && m.contains(1 << 40) && !m.contains(1 << 41));
        assert!(m.heap_bytes() <= 256);
        for k in keys {
            assert!(m.remove(k));
            assert!(!m.remove(k));
        }
        assert!(m.is_empty());
    }

    /// Toggling a key at the density boundary never converts on every operation, and even a
    /// key far above the rest (which forces the vector form) converts at most once per 32 ops.
    #[test]
    fn no_flip_flop_at_the_boundary() {
        let mut m = Members::new();
        let mut k = 0;
        while !m.is_dense() {
            m.insert(k);
            k += 1;
        }
        let mut last = k - 1;
        // Ordinary keys at the boundary: no conversion at all.
        for _ in 0..1_000 {
            assert!(m.remove(last));
            assert!(m.is_dense());
            assert!(m.insert(last));
            assert!(m.is_dense());
        }
        // Shrink to just above the sparse threshold (a quarter) and toggle there.
        m = Members::new();
        for k in (0..1_024).chain([8_191]) {
            m.insert(k);
        }
        assert!(m.is_dense());
        while 4 * (m.len() - 1) >= words_for(8_191) {
            // Remove low keys: len drops while words stays.
            let low = m.iter_ones().next().unwrap();
            assert!(m.remove(low));
            assert!(m.is_dense());
        }
        let low = m.iter_ones().next().unwrap();
        assert!(m.remove(low));
        assert!(!m.is_dense(), "went sparse below a quarter");
        for _ in 0..1_000 {
            assert!(m.insert(low));
            assert!(!m.is_dense());
            assert!(m.remove(low));
            assert!(!m.is_dense());
        }
        // A huge key toggled in and out of a set that wants to be dense.
        m = Members::new();
        for k in 0..40 {
            m.insert(k);
        }
        assert!(m.is_dense());
        last = 39;
        let (mut flips, mut dense, mut ops) = (0, true, 0);
        for _ in 0..1_000 {
            m.remove(last);
            m.insert(last);
            m.insert(1 << 20);
            m.remove(1 << 20);
            ops += 4;
            if m.is_dense() != dense {
                flips += 1;
                dense = m.is_dense();
            }
        }
        assert!(flips * 32 <= 2 * ops, "{flips} conversions in {ops} ops");
    }

    /// Random inserts and removes over several key ranges against a BTreeSet.
    #[test]
    fn matches_btreeset_model() {
        let mut rng = Lcg(0xfeed);
        let mut m = Members::new();
        let mut model = BTreeSet::new();
        let (mut saw_dense, mut saw_sparse) = (false, false);
        for step in 0..60_000 {
            // Phases move the key distribution between dense and sparse.
            let phase = (step / 5_000) % 4;
            let k = match (phase, rng.below(100)) {
                (_, 0) => usize::MAX - rng.index(4),
                (_, 1) => u32::MAX as usize - rng.index(4),
                (0 | 2, _) => rng.index(600),
                (1, _) => rng.index(2_000_000),
                _ => rng.index(600) * 1_000,
            };
            let insert_pct = if phase == 3 { 40 } else { 55 };
            if rng.below(100) < insert_pct {
                assert_eq!(m.insert(k), model.insert(k), "insert {k} at step {step}");
            } else {
                assert_eq!(m.remove(k), model.remove(&k), "remove {k} at step {step}");
            }
            assert_eq!(m.contains(k), model.contains(&k));
            assert_eq!(m.len(), model.len());
            if m.is_dense() {
                saw_dense = true;
            } else {
                saw_sparse = true;
            }
            if step % 101 == 0 {
                assert_matches(&m, &model, step);
            }
        }
        assert_matches(&m, &model, usize::MAX);
        assert!(saw_dense && saw_sparse, "both forms exercised");
        for k in model.iter().copied().collect::<Vec<_>>() {
            assert!(m.remove(k));
            model.remove(&k);
        }
        assert_matches(&m, &model, 0);
        assert_eq!(m.heap_bytes(), 0);
    }
}
