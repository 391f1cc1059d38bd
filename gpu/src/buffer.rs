//! Buffers: weights uploaded once (split into row-aligned chunks when a
//! tensor is larger than one storage binding may be), f32 vectors for
//! activations, and reading f32 results back.

use wgpu::util::DeviceExt;

use crate::context::{GpuContext, Staged};
use crate::error::{GpuError, Result};

/// Usage of the storage buffers this crate creates.
const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// `bytes` rounded up to a multiple of 4 (storage buffers are read as `u32`).
pub(crate) fn padded(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if bytes.len().is_multiple_of(4) && !bytes.is_empty() {
        return bytes.into();
    }
    let mut v = bytes.to_vec();
    v.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
    v.into()
}

/// Uploads `bytes` into a new storage buffer, zero-padded to a multiple of 4
/// bytes (at least 4).
pub fn upload_bytes(ctx: &GpuContext, label: &str, bytes: &[u8]) -> wgpu::Buffer {
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &padded(bytes),
            usage: STORAGE,
        })
}

/// Kernel parameters, `u32` words padded to a multiple of 16 bytes, staged
/// for one dispatch (see [`GpuContext::stage`]).
pub(crate) fn uniform(ctx: &GpuContext, words: &[u32]) -> Staged {
    let mut w = words.to_vec();
    w.resize(w.len().div_ceil(4).max(1) * 4, 0);
    ctx.stage("params", bytemuck::cast_slice(&w))
}

/// A vector of f32 values on the device (activations, norms, results): a
/// buffer of its own, or a view of `len` values from byte `offset` of a
/// buffer another vector holds too.
#[derive(Debug)]
pub struct GpuVec {
    buf: wgpu::Buffer,
    offset: u64,
    len: usize,
}

impl crate::record::Bind for GpuVec {
    fn range(&self) -> (&wgpu::Buffer, u64, Option<std::num::NonZeroU64>) {
        (&self.buf, self.offset, None)
    }
}

impl GpuVec {
    /// Uploads `data`.
    pub fn from_slice(ctx: &GpuContext, data: &[f32]) -> Self {
        Self {
            buf: upload_bytes(ctx, "f32 vector", bytemuck::cast_slice(data)),
            offset: 0,
            len: data.len(),
        }
    }

    /// `len` zeros.
    pub fn zeros(ctx: &GpuContext, len: usize) -> Self {
        let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("f32 vector"),
            size: (len.max(1) * 4) as u64,
            usage: STORAGE,
            mapped_at_creation: false,
        });
        Self {
            buf,
            offset: 0,
            len,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Overwrites the values with `data` (same length).
    pub fn write(&self, ctx: &GpuContext, data: &[f32]) -> Result<()> {
        if data.len() != self.len {
            return Err(GpuError::Shape(format!(
                "writing {} values into a vector of {}",
                data.len(),
                self.len
            )));
        }
        if !data.is_empty() {
            ctx.queue
                .write_buffer(&self.buf, self.offset, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Reads the values back (waits for all submitted work).
    pub fn read(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        read_range(ctx, &self.buf, self.offset, self.len)
    }

    /// The first `len` values (at most all of them), sharing the buffer:
    /// for scratch vectors kept at their largest size.
    pub(crate) fn prefix(&self, len: usize) -> GpuVec {
        Self {
            buf: self.buf.clone(),
            offset: self.offset,
            len: len.min(self.len),
        }
    }

    /// Rows `first..first + count` of `width` values, sharing the buffer,
    /// when they start at an offset the device can bind (its
    /// `min_storage_buffer_offset_alignment`); `None` otherwise or when
    /// they lie outside the vector.
    pub(crate) fn rows(
        &self,
        ctx: &GpuContext,
        first: usize,
        count: usize,
        width: usize,
    ) -> Option<GpuVec> {
        let offset = self.offset + (first * width * 4) as u64;
        ((first + count) * width <= self.len && ctx.can_bind_at(offset)).then(|| Self {
            buf: self.buf.clone(),
            offset,
            len: count * width,
        })
    }

    /// The underlying buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buf
    }

    /// Where in [`GpuVec::buffer`] the values start, in bytes.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// A buffer of `bytes` bytes that the host maps to read results.
pub(crate) fn readback_buffer(ctx: &GpuContext, bytes: u64) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: bytes.max(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Reads the first `len` f32 values of `buf` (a buffer with `COPY_SRC`),
/// waiting for the work submitted before.
pub fn read_f32(ctx: &GpuContext, buf: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
    read_range(ctx, buf, 0, len)
}

/// [`read_f32`] from byte `offset` of `buf`.
fn read_range(ctx: &GpuContext, buf: &wgpu::Buffer, offset: u64, len: usize) -> Result<Vec<f32>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let size = (len * 4) as u64;
    let staging = readback_buffer(ctx, size);
    ctx.submit("readback", |rec| {
        rec.copy(buf, offset, &staging, 0, size);
        Ok(())
    })?;
    map_f32(ctx, &staging, len)
}

/// Maps `staging` (a [`readback_buffer`]) once the work submitted before
/// has run, and reads its first `len` f32 values.
pub(crate) fn map_f32(ctx: &GpuContext, staging: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
    let bytes = (len * 4) as u64;
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
        let _ = tx.send(r);
    });
    ctx.device.poll(wgpu::PollType::wait_indefinitely())?;
    match rx.recv() {
        Ok(r) => r?,
        Err(_) => {
            return Err(GpuError::Validation {
                what: "readback".into(),
                message: "the map callback never ran".into(),
            })
        }
    }
    let view = staging
        .get_mapped_range(..bytes)
        .map_err(|e| GpuError::Validation {
            what: "readback".into(),
            message: e.to_string(),
        })?;
    let out = view
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    drop(view);
    staging.unmap();
    Ok(out)
}

/// One part of a [`GpuMatrix`]: rows `row_start..row_start + rows`.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub buf: wgpu::Buffer,
    pub row_start: usize,
    pub rows: usize,
}

/// Plans the split of `rows` rows of `row_bytes` bytes each into chunks of
/// whole rows no larger than `limit` bytes (rounded up to 4 for padding):
/// `(row_start, rows)` per chunk.
pub fn plan_chunks(rows: usize, row_bytes: usize, limit: u64) -> Result<Vec<(usize, usize)>> {
    let per = row_bytes.div_ceil(4) as u64 * 4;
    if per > limit {
        return Err(GpuError::TooLarge {
            what: "one matrix row".into(),
            bytes: per,
            limit,
        });
    }
    let max_rows = ((limit - 3) / row_bytes.max(1) as u64).max(1) as usize;
    let mut out = Vec::new();
    let mut r = 0;
    while r < rows {
        let n = max_rows.min(rows - r);
        out.push((r, n));
        r += n;
    }
    Ok(out)
}
