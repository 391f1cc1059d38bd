//! The trainer library's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading, training or exporting a student.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Gguf(#[from] edgeloop_core::gguf::GgufError),
    #[error(transparent)]
    Model(#[from] edgeloop_core::model::ModelError),
    #[error(transparent)]
    Core(#[from] edgeloop_core::Error),
    #[error(transparent)]
    Quant(#[from] edgeloop_core::quant::QuantError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A dataset line that is not a chat example the trainer can use.
    #[error("{path}:{line}: {reason}")]
    Dataset {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A checkpoint that does not belong to this student or is incomplete.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// Options out of range, refused before any work.
    #[error("invalid option: {0}")]
    Options(String),
    /// A student the trainer cannot build (architecture or tensor layout).
    #[error("student: {0}")]
    Student(String),
    /// The training loss became NaN or infinite.
    #[error("training diverged at step {step}: loss {loss}")]
    Diverged { step: usize, loss: f32 },
    /// An exported file that does not reproduce the trained weights.
    #[error("export check failed: {0}")]
    ExportCheck(String),
}

/// Result with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}
