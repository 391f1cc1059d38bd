#!/usr/bin/env python3
"""A third, exact reference: the forward pass in float64 NumPy over the
dequantized GGUF weights (gguf-py from the llama.cpp sources built by
build_llamacpp.sh), for the first prompt of a logits golden file.

It measures how far llama.cpp's logits (tests/golden/*/logits.json) are from
exact arithmetic on the same weights; llama.cpp and edgeloop both quantize
activations to 8 bits, so neither matches exactly. The tolerances of
core/tests/reference_tests.rs are set from these figures.

  python3 tests/reference/f64_forward.py --model M.gguf --golden tests/golden/NAME/logits.json \
      [--edgeloop-logits FILE]   # raw little-endian f32 [64 x vocab] logits from edgeloop

Supports the llama and gemma3 architectures of the two real models.
"""
import argparse
import json
import os
import sys

import numpy as np

REF_DIR = os.environ.get("EDGELOOP_REF_DIR", os.path.expanduser("~/.cache/edgeloop/llamacpp"))
sys.path.insert(0, os.path.join(REF_DIR, "src/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py"))
from gguf import GGUFReader, quants  # noqa: E402


def forward(path, seq):
    r = GGUFReader(path)
    tensors = {t.name: t for t in r.tensors}

    def w(name):
        t = tensors[name]
        return quants.dequantize(t.data, t.tensor_type).astype(np.float64)

    def key(k):
        return r.fields[k].contents()

    arch = key("general.architecture")
    nl, d = key(f"{arch}.block_count"), key(f"{arch}.embedding_length")
    nh, nkv = key(f"{arch}.attention.head_count"), key(f"{arch}.attention.head_count_kv")
    hd = key(f"{arch}.attention.key_length") if f"{arch}.attention.key_length" in r.fields else d // nh
    eps, base = key(f"{arch}.attention.layer_norm_rms_epsilon"), key(f"{arch}.rope.freq_base")
    gemma = arch == "gemma3"
    n = len(seq)
    pos = np.arange(n, dtype=np.float64)

    def rms(v, g):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * g

    def rope(v, b, neox):
        half = hd // 2
        ang = pos[:, None] * (b ** (-np.arange(half) * 2.0 / hd))[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        out = v.copy()
        if neox:
            x0, x1 = v[..., :half], v[..., half:]
            out[..., :half], out[..., half:] = x0 * c - x1 * s, x0 * s + x1 * c
        else:
            x0, x1 = v[..., 0::2], v[..., 1::2]
            out[..., 0::2], out[..., 1::2] = x0 * c - x1 * s, x0 * s + x1 * c
        return out

    emb = w("token_embd.weight")
    x = emb[seq] * (np.sqrt(d) if gemma else 1.0)
    mask = np.triu(np.ones((n, n)), 1).astype(bool)
    for layer in range(nl):
        def b(s):
            return w(f"blk.{layer}.{s}.weight")
        h = rms(x, b("attn_norm"))
        q = (h @ b("attn_q").T).reshape(n, nh, hd)
        k = (h @ b("attn_k").T).reshape(n, nkv, hd)
        v = (h @ b("attn_v").T).reshape(n, nkv, hd)
        if gemma:
            q, k = rms(q, b("attn_q_norm")), rms(k, b("attn_k_norm"))
            rb = 10000.0 if layer % 6 < 5 else base
            q, k = rope(q, rb, True), rope(k, rb, True)
        else:
            q, k = rope(q, base, False), rope(k, base, False)
        out = np.zeros((n, nh, hd))
        for head in range(nh):
            sc = q[:, head] @ k[:, head // (nh // nkv)].T / np.sqrt(hd)
            sc[mask] = -np.inf
            e = np.exp(sc - sc.max(-1, keepdims=True))
            out[:, head] = (e / e.sum(-1, keepdims=True)) @ v[:, head // (nh // nkv)]
        o = out.reshape(n, nh * hd) @ b("attn_output").T
        x = x + (rms(o, b("post_attention_norm")) if gemma else o)
        h = rms(x, b("ffn_norm"))
        g, u = h @ b("ffn_gate").T, h @ b("ffn_up").T
        a = 0.5 * g * (1 + np.tanh(0.7978845608 * (g + 0.044715 * g ** 3))) if gemma else g / (1 + np.exp(-g))
        o = (a * u) @ b("ffn_down").T
        x = x + (rms(o, b("post_ffw_norm")) if gemma else o)
    x = rms(x, w("output_norm.weight"))
    out_w = w("output.weight") if "output.weight" in tensors else emb
    return x @ out_w.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--golden", required=True)
    ap.add_argument("--edgeloop-logits")
    a = ap.parse_args()
    prompt = json.load(open(a.golden))["prompts"][0]
    exact = forward(a.model, prompt["sequence"])
    tops = [[(t, l) for t, l in row["top"]] for row in prompt["logits"]]
    # llama.cpp against exact arithmetic.
    errs = [abs(l - exact[i, t]) for i, row in enumerate(tops) for t, l in row]
    print(f"llama.cpp vs f64: max abs error {max(errs):.3f}, mean {np.mean(errs):.3f}")
    if a.edgeloop_logits:
        ours = np.fromfile(a.edgeloop_logits, dtype=np.float32).reshape(len(tops), -1)
        errs = [abs(float(ours[i, t]) - exact[i, t]) for i, row in enumerate(tops) for t, _ in row]
        print(f"edgeloop  vs f64: max abs error {max(errs):.3f}, mean {np.mean(errs):.3f}")
        agree = int((ours.argmax(1) == exact.argmax(1)).sum())
        print(f"edgeloop top-1 equals f64 top-1 at {agree} of {len(tops)} positions")


if __name__ == "__main__":
    main()
