//! Reference quantizers producing ggml's byte layouts, with the same rounding
//! as ggml's `quantize_row_*_ref`, for writing model files.

use super::{byte_len, GgmlType, QuantError, QK32};

/// Quantizes `src` to `dtype` in ggml's byte layout.
///
/// Implemented for F32, F16, Q8_0, Q4_0 and Q4_1; `src.len()` must be a whole
/// number of blocks.
pub fn quantize(dtype: GgmlType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    let fun: fn(&[f32], &mut Vec<u8>) = match dtype {
        GgmlType::F32 => quant_f32,
        GgmlType::F16 => quant_f16,
        GgmlType::Q8_0 => quant_q8_0,
        GgmlType::Q4_0 => quant_q4_0,
        GgmlType::Q4_1 => quant_q4_1,
        _ => {
            return Err(QuantError::Unsupported {
                dtype,
                operation: "quantize",
            })
        }
    };
    let len = byte_len(dtype, src.len())?;
    let mut out = Vec::with_capacity(len);
    fun(src, &mut out);
    debug_assert_eq!(out.len(), len);
    Ok(out)
}

fn put_f16(out: &mut Vec<u8>, x: f32) {
    out.extend_from_slice(&half::f16::from_f32(x).to_le_bytes());
}

fn quant_f32(src: &[f32], out: &mut Vec<u8>) {
    for &x in src {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

fn quant_f16(src: &[f32], out: &mut Vec<u8>) {
    for &x in src {
        put_f16(out, x);
    }
}

/// `quantize_row_q8_0_ref`: scale `amax/127`, values `roundf(x/d)`.
fn quant_q8_0(src: &[f32], out: &mut Vec<u8>) {
    for x in src.chunks_exact(QK32) {
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(out, d);
        // `f32::round` rounds half away from zero, like C's roundf.
        out.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
    }
}

/// `quantize_row_q4_0_ref`: the value of largest magnitude maps to -8.
fn quant_q4_0(src: &[f32], out: &mut Vec<u8>) {
    for x in src.chunks_exact(QK32) {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(out, d);
        for j in 0..16 {
            // C's `(int8_t)(x + 8.5f)` truncates toward zero.
            let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
            out.push(q0 | (q1 << 4));
        }
    }
}

/// `quantize_row_q4_1_ref`: 16 levels between the block's min and max.
fn quant_q4_1(src: &[f32], out: &mut Vec<u8>) {
    for x in src.chunks_exact(QK32) {
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(out, d);
        put_f16(out, min);
        for j in 0..16 {
            let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
            out.push(q0 | (q1 << 4));
        }
    }
}
