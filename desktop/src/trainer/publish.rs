//! `edgeloop-trainer publish`: a student put where `serve --models` offers
//! it to devices.
//!
//! The models folder holds one folder per name: `NAME/NAME.gguf` and
//! `NAME/manifest.json` (an [`edgeloop_core::manifest::Published`]). The
//! file is copied under a temporary name, synced, checked to load as a
//! model, and renamed into place; the manifest is written the same way,
//! last, so a manifest never names a file that is not there yet. Only a
//! folder with a manifest is published.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use edgeloop_core::manifest::{check_published_name, Published};
use edgeloop_core::model::{packed_cache_path, Model};
use edgeloop_core::tokenizer::strftime;
use edgeloop_train::export::Provenance;
use sha2::{Digest, Sha256};

/// The manifest's file name in a model's folder.
pub const MANIFEST: &str = "manifest.json";

/// The folder of the published model `name`.
pub fn model_dir(models: &Path, name: &str) -> PathBuf {
    models.join(name)
}

/// The published file of `name`.
pub fn gguf_path(models: &Path, name: &str) -> PathBuf {
    model_dir(models, name).join(Published::file_name(name))
}

/// Publishes `file` as `name` in `models`, replacing what was published
/// under that name; returns the new manifest.
pub fn publish(models: &Path, name: &str, file: &Path) -> Result<Published> {
    check_published_name(name)?;
    let meta = std::fs::metadata(file).with_context(|| format!("{}", file.display()))?;
    if !meta.is_file() {
        bail!("{}: not a regular file", file.display());
    }
    std::fs::create_dir_all(models).with_context(|| format!("creating {}", models.display()))?;
    // Staged beside the models' folders (a name never starts with '.'), so
    // a file that turns out not to be a model leaves no folder behind.
    let tmp = models.join(format!(
        ".{}.{}.tmp",
        Published::file_name(name),
        std::process::id()
    ));
    let dir = model_dir(models, name);
    let dest = gguf_path(models, name);
    let staged = stage(file, &tmp)
        .and_then(|staged| {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::rename(&tmp, &dest)
                .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
            let _ = std::fs::remove_file(packed_cache_path(&dest));
            Ok(staged)
        })
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
    sync_dir(&dir);
    sync_dir(models);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let manifest = Published {
        name: name.to_string(),
        file: Published::file_name(name),
        size: staged.size,
        sha256: staged.sha256,
        round: staged.provenance.as_ref().map(|p| p.round),
        parent_sha256: staged.provenance.as_ref().map(|p| p.parent_sha256.clone()),
        dataset_sha256: staged.provenance.map(|p| p.dataset_sha256),
        published: strftime("%Y-%m-%dT%H:%M:%SZ", now),
    };
    manifest.validate()?;
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    write_atomic(&dir.join(MANIFEST), &json)?;
    Ok(manifest)
}

/// What the staged copy holds.
struct Staged {
    size: u64,
    sha256: String,
    provenance: Option<Provenance>,
}

/// Copies `file` to `tmp`, hashing the bytes written, syncs it, and checks
/// that the copy (not the source, which may change meanwhile) loads.
fn stage(file: &Path, tmp: &Path) -> Result<Staged> {
    let mut src = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut out = BufWriter::with_capacity(
        1 << 20,
        File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        hash.update(&buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("writing {}", tmp.display()))?;
        size += n as u64;
    }
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    let model = Model::open(tmp)
        .with_context(|| format!("{} is not a model edgeloop can load", file.display()))?;
    let provenance = Provenance::read(model.gguf());
    Ok(Staged {
        size,
        sha256: hash.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        provenance,
    })
}

/// The manifest of `name`, or `None` when nothing is published under it.
pub fn read_manifest(models: &Path, name: &str) -> Result<Option<Published>> {
    let path = model_dir(models, name).join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let manifest: Published =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    manifest
        .validate()
        .with_context(|| format!("{}", path.display()))?;
    if manifest.name != name {
        bail!(
            "{}: names {:?}, but sits in the folder of {name:?}",
            path.display(),
            manifest.name
        );
    }
    Ok(Some(manifest))
}

/// Every published model's manifest, by name. Folders whose name is not a
/// valid model name, or that hold no manifest, are not published; a
/// manifest that cannot be read is logged and left out.
pub fn list(models: &Path) -> Result<Vec<Published>> {
    let mut all = Vec::new();
    let entries =
        std::fs::read_dir(models).with_context(|| format!("reading {}", models.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", models.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if check_published_name(&name).is_err() || !entry.path().is_dir() {
            continue;
        }
        match read_manifest(models, &name) {
            Ok(Some(m)) => all.push(m),
            Ok(None) => {}
            Err(e) => log::warn!("{e:#}"),
        }
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames
/// it over `path`, so a reader sees the old file or the new one, whole.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write()
        .with_context(|| format!("writing {}", path.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// Makes a rename in `dir` durable (best effort: not every platform can
/// open a folder).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}
