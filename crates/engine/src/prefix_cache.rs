//! The shared query-prefix K/V cache: the per-layer K and V (after QK-norm and
//! RoPE) of a token prefix, kept in an LRU bounded in bytes and keyed by the
//! prefix's token ids. One prefix — the system prompt — can be pinned: never
//! evicted, and the parent of every other prefix that starts with it.

use std::collections::HashMap;
use std::sync::Arc;

use tessera_backend::{Backend, KvRef};

/// K and V of every layer for `len` prefix tokens at positions `0..len`.
pub struct PrefixKv<B: Backend> {
    pub len: usize,
    /// Per layer: K and V, each `[len, n_kv_heads·d]`.
    pub layers: Vec<(B::Buffer, B::Buffer)>,
    pub bytes: usize,
}

impl<B: Backend> PrefixKv<B> {
    pub fn layer(&self, index: usize) -> KvRef<'_, B::Buffer> {
        let (k, v) = &self.layers[index];
        KvRef {
            k,
            v,
            len: self.len,
        }
    }
}

/// Counters for `/metrics` and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: usize,
    pub bytes: usize,
    pub capacity_bytes: usize,
    /// Token rows the forward pass really computed (prefixes and documents).
    pub computed_tokens: u64,
    /// Prefix tokens that were served from K/V computed earlier instead.
    pub reused_tokens: u64,
}

struct Entry<B: Backend> {
    kv: Arc<PrefixKv<B>>,
    last_used: u64,
}

pub(crate) struct PrefixCache<B: Backend> {
    entries: HashMap<Vec<u32>, Entry<B>>,
    pinned: Option<(Vec<u32>, Arc<PrefixKv<B>>)>,
    clock: u64,
    pub(crate) stats: PrefixCacheStats,
}

/// Default byte budget of the cross-request cache.
pub const DEFAULT_PREFIX_CACHE_BYTES: usize = 512 << 20;

impl<B: Backend> PrefixCache<B> {
    pub(crate) fn new(capacity_bytes: usize) -> PrefixCache<B> {
        PrefixCache {
            entries: HashMap::new(),
            pinned: None,
            clock: 0,
            stats: PrefixCacheStats {
                capacity_bytes,
                ..PrefixCacheStats::default()
            },
        }
    }

    pub(crate) fn set_capacity(&mut self, capacity_bytes: usize) {
        self.stats.capacity_bytes = capacity_bytes;
        self.evict_to(capacity_bytes);
    }

    pub(crate) fn pin(&mut self, ids: Vec<u32>, kv: Arc<PrefixKv<B>>) {
        self.pinned = Some((ids, kv));
    }

    /// The pinned prefix, when `ids` starts with it (and is longer).
    pub(crate) fn parent_of(&self, ids: &[u32]) -> Option<Arc<PrefixKv<B>>> {
        match &self.pinned {
            Some((pinned, kv)) if ids.len() > pinned.len() && ids.starts_with(pinned) => {
                Some(Arc::clone(kv))
            }
            _ => None,
        }
    }

    pub(crate) fn get(&mut self, ids: &[u32]) -> Option<Arc<PrefixKv<B>>> {
        if let Some((pinned, kv)) = &self.pinned {
            if pinned.as_slice() == ids {
                self.stats.hits += 1;
                return Some(Arc::clone(kv));
            }
        }
        self.clock += 1;
        match self.entries.get_mut(ids) {
            Some(entry) => {
                entry.last_used = self.clock;
                self.stats.hits += 1;
                Some(Arc::clone(&entry.kv))
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Keeps `kv` if it fits the budget, evicting least recently used entries.
    pub(crate) fn insert(&mut self, ids: Vec<u32>, kv: Arc<PrefixKv<B>>) {
        let capacity = self.stats.capacity_bytes;
        if kv.bytes > capacity {
            return;
        }
        self.evict_to(capacity - kv.bytes);
        self.clock += 1;
        self.stats.bytes += kv.bytes;
        let entry = Entry {
            kv,
            last_used: self.clock,
        };
        if let Some(old) = self.entries.insert(ids, entry) {
            self.stats.bytes -= old.kv.bytes;
        }
        self.stats.entries = self.entries.len();
    }

    fn evict_to(&mut self, max_bytes: usize) {
        while self.stats.bytes > max_bytes {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(ids, _)| ids.clone())
            else {
                break;
            };
            if let Some(entry) = self.entries.remove(&oldest) {
                self.stats.bytes -= entry.kv.bytes;
                self.stats.evictions += 1;
            }
        }
        self.stats.entries = self.entries.len();
    }
}
