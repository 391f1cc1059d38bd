//! edgeloop-ffi: the API apps use, exported to Kotlin, Swift and Python
//! with UniFFI.
//!
//! One small surface over edgeloop-core:
//! - [`Engine`]: a model opened by path or by manifest name, with a backend
//!   choice and a memory budget; answers questions ([`Engine::solve`]) and
//!   checks answers ([`Engine::verify`]).
//! - [`Session`]: a conversation; generates with a streaming
//!   [`TokenListener`], blocking or async, and can be cancelled from any
//!   thread.
//! - [`Traces`]: the on-device trace store (stats, list, export, report now)
//!   and its reporting settings (consent, host URL, token).
//!
//! Every object is thread-safe. Every call returns [`EdgeloopError`] on
//! failure; a panic inside a call is caught and returned as
//! [`EdgeloopError::Internal`], never unwound into the caller's runtime.

mod blocking;
mod engine;
mod error;
mod session;
mod solve;
mod traces;

pub use engine::{Backend, Engine, EngineConfig, ModelInfo};
pub use error::EdgeloopError;
pub use session::{
    FinishReason, GenerateConfig, GenerationResult, Message, Session, TokenListener,
};
pub use solve::{
    CheckedSolution, SampleResult, SolveConfig, SolveResult, Spend, VerifyConfig, VerifyResult,
    Vote,
};
pub use traces::{ReportResult, ReportSettings, TraceStats, TraceSummary, Traces};

uniffi::setup_scaffolding!("edgeloop");

/// The version of the edgeloop library.
#[uniffi::export]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
