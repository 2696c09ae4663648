"""What a model must beat: the majority-class baseline, a uniform random guess and (on request) TF-IDF with
logistic regression, scored on the same data as the model, and the warnings for a model that does not beat them.

`add_baselines` puts them into a metrics dict (under "baselines" and "warnings"): training's finish, `evaluate`,
`compare` and the report all call it or read what it wrote.

- Majority class: as scikit-learn's `DummyClassifier(strategy="most_frequent")` fitted on the training labels
  (ties: the first in the model's class order), scored on the evaluated data. Without the training label counts
  (a model folder from elsewhere), the evaluated data's own majority stands in, and `from` says so.
- Uniform guess: each class with probability 1/k. Its accuracy is 1/k; for a class of prevalence p, the guess's
  precision is p and its recall 1/k, so its F1 is 2 p (1/k) / (p + 1/k), and macro F1 the mean over the k classes
  (a class absent from the data scores 0, as in `compute_metrics`). That is the expected macro F1 as the data
  grows (the F1 of the expected counts); on 100 rows, 2,000 simulated guesses average within 0.001 of it.
- TF-IDF: `TfidfVectorizer(TFIDF)` + `LogisticRegression(LOGREG)` fitted on the model's training split.
"""

from __future__ import annotations

from collections import Counter

from bertsent.defaults import BASELINES
from bertsent.errors import BertsentError
from bertsent.evaluation.metrics import compute_metrics

TFIDF = dict(ngram_range=(1, 2), sublinear_tf=True, min_df=2)  # min_df 2: IMDB's 25,000 in 2/3 of the time
LOGREG = dict(max_iter=1000, C=1.0)
ADVICE = "try more training data or epochs, --class-weights auto, --metric f1_macro"
FROM_TRAINING = "the training labels"
FROM_EVALUATED = "the evaluated data (the model folder records no training label counts)"


def check_baseline(baseline: str | None) -> None:
    if baseline is not None and baseline not in BASELINES:
        raise BertsentError(f"--baseline {baseline}: choose one of {', '.join(BASELINES)} (or leave it out).")


def majority_class(counts: dict[str, int], classes: list[str]) -> str:
    """The most frequent class of `counts`; ties go to the first in `classes` order."""
    return max(classes, key=lambda name: (counts.get(name, 0), -classes.index(name)))


def uniform_f1_macro(y_true: list[str], classes: list[str]) -> float:
    """Expected macro F1 of guessing each of the k classes with probability 1/k (see the module's note)."""
    k, n = len(classes), len(y_true)
    if not n or not k:
        return 0.0
    counts = Counter(y_true)
    total = 0.0
    for name in classes:
        p = counts[name] / n
        total += 2 * p / k / (p + 1 / k) if p else 0.0
    return total / k


def majority_baseline(y_true: list[str], classes: list[str], train_counts: dict[str, int] | None) -> dict:
    """The majority class of the training labels (else of `y_true`), always answered, scored on `y_true`."""
    source = FROM_TRAINING if train_counts else FROM_EVALUATED
    counts = train_counts or Counter(y_true)
    answer = majority_class(counts, list(classes))
    scores = compute_metrics(y_true, [answer] * len(y_true), list(classes))
    return {"class": answer, "from": source, "accuracy": scores["accuracy"], "f1_macro": scores["f1_macro"]}


TFIDF_STEPS = 3  # vectorize the training texts, fit the regression, score the evaluated texts


def tfidf_baseline(
    train_texts: list[str], train_labels: list[str], texts: list[str], y_true: list[str], classes, progress=None
) -> dict:
    """TF-IDF + logistic regression fitted on the training texts, scored on `texts`. `progress(1)` is called after
    each of the TFIDF_STEPS steps (IMDB, 25,000 reviews each side: 97 s on 2 busy CPU cores)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if len(set(train_labels)) < 2:
        raise BertsentError("--baseline tfidf: the training data holds one class; it needs two or more.")
    advance = progress or (lambda _: None)
    vectorizer = TfidfVectorizer(**TFIDF)
    try:
        features = vectorizer.fit_transform(train_texts)
    except ValueError:  # sklearn: "After pruning, no terms remain" (or only stop words)
        raise BertsentError(
            f"--baseline tfidf: no word occurs in two of the {len(train_texts)} training texts; it needs more data."
        ) from None
    advance(1)
    classifier = LogisticRegression(**LOGREG).fit(features, train_labels)
    advance(1)
    predicted = list(classifier.predict(vectorizer.transform(texts)))
    advance(1)
    scores = compute_metrics(y_true, predicted, list(classes))
    return {"accuracy": scores["accuracy"], "f1_macro": scores["f1_macro"], "train_rows": len(train_texts)}


def weak_model_warnings(metrics: dict, baselines: dict) -> list[str]:
    """One line for each way the model fails to beat a trivial answer, with what to try."""
    warnings = []
    majority = baselines["majority"]
    if metrics["accuracy"] <= majority["accuracy"]:
        warnings.append(
            f"accuracy {metrics['accuracy']:.4f} is at or below the majority-class baseline's "
            f"{majority['accuracy']:.4f} (always '{majority['class']}'): the model does no better than always "
            f"answering the most common class; {ADVICE}."
        )
    uniform = baselines["uniform"]["f1_macro"]
    if metrics["f1_macro"] < uniform:
        warnings.append(
            f"macro F1 {metrics['f1_macro']:.4f} is below a uniform random guess's {uniform:.4f}: the model "
            f"neglects some classes; {ADVICE}."
        )
    return warnings


def add_baselines(
    metrics: dict,
    y_true: list[str],
    classes: list[str],
    *,
    train_counts: dict[str, int] | None = None,
    tfidf: dict | None = None,
) -> dict:
    """`metrics` (a model's, on `y_true`) with "baselines" (majority, uniform, and `tfidf` when given: the
    result of `tfidf_baseline`) and "warnings" (a list, empty for a model that beats them)."""
    classes = list(classes)
    baselines = {
        "majority": majority_baseline(y_true, classes, train_counts),
        "uniform": {"accuracy": 1 / len(classes), "f1_macro": uniform_f1_macro(y_true, classes)},
    }
    if tfidf is not None:
        baselines["tfidf"] = tfidf
    metrics["baselines"] = baselines
    metrics["warnings"] = weak_model_warnings(metrics, baselines) if len(y_true) else []
    return metrics


def baseline_rows(baselines: dict) -> list[tuple[str, dict]]:
    """(name, {"accuracy", "f1_macro"}) of each baseline in `add_baselines`' "baselines", for tables."""
    rows = []
    for key, b in baselines.items():
        if key == "majority":
            of = " (of the evaluated data)" if b["from"] == FROM_EVALUATED else ""
            name = f"majority class '{b['class']}'{of}"
        elif key == "uniform":
            name = "uniform random guess (expected)"
        else:
            name = "TF-IDF + logistic regression" + ("" if b.get("same_as_model", True) else " (other training data)")
        rows.append((name, {"accuracy": b["accuracy"], "f1_macro": b["f1_macro"]}))
    return rows
