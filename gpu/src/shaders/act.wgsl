// Element-wise kernels over a (read-write) and b: SiLU(a) * b, GELU(a) * b
// (tanh approximation) and a + b, each into a. GELU follows
// edgeloop-core's `ops::gelu_mul` (and ggml): the input rounded to f16, the
// result too, 0 at and below -10 and the identity at and above 10.
// `round_f16` comes from round_f16.wgsl, prepended to this source.

struct Params {
    len: u32,
    wg_x: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

fn index(wid: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * p.wg_x + wid.x) * 64u + lid;
}

@compute @workgroup_size(64)
fn silu_mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, lid);
    if (i >= p.len) {
        return;
    }
    let g = a[i];
    a[i] = g / (1.0 + exp(-g)) * b[i];
}

@compute @workgroup_size(64)
fn gelu_mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, lid);
    if (i >= p.len) {
        return;
    }
    let x = a[i];
    if (x <= -10.0) {
        a[i] = 0.0;
        return;
    }
    if (x >= 10.0) {
        a[i] = x * b[i];
        return;
    }
    let xr = round_f16(x);
    // tanh saturates to ±1 in f32 long before |t| = 15; the clamp keeps
    // implementations that compute it from exp() away from inf / inf.
    let t = clamp(0.7978846 * xr * (1.0 + 0.044715 * xr * xr), -15.0, 15.0);
    a[i] = round_f16(0.5 * xr * (1.0 + tanh(t))) * b[i];
}

@compute @workgroup_size(64)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, lid);
    if (i >= p.len) {
        return;
    }
    a[i] += b[i];
}
