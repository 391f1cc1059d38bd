//! The body of `POST /v1/chat/completions`, checked field by field.
//!
//! The body is read as a JSON value and every field edgeloop understands is
//! taken out with its type and range checked, so that a refusal names the
//! field (`messages[1].content`, `edgeloop.samples`). Fields it does not
//! know are ignored, as OpenAI clients send extras; `null` counts as absent.

use std::time::Duration;

use edgeloop_core::scaling::{self, AnswerKind, Gate, Limits, SolveOptions, Strategy};
use edgeloop_core::tokenizer::ChatMessage;
use serde_json::{Map, Value};

use super::error::ApiError;

/// Most parallel samples (`n`) of one plain request.
pub const MAX_N: u64 = 16;
/// Most stop strings.
pub const MAX_STOP: usize = 4;
/// Most samples a strategy may draw for one request.
pub const MAX_SAMPLES: u64 = 64;
/// Tokens per sample of a strategy when the request gives no `max_tokens`.
pub const SOLVE_MAX_TOKENS: usize = 256;

/// A checked chat completion request.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    /// `max_completion_tokens` or `max_tokens`; `None`: the rest of the context.
    pub max_tokens: Option<usize>,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub stop: Vec<String>,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    /// The `edgeloop` extension: answer the last user message with a
    /// test-time scaling strategy.
    pub solve: Option<Solve>,
}

/// A request for [`scaling::solve`].
#[derive(Clone, Debug)]
pub struct Solve {
    pub question: String,
    pub options: SolveOptions,
}

/// OpenAI's default sampling temperature.
const DEFAULT_TEMPERATURE: f32 = 1.0;

/// Checks `body` against the loaded model's name.
pub fn parse(body: &Value, model: &str) -> Result<ChatRequest, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError {
            param: None,
            ..ApiError::invalid("", "invalid_type", "the request body must be a JSON object")
        });
    };
    let f = Fields { obj, prefix: "" };
    if let Some(name) = f.string("model")? {
        if name != model {
            return Err(ApiError {
                status: axum::http::StatusCode::NOT_FOUND,
                ..ApiError::invalid(
                    "model",
                    "model_not_found",
                    format!("the model {name:?} does not exist; this server runs {model:?}"),
                )
            });
        }
    }
    let messages = messages(f.get("messages"))?;
    let max_tokens = match f.int("max_completion_tokens", 1, u32::MAX as u64)? {
        Some(m) => Some(m),
        None => f.int("max_tokens", 1, u32::MAX as u64)?,
    }
    .map(|m| m as usize);
    let temperature = f.number("temperature", 0.0, 2.0)?;
    let top_p = f.number("top_p", f64::MIN_POSITIVE, 1.0)?;
    let seed = f.seed("seed")?;
    let n = f.int("n", 1, MAX_N)?.unwrap_or(1) as usize;
    let stream = f.bool("stream")?.unwrap_or(false);
    let include_usage = match f.object("stream_options")? {
        Some(o) => Fields {
            obj: o,
            prefix: "stream_options.",
        }
        .bool("include_usage")?
        .unwrap_or(false),
        None => false,
    };
    if f.bool("logprobs")? == Some(true) {
        return Err(ApiError::invalid(
            "logprobs",
            "unsupported_parameter",
            "logprobs are not supported by this server",
        ));
    }
    if f.int("top_logprobs", 0, 20)?.is_some_and(|k| k > 0) {
        return Err(ApiError::invalid(
            "top_logprobs",
            "unsupported_parameter",
            "logprobs are not supported by this server",
        ));
    }
    for key in ["presence_penalty", "frequency_penalty"] {
        if f.number(key, -2.0, 2.0)?.is_some_and(|v| v != 0.0) {
            return Err(ApiError::invalid(
                key,
                "unsupported_parameter",
                format!("{key} is not supported by this server (only 0)"),
            ));
        }
    }
    if f.get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty())
    {
        return Err(ApiError::invalid(
            "tools",
            "unsupported_parameter",
            "tools are not supported by this server",
        ));
    }
    let stop = stop(f.get("stop"))?;
    let seed_given = seed.is_some();
    let mut request = ChatRequest {
        max_tokens,
        temperature: temperature.unwrap_or(DEFAULT_TEMPERATURE as f64) as f32,
        top_p: top_p.unwrap_or(1.0) as f32,
        seed: seed.unwrap_or_else(clock_seed),
        stop,
        n,
        stream,
        include_usage,
        solve: None,
        messages,
    };
    if let Some(ext) = f.object("edgeloop")? {
        if n > 1 {
            return Err(ApiError::invalid(
                "n",
                "invalid_value",
                "n must be 1 with an edgeloop strategy: the strategy decides how many samples to draw",
            ));
        }
        let mut s = solve(ext, &request.messages)?;
        s.options.max_tokens = max_tokens.unwrap_or(SOLVE_MAX_TOKENS);
        s.options.temperature = temperature.map_or(scaling::DEFAULT_TEMPERATURE, |t| t as f32);
        s.options.top_p = top_p.map_or(s.options.top_p, |p| p as f32);
        s.options.seed = if seed_given { request.seed } else { 0 };
        request.solve = Some(s);
    }
    Ok(request)
}

/// A seed for requests that give none, so that repeated sampled requests differ.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn messages(value: Option<&Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(value) = value else {
        return Err(ApiError::invalid(
            "messages",
            "missing_required_parameter",
            "messages is required",
        ));
    };
    let Some(list) = value.as_array() else {
        return Err(type_error("messages", "an array of messages", value));
    };
    if list.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "invalid_value",
            "messages must hold at least one message",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect()
}

fn message(i: usize, value: &Value) -> Result<ChatMessage, ApiError> {
    let at = format!("messages[{i}]");
    let Some(obj) = value.as_object() else {
        return Err(type_error(&at, "an object", value));
    };
    let prefix = format!("{at}.");
    let f = Fields {
        obj,
        prefix: &prefix,
    };
    let role = match f.string("role")? {
        Some("system" | "developer") => "system",
        Some("user") => "user",
        Some("assistant") => "assistant",
        Some(other) => {
            return Err(ApiError::invalid(
                format!("{at}.role"),
                "invalid_value",
                format!(
                    "{at}.role {other:?} is not supported (system, developer, user, assistant)"
                ),
            ))
        }
        None => {
            return Err(ApiError::invalid(
                format!("{at}.role"),
                "missing_required_parameter",
                format!("{at}.role is required"),
            ))
        }
    };
    let param = format!("{at}.content");
    let content = match f.get("content") {
        None => {
            return Err(ApiError::invalid(
                param.clone(),
                "missing_required_parameter",
                format!("{param} is required"),
            ))
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                texts.push(text_part(&format!("{param}[{j}]"), part)?);
            }
            texts.join("\n")
        }
        Some(other) => {
            return Err(type_error(
                &param,
                "a string or an array of text parts",
                other,
            ))
        }
    };
    Ok(ChatMessage::new(role, content))
}

/// The text of one `{"type":"text","text":...}` content part.
fn text_part(at: &str, part: &Value) -> Result<String, ApiError> {
    let Some(obj) = part.as_object() else {
        return Err(type_error(at, "an object", part));
    };
    let prefix = format!("{at}.");
    let f = Fields {
        obj,
        prefix: &prefix,
    };
    match f.string("type")? {
        Some("text") => {}
        Some(other) => {
            return Err(ApiError::invalid(
                format!("{at}.type"),
                "invalid_value",
                format!("content parts of type {other:?} are not supported (only \"text\")"),
            ))
        }
        None => {
            return Err(ApiError::invalid(
                format!("{at}.type"),
                "missing_required_parameter",
                format!("{at}.type is required"),
            ))
        }
    }
    match f.string("text")? {
        Some(t) => Ok(t.to_string()),
        None => Err(ApiError::invalid(
            format!("{at}.text"),
            "missing_required_parameter",
            format!("{at}.text is required"),
        )),
    }
}

fn stop(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let list: Vec<&Value> = match value {
        None => return Ok(Vec::new()),
        Some(v @ Value::String(_)) => vec![v],
        Some(Value::Array(a)) if a.len() <= MAX_STOP => a.iter().collect(),
        Some(Value::Array(a)) => {
            return Err(ApiError::invalid(
                "stop",
                "invalid_value",
                format!(
                    "stop holds {} strings; at most {MAX_STOP} are allowed",
                    a.len()
                ),
            ))
        }
        Some(other) => return Err(type_error("stop", "a string or an array of strings", other)),
    };
    list.into_iter()
        .map(|v| match v.as_str() {
            Some("") => Err(ApiError::invalid(
                "stop",
                "invalid_value",
                "stop strings must not be empty",
            )),
            Some(s) => Ok(s.to_string()),
            None => Err(type_error("stop", "a string or an array of strings", v)),
        })
        .collect()
}

/// The `edgeloop` extension object.
fn solve(obj: &Map<String, Value>, messages: &[ChatMessage]) -> Result<Solve, ApiError> {
    let f = Fields {
        obj,
        prefix: "edgeloop.",
    };
    let Some(name) = f.string("strategy")? else {
        return Err(ApiError::invalid(
            "edgeloop.strategy",
            "missing_required_parameter",
            format!(
                "edgeloop.strategy is required ({})",
                Strategy::NAMES.join(", ")
            ),
        ));
    };
    let samples = f.int("samples", 1, MAX_SAMPLES)?.unwrap_or(16) as usize;
    let strategy = Strategy::parse(name, samples)
        .map_err(|e| ApiError::invalid("edgeloop.strategy", "invalid_value", e.to_string()))?;
    let wave = f.int("wave", 1, MAX_SAMPLES)?.map(|w| w as usize);
    let threshold = f.number("threshold", 0.0, 1.0)?;
    let window = f.int("window", 1, MAX_SAMPLES)?.map(|w| w as usize);
    let confidence = f.number("confidence", 0.0, 1.0)?;
    let gate = f
        .string("gate")?
        .map(|g| {
            g.parse::<Gate>()
                .map_err(|e| ApiError::invalid("edgeloop.gate", "invalid_value", e.to_string()))
        })
        .transpose()?;
    let strategy = match strategy {
        Strategy::Adaptive {
            wave: w,
            max_samples,
            threshold: t,
            window: win,
        } => Strategy::Adaptive {
            wave: wave.unwrap_or(w),
            max_samples,
            threshold: threshold.unwrap_or(t),
            window: window.or(win),
        },
        Strategy::Auto {
            gate: g,
            confidence: c,
            max_samples,
            wave: w,
            threshold: t,
            agreement,
        } => Strategy::Auto {
            gate: gate.unwrap_or(g),
            confidence: confidence.unwrap_or(c),
            max_samples,
            wave: wave.unwrap_or(w),
            threshold: threshold.unwrap_or(t),
            agreement,
        },
        Strategy::Budget {
            min_thinking,
            max_thinking,
            max_waits,
        } => {
            let min = f
                .int("min_thinking", 0, 4096)?
                .map_or(min_thinking, |v| v as usize);
            let max = f
                .int("max_thinking", 1, 4096)?
                .map_or(max_thinking, |v| v as usize);
            if min > max {
                return Err(ApiError::invalid(
                    "edgeloop.min_thinking",
                    "invalid_value",
                    format!("edgeloop.min_thinking {min} is above edgeloop.max_thinking {max}"),
                ));
            }
            Strategy::Budget {
                min_thinking: min,
                max_thinking: max,
                max_waits: f.int("max_waits", 0, 64)?.map_or(max_waits, |v| v as usize),
            }
        }
        other => other,
    };
    let kind = match f.string("kind")? {
        None => AnswerKind::Number,
        Some(k) => k.parse().map_err(|_| {
            ApiError::invalid(
                "edgeloop.kind",
                "invalid_value",
                format!("edgeloop.kind {k:?} is not one of number, choice, text"),
            )
        })?,
    };
    let budget = f.int("budget", 1, u32::MAX as u64)?.map(|b| b as usize);
    let max_wall = f
        .number("max_seconds", f64::MIN_POSITIVE, 86_400.0)?
        .map(Duration::from_secs_f64);
    let thinking = f.bool("thinking")?;
    let instruction = f.string("instruction")?.map(str::to_string);
    let Some(question) = messages.iter().rev().find(|m| m.role == "user") else {
        return Err(ApiError::invalid(
            "messages",
            "invalid_value",
            "an edgeloop strategy answers the last user message, and there is none",
        ));
    };
    if question.content.trim().is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "invalid_value",
            "the last user message, the question of the strategy, is empty",
        ));
    }
    Ok(Solve {
        question: question.content.clone(),
        options: SolveOptions {
            strategy,
            kind,
            thinking,
            limits: Limits {
                max_tokens: budget,
                max_wall,
            },
            instruction,
            ..SolveOptions::default()
        },
    })
}

/// The fields of one JSON object, with the path used to name them in errors.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    /// The field's value; `null` counts as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(type_error(&self.name(key), "a string", v)),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(type_error(&self.name(key), "a boolean", v)),
        }
    }

    fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(v) => Err(type_error(&self.name(key), "an object", v)),
        }
    }

    /// An integer in `min..=max`.
    fn int(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let name = self.name(key);
        let out_of_range = || {
            ApiError::invalid(
                name.clone(),
                "invalid_value",
                format!("{name} must be an integer from {min} to {max}, not {v}"),
            )
        };
        match v {
            Value::Number(n) if n.is_u64() => {
                let n = n.as_u64().unwrap_or(0);
                if (min..=max).contains(&n) {
                    Ok(Some(n))
                } else {
                    Err(out_of_range())
                }
            }
            Value::Number(n) if n.is_i64() => Err(out_of_range()),
            _ => Err(type_error(&name, "an integer", v)),
        }
    }

    /// A number in `min..=max`.
    fn number(&self, key: &str, min: f64, max: f64) -> Result<Option<f64>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let name = self.name(key);
        match v.as_f64() {
            Some(x) if x.is_finite() && (min..=max).contains(&x) => Ok(Some(x)),
            Some(_) => Err(ApiError::invalid(
                name.clone(),
                "invalid_value",
                format!("{name} must be a number from {min} to {max}, not {v}"),
            )),
            None => Err(type_error(&name, "a number", v)),
        }
    }

    /// A seed: any integer that fits 64 bits (negative ones wrap).
    fn seed(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.is_u64() => Ok(n.as_u64()),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64().map(|i| i as u64)),
            Some(v) => Err(type_error(&self.name(key), "an integer", v)),
        }
    }
}

fn type_error(param: &str, want: &str, got: &Value) -> ApiError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ApiError::invalid(
        param,
        "invalid_type",
        format!("{param} must be {want}, not {got}"),
    )
}
