// Q8_0: d: f16, qs: [i8; 32].
const BLOCK_LEN: u32 = 32u;
const BLOCK_BYTES: u32 = 34u;
fn deq(base: u32, j: u32) -> f32 {
    return i8_at(base + 2u + j) * f16_at(base);
}
