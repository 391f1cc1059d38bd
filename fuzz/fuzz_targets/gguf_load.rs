//! The GGUF reader and the model loader: any bytes are refused with an
//! error or give a model that runs one token.
#![no_main]

use std::sync::{Arc, OnceLock};

use edgeloop_core::gguf::GgufFile;
use edgeloop_core::kernels::ThreadPool;
use edgeloop_core::model::{BatchToken, ForwardScratch, Model};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = match GgufFile::from_bytes(data.to_vec()) {
        Ok(f) => Arc::new(f),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let Ok(model) = Model::from_gguf(file) else {
        return;
    };
    static POOL: OnceLock<ThreadPool> = OnceLock::new();
    let pool = POOL.get_or_init(|| ThreadPool::new(1));
    let mut caches = vec![model.new_cache(4)];
    let mut logits = Vec::new();
    let mut scratch = ForwardScratch::default();
    let batch = [BatchToken {
        token: 1,
        pos: 0,
        seq: 0,
    }];
    let vocab = model.config().vocab_size;
    if vocab > 1 {
        model
            .forward(pool, &batch, &mut caches, &[0], &mut logits, &mut scratch)
            .expect("a model that loaded runs one token");
        assert_eq!(logits.len(), vocab);
    }
});
