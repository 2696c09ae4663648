"""`--truncation windows` in training: every window of a long text is an example with the text's label, a text
is scored by its windows' mean logits (as prediction's `windows` scores it), and the model folder remembers it."""

from __future__ import annotations

import dataclasses
import importlib
import json
import random

import numpy as np
import pytest

import bertsent
from bertsent.cli import main
from bertsent.data.sources import TextDataset
from bertsent.evaluation.metrics import score_logits
from bertsent.modeling import hub
from bertsent.modeling.tokens import tokenize, truncate, windows
from bertsent.prediction.predictor import SentimentModel
from bertsent.training import TrainConfig, fit
from bertsent.training.fit import encode_examples

from conftest import FILLER, NEGATIVE_WORDS, POSITIVE_WORDS, make_reviews

QUIET = dict(progress=False, log=lambda *_: None, report=False)
WINDOWS = dict(truncation="windows", max_length=32)


def long_reviews(n: int, words: int = 200, seed: int = 0) -> tuple[list[str], list[str]]:
    """Reviews of about `words` tokens (every word here is one WordPiece token), a sentiment word every 20th."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = ("negative", "positive")[i % 2]
        cue = NEGATIVE_WORDS if label == "negative" else POSITIVE_WORDS
        body = [rng.choice(cue) if j % 20 == 7 else rng.choice(FILLER) for j in range(words)]
        texts.append(" ".join(body))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return hub.load_tokenizer(tiny_model_dir)


def resolved(tokenizer, lengths, **settings) -> TrainConfig:
    return TrainConfig(**settings).resolve(
        parameters=1_000_000,
        max_positions=128,
        token_lengths=lengths,
        packing_supported=True,
        special_tokens=tokenizer.num_special_tokens_to_add(),
    )


def test_a_text_over_the_limit_gives_several_windows_with_its_label(tokenizer):
    texts, _ = long_reviews(1, words=200)
    texts.append("a short great film")
    tokens = tokenize(tokenizer, texts)
    assert len(tokens[0][0]) == 202  # [CLS] + 200 words + [SEP]: built to exceed 32
    config = resolved(tokenizer, [len(ids) for ids, _ in tokens], truncation="windows", max_length=32)
    assert (config.stride, config.max_windows) == (30, 8)  # a whole window of text tokens; the default cap

    ids, labels, owner = encode_examples(tokens, [1, 0], dataclasses.replace(config, max_windows=99))
    assert owner == [0] * 7 + [1]  # 200 tokens in windows of 30, side by side, the last flush with the end
    assert labels == [1] * 7 + [0]
    assert all(len(window) <= 32 for window in ids)
    expected, _ = windows(tokens, 32, 30)  # exactly prediction's windows
    assert ids == expected
    body = [t for window in ids[:7] for t in window[1:-1]]
    assert set(tokens[0][0][1:-1]) <= set(body) and body[:30] == tokens[0][0][1:31]
    assert all(w[0] == tokenizer.cls_token_id and w[-1] == tokenizer.sep_token_id for w in ids)

    capped = resolved(tokenizer, [202, 6], truncation="windows", max_length=32, stride=10, max_windows=4)
    ids, labels, owner = encode_examples(tokens, [1, 0], capped)
    all_windows, _ = windows(tokens, 32, 10)
    assert len(all_windows) == 18 + 1  # starts 0, 10, ..., 160 and 170
    assert owner == [0, 0, 0, 0, 1] and labels == [1, 1, 1, 1, 0]
    assert ids == [all_windows[i] for i in (0, 6, 11, 17, 18)]  # spread over the text, first and last kept


def test_other_truncations_give_one_example_per_text(tokenizer):
    texts, _ = long_reviews(2, words=200)
    tokens = tokenize(tokenizer, texts)
    config = resolved(tokenizer, [202, 202], truncation="head+tail", max_length=32)
    ids, labels, owner = encode_examples(tokens, [0, 1], config)
    assert owner is None and labels == [0, 1] and ids == truncate(tokens, 32, "head+tail")
    assert config.stride is None and config.max_windows is None


def test_validation_scores_a_long_text_by_its_windows_mean_logits_as_prediction_does(
    tiny_model_dir, tmp_path, monkeypatch
):
    fit_module = importlib.import_module("bertsent.training.fit")  # the module: the package's `fit` is the function
    built = []

    class Recorded(fit_module.ValidationSet):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(fit_module, "ValidationSet", Recorded)
    texts, labels = long_reviews(40, words=100, seed=3)
    val_texts, val_labels = long_reviews(10, words=150, seed=2)
    out = tmp_path / "model"
    settings = dict(model=str(tiny_model_dir), truncation="windows", max_length=32, stride=20, epochs=4)
    logs = []
    fit(
        TextDataset(texts, labels, name="long"),
        TextDataset(val_texts, val_labels, name="long val"),
        TrainConfig(**settings, batch_size=16, lr=5e-3, calibrate=False),
        out,
        progress=False,
        log=logs.append,
        report=False,
    )
    assert any(line.startswith("Windows: 200 training examples from 40 texts (stride 20") for line in logs)
    meta = json.loads((out / "bertsent.json").read_text())
    assert (meta["truncation"], meta["max_length"], meta["stride"]) == ("windows", 32, 20)

    model = bertsent.load(out, backend="torch")
    assert (model.truncation, model.max_length, model.stride) == ("windows", 32, 20)  # the training windows by default
    predicted = model.decision_function(val_texts)
    (validation_set,) = built
    assert len(validation_set.ids) == 7 * len(val_texts)  # 150 tokens: windows at 0, 20, ..., 100 and 120
    evaluated = validation_set.logits(model.model)
    np.testing.assert_allclose(evaluated, predicted, rtol=1e-5, atol=1e-5)  # the same score for every text
    # ...which is the mean of the text's windows' logits
    first, _ = windows(tokenize(model.tokenizer, val_texts[:1]), 32, 20)
    np.testing.assert_allclose(predicted[0], model.backend.logits(first).mean(axis=0), rtol=1e-5, atol=1e-5)
    head = SentimentModel.load(out, backend="torch", truncation="head").decision_function(val_texts)
    assert np.abs(head - predicted).max() > 1e-3  # one window per text would have scored otherwise
    # the run's recorded validation scores are those of these logits
    scores = score_logits(predicted, val_labels, model.classes_).metrics
    assert meta["metrics"]["validation"]["loss"] == pytest.approx(scores["loss"], abs=1e-5)
    assert meta["metrics"]["validation"]["accuracy"] == pytest.approx(scores["accuracy"])


def test_windows_train_packed_and_learn(tiny_model_dir, tmp_path):
    texts, labels = long_reviews(40, words=100, seed=3)
    val_texts, val_labels = long_reviews(12, words=100, seed=4)
    result = fit(
        TextDataset(texts, labels, name="long"),
        TextDataset(val_texts, val_labels, name="long val"),
        TrainConfig(**WINDOWS, model=str(tiny_model_dir), packing=True, epochs=4, batch_size=16, lr=5e-3),
        tmp_path / "packed",
        **QUIET,
    )
    assert result.settings["packing"] is True and result.settings["truncation"] == "windows"
    assert result.metrics["accuracy"] >= 0.9  # the cue words are spread over the windows: each window can tell


def test_train_with_windows_through_the_command_line(tiny_model_dir, write_csv, tmp_path, capsys):
    texts, labels = long_reviews(30, words=80, seed=5)
    short, short_labels = make_reviews(30, seed=6)
    data = write_csv(list(zip(texts + short, labels + short_labels)), "long.csv")
    out = tmp_path / "cli-model"
    code = main(
        ["train", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(out), "--epochs", "1",
         "--max-length", "32", "--truncation", "windows", "--stride", "15", "--max-windows", "3", "--quiet",
         "--no-report"]
    )  # fmt: skip
    assert code == 0
    meta = json.loads((out / "bertsent.json").read_text())
    assert meta["settings"]["truncation"] == "windows" and meta["settings"]["max_windows"] == 3
    assert meta["stride"] == 15
    assert main(["predict", str(out), "--file", str(data), "--out", str(tmp_path / "scored.csv")]) == 0
    assert bertsent.load(out).stride == 15


BAD_STRIDES = [
    (["--truncation", "windows", "--stride", "0"], "--stride 0: must be at least 1."),
    (["--truncation", "windows", "--stride", "two"], "--stride two: give a whole number."),
    (["--truncation", "windows", "--stride", "31"], "--stride 31: must not exceed a window's 30 text tokens"),
    (["--stride", "10"], "--stride 10: only with --truncation windows."),
    (["--truncation", "windows", "--max-windows", "0"], "--max-windows 0: must be at least 1."),
    (["--max-windows", "4"], "--max-windows 4: only with --truncation windows."),
]


@pytest.mark.parametrize("flags, message", BAD_STRIDES, ids=[" ".join(f) for f, _ in BAD_STRIDES])
def test_bad_strides_are_refused_in_one_line(flags, message, tiny_model_dir, reviews_csv, tmp_path, capsys):
    out = tmp_path / "never"
    args = ["train", "--data", str(reviews_csv), "--model", str(tiny_model_dir), "--max-length", "32"]
    code = main([*args, "--out", str(out), "--quiet", *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_windows_run_resumes_to_the_same_model(tiny_model_dir, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    texts, labels = long_reviews(24, words=60, seed=7)
    train = TextDataset(texts, labels, name="long")
    settings = dict(
        model=str(tiny_model_dir), truncation="windows", max_length=32, stride=15, epochs=2, batch_size=16,
        lr=3e-3, checkpoint_every=3, validation_fraction=0.0,
    )  # fmt: skip
    fit(train, None, TrainConfig(**settings), tmp_path / "straight", **QUIET)

    original, calls = torch.optim.AdamW.step, [0]

    def failing(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 5:
            raise RuntimeError("simulated crash")
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch.optim.AdamW, "step", failing)
        with pytest.raises(RuntimeError, match="simulated crash"):
            fit(train, None, TrainConfig(**settings), tmp_path / "crashed", **QUIET)
    fit(train, None, TrainConfig(**settings), tmp_path / "crashed", resume=True, **QUIET)
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "crashed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line) for line in (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in steps) == 2 * -(-24 * 3 // 16)  # 60 text tokens: windows at 0, 15, 30


@pytest.mark.slow
def test_two_processes_train_on_windows_as_one_process_with_the_same_global_batch(no_dropout_dir, tmp_path):
    import shutil

    import pandas as pd
    import torch
    from safetensors.torch import load_file
    from test_distributed import _run, _torchrun

    shutil.copytree(no_dropout_dir, tmp_path / "tiny")
    texts, labels = long_reviews(30, words=70, seed=8)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(tmp_path / "train.csv", index=False)
    val_texts, val_labels = long_reviews(8, words=90, seed=9)
    pd.DataFrame({"text": val_texts, "label": val_labels}).to_csv(tmp_path / "val.csv", index=False)

    def args(out: str, batch: int) -> list[str]:
        return ["-m", "bertsent", "train", "--data", "train.csv", "--eval-data", "val.csv", "--model", "tiny",
                "--truncation", "windows", "--max-length", "32", "--stride", "20", "--epochs", "2", "--batch-size",
                str(batch), "--lr", "5e-3", "--quiet", "--no-report", "--out", out]  # fmt: skip

    one = _run(tmp_path, *args("one", 16))
    assert one.returncode == 0, one.stderr
    two = _torchrun(tmp_path, *args("two", 8))
    assert two.returncode == 0, two.stderr
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    # the validation windows, shared out over the processes, averaged into the same texts' scores
    one, two = (
        json.loads((tmp_path / run / "bertsent.json").read_text())["metrics"]["validation"] for run in ("one", "two")
    )
    assert one["loss"] == pytest.approx(two["loss"], abs=1e-4)


@pytest.mark.slow
def test_a_windows_model_exports_and_its_onnx_model_scores_the_same_windows(tiny_model_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from bertsent.prediction import export

    texts, labels = long_reviews(export.MIN_DATA_ROWS, words=60, seed=10)  # the fewest export --data takes
    out = tmp_path / "model"
    fit(TextDataset(texts, labels), None, TrainConfig(**WINDOWS, model=str(tiny_model_dir), stride=10, epochs=1,
                                                      validation_fraction=0.0), out, **QUIET)  # fmt: skip
    summary = export.export_onnx(out, data=TextDataset(texts, labels, name="long"), log=lambda *_: None)
    assert summary["truncation"] == "head"  # the export's own checks score each text's first window
    torch_model, onnx_model = bertsent.load(out, backend="torch"), bertsent.load(out, backend="onnx")
    assert torch_model.stride == onnx_model.stride == 10
    np.testing.assert_allclose(
        onnx_model.decision_function(texts), torch_model.decision_function(texts), rtol=1e-3, atol=1e-4
    )
