// Reduction of the matmul partial sums in shared memory (a tree over the
// workgroup); needs no optional feature. See matmul_common.wgsl.

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wid.y * p.wg_x + wid.x;
    if (r >= p.rows) {
        return;
    }
    let acc = accumulate(r, lid);
    for (var n = 0u; n < p.n; n++) {
        partial[n * WG + lid] = acc[n];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var n = 0u; n < p.n; n++) {
                partial[n * WG + lid] += partial[n * WG + lid + s];
            }
        }
        workgroupBarrier();
    }
    if (lid < p.n) {
        y[lid * p.y_stride + p.row_offset + r] = partial[lid * WG];
    }
}
