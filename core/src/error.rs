//! The crate's error type: one enum over the modules' own errors.

use crate::gguf::GgufError;
use crate::manifest::ManifestError;
use crate::model::ModelError;
use crate::sampler::SamplerError;
use crate::tokenizer::TokenizerError;
use crate::trace::{RecordError, ReportError, StoreError};

/// Anything that can go wrong in edgeloop-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("empty prompt: give some text or at least one message")]
    EmptyPrompt,
    #[error("prompt of {prompt} tokens plus max_tokens {max_tokens} exceeds the context of {context} tokens")]
    ContextOverflow {
        prompt: usize,
        max_tokens: usize,
        context: usize,
    },
    #[error("max_tokens must be at least 1")]
    ZeroMaxTokens,
    #[error("memory budget of {budget} bytes is too small: the model needs {model} bytes and the KV cache for {positions} positions {kv} bytes")]
    MemoryBudget {
        budget: u64,
        model: u64,
        kv: u64,
        positions: usize,
    },
    #[error("context size {requested} is out of range (1 to the model's {max})")]
    ContextSize { requested: usize, max: usize },
    #[error("the {backend} backend failed: {message}")]
    Backend {
        backend: &'static str,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
