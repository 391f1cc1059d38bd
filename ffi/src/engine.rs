//! [`Engine`]: a model opened for an app, and how it is found and opened.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use edgeloop_core::engine::EngineOptions;
use edgeloop_core::manifest::{self, Published};
use edgeloop_core::trace::ModelInfo as TraceModel;
use edgeloop_core::BackendChoice;

use crate::error::{guard, EdgeloopError};
use crate::session::Session;

/// Where the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Backend {
    /// A hardware GPU when one is usable, else the CPU
    /// ([`ModelInfo::backend_note`] says why).
    Auto,
    /// The CPU kernels.
    Cpu,
    /// A GPU through wgpu (Vulkan on Android, Metal on Apple platforms);
    /// opening fails with `Unsupported` when there is none.
    Gpu,
}

/// How to open a model. Every field has a default.
#[derive(Clone, Debug, Default, uniffi::Record)]
pub struct EngineConfig {
    /// `None` is [`Backend::Auto`].
    #[uniffi(default = None)]
    pub backend: Option<Backend>,
    /// Kernel threads; 0 uses one per core.
    #[uniffi(default = 0)]
    pub threads: u32,
    /// Context size in tokens; 0 uses the smaller of the model's and 4096.
    #[uniffi(default = 0)]
    pub context: u32,
    /// Upper bound on model plus KV cache bytes; requests beyond it are
    /// refused before anything is allocated.
    #[uniffi(default = None)]
    pub memory_budget_bytes: Option<u64>,
    /// Where models opened by name are looked up (default: edgeloop's
    /// model cache, `$EDGELOOP_MODELS_DIR` or `~/.cache/edgeloop/models`).
    #[uniffi(default = None)]
    pub models_dir: Option<String>,
}

/// What was opened.
#[derive(Clone, Debug, uniffi::Record)]
pub struct ModelInfo {
    /// The model's name: the manifest name, or the file name without `.gguf`.
    pub name: String,
    pub path: String,
    /// `llama`, `qwen3` or `gemma3`.
    pub architecture: String,
    /// Where the model runs (`Cpu` or `Gpu`, never `Auto`).
    pub backend: Backend,
    /// What it runs on: the CPU threads, or the GPU adapter.
    pub device: String,
    /// Why `Auto` stayed on the CPU, when it did.
    pub backend_note: Option<String>,
    pub context: u32,
    pub vocab_size: u32,
    pub layers: u32,
    pub file_bytes: u64,
    pub load_millis: u64,
}

/// What the engine's sessions and calls share.
pub(crate) struct Shared {
    pub(crate) core: edgeloop_core::Engine,
    pub(crate) path: PathBuf,
    pub(crate) name: String,
    pub(crate) backend: Backend,
    backend_note: Option<String>,
    /// The file's sha256, computed on first need (trace records name it).
    sha256: OnceLock<String>,
}

impl Shared {
    /// The model as trace records name it.
    pub(crate) fn trace_model(&self) -> Result<TraceModel, EdgeloopError> {
        let sha = match self.sha256.get() {
            Some(s) => s.clone(),
            None => {
                let s = manifest::sha256_file(&self.path).map_err(|e| EdgeloopError::BadModel {
                    reason: format!("hashing {}: {e}", self.path.display()),
                })?;
                self.sha256.get_or_init(|| s).clone()
            }
        };
        Ok(TraceModel {
            name: self.name.clone(),
            sha256: sha,
        })
    }
}

/// An opened model. Thread-safe: sessions on one engine may generate from
/// several threads at once (their kernel work takes turns on the engine's
/// threads).
#[derive(uniffi::Object)]
pub struct Engine {
    pub(crate) shared: Arc<Shared>,
}

#[uniffi::export]
impl Engine {
    /// Opens `model`: a path to a GGUF file, the name of a built-in student
    /// (e.g. `smollm2-135m-instruct`) or of a published one pulled into the
    /// models folder.
    #[uniffi::constructor]
    pub fn open(model: String, config: EngineConfig) -> Result<Arc<Engine>, EdgeloopError> {
        guard(|| {
            let choice = match config.backend.unwrap_or(Backend::Auto) {
                Backend::Auto => BackendChoice::Auto,
                Backend::Cpu => BackendChoice::Cpu,
                Backend::Gpu => BackendChoice::Wgpu,
            };
            let models_dir = config
                .models_dir
                .as_ref()
                .map(PathBuf::from)
                .unwrap_or_else(manifest::cache_dir);
            let (path, name) = locate(&model, &models_dir)?;
            // The GPU search runs while the model loads.
            let probe = edgeloop_gpu::Probe::start(choice);
            let mut core = edgeloop_core::Engine::load(
                &path,
                EngineOptions {
                    threads: config.threads as usize,
                    context: config.context as usize,
                    memory_budget: config.memory_budget_bytes,
                },
            )?;
            let selection = probe
                .select(&mut core)
                .map_err(|e| EdgeloopError::Unsupported {
                    reason: format!("no usable GPU: {e}"),
                })?;
            let backend = match selection.backend {
                "wgpu" => Backend::Gpu,
                _ => Backend::Cpu,
            };
            log::info!(
                "opened {} ({}) on {} ({})",
                name,
                path.display(),
                selection.backend,
                selection.device
            );
            Ok(Arc::new(Engine {
                shared: Arc::new(Shared {
                    core,
                    path,
                    name,
                    backend,
                    backend_note: selection.fallback,
                    sha256: OnceLock::new(),
                }),
            }))
        })
    }

    /// What was opened.
    pub fn info(&self) -> ModelInfo {
        let core = &self.shared.core;
        let config = core.model().config();
        ModelInfo {
            name: self.shared.name.clone(),
            path: self.shared.path.display().to_string(),
            architecture: config.arch.name().to_string(),
            backend: self.shared.backend,
            device: core.backend().device(),
            backend_note: self.shared.backend_note.clone(),
            context: core.context_size() as u32,
            vocab_size: config.vocab_size as u32,
            layers: config.n_layers as u32,
            file_bytes: core.model().gguf().bytes().len() as u64,
            load_millis: core.load_time().as_millis() as u64,
        }
    }

    /// A new conversation, optionally with a system prompt.
    pub fn new_session(&self, system_prompt: Option<String>) -> Arc<Session> {
        Arc::new(Session::new(self.shared.clone(), system_prompt))
    }

    /// The number of tokens `text` encodes to (no special tokens added).
    pub fn count_tokens(&self, text: String) -> Result<u32, EdgeloopError> {
        guard(|| {
            let ids = self
                .shared
                .core
                .tokenizer()
                .encode(&text)
                .map_err(edgeloop_core::Error::from)?;
            Ok(ids.len() as u32)
        })
    }
}

/// Finds the file of `model` (a path, a built-in name or a pulled published
/// name) and the name traces will carry.
fn locate(model: &str, models_dir: &Path) -> Result<(PathBuf, String), EdgeloopError> {
    let not_found = |reason: String| EdgeloopError::ModelNotFound { reason };
    if model.trim().is_empty() {
        return Err(EdgeloopError::invalid(
            "model is empty: give a path or a name",
        ));
    }
    if model.ends_with(".gguf") || model.contains('/') || model.contains('\\') {
        let path = PathBuf::from(model);
        if !path.is_file() {
            return Err(not_found(format!("no file at {}", path.display())));
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| model.to_string());
        return Ok((path, name));
    }
    match manifest::find(model) {
        Ok(m) => {
            let path = m.path_in(models_dir);
            if path.is_file() {
                Ok((path, m.name))
            } else {
                Err(not_found(format!(
                    "{model} is not in {} (fetch it with `edgeloop pull {model}` or ship the file with the app)",
                    models_dir.display()
                )))
            }
        }
        Err(unknown) => {
            let path = manifest::published_dir(models_dir).join(Published::file_name(model));
            if manifest::check_published_name(model).is_ok() && path.is_file() {
                Ok((path, model.to_string()))
            } else {
                Err(not_found(format!(
                    "{unknown}; nor is there a published model {model:?} in {}",
                    manifest::published_dir(models_dir).display()
                )))
            }
        }
    }
}
