//! On-disk cache of the merges rebuilt for SentencePiece vocabularies.
//!
//! Rebuilding the merges of a large vocabulary (`spm::rebuild_merges`)
//! is the slow part of building a `"llama"` tokenizer, so
//! [`super::Tokenizer::load_or_build`] stores them. The file is one line of
//! JSON header followed by a JSON payload:
//!
//! ```text
//! {"format":2,"build":"edgeloop-tokenizer/2","spec_sha256":"..","payload_sha256":"..","payload_len":123}
//! {"merges":[[236746,236763],...]}
//! ```
//!
//! `spec_sha256` covers everything the build depends on (tokens, scores,
//! types, merges, special ids, flags, and [`BUILD_VERSION`]); `payload_sha256`
//! detects truncation or corruption. The payload is ids, not a serialized
//! `tokenizers::Tokenizer`: that JSON (13.5 MB for Gemma 3) deserializes
//! more slowly than the whole build, because `tokenizers` buffers it through
//! untagged enums and then rebuilds its merge table anyway. Loaded ids are
//! range-checked, and `tokenizers` rejects any merge whose parts or result
//! are not tokens, so nothing in the file is trusted blindly.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{TokenizerError, TokenizerSpec};

/// Version of the cache file layout.
const FORMAT: u32 = 2;

/// Identifies the merge-rebuilding logic; bump it whenever `spm.rs` changes
/// which merges are built or their order, so old caches are rebuilt.
pub const BUILD_VERSION: &str = "edgeloop-tokenizer/2";

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    build: String,
    spec_sha256: String,
    payload_sha256: String,
    payload_len: usize,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    merges: Vec<(u32, u32)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (hex) of everything in `spec` that the built tokenizer depends
/// on, and of [`BUILD_VERSION`]. The chat template is excluded.
pub fn spec_hash(spec: &TokenizerSpec) -> String {
    let mut h = Sha256::new();
    // Every variable-length field is length-prefixed, so that different
    // specs can never serialize to the same byte stream.
    fn bytes(h: &mut Sha256, tag: &str, b: &[u8]) {
        h.update(tag.as_bytes());
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    }
    fn opt_u32(h: &mut Sha256, tag: &str, v: Option<u32>) {
        match v {
            Some(v) => bytes(h, tag, &v.to_le_bytes()),
            None => bytes(h, tag, &[]),
        }
    }
    bytes(&mut h, "build", BUILD_VERSION.as_bytes());
    bytes(&mut h, "model", spec.model.as_bytes());
    match &spec.pre {
        Some(p) => bytes(&mut h, "pre", p.as_bytes()),
        None => bytes(&mut h, "nopre", &[]),
    }
    bytes(&mut h, "tokens", &(spec.tokens.len() as u64).to_le_bytes());
    for t in &spec.tokens {
        bytes(&mut h, "t", t.as_bytes());
    }
    match &spec.scores {
        Some(s) => {
            let raw: Vec<u8> = s.iter().flat_map(|f| f.to_bits().to_le_bytes()).collect();
            bytes(&mut h, "scores", &raw);
        }
        None => bytes(&mut h, "noscores", &[]),
    }
    match &spec.token_types {
        Some(t) => {
            let raw: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
            bytes(&mut h, "types", &raw);
        }
        None => bytes(&mut h, "notypes", &[]),
    }
    match &spec.merges {
        Some(m) => {
            bytes(&mut h, "merges", &(m.len() as u64).to_le_bytes());
            for x in m {
                bytes(&mut h, "m", x.as_bytes());
            }
        }
        None => bytes(&mut h, "nomerges", &[]),
    }
    opt_u32(&mut h, "bos", spec.bos_id);
    opt_u32(&mut h, "eos", spec.eos_id);
    opt_u32(&mut h, "unk", spec.unk_id);
    opt_u32(&mut h, "pad", spec.pad_id);
    opt_u32(&mut h, "eot", spec.eot_id);
    bytes(
        &mut h,
        "flags",
        &[
            spec.add_bos as u8,
            spec.add_eos as u8,
            spec.add_space_prefix as u8,
        ],
    );
    hex(&h.finalize())
}

/// Loads the merges cached at `path` if they were built from a spec hashing
/// to `spec_hash`, checking that every id is below `n_tokens`. The error
/// says why the cache was not used.
pub(crate) fn load(
    path: &Path,
    spec_hash: &str,
    n_tokens: usize,
) -> Result<Vec<(u32, u32)>, String> {
    let data = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let nl = data
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header: Header =
        serde_json::from_slice(&data[..nl]).map_err(|e| format!("bad header: {e}"))?;
    if header.format != FORMAT || header.build != BUILD_VERSION {
        return Err(format!(
            "written by format {} / {} (expected {FORMAT} / {BUILD_VERSION})",
            header.format, header.build
        ));
    }
    if header.spec_sha256 != spec_hash {
        return Err("stale: built from a different spec".into());
    }
    let payload = &data[nl + 1..];
    if payload.len() != header.payload_len {
        return Err(format!(
            "payload is {} bytes, header says {}",
            payload.len(),
            header.payload_len
        ));
    }
    if hex(&Sha256::digest(payload)) != header.payload_sha256 {
        return Err("payload checksum mismatch".into());
    }
    let payload: Payload =
        serde_json::from_slice(payload).map_err(|e| format!("bad payload: {e}"))?;
    if let Some(&(l, r)) = payload
        .merges
        .iter()
        .find(|&&(l, r)| l as usize >= n_tokens || r as usize >= n_tokens)
    {
        return Err(format!("merge ({l}, {r}) is out of range"));
    }
    Ok(payload.merges)
}

/// Writes `merges` to `path` atomically: a temporary file in the same
/// directory, synced, then renamed over `path`.
pub(crate) fn store(
    path: &Path,
    spec_hash: &str,
    merges: &[(u32, u32)],
) -> Result<(), TokenizerError> {
    let err = |message: String| TokenizerError::Cache {
        path: path.to_path_buf(),
        message,
    };
    #[derive(Serialize)]
    struct PayloadRef<'a> {
        merges: &'a [(u32, u32)],
    }
    let payload = serde_json::to_string(&PayloadRef { merges }).map_err(|e| err(e.to_string()))?;
    let header = Header {
        format: FORMAT,
        build: BUILD_VERSION.to_string(),
        spec_sha256: spec_hash.to_string(),
        payload_sha256: hex(&Sha256::digest(payload.as_bytes())),
        payload_len: payload.len(),
    };
    let header = serde_json::to_string(&header).map_err(|e| err(e.to_string()))?;

    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| err(format!("cannot create directory: {e}")))?;
    }
    let tmp = temp_path(path);
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(header.as_bytes())?;
        f.write_all(b"\n")?;
        f.write_all(payload.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        err(format!("cannot write: {e}"))
    })
}

/// A temporary name next to `path`, unique per process and call.
fn temp_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}.{n}", std::process::id()));
    path.with_file_name(name)
}
