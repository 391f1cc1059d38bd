// Q4_0: d: f16, qs: [u8; 16]; low nibbles are elements 0..16, high 16..32.
const BLOCK_LEN: u32 = 32u;
const BLOCK_BYTES: u32 = 18u;
fn deq(base: u32, j: u32) -> f32 {
    let q = (byte_at(base + 2u + (j & 15u)) >> ((j >> 4u) * 4u)) & 0xFu;
    return f32(i32(q) - 8) * f16_at(base);
}
// Elements 4 * j4 .. 4 * j4 + 3: four nibbles of one word.
fn deq4(base: u32, j4: u32) -> vec4<f32> {
    let v = (u32_at(base + 2u + 4u * (j4 & 3u)) >> ((j4 >> 2u) * 4u)) & 0x0F0F0F0Fu;
    return (vec4<f32>(bytes4(v)) - 8.0) * f16_at(base);
}
