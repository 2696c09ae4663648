"""The training engine: truncation strategies, gradient accumulation, out-of-memory back-off."""

import json

import pytest
import torch
from safetensors.torch import load_file

import bertsent
from bertsent.data.sources import TextDataset
from bertsent.modeling import hub
from bertsent.modeling.tokens import encode
from bertsent.runtime import is_out_of_memory
from bertsent.training import TrainConfig, fit

from conftest import make_reviews, watch_forward

QUIET = dict(progress=False, log=lambda *_: None, report=False)


# ----------------------------------------------------------------------------- truncation


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return hub.load_tokenizer(str(minilm_dir))


@pytest.fixture(scope="module")
def words(tokenizer):
    """600 distinct words that are one token each, so token positions map to words."""
    vocab = sorted((i, w) for w, i in tokenizer.get_vocab().items() if w.isalpha() and w.isascii() and len(w) > 2)
    chosen = []
    for _, word in vocab[2000:4000]:
        if len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1:
            chosen.append(word)
        if len(chosen) == 600:
            break
    assert len(chosen) == 600
    return chosen


def test_truncation_keeps_head_tail_or_both_and_the_special_tokens(tokenizer, words):
    body = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    assert len(body) == 600
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    (head,), (length,) = encode(tokenizer, [" ".join(words)], 64, "head", return_lengths=True)
    assert length == 602  # the full length, specials included
    assert head == [cls] + body[:62] + [sep]
    (tail,) = encode(tokenizer, [" ".join(words)], 64, "tail")
    assert tail == [cls] + body[-62:] + [sep]
    (both,) = encode(tokenizer, [" ".join(words)], 64, "head+tail")
    assert both == [cls] + body[:16] + body[-46:] + [sep]  # 128/512 of the length from the head
    (both512,) = encode(tokenizer, [" ".join(words)], 512, "head+tail")
    assert both512 == [cls] + body[:128] + body[-382:] + [sep]  # Sun et al.: first 128, last 382
    for ids in (head, tail, both, both512):
        assert len(ids) in (64, 512)


def test_short_texts_are_untouched_and_bad_strategy_is_refused(tokenizer, words):
    text = " ".join(words[:10])
    expected = tokenizer(text)["input_ids"]
    for strategy in ("head", "tail", "head+tail"):
        assert encode(tokenizer, [text], 12, strategy) == [expected]
    with pytest.raises(ValueError, match="truncation"):
        encode(tokenizer, [text], 12, "middle")


# ----------------------------------------------------------------------------- training equivalences


def _train(folder, out, n=16, log=None, **settings):
    texts, labels = make_reviews(n, seed=3)
    config = TrainConfig(
        model=str(folder),
        validation_fraction=0.0,
        calibrate=False,
        lr=1e-2,
        **{"epochs": 3, "batch_size": 16} | settings,
    )
    result = fit(TextDataset(texts, labels, name="toy"), None, config, out, **(QUIET | ({"log": log} if log else {})))
    return load_file(str(out / "model.safetensors")), result


def _assert_same_weights(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol, rtol=1e-4), name


def test_gradient_accumulation_matches_the_bigger_batch(no_dropout_dir, tmp_path):
    # 16 examples: one batch of 16, or two of 8 accumulated; one optimizer step per epoch either way.
    big, _ = _train(no_dropout_dir, tmp_path / "b16", batch_size=16)
    accumulated, _ = _train(no_dropout_dir, tmp_path / "b8x2", batch_size=8, grad_accum=2)
    start = load_file(str(no_dropout_dir / "model.safetensors"))
    moved = [n for n in start if f"bert.{n}" in big and not torch.equal(start[n], big[f"bert.{n}"])]
    assert moved  # it trained
    _assert_same_weights(big, accumulated)


# ----------------------------------------------------------------------------- out-of-memory back-off


def test_out_of_memory_errors_are_recognised():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
            "allocate memory: you tried to allocate 123 bytes"
        )
    )
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))


@pytest.fixture
def memory_limit(monkeypatch):
    """Models loaded by fit() raise torch.OutOfMemoryError on batches of more than limit['rows'] sequences,
    from forward call number limit['from_call'] on; limit['calls'] counts the forward calls."""
    limit = {"rows": 10**9, "from_call": 1, "calls": 0, "error": torch.OutOfMemoryError}

    def before(k):
        limit["calls"] += 1
        if k["input_ids"].shape[0] > limit["rows"] and limit["calls"] >= limit["from_call"]:
            raise limit["error"]("CUDA out of memory. Tried to allocate 1.00 GiB (simulated)")

    watch_forward(monkeypatch, before)
    return limit


def test_out_of_memory_mid_run_halves_the_micro_batch_and_keeps_the_update(no_dropout_dir, tmp_path, memory_limit):
    plain, _ = _train(no_dropout_dir, tmp_path / "plain", n=32, batch_size=8, grad_accum=2)
    # The second batch of the first accumulation window fails; so does its rerun in micro-batches of 4: the
    # window runs again in micro-batches of 2, and so does everything after it.
    memory_limit.update(rows=3, from_call=2, calls=0)
    said = []
    backed_off, _ = _train(no_dropout_dir, tmp_path / "oom", n=32, batch_size=8, grad_accum=2, log=said.append)
    _assert_same_weights(plain, backed_off)
    backoffs = [m for m in said if m.startswith("Out of memory in training")]
    assert [m.split("micro-batches of ")[1].split()[0] for m in backoffs] == ["4", "2"]
    steps = (tmp_path / "oom" / "metrics.jsonl").read_text().splitlines()
    assert len(steps) == 3 * 2  # the same optimizer steps: 32 / (8 x 2) per epoch, 3 epochs
    # ok, out of memory, out of memory again at 4, the window's 2 batches at 2, the other 10 batches at 2
    assert memory_limit["calls"] == 1 + 1 + 1 + 2 * 4 + 10 * 4


def test_out_of_memory_for_a_single_sequence_is_a_clear_error(no_dropout_dir, tmp_path, memory_limit):
    memory_limit.update(rows=0)
    with pytest.raises(bertsent.BertsentError, match="out of memory .*one sequence at a time"):
        _train(no_dropout_dir, tmp_path / "m", batch_size=4)
    assert not (tmp_path / "m").exists()


def test_other_errors_are_not_taken_for_out_of_memory(no_dropout_dir, tmp_path, memory_limit):
    memory_limit.update(rows=0, error=lambda message: RuntimeError("something else broke"))
    with pytest.raises(RuntimeError, match="something else broke"):
        _train(no_dropout_dir, tmp_path / "m", batch_size=4)
    assert memory_limit["calls"] == 1


def test_auto_batch_size_probes_down_and_trains_the_recipe_batch(no_dropout_dir, tmp_path, memory_limit):
    plain, _ = _train(no_dropout_dir, tmp_path / "plain", n=64, epochs=1, batch_size=32)
    memory_limit.update(rows=8, calls=0)
    auto, result = _train(no_dropout_dir, tmp_path / "auto", n=64, epochs=1, batch_size="auto")
    assert result.settings["batch_size"] == 32  # the fast recipe's batch: the same optimization ...
    assert result.settings["micro_batch_size"] == 8  # ... run 8 sequences at a time (32 and 16 ran out)
    _assert_same_weights(plain, auto)
    meta = json.loads((tmp_path / "auto" / "bertsent.json").read_text())
    assert meta["settings"]["micro_batch_size"] == 8
