//! GGML tensor formats: block layouts bit-exact with ggml (llama.cpp), the
//! scalar reference dequantizer, the reference quantizers used to write model
//! files, and the 8-bit activation formats the dot-product kernels consume.
//!
//! Weight data usually comes straight from a memory-mapped GGUF file, so
//! nothing here assumes alignment: every block field is read with
//! little-endian byte reads.

mod activation;
mod dequantize;
mod quantize;
pub mod types;

pub use activation::{
    quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k, BlockQ8K, BlockQ8_0, BlockQ8_1,
};
pub use dequantize::dequantize;
pub use quantize::quantize;
pub use types::{GgmlType, QK_K, SUPPORTED};

/// Elements per block of the 32-element formats (Q4_0, Q4_1, Q5_0, Q8_0, Q8_1).
pub const QK32: usize = 32;

/// Errors from (de)quantization and from describing quantized matrices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The operation does not implement this element type.
    #[error("{operation} does not support tensor type {dtype}")]
    Unsupported {
        dtype: GgmlType,
        operation: &'static str,
    },
    /// An element count that is not a whole number of blocks.
    #[error("{elements} elements of {dtype} are not a whole number of {block_len}-element blocks")]
    PartialBlock {
        dtype: GgmlType,
        elements: usize,
        block_len: usize,
    },
    /// A byte buffer whose length does not match the element count.
    #[error("{elements} elements of {dtype} take {expected} bytes, but the buffer has {actual}")]
    SizeMismatch {
        dtype: GgmlType,
        elements: usize,
        expected: usize,
        actual: usize,
    },
    /// A buffer of the wrong length for the shape it is used with.
    #[error("{what} has {actual} elements where {expected} are expected")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    /// An element count whose byte size does not fit in memory.
    #[error("{elements} elements of {dtype} overflow the address space")]
    TooLarge { dtype: GgmlType, elements: usize },
}

/// Bytes taken by `elements` values of `dtype`, checking that they form whole
/// blocks and that the size fits in `usize`.
pub fn byte_len(dtype: GgmlType, elements: usize) -> Result<usize, QuantError> {
    let block_len = dtype.block_len();
    if !elements.is_multiple_of(block_len) {
        return Err(QuantError::PartialBlock {
            dtype,
            elements,
            block_len,
        });
    }
    dtype
        .bytes_for(elements as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or(QuantError::TooLarge { dtype, elements })
}

/// Reads the little-endian IEEE half at `data[off..off + 2]` as f32.
#[inline(always)]
pub(crate) fn read_f16(data: &[u8], off: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([data[off], data[off + 1]])).to_f32()
}

/// Reads the little-endian f32 at `data[off..off + 4]`.
#[inline(always)]
pub(crate) fn read_f32(data: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]])
}

/// Rounds `x` to the nearest f16 and back, as ggml does when it stores a
/// block scale as `ggml_half`.
#[inline(always)]
pub(crate) fn round_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// Unpacks the eight 6-bit scales and eight 6-bit mins of a Q4_K super-block
/// from its 12 packed bytes (ggml's `get_scale_min_k4` for all `j`).
#[inline(always)]
pub(crate) fn q4k_scales_mins(packed: &[u8]) -> ([u8; 8], [u8; 8]) {
    let q = &packed[..12];
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
    }
    for j in 4..8 {
        sc[j] = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        m[j] = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
    (sc, m)
}

#[cfg(test)]
pub(crate) mod tests;
