//! Recording a submission: [`Recorder`] puts consecutive dispatches in one
//! compute pass (ending it only around buffer copies), and
//! [`BindGroupCache`] keeps the bind groups of earlier submissions so
//! that a forward pass recorded again with the same buffers creates none.
//!
//! Per dispatch, a compute pass of its own and a new bind group are most
//! of the CPU cost of recording a decode step (hundreds of dispatches a
//! token); wgpu orders the dispatches of one pass as it orders passes, so
//! results do not change.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use crate::context::GpuContext;

/// A compiled compute kernel: its pipeline and the layout of its bind
/// group 0, looked up once.
#[derive(Debug)]
pub(crate) struct Kernel {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
}

/// Something a dispatch binds: a buffer, or a range of one.
pub(crate) trait Bind {
    /// The buffer, the first byte bound and how many bytes (`None`: to the
    /// end).
    fn range(&self) -> (&wgpu::Buffer, u64, Option<NonZeroU64>);
}

impl Bind for wgpu::Buffer {
    fn range(&self) -> (&wgpu::Buffer, u64, Option<NonZeroU64>) {
        (self, 0, None)
    }
}

/// One bound buffer range of a [`BindKey`].
type BoundRange = (wgpu::Buffer, u64, Option<NonZeroU64>);

/// What a bind group is made of: the kernel (by address: compiled kernels
/// live as long as their context) and its bindings, in order.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BindKey {
    kernel: usize,
    ranges: Vec<BoundRange>,
}

/// Submissions a bind group stays cached after its last use. Groups that
/// go unused this long (they hold buffers of released caches or of
/// outgrown scratch) are dropped with their buffers.
const KEEP_SUBMISSIONS: u64 = 8;

/// Bind groups of recent submissions, by kernel and bindings.
#[derive(Default)]
pub(crate) struct BindGroupCache {
    groups: HashMap<BindKey, (wgpu::BindGroup, u64)>,
    /// Submissions finished so far.
    now: u64,
}

impl BindGroupCache {
    /// Drops the groups unused in the last [`KEEP_SUBMISSIONS`] submissions;
    /// called once per submission.
    pub(crate) fn end_submission(&mut self) {
        self.now += 1;
        let now = self.now;
        self.groups
            .retain(|_, (_, used)| *used + KEEP_SUBMISSIONS > now);
    }
}

/// Counts of one recording, for the debug log and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Kernel dispatches.
    pub dispatches: usize,
    /// Compute passes (one, plus one after each copy between dispatches).
    pub passes: usize,
    /// Bind groups created (the others came from the cache).
    pub bind_groups_created: usize,
    /// Buffer copies.
    pub copies: usize,
}

/// Where kernels record one submission's work (see
/// [`GpuContext::submit`]): dispatches go into the current compute pass,
/// copies end it and the next dispatch opens another.
pub struct Recorder {
    ctx: GpuContext,
    enc: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    stats: RecordStats,
}

impl Recorder {
    pub(crate) fn new(ctx: &GpuContext, enc: wgpu::CommandEncoder) -> Self {
        Self {
            ctx: ctx.clone(),
            enc: Some(enc),
            pass: None,
            stats: RecordStats::default(),
        }
    }

    /// What has been recorded so far.
    pub fn stats(&self) -> RecordStats {
        self.stats
    }

    /// Records one dispatch of `kernel` with `entries` bound in group 0, in
    /// order, reusing a cached bind group of the same bindings.
    pub(crate) fn dispatch(
        &mut self,
        kernel: &Arc<Kernel>,
        entries: &[&dyn Bind],
        groups: (u32, u32, u32),
    ) {
        let key = BindKey {
            kernel: Arc::as_ptr(kernel) as usize,
            ranges: entries
                .iter()
                .map(|b| {
                    let (buf, offset, size) = b.range();
                    (buf.clone(), offset, size)
                })
                .collect(),
        };
        let bind = {
            let mut cache = self.ctx.bind_groups();
            let now = cache.now;
            match cache.groups.get_mut(&key) {
                Some((group, used)) => {
                    *used = now;
                    group.clone()
                }
                None => {
                    let group = self.create_bind_group(kernel, &key);
                    self.stats.bind_groups_created += 1;
                    cache.groups.insert(key, (group.clone(), now));
                    group
                }
            }
        };
        let pass = match &mut self.pass {
            Some(pass) => pass,
            None => {
                self.stats.passes += 1;
                let enc = self.enc.as_mut().expect("recorder finished");
                let pass = enc
                    .begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                    .forget_lifetime();
                self.pass.insert(pass)
            }
        };
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        self.stats.dispatches += 1;
    }

    fn create_bind_group(&self, kernel: &Kernel, key: &BindKey) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = key
            .ranges
            .iter()
            .enumerate()
            .map(|(i, (buffer, offset, size))| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset: *offset,
                    size: *size,
                }),
            })
            .collect();
        self.ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &kernel.layout,
                entries: &entries,
            })
    }

    /// Records the copy of `size` bytes from `src` at `src_offset` to `dst`
    /// at `dst_offset` (offsets and size multiples of 4), after the work
    /// recorded before it.
    pub fn copy(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) {
        self.pass = None;
        let enc = self.enc.as_mut().expect("recorder finished");
        enc.copy_buffer_to_buffer(src, src_offset, dst, dst_offset, size);
        self.stats.copies += 1;
    }

    /// Ends the recording: the command buffer to submit.
    pub(crate) fn finish(mut self) -> wgpu::CommandBuffer {
        self.pass = None;
        self.enc.take().expect("recorder finished").finish()
    }
}
