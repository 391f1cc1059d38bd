// Q6_K: ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16 (at 208);
// sixteen sub-blocks of 16 with an 8-bit scale; value = d * sc * (q6 - 32).
const BLOCK_LEN: u32 = 256u;
const BLOCK_BYTES: u32 = 210u;
fn deq(base: u32, j: u32) -> f32 {
    let h = j >> 7u;          // half of 128
    let k = (j >> 5u) & 3u;   // quarter of the half
    let l = j & 31u;
    let ql = byte_at(base + 64u * h + l + 32u * (k & 1u));
    let nib = (ql >> (4u * (k >> 1u))) & 0xFu;
    let hb = (byte_at(base + 128u + 32u * h + l) >> (2u * k)) & 3u;
    let q = i32(nib | (hb << 4u)) - 32;
    let sc = i8_at(base + 192u + 8u * h + (l >> 4u) + 2u * k);
    return f16_at(base + 208u) * sc * f32(q);
}
// Elements 4 * j4 .. 4 * j4 + 3: one sub-block's scale, four bytes each
// of ql and qh.
fn deq4(base: u32, j4: u32) -> vec4<f32> {
    let j = 4u * j4;
    let h = j >> 7u;
    let k = (j >> 5u) & 3u;
    let l = j & 31u;
    let nib = (u32_at(base + 64u * h + l + 32u * (k & 1u)) >> (4u * (k >> 1u))) & 0x0F0F0F0Fu;
    let hb = (u32_at(base + 128u + 32u * h + l) >> (2u * k)) & 0x03030303u;
    let q = vec4<f32>(bytes4(nib | (hb << 4u))) - 32.0;
    let sc = i8_at(base + 192u + 8u * h + (l >> 4u) + 2u * k);
    return f16_at(base + 208u) * sc * q;
}
