// out[t][c] = W[ids[t]][c] for the tokens whose row lies in this chunk of a
// quantized matrix (rows row_start..row_start + rows).

struct Params {
    rows: u32,
    cols: u32,
    tokens: u32,
    row_start: u32,
}

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let t = gid.y;
    if (c >= p.cols || t >= p.tokens) {
        return;
    }
    let id = ids[t];
    if (id < p.row_start || id >= p.row_start + p.rows) {
        return;
    }
    let r = id - p.row_start;
    let base = r * (p.cols / BLOCK_LEN) * BLOCK_BYTES + (c / BLOCK_LEN) * BLOCK_BYTES;
    out[t * p.cols + c] = deq(base, c % BLOCK_LEN);
}
