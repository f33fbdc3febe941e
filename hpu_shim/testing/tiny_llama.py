"""A random-weight Llama made offline, for vLLM tests (no hub is reachable, none is ever used).

``make(path, size="tiny")`` writes ``config.json``, safetensors weights and a word-level tokenizer
(``<s>``, ``</s>``, ``<pad>``, ``<unk>``, then ``w4`` ... ``wN``: one token per word) with ``save_pretrained``. ``tiny`` (~1 MB) starts fast for correctness tests;
``prefill`` (~390 MB, bf16) makes a prefill cost real time for the TTFT benchmark; its max length (16K)
fits the 8K-token prompt of ``make ttft`` with room to spare.
Head dims are in vLLM-CPU's supported list (32, 64, 80, ...).
"""

from __future__ import annotations

import json
import os
import sys

__all__ = ["SIZES", "make", "prompt"]

#: Bumped whenever SIZES change, so an existing model directory is rebuilt instead of silently reused.
VERSION = "v3"
#: name -> LlamaConfig overrides
SIZES = {
    "tiny": dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=32, max_position_embeddings=1024),
    "prefill": dict(vocab_size=4096, hidden_size=1024, intermediate_size=2816, num_hidden_layers=16,
                    num_attention_heads=16, num_key_value_heads=8, head_dim=64, max_position_embeddings=16384),
}


def make(path: str, size: str = "tiny", seed: int = 0) -> str:
    """Build the model at ``path`` (idempotent: an existing complete model is reused)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    marker = os.path.join(path, ".hpu-shim-model")
    if os.path.isfile(marker) and open(marker).read() == f"{size}:{seed}:{VERSION}":
        return path
    spec = SIZES[size]
    os.makedirs(path, exist_ok=True)
    torch.manual_seed(seed)
    config = LlamaConfig(**spec, torch_dtype="bfloat16", tie_word_embeddings=False, bos_token_id=0, eos_token_id=1,
                         pad_token_id=2)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    # Special tokens must not be substrings of words: added tokens are matched before word splitting.
    specials = ["<s>", "</s>", "<pad>", "<unk>"]
    vocab = {**{t: i for i, t in enumerate(specials)}, **{f"w{i}": i for i in range(len(specials), spec["vocab_size"])}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.save_pretrained(path)
    with open(os.path.join(path, "generation_config.json"), "w") as fh:
        json.dump({"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}, fh)
    with open(marker, "w") as fh:
        fh.write(f"{size}:{seed}:{VERSION}")
    return path


def prompt(num_tokens: int, vocab: int = 512, seed: int = 1) -> str:
    """A deterministic prompt of ``num_tokens`` words (no special tokens)."""
    import random

    rng = random.Random(seed)
    return " ".join(f"w{rng.randrange(4, vocab)}" for _ in range(num_tokens))


if __name__ == "__main__":
    print(make(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "tiny"))
