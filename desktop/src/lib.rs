//! What both binaries, `edgeloop` and `edgeloop-trainer`, use: generated
//! task sets, the scaling and verifier settings, scoring a model on a
//! task set, what their HTTP servers share, and the host's upload body
//! parser (in the library so that `fuzz/` can reach it).

pub mod http;
pub mod ingest;
pub mod score;
pub mod settings;
pub mod tasks;
