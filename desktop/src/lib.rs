//! What both binaries, `edgeloop` and `edgeloop-trainer`, use: generated
//! task sets, the scaling and verifier settings, scoring a model on a
//! task set, and what their HTTP servers share.

pub mod http;
pub mod score;
pub mod settings;
pub mod tasks;
