"""Packed (unpadded) batches: same logits and gradients as padded ones, and the same trained model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import bertsent
from bertsent.modeling import hub
from bertsent.modeling.batching import Collator
from bertsent.modeling.packing import ATTENTION, PackedClassifier, PackedCollator, supports_packing
from bertsent.modeling.tokens import encode

from conftest import cli_args, make_reviews, one_line_error, train_toy


def _examples(tokenizer, texts, labels=None):
    ids = encode(tokenizer, texts, 64)
    return [(x, None if labels is None else labels[i]) for i, x in enumerate(ids)]


TEXTS = [
    "a good film",
    "this was a terribly boring movie with nothing to say about anything at all",
    "ok",
    "great " * 30,
    "the acting was wonderful and the plot moving",
]


def test_collator_lays_sequences_end_to_end():
    batch = PackedCollator()([([101, 7, 102], 1), ([101, 5, 6, 8, 102], 0), ([101, 102], 1)])
    assert batch["input_ids"].tolist() == [[101, 7, 102, 101, 5, 6, 8, 102, 101, 102]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 3, 4, 0, 1]]
    assert batch["cu_seq_lens"].tolist() == [0, 3, 8, 10] and batch["cu_seq_lens"].dtype == torch.int32
    assert batch["max_length"] == 5 and batch["labels"].tolist() == [1, 0, 1]
    # the fallback's padded block: row r holds sequence r from column 0, the mask marks its tokens
    assert batch["pad_index"].tolist() == [0, 1, 2, 5, 6, 7, 8, 9, 10, 11]
    assert batch["key_mask"].sum(1).tolist() == [3, 5, 2]
    assert "labels" not in PackedCollator()([([101, 102], None)])


def test_packed_logits_and_gradients_equal_padded(tiny_model_dir):
    tokenizer = hub.load_tokenizer(str(tiny_model_dir))
    examples = _examples(tokenizer, TEXTS, [0, 1, 0, 1, 1])
    torch.manual_seed(0)
    model = hub.load_classifier(str(tiny_model_dir), ["negative", "positive"]).eval()
    padded = model(**Collator(tokenizer.pad_token_id)(examples))
    padded.loss.backward()
    padded_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    packed_model = PackedClassifier(model).eval()
    packed = packed_model(**PackedCollator()(examples))
    packed.loss.backward()
    torch.testing.assert_close(packed.logits, padded.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed.loss, padded.loss, atol=1e-6, rtol=1e-6)
    assert set(padded_grads) == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, grad in padded_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, atol=1e-5, rtol=1e-4)


def test_packed_model_still_runs_padded_batches_and_unpacks(tiny_model_dir):
    """Evaluation during packed training uses ordinary batches on the same model."""
    tokenizer = hub.load_tokenizer(str(tiny_model_dir))
    examples = _examples(tokenizer, TEXTS)
    model = hub.load_classifier(str(tiny_model_dir), ["negative", "positive"]).eval()
    collate = Collator(tokenizer.pad_token_id)
    before = model(**collate(examples)).logits
    packed = PackedClassifier(model)
    assert model.config._attn_implementation == ATTENTION
    torch.testing.assert_close(model(**collate(examples)).logits, before)
    assert packed.unpack() is model and model.config._attn_implementation == "sdpa"


def test_attention_dropout_runs_in_the_padded_fallback(tiny_model_dir, monkeypatch):
    """The varlen kernel has no dropout: with attention dropout on, packed attention takes the padded path,
    where the dropout really acts (different masks, different logits) and gradients reach attention."""
    from bertsent.modeling import packing

    calls = []

    def varlen(q, k, v, cu_q, cu_k, max_q, max_k):  # a stand-in for the kernel, as if on a GPU
        calls.append(1)
        out = torch.empty_like(q)
        for start, end in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
            piece = [x[start:end].transpose(0, 1) for x in (q, k, v)]
            out[start:end] = torch.nn.functional.scaled_dot_product_attention(*piece).transpose(0, 1)
        return out

    monkeypatch.setattr(packing, "varlen_kernel", lambda: varlen)
    # The kernel's rule without its device and dtype conditions: it applies only without attention dropout.
    monkeypatch.setattr(packing, "_varlen_applies", lambda q, dropout, scaling: dropout == 0.0)
    tokenizer = hub.load_tokenizer(str(tiny_model_dir))
    model = hub.load_classifier(str(tiny_model_dir), ["negative", "positive"], attention_dropout=0.5)
    for name, module in model.named_modules():  # only attention dropout left, so any difference comes from it
        if isinstance(module, torch.nn.Dropout) and not name.endswith("attention.self.dropout"):
            module.p = 0.0
    batch = PackedCollator()(_examples(tokenizer, TEXTS, [0, 1, 0, 1, 1]))
    packed = PackedClassifier(model).train()
    torch.manual_seed(1)
    first = packed(**batch)
    torch.manual_seed(2)
    second = packed(**batch).logits
    torch.manual_seed(1)
    again = packed(**batch).logits
    assert not torch.equal(first.logits, second) and torch.equal(first.logits, again)
    assert calls == []  # dropout on: the padded path, never the kernel
    first.loss.backward()
    query = model.bert.encoder.layer[0].attention.self.query.weight
    assert query.grad is not None and query.grad.abs().sum() > 0
    packed.eval()  # no dropout: the padded model's logits
    padded = model(**Collator(tokenizer.pad_token_id)(_examples(tokenizer, TEXTS))).logits
    torch.testing.assert_close(packed(**batch).logits, padded, atol=1e-5, rtol=1e-5)
    assert len(calls) == 2  # dropout off: the kernel, in both layers


def test_packed_training_ends_with_the_padded_runs_model(no_dropout_dir, tmp_path):
    base = no_dropout_dir  # dropout off, so packed and padded training draw no different random masks
    val_texts, val_labels = make_reviews(32, seed=2)
    toy = {"train": make_reviews(96, seed=1), "val": (val_texts, val_labels), "epochs": 2, "lr": 2e-3}
    train_toy(base, tmp_path / "padded", **toy)
    lines = []
    train_toy(base, tmp_path / "packed", packing=True, log=lines.append, **toy)
    assert any("packed (no padding)" in line for line in lines)

    padded, packed = bertsent.load(tmp_path / "padded"), bertsent.load(tmp_path / "packed")
    np.testing.assert_allclose(packed.decision_function(val_texts), padded.decision_function(val_texts), atol=2e-4)
    # the folder is an ordinary transformers model: plain SDPA attention, the packed training recorded
    assert json.loads((tmp_path / "packed" / "config.json").read_text()).get("_attn_implementation") != ATTENTION
    assert json.loads((tmp_path / "packed" / "bertsent.json").read_text())["settings"]["packing"] is True


def test_packing_learns_the_toy_task(tiny_model_dir, tmp_path):
    result = train_toy(tiny_model_dir, tmp_path / "m", packing=True, attention_dropout=0.0)
    assert result.metrics["accuracy"] >= 0.9


def test_packing_falls_back_to_padded_batches_for_other_architectures(tiny_model_dir, tmp_path):
    from test_model import _tiny_distilbert

    base = _tiny_distilbert(tiny_model_dir, tmp_path / "base")
    assert not supports_packing(hub.load_classifier(str(base), ["a", "b"]))
    lines = []
    train_toy(
        base,
        tmp_path / "m",
        make_reviews(40, seed=1),
        None,
        epochs=1,
        packing=True,
        validation_fraction=0,
        log=lines.append,
    )
    assert any("Packing: not available for DistilBertForSequenceClassification" in line for line in lines)
    assert json.loads((tmp_path / "m" / "bertsent.json").read_text())["settings"]["packing"] is False


def test_packing_with_padding_to_max_length_is_a_usage_error(tiny_model_dir, tmp_path, write_csv, capsys):
    from bertsent.cli import main

    data = write_csv(list(zip(*make_reviews(20))))
    code = main(
        cli_args(
            "train", data=data, model=tiny_model_dir, recipe="tutorial", packing=True, out=tmp_path / "m", quiet=True
        )
    )
    err = one_line_error(capsys, "train")
    assert code == 2 and "--packing" in err and "--recipe fast" in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("flag, expected", [([], False), (["--packing"], True)])
def test_cli_packing_flag_reaches_the_settings(flag, expected, tiny_model_dir, tmp_path, write_csv):
    from bertsent.cli import main

    data = write_csv(list(zip(*make_reviews(40, seed=1))))
    flags = {
        "data": data,
        "model": tiny_model_dir,
        "epochs": 1,
        "quiet": True,
        "no_report": True,
        "out": tmp_path / "m",
    }
    code = main([*cli_args("train", **flags), *flag])
    assert code == 0
    assert json.loads((tmp_path / "m" / "bertsent.json").read_text())["settings"]["packing"] is expected


def test_packing_refuses_to_run_when_attention_gets_no_sequence_borders(tiny_model_dir, monkeypatch):
    """A transformers version that dropped the packing arguments would silently mix sequences."""
    from transformers.models.bert import modeling_bert

    tokenizer = hub.load_tokenizer(str(tiny_model_dir))
    model = hub.load_classifier(str(tiny_model_dir), ["negative", "positive"])
    packed = PackedClassifier(model)
    original = modeling_bert.BertEncoder.forward
    monkeypatch.setattr(
        modeling_bert.BertEncoder,
        "forward",
        lambda self, hidden_states, attention_mask=None, **kwargs: original(self, hidden_states, attention_mask),
    )
    with pytest.raises(bertsent.BertsentError, match="does not pass the packing arguments"):
        packed(**PackedCollator()(_examples(tokenizer, TEXTS, [0, 1, 0, 1, 1])))


def test_varlen_kernel_receives_tokens_heads_dim_and_borders(tiny_model_dir, monkeypatch):
    """The CUDA path, on CPU: a stand-in kernel with varlen_attn's documented contract ([tokens, heads, dim]
    inputs, cumulative borders, longest length) must give the padded model's logits."""
    from bertsent.modeling import packing

    seen = []

    def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k):
        assert q.shape == k.shape == v.shape and q.ndim == 3 and cu_q.dtype == torch.int32
        assert torch.equal(cu_q, cu_k) and max_q == max_k == int((cu_q[1:] - cu_q[:-1]).max())
        seen.append(len(cu_q) - 1)
        out = torch.empty_like(q)
        for start, end in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
            piece = [x[start:end].transpose(0, 1) for x in (q, k, v)]  # [heads, length, dim]
            out[start:end] = torch.nn.functional.scaled_dot_product_attention(*piece).transpose(0, 1)
        return out

    monkeypatch.setattr(packing, "varlen_kernel", lambda: reference_varlen)
    monkeypatch.setattr(packing, "_varlen_applies", lambda q, dropout, scaling: True)
    tokenizer = hub.load_tokenizer(str(tiny_model_dir))
    examples = _examples(tokenizer, TEXTS, [0, 1, 0, 1, 1])
    model = hub.load_classifier(str(tiny_model_dir), ["negative", "positive"]).eval()
    padded = model(**Collator(tokenizer.pad_token_id)(examples)).logits
    packed = PackedClassifier(model)(**PackedCollator()(examples)).logits
    assert seen == [5, 5]  # both layers, five sequences each
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
