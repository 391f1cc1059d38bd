//! Hot-path CPU kernels: the thread pool that runs them and quantized
//! matrix multiplication with per-instruction-set dot products (portable
//! scalar, AVX2 + FMA on x86_64, NEON on aarch64, chosen at runtime).

mod bandwidth;
mod dot;
mod matmul;
mod packed;
mod pool;

pub use bandwidth::read_bandwidth_gb_s;
pub use matmul::{matmul, matmul_many, try_matmul, MatmulScratch, QMatrix, MAX_MANY};
pub use packed::{packed_len, packed_rows_used, PackedRows};
pub use pool::ThreadPool;
