// Rounds f32 activations to the values edgeloop-core's 8-bit activation
// quantizers represent (core/src/quant/activation.rs), x̂ = d * q with the
// CPU's own d and q, so that a matrix product with x̂ sees what the CPU's
// integer dot products see. One thread per block:
// - q8_0: 32 values, d = amax / 127, q = round(x * (127 / amax)) half to
//   even, x̂ = round_f16(d) * q.
// - q8_1: as q8_0, and after the len values of x̂ one value per block,
//   s = round_f16(d * sum(q)) with the unrounded d (Q4_1's block minimums
//   multiply s).
// - q8_k: 256 values, max = the first value of largest magnitude,
//   iscale = -127 / max, q = min(round(iscale * x), 127), d = 1 / iscale,
//   x̂ = d * q.
// The divisions and the f16 rounding are done on the bits with integer
// arithmetic: WGSL allows 2.5 ULP for `/` and leaves the rounding of f32 to
// f16 conversions to the implementation, while core's are correctly
// rounded (to nearest, ties to even). Products are correctly rounded in
// WGSL. A block whose largest magnitude is below 2^-118 comes out as zeros:
// exactly what the CPU represents for Q8_0 and Q8_1 (d rounds to 0 in f16
// and s to 0), and within 2^-118 of it for Q8_K.
// `round_f16` comes from round_f16.wgsl, prepended to this source.

struct Params {
    len: u32,  // values in x (a whole number of blocks)
    wg_x: u32, // workgroups along x of the dispatch
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

const TINY: f32 = 0x1p-118f;

// a / b correctly rounded (to nearest, ties to even) for normal a and b,
// by long division of the significands. A quotient beyond the f32 range is
// ±inf, one below its normal range ±0 (neither occurs for the blocks this
// kernel divides: their magnitudes are at least TINY).
fn div_rn(a: f32, b: f32) -> f32 {
    let ab = bitcast<u32>(a);
    let bb = bitcast<u32>(b);
    let sign = (ab ^ bb) & 0x80000000u;
    var ma = (ab & 0x7FFFFFu) | 0x800000u;
    let mb = (bb & 0x7FFFFFu) | 0x800000u;
    var e = i32((ab >> 23u) & 0xFFu) - i32((bb >> 23u) & 0xFFu);
    if (ma < mb) {
        ma <<= 1u;
        e -= 1;
    }
    // ma / mb is in [1, 2): 24 significand bits and a guard bit; what
    // remains decides between a tie and more than half.
    var q = 0u;
    var rem = ma;
    for (var i = 0u; i < 25u; i++) {
        q <<= 1u;
        if (rem >= mb) {
            rem -= mb;
            q |= 1u;
        }
        rem <<= 1u;
    }
    var sig = q >> 1u;
    if ((q & 1u) != 0u && (rem != 0u || (sig & 1u) != 0u)) {
        sig += 1u;
    }
    if (sig == 0x1000000u) {
        sig = 0x800000u;
        e += 1;
    }
    let be = e + 127;
    if (be >= 255) {
        return bitcast<f32>(sign | 0x7F800000u);
    }
    if (be <= 0) {
        return bitcast<f32>(sign);
    }
    return bitcast<f32>(sign | (u32(be) << 23u) | (sig & 0x7FFFFFu));
}

// Rounds the 32-value block `blk`; returns round_f16(d * sum(q)) (Q8_1's s).
fn round_block32(blk: u32) -> f32 {
    let start = blk * 32u;
    var amax = 0.0;
    for (var i = 0u; i < 32u; i++) {
        amax = max(amax, abs(x[start + i]));
    }
    if (!(amax >= TINY)) {
        for (var i = 0u; i < 32u; i++) {
            out[start + i] = 0.0;
        }
        return 0.0;
    }
    let d = div_rn(amax, 127.0);
    let id = div_rn(127.0, amax);
    let dr = round_f16(d);
    var sum = 0.0;
    for (var i = 0u; i < 32u; i++) {
        let q = round(x[start + i] * id);
        sum += q;
        out[start + i] = dr * q;
    }
    return round_f16(d * sum);
}

fn block_index(wid: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * p.wg_x + wid.x) * 64u + lid;
}

@compute @workgroup_size(64)
fn q8_0(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let blk = block_index(wid, lid);
    if (blk >= p.len / 32u) {
        return;
    }
    round_block32(blk);
}

@compute @workgroup_size(64)
fn q8_1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let blk = block_index(wid, lid);
    if (blk >= p.len / 32u) {
        return;
    }
    out[p.len + blk] = round_block32(blk);
}

@compute @workgroup_size(64)
fn q8_k(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let blk = block_index(wid, lid);
    if (blk >= p.len / 256u) {
        return;
    }
    let start = blk * 256u;
    var amax = 0.0;
    var vmax = 0.0;
    for (var i = 0u; i < 256u; i++) {
        let v = x[start + i];
        if (abs(v) > amax) {
            amax = abs(v);
            vmax = v;
        }
    }
    if (!(amax >= TINY)) {
        for (var i = 0u; i < 256u; i++) {
            out[start + i] = 0.0;
        }
        return;
    }
    let iscale = div_rn(-127.0, vmax);
    let d = div_rn(1.0, iscale);
    for (var i = 0u; i < 256u; i++) {
        out[start + i] = d * min(round(iscale * x[start + i]), 127.0);
    }
}
