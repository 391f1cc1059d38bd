// Q5_0: d: f16, qh: u32 (LE, at byte 2), qs: [u8; 16]; bit j of qh is the
// fifth bit of element j; value = d * (q5 - 16).
const BLOCK_LEN: u32 = 32u;
const BLOCK_BYTES: u32 = 22u;
fn deq(base: u32, j: u32) -> f32 {
    let qh = u16_at(base + 2u) | (u16_at(base + 4u) << 16u);
    let lo = (byte_at(base + 6u + (j & 15u)) >> ((j >> 4u) * 4u)) & 0xFu;
    let q = lo | (((qh >> j) & 1u) << 4u);
    return f32(i32(q) - 16) * f16_at(base);
}
// Elements 4 * j4 .. 4 * j4 + 3: four nibbles of one word and four bits
// of qh.
fn deq4(base: u32, j4: u32) -> vec4<f32> {
    let qh = u32_at(base + 2u) >> (4u * j4);
    let lo = (u32_at(base + 6u + 4u * (j4 & 3u)) >> ((j4 >> 2u) * 4u)) & 0x0F0F0F0Fu;
    let hi = vec4<u32>(qh & 1u, (qh >> 1u) & 1u, (qh >> 2u) & 1u, (qh >> 3u) & 1u) << vec4<u32>(4u);
    return (vec4<f32>(bytes4(lo) | hi) - 16.0) * f16_at(base);
}
