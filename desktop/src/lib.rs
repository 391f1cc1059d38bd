//! What both binaries, `edgeloop` and `edgeloop-trainer`, use: generated
//! task sets, the scaling and verifier settings, and scoring a model on a
//! task set.

pub mod score;
pub mod settings;
pub mod tasks;
