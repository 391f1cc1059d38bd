//! The crate's error type.

/// Errors from the GPU backend. A caller that cannot get a device
/// ([`GpuError::NoAdapter`]) should fall back to the CPU kernels.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No GPU adapter could be found for the requested backends.
    #[error("no GPU adapter: {why}")]
    NoAdapter {
        /// What wgpu said, with the backends it looked at.
        why: String,
    },
    /// The adapter refused to open a device.
    #[error("cannot open a GPU device: {0}")]
    RequestDevice(#[from] wgpu::RequestDeviceError),
    /// A shader, pipeline or dispatch failed wgpu's validation.
    #[error("GPU validation error in {what}: {message}")]
    Validation {
        /// The kernel or operation.
        what: String,
        /// wgpu's message.
        message: String,
    },
    /// Waiting for the device failed (device lost, timeout).
    #[error("waiting for the GPU failed: {0}")]
    Poll(#[from] wgpu::PollError),
    /// Mapping a buffer for reading failed.
    #[error("reading a GPU buffer failed: {0}")]
    Map(#[from] wgpu::BufferAsyncError),
    /// A weight type the GPU kernels do not implement.
    #[error("the GPU kernels do not support tensor type id {0}")]
    Unsupported(u32),
    /// Arguments whose shapes or sizes do not agree.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A single row, or a single buffer that cannot be split, is larger than
    /// the device lets one storage binding be.
    #[error("{what} needs {bytes} bytes in one binding; the device allows {limit}")]
    TooLarge {
        /// What was to be bound.
        what: String,
        /// The bytes it needs.
        bytes: u64,
        /// The device's `max_storage_buffer_binding_size` (or the override).
        limit: u64,
    },
}

/// Results of this crate.
pub type Result<T, E = GpuError> = std::result::Result<T, E>;
