//! Incremental detokenization for streaming output.

use super::{Result, Tokenizer};

/// Turns a stream of token ids into text deltas.
///
/// A token can end in the middle of a UTF-8 character (byte-fallback tokens,
/// or byte-level BPE pieces of a multi-byte character), so the stream holds
/// back an incomplete trailing sequence until the next tokens complete it.
/// Only valid UTF-8 is ever returned; a byte sequence that can no longer
/// become valid is replaced by U+FFFD exactly where [`Tokenizer::decode`]
/// would replace it, so the concatenated deltas plus [`TokenStream::finish`]
/// always equal `decode` of all ids.
///
/// ```ignore
/// let mut stream = tok.stream(true);
/// for id in generated {
///     print!("{}", stream.push(id)?);
/// }
/// print!("{}", stream.finish());
/// ```
#[derive(Debug, Clone)]
pub struct TokenStream {
    tok: Tokenizer,
    skip_special: bool,
    /// Bytes received but not yet returned (an incomplete UTF-8 sequence).
    pending: Vec<u8>,
    /// Whether the space prefix still has to be stripped (see `decode`).
    strip_space: bool,
}

impl TokenStream {
    /// A new stream; `skip_special` as in [`Tokenizer::decode`].
    pub fn new(tok: &Tokenizer, skip_special: bool) -> TokenStream {
        TokenStream {
            tok: tok.clone(),
            skip_special,
            pending: Vec::new(),
            strip_space: tok.vocab().add_space_prefix,
        }
    }

    /// Feeds one id and returns the text that became complete (possibly
    /// empty). Errors only for an id outside the vocabulary, in which case
    /// the stream is unchanged.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.tok.vocab().append_piece(
            id,
            self.skip_special,
            &mut self.strip_space,
            &mut self.pending,
        )?;
        Ok(self.drain(false))
    }

    /// Returns whatever is held back, with an incomplete trailing sequence
    /// replaced by U+FFFD, and resets the stream for reuse.
    pub fn finish(&mut self) -> String {
        let out = self.drain(true);
        self.strip_space = self.tok.vocab().add_space_prefix;
        out
    }

    /// Whether bytes are being held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Moves the longest decodable prefix of `pending` out as text. Invalid
    /// sequences become U+FFFD (as in `String::from_utf8_lossy`); an
    /// incomplete sequence at the end stays pending unless `flush`.
    fn drain(&mut self, flush: bool) -> String {
        let mut out = String::new();
        let mut at = 0;
        loop {
            match std::str::from_utf8(&self.pending[at..]) {
                Ok(s) => {
                    out.push_str(s);
                    at = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Cannot fail: the first `valid` bytes were just validated.
                    out.push_str(
                        std::str::from_utf8(&self.pending[at..at + valid]).unwrap_or_default(),
                    );
                    at += valid;
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            at += bad;
                        }
                        None => {
                            // Incomplete sequence at the end: wait for more.
                            if flush {
                                out.push('\u{FFFD}');
                                at = self.pending.len();
                            }
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..at);
        out
    }
}
