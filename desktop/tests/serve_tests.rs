//! `edgeloop serve` on the real default model, over loopback HTTP as an
//! OpenAI client would use it: completions plain and streamed, parallel
//! samples, the `edgeloop` strategy extension, concurrency, a full queue,
//! a client dropping a stream, and every class of bad request.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The key every server here requires.
const KEY: &str = "serve-test-key";

/// A running `edgeloop serve`, started from a thread that lives as long as
/// the test process, and killed with it.
struct Server {
    addr: String,
    model: String,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Starts a server with `extra` flags; its log goes to a temporary file.
fn start(extra: &[&str]) -> Server {
    let model = common::base_model();
    let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let (tx, rx) = mpsc::channel();
    // The child is tied to this thread (Linux: killed when it ends), so the
    // thread stays for the life of the test process.
    thread::spawn(move || {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeloop"));
        cmd.args(["serve", "--offline", "--model"])
            .arg(&model)
            .args(["--port", "0", "--api-key", KEY])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap());
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs between
            // fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let mut child: Child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .map(str::to_string);
        if addr.is_none() {
            let _ = child.wait();
        }
        let err = std::fs::read_to_string(log.path()).unwrap_or_default();
        tx.send((addr, err)).unwrap();
        // Waiting keeps this thread, which the child's life is tied to.
        let _ = child.wait();
    });
    let (addr, err) = rx.recv().unwrap();
    let addr = addr.unwrap_or_else(|| panic!("edgeloop serve did not start: {err}"));
    Server {
        addr,
        model: "smollm2-135m-instruct".into(),
    }
}

/// The server most tests share.
fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| start(&[]))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// A POST of `body` with the key and JSON content type: status and body.
fn post_raw(s: &Server, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = agent().post(s.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body).unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

fn auth() -> String {
    format!("Bearer {KEY}")
}

/// A chat completion request: status and body.
fn chat(s: &Server, body: &Value) -> (u16, String) {
    post_raw(
        s,
        "/v1/chat/completions",
        &body.to_string(),
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &auth()),
        ],
    )
}

/// A chat completion that must succeed.
fn chat_ok(s: &Server, body: &Value) -> Value {
    let (status, text) = chat(s, body);
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn get(s: &Server, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = agent().get(s.url(path));
    if let Some(k) = key {
        req = req.header("Authorization", &format!("Bearer {k}"));
    }
    let mut resp = req.call().unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The `data:` payloads of an event stream, in order.
fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// Asserts an OpenAI-style error answer with `status` naming `param`.
fn assert_error(case: &str, (status, body): (u16, String), want: u16, param: Option<&str>) {
    assert_eq!(status, want, "{case}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{case}: {body}"));
    let e = &v["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{case}: {body}"
    );
    assert!(e["type"].is_string(), "{case}: {body}");
    assert!(e.get("code").is_some(), "{case}: {body}");
    if let Some(p) = param {
        assert_eq!(e["param"], json!(p), "{case}: {body}");
    }
}

fn greedy(question: &str, max_tokens: u32) -> Value {
    json!({
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 1,
    })
}

fn content(v: &Value, i: usize) -> &str {
    v["choices"][i]["message"]["content"].as_str().unwrap()
}

#[test]
fn a_greedy_completion_is_deterministic_with_consistent_usage() {
    let s = server();
    let a = chat_ok(s, &greedy("What is 2+3?", 24));
    assert_eq!(a["object"], "chat.completion");
    assert!(a["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(a["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(a["model"], json!(s.model));
    assert_eq!(a["choices"].as_array().unwrap().len(), 1);
    assert_eq!(a["choices"][0]["index"], 0);
    assert_eq!(a["choices"][0]["message"]["role"], "assistant");
    let text = content(&a, 0);
    assert!(!text.trim().is_empty());
    assert!(text.contains('5'), "{text}");
    let finish = a["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(finish == "stop" || finish == "length", "{finish}");
    let u = &a["usage"];
    let (p, c) = (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    );
    assert!(p > 0 && c > 0 && c <= 24);
    assert_eq!(u["total_tokens"].as_u64().unwrap(), p + c);
    assert_eq!(a["edgeloop"]["spend"]["tokens"].as_u64().unwrap(), c);
    assert!(a["edgeloop"]["spend"]["wall_secs"].as_f64().unwrap() > 0.0);

    let b = chat_ok(s, &greedy("What is 2+3?", 24));
    assert_eq!(content(&b, 0), text);
    assert_eq!(b["usage"], a["usage"]);
    assert_ne!(b["id"], a["id"]);

    // Content as text parts, a system message and extra fields clients send.
    let parts = chat_ok(
        s,
        &json!({
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": [{"type": "text", "text": "What is 2+3?"}], "name": "me"}
            ],
            "max_completion_tokens": 8,
            "temperature": 0,
            "user": "someone",
            "presence_penalty": 0,
            "logprobs": false,
            "stream": false,
            "unknown_extension": {"x": 1},
        }),
    );
    assert!(parts["usage"]["completion_tokens"].as_u64().unwrap() <= 8);

    // A stop string ends the text before it.
    let stopped = chat_ok(
        s,
        &json!({
            "messages": [{"role": "user", "content": "What is 2+3?"}],
            "max_tokens": 24, "temperature": 0, "stop": ["5"],
        }),
    );
    assert!(!content(&stopped, 0).contains('5'));
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
}

#[test]
fn a_stream_concatenates_to_the_plain_answer() {
    let s = server();
    let plain = chat_ok(s, &greedy("What is the capital of France?", 24));
    let mut req = greedy("What is the capital of France?", 24);
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let (status, text) = chat(s, &req);
    assert_eq!(status, 200, "{text}");
    let events = events(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut streamed = String::new();
    let mut finish = None;
    for c in &chunks {
        if let Some(choice) = c["choices"].as_array().and_then(|a| a.first()) {
            if let Some(t) = choice["delta"]["content"].as_str() {
                streamed.push_str(t);
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = Some(f.to_string());
                assert!(c["edgeloop"]["spend"]["tokens"].as_u64().is_some(), "{c}");
            }
        }
    }
    assert_eq!(streamed, content(&plain, 0));
    assert_eq!(
        finish.as_deref(),
        plain["choices"][0]["finish_reason"].as_str()
    );
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], plain["usage"]);
}

#[test]
fn n_returns_that_many_choices() {
    let s = server();
    let v = chat_ok(
        s,
        &json!({
            "messages": [{"role": "user", "content": "Name a fruit."}],
            "max_tokens": 12, "temperature": 0.8, "seed": 3, "n": 3,
        }),
    );
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    let mut tokens = 0;
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], json!(i));
        assert!(c["message"]["content"].is_string());
        assert!(c["finish_reason"].is_string());
        tokens += 1;
    }
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(completion >= tokens && completion <= 36, "{completion}");
    assert_eq!(v["edgeloop"]["spend"]["samples"], 3);
}

#[test]
fn a_strategy_answers_with_confidence_and_spend() {
    let s = server();
    let v = chat_ok(
        s,
        &json!({
            "messages": [{"role": "user", "content": "What is 7 + 5?"}],
            "max_tokens": 32, "seed": 1,
            "edgeloop": {"strategy": "self-consistency", "samples": 4, "kind": "number"},
        }),
    );
    let e = &v["edgeloop"];
    assert_eq!(e["strategy"], "self-consistency");
    assert!(e.get("answer").is_some(), "{v}");
    let confidence = e["confidence"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&confidence), "{confidence}");
    assert_eq!(e["spend"]["samples"], 4);
    let tokens = e["spend"]["tokens"].as_u64().unwrap();
    assert!(tokens > 0 && tokens <= 4 * 32);
    assert_eq!(v["usage"]["completion_tokens"].as_u64().unwrap(), tokens);
    assert!(e["spend"]["wall_secs"].as_f64().unwrap() > 0.0);
    assert!(e["spend"]["limited"].is_boolean());
    if let Some(answer) = e["answer"].as_str() {
        assert!(content(&v, 0).contains(answer), "{v}");
    }

    // A budget caps the tokens over all samples.
    let capped = chat_ok(
        s,
        &json!({
            "messages": [{"role": "user", "content": "What is 7 + 5?"}],
            "max_tokens": 32,
            "edgeloop": {"strategy": "self-consistency", "samples": 4, "budget": 8},
        }),
    );
    assert_eq!(capped["edgeloop"]["spend"]["limited"], true, "{capped}");

    // Streamed: the chosen text in one piece, the edgeloop object at the end.
    let (status, text) = chat(
        s,
        &json!({
            "messages": [{"role": "user", "content": "What is 7 + 5?"}],
            "max_tokens": 32, "stream": true,
            "edgeloop": {"strategy": "greedy"},
        }),
    );
    assert_eq!(status, 200, "{text}");
    let events = events(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(last["edgeloop"]["strategy"], "greedy", "{text}");
    assert!(text.contains("\"content\":\"") && last["choices"][0]["finish_reason"].is_string());
}

#[test]
fn models_and_health_are_listed() {
    let s = server();
    let (status, v) = get(s, "/v1/models", Some(KEY));
    assert_eq!(status, 200);
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], json!(s.model));
    assert_eq!(data[0]["object"], "model");
    assert_eq!(data[0]["owned_by"], "edgeloop");
    assert!(data[0]["created"].as_u64().unwrap() > 1_600_000_000);
    let (status, one) = get(s, &format!("/v1/models/{}", s.model), Some(KEY));
    assert_eq!(status, 200);
    assert_eq!(one, data[0]);
    let (status, missing) = get(s, "/v1/models/gpt-4", Some(KEY));
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "model_not_found");
    let (status, health) = get(s, "/health", None);
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
}

#[test]
fn concurrent_requests_all_complete_correctly() {
    let s = server();
    let questions: Vec<String> = (1..=8).map(|i| format!("What is {i} + {i}?")).collect();
    let barrier = Arc::new(Barrier::new(questions.len()));
    let handles: Vec<_> = questions
        .iter()
        .map(|q| {
            let (q, barrier) = (q.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                chat_ok(server(), &greedy(&q, 16))
            })
        })
        .collect();
    let together: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (q, v) in questions.iter().zip(&together) {
        let alone = chat_ok(s, &greedy(q, 16));
        assert_eq!(content(v, 0), content(&alone, 0), "{q}");
        assert_eq!(v["usage"], alone["usage"], "{q}");
    }
}

#[test]
fn a_full_queue_answers_503_and_keeps_serving() {
    let s = start(&["--queue", "1"]);
    let s = Arc::new(s);
    let clients = 10;
    let barrier = Arc::new(Barrier::new(clients));
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let (s, barrier) = (s.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                chat(
                    &s,
                    &json!({
                        "messages": [{"role": "user", "content": format!("Count from {i} to 100.")}],
                        "max_tokens": 32, "temperature": 0,
                    }),
                )
            })
        })
        .collect();
    let answers: Vec<(u16, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let busy: Vec<_> = answers.iter().filter(|a| a.0 == 503).cloned().collect();
    assert!(ok >= 1, "{answers:?}");
    assert!(!busy.is_empty(), "{answers:?}");
    assert_eq!(ok + busy.len(), clients, "{answers:?}");
    for b in busy {
        assert_error("full queue", b.clone(), 503, None);
        assert!(b.1.contains("server_error"), "{}", b.1);
    }
    let (status, health) = get(&s, "/health", None);
    assert_eq!(status, 200);
    assert!(health["rejected"].as_u64().unwrap() >= 1);
    chat_ok(&s, &greedy("What is 2+3?", 8));
}

fn raw_post(addr: &str, extra_headers: &str, body: &[u8]) -> (u16, String) {
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {KEY}\r\nContent-Length: {}\r\n{extra_headers}\r\n",
        body.len()
    );
    common::http(addr, &head, body)
}

#[test]
fn a_client_dropping_a_stream_cancels_it_and_the_server_keeps_serving() {
    let s = server();
    let (_, before) = get(s, "/health", None);
    let body = json!({
        "messages": [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}],
        "max_tokens": 1000, "temperature": 0, "stream": true,
    })
    .to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        s.addr,
        body.len()
    );
    let mut conn = TcpStream::connect(&s.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(body.as_bytes()).unwrap();
    // Read until some content arrived, then hang up.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"content\":\"") || seen.len() < 2000 {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    drop(conn);
    let cancelled = wait_cancelled(s, before["cancelled"].as_u64().unwrap());
    chat_ok(s, &greedy("What is 2+3?", 8));

    // A plain request whose client hangs up while it is generated.
    let body = json!({
        "messages": [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}],
        "max_tokens": 1000, "temperature": 0,
    })
    .to_string();
    let mut conn = TcpStream::connect(&s.addr).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        s.addr,
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(body.as_bytes()).unwrap();
    thread::sleep(Duration::from_millis(500));
    drop(conn);
    wait_cancelled(s, cancelled);
    chat_ok(s, &greedy("What is 2+3?", 8));
}

/// Waits until the server counts more cancelled jobs than `before`; gives
/// the new count.
fn wait_cancelled(s: &Server, before: u64) -> u64 {
    let start = Instant::now();
    loop {
        let (_, health) = get(s, "/health", None);
        let now = health["cancelled"].as_u64().unwrap();
        if now > before {
            return now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the generation was not cancelled: {health}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_requests_are_refused_with_openai_errors_naming_the_field() {
    let s = server();
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let with = |field: &str, value: Value| {
        let mut v = json!({"messages": msgs, "max_tokens": 4});
        v[field] = value;
        v
    };
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "missing messages",
            json!({"max_tokens": 4}),
            400,
            "messages",
        ),
        ("empty messages", json!({"messages": []}), 400, "messages"),
        (
            "messages not an array",
            json!({"messages": "hi"}),
            400,
            "messages",
        ),
        (
            "message not an object",
            json!({"messages": ["hi"]}),
            400,
            "messages[0]",
        ),
        (
            "bad role",
            json!({"messages": [{"role": "bot", "content": "hi"}]}),
            400,
            "messages[0].role",
        ),
        (
            "tool role",
            json!({"messages": [{"role": "tool", "content": "hi"}]}),
            400,
            "messages[0].role",
        ),
        (
            "missing role",
            json!({"messages": [{"content": "hi"}]}),
            400,
            "messages[0].role",
        ),
        (
            "role not a string",
            json!({"messages": [{"role": 1, "content": "hi"}]}),
            400,
            "messages[0].role",
        ),
        (
            "missing content",
            json!({"messages": [{"role": "user"}]}),
            400,
            "messages[0].content",
        ),
        (
            "content a number",
            json!({"messages": [{"role": "user", "content": 5}]}),
            400,
            "messages[0].content",
        ),
        (
            "image part",
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            400,
            "messages[0].content[0].type",
        ),
        (
            "part without text",
            json!({"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": [{"type": "text"}]}]}),
            400,
            "messages[1].content[0].text",
        ),
        ("model not a string", with("model", json!(5)), 400, "model"),
        ("n zero", with("n", json!(0)), 400, "n"),
        ("n seventeen", with("n", json!(17)), 400, "n"),
        ("n fractional", with("n", json!(1.5)), 400, "n"),
        (
            "temperature negative",
            with("temperature", json!(-0.5)),
            400,
            "temperature",
        ),
        (
            "temperature NaN",
            with("temperature", json!("NaN")),
            400,
            "temperature",
        ),
        (
            "temperature too high",
            with("temperature", json!(2.5)),
            400,
            "temperature",
        ),
        ("top_p zero", with("top_p", json!(0)), 400, "top_p"),
        ("top_p a string", with("top_p", json!("0.9")), 400, "top_p"),
        (
            "max_tokens zero",
            with("max_tokens", json!(0)),
            400,
            "max_tokens",
        ),
        (
            "max_tokens negative",
            with("max_tokens", json!(-5)),
            400,
            "max_tokens",
        ),
        (
            "max_tokens a string",
            with("max_tokens", json!("10")),
            400,
            "max_tokens",
        ),
        (
            "max_completion_tokens zero",
            with("max_completion_tokens", json!(0)),
            400,
            "max_completion_tokens",
        ),
        ("seed a string", with("seed", json!("x")), 400, "seed"),
        (
            "stream a string",
            with("stream", json!("yes")),
            400,
            "stream",
        ),
        (
            "stream_options a list",
            with("stream_options", json!([])),
            400,
            "stream_options",
        ),
        (
            "include_usage a string",
            with("stream_options", json!({"include_usage": "y"})),
            400,
            "stream_options.include_usage",
        ),
        ("stop a number", with("stop", json!(5)), 400, "stop"),
        (
            "five stops",
            with("stop", json!(["a", "b", "c", "d", "e"])),
            400,
            "stop",
        ),
        ("empty stop", with("stop", json!([""])), 400, "stop"),
        ("logprobs", with("logprobs", json!(true)), 400, "logprobs"),
        (
            "penalty",
            with("frequency_penalty", json!(1.0)),
            400,
            "frequency_penalty",
        ),
        (
            "edgeloop a string",
            with("edgeloop", json!("sc")),
            400,
            "edgeloop",
        ),
        (
            "no strategy",
            with("edgeloop", json!({"samples": 4})),
            400,
            "edgeloop.strategy",
        ),
        (
            "unknown strategy",
            with("edgeloop", json!({"strategy": "magic"})),
            400,
            "edgeloop.strategy",
        ),
        (
            "zero samples",
            with(
                "edgeloop",
                json!({"strategy": "self-consistency", "samples": 0}),
            ),
            400,
            "edgeloop.samples",
        ),
        (
            "bad kind",
            with("edgeloop", json!({"strategy": "greedy", "kind": "color"})),
            400,
            "edgeloop.kind",
        ),
        (
            "bad budget",
            with("edgeloop", json!({"strategy": "greedy", "budget": 0})),
            400,
            "edgeloop.budget",
        ),
        (
            "bad gate",
            with("edgeloop", json!({"strategy": "auto", "gate": "vibes"})),
            400,
            "edgeloop.gate",
        ),
        (
            "bad seconds",
            with("edgeloop", json!({"strategy": "greedy", "max_seconds": -1})),
            400,
            "edgeloop.max_seconds",
        ),
        (
            "strategy with n",
            json!({"messages": msgs, "n": 2, "edgeloop": {"strategy": "greedy"}}),
            400,
            "n",
        ),
        (
            "strategy without a user message",
            json!({"messages": [{"role": "system", "content": "x"}], "edgeloop": {"strategy": "greedy"}}),
            400,
            "messages",
        ),
        (
            "unknown model",
            with("model", json!("gpt-4o")),
            404,
            "model",
        ),
        (
            "max_tokens past the context",
            with("max_tokens", json!(100_000)),
            400,
            "max_tokens",
        ),
    ];
    for (case, body, status, param) in cases {
        assert_error(case, chat(s, &body), status, Some(param));
    }

    let json_ct = [
        ("Content-Type", "application/json"),
        ("Authorization", &auth() as &str),
    ];
    let path = "/v1/chat/completions";
    assert_error(
        "malformed JSON",
        post_raw(s, path, "{\"messages\": [", &json_ct),
        400,
        None,
    );
    assert_error(
        "not an object",
        post_raw(s, path, "[1, 2]", &json_ct),
        400,
        None,
    );
    assert_error(
        "number out of range",
        post_raw(s, path, "{\"temperature\": 1e999}", &json_ct),
        400,
        None,
    );
    let body = with("max_tokens", json!(4)).to_string();
    assert_error(
        "text/plain",
        post_raw(
            s,
            path,
            &body,
            &[("Content-Type", "text/plain"), ("Authorization", &auth())],
        ),
        415,
        None,
    );
    assert_error(
        "no content type",
        raw_post(&s.addr, "", body.as_bytes()),
        415,
        None,
    );
    assert_error(
        "no key",
        post_raw(s, path, &body, &[("Content-Type", "application/json")]),
        401,
        None,
    );
    assert_error(
        "wrong key",
        post_raw(
            s,
            path,
            &body,
            &[
                ("Content-Type", "application/json"),
                ("Authorization", "Bearer nope"),
            ],
        ),
        401,
        None,
    );
    let (status, v) = get(s, "/v1/models", None);
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"]["code"], "invalid_api_key");

    // Over the 1 MiB default: declared, and sent in chunks without a length.
    let big = format!(
        "{{\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "a".repeat(2 << 20)
    );
    assert_error(
        "declared too large",
        raw_post(
            &s.addr,
            "Content-Type: application/json\r\n",
            big.as_bytes(),
        ),
        413,
        None,
    );
    let mut chunked = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        s.addr
    );
    for piece in big.as_bytes().chunks(64 * 1024) {
        chunked.push_str(&format!("{:x}\r\n", piece.len()));
        chunked.push_str(std::str::from_utf8(piece).unwrap());
        chunked.push_str("\r\n");
    }
    chunked.push_str("0\r\n\r\n");
    assert_error(
        "chunked too large",
        common::http(&s.addr, &chunked, b""),
        413,
        None,
    );

    let (status, v) = get(s, "/v1/nothing", Some(KEY));
    assert_eq!(status, 404);
    assert!(v["error"]["message"].is_string());

    // Still serving after all that.
    chat_ok(s, &greedy("What is 2+3?", 4));
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_with_its_token_count() {
    let s = start(&["--context", "64"]);
    let long = "Tell me about the weather in every city you know. ".repeat(10);
    let (status, body) = chat(
        &s,
        &json!({"messages": [{"role": "user", "content": long}], "max_tokens": 8}),
    );
    assert_error("long prompt", (status, body.clone()), 400, Some("messages"));
    assert!(body.contains("context_length_exceeded"), "{body}");
    assert!(body.contains("64 tokens"), "{body}");
    // A short prompt fits, but not with max_tokens past the context.
    assert_error(
        "max_tokens past the context",
        chat(&s, &greedy("Hi", 60)),
        400,
        Some("max_tokens"),
    );
    let ok = chat_ok(&s, &greedy("Hi", 8));
    assert!(ok["usage"]["total_tokens"].as_u64().unwrap() <= 64);
    // Without max_tokens, generation stops at the end of the context.
    let rest = chat_ok(
        &s,
        &json!({"messages": [{"role": "user", "content": "Write a long story."}], "temperature": 0}),
    );
    assert!(rest["usage"]["total_tokens"].as_u64().unwrap() <= 64);
}
