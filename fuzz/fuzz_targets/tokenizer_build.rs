//! The tokenizer built from GGUF metadata (as `Engine::load` does): any file is refused or gives a tokenizer that encodes,
//! decodes and renders its chat template.
#![no_main]

use edgeloop_core::engine::tokenizer_spec;
use edgeloop_core::gguf::GgufFile;
use edgeloop_core::tokenizer::{encode_chat, ChatMessage, ChatTemplate, Tokenizer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let Ok(spec) = tokenizer_spec(file.metadata()) else {
        return;
    };
    let Ok(tok) = Tokenizer::from_spec(&spec) else {
        return;
    };
    for text in ["hello world <|im_start|>", "", "é\u{0}\n\t<0x41>"] {
        if let Ok(ids) = tok.encode(text) {
            let _ = tok.decode(&ids, false);
            let _ = tok.decode(&ids, true);
        }
        let _ = tok.encode_with_special(text);
    }
    let all: Vec<u32> = (0..tok.vocab_size().min(4096) as u32).collect();
    let _ = tok.decode(&all, false);
    let mut stream = tok.stream(false);
    for &id in all.iter().take(64) {
        let _ = stream.push(id);
    }
    let _ = tok.decode(&[tok.vocab_size() as u32, u32::MAX], false);
    if let Ok(tmpl) = ChatTemplate::for_tokenizer(&tok) {
        let msgs = [ChatMessage::system("be brief"), ChatMessage::user("hello")];
        let _ = encode_chat(&tok, &tmpl, &msgs, true);
    }
});
