//! Invariant: `registry::Registry` under arbitrary subscribe / unsubscribe / remove_connection
//! sequences (including unsubscribing keys that are not members and ids that are stale or were
//! never issued) agrees with a `HashMap<String, BTreeSet<usize>>` model after every operation:
//! return values, `len`, `lookup`, `name`, `members` (ascending, exact size), `subscriber_count`
//! and `iter`. The model records the id each channel got when it was created; the id must stay
//! the same while the channel lives and must not belong to another live channel.
//!
//! Keys range from small and colliding (channels go dense: a bitset) to wide and huge, up to
//! `usize::MAX` (channels stay or go sparse: a sorted vector, plus keys above `u32::MAX` kept
//! apart), so both forms of `Members` and the conversions between them are reached. Membership
//! memory must stay O(members) whatever the keys: `Members::heap_bytes() <= 160 * len + 64`.

#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arbitrary::Arbitrary;
use huddle::registry::{ChannelId, Registry};
use libfuzzer_sys::fuzz_target;

const NAMES: usize = 12;

#[derive(Arbitrary, Debug)]
enum Op {
    Subscribe {
        name: u8,
        key: Key,
    },
    /// Unsubscribe `key` from the channel the model knows as `name` (if live), else from a raw id.
    Unsubscribe {
        name: u8,
        key: Key,
    },
    UnsubscribeRaw {
        id: u32,
        key: Key,
    },
    /// Remove `key` from every channel it is in, passing its list (optionally with extra ids).
    RemoveConnection {
        key: Key,
        extra: Vec<u32>,
    },
}

/// Slab keys: mostly small and colliding (dense channels), sometimes large (sparse channels,
/// conversions), sometimes anything at all (beyond `u32::MAX`, a bitset would be unaffordable).
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Key {
    Small(u8),
    Large(u16),
    Wide(u32),
    Huge(u64),
}

impl Key {
    fn get(self) -> usize {
        match self {
            Key::Small(k) => usize::from(k % 70),
            Key::Large(k) => usize::from(k) * 17,
            Key::Wide(k) => k as usize,
            Key::Huge(k) => usize::try_from(k).unwrap_or(usize::MAX),
        }
    }
}

fn name(i: u8) -> String {
    format!("chan:{}", usize::from(i) % NAMES)
}

struct Model {
    channels: HashMap<String, (ChannelId, BTreeSet<usize>)>,
}

impl Model {
    fn by_id(&self, id: ChannelId) -> Option<&String> {
        self.channels
            .iter()
            .find(|(_, (i, _))| *i == id)
            .map(|(n, _)| n)
    }

    /// Removes `key` from the channel with `id`; true if it was a member.
    fn unsubscribe(&mut self, id: ChannelId, key: usize) -> bool {
        let Some(name) = self.by_id(id).cloned() else {
            return false;
        };
        let set = &mut self.channels.get_mut(&name).unwrap().1;
        let was = set.remove(&key);
        if set.is_empty() {
            self.channels.remove(&name);
        }
        was
    }
}

fn check(reg: &Registry, model: &Model, step: usize) {
    assert_eq!(reg.len(), model.channels.len(), "step {step}: len");
    assert_eq!(reg.is_empty(), model.channels.is_empty());
    for i in 0..NAMES as u8 {
        let n = name(i);
        match model.channels.get(&n) {
            None => assert_eq!(reg.lookup(&n), None, "step {step}: {n} should not exist"),
            Some((id, set)) => {
                assert_eq!(reg.lookup(&n), Some(*id), "step {step}: lookup {n}");
                assert_eq!(reg.name(*id), Some(n.as_str()));
                let members = reg.members(*id).expect("live channel has members");
                let it = members.iter_ones();
                assert_eq!(it.len(), set.len(), "step {step}: size_hint of {n}");
                assert!(it.eq(set.iter().copied()), "step {step}: members of {n}");
                assert_eq!(members.len(), set.len());
                assert_eq!(reg.subscriber_count(*id), set.len());
                for k in [0, 1, 63, 64, 65, 69, 128, u32::MAX as usize, usize::MAX] {
                    assert_eq!(members.contains(k), set.contains(&k));
                }
                for &k in set {
                    assert!(members.contains(k), "step {step}: {k} in {n}");
                }
                assert!(
                    members.heap_bytes() <= 160 * set.len() + 64,
                    "step {step}: {} heap bytes for {} members of {n}",
                    members.heap_bytes(),
                    set.len()
                );
            }
        }
    }
    let got: BTreeMap<&str, usize> = reg.iter().collect();
    let want: BTreeMap<&str, usize> = model
        .channels
        .iter()
        .map(|(n, (_, s))| (n.as_str(), s.len()))
        .collect();
    assert_eq!(got, want, "step {step}: iter");
}

fuzz_target!(|ops: Vec<Op>| {
    let mut reg = Registry::new();
    let mut model = Model {
        channels: HashMap::new(),
    };
    for (step, op) in ops.into_iter().take(1_000).enumerate() {
        match op {
            Op::Subscribe { name: n, key } => {
                let (n, key) = (name(n), key.get());
                let (id, added) = reg.subscribe(&n, key);
                match model.channels.get_mut(&n) {
                    Some((known, set)) => {
                        assert_eq!(id, *known, "step {step}: id of live {n} changed");
                        assert_eq!(added, set.insert(key), "step {step}: added");
                    }
                    None => {
                        assert!(added, "step {step}: first member not added");
                        assert!(
                            model.by_id(id).is_none(),
                            "step {step}: {id:?} already live"
                        );
                        model.channels.insert(n, (id, BTreeSet::from([key])));
                    }
                }
            }
            Op::Unsubscribe { name: n, key } => {
                let (n, key) = (name(n), key.get());
                if let Some(&(id, _)) = model.channels.get(&n) {
                    let want = model.unsubscribe(id, key);
                    assert_eq!(reg.unsubscribe(id, key), want, "step {step}: unsubscribe");
                }
            }
            Op::UnsubscribeRaw { id, key } => {
                let (id, key) = (ChannelId(id % 16), key.get());
                let want = model.unsubscribe(id, key);
                assert_eq!(
                    reg.unsubscribe(id, key),
                    want,
                    "step {step}: raw unsubscribe"
                );
            }
            Op::RemoveConnection { key, extra } => {
                let key = key.get();
                let mut list: Vec<ChannelId> = model
                    .channels
                    .values()
                    .filter(|(_, s)| s.contains(&key))
                    .map(|(id, _)| *id)
                    .collect();
                // Extra ids must be ones the key is not in (a connection's own list never holds
                // a channel it left), or stale/unknown ones.
                for e in extra.into_iter().take(8) {
                    let id = ChannelId(e % 32);
                    let member = model
                        .by_id(id)
                        .is_some_and(|n| model.channels[n].1.contains(&key));
                    if !member {
                        list.push(id);
                    }
                }
                reg.remove_connection(key, &list);
                model.channels.retain(|_, (_, s)| {
                    s.remove(&key);
                    !s.is_empty()
                });
            }
        }
        check(&reg, &model, step);
    }
});
