//! Writing GGUF files: used to craft test models and to export students.

use std::io::{self, Write};
use std::path::Path;

use super::error::GgufError;
use super::reader::{DEFAULT_ALIGNMENT, MAGIC, MAX_ALIGNMENT};
use super::value::{Array, Value};
use super::{Metadata, TensorInfo};
use crate::quant::GgmlType;

/// Builds a GGUF (version 3) file from metadata and tensors.
///
/// Tensors are written in the order they were added, each aligned to
/// `general.alignment` (32 unless set).
#[derive(Default)]
pub struct GgufWriter {
    metadata: Metadata,
    tensors: Vec<(TensorInfo, Vec<u8>)>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a metadata key (replacing an earlier value).
    pub fn set(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        self.metadata.insert(key, value);
        self
    }

    /// Copies every metadata entry of `metadata` (e.g. a parent model's
    /// tokenizer and template).
    pub fn set_all(&mut self, metadata: &Metadata) -> &mut Self {
        for (k, v) in metadata.iter() {
            self.metadata.insert(k, v.clone());
        }
        self
    }

    /// The metadata set so far.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Adds a tensor. `dims` are in GGML order (row length first) and `data`
    /// must be exactly the encoded size of that shape in `dtype`.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        dtype: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut Self, GgufError> {
        let name = name.into();
        if name.is_empty() || name.len() as u64 > super::MAX_TENSOR_NAME_LEN {
            return Err(GgufError::tensor(&name, "name must be 1 to 63 bytes"));
        }
        if dims.is_empty() || dims.len() > super::MAX_DIMS as usize {
            return Err(GgufError::tensor(
                &name,
                format!("has {} dimensions (must be 1 to 4)", dims.len()),
            ));
        }
        if self.tensors.iter().any(|(t, _)| t.name == name) {
            return Err(GgufError::tensor(&name, "added twice"));
        }
        let info = TensorInfo::new(name, dims.to_vec(), dtype, 0)?;
        if info.n_bytes != data.len() as u64 {
            return Err(GgufError::tensor(
                &info.name,
                format!(
                    "shape {dims:?} as {dtype} needs {} bytes, got {}",
                    info.n_bytes,
                    data.len()
                ),
            ));
        }
        self.tensors.push((info, data));
        Ok(self)
    }

    fn alignment(&self) -> Result<u64, GgufError> {
        match self.metadata.get("general.alignment") {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(Value::U32(a))
                if *a > 0 && a.is_power_of_two() && (*a as u64) <= MAX_ALIGNMENT =>
            {
                Ok(*a as u64)
            }
            Some(v) => Err(GgufError::key(
                "general.alignment",
                format!("{v} is not a power-of-two u32 up to {MAX_ALIGNMENT}"),
            )),
        }
    }

    /// Writes the file to `out`.
    pub fn write_to(&self, out: &mut impl Write) -> Result<(), GgufError> {
        let alignment = self.alignment()?;
        let io_err = |source| GgufError::Write {
            path: "<stream>".into(),
            source,
        };
        let mut w = CountingWriter {
            inner: out,
            written: 0,
        };
        (|| -> io::Result<()> {
            w.write_all(&MAGIC)?;
            w.write_all(&3u32.to_le_bytes())?;
            w.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
            w.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
            for (k, v) in self.metadata.iter() {
                write_str(&mut w, k)?;
                w.write_all(&v.value_type().id().to_le_bytes())?;
                write_value(&mut w, v)?;
            }
            let mut offset = 0u64;
            for (t, _) in &self.tensors {
                write_str(&mut w, &t.name)?;
                w.write_all(&(t.dims.len() as u32).to_le_bytes())?;
                for d in &t.dims {
                    w.write_all(&d.to_le_bytes())?;
                }
                w.write_all(&t.dtype.id().to_le_bytes())?;
                w.write_all(&offset.to_le_bytes())?;
                offset = (offset + t.n_bytes).div_ceil(alignment) * alignment;
            }
            pad(&mut w, alignment)?;
            for (_, data) in &self.tensors {
                w.write_all(data)?;
                pad(&mut w, alignment)?;
            }
            w.flush()
        })()
        .map_err(io_err)
    }

    /// Writes the file to `path` atomically: a temporary file beside it,
    /// synced, then renamed over the destination.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        let err = |source| GgufError::Write {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("gguf.partial");
        let result = (|| {
            let file = std::fs::File::create(&tmp).map_err(err)?;
            let mut buf = io::BufWriter::new(file);
            self.write_to(&mut buf).map_err(|e| match e {
                GgufError::Write { source, .. } => err(source),
                other => other,
            })?;
            let file = buf.into_inner().map_err(|e| err(e.into_error()))?;
            file.sync_all().map_err(err)?;
            std::fs::rename(&tmp, path).map_err(err)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// The encoded file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    written: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn pad<W: Write>(w: &mut CountingWriter<'_, W>, alignment: u64) -> io::Result<()> {
    let target = w.written.div_ceil(alignment) * alignment;
    let zeros = vec![0u8; (target - w.written) as usize];
    w.write_all(&zeros)
}

fn write_str(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value(w: &mut impl Write, v: &Value) -> io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&[*x]),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[*x as u8]),
        Value::String(s) => write_str(w, s),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Array(a) => {
            w.write_all(&a.element_type().id().to_le_bytes())?;
            w.write_all(&(a.len() as u64).to_le_bytes())?;
            macro_rules! each {
                ($v:expr) => {{
                    for x in $v {
                        w.write_all(&x.to_le_bytes())?;
                    }
                    Ok(())
                }};
            }
            match a {
                Array::U8(v) => w.write_all(v),
                Array::I8(v) => each!(v),
                Array::U16(v) => each!(v),
                Array::I16(v) => each!(v),
                Array::U32(v) => each!(v),
                Array::I32(v) => each!(v),
                Array::F32(v) => each!(v),
                Array::U64(v) => each!(v),
                Array::I64(v) => each!(v),
                Array::F64(v) => each!(v),
                Array::Bool(v) => {
                    for x in v {
                        w.write_all(&[*x as u8])?;
                    }
                    Ok(())
                }
                Array::String(v) => {
                    for s in v.iter() {
                        write_str(w, s)?;
                    }
                    Ok(())
                }
            }
        }
    }
}
