//! [`Session`]: a conversation on an [`crate::Engine`], generating with a
//! streaming listener, blocking or async, cancellable from any thread.

use std::ops::ControlFlow;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use self_cell::self_cell;

use edgeloop_core::tokenizer::ChatMessage;
use edgeloop_core::{CancelToken, GenerateOptions, Prompt, SamplerConfig};

use crate::engine::Shared;
use crate::error::{guard, EdgeloopError};

/// Receives generated text as it is produced.
#[uniffi::export(callback_interface)]
pub trait TokenListener: Send + Sync {
    /// `text` is the next piece of the reply (never empty). Return `false`
    /// to stop generating; the result then ends with
    /// [`FinishReason::Cancelled`].
    fn on_token(&self, text: String) -> bool;
}

/// How to generate. Every field has a default.
#[derive(Clone, Debug, uniffi::Record)]
pub struct GenerateConfig {
    /// Most tokens to generate.
    #[uniffi(default = 256)]
    pub max_tokens: u32,
    /// 0 is greedy decoding.
    #[uniffi(default = 0.7)]
    pub temperature: f32,
    /// 0 keeps every token.
    #[uniffi(default = 40)]
    pub top_k: u32,
    #[uniffi(default = 0.95)]
    pub top_p: f32,
    #[uniffi(default = 0.05)]
    pub min_p: f32,
    /// 1 is off.
    #[uniffi(default = 1.0)]
    pub repetition_penalty: f32,
    /// The same seed and settings give the same text.
    #[uniffi(default = 0)]
    pub seed: u64,
    /// Generation stops before the first of these strings.
    #[uniffi(default = [])]
    pub stop: Vec<String>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            max_tokens: 256,
            temperature: 0.7,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repetition_penalty: 1.0,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum FinishReason {
    /// The model ended its turn.
    Stop,
    /// A stop string appeared (it is not part of the text).
    StopString,
    /// `max_tokens` were generated.
    Length,
    /// [`Session::cancel`] was called or the listener returned `false`.
    Cancelled,
}

impl From<edgeloop_core::FinishReason> for FinishReason {
    fn from(r: edgeloop_core::FinishReason) -> Self {
        match r {
            edgeloop_core::FinishReason::Stop => FinishReason::Stop,
            edgeloop_core::FinishReason::StopString => FinishReason::StopString,
            edgeloop_core::FinishReason::Length => FinishReason::Length,
            edgeloop_core::FinishReason::Cancelled => FinishReason::Cancelled,
        }
    }
}

/// A reply and what it cost.
#[derive(Clone, Debug, uniffi::Record)]
pub struct GenerationResult {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: u32,
    /// Prompt tokens whose keys and values were kept from the previous turn
    /// instead of being computed again.
    pub cached_prompt_tokens: u32,
    pub completion_tokens: u32,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
}

/// One turn of the conversation.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

type CoreSession<'e> = edgeloop_core::Session<'e>;

self_cell!(
    /// A core session (its KV cache) together with the engine it borrows.
    struct LiveSession {
        owner: Arc<Shared>,
        #[covariant]
        dependent: CoreSession,
    }
);

/// What one generation at a time works on.
struct State {
    /// The turns so far, the system prompt first.
    history: Vec<ChatMessage>,
    /// Keeps the keys and values of the last prompt and reply, so the next
    /// turn computes only what follows their common prefix.
    live: LiveSession,
}

/// A conversation. Calls on one session take turns; [`Session::cancel`]
/// may come from any thread.
#[derive(uniffi::Object)]
pub struct Session {
    /// Held for the whole of a generation, which is what makes calls take
    /// turns.
    state: Mutex<State>,
    /// The cancel switch of the generation in progress.
    current: Mutex<Option<CancelToken>>,
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, system_prompt: Option<String>) -> Self {
        Session {
            state: Mutex::new(State {
                history: system_prompt.map(ChatMessage::system).into_iter().collect(),
                live: LiveSession::new(shared, |s| s.core.session()),
            }),
            current: Mutex::new(None),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Generates from `prompt` (a chat turn appended to `history`, or plain
    /// text), streaming to `listener`.
    fn run(
        &self,
        user: &str,
        chat: bool,
        config: &GenerateConfig,
        listener: Option<&dyn TokenListener>,
    ) -> Result<GenerationResult, EdgeloopError> {
        let options = generate_options(config)?;
        let cancel = options.cancel.clone().expect("set by generate_options");
        let mut state = self.state();
        let State { history, live } = &mut *state;
        let prompt = if chat {
            let mut turns = history.clone();
            turns.push(ChatMessage::user(user));
            Prompt::Chat(turns)
        } else {
            Prompt::Text(user.to_string())
        };
        let ids = live.borrow_owner().core.encode(&prompt)?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(cancel);
        let result = catch_unwind(AssertUnwindSafe(|| {
            live.with_dependent_mut(|_, session| {
                session.generate(&ids, &options, &mut |event| match listener {
                    Some(l) if !event.text.is_empty() && !l.on_token(event.text.to_string()) => {
                        ControlFlow::Break(())
                    }
                    _ => ControlFlow::Continue(()),
                })
            })
        }));
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let generation = match result {
            Ok(Ok(generation)) => generation,
            // A failed or interrupted generation may leave the cache half
            // written: start the next turn from an empty one.
            Ok(Err(e)) => {
                live.with_dependent_mut(|_, session| session.reset());
                return Err(e.into());
            }
            Err(panic) => {
                live.with_dependent_mut(|_, session| session.reset());
                resume_unwind(panic)
            }
        };
        let finish_reason = FinishReason::from(generation.finish_reason);
        if chat && finish_reason != FinishReason::Cancelled {
            history.push(ChatMessage::user(user));
            history.push(ChatMessage::assistant(generation.text.clone()));
        }
        let t = generation.timings;
        Ok(GenerationResult {
            text: generation.text,
            finish_reason,
            prompt_tokens: t.prompt_tokens as u32,
            cached_prompt_tokens: t.cached_tokens as u32,
            completion_tokens: t.generated_tokens as u32,
            prefill_tokens_per_second: t.prefill_tokens_per_sec(),
            decode_tokens_per_second: t.decode_tokens_per_sec(),
        })
    }
}

#[uniffi::export]
impl Session {
    /// Sends `prompt` as the user's next turn and returns the model's reply,
    /// streaming it to `listener`. A cancelled turn is not kept in the
    /// history.
    pub fn generate(
        &self,
        prompt: String,
        config: GenerateConfig,
        listener: Option<Box<dyn TokenListener>>,
    ) -> Result<GenerationResult, EdgeloopError> {
        guard(|| self.run(&prompt, true, &config, listener.as_deref()))
    }

    /// [`Session::generate`] without blocking the caller: runs on a thread
    /// of its own (Kotlin `suspend`, Swift `async`, Python coroutine).
    pub async fn generate_async(
        self: Arc<Self>,
        prompt: String,
        config: GenerateConfig,
        listener: Option<Box<dyn TokenListener>>,
    ) -> Result<GenerationResult, EdgeloopError> {
        crate::blocking::spawn("edgeloop-generate", move || {
            self.run(&prompt, true, &config, listener.as_deref())
        })
        .await
    }

    /// Continues plain `text` (no chat template, no history).
    pub fn complete(
        &self,
        text: String,
        config: GenerateConfig,
        listener: Option<Box<dyn TokenListener>>,
    ) -> Result<GenerationResult, EdgeloopError> {
        guard(|| self.run(&text, false, &config, listener.as_deref()))
    }

    /// Stops the generation in progress, if any; it returns what it has
    /// with [`FinishReason::Cancelled`].
    pub fn cancel(&self) {
        if let Some(token) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            token.cancel();
        }
    }

    /// The conversation so far (the system prompt first, if any).
    pub fn messages(&self) -> Vec<Message> {
        self.state()
            .history
            .iter()
            .map(|m| Message {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect()
    }

    /// Forgets every turn but the system prompt (and the cached keys and
    /// values with them).
    pub fn reset(&self) {
        let mut state = self.state();
        state.history.retain(|m| m.role == "system");
        state.live.with_dependent_mut(|_, session| session.reset());
    }
}

/// Checks `config` and turns it into core's options, with a fresh cancel
/// switch.
fn generate_options(config: &GenerateConfig) -> Result<GenerateOptions, EdgeloopError> {
    if config.max_tokens == 0 {
        return Err(EdgeloopError::invalid("max_tokens must be at least 1"));
    }
    let sampler = SamplerConfig {
        temperature: config.temperature,
        top_k: config.top_k as usize,
        top_p: config.top_p,
        min_p: config.min_p,
        repetition_penalty: config.repetition_penalty,
        seed: config.seed,
        ..SamplerConfig::default()
    };
    sampler
        .validate()
        .map_err(|e| EdgeloopError::invalid(e.to_string()))?;
    Ok(GenerateOptions {
        max_tokens: config.max_tokens as usize,
        sampler,
        stop_strings: config.stop.clone(),
        ignore_eos: false,
        cancel: Some(CancelToken::new()),
    })
}
