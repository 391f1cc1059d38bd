const BLOCK_LEN: u32 = 1u;
const BLOCK_BYTES: u32 = 2u;
fn deq(base: u32, j: u32) -> f32 {
    return f16_at(base);
}
fn deq4(base: u32, j4: u32) -> vec4<f32> {
    return deq4_each(base, j4);
}
