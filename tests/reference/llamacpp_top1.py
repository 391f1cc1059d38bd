"""Teacher-forced top-1 tokens of llama.cpp (through llama-cpp-python) for
token sequences: the interoperability check of `edgeloop-trainer export
--llama-cpp-python DIR`.

Reads {"model": PATH, "sequences": [[id, ...], ...]} on stdin and writes
{"top1": [[id, ...], ...]} on stdout: for each sequence, the argmax of the
next-token logits at every position (lowest id on ties), from one eval of
the whole sequence.
"""

import json
import sys

import numpy as np
from llama_cpp import Llama


def main():
    req = json.load(sys.stdin)
    longest = max(len(s) for s in req["sequences"])
    llm = Llama(
        model_path=req["model"],
        n_ctx=max(64, longest),
        n_batch=max(64, longest),
        n_threads=2,
        logits_all=True,
        verbose=False,
    )
    out = []
    for seq in req["sequences"]:
        llm.reset()
        llm.eval(seq)
        scores = np.array(llm.scores[: len(seq)], dtype=np.float32)
        out.append([int(np.argmax(row)) for row in scores])
    json.dump({"top1": out}, sys.stdout)


if __name__ == "__main__":
    main()
