//! The repacked matrices of a model ([`PackedRows`]), cached beside the
//! model file (`<model>.gguf.packed`) so that later loads map them instead
//! of making them again: packing is a copy into fresh memory, and on a
//! small machine the page faults of that memory cost as much as the first
//! token.
//!
//! The file is this cache's own: a header naming the model file it was made
//! from (its size and modification time), a table of matrices, then their
//! packed bytes, each at a 64-byte boundary. A file that is not exactly what
//! the model needs — another model, a changed file, a truncated or garbled
//! write, another format version — is ignored and written again. It is
//! written to a temporary file and renamed into place, so readers never see
//! half of one.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use crate::kernels::{packed_len, PackedRows};
use crate::quant::GgmlType;

/// The first bytes of a cache file (the format version is its last digits).
const MAGIC: &[u8; 8] = b"ELPACK01";
/// Header: magic, model file size, model modification time (ns), entries.
const HEADER: usize = 32;
/// One entry: file offset of the matrix, type id, rows, columns, where
/// its packed bytes start.
const ENTRY: usize = 40;
/// Packed bytes start on this boundary.
const ALIGN: usize = 64;

/// A matrix to pack: where its bytes start in the model file, its type,
/// rows and columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub offset: usize,
    pub dtype: GgmlType,
    pub rows: usize,
    pub cols: usize,
}

/// What a cache file must have been made from: the model file's size and
/// modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Source {
    len: u64,
    modified_ns: u64,
}

impl Source {
    /// The identity of the model file at `path`, if it can be read.
    pub fn of(path: &Path) -> Option<Source> {
        let meta = std::fs::metadata(path).ok()?;
        let modified = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
        Some(Source {
            len: meta.len(),
            modified_ns: u64::try_from(modified.as_nanos()).ok()?,
        })
    }
}

/// The cache file of the model at `model`.
pub(crate) fn path_for(model: &Path) -> PathBuf {
    let mut name = model.as_os_str().to_owned();
    name.push(".packed");
    PathBuf::from(name)
}

/// The packed matrices in the cache file at `path`, if it was made from
/// `source` and holds exactly `wanted`; `None` otherwise (no file, another
/// model, or a damaged file).
pub(crate) fn load(
    path: &Path,
    source: Source,
    wanted: &[Wanted],
) -> Option<HashMap<usize, PackedRows>> {
    let file = File::open(path).ok()?;
    // SAFETY: the cache file is replaced by rename, never written in place,
    // so the mapped bytes do not change under us.
    let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.ok()?);
    let header = map.get(..HEADER)?;
    if &header[..8] != MAGIC
        || u64_at(header, 8) != source.len
        || u64_at(header, 16) != source.modified_ns
        || u64_at(header, 24) != wanted.len() as u64
    {
        return None;
    }
    let mut packed = HashMap::with_capacity(wanted.len());
    // The data follow the table, each matrix at the next boundary: exactly
    // where `store` puts them, so no two overlap and none covers the table.
    let mut at = HEADER.checked_add(wanted.len().checked_mul(ENTRY)?)?;
    for (i, w) in wanted.iter().enumerate() {
        let e = map.get(HEADER + i * ENTRY..HEADER + (i + 1) * ENTRY)?;
        at = at.next_multiple_of(ALIGN);
        let same = u64_at(e, 0) == w.offset as u64
            && u64_at(e, 8) == w.dtype.id() as u64
            && u64_at(e, 16) == w.rows as u64
            && u64_at(e, 24) == w.cols as u64
            && u64_at(e, 32) == at as u64;
        if !same {
            return None;
        }
        let end = at.checked_add(packed_len(w.dtype, w.rows, w.cols)?)?;
        let p = PackedRows::mapped(w.dtype, w.rows, w.cols, Arc::clone(&map), at..end)?;
        packed.insert(w.offset, p);
        at = end;
    }
    // Nothing after the last matrix.
    (at == map.len()).then_some(packed)
}

/// Writes `packed` (the matrices of `wanted`, made from `source`) to a cache
/// file at `path`, replacing any file there.
pub(crate) fn store(
    path: &Path,
    source: Source,
    wanted: &[Wanted],
    packed: &HashMap<usize, PackedRows>,
) -> io::Result<()> {
    let missing = || io::Error::new(io::ErrorKind::InvalidInput, "a wanted matrix is not packed");
    let mut head = Vec::with_capacity(HEADER + wanted.len() * ENTRY);
    head.extend_from_slice(MAGIC);
    for v in [source.len, source.modified_ns, wanted.len() as u64] {
        head.extend_from_slice(&v.to_le_bytes());
    }
    let mut at = (HEADER + wanted.len() * ENTRY).next_multiple_of(ALIGN);
    let mut parts = Vec::with_capacity(wanted.len());
    for w in wanted {
        let p = packed.get(&w.offset).ok_or_else(missing)?;
        if p.shape() != (w.dtype, w.rows, w.cols) {
            return Err(missing());
        }
        for v in [w.offset, w.dtype.id() as usize, w.rows, w.cols, at] {
            head.extend_from_slice(&(v as u64).to_le_bytes());
        }
        parts.push((at, p.bytes()));
        at = (at + p.bytes().len()).next_multiple_of(ALIGN);
    }
    // Beside the destination, named for this process and call so that two
    // loads of one model never write the same temporary file; synced before
    // the rename, so a crash cannot leave a complete-looking file of zeros.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".partial.{}.{call}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let mut w = io::BufWriter::new(File::create(&tmp)?);
        w.write_all(&head)?;
        let mut written = head.len();
        for (start, bytes) in parts {
            w.write_all(&[0u8; ALIGN][..start - written])?;
            w.write_all(bytes)?;
            written = start + bytes.len();
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests::{random_weights, Rng};

    /// Two packed matrices and the cache file that holds them.
    fn cached(dir: &Path) -> (PathBuf, Source, Vec<Wanted>, Vec<u8>) {
        let mut rng = Rng::new(5);
        let shapes = [(GgmlType::Q4_1, 16, 64), (GgmlType::Q5_0, 8, 96)];
        let mut wanted = Vec::new();
        let mut packed = HashMap::new();
        let mut offset = 0;
        for (dtype, rows, cols) in shapes {
            let data = random_weights(&mut rng, dtype, rows, cols);
            packed.insert(offset, PackedRows::new(dtype, &data, rows, cols).unwrap());
            wanted.push(Wanted {
                offset,
                dtype,
                rows,
                cols,
            });
            offset += data.len();
        }
        let source = Source {
            len: 1234,
            modified_ns: 5678,
        };
        let path = dir.join("m.gguf.packed");
        store(&path, source, &wanted, &packed).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        (path, source, wanted, bytes)
    }

    #[test]
    fn a_stored_cache_loads_back_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (path, source, wanted, _) = cached(dir.path());
        let mut rng = Rng::new(5);
        let loaded = load(&path, source, &wanted).expect("the cache loads");
        for w in &wanted {
            let data = random_weights(&mut rng, w.dtype, w.rows, w.cols);
            let fresh = PackedRows::new(w.dtype, &data, w.rows, w.cols).unwrap();
            assert_eq!(loaded[&w.offset].bytes(), fresh.bytes());
            assert_eq!(loaded[&w.offset].bytes().as_ptr() as usize % ALIGN, 0);
        }
    }

    #[test]
    fn a_cache_of_another_model_or_another_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, source, wanted, _) = cached(dir.path());
        for other in [
            Source {
                len: 1235,
                ..source
            },
            Source {
                modified_ns: 5679,
                ..source
            },
        ] {
            assert!(load(&path, other, &wanted).is_none(), "{other:?}");
        }
        let mut fewer = wanted.clone();
        fewer.pop();
        assert!(load(&path, source, &fewer).is_none());
        let mut moved = wanted.clone();
        moved[1].offset += 1;
        assert!(load(&path, source, &moved).is_none());
        let mut retyped = wanted.clone();
        retyped[0].dtype = GgmlType::Q4_0;
        assert!(load(&path, source, &retyped).is_none());
        assert!(load(&dir.path().join("absent"), source, &wanted).is_none());
    }

    #[test]
    fn a_damaged_cache_is_refused_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let (path, source, wanted, bytes) = cached(dir.path());
        let table = HEADER + wanted.len() * ENTRY;
        // Every header and table field set to values that break it.
        for field in (0..table).step_by(8) {
            for bad in [0u64, 1, 63, u64::MAX, bytes.len() as u64] {
                let mut b = bytes.clone();
                let old = u64_at(&b, field);
                if old == bad {
                    continue;
                }
                b[field..field + 8].copy_from_slice(&bad.to_le_bytes());
                std::fs::write(&path, &b).unwrap();
                assert!(
                    load(&path, source, &wanted).is_none(),
                    "field at {field} set to {bad}"
                );
            }
        }
        // Cut short anywhere.
        for len in [0, 7, HEADER, table, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..len]).unwrap();
            assert!(load(&path, source, &wanted).is_none(), "cut at {len}");
        }
    }
}
