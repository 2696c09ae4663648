"""Unpadded ("packed") batches: a batch's sequences laid end to end in one row, no padding tokens.

Embeddings, projections and feed-forward blocks (most of a BERT step) then run on real tokens only.
Attention must not cross from one sequence into the next:
- on CUDA, in fp16/bf16 and without attention dropout, PyTorch's flash varlen kernel
  (`torch.nn.attention.varlen.varlen_attn`) takes the sequence borders directly;
- otherwise each layer scatters its queries, keys and values into a padded [batch, heads, longest,
  dim] block, runs `scaled_dot_product_attention` with a key mask, and gathers the result back.
Both give the padded model's logits (tested); the second is the fallback that runs anywhere.

The attention function is registered with transformers' `AttentionInterface`, so the model's own
modules stay unchanged; without packing arguments it is plain SDPA, so the same model evaluates
and predicts on ordinary padded batches. BERT-architecture classifiers (BERT, MiniLM) only: other
families train padded.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from bertsent.errors import BertsentError
from bertsent.modeling.batching import flat_token_ids

ATTENTION = "bertsent_packed"
_packed_calls = [0]  # attention calls that received the sequence borders (see PackedClassifier.forward)


def supports_packing(model) -> bool:
    from transformers import BertForSequenceClassification

    return isinstance(model, BertForSequenceClassification) and not model.config.is_decoder


_VARLEN_ATTN: Callable[..., Any] | None = None
with contextlib.suppress(ImportError):  # PyTorch's flash varlen attention, from PyTorch 2.10 on
    from torch.nn.attention.varlen import varlen_attn

    _VARLEN_ATTN = varlen_attn


def varlen_kernel() -> Callable[..., Any] | None:
    """PyTorch's flash varlen attention, or None where this PyTorch lacks it."""
    return _VARLEN_ATTN


class PackedCollator:
    """Token-id lists -> one row of all tokens, with each sequence's position ids and borders."""

    def __call__(self, examples: list[tuple[list[int], int | None]]) -> dict:
        counts, flat = flat_token_ids(examples)
        lengths, input_ids = torch.from_numpy(counts), torch.from_numpy(flat)
        starts = torch.cumsum(lengths, 0) - lengths
        rows = torch.repeat_interleave(torch.arange(len(examples)), lengths)
        positions = torch.arange(len(input_ids)) - starts[rows]  # 0, 1, ... within each sequence
        longest = int(lengths.max())
        batch = {
            "input_ids": input_ids[None],
            "position_ids": positions[None],
            "cu_seq_lens": torch.cat([torch.zeros(1, dtype=torch.int32), torch.cumsum(lengths, 0).int()]),
            "max_length": longest,  # an int: the varlen kernel wants it on the host
            # For the padded-attention fallback: each token's slot in a [batch x longest] block,
            # and which slots hold a token.
            "pad_index": rows * longest + positions,
            "key_mask": torch.arange(longest)[None, :] < lengths[:, None],
        }
        if examples[0][1] is not None:
            batch["labels"] = torch.tensor([label for _, label in examples], dtype=torch.long)
        return batch


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers attention function: [1, heads, tokens, dim] packed, or ordinary padded batches."""
    cu_seq_lens = kwargs.get("cu_seq_lens_q")
    if cu_seq_lens is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    _packed_calls[0] += 1
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [tokens, heads, dim]
    kernel = varlen_kernel()
    if kernel is not None and _varlen_applies(q, dropout, scaling):
        longest = kwargs["max_length_q"]
        out = kernel(q, k, v, cu_seq_lens, cu_seq_lens, longest, longest)
    else:
        out = _padded_attention(q, k, v, kwargs["pad_index"], kwargs["key_mask"], dropout, scaling)
    return out[None], None  # [1, tokens, heads, dim], as transformers' attention functions return


def _varlen_applies(q, dropout: float, scaling) -> bool:
    """The flash varlen kernel: CUDA, half precision, no attention dropout (it has none), the default scale
    1/sqrt(dim) (`scale=` exists only in newer PyTorch versions)."""
    default_scale = scaling is None or math.isclose(scaling, q.shape[-1] ** -0.5)
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and dropout == 0.0 and default_scale


def _padded_attention(q, k, v, pad_index, key_mask, dropout, scaling):
    n_sequences, longest = key_mask.shape
    heads, dim = q.shape[1], q.shape[2]

    def to_padded(x):
        block = x.new_zeros(n_sequences * longest, heads, dim).index_copy(0, pad_index, x)
        return block.view(n_sequences, longest, heads, dim).transpose(1, 2)

    out = F.scaled_dot_product_attention(
        to_padded(q), to_padded(k), to_padded(v), attn_mask=key_mask[:, None, None, :], dropout_p=dropout, scale=scaling
    )
    return out.transpose(1, 2).reshape(n_sequences * longest, heads, dim).index_select(0, pad_index)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, packed_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # padded batches get SDPA's mask


class PackedClassifier(torch.nn.Module):
    """Runs a BERT sequence classifier on packed batches; `classifier` is the model, unchanged.

    The classification head reads each sequence's first ([CLS]) token, wherever it sits in the row.
    """

    def __init__(self, classifier):
        super().__init__()
        if not supports_packing(classifier):
            raise ValueError(f"packing supports BERT sequence classifiers, not {type(classifier).__name__}")
        _register()
        classifier.set_attn_implementation(ATTENTION)
        self.classifier = classifier

    def forward(self, input_ids, position_ids, cu_seq_lens, max_length, pad_index, key_mask, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        model = self.classifier
        calls_before = _packed_calls[0]
        hidden = model.bert(
            input_ids=input_ids,
            position_ids=position_ids,
            token_type_ids=torch.zeros_like(input_ids),
            cu_seq_lens_q=cu_seq_lens,
            cu_seq_lens_k=cu_seq_lens,
            max_length_q=max_length,
            max_length_k=max_length,
            pad_index=pad_index,
            key_mask=key_mask,
        ).last_hidden_state
        if _packed_calls[0] == calls_before:
            # Without the borders, attention would mix the sequences of the row: refuse, never train on that.
            raise BertsentError(
                "--packing: this transformers version does not pass the packing arguments to "
                "the attention layers. Train without --packing, or upgrade transformers."
            )
        first_tokens = hidden[0, cu_seq_lens[:-1].long()]  # [sequences, hidden]
        logits = model.classifier(model.dropout(model.bert.pooler(first_tokens[:, None])))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def unpack(self):
        """The classifier, back on plain SDPA attention (what it saves and loads with)."""
        restore_attention(self.classifier)
        return self.classifier


def restore_attention(model) -> None:
    """A model trained packed, back on plain SDPA attention: what it is saved and loaded with."""
    model.set_attn_implementation("sdpa")
