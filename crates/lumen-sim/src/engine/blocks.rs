//! The paged KV cache: a fixed pool of blocks with reference counts and vLLM's automatic prefix
//! caching.
//!
//! As in vLLM V1 (`BlockPool`, `FreeKVCacheBlockQueue`): a full block is named by a hash
//! chained over the token ids block by block, so a hash stands for the whole prefix up to and
//! including its block. Cached blocks stay in the pool after their sequences finish, as long as
//! nobody needs the room: unreferenced blocks sit in a free queue in least-recently-used order,
//! and taking a block for new tokens pops the queue's head, dropping whatever prefix it held.
//! A hit on a cached block that is in the free queue takes it out again.

use std::collections::HashMap;

/// Tokens per block (vLLM's default `--block-size`).
pub const BLOCK_SIZE: usize = 16;

const NIL: u32 = u32::MAX;

pub(crate) struct BlockPool {
    refs: Vec<u32>,
    /// The chained hash a full block is cached under, if it is.
    hash: Vec<Option<u64>>,
    cached: HashMap<u64, u32>,
    /// The free queue as a doubly linked list over block ids: O(1) removal from the middle
    /// when a hit revives a free cached block. The head is evicted first.
    prev: Vec<u32>,
    next: Vec<u32>,
    head: u32,
    tail: u32,
    free: usize,
}

impl BlockPool {
    pub(crate) fn new(num_blocks: u32) -> Self {
        let n = num_blocks as usize;
        let mut pool = Self {
            refs: vec![0; n],
            hash: vec![None; n],
            cached: HashMap::new(),
            prev: vec![NIL; n],
            next: vec![NIL; n],
            head: NIL,
            tail: NIL,
            free: 0,
        };
        for b in 0..num_blocks {
            pool.push_back(b);
        }
        pool
    }

    pub(crate) fn total(&self) -> usize {
        self.refs.len()
    }

    /// Blocks that can be handed out: unreferenced, cached or not.
    pub(crate) fn num_free(&self) -> usize {
        self.free
    }

    /// vLLM's `kv_cache_usage_perc`: the share of blocks referenced by a sequence (cached but
    /// unreferenced blocks count as free, as they can be evicted at any time).
    pub(crate) fn usage(&self) -> f64 {
        if self.refs.is_empty() {
            return 0.0;
        }
        1.0 - self.free as f64 / self.refs.len() as f64
    }

    /// The longest run of leading `hashes` that are cached, at most `max_blocks` long.
    pub(crate) fn lookup(&self, hashes: &[u64], max_blocks: usize) -> Vec<u32> {
        hashes
            .iter()
            .take(max_blocks)
            .map_while(|h| self.cached.get(h).copied())
            .collect()
    }

    /// How many of `blocks` are unreferenced, so would leave the free queue when taken.
    pub(crate) fn unreferenced(&self, blocks: &[u32]) -> usize {
        blocks
            .iter()
            .filter(|&&b| self.refs[b as usize] == 0)
            .count()
    }

    /// Takes a reference on cached blocks found by [`BlockPool::lookup`].
    pub(crate) fn touch(&mut self, blocks: &[u32]) {
        for &b in blocks {
            if self.refs[b as usize] == 0 {
                self.unlink(b);
            }
            self.refs[b as usize] += 1;
        }
    }

    /// `n` fresh blocks from the head of the free queue, evicting the prefixes they held;
    /// `None` (and nothing taken) when fewer than `n` are free.
    pub(crate) fn allocate(&mut self, n: usize) -> Option<Vec<u32>> {
        if n > self.free {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let b = self.head;
            self.unlink(b);
            if let Some(h) = self.hash[b as usize].take() {
                self.cached.remove(&h);
            }
            self.refs[b as usize] = 1;
            out.push(b);
        }
        Some(out)
    }

    /// Registers a full block under its chained hash. `false` when another block already holds
    /// that prefix (two sequences computed it at once); this one then stays uncached.
    pub(crate) fn cache(&mut self, block: u32, hash: u64) -> bool {
        if self.cached.contains_key(&hash) || self.hash[block as usize].is_some() {
            return false;
        }
        self.cached.insert(hash, block);
        self.hash[block as usize] = Some(hash);
        true
    }

    /// Drops one reference on each of a sequence's blocks, last block first, as vLLM does: a
    /// block nobody references goes to the free queue's tail if it is cached (evicted last, so
    /// a sequence's leading blocks, the ones most likely shared, outlive its tail) and to the
    /// head if it is not (reused first).
    pub(crate) fn free(&mut self, blocks: &[u32]) {
        for &b in blocks.iter().rev() {
            let r = &mut self.refs[b as usize];
            *r = r.saturating_sub(1);
            if *r == 0 {
                if self.hash[b as usize].is_some() {
                    self.push_back(b);
                } else {
                    self.push_front(b);
                }
            }
        }
    }

    fn push_back(&mut self, b: u32) {
        self.prev[b as usize] = self.tail;
        self.next[b as usize] = NIL;
        if self.tail == NIL {
            self.head = b;
        } else {
            self.next[self.tail as usize] = b;
        }
        self.tail = b;
        self.free += 1;
    }

    fn push_front(&mut self, b: u32) {
        self.next[b as usize] = self.head;
        self.prev[b as usize] = NIL;
        if self.head == NIL {
            self.tail = b;
        } else {
            self.prev[self.head as usize] = b;
        }
        self.head = b;
        self.free += 1;
    }

    fn unlink(&mut self, b: u32) {
        let (p, n) = (self.prev[b as usize], self.next[b as usize]);
        if p == NIL {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
        self.prev[b as usize] = NIL;
        self.next[b as usize] = NIL;
        self.free -= 1;
    }
}

/// The hash of a full block: the previous block's hash chained with this block's token ids
/// (FNV-1a over the ids, then a splitmix finaliser), so equal hashes mean equal prefixes.
pub(crate) fn chain(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = parent ^ 0xcbf2_9ce4_8422_2325;
    for &t in tokens {
        h ^= u64::from(t);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}
