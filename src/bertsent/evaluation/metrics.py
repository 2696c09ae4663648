"""Scores of a model on labeled data: one pipeline from logits to probabilities, labels and metrics.

`score_logits` (and `score_probs`, for probabilities made elsewhere) is what training's validation,
`evaluate` and the report all use: temperature-scaled softmax, labels (with the neutral band), then
accuracy, precision/recall/F1, confusion matrix, log loss, ROC-AUC, calibration error and its bins,
accuracy by length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bertsent.checks import number

NEUTRAL = "neutral"
HEADLINE = ("loss", "accuracy", "f1_macro", "ece")


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def check_neutral_band(neutral_band: float | None) -> None:
    if neutral_band is not None:
        rule = "give a width in [0, 1), e.g. 0.2 (neutral below 60% confidence)"
        number("neutral_band", neutral_band, 0, 1, closed="left", rule=rule)


def labels_from_proba(probs: np.ndarray, classes: list[str], neutral_band: float | None = None) -> list[str]:
    """The most probable class; with a neutral band, a binary model's unsure predictions are "neutral"."""
    labels = [classes[i] for i in probs.argmax(axis=1)]
    if neutral_band and len(classes) == 2:
        # Binary models cannot learn "neutral"; an uncertain prediction is reported as one.
        threshold = 0.5 + neutral_band / 2
        labels = [NEUTRAL if p.max() < threshold else label for p, label in zip(probs, labels)]
    return labels


@dataclass
class Scores:
    """A model's predictions on labeled data and their metrics."""

    metrics: dict
    classes: list[str]
    probs: np.ndarray  # calibrated, columns in `classes` order
    predicted: list[str]
    probs_uncalibrated: np.ndarray | None = None  # when a temperature other than 1 was applied


def score_logits(
    logits: np.ndarray,
    y_true: list[str],
    classes: list[str],
    *,
    temperature: float = 1.0,
    neutral_band: float | None = None,
    lengths=None,
) -> Scores:
    """Metrics of logits against true labels, after temperature scaling; the uncalibrated figures too."""
    uncalibrated = softmax(logits)
    scores = score_probs(
        softmax(logits, temperature),
        y_true,
        classes,
        neutral_band=neutral_band,
        lengths=lengths,
        probs_uncalibrated=uncalibrated,
    )
    scores.metrics["temperature"] = float(temperature)
    if temperature == 1.0:
        scores.probs_uncalibrated = None  # the same probabilities: nothing to draw "before"
    return scores


def score_probs(
    probs: np.ndarray,
    y_true: list[str],
    classes: list[str],
    *,
    predicted: list[str] | None = None,
    neutral_band: float | None = None,
    lengths=None,
    probs_uncalibrated: np.ndarray | None = None,
) -> Scores:
    """Metrics of class probabilities (columns in `classes` order) against true labels."""
    classes = list(classes)
    probs = np.asarray(probs, dtype=float)
    if predicted is None:
        predicted = labels_from_proba(probs, classes, neutral_band)
    metrics = compute_metrics(y_true, predicted, classes, probs)
    if "log_loss" in metrics:
        metrics["loss"] = metrics["log_loss"]
    if len(y_true):
        index = {name: i for i, name in enumerate(classes)}
        y_index = np.array([index[y] for y in y_true])
        metrics["reliability"] = reliability_bins(probs, y_index)
        if probs_uncalibrated is not None:
            before = np.asarray(probs_uncalibrated, dtype=float)
            metrics["ece_uncalibrated"] = expected_calibration_error(before, y_index)
            metrics["log_loss_uncalibrated"] = _log_loss(before, y_index)
            metrics["reliability_uncalibrated"] = reliability_bins(before, y_index)
    if lengths is not None:
        metrics["by_length"] = accuracy_by_length(lengths, y_true, predicted)
    if neutral_band:
        metrics["neutral_band"] = neutral_band
    return Scores(metrics, classes, probs, predicted, probs_uncalibrated)


def _log_loss(probs: np.ndarray, y_index: np.ndarray) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(y_index, probs, labels=list(range(probs.shape[1]))))


def headline(metrics: dict) -> dict:
    """The few numbers logged at each evaluation during training."""
    return {k: round(metrics[k], 5) for k in HEADLINE if k in metrics}


def compute_metrics(y_true: list[str], y_pred: list[str], labels: list[str], probs: np.ndarray | None = None) -> dict:
    """Accuracy, macro and per-class precision/recall/F1, confusion matrix; log loss, ECE and
    (binary) ROC-AUC when probabilities in `labels` order are given."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

    names = list(labels) + sorted(set(y_pred) - set(labels))  # e.g. "neutral" from a neutral band
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    result = {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, name in enumerate(labels)
        },
        "labels": names,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=names).tolist(),
    }
    if probs is not None and len(y_true):
        index = {name: i for i, name in enumerate(labels)}
        y_index = np.array([index[y] for y in y_true])
        result["log_loss"] = _log_loss(probs, y_index)
        result["ece"] = expected_calibration_error(probs, y_index)
        if len(labels) == 2 and len(set(y_index)) == 2:
            result["roc_auc"] = float(roc_auc_score(y_index, probs[:, 1]))
    return result


def expected_calibration_error(probs: np.ndarray, y_index: np.ndarray, bins: int = 15) -> float:
    """Mean gap between confidence and accuracy over equal-width confidence bins, weighted by size."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_index
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def fit_temperature(logits: np.ndarray, y_index: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T that minimises validation NLL of softmax(logits/T)."""
    import torch

    logits_t = torch.as_tensor(logits, dtype=torch.float64)
    target = torch.as_tensor(y_index, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits_t / log_t.exp(), target)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if not np.isfinite(temperature):
        return 1.0
    # Perfectly separated validation data pushes T towards 0 (certainty); keep it within sane bounds.
    return float(np.clip(temperature, 0.05, 20.0))


# -- for the evaluation report ------------------------------------------------


def reliability_bins(probs: np.ndarray, y_index: np.ndarray, bins: int = 15) -> list[dict]:
    """The bins behind expected_calibration_error: for each non-empty equal-width confidence bin,
    its edges, size, mean confidence and accuracy (the points of a reliability diagram)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_index
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            out.append(
                {
                    "lo": float(lo),
                    "hi": float(hi),
                    "n": int(in_bin.sum()),
                    "confidence": float(confidence[in_bin].mean()),
                    "accuracy": float(correct[in_bin].mean()),
                }
            )
    return out


def accuracy_by_length(lengths, y_true: list[str], y_pred: list[str], buckets: int = 5) -> list[dict]:
    """Accuracy in token-length buckets with about equal counts (edges at quantiles, rounded to 8 tokens)."""
    lengths = np.asarray(lengths, dtype=float)
    correct = np.asarray(y_true, dtype=object) == np.asarray(y_pred, dtype=object)
    if not len(lengths):
        return []
    inner = np.quantile(lengths, np.linspace(0, 1, buckets + 1)[1:-1])
    edges = sorted({int(np.ceil(q / 8) * 8) for q in inner} - {0})
    edges = [e for e in edges if e < lengths.max()]
    bounds = [0] + edges + [int(lengths.max())]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        in_bucket = (lengths > lo) & (lengths <= hi)
        if in_bucket.any():
            out.append(
                {
                    "min_tokens": lo + 1,
                    "max_tokens": hi,
                    "n": int(in_bucket.sum()),
                    "accuracy": float(correct[in_bucket].mean()),
                }
            )
    return out
