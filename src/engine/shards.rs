//! A small set of shard ids (a shard count is at most 1024), used for channel interest.

/// Set of shard ids; empty holds no heap memory, up to 64 shards one word.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShardSet {
    words: Vec<u64>,
}

impl ShardSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `shard`; true if it was not in the set.
    pub fn insert(&mut self, shard: usize) -> bool {
        let (w, bit) = (shard / 64, 1u64 << (shard % 64));
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let had = self.words[w] & bit != 0;
        self.words[w] |= bit;
        !had
    }

    /// Removes `shard`; true if it was in the set.
    pub fn remove(&mut self, shard: usize) -> bool {
        let (w, bit) = (shard / 64, 1u64 << (shard % 64));
        let Some(word) = self.words.get_mut(w) else {
            return false;
        };
        let had = *word & bit != 0;
        *word &= !bit;
        while self.words.last() == Some(&0) {
            self.words.pop();
        }
        had
    }

    pub fn contains(&self, shard: usize) -> bool {
        self.words
            .get(shard / 64)
            .is_some_and(|w| w & (1u64 << (shard % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Shard ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(i * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_iterate() {
        let mut s = ShardSet::new();
        assert!(s.is_empty());
        assert!(s.insert(3));
        assert!(!s.insert(3));
        assert!(s.insert(700));
        assert!(s.insert(0));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 3, 700]);
        assert_eq!(s.len(), 3);
        assert!(s.remove(700));
        assert!(!s.remove(700));
        assert!(!s.remove(5000));
        assert_eq!(s.words.len(), 1, "trailing empty words are dropped");
        assert!(s.contains(3) && !s.contains(700));
        s.remove(0);
        s.remove(3);
        assert!(s.is_empty());
    }
}
