// In-place softmax of each row of x (rows × cols); one workgroup per row.

struct Params {
    rows: u32,
    cols: u32,
    wg_x: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wid.y * p.wg_x + wid.x;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.cols;
    var m = -3.4028235e38;
    for (var c = lid; c < p.cols; c += WG) {
        m = max(m, x[base + c]);
    }
    partial[lid] = m;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (lid < k) {
            partial[lid] = max(partial[lid], partial[lid + k]);
        }
        workgroupBarrier();
    }
    let row_max = partial[0];
    workgroupBarrier();
    var s = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        let e = exp(x[base + c] - row_max);
        x[base + c] = e;
        s += e;
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (lid < k) {
            partial[lid] += partial[lid + k];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / partial[0];
    for (var c = lid; c < p.cols; c += WG) {
        x[base + c] *= inv;
    }
}
