//! The device side of the loop end to end, with the real default model and
//! real processes: `edgeloop solve --verify` answers generated questions,
//! checks them and stores the traces; `edgeloop traces report` sends the
//! accepted ones to a running `edgeloop-trainer serve`. Also kill -9 of the
//! device in the middle of solving and storing.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_host_holds, enable_reporting, traces, Host};
use edgeloop_core::trace::{ListFilter, TraceStore};

fn edgeloop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeloop"))
        .args(args)
        .output()
        .unwrap()
}

/// `edgeloop solve --verify` storing into `store`. The agreement stage alone
/// keeps it quick; the judging stages are covered by the core's verifier
/// tests.
fn solve_args<'a>(store: &'a str, question: &'a str) -> Vec<&'a str> {
    vec![
        "solve",
        "--model",
        "smollm2-135m-instruct",
        "--offline",
        "--strategy",
        "self-consistency",
        "--samples",
        "4",
        "--max-tokens",
        "48",
        "--verify",
        "--stages",
        "agreement",
        "--consent",
        "--store",
        store,
        "--json",
        question,
    ]
}

fn questions(n: usize, seed: u64) -> Vec<String> {
    let out = edgeloop(&[
        "tasks",
        "gen",
        "arithmetic",
        "--digits",
        "1",
        "--ops",
        "add,sub",
        "-n",
        &n.to_string(),
        "--seed",
        &seed.to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["question"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Ids of the accepted traces in the device store.
fn accepted(store: &Path) -> HashSet<String> {
    TraceStore::open(store)
        .unwrap()
        .list(&ListFilter {
            accepted: Some(true),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|t| t.record.id)
        .collect()
}

fn report(store: &str, host: &Host) {
    let store = Path::new(store);
    enable_reporting(store, &host.url(), 50);
    let out = traces(store, &["report"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn solved_and_verified_traces_reach_the_host_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("device.sqlite");
    let store_s = store.to_str().unwrap();
    let mut expected = HashSet::new();
    let mut rejected = 0;
    for q in questions(8, 21) {
        let out = edgeloop(&solve_args(store_s, &q));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let id = err
            .split_whitespace()
            .skip_while(|w| *w != "trace")
            .nth(1)
            .unwrap_or_else(|| panic!("no stored trace: {err}"))
            .to_string();
        let share = v["confidence"].as_f64().unwrap();
        let ok = v["verification"]["accepted"].as_bool().unwrap();
        assert_eq!(ok, share >= 0.5, "agreement at 0.5: {v}");
        if ok {
            expected.insert(id);
        } else {
            rejected += 1;
        }
    }
    assert_eq!(
        accepted(&store),
        expected,
        "the store holds what solve accepted"
    );
    assert!(
        !expected.is_empty(),
        "some answers pass the agreement stage"
    );
    let s = TraceStore::open(&store).unwrap().stats().unwrap();
    assert_eq!(
        s.rejected as usize, rejected,
        "rejected traces are kept, marked"
    );

    let db = dir.path().join("host.sqlite");
    let host = Host::start(&db, "127.0.0.1:0", &[]);
    report(store_s, &host);
    assert_host_holds(&db, &expected);
    // A second pass sends nothing new.
    report(store_s, &host);
    assert_host_holds(&db, &expected);
}

#[test]
fn killing_the_device_mid_solve_loses_no_stored_trace() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("device.sqlite");
    let store_s = store.to_str().unwrap();
    let mut stored = HashSet::new();
    let mut killed = 0;
    // Every third solve runs to the end (the first one included), which
    // measures how long a solve takes on this machine; the others are killed
    // at a deterministic spread of fractions of that time, so that the kills
    // fall over a solve's whole life (load, prefill, sampling, verifying,
    // storing) however fast the machine is.
    let mut span = Duration::ZERO;
    let mut fraction = 37u32;
    for (i, q) in questions(10, 22).iter().enumerate() {
        fraction = (fraction * 1103 + 12345) % 1000;
        let delay = span.mul_f64(0.05 + 0.9 * f64::from(fraction) / 1000.0);
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgeloop"))
            .args(solve_args(store_s, q))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if i % 3 != 0 && start.elapsed() >= delay {
                child.kill().unwrap();
                child.wait().unwrap();
                killed += 1;
                break None;
            }
            thread::sleep(Duration::from_millis(5));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        if let Some(status) = finished {
            assert!(status.success(), "{err}");
            if i % 3 == 0 {
                span = start.elapsed();
            }
            let id = err
                .split_whitespace()
                .skip_while(|w| *w != "trace")
                .nth(1)
                .unwrap()
                .to_string();
            stored.insert(id);
        }
        // Whatever happened, the store opens cleanly and keeps every trace
        // a finished solve reported as stored.
        let open = TraceStore::open(&store).unwrap();
        let held: HashSet<String> = open
            .list(&ListFilter::default())
            .unwrap()
            .into_iter()
            .map(|t| t.record.id)
            .collect();
        assert!(stored.is_subset(&held), "a stored trace was lost");
    }
    assert!(killed >= 3, "only {killed} solves were killed");
    assert!(stored.len() >= 3, "only {} solves finished", stored.len());
    let db = dir.path().join("host.sqlite");
    let host = Host::start(&db, "127.0.0.1:0", &[]);
    report(store_s, &host);
    assert_host_holds(&db, &accepted(&store));
}
