//! Helpers shared by the desktop integration tests: the real default
//! model, a running `edgeloop-trainer serve` and what its database holds.

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use edgeloop_core::trace::{ListFilter, TraceStore};

/// The real default model file; fails with instructions when it is missing.
pub fn base_model() -> PathBuf {
    let path =
        edgeloop_core::manifest::default_model().path_in(&edgeloop_core::manifest::cache_dir());
    assert!(
        path.is_file(),
        "{} is missing: run `cargo run --release -p edgeloop-desktop -- pull smollm2-135m-instruct` \
         or point EDGELOOP_MODELS_DIR at a directory holding it",
        path.display()
    );
    path
}

/// The bearer token the test hosts accept.
pub const TOKEN: &str = "test-token-0123456789";

/// Ids of the traces the host database at `db` holds.
pub fn host_ids(db: &Path) -> Vec<String> {
    let store = TraceStore::open(db).unwrap();
    store
        .list(&ListFilter::default())
        .unwrap()
        .into_iter()
        .map(|t| t.record.id)
        .collect()
}

/// Holds exactly `expected`, each once, and opens cleanly (the open runs
/// SQLite's integrity check).
pub fn assert_host_holds(db: &Path, expected: &HashSet<String>) {
    let ids = host_ids(db);
    let set: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), set.len(), "an id is stored twice");
    assert_eq!(set.len(), expected.len());
    assert!(
        set == *expected,
        "the host holds other traces than expected"
    );
}

/// A running `edgeloop-trainer serve`; killed (-9) when dropped.
pub struct Host {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Host {
    pub fn start(db: &Path, listen: &str, extra: &[&str]) -> Host {
        let deadline = Instant::now() + Duration::from_secs(20);
        let log = db.with_extension("log");
        loop {
            let stderr = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            let mut child = Command::new(env!("CARGO_BIN_EXE_edgeloop-trainer"))
                .args(["serve", "--db"])
                .arg(db)
                .args(["--listen", listen, "--token", TOKEN])
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(stderr)
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            if let Some(addr) = line.trim().strip_prefix("listening on http://") {
                return Host {
                    child,
                    addr: addr.parse().unwrap(),
                };
            }
            // The port of a killed host may take a moment to be free again.
            let status = child.wait().unwrap();
            let err = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "edgeloop-trainer did not start ({status}): {err}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `edgeloop traces --store STORE ARGS...`.
pub fn traces(store: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgeloop"))
        .arg("traces")
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

/// `edgeloop traces report --enable URL --token TOKEN --batch-size N`,
/// which must succeed.
pub fn enable_reporting(store: &Path, url: &str, batch_size: usize) {
    let out = traces(
        store,
        &[
            "report",
            "--enable",
            url,
            "--token",
            TOKEN,
            "--batch-size",
            &batch_size.to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One raw HTTP/1.1 request on a fresh connection (for requests a client
/// library would not send); the status and body of the answer.
pub fn http(addr: impl ToSocketAddrs, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413, 401) and close before reading a large body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}
