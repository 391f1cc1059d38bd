//! The durable on-device trace store: one SQLite file in WAL mode.
//!
//! Every record is kept as its JSON text next to the columns that select it
//! (id, created time, state, accepted, size). A write returns only after
//! SQLite has synced it (`synchronous=FULL`), so a trace [`TraceStore::insert`]
//! reported as stored survives a crash or a power cut. States go
//! `stored → reported` once the host acknowledges a trace. Under a size cap
//! the oldest reported traces go first, then the oldest rejected ones; an
//! accepted trace that was not reported is never evicted, and an insert that
//! cannot fit fails with [`StoreError::Full`] instead.
//!
//! A file is only used if it is one of these stores: a file that is not
//! SQLite, or SQLite of another application (its `application_id`), is
//! refused without being changed.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::record::{RecordError, Redactor, TraceRecord, MAX_RECORD_BYTES};

/// `PRAGMA application_id` of a trace store ("EDLT").
pub const APPLICATION_ID: u32 = 0x4544_4C54;
/// The store layout (`PRAGMA user_version`) this build writes.
pub const STORE_VERSION: i64 = 1;
/// Environment variable naming the store file, over the default path.
pub const TRACES_ENV: &str = "EDGELOOP_TRACES";

/// Migrations, in order: `(version, SQL)`; applying one brings a store from
/// the version before it to `version`. A new layout appends an entry and
/// bumps [`STORE_VERSION`].
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE traces (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        id         TEXT    NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        state      TEXT    NOT NULL CHECK (state IN ('stored', 'reported')),
        accepted   INTEGER NOT NULL CHECK (accepted IN (0, 1)),
        size       INTEGER NOT NULL,
        record     TEXT    NOT NULL
    );
    CREATE INDEX traces_by_age ON traces (state, accepted, created_at, seq);
    CREATE INDEX traces_by_time ON traces (created_at, seq);",
)];

/// Rows the reporter may send: accepted, not yet reported, with consent
/// (read from the record's JSON).
const REPORTABLE: &str =
    "state = 'stored' AND accepted = 1 AND json_extract(record, '$.consent') = 1";

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// What went wrong with a trace store or bundle; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: not an SQLite database ({reason}); refusing to use it as a trace store")]
    NotADatabase { path: PathBuf, reason: String },
    #[error("{path}: SQLite database of another application (application_id {found:#010x}), not an edgeloop trace store; refusing to open it")]
    Foreign { path: PathBuf, found: u32 },
    #[error("{path}: trace store version {found} is newer than this build's {supported}; refusing to open it")]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("{path}: trace store is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path}: disk full while trying to {op}")]
    DiskFull { path: PathBuf, op: &'static str },
    #[error("{path}: trace store full: a trace of {needed} bytes does not fit under the cap of {max_bytes} bytes, and {pinned} bytes are accepted traces not yet reported, which are never evicted")]
    Full {
        path: PathBuf,
        needed: u64,
        max_bytes: u64,
        pinned: u64,
    },
    #[error("{path}: {op}: {source}")]
    Sqlite {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to store trace {id:?}: {source}")]
    InvalidRecord {
        id: String,
        #[source]
        source: RecordError,
    },
    #[error("{path}: stored trace {id} is unreadable: {source}")]
    BadRow {
        path: PathBuf,
        id: String,
        #[source]
        source: RecordError,
    },
    #[error(
        "{path}: bundle holds more than {max_bytes} bytes (decompressed); refusing to read it"
    )]
    BundleTooLarge { path: PathBuf, max_bytes: u64 },
    #[error("{path}: line {line}: {source}")]
    BadBundleLine {
        path: PathBuf,
        line: usize,
        #[source]
        source: RecordError,
    },
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where a trace is on its way to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceState {
    /// On the device only.
    Stored,
    /// Acknowledged by the host.
    Reported,
}

impl TraceState {
    pub fn as_str(self) -> &'static str {
        match self {
            TraceState::Stored => "stored",
            TraceState::Reported => "reported",
        }
    }

    fn from_column(s: &str) -> Option<Self> {
        match s {
            "stored" => Some(TraceState::Stored),
            "reported" => Some(TraceState::Reported),
            _ => None,
        }
    }
}

impl std::str::FromStr for TraceState {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::from_column(s).ok_or_else(|| format!("unknown trace state {s:?} (stored, reported)"))
    }
}

/// How a store is run.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Cap on the stored records' JSON bytes (SQLite's own overhead comes on
    /// top); `None` for no cap.
    pub max_bytes: Option<u64>,
    /// Keep traces the verifier rejected (marked `accepted = false`).
    pub keep_rejected: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_bytes: None,
            keep_rejected: true,
        }
    }
}

/// What [`TraceStore::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// Stored; durable on return.
    New,
    /// A trace with this id was already stored; nothing changed.
    Duplicate,
    /// A rejected copy of this trace was stored; this accepted one replaced it.
    Upgraded,
    /// A rejected trace, not kept because `keep_rejected` is off.
    Discarded,
}

/// A record as the store holds it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredTrace {
    pub state: TraceState,
    /// Bytes of the record's JSON.
    pub size: u64,
    pub record: TraceRecord,
}

/// Which traces [`TraceStore::list`] returns, newest first.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub state: Option<TraceState>,
    pub accepted: Option<bool>,
    /// `None` for all.
    pub limit: Option<usize>,
    pub offset: usize,
}

/// Counts and sizes of a store.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StoreStats {
    pub traces: u64,
    pub stored: u64,
    pub reported: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Accepted traces still to be reported (never evicted).
    pub unreported_accepted: u64,
    /// JSON bytes of all records (what `max_bytes` caps).
    pub record_bytes: u64,
    /// The database file and its write-ahead log on disk.
    pub file_bytes: u64,
    pub max_bytes: Option<u64>,
}

/// What [`TraceStore::evict`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    pub traces: u64,
    pub bytes: u64,
}

/// The default store file: `$EDGELOOP_TRACES` if set, else `traces.sqlite`
/// in edgeloop's data folder (`$XDG_DATA_HOME/edgeloop`, or
/// `~/.local/share/edgeloop`).
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os(TRACES_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from(".local/share"));
    base.join("edgeloop").join("traces.sqlite")
}

/// The on-device trace store. One per process is enough; several processes
/// may open the same file (SQLite serializes their writes).
pub struct TraceStore {
    conn: Connection,
    path: PathBuf,
    options: StoreOptions,
}

impl std::fmt::Debug for TraceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish()
    }
}

impl TraceStore {
    /// Opens (creating it and its folder if missing) the store at `path`
    /// with the default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, StoreOptions::default())
    }

    /// Opens (creating it and its folder if missing) the store at `path`.
    /// Refuses a file that is not a trace store, one of a newer layout, or a
    /// corrupt one (it runs SQLite's `quick_check`, which reads the whole
    /// file); brings an older layout up to date.
    pub fn open_with(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let fresh = check_file(&path)?;
        if fresh {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                    path: dir.to_path_buf(),
                    op: "create the trace store's folder",
                    source,
                })?;
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(&path, flags).map_err(|e| sql_error(&path, "open", e))?;
        let mut store = TraceStore {
            conn,
            path,
            options,
        };
        store.init()?;
        Ok(store)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    fn err(&self, op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |e| sql_error(&self.path, op, e)
    }

    fn init(&mut self) -> Result<()> {
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(self.err("set the busy timeout"))?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(self.err("read the store version"))?;
        if version == 0 {
            // A new file. Its application id and layout are written in one
            // transaction in rollback-journal mode, so they are in the main
            // file (not only in a write-ahead log) before anything else is.
            self.conn
                .execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
                .map_err(self.err("create the store"))?;
        }
        if version < STORE_VERSION {
            self.migrate()?;
        } else if version > STORE_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                supported: STORE_VERSION,
            });
        }
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(self.err("switch to write-ahead logging"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Io {
                path: self.path.clone(),
                op: "switch to write-ahead logging",
                source: std::io::Error::other(format!("journal mode stayed {mode:?}")),
            });
        }
        // The log is truncated back to this after each checkpoint, so an
        // idle store does not keep a large write-ahead log on disk.
        self.conn
            .execute_batch("PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 1048576")
            .map_err(self.err("set synchronous writes"))?;
        let app: i64 = self
            .conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(self.err("read the application id"))?;
        if app as u32 != APPLICATION_ID {
            return Err(StoreError::Foreign {
                path: self.path.clone(),
                found: app as u32,
            });
        }
        self.check_integrity()
    }

    /// Applies the migrations past the file's version, each in its own
    /// transaction that also records the new version.
    fn migrate(&mut self) -> Result<()> {
        for &(target, sql) in MIGRATIONS {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sql_error(&self.path, "migrate the store", e))?;
            // Another process may have migrated while this one waited.
            let current: i64 = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(|e| sql_error(&self.path, "migrate the store", e))?;
            if current >= target {
                continue;
            }
            if current == 0 {
                let objects: i64 = tx
                    .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))
                    .map_err(|e| sql_error(&self.path, "create the store", e))?;
                let app: i64 = tx
                    .query_row("PRAGMA application_id", [], |r| r.get(0))
                    .map_err(|e| sql_error(&self.path, "create the store", e))?;
                if objects > 0 || (app != 0 && app as u32 != APPLICATION_ID) {
                    return Err(StoreError::Foreign {
                        path: self.path.clone(),
                        found: app as u32,
                    });
                }
                tx.execute_batch(&format!(
                    "PRAGMA application_id = {}",
                    APPLICATION_ID as i32
                ))
                .map_err(|e| sql_error(&self.path, "create the store", e))?;
            }
            tx.execute_batch(sql)
                .and_then(|_| tx.execute_batch(&format!("PRAGMA user_version = {target}")))
                .and_then(|_| tx.commit())
                .map_err(|e| sql_error(&self.path, "migrate the store", e))?;
        }
        Ok(())
    }

    fn check_integrity(&self) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA quick_check")
            .map_err(self.err("check the store"))?;
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.err("check the store"))?;
        if rows.len() == 1 && rows[0] == "ok" {
            return Ok(());
        }
        Err(StoreError::Corrupt {
            path: self.path.clone(),
            detail: rows.join("; "),
        })
    }

    /// Stores `record` (validated first) unless a trace with its id is
    /// already there; durable when it returns [`Inserted::New`] or
    /// [`Inserted::Upgraded`]. Under a size cap it evicts what it may
    /// (see [`TraceStore::evict`]) or fails with [`StoreError::Full`].
    pub fn insert(&mut self, record: &TraceRecord) -> Result<Inserted> {
        Ok(self.insert_batch(std::slice::from_ref(record))?[0])
    }

    /// Stores `records` in one transaction, as [`TraceStore::insert`] does
    /// each: all are validated first, and either every one is stored (or
    /// found a duplicate) or, on an error, none is. Durable on return. A
    /// record whose id comes twice is stored once; the later copy counts as
    /// a duplicate.
    pub fn insert_batch(&mut self, records: &[TraceRecord]) -> Result<Vec<Inserted>> {
        for record in records {
            record
                .validate()
                .map_err(|source| StoreError::InvalidRecord {
                    id: record.id.clone(),
                    source,
                })?;
        }
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_error(&path, "begin an insert", e))?;
        let outcomes = records
            .iter()
            .map(|r| insert_row(&tx, &path, &self.options, r))
            .collect::<Result<Vec<_>>>()?;
        if outcomes
            .iter()
            .any(|o| matches!(o, Inserted::New | Inserted::Upgraded))
        {
            tx.commit()
                .map_err(|e| sql_error(&path, "commit a trace", e))?;
        }
        Ok(outcomes)
    }

    /// The trace with this id, if stored.
    pub fn get(&self, id: &str) -> Result<Option<StoredTrace>> {
        let row: Option<(String, u64, String)> = self
            .conn
            .query_row(
                "SELECT state, size, record FROM traces WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(self.err("read a trace"))?;
        row.map(|(state, size, json)| self.stored(id, &state, size, &json))
            .transpose()
    }

    /// Ids of stored traces that start with `prefix` (hex digits only), at
    /// most `limit`, so a user can name a trace by its first few digits.
    pub fn ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        if !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Vec::new());
        }
        let prefix = prefix.to_ascii_lowercase();
        let mut stmt = self
            .conn
            // Ids are lowercase hex, so every id with the prefix sorts below prefix + "g".
            .prepare("SELECT id FROM traces WHERE id >= ?1 AND id < ?1 || 'g' ORDER BY id LIMIT ?2")
            .map_err(self.err("look up a trace"))?;
        let ids = stmt
            .query_map(params![prefix, limit.min(i64::MAX as usize) as i64], |r| {
                r.get(0)
            })
            .and_then(|rows| rows.collect())
            .map_err(self.err("look up a trace"))?;
        Ok(ids)
    }

    fn stored(&self, id: &str, state: &str, size: u64, json: &str) -> Result<StoredTrace> {
        let bad = |detail: String| StoreError::Corrupt {
            path: self.path.clone(),
            detail: format!("trace {id}: {detail}"),
        };
        let state =
            TraceState::from_column(state).ok_or_else(|| bad(format!("state {state:?}")))?;
        let record = TraceRecord::from_json(json).map_err(|source| StoreError::BadRow {
            path: self.path.clone(),
            id: id.to_string(),
            source,
        })?;
        if record.id != id {
            return Err(bad(format!("holds a record with id {}", record.id)));
        }
        Ok(StoredTrace {
            state,
            size,
            record,
        })
    }

    /// Traces matching `filter`, newest first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<StoredTrace>> {
        let limit = filter.limit.map_or(-1, |l| l.min(i64::MAX as usize) as i64);
        self.query(
            "SELECT id, state, size, record FROM traces
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR accepted = ?2)
             ORDER BY created_at DESC, seq DESC LIMIT ?3 OFFSET ?4",
            params![
                filter.state.map(TraceState::as_str),
                filter.accepted,
                limit,
                filter.offset.min(i64::MAX as usize) as i64
            ],
        )
    }

    fn query(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<StoredTrace>> {
        let mut stmt = self.conn.prepare(sql).map_err(self.err("list traces"))?;
        let rows: Vec<(String, String, u64, String)> = stmt
            .query_map(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .and_then(|rows| rows.collect())
            .map_err(self.err("list traces"))?;
        rows.iter()
            .map(|(id, state, size, json)| self.stored(id, state, *size, json))
            .collect()
    }

    /// Accepted traces not yet reported, oldest first, at most `limit`.
    pub fn unreported(&self, limit: usize) -> Result<Vec<TraceRecord>> {
        let rows = self.query(
            "SELECT id, state, size, record FROM traces
             WHERE state = 'stored' AND accepted = 1
             ORDER BY created_at, seq LIMIT ?1",
            [limit.min(i64::MAX as usize) as i64],
        )?;
        Ok(rows.into_iter().map(|t| t.record).collect())
    }

    /// Accepted traces not yet reported whose `consent` is set, oldest
    /// first, at most `limit`: what the reporter may send.
    pub fn reportable(&self, limit: usize) -> Result<Vec<TraceRecord>> {
        let rows = self.query(
            &format!(
                "SELECT id, state, size, record FROM traces WHERE {REPORTABLE}
                 ORDER BY created_at, seq LIMIT ?1"
            ),
            [limit.min(i64::MAX as usize) as i64],
        )?;
        Ok(rows.into_iter().map(|t| t.record).collect())
    }

    /// How many traces [`TraceStore::reportable`] could return.
    pub fn reportable_count(&self) -> Result<u64> {
        self.conn
            .query_row(
                &format!("SELECT COUNT(*) FROM traces WHERE {REPORTABLE}"),
                [],
                |r| r.get(0),
            )
            .map_err(self.err("count traces"))
    }

    /// Marks these traces reported (acknowledged by the host), in one
    /// transaction; ids not stored, or already reported, are skipped.
    /// Returns how many changed.
    pub fn mark_reported<S: AsRef<str>>(&mut self, ids: &[S]) -> Result<usize> {
        let path = self.path.clone();
        let e = |err| sql_error(&path, "mark traces reported", err);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        let mut changed = 0;
        {
            let mut stmt = tx
                .prepare("UPDATE traces SET state = 'reported' WHERE id = ?1 AND state = 'stored'")
                .map_err(e)?;
            for id in ids {
                changed += stmt.execute([id.as_ref()]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        Ok(changed)
    }

    /// Evicts traces until the records fit under `max_bytes`: the oldest
    /// reported ones first, then the oldest rejected ones. Accepted traces
    /// not yet reported are kept even if the store stays over the cap.
    pub fn evict(&mut self) -> Result<Evicted> {
        let Some(max) = self.options.max_bytes else {
            return Ok(Evicted::default());
        };
        let path = self.path.clone();
        let e = |err| sql_error(&path, "evict traces", err);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        let total = total_bytes(&tx, &self.path)?;
        let evicted = evict_down_to(&tx, &self.path, max, total, "")?;
        tx.commit().map_err(e)?;
        if evicted.traces > 0 {
            self.conn
                .execute_batch("PRAGMA incremental_vacuum")
                .map_err(e)?;
        }
        Ok(evicted)
    }

    /// Counts by state and verdict, and sizes.
    pub fn stats(&self) -> Result<StoreStats> {
        let mut s = StoreStats {
            max_bytes: self.options.max_bytes,
            ..Default::default()
        };
        let mut stmt = self
            .conn
            .prepare(
                "SELECT state, accepted, COUNT(*), COALESCE(SUM(size), 0)
                 FROM traces GROUP BY state, accepted",
            )
            .map_err(self.err("count traces"))?;
        let rows: Vec<(String, bool, u64, u64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .and_then(|rows| rows.collect())
            .map_err(self.err("count traces"))?;
        for (state, accepted, n, bytes) in rows {
            s.traces += n;
            s.record_bytes += bytes;
            if state == "reported" {
                s.reported += n;
            } else {
                s.stored += n;
                if accepted {
                    s.unreported_accepted += n;
                }
            }
            if accepted {
                s.accepted += n;
            } else {
                s.rejected += n;
            }
        }
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        s.file_bytes = [self.path.as_path(), Path::new(&wal)]
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        Ok(s)
    }

    /// Writes every trace, oldest first, rewritten by `redactor`, as a JSON
    /// Lines bundle at `out` (gzip-compressed if its name ends in `.gz`).
    /// The bundle appears whole or not at all: it is written to a temporary
    /// file beside `out`, synced, and renamed. Returns how many traces.
    pub fn export_bundle(&self, out: &Path, redactor: &dyn Redactor) -> Result<u64> {
        let name = out
            .file_name()
            .ok_or_else(|| StoreError::Io {
                path: out.to_path_buf(),
                op: "export traces",
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
            })?
            .to_string_lossy()
            .into_owned();
        let tmp = out.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let result = self.write_bundle(&tmp, name.ends_with(".gz"), redactor);
        let result = result.and_then(|n| {
            fs::rename(&tmp, out).map_err(|source| StoreError::Io {
                path: out.to_path_buf(),
                op: "move the finished bundle into place",
                source,
            })?;
            sync_parent(out);
            Ok(n)
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn write_bundle(&self, tmp: &Path, gzip: bool, redactor: &dyn Redactor) -> Result<u64> {
        let io = |op| {
            move |source| StoreError::Io {
                path: tmp.to_path_buf(),
                op,
                source,
            }
        };
        let file = File::create(tmp).map_err(io("create the bundle"))?;
        let mut out = BufWriter::new(file);
        // One read transaction: a consistent snapshot while others write.
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(self.err("export traces"))?;
        let mut stmt = tx
            .prepare("SELECT id, state, size, record FROM traces ORDER BY created_at, seq")
            .map_err(self.err("export traces"))?;
        let mut rows = stmt.query([]).map_err(self.err("export traces"))?;
        let mut n = 0u64;
        let mut write_all = |w: &mut dyn Write| -> Result<()> {
            while let Some(row) = rows.next().map_err(self.err("export traces"))? {
                let get = |i| row.get::<_, String>(i).map_err(self.err("export traces"));
                let (id, state, json) = (get(0)?, get(1)?, get(3)?);
                let size = row.get(2).map_err(self.err("export traces"))?;
                let t = self.stored(&id, &state, size, &json)?;
                let line = t.record.redacted(redactor).to_json();
                w.write_all(line.as_bytes())
                    .and_then(|_| w.write_all(b"\n"))
                    .map_err(io("write the bundle"))?;
                n += 1;
            }
            Ok(())
        };
        if gzip {
            let mut gz = GzEncoder::new(out, Compression::default());
            write_all(&mut gz)?;
            out = gz.finish().map_err(io("write the bundle"))?;
        } else {
            write_all(&mut out)?;
        }
        let file = out
            .into_inner()
            .map_err(|e| io("write the bundle")(e.into_error()))?;
        file.sync_all().map_err(io("sync the bundle"))?;
        Ok(n)
    }
}

/// Reads a bundle written by [`TraceStore::export_bundle`] (plain or gzip,
/// told by its first bytes), validating every record.
pub fn read_bundle(path: &Path) -> Result<Vec<TraceRecord>> {
    read_bundle_limited(path, u64::MAX)
}

/// [`read_bundle`] that refuses a bundle whose (decompressed) text is
/// longer than `max_bytes`, before holding more than that in memory.
pub fn read_bundle_limited(path: &Path, max_bytes: u64) -> Result<Vec<TraceRecord>> {
    let io = |op| {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    let mut file = BufReader::new(File::open(path).map_err(io("open the bundle"))?);
    let gzip = file
        .fill_buf()
        .map_err(io("read the bundle"))?
        .starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn BufRead> = if gzip {
        Box::new(BufReader::new(MultiGzDecoder::new(file)))
    } else {
        Box::new(file)
    };
    let mut records = Vec::new();
    let mut buf = Vec::new();
    let mut total = 0u64;
    for line in 1.. {
        buf.clear();
        let left = max_bytes.saturating_sub(total).saturating_add(1);
        let n = (&mut reader)
            .take((MAX_RECORD_BYTES as u64 + 1).min(left))
            .read_until(b'\n', &mut buf)
            .map_err(io("read the bundle"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max_bytes {
            return Err(StoreError::BundleTooLarge {
                path: path.to_path_buf(),
                max_bytes,
            });
        }
        let bad = |source| StoreError::BadBundleLine {
            path: path.to_path_buf(),
            line,
            source,
        };
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if n > MAX_RECORD_BYTES {
            return Err(bad(RecordError::TooLong {
                field: "record".into(),
                len: n,
                max: MAX_RECORD_BYTES,
            }));
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = std::str::from_utf8(&buf).map_err(|e| {
            bad(RecordError::Json(serde::de::Error::custom(format!(
                "not UTF-8: {e}"
            ))))
        })?;
        records.push(TraceRecord::from_json(text).map_err(bad)?);
    }
    Ok(records)
}

/// Whether `path` is to be created; refuses an existing file that is not a
/// trace store, reading only its header.
fn check_file(path: &Path) -> Result<bool> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                op: "open the trace store",
                source,
            })
        }
    };
    let not_db = |reason: String| StoreError::NotADatabase {
        path: path.to_path_buf(),
        reason,
    };
    if !meta.is_file() {
        return Err(not_db("not a regular file".into()));
    }
    if meta.len() == 0 {
        // SQLite writes nothing before the first commit: an empty file is a
        // store whose creation never finished.
        return Ok(true);
    }
    let mut header = [0u8; 100];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                not_db(format!("only {} bytes, shorter than a header", meta.len()))
            }
            _ => StoreError::Io {
                path: path.to_path_buf(),
                op: "read the trace store's header",
                source: e,
            },
        })?;
    if &header[..16] != SQLITE_MAGIC {
        return Err(not_db("no SQLite header".into()));
    }
    let be = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let app = be(68);
    // A store whose creation was cut short: a database never given a schema
    // (schema cookie 0), not in WAL mode, without our id yet. `migrate`
    // checks again that it holds nothing before making it a store.
    let unfinished = app == 0 && be(40) == 0 && header[18] == 1 && header[19] == 1;
    if app != APPLICATION_ID && !unfinished {
        return Err(StoreError::Foreign {
            path: path.to_path_buf(),
            found: app,
        });
    }
    Ok(false)
}

/// Within a write transaction: stores one validated record (see
/// [`TraceStore::insert`]).
fn insert_row(
    tx: &Connection,
    path: &Path,
    options: &StoreOptions,
    record: &TraceRecord,
) -> Result<Inserted> {
    let accepted = record.verification.accepted;
    if !accepted && !options.keep_rejected {
        return Ok(Inserted::Discarded);
    }
    let json = record.to_json();
    let size = json.len() as u64;
    let max = options.max_bytes;
    let e = |op| move |err| sql_error(path, op, err);
    let existing: Option<(bool, u64)> = tx
        .query_row(
            "SELECT accepted, size FROM traces WHERE id = ?1",
            [&record.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(e("look up a trace"))?;
    Ok(match existing {
        Some((true, _)) => Inserted::Duplicate,
        Some((false, _)) if !accepted => Inserted::Duplicate,
        Some((false, old)) => {
            make_room(tx, path, max, size.saturating_sub(old), &record.id)?;
            tx.execute(
                "UPDATE traces SET accepted = 1, created_at = ?2, size = ?3, record = ?4
                 WHERE id = ?1",
                params![record.id, record.created_at as i64, size as i64, json],
            )
            .map_err(e("store a trace"))?;
            Inserted::Upgraded
        }
        None => {
            make_room(tx, path, max, size, &record.id)?;
            tx.execute(
                "INSERT INTO traces (id, created_at, state, accepted, size, record)
                 VALUES (?1, ?2, 'stored', ?3, ?4, ?5)",
                params![
                    record.id,
                    record.created_at as i64,
                    accepted,
                    size as i64,
                    json
                ],
            )
            .map_err(e("store a trace"))?;
            Inserted::New
        }
    })
}

fn sql_error(path: &Path, op: &'static str, e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        match f.code {
            ErrorCode::DiskFull => {
                return StoreError::DiskFull {
                    path: path.to_path_buf(),
                    op,
                }
            }
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                return StoreError::Corrupt {
                    path: path.to_path_buf(),
                    detail: format!("{op}: {e}"),
                }
            }
            _ => {}
        }
    }
    StoreError::Sqlite {
        path: path.to_path_buf(),
        op,
        source: e,
    }
}

fn total_bytes(conn: &Connection, path: &Path) -> Result<u64> {
    conn.query_row("SELECT COALESCE(SUM(size), 0) FROM traces", [], |r| {
        r.get(0)
    })
    .map_err(|e| sql_error(path, "measure the store", e))
}

/// Within a write transaction: evicts until `needed` more bytes fit under
/// `max`, or fails with [`StoreError::Full`] (the caller's transaction then
/// rolls back, evicting nothing). `keep` is an id never to evict.
fn make_room(
    conn: &Connection,
    path: &Path,
    max: Option<u64>,
    needed: u64,
    keep: &str,
) -> Result<()> {
    let Some(max) = max else { return Ok(()) };
    let total = total_bytes(conn, path)?;
    if total + needed <= max {
        return Ok(());
    }
    let target = max.checked_sub(needed);
    if let Some(target) = target {
        let evicted = evict_down_to(conn, path, target, total, keep)?;
        if total - evicted.bytes <= target {
            return Ok(());
        }
    }
    let pinned: u64 = conn
        .query_row(
            "SELECT COALESCE(SUM(size), 0) FROM traces WHERE state = 'stored' AND accepted = 1",
            [],
            |r| r.get(0),
        )
        .map_err(|e| sql_error(path, "measure the store", e))?;
    Err(StoreError::Full {
        path: path.to_path_buf(),
        needed,
        max_bytes: max,
        pinned,
    })
}

/// Deletes the oldest reported, then the oldest rejected traces until the
/// total is at most `target` or nothing evictable is left.
fn evict_down_to(
    conn: &Connection,
    path: &Path,
    target: u64,
    total: u64,
    keep: &str,
) -> Result<Evicted> {
    let e = |err| sql_error(path, "evict traces", err);
    let mut evicted = Evicted::default();
    if total <= target {
        return Ok(evicted);
    }
    let mut victims = Vec::new();
    for pass in [
        "SELECT seq, size FROM traces WHERE state = 'reported' AND id != ?1
         ORDER BY created_at, seq",
        "SELECT seq, size FROM traces WHERE state = 'stored' AND accepted = 0 AND id != ?1
         ORDER BY created_at, seq",
    ] {
        let mut stmt = conn.prepare(pass).map_err(e)?;
        let mut rows = stmt.query([keep]).map_err(e)?;
        while total - evicted.bytes > target {
            let Some(row) = rows.next().map_err(e)? else {
                break;
            };
            let (seq, size): (i64, u64) = (row.get(0).map_err(e)?, row.get(1).map_err(e)?);
            victims.push(seq);
            evicted.traces += 1;
            evicted.bytes += size;
        }
    }
    let mut del = conn
        .prepare("DELETE FROM traces WHERE seq = ?1")
        .map_err(e)?;
    for seq in victims {
        del.execute([seq]).map_err(e)?;
    }
    Ok(evicted)
}

/// Syncs the folder holding `path` so a rename into it survives a crash
/// (best effort: not every platform can open a folder).
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}
