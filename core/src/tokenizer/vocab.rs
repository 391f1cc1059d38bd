//! The validated vocabulary: token texts and types, special ids, the bytes
//! each token decodes to, and the special-token partition of the input
//! (llama.cpp's `tokenizer_st_partition`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

use super::{ModelKind, Result, TokenType, TokenizerError, TokenizerSpec};
use crate::gguf::StringArray;

/// Texts that llama.cpp treats as end-of-generation tokens; it also forces
/// them to control type whatever the file says (`llama_vocab::impl::load`).
pub(crate) const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// End-of-turn texts, in the priority order used to pick [`Vocab::eot`] when
/// `tokenizer.ggml.eot_token_id` is absent.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// Fill-in-the-middle texts that llama.cpp also forces to control type.
const FIM_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
];

/// FxHash (rustc's hash function): much faster than SipHash on the short
/// strings of a vocabulary. The maps using it are built once from the model
/// file and only read afterwards, so hash flooding is not a concern.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A `HashMap` with [`FxHasher`].
pub(crate) type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Token text → id over the vocabulary's own texts: the table holds only
/// ids (a quarter of the memory of a map keyed by copies of the texts,
/// which also had to be allocated one by one at every load).
#[derive(Default)]
struct TokenIndex {
    table: hashbrown::HashTable<u32>,
}

impl TokenIndex {
    fn hash(text: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&BuildHasherDefault::<FxHasher>::default(), text)
    }

    fn with_capacity(n: usize) -> Self {
        Self {
            table: hashbrown::HashTable::with_capacity(n),
        }
    }

    /// The id of `text` among `tokens`, the texts the ids were indexed by.
    fn get(&self, tokens: &StringArray, text: &str) -> Option<u32> {
        self.table
            .find(Self::hash(text), |&id| &tokens[id as usize] == text)
            .copied()
    }

    /// Indexes `tokens[id]`; when an earlier id has the same text, returns
    /// that id instead.
    fn insert(&mut self, tokens: &StringArray, id: u32) -> std::result::Result<(), u32> {
        let text = &tokens[id as usize];
        let hasher = |&i: &u32| Self::hash(&tokens[i as usize]);
        match self
            .table
            .entry(Self::hash(text), |&i| tokens[i as usize] == *text, hasher)
        {
            hashbrown::hash_table::Entry::Occupied(e) => Err(*e.get()),
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(id);
                Ok(())
            }
        }
    }
}

/// The bytes each token decodes to, back to back, and where each ends.
struct Pieces {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Pieces {
    /// The bytes of token `id` (which the caller has range-checked).
    fn get(&self, id: usize) -> &[u8] {
        let start = if id == 0 { 0 } else { self.ends[id - 1] };
        &self.bytes[start..self.ends[id]]
    }
}

/// A piece of input text and whether control tokens written in it may be
/// recognized.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment<'a> {
    pub text: &'a str,
    pub trusted: bool,
}

impl<'a> Segment<'a> {
    pub fn plain(text: &'a str) -> Self {
        Segment {
            text,
            trusted: false,
        }
    }

    pub fn trusted(text: &'a str) -> Self {
        Segment {
            text,
            trusted: true,
        }
    }
}

/// Joins segments into one string and returns the byte ranges of the trusted
/// ones (sorted, disjoint).
pub(crate) fn join_segments<'a>(segments: &[Segment<'a>]) -> (Cow<'a, str>, Vec<Range<usize>>) {
    let mut trusted = Vec::new();
    if let [one] = segments {
        if one.trusted && !one.text.is_empty() {
            trusted.push(0..one.text.len());
        }
        return (Cow::Borrowed(one.text), trusted);
    }
    let mut text = String::with_capacity(segments.iter().map(|s| s.text.len()).sum());
    for seg in segments {
        let start = text.len();
        text.push_str(seg.text);
        if seg.trusted && !seg.text.is_empty() {
            // Adjacent trusted segments are merged so that a control token
            // split across them is still recognized.
            match trusted.last_mut() {
                Some(last) if last.end == start => last.end = text.len(),
                _ => trusted.push(start..text.len()),
            }
        }
    }
    (Cow::Owned(text), trusted)
}

/// Output of [`Vocab::partition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fragment {
    /// Text to run through the model.
    Text(Range<usize>),
    /// A special or user-defined token matched as a whole.
    Token(u32),
}

/// Validated token table.
pub(crate) struct Vocab {
    tokens: StringArray,
    types: Vec<TokenType>,
    scores: Option<Vec<f32>>,
    token_to_id: TokenIndex,
    /// The bytes each token decodes to (for control tokens: their text,
    /// emitted only when special tokens are not skipped).
    pieces: Pieces,
    /// For `"gpt2"`: the validated merges as id pairs, in priority order.
    pub merges: Vec<(u32, u32)>,
    /// Lengths (ascending) of the special/user-defined token texts, by first byte.
    special_lens: Vec<Vec<usize>>,
    /// Two-byte prefixes of special/user-defined texts of length >= 2.
    special_pairs: Vec<bool>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub eot: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    stop: Vec<u32>,
}

/// Parses a byte token's text `<0xHH>` (two upper-case hex digits, as
/// llama.cpp's `byte_to_token` and the `tokenizers` byte fallback write it).
pub(crate) fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// GPT-2's byte-to-unicode table, inverted: the byte each byte-level
/// character stands for.
fn byte_level_inverse() -> ByteLevelInverse {
    let mut table = [None; BYTE_LEVEL_CHARS];
    let mut n = 0usize;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            b as usize
        } else {
            n += 1;
            255 + n
        };
        table[c] = Some(b);
    }
    ByteLevelInverse(table)
}

/// Code points GPT-2's byte-to-character mapping uses: below U+0144.
const BYTE_LEVEL_CHARS: usize = 0x144;

/// GPT-2's character → byte mapping, as a table by code point.
struct ByteLevelInverse([Option<u8>; BYTE_LEVEL_CHARS]);

impl ByteLevelInverse {
    fn get(&self, c: &char) -> Option<&u8> {
        self.0.get(*c as usize).and_then(Option::as_ref)
    }
}

impl Vocab {
    /// Validates `spec` and builds the token table. Every inconsistency is an
    /// error naming the GGUF key and index; nothing here panics on bad input.
    pub fn from_spec(spec: &TokenizerSpec, kind: ModelKind) -> Result<Vocab> {
        let n = spec.tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if n > u32::MAX as usize {
            // Ids are u32; such a file cannot be meant seriously.
            return Err(TokenizerError::LengthMismatch {
                key: "tokenizer.ggml.tokens (ids are 32-bit)",
                len: n,
                expected: u32::MAX as usize,
            });
        }
        if let Some(scores) = &spec.scores {
            if scores.len() != n {
                return Err(TokenizerError::LengthMismatch {
                    key: "tokenizer.ggml.scores",
                    len: scores.len(),
                    expected: n,
                });
            }
            if let Some(i) = scores.iter().position(|s| s.is_nan()) {
                return Err(TokenizerError::InvalidScore {
                    score: scores[i],
                    index: i,
                    token: spec.tokens[i].to_string(),
                });
            }
        }
        if let Some(types) = &spec.token_types {
            if types.len() != n {
                return Err(TokenizerError::LengthMismatch {
                    key: "tokenizer.ggml.token_type",
                    len: types.len(),
                    expected: n,
                });
            }
        }

        // Token texts. Like llama.cpp, an empty text becomes "[EMPTY_<id>]";
        // a duplicate text is an error (llama.cpp asserts on it), because the
        // text -> id map would silently lose one of the ids.
        let tokens = if spec.tokens.iter().any(str::is_empty) {
            spec.tokens
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    if t.is_empty() {
                        log::warn!("tokenizer.ggml.tokens[{i}] is empty; renamed to [EMPTY_{i}]");
                        format!("[EMPTY_{i}]")
                    } else {
                        t.to_string()
                    }
                })
                .collect()
        } else {
            spec.tokens.clone()
        };
        let mut token_to_id = TokenIndex::with_capacity(n);
        for i in 0..n as u32 {
            if let Err(first) = token_to_id.insert(&tokens, i) {
                return Err(TokenizerError::DuplicateToken {
                    token: tokens[i as usize].to_string(),
                    index: i as usize,
                    first: first as usize,
                });
            }
        }

        // Token types.
        let mut types = Vec::with_capacity(n);
        match &spec.token_types {
            Some(raw) => {
                for (i, &ty) in raw.iter().enumerate() {
                    let t = TokenType::from_i32(ty).ok_or_else(|| {
                        TokenizerError::InvalidTokenType {
                            ty,
                            index: i,
                            token: tokens[i].to_string(),
                        }
                    })?;
                    types.push(t);
                }
            }
            None => {
                // llama.cpp treats every token as normal then. For SentencePiece
                // vocabularies we still recognize <0xHH> texts as byte tokens,
                // otherwise byte fallback could not decode.
                for t in tokens.iter() {
                    let byte = kind == ModelKind::Llama && parse_byte_token(t).is_some();
                    types.push(if byte {
                        TokenType::Byte
                    } else {
                        TokenType::Normal
                    });
                }
            }
        }
        for (i, t) in tokens.iter().enumerate() {
            if types[i] == TokenType::Byte && parse_byte_token(t).is_none() {
                return Err(TokenizerError::MalformedByteToken {
                    token: t.to_string(),
                    index: i,
                });
            }
        }

        // Special ids must be in range (llama.cpp only warns and falls back
        // to defaults; a wrong id here would silently corrupt prompts).
        let check = |key: &'static str, id: Option<u32>| -> Result<Option<u32>> {
            match id {
                Some(id) if id as usize >= n => Err(TokenizerError::SpecialIdOutOfRange {
                    key,
                    id,
                    vocab_size: n,
                }),
                other => Ok(other),
            }
        };
        let bos = check("tokenizer.ggml.bos_token_id", spec.bos_id)?;
        let eos = check("tokenizer.ggml.eos_token_id", spec.eos_id)?;
        let unk = check("tokenizer.ggml.unknown_token_id", spec.unk_id)?;
        let pad = check("tokenizer.ggml.padding_token_id", spec.pad_id)?;
        let eot_given = check("tokenizer.ggml.eot_token_id", spec.eot_id)?;

        // Merges: only byte-level BPE uses them (llama.cpp ignores merges for
        // SentencePiece vocabularies, and so do we).
        let mut merges = Vec::new();
        if kind == ModelKind::Gpt2 {
            let raw = spec.merges.as_ref().ok_or(TokenizerError::MissingMerges)?;
            merges.reserve(raw.len());
            for (i, m) in raw.iter().enumerate() {
                let malformed = || TokenizerError::MalformedMerge {
                    merge: m.to_string(),
                    index: i,
                };
                let (l, r) = m.split_once(' ').ok_or_else(malformed)?;
                if l.is_empty() || r.is_empty() || r.contains(' ') {
                    return Err(malformed());
                }
                let lookup = |side: &str| {
                    token_to_id.get(&tokens, side).ok_or_else(|| {
                        TokenizerError::UnknownMergeToken {
                            merge: m.to_string(),
                            index: i,
                            token: side.to_string(),
                        }
                    })
                };
                merges.push((lookup(l)?, lookup(r)?));
            }
        } else if spec.merges.as_ref().is_some_and(|m| !m.is_empty()) {
            log::info!("tokenizer.ggml.merges ignored for model \"llama\" (merges are rebuilt from scores)");
        }

        // Like llama.cpp, force the well-known end-of-generation and FIM
        // texts to control type: they are then never matched in plain text.
        // Remember which were typed user-defined in the file: those are not
        // stop tokens for us (Gemma 3's "</s>" is the HTML strikethrough tag).
        let mut stop = Vec::new();
        for &text in EOG_TEXTS.iter().chain(FIM_TEXTS) {
            if let Some(id) = token_to_id.get(&tokens, text) {
                let ty = &mut types[id as usize];
                let eog = EOG_TEXTS.contains(&text);
                if eog && *ty != TokenType::UserDefined && *ty != TokenType::Unused {
                    stop.push(id);
                }
                if matches!(
                    *ty,
                    TokenType::Normal | TokenType::UserDefined | TokenType::Undefined
                ) {
                    *ty = TokenType::Control;
                }
            }
        }
        let eot = eot_given.or_else(|| EOT_TEXTS.iter().find_map(|t| token_to_id.get(&tokens, t)));
        stop.extend(eos);
        stop.extend(eot);
        stop.sort_unstable();
        stop.dedup();

        let pieces = Self::pieces(kind, &tokens, &types);

        // Special-token matcher tables.
        let mut special_lens = vec![Vec::new(); 256];
        let mut special_pairs = vec![false; 1 << 16];
        for (i, t) in tokens.iter().enumerate() {
            if !matches!(
                types[i],
                TokenType::Control | TokenType::Unknown | TokenType::UserDefined
            ) {
                continue;
            }
            let b = t.as_bytes();
            let lens: &mut Vec<usize> = &mut special_lens[b[0] as usize];
            if !lens.contains(&b.len()) {
                lens.push(b.len());
            }
            if b.len() >= 2 {
                special_pairs[(b[0] as usize) << 8 | b[1] as usize] = true;
            }
        }
        for lens in &mut special_lens {
            lens.sort_unstable();
        }

        Ok(Vocab {
            tokens,
            types,
            scores: spec.scores.clone(),
            token_to_id,
            pieces,
            merges,
            special_lens,
            special_pairs,
            bos,
            eos,
            unk,
            pad,
            eot,
            add_bos: spec.add_bos,
            add_eos: spec.add_eos,
            add_space_prefix: spec.add_space_prefix,
            stop,
        })
    }

    /// What each token decodes to, following llama.cpp's `token_to_piece`.
    fn pieces(kind: ModelKind, tokens: &StringArray, types: &[TokenType]) -> Pieces {
        let inverse = (kind == ModelKind::Gpt2).then(byte_level_inverse);
        let mut pieces = Pieces {
            bytes: Vec::with_capacity(tokens.iter().map(str::len).sum()),
            ends: Vec::with_capacity(tokens.len()),
        };
        for (t, ty) in tokens.iter().zip(types) {
            let out = &mut pieces.bytes;
            match ty {
                TokenType::Control | TokenType::Unknown | TokenType::UserDefined => {
                    out.extend_from_slice(t.as_bytes())
                }
                TokenType::Byte => out.push(parse_byte_token(t).unwrap_or(0)),
                TokenType::Unused | TokenType::Undefined => {}
                TokenType::Normal => match &inverse {
                    Some(inv) => {
                        for c in t.chars() {
                            match inv.get(&c) {
                                Some(&b) => out.push(b),
                                // llama.cpp writes "[UNK_BYTE_..]" here; we
                                // keep the character itself, which is what
                                // such (malformed) vocabularies mean.
                                None => {
                                    let mut buf = [0u8; 4];
                                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                                }
                            }
                        }
                    }
                    None => {
                        for (k, part) in t.split('\u{2581}').enumerate() {
                            if k > 0 {
                                out.push(b' ');
                            }
                            out.extend_from_slice(part.as_bytes());
                        }
                    }
                },
            }
            pieces.ends.push(out.len());
        }
        pieces
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize)
    }

    pub fn tokens(&self) -> &StringArray {
        &self.tokens
    }

    pub fn id_of(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(&self.tokens, text)
    }

    pub fn ty(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// Whether `id` is a control or unknown token, which text never spells.
    pub fn is_special(&self, id: u32) -> bool {
        self.ty(id).is_some_and(TokenType::is_special)
    }

    pub fn types(&self) -> &[TokenType] {
        &self.types
    }

    pub fn scores(&self) -> Option<&[f32]> {
        self.scores.as_deref()
    }

    pub fn stop_ids(&self) -> Vec<u32> {
        self.stop.clone()
    }

    /// Appends the bytes of token `id` to `out`. `strip_space` implements
    /// llama.cpp's removal of the space prefix: while set, one leading space
    /// is removed from the first non-empty piece, and it is then cleared.
    pub fn append_piece(
        &self,
        id: u32,
        skip_special: bool,
        strip_space: &mut bool,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let ty = self.ty(id).ok_or(TokenizerError::IdOutOfRange {
            id,
            vocab_size: self.len(),
        })?;
        if skip_special && ty.is_special() {
            return Ok(());
        }
        let mut piece = self.pieces.get(id as usize);
        if piece.is_empty() {
            return Ok(());
        }
        if std::mem::take(strip_space) && piece[0] == b' ' {
            piece = &piece[1..];
        }
        out.extend_from_slice(piece);
        Ok(())
    }

    /// Splits `text` into model text and whole tokens, as llama.cpp's
    /// `tokenizer_st_partition`: special texts are taken in order of
    /// decreasing length, each one's occurrences left to right, skipping
    /// occurrences that overlap an earlier match. User-defined tokens match
    /// anywhere; control and unknown tokens only inside a `trusted` range.
    pub fn partition(&self, text: &str, trusted: &[Range<usize>]) -> Vec<Fragment> {
        let bytes = text.as_bytes();
        let n = bytes.len();
        if n == 0 {
            return Vec::new();
        }
        let is_trusted = |start: usize, end: usize| {
            let k = trusted.partition_point(|r| r.start <= start);
            k > 0 && trusted[k - 1].end >= end
        };

        // Every occurrence of every eligible special text: (len, id, pos).
        let mut found: Vec<(usize, u32, usize)> = Vec::new();
        for i in 0..n {
            let lens = &self.special_lens[bytes[i] as usize];
            if lens.is_empty() || !text.is_char_boundary(i) {
                continue;
            }
            let pair_ok =
                i + 1 < n && self.special_pairs[(bytes[i] as usize) << 8 | bytes[i + 1] as usize];
            for &len in lens {
                let end = i + len;
                if end > n {
                    break;
                }
                if len >= 2 && !pair_ok {
                    break;
                }
                if !text.is_char_boundary(end) {
                    continue;
                }
                let Some(id) = self.token_to_id.get(&self.tokens, &text[i..end]) else {
                    continue;
                };
                let eligible = match self.types[id as usize] {
                    TokenType::UserDefined => true,
                    TokenType::Control | TokenType::Unknown => is_trusted(i, end),
                    _ => false,
                };
                if eligible {
                    found.push((len, id, i));
                }
            }
        }
        if found.is_empty() {
            return vec![Fragment::Text(0..n)];
        }
        found.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut covered = vec![false; n];
        let mut accepted: Vec<(usize, usize, u32)> = Vec::new();
        for (len, id, pos) in found {
            let span = &mut covered[pos..pos + len];
            if span.iter().any(|&c| c) {
                continue;
            }
            span.fill(true);
            accepted.push((pos, len, id));
        }
        accepted.sort_unstable();
        let mut out = Vec::with_capacity(accepted.len() * 2 + 1);
        let mut at = 0;
        for (pos, len, id) in accepted {
            if pos > at {
                out.push(Fragment::Text(at..pos));
            }
            out.push(Fragment::Token(id));
            at = pos + len;
        }
        if at < n {
            out.push(Fragment::Text(at..n));
        }
        out
    }
}
