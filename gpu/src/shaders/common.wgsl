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
