//! The boundary between a [`Session`](crate::Session) and what runs the
//! model's forward pass.
//!
//! A [`Backend`] belongs to an [`Engine`](crate::Engine) and is shared by
//! its sessions; each session gets its own [`SequenceState`]: the key/value
//! caches of its sequences, numbered slots, and the scratch its forward
//! passes reuse. The session code speaks only to these two traits, so it
//! does not know whether the CPU ([`CpuBackend`], this crate's kernels) or a
//! GPU (the `edgeloop-gpu` crate's wgpu backend) runs it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::kernels::ThreadPool;
use crate::model::{BatchToken, ForwardScratch, KvCache, Model};

/// Which backend a user asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendChoice {
    /// A hardware GPU when one is usable, else the CPU (saying why).
    #[default]
    Auto,
    /// The CPU kernels.
    Cpu,
    /// The wgpu GPU backend; an error when no GPU is usable.
    Wgpu,
}

impl BackendChoice {
    /// Every choice, as the names [`FromStr`] takes.
    pub const NAMES: [&'static str; 3] = ["auto", "cpu", "wgpu"];

    /// The name [`FromStr`] takes.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cpu => "cpu",
            BackendChoice::Wgpu => "wgpu",
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "cpu" => Ok(BackendChoice::Cpu),
            "wgpu" | "gpu" => Ok(BackendChoice::Wgpu),
            other => Err(Error::Invalid(format!(
                "unknown backend {other:?} (expected one of: {})",
                Self::NAMES.join(", ")
            ))),
        }
    }
}

/// What runs a model's forward pass for the sessions of an engine.
pub trait Backend: Send + Sync {
    /// Short name: `"cpu"` or `"wgpu"`.
    fn name(&self) -> &'static str;

    /// What it runs on, for logs and statistics (threads, adapter).
    fn device(&self) -> String;

    /// State for one new session: no sequence cached yet.
    fn new_state(&self) -> Box<dyn SequenceState + '_>;
}

/// One session's sequences on a backend: a key/value cache per slot (slot
/// `i` is the sequence that [`BatchToken::seq`] `== i` names) and the
/// scratch reused across forward passes.
pub trait SequenceState: Send {
    /// Runs `batch` (tokens of one or more slots, each at the position
    /// after the ones its slot holds, or overwriting from an earlier one),
    /// storing their keys and values, and writes the logits of the batch
    /// rows listed in `logit_rows` to `logits` (`vocab_size` per row).
    fn forward(
        &mut self,
        batch: &[BatchToken],
        logit_rows: &[usize],
        logits: &mut Vec<f32>,
    ) -> Result<()>;

    /// Positions cached in `slot` (0 for a slot never used).
    fn len(&self, slot: usize) -> usize;

    /// Makes room for `capacity` positions in `slot` (creating it), keeping
    /// what it holds.
    fn reserve(&mut self, slot: usize, capacity: usize) -> Result<()>;

    /// Forgets the positions of `slot` from `len` on.
    fn truncate(&mut self, slot: usize, len: usize);

    /// Makes `to` a copy of the first `len` positions of `from`, with room
    /// for `capacity` positions.
    fn fork(&mut self, from: usize, to: usize, len: usize, capacity: usize) -> Result<()>;

    /// Frees the memory of `slot`.
    fn release(&mut self, slot: usize);

    /// Bytes held by all slots' caches.
    fn bytes(&self) -> usize;
}

/// The CPU backend: the model's own forward pass on a thread pool, with
/// [`KvCache`]s in host memory.
pub struct CpuBackend {
    model: Arc<Model>,
    pool: Arc<ThreadPool>,
}

impl CpuBackend {
    /// A backend running `model` on `pool`.
    pub fn new(model: Arc<Model>, pool: Arc<ThreadPool>) -> Self {
        Self { model, pool }
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn device(&self) -> String {
        let n = self.pool.n_threads();
        format!("{n} thread{}", if n == 1 { "" } else { "s" })
    }

    fn new_state(&self) -> Box<dyn SequenceState + '_> {
        Box::new(CpuState {
            backend: self,
            caches: Vec::new(),
            scratch: ForwardScratch::default(),
        })
    }
}

struct CpuState<'b> {
    backend: &'b CpuBackend,
    caches: Vec<KvCache>,
    scratch: ForwardScratch,
}

impl CpuState<'_> {
    fn slot(&mut self, slot: usize) -> &mut KvCache {
        while self.caches.len() <= slot {
            self.caches.push(self.backend.model.new_cache(0));
        }
        &mut self.caches[slot]
    }
}

impl SequenceState for CpuState<'_> {
    fn forward(
        &mut self,
        batch: &[BatchToken],
        logit_rows: &[usize],
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let b = self.backend;
        b.model.forward(
            &b.pool,
            batch,
            &mut self.caches,
            logit_rows,
            logits,
            &mut self.scratch,
        )?;
        Ok(())
    }

    fn len(&self, slot: usize) -> usize {
        self.caches.get(slot).map_or(0, KvCache::len)
    }

    fn reserve(&mut self, slot: usize, capacity: usize) -> Result<()> {
        self.slot(slot).reserve(capacity);
        Ok(())
    }

    fn truncate(&mut self, slot: usize, len: usize) {
        if let Some(c) = self.caches.get_mut(slot) {
            c.truncate(len);
        }
    }

    fn fork(&mut self, from: usize, to: usize, len: usize, capacity: usize) -> Result<()> {
        let mut copy = self.backend.model.new_cache(capacity.max(len));
        if let Some(src) = self.caches.get(from) {
            copy.copy_prefix_from(src, len);
        }
        *self.slot(to) = copy;
        Ok(())
    }

    fn release(&mut self, slot: usize) {
        if let Some(c) = self.caches.get_mut(slot) {
            *c = self.backend.model.new_cache(0);
        }
    }

    fn bytes(&self) -> usize {
        self.caches.iter().map(KvCache::bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print() {
        for name in BackendChoice::NAMES {
            assert_eq!(name.parse::<BackendChoice>().unwrap().as_str(), name);
        }
        assert_eq!("gpu".parse::<BackendChoice>().unwrap(), BackendChoice::Wgpu);
        let err = "cuda".parse::<BackendChoice>().unwrap_err().to_string();
        assert!(
            err.contains("\"cuda\"") && err.contains("auto, cpu, wgpu"),
            "{err}"
        );
    }
}
