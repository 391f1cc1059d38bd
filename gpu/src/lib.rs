//! edgeloop-gpu: edgeloop's GPU backend, on wgpu (Vulkan, Metal, DX12)
//! with WGSL compute kernels.
//!
//! What it holds:
//! - [`context`]: [`GpuContext`], the device (adapter from `WGPU_BACKEND`,
//!   optional shader-f16 and subgroups when the adapter has them, the
//!   adapter's limits) and a cache of compiled pipelines.
//!   [`GpuError::NoAdapter`] tells a caller to fall back to the CPU.
//! - [`buffer`]: weights uploaded once (split into chunks of whole rows when
//!   a tensor exceeds `max_storage_buffer_binding_size`), f32 vectors and
//!   reading results back.
//! - [`kernels::matmul`]: quantized matrix × f32 activations for 1 to 16
//!   activation columns and embedding row lookup, for every
//!   [`quant::WeightType`] (F32, F16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K),
//!   reading the GGML block layouts straight from the file's bytes. By
//!   default a product first rounds its activations to exactly the values
//!   edgeloop-core's 8-bit activation quantizers give
//!   ([`quant::ActFormat`]: Q8_0, Q8_1 with its per-block sums for Q4_1,
//!   Q8_K), so it computes what the CPU's integer dot products do, up to
//!   f32 summation order;
//!   [`GpuContext::set_round_activations`] turns that off.
//! - [`kernels::elementwise`]: RMSNorm, rope (NeoX and adjacent pairs),
//!   softmax, SiLU/GELU gating and addition.
//! - [`kernels::attention`]: an f16 key/value cache per layer kept on the
//!   device ([`kernels::attention::GpuKvLayer`], filled from f32 keys and
//!   values or from CPU f16 rows) and causal, optionally sliding-window,
//!   grouped-query attention with core's `ops::attend_f16` semantics.
//! - [`model`]: [`GpuModel`], a whole `edgeloop_core` model on the device
//!   (weights uploaded once, a [`GpuKvCache`] per sequence) and its forward
//!   pass, compared with the CPU path on SmolLM2 and Gemma 3 in
//!   `tests/model_tests.rs`: logits within a few percent and the same
//!   greedy tokens except at near ties. Although each product rounds its
//!   activations as the CPU does, the 8-bit rounding amplifies last-bit
//!   differences of the other f32 operations (summation orders, exp,
//!   sin/cos), so whole-model results differ by about the quantization
//!   error rather than by f32 rounding. [`GpuModel::forward_batch`] runs
//!   tokens of several sequences together (batched decode for the scaling
//!   strategies): one matrix product per weight for all of them, attention
//!   per sequence over its own cache.
//! - [`backend`]: [`WgpuBackend`], the `edgeloop_core::Backend` that puts an
//!   engine's sessions on the GPU, and [`select`] (`--backend
//!   auto|cpu|wgpu`): `auto` takes a hardware adapter when there is one and
//!   says why it stayed on the CPU otherwise.
//!
//! - [`record`]: [`Recorder`], where kernel wrappers record a submission:
//!   consecutive dispatches share one compute pass, and bind groups are
//!   kept across submissions, so a decode step is one pass that creates no
//!   bind group once the step before has run.
//!
//! Every kernel is checked against edgeloop-core's CPU reference in
//! `tests/kernels_tests.rs`. A forward pass is one submission per chunk of
//! up to 16 tokens, recorded into scratch vectors the model keeps between
//! passes, and its logits come back through a host-mapped buffer copied in
//! the same submission.
//!
//! Still to come: shader-f16 arithmetic and tiling of the matrix products
//! over rows and columns in registers, attention over several sequences in
//! one dispatch (a batch runs one attention dispatch per sequence, over its
//! rows bound in place), and more than 16 tokens per matrix product.

pub mod backend;
pub mod buffer;
pub mod context;
pub mod error;
pub mod kernels;
pub mod model;
pub mod quant;
pub mod record;

pub use backend::{select, Probe, Selection, WgpuBackend};
pub use context::{GpuContext, GpuFeatures};
pub use error::{GpuError, Result};
pub use model::{GpuKvCache, GpuModel};
pub use record::{RecordStats, Recorder};
