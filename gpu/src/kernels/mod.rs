//! Kernel wrappers: each compiles its WGSL once per context, binds buffers
//! and records dispatches into a command encoder.

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

/// Something a dispatch binds: a whole buffer, or data staged for it.
pub(crate) trait Bind {
    fn resource(&self) -> wgpu::BindingResource<'_>;
}

impl Bind for wgpu::Buffer {
    fn resource(&self) -> wgpu::BindingResource<'_> {
        self.as_entire_binding()
    }
}

impl Bind for crate::context::Staged {
    fn resource(&self) -> wgpu::BindingResource<'_> {
        self.binding()
    }
}

/// Records one dispatch of `pipeline` with `entries` bound in group 0.
pub(crate) fn dispatch(
    ctx: &crate::GpuContext,
    enc: &mut wgpu::CommandEncoder,
    pipeline: &wgpu::ComputePipeline,
    entries: &[&dyn Bind],
    groups: (u32, u32, u32),
) {
    let layout = pipeline.get_bind_group_layout(0);
    let entries: Vec<wgpu::BindGroupEntry> = entries
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.resource(),
        })
        .collect();
    let bind = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &layout,
        entries: &entries,
    });
    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, &bind, &[]);
    pass.dispatch_workgroups(groups.0, groups.1, groups.2);
}
