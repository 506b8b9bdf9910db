//! Small, stable hashes: the same input maps to the same backend across processes and restarts,
//! which is what affinity needs (std's hasher is randomised per process).

/// FNV-1a, 64-bit.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64 finaliser: mixes a counter or a combined hash into well-spread bits.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Weighted rendezvous (highest-random-weight) score of `node` for `key`: `-w / ln(u)`, with
/// `u` uniform in (0, 1). The highest score wins; removing a node moves only its own keys.
pub(crate) fn rendezvous(key: u64, node: u64, weight: u32) -> f64 {
    let h = mix(key ^ mix(node));
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(weight.max(1)) / u.ln()
}

/// A streaming 64-bit hash over bytes that can be read at any point without ending the stream:
/// prompts are hashed once, in one pass, and the chain hash at each block boundary (and at the
/// end of the shared section) is a snapshot. Four independent lanes of multiply-rotate over
/// 8-byte words, so a long document hashes at memory speed; `finish` mixes the lanes, the
/// unprocessed tail and the length with [`mix`]. Not cryptographic: equal inputs give equal
/// hashes in every process, which is what replicas that must agree need.
#[derive(Clone)]
pub(crate) struct Stream {
    lanes: [u64; 4],
    tail: [u8; 32],
    tail_len: usize,
    len: u64,
}

const LANE_MUL: u64 = 0x9FB2_1C65_1E98_DF25;

impl Stream {
    pub(crate) fn new(seed: u64) -> Self {
        let s = mix(seed);
        Self {
            lanes: [
                s,
                s ^ 0x243F_6A88_85A3_08D3,
                s ^ 0x1319_8A2E_0370_7344,
                s ^ 0xA409_3822_299F_31D0,
            ],
            tail: [0; 32],
            tail_len: 0,
            len: 0,
        }
    }

    fn absorb(lanes: &mut [u64; 4], block: &[u8]) {
        for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            *lane = (*lane ^ u64::from_le_bytes(w))
                .wrapping_mul(LANE_MUL)
                .rotate_left(29);
        }
    }

    pub(crate) fn write(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.tail_len > 0 {
            let take = (32 - self.tail_len).min(bytes.len());
            self.tail[self.tail_len..self.tail_len + take].copy_from_slice(&bytes[..take]);
            self.tail_len += take;
            bytes = &bytes[take..];
            if self.tail_len < 32 {
                return;
            }
            let block = self.tail;
            Self::absorb(&mut self.lanes, &block);
            self.tail_len = 0;
        }
        let mut blocks = bytes.chunks_exact(32);
        for block in &mut blocks {
            Self::absorb(&mut self.lanes, block);
        }
        let rest = blocks.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    /// The hash of everything written so far; the stream goes on.
    pub(crate) fn finish(&self) -> u64 {
        let mut lanes = self.lanes;
        if self.tail_len > 0 {
            let mut block = [0u8; 32];
            block[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            Self::absorb(&mut lanes, &block);
        }
        let mut h = mix(self.len);
        for lane in lanes {
            h = mix(h ^ lane);
        }
        h
    }
}
