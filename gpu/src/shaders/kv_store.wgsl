// Stores T tokens' f32 keys and values ([T][kv_dim]) into the f16 cache at
// rows pos[t], rounded to nearest; one thread per pair of values.

struct Params {
    tokens: u32,
    kv_dim: u32,
    wg_x: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> k: array<f32>;
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<u32>;
@group(0) @binding(3) var<storage, read_write> keys: array<u32>;
@group(0) @binding(4) var<storage, read_write> values: array<u32>;
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = (wid.y * p.wg_x + wid.x) * 64u + lid;
    let half_dim = p.kv_dim / 2u;
    if (g >= p.tokens * half_dim) {
        return;
    }
    let t = g / half_dim;
    let i = 2u * (g % half_dim);
    let src = t * p.kv_dim + i;
    let dst = (pos[t] * p.kv_dim + i) / 2u;
    keys[dst] = pack2x16float(vec2<f32>(k[src], k[src + 1u]));
    values[dst] = pack2x16float(vec2<f32>(v[src], v[src + 1u]));
}
