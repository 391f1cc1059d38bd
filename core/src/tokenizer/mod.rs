//! Tokenizer and chat-template layer.
//!
//! Builds a text tokenizer from the `tokenizer.ggml.*` metadata of a GGUF file
//! (given here as a plain [`TokenizerSpec`], so this module does not depend on
//! the GGUF reader) and reproduces llama.cpp's tokenization id for id.
//!
//! Two vocabulary families are supported:
//!
//! * `"gpt2"`: byte-level BPE with explicit merges (SmolLM2, Llama 3, Qwen...).
//!   The pre-tokenizer regexes are chosen from `tokenizer.ggml.pre` exactly as
//!   llama.cpp does (see [`bpe`]).
//! * `"llama"`: SentencePiece-style vocabularies with scores and byte fallback
//!   (Gemma, Llama 2...). GGUF stores no merges for them; adjacent symbols
//!   are merged by the score of the token they form, as llama.cpp does (see
//!   [`spm`]).
//!
//! `tokenizers` does the regex pre-tokenization of byte-level vocabularies;
//! the merging is this module's own, over token ids. Special tokens are
//! split out first (`Vocab::partition`, llama.cpp's `tokenizer_st_partition`)
//! so that this module can decide, per region of the input, whether control
//! tokens may be recognized. That is what makes [`Tokenizer::encode`] safe
//! against prompt injection: text written by a user can never produce a
//! control id such as `<|im_start|>` or `<start_of_turn>`. Neither merging
//! can produce a control token either.
//!
//! Token types follow llama.cpp's `llama_token_type`: control (3) and unknown
//! (2) tokens are only recognized in trusted text
//! ([`Tokenizer::encode_with_special`]); user-defined (4) tokens are always
//! recognized as whole pieces before the model runs (this is what llama.cpp
//! does with `parse_special = false`, and Gemma relies on it for its `\n`,
//! space-run and tab-run tokens).
//!
//! Verified against llama.cpp (commit 0c1e570): id-exact on all 297 golden
//! strings of `tests/golden/*/tokenizer.json` for SmolLM2 and Gemma 3, and on
//! 3067 random strings, both with and without special-token parsing.
//!
//! Where this module deliberately differs from llama.cpp:
//!
//! * A control token is never assembled from plain text by merges (llama.cpp's
//!   SentencePiece merging could in principle; no such chain exists in
//!   Gemma 3's vocabulary, so ids are unaffected).
//! * Invalid metadata is an error instead of a warning or an abort: duplicate
//!   token texts (llama.cpp asserts), special ids out of range (llama.cpp
//!   falls back to defaults), malformed byte tokens or merges. Empty token
//!   texts are renamed `[EMPTY_<id>]` exactly as llama.cpp does.
//! * Like llama.cpp, the well-known end-of-generation and fill-in-the-middle
//!   texts (`<|im_end|>`, `<end_of_turn>`, `</s>`, `<|fim_prefix|>`...) are
//!   forced to control type. Unlike llama.cpp, [`Tokenizer::stop_ids`] leaves
//!   out those the file typed user-defined: Gemma 3's `</s>` is the HTML
//!   strikethrough tag, not an end of turn.
//! * Per-model attribute tweaks keyed on model names (Phi-3 `rstrip`, gpt-oss
//!   channel tokens) are not replicated.

pub mod bpe;
pub mod chat;
mod merge;
pub mod spm;
pub mod stream;
pub mod vocab;

use std::sync::Arc;

pub use chat::{
    encode_chat, encode_chat_with_thinking, strftime, ChatMessage, ChatTemplate, TemplateKind,
};
pub use stream::TokenStream;

use vocab::{Segment, Vocab};

pub use crate::gguf::StringArray;

/// The tokenizer metadata of a GGUF file, as plain data.
///
/// Field names mirror the GGUF keys given in the comments. The GGUF reader
/// fills it; nothing here reads files.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenizerSpec {
    /// `tokenizer.ggml.model`: `"gpt2"` (byte-level BPE) or `"llama"`
    /// (SentencePiece-style with scores).
    pub model: String,
    /// `tokenizer.ggml.pre`: pre-tokenizer name (`"smollm"`, `"default"`, ...).
    /// Only used by `"gpt2"` vocabularies.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: token texts, indexed by id.
    pub tokens: StringArray,
    /// `tokenizer.ggml.scores`: merge priorities for `"llama"` vocabularies.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control,
    /// 4 user-defined, 5 unused, 6 byte (0 undefined).
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`: `"left right"` pairs, highest priority first.
    pub merges: Option<StringArray>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`, if present.
    pub eot_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: bool,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: bool,
    /// `tokenizer.ggml.add_space_prefix`. Note: llama.cpp defaults this to
    /// `true` for `"llama"` vocabularies when the key is absent; the caller
    /// filling this struct must apply that default.
    pub add_space_prefix: bool,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

/// Every error of the tokenizer layer, with the GGUF key, index or token
/// involved.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// `tokenizer.ggml.model` names a vocabulary family we do not implement.
    #[error(
        "unsupported tokenizer model {model:?} (tokenizer.ggml.model); supported: {supported}"
    )]
    UnsupportedModel {
        /// The value found.
        model: String,
        /// The supported values, comma separated.
        supported: &'static str,
    },
    /// `tokenizer.ggml.pre` names a pre-tokenizer we do not know.
    #[error("unsupported pre-tokenizer {pre:?} (tokenizer.ggml.pre) for model \"gpt2\"; supported: {supported}")]
    UnsupportedPre {
        /// The value found.
        pre: String,
        /// The supported values, comma separated.
        supported: String,
    },
    /// `tokenizer.ggml.tokens` is empty.
    #[error("empty vocabulary (tokenizer.ggml.tokens has no entries)")]
    EmptyVocab,
    /// A per-token array does not have one entry per token.
    #[error("{key} has {len} entries but tokenizer.ggml.tokens has {expected}")]
    LengthMismatch {
        /// The GGUF key of the array.
        key: &'static str,
        /// Its length.
        len: usize,
        /// The number of tokens.
        expected: usize,
    },
    /// The same token text appears twice (llama.cpp aborts on this too).
    #[error(
        "duplicate token {token:?} at tokenizer.ggml.tokens[{index}] (first at index {first})"
    )]
    DuplicateToken {
        /// The token text.
        token: String,
        /// The index of the second occurrence.
        index: usize,
        /// The index of the first occurrence.
        first: usize,
    },
    /// A token type outside 0..=6.
    #[error("invalid token type {ty} at tokenizer.ggml.token_type[{index}] (token {token:?}); expected 0..=6")]
    InvalidTokenType {
        /// The type found.
        ty: i32,
        /// The token index.
        index: usize,
        /// The token text.
        token: String,
    },
    /// A byte token (type 6) whose text is not `<0xHH>`.
    #[error("malformed byte token {token:?} at tokenizer.ggml.tokens[{index}]: byte tokens (type 6) must look like <0xHH> with two upper-case hex digits")]
    MalformedByteToken {
        /// The token text.
        token: String,
        /// The token index.
        index: usize,
    },
    /// A NaN score.
    #[error("invalid score {score} at tokenizer.ggml.scores[{index}] (token {token:?})")]
    InvalidScore {
        /// The score found.
        score: f32,
        /// The token index.
        index: usize,
        /// The token text.
        token: String,
    },
    /// `tokenizer.ggml.merges` is missing for a `"gpt2"` vocabulary.
    #[error("tokenizer.ggml.merges is required for model \"gpt2\"")]
    MissingMerges,
    /// A merge entry that is not two non-empty tokens separated by one space.
    #[error("malformed merge {merge:?} at tokenizer.ggml.merges[{index}]: expected two non-empty tokens separated by exactly one space")]
    MalformedMerge {
        /// The entry.
        merge: String,
        /// Its index.
        index: usize,
    },
    /// A merge entry naming a token that is not in the vocabulary.
    #[error("merge {merge:?} at tokenizer.ggml.merges[{index}] names unknown token {token:?}")]
    UnknownMergeToken {
        /// The entry.
        merge: String,
        /// Its index.
        index: usize,
        /// The side that is not a token.
        token: String,
    },
    /// A special token id (bos, eos, ...) outside the vocabulary.
    #[error("{key} = {id} is out of range (vocabulary has {vocab_size} tokens)")]
    SpecialIdOutOfRange {
        /// The GGUF key.
        key: &'static str,
        /// The id found.
        id: u32,
        /// The number of tokens.
        vocab_size: usize,
    },
    /// A token id passed to decode/token_str is outside the vocabulary.
    #[error("token id {id} is out of range (vocabulary has {vocab_size} tokens)")]
    IdOutOfRange {
        /// The id.
        id: u32,
        /// The number of tokens.
        vocab_size: usize,
    },
    /// Text holds a character that can only be spelled with byte tokens,
    /// and the vocabulary lacks one of them (and, for SentencePiece-style
    /// vocabularies, an unknown token to stand in).
    #[error("no token for the character {ch:?} (U+{code:04X}): the vocabulary lacks a byte token it needs", code = *ch as u32)]
    NoByteToken {
        /// The character (for byte-level vocabularies, GPT-2's character
        /// for the byte).
        ch: char,
    },
    /// `encode_prompt(.., add_bos = true)` on a vocabulary without bos.
    #[error("a BOS token was requested but the vocabulary has none (tokenizer.ggml.bos_token_id)")]
    NoBos,
    /// An error reported by the `tokenizers` library.
    #[error("tokenizers library error while {context}: {message}")]
    Backend {
        /// What we were doing.
        context: &'static str,
        /// The library's message.
        message: String,
    },
    /// The chat template does not parse.
    #[error("chat template does not parse: {0}")]
    TemplateSyntax(String),
    /// The chat template failed while rendering (including running out of fuel).
    #[error("chat template render failed: {0}")]
    TemplateRender(String),
    /// A chat message with a role other than system/user/assistant/tool.
    #[error(
        "invalid role {role:?} in chat message {index}; allowed: system, user, assistant, tool"
    )]
    InvalidRole {
        /// The role found.
        role: String,
        /// The message index.
        index: usize,
    },
    /// The template did not render each message's content exactly once and
    /// unchanged, so content and template text cannot be told apart safely.
    #[error("chat template altered message content: {0}")]
    TemplateAltered(String),
}

/// Result alias of this module.
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

/// Maps a `tokenizers` error to [`TokenizerError::Backend`].
pub(crate) fn hf_err(context: &'static str) -> impl FnOnce(tokenizers::Error) -> TokenizerError {
    move |e| TokenizerError::Backend {
        context,
        message: e.to_string(),
    }
}

/// Token type, as in `tokenizer.ggml.token_type` and llama.cpp's
/// `llama_token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TokenType {
    /// 0: undefined; decodes to nothing (as in llama.cpp).
    Undefined = 0,
    /// 1: ordinary text piece.
    Normal = 1,
    /// 2: the unknown token; treated like a control token.
    Unknown = 2,
    /// 3: control token (`<bos>`, `<|im_start|>`...): only recognized in
    /// trusted text, skipped by `decode(.., skip_special = true)`.
    Control = 3,
    /// 4: user-defined piece, always matched as a whole in the input.
    UserDefined = 4,
    /// 5: unused; decodes to nothing.
    Unused = 5,
    /// 6: byte-fallback token `<0xHH>`.
    Byte = 6,
}

impl TokenType {
    fn from_i32(v: i32) -> Option<TokenType> {
        Some(match v {
            0 => TokenType::Undefined,
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => return None,
        })
    }

    /// Control or unknown: recognized only in trusted text, hidden by
    /// `skip_special` when decoding.
    pub fn is_special(self) -> bool {
        matches!(self, TokenType::Control | TokenType::Unknown)
    }
}

/// The vocabulary family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// `"gpt2"`: byte-level BPE with merges.
    Gpt2,
    /// `"llama"`: SentencePiece-style with scores and byte fallback.
    Llama,
}

impl ModelKind {
    /// Supported `tokenizer.ggml.model` values.
    pub const SUPPORTED: &'static str = "gpt2, llama";

    fn parse(model: &str) -> Result<ModelKind> {
        match model {
            "gpt2" => Ok(ModelKind::Gpt2),
            "llama" => Ok(ModelKind::Llama),
            other => Err(TokenizerError::UnsupportedModel {
                model: other.to_string(),
                supported: ModelKind::SUPPORTED,
            }),
        }
    }
}

/// A text tokenizer built from GGUF metadata.
///
/// Cheap to clone (the state is shared behind an `Arc`) and `Send + Sync`.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

struct Inner {
    kind: ModelKind,
    vocab: Vocab,
    encoder: Encoder,
    chat_template: Option<String>,
}

/// What turns plain text into ids.
enum Encoder {
    /// Byte-level BPE (`"gpt2"`): merges over ids.
    Bpe(bpe::ByteLevelBpe),
    /// SentencePiece-style vocabularies (`"llama"`): merges by score.
    Spm(spm::SpmEncoder),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.inner.kind)
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos_id())
            .field("eos", &self.eos_id())
            .finish()
    }
}

impl Tokenizer {
    /// Validates `spec` and builds the tokenizer.
    pub fn from_spec(spec: &TokenizerSpec) -> Result<Tokenizer> {
        let kind = ModelKind::parse(&spec.model)?;
        if kind == ModelKind::Gpt2 {
            return Self::byte_level(spec);
        }
        let vocab = Vocab::from_spec(spec, kind)?;
        let spm = spm::SpmEncoder::new(&vocab);
        Ok(Tokenizer::assemble(kind, vocab, Encoder::Spm(spm), spec))
    }

    /// Builds a byte-level BPE tokenizer (`"gpt2"`). Its pre-tokenizer's
    /// regular expressions compile on a second thread while the vocabulary
    /// builds on this one.
    fn byte_level(spec: &TokenizerSpec) -> Result<Tokenizer> {
        let (vocab, pre) = std::thread::scope(|scope| {
            let pre = scope.spawn(|| bpe::Splitter::new(spec.pre.as_deref()));
            let vocab = Vocab::from_spec(spec, ModelKind::Gpt2);
            let pre = pre
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (vocab, pre)
        });
        let vocab = vocab?;
        let bpe = bpe::ByteLevelBpe::new(pre?, &vocab);
        Ok(Tokenizer::assemble(
            ModelKind::Gpt2,
            vocab,
            Encoder::Bpe(bpe),
            spec,
        ))
    }

    fn assemble(
        kind: ModelKind,
        vocab: Vocab,
        encoder: Encoder,
        spec: &TokenizerSpec,
    ) -> Tokenizer {
        Tokenizer {
            inner: Arc::new(Inner {
                kind,
                vocab,
                encoder,
                chat_template: spec.chat_template.clone(),
            }),
        }
    }

    /// Encodes untrusted plain text. Control tokens written in `text`
    /// (`<|im_start|>`, `<bos>`...) are tokenized as ordinary text, never as
    /// their special ids. Adds no BOS/EOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_segments(&[Segment::plain(text)])
    }

    /// Encodes trusted text (e.g. template output) in which control tokens
    /// written literally are recognized. Adds no BOS/EOS.
    pub fn encode_with_special(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_segments(&[Segment::trusted(text)])
    }

    /// Encodes untrusted plain text as a whole prompt, prepending BOS when
    /// `add_bos` is set (pass [`Tokenizer::add_bos`] for the model's default).
    pub fn encode_prompt(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if add_bos {
            ids.push(self.bos_id().ok_or(TokenizerError::NoBos)?);
        }
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// Encodes the concatenation of `segments` as one text; control tokens are
    /// recognized only where they lie entirely inside a trusted segment.
    /// Tokenization runs across segment boundaries exactly as on the joined
    /// string, so the result equals llama.cpp's tokenization of the joined
    /// text wherever untrusted segments contain no control-token text.
    pub(crate) fn encode_segments(&self, segments: &[Segment<'_>]) -> Result<Vec<u32>> {
        let inner = &*self.inner;
        let (text, trusted) = vocab::join_segments(segments);
        let fragments = inner.vocab.partition(&text, &trusted);
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        // llama.cpp prefixes a space to every text fragment that starts the
        // input or follows a special token, when add_space_prefix is set.
        let mut prev_special = true;
        let mut buf = String::new();
        for frag in fragments {
            match frag {
                vocab::Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                vocab::Fragment::Text(range) => {
                    let piece = &text[range];
                    let piece = if inner.vocab.add_space_prefix && prev_special {
                        buf.clear();
                        buf.push(' ');
                        buf.push_str(piece);
                        buf.as_str()
                    } else {
                        piece
                    };
                    match &inner.encoder {
                        Encoder::Bpe(bpe) => bpe.encode(&inner.vocab, piece, &mut out)?,
                        Encoder::Spm(spm) => spm.encode(&inner.vocab, piece, &mut out)?,
                    }
                    prev_special = false;
                }
            }
        }
        Ok(out)
    }

    /// Decodes ids to text, as llama.cpp's `token_to_piece`: with
    /// `skip_special`, control and unknown tokens produce nothing, otherwise
    /// their literal text; user-defined tokens are always their text; unused
    /// tokens produce nothing. Invalid UTF-8 (from byte tokens) becomes
    /// U+FFFD. With `add_space_prefix`, one leading space is removed from the
    /// first piece that produces text.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        let mut strip_space = self.inner.vocab.add_space_prefix;
        for &id in ids {
            self.inner
                .vocab
                .append_piece(id, skip_special, &mut strip_space, &mut bytes)?;
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A streaming detokenizer over this tokenizer; see [`TokenStream`].
    pub fn stream(&self, skip_special: bool) -> TokenStream {
        TokenStream::new(self, skip_special)
    }

    /// The vocabulary family.
    pub fn kind(&self) -> ModelKind {
        self.inner.kind
    }

    /// BOS id (`tokenizer.ggml.bos_token_id`).
    pub fn bos_id(&self) -> Option<u32> {
        self.inner.vocab.bos
    }

    /// EOS id (`tokenizer.ggml.eos_token_id`).
    pub fn eos_id(&self) -> Option<u32> {
        self.inner.vocab.eos
    }

    /// End-of-turn id: `tokenizer.ggml.eot_token_id`, else the first of
    /// llama.cpp's well-known end-of-turn texts (`<|eot_id|>`, `<|im_end|>`,
    /// `<|end|>`, `<end_of_turn>`, `<|endoftext|>`, ...) present.
    pub fn eot_id(&self) -> Option<u32> {
        self.inner.vocab.eot
    }

    /// Unknown-token id (`tokenizer.ggml.unknown_token_id`).
    pub fn unk_id(&self) -> Option<u32> {
        self.inner.vocab.unk
    }

    /// Padding id (`tokenizer.ggml.padding_token_id`).
    pub fn pad_id(&self) -> Option<u32> {
        self.inner.vocab.pad
    }

    /// Whether prompts should start with BOS (`tokenizer.ggml.add_bos_token`).
    pub fn add_bos(&self) -> bool {
        self.inner.vocab.add_bos
    }

    /// Whether prompts should end with EOS (`tokenizer.ggml.add_eos_token`).
    pub fn add_eos(&self) -> bool {
        self.inner.vocab.add_eos
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.vocab.len()
    }

    /// The stored text of token `id` (as in the GGUF file, e.g. `Ġthe` or
    /// `▁the`), or `None` when out of range.
    pub fn token_str(&self, id: u32) -> Option<&str> {
        self.inner.vocab.token(id)
    }

    /// The id of the token whose stored text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.vocab.id_of(text)
    }

    /// The token's type, or `None` when out of range.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.inner.vocab.ty(id)
    }

    /// Whether `id` is a control (or unknown) token.
    pub fn is_control(&self, id: u32) -> bool {
        self.inner.vocab.is_special(id)
    }

    /// The ids that end generation: EOS, EOT and every token named
    /// `<|im_end|>`, `<end_of_turn>`, `<|endoftext|>`, `<|eot_id|>`, `<|end|>`,
    /// `<|eom_id|>`, `<|end_of_text|>`... (llama.cpp's end-of-generation list)
    /// unless the file types it user-defined. Sorted, without duplicates.
    /// SmolLM2: `[0, 2]`; Gemma 3: `[1, 106]`.
    pub fn stop_ids(&self) -> Vec<u32> {
        self.inner.vocab.stop_ids()
    }

    /// The chat template stored in the GGUF file, if any.
    pub fn chat_template_source(&self) -> Option<&str> {
        self.inner.chat_template.as_deref()
    }

    pub(crate) fn vocab(&self) -> &Vocab {
        &self.inner.vocab
    }
}

#[cfg(test)]
mod tests;
