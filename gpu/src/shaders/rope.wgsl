// Rotary embedding, in place, of x laid out [tokens][heads][head_dim]:
// pair i of each head (i < half = rope_dims / 2) rotates by pos[t] * inv_freq[i].
// neox pairs (i, i + half); otherwise (2i, 2i + 1). Dimensions past
// rope_dims are left alone.

struct Params {
    tokens: u32,
    heads: u32,
    head_dim: u32,
    half: u32,
    neox: u32,
    wg_x: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = (wid.y * p.wg_x + wid.x) * 64u + lid;
    if (g >= p.tokens * p.heads * p.half) {
        return;
    }
    let i = g % p.half;
    let th = g / p.half; // token * heads + head
    let t = th / p.heads;
    let theta = f32(pos[t]) * inv_freq[i];
    let s = sin(theta);
    let c = cos(theta);
    let base = th * p.head_dim;
    var a: u32;
    var b: u32;
    if (p.neox != 0u) {
        a = base + i;
        b = base + i + p.half;
    } else {
        a = base + 2u * i;
        b = base + 2u * i + 1u;
    }
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
}
