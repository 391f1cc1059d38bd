//! Publishing students on the host (`edgeloop-trainer publish`, `serve
//! --models`) and pulling them on a device (`edgeloop pull NAME --from`):
//! real files, a real host on loopback, the real default model.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use common::{base_model, Host, TOKEN};
use edgeloop_core::gguf::{GgufFile, GgufWriter, Value};
use edgeloop_core::manifest::{sha256_file, Published};
use edgeloop_train::export::{KEY_DATASET, KEY_PARENT, KEY_ROUND};

const DATASET_SHA: &str = "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A round-1 student: the default model's tensors and metadata with the
/// provenance keys an export writes. Written once per run of this file.
fn student() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let base = base_model();
        let parent = GgufFile::open(&base).unwrap();
        let mut w = GgufWriter::new();
        w.set_all(parent.metadata());
        w.set(KEY_PARENT, Value::String(sha256_file(&base).unwrap()));
        w.set(KEY_DATASET, Value::String(DATASET_SHA.into()));
        w.set(KEY_ROUND, Value::U32(1));
        for info in parent.tensors() {
            w.add_tensor(
                &info.name,
                &info.dims,
                info.dtype,
                parent.tensor_data(info).to_vec(),
            )
            .unwrap();
        }
        // Under the target folder, rewritten by each run, not left in /tmp.
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("publish-student-r1.gguf");
        w.write_file(&path).unwrap();
        path
    })
}

fn sha(path: &Path) -> String {
    sha256_file(path).unwrap()
}

/// `edgeloop-trainer ARGS...`.
fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeloop-trainer"))
        .args(args)
        .output()
        .unwrap()
}

/// `edgeloop-trainer publish --models MODELS --name NAME FILE`, which must
/// succeed; returns the manifest it printed.
fn publish(models: &Path, name: &str, file: &Path) -> Published {
    let out = trainer(&[
        "publish",
        "--models",
        models.to_str().unwrap(),
        "--name",
        name,
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("publish prints the manifest")
}

/// `edgeloop ARGS...` with the model cache at `cache` and no host token in
/// the environment unless `env_token` gives one.
fn edgeloop(cache: &Path, args: &[&str], env_token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeloop"));
    cmd.args(args)
        .env("EDGELOOP_MODELS_DIR", cache)
        .env_remove("EDGELOOP_HOST_TOKEN");
    if let Some(t) = env_token {
        cmd.env("EDGELOOP_HOST_TOKEN", t);
    }
    cmd.output().unwrap()
}

/// `edgeloop generate --offline --model NAME -n N PROMPT` on a device's
/// cache, which must succeed.
fn run_pulled(cache: &Path, name: &str, n: &str, prompt: &str) -> Output {
    let out = edgeloop(
        cache,
        &["generate", "--offline", "--model", name, "-n", n, prompt],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    out
}

/// `edgeloop pull NAME --from URL --token TOKEN`.
fn pull(cache: &Path, name: &str, url: &str) -> Output {
    edgeloop(
        cache,
        &["pull", name, "--from", url, "--token", TOKEN],
        None,
    )
}

/// Names of the files in `dir`.
fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn read_manifest(path: &Path) -> Published {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A GET with an optional bearer token: status and body.
fn get(url: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.call().unwrap();
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();
    (status, body)
}

/// [`get`] of a JSON answer.
fn get_json(url: &str, token: Option<&str>) -> (u16, String) {
    let (status, body) = get(url, token);
    (status, text(&body))
}

fn start_host(dir: &Path, models: Option<&Path>) -> Host {
    let db = dir.join("host.sqlite");
    match models {
        Some(m) => Host::start(&db, "127.0.0.1:0", &["--models", m.to_str().unwrap()]),
        None => Host::start(&db, "127.0.0.1:0", &[]),
    }
}

#[test]
fn a_published_student_is_pulled_verified_and_runs_by_name() {
    let host_dir = tempfile::tempdir().unwrap();
    let models = host_dir.path().join("models");
    let student = student();

    let m = publish(&models, "student", student);
    assert_eq!(m.name, "student");
    assert_eq!(m.file, "student.gguf");
    assert_eq!(m.size, std::fs::metadata(student).unwrap().len());
    assert_eq!(m.sha256, sha(student));
    assert_eq!(m.round, Some(1));
    assert_eq!(
        m.parent_sha256.as_deref(),
        Some(sha(&base_model()).as_str())
    );
    assert_eq!(m.dataset_sha256.as_deref(), Some(DATASET_SHA));
    let p = m.published.as_bytes();
    assert!(
        p.len() == 20 && p[4] == b'-' && p[10] == b'T' && p[19] == b'Z',
        "RFC 3339 UTC: {}",
        m.published
    );
    assert_eq!(
        files(&models.join("student")),
        set(&["manifest.json", "student.gguf"])
    );
    assert_eq!(read_manifest(&models.join("student/manifest.json")), m);
    assert_eq!(files(&models), set(&["student"]), "no staging file left");
    let base = publish(&models, "base-copy", &base_model());
    assert_eq!(base.round, None);

    let host = start_host(host_dir.path(), Some(&models));
    let (status, body) = get_json(&format!("{}/v1/models", host.url()), Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = listed["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["base-copy", "student"]);
    let (status, body) = get_json(&format!("{}/v1/models/student", host.url()), Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Published>(&body).unwrap(), m);

    let device = tempfile::tempdir().unwrap();
    let out = pull(device.path(), "student", &host.url());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let published = device.path().join("published");
    assert_eq!(sha(&published.join("student.gguf")), sha(student));
    assert_eq!(read_manifest(&published.join("student.json")), m);
    assert_eq!(files(&published), set(&["student.gguf", "student.json"]));
    let out = pull(device.path(), "student", &host.url());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("already pulled"),
        "{}",
        text(&out.stderr)
    );

    let out = run_pulled(
        device.path(),
        "student",
        "4",
        "What is the capital of France? Answer in one word.",
    );
    assert!(!text(&out.stdout).trim().is_empty());
    let out = edgeloop(device.path(), &["models", "list"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert!(
        listing.contains("published models")
            && listing.contains("student")
            && listing.contains("round 1"),
        "{listing}"
    );

    // Republishing the name replaces the file; the next pull (token from
    // the environment this time) replaces it on the device.
    let m2 = publish(&models, "student", &base_model());
    assert_ne!(m2.sha256, m.sha256);
    assert_eq!(m2.round, None);
    let out = edgeloop(
        device.path(),
        &["pull", "student", "--from", &host.url()],
        Some(TOKEN),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(sha(&published.join("student.gguf")), sha(&base_model()));
    assert_eq!(read_manifest(&published.join("student.json")), m2);
    assert_eq!(files(&published), set(&["student.gguf", "student.json"]));
    run_pulled(device.path(), "student", "2", "Hi");
}

/// Asserts the device still holds `name` exactly as `held` describes it,
/// and nothing else.
fn assert_unchanged(cache: &Path, name: &str, held: &Published, extra: &[&str]) {
    let published = cache.join("published");
    let gguf = format!("{name}.gguf");
    let json = format!("{name}.json");
    assert_eq!(sha(&published.join(&gguf)), held.sha256);
    assert_eq!(read_manifest(&published.join(&json)), *held);
    let mut want = set(&[&gguf, &json]);
    want.extend(extra.iter().map(|s| s.to_string()));
    assert_eq!(files(&published), want, "no temporary file is left");
}

#[test]
fn a_download_that_does_not_match_the_manifest_changes_nothing_on_the_device() {
    let host_dir = tempfile::tempdir().unwrap();
    let models = host_dir.path().join("models");
    let first = publish(&models, "s", student());
    let host = start_host(host_dir.path(), Some(&models));
    let device = tempfile::tempdir().unwrap();
    let out = pull(device.path(), "s", &host.url());
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A new file under the name, then its bytes changed behind the
    // manifest's back: same length, one byte flipped.
    let second = publish(&models, "s", &base_model());
    let served = models.join("s/s.gguf");
    {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&served)
            .unwrap();
        let mid = second.size / 2;
        let mut b = [0u8];
        f.seek(SeekFrom::Start(mid)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(mid)).unwrap();
        f.write_all(&[b[0] ^ 0xff]).unwrap();
        f.sync_all().unwrap();
    }
    let corrupted = sha(&served);
    let out = pull(device.path(), "s", &host.url());
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains("sha256 mismatch")
            && e.contains(&corrupted)
            && e.contains(&second.sha256)
            && e.contains(&format!("{}/v1/models/s/gguf", host.url())),
        "{e}"
    );
    assert_unchanged(device.path(), "s", &first, &[]);

    // Longer and shorter than the manifest says.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&served)
        .unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    drop(f);
    let out = pull(device.path(), "s", &host.url());
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains(&format!("{} bytes", second.size + 4096))
            && e.contains(&second.size.to_string()),
        "{e}"
    );
    assert_unchanged(device.path(), "s", &first, &[]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&served)
        .unwrap()
        .set_len(second.size - 1)
        .unwrap();
    let out = pull(device.path(), "s", &host.url());
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains(&format!("{} bytes", second.size - 1)), "{e}");
    assert_unchanged(device.path(), "s", &first, &[]);

    // The original bytes back: the pull goes through.
    std::fs::copy(base_model(), &served).unwrap();
    let out = pull(device.path(), "s", &host.url());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_unchanged(device.path(), "s", &second, &[]);
}

/// A host that answers the manifest it is given and then a file body that
/// does not fit it: with `too_long`, more bytes than the manifest's size
/// and no Content-Length; else the manifest's size announced and half of
/// it sent before the connection closes.
fn lying_host(manifest: Published, too_long: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
            }
            if request.contains("/gguf ") {
                let n = manifest.size as usize;
                if too_long {
                    let body = vec![7u8; n + 1000];
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(&body);
                    let _ = conn.write_all(b"\r\n0\r\n\r\n");
                } else {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
                    );
                    let _ = conn.write_all(&vec![7u8; n / 2]);
                }
            } else {
                let body = serde_json::to_string(&manifest).unwrap();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            let _ = conn.flush();
            thread::sleep(Duration::from_millis(20));
        }
    });
    url
}

#[test]
fn a_body_past_the_manifests_size_or_cut_short_is_refused() {
    let host_dir = tempfile::tempdir().unwrap();
    let models = host_dir.path().join("models");
    let first = publish(&models, "s", &base_model());
    let host = start_host(host_dir.path(), Some(&models));
    let device = tempfile::tempdir().unwrap();
    let out = pull(device.path(), "s", &host.url());
    assert!(out.status.success(), "{}", text(&out.stderr));

    let claimed = Published {
        size: 100_000,
        sha256: "ab".repeat(32),
        ..first.clone()
    };
    let url = lying_host(claimed.clone(), true);
    let out = pull(device.path(), "s", &url);
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains("more than the manifest's 100000 bytes") && e.contains(&url),
        "{e}"
    );
    assert_unchanged(device.path(), "s", &first, &[]);

    let url = lying_host(claimed, false);
    let out = pull(device.path(), "s", &url);
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains("failed after 50000 bytes"), "{e}");
    assert_unchanged(device.path(), "s", &first, &[]);
}

#[test]
fn wrong_tokens_unknown_and_bad_names_are_clear_errors() {
    let host_dir = tempfile::tempdir().unwrap();
    let models = host_dir.path().join("models");
    publish(&models, "known", &base_model());
    let host = start_host(host_dir.path(), Some(&models));
    let device = tempfile::tempdir().unwrap();

    let out = edgeloop(
        device.path(),
        &[
            "pull",
            "known",
            "--from",
            &host.url(),
            "--token",
            "wrong-token-123",
        ],
        None,
    );
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains("HTTP 401")
            && e.contains("missing or wrong bearer token")
            && e.contains(&format!("{}/v1/models/known", host.url())),
        "{e}"
    );
    let out = edgeloop(
        device.path(),
        &["pull", "known", "--from", &host.url()],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("HTTP 401"),
        "{}",
        text(&out.stderr)
    );

    let out = pull(device.path(), "unknown", &host.url());
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains("HTTP 404") && e.contains("no published model named \"unknown\""),
        "{e}"
    );
    let out = pull(device.path(), "Bad", &host.url());
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("bad model name \"Bad\""),
        "{}",
        text(&out.stderr)
    );
    assert!(
        files(device.path()).is_empty(),
        "a failed pull writes nothing"
    );

    let out = edgeloop(
        device.path(),
        &["generate", "--offline", "--model", "known", "hi"],
        None,
    );
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains("unknown model \"known\"")
            && e.contains("smollm2-135m-instruct")
            && e.contains("published model \"known\"")
            && e.contains("--from"),
        "{e}"
    );

    // At the host itself.
    let url = host.url();
    for (path, token, status, needle) in [
        ("/v1/models", None, 401, "bearer token"),
        (
            "/v1/models/known",
            Some("wrong-token-123"),
            401,
            "bearer token",
        ),
        ("/v1/models/known/gguf", None, 401, "bearer token"),
        ("/v1/models/unknown", Some(TOKEN), 404, "no published model"),
        (
            "/v1/models/unknown/gguf",
            Some(TOKEN),
            404,
            "no published model",
        ),
        ("/v1/models/Upper", Some(TOKEN), 400, "a-z"),
        (
            "/v1/models/.hidden/gguf",
            Some(TOKEN),
            400,
            "start with '.'",
        ),
        (
            "/v1/models/..%2f..%2fetc",
            Some(TOKEN),
            400,
            "bad model name",
        ),
    ] {
        let (got, body) = get_json(&format!("{url}{path}"), token);
        assert_eq!(got, status, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
    let (got, body) = get(&format!("{url}/v1/models/known/gguf"), Some(TOKEN));
    assert_eq!(got, 200);
    assert!(
        body == std::fs::read(base_model()).unwrap(),
        "the file as published"
    );

    // A host without --models publishes nothing.
    let bare_dir = tempfile::tempdir().unwrap();
    let bare = start_host(bare_dir.path(), None);
    for path in ["/v1/models", "/v1/models/known", "/v1/models/known/gguf"] {
        let (got, body) = get_json(&format!("{}{path}", bare.url()), Some(TOKEN));
        assert_eq!(got, 404, "{path}: {body}");
        assert!(body.contains("--models"), "{body}");
    }
}

#[test]
fn publish_refuses_bad_names_and_files_that_are_not_models() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let base = base_model();
    let long = "x".repeat(65);
    for (name, needle) in [
        ("", "1 to 64"),
        (long.as_str(), "1 to 64"),
        (".hidden", "start with '.'"),
        ("Upper", "a-z"),
        ("a/b", "a-z"),
        ("../x", "a-z"),
        ("smollm2-135m-instruct", "built-in"),
    ] {
        let out = trainer(&[
            "publish",
            "--models",
            models.to_str().unwrap(),
            "--name",
            name,
            base.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{name:?} was accepted");
        let e = text(&out.stderr);
        assert!(
            e.contains("bad model name") && e.contains(needle),
            "{name:?}: {e}"
        );
    }
    assert!(files(&models).is_empty());

    let kept = publish(&models, "keep", &base);
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    for (file, needle) in [
        (junk.clone(), "is not a model edgeloop can load"),
        (dir.path().join("missing.gguf"), "missing.gguf"),
        (dir.path().to_path_buf(), "not a regular file"),
    ] {
        for name in ["keep", "fresh"] {
            let out = trainer(&[
                "publish",
                "--models",
                models.to_str().unwrap(),
                "--name",
                name,
                file.to_str().unwrap(),
            ]);
            assert!(!out.status.success());
            let e = text(&out.stderr);
            assert!(e.contains(needle), "{e}");
        }
    }
    // The refused republish left the published model as it was, and the
    // refused new name left nothing.
    assert_eq!(files(&models), set(&["keep"]));
    assert_eq!(read_manifest(&models.join("keep/manifest.json")), kept);
    assert_eq!(sha(&models.join("keep/keep.gguf")), kept.sha256);
}
