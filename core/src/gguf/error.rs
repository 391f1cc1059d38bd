//! Errors of the GGUF reader and writer. Every error names what was wrong and
//! where: the byte offset, the metadata key or the tensor.

use std::path::PathBuf;

/// Why a GGUF file was rejected or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a GGUF file: bad magic {found:02x?} at offset 0 (expected \"GGUF\")")]
    BadMagic { found: Vec<u8> },
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    #[error("file truncated at offset {offset}: {what} needs {needed} bytes, {available} left")]
    Truncated {
        offset: u64,
        what: String,
        needed: u64,
        available: u64,
    },
    #[error("malformed header at offset {offset}: {problem}")]
    Malformed { offset: u64, problem: String },
    #[error("metadata key {key:?}: {problem}")]
    Key { key: String, problem: String },
    #[error("duplicate metadata key {key:?} at offset {offset}")]
    DuplicateKey { key: String, offset: u64 },
    #[error("tensor {name:?}: {problem}")]
    Tensor { name: String, problem: String },
    #[error("duplicate tensor name {name:?} at offset {offset}")]
    DuplicateTensor { name: String, offset: u64 },
    #[error("missing metadata key {0:?}")]
    MissingKey(String),
    #[error("no tensor named {0:?}")]
    MissingTensor(String),
}

impl GgufError {
    pub(crate) fn key(key: &str, problem: impl Into<String>) -> Self {
        GgufError::Key {
            key: key.to_string(),
            problem: problem.into(),
        }
    }

    pub(crate) fn tensor(name: &str, problem: impl Into<String>) -> Self {
        GgufError::Tensor {
            name: name.to_string(),
            problem: problem.into(),
        }
    }
}
