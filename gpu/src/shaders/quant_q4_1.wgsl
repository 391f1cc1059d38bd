// Q4_1: d: f16, m: f16, qs: [u8; 16]; value = d * nibble + m.
const BLOCK_LEN: u32 = 32u;
const BLOCK_BYTES: u32 = 20u;
// d * nibble of element j, without the block's minimum.
fn deq_scaled(base: u32, j: u32) -> f32 {
    let q = (byte_at(base + 4u + (j & 15u)) >> ((j >> 4u) * 4u)) & 0xFu;
    return f32(q) * f16_at(base);
}
fn deq(base: u32, j: u32) -> f32 {
    return deq_scaled(base, j) + f16_at(base + 2u);
}
// d * nibble of elements 4 * j4 .. 4 * j4 + 3: four nibbles of one word.
fn deq4_scaled(base: u32, j4: u32) -> vec4<f32> {
    let v = (w[(base + 4u + 4u * (j4 & 3u)) >> 2u] >> ((j4 >> 2u) * 4u)) & 0x0F0F0F0Fu;
    return vec4<f32>(bytes4(v)) * f16_at(base);
}
fn deq4(base: u32, j4: u32) -> vec4<f32> {
    return deq4_scaled(base, j4) + f16_at(base + 2u);
}
