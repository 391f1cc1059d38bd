//! Scalar reference dequantization of every supported block format, following
//! ggml's `dequantize_row_*` functions.

#![allow(clippy::needless_range_loop)] // index loops over register tiles and block lanes read best

use super::{byte_len, q4k_scales_mins, read_f16, read_f32, GgmlType, QuantError, QK32, QK_K};

/// Dequantizes `out.len()` values of type `dtype` from `data`.
///
/// `data.len()` must be exactly the byte size of `out.len()` values. Besides
/// the weight types in [`super::SUPPORTED`], the activation formats Q8_1 and
/// Q8_K (in ggml's byte layout) are accepted too.
pub fn dequantize(dtype: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let expected = byte_len(dtype, out.len())?;
    let fun: fn(&[u8], &mut [f32]) = match dtype {
        GgmlType::F32 => dequant_f32,
        GgmlType::F16 => dequant_f16,
        GgmlType::Q4_0 => dequant_q4_0,
        GgmlType::Q4_1 => dequant_q4_1,
        GgmlType::Q5_0 => dequant_q5_0,
        GgmlType::Q8_0 => dequant_q8_0,
        GgmlType::Q8_1 => dequant_q8_1,
        GgmlType::Q4K => dequant_q4_k,
        GgmlType::Q6K => dequant_q6_k,
        GgmlType::Q8K => dequant_q8_k,
        _ => {
            return Err(QuantError::Unsupported {
                dtype,
                operation: "dequantize",
            })
        }
    };
    if data.len() != expected {
        return Err(QuantError::SizeMismatch {
            dtype,
            elements: out.len(),
            expected,
            actual: data.len(),
        });
    }
    fun(data, out);
    Ok(())
}

fn dequant_f32(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
        *o = read_f32(b, 0);
    }
}

fn dequant_f16(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
        *o = read_f16(b, 0);
    }
}

/// Q4_0: `d: f16, qs: [u8; 16]`; value = d * (nibble - 8), low nibbles are
/// elements 0..16 and high nibbles 16..32.
fn dequant_q4_0(data: &[u8], out: &mut [f32]) {
    for (y, b) in out.chunks_exact_mut(QK32).zip(data.chunks_exact(18)) {
        let d = read_f16(b, 0);
        let qs = &b[2..18];
        for j in 0..16 {
            y[j] = ((qs[j] & 0xF) as i32 - 8) as f32 * d;
            y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// Q4_1: `d: f16, m: f16, qs: [u8; 16]`; value = d * nibble + m.
fn dequant_q4_1(data: &[u8], out: &mut [f32]) {
    for (y, b) in out.chunks_exact_mut(QK32).zip(data.chunks_exact(20)) {
        let d = read_f16(b, 0);
        let m = read_f16(b, 2);
        let qs = &b[4..20];
        for j in 0..16 {
            y[j] = (qs[j] & 0xF) as f32 * d + m;
            y[j + 16] = (qs[j] >> 4) as f32 * d + m;
        }
    }
}

/// Q5_0: `d: f16, qh: u32 (LE), qs: [u8; 16]`; bit j of qh is the fifth bit
/// of element j; value = d * (q5 - 16).
fn dequant_q5_0(data: &[u8], out: &mut [f32]) {
    for (y, b) in out.chunks_exact_mut(QK32).zip(data.chunks_exact(22)) {
        let d = read_f16(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        for j in 0..16 {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            y[j] = (((qs[j] & 0xF) | h0) as i32 - 16) as f32 * d;
            y[j + 16] = (((qs[j] >> 4) | h1) as i32 - 16) as f32 * d;
        }
    }
}

/// Q8_0: `d: f16, qs: [i8; 32]`.
fn dequant_q8_0(data: &[u8], out: &mut [f32]) {
    for (y, b) in out.chunks_exact_mut(QK32).zip(data.chunks_exact(34)) {
        let d = read_f16(b, 0);
        for (o, &q) in y.iter_mut().zip(&b[2..34]) {
            *o = q as i8 as f32 * d;
        }
    }
}

/// Q8_1: `d: f16, s: f16, qs: [i8; 32]` (`s` is redundant for values).
fn dequant_q8_1(data: &[u8], out: &mut [f32]) {
    for (y, b) in out.chunks_exact_mut(QK32).zip(data.chunks_exact(36)) {
        let d = read_f16(b, 0);
        for (o, &q) in y.iter_mut().zip(&b[4..36]) {
            *o = q as i8 as f32 * d;
        }
    }
}

/// Q4_K: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`; eight
/// sub-blocks of 32 with 6-bit scale and min; value = d*sc*q - dmin*m.
fn dequant_q4_k(data: &[u8], out: &mut [f32]) {
    for (y, b) in out.chunks_exact_mut(QK_K).zip(data.chunks_exact(144)) {
        let d = read_f16(b, 0);
        let dmin = read_f16(b, 2);
        let (sc, m) = q4k_scales_mins(&b[4..16]);
        let qs = &b[16..144];
        for j in 0..4 {
            let q = &qs[32 * j..32 * j + 32];
            let (d1, m1) = (d * sc[2 * j] as f32, dmin * m[2 * j] as f32);
            let (d2, m2) = (d * sc[2 * j + 1] as f32, dmin * m[2 * j + 1] as f32);
            let y = &mut y[64 * j..64 * j + 64];
            for l in 0..32 {
                y[l] = d1 * (q[l] & 0xF) as f32 - m1;
                y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

/// Q6_K: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`; sixteen
/// sub-blocks of 16 with an 8-bit scale; value = d * sc * (q6 - 32).
fn dequant_q6_k(data: &[u8], out: &mut [f32]) {
    for (y, b) in out.chunks_exact_mut(QK_K).zip(data.chunks_exact(210)) {
        let d = read_f16(b, 208);
        for half in 0..2 {
            let ql = &b[64 * half..64 * half + 64];
            let qh = &b[128 + 32 * half..128 + 32 * half + 32];
            let sc = &b[192 + 8 * half..192 + 8 * half + 8];
            let y = &mut y[128 * half..128 * half + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
}

/// Q8_K: `d: f32, qs: [i8; 256], bsums: [i16; 16]`.
fn dequant_q8_k(data: &[u8], out: &mut [f32]) {
    for (y, b) in out.chunks_exact_mut(QK_K).zip(data.chunks_exact(292)) {
        let d = read_f32(b, 0);
        for (o, &q) in y.iter_mut().zip(&b[4..4 + QK_K]) {
            *o = d * q as i8 as f32;
        }
    }
}
