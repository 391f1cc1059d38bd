//! Self-verified reasoning traces kept on the device until they reach the host.
//!
//! [`TraceRecord`] (`record.rs`) is the versioned, content-addressed record
//! of one solved question, with a [`Redactor`] hook that runs before a record
//! leaves the device; [`TraceStore`] (`store.rs`) keeps records durably in
//! SQLite, tracks which were reported, evicts under a size cap and writes
//! bundles for offline transfer; `report.rs` uploads reportable traces to
//! the host and marks what it acknowledged; `ingest.rs` is the host's side:
//! uploaded batches decoded, checked and stored.

pub mod ingest;
pub mod record;
pub mod report;
pub mod store;

pub use record::{
    chosen_sample, content_id, DefaultRedactor, ModelInfo, NoRedaction, RecordError, Redactor,
    TraceParts, TraceRecord, TraceSample, TraceSpend, Verification, VerifierVote, SCHEMA_VERSION,
};
#[cfg(feature = "report")]
pub use report::Reporter;
pub use report::{
    Ack, Batch, ReportConfig, ReportError, ReportSummary, BATCH_SCHEMA_VERSION, TRACES_PATH,
};
pub use store::{
    default_path, read_bundle, read_bundle_limited, Evicted, Inserted, ListFilter, StoreError,
    StoreOptions, StoreStats, StoredTrace, TraceState, TraceStore,
};
