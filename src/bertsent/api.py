"""The Python API behind every CLI command: train, evaluate and predict from data sources."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

from . import model as models
from .data import TextDataset, read_data, split_validation
from .evaluation import compute_metrics
from .prediction import SentimentModel
from .training import TrainConfig, TrainResult, fit

DEFAULT_DATA = "rotten-tomatoes"
RUNS_DIR = "runs"


def default_out_dir(model: str, data: str) -> Path:
    """runs/<model>-<data>-<time>, and runs/latest pointing at it."""
    def short(name: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(name).split(":")[0]).name.split(".")[0]).strip("-")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(RUNS_DIR) / f"{short(model)}-{short(data)}-{stamp}"


def _link_latest(out: Path) -> None:
    latest = out.parent / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(out.name)
    except OSError:  # e.g. no symlinks on this file system: the printed path is enough
        pass


def train(data: str | TextDataset = DEFAULT_DATA, eval_data: str | TextDataset | None = None, *,
          out: str | os.PathLike | None = None, text_column: str | None = None, label_column: str | None = None,
          encoding: str = "utf-8", drop_invalid: bool = False, overwrite: bool = False, resume: bool = False,
          progress: bool = True, log=print, **settings) -> TrainResult:
    """Fine-tune a model on a data source; `settings` are TrainConfig fields (model, epochs, lr, ...)."""
    read = dict(text_column=text_column, label_column=label_column, encoding=encoding, drop_invalid=drop_invalid)
    train_set = data if isinstance(data, TextDataset) else read_data(data, default_split="train", **read)
    config = TrainConfig(**{k: v for k, v in settings.items() if v is not None})
    if eval_data is not None:
        validation = eval_data if isinstance(eval_data, TextDataset) else read_data(
            eval_data, default_split="test", **read)
    elif config.validation_fraction > 0:
        train_set, validation = split_validation(train_set, config.validation_fraction, config.seed)
    else:
        validation = None
    for dataset in (train_set, validation):
        if dataset is not None and dataset.dropped:
            log(f"{dataset.name}: skipped {dataset.dropped} row(s) with an empty text or label (--drop-invalid)")
    link = out is None
    out = Path(out) if out is not None else default_out_dir(config.model, str(data if isinstance(data, str) else "data"))
    result = fit(train_set, validation, config, out, overwrite=overwrite, resume=resume, progress=progress, log=log)
    if link:
        _link_latest(out)
    return result


def evaluate(model_dir: str | os.PathLike | SentimentModel, data: str | TextDataset, *,
             out: str | os.PathLike | None = None, text_column: str | None = None,
             label_column: str | None = None, encoding: str = "utf-8", drop_invalid: bool = False,
             batch_size: int = 64, neutral_band: float | None = None) -> dict:
    """Metrics of a trained model on labeled data; written as JSON to `out` when given."""
    model = model_dir if isinstance(model_dir, SentimentModel) else SentimentModel.load(model_dir, batch_size=batch_size)
    model.neutral_band = neutral_band
    dataset = data if isinstance(data, TextDataset) else read_data(
        data, text_column=text_column, label_column=label_column, encoding=encoding,
        drop_invalid=drop_invalid, default_split="test")
    from .errors import DataError

    unknown = sorted(set(dataset.labels) - set(model.classes_))
    if unknown:
        raise DataError(f"{dataset.name}: labels {', '.join(map(repr, unknown))} are not among the model's "
                        f"classes ({', '.join(model.classes_)}). Use data with the model's labels.")
    probs = model.predict_proba(dataset.texts)
    predicted = model.labels_from_proba(probs)
    metrics = compute_metrics(dataset.labels, predicted, model.classes_, probs)
    metrics["data"] = {"source": dataset.name, "rows": len(dataset), "dropped": dataset.dropped,
                       "fingerprint": dataset.fingerprint()}
    if out is not None:
        write_json_atomic(Path(out), metrics)
    return metrics


def write_json_atomic(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        json.dump(payload, handle, indent=2)
    os.replace(handle.name, path)


class SentimentClassifier:
    """scikit-learn style: `SentimentClassifier(epochs=2).fit(texts, labels).predict(texts)`."""

    def __init__(self, model: str = models.DEFAULT_MODEL, out: str | os.PathLike | None = None, **settings):
        self.model = model
        self.out = out
        self.settings = settings
        self.model_: SentimentModel | None = None
        self.result_: TrainResult | None = None

    def fit(self, texts, labels, eval_texts=None, eval_labels=None, progress: bool = False, log=print):
        train_set = TextDataset([str(t) for t in texts], [str(y) for y in labels], name="fit data")
        validation = (TextDataset([str(t) for t in eval_texts], [str(y) for y in eval_labels], name="eval data")
                      if eval_texts is not None else None)
        out = self.out or tempfile.mkdtemp(prefix="bertsent-")
        overwrite = self.out is None or Path(out).exists()
        self.result_ = train(train_set, validation, out=out, overwrite=overwrite, progress=progress, log=log,
                             model=self.model, **self.settings)
        self.model_ = SentimentModel.load(self.result_.model_dir)
        return self

    def _fitted(self) -> SentimentModel:
        if self.model_ is None:
            from .errors import BertsentError

            raise BertsentError("this SentimentClassifier is not fitted yet: call fit(texts, labels) first.")
        return self.model_

    @property
    def classes_(self) -> list[str]:
        return self._fitted().classes_

    def predict(self, texts) -> list[str]:
        return self._fitted().predict(texts)

    def predict_proba(self, texts):
        return self._fitted().predict_proba(texts)

    def save(self, folder: str | os.PathLike) -> Path:
        source = Path(self.result_.model_dir) if self.result_ else None
        self._fitted()
        shutil.copytree(source, folder, dirs_exist_ok=True)
        return Path(folder)
