//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`).
//!
//! The pre-tokenizer reproduces llama.cpp's `llm_tokenizer_bpe`: for the
//! `tokenizer.ggml.pre` value, the same list of regexes is applied in order,
//! each one splitting every piece into matches and the text between them
//! (`tokenizers`' `Split` with `Isolated`), then each piece is mapped to GPT-2's
//! byte-level alphabet. No space prefix is added, no post-processor runs.
//! (`candle`'s `from_gguf` adds a prefix space here, which is wrong for these
//! models.)

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

use super::vocab::Vocab;
use super::{hf_err, Result, TokenType, TokenizerError, TokenizerSpec};

/// GPT-2's regex, shared by several pre-tokenizer types.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3's regex as adapted by llama.cpp (case-insensitive contractions
/// spelled out).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen 2's regex as adapted by llama.cpp.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A pre-tokenizer family: the `tokenizer.ggml.pre` names that select it, the
/// regexes llama.cpp applies (in order) and whether whole-word vocabulary
/// hits skip the merges (`ignore_merges`).
struct PreType {
    names: &'static [&'static str],
    regexes: &'static [&'static str],
    ignore_merges: bool,
}

/// The supported families, copied from `llama-vocab.cpp`.
const PRE_TYPES: &[PreType] = &[
    PreType {
        // LLAMA_VOCAB_PRE_TYPE_DEFAULT (also used when the key is missing).
        names: &["default"],
        regexes: &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
        ignore_merges: false,
    },
    PreType {
        // GPT2, MPT, OLMO, JAIS, TRILLION, GRANITE_DOCLING.
        names: &[
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "jina-v1-en",
            "jina-v2-code",
            "roberta-bpe",
            "exaone4",
            "mpt",
            "olmo",
            "jais",
            "trillion",
            "granite-docling",
        ],
        regexes: &[GPT2],
        ignore_merges: false,
    },
    PreType {
        // STARCODER, REFACT, COMMAND_R, SMOLLM, CODESHELL, EXAONE, MINERVA,
        // MELLUM2: digits isolated one by one, then GPT-2's regex.
        names: &[
            "smollm",
            "starcoder",
            "refact",
            "command-r",
            "codeshell",
            "exaone",
            "minerva-7b",
            "mellum2",
        ],
        regexes: &[r"\p{N}", GPT2],
        ignore_merges: false,
    },
    PreType {
        // LLAMA3 (ignore_merges), DBRX, SMAUG (same regex, merges applied).
        names: &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
        ],
        regexes: &[LLAMA3],
        ignore_merges: true,
    },
    PreType {
        names: &["dbrx", "smaug-bpe"],
        regexes: &[LLAMA3],
        ignore_merges: false,
    },
    PreType {
        // QWEN2, STABLELM2, HUNYUAN.
        names: &[
            "qwen2",
            "deepseek-r1-qwen",
            "kormo",
            "f2llmv2",
            "megrez",
            "stablelm2",
            "hunyuan",
        ],
        regexes: &[QWEN2],
        ignore_merges: false,
    },
];

fn pre_type(pre: Option<&str>) -> Result<&'static PreType> {
    let name = match pre {
        None | Some("") => "default",
        Some(p) => p,
    };
    PRE_TYPES
        .iter()
        .find(|t| t.names.contains(&name))
        .ok_or_else(|| TokenizerError::UnsupportedPre {
            pre: name.to_string(),
            supported: PRE_TYPES
                .iter()
                .flat_map(|t| t.names.iter().copied())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The names of the control/unknown tokens inside the `tokenizers` model.
///
/// They are replaced by placeholders that no input can spell (they contain
/// U+FFFF, a noncharacter, and no merge produces them), so the model can
/// never emit a control id from text; special tokens are matched by
/// [`Vocab::partition`] instead.
pub(crate) fn model_vocab(vocab: &Vocab) -> tokenizers::models::bpe::Vocab {
    vocab
        .tokens()
        .iter()
        .enumerate()
        .map(|(id, text)| {
            let id = id as u32;
            let key = if vocab.ty(id).is_some_and(TokenType::is_special) {
                placeholder(id)
            } else {
                text.clone()
            };
            (key, id)
        })
        .collect()
}

/// See [`model_vocab`].
pub(crate) fn placeholder(id: u32) -> String {
    format!("\u{FFFF}special:{id}\u{FFFF}")
}

/// Builds the `tokenizers` model for a validated byte-level BPE vocabulary.
pub(crate) fn build(spec: &TokenizerSpec, vocab: &Vocab) -> Result<tokenizers::Tokenizer> {
    let pre = pre_type(spec.pre.as_deref())?;
    let map = model_vocab(vocab);
    let tokens = vocab.tokens();

    // Merges involving control tokens are dropped (such tokens never reach the
    // model); merges whose result is not a token are dropped too, since
    // `tokenizers` requires it (llama.cpp would fall back to bytes there).
    let mut merges = Vec::with_capacity(vocab.merges.len());
    let mut dropped = 0usize;
    let mut joined = String::new();
    for &(l, r) in &vocab.merges {
        let (lt, rt) = (&tokens[l as usize], &tokens[r as usize]);
        joined.clear();
        joined.push_str(lt);
        joined.push_str(rt);
        let usable = |id: u32| !vocab.ty(id).is_some_and(TokenType::is_special);
        let result_ok = vocab.id_of(&joined).is_some_and(usable);
        if usable(l) && usable(r) && result_ok {
            merges.push((lt.clone(), rt.clone()));
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        log::warn!(
            "tokenizer.ggml.merges: {dropped} merges dropped (control token involved or result not in the vocabulary)"
        );
    }

    let model = BPE::builder()
        .vocab_and_merges(map, merges)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(hf_err("building the BPE model"))?;

    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(pre.regexes.len() + 1);
    for re in pre.regexes {
        let split = Split::new(
            SplitPattern::Regex((*re).to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(hf_err("compiling the pre-tokenizer regex"))?;
        steps.push(split.into());
    }
    // Byte-level mapping only: the splitting was done above.
    steps.push(ByteLevel::new(false, false, false).into());

    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Sequence::new(steps)));
    tok.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_types_resolve() {
        assert!(pre_type(Some("smollm")).unwrap().regexes.len() == 2);
        assert!(pre_type(None).unwrap().names.contains(&"default"));
        let err = pre_type(Some("nope")).err().unwrap().to_string();
        assert!(err.contains("\"nope\"") && err.contains("smollm"), "{err}");
    }

    #[test]
    fn regexes_compile() {
        for t in PRE_TYPES {
            for re in t.regexes {
                Split::new(
                    SplitPattern::Regex((*re).to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .unwrap_or_else(|e| panic!("{re}: {e}"));
            }
        }
    }
}
