// Q8_0: d: f16, qs: [i8; 32].
const BLOCK_LEN: u32 = 32u;
const BLOCK_BYTES: u32 = 34u;
fn deq(base: u32, j: u32) -> f32 {
    return i8_at(base + 2u + j) * f16_at(base);
}
// Elements 4 * j4 .. 4 * j4 + 3: four signed bytes of one word.
fn deq4(base: u32, j4: u32) -> vec4<f32> {
    return i8x4(u32_at(base + 2u + 4u * j4)) * f16_at(base);
}
