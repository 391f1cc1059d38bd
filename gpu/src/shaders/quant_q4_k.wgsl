// Q4_K: d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]; eight
// sub-blocks of 32 with 6-bit scale and min; value = d*sc*q - dmin*m.
const BLOCK_LEN: u32 = 256u;
const BLOCK_BYTES: u32 = 144u;
// Sub-block `sub`'s d * sc and dmin * m.
fn scale_min(base: u32, sub: u32) -> vec2<f32> {
    let s = base + 4u;
    var sc: u32;
    var m: u32;
    if (sub < 4u) {
        sc = byte_at(s + sub) & 63u;
        m = byte_at(s + sub + 4u) & 63u;
    } else {
        sc = (byte_at(s + sub + 4u) & 0xFu) | ((byte_at(s + sub - 4u) >> 6u) << 4u);
        m = (byte_at(s + sub + 4u) >> 4u) | ((byte_at(s + sub) >> 6u) << 4u);
    }
    return vec2<f32>(f16_at(base) * f32(sc), f16_at(base + 2u) * f32(m));
}
fn deq(base: u32, j: u32) -> f32 {
    let g = j >> 6u;          // group of 64: two sub-blocks
    let within = j & 63u;
    let q = (byte_at(base + 16u + 32u * g + (within & 31u)) >> ((within >> 5u) * 4u)) & 0xFu;
    let dm = scale_min(base, 2u * g + (within >> 5u));
    return dm.x * f32(q) - dm.y;
}
// Elements 4 * j4 .. 4 * j4 + 3: one sub-block's scale and minimum, four
// nibbles of one word.
fn deq4(base: u32, j4: u32) -> vec4<f32> {
    let j = 4u * j4;
    let g = j >> 6u;
    let within = j & 63u;
    let v = (w[(base + 16u + 32u * g + (within & 31u)) >> 2u] >> ((within >> 5u) * 4u)) & 0x0F0F0F0Fu;
    let dm = scale_min(base, 2u * g + (within >> 5u));
    return dm.x * vec4<f32>(bytes4(v)) - dm.y;
}
