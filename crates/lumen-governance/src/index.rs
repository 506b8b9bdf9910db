//! An approximate, memory-bounded index of which backend holds which prompt prefix, learned
//! from the traffic this router placed (no engine reports its cache contents over HTTP).
//!
//! One entry per block boundary of a prompt (see `prefix.rs`): its chain hash, the backends it
//! was sent to (a bit each), when it was last used, and — for shared-section entries — how many
//! different conversations followed it. Entries live in one slab threaded on an LRU list, so
//! memory is `capacity` entries whatever the traffic (about 80 bytes each, map included), the
//! oldest entry is reused when full, and an entry unused for the TTL counts as absent (the
//! engine has most likely evicted it by then). Touching a prompt touches all its entries at
//! once, and a shorter prefix is touched at least as often as a longer one, so what survives
//! eviction stays prefix-closed: a backend that holds block N holds the blocks before it.
//!
//! The map's hasher mixes keys with a per-process secret: block hashes are computed the same in
//! every replica (they must agree), so a client could otherwise pick keys that collide.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use crate::hash;
use crate::prefix::PromptKey;

const NIL: u32 = u32::MAX;

/// Tracks up to this many backends per index (bits of a `u64`); others are never matched.
pub const MAX_TRACKED: usize = 64;

#[derive(Clone, Copy)]
struct Node {
    key: u64,
    /// Backends that were sent a prompt through this prefix.
    mask: u64,
    prev: u32,
    next: u32,
    /// Seconds (of the router's clock) of the last use.
    seen: u32,
    /// Shared-section entries: fingerprint of the last conversation that followed, and how many
    /// times a different one did (an approximate count of distinct conversations).
    child: u32,
    fanout: u16,
    /// Shared-section entries: a request after it carried a conversation's history.
    history: bool,
}

/// How deep each backend (by bit) matched a prompt, in bytes; 0 for no match.
#[derive(Clone, Copy)]
pub(crate) struct Depths(pub(crate) [u32; MAX_TRACKED]);

impl Depths {
    pub(crate) fn of(&self, bit: Option<u8>) -> u32 {
        bit.map_or(0, |b| self.0[usize::from(b)])
    }
}

/// The index of one model's pool.
pub(crate) struct PrefixIndex {
    map: HashMap<u64, u32, Keyed>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    capacity: usize,
    ttl_s: u32,
    /// Share of recent prompts this router already knew (an exponential average): how likely
    /// a prompt placed now is to come back (see [`PrefixIndex::reuse`]).
    reuse: f64,
}

/// Weight of one decision in [`PrefixIndex::reuse`]: about the last hundred prompts count.
const REUSE_WEIGHT: f64 = 1.0 / 128.0;

impl PrefixIndex {
    pub(crate) fn new(capacity: usize, ttl_ms: u64) -> Self {
        let secret = getrandom::u64().unwrap_or(0x5EED_1DE5_0000_0001);
        Self {
            map: HashMap::with_hasher(Keyed(secret)),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity: capacity.max(1),
            ttl_s: u32::try_from(ttl_ms.div_ceil(1000))
                .unwrap_or(u32::MAX)
                .max(1),
            reuse: 1.0,
        }
    }

    /// How likely a prompt nobody holds yet is to be followed by another with the same key:
    /// the share of recent prompts that found theirs already placed. Starts at 1 (assume
    /// reuse until the traffic says otherwise) and falls towards 0 for traffic of unique
    /// prompts, where keeping to the hash's choice buys nothing and costs the balance.
    pub(crate) fn reuse(&self) -> f64 {
        self.reuse
    }

    /// Counts one decision's prompt as known or not.
    pub(crate) fn observe_reuse(&mut self, known: bool) {
        let x = if known { 1.0 } else { 0.0 };
        self.reuse += (x - self.reuse) * REUSE_WEIGHT;
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    fn live(&self, n: &Node, now_s: u32) -> bool {
        now_s.saturating_sub(n.seen) < self.ttl_s
    }

    fn get(&self, key: u64, now_s: u32) -> Option<&Node> {
        let i = *self.map.get(&key)?;
        let n = &self.nodes[i as usize];
        self.live(n, now_s).then_some(n)
    }

    /// How far each backend in `cands` (a bit mask) matches the prompt: the end of the last
    /// block that backend holds, walking from the start while any candidate still matches.
    pub(crate) fn depths(&self, key: &PromptKey, cands: u64, now_ms: u64) -> Depths {
        let now_s = secs(now_ms);
        let mut out = Depths([0; MAX_TRACKED]);
        let mut alive = cands;
        let mut depth = 0;
        for &(pos, h) in &key.blocks {
            let present = self.get(h, now_s).map_or(0, |n| n.mask) & alive;
            let dropped = alive & !present;
            set(&mut out, dropped, depth);
            alive = present;
            if alive == 0 {
                return out;
            }
            depth = pos;
        }
        set(&mut out, alive, depth);
        out
    }

    /// Whether a shared section is common to many conversations: then it is cheap to cache on
    /// every engine, and no reason to send every conversation that uses it to one backend.
    /// That is so once two different conversations with history (later turns, where most of
    /// a chat's bytes are) followed it; or `after` different prompts without history — a
    /// document in the system prompt asked question after question is better kept on the
    /// engine that holds it, up to its load.
    pub(crate) fn is_shared(&self, section: u64, after: u16, now_ms: u64) -> bool {
        self.get(section, secs(now_ms))
            .is_some_and(|n| (n.history && n.fanout >= 1) || n.fanout >= after)
    }

    /// Clears a backend's bit everywhere: it now names another backend.
    pub(crate) fn forget(&mut self, bit: u8) {
        let keep = !(1u64 << bit);
        for n in &mut self.nodes {
            n.mask &= keep;
        }
    }

    /// Learns that the prompt was sent to the backend with `bit`.
    pub(crate) fn record(&mut self, key: &PromptKey, bit: u8, now_ms: u64) {
        let now_s = secs(now_ms);
        let mask = 1u64 << bit;
        // Deepest first, so the shortest prefix ends up the most recent and is evicted last.
        for &(_, h) in key.blocks.iter().rev() {
            let i = self.touch(h, now_s);
            self.nodes[i as usize].mask |= mask;
        }
        if let Some((section, _)) = key.section {
            let fp = (key.conversation >> 32) as u32 | 1;
            let i = self.touch(section, now_s);
            let n = &mut self.nodes[i as usize];
            n.history |= key.history;
            if n.child != fp {
                if n.child != 0 {
                    n.fanout = n.fanout.saturating_add(1);
                }
                n.child = fp;
            }
        }
    }

    /// The entry for `key`, moved to the front of the LRU list; created (reusing the oldest
    /// entry when full) when absent. An expired entry starts over.
    fn touch(&mut self, key: u64, now_s: u32) -> u32 {
        if let Some(&i) = self.map.get(&key) {
            let expired = !self.live(&self.nodes[i as usize], now_s);
            let n = &mut self.nodes[i as usize];
            if expired {
                n.mask = 0;
                n.child = 0;
                n.fanout = 0;
                n.history = false;
            }
            n.seen = now_s;
            self.unlink(i);
            self.push_front(i);
            return i;
        }
        let node = Node {
            key,
            mask: 0,
            prev: NIL,
            next: NIL,
            seen: now_s,
            child: 0,
            fanout: 0,
            history: false,
        };
        let i = if let Some(i) = self.free.pop() {
            self.nodes[i as usize] = node;
            i
        } else if self.nodes.len() < self.capacity {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        } else {
            let i = self.tail;
            self.unlink(i);
            self.map.remove(&self.nodes[i as usize].key);
            self.nodes[i as usize] = node;
            i
        };
        self.map.insert(key, i);
        self.push_front(i);
        self.expire_tail(now_s);
        i
    }

    /// Drops entries past their TTL from the old end, so memory follows live traffic.
    fn expire_tail(&mut self, now_s: u32) {
        for _ in 0..2 {
            let t = self.tail;
            if t == NIL || self.live(&self.nodes[t as usize], now_s) {
                return;
            }
            self.unlink(t);
            self.map.remove(&self.nodes[t as usize].key);
            self.free.push(t);
        }
    }

    fn unlink(&mut self, i: u32) {
        let Node { prev, next, .. } = self.nodes[i as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
        let n = &mut self.nodes[i as usize];
        n.prev = NIL;
        n.next = NIL;
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let n = &mut self.nodes[i as usize];
            n.prev = NIL;
            n.next = old;
        }
        if old != NIL {
            self.nodes[old as usize].prev = i;
        } else {
            self.tail = i;
        }
        self.head = i;
    }
}

fn set(out: &mut Depths, mut bits: u64, depth: u32) {
    while bits != 0 {
        let b = bits.trailing_zeros() as usize;
        out.0[b] = depth;
        bits &= bits - 1;
    }
}

fn secs(now_ms: u64) -> u32 {
    u32::try_from(now_ms / 1000).unwrap_or(u32::MAX)
}

/// Hashes an already well-mixed `u64` key with a secret, in one multiply-mix.
#[derive(Clone, Copy)]
struct Keyed(u64);

impl BuildHasher for Keyed {
    type Hasher = KeyedHasher;
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher(self.0)
    }
}

struct KeyedHasher(u64);

impl Hasher for KeyedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = hash::mix(self.0 ^ u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = hash::mix(self.0 ^ n);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests;
