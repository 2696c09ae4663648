"""A tiny random BERT with the packaged WordPiece vocabulary: for smoke tests, toy benchmarks and the docs'
stand-in model. It loads and trains in moments on a CPU, offline, and learns a toy task; it knows no language."""

from __future__ import annotations

from pathlib import Path


def tiny_bert(folder: str | Path, max_positions: int = 128, seed: int = 0) -> Path:
    """Write a 2-layer, 32-wide random BERT and the packaged MiniLM's tokenizer into `folder`; return it."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from bertsent.modeling.hub import resolve_model

    torch.manual_seed(seed)
    folder = Path(folder)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
    )
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model("minilm"), model_max_length=max_positions).save_pretrained(folder)
    return folder
