//! Parsing and validation of a GGUF header from a byte slice.
//!
//! Every count and length read from the file is checked against the bytes
//! that remain before anything is allocated for it, so a hostile header can
//! never make the reader allocate more than the file's own size justifies.

use std::collections::HashSet;

use super::error::GgufError;
use super::value::{Array, StringArray, Value, ValueType};
use super::{Metadata, TensorInfo};
use crate::quant::GgmlType;

/// "GGUF" in file order.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of tensor data when the file does not set `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest `general.alignment` accepted.
pub const MAX_ALIGNMENT: u64 = 1 << 20;
/// Longest metadata key accepted, in bytes.
pub const MAX_KEY_LEN: u64 = 1 << 16;
/// Longest tensor name accepted, in bytes (ggml's `GGML_MAX_NAME` - 1).
pub const MAX_TENSOR_NAME_LEN: u64 = 63;
/// Most dimensions a tensor may have.
pub const MAX_DIMS: u32 = 4;

/// Smallest possible encoded metadata entry: key length, one key byte, type, one value byte.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;
/// Smallest possible encoded tensor info: name length, one name byte, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 1 + 4 + 8 + 4 + 8;

/// A parsed and validated GGUF header.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    /// Absolute file offset where tensor data starts.
    pub data_offset: u64,
    pub alignment: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                offset: self.offset(),
                what: what(),
                needed: n,
                available: self.remaining(),
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes.
    fn string(&mut self, max: u64, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        self.str(max, what).map(str::to_string)
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes, borrowed from the buffer.
    fn str(&mut self, max: u64, what: &dyn Fn() -> String) -> Result<&'a str, GgufError> {
        let at = self.offset();
        let len = self.u64(&|| format!("length of {}", what()))?;
        if len > max {
            return Err(GgufError::Malformed {
                offset: at,
                problem: format!("{} has length {len}, above the limit of {max}", what()),
            });
        }
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map_err(|e| GgufError::Malformed {
            offset: at + 8,
            problem: format!("{} is not valid UTF-8 ({e})", what()),
        })
    }

    /// `n` length-prefixed strings, copied back to back and checked as
    /// UTF-8 in one pass; `None` if one runs past the end or the text is not
    /// UTF-8.
    fn packed_strings(&mut self, n: usize) -> Option<StringArray> {
        let mut text = Vec::new();
        let mut ends = Vec::with_capacity(n);
        for _ in 0..n {
            let len = self.u64(&String::new).ok()?;
            text.extend_from_slice(self.take(len, &String::new).ok()?);
            ends.push(text.len());
        }
        StringArray::from_utf8(text, ends)
    }

    fn value_type(&mut self, what: &dyn Fn() -> String) -> Result<ValueType, GgufError> {
        let at = self.offset();
        let id = self.u32(what)?;
        ValueType::from_id(id).ok_or_else(|| GgufError::Malformed {
            offset: at,
            problem: format!("{} has unknown value type id {id}", what()),
        })
    }

    fn scalar(&mut self, ty: ValueType, what: &dyn Fn() -> String) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(self.u32(what)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => Value::U64(self.u64(what)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Bool => {
                let at = self.offset();
                match self.array::<1>(what)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => {
                        return Err(GgufError::Malformed {
                            offset: at,
                            problem: format!("{} is a bool stored as {b} (must be 0 or 1)", what()),
                        })
                    }
                }
            }
            ValueType::String => Value::String(self.string(self.remaining(), what)?),
            ValueType::Array => unreachable!("arrays are read by Cursor::array_value"),
        })
    }

    fn value(&mut self, ty: ValueType, what: &dyn Fn() -> String) -> Result<Value, GgufError> {
        if ty != ValueType::Array {
            return self.scalar(ty, what);
        }
        let at = self.offset();
        let elem = self.value_type(&|| format!("element type of {}", what()))?;
        let len = self.u64(&|| format!("length of {}", what()))?;
        if elem == ValueType::Array {
            return Err(GgufError::Malformed {
                offset: at,
                problem: format!("{} is a nested array (not supported)", what()),
            });
        }
        // Strings take at least their 8-byte length prefix.
        let min_elem = elem.fixed_size().unwrap_or(8) as u64;
        if len
            .checked_mul(min_elem)
            .is_none_or(|n| n > self.remaining())
        {
            return Err(GgufError::Malformed {
                offset: at,
                problem: format!(
                    "{} claims {len} elements of {elem}, more than the {} bytes left can hold",
                    what(),
                    self.remaining()
                ),
            });
        }
        let n = len as usize;
        // Fixed-size numbers: one bounds check for the whole array.
        macro_rules! read_numbers {
            ($variant:ident, $t:ty) => {{
                const SIZE: usize = std::mem::size_of::<$t>();
                let bytes = self.take(len * SIZE as u64, what)?;
                Array::$variant(
                    bytes
                        .chunks_exact(SIZE)
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunks of SIZE")))
                        .collect(),
                )
            }};
        }
        let array = match elem {
            ValueType::U8 => Array::U8(self.take(len, what)?.to_vec()),
            ValueType::I8 => Array::I8(self.take(len, what)?.iter().map(|&b| b as i8).collect()),
            ValueType::U16 => read_numbers!(U16, u16),
            ValueType::I16 => read_numbers!(I16, i16),
            ValueType::U32 => read_numbers!(U32, u32),
            ValueType::I32 => read_numbers!(I32, i32),
            ValueType::F32 => read_numbers!(F32, f32),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    match self.scalar(elem, &|| format!("element {i} of {}", what()))? {
                        Value::Bool(b) => v.push(b),
                        _ => unreachable!("a bool scalar reads as Value::Bool"),
                    }
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let first = self.pos;
                match self.packed_strings(n) {
                    Some(strings) => Array::String(strings),
                    None => {
                        // Read again one by one, to name the element at fault.
                        self.pos = first;
                        for i in 0..n {
                            self.str(self.remaining(), &|| format!("element {i} of {}", what()))?;
                        }
                        return Err(GgufError::Malformed {
                            offset: first as u64,
                            problem: format!("{} is not a valid string array", what()),
                        });
                    }
                }
            }
            ValueType::U64 => read_numbers!(U64, u64),
            ValueType::I64 => read_numbers!(I64, i64),
            ValueType::F64 => read_numbers!(F64, f64),
            ValueType::Array => unreachable!(),
        };
        Ok(Value::Array(array))
    }
}

/// Parses and validates the header of a GGUF file held in `buf` (the whole file).
pub fn parse(buf: &[u8]) -> Result<Header, GgufError> {
    let mut c = Cursor { buf, pos: 0 };
    let magic = c
        .take(4, &|| "magic".into())
        .map_err(|_| GgufError::BadMagic {
            found: buf[..buf.len().min(4)].to_vec(),
        })?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic {
            found: magic.to_vec(),
        });
    }
    let version = c.u32(&|| "version".into())?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let count_at = c.offset();
    let n_tensors = c.u64(&|| "tensor count".into())?;
    let n_kv = c.u64(&|| "metadata count".into())?;
    // Both counts are bounded by the smallest possible encoding of an entry.
    let need = n_kv.checked_mul(MIN_KV_BYTES).and_then(|kv| {
        n_tensors
            .checked_mul(MIN_TENSOR_INFO_BYTES)
            .and_then(|t| t.checked_add(kv))
    });
    if need.is_none_or(|n| n > c.remaining()) {
        return Err(GgufError::Malformed {
            offset: count_at,
            problem: format!(
                "{n_tensors} tensors and {n_kv} metadata entries cannot fit in the {} bytes left",
                c.remaining()
            ),
        });
    }

    let mut metadata = Metadata::default();
    for i in 0..n_kv {
        let at = c.offset();
        let key = c.string(MAX_KEY_LEN, &|| format!("key of metadata entry {i}"))?;
        if key.is_empty() {
            return Err(GgufError::Malformed {
                offset: at,
                problem: format!("metadata entry {i} has an empty key"),
            });
        }
        let ty = c.value_type(&|| format!("type of metadata key {key:?}"))?;
        let value = c.value(ty, &|| format!("value of metadata key {key:?}"))?;
        if metadata.contains(&key) {
            return Err(GgufError::DuplicateKey { key, offset: at });
        }
        metadata.insert(key, value);
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) => {
            let a = *a as u64;
            if a == 0 || !a.is_power_of_two() || a > MAX_ALIGNMENT {
                return Err(GgufError::key(
                    "general.alignment",
                    format!("{a} is not a power of two between 1 and {MAX_ALIGNMENT}"),
                ));
            }
            a
        }
        Some(v) => {
            return Err(GgufError::key(
                "general.alignment",
                format!("expected u32, found {}", v.type_description()),
            ))
        }
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let at = c.offset();
        let name = c.string(MAX_TENSOR_NAME_LEN, &|| format!("name of tensor {i}"))?;
        if name.is_empty() {
            return Err(GgufError::Malformed {
                offset: at,
                problem: format!("tensor {i} has an empty name"),
            });
        }
        if !names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor { name, offset: at });
        }
        let n_dims = c.u32(&|| format!("dimension count of tensor {name:?}"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::tensor(
                &name,
                format!("has {n_dims} dimensions (must be 1 to {MAX_DIMS})"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(&|| format!("dimension {d} of tensor {name:?}"))?);
        }
        let type_at = c.offset();
        let type_id = c.u32(&|| format!("type of tensor {name:?}"))?;
        let dtype = GgmlType::from_id(type_id).ok_or_else(|| GgufError::Malformed {
            offset: type_at,
            problem: format!("tensor {name:?} has unknown ggml type id {type_id}"),
        })?;
        let offset = c.u64(&|| format!("data offset of tensor {name:?}"))?;
        let info = TensorInfo::new(name, dims, dtype, offset)?;
        if info.offset % alignment != 0 {
            return Err(GgufError::tensor(
                &info.name,
                format!(
                    "data offset {} is not a multiple of the alignment {alignment}",
                    info.offset
                ),
            ));
        }
        tensors.push(info);
    }

    let data_offset = (c.offset()).div_ceil(alignment) * alignment;
    let file_len = buf.len() as u64;
    if data_offset > file_len && !tensors.is_empty() {
        return Err(GgufError::Truncated {
            offset: c.offset(),
            what: "padding before tensor data".into(),
            needed: data_offset - c.offset(),
            available: file_len - c.offset(),
        });
    }
    let data_len = file_len.saturating_sub(data_offset);
    check_tensor_extents(&tensors, data_offset, data_len)?;

    Ok(Header {
        version,
        metadata,
        tensors,
        data_offset,
        alignment,
    })
}

/// Every tensor's bytes lie inside the data section and no two overlap.
fn check_tensor_extents(
    tensors: &[TensorInfo],
    data_offset: u64,
    data_len: u64,
) -> Result<(), GgufError> {
    for t in tensors {
        let end = t.offset.checked_add(t.n_bytes);
        if end.is_none_or(|e| e > data_len) {
            return Err(GgufError::tensor(
                &t.name,
                // No sum of offsets here: the offset is the file's, any u64.
                format!(
                    "data [{}, +{}) runs past the end of the file ({} bytes of tensor data from file offset {})",
                    t.offset,
                    t.n_bytes,
                    data_len,
                    data_offset
                ),
            ));
        }
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.offset + a.n_bytes > b.offset {
            return Err(GgufError::tensor(
                &b.name,
                format!(
                    "data at offset {} overlaps tensor {:?} ([{}, {}))",
                    b.offset,
                    a.name,
                    a.offset,
                    a.offset + a.n_bytes
                ),
            ));
        }
    }
    Ok(())
}

impl TensorInfo {
    /// Validates a tensor's shape and type and computes its byte size.
    pub(crate) fn new(
        name: String,
        dims: Vec<u64>,
        dtype: GgmlType,
        offset: u64,
    ) -> Result<Self, GgufError> {
        if let Some(d) = dims.iter().position(|&d| d == 0 || d > i64::MAX as u64) {
            return Err(GgufError::tensor(
                &name,
                format!(
                    "dimension {d} is {} (must be between 1 and 2^63-1)",
                    dims[d]
                ),
            ));
        }
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| {
                GgufError::tensor(&name, format!("element count of shape {dims:?} overflows"))
            })?;
        if !dims[0].is_multiple_of(dtype.block_len() as u64) {
            return Err(GgufError::tensor(
                &name,
                format!(
                    "row length {} is not a multiple of the {} block size {}",
                    dims[0],
                    dtype,
                    dtype.block_len()
                ),
            ));
        }
        let n_bytes = dtype.bytes_for(n_elements).ok_or_else(|| {
            GgufError::tensor(
                &name,
                format!("byte size of shape {dims:?} as {dtype} overflows"),
            )
        })?;
        Ok(TensorInfo {
            name,
            dims,
            dtype,
            offset,
            n_bytes,
        })
    }
}
