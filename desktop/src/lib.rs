//! What both binaries, `edgeloop` and `edgeloop-trainer`, use: generated
//! task sets, the scaling and verifier settings, scoring a model on a
//! task set, and the bearer-token check of their HTTP servers.

pub mod auth;
pub mod score;
pub mod settings;
pub mod tasks;
