// f32 → f16 → f32 rounding done on the bits, shared by the kernels that must
// round exactly as edgeloop-core does (prepended to their sources).

// `v` rounded to the nearest f16 (ties to even) and back, as the `half`
// crate's `f16::from_f32`: beyond the f16 range ±inf, below 2^-14 a
// multiple of 2^-24 (f16 subnormals).
fn round_f16(v: f32) -> f32 {
    let bits = bitcast<u32>(v);
    let sign = bits & 0x80000000u;
    let mag = bits & 0x7FFFFFFFu;
    if (mag >= 0x7F800000u) {
        return v;
    }
    if (mag < 0x38800000u) {
        // Scaling by powers of two is exact here; round() is half to even.
        return round(v * 16777216.0) * 5.9604644775390625e-8;
    }
    // Drop 13 of the 23 mantissa bits, half to even; a carry moves into the
    // exponent as it should.
    let r = (mag + 0xFFFu + ((mag >> 13u) & 1u)) & 0xFFFFE000u;
    if (r > 0x477FE000u) {
        return bitcast<f32>(sign | 0x7F800000u);
    }
    return bitcast<f32>(sign | r);
}
