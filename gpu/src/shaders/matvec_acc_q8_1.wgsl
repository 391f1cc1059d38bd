// One thread's share of row r of the product (see matvec.wgsl), for every
// activation column, for Q4_1 weights with activations rounded to Q8_1
// (act_round.wgsl): x holds the n × cols rounded values, then the
// n × (cols / 32) block terms s. As in core's Q4_1 · Q8_1 dot product, a
// block contributes sum_j d * q_j * x̂_j + m * s. Needs `deq4_scaled`
// (quant_q4_1.wgsl).

fn row_dots(r: u32, lane: u32) -> array<f32, MAX_COLS> {
    let nb = p.cols / BLOCK_LEN;
    let row_base = r * nb * BLOCK_BYTES;
    let cols4 = p.cols / 4u;
    let sums = p.n * p.cols;
    var acc: array<f32, MAX_COLS>;
    for (var b = lane; b < nb; b += TPR) {
        let base = row_base + b * BLOCK_BYTES;
        let x0 = b * (BLOCK_LEN / 4u);
        var s: array<vec4<f32>, MAX_COLS>;
        for (var j = 0u; j < BLOCK_LEN / 4u; j++) {
            let v = deq4_scaled(base, j);
            for (var n = 0u; n < MAX_COLS; n++) {
                if (n < p.n) {
                    s[n] += v * x[n * cols4 + x0 + j];
                }
            }
        }
        let m = f16_at(base + 2u);
        for (var n = 0u; n < MAX_COLS; n++) {
            if (n < p.n) {
                let at = sums + n * nb + b;
                acc[n] += (s[n].x + s[n].y) + (s[n].z + s[n].w) + m * x[at / 4u][at % 4u];
            }
        }
    }
    return acc;
}
