"""Scoring a Ray Data dataset: `SentimentPredictor` is the callable class that `Dataset.map_batches` takes.

    import ray
    from bertsent.prediction.ray import SentimentPredictor

    scored = ray.data.read_parquet("reviews/").map_batches(
        SentimentPredictor,
        fn_constructor_kwargs={"model_dir": "runs/latest", "text_column": "review"},
        concurrency=4,  # workers, each with the model loaded once
        batch_size=1024,
        batch_format="pandas",
    )
    scored.write_parquet("scored/")

Each worker loads the model once, in `__init__`; each batch comes back with `label` and one `prob_<class>`
column per class added. Needs `pip install 'bertsent[ray]'`.
"""

from __future__ import annotations

import os

import numpy as np

from bertsent.errors import BertsentError
from bertsent.extras import require_extra
from bertsent.prediction.predictor import SentimentModel, load

__all__ = ["SentimentPredictor"]

# Ray Data starts a local Ray on first use, which would report usage statistics; off unless the user set it.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


class SentimentPredictor:
    """Adds `label` and `prob_<class>` columns to a batch (a pandas DataFrame, or a dict of numpy arrays as
    Ray's "numpy" batch format gives) holding texts in `text_column`. `load_kwargs` go to `bertsent.load`
    (device, truncation, max_length, stride, neutral_band, threads)."""

    def __init__(
        self,
        model_dir: str | os.PathLike,
        text_column: str = "text",
        backend: str = "auto",
        batch_size: int = 64,
        **load_kwargs,
    ):
        require_ray()
        self.text_column = text_column
        self.predictor: SentimentModel = load(model_dir, backend=backend, batch_size=batch_size, **load_kwargs)

    def __call__(self, batch):
        if self.text_column not in batch:
            columns = ", ".join(map(str, batch.keys() if isinstance(batch, dict) else batch.columns))
            raise BertsentError(
                f"no column '{self.text_column}' in the batch (columns: {columns}). Pass text_column= in "
                f"fn_constructor_kwargs."
            )
        texts = [None if _missing(t) else str(t) for t in batch[self.text_column]]
        probs = self.predictor.predict_proba(texts)
        labels = self.predictor.labels_from_proba(probs)
        out = batch.copy() if not isinstance(batch, dict) else dict(batch)
        out["label"] = np.array(labels) if isinstance(batch, dict) else labels
        for j, name in enumerate(self.predictor.classes_):
            out[f"prob_{name}"] = probs[:, j]
        return out


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def require_ray():
    """The ray module, or one line saying how to get it."""
    return require_extra("ray", "SentimentPredictor", "ray")
