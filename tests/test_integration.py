"""Integration: the real packaged MiniLM, the real data and the CLI end to end (slow)."""

import json
from pathlib import Path

import numpy as np
import pytest

import bertsent
from bertsent.cli import main
from bertsent.data.sources import read_data

from conftest import make_reviews, train_toy

pytestmark = pytest.mark.slow
SHARED_IMDB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "aclImdb_v1_labeled.tar.xz"
TUTORIAL_SENTENCE = "This is a really good movie. I loved it and will watch again"


def test_minilm_learns_a_small_task(tmp_path):
    result = train_toy(
        "minilm", tmp_path / "m", make_reviews(320, seed=3), make_reviews(80, seed=4), epochs=2, lr=1e-4, report=True
    )
    steps = [json.loads(line) for line in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in steps if "split" not in r]
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:8])  # the loss falls
    assert result.metrics["accuracy"] >= 0.9  # chance is 0.5
    model = bertsent.load(tmp_path / "m")
    assert model.predict([TUTORIAL_SENTENCE]) == ["positive"]


def test_cli_train_then_predict_the_tutorial_sentence(tmp_path, write_csv, capsys):
    texts, labels = make_reviews(240, seed=5)
    data = write_csv(list(zip(texts, labels)), "train.csv")
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "run"),
                "--epochs",
                "2",
                "--batch-size",
                "16",
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "accuracy" in out and str(tmp_path / "run") in out
    assert main(["predict", str(tmp_path / "run"), TUTORIAL_SENTENCE, "--format", "jsonl"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["label"] == "positive" and record["probs"]["positive"] > 0.5


@pytest.mark.skipif(not SHARED_IMDB.exists(), reason=f"the IMDB archive is not at {SHARED_IMDB}")
def test_real_imdb_archive_reads_in_the_official_layout():
    train = read_data(f"{SHARED_IMDB}:train")
    assert len(train) == 25_000
    assert train.label_counts() == {"negative": 12_500, "positive": 12_500}
    assert all("<br />" not in t for t in train.texts[:500])


def test_rotten_tomatoes_builtin_is_fetched_verified_and_split_by_movie():
    train, test = read_data("rotten-tomatoes:train"), read_data("rotten-tomatoes:test")
    assert len(train) + len(test) == 12_808
    assert not set(train.groups) & set(test.groups)
    assert set(train.labels) == {"negative", "positive"}
    assert 0.15 < len(test) / 12_808 < 0.25
