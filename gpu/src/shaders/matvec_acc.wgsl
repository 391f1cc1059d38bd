// One thread's share of row r of the product (see matvec.wgsl), for every
// activation column: the units lane, lane + TPR, ... of 32 values, each
// four `deq4` words times four activations at a time; f32 activations or
// activations rounded to an 8-bit format's values (act_round.wgsl).

const UNIT: u32 = 32u; // values per unit; divides BLOCK_LEN

fn row_dots(r: u32, lane: u32) -> array<f32, MAX_COLS> {
    let nb = p.cols / BLOCK_LEN;
    let per_block = BLOCK_LEN / UNIT;
    let units = nb * per_block;
    let row_base = r * nb * BLOCK_BYTES;
    let cols4 = p.cols / 4u;
    var acc: array<f32, MAX_COLS>;
    for (var u = lane; u < units; u += TPR) {
        let b = u / per_block;
        let base = row_base + b * BLOCK_BYTES;
        let j0 = (u % per_block) * (UNIT / 4u);
        let x0 = b * (BLOCK_LEN / 4u) + j0;
        var s: array<vec4<f32>, MAX_COLS>;
        for (var j = 0u; j < UNIT / 4u; j++) {
            let v = deq4(base, j0 + j);
            for (var n = 0u; n < MAX_COLS; n++) {
                if (n < p.n) {
                    s[n] += v * x[n * cols4 + x0 + j];
                }
            }
        }
        for (var n = 0u; n < MAX_COLS; n++) {
            if (n < p.n) {
                acc[n] += (s[n].x + s[n].y) + (s[n].z + s[n].w);
            }
        }
    }
    return acc;
}
