#!/usr/bin/env python3
"""Tiny random-weight Qwen3 reference for edgeloop (independent of llama.cpp).

Builds a 2-layer Qwen3ForCausalLM with Hugging Face transformers on CPU (float32, eager
attention), initialises it deterministically from a fixed seed, and writes:

    <out>/model.safetensors   HF state dict (HF tensor names, float32)
    <out>/config.json         HF config (Qwen3Config.to_dict())
    <out>/logits.json         two fixed token sequences and model(input_ids).logits for every position

Usage:  python3 tests/reference/make_qwen3_golden.py --out tests/golden/qwen3-tiny
Needs:  torch, transformers (with Qwen3), safetensors.
"""

import argparse
import hashlib
import json
import os

import torch
import transformers
import safetensors
from safetensors.torch import save_file
from transformers import Qwen3Config, Qwen3ForCausalLM

SEED = 20240607
MATRIX_STD = 0.3
NORM_JITTER = 0.2  # norm weights ~ U(1 - 0.2, 1 + 0.2)
DECIMALS = 6

CONFIG = dict(
    vocab_size=320,
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,  # 4 * 32 = 128 != hidden_size 64, like real Qwen3
    hidden_act="silu",
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    max_position_embeddings=512,
    tie_word_embeddings=False,
    attention_bias=False,
    use_sliding_window=False,
    attention_dropout=0.0,
)

# Fixed inputs (no RNG involved).
SEQUENCES = {
    "short7": [1, 17, 42, 300, 5, 99, 256],
    "long40": [(i * 37 + 11) % 320 for i in range(32)] + [11, 11, 11, 0, 319, 160, 48, 11],
}


def make_config():
    kw = dict(CONFIG)
    rope_theta = kw.pop("rope_theta")
    try:
        cfg = Qwen3Config(**kw, rope_parameters={"rope_type": "default", "rope_theta": rope_theta})
    except TypeError:  # older transformers (< 5) take rope_theta directly
        cfg = Qwen3Config(**kw, rope_theta=rope_theta)
    cfg.dtype = "float32"
    cfg._attn_implementation = "eager"
    return cfg


def init_weights(model):
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.dim() == 1:  # RMSNorm weights (input/post-attention/q_norm/k_norm/final norm)
                p.copy_(1.0 + (torch.rand(p.shape, generator=g, dtype=torch.float32) * 2 - 1) * NORM_JITTER)
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * MATRIX_STD)


def r(x):
    return [[round(float(v), DECIMALS) for v in row] for row in x]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)

    cfg = make_config()
    model = Qwen3ForCausalLM(cfg).to(torch.float32)
    model.eval()
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    init_weights(model)

    os.makedirs(args.out, exist_ok=True)
    sd = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    assert "lm_head.weight" in sd and not torch.equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"])
    st_path = os.path.join(args.out, "model.safetensors")
    save_file(sd, st_path, metadata={"format": "pt"})

    cfg_dict = cfg.to_dict()
    cfg_dict.pop("_attn_implementation", None)
    cfg_dict["architectures"] = ["Qwen3ForCausalLM"]
    cfg_dict["dtype"] = "float32"
    # also the transformers-4 style top-level key, as found in real Qwen3 checkpoints
    cfg_dict["rope_theta"] = CONFIG["rope_theta"]
    with open(os.path.join(args.out, "config.json"), "w", encoding="utf-8", newline="\n") as fh:
        json.dump(cfg_dict, fh, indent=2, sort_keys=True)
        fh.write("\n")

    with open(st_path, "rb") as fh:
        st_sha = hashlib.sha256(fh.read()).hexdigest()

    cases = []
    with torch.no_grad():
        for name, ids in SEQUENCES.items():
            assert all(0 <= t < CONFIG["vocab_size"] for t in ids)
            logits = model(torch.tensor([ids], dtype=torch.long), use_cache=False).logits[0]
            assert logits.dtype == torch.float32 and logits.shape == (len(ids), CONFIG["vocab_size"])
            cases.append({
                "name": name,
                "input_ids": ids,
                "argmax": [int(i) for i in logits.argmax(-1)],
                "logits": r(logits.tolist()),
            })
            print(f"{name}: len {len(ids)}, logits std {logits.std().item():.3f}, "
                  f"range [{logits.min().item():.3f}, {logits.max().item():.3f}], argmax {cases[-1]['argmax'][:10]}")

    out = {
        "model": "qwen3-tiny",
        "description": (
            "Random-weight Qwen3ForCausalLM (transformers, CPU, float32, eager attention, no KV cache). "
            "logits[i] = full next-token logits at position i of input_ids (one forward pass over the whole "
            f"sequence, positions 0..n-1, no BOS added), rounded to {DECIMALS} decimals."
        ),
        "config": CONFIG,
        "seed": SEED,
        "init": f"all 2-D weights ~ N(0, {MATRIX_STD}^2); 1-D (RMSNorm) weights ~ U({1 - NORM_JITTER}, {1 + NORM_JITTER}); "
                "filled in sorted parameter-name order from one torch.Generator",
        "safetensors_sha256": st_sha,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "safetensors": safetensors.__version__},
        "tensors": {k: list(v.shape) for k, v in sorted(sd.items())},
        "cases": cases,
    }
    with open(os.path.join(args.out, "logits.json"), "w", encoding="utf-8", newline="\n") as fh:
        json.dump(out, fh, sort_keys=True, separators=(",", ":"))
        fh.write("\n")


if __name__ == "__main__":
    main()
