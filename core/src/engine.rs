//! [`Engine`]: a model file opened for use — weights, tokenizer, chat
//! template and the threads that run them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{Backend, CpuBackend};
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Metadata};
use crate::kernels::ThreadPool;
use crate::model::{KvCache, Model};
use crate::session::Session;
use crate::tokenizer::{
    encode_chat, encode_chat_with_thinking, ChatMessage, ChatTemplate, Tokenizer, TokenizerSpec,
};

/// Context size used when none is asked for (capped by the model's own).
pub const DEFAULT_CONTEXT: usize = 4096;

/// How to open a model.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Threads for the kernels (0 = one per available core).
    pub threads: usize,
    /// Context size in tokens (0 = the smaller of the model's and 4096).
    pub context: usize,
    /// Upper bound on model bytes plus KV cache bytes; requests beyond it
    /// are refused before anything is allocated.
    pub memory_budget: Option<u64>,
}

/// What to generate from.
#[derive(Clone, Debug)]
pub enum Prompt {
    /// Plain text completion (bos prepended when the model asks for it).
    Text(String),
    /// A conversation rendered with the model's chat template, ending with
    /// the assistant's turn.
    Chat(Vec<ChatMessage>),
}

/// An opened model, ready to create [`Session`]s.
pub struct Engine {
    model: Arc<Model>,
    backend: Box<dyn Backend>,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    pool: Arc<ThreadPool>,
    context: usize,
    memory_budget: Option<u64>,
    load_time: Duration,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.model)
            .field("backend", &self.backend.name())
            .field("context", &self.context)
            .finish()
    }
}

impl Engine {
    /// Opens a GGUF model file.
    pub fn load(path: impl AsRef<Path>, options: EngineOptions) -> Result<Self> {
        let start = Instant::now();
        let path = path.as_ref();
        let file = Arc::new(GgufFile::open(path)?);
        let opened = start.elapsed();
        let model = Arc::new(Model::from_gguf(file.clone())?);
        let modelled = start.elapsed();
        let spec = tokenizer_spec(file.metadata())?;
        let tokenizer = Tokenizer::from_spec(&spec)?;
        let tokenized = start.elapsed();
        if tokenizer.vocab_size() > model.config().vocab_size {
            return Err(Error::Invalid(format!(
                "the tokenizer has {} tokens but the model's embedding only {}",
                tokenizer.vocab_size(),
                model.config().vocab_size
            )));
        }
        let template = ChatTemplate::for_tokenizer(&tokenizer)?;
        let max = model.config().context_length;
        let context = match options.context {
            0 => max.min(DEFAULT_CONTEXT),
            c if c <= max => c,
            c => return Err(Error::ContextSize { requested: c, max }),
        };
        let threads = match options.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        };
        let pool = Arc::new(ThreadPool::new(threads));
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        log::debug!(
            "loaded {} in {:.1} ms: file {:.1}, model {:.1}, tokenizer {:.1}, template and threads {:.1}",
            path.display(),
            ms(start.elapsed()),
            ms(opened),
            ms(modelled - opened),
            ms(tokenized - modelled),
            ms(start.elapsed() - tokenized)
        );
        Ok(Engine {
            backend: Box::new(CpuBackend::new(model.clone(), pool.clone())),
            model,
            tokenizer,
            template,
            pool,
            context,
            memory_budget: options.memory_budget,
            load_time: start.elapsed(),
        })
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// What runs the forward pass (the CPU unless replaced with
    /// [`Engine::set_backend`]).
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Runs this engine's sessions on `backend` (e.g. a GPU backend built
    /// from [`Engine::model`]); sessions opened afterwards use it.
    pub fn set_backend(&mut self, backend: Box<dyn Backend>) {
        self.backend = backend;
    }

    /// The tokenizer built from the file's metadata.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template (the file's own, or the built-in fallback).
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The thread pool running the CPU kernels.
    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// Context size in tokens.
    pub fn context_size(&self) -> usize {
        self.context
    }

    /// Time `load` took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// A new session (empty KV cache; grows as needed).
    pub fn session(&self) -> Session<'_> {
        Session::new(self)
    }

    /// Token ids of a prompt. User text is always plain text: control
    /// tokens written in it are never interpreted.
    pub fn encode(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let ids = match prompt {
            Prompt::Text(text) => {
                if text.is_empty() {
                    return Err(Error::EmptyPrompt);
                }
                self.tokenizer
                    .encode_prompt(text, self.tokenizer.add_bos())?
            }
            Prompt::Chat(messages) => {
                if messages.is_empty() {
                    return Err(Error::EmptyPrompt);
                }
                encode_chat(&self.tokenizer, &self.template, messages, true)?
            }
        };
        if ids.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        Ok(ids)
    }

    /// Token ids of a conversation ending with the assistant's turn, with
    /// thinking switched on or off for templates that support it (Qwen3's
    /// `enable_thinking`); `None` keeps the template's default.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        thinking: Option<bool>,
    ) -> Result<Vec<u32>> {
        if messages.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        let ids =
            encode_chat_with_thinking(&self.tokenizer, &self.template, messages, true, thinking)?;
        if ids.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        Ok(ids)
    }

    /// Whether the model writes its reasoning in `<think>...</think>` blocks
    /// (its vocabulary has both tags).
    pub fn thinks_in_tags(&self) -> bool {
        self.tokenizer.token_id("<think>").is_some()
            && self.tokenizer.token_id("</think>").is_some()
    }

    /// Refuses a request whose model plus KV cache exceeds the memory budget.
    pub(crate) fn check_memory(&self, positions: usize) -> Result<()> {
        if let Some(budget) = self.memory_budget {
            let model = self.model.gguf().file_len();
            let kv = KvCache::bytes_for(self.model.config(), positions);
            if model.saturating_add(kv) > budget {
                return Err(Error::MemoryBudget {
                    budget,
                    model,
                    kv,
                    positions,
                });
            }
        }
        Ok(())
    }
}

/// The tokenizer description held in GGUF metadata.
pub fn tokenizer_spec(meta: &Metadata) -> Result<TokenizerSpec> {
    let id = |key: &str| -> Result<Option<u32>> {
        match meta.opt_u64(key)? {
            None => Ok(None),
            Some(v) => u32::try_from(v).map(Some).map_err(|_| {
                Error::Invalid(format!(
                    "metadata key {key:?}: token id {v} is out of range"
                ))
            }),
        }
    };
    let token_types = meta
        .opt_ints("tokenizer.ggml.token_type")?
        .map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, t)| {
                    i32::try_from(t).map_err(|_| {
                        Error::Invalid(format!("metadata key \"tokenizer.ggml.token_type\": element {i} = {t} is out of range"))
                    })
                })
                .collect::<Result<Vec<i32>>>()
        })
        .transpose()?;
    Ok(TokenizerSpec {
        model: meta.str("tokenizer.ggml.model")?.to_string(),
        pre: meta.opt_str("tokenizer.ggml.pre")?.map(str::to_string),
        tokens: meta
            .opt_strings("tokenizer.ggml.tokens")?
            .ok_or_else(|| crate::gguf::GgufError::MissingKey("tokenizer.ggml.tokens".into()))?
            .clone(),
        scores: meta.opt_f32s("tokenizer.ggml.scores")?.map(<[f32]>::to_vec),
        token_types,
        merges: meta.opt_strings("tokenizer.ggml.merges")?.cloned(),
        bos_id: id("tokenizer.ggml.bos_token_id")?,
        eos_id: id("tokenizer.ggml.eos_token_id")?,
        unk_id: id("tokenizer.ggml.unknown_token_id")?,
        pad_id: id("tokenizer.ggml.padding_token_id")?,
        eot_id: id("tokenizer.ggml.eot_token_id")?,
        add_bos: meta
            .opt_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(false),
        add_eos: meta
            .opt_bool("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false),
        // As llama.cpp: SentencePiece-style vocabularies prefix a space unless told otherwise.
        add_space_prefix: meta
            .opt_bool("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(meta.opt_str("tokenizer.ggml.model")? == Some("llama")),
        chat_template: meta.opt_str("tokenizer.chat_template")?.map(str::to_string),
    })
}
