//! GGUF: the single-file model format, read zero-copy from a memory map.
//!
//! [`GgufFile::open`] maps the file and validates the whole header (see
//! `reader.rs`) before anything else sees it: no unvalidated byte reaches a
//! tokenizer or a kernel. [`GgufWriter`] writes files in the same format.

mod error;
mod reader;
mod value;
mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

pub use error::GgufError;
pub use reader::{DEFAULT_ALIGNMENT, MAX_ALIGNMENT, MAX_DIMS, MAX_TENSOR_NAME_LEN};
pub use value::{Array, StringArray, Value, ValueType};
pub use writer::GgufWriter;

use crate::quant::GgmlType;

/// The metadata key/value pairs of a GGUF file, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// Adds or replaces a key.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    /// Whether the key is present.
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// The value of a key, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// All entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn required(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    fn mismatch(key: &str, expected: &str, v: &Value) -> GgufError {
        GgufError::key(
            key,
            format!("expected {expected}, found {}", v.type_description()),
        )
    }

    /// An optional non-negative integer of any width.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| Self::mismatch(key, "a non-negative integer", v))
            })
            .transpose()
    }

    /// A required non-negative integer of any width.
    pub fn u64(&self, key: &str) -> Result<u64, GgufError> {
        self.opt_u64(key)?
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    /// An optional number (float or integer), as f64.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| Self::mismatch(key, "a number", v)))
            .transpose()
    }

    /// An optional bool.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| Self::mismatch(key, "bool", v)))
            .transpose()
    }

    /// An optional string.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| Self::mismatch(key, "string", v)))
            .transpose()
    }

    /// A required string.
    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.required(key)?;
        v.as_str().ok_or_else(|| Self::mismatch(key, "string", v))
    }

    /// An optional array of strings.
    pub fn opt_strings(&self, key: &str) -> Result<Option<&StringArray>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(Array::String(v))) => Ok(Some(v)),
            Some(v) => Err(Self::mismatch(key, "array of string", v)),
        }
    }

    /// An optional array of f32.
    pub fn opt_f32s(&self, key: &str) -> Result<Option<&[f32]>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(Array::F32(v))) => Ok(Some(v)),
            Some(v) => Err(Self::mismatch(key, "array of f32", v)),
        }
    }

    /// An optional array of integers of any width, widened to i64.
    pub fn opt_ints(&self, key: &str) -> Result<Option<Vec<i64>>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .and_then(Array::to_i64_vec)
                .map(Some)
                .ok_or_else(|| Self::mismatch(key, "array of integers", v)),
        }
    }
}

/// Where a tensor's data is and what it holds. `dims` are in GGML order:
/// `dims[0]` is the length of a row (the contiguous dimension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub dtype: GgmlType,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

enum Backing {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// An open, validated GGUF file. Tensor data is borrowed from the memory map.
pub struct GgufFile {
    bytes: Backing,
    header: reader::Header,
    tensor_index: HashMap<String, usize>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.header.version)
            .field("metadata", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps and validates a GGUF file. Nothing of the file is copied except
    /// the metadata values.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let open_err = |source| GgufError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        // SAFETY: the map is read-only. Like every runtime that maps model
        // files, edgeloop assumes the file is not truncated or rewritten in
        // place while it is open; writers replace files by rename.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(open_err)?;
        Self::from_backing(Backing::Mapped(map), Some(path.to_path_buf()))
    }

    /// Validates a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::from_backing(Backing::Owned(bytes), None)
    }

    fn from_backing(bytes: Backing, path: Option<PathBuf>) -> Result<Self, GgufError> {
        let buf = match &bytes {
            Backing::Mapped(m) => &m[..],
            Backing::Owned(v) => &v[..],
        };
        let header = reader::parse(buf)?;
        let tensor_index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            bytes,
            header,
            tensor_index,
            path,
        })
    }

    /// The whole file's bytes (validated; tensor byte ranges index into it).
    pub fn bytes(&self) -> &[u8] {
        self.buf()
    }

    fn buf(&self) -> &[u8] {
        match &self.bytes {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }

    /// The path the file was opened from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// Size of the whole file in bytes.
    pub fn file_len(&self) -> u64 {
        self.buf().len() as u64
    }

    /// Absolute offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// Alignment of tensor data.
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }

    /// All tensors in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index
            .get(name)
            .map(|&i| &self.header.tensors[i])
    }

    /// The bytes of a tensor, borrowed from the map (validated at open).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.header.data_offset + info.offset) as usize;
        &self.buf()[start..start + info.n_bytes as usize]
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.metadata().str("general.architecture")
    }

    /// Whether tensor data is memory-mapped (as opposed to held in a buffer).
    pub fn is_mapped(&self) -> bool {
        matches!(self.bytes, Backing::Mapped(_))
    }
}
