//! Chat template rendering under its limits (fuel, recursion): any template
//! text and messages compile and render or give an error, in bounded time.
//!
//! Input: `template \0 role \0 content \0 role \0 content ...` (UTF-8,
//! lossily decoded); the number of messages picks the thinking setting.
#![no_main]

use edgeloop_core::tokenizer::{ChatMessage, ChatTemplate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let source = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let messages: Vec<ChatMessage> = rest
        .chunks(2)
        .take(16)
        .map(|c| ChatMessage::new(c[0], c.get(1).copied().unwrap_or_default()))
        .collect();
    let Ok(tmpl) = ChatTemplate::new(source, "<s>", "</s>") else {
        return;
    };
    let thinking = [None, Some(true), Some(false)][messages.len() % 3];
    let _ = tmpl.render(&messages, true);
    let _ = tmpl.render_with_thinking(&messages, false, thinking);
});
