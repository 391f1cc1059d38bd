//! Reporting on loopback, with real processes: the device's reporter (the
//! library and `edgeloop traces report`) against a running
//! `edgeloop-trainer serve`, the host's answers to bad inputs, a
//! fault-injecting proxy between the two, and kill -9 of either side in the
//! middle of an upload.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{assert_host_holds, enable_reporting, host_ids, http, traces, Host, TOKEN};
use edgeloop_core::trace::{
    ListFilter, ModelInfo, ReportConfig, Reporter, TraceParts, TraceRecord, TraceSample,
    TraceSpend, TraceStore, Verification, VerifierVote,
};
use flate2::write::GzEncoder;
use flate2::Compression;

const MODEL_SHA: &str = "4f3c9a1b2d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

/// Trace `n`: accepted or not, consented or not. Its question holds an
/// e-mail address, which redaction masks before it leaves the device.
fn record(n: u64, accepted: bool, consent: bool) -> TraceRecord {
    let question = format!("What is {n} + {n}? Write to ann{n}@example.com.");
    let trace = format!("{n} plus {n} is {}.\nAnswer: {}", 2 * n, 2 * n);
    TraceRecord::new(TraceParts {
        model: ModelInfo {
            name: "smollm2-135m-instruct".into(),
            sha256: MODEL_SHA.into(),
        },
        created_at: 1_700_000_000 + n,
        question: question.clone(),
        prompt: format!("<|im_start|>user\n{question}<|im_end|>\n"),
        answer: Some((2 * n).to_string()),
        trace: trace.clone(),
        samples: vec![TraceSample {
            text: trace,
            answer: Some((2 * n).to_string()),
            mean_logprob: -0.25,
            tokens: 20,
        }],
        strategy: "self-consistency".into(),
        confidence: 1.0,
        spend: TraceSpend {
            samples: 1,
            tokens: 20,
            wall_secs: 0.1,
        },
        verification: Verification {
            accepted,
            votes: vec![VerifierVote {
                stage: "correctness".into(),
                verdict: Some(accepted),
                judge_text: if accepted { "[[Y]]" } else { "[[N]]" }.into(),
            }],
            spend: TraceSpend::default(),
        },
        consent,
    })
}

/// A device store with `n` accepted, consented traces (returned ids), plus
/// a few accepted ones without consent and a few rejected ones, which must
/// never reach the host.
fn device_store(path: &Path, n: u64) -> HashSet<String> {
    let mut store = TraceStore::open(path).unwrap();
    let mut expected = HashSet::new();
    for i in 0..n {
        let r = record(i, true, true);
        expected.insert(r.id.clone());
        store.insert(&r).unwrap();
        if i % 10 == 0 {
            store.insert(&record(100_000 + i, true, false)).unwrap();
            store.insert(&record(200_000 + i, false, true)).unwrap();
        }
    }
    expected
}

fn post(addr: SocketAddr, headers: &[&str], body: &[u8]) -> (u16, String) {
    let mut head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    http(addr, &head, body)
}

fn auth() -> String {
    format!("Authorization: Bearer {TOKEN}")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn batch_json(traces: &[serde_json::Value]) -> Vec<u8> {
    serde_json::json!({"schema_version": 1, "traces": traces})
        .to_string()
        .into_bytes()
}

fn value(r: &TraceRecord) -> serde_json::Value {
    serde_json::from_str(&r.to_json()).unwrap()
}

fn health_traces(addr: SocketAddr) -> u64 {
    let (status, body) = http(
        addr,
        &format!("GET /v1/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    v["traces"].as_u64().unwrap()
}

#[test]
fn host_refuses_bad_inputs_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("host.sqlite");
    let host = Host::start(
        &db,
        "127.0.0.1:0",
        &["--max-body", "65536", "--max-json", "262144"],
    );
    let a = host.addr;
    let good = record(1, true, true);
    let good_batch = batch_json(&[value(&good)]);
    let json_ct = "Content-Type: application/json";

    let expect = |(status, body): (u16, String), want: u16, says: &str| {
        assert_eq!(status, want, "{body}");
        assert!(body.contains(says), "{body:?} does not say {says:?}");
    };

    // Token.
    expect(post(a, &[json_ct], &good_batch), 401, "token");
    expect(
        post(
            a,
            &[json_ct, "Authorization: Bearer wrong-token-0123456"],
            &good_batch,
        ),
        401,
        "token",
    );
    expect(
        post(
            a,
            &[json_ct, &format!("Authorization: Basic {TOKEN}")],
            &good_batch,
        ),
        401,
        "token",
    );
    let prefix = &TOKEN[..TOKEN.len() - 1];
    expect(
        post(
            a,
            &[json_ct, &format!("Authorization: Bearer {prefix}")],
            &good_batch,
        ),
        401,
        "token",
    );

    // Size on the wire: declared, and sent in chunks without a length.
    let big = vec![b' '; 100_000];
    expect(post(a, &[json_ct, &auth()], &big), 413, "limit");
    let mut chunked = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n{}\r\nTransfer-Encoding: chunked\r\n\r\n",
        auth()
    )
    .into_bytes();
    for _ in 0..20 {
        chunked.extend_from_slice(format!("{:x}\r\n", 8192).as_bytes());
        chunked.extend_from_slice(&[b' '; 8192]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    expect(
        http(a, std::str::from_utf8(&chunked).unwrap(), b""),
        413,
        "limit",
    );

    // A gzip bomb: a few KB that expand far past the decompressed cap.
    let mut bomb_text = b"{\"schema_version\":1,\"traces\":[".to_vec();
    bomb_text.resize(20 * 1024 * 1024, b' ');
    let bomb = gzip(&bomb_text);
    assert!(bomb.len() < 65536, "{}", bomb.len());
    expect(
        post(a, &[json_ct, &auth(), "Content-Encoding: gzip"], &bomb),
        413,
        "expands",
    );

    // Malformed bodies.
    let bad = |body: &[u8], says: &str| {
        expect(post(a, &[json_ct, &auth()], body), 400, says);
    };
    bad(b"{\"schema_version\":1,\"traces\":[", "not JSON");
    bad(b"[1,2]", "not a JSON object");
    bad(b"{\"traces\":[]}", "no schema_version");
    bad(
        b"{\"schema_version\":2,\"traces\":[]}",
        "schema_version 2 is not supported",
    );
    bad(
        b"{\"schema_version\":\"1\",\"traces\":[]}",
        "schema_version \\\"1\\\" is not supported",
    );
    bad(b"{\"schema_version\":1}", "no traces array");
    bad(
        b"{\"schema_version\":1,\"traces\":[],\"extra\":1}",
        "unknown field",
    );
    expect(
        post(
            a,
            &[json_ct, &auth(), "Content-Encoding: gzip"],
            b"not gzip at all",
        ),
        400,
        "gzip",
    );
    let cut = gzip(&good_batch);
    expect(
        post(
            a,
            &[json_ct, &auth(), "Content-Encoding: gzip"],
            &cut[..cut.len() / 2],
        ),
        400,
        "gzip",
    );
    expect(
        post(a, &[json_ct, &auth(), "Content-Encoding: br"], &good_batch),
        415,
        "not supported",
    );

    // Invalid records, each next to a valid one: the whole batch is refused.
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = value(&record(2, true, true));
        f(&mut v);
        batch_json(&[value(&good), v])
    };
    bad(
        &with(&|v| v["schema_version"] = 2.into()),
        "traces[1]: trace record schema version 2",
    );
    bad(
        &with(&|v| v["question"] = "tampered".into()),
        "does not match",
    );
    bad(&with(&|v| v["confidence"] = 1.5.into()), "confidence");
    bad(
        &with(&|v| v["model"]["sha256"] = "xyz".into()),
        "model.sha256",
    );
    bad(&with(&|v| v["bogus"] = 1.into()), "traces[1]");
    bad(&with(&|v| v["consent"] = false.into()), "consent");
    bad(
        &with(&|v| {
            v.as_object_mut().unwrap().remove("question");
        }),
        "question",
    );

    assert_eq!(health_traces(a), 0, "a refused request stored something");

    // A good batch, plain and then gzip; replays are duplicates.
    let redacted =
        record(3, true, true).redacted(&edgeloop_core::trace::DefaultRedactor::default());
    assert!(redacted.question.contains("[email]"));
    let two = batch_json(&[value(&good), value(&redacted)]);
    let (status, body) = post(a, &[json_ct, &auth()], &two);
    assert_eq!(status, 200, "{body}");
    let ack: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        ack,
        serde_json::json!({"accepted": [good.id, redacted.id], "duplicates": []})
    );
    for encoding in ["", "Content-Encoding: gzip"] {
        let body = if encoding.is_empty() {
            two.clone()
        } else {
            gzip(&two)
        };
        let mut headers = vec![json_ct.to_string(), auth()];
        if !encoding.is_empty() {
            headers.push(encoding.to_string());
        }
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let (status, body) = post(a, &headers, &body);
        assert_eq!(status, 200, "{body}");
        let ack: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            ack,
            serde_json::json!({"accepted": [], "duplicates": [good.id, redacted.id]})
        );
    }
    assert_eq!(health_traces(a), 2);
    drop(host);
    assert_host_holds(&db, &[good.id, redacted.id].into_iter().collect());
}

/// Reporting settings for tests: short timeouts and backoff.
fn config(url: &str, batch_size: usize) -> ReportConfig {
    ReportConfig {
        batch_size,
        max_attempts: 3,
        base_delay_ms: 10,
        max_delay_ms: 100,
        connect_timeout_ms: 1000,
        timeout_ms: 1000,
        ..ReportConfig::new(url, TOKEN)
    }
}

#[test]
fn reporter_delivers_exactly_the_accepted_consented_traces() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("device.sqlite");
    let db = dir.path().join("host.sqlite");
    let expected = device_store(&device, 45);
    let host = Host::start(&db, "127.0.0.1:0", &[]);

    // A wrong token: refused, nothing marked.
    let mut store = TraceStore::open(&device).unwrap();
    let mut wrong = config(&host.url(), 7);
    wrong.token = "not-the-token".into();
    let summary = Reporter::new(wrong).unwrap().run_pass(&mut store);
    let e = summary.error.expect("a wrong token fails").to_string();
    assert!(e.contains("refused the token (401)"), "{e}");
    assert_eq!((summary.marked, summary.remaining), (0, 45));

    let mut reporter = Reporter::new(config(&host.url(), 7)).unwrap();
    let s = reporter.run_pass(&mut store);
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!(
        (
            s.batches,
            s.sent,
            s.accepted,
            s.duplicates,
            s.marked,
            s.remaining
        ),
        (7, 45, 45, 0, 45, 0)
    );
    assert_host_holds(&db, &expected);
    // What left the device was redacted; the id is the original's.
    let host_store = TraceStore::open(&db).unwrap();
    for t in host_store.list(&ListFilter::default()).unwrap() {
        assert!(t.record.redacted);
        assert!(
            t.record.question.contains("[email]"),
            "{}",
            t.record.question
        );
        assert!(!t.record.question.contains("@example.com"));
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.reported, 45);
    assert_eq!(stats.unreported_accepted, 5, "traces without consent stay");

    // A second pass sends nothing.
    let s = reporter.run_pass(&mut store);
    assert!(s.error.is_none(), "{:?}", s.error);
    assert_eq!((s.batches, s.sent, s.marked), (0, 0, 0));
    assert_eq!(health_traces(host.addr), 45);
}

#[test]
fn report_command_is_off_until_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("device.sqlite");
    let db = dir.path().join("host.sqlite");
    let expected = device_store(&device, 12);
    let host = Host::start(&db, "127.0.0.1:0", &[]);

    let out = traces(&device, &["report"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reporting is off"), "{err}");
    assert_eq!(health_traces(host.addr), 0);

    let url = host.url();
    enable_reporting(&device, &url, 5);
    let settings = dir.path().join("device.report.toml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&settings).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the token file is readable by others");
    }
    let out = traces(&device, &["report", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["marked"], 12);
    assert_eq!(v["batches"], 3);
    assert_eq!(v["remaining"], 0);
    assert_host_holds(&db, &expected);

    let out = traces(&device, &["report", "--disable"]);
    assert!(out.status.success());
    assert!(!std::fs::read_to_string(&settings).unwrap().contains(TOKEN));
    let out = traces(&device, &["report"]);
    assert!(!out.status.success());
}

#[test]
fn import_takes_bundles_once_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("device.sqlite");
    let db = dir.path().join("host.sqlite");
    device_store(&device, 20);
    let bundle = dir.path().join("b.jsonl.gz");
    let out = traces(&device, &["export", "--out", bundle.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trainer = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_edgeloop-trainer"))
            .args(args)
            .output()
            .unwrap()
    };
    let dbs = db.to_str().unwrap();
    let out = trainer(&["import", "--db", dbs, bundle.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // 20 accepted + 2 rejected with consent; 2 without consent skipped.
    assert!(
        err.contains("22 new, 0 already held, 2 without consent"),
        "{err}"
    );
    let out = trainer(&["import", "--db", dbs, bundle.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0 new, 22 already held"), "{err}");

    // Expanding past the cap, a bad line, a folder: refused, nothing stored.
    let out = trainer(&[
        "import",
        "--db",
        dbs,
        "--max-bytes",
        "1000",
        bundle.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("more than 1000 bytes"),
        "{err}"
    );
    let other = dir.path().join("other.sqlite");
    let bad = dir.path().join("bad.jsonl");
    let mut text = record(500, true, true).to_json();
    text.push('\n');
    text.push_str("{\"schema_version\":1,\"id\":\"../../etc/passwd\"}\n");
    std::fs::write(&bad, text).unwrap();
    let out = trainer(&[
        "import",
        "--db",
        other.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("line 2"), "{err}");
    let out = trainer(&[
        "import",
        "--db",
        other.to_str().unwrap(),
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(host_ids(&other).is_empty());

    let out = trainer(&["stats", "--db", dbs, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["traces"], 22);
}

/// What the proxy does to one request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Pass,
    /// Closes the connection before reading anything.
    Drop,
    /// Reads part of the request, then resets the connection.
    Reset,
    /// Answers 503 without asking the host.
    Unavailable,
    /// Waits a little, then passes the request on.
    Delay,
    /// Waits past the device's timeout, then passes the request on.
    Stall,
    /// The host processes the request; the answer never reaches the device.
    LoseAnswer,
    /// The host processes the request; half the answer reaches the device.
    HalfAnswer,
}

const FAULTS: &[Fault] = &[
    Fault::Pass,
    Fault::Drop,
    Fault::Reset,
    Fault::Pass,
    Fault::Unavailable,
    Fault::Delay,
    Fault::LoseAnswer,
    Fault::Pass,
    Fault::HalfAnswer,
    Fault::Stall,
    Fault::LoseAnswer,
];

/// Reads one HTTP message (head and `Content-Length` body) from `s`.
fn read_message(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut msg = Vec::new();
    let mut byte = [0u8; 1];
    while !msg.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => msg.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&msg).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let start = msg.len();
    msg.resize(start + len, 0);
    s.read_exact(&mut msg[start..]).ok()?;
    Some(msg)
}

/// A proxy on loopback that applies the next fault of [`FAULTS`] to each
/// request; counts what it did.
struct Proxy {
    addr: SocketAddr,
    counts: Arc<Vec<AtomicUsize>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let counts: Arc<Vec<AtomicUsize>> =
            Arc::new(FAULTS.iter().map(|_| AtomicUsize::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let (c, st) = (counts.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (c, next) = (c.clone(), next.clone());
                thread::spawn(move || serve_conn(conn, upstream, &c, &next));
            }
        });
        Proxy { addr, counts, stop }
    }

    /// Requests seen.
    fn requests(&self) -> usize {
        self.counts.iter().map(|n| n.load(Ordering::SeqCst)).sum()
    }

    /// Requests given a fault other than [`Fault::Pass`].
    fn faulty(&self) -> usize {
        self.requests() - self.count(Fault::Pass)
    }

    fn count(&self, f: Fault) -> usize {
        FAULTS
            .iter()
            .zip(self.counts.iter())
            .filter(|(g, _)| **g == f)
            .map(|(_, n)| n.load(Ordering::SeqCst))
            .sum()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_conn(
    mut conn: TcpStream,
    upstream: SocketAddr,
    counts: &[AtomicUsize],
    next: &AtomicUsize,
) {
    // Keep-alive: one fault per request on the connection.
    loop {
        let k = next.fetch_add(1, Ordering::SeqCst) % FAULTS.len();
        counts[k].fetch_add(1, Ordering::SeqCst);
        let fault = FAULTS[k];
        match fault {
            Fault::Drop => return,
            Fault::Reset => {
                let mut part = [0u8; 64];
                let _ = conn.read(&mut part);
                // Closing with unread data in the receive buffer sends a reset.
                return;
            }
            _ => {}
        }
        let Some(request) = read_message(&mut conn) else {
            return;
        };
        if fault == Fault::Unavailable {
            let _ = conn.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
        match fault {
            Fault::Delay => thread::sleep(Duration::from_millis(200)),
            Fault::Stall => thread::sleep(Duration::from_millis(1500)),
            _ => {}
        }
        let Ok(mut up) = TcpStream::connect(upstream) else {
            return;
        };
        if up.write_all(&request).is_err() {
            return;
        }
        let Some(answer) = read_message(&mut up) else {
            return;
        };
        match fault {
            Fault::LoseAnswer => return,
            Fault::HalfAnswer => {
                let _ = conn.write_all(&answer[..answer.len() - 10]);
                return;
            }
            _ => {
                if conn.write_all(&answer).is_err() {
                    return;
                }
            }
        }
    }
}

/// How many faulty requests (every fault but `Pass`) the fault test goes on
/// to: `EDGELOOP_FAULTY_REQUESTS` (unset: one round of 120 traces, about 60
/// faulty requests, the short form CI runs).
fn faulty_requests_wanted() -> usize {
    std::env::var("EDGELOOP_FAULTY_REQUESTS")
        .map(|v| v.parse().expect("EDGELOOP_FAULTY_REQUESTS is a count"))
        .unwrap_or(0)
}

/// A device store with the 120 traces of `round` (ids new to the host in
/// each round); see [`device_store`].
fn device_store_round(path: &Path, round: u64) -> HashSet<String> {
    if round == 0 {
        return device_store(path, 120);
    }
    let mut store = TraceStore::open(path).unwrap();
    (0..120)
        .map(|i| {
            let r = record(round * 1_000_000 + i, true, true);
            store.insert(&r).unwrap();
            r.id
        })
        .collect()
}

#[test]
fn faults_between_device_and_host_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("device.sqlite");
    let db = dir.path().join("host.sqlite");
    let host = Host::start(&db, "127.0.0.1:0", &[]);
    let proxy = Proxy::start(host.addr);
    let wanted = faulty_requests_wanted();

    let mut reporter = Reporter::new(config(&format!("http://{}", proxy.addr), 4)).unwrap();
    let mut expected = HashSet::new();
    let (mut accepted, mut duplicates, mut passes, mut failed) = (0, 0, 0, 0);
    let mut round = 0u64;
    loop {
        expected.extend(device_store_round(&device, round));
        let mut store = TraceStore::open(&device).unwrap();
        let (round_accepted, round_duplicates, mut round_passes) = (accepted, duplicates, 0);
        loop {
            let s = reporter.run_pass(&mut store);
            passes += 1;
            round_passes += 1;
            accepted += s.accepted;
            duplicates += s.duplicates;
            if s.error.is_some() {
                failed += 1;
            }
            assert!(s.left.is_empty(), "{:?}", s.left);
            if s.remaining == 0 && s.error.is_none() {
                break;
            }
            assert!(
                round_passes < 200,
                "no progress after {round_passes} passes"
            );
        }
        // Answers lost after the host stored a batch: those traces came back
        // as duplicates on the next try, and were stored once.
        let (a, d) = (accepted - round_accepted, duplicates - round_duplicates);
        assert!(
            a < 120 && a + d >= 120,
            "round {round}: {a} accepted, {d} duplicates"
        );
        assert_eq!(store.reportable_count().unwrap(), 0);
        assert_eq!(store.stats().unwrap().reported, 120 * (round + 1));
        round += 1;
        if proxy.faulty() >= wanted {
            break;
        }
    }
    for f in FAULTS {
        assert!(proxy.count(*f) > 0, "{f:?} never happened");
    }
    assert!(duplicates > 0);
    eprintln!(
        "{round} rounds, {} traces, {} requests ({} faulty), {passes} passes ({failed} stopped by faults), {duplicates} duplicates answered",
        120 * round,
        proxy.requests(),
        proxy.faulty()
    );
    assert_host_holds(&db, &expected);
    drop(proxy);
}

#[test]
fn host_killed_and_restarted_mid_upload_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("device.sqlite");
    let db = dir.path().join("host.sqlite");
    // Enough traces that the upload outlasts several kills on a fast machine.
    let n = 2400;
    let expected = device_store(&device, n);
    let mut host = Host::start(&db, "127.0.0.1:0", &[]);
    let addr = host.addr;
    let url = host.url();

    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let dev = device.clone();
    let reporter = thread::spawn(move || {
        let mut store = TraceStore::open(&dev).unwrap();
        let mut reporter = Reporter::new(ReportConfig {
            max_attempts: 2,
            ..config(&url, 2)
        })
        .unwrap();
        let mut passes = 0;
        loop {
            let s = reporter.run_pass(&mut store);
            passes += 1;
            if s.remaining == 0 && s.error.is_none() {
                break;
            }
            assert!(passes < 2000, "no progress");
            thread::sleep(Duration::from_millis(20));
        }
        d.store(true, Ordering::SeqCst);
        store.stats().unwrap()
    });

    let mut kills = 0;
    let mut seen = Vec::new();
    while !done.load(Ordering::SeqCst) && kills < 5 {
        thread::sleep(Duration::from_millis(60 + 40 * kills));
        if done.load(Ordering::SeqCst) {
            break;
        }
        host.kill();
        kills += 1;
        // What the host holds after a crash opens cleanly and only grows.
        let held = host_ids(&db).len();
        seen.push(held);
        thread::sleep(Duration::from_millis(100));
        host = Host::start(&db, &addr.to_string(), &[]);
    }
    let stats = reporter.join().unwrap();
    eprintln!("host killed {kills} times, holding {seen:?}");
    assert!(
        kills >= 3,
        "the upload ended before the host was killed 3 times"
    );
    assert!(
        seen.iter().any(|&h| h > 0 && h < n as usize),
        "no kill hit the middle of the upload: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(stats.reported, n);
    drop(host);
    assert_host_holds(&db, &expected);
}

#[test]
fn reporter_process_killed_mid_upload_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("device.sqlite");
    let db = dir.path().join("host.sqlite");
    // Enough traces that the upload outlasts several kills on a fast machine.
    let n = 1200;
    let expected = device_store(&device, n);
    let host = Host::start(&db, "127.0.0.1:0", &[]);
    let url = host.url();
    enable_reporting(&device, &url, 3);

    let mut mid = 0;
    let mut held = Vec::new();
    for round in 0..8u64 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgeloop"))
            .arg("traces")
            .arg("--store")
            .arg(&device)
            .arg("report")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        thread::sleep(Duration::from_millis(40 + 37 * round));
        if child.try_wait().unwrap().is_none() {
            mid += 1;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        held.push(host_ids(&db).len());
        let left = TraceStore::open(&device)
            .unwrap()
            .reportable_count()
            .unwrap();
        if left == 0 {
            break;
        }
    }
    assert!(mid >= 2, "the reporter finished before it could be killed");
    assert!(
        held.iter().any(|&h| h > 0 && h < n as usize),
        "no kill hit the middle of the upload: {held:?}"
    );

    let out = traces(&device, &["report", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["remaining"], 0);
    let store = TraceStore::open(&device).unwrap();
    assert_eq!(store.stats().unwrap().reported, n);
    drop(host);
    assert_host_holds(&db, &expected);
}
