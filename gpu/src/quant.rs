//! The GGML weight types the GPU kernels implement, by GGUF type id, and
//! the WGSL snippet that dequantizes each; the 8-bit activation formats
//! edgeloop-core's dot products quantize activations to, per weight type.

use crate::error::{GpuError, Result};

/// A GGML weight type with a GPU kernel. The ids are GGUF's (the same as
/// `edgeloop_core::quant::GgmlType::id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightType {
    /// Plain f32.
    F32,
    /// IEEE half.
    F16,
    /// 32-element blocks: f16 scale, 4-bit values offset by 8.
    Q4_0,
    /// 32-element blocks: f16 scale and min, 4-bit values.
    Q4_1,
    /// 32-element blocks: f16 scale, 5-bit values offset by 16.
    Q5_0,
    /// 32-element blocks: f16 scale, 8-bit values.
    Q8_0,
    /// 256-element super-blocks of eight 32-element sub-blocks, 4-bit.
    Q4K,
    /// 256-element super-blocks of sixteen 16-element sub-blocks, 6-bit.
    Q6K,
}

/// Every weight type the GPU kernels implement.
pub const ALL: [WeightType; 8] = [
    WeightType::F32,
    WeightType::F16,
    WeightType::Q4_0,
    WeightType::Q4_1,
    WeightType::Q5_0,
    WeightType::Q8_0,
    WeightType::Q4K,
    WeightType::Q6K,
];

impl WeightType {
    /// The type of GGUF type id `id`, or [`GpuError::Unsupported`].
    pub fn from_ggml_id(id: u32) -> Result<Self> {
        ALL.into_iter()
            .find(|t| t.ggml_id() == id)
            .ok_or(GpuError::Unsupported(id))
    }

    /// The GGUF type id.
    pub fn ggml_id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q8_0 => 8,
            Self::Q4K => 12,
            Self::Q6K => 14,
        }
    }

    /// Elements per block.
    pub fn block_len(self) -> usize {
        match self {
            Self::F32 | Self::F16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q8_0 => 32,
            Self::Q4K | Self::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q6K => 210,
        }
    }

    /// Bytes of one row of `cols` values, or [`GpuError::Shape`] when `cols`
    /// is not a whole number of blocks.
    pub fn row_bytes(self, cols: usize) -> Result<usize> {
        if cols == 0 || !cols.is_multiple_of(self.block_len()) {
            return Err(GpuError::Shape(format!(
                "{cols} columns of {self:?} are not a whole number of {}-element blocks",
                self.block_len()
            )));
        }
        Ok(cols / self.block_len() * self.block_bytes())
    }

    /// The format edgeloop-core quantizes activations to before its dot
    /// products with weights of this type (ggml's `vec_dot_type`); `None`
    /// for F32 and F16, whose products take the f32 activations.
    pub fn act_format(self) -> Option<ActFormat> {
        match self {
            Self::F32 | Self::F16 => None,
            Self::Q4_0 | Self::Q5_0 | Self::Q8_0 => Some(ActFormat::Q8_0),
            Self::Q4_1 => Some(ActFormat::Q8_1),
            Self::Q4K | Self::Q6K => Some(ActFormat::Q8K),
        }
    }

    /// The GGML name (`Q4_K`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q8_0 => "Q8_0",
            Self::Q4K => "Q4_K",
            Self::Q6K => "Q6_K",
        }
    }

    /// The WGSL that defines `BLOCK_LEN`, `BLOCK_BYTES` and `deq(base, j)`
    /// (element `j` of the block at byte `base` of `w`).
    pub(crate) fn wgsl(self) -> &'static str {
        match self {
            Self::F32 => include_str!("shaders/quant_f32.wgsl"),
            Self::F16 => include_str!("shaders/quant_f16.wgsl"),
            Self::Q4_0 => include_str!("shaders/quant_q4_0.wgsl"),
            Self::Q4_1 => include_str!("shaders/quant_q4_1.wgsl"),
            Self::Q5_0 => include_str!("shaders/quant_q5_0.wgsl"),
            Self::Q8_0 => include_str!("shaders/quant_q8_0.wgsl"),
            Self::Q4K => include_str!("shaders/quant_q4_k.wgsl"),
            Self::Q6K => include_str!("shaders/quant_q6_k.wgsl"),
        }
    }

    /// A kernel's WGSL for this type: the byte readers, the type's
    /// dequantizer and the kernel `main`.
    pub(crate) fn shader(self, kernel: &str) -> String {
        format!(
            "{}\n{}\n{}",
            include_str!("shaders/common.wgsl"),
            self.wgsl(),
            kernel
        )
    }
}

/// An 8-bit activation format of edgeloop-core (`core/src/quant/activation.rs`),
/// which the matrix products mirror by rounding their activations to the
/// values it represents
/// ([`round_activations`](crate::kernels::matmul::round_activations)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActFormat {
    /// 32-value blocks: f16 scale `d = amax / 127`, `q` in `-127..=127`.
    Q8_0,
    /// Q8_0's values, and per block `s = d * sum(q)` (rounded to f16, with
    /// the unrounded `d`), which Q4_1's block minimums multiply.
    Q8_1,
    /// 256-value blocks: f32 scale, `q = round(-127 * x / max)`, `max` the
    /// value of largest magnitude.
    Q8K,
}

impl ActFormat {
    /// Values per block.
    pub fn block_len(self) -> usize {
        match self {
            Self::Q8_0 | Self::Q8_1 => 32,
            Self::Q8K => 256,
        }
    }

    /// The f32 values rounding `len` activations produces: the `len` rounded
    /// values, then for Q8_1 one `s` per block.
    pub fn rounded_len(self, len: usize) -> usize {
        match self {
            Self::Q8_1 => len + len / 32,
            Self::Q8_0 | Self::Q8K => len,
        }
    }

    /// The name of its entry point in `shaders/act_round.wgsl`.
    pub(crate) fn entry(self) -> &'static str {
        match self {
            Self::Q8_0 => "q8_0",
            Self::Q8_1 => "q8_1",
            Self::Q8K => "q8_k",
        }
    }
}
