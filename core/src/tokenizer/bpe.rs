//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`).
//!
//! The pre-tokenizer reproduces llama.cpp's `llm_tokenizer_bpe`: for the
//! `tokenizer.ggml.pre` value, the same list of regexes is applied in order,
//! each one splitting every piece into matches and the text between them
//! (`tokenizers`' `Split` with `Isolated`), then each piece is mapped to GPT-2's
//! byte-level alphabet. No space prefix is added, no post-processor runs.
//! (`candle`'s `from_gguf` adds a prefix space here, which is wrong for these
//! models.)

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{
    OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, SplitDelimiterBehavior,
};

use std::cmp::Reverse;
use std::collections::hash_map::Entry;

use super::merge::merge_pairs;
use super::vocab::{FxHashMap, Vocab};
use super::{hf_err, Result, TokenizerError};

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

/// The pre-tokenizer of a byte-level vocabulary: the splitting regular
/// expressions its `tokenizer.ggml.pre` names, then GPT-2's byte mapping.
pub(crate) struct Splitter {
    steps: Sequence,
    ignore_merges: bool,
}

impl Splitter {
    /// The pre-tokenizer named by `pre` (`tokenizer.ggml.pre`).
    pub(crate) fn new(pre: Option<&str>) -> Result<Self> {
        let pre = pre_type(pre)?;
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
        Ok(Self {
            steps: Sequence::new(steps),
            ignore_merges: pre.ignore_merges,
        })
    }
}

/// A byte-level BPE encoder: `tokenizers`' pre-tokenizer (the regex splits
/// of [`PreType`], then GPT-2's byte-to-character mapping) and the merges
/// applied to each piece by rank over token ids, as llama.cpp's
/// `llm_tokenizer_bpe_session` and `tokenizers`' BPE model do: the
/// adjacent pair of lowest rank merges first, the leftmost of equal ones.
///
/// Built from the merge ids [`Vocab`] already resolved: one hash insert per
/// merge.
pub(crate) struct ByteLevelBpe {
    pre: Sequence,
    /// `(left, right)` → `(rank, merged id)`.
    ranks: FxHashMap<(u32, u32), (u32, u32)>,
    ignore_merges: bool,
}

impl std::fmt::Debug for ByteLevelBpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteLevelBpe")
            .field("merges", &self.ranks.len())
            .field("ignore_merges", &self.ignore_merges)
            .finish()
    }
}

impl ByteLevelBpe {
    /// The encoder of a validated byte-level BPE vocabulary, splitting text
    /// with `pre` (built apart, so that its regular expressions can compile
    /// while the vocabulary builds).
    ///
    /// Merges involving control tokens are dropped (such tokens never come
    /// out of text), and so are merges whose result is not a token (llama.cpp
    /// would fall back to bytes there) or that repeat an earlier pair.
    pub(crate) fn new(pre: Splitter, vocab: &Vocab) -> Self {
        let tokens = vocab.tokens();
        let usable = |id: u32| !vocab.is_special(id);
        let mut ranks = FxHashMap::with_capacity_and_hasher(vocab.merges.len(), Default::default());
        let mut dropped = 0usize;
        let mut joined = String::new();
        for &(l, r) in &vocab.merges {
            joined.clear();
            joined.push_str(&tokens[l as usize]);
            joined.push_str(&tokens[r as usize]);
            let rank = ranks.len() as u32;
            match vocab.id_of(&joined).filter(|&id| usable(id)) {
                Some(id) if usable(l) && usable(r) => match ranks.entry((l, r)) {
                    Entry::Vacant(e) => {
                        e.insert((rank, id));
                    }
                    Entry::Occupied(_) => dropped += 1,
                },
                _ => dropped += 1,
            }
        }
        if dropped > 0 {
            log::warn!(
                "tokenizer.ggml.merges: {dropped} merges dropped (control token involved, \
                 result not in the vocabulary, or a repeated pair)"
            );
        }
        Self {
            pre: pre.steps,
            ranks,
            ignore_merges: pre.ignore_merges,
        }
    }

    /// Appends the ids of `text` (plain text: control-token texts in it are
    /// ordinary characters) to `out`.
    pub(crate) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut pieces = PreTokenizedString::from(text);
        self.pre
            .pre_tokenize(&mut pieces)
            .map_err(hf_err("pre-tokenizing text"))?;
        let mut symbols = Vec::new();
        for (piece, _, _) in pieces.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            self.encode_piece(vocab, piece, &mut symbols)?;
            out.extend_from_slice(&symbols);
        }
        Ok(())
    }

    /// The ids of one pre-tokenized piece (byte-level characters) into
    /// `symbols`.
    fn encode_piece(&self, vocab: &Vocab, piece: &str, symbols: &mut Vec<u32>) -> Result<()> {
        symbols.clear();
        let usable = |id: &u32| !vocab.is_special(*id);
        if self.ignore_merges {
            if let Some(id) = vocab.id_of(piece).filter(usable) {
                symbols.push(id);
                return Ok(());
            }
        }
        let mut buf = [0u8; 4];
        for c in piece.chars() {
            let id = vocab
                .id_of(c.encode_utf8(&mut buf))
                .filter(usable)
                .ok_or(TokenizerError::NoByteToken { ch: c })?;
            symbols.push(id);
        }
        self.merge(symbols);
        Ok(())
    }

    /// Applies the merges to `symbols`: the lowest rank first, the
    /// leftmost of equal ranks first.
    fn merge(&self, symbols: &mut Vec<u32>) {
        merge_pairs(symbols, |l, r| {
            self.ranks
                .get(&(l, r))
                .map(|&(rank, merged)| (Reverse(rank), merged))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokenizers::models::bpe::BPE;

    /// The names of the control/unknown tokens inside the `tokenizers` model.
    ///
    /// They are replaced by placeholders that no input can spell (they contain
    /// U+FFFF, a noncharacter, and no merge produces them), so the model can
    /// never emit a control id from text; special tokens are matched by
    /// [`Vocab::partition`] instead.
    fn model_vocab(vocab: &Vocab) -> tokenizers::models::bpe::Vocab {
        vocab
            .tokens()
            .iter()
            .enumerate()
            .map(|(id, text)| {
                let id = id as u32;
                let key = if vocab.is_special(id) {
                    placeholder(id)
                } else {
                    text.to_string()
                };
                (key, id)
            })
            .collect()
    }

    /// See [`model_vocab`].
    fn placeholder(id: u32) -> String {
        format!("\u{FFFF}special:{id}\u{FFFF}")
    }

    /// SmolLM2's vocabulary (the real model file, pulled by the test
    /// script), with `tokenizers`' own BPE model built from its texts as the
    /// reference: the model this module's merges replaced.
    struct Reference {
        vocab: Vocab,
        ours: ByteLevelBpe,
        hf: tokenizers::Tokenizer,
    }

    fn reference() -> &'static Reference {
        static REF: std::sync::OnceLock<Reference> = std::sync::OnceLock::new();
        REF.get_or_init(|| {
            let path = crate::manifest::find("smollm2-135m-instruct")
                .expect("a built-in model")
                .path_in(&crate::manifest::cache_dir());
            let file = crate::gguf::GgufFile::open(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (run `edgeloop pull smollm2-135m-instruct`)",
                    path.display()
                )
            });
            let spec = crate::engine::tokenizer_spec(file.metadata()).expect("spec");
            let vocab = Vocab::from_spec(&spec, super::super::ModelKind::Gpt2).expect("vocab");
            let ours = ByteLevelBpe::new(
                Splitter::new(spec.pre.as_deref()).expect("splitter"),
                &vocab,
            );
            let merges: Vec<(String, String)> = ours
                .ranks
                .iter()
                .map(|(&(l, r), &(rank, _))| (rank, l, r))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|(_, l, r)| {
                    let t = |id: u32| vocab.tokens()[id as usize].to_string();
                    (t(l), t(r))
                })
                .collect();
            let model = BPE::builder()
                .vocab_and_merges(model_vocab(&vocab), merges)
                .ignore_merges(ours.ignore_merges)
                .build()
                .expect("tokenizers' BPE");
            let mut hf = tokenizers::Tokenizer::new(model);
            hf.with_pre_tokenizer(Some(ours.pre.clone()));
            Reference { vocab, ours, hf }
        })
    }

    fn check(text: &str) -> Result<(), TestCaseError> {
        let r = reference();
        let mut ours = Vec::new();
        r.ours.encode(&r.vocab, text, &mut ours).expect("ours");
        let hf = r.hf.encode_fast(text, false).expect("tokenizers");
        prop_assert_eq!(&ours[..], hf.get_ids(), "{:?}", text);
        Ok(())
    }

    /// One word of 200 000 letters (a single pre-tokenized piece) encodes
    /// and decodes back: the merges take O(n log n), not O(n²) per merge.
    #[test]
    fn a_very_long_word_encodes() {
        let r = reference();
        let text = "ab".repeat(100_000);
        let mut ids = Vec::new();
        r.ours.encode(&r.vocab, &text, &mut ids).expect("encode");
        assert!(ids.len() <= text.len() / 2, "{} ids", ids.len());
        let mut bytes = Vec::new();
        let mut strip = false;
        for &id in &ids {
            r.vocab
                .append_piece(id, false, &mut strip, &mut bytes)
                .expect("decode");
        }
        assert_eq!(String::from_utf8(bytes).expect("UTF-8"), text);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// The merges by rank give exactly the ids of `tokenizers`' BPE
        /// model on text of words, numbers, punctuation, white space,
        /// accents, CJK and emoji.
        #[test]
        fn merges_by_rank_equal_tokenizers_bpe(
            text in "([a-zA-Z]{1,8}|[0-9]{1,5}|[ \t\n]{1,3}|[.,;:!?'\"()-]|[éüñßøå]|[中文字]|[😀🚀]|<\\|im_start\\|>){0,24}"
        ) {
            check(&text)?;
        }
    }

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
