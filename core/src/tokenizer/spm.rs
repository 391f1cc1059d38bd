//! SentencePiece-style vocabularies (`tokenizer.ggml.model = "llama"`).
//!
//! As llama.cpp's `llm_tokenizer_spm`: the text, with spaces written as
//! `'▁'`, starts as one symbol per character; the adjacent pair whose
//! concatenation is the vocabulary token with the highest score (ties: the
//! leftmost) is merged, again and again, until no pair forms a token. Each
//! symbol left is then its token, or, if it is none, its bytes as byte
//! tokens (`<0xHH>`). Nothing is built at load beyond the byte-token table:
//! the merge candidates are looked up in the vocabulary as they arise.
//!
//! Only normal (and unused/undefined) tokens can be merge results, and a
//! lone character that spells a control token falls back to bytes: llama.cpp
//! could in principle assemble a control token from plain text, which would
//! defeat prompt-injection safety; on Gemma 3 no such chain exists (checked
//! for `<bos>`, `<start_of_turn>`, `<0x41>`...), so this costs no fidelity
//! there.

use std::cmp::Ordering;

use super::merge::merge_pairs;
use super::vocab::{parse_byte_token, Vocab};
use super::{Result, TokenType, TokenizerError};

/// Whether a token of this type may be produced by merging.
fn mergeable(ty: TokenType) -> bool {
    matches!(
        ty,
        TokenType::Normal | TokenType::Unused | TokenType::Undefined
    )
}

/// The encoder of a validated SentencePiece-style vocabulary.
pub(crate) struct SpmEncoder {
    /// The byte token of each byte value, where the vocabulary has one.
    bytes: Box<[Option<u32>; 256]>,
}

/// A symbol of the text being merged: the byte range `start..start + len`.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
}

/// A token score as a merge key: totally ordered (scores are never NaN,
/// `Vocab` checks).
#[derive(Clone, Copy)]
struct Score(f32);

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Score {}

impl SpmEncoder {
    /// The encoder of `vocab`: finds its byte tokens.
    pub(crate) fn new(vocab: &Vocab) -> Self {
        let mut bytes = Box::new([None; 256]);
        for (id, &ty) in vocab.types().iter().enumerate() {
            if ty == TokenType::Byte {
                let text = vocab.token(id as u32).unwrap_or_default();
                if let Some(b) = parse_byte_token(text) {
                    bytes[b as usize].get_or_insert(id as u32);
                }
            }
        }
        Self { bytes }
    }

    /// Appends the ids of `text` (plain text: control-token texts in it are
    /// ordinary characters) to `out`.
    pub(crate) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let text = text.replace(' ', "\u{2581}");
        let mut symbols: Vec<Symbol> = text
            .char_indices()
            .map(|(start, c)| Symbol {
                start,
                len: c.len_utf8(),
            })
            .collect();
        let scores = vocab.scores();
        merge_pairs(&mut symbols, |l, r| {
            let len = l.len + r.len;
            let id = vocab.id_of(&text[l.start..l.start + len])?;
            vocab.ty(id).is_some_and(mergeable).then(|| {
                let score = scores.map_or(0.0, |s| s[id as usize]);
                (
                    Score(score),
                    Symbol {
                        start: l.start,
                        len,
                    },
                )
            })
        });

        // Whether the last id out is an unknown token this call produced:
        // consecutive ones are fused into one.
        let mut after_unk = false;
        for s in symbols {
            let piece = &text[s.start..s.start + s.len];
            match vocab.id_of(piece).filter(|&id| !vocab.is_special(id)) {
                Some(id) => {
                    out.push(id);
                    after_unk = false;
                }
                None => self.fall_back(vocab, piece, &mut after_unk, out)?,
            }
        }
        Ok(())
    }

    /// Spells `piece`, which is no token, as byte tokens; a character with
    /// a byte the vocabulary lacks becomes the unknown token.
    fn fall_back(
        &self,
        vocab: &Vocab,
        piece: &str,
        after_unk: &mut bool,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let mut buf = [0u8; 4];
        for c in piece.chars() {
            let bytes = c.encode_utf8(&mut buf).as_bytes();
            if bytes.iter().all(|&b| self.bytes[b as usize].is_some()) {
                out.extend(bytes.iter().filter_map(|&b| self.bytes[b as usize]));
                *after_unk = false;
                continue;
            }
            let unk = vocab.unk.ok_or(TokenizerError::NoByteToken { ch: c })?;
            if !*after_unk {
                out.push(unk);
                *after_unk = true;
            }
        }
        Ok(())
    }
}
