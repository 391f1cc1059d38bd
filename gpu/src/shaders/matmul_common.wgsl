// y[n][row_offset + r] = sum_c W[r][c] * x[n][c] for the rows of one chunk
// of an F32 or F16 matrix. One workgroup per row; its threads stride over
// the row's elements (`accumulate`, from matmul_acc.wgsl), then reduce
// (matmul.wgsl or matmul_subgroup.wgsl). Up to MAX_N activation columns.
// `deq`, BLOCK_LEN and BLOCK_BYTES come from the weight type's snippet,
// `Params` from matmul_params.wgsl.

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

const WG: u32 = 64u;
const MAX_N: u32 = 16u;
var<workgroup> partial: array<f32, 1024>; // MAX_N * WG
