//! Per-shard channel registry: which local connections (slab keys) subscribe to which channel.
//!
//! Each shard owns one [`Registry`]. A channel exists here only while at least one local
//! connection subscribes to it; it gets a dense [`ChannelId`] (a slab index) so fan-out can go
//! from id to the [`Members`] (connection slab keys) without hashing the name again.
//!
//! Membership memory follows the number of members, not the highest slab key: [`Members`] is a
//! sorted vector of keys while sparse and a [`BitSet`] while dense (see `members.rs` for the
//! thresholds and their hysteresis), so one connection with a high slab key in many channels
//! costs a few bytes per channel, and fan-out over a sparse channel visits only its members.
//!
//! # Invariants
//!
//! - A slab key is valid only on its own shard; a freed key is cleared from every channel before
//!   reuse (remove_connection), so a reused key starts with no subscriptions.
//! - `by_name` and `channels` always describe the same set of channels: `by_name[name] == id`
//!   exactly when `channels[id]` exists with that name.
//! - Every channel in `channels` has at least one member. The unsubscribe that removes the last
//!   member drops the channel and frees its id for reuse, so a [`ChannelId`] must be forgotten
//!   by the connection once it has unsubscribed.
//! - Every method accepts any `ChannelId` (stale or never issued) without panicking; unknown ids
//!   read as "no such channel".

mod bitset;
mod members;

pub use bitset::{BitSet, IterOnes};
pub use members::{Members, MembersIter};

use slab::Slab;
use std::collections::HashMap;
use std::sync::Arc;

/// Dense per-shard id of a channel that has at least one local subscriber. Valid only on its own
/// shard and only while the channel has subscribers (ids are reused after the last one leaves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u32);

/// One channel with local subscribers: its name and its members' slab keys.
#[derive(Debug)]
struct ChannelEntry {
    /// Shared with `by_name`: one allocation per channel, and snapshots take a reference count
    /// rather than a copy.
    name: Arc<str>,
    members: Members,
}

/// Channel membership of one shard: channel name <-> dense id, and each channel's members.
#[derive(Debug, Default)]
pub struct Registry {
    by_name: HashMap<Arc<str>, ChannelId>,
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
        let mut members = Members::new();
        members.insert(key);
        let name: Arc<str> = Arc::from(name);
        slot.insert(ChannelEntry {
            name: name.clone(),
            members,
        });
        self.by_name.insert(name, id);
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
    pub fn members(&self, id: ChannelId) -> Option<&Members> {
        self.channels.get(id.0 as usize).map(|e| &e.members)
    }

    /// Number of local subscribers of channel `id`; 0 if the id is not live.
    pub fn subscriber_count(&self, id: ChannelId) -> usize {
        self.members(id).map_or(0, Members::len)
    }

    /// Approximate heap bytes of channel membership (the [`Members`] of every channel; names,
    /// the name index and the channel slab are not counted).
    pub fn heap_bytes(&self) -> usize {
        self.channels
            .iter()
            .map(|(_, e)| e.members.heap_bytes())
            .sum()
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

    /// (name, subscriber count) of every channel with subscribers, the names shared: a snapshot
    /// costs a reference count per channel, not a copy of its name.
    pub fn iter_shared(&self) -> impl Iterator<Item = (Arc<str>, usize)> + '_ {
        self.channels
            .iter()
            .map(|(_, e)| (e.name.clone(), e.members.len()))
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

    #[test]
    fn high_slab_key_in_many_channels_is_cheap() {
        let mut reg = Registry::new();
        let ids: Vec<ChannelId> = (0..256)
            .map(|i| reg.subscribe(&format!("fresh-{i}"), 1_000_000).0)
            .collect();
        assert!(
            reg.heap_bytes() < 64 * 1024,
            "{} bytes of member storage",
            reg.heap_bytes()
        );
        for &id in &ids {
            assert_eq!(members_of(&reg, id), vec![1_000_000]);
            assert!(!reg.members(id).unwrap().is_dense());
        }
        reg.remove_connection(1_000_000, &ids);
        assert!(reg.is_empty());
        assert_eq!(reg.heap_bytes(), 0);
    }

    #[test]
    fn dense_channel_is_a_bitset() {
        let mut reg = Registry::new();
        let mut id = None;
        for key in 0..10_000 {
            id = Some(reg.subscribe("busy", key).0);
        }
        let members = reg.members(id.unwrap()).unwrap();
        assert!(members.is_dense());
        assert_eq!(members.len(), 10_000);
        assert!(members.iter_ones().eq(0..10_000));
        // 157 words; growth by doubling leaves at most twice that.
        assert!(reg.heap_bytes() <= 2 * 8 * (10_000 / 64 + 1));
    }

    /// Random subscribe / unsubscribe / remove_connection against a name -> keys model. Each
    /// connection keeps its own channel-id list, the way a real connection would. Slab keys are
    /// mostly small and packed (channels go dense) with some far apart, up to and beyond
    /// `u32::MAX` (channels holding them stay or go sparse), so both forms of [`Members`] occur.
    #[test]
    fn matches_model() {
        const NAMES: usize = 24;
        const KEYS: usize = 96;
        let names: Vec<String> = (0..NAMES).map(|i| format!("chan-{i}")).collect();
        let slab_key = |i: usize| -> usize {
            match i {
                0..=63 => i,
                64..=93 => (i - 63) * (i - 63) * 40_009,
                94 => u32::MAX as usize,
                _ => usize::MAX,
            }
        };
        let mut rng = Lcg(42);
        let mut reg = Registry::new();
        let mut model: HashMap<String, BTreeSet<usize>> = HashMap::new();
        let mut conn_lists: Vec<Vec<ChannelId>> = vec![Vec::new(); KEYS];
        let (mut saw_dense, mut saw_sparse) = (0, 0);

        for step in 0..20_000 {
            // Phases favour the packed keys, then the wide ones, so channels change form.
            let idx = if (step / 2_000) % 2 == 0 {
                rng.index(KEYS)
            } else {
                64 + rng.index(KEYS - 64)
            };
            let key = slab_key(idx);
            match rng.index(100) {
                0..=49 => {
                    let name = &names[rng.index(NAMES)];
                    let (id, added) = reg.subscribe(name, key);
                    let model_added = model.entry(name.clone()).or_default().insert(key);
                    assert_eq!(added, model_added, "subscribe at step {step}");
                    if added {
                        conn_lists[idx].push(id);
                    } else {
                        assert!(conn_lists[idx].contains(&id));
                    }
                    assert_eq!(reg.lookup(name), Some(id));
                    assert_eq!(reg.name(id), Some(name.as_str()));
                }
                50..=79 => {
                    if conn_lists[idx].is_empty() {
                        continue;
                    }
                    let pos = rng.index(conn_lists[idx].len());
                    let id = conn_lists[idx].swap_remove(pos);
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
                    let list = std::mem::take(&mut conn_lists[idx]);
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
                    let members = reg.members(id).unwrap();
                    assert!(members.heap_bytes() <= 160 * set.len() + 64);
                    if members.is_dense() {
                        saw_dense += 1;
                    } else {
                        saw_sparse += 1;
                    }
                }
                let got: BTreeMap<&str, usize> = reg.iter().collect();
                let want: BTreeMap<&str, usize> =
                    model.iter().map(|(n, s)| (n.as_str(), s.len())).collect();
                assert_eq!(got, want);
                for (idx, list) in conn_lists.iter().enumerate() {
                    for (name, set) in &model {
                        let id = reg.lookup(name).unwrap();
                        assert_eq!(set.contains(&slab_key(idx)), list.contains(&id));
                    }
                }
            }
        }
        assert!(
            saw_dense > 0 && saw_sparse > 0,
            "both forms exercised: {saw_dense} dense, {saw_sparse} sparse"
        );
    }
}
