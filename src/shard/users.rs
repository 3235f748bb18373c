//! Distinct users with at least one open connection, across shards.
//!
//! Written only on connect and disconnect (never per message), striped so shards rarely meet on
//! one lock; `/api/stats` reads one counter instead of collecting every user id from every shard.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

const STRIPES: usize = 16;

/// user id → number of open connections, striped by a hash of the id.
pub struct UserIndex {
    stripes: Vec<Mutex<HashMap<Box<str>, u32>>>,
    hasher: std::collections::hash_map::RandomState,
    distinct: AtomicUsize,
}

impl Default for UserIndex {
    fn default() -> Self {
        UserIndex {
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            distinct: AtomicUsize::new(0),
        }
    }
}

impl UserIndex {
    fn stripe(&self, user: &str) -> &Mutex<HashMap<Box<str>, u32>> {
        &self.stripes[(self.hasher.hash_one(user) as usize) % STRIPES]
    }

    /// A connection of `user` opened; true if it is the user's first on this node.
    pub fn add(&self, user: &str) -> bool {
        let mut m = self.stripe(user).lock();
        match m.get_mut(user) {
            Some(n) => {
                *n += 1;
                false
            }
            None => {
                m.insert(user.into(), 1);
                self.distinct.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }

    /// A connection of `user` closed; true if it was the user's last on this node.
    pub fn remove(&self, user: &str) -> bool {
        let mut m = self.stripe(user).lock();
        if let Some(n) = m.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                m.remove(user);
                self.distinct.fetch_sub(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Users with at least one open connection.
    pub fn count(&self) -> usize {
        self.distinct.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_users() {
        let u = UserIndex::default();
        assert!(u.add("a"));
        assert!(!u.add("a"));
        assert!(u.add("b"));
        assert_eq!(u.count(), 2);
        assert!(!u.remove("a"));
        assert_eq!(u.count(), 2);
        assert!(u.remove("a"));
        assert!(!u.remove("zzz"));
        assert_eq!(u.count(), 1);
    }
}
