// The parameters of the matrix-product kernels (matmul_common.wgsl,
// matvec.wgsl): one dispatch per chunk of rows of the matrix.

struct Params {
    rows: u32,       // rows in this chunk
    cols: u32,
    n: u32,          // activation columns (1..=16)
    y_stride: u32,   // rows of the whole matrix: y is [n][y_stride]
    row_offset: u32, // first row of this chunk in the whole matrix
    wg_x: u32,       // workgroups along x of the dispatch
}
