//! SentencePiece-style vocabularies (`tokenizer.ggml.model = "llama"`).
//!
//! llama.cpp's `llm_tokenizer_spm` starts from single characters and keeps
//! merging the adjacent pair whose concatenation is the vocabulary token with
//! the highest score (ties: leftmost), then spells leftover symbols as byte
//! tokens. GGUF stores no merges for these vocabularies, so we rebuild them:
//! every split `(l, r)` of a token `t = l + r` with both halves in the
//! vocabulary is a merge, ranked by `t`'s score (descending), then `t`'s id,
//! then longer `l` first. A BPE model with those merges, byte fallback and
//! fused unknowns performs the same greedy merging. The normalizer maps
//! `' '` to `'▁'` (llama.cpp's `llama_escape_whitespace`); the decoder undoes
//! it, resolves byte tokens and fuses.
//!
//! Only normal (and unused/undefined) tokens can be merge results: llama.cpp
//! could in principle assemble a control or byte token from plain text
//! through a chain of merges, which would defeat prompt-injection safety; on
//! Gemma 3 no such chain exists (checked for `<bos>`, `<start_of_turn>`,
//! `<0x41>`...), so this costs no fidelity there.

use std::cmp::Ordering;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::Replace;

use super::bpe::{model_vocab, placeholder};
use super::vocab::Vocab;
use super::{hf_err, Result, TokenType, TokenizerError};

/// Whether a token of this type may be produced by merging.
fn mergeable(ty: TokenType) -> bool {
    matches!(
        ty,
        TokenType::Normal | TokenType::Unused | TokenType::Undefined
    )
}

/// Rebuilds the merge list of a SentencePiece vocabulary as `(left, right)`
/// id pairs, highest priority first. See the module documentation for the
/// ranking.
pub(crate) fn rebuild_merges(vocab: &Vocab) -> Vec<(u32, u32)> {
    let tokens = vocab.tokens();
    let types = vocab.types();
    let scores = vocab.scores();

    // Halves are symbols llama.cpp's merging can hold: substrings of the
    // input that are tokens. Control tokens are renamed in the model and byte
    // tokens are only produced by fallback, so neither qualifies.
    let part = |s: &str| {
        vocab.id_of(s).filter(|&id| {
            let ty = types[id as usize];
            !ty.is_special() && ty != TokenType::Byte
        })
    };

    let mut order: Vec<u32> = (0..tokens.len() as u32)
        .filter(|&id| mergeable(types[id as usize]) && tokens[id as usize].chars().nth(1).is_some())
        .collect();
    let score = |id: u32| scores.map_or(0.0, |s| s[id as usize]);
    order.sort_by(|&a, &b| {
        score(b)
            .partial_cmp(&score(a))
            .unwrap_or(Ordering::Equal)
            .then(a.cmp(&b))
    });

    let mut merges = Vec::with_capacity(order.len() * 2);
    for id in order {
        let t = &tokens[id as usize];
        // Split points from the right: longer left halves first.
        for (k, _) in t.char_indices().rev() {
            if k == 0 {
                continue;
            }
            let (l, r) = t.split_at(k);
            if let Some(l) = part(l) {
                if let Some(r) = part(r) {
                    merges.push((l, r));
                }
            }
        }
    }
    merges
}

/// Builds the `tokenizers` model for a validated SentencePiece vocabulary
/// from its merges ([`rebuild_merges`], possibly cached). Merges naming ids
/// out of range or whose result is not a token are an error.
pub(crate) fn build(vocab: &Vocab, merges: &[(u32, u32)]) -> Result<tokenizers::Tokenizer> {
    let text = |id: u32| {
        vocab
            .token(id)
            .map(str::to_string)
            .ok_or(TokenizerError::IdOutOfRange {
                id,
                vocab_size: vocab.len(),
            })
    };
    let merges = merges
        .iter()
        .map(|&(l, r)| Ok((text(l)?, text(r)?)))
        .collect::<Result<Vec<_>>>()?;
    let map = model_vocab(vocab);
    let mut builder = BPE::builder()
        .vocab_and_merges(map, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = vocab.unk {
        let name = if vocab.is_special(unk) {
            placeholder(unk)
        } else {
            vocab.token(unk).unwrap_or_default().to_string()
        };
        builder = builder.unk_token(name);
    }
    let model = builder.build().map_err(hf_err("building the BPE model"))?;

    let mut tok = tokenizers::Tokenizer::new(model);
    let escape = Replace::new(" ", "\u{2581}").map_err(hf_err("building the normalizer"))?;
    tok.with_normalizer(Some(escape))
        .map_err(hf_err("setting the normalizer"))?;
    let unescape = Replace::new("\u{2581}", " ").map_err(hf_err("building the decoder"))?;
    tok.with_decoder(Some(DecoderSequence::new(vec![
        unescape.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ])));
    Ok(tok)
}
