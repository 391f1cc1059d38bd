// Byte-level reads of GGML blocks from the weight buffer `w: array<u32>`
// (declared by the kernel). Blocks are not 4-byte aligned in general, but
// every block size is even, so f16 fields sit at even byte offsets.

fn byte_at(off: u32) -> u32 {
    return (w[off >> 2u] >> ((off & 3u) * 8u)) & 0xFFu;
}

fn i8_at(off: u32) -> f32 {
    return f32(bitcast<i32>(byte_at(off) << 24u) >> 24u);
}

fn u16_at(off: u32) -> u32 {
    return (w[off >> 2u] >> ((off & 2u) * 8u)) & 0xFFFFu;
}

fn f16_at(off: u32) -> f32 {
    let v = unpack2x16float(w[off >> 2u]);
    return select(v.x, v.y, (off & 2u) != 0u);
}

// The 4 bytes at `off` (an even offset) as one little-endian word.
fn u32_at(off: u32) -> u32 {
    let i = off >> 2u;
    if ((off & 2u) == 0u) {
        return w[i];
    }
    return (w[i] >> 16u) | (w[i + 1u] << 16u);
}

// The 4 bytes of `v`, lowest first.
fn bytes4(v: u32) -> vec4<u32> {
    return vec4<u32>(v & 0xFFu, (v >> 8u) & 0xFFu, (v >> 16u) & 0xFFu, v >> 24u);
}

// The 4 bytes of `v` as signed values, lowest first.
fn i8x4(v: u32) -> vec4<f32> {
    let s = bitcast<i32>(v);
    return vec4<f32>(vec4<i32>((s << 24u) >> 24u, (s << 16u) >> 24u, (s << 8u) >> 24u, s >> 24u));
}

// Elements 4 * j4 .. 4 * j4 + 3 of the block at `base`, one `deq` each
// (for types without a word-wise `deq4`).
fn deq4_each(base: u32, j4: u32) -> vec4<f32> {
    let j = 4u * j4;
    return vec4<f32>(deq(base, j), deq(base, j + 1u), deq(base, j + 2u), deq(base, j + 3u));
}
