//! What the kernel timing examples share.

use edgeloop_core::kernels::{packed_rows_used, PackedRows};
use edgeloop_core::quant::{quantize, GgmlType};

/// The bytes of a `rows × cols` matrix of type `t`: smooth values
/// quantized, or for types the writer cannot produce, pseudo-random blocks,
/// each with the scale 1/16 (f16 0x2C00) in its first two bytes.
pub fn weights(t: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.1)
        .collect();
    quantize(t, &values).unwrap_or_else(|_| {
        let block = t.block_bytes();
        let mut b: Vec<u8> = (0..rows * cols / t.block_len() * block)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for blk in b.chunks_exact_mut(block) {
            blk[..2].copy_from_slice(&0x2C00u16.to_le_bytes());
        }
        b
    })
}

/// `bytes` repacked where this CPU's kernels read that layout, as a model's
/// matrices are.
pub fn packed(t: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Option<PackedRows> {
    PackedRows::new(t, bytes, rows, cols).filter(|_| packed_rows_used())
}
