"""Shared fixtures: a tiny random BERT built from the packaged vocab, and small learnable data."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config):
    # Tiny models gain nothing from a second thread, and under CPU contention (pytest -n 2, another
    # process) two spinning threads on two cores make training many times slower.
    import torch

    torch.set_num_threads(int(os.environ.get("BERTSENT_TEST_THREADS", "1")))


POSITIVE_WORDS = ["great", "wonderful", "excellent", "loved", "brilliant", "superb", "delightful", "moving"]
NEGATIVE_WORDS = ["awful", "terrible", "boring", "hated", "dreadful", "dull", "weak", "painful"]
NEUTRAL_WORDS = ["average", "okay", "ordinary", "fine", "mixed", "plain", "middling", "so-so"]
FILLER = ["the", "movie", "film", "plot", "acting", "was", "really", "story", "and", "ending", "cast", "quite"]


def make_reviews(n: int, seed: int = 0, classes=("negative", "positive")) -> tuple[list[str], list[str]]:
    """Short synthetic reviews whose label is given away by a sentiment word: learnable in a few steps."""
    rng = random.Random(seed)
    words = {"negative": NEGATIVE_WORDS, "positive": POSITIVE_WORDS, "neutral": NEUTRAL_WORDS}
    texts, labels = [], []
    for i in range(n):
        label = classes[i % len(classes)]
        body = rng.sample(FILLER, rng.randint(3, 8))
        body.insert(rng.randint(0, len(body)), rng.choice(words[label]))
        texts.append(" ".join(body))
        labels.append(label)
    return texts, labels


def read_csv_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from bertsent.modeling.hub import resolve_model

    return Path(resolve_model("minilm"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with the packaged WordPiece vocab: loads and trains in moments."""
    from bertsent.modeling.tiny import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def no_dropout_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny BERT without dropout: equal gradients give equal weights, whatever the random stream (packed
    and padded batches, micro-batches, processes draw different random masks)."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("tiny-no-dropout")
    shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def train_toy(model, out, train=None, val="toy", *, name="toy", **overrides):
    """Fine-tune `model` quietly on `train` (texts, labels; default make_reviews(120, seed=1)), validated on `val`
    (default make_reviews(40, seed=2); None: no validation set); `overrides` replace the toy settings."""
    import bertsent
    from bertsent.data.sources import TextDataset

    train = train or make_reviews(120, seed=1)
    val = make_reviews(40, seed=2) if val == "toy" else val
    settings = {"epochs": 5, "batch_size": 16, "lr": 5e-3, "progress": False, "log": lambda *_: None, "report": False}
    return bertsent.train(
        TextDataset(*train, name=name),
        None if val is None else TextDataset(*val, name=f"{name} val"),
        out=out,
        model=str(model),
        **(settings | overrides),
    )


def one_line_error(capsys, command: str) -> str:
    """The one line `bertsent COMMAND` wrote to stderr for a user's error (no traceback), checked as such."""
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"bertsent {command}: error: ")
    return lines[0]


def cli_args(*words, **flags) -> list[str]:
    """A command line: `words`, then `--name value` for each flag (name_with_underscores: --name-with-dashes;
    True: the flag alone)."""
    argv = [str(word) for word in words]
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def watch_forward(monkeypatch, before) -> None:
    """Models that hub.load_classifier loads from now on (the ones fit() trains) call `before(kwargs)` ahead of
    each forward pass: to record the batches, or to raise in place of the pass."""
    from bertsent.modeling import hub

    original = hub.load_classifier

    def load(*args, **kwargs):
        model = original(*args, **kwargs)
        inner = model.forward

        def forward(*a, **k):
            before(k)
            return inner(*a, **k)

        model.forward = forward
        return model

    monkeypatch.setattr(hub, "load_classifier", load)


@pytest.fixture(scope="session")
def trained(tiny_model_dir, tmp_path_factory):
    """The tiny BERT fine-tuned on the toy task (validation: make_reviews(40, seed=2)); learns it in seconds."""
    out = tmp_path_factory.mktemp("trained") / "model"
    train_toy(tiny_model_dir, out)
    return out


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own cache folder and working directory, so nothing leaks between tests."""
    monkeypatch.setenv("BERTSENT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def write_csv(tmp_path):
    def write(rows, name="data.csv", header=("text", "label")):
        import csv

        path = tmp_path / name
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t" if name.endswith(".tsv") else ",")
            if header:
                writer.writerow(header)
            writer.writerows(rows)
        return path

    return write


@pytest.fixture
def reviews_csv(write_csv):
    texts, labels = make_reviews(120)
    return write_csv(list(zip(texts, labels)), "reviews.csv")
