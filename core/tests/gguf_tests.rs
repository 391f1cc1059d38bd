//! GGUF reader and writer: round trips, and one crafted file per class of
//! malformed input in shared/BAD_INPUTS.md, each rejected with the error a
//! user needs to see.

use edgeloop_core::gguf::{Array, GgufError, GgufFile, GgufWriter, Value};
use edgeloop_core::quant::GgmlType;

/// Hand-assembled GGUF bytes, for inputs the writer refuses to produce.
#[derive(Default, Clone)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut r = Raw::default();
        r.0.extend_from_slice(b"GGUF");
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(4).u32(v)
    }
    fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.str(key).u32(8).str(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to 32 bytes and appends `n` data bytes.
    fn data(&mut self, n: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(32) {
            self.0.push(0);
        }
        self.0.extend(std::iter::repeat_n(0x11, n));
        self
    }
    fn bytes(&self) -> Vec<u8> {
        self.0.clone()
    }
}

fn assert_rejects(bytes: Vec<u8>, expected: &str) -> GgufError {
    save_fuzz_seed(&bytes);
    match GgufFile::from_bytes(bytes) {
        Ok(_) => panic!("file was accepted, expected an error containing {expected:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(expected),
                "error {msg:?} does not contain {expected:?}"
            );
            e
        }
    }
}

/// With `EDGELOOP_FUZZ_SEEDS=DIR`, every crafted file these tests reject is
/// also written to `DIR` (named by its content) for the fuzz corpus; see
/// fuzz/README.md.
fn save_fuzz_seed(bytes: &[u8]) {
    let Some(dir) = std::env::var_os("EDGELOOP_FUZZ_SEEDS") else {
        return;
    };
    // FNV-1a: a stable name, so rerunning the tests adds no copies.
    let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("seed-bad-{hash:016x}.gguf")), bytes).unwrap();
}

/// A small valid file with every value type and two tensors.
fn sample_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()))
        .set("t.u8", Value::U8(7))
        .set("t.i8", Value::I8(-7))
        .set("t.u16", Value::U16(700))
        .set("t.i16", Value::I16(-700))
        .set("t.u32", Value::U32(70_000))
        .set("t.i32", Value::I32(-70_000))
        .set("t.f32", Value::F32(1.5))
        .set("t.bool", Value::Bool(true))
        .set("t.u64", Value::U64(1 << 40))
        .set("t.i64", Value::I64(-(1 << 40)))
        .set("t.f64", Value::F64(-2.25))
        .set(
            "t.strings",
            Value::Array(Array::String(vec!["a", "ü€", ""].into())),
        )
        .set("t.f32s", Value::Array(Array::F32(vec![0.5, -1.0])))
        .set("t.i32s", Value::Array(Array::I32(vec![1, -2, 3])))
        .set("t.bools", Value::Array(Array::Bool(vec![true, false])));
    let f32_data: Vec<u8> = (0..64u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.add_tensor("a.weight", &[32, 2], GgmlType::F32, f32_data)
        .unwrap();
    w.add_tensor("b.weight", &[32], GgmlType::Q8_0, vec![3u8; 34])
        .unwrap();
    w
}

#[test]
fn write_then_read_gives_the_same_metadata_and_tensors() {
    let w = sample_writer();
    let bytes = w.to_bytes().unwrap();
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.metadata(), w.metadata());
    assert_eq!(f.tensors().len(), 2);
    let a = f.tensor("a.weight").unwrap();
    assert_eq!(a.dims, vec![32, 2]);
    assert_eq!(a.dtype, GgmlType::F32);
    let data = f.tensor_data(a);
    assert_eq!(&data[4..8], &1f32.to_le_bytes());
    let b = f.tensor("b.weight").unwrap();
    assert_eq!(f.tensor_data(b), &[3u8; 34][..]);
    assert_eq!(b.offset % 32, 0);
    assert_eq!(f.architecture().unwrap(), "llama");
}

#[test]
fn write_file_then_open_maps_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    sample_writer().write_file(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert!(f.is_mapped());
    assert_eq!(f.metadata().u64("t.u32").unwrap(), 70_000);
    assert!(!dir.path().join("m.gguf.partial").exists());
}

#[test]
fn typed_getters_name_the_key_and_the_types() {
    let f = GgufFile::from_bytes(sample_writer().to_bytes().unwrap()).unwrap();
    let m = f.metadata();
    assert_eq!(
        m.opt_strings("t.strings").unwrap().unwrap().get(1),
        Some("ü€")
    );
    let e = m.opt_strings("t.i32s").unwrap_err().to_string();
    assert!(
        e.contains("t.i32s") && e.contains("expected array of string, found array of i32"),
        "{e}"
    );
    let e = m.u64("t.i8").unwrap_err().to_string();
    assert!(e.contains("expected a non-negative integer"), "{e}");
    let e = m.str("missing.key").unwrap_err().to_string();
    assert!(e.contains("missing metadata key \"missing.key\""), "{e}");
    assert_eq!(m.opt_ints("t.i32s").unwrap().unwrap(), vec![1, -2, 3]);
}

#[test]
fn truncation_at_every_offset_is_an_error_not_a_panic() {
    let bytes = sample_writer().to_bytes().unwrap();
    // Trailing alignment padding after the last tensor may go without loss.
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    let end = f
        .tensors()
        .iter()
        .map(|t| f.data_offset() + t.offset + t.n_bytes)
        .max()
        .unwrap();
    for len in 0..end as usize {
        let r = GgufFile::from_bytes(bytes[..len].to_vec());
        assert!(r.is_err(), "prefix of {len} bytes was accepted");
    }
}

#[test]
fn bad_magic() {
    let mut b = sample_writer().to_bytes().unwrap();
    b[0] = b'X';
    assert_rejects(b, "not a GGUF file: bad magic");
    assert_rejects(vec![b'G', b'G'], "bad magic");
}

#[test]
fn unsupported_versions() {
    assert_rejects(Raw::header(1, 0, 0).bytes(), "unsupported GGUF version 1");
    assert_rejects(Raw::header(4, 0, 0).bytes(), "unsupported GGUF version 4");
    // A big-endian file reads as a huge version number.
    assert_rejects(
        Raw::header(3u32.swap_bytes(), 0, 0).bytes(),
        "unsupported GGUF version",
    );
}

#[test]
fn huge_tensor_count() {
    assert_rejects(Raw::header(3, u64::MAX, 0).bytes(), "cannot fit");
    assert_rejects(Raw::header(3, 1 << 40, 1).bytes(), "cannot fit");
}

#[test]
fn huge_metadata_count() {
    assert_rejects(Raw::header(3, 0, u64::MAX).bytes(), "cannot fit");
    // The product of a large count and the entry size must not wrap around.
    assert_rejects(
        Raw::header(3, u64::MAX / 33 + 1, u64::MAX / 14 + 1).bytes(),
        "cannot fit",
    );
}

#[test]
fn huge_string_length() {
    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX).u32(0);
    r.0.extend_from_slice(&[0u8; 64]);
    assert_rejects(r.bytes(), "above the limit");
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(8).u64(1 << 50);
    r.0.extend_from_slice(&[0u8; 64]);
    assert_rejects(
        r.bytes(),
        "value of metadata key \"k\" has length 1125899906842624, above the limit of 72",
    );
}

#[test]
fn huge_array_length() {
    let mut r = Raw::header(3, 0, 1);
    r.str("tokenizer.ggml.tokens")
        .u32(9)
        .u32(8)
        .u64(u64::MAX / 2);
    r.0.extend_from_slice(&[0u8; 64]);
    assert_rejects(r.bytes(), "claims 9223372036854775807 elements of string");
    let mut r = Raw::header(3, 0, 1);
    r.str("a").u32(9).u32(10).u64(u64::MAX);
    assert_rejects(r.bytes(), "more than the");
}

#[test]
fn nested_array() {
    let mut r = Raw::header(3, 0, 1);
    r.str("a").u32(9).u32(9).u64(1).u32(4).u64(1).u32(5);
    assert_rejects(r.bytes(), "nested array");
}

#[test]
fn unknown_value_type() {
    let mut r = Raw::header(3, 0, 1);
    r.str("a").u32(13).u32(0);
    assert_rejects(r.bytes(), "unknown value type id 13");
    let mut r = Raw::header(3, 0, 1);
    r.str("a").u32(9).u32(77).u64(0);
    assert_rejects(r.bytes(), "unknown value type id 77");
}

#[test]
fn bool_that_is_not_zero_or_one() {
    let mut r = Raw::header(3, 0, 1);
    r.str("a").u32(7);
    r.0.push(2);
    assert_rejects(r.bytes(), "bool stored as 2");
}

#[test]
fn invalid_utf8_key() {
    let mut r = Raw::header(3, 0, 1);
    r.u64(2);
    r.0.extend_from_slice(&[0xff, 0xfe]);
    r.u32(4).u32(1);
    assert_rejects(r.bytes(), "not valid UTF-8");
}

/// A string array whose element 1 holds `bytes`, between two valid ones.
fn string_array_with(bytes: &[u8]) -> Vec<u8> {
    let mut r = Raw::header(3, 0, 1);
    r.str("t").u32(9).u32(8).u64(3).str("ok");
    r.u64(bytes.len() as u64);
    r.0.extend_from_slice(bytes);
    r.str("fine");
    r.bytes()
}

#[test]
fn invalid_utf8_in_a_string_array_names_the_element() {
    assert!(GgufFile::from_bytes(string_array_with("ü€".as_bytes())).is_ok());
    assert_rejects(
        string_array_with(&[b'a', 0xff]),
        "element 1 of value of metadata key \"t\" is not valid UTF-8",
    );
    // Halves of one character in two elements: the array's bytes, read
    // back to back, are valid UTF-8, but neither element is.
    let mut r = Raw::header(3, 0, 1);
    r.str("t").u32(9).u32(8).u64(2);
    r.u64(1);
    r.0.push(0xc3);
    r.u64(1);
    r.0.push(0xbc);
    assert_rejects(
        r.bytes(),
        "element 0 of value of metadata key \"t\" is not valid UTF-8",
    );
}

#[test]
fn string_array_element_past_the_end() {
    let mut r = Raw::header(3, 0, 1);
    r.str("t").u32(9).u32(8).u64(2).str("ok").u64(1000);
    r.0.extend_from_slice(&[b'x'; 16]);
    assert_rejects(
        r.bytes(),
        "element 1 of value of metadata key \"t\" has length 1000, above the limit",
    );
}

#[test]
fn duplicate_keys() {
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("llama.block_count", 1)
        .kv_u32("llama.block_count", 2);
    assert_rejects(r.bytes(), "duplicate metadata key \"llama.block_count\"");
}

#[test]
fn empty_key() {
    let mut r = Raw::header(3, 0, 1);
    r.kv_u32("", 1);
    assert_rejects(r.bytes(), "empty key");
}

#[test]
fn duplicate_tensor_names() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor("w", &[32], 0, 0)
        .tensor("w", &[32], 0, 128)
        .data(256);
    assert_rejects(r.bytes(), "duplicate tensor name \"w\"");
}

#[test]
fn tensor_with_zero_or_too_many_dims() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[], 0, 0).data(64);
    assert_rejects(r.bytes(), "has 0 dimensions");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[1, 1, 1, 1, 1], 0, 0).data(64);
    assert_rejects(r.bytes(), "has 5 dimensions");
}

#[test]
fn tensor_dimension_zero_or_huge() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[32, 0], 0, 0).data(64);
    assert_rejects(r.bytes(), "dimension 1 is 0");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[(1 << 42) + 1], 0, 0).data(64);
    assert_rejects(r.bytes(), "runs past the end of the file");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[1 << 63], 0, 0).data(64);
    assert_rejects(r.bytes(), "must be between 1 and 2^63-1");
}

#[test]
fn tensor_dimension_product_overflows() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[1 << 32, 1 << 32, 4], 0, 0).data(64);
    assert_rejects(r.bytes(), "element count of shape");
    // Elements fit in u64 but bytes do not.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[1 << 31, 1 << 31], 0, 0).data(64);
    assert_rejects(r.bytes(), "byte size of shape");
}

#[test]
fn row_length_not_a_multiple_of_the_block() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[33, 2], GgmlType::Q4_1.id(), 0).data(128);
    assert_rejects(
        r.bytes(),
        "row length 33 is not a multiple of the Q4_1 block size 32",
    );
}

#[test]
fn unknown_or_negative_type_id() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[32], 4, 0).data(64);
    assert_rejects(r.bytes(), "unknown ggml type id 4");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[32], -1i32 as u32, 0).data(64);
    assert_rejects(r.bytes(), "unknown ggml type id 4294967295");
}

#[test]
fn tensor_data_past_end_misaligned_or_overlapping() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[32], 0, 0).data(100);
    assert_rejects(r.bytes(), "runs past the end of the file");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[8], 0, 64).data(64);
    assert_rejects(r.bytes(), "runs past the end");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[8], 0, u64::MAX - 31).data(64);
    assert_rejects(r.bytes(), "runs past the end");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[8], 0, 4).data(64);
    assert_rejects(r.bytes(), "not a multiple of the alignment 32");
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[16], 0, 0)
        .tensor("b", &[16], 0, 32)
        .data(128);
    assert_rejects(r.bytes(), "overlaps tensor \"a\"");
}

/// Found by the `gguf_load` fuzz target: the error for an offset near
/// 2^64 added it to the data section's file offset, which overflowed (a
/// panic with overflow checks, a wrong number without).
#[test]
fn tensor_offset_near_u64_max_is_reported_without_overflow() {
    let offset = u64::MAX - 31;
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[8], 0, offset).data(64);
    let msg = assert_rejects(r.bytes(), "runs past the end").to_string();
    assert!(msg.contains(&format!("[{offset}, +32)")), "{msg}");
    assert!(msg.contains("from file offset 64"), "{msg}");
}

#[test]
fn bad_alignment_values() {
    for (a, what) in [
        (0u32, "0 is not a power of two"),
        (48, "48 is not a power of two"),
        (1 << 21, "2097152 is not"),
    ] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", a);
        assert_rejects(r.bytes(), what);
    }
    let mut r = Raw::header(3, 0, 1);
    r.kv_str("general.alignment", "32");
    assert_rejects(r.bytes(), "expected u32, found string");
}

#[test]
fn custom_alignment_is_honoured() {
    let mut w = sample_writer();
    w.set("general.alignment", Value::U32(64));
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    assert!(f.tensors().iter().all(|t| t.offset % 64 == 0));
}

#[test]
fn tensor_name_too_long() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor(&"x".repeat(64), &[8], 0, 0).data(64);
    assert_rejects(r.bytes(), "above the limit of 63");
}

#[test]
fn writer_refuses_inconsistent_tensors() {
    let mut w = GgufWriter::new();
    let e = w
        .add_tensor("w", &[32], GgmlType::Q8_0, vec![0; 33])
        .err()
        .unwrap();
    assert!(e.to_string().contains("needs 34 bytes, got 33"), "{e}");
    let e = w
        .add_tensor("w", &[31], GgmlType::Q8_0, vec![0; 34])
        .err()
        .unwrap();
    assert!(e.to_string().contains("not a multiple"), "{e}");
    w.add_tensor("w", &[32], GgmlType::Q8_0, vec![0; 34])
        .unwrap();
    let e = w
        .add_tensor("w", &[32], GgmlType::Q8_0, vec![0; 34])
        .err()
        .unwrap();
    assert!(e.to_string().contains("added twice"), "{e}");
}

#[test]
fn open_reports_the_path() {
    let e = GgufFile::open("/nonexistent/model.gguf")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/model.gguf"), "{e}");
}
