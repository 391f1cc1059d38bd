//! The key/value cache of one sequence: per layer, the keys and values of
//! every position so far, one row per position, stored as IEEE f16 (half
//! the memory of f32, and the precision llama.cpp keeps by default).

use super::config::ModelConfig;

/// Keys and values of one sequence for every layer.
#[derive(Debug, Clone)]
pub struct KvCache {
    kv_dim: usize,
    capacity: usize,
    /// Number of positions filled (the next position to write).
    len: usize,
    keys: Vec<Vec<u16>>,
    values: Vec<Vec<u16>>,
}

impl KvCache {
    /// An empty cache for `config`, with room for `capacity` positions.
    pub fn new(config: &ModelConfig, capacity: usize) -> Self {
        let kv_dim = config.kv_dim();
        KvCache {
            kv_dim,
            capacity,
            len: 0,
            keys: (0..config.n_layers)
                .map(|_| vec![0; capacity * kv_dim])
                .collect(),
            values: (0..config.n_layers)
                .map(|_| vec![0; capacity * kv_dim])
                .collect(),
        }
    }

    /// Grows the cache to hold at least `capacity` positions, keeping what it holds.
    pub fn reserve(&mut self, capacity: usize) {
        if capacity <= self.capacity {
            return;
        }
        for l in self.keys.iter_mut().chain(self.values.iter_mut()) {
            l.resize(capacity * self.kv_dim, 0);
        }
        self.capacity = capacity;
    }

    /// Bytes a cache of `capacity` positions takes for `config`.
    pub fn bytes_for(config: &ModelConfig, capacity: usize) -> u64 {
        (capacity as u64) * config.kv_bytes_per_token() as u64
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets positions from `len` on (e.g. to start over, or to drop a
    /// rejected continuation).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Marks positions up to `len` as filled after a forward pass wrote them.
    pub(crate) fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.capacity);
        self.len = len;
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        2 * self.keys.len() * self.capacity * self.kv_dim * std::mem::size_of::<u16>()
    }

    /// Keys and values of a layer as f16 bit patterns.
    pub(crate) fn layer(&self, layer: usize) -> (&[u16], &[u16]) {
        (&self.keys[layer], &self.values[layer])
    }

    pub(crate) fn layer_mut(&mut self, layer: usize) -> (&mut [u16], &mut [u16]) {
        (&mut self.keys[layer], &mut self.values[layer])
    }

    /// Copies the first `len` positions of `other` (a shared prompt prefix).
    pub fn copy_prefix_from(&mut self, other: &KvCache, len: usize) {
        let len = len.min(other.len).min(self.capacity);
        let n = len * self.kv_dim;
        for l in 0..self.keys.len() {
            self.keys[l][..n].copy_from_slice(&other.keys[l][..n]);
            self.values[l][..n].copy_from_slice(&other.values[l][..n]);
        }
        self.len = len;
    }
}
