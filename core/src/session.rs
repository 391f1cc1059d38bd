//! A conversation with a model: the KV cache of one sequence, prefill and
//! decode, stop conditions (stop tokens, stop strings, max tokens,
//! cancellation) and streaming of text as it is produced.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::backend::SequenceState;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::BatchToken;
use crate::sampler::{Sampler, SamplerConfig, TokenChoice};
use crate::tokenizer::TokenStream;

/// Prompt tokens processed per forward pass during prefill.
pub const PREFILL_CHUNK: usize = 256;

/// Cancels a generation from another thread; checked before every token.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }
    /// Requests cancellation.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What to generate and when to stop.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens to generate (at least 1).
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Generation stops before the first occurrence of any of these strings.
    pub stop_strings: Vec<String>,
    /// Keep going past the model's end-of-turn tokens.
    pub ignore_eos: bool,
    pub cancel: Option<CancelToken>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampler: SamplerConfig::default(),
            stop_strings: Vec::new(),
            ignore_eos: false,
            cancel: None,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-turn token.
    Stop,
    /// A stop string appeared.
    StopString,
    /// `max_tokens` were generated.
    Length,
    /// The caller cancelled.
    Cancelled,
}

impl FinishReason {
    /// Short name (`stop`, `stop_string`, `length`, `cancelled`).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::StopString => "stop_string",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Time spent, for reporting speed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    pub prompt_tokens: usize,
    /// Prompt tokens taken from the cache instead of being computed.
    pub cached_tokens: usize,
    pub prefill_secs: f64,
    pub generated_tokens: usize,
    pub decode_secs: f64,
}

impl Timings {
    /// Prompt tokens computed per second.
    pub fn prefill_tokens_per_sec(&self) -> f64 {
        (self.prompt_tokens - self.cached_tokens) as f64 / self.prefill_secs.max(1e-9)
    }
    /// Generated tokens per second (the first token comes from prefill).
    pub fn decode_tokens_per_sec(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_secs.max(1e-9)
    }
}

/// One streamed step: the token and the text it added (possibly empty while
/// a multi-byte character or a possible stop string is incomplete).
#[derive(Debug)]
pub struct StreamEvent<'a> {
    pub token: &'a TokenChoice,
    pub text: &'a str,
}

/// The result of a generation.
#[derive(Clone, Debug)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<TokenChoice>,
    /// The end-of-turn token that finished it (`finish_reason` `Stop`),
    /// which is not among `tokens`.
    pub end: Option<TokenChoice>,
    pub finish_reason: FinishReason,
    pub timings: Timings,
}

impl Generation {
    /// Mean log-probability of the generated tokens (0 when none).
    pub fn mean_logprob(&self) -> f32 {
        if self.tokens.is_empty() {
            return 0.0;
        }
        self.tokens.iter().map(|t| t.logprob).sum::<f32>() / self.tokens.len() as f32
    }
}

/// One sequence's state over an [`Engine`]: reusable across turns, keeping
/// the cache of the shared prefix between consecutive prompts.
pub struct Session<'e> {
    engine: &'e Engine,
    /// The backend's caches: slot 0 holds the conversation, slots `1..=n`
    /// the sequences of a parallel generation.
    state: Box<dyn SequenceState + 'e>,
    logits: Vec<f32>,
    /// Tokens whose keys and values are in the cache.
    tokens: Vec<u32>,
    batch: Vec<BatchToken>,
    rows: Vec<usize>,
    /// Forward passes run so far.
    passes: u64,
}

impl<'e> Session<'e> {
    pub(crate) fn new(engine: &'e Engine) -> Self {
        Session {
            engine,
            state: engine.backend().new_state(),
            logits: Vec::new(),
            tokens: Vec::new(),
            batch: Vec::new(),
            rows: Vec::new(),
            passes: 0,
        }
    }

    /// Forward passes this session has run (one per prefill chunk and one
    /// per decode step, however many sequences it carries).
    pub fn forward_passes(&self) -> u64 {
        self.passes
    }

    /// Tokens currently cached.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Bytes held by the KV cache.
    pub fn kv_bytes(&self) -> usize {
        self.state.bytes()
    }

    /// Forgets the cache.
    pub fn reset(&mut self) {
        self.state.truncate(0, 0);
        self.tokens.clear();
    }

    fn ensure_room(&mut self, positions: usize) -> Result<()> {
        self.engine.check_memory(positions)?;
        self.state.reserve(0, positions)
    }

    /// Runs `tokens` from an empty cache (like the prompt phase of
    /// [`Session::generate`]) and returns the next-token logits after the last.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        if tokens.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        self.check_context(tokens.len(), 0)?;
        self.reset();
        self.ensure_room(tokens.len())?;
        self.feed(tokens)?;
        Ok(&self.logits[..self.engine.model().config().vocab_size])
    }

    /// Feeds `tokens` after the cached ones; returns the logits after the last.
    fn feed(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            self.run_chunk(chunk, false)?;
        }
        Ok(&self.logits)
    }

    /// One forward pass of `chunk` after the cached tokens; logits for its
    /// last token, or for all of them. Reuses the batch buffers, so decoding
    /// one token at a time allocates nothing.
    fn run_chunk(&mut self, chunk: &[u32], all_logits: bool) -> Result<()> {
        let start = self.tokens.len();
        self.batch.clear();
        self.batch
            .extend(chunk.iter().enumerate().map(|(i, &token)| BatchToken {
                token,
                pos: start + i,
                seq: 0,
            }));
        self.rows.clear();
        if all_logits {
            self.rows.extend(0..chunk.len());
        } else {
            self.rows.push(chunk.len() - 1);
        }
        self.passes += 1;
        if let Err(e) = self
            .state
            .forward(&self.batch, &self.rows, &mut self.logits)
        {
            // What the cache holds past the known tokens is not trusted.
            self.state.truncate(0, start);
            return Err(e);
        }
        self.tokens.extend_from_slice(chunk);
        Ok(())
    }

    /// Next-token logits at every position of `tokens`, computed from an
    /// empty cache (teacher forcing); row-major, `vocab_size` per position.
    pub fn logits_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        self.check_context(tokens.len(), 0)?;
        self.reset();
        self.ensure_room(tokens.len())?;
        let vocab = self.engine.model().config().vocab_size;
        let mut all = Vec::with_capacity(tokens.len() * vocab);
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            self.run_chunk(chunk, true)?;
            all.extend_from_slice(&self.logits[..chunk.len() * vocab]);
        }
        Ok(all)
    }

    /// Next-token logits after `tokens`, reusing the cached keys and values
    /// of the longest common prefix (at least the last token is recomputed).
    /// Scoring several texts that share a beginning this way computes the
    /// beginning once.
    pub fn logits_after(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        if tokens.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        self.check_context(tokens.len(), 0)?;
        self.ensure_room(tokens.len())?;
        self.extend_to(tokens)?;
        Ok(&self.logits[..self.engine.model().config().vocab_size])
    }

    /// How many leading tokens of `tokens` a prefill would take from the
    /// cache: the common prefix with what it holds, less at least the last
    /// token (whose logits are needed).
    pub fn reusable_prefix(&self, tokens: &[u32]) -> usize {
        let common = self
            .tokens
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        common.min(tokens.len().saturating_sub(1))
    }

    /// Makes slot 0 hold `tokens`: keeps the common prefix with what it
    /// holds, computes the rest, and leaves the logits after the last token.
    /// Returns how many tokens came from the cache.
    fn extend_to(&mut self, tokens: &[u32]) -> Result<usize> {
        let keep = self.reusable_prefix(tokens);
        self.state.truncate(0, keep);
        self.tokens.truncate(keep);
        self.feed(&tokens[keep..])?;
        Ok(keep)
    }

    /// The backend state, for searches that manage their own slots
    /// (slot 0 is this session's conversation).
    pub(crate) fn state_mut(&mut self) -> &mut (dyn SequenceState + 'e) {
        &mut *self.state
    }

    /// One forward pass of `batch` (tokens of slots other than 0), with the
    /// logits of every row, `vocab_size` each.
    pub(crate) fn forward_slots(&mut self, batch: &[BatchToken]) -> Result<&[f32]> {
        debug_assert!(batch.iter().all(|t| t.seq != 0));
        self.rows.clear();
        self.rows.extend(0..batch.len());
        self.passes += 1;
        self.state.forward(batch, &self.rows, &mut self.logits)?;
        Ok(&self.logits[..batch.len() * self.engine.model().config().vocab_size])
    }

    /// The engine this session runs on.
    pub(crate) fn engine(&self) -> &'e Engine {
        self.engine
    }

    fn check_context(&self, prompt: usize, max_tokens: usize) -> Result<()> {
        let context = self.engine.context_size();
        if prompt + max_tokens > context {
            return Err(Error::ContextOverflow {
                prompt,
                max_tokens,
                context,
            });
        }
        Ok(())
    }

    /// Generates a continuation of `prompt` (token ids, e.g. from
    /// [`Engine::encode`]), calling `on_event` for every token; returning
    /// `ControlFlow::Break` from it stops generation like a cancellation.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        on_event: &mut dyn FnMut(StreamEvent<'_>) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let mut all = self.generate_parallel(prompt, 1, options, &mut |_, ev| on_event(ev))?;
        Ok(all.pop().expect("one sequence"))
    }

    /// Generates `n` continuations of one prompt together: the prompt is
    /// computed once, each sequence starts from a copy of its keys and
    /// values, and every step runs all unfinished sequences in one forward
    /// pass (the weights are read once per step for all of them). Sequence
    /// `i` samples with seed `options.sampler.seed + i`. `on_event` gets the
    /// sequence index; `ControlFlow::Break` stops that sequence only.
    /// Memory for all `n` caches is checked against the budget first.
    pub fn generate_parallel(
        &mut self,
        prompt: &[u32],
        n: usize,
        options: &GenerateOptions,
        on_event: &mut dyn FnMut(usize, StreamEvent<'_>) -> ControlFlow<()>,
    ) -> Result<Vec<Generation>> {
        if prompt.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        if options.max_tokens == 0 {
            return Err(Error::ZeroMaxTokens);
        }
        if n == 0 || n > MAX_PARALLEL {
            return Err(Error::Invalid(format!(
                "number of parallel sequences {n} is out of range (1 to {MAX_PARALLEL})"
            )));
        }
        self.check_context(prompt.len(), options.max_tokens)?;
        options.sampler.validate()?;
        if let Some(s) = options.stop_strings.iter().find(|s| s.is_empty()) {
            return Err(Error::Invalid(format!("stop string {s:?} is empty")));
        }
        let positions = prompt.len() + options.max_tokens;
        if n == 1 {
            self.ensure_room(positions)?;
        } else {
            // The session keeps the prompt; each sequence gets its own cache.
            self.engine.check_memory(prompt.len() + n * positions)?;
            self.state.reserve(0, prompt.len())?;
        }

        // Reuse the cached prefix; at least one prompt token is recomputed
        // so that its logits are available.
        let t0 = Instant::now();
        let keep = self.extend_to(prompt)?;
        let prefill_secs = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let vocab = self.engine.model().config().vocab_size;
        let tokenizer = self.engine.tokenizer();
        let stop_ids = if options.ignore_eos {
            Vec::new()
        } else {
            tokenizer.stop_ids()
        };
        let mut seqs = (0..n)
            .map(|i| {
                let sampler = Sampler::new(SamplerConfig {
                    seed: options.sampler.seed.wrapping_add(i as u64),
                    ..options.sampler.clone()
                })?;
                Ok(SeqState {
                    sampler,
                    stream: TokenStream::new(tokenizer, true),
                    stops: StopStrings::new(&options.stop_strings),
                    history: prompt.to_vec(),
                    choices: Vec::new(),
                    end: None,
                    finish: None,
                    decode_secs: 0.0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Sequence i decodes in slot 0 when alone, else in slot i + 1,
        // starting from a copy of the prompt's keys and values.
        let slot = |i: usize| if n == 1 { 0 } else { i + 1 };
        let decoded = (|| -> Result<()> {
            if n > 1 {
                for i in 0..n {
                    self.state.fork(0, slot(i), prompt.len(), positions)?;
                }
            }
            // All sequences start from the prompt's logits.
            let first = self.logits[..vocab].to_vec();
            let mut rows: Vec<usize> = (0..n).collect();
            let mut step = 0;
            loop {
                let cancelled = options.cancel.as_ref().is_some_and(|c| c.is_cancelled());
                for (r, &i) in rows.iter().enumerate() {
                    let seq = &mut seqs[i];
                    if cancelled {
                        seq.finish = Some(FinishReason::Cancelled);
                    } else {
                        let logits = if step == 0 {
                            &first[..]
                        } else {
                            &self.logits[r * vocab..(r + 1) * vocab]
                        };
                        seq.step(logits, &stop_ids, options.max_tokens, &mut |ev| {
                            on_event(i, ev)
                        })?;
                    }
                    if seq.finish.is_some() {
                        seq.decode_secs = t1.elapsed().as_secs_f64();
                    }
                }
                rows.retain(|&i| seqs[i].finish.is_none());
                if rows.is_empty() {
                    return Ok(());
                }
                self.batch.clear();
                self.batch.extend(rows.iter().map(|&i| {
                    let s = &seqs[i];
                    BatchToken {
                        token: s
                            .choices
                            .last()
                            .expect("a running sequence has sampled")
                            .token,
                        pos: s.history.len() - 1,
                        seq: slot(i),
                    }
                }));
                self.rows.clear();
                self.rows.extend(0..rows.len());
                self.passes += 1;
                self.state
                    .forward(&self.batch, &self.rows, &mut self.logits)?;
                step += 1;
            }
        })();
        if n == 1 {
            // Keep the conversation's cache for the next prompt.
            let fed = self.state.len(0).min(seqs[0].history.len());
            self.tokens = seqs[0].history[..fed].to_vec();
        } else {
            for i in 0..n {
                self.state.release(slot(i));
            }
        }
        decoded?;
        let mut out = Vec::with_capacity(n);
        for (i, mut seq) in seqs.into_iter().enumerate() {
            let finish = seq.finish.expect("every sequence finished");
            if finish != FinishReason::StopString {
                let tail = seq.stream.finish();
                let (emit, _) = seq.stops.push(&tail);
                let text = format!("{emit}{}", seq.stops.flush());
                if let (false, Some(last)) = (text.is_empty(), seq.choices.last()) {
                    let _ = on_event(
                        i,
                        StreamEvent {
                            token: last,
                            text: &text,
                        },
                    );
                }
            }
            out.push(Generation {
                text: seq.stops.into_text(),
                timings: Timings {
                    prompt_tokens: prompt.len(),
                    cached_tokens: keep,
                    prefill_secs,
                    generated_tokens: seq.choices.len(),
                    decode_secs: seq.decode_secs,
                },
                tokens: seq.choices,
                end: seq.end,
                finish_reason: finish,
            });
        }
        Ok(out)
    }
}

/// Most sequences generated together.
pub const MAX_PARALLEL: usize = 256;

/// One sequence's progress during generation.
struct SeqState<'a> {
    sampler: Sampler,
    stream: TokenStream,
    stops: StopStrings<'a>,
    /// Prompt and generated tokens (for the repetition penalty and positions).
    history: Vec<u32>,
    choices: Vec<TokenChoice>,
    /// The end-of-turn token, once chosen.
    end: Option<TokenChoice>,
    finish: Option<FinishReason>,
    decode_secs: f64,
}

impl SeqState<'_> {
    /// Samples the next token from `logits`, streams its text and decides
    /// whether the sequence is finished.
    fn step(
        &mut self,
        logits: &[f32],
        stop_ids: &[u32],
        max_tokens: usize,
        on_event: &mut dyn FnMut(StreamEvent<'_>) -> ControlFlow<()>,
    ) -> Result<()> {
        let choice = self.sampler.sample(logits, &self.history);
        if stop_ids.contains(&choice.token) {
            self.end = Some(choice);
            self.finish = Some(FinishReason::Stop);
            return Ok(());
        }
        self.history.push(choice.token);
        let delta = self.stream.push(choice.token)?;
        let (emit, hit) = self.stops.push(&delta);
        self.choices.push(choice);
        let flow = on_event(StreamEvent {
            token: self.choices.last().expect("just pushed"),
            text: &emit,
        });
        self.finish = if hit {
            Some(FinishReason::StopString)
        } else if flow.is_break() {
            Some(FinishReason::Cancelled)
        } else if self.choices.len() == max_tokens {
            Some(FinishReason::Length)
        } else {
            None
        };
        Ok(())
    }
}

/// Holds back text that may be the start of a stop string and cuts the
/// output at the first complete one.
struct StopStrings<'a> {
    stops: &'a [String],
    text: String,
    emitted: usize,
    done: bool,
}

impl<'a> StopStrings<'a> {
    fn new(stops: &'a [String]) -> Self {
        StopStrings {
            stops,
            text: String::new(),
            emitted: 0,
            done: false,
        }
    }

    /// Adds text; returns what can be shown now and whether a stop string was hit.
    fn push(&mut self, delta: &str) -> (String, bool) {
        if self.done {
            return (String::new(), true);
        }
        let search_from = self.emitted;
        self.text.push_str(delta);
        let hit = self
            .stops
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|i| search_from + i)
            })
            .min();
        if let Some(at) = hit {
            self.text.truncate(at);
            self.done = true;
            let out = self.text[self.emitted..].to_string();
            self.emitted = at;
            return (out, true);
        }
        // Emit up to the longest suffix that could still begin a stop string.
        let mut safe = self.text.len();
        for s in self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if self.text.ends_with(&s[..i]) {
                    safe = safe.min(self.text.len() - i);
                }
            }
        }
        let safe = safe.max(self.emitted);
        let out = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        (out, false)
    }

    /// Everything not yet shown (at the end of generation).
    fn flush(&mut self) -> String {
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }

    fn into_text(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::StopStrings;

    #[test]
    fn stop_strings_hold_back_prefixes_and_cut_at_the_first_hit() {
        let stops = vec!["</end>".to_string(), "STOP".to_string()];
        let mut s = StopStrings::new(&stops);
        assert_eq!(s.push("hello </"), ("hello ".to_string(), false));
        assert_eq!(s.push("e"), (String::new(), false));
        assert_eq!(s.push("x> ok ST"), ("</ex> ok ".to_string(), false));
        assert_eq!(s.push("OP and more"), (String::new(), true));
        assert_eq!(s.into_text(), "hello </ex> ok ");
    }

    #[test]
    fn without_stop_strings_everything_streams() {
        let mut s = StopStrings::new(&[]);
        assert_eq!(s.push("ab"), ("ab".to_string(), false));
        assert_eq!(s.flush(), "");
        assert_eq!(s.into_text(), "ab");
    }
}
