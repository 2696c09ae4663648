"""Metrics against scikit-learn on fixed predictions; calibration error, temperature scaling, length buckets."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from bertsent.cli.tables import format_metrics
from bertsent.evaluation.metrics import (
    accuracy_by_length,
    compute_metrics,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    softmax,
)

LABELS = ["negative", "positive"]
Y_TRUE = ["negative", "negative", "negative", "positive", "positive", "positive", "positive", "negative"]
P_POS = np.array([0.10, 0.40, 0.80, 0.90, 0.65, 0.30, 0.55, 0.45])
PROBS = np.column_stack([1 - P_POS, P_POS])
Y_PRED = [LABELS[i] for i in PROBS.argmax(axis=1)]


def test_binary_metrics_match_scikit_learn():
    m = compute_metrics(Y_TRUE, Y_PRED, LABELS, PROBS)
    y_index = [LABELS.index(y) for y in Y_TRUE]
    assert m["n"] == 8
    assert m["accuracy"] == pytest.approx(accuracy_score(Y_TRUE, Y_PRED))
    assert m["f1_macro"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro"))
    p, r, f, s = precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=LABELS)
    for i, name in enumerate(LABELS):
        assert m["per_class"][name] == pytest.approx({"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
    assert m["confusion_matrix"] == confusion_matrix(Y_TRUE, Y_PRED, labels=LABELS).tolist()
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y_index, P_POS))
    assert m["log_loss"] == pytest.approx(log_loss(y_index, PROBS))
    # The fixed numbers, worked by hand: 6 of 8 right; AUC counts 11 of 16 (pos, neg) pairs ordered.
    assert m["accuracy"] == 0.75 and m["roc_auc"] == pytest.approx(11 / 16)


def test_three_class_metrics_match_scikit_learn():
    labels = ["negative", "neutral", "positive"]
    rng = np.random.default_rng(0)
    y_true = [labels[i] for i in rng.integers(0, 3, 60)]
    probs = rng.dirichlet([1, 1, 1], 60)
    y_pred = [labels[i] for i in probs.argmax(axis=1)]
    m = compute_metrics(y_true, y_pred, labels, probs)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    assert (m["precision_macro"], m["recall_macro"], m["f1_macro"]) == pytest.approx((p, r, f))
    assert m["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert "roc_auc" not in m  # binary only
    assert m["log_loss"] == pytest.approx(log_loss([labels.index(y) for y in y_true], probs, labels=[0, 1, 2]))


def test_neutral_predictions_of_a_binary_model_get_their_own_column():
    y_pred = ["neutral" if abs(p - 0.5) < 0.1 else y for p, y in zip(P_POS, Y_PRED)]
    m = compute_metrics(Y_TRUE, y_pred, LABELS, PROBS)
    assert m["labels"] == ["negative", "positive", "neutral"]
    assert list(m["per_class"]) == LABELS
    assert m["confusion_matrix"] == confusion_matrix(Y_TRUE, y_pred, labels=m["labels"]).tolist()
    assert m["accuracy"] == pytest.approx(accuracy_score(Y_TRUE, y_pred))


def test_expected_calibration_error_by_hand_and_its_bins():
    # Two bins used: (0.6, 0.667] with confidences 0.62, 0.66 (one right) and (0.933, 1] with 0.95, 0.97 (both right).
    probs = np.array([[0.62, 0.38], [0.34, 0.66], [0.95, 0.05], [0.03, 0.97]])
    y_index = np.array([0, 0, 0, 1])
    expected = 0.5 * abs(0.5 - 0.64) + 0.5 * abs(1.0 - 0.96)
    assert expected_calibration_error(probs, y_index) == pytest.approx(expected)
    bins = reliability_bins(probs, y_index)
    assert [b["n"] for b in bins] == [2, 2]
    assert bins[0]["accuracy"] == 0.5 and bins[0]["confidence"] == pytest.approx(0.64)
    assert sum(b["n"] / 4 * abs(b["accuracy"] - b["confidence"]) for b in bins) == pytest.approx(expected)


def test_temperature_scaling_fixes_an_over_confident_model():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, size=(2000, 2))
    y_index = np.array([rng.choice(2, p=p) for p in softmax(true_logits)])  # labels drawn from calibrated probs
    over_confident = 4.0 * true_logits
    before = expected_calibration_error(softmax(over_confident), y_index)
    temperature = fit_temperature(over_confident, y_index)
    after = expected_calibration_error(softmax(over_confident, temperature), y_index)
    assert temperature == pytest.approx(4.0, rel=0.25)
    assert before > 0.1 and after < before / 2


def test_accuracy_by_length_buckets_cover_every_example():
    lengths = [5, 9, 12, 20, 33, 40, 64, 100, 130, 300]
    y_true = ["a"] * 10
    y_pred = ["a"] * 5 + ["b"] * 5  # the long half is wrong
    buckets = accuracy_by_length(lengths, y_true, y_pred, buckets=2)
    assert sum(b["n"] for b in buckets) == 10
    assert buckets[0]["min_tokens"] == 1 and buckets[-1]["max_tokens"] == 300
    assert buckets[0]["accuracy"] > buckets[-1]["accuracy"]
    assert all(b["min_tokens"] <= b["max_tokens"] for b in buckets)
    assert accuracy_by_length([7, 7, 7], ["a", "a", "a"], ["a", "a", "b"]) == [
        {"min_tokens": 1, "max_tokens": 7, "n": 3, "accuracy": pytest.approx(2 / 3)}
    ]
    assert accuracy_by_length([], [], []) == []


def test_format_metrics_shows_the_headline_and_the_matrix():
    text = format_metrics(compute_metrics(Y_TRUE, Y_PRED, LABELS, PROBS))
    assert "accuracy   0.7500" in text and "roc_auc" in text and "confusion matrix" in text
