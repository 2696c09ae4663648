"""Scores of a model on labeled data: metrics, calibration, and their tables."""

from __future__ import annotations

import numpy as np


def compute_metrics(y_true: list[str], y_pred: list[str], labels: list[str],
                    probs: np.ndarray | None = None) -> dict:
    """Accuracy, macro and per-class precision/recall/F1, confusion matrix; log loss, ECE and
    (binary) ROC-AUC when probabilities in `labels` order are given."""
    from sklearn.metrics import (accuracy_score, confusion_matrix, log_loss,
                                 precision_recall_fscore_support, roc_auc_score)

    names = list(labels) + sorted(set(y_pred) - set(labels))  # e.g. "neutral" from a neutral band
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                               average="macro", zero_division=0)
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    result = {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "per_class": {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                             "support": int(support[i])} for i, name in enumerate(labels)},
        "labels": names,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=names).tolist(),
    }
    if probs is not None and len(y_true):
        index = {name: i for i, name in enumerate(labels)}
        y_index = np.array([index[y] for y in y_true])
        result["log_loss"] = float(log_loss(y_index, probs, labels=list(range(len(labels)))))
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


def format_metrics(metrics: dict) -> str:
    """A plain-text table: headline scores, per-class scores and the confusion matrix."""
    lines = [f"examples   {metrics['n']}",
             f"accuracy   {metrics['accuracy']:.4f}",
             f"precision  {metrics['precision_macro']:.4f}  (macro)",
             f"recall     {metrics['recall_macro']:.4f}  (macro)",
             f"f1         {metrics['f1_macro']:.4f}  (macro)"]
    for key in ("roc_auc", "log_loss", "ece"):
        if key in metrics:
            lines.append(f"{key:<10} {metrics[key]:.4f}")
    per_class = metrics["per_class"]
    width = max(8, *(len(n) for n in metrics["labels"]))
    lines += ["", f"{'class':<{width}}  precision  recall  f1      support"]
    for name, s in per_class.items():
        lines.append(f"{name:<{width}}  {s['precision']:9.4f}  {s['recall']:6.4f}  {s['f1']:.4f}  {s['support']:7d}")
    lines += ["", "confusion matrix (rows: true, columns: predicted)",
              " " * width + "  " + "  ".join(f"{n:>{width}}" for n in metrics["labels"])]
    for name, row in zip(metrics["labels"], metrics["confusion_matrix"]):
        lines.append(f"{name:<{width}}  " + "  ".join(f"{v:>{width}d}" for v in row))
    return "\n".join(lines)


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
            out.append({"lo": float(lo), "hi": float(hi), "n": int(in_bin.sum()),
                        "confidence": float(confidence[in_bin].mean()), "accuracy": float(correct[in_bin].mean())})
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
            out.append({"min_tokens": lo + 1, "max_tokens": hi, "n": int(in_bucket.sum()),
                        "accuracy": float(correct[in_bucket].mean())})
    return out
