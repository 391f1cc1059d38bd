//! edgeloop-core: run small GGUF language models on a device's CPU.
//!
//! The data path, module by module:
//! [`gguf`] (validated, memory-mapped file) → [`model`] (configuration,
//! weights, forward pass over [`kernels`] and [`quant`] formats) →
//! [`tokenizer`] (vocabulary and chat template from the file) →
//! [`session`] (KV cache, prefill, decode, stop conditions) with a
//! [`sampler`]. The session reaches the forward pass through a
//! [`backend::Backend`] (the CPU here; a GPU one in `edgeloop-gpu`).
//! [`Engine`] puts them together; [`manifest`] describes the
//! supported students and how their files are fetched. [`scaling`] solves
//! questions with test-time scaling; [`trace`] keeps the resulting
//! reasoning traces durably on the device.

pub mod backend;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod kernels;
pub mod manifest;
pub mod model;
pub mod quant;
pub mod sampler;
pub mod scaling;
pub mod search;
pub mod session;
pub mod tokenizer;
pub mod trace;
pub mod verify;

pub use backend::{Backend, BackendChoice, CpuBackend, SequenceState};
pub use engine::{Engine, EngineOptions, Prompt};
pub use error::{Error, Result};
pub use sampler::{Sampler, SamplerConfig, TokenChoice};
pub use session::{
    CancelToken, FinishReason, GenerateOptions, Generation, Session, StreamEvent, Timings,
};
