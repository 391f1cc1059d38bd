// In-place element-wise kernels with one scalar `s`: a * s (scale) and
// tanh(a / s) * s (soft-cap of the final logits).

struct Params {
    len: u32,
    wg_x: u32,
    s: f32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;

fn index(wid: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * p.wg_x + wid.x) * 64u + lid;
}

@compute @workgroup_size(64)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, lid);
    if (i >= p.len) {
        return;
    }
    a[i] = a[i] * p.s;
}

@compute @workgroup_size(64)
fn softcap(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, lid);
    if (i >= p.len) {
        return;
    }
    // tanh saturates long before |t| = 15; the clamp keeps exp-based
    // implementations away from inf / inf.
    let t = clamp(a[i] / p.s, -15.0, 15.0);
    a[i] = tanh(t) * p.s;
}
