"""Choosing the model to keep: scoring the validation data, tracking the best evaluation, early stopping."""

from __future__ import annotations

import math

import numpy as np
import torch

from bertsent.evaluation.metrics import Scores, headline, score_logits
from bertsent.modeling.batching import Collator
from bertsent.modeling.inference import predict_logits
from bertsent.modeling.tokens import mean_by_owner
from bertsent.runtime import Runtime


class ValidationSet:
    """The validation data, encoded once; scored on every process's share, then gathered."""

    def __init__(
        self,
        ids: list[list[int]],
        labels: list[str],
        lengths: list[int],
        classes: list[str],
        collator: Collator,
        batch_size: int,
        runtime: Runtime,
        owner: list[int] | None = None,
    ):
        self.ids = ids  # one per text, or with `owner` the texts' windows
        self.owner = owner  # each window's text: a text's logits are its windows' mean
        self.labels = labels
        self.lengths = lengths  # in tokens, before truncation: for accuracy by length
        self.classes = classes
        self.y_index = np.array([classes.index(y) for y in labels])
        self.collator = collator
        self.batch_size = batch_size
        self.runtime = runtime

    def logits(self, model) -> np.ndarray:
        """The model's logits for every validation text (windows averaged), the same array on every process."""
        runtime = self.runtime
        # Every N-th text by length, so each process gets about the same work.
        order = sorted(range(len(self.ids)), key=lambda i: len(self.ids[i]))
        mine = order[runtime.rank :: runtime.processes]
        part = predict_logits(
            model,
            [self.ids[i] for i in mine],
            self.collator,
            self.batch_size,
            device=runtime.device,
            autocast_dtype=runtime.autocast_dtype,
        )
        logits = np.zeros((len(self.ids), model.config.num_labels), dtype=np.float32)
        for indices, values in runtime.gather((mine, part)):
            logits[indices] = values
        return logits if self.owner is None else mean_by_owner(logits, self.owner, len(self.labels))

    def score(self, logits: np.ndarray, temperature: float = 1.0) -> Scores:
        return score_logits(logits, self.labels, self.classes, temperature=temperature, lengths=self.lengths)


class ModelSelection:
    """The best evaluation so far (score, epoch, validation logits and, where kept, the weights), every
    evaluation's headline, and whether early stopping says stop."""

    def __init__(self, metric: str, patience: int | None, keep_weights: bool):
        self.metric = metric
        self.patience = patience
        self.keep_weights = keep_weights  # only the process that saves the model needs them
        self.score = -math.inf
        self.epoch: float | None = None
        self.logits: np.ndarray | None = None
        self.weights: dict | None = None
        self.stale = 0  # evaluations since the best
        self.history: list[dict] = []

    def update(self, model, logits: np.ndarray, metrics: dict, step: int, epoch: float) -> bool:
        """Record an evaluation; True when it is the best so far (then its weights are kept)."""
        self.history.append({"step": step, "epoch": round(epoch, 3), **headline(metrics)})
        score = -metrics["loss"] if self.metric == "loss" else metrics[self.metric]
        if not score > self.score:
            self.stale += 1
            return False
        self.score, self.epoch, self.logits, self.stale = score, round(epoch, 3), logits, 0
        if self.keep_weights:
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return True

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.patience != 0 and self.stale >= self.patience

    def state_dict(self) -> dict:
        """In types a checkpoint holds without pickle: the logits as a tensor."""
        state = {k: getattr(self, k) for k in ("score", "epoch", "logits", "weights", "stale", "history")}
        if state["logits"] is not None:
            state["logits"] = torch.from_numpy(np.asarray(state["logits"]))
        return state

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value.numpy() if key == "logits" and value is not None else value)
        if not self.keep_weights:
            self.weights = None
