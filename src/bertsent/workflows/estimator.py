"""`SentimentClassifier`: training and prediction with scikit-learn's shape, for pipelines and grid searches."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from sklearn.base import BaseEstimator, ClassifierMixin

from bertsent.data.sources import TextDataset
from bertsent.errors import BertsentError
from bertsent.modeling.hub import DEFAULT_MODEL
from bertsent.prediction.predictor import SentimentModel
from bertsent.workflows.run import train

if TYPE_CHECKING:
    import numpy as np


class NotFittedError(BertsentError, AttributeError):
    """Predicting before `fit` (an AttributeError too, as scikit-learn's own, so `hasattr` answers False)."""


class SentimentClassifier(ClassifierMixin, BaseEstimator):
    """`SentimentClassifier(epochs=2).fit(texts, labels).predict(texts)`.

    The parameters are the training settings of `TrainConfig` (None: the recipe's value), so `get_params`,
    `set_params` and `sklearn.base.clone` work; `out` is where the model folder goes (None: a temporary
    folder, removed once the model is loaded: `save` writes it where you want), `report` writes the
    evaluation report into it.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        recipe: str = "fast",
        epochs: int | None = None,
        batch_size: int | str | None = None,
        micro_batch_size: int | str | None = None,
        lr: float | None = None,
        max_length: int | str | None = None,
        truncation: str | None = None,
        stride: int | None = None,
        max_windows: int | None = None,
        pad_to_max_length: bool | None = None,
        length_bucketing: bool | None = None,
        max_tokens: int | None = None,
        grad_accum: int = 1,
        optimizer: str | None = None,
        weight_decay: float | None = None,
        adam_eps: float = 1e-8,
        warmup_ratio: float | None = None,
        schedule: str | None = None,
        max_grad_norm: float | None = None,
        seed: int = 42,
        max_train_samples: int | None = None,
        validation_fraction: float = 0.1,
        metric: str = "accuracy",
        early_stopping: int | None = None,
        eval_every: int | None = None,
        checkpoint_every: int | None = None,
        eval_batch_size: int = 64,
        precision: str = "auto",
        device: str = "auto",
        compile: bool = False,
        packing: bool | None = None,
        attention_dropout: float | None = None,
        calibrate: bool = True,
        class_weights: str | tuple[float, ...] | None = None,
        out: str | os.PathLike | None = None,
        report: bool = False,
    ):
        self.model = model
        self.recipe = recipe
        self.epochs = epochs
        self.batch_size = batch_size
        self.micro_batch_size = micro_batch_size
        self.lr = lr
        self.max_length = max_length
        self.truncation = truncation
        self.stride = stride
        self.max_windows = max_windows
        self.pad_to_max_length = pad_to_max_length
        self.length_bucketing = length_bucketing
        self.max_tokens = max_tokens
        self.grad_accum = grad_accum
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.adam_eps = adam_eps
        self.warmup_ratio = warmup_ratio
        self.schedule = schedule
        self.max_grad_norm = max_grad_norm
        self.seed = seed
        self.max_train_samples = max_train_samples
        self.validation_fraction = validation_fraction
        self.metric = metric
        self.early_stopping = early_stopping
        self.eval_every = eval_every
        self.checkpoint_every = checkpoint_every
        self.eval_batch_size = eval_batch_size
        self.precision = precision
        self.device = device
        self.compile = compile
        self.packing = packing
        self.attention_dropout = attention_dropout
        self.calibrate = calibrate
        self.class_weights = class_weights
        self.out = out
        self.report = report

    def fit(self, X, y, eval_texts=None, eval_labels=None, progress: bool = False, log=print) -> SentimentClassifier:
        """Fine-tune on texts `X` with labels `y`; validation on `eval_texts`/`eval_labels` when given, else on
        a held-out `validation_fraction` of the data."""
        train_set = TextDataset([str(t) for t in X], [str(label) for label in y], name="fit data")
        validation = (
            TextDataset([str(t) for t in eval_texts], [str(label) for label in eval_labels], name="eval data")
            if eval_texts is not None
            else None
        )
        settings = {k: v for k, v in self.get_params().items() if k not in ("out", "report")}
        options = dict(progress=progress, log=log, report=self.report, **settings)
        if self.out is not None:
            self.result_ = train(train_set, validation, out=self.out, overwrite=True, **options)
            self.model_ = SentimentModel.load(self.result_.model_dir)
        else:
            with tempfile.TemporaryDirectory(prefix="bertsent-", ignore_cleanup_errors=True) as folder:
                self.result_ = train(train_set, validation, out=Path(folder) / "model", **options)
                self.model_ = SentimentModel.load(self.result_.model_dir)
        return self

    def _fitted(self) -> SentimentModel:
        if getattr(self, "model_", None) is None:
            raise NotFittedError("this SentimentClassifier is not fitted yet: call fit(texts, labels) first.")
        return self.model_

    @property
    def classes_(self) -> list[str]:
        return self._fitted().classes_

    def predict(self, X) -> list[str]:
        return self._fitted().predict(X)

    def predict_proba(self, X) -> np.ndarray:
        return self._fitted().predict_proba(X)

    def decision_function(self, X) -> np.ndarray:
        return self._fitted().decision_function(X)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the fitted model as a model folder that `bertsent.load` and `bertsent predict` read."""
        return self._fitted().save(folder)
