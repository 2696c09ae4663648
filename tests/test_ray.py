"""`bertsent.prediction.ray.SentimentPredictor`: on batches as Ray Data hands them over, without Ray installed, and in
`Dataset.map_batches` on a local Ray instance, where every row comes back with the labels of `predict`."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

import bertsent
from bertsent.errors import BertsentError
from bertsent.prediction.ray import SentimentPredictor

from conftest import make_reviews

TEXTS, _ = make_reviews(90, seed=5)


def test_pandas_and_numpy_batches_get_a_label_and_a_probability_per_class(trained):
    predictor = SentimentPredictor(trained, text_column="review", threads=1)
    model = bertsent.load(trained)
    expected, probs = model.predict(TEXTS[:10]), model.predict_proba(TEXTS[:10])
    frame = predictor(pd.DataFrame({"id": range(10), "review": TEXTS[:10]}))
    assert list(frame.columns) == ["id", "review", "label", "prob_negative", "prob_positive"]
    assert frame["label"].tolist() == expected
    assert frame[["prob_negative", "prob_positive"]].to_numpy() == pytest.approx(probs, abs=1e-6)
    arrays = predictor({"id": np.arange(10), "review": np.array(TEXTS[:10], dtype=object)})
    assert list(arrays) == ["id", "review", "label", "prob_negative", "prob_positive"]
    assert arrays["label"].tolist() == expected and arrays["prob_positive"] == pytest.approx(probs[:, 1], abs=1e-6)
    with pytest.raises(BertsentError, match="no column 'review' in the batch"):
        predictor(pd.DataFrame({"text": TEXTS[:2]}))


def test_without_ray_one_line_says_how_to_get_it(trained, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    with pytest.raises(BertsentError, match=r"pip install 'bertsent\[ray\]'"):
        SentimentPredictor(trained)


@pytest.mark.slow  # starts a local Ray: half a minute
def test_a_ray_dataset_is_scored_like_predict(trained, tmp_path):
    ray = pytest.importorskip("ray")
    (tmp_path / "in").mkdir()
    for i in range(3):
        part = pd.DataFrame({"id": range(30 * i, 30 * i + 30), "review": TEXTS[30 * i : 30 * i + 30]})
        part.to_parquet(tmp_path / "in" / f"{i}.parquet")
    # Two CPUs: the predictor's actor holds one, and the read and write tasks need another.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 2**20)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        scored = ray.data.read_parquet(str(tmp_path / "in")).map_batches(
            SentimentPredictor,
            fn_constructor_kwargs={"model_dir": str(trained), "text_column": "review", "threads": 1},
            compute=ray.data.ActorPoolStrategy(size=1),
            batch_size=32,
            batch_format="pandas",
        )
        scored.write_parquet(str(tmp_path / "out"))
    finally:
        ray.shutdown()
    out = pd.read_parquet(tmp_path / "out").sort_values("id")
    model = bertsent.load(trained)
    assert out["id"].tolist() == list(range(90)) and out["review"].tolist() == TEXTS
    assert out["label"].tolist() == model.predict(TEXTS)
    assert out[["prob_negative", "prob_positive"]].to_numpy() == pytest.approx(model.predict_proba(TEXTS), abs=1e-5)
