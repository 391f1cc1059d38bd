//! Kernel wrappers: each compiles its WGSL once per context, binds buffers
//! and records dispatches into a [`Recorder`](crate::record::Recorder).

pub mod attention;
pub mod elementwise;
pub mod matmul;

/// Threads per workgroup of the one-dimensional kernels.
pub(crate) const WG: u32 = 64;

/// The largest workgroup count along one dimension that every device allows.
pub(crate) const MAX_GROUPS: u32 = 65535;

/// `source` with `shaders/round_f16.wgsl` (f16 rounding exactly as core's)
/// prepended, for the shaders that call `round_f16`.
pub(crate) fn with_round_f16(source: &str) -> String {
    format!("{}\n{source}", include_str!("../shaders/round_f16.wgsl"))
}

/// Splits `groups` workgroups into an `(x, y)` grid within the per-dimension
/// limit; kernels compute `wid.y * x + wid.x`.
pub(crate) fn grid(groups: u32) -> (u32, u32) {
    if groups <= MAX_GROUPS {
        (groups.max(1), 1)
    } else {
        (MAX_GROUPS, groups.div_ceil(MAX_GROUPS))
    }
}
