//! Chat fine-tuning examples: the standard `{"messages": [...]}` JSON Lines
//! that `edgeloop-trainer curate` writes, rendered with the student's own
//! chat template and tokenized, with the loss placed on the final
//! assistant turn only.

use std::path::Path;

use candle_core::{Device, Tensor};
use edgeloop_core::tokenizer::{encode_chat, ChatMessage, ChatTemplate, Tokenizer};
use serde::Deserialize;

use crate::error::{io_err, Result, TrainError};

/// One tokenized conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// The whole conversation's token ids.
    pub tokens: Vec<u32>,
    /// Index of the first token the loss is computed on (the first token of
    /// the final assistant turn); every later token is a target too.
    pub first_target: usize,
}

impl Example {
    /// Number of tokens the loss is computed on.
    pub fn targets(&self) -> usize {
        self.tokens.len() - self.first_target
    }
}

#[derive(Deserialize)]
struct Line {
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: String,
}

/// Encodes one conversation: the prompt is everything before the final
/// assistant message rendered with the generation prompt, the targets are
/// what the template adds for that message (its text and end-of-turn).
pub fn encode_example(
    tok: &Tokenizer,
    template: &ChatTemplate,
    messages: &[ChatMessage],
    max_tokens: usize,
) -> std::result::Result<Example, String> {
    match messages.last() {
        Some(m) if m.role == "assistant" => {}
        _ => return Err("the last message must be the assistant's".into()),
    }
    if messages.len() < 2 {
        return Err("a conversation needs a prompt before the assistant's message".into());
    }
    let prompt = encode_chat(tok, template, &messages[..messages.len() - 1], true)
        .map_err(|e| e.to_string())?;
    let full = encode_chat(tok, template, messages, false).map_err(|e| e.to_string())?;
    if full.len() <= prompt.len() || full[..prompt.len()] != prompt[..] {
        return Err(
            "the chat template does not render the conversation as the prompt followed by the answer"
                .into(),
        );
    }
    if full.len() > max_tokens {
        return Err(format!(
            "{} tokens, more than the longest sequence allowed ({max_tokens})",
            full.len()
        ));
    }
    Ok(Example {
        first_target: prompt.len(),
        tokens: full,
    })
}

/// Reads and encodes a JSON Lines chat dataset. A line that cannot be used
/// is an error naming the file and line, never silently dropped.
pub fn read_jsonl(
    path: &Path,
    tok: &Tokenizer,
    template: &ChatTemplate,
    max_tokens: usize,
) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| TrainError::Dataset {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let parsed: Line = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let messages: Vec<ChatMessage> = parsed
            .messages
            .into_iter()
            .map(|m| ChatMessage::new(m.role, m.content))
            .collect();
        out.push(encode_example(tok, template, &messages, max_tokens).map_err(bad)?);
    }
    Ok(out)
}

/// A padded micro-batch ready for the forward pass.
pub struct Batch {
    /// `[rows, seq]` token ids, padded at the end.
    pub tokens: Tensor,
    /// Flat indices (`row * seq + position`) of the positions whose logits
    /// predict a target.
    pub positions: Tensor,
    /// The target token of each of those positions.
    pub targets: Tensor,
    /// Number of targets.
    pub n_targets: usize,
}

impl Batch {
    /// Pads `examples` to the longest and lists their targets.
    pub fn new(examples: &[&Example], device: &Device) -> Result<Batch> {
        let seq = examples.iter().map(|e| e.tokens.len()).max().unwrap_or(0);
        if seq == 0 {
            return Err(TrainError::Options("an empty batch".into()));
        }
        let mut tokens = Vec::with_capacity(examples.len() * seq);
        let mut positions = Vec::new();
        let mut targets = Vec::new();
        for (row, e) in examples.iter().enumerate() {
            tokens.extend_from_slice(&e.tokens);
            tokens.resize((row + 1) * seq, 0);
            for p in e.first_target.max(1)..e.tokens.len() {
                positions.push((row * seq + p - 1) as u32);
                targets.push(e.tokens[p]);
            }
        }
        let n_targets = targets.len();
        Ok(Batch {
            tokens: Tensor::from_vec(tokens, (examples.len(), seq), device)?,
            positions: Tensor::from_vec(positions, n_targets, device)?,
            targets: Tensor::from_vec(targets, n_targets, device)?,
            n_targets,
        })
    }
}
