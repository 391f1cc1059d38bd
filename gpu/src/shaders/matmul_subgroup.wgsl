// Reduction of the matmul partial sums with subgroupAdd, then one value
// per subgroup in shared memory (needs the SUBGROUP feature; naga takes the
// builtins without an `enable` directive). See matmul_common.wgsl.

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
) {
    let r = wid.y * p.wg_x + wid.x;
    if (r >= p.rows) {
        return;
    }
    let acc = accumulate(r, lid);
    for (var n = 0u; n < p.n; n++) {
        let s = subgroupAdd(acc[n]);
        if (sg_lane == 0u) {
            partial[n * WG + sg_id] = s;
        }
    }
    workgroupBarrier();
    if (lid < p.n) {
        var total = 0.0;
        for (var k = 0u; k < sg_count; k++) {
            total += partial[lid * WG + k];
        }
        y[lid * p.y_stride + p.row_offset + r] = total;
    }
}
