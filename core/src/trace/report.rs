//! Reporting: uploads the traces a user agreed to share to the host.
//!
//! Reporting is off until the user enables it with the host's URL and a
//! bearer token ([`ReportConfig`], a small TOML file beside the store). A
//! pass ([`Reporter::run_pass`]) sends every accepted, consented trace not
//! yet reported, oldest first, in batches: `POST {url}/v1/traces` with a
//! gzip-compressed JSON [`Batch`], each record rewritten by a [`Redactor`]
//! first. The host answers with the ids it holds ([`Ack`]); only those are
//! marked reported, so anything not acknowledged is sent again by a later
//! pass (at least once), and the host, which deduplicates by id, keeps each
//! trace once. Failed requests (no connection, timeouts, resets, 5xx) are
//! retried with capped exponential backoff and full jitter.
//!
//! The wire types ([`Batch`], [`Ack`]) are always built; the HTTP client is
//! behind the `report` feature (https needs `report-tls`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::record::TraceRecord;
use super::store::StoreError;

/// The batch layout this build sends and a host reads.
pub const BATCH_SCHEMA_VERSION: u32 = 1;
/// The upload endpoint, relative to the host's base URL.
pub const TRACES_PATH: &str = "/v1/traces";
/// Most traces in one batch.
pub const MAX_BATCH_SIZE: usize = 1000;
/// Largest answer the reporter reads from the host, in bytes.
pub const MAX_ACK_BYTES: u64 = 4 * 1024 * 1024;

/// The body of `POST /v1/traces` (before compression).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub schema_version: u32,
    pub traces: Vec<TraceRecord>,
}

/// The host's answer to a batch: ids newly stored and ids it already held.
/// Both mean the host has the trace durably.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub accepted: Vec<String>,
    pub duplicates: Vec<String>,
}

/// The reporting settings of one store: the host, the token, batch size,
/// retries and timeouts. Kept in [`ReportConfig::path_for`] the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// Nothing is sent unless this is set.
    pub enabled: bool,
    /// The host's base URL, e.g. `http://127.0.0.1:8470`.
    pub url: String,
    /// Bearer token the host expects.
    #[serde(default)]
    pub token: String,
    /// Traces per request.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Tries per request within a pass (1 = no retry).
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// First backoff ceiling; it doubles per retry up to `max_delay_ms`.
    #[serde(default = "defaults::base_delay_ms")]
    pub base_delay_ms: u64,
    #[serde(default = "defaults::max_delay_ms")]
    pub max_delay_ms: u64,
    /// Limit on opening a connection.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Limit on each of sending the request and receiving the answer.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
}

mod defaults {
    pub fn batch_size() -> usize {
        50
    }
    pub fn max_attempts() -> u32 {
        5
    }
    pub fn base_delay_ms() -> u64 {
        500
    }
    pub fn max_delay_ms() -> u64 {
        30_000
    }
    pub fn connect_timeout_ms() -> u64 {
        10_000
    }
    pub fn timeout_ms() -> u64 {
        30_000
    }
}

impl ReportConfig {
    /// Reporting enabled to `url` with `token`, other settings at their defaults.
    pub fn new(url: &str, token: &str) -> Self {
        ReportConfig {
            enabled: true,
            url: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            batch_size: defaults::batch_size(),
            max_attempts: defaults::max_attempts(),
            base_delay_ms: defaults::base_delay_ms(),
            max_delay_ms: defaults::max_delay_ms(),
            connect_timeout_ms: defaults::connect_timeout_ms(),
            timeout_ms: defaults::timeout_ms(),
        }
    }

    /// The settings file of the store at `store`: beside it, named after it
    /// (`traces.sqlite` → `traces.report.toml`).
    pub fn path_for(store: &Path) -> PathBuf {
        store.with_extension("report.toml")
    }

    /// The upload endpoint.
    pub fn endpoint(&self) -> String {
        format!("{}{TRACES_PATH}", self.url.trim_end_matches('/'))
    }

    /// Checks the URL, token and numbers; an enabled config must name a host
    /// and a token.
    pub fn validate(&self) -> Result<(), String> {
        let rest = if let Some(rest) = self.url.strip_prefix("http://") {
            rest
        } else if let Some(rest) = self.url.strip_prefix("https://") {
            if !cfg!(feature = "report-tls") {
                return Err(format!(
                    "{}: this build cannot speak https (build edgeloop-core with the report-tls feature)",
                    self.url
                ));
            }
            rest
        } else {
            return Err(format!("{:?} is not an http:// or https:// URL", self.url));
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("{:?} names no host", self.url));
        }
        if self
            .url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("{:?} holds whitespace", self.url));
        }
        if self.enabled && self.token.is_empty() {
            return Err("reporting needs a token".into());
        }
        if !self
            .token
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"')
        {
            return Err("the token must be printable ASCII without spaces or quotes".into());
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(format!(
                "batch size {} is outside 1 to {MAX_BATCH_SIZE}",
                self.batch_size
            ));
        }
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.connect_timeout_ms == 0 || self.timeout_ms == 0 {
            return Err("timeouts must be at least 1 ms".into());
        }
        if self.base_delay_ms > self.max_delay_ms {
            return Err(format!(
                "base_delay_ms {} is more than max_delay_ms {}",
                self.base_delay_ms, self.max_delay_ms
            ));
        }
        Ok(())
    }

    /// The settings at `path`, `None` if there is no such file.
    pub fn load(path: &Path) -> Result<Option<Self>, ReportError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ReportError::ConfigIo {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let bad = |detail: String| ReportError::Config {
            path: path.to_path_buf(),
            detail,
        };
        let config: ReportConfig = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        config.validate().map_err(bad)?;
        Ok(Some(config))
    }

    /// Writes the settings to `path` whole or not at all (a temporary file,
    /// synced and renamed), readable by the owner only, as it holds the token.
    pub fn save(&self, path: &Path) -> Result<(), ReportError> {
        self.validate().map_err(|detail| ReportError::Config {
            path: path.to_path_buf(),
            detail,
        })?;
        let text = toml::to_string(self).map_err(|e| ReportError::Config {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let io = |source| ReportError::ConfigIo {
            path: path.to_path_buf(),
            source,
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }
}

/// What a pass did.
#[derive(Debug, Default)]
pub struct ReportSummary {
    /// Requests the host answered with an acknowledgement.
    pub batches: u64,
    /// Traces sent in acknowledged batches.
    pub sent: u64,
    /// Ids the host stored for the first time.
    pub accepted: u64,
    /// Ids the host already held.
    pub duplicates: u64,
    /// Traces this pass marked reported.
    pub marked: u64,
    /// Requests tried again after a failure.
    pub retries: u64,
    /// Traces the host did not acknowledge, or refused as too large alone,
    /// with why; they stay unreported.
    pub left: Vec<(String, String)>,
    /// Reportable traces still in the store after the pass.
    pub remaining: u64,
    /// Why the pass stopped early; `None` if it got through.
    pub error: Option<ReportError>,
}

/// Why reporting did not happen or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("reporting is off; enable it with `edgeloop traces report --enable URL --token TOKEN` (settings: {path})")]
    Disabled { path: PathBuf },
    #[error("{path}: bad reporting settings: {detail}")]
    Config { path: PathBuf, detail: String },
    #[error("{path}: {source}")]
    ConfigIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{url}: the host refused the token ({status})")]
    Unauthorized { url: String, status: u16 },
    #[error("{url}: the host refused the batch ({status}): {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url}: no answer after {attempts} attempts; last: {last}")]
    Unavailable {
        url: String,
        attempts: u32,
        last: String,
    },
    #[error("{url}: {detail}")]
    Client { url: String, detail: String },
}

/// The delay before retry number `retry` (0 for the first retry): uniform in
/// `[0, min(max, base · 2^retry))` — exponential backoff with full jitter.
/// `unit` is a uniform draw in `[0, 1)`.
pub fn backoff_delay(retry: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let ceiling = base
        .checked_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(feature = "report")]
pub use client::Reporter;

#[cfg(feature = "report")]
mod client {
    use std::collections::HashSet;
    use std::io::{Read, Write};
    use std::time::Duration;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::{
        backoff_delay, Ack, Batch, ReportConfig, ReportError, ReportSummary, BATCH_SCHEMA_VERSION,
        MAX_ACK_BYTES,
    };
    use crate::trace::record::{DefaultRedactor, Redactor, TraceRecord};
    use crate::trace::store::TraceStore;

    /// Uploads a store's reportable traces to the host (see the module doc).
    pub struct Reporter {
        config: ReportConfig,
        redactor: Box<dyn Redactor + Send + Sync>,
        agent: ureq::Agent,
        rng: u64,
    }

    impl std::fmt::Debug for Reporter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Reporter")
                .field("url", &self.config.url)
                .finish()
        }
    }

    /// How one request went.
    enum Outcome {
        Acked(Ack),
        /// 413: the batch is too large for the host.
        TooLarge,
    }

    /// Why one try failed.
    enum Failure {
        /// Worth trying again (no connection, timeout, reset, 5xx, 429, garbled answer).
        Retry(String),
        Fatal(ReportError),
    }

    impl Reporter {
        /// A reporter with these settings and the [`DefaultRedactor`].
        /// Refuses settings that are not enabled or not valid.
        pub fn new(config: ReportConfig) -> Result<Self, ReportError> {
            let bad = |detail| ReportError::Config {
                path: "(reporting settings)".into(),
                detail,
            };
            config.validate().map_err(bad)?;
            if !config.enabled {
                return Err(ReportError::Disabled {
                    path: "(reporting settings)".into(),
                });
            }
            let io = Duration::from_millis(config.timeout_ms);
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_millis(config.connect_timeout_ms)))
                .timeout_send_request(Some(io))
                .timeout_send_body(Some(io))
                .timeout_recv_response(Some(io))
                .timeout_recv_body(Some(io))
                .user_agent(concat!("edgeloop/", env!("CARGO_PKG_VERSION")))
                .build()
                .into();
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
                ^ (u64::from(std::process::id()) << 32);
            Ok(Reporter {
                config,
                redactor: Box::new(DefaultRedactor::default()),
                agent,
                rng: seed | 1,
            })
        }

        /// Uses `redactor` instead of the [`DefaultRedactor`].
        pub fn with_redactor(mut self, redactor: Box<dyn Redactor + Send + Sync>) -> Self {
            self.redactor = redactor;
            self
        }

        pub fn config(&self) -> &ReportConfig {
            &self.config
        }

        /// Sends every reportable trace of `store` (see
        /// [`TraceStore::reportable`]) in batches and marks what the host
        /// acknowledged. Stops at the first batch that cannot be delivered
        /// after the configured attempts, or that the host refuses; the
        /// summary says how far it got and why it stopped.
        pub fn run_pass(&mut self, store: &mut TraceStore) -> ReportSummary {
            let mut summary = ReportSummary::default();
            if let Err(e) = self.pass(store, &mut summary) {
                summary.error = Some(e);
            }
            match store.reportable_count() {
                Ok(n) => summary.remaining = n,
                Err(e) => {
                    summary.error.get_or_insert(e.into());
                }
            }
            summary
        }

        fn pass(
            &mut self,
            store: &mut TraceStore,
            summary: &mut ReportSummary,
        ) -> Result<(), ReportError> {
            // Ids this pass already tried and the host did not take: not
            // sent again until the next pass.
            let mut left: HashSet<String> = HashSet::new();
            loop {
                let batch: Vec<TraceRecord> = store
                    .reportable(self.config.batch_size + left.len())?
                    .into_iter()
                    .filter(|r| !left.contains(&r.id))
                    .take(self.config.batch_size)
                    .collect();
                if batch.is_empty() {
                    return Ok(());
                }
                self.send(store, &batch, summary, &mut left)?;
            }
        }

        /// Sends `records`, halving the batch when the host finds it too large.
        fn send(
            &mut self,
            store: &mut TraceStore,
            records: &[TraceRecord],
            summary: &mut ReportSummary,
            left: &mut HashSet<String>,
        ) -> Result<(), ReportError> {
            let body = self.encode(records)?;
            match self.post(&body, summary)? {
                Outcome::Acked(ack) => {
                    let sent: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
                    let acked: Vec<&str> = ack
                        .accepted
                        .iter()
                        .chain(&ack.duplicates)
                        .map(String::as_str)
                        .filter(|id| sent.contains(id))
                        .collect();
                    summary.batches += 1;
                    summary.sent += records.len() as u64;
                    summary.accepted += ack
                        .accepted
                        .iter()
                        .filter(|id| sent.contains(id.as_str()))
                        .count() as u64;
                    summary.duplicates += ack
                        .duplicates
                        .iter()
                        .filter(|id| sent.contains(id.as_str()))
                        .count() as u64;
                    summary.marked += store.mark_reported(&acked)? as u64;
                    let acked: HashSet<&str> = acked.into_iter().collect();
                    for r in records.iter().filter(|r| !acked.contains(r.id.as_str())) {
                        left.insert(r.id.clone());
                        summary
                            .left
                            .push((r.id.clone(), "not acknowledged by the host".into()));
                    }
                    Ok(())
                }
                Outcome::TooLarge if records.len() > 1 => {
                    let (a, b) = records.split_at(records.len() / 2);
                    self.send(store, a, summary, left)?;
                    self.send(store, b, summary, left)
                }
                Outcome::TooLarge => {
                    let id = records[0].id.clone();
                    left.insert(id.clone());
                    summary
                        .left
                        .push((id, "too large for the host (413) on its own".into()));
                    Ok(())
                }
            }
        }

        /// The redacted batch as gzip-compressed JSON.
        fn encode(&self, records: &[TraceRecord]) -> Result<Vec<u8>, ReportError> {
            let batch = Batch {
                schema_version: BATCH_SCHEMA_VERSION,
                traces: records
                    .iter()
                    .map(|r| r.redacted(self.redactor.as_ref()))
                    .collect(),
            };
            let mut gz = GzEncoder::new(Vec::new(), Compression::default());
            serde_json::to_writer(&mut gz, &batch)
                .map_err(std::io::Error::from)
                .and_then(|_| gz.flush())
                .and_then(|_| gz.finish())
                .map_err(|e| ReportError::Client {
                    url: self.config.endpoint(),
                    detail: format!("compress a batch: {e}"),
                })
        }

        /// Posts `body`, retrying with backoff.
        fn post(
            &mut self,
            body: &[u8],
            summary: &mut ReportSummary,
        ) -> Result<Outcome, ReportError> {
            let max = self.config.max_attempts;
            let mut last = String::new();
            for attempt in 0..max {
                if attempt > 0 {
                    summary.retries += 1;
                    let unit = self.next_unit();
                    std::thread::sleep(backoff_delay(
                        attempt - 1,
                        Duration::from_millis(self.config.base_delay_ms),
                        Duration::from_millis(self.config.max_delay_ms),
                        unit,
                    ));
                }
                match self.post_once(body) {
                    Ok(outcome) => return Ok(outcome),
                    Err(Failure::Fatal(e)) => return Err(e),
                    Err(Failure::Retry(why)) => {
                        log::info!(
                            "report: attempt {}/{max} to {} failed: {why}",
                            attempt + 1,
                            self.config.url
                        );
                        last = why;
                    }
                }
            }
            Err(ReportError::Unavailable {
                url: self.config.endpoint(),
                attempts: max,
                last,
            })
        }

        fn post_once(&self, body: &[u8]) -> Result<Outcome, Failure> {
            let url = self.config.endpoint();
            let result = self
                .agent
                .post(&url)
                .header("Authorization", &format!("Bearer {}", self.config.token))
                .header("Content-Type", "application/json")
                .header("Content-Encoding", "gzip")
                .send(body);
            let mut resp = match result {
                Ok(r) => r,
                Err(e) => {
                    use ureq::Error as E;
                    return Err(match e {
                        E::Io(_)
                        | E::Timeout(_)
                        | E::ConnectionFailed
                        | E::HostNotFound
                        | E::Protocol(_)
                        | E::BodyStalled => Failure::Retry(e.to_string()),
                        e => Failure::Fatal(ReportError::Client {
                            url,
                            detail: e.to_string(),
                        }),
                    });
                }
            };
            let status = resp.status().as_u16();
            // The answer is read whole, under a cap: a cut-off answer is a
            // failed try, and nothing is marked from it.
            let mut text = String::new();
            let read = resp
                .body_mut()
                .as_reader()
                .take(MAX_ACK_BYTES)
                .read_to_string(&mut text);
            match status {
                200 => {
                    read.map_err(|e| Failure::Retry(format!("reading the answer: {e}")))?;
                    let ack: Ack = serde_json::from_str(&text).map_err(|e| {
                        Failure::Retry(format!("answer is not an acknowledgement: {e}"))
                    })?;
                    Ok(Outcome::Acked(ack))
                }
                401 | 403 => Err(Failure::Fatal(ReportError::Unauthorized { url, status })),
                413 => Ok(Outcome::TooLarge),
                408 | 429 | 500..=599 => Err(Failure::Retry(format!("HTTP {status}"))),
                _ => Err(Failure::Fatal(ReportError::Refused {
                    url,
                    status,
                    message: super::error_message(&text),
                })),
            }
        }

        /// A uniform draw in `[0, 1)` (splitmix64; jitter needs no better).
        fn next_unit(&mut self) -> f64 {
            self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        }
    }
}

/// The `error` of a host's JSON error answer (`{"error": "..."}`), or the
/// answer's first 500 characters.
pub fn error_message(text: &str) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(b) => b.error,
        Err(_) => text.chars().take(500).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_full_jitter() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        assert_eq!(backoff_delay(0, base, max, 0.0), Duration::ZERO);
        assert_eq!(backoff_delay(0, base, max, 0.5), Duration::from_millis(50));
        assert_eq!(backoff_delay(3, base, max, 0.5), Duration::from_millis(400));
        assert_eq!(backoff_delay(10, base, max, 0.5), Duration::from_secs(1));
        assert_eq!(backoff_delay(200, base, max, 0.5), Duration::from_secs(1));
        assert!(backoff_delay(4, base, max, 0.999_999) < Duration::from_millis(1600));
    }

    #[test]
    fn settings_are_checked_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = ReportConfig::path_for(&dir.path().join("traces.sqlite"));
        assert_eq!(path.file_name().unwrap(), "traces.report.toml");
        assert!(ReportConfig::load(&path).unwrap().is_none());
        let c = ReportConfig::new("http://127.0.0.1:8470/", "s3cret");
        assert_eq!(c.endpoint(), "http://127.0.0.1:8470/v1/traces");
        c.save(&path).unwrap();
        assert_eq!(ReportConfig::load(&path).unwrap(), Some(c.clone()));
        for (bad, why) in [
            (ReportConfig::new("ftp://x", "t"), "not an http"),
            (ReportConfig::new("http:///x", "t"), "names no host"),
            (ReportConfig::new("http://x", ""), "needs a token"),
            (ReportConfig::new("http://x", "a b"), "printable"),
            (
                ReportConfig {
                    batch_size: 0,
                    ..c.clone()
                },
                "batch size",
            ),
        ] {
            let e = bad.validate().unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        std::fs::write(
            &path,
            "enabled = true\nurl = 'http://x'\ntoken = 't'\nbogus = 1\n",
        )
        .unwrap();
        let e = ReportConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
