//! The device: adapter selection, optional features, limits and a cache of
//! compiled compute pipelines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{GpuError, Result};
use crate::record::{Bind, BindGroupCache, Kernel, RecordStats, Recorder};

/// Optional device features that were available on the adapter and are on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuFeatures {
    /// WGSL `f16` arithmetic (`enable f16;`).
    pub shader_f16: bool,
    /// Subgroup operations (`subgroupAdd` and friends).
    pub subgroups: bool,
}

/// A GPU device and queue, with what it supports and the kernels compiled
/// on it so far. Clones share the device, queue and compiled kernels.
#[derive(Clone)]
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    features: GpuFeatures,
    limits: wgpu::Limits,
    max_binding: u64,
    use_subgroups: bool,
    round_acts: bool,
    act_scratch: Arc<Mutex<Option<wgpu::Buffer>>>,
    pipelines: Arc<Mutex<HashMap<String, Arc<Kernel>>>>,
    bind_groups: Arc<Mutex<BindGroupCache>>,
    /// Held for the whole of a [`GpuContext::submit`], so that recordings
    /// from several threads do not share the arena.
    recording: Arc<Mutex<()>>,
    arena: Arc<Mutex<Arena>>,
}

/// Bytes per buffer of the [`Arena`].
const ARENA_CHUNK: usize = 64 << 10;

/// Where the small data of one submission's dispatches (kernel parameters,
/// token positions and ids) goes: while [`GpuContext::submit`] records,
/// [`GpuContext::stage`] appends each piece to host memory at an aligned
/// offset of one of a few device buffers kept for the context's life, and
/// the submission writes each buffer once before its commands run. One
/// new buffer per dispatch, each with its own staging copy, cost tens of
/// microseconds a dispatch on a discrete GPU.
#[derive(Default)]
struct Arena {
    /// Device buffers of [`ARENA_CHUNK`] bytes (uniform and storage).
    buffers: Vec<wgpu::Buffer>,
    /// The host copy of each buffer; the first `used` hold what this
    /// submission has staged (the others keep their memory for later ones).
    staged: Vec<Vec<u8>>,
    used: usize,
    /// Whether a submission is recording.
    active: bool,
}

/// A piece of data staged in the arena (or, outside a submission, a buffer
/// of its own): what a bind group entry binds.
#[derive(Clone, Debug)]
pub(crate) struct Staged {
    buffer: wgpu::Buffer,
    offset: u64,
    size: u64,
}

impl Bind for Staged {
    fn range(&self) -> (&wgpu::Buffer, u64, Option<std::num::NonZeroU64>) {
        (
            &self.buffer,
            self.offset,
            std::num::NonZeroU64::new(self.size),
        )
    }
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .field("device_type", &self.info.device_type)
            .field("features", &self.features)
            .field("max_binding", &self.max_binding)
            .finish()
    }
}

impl GpuContext {
    /// Opens the first high-performance adapter of the backends named in
    /// `WGPU_BACKEND` (all backends when it is unset) and a device on it.
    ///
    /// shader-f16 and subgroups are requested only when the adapter has
    /// them ([`GpuContext::features`] says which are on); the limits are the
    /// adapter's own. Fails with [`GpuError::NoAdapter`] when there is no
    /// adapter, which a caller can print before falling back to the CPU.
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async(true))
    }

    /// [`GpuContext::new`], but a software adapter (device type `Cpu`, such
    /// as llvmpipe) counts as none: it fails with [`GpuError::NoAdapter`]
    /// before a device is created.
    pub fn hardware() -> Result<Self> {
        pollster::block_on(Self::new_async(false))
    }

    async fn new_async(software: bool) -> Result<Self> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter { why: e.to_string() })?;
        let info = adapter.get_info();
        if !software && info.device_type == wgpu::DeviceType::Cpu {
            return Err(GpuError::NoAdapter {
                why: format!(
                    "the only adapter, {} ({:?}), is a software rasterizer",
                    info.name, info.backend
                ),
            });
        }
        let available = adapter.features();
        let mut required = wgpu::Features::empty();
        let features = GpuFeatures {
            shader_f16: available.contains(wgpu::Features::SHADER_F16),
            subgroups: available.contains(wgpu::Features::SUBGROUP),
        };
        if features.shader_f16 {
            required |= wgpu::Features::SHADER_F16;
        }
        if features.subgroups {
            required |= wgpu::Features::SUBGROUP;
        }
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("edgeloop"),
                required_features: required,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await?;
        log::info!(
            "GPU: {} ({:?}, {:?}), {:?}",
            info.name,
            info.backend,
            info.device_type,
            features
        );
        Ok(Self {
            device,
            queue,
            info,
            features,
            max_binding: limits.max_storage_buffer_binding_size,
            use_subgroups: features.subgroups,
            round_acts: true,
            act_scratch: Arc::new(Mutex::new(None)),
            limits,
            pipelines: Arc::new(Mutex::new(HashMap::new())),
            bind_groups: Arc::new(Mutex::new(BindGroupCache::default())),
            recording: Arc::new(Mutex::new(())),
            arena: Arc::new(Mutex::new(Arena::default())),
        })
    }

    /// The adapter's name, backend, device type and driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The optional features that are on.
    pub fn features(&self) -> GpuFeatures {
        self.features
    }

    /// The device's limits (the adapter's).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// The largest storage buffer one binding may hold, in bytes: the
    /// device's `max_storage_buffer_binding_size` unless lowered with
    /// [`GpuContext::set_max_binding_size`].
    pub fn max_binding_size(&self) -> u64 {
        self.max_binding
    }

    /// Lowers the binding size that tensors are split at (never above the
    /// device's limit; at least 4 bytes). For tests of the split path.
    pub fn set_max_binding_size(&mut self, bytes: u64) {
        self.max_binding = bytes
            .min(self.limits.max_storage_buffer_binding_size)
            .max(4);
    }

    /// Whether a storage binding may start at byte `offset` of a buffer
    /// (a multiple of the device's `min_storage_buffer_offset_alignment`).
    pub(crate) fn can_bind_at(&self, offset: u64) -> bool {
        offset.is_multiple_of(u64::from(self.limits.min_storage_buffer_offset_alignment))
    }

    /// Whether kernels use subgroup operations (on when the device has them).
    pub fn uses_subgroups(&self) -> bool {
        self.use_subgroups
    }

    /// Turns the subgroup kernels off (or back on, where the device has
    /// subgroups): for comparing the two reductions, or working around a
    /// driver.
    pub fn set_use_subgroups(&mut self, on: bool) {
        self.use_subgroups = on && self.features.subgroups;
    }

    /// Whether matrix products round their activations to the values of
    /// edgeloop-core's 8-bit activation formats first (on unless turned
    /// off), as the CPU path quantizes them before its integer dot products:
    /// see [`kernels::matmul::matmul`](crate::kernels::matmul::matmul).
    pub fn rounds_activations(&self) -> bool {
        self.round_acts
    }

    /// Turns the activation rounding of the matrix products off (f32
    /// activations, slightly more precise than the CPU path and cheaper by
    /// one dispatch per product) or back on.
    pub fn set_round_activations(&mut self, on: bool) {
        self.round_acts = on;
    }

    /// A storage buffer of at least `bytes` bytes for rounded activations,
    /// shared by the matrix products recorded on this context: each one
    /// writes it and then reads it in consecutive dispatches, which wgpu
    /// orders. It grows (to a new buffer; recorded work keeps the old one
    /// alive) and never shrinks.
    pub(crate) fn act_scratch(&self, bytes: u64) -> wgpu::Buffer {
        let mut slot = self.act_scratch.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(buf) if buf.size() >= bytes => buf.clone(),
            _ => {
                let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("rounded activations"),
                    size: bytes
                        .max(4)
                        .next_power_of_two()
                        .min(self.limits.max_storage_buffer_binding_size)
                        .max(bytes),
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                });
                *slot = Some(buf.clone());
                buf
            }
        }
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// `bytes` (zero-padded to a multiple of 4) for one dispatch, bound as
    /// a uniform or a read-only storage buffer: staged in the arena while
    /// [`GpuContext::submit`] records, else in a buffer of its own.
    pub(crate) fn stage(&self, label: &str, bytes: &[u8]) -> Staged {
        let size = bytes.len().div_ceil(4).max(1) * 4;
        let align = (self.limits.min_uniform_buffer_offset_alignment)
            .max(self.limits.min_storage_buffer_offset_alignment) as usize;
        let mut arena = self.arena.lock().unwrap_or_else(|e| e.into_inner());
        if !arena.active || size > ARENA_CHUNK {
            drop(arena);
            let buffer = wgpu::util::DeviceExt::create_buffer_init(
                &self.device,
                &wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: &crate::buffer::padded(bytes),
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::STORAGE,
                },
            );
            return Staged {
                buffer,
                offset: 0,
                size: size as u64,
            };
        }
        let fits = |v: &Vec<u8>| v.len().next_multiple_of(align) + size <= ARENA_CHUNK;
        let current = arena.used.checked_sub(1).map(|i| &arena.staged[i]);
        if !current.is_some_and(fits) {
            if arena.staged.len() == arena.used {
                arena.staged.push(Vec::with_capacity(ARENA_CHUNK));
            }
            let next = arena.used;
            arena.staged[next].clear();
            arena.used += 1;
        }
        let index = arena.used - 1;
        if arena.buffers.len() <= index {
            let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kernel parameters"),
                size: ARENA_CHUNK as u64,
                usage: wgpu::BufferUsages::UNIFORM
                    | wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            arena.buffers.push(buffer);
        }
        let staged = &mut arena.staged[index];
        let offset = staged.len().next_multiple_of(align);
        staged.resize(offset, 0);
        staged.extend_from_slice(bytes);
        staged.resize(offset + size, 0);
        Staged {
            buffer: arena.buffers[index].clone(),
            offset: offset as u64,
            size: size as u64,
        }
    }

    /// The bind groups kept across submissions (see [`Recorder`]).
    pub(crate) fn bind_groups(&self) -> std::sync::MutexGuard<'_, BindGroupCache> {
        self.bind_groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kernel of entry point `entry` of the WGSL `source`, compiled
    /// once and cached under `key`. Shader and pipeline errors are returned
    /// as [`GpuError::Validation`].
    pub(crate) fn pipeline(
        &self,
        key: &str,
        source: impl FnOnce() -> String,
        entry: &str,
    ) -> Result<Arc<Kernel>> {
        let mut cache = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(key) {
            return Ok(p.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(key),
                source: wgpu::ShaderSource::Wgsl(source().into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(key),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Validation {
                what: key.to_string(),
                message: e.to_string(),
            });
        }
        let layout = pipeline.get_bind_group_layout(0);
        let p = Arc::new(Kernel { pipeline, layout });
        cache.insert(key.to_string(), p.clone());
        Ok(p)
    }

    /// Records work with `record` into a new [`Recorder`], submits it and
    /// checks for validation errors raised while recording. Returns what
    /// was recorded.
    pub fn submit(
        &self,
        what: &str,
        record: impl FnOnce(&mut Recorder) -> Result<()>,
    ) -> Result<RecordStats> {
        let _recording = self.recording.lock().unwrap_or_else(|e| e.into_inner());
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(what) });
        {
            let mut arena = self.arena.lock().unwrap_or_else(|e| e.into_inner());
            arena.used = 0;
            arena.active = true;
        }
        let mut recorder = Recorder::new(self, enc);
        let recorded = record(&mut recorder);
        let stats = recorder.stats();
        let cmd = recorder.finish();
        let mut arena = self.arena.lock().unwrap_or_else(|e| e.into_inner());
        arena.active = false;
        if recorded.is_ok() {
            // Queue writes land before the commands submitted next.
            for (buffer, bytes) in arena.buffers.iter().zip(&arena.staged[..arena.used]) {
                self.queue.write_buffer(buffer, 0, bytes);
            }
            self.queue.submit([cmd]);
        }
        drop(arena);
        self.bind_groups().end_submission();
        let err = pollster::block_on(scope.pop());
        recorded?;
        match err {
            Some(e) => Err(GpuError::Validation {
                what: what.to_string(),
                message: e.to_string(),
            }),
            None => Ok(stats),
        }
    }
}
