// y[n][row_offset + r] = sum_c W[r][c] * x[n][c] for the rows of one chunk
// of a quantized matrix and up to MAX_COLS activation columns. MAX_COLS (1
// for decode, 16 otherwise) and ROWS are prepended. A workgroup of 64
// threads takes ROWS rows with TPR threads each: a row's threads stride over its
// 32-value units (`row_dots`, from matvec_acc.wgsl or
// matvec_acc_q8_1.wgsl), reading four weights at a time with the weight
// type's `deq4`, and their sums are added in shared memory. `Params` comes
// from matmul_params.wgsl.

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

const TPR: u32 = 64u / ROWS; // threads per row
var<workgroup> partial: array<f32, MAX_COLS * 64u>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let lane = lid % TPR;
    let r = (wid.y * p.wg_x + wid.x) * ROWS + lid / TPR;
    var acc: array<f32, MAX_COLS>;
    if (r < p.rows) {
        acc = row_dots(r, lane);
    }
    for (var n = 0u; n < MAX_COLS; n++) {
        if (n < p.n) {
            partial[n * 64u + lid] = acc[n];
        }
    }
    workgroupBarrier();
    if (lane == 0u && r < p.rows) {
        for (var n = 0u; n < MAX_COLS; n++) {
            if (n < p.n) {
                var total = 0.0;
                for (var k = 0u; k < TPR; k++) {
                    total += partial[n * 64u + lid + k];
                }
                y[n * p.y_stride + p.row_offset + r] = total;
            }
        }
    }
}
