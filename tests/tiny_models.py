"""Tiny transformers language models (built from small configs: no downloads) for the whole-model tests."""

from __future__ import annotations

from typing import Any


def tiny_lm(kind: str) -> Any:
    """A 2-layer GPT-2 or BERT language model with attention and hidden dropout, its weights from seed 0."""
    import torch
    import transformers

    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(
            n_embd=16, n_layer=2, n_head=2, vocab_size=40, n_positions=16, attn_pdrop=0.3, resid_pdrop=0.2
        )
        return transformers.GPT2LMHeadModel(config)
    config = transformers.BertConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        vocab_size=40,
        max_position_embeddings=16,
        attention_probs_dropout_prob=0.3,
        hidden_dropout_prob=0.2,
    )
    return transformers.BertForMaskedLM(config)
