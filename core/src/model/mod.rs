//! Transformer models on the CPU: configuration from GGUF metadata, weights
//! borrowed from the memory map, and the forward pass.
//!
//! Each architecture has a file that reads top to bottom (`llama.rs`,
//! `qwen3.rs`, `gemma3.rs`); they share one block (`forward.rs`) and differ
//! only by the flags of [`ModelConfig`].

mod config;
mod forward;
mod gemma3;
mod kv_cache;
mod llama;
pub mod ops;
mod pack_cache;
mod qwen3;
mod weights;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub use config::{Activation, Architecture, ModelConfig, RopeStyle, SUPPORTED_ARCHITECTURES};
pub use forward::{BatchToken, ForwardScratch, MAX_HEAD_DIM};
pub use kv_cache::KvCache;
pub use weights::{LayerWeights, MatrixRef, Weights};

use crate::gguf::{GgufError, GgufFile};
use crate::kernels::{self, PackedRows, ThreadPool};
use crate::quant::{GgmlType, SUPPORTED};
use pack_cache::Wanted;

/// Where the CPU's repacked matrices of the model file at `model` are
/// cached (`MODEL.gguf.packed`). A tool that replaces a model file removes
/// it: the cache would be remade anyway, as it no longer matches.
pub fn packed_cache_path(model: &Path) -> std::path::PathBuf {
    pack_cache::path_for(model)
}

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(GgufError),
    #[error("unsupported architecture {0:?} (supported: llama, qwen3, gemma3)")]
    UnsupportedArchitecture(String),
    #[error(
        "tensor {name:?} has type {dtype}, which edgeloop cannot compute with (supported: {})",
        supported_types()
    )]
    UnsupportedType { name: String, dtype: GgmlType },
    #[error("missing tensor {0:?}")]
    MissingTensor(String),
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?} from the model's hyper-parameters")]
    TensorShape {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("invalid model configuration: {0}")]
    Config(String),
    #[error("token id {token} is outside the vocabulary of {vocab_size} tokens")]
    TokenOutOfRange { token: u32, vocab_size: usize },
    #[error("position {pos} is beyond the context of {capacity} positions")]
    ContextFull { pos: usize, capacity: usize },
    #[error("sequence {seq}: position {pos} leaves a gap after the {cached} cached positions")]
    PositionGap {
        seq: usize,
        pos: usize,
        cached: usize,
    },
    #[error("no KV cache for sequence {0}")]
    NoSuchSequence(usize),
}

fn supported_types() -> String {
    SUPPORTED
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A loaded model: the mapped file, its configuration and weight locations.
pub struct Model {
    file: Arc<GgufFile>,
    config: ModelConfig,
    weights: Weights,
    /// Repacked copies of the matrices the CPU kernels read faster that way
    /// ([`PackedRows`]), by the file offset of their bytes; made or mapped
    /// from the cache beside the model on the first CPU forward pass, so a
    /// model run on the GPU never holds them.
    packed: OnceLock<HashMap<usize, PackedRows>>,
    rope_global: Vec<f32>,
    rope_local: Vec<f32>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .finish()
    }
}

impl Model {
    /// Maps a GGUF file and loads the model it holds.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        Self::from_gguf(Arc::new(GgufFile::open(path)?))
    }

    /// Loads the model held by an open GGUF file.
    pub fn from_gguf(file: Arc<GgufFile>) -> Result<Self, ModelError> {
        let arch = Architecture::from_name(file.architecture()?)?;
        let config = match arch {
            Architecture::Llama => llama::config(file.metadata())?,
            Architecture::Qwen3 => qwen3::config(file.metadata())?,
            Architecture::Gemma3 => gemma3::config(file.metadata())?,
        };
        if config.head_dim > MAX_HEAD_DIM {
            return Err(ModelError::Config(format!(
                "head dimension {} is above the supported {MAX_HEAD_DIM}",
                config.head_dim
            )));
        }
        let weights = Weights::load(&file, &config)?;
        let rope_global = ops::rope_inv_freq(config.rope_dims, config.rope_base, config.rope_scale);
        let rope_local = ops::rope_inv_freq(config.rope_dims, config.rope_base_local, 1.0);
        Ok(Model {
            file,
            config,
            weights,
            packed: OnceLock::new(),
            rope_global,
            rope_local,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The weights' locations and shapes.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The underlying GGUF file (metadata, tokenizer, template).
    pub fn gguf(&self) -> &Arc<GgufFile> {
        &self.file
    }

    /// A KV cache for one sequence of up to `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(&self.config, capacity)
    }

    /// Runs a batch of tokens (see [`BatchToken`]) and writes the logits of
    /// the batch rows listed in `logit_rows` to `logits` (row-major,
    /// `vocab_size` per row).
    pub fn forward(
        &self,
        pool: &ThreadPool,
        batch: &[BatchToken],
        caches: &mut [KvCache],
        logit_rows: &[usize],
        logits: &mut Vec<f32>,
        scratch: &mut ForwardScratch,
    ) -> Result<(), ModelError> {
        let bytes = self.file_bytes();
        forward::Forward {
            config: &self.config,
            weights: &self.weights,
            bytes,
            packed: self.packed.get_or_init(|| self.pack()),
            rope_global: &self.rope_global,
            rope_local: &self.rope_local,
            pool,
        }
        .run(batch, caches, logit_rows, logits, scratch)
    }

    fn file_bytes(&self) -> &[u8] {
        self.file.bytes()
    }

    /// [`PackedRows`] of every matrix product's weights that has them, when
    /// this CPU's kernels read them: mapped from the cache beside the model
    /// file when it holds them (see [`pack_cache`]), else made and cached.
    fn pack(&self) -> HashMap<usize, PackedRows> {
        if !kernels::packed_rows_used() {
            return HashMap::new();
        }
        let w = &self.weights;
        let mut wanted: Vec<Wanted> = w
            .layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down])
            .chain([&w.output])
            .filter(|m| kernels::packed_len(m.dtype, m.rows, m.cols).is_some())
            .map(|m| Wanted {
                offset: m.bytes.start,
                dtype: m.dtype,
                rows: m.rows,
                cols: m.cols,
            })
            .collect();
        wanted.sort_by_key(|m| m.offset);
        wanted.dedup_by_key(|m| m.offset);
        if wanted.is_empty() {
            return HashMap::new();
        }
        let cache = self
            .file
            .path()
            .and_then(|p| Some((pack_cache::path_for(p), pack_cache::Source::of(p)?)));
        if let Some((path, source)) = &cache {
            if let Some(packed) = pack_cache::load(path, *source, &wanted) {
                return packed;
            }
        }
        let packed = self.pack_in_memory(&wanted);
        if let Some((path, source)) = &cache {
            if let Err(e) = pack_cache::store(path, *source, &wanted, &packed) {
                log::debug!("could not cache packed weights at {}: {e}", path.display());
            }
        }
        packed
    }

    /// Packs `wanted` from the mapped file. Packing is a copy into fresh
    /// pages, whose faults cost as much as the copy, so it runs on every
    /// core.
    fn pack_in_memory(&self, wanted: &[Wanted]) -> HashMap<usize, PackedRows> {
        let bytes = self.file_bytes();
        let next = AtomicUsize::new(0);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let packed = Mutex::new(HashMap::new());
        let work = || {
            while let Some(m) = wanted.get(next.fetch_add(1, Ordering::Relaxed)) {
                let len = kernels::packed_len(m.dtype, m.rows, m.cols).unwrap_or(0);
                let data = bytes.get(m.offset..m.offset + len).unwrap_or_default();
                if let Some(p) = PackedRows::new(m.dtype, data, m.rows, m.cols) {
                    packed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(m.offset, p);
                }
            }
        };
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(work);
            }
            work();
        });
        packed.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}
