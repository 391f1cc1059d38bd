//! Weight rows repacked for the x86 matrix products: eight rows side by side.
//!
//! In a GGUF file each row's 32-value blocks follow one another, each with
//! its own scale. A matrix-vector product over that layout spends as many
//! instructions gathering eight blocks' scales and summing eight blocks'
//! products across vector lanes as on the products themselves. Here the
//! same block of eight consecutive rows is stored together: their eight
//! scales (and Q4_1 minimums) contiguous, then their quants interleaved four
//! bytes at a time, so that one vector holds bytes `4k..4k + 4` of all eight
//! rows. One load then gives eight scales; a byte product of that vector
//! with a broadcast activation word gives each row's partial sum in its own
//! lane; nothing is summed across lanes. llama.cpp's CPU backend repacks
//! Q4_0 weights the same way.
//!
//! Q5_0's fifth bits are regrouped the same way: one 32-bit mask per vector
//! of quants, bit `4i + j` for byte `j` of row `i`, so the bits line up with
//! the bytes they belong to.
//!
//! Packing is a copy (the file's bytes stay mapped and are what the other
//! instruction sets and the GPU read), made for Q4_0, Q4_1 and Q5_0
//! matrices whose row count is a multiple of eight.

use std::ops::Range;
use std::sync::Arc;

use crate::quant::GgmlType;

/// Rows packed together.
pub(crate) const PACK_ROWS: usize = 8;

/// A matrix's rows in groups of [`PACK_ROWS`], block by block.
///
/// Group `g`, block `b` (32 columns) sits at `(g * nb + b) * group_block`
/// bytes (`nb` blocks per row): the eight rows' f16 scales (16 bytes), for
/// Q4_1 their f16 minimums (16 bytes), for Q5_0 eight 32-bit masks of fifth
/// bits (32 bytes: mask `2k` for the low nibbles of vector `k`, `2k + 1`
/// for its high nibbles), then four 32-byte vectors, vector `k` holding
/// packed-nibble bytes `4k..4k + 4` of rows `0..8` in turn.
#[derive(Debug)]
pub struct PackedRows {
    pub(crate) dtype: GgmlType,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    data: PackedBytes,
}

/// Where packed rows live: made in memory, or mapped from a cache file.
#[derive(Debug)]
enum PackedBytes {
    Owned(Vec<u8>),
    Mapped(Arc<memmap2::Mmap>, Range<usize>),
}

/// Bytes of one block of eight rows in `dtype` (Q4_0, Q4_1 or Q5_0): as
/// many as the file's eight blocks.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const fn group_block_bytes(dtype: GgmlType) -> usize {
    match dtype {
        GgmlType::Q4_1 => 32 + 128,
        GgmlType::Q5_0 => 48 + 128,
        _ => 16 + 128,
    }
}

/// Where the quant vectors of a block of eight rows in `dtype` start: after
/// the scales, minimums and fifth-bit masks.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const fn quants_offset(dtype: GgmlType) -> usize {
    group_block_bytes(dtype) - 128
}

/// Whether this CPU's matrix products read [`PackedRows`] (x86 with AVX2;
/// elsewhere packing would only cost memory).
pub fn packed_rows_used() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::dot::Isa::best() != super::dot::Isa::Scalar
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The size of a packed `rows × cols` matrix of `dtype` (that of the file's
/// rows), or `None` where packing does not apply: another type than Q4_0,
/// Q4_1 and Q5_0, or rows that do not fill groups of [`PACK_ROWS`].
pub fn packed_len(dtype: GgmlType, rows: usize, cols: usize) -> Option<usize> {
    if !matches!(dtype, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0) {
        return None;
    }
    if rows == 0 || !rows.is_multiple_of(PACK_ROWS) || !cols.is_multiple_of(32) {
        return None;
    }
    (cols / 32 * dtype.block_bytes()).checked_mul(rows)
}

impl PackedRows {
    /// Repacks a `rows × cols` matrix of `dtype` held in `data` (as the file
    /// stores it), or `None` where this layout does not apply: another type,
    /// a row count that is not a multiple of [`PACK_ROWS`], or `data` of the
    /// wrong size.
    pub fn new(dtype: GgmlType, data: &[u8], rows: usize, cols: usize) -> Option<PackedRows> {
        if data.len() != packed_len(dtype, rows, cols)? {
            return None;
        }
        let rb = cols / 32 * dtype.block_bytes();
        let mut out = vec![0u8; data.len()];
        for (src, dst) in data
            .chunks_exact(PACK_ROWS * rb)
            .zip(out.chunks_exact_mut(PACK_ROWS * rb))
        {
            match dtype {
                GgmlType::Q4_0 => pack_group::<18, 1, false>(src, dst, rb),
                GgmlType::Q5_0 => pack_group::<22, 1, true>(src, dst, rb),
                _ => pack_group::<20, 2, false>(src, dst, rb),
            }
        }
        Some(PackedRows {
            dtype,
            rows,
            cols,
            data: PackedBytes::Owned(out),
        })
    }

    /// Packed rows already made, read from `range` of a mapped file (see
    /// [`PackedRows::bytes`]), or `None` if the range does not hold exactly
    /// a packed `rows × cols` matrix of `dtype`.
    pub fn mapped(
        dtype: GgmlType,
        rows: usize,
        cols: usize,
        map: Arc<memmap2::Mmap>,
        range: Range<usize>,
    ) -> Option<PackedRows> {
        let fits = range.end <= map.len() && range.start <= range.end;
        if !fits || range.len() != packed_len(dtype, rows, cols)? {
            return None;
        }
        Some(PackedRows {
            dtype,
            rows,
            cols,
            data: PackedBytes::Mapped(map, range),
        })
    }

    /// The packed bytes, laid out as described at [`PackedRows`].
    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            PackedBytes::Owned(v) => v,
            PackedBytes::Mapped(map, range) => &map[range.clone()],
        }
    }

    /// The weight type, rows and columns of the matrix.
    pub fn shape(&self) -> (GgmlType, usize, usize) {
        (self.dtype, self.rows, self.cols)
    }
}

/// Packs one group of eight rows (`src`, `rb` bytes each, blocks of `BB`
/// bytes that start with `HEAD` f16s, then for Q5_0 (`FIFTH`) 32 fifth
/// bits, then 16 bytes of nibbles) into `dst`, block by block.
fn pack_group<const BB: usize, const HEAD: usize, const FIFTH: bool>(
    src: &[u8],
    dst: &mut [u8],
    rb: usize,
) {
    let gb = PACK_ROWS * BB;
    let masks_len = if FIFTH { 32 } else { 0 };
    for (b, out) in dst.chunks_exact_mut(gb).enumerate() {
        let (halves, rest) = out.split_at_mut(16 * HEAD);
        let (masks, quants) = rest.split_at_mut(masks_len);
        let mut bits = [0u32; 8];
        for i in 0..PACK_ROWS {
            let block: &[u8; BB] = src[i * rb + b * BB..][..BB].try_into().expect("block");
            // d (and m): the block's leading f16s.
            for h in 0..HEAD {
                halves[16 * h + 2 * i..][..2].copy_from_slice(&block[2 * h..2 * h + 2]);
            }
            let mut at = 2 * HEAD;
            if FIFTH {
                let qh = u32::from_le_bytes(block[at..at + 4].try_into().expect("qh"));
                // Value `v` of the row has its fifth bit at `qh` bit `v`;
                // low nibbles of vector `k` are values 4k.., high ones 16 + 4k...
                for k in 0..4 {
                    for (m, first) in [(2 * k, 4 * k), (2 * k + 1, 16 + 4 * k)] {
                        bits[m] |= (qh >> first & 0xF) << (4 * i);
                    }
                }
                at += 4;
            }
            let qs = &block[at..at + 16];
            for k in 0..4 {
                quants[32 * k + 4 * i..][..4].copy_from_slice(&qs[4 * k..4 * k + 4]);
            }
        }
        for (m, word) in masks.chunks_exact_mut(4).zip(bits) {
            m.copy_from_slice(&word.to_le_bytes());
        }
    }
}
