//! The one error type every exported call returns, and the mapping from
//! edgeloop-core's errors onto it (done here, at the edge, so the foreign
//! languages see a small stable set of cases).

use std::panic::{catch_unwind, AssertUnwindSafe};

use edgeloop_core::trace::{ReportError, StoreError};
use edgeloop_core::Error as CoreError;

/// What went wrong; `reason` says what and where, in words.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum EdgeloopError {
    /// An argument is out of range or malformed (the reason names it).
    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: String },
    /// No model file under that path or name.
    #[error("model not found: {reason}")]
    ModelNotFound { reason: String },
    /// The model file is malformed or unsupported.
    #[error("bad model: {reason}")]
    BadModel { reason: String },
    /// The request does not fit the memory budget or the context.
    #[error("resource limit: {reason}")]
    ResourceLimit { reason: String },
    /// The trace store failed or refused.
    #[error("trace store: {reason}")]
    Store { reason: String },
    /// Reporting traces to the host failed or is switched off.
    #[error("report: {reason}")]
    Report { reason: String },
    /// Not available in this build or on this device.
    #[error("unsupported: {reason}")]
    Unsupported { reason: String },
    /// A bug: a panic inside edgeloop, caught at the boundary.
    #[error("internal error: {reason}")]
    Internal { reason: String },
}

impl EdgeloopError {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        EdgeloopError::InvalidArgument {
            reason: reason.into(),
        }
    }
}

impl From<CoreError> for EdgeloopError {
    fn from(e: CoreError) -> Self {
        let reason = e.to_string();
        match e {
            CoreError::Gguf(_) | CoreError::Model(_) | CoreError::Tokenizer(_) => {
                EdgeloopError::BadModel { reason }
            }
            CoreError::Manifest(_) => EdgeloopError::ModelNotFound { reason },
            CoreError::Store(_) | CoreError::Record(_) => EdgeloopError::Store { reason },
            CoreError::Report(_) => EdgeloopError::Report { reason },
            CoreError::MemoryBudget { .. } | CoreError::ContextOverflow { .. } => {
                EdgeloopError::ResourceLimit { reason }
            }
            CoreError::Sampler(_)
            | CoreError::EmptyPrompt
            | CoreError::ZeroMaxTokens
            | CoreError::ContextSize { .. }
            | CoreError::Invalid(_) => EdgeloopError::InvalidArgument { reason },
            // A device lost or out of memory mid-generation.
            CoreError::Backend { .. } => EdgeloopError::Internal { reason },
        }
    }
}

impl From<StoreError> for EdgeloopError {
    fn from(e: StoreError) -> Self {
        EdgeloopError::Store {
            reason: e.to_string(),
        }
    }
}

impl From<ReportError> for EdgeloopError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Store(s) => s.into(),
            other => EdgeloopError::Report {
                reason: other.to_string(),
            },
        }
    }
}

/// Runs `f`, turning a panic into [`EdgeloopError::Internal`].
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T, EdgeloopError>) -> Result<T, EdgeloopError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            log::error!("panic caught at the FFI boundary: {what}");
            Err(EdgeloopError::Internal { reason: what })
        }
    }
}

/// A count from the foreign side as `usize`, refused when zero or above `max`.
pub(crate) fn count(name: &str, value: u32, max: usize) -> Result<usize, EdgeloopError> {
    let v = value as usize;
    if v == 0 || v > max {
        return Err(EdgeloopError::invalid(format!(
            "{name} = {value} is out of range (1 to {max})"
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_internal_error() {
        let r: Result<(), _> = guard(|| panic!("kernel exploded at row {}", 7));
        match r {
            Err(EdgeloopError::Internal { reason }) => {
                assert_eq!(reason, "kernel exploded at row 7")
            }
            other => panic!("expected Internal, got {other:?}"),
        }
    }

    #[test]
    fn core_errors_map_to_their_case() {
        let e: EdgeloopError = CoreError::ZeroMaxTokens.into();
        assert!(matches!(e, EdgeloopError::InvalidArgument { .. }));
        let e: EdgeloopError = CoreError::MemoryBudget {
            budget: 1,
            model: 2,
            kv: 3,
            positions: 4,
        }
        .into();
        assert!(
            matches!(e, EdgeloopError::ResourceLimit { ref reason } if reason.contains("memory budget"))
        );
    }

    #[test]
    fn counts_outside_their_range_are_refused_by_name() {
        assert_eq!(count("samples", 4, 16).unwrap(), 4);
        let e = count("samples", 0, 16).unwrap_err().to_string();
        assert!(e.contains("samples = 0") && e.contains("1 to 16"), "{e}");
        assert!(count("votes", 17, 16).is_err());
    }

    #[test]
    fn exported_objects_are_thread_safe() {
        fn shareable<T: Send + Sync>() {}
        shareable::<crate::Engine>();
        shareable::<crate::Session>();
        shareable::<crate::Traces>();
    }
}
