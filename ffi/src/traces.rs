//! [`Traces`]: the on-device trace store and its reporting settings.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use edgeloop_core::trace::{
    DefaultRedactor, Inserted, ListFilter, NoRedaction, Redactor, ReportConfig, ReportError,
    Reporter, StoreOptions, TraceRecord, TraceState, TraceStore,
};

use crate::error::{guard, EdgeloopError};

/// Counts and sizes of a store.
#[derive(Clone, Debug, uniffi::Record)]
pub struct TraceStats {
    pub traces: u64,
    /// On the device only.
    pub stored: u64,
    /// Acknowledged by the host.
    pub reported: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Accepted traces still to be reported (never evicted).
    pub unreported_accepted: u64,
    /// The database file and its log on disk.
    pub file_bytes: u64,
}

/// One stored trace, in brief.
#[derive(Clone, Debug, uniffi::Record)]
pub struct TraceSummary {
    pub id: String,
    /// `stored` or `reported`.
    pub state: String,
    pub question: String,
    pub answer: Option<String>,
    /// Whether the verifier accepted it.
    pub accepted: bool,
    pub consent: bool,
    pub strategy: String,
    pub confidence: f64,
    /// Unix time in seconds.
    pub created_at: u64,
}

/// The store's reporting settings.
#[derive(Clone, Debug, uniffi::Record)]
pub struct ReportSettings {
    /// Nothing leaves the device unless this is on.
    pub enabled: bool,
    /// The host's base URL.
    pub url: String,
    /// Whether a token is set (the token itself is not handed back).
    pub has_token: bool,
}

/// What one reporting pass did.
#[derive(Clone, Debug, uniffi::Record)]
pub struct ReportResult {
    /// Traces the host acknowledged and this pass marked reported.
    pub marked: u64,
    pub batches: u64,
    /// Ids the host stored for the first time.
    pub accepted: u64,
    /// Ids the host already held.
    pub duplicates: u64,
    pub retries: u64,
    /// Reportable traces still in the store.
    pub remaining: u64,
}

/// A trace store on the device (SQLite). Thread-safe; calls take turns.
#[derive(uniffi::Object)]
pub struct Traces {
    store: Mutex<TraceStore>,
    path: PathBuf,
}

impl Traces {
    fn store(&self) -> MutexGuard<'_, TraceStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn insert(&self, record: &TraceRecord) -> Result<Inserted, EdgeloopError> {
        Ok(self.store().insert(record)?)
    }

    fn settings_path(&self) -> PathBuf {
        ReportConfig::path_for(&self.path)
    }

    fn load_settings(&self) -> Result<Option<ReportConfig>, EdgeloopError> {
        Ok(ReportConfig::load(&self.settings_path())?)
    }
}

#[uniffi::export]
impl Traces {
    /// Opens (or creates) the store at `path`; `max_bytes` caps the stored
    /// records (accepted traces not yet reported are never evicted).
    #[uniffi::constructor]
    pub fn open(path: String, max_bytes: Option<u64>) -> Result<Arc<Traces>, EdgeloopError> {
        guard(|| {
            let options = StoreOptions {
                max_bytes,
                ..StoreOptions::default()
            };
            let store = TraceStore::open_with(Path::new(&path), options)?;
            Ok(Arc::new(Traces {
                store: Mutex::new(store),
                path: PathBuf::from(path),
            }))
        })
    }

    /// The store file.
    pub fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// Counts and sizes.
    pub fn stats(&self) -> Result<TraceStats, EdgeloopError> {
        guard(|| {
            let s = self.store().stats()?;
            Ok(TraceStats {
                traces: s.traces,
                stored: s.stored,
                reported: s.reported,
                accepted: s.accepted,
                rejected: s.rejected,
                unreported_accepted: s.unreported_accepted,
                file_bytes: s.file_bytes,
            })
        })
    }

    /// Traces, newest first: at most `limit` after skipping `offset`,
    /// optionally only those in `state` (`stored` or `reported`).
    pub fn list(
        &self,
        limit: u32,
        offset: u32,
        state: Option<String>,
    ) -> Result<Vec<TraceSummary>, EdgeloopError> {
        guard(|| {
            let state = match state {
                Some(s) => Some(s.parse::<TraceState>().map_err(EdgeloopError::invalid)?),
                None => None,
            };
            let filter = ListFilter {
                state,
                accepted: None,
                limit: Some(limit as usize),
                offset: offset as usize,
            };
            Ok(self
                .store()
                .list(&filter)?
                .into_iter()
                .map(|t| TraceSummary {
                    id: t.record.id,
                    state: t.state.as_str().to_string(),
                    question: t.record.question,
                    answer: t.record.answer,
                    accepted: t.record.verification.accepted,
                    consent: t.record.consent,
                    strategy: t.record.strategy,
                    confidence: t.record.confidence,
                    created_at: t.record.created_at,
                })
                .collect())
        })
    }

    /// The whole record `id` as JSON (the schema the host receives), or
    /// `None` when the store has no such trace.
    pub fn record_json(&self, id: String) -> Result<Option<String>, EdgeloopError> {
        guard(|| Ok(self.store().get(&id)?.map(|t| t.record.to_json())))
    }

    /// Writes every trace to a JSON Lines bundle at `path` (gzip when it
    /// ends in `.gz`), redacted unless `redact` is false; returns the count.
    pub fn export(&self, path: String, redact: bool) -> Result<u64, EdgeloopError> {
        guard(|| {
            let redactor: &dyn Redactor = if redact {
                &DefaultRedactor::default()
            } else {
                &NoRedaction
            };
            Ok(self.store().export_bundle(Path::new(&path), redactor)?)
        })
    }

    /// The reporting settings (off until enabled).
    pub fn report_settings(&self) -> Result<ReportSettings, EdgeloopError> {
        guard(|| {
            Ok(match self.load_settings()? {
                Some(c) => ReportSettings {
                    enabled: c.enabled,
                    url: c.url,
                    has_token: !c.token.is_empty(),
                },
                None => ReportSettings {
                    enabled: false,
                    url: String::new(),
                    has_token: false,
                },
            })
        })
    }

    /// Turns reporting on to the host at `url` with `token`; saved beside
    /// the store, owner-only.
    pub fn enable_reporting(&self, url: String, token: String) -> Result<(), EdgeloopError> {
        guard(|| {
            let fresh = ReportConfig::new(&url, &token);
            let config = match self.load_settings()? {
                // Keep tuned retries and timeouts across a change of host.
                Some(old) => ReportConfig {
                    enabled: true,
                    url: fresh.url,
                    token: fresh.token,
                    ..old
                },
                None => fresh,
            };
            config.validate().map_err(EdgeloopError::invalid)?;
            Ok(config.save(&self.settings_path())?)
        })
    }

    /// Turns reporting off and forgets the token.
    pub fn disable_reporting(&self) -> Result<(), EdgeloopError> {
        guard(|| {
            if let Some(mut c) = self.load_settings()? {
                c.enabled = false;
                c.token.clear();
                c.save(&self.settings_path())?;
            }
            Ok(())
        })
    }

    /// Sends the accepted, consented, unreported traces to the host now
    /// (redacted); a trace is marked reported only once the host has
    /// acknowledged it.
    pub fn report_now(&self) -> Result<ReportResult, EdgeloopError> {
        guard(|| {
            let config = match self.load_settings()? {
                Some(c) if c.enabled => c,
                _ => {
                    return Err(ReportError::Disabled {
                        path: self.settings_path(),
                    }
                    .into())
                }
            };
            let mut reporter = Reporter::new(config)?;
            let summary = reporter.run_pass(&mut self.store());
            if let Some(e) = summary.error {
                return Err(e.into());
            }
            Ok(ReportResult {
                marked: summary.marked,
                batches: summary.batches,
                accepted: summary.accepted,
                duplicates: summary.duplicates,
                retries: summary.retries,
                remaining: summary.remaining,
            })
        })
    }
}
