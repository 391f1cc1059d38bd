//! edgeloop-train: the host trainer's library. A student GGUF becomes
//! trainable candle variables ([`student`]), curated chat traces become
//! tokenized examples with the loss on the answer ([`data`]), supervised
//! fine-tuning runs with AdamW, a warm-up/cosine schedule, gradient
//! accumulation and resumable checkpoints ([`distill`], [`optim`]), and the
//! result goes back to a quantized GGUF with provenance, checked against
//! the trained weights by edgeloop's own CPU path ([`export`]).

pub mod data;
pub mod distill;
pub mod error;
pub mod export;
pub mod import;
pub mod optim;
pub mod student;

pub use error::{Result, TrainError};
pub use student::Student;
