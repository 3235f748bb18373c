//! Per-shard channel registry: which local connections (slab keys) subscribe to which channel.
//!
//! Each shard owns one [`Registry`]. A channel exists here only while at least one local
//! connection subscribes to it; it gets a dense [`ChannelId`] (a slab index) so fan-out can go
//! from id to a [`BitSet`] of connection slab keys without hashing the name again.
//!
//! # Invariants
//!
//! - A slab key is valid only on its own shard; a freed key is cleared from every bitset before
//!   reuse (remove_connection), so a reused key starts with no subscriptions.
//! - `by_name` and `channels` always describe the same set of channels: `by_name[name] == id`
//!   exactly when `channels[id]` exists with that name.
//! - Every channel in `channels` has at least one member. The unsubscribe that removes the last
//!   member drops the channel and frees its id for reuse, so a [`ChannelId`] must be forgotten
//!   by the connection once it has unsubscribed.
//! - Every method accepts any `ChannelId` (stale or never issued) without panicking; unknown ids
//!   read as "no such channel".

mod bitset;

pub use bitset::{BitSet, IterOnes};

use slab::Slab;
use std::collections::HashMap;

/// Dense per-shard id of a channel that has at least one local subscriber. Valid only on its own
/// shard and only while the channel has subscribers (ids are reused after the last one leaves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u32);

/// One channel with local subscribers: its name and its members' slab keys.
#[derive(Debug)]
struct ChannelEntry {
    name: Box<str>,
    members: BitSet,
}

/// Channel membership of one shard: channel name <-> dense id, and each channel's members.
#[derive(Debug, Default)]
pub struct Registry {
    by_name: HashMap<Box<str>, ChannelId>,
    channels: Slab<ChannelEntry>,
}

impl Registry {
    /// Creates an empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key` to channel `name` (creating it). Returns (id, newly_added).
    ///
    /// # Panics
    ///
    /// Only if more than `u32::MAX` channels exist at once (memory runs out long before).
    pub fn subscribe(&mut self, name: &str, key: usize) -> (ChannelId, bool) {
        if let Some(&id) = self.by_name.get(name) {
            let added = self.channels[id.0 as usize].members.insert(key);
            return (id, added);
        }
        let slot = self.channels.vacant_entry();
        let id = ChannelId(u32::try_from(slot.key()).expect("more than u32::MAX channels"));
        let mut members = BitSet::new();
        members.insert(key);
        slot.insert(ChannelEntry {
            name: name.into(),
            members,
        });
        self.by_name.insert(name.into(), id);
        (id, true)
    }

    /// Removes `key` from channel `id`; drops the channel when it has no members left. True if it
    /// was a member.
    pub fn unsubscribe(&mut self, id: ChannelId, key: usize) -> bool {
        let index = id.0 as usize;
        let Some(entry) = self.channels.get_mut(index) else {
            return false;
        };
        if !entry.members.remove(key) {
            return false;
        }
        if entry.members.is_empty() {
            let entry = self.channels.remove(index);
            self.by_name.remove(&*entry.name);
        }
        true
    }

    /// Id of channel `name` if it has local subscribers, for routing a publish.
    pub fn lookup(&self, name: &str) -> Option<ChannelId> {
        self.by_name.get(name).copied()
    }

    /// Name of channel `id`; None if the id is not live.
    pub fn name(&self, id: ChannelId) -> Option<&str> {
        self.channels.get(id.0 as usize).map(|e| &*e.name)
    }

    /// Slab keys subscribed to channel `id`, for fan-out; None if the id is not live.
    pub fn members(&self, id: ChannelId) -> Option<&BitSet> {
        self.channels.get(id.0 as usize).map(|e| &e.members)
    }

    /// Number of local subscribers of channel `id`; 0 if the id is not live.
    pub fn subscriber_count(&self, id: ChannelId) -> usize {
        self.members(id).map_or(0, BitSet::len)
    }

    /// Number of channels with at least one subscriber.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// True when no channel has a local subscriber.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// (name, subscriber count) of every channel with subscribers.
    pub fn iter(&self) -> impl Iterator<Item = (&str, usize)> {
        self.channels
            .iter()
            .map(|(_, e)| (&*e.name, e.members.len()))
    }

    /// Clears `key` from every channel in `channels` (the connection's own list) — must be called
    /// before the slab key is freed, so a reused key never inherits a subscription.
    pub fn remove_connection(&mut self, key: usize, channels: &[ChannelId]) {
        for &id in channels {
            self.unsubscribe(id, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use crate::test_rng::Lcg;

    fn members_of(reg: &Registry, id: ChannelId) -> Vec<usize> {
        reg.members(id)
            .map(|m| m.iter_ones().collect())
            .unwrap_or_default()
    }

    #[test]
    fn subscribe_twice_is_not_duplicated() {
        let mut reg = Registry::new();
        let (a, added) = reg.subscribe("a", 7);
        assert!(added);
        let (a2, added) = reg.subscribe("a", 7);
        assert_eq!(a, a2);
        assert!(!added);
        assert_eq!(reg.subscriber_count(a), 1);
        assert_eq!(members_of(&reg, a), vec![7]);
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.name(a), Some("a"));
        assert_eq!(reg.lookup("a"), Some(a));
    }

    #[test]
    fn unsubscribe_last_member_frees_channel() {
        let mut reg = Registry::new();
        let (a, _) = reg.subscribe("a", 1);
        reg.subscribe("a", 2);
        assert!(reg.unsubscribe(a, 1));
        assert!(!reg.unsubscribe(a, 1), "not a member any more");
        assert_eq!(reg.lookup("a"), Some(a));
        assert!(reg.unsubscribe(a, 2));
        assert_eq!(reg.lookup("a"), None);
        assert_eq!(reg.name(a), None);
        assert!(reg.members(a).is_none());
        assert_eq!(reg.subscriber_count(a), 0);
        assert!(reg.is_empty());
        assert!(!reg.unsubscribe(a, 2), "stale id is ignored");
    }

    #[test]
    fn unknown_ids_are_harmless() {
        let mut reg = Registry::new();
        let bogus = ChannelId(u32::MAX);
        assert!(!reg.unsubscribe(bogus, 0));
        assert_eq!(reg.name(bogus), None);
        assert!(reg.members(bogus).is_none());
        assert_eq!(reg.subscriber_count(bogus), 0);
        reg.remove_connection(0, &[bogus, ChannelId(0)]);
        assert!(reg.is_empty());
    }

    #[test]
    fn channel_id_reuse_does_not_leak_old_members() {
        let mut reg = Registry::new();
        let (a, _) = reg.subscribe("a", 1);
        reg.subscribe("a", 2);
        reg.unsubscribe(a, 1);
        reg.unsubscribe(a, 2);
        let (b, _) = reg.subscribe("b", 5);
        assert_eq!(a, b, "slab reuses the freed id");
        assert_eq!(reg.name(b), Some("b"));
        assert_eq!(members_of(&reg, b), vec![5]);
        assert_eq!(reg.lookup("a"), None);
        assert_eq!(reg.lookup("b"), Some(b));
    }

    #[test]
    fn reused_slab_key_starts_without_subscriptions() {
        let mut reg = Registry::new();
        let (a, _) = reg.subscribe("a", 3);
        let (b, _) = reg.subscribe("b", 3);
        reg.subscribe("a", 4);
        reg.subscribe("b", 4);
        reg.remove_connection(3, &[a, b]);
        // Key 3 is freed and reused by a new connection that only joins "c".
        let (c, added) = reg.subscribe("c", 3);
        assert!(added);
        assert!(!reg.members(a).unwrap().contains(3));
        assert!(!reg.members(b).unwrap().contains(3));
        assert_eq!(members_of(&reg, a), vec![4]);
        assert_eq!(members_of(&reg, b), vec![4]);
        assert_eq!(members_of(&reg, c), vec![3]);
    }

    #[test]
    fn remove_connection_drops_emptied_channels() {
        let mut reg = Registry::new();
        let (a, _) = reg.subscribe("a", 9);
        let (b, _) = reg.subscribe("b", 9);
        reg.subscribe("b", 10);
        reg.remove_connection(9, &[a, b, a]);
        assert_eq!(reg.lookup("a"), None);
        assert_eq!(reg.lookup("b"), Some(b));
        assert_eq!(reg.len(), 1);
        let all: Vec<_> = reg.iter().collect();
        assert_eq!(all, vec![("b", 1)]);
    }

    /// Random subscribe / unsubscribe / remove_connection against a name -> keys model. Each
    /// connection keeps its own channel-id list, the way a real connection would.
    #[test]
    fn matches_model() {
        const NAMES: usize = 24;
        const KEYS: usize = 64;
        let names: Vec<String> = (0..NAMES).map(|i| format!("chan-{i}")).collect();
        let mut rng = Lcg(42);
        let mut reg = Registry::new();
        let mut model: HashMap<String, BTreeSet<usize>> = HashMap::new();
        let mut conn_lists: Vec<Vec<ChannelId>> = vec![Vec::new(); KEYS];

        for step in 0..20_000 {
            let key = rng.index(KEYS);
            match rng.index(100) {
                0..=49 => {
                    let name = &names[rng.index(NAMES)];
                    let (id, added) = reg.subscribe(name, key);
                    let model_added = model.entry(name.clone()).or_default().insert(key);
                    assert_eq!(added, model_added, "subscribe at step {step}");
                    if added {
                        conn_lists[key].push(id);
                    } else {
                        assert!(conn_lists[key].contains(&id));
                    }
                    assert_eq!(reg.lookup(name), Some(id));
                    assert_eq!(reg.name(id), Some(name.as_str()));
                }
                50..=79 => {
                    if conn_lists[key].is_empty() {
                        continue;
                    }
                    let pos = rng.index(conn_lists[key].len());
                    let id = conn_lists[key].swap_remove(pos);
                    let name = reg
                        .name(id)
                        .expect("connection's channel is live")
                        .to_owned();
                    assert!(reg.unsubscribe(id, key));
                    let set = model.get_mut(&name).unwrap();
                    assert!(set.remove(&key));
                    if set.is_empty() {
                        model.remove(&name);
                        assert_eq!(reg.lookup(&name), None);
                    }
                }
                80..=89 => {
                    // Unsubscribing from a channel the key is not in changes nothing.
                    let name = &names[rng.index(NAMES)];
                    if let Some(id) = reg.lookup(name) {
                        let member = model[name].contains(&key);
                        if !member {
                            assert!(!reg.unsubscribe(id, key));
                        }
                    }
                }
                _ => {
                    let list = std::mem::take(&mut conn_lists[key]);
                    reg.remove_connection(key, &list);
                    model.retain(|_, set| {
                        set.remove(&key);
                        !set.is_empty()
                    });
                }
            }

            assert_eq!(reg.len(), model.len(), "channel count at step {step}");
            if step % 53 == 0 || step > 19_900 {
                for (name, set) in &model {
                    let id = reg.lookup(name).expect("model channel is live");
                    assert!(members_of(&reg, id).into_iter().eq(set.iter().copied()));
                    assert_eq!(reg.subscriber_count(id), set.len());
                }
                let got: BTreeMap<&str, usize> = reg.iter().collect();
                let want: BTreeMap<&str, usize> =
                    model.iter().map(|(n, s)| (n.as_str(), s.len())).collect();
                assert_eq!(got, want);
                for (key, list) in conn_lists.iter().enumerate() {
                    for (name, set) in &model {
                        let id = reg.lookup(name).unwrap();
                        assert_eq!(set.contains(&key), list.contains(&id));
                    }
                }
            }
        }
    }
}
